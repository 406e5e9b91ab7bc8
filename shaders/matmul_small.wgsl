// matmul_small: matrix-vector / tiny-M matmul. One workgroup owns one output element and its
// WG invocations split the K reduction (strided, so neighbours read neighbouring A elements),
// then combine partial sums by a tree in workgroup memory. For m small enough that the tiled
// kernel would leave most of its 4x4 blocks and most of the GPU idle.
//
// Bindings: 0 a (read), 1 b (read), 2 bias (read, [n] or dummy), 3 c (read_write),
//           4 params (uniform Params); layouts as in matmul.wgsl.
// Overrides: WG: invocations per workgroup, a power of two (default 64).
// Dispatch:  (min(n, max_per_dim), m, batch); workgroups stride over columns j when n is
//            larger than the grid's x extent.
// Features:  none; accumulates in f32. Needs snippet `activation`.

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

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = wg.y;
    let bz = wg.z;
    let abase = bz * params.m * params.k;
    let bbase = bz * params.b_stride;
    // j depends only on the workgroup id, so every barrier below is in uniform control flow.
    for (var j = wg.x; j < params.n; j += nwg.x) {
        var s = 0.0;
        for (var kk = lid.x; kk < params.k; kk += WG) {
            let ai = select(i * params.k + kk, kk * params.m + i, params.trans_a != 0u);
            let bi = select(kk * params.n + j, j * params.k + kk, params.trans_b != 0u);
            s += f32(a[abase + ai]) * f32(b[bbase + bi]);
        }
        partial[lid.x] = s;
        workgroupBarrier();
        for (var half = WG / 2u; half > 0u; half /= 2u) {
            if (lid.x < half) {
                partial[lid.x] += partial[lid.x + half];
            }
            workgroupBarrier();
        }
        if (lid.x == 0u) {
            var v = partial[0];
            if (params.has_bias != 0u) {
                v += f32(bias[j]);
            }
            c[(bz * params.m + i) * params.n + j] = Elem(activate(params.act, params.alpha, v));
        }
        // The next column reuses `partial`: wait until invocation 0 has read it.
        workgroupBarrier();
    }
}
