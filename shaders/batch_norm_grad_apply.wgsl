// batch_norm_grad_apply: batch-norm backward, pass 3 of 3. Elementwise, with the per-channel
// coefficients of batch_norm_grad_combine:
//   dx = A dy + B ((x - x[row 0, c]) - mean_shifted) + C,   coef[c] = (A, B, C, mean_shifted)
// (the shift is row 0's x, as in the stats pass; in inference B = C = 0 and dx = A dy).
// Bindings:  0 x (read, rows*channels Elem), 1 dy (read, rows*channels Elem),
//            2 coef (read, channels vec4<f32>), 3 dx (read_write, rows*channels Elem),
//            4 params (uniform Params: total, channels).
// Overrides: WG, invocations per workgroup (default 256);
//            EPT, elements per invocation (default 1): invocation t handles t, t + T, ...,
//            t + (EPT - 1) * T with T = ceil(total / EPT), so each pass stays coalesced.
// Dispatch:  ceil(ceil(total / EPT) / WG) workgroups, folded into (x, y) past 65535:
//            invocation = gid.x + gid.y * nwg.x * WG.
// Features:  none; f32 arithmetic, stores Elem.

struct Params {
    total: u32,
    channels: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read> coef: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256u;
override EPT: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let stride = (params.total + EPT - 1u) / EPT;
    for (var e = 0u; e < EPT; e++) {
        let i = t + e * stride;
        if (t < stride && i < params.total) {
            let c = i % params.channels;
            let k = coef[c];
            let xs = f32(x[i]) - f32(x[c]) - k.w;
            dx[i] = Elem(k.x * f32(dy[i]) + k.y * xs + k.z);
        }
    }
}
