//! AVX-512F sgemm: the shared blocked driver with a 14x32 register block — 28 zmm
//! accumulators, 2 zmm for the `B` row, the `A` value broadcast from memory (`{1to16}`), 31 of
//! the 32 registers. Zen 4 runs a 512-bit FMA as two 256-bit halves, so the peak is the AVX2
//! one; the gain is half the instructions per flop, a 4.7x larger register block (fewer loads
//! per FMA) and tiles written straight into `C` with masked stores (no tile buffer).

use crate::error::KernelError;
use crate::sgemm::{Blocking, Micro, SgemmParams, run_blocked_c};
use std::arch::x86_64::{
    __m512, __mmask16, _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

/// Rows of the register block.
pub(crate) const MR: usize = 14;
/// Columns of the register block (two zmm vectors).
pub(crate) const NR: usize = 32;

/// Cache blocking: the `MC x KC` block of `A` (168 x 512 x 4 = 336 KiB) in the 1 MiB L2, the
/// `KC x NR` panel of `B` (64 KiB) streamed from L2 at 128 bytes per 28 FMAs, the `KC x NC`
/// block of `B` (6 MiB) in L3. Measured 2026-11-26 (1 thread, GFLOP/s per own CPU second at
/// 512 / 1024 / 1024 / 2048, shared noisy VM): KC,MC = 384,168: 95.6 98.4 98.2 101.1;
/// 512,112: 94.4 98.9 98.8 102.1; **512,168: 100.0 101.6 101.3 102.8**; 512,224: 100.0 99.7
/// 99.6 103.9; 768,112: 98.9 98.8 99.3 100.0; 1024,84: 96.0 102.3 102.7 101.8; 256,224: 95.8
/// 97.4 97.7 100.9.
pub(crate) const BLOCKING: Blocking = Blocking {
    kc: 512,
    mc: 168,
    nc: 3072,
};

/// Widest `n` for which the AVX2 tier (which reads a row-major `A` in place instead of
/// packing it) runs instead: see `DIRECT_A_MAX_N` in `crate::sgemm`.
const AVX2_MAX_N: usize = 64;

/// The tile-buffer micro-kernel (only reached if the driver ever needs a tile buffer).
const MICRO: Micro = Micro {
    packed: micro_tile,
    strided: None,
    fused: None,
};

/// Whether this CPU can run the AVX-512 tier.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// `C = act(op(A) @ op(B) + bias)`, AVX-512F tier. Checks every length first, and returns an
/// error (never executes an illegal instruction) on a CPU without AVX-512F.
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
            kernel: "sgemm_avx512",
            param: "cpu",
            reason: "this CPU lacks AVX-512F".into(),
        });
    }
    if p.mm.n <= AVX2_MAX_N && !p.mm.transpose_a && super::sgemm_avx2::available() {
        // Narrow products: each A panel meets at most two B panels, so packing A costs as
        // much as the product; the AVX2 tier reads A in place.
        return super::sgemm_avx2::sgemm(p, a, b, bias, c);
    }
    run_blocked_c::<MR, NR>(p, a, b, bias, c, MICRO, micro_14x32, BLOCKING)
}

/// Safe wrapper of the micro-kernel writing `C` (a [`crate::sgemm::CKernel`]): checks the
/// panel and tile bounds and the CPU feature itself.
#[allow(clippy::too_many_arguments)]
fn micro_14x32(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    first: bool,
) {
    let c_need = (mr.max(1) - 1)
        .checked_mul(ldc)
        .and_then(|x| x.checked_add(nr));
    let ok = a.len() >= kc * MR
        && b.len() >= kc * NR
        && (1..=MR).contains(&mr)
        && (1..=NR).contains(&nr)
        && ldc >= nr
        && c_need.is_some_and(|need| c.len() >= need)
        && available();
    if !ok {
        // Unreachable from the driver, which hands out exact panels; stay safe regardless.
        c.fill(f32::NAN);
        return;
    }
    // SAFETY: the panel lengths, the tile bounds within `c` and AVX-512F were checked above.
    unsafe {
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        kernel_14x32(kc, a, b, c, ldc, mr, nr, first)
    }
}

/// Prefetches every cache line of `s` into L2: a hint (no effect on any result) that lets the
/// `A` packing of the driver fetch the next panel's rows while it packs the current one.
pub(crate) fn prefetch_l2(s: &[f32]) {
    let p = s.as_ptr();
    for i in (0..s.len()).step_by(16) {
        // SAFETY: `p + i` lies inside `s`; a prefetch reads nothing architecturally and never
        // faults (SSE, part of the x86_64 baseline).
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.add(i) as *const i8) }
    }
}

/// The [`crate::sgemm::MicroKernel`] form: the full tile into a `MR x NR` buffer.
fn micro_tile(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    micro_14x32(kc, a, b, out, NR, MR, NR, true);
}

/// Software prefetch distance, in `k` steps, for the `A` panel (56 bytes a step) ...
const PF_A: usize = 16;
/// ... and for the `B` panel (128 bytes a step). Measured 2026-11-26 (1024^3, 1 thread, per
/// own CPU second): C rows into L2 at the start of the tile, no A/B prefetch: 98.4; plus
/// A 16 / B 32 steps ahead: 98.7 (within noise; kept as it never lost); C into L1 instead:
/// 94-96 (the 14 rows of a power-of-two `ldc` share one L1 set and evict each other);
/// no C prefetch: 94.5.
const PF_B: usize = 32;

/// One `k` step: two `B` vectors, 14 broadcast `A` values, 28 FMAs.
macro_rules! step {
    ($acc:ident, $ap:expr, $bp:expr) => {{
        let b0 = _mm512_loadu_ps($bp);
        let b1 = _mm512_loadu_ps($bp.add(16));
        for r in 0..MR {
            let av = _mm512_set1_ps(*$ap.add(r));
            $acc[r][0] = _mm512_fmadd_ps(av, b0, $acc[r][0]);
            $acc[r][1] = _mm512_fmadd_ps(av, b1, $acc[r][1]);
        }
    }};
}

/// # Safety
/// AVX-512F must be available; `a` valid for `kc * 14` reads, `b` for `kc * 32` reads; `c`
/// valid for reads and writes of `c[r * ldc + j]`, `r < mr <= 14`, `j < nr <= 32`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_14x32(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    first: bool,
) {
    // Pull the tile's rows of C into L2 while the k loop runs: they are read (or written)
    // only at the end. `wrapping_add`: a prefetch never faults, the address may be past `c`.
    for r in 0..MR {
        if r < mr {
            let row = c.wrapping_add(r * ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T1>(row);
            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(124));
        }
    }
    let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kc / 4 {
        // SAFETY: four steps read `ap[0..4*14]` and `bp[0..4*32]`, within the `kc` steps the
        // caller guarantees (this loop runs kc / 4 times).
        unsafe {
            // Four steps read 512 bytes of B (8 lines) and 224 of A (4 lines at most).
            let pb = bp.wrapping_add(PF_B * NR) as *const i8;
            for l in 0..8 {
                _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(64 * l));
            }
            let pa = ap.wrapping_add(PF_A * MR) as *const i8;
            for l in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(pa.wrapping_add(64 * l));
            }
            step!(acc, ap, bp);
            step!(acc, ap.add(MR), bp.add(NR));
            step!(acc, ap.add(2 * MR), bp.add(2 * NR));
            step!(acc, ap.add(3 * MR), bp.add(3 * NR));
            ap = ap.add(4 * MR);
            bp = bp.add(4 * NR);
        }
    }
    for _ in 0..kc % 4 {
        // SAFETY: the remaining kc % 4 steps, still within the caller's `kc`.
        unsafe {
            step!(acc, ap, bp);
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
    }
    let m0: __mmask16 = if nr >= 16 {
        0xffff
    } else {
        ((1u32 << nr) - 1) as u16
    };
    let m1: __mmask16 = if nr <= 16 {
        0
    } else {
        ((1u32 << (nr - 16)) - 1) as u16
    };
    for (r, ar) in acc.iter().enumerate() {
        if r >= mr {
            break;
        }
        // SAFETY: row `r < mr` of the tile; lanes past `nr` are masked off (and the second
        // vector is touched only when `nr > 16`, so `row + 16` stays inside the row).
        unsafe {
            let row = c.add(r * ldc);
            if nr == NR {
                let (mut v0, mut v1) = (ar[0], ar[1]);
                if !first {
                    v0 = _mm512_add_ps(_mm512_loadu_ps(row), v0);
                    v1 = _mm512_add_ps(_mm512_loadu_ps(row.add(16)), v1);
                }
                _mm512_storeu_ps(row, v0);
                _mm512_storeu_ps(row.add(16), v1);
            } else {
                let mut v0 = ar[0];
                if !first {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), v0);
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                if m1 != 0 {
                    let mut v1 = ar[1];
                    if !first {
                        v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), v1);
                    }
                    _mm512_mask_storeu_ps(row.add(16), m1, v1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sgemm::tests::{check_errors, check_tier};

    #[test]
    fn avx512_matches_oracle() {
        if !super::available() {
            println!("sgemm/avx512: skipped: no AVX-512F");
            return;
        }
        println!("sgemm/avx512: running avx512f 14x32");
        check_tier("avx512", super::sgemm);
        check_errors(super::sgemm);
    }

    /// `struct timespec` of 64-bit Linux.
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }

    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }

    /// Nanoseconds of CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`), so timings on
    /// the shared machine do not count the time other processes ran.
    fn cpu_ns() -> u64 {
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable `struct timespec`; clock 3 is
        // CLOCK_THREAD_CPUTIME_ID on Linux.
        let rc = unsafe { clock_gettime(3, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.sec as u64) * 1_000_000_000 + ts.nsec as u64
    }

    /// GFLOP/s of the AVX2 and AVX-512 tiers, best of several runs:
    /// `cargo test --release -p spore-kernels-cpu sgemm_avx512_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn sgemm_avx512_timing() {
        use crate::sgemm::{SgemmFn, SgemmParams};
        if !super::available() {
            return;
        }
        let sizes: Vec<usize> = std::env::var("SGEMM_SIZES")
            .ok()
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_else(|| vec![256, 512, 1024, 2048]);
        let tiers: [(&str, SgemmFn); 2] = [
            ("avx2", crate::x86_64::sgemm_avx2::sgemm),
            ("avx512", super::sgemm),
        ];
        let mut r = crate::testutil::rng("sgemm_avx512_timing");
        // The micro-kernel alone on cache-resident panels: its ceiling.
        let only = std::env::var("SGEMM_ONLY").unwrap_or_default();
        let micro_kcs: &[usize] = if only.is_empty() {
            &[64, 256, 384, 512]
        } else {
            &[]
        };
        for &kc in micro_kcs {
            let a: Vec<f32> = (0..kc * super::MR)
                .map(|_| r.uniform(-1.0, 1.0) as f32)
                .collect();
            let b: Vec<f32> = (0..kc * super::NR)
                .map(|_| r.uniform(-1.0, 1.0) as f32)
                .collect();
            let mut c = vec![0.0f32; super::MR * super::NR];
            let reps = 20_000_000 / kc;
            let cpu = cpu_ns();
            for i in 0..reps {
                super::micro_14x32(kc, &a, &b, &mut c, super::NR, super::MR, super::NR, i == 0);
            }
            let s = (cpu_ns() - cpu) as f64 * 1e-9;
            let fl = 2.0 * (super::MR * super::NR * kc * reps) as f64;
            println!(
                "micro 14x32 kc={kc}: {:.1} GFLOP/s per own CPU s",
                fl / s / 1e9
            );
        }
        // Few rows, many columns: the column split on 2 threads.
        for (m, n, k) in [(16usize, 4096usize, 1024usize), (28, 2048, 512)] {
            if !only.is_empty() && !only.starts_with("wide") {
                break;
            }
            let a: Vec<f32> = (0..m * k).map(|_| r.uniform(-1.0, 1.0) as f32).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.uniform(-1.0, 1.0) as f32).collect();
            let mut c = vec![0.0f32; m * n];
            for threads in [1, 2] {
                let mut p = SgemmParams::new(m, n, k);
                p.threads = threads;
                let mut best = f64::INFINITY;
                for _ in 0..50 {
                    let t = std::time::Instant::now();
                    super::sgemm(&p, &a, &b, None, &mut c).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let fl = 2.0 * (m * n * k) as f64;
                println!(
                    "sgemm {m}x{n}x{k} t={threads} avx512: {:.1} GFLOP/s",
                    fl / best / 1e9
                );
            }
        }
        for n in sizes {
            let a: Vec<f32> = (0..n * n).map(|_| r.uniform(-1.0, 1.0) as f32).collect();
            let b: Vec<f32> = (0..n * n).map(|_| r.uniform(-1.0, 1.0) as f32).collect();
            let mut c = vec![0.0f32; n * n];
            for threads in [1, 2] {
                for (name, f) in tiers {
                    if !only.is_empty() && only != format!("{name}/{threads}") {
                        continue;
                    }
                    let mut p = SgemmParams::new(n, n, n);
                    p.threads = threads;
                    let reps = (2e9 / (2.0 * (n * n * n) as f64)).clamp(3.0, 200.0) as usize;
                    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
                    for _ in 0..reps {
                        let (t, cpu) = (std::time::Instant::now(), cpu_ns());
                        f(&p, &a, &b, None, &mut c).unwrap();
                        best = best.min(t.elapsed().as_secs_f64());
                        best_cpu = best_cpu.min((cpu_ns() - cpu) as f64 * 1e-9);
                    }
                    let fl = 2.0 * (n * n * n) as f64;
                    // On one thread the calling thread's own CPU time (not counting the time
                    // the shared machine ran others) is the second figure.
                    println!(
                        "sgemm {n}^3 t={threads} {name}: {:.1} GFLOP/s wall, {:.1} per own CPU s",
                        fl / best / 1e9,
                        fl / best_cpu / 1e9
                    );
                }
            }
        }
    }
}
