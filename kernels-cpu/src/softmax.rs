//! Tuned softmax and log-softmax over the last axis of `[rows, cols]` data with their
//! gradients (from the forward output), and the fused sparse softmax cross-entropy loss
//! (integer class labels, mean over rows) with its gradient wrt the logits — the semantics of
//! [`crate::reference::softmax`] and [`crate::reference::loss`].
//!
//! Each row is three vectorised sweeps: the maximum (16 lanes), `exp(x - max)` through the
//! branch-free polynomial `exp` with the sum in 16 f32 lanes, then the scale (or the log
//! shift). Threads split the rows; the loss sums its per-chunk partials in row order, so it
//! is deterministic for a given thread count.

use crate::activation::{Isa, exp_nonpos, isa_call, threads_for};
use crate::error::{KernelError, Result, check_len, check_param, checked_product};
use crate::parallel::par_chunks_mut;
use crate::reference::loss as ref_loss;
use crate::reference::softmax as ref_softmax;
use std::sync::Mutex;

/// Lanes of the row reductions (two AVX2 vectors: independent chains hide the add latency).
const LANES: usize = 16;

/// Checks `rows, cols >= 1` and returns `rows * cols`.
fn check_shape(kernel: &'static str, rows: usize, cols: usize) -> Result<usize> {
    check_param(kernel, "rows", rows > 0, || "must be at least 1".into())?;
    check_param(kernel, "cols", cols > 0, || "must be at least 1".into())?;
    checked_product(kernel, &[rows, cols])
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

/// Sum of 16 lanes, combined pairwise.
#[inline(always)]
fn lane_sum(acc: [f32; LANES]) -> f32 {
    let mut s = [0.0f32; 8];
    for (i, v) in s.iter_mut().enumerate() {
        *v = acc[i] + acc[i + 8];
    }
    ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
}

/// Writes `exp(x - max)` into `out` (when given) and returns its sum as `(ties, rest)`: the
/// count of elements equal to the maximum (each contributing exactly 1) and the sum of the
/// others, so `log(sum)` can be `ln_1p(rest)` when the maximum is unique — accurate even
/// when the row is saturated and `1 + rest` rounds to 1 in f32.
#[inline(always)]
fn exp_sum(row: &[f32], max: f32, out: Option<&mut [f32]>) -> (f32, f32) {
    let mut acc = [0.0f32; LANES];
    let mut ties = [0.0f32; LANES];
    let (mut tail, mut tail_ties) = (0.0f32, 0.0f32);
    let split = |v: f32, e: f32| if v < max { (e, 0.0) } else { (0.0, 1.0) };
    match out {
        Some(out) => {
            let mut xs = row.chunks_exact(LANES);
            let mut os = out.chunks_exact_mut(LANES);
            for (xc, oc) in (&mut xs).zip(&mut os) {
                let lanes = acc.iter_mut().zip(ties.iter_mut());
                for ((o, &v), (a, t)) in oc.iter_mut().zip(xc).zip(lanes) {
                    let e = exp_nonpos(v - max);
                    *o = e;
                    let (r, k) = split(v, e);
                    *a += r;
                    *t += k;
                }
            }
            for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
                let e = exp_nonpos(v - max);
                *o = e;
                let (r, k) = split(v, e);
                tail += r;
                tail_ties += k;
            }
        }
        None => {
            let mut xs = row.chunks_exact(LANES);
            for xc in &mut xs {
                let lanes = acc.iter_mut().zip(ties.iter_mut());
                for (&v, (a, t)) in xc.iter().zip(lanes) {
                    let (r, k) = split(v, exp_nonpos(v - max));
                    *a += r;
                    *t += k;
                }
            }
            for &v in xs.remainder() {
                let (r, k) = split(v, exp_nonpos(v - max));
                tail += r;
                tail_ties += k;
            }
        }
    }
    (lane_sum(ties) + tail_ties, lane_sum(acc) + tail)
}

/// `ln(ties + rest)` from [`exp_sum`]'s split, in f64.
#[inline(always)]
fn ln_sum((ties, rest): (f32, f32)) -> f64 {
    if ties == 1.0 {
        f64::from(rest).ln_1p()
    } else {
        (f64::from(ties) + f64::from(rest)).ln()
    }
}

/// `sum a * b` in 16 lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (mut ai, mut bi) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (ac, bc) in (&mut ai).zip(&mut bi) {
        for ((s, &x), &y) in acc.iter_mut().zip(ac).zip(bc) {
            *s += x * y;
        }
    }
    let tail: f32 = ai
        .remainder()
        .iter()
        .zip(bi.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lane_sum(acc) + tail
}

/// Body: softmax (or log-softmax when `log`) of every `cols`-long row of `x` into `y`.
#[inline(always)]
pub(crate) fn softmax_core(cols: usize, x: &[f32], y: &mut [f32], log: bool) {
    if cols == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let max = row_max(xr);
        if log {
            let ls = ln_sum(exp_sum(xr, max, None)) as f32;
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = (v - max) - ls;
            }
        } else {
            let (ties, rest) = exp_sum(xr, max, Some(yr));
            let inv = 1.0 / (ties + rest);
            yr.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// Body: the gradient of softmax (`dx = y * (dy - <y, dy>)`) or, when `log`, of log-softmax
/// (`dx = dy - exp(y) * sum dy`), row by row.
#[inline(always)]
pub(crate) fn softmax_grad_core(cols: usize, y: &[f32], dy: &[f32], dx: &mut [f32], log: bool) {
    if cols == 0 {
        return;
    }
    let rows = y.chunks_exact(cols).zip(dy.chunks_exact(cols));
    for ((yr, gr), dr) in rows.zip(dx.chunks_exact_mut(cols)) {
        if log {
            let ones = [1.0f32; LANES];
            // sum dy as a dot with ones keeps the 16-lane accumulation.
            let mut s = 0.0f32;
            for g in gr.chunks(LANES) {
                s += dot(g, &ones[..g.len()]);
            }
            for ((d, &yv), &g) in dr.iter_mut().zip(yr).zip(gr) {
                *d = g - exp_nonpos(yv) * s;
            }
        } else {
            let s = dot(yr, gr);
            for ((d, &yv), &g) in dr.iter_mut().zip(yr).zip(gr) {
                *d = yv * (g - s);
            }
        }
    }
}

/// Body: the summed cross-entropy `sum_r logsumexp(z_r) - z_r[label_r]` of the rows of
/// `logits` (f64), and, when `dlogits` is given, `scale * (softmax(z) - onehot(label))`.
#[inline(always)]
pub(crate) fn ce_core(
    cols: usize,
    logits: &[f32],
    labels: &[usize],
    scale: f32,
    dlogits: Option<&mut [f32]>,
) -> f64 {
    if cols == 0 {
        return 0.0;
    }
    let mut total = 0.0f64;
    match dlogits {
        Some(d) => {
            let rows = logits.chunks_exact(cols).zip(d.chunks_exact_mut(cols));
            for ((zr, dr), &label) in rows.zip(labels) {
                let max = row_max(zr);
                let split = exp_sum(zr, max, Some(dr));
                let zl = zr.get(label).copied().unwrap_or(f32::NAN);
                total += f64::from(max - zl) + ln_sum(split);
                let sum = split.0 + split.1;
                let k = scale / sum;
                dr.iter_mut().for_each(|v| *v *= k);
                if let Some(v) = dr.get_mut(label) {
                    // A confident, right prediction: p - 1 = -rest / sum exactly, where
                    // `p * k - scale` would cancel to noise.
                    *v = if zl == max && split.0 == 1.0 {
                        -split.1 * k
                    } else {
                        *v - scale
                    };
                }
            }
        }
        None => {
            for (zr, &label) in logits.chunks_exact(cols).zip(labels) {
                let max = row_max(zr);
                let split = exp_sum(zr, max, None);
                let zl = zr.get(label).copied().unwrap_or(f32::NAN);
                total += f64::from(max - zl) + ln_sum(split);
            }
        }
    }
    total
}

/// Softmax (`log == false`) or log-softmax over the last axis, explicit build.
fn forward(
    isa: Isa,
    log: bool,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    let k = if log { "log_softmax" } else { "softmax" };
    if isa == Isa::Reference {
        return if log {
            ref_softmax::log_softmax(rows, cols, x, y)
        } else {
            ref_softmax::softmax(rows, cols, x, y)
        };
    }
    let n = check_shape(k, rows, cols)?;
    check_len(k, "x", n, x.len())?;
    check_len(k, "y", n, y.len())?;
    par_chunks_mut(y, cols, threads_for(n, threads), |r0, yc| {
        let xc = &x[r0 * cols..r0 * cols + yc.len()];
        isa_call!(isa, softmax_core(cols, xc, yc, log));
        Ok(())
    })
}

/// Gradient of softmax or log-softmax from the forward output, explicit build.
#[allow(clippy::too_many_arguments)]
fn backward(
    isa: Isa,
    log: bool,
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    let k = if log {
        "log_softmax_grad"
    } else {
        "softmax_grad"
    };
    if isa == Isa::Reference {
        return if log {
            ref_softmax::log_softmax_grad(rows, cols, y, dy, dx)
        } else {
            ref_softmax::softmax_grad(rows, cols, y, dy, dx)
        };
    }
    let n = check_shape(k, rows, cols)?;
    check_len(k, "y", n, y.len())?;
    check_len(k, "dy", n, dy.len())?;
    check_len(k, "dx", n, dx.len())?;
    par_chunks_mut(dx, cols, threads_for(n, threads), |r0, dc| {
        let r = r0 * cols..r0 * cols + dc.len();
        isa_call!(isa, softmax_grad_core(cols, &y[r.clone()], &dy[r], dc, log));
        Ok(())
    })
}

/// `y[r, c] = exp(x[r, c]) / sum_c' exp(x[r, c'])`, dispatched build, up to `threads` threads.
pub fn softmax(rows: usize, cols: usize, x: &[f32], y: &mut [f32], threads: usize) -> Result<()> {
    forward(Isa::current(), false, rows, cols, x, y, threads)
}

/// [`softmax`] with an explicit build.
pub fn softmax_with(
    isa: Isa,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    forward(isa, false, rows, cols, x, y, threads)
}

/// `y[r, c] = x[r, c] - log(sum_c' exp(x[r, c']))`, dispatched build.
pub fn log_softmax(
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    forward(Isa::current(), true, rows, cols, x, y, threads)
}

/// [`log_softmax`] with an explicit build.
pub fn log_softmax_with(
    isa: Isa,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    forward(isa, true, rows, cols, x, y, threads)
}

/// Gradient of [`softmax`] from its output: `dx = y * (dy - sum_c dy * y)`. Dispatched build.
pub fn softmax_grad(
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    backward(Isa::current(), false, rows, cols, y, dy, dx, threads)
}

/// [`softmax_grad`] with an explicit build.
#[allow(clippy::too_many_arguments)]
pub fn softmax_grad_with(
    isa: Isa,
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    backward(isa, false, rows, cols, y, dy, dx, threads)
}

/// Gradient of [`log_softmax`] from its output: `dx = dy - exp(y) * sum_c dy`. Dispatched.
pub fn log_softmax_grad(
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    backward(Isa::current(), true, rows, cols, y, dy, dx, threads)
}

/// [`log_softmax_grad`] with an explicit build.
#[allow(clippy::too_many_arguments)]
pub fn log_softmax_grad_with(
    isa: Isa,
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    backward(isa, true, rows, cols, y, dy, dx, threads)
}

/// Checks every label against `[0, classes)` and converts them to indices.
fn check_labels(
    kernel: &'static str,
    rows: usize,
    classes: usize,
    labels: &[i32],
) -> Result<Vec<usize>> {
    check_len(kernel, "labels", rows, labels.len())?;
    labels
        .iter()
        .enumerate()
        .map(|(r, &l)| match usize::try_from(l) {
            Ok(c) if c < classes => Ok(c),
            _ => Err(KernelError::Param {
                kernel,
                param: "labels",
                reason: format!("label {l} of row {r} is outside [0, {classes})"),
            }),
        })
        .collect()
}

/// Mean sparse softmax cross-entropy over rows, `-(1/rows) sum_r log_softmax(z)[r, label_r]`,
/// as [`crate::reference::loss::sparse_softmax_cross_entropy`]. Dispatched build.
pub fn sparse_softmax_cross_entropy(
    rows: usize,
    classes: usize,
    logits: &[f32],
    labels: &[i32],
    loss: &mut f32,
    threads: usize,
) -> Result<()> {
    sparse_softmax_cross_entropy_with(Isa::current(), rows, classes, logits, labels, loss, threads)
}

/// [`sparse_softmax_cross_entropy`] with an explicit build.
pub fn sparse_softmax_cross_entropy_with(
    isa: Isa,
    rows: usize,
    classes: usize,
    logits: &[f32],
    labels: &[i32],
    loss: &mut f32,
    threads: usize,
) -> Result<()> {
    const K: &str = "sparse_softmax_cross_entropy";
    if isa == Isa::Reference {
        return ref_loss::sparse_softmax_cross_entropy(rows, classes, logits, labels, loss);
    }
    let n = check_rows(K, rows, classes)?;
    check_len(K, "logits", n, logits.len())?;
    let labels = check_labels(K, rows, classes, labels)?;
    // Without a gradient to write, threads split the rows of a scratch-free pass.
    let t = threads_for(n, threads);
    let per = rows.div_ceil(t.max(1));
    let parts = crate::parallel::par_map(t, rows.div_ceil(per.max(1)), |i| {
        let r = i * per..((i + 1) * per).min(rows);
        let z = &logits[r.start * classes..r.end * classes];
        isa_call!(isa, ce_core(classes, z, &labels[r], 0.0, None))
    })?;
    *loss = (parts.iter().sum::<f64>() / rows as f64) as f32;
    Ok(())
}

/// Gradient of [`sparse_softmax_cross_entropy`] wrt the logits:
/// `dlogits = dloss / rows * (softmax(z) - onehot(label))`. Overwrites `dlogits`. Dispatched.
pub fn sparse_softmax_cross_entropy_grad(
    rows: usize,
    classes: usize,
    logits: &[f32],
    labels: &[i32],
    dloss: f32,
    dlogits: &mut [f32],
    threads: usize,
) -> Result<()> {
    let mut loss = 0.0f32;
    sparse_softmax_cross_entropy_fused_with(
        Isa::current(),
        rows,
        classes,
        logits,
        labels,
        dloss,
        &mut loss,
        dlogits,
        threads,
    )
}

/// The loss and its gradient in one pass over the logits (what a training step needs):
/// writes the mean loss into `loss` and `dloss / rows * (softmax(z) - onehot)` into
/// `dlogits`. Dispatched build.
#[allow(clippy::too_many_arguments)] // one argument per tensor of the op
pub fn sparse_softmax_cross_entropy_fused(
    rows: usize,
    classes: usize,
    logits: &[f32],
    labels: &[i32],
    dloss: f32,
    loss: &mut f32,
    dlogits: &mut [f32],
    threads: usize,
) -> Result<()> {
    sparse_softmax_cross_entropy_fused_with(
        Isa::current(),
        rows,
        classes,
        logits,
        labels,
        dloss,
        loss,
        dlogits,
        threads,
    )
}

/// [`sparse_softmax_cross_entropy_fused`] with an explicit build.
#[allow(clippy::too_many_arguments)]
pub fn sparse_softmax_cross_entropy_fused_with(
    isa: Isa,
    rows: usize,
    classes: usize,
    logits: &[f32],
    labels: &[i32],
    dloss: f32,
    loss: &mut f32,
    dlogits: &mut [f32],
    threads: usize,
) -> Result<()> {
    const K: &str = "sparse_softmax_cross_entropy_grad";
    if isa == Isa::Reference {
        ref_loss::sparse_softmax_cross_entropy(rows, classes, logits, labels, loss)?;
        return ref_loss::sparse_softmax_cross_entropy_grad(
            rows, classes, logits, labels, dloss, dlogits,
        );
    }
    let n = check_rows(K, rows, classes)?;
    check_len(K, "logits", n, logits.len())?;
    check_len(K, "dlogits", n, dlogits.len())?;
    let labels = check_labels(K, rows, classes, labels)?;
    let scale = (f64::from(dloss) / rows as f64) as f32;
    // (first row, partial loss) per chunk, summed in row order afterwards.
    let parts = Mutex::new(Vec::new());
    par_chunks_mut(dlogits, classes, threads_for(n, threads), |r0, dc| {
        let r1 = r0 + dc.len() / classes;
        let z = &logits[r0 * classes..r1 * classes];
        let s = isa_call!(isa, ce_core(classes, z, &labels[r0..r1], scale, Some(dc)));
        parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((r0, s));
        Ok(())
    })?;
    let mut parts = parts.into_inner().unwrap_or_else(|e| e.into_inner());
    parts.sort_by_key(|&(r0, _)| r0);
    *loss = (parts.iter().map(|&(_, s)| s).sum::<f64>() / rows as f64) as f32;
    Ok(())
}

/// Checks `rows, classes >= 1` and returns `rows * classes`.
fn check_rows(kernel: &'static str, rows: usize, classes: usize) -> Result<usize> {
    check_param(kernel, "rows", rows > 0, || "must be at least 1".into())?;
    check_param(kernel, "classes", classes > 0, || {
        "must be at least 1".into()
    })?;
    checked_product(kernel, &[rows, classes])
}

/// A [`softmax`] implementation (a [`crate::dispatch::Kernels`] slot):
/// `(rows, cols, x, y, threads)`.
pub type SoftmaxFn = fn(usize, usize, &[f32], &mut [f32], usize) -> Result<()>;

/// The softmax slot of build `isa`, for the dispatch table.
pub fn slot(isa: Isa) -> SoftmaxFn {
    match isa {
        Isa::Reference => |r, c, x, y, t| softmax_with(Isa::Reference, r, c, x, y, t),
        Isa::Portable => |r, c, x, y, t| softmax_with(Isa::Portable, r, c, x, y, t),
        Isa::Avx2 => |r, c, x, y, t| softmax_with(Isa::Avx2, r, c, x, y, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::assert_close_floor;
    use crate::activation::tests::{f32v, f64v};
    use crate::testutil::{assert_close, rand_range, rng};

    #[test]
    fn every_isa_matches_reference() {
        let mut r = rng("softmax::every_isa_matches_reference");
        for isa in Isa::all() {
            println!("softmax: isa {}", isa.name());
            for cols in [1usize, 3, 7, 13, 17, 33, 1000] {
                for rows in [1usize, 5, 67] {
                    for threads in [1, 2] {
                        let what = format!("{}/{rows}x{cols}/t={threads}", isa.name());
                        let n = rows * cols;
                        let x = f32v(&rand_range(&mut r, n, -30.0, 30.0));
                        let dy = f32v(&rand_range(&mut r, n, -1.0, 1.0));
                        let (x64, dy64) = (f64v(&x), f64v(&dy));
                        // The gradients get moderate logits: a saturated softmax makes
                        // `dy - <y, dy>` cancel to noise in any f32 evaluation.
                        let xg = f32v(&rand_range(&mut r, n, -4.0, 4.0));
                        for log in [false, true] {
                            let mut y = vec![f32::NAN; n];
                            let mut yg = vec![f32::NAN; n];
                            forward(isa, log, rows, cols, &xg, &mut yg, threads).unwrap();
                            forward(isa, log, rows, cols, &x, &mut y, threads).unwrap();
                            let mut want = vec![0.0; n];
                            if log {
                                ref_softmax::log_softmax(rows, cols, &x64, &mut want).unwrap();
                            } else {
                                ref_softmax::softmax(rows, cols, &x64, &mut want).unwrap();
                            }
                            assert_close(&format!("{what} log={log} y"), &f64v(&y), &want, 1e-5);
                            let mut dx = vec![f32::NAN; n];
                            backward(isa, log, rows, cols, &yg, &dy, &mut dx, threads).unwrap();
                            let y64 = f64v(&yg);
                            if log {
                                ref_softmax::log_softmax_grad(rows, cols, &y64, &dy64, &mut want)
                            } else {
                                ref_softmax::softmax_grad(rows, cols, &y64, &dy64, &mut want)
                            }
                            .unwrap();
                            // dx = y (dy - sum dy y) (or dy - e^y sum dy) can cancel far below
                            // its terms (a 1x3 row was seen at 1.2e-4 relative): judge it
                            // against the size of the terms, row by row.
                            let mut terms = 0f64;
                            for (yr, dr) in y64.chunks(cols).zip(dy64.chunks(cols)) {
                                let p = |v: f64| if log { v.exp() } else { v };
                                let s: f64 = yr.iter().zip(dr).map(|(&y, &d)| p(y) * d.abs()).sum();
                                for (&y, &d) in yr.iter().zip(dr) {
                                    let t = if log {
                                        d.abs() + p(y) * s
                                    } else {
                                        y * (d.abs() + s)
                                    };
                                    terms += t * t;
                                }
                            }
                            assert_close_floor(
                                &format!("{what} log={log} dx"),
                                &f64v(&dx),
                                &want,
                                terms.sqrt(),
                                1e-5,
                            );
                        }
                        // Cross-entropy, loss and gradient, on the moderate logits: with
                        // saturated rows the f64 oracle's own `ln(1 + 1e-15)` is off by ~1%.
                        let xg64 = f64v(&xg);
                        let labels: Vec<i32> =
                            (0..rows).map(|_| r.range(0, cols - 1) as i32).collect();
                        let dloss = r.uniform(0.5, 2.0) as f32;
                        let mut want_loss = 0.0f64;
                        ref_loss::sparse_softmax_cross_entropy(
                            rows,
                            cols,
                            &xg64,
                            &labels,
                            &mut want_loss,
                        )
                        .unwrap();
                        let mut want_g = vec![0.0; n];
                        ref_loss::sparse_softmax_cross_entropy_grad(
                            rows,
                            cols,
                            &xg64,
                            &labels,
                            f64::from(dloss),
                            &mut want_g,
                        )
                        .unwrap();
                        let mut loss = f32::NAN;
                        sparse_softmax_cross_entropy_with(
                            isa, rows, cols, &xg, &labels, &mut loss, threads,
                        )
                        .unwrap();
                        assert_close(
                            &format!("{what} ce"),
                            &[f64::from(loss)],
                            &[want_loss],
                            1e-5,
                        );
                        let (mut g, mut loss2) = (vec![f32::NAN; n], f32::NAN);
                        sparse_softmax_cross_entropy_fused_with(
                            isa, rows, cols, &xg, &labels, dloss, &mut loss2, &mut g, threads,
                        )
                        .unwrap();
                        assert_close(
                            &format!("{what} ce fused"),
                            &[f64::from(loss2)],
                            &[want_loss],
                            1e-5,
                        );
                        assert_close(&format!("{what} ce grad"), &f64v(&g), &want_g, 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn huge_logits_stay_finite() {
        for isa in Isa::all() {
            let x = [1000.0f32, -1000.0, 0.0, 999.0];
            let mut y = [0.0f32; 4];
            softmax_with(isa, 1, 4, &x, &mut y, 1).unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
            let mut loss = 0.0f32;
            sparse_softmax_cross_entropy_with(isa, 1, 4, &x, &[1], &mut loss, 1).unwrap();
            let want = 2000.0 + (1.0 + (-1.0f64).exp()).ln();
            assert!((f64::from(loss) - want).abs() < 1e-3, "{loss} vs {want}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f32; 6];
        for isa in Isa::all() {
            let mut y = [0.0f32; 6];
            assert!(softmax_with(isa, 2, 3, &x, &mut y, 1).is_ok());
            assert!(softmax_with(isa, 0, 3, &x, &mut y, 1).is_err());
            assert!(softmax_with(isa, 2, 3, &x[..5], &mut y, 1).is_err());
            assert!(log_softmax_with(isa, 3, 3, &x, &mut y, 1).is_err());
            assert!(softmax_grad_with(isa, 2, 3, &x, &x[..5], &mut y, 1).is_err());
            assert!(log_softmax_grad_with(isa, 2, 3, &x, &x, &mut y[..5], 1).is_err());
            let mut l = 0.0f32;
            for bad in [[0, 3], [-1, 0]] {
                assert!(sparse_softmax_cross_entropy_with(isa, 2, 3, &x, &bad, &mut l, 1).is_err());
                assert!(
                    sparse_softmax_cross_entropy_fused_with(
                        isa, 2, 3, &x, &bad, 1.0, &mut l, &mut y, 2
                    )
                    .is_err()
                );
            }
            assert!(sparse_softmax_cross_entropy_with(isa, 2, 3, &x, &[0], &mut l, 1).is_err());
            assert!(
                sparse_softmax_cross_entropy_fused_with(
                    isa,
                    2,
                    3,
                    &x,
                    &[0, 1],
                    1.0,
                    &mut l,
                    &mut y[..5],
                    2
                )
                .is_err()
            );
        }
    }
}
