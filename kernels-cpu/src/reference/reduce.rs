//! Sum and mean reductions over a set of axes, with keepdims semantics (reduced axes stay as
//! size 1, so the output broadcasts against the input; the caller may reshape), and their
//! gradients, which broadcast the upstream gradient back.
//!
//! Axes are `i64` so that `-1` means the last axis, as in NumPy. Duplicate or out-of-range
//! axes are errors. An empty axis list reduces nothing (the output is a copy), as NumPy's
//! `axis=()` does.

use super::Real;
use crate::error::{KernelError, check_len, check_param, checked_product};

/// Resolves `axes` against a rank-`rank` shape: negative axes count from the end.
/// Returns one flag per axis, `true` where it is reduced.
fn reduced_axes(kernel: &'static str, rank: usize, axes: &[i64]) -> crate::Result<Vec<bool>> {
    let mut reduced = vec![false; rank];
    for &ax in axes {
        let r = i64::try_from(rank).unwrap_or(i64::MAX);
        let resolved = if ax < 0 { ax.checked_add(r) } else { Some(ax) };
        let idx = match resolved {
            Some(v) if (0..r).contains(&v) => v as usize,
            _ => {
                return Err(KernelError::Param {
                    kernel,
                    param: "axes",
                    reason: format!("axis {ax} is out of range for rank {rank}"),
                });
            }
        };
        check_param(kernel, "axes", !reduced[idx], || {
            format!("axis {ax} is repeated in {axes:?}")
        })?;
        reduced[idx] = true;
    }
    Ok(reduced)
}

/// Checks `shape` (no zero dimension, no overflow) and `axes`; returns the reduced-axis flags,
/// the input element count and the output element count.
fn check(
    kernel: &'static str,
    shape: &[usize],
    axes: &[i64],
) -> crate::Result<(Vec<bool>, usize, usize)> {
    check_param(kernel, "shape", !shape.contains(&0), || {
        format!("zero dimension in {shape:?}")
    })?;
    let reduced = reduced_axes(kernel, shape.len(), axes)?;
    let n_in = checked_product(kernel, shape)?;
    let out: Vec<usize> = shape
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let n_out = checked_product(kernel, &out)?;
    Ok((reduced, n_in, n_out))
}

/// The output shape of a reduction: `shape` with every reduced axis set to 1 (keepdims).
/// Errors on a zero dimension and on a repeated or out-of-range axis.
pub fn reduced_shape(shape: &[usize], axes: &[i64]) -> crate::Result<Vec<usize>> {
    let (reduced, _, _) = check("reduced_shape", shape, axes)?;
    Ok(shape
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect())
}

/// Calls `f(in_index, out_index)` for every input element in row-major order, where
/// `out_index` is the keepdims output element it reduces into.
fn for_each(shape: &[usize], reduced: &[bool], mut f: impl FnMut(usize, usize)) {
    // Output strides with 0 on reduced axes: every position along them maps to index 0.
    let mut strides = vec![0usize; shape.len()];
    let mut stride = 1;
    for ax in (0..shape.len()).rev() {
        if !reduced[ax] {
            strides[ax] = stride;
            stride *= shape[ax];
        }
    }
    let total: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for i in 0..total {
        let o: usize = idx.iter().zip(&strides).map(|(a, s)| a * s).sum();
        f(i, o);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// Sums (or, with `mean`, averages) `x` of shape `shape` over `axes` into the keepdims `y`.
fn reduce<T: Real>(
    kernel: &'static str,
    x: &[T],
    shape: &[usize],
    axes: &[i64],
    y: &mut [T],
    mean: bool,
) -> crate::Result<()> {
    let (reduced, n_in, n_out) = check(kernel, shape, axes)?;
    check_len(kernel, "x", n_in, x.len())?;
    check_len(kernel, "y", n_out, y.len())?;
    let mut acc = vec![0.0f64; n_out];
    for_each(shape, &reduced, |i, o| acc[o] += x[i].to_f64());
    let count = (n_in / n_out) as f64;
    for (dst, s) in y.iter_mut().zip(&acc) {
        *dst = T::from_f64(if mean { s / count } else { *s });
    }
    Ok(())
}

/// Broadcasts `dy` (keepdims shape) back over `shape`, divided by the reduced count if `mean`.
fn reduce_grad<T: Real>(
    kernel: &'static str,
    shape: &[usize],
    axes: &[i64],
    dy: &[T],
    dx: &mut [T],
    mean: bool,
) -> crate::Result<()> {
    let (reduced, n_in, n_out) = check(kernel, shape, axes)?;
    check_len(kernel, "dy", n_out, dy.len())?;
    check_len(kernel, "dx", n_in, dx.len())?;
    let scale = if mean {
        1.0 / (n_in / n_out) as f64
    } else {
        1.0
    };
    for_each(shape, &reduced, |i, o| {
        dx[i] = T::from_f64(dy[o].to_f64() * scale)
    });
    Ok(())
}

/// `y = sum of x over axes` (keepdims: `y` has [`reduced_shape`]`(shape, axes)`).
pub fn reduce_sum<T: Real>(
    x: &[T],
    shape: &[usize],
    axes: &[i64],
    y: &mut [T],
) -> crate::Result<()> {
    reduce("reduce_sum", x, shape, axes, y, false)
}

/// `y = mean of x over axes` (keepdims: `y` has [`reduced_shape`]`(shape, axes)`).
pub fn reduce_mean<T: Real>(
    x: &[T],
    shape: &[usize],
    axes: &[i64],
    y: &mut [T],
) -> crate::Result<()> {
    reduce("reduce_mean", x, shape, axes, y, true)
}

/// Gradient of [`reduce_sum`]: `dx[i] = dy[reduced index of i]`. Overwrites `dx`.
pub fn reduce_sum_grad<T: Real>(
    shape: &[usize],
    axes: &[i64],
    dy: &[T],
    dx: &mut [T],
) -> crate::Result<()> {
    reduce_grad("reduce_sum_grad", shape, axes, dy, dx, false)
}

/// Gradient of [`reduce_mean`]: `dx[i] = dy[reduced index of i] / count`, with `count` the
/// number of elements reduced into each output. Overwrites `dx`.
pub fn reduce_mean_grad<T: Real>(
    shape: &[usize],
    axes: &[i64],
    dy: &[T],
    dx: &mut [T],
) -> crate::Result<()> {
    reduce_grad("reduce_mean_grad", shape, axes, dy, dx, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn run(mean: bool, x: &[f64], shape: &[usize], axes: &[i64]) -> Vec<f64> {
        let n: usize = reduced_shape(shape, axes).unwrap().iter().product();
        let mut y = vec![0.0; n];
        if mean {
            reduce_mean(x, shape, axes, &mut y).unwrap();
        } else {
            reduce_sum(x, shape, axes, &mut y).unwrap();
        }
        y
    }

    #[test]
    fn shapes() {
        assert_eq!(reduced_shape(&[2, 3, 4], &[1]).unwrap(), vec![2, 1, 4]);
        assert_eq!(reduced_shape(&[2, 3, 4], &[-1, 0]).unwrap(), vec![1, 3, 1]);
        assert_eq!(reduced_shape(&[2, 3, 4], &[]).unwrap(), vec![2, 3, 4]);
        assert_eq!(reduced_shape(&[], &[]).unwrap(), Vec::<usize>::new());
        assert!(reduced_shape(&[2, 3], &[2]).is_err());
        assert!(reduced_shape(&[2, 3], &[-3]).is_err());
        assert!(reduced_shape(&[2, 3], &[1, -1]).is_err());
        assert!(reduced_shape(&[2, 3], &[i64::MIN]).is_err());
        assert!(reduced_shape(&[2, 3], &[i64::MAX]).is_err());
        assert!(reduced_shape(&[2, 0], &[0]).is_err());
        assert!(reduced_shape(&[], &[0]).is_err());
    }

    #[test]
    fn hand_computed() {
        // [[1, 2, 3], [4, 5, 6]]
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(run(false, &x, &[2, 3], &[0]), vec![5.0, 7.0, 9.0]);
        assert_eq!(run(false, &x, &[2, 3], &[-1]), vec![6.0, 15.0]);
        assert_eq!(run(false, &x, &[2, 3], &[0, 1]), vec![21.0]);
        assert_eq!(run(true, &x, &[2, 3], &[1]), vec![2.0, 5.0]);
        assert_eq!(run(true, &x, &[2, 3], &[0, -1]), vec![3.5]);
        assert_eq!(run(true, &x, &[2, 3], &[]), x.to_vec());
        // [2, 2, 2] over the middle axis.
        let z = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(run(false, &z, &[2, 2, 2], &[1]), vec![4.0, 6.0, 12.0, 14.0]);
    }

    #[test]
    fn grads_match_finite_differences() {
        let mut r = rng("reduce::grads_match_finite_differences");
        let fixed: [(&[usize], &[i64]); 8] = [
            (&[2, 3, 4], &[1]),
            (&[2, 3, 4], &[-1, 0]),
            (&[2, 3, 4], &[0, 1, 2]),
            (&[5], &[0]),
            (&[3, 1, 2], &[-2]),
            (&[4, 3], &[]),
            (&[2, 3, 2, 3], &[-3, 3]),
            (&[], &[]),
        ];
        let mut cases: Vec<(Vec<usize>, Vec<i64>)> = fixed
            .iter()
            .map(|(s, a)| (s.to_vec(), a.to_vec()))
            .collect();
        for _ in 0..6 {
            let rank = r.range(1, 4);
            let shape: Vec<usize> = (0..rank).map(|_| r.range(1, 4)).collect();
            let mut axes = Vec::new();
            for a in 0..rank as i64 {
                if r.range(0, 1) == 1 {
                    // Half the chosen axes are spelled negatively.
                    axes.push(if r.range(0, 1) == 1 {
                        a - rank as i64
                    } else {
                        a
                    });
                }
            }
            cases.push((shape, axes));
        }
        for (shape, axes) in &cases {
            let n: usize = shape.iter().product();
            let m: usize = reduced_shape(shape, axes).unwrap().iter().product();
            let x = rand_vec(&mut r, n);
            let dy = rand_vec(&mut r, m);
            let mut dx = vec![f64::NAN; n];
            reduce_sum_grad(shape, axes, &dy, &mut dx).unwrap();
            check_grad(
                &format!("sum {shape:?} {axes:?}"),
                &|v| run(false, v, shape, axes),
                &x,
                &dy,
                &dx,
            );
            reduce_mean_grad(shape, axes, &dy, &mut dx).unwrap();
            check_grad(
                &format!("mean {shape:?} {axes:?}"),
                &|v| run(true, v, shape, axes),
                &x,
                &dy,
                &dx,
            );
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("reduce::f32_agrees_with_f64");
        let shape = [3usize, 5, 4];
        let x32: Vec<f32> = rand_vec(&mut r, 60).iter().map(|&v| v as f32).collect();
        let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
        let mut y32 = vec![0.0f32; 12];
        reduce_mean(&x32, &shape, &[1], &mut y32).unwrap();
        let y: Vec<f64> = y32.iter().map(|&v| f64::from(v)).collect();
        assert_close("mean f32", &y, &run(true, &x64, &shape, &[1]), 1e-6);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f64; 6];
        let mut y = [0.0f64; 3];
        assert!(reduce_sum(&x, &[2, 3], &[0], &mut y).is_ok());
        assert!(reduce_sum(&x, &[2, 3], &[1], &mut y).is_err());
        assert!(reduce_sum(&x[..5], &[2, 3], &[0], &mut y).is_err());
        assert!(reduce_mean(&x, &[2, 3], &[0, 0], &mut y).is_err());
        assert!(reduce_mean(&x, &[2, 3], &[5], &mut y).is_err());
        let mut dx = [0.0f64; 6];
        assert!(reduce_sum_grad(&[2, 3], &[0], &y[..2], &mut dx).is_err());
        assert!(reduce_mean_grad(&[2, 3], &[0], &y, &mut dx[..5]).is_err());
        assert!(reduce_mean_grad(&[2, 3], &[-3], &y, &mut dx).is_err());
    }
}
