//! The tuned backward of the 2-D convolution ([`Conv2dParams`]: NHWC input, OHWI weights):
//! input gradient (GEMM + col2im), weight gradient (im2col + GEMM) and bias gradient, with the
//! reference tier and the drivers the portable and best tiers share over an [`SgemmFn`].
//!
//! * Tiers (portable, best) first route two special shapes: `groups == c_in >= 2` (depthwise
//!   written as a grouped convolution) to the depthwise gradient kernels of the tier, and a
//!   stride-1 input gradient whose flipped convolution is a large 3x3 Winograd case
//!   ([`crate::conv2d`]'s one-shot rule) to Winograd F(4x4, 3x3): `dx` is the forward
//!   convolution of `dy` with the weights flipped in space and transposed in/out, padded by
//!   `(k - 1) * dilation - pad` (relative error <= [`crate::winograd::WINOGRAD_TOL`],
//!   measured ~1e-6). Everything else takes the GEMM paths below.
//! * Input gradient, `dx = col2im(dy @ W)`: for each block of output pixels and each group,
//!   one sgemm `dcols[rows, kh*kw*cig] = dy_g[rows, cog] @ W_g[cog, kh*kw*cig]` (the OHWI
//!   weight rows of the group are already that row-major matrix), then every row of `dcols`
//!   is added back onto the input cells its window read (zeroed first). With one group and
//!   dilation_w 1 a kernel row inside the input is one contiguous add of `kw * c_in` values.
//!   A 1x1 stride-1 unpadded one-group conv is one GEMM straight into `dx`.
//! * Threads own disjoint runs of input rows (`n * h` rows split into contiguous chunks), so
//!   the scatter-adds never race: each worker recomputes the few output rows whose windows
//!   straddle its boundary (a halo of about `kh / stride` rows) and keeps only the taps that
//!   land in its rows. Every `dx` cell receives its contributions in the same order on any
//!   thread count.
//! * Weight gradient, `dW_g[cog, K] = dy_g^T[cog, rows] @ cols[rows, K]`: im2col blocks of
//!   output pixels (as the forward does) and one `transpose_a` sgemm per block, the first block
//!   written straight into `dW` and later ones through a temporary that is added on (sgemm
//!   overwrites its output). Threads take contiguous ranges of output pixels with a private
//!   partial `dW` each; the partials are summed in thread order, so the result is
//!   deterministic for a given thread count.
//! * Bias gradient: the column sums of `dy`, accumulated in f64.
//!
//! The same col2im driver computes the transposed convolution's forward pass (see
//! [`crate::conv_transpose2d`]), with a bias + activation epilogue.

use crate::conv2d::{Conv2dAlgo, Conv2dPlan};
use crate::dispatch::Tier;
use crate::error::{Result, check_len};
use crate::parallel::{par_chunks_mut, par_map};
use crate::reference::activation::Activation;
use crate::reference::conv2d::{
    Conv2dParams, conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight,
};
use crate::reference::matmul::MatmulParams;
use crate::reference::window::{Padding2d, Window2d};
use crate::sgemm::{PAR_MIN_FLOPS, SgemmFn, SgemmParams};

const KERNEL_DX: &str = "conv2d_grad_input";
const KERNEL_DW: &str = "conv2d_grad_weight";

/// Target size, in floats, of one `[rows, kh*kw*cig]` column block (1 MiB, about Zen 4's L2),
/// as in the forward convolution.
const COL_FLOATS: usize = 1 << 18;
/// Fewest and most output pixels per column block.
const MIN_ROWS: usize = 96;
const MAX_ROWS: usize = 1024;

/// The signature of a conv2d input-gradient implementation (a [`crate::dispatch::Kernels`]
/// slot): `(params, dy, w, threads, dx)`.
pub type Conv2dGradInputFn = fn(&Conv2dParams, &[f32], &[f32], usize, &mut [f32]) -> Result<()>;

/// The signature of a conv2d weight-gradient implementation (a [`crate::dispatch::Kernels`]
/// slot): `(params, x, dy, threads, dw, db)`; `db` (the bias gradient) is optional.
pub type Conv2dGradWeightFn =
    fn(&Conv2dParams, &[f32], &[f32], usize, &mut [f32], Option<&mut [f32]>) -> Result<()>;

/// `dx = conv2d_grad_input(dy, w)` with the best implementation this CPU supports (or the tier
/// `SPORE_CPU_KERNELS` forces), on up to `threads` threads (0 is treated as 1). `dy` is
/// `[n, out_h, out_w, c_out]`, `w` `[c_out, kh, kw, c_in / groups]`, `dx` `[n, h, w, c_in]`
/// (overwritten). Checks every length first; never panics on bad input.
pub fn conv2d_grad_input_fast(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    (crate::dispatch::kernels().conv2d_grad_input)(p, dy, w, threads, dx)
}

/// `dw = conv2d_grad_weight(x, dy)` and, when `db` is given, the bias gradient (column sums of
/// `dy`), with the best implementation this CPU supports, on up to `threads` threads. `x` is
/// `[n, h, w, c_in]`, `dy` `[n, out_h, out_w, c_out]`, `dw` `[c_out, kh, kw, c_in / groups]`
/// and `db` `[c_out]` (both overwritten). Checks every length first; never panics.
pub fn conv2d_grad_weight_fast(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    (crate::dispatch::kernels().conv2d_grad_weight)(p, x, dy, threads, dw, db)
}

/// Checks the parameters and the slice lengths of an input gradient.
fn validate_dx(p: &Conv2dParams, dy: &[f32], w: &[f32], dx: &[f32]) -> Result<()> {
    p.validate()?;
    check_len(KERNEL_DX, "dy", p.y_len()?, dy.len())?;
    check_len(KERNEL_DX, "w", p.w_len()?, w.len())?;
    check_len(KERNEL_DX, "dx", p.x_len()?, dx.len())
}

/// Checks the parameters and the slice lengths of a weight (and bias) gradient.
fn validate_dw(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    dw: &[f32],
    db: Option<&[f32]>,
) -> Result<()> {
    p.validate()?;
    check_len(KERNEL_DW, "x", p.x_len()?, x.len())?;
    check_len(KERNEL_DW, "dy", p.y_len()?, dy.len())?;
    check_len(KERNEL_DW, "dw", p.w_len()?, dw.len())?;
    if let Some(db) = db {
        check_len(KERNEL_DW, "db", p.c_out, db.len())?;
    }
    Ok(())
}

/// The reference tier of the input gradient: the f64-accumulating oracle. `threads` is
/// ignored.
pub fn conv2d_grad_input_reference(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    _threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    validate_dx(p, dy, w, dx)?;
    conv2d_grad_input(*p, dy, w, dx)
}

/// The reference tier of the weight and bias gradients: the f64-accumulating oracle.
/// `threads` is ignored.
pub fn conv2d_grad_weight_reference(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    _threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    validate_dw(p, x, dy, dw, db.as_deref())?;
    conv2d_grad_weight(*p, x, dy, dw)?;
    if let Some(db) = db {
        conv2d_grad_bias(*p, dy, db)?;
    }
    Ok(())
}

/// The portable tier of the input gradient: the depthwise kernel for `groups == c_in`,
/// Winograd on the flipped weights for large 3x3 stride-1 layers, else GEMM + col2im over the
/// portable sgemm.
pub fn conv2d_grad_input_portable(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    let gemm = crate::portable::sgemm::sgemm;
    grad_input_tiered(p, dy, w, threads, dx, Tier::Portable, gemm)
}

/// Reorders OHWI `[c_out, kh, kw, 1]` weights of a depthwise-as-grouped convolution to the
/// depthwise kernels' `[kh, kw, c_out]`.
fn ohwi_to_depthwise(p: &Conv2dParams, w: &[f32]) -> Vec<f32> {
    let taps = p.kh * p.kw;
    let mut out = vec![0.0f32; w.len()];
    for (o, row) in w.chunks_exact(taps.max(1)).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            out[t * p.c_out + o] = v;
        }
    }
    out
}

/// The input gradient of a stride-1 convolution is the forward convolution of `dy` with the
/// spatially flipped, in/out-transposed weights, padded by `(k - 1) * dilation - pad` on each
/// side; these are its parameters, when that padding is non-negative.
fn flipped_params(p: &Conv2dParams) -> Option<Conv2dParams> {
    if p.stride_h != 1 || p.stride_w != 1 {
        return None;
    }
    let span_h = (p.kh - 1) * p.dilation_h;
    let span_w = (p.kw - 1) * p.dilation_w;
    let pad = p.padding;
    Some(Conv2dParams {
        h: p.out_h().ok()?,
        w: p.out_w().ok()?,
        c_in: p.c_out,
        c_out: p.c_in,
        padding: Padding2d::new(
            span_h.checked_sub(pad.top)?,
            span_h.checked_sub(pad.bottom)?,
            span_w.checked_sub(pad.left)?,
            span_w.checked_sub(pad.right)?,
        ),
        ..*p
    })
}

/// `w2[g*cig + i, kh-1-ki, kw-1-kj, o] = w[g*cog + o, ki, kj, i]`: the weights of the
/// convolution [`flipped_params`] describes.
fn flip_weights(p: &Conv2dParams, w: &[f32]) -> Vec<f32> {
    let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
    let (kh, kw) = (p.kh, p.kw);
    let mut out = vec![0.0f32; w.len()];
    for (oc, wo) in w.chunks_exact(kh * kw * cig).enumerate() {
        let (g, o) = (oc / cog, oc % cog);
        for (t, src) in wo.chunks_exact(cig).enumerate() {
            let (ki, kj) = (t / kw, t % kw);
            let ft = (kh - 1 - ki) * kw + (kw - 1 - kj);
            for (i, &v) in src.iter().enumerate() {
                out[((g * cig + i) * kh * kw + ft) * cog + o] = v;
            }
        }
    }
    out
}

/// The input gradient for `tier` (Portable or Best), falling back to GEMM + col2im on `gemm`.
/// Measured 2026-11-26 (Zen 4, AVX2 tier, 1 thread, 56x56 3x3 64->64 pad 1, the `timing`
/// test, loaded VM): GEMM + col2im 2.96 ms (78 GFLOP/s); Winograd on the flipped weights,
/// weight flip and transform included, 1.80 ms (129 GFLOP/s).
fn grad_input_tiered(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    threads: usize,
    dx: &mut [f32],
    tier: Tier,
    gemm: SgemmFn,
) -> Result<()> {
    validate_dx(p, dy, w, dx)?;
    if crate::conv2d::is_depthwise(p) {
        let dp = crate::conv2d::depthwise_params(p);
        let f = crate::dispatch::Kernels::for_tier(tier).depthwise_conv2d_grad_input;
        return f(&dp, &ohwi_to_depthwise(p, w), dy, threads, dx);
    }
    if let Some(p2) = flipped_params(p).filter(crate::conv2d::one_shot_winograd) {
        let w2 = flip_weights(p, w);
        let plan = Conv2dPlan::with_algo(tier, Conv2dAlgo::Winograd, &p2, &w2, None, None)?;
        return plan.run(dy, threads, dx);
    }
    col2im_driver(p, dy, w, None, None, threads, dx, gemm, PAR_MIN_FLOPS)
}

/// The weight (and bias) gradient for `tier`: the depthwise kernel for `groups == c_in`,
/// else im2col + `gemm`.
#[allow(clippy::too_many_arguments)]
fn grad_weight_tiered(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    tier: Tier,
    gemm: SgemmFn,
) -> Result<()> {
    validate_dw(p, x, dy, dw, db.as_deref())?;
    if crate::conv2d::is_depthwise(p) {
        let dp = crate::conv2d::depthwise_params(p);
        let f = crate::dispatch::Kernels::for_tier(tier).depthwise_conv2d_grad_weight;
        let mut tmp = vec![0.0f32; dw.len()];
        f(&dp, x, dy, threads, &mut tmp, db)?;
        // `[kh, kw, c_out]` -> OHWI `[c_out, kh, kw, 1]`.
        let taps = p.kh * p.kw;
        for (o, row) in dw.chunks_exact_mut(taps.max(1)).enumerate() {
            for (t, v) in row.iter_mut().enumerate() {
                *v = tmp[t * p.c_out + o];
            }
        }
        return Ok(());
    }
    if crate::conv2d::one_shot_winograd(p) {
        if let Some(db) = db {
            column_sums(dy, p.c_out, db);
        }
        return wino_grad_weight(p, x, dy, threads, dw, gemm);
    }
    conv2d_grad_weight_gemm(p, x, dy, threads, dw, db, gemm)
}

/// The portable tier of the weight gradient: im2col + the portable sgemm.
pub fn conv2d_grad_weight_portable(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    let gemm = crate::portable::sgemm::sgemm;
    grad_weight_tiered(p, x, dy, threads, dw, db, Tier::Portable, gemm)
}

/// The AVX2 tier of the input gradient: GEMM + col2im over the AVX2+FMA sgemm (which returns
/// an error on a CPU without AVX2 or FMA; the table only installs this where the CPU has them).
#[cfg(target_arch = "x86_64")]
pub fn conv2d_grad_input_avx2(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    let gemm = crate::x86_64::sgemm_avx2::sgemm;
    grad_input_tiered(p, dy, w, threads, dx, Tier::Best, gemm)
}

/// The AVX2 tier of the weight gradient: im2col + the AVX2+FMA sgemm.
#[cfg(target_arch = "x86_64")]
pub fn conv2d_grad_weight_avx2(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    let gemm = crate::x86_64::sgemm_avx2::sgemm;
    grad_weight_tiered(p, x, dy, threads, dw, db, Tier::Best, gemm)
}

/// The input gradient over the sgemm `gemm` (see the module doc).
pub fn conv2d_grad_input_gemm(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    threads: usize,
    dx: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    validate_dx(p, dy, w, dx)?;
    col2im_driver(p, dy, w, None, None, threads, dx, gemm, PAR_MIN_FLOPS)
}

/// The weight (and bias) gradient over the sgemm `gemm` (see the module doc).
pub fn conv2d_grad_weight_gemm(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    gemm: SgemmFn,
) -> Result<()> {
    validate_dw(p, x, dy, dw, db.as_deref())?;
    if let Some(db) = db {
        column_sums(dy, p.c_out, db);
    }
    grad_weight_driver(p, x, dy, threads, dw, gemm, PAR_MIN_FLOPS)
}

/// The weight gradient of a validated convolution; problems under `par_min_flops` run on one
/// thread (the tests lower it to reach the threaded path on small shapes).
fn grad_weight_driver(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    gemm: SgemmFn,
    par_min_flops: usize,
) -> Result<()> {
    let g = Geom::new(p)?;
    let rows_total = p.n * g.out_h * g.out_w;
    let flops = conv_flops(rows_total, g.k, p.c_out);
    let threads = if flops >= par_min_flops {
        // At least MIN_ROWS pixels per worker (any split when the tests force threading).
        let min_rows = if par_min_flops == 0 { 1 } else { MIN_ROWS };
        threads.max(1).min(rows_total.div_ceil(min_rows)).max(1)
    } else {
        1
    };
    if is_pointwise(p) {
        // dW[c_out, c_in] = dy^T @ x: one GEMM, its own threads over the rows of dW.
        let mm = MatmulParams {
            transpose_a: true,
            ..MatmulParams::new(p.c_out, p.c_in, rows_total)
        };
        let sp = SgemmParams {
            mm,
            activation: None,
            threads,
        };
        return gemm(&sp, dy, x, None, dw);
    }
    if threads <= 1 {
        return dw_pixels(p, &g, x, dy, 0, rows_total, dw, gemm);
    }
    let per = rows_total.div_ceil(threads);
    let dw_len = dw.len();
    let partials = par_map(threads, threads, |t| -> Result<Vec<f32>> {
        let lo = (t * per).min(rows_total);
        let hi = ((t + 1) * per).min(rows_total);
        let mut part = vec![0.0f32; dw_len];
        if lo < hi {
            dw_pixels(p, &g, x, dy, lo, hi, &mut part, gemm)?;
        }
        Ok(part)
    })?;
    dw.fill(0.0);
    for part in partials {
        add_into(dw, &part?);
    }
    Ok(())
}

/// `2 * rows * k * c_out`, saturating (only compared against a threshold).
fn conv_flops(rows: usize, k: usize, c_out: usize) -> usize {
    2usize
        .saturating_mul(rows)
        .saturating_mul(k)
        .saturating_mul(c_out)
}

/// 1x1, stride 1, no padding, one group: the convolution is a plain GEMM over pixels.
fn is_pointwise(p: &Conv2dParams) -> bool {
    p.kh == 1
        && p.kw == 1
        && p.stride_h == 1
        && p.stride_w == 1
        && p.padding == Padding2d::ZERO
        && p.groups == 1
}

/// Sizes of a validated convolution that the loops need.
#[derive(Debug, Clone, Copy)]
struct Geom {
    out_h: usize,
    out_w: usize,
    /// Input channels per group.
    cig: usize,
    /// Output channels per group.
    cog: usize,
    /// Columns of an im2col row, `kh * kw * cig`.
    k: usize,
    win: Window2d,
    /// One group and dense taps along W: a kernel row inside the input is contiguous in `x`.
    contiguous: bool,
}

impl Geom {
    fn new(p: &Conv2dParams) -> Result<Self> {
        let cig = p.c_in / p.groups;
        Ok(Self {
            out_h: p.out_h()?,
            out_w: p.out_w()?,
            cig,
            cog: p.c_out / p.groups,
            k: p.kh * p.kw * cig,
            win: p.window(),
            contiguous: p.groups == 1 && p.dilation_w == 1,
        })
    }

    /// Output pixels per column block, a multiple of 16: the weight gradient contracts over
    /// them, and an odd depth misaligns the sgemm's packed panels. Measured 2026-11-25 (Zen 4,
    /// AVX2 tier, 1 thread, 56x56 3x3 64->64, k = 576): 455-row blocks 58 GFLOP/s, 256 / 384 /
    /// 448 / 480 / 512 rows 76-77, 1024 rows 73.
    fn block(&self) -> usize {
        ((COL_FLOATS / self.k.max(1)) / 16 * 16).clamp(MIN_ROWS, MAX_ROWS)
    }

    /// `(n, oh, ow)` of the flattened output pixel `pix`.
    #[inline]
    fn pixel(&self, pix: usize) -> (usize, usize, usize) {
        (
            pix / (self.out_h * self.out_w),
            (pix / self.out_w) % self.out_h,
            pix % self.out_w,
        )
    }

    /// The output rows `[lo, hi)` whose windows may read input rows `[ih0, ih1)` of an image
    /// (a superset: the scatter skips taps that miss).
    fn out_rows_reading(&self, ih0: usize, ih1: usize) -> (usize, usize) {
        let h = self.win.h;
        let span = h.dilation.saturating_mul(h.kernel.saturating_sub(1));
        // Smallest oh with oh * stride + span - pad_before >= ih0.
        let lo = (ih0 + h.pad_before).saturating_sub(span).div_ceil(h.stride);
        // Largest oh with oh * stride - pad_before <= ih1 - 1.
        let hi = ((ih1 + h.pad_before).saturating_sub(1) / h.stride + 1).min(self.out_h);
        (lo.min(hi), hi)
    }
}

/// Column sums of the row-major `[rows, c]` matrix `dy` into `db` (`[c]`), accumulated in f64
/// so long columns do not lose precision.
fn column_sums(dy: &[f32], c: usize, db: &mut [f32]) {
    let mut acc = vec![0.0f64; c];
    for row in dy.chunks_exact(c) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += f64::from(*v);
        }
    }
    for (d, a) in db.iter_mut().zip(&acc) {
        *d = *a as f32;
    }
}

/// `dst += src`, element by element.
#[inline]
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// Copies channels `[grp * cog, (grp + 1) * cog)` of the `c`-channel pixel rows `src` into
/// the dense `[rows, cog]` matrix `dst`.
fn gather_group(src: &[f32], c: usize, grp: usize, cog: usize, dst: &mut [f32]) {
    for (d, s) in dst.chunks_exact_mut(cog).zip(src.chunks_exact(c)) {
        d.copy_from_slice(&s[grp * cog..(grp + 1) * cog]);
    }
}

/// Gathers the receptive fields (group `grp`) of output pixels `pix0 ..` into `cols`, one
/// `[k]` row per pixel in `(ki, kj, icg)` order (an OHWI weight row's order); padding is zero.
/// `dst.copy_from_slice(src)` for the short rows of thin convolutions (a LeNet 5x5 kernel row
/// over one channel is 5 floats): constant-size moves instead of a `memmove` call per row,
/// whose overhead dominated the weight gradient of such layers.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    if n > 32 {
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let mut i = 0;
    while i + 8 <= n {
        dst[i..i + 8].copy_from_slice(&src[i..i + 8]);
        i += 8;
    }
    if i + 4 <= n {
        dst[i..i + 4].copy_from_slice(&src[i..i + 4]);
        i += 4;
    }
    if i + 2 <= n {
        dst[i..i + 2].copy_from_slice(&src[i..i + 2]);
        i += 2;
    }
    if i < n {
        dst[i] = src[i];
    }
}

fn im2col(p: &Conv2dParams, g: &Geom, x: &[f32], grp: usize, pix0: usize, cols: &mut [f32]) {
    let (cig, win) = (g.cig, g.win);
    for (r, dst) in cols.chunks_exact_mut(g.k).enumerate() {
        let (nb, oh, ow) = g.pixel(pix0 + r);
        for (ki, dk) in dst.chunks_exact_mut(p.kw * cig).enumerate() {
            let Some(ih) = win.h.input_index(oh, ki) else {
                dk.fill(0.0);
                continue;
            };
            let row = (nb * p.h + ih) * p.w;
            if g.contiguous
                && let (Some(iw0), Some(_)) =
                    (win.w.input_index(ow, 0), win.w.input_index(ow, p.kw - 1))
            {
                let s = (row + iw0) * p.c_in;
                copy_row(dk, &x[s..s + dk.len()]);
                continue;
            }
            for (kj, d) in dk.chunks_exact_mut(cig).enumerate() {
                match win.w.input_index(ow, kj) {
                    Some(iw) => {
                        let s = (row + iw) * p.c_in + grp * cig;
                        copy_row(d, &x[s..s + cig]);
                    }
                    None => d.fill(0.0),
                }
            }
        }
    }
}

/// Adds every row of `cols` (group `grp`, output pixels `pix0 ..`) onto the input cells its
/// window read, keeping only those in `dx`, which holds the flattened input rows
/// `[row0, row0 + dx.len() / (w * c_in))`.
fn col2im(
    p: &Conv2dParams,
    g: &Geom,
    cols: &[f32],
    grp: usize,
    pix0: usize,
    row0: usize,
    dx: &mut [f32],
) {
    let (cig, win) = (g.cig, g.win);
    let row_len = p.w * p.c_in;
    let rows = dx.len() / row_len;
    for (r, src) in cols.chunks_exact(g.k).enumerate() {
        let (nb, oh, ow) = g.pixel(pix0 + r);
        for (ki, sk) in src.chunks_exact(p.kw * cig).enumerate() {
            let Some(ih) = win.h.input_index(oh, ki) else {
                continue;
            };
            let Some(local) = (nb * p.h + ih).checked_sub(row0) else {
                continue;
            };
            if local >= rows {
                continue;
            }
            let base = local * row_len;
            if g.contiguous
                && let (Some(iw0), Some(_)) =
                    (win.w.input_index(ow, 0), win.w.input_index(ow, p.kw - 1))
            {
                let s = base + iw0 * p.c_in;
                add_into(&mut dx[s..s + sk.len()], sk);
                continue;
            }
            for (kj, s) in sk.chunks_exact(cig).enumerate() {
                if let Some(iw) = win.w.input_index(ow, kj) {
                    let o = base + iw * p.c_in + grp * cig;
                    add_into(&mut dx[o..o + cig], s);
                }
            }
        }
    }
}

/// `dx = col2im(dy @ W)` (then `+ bias` and the activation, for the transposed convolution)
/// for a validated convolution `p`: `dy` `[n, out_h, out_w, c_out]`, `w` OHWI, `dx`
/// `[n, h, w, c_in]` (overwritten), on up to `threads` threads (see the module doc) when the
/// problem has at least `par_min_flops` flops.
#[allow(clippy::too_many_arguments)]
pub(crate) fn col2im_driver(
    p: &Conv2dParams,
    dy: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    dx: &mut [f32],
    gemm: SgemmFn,
    par_min_flops: usize,
) -> Result<()> {
    if let Some(a) = act {
        a.validate(KERNEL_DX)?;
    }
    let g = Geom::new(p)?;
    let rows_total = p.n * g.out_h * g.out_w;
    let flops = conv_flops(rows_total, g.k, p.c_out);
    let parallel = flops >= par_min_flops;
    if is_pointwise(p) {
        // dx[pixels, c_in] = dy[pixels, c_out] @ W[c_out, c_in]: one GEMM, epilogue fused.
        let sp = SgemmParams {
            mm: MatmulParams::new(rows_total, p.c_in, p.c_out),
            activation: act,
            threads: if parallel { threads } else { 1 },
        };
        return gemm(&sp, dy, w, bias, dx);
    }
    let threads = if parallel {
        // At least a few input rows per worker, or the halo recomputation dominates (any
        // split when the tests force threading).
        let min_rows = if par_min_flops == 0 { 1 } else { 4 };
        threads.max(1).min((p.n * p.h).div_ceil(min_rows)).max(1)
    } else {
        1
    };
    par_chunks_mut(dx, p.w * p.c_in, threads, |row0, chunk| {
        dx_rows(p, &g, dy, w, row0, chunk, gemm)?;
        epilogue(chunk, p.c_in, bias, act);
        Ok(())
    })
}

/// The input gradient restricted to the flattened input rows `[row0, row0 + rows)` held in
/// `dx`: every output pixel whose window may read them goes through the GEMM, and the scatter
/// keeps the taps that land inside.
fn dx_rows(
    p: &Conv2dParams,
    g: &Geom,
    dy: &[f32],
    w: &[f32],
    row0: usize,
    dx: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    dx.fill(0.0);
    let rows = dx.len() / (p.w * p.c_in);
    let (k, cog) = (g.k, g.cog);
    let block = g.block();
    let mut cols = vec![0.0f32; block * k];
    let mut dyg = if p.groups > 1 {
        vec![0.0f32; block * cog]
    } else {
        Vec::new()
    };
    let end = row0 + rows;
    let mut r = row0;
    while r < end {
        // The rows of image `nb` inside this chunk.
        let nb = r / p.h;
        let ih0 = r % p.h;
        let ih1 = p.h.min(ih0 + (end - r));
        let (oh0, oh1) = g.out_rows_reading(ih0, ih1);
        let pix_lo = (nb * g.out_h + oh0) * g.out_w;
        let pix_hi = (nb * g.out_h + oh1) * g.out_w;
        for b0 in (pix_lo..pix_hi).step_by(block) {
            let m = block.min(pix_hi - b0);
            let dy_blk = &dy[b0 * p.c_out..(b0 + m) * p.c_out];
            for grp in 0..p.groups {
                let a = if p.groups == 1 {
                    dy_blk
                } else {
                    gather_group(dy_blk, p.c_out, grp, cog, &mut dyg[..m * cog]);
                    &dyg[..m * cog]
                };
                let sp = SgemmParams {
                    mm: MatmulParams::new(m, k, cog),
                    activation: None,
                    threads: 1,
                };
                let wg = &w[grp * cog * k..(grp + 1) * cog * k];
                gemm(&sp, a, wg, None, &mut cols[..m * k])?;
                col2im(p, g, &cols[..m * k], grp, b0, row0, dx);
            }
        }
        r += ih1 - ih0;
    }
    Ok(())
}

/// Adds `bias` to every `c`-channel pixel of `y` and applies `act`, in place.
fn epilogue(y: &mut [f32], c: usize, bias: Option<&[f32]>, act: Option<Activation>) {
    if let Some(bias) = bias {
        for px in y.chunks_exact_mut(c) {
            add_into(px, bias);
        }
    }
    let Some(act) = act else {
        return;
    };
    // The piecewise-linear activations in f32 (vectorisable); the transcendental ones through
    // the f64 reference formula, O(output) against the GEMM's O(output * k).
    match act {
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Activation::LeakyRelu(alpha) => {
            let alpha = alpha as f32;
            y.iter_mut()
                .for_each(|v| *v = if *v > 0.0 { *v } else { alpha * *v });
        }
        other => y
            .iter_mut()
            .for_each(|v| *v = other.apply(f64::from(*v)) as f32),
    }
}

/// The weight gradient of the output pixels `[pix_lo, pix_hi)` of a validated, non-pointwise
/// convolution into `dw` (overwritten).
#[allow(clippy::too_many_arguments)]
fn dw_pixels(
    p: &Conv2dParams,
    g: &Geom,
    x: &[f32],
    dy: &[f32],
    pix_lo: usize,
    pix_hi: usize,
    dw: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    let (k, cog) = (g.k, g.cog);
    let block = g.block();
    let mut cols = vec![0.0f32; block * k];
    let mut dyg = if p.groups > 1 {
        vec![0.0f32; block * cog]
    } else {
        Vec::new()
    };
    let mut tmp = vec![0.0f32; cog * k];
    for b0 in (pix_lo..pix_hi).step_by(block) {
        let m = block.min(pix_hi - b0);
        let first = b0 == pix_lo;
        let dy_blk = &dy[b0 * p.c_out..(b0 + m) * p.c_out];
        for grp in 0..p.groups {
            im2col(p, g, x, grp, b0, &mut cols[..m * k]);
            let a = if p.groups == 1 {
                dy_blk
            } else {
                gather_group(dy_blk, p.c_out, grp, cog, &mut dyg[..m * cog]);
                &dyg[..m * cog]
            };
            // dW_g[cog, k] = dy_g^T[cog, m] @ cols[m, k]; dy_g is stored [m, cog].
            let sp = SgemmParams {
                mm: MatmulParams {
                    transpose_a: true,
                    ..MatmulParams::new(cog, k, m)
                },
                activation: None,
                threads: 1,
            };
            let dwg = &mut dw[grp * cog * k..(grp + 1) * cog * k];
            if first {
                gemm(&sp, a, &cols[..m * k], None, dwg)?;
            } else {
                gemm(&sp, a, &cols[..m * k], None, &mut tmp)?;
                add_into(dwg, &tmp);
            }
        }
    }
    Ok(())
}

/// Channel lanes of the Winograd weight-gradient transforms.
const WL: usize = 8;
type WLanes = [f32; WL];

/// Most floats of transformed tiles (`V` and `W`, `36 * tiles * (c_in + c_out)`) held per
/// block of the Winograd weight gradient (4 MiB: each of the 36 GEMMs then contracts over
/// every tile of a 56x56 image at 64 + 64 channels, ~100 KiB of operands, in L2).
const WINO_DW_FLOATS: usize = 1 << 20;

/// Loads up to `WL` values of `src` into lanes (zeros past its end).
#[inline(always)]
fn wl_load(src: &[f32]) -> WLanes {
    let mut v = [0.0f32; WL];
    if let Ok(a) = <&[f32; WL]>::try_from(src) {
        v = *a;
    } else {
        v.iter_mut().zip(src).for_each(|(d, s)| *d = *s);
    }
    v
}

/// Stores the first `dst.len()` (at most `WL`) lanes.
#[inline(always)]
fn wl_store(dst: &mut [f32], v: &WLanes) {
    if let Ok(a) = <&mut [f32; WL]>::try_from(&mut *dst) {
        *a = *v;
    } else {
        dst.iter_mut().zip(v).for_each(|(d, s)| *d = *s);
    }
}

/// `B^T d` of F(4x4, 3x3) for 6 lane-vectors.
#[inline(always)]
fn wino_bt(d: [WLanes; 6]) -> [WLanes; 6] {
    let mut r = [[0.0f32; WL]; 6];
    for l in 0..WL {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `A e` (A = (A^T)^T, 6x4) of F(4x4, 3x3) for 4 lane-vectors: the adjoint of the output
/// transform, applied to output-gradient tiles.
#[inline(always)]
fn wino_a(e: [WLanes; 4]) -> [WLanes; 6] {
    let mut r = [[0.0f32; WL]; 6];
    for l in 0..WL {
        let (e0, e1, e2, e3) = (e[0][l], e[1][l], e[2][l], e[3][l]);
        let (s02, s13) = (e0 + e2, e1 + e3);
        let (q02, q13) = (e0 + 4.0 * e2, 2.0 * e1 + 8.0 * e3);
        r[0][l] = e0;
        r[1][l] = s02 + s13;
        r[2][l] = s02 - s13;
        r[3][l] = q02 + q13;
        r[4][l] = q02 - q13;
        r[5][l] = e3;
    }
    r
}

/// `G^T m` (3x6) of F(4x4, 3x3) for 6 lane-vectors: the adjoint of the weight transform.
#[inline(always)]
fn wino_gt(m: [WLanes; 6]) -> [WLanes; 3] {
    let mut r = [[0.0f32; WL]; 3];
    for l in 0..WL {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (s12, d12, s34, d34) = (m1 + m2, m2 - m1, m3 + m4, m3 - m4);
        r[0][l] = 0.25 * m0 - s12 / 6.0 + s34 / 24.0;
        r[1][l] = d12 / 6.0 + d34 / 12.0;
        r[2][l] = (s34 - s12) / 6.0 + m5;
    }
    r
}

/// Tile geometry of the Winograd weight gradient (4x4 tiles of the output gradient).
#[derive(Debug, Clone, Copy)]
struct WinoDw {
    out_h: usize,
    out_w: usize,
    th: usize,
    tw: usize,
}

impl WinoDw {
    fn new(p: &Conv2dParams) -> Result<Self> {
        let (out_h, out_w) = (p.out_h()?, p.out_w()?);
        Ok(Self {
            out_h,
            out_w,
            th: out_h.div_ceil(4),
            tw: out_w.div_ceil(4),
        })
    }

    fn tiles(&self, n: usize) -> usize {
        n * self.th * self.tw
    }
}

/// `V[xi][ti][c] = (B^T d B)[xi]` of the 6x6 input tiles and `W[xi][ti][o] = (A e A^T)[xi]`
/// of the 4x4 output-gradient tiles of tiles `[t0, t0 + mt)`; `V` rows have `c_in` values,
/// `W` rows `c_out`, and `xi` blocks hold `tb` rows.
#[allow(clippy::too_many_arguments)]
fn wino_dw_transforms(
    p: &Conv2dParams,
    g: &WinoDw,
    x: &[f32],
    dy: &[f32],
    t0: usize,
    mt: usize,
    tb: usize,
    v: &mut [f32],
    w: &mut [f32],
) {
    let (ci, co) = (p.c_in, p.c_out);
    for ti in 0..mt {
        let t = t0 + ti;
        let nb = t / (g.th * g.tw);
        let (ty, tx) = ((t / g.tw) % g.th, t % g.tw);
        // Input tile rows/cols start at 4 * ty - top (may be outside: zeros).
        let ih0 = (4 * ty) as isize - p.padding.top as isize;
        let iw0 = (4 * tx) as isize - p.padding.left as isize;
        for c0 in (0..ci).step_by(WL) {
            let c1 = (c0 + WL).min(ci);
            let mut d = [[0.0f32; WL]; 36];
            for i in 0..6 {
                let ih = ih0 + i as isize;
                if ih < 0 || ih >= p.h as isize {
                    continue;
                }
                for j in 0..6 {
                    let iw = iw0 + j as isize;
                    if iw < 0 || iw >= p.w as isize {
                        continue;
                    }
                    let s = ((nb * p.h + ih as usize) * p.w + iw as usize) * ci;
                    d[i * 6 + j] = wl_load(&x[s + c0..s + c1]);
                }
            }
            let mut tmp = [[0.0f32; WL]; 36];
            for j in 0..6 {
                let r = wino_bt([d[j], d[6 + j], d[12 + j], d[18 + j], d[24 + j], d[30 + j]]);
                for (i, ri) in r.iter().enumerate() {
                    tmp[i * 6 + j] = *ri;
                }
            }
            for i in 0..6 {
                let row = [
                    tmp[i * 6],
                    tmp[i * 6 + 1],
                    tmp[i * 6 + 2],
                    tmp[i * 6 + 3],
                    tmp[i * 6 + 4],
                    tmp[i * 6 + 5],
                ];
                for (j, rj) in wino_bt(row).iter().enumerate() {
                    let o = ((i * 6 + j) * tb + ti) * ci;
                    wl_store(&mut v[o + c0..o + c1], rj);
                }
            }
        }
        for c0 in (0..co).step_by(WL) {
            let c1 = (c0 + WL).min(co);
            let mut e = [[0.0f32; WL]; 16];
            for a in 0..4 {
                let oh = 4 * ty + a;
                if oh >= g.out_h {
                    continue;
                }
                for b in 0..4 {
                    let ow = 4 * tx + b;
                    if ow >= g.out_w {
                        continue;
                    }
                    let s = ((nb * g.out_h + oh) * g.out_w + ow) * co;
                    e[a * 4 + b] = wl_load(&dy[s + c0..s + c1]);
                }
            }
            let mut tmp = [[0.0f32; WL]; 24];
            for b in 0..4 {
                let r = wino_a([e[b], e[4 + b], e[8 + b], e[12 + b]]);
                for (i, ri) in r.iter().enumerate() {
                    tmp[i * 4 + b] = *ri;
                }
            }
            for i in 0..6 {
                let row = [tmp[i * 4], tmp[i * 4 + 1], tmp[i * 4 + 2], tmp[i * 4 + 3]];
                for (j, rj) in wino_a(row).iter().enumerate() {
                    let o = ((i * 6 + j) * tb + ti) * co;
                    wl_store(&mut w[o + c0..o + c1], rj);
                }
            }
        }
    }
}

/// `M[xi] = sum_t W[xi][t]^T V[xi][t]` (`[36][c_out][c_in]`, overwritten) over tiles
/// `[t_lo, t_hi)`, in blocks of at most [`WINO_DW_FLOATS`] transformed floats.
#[allow(clippy::too_many_arguments)]
fn wino_dw_range(
    p: &Conv2dParams,
    g: &WinoDw,
    x: &[f32],
    dy: &[f32],
    t_lo: usize,
    t_hi: usize,
    m: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    let (ci, co) = (p.c_in, p.c_out);
    let tb = (WINO_DW_FLOATS / (36 * (ci + co)))
        .clamp(16, 1024)
        .min(t_hi - t_lo);
    let mut v = vec![0.0f32; 36 * tb * ci];
    let mut w = vec![0.0f32; 36 * tb * co];
    let mut tmp = vec![0.0f32; co * ci];
    for b0 in (t_lo..t_hi).step_by(tb) {
        let mt = tb.min(t_hi - b0);
        wino_dw_transforms(p, g, x, dy, b0, mt, tb, &mut v, &mut w);
        let sp = SgemmParams {
            mm: MatmulParams {
                transpose_a: true,
                ..MatmulParams::new(co, ci, mt)
            },
            activation: None,
            threads: 1,
        };
        for xi in 0..36 {
            let a = &w[xi * tb * co..xi * tb * co + mt * co];
            let b = &v[xi * tb * ci..xi * tb * ci + mt * ci];
            let mx = &mut m[xi * co * ci..(xi + 1) * co * ci];
            if b0 == t_lo {
                gemm(&sp, a, b, None, mx)?;
            } else {
                gemm(&sp, a, b, None, &mut tmp)?;
                add_into(mx, &tmp);
            }
        }
    }
    Ok(())
}

/// The weight gradient of a 3x3 stride-1 convolution by Winograd F(4x4, 3x3), the adjoint of
/// the forward transform: `dW = G^T [ sum_tiles (B^T d B) . (A dy A^T) ] G`, the sum over
/// tiles being 36 GEMMs `[c_out, tiles] x [tiles, c_in]` (2.25 instead of 9 multiplies per
/// output pixel and channel pair). Threads take contiguous tile ranges with private `M`
/// partials, summed in thread order (deterministic for a given thread count). Relative error
/// <= [`crate::winograd::WINOGRAD_TOL`] (measured ~1e-6). Measured 2026-11-26 (Zen 4, AVX2
/// tier, 1 thread, 56x56 3x3 64->64 pad 1, with `db`): im2col + GEMM 3.06 ms (76 GFLOP/s),
/// this 1.63-1.72 ms (134-142 GFLOP/s direct-equivalent).
fn wino_grad_weight(
    p: &Conv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    let g = WinoDw::new(p)?;
    let (ci, co) = (p.c_in, p.c_out);
    let tiles = g.tiles(p.n);
    let flops = conv_flops(p.n * g.out_h * g.out_w, 9 * ci, co);
    let threads = if flops >= PAR_MIN_FLOPS {
        threads.max(1).min(tiles.div_ceil(24)).max(1)
    } else {
        1
    };
    let mlen = 36 * co * ci;
    let mut m = vec![0.0f32; mlen];
    if threads <= 1 {
        wino_dw_range(p, &g, x, dy, 0, tiles, &mut m, gemm)?;
    } else {
        let per = tiles.div_ceil(threads);
        let parts = par_map(threads, threads, |t| -> Result<Vec<f32>> {
            let (lo, hi) = ((t * per).min(tiles), ((t + 1) * per).min(tiles));
            let mut part = vec![0.0f32; mlen];
            if lo < hi {
                wino_dw_range(p, &g, x, dy, lo, hi, &mut part, gemm)?;
            }
            Ok(part)
        })?;
        for part in parts {
            add_into(&mut m, &part?);
        }
    }
    // dW[o, ki, kj, i] = (G^T M[., ., o, i] G)[ki, kj].
    let plane = co * ci;
    for o in 0..co {
        for c0 in (0..ci).step_by(WL) {
            let c1 = (c0 + WL).min(ci);
            let at = |xi: usize| wl_load(&m[xi * plane + o * ci + c0..xi * plane + o * ci + c1]);
            let mut tmp = [[[0.0f32; WL]; 6]; 3];
            for j in 0..6 {
                let r = wino_gt([
                    at(j),
                    at(6 + j),
                    at(12 + j),
                    at(18 + j),
                    at(24 + j),
                    at(30 + j),
                ]);
                for (tk, rk) in tmp.iter_mut().zip(r) {
                    tk[j] = rk;
                }
            }
            for (ki, row) in tmp.iter().enumerate() {
                for (kj, rj) in wino_gt(*row).iter().enumerate() {
                    let s = ((o * 3 + ki) * 3 + kj) * ci;
                    wl_store(&mut dw[s + c0..s + c1], rj);
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
    use crate::testutil::{assert_close, rng};

    const CIG: [usize; 6] = [1, 3, 7, 13, 17, 33];
    const KERNELS: [(usize, usize); 5] = [(1, 1), (3, 3), (5, 3), (3, 5), (1, 3)];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    /// A random valid convolution: ragged channel counts, 1-3 groups, stride 1-3, dilation
    /// 1-2, SAME / random asymmetric / zero / fixed asymmetric padding; every 6th case is a
    /// pointwise one (the one-GEMM path).
    pub(crate) fn random_params(r: &mut crate::rng::Rng, case: usize) -> Conv2dParams {
        loop {
            let groups = 1 + case % 3;
            let (kh, kw) = KERNELS[r.range(0, KERNELS.len() - 1)];
            let (h, w) = (r.range(1, 11), r.range(1, 11));
            let (sh, sw) = (r.range(1, 3), r.range(1, 3));
            let (dh, dw) = (r.range(1, 2), r.range(1, 2));
            let padding = match case % 4 {
                0 => Padding2d::same((h, w), (kh, kw), (sh, sw), (dh, dw)),
                1 => Padding2d::new(r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)),
                2 => Padding2d::ZERO,
                _ => Padding2d::new(1, 0, 0, 2),
            };
            let cig = CIG[r.range(0, CIG.len() - 1)];
            let cog = CIG[r.range(0, CIG.len() - 1)];
            let mut p = Conv2dParams {
                n: r.range(1, 2),
                h,
                w,
                c_in: groups * cig,
                c_out: groups * cog,
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dilation_h: dh,
                dilation_w: dw,
                padding,
                groups,
            };
            if case % 6 == 5 {
                p = Conv2dParams {
                    kh: 1,
                    kw: 1,
                    stride_h: 1,
                    stride_w: 1,
                    padding: Padding2d::ZERO,
                    groups: 1,
                    c_in: cig,
                    c_out: cog,
                    ..p
                };
            }
            if p.validate().is_ok() {
                return p;
            }
        }
    }

    type DxTier = (&'static str, Conv2dGradInputFn);
    type DwTier = (&'static str, Conv2dGradWeightFn);

    fn dx_tiers() -> Vec<DxTier> {
        let mut t: Vec<DxTier> = vec![
            ("reference", Kernels::reference().conv2d_grad_input),
            ("portable", Kernels::portable().conv2d_grad_input),
            ("best", Kernels::best().conv2d_grad_input),
            ("dispatched", conv2d_grad_input_fast),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", conv2d_grad_input_avx2));
        }
        t
    }

    fn dw_tiers() -> Vec<DwTier> {
        let mut t: Vec<DwTier> = vec![
            ("reference", Kernels::reference().conv2d_grad_weight),
            ("portable", Kernels::portable().conv2d_grad_weight),
            ("best", Kernels::best().conv2d_grad_weight),
            ("dispatched", conv2d_grad_weight_fast),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", conv2d_grad_weight_avx2));
        }
        t
    }

    /// The sgemm tiers, for calling the drivers with threading forced on small shapes.
    fn gemms() -> Vec<(&'static str, SgemmFn)> {
        let mut t: Vec<(&'static str, SgemmFn)> = vec![("portable", crate::portable::sgemm::sgemm)];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", crate::x86_64::sgemm_avx2::sgemm));
        }
        t
    }

    /// The f64 oracle's `(dx, dw, db)` for f32 data.
    fn oracle(
        p: &Conv2dParams,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (x, w, dy) = (f64s(x), f64s(w), f64s(dy));
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; p.c_out];
        conv2d_grad_input(*p, &dy, &w, &mut dx).unwrap();
        conv2d_grad_weight(*p, &x, &dy, &mut dw).unwrap();
        conv2d_grad_bias(*p, &dy, &mut db).unwrap();
        (dx, dw, db)
    }

    /// Checks every tier (threads 1 and 2) and the drivers with threading forced (2 and 3
    /// workers) on `p` against the oracle.
    fn check_all(p: &Conv2dParams, r: &mut crate::rng::Rng, ran: &mut Vec<&'static str>) {
        let x = rand_f32(r, p.x_len().unwrap());
        let w = rand_f32(r, p.w_len().unwrap());
        let dy = rand_f32(r, p.y_len().unwrap());
        let (want_dx, want_dw, want_db) = oracle(p, &x, &w, &dy);
        let tol = 1e-5;
        for threads in [1, 2] {
            for (name, f) in dx_tiers() {
                let mut dx = vec![f32::NAN; want_dx.len()];
                f(p, &dy, &w, threads, &mut dx).unwrap();
                assert_close(
                    &format!("dx/{name}/t{threads}/{p:?}"),
                    &f64s(&dx),
                    &want_dx,
                    tol,
                );
                if !ran.contains(&name) {
                    ran.push(name);
                }
            }
            for (name, f) in dw_tiers() {
                let mut dw = vec![f32::NAN; want_dw.len()];
                let mut db = vec![f32::NAN; p.c_out];
                f(p, &x, &dy, threads, &mut dw, Some(&mut db)).unwrap();
                assert_close(
                    &format!("dw/{name}/t{threads}/{p:?}"),
                    &f64s(&dw),
                    &want_dw,
                    tol,
                );
                assert_close(
                    &format!("db/{name}/t{threads}/{p:?}"),
                    &f64s(&db),
                    &want_db,
                    tol,
                );
                let mut dw2 = vec![f32::NAN; want_dw.len()];
                f(p, &x, &dy, threads, &mut dw2, None).unwrap();
                assert_close(&format!("dw/{name}/nodb/{p:?}"), &f64s(&dw2), &want_dw, tol);
            }
        }
        for (name, gemm) in gemms() {
            for threads in [2, 3] {
                let mut dx = vec![f32::NAN; want_dx.len()];
                col2im_driver(p, &dy, &w, None, None, threads, &mut dx, gemm, 0).unwrap();
                assert_close(
                    &format!("dx/{name}/forced t{threads}/{p:?}"),
                    &f64s(&dx),
                    &want_dx,
                    tol,
                );
                let mut dw = vec![f32::NAN; want_dw.len()];
                grad_weight_driver(p, &x, &dy, threads, &mut dw, gemm, 0).unwrap();
                assert_close(
                    &format!("dw/{name}/forced t{threads}/{p:?}"),
                    &f64s(&dw),
                    &want_dw,
                    tol,
                );
            }
        }
    }

    #[test]
    fn grads_match_reference_on_random_convs() {
        let mut r = rng("conv2d_grad_random");
        let mut ran = Vec::new();
        for case in 0..36 {
            let p = random_params(&mut r, case);
            check_all(&p, &mut r, &mut ran);
        }
        println!("conv2d_grad tiers run: {ran:?}");
    }

    #[test]
    fn grads_match_reference_on_multi_block_shapes() {
        let mut r = rng("conv2d_grad_blocks");
        let mut ran = Vec::new();
        let base = Conv2dParams {
            n: 2,
            h: 29,
            w: 23,
            c_in: 6,
            c_out: 10,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::symmetric(1, 1),
            groups: 2,
        };
        // Several column blocks per image, strided and dilated variants, and a pointwise one.
        for p in [
            base,
            Conv2dParams {
                stride_h: 2,
                stride_w: 3,
                groups: 1,
                ..base
            },
            Conv2dParams {
                dilation_h: 2,
                kh: 5,
                padding: Padding2d::new(3, 1, 0, 2),
                ..base
            },
            Conv2dParams {
                kh: 1,
                kw: 1,
                padding: Padding2d::ZERO,
                groups: 1,
                ..base
            },
        ] {
            check_all(&p, &mut r, &mut ran);
        }
        println!("conv2d_grad tiers run: {ran:?}");
    }

    /// Stride-1 3x3 layers large enough for the Winograd input and weight gradients (symmetric, asymmetric
    /// and SAME padding, ragged channels, batch 2), every tier, threads 1 and 2; plus the
    /// flipped-weights identity itself through the im2col plan at 1e-5.
    #[test]
    fn winograd_input_gradient_matches_reference() {
        let mut r = rng("conv2d_grad_winograd");
        let mut worst = 0.0f64;
        for (n, h, w, ci, co, pad) in [
            (1, 33, 35, 20, 24, Padding2d::symmetric(1, 1)),
            (2, 23, 29, 17, 33, Padding2d::new(0, 2, 1, 0)),
            (1, 40, 31, 13, 16, Padding2d::ZERO),
        ] {
            let p = Conv2dParams {
                n,
                h,
                w,
                c_in: ci,
                c_out: co,
                kh: 3,
                kw: 3,
                stride_h: 1,
                stride_w: 1,
                dilation_h: 1,
                dilation_w: 1,
                padding: pad,
                groups: 1,
            };
            let p2 = flipped_params(&p).unwrap();
            assert!(crate::conv2d::one_shot_winograd(&p2), "{p:?}");
            let x = rand_f32(&mut r, p.x_len().unwrap());
            let wt = rand_f32(&mut r, p.w_len().unwrap());
            let dy = rand_f32(&mut r, p.y_len().unwrap());
            assert!(crate::conv2d::one_shot_winograd(&p), "{p:?}");
            let (want_dx, want_dw, want_db) = oracle(&p, &x, &wt, &dy);
            let w2 = flip_weights(&p, &wt);
            for tier in [Tier::Portable, Tier::Best] {
                let plan =
                    Conv2dPlan::with_algo(tier, Conv2dAlgo::Im2col, &p2, &w2, None, None).unwrap();
                let mut dx = vec![f32::NAN; want_dx.len()];
                plan.run(&dy, 2, &mut dx).unwrap();
                assert_close(
                    &format!("flipped im2col {tier:?} {p:?}"),
                    &f64s(&dx),
                    &want_dx,
                    1e-5,
                );
            }
            for threads in [1, 2] {
                for (name, f) in dx_tiers() {
                    let mut dx = vec![f32::NAN; want_dx.len()];
                    f(&p, &dy, &wt, threads, &mut dx).unwrap();
                    let what = format!("winograd dx/{name}/t{threads}/{p:?}");
                    assert_close(&what, &f64s(&dx), &want_dx, crate::winograd::WINOGRAD_TOL);
                    worst = worst.max(crate::testutil::rel_l2(&f64s(&dx), &want_dx));
                }
                for (name, f) in dw_tiers() {
                    let mut dw = vec![f32::NAN; want_dw.len()];
                    let mut db = vec![f32::NAN; p.c_out];
                    f(&p, &x, &dy, threads, &mut dw, Some(&mut db)).unwrap();
                    let what = format!("winograd dw/{name}/t{threads}/{p:?}");
                    assert_close(&what, &f64s(&dw), &want_dw, crate::winograd::WINOGRAD_TOL);
                    assert_close(&what, &f64s(&db), &want_db, 1e-5);
                    worst = worst.max(crate::testutil::rel_l2(&f64s(&dw), &want_dw));
                }
            }
        }
        println!("winograd input / weight gradients: worst rel err {worst:.1e}");
    }

    /// The benchmark layer, 1x56x56x64 -> 64, 3x3, pad 1, on the threaded path.
    #[test]
    fn benchmark_layer_matches_reference() {
        let mut r = rng("conv2d_grad_bench_layer");
        let p = bench_layer();
        let x = rand_f32(&mut r, p.x_len().unwrap());
        let w = rand_f32(&mut r, p.w_len().unwrap());
        let dy = rand_f32(&mut r, p.y_len().unwrap());
        let (want_dx, want_dw, want_db) = oracle(&p, &x, &w, &dy);
        for threads in [1, 2] {
            let mut dx = vec![f32::NAN; want_dx.len()];
            conv2d_grad_input_fast(&p, &dy, &w, threads, &mut dx).unwrap();
            let tol = crate::winograd::WINOGRAD_TOL;
            assert_close(&format!("bench dx t{threads}"), &f64s(&dx), &want_dx, tol);
            let mut dw = vec![f32::NAN; want_dw.len()];
            let mut db = vec![f32::NAN; p.c_out];
            conv2d_grad_weight_fast(&p, &x, &dy, threads, &mut dw, Some(&mut db)).unwrap();
            // Winograd (dx, dw): its stated bound; measured ~1e-6.
            let tol = crate::winograd::WINOGRAD_TOL;
            assert_close(&format!("bench dw t{threads}"), &f64s(&dw), &want_dw, tol);
            assert_close(&format!("bench db t{threads}"), &f64s(&db), &want_db, 1e-5);
        }
        println!("benchmark layer checked on {:?}", kernels_used());
    }

    fn kernels_used() -> (&'static str, &'static str) {
        let k = crate::dispatch::kernels();
        (k.conv2d_grad_input_impl, k.conv2d_grad_weight_impl)
    }

    fn bench_layer() -> Conv2dParams {
        Conv2dParams {
            n: 1,
            h: 56,
            w: 56,
            c_in: 64,
            c_out: 64,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::symmetric(1, 1),
            groups: 1,
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
        let dy = vec![1.0f32; 12];
        let mut dx = vec![0.0f32; 32];
        let mut dw = vec![0.0f32; 54];
        let mut db = vec![0.0f32; 3];
        for (name, f) in dx_tiers() {
            assert!(f(&p, &dy, &w, 1, &mut dx).is_ok(), "{name}");
            assert!(f(&p, &dy[..11], &w, 1, &mut dx).is_err(), "{name}");
            assert!(f(&p, &dy, &w[..53], 1, &mut dx).is_err(), "{name}");
            assert!(f(&p, &dy, &w, 1, &mut dx[..31]).is_err(), "{name}");
            let bad = Conv2dParams { groups: 2, ..p };
            assert!(f(&bad, &dy, &w, 1, &mut dx).is_err(), "{name}");
            let bad = Conv2dParams { stride_w: 0, ..p };
            assert!(f(&bad, &dy, &w, 1, &mut dx).is_err(), "{name}");
            let bad = Conv2dParams {
                n: usize::MAX / 2,
                ..p
            };
            assert!(f(&bad, &dy, &w, 1, &mut dx).is_err(), "{name}");
        }
        for (name, f) in dw_tiers() {
            assert!(f(&p, &x, &dy, 1, &mut dw, Some(&mut db)).is_ok(), "{name}");
            assert!(f(&p, &x[..31], &dy, 1, &mut dw, None).is_err(), "{name}");
            assert!(f(&p, &x, &dy[..11], 1, &mut dw, None).is_err(), "{name}");
            assert!(f(&p, &x, &dy, 1, &mut dw[..53], None).is_err(), "{name}");
            assert!(
                f(&p, &x, &dy, 1, &mut dw, Some(&mut db[..2])).is_err(),
                "{name}"
            );
            let bad = Conv2dParams { kh: 5, ..p };
            assert!(f(&bad, &x, &dy, 1, &mut dw, None).is_err(), "{name}");
        }
    }

    /// Timing of the benchmark layer (not a correctness test):
    /// `cargo test --release -p spore-kernels-cpu conv2d_grad::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let mut r = rng("conv2d_grad_timing");
        let p = bench_layer();
        let x = rand_f32(&mut r, p.x_len().unwrap());
        let w = rand_f32(&mut r, p.w_len().unwrap());
        let dy = rand_f32(&mut r, p.y_len().unwrap());
        let mut y = vec![0.0f32; dy.len()];
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; w.len()];
        let mut db = vec![0.0f32; p.c_out];
        let flops = 2.0 * (56.0 * 56.0) * 576.0 * 64.0;
        let best = |f: &mut dyn FnMut()| {
            f();
            (0..40)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        println!("kernels: {:?}", crate::dispatch::kernels().describe());
        for threads in [1, 2] {
            let tf = best(&mut || {
                crate::conv2d::conv2d_fast(&p, &x, &w, None, None, threads, &mut y).unwrap()
            });
            let tdx = best(&mut || conv2d_grad_input_fast(&p, &dy, &w, threads, &mut dx).unwrap());
            let tdw = best(&mut || {
                conv2d_grad_weight_fast(&p, &x, &dy, threads, &mut dw, Some(&mut db)).unwrap()
            });
            let total = tf + tdx + tdw;
            println!(
                "threads {threads}: fwd {:.2} ms {:.1} GFLOP/s | dx {:.2} ms {:.1} GFLOP/s | \
                 dw+db {:.2} ms {:.1} GFLOP/s | fwd+bwd {:.2} ms {:.1} GFLOP/s",
                tf * 1e3,
                flops / tf / 1e9,
                tdx * 1e3,
                flops / tdx / 1e9,
                tdw * 1e3,
                flops / tdw / 1e9,
                total * 1e3,
                3.0 * flops / total / 1e9
            );
        }
        let tp = best(&mut || conv2d_grad_input_portable(&p, &dy, &w, 1, &mut dx).unwrap());
        let tpw = best(&mut || {
            conv2d_grad_weight_portable(&p, &x, &dy, 1, &mut dw, Some(&mut db)).unwrap()
        });
        println!(
            "portable tier, 1 thread: dx {:.1} GFLOP/s, dw+db {:.1} GFLOP/s",
            flops / tp / 1e9,
            flops / tpw / 1e9
        );
        // A decoder-style transposed convolution: 28x28x128 -> 56x56x64, 3x3, stride 2.
        let tp = crate::reference::conv_transpose2d::ConvTranspose2dParams {
            n: 1,
            h: 28,
            w: 28,
            c_in: 128,
            c_out: 64,
            kh: 3,
            kw: 3,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::symmetric(1, 1),
            output_padding_h: 1,
            output_padding_w: 1,
            groups: 1,
        };
        let tx = rand_f32(&mut r, tp.x_len().unwrap());
        let tw = rand_f32(&mut r, tp.w_len().unwrap());
        let tb = rand_f32(&mut r, 64);
        let mut ty = vec![0.0f32; tp.y_len().unwrap()];
        let tflops = 2.0 * (28.0 * 28.0 * 128.0) * 9.0 * 64.0;
        for threads in [1, 2] {
            let t = best(&mut || {
                crate::conv_transpose2d::conv_transpose2d_fast(
                    &tp,
                    &tx,
                    &tw,
                    Some(&tb),
                    Some(Activation::Relu),
                    threads,
                    &mut ty,
                )
                .unwrap()
            });
            println!(
                "conv_transpose2d 28x28x128->56x56x64 s2 +bias+relu, threads {threads}: \
                 {:.2} ms {:.1} GFLOP/s",
                t * 1e3,
                tflops / t / 1e9
            );
        }
        let t = std::time::Instant::now();
        conv2d_grad_input(p, &dy, &w, &mut dx).unwrap();
        let tref = t.elapsed().as_secs_f64();
        println!(
            "reference dx: {:.1} ms {:.2} GFLOP/s",
            tref * 1e3,
            flops / tref / 1e9
        );
    }
}
