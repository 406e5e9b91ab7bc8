// matmul_splitk_reduce: second pass of split-K matmul. Sums the `splits` partial products
// in split order (deterministic, no atomics), adds bias, applies the activation, stores C.
//
// Bindings: 0 partial (read, f32 [splits, batch, m, n]), 1 bias (read, [n] or dummy),
//           2 c (read_write, [batch, m, n]), 3 params (uniform Params, shared with matmul).
// Overrides: WG: invocations per workgroup (default 256).
// Dispatch:  one invocation per element of C; ceil(batch*m*n / WG) workgroups folded into
//            (x, y) past the per-dimension limit: element = gid.x + gid.y * nwg.x * WG.
// Features:  none; the partial sums stay f32 whatever Elem is. Needs snippet `activation`.

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

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<Elem>;
@group(0) @binding(2) var<storage, read_write> c: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * WG;
    let total = params.batch * params.m * params.n;
    if (e >= total) {
        return;
    }
    var s = 0.0;
    for (var sp = 0u; sp < params.splits; sp++) {
        s += partial[sp * total + e];
    }
    if (params.has_bias != 0u) {
        s += f32(bias[e % params.n]);
    }
    c[e] = Elem(activate(params.act, params.alpha, s));
}
