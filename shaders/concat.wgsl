// concat: copies one input of a concatenation into its slot of the output. Viewing the
// output as [outer, y_row] and the input as [outer, chunk] (chunk = its axis size times the
// inner size), y[o * y_row + y_off + j] = x[o * chunk + j]. The host records one dispatch
// per input (or a plain buffer copy when outer = 1).
//
// Units are 32-bit words, not elements: the copy moves bits (f32, i32, or packed f16 / i8
// whose runs are whole words) and never loads them as floats, which could flush an i32's
// small values as denormals. `Elem` is unused.
//
// Bindings:  0 x (read, outer*chunk u32), 1 y (read_write, outer*y_row u32),
//            2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  ceil(outer * chunk / WG) workgroups, folded into (x, y) past 65535:
//            invocation = gid.x + gid.y * nwg.x * WG, one element each.
// Features:  none.

struct Params {
    outer: u32,
    chunk: u32,
    y_row: u32,
    y_off: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.outer * params.chunk) {
        return;
    }
    let o = i / params.chunk;
    let j = i - o * params.chunk;
    y[o * params.y_row + params.y_off + j] = x[i];
}
