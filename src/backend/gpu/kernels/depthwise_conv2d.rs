//! Depthwise 2-D convolution forward on the GPU, NHWC x, `[kh, kw, c_in * multiplier]` weight,
//! any kernel size / stride / dilation / asymmetric padding / channel multiplier, fused bias
//! and activation. Three shaders: `depthwise_conv2d_vec4` (multiplier 1, channels % 4 == 0:
//! vec4 over channels), `depthwise_conv2d` (scalar channels, the general case), both with
//! `COLS` output columns per invocation, and `depthwise_conv2d_naive` (one output per
//! invocation, the baseline).

use super::GpuElement;
use super::activation_wgsl;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use crate::tune::{TuneKey, TuneSpec, bucket, shader_hash};
use spore_kernels_cpu::reference::activation::Activation;
use spore_kernels_cpu::reference::depthwise_conv2d::DepthwiseConv2dParams;

/// Mirror of the `Params` uniform the three depthwise shaders share.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// n, h, w, c_in.
    pub nhwc: [u32; 4],
    /// multiplier, c_out, out_h, out_w.
    pub mult_cout_out: [u32; 4],
    /// kh, kw, stride_h, stride_w.
    pub k_stride: [u32; 4],
    /// dilation_h, dilation_w, padding.top, padding.left.
    pub dil_pad: [u32; 4],
    /// Whether the bias binding is real.
    pub has_bias: u32,
    /// Fused activation code.
    pub act: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// `ceil(out_w / COLS)` (1 column per block for the naive shader).
    pub col_blocks: u32,
}

/// Tuning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
    /// Output columns per invocation (1..=8).
    pub cols: u32,
    /// Use the vec4 shader where the shape allows it (multiplier 1, channels % 4 == 0).
    pub vec4: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            wg: 64,
            cols: 4,
            vec4: true,
        }
    }
}

impl Knobs {
    /// The autotuner's label, e.g. `wg64 cols4 vec4` or `wg64 cols4 scalar` (parsed back by
    /// [`Knobs::parse`]).
    pub fn label(&self) -> String {
        let shader = if self.vec4 { "vec4" } else { "scalar" };
        format!("wg{} cols{} {shader}", self.wg, self.cols)
    }

    /// Parses a [`Knobs::label`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Knobs> {
        let mut it = s.split(' ');
        let wg = it.next()?.strip_prefix("wg")?.parse().ok()?;
        let cols = it.next()?.strip_prefix("cols")?.parse().ok()?;
        let vec4 = match it.next()? {
            "vec4" => true,
            "scalar" => false,
            _ => return None,
        };
        it.next().is_none().then_some(Knobs { wg, cols, vec4 })
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[
    Knobs {
        wg: 64,
        cols: 4,
        vec4: true,
    },
    Knobs {
        wg: 64,
        cols: 2,
        vec4: true,
    },
    Knobs {
        wg: 128,
        cols: 8,
        vec4: true,
    },
    Knobs {
        wg: 256,
        cols: 1,
        vec4: true,
    },
    Knobs {
        wg: 64,
        cols: 4,
        vec4: false,
    },
    Knobs {
        wg: 32,
        cols: 4,
        vec4: true,
    },
    Knobs {
        wg: 64,
        cols: 8,
        vec4: true,
    },
    Knobs {
        wg: 128,
        cols: 4,
        vec4: true,
    },
    Knobs {
        wg: 256,
        cols: 2,
        vec4: true,
    },
];

/// Every shader a depthwise candidate may run.
pub const TUNE_SHADERS: &[&str] = &["depthwise_conv2d", "depthwise_conv2d_vec4"];

/// The autotuner's view of depthwise convolution `p`: key `depthwise_conv2d f32 [n, h, w,
/// c_in, multiplier, kh, kw, stride_h, stride_w, dilation_h, dilation_w]` (batch and
/// spatial sizes bucketed) and the [`CANDIDATES`] this shape can run, the default first
/// (vec4 knob sets become scalar ones where the shape has no vec4 path).
pub fn tune_spec(p: &DepthwiseConv2dParams) -> TuneSpec {
    let exact = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let vec4_ok = p.multiplier == 1 && p.c_in.is_multiple_of(4);
    let mut candidates: Vec<String> = Vec::new();
    for k in std::iter::once(Knobs::default()).chain(CANDIDATES.iter().copied()) {
        let k = Knobs {
            vec4: k.vec4 && vec4_ok,
            ..k
        };
        if !candidates.contains(&k.label()) {
            candidates.push(k.label());
        }
    }
    TuneSpec {
        key: TuneKey {
            kernel: "depthwise_conv2d".into(),
            dtype: "f32".into(),
            shape: vec![
                bucket(p.n),
                bucket(p.h),
                bucket(p.w),
                exact(p.c_in),
                exact(p.multiplier),
                exact(p.kh),
                exact(p.kw),
                exact(p.stride_h),
                exact(p.stride_w),
                exact(p.dilation_h),
                exact(p.dilation_w),
            ],
        },
        candidates,
        shader_hash: shader_hash(TUNE_SHADERS),
    }
}

/// One depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthwiseConv2d {
    /// Shape and window (the reference's parameters).
    pub shape: DepthwiseConv2dParams,
    /// Fused activation after the bias.
    pub act: Option<Activation>,
    /// Tuning knobs.
    pub knobs: Knobs,
}

/// Which shader runs a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `depthwise_conv2d_vec4`.
    Vec4,
    /// `depthwise_conv2d` (scalar channels).
    Scalar,
    /// `depthwise_conv2d_naive`.
    Naive,
}

/// Element counts of a validated call.
struct Lens {
    x: usize,
    w: usize,
    c_out: usize,
    y: usize,
}

impl DepthwiseConv2d {
    /// The shader the tuned path picks for this shape and these knobs.
    pub fn variant(&self) -> Variant {
        if self.knobs.vec4 && self.shape.multiplier == 1 && self.shape.c_in.is_multiple_of(4) {
            Variant::Vec4
        } else {
            Variant::Scalar
        }
    }

    fn params(&self, variant: Variant) -> Result<(Params, Lens)> {
        check_wg(self.knobs.wg)?;
        if !(1..=8).contains(&self.knobs.cols) {
            return Err(Error::invalid_param(
                "cols",
                format!(
                    "output columns per invocation must be in 1..=8, got {}",
                    self.knobs.cols
                ),
            ));
        }
        let s = self.shape;
        s.validate()?;
        let lens = Lens {
            x: s.x_len()?,
            w: s.w_len()?,
            c_out: s.c_out()?,
            y: s.y_len()?,
        };
        let (out_h, out_w) = (s.out_h()?, s.out_w()?);
        let u = to_u32;
        // Every index the shader forms (elements, padded coordinates) must fit in u32/i32.
        u("x elements", lens.x)?;
        u("y elements", lens.y)?;
        let limit = i32::MAX as usize;
        let span_h = (out_h * s.stride_h).saturating_add(s.kh * s.dilation_h);
        let span_w = (out_w * s.stride_w).saturating_add(s.kw * s.dilation_w + 8 * s.stride_w);
        if span_h > limit || span_w > limit || s.padding.top > limit || s.padding.left > limit {
            return Err(Error::invalid_param("window", "padded extent exceeds i32"));
        }
        let cols = if variant == Variant::Naive {
            1
        } else {
            self.knobs.cols as usize
        };
        let (act, alpha) = activation_wgsl::encode(self.act)?;
        let p = Params {
            nhwc: [u("n", s.n)?, u("h", s.h)?, u("w", s.w)?, u("c_in", s.c_in)?],
            mult_cout_out: [
                u("multiplier", s.multiplier)?,
                u("c_out", lens.c_out)?,
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
            has_bias: 0,
            act,
            alpha,
            col_blocks: u("col_blocks", out_w.div_ceil(cols))?,
        };
        Ok((p, lens))
    }
}

/// Records the depthwise convolution on the tuned path ([`DepthwiseConv2d::variant`]).
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    p: &DepthwiseConv2d,
) -> Result<()> {
    record_variant::<T>(gpu, rec, x, w, bias, y, p, p.variant())
}

/// Records the depthwise convolution on the naive one-output-per-invocation shader.
pub fn record_naive<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    p: &DepthwiseConv2d,
) -> Result<()> {
    record_variant::<T>(gpu, rec, x, w, bias, y, p, Variant::Naive)
}

/// Records the depthwise convolution on an explicit shader (the vec4 one only where the
/// shape allows it).
#[allow(clippy::too_many_arguments)] // one buffer per tensor of the op
pub fn record_variant<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    p: &DepthwiseConv2d,
    variant: Variant,
) -> Result<()> {
    let (mut params, lens) = p.params(variant)?;
    if variant == Variant::Vec4 && !(p.shape.multiplier == 1 && p.shape.c_in.is_multiple_of(4)) {
        return Err(Error::NotSupported {
            what: format!(
                "depthwise_conv2d_vec4 needs multiplier 1 and channels % 4 == 0, got {} x {}",
                p.shape.c_in, p.shape.multiplier
            ),
        });
    }
    check_buffer::<T>("x", x, lens.x)?;
    check_buffer::<T>("w", w, lens.w)?;
    check_buffer::<T>("y", y, lens.y)?;
    // Without a bias the binding still needs a buffer: a 16-byte dummy (one vec4) that the
    // shader never reads (has_bias = 0).
    let dummy;
    let bias_buf = match bias {
        Some(b) => {
            check_buffer::<T>("bias", b, lens.c_out)?;
            params.has_bias = 1;
            b
        }
        None => {
            dummy = gpu.upload("no_bias", &[0u8; 16])?;
            &dummy
        }
    };
    let (name, constants): (&'static str, Vec<(&str, f64)>) = match variant {
        Variant::Vec4 => (
            "depthwise_conv2d_vec4",
            vec![
                ("WG", f64::from(p.knobs.wg)),
                ("COLS", f64::from(p.knobs.cols)),
            ],
        ),
        Variant::Scalar => (
            "depthwise_conv2d",
            vec![
                ("WG", f64::from(p.knobs.wg)),
                ("COLS", f64::from(p.knobs.cols)),
            ],
        ),
        Variant::Naive => (
            "depthwise_conv2d_naive",
            vec![("WG", f64::from(p.knobs.wg))],
        ),
    };
    let pipeline = gpu.pipeline(name, T::WGSL, &constants)?;
    let pb = gpu.uniform("depthwise_conv2d_params", &params)?;
    let s = p.shape;
    let out_h = params.mult_cout_out[2] as usize;
    // Invocations: (n, oh, column block, channel group).
    let groups_per_row = match variant {
        Variant::Vec4 => lens.c_out / 4,
        _ => lens.c_out,
    };
    let threads = s.n * out_h * params.col_blocks as usize * groups_per_row;
    let threads = to_u32("invocations", threads)?;
    rec.dispatch(
        &pipeline,
        &[x, w, bias_buf, y, &pb],
        grid(gpu, threads, p.knobs.wg),
    )
}

/// Uploads the tensors, runs the tuned path ([`record`]), reads `y` back.
pub fn run<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    p: &DepthwiseConv2d,
) -> Result<Vec<T>> {
    run_variant(gpu, x, w, bias, p, p.variant())
}

/// Uploads the tensors, runs the naive shader, reads `y` back.
pub fn run_naive<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    p: &DepthwiseConv2d,
) -> Result<Vec<T>> {
    run_variant(gpu, x, w, bias, p, Variant::Naive)
}

/// Uploads the tensors, runs `variant`, reads `y` back.
pub fn run_variant<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    p: &DepthwiseConv2d,
    variant: Variant,
) -> Result<Vec<T>> {
    let (_, lens) = p.params(variant)?;
    let mut checks = vec![("x", x.len(), lens.x), ("w", w.len(), lens.w)];
    if let Some(b) = bias {
        checks.push(("bias", b.len(), lens.c_out));
    }
    for (name, got, want) in checks {
        if got != want {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![got], vec![want]],
                reason: format!("depthwise_conv2d: `{name}` has {got} elements, expected {want}"),
            });
        }
    }
    let xb = upload(gpu, "x", x)?;
    let wb = upload(gpu, "w", w)?;
    let bb = bias.map(|b| upload(gpu, "bias", b)).transpose()?;
    let yb = output::<T>(gpu, "y", lens.y)?;
    let mut rec = gpu.recorder();
    record_variant::<T>(gpu, &mut rec, &xb, &wb, bb.as_ref(), &yb, p, variant)?;
    rec.submit()?;
    read::<T>(gpu, &yb, lens.y)
}
