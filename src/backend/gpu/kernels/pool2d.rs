//! 2-D max / average pooling (`shaders/pool2d.wgsl`) and global average pooling
//! (`shaders/global_avg_pool.wgsl`) over NHWC on the GPU, with the reference's semantics
//! (max: padding never wins, first maximum wins, NaN propagates; average: count_include_pad).

use super::GpuElement;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::avg_pool2d::AvgPool2dParams;
use spore_kernels_cpu::reference::global_avg_pool::GlobalAvgPoolParams;
use spore_kernels_cpu::reference::max_pool2d::MaxPool2dParams;

/// Mirror of `pool2d.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Batch, input height, input width, channels.
    pub nhwc: [u32; 4],
    /// Output height and width, window height and width.
    pub out_hw_k_hw: [u32; 4],
    /// Strides (h, w) and dilations (h, w).
    pub stride_dil: [u32; 4],
    /// Top padding, left padding, mode (0 max, 1 average), count_include_pad.
    pub pad_mode: [u32; 4],
}

/// Mirror of `global_avg_pool.wgsl`'s `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GlobalParams {
    /// Batch.
    pub n: u32,
    /// `h * w`.
    pub hw: u32,
    /// Channels.
    pub c: u32,
    /// `1 / (h * w)`.
    pub inv_count: f32,
}

/// Tuning knobs (`WG` override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { wg: 128 }
    }
}

/// Legal knob sets for the autotuner (both shaders).
pub const CANDIDATES: &[Knobs] = &[Knobs { wg: 128 }, Knobs { wg: 64 }, Knobs { wg: 256 }];

/// Which pooling, with the reference's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Max pooling.
    Max(MaxPool2dParams),
    /// Average pooling.
    Avg(AvgPool2dParams),
}

/// One pooling call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// The pooling and its window.
    pub pool: Pool,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Pool2d {
    /// Validates (as the reference does) and returns `(params, x_len, y_len)`.
    pub fn params(&self) -> Result<(Params, usize, usize)> {
        check_wg(self.knobs.wg)?;
        let u = to_u32;
        let (p, x_len, y_len) = match self.pool {
            Pool::Max(m) => {
                m.validate()?;
                let p = Params {
                    nhwc: [u("n", m.n)?, u("h", m.h)?, u("w", m.w)?, u("c", m.c)?],
                    out_hw_k_hw: [
                        u("out_h", m.out_h()?)?,
                        u("out_w", m.out_w()?)?,
                        u("kh", m.kh)?,
                        u("kw", m.kw)?,
                    ],
                    stride_dil: [
                        u("stride_h", m.stride_h)?,
                        u("stride_w", m.stride_w)?,
                        u("dilation_h", m.dilation_h)?,
                        u("dilation_w", m.dilation_w)?,
                    ],
                    pad_mode: [
                        u("padding.top", m.padding.top)?,
                        u("padding.left", m.padding.left)?,
                        0,
                        0,
                    ],
                };
                (p, m.x_len()?, m.y_len()?)
            }
            Pool::Avg(a) => {
                a.validate()?;
                let p = Params {
                    nhwc: [u("n", a.n)?, u("h", a.h)?, u("w", a.w)?, u("c", a.c)?],
                    out_hw_k_hw: [
                        u("out_h", a.out_h()?)?,
                        u("out_w", a.out_w()?)?,
                        u("kh", a.kh)?,
                        u("kw", a.kw)?,
                    ],
                    stride_dil: [u("stride_h", a.stride_h)?, u("stride_w", a.stride_w)?, 1, 1],
                    pad_mode: [
                        u("padding.top", a.padding.top)?,
                        u("padding.left", a.padding.left)?,
                        1,
                        u32::from(a.count_include_pad),
                    ],
                };
                (p, a.x_len()?, a.y_len()?)
            }
        };
        // Index arithmetic in the shader is u32, padded coordinates included.
        u("x elements", x_len)?;
        u("y elements", y_len)?;
        let (ph, pw) = (
            p.pad_mode[0] as usize + p.nhwc[1] as usize,
            p.pad_mode[1] as usize + p.nhwc[2] as usize,
        );
        u("padded height", ph.saturating_mul(p.stride_dil[0] as usize))?;
        u("padded width", pw.saturating_mul(p.stride_dil[1] as usize))?;
        Ok((p, x_len, y_len))
    }
}

/// Records the pooling of `x` into `y`.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Pool2d,
) -> Result<()> {
    let (params, x_len, y_len) = p.params()?;
    check_buffer::<T>("x", x, x_len)?;
    check_buffer::<T>("y", y, y_len)?;
    let pipeline = gpu.pipeline("pool2d", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("pool2d_params", &params)?;
    rec.dispatch(&pipeline, &[x, y, &pb], grid(gpu, y_len as u32, p.knobs.wg))
}

/// Uploads `x`, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], p: &Pool2d) -> Result<Vec<T>> {
    let (_, x_len, y_len) = p.params()?;
    if x.len() != x_len {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], vec![x_len]],
            reason: "pool2d: x length differs from n * h * w * c".into(),
        });
    }
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", y_len)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, y_len)
}

/// One global average pooling call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalAvgPool {
    /// The shape.
    pub shape: GlobalAvgPoolParams,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl GlobalAvgPool {
    fn params(&self) -> Result<(GlobalParams, usize, usize)> {
        check_wg(self.knobs.wg)?;
        let s = self.shape;
        let x_len = s.x_len()?;
        let y_len = s.y_len()?;
        to_u32("x elements", x_len)?;
        let hw = s.h * s.w;
        Ok((
            GlobalParams {
                n: to_u32("n", s.n)?,
                hw: to_u32("h * w", hw)?,
                c: to_u32("c", s.c)?,
                inv_count: (1.0 / hw as f64) as f32,
            },
            x_len,
            y_len,
        ))
    }
}

/// Records `y[n, c] = mean_{h, w} x[n, h, w, c]`.
pub fn record_global_avg<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &GlobalAvgPool,
) -> Result<()> {
    let (params, x_len, y_len) = p.params()?;
    check_buffer::<T>("x", x, x_len)?;
    check_buffer::<T>("y", y, y_len)?;
    let pipeline = gpu.pipeline("global_avg_pool", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("global_avg_pool_params", &params)?;
    rec.dispatch(&pipeline, &[x, y, &pb], grid(gpu, y_len as u32, p.knobs.wg))
}

/// Uploads `x`, runs [`record_global_avg`], reads `y` back.
pub fn run_global_avg<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    p: &GlobalAvgPool,
) -> Result<Vec<T>> {
    let (_, x_len, y_len) = p.params()?;
    if x.len() != x_len {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], vec![x_len]],
            reason: "global_avg_pool: x length differs from n * h * w * c".into(),
        });
    }
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", y_len)?;
    let mut rec = gpu.recorder();
    record_global_avg::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, y_len)
}
