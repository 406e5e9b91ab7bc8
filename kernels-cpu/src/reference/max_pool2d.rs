//! 2-D max pooling over NHWC activations (per channel, strided, dilated, padded) and its
//! gradient.
//!
//! `y[n, oh, ow, c]` is the maximum of `x[n, ih, iw, c]` over the window's real cells; padding
//! cells never win (it is not zero padding, so an all-negative window still yields its own
//! maximum), and padding so large that some window reads only padding is refused.
//!
//! Tie rule, which every fast kernel must reproduce for its gradient: the winner is the
//! *first* maximal cell in scan order (kernel row `ki` outer, column `kj` inner), i.e. a later
//! cell must be strictly greater to take over. A NaN wins over any number (the first NaN in
//! scan order), so NaN inputs propagate as in PyTorch. Nothing is recorded by the forward: the
//! gradient recomputes the winner from `x` and routes `dy` to it, summing where windows overlap.

use super::Real;
use super::window::{Padding2d, Window2d, idx4};
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "max_pool2d";

/// Shape and window of a max pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2dParams {
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
    /// Vertical step between window taps (1 = dense).
    pub dilation_h: usize,
    /// Horizontal step between window taps (1 = dense).
    pub dilation_w: usize,
    /// Padding (cells that never win); every window must still reach a real cell.
    pub padding: Padding2d,
}

/// Sizes derived from validated parameters.
#[derive(Debug, Clone, Copy)]
struct Dims {
    out_h: usize,
    out_w: usize,
    x_len: usize,
    y_len: usize,
}

impl MaxPool2dParams {
    /// The sliding window over the input.
    pub fn window(&self) -> Window2d {
        Window2d::new(
            (self.h, self.w),
            (self.kh, self.kw),
            (self.stride_h, self.stride_w),
            (self.dilation_h, self.dilation_w),
            self.padding,
        )
    }

    fn dims(&self) -> Result<Dims> {
        check_param(KERNEL, "n", self.n > 0, || "must be positive".into())?;
        check_param(KERNEL, "c", self.c > 0, || "must be positive".into())?;
        let win = self.window();
        let (out_h, out_w) = win.out_hw(KERNEL)?;
        let x_len = checked_product(KERNEL, &[self.n, self.h, self.w, self.c])?;
        let y_len = checked_product(KERNEL, &[self.n, out_h, out_w, self.c])?;
        // After the element counts: the check may visit every output position.
        win.require_every_window_hits_input(KERNEL)?;
        Ok(Dims {
            out_h,
            out_w,
            x_len,
            y_len,
        })
    }

    /// Refuses zero sizes, zero stride or dilation, a window larger than the padded input, a
    /// window reading only padding, and element counts that overflow.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    /// Output height, `(h + top + bottom - dilation_h * (kh - 1) - 1) / stride_h + 1`.
    pub fn out_h(&self) -> Result<usize> {
        self.dims().map(|d| d.out_h)
    }

    /// Output width, `(w + left + right - dilation_w * (kw - 1) - 1) / stride_w + 1`.
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

/// The winning input cell `(ih, iw)` of window `(oh, ow)` in image `n`, channel `c` (see the
/// module doc for the tie and NaN rules); `None` only for a window of padding alone, which
/// validation refuses.
fn argmax<T: Real>(
    p: MaxPool2dParams,
    win: &Window2d,
    x: &[T],
    (n, oh, ow, c): (usize, usize, usize, usize),
) -> Option<(usize, usize)> {
    let x_dims = [p.n, p.h, p.w, p.c];
    let mut best: Option<(usize, usize, f64)> = None;
    for ki in win.h.taps(oh) {
        let Some(ih) = win.h.input_index(oh, ki) else {
            continue;
        };
        for kj in win.w.taps(ow) {
            let Some(iw) = win.w.input_index(ow, kj) else {
                continue;
            };
            let v = x[idx4(x_dims, [n, ih, iw, c])].to_f64();
            let wins = match best {
                None => true,
                Some((_, _, b)) => !b.is_nan() && (v.is_nan() || v > b),
            };
            if wins {
                best = Some((ih, iw, v));
            }
        }
    }
    best.map(|(ih, iw, _)| (ih, iw))
}

/// Forward max pooling: `x` `[n, h, w, c]` -> `y` `[n, out_h, out_w, c]`.
pub fn max_pool2d<T: Real>(p: MaxPool2dParams, x: &[T], y: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "y", d.y_len, y.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c];
    let y_dims = [p.n, d.out_h, d.out_w, p.c];
    for n in 0..p.n {
        for oh in 0..d.out_h {
            for ow in 0..d.out_w {
                for c in 0..p.c {
                    if let Some((ih, iw)) = argmax(p, &win, x, (n, oh, ow, c)) {
                        y[idx4(y_dims, [n, oh, ow, c])] = x[idx4(x_dims, [n, ih, iw, c])];
                    }
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to `x` (overwrites `dx` `[n, h, w, c]`): each `dy` goes to its
/// window's winner, recomputed from `x`; a cell that wins several windows sums their `dy`,
/// and a cell that wins none gets zero.
pub fn max_pool2d_grad<T: Real>(p: MaxPool2dParams, x: &[T], dy: &[T], dx: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "dx", d.x_len, dx.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c];
    let y_dims = [p.n, d.out_h, d.out_w, p.c];
    let mut acc = vec![0.0f64; d.x_len];
    for n in 0..p.n {
        for oh in 0..d.out_h {
            for ow in 0..d.out_w {
                for c in 0..p.c {
                    if let Some((ih, iw)) = argmax(p, &win, x, (n, oh, ow, c)) {
                        acc[idx4(x_dims, [n, ih, iw, c])] +=
                            dy[idx4(y_dims, [n, oh, ow, c])].to_f64();
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

    fn fwd(p: MaxPool2dParams, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; p.y_len().unwrap()];
        max_pool2d(p, x, &mut y).unwrap();
        y
    }

    fn grad(p: MaxPool2dParams, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let mut dx = vec![7.0; x.len()];
        max_pool2d_grad(p, x, dy, &mut dx).unwrap();
        dx
    }

    fn random_params(rng: &mut Rng, case: usize) -> MaxPool2dParams {
        draw_valid(
            rng,
            |rng| {
                let g = random_geo(rng, case, 7, true);
                MaxPool2dParams {
                    n: rng.range(1, 2),
                    h: g.h,
                    w: g.w,
                    c: rng.range(1, 4),
                    kh: g.kh,
                    kw: g.kw,
                    stride_h: g.sh,
                    stride_w: g.sw,
                    dilation_h: g.dh,
                    dilation_w: g.dw,
                    padding: g.padding,
                }
            },
            |p| p.validate().is_ok(),
        )
    }

    /// The definition read off literally: pad with -inf (a value that can never win), then take
    /// the maximum over each dilated window with no bounds logic.
    // Index loops on purpose: this is the definition written out, nothing clever.
    #[allow(clippy::needless_range_loop)]
    fn max_pool_direct(p: MaxPool2dParams, x: &[f64]) -> Vec<f64> {
        let (out_h, out_w) = (p.out_h().unwrap(), p.out_w().unwrap());
        let pad = p.padding;
        let (ph, pw) = (p.h + pad.top + pad.bottom, p.w + pad.left + pad.right);
        let mut xp = vec![vec![vec![vec![f64::NEG_INFINITY; p.c]; pw]; ph]; p.n];
        for n in 0..p.n {
            for i in 0..p.h {
                for j in 0..p.w {
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
                        let mut m = f64::NEG_INFINITY;
                        for ki in 0..p.kh {
                            for kj in 0..p.kw {
                                m = m.max(
                                    xp[n][oh * p.stride_h + ki * p.dilation_h]
                                        [ow * p.stride_w + kj * p.dilation_w][c],
                                );
                            }
                        }
                        y.push(m);
                    }
                }
            }
        }
        y
    }

    fn single_channel(h: usize, w: usize, k: usize) -> MaxPool2dParams {
        MaxPool2dParams {
            n: 1,
            h,
            w,
            c: 1,
            kh: k,
            kw: k,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
        }
    }

    #[test]
    fn hand_computed() {
        let x = [1.0, 5.0, 2.0, 7.0, 3.0, 9.0, 4.0, 8.0, 6.0];
        let p = single_channel(3, 3, 2);
        assert_eq!(fwd(p, &x), vec![7.0, 9.0, 8.0, 9.0]);
        // 9 wins two windows: its gradient is the sum of both.
        assert_eq!(
            grad(p, &x, &[1.0, 2.0, 3.0, 4.0]),
            vec![0., 0., 0., 1., 0., 6., 0., 3., 0.]
        );
        // Pad 1, stride 2: windows rows {-1,0},{1,2} x cols {-1,0},{1,2}.
        let q = MaxPool2dParams {
            stride_h: 2,
            stride_w: 2,
            padding: Padding2d::symmetric(1, 1),
            ..p
        };
        assert_eq!(fwd(q, &x), vec![1.0, 5.0, 7.0, 9.0]);
        // Padding never wins, even over negative values.
        let neg: Vec<f64> = x.iter().map(|v| -v).collect();
        assert_eq!(fwd(q, &neg), vec![-1.0, -2.0, -4.0, -3.0]);
        assert_eq!(
            grad(q, &neg, &[1.0, 2.0, 3.0, 4.0]),
            vec![1., 0., 2., 0., 4., 0., 3., 0., 0.]
        );
        // Dilation 2: one window on the four corners.
        let q = MaxPool2dParams {
            dilation_h: 2,
            dilation_w: 2,
            ..p
        };
        assert_eq!(fwd(q, &x), vec![6.0]);
        // Channels pool independently.
        let q = MaxPool2dParams {
            c: 2,
            ..single_channel(2, 2, 2)
        };
        assert_eq!(
            fwd(q, &[1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0, -3.0]),
            vec![2.0, -0.5]
        );
    }

    #[test]
    fn ties_go_to_the_first_cell_in_scan_order() {
        let p = single_channel(2, 3, 2);
        // Window 0 covers cols 0-1, window 1 cols 1-2; all four maxima tie at 5.
        let x = [1.0, 5.0, 5.0, 5.0, 5.0, 0.0];
        assert_eq!(fwd(p, &x), vec![5.0, 5.0]);
        // Window 0 scans (0,0),(0,1),(1,0),(1,1): first 5 at (0,1). Window 1 scans
        // (0,1),(0,2),(1,1),(1,2): first 5 at (0,1) again.
        assert_eq!(grad(p, &x, &[1.0, 10.0]), vec![0., 11., 0., 0., 0., 0.]);
        // Window 0 ties (0,0) with (1,1) and window 1 ties (1,1) with (1,2): the first wins.
        let x = [3.0, 0.0, 0.0, 0.0, 3.0, 3.0];
        assert_eq!(grad(p, &x, &[1.0, 10.0]), vec![1., 0., 0., 0., 10., 0.]);
    }

    #[test]
    fn nan_propagates() {
        let p = single_channel(2, 2, 2);
        let y = fwd(p, &[1.0, f64::NAN, 3.0, 2.0]);
        assert!(y[0].is_nan());
        assert_eq!(
            grad(p, &[1.0, f64::NAN, 3.0, f64::NAN], &[2.0]),
            vec![0.0, 2.0, 0.0, 0.0]
        );
    }

    #[test]
    fn matches_direct_formulation() {
        let mut rng = rng("max_pool2d_matches_direct_formulation");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            assert_eq!(fwd(p, &x), max_pool_direct(p, &x), "{p:?}");
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("max_pool2d_f32_matches_f64");
        for case in 0..4 {
            let p = random_params(&mut rng, case);
            let x = round_f32(&rand_vec(&mut rng, p.x_len().unwrap()));
            let dy = round_f32(&rand_vec(&mut rng, p.y_len().unwrap()));
            let mut y32 = vec![0.0f32; dy.len()];
            max_pool2d(p, &to_f32(&x), &mut y32).unwrap();
            assert_close("max_pool2d f32", &to_f64(&y32), &fwd(p, &x), 1e-6);
            let mut dx32 = vec![0.0f32; x.len()];
            max_pool2d_grad(p, &to_f32(&x), &to_f32(&dy), &mut dx32).unwrap();
            assert_close("max_pool2d dx f32", &to_f64(&dx32), &grad(p, &x, &dy), 1e-6);
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = rng("max_pool2d_gradient_matches_finite_differences");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let dx = grad(p, &x, &dy);
            check_grad(
                &format!("max_pool2d dx {p:?}"),
                &|x| fwd(p, x),
                &x,
                &dy,
                &dx,
            );
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = MaxPool2dParams {
            c: 2,
            ..single_channel(4, 4, 3)
        };
        let x = vec![0.5f64; 32];
        let mut y = vec![0.0f64; 8];
        assert!(max_pool2d(p, &x, &mut y).is_ok());
        let param = |q: MaxPool2dParams| match max_pool2d(q, &x, &mut [0.0; 8]) {
            Err(KernelError::Param { param, .. }) => param,
            other => panic!("expected a parameter error for {q:?}, got {other:?}"),
        };
        assert_eq!(param(MaxPool2dParams { stride_h: 0, ..p }), "stride_h");
        assert_eq!(param(MaxPool2dParams { dilation_w: 0, ..p }), "dilation_w");
        assert_eq!(param(MaxPool2dParams { kw: 5, ..p }), "kw");
        assert_eq!(param(MaxPool2dParams { c: 0, ..p }), "c");
        assert_eq!(param(MaxPool2dParams { h: 0, ..p }), "h");
        // A 1x1 window with 1 cell of padding: the corner window reads only padding.
        let q = MaxPool2dParams {
            kh: 1,
            kw: 1,
            padding: Padding2d::new(0, 0, 1, 0),
            ..p
        };
        assert_eq!(param(q), "padding.left/right");
        assert!(
            MaxPool2dParams {
                h: usize::MAX,
                w: usize::MAX,
                ..p
            }
            .validate()
            .is_err()
        );

        let len_arg = |r: Result<()>| match r {
            Err(KernelError::Length { arg, .. }) => arg,
            other => panic!("expected a length error, got {other:?}"),
        };
        assert_eq!(len_arg(max_pool2d(p, &x[..31], &mut y)), "x");
        assert_eq!(len_arg(max_pool2d(p, &x, &mut y[..7])), "y");
        assert_eq!(
            len_arg(max_pool2d_grad(p, &x, &y[..7], &mut [0.0; 32])),
            "dy"
        );
        assert_eq!(len_arg(max_pool2d_grad(p, &x, &y, &mut [0.0; 31])), "dx");
    }
}
