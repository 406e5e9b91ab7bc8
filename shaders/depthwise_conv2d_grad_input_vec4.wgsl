// depthwise_conv2d_grad_input_vec4: dx of a depthwise convolution with multiplier 1 and
// channels % 4 == 0 (MobileNet's case): one invocation per (dx pixel, channel quad), vec4
// loads of dy and w, only the taps the stride lets reach the pixel (see taps()):
//   dx[n, ih, iw, c] = sum_{ki, kj} dy[n, oh, ow, c] * w[ki, kj, c].
//
// Bindings: 0 dy (read, n*out_h*out_w*c/4 vec4<Elem>), 1 w (read, kh*kw*c/4 vec4<Elem>),
//           2 dx (read_write, n*h*w*c/4 vec4<Elem>), 3 params (uniform DwGradParams).
// Overrides: WG: invocations per workgroup (default 64).
// Dispatch:  one invocation per (n, ih, iw, quad), quad fastest; ceil(total / WG) workgroups
//            folded into (x, y) past 65535: i = gid.x + gid.y * nwg.x * WG.
// Features:  none; accumulates in vec4<f32>.

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

@group(0) @binding(0) var<storage, read> dy: array<vec4<Elem>>;
@group(0) @binding(1) var<storage, read> wt: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read_write> dx: array<vec4<Elem>>;
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
    let quads = params.c_in / 4u;
    if (e >= params.n * params.h * params.w * quads) {
        return;
    }
    let q = e % quads;
    let pix = e / quads;
    let iw = pix % params.w;
    let t = pix / params.w;
    let ih = t % params.h;
    let nb = t / params.h;
    let ihp = ih + params.pad_top;
    let iwp = iw + params.pad_left;
    let th = taps(ihp, params.stride_h, params.dil_h, params.kh);
    let tw = taps(iwp, params.stride_w, params.dil_w, params.kw);
    var s = vec4<f32>(0.0);
    for (var a = 0u; a < th.z; a++) {
        let ki = th.x + a * th.y;
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
            s += vec4<f32>(dy[((nb * params.out_h + oh) * params.out_w + ow) * quads + q])
                 * vec4<f32>(wt[(ki * params.kw + kj) * quads + q]);
        }
    }
    dx[e] = vec4<Elem>(s);
}
