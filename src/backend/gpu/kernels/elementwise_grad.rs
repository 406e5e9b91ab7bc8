//! Backward kernels of the elementwise and row-wise ops on the GPU: activation derivatives
//! (`shaders/activation_grad.wgsl`), softmax / log-softmax gradients from the forward output
//! (`shaders/softmax_grad.wgsl`, a workgroup per row) and the gradient of every training loss
//! (`shaders/loss_grad.wgsl`). Semantics are the reference's (`spore_kernels_cpu::reference`).

use super::GpuElement;
use super::activation_wgsl;
use super::unary::{
    Knobs, check_buffer, check_wg, grid, grid_groups, output, read, to_u32, upload,
};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::activation::Activation;

/// Mirror of `activation_grad.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ActivationGradParams {
    /// Element count.
    pub total: u32,
    /// Activation code (see [`activation_wgsl::code`]).
    pub act: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: u32,
}

/// Mirror of `softmax_grad.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RowGradParams {
    /// Rows.
    pub rows: u32,
    /// Columns (the softmax axis).
    pub cols: u32,
    /// 0 softmax, 1 log-softmax.
    pub mode: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: u32,
}

/// Mirror of `loss_grad.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LossGradParams {
    /// Element count of the prediction.
    pub total: u32,
    /// Rows (cross-entropy kinds).
    pub rows: u32,
    /// Classes (cross-entropy kinds).
    pub classes: u32,
    /// Loss code (see [`LossGradKind`]).
    pub kind: u32,
    /// `1 / rows` (cross-entropy) or `1 / n` (elementwise losses).
    pub inv_count: f32,
    /// Smooth-L1 width.
    pub beta: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Legal `(WG, EPT)` knob sets of the elementwise gradient (activation derivative).
pub const CANDIDATES: &[Knobs] = &[
    Knobs { wg: 256, ept: 1 },
    Knobs { wg: 64, ept: 1 },
    Knobs { wg: 128, ept: 4 },
];

/// Tuning knobs of the row kernels (`WG` override: invocations per row, power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKnobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
}

impl Default for RowKnobs {
    fn default() -> Self {
        RowKnobs { wg: 128 }
    }
}

impl RowKnobs {
    /// Default knobs narrowed for short rows: a 7-wide row would leave most of 128
    /// invocations idle through every barrier.
    pub fn for_cols(cols: usize) -> Self {
        RowKnobs {
            wg: cols.next_power_of_two().clamp(32, 128) as u32,
        }
    }
}

/// Legal knob sets of the row kernels (softmax gradients, cross-entropy gradients).
pub const ROW_CANDIDATES: &[RowKnobs] = &[
    RowKnobs { wg: 128 },
    RowKnobs { wg: 64 },
    RowKnobs { wg: 256 },
];

/// `dx = dy * act'(x)` over `len` elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationGrad {
    /// Element count of `x`, `dy` and `dx`.
    pub len: usize,
    /// The forward activation.
    pub act: Activation,
    /// Tuning knobs.
    pub knobs: Knobs,
}

/// Records `dx = dy * act'(x)` on buffers already on the GPU.
pub fn record_activation_grad<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: &ActivationGrad,
) -> Result<()> {
    p.knobs.validate()?;
    let total = to_u32("len", p.len)?;
    if total == 0 {
        return Err(Error::invalid_param("len", "must be positive"));
    }
    for (name, b) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_buffer::<T>(name, b, p.len)?;
    }
    let (act, alpha) = activation_wgsl::encode(Some(p.act))?;
    let params = ActivationGradParams {
        total,
        act,
        alpha,
        _pad: 0,
    };
    let pipeline = gpu.pipeline(
        "activation_grad",
        T::WGSL,
        &[
            ("WG", f64::from(p.knobs.wg)),
            ("EPT", f64::from(p.knobs.ept)),
        ],
    )?;
    let pb = gpu.uniform("activation_grad_params", &params)?;
    let threads = total.div_ceil(p.knobs.ept);
    rec.dispatch(&pipeline, &[x, dy, dx, &pb], grid(gpu, threads, p.knobs.wg))
}

/// Uploads `x` and `dy`, runs [`record_activation_grad`], reads `dx` back.
pub fn run_activation_grad<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    dy: &[T],
    p: &ActivationGrad,
) -> Result<Vec<T>> {
    check_lens(
        "activation_grad",
        &[("x", x.len()), ("dy", dy.len())],
        p.len,
    )?;
    let xb = upload(gpu, "x", x)?;
    let dyb = upload(gpu, "dy", dy)?;
    let dxb = output::<T>(gpu, "dx", p.len)?;
    let mut rec = gpu.recorder();
    record_activation_grad::<T>(gpu, &mut rec, &xb, &dyb, &dxb, p)?;
    rec.submit()?;
    read::<T>(gpu, &dxb, p.len)
}

/// The gradient of softmax (`log == false`) or log-softmax over the last axis of
/// `[rows, cols]`, from the forward output `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxGrad {
    /// Rows.
    pub rows: usize,
    /// Columns (the softmax axis).
    pub cols: usize,
    /// Log-softmax instead of softmax.
    pub log: bool,
    /// Tuning knobs.
    pub knobs: RowKnobs,
}

impl SoftmaxGrad {
    /// A gradient with knobs sized for the row length.
    pub fn new(rows: usize, cols: usize, log: bool) -> Self {
        SoftmaxGrad {
            rows,
            cols,
            log,
            knobs: RowKnobs::for_cols(cols),
        }
    }
}

/// Records the softmax / log-softmax gradient `dx` from `y` and `dy` (all `[rows, cols]`).
pub fn record_softmax_grad<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    y: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: &SoftmaxGrad,
) -> Result<()> {
    check_wg(p.knobs.wg)?;
    if p.rows == 0 || p.cols == 0 {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![p.rows, p.cols]],
            reason: "softmax_grad: rows and cols must be positive".into(),
        });
    }
    let n = p.rows.saturating_mul(p.cols);
    to_u32("rows * cols", n)?;
    for (name, b) in [("y", y), ("dy", dy), ("dx", dx)] {
        check_buffer::<T>(name, b, n)?;
    }
    let params = RowGradParams {
        rows: to_u32("rows", p.rows)?,
        cols: to_u32("cols", p.cols)?,
        mode: u32::from(p.log),
        _pad: 0,
    };
    let pipeline = gpu.pipeline("softmax_grad", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("softmax_grad_params", &params)?;
    rec.dispatch(&pipeline, &[y, dy, dx, &pb], grid_groups(gpu, params.rows))
}

/// Uploads `y` and `dy`, runs [`record_softmax_grad`], reads `dx` back.
pub fn run_softmax_grad<T: GpuElement>(
    gpu: &GpuContext,
    y: &[T],
    dy: &[T],
    p: &SoftmaxGrad,
) -> Result<Vec<T>> {
    let n = p.rows.saturating_mul(p.cols);
    check_lens("softmax_grad", &[("y", y.len()), ("dy", dy.len())], n)?;
    let yb = upload(gpu, "y", y)?;
    let dyb = upload(gpu, "dy", dy)?;
    let dxb = output::<T>(gpu, "dx", n)?;
    let mut rec = gpu.recorder();
    record_softmax_grad::<T>(gpu, &mut rec, &yb, &dyb, &dxb, p)?;
    rec.submit()?;
    read::<T>(gpu, &dxb, n)
}

/// Which loss a [`LossGrad`] differentiates (the shader's `kind` codes 0-4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossGradKind {
    /// Softmax cross-entropy with dense targets, mean over rows.
    SoftmaxCrossEntropy,
    /// Softmax cross-entropy with i32 labels, mean over rows.
    SparseSoftmaxCrossEntropy,
    /// Mean squared error.
    Mse,
    /// Binary cross-entropy on logits.
    SigmoidBce,
    /// Smooth L1 with width `beta` (finite, >= 0).
    SmoothL1 {
        /// Width of the quadratic zone.
        beta: f64,
    },
}

/// The gradient of one loss with respect to its `[rows, classes]` (cross-entropy) or any-shape
/// (elementwise losses, `rows * classes` elements) prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossGrad {
    /// The loss.
    pub kind: LossGradKind,
    /// Rows (cross-entropy) or 1.
    pub rows: usize,
    /// Classes (cross-entropy) or the element count.
    pub classes: usize,
    /// Tuning knobs (`wg` is the row width of the cross-entropy kinds and the workgroup size
    /// of the elementwise ones).
    pub knobs: RowKnobs,
}

impl LossGrad {
    /// Whether the kind takes i32 labels instead of an f32 target.
    pub fn sparse(&self) -> bool {
        self.kind == LossGradKind::SparseSoftmaxCrossEntropy
    }

    fn params(&self) -> Result<LossGradParams> {
        check_wg(self.knobs.wg)?;
        if self.rows == 0 || self.classes == 0 {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![self.rows, self.classes]],
                reason: "loss_grad: rows and classes must be positive".into(),
            });
        }
        let total = to_u32("rows * classes", self.rows.saturating_mul(self.classes))?;
        let (kind, inv_count, beta) = match self.kind {
            LossGradKind::SoftmaxCrossEntropy => (0, 1.0 / self.rows as f64, 0.0),
            LossGradKind::SparseSoftmaxCrossEntropy => (1, 1.0 / self.rows as f64, 0.0),
            LossGradKind::Mse => (2, 1.0 / f64::from(total), 0.0),
            LossGradKind::SigmoidBce => (3, 1.0 / f64::from(total), 0.0),
            LossGradKind::SmoothL1 { beta } => {
                if !(beta.is_finite() && beta >= 0.0 && (beta as f32).is_finite()) {
                    return Err(Error::invalid_param(
                        "beta",
                        format!("must be finite and non-negative, got {beta}"),
                    ));
                }
                (4, 1.0 / f64::from(total), beta)
            }
        };
        Ok(LossGradParams {
            total,
            rows: to_u32("rows", self.rows)?,
            classes: to_u32("classes", self.classes)?,
            kind,
            inv_count: inv_count as f32,
            beta: beta as f32,
            _pad: [0; 2],
        })
    }
}

/// Records the loss gradient `dpred` from `pred`, `target` (f32 targets, or the i32 labels
/// of the sparse kind) and the 1-element upstream gradient `dloss`.
pub fn record_loss_grad<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    pred: &wgpu::Buffer,
    target: &wgpu::Buffer,
    dloss: &wgpu::Buffer,
    dpred: &wgpu::Buffer,
    p: &LossGrad,
) -> Result<()> {
    let params = p.params()?;
    let n = params.total as usize;
    check_buffer::<T>("pred", pred, n)?;
    check_buffer::<T>("dpred", dpred, n)?;
    check_buffer::<T>("dloss", dloss, 1)?;
    if p.sparse() {
        // Labels are i32 whatever T is.
        let need = (p.rows * 4) as u64;
        if target.size() < need {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![p.rows], vec![target.size() as usize]],
                reason: format!("loss_grad: labels buffer holds {} bytes", target.size()),
            });
        }
    } else {
        check_buffer::<T>("target", target, n)?;
    }
    let pipeline = gpu.pipeline("loss_grad", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("loss_grad_params", &params)?;
    let groups = if params.kind < 2 {
        grid_groups(gpu, params.rows)
    } else {
        grid(gpu, params.total, p.knobs.wg)
    };
    // The unused one of (target, labels) is bound to the same buffer: both are read-only.
    rec.dispatch(
        &pipeline,
        &[pred, target, target, dloss, dpred, &pb],
        groups,
    )
}

/// Uploads the inputs, runs [`record_loss_grad`], reads `dpred` back. `target` holds the
/// f32 targets; `labels` the i32 labels of the sparse kind (the other is ignored).
pub fn run_loss_grad<T: GpuElement>(
    gpu: &GpuContext,
    pred: &[T],
    target: &[T],
    labels: &[i32],
    dloss: T,
    p: &LossGrad,
) -> Result<Vec<T>> {
    let n = p.rows.saturating_mul(p.classes);
    check_lens("loss_grad", &[("pred", pred.len())], n)?;
    let tb = if p.sparse() {
        check_lens("loss_grad", &[("labels", labels.len())], p.rows)?;
        gpu.upload("labels", bytemuck::cast_slice(labels))?
    } else {
        check_lens("loss_grad", &[("target", target.len())], n)?;
        upload(gpu, "target", target)?
    };
    let pb = upload(gpu, "pred", pred)?;
    let lb = upload(gpu, "dloss", &[dloss])?;
    let db = output::<T>(gpu, "dpred", n)?;
    let mut rec = gpu.recorder();
    record_loss_grad::<T>(gpu, &mut rec, &pb, &tb, &lb, &db, p)?;
    rec.submit()?;
    read::<T>(gpu, &db, n)
}

/// Refuses slices whose lengths differ from `want`.
pub(crate) fn check_lens(kernel: &str, lens: &[(&str, usize)], want: usize) -> Result<()> {
    for &(name, got) in lens {
        if got != want {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![got], vec![want]],
                reason: format!("{kernel}: `{name}` has {got} elements, expected {want}"),
            });
        }
    }
    Ok(())
}
