//! Training-mode dropout on the GPU (`shaders/dropout.wgsl`): the counter-based mask of
//! `spore_kernels_cpu::rng::uniform(seed, i)`, drawn per invocation with emulated 64-bit
//! arithmetic, so the GPU keeps exactly the elements the reference and every CPU thread keep.

use super::GpuElement;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Element count.
    pub total: u32,
    /// Low word of `seed * 0x9e3779b97f4a7c15` (wrapping).
    pub seed_lo: u32,
    /// High word of the same.
    pub seed_hi: u32,
    /// Drop probability, compared with the 24-bit draw.
    pub rate: f32,
    /// `1 / (1 - rate)`, applied to kept elements.
    pub scale: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 3],
}

/// Tuning knobs (`WG` override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { wg: 256 }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[Knobs { wg: 256 }, Knobs { wg: 64 }];

/// One dropout call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Element count.
    pub len: usize,
    /// Drop probability in `[0, 1)`.
    pub rate: f32,
    /// Mask stream.
    pub seed: u64,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Dropout {
    /// The uniform for this call, after validating it.
    pub fn params(&self) -> Result<Params> {
        check_wg(self.knobs.wg)?;
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::invalid_param(
                "rate",
                format!("must be in [0, 1), got {}", self.rate),
            ));
        }
        if self.len == 0 {
            return Err(Error::invalid_param("len", "must be positive"));
        }
        let premixed = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Ok(Params {
            total: to_u32("len", self.len)?,
            // Splitting a u64 into its two 32-bit words.
            seed_lo: premixed as u32,
            seed_hi: (premixed >> 32) as u32,
            rate: self.rate,
            scale: (1.0 / (1.0 - f64::from(self.rate))) as f32,
            _pad: [0; 3],
        })
    }
}

/// Records `y = x * mask(seed)` on buffers already on the GPU.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Dropout,
) -> Result<()> {
    let params = p.params()?;
    check_buffer::<T>("x", x, p.len)?;
    check_buffer::<T>("y", y, p.len)?;
    let pipeline = gpu.pipeline("dropout", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("dropout_params", &params)?;
    rec.dispatch(&pipeline, &[x, y, &pb], grid(gpu, params.total, p.knobs.wg))
}

/// Uploads `x`, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], p: &Dropout) -> Result<Vec<T>> {
    p.params()?;
    if x.len() != p.len {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], vec![p.len]],
            reason: "dropout: x length differs from params.len".into(),
        });
    }
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", p.len)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, p.len)
}
