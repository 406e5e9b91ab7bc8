// depthwise_conv2d_grad_weight_naive: the baseline for depthwise_conv2d_grad_weight — one dw
// element per invocation, looping over every dy pixel (n, oh, ow) with per-pixel range checks;
// no split, no reduce pass.
//
// Bindings: 0 x (read, NHWC [n, h, w, c_in]), 1 dy (read, NHWC [n, out_h, out_w, c_out]),
//           2 dw (read_write, [kh, kw, c_out]), 3 params (uniform DwGradParams).
// Overrides: WG: invocations per workgroup (default 64).
// Dispatch:  one invocation per dw element; ceil(total / WG) workgroups folded into (x, y)
//            past the per-dimension limit: e = gid.x + gid.y * nwg.x * WG.
// Features:  none; accumulates in f32.

struct DwGradParams {
    n: u32,
    h: u32,
    w: u32,
    c_in: u32,
    mult: u32,
    c_out: u32,
    out_h: u32,
    out_w: u32,
    kh: u32,
    kw: u32,
    stride_h: u32,
    stride_w: u32,
    dil_h: u32,
    dil_w: u32,
    pad_top: u32,
    pad_left: u32,
    // Weight gradient only: number of partial sums and dy rows (n, oh) per partial.
    splits: u32,
    chunk: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dw: array<Elem>;
@group(0) @binding(3) var<uniform> params: DwGradParams;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= params.kh * params.kw * params.c_out) {
        return;
    }
    let oc = e % params.c_out;
    let tap = e / params.c_out;
    let kj = tap % params.kw;
    let ki = tap / params.kw;
    let ic = oc / params.mult;
    var s = 0.0;
    for (var nb = 0u; nb < params.n; nb++) {
        for (var oh = 0u; oh < params.out_h; oh++) {
            for (var ow = 0u; ow < params.out_w; ow++) {
                let ihp = oh * params.stride_h + ki * params.dil_h;
                let iwp = ow * params.stride_w + kj * params.dil_w;
                if (ihp < params.pad_top || ihp - params.pad_top >= params.h
                    || iwp < params.pad_left || iwp - params.pad_left >= params.w) {
                    continue;
                }
                let ih = ihp - params.pad_top;
                let iw = iwp - params.pad_left;
                s += f32(x[((nb * params.h + ih) * params.w + iw) * params.c_in + ic])
                     * f32(dy[((nb * params.out_h + oh) * params.out_w + ow) * params.c_out + oc]);
            }
        }
    }
    dw[e] = Elem(s);
}
