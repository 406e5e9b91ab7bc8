//! Depthwise conv2d gradients on the GPU (`shaders/depthwise_conv2d_grad_*.wgsl`): NHWC
//! activations, `[kh, kw, c_in * multiplier]` weights, any kernel size / stride / dilation /
//! asymmetric padding / channel multiplier.
//!
//! * Input gradient: direct, one dx element (scalar) or channel quad (`_vec4`: multiplier 1,
//!   channels % 4 == 0) per invocation, visiting only the taps a stride lets reach the pixel.
//! * Weight gradient: one invocation per (split, tap, channel [quad]) sums its `chunk` dy rows
//!   into an f32 partial; `matmul_splitk_reduce` adds the partials in split order, so the
//!   result is bit-identical run to run.
//! * `_naive` shaders (one output per invocation, every tap / pixel checked) are the baselines.

use super::GpuElement;
use super::conv2d_grad::record_reduce;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::depthwise_conv2d::DepthwiseConv2dParams;

/// Mirror of the `DwGradParams` uniform of the six depthwise gradient shaders.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DwGradParams {
    /// n, h, w, c_in.
    pub nhwc: [u32; 4],
    /// multiplier, c_out, out_h, out_w.
    pub mult_cout_out: [u32; 4],
    /// kh, kw, stride_h, stride_w.
    pub k_stride: [u32; 4],
    /// dilation_h, dilation_w, padding.top, padding.left.
    pub dil_pad: [u32; 4],
    /// Weight gradient: partial sums, dy rows `(n, oh)` per partial; then 2 pad words.
    pub splits_chunk: [u32; 4],
}

/// Tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
    /// Use the vec4 shaders where the shape allows it (multiplier 1, channels % 4 == 0).
    pub vec4: bool,
    /// Weight gradient: dy rows `(n, oh)` per partial sum (>= 1).
    pub chunk: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            wg: 64,
            vec4: true,
            chunk: 4,
        }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[
    Knobs {
        wg: 64,
        vec4: true,
        chunk: 4,
    },
    Knobs {
        wg: 128,
        vec4: true,
        chunk: 8,
    },
    Knobs {
        wg: 256,
        vec4: true,
        chunk: 2,
    },
    Knobs {
        wg: 64,
        vec4: false,
        chunk: 16,
    },
];

/// Which shader runs a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `_vec4` (multiplier 1, channels % 4 == 0).
    Vec4,
    /// Scalar channels, the general case.
    Scalar,
    /// `_naive`: one output per invocation, the baseline.
    Naive,
}

/// One depthwise convolution's gradient: shape and knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthwiseGrad {
    /// Shape and window (the reference's parameters).
    pub shape: DepthwiseConv2dParams,
    /// Tuning knobs.
    pub knobs: Knobs,
}

/// Element counts of a validated call.
struct Lens {
    x: usize,
    w: usize,
    y: usize,
}

impl DepthwiseGrad {
    /// Checks shape and knobs for the tuned path (what [`record_input`] and [`record_weight`]
    /// would refuse).
    pub fn validate(&self) -> Result<()> {
        self.params(self.variant()).map(|_| ())
    }

    /// The shader the tuned path picks for this shape and these knobs.
    pub fn variant(&self) -> Variant {
        if self.knobs.vec4 && self.shape.multiplier == 1 && self.shape.c_in.is_multiple_of(4) {
            Variant::Vec4
        } else {
            Variant::Scalar
        }
    }

    fn params(&self, variant: Variant) -> Result<(DwGradParams, Lens)> {
        check_wg(self.knobs.wg)?;
        if self.knobs.chunk == 0 {
            return Err(Error::invalid_param(
                "chunk",
                "dy rows per partial must be >= 1",
            ));
        }
        let s = self.shape;
        s.validate()?;
        if variant == Variant::Vec4 && !(s.multiplier == 1 && s.c_in.is_multiple_of(4)) {
            return Err(Error::NotSupported {
                what: format!(
                    "depthwise gradient vec4 shaders need multiplier 1 and channels % 4 == 0, \
                     got {} x {}",
                    s.c_in, s.multiplier
                ),
            });
        }
        let lens = Lens {
            x: s.x_len()?,
            w: s.w_len()?,
            y: s.y_len()?,
        };
        let (out_h, out_w) = (s.out_h()?, s.out_w()?);
        let u = to_u32;
        u("x elements", lens.x)?;
        u("y elements", lens.y)?;
        // Padded coordinates (ih + pad, oh * stride + k * dilation) are formed in u32.
        let span_h = (out_h * s.stride_h).saturating_add(s.kh * s.dilation_h);
        let span_w = (out_w * s.stride_w).saturating_add(s.kw * s.dilation_w);
        u("window", span_h.saturating_add(s.h + s.padding.top))?;
        u("window", span_w.saturating_add(s.w + s.padding.left))?;
        let rows = s.n * out_h;
        let chunk = self.knobs.chunk as usize;
        let splits = rows.div_ceil(chunk);
        u("splits * weights", splits.saturating_mul(lens.w))?;
        let p = DwGradParams {
            nhwc: [u("n", s.n)?, u("h", s.h)?, u("w", s.w)?, u("c_in", s.c_in)?],
            mult_cout_out: [
                u("multiplier", s.multiplier)?,
                u("c_out", s.c_out()?)?,
                u("out_h", out_h)?,
                u("out_w", out_w)?,
            ],
            k_stride: [
                u("kh", s.kh)?,
                u("kw", s.kw)?,
                u("stride_h", s.stride_h)?,
                u("stride_w", s.stride_w)?,
            ],
            dil_pad: [
                u("dilation_h", s.dilation_h)?,
                u("dilation_w", s.dilation_w)?,
                u("padding.top", s.padding.top)?,
                u("padding.left", s.padding.left)?,
            ],
            splits_chunk: [u("splits", splits)?, self.knobs.chunk, 0, 0],
        };
        Ok((p, lens))
    }
}

/// Records `dx` (NHWC) from `dy` (NHWC) and `w` on the tuned path ([`DepthwiseGrad::variant`]).
pub fn record_input<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: &DepthwiseGrad,
) -> Result<()> {
    record_input_variant::<T>(gpu, rec, dy, w, dx, p, p.variant())
}

/// Records `dx` on an explicit shader (the vec4 one only where the shape allows it).
pub fn record_input_variant<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: &DepthwiseGrad,
    variant: Variant,
) -> Result<()> {
    let (params, lens) = p.params(variant)?;
    check_buffer::<T>("dy", dy, lens.y)?;
    check_buffer::<T>("w", w, lens.w)?;
    check_buffer::<T>("dx", dx, lens.x)?;
    let (name, threads) = match variant {
        Variant::Vec4 => ("depthwise_conv2d_grad_input_vec4", lens.x / 4),
        Variant::Scalar => ("depthwise_conv2d_grad_input", lens.x),
        Variant::Naive => ("depthwise_conv2d_grad_input_naive", lens.x),
    };
    let pipe = gpu.pipeline(name, T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("depthwise_grad_params", &params)?;
    rec.dispatch(
        &pipe,
        &[dy, w, dx, &pb],
        grid(gpu, to_u32("invocations", threads)?, p.knobs.wg),
    )
}

/// Records `dw` (`[kh, kw, c_out]`) from `x` and `dy` (NHWC) on the tuned path.
pub fn record_weight<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    p: &DepthwiseGrad,
) -> Result<()> {
    record_weight_variant::<T>(gpu, rec, x, dy, dw, p, p.variant())
}

/// Records `dw` on an explicit shader: split partials + ordered reduce, or the naive one.
pub fn record_weight_variant<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    p: &DepthwiseGrad,
    variant: Variant,
) -> Result<()> {
    let (params, lens) = p.params(variant)?;
    check_buffer::<T>("x", x, lens.x)?;
    check_buffer::<T>("dy", dy, lens.y)?;
    check_buffer::<T>("dw", dw, lens.w)?;
    let pb = gpu.uniform("depthwise_grad_params", &params)?;
    let consts = [("WG", f64::from(p.knobs.wg))];
    let splits = params.splits_chunk[0];
    let nw = to_u32("weights", lens.w)?;
    let (name, threads) = match variant {
        Variant::Naive => {
            let pipe = gpu.pipeline("depthwise_conv2d_grad_weight_naive", T::WGSL, &consts)?;
            return rec.dispatch(&pipe, &[x, dy, dw, &pb], grid(gpu, nw, p.knobs.wg));
        }
        Variant::Vec4 => ("depthwise_conv2d_grad_weight_vec4", splits * (nw / 4)),
        Variant::Scalar => ("depthwise_conv2d_grad_weight", splits * nw),
    };
    let partial = gpu.poisoned(
        "depthwise_grad_partial",
        u64::from(splits) * u64::from(nw) * 4,
    )?;
    let pipe = gpu.pipeline(name, T::WGSL, &consts)?;
    rec.dispatch(
        &pipe,
        &[x, dy, &partial, &pb],
        grid(gpu, threads, p.knobs.wg),
    )?;
    record_reduce::<T>(gpu, rec, &partial, dw, (1, nw, splits))
}

/// Checks two host inputs against their expected lengths.
fn check_inputs(kernel: &str, inputs: [(&str, usize, usize); 2]) -> Result<()> {
    for (name, got, want) in inputs {
        if got != want {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![got], vec![want]],
                reason: format!("{kernel}: `{name}` has {got} elements, expected {want}"),
            });
        }
    }
    Ok(())
}

/// Uploads `dy` and `w`, runs the input gradient on `variant`, reads `dx` back.
pub fn run_input_variant<T: GpuElement>(
    gpu: &GpuContext,
    dy: &[T],
    w: &[T],
    p: &DepthwiseGrad,
    variant: Variant,
) -> Result<Vec<T>> {
    let (_, lens) = p.params(variant)?;
    check_inputs(
        "depthwise_conv2d_grad_input",
        [("dy", dy.len(), lens.y), ("w", w.len(), lens.w)],
    )?;
    let (dyb, wb) = (upload(gpu, "dy", dy)?, upload(gpu, "w", w)?);
    let dxb = output::<T>(gpu, "dx", lens.x)?;
    let mut rec = gpu.recorder();
    record_input_variant::<T>(gpu, &mut rec, &dyb, &wb, &dxb, p, variant)?;
    rec.submit()?;
    read::<T>(gpu, &dxb, lens.x)
}

/// Uploads `x` and `dy`, runs the weight gradient on `variant`, reads `dw` back.
pub fn run_weight_variant<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    dy: &[T],
    p: &DepthwiseGrad,
    variant: Variant,
) -> Result<Vec<T>> {
    let (_, lens) = p.params(variant)?;
    check_inputs(
        "depthwise_conv2d_grad_weight",
        [("x", x.len(), lens.x), ("dy", dy.len(), lens.y)],
    )?;
    let (xb, dyb) = (upload(gpu, "x", x)?, upload(gpu, "dy", dy)?);
    let dwb = output::<T>(gpu, "dw", lens.w)?;
    let mut rec = gpu.recorder();
    record_weight_variant::<T>(gpu, &mut rec, &xb, &dyb, &dwb, p, variant)?;
    rec.submit()?;
    read::<T>(gpu, &dwb, lens.w)
}

/// [`run_input_variant`] on the tuned path.
pub fn run_input<T: GpuElement>(
    gpu: &GpuContext,
    dy: &[T],
    w: &[T],
    p: &DepthwiseGrad,
) -> Result<Vec<T>> {
    run_input_variant(gpu, dy, w, p, p.variant())
}

/// [`run_weight_variant`] on the tuned path.
pub fn run_weight<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    dy: &[T],
    p: &DepthwiseGrad,
) -> Result<Vec<T>> {
    run_weight_variant(gpu, x, dy, p, p.variant())
}
