// batch_norm_combine: training-mode batch norm, pass 2 of 3. Per channel, merges the row
// blocks' (mean, M2) with Chan's parallel formula, then writes the batch mean, the inverse
// standard deviation 1 / sqrt(var_biased + eps) (what the apply pass and the backward read),
// and updates the running statistics in place as the reference does (PyTorch convention:
// running = (1 - momentum) * running + momentum * batch, running var with the unbiased var).
//
// The block means arrive shifted by x[row 0, c] (see batch_norm_stats); the shift is added
// back once, at the end.
// Bindings:  0 partial (read, blocks*channels vec2<f32>), 1 x (read, rows*channels Elem:
//            only row 0 is read, for the shift), 2 saved_mean, 3 saved_inv_std,
//            4 running_mean, 5 running_var (read_write, channels Elem each),
//            6 params (uniform Params).
// Overrides: WG, invocations per workgroup (default 64).
// Dispatch:  one invocation per channel: ceil(channels / WG) workgroups, folded into (x, y)
//            past 65535.
// Features:  none; f32 arithmetic.

struct Params {
    rows: u32,
    channels: u32,
    block_rows: u32,
    blocks: u32,
    eps: f32,
    momentum: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> partial: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> x: array<Elem>;
@group(0) @binding(2) var<storage, read_write> saved_mean: array<Elem>;
@group(0) @binding(3) var<storage, read_write> saved_inv_std: array<Elem>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<Elem>;
@group(0) @binding(5) var<storage, read_write> running_var: array<Elem>;
@group(0) @binding(6) var<uniform> params: Params;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * WG;
    if (c >= params.channels) {
        return;
    }
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var b = 0u; b < params.blocks; b++) {
        let nb = f32(min(params.block_rows, params.rows - b * params.block_rows));
        let p = partial[b * params.channels + c];
        let nab = n + nb;
        let delta = p.x - mean;
        mean += delta * (nb / nab);
        m2 += p.y + delta * delta * (n * nb / nab);
        n = nab;
    }
    mean += f32(x[c]);
    let rows = f32(params.rows);
    let var_biased = m2 / rows;
    let var_unbiased = m2 / (rows - 1.0);
    saved_mean[c] = Elem(mean);
    saved_inv_std[c] = Elem(1.0 / sqrt(var_biased + params.eps));
    let mom = params.momentum;
    running_mean[c] = Elem((1.0 - mom) * f32(running_mean[c]) + mom * mean);
    running_var[c] = Elem((1.0 - mom) * f32(running_var[c]) + mom * var_unbiased);
}
