// reduce: y[o, i] = scale * sum_r x[o, r, i] over the middle axis of [outer, red, inner], which
// covers a sum / mean over the last axis (inner = 1) and over leading axes (outer = 1); the
// host reduces any axis set as a sequence of such passes. scale = 1 (sum) or 1 / red (mean).
//
// Bindings:  0 x (read, outer*red*inner Elem), 1 y (read_write, outer*inner Elem),
//            2 params (uniform Params).
// Params:    mode 0 = rows (inner must be 1): one workgroup per output, its invocations
//            stride over the row and combine through a workgroup-memory tree;
//            mode 1 = columns: one invocation per (o, i), looping over r (coalesced along i).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 256).
// Dispatch:  mode 0: one workgroup per row (outer rows), mode 1: ceil(outer*inner / WG)
//            workgroups; both folded into (x, y) past 65535.
// Features:  none; accumulates in f32.

struct Params {
    outer: u32,
    red: u32,
    inner: u32,
    mode: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

fn columns(g: u32) {
    if (g >= params.outer * params.inner) {
        return;
    }
    let o = g / params.inner;
    let i = g % params.inner;
    var acc = 0.0;
    var idx = o * params.red * params.inner + i;
    for (var r = 0u; r < params.red; r++) {
        acc += f32(x[idx]);
        idx += params.inner;
    }
    y[g] = Elem(acc * params.scale);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * nwg.x;
    if (params.mode == 1u) {
        columns(group * WG + lid);
        return;
    }
    if (group >= params.outer) {
        return;
    }
    let base = group * params.red;
    var acc = 0.0;
    for (var r = lid; r < params.red; r += WG) {
        acc += f32(x[base + r]);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        y[group] = Elem(red[0] * params.scale);
    }
}
