//! Batch norm forward on the GPU over the channel (last) axis of `[rows, channels]`:
//! inference (`shaders/batch_norm.wgsl`, one apply pass) and training (three passes in one
//! recorder: `batch_norm_stats` per row block mean + M2, `batch_norm_combine` merging the
//! blocks with Chan's formula and updating the running statistics, then the apply pass reading
//! the saved mean and inverse std). Semantics are the reference's (PyTorch's): biased batch
//! variance for the output, unbiased for the running variance.

use super::GpuElement;
use super::activation_wgsl;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::activation::Activation;
use spore_kernels_cpu::reference::batch_norm::{BatchNormParams, BatchNormTrainParams};

/// Mirror of `batch_norm.wgsl`'s `Params` uniform (the apply pass).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// rows * channels.
    pub total: u32,
    /// Channels.
    pub channels: u32,
    /// Added to the variance (mode 0).
    pub eps: f32,
    /// 0: binding 2 holds the variance; 1: it holds the inverse std.
    pub mode: u32,
    /// Fused activation code.
    pub act: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Mirror of `batch_norm_stats.wgsl`'s `Params` uniform.
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
}

/// Mirror of `batch_norm_combine.wgsl`'s `Params` uniform.
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
    /// Added to the biased variance.
    pub eps: f32,
    /// Weight of the batch statistic in the running update.
    pub momentum: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup of the apply and stats passes (power of two <= 256).
    pub wg: u32,
    /// Elements per invocation of the apply pass (1..=8).
    pub ept: u32,
    /// Rows per statistics block in training (0 = chosen from the shape).
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
        block_rows: 64,
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
    /// fill a GPU (~8192), blocks of at least 16 rows, and at most 1024 blocks so the
    /// per-channel combine loop stays short.
    fn blocks(&self, rows: usize, channels: usize) -> (usize, usize) {
        let block_rows = if self.block_rows > 0 {
            self.block_rows as usize
        } else {
            let blocks = 8192usize.div_ceil(channels).clamp(1, 1024);
            rows.div_ceil(blocks).max(16)
        };
        let block_rows = block_rows.max(rows.div_ceil(1024)).max(1);
        (block_rows, rows.div_ceil(block_rows))
    }
}

/// One inference-mode batch norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    /// Shape and epsilon.
    pub shape: BatchNormParams,
    /// Fused activation after the affine transform.
    pub act: Option<Activation>,
    /// Tuning knobs.
    pub knobs: Knobs,
}

/// One training-mode batch norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormTrain {
    /// Shape, epsilon and momentum.
    pub shape: BatchNormTrainParams,
    /// Fused activation after the affine transform (the reference has none: `None` matches it).
    pub act: Option<Activation>,
    /// Tuning knobs.
    pub knobs: Knobs,
}

/// What [`run_train`] reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutputs<T> {
    /// The normalised output, `[rows, channels]`.
    pub y: Vec<T>,
    /// Batch mean per channel.
    pub saved_mean: Vec<T>,
    /// `1 / sqrt(biased batch var + eps)` per channel.
    pub saved_inv_std: Vec<T>,
    /// Updated running mean.
    pub running_mean: Vec<T>,
    /// Updated running variance (unbiased batch variance blended in).
    pub running_var: Vec<T>,
}

fn check_eps(eps: f64) -> Result<f32> {
    let e = eps as f32;
    if !(e.is_finite() && e >= 0.0) {
        return Err(Error::invalid_param(
            "eps",
            format!("must be finite and non-negative in f32, got {eps}"),
        ));
    }
    Ok(e)
}

fn apply_params(
    rows: usize,
    channels: usize,
    eps: f64,
    mode: u32,
    act: Option<Activation>,
) -> Result<Params> {
    let total = to_u32("rows * channels", rows.saturating_mul(channels))?;
    let (act, alpha) = activation_wgsl::encode(act)?;
    Ok(Params {
        total,
        channels: to_u32("channels", channels)?,
        eps: check_eps(eps)?,
        mode,
        act,
        alpha,
        _pad: [0; 2],
    })
}

fn record_apply<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    bufs: [&wgpu::Buffer; 6],
    params: &Params,
    knobs: &Knobs,
) -> Result<()> {
    let pipeline = gpu.pipeline(
        "batch_norm",
        T::WGSL,
        &[("WG", f64::from(knobs.wg)), ("EPT", f64::from(knobs.ept))],
    )?;
    let pb = gpu.uniform("batch_norm_params", params)?;
    let [x, mean, var, gamma, beta, y] = bufs;
    let threads = params.total.div_ceil(knobs.ept);
    rec.dispatch(
        &pipeline,
        &[x, mean, var, gamma, beta, y, &pb],
        grid(gpu, threads, knobs.wg),
    )
}

/// Records inference batch norm: `y = act(gamma * (x - mean) / sqrt(var + eps) + beta)`.
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    mean: &wgpu::Buffer,
    var: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &BatchNorm,
) -> Result<()> {
    p.knobs.validate()?;
    p.shape.validate_shape()?;
    let (rows, c) = (p.shape.rows, p.shape.channels);
    let params = apply_params(rows, c, p.shape.eps, 0, p.act)?;
    check_buffer::<T>("x", x, rows * c)?;
    for (name, b) in [
        ("mean", mean),
        ("var", var),
        ("gamma", gamma),
        ("beta", beta),
    ] {
        check_buffer::<T>(name, b, c)?;
    }
    check_buffer::<T>("y", y, rows * c)?;
    record_apply::<T>(gpu, rec, [x, mean, var, gamma, beta, y], &params, &p.knobs)
}

/// Uploads the tensors, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    mean: &[T],
    var: &[T],
    gamma: &[T],
    beta: &[T],
    p: &BatchNorm,
) -> Result<Vec<T>> {
    p.shape.validate_shape()?;
    let (rows, c) = (p.shape.rows, p.shape.channels);
    check_lens(
        "batch_norm",
        &[
            ("x", x.len(), rows * c),
            ("mean", mean.len(), c),
            ("var", var.len(), c),
            ("gamma", gamma.len(), c),
            ("beta", beta.len(), c),
        ],
    )?;
    let bufs = [
        upload(gpu, "x", x)?,
        upload(gpu, "mean", mean)?,
        upload(gpu, "var", var)?,
        upload(gpu, "gamma", gamma)?,
        upload(gpu, "beta", beta)?,
    ];
    let yb = output::<T>(gpu, "y", rows * c)?;
    let mut rec = gpu.recorder();
    let [xb, mb, vb, gb, bb] = &bufs;
    record::<T>(gpu, &mut rec, xb, mb, vb, gb, bb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, rows * c)
}

/// Records training batch norm (stats, combine, apply): writes `y`, `saved_mean`,
/// `saved_inv_std`, and updates `running_mean` / `running_var` in place.
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record_train<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    running_mean: &wgpu::Buffer,
    running_var: &wgpu::Buffer,
    y: &wgpu::Buffer,
    saved_mean: &wgpu::Buffer,
    saved_inv_std: &wgpu::Buffer,
    p: &BatchNormTrain,
) -> Result<()> {
    p.knobs.validate()?;
    let s = p.shape;
    s.validate_shape()?;
    let (rows, c) = (s.rows, s.channels);
    if !(0.0..=1.0).contains(&s.momentum) {
        return Err(Error::invalid_param(
            "momentum",
            format!("must be in [0, 1], got {}", s.momentum),
        ));
    }
    let params = apply_params(rows, c, s.eps, 1, p.act)?;
    check_buffer::<T>("x", x, rows * c)?;
    check_buffer::<T>("y", y, rows * c)?;
    for (name, b) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("saved_mean", saved_mean),
        ("saved_inv_std", saved_inv_std),
    ] {
        check_buffer::<T>(name, b, c)?;
    }
    let (block_rows, blocks) = p.knobs.blocks(rows, c);
    let stats = StatsParams {
        rows: to_u32("rows", rows)?,
        channels: to_u32("channels", c)?,
        block_rows: to_u32("block_rows", block_rows)?,
        blocks: to_u32("blocks", blocks)?,
    };
    let combine = CombineParams {
        rows: stats.rows,
        channels: stats.channels,
        block_rows: stats.block_rows,
        blocks: stats.blocks,
        eps: params.eps,
        momentum: s.momentum as f32,
        _pad: [0; 2],
    };
    let invocations = to_u32("blocks * channels", blocks * c)?;
    // f32 (mean, M2) pairs whatever T is: statistics need the precision.
    let partial = gpu.poisoned("batch_norm_partial", (blocks * c * 8) as u64)?;
    let wg = ("WG", f64::from(p.knobs.wg));
    let stats_pipe = gpu.pipeline("batch_norm_stats", T::WGSL, &[wg])?;
    let combine_pipe = gpu.pipeline("batch_norm_combine", T::WGSL, &[("WG", 64.0)])?;
    let sb = gpu.uniform("batch_norm_stats_params", &stats)?;
    let cb = gpu.uniform("batch_norm_combine_params", &combine)?;
    rec.dispatch(
        &stats_pipe,
        &[x, &partial, &sb],
        grid(gpu, invocations, p.knobs.wg),
    )?;
    rec.dispatch(
        &combine_pipe,
        &[
            &partial,
            x,
            saved_mean,
            saved_inv_std,
            running_mean,
            running_var,
            &cb,
        ],
        grid(gpu, stats.channels, 64),
    )?;
    record_apply::<T>(
        gpu,
        rec,
        [x, saved_mean, saved_inv_std, gamma, beta, y],
        &params,
        &p.knobs,
    )
}

/// Uploads the tensors, runs [`record_train`], reads every output back.
pub fn run_train<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    running_mean: &[T],
    running_var: &[T],
    p: &BatchNormTrain,
) -> Result<TrainOutputs<T>> {
    p.shape.validate_shape()?;
    let (rows, c) = (p.shape.rows, p.shape.channels);
    check_lens(
        "batch_norm_train",
        &[
            ("x", x.len(), rows * c),
            ("gamma", gamma.len(), c),
            ("beta", beta.len(), c),
            ("running_mean", running_mean.len(), c),
            ("running_var", running_var.len(), c),
        ],
    )?;
    let xb = upload(gpu, "x", x)?;
    let gb = upload(gpu, "gamma", gamma)?;
    let bb = upload(gpu, "beta", beta)?;
    let rmb = upload(gpu, "running_mean", running_mean)?;
    let rvb = upload(gpu, "running_var", running_var)?;
    let yb = output::<T>(gpu, "y", rows * c)?;
    let smb = output::<T>(gpu, "saved_mean", c)?;
    let sib = output::<T>(gpu, "saved_inv_std", c)?;
    let mut rec = gpu.recorder();
    record_train::<T>(gpu, &mut rec, &xb, &gb, &bb, &rmb, &rvb, &yb, &smb, &sib, p)?;
    rec.submit()?;
    Ok(TrainOutputs {
        y: read::<T>(gpu, &yb, rows * c)?,
        saved_mean: read::<T>(gpu, &smb, c)?,
        saved_inv_std: read::<T>(gpu, &sib, c)?,
        running_mean: read::<T>(gpu, &rmb, c)?,
        running_var: read::<T>(gpu, &rvb, c)?,
    })
}

fn check_lens(kernel: &str, lens: &[(&str, usize, usize)]) -> Result<()> {
    for &(name, got, want) in lens {
        if got != want {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![got], vec![want]],
                reason: format!("{kernel}: `{name}` has {got} elements, expected {want}"),
            });
        }
    }
    Ok(())
}

/// Shape checks shared by both modes (the reference's rules: rows >= 1 inference / 2
/// training, channels >= 1, eps finite and non-negative).
trait ValidateShape {
    fn validate_shape(&self) -> Result<()>;
}

impl ValidateShape for BatchNormParams {
    fn validate_shape(&self) -> Result<()> {
        shape_ok(self.rows, 1, self.channels, self.eps)
    }
}

impl ValidateShape for BatchNormTrainParams {
    fn validate_shape(&self) -> Result<()> {
        shape_ok(self.rows, 2, self.channels, self.eps)
    }
}

fn shape_ok(rows: usize, min_rows: usize, channels: usize, eps: f64) -> Result<()> {
    if rows < min_rows || channels == 0 {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![rows, channels]],
            reason: format!("batch_norm: needs rows >= {min_rows} and channels >= 1"),
        });
    }
    to_u32("rows * channels", rows.saturating_mul(channels))?;
    check_eps(eps).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_rows() {
        for (rows, c) in [(2, 1), (1000, 3), (25088, 64), (100_000, 1), (17, 4096)] {
            let (br, b) = Knobs::default().blocks(rows, c);
            assert!(
                br * b >= rows && br * (b - 1) < rows,
                "{rows}x{c}: {br} x {b}"
            );
            assert!(b <= 1024);
        }
        let k = Knobs {
            block_rows: 7,
            ..Knobs::default()
        };
        assert_eq!(k.blocks(100, 2), (7, 15));
    }
}
