// matmul_naive: the baseline for `matmul` — one output element per invocation, operands read
// straight from global memory. Same Params, bindings and epilogue as `matmul`.
//
// Bindings: 0 a (read), 1 b (read), 2 bias (read, [n] or dummy), 3 c (read_write),
//           4 params (uniform Params); layouts as in matmul.wgsl.
// Overrides: WG_X, WG_Y: invocations per workgroup along n and m (default 16 x 16).
// Dispatch:  (ceil(n / WG_X), ceil(m / WG_Y), batch).
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

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let i = gid.y;
    let bz = gid.z;
    if (i >= params.m || j >= params.n) {
        return;
    }
    let abase = bz * params.m * params.k;
    let bbase = bz * params.b_stride;
    var s = 0.0;
    for (var kk = 0u; kk < params.k; kk++) {
        let ai = select(i * params.k + kk, kk * params.m + i, params.trans_a != 0u);
        let bi = select(kk * params.n + j, j * params.k + kk, params.trans_b != 0u);
        s += f32(a[abase + ai]) * f32(b[bbase + bi]);
    }
    if (params.has_bias != 0u) {
        s += f32(bias[j]);
    }
    c[(bz * params.m + i) * params.n + j] = Elem(activate(params.act, params.alpha, s));
}
