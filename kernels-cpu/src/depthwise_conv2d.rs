//! The tuned depthwise convolution (NHWC input, `[kh, kw, c_in * multiplier]` weights, see
//! [`DepthwiseConv2dParams`]) with a fused bias + activation epilogue, and its input and weight
//! (+ bias) gradients: the safe entry points, validation, the reference and portable tiers, and
//! the shared drivers the AVX2 tier (`x86_64::depthwise_avx2`) plugs into.
//!
//! Forward, per output row `(n, oh)` (threads split the rows):
//! * multiplier 1: the interior columns (every horizontal tap inside the input) run as
//!   register blocks of several output columns x 8 channels, so one loaded weight vector
//!   feeds several FMAs; the AVX2 tier replaces this with intrinsics kernels specialised for
//!   3x3 / 5x5 at stride 1 / 2 when every vertical tap is inside too.
//! * border columns, the ragged channel tail (`c % 8`) and multiplier > 1: a per-pixel
//!   general path accumulating in the output row (vectorised over channels).
//! * the bias seeds the accumulators; the activation runs over the finished row while it is
//!   still in L1 (in f32 for ReLU / ReLU6 / leaky ReLU, through the f64 oracle otherwise).
//!
//! Grad input: with multiplier 1, stride 1 and padding no larger than the dilated kernel it is
//! exactly the forward kernel on `dy` with the kernel flipped (and padding mirrored), so it
//! reuses the fast forward paths; otherwise a direct gather per input pixel over its valid
//! `(tap, output)` pairs, 32 channels per block (4 independent FMA chains).
//! Grad weight (+ bias): `par_map` tasks over output rows, each filling its own
//! `[kh*kw*c_out + c_out]` partial sum, added in task order (deterministic for a given thread
//! count); per (row, tap, 8 channels) four accumulators run along the output columns.
//!
//! The generic bodies here are `#[inline(always)]` and take `const FMA: bool`, so the AVX2
//! tier compiles the very same code inside an `avx2,fma` function (multiversioning) with
//! fused multiply-adds, while the portable tier uses plain `a * b + c`.

use crate::error::{KernelError, Result, check_len};
use crate::parallel::{par_chunks_mut, par_map};
use crate::reference::activation::Activation;
use crate::reference::depthwise_conv2d::{
    depthwise_conv2d, depthwise_conv2d_grad_bias, depthwise_conv2d_grad_input,
    depthwise_conv2d_grad_weight,
};
use crate::reference::window::{Padding2d, Window1d, Window2d};

pub use crate::reference::depthwise_conv2d::DepthwiseConv2dParams;

const KERNEL: &str = "depthwise_conv2d";

/// Below this many flops (`2 * y_len * kh * kw`) a call runs on the calling thread. Measured
/// 2026-11-25 (Zen 4, AVX2 tier, 3x3 s1, best of 2000, threshold off; `bench_small`):
/// 0.23 MFLOP 1t 5.6 us / 2t 9.4 us, 0.45 MFLOP 9.9 / 11.5, 0.9 MFLOP 17.9 / 15.2,
/// 1.8 MFLOP 32.4 / 21.8: the crossover is just under 1 MFLOP.
pub const PAR_MIN_FLOPS: usize = 1 << 20;

/// Channels per tile in the weight gradient, so the x and dy row slices every tap re-reads
/// stay in L1 (a whole 56-wide row of 144 channels is 32 KiB, Zen 4's L1d).
const GW_TILE: usize = 64;

/// Output columns summed in f32 before the weight gradient is flushed into its f64 partial.
const GW_FLUSH_COLS: usize = 64;

/// Output columns per register block in the generic interior kernel.
const R_GENERIC: usize = 4;

/// The signature of a forward depthwise implementation (a [`crate::dispatch::Kernels`] slot):
/// `(params, x, w, bias, activation, threads, y)`.
pub type DepthwiseConv2dFn = fn(
    &DepthwiseConv2dParams,
    &[f32],
    &[f32],
    Option<&[f32]>,
    Option<Activation>,
    usize,
    &mut [f32],
) -> Result<()>;

/// The signature of a grad-input implementation: `(params, w, dy, threads, dx)`; overwrites
/// `dx`.
pub type DepthwiseConv2dGradInputFn =
    fn(&DepthwiseConv2dParams, &[f32], &[f32], usize, &mut [f32]) -> Result<()>;

/// The signature of a grad-weight implementation: `(params, x, dy, threads, dw, db)`;
/// overwrites `dw` and, when given, `db` (`dy` summed over `n, out_h, out_w`).
pub type DepthwiseConv2dGradWeightFn =
    fn(&DepthwiseConv2dParams, &[f32], &[f32], usize, &mut [f32], Option<&mut [f32]>) -> Result<()>;

/// `y = act(depthwise_conv2d(x, w) + bias)` with the best implementation this CPU supports
/// (or the tier `SPORE_CPU_KERNELS` forces), on up to `threads` threads (0 is treated as 1).
/// `x` is `[n, h, w, c_in]`, `w` `[kh, kw, c_in * multiplier]`, `bias` `[c_in * multiplier]`,
/// `y` `[n, out_h, out_w, c_in * multiplier]`. Checks every length first; never panics.
pub fn depthwise_conv2d_fast(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    (crate::dispatch::kernels().depthwise_conv2d)(p, x, w, bias, act, threads, y)
}

/// `dx = d(sum(dy * y)) / dx` through the dispatch table (see [`DepthwiseConv2dGradInputFn`]).
pub fn depthwise_conv2d_grad_input_fast(
    p: &DepthwiseConv2dParams,
    w: &[f32],
    dy: &[f32],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    (crate::dispatch::kernels().depthwise_conv2d_grad_input)(p, w, dy, threads, dx)
}

/// `dw` (and optionally `db`) through the dispatch table (see [`DepthwiseConv2dGradWeightFn`]).
pub fn depthwise_conv2d_grad_weight_fast(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    (crate::dispatch::kernels().depthwise_conv2d_grad_weight)(p, x, dy, threads, dw, db)
}

/// Geometry derived once per call from validated parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    /// The parameters.
    pub(crate) p: DepthwiseConv2dParams,
    /// The sliding window.
    pub(crate) win: Window2d,
    /// Output height.
    pub(crate) out_h: usize,
    /// Output width.
    pub(crate) out_w: usize,
    /// Output channels, `c_in * multiplier`.
    pub(crate) c_out: usize,
    /// First output column whose every horizontal tap is inside the input.
    pub(crate) ow_lo: usize,
    /// One past the last such column (`ow_hi >= ow_lo`; equal when there is none).
    pub(crate) ow_hi: usize,
}

/// Output positions `[lo, hi)` along one axis whose every tap reads a real input cell.
fn interior(win: &Window1d, out: usize) -> (usize, usize) {
    let lo = win.pad_before.div_ceil(win.stride).min(out);
    // Validated: `input + pad_before` and the dilated span do not overflow.
    let span = (win.kernel - 1) * win.dilation;
    let hi = (win.input - 1 + win.pad_before)
        .checked_sub(span)
        .map_or(0, |v| (v / win.stride + 1).min(out));
    (lo, hi.max(lo))
}

impl Geom {
    /// Validates `p` and derives the geometry.
    pub(crate) fn new(p: &DepthwiseConv2dParams) -> Result<Self> {
        p.validate()?;
        let win = p.window();
        let (out_h, out_w) = (p.out_h()?, p.out_w()?);
        let (ow_lo, ow_hi) = interior(&win.w, out_w);
        Ok(Self {
            p: *p,
            win,
            out_h,
            out_w,
            c_out: p.c_out()?,
            ow_lo,
            ow_hi,
        })
    }

    /// `2 * y_len * kh * kw`, saturating.
    fn flops(&self) -> usize {
        [
            self.p.n, self.out_h, self.out_w, self.c_out, self.p.kh, self.p.kw,
        ]
        .iter()
        .fold(2usize, |a, &d| a.saturating_mul(d))
    }

    /// Threads worth using for this problem size.
    fn threads(&self, threads: usize) -> usize {
        if self.flops() >= PAR_MIN_FLOPS {
            threads.max(1)
        } else {
            1
        }
    }
}

/// Checks the forward arguments and derives the geometry.
fn validate_fwd(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    y: &[f32],
) -> Result<Geom> {
    let g = Geom::new(p)?;
    check_len(KERNEL, "x", p.x_len()?, x.len())?;
    check_len(KERNEL, "w", p.w_len()?, w.len())?;
    check_len(KERNEL, "y", p.y_len()?, y.len())?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", g.c_out, b.len())?;
    }
    if let Some(a) = act {
        a.validate(KERNEL)?;
    }
    Ok(g)
}

/// The error an ISA tier returns on a CPU without its features.
pub(crate) fn no_cpu(kernel: &'static str) -> KernelError {
    KernelError::Param {
        kernel,
        param: "cpu",
        reason: "this CPU lacks AVX2 or FMA".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Reference tier.

/// The reference tier: the f64-accumulating oracle (bias included), then the activation in
/// f64. `threads` is ignored.
pub fn depthwise_conv2d_reference(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    _threads: usize,
    y: &mut [f32],
) -> Result<()> {
    validate_fwd(p, x, w, bias, act, y)?;
    depthwise_conv2d(*p, x, w, bias, y)?;
    if let Some(act) = act {
        y.iter_mut()
            .for_each(|v| *v = act.apply(f64::from(*v)) as f32);
    }
    Ok(())
}

/// Reference grad input (the oracle; `threads` ignored).
pub fn depthwise_conv2d_grad_input_reference(
    p: &DepthwiseConv2dParams,
    w: &[f32],
    dy: &[f32],
    _threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    depthwise_conv2d_grad_input(*p, dy, w, dx)
}

/// Reference grad weight and bias (the oracle; `threads` ignored).
pub fn depthwise_conv2d_grad_weight_reference(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    dy: &[f32],
    _threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    // Check `db` before writing anything, so an error leaves the outputs untouched.
    if let Some(db) = &db {
        check_len(KERNEL, "db", p.c_out()?, db.len())?;
    }
    depthwise_conv2d_grad_weight(*p, x, dy, dw)?;
    if let Some(db) = db {
        depthwise_conv2d_grad_bias(*p, dy, db)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Drivers shared by the portable and AVX2 tiers.

/// Computes output rows `first..` (flattened over `n, out_h`) into `y_rows`, whole rows.
pub(crate) type FwdRowsFn =
    fn(&Geom, &[f32], &[f32], Option<&[f32]>, Option<Activation>, usize, &mut [f32]);

/// Computes input-gradient rows `first..` (flattened over `n, h`) into `dx_rows`.
pub(crate) type GiRowsFn = fn(&Geom, &[f32], &[f32], usize, &mut [f32]);

/// Adds the weight (`[..w_len]`) and bias (`[w_len..]`) gradient of output rows `r0..r1`
/// into `part`.
pub(crate) type GwRowsFn = fn(&Geom, &[f32], &[f32], usize, usize, &mut [f64]);

/// The forward driver: validation, then rows split over threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive_fwd(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
    rows: FwdRowsFn,
) -> Result<()> {
    let g = validate_fwd(p, x, w, bias, act, y)?;
    let row_len = g.out_w * g.c_out;
    par_chunks_mut(y, row_len, g.threads(threads), |first, chunk| {
        rows(&g, x, w, bias, act, first, chunk);
        Ok(())
    })
}

/// The grad-input driver: the flipped-kernel forward where it applies, else direct rows.
pub(crate) fn drive_gi(
    p: &DepthwiseConv2dParams,
    w: &[f32],
    dy: &[f32],
    threads: usize,
    dx: &mut [f32],
    fwd: FwdRowsFn,
    gi: GiRowsFn,
) -> Result<()> {
    let g = Geom::new(p)?;
    check_len(KERNEL, "w", p.w_len()?, w.len())?;
    check_len(KERNEL, "dy", p.y_len()?, dy.len())?;
    check_len(KERNEL, "dx", p.x_len()?, dx.len())?;
    if let Some(q) = flipped_params(p) {
        let wf = flip_kernel(p, w);
        return drive_fwd(&q, dy, &wf, None, None, threads, dx, fwd);
    }
    let row_len = p.w * p.c_in;
    par_chunks_mut(dx, row_len, g.threads(threads), |first, chunk| {
        gi(&g, w, dy, first, chunk);
        Ok(())
    })
}

/// With multiplier 1, stride 1 and padding within the dilated kernel, grad input is the
/// forward depthwise convolution of `dy` with the flipped kernel and these parameters.
fn flipped_params(p: &DepthwiseConv2dParams) -> Option<DepthwiseConv2dParams> {
    if p.multiplier != 1 || p.stride_h != 1 || p.stride_w != 1 {
        return None;
    }
    let sh = (p.kh - 1).checked_mul(p.dilation_h)?;
    let sw = (p.kw - 1).checked_mul(p.dilation_w)?;
    let padding = Padding2d::new(
        sh.checked_sub(p.padding.top)?,
        sh.checked_sub(p.padding.bottom)?,
        sw.checked_sub(p.padding.left)?,
        sw.checked_sub(p.padding.right)?,
    );
    let q = DepthwiseConv2dParams {
        h: p.out_h().ok()?,
        w: p.out_w().ok()?,
        padding,
        ..*p
    };
    // Mirrored padding gives back exactly h x w; anything else would be a bug, so refuse it.
    (q.out_h().ok()? == p.h && q.out_w().ok()? == p.w).then_some(q)
}

/// `w` with both kernel axes reversed (channels stay innermost).
fn flip_kernel(p: &DepthwiseConv2dParams, w: &[f32]) -> Vec<f32> {
    let c = p.c_in * p.multiplier;
    let mut out = vec![0.0f32; w.len()];
    for (t, dst) in out.chunks_exact_mut(c).enumerate() {
        let (ki, kj) = (t / p.kw, t % p.kw);
        let s = ((p.kh - 1 - ki) * p.kw + (p.kw - 1 - kj)) * c;
        if let Some(src) = w.get(s..s + c) {
            dst.copy_from_slice(src);
        }
    }
    out
}

/// The grad-weight driver: per-task partial sums over output rows, added in task order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive_gw(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    gw: GwRowsFn,
) -> Result<()> {
    let g = Geom::new(p)?;
    check_len(KERNEL, "x", p.x_len()?, x.len())?;
    check_len(KERNEL, "dy", p.y_len()?, dy.len())?;
    check_len(KERNEL, "dw", p.w_len()?, dw.len())?;
    if let Some(db) = &db {
        check_len(KERNEL, "db", g.c_out, db.len())?;
    }
    let rows = p.n * g.out_h;
    let tasks = g.threads(threads).min(rows).max(1);
    let per = rows.div_ceil(tasks);
    let wl = dw.len();
    let parts = par_map(threads, tasks, |t| {
        let mut part = vec![0.0f64; wl + g.c_out];
        let r0 = (t * per).min(rows);
        gw(&g, x, dy, r0, (r0 + per).min(rows), &mut part);
        part
    })?;
    let mut sum = vec![0.0f64; wl + g.c_out];
    for part in &parts {
        sum.iter_mut().zip(part).for_each(|(d, s)| *d += s);
    }
    let (sw, sb) = sum.split_at(wl);
    dw.iter_mut().zip(sw).for_each(|(d, s)| *d = *s as f32);
    if let Some(db) = db {
        db.iter_mut().zip(sb).for_each(|(d, s)| *d = *s as f32);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Portable tier.

/// The portable tier: safe, autovectorised direct kernels.
pub fn depthwise_conv2d_portable(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    drive_fwd(p, x, w, bias, act, threads, y, portable_fwd_rows)
}

/// Portable grad input.
pub fn depthwise_conv2d_grad_input_portable(
    p: &DepthwiseConv2dParams,
    w: &[f32],
    dy: &[f32],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    drive_gi(p, w, dy, threads, dx, portable_fwd_rows, portable_gi_rows)
}

/// Portable grad weight (+ bias).
pub fn depthwise_conv2d_grad_weight_portable(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    drive_gw(p, x, dy, threads, dw, db, portable_gw_rows)
}

fn portable_fwd_rows(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    first: usize,
    y: &mut [f32],
) {
    fwd_rows::<false>(g, x, w, bias, act, first, y, None);
}

fn portable_gi_rows(g: &Geom, w: &[f32], dy: &[f32], first: usize, dx: &mut [f32]) {
    gi_rows::<false>(g, w, dy, first, dx, None);
}

fn portable_gw_rows(g: &Geom, x: &[f32], dy: &[f32], r0: usize, r1: usize, part: &mut [f64]) {
    gw_rows::<false>(g, x, dy, r0, r1, part, None);
}

// ---------------------------------------------------------------------------------------------
// Generic bodies (inlined into each tier).

/// `a * b + c`, fused when `FMA` (only inside functions compiled with the `fma` feature,
/// where `mul_add` is one instruction).
#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Eight floats from `s[i..i + 8]` (zeros if out of range, which callers never ask for).
#[inline(always)]
fn ld8(s: &[f32], i: usize) -> [f32; 8] {
    let mut v = [0.0f32; 8];
    if let Some(src) = s.get(i..i + 8) {
        v.copy_from_slice(src);
    }
    v
}

/// Stores eight floats at `s[i..i + 8]` (nothing if out of range).
#[inline(always)]
fn st8(s: &mut [f32], i: usize, v: &[f32; 8]) {
    if let Some(dst) = s.get_mut(i..i + 8) {
        dst.copy_from_slice(v);
    }
}

/// A handler for the interior columns of one output row, for channels `[0, c_full)`, that
/// returns whether it handled them (the AVX2 tier's specialised kernels).
pub(crate) type SpecialFn =
    fn(&Geom, &[f32], &[f32], Option<&[f32]>, usize, usize, &mut [f32], usize) -> bool;

/// Sums `dy[dyo + ch] * w[wo + ch]` over `pairs` into `dxpix[ch]` (multiplier 1, every
/// channel), returning whether it ran (the AVX2 tier's intrinsics version of [`gi_pixel`]).
pub(crate) type GiPixelFn = fn(&[(usize, usize)], &[f32], &[f32], &mut [f32]) -> bool;

/// One weight-gradient tap for channels `[0, c_full)`: adds
/// `sum_{j < cols} x[x0 + j * x_step + ch] * dy[dy0 + j * c + ch]` into `dwt[ch]`, where the
/// arguments are `(x, dy, x0, x_step, dy0, cols, c, c_full, dwt)`; returns whether it ran.
pub(crate) type GwTapFn =
    fn(&[f32], &[f32], usize, usize, usize, usize, usize, usize, &mut [f32]) -> bool;

/// The activation over a finished output row.
#[inline(always)]
pub(crate) fn epilogue(act: Option<Activation>, y: &mut [f32]) {
    match act {
        None => {}
        Some(Activation::Relu) => y
            .iter_mut()
            .for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 }),
        Some(Activation::Relu6) => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Some(Activation::LeakyRelu(alpha)) => {
            let a = alpha as f32;
            y.iter_mut()
                .for_each(|v| *v = if *v > 0.0 { *v } else { a * *v });
        }
        Some(act) => y
            .iter_mut()
            .for_each(|v| *v = act.apply(f64::from(*v)) as f32),
    }
}

/// Forward rows `first..` into `y` (whole rows of `out_w * c_out`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fwd_rows<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    first: usize,
    y: &mut [f32],
    special: Option<SpecialFn>,
) {
    let row_len = g.out_w * g.c_out;
    for (i, yrow) in y.chunks_exact_mut(row_len).enumerate() {
        let row = first + i;
        let (n, oh) = (row / g.out_h, row % g.out_h);
        fwd_row::<FMA>(g, x, w, bias, n, oh, yrow, special);
        epilogue(act, yrow);
    }
}

/// One output row `(n, oh)`, before the activation.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_row<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    oh: usize,
    yrow: &mut [f32],
    special: Option<SpecialFn>,
) {
    let c = g.c_out;
    let c_full = if g.p.multiplier == 1 { c & !7 } else { 0 };
    let blocked = c_full > 0 && g.ow_lo < g.ow_hi;
    if blocked {
        let done = special.is_some_and(|f| f(g, x, w, bias, n, oh, yrow, c_full));
        if !done {
            fwd_interior::<FMA>(g, x, w, bias, n, oh, yrow, c_full);
        }
    }
    for ow in 0..g.out_w {
        let c0 = if blocked && (g.ow_lo..g.ow_hi).contains(&ow) {
            c_full
        } else {
            0
        };
        if c0 < c
            && let Some(ypix) = yrow.get_mut(ow * c + c0..(ow + 1) * c)
        {
            fwd_pixel::<FMA>(g, x, w, bias, n, oh, ow, c0, ypix);
        }
    }
}

/// Interior columns of one output row, channels `[0, c_full)` (multiplier 1): register blocks
/// of `R_GENERIC` columns x 8 channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_interior<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    oh: usize,
    yrow: &mut [f32],
    c_full: usize,
) {
    let mut ow = g.ow_lo;
    while ow + R_GENERIC <= g.ow_hi {
        fwd_block::<FMA, R_GENERIC>(g, x, w, bias, n, oh, ow, yrow, c_full);
        ow += R_GENERIC;
    }
    while ow < g.ow_hi {
        fwd_block::<FMA, 1>(g, x, w, bias, n, oh, ow, yrow, c_full);
        ow += 1;
    }
}

/// Output columns `ow..ow + R` (all interior) of row `(n, oh)`, channels `[0, c_full)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_block<const FMA: bool, const R: usize>(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    oh: usize,
    ow: usize,
    yrow: &mut [f32],
    c_full: usize,
) {
    let p = &g.p;
    let c = g.c_out;
    let (sw, dw, left) = (p.stride_w, p.dilation_w, p.padding.left);
    let taps = g.win.h.taps(oh);
    for cb in (0..c_full).step_by(8) {
        let b = bias.map_or([0.0f32; 8], |b| ld8(b, cb));
        let mut acc = [b; R];
        for ki in taps.clone() {
            let Some(ih) = g.win.h.input_index(oh, ki) else {
                continue;
            };
            let xrow = ((n * p.h + ih) * p.w) * c;
            for kj in 0..p.kw {
                let wv = ld8(w, (ki * p.kw + kj) * c + cb);
                for (r, a) in acc.iter_mut().enumerate() {
                    // Interior column: `(ow + r) * sw + kj * dw >= left` and inside the row.
                    let iw = (ow + r) * sw + kj * dw - left;
                    let xv = ld8(x, xrow + iw * c + cb);
                    for l in 0..8 {
                        a[l] = fma::<FMA>(xv[l], wv[l], a[l]);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            st8(yrow, (ow + r) * c + cb, a);
        }
    }
}

/// One output pixel `(n, oh, ow)`, channels `[c0, c_out)`, accumulated in `ypix`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fwd_pixel<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    oh: usize,
    ow: usize,
    c0: usize,
    ypix: &mut [f32],
) {
    let p = &g.p;
    let (c, m) = (g.c_out, p.multiplier);
    match bias.and_then(|b| b.get(c0..c)) {
        Some(b) => ypix.copy_from_slice(b),
        None => ypix.fill(0.0),
    }
    for ki in g.win.h.taps(oh) {
        let Some(ih) = g.win.h.input_index(oh, ki) else {
            continue;
        };
        for kj in g.win.w.taps(ow) {
            let Some(iw) = g.win.w.input_index(ow, kj) else {
                continue;
            };
            let xo = ((n * p.h + ih) * p.w + iw) * p.c_in;
            let wo = (ki * p.kw + kj) * c;
            let (Some(xpix), Some(wt)) = (x.get(xo..xo + p.c_in), w.get(wo + c0..wo + c)) else {
                continue;
            };
            if m == 1 {
                let xs = xpix.get(c0..).unwrap_or(&[]);
                for ((yv, xv), wv) in ypix.iter_mut().zip(xs).zip(wt) {
                    *yv = fma::<FMA>(*xv, *wv, *yv);
                }
            } else {
                // c0 is 0 whenever m > 1: output channel block `ic` reads input channel `ic`.
                for ((yc, wc), xv) in ypix.chunks_exact_mut(m).zip(wt.chunks_exact(m)).zip(xpix) {
                    for (yv, wv) in yc.iter_mut().zip(wc) {
                        *yv = fma::<FMA>(*xv, *wv, *yv);
                    }
                }
            }
        }
    }
}

/// Input-gradient rows `first..` (flattened over `n, h`) into `dx` (whole rows).
#[inline(always)]
pub(crate) fn gi_rows<const FMA: bool>(
    g: &Geom,
    w: &[f32],
    dy: &[f32],
    first: usize,
    dx: &mut [f32],
    special: Option<GiPixelFn>,
) {
    let p = &g.p;
    let (c_in, c, m) = (p.c_in, g.c_out, p.multiplier);
    // (dy offset, w offset) of each (tap, output) pair reading the current input pixel.
    let mut pairs: Vec<(usize, usize)> = Vec::with_capacity(p.kh * p.kw);
    for (i, dxrow) in dx.chunks_exact_mut(p.w * c_in).enumerate() {
        let row = first + i;
        let (n, ih) = (row / p.h, row % p.h);
        for (iw, dxpix) in dxrow.chunks_exact_mut(c_in).enumerate() {
            pairs.clear();
            for ki in 0..p.kh {
                let Some(oh) = g.win.h.output_index(ih, ki) else {
                    continue;
                };
                for kj in 0..p.kw {
                    let Some(ow) = g.win.w.output_index(iw, kj) else {
                        continue;
                    };
                    pairs.push((
                        ((n * g.out_h + oh) * g.out_w + ow) * c,
                        (ki * p.kw + kj) * c,
                    ));
                }
            }
            if m == 1 {
                if !special.is_some_and(|f| f(&pairs, w, dy, dxpix)) {
                    gi_pixel::<FMA>(&pairs, w, dy, dxpix);
                }
            } else {
                dxpix.fill(0.0);
                for &(dyo, wo) in &pairs {
                    let (Some(d), Some(wt)) = (dy.get(dyo..dyo + c), w.get(wo..wo + c)) else {
                        continue;
                    };
                    for ((o, dc), wc) in dxpix
                        .iter_mut()
                        .zip(d.chunks_exact(m))
                        .zip(wt.chunks_exact(m))
                    {
                        let mut s = *o;
                        for (a, b) in dc.iter().zip(wc) {
                            s = fma::<FMA>(*a, *b, s);
                        }
                        *o = s;
                    }
                }
            }
        }
    }
}

/// `dxpix[ch] = sum over pairs of dy[dyo + ch] * w[wo + ch]` (multiplier 1): 32 channels per
/// block (four independent FMA chains), then 8, then the scalar tail.
#[inline(always)]
fn gi_pixel<const FMA: bool>(pairs: &[(usize, usize)], w: &[f32], dy: &[f32], dxpix: &mut [f32]) {
    let c = dxpix.len();
    let mut c0 = 0;
    while c0 + 32 <= c {
        let mut acc = [[0.0f32; 8]; 4];
        for &(dyo, wo) in pairs {
            for (b, a) in acc.iter_mut().enumerate() {
                let d = ld8(dy, dyo + c0 + 8 * b);
                let wv = ld8(w, wo + c0 + 8 * b);
                for l in 0..8 {
                    a[l] = fma::<FMA>(d[l], wv[l], a[l]);
                }
            }
        }
        for (b, a) in acc.iter().enumerate() {
            st8(dxpix, c0 + 8 * b, a);
        }
        c0 += 32;
    }
    while c0 + 8 <= c {
        let mut a = [0.0f32; 8];
        for &(dyo, wo) in pairs {
            let d = ld8(dy, dyo + c0);
            let wv = ld8(w, wo + c0);
            for l in 0..8 {
                a[l] = fma::<FMA>(d[l], wv[l], a[l]);
            }
        }
        st8(dxpix, c0, &a);
        c0 += 8;
    }
    for ch in c0..c {
        let mut s = 0.0f32;
        for &(dyo, wo) in pairs {
            if let (Some(d), Some(wv)) = (dy.get(dyo + ch), w.get(wo + ch)) {
                s = fma::<FMA>(*d, *wv, s);
            }
        }
        if let Some(o) = dxpix.get_mut(ch) {
            *o = s;
        }
    }
}

/// Output columns `[lo, hi)` whose tap `kj` reads a real input column.
#[inline(always)]
fn tap_cols(win: &Window1d, out: usize, kj: usize) -> (usize, usize) {
    let off = kj * win.dilation;
    let lo = win
        .pad_before
        .saturating_sub(off)
        .div_ceil(win.stride)
        .min(out);
    let hi = (win.input - 1 + win.pad_before)
        .checked_sub(off)
        .map_or(0, |v| (v / win.stride + 1).min(out));
    (lo, hi.max(lo))
}

/// Adds the weight and bias gradients of output rows `r0..r1` into `part`
/// (`[kh*kw*c_out]` then `[c_out]`). Sums run in f32 over at most ~`GW_FLUSH_COLS` output
/// columns and are then added into the f64 `part`, so long reductions with cancellation
/// (a bias gradient of random-sign `dy`) stay within 1e-5 of the oracle.
#[inline(always)]
pub(crate) fn gw_rows<const FMA: bool>(
    g: &Geom,
    x: &[f32],
    dy: &[f32],
    r0: usize,
    r1: usize,
    part: &mut [f64],
    special: Option<GwTapFn>,
) {
    let p = &g.p;
    let (c, c_in, m) = (g.c_out, p.c_in, p.multiplier);
    let wl = p.kh * p.kw * c;
    let mut scratch = vec![0.0f32; part.len()];
    let mut cols = 0;
    let (sw, dw, left) = (p.stride_w, p.dilation_w, p.padding.left);
    let c_full = if m == 1 { c & !7 } else { 0 };
    let row_len = g.out_w * c;
    for row in r0..r1 {
        let (n, oh) = (row / g.out_h, row % g.out_h);
        let Some(dyrow) = dy.get(row * row_len..(row + 1) * row_len) else {
            continue;
        };
        cols += g.out_w;
        let wl = wl.min(scratch.len());
        let (pw, pb) = scratch.split_at_mut(wl);
        for dpix in dyrow.chunks_exact(c) {
            pb.iter_mut().zip(dpix).for_each(|(b, d)| *b += d);
        }
        for ki in g.win.h.taps(oh) {
            let Some(ih) = g.win.h.input_index(oh, ki) else {
                continue;
            };
            let xs = (n * p.h + ih) * p.w * c_in;
            let Some(xrow) = x.get(xs..xs + p.w * c_in) else {
                continue;
            };
            // Channel tiles of `GW_TILE` keep the slices of the x and dy rows that every tap
            // re-reads in L1 (whole rows of 144+ channels are 32+ KiB each).
            let mut ct = 0;
            while ct < c_full {
                let cw = GW_TILE.min(c_full - ct);
                for kj in 0..p.kw {
                    let (lo, hi) = tap_cols(&g.win.w, g.out_w, kj);
                    let to = (ki * p.kw + kj) * c;
                    let Some(dwt) = pw.get_mut(to + ct..to + c) else {
                        continue;
                    };
                    let iw = |ow: usize| ow * sw + kj * dw - left;
                    let done = lo < hi
                        && special.is_some_and(|f| {
                            f(
                                xrow,
                                dyrow,
                                iw(lo) * c + ct,
                                sw * c,
                                lo * c + ct,
                                hi - lo,
                                c,
                                cw,
                                dwt,
                            )
                        });
                    for cb in (0..if done { 0 } else { cw }).step_by(8) {
                        let mut acc = [[0.0f32; 8]; 4];
                        let mut ow = lo;
                        while ow + 4 <= hi {
                            for (j, a) in acc.iter_mut().enumerate() {
                                let xv = ld8(xrow, iw(ow + j) * c + ct + cb);
                                let dv = ld8(dyrow, (ow + j) * c + ct + cb);
                                for l in 0..8 {
                                    a[l] = fma::<FMA>(xv[l], dv[l], a[l]);
                                }
                            }
                            ow += 4;
                        }
                        while ow < hi {
                            let xv = ld8(xrow, iw(ow) * c + ct + cb);
                            let dv = ld8(dyrow, ow * c + ct + cb);
                            for l in 0..8 {
                                acc[0][l] = fma::<FMA>(xv[l], dv[l], acc[0][l]);
                            }
                            ow += 1;
                        }
                        if let Some(d) = dwt.get_mut(cb..cb + 8) {
                            for (l, dv) in d.iter_mut().enumerate() {
                                *dv += (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
                            }
                        }
                    }
                }
                ct += cw;
            }
            for kj in 0..p.kw {
                let (lo, hi) = tap_cols(&g.win.w, g.out_w, kj);
                let to = (ki * p.kw + kj) * c;
                let Some(dwt) = pw.get_mut(to..to + c) else {
                    continue;
                };
                let iw = |ow: usize| ow * sw + kj * dw - left;
                if c_full < c {
                    for ow in lo..hi {
                        let xo = iw(ow) * c_in;
                        let (Some(xpix), Some(dpix)) =
                            (xrow.get(xo..xo + c_in), dyrow.get(ow * c..(ow + 1) * c))
                        else {
                            continue;
                        };
                        if m == 1 {
                            for ((d, xv), dv) in dwt[c_full..]
                                .iter_mut()
                                .zip(&xpix[c_full..])
                                .zip(&dpix[c_full..])
                            {
                                *d = fma::<FMA>(*xv, *dv, *d);
                            }
                        } else {
                            for ((dc, dyc), xv) in
                                dwt.chunks_exact_mut(m).zip(dpix.chunks_exact(m)).zip(xpix)
                            {
                                for (d, dv) in dc.iter_mut().zip(dyc) {
                                    *d = fma::<FMA>(*xv, *dv, *d);
                                }
                            }
                        }
                    }
                }
            }
        }
        if cols >= GW_FLUSH_COLS || row + 1 == r1 {
            part.iter_mut()
                .zip(&scratch)
                .for_each(|(a, s)| *a += f64::from(*s));
            scratch.fill(0.0);
            cols = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Kernels;
    use crate::rng::Rng;
    use crate::testutil::{assert_close, rng};

    const ACTS: [Option<Activation>; 6] = [
        None,
        Some(Activation::Relu),
        Some(Activation::Relu6),
        Some(Activation::Tanh),
        Some(Activation::HardSwish),
        Some(Activation::LeakyRelu(0.1)),
    ];
    const CHANNELS: [usize; 6] = [1, 3, 7, 13, 17, 33];
    const KERNELS: [(usize, usize); 5] = [(1, 1), (3, 3), (5, 5), (3, 5), (7, 7)];

    fn rand_f32(r: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    fn d(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    type Tiers = (
        Vec<(&'static str, DepthwiseConv2dFn)>,
        Vec<(&'static str, DepthwiseConv2dGradInputFn)>,
        Vec<(&'static str, DepthwiseConv2dGradWeightFn)>,
    );

    /// Every tier of each op: reference, portable, best, dispatched, and AVX2 where the CPU
    /// has it (printed, so a log says which ISA paths ran).
    fn tiers() -> Tiers {
        let (r, p, b) = (Kernels::reference(), Kernels::portable(), Kernels::best());
        let mut f: Vec<(&'static str, DepthwiseConv2dFn)> = vec![
            ("reference", r.depthwise_conv2d),
            ("portable", p.depthwise_conv2d),
            ("best", b.depthwise_conv2d),
            ("dispatched", depthwise_conv2d_fast),
        ];
        let mut gi: Vec<(&'static str, DepthwiseConv2dGradInputFn)> = vec![
            ("reference", r.depthwise_conv2d_grad_input),
            ("portable", p.depthwise_conv2d_grad_input),
            ("best", b.depthwise_conv2d_grad_input),
            ("dispatched", depthwise_conv2d_grad_input_fast),
        ];
        let mut gw: Vec<(&'static str, DepthwiseConv2dGradWeightFn)> = vec![
            ("reference", r.depthwise_conv2d_grad_weight),
            ("portable", p.depthwise_conv2d_grad_weight),
            ("best", b.depthwise_conv2d_grad_weight),
            ("dispatched", depthwise_conv2d_grad_weight_fast),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::depthwise_avx2::available() {
            use crate::x86_64::depthwise_avx2 as a;
            f.push(("avx2", a::depthwise_conv2d));
            gi.push(("avx2", a::depthwise_conv2d_grad_input));
            gw.push(("avx2", a::depthwise_conv2d_grad_weight));
        }
        let names: Vec<&str> = f.iter().map(|t| t.0).collect();
        println!(
            "depthwise tiers: {names:?}; best = {} / {} / {}",
            b.depthwise_conv2d_impl,
            b.depthwise_conv2d_grad_input_impl,
            b.depthwise_conv2d_grad_weight_impl
        );
        (f, gi, gw)
    }

    /// Runs every tier of forward, grad input and grad weight (+ bias) on fresh data, with
    /// `threads` threads, against the reference.
    fn check_all(
        t: &Tiers,
        p: &DepthwiseConv2dParams,
        r: &mut Rng,
        bias_on: bool,
        act: Option<Activation>,
        threads: usize,
    ) {
        let x = rand_f32(r, p.x_len().unwrap());
        let w = rand_f32(r, p.w_len().unwrap());
        let b = rand_f32(r, p.c_out().unwrap());
        let dy = rand_f32(r, p.y_len().unwrap());
        let bias = bias_on.then_some(&b[..]);
        let what = |op: &str, name: &str| {
            format!("depthwise {op}/{name}/threads={threads} {p:?} bias={bias_on} act={act:?}")
        };

        let mut want = vec![0.0f32; dy.len()];
        depthwise_conv2d_reference(p, &x, &w, bias, act, 1, &mut want).unwrap();
        for (name, f) in &t.0 {
            let mut got = vec![f32::NAN; want.len()];
            f(p, &x, &w, bias, act, threads, &mut got).unwrap();
            assert_close(&what("fwd", name), &d(&got), &d(&want), 1e-5);
        }

        let mut want = vec![0.0f32; x.len()];
        depthwise_conv2d_grad_input(*p, &dy, &w, &mut want).unwrap();
        for (name, f) in &t.1 {
            let mut got = vec![f32::NAN; want.len()];
            f(p, &w, &dy, threads, &mut got).unwrap();
            assert_close(&what("dx", name), &d(&got), &d(&want), 1e-5);
        }

        let mut want_w = vec![0.0f32; w.len()];
        let mut want_b = vec![0.0f32; b.len()];
        depthwise_conv2d_grad_weight(*p, &x, &dy, &mut want_w).unwrap();
        depthwise_conv2d_grad_bias(*p, &dy, &mut want_b).unwrap();
        for (name, f) in &t.2 {
            let mut got_w = vec![f32::NAN; w.len()];
            let mut got_b = vec![f32::NAN; b.len()];
            f(p, &x, &dy, threads, &mut got_w, Some(&mut got_b)).unwrap();
            assert_close(&what("dw", name), &d(&got_w), &d(&want_w), 1e-5);
            // db sums dy over every pixel in f32; when a channel's sum nearly cancels (one
            // channel of 27 values was seen at 4e-5 relative), f32 rounding of the terms
            // dominates the small result. Bound the error by the condition of the sum, the
            // per-channel sums of |dy|, not by the result.
            let mut abs_sums = vec![0f64; b.len()];
            for row in dy.chunks(b.len()) {
                for (s, &v) in abs_sums.iter_mut().zip(row) {
                    *s += f64::from(v).abs();
                }
            }
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let diff: Vec<f64> = got_b
                .iter()
                .zip(&want_b)
                .map(|(g, w)| f64::from(*g) - f64::from(*w))
                .collect();
            let scale = norm(&d(&want_b)).max(norm(&abs_sums));
            assert!(
                norm(&diff) <= 1e-5 * scale,
                "{}: |db error| {:.3e} > 1e-5 x {scale:.3e}",
                what("db", name),
                norm(&diff)
            );
            let mut only_w = vec![f32::NAN; w.len()];
            f(p, &x, &dy, threads, &mut only_w, None).unwrap();
            assert_close(&what("dw-only", name), &d(&only_w), &d(&want_w), 1e-5);
        }
    }

    /// Case `i` cycles through channels, kernels, strides, dilation, padding kinds and
    /// multiplier; sizes are random (redrawn until the window fits).
    fn case_params(r: &mut Rng, i: usize) -> DepthwiseConv2dParams {
        loop {
            let (kh, kw) = KERNELS[i % KERNELS.len()];
            let s = 1 + (i / 5) % 3;
            let sw = if i.is_multiple_of(7) {
                r.range(1, 3)
            } else {
                s
            };
            let dil = if (i / 2) % 5 == 4 { 2 } else { 1 };
            let (h, w) = (r.range(1, 20), r.range(1, 20));
            let padding = match i % 3 {
                0 => Padding2d::ZERO,
                1 => Padding2d::same((h, w), (kh, kw), (s, sw), (dil, dil)),
                _ => Padding2d::new(r.range(0, 3), r.range(0, 3), r.range(0, 3), r.range(0, 3)),
            };
            let p = DepthwiseConv2dParams {
                n: 1 + i % 2,
                h,
                w,
                c_in: CHANNELS[i % CHANNELS.len()],
                multiplier: if i % 4 == 3 { 2 } else { 1 },
                kh,
                kw,
                stride_h: s,
                stride_w: sw,
                dilation_h: dil,
                dilation_w: dil,
                padding,
            };
            if p.validate().is_ok() {
                return p;
            }
        }
    }

    #[test]
    fn every_tier_matches_reference_on_random_shapes() {
        let t = tiers();
        let mut r = rng("depthwise_conv2d_fast_random");
        for i in 0..40 {
            let p = case_params(&mut r, i);
            for threads in [1, 2] {
                check_all(
                    &t,
                    &p,
                    &mut r,
                    i % 2 == 0,
                    ACTS[(i / 2) % ACTS.len()],
                    threads,
                );
            }
        }
    }

    fn square(
        n: usize,
        hw: usize,
        c: usize,
        k: usize,
        s: usize,
        pad: usize,
    ) -> DepthwiseConv2dParams {
        DepthwiseConv2dParams {
            n,
            h: hw,
            w: hw,
            c_in: c,
            multiplier: 1,
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::symmetric(pad, pad),
        }
    }

    #[test]
    fn specialised_paths_match_reference() {
        let t = tiers();
        let mut r = rng("depthwise_conv2d_fast_special");
        // 3x3 / 5x5 at stride 1 / 2 with ragged channels (full blocks + a tail), and wide
        // enough for 8-, 4- and 1-column blocks; asymmetric padding on one.
        let mut cases = vec![];
        for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
            cases.push(square(2, 21, 20, k, s, k / 2));
            cases.push(square(1, 19, 8, k, s, 0));
        }
        cases.push(DepthwiseConv2dParams {
            padding: Padding2d::new(0, 2, 2, 1),
            ..square(1, 17, 12, 3, 2, 0)
        });
        for (i, p) in cases.iter().enumerate() {
            check_all(&t, p, &mut r, i % 2 == 1, ACTS[i % ACTS.len()], 1 + i % 2);
        }
    }

    #[test]
    fn benchmark_shapes_match_reference() {
        let t = tiers();
        let mut r = rng("depthwise_conv2d_fast_bench_shapes");
        let shapes = [
            square(1, 56, 144, 3, 1, 1),
            square(1, 14, 384, 3, 1, 1),
            square(1, 28, 40, 5, 2, 2),
        ];
        for (i, p) in shapes.iter().enumerate() {
            check_all(&t, p, &mut r, true, ACTS[1 + i], 2);
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let t = tiers();
        let p = DepthwiseConv2dParams {
            multiplier: 2,
            ..square(1, 5, 3, 3, 1, 0)
        };
        let (xl, wl, yl, c) = (75, 54, 54, 6);
        let x = vec![1.0f32; xl];
        let w = vec![1.0f32; wl];
        let b = vec![0.0f32; c];
        let mut y = vec![0.0f32; yl];
        let mut dx = vec![0.0f32; xl];
        let mut dw = vec![0.0f32; wl];
        let mut db = vec![0.0f32; c];
        let zero = DepthwiseConv2dParams { stride_h: 0, ..p };
        let too_big = DepthwiseConv2dParams { kh: 7, ..p };
        let huge = DepthwiseConv2dParams {
            n: usize::MAX / 2,
            ..p
        };
        for (name, f) in &t.0 {
            assert!(f(&p, &x, &w, Some(&b), None, 2, &mut y).is_ok(), "{name}");
            assert!(
                f(&p, &x[..74], &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w[..53], None, None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w, Some(&b[..5]), None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w, None, None, 1, &mut y[..53]).is_err(),
                "{name}"
            );
            let leaky = Some(Activation::LeakyRelu(f64::NAN));
            assert!(f(&p, &x, &w, None, leaky, 1, &mut y).is_err(), "{name}");
            for q in [zero, too_big, huge] {
                assert!(f(&q, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
            }
        }
        for (name, f) in &t.1 {
            assert!(f(&p, &w, &y, 2, &mut dx).is_ok(), "{name}");
            assert!(f(&p, &w[..53], &y, 1, &mut dx).is_err(), "{name}");
            assert!(f(&p, &w, &y[..53], 1, &mut dx).is_err(), "{name}");
            assert!(f(&p, &w, &y, 1, &mut dx[..74]).is_err(), "{name}");
            for q in [zero, too_big, huge] {
                assert!(f(&q, &w, &y, 1, &mut dx).is_err(), "{name}");
            }
        }
        for (name, f) in &t.2 {
            assert!(f(&p, &x, &y, 2, &mut dw, Some(&mut db)).is_ok(), "{name}");
            assert!(f(&p, &x[..74], &y, 1, &mut dw, None).is_err(), "{name}");
            assert!(f(&p, &x, &y[..53], 1, &mut dw, None).is_err(), "{name}");
            assert!(f(&p, &x, &y, 1, &mut dw[..53], None).is_err(), "{name}");
            assert!(
                f(&p, &x, &y, 1, &mut dw, Some(&mut db[..5])).is_err(),
                "{name}"
            );
            for q in [zero, too_big, huge] {
                assert!(f(&q, &x, &y, 1, &mut dw, None).is_err(), "{name}");
            }
        }
    }
}

#[cfg(test)]
mod bench {
    //! Timing (ignored by default): `cargo test --release -p spore-kernels-cpu
    //! depthwise_conv2d::bench -- --ignored --nocapture`.
    use super::*;
    use crate::dispatch::Kernels;
    use crate::reference::conv2d::Conv2dParams;
    use std::time::Instant;

    /// Best-of seconds per call of `f` (warm-up first, about 0.3 s of runs).
    fn time(mut f: impl FnMut()) -> f64 {
        f();
        let mut best = f64::INFINITY;
        let start = Instant::now();
        let mut runs = 0;
        while runs < 3 || (start.elapsed().as_secs_f64() < 0.3 && runs < 1000) {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
            runs += 1;
        }
        best
    }

    #[test]
    #[ignore]
    fn depthwise_gflops() {
        let shapes = [
            (56, 144, 3, 1),
            (14, 384, 3, 1),
            (112, 32, 3, 1),
            (28, 240, 5, 2),
        ];
        let (pt, best) = (Kernels::portable(), Kernels::best());
        println!("best: {}", best.depthwise_conv2d_impl);
        for (hw, c, k, s) in shapes {
            let p = DepthwiseConv2dParams {
                n: 1,
                h: hw,
                w: hw,
                c_in: c,
                multiplier: 1,
                kh: k,
                kw: k,
                stride_h: s,
                stride_w: s,
                dilation_h: 1,
                dilation_w: 1,
                padding: Padding2d::symmetric(k / 2, k / 2),
            };
            let x: Vec<f32> = (0..p.x_len().unwrap())
                .map(|i| (i % 7) as f32 * 0.1)
                .collect();
            let w: Vec<f32> = (0..p.w_len().unwrap())
                .map(|i| (i % 5) as f32 * 0.1)
                .collect();
            let b = vec![0.1f32; c];
            let mut y = vec![0.0f32; p.y_len().unwrap()];
            let flops = 2.0 * (y.len() * k * k) as f64;
            let gf = |t: f64| flops / t * 1e-9;
            let name = format!("1x{hw}x{hw}x{c} {k}x{k} s{s}");
            let t =
                time(|| depthwise_conv2d_reference(&p, &x, &w, Some(&b), None, 1, &mut y).unwrap());
            println!("{name}: reference 1t {:.2} GFLOP/s", gf(t));
            let q = Conv2dParams {
                n: 1,
                h: hw,
                w: hw,
                c_in: c,
                c_out: c,
                kh: k,
                kw: k,
                stride_h: s,
                stride_w: s,
                dilation_h: 1,
                dilation_w: 1,
                padding: p.padding,
                groups: c,
            };
            for threads in [1, 2] {
                // The old path: grouped conv2d (groups = c); reported, not required to work.
                let old = crate::conv2d::conv2d_fast(&q, &x, &w, Some(&b), None, threads, &mut y);
                let t = match old {
                    Ok(()) => time(|| {
                        let _ =
                            crate::conv2d::conv2d_fast(&q, &x, &w, Some(&b), None, threads, &mut y);
                    }),
                    Err(e) => {
                        println!("grouped conv2d_fast failed: {e}");
                        f64::NAN
                    }
                };
                let mut line = format!("{name} {threads}t: grouped conv2d_fast {:.2}", gf(t));
                for (tier, k) in [("portable", &pt), ("best", &best)] {
                    let f = k.depthwise_conv2d;
                    let act = Some(Activation::Relu6);
                    let t = time(|| f(&p, &x, &w, Some(&b), act, threads, &mut y).unwrap());
                    let mut dx = vec![0.0f32; x.len()];
                    let gi = k.depthwise_conv2d_grad_input;
                    let ti = time(|| gi(&p, &w, &y, threads, &mut dx).unwrap());
                    let (mut dw, mut db) = (vec![0.0f32; w.len()], vec![0.0f32; c]);
                    let gw = k.depthwise_conv2d_grad_weight;
                    let tw = time(|| gw(&p, &x, &y, threads, &mut dw, Some(&mut db)).unwrap());
                    line += &format!(
                        " | {tier}: fwd {:.1} dx {:.1} dw {:.1}",
                        gf(t),
                        gf(ti),
                        gf(tw)
                    );
                }
                println!("{line}  (GFLOP/s)");
            }
        }
    }
}

#[cfg(test)]
mod bench_small {
    //! Thread-threshold timing (ignored): small shapes at 1 and 2 threads.
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn depthwise_small_threads() {
        for (hw, c) in [(7, 64), (14, 32), (14, 64), (28, 32), (28, 64), (56, 32)] {
            let p = DepthwiseConv2dParams {
                n: 1,
                h: hw,
                w: hw,
                c_in: c,
                multiplier: 1,
                kh: 3,
                kw: 3,
                stride_h: 1,
                stride_w: 1,
                dilation_h: 1,
                dilation_w: 1,
                padding: Padding2d::symmetric(1, 1),
            };
            let x = vec![0.5f32; p.x_len().unwrap()];
            let w = vec![0.25f32; p.w_len().unwrap()];
            let mut y = vec![0.0f32; p.y_len().unwrap()];
            let flops = 2 * y.len() * 9;
            let mut line = format!("{hw}x{hw}x{c} ({flops} flops):");
            for threads in [1, 2] {
                let mut best = f64::INFINITY;
                for _ in 0..2000 {
                    let t = Instant::now();
                    depthwise_conv2d_fast(&p, &x, &w, None, None, threads, &mut y).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                line += &format!(" {threads}t {:.1} us", best * 1e6);
            }
            println!("{line}");
        }
    }
}
