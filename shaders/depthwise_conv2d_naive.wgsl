// depthwise_conv2d_naive: the baseline depthwise convolution, one output element per
// invocation (what the tuned depthwise_conv2d / depthwise_conv2d_vec4 are measured against).
//
// y[n, oh, ow, oc] = act(bias[oc] + sum_{ki, kj} x[n, ih, iw, oc / mult] * w[ki, kj, oc]),
// ih = oh * stride_h + ki * dil_h - pad_top, iw = ow * stride_w + kj * dil_w - pad_left;
// NHWC x, weight [kh, kw, c_in * mult], asymmetric padding (bottom/right are implied by
// out_h / out_w), any kernel size, stride, dilation and channel multiplier.
// Bindings:  0 x (read, n*h*w*c_in Elem), 1 w (read, kh*kw*c_out Elem), 2 bias (read,
//            c_out Elem, or a dummy when has_bias = 0), 3 y (read_write, n*out_h*out_w*c_out
//            Elem), 4 params (uniform Params, shared by the three depthwise shaders).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per output element, channel fastest; ceil(total / WG) workgroups
//            folded into (x, y) past 65535: i = gid.x + gid.y * nwg.x * WG.
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

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let total = params.n * params.out_h * params.out_w * params.c_out;
    if (i >= total) {
        return;
    }
    let oc = i % params.c_out;
    var t = i / params.c_out;
    let ow = t % params.out_w;
    t = t / params.out_w;
    let oh = t % params.out_h;
    let n = t / params.out_h;
    let ic = oc / params.mult;
    var acc = 0.0;
    if (params.has_bias != 0u) {
        acc = f32(bias[oc]);
    }
    for (var ki = 0u; ki < params.kh; ki++) {
        let ih = i32(oh * params.stride_h + ki * params.dil_h) - i32(params.pad_top);
        if (ih < 0 || ih >= i32(params.h)) {
            continue;
        }
        for (var kj = 0u; kj < params.kw; kj++) {
            let iw = i32(ow * params.stride_w + kj * params.dil_w) - i32(params.pad_left);
            if (iw < 0 || iw >= i32(params.w)) {
                continue;
            }
            let xi = ((n * params.h + u32(ih)) * params.w + u32(iw)) * params.c_in + ic;
            acc += f32(x[xi]) * f32(wt[(ki * params.kw + kj) * params.c_out + oc]);
        }
    }
    y[i] = Elem(activate(params.act, params.alpha, acc));
}
