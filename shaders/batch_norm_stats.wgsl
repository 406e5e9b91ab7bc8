// batch_norm_stats: training-mode batch norm, pass 1 of 3 (stats, combine, apply).
// Per (row block b, channel c): the block's mean and M2 = sum (x - mean)^2 by Welford's
// update, written to an f32 scratch; batch_norm_combine merges the blocks with Chan's
// parallel formula. Mean + M2 rather than sum / sum of squares: no catastrophic cancellation
// when |mean| >> std (e.g. mean 100, std 1 in f32). The update runs on x - shift, with shift
// = x[row 0, c] (the same for every block of a channel), so the running mean stays small and
// its rounding is relative to the spread, not to the offset (mean 1000, std 0.5 keeps ~1e-6).
//
// Bindings:  0 x (read, rows*channels Elem), 1 partial (read_write, blocks*channels
//            vec2<f32> = (mean - shift, M2), block-major), 2 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 256).
// Dispatch:  one invocation per (block, channel), channel fastest so neighbours read one
//            row's neighbouring channels; ceil(blocks*channels / WG) workgroups folded into
//            (x, y) past 65535. Block b covers rows [b*block_rows, min((b+1)*block_rows, rows)).
// Features:  none; f32 statistics whatever Elem is.

struct Params {
    rows: u32,
    channels: u32,
    block_rows: u32,
    blocks: u32,
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read_write> partial: array<vec2<f32>>;
@group(0) @binding(2) var<uniform> params: Params;

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
    var mean = 0.0;
    var m2 = 0.0;
    var count = 0.0;
    let shift = f32(x[c]);
    var idx = r0 * params.channels + c;
    for (var r = r0; r < r1; r++) {
        let v = f32(x[idx]) - shift;
        count += 1.0;
        let d = v - mean;
        mean += d / count;
        m2 += d * (v - mean);
        idx += params.channels;
    }
    partial[i] = vec2<f32>(mean, m2);
}
