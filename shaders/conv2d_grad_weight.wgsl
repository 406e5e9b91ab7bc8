// conv2d_grad_weight: first pass of the weight gradient of a grouped, strided, dilated,
// asymmetrically padded conv2d as a split-K GEMM on the conv2d / matmul tile core. Per group g:
//   dW[i, kk] = sum_r A[i, r] * B[r, kk],  i = output channel in group,
//   kk = (ki, kj, icg) with icg fastest (the OHWI weight's inner order),
//   r = (n, oh, ow) dy pixel: the K dimension, n * out_h * out_w long,
//   A[i, r]  = dy[r, g*cog + i]  (stored K-major: channels contiguous),
//   B[r, kk] = x[n, oh*sh + ki*dh - top, ow*sw + kj*dw - left, g*cig + icg] (0 off the image).
// Workgroup z = split * groups + g covers K range [split * k_chunk, min(rows, (split + 1) *
// k_chunk)) and stores its raw f32 partial sum; matmul_splitk_reduce then adds the splits in
// split order (Params batch 1, m = c_out, n = kdim), so the result is bit-identical run to run.
// The im2col loads divide nothing: each workgroup tabulates its weight columns once (channel,
// ki*dh - top, kj*dw - left) and each K tile's dy pixels (image base, oh*sh, ow*sw) one tile
// ahead in a double buffer filled between the existing barriers (integer division is what
// costs most on CPU-like adapters: lavapipe scalarises it).
//
// Bindings: 0 x (read, NHWC [n, h, w, c_in]), 1 dy (read, NHWC [n, out_h, out_w, c_out]),
//           2 partial (read_write, f32 [splits, c_out, kdim]), 3 params (uniform GradParams).
// Overrides: WG_X, WG_Y, BK as in matmul.wgsl (tile (4*WG_Y) channels x (4*WG_X) weight
//            columns); k_chunk must be a multiple of BK. Workgroup memory: the matmul tiles
//            plus 16 * (4*WG_X + 2*BK) bytes of tables.
// Dispatch:  (ceil(kdim / (4 * WG_X)), ceil(cog / (4 * WG_Y)), splits * groups).
// Features:  none; accumulates in f32, partials stay f32 whatever Elem is.

struct GradParams {
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
    // kh * kw * cig (weight row length).
    kdim: u32,
    // n * out_h * out_w (dy pixels).
    rows: u32,
    // Weight gradient only: K slices and K elements per slice (a multiple of BK).
    splits: u32,
    k_chunk: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<uniform> params: GradParams;

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override BK: u32 = 16u;

var<workgroup> As: array<vec4<f32>, BK * WG_Y>;
var<workgroup> Bs: array<vec4<f32>, BK * WG_X>;

// Per tile column: (x channel g*cig + icg, ki*dh - top, kj*dw - left, 1 when a real column).
var<workgroup> col_info: array<vec4<i32>, 4u * WG_X>;
// Per K element of the current / next tile: (x image base n*h*w, oh*sh, ow*sw, 1 when real).
var<workgroup> k_info: array<vec4<i32>, 2u * BK>;

// A[i, r] of group g: dy, 0 outside the matrix or the split.
fn load_a(g: u32, k_end: u32, i: u32, r: u32) -> f32 {
    if (i >= params.cog || r >= k_end) {
        return 0.0;
    }
    return f32(dy[r * params.c_out + g * params.cog + i]);
}

// B[r, c] from the tables: the im2col element of x, 0 in the padding and outside the matrix.
fn load_b(kslot: u32, c: u32) -> f32 {
    let ri = k_info[kslot];
    let ci = col_info[c];
    let ih = ri.y + ci.y;
    let iw = ri.z + ci.z;
    if (ri.w == 0 || ci.w == 0 || ih < 0 || iw < 0 || ih >= i32(params.h)
        || iw >= i32(params.w)) {
        return 0.0;
    }
    let pix = u32(ri.x) + u32(ih) * params.w + u32(iw);
    return f32(x[pix * params.c_in + u32(ci.x)]);
}

// Tabulates dy pixels k0 .. k0 + BK - 1 into k_info slot `slot`.
fn fill_k(tid: u32, nthreads: u32, slot: u32, k0: u32, k_end: u32) {
    for (var l = tid; l < BK; l += nthreads) {
        let r = k0 + l;
        var info = vec4<i32>(0);
        if (r < k_end) {
            let ow = r % params.out_w;
            let t = r / params.out_w;
            let oh = t % params.out_h;
            let nb = t / params.out_h;
            info = vec4<i32>(i32(nb * params.h * params.w), i32(oh * params.stride_h),
                             i32(ow * params.stride_w), 1);
        }
        k_info[slot * BK + l] = info;
    }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.z % params.groups;
    let split = wg.z / params.groups;
    let k_begin = split * params.k_chunk;
    let k_end = min(params.rows, k_begin + params.k_chunk);
    let row0 = wg.y * 4u * WG_Y;
    let col0 = wg.x * 4u * WG_X;
    let tid = lid.y * WG_X + lid.x;
    let nthreads = WG_X * WG_Y;
    for (var l = tid; l < 4u * WG_X; l += nthreads) {
        let kk = col0 + l;
        var info = vec4<i32>(0);
        if (kk < params.kdim) {
            let icg = kk % params.cig;
            let tap = kk / params.cig;
            let kj = tap % params.kw;
            let ki = tap / params.kw;
            info = vec4<i32>(i32(g * params.cig + icg),
                             i32(ki * params.dilation_h) - i32(params.pad_top),
                             i32(kj * params.dilation_w) - i32(params.pad_left), 1);
        }
        col_info[l] = info;
    }
    fill_k(tid, nthreads, 0u, k_begin, k_end);
    workgroupBarrier();
    var slot = 0u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        // dy is contiguous along the channel rows, x along the weight columns (icg): the
        // index split keeps neighbouring invocations on neighbouring addresses.
        for (var l = tid; l < BK * WG_Y; l += nthreads) {
            let r4 = l % WG_Y;
            let kk = l / WG_Y;
            let i = row0 + 4u * r4;
            As[kk * WG_Y + r4] = vec4<f32>(load_a(g, k_end, i, k0 + kk),
                                           load_a(g, k_end, i + 1u, k0 + kk),
                                           load_a(g, k_end, i + 2u, k0 + kk),
                                           load_a(g, k_end, i + 3u, k0 + kk));
        }
        for (var l = tid; l < BK * WG_X; l += nthreads) {
            let c4 = l % WG_X;
            let kk = l / WG_X;
            let ks = slot * BK + kk;
            Bs[kk * WG_X + c4] = vec4<f32>(load_b(ks, 4u * c4), load_b(ks, 4u * c4 + 1u),
                                           load_b(ks, 4u * c4 + 2u), load_b(ks, 4u * c4 + 3u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 4u) {
            var av = As[kk * WG_Y + lid.y];
            var bv = Bs[kk * WG_X + lid.x];
            acc0 += av.x * bv; acc1 += av.y * bv; acc2 += av.z * bv; acc3 += av.w * bv;
            av = As[(kk + 1u) * WG_Y + lid.y];
            bv = Bs[(kk + 1u) * WG_X + lid.x];
            acc0 += av.x * bv; acc1 += av.y * bv; acc2 += av.z * bv; acc3 += av.w * bv;
            av = As[(kk + 2u) * WG_Y + lid.y];
            bv = Bs[(kk + 2u) * WG_X + lid.x];
            acc0 += av.x * bv; acc1 += av.y * bv; acc2 += av.z * bv; acc3 += av.w * bv;
            av = As[(kk + 3u) * WG_Y + lid.y];
            bv = Bs[(kk + 3u) * WG_X + lid.x];
            acc0 += av.x * bv; acc1 += av.y * bv; acc2 += av.z * bv; acc3 += av.w * bv;
        }
        // The other slot was last read before this iteration's first barrier: safe to refill
        // for the next tile; the barrier below publishes it.
        fill_k(tid, nthreads, 1u - slot, k0 + BK, k_end);
        workgroupBarrier();
        slot = 1u - slot;
    }
    let i0 = row0 + 4u * lid.y;
    let j0 = col0 + 4u * lid.x;
    store_row(g, split, i0, j0, acc0);
    store_row(g, split, i0 + 1u, j0, acc1);
    store_row(g, split, i0 + 2u, j0, acc2);
    store_row(g, split, i0 + 3u, j0, acc3);
}

// Stores 4 weight columns of output channel g*cog + i into split `split`'s partial.
fn store_row(g: u32, split: u32, i: u32, j0: u32, v: vec4<f32>) {
    if (i >= params.cog) {
        return;
    }
    let base = (split * params.c_out + g * params.cog + i) * params.kdim;
    for (var t = 0u; t < 4u; t++) {
        if (j0 + t < params.kdim) {
            partial[base + j0 + t] = v[t];
        }
    }
}
