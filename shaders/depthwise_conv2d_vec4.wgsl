// depthwise_conv2d_vec4: direct depthwise convolution for multiplier 1 and channels % 4 == 0
// (MobileNet's case): each invocation computes 4 channels (vec4 loads of x, w, bias, y) for
// COLS neighbouring output columns, reusing each vec4 weight tap COLS times.
//
// y[n, oh, ow, c] = act(bias[c] + sum_{ki, kj} x[n, ih, iw, c] * w[ki, kj, c]),
// ih = oh * stride_h + ki * dil_h - pad_top, iw = ow * stride_w + kj * dil_w - pad_left.
// Bindings:  0 x (read, n*h*w*c/4 vec4<Elem>), 1 w (read, kh*kw*c/4 vec4<Elem>), 2 bias
//            (read, c/4 vec4<Elem>, or a 16-byte dummy when has_bias = 0), 3 y (read_write,
//            n*out_h*out_w*c/4 vec4<Elem>), 4 params (uniform Params, shared by the three
//            depthwise shaders; col_blocks = ceil(out_w / COLS)).
// Overrides: WG, invocations per workgroup (default 64);
//            COLS, output columns per invocation, 1..=8 (default 4).
// Dispatch:  one invocation per (n, oh, column block, channel quad), quad fastest;
//            ceil(n*out_h*col_blocks*c/4 / WG) workgroups folded into (x, y) past 65535.
// Features:  none; accumulates in vec4<f32>, activation from snippet `activation`.

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

@group(0) @binding(0) var<storage, read> x: array<vec4<Elem>>;
@group(0) @binding(1) var<storage, read> wt: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read> bias: array<vec4<Elem>>;
@group(0) @binding(3) var<storage, read_write> y: array<vec4<Elem>>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 64u;
override COLS: u32 = 4u;
const MAX_COLS: u32 = 8u;

fn act4(v: vec4<f32>) -> vec4<f32> {
    if (params.act == 0u) {
        return v;
    }
    return vec4<f32>(activate(params.act, params.alpha, v.x),
                     activate(params.act, params.alpha, v.y),
                     activate(params.act, params.alpha, v.z),
                     activate(params.act, params.alpha, v.w));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let quads = params.c_out / 4u;
    let total = params.n * params.out_h * params.col_blocks * quads;
    if (i >= total) {
        return;
    }
    let q = i % quads;
    var t = i / quads;
    let ob = t % params.col_blocks;
    t = t / params.col_blocks;
    let oh = t % params.out_h;
    let n = t / params.out_h;
    let ow0 = ob * COLS;
    let ncols = min(COLS, params.out_w - ow0);
    var b = vec4<f32>(0.0);
    if (params.has_bias != 0u) {
        b = vec4<f32>(bias[q]);
    }
    var acc: array<vec4<f32>, MAX_COLS>;
    for (var j = 0u; j < MAX_COLS; j++) {
        acc[j] = b;
    }
    let iw_base = i32(ow0 * params.stride_w) - i32(params.pad_left);
    for (var ki = 0u; ki < params.kh; ki++) {
        let ih = i32(oh * params.stride_h + ki * params.dil_h) - i32(params.pad_top);
        if (ih < 0 || ih >= i32(params.h)) {
            continue;
        }
        let row = (n * params.h + u32(ih)) * params.w;
        for (var kj = 0u; kj < params.kw; kj++) {
            let wv = vec4<f32>(wt[(ki * params.kw + kj) * quads + q]);
            let iw0 = iw_base + i32(kj * params.dil_w);
            for (var j = 0u; j < ncols; j++) {
                let iw = iw0 + i32(j * params.stride_w);
                if (iw >= 0 && iw < i32(params.w)) {
                    acc[j] += vec4<f32>(x[(row + u32(iw)) * quads + q]) * wv;
                }
            }
        }
    }
    let out = ((n * params.out_h + oh) * params.out_w + ow0) * quads + q;
    for (var j = 0u; j < ncols; j++) {
        y[out + j * quads] = vec4<Elem>(act4(acc[j]));
    }
}
