// conv2d: grouped, strided, dilated, asymmetrically padded 2-D convolution as an implicit
// GEMM on the matmul core (workgroup tile in workgroup memory, 4x4 register block per
// invocation), with fused bias + activation. Per group g:
//   C[row, j] = sum_kk A[row, kk] * B[kk, j],  row = (n, oh, ow), j = output channel in group,
//   kk = (ki, kj, icg) with icg fastest (the OHWI weight's inner order),
//   A[row, kk] = x[n, oh*sh + ki*dh - top, ow*sw + kj*dw - left, g*cig + icg] (0 off the image),
//   B[kk, j]   = w[g*cog + j, ki, kj, icg].
// 1x1 / stride 1 / unpadded / ungrouped convolutions go to the plain matmul on the host.
//
// Bindings: 0 x (read, NHWC [n, h, w, c_in]), 1 w (read, OHWI [c_out, kh, kw, c_in/groups]),
//           2 bias (read, [c_out]; 1-element dummy when has_bias == 0),
//           3 y (read_write, NHWC [n, out_h, out_w, c_out]), 4 params (uniform ConvParams).
// Overrides: WG_X, WG_Y, BK as in matmul.wgsl (tile (4*WG_Y) rows x (4*WG_X) channels).
// Dispatch:  (ceil(cog / (4 * WG_X)), ceil(n*out_h*out_w / (4 * WG_Y)), groups).
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
    // Input / output channels per group.
    cig: u32,
    cog: u32,
    // GEMM sizes: kdim = kh * kw * cig, rows = n * out_h * out_w (outputs, for the naive and
    // transposed kernels).
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

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override BK: u32 = 16u;

var<workgroup> As: array<vec4<f32>, BK * WG_Y>;
var<workgroup> Bs: array<vec4<f32>, BK * WG_X>;

// A[row .. row+3, kk] of group g, the four rows one cooperative-load step stages. The
// divisions that split kk into (ki, kj, icg) and row into (n, oh, ow) run once per four
// elements instead of once per element, the next rows following by stepping ow with carry:
// integer division has no SIMD form on CPU-style adapters (lavapipe scalarises it per lane).
// On lavapipe the gain was within noise (2.9x vs 2.7x the naive kernel at 1x56x56x64->64):
// there the compute loop's workgroup-memory gathers dominate, not the staging.
fn load_a4(g: u32, row: u32, kk: u32) -> vec4<f32> {
    var out = vec4<f32>(0.0);
    if (row >= params.rows || kk >= params.kdim) {
        return out;
    }
    let icg = kk % params.cig;
    let tap = kk / params.cig;
    let dw = (tap % params.kw) * params.dilation_w;
    let dh = (tap / params.kw) * params.dilation_h;
    var ow = row % params.out_w;
    let t = row / params.out_w;
    var oh = t % params.out_h;
    var nb = t / params.out_h;
    let ch = g * params.cig + icg;
    for (var q = 0u; q < 4u; q++) {
        // Padded coordinates (ih + pad_top, iw + pad_left): unsigned, so no wrap-around.
        let ihp = oh * params.stride_h + dh;
        let iwp = ow * params.stride_w + dw;
        if (row + q < params.rows && ihp >= params.pad_top && ihp - params.pad_top < params.h
            && iwp >= params.pad_left && iwp - params.pad_left < params.w) {
            let ih = ihp - params.pad_top;
            let iw = iwp - params.pad_left;
            out[q] = f32(x[((nb * params.h + ih) * params.w + iw) * params.c_in + ch]);
        }
        ow += 1u;
        if (ow == params.out_w) {
            ow = 0u;
            oh += 1u;
            if (oh == params.out_h) {
                oh = 0u;
                nb += 1u;
            }
        }
    }
    return out;
}

// B[kk, j] of group g: the OHWI weight row of output channel g*cog + j.
fn load_b(g: u32, kk: u32, j: u32) -> f32 {
    if (j >= params.cog || kk >= params.kdim) {
        return 0.0;
    }
    return f32(w[(g * params.cog + j) * params.kdim + kk]);
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wg.z;
    let row0 = wg.y * 4u * WG_Y;
    let col0 = wg.x * 4u * WG_X;
    let tid = lid.y * WG_X + lid.x;
    let nthreads = WG_X * WG_Y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < params.kdim; k0 += BK) {
        // Depth-fastest loads: input channels (A) and weight rows (B) are contiguous in K.
        for (var l = tid; l < BK * WG_Y; l += nthreads) {
            let kk = l % BK;
            let r4 = l / BK;
            let i = row0 + 4u * r4;
            As[kk * WG_Y + r4] = load_a4(g, i, k0 + kk);
        }
        for (var l = tid; l < BK * WG_X; l += nthreads) {
            let kk = l % BK;
            let c4 = l / BK;
            let j = col0 + 4u * c4;
            Bs[kk * WG_X + c4] = vec4<f32>(load_b(g, k0 + kk, j), load_b(g, k0 + kk, j + 1u),
                                           load_b(g, k0 + kk, j + 2u), load_b(g, k0 + kk, j + 3u));
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
    let i0 = row0 + 4u * lid.y;
    let j0 = col0 + 4u * lid.x;
    store_row(g, i0, j0, acc0);
    store_row(g, i0 + 1u, j0, acc1);
    store_row(g, i0 + 2u, j0, acc2);
    store_row(g, i0 + 3u, j0, acc3);
}

// Epilogue for 4 output channels of one output pixel: + bias, activation, store.
fn store_row(g: u32, row: u32, j0: u32, v: vec4<f32>) {
    if (row >= params.rows) {
        return;
    }
    for (var t = 0u; t < 4u; t++) {
        let j = j0 + t;
        if (j < params.cog) {
            let oc = g * params.cog + j;
            var s = v[t];
            if (params.has_bias != 0u) {
                s += f32(bias[oc]);
            }
            y[row * params.c_out + oc] = Elem(activate(params.act, params.alpha, s));
        }
    }
}
