// batch_norm: y = (x - mean[c]) * gamma[c] * inv_std[c] + beta[c], then the fused activation,
// over the channel (last) axis of [rows, channels]. The apply pass of both modes:
// inference (mode 0: inv_std = 1 / sqrt(var[c] + eps) from the `var` binding) and training
// (mode 1: the `var` binding already holds inv_std, written by batch_norm_combine).
// x - mean is formed first so a large common offset cancels exactly rather than through a
// folded scale/shift.
//
// Bindings:  0 x (read, rows*channels Elem), 1 mean, 2 var (or inv_std), 3 gamma, 4 beta
//            (read, channels Elem each), 5 y (read_write, rows*channels Elem),
//            6 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256);
//            EPT, elements per invocation (default 1), strided by ceil(total / EPT).
// Dispatch:  ceil(ceil(total / EPT) / WG) workgroups, folded into (x, y) past 65535.
// Features:  none; computes in f32 (snippet `activation`).

struct Params {
    total: u32,
    channels: u32,
    eps: f32,
    mode: u32,
    act: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> mean: array<Elem>;
@group(0) @binding(2) var<storage, read> var_or_inv: array<Elem>;
@group(0) @binding(3) var<storage, read> gamma: array<Elem>;
@group(0) @binding(4) var<storage, read> beta: array<Elem>;
@group(0) @binding(5) var<storage, read_write> y: array<Elem>;
@group(0) @binding(6) var<uniform> params: Params;

override WG: u32 = 256u;
override EPT: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let stride = (params.total + EPT - 1u) / EPT;
    if (t >= stride) {
        return;
    }
    for (var e = 0u; e < EPT; e++) {
        let i = t + e * stride;
        if (i < params.total) {
            let c = i % params.channels;
            let s = f32(var_or_inv[c]);
            var inv = s;
            if (params.mode == 0u) {
                inv = 1.0 / sqrt(s + params.eps);
            }
            let v = (f32(x[i]) - f32(mean[c])) * (f32(gamma[c]) * inv) + f32(beta[c]);
            y[i] = Elem(activate(params.act, params.alpha, v));
        }
    }
}
