//! The tuned 2-D convolution (NHWC input, OHWI weights, see [`Conv2dParams`]) with a fused
//! bias + activation epilogue: the public, safe entry points ([`conv2d_fast`], one-shot, and
//! [`Conv2dPlan`], weights prepared once), the reference tier, and the drivers the portable
//! and best tiers share. A plan picks one algorithm per shape:
//!
//! * 1x1, stride 1, no padding, one group: `y = act(x @ w^T + bias)`, one sgemm call with
//!   `x` viewed as `[n*h*w, c_in]` and the OHWI weight `[c_out, c_in]` packed once as `B`
//!   (no copy of `x`; rows split over the pool).
//! * `c_in <= 4`, one group, AVX2: the direct "stem" kernel (`x86_64/conv_stem_avx2.rs`),
//!   vectorised over output channels, no im2col.
//! * `groups == c_in >= 2` (depthwise written as a grouped convolution, any multiplier): the
//!   direct depthwise kernel of the tier ([`crate::depthwise_conv2d`]), weights rearranged
//!   once from `[c_out, kh, kw, 1]` to `[kh, kw, c_out]`.
//! * 3x3, stride 1, dilation 1, one group, enough channels: Winograd F(4x4, 3x3)
//!   ([`crate::winograd`]), 4x fewer multiplies, relative error <= 1e-4 (measured ~1e-6).
//! * Everything else (im2col): for each block of output pixels (a few hundred at a time, so
//!   big images never materialise the whole im2col matrix) and each group, gather the receptive
//!   fields into a reusable `[rows, kh*kw*cig]` buffer (column order `(ki, kj, icg)`, the order
//!   of an OHWI weight row; with one group and dilation_w 1 a kernel row inside the input is
//!   one contiguous copy of `kw * c_in` values), then one sgemm against that group's packed
//!   `[kh*kw*cig, cog]` weight, bias and activation fused into its epilogue. One group writes
//!   straight into `y`; several groups go through a `[rows, cog]` temporary scattered into
//!   their channel slice. Threads (pool workers, [`crate::parallel`]) split the output pixels.

use crate::dispatch::Tier;
use crate::error::{Result, check_len, check_param};
use crate::reference::activation::Activation;
use crate::reference::conv2d::{Conv2dParams, conv2d};
use crate::reference::matmul::MatmulParams;
use crate::sgemm::{
    GemmKind, PAR_MIN_FLOPS, PAR_MIN_FLOPS_PREPACKED, PackedB, SgemmFn, SgemmParams,
    sgemm_prepacked,
};

const KERNEL: &str = "conv2d";

/// Target size, in floats, of one im2col block (1 MiB, about Zen 4's L2). Measured
/// 2026-11-25 (Zen 4, AVX2 tier, 1 thread) on 3x3 64->64 at 56x56 (k = 576): 2^17 floats
/// (227-pixel blocks) 59.6 GFLOP/s, 2^18 66.6, 2^19 66.6.
const IM2COL_FLOATS: usize = 1 << 18;
/// Fewest and most output pixels gathered per block.
const MIN_ROWS: usize = 96;
const MAX_ROWS: usize = 1024;

/// The signature of a conv2d implementation (a [`crate::dispatch::Kernels`] slot):
/// `(params, x, w, bias, activation, threads, y)`.
pub type Conv2dFn = fn(
    &Conv2dParams,
    &[f32],
    &[f32],
    Option<&[f32]>,
    Option<Activation>,
    usize,
    &mut [f32],
) -> Result<()>;

/// `y = act(conv2d(x, w) + bias)` with the best implementation this CPU supports (or the tier
/// `SPORE_CPU_KERNELS` forces), on up to `threads` threads (0 is treated as 1). `x` is
/// `[n, h, w, c_in]`, `w` `[c_out, kh, kw, c_in / groups]`, `bias` `[c_out]`, `y`
/// `[n, out_h, out_w, c_out]`. Checks every length first; never panics on bad input.
pub fn conv2d_fast(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    (crate::dispatch::kernels().conv2d)(p, x, w, bias, act, threads, y)
}

/// Checks the parameters, the activation and every slice length.
fn validate(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    y: &[f32],
) -> Result<()> {
    p.validate()?;
    check_len(KERNEL, "x", p.x_len()?, x.len())?;
    check_len(KERNEL, "w", p.w_len()?, w.len())?;
    check_len(KERNEL, "y", p.y_len()?, y.len())?;
    if let Some(bias) = bias {
        check_len(KERNEL, "bias", p.c_out, bias.len())?;
    }
    if let Some(a) = act {
        a.validate(KERNEL)?;
    }
    Ok(())
}

/// The reference tier: the f64-accumulating oracle (bias included), then the activation in
/// f64. `threads` is ignored.
pub fn conv2d_reference(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    _threads: usize,
    y: &mut [f32],
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    conv2d(*p, x, w, bias, y)?;
    if let Some(act) = act {
        y.iter_mut()
            .for_each(|v| *v = act.apply(f64::from(*v)) as f32);
    }
    Ok(())
}

/// The portable tier: a one-shot [`Conv2dPlan`] (Winograd or im2col over the portable sgemm).
pub fn conv2d_portable(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    Conv2dPlan::with_algo(Tier::Portable, one_shot_algo(p), p, w, bias, act)?.run(x, threads, y)
}

/// The AVX2 tier: a one-shot [`Conv2dPlan`] of the best tier (stem kernel, Winograd or im2col
/// over the AVX2+FMA sgemm; the portable kernels on a CPU without AVX2 or FMA).
#[cfg(target_arch = "x86_64")]
pub fn conv2d_avx2(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    Conv2dPlan::with_algo(Tier::Best, one_shot_algo(p), p, w, bias, act)?.run(x, threads, y)
}

/// Fewest output pixels for which a one-shot call ([`conv2d_fast`]) uses Winograd: it pays
/// the weight transform (~40 ns per input x output channel pair) on every call, which only
/// large images amortise. Plans transform once and always use it where it wins.
const ONE_SHOT_WINOGRAD_MIN_PIXELS: usize = 1024;

/// The algorithm of a one-shot call: `Auto`, but im2col where Winograd's weight transform
/// would not pay back within one call.
fn one_shot_algo(p: &Conv2dParams) -> Conv2dAlgo {
    let pixels = p.n * p.out_h().unwrap_or(0) * p.out_w().unwrap_or(0);
    if crate::winograd::applicable(p) && pixels < ONE_SHOT_WINOGRAD_MIN_PIXELS {
        Conv2dAlgo::Im2col
    } else {
        Conv2dAlgo::Auto
    }
}

/// Whether a one-shot call ([`conv2d_fast`], `Auto`) on `p` runs Winograd: applicable, paying
/// for its channel counts, and enough pixels to amortise the weight transform.
pub(crate) fn one_shot_winograd(p: &Conv2dParams) -> bool {
    let pixels = p.n * p.out_h().unwrap_or(0) * p.out_w().unwrap_or(0);
    crate::winograd::applicable(p) && winograd_pays(p) && pixels >= ONE_SHOT_WINOGRAD_MIN_PIXELS
}

/// Which algorithm a [`Conv2dPlan`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv2dAlgo {
    /// The fastest applicable one for the shape (see [`Conv2dPlan::new`]).
    Auto,
    /// The f64 reference (what [`Tier::Reference`] always runs).
    Reference,
    /// im2col (or, for 1x1 stride 1 unpadded, a plain GEMM) + sgemm on pre-packed weights.
    Im2col,
    /// Winograd F(4x4, 3x3): 3x3, stride 1, dilation 1, one group
    /// ([`crate::winograd::applicable`]); rel. L2 error <= [`crate::winograd::WINOGRAD_TOL`].
    Winograd,
    /// The direct AVX2 kernel for `c_in <= 4`, one group (x86_64 with AVX2 + FMA only).
    Stem,
    /// The direct depthwise kernel ([`crate::depthwise_conv2d`]) for a grouped convolution
    /// with `groups == c_in >= 2` (one input channel per group, `c_out / c_in` outputs each).
    Depthwise,
}

/// The algorithm a plan resolved to, with its prepared weights.
#[derive(Debug)]
enum Algo {
    Reference(Vec<f32>),
    Pointwise(PackedB),
    Im2col(Vec<PackedB>),
    Winograd(crate::winograd::WinogradPlan),
    #[cfg(target_arch = "x86_64")]
    Stem(crate::x86_64::conv_stem_avx2::StemPlan),
    /// The tier's depthwise kernel, its parameters and the weights as `[kh, kw, c_out]`.
    Depthwise(
        crate::depthwise_conv2d::DepthwiseConv2dFn,
        crate::depthwise_conv2d::DepthwiseConv2dParams,
        Vec<f32>,
    ),
}

/// A convolution with its weights prepared once: packed sgemm `B` panels (im2col, pointwise),
/// Winograd-transformed `U` matrices, or the stem kernel's rearranged weights. [`Self::run`]
/// does no weight work, so an inference session builds one plan per layer and runs it for
/// every input.
#[derive(Debug)]
pub struct Conv2dPlan {
    p: Conv2dParams,
    bias: Option<Vec<f32>>,
    act: Option<Activation>,
    algo: Algo,
}

/// Whether `Auto` picks Winograd for an applicable shape: the input transform costs O(c_in)
/// and the output transform O(c_out) per tile, against a GEMM saving O(c_in * c_out), so few
/// input channels only pay with few output channels. Measured 2026-11-25 (Zen 4, 1 thread,
/// GFLOP/s im2col / Winograd): 8->8 56x56 27 / 34, 8->64 56x56 69 / 56, 16->16 112x112
/// 67 / 76, 64->64 56x56 99 / 192, 512->512 7x7 82 / 90.
fn winograd_pays(p: &Conv2dParams) -> bool {
    p.c_out >= 8 && (p.c_in >= 16 || (p.c_in >= 8 && p.c_out <= 16))
}

impl Conv2dPlan {
    /// A plan for the tier `SPORE_CPU_KERNELS` asks for (see [`crate::kernels`]), algorithm
    /// chosen automatically: 1x1 = one GEMM; `c_in <= 4` on AVX2 = the direct stem kernel;
    /// 3x3 stride 1 with enough channels = Winograd F(4x4, 3x3); else im2col (with the packed
    /// weights).
    /// `w` is OHWI, `bias` `[c_out]`. Checks every length and parameter.
    pub fn new(
        p: &Conv2dParams,
        w: &[f32],
        bias: Option<&[f32]>,
        act: Option<Activation>,
    ) -> Result<Self> {
        Self::with_algo(crate::kernels().tier, Conv2dAlgo::Auto, p, w, bias, act)
    }

    /// A plan for `tier` running `algo`; an algorithm the shape or CPU does not allow is an
    /// error. [`Tier::Reference`] always runs the reference.
    pub fn with_algo(
        tier: Tier,
        algo: Conv2dAlgo,
        p: &Conv2dParams,
        w: &[f32],
        bias: Option<&[f32]>,
        act: Option<Activation>,
    ) -> Result<Self> {
        p.validate()?;
        check_len(KERNEL, "w", p.w_len()?, w.len())?;
        if let Some(bias) = bias {
            check_len(KERNEL, "bias", p.c_out, bias.len())?;
        }
        if let Some(a) = act {
            a.validate(KERNEL)?;
        }
        let kind = GemmKind::for_tier(tier);
        let pointwise = is_pointwise(p);
        let wino = crate::winograd::applicable(p);
        let depthwise = is_depthwise(p);
        #[cfg(target_arch = "x86_64")]
        let stem = kind == GemmKind::Avx2 && crate::x86_64::conv_stem_avx2::applicable(p);
        #[cfg(not(target_arch = "x86_64"))]
        let stem = false;
        let algo = match (kind, algo) {
            (GemmKind::Reference, _) | (_, Conv2dAlgo::Reference) => Conv2dAlgo::Reference,
            (_, Conv2dAlgo::Auto) => {
                if depthwise {
                    // Measured 2026-11-26 (Zen 4, best tier, 1 thread, 1x56x56x144 3x3, the
                    // `grouped_depthwise_timing` test on a loaded VM): im2col with 144
                    // one-channel groups 30-109 ms, the depthwise kernel 0.14 ms (59 GFLOP/s).
                    Conv2dAlgo::Depthwise
                } else if pointwise {
                    Conv2dAlgo::Im2col
                } else if stem {
                    Conv2dAlgo::Stem
                } else if wino && winograd_pays(p) {
                    Conv2dAlgo::Winograd
                } else {
                    Conv2dAlgo::Im2col
                }
            }
            (_, a) => a,
        };
        check_param(KERNEL, "algo", algo != Conv2dAlgo::Winograd || wino, || {
            "Winograd needs 3x3, stride 1, dilation 1, one group".into()
        })?;
        check_param(KERNEL, "algo", algo != Conv2dAlgo::Stem || stem, || {
            "the stem kernel needs c_in <= 4, one group and AVX2 + FMA".into()
        })?;
        check_param(
            KERNEL,
            "algo",
            algo != Conv2dAlgo::Depthwise || depthwise,
            || "the depthwise kernel needs groups == c_in >= 2".into(),
        )?;
        let zeros;
        let bias_or_zero = match bias {
            Some(b) => b,
            None => {
                zeros = vec![0.0f32; p.c_out];
                &zeros
            }
        };
        let algo = match algo {
            Conv2dAlgo::Reference | Conv2dAlgo::Auto => Algo::Reference(w.to_vec()),
            Conv2dAlgo::Winograd => Algo::Winograd(crate::winograd::WinogradPlan::new(p, w, kind)?),
            #[cfg(target_arch = "x86_64")]
            Conv2dAlgo::Stem => Algo::Stem(crate::x86_64::conv_stem_avx2::StemPlan::new(
                p,
                w,
                bias_or_zero,
            )?),
            #[cfg(not(target_arch = "x86_64"))]
            Conv2dAlgo::Stem => Algo::Reference(w.to_vec()),
            Conv2dAlgo::Depthwise => {
                // OHWI `[c_out, kh, kw, 1]` -> `[kh, kw, c_out]`.
                let taps = p.kh * p.kw;
                let mut dw = vec![0.0f32; w.len()];
                for (o, row) in w.chunks_exact(taps).enumerate() {
                    for (t, &v) in row.iter().enumerate() {
                        dw[t * p.c_out + o] = v;
                    }
                }
                let f = crate::dispatch::Kernels::for_tier(tier).depthwise_conv2d;
                Algo::Depthwise(f, depthwise_params(p), dw)
            }
            Conv2dAlgo::Im2col if pointwise => {
                Algo::Pointwise(PackedB::new(kind, p.c_in, p.c_out, true, w)?)
            }
            Conv2dAlgo::Im2col => {
                let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
                let k = p.kh * p.kw * cig;
                let packed = (0..p.groups)
                    .map(|g| PackedB::new(kind, k, cog, true, &w[g * cog * k..(g + 1) * cog * k]))
                    .collect::<Result<Vec<_>>>()?;
                Algo::Im2col(packed)
            }
        };
        let _ = bias_or_zero;
        Ok(Self {
            p: *p,
            bias: bias.map(<[f32]>::to_vec),
            act,
            algo,
        })
    }

    /// The convolution this plan computes.
    pub fn params(&self) -> &Conv2dParams {
        &self.p
    }

    /// The algorithm the plan resolved to (`"reference"`, `"gemm"`, `"im2col"`, `"winograd
    /// F(4,3)"`, `"stem direct"` or `"depthwise direct"`).
    pub fn algorithm(&self) -> &'static str {
        match self.algo {
            Algo::Reference(_) => "reference",
            Algo::Pointwise(_) => "gemm",
            Algo::Im2col(_) => "im2col",
            Algo::Winograd(_) => "winograd F(4,3)",
            #[cfg(target_arch = "x86_64")]
            Algo::Stem(_) => "stem direct",
            Algo::Depthwise(..) => "depthwise direct",
        }
    }

    /// `y = act(conv2d(x, w) + bias)` on up to `threads` pool workers (0 is treated as 1):
    /// `x` `[n, h, w, c_in]`, `y` `[n, out_h, out_w, c_out]`. Checks both lengths first.
    pub fn run(&self, x: &[f32], threads: usize, y: &mut [f32]) -> Result<()> {
        let p = &self.p;
        check_len(KERNEL, "x", p.x_len()?, x.len())?;
        check_len(KERNEL, "y", p.y_len()?, y.len())?;
        let bias = self.bias.as_deref();
        let act = self.act;
        match &self.algo {
            Algo::Reference(w) => conv2d_reference(p, x, w, bias, act, threads, y),
            Algo::Pointwise(b) => {
                let mut mm = MatmulParams::new(p.n * p.h * p.w, p.c_out, p.c_in);
                mm.transpose_b = true;
                let sp = SgemmParams {
                    mm,
                    activation: act,
                    threads,
                };
                sgemm_prepacked(&sp, x, b, bias, y)
            }
            Algo::Im2col(packed) => {
                let threads = im2col_threads(p, threads, PAR_MIN_FLOPS_PREPACKED)?;
                crate::parallel::par_chunks_mut(y, p.c_out, threads, |r0, chunk| {
                    rows_range(p, x, Weights::Packed(packed), bias, act, r0, chunk)
                })
            }
            Algo::Winograd(wp) => {
                let zeros;
                let b = match bias {
                    Some(b) => b,
                    None => {
                        zeros = vec![0.0f32; p.c_out];
                        &zeros
                    }
                };
                wp.run(p, x, b, act, threads, y)
            }
            #[cfg(target_arch = "x86_64")]
            Algo::Stem(sp) => sp.run(p, x, act, threads, y),
            Algo::Depthwise(f, dp, w) => f(dp, x, w, bias, act, threads, y),
        }
    }
}

/// A grouped convolution with one input channel per group (`groups == c_in >= 2`): a
/// depthwise convolution with multiplier `c_out / c_in`.
pub(crate) fn is_depthwise(p: &Conv2dParams) -> bool {
    p.groups >= 2 && p.groups == p.c_in
}

/// The depthwise parameters of a convolution for which [`is_depthwise`] holds.
pub(crate) fn depthwise_params(p: &Conv2dParams) -> crate::depthwise_conv2d::DepthwiseConv2dParams {
    crate::depthwise_conv2d::DepthwiseConv2dParams {
        n: p.n,
        h: p.h,
        w: p.w,
        c_in: p.c_in,
        multiplier: p.c_out / p.c_in.max(1),
        kh: p.kh,
        kw: p.kw,
        stride_h: p.stride_h,
        stride_w: p.stride_w,
        dilation_h: p.dilation_h,
        dilation_w: p.dilation_w,
        padding: p.padding,
    }
}

/// 1x1, stride 1, no padding, one group: a plain GEMM over the pixels.
fn is_pointwise(p: &Conv2dParams) -> bool {
    p.kh == 1
        && p.kw == 1
        && p.stride_h == 1
        && p.stride_w == 1
        && p.padding.top == 0
        && p.padding.bottom == 0
        && p.padding.left == 0
        && p.padding.right == 0
        && p.groups == 1
}

/// Workers for the im2col driver: one below `min_flops` ([`PAR_MIN_FLOPS`] when every worker
/// packs the weights itself, [`PAR_MIN_FLOPS_PREPACKED`] with a plan's packed weights), else
/// at most one per `MIN_ROWS` output pixels.
fn im2col_threads(p: &Conv2dParams, threads: usize, min_flops: usize) -> Result<usize> {
    let rows_total = p.n * p.out_h()? * p.out_w()?;
    let k = p.kh * p.kw * (p.c_in / p.groups);
    let flops = 2usize
        .saturating_mul(rows_total)
        .saturating_mul(k)
        .saturating_mul(p.c_out);
    Ok(if flops >= min_flops {
        threads.max(1).min(rows_total.div_ceil(MIN_ROWS)).max(1)
    } else {
        1
    })
}

/// The im2col + GEMM driver over the sgemm `gemm` (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_gemm(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    if is_pointwise(p) {
        let mut mm = MatmulParams::new(p.n * p.h * p.w, p.c_out, p.c_in);
        mm.transpose_b = true;
        let sp = SgemmParams {
            mm,
            activation: act,
            threads,
        };
        return gemm(&sp, x, w, bias, y);
    }
    let threads = im2col_threads(p, threads, PAR_MIN_FLOPS)?;
    crate::parallel::par_chunks_mut(y, p.c_out, threads, |r0, chunk| {
        rows_range(p, x, Weights::Raw(w, gemm), bias, act, r0, chunk)
    })
}

/// The weights the im2col driver multiplies by: raw OHWI with an sgemm tier, or pre-packed
/// per group by a [`Conv2dPlan`].
#[derive(Clone, Copy)]
enum Weights<'a> {
    Raw(&'a [f32], SgemmFn),
    Packed(&'a [PackedB]),
}

/// Computes output pixels `[r0, r0 + y.len() / c_out)` (flattened over `n, out_h, out_w`) of
/// a validated convolution into `y`, in blocks of rows.
#[allow(clippy::too_many_arguments)]
fn rows_range(
    p: &Conv2dParams,
    x: &[f32],
    wts: Weights<'_>,
    bias: Option<&[f32]>,
    act: Option<Activation>,
    r0: usize,
    y: &mut [f32],
) -> Result<()> {
    let (out_h, out_w) = (p.out_h()?, p.out_w()?);
    let win = p.window();
    let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
    let k = p.kh * p.kw * cig;
    let rows = y.len() / p.c_out;
    let block = (IM2COL_FLOATS / k).clamp(MIN_ROWS, MAX_ROWS).min(rows);
    let contiguous_rows = p.groups == 1 && p.dilation_w == 1;
    let mut cols = vec![0.0f32; block * k];
    let mut tmp = if p.groups > 1 {
        vec![0.0f32; block * cog]
    } else {
        Vec::new()
    };
    for b0 in (0..rows).step_by(block.max(1)) {
        let m = block.min(rows - b0);
        for g in 0..p.groups {
            // Gather: row r of the block is output pixel r0 + b0 + r.
            for (r, dst) in cols.chunks_exact_mut(k).take(m).enumerate() {
                let pix = r0 + b0 + r;
                let nb = pix / (out_h * out_w);
                let oh = (pix / out_w) % out_h;
                let ow = pix % out_w;
                for (ki, dk) in dst.chunks_exact_mut(p.kw * cig).enumerate() {
                    let Some(ih) = win.h.input_index(oh, ki) else {
                        dk.fill(0.0);
                        continue;
                    };
                    // One group, dense taps, whole kernel row inside the input: the row's
                    // `kw * c_in` values are contiguous in `x`.
                    if contiguous_rows
                        && let (Some(iw0), Some(_)) =
                            (win.w.input_index(ow, 0), win.w.input_index(ow, p.kw - 1))
                    {
                        let s = ((nb * p.h + ih) * p.w + iw0) * p.c_in;
                        dk.copy_from_slice(&x[s..s + dk.len()]);
                        continue;
                    }
                    for (kj, d) in dk.chunks_exact_mut(cig).enumerate() {
                        match win.w.input_index(ow, kj) {
                            Some(iw) => {
                                let s = ((nb * p.h + ih) * p.w + iw) * p.c_in + g * cig;
                                d.copy_from_slice(&x[s..s + cig]);
                            }
                            None => d.fill(0.0),
                        }
                    }
                }
            }
            let mut mm = MatmulParams::new(m, cog, k);
            mm.transpose_b = true;
            let sp = SgemmParams {
                mm,
                activation: act,
                threads: 1,
            };
            let bg = bias.map(|b| &b[g * cog..(g + 1) * cog]);
            let a = &cols[..m * k];
            let mul = |out: &mut [f32]| match wts {
                Weights::Raw(w, gemm) => gemm(&sp, a, &w[g * cog * k..(g + 1) * cog * k], bg, out),
                Weights::Packed(packed) => {
                    let pb = packed.get(g).ok_or_else(|| crate::KernelError::Param {
                        kernel: KERNEL,
                        param: "groups",
                        reason: "plan has fewer packed groups than the parameters".into(),
                    })?;
                    sgemm_prepacked(&sp, a, pb, bg, out)
                }
            };
            if p.groups == 1 {
                mul(&mut y[b0 * p.c_out..(b0 + m) * p.c_out])?;
            } else {
                let t = &mut tmp[..m * cog];
                mul(t)?;
                for (yr, tr) in y[b0 * p.c_out..(b0 + m) * p.c_out]
                    .chunks_exact_mut(p.c_out)
                    .zip(t.chunks_exact(cog))
                {
                    yr[g * cog..(g + 1) * cog].copy_from_slice(tr);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Kernels;
    use crate::reference::window::Padding2d;
    use crate::testutil::{assert_close, rng};

    const ACTS: [Option<Activation>; 4] = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Tanh),
    ];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    fn random_params(r: &mut crate::rng::Rng, case: usize) -> Conv2dParams {
        loop {
            let (kh, kw) = [(1, 1), (3, 3), (5, 3), (3, 5)][r.range(0, 3)];
            let groups = [1, 2, 3][case % 3];
            let (h, w) = (r.range(1, 9), r.range(1, 9));
            let (sh, sw) = (r.range(1, 2), r.range(1, 2));
            let (dh, dw) = (r.range(1, 2), r.range(1, 2));
            let padding = match case % 4 {
                0 => Padding2d::same((h, w), (kh, kw), (sh, sw), (dh, dw)),
                1 => Padding2d::new(r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)),
                2 => Padding2d::ZERO,
                _ => Padding2d::new(1, 0, 0, 2),
            };
            let p = Conv2dParams {
                n: r.range(1, 2),
                h,
                w,
                c_in: groups * r.range(1, (9 / groups).max(1)),
                c_out: groups * r.range(1, (9 / groups).max(1)),
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dilation_h: dh,
                dilation_w: dw,
                padding,
                groups,
            };
            if p.validate().is_ok() {
                return p;
            }
        }
    }

    fn check(name: &str, f: Conv2dFn, p: &Conv2dParams, r: &mut crate::rng::Rng, case: usize) {
        let x = rand_f32(r, p.x_len().unwrap());
        let w = rand_f32(r, p.w_len().unwrap());
        let b = rand_f32(r, p.c_out);
        let bias = case.is_multiple_of(2).then_some(&b[..]);
        let act = ACTS[case % ACTS.len()];
        let threads = 1 + case % 2;
        let mut want = vec![0.0f32; p.y_len().unwrap()];
        let mut got = vec![f32::NAN; want.len()];
        conv2d_reference(p, &x, &w, bias, act, 1, &mut want).unwrap();
        f(p, &x, &w, bias, act, threads, &mut got).unwrap();
        let d = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        assert_close(
            &format!("conv2d/{name}/{p:?} bias={} act={act:?}", bias.is_some()),
            &d(&got),
            &d(&want),
            1e-5,
        );
    }

    fn tiers() -> Vec<(&'static str, Conv2dFn)> {
        let mut t: Vec<(&'static str, Conv2dFn)> = vec![
            ("reference", Kernels::reference().conv2d),
            ("portable", Kernels::portable().conv2d),
            ("best", Kernels::best().conv2d),
            ("dispatched", conv2d_fast),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", conv2d_avx2));
        }
        t
    }

    #[test]
    fn every_tier_matches_reference() {
        let mut r = rng("conv2d_fast");
        for case in 0..36 {
            let p = random_params(&mut r, case);
            for (name, f) in tiers() {
                check(name, f, &p, &mut r, case);
            }
        }
    }

    #[test]
    fn pointwise_and_large_blocks_match_reference() {
        let mut r = rng("conv2d_fast_large");
        let base = Conv2dParams {
            n: 2,
            h: 23,
            w: 19,
            c_in: 12,
            c_out: 10,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            groups: 1,
        };
        let big = Conv2dParams {
            h: 41,
            w: 37,
            c_in: 16,
            c_out: 40,
            kh: 3,
            kw: 3,
            padding: Padding2d::symmetric(1, 1),
            groups: 2,
            ..base
        };
        // `big` (3034 output pixels, k = 72) spans several im2col blocks and 2 groups.
        for (case, p) in [base, big].iter().enumerate() {
            for (name, f) in tiers() {
                check(name, f, p, &mut r, case);
                check(name, f, p, &mut r, case + 1);
            }
        }
        // Large enough to split over threads.
        let par = Conv2dParams {
            n: 1,
            h: 40,
            w: 40,
            c_in: 64,
            c_out: 64,
            groups: 1,
            ..big
        };
        const { assert!(2 * 1600 * 576 * 64 >= PAR_MIN_FLOPS) };
        check("portable-par", conv2d_portable, &par, &mut r, 1);
        check("dispatched-par", conv2d_fast, &par, &mut r, 3);
    }

    /// Every tier x algorithm the shape allows, through a plan, on threads 1 and 2.
    fn check_plans(p: &Conv2dParams, r: &mut crate::rng::Rng, case: usize, ran: &mut Vec<String>) {
        let x = rand_f32(r, p.x_len().unwrap());
        let w = rand_f32(r, p.w_len().unwrap());
        let b = rand_f32(r, p.c_out);
        let bias = case.is_multiple_of(2).then_some(&b[..]);
        let act = ACTS[case % ACTS.len()];
        let mut want = vec![0.0f32; p.y_len().unwrap()];
        conv2d_reference(p, &x, &w, bias, act, 1, &mut want).unwrap();
        let d = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        for tier in [Tier::Reference, Tier::Portable, Tier::Best] {
            for algo in [
                Conv2dAlgo::Auto,
                Conv2dAlgo::Im2col,
                Conv2dAlgo::Winograd,
                Conv2dAlgo::Stem,
                Conv2dAlgo::Depthwise,
            ] {
                let Ok(plan) = Conv2dPlan::with_algo(tier, algo, p, &w, bias, act) else {
                    assert!(matches!(
                        algo,
                        Conv2dAlgo::Winograd | Conv2dAlgo::Stem | Conv2dAlgo::Depthwise
                    ));
                    continue;
                };
                if algo == Conv2dAlgo::Auto && tier != Tier::Reference && is_depthwise(p) {
                    assert_eq!(plan.algorithm(), "depthwise direct");
                }
                let tol = if plan.algorithm().starts_with("winograd") {
                    crate::winograd::WINOGRAD_TOL
                } else {
                    1e-5
                };
                let tag = format!("{tier:?}/{}", plan.algorithm());
                if !ran.contains(&tag) {
                    ran.push(tag.clone());
                }
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; want.len()];
                    plan.run(&x, threads, &mut got).unwrap();
                    assert_close(
                        &format!(
                            "conv2d/plan/{tag}/{p:?} t={threads} bias={} act={act:?}",
                            bias.is_some()
                        ),
                        &d(&got),
                        &d(&want),
                        tol,
                    );
                }
            }
        }
    }

    #[test]
    fn plans_match_reference() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Conv2dPlan>();
        let mut r = rng("conv2d_plans");
        let mut ran = Vec::new();
        for case in 0..24 {
            let p = random_params(&mut r, case);
            check_plans(&p, &mut r, case, &mut ran);
        }
        println!("conv2d plans ran: {ran:?}");
    }

    /// Depthwise convolutions written as grouped convolutions (`groups == c_in`): ragged
    /// channel counts, multipliers 1-2, 3x3 / 5x5 / 2x3 kernels, strides 1-2, dilation,
    /// padding; every tier and algorithm, threads 1 and 2.
    #[test]
    fn grouped_depthwise_plans_match_reference() {
        let mut r = rng("conv2d_grouped_depthwise");
        let mut ran = Vec::new();
        let mut case = 0;
        for c in [2usize, 3, 7, 13, 17, 33] {
            for (k, s, d) in [
                (3, 1, 1),
                (3, 2, 1),
                (5, 1, 1),
                (5, 2, 1),
                (3, 1, 2),
                (2, 1, 1),
            ] {
                let m = 1 + case % 2;
                let (h, w) = (r.range(5, 12), r.range(5, 12));
                let padding = match case % 3 {
                    0 => Padding2d::same((h, w), (k, k), (s, s), (d, d)),
                    1 => Padding2d::ZERO,
                    _ => Padding2d::new(1, 0, 2, 1),
                };
                let p = Conv2dParams {
                    n: r.range(1, 2),
                    h,
                    w,
                    c_in: c,
                    c_out: c * m,
                    kh: k,
                    kw: if k == 2 { 3 } else { k },
                    stride_h: s,
                    stride_w: s,
                    dilation_h: d,
                    dilation_w: d,
                    padding,
                    groups: c,
                };
                check_plans(&p, &mut r, case, &mut ran);
                case += 1;
            }
        }
        println!("grouped depthwise plans ran: {ran:?}");
        assert!(ran.iter().any(|t| t.ends_with("depthwise direct")));
    }

    /// Grouped-as-depthwise 1x56x56x144 3x3 through a plan, im2col vs the depthwise kernel
    /// (not a correctness test): `cargo test --release -p spore-kernels-cpu
    /// grouped_depthwise_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn grouped_depthwise_timing() {
        let mut r = rng("grouped_depthwise_timing");
        let p = Conv2dParams {
            n: 1,
            h: 56,
            w: 56,
            c_in: 144,
            c_out: 144,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::symmetric(1, 1),
            groups: 144,
        };
        let x = rand_f32(&mut r, p.x_len().unwrap());
        let w = rand_f32(&mut r, p.w_len().unwrap());
        let mut y = vec![0.0f32; p.y_len().unwrap()];
        let flops = 2.0 * (56.0 * 56.0 * 144.0) * 9.0;
        for algo in [Conv2dAlgo::Im2col, Conv2dAlgo::Depthwise] {
            let plan = Conv2dPlan::with_algo(Tier::Best, algo, &p, &w, None, None).unwrap();
            for threads in [1, 2] {
                let t = best_time(20, || plan.run(&x, threads, &mut y).unwrap());
                println!(
                    "grouped depthwise {} t={threads}: {:.3} ms {:.1} GFLOP/s",
                    plan.algorithm(),
                    t * 1e3,
                    flops / t / 1e9
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn params3(
        n: usize,
        h: usize,
        w: usize,
        ci: usize,
        co: usize,
        k: usize,
        s: usize,
        pad: Padding2d,
    ) -> Conv2dParams {
        Conv2dParams {
            n,
            h,
            w,
            c_in: ci,
            c_out: co,
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            dilation_h: 1,
            dilation_w: 1,
            padding: pad,
            groups: 1,
        }
    }

    #[test]
    fn winograd_matches_reference() {
        let mut r = rng("conv2d_winograd");
        let mut ran = Vec::new();
        let pads = [
            Padding2d::ZERO,
            Padding2d::symmetric(1, 1),
            Padding2d::new(0, 2, 1, 0),
            Padding2d::new(2, 1, 0, 1),
        ];
        for case in 0..24 {
            let pad = pads[case % pads.len()];
            let ci = [1, 3, 7, 8, 13, 17][r.range(0, 5)];
            let co = [1, 5, 8, 9, 16, 17][r.range(0, 5)];
            let p = params3(
                r.range(1, 2),
                r.range(3, 13),
                r.range(3, 13),
                ci,
                co,
                3,
                1,
                pad,
            );
            if p.validate().is_err() {
                continue;
            }
            check_plans(&p, &mut r, case, &mut ran);
        }
        // Several tile blocks per worker, 2 workers (above PAR_MIN_FLOPS), ragged 4x4 tiles.
        let big = params3(1, 42, 39, 64, 40, 3, 1, Padding2d::symmetric(1, 1));
        check_plans(&big, &mut r, 1, &mut ran);
        let deep = params3(2, 14, 14, 256, 24, 3, 1, Padding2d::symmetric(1, 1));
        check_plans(&deep, &mut r, 2, &mut ran);
        // Four tiles above PAR_MIN_FLOPS: 2 threads split the 36 GEMMs, not the tiles.
        let few = params3(1, 8, 7, 256, 264, 3, 1, Padding2d::symmetric(1, 1));
        check_plans(&few, &mut r, 3, &mut ran);
        assert!(ran.iter().any(|t| t.contains("winograd")));
        println!("winograd ran: {ran:?}");
    }

    #[test]
    fn stem_matches_reference() {
        let mut r = rng("conv2d_stem");
        let mut ran = Vec::new();
        let pads = [
            Padding2d::ZERO,
            Padding2d::symmetric(1, 1),
            Padding2d::new(0, 1, 0, 1),
            Padding2d::new(2, 0, 1, 2),
        ];
        for case in 0..24 {
            let ci = 1 + case % 4;
            let co = [5, 17, 32, 33, 8, 64][case % 6];
            let k = [3, 3, 1, 5][r.range(0, 3)];
            let s = r.range(1, 2);
            let p = params3(
                r.range(1, 2),
                r.range(5, 17),
                r.range(5, 17),
                ci,
                co,
                k,
                s,
                pads[case % 4],
            );
            if p.validate().is_err() {
                continue;
            }
            check_plans(&p, &mut r, case, &mut ran);
        }
        // The benchmark stem: above the stem kernel's thread threshold.
        let big = params3(1, 224, 224, 3, 32, 3, 2, Padding2d::new(0, 1, 0, 1));
        check_plans(&big, &mut r, 3, &mut ran);
        println!("stem ran: {ran:?}");
    }

    /// Best-of-N wall time of `f`, in seconds.
    fn best_time(iters: usize, mut f: impl FnMut()) -> f64 {
        f();
        (0..iters)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Timing of the benchmark layers (GFLOP/s = direct-convolution flops / time):
    /// `cargo test --release -p spore-kernels-cpu conv2d_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn conv2d_timing() {
        let mut r = rng("conv2d_timing");
        let n = 1024;
        let a = rand_f32(&mut r, n * n);
        let b = rand_f32(&mut r, n * n);
        let mut c = vec![0.0f32; n * n];
        for threads in [1, 2] {
            let mut p = SgemmParams::new(n, n, n);
            p.threads = threads;
            let t = best_time(5, || crate::sgemm::sgemm(&p, &a, &b, None, &mut c).unwrap());
            println!(
                "sgemm 1024^3 t={threads}: {:.1} GFLOP/s",
                2.0 * (n * n * n) as f64 / t / 1e9
            );
        }
        let same = Padding2d::symmetric(1, 1);
        let layers = [
            ("3x3 64->64 56x56", params3(1, 56, 56, 64, 64, 3, 1, same)),
            (
                "3x3 256->256 14x14",
                params3(1, 14, 14, 256, 256, 3, 1, same),
            ),
            (
                "3x3 128->128 28x28",
                params3(1, 28, 28, 128, 128, 3, 1, same),
            ),
            ("3x3 512->512 7x7", params3(1, 7, 7, 512, 512, 3, 1, same)),
            (
                "3x3 16->16 112x112",
                params3(1, 112, 112, 16, 16, 3, 1, same),
            ),
            ("3x3 8->8 56x56", params3(1, 56, 56, 8, 8, 3, 1, same)),
            ("3x3 8->64 56x56", params3(1, 56, 56, 8, 64, 3, 1, same)),
            (
                "stem 224x224x3->32 s2",
                params3(1, 224, 224, 3, 32, 3, 2, Padding2d::new(0, 1, 0, 1)),
            ),
            (
                "pointwise 144->24 56x56",
                params3(1, 56, 56, 144, 24, 1, 1, Padding2d::ZERO),
            ),
        ];
        for (name, p) in layers {
            let x = rand_f32(&mut r, p.x_len().unwrap());
            let w = rand_f32(&mut r, p.w_len().unwrap());
            let bias = rand_f32(&mut r, p.c_out);
            let mut y = vec![0.0f32; p.y_len().unwrap()];
            let flops = 2.0 * p.y_len().unwrap() as f64 * (p.kh * p.kw * p.c_in) as f64;
            let mut want = vec![0.0f32; y.len()];
            conv2d_reference(&p, &x, &w, Some(&bias), None, 1, &mut want).unwrap();
            for threads in [1, 2] {
                let t = best_time(10, || {
                    conv2d_gemm(
                        &p,
                        &x,
                        &w,
                        Some(&bias),
                        None,
                        threads,
                        &mut y,
                        crate::x86_64::sgemm_avx2::sgemm,
                    )
                    .unwrap()
                });
                println!(
                    "{name} t={threads} before (im2col, unpacked): {:.1} GFLOP/s",
                    flops / t / 1e9
                );
                let t = best_time(10, || {
                    conv2d_fast(&p, &x, &w, Some(&bias), None, threads, &mut y).unwrap()
                });
                println!(
                    "{name} t={threads} one-shot conv2d_fast (plan + run): {:.1} GFLOP/s",
                    flops / t / 1e9
                );
                for algo in [
                    Conv2dAlgo::Im2col,
                    Conv2dAlgo::Winograd,
                    Conv2dAlgo::Stem,
                    Conv2dAlgo::Auto,
                ] {
                    let Ok(plan) =
                        Conv2dPlan::with_algo(Tier::Best, algo, &p, &w, Some(&bias), None)
                    else {
                        continue;
                    };
                    let t = best_time(10, || plan.run(&x, threads, &mut y).unwrap());
                    let d = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
                    let err = crate::testutil::rel_l2(&d(&y), &d(&want));
                    println!(
                        "{name} t={threads} {algo:?} -> {}: {:.1} GFLOP/s ({:.3} ms, rel L2 {err:.1e})",
                        plan.algorithm(),
                        flops / t / 1e9,
                        t * 1e3
                    );
                }
            }
        }
    }

    #[test]
    fn errors_not_panics() {
        let p = Conv2dParams {
            n: 1,
            h: 4,
            w: 4,
            c_in: 2,
            c_out: 3,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            groups: 1,
        };
        let x = vec![1.0f32; 32];
        let w = vec![1.0f32; 54];
        let b = vec![0.0f32; 3];
        let mut y = vec![0.0f32; 12];
        for (name, f) in tiers() {
            assert!(f(&p, &x, &w, Some(&b), None, 1, &mut y).is_ok(), "{name}");
            assert!(
                f(&p, &x[..31], &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w[..53], None, None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w, Some(&b[..2]), None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w, None, None, 1, &mut y[..11]).is_err(),
                "{name}"
            );
            let leaky = Some(Activation::LeakyRelu(f64::NAN));
            assert!(f(&p, &x, &w, None, leaky, 1, &mut y).is_err(), "{name}");
            let bad_groups = Conv2dParams { groups: 2, ..p };
            assert!(
                f(&bad_groups, &x, &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            let too_big = Conv2dParams { kh: 5, ..p };
            assert!(
                f(&too_big, &x, &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            let zero = Conv2dParams { stride_h: 0, ..p };
            assert!(f(&zero, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
            let huge = Conv2dParams {
                n: usize::MAX / 2,
                ..p
            };
            assert!(f(&huge, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
        }
    }
}
