// slice: y[o, l, i] = x[o, start + l, i], a contiguous range of one axis of a tensor viewed as
// [outer, dim, inner] (y is [outer, len, inner]). Copies 32-bit words, so it serves every
// 4-byte element type (f32, i32) without conversion.
// Bindings:  0 x (read, outer*dim*inner u32), 1 y (read_write, outer*len*inner u32),
//            2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per output word; ceil(total / WG) workgroups, folded into (x, y)
//            past 65535: i = gid.x + gid.y * nwg.x * WG.
// Features:  none (Elem unused: a raw copy).

struct Params {
    total: u32,
    len: u32,
    inner: u32,
    dim: u32,
    start: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.total) {
        return;
    }
    let run = params.len * params.inner;
    let o = i / run;
    let rest = i % run;
    y[i] = x[(o * params.dim + params.start) * params.inner + rest];
}
