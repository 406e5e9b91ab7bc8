//! Tuned training losses and their gradients wrt the prediction: softmax cross-entropy with
//! dense (one-hot or soft) targets, mean squared error, sigmoid binary cross-entropy on logits
//! and smooth L1 — exactly the semantics of [`crate::reference::loss`] (means over rows or
//! elements, stable logit forms). The sparse (integer label) cross-entropy lives in
//! [`crate::softmax`].
//!
//! Every body is a safe loop over 16 f32 lanes that LLVM vectorises; the AVX2 tier compiles
//! the same bodies with AVX2 + FMA enabled (`x86_64::loss_avx2`). Sums run in f32 lanes over
//! blocks of [`BLOCK`] elements and are combined in f64, so a 1M-element loss keeps ~1e-7
//! relative accuracy. Threads split rows (cross-entropy) or elements; forward partial sums
//! are added in task order, so the loss is deterministic for a given thread count.
//!
//! `log(1 + exp(-|x|))` (the softplus tail of the BCE) uses a branch-free `ln` (cephes'
//! polynomial on the mantissa) with Goldberg's correction `ln(y) * u / (y - 1)`, accurate
//! to a few ulp even where `1 + u` rounds to 1.

use crate::activation::{Isa, exp_nonpos, threads_for};
use crate::error::{Result, check_len, check_param, checked_product};
use crate::parallel::{par_chunks_mut, par_map};
use crate::reference::loss as ref_loss;

/// Lanes of the f32 accumulators (two AVX2 vectors: independent add chains).
const LANES: usize = 16;
/// Elements summed in f32 lanes before the partial goes into an f64 total.
const BLOCK: usize = 1024;

/// A loss and its shape parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Softmax cross-entropy with dense targets over `[rows, classes]`, mean over rows.
    SoftmaxCrossEntropy {
        /// Rows (samples).
        rows: usize,
        /// Classes (the softmax axis).
        classes: usize,
    },
    /// Mean squared error over all elements.
    Mse,
    /// Binary cross-entropy on logits (`pred` are logits), mean over all elements.
    SigmoidBce,
    /// Smooth L1 (Huber as PyTorch's `SmoothL1Loss`), mean over all elements.
    SmoothL1 {
        /// Width of the quadratic zone (finite, >= 0; 0 is plain L1).
        beta: f64,
    },
}

impl Loss {
    /// The kernel name used in errors (the reference's).
    fn name(self, grad: bool) -> &'static str {
        match (self, grad) {
            (Self::SoftmaxCrossEntropy { .. }, false) => "softmax_cross_entropy",
            (Self::SoftmaxCrossEntropy { .. }, true) => "softmax_cross_entropy_grad",
            (Self::Mse, false) => "mse",
            (Self::Mse, true) => "mse_grad",
            (Self::SigmoidBce, false) => "sigmoid_bce_with_logits",
            (Self::SigmoidBce, true) => "sigmoid_bce_with_logits_grad",
            (Self::SmoothL1 { .. }, false) => "smooth_l1",
            (Self::SmoothL1 { .. }, true) => "smooth_l1_grad",
        }
    }

    /// Checks the parameters and the two inputs; returns the element count.
    fn check(self, grad: bool, pred: &[f32], target: &[f32]) -> Result<usize> {
        let k = self.name(grad);
        match self {
            Self::SoftmaxCrossEntropy { rows, classes } => {
                check_param(k, "rows", rows > 0, || "must be at least 1".into())?;
                check_param(k, "classes", classes > 0, || "must be at least 1".into())?;
                let n = checked_product(k, &[rows, classes])?;
                check_len(k, "logits", n, pred.len())?;
                check_len(k, "targets", n, target.len())?;
                Ok(n)
            }
            _ => {
                if let Self::SmoothL1 { beta } = self {
                    check_param(k, "beta", beta.is_finite() && beta >= 0.0, || {
                        format!("must be finite and non-negative, got {beta}")
                    })?;
                }
                let (a, b) = match self {
                    Self::SigmoidBce => ("logits", "targets"),
                    _ => ("pred", "target"),
                };
                check_param(k, a, !pred.is_empty(), || "must not be empty".into())?;
                check_len(k, b, pred.len(), target.len())?;
                Ok(pred.len())
            }
        }
    }
}

/// `loss_call!(isa, core(args))` runs the AVX2 + FMA build of `core` (in
/// `crate::x86_64::loss_avx2`) when `isa` is [`Isa::Avx2`], else the portable body.
macro_rules! loss_call {
    ($isa:expr, $core:ident ( $($a:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        let r = if $isa == Isa::Avx2 {
            crate::x86_64::loss_avx2::$core($($a),*)
        } else {
            $core($($a),*)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let r = $core($($a),*);
        r
    }};
}

/// Sum of 16 lanes, pairwise.
#[inline(always)]
fn lane_sum(acc: [f32; LANES]) -> f32 {
    let mut s = [0.0f32; 8];
    for (i, v) in s.iter_mut().enumerate() {
        *v = acc[i] + acc[i + 8];
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

/// The largest value of `row` (`-inf` for an empty row).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut it = row.chunks_exact(LANES);
    for ch in &mut it {
        for (a, &v) in m.iter_mut().zip(ch) {
            *a = if v > *a { v } else { *a };
        }
    }
    let r = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a });
    m.iter().fold(r, |a, &v| if v > a { v } else { a })
}

/// One pass over a row: `exp(z - max)` (into `out` when given) split as `(ties, rest)` (the
/// count of maxima, each exactly 1, and the sum of the others), plus `sum t` and
/// `sum t * (z - max)` (every term of one sign for non-negative targets: no cancellation).
#[inline(always)]
fn row_pass(z: &[f32], t: &[f32], max: f32, out: Option<&mut [f32]>) -> [f32; 4] {
    let mut acc = [[0.0f32; LANES]; 4];
    let mut tail = [0.0f32; 4];
    let term = |v: f32, tv: f32| {
        let s = v - max;
        let e = exp_nonpos(s);
        let (r, k) = if v < max { (e, 0.0) } else { (0.0, 1.0) };
        (e, [k, r, tv, tv * s])
    };
    match out {
        Some(out) => {
            let (mut zs, mut ts) = (z.chunks_exact(LANES), t.chunks_exact(LANES));
            let mut os = out.chunks_exact_mut(LANES);
            for ((zc, tc), oc) in (&mut zs).zip(&mut ts).zip(&mut os) {
                for l in 0..LANES {
                    let (e, q) = term(zc[l], tc[l]);
                    oc[l] = e;
                    for (a, v) in acc.iter_mut().zip(q) {
                        a[l] += v;
                    }
                }
            }
            let rest = zs.remainder().iter().zip(ts.remainder());
            for (o, (&v, &tv)) in os.into_remainder().iter_mut().zip(rest) {
                let (e, q) = term(v, tv);
                *o = e;
                tail.iter_mut().zip(q).for_each(|(a, v)| *a += v);
            }
        }
        None => {
            let (mut zs, mut ts) = (z.chunks_exact(LANES), t.chunks_exact(LANES));
            for (zc, tc) in (&mut zs).zip(&mut ts) {
                for l in 0..LANES {
                    let (_, q) = term(zc[l], tc[l]);
                    for (a, v) in acc.iter_mut().zip(q) {
                        a[l] += v;
                    }
                }
            }
            for (&v, &tv) in zs.remainder().iter().zip(ts.remainder()) {
                let (_, q) = term(v, tv);
                tail.iter_mut().zip(q).for_each(|(a, v)| *a += v);
            }
        }
    }
    let mut r = [0.0f32; 4];
    for ((o, a), t) in r.iter_mut().zip(acc).zip(tail) {
        *o = lane_sum(a) + t;
    }
    r
}

/// `ln(ties + rest)` in f64, as `ln_1p(rest)` when the maximum is unique.
#[inline(always)]
fn ln_sum(ties: f32, rest: f32) -> f64 {
    if ties == 1.0 {
        f64::from(rest).ln_1p()
    } else {
        (f64::from(ties) + f64::from(rest)).ln()
    }
}

/// Body: the summed dense cross-entropy of the rows of `z` against `t` (f64) and, when
/// `dz` is given, `scale * (softmax(z) * sum t - t)` per row.
#[inline(always)]
pub(crate) fn ce_dense_core(
    classes: usize,
    z: &[f32],
    t: &[f32],
    scale: f32,
    dz: Option<&mut [f32]>,
) -> f64 {
    if classes == 0 {
        return 0.0;
    }
    let mut total = 0.0f64;
    let rows = z.chunks_exact(classes).zip(t.chunks_exact(classes));
    match dz {
        None => {
            for (zr, tr) in rows {
                let max = row_max(zr);
                let [ties, rest, tsum, tdot] = row_pass(zr, tr, max, None);
                total += ln_sum(ties, rest) * f64::from(tsum) - f64::from(tdot);
            }
        }
        Some(dz) => {
            for ((zr, tr), dr) in rows.zip(dz.chunks_exact_mut(classes)) {
                let max = row_max(zr);
                let [ties, rest, tsum, tdot] = row_pass(zr, tr, max, Some(dr));
                total += ln_sum(ties, rest) * f64::from(tsum) - f64::from(tdot);
                let sum = ties + rest;
                let k = scale * tsum / sum;
                for (d, &tv) in dr.iter_mut().zip(tr) {
                    *d = *d * k - scale * tv;
                }
                if ties == 1.0 {
                    // The unique maximum has p = 1 / sum close to 1 when the row is
                    // confident: p * tsum - t = p (tsum - t) - t * rest / sum avoids the
                    // cancellation of `p * tsum - t`.
                    if let Some(i) = zr.iter().position(|&v| v == max) {
                        let (s, ti) = (f64::from(sum), f64::from(tr[i]));
                        let g = (f64::from(tsum) - ti) / s - ti * f64::from(rest) / s;
                        dr[i] = (f64::from(scale) * g) as f32;
                    }
                }
            }
        }
    }
    total
}

const SQRT_2: f32 = std::f32::consts::SQRT_2;

/// `ln(1 + u)` for `u` in `[0, 1]`, branch-free (vectorises), a few ulp.
#[inline(always)]
pub(crate) fn ln1p_unit(u: f32) -> f32 {
    let y = 1.0 + u;
    // Reduce y in [1, 2] to m in [sqrt(1/2), sqrt(2)] with y = m * 2^e (e = 0 or 1); both
    // `y * 0.5` and `m - 1` are exact.
    let big = y > SQRT_2;
    let m = if big { y * 0.5 } else { y };
    let e = if big { 1.0f32 } else { 0.0 };
    let x = m - 1.0;
    let z = x * x;
    // cephes logf.
    let mut p = 7.037_683_6e-2f32;
    p = p * x - 1.151_461e-1;
    p = p * x + 1.167_699_9e-1;
    p = p * x - 1.242_014_1e-1;
    p = p * x + 1.424_932_3e-1;
    p = p * x - 1.666_805_8e-1;
    p = p * x + 2.000_071_4e-1;
    p = p * x - 2.499_999_4e-1;
    p = p * x + 3.333_333e-1;
    let r = x * z * p + e * -2.121_944_4e-4 - 0.5 * z;
    let ln_y = x + r + e * 0.693_359_4;
    // Goldberg: ln(1 + u) = ln(y) * u / (y - 1) cancels the rounding of `1 + u`.
    let d = y - 1.0;
    if d == 0.0 { u } else { ln_y * (u / d) }
}

/// Sum of `f(a[i], b[i])`: f32 lanes per [`BLOCK`], f64 across blocks.
#[inline(always)]
fn block_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [0.0f32; LANES];
        let (mut ai, mut bi) = (ab.chunks_exact(LANES), bb.chunks_exact(LANES));
        for (ac, bc) in (&mut ai).zip(&mut bi) {
            for ((s, &x), &y) in acc.iter_mut().zip(ac).zip(bc) {
                *s += f(x, y);
            }
        }
        let tail: f32 = ai
            .remainder()
            .iter()
            .zip(bi.remainder())
            .map(|(&x, &y)| f(x, y))
            .sum();
        total += f64::from(lane_sum(acc)) + f64::from(tail);
    }
    total
}

/// Body: the summed (not yet averaged) elementwise loss `kind` over `pred`, `target`.
#[inline(always)]
pub(crate) fn pair_sum_core(kind: Loss, pred: &[f32], target: &[f32]) -> f64 {
    match kind {
        Loss::Mse => block_sum(pred, target, |p, t| (p - t) * (p - t)),
        // max(x, 0) - x t + ln(1 + exp(-|x|)): the first two terms are >= 0 for t in [0, 1].
        Loss::SigmoidBce => block_sum(pred, target, |x, t| {
            x.max(0.0) - x * t + ln1p_unit(exp_nonpos(-x.abs()))
        }),
        Loss::SmoothL1 { beta } => {
            let b = beta as f32;
            // 0.5 / beta is inf for beta = 0, but then the quadratic branch is never taken.
            let h = (0.5 / beta) as f32;
            let hb = 0.5 * b;
            block_sum(pred, target, |p, t| {
                let d = p - t;
                let a = d.abs();
                if a < b { d * d * h } else { a - hb }
            })
        }
        Loss::SoftmaxCrossEntropy { .. } => 0.0,
    }
}

/// Body: the gradient wrt the prediction of the elementwise loss `kind`, `scale = dloss / n`.
#[inline(always)]
pub(crate) fn pair_grad_core(kind: Loss, scale: f32, pred: &[f32], target: &[f32], d: &mut [f32]) {
    let it = d.iter_mut().zip(pred.iter().zip(target));
    match kind {
        Loss::Mse => {
            let s2 = 2.0 * scale;
            it.for_each(|(g, (&p, &t))| *g = s2 * (p - t));
        }
        Loss::SigmoidBce => it.for_each(|(g, (&x, &t))| {
            let e = exp_nonpos(-x.abs());
            let s = 1.0 / (1.0 + e);
            let sig = if x >= 0.0 { s } else { e * s };
            *g = scale * (sig - t);
        }),
        Loss::SmoothL1 { beta } => {
            let b = beta as f32;
            let k = (1.0 / beta) as f32 * scale;
            it.for_each(|(g, (&p, &t))| {
                let dd = p - t;
                let sign = if dd > 0.0 {
                    scale
                } else if dd < 0.0 {
                    -scale
                } else {
                    0.0
                };
                *g = if dd.abs() < b { dd * k } else { sign };
            });
        }
        Loss::SoftmaxCrossEntropy { .. } => {}
    }
}

/// The mean loss of `kind` (a [`crate::dispatch::Kernels`] slot signature:
/// `(kind, pred, target, loss, threads)`).
pub type LossFn = fn(Loss, &[f32], &[f32], &mut f32, usize) -> Result<()>;

/// The gradient of a loss wrt the prediction (a slot signature:
/// `(kind, pred, target, dloss, dpred, threads)`); overwrites `dpred`.
pub type LossGradFn = fn(Loss, &[f32], &[f32], f32, &mut [f32], usize) -> Result<()>;

/// The mean loss `kind` of `pred` (logits for the cross-entropies and BCE) against `target`
/// into `loss`, through the dispatch table, on up to `threads` threads.
pub fn loss(kind: Loss, pred: &[f32], target: &[f32], out: &mut f32, threads: usize) -> Result<()> {
    (crate::dispatch::kernels().loss)(kind, pred, target, out, threads)
}

/// The gradient of [`loss`] wrt `pred`, scaled by the upstream `dloss`, into `dpred`, through
/// the dispatch table.
pub fn loss_grad(
    kind: Loss,
    pred: &[f32],
    target: &[f32],
    dloss: f32,
    dpred: &mut [f32],
    threads: usize,
) -> Result<()> {
    (crate::dispatch::kernels().loss_grad)(kind, pred, target, dloss, dpred, threads)
}

/// [`loss`] with an explicit build.
pub fn loss_with(
    isa: Isa,
    kind: Loss,
    pred: &[f32],
    target: &[f32],
    out: &mut f32,
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return match kind {
            Loss::SoftmaxCrossEntropy { rows, classes } => {
                ref_loss::softmax_cross_entropy(rows, classes, pred, target, out)
            }
            Loss::Mse => ref_loss::mse(pred, target, out),
            Loss::SigmoidBce => ref_loss::sigmoid_bce_with_logits(pred, target, out),
            Loss::SmoothL1 { beta } => ref_loss::smooth_l1(beta, pred, target, out),
        };
    }
    let n = kind.check(false, pred, target)?;
    match kind {
        Loss::SoftmaxCrossEntropy { rows, classes } => {
            let t = threads_for(n, threads);
            let per = rows.div_ceil(t);
            let parts = par_map(t, rows.div_ceil(per), |i| {
                let r = i * per * classes..((i + 1) * per).min(rows) * classes;
                let (z, tg) = (&pred[r.clone()], &target[r]);
                loss_call!(isa, ce_dense_core(classes, z, tg, 0.0, None))
            })?;
            *out = (parts.iter().sum::<f64>() / rows as f64) as f32;
        }
        _ => {
            let t = threads_for(n, threads);
            let per = n.div_ceil(t);
            let parts = par_map(t, n.div_ceil(per), |i| {
                let r = i * per..((i + 1) * per).min(n);
                let (p, tg) = (&pred[r.clone()], &target[r]);
                loss_call!(isa, pair_sum_core(kind, p, tg))
            })?;
            *out = (parts.iter().sum::<f64>() / n as f64) as f32;
        }
    }
    Ok(())
}

/// [`loss_grad`] with an explicit build.
pub fn loss_grad_with(
    isa: Isa,
    kind: Loss,
    pred: &[f32],
    target: &[f32],
    dloss: f32,
    dpred: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return match kind {
            Loss::SoftmaxCrossEntropy { rows, classes } => {
                ref_loss::softmax_cross_entropy_grad(rows, classes, pred, target, dloss, dpred)
            }
            Loss::Mse => ref_loss::mse_grad(pred, target, dloss, dpred),
            Loss::SigmoidBce => ref_loss::sigmoid_bce_with_logits_grad(pred, target, dloss, dpred),
            Loss::SmoothL1 { beta } => ref_loss::smooth_l1_grad(beta, pred, target, dloss, dpred),
        };
    }
    let n = kind.check(true, pred, target)?;
    let k = kind.name(true);
    check_len(
        k,
        if matches!(kind, Loss::Mse | Loss::SmoothL1 { .. }) {
            "dpred"
        } else {
            "dlogits"
        },
        n,
        dpred.len(),
    )?;
    match kind {
        Loss::SoftmaxCrossEntropy { rows, classes } => {
            let scale = (f64::from(dloss) / rows as f64) as f32;
            par_chunks_mut(dpred, classes, threads_for(n, threads), |r0, dc| {
                let r = r0 * classes..r0 * classes + dc.len();
                let (z, tg) = (&pred[r.clone()], &target[r]);
                loss_call!(isa, ce_dense_core(classes, z, tg, scale, Some(dc)));
                Ok(())
            })
        }
        _ => {
            let scale = (f64::from(dloss) / n as f64) as f32;
            par_chunks_mut(dpred, 1, threads_for(n, threads), |first, dc| {
                let r = first..first + dc.len();
                let (p, tg) = (&pred[r.clone()], &target[r]);
                loss_call!(isa, pair_grad_core(kind, scale, p, tg, dc));
                Ok(())
            })
        }
    }
}

/// The loss slot of build `isa`, for the dispatch table.
pub fn loss_slot(isa: Isa) -> LossFn {
    match isa {
        Isa::Reference => |k, p, t, o, th| loss_with(Isa::Reference, k, p, t, o, th),
        Isa::Portable => |k, p, t, o, th| loss_with(Isa::Portable, k, p, t, o, th),
        Isa::Avx2 => |k, p, t, o, th| loss_with(Isa::Avx2, k, p, t, o, th),
    }
}

/// The loss-gradient slot of build `isa`, for the dispatch table.
pub fn loss_grad_slot(isa: Isa) -> LossGradFn {
    match isa {
        Isa::Reference => |k, p, t, g, d, th| loss_grad_with(Isa::Reference, k, p, t, g, d, th),
        Isa::Portable => |k, p, t, g, d, th| loss_grad_with(Isa::Portable, k, p, t, g, d, th),
        Isa::Avx2 => |k, p, t, g, d, th| loss_grad_with(Isa::Avx2, k, p, t, g, d, th),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::{f32v, f64v};
    use crate::testutil::{assert_close, rand_range, rng};

    /// Every kind at a ragged size, with its own inputs (f32) for the test.
    fn cases(
        r: &mut crate::rng::Rng,
        rows: usize,
        classes: usize,
    ) -> Vec<(Loss, Vec<f32>, Vec<f32>)> {
        let n = rows * classes;
        // Soft, unnormalised targets (one row of zeros allowed by the semantics).
        let soft = f32v(&rand_range(r, n, 0.0, 1.0));
        let mut onehot = vec![0.0f32; n];
        for row in onehot.chunks_mut(classes) {
            row[r.range(0, classes - 1)] = 1.0;
        }
        let beta = [0.0, 0.5, 1.0][r.range(0, 2)];
        vec![
            (
                Loss::SoftmaxCrossEntropy { rows, classes },
                f32v(&rand_range(r, n, -4.0, 4.0)),
                soft,
            ),
            (
                Loss::SoftmaxCrossEntropy { rows, classes },
                f32v(&rand_range(r, n, -4.0, 4.0)),
                onehot,
            ),
            (
                Loss::Mse,
                f32v(&rand_range(r, n, -2.0, 2.0)),
                f32v(&rand_range(r, n, -2.0, 2.0)),
            ),
            (
                Loss::SigmoidBce,
                f32v(&rand_range(r, n, -20.0, 20.0)),
                f32v(&rand_range(r, n, 0.0, 1.0)),
            ),
            (
                Loss::SmoothL1 { beta },
                f32v(&rand_range(r, n, -2.0, 2.0)),
                f32v(&rand_range(r, n, -2.0, 2.0)),
            ),
        ]
    }

    fn reference(kind: Loss, p: &[f64], t: &[f64], dloss: f64) -> (f64, Vec<f64>) {
        let (mut l, mut g) = (0.0, vec![0.0; p.len()]);
        match kind {
            Loss::SoftmaxCrossEntropy { rows, classes } => {
                ref_loss::softmax_cross_entropy(rows, classes, p, t, &mut l).unwrap();
                ref_loss::softmax_cross_entropy_grad(rows, classes, p, t, dloss, &mut g).unwrap();
            }
            Loss::Mse => {
                ref_loss::mse(p, t, &mut l).unwrap();
                ref_loss::mse_grad(p, t, dloss, &mut g).unwrap();
            }
            Loss::SigmoidBce => {
                ref_loss::sigmoid_bce_with_logits(p, t, &mut l).unwrap();
                ref_loss::sigmoid_bce_with_logits_grad(p, t, dloss, &mut g).unwrap();
            }
            Loss::SmoothL1 { beta } => {
                ref_loss::smooth_l1(beta, p, t, &mut l).unwrap();
                ref_loss::smooth_l1_grad(beta, p, t, dloss, &mut g).unwrap();
            }
        }
        (l, g)
    }

    #[test]
    fn every_isa_matches_reference() {
        let mut r = rng("loss::every_isa_matches_reference");
        for isa in Isa::all() {
            println!("loss: isa {}", isa.name());
            for classes in [1usize, 3, 7, 13, 17, 33, 1000] {
                for rows in [1usize, 5, 67] {
                    for (kind, p, t) in cases(&mut r, rows, classes) {
                        let dloss = r.uniform(0.5, 2.0) as f32;
                        let (want, want_g) =
                            reference(kind, &f64v(&p), &f64v(&t), f64::from(dloss));
                        for threads in [1, 2] {
                            let what =
                                format!("{}/{kind:?}/{rows}x{classes}/t={threads}", isa.name());
                            let mut l = f32::NAN;
                            loss_with(isa, kind, &p, &t, &mut l, threads).unwrap();
                            assert_close(&format!("{what} loss"), &[f64::from(l)], &[want], 1e-5);
                            let mut g = vec![f32::NAN; p.len()];
                            loss_grad_with(isa, kind, &p, &t, dloss, &mut g, threads).unwrap();
                            assert_close(&format!("{what} grad"), &f64v(&g), &want_g, 1e-5);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn large_inputs_and_saturated_logits() {
        let mut r = rng("loss::large_inputs_and_saturated_logits");
        // 300k elements: f32-only accumulation would drift; blocks into f64 must not.
        let n = 300_001;
        let p = f32v(&rand_range(&mut r, n, -3.0, 3.0));
        let t = f32v(&rand_range(&mut r, n, 0.0, 1.0));
        for isa in Isa::all() {
            for kind in [Loss::Mse, Loss::SigmoidBce, Loss::SmoothL1 { beta: 0.7 }] {
                let (want, want_g) = reference(kind, &f64v(&p), &f64v(&t), 1.0);
                for threads in [1, 2] {
                    let mut l = f32::NAN;
                    loss_with(isa, kind, &p, &t, &mut l, threads).unwrap();
                    let what = format!("{}/{kind:?}/t={threads}", isa.name());
                    assert_close(&what, &[f64::from(l)], &[want], 1e-6);
                    let mut g = vec![f32::NAN; n];
                    loss_grad_with(isa, kind, &p, &t, 1.0, &mut g, threads).unwrap();
                    assert_close(&what, &f64v(&g), &want_g, 1e-6);
                }
            }
            // Confident, right predictions: the gradient is tiny and must not be noise.
            let z = [30.0f32, -10.0, 0.0, 25.0, 1.0, -3.0];
            let t = [1.0f32, 0.0, 0.0, 0.0, 0.0, 0.0];
            let kind = Loss::SoftmaxCrossEntropy {
                rows: 1,
                classes: 6,
            };
            let (want, want_g) = reference(kind, &f64v(&z), &f64v(&t), 1.0);
            let mut l = f32::NAN;
            loss_with(isa, kind, &z, &t, &mut l, 1).unwrap();
            assert_close("saturated ce", &[f64::from(l)], &[want], 1e-5);
            let mut g = [f32::NAN; 6];
            loss_grad_with(isa, kind, &z, &t, 1.0, &mut g, 1).unwrap();
            assert_close("saturated ce grad", &f64v(&g), &want_g, 1e-5);
            // Huge BCE logits stay finite.
            let x = [800.0f32, -800.0, 90.0];
            let mut l = f32::NAN;
            loss_with(isa, Loss::SigmoidBce, &x, &[1.0, 1.0, 0.0], &mut l, 1).unwrap();
            assert!((f64::from(l) - 890.0 / 3.0).abs() < 1e-3, "{l}");
        }
    }

    #[test]
    fn ln1p_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=100_000 {
            let u = if i < 50_000 {
                (i as f32) / 50_000.0
            } else {
                (-(i as f32 - 50_000.0) / 500.0).exp()
            };
            let got = f64::from(ln1p_unit(u));
            let want = f64::from(u).ln_1p();
            if want > 0.0 {
                worst = worst.max((got - want).abs() / want);
            }
        }
        println!("ln1p_unit worst relative error {worst:.2e}");
        assert!(worst < 5e-7, "{worst}");
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [0.5f32; 6];
        for isa in Isa::all() {
            let mut l = 0.0f32;
            let mut g = [0.0f32; 6];
            let ce = |rows, classes| Loss::SoftmaxCrossEntropy { rows, classes };
            assert!(loss_with(isa, ce(2, 3), &x, &x, &mut l, 1).is_ok());
            assert!(loss_with(isa, ce(0, 3), &x, &x, &mut l, 1).is_err());
            assert!(loss_with(isa, ce(3, 3), &x, &x, &mut l, 1).is_err());
            assert!(loss_with(isa, ce(2, 3), &x, &x[..5], &mut l, 1).is_err());
            assert!(loss_grad_with(isa, ce(2, 3), &x, &x, 1.0, &mut g[..5], 2).is_err());
            for kind in [Loss::Mse, Loss::SigmoidBce, Loss::SmoothL1 { beta: 1.0 }] {
                assert!(loss_with(isa, kind, &x, &x, &mut l, 1).is_ok());
                assert!(loss_with(isa, kind, &x, &x[..5], &mut l, 1).is_err());
                assert!(loss_with(isa, kind, &[], &[], &mut l, 1).is_err());
                assert!(loss_grad_with(isa, kind, &x, &x, 1.0, &mut g[..5], 1).is_err());
            }
            for beta in [-1.0, f64::NAN, f64::INFINITY] {
                let kind = Loss::SmoothL1 { beta };
                assert!(loss_with(isa, kind, &x, &x, &mut l, 1).is_err());
                assert!(loss_grad_with(isa, kind, &x, &x, 1.0, &mut g, 1).is_err());
            }
        }
    }

    /// Timings for the report (not a test): `cargo test --release -p spore-kernels-cpu
    /// bench_loss -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_loss() {
        use crate::activation::tests::best_of;
        let mut r = rng("bench_loss");
        let n = 1 << 20;
        let p = f32v(&rand_range(&mut r, n, -3.0, 3.0));
        let t = f32v(&rand_range(&mut r, n, 0.0, 1.0));
        let (p64, t64) = (f64v(&p), f64v(&t));
        let mut g = vec![0.0f32; n];
        let kinds = [
            Loss::SoftmaxCrossEntropy {
                rows: 1024,
                classes: 1024,
            },
            Loss::Mse,
            Loss::SigmoidBce,
            Loss::SmoothL1 { beta: 1.0 },
        ];
        for kind in kinds {
            let mut g64 = vec![0.0f64; n];
            let mut l64 = 0.0f64;
            let tr = best_of(2, || match kind {
                Loss::SoftmaxCrossEntropy { rows, classes } => {
                    ref_loss::softmax_cross_entropy(rows, classes, &p64, &t64, &mut l64).unwrap();
                    ref_loss::softmax_cross_entropy_grad(rows, classes, &p64, &t64, 1.0, &mut g64)
                        .unwrap();
                }
                _ => {
                    let (l, gg) = reference(kind, &p64, &t64, 1.0);
                    l64 = l;
                    g64 = gg;
                }
            });
            for isa in Isa::all().into_iter().filter(|&i| i != Isa::Reference) {
                for threads in [1, 2] {
                    let mut l = 0.0f32;
                    let tf = best_of(20, || {
                        loss_with(isa, kind, &p, &t, &mut l, threads).unwrap()
                    });
                    let tg = best_of(20, || {
                        loss_grad_with(isa, kind, &p, &t, 1.0, &mut g, threads).unwrap()
                    });
                    let gbs = |s: f64, bytes: usize| bytes as f64 / s / 1e9;
                    println!(
                        "{kind:?} n=2^20 {} t={threads}: fwd {:.0} us ({:.1} GB/s), grad {:.0} us ({:.1} GB/s); reference fwd+grad (f64) {:.0} us",
                        isa.name(),
                        tf * 1e6,
                        gbs(tf, 8 * n),
                        tg * 1e6,
                        gbs(tg, 12 * n),
                        tr * 1e6
                    );
                }
            }
        }
    }
}
