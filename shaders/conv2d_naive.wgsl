// conv2d_naive: the baseline for `conv2d` — one output element per invocation, direct loops
// over the taps and the group's input channels. Same bindings and ConvParams as conv2d.wgsl.
//
// Bindings: 0 x (read, NHWC), 1 w (read, OHWI), 2 bias (read, [c_out] or dummy),
//           3 y (read_write, NHWC), 4 params (uniform ConvParams).
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
    var s = 0.0;
    for (var ki = 0u; ki < params.kh; ki++) {
        let ihp = oh * params.stride_h + ki * params.dilation_h;
        if (ihp < params.pad_top || ihp - params.pad_top >= params.h) {
            continue;
        }
        let ih = ihp - params.pad_top;
        for (var kj = 0u; kj < params.kw; kj++) {
            let iwp = ow * params.stride_w + kj * params.dilation_w;
            if (iwp < params.pad_left || iwp - params.pad_left >= params.w) {
                continue;
            }
            let iw = iwp - params.pad_left;
            let xb = ((nb * params.h + ih) * params.w + iw) * params.c_in + g * params.cig;
            let wb = ((oc * params.kh + ki) * params.kw + kj) * params.cig;
            for (var icg = 0u; icg < params.cig; icg++) {
                s += f32(x[xb + icg]) * f32(w[wb + icg]);
            }
        }
    }
    if (params.has_bias != 0u) {
        s += f32(bias[oc]);
    }
    y[e] = Elem(activate(params.act, params.alpha, s));
}
