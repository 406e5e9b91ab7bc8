//! conv_transpose2d forward on the GPU (`shaders/conv_transpose2d.wgsl`): direct gather, one
//! output element per invocation, so overlapping stamps need no atomics; fused bias +
//! activation. Weights `[c_in, kh, kw, c_out / groups]` as in the reference.

use super::GpuElement;
use super::activation_wgsl;
use super::bias_add::grid_1d;
use super::conv2d::{Params, u32_of, upload_inputs};
use super::matmul::check_buffer;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use spore_kernels_cpu::reference::activation::Activation;
use spore_kernels_cpu::reference::conv_transpose2d::ConvTranspose2dParams;

/// Invocations per workgroup.
const WG: u32 = 256;

/// One transposed convolution: shape and fused activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvTranspose2d {
    /// Shape and window (validated like the reference's).
    pub p: ConvTranspose2dParams,
    /// Activation applied after the bias (`None` = identity).
    pub act: Option<Activation>,
}

impl ConvTranspose2d {
    /// Element counts of `(x, w, y)` after validating the shape.
    pub fn validate(&self) -> Result<(usize, usize, usize)> {
        let p = &self.p;
        let (nx, nw, ny) = (p.x_len()?, p.w_len()?, p.y_len()?);
        for (what, len) in [("x", nx), ("w", nw), ("y", ny)] {
            u32_of(what, len)?;
        }
        Ok((nx, nw, ny))
    }

    /// The uniform (the conv2d layout; `h`, `w` are this op's input sizes).
    pub fn params(&self, has_bias: bool) -> Result<Params> {
        let p = &self.p;
        let (act, alpha) = activation_wgsl::encode(self.act)?;
        let (out_h, out_w) = (p.out_h()?, p.out_w()?);
        let cig = p.c_in / p.groups;
        let u = u32_of;
        Ok(Params {
            n: u("n", p.n)?,
            h: u("h", p.h)?,
            w: u("w", p.w)?,
            c_in: u("c_in", p.c_in)?,
            c_out: u("c_out", p.c_out)?,
            kh: u("kh", p.kh)?,
            kw: u("kw", p.kw)?,
            stride_h: u("stride_h", p.stride_h)?,
            stride_w: u("stride_w", p.stride_w)?,
            dilation_h: u("dilation_h", p.dilation_h)?,
            dilation_w: u("dilation_w", p.dilation_w)?,
            pad_top: u("padding", p.padding.top)?,
            pad_left: u("padding", p.padding.left)?,
            out_h: u("out_h", out_h)?,
            out_w: u("out_w", out_w)?,
            groups: u("groups", p.groups)?,
            cig: u("c_in", cig)?,
            cog: u("c_out", p.c_out / p.groups)?,
            kdim: u("w", p.kh * p.kw * cig)?,
            rows: u("y", p.n * out_h * out_w)?,
            has_bias: u32::from(has_bias),
            act,
            alpha,
            _pad: 0,
        })
    }
}

/// Records `ct` on buffers already on the GPU: `x` NHWC, `w` `[c_in, kh, kw, c_out/groups]`,
/// optional `bias` `[c_out]`, output `y` NHWC.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    ct: &ConvTranspose2d,
) -> Result<()> {
    let (nx, nw, ny) = ct.validate()?;
    check_buffer::<T>("x", x, nx)?;
    check_buffer::<T>("w", w, nw)?;
    check_buffer::<T>("y", y, ny)?;
    if let Some(b) = bias {
        check_buffer::<T>("bias", b, ct.p.c_out)?;
    }
    let params = ct.params(bias.is_some())?;
    let dummy;
    let bias_buf = match bias {
        Some(b) => b,
        None => {
            dummy = gpu.upload("no_bias", &[0u8; 4])?;
            &dummy
        }
    };
    let pb = gpu.uniform("conv_transpose2d_params", &params)?;
    let max = gpu.adapter().max_compute_workgroups_per_dimension;
    let pipe = gpu.pipeline("conv_transpose2d", T::WGSL, &[("WG", f64::from(WG))])?;
    rec.dispatch(
        &pipe,
        &[x, w, bias_buf, y, &pb],
        grid_1d(ny as u32, WG, max),
    )
}

/// Runs `ct` on host slices: uploads, poisons the output, records, submits, reads back.
pub fn run<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    ct: &ConvTranspose2d,
) -> Result<Vec<T>> {
    let (nx, nw, ny) = ct.validate()?;
    let (xb, wb, bb) = upload_inputs(
        gpu,
        "conv_transpose2d",
        (x, nx),
        (w, nw),
        (bias, ct.p.c_out),
    )?;
    let bytes = (ny * std::mem::size_of::<T>()) as u64;
    let yb = gpu.poisoned("y", bytes)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &wb, bb.as_ref(), &yb, ct)?;
    rec.submit()?;
    let out = gpu.read_back(&yb, bytes)?;
    Ok(bytemuck::pod_collect_to_vec(&out[..bytes as usize]))
}
