// loss_grad: the gradient of every training loss with respect to its prediction (logits),
// the forward means folded in; dloss is the rank-0 upstream gradient, read from its buffer.
//   kind 0 softmax CE (dense targets): d = dloss/rows * (softmax * sum_c t - t)
//   kind 1 sparse softmax CE (labels):  d = dloss/rows * (softmax - onehot(label))
//   kind 2 mse:                         d = dloss * 2 (p - t) / n
//   kind 3 sigmoid BCE on logits:       d = dloss * (sigmoid(p) - t) / n
//   kind 4 smooth L1 (beta):            d = dloss/n * (|p - t| < beta ? (p - t) / beta : sign(p - t))
// Kinds 0 and 1 run one workgroup per row (max, then sum of exp and of the targets, through
// fixed-order workgroup-memory trees: bit-identical run to run); an out-of-range label makes
// its row NaN (the reference refuses it; a kernel cannot return an error). Kinds 2-4 run one
// invocation per element.
// Bindings:  0 pred (read, total Elem), 1 tgt (read, total Elem targets; kind 1 binds the labels
//            here too, unread), 2 labels (read, rows i32; other kinds bind the target, unread),
//            3 dloss (read, 1 Elem), 4 dpred (read_write, total Elem),
//            5 params (uniform Params: total, rows, classes, kind, inv_count = 1/rows for
//            kinds 0-1 and 1/n otherwise, beta).
// Overrides: WG, invocations per workgroup, a power of two <= 256 (default 256).
// Dispatch:  kinds 0-1: one workgroup per row; kinds 2-4: ceil(total / WG) workgroups; both
//            folded into (x, y) past 65535.
// Features:  none; f32 arithmetic (WG * 8 bytes of workgroup memory).

struct Params {
    total: u32,
    rows: u32,
    classes: u32,
    kind: u32,
    inv_count: f32,
    beta: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> pred: array<Elem>;
@group(0) @binding(1) var<storage, read> tgt: array<Elem>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> dloss: array<Elem>;
@group(0) @binding(4) var<storage, read_write> dpred: array<Elem>;
@group(0) @binding(5) var<uniform> params: Params;

override WG: u32 = 256u;

var<workgroup> red: array<vec2<f32>, WG>;

fn lg_sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

fn elementwise(i: u32) {
    if (i >= params.total) {
        return;
    }
    let scale = f32(dloss[0]) * params.inv_count;
    let p = f32(pred[i]);
    let t = f32(tgt[i]);
    let d = p - t;
    var g = 0.0;
    switch params.kind {
        case 2u: { g = 2.0 * d; }
        case 3u: { g = lg_sigmoid(p) - t; }
        default: {
            if (abs(d) < params.beta) {
                g = d / params.beta;
            } else {
                g = sign(d);
            }
        }
    }
    dpred[i] = Elem(scale * g);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let group = wid.x + wid.y * nwg.x;
    if (params.kind >= 2u) {
        elementwise(group * WG + lid);
        return;
    }
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (group >= params.rows) {
        return;
    }
    let cols = params.classes;
    let base = group * cols;
    let dense = params.kind == 0u;
    var m = f32(pred[base]);
    for (var c = lid; c < cols; c += WG) {
        m = max(m, f32(pred[base + c]));
    }
    red[lid] = vec2<f32>(m, 0.0);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid].x = max(red[lid].x, red[lid + s].x);
        }
        workgroupBarrier();
    }
    let mx = red[0].x;
    // Everyone has read red[0] before it is overwritten below.
    workgroupBarrier();
    var acc = vec2<f32>(0.0, 0.0);
    for (var c = lid; c < cols; c += WG) {
        acc.x += exp(f32(pred[base + c]) - mx);
        if (dense) {
            acc.y += f32(tgt[base + c]);
        }
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let sums = red[0];
    let inv_sum = 1.0 / sums.x;
    let scale = f32(dloss[0]) * params.inv_count;
    var label = -1;
    if (!dense) {
        label = labels[group];
    }
    let bad = !dense && (label < 0 || u32(label) >= cols);
    // A runtime NaN (a constant one would be folded and refused by the shader compiler).
    let nan = bitcast<f32>(0x7fc00000u | (params.kind & 0u));
    for (var c = lid; c < cols; c += WG) {
        let p = exp(f32(pred[base + c]) - mx) * inv_sum;
        var g = 0.0;
        if (dense) {
            g = p * sums.y - f32(tgt[base + c]);
        } else {
            g = p - select(0.0, 1.0, i32(c) == label);
        }
        dpred[base + c] = Elem(select(scale * g, nan, bad));
    }
}
