// depthwise_conv2d_grad_input_naive: the baseline for depthwise_conv2d_grad_input — one dx
// element per invocation, every tap checked for stride divisibility and range.
//
// Bindings: 0 dy (read, NHWC [n, out_h, out_w, c_in*mult]), 1 w (read, [kh, kw, c_in*mult]),
//           2 dx (read_write, NHWC [n, h, w, c_in]), 3 params (uniform DwGradParams).
// Overrides: WG: invocations per workgroup (default 64).
// Dispatch:  one invocation per dx element; ceil(total / WG) workgroups folded into (x, y)
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

@group(0) @binding(0) var<storage, read> dy: array<Elem>;
@group(0) @binding(1) var<storage, read> wt: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(3) var<uniform> params: DwGradParams;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= params.n * params.h * params.w * params.c_in) {
        return;
    }
    let c = e % params.c_in;
    let pix = e / params.c_in;
    let iw = pix % params.w;
    let t = pix / params.w;
    let ih = t % params.h;
    let nb = t / params.h;
    var s = 0.0;
    for (var ki = 0u; ki < params.kh; ki++) {
        let ph = ih + params.pad_top;
        if (ph < ki * params.dil_h || (ph - ki * params.dil_h) % params.stride_h != 0u) {
            continue;
        }
        let oh = (ph - ki * params.dil_h) / params.stride_h;
        if (oh >= params.out_h) {
            continue;
        }
        for (var kj = 0u; kj < params.kw; kj++) {
            let pw = iw + params.pad_left;
            if (pw < kj * params.dil_w || (pw - kj * params.dil_w) % params.stride_w != 0u) {
                continue;
            }
            let ow = (pw - kj * params.dil_w) / params.stride_w;
            if (ow >= params.out_w) {
                continue;
            }
            for (var m = 0u; m < params.mult; m++) {
                let oc = c * params.mult + m;
                s += f32(dy[((nb * params.out_h + oh) * params.out_w + ow) * params.c_out + oc])
                     * f32(wt[(ki * params.kw + kj) * params.c_out + oc]);
            }
        }
    }
    dx[e] = Elem(s);
}
