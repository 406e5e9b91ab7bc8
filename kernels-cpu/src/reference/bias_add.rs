//! Bias addition over the last (channel) axis: `y[r, c] = x[r, c] + b[c]`, and its gradients.
//!
//! Any tensor whose last axis is the channel axis (NHWC activations, `[batch, features]`
//! matrices) is viewed as `rows x channels`. The gradient with respect to `x` is the identity
//! (`dx = dy`, see [`bias_add_grad_input`]); the gradient with respect to `b` sums `dy` over the
//! rows. The convolution kernels reuse [`bias_add_grad_bias`] for their own bias gradients.

use super::Real;
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "bias_add";

/// Shape of a bias addition: a `rows x channels` row-major tensor and a `channels` bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BiasAddParams {
    /// Product of every axis but the last (e.g. `n * h * w` for NHWC).
    pub rows: usize,
    /// Length of the last axis, and of the bias.
    pub channels: usize,
}

impl BiasAddParams {
    /// Refuses zero sizes and element counts that overflow.
    pub fn validate(&self) -> Result<()> {
        self.numel().map(|_| ())
    }

    /// Element count of `x` / `y`, `rows * channels`.
    pub fn numel(&self) -> Result<usize> {
        check_param(KERNEL, "rows", self.rows > 0, || "must be positive".into())?;
        check_param(KERNEL, "channels", self.channels > 0, || {
            "must be positive".into()
        })?;
        checked_product(KERNEL, &[self.rows, self.channels])
    }
}

/// `y[r, c] = x[r, c] + b[c]`, with `x`, `y` of length `rows * channels` and `b` of length
/// `channels`.
pub fn bias_add<T: Real>(p: BiasAddParams, x: &[T], b: &[T], y: &mut [T]) -> Result<()> {
    let len = p.numel()?;
    check_len(KERNEL, "x", len, x.len())?;
    check_len(KERNEL, "b", p.channels, b.len())?;
    check_len(KERNEL, "y", len, y.len())?;
    for (x_row, y_row) in x
        .chunks_exact(p.channels)
        .zip(y.chunks_exact_mut(p.channels))
    {
        for ((out, xv), bv) in y_row.iter_mut().zip(x_row).zip(b) {
            *out = T::from_f64(xv.to_f64() + bv.to_f64());
        }
    }
    Ok(())
}

/// Gradient with respect to `x`: the identity, so `dx = dy` (copied, to keep the
/// "every gradient function overwrites its output" contract uniform).
pub fn bias_add_grad_input<T: Real>(p: BiasAddParams, dy: &[T], dx: &mut [T]) -> Result<()> {
    let len = p.numel()?;
    check_len(KERNEL, "dy", len, dy.len())?;
    check_len(KERNEL, "dx", len, dx.len())?;
    dx.copy_from_slice(dy);
    Ok(())
}

/// Gradient with respect to `b`: `db[c] = sum_r dy[r, c]` (overwrites `db`).
pub fn bias_add_grad_bias<T: Real>(p: BiasAddParams, dy: &[T], db: &mut [T]) -> Result<()> {
    let len = p.numel()?;
    check_len(KERNEL, "dy", len, dy.len())?;
    check_len(KERNEL, "db", p.channels, db.len())?;
    for (c, out) in db.iter_mut().enumerate() {
        let mut acc = 0.0f64;
        for r in 0..p.rows {
            acc += dy[r * p.channels + c].to_f64();
        }
        *out = T::from_f64(acc);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KernelError;
    use crate::reference::window::test_support::{round_f32, to_f32, to_f64};
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn forward(p: BiasAddParams, x: &[f64], b: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        bias_add(p, x, b, &mut y).unwrap();
        y
    }

    #[test]
    fn hand_computed() {
        let p = BiasAddParams {
            rows: 2,
            channels: 3,
        };
        let y = forward(p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.5, -1.0, 10.0]);
        assert_eq!(y, vec![1.5, 1.0, 13.0, 4.5, 4.0, 16.0]);
        let mut db = vec![0.0; 3];
        bias_add_grad_bias(p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &mut db).unwrap();
        assert_eq!(db, vec![5.0, 7.0, 9.0]);
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("bias_add_f32_matches_f64");
        let p = BiasAddParams {
            rows: rng.range(1, 20),
            channels: rng.range(1, 9),
        };
        let x = round_f32(&rand_vec(&mut rng, p.rows * p.channels));
        let b = round_f32(&rand_vec(&mut rng, p.channels));
        let mut y32 = vec![0.0f32; x.len()];
        bias_add(p, &to_f32(&x), &to_f32(&b), &mut y32).unwrap();
        assert_close("bias_add f32", &to_f64(&y32), &forward(p, &x, &b), 1e-6);
        let mut db32 = vec![0.0f32; p.channels];
        bias_add_grad_bias(p, &to_f32(&x), &mut db32).unwrap();
        let mut db = vec![0.0f64; p.channels];
        bias_add_grad_bias(p, &x, &mut db).unwrap();
        assert_close("bias_add_grad_bias f32", &to_f64(&db32), &db, 1e-6);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng("bias_add_gradients_match_finite_differences");
        for _ in 0..6 {
            let p = BiasAddParams {
                rows: rng.range(1, 12),
                channels: rng.range(1, 6),
            };
            let x = rand_vec(&mut rng, p.rows * p.channels);
            let b = rand_vec(&mut rng, p.channels);
            let dy = rand_vec(&mut rng, x.len());
            let mut dx = vec![7.0; x.len()];
            bias_add_grad_input(p, &dy, &mut dx).unwrap();
            check_grad("bias_add dx", &|x| forward(p, x, &b), &x, &dy, &dx);
            let mut db = vec![7.0; p.channels];
            bias_add_grad_bias(p, &dy, &mut db).unwrap();
            check_grad("bias_add db", &|b| forward(p, &x, b), &b, &dy, &db);
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = BiasAddParams {
            rows: 2,
            channels: 3,
        };
        let x = [1.0f64; 6];
        let mut y = [0.0f64; 6];
        assert!(matches!(
            bias_add(p, &x, &[1.0; 2], &mut y),
            Err(KernelError::Length {
                arg: "b",
                expected: 3,
                actual: 2,
                ..
            })
        ));
        assert!(matches!(
            bias_add(p, &x[..5], &[1.0; 3], &mut y),
            Err(KernelError::Length { arg: "x", .. })
        ));
        assert!(matches!(
            bias_add_grad_bias(p, &x, &mut [0.0; 4]),
            Err(KernelError::Length { arg: "db", .. })
        ));
        assert!(bias_add_grad_input(p, &x, &mut [0.0; 5]).is_err());
        let zero = BiasAddParams {
            rows: 0,
            channels: 3,
        };
        assert!(matches!(
            bias_add(zero, &[], &[1.0; 3], &mut []),
            Err(KernelError::Param { .. })
        ));
        let huge = BiasAddParams {
            rows: usize::MAX,
            channels: 2,
        };
        assert!(huge.validate().is_err());
    }
}
