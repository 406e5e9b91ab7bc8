// softmax_grad: the backward of softmax / log-softmax over the last axis of [rows, cols],
// from the forward OUTPUT y:
//   mode 0 (softmax):     dx = y * (dy - sum_c dy * y)
//   mode 1 (log-softmax): dx = dy - exp(y) * sum_c dy
// One workgroup per row: each invocation strides over the row's columns, a workgroup-memory
// tree (fixed order, so bit-identical run to run) gives the row sum, a second sweep writes dx.
// Bindings:  0 y (read, rows*cols Elem), 1 dy (read, rows*cols Elem),
//            2 dx (read_write, rows*cols Elem), 3 params (uniform Params: rows, cols, mode).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 256).
// Dispatch:  one workgroup per row, folded into (x, y) past 65535: row = wid.x + wid.y * nwg.x.
// Features:  none; the reduction runs in f32 (WG * 4 bytes of workgroup memory).

struct Params {
    rows: u32,
    cols: u32,
    mode: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> y: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (row >= params.rows) {
        return;
    }
    let cols = params.cols;
    let base = row * cols;
    let soft = params.mode == 0u;
    var acc = 0.0;
    for (var c = lid; c < cols; c += WG) {
        let d = f32(dy[base + c]);
        acc += select(d, d * f32(y[base + c]), soft);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let sum = red[0];
    for (var c = lid; c < cols; c += WG) {
        let yv = f32(y[base + c]);
        let d = f32(dy[base + c]);
        if (soft) {
            dx[base + c] = Elem(yv * (d - sum));
        } else {
            dx[base + c] = Elem(d - exp(yv) * sum);
        }
    }
}
