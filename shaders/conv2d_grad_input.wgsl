// conv2d_grad_input: dx of a grouped, strided, dilated, asymmetrically padded conv2d as a
// transposed implicit GEMM on the conv2d / matmul tile core (workgroup tiles in workgroup
// memory, 4x4 register block per invocation). The dispatch is split by stride phase: workgroup
// z = g * (stride_h * stride_w) + phase covers the dx pixels whose (ih + pad_top) % stride_h and
// (iw + pad_left) % stride_w equal the phase's residues, and those pixels share one set of
// kernel taps that can reach them: ki = k0_h + t * step_h with step = stride / gcd(stride,
// dilation). So no work is spent on the zeros a stride inserts. Per group g and phase:
//   dx[row, j] = sum_kk A[row, kk] * B[kk, j],  row = (n, th, tw) pixel of the phase,
//   j = input channel in group, kk = (ti, tj, ocg) with ocg fastest (each tap's channels
//   padded to a multiple of BK),
//   A[row, kk] = dy[n, (ih + top - ki*dh) / sh, (iw + left - kj*dw) / sw, g*cog + ocg]
//                (0 when the output position is off the output),
//   B[kk, j]   = w[g*cog + ocg, ki, kj, j]  (the OHWI weight read transposed).
// Pixels that no tap reaches (ntaps == 0) get an empty K loop and store 0.
// The K loop runs tap by tap (uniform), then over output channels in BK steps, so no load
// divides: each workgroup first tabulates its rows' dy image base and the output position of
// the phase's first tap (moving by a constant per tap step), since integer division is what
// costs most on CPU-like adapters (lavapipe scalarises it).
//
// Bindings: 0 dy (read, NHWC [n, out_h, out_w, c_out]), 1 w (read, OHWI [c_out, kh, kw, cig]),
//           2 dx (read_write, NHWC [n, h, w, c_in]), 3 params (uniform GradParams).
// Overrides: WG_X, WG_Y, BK as in matmul.wgsl (tile (4*WG_Y) pixels x (4*WG_X) channels).
//            Workgroup memory: the matmul tiles plus a 16 * 4*WG_Y-byte row table.
// Dispatch:  (ceil(cig / (4 * WG_X)), ceil(n * ceil(h/sh) * ceil(w/sw) / (4 * WG_Y)),
//            groups * stride_h * stride_w); workgroups past a phase's pixel count exit.
// Features:  none; accumulates in f32.

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

@group(0) @binding(0) var<storage, read> dy: array<Elem>;
@group(0) @binding(1) var<storage, read> w: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(3) var<uniform> params: GradParams;

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override BK: u32 = 16u;

var<workgroup> As: array<vec4<f32>, BK * WG_Y>;
var<workgroup> Bs: array<vec4<f32>, BK * WG_X>;

// One axis of a stride phase: the first dx coordinate of residue r and how many there are,
// the first tap that reaches them, the tap step and the tap count.
struct Phase {
    first: u32,
    count: u32,
    k0: u32,
    step: u32,
    ntaps: u32,
}

fn phase_axis(r: u32, s: u32, d: u32, pad: u32, k: u32, len: u32) -> Phase {
    var ph: Phase;
    ph.first = (r + s - pad % s) % s;
    ph.count = 0u;
    if (ph.first < len) {
        ph.count = (len - ph.first + s - 1u) / s;
    }
    // step = s / gcd(s, d): the smallest t >= 1 with t * d divisible by s.
    ph.step = s;
    for (var t = 1u; t < s; t++) {
        if ((t * d) % s == 0u) {
            ph.step = t;
            break;
        }
    }
    // t * d mod s repeats with period step, so the first tap (if any) lies below step.
    ph.k0 = 0u;
    ph.ntaps = 0u;
    for (var t = 0u; t < min(k, ph.step); t++) {
        if ((t * d) % s == r) {
            ph.k0 = t;
            ph.ntaps = (k - t + ph.step - 1u) / ph.step;
            break;
        }
    }
    return ph;
}

// Per tile row: (dy image base n*out_h*out_w, oh and ow of the phase's first taps, 0);
// oh = -1 marks a row past the phase (every tap then reads 0).
var<workgroup> row_info: array<vec4<i32>, 4u * WG_Y>;

// A[row, kk] at tap offsets (doh, dow): a dy element, 0 off the output.
fn load_a(g: u32, r: u32, ocg: u32, doh: i32, dow: i32) -> f32 {
    let info = row_info[r];
    let oh = info.y - doh;
    let ow = info.z - dow;
    if (ocg >= params.cog || oh < 0 || ow < 0 || oh >= i32(params.out_h)
        || ow >= i32(params.out_w)) {
        return 0.0;
    }
    let pix = u32(info.x) + u32(oh) * params.out_w + u32(ow);
    return f32(dy[pix * params.c_out + g * params.cog + ocg]);
}

// B[kk, j] at weight row offset `wrow` = (((g*cog + ocg) * kh + ki) * kw + kj) * cig.
fn load_b(ocg: u32, wrow: u32, j: u32) -> f32 {
    if (j >= params.cig || ocg >= params.cog) {
        return 0.0;
    }
    return f32(w[wrow + j]);
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let nph = params.stride_h * params.stride_w;
    let g = wg.z / nph;
    let phase = wg.z % nph;
    let ph = phase_axis(phase / params.stride_w, params.stride_h, params.dilation_h,
                        params.pad_top, params.kh, params.h);
    let pw = phase_axis(phase % params.stride_w, params.stride_w, params.dilation_w,
                        params.pad_left, params.kw, params.w);
    let prow = params.n * ph.count * pw.count;
    let row0 = wg.y * 4u * WG_Y;
    let col0 = wg.x * 4u * WG_X;
    // Phases have different pixel counts; the grid fits the largest. (Uniform: no barrier
    // is skipped by part of a workgroup.)
    if (row0 >= prow) {
        return;
    }
    let tid = lid.y * WG_X + lid.x;
    let nthreads = WG_X * WG_Y;
    for (var l = tid; l < 4u * WG_Y; l += nthreads) {
        let row = row0 + l;
        var info = vec4<i32>(0, -1, -1, 0);
        if (row < prow) {
            let tw = row % pw.count;
            let t = row / pw.count;
            let th = t % ph.count;
            let nb = t / ph.count;
            let ihp = i32(ph.first + th * params.stride_h + params.pad_top);
            let iwp = i32(pw.first + tw * params.stride_w + params.pad_left);
            // Exact: ihp and k0 * dilation share the phase's residue mod the stride.
            info = vec4<i32>(i32(nb * params.out_h * params.out_w),
                             (ihp - i32(ph.k0 * params.dilation_h)) / i32(params.stride_h),
                             (iwp - i32(pw.k0 * params.dilation_w)) / i32(params.stride_w), 0);
        }
        row_info[l] = info;
    }
    workgroupBarrier();
    // One tap step moves the output position by step * dilation / stride (exact).
    let del_h = i32(ph.step * params.dilation_h / params.stride_h);
    let del_w = i32(pw.step * params.dilation_w / params.stride_w);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var ti = 0u; ti < ph.ntaps; ti++) {
        let ki = ph.k0 + ti * ph.step;
        let doh = i32(ti) * del_h;
        for (var tj = 0u; tj < pw.ntaps; tj++) {
            let kj = pw.k0 + tj * pw.step;
            let dow = i32(tj) * del_w;
            for (var c0 = 0u; c0 < params.cog; c0 += BK) {
                // dy is contiguous along K (output channels): depth-fastest; w along j:
                // column-fastest.
                for (var l = tid; l < BK * WG_Y; l += nthreads) {
                    let kk = l % BK;
                    let r4 = l / BK;
                    let ocg = c0 + kk;
                    As[kk * WG_Y + r4] = vec4<f32>(load_a(g, 4u * r4, ocg, doh, dow),
                                                   load_a(g, 4u * r4 + 1u, ocg, doh, dow),
                                                   load_a(g, 4u * r4 + 2u, ocg, doh, dow),
                                                   load_a(g, 4u * r4 + 3u, ocg, doh, dow));
                }
                for (var l = tid; l < BK * WG_X; l += nthreads) {
                    let c4 = l % WG_X;
                    let kk = l / WG_X;
                    let ocg = c0 + kk;
                    let j = col0 + 4u * c4;
                    let wrow = (((g * params.cog + ocg) * params.kh + ki) * params.kw + kj)
                               * params.cig;
                    Bs[kk * WG_X + c4] = vec4<f32>(load_b(ocg, wrow, j),
                                                   load_b(ocg, wrow, j + 1u),
                                                   load_b(ocg, wrow, j + 2u),
                                                   load_b(ocg, wrow, j + 3u));
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
                workgroupBarrier();
            }
        }
    }
    let i0 = row0 + 4u * lid.y;
    let j0 = col0 + 4u * lid.x;
    store_row(g, ph, pw, prow, i0, j0, acc0);
    store_row(g, ph, pw, prow, i0 + 1u, j0, acc1);
    store_row(g, ph, pw, prow, i0 + 2u, j0, acc2);
    store_row(g, ph, pw, prow, i0 + 3u, j0, acc3);
}

// Stores 4 input channels of one dx pixel of the phase.
fn store_row(g: u32, ph: Phase, pw: Phase, prow: u32, row: u32, j0: u32, v: vec4<f32>) {
    if (row >= prow) {
        return;
    }
    let tw = row % pw.count;
    let t = row / pw.count;
    let th = t % ph.count;
    let nb = t / ph.count;
    let ih = ph.first + th * params.stride_h;
    let iw = pw.first + tw * params.stride_w;
    let base = ((nb * params.h + ih) * params.w + iw) * params.c_in + g * params.cig;
    for (var t4 = 0u; t4 < 4u; t4++) {
        if (j0 + t4 < params.cig) {
            dx[base + j0 + t4] = Elem(v[t4]);
        }
    }
}
