//! Optimizer updates, in place on parameter and state slices, with PyTorch's semantics:
//!
//! * SGD: `p -= lr * (g + wd * p)`.
//! * Momentum (`torch.optim.SGD(momentum=mu)`, dampening 0): `b = g + wd * p`,
//!   `v = mu * v + b`, then `p -= lr * v`, or with Nesterov `p -= lr * (b + mu * v)`.
//!   A zero-initialised `v` reproduces PyTorch's first step (`v = b`).
//! * Adam (`torch.optim.Adam`, L2 weight decay `b = g + wd * p`) and AdamW (decoupled:
//!   `p *= 1 - lr * wd` first, `b = g`): `m = b1 m + (1 - b1) b`, `v = b2 v + (1 - b2) b^2`,
//!   `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)` at step `t >= 1`.
//!
//! No oracle existed for these ops, so the f64 reference lives here (`*_reference`, generic
//! over [`Real`], one obviously-correct loop each). The tuned bodies run in f32, 8/16 lanes
//! wide (pure streaming: the fused update touches each element once), threaded over
//! contiguous chunks above [`crate::activation`]'s element threshold.

use crate::activation::{Isa, isa_call, threads_for};
use crate::error::{KernelError, Result, check_len, check_param};
use crate::parallel::par_map;
use crate::reference::Real;
use std::sync::Mutex;

/// Plain SGD with L2 weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    /// Learning rate (finite).
    pub lr: f64,
    /// L2 weight decay (finite, >= 0).
    pub weight_decay: f64,
}

/// SGD with (heavy-ball or Nesterov) momentum, PyTorch semantics with dampening 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MomentumParams {
    /// Learning rate (finite).
    pub lr: f64,
    /// Momentum factor `mu` (finite, >= 0).
    pub momentum: f64,
    /// L2 weight decay (finite, >= 0).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// Adam / AdamW at step `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// Learning rate (finite).
    pub lr: f64,
    /// First-moment decay, in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment decay, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the bias-corrected `sqrt(v)` (finite, > 0).
    pub eps: f64,
    /// Weight decay (finite, >= 0): L2 in the gradient, or decoupled when `decoupled`.
    pub weight_decay: f64,
    /// AdamW: decay the parameter directly (`p *= 1 - lr * wd`) instead of through `g`.
    pub decoupled: bool,
    /// The 1-based step number `t` of this update (bias correction `1 - beta^t`).
    pub step: u64,
}

fn finite(kernel: &'static str, name: &'static str, v: f64, min: f64) -> Result<()> {
    check_param(kernel, name, v.is_finite() && v >= min, || {
        format!("must be finite and >= {min}, got {v}")
    })
}

impl SgdParams {
    fn validate(&self, k: &'static str) -> Result<()> {
        finite(k, "lr", self.lr, f64::MIN)?;
        finite(k, "weight_decay", self.weight_decay, 0.0)
    }
}

impl MomentumParams {
    fn validate(&self, k: &'static str) -> Result<()> {
        finite(k, "lr", self.lr, f64::MIN)?;
        finite(k, "momentum", self.momentum, 0.0)?;
        finite(k, "weight_decay", self.weight_decay, 0.0)
    }
}

impl AdamParams {
    fn validate(&self, k: &'static str) -> Result<()> {
        finite(k, "lr", self.lr, f64::MIN)?;
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            check_param(k, name, (0.0..1.0).contains(&b), || {
                format!("must be in [0, 1), got {b}")
            })?;
        }
        check_param(k, "eps", self.eps.is_finite() && self.eps > 0.0, || {
            format!("must be finite and positive, got {}", self.eps)
        })?;
        finite(k, "weight_decay", self.weight_decay, 0.0)?;
        check_param(k, "step", self.step >= 1, || "must be at least 1".into())
    }

    /// `(1 - beta1^t, 1 - beta2^t)`.
    fn bias_corrections(&self) -> (f64, f64) {
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }
}

/// Checks that every state slice is as long as the parameter.
fn check_lens(k: &'static str, n: usize, named: &[(&'static str, usize)]) -> Result<()> {
    named
        .iter()
        .try_for_each(|&(name, len)| check_len(k, name, n, len))
}

// ---------------------------------------------------------------------------------------
// The f64 reference.

/// Reference SGD step, in f64.
pub fn sgd_reference<T: Real>(p: SgdParams, param: &mut [T], grad: &[T]) -> Result<()> {
    const K: &str = "sgd";
    p.validate(K)?;
    check_lens(K, param.len(), &[("grad", grad.len())])?;
    for (w, g) in param.iter_mut().zip(grad) {
        let w64 = w.to_f64();
        *w = T::from_f64(w64 - p.lr * (g.to_f64() + p.weight_decay * w64));
    }
    Ok(())
}

/// Reference momentum step, in f64.
pub fn momentum_reference<T: Real>(
    p: MomentumParams,
    param: &mut [T],
    grad: &[T],
    velocity: &mut [T],
) -> Result<()> {
    const K: &str = "momentum";
    p.validate(K)?;
    check_lens(
        K,
        param.len(),
        &[("grad", grad.len()), ("velocity", velocity.len())],
    )?;
    for ((w, g), v) in param.iter_mut().zip(grad).zip(velocity.iter_mut()) {
        let w64 = w.to_f64();
        let b = g.to_f64() + p.weight_decay * w64;
        let v64 = p.momentum * v.to_f64() + b;
        let step = if p.nesterov {
            b + p.momentum * v64
        } else {
            v64
        };
        *v = T::from_f64(v64);
        *w = T::from_f64(w64 - p.lr * step);
    }
    Ok(())
}

/// Reference Adam / AdamW step, in f64.
pub fn adam_reference<T: Real>(
    p: AdamParams,
    param: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
) -> Result<()> {
    const K: &str = "adam";
    p.validate(K)?;
    check_lens(
        K,
        param.len(),
        &[("grad", grad.len()), ("m", m.len()), ("v", v.len())],
    )?;
    let (bc1, bc2) = p.bias_corrections();
    for (((w, g), m), v) in param
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut())
        .zip(v.iter_mut())
    {
        let mut w64 = w.to_f64();
        let mut b = g.to_f64();
        if p.decoupled {
            w64 *= 1.0 - p.lr * p.weight_decay;
        } else {
            b += p.weight_decay * w64;
        }
        let m64 = p.beta1 * m.to_f64() + (1.0 - p.beta1) * b;
        let v64 = p.beta2 * v.to_f64() + (1.0 - p.beta2) * b * b;
        let m_hat = m64 / bc1;
        let v_hat = v64 / bc2;
        *m = T::from_f64(m64);
        *v = T::from_f64(v64);
        *w = T::from_f64(w64 - p.lr * m_hat / (v_hat.sqrt() + p.eps));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bodies.

/// Body: `p -= lr * (g + wd * p)`.
#[inline(always)]
pub(crate) fn sgd_core(lr: f32, wd: f32, param: &mut [f32], grad: &[f32]) {
    for (w, &g) in param.iter_mut().zip(grad) {
        *w -= lr * (g + wd * *w);
    }
}

/// Body: one momentum step (see the module doc).
#[inline(always)]
pub(crate) fn momentum_core(
    lr: f32,
    mu: f32,
    wd: f32,
    nesterov: bool,
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
) {
    let it = param.iter_mut().zip(grad).zip(velocity.iter_mut());
    if nesterov {
        for ((w, &g), v) in it {
            let b = g + wd * *w;
            *v = mu * *v + b;
            *w -= lr * (b + mu * *v);
        }
    } else {
        for ((w, &g), v) in it {
            *v = mu * *v + (g + wd * *w);
            *w -= lr * *v;
        }
    }
}

/// Body: one Adam step with precomputed coefficients: `c1 = 1 - b1`, `c2 = 1 - b2` (from f64:
/// `1 - 0.999f32` is off by 1.3e-5 relative), `step = lr / bc1`, `rs = 1 / sqrt(bc2)`, `wd`
/// the L2 decay (0 for AdamW), `decay` the decoupled factor (1 for Adam).
#[allow(clippy::too_many_arguments)] // scalars precomputed once per call
#[inline(always)]
pub(crate) fn adam_core(
    step: f32,
    [b1, c1, b2, c2]: [f32; 4],
    eps: f32,
    rs: f32,
    wd: f32,
    decay: f32,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let it = param
        .iter_mut()
        .zip(grad)
        .zip(m.iter_mut().zip(v.iter_mut()));
    for ((w, &g), (m, v)) in it {
        let b = g + wd * *w;
        *m = b1 * *m + c1 * b;
        *v = b2 * *v + c2 * (b * b);
        *w = *w * decay - step * *m / (v.sqrt() * rs + eps);
    }
}

// ---------------------------------------------------------------------------------------
// Drivers.

/// One task's share: its parameter chunk, gradient chunk and state chunks.
type Chunk<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>);

/// Splits the parameter and its state slices into the same `tasks` contiguous chunks and
/// runs `f` on each chunk in parallel (each chunk behind its own uncontended lock, the safe
/// way to hand several `&mut` slices to one task).
fn par_zip<const S: usize>(
    threads: usize,
    param: &mut [f32],
    grad: &[f32],
    state: [&mut [f32]; S],
    f: impl Fn(&mut [f32], &[f32], &mut [&mut [f32]; S]) + Sync,
) -> Result<()> {
    let n = param.len();
    let t = threads_for(n, threads);
    if t <= 1 {
        let mut state = state;
        f(param, grad, &mut state);
        return Ok(());
    }
    let per = n.div_ceil(t);
    let mut chunks: Vec<Mutex<Chunk<'_>>> = Vec::new();
    let mut states: Vec<std::slice::ChunksMut<'_, f32>> =
        state.into_iter().map(|s| s.chunks_mut(per)).collect();
    for (pc, gc) in param.chunks_mut(per).zip(grad.chunks(per)) {
        let sc: Vec<&mut [f32]> = states.iter_mut().filter_map(|it| it.next()).collect();
        chunks.push(Mutex::new((pc, gc, sc)));
    }
    par_map(t, chunks.len(), |i| -> Result<()> {
        let mut guard = chunks[i].lock().unwrap_or_else(|e| e.into_inner());
        let (pc, gc, sc) = &mut *guard;
        let mut arr: [&mut [f32]; S] =
            std::mem::take(sc)
                .try_into()
                .map_err(|_| KernelError::Param {
                    kernel: "optimizer",
                    param: "state",
                    reason: "state slices split unevenly".into(),
                })?;
        f(pc, gc, &mut arr);
        Ok(())
    })?
    .into_iter()
    .collect()
}

/// SGD step, dispatched build, up to `threads` threads.
pub fn sgd(p: SgdParams, param: &mut [f32], grad: &[f32], threads: usize) -> Result<()> {
    sgd_with(Isa::current(), p, param, grad, threads)
}

/// [`sgd`] with an explicit build.
pub fn sgd_with(
    isa: Isa,
    p: SgdParams,
    param: &mut [f32],
    grad: &[f32],
    threads: usize,
) -> Result<()> {
    if isa == Isa::Reference {
        return sgd_reference(p, param, grad);
    }
    p.validate("sgd")?;
    check_lens("sgd", param.len(), &[("grad", grad.len())])?;
    let (lr, wd) = (p.lr as f32, p.weight_decay as f32);
    par_zip::<0>(threads, param, grad, [], |w, g, _| {
        isa_call!(isa, sgd_core(lr, wd, w, g));
    })
}

/// Momentum step (PyTorch SGD with momentum), dispatched build.
pub fn momentum(
    p: MomentumParams,
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    threads: usize,
) -> Result<()> {
    momentum_with(Isa::current(), p, param, grad, velocity, threads)
}

/// [`momentum`] with an explicit build.
pub fn momentum_with(
    isa: Isa,
    p: MomentumParams,
    param: &mut [f32],
    grad: &[f32],
    velocity: &mut [f32],
    threads: usize,
) -> Result<()> {
    const K: &str = "momentum";
    if isa == Isa::Reference {
        return momentum_reference(p, param, grad, velocity);
    }
    p.validate(K)?;
    check_lens(
        K,
        param.len(),
        &[("grad", grad.len()), ("velocity", velocity.len())],
    )?;
    let (lr, mu, wd) = (p.lr as f32, p.momentum as f32, p.weight_decay as f32);
    par_zip(threads, param, grad, [velocity], |w, g, [v]| {
        isa_call!(isa, momentum_core(lr, mu, wd, p.nesterov, w, g, v));
    })
}

/// Adam / AdamW step, dispatched build.
pub fn adam(
    p: AdamParams,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    threads: usize,
) -> Result<()> {
    adam_with(Isa::current(), p, param, grad, m, v, threads)
}

/// [`adam`] with an explicit build.
pub fn adam_with(
    isa: Isa,
    p: AdamParams,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    threads: usize,
) -> Result<()> {
    const K: &str = "adam";
    if isa == Isa::Reference {
        return adam_reference(p, param, grad, m, v);
    }
    p.validate(K)?;
    check_lens(
        K,
        param.len(),
        &[("grad", grad.len()), ("m", m.len()), ("v", v.len())],
    )?;
    let (bc1, bc2) = p.bias_corrections();
    let step = (p.lr / bc1) as f32;
    let rs = (1.0 / bc2.sqrt()) as f32;
    let (wd, decay) = if p.decoupled {
        (0.0, (1.0 - p.lr * p.weight_decay) as f32)
    } else {
        (p.weight_decay as f32, 1.0)
    };
    let betas = [p.beta1, 1.0 - p.beta1, p.beta2, 1.0 - p.beta2].map(|b| b as f32);
    let eps = p.eps as f32;
    par_zip(threads, param, grad, [m, v], |w, g, [m, v]| {
        isa_call!(isa, adam_core(step, betas, eps, rs, wd, decay, w, g, m, v));
    })
}

/// An [`adam`] implementation (a [`crate::dispatch::Kernels`] slot):
/// `(params, param, grad, m, v, threads)`.
pub type AdamFn = fn(AdamParams, &mut [f32], &[f32], &mut [f32], &mut [f32], usize) -> Result<()>;

/// The Adam slot of build `isa`, for the dispatch table.
pub fn adam_slot(isa: Isa) -> AdamFn {
    match isa {
        Isa::Reference => |p, w, g, m, v, t| adam_with(Isa::Reference, p, w, g, m, v, t),
        Isa::Portable => |p, w, g, m, v, t| adam_with(Isa::Portable, p, w, g, m, v, t),
        Isa::Avx2 => |p, w, g, m, v, t| adam_with(Isa::Avx2, p, w, g, m, v, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::tests::{assert_close_floor, f32v, f64v};
    use crate::testutil::{rand_range, rng};

    #[test]
    fn reference_matches_hand_computed_steps() {
        // SGD: p = 1, g = 0.5, lr 0.1, wd 0.2: 1 - 0.1 * (0.5 + 0.2) = 0.93.
        let mut w = [1.0f64];
        sgd_reference(
            SgdParams {
                lr: 0.1,
                weight_decay: 0.2,
            },
            &mut w,
            &[0.5],
        )
        .unwrap();
        assert!((w[0] - 0.93).abs() < 1e-15);
        // Adam's first step moves each parameter by lr * sign(g) (up to eps).
        let (mut w, mut m, mut v) = ([1.0f64, -2.0], [0.0; 2], [0.0; 2]);
        let p = AdamParams {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-12,
            weight_decay: 0.0,
            decoupled: false,
            step: 1,
        };
        adam_reference(p, &mut w, &[0.3, -7.0], &mut m, &mut v).unwrap();
        assert!(
            (w[0] - 0.99).abs() < 1e-9 && (w[1] + 1.99).abs() < 1e-9,
            "{w:?}"
        );
        // Nesterov momentum, first step: v = g, p -= lr * (g + mu * g).
        let (mut w, mut v) = ([1.0f64], [0.0f64]);
        let p = MomentumParams {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: true,
        };
        momentum_reference(p, &mut w, &[1.0], &mut v).unwrap();
        assert!((w[0] - (1.0 - 0.1 * 1.9)).abs() < 1e-15 && v[0] == 1.0);
    }

    /// One optimizer step: `(t, param, grad, state)`.
    type Step<'a, T> = dyn Fn(u64, &mut [T], &[T], &mut [Vec<T>]) + 'a;

    /// Runs 5 steps of `step` (f32 state, build `isa`) and of `reference` (f64 state) from the
    /// same start and fresh gradients, comparing after every step.
    fn five_steps(
        r: &mut crate::rng::Rng,
        what: &str,
        n: usize,
        states: usize,
        step32: &Step<'_, f32>,
        step64: &Step<'_, f64>,
    ) {
        let w0 = f32v(&rand_range(r, n, -1.0, 1.0));
        let (mut w32, mut w64) = (w0.clone(), f64v(&w0));
        let mut s32 = vec![vec![0.0f32; n]; states];
        let mut s64 = vec![vec![0.0f64; n]; states];
        for t in 1..=5 {
            let g = f32v(&rand_range(r, n, -1.0, 1.0));
            step32(t, &mut w32, &g, &mut s32);
            step64(t, &mut w64, &f64v(&g), &mut s64);
            // A parameter (drawn in [-1, 1]) or a state (velocity, moments: sums of signed
            // gradients) may cancel far below its size (~1 per element; a single weight at
            // 4e-4 was seen 1.5e-5 off relative): judge both against that size.
            let floor = (n as f64).sqrt() * 0.1;
            assert_close_floor(
                &format!("{what} step {t} param"),
                &f64v(&w32),
                &w64,
                floor,
                1e-5,
            );
            for (i, (a, b)) in s32.iter().zip(&s64).enumerate() {
                let what = format!("{what} step {t} state {i}");
                assert_close_floor(&what, &f64v(a), b, floor, 1e-5);
            }
        }
    }

    #[test]
    fn every_isa_matches_reference_over_five_steps() {
        let mut r = rng("optimizer::every_isa_matches_reference_over_five_steps");
        for isa in Isa::all() {
            println!("optimizer: isa {}", isa.name());
            for n in [1usize, 7, 33, 1001, 200_003] {
                for threads in [1, 2] {
                    let what = format!("{}/n={n}/t={threads}", isa.name());
                    let sp = SgdParams {
                        lr: 0.05,
                        weight_decay: 0.01,
                    };
                    five_steps(
                        &mut r,
                        &format!("sgd {what}"),
                        n,
                        0,
                        &|_, w, g, _| sgd_with(isa, sp, w, g, threads).unwrap(),
                        &|_, w, g, _| sgd_reference(sp, w, g).unwrap(),
                    );
                    for nesterov in [false, true] {
                        let mp = MomentumParams {
                            lr: 0.05,
                            momentum: 0.9,
                            weight_decay: 1e-3,
                            nesterov,
                        };
                        five_steps(
                            &mut r,
                            &format!("momentum nesterov={nesterov} {what}"),
                            n,
                            1,
                            &|_, w, g, s| momentum_with(isa, mp, w, g, &mut s[0], threads).unwrap(),
                            &|_, w, g, s| momentum_reference(mp, w, g, &mut s[0]).unwrap(),
                        );
                    }
                    for decoupled in [false, true] {
                        let ap = |t| AdamParams {
                            lr: 1e-2,
                            beta1: 0.9,
                            beta2: 0.999,
                            eps: 1e-8,
                            weight_decay: 0.05,
                            decoupled,
                            step: t,
                        };
                        five_steps(
                            &mut r,
                            &format!("adam decoupled={decoupled} {what}"),
                            n,
                            2,
                            &|t, w, g, s| {
                                let (a, b) = s.split_at_mut(1);
                                adam_with(isa, ap(t), w, g, &mut a[0], &mut b[0], threads).unwrap()
                            },
                            &|t, w, g, s| {
                                let (a, b) = s.split_at_mut(1);
                                adam_reference(ap(t), w, g, &mut a[0], &mut b[0]).unwrap()
                            },
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let g = [0.5f32; 4];
        let ap = AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
            step: 1,
        };
        for isa in Isa::all() {
            let (mut w, mut m, mut v) = ([1.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
            let sp = SgdParams {
                lr: 0.1,
                weight_decay: 0.0,
            };
            assert!(sgd_with(isa, sp, &mut w, &g, 1).is_ok());
            assert!(sgd_with(isa, sp, &mut w, &g[..3], 1).is_err());
            let bad = SgdParams { lr: f64::NAN, ..sp };
            assert!(sgd_with(isa, bad, &mut w, &g, 1).is_err());
            let mp = MomentumParams {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
            };
            assert!(momentum_with(isa, mp, &mut w, &g, &mut v[..3], 2).is_err());
            assert!(adam_with(isa, ap, &mut w, &g, &mut m, &mut v, 2).is_ok());
            assert!(adam_with(isa, ap, &mut w, &g, &mut m[..2], &mut v, 2).is_err());
            for bad in [
                AdamParams { step: 0, ..ap },
                AdamParams { beta1: 1.0, ..ap },
                AdamParams { eps: 0.0, ..ap },
                AdamParams {
                    weight_decay: -1.0,
                    ..ap
                },
            ] {
                assert!(adam_with(isa, bad, &mut w, &g, &mut m, &mut v, 1).is_err());
            }
        }
    }
}
