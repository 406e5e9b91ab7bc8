// elementwise_chain: y[i] = the step program run on in0[i] (and in1..in3[i]): a chain of
// activations and same-shape binaries fused into one pass over memory.
//
// Bindings:  0-3 in0..in3 (read, total Elem each; unused ones bound to in0),
//            4 y (read_write, total Elem), 5 params (uniform Params).
// Program:   params.prog[s] for s < params.steps. op < 16: activation code (snippet
//            `activation`) with alpha; op = 16 + k: binary k (0 add, 1 sub, 2 mul, 3 div,
//            4 max (left on ties), 5 min (left on ties)) of the accumulator and input
//            `operand`; + 32: reversed (the input on the left).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  ceil(total / WG) workgroups, folded into (x, y) past 65535:
//            invocation = gid.x + gid.y * nwg.x * WG.
// Features:  none; computes in f32 and stores Elem. Every invocation runs the same program,
//            so the branches are uniform.

struct Step {
    op: u32,
    operand: u32,
    alpha: f32,
    _pad0: u32,
}

struct Params {
    total: u32,
    steps: u32,
    _pad0: u32,
    _pad1: u32,
    prog: array<Step, 8>,
}

@group(0) @binding(0) var<storage, read> in0: array<Elem>;
@group(0) @binding(1) var<storage, read> in1: array<Elem>;
@group(0) @binding(2) var<storage, read> in2: array<Elem>;
@group(0) @binding(3) var<storage, read> in3: array<Elem>;
@group(0) @binding(4) var<storage, read_write> y: array<Elem>;
@group(0) @binding(5) var<uniform> params: Params;

override WG: u32 = 256u;

fn operand(k: u32, i: u32) -> f32 {
    switch k {
        case 1u: { return f32(in1[i]); }
        case 2u: { return f32(in2[i]); }
        case 3u: { return f32(in3[i]); }
        default: { return f32(in0[i]); }
    }
}

fn binary_op(k: u32, a: f32, b: f32) -> f32 {
    switch k {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return select(b, a, a >= b); }
        default: { return select(b, a, a <= b); }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.total) {
        return;
    }
    var acc = f32(in0[i]);
    for (var s = 0u; s < params.steps; s++) {
        let st = params.prog[s];
        if (st.op < 16u) {
            acc = activate(st.op, st.alpha, acc);
        } else {
            let b = operand(st.operand, i);
            if ((st.op & 32u) != 0u) {
                acc = binary_op(st.op & 15u, b, acc);
            } else {
                acc = binary_op(st.op & 15u, acc, b);
            }
        }
    }
    y[i] = Elem(acc);
}
