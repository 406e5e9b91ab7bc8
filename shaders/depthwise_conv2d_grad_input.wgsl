// depthwise_conv2d_grad_input: dx of a depthwise convolution (any kernel size, stride,
// dilation, asymmetric padding, channel multiplier), one dx element per invocation, direct:
//   dx[n, ih, iw, c] = sum_{ki, kj, m} dy[n, oh, ow, c*mult + m] * w[ki, kj, c*mult + m],
//   oh = (ih + top - ki*dh) / sh, ow = (iw + left - kj*dw) / sw where divisible and in range.
// Only the taps the stride lets reach (ih, iw) are visited (k0 + t * step, see taps()).
// Scalar channels: the general case (depthwise_conv2d_grad_input_vec4 takes mult 1, C % 4 == 0).
//
// Bindings: 0 dy (read, NHWC [n, out_h, out_w, c_in*mult]), 1 w (read, [kh, kw, c_in*mult]),
//           2 dx (read_write, NHWC [n, h, w, c_in]), 3 params (uniform DwGradParams).
// Overrides: WG: invocations per workgroup (default 64).
// Dispatch:  one invocation per dx element, channel fastest; ceil(total / WG) workgroups
//            folded into (x, y) past the per-dimension limit: e = gid.x + gid.y * nwg.x * WG.
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

// The taps of one axis that reach padded input position `pos` through a stride: tap k does
// when (pos - k * d) % s == 0, i.e. k = k0 + t * step with step = s / gcd(s, d).
// Returns (k0, step, count).
fn taps(pos: u32, s: u32, d: u32, k: u32) -> vec3<u32> {
    let r = pos % s;
    var step = s;
    for (var t = 1u; t < s; t++) {
        if ((t * d) % s == 0u) {
            step = t;
            break;
        }
    }
    // t * d mod s repeats with period step, so the first tap (if any) lies below step.
    for (var t = 0u; t < min(k, step); t++) {
        if ((t * d) % s == r) {
            return vec3<u32>(t, step, (k - t + step - 1u) / step);
        }
    }
    return vec3<u32>(0u, step, 0u);
}

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
    let ihp = ih + params.pad_top;
    let iwp = iw + params.pad_left;
    let th = taps(ihp, params.stride_h, params.dil_h, params.kh);
    let tw = taps(iwp, params.stride_w, params.dil_w, params.kw);
    var s = 0.0;
    for (var a = 0u; a < th.z; a++) {
        let ki = th.x + a * th.y;
        // Later taps only move further up: once above the padded row, none is left.
        if (ihp < ki * params.dil_h) {
            break;
        }
        let oh = (ihp - ki * params.dil_h) / params.stride_h;
        if (oh >= params.out_h) {
            continue;
        }
        for (var b = 0u; b < tw.z; b++) {
            let kj = tw.x + b * tw.y;
            if (iwp < kj * params.dil_w) {
                break;
            }
            let ow = (iwp - kj * params.dil_w) / params.stride_w;
            if (ow >= params.out_w) {
                continue;
            }
            let yb = ((nb * params.out_h + oh) * params.out_w + ow) * params.c_out + c * params.mult;
            let wb = (ki * params.kw + kj) * params.c_out + c * params.mult;
            for (var m = 0u; m < params.mult; m++) {
                s += f32(dy[yb + m]) * f32(wt[wb + m]);
            }
        }
    }
    dx[e] = Elem(s);
}
