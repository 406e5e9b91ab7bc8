//! Test helpers shared by the kernel suites: fresh random data, closeness checks, and the
//! central finite-difference gradient checker.

use crate::rng::Rng;

/// The seed for this test: `SPORE_TEST_SEED` if set (to replay a failure), else fresh from the
/// clock, so every run draws new data. Printed so a failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("SPORE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            crate::rng::mix64(t ^ crate::rng::mix64(test.len() as u64))
        });
    println!("{test}: SPORE_TEST_SEED={s}");
    s
}

/// A fresh generator for `test` (see [`seed`]).
pub fn rng(test: &str) -> Rng {
    Rng::new(seed(test))
}

/// `n` values uniform in `[-1, 1)`, never all zero.
pub fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// `n` values uniform in `[lo, hi)`.
pub fn rand_range(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.uniform(lo, hi)).collect()
}

/// Relative L2 error `||a - b|| / max(||b||, 1e-30)`.
pub fn rel_l2(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let mut num = 0.0;
    let mut den = 0.0;
    for (a, e) in actual.iter().zip(expected) {
        num += (a - e) * (a - e);
        den += e * e;
    }
    (num / den.max(1e-60)).sqrt()
}

/// Asserts `rel_l2(actual, expected) <= tol`, printing the worst element otherwise.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    let err = rel_l2(actual, expected);
    if err > tol || !err.is_finite() {
        let (i, a, e) = actual
            .iter()
            .zip(expected)
            .enumerate()
            .map(|(i, (a, e))| (i, *a, *e))
            .fold((0usize, 0.0f64, 0.0f64), |w, c| {
                if (c.1 - c.2).abs() > (w.1 - w.2).abs() {
                    c
                } else {
                    w
                }
            });
        panic!("{what}: relative L2 error {err:.3e} > {tol:.1e}; worst at {i}: got {a}, want {e}");
    }
}

/// Central finite-difference gradient of `L(x) = <dy, f(x)>` with respect to `x`.
pub fn numeric_grad(f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], dy: &[f64], eps: f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + eps;
            let lp: f64 = f(&xp).iter().zip(dy).map(|(a, b)| a * b).sum();
            xp[i] = orig - eps;
            let lm: f64 = f(&xp).iter().zip(dy).map(|(a, b)| a * b).sum();
            xp[i] = orig;
            (lp - lm) / (2.0 * eps)
        })
        .collect()
}

/// Checks an analytic gradient against central finite differences in f64
/// (eps 1e-6, relative L2 tolerance 1e-6 — f64 differences are accurate to ~1e-9 away from kinks).
#[track_caller]
pub fn check_grad(
    what: &str,
    f: &dyn Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    dy: &[f64],
    analytic: &[f64],
) {
    let num = numeric_grad(f, x, dy, 1e-6);
    assert_close(what, analytic, &num, 1e-6);
}
