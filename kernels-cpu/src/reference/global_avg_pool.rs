//! Global average pooling, NHWC `[n, h, w, c]` -> `[n, c]`: each channel's mean over all
//! `h * w` positions, and its gradient (`dy[n, c] / (h * w)` spread over every position).

use super::Real;
use super::window::idx4;
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "global_avg_pool";

/// Shape of a global average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalAvgPoolParams {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl GlobalAvgPoolParams {
    /// Refuses zero sizes and element counts that overflow.
    pub fn validate(&self) -> Result<()> {
        self.x_len().map(|_| ())
    }

    /// Element count of `x` / `dx`: `n * h * w * c`.
    pub fn x_len(&self) -> Result<usize> {
        check_param(KERNEL, "n", self.n > 0, || "must be positive".into())?;
        check_param(KERNEL, "h", self.h > 0, || "must be positive".into())?;
        check_param(KERNEL, "w", self.w > 0, || "must be positive".into())?;
        check_param(KERNEL, "c", self.c > 0, || "must be positive".into())?;
        checked_product(KERNEL, &[self.n, self.h, self.w, self.c])
    }

    /// Element count of `y` / `dy`: `n * c`.
    pub fn y_len(&self) -> Result<usize> {
        self.x_len()?;
        checked_product(KERNEL, &[self.n, self.c])
    }
}

/// Forward: `y[n, c] = mean_{h, w} x[n, h, w, c]`.
pub fn global_avg_pool<T: Real>(p: GlobalAvgPoolParams, x: &[T], y: &mut [T]) -> Result<()> {
    check_len(KERNEL, "x", p.x_len()?, x.len())?;
    check_len(KERNEL, "y", p.y_len()?, y.len())?;
    let count = (p.h * p.w) as f64;
    let x_dims = [p.n, p.h, p.w, p.c];
    for n in 0..p.n {
        for c in 0..p.c {
            let mut sum = 0.0f64;
            for i in 0..p.h {
                for j in 0..p.w {
                    sum += x[idx4(x_dims, [n, i, j, c])].to_f64();
                }
            }
            y[n * p.c + c] = T::from_f64(sum / count);
        }
    }
    Ok(())
}

/// Gradient with respect to `x` (overwrites `dx` `[n, h, w, c]`):
/// `dx[n, h, w, c] = dy[n, c] / (h * w)`.
pub fn global_avg_pool_grad<T: Real>(p: GlobalAvgPoolParams, dy: &[T], dx: &mut [T]) -> Result<()> {
    check_len(KERNEL, "dy", p.y_len()?, dy.len())?;
    check_len(KERNEL, "dx", p.x_len()?, dx.len())?;
    let count = (p.h * p.w) as f64;
    let x_dims = [p.n, p.h, p.w, p.c];
    for n in 0..p.n {
        for c in 0..p.c {
            let share = T::from_f64(dy[n * p.c + c].to_f64() / count);
            for i in 0..p.h {
                for j in 0..p.w {
                    dx[idx4(x_dims, [n, i, j, c])] = share;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KernelError;
    use crate::reference::avg_pool2d::{AvgPool2dParams, avg_pool2d};
    use crate::reference::window::Padding2d;
    use crate::reference::window::test_support::{round_f32, to_f32, to_f64};
    use crate::rng::Rng;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn fwd(p: GlobalAvgPoolParams, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; p.y_len().unwrap()];
        global_avg_pool(p, x, &mut y).unwrap();
        y
    }

    fn random_params(rng: &mut Rng) -> GlobalAvgPoolParams {
        GlobalAvgPoolParams {
            n: rng.range(1, 3),
            h: rng.range(1, 7),
            w: rng.range(1, 7),
            c: rng.range(1, 5),
        }
    }

    #[test]
    fn hand_computed() {
        let p = GlobalAvgPoolParams {
            n: 2,
            h: 1,
            w: 2,
            c: 2,
        };
        let x = [1.0, 10.0, 3.0, 20.0, -1.0, 0.5, -2.0, 1.5];
        assert_eq!(fwd(p, &x), vec![2.0, 15.0, -1.5, 1.0]);
        let mut dx = [9.0; 8];
        global_avg_pool_grad(p, &[2.0, 4.0, 6.0, 8.0], &mut dx).unwrap();
        assert_eq!(dx, [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    }

    #[test]
    fn equals_avg_pool_over_the_whole_image() {
        let mut rng = rng("global_avg_pool_equals_avg_pool_over_the_whole_image");
        for _ in 0..6 {
            let p = random_params(&mut rng);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let q = AvgPool2dParams {
                n: p.n,
                h: p.h,
                w: p.w,
                c: p.c,
                kh: p.h,
                kw: p.w,
                stride_h: 1,
                stride_w: 1,
                padding: Padding2d::ZERO,
                count_include_pad: false,
            };
            let mut want = vec![0.0; p.n * p.c];
            avg_pool2d(q, &x, &mut want).unwrap();
            assert_close(&format!("global_avg_pool {p:?}"), &fwd(p, &x), &want, 1e-14);
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("global_avg_pool_f32_matches_f64");
        let p = random_params(&mut rng);
        let x = round_f32(&rand_vec(&mut rng, p.x_len().unwrap()));
        let dy = round_f32(&rand_vec(&mut rng, p.y_len().unwrap()));
        let mut y32 = vec![0.0f32; dy.len()];
        global_avg_pool(p, &to_f32(&x), &mut y32).unwrap();
        assert_close("global_avg_pool f32", &to_f64(&y32), &fwd(p, &x), 1e-6);
        let (mut dx32, mut dx) = (vec![0.0f32; x.len()], vec![0.0; x.len()]);
        global_avg_pool_grad(p, &to_f32(&dy), &mut dx32).unwrap();
        global_avg_pool_grad(p, &dy, &mut dx).unwrap();
        assert_close("global_avg_pool dx f32", &to_f64(&dx32), &dx, 1e-6);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = rng("global_avg_pool_gradient_matches_finite_differences");
        for _ in 0..6 {
            let p = random_params(&mut rng);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let mut dx = vec![7.0; x.len()];
            global_avg_pool_grad(p, &dy, &mut dx).unwrap();
            check_grad(
                &format!("global_avg_pool dx {p:?}"),
                &|x| fwd(p, x),
                &x,
                &dy,
                &dx,
            );
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = GlobalAvgPoolParams {
            n: 2,
            h: 3,
            w: 2,
            c: 2,
        };
        let x = [0.5f64; 24];
        let mut y = [0.0f64; 4];
        assert!(global_avg_pool(p, &x, &mut y).is_ok());
        assert!(matches!(
            global_avg_pool(p, &x[..23], &mut y),
            Err(KernelError::Length { arg: "x", .. })
        ));
        assert!(matches!(
            global_avg_pool(p, &x, &mut y[..3]),
            Err(KernelError::Length { arg: "y", .. })
        ));
        assert!(matches!(
            global_avg_pool_grad(p, &y, &mut [0.0; 23]),
            Err(KernelError::Length { arg: "dx", .. })
        ));
        assert!(matches!(
            global_avg_pool_grad(p, &y[..1], &mut [0.0; 24]),
            Err(KernelError::Length { arg: "dy", .. })
        ));
        for q in [
            GlobalAvgPoolParams { h: 0, ..p },
            GlobalAvgPoolParams { c: 0, ..p },
            GlobalAvgPoolParams { n: 0, ..p },
            GlobalAvgPoolParams { w: 0, ..p },
        ] {
            assert!(
                matches!(q.validate(), Err(KernelError::Param { .. })),
                "{q:?}"
            );
        }
        assert!(
            GlobalAvgPoolParams {
                n: usize::MAX,
                c: 3,
                ..p
            }
            .validate()
            .is_err()
        );
    }
}
