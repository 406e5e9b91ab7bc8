// loss_elem: per-workgroup partial sums of an elementwise loss, the first pass of `mse`,
// `sigmoid_bce` and `smooth_l1`. Element i contributes
//   kind 0 (mse):         (a - b)^2
//   kind 1 (sigmoid_bce): max(a, 0) - a * b + log(1 + exp(-|a|))   (a = logit, b = target)
//   kind 2 (smooth_l1):   0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta   (d = a - b)
// Workgroup g sums elements [g * per_group, (g + 1) * per_group) (its invocations stride by
// WG, then a workgroup-memory tree) into partial[g]; the host then runs `loss_reduce` over
// the partials with scale 1 / total. Both passes have a fixed order: deterministic.
//
// Bindings:  0 a (read, total Elem), 1 b (read, total Elem), 2 partial (read_write,
//            ceil(total / per_group) f32), 3 params (uniform Params).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 256).
// Dispatch:  ceil(total / per_group) workgroups, folded into (x, y) past 65535:
//            group = wid.x + wid.y * nwg.x.
// Features:  none; everything in f32 (WG * 4 bytes of workgroup memory).

struct Params {
    total: u32,
    per_group: u32,
    kind: u32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> a: array<Elem>;
@group(0) @binding(1) var<storage, read> b: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

// log(1 + e) for e = exp(-|x|) in (0, 1]. The naive form drops e entirely once 1 + e rounds to
// 1 (|x| > ~17), and a batch of confident logits is then all rounding error (1.6e-4 relative
// against the reference was seen); the correction log(u) * e / (u - 1) undoes the rounding of
// u = 1 + e (the classic log1p trick, a few ulps).
fn log1p_(e: f32) -> f32 {
    // Small e by its series (error below e^6 / 6): some drivers' log is accurate only to
    // ~5e-8 ABSOLUTE near 1 (lavapipe: 1% relative error on log(1 + 4.5e-6) through the
    // correction below), so log must not see u = 1 + e for small e at all.
    if (e < 0.01) {
        return e * (1.0 - e * (0.5 - e * (1.0 / 3.0 - e * (0.25 - e * 0.2))));
    }
    let u = 1.0 + e;
    return log(u) * (e / (u - 1.0));
}

fn term(x: f32, y: f32) -> f32 {
    switch params.kind {
        case 0u: {
            let d = x - y;
            return d * d;
        }
        case 1u: {
            return max(x, 0.0) - x * y + log1p_(exp(-abs(x)));
        }
        default: {
            let d = abs(x - y);
            // beta = 0 never takes the quadratic branch, so there is no division by zero.
            if (d < params.beta) {
                return 0.5 * d * d / params.beta;
            }
            return d - 0.5 * params.beta;
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * nwg.x;
    let start = group * params.per_group;
    if (start >= params.total) {
        return;
    }
    let end = min(start + params.per_group, params.total);
    var acc = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        acc += term(f32(a[i]), f32(b[i]));
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partial[group] = red[0];
    }
}
