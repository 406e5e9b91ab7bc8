// batch_norm_grad_stats: batch-norm backward, pass 1 of 3 (stats, combine, apply). Per (row
// block b, channel c), in one sweep over the block's rows of x and dy:
//   training (mode 1): Welford mean and M2 of x - shift (the forward statistics, recomputed),
//   sum dy, and sum dy * (x - shift), with shift = x[row 0, c];
//   inference (mode 0): shift = the given mean[c]; the Welford terms are left 0.
// Summing against a shift keeps sum dy * (x - mean) free of cancellation when |mean| >> std;
// the combine pass corrects by the shifted batch mean. Fixed-order sums (no atomics), so
// results are bit-identical run to run.
// Bindings:  0 x (read, rows*channels Elem), 1 dy (read, rows*channels Elem),
//            2 mean (read, channels Elem; training binds x here, unread),
//            3 partial (read_write, blocks*channels vec4<f32> = (mean - shift, M2, sum dy,
//            sum dy * (x - shift)), block-major), 4 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per (block, channel), channel fastest so neighbours read one row's
//            neighbouring channels; ceil(blocks*channels / WG) workgroups folded into (x, y)
//            past 65535. Block b covers rows [b*block_rows, min((b+1)*block_rows, rows)).
// Features:  none; f32 sums whatever Elem is.

struct Params {
    rows: u32,
    channels: u32,
    block_rows: u32,
    blocks: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read> mean: array<Elem>;
@group(0) @binding(3) var<storage, read_write> partial: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= params.blocks * params.channels) {
        return;
    }
    let b = i / params.channels;
    let c = i % params.channels;
    let r0 = b * params.block_rows;
    let r1 = min(r0 + params.block_rows, params.rows);
    let training = params.mode == 1u;
    var shift = 0.0;
    if (training) {
        shift = f32(x[c]);
    } else {
        shift = f32(mean[c]);
    }
    var wmean = 0.0;
    var m2 = 0.0;
    var count = 0.0;
    var sdy = 0.0;
    var sdyx = 0.0;
    var idx = r0 * params.channels + c;
    for (var r = r0; r < r1; r++) {
        let v = f32(x[idx]) - shift;
        let d = f32(dy[idx]);
        sdy += d;
        sdyx += d * v;
        if (training) {
            count += 1.0;
            let delta = v - wmean;
            wmean += delta / count;
            m2 += delta * (v - wmean);
        }
        idx += params.channels;
    }
    partial[i] = vec4<f32>(wmean, m2, sdy, sdyx);
}
