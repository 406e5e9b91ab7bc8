// depthwise_conv2d: direct depthwise convolution, scalar over channels, COLS neighbouring
// output columns per invocation (each weight tap is loaded once and reused COLS times).
// Serves every shape: any channel count, channel multiplier, kernel size, stride, dilation
// and asymmetric padding; fused bias + activation. depthwise_conv2d_vec4 takes over when the
// multiplier is 1 and channels are a multiple of 4.
//
// y[n, oh, ow, oc] = act(bias[oc] + sum_{ki, kj} x[n, ih, iw, oc / mult] * w[ki, kj, oc]),
// ih = oh * stride_h + ki * dil_h - pad_top, iw = ow * stride_w + kj * dil_w - pad_left.
// Bindings:  0 x (read, n*h*w*c_in Elem), 1 w (read, kh*kw*c_out Elem), 2 bias (read,
//            c_out Elem, or a dummy when has_bias = 0), 3 y (read_write, n*out_h*out_w*c_out
//            Elem), 4 params (uniform Params, shared by the three depthwise shaders;
//            col_blocks = ceil(out_w / COLS)).
// Overrides: WG, invocations per workgroup (default 64);
//            COLS, output columns per invocation, 1..=8 (default 4).
// Dispatch:  one invocation per (n, oh, column block, oc), oc fastest (coalesced);
//            ceil(n*out_h*col_blocks*c_out / WG) workgroups folded into (x, y) past 65535.
// Features:  none; accumulates in f32, activation from snippet `activation`.

struct Params {
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
    has_bias: u32,
    act: u32,
    alpha: f32,
    col_blocks: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> wt: array<Elem>;
@group(0) @binding(2) var<storage, read> bias: array<Elem>;
@group(0) @binding(3) var<storage, read_write> y: array<Elem>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 64u;
override COLS: u32 = 4u;
const MAX_COLS: u32 = 8u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let total = params.n * params.out_h * params.col_blocks * params.c_out;
    if (i >= total) {
        return;
    }
    let oc = i % params.c_out;
    var t = i / params.c_out;
    let ob = t % params.col_blocks;
    t = t / params.col_blocks;
    let oh = t % params.out_h;
    let n = t / params.out_h;
    let ic = oc / params.mult;
    let ow0 = ob * COLS;
    let ncols = min(COLS, params.out_w - ow0);
    var b = 0.0;
    if (params.has_bias != 0u) {
        b = f32(bias[oc]);
    }
    var acc: array<f32, MAX_COLS>;
    for (var j = 0u; j < MAX_COLS; j++) {
        acc[j] = b;
    }
    // Input column of output column ow0 at tap 0, in padded coordinates.
    let iw_base = i32(ow0 * params.stride_w) - i32(params.pad_left);
    for (var ki = 0u; ki < params.kh; ki++) {
        let ih = i32(oh * params.stride_h + ki * params.dil_h) - i32(params.pad_top);
        if (ih < 0 || ih >= i32(params.h)) {
            continue;
        }
        let row = (n * params.h + u32(ih)) * params.w;
        for (var kj = 0u; kj < params.kw; kj++) {
            let wv = f32(wt[(ki * params.kw + kj) * params.c_out + oc]);
            let iw0 = iw_base + i32(kj * params.dil_w);
            for (var j = 0u; j < ncols; j++) {
                let iw = iw0 + i32(j * params.stride_w);
                if (iw >= 0 && iw < i32(params.w)) {
                    acc[j] += f32(x[(row + u32(iw)) * params.c_in + ic]) * wv;
                }
            }
        }
    }
    let out = ((n * params.out_h + oh) * params.out_w + ow0) * params.c_out + oc;
    for (var j = 0u; j < ncols; j++) {
        y[out + j * params.c_out] = Elem(activate(params.act, params.alpha, acc[j]));
    }
}
