//! Transposed 2-D convolution ("deconvolution"): the adjoint of [`conv2d`](super::conv2d),
//! with its input, weight and bias gradients.
//!
//! Each input cell stamps its kernel, scaled, onto the output; overlapping stamps add up:
//!
//! ```text
//! y[n, oh, ow, g * cog + ocg] += x[n, ih, iw, ic] * w[ic, ki, kj, ocg]     (then + b[oc])
//!     oh = ih * stride_h + ki * dilation_h - padding.top
//!     ow = iw * stride_w + kj * dilation_w - padding.left
//!     cig = c_in / groups, cog = c_out / groups, g = ic / cig
//! ```
//!
//! with stamps falling outside `[0, out_h) x [0, out_w)` dropped. The output size is
//! `(h - 1) * stride_h + dilation_h * (kh - 1) + 1 + output_padding_h - top - bottom` (same
//! along W): `padding` crops the full output, and `output_padding` (< stride) adds cells at the
//! bottom / right to pick one of the `stride` input sizes a strided conv maps to the same size.
//!
//! Weight layout: `[c_in, kh, kw, c_out / groups]` (PyTorch's `[c_in, c_out / groups, kh, kw]`
//! with the output channels moved innermost). It is exactly the OHWI weight of the *matching*
//! convolution, the conv2d that maps this op's output shape back to its input shape
//! ([`ConvTranspose2dParams::as_conv2d`]: `c_in`/`c_out` swapped, same window and groups). With
//! the same weight tensor, this op's forward is that conv's `conv2d_grad_input`, its input
//! gradient is that conv's forward, and its weight gradient is that conv's
//! `conv2d_grad_weight` with `x` and `dy` swapped; the tests check all three.

use super::Real;
use super::bias_add::{BiasAddParams, bias_add_grad_bias};
use super::conv2d::Conv2dParams;
use super::window::{Axis, Padding2d, Window1d, Window2d, idx4};
use crate::error::{Result, check_len, check_param, checked_product};

const KERNEL: &str = "conv_transpose2d";

/// Shape and window of a transposed convolution (`h`, `w` are its *input* sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
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
    /// Output rows between the stamps of consecutive input rows (the upsampling factor).
    pub stride_h: usize,
    /// Output columns between the stamps of consecutive input columns.
    pub stride_w: usize,
    /// Output rows between consecutive kernel taps (1 = dense).
    pub dilation_h: usize,
    /// Output columns between consecutive kernel taps (1 = dense).
    pub dilation_w: usize,
    /// Cells cropped from each side of the full output (the matching conv's padding).
    pub padding: Padding2d,
    /// Extra rows at the bottom of the output; must be `< stride_h`.
    pub output_padding_h: usize,
    /// Extra columns at the right of the output; must be `< stride_w`.
    pub output_padding_w: usize,
    /// Channel groups: each group of `c_in / groups` inputs writes `c_out / groups` outputs.
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
    /// The matching conv's window: its input is this op's output.
    win: Window2d,
}

/// Output length along one axis, `(input - 1) * stride + dilation * (kernel - 1) + 1 +
/// output_padding - pad_before - pad_after`, with every refusal named after `axis`'s parameters.
fn axis_out(
    input: usize,
    (kernel, stride, dilation): (usize, usize, usize),
    (pad_before, pad_after): (usize, usize),
    output_padding: usize,
    axis: Axis,
) -> Result<usize> {
    let (in_name, k_name, s_name, d_name, op_name, pad_name) = match axis {
        Axis::H => (
            "h",
            "kh",
            "stride_h",
            "dilation_h",
            "output_padding_h",
            "padding.top/bottom",
        ),
        Axis::W => (
            "w",
            "kw",
            "stride_w",
            "dilation_w",
            "output_padding_w",
            "padding.left/right",
        ),
    };
    let positive = || "must be positive".to_string();
    check_param(KERNEL, in_name, input > 0, positive)?;
    check_param(KERNEL, k_name, kernel > 0, positive)?;
    check_param(KERNEL, s_name, stride > 0, positive)?;
    check_param(KERNEL, d_name, dilation > 0, positive)?;
    // Below the stride, every output size maps back to `input` under the matching conv, which
    // keeps this op the exact adjoint of a conv2d; beyond it that conv would see more rows.
    check_param(KERNEL, op_name, output_padding < stride, || {
        format!("{output_padding} must be smaller than the stride {stride}")
    })?;
    let full = (input - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(dilation.checked_mul(kernel - 1)?))
        .and_then(|v| v.checked_add(1 + output_padding));
    check_param(KERNEL, k_name, full.is_some(), || {
        "output size overflows".into()
    })?;
    let full = full.unwrap_or(0);
    let out = pad_before
        .checked_add(pad_after)
        .and_then(|pads| full.checked_sub(pads));
    check_param(KERNEL, pad_name, matches!(out, Some(o) if o > 0), || {
        format!("padding {pad_before} + {pad_after} crops the whole {full}-cell output")
    })?;
    Ok(out.unwrap_or(0))
}

impl ConvTranspose2dParams {
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
        let pad = self.padding;
        let out_h = axis_out(
            self.h,
            (self.kh, self.stride_h, self.dilation_h),
            (pad.top, pad.bottom),
            self.output_padding_h,
            Axis::H,
        )?;
        let out_w = axis_out(
            self.w,
            (self.kw, self.stride_w, self.dilation_w),
            (pad.left, pad.right),
            self.output_padding_w,
            Axis::W,
        )?;
        let win = Window2d::new(
            (out_h, out_w),
            (self.kh, self.kw),
            (self.stride_h, self.stride_w),
            (self.dilation_h, self.dilation_w),
            pad,
        );
        // The matching conv must map the output back onto exactly the input; `axis_out`'s
        // checks guarantee it, this keeps the loops' indexing honest if they ever change.
        let back = (win.h.output_len(), win.w.output_len());
        check_param(
            KERNEL,
            "shape",
            back == (Some(self.h), Some(self.w)),
            || {
                format!(
                    "matching conv maps {out_h}x{out_w} to {back:?}, not {}x{}",
                    self.h, self.w
                )
            },
        )?;
        let cig = self.c_in / self.groups;
        let cog = self.c_out / self.groups;
        Ok(Dims {
            out_h,
            out_w,
            cig,
            cog,
            x_len: checked_product(KERNEL, &[self.n, self.h, self.w, self.c_in])?,
            w_len: checked_product(KERNEL, &[self.c_in, self.kh, self.kw, cog])?,
            y_len: checked_product(KERNEL, &[self.n, out_h, out_w, self.c_out])?,
            win,
        })
    }

    /// Refuses zero sizes, zero stride or dilation, `output_padding >= stride`, groups that do
    /// not divide both channel counts, padding that crops the whole output, and element counts
    /// that overflow.
    pub fn validate(&self) -> Result<()> {
        self.dims().map(|_| ())
    }

    /// Output height, `(h - 1) * stride_h + dilation_h * (kh - 1) + 1 + output_padding_h - top
    /// - bottom`.
    pub fn out_h(&self) -> Result<usize> {
        self.dims().map(|d| d.out_h)
    }

    /// Output width, `(w - 1) * stride_w + dilation_w * (kw - 1) + 1 + output_padding_w - left
    /// - right`.
    pub fn out_w(&self) -> Result<usize> {
        self.dims().map(|d| d.out_w)
    }

    /// Element count of `x`: `n * h * w * c_in`.
    pub fn x_len(&self) -> Result<usize> {
        self.dims().map(|d| d.x_len)
    }

    /// Element count of the weight: `c_in * kh * kw * (c_out / groups)`.
    pub fn w_len(&self) -> Result<usize> {
        self.dims().map(|d| d.w_len)
    }

    /// Element count of `y`: `n * out_h * out_w * c_out`.
    pub fn y_len(&self) -> Result<usize> {
        self.dims().map(|d| d.y_len)
    }

    /// The matching convolution: input `[n, out_h, out_w, c_out]`, output
    /// `[n, h, w, c_in]`, same kernel, stride, dilation, padding and groups. Its OHWI weight
    /// `[c_in, kh, kw, c_out / groups]` is this op's weight, element for element.
    pub fn as_conv2d(&self) -> Result<Conv2dParams> {
        let d = self.dims()?;
        Ok(Conv2dParams {
            n: self.n,
            h: d.out_h,
            w: d.out_w,
            c_in: self.c_out,
            c_out: self.c_in,
            kh: self.kh,
            kw: self.kw,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            padding: self.padding,
            groups: self.groups,
        })
    }
}

/// Output position stamped by input position `i` at tap `tap`: the matching conv's
/// `input_index`, read in the other direction.
fn stamp(win: &Window1d, i: usize, tap: usize) -> Option<usize> {
    win.input_index(i, tap)
}

/// Forward transposed convolution: `x` `[n, h, w, c_in]`, `w` `[c_in, kh, kw, c_out / groups]`,
/// optional `bias` `[c_out]`, writes `y` `[n, out_h, out_w, c_out]`.
pub fn conv_transpose2d<T: Real>(
    p: ConvTranspose2dParams,
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
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [p.c_in, p.kh, p.kw, d.cog];
    let y_dims = [p.n, d.out_h, d.out_w, p.c_out];
    // Scatter, straight from the definition: accumulate every stamp in f64, then round once.
    let mut acc = vec![0.0f64; d.y_len];
    for n in 0..p.n {
        for ih in 0..p.h {
            for iw in 0..p.w {
                for ic in 0..p.c_in {
                    let g = ic / d.cig;
                    let xv = x[idx4(x_dims, [n, ih, iw, ic])].to_f64();
                    for ki in 0..p.kh {
                        let Some(oh) = stamp(&d.win.h, ih, ki) else {
                            continue;
                        };
                        for kj in 0..p.kw {
                            let Some(ow) = stamp(&d.win.w, iw, kj) else {
                                continue;
                            };
                            for ocg in 0..d.cog {
                                let oc = g * d.cog + ocg;
                                acc[idx4(y_dims, [n, oh, ow, oc])] +=
                                    xv * w[idx4(w_dims, [ic, ki, kj, ocg])].to_f64();
                            }
                        }
                    }
                }
            }
        }
    }
    for (i, (out, a)) in y.iter_mut().zip(&acc).enumerate() {
        let b = bias.map_or(0.0, |b| b[i % p.c_out].to_f64());
        *out = T::from_f64(a + b);
    }
    Ok(())
}

/// Gradient with respect to `x` (overwrites `dx` `[n, h, w, c_in]`): each input cell gathers
/// `dy * w` from every output cell its stamp wrote — the matching conv's forward.
pub fn conv_transpose2d_grad_input<T: Real>(
    p: ConvTranspose2dParams,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "w", d.w_len, w.len())?;
    check_len(KERNEL, "dx", d.x_len, dx.len())?;
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [p.c_in, p.kh, p.kw, d.cog];
    let y_dims = [p.n, d.out_h, d.out_w, p.c_out];
    for n in 0..p.n {
        for ih in 0..p.h {
            for iw in 0..p.w {
                for ic in 0..p.c_in {
                    let g = ic / d.cig;
                    let mut acc = 0.0f64;
                    for ki in 0..p.kh {
                        let Some(oh) = stamp(&d.win.h, ih, ki) else {
                            continue;
                        };
                        for kj in 0..p.kw {
                            let Some(ow) = stamp(&d.win.w, iw, kj) else {
                                continue;
                            };
                            for ocg in 0..d.cog {
                                let oc = g * d.cog + ocg;
                                acc += dy[idx4(y_dims, [n, oh, ow, oc])].to_f64()
                                    * w[idx4(w_dims, [ic, ki, kj, ocg])].to_f64();
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

/// Gradient with respect to the weight (overwrites `dw` `[c_in, kh, kw, c_out / groups]`):
/// `dw[ic, ki, kj, ocg] = sum_{n, ih, iw} x[n, ih, iw, ic] * dy[n, oh, ow, g * cog + ocg]` over
/// the stamps that land inside the output.
pub fn conv_transpose2d_grad_weight<T: Real>(
    p: ConvTranspose2dParams,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
) -> Result<()> {
    let d = p.dims()?;
    check_len(KERNEL, "x", d.x_len, x.len())?;
    check_len(KERNEL, "dy", d.y_len, dy.len())?;
    check_len(KERNEL, "dw", d.w_len, dw.len())?;
    let x_dims = [p.n, p.h, p.w, p.c_in];
    let w_dims = [p.c_in, p.kh, p.kw, d.cog];
    let y_dims = [p.n, d.out_h, d.out_w, p.c_out];
    for ic in 0..p.c_in {
        let g = ic / d.cig;
        for ki in 0..p.kh {
            for kj in 0..p.kw {
                for ocg in 0..d.cog {
                    let oc = g * d.cog + ocg;
                    let mut acc = 0.0f64;
                    for n in 0..p.n {
                        for ih in 0..p.h {
                            let Some(oh) = stamp(&d.win.h, ih, ki) else {
                                continue;
                            };
                            for iw in 0..p.w {
                                let Some(ow) = stamp(&d.win.w, iw, kj) else {
                                    continue;
                                };
                                acc += x[idx4(x_dims, [n, ih, iw, ic])].to_f64()
                                    * dy[idx4(y_dims, [n, oh, ow, oc])].to_f64();
                            }
                        }
                    }
                    dw[idx4(w_dims, [ic, ki, kj, ocg])] = T::from_f64(acc);
                }
            }
        }
    }
    Ok(())
}

/// Gradient with respect to the bias (overwrites `db` `[c_out]`): `dy` summed over
/// `n, out_h, out_w`.
pub fn conv_transpose2d_grad_bias<T: Real>(
    p: ConvTranspose2dParams,
    dy: &[T],
    db: &mut [T],
) -> Result<()> {
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
mod tests {
    use super::*;
    use crate::error::KernelError;
    use crate::reference::conv2d;
    use crate::reference::window::test_support::{
        dot, draw_valid, random_geo, round_f32, to_f32, to_f64,
    };
    use crate::rng::Rng;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn fwd(p: ConvTranspose2dParams, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
        let mut y = vec![0.0; p.y_len().unwrap()];
        conv_transpose2d(p, x, w, b, &mut y).unwrap();
        y
    }

    /// A random valid transposed convolution: `case` picks the window feature (see
    /// `random_geo`; its "input" size is used as this op's input) and, modulo 4, the grouping
    /// (1, 2, 3 groups, or `groups == c_in`); output padding is drawn wherever the stride
    /// allows it, and forced where it can be on case 1 (stride 2).
    fn random_params(rng: &mut Rng, case: usize) -> ConvTranspose2dParams {
        draw_valid(
            rng,
            |rng| {
                let g = random_geo(rng, case, 5, true);
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
                let (lo_h, lo_w) = if case == 1 {
                    (g.sh - 1, g.sw - 1)
                } else {
                    (0, 0)
                };
                ConvTranspose2dParams {
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
                    output_padding_h: rng.range(lo_h, g.sh - 1),
                    output_padding_w: rng.range(lo_w, g.sw - 1),
                    groups,
                }
            },
            |p| p.validate().is_ok(),
        )
    }

    fn single_channel(h: usize, w: usize, kh: usize, kw: usize) -> ConvTranspose2dParams {
        ConvTranspose2dParams {
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
            output_padding_h: 0,
            output_padding_w: 0,
            groups: 1,
        }
    }

    #[test]
    fn hand_computed_stamps() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 2.0, 3.0, 4.0];
        // Stride 2 with a 2x2 kernel: the stamps tile the output without overlap.
        let p = ConvTranspose2dParams {
            stride_h: 2,
            stride_w: 2,
            ..single_channel(2, 2, 2, 2)
        };
        #[rustfmt::skip]
        let want = vec![
            1.0, 2.0, 2.0, 4.0,
            3.0, 4.0, 6.0, 8.0,
            3.0, 6.0, 4.0, 8.0,
            9.0, 12.0, 12.0, 16.0,
        ];
        assert_eq!(fwd(p, &x, &w, None), want);
        // Output padding adds a row and a column that no stamp reaches: bias only.
        let q = ConvTranspose2dParams {
            output_padding_h: 1,
            output_padding_w: 1,
            ..p
        };
        let y = fwd(q, &x, &w, Some(&[0.5]));
        assert_eq!((q.out_h().unwrap(), q.out_w().unwrap()), (5, 5));
        for r in 0..5 {
            for c in 0..5 {
                let expect = if r < 4 && c < 4 {
                    want[r * 4 + c] + 0.5
                } else {
                    0.5
                };
                assert_eq!(y[r * 5 + c], expect, "({r}, {c})");
            }
        }
        // Stride 1: overlapping stamps add up (a full correlation with the flipped kernel).
        let p = single_channel(2, 2, 2, 2);
        let full = vec![1.0, 4.0, 4.0, 6.0, 20.0, 16.0, 9.0, 24.0, 16.0];
        assert_eq!(fwd(p, &x, &w, None), full);
        // Padding crops: one cell off every side leaves the centre.
        let p = ConvTranspose2dParams {
            padding: Padding2d::symmetric(1, 1),
            ..p
        };
        assert_eq!(fwd(p, &x, &w, None), vec![20.0]);
        // Asymmetric: crop the top row and left column only.
        let p = ConvTranspose2dParams {
            padding: Padding2d::new(1, 0, 1, 0),
            ..p
        };
        assert_eq!(fwd(p, &x, &w, None), vec![20.0, 16.0, 24.0, 16.0]);
    }

    #[test]
    fn is_the_adjoint_of_conv2d() {
        // <conv_transpose2d(x), z> == <x, conv2d(z)> for the matching conv and the same weight:
        // the defining property, checked without any gradient function.
        let mut rng = rng("conv_transpose2d_is_the_adjoint_of_conv2d");
        for case in 0..8 {
            let p = random_params(&mut rng, case);
            let q = p.as_conv2d().unwrap();
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let z = rand_vec(&mut rng, p.y_len().unwrap());
            assert_eq!(q.w_len().unwrap(), w.len());
            let lhs = dot(&fwd(p, &x, &w, None), &z);
            let rhs = dot(&x, &conv2d::tests::fwd(q, &z, &w, None));
            assert!(
                (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
                "{p:?}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn matches_conv2d_backward_and_forward() {
        let mut rng = rng("conv_transpose2d_matches_conv2d_backward_and_forward");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let q = p.as_conv2d().unwrap();
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let what = |g: &str| format!("conv_transpose2d {g} {p:?}");

            // Forward == the matching conv's input gradient, with `x` as its `dy`.
            let mut want = vec![0.0; dy.len()];
            conv2d::conv2d_grad_input(q, &x, &w, &mut want).unwrap();
            assert_close(&what("forward"), &fwd(p, &x, &w, None), &want, 1e-12);

            // Input gradient == the matching conv's forward on `dy`.
            let mut dx = vec![0.0; x.len()];
            conv_transpose2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            assert_close(
                &what("dx"),
                &dx,
                &conv2d::tests::fwd(q, &dy, &w, None),
                1e-12,
            );

            // Weight gradient == the matching conv's weight gradient, roles of x and dy swapped.
            let (mut dw, mut want) = (vec![0.0; w.len()], vec![0.0; w.len()]);
            conv_transpose2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            conv2d::conv2d_grad_weight(q, &dy, &x, &mut want).unwrap();
            assert_close(&what("dw"), &dw, &want, 1e-12);
        }
    }

    #[test]
    fn f32_matches_f64() {
        let mut rng = rng("conv_transpose2d_f32_matches_f64");
        for case in 0..4 {
            let p = random_params(&mut rng, case);
            let x = round_f32(&rand_vec(&mut rng, p.x_len().unwrap()));
            let w = round_f32(&rand_vec(&mut rng, p.w_len().unwrap()));
            let b = round_f32(&rand_vec(&mut rng, p.c_out));
            let dy = round_f32(&rand_vec(&mut rng, p.y_len().unwrap()));
            let (x32, w32, b32, dy32) = (to_f32(&x), to_f32(&w), to_f32(&b), to_f32(&dy));

            let mut y32 = vec![0.0f32; dy.len()];
            conv_transpose2d(p, &x32, &w32, Some(&b32), &mut y32).unwrap();
            assert_close("conv_t f32", &to_f64(&y32), &fwd(p, &x, &w, Some(&b)), 1e-6);

            let (mut dx32, mut dx) = (vec![0.0f32; x.len()], vec![0.0; x.len()]);
            conv_transpose2d_grad_input(p, &dy32, &w32, &mut dx32).unwrap();
            conv_transpose2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            assert_close("conv_t dx f32", &to_f64(&dx32), &dx, 1e-6);

            let (mut dw32, mut dw) = (vec![0.0f32; w.len()], vec![0.0; w.len()]);
            conv_transpose2d_grad_weight(p, &x32, &dy32, &mut dw32).unwrap();
            conv_transpose2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            assert_close("conv_t dw f32", &to_f64(&dw32), &dw, 1e-6);

            let (mut db32, mut db) = (vec![0.0f32; b.len()], vec![0.0; b.len()]);
            conv_transpose2d_grad_bias(p, &dy32, &mut db32).unwrap();
            conv_transpose2d_grad_bias(p, &dy, &mut db).unwrap();
            assert_close("conv_t db f32", &to_f64(&db32), &db, 1e-6);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = rng("conv_transpose2d_gradients_match_finite_differences");
        for case in 0..10 {
            let p = random_params(&mut rng, case);
            let x = rand_vec(&mut rng, p.x_len().unwrap());
            let w = rand_vec(&mut rng, p.w_len().unwrap());
            let b = rand_vec(&mut rng, p.c_out);
            let dy = rand_vec(&mut rng, p.y_len().unwrap());
            let what = |g: &str| format!("conv_transpose2d {g} {p:?}");

            let mut dx = vec![7.0; x.len()];
            conv_transpose2d_grad_input(p, &dy, &w, &mut dx).unwrap();
            check_grad(&what("dx"), &|x| fwd(p, x, &w, Some(&b)), &x, &dy, &dx);

            let mut dw = vec![7.0; w.len()];
            conv_transpose2d_grad_weight(p, &x, &dy, &mut dw).unwrap();
            check_grad(&what("dw"), &|w| fwd(p, &x, w, Some(&b)), &w, &dy, &dw);

            let mut db = vec![7.0; b.len()];
            conv_transpose2d_grad_bias(p, &dy, &mut db).unwrap();
            check_grad(&what("db"), &|b| fwd(p, &x, &w, Some(b)), &b, &dy, &db);
        }
    }

    #[test]
    fn refuses_bad_arguments() {
        let p = ConvTranspose2dParams {
            n: 1,
            h: 3,
            w: 3,
            c_in: 2,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            output_padding_h: 1,
            output_padding_w: 0,
            groups: 2,
        };
        // Output (3 - 1) * 2 + 3 + 1 = 8 rows, 7 columns.
        assert_eq!((p.out_h(), p.out_w()), (Ok(8), Ok(7)));
        let x = vec![0.5f64; 18];
        let w = vec![0.5f64; 36];
        let mut y = vec![0.0f64; 8 * 7 * 4];
        assert!(conv_transpose2d(p, &x, &w, None, &mut y).is_ok());
        let param = |q: ConvTranspose2dParams| match q.validate() {
            Err(KernelError::Param { param, .. }) => param,
            other => panic!("expected a parameter error for {q:?}, got {other:?}"),
        };
        assert_eq!(
            param(ConvTranspose2dParams { stride_h: 0, ..p }),
            "stride_h"
        );
        assert_eq!(
            param(ConvTranspose2dParams { dilation_w: 0, ..p }),
            "dilation_w"
        );
        assert_eq!(param(ConvTranspose2dParams { kh: 0, ..p }), "kh");
        assert_eq!(
            param(ConvTranspose2dParams {
                output_padding_h: 2,
                ..p
            }),
            "output_padding_h"
        );
        assert_eq!(
            param(ConvTranspose2dParams {
                stride_w: 1,
                output_padding_w: 1,
                ..p
            }),
            "output_padding_w"
        );
        assert_eq!(param(ConvTranspose2dParams { groups: 3, ..p }), "groups");
        assert_eq!(param(ConvTranspose2dParams { c_in: 3, ..p }), "groups");
        assert_eq!(param(ConvTranspose2dParams { groups: 0, ..p }), "groups");
        assert_eq!(param(ConvTranspose2dParams { n: 0, ..p }), "n");
        assert_eq!(param(ConvTranspose2dParams { w: 0, ..p }), "w");
        // Padding that crops the whole 7-column output.
        let crop = ConvTranspose2dParams {
            padding: Padding2d::new(0, 0, 4, 3),
            ..p
        };
        assert_eq!(param(crop), "padding.left/right");
        let huge = ConvTranspose2dParams {
            h: usize::MAX,
            stride_h: usize::MAX,
            ..p
        };
        assert!(matches!(huge.validate(), Err(KernelError::Param { .. })));
        assert!(
            ConvTranspose2dParams {
                c_out: usize::MAX - 1,
                ..p
            }
            .validate()
            .is_err()
        );

        let len_arg = |r: Result<()>| match r {
            Err(KernelError::Length { arg, .. }) => arg,
            other => panic!("expected a length error, got {other:?}"),
        };
        assert_eq!(
            len_arg(conv_transpose2d(p, &x[..17], &w, None, &mut y)),
            "x"
        );
        assert_eq!(
            len_arg(conv_transpose2d(p, &x, &w[..35], None, &mut y)),
            "w"
        );
        assert_eq!(
            len_arg(conv_transpose2d(p, &x, &w, Some(&[0.0; 2]), &mut y)),
            "bias"
        );
        assert_eq!(len_arg(conv_transpose2d(p, &x, &w, None, &mut y[..1])), "y");
        assert_eq!(
            len_arg(conv_transpose2d_grad_input(p, &y, &w, &mut [0.0; 4])),
            "dx"
        );
        assert_eq!(
            len_arg(conv_transpose2d_grad_weight(p, &x, &y, &mut [0.0; 4])),
            "dw"
        );
        assert_eq!(
            len_arg(conv_transpose2d_grad_weight(p, &x, &y[..3], &mut [0.0; 36])),
            "dy"
        );
        assert_eq!(
            len_arg(conv_transpose2d_grad_bias(p, &y, &mut [0.0; 2])),
            "db"
        );
    }
}
