//! Depthwise 2-D convolution with a channel multiplier over NHWC activations, with its input,
//! weight and bias gradients.
//!
//! Each input channel `ic` is convolved with `multiplier` kernels of its own, giving output
//! channels `oc = ic * multiplier + m`:
//!
//! ```text
//! y[n, oh, ow, ic * multiplier + m] = b[oc] + sum_{ki, kj} x[n, ih, iw, ic] * w[ki, kj, oc]
//!     ih = oh * stride_h + ki * dilation_h - padding.top
//!     iw = ow * stride_w + kj * dilation_w - padding.left
//! ```
//!
//! Weight layout: `[kh, kw, c_in * multiplier]` (TFLite / MindSpore depthwise layout, i.e. TF's
//! `[kh, kw, c_in, multiplier]` flattened). Output channels are contiguous innermost, so a fast
//! kernel loads four neighbouring output channels' taps as one vec4. This is the same operator
//! as [`conv2d`](super::conv2d::conv2d) with `groups = c_in`, `c_out = c_in * multiplier` and
//! OHWI weight `w_conv[oc, ki, kj, 0] = w[ki, kj, oc]`; the tests check that identity.

use super::Real;
use super::bias_add::{BiasAddParams, bias_add_grad_bias};
use super::window::{Padding2d, Window2d, idx4};
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "depthwise_conv2d";

/// Shape and window of a depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseConv2dParams {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c_in: usize,
    /// Kernels per input channel; the output has `c_in * multiplier` channels.
    pub multiplier: usize,
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
}

/// Sizes derived from validated parameters.
#[derive(Debug, Clone, Copy)]
struct Dims {
    out_h: usize,
    out_w: usize,
    c_out: usize,
    x_len: usize,
    w_len: usize,
    y_len: usize,
}

impl DepthwiseConv2dParams {
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
        check_param(KERNEL, "multiplier", self.multiplier > 0, || {
            "must be positive".into()
        })?;
        let (out_h, out_w) = self.window().out_hw(KERNEL)?;
        let c_out = checked_product(KERNEL, &[self.c_in, self.multiplier])?;
        Ok(Dims {
            out_h,
            out_w,
            c_out,
            x_len: checked_product(KERNEL, &[self.n, self.h, self.w, self.c_in])?,
            w_len: checked_product(KERNEL, &[self.kh, self.kw, c_out])?,
            y_len: checked_product(KERNEL, &[self.n, out_h, out_w, c_out])?,
        })
    }

    /// Refuses zero sizes, zero stride or dilation, a window larger than the padded input, and
    /// element counts that overflow.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    /// Output channels, `c_in * multiplier`.
    pub fn c_out(&self) -> Result<usize> {
        self.dims().map(|d| d.c_out)
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

    /// Element count of the weight: `kh * kw * c_in * multiplier`.
    pub fn w_len(&self) -> Result<usize> {
        self.dims().map(|d| d.w_len)
    }

    /// Element count of `y`: `n * out_h * out_w * c_in * multiplier`.
    pub fn y_len(&self) -> Result<usize> {
        self.dims().map(|d| d.y_len)
    }
}

/// Forward depthwise convolution: `x` `[n, h, w, c_in]`, `w` `[kh, kw, c_in * multiplier]`,
/// optional `bias` `[c_in * multiplier]`, writes `y` `[n, out_h, out_w, c_in * multiplier]`.
pub fn depthwise_conv2d<T: Real>(
    p: DepthwiseConv2dParams,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "w", d.w_len, w.len())?;
    if let Some(b) = bias {
        check_len(KERNEL, "bias", d.c_out, b.len())?;
    }
    check_len(KERNEL, "y", d.y_len, y.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [1, p.kh, p.kw, d.c_out];
    let y_dims = [p.n, d.out_h, d.out_w, d.c_out];
    for n in 0..p.n {
        for oh in 0..d.out_h {
            for ow in 0..d.out_w {
                for oc in 0..d.c_out {
                    let ic = oc / p.multiplier;
                    let mut acc = bias.map_or(0.0, |b| b[oc].to_f64());
                    for ki in win.h.taps(oh) {
                        let Some(ih) = win.h.input_index(oh, ki) else {
                            continue;
                        };
                        for kj in win.w.taps(ow) {
                            let Some(iw) = win.w.input_index(ow, kj) else {
                                continue;
                            };
                            acc += x[idx4(x_dims, [n, ih, iw, ic])].to_f64()
                                * w[idx4(w_dims, [0, ki, kj, oc])].to_f64();
                        }
                    }
                    y[idx4(y_dims, [n, oh, ow, oc])] = T::from_f64(acc);
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to `x` (overwrites `dx` `[n, h, w, c_in]`): each input cell gathers
/// `dy * w` over its `multiplier` output channels and every (output position, tap) that read it.
pub fn depthwise_conv2d_grad_input<T: Real>(
    p: DepthwiseConv2dParams,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "w", d.w_len, w.len())?;
    check_len(KERNEL, "dx", d.x_len, dx.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [1, p.kh, p.kw, d.c_out];
    let y_dims = [p.n, d.out_h, d.out_w, d.c_out];
    for n in 0..p.n {
        for ih in 0..p.h {
            for iw in 0..p.w {
                for ic in 0..p.c_in {
                    let mut acc = 0.0f64;
                    for ki in 0..p.kh {
                        let Some(oh) = win.h.output_index(ih, ki) else {
                            continue;
                        };
                        for kj in 0..p.kw {
                            let Some(ow) = win.w.output_index(iw, kj) else {
                                continue;
                            };
                            for m in 0..p.multiplier {
                                let oc = ic * p.multiplier + m;
                                acc += dy[idx4(y_dims, [n, oh, ow, oc])].to_f64()
                                    * w[idx4(w_dims, [0, ki, kj, oc])].to_f64();
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

/// Gradient with respect to the weight (overwrites `dw` `[kh, kw, c_in * multiplier]`):
/// `dw[ki, kj, oc] = sum_{n, oh, ow} x[n, ih, iw, oc / multiplier] * dy[n, oh, ow, oc]`.
pub fn depthwise_conv2d_grad_weight<T: Real>(
    p: DepthwiseConv2dParams,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "dw", d.w_len, dw.len())?;
    let win = p.window();
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [1, p.kh, p.kw, d.c_out];
    let y_dims = [p.n, d.out_h, d.out_w, d.c_out];
    for ki in 0..p.kh {
        for kj in 0..p.kw {
            for oc in 0..d.c_out {
                let ic = oc / p.multiplier;
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
                dw[idx4(w_dims, [0, ki, kj, oc])] = T::from_f64(acc);
            }
        }
    }
    Ok(())
}

/// Gradient with respect to the bias (overwrites `db` `[c_in * multiplier]`): `dy` summed over
/// `n, out_h, out_w`.
pub fn depthwise_conv2d_grad_bias<T: Real>(
    p: DepthwiseConv2dParams,
    dy: &[T],
    db: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "db", d.c_out, db.len())?;
    let rows = checked_product(KERNEL, &[p.n, d.out_h, d.out_w])?;
    bias_add_grad_bias(
        BiasAddParams {
            rows,
            channels: d.c_out,
        },
        dy,
        db,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::KernelError;
    use crate::reference::conv2d::{self, Conv2dParams};
    use crate::reference::window::test_support::{
        draw_valid, random_geo, round_f32, to_f32, to_f64,
    };
    use crate::rng::Rng;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn fwd(p: DepthwiseConv2dParams, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let mut y = vec![0.0; p.y_len().unwrap()];
        depthwise_conv2d(p, x, w, b, &mut y).unwrap();
        y
    }

    /// A random valid depthwise convolution; `case` picks the window feature (see
    /// `random_geo`) and odd cases use multiplier 2.
    fn random_params(rng: &mut Rng, case: usize) -> DepthwiseConv2dParams {
        draw_valid(
            rng,
            |rng| {
                let g = random_geo(rng, case, 6, true);
                DepthwiseConv2dParams {
                    n: rng.range(1, 2),
                    h: g.h,
                    w: g.w,
                    c_in: rng.range(1, 3),
                    multiplier: if !case.is_multiple_of(2) {
                        2
                    } else {
                        rng.range(1, 2)
                    },
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

    /// The matching grouped convolution (`groups = c_in`) and the OHWI re-layout of `w`.
    fn as_conv(p: DepthwiseConv2dParams, w: &[f64]) -> (Conv2dParams, Vec<f64>) {
        let c_out = p.c_in * p.multiplier;
        let q = Conv2dParams {
            n: p.n,
            h: p.h,
            w: p.w,
            c_in: p.c_in,
            c_out,
            kh: p.kh,
            kw: p.kw,
            stride_h: p.stride_h,
            stride_w: p.stride_w,
            dilation_h: p.dilation_h,
            dilation_w: p.dilation_w,
            padding: p.padding,
            groups: p.c_in,
        };
        let mut wc = vec![0.0; w.len()];
        for ki in 0..p.kh {
            for kj in 0..p.kw {
                for oc in 0..c_out {
                    wc[(oc * p.kh + ki) * p.kw + kj] = w[(ki * p.kw + kj) * c_out + oc];
                }
            }
        }
        (q, wc)
    }

    #[test]
    fn hand_computed_two_channels() {
        // Channel 0 is 1..9 with kernel [[1,2],[3,4]]; channel 1 is 10x that with the
        // difference kernel [[1,0],[0,-1]], so every output is 10 * (x[i,j] - x[i+1,j+1]) = -40.
        let p = DepthwiseConv2dParams {
            n: 1,
            h: 3,
            w: 3,
            c_in: 2,
            multiplier: 1,
            kh: 2,
            kw: 2,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
        };
        let x: Vec<f64> = (1..=9)
            .flat_map(|v| [f64::from(v), 10.0 * f64::from(v)])
            .collect();
        let w = [1.0, 1.0, 2.0, 0.0, 3.0, 0.0, 4.0, -1.0];
        let y = fwd(p, &x, &w, Some(&[0.0, 0.5]));
        assert_eq!(y, vec![37.0, -39.5, 47.0, -39.5, 67.0, -39.5, 77.0, -39.5]);
        // Multiplier 2 on one channel: outputs 0 and 1 use kernels [1,2,3,4] and [-1,0,0,0].
        let p = DepthwiseConv2dParams {
            c_in: 1,
            multiplier: 2,
            ..p
        };
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let w = [1.0, -1.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0];
        assert_eq!(
            fwd(p, &x, &w, None),
            vec![37.0, -1.0, 47.0, -2.0, 67.0, -4.0, 77.0, -5.0]
        );
    }

    #[test]
    fn equals_grouped_conv2d() {
        let mut rng = rng("depthwise_conv2d_equals_grouped_conv2d");
        for case in 0..8 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let b = rand_vec(&mut rng, p.c_out().unwrap());
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let (q, wc) = as_conv(p, &w);
            let what = |g: &str| format!("depthwise {g} vs conv2d {p:?}");
            assert_close(
                &what("y"),
                &fwd(p, &x, &w, Some(&b)),
                &conv2d::tests::fwd(q, &x, &wc, Some(&b)),
                1e-12,
            );

            let (mut dx, mut dx_conv) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            depthwise_conv2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            conv2d::conv2d_grad_input(q, &dy, &wc, &mut dx_conv).unwrap();
            assert_close(&what("dx"), &dx, &dx_conv, 1e-12);

            let (mut dw, mut dw_conv) = (vec![0.0; w.len()], vec![0.0; w.len()]);
            depthwise_conv2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            conv2d::conv2d_grad_weight(q, &x, &dy, &mut dw_conv).unwrap();
            let (_, dw_relaid) = as_conv(p, &dw);
            assert_close(&what("dw"), &dw_relaid, &dw_conv, 1e-12);
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("depthwise_conv2d_f32_matches_f64");
        for case in 0..4 {
            let p = random_params(&mut rng, case);
            let x = round_f32(&rand_vec(&mut rng, p.x_len().unwrap()));
            let w = round_f32(&rand_vec(&mut rng, p.w_len().unwrap()));
            let b = round_f32(&rand_vec(&mut rng, p.c_out().unwrap()));
            let dy = round_f32(&rand_vec(&mut rng, p.y_len().unwrap()));
            let (x32, w32, b32, dy32) = (to_f32(&x), to_f32(&w), to_f32(&b), to_f32(&dy));

            let mut y32 = vec![0.0f32; dy.len()];
            depthwise_conv2d(p, &x32, &w32, Some(&b32), &mut y32).unwrap();
            assert_close(
                "depthwise f32",
                &to_f64(&y32),
                &fwd(p, &x, &w, Some(&b)),
                1e-6,
            );

            let (mut dx32, mut dx) = (vec![0.0f32; x.len()], vec![0.0; x.len()]);
            depthwise_conv2d_grad_input(p, &dy32, &w32, &mut dx32).unwrap();
            depthwise_conv2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            assert_close("depthwise dx f32", &to_f64(&dx32), &dx, 1e-6);

            let (mut dw32, mut dw) = (vec![0.0f32; w.len()], vec![0.0; w.len()]);
            depthwise_conv2d_grad_weight(p, &x32, &dy32, &mut dw32).unwrap();
            depthwise_conv2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            assert_close("depthwise dw f32", &to_f64(&dw32), &dw, 1e-6);

            let (mut db32, mut db) = (vec![0.0f32; b.len()], vec![0.0; b.len()]);
            depthwise_conv2d_grad_bias(p, &dy32, &mut db32).unwrap();
            depthwise_conv2d_grad_bias(p, &dy, &mut db).unwrap();
            assert_close("depthwise db f32", &to_f64(&db32), &db, 1e-6);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng("depthwise_conv2d_gradients_match_finite_differences");
        for case in 0..8 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let b = rand_vec(&mut rng, p.c_out().unwrap());
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let what = |g: &str| format!("depthwise {g} {p:?}");

            let mut dx = vec![7.0; x.len()];
            depthwise_conv2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            check_grad(&what("dx"), &|x| fwd(p, x, &w, Some(&b)), &x, &dy, &dx);

            let mut dw = vec![7.0; w.len()];
            depthwise_conv2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            check_grad(&what("dw"), &|w| fwd(p, &x, w, Some(&b)), &w, &dy, &dw);

            let mut db = vec![7.0; b.len()];
            depthwise_conv2d_grad_bias(p, &dy, &mut db).unwrap();
            check_grad(&what("db"), &|b| fwd(p, &x, &w, Some(b)), &b, &dy, &db);
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = DepthwiseConv2dParams {
            n: 1,
            h: 4,
            w: 4,
            c_in: 2,
            multiplier: 2,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
        };
        let x = vec![0.5f64; 32];
        let w = vec![0.5f64; 36];
        let mut y = vec![0.0f64; 16];
        assert!(depthwise_conv2d(p, &x, &w, None, &mut y).is_ok());
        let param = |q: DepthwiseConv2dParams| match q.validate() {
            Err(KernelError::Param { param, .. }) => param,
            other => panic!("expected a parameter error for {q:?}, got {other:?}"),
        };
        assert_eq!(
            param(DepthwiseConv2dParams { stride_w: 0, ..p }),
            "stride_w"
        );
        assert_eq!(
            param(DepthwiseConv2dParams { dilation_h: 0, ..p }),
            "dilation_h"
        );
        assert_eq!(
            param(DepthwiseConv2dParams { multiplier: 0, ..p }),
            "multiplier"
        );
        assert_eq!(param(DepthwiseConv2dParams { c_in: 0, ..p }), "c_in");
        assert_eq!(param(DepthwiseConv2dParams { kw: 5, ..p }), "kw");
        assert_eq!(
            param(DepthwiseConv2dParams {
                c_in: usize::MAX,
                ..p
            }),
            "shape"
        );

        let len_arg = |r: Result<()>| match r {
            Err(KernelError::Length { arg, .. }) => arg,
            other => panic!("expected a length error, got {other:?}"),
        };
        assert_eq!(
            len_arg(depthwise_conv2d(p, &x[..31], &w, None, &mut y)),
            "x"
        );
        assert_eq!(
            len_arg(depthwise_conv2d(p, &x, &w[..18], None, &mut y)),
            "w"
        );
        assert_eq!(
            len_arg(depthwise_conv2d(p, &x, &w, Some(&[0.0; 2]), &mut y)),
            "bias"
        );
        assert_eq!(len_arg(depthwise_conv2d(p, &x, &w, None, &mut y[..8])), "y");
        assert_eq!(
            len_arg(depthwise_conv2d_grad_input(p, &y, &w, &mut [0.0; 16])),
            "dx"
        );
        assert_eq!(
            len_arg(depthwise_conv2d_grad_weight(p, &x, &y, &mut [0.0; 9])),
            "dw"
        );
        assert_eq!(
            len_arg(depthwise_conv2d_grad_bias(p, &y, &mut [0.0; 2])),
            "db"
        );
        assert!(matches!(
            depthwise_conv2d(
                DepthwiseConv2dParams { stride_h: 0, ..p },
                &x,
                &w,
                None,
                &mut y
            ),
            Err(KernelError::Param {
                param: "stride_h",
                ..
            })
        ));
    }
}
