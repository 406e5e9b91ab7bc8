//! Tuned 2-D pooling over NHWC activations — max, average and global average, forward and
//! backward — with the exact semantics of [`crate::reference::max_pool2d`],
//! [`crate::reference::avg_pool2d`] and [`crate::reference::global_avg_pool`] (window
//! geometry, padding rules, max-pool tie and NaN rules, divisors).
//!
//! NHWC makes every window tap a contiguous row of `c` channels, so the bodies loop over the
//! taps of one output pixel and combine whole channel rows (vectorised over channels):
//! * max forward: running maximum (`v > best || v is NaN`, so the first NaN wins as in the
//!   oracle); max backward: the same scan keeps the winning pixel per channel (the first
//!   maximum), then `dy` is added to it — threads split the images, since windows overlap;
//! * average forward: f32 sum of the taps times `1 / divisor`; average backward is a gather
//!   (each input pixel sums `dy / divisor` of the windows that cover it), so every `dx` row is
//!   written once and threads may split any pixels;
//! * global average: per-image column sums through batch norm's blocked f32-into-f64 body.

use crate::activation::{Isa, isa_call, threads_for};
use crate::batch_norm::bn_sum_core;
use crate::error::{Result, check_len};
use crate::parallel::par_chunks_mut;
pub use crate::reference::avg_pool2d::AvgPool2dParams;
pub use crate::reference::global_avg_pool::GlobalAvgPoolParams;
pub use crate::reference::max_pool2d::MaxPool2dParams;
use crate::reference::window::Window2d;

const MAX_K: &str = "max_pool2d";
const AVG_K: &str = "avg_pool2d";
const GAP_K: &str = "global_avg_pool";
/// Channels per register-resident group of the max pooling gradient.
const ARG_GROUP: usize = 16;

// ---------------------------------------------------------------------------------------
// Bodies.

/// Body: max pooling of the output pixels `first..` (flat `n*out_h*out_w` index) into `y`.
#[inline(always)]
pub(crate) fn max_pool_core(
    p: MaxPool2dParams,
    out_hw: (usize, usize),
    x: &[f32],
    first: usize,
    y: &mut [f32],
) {
    let (c, (out_h, out_w)) = (p.c, out_hw);
    if c == 0 || out_h == 0 || out_w == 0 {
        return;
    }
    let win = p.window();
    for (i, yr) in y.chunks_exact_mut(c).enumerate() {
        let px = first + i;
        let (n, oh, ow) = (px / (out_h * out_w), px / out_w % out_h, px % out_w);
        yr.fill(f32::NEG_INFINITY);
        for ki in win.h.taps(oh) {
            let Some(ih) = win.h.input_index(oh, ki) else {
                continue;
            };
            for kj in win.w.taps(ow) {
                let Some(iw) = win.w.input_index(ow, kj) else {
                    continue;
                };
                let o = ((n * p.h + ih) * p.w + iw) * c;
                let Some(xr) = x.get(o..o + c) else {
                    continue;
                };
                // NaN-propagating max, written so both select arms are computed values: a
                // select keeping `*b` would become a masked store (slow `vmaskmovps`).
                for (b, &v) in yr.iter_mut().zip(xr) {
                    // (`old + v` is a NaN whenever either is.)
                    let old = *b;
                    *b = if old.is_nan() | v.is_nan() {
                        old + v
                    } else {
                        old.max(v)
                    };
                }
            }
        }
    }
}

/// Body: max pooling gradient of one image: `dx` (zeroed here) receives each `dy` at its
/// window's winner (the first maximum in scan order; a NaN wins over any number).
#[inline(always)]
pub(crate) fn max_pool_grad_core(
    p: MaxPool2dParams,
    out_hw: (usize, usize),
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let (c, (out_h, out_w)) = (p.c, out_hw);
    if c == 0 || out_w == 0 {
        return;
    }
    dx.fill(0.0);
    let win = p.window();
    let pw = p.w;
    // The window's real cells, listed once per output pixel into this buffer: walking a
    // chain of iterator adapters per channel group cost more than the compares on small
    // channel counts (LeNet's 6).
    let mut cell_buf: Vec<usize> = Vec::with_capacity(p.kh.saturating_mul(p.kw));
    for (pix, gr) in dy.chunks_exact(c).enumerate().take(out_h * out_w) {
        let (oh, ow) = (pix / out_w, pix % out_w);
        // The window's real cells in scan order (row-major `ih * w + iw`).
        cell_buf.clear();
        for ki in win.h.taps(oh) {
            let Some(ih) = win.h.input_index(oh, ki) else {
                continue;
            };
            for kj in win.w.taps(ow) {
                if let Some(iw) = win.w.input_index(ow, kj) {
                    cell_buf.push(ih * pw + iw);
                }
            }
        }
        let cells = || cell_buf.iter().copied();
        // Whole groups of 16 channels keep the running best and winner in registers (on
        // scratch slices the compiler turns the keep-or-take updates into masked stores).
        let mut ch0 = 0;
        while ch0 + ARG_GROUP <= c {
            let mut lb = [f32::NEG_INFINITY; ARG_GROUP];
            let mut la = [0u32; ARG_GROUP];
            let mut first = true;
            for cell in cells() {
                let o = cell * c + ch0;
                let Some(xr) = x.get(o..o + ARG_GROUP) else {
                    continue;
                };
                // The dispatcher checked h * w fits in u32.
                let cell = cell as u32;
                if first {
                    // An all -inf window keeps its first cell.
                    la = [cell; ARG_GROUP];
                    first = false;
                }
                for ((b, a), &v) in lb.iter_mut().zip(la.iter_mut()).zip(xr) {
                    let take = !b.is_nan() & ((v > *b) | v.is_nan());
                    *b = if take { v } else { *b };
                    *a = if take { cell } else { *a };
                }
            }
            if !first {
                for (k, (&a, &g)) in la.iter().zip(&gr[ch0..]).enumerate() {
                    if let Some(d) = dx.get_mut(a as usize * c + ch0 + k) {
                        *d += g;
                    }
                }
            }
            ch0 += ARG_GROUP;
        }
        // The remaining channels, on the scratch rows.
        let rest = c - ch0;
        if rest == 0 {
            continue;
        }
        // Fewer than 16 channels left: the same 16-lane, register-resident update as a whole
        // group on a padded copy of each cell (the padding is -inf, never taken), so it
        // vectorises without masks or branches (a scalar loop over scratch slices here was
        // the slowest part of a LeNet training step: masked stores, then mispredictions).
        let mut lb = [f32::NEG_INFINITY; ARG_GROUP];
        let mut la = [0u32; ARG_GROUP];
        let mut first = true;
        for cell in cells() {
            let o = cell * c + ch0;
            let Some(xr) = x.get(o..o + rest) else {
                continue;
            };
            // A fixed 16-step loop, not `copy_from_slice` (a `memmove` call per cell).
            let mut xv = [f32::NEG_INFINITY; ARG_GROUP];
            for (k, v) in xv.iter_mut().enumerate() {
                if let Some(&a) = xr.get(k) {
                    *v = a;
                }
            }
            let cell = cell as u32;
            if first {
                la = [cell; ARG_GROUP];
                first = false;
            }
            for ((b, a), &v) in lb.iter_mut().zip(la.iter_mut()).zip(&xv) {
                let take = !b.is_nan() & ((v > *b) | v.is_nan());
                *b = if take { v } else { *b };
                *a = if take { cell } else { *a };
            }
        }
        let arg = &la[..rest];
        if first {
            continue;
        }
        for (k, (&a, &g)) in arg.iter().zip(&gr[ch0..]).enumerate() {
            if let Some(d) = dx.get_mut(a as usize * c + ch0 + k) {
                *d += g;
            }
        }
    }
}

/// The divisor of window `(oh, ow)`.
#[inline(always)]
fn avg_divisor(p: &AvgPool2dParams, win: &Window2d, oh: usize, ow: usize) -> f32 {
    if p.count_include_pad {
        (p.kh * p.kw) as f32
    } else {
        (win.h.taps(oh).len() * win.w.taps(ow).len()) as f32
    }
}

/// Body: average pooling of the output pixels `first..` into `y`.
#[inline(always)]
pub(crate) fn avg_pool_core(
    p: AvgPool2dParams,
    out_hw: (usize, usize),
    x: &[f32],
    first: usize,
    y: &mut [f32],
) {
    let (c, (out_h, out_w)) = (p.c, out_hw);
    if c == 0 || out_h == 0 || out_w == 0 {
        return;
    }
    let win = p.window();
    for (i, yr) in y.chunks_exact_mut(c).enumerate() {
        let px = first + i;
        let (n, oh, ow) = (px / (out_h * out_w), px / out_w % out_h, px % out_w);
        yr.fill(0.0);
        for ki in win.h.taps(oh) {
            let Some(ih) = win.h.input_index(oh, ki) else {
                continue;
            };
            for kj in win.w.taps(ow) {
                let Some(iw) = win.w.input_index(ow, kj) else {
                    continue;
                };
                let o = ((n * p.h + ih) * p.w + iw) * c;
                if let Some(xr) = x.get(o..o + c) {
                    yr.iter_mut().zip(xr).for_each(|(s, &v)| *s += v);
                }
            }
        }
        let inv = 1.0 / avg_divisor(&p, &win, oh, ow);
        yr.iter_mut().for_each(|s| *s *= inv);
    }
}

/// Body: average pooling gradient as a gather: input pixels `first..` (flat `n*h*w` index)
/// of `dx` sum `dy / divisor` over the windows that cover them.
#[inline(always)]
pub(crate) fn avg_pool_grad_core(
    p: AvgPool2dParams,
    out_hw: (usize, usize),
    dy: &[f32],
    first: usize,
    dx: &mut [f32],
) {
    let (c, (out_h, out_w)) = (p.c, out_hw);
    if c == 0 || p.h == 0 || p.w == 0 {
        return;
    }
    let win = p.window();
    for (i, dr) in dx.chunks_exact_mut(c).enumerate() {
        let px = first + i;
        let (n, ih, iw) = (px / (p.h * p.w), px / p.w % p.h, px % p.w);
        dr.fill(0.0);
        for ki in 0..p.kh {
            let Some(oh) = win.h.output_index(ih, ki) else {
                continue;
            };
            for kj in 0..p.kw {
                let Some(ow) = win.w.output_index(iw, kj) else {
                    continue;
                };
                let inv = 1.0 / avg_divisor(&p, &win, oh, ow);
                let o = ((n * out_h + oh) * out_w + ow) * c;
                if let Some(gr) = dy.get(o..o + c) {
                    dr.iter_mut().zip(gr).for_each(|(d, &g)| *d += g * inv);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Public API.

/// Max pooling `x` `[n, h, w, c]` -> `y` `[n, out_h, out_w, c]`, dispatched build, up to
/// `threads` threads.
pub fn max_pool2d(p: MaxPool2dParams, x: &[f32], y: &mut [f32], threads: usize) -> Result<()> {
    max_pool2d_with(Isa::current(), p, x, y, threads)
}

/// [`max_pool2d`] with an explicit build.
pub fn max_pool2d_with(
    isa: Isa,
    p: MaxPool2dParams,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::max_pool2d::max_pool2d(p, x, y);
    }
    check_len(MAX_K, "x", p.x_len()?, x.len())?;
    check_len(MAX_K, "y", p.y_len()?, y.len())?;
    let hw = (p.out_h()?, p.out_w()?);
    let work = p.y_len()?.saturating_mul(p.kh.saturating_mul(p.kw));
    par_chunks_mut(y, p.c, threads_for(work, threads), |first, yc| {
        isa_call!(isa, max_pool_core(p, hw, x, first, yc));
        Ok(())
    })
}

/// Max pooling gradient wrt `x` (overwrites `dx` `[n, h, w, c]`), dispatched build; threads
/// split the images.
pub fn max_pool2d_grad(
    p: MaxPool2dParams,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    max_pool2d_grad_with(Isa::current(), p, x, dy, dx, threads)
}

/// [`max_pool2d_grad`] with an explicit build.
pub fn max_pool2d_grad_with(
    isa: Isa,
    p: MaxPool2dParams,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    let pixels = p.h.saturating_mul(p.w);
    if isa == Isa::Reference || u32::try_from(pixels).is_err() {
        // Images beyond 2^32 pixels: the winners' u32 offsets would not fit.
        return crate::reference::max_pool2d::max_pool2d_grad(p, x, dy, dx);
    }
    check_len(MAX_K, "x", p.x_len()?, x.len())?;
    check_len(MAX_K, "dy", p.y_len()?, dy.len())?;
    check_len(MAX_K, "dx", p.x_len()?, dx.len())?;
    let (out_h, out_w) = (p.out_h()?, p.out_w()?);
    let (img_x, img_y) = (pixels * p.c, out_h * out_w * p.c);
    let work = p.y_len()?.saturating_mul(p.kh.saturating_mul(p.kw));
    par_chunks_mut(dx, img_x, threads_for(work, threads), |n0, dxc| {
        for (i, dxi) in dxc.chunks_exact_mut(img_x).enumerate() {
            let n = n0 + i;
            let xi = &x[n * img_x..(n + 1) * img_x];
            let gi = &dy[n * img_y..(n + 1) * img_y];
            isa_call!(isa, max_pool_grad_core(p, (out_h, out_w), xi, gi, dxi));
        }
        Ok(())
    })
}

/// Average pooling `x` `[n, h, w, c]` -> `y` `[n, out_h, out_w, c]`, dispatched build.
pub fn avg_pool2d(p: AvgPool2dParams, x: &[f32], y: &mut [f32], threads: usize) -> Result<()> {
    avg_pool2d_with(Isa::current(), p, x, y, threads)
}

/// [`avg_pool2d`] with an explicit build.
pub fn avg_pool2d_with(
    isa: Isa,
    p: AvgPool2dParams,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::avg_pool2d::avg_pool2d(p, x, y);
    }
    check_len(AVG_K, "x", p.x_len()?, x.len())?;
    check_len(AVG_K, "y", p.y_len()?, y.len())?;
    let hw = (p.out_h()?, p.out_w()?);
    let work = p.y_len()?.saturating_mul(p.kh.saturating_mul(p.kw));
    par_chunks_mut(y, p.c, threads_for(work, threads), |first, yc| {
        isa_call!(isa, avg_pool_core(p, hw, x, first, yc));
        Ok(())
    })
}

/// Average pooling gradient wrt `x` (overwrites `dx` `[n, h, w, c]`), dispatched build.
pub fn avg_pool2d_grad(
    p: AvgPool2dParams,
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    avg_pool2d_grad_with(Isa::current(), p, dy, dx, threads)
}

/// [`avg_pool2d_grad`] with an explicit build.
pub fn avg_pool2d_grad_with(
    isa: Isa,
    p: AvgPool2dParams,
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::avg_pool2d::avg_pool2d_grad(p, dy, dx);
    }
    check_len(AVG_K, "dy", p.y_len()?, dy.len())?;
    check_len(AVG_K, "dx", p.x_len()?, dx.len())?;
    let hw = (p.out_h()?, p.out_w()?);
    let work = p.x_len()?.saturating_mul(p.kh.saturating_mul(p.kw));
    par_chunks_mut(dx, p.c, threads_for(work, threads), |first, dc| {
        isa_call!(isa, avg_pool_grad_core(p, hw, dy, first, dc));
        Ok(())
    })
}

/// Global average pooling `[n, h, w, c]` -> `[n, c]`, dispatched build; threads split images.
pub fn global_avg_pool(
    p: GlobalAvgPoolParams,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    global_avg_pool_with(Isa::current(), p, x, y, threads)
}

/// [`global_avg_pool`] with an explicit build.
pub fn global_avg_pool_with(
    isa: Isa,
    p: GlobalAvgPoolParams,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::global_avg_pool::global_avg_pool(p, x, y);
    }
    check_len(GAP_K, "x", p.x_len()?, x.len())?;
    check_len(GAP_K, "y", p.y_len()?, y.len())?;
    let (c, hw) = (p.c, p.h * p.w);
    let l = c * 64usize.div_ceil(c);
    par_chunks_mut(y, c, threads_for(x.len(), threads), |n0, yc| {
        let mut acc = vec![0.0f64; l];
        for (i, yr) in yc.chunks_exact_mut(c).enumerate() {
            let n = n0 + i;
            acc.fill(0.0);
            let xi = &x[n * hw * c..(n + 1) * hw * c];
            isa_call!(isa, bn_sum_core(xi, &mut acc));
            yr.fill(0.0);
            let mut s = vec![0.0f64; c];
            for (j, v) in acc.iter().enumerate() {
                s[j % c] += v;
            }
            for (o, v) in yr.iter_mut().zip(&s) {
                *o = (v / hw as f64) as f32;
            }
        }
        Ok(())
    })
}

/// Global average pooling gradient: `dx[n, h, w, c] = dy[n, c] / (h * w)`, dispatched build.
pub fn global_avg_pool_grad(
    p: GlobalAvgPoolParams,
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    global_avg_pool_grad_with(Isa::current(), p, dy, dx, threads)
}

/// [`global_avg_pool_grad`] with an explicit build (a broadcast copy: the builds share it).
pub fn global_avg_pool_grad_with(
    isa: Isa,
    p: GlobalAvgPoolParams,
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::global_avg_pool::global_avg_pool_grad(p, dy, dx);
    }
    check_len(GAP_K, "dy", p.y_len()?, dy.len())?;
    check_len(GAP_K, "dx", p.x_len()?, dx.len())?;
    let (c, hw) = (p.c, p.h * p.w);
    let scaled: Vec<f32> = dy
        .iter()
        .map(|&g| (f64::from(g) / hw as f64) as f32)
        .collect();
    par_chunks_mut(dx, c, threads_for(dx.len(), threads), |first, dc| {
        for (i, dr) in dc.chunks_exact_mut(c).enumerate() {
            let n = (first + i) / hw;
            dr.copy_from_slice(&scaled[n * c..(n + 1) * c]);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::{assert_close_floor, f32v, f64v};
    use crate::reference::window::test_support::{draw_valid, random_geo};

    fn norm(v: &[f64]) -> f64 {
        v.iter().map(|a| a * a).sum::<f64>().sqrt()
    }
    use crate::testutil::{assert_close, rand_range, rng};

    const CHANNELS: [usize; 7] = [1, 3, 7, 13, 17, 33, 64];

    #[test]
    fn max_pool_every_isa_matches_reference() {
        let mut r = rng("pool2d::max_pool_every_isa_matches_reference");
        for case in 0..14 {
            let c = CHANNELS[case % CHANNELS.len()];
            let p = draw_valid(
                &mut r,
                |r| {
                    let g = random_geo(r, case % 8, 9, true);
                    MaxPool2dParams {
                        n: r.range(1, 3),
                        h: g.h,
                        w: g.w,
                        c,
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
            );
            let x = f32v(&rand_range(&mut r, p.x_len().unwrap(), -1.0, 1.0));
            let dy = f32v(&rand_range(&mut r, p.y_len().unwrap(), -1.0, 1.0));
            let (mut want_y, mut want_dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
            let (x64, dy64) = (f64v(&x), f64v(&dy));
            crate::reference::max_pool2d::max_pool2d(p, &x64, &mut want_y).unwrap();
            crate::reference::max_pool2d::max_pool2d_grad(p, &x64, &dy64, &mut want_dx).unwrap();
            for isa in Isa::all() {
                for threads in [1, 2] {
                    let what = format!("max_pool2d/{}/t={threads}/{p:?}", isa.name());
                    let (mut y, mut dx) = (vec![f32::NAN; dy.len()], vec![f32::NAN; x.len()]);
                    max_pool2d_with(isa, p, &x, &mut y, threads).unwrap();
                    max_pool2d_grad_with(isa, p, &x, &dy, &mut dx, threads).unwrap();
                    assert_close(&format!("{what} y"), &f64v(&y), &want_y, 1e-6);
                    // Overlapping windows sum several dy into one dx, which may cancel:
                    // judge against the size of the terms (||dy||).
                    assert_close_floor(
                        &format!("{what} dx"),
                        &f64v(&dx),
                        &want_dx,
                        norm(&dy64),
                        1e-6,
                    );
                }
            }
        }
    }

    #[test]
    fn max_pool_ties_and_nan_follow_the_reference() {
        // 2x3 image, 2x2 windows: ties (first wins) and a NaN, in two channels.
        let p = MaxPool2dParams {
            n: 1,
            h: 2,
            w: 3,
            c: 2,
            kh: 2,
            kw: 2,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: crate::reference::window::Padding2d::ZERO,
        };
        let x = [
            1.0,
            3.0,
            5.0,
            f32::NAN,
            5.0,
            0.0,
            5.0,
            3.0,
            5.0,
            1.0,
            0.0,
            f32::NAN,
        ];
        let dy = [1.0, 2.0, 10.0, 20.0];
        let x64 = f64v(&x);
        let mut want = vec![0.0; 12];
        crate::reference::max_pool2d::max_pool2d_grad(p, &x64, &f64v(&dy), &mut want).unwrap();
        for isa in Isa::all() {
            let mut dx = vec![7.0f32; 12];
            max_pool2d_grad_with(isa, p, &x, &dy, &mut dx, 1).unwrap();
            assert_eq!(f64v(&dx), want, "{}", isa.name());
            let mut y = vec![0.0f32; 4];
            max_pool2d_with(isa, p, &x, &mut y, 1).unwrap();
            assert!(y[1].is_nan() && y[3].is_nan() && y[0] == 5.0, "{y:?}");
        }
    }

    #[test]
    fn avg_pool_every_isa_matches_reference() {
        let mut r = rng("pool2d::avg_pool_every_isa_matches_reference");
        for case in 0..14 {
            let c = CHANNELS[case % CHANNELS.len()];
            let p = draw_valid(
                &mut r,
                |r| {
                    let g = random_geo(r, case % 8, 9, false);
                    AvgPool2dParams {
                        n: r.range(1, 3),
                        h: g.h,
                        w: g.w,
                        c,
                        kh: g.kh,
                        kw: g.kw,
                        stride_h: g.sh,
                        stride_w: g.sw,
                        padding: g.padding,
                        count_include_pad: case.is_multiple_of(2),
                    }
                },
                |p| p.validate().is_ok(),
            );
            let x = f32v(&rand_range(&mut r, p.x_len().unwrap(), -1.0, 1.0));
            let dy = f32v(&rand_range(&mut r, p.y_len().unwrap(), -1.0, 1.0));
            let (mut want_y, mut want_dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
            crate::reference::avg_pool2d::avg_pool2d(p, &f64v(&x), &mut want_y).unwrap();
            crate::reference::avg_pool2d::avg_pool2d_grad(p, &f64v(&dy), &mut want_dx).unwrap();
            for isa in Isa::all() {
                for threads in [1, 2] {
                    let what = format!("avg_pool2d/{}/t={threads}/{p:?}", isa.name());
                    let (mut y, mut dx) = (vec![f32::NAN; dy.len()], vec![f32::NAN; x.len()]);
                    avg_pool2d_with(isa, p, &x, &mut y, threads).unwrap();
                    avg_pool2d_grad_with(isa, p, &dy, &mut dx, threads).unwrap();
                    // Window means of values in [-1, 1] and sums of dy over overlapping
                    // windows may cancel: judge them against the size of their terms.
                    let y_floor = 0.5 * (want_y.len() as f64).sqrt();
                    assert_close_floor(&format!("{what} y"), &f64v(&y), &want_y, y_floor, 1e-5);
                    assert_close_floor(
                        &format!("{what} dx"),
                        &f64v(&dx),
                        &want_dx,
                        norm(&f64v(&dy)),
                        1e-5,
                    );
                }
            }
        }
    }

    #[test]
    fn global_avg_pool_every_isa_matches_reference() {
        let mut r = rng("pool2d::global_avg_pool_every_isa_matches_reference");
        for (i, &c) in CHANNELS.iter().enumerate() {
            let p = GlobalAvgPoolParams {
                n: 1 + i % 3,
                h: r.range(1, 30),
                w: r.range(1, 30),
                c,
            };
            let x = f32v(&rand_range(&mut r, p.x_len().unwrap(), 2.0, 4.0));
            let dy = f32v(&rand_range(&mut r, p.y_len().unwrap(), -1.0, 1.0));
            let (mut want_y, mut want_dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
            crate::reference::global_avg_pool::global_avg_pool(p, &f64v(&x), &mut want_y).unwrap();
            crate::reference::global_avg_pool::global_avg_pool_grad(p, &f64v(&dy), &mut want_dx)
                .unwrap();
            for isa in Isa::all() {
                for threads in [1, 2] {
                    let what = format!("global_avg_pool/{}/t={threads}/{p:?}", isa.name());
                    let (mut y, mut dx) = (vec![f32::NAN; dy.len()], vec![f32::NAN; x.len()]);
                    global_avg_pool_with(isa, p, &x, &mut y, threads).unwrap();
                    global_avg_pool_grad_with(isa, p, &dy, &mut dx, threads).unwrap();
                    assert_close(&format!("{what} y"), &f64v(&y), &want_y, 1e-6);
                    assert_close(&format!("{what} dx"), &f64v(&dx), &want_dx, 1e-6);
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mp = MaxPool2dParams {
            n: 1,
            h: 4,
            w: 4,
            c: 2,
            kh: 2,
            kw: 2,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            padding: crate::reference::window::Padding2d::ZERO,
        };
        let ap = AvgPool2dParams {
            n: 1,
            h: 4,
            w: 4,
            c: 2,
            kh: 2,
            kw: 2,
            stride_h: 2,
            stride_w: 2,
            padding: crate::reference::window::Padding2d::ZERO,
            count_include_pad: true,
        };
        let gp = GlobalAvgPoolParams {
            n: 1,
            h: 4,
            w: 4,
            c: 2,
        };
        let x = [0.5f32; 32];
        for isa in Isa::all() {
            let (mut y, mut dx) = ([0.0f32; 8], [0.0f32; 32]);
            assert!(max_pool2d_with(isa, mp, &x, &mut y, 2).is_ok());
            assert!(max_pool2d_with(isa, mp, &x[..31], &mut y, 2).is_err());
            assert!(
                max_pool2d_with(isa, MaxPool2dParams { stride_h: 0, ..mp }, &x, &mut y, 1).is_err()
            );
            assert!(max_pool2d_grad_with(isa, mp, &x, &y[..7], &mut dx, 1).is_err());
            assert!(avg_pool2d_with(isa, ap, &x, &mut y[..7], 1).is_err());
            assert!(avg_pool2d_grad_with(isa, ap, &y, &mut dx[..30], 1).is_err());
            assert!(global_avg_pool_with(isa, gp, &x, &mut y[..3], 1).is_err());
            assert!(global_avg_pool_grad_with(isa, gp, &y[..3], &mut dx, 1).is_err());
            assert!(
                global_avg_pool_with(isa, GlobalAvgPoolParams { h: 0, ..gp }, &x, &mut y[..2], 1)
                    .is_err()
            );
        }
    }
}
