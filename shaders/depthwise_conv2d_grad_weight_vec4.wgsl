// depthwise_conv2d_grad_weight_vec4: first pass of the depthwise weight gradient for
// multiplier 1 and channels % 4 == 0: as depthwise_conv2d_grad_weight, one invocation per
// (split, tap, channel quad) with vec4 loads of x and dy, storing a vec4 f32 partial;
// matmul_splitk_reduce adds the splits in order (deterministic).
//   dw[ki, kj, c] = sum_{n, oh, ow} x[n, ih, iw, c] * dy[n, oh, ow, c].
//
// Bindings: 0 x (read, n*h*w*c/4 vec4<Elem>), 1 dy (read, n*out_h*out_w*c/4 vec4<Elem>),
//           2 partial (read_write, vec4<f32> [splits, kh, kw, c/4]),
//           3 params (uniform DwGradParams).
// Overrides: WG: invocations per workgroup (default 64).
// Dispatch:  one invocation per (split, tap, quad), quad fastest; ceil(total / WG) workgroups
//            folded into (x, y) past the per-dimension limit: e = gid.x + gid.y * nwg.x * WG.
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

@group(0) @binding(0) var<storage, read> x: array<vec4<Elem>>;
@group(0) @binding(1) var<storage, read> dy: array<vec4<Elem>>;
@group(0) @binding(2) var<storage, read_write> partial: array<vec4<f32>>;
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
    let quads = params.c_out / 4u;
    let ntaps = params.kh * params.kw;
    let total = ntaps * quads;
    if (e >= params.splits * total) {
        return;
    }
    let q = e % quads;
    let t = e / quads;
    let tap = t % ntaps;
    let split = t / ntaps;
    let kj = tap % params.kw;
    let ki = tap / params.kw;
    let cols = ow_range(kj);
    let r0 = split * params.chunk;
    let r1 = min(params.n * params.out_h, r0 + params.chunk);
    var s = vec4<f32>(0.0);
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
            s += vec4<f32>(x[(xrow + iw) * quads + q])
                 * vec4<f32>(dy[(r * params.out_w + ow) * quads + q]);
        }
    }
    partial[split * total + tap * quads + q] = s;
}
