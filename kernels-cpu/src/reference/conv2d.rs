//! 2-D convolution over NHWC activations with OHWI weights — grouped, strided, dilated and
//! (asymmetrically) padded — with its input, weight and bias gradients.
//!
//! As in every DL framework, "convolution" is cross-correlation (the kernel is not flipped):
//!
//! ```text
//! y[n, oh, ow, oc] = b[oc] + sum_{ki, kj, icg} x[n, ih, iw, g * cig + icg] * w[oc, ki, kj, icg]
//!     ih = oh * stride_h + ki * dilation_h - padding.top
//!     iw = ow * stride_w + kj * dilation_w - padding.left
//!     cig = c_in / groups, cog = c_out / groups, g = oc / cog
//! ```
//!
//! with out-of-range `(ih, iw)` reading zero. Weights are OHWI: `[c_out, kh, kw, c_in / groups]`;
//! output channels `[g * cog, (g + 1) * cog)` read input channels `[g * cig, (g + 1) * cig)`.
//! `groups == c_in == c_out / multiplier` is a depthwise convolution (see `depthwise_conv2d` for
//! the dedicated layout). Window geometry comes from [`super::window`].

use super::Real;
use super::bias_add::{BiasAddParams, bias_add_grad_bias};
use super::window::{Padding2d, Window2d, idx4};
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "conv2d";

/// Shape and window of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels (a multiple of `groups`).
    pub c_in: usize,
    /// Output channels (a multiple of `groups`).
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical step between output rows, in input cells.
    pub stride_h: usize,
    /// Horizontal step between output columns, in input cells.
    pub stride_w: usize,
    /// Vertical step between kernel taps (1 = dense).
    pub dilation_h: usize,
    /// Horizontal step between kernel taps (1 = dense).
    pub dilation_w: usize,
    /// Zero padding (asymmetric allowed; see [`Padding2d::same`] for TF SAME).
    pub padding: Padding2d,
    /// Channel groups: each group of `c_out / groups` outputs sees `c_in / groups` inputs.
    pub groups: usize,
}

/// Sizes derived from validated parameters.
#[derive(Debug, Clone, Copy)]
struct Dims {
    out_h: usize,
    out_w: usize,
    /// Input channels per group.
    cig: usize,
    /// Output channels per group.
    cog: usize,
    x_len: usize,
    w_len: usize,
    y_len: usize,
}

impl Conv2dParams {
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
        check_param(KERNEL, "c_in", self.c_in > 0, || "must be positive".into())?;
        check_param(KERNEL, "c_out", self.c_out > 0, || {
            "must be positive".into()
        })?;
        check_param(KERNEL, "groups", self.groups > 0, || {
            "must be positive".into()
        })?;
        check_param(
            KERNEL,
            "groups",
            self.c_in.is_multiple_of(self.groups),
            || format!("{} groups do not divide c_in = {}", self.groups, self.c_in),
        )?;
        check_param(
            KERNEL,
            "groups",
            self.c_out.is_multiple_of(self.groups),
            || {
                format!(
                    "{} groups do not divide c_out = {}",
                    self.groups, self.c_out
                )
            },
        )?;
        let (out_h, out_w) = self.window().out_hw(KERNEL)?;
        let cig = self.c_in / self.groups;
        let cog = self.c_out / self.groups;
        Ok(Dims {
            out_h,
            out_w,
            cig,
            cog,
            x_len: checked_product(KERNEL, &[self.n, self.h, self.w, self.c_in])?,
            w_len: checked_product(KERNEL, &[self.c_out, self.kh, self.kw, cig])?,
            y_len: checked_product(KERNEL, &[self.n, out_h, out_w, self.c_out])?,
        })
    }

    /// Refuses zero sizes, zero stride or dilation, groups that do not divide both channel
    /// counts, a window larger than the padded input, and element counts that overflow.
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

    /// Element count of `x`: `n * h * w * c_in`.
    pub fn x_len(&self) -> Result<usize> {
        self.dims().map(|d| d.x_len)
    }

    /// Element count of the OHWI weight: `c_out * kh * kw * (c_in / groups)`.
    pub fn w_len(&self) -> Result<usize> {
        self.dims().map(|d| d.w_len)
    }

    /// Element count of `y`: `n * out_h * out_w * c_out`.
    pub fn y_len(&self) -> Result<usize> {
        self.dims().map(|d| d.y_len)
    }
}

/// Forward convolution: `x` `[n, h, w, c_in]`, `w` `[c_out, kh, kw, c_in / groups]`, optional
/// `bias` `[c_out]`, writes `y` `[n, out_h, out_w, c_out]`.
pub fn conv2d<T: Real>(
    p: Conv2dParams,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "w", d.w_len, w.len())?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", p.c_out, b.len())?;
    }
    check_len(KERNEL, "y", d.y_len, y.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [p.c_out, p.kh, p.kw, d.cig];
    let y_dims = [p.n, d.out_h, d.out_w, p.c_out];
    for n in 0..p.n {
        for oh in 0..d.out_h {
            for ow in 0..d.out_w {
                for oc in 0..p.c_out {
                    let g = oc / d.cog;
                    let mut acc = bias.map_or(0.0, |b| b[oc].to_f64());
                    for ki in win.h.taps(oh) {
                        let Some(ih) = win.h.input_index(oh, ki) else {
                            continue;
                        };
                        for kj in win.w.taps(ow) {
                            let Some(iw) = win.w.input_index(ow, kj) else {
                                continue;
                            };
                            for icg in 0..d.cig {
                                let ic = g * d.cig + icg;
                                acc += x[idx4(x_dims, [n, ih, iw, ic])].to_f64()
                                    * w[idx4(w_dims, [oc, ki, kj, icg])].to_f64();
                            }
                        }
                    }
                    y[idx4(y_dims, [n, oh, ow, oc])] = T::from_f64(acc);
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to `x` (overwrites `dx` `[n, h, w, c_in]`): every input cell gathers
/// `dy * w` from each (output position, tap) whose window read it. Input cells no window reads
/// (dropped by the stride) get zero.
pub fn conv2d_grad_input<T: Real>(p: Conv2dParams, dy: &[T], w: &[T], dx: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "w", d.w_len, w.len())?;
    check_len(KERNEL, "dx", d.x_len, dx.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [p.c_out, p.kh, p.kw, d.cig];
    let y_dims = [p.n, d.out_h, d.out_w, p.c_out];
    for n in 0..p.n {
        for ih in 0..p.h {
            for iw in 0..p.w {
                for ic in 0..p.c_in {
                    let g = ic / d.cig;
                    let icg = ic % d.cig;
                    let mut acc = 0.0f64;
                    for ki in 0..p.kh {
                        let Some(oh) = win.h.output_index(ih, ki) else {
                            continue;
                        };
                        for kj in 0..p.kw {
                            let Some(ow) = win.w.output_index(iw, kj) else {
                                continue;
                            };
                            for ocg in 0..d.cog {
                                let oc = g * d.cog + ocg;
                                acc += dy[idx4(y_dims, [n, oh, ow, oc])].to_f64()
                                    * w[idx4(w_dims, [oc, ki, kj, icg])].to_f64();
                            }
                        }
                    }
                    dx[idx4(x_dims, [n, ih, iw, ic])] = T::from_f64(acc);
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to the OHWI weight (overwrites `dw` `[c_out, kh, kw, c_in / groups]`):
/// `dw[oc, ki, kj, icg] = sum_{n, oh, ow} x[n, ih, iw, ic] * dy[n, oh, ow, oc]` over the
/// positions where the tap reads a real cell.
pub fn conv2d_grad_weight<T: Real>(p: Conv2dParams, x: &[T], dy: &[T], dw: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "dw", d.w_len, dw.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [p.c_out, p.kh, p.kw, d.cig];
    let y_dims = [p.n, d.out_h, d.out_w, p.c_out];
    for oc in 0..p.c_out {
        let g = oc / d.cog;
        for ki in 0..p.kh {
            for kj in 0..p.kw {
                for icg in 0..d.cig {
                    let ic = g * d.cig + icg;
                    let mut acc = 0.0f64;
                    for n in 0..p.n {
                        for oh in 0..d.out_h {
                            let Some(ih) = win.h.input_index(oh, ki) else {
                                continue;
                            };
                            for ow in 0..d.out_w {
                                let Some(iw) = win.w.input_index(ow, kj) else {
                                    continue;
                                };
                                acc += x[idx4(x_dims, [n, ih, iw, ic])].to_f64()
                                    * dy[idx4(y_dims, [n, oh, ow, oc])].to_f64();
                            }
                        }
                    }
                    dw[idx4(w_dims, [oc, ki, kj, icg])] = T::from_f64(acc);
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to the bias (overwrites `db` `[c_out]`): `dy` summed over
/// `n, out_h, out_w`.
pub fn conv2d_grad_bias<T: Real>(p: Conv2dParams, dy: &[T], db: &mut [T]) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "db", p.c_out, db.len())?;
    let rows = checked_product(KERNEL, &[p.n, d.out_h, d.out_w])?;
    bias_add_grad_bias(
        BiasAddParams {
            rows,
            channels: p.c_out,
        },
        dy,
        db,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::KernelError;
    use crate::reference::window::test_support::{
        draw_valid, random_geo, round_f32, to_f32, to_f64,
    };
    use crate::rng::Rng;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    /// f64 forward, for the finite-difference closures.
    pub(crate) fn fwd(p: Conv2dParams, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let mut y = vec![0.0; p.y_len().unwrap()];
        conv2d(p, x, w, b, &mut y).unwrap();
        y
    }

    /// A random valid convolution. `case` picks the window feature (see `random_geo`) and,
    /// modulo 4, the grouping: 1, 2, 3 groups, or depthwise-like `groups == c_in`.
    pub(crate) fn random_params(rng: &mut Rng, case: usize) -> Conv2dParams {
        draw_valid(
            rng,
            |rng| {
                let g = random_geo(rng, case, 6, true);
                let (c_in, c_out, groups) = match case % 4 {
                    3 => {
                        let c = rng.range(1, 4);
                        (c, c * rng.range(1, 2), c)
                    }
                    k => {
                        let groups = k + 1;
                        (groups * rng.range(1, 2), groups * rng.range(1, 2), groups)
                    }
                };
                Conv2dParams {
                    n: rng.range(1, 2),
                    h: g.h,
                    w: g.w,
                    c_in,
                    c_out,
                    kh: g.kh,
                    kw: g.kw,
                    stride_h: g.sh,
                    stride_w: g.sw,
                    dilation_h: g.dh,
                    dilation_w: g.dw,
                    padding: g.padding,
                    groups,
                }
            },
            |p| p.validate().is_ok(),
        )
    }

    /// The definition read off literally: materialise the zero-padded input, then slide the
    /// dilated kernel over it with no bounds logic at all (independent of `Window1d`).
    // Index loops on purpose: this is the definition written out, nothing clever.
    #[allow(clippy::needless_range_loop)]
    fn conv2d_direct(p: Conv2dParams, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let (out_h, out_w) = (p.out_h().unwrap(), p.out_w().unwrap());
        let pad = p.padding;
        let (ph, pw) = (p.h + pad.top + pad.bottom, p.w + pad.left + pad.right);
        let mut xp = vec![vec![vec![vec![0.0; p.c_in]; pw]; ph]; p.n];
        for n in 0..p.n {
            for i in 0..p.h {
                for j in 0..p.w {
                    for c in 0..p.c_in {
                        xp[n][i + pad.top][j + pad.left][c] =
                            x[((n * p.h + i) * p.w + j) * p.c_in + c];
                    }
                }
            }
        }
        let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
        let mut y = Vec::new();
        for n in 0..p.n {
            for oh in 0..out_h {
                for ow in 0..out_w {
                    for oc in 0..p.c_out {
                        let g = oc / cog;
                        let mut acc = b[oc];
                        for ki in 0..p.kh {
                            for kj in 0..p.kw {
                                for icg in 0..cig {
                                    let xv = xp[n][oh * p.stride_h + ki * p.dilation_h]
                                        [ow * p.stride_w + kj * p.dilation_w][g * cig + icg];
                                    acc += xv * w[((oc * p.kh + ki) * p.kw + kj) * cig + icg];
                                }
                            }
                        }
                        y.push(acc);
                    }
                }
            }
        }
        y
    }

    fn single_channel(h: usize, w: usize, kh: usize, kw: usize) -> Conv2dParams {
        Conv2dParams {
            n: 1,
            h,
            w,
            c_in: 1,
            c_out: 1,
            kh,
            kw,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            groups: 1,
        }
    }

    #[test]
    fn hand_computed_3x3_with_2x2_kernel() {
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let w = [1.0, 2.0, 3.0, 4.0];
        let p = single_channel(3, 3, 2, 2);
        // y[0,0] = 1*1 + 2*2 + 4*3 + 5*4 = 37, and so on.
        assert_eq!(fwd(p, &x, &w, Some(&[0.5])), vec![37.5, 47.5, 67.5, 77.5]);
        // Pad 1 all round, stride 2: windows at rows {-1,0},{1,2} x cols {-1,0},{1,2}.
        let p = Conv2dParams {
            stride_h: 2,
            stride_w: 2,
            padding: Padding2d::symmetric(1, 1),
            ..p
        };
        assert_eq!(fwd(p, &x, &w, None), vec![4.0, 18.0, 36.0, 77.0]);
        // Dilation 2 on a 3x3 input: one window reading the four corners.
        let p = Conv2dParams {
            dilation_h: 2,
            dilation_w: 2,
            ..single_channel(3, 3, 2, 2)
        };
        assert_eq!(
            fwd(p, &x, &w, None),
            vec![1.0 + 2.0 * 3.0 + 3.0 * 7.0 + 4.0 * 9.0]
        );
        // Two groups of one channel each: channel 0 gets kernel [1,2,3,4], channel 1 gets 10x.
        let p = Conv2dParams {
            c_in: 2,
            c_out: 2,
            groups: 2,
            ..single_channel(2, 2, 2, 2)
        };
        let x = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
        let w = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(fwd(p, &x, &w, None), vec![30.0, 300.0]);
    }

    #[test]
    fn hand_computed_grads() {
        // 1x2x2x1 input, 1x1 kernel of weight 3, stride 2: only x[0,0] is read.
        let p = Conv2dParams {
            stride_h: 2,
            stride_w: 2,
            ..single_channel(2, 2, 1, 1)
        };
        let mut dx = [9.0; 4];
        conv2d_grad_input(p, &[2.0], &[3.0], &mut dx).unwrap();
        assert_eq!(dx, [6.0, 0.0, 0.0, 0.0]);
        let mut dw = [9.0];
        conv2d_grad_weight(p, &[5.0, 1.0, 1.0, 1.0], &[2.0], &mut dw).unwrap();
        assert_eq!(dw, [10.0]);
        let p = single_channel(3, 3, 2, 2);
        let mut db = [9.0];
        conv2d_grad_bias(p, &[1.0, 2.0, 3.0, 4.5], &mut db).unwrap();
        assert_eq!(db, [10.5]);
    }

    #[test]
    fn matches_direct_formulation() {
        let mut rng = rng("conv2d_matches_direct_formulation");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let b = rand_vec(&mut rng, p.c_out);
            let want = conv2d_direct(p, &x, &w, &b);
            assert_close(
                &format!("conv2d {p:?}"),
                &fwd(p, &x, &w, Some(&b)),
                &want,
                1e-12,
            );
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("conv2d_f32_matches_f64");
        for case in 0..4 {
            let p = random_params(&mut rng, case);
            let x = round_f32(&rand_vec(&mut rng, p.x_len().unwrap()));
            let w = round_f32(&rand_vec(&mut rng, p.w_len().unwrap()));
            let b = round_f32(&rand_vec(&mut rng, p.c_out));
            let dy = round_f32(&rand_vec(&mut rng, p.y_len().unwrap()));
            let (x32, w32, b32, dy32) = (to_f32(&x), to_f32(&w), to_f32(&b), to_f32(&dy));

            let mut y32 = vec![0.0f32; dy.len()];
            conv2d(p, &x32, &w32, Some(&b32), &mut y32).unwrap();
            assert_close("conv2d f32", &to_f64(&y32), &fwd(p, &x, &w, Some(&b)), 1e-6);

            let (mut dx32, mut dx) = (vec![0.0f32; x.len()], vec![0.0; x.len()]);
            conv2d_grad_input(p, &dy32, &w32, &mut dx32).unwrap();
            conv2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            assert_close("conv2d dx f32", &to_f64(&dx32), &dx, 1e-6);

            let (mut dw32, mut dw) = (vec![0.0f32; w.len()], vec![0.0; w.len()]);
            conv2d_grad_weight(p, &x32, &dy32, &mut dw32).unwrap();
            conv2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            assert_close("conv2d dw f32", &to_f64(&dw32), &dw, 1e-6);

            let (mut db32, mut db) = (vec![0.0f32; b.len()], vec![0.0; b.len()]);
            conv2d_grad_bias(p, &dy32, &mut db32).unwrap();
            conv2d_grad_bias(p, &dy, &mut db).unwrap();
            assert_close("conv2d db f32", &to_f64(&db32), &db, 1e-6);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng("conv2d_gradients_match_finite_differences");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let b = rand_vec(&mut rng, p.c_out);
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let what = |g: &str| format!("conv2d {g} {p:?}");

            // Outputs start as garbage: the gradient functions must overwrite, not accumulate.
            let mut dx = vec![7.0; x.len()];
            conv2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            check_grad(&what("dx"), &|x| fwd(p, x, &w, Some(&b)), &x, &dy, &dx);

            let mut dw = vec![7.0; w.len()];
            conv2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            check_grad(&what("dw"), &|w| fwd(p, &x, w, Some(&b)), &w, &dy, &dw);

            let mut db = vec![7.0; b.len()];
            conv2d_grad_bias(p, &dy, &mut db).unwrap();
            check_grad(&what("db"), &|b| fwd(p, &x, &w, Some(b)), &b, &dy, &db);
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = Conv2dParams {
            n: 1,
            h: 4,
            w: 4,
            c_in: 2,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            groups: 2,
        };
        let x = vec![0.5f64; 32];
        let w = vec![0.5f64; 36];
        let mut y = vec![0.0f64; 16];
        assert!(conv2d(p, &x, &w, None, &mut y).is_ok());
        let param = |q: Conv2dParams| match conv2d(q, &x, &w, None, &mut [0.0; 16]) {
            Err(KernelError::Param { param, .. }) => param,
            other => panic!("expected a parameter error for {q:?}, got {other:?}"),
        };
        assert_eq!(param(Conv2dParams { stride_h: 0, ..p }), "stride_h");
        assert_eq!(param(Conv2dParams { stride_w: 0, ..p }), "stride_w");
        assert_eq!(param(Conv2dParams { dilation_w: 0, ..p }), "dilation_w");
        assert_eq!(param(Conv2dParams { groups: 3, ..p }), "groups");
        assert_eq!(param(Conv2dParams { groups: 0, ..p }), "groups");
        assert_eq!(param(Conv2dParams { c_out: 3, ..p }), "groups");
        assert_eq!(param(Conv2dParams { c_in: 0, ..p }), "c_in");
        assert_eq!(param(Conv2dParams { n: 0, ..p }), "n");
        assert_eq!(param(Conv2dParams { h: 0, ..p }), "h");
        assert_eq!(param(Conv2dParams { kw: 0, ..p }), "kw");
        // Window larger than the (padded) input: 5 > 4, and 3 taps dilated by 2 span 5.
        assert_eq!(param(Conv2dParams { kh: 5, ..p }), "kh");
        assert_eq!(param(Conv2dParams { dilation_w: 2, ..p }), "kw");
        let huge = Conv2dParams {
            n: usize::MAX,
            h: usize::MAX,
            ..p
        };
        assert!(matches!(huge.validate(), Err(KernelError::Param { .. })));
        // Padding makes the large window legal.
        assert!(
            Conv2dParams {
                kh: 5,
                padding: Padding2d::new(1, 0, 0, 0),
                ..p
            }
            .validate()
            .is_ok()
        );

        let len_arg = |r: Result<()>| match r {
            Err(KernelError::Length { arg, .. }) => arg,
            other => panic!("expected a length error, got {other:?}"),
        };
        assert_eq!(len_arg(conv2d(p, &x[..31], &w, None, &mut y)), "x");
        assert_eq!(len_arg(conv2d(p, &x, &w[..35], None, &mut y)), "w");
        assert_eq!(len_arg(conv2d(p, &x, &w, Some(&[1.0; 3]), &mut y)), "bias");
        assert_eq!(len_arg(conv2d(p, &x, &w, None, &mut y[..15])), "y");
        assert_eq!(len_arg(conv2d_grad_input(p, &y, &w, &mut [0.0; 33])), "dx");
        assert_eq!(
            len_arg(conv2d_grad_input(p, &y[..1], &w, &mut [0.0; 32])),
            "dy"
        );
        assert_eq!(len_arg(conv2d_grad_weight(p, &x, &y, &mut [0.0; 72])), "dw");
        assert_eq!(len_arg(conv2d_grad_bias(p, &y, &mut [0.0; 2])), "db");
        assert!(conv2d_grad_bias(Conv2dParams { stride_h: 0, ..p }, &y, &mut [0.0; 4]).is_err());
    }
}
