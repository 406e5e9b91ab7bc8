//! Batch normalisation over the channel (last) axis of `[rows, channels]` data, where
//! `rows = N*H*W` of an NHWC tensor: inference (frozen statistics) and training (batch
//! statistics, running-stat update) with their gradients.
//!
//! Conventions follow PyTorch: the output is normalised with the biased batch variance, while
//! the running variance is updated with the unbiased one, and
//! `running = (1 - momentum) * running + momentum * batch_stat`.

use super::Real;
use crate::error::{check_len, check_param, checked_product};

/// Shape and epsilon of an inference-mode batch norm (statistics given, not computed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams {
    /// Number of rows (`N*H*W`), at least 1.
    pub rows: usize,
    /// Number of channels (the last axis), at least 1.
    pub channels: usize,
    /// Added to the variance before the square root; finite and non-negative.
    pub eps: f64,
}

/// Shape, epsilon and momentum of a training-mode batch norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormTrainParams {
    /// Number of rows (`N*H*W`), at least 2: the unbiased variance needs two samples.
    pub rows: usize,
    /// Number of channels (the last axis), at least 1.
    pub channels: usize,
    /// Added to the biased batch variance before the square root; finite and non-negative.
    pub eps: f64,
    /// Weight of the batch statistic in the running-stat update, in `[0, 1]`.
    pub momentum: f64,
}

/// Checks rows/channels/eps and returns the element count `rows * channels`.
fn check_shape(
    kernel: &'static str,
    rows: usize,
    min_rows: usize,
    channels: usize,
    eps: f64,
) -> crate::Result<usize> {
    check_param(kernel, "rows", rows >= min_rows, || {
        format!("must be at least {min_rows}, got {rows}")
    })?;
    check_param(kernel, "channels", channels > 0, || {
        "must be at least 1".into()
    })?;
    check_param(kernel, "eps", eps.is_finite() && eps >= 0.0, || {
        format!("must be finite and non-negative, got {eps}")
    })?;
    checked_product(kernel, &[rows, channels])
}

/// Checks the training parameters and returns the element count `rows * channels`.
fn check_train(kernel: &'static str, p: BatchNormTrainParams) -> crate::Result<usize> {
    let n = check_shape(kernel, p.rows, 2, p.channels, p.eps)?;
    check_param(
        kernel,
        "momentum",
        (0.0..=1.0).contains(&p.momentum),
        || format!("must be in [0, 1], got {}", p.momentum),
    )?;
    Ok(n)
}

/// Inference: `y = gamma * (x - mean) / sqrt(var + eps) + beta` per channel.
/// `x` and `y` are `[rows, channels]`; `mean`, `var`, `gamma`, `beta` are `[channels]`.
pub fn batch_norm_inference<T: Real>(
    p: BatchNormParams,
    x: &[T],
    mean: &[T],
    var: &[T],
    gamma: &[T],
    beta: &[T],
    y: &mut [T],
) -> crate::Result<()> {
    const K: &str = "batch_norm_inference";
    let n = check_shape(K, p.rows, 1, p.channels, p.eps)?;
    check_len(K, "x", n, x.len())?;
    check_len(K, "mean", p.channels, mean.len())?;
    check_len(K, "var", p.channels, var.len())?;
    check_len(K, "gamma", p.channels, gamma.len())?;
    check_len(K, "beta", p.channels, beta.len())?;
    check_len(K, "y", n, y.len())?;
    for c in 0..p.channels {
        let inv_std = 1.0 / (var[c].to_f64() + p.eps).sqrt();
        let (m, g, b) = (mean[c].to_f64(), gamma[c].to_f64(), beta[c].to_f64());
        for r in 0..p.rows {
            let i = r * p.channels + c;
            y[i] = T::from_f64(g * (x[i].to_f64() - m) * inv_std + b);
        }
    }
    Ok(())
}

/// Gradient of [`batch_norm_inference`] with the statistics frozen (treated as constants, as
/// when fine-tuning with frozen BN): `dx = dy * gamma / sqrt(var + eps)`,
/// `dgamma = sum_rows dy * x_hat`, `dbeta = sum_rows dy`. Overwrites `dx`, `dgamma`, `dbeta`.
#[allow(clippy::too_many_arguments)] // one argument per tensor of the op, as in the forward
pub fn batch_norm_inference_grad<T: Real>(
    p: BatchNormParams,
    x: &[T],
    dy: &[T],
    mean: &[T],
    var: &[T],
    gamma: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> crate::Result<()> {
    const K: &str = "batch_norm_inference_grad";
    let n = check_shape(K, p.rows, 1, p.channels, p.eps)?;
    check_len(K, "x", n, x.len())?;
    check_len(K, "dy", n, dy.len())?;
    check_len(K, "mean", p.channels, mean.len())?;
    check_len(K, "var", p.channels, var.len())?;
    check_len(K, "gamma", p.channels, gamma.len())?;
    check_len(K, "dx", n, dx.len())?;
    check_len(K, "dgamma", p.channels, dgamma.len())?;
    check_len(K, "dbeta", p.channels, dbeta.len())?;
    for c in 0..p.channels {
        let inv_std = 1.0 / (var[c].to_f64() + p.eps).sqrt();
        let (m, g) = (mean[c].to_f64(), gamma[c].to_f64());
        let (mut sum_dy, mut sum_dy_xhat) = (0.0f64, 0.0f64);
        for r in 0..p.rows {
            let i = r * p.channels + c;
            let d = dy[i].to_f64();
            sum_dy += d;
            sum_dy_xhat += d * (x[i].to_f64() - m) * inv_std;
            dx[i] = T::from_f64(d * g * inv_std);
        }
        dgamma[c] = T::from_f64(sum_dy_xhat);
        dbeta[c] = T::from_f64(sum_dy);
    }
    Ok(())
}

/// Training: normalises each channel with its batch mean and biased batch variance, writes
/// `y = gamma * x_hat + beta`, saves the batch mean and `1 / sqrt(var_biased + eps)` for the
/// backward pass, and updates the running statistics in place (the running variance with the
/// unbiased batch variance). `x`, `y` are `[rows, channels]`; the others are `[channels]`.
#[allow(clippy::too_many_arguments)] // one argument per tensor of the op
pub fn batch_norm_train<T: Real>(
    p: BatchNormTrainParams,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    running_mean: &mut [T],
    running_var: &mut [T],
    y: &mut [T],
    saved_mean: &mut [T],
    saved_inv_std: &mut [T],
) -> crate::Result<()> {
    const K: &str = "batch_norm_train";
    let n = check_train(K, p)?;
    check_len(K, "x", n, x.len())?;
    check_len(K, "gamma", p.channels, gamma.len())?;
    check_len(K, "beta", p.channels, beta.len())?;
    check_len(K, "running_mean", p.channels, running_mean.len())?;
    check_len(K, "running_var", p.channels, running_var.len())?;
    check_len(K, "y", n, y.len())?;
    check_len(K, "saved_mean", p.channels, saved_mean.len())?;
    check_len(K, "saved_inv_std", p.channels, saved_inv_std.len())?;
    let rows = p.rows as f64;
    for c in 0..p.channels {
        let col = |r: usize| x[r * p.channels + c].to_f64();
        let mean = (0..p.rows).map(col).sum::<f64>() / rows;
        // Two-pass variance: exact enough for an oracle, unlike E[x^2] - E[x]^2.
        let sq = (0..p.rows).map(|r| (col(r) - mean).powi(2)).sum::<f64>();
        let var_biased = sq / rows;
        let var_unbiased = sq / (rows - 1.0);
        let inv_std = 1.0 / (var_biased + p.eps).sqrt();
        let (g, b) = (gamma[c].to_f64(), beta[c].to_f64());
        for r in 0..p.rows {
            y[r * p.channels + c] = T::from_f64(g * (col(r) - mean) * inv_std + b);
        }
        saved_mean[c] = T::from_f64(mean);
        saved_inv_std[c] = T::from_f64(inv_std);
        running_mean[c] =
            T::from_f64((1.0 - p.momentum) * running_mean[c].to_f64() + p.momentum * mean);
        running_var[c] =
            T::from_f64((1.0 - p.momentum) * running_var[c].to_f64() + p.momentum * var_unbiased);
    }
    Ok(())
}

/// Gradient of [`batch_norm_train`]'s output `y` through the batch statistics:
/// with `x_hat = (x - mean) * inv_std`, `dbeta = sum dy`, `dgamma = sum dy * x_hat` and
/// `dx = gamma * inv_std / rows * (rows * dy - dbeta - x_hat * dgamma)`.
/// `saved_mean` / `saved_inv_std` are what the forward saved (so `p.eps` is already folded in);
/// `p.momentum` is unused. Overwrites `dx`, `dgamma`, `dbeta`.
#[allow(clippy::too_many_arguments)] // one argument per tensor of the op
pub fn batch_norm_grad<T: Real>(
    p: BatchNormTrainParams,
    x: &[T],
    dy: &[T],
    gamma: &[T],
    saved_mean: &[T],
    saved_inv_std: &[T],
    dx: &mut [T],
    dgamma: &mut [T],
    dbeta: &mut [T],
) -> crate::Result<()> {
    const K: &str = "batch_norm_grad";
    let n = check_train(K, p)?;
    check_len(K, "x", n, x.len())?;
    check_len(K, "dy", n, dy.len())?;
    check_len(K, "gamma", p.channels, gamma.len())?;
    check_len(K, "saved_mean", p.channels, saved_mean.len())?;
    check_len(K, "saved_inv_std", p.channels, saved_inv_std.len())?;
    check_len(K, "dx", n, dx.len())?;
    check_len(K, "dgamma", p.channels, dgamma.len())?;
    check_len(K, "dbeta", p.channels, dbeta.len())?;
    let rows = p.rows as f64;
    for c in 0..p.channels {
        let (mean, inv_std, g) = (
            saved_mean[c].to_f64(),
            saved_inv_std[c].to_f64(),
            gamma[c].to_f64(),
        );
        let idx = |r: usize| r * p.channels + c;
        let x_hat = |r: usize| (x[idx(r)].to_f64() - mean) * inv_std;
        let sum_dy = (0..p.rows).map(|r| dy[idx(r)].to_f64()).sum::<f64>();
        let sum_dy_xhat = (0..p.rows)
            .map(|r| dy[idx(r)].to_f64() * x_hat(r))
            .sum::<f64>();
        for r in 0..p.rows {
            let d = rows * dy[idx(r)].to_f64() - sum_dy - x_hat(r) * sum_dy_xhat;
            dx[idx(r)] = T::from_f64(g * inv_std / rows * d);
        }
        dgamma[c] = T::from_f64(sum_dy_xhat);
        dbeta[c] = T::from_f64(sum_dy);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_range, rand_vec, rng};

    struct Train {
        y: Vec<f64>,
        rm: Vec<f64>,
        rv: Vec<f64>,
        mean: Vec<f64>,
        inv_std: Vec<f64>,
    }

    fn train(
        p: BatchNormTrainParams,
        x: &[f64],
        g: &[f64],
        b: &[f64],
        rm: &[f64],
        rv: &[f64],
    ) -> Train {
        let c = p.channels;
        let mut t = Train {
            y: vec![0.0; x.len()],
            rm: rm.to_vec(),
            rv: rv.to_vec(),
            mean: vec![0.0; c],
            inv_std: vec![0.0; c],
        };
        batch_norm_train(
            p,
            x,
            g,
            b,
            &mut t.rm,
            &mut t.rv,
            &mut t.y,
            &mut t.mean,
            &mut t.inv_std,
        )
        .unwrap();
        t
    }

    fn infer(
        p: BatchNormParams,
        x: &[f64],
        m: &[f64],
        v: &[f64],
        g: &[f64],
        b: &[f64],
    ) -> Vec<f64> {
        let mut y = vec![0.0; x.len()];
        batch_norm_inference(p, x, m, v, g, b, &mut y).unwrap();
        y
    }

    #[test]
    fn inference_hand_computed() {
        // Two channels: (x - 1) / sqrt(4) * 3 + 0.5 and (x + 2) / sqrt(1) * -1 + 0.
        let p = BatchNormParams {
            rows: 2,
            channels: 2,
            eps: 0.0,
        };
        let y = infer(
            p,
            &[3.0, 1.0, -1.0, -4.0],
            &[1.0, -2.0],
            &[4.0, 1.0],
            &[3.0, -1.0],
            &[0.5, 0.0],
        );
        assert_eq!(y, vec![3.5, -3.0, -2.5, 2.0]);
    }

    #[test]
    fn train_hand_computed_and_running_stats() {
        // One channel, x = [1, 2, 3, 6]: mean 3, biased var 3.5, unbiased var 14/3.
        let p = BatchNormTrainParams {
            rows: 4,
            channels: 1,
            eps: 0.5,
            momentum: 0.1,
        };
        let t = train(p, &[1.0, 2.0, 3.0, 6.0], &[2.0], &[1.0], &[10.0], &[20.0]);
        let inv = 1.0 / 4.0f64.sqrt();
        let want: Vec<f64> = [1.0, 2.0, 3.0, 6.0]
            .iter()
            .map(|x| 2.0 * (x - 3.0) * inv + 1.0)
            .collect();
        assert_close("y", &t.y, &want, 1e-15);
        assert_close("mean", &t.mean, &[3.0], 1e-15);
        assert_close("inv_std", &t.inv_std, &[0.5], 1e-15);
        assert_close("running_mean", &t.rm, &[0.9 * 10.0 + 0.1 * 3.0], 1e-15);
        assert_close(
            "running_var",
            &t.rv,
            &[0.9 * 20.0 + 0.1 * 14.0 / 3.0],
            1e-15,
        );
    }

    #[test]
    fn train_normalises_and_updates_running_stats() {
        let mut r = rng("batch_norm::train_normalises_and_updates_running_stats");
        for _ in 0..5 {
            let rows = r.range(2, 40);
            let channels = r.range(1, 5);
            let p = BatchNormTrainParams {
                rows,
                channels,
                eps: 0.0, // so the normalised variance is exactly 1, whatever the batch variance
                momentum: r.uniform(0.0, 1.0),
            };
            // Per-channel offset and scale so the statistics are far from (0, 1).
            let x: Vec<f64> = (0..rows * channels)
                .map(|i| {
                    3.0 * (i % channels) as f64
                        + (1.0 + (i % channels) as f64) * r.uniform(-1.0, 1.0)
                })
                .collect();
            let ones = vec![1.0; channels];
            let zeros = vec![0.0; channels];
            let rm = rand_vec(&mut r, channels);
            let rv = rand_range(&mut r, channels, 0.5, 2.0);
            let t = train(p, &x, &ones, &zeros, &rm, &rv);
            for c in 0..channels {
                let col: Vec<f64> = (0..rows).map(|i| x[i * channels + c]).collect();
                let mean = col.iter().sum::<f64>() / rows as f64;
                let var_u = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (rows - 1) as f64;
                let want_rm = (1.0 - p.momentum) * rm[c] + p.momentum * mean;
                let want_rv = (1.0 - p.momentum) * rv[c] + p.momentum * var_u;
                assert!(
                    (t.rm[c] - want_rm).abs() < 1e-12,
                    "running mean {} vs {want_rm}",
                    t.rm[c]
                );
                assert!(
                    (t.rv[c] - want_rv).abs() < 1e-12,
                    "running var {} vs {want_rv}",
                    t.rv[c]
                );
                let yc: Vec<f64> = (0..rows).map(|i| t.y[i * channels + c]).collect();
                let ym = yc.iter().sum::<f64>() / rows as f64;
                let yv = yc.iter().map(|v| (v - ym).powi(2)).sum::<f64>() / rows as f64;
                assert!(ym.abs() < 1e-9, "normalised mean {ym}");
                assert!((yv - 1.0).abs() < 1e-6, "normalised var {yv}");
            }
            // With the batch's own statistics, inference reproduces the training output.
            let var_b: Vec<f64> = t.inv_std.iter().map(|s| 1.0 / (s * s) - p.eps).collect();
            let pi = BatchNormParams {
                rows,
                channels,
                eps: p.eps,
            };
            assert_close(
                "inference == train",
                &infer(pi, &x, &t.mean, &var_b, &ones, &zeros),
                &t.y,
                1e-9,
            );
        }
    }

    #[test]
    fn train_grads_match_finite_differences() {
        let mut r = rng("batch_norm::train_grads_match_finite_differences");
        for _ in 0..8 {
            let (rows, channels) = (r.range(2, 9), r.range(1, 5));
            let p = BatchNormTrainParams {
                rows,
                channels,
                eps: r.uniform(1e-5, 0.1),
                momentum: 0.1,
            };
            let n = rows * channels;
            let x = rand_vec(&mut r, n);
            let g = rand_range(&mut r, channels, 0.5, 2.0);
            let b = rand_vec(&mut r, channels);
            let rm = vec![0.0; channels];
            let rv = vec![1.0; channels];
            let dy = rand_vec(&mut r, n);
            let t = train(p, &x, &g, &b, &rm, &rv);
            let (mut dx, mut dg, mut db) = (vec![0.0; n], vec![0.0; channels], vec![0.0; channels]);
            batch_norm_grad(
                p, &x, &dy, &g, &t.mean, &t.inv_std, &mut dx, &mut dg, &mut db,
            )
            .unwrap();
            check_grad("bn dx", &|v| train(p, v, &g, &b, &rm, &rv).y, &x, &dy, &dx);
            check_grad(
                "bn dgamma",
                &|v| train(p, &x, v, &b, &rm, &rv).y,
                &g,
                &dy,
                &dg,
            );
            check_grad(
                "bn dbeta",
                &|v| train(p, &x, &g, v, &rm, &rv).y,
                &b,
                &dy,
                &db,
            );
        }
    }

    #[test]
    fn inference_grads_match_finite_differences() {
        let mut r = rng("batch_norm::inference_grads_match_finite_differences");
        for _ in 0..8 {
            let (rows, channels) = (r.range(1, 9), r.range(1, 5));
            let p = BatchNormParams {
                rows,
                channels,
                eps: 1e-3,
            };
            let n = rows * channels;
            let x = rand_vec(&mut r, n);
            let m = rand_vec(&mut r, channels);
            let v = rand_range(&mut r, channels, 0.2, 2.0);
            let g = rand_range(&mut r, channels, -2.0, 2.0);
            let b = rand_vec(&mut r, channels);
            let dy = rand_vec(&mut r, n);
            let (mut dx, mut dg, mut db) = (vec![0.0; n], vec![0.0; channels], vec![0.0; channels]);
            batch_norm_inference_grad(p, &x, &dy, &m, &v, &g, &mut dx, &mut dg, &mut db).unwrap();
            check_grad("bn inf dx", &|u| infer(p, u, &m, &v, &g, &b), &x, &dy, &dx);
            check_grad(
                "bn inf dgamma",
                &|u| infer(p, &x, &m, &v, u, &b),
                &g,
                &dy,
                &dg,
            );
            check_grad(
                "bn inf dbeta",
                &|u| infer(p, &x, &m, &v, &g, u),
                &b,
                &dy,
                &db,
            );
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("batch_norm::f32_agrees_with_f64");
        let (rows, channels) = (r.range(2, 30), r.range(1, 6));
        let p = BatchNormTrainParams {
            rows,
            channels,
            eps: 1e-5,
            momentum: 0.1,
        };
        let n = rows * channels;
        let to32 = |v: Vec<f64>| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let to64 = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let x = to32(rand_vec(&mut r, n));
        let g = to32(rand_range(&mut r, channels, 0.5, 2.0));
        let b = to32(rand_vec(&mut r, channels));
        let (mut rm, mut rv) = (vec![0.0f32; channels], vec![1.0f32; channels]);
        let (mut y, mut sm, mut si) = (
            vec![0.0f32; n],
            vec![0.0f32; channels],
            vec![0.0f32; channels],
        );
        batch_norm_train(p, &x, &g, &b, &mut rm, &mut rv, &mut y, &mut sm, &mut si).unwrap();
        let t = train(
            p,
            &to64(&x),
            &to64(&g),
            &to64(&b),
            &vec![0.0; channels],
            &vec![1.0; channels],
        );
        assert_close("y", &to64(&y), &t.y, 1e-6);
        assert_close("running var", &to64(&rv), &t.rv, 1e-6);
        assert_close("inv_std", &to64(&si), &t.inv_std, 1e-6);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let p = BatchNormTrainParams {
            rows: 2,
            channels: 2,
            eps: 1e-5,
            momentum: 0.1,
        };
        let x = [1.0f64, 2.0, 3.0, 5.0];
        let c2 = [1.0f64, 0.5];
        let (mut rm, mut rv) = ([0.0f64; 2], [1.0f64; 2]);
        let (mut y, mut sm, mut si) = ([0.0f64; 4], [0.0f64; 2], [0.0f64; 2]);
        assert!(
            batch_norm_train(p, &x, &c2, &c2, &mut rm, &mut rv, &mut y, &mut sm, &mut si).is_ok()
        );
        for bad in [
            BatchNormTrainParams { rows: 1, ..p },
            BatchNormTrainParams { channels: 0, ..p },
            BatchNormTrainParams { eps: -1.0, ..p },
            BatchNormTrainParams { eps: f64::NAN, ..p },
            BatchNormTrainParams { momentum: 1.5, ..p },
            BatchNormTrainParams {
                momentum: f64::NAN,
                ..p
            },
        ] {
            assert!(
                batch_norm_train(
                    bad, &x, &c2, &c2, &mut rm, &mut rv, &mut y, &mut sm, &mut si
                )
                .is_err()
            );
        }
        assert!(
            batch_norm_train(
                p,
                &x[..3],
                &c2,
                &c2,
                &mut rm,
                &mut rv,
                &mut y,
                &mut sm,
                &mut si
            )
            .is_err()
        );
        assert!(
            batch_norm_train(
                p,
                &x,
                &c2[..1],
                &c2,
                &mut rm,
                &mut rv,
                &mut y,
                &mut sm,
                &mut si
            )
            .is_err()
        );
        assert!(
            batch_norm_train(
                p,
                &x,
                &c2,
                &c2,
                &mut rm[..1],
                &mut rv,
                &mut y,
                &mut sm,
                &mut si
            )
            .is_err()
        );
        let (mut dx, mut dg, mut db) = ([0.0f64; 4], [0.0f64; 2], [0.0f64; 2]);
        assert!(batch_norm_grad(p, &x, &x[..3], &c2, &sm, &si, &mut dx, &mut dg, &mut db).is_err());
        assert!(batch_norm_grad(p, &x, &x, &c2, &sm, &si, &mut dx, &mut dg[..1], &mut db).is_err());
        let pi = BatchNormParams {
            rows: 2,
            channels: 2,
            eps: 1e-5,
        };
        assert!(batch_norm_inference(pi, &x, &c2, &c2, &c2, &c2[..1], &mut y).is_err());
        assert!(
            batch_norm_inference(
                BatchNormParams { rows: 0, ..pi },
                &x,
                &c2,
                &c2,
                &c2,
                &c2,
                &mut y
            )
            .is_err()
        );
        assert!(
            batch_norm_inference_grad(pi, &x, &x, &c2, &c2, &c2, &mut dx[..2], &mut dg, &mut db)
                .is_err()
        );
    }
}
