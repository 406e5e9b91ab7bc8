//! conv2d forward on the GPU (`shaders/conv2d*.wgsl`): NHWC activations, OHWI weights,
//! stride, asymmetric padding, dilation, groups, fused bias + activation.
//!
//! The main kernel is an implicit GEMM on the matmul tile structure (rows = output pixels,
//! columns = output channels of a group, K = taps x input channels of the group); a 1x1,
//! stride-1, unpadded, ungrouped convolution is exactly a matmul `[n*h*w, c_in] @ w^T` and goes
//! to the matmul kernel. `conv2d_naive` (one output per invocation) is the baseline.
//! The shared [`Params`] uniform also serves `conv_transpose2d`.

use super::GpuElement;
use super::activation_wgsl;
use super::bias_add::grid_1d;
use super::matmul::{self, Matmul, Tile, check_buffer};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use crate::tune::{TuneKey, TuneSpec, bucket, shader_hash};
use spore_kernels_cpu::reference::activation::Activation;
use spore_kernels_cpu::reference::conv2d::Conv2dParams;
use spore_kernels_cpu::reference::matmul::MatmulParams;

/// Mirror of the `ConvParams` uniform of conv2d, conv2d_naive and conv_transpose2d.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Batch.
    pub n: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Input channels.
    pub c_in: u32,
    /// Output channels.
    pub c_out: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
    /// Vertical dilation.
    pub dilation_h: u32,
    /// Horizontal dilation.
    pub dilation_w: u32,
    /// Zero rows above (the bottom padding only shows in `out_h`).
    pub pad_top: u32,
    /// Zero columns on the left.
    pub pad_left: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Channel groups.
    pub groups: u32,
    /// Input channels per group.
    pub cig: u32,
    /// Output channels per group.
    pub cog: u32,
    /// GEMM depth `kh * kw * cig`.
    pub kdim: u32,
    /// Output pixels `n * out_h * out_w`.
    pub rows: u32,
    /// 1 when a bias `[c_out]` is added.
    pub has_bias: u32,
    /// Activation code.
    pub act: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// Pads the struct to 16 bytes.
    pub _pad: u32,
}

/// Which conv2d kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Implicit GEMM with the matmul tile knobs (1x1 convolutions use the matmul kernel with
    /// the same tile).
    Tiled(Tile),
    /// One output channel of a 16-pixel block per invocation, input reads broadcast across
    /// the workgroup, no workgroup memory (`conv2d_rows.wgsl`; 1x1 convolutions use
    /// matmul's `Rows`): an autotuner candidate, slower than the tiles on lavapipe (0.45 vs
    /// 0.60 GFLOP/s on 1x56x56x64->64 3x3), so no default picks it.
    Rows {
        /// Invocations (output channels) per workgroup, a power of two <= 256.
        wg: u32,
    },
    /// One output element per invocation: the baseline.
    Naive,
}

impl Variant {
    /// The autotuner's label: `tile 16x16 bk16`, `rows wg64` or `naive` (the matmul
    /// labels of the same kernels; parsed back by [`Variant::parse`]).
    pub fn label(&self) -> String {
        match self {
            Variant::Tiled(t) => t.label(),
            Variant::Rows { wg } => format!("rows wg{wg}"),
            Variant::Naive => "naive".into(),
        }
    }

    /// Parses a [`Variant::label`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Variant> {
        match matmul::Variant::parse(s)? {
            matmul::Variant::Tiled(t) => Some(Variant::Tiled(t)),
            matmul::Variant::Rows { wg } => Some(Variant::Rows { wg }),
            matmul::Variant::Naive => Some(Variant::Naive),
            _ => None,
        }
    }

    /// Every variant the autotuner tries on `gpu`, the default first: the tiles that fit its
    /// limits, the rows kernel at each workgroup size, and the naive baseline.
    pub fn candidates(gpu: &GpuContext) -> Vec<Variant> {
        let mut out = vec![Variant::Tiled(Tile::DEFAULT)];
        for t in CANDIDATES.iter().filter(|t| t.fits(gpu)) {
            if !out.contains(&Variant::Tiled(*t)) {
                out.push(Variant::Tiled(*t));
            }
        }
        for wg in matmul::ROWS_CANDIDATES {
            out.push(Variant::Rows { wg: *wg });
        }
        out.push(Variant::Naive);
        out
    }
}

/// Every shader a conv2d candidate may run (1x1 convolutions go to the matmul ones).
pub const TUNE_SHADERS: &[&str] = &[
    "conv2d",
    "conv2d_rows",
    "conv2d_naive",
    "matmul",
    "matmul_rows",
    "matmul_naive",
];

/// The autotuner's view of convolution `p` on `gpu`: key `conv2d f32 [n, h, w, c_in, c_out,
/// kh, kw, stride_h, stride_w, dilation_h, dilation_w, groups]` (batch and spatial sizes
/// bucketed) and the [`Variant::candidates`].
pub fn tune_spec(p: &Conv2dParams, gpu: &GpuContext) -> TuneSpec {
    let exact = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    TuneSpec {
        key: TuneKey {
            kernel: "conv2d".into(),
            dtype: "f32".into(),
            shape: vec![
                bucket(p.n),
                bucket(p.h),
                bucket(p.w),
                exact(p.c_in),
                exact(p.c_out),
                exact(p.kh),
                exact(p.kw),
                exact(p.stride_h),
                exact(p.stride_w),
                exact(p.dilation_h),
                exact(p.dilation_w),
                exact(p.groups),
            ],
        },
        candidates: Variant::candidates(gpu)
            .iter()
            .map(Variant::label)
            .collect(),
        shader_hash: shader_hash(TUNE_SHADERS),
    }
}

/// Legal tile knob sets for the autotuner: the matmul ones.
pub const CANDIDATES: &[Tile] = matmul::CANDIDATES;

/// One convolution: shape, fused activation, kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2d {
    /// Shape and window (validated like the reference's).
    pub p: Conv2dParams,
    /// Activation applied after the bias (`None` = identity).
    pub act: Option<Activation>,
    /// Kernel variant.
    pub variant: Variant,
}

/// Converts a size to u32 or names it in the error.
pub(crate) fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid_param(what, "above 2^32 on the GPU"))
}

impl Conv2d {
    /// Convolution `p` with no activation on the default tile.
    pub fn new(p: Conv2dParams) -> Self {
        Conv2d {
            p,
            act: None,
            variant: Variant::Tiled(Tile::DEFAULT),
        }
    }

    /// Element counts of `(x, w, y)` after validating shape and knobs.
    pub fn validate(&self) -> Result<(usize, usize, usize)> {
        let p = &self.p;
        let (nx, nw, ny) = (p.x_len()?, p.w_len()?, p.y_len()?);
        for (what, len) in [("x", nx), ("w", nw), ("y", ny)] {
            u32_of(what, len)?;
        }
        match self.variant {
            Variant::Tiled(t) => t.validate()?,
            Variant::Rows { wg } => {
                if !wg.is_power_of_two() || wg > 256 {
                    return Err(Error::invalid_param(
                        "wg",
                        format!("{wg}: a power of two up to 256"),
                    ));
                }
            }
            Variant::Naive => {}
        }
        Ok((nx, nw, ny))
    }

    /// Whether the convolution is a plain matmul `[n*h*w, c_in] @ w^T`.
    pub fn is_pointwise(&self) -> bool {
        let p = &self.p;
        p.kh == 1
            && p.kw == 1
            && p.stride_h == 1
            && p.stride_w == 1
            && p.groups == 1
            && p.padding.top + p.padding.bottom + p.padding.left + p.padding.right == 0
    }

    /// The uniform for this convolution.
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

/// Records `conv` on buffers already on the GPU: `x` NHWC, `w` OHWI, optional `bias`
/// `[c_out]`, output `y` NHWC (elements of `T`).
#[allow(clippy::too_many_arguments)]
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    conv: &Conv2d,
) -> Result<()> {
    let (nx, nw, ny) = conv.validate()?;
    let pointwise = match conv.variant {
        Variant::Tiled(tile) => Some(matmul::Variant::Tiled(tile)),
        Variant::Rows { wg } => Some(matmul::Variant::Rows { wg }),
        Variant::Naive => None,
    };
    if let (Some(variant), true) = (pointwise, conv.is_pointwise()) {
        let p = &conv.p;
        let mm = Matmul {
            p: MatmulParams {
                transpose_b: true,
                ..MatmulParams::new(p.n * p.h * p.w, p.c_out, p.c_in)
            },
            act: conv.act,
            variant,
        };
        return matmul::record::<T>(gpu, rec, x, w, bias, y, &mm);
    }
    check_buffer::<T>("x", x, nx)?;
    check_buffer::<T>("w", w, nw)?;
    check_buffer::<T>("y", y, ny)?;
    if let Some(b) = bias {
        check_buffer::<T>("bias", b, conv.p.c_out)?;
    }
    let params = conv.params(bias.is_some())?;
    let dummy;
    let bias_buf = match bias {
        Some(b) => b,
        None => {
            dummy = gpu.upload("no_bias", &[0u8; 4])?;
            &dummy
        }
    };
    let pb = gpu.uniform("conv2d_params", &params)?;
    let max = gpu.adapter().max_compute_workgroups_per_dimension;
    match conv.variant {
        Variant::Tiled(t) => {
            let grid = [
                params.cog.div_ceil(t.tile_n()),
                params.rows.div_ceil(t.tile_m()),
                params.groups,
            ];
            if grid.iter().any(|&d| d > max) {
                return Err(Error::invalid_param(
                    "shape",
                    format!("needs {grid:?} workgroups, the adapter allows {max} per dimension"),
                ));
            }
            let pipe = gpu.pipeline("conv2d", T::WGSL, &t.constants())?;
            rec.dispatch(&pipe, &[x, w, bias_buf, y, &pb], grid)
        }
        Variant::Rows { wg } => {
            let blocks = params.cog.div_ceil(wg);
            let grid = [
                params.groups.saturating_mul(blocks),
                params.rows.div_ceil(16),
                1,
            ];
            if grid.iter().any(|&d| d > max) {
                return Err(Error::invalid_param(
                    "shape",
                    format!("needs {grid:?} workgroups, the adapter allows {max} per dimension"),
                ));
            }
            let pipe = gpu.pipeline("conv2d_rows", T::WGSL, &[("WG", f64::from(wg))])?;
            rec.dispatch(&pipe, &[x, w, bias_buf, y, &pb], grid)
        }
        Variant::Naive => {
            let wg = 256;
            let pipe = gpu.pipeline("conv2d_naive", T::WGSL, &[("WG", f64::from(wg))])?;
            rec.dispatch(
                &pipe,
                &[x, w, bias_buf, y, &pb],
                grid_1d(ny as u32, wg, max),
            )
        }
    }
}

/// Uploads `x` (NHWC), `w` (OHWI) and `bias`, checking their lengths against `conv`.
pub(crate) fn upload_inputs<T: GpuElement>(
    gpu: &GpuContext,
    kernel: &str,
    (x, nx): (&[T], usize),
    (w, nw): (&[T], usize),
    (bias, nb): (Option<&[T]>, usize),
) -> Result<(wgpu::Buffer, wgpu::Buffer, Option<wgpu::Buffer>)> {
    let mismatch = |what: &str, want: usize, got: usize| Error::ShapeMismatch {
        shapes: vec![vec![want], vec![got]],
        reason: format!("{kernel}: `{what}` has {got} elements, the shape needs {want}"),
    };
    if x.len() != nx {
        return Err(mismatch("x", nx, x.len()));
    }
    if w.len() != nw {
        return Err(mismatch("w", nw, w.len()));
    }
    if let Some(b) = bias
        && b.len() != nb
    {
        return Err(mismatch("bias", nb, b.len()));
    }
    let xb = gpu.upload("x", bytemuck::cast_slice(x))?;
    let wb = gpu.upload("w", bytemuck::cast_slice(w))?;
    let bb = bias
        .map(|v| gpu.upload("bias", bytemuck::cast_slice(v)))
        .transpose()?;
    Ok((xb, wb, bb))
}

/// Runs `conv` on host slices: uploads, poisons the output, records, submits, reads back.
pub fn run<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    conv: &Conv2d,
) -> Result<Vec<T>> {
    let (nx, nw, ny) = conv.validate()?;
    let (xb, wb, bb) = upload_inputs(gpu, "conv2d", (x, nx), (w, nw), (bias, conv.p.c_out))?;
    let bytes = (ny * std::mem::size_of::<T>()) as u64;
    let yb = gpu.poisoned("y", bytes)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &wb, bb.as_ref(), &yb, conv)?;
    rec.submit()?;
    let out = gpu.read_back(&yb, bytes)?;
    Ok(bytemuck::pod_collect_to_vec(&out[..bytes as usize]))
}
