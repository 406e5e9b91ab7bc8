// loss_rows: per-row softmax cross-entropy, the first pass of the `softmax_cross_entropy`
// (dense targets) and `sparse_softmax_cross_entropy` (integer labels) losses:
//   dense:  partial[r] = -sum_c t[r, c] * (x[r, c] - lse_r)
//   sparse: partial[r] = lse_r - x[r, labels[r]]   (NaN for a label outside [0, cols))
// with lse_r = max_c x[r, c] + log(sum_c exp(x[r, c] - max)), computed stably: the max is
// subtracted first and log1p taken of the sum without one max term, so confident rows keep
// their small losses. The host then
// runs `loss_reduce` over the rows (scale 1 / rows): a fixed-order, deterministic sum.
//
// One workgroup per row: invocations stride over the columns, workgroup-memory trees give
// the row maximum, the exp sum and (dense) the target-weighted sum.
// Bindings:  0 x (read, rows*cols Elem), 1 t (read, rows*cols Elem; dense only, any buffer
//            otherwise), 2 labels (read, rows i32; sparse only, any buffer otherwise),
//            3 partial (read_write, rows f32), 4 params (uniform Params).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 64).
// Dispatch:  one workgroup per row, folded into (x, y) past 65535: row = wid.x + wid.y * nwg.x.
// Features:  none; everything in f32 (WG * 4 bytes of workgroup memory).

struct Params {
    rows: u32,
    cols: u32,
    sparse: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> t: array<Elem>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 64u;

var<workgroup> red: array<f32, WG>;

// Sum of every invocation's `v`, in a fixed order; every invocation gets the result.
fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Everyone has read red[0] before the next reduction overwrites it.
    workgroupBarrier();
    return total;
}

// log(1 + e) for e >= 0 to a few ulps: the correction log(u) * e / (u - 1) undoes the
// rounding of u = 1 + e (the classic log1p trick; as in loss_elem.wgsl).
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

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // Uniform control flow: the row index is the same for the whole workgroup, so the early
    // return below is taken by all invocations or none.
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let cols = params.cols;
    let base = row * cols;
    // Start from the row's first element: WGSL has no -inf literal.
    var m = f32(x[base]);
    for (var c = lid; c < cols; c += WG) {
        m = max(m, f32(x[base + c]));
    }
    red[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    // lse - mx = log(1 + r), r the exp sum without ONE maximum term (each tie beyond the first
    // adds exactly 1): with log1p and the max subtracted before anything is added, a row whose
    // label holds the maximum keeps its small loss to a few ulps. The naive mx + log(sum),
    // minus x[label], cancelled to an absolute error of ~|mx| * 2^-24 (2.4e-3 relative on a
    // two-class row at logit scale 200).
    var r = 0.0;
    var ties = 0.0;
    for (var c = lid; c < cols; c += WG) {
        let v = f32(x[base + c]);
        if (v == mx) {
            ties += 1.0;
        } else {
            r += exp(v - mx);
        }
    }
    let rs = wg_sum(lid, r) + (wg_sum(lid, ties) - 1.0);
    let lse_mx = log1p_(rs);
    if (params.sparse != 0u) {
        if (lid == 0u) {
            let l = labels[row];
            if (l < 0 || u32(l) >= cols) {
                partial[row] = bitcast<f32>(0x7fc00000u);
            } else {
                partial[row] = (mx - f32(x[base + u32(l)])) + lse_mx;
            }
        }
        return;
    }
    // -sum t (x - lse) = sum t (mx - x) + (sum t) * (lse - mx).
    var d = 0.0;
    var ts = 0.0;
    for (var c = lid; c < cols; c += WG) {
        let tc = f32(t[base + c]);
        d += tc * (mx - f32(x[base + c]));
        ts += tc;
    }
    let total = wg_sum(lid, d) + wg_sum(lid, ts) * lse_mx;
    if (lid == 0u) {
        partial[row] = total;
    }
}
