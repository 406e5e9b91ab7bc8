// batch_norm_grad_combine: batch-norm backward, pass 2 of 3. Per channel, merges the row
// blocks of batch_norm_grad_stats in block order (deterministic):
//   training (mode 1): Chan's formula over (mean - shift, M2) gives the batch mean and
//   inv_std = 1 / sqrt(M2 / rows + eps) (the forward's saved statistics, recomputed);
//   inference (mode 0): inv_std = 1 / sqrt(var[c] + eps), the shifted mean is 0.
// Then dbeta = sum dy, dgamma = (sum dy (x - shift) - (mean - shift) sum dy) * inv_std, and the
// apply pass's per-channel coefficients coef = (A, B, C, mean - shift) with
//   dx = A dy + B (x - shift - (mean - shift)) + C,
//   A = gamma inv_std, B = -A inv_std dgamma / rows, C = -A dbeta / rows (training),
//   A = gamma inv_std, B = C = 0 (inference: the statistics are constants).
// Bindings:  0 partial (read, blocks*channels vec4<f32>), 1 var (read, channels Elem;
//            training binds x here, unread), 2 gamma (read, channels Elem),
//            3 dgamma, 4 dbeta (read_write, channels Elem each),
//            5 coef (read_write, channels vec4<f32>), 6 params (uniform Params).
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
    mode: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> partial: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> var_in: array<Elem>;
@group(0) @binding(2) var<storage, read> gamma: array<Elem>;
@group(0) @binding(3) var<storage, read_write> dgamma: array<Elem>;
@group(0) @binding(4) var<storage, read_write> dbeta: array<Elem>;
@group(0) @binding(5) var<storage, read_write> coef: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> params: Params;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * WG;
    if (c >= params.channels) {
        return;
    }
    let training = params.mode == 1u;
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    var sdy = 0.0;
    var sdyx = 0.0;
    for (var b = 0u; b < params.blocks; b++) {
        let p = partial[b * params.channels + c];
        sdy += p.z;
        sdyx += p.w;
        if (training) {
            let nb = f32(min(params.block_rows, params.rows - b * params.block_rows));
            let nab = n + nb;
            let delta = p.x - mean;
            mean += delta * (nb / nab);
            m2 += p.y + delta * delta * (n * nb / nab);
            n = nab;
        }
    }
    let rows = f32(params.rows);
    var inv_std = 0.0;
    if (training) {
        inv_std = 1.0 / sqrt(m2 / rows + params.eps);
    } else {
        inv_std = 1.0 / sqrt(f32(var_in[c]) + params.eps);
    }
    let dg = (sdyx - mean * sdy) * inv_std;
    dgamma[c] = Elem(dg);
    dbeta[c] = Elem(sdy);
    let a = f32(gamma[c]) * inv_std;
    if (training) {
        coef[c] = vec4<f32>(a, -a * inv_std * dg / rows, -a * sdy / rows, mean);
    } else {
        coef[c] = vec4<f32>(a, 0.0, 0.0, 0.0);
    }
}
