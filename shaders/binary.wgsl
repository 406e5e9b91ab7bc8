// binary: y = a op b (add, sub, mul, div, max, min) with NumPy broadcasting, rank <= 8.
//
// The host right-aligns both shapes to the output's rank, merges neighbouring axes that
// broadcast alike, and passes per-axis output sizes and per-operand element strides (0 on a
// broadcast axis), so one shader serves every broadcast pattern.
// Bindings:  0 a (read, Elem), 1 b (read, Elem), 2 y (read_write, total Elem),
//            3 params (uniform Params).
// Params:    op 0 add, 1 sub, 2 mul, 3 div, 4 max (a when a >= b), 5 min (a when a <= b);
//            flags bit 0: a is laid out like y (index = i), bit 1: same for b (skips the
//            index decode on the common same-shape / scalar-free operands).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per output element; ceil(total / WG) workgroups, folded into
//            (x, y) past 65535: i = gid.x + gid.y * nwg.x * WG.
// Features:  none; computes in f32, stores Elem.

struct Params {
    total: u32,
    rank: u32,
    op: u32,
    flags: u32,
    dims: array<vec4<u32>, 2>,
    stride_a: array<vec4<u32>, 2>,
    stride_b: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> a: array<Elem>;
@group(0) @binding(1) var<storage, read> b: array<Elem>;
@group(0) @binding(2) var<storage, read_write> y: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;

fn apply(op: u32, u: f32, v: f32) -> f32 {
    switch op {
        case 0u: { return u + v; }
        case 1u: { return u - v; }
        case 2u: { return u * v; }
        case 3u: { return u / v; }
        case 4u: { return select(v, u, u >= v); }
        default: { return select(v, u, u <= v); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.total) {
        return;
    }
    var ia = i;
    var ib = i;
    if (params.flags != 3u) {
        // Decode the output index axis by axis, last axis fastest.
        var rem = i;
        var sa = 0u;
        var sb = 0u;
        for (var d = i32(params.rank) - 1; d >= 0; d--) {
            let q = u32(d) / 4u;
            let r = u32(d) % 4u;
            let dim = params.dims[q][r];
            let coord = rem % dim;
            rem = rem / dim;
            sa += coord * params.stride_a[q][r];
            sb += coord * params.stride_b[q][r];
        }
        if ((params.flags & 1u) == 0u) {
            ia = sa;
        }
        if ((params.flags & 2u) == 0u) {
            ib = sb;
        }
    }
    y[i] = Elem(apply(params.op, f32(a[ia]), f32(b[ib])));
}
