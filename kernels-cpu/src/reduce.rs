//! Tuned sum / mean reductions over axes (keepdims output) and their gradients, with the
//! semantics of [`crate::reference::reduce`] (negative axes, duplicates refused, empty axis
//! list = copy).
//!
//! When the reduced axes form one contiguous run (axes of size 1 count as either), the input
//! is viewed as `[outer, mid, inner]` with `mid` reduced:
//! * `inner == 1` (trailing axes): row sums, 16 f32 lanes per 1024-element block, blocks
//!   added in f64; threads split the rows;
//! * `inner > 1` (leading or middle axes): column sums through batch norm's slab body (f32
//!   blocks into f64); threads split `outer`, or `mid` when there is one outer block.
//!
//! Other axis sets fall back to the reference's index walk. Gradients broadcast `dy` back.

use crate::activation::{Isa, isa_call, threads_for};
use crate::batch_norm::bn_sum_core;
use crate::error::{Result, check_len};
use crate::parallel::{par_chunks_mut, par_map};
use crate::reference::reduce as reference;

/// The `(outer, mid, inner)` view of a contiguous reduction, or `None` for other axis sets.
fn view(shape: &[usize], out: &[usize]) -> Option<(usize, usize, usize)> {
    let reduced: Vec<usize> = (0..shape.len()).filter(|&i| out[i] != shape[i]).collect();
    let (Some(&first), Some(&last)) = (reduced.first(), reduced.last()) else {
        // Nothing reduced: a copy, i.e. mid = 1.
        return Some((shape.iter().product(), 1, 1));
    };
    // Between the first and last reduced axis every axis must be reduced or of size 1.
    if (first..=last).any(|i| out[i] != 1) {
        return None;
    }
    Some((
        shape[..first].iter().product(),
        shape[first..=last].iter().product(),
        shape[last + 1..].iter().product(),
    ))
}

// ---------------------------------------------------------------------------------------
// Bodies.

/// Body: `y[r] = scale * sum(x[r * mid .. (r + 1) * mid])` for every row of `x`.
#[inline(always)]
pub(crate) fn row_sums_core(mid: usize, x: &[f32], scale: f64, y: &mut [f32]) {
    if mid == 0 {
        return;
    }
    for (row, out) in x.chunks_exact(mid).zip(y.iter_mut()) {
        let mut total = 0.0f64;
        for block in row.chunks(1024) {
            let mut acc = [0.0f32; 16];
            let mut it = block.chunks_exact(16);
            for ch in &mut it {
                for (a, &v) in acc.iter_mut().zip(ch) {
                    *a += v;
                }
            }
            let tail: f32 = it.remainder().iter().sum();
            total += f64::from(acc.iter().sum::<f32>() + tail);
        }
        *out = (total * scale) as f32;
    }
}

// ---------------------------------------------------------------------------------------
// Drivers.

/// Sum (or mean) over `axes` into the keepdims `y`.
#[allow(clippy::too_many_arguments)]
fn reduce(
    isa: Isa,
    kernel: &'static str,
    x: &[f32],
    shape: &[usize],
    axes: &[i64],
    y: &mut [f32],
    mean: bool,
    threads: usize,
) -> Result<()> {
    let out = reference::reduced_shape(shape, axes)?;
    let n_in: usize = shape.iter().product();
    let n_out: usize = out.iter().product();
    check_len(kernel, "x", n_in, x.len())?;
    check_len(kernel, "y", n_out, y.len())?;
    let fallback = |y: &mut [f32]| {
        if mean {
            reference::reduce_mean(x, shape, axes, y)
        } else {
            reference::reduce_sum(x, shape, axes, y)
        }
    };
    let Some((outer, mid, inner)) = view(shape, &out).filter(|_| isa != Isa::Reference) else {
        return fallback(y);
    };
    let scale = if mean { 1.0 / mid as f64 } else { 1.0 };
    let t = threads_for(n_in, threads);
    if inner == 1 {
        return par_chunks_mut(y, 1, t, |r0, yc| {
            let xc = &x[r0 * mid..(r0 + yc.len()) * mid];
            isa_call!(isa, row_sums_core(mid, xc, scale, yc));
            Ok(())
        });
    }
    let l = inner * 64usize.div_ceil(inner);
    let fold = |acc: &[f64], yr: &mut [f32]| {
        let mut s = vec![0.0f64; inner];
        for (j, v) in acc.iter().enumerate() {
            s[j % inner] += v;
        }
        for (o, v) in yr.iter_mut().zip(&s) {
            *o = (v * scale) as f32;
        }
    };
    if outer >= t {
        par_chunks_mut(y, inner, t, |o0, yc| {
            let mut acc = vec![0.0f64; l];
            for (i, yr) in yc.chunks_exact_mut(inner).enumerate() {
                let o = o0 + i;
                acc.fill(0.0);
                let xo = &x[o * mid * inner..(o + 1) * mid * inner];
                isa_call!(isa, bn_sum_core(xo, &mut acc));
                fold(&acc, yr);
            }
            Ok(())
        })
    } else {
        // Few outer blocks: split each block's mid rows over the threads instead.
        let per = mid.div_ceil(t);
        for (o, yr) in y.chunks_exact_mut(inner).enumerate() {
            let parts = par_map(t, mid.div_ceil(per), |k| {
                let r = (o * mid + k * per) * inner..(o * mid + ((k + 1) * per).min(mid)) * inner;
                let mut acc = vec![0.0f64; l];
                isa_call!(isa, bn_sum_core(&x[r], &mut acc));
                acc
            })?;
            let mut acc = vec![0.0f64; l];
            for p in parts {
                acc.iter_mut().zip(&p).for_each(|(a, v)| *a += v);
            }
            fold(&acc, yr);
        }
        Ok(())
    }
}

/// Broadcasts `dy` (keepdims) back over `shape`, times `1 / count` for a mean.
#[allow(clippy::too_many_arguments)]
fn reduce_grad(
    isa: Isa,
    kernel: &'static str,
    shape: &[usize],
    axes: &[i64],
    dy: &[f32],
    dx: &mut [f32],
    mean: bool,
    threads: usize,
) -> Result<()> {
    let out = reference::reduced_shape(shape, axes)?;
    let n_in: usize = shape.iter().product();
    let n_out: usize = out.iter().product();
    check_len(kernel, "dy", n_out, dy.len())?;
    check_len(kernel, "dx", n_in, dx.len())?;
    let Some((_, mid, inner)) = view(shape, &out).filter(|_| isa != Isa::Reference) else {
        return if mean {
            reference::reduce_mean_grad(shape, axes, dy, dx)
        } else {
            reference::reduce_sum_grad(shape, axes, dy, dx)
        };
    };
    let scale = if mean { 1.0 / mid as f64 } else { 1.0 };
    let scaled: Vec<f32> = dy.iter().map(|&g| (f64::from(g) * scale) as f32).collect();
    let t = threads_for(n_in, threads);
    if inner == 1 {
        par_chunks_mut(dx, mid, t, |o0, dc| {
            for (i, row) in dc.chunks_exact_mut(mid).enumerate() {
                row.fill(scaled[o0 + i]);
            }
            Ok(())
        })
    } else {
        par_chunks_mut(dx, inner, t, |r0, dc| {
            for (i, row) in dc.chunks_exact_mut(inner).enumerate() {
                let o = (r0 + i) / mid;
                row.copy_from_slice(&scaled[o * inner..(o + 1) * inner]);
            }
            Ok(())
        })
    }
}

/// `y = sum of x over axes` (keepdims), dispatched build, up to `threads` threads.
pub fn reduce_sum(
    x: &[f32],
    shape: &[usize],
    axes: &[i64],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce(
        Isa::current(),
        "reduce_sum",
        x,
        shape,
        axes,
        y,
        false,
        threads,
    )
}

/// [`reduce_sum`] with an explicit build.
pub fn reduce_sum_with(
    isa: Isa,
    x: &[f32],
    shape: &[usize],
    axes: &[i64],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce(isa, "reduce_sum", x, shape, axes, y, false, threads)
}

/// `y = mean of x over axes` (keepdims), dispatched build.
pub fn reduce_mean(
    x: &[f32],
    shape: &[usize],
    axes: &[i64],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce(
        Isa::current(),
        "reduce_mean",
        x,
        shape,
        axes,
        y,
        true,
        threads,
    )
}

/// [`reduce_mean`] with an explicit build.
pub fn reduce_mean_with(
    isa: Isa,
    x: &[f32],
    shape: &[usize],
    axes: &[i64],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce(isa, "reduce_mean", x, shape, axes, y, true, threads)
}

/// Gradient of [`reduce_sum`]: `dx[i] = dy[reduced index of i]`, dispatched build.
pub fn reduce_sum_grad(
    shape: &[usize],
    axes: &[i64],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce_grad(
        Isa::current(),
        "reduce_sum_grad",
        shape,
        axes,
        dy,
        dx,
        false,
        threads,
    )
}

/// [`reduce_sum_grad`] with an explicit build.
pub fn reduce_sum_grad_with(
    isa: Isa,
    shape: &[usize],
    axes: &[i64],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce_grad(isa, "reduce_sum_grad", shape, axes, dy, dx, false, threads)
}

/// Gradient of [`reduce_mean`]: `dx[i] = dy[reduced index of i] / count`, dispatched build.
pub fn reduce_mean_grad(
    shape: &[usize],
    axes: &[i64],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce_grad(
        Isa::current(),
        "reduce_mean_grad",
        shape,
        axes,
        dy,
        dx,
        true,
        threads,
    )
}

/// [`reduce_mean_grad`] with an explicit build.
pub fn reduce_mean_grad_with(
    isa: Isa,
    shape: &[usize],
    axes: &[i64],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    reduce_grad(isa, "reduce_mean_grad", shape, axes, dy, dx, true, threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::{f32v, f64v};
    use crate::testutil::{assert_close, rand_range, rng};

    #[test]
    fn every_isa_matches_reference() {
        let mut r = rng("reduce::every_isa_matches_reference");
        let cases: Vec<(Vec<usize>, Vec<i64>)> = vec![
            (vec![7, 13], vec![-1]),
            (vec![7, 13], vec![0]),
            (vec![3, 5, 17], vec![1]),
            (vec![3, 5, 17], vec![1, 2]),
            (vec![3, 5, 17], vec![0, 1]),
            (vec![3, 5, 17], vec![0, 2]),
            (vec![2, 1, 33], vec![0, 1]),
            (vec![4, 9], vec![]),
            (vec![1000, 70], vec![0]),
            (vec![70, 1001], vec![1]),
            (vec![1, 100_003], vec![1]),
            (vec![100_003, 3], vec![0]),
        ];
        for isa in Isa::all() {
            println!("reduce: isa {}", isa.name());
            for (shape, axes) in &cases {
                for mean in [false, true] {
                    for threads in [1, 2] {
                        let what =
                            format!("{}/{shape:?}/{axes:?}/mean={mean}/t={threads}", isa.name());
                        let n: usize = shape.iter().product();
                        let m: usize = reference::reduced_shape(shape, axes)
                            .unwrap()
                            .iter()
                            .product();
                        let x = f32v(&rand_range(&mut r, n, 0.5, 1.5));
                        let dy = f32v(&rand_range(&mut r, m, -1.0, 1.0));
                        let (mut want, mut want_dx) = (vec![0.0; m], vec![0.0; n]);
                        let (x64, dy64) = (f64v(&x), f64v(&dy));
                        let (mut y, mut dx) = (vec![f32::NAN; m], vec![f32::NAN; n]);
                        if mean {
                            reference::reduce_mean(&x64, shape, axes, &mut want).unwrap();
                            reference::reduce_mean_grad(shape, axes, &dy64, &mut want_dx).unwrap();
                            reduce_mean_with(isa, &x, shape, axes, &mut y, threads).unwrap();
                            reduce_mean_grad_with(isa, shape, axes, &dy, &mut dx, threads).unwrap();
                        } else {
                            reference::reduce_sum(&x64, shape, axes, &mut want).unwrap();
                            reference::reduce_sum_grad(shape, axes, &dy64, &mut want_dx).unwrap();
                            reduce_sum_with(isa, &x, shape, axes, &mut y, threads).unwrap();
                            reduce_sum_grad_with(isa, shape, axes, &dy, &mut dx, threads).unwrap();
                        }
                        assert_close(&format!("{what} y"), &f64v(&y), &want, 1e-6);
                        assert_close(&format!("{what} dx"), &f64v(&dx), &want_dx, 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f32; 6];
        for isa in Isa::all() {
            let mut y = [0.0f32; 3];
            assert!(reduce_sum_with(isa, &x, &[2, 3], &[0], &mut y, 1).is_ok());
            assert!(reduce_sum_with(isa, &x, &[2, 3], &[2], &mut y, 1).is_err());
            assert!(reduce_sum_with(isa, &x, &[2, 3], &[0, -2], &mut y, 1).is_err());
            assert!(reduce_mean_with(isa, &x, &[2, 3], &[1], &mut y, 1).is_err());
            assert!(reduce_mean_with(isa, &x[..5], &[2, 3], &[0], &mut y, 1).is_err());
            assert!(reduce_sum_with(isa, &x, &[2, 0, 3], &[0], &mut y, 1).is_err());
            let mut dx = [0.0f32; 6];
            assert!(reduce_sum_grad_with(isa, &[2, 3], &[0], &y[..2], &mut dx, 1).is_err());
            assert!(reduce_mean_grad_with(isa, &[2, 3], &[0], &y, &mut dx[..5], 1).is_err());
        }
    }
}
