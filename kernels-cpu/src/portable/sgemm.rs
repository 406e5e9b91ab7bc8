//! Portable sgemm: the shared blocked driver with a 6x8 register block written as plain array
//! loops, which LLVM turns into 12 SSE accumulators (of the 16 xmm registers of the x86_64
//! baseline). Measured 2026-11-25 (Zen 4, 1024^3): 6x8 34.3 GFLOP/s, 4x8 33.1 — about 60% of
//! the SSE2 mul+add peak (16 flop/cycle); the AVX2 tier is what this CPU actually runs.

use crate::sgemm::{Blocking, Micro, SgemmParams, run_blocked};

/// Rows of the register block.
pub(crate) const MR: usize = 6;
/// Columns of the register block.
pub(crate) const NR: usize = 8;

/// KC*NR*4 = 8 KiB of `B` panel in L1; MC*KC*4 = 96 KiB of `A` block in L2.
pub(crate) const BLOCKING: Blocking = Blocking {
    kc: 256,
    mc: 96,
    nc: 2048,
};

/// The portable micro-kernels (always packed: the baseline has too few registers for a
/// strided variant to pay).
pub(crate) const MICRO: Micro = Micro {
    packed: micro_6x8,
    strided: None,
    fused: None,
};

/// The 6x8 micro-kernel (see [`crate::sgemm`] for the packed layouts).
fn micro_6x8(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    let mut acc = [[0.0f32; NR]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for r in 0..MR {
            for c in 0..NR {
                // Not `mul_add`: without a target FMA it becomes a libm call per element.
                acc[r][c] += ak[r] * bk[c];
            }
        }
    }
    for (dst, src) in out.chunks_exact_mut(NR).zip(&acc) {
        dst.copy_from_slice(src);
    }
}

/// `C = act(op(A) @ op(B) + bias)`, portable tier. Checks every length first.
pub fn sgemm(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    p.validate(a, b, bias, c)?;
    run_blocked::<MR, NR>(p, a, b, bias, c, MICRO, BLOCKING)
}

#[cfg(test)]
mod tests {
    use crate::sgemm::tests::{check_errors, check_tier};

    #[test]
    fn portable_matches_oracle() {
        check_tier("portable", super::sgemm);
        check_errors(super::sgemm);
    }
}
