//! Elementwise binary ops (`+ - * / max min`) with NumPy broadcasting, and their gradients
//! reduced back to each input's shape.
//!
//! Broadcasting is NumPy's: shapes are right-aligned, missing leading dimensions count as 1,
//! and a dimension of 1 stretches to match the other. Zero-sized dimensions are refused.

use super::Real;
use crate::error::{KernelError, check_len, check_param, checked_product};

/// An elementwise binary operation `y = a op b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `max(a, b)`: `a` when `a >= b`, else `b`. On a tie the gradient goes to `a`.
    Max,
    /// `min(a, b)`: `a` when `a <= b`, else `b`. On a tie the gradient goes to `a`.
    Min,
}

impl BinaryOp {
    /// `a op b` for one pair of values.
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Self::Add => a + b,
            Self::Sub => a - b,
            Self::Mul => a * b,
            Self::Div => a / b,
            Self::Max => {
                if a >= b {
                    a
                } else {
                    b
                }
            }
            Self::Min => {
                if a <= b {
                    a
                } else {
                    b
                }
            }
        }
    }

    /// The partial derivatives `(d(a op b)/da, d(a op b)/db)`; ties of `Max`/`Min` go to `a`.
    pub fn partials(self, a: f64, b: f64) -> (f64, f64) {
        match self {
            Self::Add => (1.0, 1.0),
            Self::Sub => (1.0, -1.0),
            Self::Mul => (b, a),
            Self::Div => (1.0 / b, -a / (b * b)),
            Self::Max => {
                if a >= b {
                    (1.0, 0.0)
                } else {
                    (0.0, 1.0)
                }
            }
            Self::Min => {
                if a <= b {
                    (1.0, 0.0)
                } else {
                    (0.0, 1.0)
                }
            }
        }
    }
}

/// The NumPy broadcast of two shapes, e.g. `[3, 1, 4]` with `[2, 1]` gives `[3, 2, 4]`.
/// Errors on a zero dimension or on two dimensions that differ and are both not 1.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> crate::Result<Vec<usize>> {
    const K: &str = "broadcast_shape";
    check_param(K, "a_shape", !a.contains(&0), || {
        format!("zero dimension in {a:?}")
    })?;
    check_param(K, "b_shape", !b.contains(&0), || {
        format!("zero dimension in {b:?}")
    })?;
    let rank = a.len().max(b.len());
    // Right-aligned dimension `i` of `s` (1 where `s` has no such dimension).
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let (da, db) = (dim(a, i), dim(b, i));
        if da != db && da != 1 && db != 1 {
            return Err(KernelError::Param {
                kernel: K,
                param: "shape",
                reason: format!("{a:?} and {b:?} do not broadcast (axis {i}: {da} vs {db})"),
            });
        }
        out.push(da.max(db));
    }
    checked_product(K, &out)?;
    Ok(out)
}

/// Row-major strides of `shape` aligned to the broadcast shape `out` (rank `out.len()`), with
/// stride 0 on broadcast dimensions, so `sum(index[i] * stride[i])` is the source element.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let offset = out.len() - shape.len();
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            strides[offset + i] = stride;
        }
        stride *= shape[i];
    }
    strides
}

/// Calls `f(out_index, a_index, b_index)` for every element of the broadcast shape, in
/// row-major order.
fn for_each_broadcast(
    a_shape: &[usize],
    b_shape: &[usize],
    out: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let sa = broadcast_strides(a_shape, out);
    let sb = broadcast_strides(b_shape, out);
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; out.len()];
    for o in 0..total {
        let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
        let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
        f(o, ia, ib);
        // Odometer increment of the multi-index, last axis fastest.
        for ax in (0..out.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < out[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// Validates shapes against slice lengths and returns the broadcast shape and its element count.
fn check_operands<T>(
    kernel: &'static str,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
) -> crate::Result<(Vec<usize>, usize)> {
    let out = broadcast_shape(a_shape, b_shape).map_err(|e| match e {
        KernelError::Param { param, reason, .. } => KernelError::Param {
            kernel,
            param,
            reason,
        },
        other => other,
    })?;
    check_len(kernel, "a", checked_product(kernel, a_shape)?, a.len())?;
    check_len(kernel, "b", checked_product(kernel, b_shape)?, b.len())?;
    let n = checked_product(kernel, &out)?;
    Ok((out, n))
}

/// `y = a op b` with broadcasting; `y` has the broadcast shape ([`broadcast_shape`]).
/// An empty shape `[]` is a scalar (one element).
pub fn binary<T: Real>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    y: &mut [T],
) -> crate::Result<()> {
    const K: &str = "binary";
    let (out, n) = check_operands(K, a, a_shape, b, b_shape)?;
    check_len(K, "y", n, y.len())?;
    for_each_broadcast(a_shape, b_shape, &out, |o, ia, ib| {
        y[o] = T::from_f64(op.apply(a[ia].to_f64(), b[ib].to_f64()));
    });
    Ok(())
}

/// Gradient of [`binary`]: `da` (shape `a_shape`) and `db` (shape `b_shape`) receive
/// `dy * partial`, summed over the axes along which that input was broadcast. For `Max`/`Min`
/// the whole gradient goes to the selected input, to `a` on ties. Overwrites `da` and `db`.
#[allow(clippy::too_many_arguments)] // one argument per tensor and shape of the op
pub fn binary_grad<T: Real>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    dy: &[T],
    da: &mut [T],
    db: &mut [T],
) -> crate::Result<()> {
    const K: &str = "binary_grad";
    let (out, n) = check_operands(K, a, a_shape, b, b_shape)?;
    check_len(K, "dy", n, dy.len())?;
    check_len(K, "da", a.len(), da.len())?;
    check_len(K, "db", b.len(), db.len())?;
    let mut ga = vec![0.0f64; a.len()];
    let mut gb = vec![0.0f64; b.len()];
    for_each_broadcast(a_shape, b_shape, &out, |o, ia, ib| {
        let (pa, pb) = op.partials(a[ia].to_f64(), b[ib].to_f64());
        let d = dy[o].to_f64();
        ga[ia] += d * pa;
        gb[ib] += d * pb;
    });
    for (dst, g) in da.iter_mut().zip(&ga) {
        *dst = T::from_f64(*g);
    }
    for (dst, g) in db.iter_mut().zip(&gb) {
        *dst = T::from_f64(*g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_range, rand_vec, rng};

    const OPS: [BinaryOp; 6] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];

    fn run(op: BinaryOp, a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> Vec<f64> {
        let n: usize = broadcast_shape(sa, sb).unwrap().iter().product();
        let mut y = vec![0.0; n];
        binary(op, a, sa, b, sb, &mut y).unwrap();
        y
    }

    #[test]
    fn broadcast_shapes() {
        assert_eq!(broadcast_shape(&[3, 1, 4], &[2, 1]).unwrap(), vec![3, 2, 4]);
        assert_eq!(broadcast_shape(&[], &[2, 3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shape(&[1], &[]).unwrap(), vec![1]);
        assert_eq!(broadcast_shape(&[5, 1], &[1, 6]).unwrap(), vec![5, 6]);
        assert_eq!(broadcast_shape(&[2, 3], &[2, 3]).unwrap(), vec![2, 3]);
        assert!(broadcast_shape(&[2, 3], &[3, 2]).is_err());
        assert!(broadcast_shape(&[4], &[3]).is_err());
        assert!(broadcast_shape(&[0], &[1]).is_err());
        assert!(broadcast_shape(&[usize::MAX], &[2, 1]).is_err());
    }

    #[test]
    fn hand_computed() {
        // [2, 3] + [3] adds the row to each row; [2, 1] * [3] is an outer product.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = run(BinaryOp::Add, &a, &[2, 3], &[10.0, 20.0, 30.0], &[3]);
        assert_eq!(y, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let y = run(
            BinaryOp::Mul,
            &[2.0, 3.0],
            &[2, 1],
            &[1.0, 10.0, 100.0],
            &[3],
        );
        assert_eq!(y, vec![2.0, 20.0, 200.0, 3.0, 30.0, 300.0]);
        let y = run(BinaryOp::Sub, &[5.0], &[], &[1.0, 2.0], &[2]);
        assert_eq!(y, vec![4.0, 3.0]);
        let y = run(BinaryOp::Div, &[1.0, 2.0], &[2], &[4.0], &[1]);
        assert_eq!(y, vec![0.25, 0.5]);
        let y = run(
            BinaryOp::Max,
            &[1.0, 5.0, -2.0],
            &[3],
            &[2.0, 2.0, 2.0],
            &[3],
        );
        assert_eq!(y, vec![2.0, 5.0, 2.0]);
        let y = run(BinaryOp::Min, &[1.0, 5.0, -2.0], &[3], &[2.0], &[]);
        assert_eq!(y, vec![1.0, 2.0, -2.0]);
    }

    #[test]
    fn max_min_ties_go_to_a() {
        let (a, b, dy) = ([1.0f64, 2.0], [1.0f64, 3.0], [1.0f64, 1.0]);
        for op in [BinaryOp::Max, BinaryOp::Min] {
            let (mut da, mut db) = ([0.0; 2], [0.0; 2]);
            binary_grad(op, &a, &[2], &b, &[2], &dy, &mut da, &mut db).unwrap();
            assert_eq!(da[0], 1.0, "{op:?}");
            assert_eq!(db[0], 0.0, "{op:?}");
            assert_eq!(da[1] + db[1], 1.0, "{op:?}");
        }
    }

    #[test]
    fn grads_match_finite_differences() {
        let mut r = rng("binary::grads_match_finite_differences");
        let fixed: [(&[usize], &[usize]); 9] = [
            (&[3, 1, 4], &[2, 1]),
            (&[2, 1], &[3, 1, 4]),
            (&[2, 3], &[]),
            (&[], &[2, 3]),
            (&[1], &[4]),
            (&[3, 4], &[3, 4]),
            (&[5, 1], &[1, 6]),
            (&[2, 3, 1], &[3, 4]),
            (&[1, 1, 2], &[3, 1, 1]),
        ];
        let mut shapes: Vec<(Vec<usize>, Vec<usize>)> = fixed
            .iter()
            .map(|(a, b)| (a.to_vec(), b.to_vec()))
            .collect();
        // Random broadcastable pairs: a random output shape, each input keeping a random
        // suffix of it with random dimensions set to 1.
        for _ in 0..6 {
            let rank = r.range(0, 4);
            let out: Vec<usize> = (0..rank).map(|_| r.range(1, 4)).collect();
            let pick = |r: &mut crate::rng::Rng| -> Vec<usize> {
                let keep = r.range(0, rank);
                out[rank - keep..]
                    .iter()
                    .map(|&d| if r.range(0, 2) == 0 { 1 } else { d })
                    .collect()
            };
            let sa = pick(&mut r);
            let sb = pick(&mut r);
            shapes.push((sa, sb));
        }
        for (sa, sb) in &shapes {
            let (na, nb): (usize, usize) = (sa.iter().product(), sb.iter().product());
            let n: usize = broadcast_shape(sa, sb).unwrap().iter().product();
            for op in OPS {
                let a = rand_vec(&mut r, na);
                // |b| >= 0.5 keeps Div smooth; Max/Min ties are measure-zero with random data.
                let b: Vec<f64> = rand_range(&mut r, nb, 0.5, 1.5)
                    .into_iter()
                    .map(|v| if r.range(0, 1) == 0 { v } else { -v })
                    .collect();
                let dy = rand_vec(&mut r, n);
                let (mut da, mut db) = (vec![f64::NAN; na], vec![f64::NAN; nb]);
                binary_grad(op, &a, sa, &b, sb, &dy, &mut da, &mut db).unwrap();
                let what = format!("{op:?} {sa:?} {sb:?}");
                check_grad(
                    &format!("da {what}"),
                    &|v| run(op, v, sa, &b, sb),
                    &a,
                    &dy,
                    &da,
                );
                check_grad(
                    &format!("db {what}"),
                    &|v| run(op, &a, sa, v, sb),
                    &b,
                    &dy,
                    &db,
                );
            }
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("binary::f32_agrees_with_f64");
        let (sa, sb) = ([3usize, 1, 4], [2usize, 1]);
        let a32: Vec<f32> = rand_vec(&mut r, 12).iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = rand_range(&mut r, 2, 0.5, 1.5)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let w = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        for op in OPS {
            let mut y32 = vec![0.0f32; 24];
            binary(op, &a32, &sa, &b32, &sb, &mut y32).unwrap();
            assert_close(
                &format!("{op:?}"),
                &w(&y32),
                &run(op, &w(&a32), &sa, &w(&b32), &sb),
                1e-6,
            );
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let a = [1.0f64; 6];
        let b = [2.0f64; 3];
        let mut y = [0.0f64; 6];
        assert!(binary(BinaryOp::Add, &a, &[2, 3], &b, &[3], &mut y).is_ok());
        assert!(binary(BinaryOp::Add, &a, &[3, 2], &b, &[3], &mut y).is_err());
        assert!(binary(BinaryOp::Add, &a[..5], &[2, 3], &b, &[3], &mut y).is_err());
        assert!(binary(BinaryOp::Add, &a, &[2, 3], &b[..2], &[3], &mut y).is_err());
        assert!(binary(BinaryOp::Add, &a, &[2, 3], &b, &[3], &mut y[..5]).is_err());
        assert!(binary(BinaryOp::Add, &a, &[2, 0, 3], &b, &[3], &mut y).is_err());
        let (mut da, mut db) = ([0.0f64; 6], [0.0f64; 3]);
        assert!(binary_grad(BinaryOp::Mul, &a, &[2, 3], &b, &[3], &a, &mut da, &mut db).is_ok());
        assert!(
            binary_grad(
                BinaryOp::Mul,
                &a,
                &[2, 3],
                &b,
                &[3],
                &a[..5],
                &mut da,
                &mut db
            )
            .is_err()
        );
        assert!(
            binary_grad(
                BinaryOp::Mul,
                &a,
                &[2, 3],
                &b,
                &[3],
                &a,
                &mut da,
                &mut db[..2]
            )
            .is_err()
        );
        assert!(binary_grad(BinaryOp::Mul, &a, &[6], &b, &[3], &a, &mut da, &mut db).is_err());
    }
}
