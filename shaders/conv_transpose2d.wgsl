// conv_transpose2d: transposed 2-D convolution by direct gather — one output element per
// invocation sums, over the taps whose stamp lands on it, x * w of the group's input
// channels; fused bias + activation. Gather (not scatter) so no atomics are needed:
//   y[n, oh, ow, oc] = b[oc] + sum_{ki, kj, icg} x[n, ih, iw, g*cig + icg] * w[g*cig + icg, ki, kj, ocg]
//   where ih * stride_h = oh + top - ki * dilation_h (exactly divisible, 0 <= ih < h), same
//   along W; g = oc / cog, ocg = oc % cog.
//
// Bindings: 0 x (read, NHWC [n, h, w, c_in]), 1 w (read, [c_in, kh, kw, c_out/groups]),
//           2 bias (read, [c_out] or dummy), 3 y (read_write, NHWC [n, out_h, out_w, c_out]),
//           4 params (uniform ConvParams, as conv2d.wgsl; h, w are the INPUT sizes).
// Overrides: WG: invocations per workgroup (default 256).
// Dispatch:  one invocation per output element (rows * c_out); ceil(total / WG) workgroups
//            folded into (x, y) past the per-dimension limit: e = gid.x + gid.y * nwg.x * WG.
// Features:  none; accumulates in f32. Needs snippet `activation`.

struct ConvParams {
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
    kdim: u32,
    rows: u32,
    has_bias: u32,
    act: u32,
    alpha: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> w: array<Elem>;
@group(0) @binding(2) var<storage, read> bias: array<Elem>;
@group(0) @binding(3) var<storage, read_write> y: array<Elem>;
@group(0) @binding(4) var<uniform> params: ConvParams;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= params.rows * params.c_out) {
        return;
    }
    let oc = e % params.c_out;
    let row = e / params.c_out;
    let ow = row % params.out_w;
    let t = row / params.out_w;
    let oh = t % params.out_h;
    let nb = t / params.out_h;
    let g = oc / params.cog;
    let ocg = oc % params.cog;
    var s = 0.0;
    for (var ki = 0u; ki < params.kh; ki++) {
        // ih * stride = oh + top - ki * dilation, computed without going negative.
        let num_h = oh + params.pad_top;
        let off_h = ki * params.dilation_h;
        if (num_h < off_h || (num_h - off_h) % params.stride_h != 0u) {
            continue;
        }
        let ih = (num_h - off_h) / params.stride_h;
        if (ih >= params.h) {
            continue;
        }
        for (var kj = 0u; kj < params.kw; kj++) {
            let num_w = ow + params.pad_left;
            let off_w = kj * params.dilation_w;
            if (num_w < off_w || (num_w - off_w) % params.stride_w != 0u) {
                continue;
            }
            let iw = (num_w - off_w) / params.stride_w;
            if (iw >= params.w) {
                continue;
            }
            let xb = ((nb * params.h + ih) * params.w + iw) * params.c_in + g * params.cig;
            // w[ic, ki, kj, ocg]: consecutive icg are kh*kw*cog apart.
            let wstride = params.kh * params.kw * params.cog;
            let wb = ((g * params.cig * params.kh + ki) * params.kw + kj) * params.cog + ocg;
            for (var icg = 0u; icg < params.cig; icg++) {
                s += f32(x[xb + icg]) * f32(w[wb + icg * wstride]);
            }
        }
    }
    if (params.has_bias != 0u) {
        s += f32(bias[oc]);
    }
    y[e] = Elem(activate(params.act, params.alpha, s));
}
