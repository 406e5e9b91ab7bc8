// global_avg_pool: y[n, c] = mean over (h, w) of x[n, h, w, c] (NHWC).
//
// One invocation per (n, c) looping over the h*w positions; neighbouring invocations read
// neighbouring channels, so each step of the loop is one coalesced row read.
// Bindings:  0 x (read, n*hw*c Elem), 1 y (read_write, n*c Elem), 2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 64: outputs are few).
// Dispatch:  ceil(n*c / WG) workgroups, folded into (x, y) past 65535:
//            i = gid.x + gid.y * nwg.x * WG.
// Features:  none; accumulates in f32.

struct Params {
    n: u32,
    hw: u32,
    c: u32,
    inv_count: f32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.n * params.c) {
        return;
    }
    let n = i / params.c;
    let c = i % params.c;
    var idx = n * params.hw * params.c + c;
    var acc = 0.0;
    for (var p = 0u; p < params.hw; p++) {
        acc += f32(x[idx]);
        idx += params.c;
    }
    y[i] = Elem(acc * params.inv_count);
}
