// adam_update: one Adam / AdamW step (PyTorch semantics) at step t = step + 1, reading the
// learning rate and the 0-based step count from a 2-word scalar buffer (the host copies the
// op's lr and step inputs into it: 8 storage bindings is the portable limit):
//   adam (decoupled 0): g' = g + wd * p;   adamw: p *= 1 - lr * wd, g' = g
//   m' = b1 m + (1 - b1) g',  v' = b2 v + (1 - b2) g'^2
//   p' = p - lr / bc1 * m' / (sqrt(v') / sqrt(bc2) + eps),  bc_k = 1 - b_k^t
// The bias corrections come from ln(b_k) (computed on the host in f64) as -expm1(t ln b_k),
// with a series for small |t ln b_k| so 1 - 0.999^1 keeps its relative precision.
// Bindings:  0 p, 1 g, 2 m, 3 v (read, total Elem), 4 scalars (read, 2 u32: lr f32 bits,
//            step i32 bits), 5 new_p, 6 new_m, 7 new_v (read_write, total Elem),
//            8 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256);
//            EPT, elements per invocation (default 1), strided as unary.wgsl.
// Dispatch:  ceil(ceil(total / EPT) / WG) workgroups, folded into (x, y) past 65535.
// Features:  none; f32 arithmetic, stores Elem.

struct Params {
    total: u32,
    decoupled: u32,
    _pad0: u32,
    _pad1: u32,
    beta1: f32,
    beta2: f32,
    ln_beta1: f32,
    ln_beta2: f32,
    eps: f32,
    weight_decay: f32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<storage, read> p: array<Elem>;
@group(0) @binding(1) var<storage, read> g: array<Elem>;
@group(0) @binding(2) var<storage, read> m: array<Elem>;
@group(0) @binding(3) var<storage, read> v: array<Elem>;
@group(0) @binding(4) var<storage, read> scalars: array<u32>;
@group(0) @binding(5) var<storage, read_write> new_p: array<Elem>;
@group(0) @binding(6) var<storage, read_write> new_m: array<Elem>;
@group(0) @binding(7) var<storage, read_write> new_v: array<Elem>;
@group(0) @binding(8) var<uniform> params: Params;

override WG: u32 = 256u;
override EPT: u32 = 1u;

// 1 - exp(x) for x <= 0, without cancellation near 0.
fn one_minus_exp(x: f32) -> f32 {
    if (x > -0.1) {
        return -x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0
            + x * (1.0 / 120.0 + x * (1.0 / 720.0))))));
    }
    return 1.0 - exp(x);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let stride = (params.total + EPT - 1u) / EPT;
    let rate = bitcast<f32>(scalars[0]);
    let steps = f32(bitcast<i32>(scalars[1]) + 1);
    let bc1 = one_minus_exp(steps * params.ln_beta1);
    let bc2 = one_minus_exp(steps * params.ln_beta2);
    let step_size = rate / bc1;
    let inv_sqrt_bc2 = 1.0 / sqrt(bc2);
    for (var e = 0u; e < EPT; e++) {
        let i = t + e * stride;
        if (t < stride && i < params.total) {
            var pv = f32(p[i]);
            var gv = f32(g[i]);
            if (params.decoupled != 0u) {
                pv *= 1.0 - rate * params.weight_decay;
            } else {
                gv += params.weight_decay * pv;
            }
            let mv = params.beta1 * f32(m[i]) + (1.0 - params.beta1) * gv;
            let vv = params.beta2 * f32(v[i]) + (1.0 - params.beta2) * gv * gv;
            let denom = sqrt(vv) * inv_sqrt_bc2 + params.eps;
            new_p[i] = Elem(pv - step_size * mv / denom);
            new_m[i] = Elem(mv);
            new_v[i] = Elem(vv);
        }
    }
}
