// matmul: batched C[b] = act(op(A[b]) @ op(B[b]) + bias), tiled in workgroup memory with a
// 4x4 register block per invocation (the GEMM core conv2d shares).
//
// Bindings: 0 a (read, A: [batch, m, k] or [batch, k, m] when trans_a),
//           1 b (read, B: [b_batch, k, n] or [b_batch, n, k] when trans_b; b_stride 0 = shared),
//           2 bias (read, [n]; a 1-element dummy when has_bias == 0),
//           3 c (read_write, [batch, m, n]), 4 params (uniform Params).
// Overrides: WG_X, WG_Y: invocations per workgroup along n and m (default 16 x 16);
//            BK: K-tile depth, a multiple of 4 (default 16).
//            Tile = (4 * WG_Y) rows x (4 * WG_X) columns; workgroup memory
//            4 * BK * 4 * (WG_X + WG_Y) bytes (8 KiB at the defaults).
// Dispatch:  (ceil(n / (4 * WG_X)), ceil(m / (4 * WG_Y)), batch).
// Features:  none; accumulates in f32 whatever Elem is. Needs snippet `activation`.

struct Params {
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    // Elements between consecutive B matrices: k * n, or 0 when every product shares one B.
    b_stride: u32,
    has_bias: u32,
    act: u32,
    alpha: f32,
    // Split-K only: K elements per split (a multiple of BK).
    k_chunk: u32,
    splits: u32,
}

@group(0) @binding(0) var<storage, read> a: array<Elem>;
@group(0) @binding(1) var<storage, read> b: array<Elem>;
@group(0) @binding(2) var<storage, read> bias: array<Elem>;
@group(0) @binding(3) var<storage, read_write> c: array<Elem>;
@group(0) @binding(4) var<uniform> params: Params;

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override BK: u32 = 16u;

// As[kk * (WG_Y) + r4] holds rows 4*r4 .. 4*r4+3 of op(A) at depth kk (k-major, so one vec4
// read feeds a whole register-block column); Bs[kk * WG_X + c4] likewise 4 columns of op(B).
var<workgroup> As: array<vec4<f32>, BK * WG_Y>;
var<workgroup> Bs: array<vec4<f32>, BK * WG_X>;

// op(A)[i, kk] of batch bz, zero outside the matrix.
fn load_a(bz: u32, i: u32, kk: u32) -> f32 {
    if (i >= params.m || kk >= params.k) {
        return 0.0;
    }
    let base = bz * params.m * params.k;
    let idx = select(i * params.k + kk, kk * params.m + i, params.trans_a != 0u);
    return f32(a[base + idx]);
}

// op(B)[kk, j] of batch bz, zero outside the matrix.
fn load_b(bz: u32, kk: u32, j: u32) -> f32 {
    if (j >= params.n || kk >= params.k) {
        return 0.0;
    }
    let base = bz * params.b_stride;
    let idx = select(kk * params.n + j, j * params.k + kk, params.trans_b != 0u);
    return f32(b[base + idx]);
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let bz = wg.z;
    let row0 = wg.y * 4u * WG_Y;
    let col0 = wg.x * 4u * WG_X;
    let tid = lid.y * WG_X + lid.x;
    let nthreads = WG_X * WG_Y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let ta = params.trans_a != 0u;
    let tb = params.trans_b != 0u;
    for (var k0 = 0u; k0 < params.k; k0 += BK) {
        // Cooperative loads, one vec4 (4 rows / 4 columns at one depth) per step. The index
        // split follows the storage order so neighbouring invocations read neighbouring
        // addresses: depth-fastest when K is contiguous, row/column-fastest otherwise.
        for (var l = tid; l < BK * WG_Y; l += nthreads) {
            let kk = select(l % BK, l / WG_Y, ta);
            let r4 = select(l / BK, l % WG_Y, ta);
            let i = row0 + 4u * r4;
            As[kk * WG_Y + r4] = vec4<f32>(load_a(bz, i, k0 + kk), load_a(bz, i + 1u, k0 + kk),
                                           load_a(bz, i + 2u, k0 + kk), load_a(bz, i + 3u, k0 + kk));
        }
        for (var l = tid; l < BK * WG_X; l += nthreads) {
            let kk = select(l / WG_X, l % BK, tb);
            let c4 = select(l % WG_X, l / BK, tb);
            let j = col0 + 4u * c4;
            Bs[kk * WG_X + c4] = vec4<f32>(load_b(bz, k0 + kk, j), load_b(bz, k0 + kk, j + 1u),
                                           load_b(bz, k0 + kk, j + 2u), load_b(bz, k0 + kk, j + 3u));
        }
        workgroupBarrier();
        // BK is a multiple of 4: unrolled by hand because naga does not unroll.
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
    store_row(bz, i0, j0, acc0);
    store_row(bz, i0 + 1u, j0, acc1);
    store_row(bz, i0 + 2u, j0, acc2);
    store_row(bz, i0 + 3u, j0, acc3);
}

// Epilogue for 4 columns of one row: + bias, activation, bounds check, store.
fn store_row(bz: u32, i: u32, j0: u32, v: vec4<f32>) {
    if (i >= params.m) {
        return;
    }
    let base = (bz * params.m + i) * params.n;
    for (var t = 0u; t < 4u; t++) {
        let j = j0 + t;
        if (j < params.n) {
            var s = v[t];
            if (params.has_bias != 0u) {
                s += f32(bias[j]);
            }
            c[base + j] = Elem(activate(params.act, params.alpha, s));
        }
    }
}
