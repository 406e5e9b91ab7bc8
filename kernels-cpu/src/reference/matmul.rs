//! Batched matrix multiply `C = op(A) @ op(B)` with transpose flags and an optional shared `B`
//! (the oracle for Dense layers and attention-style batched products), plus its gradients.
//!
//! Every element is addressed through [`MatmulParams::a_index`] / [`MatmulParams::b_index`],
//! so the forward pass and both gradients agree on the layout by construction.

use super::Real;
use crate::error::{check_len, check_param, checked_product};

/// Shape and layout of a batched matrix multiply.
///
/// Logically `C[b] = op(A[b]) @ op(B[b])` with `op(A[b])` of shape `[m, k]` and `op(B[b])` of
/// shape `[k, n]`; all matrices are row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatmulParams {
    /// Number of independent products (at least 1).
    pub batch: usize,
    /// Rows of `op(A)` and of `C` (at least 1).
    pub m: usize,
    /// Columns of `op(B)` and of `C` (at least 1).
    pub n: usize,
    /// The contracted dimension: columns of `op(A)`, rows of `op(B)` (at least 1).
    pub k: usize,
    /// `A` is stored as `[batch, k, m]` (so `op(A) = A^T`) instead of `[batch, m, k]`.
    pub transpose_a: bool,
    /// `B` is stored as `[b_batch, n, k]` (so `op(B) = B^T`) instead of `[b_batch, k, n]`.
    pub transpose_b: bool,
    /// Number of `B` matrices: `batch`, or 1 when every product shares the same `B`
    /// (a Dense layer's weights applied to a batch of rows).
    pub b_batch: usize,
}

impl MatmulParams {
    /// An unbatched `[m, k] @ [k, n]` product without transposes.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            batch: 1,
            m,
            n,
            k,
            transpose_a: false,
            transpose_b: false,
            b_batch: 1,
        }
    }

    /// Refuses zero sizes, a `b_batch` other than 1 or `batch`, and element counts that
    /// overflow `usize`; returns the element counts of `(A, B, C)`.
    pub fn validate(&self, kernel: &'static str) -> crate::Result<(usize, usize, usize)> {
        let p = *self;
        check_param(kernel, "batch", p.batch > 0, || "must be at least 1".into())?;
        check_param(kernel, "m", p.m > 0, || "must be at least 1".into())?;
        check_param(kernel, "n", p.n > 0, || "must be at least 1".into())?;
        check_param(kernel, "k", p.k > 0, || "must be at least 1".into())?;
        check_param(
            kernel,
            "b_batch",
            p.b_batch == 1 || p.b_batch == p.batch,
            || format!("must be 1 or batch ({}), got {}", p.batch, p.b_batch),
        )?;
        let a = checked_product(kernel, &[p.batch, p.m, p.k])?;
        let b = checked_product(kernel, &[p.b_batch, p.k, p.n])?;
        let c = checked_product(kernel, &[p.batch, p.m, p.n])?;
        Ok((a, b, c))
    }

    /// Storage index of the logical element `op(A[bi])[i, kk]`.
    #[inline]
    pub fn a_index(&self, bi: usize, i: usize, kk: usize) -> usize {
        let base = bi * self.m * self.k;
        if self.transpose_a {
            base + kk * self.m + i
        } else {
            base + i * self.k + kk
        }
    }

    /// Storage index of the logical element `op(B[bi])[kk, j]`, with `bi` the batch index of
    /// the product (mapped onto the single shared matrix when `b_batch == 1`).
    #[inline]
    pub fn b_index(&self, bi: usize, kk: usize, j: usize) -> usize {
        let bb = if self.b_batch == 1 { 0 } else { bi };
        let base = bb * self.k * self.n;
        if self.transpose_b {
            base + j * self.k + kk
        } else {
            base + kk * self.n + j
        }
    }

    /// Storage index of `C[bi][i, j]`.
    #[inline]
    pub fn c_index(&self, bi: usize, i: usize, j: usize) -> usize {
        (bi * self.m + i) * self.n + j
    }
}

/// `C = op(A) @ op(B)` for every batch entry. `a`, `b` and `c` must have the lengths that
/// `p` implies (`batch*m*k`, `b_batch*k*n`, `batch*m*n`).
pub fn matmul<T: Real>(p: MatmulParams, a: &[T], b: &[T], c: &mut [T]) -> crate::Result<()> {
    const K: &str = "matmul";
    let (na, nb, nc) = p.validate(K)?;
    check_len(K, "a", na, a.len())?;
    check_len(K, "b", nb, b.len())?;
    check_len(K, "c", nc, c.len())?;
    for bi in 0..p.batch {
        for i in 0..p.m {
            for j in 0..p.n {
                let mut acc = 0.0f64;
                for kk in 0..p.k {
                    acc += a[p.a_index(bi, i, kk)].to_f64() * b[p.b_index(bi, kk, j)].to_f64();
                }
                c[p.c_index(bi, i, j)] = T::from_f64(acc);
            }
        }
    }
    Ok(())
}

/// Gradient with respect to `A`: `dop(A)[i, kk] = sum_j dC[i, j] * op(B)[kk, j]`, written in
/// `A`'s storage layout (so transposed when `transpose_a`). `A` itself is not needed.
/// Overwrites `da`.
pub fn matmul_grad_a<T: Real>(
    p: MatmulParams,
    b: &[T],
    dc: &[T],
    da: &mut [T],
) -> crate::Result<()> {
    const K: &str = "matmul_grad_a";
    let (na, nb, nc) = p.validate(K)?;
    check_len(K, "b", nb, b.len())?;
    check_len(K, "dc", nc, dc.len())?;
    check_len(K, "da", na, da.len())?;
    for bi in 0..p.batch {
        for i in 0..p.m {
            for kk in 0..p.k {
                let mut acc = 0.0f64;
                for j in 0..p.n {
                    acc += dc[p.c_index(bi, i, j)].to_f64() * b[p.b_index(bi, kk, j)].to_f64();
                }
                da[p.a_index(bi, i, kk)] = T::from_f64(acc);
            }
        }
    }
    Ok(())
}

/// Gradient with respect to `B`: `dop(B)[kk, j] = sum_i op(A)[i, kk] * dC[i, j]`, written in
/// `B`'s storage layout. When `B` is shared (`b_batch == 1`) the contributions of every batch
/// entry are summed, since one matrix fed all of them. Overwrites `db`.
pub fn matmul_grad_b<T: Real>(
    p: MatmulParams,
    a: &[T],
    dc: &[T],
    db: &mut [T],
) -> crate::Result<()> {
    const K: &str = "matmul_grad_b";
    let (na, nb, nc) = p.validate(K)?;
    check_len(K, "a", na, a.len())?;
    check_len(K, "dc", nc, dc.len())?;
    check_len(K, "db", nb, db.len())?;
    for bb in 0..p.b_batch {
        // The product batch entries that read matrix `bb`.
        let users = if p.b_batch == 1 {
            0..p.batch
        } else {
            bb..bb + 1
        };
        for kk in 0..p.k {
            for j in 0..p.n {
                let mut acc = 0.0f64;
                for bi in users.clone() {
                    for i in 0..p.m {
                        acc += a[p.a_index(bi, i, kk)].to_f64() * dc[p.c_index(bi, i, j)].to_f64();
                    }
                }
                db[p.b_index(bb, kk, j)] = T::from_f64(acc);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_vec, rng};

    fn mm(p: MatmulParams, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; p.batch * p.m * p.n];
        matmul(p, a, b, &mut c).unwrap();
        c
    }

    #[test]
    fn hand_computed_2x3_by_3x2() {
        // [1 2 3; 4 5 6] @ [7 8; 9 10; 11 12] = [58 64; 139 154]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let want = [58.0, 64.0, 139.0, 154.0];
        assert_eq!(mm(MatmulParams::new(2, 2, 3), &a, &b), want);

        // The same product with both operands stored transposed.
        let at = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        let bt = [7.0, 9.0, 11.0, 8.0, 10.0, 12.0];
        let p = MatmulParams {
            transpose_a: true,
            transpose_b: true,
            ..MatmulParams::new(2, 2, 3)
        };
        assert_eq!(mm(p, &at, &bt), want);
    }

    #[test]
    fn shared_b_equals_repeated_b() {
        let mut r = rng("matmul::shared_b_equals_repeated_b");
        let (batch, m, n, k) = (3, 2, 4, 5);
        let a = rand_vec(&mut r, batch * m * k);
        let b = rand_vec(&mut r, k * n);
        let shared = MatmulParams {
            batch,
            b_batch: 1,
            ..MatmulParams::new(m, n, k)
        };
        let repeated = MatmulParams {
            b_batch: batch,
            ..shared
        };
        let b_rep: Vec<f64> = (0..batch).flat_map(|_| b.iter().copied()).collect();
        assert_eq!(mm(shared, &a, &b), mm(repeated, &a, &b_rep));
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("matmul::f32_agrees_with_f64");
        for _ in 0..5 {
            let p = random_params(&mut r);
            let (na, nb, nc) = p.validate("t").unwrap();
            let a32: Vec<f32> = rand_vec(&mut r, na).iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = rand_vec(&mut r, nb).iter().map(|&v| v as f32).collect();
            let mut c32 = vec![0.0f32; nc];
            matmul(p, &a32, &b32, &mut c32).unwrap();
            let a64: Vec<f64> = a32.iter().map(|&v| f64::from(v)).collect();
            let b64: Vec<f64> = b32.iter().map(|&v| f64::from(v)).collect();
            let c: Vec<f64> = c32.iter().map(|&v| f64::from(v)).collect();
            assert_close("f32 matmul", &c, &mm(p, &a64, &b64), 1e-6);
        }
    }

    fn random_params(r: &mut crate::rng::Rng) -> MatmulParams {
        let batch = r.range(1, 3);
        MatmulParams {
            batch,
            m: r.range(1, 7),
            n: r.range(1, 7),
            k: r.range(1, 7),
            transpose_a: r.range(0, 1) == 1,
            transpose_b: r.range(0, 1) == 1,
            b_batch: if r.range(0, 1) == 1 { 1 } else { batch },
        }
    }

    #[test]
    fn grads_match_finite_differences() {
        let mut r = rng("matmul::grads_match_finite_differences");
        // Every transpose combination, shared and per-batch B, plus random ragged shapes.
        let mut configs = Vec::new();
        for ta in [false, true] {
            for tb in [false, true] {
                for shared in [false, true] {
                    let batch = r.range(1, 3);
                    configs.push(MatmulParams {
                        batch,
                        m: r.range(1, 7),
                        n: r.range(1, 7),
                        k: r.range(1, 7),
                        transpose_a: ta,
                        transpose_b: tb,
                        b_batch: if shared { 1 } else { batch },
                    });
                }
            }
        }
        for _ in 0..4 {
            configs.push(random_params(&mut r));
        }
        for p in configs {
            let (na, nb, nc) = p.validate("t").unwrap();
            let a = rand_vec(&mut r, na);
            let b = rand_vec(&mut r, nb);
            let dc = rand_vec(&mut r, nc);
            let mut da = vec![f64::NAN; na];
            let mut db = vec![f64::NAN; nb];
            matmul_grad_a(p, &b, &dc, &mut da).unwrap();
            matmul_grad_b(p, &a, &dc, &mut db).unwrap();
            check_grad(&format!("dA {p:?}"), &|x| mm(p, x, &b), &a, &dc, &da);
            check_grad(&format!("dB {p:?}"), &|x| mm(p, &a, x), &b, &dc, &db);
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let p = MatmulParams::new(2, 3, 4);
        let a = vec![1.0f64; 8];
        let b = vec![1.0f64; 12];
        let mut c = vec![0.0f64; 6];
        assert!(matmul(p, &a, &b, &mut c).is_ok());
        assert!(matmul(p, &a[..7], &b, &mut c).is_err());
        assert!(matmul(p, &a, &b[..11], &mut c).is_err());
        assert!(matmul(p, &a, &b, &mut c[..5]).is_err());
        assert!(matmul(MatmulParams { k: 0, ..p }, &a, &b, &mut c).is_err());
        assert!(
            matmul(
                MatmulParams {
                    batch: 2,
                    b_batch: 3,
                    ..p
                },
                &a,
                &b,
                &mut c
            )
            .is_err()
        );
        let huge = MatmulParams {
            batch: usize::MAX,
            m: 2,
            b_batch: 1,
            ..p
        };
        assert!(matmul(huge, &a, &b, &mut c).is_err());
        let mut da = vec![0.0f64; 7];
        assert!(matmul_grad_a(p, &b, &c, &mut da).is_err());
        let mut db = vec![0.0f64; 12];
        assert!(matmul_grad_b(p, &a, &c[..5], &mut db).is_err());
    }
}
