// softmax: softmax or log-softmax over the last axis of [rows, cols], max-subtracted.
//
// One workgroup per row: each invocation strides over the row's columns, then workgroup-memory
// tree reductions give the row maximum and sum(exp(x - max)); a third sweep writes the row.
// Bindings:  0 x (read, rows*cols Elem), 1 y (read_write, rows*cols Elem),
//            2 params (uniform Params: rows, cols, log = 1 for log-softmax).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 256).
// Dispatch:  one workgroup per row, folded into (x, y) past 65535: row = wid.x + wid.y * nwg.x.
// Features:  none; reductions in f32 (WG * 4 bytes of workgroup memory).

struct Params {
    rows: u32,
    cols: u32,
    log: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> y: array<Elem>;
@group(0) @binding(2) var<uniform> params: Params;

override WG: u32 = 256u;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let cols = params.cols;
    let base = row * cols;
    // Start from the row's first element: WGSL has no -inf literal.
    var m = f32(x[base]);
    for (var c = lid; c < cols; c += WG) {
        m = max(m, f32(x[base + c]));
    }
    red[lid] = m;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    // Everyone has read red[0] before it is overwritten below.
    workgroupBarrier();
    var sum = 0.0;
    for (var c = lid; c < cols; c += WG) {
        sum += exp(f32(x[base + c]) - mx);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    if (params.log != 0u) {
        let ls = log(total);
        for (var c = lid; c < cols; c += WG) {
            y[base + c] = Elem(f32(x[base + c]) - mx - ls);
        }
    } else {
        let inv = 1.0 / total;
        for (var c = lid; c < cols; c += WG) {
            y[base + c] = Elem(exp(f32(x[base + c]) - mx) * inv);
        }
    }
}
