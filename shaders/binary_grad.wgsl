// binary_grad: the elementwise half of the binary-op gradient. For every output element i
// (NumPy broadcasting, rank <= 8, `binary`'s Params and index decode), with (pa, pb) the
// partial derivatives of `a op b` at the broadcast operands:
//   ga[i] = dy[i] * pa,  gb[i] = dy[i] * pb   (both output-shaped).
// The host then sums ga / gb over each operand's broadcast axes with the deterministic
// `reduce` kernel (or binds the real da / db here when an operand is not broadcast).
// Partials: add (1, 1), sub (1, -1), mul (b, a), div (1/b, -a/b^2), max / min: the whole
// gradient to the selected operand, to a on ties (the reference's rule).
// Bindings:  0 a (read, Elem), 1 b (read, Elem), 2 dy (read, total Elem),
//            3 ga (read_write, total Elem), 4 gb (read_write, total Elem),
//            5 params (uniform Params, as binary.wgsl).
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
@group(0) @binding(2) var<storage, read> dy: array<Elem>;
@group(0) @binding(3) var<storage, read_write> ga: array<Elem>;
@group(0) @binding(4) var<storage, read_write> gb: array<Elem>;
@group(0) @binding(5) var<uniform> params: Params;

override WG: u32 = 256u;

fn partials(op: u32, u: f32, v: f32) -> vec2<f32> {
    switch op {
        case 0u: { return vec2<f32>(1.0, 1.0); }
        case 1u: { return vec2<f32>(1.0, -1.0); }
        case 2u: { return vec2<f32>(v, u); }
        case 3u: { return vec2<f32>(1.0 / v, -u / (v * v)); }
        case 4u: { return select(vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), u >= v); }
        default: { return select(vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), u <= v); }
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
    let d = f32(dy[i]);
    let p = partials(params.op, f32(a[ia]), f32(b[ib]));
    ga[i] = Elem(d * p.x);
    gb[i] = Elem(d * p.y);
}
