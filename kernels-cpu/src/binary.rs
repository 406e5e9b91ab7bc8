//! Tuned broadcasting binary ops (`+ - * / max min`) and their gradients, with the semantics
//! of [`crate::reference::binary`] (NumPy broadcasting; `Max`/`Min` ties go to `a`).
//!
//! Fast paths, by the shapes' element counts once broadcasting is resolved:
//! * same shape: one flat vectorised loop;
//! * row broadcast: one operand is the trailing-axes "row" of the other (a bias vector along
//!   the last axis, or a scalar, the row of length 1): the row is replicated into a slab of
//!   at least 64 lanes so the loop stays long and unit-stride whatever its length; the
//!   gradient of the row operand is a column sum (f32 blocks of 32 slabs added into f64);
//! * anything else (both operands broadcast, middle axes): the reference's index walk.
//!
//! The op is matched once per call and each arm monomorphises the loop, so no per-element
//! branch on the op remains.

use crate::activation::{Isa, isa_call, threads_for};
use crate::error::{Result, check_len, checked_product};
use crate::parallel::{par_chunks_mut, par_map};
pub use crate::reference::binary::BinaryOp;
use crate::reference::binary::{self as reference, broadcast_shape};

/// Slabs of a row-broadcast gradient summed in f32 before being added into f64.
const SLAB_BLOCK: usize = 32;

/// How the operands line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Same element count as the output.
    Same,
    /// `b` is the trailing row (length `usize`) of `a`.
    RowB(usize),
    /// `a` is the trailing row of `b`.
    RowA(usize),
    /// Anything else.
    General,
}

/// Whether `row_shape` (right-aligned against `out`) is `out`'s trailing axes with only
/// leading 1s before them, i.e. its elements repeat every `product(row_shape)` outputs.
fn is_trailing_row(row_shape: &[usize], out: &[usize]) -> bool {
    let trimmed: Vec<usize> = row_shape.iter().copied().skip_while(|&d| d == 1).collect();
    out.ends_with(&trimmed)
}

fn layout(a_shape: &[usize], b_shape: &[usize], out: &[usize]) -> Layout {
    let (na, nb, n) = (
        a_shape.iter().product::<usize>(),
        b_shape.iter().product::<usize>(),
        out.iter().product::<usize>(),
    );
    if na == n && nb == n {
        Layout::Same
    } else if na == n && is_trailing_row(b_shape, out) {
        Layout::RowB(nb)
    } else if nb == n && is_trailing_row(a_shape, out) {
        Layout::RowA(na)
    } else {
        Layout::General
    }
}

/// `row` replicated into a slab of at least 64 lanes (a whole number of rows).
fn slab(row: &[f32]) -> Vec<f32> {
    let k = 64usize.div_ceil(row.len().max(1));
    row.iter().copied().cycle().take(k * row.len()).collect()
}

#[inline(always)]
fn apply(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => {
            if a >= b {
                a
            } else {
                b
            }
        }
        BinaryOp::Min => {
            if a <= b {
                a
            } else {
                b
            }
        }
    }
}

#[inline(always)]
fn partials(op: BinaryOp, a: f32, b: f32) -> (f32, f32) {
    match op {
        BinaryOp::Add => (1.0, 1.0),
        BinaryOp::Sub => (1.0, -1.0),
        BinaryOp::Mul => (b, a),
        BinaryOp::Div => (1.0 / b, -a / (b * b)),
        BinaryOp::Max => {
            if a >= b {
                (1.0, 0.0)
            } else {
                (0.0, 1.0)
            }
        }
        BinaryOp::Min => {
            if a <= b {
                (1.0, 0.0)
            } else {
                (0.0, 1.0)
            }
        }
    }
}

/// Runs `$body` with `$op` replaced by each constant op, so each arm is its own loop.
macro_rules! per_op {
    ($op:expr, |$o:ident| $body:expr) => {
        match $op {
            BinaryOp::Add => {
                let $o = BinaryOp::Add;
                $body
            }
            BinaryOp::Sub => {
                let $o = BinaryOp::Sub;
                $body
            }
            BinaryOp::Mul => {
                let $o = BinaryOp::Mul;
                $body
            }
            BinaryOp::Div => {
                let $o = BinaryOp::Div;
                $body
            }
            BinaryOp::Max => {
                let $o = BinaryOp::Max;
                $body
            }
            BinaryOp::Min => {
                let $o = BinaryOp::Min;
                $body
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Bodies.

/// Body: `y = a op b`, all the same length.
#[inline(always)]
pub(crate) fn binary_same_core(op: BinaryOp, a: &[f32], b: &[f32], y: &mut [f32]) {
    per_op!(op, |o| {
        for ((yv, &x), &z) in y.iter_mut().zip(a).zip(b) {
            *yv = apply(o, x, z);
        }
    })
}

/// Body: `y = full op row` (or `row op full` when `swap`), `row` a slab, `full` starting at
/// a row boundary.
#[inline(always)]
pub(crate) fn binary_row_core(op: BinaryOp, full: &[f32], row: &[f32], swap: bool, y: &mut [f32]) {
    let l = row.len();
    if l == 0 {
        return;
    }
    per_op!(op, |o| {
        for (fs, ys) in full.chunks(l).zip(y.chunks_mut(l)) {
            if swap {
                for ((yv, &f), &r) in ys.iter_mut().zip(fs).zip(row) {
                    *yv = apply(o, r, f);
                }
            } else {
                for ((yv, &f), &r) in ys.iter_mut().zip(fs).zip(row) {
                    *yv = apply(o, f, r);
                }
            }
        }
    })
}

/// Body: same-shape gradient `da = dy * d/da`, `db = dy * d/db`.
#[inline(always)]
pub(crate) fn binary_grad_same_core(
    op: BinaryOp,
    a: &[f32],
    b: &[f32],
    dy: &[f32],
    da: &mut [f32],
    db: &mut [f32],
) {
    per_op!(op, |o| {
        let grads = da.iter_mut().zip(db.iter_mut());
        for ((ga, gb), ((&x, &z), &g)) in grads.zip(a.iter().zip(b).zip(dy)) {
            let (pa, pb) = partials(o, x, z);
            *ga = g * pa;
            *gb = g * pb;
        }
    })
}

/// Body: row-broadcast gradient. `dfull = dy * d/dfull`, and the slab-layout sums of
/// `dy * d/drow` are added into `acc` (f64, one lane per slab position).
#[inline(always)]
pub(crate) fn binary_grad_row_core(
    op: BinaryOp,
    full: &[f32],
    row: &[f32],
    swap: bool,
    dy: &[f32],
    dfull: &mut [f32],
    acc: &mut [f64],
) {
    let l = row.len();
    if l == 0 {
        return;
    }
    let mut part = vec![0.0f32; l];
    per_op!(op, |o| {
        let blocks = full.chunks(l * SLAB_BLOCK).zip(dy.chunks(l * SLAB_BLOCK));
        for ((fb, gb), db) in blocks.zip(dfull.chunks_mut(l * SLAB_BLOCK)) {
            part.fill(0.0);
            for ((fs, gs), ds) in fb.chunks(l).zip(gb.chunks(l)).zip(db.chunks_mut(l)) {
                let lanes = part.iter_mut().zip(row);
                for ((d, (&f, &g)), (p, &r)) in ds.iter_mut().zip(fs.iter().zip(gs)).zip(lanes) {
                    let (pf, pr) = if swap {
                        let (pa, pb) = partials(o, r, f);
                        (pb, pa)
                    } else {
                        partials(o, f, r)
                    };
                    *d = g * pf;
                    *p += g * pr;
                }
            }
            for (s, &p) in acc.iter_mut().zip(&part) {
                *s += f64::from(p);
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Public API.

/// Validates shapes against slice lengths; returns the broadcast shape and its element count.
fn check_operands(
    kernel: &'static str,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
) -> Result<(Vec<usize>, usize)> {
    let out = broadcast_shape(a_shape, b_shape)?;
    check_len(kernel, "a", checked_product(kernel, a_shape)?, a.len())?;
    check_len(kernel, "b", checked_product(kernel, b_shape)?, b.len())?;
    let n = checked_product(kernel, &out)?;
    Ok((out, n))
}

/// `y = a op b` with NumPy broadcasting (`y` has the broadcast shape), dispatched build, up
/// to `threads` threads. An empty shape is a scalar.
pub fn binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    binary_with(Isa::current(), op, a, a_shape, b, b_shape, y, threads)
}

/// [`binary`] with an explicit build.
#[allow(clippy::too_many_arguments)]
pub fn binary_with(
    isa: Isa,
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    const K: &str = "binary";
    if isa == Isa::Reference {
        return reference::binary(op, a, a_shape, b, b_shape, y);
    }
    let (out, n) = check_operands(K, a, a_shape, b, b_shape)?;
    check_len(K, "y", n, y.len())?;
    let t = threads_for(n, threads);
    match layout(a_shape, b_shape, &out) {
        Layout::Same => par_chunks_mut(y, 1, t, |i, yc| {
            let r = i..i + yc.len();
            isa_call!(isa, binary_same_core(op, &a[r.clone()], &b[r], yc));
            Ok(())
        }),
        Layout::RowB(_) | Layout::RowA(_) => {
            let (full, row, swap) = if a.len() == n {
                (a, b, false)
            } else {
                (b, a, true)
            };
            let row = slab(row);
            par_chunks_mut(y, row.len(), t, |i, yc| {
                let f = &full[i * row.len()..i * row.len() + yc.len()];
                isa_call!(isa, binary_row_core(op, f, &row, swap, yc));
                Ok(())
            })
        }
        Layout::General => reference::binary(op, a, a_shape, b, b_shape, y),
    }
}

/// Gradient of [`binary`]: `da`, `db` get `dy * partial`, summed over each input's
/// broadcast axes (`Max`/`Min`: all to the selected input, to `a` on ties). Overwrites both.
/// Dispatched build.
#[allow(clippy::too_many_arguments)] // one argument per tensor and shape of the op
pub fn binary_grad(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    dy: &[f32],
    da: &mut [f32],
    db: &mut [f32],
    threads: usize,
) -> Result<()> {
    binary_grad_with(
        Isa::current(),
        op,
        a,
        a_shape,
        b,
        b_shape,
        dy,
        da,
        db,
        threads,
    )
}

/// [`binary_grad`] with an explicit build.
#[allow(clippy::too_many_arguments)]
pub fn binary_grad_with(
    isa: Isa,
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    dy: &[f32],
    da: &mut [f32],
    db: &mut [f32],
    threads: usize,
) -> Result<()> {
    const K: &str = "binary_grad";
    if isa == Isa::Reference {
        return reference::binary_grad(op, a, a_shape, b, b_shape, dy, da, db);
    }
    let (out, n) = check_operands(K, a, a_shape, b, b_shape)?;
    check_len(K, "dy", n, dy.len())?;
    check_len(K, "da", a.len(), da.len())?;
    check_len(K, "db", b.len(), db.len())?;
    let t = threads_for(n, threads);
    match layout(a_shape, b_shape, &out) {
        Layout::Same => {
            // Split da and db alike: chunk `da` with the pool, and `db` by the same ranges.
            let per = n.div_ceil(t.max(1)).max(1);
            let mut pairs: Vec<_> = da
                .chunks_mut(per)
                .zip(db.chunks_mut(per))
                .map(std::sync::Mutex::new)
                .collect();
            par_map(t, pairs.len(), |i| {
                let mut g = pairs[i].lock().unwrap_or_else(|e| e.into_inner());
                let (ga, gb) = &mut *g;
                let r = i * per..i * per + ga.len();
                isa_call!(
                    isa,
                    binary_grad_same_core(op, &a[r.clone()], &b[r.clone()], &dy[r], ga, gb)
                );
            })?;
            pairs.clear();
            Ok(())
        }
        Layout::RowB(len) | Layout::RowA(len) => {
            let (full, row, swap, dfull, drow) = if a.len() == n {
                (a, b, false, da, db)
            } else {
                (b, a, true, db, da)
            };
            let row = slab(row);
            let l = row.len();
            let parts = std::sync::Mutex::new(Vec::new());
            par_chunks_mut(dfull, l, t, |i, dc| {
                let r = i * l..i * l + dc.len();
                let mut acc = vec![0.0f64; l];
                isa_call!(
                    isa,
                    binary_grad_row_core(op, &full[r.clone()], &row, swap, &dy[r], dc, &mut acc)
                );
                parts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, acc));
                Ok(())
            })?;
            let mut parts = parts.into_inner().unwrap_or_else(|e| e.into_inner());
            parts.sort_by_key(|p| p.0);
            let mut total = vec![0.0f64; len];
            for (_, acc) in &parts {
                for (j, v) in acc.iter().enumerate() {
                    total[j % len] += v;
                }
            }
            for (d, v) in drow.iter_mut().zip(&total) {
                *d = *v as f32;
            }
            Ok(())
        }
        Layout::General => reference::binary_grad(op, a, a_shape, b, b_shape, dy, da, db),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::{assert_close_floor, f32v, f64v};
    use crate::testutil::{assert_close, rand_range, rng};

    const OPS: [BinaryOp; 6] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];

    #[test]
    fn every_isa_matches_reference_on_every_layout() {
        let mut r = rng("binary::every_isa_matches_reference_on_every_layout");
        let shapes: Vec<(Vec<usize>, Vec<usize>)> = vec![
            (vec![37, 13], vec![37, 13]),
            (vec![5, 7], vec![7]),
            (vec![3], vec![9, 3]),
            (vec![17, 33], vec![]),
            (vec![1], vec![4, 1, 3]),
            (vec![2, 3, 5], vec![1, 3, 5]),
            (vec![2, 3, 5], vec![3, 1]),
            (vec![4, 1], vec![1, 6]),
            (vec![300, 1000], vec![1000]),
            (vec![70_001], vec![70_001]),
        ];
        for isa in Isa::all() {
            println!("binary: isa {}", isa.name());
            for (sa, sb) in &shapes {
                for op in OPS {
                    for threads in [1, 2] {
                        let what = format!("{op:?}/{}/{sa:?}x{sb:?}/t={threads}", isa.name());
                        let na: usize = sa.iter().product();
                        let nb: usize = sb.iter().product();
                        let a = f32v(&rand_range(&mut r, na, -2.0, 2.0));
                        // Divisors away from 0.
                        let b: Vec<f32> = rand_range(&mut r, nb, 0.5, 2.0)
                            .iter()
                            .zip(rand_range(&mut r, nb, -1.0, 1.0))
                            .map(|(&m, s)| (if s < 0.0 { -m } else { m }) as f32)
                            .collect();
                        let n = broadcast_shape(sa, sb).unwrap().iter().product::<usize>();
                        let dy = f32v(&rand_range(&mut r, n, -1.0, 1.0));
                        let (a64, b64, dy64) = (f64v(&a), f64v(&b), f64v(&dy));
                        let mut want = vec![0.0; n];
                        reference::binary(op, &a64, sa, &b64, sb, &mut want).unwrap();
                        let mut y = vec![f32::NAN; n];
                        binary_with(isa, op, &a, sa, &b, sb, &mut y, threads).unwrap();
                        assert_close(&format!("{what} y"), &f64v(&y), &want, 1e-6);
                        let (mut wa, mut wb) = (vec![0.0; na], vec![0.0; nb]);
                        reference::binary_grad(op, &a64, sa, &b64, sb, &dy64, &mut wa, &mut wb)
                            .unwrap();
                        let (mut ga, mut gb) = (vec![f32::NAN; na], vec![f32::NAN; nb]);
                        binary_grad_with(isa, op, &a, sa, &b, sb, &dy, &mut ga, &mut gb, threads)
                            .unwrap();
                        // A broadcast operand's gradient sums signed terms that may cancel:
                        // judge it against the size of the terms (|dy| * |partial| <= 8).
                        let dy_norm = dy64.iter().map(|v| v * v).sum::<f64>().sqrt();
                        let floor = 8.0 * dy_norm;
                        assert_close_floor(&format!("{what} da"), &f64v(&ga), &wa, floor, 1e-6);
                        assert_close_floor(&format!("{what} db"), &f64v(&gb), &wb, floor, 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let a = [1.0f32; 6];
        for isa in Isa::all() {
            let mut y = [0.0f32; 6];
            let (mut da, mut db) = ([0.0f32; 6], [0.0f32; 3]);
            assert!(binary_with(isa, BinaryOp::Add, &a, &[2, 3], &a[..3], &[3], &mut y, 1).is_ok());
            assert!(
                binary_with(isa, BinaryOp::Add, &a, &[2, 3], &a[..2], &[2], &mut y, 1).is_err()
            );
            assert!(
                binary_with(isa, BinaryOp::Add, &a[..5], &[2, 3], &a, &[2, 3], &mut y, 1).is_err()
            );
            assert!(
                binary_with(isa, BinaryOp::Mul, &a, &[2, 3], &a, &[2, 3], &mut y[..5], 1).is_err()
            );
            assert!(
                binary_grad_with(
                    isa,
                    BinaryOp::Div,
                    &a,
                    &[2, 3],
                    &a[..3],
                    &[3],
                    &a,
                    &mut da,
                    &mut db[..2],
                    2
                )
                .is_err()
            );
            assert!(
                binary_grad_with(
                    isa,
                    BinaryOp::Div,
                    &a,
                    &[2, 3],
                    &a[..3],
                    &[3],
                    &a[..5],
                    &mut da,
                    &mut db,
                    2
                )
                .is_err()
            );
        }
    }
}
