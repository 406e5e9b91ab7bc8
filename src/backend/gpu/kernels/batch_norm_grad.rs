//! Batch-norm backward on the GPU over the channel (last) axis of `[rows, channels]`, three
//! passes in one recorder: `batch_norm_grad_stats` (per row block and channel: sum dy and
//! sum dy (x - shift), plus the forward's Welford statistics in training), then
//! `batch_norm_grad_combine` (per channel, blocks merged in order: dgamma, dbeta and the
//! coefficients of dx), then `batch_norm_grad_apply` (elementwise dx). Fixed-order sums, no
//! atomics: results are bit-identical run to run. Semantics are the reference's: training
//! differentiates through the batch statistics (recomputed from `x`, as the op does),
//! inference treats the given mean / variance as constants.

use super::GpuElement;
use super::elementwise_grad::check_lens;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of `batch_norm_grad_stats.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StatsParams {
    /// Rows.
    pub rows: u32,
    /// Channels.
    pub channels: u32,
    /// Rows per block (the last block may be shorter).
    pub block_rows: u32,
    /// Blocks, `ceil(rows / block_rows)`.
    pub blocks: u32,
    /// 0 inference, 1 training.
    pub mode: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 3],
}

/// Mirror of `batch_norm_grad_combine.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CombineParams {
    /// Rows.
    pub rows: u32,
    /// Channels.
    pub channels: u32,
    /// Rows per block.
    pub block_rows: u32,
    /// Blocks.
    pub blocks: u32,
    /// Added to the variance.
    pub eps: f32,
    /// 0 inference, 1 training.
    pub mode: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Mirror of `batch_norm_grad_apply.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ApplyParams {
    /// rows * channels.
    pub total: u32,
    /// Channels.
    pub channels: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup of the stats and apply passes (power of two <= 256).
    pub wg: u32,
    /// Elements per invocation of the apply pass (1..=8).
    pub ept: u32,
    /// Rows per statistics block (0 = chosen from the shape).
    pub block_rows: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            wg: 256,
            ept: 1,
            block_rows: 0,
        }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[
    Knobs {
        wg: 256,
        ept: 1,
        block_rows: 0,
    },
    Knobs {
        wg: 64,
        ept: 4,
        block_rows: 32,
    },
    Knobs {
        wg: 128,
        ept: 2,
        block_rows: 256,
    },
];

impl Knobs {
    fn validate(&self) -> Result<()> {
        check_wg(self.wg)?;
        if !(1..=8).contains(&self.ept) {
            return Err(Error::invalid_param(
                "ept",
                format!("elements per invocation must be in 1..=8, got {}", self.ept),
            ));
        }
        Ok(())
    }

    /// `(block_rows, blocks)` for `rows x channels`: enough (block, channel) invocations to
    /// fill a GPU (~8192), blocks of at least 16 rows, at most 1024 blocks so the combine
    /// loop stays short (the forward statistics' rule).
    pub fn blocks(&self, rows: usize, channels: usize) -> (usize, usize) {
        let block_rows = if self.block_rows > 0 {
            self.block_rows as usize
        } else {
            let blocks = 8192usize.div_ceil(channels.max(1)).clamp(1, 1024);
            rows.div_ceil(blocks).max(16)
        };
        let block_rows = block_rows.max(rows.div_ceil(1024)).max(1);
        (block_rows, rows.div_ceil(block_rows))
    }
}

/// One batch-norm backward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormGrad {
    /// Rows (product of the non-channel axes).
    pub rows: usize,
    /// Channels.
    pub channels: usize,
    /// Added to the variance (finite, >= 0).
    pub eps: f64,
    /// Differentiate through the batch statistics (needs rows >= 2).
    pub training: bool,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl BatchNormGrad {
    fn validate(&self) -> Result<f32> {
        self.knobs.validate()?;
        let min_rows = if self.training { 2 } else { 1 };
        if self.rows < min_rows || self.channels == 0 {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![self.rows, self.channels]],
                reason: format!("batch_norm_grad: needs rows >= {min_rows} and channels >= 1"),
            });
        }
        to_u32("rows * channels", self.rows.saturating_mul(self.channels))?;
        let eps = self.eps as f32;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::invalid_param(
                "eps",
                format!("must be finite and non-negative in f32, got {}", self.eps),
            ));
        }
        Ok(eps)
    }
}

/// The statistics an inference-mode backward treats as constants.
#[derive(Debug, Clone, Copy)]
pub struct FrozenStats<'a> {
    /// Mean per channel.
    pub mean: &'a wgpu::Buffer,
    /// Variance per channel.
    pub var: &'a wgpu::Buffer,
}

/// Records `dx`, `dgamma`, `dbeta` on buffers already on the GPU. Training mode needs
/// `stats == None`; inference mode needs the frozen `mean` / `var`.
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    stats: Option<FrozenStats<'_>>,
    dx: &wgpu::Buffer,
    dgamma: &wgpu::Buffer,
    dbeta: &wgpu::Buffer,
    p: &BatchNormGrad,
) -> Result<()> {
    let eps = p.validate()?;
    let (rows, c) = (p.rows, p.channels);
    let n = rows * c;
    for (name, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_buffer::<T>(name, b, n)?;
    }
    for (name, b) in [("gamma", gamma), ("dgamma", dgamma), ("dbeta", dbeta)] {
        check_buffer::<T>(name, b, c)?;
    }
    // Training binds x where the frozen statistics would go (unread there).
    let (mode, mean, var) = match (p.training, stats) {
        (true, None) => (1, x, x),
        (false, Some(s)) => {
            check_buffer::<T>("mean", s.mean, c)?;
            check_buffer::<T>("var", s.var, c)?;
            (0, s.mean, s.var)
        }
        (true, Some(_)) => {
            return Err(Error::invalid_param(
                "stats",
                "training mode recomputes the batch statistics: pass none",
            ));
        }
        (false, None) => {
            return Err(Error::invalid_param(
                "stats",
                "inference mode needs the frozen mean and variance",
            ));
        }
    };
    let (block_rows, blocks) = p.knobs.blocks(rows, c);
    let stats_params = StatsParams {
        rows: to_u32("rows", rows)?,
        channels: to_u32("channels", c)?,
        block_rows: to_u32("block_rows", block_rows)?,
        blocks: to_u32("blocks", blocks)?,
        mode,
        _pad: [0; 3],
    };
    let combine = CombineParams {
        rows: stats_params.rows,
        channels: stats_params.channels,
        block_rows: stats_params.block_rows,
        blocks: stats_params.blocks,
        eps,
        mode,
        _pad: [0; 2],
    };
    let apply = ApplyParams {
        total: to_u32("rows * channels", n)?,
        channels: stats_params.channels,
        _pad: [0; 2],
    };
    let invocations = to_u32("blocks * channels", blocks.saturating_mul(c))?;
    // f32 vec4 partials and coefficients whatever T is: the sums need the precision.
    let partial = gpu.poisoned("batch_norm_grad_partial", (blocks * c * 16) as u64)?;
    let coef = gpu.poisoned("batch_norm_grad_coef", (c * 16) as u64)?;
    let wg = ("WG", f64::from(p.knobs.wg));
    let stats_pipe = gpu.pipeline("batch_norm_grad_stats", T::WGSL, &[wg])?;
    let combine_pipe = gpu.pipeline("batch_norm_grad_combine", T::WGSL, &[("WG", 64.0)])?;
    let apply_pipe = gpu.pipeline(
        "batch_norm_grad_apply",
        T::WGSL,
        &[wg, ("EPT", f64::from(p.knobs.ept))],
    )?;
    let sb = gpu.uniform("batch_norm_grad_stats_params", &stats_params)?;
    let cb = gpu.uniform("batch_norm_grad_combine_params", &combine)?;
    let ab = gpu.uniform("batch_norm_grad_apply_params", &apply)?;
    rec.dispatch(
        &stats_pipe,
        &[x, dy, mean, &partial, &sb],
        grid(gpu, invocations, p.knobs.wg),
    )?;
    rec.dispatch(
        &combine_pipe,
        &[&partial, var, gamma, dgamma, dbeta, &coef, &cb],
        grid(gpu, combine.channels, 64),
    )?;
    let threads = apply.total.div_ceil(p.knobs.ept);
    rec.dispatch(
        &apply_pipe,
        &[x, dy, &coef, dx, &ab],
        grid(gpu, threads, p.knobs.wg),
    )
}

/// What [`run`] reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads<T> {
    /// Gradient with respect to `x`, `[rows, channels]`.
    pub dx: Vec<T>,
    /// Gradient with respect to `gamma`.
    pub dgamma: Vec<T>,
    /// Gradient with respect to `beta`.
    pub dbeta: Vec<T>,
}

/// Uploads the tensors, runs [`record`], reads the gradients back. `frozen` holds
/// `(mean, var)` in inference mode and must be `None` in training mode.
pub fn run<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    gamma: &[T],
    dy: &[T],
    frozen: Option<(&[T], &[T])>,
    p: &BatchNormGrad,
) -> Result<Grads<T>> {
    p.validate()?;
    let (rows, c) = (p.rows, p.channels);
    check_lens(
        "batch_norm_grad",
        &[("x", x.len()), ("dy", dy.len())],
        rows * c,
    )?;
    check_lens("batch_norm_grad", &[("gamma", gamma.len())], c)?;
    let xb = upload(gpu, "x", x)?;
    let gb = upload(gpu, "gamma", gamma)?;
    let dyb = upload(gpu, "dy", dy)?;
    let frozen_bufs = match frozen {
        Some((m, v)) => {
            check_lens("batch_norm_grad", &[("mean", m.len()), ("var", v.len())], c)?;
            Some((upload(gpu, "mean", m)?, upload(gpu, "var", v)?))
        }
        None => None,
    };
    let dxb = output::<T>(gpu, "dx", rows * c)?;
    let dgb = output::<T>(gpu, "dgamma", c)?;
    let dbb = output::<T>(gpu, "dbeta", c)?;
    let stats = frozen_bufs
        .as_ref()
        .map(|(mean, var)| FrozenStats { mean, var });
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &gb, &dyb, stats, &dxb, &dgb, &dbb, p)?;
    rec.submit()?;
    Ok(Grads {
        dx: read::<T>(gpu, &dxb, rows * c)?,
        dgamma: read::<T>(gpu, &dgb, c)?,
        dbeta: read::<T>(gpu, &dbb, c)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_rows() {
        for (rows, c) in [(2, 1), (1000, 3), (25088, 64), (100_000, 1), (17, 4096)] {
            for k in CANDIDATES {
                let (br, b) = k.blocks(rows, c);
                assert!(
                    br * b >= rows && br * (b - 1) < rows,
                    "{rows}x{c}: {br} x {b}"
                );
                assert!(b <= 1024);
            }
        }
    }
}
