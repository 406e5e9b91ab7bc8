// conv2d_grad_weight_naive: the baseline for conv2d_grad_weight — one dW element per
// invocation, looping over every dy pixel (n, oh, ow) in order; no split, no reduce pass.
//
// Bindings: 0 x (read, NHWC [n, h, w, c_in]), 1 dy (read, NHWC [n, out_h, out_w, c_out]),
//           2 dw (read_write, OHWI [c_out, kh, kw, cig]), 3 params (uniform GradParams).
// Overrides: WG: invocations per workgroup (default 256).
// Dispatch:  one invocation per dW element; ceil(total / WG) workgroups folded into (x, y)
//            past the per-dimension limit: e = gid.x + gid.y * nwg.x * WG.
// Features:  none; accumulates in f32.

struct GradParams {
    n: u32,
    h: u32,
    w: u32,
    c_in: u32,
    c_out: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    pad_top: u32,
    pad_left: u32,
    out_h: u32,
    out_w: u32,
    groups: u32,
    cig: u32,
    cog: u32,
    // kh * kw * cig (weight row length).
    kdim: u32,
    // n * out_h * out_w (dy pixels).
    rows: u32,
    // Weight gradient only: K slices and K elements per slice (a multiple of BK).
    splits: u32,
    k_chunk: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dw: array<Elem>;
@group(0) @binding(3) var<uniform> params: GradParams;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= params.c_out * params.kdim) {
        return;
    }
    let icg = e % params.cig;
    let tap = (e / params.cig) % (params.kh * params.kw);
    let oc = e / params.kdim;
    let kj = tap % params.kw;
    let ki = tap / params.kw;
    let ic = (oc / params.cog) * params.cig + icg;
    var s = 0.0;
    for (var nb = 0u; nb < params.n; nb++) {
        for (var oh = 0u; oh < params.out_h; oh++) {
            let ihp = oh * params.stride_h + ki * params.dilation_h;
            if (ihp < params.pad_top || ihp - params.pad_top >= params.h) {
                continue;
            }
            let ih = ihp - params.pad_top;
            for (var ow = 0u; ow < params.out_w; ow++) {
                let iwp = ow * params.stride_w + kj * params.dilation_w;
                if (iwp < params.pad_left || iwp - params.pad_left >= params.w) {
                    continue;
                }
                let iw = iwp - params.pad_left;
                s += f32(x[((nb * params.h + ih) * params.w + iw) * params.c_in + ic])
                     * f32(dy[((nb * params.out_h + oh) * params.out_w + ow) * params.c_out + oc]);
            }
        }
    }
    dw[e] = Elem(s);
}
