// conv2d_grad_input_naive: the baseline for conv2d_grad_input — one dx element per
// invocation, direct loops over every tap (checking the stride divisibility per tap, so it
// also visits the taps a stride makes useless) and the group's output channels.
//
// Bindings: 0 dy (read, NHWC [n, out_h, out_w, c_out]), 1 w (read, OHWI [c_out, kh, kw, cig]),
//           2 dx (read_write, NHWC [n, h, w, c_in]), 3 params (uniform GradParams).
// Overrides: WG: invocations per workgroup (default 256).
// Dispatch:  one invocation per dx element; ceil(total / WG) workgroups folded into (x, y)
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

@group(0) @binding(0) var<storage, read> dy: array<Elem>;
@group(0) @binding(1) var<storage, read> w: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(3) var<uniform> params: GradParams;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= params.n * params.h * params.w * params.c_in) {
        return;
    }
    let ic = e % params.c_in;
    let pix = e / params.c_in;
    let iw = pix % params.w;
    let t = pix / params.w;
    let ih = t % params.h;
    let nb = t / params.h;
    let g = ic / params.cig;
    let icg = ic % params.cig;
    var s = 0.0;
    for (var ki = 0u; ki < params.kh; ki++) {
        let ph = ih + params.pad_top;
        if (ph < ki * params.dilation_h || (ph - ki * params.dilation_h) % params.stride_h != 0u) {
            continue;
        }
        let oh = (ph - ki * params.dilation_h) / params.stride_h;
        if (oh >= params.out_h) {
            continue;
        }
        for (var kj = 0u; kj < params.kw; kj++) {
            let pw = iw + params.pad_left;
            if (pw < kj * params.dilation_w
                || (pw - kj * params.dilation_w) % params.stride_w != 0u) {
                continue;
            }
            let ow = (pw - kj * params.dilation_w) / params.stride_w;
            if (ow >= params.out_w) {
                continue;
            }
            let yb = ((nb * params.out_h + oh) * params.out_w + ow) * params.c_out
                     + g * params.cog;
            for (var ocg = 0u; ocg < params.cog; ocg++) {
                let oc = g * params.cog + ocg;
                s += f32(dy[yb + ocg])
                     * f32(w[((oc * params.kh + ki) * params.kw + kj) * params.cig + icg]);
            }
        }
    }
    dx[e] = Elem(s);
}
