//! Inverted dropout with a counter-based mask: element `i` is kept iff
//! `rng::uniform(seed, i) >= rate`, and kept elements are scaled by `1 / (1 - rate)`.
//!
//! Because the mask is a pure function of `(seed, i)`, the backward pass regenerates it instead
//! of storing it, and every backend (GPU shader, CPU threads) draws exactly the same mask.
//! The rate is an `f32` so the comparison with the 24-bit uniform draw is exact everywhere.

use super::Real;
use crate::error::{check_len, check_param};
use crate::rng::uniform;

/// Refuses a rate outside `[0, 1)` (NaN included).
fn check_rate(kernel: &'static str, rate: f32) -> crate::Result<()> {
    check_param(kernel, "rate", (0.0..1.0).contains(&rate), || {
        format!("must be in [0, 1), got {rate}")
    })
}

/// The mask value of element `i`: `1 / (1 - rate)` if kept, else 0.
fn mask_value(rate: f32, seed: u64, i: usize) -> f64 {
    if uniform(seed, i as u64) >= rate {
        1.0 / (1.0 - f64::from(rate))
    } else {
        0.0
    }
}

/// `y[i] = x[i] * mask[i]` (see [`dropout_mask`]). `rate = 0` is the identity.
pub fn dropout<T: Real>(rate: f32, seed: u64, x: &[T], y: &mut [T]) -> crate::Result<()> {
    const K: &str = "dropout";
    check_rate(K, rate)?;
    check_len(K, "y", x.len(), y.len())?;
    for (i, (yi, xi)) in y.iter_mut().zip(x).enumerate() {
        *yi = T::from_f64(xi.to_f64() * mask_value(rate, seed, i));
    }
    Ok(())
}

/// Writes the first `n` mask values of stream `seed`: `1 / (1 - rate)` where the element is
/// kept (`uniform(seed, i) >= rate`), 0 where it is dropped.
pub fn dropout_mask<T: Real>(rate: f32, seed: u64, n: usize, mask: &mut [T]) -> crate::Result<()> {
    const K: &str = "dropout_mask";
    check_rate(K, rate)?;
    check_len(K, "mask", n, mask.len())?;
    for (i, m) in mask.iter_mut().enumerate() {
        *m = T::from_f64(mask_value(rate, seed, i));
    }
    Ok(())
}

/// Gradient of [`dropout`] with the same `rate` and `seed`: `dx[i] = dy[i] * mask[i]`.
/// Overwrites `dx`.
pub fn dropout_grad<T: Real>(rate: f32, seed: u64, dy: &[T], dx: &mut [T]) -> crate::Result<()> {
    const K: &str = "dropout_grad";
    check_rate(K, rate)?;
    check_len(K, "dx", dy.len(), dx.len())?;
    for (i, (dxi, dyi)) in dx.iter_mut().zip(dy).enumerate() {
        *dxi = T::from_f64(dyi.to_f64() * mask_value(rate, seed, i));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_range, rand_vec, rng};

    #[test]
    fn kept_fraction_and_scale() {
        let mut r = rng("dropout::kept_fraction_and_scale");
        for rate in [0.1f32, 0.5, 0.9] {
            let seed = u64::from(r.next_u32());
            let n = 100_000;
            let mut mask = vec![0.0f64; n];
            dropout_mask(rate, seed, n, &mut mask).unwrap();
            let scale = 1.0 / (1.0 - f64::from(rate));
            assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
            let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / n as f64;
            // Binomial std at n = 1e5 is at most 0.0016; 0.01 is over 6 sigma.
            assert!(
                (kept - (1.0 - f64::from(rate))).abs() < 0.01,
                "rate {rate}: kept {kept}"
            );
            // Inverted dropout preserves the mean in expectation.
            let x = rand_range(&mut r, n, 1.0, 2.0);
            let mut y = vec![0.0; n];
            dropout(rate, seed, &x, &mut y).unwrap();
            let (mx, my) = (
                x.iter().sum::<f64>() / n as f64,
                y.iter().sum::<f64>() / n as f64,
            );
            assert!(
                (my / mx - 1.0).abs() < 0.05,
                "rate {rate}: mean {my} vs {mx}"
            );
        }
    }

    #[test]
    fn same_seed_same_mask_and_rule() {
        let mut r = rng("dropout::same_seed_same_mask_and_rule");
        let seed = u64::from(r.next_u32());
        let n = 1000;
        let (mut m1, mut m2, mut m3) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        dropout_mask(0.3, seed, n, &mut m1).unwrap();
        dropout_mask(0.3, seed, n, &mut m2).unwrap();
        dropout_mask(0.3, seed ^ 1, n, &mut m3).unwrap();
        assert_eq!(m1, m2);
        assert_ne!(m1, m3);
        for (i, &m) in m1.iter().enumerate() {
            assert_eq!(m != 0.0, uniform(seed, i as u64) >= 0.3, "element {i}");
        }
    }

    #[test]
    fn rate_zero_is_identity() {
        let mut r = rng("dropout::rate_zero_is_identity");
        let x = rand_vec(&mut r, 100);
        let mut y = vec![0.0; 100];
        dropout(0.0, 42, &x, &mut y).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn forward_and_grad_match_mask() {
        let mut r = rng("dropout::forward_and_grad_match_mask");
        for _ in 0..5 {
            let n = r.range(1, 200);
            let rate = r.uniform(0.0, 0.95) as f32;
            let seed = u64::from(r.next_u32());
            let x = rand_vec(&mut r, n);
            let dy = rand_vec(&mut r, n);
            let mut mask = vec![0.0; n];
            dropout_mask(rate, seed, n, &mut mask).unwrap();
            let mut y = vec![0.0; n];
            dropout(rate, seed, &x, &mut y).unwrap();
            let want: Vec<f64> = x.iter().zip(&mask).map(|(a, m)| a * m).collect();
            assert_eq!(y, want);
            let mut dx = vec![f64::NAN; n];
            dropout_grad(rate, seed, &dy, &mut dx).unwrap();
            let want: Vec<f64> = dy.iter().zip(&mask).map(|(a, m)| a * m).collect();
            assert_eq!(dx, want);
            let f = |v: &[f64]| {
                let mut out = vec![0.0; v.len()];
                dropout(rate, seed, v, &mut out).unwrap();
                out
            };
            check_grad("dropout", &f, &x, &dy, &dx);
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("dropout::f32_agrees_with_f64");
        let x32: Vec<f32> = rand_vec(&mut r, 256).iter().map(|&v| v as f32).collect();
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        let (mut y32, mut y64) = (vec![0.0f32; 256], vec![0.0f64; 256]);
        dropout(0.3, 9, &x32, &mut y32).unwrap();
        dropout(0.3, 9, &x64, &mut y64).unwrap();
        let y: Vec<f64> = y32.iter().map(|&v| f64::from(v)).collect();
        assert_close("dropout f32", &y, &y64, 1e-6);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f64; 4];
        let mut y = [0.0f64; 4];
        for rate in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
            assert!(dropout(rate, 1, &x, &mut y).is_err(), "rate {rate}");
            assert!(dropout_mask(rate, 1, 4, &mut y).is_err(), "rate {rate}");
            assert!(dropout_grad(rate, 1, &x, &mut y).is_err(), "rate {rate}");
        }
        assert!(dropout(0.5, 1, &x, &mut y[..3]).is_err());
        assert!(dropout_mask(0.5, 1, 5, &mut y).is_err());
        assert!(dropout_grad(0.5, 1, &x[..3], &mut y).is_err());
    }
}
