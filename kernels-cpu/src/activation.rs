//! Tuned elementwise activations, forward and backward, plus the machinery the other tuned
//! elementwise modules share: [`Isa`] (which build of a kernel body runs), the `isa_call!`
//! macro that picks the AVX2 + FMA build of a safe generic body, a vectorisable `exp`, and
//! the element-count threshold below which a kernel stays on the calling thread.
//!
//! Tiers: the reference (the f64 oracle), the portable safe bodies written so LLVM vectorises
//! them, and the same bodies compiled with AVX2 + FMA enabled
//! (`crate::x86_64::elementwise_avx2`). Sigmoid and the tanh derivative use the vectorised
//! `exp` (cephes polynomial, ~1 ulp); tanh itself uses `f32::tanh`; the two GELUs go through
//! the reference's f64 formulas (they need `erf`, and their f32 forms cancel in the left tail).

use crate::error::{Result, check_len};
use crate::parallel::par_chunks_mut;
pub use crate::reference::activation::Activation;

/// Which build of a tuned kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The f64-accumulating oracle in [`crate::reference`].
    Reference,
    /// The safe generic body compiled for the baseline target.
    Portable,
    /// The same body compiled with AVX2 + FMA enabled (x86_64, when the CPU has them).
    Avx2,
}

impl Isa {
    /// The build the process-wide [`crate::dispatch`] tier asks for: `Avx2` under `best`
    /// when the CPU has AVX2 and FMA.
    pub fn current() -> Self {
        match crate::dispatch::kernels().tier {
            crate::Tier::Reference => Self::Reference,
            crate::Tier::Portable => Self::Portable,
            crate::Tier::Best => Self::best(),
        }
    }

    /// The fastest build this CPU runs.
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::elementwise_avx2::available() {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// Every build this CPU can run (what the tests iterate).
    pub fn all() -> Vec<Self> {
        let mut v = vec![Self::Reference, Self::Portable];
        if Self::best() == Self::Avx2 {
            v.push(Self::Avx2);
        }
        v
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Portable => "portable",
            Self::Avx2 => "avx2+fma",
        }
    }
}

/// `isa_call!(isa, core_fn(args...))` runs `crate::x86_64::elementwise_avx2::core_fn` (the
/// AVX2 + FMA build of the same body) when `isa` is [`Isa::Avx2`], else `core_fn` itself.
macro_rules! isa_call {
    ($isa:expr, $core:ident ( $($a:expr),* $(,)? )) => {{
        #[cfg(target_arch = "x86_64")]
        let r = if $isa == $crate::activation::Isa::Avx2 {
            $crate::x86_64::elementwise_avx2::$core($($a),*)
        } else {
            $core($($a),*)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let r = $core($($a),*);
        r
    }};
}
pub(crate) use isa_call;

/// Fewest elements per thread worth a pool hand-off for a streaming elementwise kernel.
/// Measured 2026-11-25 on this 2-core VM (shared, so noisy; AVX2 relu, best of 200, the
/// `bench_elementwise` test): a 2-thread hand-off costs ~11 us; relu on 2^16 elements takes
/// 4.7 us on 1 thread vs 11.3 on 2, on 2^18 21 us vs 33 us; so only work of well over 2^17
/// elements per thread is split.
#[cfg(not(test))]
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 17;
/// Tiny under test, so the threaded paths (chunking, merging partial sums) run on the small
/// ragged test shapes too.
#[cfg(test)]
pub(crate) const PAR_MIN_ELEMS: usize = 64;

/// Threads to use for `elems` elements of streaming work on at most `threads` threads.
pub(crate) fn threads_for(elems: usize, threads: usize) -> usize {
    threads.clamp(1, (elems / PAR_MIN_ELEMS).max(1))
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to an integer
/// (vectorises without SSE4.1's `roundps`).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// ln 2 split so `k * LN2_HI` is exact for `|k| < 2^15` (cephes).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `exp(x)` for `x <= 0` (and NaN), ~1 ulp: Cody-Waite reduction to `r` in `[-ln2/2, ln2/2]`,
/// cephes' degree-7 polynomial, and a scale by `2^k` split in two so results down to the
/// denormals stay right. Branch-free, so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    // Below -104 the result rounds to 0 in f32; the comparison keeps NaN as NaN.
    let x = if x < -104.0 { -104.0 } else { x };
    let kf = x * LOG2E + ROUND_MAGIC;
    let k = kf - ROUND_MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // k is an integer in [-150, 0]: two factors 2^k1 * 2^k2, each normal. `kf` lies in
    // [2^23, 2^24), where the ulp is 1, so its low bits are k itself; reading them instead of
    // `k as i32` (a saturating cast) keeps the loop vectorised: measured 2026-11-25, sigmoid
    // on 1M went from 1.63 ms to 0.92 ms (AVX2). A NaN gives garbage scales times a NaN.
    let ki = (kf.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let k1 = ki >> 1;
    let k2 = ki.wrapping_sub(k1);
    let s1 = f32::from_bits((k1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((k2.wrapping_add(127) as u32) << 23);
    y * s1 * s2
}

/// `with_act!(act, |f| body)` runs `body` with `f` bound to a per-element closure computing
/// `act`, one monomorphised copy of `body` per activation, so loops over `f` have no
/// per-element branch on the activation. Callers store `f(x)` into a slice they do not read
/// (an in-place `*v = if *v > 0.0 { *v } else { 0.0 }` becomes a conditional, masked store:
/// `vmaskmovps`, measured 3x slower than the plain loop on Zen 4).
macro_rules! with_act {
    ($act:expr, |$f:ident| $body:expr) => {{
        use $crate::activation::{Activation, exp_nonpos};
        match $act {
            // `max` maps NaN to 0 like the oracle's `x > 0 ? x : 0`.
            Activation::Relu => {
                let $f = |v: f32| v.max(0.0);
                $body
            }
            Activation::Relu6 => {
                let $f = |v: f32| v.clamp(0.0, 6.0);
                $body
            }
            Activation::LeakyRelu(alpha) => {
                let a = alpha as f32;
                let $f = move |v: f32| if v > 0.0 { v } else { a * v };
                $body
            }
            Activation::Sigmoid => {
                let $f = |v: f32| {
                    let e = exp_nonpos(-v.abs());
                    let s = 1.0 / (1.0 + e);
                    if v >= 0.0 { s } else { e * s }
                };
                $body
            }
            Activation::Tanh => {
                let $f = |v: f32| v.tanh();
                $body
            }
            Activation::HardSwish => {
                let $f = |v: f32| v * (v + 3.0).clamp(0.0, 6.0) / 6.0;
                $body
            }
            Activation::HardSigmoid => {
                let $f = |v: f32| (v + 3.0).clamp(0.0, 6.0) / 6.0;
                $body
            }
            // The GELUs go through the oracle's f64 formulas (see the module doc).
            act @ (Activation::Gelu | Activation::GeluTanh) => {
                let $f = move |v: f32| act.apply(f64::from(v)) as f32;
                $body
            }
        }
    }};
}
pub(crate) use with_act;

/// Forward body: `y = act(x)`.
#[inline(always)]
pub(crate) fn act_core(act: Activation, x: &[f32], y: &mut [f32]) {
    with_act!(act, |f| {
        for (yv, &v) in y.iter_mut().zip(x) {
            *yv = f(v);
        }
    })
}

/// Backward body: `dx = dy * act'(x)`.
#[inline(always)]
pub(crate) fn act_grad_core(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let it = dx.iter_mut().zip(x.iter().zip(dy));
    match act {
        Activation::Relu => it.for_each(|(d, (&x, &g))| *d = if x > 0.0 { g } else { 0.0 }),
        Activation::Relu6 => {
            it.for_each(|(d, (&x, &g))| *d = if x > 0.0 && x < 6.0 { g } else { 0.0 })
        }
        Activation::LeakyRelu(alpha) => {
            let a = alpha as f32;
            it.for_each(|(d, (&x, &g))| *d = if x > 0.0 { g } else { a * g });
        }
        // s (1 - s) = e / (1 + e)^2 with e = exp(-|x|): no cancellation in either tail.
        Activation::Sigmoid => it.for_each(|(d, (&x, &g))| {
            let e = exp_nonpos(-x.abs());
            let q = 1.0 + e;
            *d = g * (e / (q * q));
        }),
        // 1 - tanh^2 = 4e / (1 + e)^2 with e = exp(-2|x|): accurate where tanh saturates.
        Activation::Tanh => it.for_each(|(d, (&x, &g))| {
            let e = exp_nonpos(-2.0 * x.abs());
            let q = 1.0 + e;
            *d = g * (4.0 * e / (q * q));
        }),
        Activation::HardSwish => it.for_each(|(d, (&x, &g))| {
            let s = if x < -3.0 {
                0.0
            } else if x <= 3.0 {
                x / 3.0 + 0.5
            } else {
                1.0
            };
            *d = g * s;
        }),
        Activation::HardSigmoid => it.for_each(|(d, (&x, &g))| {
            *d = if x > -3.0 && x < 3.0 { g / 6.0 } else { 0.0 };
        }),
        Activation::Gelu | Activation::GeluTanh => it.for_each(|(d, (&x, &g))| {
            *d = (f64::from(g) * act.derivative(f64::from(x))) as f32;
        }),
    }
}

/// `y[i] = act(x[i])` with the dispatched build ([`Isa::current`]) on up to `threads` threads.
pub fn activation(act: Activation, x: &[f32], y: &mut [f32], threads: usize) -> Result<()> {
    activation_with(Isa::current(), act, x, y, threads)
}

/// [`activation`] with an explicit build.
pub fn activation_with(
    isa: Isa,
    act: Activation,
    x: &[f32],
    y: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::activation::activation(act, x, y);
    }
    // The reference validates the slope; do the same before touching the data.
    crate::reference::activation::activation::<f32>(act, &[], &mut [])?;
    check_len("activation", "y", x.len(), y.len())?;
    par_chunks_mut(y, 1, threads_for(x.len(), threads), |first, yc| {
        let xc = &x[first..first + yc.len()];
        isa_call!(isa, act_core(act, xc, yc));
        Ok(())
    })
}

/// `dx[i] = dy[i] * act'(x[i])` (from the activation's input `x`), dispatched build.
pub fn activation_grad(
    act: Activation,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    activation_grad_with(Isa::current(), act, x, dy, dx, threads)
}

/// [`activation_grad`] with an explicit build.
pub fn activation_grad_with(
    isa: Isa,
    act: Activation,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return crate::reference::activation::activation_grad(act, x, dy, dx);
    }
    crate::reference::activation::activation_grad::<f32>(act, &[], &[], &mut [])?;
    check_len("activation_grad", "dy", x.len(), dy.len())?;
    check_len("activation_grad", "dx", x.len(), dx.len())?;
    par_chunks_mut(dx, 1, threads_for(x.len(), threads), |first, dc| {
        let r = first..first + dc.len();
        isa_call!(isa, act_grad_core(act, &x[r.clone()], &dy[r], dc));
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::{assert_close, rand_range, rng};

    pub(crate) fn f32v(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&a| a as f32).collect()
    }

    pub(crate) fn f64v(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| f64::from(a)).collect()
    }

    /// Asserts `||got - want|| <= tol * max(||want||, floor)`, for sums of many signed terms:
    /// they may cancel to far below the size of their terms (`floor`), where an error
    /// relative to the result alone measures the data's conditioning, not the kernel.
    #[track_caller]
    pub(crate) fn assert_close_floor(what: &str, got: &[f64], want: &[f64], floor: f64, tol: f64) {
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|a| a * a).sum::<f64>().sqrt();
        let err = norm(&mut got.iter().zip(want).map(|(a, b)| a - b));
        let scale = norm(&mut want.iter().copied()).max(floor);
        assert!(
            err <= tol * scale && got.len() == want.len(),
            "{what}: error {err:e} > {tol:e} * {scale:e}"
        );
    }

    const ALL: [Activation; 9] = [
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu(0.1),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSwish,
        Activation::HardSigmoid,
        Activation::Gelu,
        Activation::GeluTanh,
    ];

    #[test]
    fn exp_is_within_2e_7_relative() {
        let mut worst = 0.0f64;
        let mut x = -103.0f32;
        while x <= 0.0 {
            let got = f64::from(exp_nonpos(x));
            let want = f64::from(x).exp();
            if want > 1e-37 {
                worst = worst.max((got - want).abs() / want);
            }
            x += 0.00731;
        }
        println!("exp_nonpos worst relative error {worst:e}");
        assert!(worst < 2e-7, "{worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpos(f32::NAN).is_nan());
        assert!(exp_nonpos(-100.0) > 0.0);
    }

    #[test]
    fn every_isa_matches_reference() {
        let mut r = rng("activation::every_isa_matches_reference");
        for isa in Isa::all() {
            println!("activation: isa {}", isa.name());
            for act in ALL {
                for n in [1usize, 3, 7, 13, 17, 33, 1000, 70_001] {
                    for threads in [1, 2] {
                        let x = f32v(&rand_range(&mut r, n, -8.0, 8.0));
                        let dy = f32v(&rand_range(&mut r, n, -1.0, 1.0));
                        let (mut y, mut dx) = (vec![f32::NAN; n], vec![f32::NAN; n]);
                        let (mut yr, mut dxr) = (vec![0.0f64; n], vec![0.0f64; n]);
                        activation_with(isa, act, &x, &mut y, threads).unwrap();
                        activation_grad_with(isa, act, &x, &dy, &mut dx, threads).unwrap();
                        let (x64, dy64) = (f64v(&x), f64v(&dy));
                        crate::reference::activation::activation(act, &x64, &mut yr).unwrap();
                        crate::reference::activation::activation_grad(act, &x64, &dy64, &mut dxr)
                            .unwrap();
                        let what = format!("{act:?}/{}/n={n}/t={threads}", isa.name());
                        assert_close(&format!("{what} y"), &f64v(&y), &yr, 1e-6);
                        // dx = dy * f'(x), and f' is itself a difference of terms of size
                        // ~1 for some activations (hard-swish: x/3 + 1/2 near x = -1.5), so
                        // the error scale is |dy|, not the possibly cancelled result.
                        let dy_norm = dy64.iter().map(|v| v * v).sum::<f64>().sqrt();
                        assert_close_floor(&format!("{what} dx"), &f64v(&dx), &dxr, dy_norm, 1e-6);
                    }
                }
            }
        }
    }

    /// Best wall time of `reps` runs of `f`, in seconds.
    pub(crate) fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
        f();
        (0..reps)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Timings for the report (not a test): `cargo test --release -p spore-kernels-cpu
    /// bench_elementwise -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_elementwise() {
        use crate::batch_norm::*;
        let mut r = rng("bench_elementwise");
        let (rows, c) = (32 * 28 * 28, 64);
        let n = rows * c;
        let x = f32v(&rand_range(&mut r, n, -2.0, 2.0));
        let dy = f32v(&rand_range(&mut r, n, -1.0, 1.0));
        let g = vec![1.1f32; c];
        let b = vec![0.1f32; c];
        let mv = vec![0.5f32; c];
        let (mut y, mut dx) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut rm, mut rv, mut sm, mut ss, mut dg, mut db) = (
            vec![0.0f32; c],
            vec![1.0f32; c],
            vec![0.0f32; c],
            vec![0.0f32; c],
            vec![0.0f32; c],
            vec![0.0f32; c],
        );
        let pi = BatchNormParams {
            rows,
            channels: c,
            eps: 1e-5,
        };
        let pt = BatchNormTrainParams {
            rows,
            channels: c,
            eps: 1e-5,
            momentum: 0.1,
        };
        let bytes = 2.0 * (n * 4) as f64;
        let report = |what: &str, isa: Isa, t: usize, secs: f64, gb: f64| {
            println!(
                "{what:<28} {:<9} t={t}: {:8.3} ms  {:6.2} GB/s (2x tensor bytes)",
                isa.name(),
                secs * 1e3,
                gb / secs / 1e9
            );
        };
        for isa in Isa::all() {
            let (reps, threads): (usize, &[usize]) = if isa == Isa::Reference {
                (1, &[1])
            } else {
                (20, &[1, 2])
            };
            for &t in threads {
                let s = best_of(reps, || {
                    batch_norm_inference_with(isa, pi, &x, &mv, &mv, &g, &b, None, t, &mut y)
                        .unwrap()
                });
                report("bn inference 32x28x28x64", isa, t, s, bytes);
                let s = best_of(reps, || {
                    batch_norm_train_with(
                        isa, pt, &x, &g, &b, &mut rm, &mut rv, &mut y, &mut sm, &mut ss, t,
                    )
                    .unwrap()
                });
                report("bn train fwd 32x28x28x64", isa, t, s, bytes);
                let s = best_of(reps, || {
                    batch_norm_grad_with(
                        isa, pt, &x, &dy, &g, &sm, &ss, &mut dx, &mut dg, &mut db, t,
                    )
                    .unwrap()
                });
                report("bn backward 32x28x28x64", isa, t, s, bytes);
            }
        }
        // Where a second thread starts to pay: relu (pure streaming) at growing sizes.
        for n in [1usize << 12, 1 << 14, 1 << 16, 1 << 18] {
            let xs = f32v(&rand_range(&mut r, n, -1.0, 1.0));
            let mut ys = vec![0.0f32; n];
            let isa = Isa::best();
            let one = best_of(200, || {
                crate::parallel::par_chunks_mut(&mut ys, 1, 1, |i, yc| {
                    act_core(Activation::Relu, &xs[i..i + yc.len()], yc);
                    Ok(())
                })
                .unwrap()
            });
            let two = best_of(200, || {
                crate::parallel::par_chunks_mut(&mut ys, 1, 2, |i, yc| {
                    act_core(Activation::Relu, &xs[i..i + yc.len()], yc);
                    Ok(())
                })
                .unwrap()
            });
            println!(
                "relu n={n:>7} {}: 1 thread {:7.1} us, 2 threads {:7.1} us",
                isa.name(),
                one * 1e6,
                two * 1e6
            );
        }
        // Softmax 256 x 1000, relu on 1M, Adam on 1M.
        let xs = f32v(&rand_range(&mut r, 256 * 1000, -5.0, 5.0));
        let mut ys = vec![0.0f32; xs.len()];
        let xr = f32v(&rand_range(&mut r, 1 << 20, -1.0, 1.0));
        let mut yr = vec![0.0f32; xr.len()];
        let gr = f32v(&rand_range(&mut r, 1 << 20, -1.0, 1.0));
        let (mut w, mut m, mut v) = (xr.clone(), vec![0.0f32; xr.len()], vec![0.0f32; xr.len()]);
        let ap = crate::optimizer::AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            step: 3,
        };
        for isa in Isa::all() {
            let reps = if isa == Isa::Reference { 2 } else { 50 };
            for t in [1, 2] {
                let s = best_of(reps, || {
                    crate::softmax::softmax_with(isa, 256, 1000, &xs, &mut ys, t).unwrap()
                });
                println!(
                    "softmax 256x1000             {:<9} t={t}: {:8.3} ms  {:6.2} Gelem/s",
                    isa.name(),
                    s * 1e3,
                    xs.len() as f64 / s / 1e9
                );
                let s = best_of(reps, || {
                    activation_with(isa, Activation::Relu, &xr, &mut yr, t).unwrap()
                });
                report("relu 1M", isa, t, s, 2.0 * (xr.len() * 4) as f64);
                let s = best_of(reps, || {
                    activation_with(isa, Activation::Sigmoid, &xr, &mut yr, t).unwrap()
                });
                report("sigmoid 1M", isa, t, s, 2.0 * (xr.len() * 4) as f64);
                let s = best_of(reps, || {
                    crate::optimizer::adam_with(isa, ap, &mut w, &gr, &mut m, &mut v, t).unwrap()
                });
                // Adam streams 4 reads + 3 writes of the parameter size.
                report("adam 1M (7x bytes)", isa, t, s, 7.0 * (xr.len() * 4) as f64);
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f32, -2.0, 3.0];
        for isa in Isa::all() {
            let mut y = [0.0f32; 2];
            assert!(activation_with(isa, Activation::Relu, &x, &mut y, 1).is_err());
            let mut y3 = [0.0f32; 3];
            let nan = Activation::LeakyRelu(f64::NAN);
            assert!(activation_with(isa, nan, &x, &mut y3, 1).is_err());
            assert!(activation_grad_with(isa, Activation::Tanh, &x, &x[..2], &mut y3, 2).is_err());
            assert!(activation_grad_with(isa, Activation::Tanh, &x, &x, &mut y, 2).is_err());
        }
    }
}
