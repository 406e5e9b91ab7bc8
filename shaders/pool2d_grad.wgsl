// pool2d_grad: the input gradient of 2-D max / average pooling over NHWC, gathered: one
// invocation per input element (n, ih, iw, c) visits the output windows that cover it
// (taps ki with ih + pad_top - ki * dil_h a non-negative multiple of stride_h below out_h,
// likewise for columns) and sums their contributions in a fixed order, so no atomics are
// needed and the result is bit-identical run to run.
//   Max (mode 0): a window contributes dy when this cell is its winner, recomputed from x with
//   the forward's rule (first maximal real cell in scan order; padding never wins; a NaN wins).
//   Average (mode 1): every covering window contributes dy / divisor (kh * kw when
//   count_include_pad, else the window's real-cell count), as the reference.
// Params are pool2d.wgsl's (same host mirror).
// Bindings:  0 x (read, n*h*w*c Elem; the average mode binds dy here, unread),
//            1 dy (read, n*out_h*out_w*c Elem), 2 dx (read_write, n*h*w*c Elem),
//            3 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per input element, channel fastest; ceil(n*h*w*c / WG)
//            workgroups folded into (x, y) past 65535: i = gid.x + gid.y * nwg.x * WG.
// Features:  none; accumulates in f32.

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
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;

// Taps [lo, hi) of a window starting at padded position `start` that read real cells of an
// axis of length `len` with `pad` cells before it (as pool2d.wgsl).
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

// The winner (ih, iw) of window (oh, ow) for image n, channel c: the forward's scan.
fn winner(n: u32, oh: u32, ow: u32, c: u32) -> vec2<u32> {
    let th = taps(oh * params.stride_h, params.pad_top, params.h, params.dil_h, params.kh);
    let tw = taps(ow * params.stride_w, params.pad_left, params.w, params.dil_w, params.kw);
    let ih0 = oh * params.stride_h + th.x * params.dil_h - params.pad_top;
    let iw0 = ow * params.stride_w + tw.x * params.dil_w - params.pad_left;
    var best = 0.0;
    var first = true;
    var at = vec2<u32>(0xffffffffu, 0xffffffffu);
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
                at = vec2<u32>(ih, iw);
            }
        }
    }
    return at;
}

// Real cells of window (oh, ow): the average's divisor without count_include_pad.
fn real_cells(oh: u32, ow: u32) -> u32 {
    let th = taps(oh * params.stride_h, params.pad_top, params.h, params.dil_h, params.kh);
    let tw = taps(ow * params.stride_w, params.pad_left, params.w, params.dil_w, params.kw);
    return (th.y - th.x) * (tw.y - tw.x);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let total = params.n * params.h * params.w * params.c;
    if (i >= total) {
        return;
    }
    let c = i % params.c;
    var t = i / params.c;
    let iw = t % params.w;
    t = t / params.w;
    let ih = t % params.h;
    let n = t / params.h;
    let ph = ih + params.pad_top;
    let pw = iw + params.pad_left;
    var acc = 0.0;
    for (var ki = 0u; ki < params.kh; ki++) {
        let oh_pos = ph - min(ph, ki * params.dil_h);
        if (ki * params.dil_h > ph || oh_pos % params.stride_h != 0u) {
            continue;
        }
        let oh = oh_pos / params.stride_h;
        if (oh >= params.out_h) {
            continue;
        }
        for (var kj = 0u; kj < params.kw; kj++) {
            let ow_pos = pw - min(pw, kj * params.dil_w);
            if (kj * params.dil_w > pw || ow_pos % params.stride_w != 0u) {
                continue;
            }
            let ow = ow_pos / params.stride_w;
            if (ow >= params.out_w) {
                continue;
            }
            let g = f32(dy[((n * params.out_h + oh) * params.out_w + ow) * params.c + c]);
            if (params.mode == 0u) {
                let win = winner(n, oh, ow, c);
                if (win.x == ih && win.y == iw) {
                    acc += g;
                }
            } else {
                var div = f32(params.kh * params.kw);
                if (params.count_include_pad == 0u) {
                    div = f32(real_cells(oh, ow));
                }
                acc += g / div;
            }
        }
    }
    dx[i] = Elem(acc);
}
