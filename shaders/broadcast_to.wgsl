// broadcast_to: y[i] = scale * x[index of i in x], x broadcast (NumPy rules) to y's shape;
// the gradient of sum / mean reductions (scale 1 or 1 / count) and of global average pooling.
// The host merges axes as the `binary` kernel does (rank <= 8 after merging) and passes the
// output sizes and x's element strides (0 on broadcast axes).
// Bindings:  0 x (read, Elem), 1 y (read_write, total Elem), 2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per output element; ceil(total / WG) workgroups, folded into
//            (x, y) past 65535: i = gid.x + gid.y * nwg.x * WG.
// Features:  none; scales in f32, stores Elem.

struct Params {
    total: u32,
    rank: u32,
    scale: f32,
    _pad0: u32,
    dims: array<vec4<u32>, 2>,
    stride_x: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.total) {
        return;
    }
    var rem = i;
    var ix = 0u;
    for (var d = i32(params.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let dim = params.dims[q][r];
        ix += (rem % dim) * params.stride_x[q][r];
        rem = rem / dim;
    }
    y[i] = Elem(f32(x[ix]) * params.scale);
}
