// unary: y[i] = activate(act, alpha, x[i]), the elementwise activation kernel (any shape).
//
// Bindings:  0 x (read, total Elem), 1 y (read_write, total Elem), 2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256);
//            EPT, elements per invocation (default 1): invocation t handles t, t + T, ...,
//            t + (EPT - 1) * T with T = ceil(total / EPT), so each pass stays coalesced.
// Dispatch:  ceil(ceil(total / EPT) / WG) workgroups, folded into (x, y) past 65535:
//            invocation = gid.x + gid.y * nwg.x * WG.
// Features:  none; computes in f32 (snippet `activation`) and stores Elem.

struct Params {
    total: u32,
    act: u32,
    alpha: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;
override EPT: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let stride = (params.total + EPT - 1u) / EPT;
    for (var e = 0u; e < EPT; e++) {
        let i = t + e * stride;
        if (t < stride && i < params.total) {
            y[i] = Elem(activate(params.act, params.alpha, f32(x[i])));
        }
    }
}
