//! 2-D average pooling over NHWC activations (per channel, strided, padded) and its gradient.
//!
//! `y[n, oh, ow, c] = (sum of x over the window's real cells) / divisor`, where the divisor is
//! `kh * kw` when `count_include_pad` (padding counts as zeros: PyTorch's default, TF never) and
//! the number of real cells in the window otherwise (TF / ONNX default). Since output sizes
//! use floor division, every window lies inside the padded input, so `kh * kw` is exactly the
//! window's cell count including padding. With `count_include_pad == false` a window of padding
//! alone would divide by zero, so such padding is refused.
//!
//! The gradient spreads each `dy / divisor` evenly over the window's real cells.

use super::Real;
use super::window::{Padding2d, Window2d, idx4};
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "avg_pool2d";

/// Shape and window of an average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2dParams {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels (pooled independently).
    pub c: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Vertical step between output rows, in input cells.
    pub stride_h: usize,
    /// Horizontal step between output columns, in input cells.
    pub stride_w: usize,
    /// Zero padding.
    pub padding: Padding2d,
    /// Divide by `kh * kw` (padding counts as zeros) rather than by the number of real cells.
    pub count_include_pad: bool,
}

/// Sizes derived from validated parameters.
#[derive(Debug, Clone, Copy)]
struct Dims {
    out_h: usize,
    out_w: usize,
    x_len: usize,
    y_len: usize,
}

impl AvgPool2dParams {
    /// The sliding window over the input (dense: average pooling has no dilation).
    pub fn window(&self) -> Window2d {
        Window2d::new(
            (self.h, self.w),
            (self.kh, self.kw),
            (self.stride_h, self.stride_w),
            (1, 1),
            self.padding,
        )
    }

    fn dims(&self) -> Result<Dims> {
        check_param(KERNEL, "n", self.n > 0, || "must be positive".into())?;
        check_param(KERNEL, "c", self.c > 0, || "must be positive".into())?;
        let win = self.window();
        let (out_h, out_w) = win.out_hw(KERNEL)?;
        // The divisor kh * kw must itself be representable.
        checked_product(KERNEL, &[self.kh, self.kw])?;
        let x_len = checked_product(KERNEL, &[self.n, self.h, self.w, self.c])?;
        let y_len = checked_product(KERNEL, &[self.n, out_h, out_w, self.c])?;
        // After the element counts: the check may visit every output position.
        if !self.count_include_pad {
            win.require_every_window_hits_input(KERNEL)?;
        }
        Ok(Dims {
            out_h,
            out_w,
            x_len,
            y_len,
        })
    }

    /// Refuses zero sizes, zero stride, a window larger than the padded input, a window of
    /// padding alone when `count_include_pad` is false, and element counts that overflow.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    /// Output height, `(h + top + bottom - kh) / stride_h + 1`.
    pub fn out_h(&self) -> Result<usize> {
        self.dims().map(|d| d.out_h)
    }

    /// Output width, `(w + left + right - kw) / stride_w + 1`.
    pub fn out_w(&self) -> Result<usize> {
        self.dims().map(|d| d.out_w)
    }

    /// Element count of `x` / `dx`: `n * h * w * c`.
    pub fn x_len(&self) -> Result<usize> {
        self.dims().map(|d| d.x_len)
    }

    /// Element count of `y` / `dy`: `n * out_h * out_w * c`.
    pub fn y_len(&self) -> Result<usize> {
        self.dims().map(|d| d.y_len)
    }
}

/// The real cells `(ih, iw)` of window `(oh, ow)`, in scan order.
fn window_cells(win: &Window2d, oh: usize, ow: usize) -> Vec<(usize, usize)> {
    let mut cells = Vec::new();
    for ki in win.h.taps(oh) {
        let Some(ih) = win.h.input_index(oh, ki) else {
            continue;
        };
        for kj in win.w.taps(ow) {
            let Some(iw) = win.w.input_index(ow, kj) else {
                continue;
            };
            cells.push((ih, iw));
        }
    }
    cells
}

/// What window `cells` divides by (see the module doc).
fn divisor(p: AvgPool2dParams, cells: &[(usize, usize)]) -> f64 {
    if p.count_include_pad {
        (p.kh * p.kw) as f64
    } else {
        cells.len() as f64
    }
}

/// Forward average pooling: `x` `[n, h, w, c]` -> `y` `[n, out_h, out_w, c]`.
pub fn avg_pool2d<T: Real>(p: AvgPool2dParams, x: &[T], y: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "y", d.y_len, y.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c];
    let y_dims = [p.n, d.out_h, d.out_w, p.c];
    for oh in 0..d.out_h {
        for ow in 0..d.out_w {
            let cells = window_cells(&win, oh, ow);
            let div = divisor(p, &cells);
            for n in 0..p.n {
                for c in 0..p.c {
                    let sum: f64 = cells
                        .iter()
                        .map(|&(ih, iw)| x[idx4(x_dims, [n, ih, iw, c])].to_f64())
                        .sum();
                    // Only a window of padding alone with count_include_pad false has div 0,
                    // and validation refuses it.
                    let v = if div > 0.0 { sum / div } else { 0.0 };
                    y[idx4(y_dims, [n, oh, ow, c])] = T::from_f64(v);
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to `x` (overwrites `dx` `[n, h, w, c]`): each window adds
/// `dy / divisor` to every real cell it covers. It needs no `x`: the op is linear.
pub fn avg_pool2d_grad<T: Real>(p: AvgPool2dParams, dy: &[T], dx: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "dx", d.x_len, dx.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c];
    let y_dims = [p.n, d.out_h, d.out_w, p.c];
    let mut acc = vec![0.0f64; d.x_len];
    for oh in 0..d.out_h {
        for ow in 0..d.out_w {
            let cells = window_cells(&win, oh, ow);
            let div = divisor(p, &cells);
            if div == 0.0 {
                continue;
            }
            for n in 0..p.n {
                for c in 0..p.c {
                    let share = dy[idx4(y_dims, [n, oh, ow, c])].to_f64() / div;
                    for &(ih, iw) in &cells {
                        acc[idx4(x_dims, [n, ih, iw, c])] += share;
                    }
                }
            }
        }
    }
    for (out, a) in dx.iter_mut().zip(&acc) {
        *out = T::from_f64(*a);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KernelError;
    use crate::reference::window::test_support::{
        draw_valid, random_geo, round_f32, to_f32, to_f64,
    };
    use crate::rng::Rng;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn fwd(p: AvgPool2dParams, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; p.y_len().unwrap()];
        avg_pool2d(p, x, &mut y).unwrap();
        y
    }

    fn grad(p: AvgPool2dParams, dy: &[f64]) -> Vec<f64> {
        let mut dx = vec![7.0; p.x_len().unwrap()];
        avg_pool2d_grad(p, dy, &mut dx).unwrap();
        dx
    }

    /// A random valid pooling; odd cases exclude padding from the divisor.
    fn random_params(rng: &mut Rng, case: usize) -> AvgPool2dParams {
        draw_valid(
            rng,
            |rng| {
                let g = random_geo(rng, case, 7, false);
                AvgPool2dParams {
                    n: rng.range(1, 2),
                    h: g.h,
                    w: g.w,
                    c: rng.range(1, 4),
                    kh: g.kh,
                    kw: g.kw,
                    stride_h: g.sh,
                    stride_w: g.sw,
                    padding: g.padding,
                    count_include_pad: case.is_multiple_of(2),
                }
            },
            |p| p.validate().is_ok(),
        )
    }

    /// The definition read off literally: pad x with zeros and a 0/1 "real cell" mask alongside,
    /// then sum both over each window with no bounds logic.
    // Index loops on purpose: this is the definition written out, nothing clever.
    #[allow(clippy::needless_range_loop)]
    fn avg_pool_direct(p: AvgPool2dParams, x: &[f64]) -> Vec<f64> {
        let (out_h, out_w) = (p.out_h().unwrap(), p.out_w().unwrap());
        let pad = p.padding;
        let (ph, pw) = (p.h + pad.top + pad.bottom, p.w + pad.left + pad.right);
        let mut xp = vec![vec![vec![vec![0.0; p.c]; pw]; ph]; p.n];
        let mut mask = vec![vec![0.0; pw]; ph];
        for i in 0..p.h {
            for j in 0..p.w {
                mask[i + pad.top][j + pad.left] = 1.0;
                for n in 0..p.n {
                    for c in 0..p.c {
                        xp[n][i + pad.top][j + pad.left][c] =
                            x[((n * p.h + i) * p.w + j) * p.c + c];
                    }
                }
            }
        }
        let mut y = Vec::new();
        for n in 0..p.n {
            for oh in 0..out_h {
                for ow in 0..out_w {
                    for c in 0..p.c {
                        let (mut sum, mut real) = (0.0, 0.0);
                        for ki in 0..p.kh {
                            for kj in 0..p.kw {
                                let (r, s) = (oh * p.stride_h + ki, ow * p.stride_w + kj);
                                sum += xp[n][r][s][c];
                                real += mask[r][s];
                            }
                        }
                        y.push(
                            sum / if p.count_include_pad {
                                (p.kh * p.kw) as f64
                            } else {
                                real
                            },
                        );
                    }
                }
            }
        }
        y
    }

    fn single_channel(h: usize, w: usize, k: usize, count_include_pad: bool) -> AvgPool2dParams {
        AvgPool2dParams {
            n: 1,
            h,
            w,
            c: 1,
            kh: k,
            kw: k,
            stride_h: 1,
            stride_w: 1,
            padding: Padding2d::ZERO,
            count_include_pad,
        }
    }

    #[test]
    fn hand_computed() {
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        for include in [true, false] {
            // No padding: both divisor rules agree.
            assert_eq!(
                fwd(single_channel(3, 3, 2, include), &x),
                vec![3.0, 4.0, 6.0, 7.0]
            );
        }
        // Pad 1, stride 2: windows rows {-1,0},{1,2} x cols {-1,0},{1,2}.
        let p = AvgPool2dParams {
            stride_h: 2,
            stride_w: 2,
            padding: Padding2d::symmetric(1, 1),
            ..single_channel(3, 3, 2, true)
        };
        assert_eq!(fwd(p, &x), vec![0.25, 1.25, 2.75, 7.0]);
        assert_eq!(
            grad(p, &[4.0, 8.0, 12.0, 16.0]),
            vec![1., 2., 2., 3., 4., 4., 3., 4., 4.]
        );
        let p = AvgPool2dParams {
            count_include_pad: false,
            ..p
        };
        assert_eq!(fwd(p, &x), vec![1.0, 2.5, 5.5, 7.0]);
        assert_eq!(
            grad(p, &[4.0, 8.0, 12.0, 16.0]),
            vec![4., 4., 4., 6., 4., 4., 6., 4., 4.]
        );
        // Overlapping windows (stride 1) share their cells' gradient.
        let p = single_channel(2, 3, 2, true);
        assert_eq!(grad(p, &[4.0, 8.0]), vec![1., 3., 2., 1., 3., 2.]);
    }

    #[test]
    fn matches_direct_formulation() {
        let mut rng = rng("avg_pool2d_matches_direct_formulation");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            assert_close(
                &format!("avg_pool2d {p:?}"),
                &fwd(p, &x),
                &avg_pool_direct(p, &x),
                1e-14,
            );
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("avg_pool2d_f32_matches_f64");
        for case in 0..4 {
            let p = random_params(&mut rng, case);
            let x = round_f32(&rand_vec(&mut rng, p.x_len().unwrap()));
            let dy = round_f32(&rand_vec(&mut rng, p.y_len().unwrap()));
            let mut y32 = vec![0.0f32; dy.len()];
            avg_pool2d(p, &to_f32(&x), &mut y32).unwrap();
            assert_close("avg_pool2d f32", &to_f64(&y32), &fwd(p, &x), 1e-6);
            let mut dx32 = vec![0.0f32; x.len()];
            avg_pool2d_grad(p, &to_f32(&dy), &mut dx32).unwrap();
            assert_close("avg_pool2d dx f32", &to_f64(&dx32), &grad(p, &dy), 1e-6);
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = rng("avg_pool2d_gradient_matches_finite_differences");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let dx = grad(p, &dy);
            check_grad(
                &format!("avg_pool2d dx {p:?}"),
                &|x| fwd(p, x),
                &x,
                &dy,
                &dx,
            );
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = AvgPool2dParams {
            c: 2,
            ..single_channel(4, 4, 3, false)
        };
        let x = vec![0.5f64; 32];
        let mut y = vec![0.0f64; 8];
        assert!(avg_pool2d(p, &x, &mut y).is_ok());
        let param = |q: AvgPool2dParams| match q.validate() {
            Err(KernelError::Param { param, .. }) => param,
            other => panic!("expected a parameter error for {q:?}, got {other:?}"),
        };
        assert_eq!(param(AvgPool2dParams { stride_w: 0, ..p }), "stride_w");
        assert_eq!(param(AvgPool2dParams { kh: 5, ..p }), "kh");
        assert_eq!(param(AvgPool2dParams { kh: 0, ..p }), "kh");
        assert_eq!(param(AvgPool2dParams { n: 0, ..p }), "n");
        // A window of padding alone has no real cell to divide by...
        let q = AvgPool2dParams {
            kh: 1,
            kw: 1,
            padding: Padding2d::new(1, 0, 0, 0),
            ..p
        };
        assert_eq!(param(q), "padding.top/bottom");
        // ...but counting padding as zeros makes it well defined.
        let q = AvgPool2dParams {
            count_include_pad: true,
            ..q
        };
        assert!(q.validate().is_ok());
        let mut y = vec![9.0; q.y_len().unwrap()];
        avg_pool2d(q, &x, &mut y).unwrap();
        assert_eq!(&y[..8], &[0.0; 8]);
        assert!(
            AvgPool2dParams {
                h: usize::MAX,
                c: usize::MAX,
                ..p
            }
            .validate()
            .is_err()
        );

        let mut y = vec![0.0f64; 8];
        let len_arg = |r: Result<()>| match r {
            Err(KernelError::Length { arg, .. }) => arg,
            other => panic!("expected a length error, got {other:?}"),
        };
        assert_eq!(len_arg(avg_pool2d(p, &x[..31], &mut y)), "x");
        assert_eq!(len_arg(avg_pool2d(p, &x, &mut y[..7])), "y");
        assert_eq!(len_arg(avg_pool2d_grad(p, &y[..7], &mut [0.0; 32])), "dy");
        assert_eq!(len_arg(avg_pool2d_grad(p, &y, &mut [0.0; 31])), "dx");
    }
}
