//! Index-mapping kernels of the backward pass on the GPU: the binary-op gradient
//! (`shaders/binary_grad.wgsl` writes `dy * partial` output-shaped, then the deterministic
//! `reduce` kernel sums each broadcast operand's gradient back to its shape), `broadcast_to`
//! (`shaders/broadcast_to.wgsl`, the gradient of sum / mean reductions and of global average
//! pooling) and `slice` (`shaders/slice.wgsl`, a strided copy of 32-bit words).

use super::GpuElement;
use super::binary::{self, Binary};
use super::elementwise_grad::check_lens;
use super::reduce::{self, Reduce};
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::binary::BinaryOp;

pub use super::binary::Knobs;

/// Legal knob sets of the three kernels here (`WG` override).
pub const CANDIDATES: &[Knobs] = binary::CANDIDATES;

/// Mirror of `broadcast_to.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BroadcastParams {
    /// Output element count.
    pub total: u32,
    /// Merged rank (<= [`binary::MAX_RANK`]).
    pub rank: u32,
    /// Multiplier of every element.
    pub scale: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: u32,
    /// Merged output sizes.
    pub dims: [u32; binary::MAX_RANK],
    /// `x`'s element strides per merged axis (0 where broadcast).
    pub stride_x: [u32; binary::MAX_RANK],
}

/// Mirror of `slice.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SliceParams {
    /// Output element count.
    pub total: u32,
    /// Length of the sliced range.
    pub len: u32,
    /// Product of the axes after the sliced one.
    pub inner: u32,
    /// Size of the sliced axis in the input.
    pub dim: u32,
    /// First index of the range.
    pub start: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 3],
}

/// The gradient of a broadcast binary op: `da`, `db` shaped like `a`, `b`.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryGrad {
    /// The forward operation.
    pub op: BinaryOp,
    /// Shape of `a` (`[]` is a scalar).
    pub a_shape: Vec<usize>,
    /// Shape of `b`.
    pub b_shape: Vec<usize>,
    /// Knobs of the elementwise pass.
    pub knobs: Knobs,
    /// Knobs of the reductions to the operand shapes.
    pub reduce: reduce::Knobs,
}

impl BinaryGrad {
    /// A gradient with default knobs.
    pub fn new(op: BinaryOp, a_shape: &[usize], b_shape: &[usize]) -> Self {
        BinaryGrad {
            op,
            a_shape: a_shape.to_vec(),
            b_shape: b_shape.to_vec(),
            knobs: Knobs::default(),
            reduce: reduce::Knobs::default(),
        }
    }

    /// Validates the shapes and knobs (what [`record_binary_grad`] refuses, without a GPU).
    pub fn check(&self) -> Result<()> {
        let fwd = self.forward();
        fwd.params()?;
        let out = fwd.out_shape()?;
        for shape in [&self.a_shape, &self.b_shape] {
            Reduce {
                shape: out.clone(),
                axes: broadcast_axes(shape, &out),
                mean: false,
                knobs: self.reduce,
            }
            .passes()?;
        }
        Ok(())
    }

    fn forward(&self) -> Binary {
        Binary {
            op: self.op,
            a_shape: self.a_shape.clone(),
            b_shape: self.b_shape.clone(),
            knobs: self.knobs,
        }
    }
}

/// The axes of `out` along which `shape` (right-aligned) is broadcast: the reduction that
/// takes an output-shaped gradient back to `shape` (keepdims layout = `shape`'s layout).
fn broadcast_axes(shape: &[usize], out: &[usize]) -> Vec<i64> {
    let lead = out.len() - shape.len();
    (0..out.len())
        .filter(|&i| out[i] != 1 && (i < lead || shape[i - lead] == 1))
        .map(|i| i as i64)
        .collect()
}

/// Records `da`, `db` on buffers already on the GPU: one elementwise pass writing
/// `dy * partial` (straight into `da` / `db` for an operand that is not broadcast, else into a
/// scratch), then one deterministic reduction per broadcast operand.
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record_binary_grad<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    da: &wgpu::Buffer,
    db: &wgpu::Buffer,
    p: &BinaryGrad,
) -> Result<()> {
    let fwd = p.forward();
    let params = fwd.params()?;
    let out = fwd.out_shape()?;
    let total = params.total as usize;
    let a_len: usize = p.a_shape.iter().product();
    let b_len: usize = p.b_shape.iter().product();
    check_buffer::<T>("a", a, a_len)?;
    check_buffer::<T>("b", b, b_len)?;
    check_buffer::<T>("dy", dy, total)?;
    check_buffer::<T>("da", da, a_len)?;
    check_buffer::<T>("db", db, b_len)?;
    let scratch_a = (a_len != total)
        .then(|| output::<T>(gpu, "binary_grad_ga", total))
        .transpose()?;
    let scratch_b = (b_len != total)
        .then(|| output::<T>(gpu, "binary_grad_gb", total))
        .transpose()?;
    let ga = scratch_a.as_ref().unwrap_or(da);
    let gb = scratch_b.as_ref().unwrap_or(db);
    let pipeline = gpu.pipeline("binary_grad", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("binary_grad_params", &params)?;
    rec.dispatch(
        &pipeline,
        &[a, b, dy, ga, gb, &pb],
        grid(gpu, params.total, p.knobs.wg),
    )?;
    for (scratch, shape, dst) in [(&scratch_a, &p.a_shape, da), (&scratch_b, &p.b_shape, db)] {
        if let Some(src) = scratch {
            let red = Reduce {
                shape: out.clone(),
                axes: broadcast_axes(shape, &out),
                mean: false,
                knobs: p.reduce,
            };
            reduce::record::<T>(gpu, rec, src, dst, &red)?;
        }
    }
    Ok(())
}

/// Uploads `a`, `b`, `dy`, runs [`record_binary_grad`], reads `(da, db)` back.
pub fn run_binary_grad<T: GpuElement>(
    gpu: &GpuContext,
    a: &[T],
    b: &[T],
    dy: &[T],
    p: &BinaryGrad,
) -> Result<(Vec<T>, Vec<T>)> {
    let out = p.forward().out_shape()?;
    let a_len: usize = p.a_shape.iter().product();
    let b_len: usize = p.b_shape.iter().product();
    check_lens("binary_grad", &[("a", a.len())], a_len)?;
    check_lens("binary_grad", &[("b", b.len())], b_len)?;
    check_lens("binary_grad", &[("dy", dy.len())], out.iter().product())?;
    let ab = upload(gpu, "a", a)?;
    let bb = upload(gpu, "b", b)?;
    let dyb = upload(gpu, "dy", dy)?;
    let dab = output::<T>(gpu, "da", a_len)?;
    let dbb = output::<T>(gpu, "db", b_len)?;
    let mut rec = gpu.recorder();
    record_binary_grad::<T>(gpu, &mut rec, &ab, &bb, &dyb, &dab, &dbb, p)?;
    rec.submit()?;
    Ok((read::<T>(gpu, &dab, a_len)?, read::<T>(gpu, &dbb, b_len)?))
}

/// `y = scale * x` broadcast (NumPy rules) to `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastTo {
    /// Shape of `x` (right-aligned against `shape`).
    pub x_shape: Vec<usize>,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Multiplier (finite in f32).
    pub scale: f64,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl BroadcastTo {
    /// Validates the shapes and builds the shader parameters.
    pub fn params(&self) -> Result<BroadcastParams> {
        check_wg(self.knobs.wg)?;
        let scale = self.scale as f32;
        if !scale.is_finite() {
            return Err(Error::invalid_param(
                "scale",
                format!("must be finite in f32, got {}", self.scale),
            ));
        }
        // The binary kernel's merge: `x` against a contiguous tensor of the target shape.
        let merged = Binary {
            op: BinaryOp::Add,
            a_shape: self.x_shape.clone(),
            b_shape: self.shape.clone(),
            knobs: self.knobs,
        };
        if self.x_shape.len() > self.shape.len() || merged.out_shape()? != self.shape {
            return Err(Error::ShapeMismatch {
                shapes: vec![self.x_shape.clone(), self.shape.clone()],
                reason: "broadcast_to: x does not broadcast to the target shape".into(),
            });
        }
        let m = merged.params()?;
        Ok(BroadcastParams {
            total: m.total,
            rank: m.rank,
            scale,
            _pad: 0,
            dims: m.dims,
            stride_x: m.stride_a,
        })
    }
}

/// Records `y = scale * broadcast(x)` on buffers already on the GPU.
pub fn record_broadcast_to<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &BroadcastTo,
) -> Result<()> {
    let params = p.params()?;
    check_buffer::<T>("x", x, p.x_shape.iter().product())?;
    check_buffer::<T>("y", y, params.total as usize)?;
    let pipeline = gpu.pipeline("broadcast_to", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("broadcast_to_params", &params)?;
    rec.dispatch(&pipeline, &[x, y, &pb], grid(gpu, params.total, p.knobs.wg))
}

/// Uploads `x`, runs [`record_broadcast_to`], reads `y` back.
pub fn run_broadcast_to<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    p: &BroadcastTo,
) -> Result<Vec<T>> {
    let params = p.params()?;
    check_lens(
        "broadcast_to",
        &[("x", x.len())],
        p.x_shape.iter().product(),
    )?;
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", params.total as usize)?;
    let mut rec = gpu.recorder();
    record_broadcast_to::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, params.total as usize)
}

/// `y = x[.., start..end, ..]` along `axis`, for 4-byte elements (f32, i32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Input shape (rank >= 1).
    pub shape: Vec<usize>,
    /// The sliced axis (`0..rank`).
    pub axis: usize,
    /// First index of the range.
    pub start: usize,
    /// One past the last index (`start < end <= shape[axis]`).
    pub end: usize,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Slice {
    /// Validates and builds the shader parameters.
    pub fn params(&self) -> Result<SliceParams> {
        check_wg(self.knobs.wg)?;
        let Some(&dim) = self.shape.get(self.axis) else {
            return Err(Error::invalid_param(
                "axis",
                format!("{} is out of range for shape {:?}", self.axis, self.shape),
            ));
        };
        if !(self.start < self.end && self.end <= dim) {
            return Err(Error::invalid_param(
                "range",
                format!("{}..{} is empty or outside 0..{dim}", self.start, self.end),
            ));
        }
        let outer: usize = self.shape[..self.axis].iter().product();
        let inner: usize = self.shape[self.axis + 1..].iter().product();
        let len = self.end - self.start;
        to_u32(
            "input elements",
            outer.saturating_mul(dim).saturating_mul(inner),
        )?;
        Ok(SliceParams {
            total: to_u32("output elements", outer * len * inner)?,
            len: to_u32("len", len)?,
            inner: to_u32("inner", inner)?,
            dim: to_u32("dim", dim)?,
            start: to_u32("start", self.start)?,
            _pad: [0; 3],
        })
    }

    /// The output shape.
    pub fn out_shape(&self) -> Vec<usize> {
        let mut s = self.shape.clone();
        if let Some(d) = s.get_mut(self.axis) {
            *d = self.end.saturating_sub(self.start);
        }
        s
    }
}

/// Records the slice of `x` (4-byte elements) into `y` on buffers already on the GPU.
pub fn record_slice(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Slice,
) -> Result<()> {
    let params = p.params()?;
    check_buffer::<f32>("x", x, p.shape.iter().product())?;
    check_buffer::<f32>("y", y, params.total as usize)?;
    // The shader copies raw words: the f32 build serves every 4-byte type.
    let pipeline = gpu.pipeline("slice", "f32", &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("slice_params", &params)?;
    rec.dispatch(&pipeline, &[x, y, &pb], grid(gpu, params.total, p.knobs.wg))
}

/// Uploads `x`, runs [`record_slice`], reads `y` back.
pub fn run_slice<T: bytemuck::Pod>(gpu: &GpuContext, x: &[T], p: &Slice) -> Result<Vec<T>> {
    if std::mem::size_of::<T>() != 4 {
        return Err(Error::NotSupported {
            what: "slice on the GPU of elements that are not 4 bytes".into(),
        });
    }
    let params = p.params()?;
    check_lens("slice", &[("x", x.len())], p.shape.iter().product())?;
    let xb = gpu.upload("x", bytemuck::cast_slice(x))?;
    let n = params.total as usize;
    let yb = gpu.poisoned("y", (n * 4) as u64)?;
    let mut rec = gpu.recorder();
    record_slice(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    let bytes = gpu.read_back(&yb, (n * 4) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}
