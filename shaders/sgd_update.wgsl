// sgd_update: one SGD step (PyTorch torch.optim.SGD semantics), reading the learning rate
// and the 0-based step count from their 1-element buffers, so they change between training
// steps without rebuilding anything:
//   g' = g + wd * p
//   plain (has_buf 0):  p' = p - lr * g'
//   momentum:           b' = (step == 0) ? g' : momentum * b + (1 - dampening) * g'
//                       p' = p - lr * (nesterov ? g' + momentum * b' : b'),  new_buf = b'
// Bindings:  0 p, 1 g (read, total Elem), 2 lr (read, 1 f32), 3 step (read, 1 i32),
//            4 buf (read, total Elem; plain SGD binds g here, unread),
//            5 new_p (read_write, total Elem), 6 new_buf (read_write, total Elem; plain SGD
//            binds a 4-byte scratch, unwritten), 7 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256);
//            EPT, elements per invocation (default 1), strided as unary.wgsl.
// Dispatch:  ceil(ceil(total / EPT) / WG) workgroups, folded into (x, y) past 65535.
// Features:  none; f32 arithmetic, stores Elem.

struct Params {
    total: u32,
    has_buf: u32,
    nesterov: u32,
    _pad0: u32,
    momentum: f32,
    one_minus_dampening: f32,
    weight_decay: f32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> p: array<Elem>;
@group(0) @binding(1) var<storage, read> g: array<Elem>;
@group(0) @binding(2) var<storage, read> lr: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<i32>;
@group(0) @binding(4) var<storage, read> buf: array<Elem>;
@group(0) @binding(5) var<storage, read_write> new_p: array<Elem>;
@group(0) @binding(6) var<storage, read_write> new_buf: array<Elem>;
@group(0) @binding(7) var<uniform> params: Params;

override WG: u32 = 256u;
override EPT: u32 = 1u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * WG;
    let stride = (params.total + EPT - 1u) / EPT;
    let rate = lr[0];
    let first = step[0] == 0;
    for (var e = 0u; e < EPT; e++) {
        let i = t + e * stride;
        if (t < stride && i < params.total) {
            let pv = f32(p[i]);
            let gv = f32(g[i]) + params.weight_decay * pv;
            if (params.has_buf == 0u) {
                new_p[i] = Elem(pv - rate * gv);
            } else {
                var b = gv;
                if (!first) {
                    b = params.momentum * f32(buf[i]) + params.one_minus_dampening * gv;
                }
                var d = b;
                if (params.nesterov != 0u) {
                    d = gv + params.momentum * b;
                }
                new_p[i] = Elem(pv - rate * d);
                new_buf[i] = Elem(b);
            }
        }
    }
}
