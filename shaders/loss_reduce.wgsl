// loss_reduce: y[0] = scale * sum_i partial[i], the second (last) pass of every loss kernel:
// one workgroup, invocations stride over the partials, then a workgroup-memory tree. The
// order is fixed, so the loss is bit-identical run to run (no float atomics).
//
// Bindings:  0 partial (read, n f32), 1 y (read_write, 1 Elem), 2 params (uniform Params).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 256).
// Dispatch:  exactly one workgroup.
// Features:  none; sums in f32 (WG * 4 bytes of workgroup memory).

struct Params {
    n: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < params.n; i += WG) {
        acc += partial[i];
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
        y[0] = Elem(red[0] * params.scale);
    }
}
