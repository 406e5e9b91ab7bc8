// matmul_rows: batched C[b] = act(op(A[b]) @ op(B[b]) + bias) with a 16-row register block per
// invocation and no workgroup memory: each invocation owns one column j of 16 rows, and the
// whole workgroup (WG invocations, WG consecutive columns) shares those 16 rows.
//
// Why: every read of A has the same address in all invocations of the workgroup (a
// broadcast: one scalar load per SIMD batch on CPU-style implementations such as lavapipe,
// an L1 broadcast on GPUs), reads of B are contiguous across invocations (unless trans_b),
// and each B element feeds 16 FMAs from registers. No barriers, no staging. An autotuner
// candidate (`Variant::Rows`): on lavapipe it measured slower than matmul.wgsl's tiles, so no
// default picks it. Invocations past the last column compute on a clamped column and do
// not store, so control flow stays uniform and the broadcast loads stay scalar.
//
// Bindings: 0 a, 1 b, 2 bias ([n] or a 1-element dummy), 3 c, 4 params: as matmul.wgsl.
// Overrides: WG, invocations per workgroup along n (default 64).
// Dispatch:  (ceil(n / WG), ceil(m / 16), batch).
// Features:  none; accumulates in f32 whatever Elem is. Needs snippet `activation`.

struct Params {
    batch: u32,
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    trans_b: u32,
    b_stride: u32,
    has_bias: u32,
    act: u32,
    alpha: f32,
    k_chunk: u32,
    splits: u32,
}

@group(0) @binding(0) var<storage, read> a: array<Elem>;
@group(0) @binding(1) var<storage, read> b: array<Elem>;
@group(0) @binding(2) var<storage, read> bias: array<Elem>;
@group(0) @binding(3) var<storage, read_write> c: array<Elem>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let bz = wg.z;
    let m = params.m;
    let kdim = params.k;
    let row0 = wg.y * 16u;
    let j = wg.x * WG + lid.x;
    let jc = min(j, params.n - 1u);
    // Offsets of rows row0 + 0..15 (clamped to the last row: their results are not stored)
    // at depth 0, and the step per depth: A is [m, k] (step 1) or [k, m] (step m).
    let ta = params.trans_a != 0u;
    let abase = bz * m * kdim;
    let astep = select(1u, m, ta);
    let rscale = select(kdim, 1u, ta);
    let last = m - 1u;
    let r = vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(row0);
    let off0 = vec4<u32>(abase) + min(r, vec4<u32>(last)) * rscale;
    let off1 = vec4<u32>(abase) + min(r + vec4<u32>(4u), vec4<u32>(last)) * rscale;
    let off2 = vec4<u32>(abase) + min(r + vec4<u32>(8u), vec4<u32>(last)) * rscale;
    let off3 = vec4<u32>(abase) + min(r + vec4<u32>(12u), vec4<u32>(last)) * rscale;
    // B is [k, n] (column j, step n) or [n, k] (row j, step 1).
    let tb = params.trans_b != 0u;
    var boff = bz * params.b_stride + select(jc, jc * kdim, tb);
    let bstep = select(params.n, 1u, tb);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var ak = 0u;
    for (var kk = 0u; kk < kdim; kk++) {
        let bv = f32(b[boff]);
        acc0 += bv * vec4<f32>(f32(a[off0.x + ak]), f32(a[off0.y + ak]),
                               f32(a[off0.z + ak]), f32(a[off0.w + ak]));
        acc1 += bv * vec4<f32>(f32(a[off1.x + ak]), f32(a[off1.y + ak]),
                               f32(a[off1.z + ak]), f32(a[off1.w + ak]));
        acc2 += bv * vec4<f32>(f32(a[off2.x + ak]), f32(a[off2.y + ak]),
                               f32(a[off2.z + ak]), f32(a[off2.w + ak]));
        acc3 += bv * vec4<f32>(f32(a[off3.x + ak]), f32(a[off3.y + ak]),
                               f32(a[off3.z + ak]), f32(a[off3.w + ak]));
        boff += bstep;
        ak += astep;
    }
    if (j >= params.n) {
        return;
    }
    var add = 0.0;
    if (params.has_bias != 0u) {
        add = f32(bias[j]);
    }
    store4(bz, row0, j, acc0, add);
    store4(bz, row0 + 4u, j, acc1, add);
    store4(bz, row0 + 8u, j, acc2, add);
    store4(bz, row0 + 12u, j, acc3, add);
}

// Epilogue for rows i0 .. i0+3 of column j: + bias, activation, bounds check, store.
fn store4(bz: u32, i0: u32, j: u32, v: vec4<f32>, add: f32) {
    for (var t = 0u; t < 4u; t++) {
        let i = i0 + t;
        if (i < params.m) {
            c[(bz * params.m + i) * params.n + j] =
                Elem(activate(params.act, params.alpha, v[t] + add));
        }
    }
}
