// pool2d: 2-D max or average pooling over NHWC, one output element per invocation.
//
// Max (mode 0): the first maximal real cell in scan order wins; padding never wins; a NaN
// wins over any number (first NaN in scan order), as the reference. Average (mode 1):
// sum of the real cells / (kh * kw when count_include_pad, else the real-cell count).
// Only the taps that land inside the input are visited (their index range is computed, as
// the reference's Window1d::taps does), so padding costs nothing.
// Bindings:  0 x (read, n*h*w*c Elem), 1 y (read_write, n*out_h*out_w*c Elem),
//            2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per output element, channel fastest; ceil(total / WG)
//            workgroups folded into (x, y) past 65535: i = gid.x + gid.y * nwg.x * WG.
// Features:  none; averages accumulate in f32.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
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
    mode: u32,
    count_include_pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

// Taps [lo, hi) of a window starting at padded position `start` that read real cells of an
// axis of length `len` with `pad` cells before it.
fn taps(start: u32, pad: u32, len: u32, dil: u32, k: u32) -> vec2<u32> {
    let end = pad + len;
    if (end <= start) {
        return vec2<u32>(0u, 0u);
    }
    var lo = 0u;
    if (pad > start) {
        lo = (pad - start + dil - 1u) / dil;
    }
    let hi = (end - start + dil - 1u) / dil;
    return vec2<u32>(min(lo, k), min(hi, k));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let total = params.n * params.out_h * params.out_w * params.c;
    if (i >= total) {
        return;
    }
    let c = i % params.c;
    var t = i / params.c;
    let ow = t % params.out_w;
    t = t / params.out_w;
    let oh = t % params.out_h;
    let n = t / params.out_h;
    let th = taps(oh * params.stride_h, params.pad_top, params.h, params.dil_h, params.kh);
    let tw = taps(ow * params.stride_w, params.pad_left, params.w, params.dil_w, params.kw);
    let ih0 = oh * params.stride_h + th.x * params.dil_h - params.pad_top;
    let iw0 = ow * params.stride_w + tw.x * params.dil_w - params.pad_left;
    if (params.mode == 0u) {
        var best = 0.0;
        var first = true;
        for (var ki = th.x; ki < th.y; ki++) {
            let ih = ih0 + (ki - th.x) * params.dil_h;
            let row = ((n * params.h + ih) * params.w) * params.c + c;
            for (var kj = tw.x; kj < tw.y; kj++) {
                let iw = iw0 + (kj - tw.x) * params.dil_w;
                let v = f32(x[row + iw * params.c]);
                // NaN tests by self-comparison: a NaN best never loses, a NaN v always wins.
                if (first || (best == best && (v != v || v > best))) {
                    best = v;
                    first = false;
                }
            }
        }
        y[i] = Elem(best);
    } else {
        var sum = 0.0;
        for (var ki = th.x; ki < th.y; ki++) {
            let ih = ih0 + (ki - th.x) * params.dil_h;
            let row = ((n * params.h + ih) * params.w) * params.c + c;
            for (var kj = tw.x; kj < tw.y; kj++) {
                let iw = iw0 + (kj - tw.x) * params.dil_w;
                sum += f32(x[row + iw * params.c]);
            }
        }
        var div = f32(params.kh * params.kw);
        if (params.count_include_pad == 0u) {
            div = f32((th.y - th.x) * (tw.y - tw.x));
        }
        y[i] = Elem(select(0.0, sum / div, div > 0.0));
    }
}
