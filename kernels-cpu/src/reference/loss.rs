//! Training losses and their gradients: softmax cross-entropy (dense and sparse targets), mean
//! squared error, sigmoid binary cross-entropy with logits, and smooth L1 (Huber).
//!
//! Every loss is the MEAN over the batch (cross-entropy: over rows; the elementwise losses:
//! over all elements), written as one scalar into `loss: &mut T`. Every gradient takes the
//! upstream scalar `dloss` (1 for a plain loss) and overwrites the gradient slice. Logit-based
//! losses are evaluated in their stable forms, so large logits neither overflow nor cancel.

use super::Real;
use super::activation::sigmoid;
use super::softmax::row_max_and_log_sum;
use crate::error::{KernelError, check_len, check_param, checked_product};

/// Checks `rows, classes >= 1` and returns `rows * classes`.
fn check_rows(kernel: &'static str, rows: usize, classes: usize) -> crate::Result<usize> {
    check_param(kernel, "rows", rows > 0, || "must be at least 1".into())?;
    check_param(kernel, "classes", classes > 0, || {
        "must be at least 1".into()
    })?;
    checked_product(kernel, &[rows, classes])
}

/// Checks that two elementwise operands are equally long and non-empty; returns the length.
fn check_pair<T>(
    kernel: &'static str,
    a_name: &'static str,
    a: &[T],
    b_name: &'static str,
    b: &[T],
) -> crate::Result<usize> {
    check_param(kernel, a_name, !a.is_empty(), || "must not be empty".into())?;
    check_len(kernel, b_name, a.len(), b.len())?;
    Ok(a.len())
}

/// Checks every label against `[0, classes)` and converts them to indices.
fn check_labels(
    kernel: &'static str,
    rows: usize,
    classes: usize,
    labels: &[i32],
) -> crate::Result<Vec<usize>> {
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

/// Softmax cross-entropy with dense (one-hot or soft) targets, averaged over rows:
/// `loss = -(1/rows) * sum_r sum_c targets[r, c] * log_softmax(logits)[r, c]`.
/// `logits` and `targets` are `[rows, classes]`; targets are not required to sum to 1.
pub fn softmax_cross_entropy<T: Real>(
    rows: usize,
    classes: usize,
    logits: &[T],
    targets: &[T],
    loss: &mut T,
) -> crate::Result<()> {
    const K: &str = "softmax_cross_entropy";
    let n = check_rows(K, rows, classes)?;
    check_len(K, "logits", n, logits.len())?;
    check_len(K, "targets", n, targets.len())?;
    let mut total = 0.0f64;
    for (zr, tr) in logits
        .chunks_exact(classes)
        .zip(targets.chunks_exact(classes))
    {
        let (max, log_sum) = row_max_and_log_sum(zr);
        for (z, t) in zr.iter().zip(tr) {
            total -= t.to_f64() * (z.to_f64() - max - log_sum);
        }
    }
    *loss = T::from_f64(total / rows as f64);
    Ok(())
}

/// Gradient of [`softmax_cross_entropy`] with respect to the logits:
/// `dlogits[r, c] = dloss / rows * (softmax[r, c] * sum_c' targets[r, c'] - targets[r, c])`,
/// which is the familiar `(p - t) * dloss / rows` when each target row sums to 1.
/// Overwrites `dlogits`.
pub fn softmax_cross_entropy_grad<T: Real>(
    rows: usize,
    classes: usize,
    logits: &[T],
    targets: &[T],
    dloss: T,
    dlogits: &mut [T],
) -> crate::Result<()> {
    const K: &str = "softmax_cross_entropy_grad";
    let n = check_rows(K, rows, classes)?;
    check_len(K, "logits", n, logits.len())?;
    check_len(K, "targets", n, targets.len())?;
    check_len(K, "dlogits", n, dlogits.len())?;
    let scale = dloss.to_f64() / rows as f64;
    let rows_iter = logits
        .chunks_exact(classes)
        .zip(targets.chunks_exact(classes));
    for ((zr, tr), dr) in rows_iter.zip(dlogits.chunks_exact_mut(classes)) {
        let (max, log_sum) = row_max_and_log_sum(zr);
        let t_sum: f64 = tr.iter().map(|t| t.to_f64()).sum();
        for ((d, z), t) in dr.iter_mut().zip(zr).zip(tr) {
            let p = (z.to_f64() - max - log_sum).exp();
            *d = T::from_f64(scale * (p * t_sum - t.to_f64()));
        }
    }
    Ok(())
}

/// Softmax cross-entropy with integer class labels, averaged over rows:
/// `loss = -(1/rows) * sum_r log_softmax(logits)[r, labels[r]]`. `logits` is
/// `[rows, classes]`, `labels` is `[rows]`; a label outside `[0, classes)` is an error.
pub fn sparse_softmax_cross_entropy<T: Real>(
    rows: usize,
    classes: usize,
    logits: &[T],
    labels: &[i32],
    loss: &mut T,
) -> crate::Result<()> {
    const K: &str = "sparse_softmax_cross_entropy";
    let n = check_rows(K, rows, classes)?;
    check_len(K, "logits", n, logits.len())?;
    let labels = check_labels(K, rows, classes, labels)?;
    let mut total = 0.0f64;
    for (zr, &label) in logits.chunks_exact(classes).zip(&labels) {
        let (max, log_sum) = row_max_and_log_sum(zr);
        total -= zr[label].to_f64() - max - log_sum;
    }
    *loss = T::from_f64(total / rows as f64);
    Ok(())
}

/// Gradient of [`sparse_softmax_cross_entropy`] with respect to the logits:
/// `dlogits[r, c] = dloss / rows * (softmax[r, c] - [c == labels[r]])`. Overwrites `dlogits`.
pub fn sparse_softmax_cross_entropy_grad<T: Real>(
    rows: usize,
    classes: usize,
    logits: &[T],
    labels: &[i32],
    dloss: T,
    dlogits: &mut [T],
) -> crate::Result<()> {
    const K: &str = "sparse_softmax_cross_entropy_grad";
    let n = check_rows(K, rows, classes)?;
    check_len(K, "logits", n, logits.len())?;
    check_len(K, "dlogits", n, dlogits.len())?;
    let labels = check_labels(K, rows, classes, labels)?;
    let scale = dloss.to_f64() / rows as f64;
    let rows_iter = logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes));
    for ((zr, dr), &label) in rows_iter.zip(&labels) {
        let (max, log_sum) = row_max_and_log_sum(zr);
        for (c, (d, z)) in dr.iter_mut().zip(zr).enumerate() {
            let p = (z.to_f64() - max - log_sum).exp();
            let onehot = if c == label { 1.0 } else { 0.0 };
            *d = T::from_f64(scale * (p - onehot));
        }
    }
    Ok(())
}

/// Mean squared error over all elements: `loss = mean((pred - target)^2)`.
pub fn mse<T: Real>(pred: &[T], target: &[T], loss: &mut T) -> crate::Result<()> {
    const K: &str = "mse";
    let n = check_pair(K, "pred", pred, "target", target)?;
    let total: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (p.to_f64() - t.to_f64()).powi(2))
        .sum();
    *loss = T::from_f64(total / n as f64);
    Ok(())
}

/// Gradient of [`mse`] with respect to the prediction: `dpred = dloss * 2 (pred - target) / n`.
/// The gradient with respect to the target is its negation. Overwrites `dpred`.
pub fn mse_grad<T: Real>(pred: &[T], target: &[T], dloss: T, dpred: &mut [T]) -> crate::Result<()> {
    const K: &str = "mse_grad";
    let n = check_pair(K, "pred", pred, "target", target)?;
    check_len(K, "dpred", n, dpred.len())?;
    let scale = 2.0 * dloss.to_f64() / n as f64;
    for ((d, p), t) in dpred.iter_mut().zip(pred).zip(target) {
        *d = T::from_f64(scale * (p.to_f64() - t.to_f64()));
    }
    Ok(())
}

/// Binary cross-entropy on logits, averaged over all elements, in the stable form
/// `max(x, 0) - x * t + log(1 + exp(-|x|))` (equal to
/// `-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))` without overflowing `exp`).
pub fn sigmoid_bce_with_logits<T: Real>(
    logits: &[T],
    targets: &[T],
    loss: &mut T,
) -> crate::Result<()> {
    const K: &str = "sigmoid_bce_with_logits";
    let n = check_pair(K, "logits", logits, "targets", targets)?;
    let total: f64 = logits
        .iter()
        .zip(targets)
        .map(|(x, t)| {
            let (x, t) = (x.to_f64(), t.to_f64());
            x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
        })
        .sum();
    *loss = T::from_f64(total / n as f64);
    Ok(())
}

/// Gradient of [`sigmoid_bce_with_logits`] with respect to the logits:
/// `dlogits = dloss * (sigmoid(x) - t) / n`. Overwrites `dlogits`.
pub fn sigmoid_bce_with_logits_grad<T: Real>(
    logits: &[T],
    targets: &[T],
    dloss: T,
    dlogits: &mut [T],
) -> crate::Result<()> {
    const K: &str = "sigmoid_bce_with_logits_grad";
    let n = check_pair(K, "logits", logits, "targets", targets)?;
    check_len(K, "dlogits", n, dlogits.len())?;
    let scale = dloss.to_f64() / n as f64;
    for ((d, x), t) in dlogits.iter_mut().zip(logits).zip(targets) {
        *d = T::from_f64(scale * (sigmoid(x.to_f64()) - t.to_f64()));
    }
    Ok(())
}

/// Refuses a negative or non-finite Huber `beta`.
fn check_beta(kernel: &'static str, beta: f64) -> crate::Result<()> {
    check_param(kernel, "beta", beta.is_finite() && beta >= 0.0, || {
        format!("must be finite and non-negative, got {beta}")
    })
}

/// Smooth L1 loss (PyTorch `SmoothL1Loss`), averaged over all elements: with
/// `d = pred - target`, each element contributes `0.5 d^2 / beta` if `|d| < beta`, else
/// `|d| - 0.5 beta`. `beta = 0` is plain L1.
pub fn smooth_l1<T: Real>(beta: f64, pred: &[T], target: &[T], loss: &mut T) -> crate::Result<()> {
    const K: &str = "smooth_l1";
    check_beta(K, beta)?;
    let n = check_pair(K, "pred", pred, "target", target)?;
    let total: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| {
            let d = p.to_f64() - t.to_f64();
            // `beta = 0` never takes the quadratic branch, so there is no division by zero.
            if d.abs() < beta {
                0.5 * d * d / beta
            } else {
                d.abs() - 0.5 * beta
            }
        })
        .sum();
    *loss = T::from_f64(total / n as f64);
    Ok(())
}

/// Gradient of [`smooth_l1`] with respect to the prediction: `dloss / n` times `d / beta`
/// inside the quadratic zone, `sign(d)` outside it (0 at `d = 0`, as PyTorch). The gradient
/// with respect to the target is its negation. Overwrites `dpred`.
pub fn smooth_l1_grad<T: Real>(
    beta: f64,
    pred: &[T],
    target: &[T],
    dloss: T,
    dpred: &mut [T],
) -> crate::Result<()> {
    const K: &str = "smooth_l1_grad";
    check_beta(K, beta)?;
    let n = check_pair(K, "pred", pred, "target", target)?;
    check_len(K, "dpred", n, dpred.len())?;
    let scale = dloss.to_f64() / n as f64;
    for ((g, p), t) in dpred.iter_mut().zip(pred).zip(target) {
        let d = p.to_f64() - t.to_f64();
        let local = if d.abs() < beta {
            d / beta
        } else if d > 0.0 {
            1.0
        } else if d < 0.0 {
            -1.0
        } else {
            0.0
        };
        *g = T::from_f64(scale * local);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_range, rand_vec, rng};

    fn scalar(f: impl FnOnce(&mut f64) -> crate::Result<()>) -> f64 {
        let mut l = f64::NAN;
        f(&mut l).unwrap();
        l
    }

    #[track_caller]
    fn near(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-14 * want.abs().max(1.0),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn cross_entropy_known_values() {
        // Row 0: logits [1, 2, 3], label 2: log(1 + e^-1 + e^-2).
        // Row 1: logits [0.5, -1, 2], label 0: logsumexp - 0.5.
        let logits = [1.0, 2.0, 3.0, 0.5, -1.0, 2.0];
        let (l0, l1) = (0.407_605_964_444_380_3, 1.741_311_296_657_157);
        near(
            scalar(|l| sparse_softmax_cross_entropy(1, 3, &logits[..3], &[2], l)),
            l0,
        );
        let mean = (l0 + l1) / 2.0;
        near(
            scalar(|l| sparse_softmax_cross_entropy(2, 3, &logits, &[2, 0], l)),
            mean,
        );
        let onehot = [0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        near(
            scalar(|l| softmax_cross_entropy(2, 3, &logits, &onehot, l)),
            mean,
        );
        // Huge logits stay finite: the loss of the winning class is ~0.
        let l = scalar(|l| sparse_softmax_cross_entropy(1, 2, &[1000.0, -1000.0], &[0], l));
        assert_eq!(l, 0.0);
        let l = scalar(|l| sparse_softmax_cross_entropy(1, 2, &[1000.0, -1000.0], &[1], l));
        near(l, 2000.0);
    }

    #[test]
    fn elementwise_known_values() {
        near(
            scalar(|l| mse(&[1.0, 2.0, 3.0], &[1.0, 0.0, 5.0], l)),
            8.0 / 3.0,
        );
        let bce = scalar(|l| sigmoid_bce_with_logits(&[0.0, 2.0], &[1.0, 0.0], l));
        near(
            bce,
            (std::f64::consts::LN_2 + 2.126_928_011_042_972_5) / 2.0,
        );
        // Large logits: no overflow, loss ~ |x| for the wrong label.
        near(
            scalar(|l| sigmoid_bce_with_logits(&[-800.0], &[1.0], l)),
            800.0,
        );
        near(
            scalar(|l| sigmoid_bce_with_logits(&[800.0], &[1.0], l)),
            0.0,
        );
        // d = [0.5, -2, 0] with beta 1: 0.125 + 1.5 + 0.
        let p = [1.5, 0.0, 3.0];
        let t = [1.0, 2.0, 3.0];
        near(scalar(|l| smooth_l1(1.0, &p, &t, l)), 1.625 / 3.0);
        near(scalar(|l| smooth_l1(0.0, &p, &t, l)), 2.5 / 3.0);
    }

    #[test]
    fn sparse_equals_dense_one_hot() {
        let mut r = rng("loss::sparse_equals_dense_one_hot");
        for _ in 0..5 {
            let (rows, classes) = (r.range(1, 6), r.range(1, 7));
            let logits = rand_range(&mut r, rows * classes, -4.0, 4.0);
            let labels: Vec<i32> = (0..rows).map(|_| r.range(0, classes - 1) as i32).collect();
            let mut onehot = vec![0.0; rows * classes];
            for (row, &l) in labels.iter().enumerate() {
                onehot[row * classes + l as usize] = 1.0;
            }
            let a = scalar(|l| sparse_softmax_cross_entropy(rows, classes, &logits, &labels, l));
            let b = scalar(|l| softmax_cross_entropy(rows, classes, &logits, &onehot, l));
            near(a, b);
            let (mut ga, mut gb) = (vec![0.0; rows * classes], vec![0.0; rows * classes]);
            sparse_softmax_cross_entropy_grad(rows, classes, &logits, &labels, 0.7, &mut ga)
                .unwrap();
            softmax_cross_entropy_grad(rows, classes, &logits, &onehot, 0.7, &mut gb).unwrap();
            assert_close("sparse vs dense grad", &ga, &gb, 1e-14);
        }
    }

    #[test]
    fn cross_entropy_grads_match_finite_differences() {
        let mut r = rng("loss::cross_entropy_grads_match_finite_differences");
        for _ in 0..8 {
            let (rows, classes) = (r.range(1, 6), r.range(1, 7));
            let n = rows * classes;
            let logits = rand_range(&mut r, n, -3.0, 3.0);
            // Soft targets: a random distribution per row (and, once, unnormalised rows).
            let mut targets = rand_range(&mut r, n, 0.1, 1.0);
            for row in targets.chunks_mut(classes) {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            let labels: Vec<i32> = (0..rows).map(|_| r.range(0, classes - 1) as i32).collect();
            let dloss = r.uniform(0.5, 2.0);
            let mut g = vec![0.0; n];
            softmax_cross_entropy_grad(rows, classes, &logits, &targets, dloss, &mut g).unwrap();
            let f = |v: &[f64]| {
                vec![scalar(|l| {
                    softmax_cross_entropy(rows, classes, v, &targets, l)
                })]
            };
            check_grad("softmax CE", &f, &logits, &[dloss], &g);
            let unnorm = rand_range(&mut r, n, 0.0, 2.0);
            softmax_cross_entropy_grad(rows, classes, &logits, &unnorm, dloss, &mut g).unwrap();
            let f = |v: &[f64]| {
                vec![scalar(|l| {
                    softmax_cross_entropy(rows, classes, v, &unnorm, l)
                })]
            };
            check_grad("softmax CE unnormalised", &f, &logits, &[dloss], &g);
            sparse_softmax_cross_entropy_grad(rows, classes, &logits, &labels, dloss, &mut g)
                .unwrap();
            let f = |v: &[f64]| {
                vec![scalar(|l| {
                    sparse_softmax_cross_entropy(rows, classes, v, &labels, l)
                })]
            };
            check_grad("sparse CE", &f, &logits, &[dloss], &g);
        }
    }

    #[test]
    fn elementwise_grads_match_finite_differences() {
        let mut r = rng("loss::elementwise_grads_match_finite_differences");
        for _ in 0..8 {
            let n = r.range(1, 30);
            let pred = rand_range(&mut r, n, -3.0, 3.0);
            let target = rand_vec(&mut r, n);
            let probs = rand_range(&mut r, n, 0.0, 1.0);
            let dloss = r.uniform(0.5, 2.0);
            let mut g = vec![0.0; n];

            mse_grad(&pred, &target, dloss, &mut g).unwrap();
            check_grad(
                "mse",
                &|v| vec![scalar(|l| mse(v, &target, l))],
                &pred,
                &[dloss],
                &g,
            );
            let neg: Vec<f64> = g.iter().map(|v| -v).collect();
            check_grad(
                "mse wrt target",
                &|v| vec![scalar(|l| mse(&pred, v, l))],
                &target,
                &[dloss],
                &neg,
            );

            sigmoid_bce_with_logits_grad(&pred, &probs, dloss, &mut g).unwrap();
            let f = |v: &[f64]| vec![scalar(|l| sigmoid_bce_with_logits(v, &probs, l))];
            check_grad("bce", &f, &pred, &[dloss], &g);

            // Keep |pred - target| at least 1e-3 away from the Huber kink at beta (and from 0).
            let beta = r.uniform(0.2, 1.5);
            let pred_h: Vec<f64> = pred
                .iter()
                .zip(&target)
                .map(|(&p, &t)| {
                    let d = p - t;
                    let near_kink = (d.abs() - beta).abs() < 1e-3 || d.abs() < 1e-3;
                    if near_kink { p + 2e-3 } else { p }
                })
                .collect();
            for b in [beta, 0.0] {
                smooth_l1_grad(b, &pred_h, &target, dloss, &mut g).unwrap();
                let f = |v: &[f64]| vec![scalar(|l| smooth_l1(b, v, &target, l))];
                check_grad(&format!("smooth_l1 beta {b}"), &f, &pred_h, &[dloss], &g);
            }
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("loss::f32_agrees_with_f64");
        let (rows, classes) = (4, 5);
        let n = rows * classes;
        let z32: Vec<f32> = rand_range(&mut r, n, -3.0, 3.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let t32: Vec<f32> = rand_range(&mut r, n, 0.0, 1.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let z64: Vec<f64> = z32.iter().map(|&v| f64::from(v)).collect();
        let t64: Vec<f64> = t32.iter().map(|&v| f64::from(v)).collect();
        let labels = [0, 4, 2, 1];
        let mut l32 = 0.0f32;
        let cmp =
            |a: f32, b: f64| assert!((f64::from(a) - b).abs() <= 1e-6 * b.abs(), "{a} vs {b}");
        softmax_cross_entropy(rows, classes, &z32, &t32, &mut l32).unwrap();
        cmp(
            l32,
            scalar(|l| softmax_cross_entropy(rows, classes, &z64, &t64, l)),
        );
        sparse_softmax_cross_entropy(rows, classes, &z32, &labels, &mut l32).unwrap();
        cmp(
            l32,
            scalar(|l| sparse_softmax_cross_entropy(rows, classes, &z64, &labels, l)),
        );
        mse(&z32, &t32, &mut l32).unwrap();
        cmp(l32, scalar(|l| mse(&z64, &t64, l)));
        sigmoid_bce_with_logits(&z32, &t32, &mut l32).unwrap();
        cmp(l32, scalar(|l| sigmoid_bce_with_logits(&z64, &t64, l)));
        smooth_l1(0.5, &z32, &t32, &mut l32).unwrap();
        cmp(l32, scalar(|l| smooth_l1(0.5, &z64, &t64, l)));
        let mut g32 = vec![0.0f32; n];
        let mut g64 = vec![0.0f64; n];
        sparse_softmax_cross_entropy_grad(rows, classes, &z32, &labels, 1.0, &mut g32).unwrap();
        sparse_softmax_cross_entropy_grad(rows, classes, &z64, &labels, 1.0, &mut g64).unwrap();
        let g: Vec<f64> = g32.iter().map(|&v| f64::from(v)).collect();
        assert_close("sparse CE grad f32", &g, &g64, 1e-6);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let z = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut l = 0.0f64;
        let mut g = [0.0f64; 6];
        assert!(sparse_softmax_cross_entropy(2, 3, &z, &[0, 2], &mut l).is_ok());
        for bad in [[0, 3], [-1, 0], [i32::MIN, 0], [0, i32::MAX]] {
            assert!(
                sparse_softmax_cross_entropy(2, 3, &z, &bad, &mut l).is_err(),
                "{bad:?}"
            );
            assert!(
                sparse_softmax_cross_entropy_grad(2, 3, &z, &bad, 1.0, &mut g).is_err(),
                "{bad:?}"
            );
        }
        assert!(sparse_softmax_cross_entropy(2, 3, &z, &[0], &mut l).is_err());
        assert!(sparse_softmax_cross_entropy(2, 3, &z[..5], &[0, 1], &mut l).is_err());
        assert!(sparse_softmax_cross_entropy(0, 3, &z, &[], &mut l).is_err());
        assert!(softmax_cross_entropy(2, 3, &z, &z[..5], &mut l).is_err());
        assert!(softmax_cross_entropy(2, 0, &z, &z, &mut l).is_err());
        assert!(softmax_cross_entropy_grad(2, 3, &z, &z, 1.0, &mut g[..5]).is_err());
        assert!(mse(&z, &z[..5], &mut l).is_err());
        assert!(mse::<f64>(&[], &[], &mut l).is_err());
        assert!(mse_grad(&z, &z, 1.0, &mut g[..5]).is_err());
        assert!(sigmoid_bce_with_logits(&z[..2], &z, &mut l).is_err());
        assert!(sigmoid_bce_with_logits_grad(&z, &z, 1.0, &mut g[..1]).is_err());
        assert!(smooth_l1(-1.0, &z, &z, &mut l).is_err());
        assert!(smooth_l1(f64::NAN, &z, &z, &mut l).is_err());
        assert!(smooth_l1(1.0, &z, &z[..3], &mut l).is_err());
        assert!(smooth_l1_grad(f64::INFINITY, &z, &z, 1.0, &mut g).is_err());
        assert!(smooth_l1_grad(1.0, &z, &z, 1.0, &mut g[..2]).is_err());
    }
}
