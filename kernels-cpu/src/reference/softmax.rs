//! Softmax and log-softmax over the last axis of `[rows, cols]` data, and their gradients
//! (computed from the forward OUTPUT, which is what a training graph keeps).
//!
//! Both subtract the row maximum first, so large logits neither overflow nor lose precision.

use super::Real;
use crate::error::{check_len, check_param, checked_product};

/// Checks `rows, cols >= 1` and returns `rows * cols`.
fn check_shape(kernel: &'static str, rows: usize, cols: usize) -> crate::Result<usize> {
    check_param(kernel, "rows", rows > 0, || "must be at least 1".into())?;
    check_param(kernel, "cols", cols > 0, || "must be at least 1".into())?;
    checked_product(kernel, &[rows, cols])
}

/// `(max, log(sum(exp(x - max))))` of one row: `logsumexp = max + second`. The second is
/// `ln_1p` of the sum without one maximum term (which is exactly 1), so a confident row keeps
/// its tiny `logsumexp - max` (1 + 3e-16 rounds to 1 + 2^-52 in f64, and `ln` of that is a
/// 30% error on a loss the kernels compute correctly).
pub(crate) fn row_max_and_log_sum<T: Real>(row: &[T]) -> (f64, f64) {
    let max = row
        .iter()
        .map(|v| v.to_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        let sum: f64 = row.iter().map(|v| (v.to_f64() - max).exp()).sum();
        return (max, sum.ln());
    }
    let mut skipped = false;
    let mut rest = 0.0f64;
    for v in row {
        let d = v.to_f64() - max;
        if d == 0.0 && !skipped {
            skipped = true;
        } else {
            rest += d.exp();
        }
    }
    (max, rest.ln_1p())
}

/// `y[r, c] = exp(x[r, c]) / sum_c' exp(x[r, c'])`.
pub fn softmax<T: Real>(rows: usize, cols: usize, x: &[T], y: &mut [T]) -> crate::Result<()> {
    const K: &str = "softmax";
    let n = check_shape(K, rows, cols)?;
    check_len(K, "x", n, x.len())?;
    check_len(K, "y", n, y.len())?;
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let (max, log_sum) = row_max_and_log_sum(xr);
        for (yi, xi) in yr.iter_mut().zip(xr) {
            *yi = T::from_f64((xi.to_f64() - max - log_sum).exp());
        }
    }
    Ok(())
}

/// `y[r, c] = x[r, c] - log(sum_c' exp(x[r, c']))`.
pub fn log_softmax<T: Real>(rows: usize, cols: usize, x: &[T], y: &mut [T]) -> crate::Result<()> {
    const K: &str = "log_softmax";
    let n = check_shape(K, rows, cols)?;
    check_len(K, "x", n, x.len())?;
    check_len(K, "y", n, y.len())?;
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let (max, log_sum) = row_max_and_log_sum(xr);
        for (yi, xi) in yr.iter_mut().zip(xr) {
            *yi = T::from_f64(xi.to_f64() - max - log_sum);
        }
    }
    Ok(())
}

/// Gradient of [`softmax`] from its output `y`: `dx = y * (dy - sum_c dy * y)` per row.
/// Overwrites `dx`.
pub fn softmax_grad<T: Real>(
    rows: usize,
    cols: usize,
    y: &[T],
    dy: &[T],
    dx: &mut [T],
) -> crate::Result<()> {
    const K: &str = "softmax_grad";
    let n = check_shape(K, rows, cols)?;
    check_len(K, "y", n, y.len())?;
    check_len(K, "dy", n, dy.len())?;
    check_len(K, "dx", n, dx.len())?;
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let dot: f64 = yr
            .iter()
            .zip(dyr)
            .map(|(a, b)| a.to_f64() * b.to_f64())
            .sum();
        for ((d, yi), dyi) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = T::from_f64(yi.to_f64() * (dyi.to_f64() - dot));
        }
    }
    Ok(())
}

/// Gradient of [`log_softmax`] from its output `y`: `dx = dy - exp(y) * sum_c dy` per row.
/// Overwrites `dx`.
pub fn log_softmax_grad<T: Real>(
    rows: usize,
    cols: usize,
    y: &[T],
    dy: &[T],
    dx: &mut [T],
) -> crate::Result<()> {
    const K: &str = "log_softmax_grad";
    let n = check_shape(K, rows, cols)?;
    check_len(K, "y", n, y.len())?;
    check_len(K, "dy", n, dy.len())?;
    check_len(K, "dx", n, dx.len())?;
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let sum: f64 = dyr.iter().map(|v| v.to_f64()).sum();
        for ((d, yi), dyi) in dxr.iter_mut().zip(yr).zip(dyr) {
            *d = T::from_f64(dyi.to_f64() - yi.to_f64().exp() * sum);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_range, rand_vec, rng};

    fn sm(rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        softmax(rows, cols, x, &mut y).unwrap();
        y
    }

    fn lsm(rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        log_softmax(rows, cols, x, &mut y).unwrap();
        y
    }

    #[test]
    fn hand_computed() {
        // softmax([1, 2, 3]) = [1, e, e^2] / (1 + e + e^2).
        let e = std::f64::consts::E;
        let s = 1.0 + e + e * e;
        let want = [1.0 / s, e / s, e * e / s];
        assert_close("softmax", &sm(1, 3, &[1.0, 2.0, 3.0]), &want, 1e-15);
        let want_log: Vec<f64> = want.iter().map(|v| v.ln()).collect();
        assert_close(
            "log_softmax",
            &lsm(1, 3, &[1.0, 2.0, 3.0]),
            &want_log,
            1e-15,
        );
        // Shift invariance, and no overflow for huge logits.
        assert_close(
            "shifted",
            &sm(1, 3, &[1001.0, 1002.0, 1003.0]),
            &want,
            1e-13,
        );
        let y = lsm(1, 2, &[-1000.0, 1000.0]);
        assert_eq!(y, vec![-2000.0, 0.0]);
    }

    #[test]
    fn rows_sum_to_one() {
        let mut r = rng("softmax::rows_sum_to_one");
        let (rows, cols) = (r.range(1, 9), r.range(1, 9));
        let y = sm(rows, cols, &rand_range(&mut r, rows * cols, -20.0, 20.0));
        for row in y.chunks(cols) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        }
    }

    #[test]
    fn grads_match_finite_differences() {
        let mut r = rng("softmax::grads_match_finite_differences");
        for _ in 0..8 {
            let (rows, cols) = (r.range(1, 6), r.range(1, 9));
            let n = rows * cols;
            let x = rand_range(&mut r, n, -3.0, 3.0);
            let dy = rand_vec(&mut r, n);
            let mut dx = vec![0.0; n];
            softmax_grad(rows, cols, &sm(rows, cols, &x), &dy, &mut dx).unwrap();
            check_grad("softmax", &|v| sm(rows, cols, v), &x, &dy, &dx);
            log_softmax_grad(rows, cols, &lsm(rows, cols, &x), &dy, &mut dx).unwrap();
            check_grad("log_softmax", &|v| lsm(rows, cols, v), &x, &dy, &dx);
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("softmax::f32_agrees_with_f64");
        let (rows, cols) = (r.range(1, 9), r.range(1, 17));
        let n = rows * cols;
        let x32: Vec<f32> = rand_range(&mut r, n, -5.0, 5.0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        let w = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let mut y32 = vec![0.0f32; n];
        softmax(rows, cols, &x32, &mut y32).unwrap();
        assert_close("softmax f32", &w(&y32), &sm(rows, cols, &x64), 1e-6);
        log_softmax(rows, cols, &x32, &mut y32).unwrap();
        assert_close("log_softmax f32", &w(&y32), &lsm(rows, cols, &x64), 1e-6);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f64; 6];
        let mut y = [0.0f64; 6];
        assert!(softmax(2, 3, &x, &mut y).is_ok());
        assert!(softmax(0, 3, &x, &mut y).is_err());
        assert!(softmax(2, 0, &x, &mut y).is_err());
        assert!(softmax(2, 3, &x[..5], &mut y).is_err());
        assert!(log_softmax(3, 3, &x, &mut y).is_err());
        assert!(softmax(usize::MAX, 3, &x, &mut y).is_err());
        assert!(softmax_grad(2, 3, &x, &x[..5], &mut y).is_err());
        assert!(log_softmax_grad(2, 3, &x, &x, &mut y[..5]).is_err());
    }
}
