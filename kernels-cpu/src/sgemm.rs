//! Single-precision GEMM with a fused bias + activation epilogue: the public, safe entry point,
//! its argument checks, the reference tier, and the cache-blocked driver every tuned tier shares.
//!
//! `C[b] = act(op(A[b]) @ op(B[b]) + bias)`, shapes and layouts as in
//! [`MatmulParams`]: row-major, transpose flags for `A` and `B`, optional shared `B`.
//!
//! The driver (`gemm_blocked`) is the BLIS loop nest: `B` is packed into `KC x NR` column
//! panels, `A` into `MC x KC` blocks of `MR`-row panels, both zero-padded at ragged edges, and a
//! micro-kernel computes one `MR x NR` tile of dot products over `KC` into a small buffer that
//! safe code then adds into `C` (and, on the last `KC` block, finishes with bias + activation).
//! Going through the buffer costs one `MR x NR` store per `2 * MR * NR * KC` flops (< 1%), and
//! keeps every ragged edge and the epilogue out of the unsafe micro-kernels.

use crate::error::{check_len, check_param};
use crate::reference::activation::Activation;
use crate::reference::matmul::{MatmulParams, matmul};

/// Arguments of one [`sgemm`] call besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgemmParams {
    /// Shape, batch and transpose flags.
    pub mm: MatmulParams,
    /// Activation applied after the bias (None: identity).
    pub activation: Option<Activation>,
    /// Worker threads (1 = the calling thread only; 0 is treated as 1). Problems under
    /// [`PAR_MIN_FLOPS`] always run on one thread, so small products never pay for spawning.
    pub threads: usize,
}

impl SgemmParams {
    /// A plain `[m, k] @ [k, n]` product on one thread, no activation.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            mm: MatmulParams::new(m, n, k),
            activation: None,
            threads: 1,
        }
    }

    /// Checks the shape, the activation and every slice length (`bias` must have `n`
    /// elements). Every tier calls this before touching the data.
    pub fn validate(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        c: &[f32],
    ) -> crate::Result<()> {
        const K: &str = "sgemm";
        let (na, nb, nc) = self.mm.validate(K)?;
        check_len(K, "a", na, a.len())?;
        check_len(K, "b", nb, b.len())?;
        check_len(K, "c", nc, c.len())?;
        if let Some(bias) = bias {
            check_len(K, "bias", self.mm.n, bias.len())?;
        }
        if let Some(Activation::LeakyRelu(alpha)) = self.activation {
            check_param(K, "alpha", alpha.is_finite(), || {
                format!("leaky relu slope must be finite, got {alpha}")
            })?;
        }
        Ok(())
    }
}

/// Below this many flops (`2*m*n*k` per batch entry) [`SgemmParams::threads`] is ignored:
/// besides the spawn, every thread packs all of `B` itself. Measured 2026-11-25 (Zen 4, AVX2
/// tier): at 256^3 (2^25 flops) 2 threads gave 89-102 GFLOP/s against 93 on one, at 512^3
/// 135-152 against 97, so the split starts above 256^3.
pub const PAR_MIN_FLOPS: usize = 1 << 26;

/// The signature of an sgemm implementation (a [`crate::dispatch::Kernels`] slot).
pub type SgemmFn =
    fn(&SgemmParams, &[f32], &[f32], Option<&[f32]>, &mut [f32]) -> crate::Result<()>;

/// `C = act(op(A) @ op(B) + bias)` with the best implementation this CPU supports (or the tier
/// `SPORE_CPU_KERNELS` forces). Checks every length first; never panics on bad input.
pub fn sgemm(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    (crate::dispatch::kernels().sgemm)(p, a, b, bias, c)
}

/// The reference tier: the f64-accumulating oracle, then bias and activation in f64.
pub fn sgemm_reference(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    p.validate(a, b, bias, c)?;
    matmul(p.mm, a, b, c)?;
    let n = p.mm.n;
    for row in c.chunks_exact_mut(n) {
        for (j, v) in row.iter_mut().enumerate() {
            let mut x = f64::from(*v);
            if let Some(bias) = bias {
                x += f64::from(bias[j]);
            }
            if let Some(act) = p.activation {
                x = act.apply(x);
            }
            *v = x as f32;
        }
    }
    Ok(())
}

/// A micro-kernel: `out[r * NR + c] = sum_kk a[kk * MR + r] * b[kk * NR + c]` over `kc`
/// steps, from a packed `A` panel (`kc * MR`) and a packed `B` panel (`kc * NR`).
pub(crate) type MicroKernel = fn(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]);

/// Cache-blocking sizes of the driver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    /// Depth of one packed block (the `B` panel `KC x NR` should sit in L1).
    pub kc: usize,
    /// Rows of `A` packed at once (the `MC x KC` block should sit in L2); a multiple of `MR`.
    pub mc: usize,
    /// Columns of `B` packed at once (the `KC x NC` block lives in L3).
    pub nc: usize,
}

/// One matrix of a product as the driver sees it: element `(i, j)` at `off + i*rs + j*cs`.
#[derive(Debug, Clone, Copy)]
struct View {
    off: usize,
    rs: usize,
    cs: usize,
}

/// Runs every batch entry of a validated problem through the blocked driver, splitting the
/// rows of `C` over `p.threads` scoped threads when the product is large enough.
pub(crate) fn run_blocked<const MR: usize, const NR: usize>(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    micro: MicroKernel,
    blk: Blocking,
) {
    let mm = p.mm;
    let (m, n, k) = (mm.m, mm.n, mm.k);
    let (rs_a, cs_a) = if mm.transpose_a { (1, m) } else { (k, 1) };
    let (rs_b, cs_b) = if mm.transpose_b { (1, k) } else { (n, 1) };
    let flops = 2 * m * n * k;
    let threads = if flops >= PAR_MIN_FLOPS {
        // At least 2*MR rows per thread, or the split costs more than it brings.
        p.threads.max(1).min(m.div_ceil(2 * MR)).max(1)
    } else {
        1
    };
    for (bi, cb) in c.chunks_exact_mut(m * n).enumerate() {
        let a_off = bi * m * k;
        let b_off = if mm.b_batch == 1 { 0 } else { bi * k * n };
        let bv = View {
            off: b_off,
            rs: rs_b,
            cs: cs_b,
        };
        if threads <= 1 {
            let av = View {
                off: a_off,
                rs: rs_a,
                cs: cs_a,
            };
            gemm_blocked::<MR, NR>(m, n, k, a, av, b, bv, bias, p.activation, cb, micro, blk);
        } else {
            let rows = m.div_ceil(threads).div_ceil(MR) * MR;
            std::thread::scope(|s| {
                for (t, chunk) in cb.chunks_mut(rows * n).enumerate() {
                    let i0 = t * rows;
                    let mt = chunk.len() / n;
                    let av = View {
                        off: a_off + i0 * rs_a,
                        rs: rs_a,
                        cs: cs_a,
                    };
                    let act = p.activation;
                    s.spawn(move || {
                        gemm_blocked::<MR, NR>(mt, n, k, a, av, b, bv, bias, act, chunk, micro, blk)
                    });
                }
            });
        }
    }
}

/// The BLIS loop nest for one `[m, k] @ [k, n]` product into the row-major `c` (`m * n`).
#[allow(clippy::too_many_arguments)]
fn gemm_blocked<const MR: usize, const NR: usize>(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    bias: Option<&[f32]>,
    act: Option<Activation>,
    c: &mut [f32],
    micro: MicroKernel,
    blk: Blocking,
) {
    let kc_max = blk.kc.min(k);
    let nc_max = blk.nc.min(n.div_ceil(NR) * NR);
    let mc_max = blk.mc.min(m.div_ceil(MR) * MR);
    // Packed panels start on a 64-byte boundary, so no 32-byte load in the micro-kernel
    // splits a cache line (the allocator only promises 16 bytes).
    let mut bbuf = vec![0.0f32; kc_max * nc_max + 16];
    let mut abuf = vec![0.0f32; kc_max * mc_max + 16];
    let boff = bbuf.as_ptr().align_offset(64).min(16);
    let aoff = abuf.as_ptr().align_offset(64).min(16);
    let bpack = &mut bbuf[boff..boff + kc_max * nc_max];
    let apack = &mut abuf[aoff..aoff + kc_max * mc_max];
    let mut tile = vec![0.0f32; MR * NR];
    for jc in (0..n).step_by(blk.nc) {
        let nc = blk.nc.min(n - jc);
        for pc in (0..k).step_by(blk.kc) {
            let kc = blk.kc.min(k - pc);
            let first = pc == 0;
            let last = pc + kc == k;
            pack_b::<NR>(b, bv, pc, kc, jc, nc, bpack);
            for ic in (0..m).step_by(blk.mc) {
                let mc = blk.mc.min(m - ic);
                pack_a::<MR>(a, av, ic, mc, pc, kc, apack);
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let bp = &bpack[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let mr = MR.min(mc - ir);
                        let ap = &apack[ir * kc..(ir + MR) * kc];
                        micro(kc, ap, bp, &mut tile);
                        let (i0, j0) = (ic + ir, jc + jr);
                        for r in 0..mr {
                            let crow = &mut c[(i0 + r) * n + j0..(i0 + r) * n + j0 + nr];
                            let trow = &tile[r * NR..r * NR + nr];
                            store_row(crow, trow, first, last, bias.map(|b| &b[j0..j0 + nr]), act);
                        }
                    }
                }
            }
        }
    }
}

/// Writes (first `KC` block) or accumulates one tile row into `C`, and on the last block adds
/// the bias and applies the activation.
#[inline]
fn store_row(
    crow: &mut [f32],
    trow: &[f32],
    first: bool,
    last: bool,
    bias: Option<&[f32]>,
    act: Option<Activation>,
) {
    if first {
        crow.copy_from_slice(trow);
    } else {
        for (cv, tv) in crow.iter_mut().zip(trow) {
            *cv += *tv;
        }
    }
    if last {
        if let Some(bias) = bias {
            for (cv, bv) in crow.iter_mut().zip(bias) {
                *cv += *bv;
            }
        }
        if let Some(act) = act {
            apply_activation(act, crow);
        }
    }
}

/// Applies `act` in place. The piecewise-linear ones run in f32 (vectorisable, exact up to
/// f32 rounding); the transcendental ones go through the f64 reference formula, whose cost is
/// O(m*n) against the product's O(m*n*k).
fn apply_activation(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Relu6 => v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0)),
        Activation::LeakyRelu(alpha) => {
            let alpha = alpha as f32;
            v.iter_mut()
                .for_each(|x| *x = if *x > 0.0 { *x } else { alpha * *x });
        }
        Activation::HardSwish => v
            .iter_mut()
            .for_each(|x| *x = *x * (*x + 3.0).clamp(0.0, 6.0) / 6.0),
        Activation::HardSigmoid => v
            .iter_mut()
            .for_each(|x| *x = (*x + 3.0).clamp(0.0, 6.0) / 6.0),
        other => v
            .iter_mut()
            .for_each(|x| *x = other.apply(f64::from(*x)) as f32),
    }
}

/// Packs `op(B)[pc..pc+kc, jc..jc+nc]` as `NR`-column panels, each `kc` rows of `NR`
/// contiguous values, zero-padded past column `nc`.
fn pack_b<const NR: usize>(
    b: &[f32],
    bv: View,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    out: &mut [f32],
) {
    for (panel, dst) in (0..nc).step_by(NR).zip(out.chunks_exact_mut(NR * kc)) {
        let w = NR.min(nc - panel);
        let j0 = jc + panel;
        for (kk, row) in dst.chunks_exact_mut(NR).enumerate() {
            let base = bv.off + (pc + kk) * bv.rs + j0 * bv.cs;
            if bv.cs == 1 {
                row[..w].copy_from_slice(&b[base..base + w]);
            } else {
                for (jj, x) in row[..w].iter_mut().enumerate() {
                    *x = b[base + jj * bv.cs];
                }
            }
            row[w..].fill(0.0);
        }
    }
}

/// Packs `op(A)[ic..ic+mc, pc..pc+kc]` as `MR`-row panels, each `kc` columns of `MR`
/// contiguous values, zero-padded past row `mc`.
fn pack_a<const MR: usize>(
    a: &[f32],
    av: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    out: &mut [f32],
) {
    for (panel, dst) in (0..mc).step_by(MR).zip(out.chunks_exact_mut(MR * kc)) {
        let h = MR.min(mc - panel);
        let i0 = ic + panel;
        if av.rs == 1 {
            // Transposed A: the MR rows of one column are contiguous.
            for (kk, col) in dst.chunks_exact_mut(MR).enumerate() {
                let base = av.off + i0 + (pc + kk) * av.cs;
                col[..h].copy_from_slice(&a[base..base + h]);
                col[h..].fill(0.0);
            }
        } else {
            for r in 0..MR {
                if r < h {
                    let base = av.off + (i0 + r) * av.rs + pc * av.cs;
                    let src = &a[base..base + kc];
                    for (kk, &x) in src.iter().enumerate() {
                        dst[kk * MR + r] = x;
                    }
                } else {
                    for kk in 0..kc {
                        dst[kk * MR + r] = 0.0;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::{assert_close, rng};

    const SIZES: [usize; 9] = [1, 2, 5, 7, 13, 31, 64, 100, 257];
    const ACTS: [Option<Activation>; 10] = [
        None,
        Some(Activation::Relu),
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Sigmoid),
        Some(Activation::Tanh),
        Some(Activation::HardSwish),
        Some(Activation::HardSigmoid),
        Some(Activation::Gelu),
        Some(Activation::GeluTanh),
    ];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    /// Checks `f` against the reference matmul + bias + activation on random ragged
    /// problems: every transpose combination, every activation, batched and shared `B`.
    pub(crate) fn check_tier(name: &str, f: SgemmFn) {
        let mut r = rng(name);
        for case in 0..40 {
            let pick = |r: &mut crate::rng::Rng| SIZES[r.range(0, SIZES.len() - 1)];
            let (m, n, k) = (pick(&mut r), pick(&mut r), pick(&mut r));
            let batch = if case % 4 == 0 { 3 } else { 1 };
            let mm = MatmulParams {
                batch,
                m,
                n,
                k,
                transpose_a: case % 2 == 1,
                transpose_b: (case / 2) % 2 == 1,
                b_batch: if case % 8 == 0 { 1 } else { batch },
            };
            let p = SgemmParams {
                mm,
                activation: ACTS[case % ACTS.len()],
                threads: 1 + case % 3,
            };
            let a = rand_f32(&mut r, batch * m * k);
            let b = rand_f32(&mut r, mm.b_batch * k * n);
            let bias = rand_f32(&mut r, n);
            let bias = if case % 3 == 0 { None } else { Some(&bias[..]) };
            let mut want = vec![0.0f32; batch * m * n];
            let mut got = vec![f32::NAN; batch * m * n];
            sgemm_reference(&p, &a, &b, bias, &mut want).unwrap();
            f(&p, &a, &b, bias, &mut got).unwrap();
            let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            assert_close(
                &format!("sgemm/{name}/{p:?} bias={}", bias.is_some()),
                &w(&got),
                &w(&want),
                1e-5,
            );
        }
        // Big enough to cross PAR_MIN_FLOPS and several KC/MC blocks, on 3 threads (the last
        // row chunk ragged), with and without transposes.
        let (m, n, k) = (300, 200, 1100);
        for transpose in [false, true] {
            let mut mm = MatmulParams::new(m, n, k);
            mm.transpose_a = transpose;
            mm.transpose_b = transpose;
            let p = SgemmParams {
                mm,
                activation: Some(Activation::Relu),
                threads: 3,
            };
            let a = rand_f32(&mut r, m * k);
            let b = rand_f32(&mut r, k * n);
            let bias = rand_f32(&mut r, n);
            let mut want = vec![0.0f32; m * n];
            let mut got = vec![f32::NAN; m * n];
            sgemm_reference(&p, &a, &b, Some(&bias), &mut want).unwrap();
            f(&p, &a, &b, Some(&bias), &mut got).unwrap();
            let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            assert_close(
                &format!("sgemm/{name}/large/transpose={transpose}"),
                &w(&got),
                &w(&want),
                1e-5,
            );
        }
    }

    /// Wrong lengths and bad parameters are errors, for tier `f`.
    pub(crate) fn check_errors(f: SgemmFn) {
        let p = SgemmParams::new(2, 3, 4);
        let (a, b, bias) = (vec![1.0f32; 8], vec![1.0f32; 12], vec![0.0f32; 3]);
        let mut c = vec![0.0f32; 6];
        assert!(f(&p, &a, &b, Some(&bias), &mut c).is_ok());
        assert!(f(&p, &a[..7], &b, None, &mut c).is_err());
        assert!(f(&p, &a, &b[..11], None, &mut c).is_err());
        assert!(f(&p, &a, &b, Some(&bias[..2]), &mut c).is_err());
        assert!(f(&p, &a, &b, None, &mut c[..5]).is_err());
        let zero = SgemmParams::new(0, 3, 4);
        assert!(f(&zero, &[], &b, None, &mut []).is_err());
        let leaky = SgemmParams {
            activation: Some(Activation::LeakyRelu(f64::NAN)),
            ..p
        };
        assert!(f(&leaky, &a, &b, None, &mut c).is_err());
        let mut bb = p;
        bb.mm.b_batch = 2;
        assert!(f(&bb, &a, &b, None, &mut c).is_err());
        let huge = SgemmParams::new(usize::MAX / 2, 3, 4);
        assert!(f(&huge, &a, &b, None, &mut c).is_err());
    }

    #[test]
    fn reference_tier_matches_oracle() {
        check_tier("reference", sgemm_reference);
        check_errors(sgemm_reference);
    }

    #[test]
    fn dispatched_entry_matches_oracle() {
        check_tier("dispatched", sgemm);
        check_errors(sgemm);
    }
}
