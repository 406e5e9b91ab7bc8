//! Forward losses on the GPU, each reduced to one scalar in two deterministic passes (a fixed
//! summation order, no float atomics, so the loss is bit-identical run to run):
//! `shaders/loss_rows.wgsl` (softmax cross-entropy, dense targets or integer labels: one
//! workgroup per row) or `shaders/loss_elem.wgsl` (mse, sigmoid BCE, smooth L1: per-workgroup
//! partial sums), then `shaders/loss_reduce.wgsl` (one workgroup sums the partials and
//! scales by `1 / rows` or `1 / n`, the mean every loss here takes).

use super::GpuElement;
use super::unary::{check_buffer, check_wg, grid_groups, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of `loss_rows.wgsl`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RowsParams {
    /// Rows (samples).
    pub rows: u32,
    /// Classes per row.
    pub cols: u32,
    /// 1 when the targets are integer labels.
    pub sparse: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: u32,
}

/// Mirror of `loss_elem.wgsl`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ElemParams {
    /// Element count.
    pub total: u32,
    /// Elements summed by one workgroup.
    pub per_group: u32,
    /// 0 mse, 1 sigmoid BCE, 2 smooth L1.
    pub kind: u32,
    /// Smooth-L1 quadratic-zone width.
    pub beta: f32,
}

/// Mirror of `loss_reduce.wgsl`'s `Params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ReduceParams {
    /// Partial sums.
    pub n: u32,
    /// Factor applied to the total (the mean's `1 / count`).
    pub scale: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 2],
}

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossKind {
    /// `-(1/rows) sum t * log_softmax(x)` over `[rows, cols]` logits and dense targets.
    SoftmaxCrossEntropy,
    /// `-(1/rows) sum_r log_softmax(x)[r, labels[r]]`; labels are an i32 buffer of `rows`
    /// (a label outside `[0, cols)` makes the loss NaN: the GPU cannot raise an error, and
    /// the host-side ops check labels where they can).
    SparseSoftmaxCrossEntropy,
    /// `mean((a - b)^2)`.
    Mse,
    /// `mean(max(a, 0) - a b + log(1 + exp(-|a|)))` on logits `a`, targets `b`.
    SigmoidBce,
    /// PyTorch's smooth L1 with quadratic-zone width `beta` (finite, >= 0), averaged.
    SmoothL1 {
        /// Width of the quadratic zone.
        beta: f64,
    },
}

/// Tuning knobs: `wg` invocations per workgroup of the first pass; `per_thread` elements per
/// invocation of the elementwise pass (a workgroup sums `wg * per_thread` elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
    /// Elements per invocation in the elementwise first pass (1..=64).
    pub per_thread: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            wg: 256,
            per_thread: 8,
        }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[
    Knobs {
        wg: 256,
        per_thread: 8,
    },
    Knobs {
        wg: 64,
        per_thread: 4,
    },
    Knobs {
        wg: 128,
        per_thread: 16,
    },
];

/// One loss evaluation: `rows * cols` elements (`rows` samples of `cols` classes for the
/// cross-entropies; any split for the elementwise losses, which only use the product).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    /// The loss.
    pub kind: LossKind,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Loss {
    /// A loss with default knobs.
    pub fn new(kind: LossKind, rows: usize, cols: usize) -> Self {
        Loss {
            kind,
            rows,
            cols,
            knobs: Knobs::default(),
        }
    }

    /// Element count of the first input, after validating shape, knobs and `beta`.
    pub fn validate(&self) -> Result<usize> {
        check_wg(self.knobs.wg)?;
        if !(1..=64).contains(&self.knobs.per_thread) {
            return Err(Error::invalid_param(
                "per_thread",
                format!("must be in 1..=64, got {}", self.knobs.per_thread),
            ));
        }
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![self.rows, self.cols]],
                reason: "loss: rows and cols must be positive".into(),
            });
        }
        if let LossKind::SmoothL1 { beta } = self.kind
            && !(beta.is_finite() && beta >= 0.0)
        {
            return Err(Error::invalid_param(
                "beta",
                format!("must be finite and non-negative, got {beta}"),
            ));
        }
        let n = self
            .rows
            .checked_mul(self.cols)
            .ok_or_else(|| Error::invalid_param("rows * cols", "overflows"))?;
        to_u32("rows * cols", n)?;
        Ok(n)
    }

    fn is_rows(&self) -> bool {
        matches!(
            self.kind,
            LossKind::SoftmaxCrossEntropy | LossKind::SparseSoftmaxCrossEntropy
        )
    }
}

/// Records the loss of `a` against `b` into `y` (one element) on buffers already on the GPU.
/// `b` holds dense targets (`rows * cols` of `T`) or, for the sparse cross-entropy, `rows`
/// i32 labels.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Loss,
) -> Result<()> {
    let n = p.validate()?;
    check_buffer::<T>("a", a, n)?;
    check_buffer::<T>("y", y, 1)?;
    let wg = ("WG", f64::from(p.knobs.wg));
    let (partials, count) = if p.is_rows() {
        let sparse = p.kind == LossKind::SparseSoftmaxCrossEntropy;
        if sparse {
            // i32 labels are as wide as f32 elements.
            check_buffer::<f32>("labels", b, p.rows)?;
        } else {
            check_buffer::<T>("targets", b, n)?;
        }
        let params = RowsParams {
            rows: to_u32("rows", p.rows)?,
            cols: to_u32("cols", p.cols)?,
            sparse: u32::from(sparse),
            _pad: 0,
        };
        let partial = rec.scratch("loss_partial", (p.rows * 4) as u64)?;
        let pipeline = gpu.pipeline("loss_rows", T::WGSL, &[wg])?;
        let pb = gpu.uniform("loss_rows_params", &params)?;
        // The unused binding of each mode gets any valid buffer: the shader never reads it.
        let (targets, labels) = if sparse { (a, b) } else { (b, a) };
        rec.dispatch(
            &pipeline,
            &[a, targets, labels, &partial, &pb],
            grid_groups(gpu, params.rows),
        )?;
        (partial, p.rows)
    } else {
        check_buffer::<T>("b", b, n)?;
        let (kind, beta) = match p.kind {
            LossKind::Mse => (0, 0.0),
            LossKind::SigmoidBce => (1, 0.0),
            LossKind::SmoothL1 { beta } => (2, beta as f32),
            // Row losses took the other branch.
            LossKind::SoftmaxCrossEntropy | LossKind::SparseSoftmaxCrossEntropy => (0, 0.0),
        };
        let per_group = p.knobs.wg * p.knobs.per_thread;
        let groups = n.div_ceil(per_group as usize);
        let params = ElemParams {
            total: to_u32("n", n)?,
            per_group,
            kind,
            beta,
        };
        let partial = rec.scratch("loss_partial", (groups * 4) as u64)?;
        let pipeline = gpu.pipeline("loss_elem", T::WGSL, &[wg])?;
        let pb = gpu.uniform("loss_elem_params", &params)?;
        rec.dispatch(
            &pipeline,
            &[a, b, &partial, &pb],
            grid_groups(gpu, to_u32("groups", groups)?),
        )?;
        (partial, groups)
    };
    let denom = if p.is_rows() { p.rows } else { n };
    let params = ReduceParams {
        n: to_u32("partials", count)?,
        scale: (1.0 / denom as f64) as f32,
        _pad: [0; 2],
    };
    let pipeline = gpu.pipeline("loss_reduce", T::WGSL, &[("WG", 256.0)])?;
    let pb = gpu.uniform("loss_reduce_params", &params)?;
    rec.dispatch(&pipeline, &[&partials, y, &pb], [1, 1, 1])
}

/// Uploads `a` and dense targets `b`, runs [`record`], reads the loss back.
pub fn run<T: GpuElement>(gpu: &GpuContext, a: &[T], b: &[T], p: &Loss) -> Result<T> {
    let n = p.validate()?;
    if p.kind == LossKind::SparseSoftmaxCrossEntropy {
        return Err(Error::invalid_param(
            "kind",
            "sparse cross-entropy takes i32 labels: use run_sparse",
        ));
    }
    if a.len() != n || b.len() != n {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![a.len()], vec![b.len()], vec![p.rows, p.cols]],
            reason: "loss: input lengths differ from rows * cols".into(),
        });
    }
    let ab = upload(gpu, "a", a)?;
    let bb = upload(gpu, "b", b)?;
    finish::<T>(gpu, &ab, &bb, p)
}

/// Uploads logits and i32 labels, runs the sparse cross-entropy, reads the loss back.
pub fn run_sparse<T: GpuElement>(
    gpu: &GpuContext,
    logits: &[T],
    labels: &[i32],
    p: &Loss,
) -> Result<T> {
    let n = p.validate()?;
    if p.kind != LossKind::SparseSoftmaxCrossEntropy {
        return Err(Error::invalid_param("kind", "run_sparse is for labels"));
    }
    if logits.len() != n || labels.len() != p.rows {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![logits.len()], vec![labels.len()], vec![p.rows, p.cols]],
            reason: "sparse loss: logits must be rows * cols, labels rows".into(),
        });
    }
    let ab = upload(gpu, "logits", logits)?;
    let bb = gpu.upload("labels", bytemuck::cast_slice(labels))?;
    finish::<T>(gpu, &ab, &bb, p)
}

fn finish<T: GpuElement>(
    gpu: &GpuContext,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    p: &Loss,
) -> Result<T> {
    let yb = output::<T>(gpu, "loss", 1)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, a, b, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, 1)?
        .first()
        .copied()
        .ok_or_else(|| Error::gpu(crate::error::GpuErrorKind::Internal, "empty loss read-back"))
}
