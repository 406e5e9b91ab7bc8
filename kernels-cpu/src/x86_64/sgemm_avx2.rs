//! AVX2 + FMA sgemm: the shared blocked driver with a 6x16 register block — 12 ymm
//! accumulators, 2 ymm for the `B` row, 1 for the broadcast `A` value (15 of 16 registers),
//! i.e. 12 independent FMA chains, enough to cover the FMA latency on two FMA ports.

use crate::error::KernelError;
use crate::reference::activation::Activation;
use crate::sgemm::{Blocking, Micro, SgemmParams, run_blocked};
use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_max_ps,
    _mm256_min_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

/// Rows of the register block.
pub(crate) const MR: usize = 6;
/// Columns of the register block (two ymm vectors).
pub(crate) const NR: usize = 16;

/// KC*NR*4 = 32 KiB of `B` panel (the L1d size), MC*KC*4 = 192 KiB of `A` block in the
/// 1 MiB/core L2, NC*KC*4 = 6 MiB of `B` block in L3. Measured 2026-11-25 on a Zen 4 EPYC
/// (criterion, 1 thread, GFLOP/s at 1024^3 / 2048^3, noisy to +-5%): KC,MC = 256,144: 86 / 85;
/// 256,72: 85 / 88; 384,96: 87-93 / 85-87; 512,96: 89-95 / 96-98; 512,72: 92 / 88;
/// 384,120: 76 / 75; 192,144: 77 / 79. NC = 512 lost 15-20%, NC = 1536 ~8%. The larger KC also
/// halves the tile round trips through `C` that the driver's epilogue design costs.
pub(crate) const BLOCKING: Blocking = Blocking {
    kc: 512,
    mc: 96,
    nc: 3072,
};

/// The AVX2 micro-kernels: packed, and strided for a row-major `A` read in place.
pub(crate) const MICRO: Micro = Micro {
    packed: micro_6x16,
    strided: Some(micro_6x16_strided),
    fused: Some(micro_6x16_fused),
};

/// Whether this CPU can run the AVX2 tier.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// `C = act(op(A) @ op(B) + bias)`, AVX2 + FMA tier. Checks every length first, and returns
/// an error (never executes an illegal instruction) on a CPU without AVX2 or FMA.
pub fn sgemm(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    p.validate(a, b, bias, c)?;
    if !available() {
        return Err(KernelError::Param {
            kernel: "sgemm_avx2",
            param: "cpu",
            reason: "this CPU lacks AVX2 or FMA".into(),
        });
    }
    run_blocked::<MR, NR>(p, a, b, bias, c, MICRO, BLOCKING)
}

/// Safe wrapper of the micro-kernel: checks the panel lengths and the CPU features itself
/// (callers are [`sgemm`] and the pre-packed entries of `crate::sgemm`).
fn micro_6x16(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    // `available()` is a cached atomic load (is_x86_feature_detected!), cheap against the
    // hundreds of cycles of one tile, and keeps this safe crate-visible function sound.
    if a.len() < kc * MR || b.len() < kc * NR || out.len() < MR * NR || !available() {
        // Unreachable from the driver, which hands out exact panels; stay safe regardless.
        out.fill(f32::NAN);
        return;
    }
    // SAFETY: the lengths and the CPU features (AVX2, FMA) were checked just above.
    unsafe { kernel_6x16(kc, a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) }
}

/// # Safety
/// AVX2 and FMA must be available; `a` must be valid for `kc * 6` reads, `b` for `kc * 16`
/// reads and `out` for `96` writes.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(kc: usize, a: *const f32, b: *const f32, out: *mut f32) {
    let mut c: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: `bp` walks `kc` rows of 16 values and `ap` `kc` columns of 6 values, within
        // the bounds the caller guarantees.
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (r, cr) in c.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(r));
                cr[0] = _mm256_fmadd_ps(av, b0, cr[0]);
                cr[1] = _mm256_fmadd_ps(av, b1, cr[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    for (r, cr) in c.iter().enumerate() {
        // SAFETY: row `r` writes out[r*16 .. r*16+16], inside the 96 the caller guarantees.
        unsafe {
            _mm256_storeu_ps(out.add(r * NR), cr[0]);
            _mm256_storeu_ps(out.add(r * NR + 8), cr[1]);
        }
    }
}

/// Safe wrapper of the fused micro-kernel (a [`crate::sgemm::FusedKernel`]): handles no
/// activation, ReLU and ReLU6 (`false` for the others); checks the panel, tile and bias
/// bounds and the CPU features itself. Measured 2026-11-26 (Zen 4, 1 thread, MobileNetV2 224
/// b1 end to end, best of 2 x 60 runs): 10.0 ms through the tile buffer, 8.8 ms fused.
#[allow(clippy::too_many_arguments)]
fn micro_6x16_fused(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    first: bool,
    last: bool,
    bias: Option<&[f32]>,
    act: Option<Activation>,
) -> bool {
    let mode = match act {
        None => Clamp::None,
        Some(Activation::Relu) => Clamp::Relu,
        Some(Activation::Relu6) => Clamp::Relu6,
        Some(_) if last => return false,
        // Not the last block: no epilogue yet.
        Some(_) => Clamp::None,
    };
    let (mode, bias) = if last {
        (mode, bias)
    } else {
        (Clamp::None, None)
    };
    let c_need = (MR - 1).checked_mul(ldc).and_then(|x| x.checked_add(NR));
    let ok = a.len() >= kc * MR
        && b.len() >= kc * NR
        && ldc >= NR
        && c_need.is_some_and(|need| c.len() >= need)
        && bias.is_none_or(|bs| bs.len() >= NR)
        && available();
    if !ok {
        return false;
    }
    let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    // SAFETY: the panel lengths, the 6 rows of 16 within `c` at stride `ldc`, the 16 bias
    // values (when given) and the CPU features (AVX2, FMA) were checked just above.
    unsafe {
        kernel_6x16_fused(
            kc,
            a.as_ptr(),
            b.as_ptr(),
            c.as_mut_ptr(),
            ldc,
            !first,
            bias,
            mode,
        );
    }
    true
}

/// The activations [`kernel_6x16_fused`] applies in registers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clamp {
    None,
    Relu,
    Relu6,
}

/// `c = tile (+ c when accumulate) (+ bias when non-null)`, then the clamp.
///
/// # Safety
/// AVX2 and FMA must be available; `a` valid for `kc * 6` reads, `b` for `kc * 16` reads,
/// `bias` null or valid for 16 reads, `c` for reads and writes of `c[r * ldc + j]`, `r < 6`,
/// `j < 16`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16_fused(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    bias: *const f32,
    mode: Clamp,
) {
    let mut acc: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc {
        // SAFETY: `bp` walks `kc` rows of 16 values and `ap` `kc` columns of 6 values, within
        // the bounds the caller guarantees.
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (r, cr) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(r));
                cr[0] = _mm256_fmadd_ps(av, b0, cr[0]);
                cr[1] = _mm256_fmadd_ps(av, b1, cr[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    // SAFETY: 16 bias values when non-null, as the caller guarantees.
    let bias =
        (!bias.is_null()).then(|| unsafe { [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))] });
    let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
    // NaN exactly as the scalar epilogue: `x.max(0.0)` turns it into 0 (`maxps` returns its
    // second operand when either is NaN), `x.clamp(0.0, 6.0)` passes it on (bounds first).
    let finish = |v: __m256| match mode {
        Clamp::None => v,
        Clamp::Relu => _mm256_max_ps(v, zero),
        Clamp::Relu6 => _mm256_min_ps(six, _mm256_max_ps(zero, v)),
    };
    for (r, cr) in acc.iter().enumerate() {
        // SAFETY: row `r` reads and writes c[r*ldc .. r*ldc+16], inside the bounds the
        // caller guarantees.
        unsafe {
            let row = c.add(r * ldc);
            let mut v = *cr;
            if accumulate {
                // `C + T`, the order of the tile path's `*cv += *tv`.
                v[0] = _mm256_add_ps(_mm256_loadu_ps(row), v[0]);
                v[1] = _mm256_add_ps(_mm256_loadu_ps(row.add(8)), v[1]);
            }
            if let Some([b0, b1]) = bias {
                v[0] = _mm256_add_ps(v[0], b0);
                v[1] = _mm256_add_ps(v[1], b1);
            }
            _mm256_storeu_ps(row, finish(v[0]));
            _mm256_storeu_ps(row.add(8), finish(v[1]));
        }
    }
}

/// Safe wrapper of the strided micro-kernel: `A` row-major with rows `lda` apart (`a` holds
/// rows 0..6 from their column `pc`); checks the lengths and the CPU features itself.
fn micro_6x16_strided(kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]) {
    if kc == 0
        || lda < kc
        || a.len() < (MR - 1) * lda + kc
        || b.len() < kc * NR
        || out.len() < MR * NR
        || !available()
    {
        out.fill(f32::NAN);
        return;
    }
    // SAFETY: the lengths and the CPU features (AVX2, FMA) were checked just above.
    unsafe { kernel_6x16_strided(kc, a.as_ptr(), lda, b.as_ptr(), out.as_mut_ptr()) }
}

/// # Safety
/// AVX2 and FMA must be available; `a` valid for reads of `a[r * lda + kk]`, `r < 6`,
/// `kk < kc`; `b` for `kc * 16` reads; `out` for `96` writes.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16_strided(kc: usize, a: *const f32, lda: usize, b: *const f32, out: *mut f32) {
    let mut c: [[__m256; 2]; MR] = [[_mm256_setzero_ps(); 2]; MR];
    let mut bp = b;
    for kk in 0..kc {
        // SAFETY: `bp` walks `kc` rows of 16 values; `a[r * lda + kk]` with r < 6, kk < kc is
        // within the bounds the caller guarantees.
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (r, cr) in c.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                cr[0] = _mm256_fmadd_ps(av, b0, cr[0]);
                cr[1] = _mm256_fmadd_ps(av, b1, cr[1]);
            }
            bp = bp.add(NR);
        }
    }
    for (r, cr) in c.iter().enumerate() {
        // SAFETY: row `r` writes out[r*16 .. r*16+16], inside the 96 the caller guarantees.
        unsafe {
            _mm256_storeu_ps(out.add(r * NR), cr[0]);
            _mm256_storeu_ps(out.add(r * NR + 8), cr[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sgemm::tests::{check_errors, check_tier};

    #[test]
    fn avx2_matches_oracle() {
        if !super::available() {
            println!("sgemm/avx2: skipped: no AVX2");
            return;
        }
        check_tier("avx2", super::sgemm);
        check_errors(super::sgemm);
    }
}
