// conv2d_rows: grouped, strided, dilated, asymmetrically padded 2-D convolution (NHWC x,
// OHWI w) with fused bias + activation, the implicit GEMM of conv2d.wgsl organised like
// matmul_rows.wgsl: each invocation owns one output channel of 16 output pixels and the
// workgroup (WG consecutive channels of one group) shares those pixels, so every input read
// has the same address across the workgroup (a broadcast; padding is a uniform branch) and
// each weight read feeds 16 FMAs from registers. No workgroup memory, no barriers. An
// autotuner candidate (`Variant::Rows`), slower than conv2d.wgsl's tiles on lavapipe.
//
// Bindings: 0 x, 1 w, 2 bias ([c_out] or a 1-element dummy), 3 y, 4 params: as conv2d.wgsl.
// Overrides: WG, invocations per workgroup along the output channels (default 64).
// Dispatch:  (groups * ceil(cog / WG), ceil(n*out_h*out_w / 16), 1); workgroup x = g * blocks
//            + channel block.
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

override WG: u32 = 64u;

// Per output pixel: the input offset of tap (0, 0) at channel g*cig, and the top-left input
// coordinate (ih0, iw0) as signed values (padding makes them negative).
struct Pix {
    base: i32,
    ih0: i32,
    iw0: i32,
}

fn pixel(row: u32, g: u32) -> Pix {
    let r = min(row, params.rows - 1u);
    let ow = r % params.out_w;
    let t = r / params.out_w;
    let oh = t % params.out_h;
    let nb = t / params.out_h;
    let ih0 = i32(oh * params.stride_h) - i32(params.pad_top);
    let iw0 = i32(ow * params.stride_w) - i32(params.pad_left);
    let base = i32(nb * params.h * params.w * params.c_in + g * params.cig);
    return Pix(base, ih0, iw0);
}

// x offset of pixel p's input at tap (ki, kj), channel 0 of the group; -1 in the padding.
fn tap_offset(p: Pix, ki: u32, kj: u32) -> i32 {
    let ih = p.ih0 + i32(ki * params.dilation_h);
    let iw = p.iw0 + i32(kj * params.dilation_w);
    if (ih < 0 || iw < 0 || ih >= i32(params.h) || iw >= i32(params.w)) {
        return -1;
    }
    return p.base + (ih * i32(params.w) + iw) * i32(params.c_in);
}

// x[o + ci], or 0 when o < 0 (padding); o is uniform across the workgroup.
fn xin(o: i32, ci: u32) -> f32 {
    if (o < 0) {
        return 0.0;
    }
    return f32(x[u32(o) + ci]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let blocks = (params.cog + WG - 1u) / WG;
    let g = wg.x / blocks;
    let j = (wg.x % blocks) * WG + lid.x;
    let jc = min(j, params.cog - 1u);
    let oc = g * params.cog + jc;
    let row0 = wg.y * 16u;
    var px: array<Pix, 16>;
    for (var r = 0u; r < 16u; r++) {
        px[r] = pixel(row0 + r, g);
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var woff = oc * params.kdim;
    for (var ki = 0u; ki < params.kh; ki++) {
        for (var kj = 0u; kj < params.kw; kj++) {
            var o: array<i32, 16>;
            for (var r = 0u; r < 16u; r++) {
                o[r] = tap_offset(px[r], ki, kj);
            }
            for (var ci = 0u; ci < params.cig; ci++) {
                let wv = f32(w[woff + ci]);
                acc0 += wv * vec4<f32>(xin(o[0], ci), xin(o[1], ci), xin(o[2], ci), xin(o[3], ci));
                acc1 += wv * vec4<f32>(xin(o[4], ci), xin(o[5], ci), xin(o[6], ci), xin(o[7], ci));
                acc2 += wv * vec4<f32>(xin(o[8], ci), xin(o[9], ci), xin(o[10], ci), xin(o[11], ci));
                acc3 += wv * vec4<f32>(xin(o[12], ci), xin(o[13], ci), xin(o[14], ci), xin(o[15], ci));
            }
            woff += params.cig;
        }
    }
    if (j >= params.cog) {
        return;
    }
    var add = 0.0;
    if (params.has_bias != 0u) {
        add = f32(bias[oc]);
    }
    store4(row0, oc, acc0, add);
    store4(row0 + 4u, oc, acc1, add);
    store4(row0 + 8u, oc, acc2, add);
    store4(row0 + 12u, oc, acc3, add);
}

// Epilogue for output pixels row0 .. row0+3 of channel oc: + bias, activation, store.
fn store4(row0: u32, oc: u32, v: vec4<f32>, add: f32) {
    for (var t = 0u; t < 4u; t++) {
        let row = row0 + t;
        if (row < params.rows) {
            y[row * params.c_out + oc] = Elem(activate(params.act, params.alpha, v[t] + add));
        }
    }
}
