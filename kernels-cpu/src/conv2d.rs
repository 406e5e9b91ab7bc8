//! The tuned 2-D convolution (NHWC input, OHWI weights, see [`Conv2dParams`]) with a fused
//! bias + activation epilogue: the public, safe entry point, the reference tier, and the
//! im2col + GEMM driver the portable and best tiers share.
//!
//! * 1x1, stride 1, no padding, one group: `y = act(x @ w^T + bias)`, one sgemm call with
//!   `x` viewed as `[n*h*w, c_in]` and the OHWI weight `[c_out, c_in]` as a transposed `B`
//!   (no copy of `x`).
//! * Everything else: for each block of output pixels (a few hundred at a time, so big images
//!   never materialise the whole im2col matrix) and each group, gather the receptive fields
//!   into a reusable `[rows, kh*kw*cig]` buffer (column order `(ki, kj, icg)`, the order of an
//!   OHWI weight row; with one group and dilation_w 1 a kernel row inside the input is one
//!   contiguous copy of `kw * c_in` values), then one sgemm against that group's `[cog, kh*kw*cig]` weight slice
//!   with `transpose_b`, bias and activation fused into its epilogue. One group writes straight
//!   into `y`; several groups go through a `[rows, cog]` temporary scattered into their
//!   channel slice.
//! * Threads split the output pixels (each worker with its own buffers, sgemm on one thread);
//!   the pointwise case passes the thread count to sgemm instead.

use crate::error::{Result, check_len, check_param};
use crate::reference::activation::Activation;
use crate::reference::conv2d::{Conv2dParams, conv2d};
use crate::reference::matmul::MatmulParams;
use crate::sgemm::{PAR_MIN_FLOPS, SgemmFn, SgemmParams};

const KERNEL: &str = "conv2d";

/// Target size, in floats, of one im2col block (1 MiB, about Zen 4's L2). Measured
/// 2026-11-25 (Zen 4, AVX2 tier, 1 thread) on 3x3 64->64 at 56x56 (k = 576): 2^17 floats
/// (227-pixel blocks) 59.6 GFLOP/s, 2^18 66.6, 2^19 66.6.
const IM2COL_FLOATS: usize = 1 << 18;
/// Fewest and most output pixels gathered per block.
const MIN_ROWS: usize = 96;
const MAX_ROWS: usize = 1024;

/// The signature of a conv2d implementation (a [`crate::dispatch::Kernels`] slot):
/// `(params, x, w, bias, activation, threads, y)`.
pub type Conv2dFn = fn(
    &Conv2dParams,
    &[f32],
    &[f32],
    Option<&[f32]>,
    Option<Activation>,
    usize,
    &mut [f32],
) -> Result<()>;

/// `y = act(conv2d(x, w) + bias)` with the best implementation this CPU supports (or the tier
/// `SPORE_CPU_KERNELS` forces), on up to `threads` threads (0 is treated as 1). `x` is
/// `[n, h, w, c_in]`, `w` `[c_out, kh, kw, c_in / groups]`, `bias` `[c_out]`, `y`
/// `[n, out_h, out_w, c_out]`. Checks every length first; never panics on bad input.
pub fn conv2d_fast(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    (crate::dispatch::kernels().conv2d)(p, x, w, bias, act, threads, y)
}

/// Checks the parameters, the activation and every slice length.
fn validate(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    y: &[f32],
) -> Result<()> {
    p.validate()?;
    check_len(KERNEL, "x", p.x_len()?, x.len())?;
    check_len(KERNEL, "w", p.w_len()?, w.len())?;
    check_len(KERNEL, "y", p.y_len()?, y.len())?;
    if let Some(bias) = bias {
        check_len(KERNEL, "bias", p.c_out, bias.len())?;
    }
    if let Some(Activation::LeakyRelu(alpha)) = act {
        check_param(KERNEL, "alpha", alpha.is_finite(), || {
            format!("leaky relu slope must be finite, got {alpha}")
        })?;
    }
    Ok(())
}

/// The reference tier: the f64-accumulating oracle (bias included), then the activation in
/// f64. `threads` is ignored.
pub fn conv2d_reference(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    _threads: usize,
    y: &mut [f32],
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    conv2d(*p, x, w, bias, y)?;
    if let Some(act) = act {
        y.iter_mut()
            .for_each(|v| *v = act.apply(f64::from(*v)) as f32);
    }
    Ok(())
}

/// The portable tier: im2col + the portable sgemm.
pub fn conv2d_portable(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    conv2d_gemm(
        p,
        x,
        w,
        bias,
        act,
        threads,
        y,
        crate::portable::sgemm::sgemm,
    )
}

/// The AVX2 tier: im2col + the AVX2+FMA sgemm (which returns an error on a CPU without AVX2
/// or FMA; the table only installs this where the CPU has them).
#[cfg(target_arch = "x86_64")]
pub fn conv2d_avx2(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    conv2d_gemm(
        p,
        x,
        w,
        bias,
        act,
        threads,
        y,
        crate::x86_64::sgemm_avx2::sgemm,
    )
}

/// The im2col + GEMM driver over the sgemm `gemm` (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_gemm(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    let pointwise = p.kh == 1
        && p.kw == 1
        && p.stride_h == 1
        && p.stride_w == 1
        && p.padding.top == 0
        && p.padding.bottom == 0
        && p.padding.left == 0
        && p.padding.right == 0
        && p.groups == 1;
    let pixels = p.n * p.h * p.w;
    if pointwise {
        let mut mm = MatmulParams::new(pixels, p.c_out, p.c_in);
        mm.transpose_b = true;
        let sp = SgemmParams {
            mm,
            activation: act,
            threads,
        };
        return gemm(&sp, x, w, bias, y);
    }
    let rows_total = p.n * p.out_h()? * p.out_w()?;
    let cig = p.c_in / p.groups;
    let k = p.kh * p.kw * cig;
    let flops = 2usize
        .saturating_mul(rows_total)
        .saturating_mul(k)
        .saturating_mul(p.c_out);
    let threads = if flops >= PAR_MIN_FLOPS {
        threads.max(1).min(rows_total.div_ceil(MIN_ROWS)).max(1)
    } else {
        1
    };
    if threads <= 1 {
        return rows_range(p, x, w, bias, act, 0, y, gemm);
    }
    let per = rows_total.div_ceil(threads);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = y
            .chunks_mut(per * p.c_out)
            .enumerate()
            .map(|(t, chunk)| s.spawn(move || rows_range(p, x, w, bias, act, t * per, chunk, gemm)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::KernelError::Param {
                        kernel: KERNEL,
                        param: "threads",
                        reason: "a worker thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Computes output pixels `[r0, r0 + y.len() / c_out)` (flattened over `n, out_h, out_w`) of
/// a validated convolution into `y`, in blocks of rows.
#[allow(clippy::too_many_arguments)]
fn rows_range(
    p: &Conv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    r0: usize,
    y: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    let (out_h, out_w) = (p.out_h()?, p.out_w()?);
    let win = p.window();
    let (cig, cog) = (p.c_in / p.groups, p.c_out / p.groups);
    let k = p.kh * p.kw * cig;
    let rows = y.len() / p.c_out;
    let block = (IM2COL_FLOATS / k).clamp(MIN_ROWS, MAX_ROWS).min(rows);
    let contiguous_rows = p.groups == 1 && p.dilation_w == 1;
    let mut cols = vec![0.0f32; block * k];
    let mut tmp = if p.groups > 1 {
        vec![0.0f32; block * cog]
    } else {
        Vec::new()
    };
    for b0 in (0..rows).step_by(block.max(1)) {
        let m = block.min(rows - b0);
        for g in 0..p.groups {
            // Gather: row r of the block is output pixel r0 + b0 + r.
            for (r, dst) in cols.chunks_exact_mut(k).take(m).enumerate() {
                let pix = r0 + b0 + r;
                let nb = pix / (out_h * out_w);
                let oh = (pix / out_w) % out_h;
                let ow = pix % out_w;
                for (ki, dk) in dst.chunks_exact_mut(p.kw * cig).enumerate() {
                    let Some(ih) = win.h.input_index(oh, ki) else {
                        dk.fill(0.0);
                        continue;
                    };
                    // One group, dense taps, whole kernel row inside the input: the row's
                    // `kw * c_in` values are contiguous in `x`.
                    if contiguous_rows
                        && let (Some(iw0), Some(_)) =
                            (win.w.input_index(ow, 0), win.w.input_index(ow, p.kw - 1))
                    {
                        let s = ((nb * p.h + ih) * p.w + iw0) * p.c_in;
                        dk.copy_from_slice(&x[s..s + dk.len()]);
                        continue;
                    }
                    for (kj, d) in dk.chunks_exact_mut(cig).enumerate() {
                        match win.w.input_index(ow, kj) {
                            Some(iw) => {
                                let s = ((nb * p.h + ih) * p.w + iw) * p.c_in + g * cig;
                                d.copy_from_slice(&x[s..s + cig]);
                            }
                            None => d.fill(0.0),
                        }
                    }
                }
            }
            let mut mm = MatmulParams::new(m, cog, k);
            mm.transpose_b = true;
            let sp = SgemmParams {
                mm,
                activation: act,
                threads: 1,
            };
            let wg = &w[g * cog * k..(g + 1) * cog * k];
            let bg = bias.map(|b| &b[g * cog..(g + 1) * cog]);
            let a = &cols[..m * k];
            if p.groups == 1 {
                gemm(&sp, a, wg, bg, &mut y[b0 * p.c_out..(b0 + m) * p.c_out])?;
            } else {
                let t = &mut tmp[..m * cog];
                gemm(&sp, a, wg, bg, t)?;
                for (yr, tr) in y[b0 * p.c_out..(b0 + m) * p.c_out]
                    .chunks_exact_mut(p.c_out)
                    .zip(t.chunks_exact(cog))
                {
                    yr[g * cog..(g + 1) * cog].copy_from_slice(tr);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Kernels;
    use crate::reference::window::Padding2d;
    use crate::testutil::{assert_close, rng};

    const ACTS: [Option<Activation>; 4] = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Tanh),
    ];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    fn random_params(r: &mut crate::rng::Rng, case: usize) -> Conv2dParams {
        loop {
            let (kh, kw) = [(1, 1), (3, 3), (5, 3), (3, 5)][r.range(0, 3)];
            let groups = [1, 2, 3][case % 3];
            let (h, w) = (r.range(1, 9), r.range(1, 9));
            let (sh, sw) = (r.range(1, 2), r.range(1, 2));
            let (dh, dw) = (r.range(1, 2), r.range(1, 2));
            let padding = match case % 4 {
                0 => Padding2d::same((h, w), (kh, kw), (sh, sw), (dh, dw)),
                1 => Padding2d::new(r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2)),
                2 => Padding2d::ZERO,
                _ => Padding2d::new(1, 0, 0, 2),
            };
            let p = Conv2dParams {
                n: r.range(1, 2),
                h,
                w,
                c_in: groups * r.range(1, (9 / groups).max(1)),
                c_out: groups * r.range(1, (9 / groups).max(1)),
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dilation_h: dh,
                dilation_w: dw,
                padding,
                groups,
            };
            if p.validate().is_ok() {
                return p;
            }
        }
    }

    fn check(name: &str, f: Conv2dFn, p: &Conv2dParams, r: &mut crate::rng::Rng, case: usize) {
        let x = rand_f32(r, p.x_len().unwrap());
        let w = rand_f32(r, p.w_len().unwrap());
        let b = rand_f32(r, p.c_out);
        let bias = case.is_multiple_of(2).then_some(&b[..]);
        let act = ACTS[case % ACTS.len()];
        let threads = 1 + case % 2;
        let mut want = vec![0.0f32; p.y_len().unwrap()];
        let mut got = vec![f32::NAN; want.len()];
        conv2d_reference(p, &x, &w, bias, act, 1, &mut want).unwrap();
        f(p, &x, &w, bias, act, threads, &mut got).unwrap();
        let d = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        assert_close(
            &format!("conv2d/{name}/{p:?} bias={} act={act:?}", bias.is_some()),
            &d(&got),
            &d(&want),
            1e-5,
        );
    }

    fn tiers() -> Vec<(&'static str, Conv2dFn)> {
        let mut t: Vec<(&'static str, Conv2dFn)> = vec![
            ("reference", Kernels::reference().conv2d),
            ("portable", Kernels::portable().conv2d),
            ("best", Kernels::best().conv2d),
            ("dispatched", conv2d_fast),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", conv2d_avx2));
        }
        t
    }

    #[test]
    fn every_tier_matches_reference() {
        let mut r = rng("conv2d_fast");
        for case in 0..36 {
            let p = random_params(&mut r, case);
            for (name, f) in tiers() {
                check(name, f, &p, &mut r, case);
            }
        }
    }

    #[test]
    fn pointwise_and_large_blocks_match_reference() {
        let mut r = rng("conv2d_fast_large");
        let base = Conv2dParams {
            n: 2,
            h: 23,
            w: 19,
            c_in: 12,
            c_out: 10,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            groups: 1,
        };
        let big = Conv2dParams {
            h: 41,
            w: 37,
            c_in: 16,
            c_out: 40,
            kh: 3,
            kw: 3,
            padding: Padding2d::symmetric(1, 1),
            groups: 2,
            ..base
        };
        // `big` (3034 output pixels, k = 72) spans several im2col blocks and 2 groups.
        for (case, p) in [base, big].iter().enumerate() {
            for (name, f) in tiers() {
                check(name, f, p, &mut r, case);
                check(name, f, p, &mut r, case + 1);
            }
        }
        // Large enough to split over threads.
        let par = Conv2dParams {
            n: 1,
            h: 40,
            w: 40,
            c_in: 64,
            c_out: 64,
            groups: 1,
            ..big
        };
        const { assert!(2 * 1600 * 576 * 64 >= PAR_MIN_FLOPS) };
        check("portable-par", conv2d_portable, &par, &mut r, 1);
        check("dispatched-par", conv2d_fast, &par, &mut r, 3);
    }

    #[test]
    fn errors_not_panics() {
        let p = Conv2dParams {
            n: 1,
            h: 4,
            w: 4,
            c_in: 2,
            c_out: 3,
            kh: 3,
            kw: 3,
            stride_h: 1,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            groups: 1,
        };
        let x = vec![1.0f32; 32];
        let w = vec![1.0f32; 54];
        let b = vec![0.0f32; 3];
        let mut y = vec![0.0f32; 12];
        for (name, f) in tiers() {
            assert!(f(&p, &x, &w, Some(&b), None, 1, &mut y).is_ok(), "{name}");
            assert!(
                f(&p, &x[..31], &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w[..53], None, None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w, Some(&b[..2]), None, 1, &mut y).is_err(),
                "{name}"
            );
            assert!(
                f(&p, &x, &w, None, None, 1, &mut y[..11]).is_err(),
                "{name}"
            );
            let leaky = Some(Activation::LeakyRelu(f64::NAN));
            assert!(f(&p, &x, &w, None, leaky, 1, &mut y).is_err(), "{name}");
            let bad_groups = Conv2dParams { groups: 2, ..p };
            assert!(
                f(&bad_groups, &x, &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            let too_big = Conv2dParams { kh: 5, ..p };
            assert!(
                f(&too_big, &x, &w, None, None, 1, &mut y).is_err(),
                "{name}"
            );
            let zero = Conv2dParams { stride_h: 0, ..p };
            assert!(f(&zero, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
            let huge = Conv2dParams {
                n: usize::MAX / 2,
                ..p
            };
            assert!(f(&huge, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
        }
    }
}
