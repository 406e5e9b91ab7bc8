// activation_grad: dx[i] = dy[i] * act'(x[i]), the derivative of every activation of the
// `activation` snippet at the forward INPUT x, with the reference's (PyTorch's) choices at
// the kinks. GELU uses a relatively precise erfc (Numerical Recipes' erfcc, fractional error
// < 1.2e-7 everywhere), so the far negative tail keeps its relative precision.
//
// Bindings:  0 x (read, total Elem), 1 dy (read, total Elem), 2 dx (read_write, total Elem),
//            3 params (uniform Params: total, act code, leaky slope alpha).
// Overrides: WG, invocations per workgroup (default 256);
//            EPT, elements per invocation (default 1): invocation t handles t, t + T, ...,
//            t + (EPT - 1) * T with T = ceil(total / EPT), so each pass stays coalesced.
// Dispatch:  ceil(ceil(total / EPT) / WG) workgroups, folded into (x, y) past 65535:
//            invocation = gid.x + gid.y * nwg.x * WG.
// Features:  none; computes in f32 (snippet `activation` for sigmoid / tanh) and stores Elem.

struct Params {
    total: u32,
    act: u32,
    alpha: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;
override EPT: u32 = 1u;

// erfc(z) for z >= 0 with small relative error (Numerical Recipes erfcc).
fn ag_erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(p);
}

// Standard normal CDF through erfc, precise in both tails' relative sense where it matters
// (the negative tail, where GELU's derivative is tiny).
fn ag_normal_cdf(v: f32) -> f32 {
    let z = v * 0.70710678118654752;
    if (z < 0.0) {
        return 0.5 * ag_erfc_pos(-z);
    }
    return 1.0 - 0.5 * ag_erfc_pos(z);
}

fn derivative(code: u32, alpha: f32, v: f32) -> f32 {
    switch code {
        case 1u: { return select(0.0, 1.0, v > 0.0); }
        case 2u: { return select(0.0, 1.0, v > 0.0 && v < 6.0); }
        case 3u: { return select(alpha, 1.0, v > 0.0); }
        case 4u: {
            let s = act_sigmoid(v);
            return s * (1.0 - s);
        }
        case 5u: {
            let t = act_tanh(v);
            return 1.0 - t * t;
        }
        case 6u: {
            if (v < -3.0) {
                return 0.0;
            }
            if (v <= 3.0) {
                return v / 3.0 + 0.5;
            }
            return 1.0;
        }
        case 7u: { return select(0.0, 1.0 / 6.0, v > -3.0 && v < 3.0); }
        case 8u: {
            // Phi(v) + v * phi(v), phi the standard normal density.
            return ag_normal_cdf(v) + v * 0.3989422804014327 * exp(-0.5 * v * v);
        }
        case 9u: {
            let c = 0.7978845608028654;
            let t = act_tanh(c * (v + 0.044715 * v * v * v));
            let dinner = c * (1.0 + 3.0 * 0.044715 * v * v);
            return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * dinner;
        }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let stride = (params.total + EPT - 1u) / EPT;
    for (var e = 0u; e < EPT; e++) {
        let i = t + e * stride;
        if (t < stride && i < params.total) {
            dx[i] = Elem(f32(dy[i]) * derivative(params.act, params.alpha, f32(x[i])));
        }
    }
}
