// bias_add: y[r, c] = x[r, c] + bias[c] over the last (channel) axis of an NHWC tensor.
//
// Bindings: 0 x (read, rows*channels Elem), 1 bias (read, channels Elem),
//           2 y (read_write, rows*channels Elem), 3 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per element; ceil(total / WG) workgroups, folded into
//            (x, y) when above the 65535-per-dimension limit: element = gid.x + gid.y * nwg.x * WG.
// Features:  none (f16 variant needs SHADER_F16 through the prelude).
// Also the GPU smoke test: the first kernel run on every adapter.

struct Params {
    total: u32,
    channels: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> bias: array<Elem>;
@group(0) @binding(2) var<storage, read_write> y: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.total) {
        return;
    }
    y[i] = x[i] + bias[i % params.channels];
}
