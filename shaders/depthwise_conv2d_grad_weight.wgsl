// depthwise_conv2d_grad_weight: first pass of the depthwise weight gradient (any kernel size,
// stride, dilation, asymmetric padding, channel multiplier), scalar channels:
//   dw[ki, kj, oc] = sum_{n, oh, ow} x[n, ih, iw, oc / mult] * dy[n, oh, ow, oc],
//   ih = oh*sh + ki*dh - top, iw = ow*sw + kj*dw - left (real cells only).
// One invocation per (split, tap, oc) sums the dy rows (n, oh) of its split in order, each row
// over the output columns the tap keeps inside the image, and stores an f32 partial;
// matmul_splitk_reduce (batch 1, m 1, n = kh*kw*c_out) adds the splits in split order, so the
// result is bit-identical run to run.
//
// Bindings: 0 x (read, NHWC [n, h, w, c_in]), 1 dy (read, NHWC [n, out_h, out_w, c_out]),
//           2 partial (read_write, f32 [splits, kh, kw, c_out]), 3 params (uniform DwGradParams).
// Overrides: WG: invocations per workgroup (default 64).
// Dispatch:  one invocation per (split, tap, oc), oc fastest; ceil(total / WG) workgroups
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

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> params: DwGradParams;

override WG: u32 = 64u;

// The output columns whose tap kj reads a real input column: [lo, hi).
fn ow_range(kj: u32) -> vec2<u32> {
    let off = kj * params.dil_w;
    var lo = 0u;
    if (off < params.pad_left) {
        lo = (params.pad_left - off + params.stride_w - 1u) / params.stride_w;
    }
    var hi = 0u;
    let lim = params.w + params.pad_left;
    if (lim > off) {
        hi = min(params.out_w, (lim - off + params.stride_w - 1u) / params.stride_w);
    }
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    let ntaps = params.kh * params.kw;
    let total = ntaps * params.c_out;
    if (e >= params.splits * total) {
        return;
    }
    let oc = e % params.c_out;
    let t = e / params.c_out;
    let tap = t % ntaps;
    let split = t / ntaps;
    let kj = tap % params.kw;
    let ki = tap / params.kw;
    let ic = oc / params.mult;
    let cols = ow_range(kj);
    let r0 = split * params.chunk;
    let r1 = min(params.n * params.out_h, r0 + params.chunk);
    var s = 0.0;
    for (var r = r0; r < r1; r++) {
        let oh = r % params.out_h;
        let nb = r / params.out_h;
        let ihp = oh * params.stride_h + ki * params.dil_h;
        if (ihp < params.pad_top || ihp - params.pad_top >= params.h) {
            continue;
        }
        let xrow = (nb * params.h + ihp - params.pad_top) * params.w;
        for (var ow = cols.x; ow < cols.y; ow++) {
            let iw = ow * params.stride_w + kj * params.dil_w - params.pad_left;
            s += f32(x[(xrow + iw) * params.c_in + ic])
                 * f32(dy[(r * params.out_w + ow) * params.c_out + oc]);
        }
    }
    partial[split * total + tap * params.c_out + oc] = s;
}
