//! Softmax and log-softmax over the last axis on the GPU (`shaders/softmax.wgsl`): one
//! workgroup per row, max-subtracted, workgroup-memory tree reductions.

use super::GpuElement;
use super::unary::{check_buffer, check_wg, grid_groups, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows.
    pub rows: u32,
    /// Columns (the softmax axis).
    pub cols: u32,
    /// 1 for log-softmax.
    pub log: u32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: u32,
}

/// Tuning knobs (`WG` override: invocations per row, a power of two <= 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (= per row).
    pub wg: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { wg: 128 }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[Knobs { wg: 128 }, Knobs { wg: 64 }, Knobs { wg: 256 }];

/// One softmax over `[rows, cols]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Softmax {
    /// Rows (independent softmaxes).
    pub rows: usize,
    /// Columns (the reduced axis).
    pub cols: usize,
    /// Log-softmax instead of softmax.
    pub log: bool,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Softmax {
    /// A softmax with default knobs, the workgroup narrowed for short rows (a 7-wide row
    /// would otherwise leave most of 128 invocations idle through every barrier).
    pub fn new(rows: usize, cols: usize, log: bool) -> Self {
        let wg = cols.next_power_of_two().clamp(32, 128) as u32;
        Softmax {
            rows,
            cols,
            log,
            knobs: Knobs { wg },
        }
    }

    fn params(&self) -> Result<Params> {
        check_wg(self.knobs.wg)?;
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![self.rows, self.cols]],
                reason: "softmax: rows and cols must be positive".into(),
            });
        }
        to_u32("rows * cols", self.rows.saturating_mul(self.cols))?;
        Ok(Params {
            rows: to_u32("rows", self.rows)?,
            cols: to_u32("cols", self.cols)?,
            log: u32::from(self.log),
            _pad: 0,
        })
    }
}

/// Records the softmax of `x` into `y` (both `[rows, cols]`).
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Softmax,
) -> Result<()> {
    let params = p.params()?;
    check_buffer::<T>("x", x, p.rows * p.cols)?;
    check_buffer::<T>("y", y, p.rows * p.cols)?;
    let pipeline = gpu.pipeline("softmax", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("softmax_params", &params)?;
    rec.dispatch(&pipeline, &[x, y, &pb], grid_groups(gpu, params.rows))
}

/// Uploads `x`, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], p: &Softmax) -> Result<Vec<T>> {
    p.params()?;
    let n = p.rows * p.cols;
    if x.len() != n {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], vec![p.rows, p.cols]],
            reason: "softmax: x length differs from rows * cols".into(),
        });
    }
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", n)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, n)
}
