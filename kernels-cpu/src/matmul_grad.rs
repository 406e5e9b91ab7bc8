//! The tuned gradients of the batched matrix multiply `C[b] = op(A[b]) @ op(B[b])` (shapes,
//! transposes and shared `B` as in [`MatmulParams`]): each one or a few sgemm calls with the
//! transpose flags chosen so no operand is ever copied.
//!
//! * `dA`: `dop(A) = dC @ op(B)^T`, or, stored transposed, `dA = op(B) @ dC^T` (per batch entry
//!   when `B` is shared, since sgemm shares only its right operand).
//! * `dB`: `dop(B) = op(A)^T @ dC`, or, stored transposed, `dB = dC^T @ op(A)`. A shared `B`
//!   sums over the batch: with `A` untransposed, the batch entries stack along the contracted
//!   dimension (`[batch * m, k]` and `[batch * m, n]`), so it is still one GEMM; otherwise the
//!   batch entries are added one after the other.
//!
//! `*_fast` use the dispatched sgemm; `*_gemm` take the sgemm as an argument, so each tier can
//! be tested.

use crate::error::{Result, check_len};
use crate::reference::matmul::MatmulParams;
use crate::sgemm::{SgemmFn, SgemmParams};

/// `da` = gradient of `sum(dc * (op(A) @ op(B)))` with respect to `A`, in `A`'s storage layout
/// (overwritten), with the best sgemm this CPU supports, on up to `threads` threads. `b` is
/// `[b_batch, k, n]` (or `[b_batch, n, k]` when `transpose_b`), `dc` `[batch, m, n]`.
pub fn matmul_grad_a_fast(
    p: &MatmulParams,
    b: &[f32],
    dc: &[f32],
    threads: usize,
    da: &mut [f32],
) -> Result<()> {
    matmul_grad_a_gemm(p, b, dc, threads, da, crate::sgemm::sgemm)
}

/// `db` = gradient with respect to `B`, in `B`'s storage layout (overwritten; summed over the
/// batch when `B` is shared), with the best sgemm this CPU supports, on up to `threads`
/// threads. `a` is `[batch, m, k]` (or `[batch, k, m]` when `transpose_a`), `dc`
/// `[batch, m, n]`.
pub fn matmul_grad_b_fast(
    p: &MatmulParams,
    a: &[f32],
    dc: &[f32],
    threads: usize,
    db: &mut [f32],
) -> Result<()> {
    matmul_grad_b_gemm(p, a, dc, threads, db, crate::sgemm::sgemm)
}

/// An sgemm call without epilogue.
fn plain(mm: MatmulParams, threads: usize) -> SgemmParams {
    SgemmParams {
        mm,
        activation: None,
        threads,
    }
}

/// [`matmul_grad_a_fast`] over the sgemm `gemm`.
pub fn matmul_grad_a_gemm(
    p: &MatmulParams,
    b: &[f32],
    dc: &[f32],
    threads: usize,
    da: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    const K: &str = "matmul_grad_a";
    let (na, nb, nc) = p.validate(K)?;
    check_len(K, "b", nb, b.len())?;
    check_len(K, "dc", nc, dc.len())?;
    check_len(K, "da", na, da.len())?;
    let (m, n, k) = (p.m, p.n, p.k);
    if !p.transpose_a {
        // da[m, k] = dC[m, n] @ op(B)^T: B's storage read with the opposite transpose flag.
        let mm = MatmulParams {
            batch: p.batch,
            m,
            n: k,
            k: n,
            transpose_a: false,
            transpose_b: !p.transpose_b,
            b_batch: p.b_batch,
        };
        return gemm(&plain(mm, threads), dc, b, None, da);
    }
    // da[k, m] = op(B)[k, n] @ dC^T[n, m]: here B is the left operand.
    let mm = MatmulParams {
        batch: 1,
        m: k,
        n: m,
        k: n,
        transpose_a: p.transpose_b,
        transpose_b: true,
        b_batch: 1,
    };
    if p.b_batch == p.batch {
        let mm = MatmulParams {
            batch: p.batch,
            b_batch: p.batch,
            ..mm
        };
        return gemm(&plain(mm, threads), b, dc, None, da);
    }
    // Shared B as the left operand: sgemm only shares its right one, so one call per entry.
    for ((dcb, dab), _) in dc
        .chunks_exact(m * n)
        .zip(da.chunks_exact_mut(m * k))
        .zip(0..p.batch)
    {
        gemm(&plain(mm, threads), b, dcb, None, dab)?;
    }
    Ok(())
}

/// [`matmul_grad_b_fast`] over the sgemm `gemm`.
pub fn matmul_grad_b_gemm(
    p: &MatmulParams,
    a: &[f32],
    dc: &[f32],
    threads: usize,
    db: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    const K: &str = "matmul_grad_b";
    let (na, nb, nc) = p.validate(K)?;
    check_len(K, "a", na, a.len())?;
    check_len(K, "dc", nc, dc.len())?;
    check_len(K, "db", nb, db.len())?;
    let (m, n, k) = (p.m, p.n, p.k);
    // One product entry's gradient, contracted over `rows` rows of A and dC (a whole batch
    // entry, or all of them stacked): operands (left, right) and the product's shape.
    let per_entry = |rows: usize| -> MatmulParams {
        if p.transpose_b {
            // db[n, k] = dC^T[n, rows] @ op(A)[rows, k].
            MatmulParams {
                batch: 1,
                m: n,
                n: k,
                k: rows,
                transpose_a: true,
                transpose_b: p.transpose_a,
                b_batch: 1,
            }
        } else {
            // db[k, n] = op(A)^T[k, rows] @ dC[rows, n].
            MatmulParams {
                batch: 1,
                m: k,
                n,
                k: rows,
                transpose_a: !p.transpose_a,
                transpose_b: false,
                b_batch: 1,
            }
        }
    };
    // Left and right operand of a product `per_entry` describes.
    fn operands<'s>(tb: bool, a: &'s [f32], dc: &'s [f32]) -> (&'s [f32], &'s [f32]) {
        if tb { (dc, a) } else { (a, dc) }
    }
    if p.b_batch == p.batch {
        let mm = MatmulParams {
            batch: p.batch,
            b_batch: p.batch,
            ..per_entry(m)
        };
        let (l, r) = operands(p.transpose_b, a, dc);
        return gemm(&plain(mm, threads), l, r, None, db);
    }
    if !p.transpose_a {
        // Shared B, A stored [batch * m, k]: the batch stacks along the contracted dimension.
        let (l, r) = operands(p.transpose_b, a, dc);
        return gemm(&plain(per_entry(p.batch * m), threads), l, r, None, db);
    }
    // Shared B with A stored transposed: sum the entries' products in batch order.
    let mm = per_entry(m);
    let mut tmp = vec![0.0f32; db.len()];
    for (bi, (ab, dcb)) in a
        .chunks_exact(m * k)
        .zip(dc.chunks_exact(m * n))
        .enumerate()
    {
        let (l, r) = operands(p.transpose_b, ab, dcb);
        if bi == 0 {
            gemm(&plain(mm, threads), l, r, None, db)?;
        } else {
            gemm(&plain(mm, threads), l, r, None, &mut tmp)?;
            for (d, t) in db.iter_mut().zip(&tmp) {
                *d += *t;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::matmul::{matmul_grad_a, matmul_grad_b};
    use crate::testutil::{assert_close, rng};

    const SIZES: [usize; 8] = [1, 2, 3, 7, 13, 17, 33, 70];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    fn gemms() -> Vec<(&'static str, SgemmFn)> {
        let mut t: Vec<(&'static str, SgemmFn)> = vec![
            ("reference", crate::sgemm::sgemm_reference),
            ("portable", crate::portable::sgemm::sgemm),
            ("dispatched", crate::sgemm::sgemm),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", crate::x86_64::sgemm_avx2::sgemm));
        }
        t
    }

    fn check(p: &MatmulParams, r: &mut crate::rng::Rng) -> Vec<&'static str> {
        let (na, nb, nc) = p.validate("t").unwrap();
        let (a, b, dc) = (rand_f32(r, na), rand_f32(r, nb), rand_f32(r, nc));
        let mut want_da = vec![0.0f64; na];
        let mut want_db = vec![0.0f64; nb];
        matmul_grad_a(*p, &f64s(&b), &f64s(&dc), &mut want_da).unwrap();
        matmul_grad_b(*p, &f64s(&a), &f64s(&dc), &mut want_db).unwrap();
        let mut ran = Vec::new();
        for threads in [1, 2] {
            for (name, gemm) in gemms() {
                let mut da = vec![f32::NAN; na];
                let mut db = vec![f32::NAN; nb];
                matmul_grad_a_gemm(p, &b, &dc, threads, &mut da, gemm).unwrap();
                matmul_grad_b_gemm(p, &a, &dc, threads, &mut db, gemm).unwrap();
                assert_close(
                    &format!("dA/{name}/t{threads}/{p:?}"),
                    &f64s(&da),
                    &want_da,
                    1e-5,
                );
                assert_close(
                    &format!("dB/{name}/t{threads}/{p:?}"),
                    &f64s(&db),
                    &want_db,
                    1e-5,
                );
                if threads == 1 {
                    ran.push(name);
                }
            }
            let mut da = vec![f32::NAN; na];
            let mut db = vec![f32::NAN; nb];
            matmul_grad_a_fast(p, &b, &dc, threads, &mut da).unwrap();
            matmul_grad_b_fast(p, &a, &dc, threads, &mut db).unwrap();
            assert_close(&format!("dA/fast/{p:?}"), &f64s(&da), &want_da, 1e-5);
            assert_close(&format!("dB/fast/{p:?}"), &f64s(&db), &want_db, 1e-5);
        }
        ran
    }

    #[test]
    fn grads_match_reference() {
        let mut r = rng("matmul_grad");
        let mut ran = Vec::new();
        // Every transpose combination with shared and per-entry B, twice, on ragged sizes.
        for case in 0..32 {
            let pick = |r: &mut crate::rng::Rng| SIZES[r.range(0, SIZES.len() - 1)];
            let batch = 1 + case % 3;
            let p = MatmulParams {
                batch,
                m: pick(&mut r),
                n: pick(&mut r),
                k: pick(&mut r),
                transpose_a: case % 2 == 1,
                transpose_b: (case / 2) % 2 == 1,
                b_batch: if (case / 4) % 2 == 1 { 1 } else { batch },
            };
            ran = check(&p, &mut r);
        }
        // Large enough for sgemm to split over threads, with a shared B.
        for ta in [false, true] {
            let p = MatmulParams {
                batch: 2,
                m: 150,
                n: 130,
                k: 900,
                transpose_a: ta,
                transpose_b: !ta,
                b_batch: 1,
            };
            check(&p, &mut r);
        }
        println!("matmul_grad sgemm tiers run: {ran:?}");
    }

    #[test]
    fn errors_not_panics() {
        let p = MatmulParams::new(2, 3, 4);
        let (a, b, dc) = (vec![1.0f32; 8], vec![1.0f32; 12], vec![1.0f32; 6]);
        let (mut da, mut db) = (vec![0.0f32; 8], vec![0.0f32; 12]);
        for (name, gemm) in gemms() {
            assert!(
                matmul_grad_a_gemm(&p, &b, &dc, 1, &mut da, gemm).is_ok(),
                "{name}"
            );
            assert!(
                matmul_grad_b_gemm(&p, &a, &dc, 1, &mut db, gemm).is_ok(),
                "{name}"
            );
            assert!(matmul_grad_a_gemm(&p, &b[..11], &dc, 1, &mut da, gemm).is_err());
            assert!(matmul_grad_a_gemm(&p, &b, &dc[..5], 1, &mut da, gemm).is_err());
            assert!(matmul_grad_a_gemm(&p, &b, &dc, 1, &mut da[..7], gemm).is_err());
            assert!(matmul_grad_b_gemm(&p, &a[..7], &dc, 1, &mut db, gemm).is_err());
            assert!(matmul_grad_b_gemm(&p, &a, &dc[..5], 1, &mut db, gemm).is_err());
            assert!(matmul_grad_b_gemm(&p, &a, &dc, 1, &mut db[..11], gemm).is_err());
            let bad = MatmulParams {
                batch: 2,
                b_batch: 3,
                ..p
            };
            assert!(matmul_grad_a_gemm(&bad, &b, &dc, 1, &mut da, gemm).is_err());
            assert!(matmul_grad_b_gemm(&bad, &a, &dc, 1, &mut db, gemm).is_err());
        }
    }
}
