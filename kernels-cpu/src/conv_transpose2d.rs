//! The tuned transposed 2-D convolution ([`ConvTranspose2dParams`]: NHWC input, weight
//! `[c_in, kh, kw, c_out / groups]`) with a fused bias + activation epilogue: the public, safe
//! entry point, the reference tier, and the GEMM + col2im driver the portable and best tiers
//! share.
//!
//! A transposed convolution's forward pass is the input gradient of its matching convolution
//! ([`ConvTranspose2dParams::as_conv2d`]), whose OHWI weight is this op's weight element for
//! element; so it runs through the same driver as [`crate::conv2d_grad`]'s input gradient:
//! per block of input pixels and group, `cols[rows, kh*kw*cog] = x_g[rows, cig] @ W_g`, then
//! every row is added onto the output cells it stamps, and each worker finishes its own output
//! rows with the bias and the activation.

use crate::error::{Result, check_len};
use crate::reference::activation::Activation;
use crate::reference::conv_transpose2d::{ConvTranspose2dParams, conv_transpose2d};
use crate::sgemm::SgemmFn;

const KERNEL: &str = "conv_transpose2d";

/// The signature of a transposed-convolution implementation (a [`crate::dispatch::Kernels`]
/// slot): `(params, x, w, bias, activation, threads, y)`.
pub type ConvTranspose2dFn = fn(
    &ConvTranspose2dParams,
    &[f32],
    &[f32],
    Option<&[f32]>,
    Option<Activation>,
    usize,
    &mut [f32],
) -> Result<()>;

/// `y = act(conv_transpose2d(x, w) + bias)` with the best implementation this CPU supports (or
/// the tier `SPORE_CPU_KERNELS` forces), on up to `threads` threads (0 is treated as 1). `x` is
/// `[n, h, w, c_in]`, `w` `[c_in, kh, kw, c_out / groups]`, `bias` `[c_out]`, `y`
/// `[n, out_h, out_w, c_out]`. Checks every length first; never panics on bad input.
pub fn conv_transpose2d_fast(
    p: &ConvTranspose2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    (crate::dispatch::kernels().conv_transpose2d)(p, x, w, bias, act, threads, y)
}

/// Checks the parameters, the activation and every slice length.
fn validate(
    p: &ConvTranspose2dParams,
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
    if let Some(a) = act {
        a.validate(KERNEL)?;
    }
    Ok(())
}

/// The reference tier: the f64-accumulating oracle (bias included), then the activation in
/// f64. `threads` is ignored.
pub fn conv_transpose2d_reference(
    p: &ConvTranspose2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    _threads: usize,
    y: &mut [f32],
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    conv_transpose2d(*p, x, w, bias, y)?;
    if let Some(act) = act {
        y.iter_mut()
            .for_each(|v| *v = act.apply(f64::from(*v)) as f32);
    }
    Ok(())
}

/// The portable tier: GEMM + col2im over the portable sgemm.
pub fn conv_transpose2d_portable(
    p: &ConvTranspose2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    conv_transpose2d_gemm(
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

/// The AVX2 tier: GEMM + col2im over the AVX2+FMA sgemm (which returns an error on a CPU
/// without AVX2 or FMA; the table only installs this where the CPU has them).
#[cfg(target_arch = "x86_64")]
pub fn conv_transpose2d_avx2(
    p: &ConvTranspose2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    conv_transpose2d_gemm(
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

/// The GEMM + col2im driver over the sgemm `gemm` (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_gemm(
    p: &ConvTranspose2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
    gemm: SgemmFn,
) -> Result<()> {
    validate(p, x, w, bias, act, y)?;
    let conv = p.as_conv2d()?;
    crate::conv2d_grad::col2im_driver(
        &conv,
        x,
        w,
        bias,
        act,
        threads,
        y,
        gemm,
        crate::sgemm::PAR_MIN_FLOPS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Kernels;
    use crate::reference::window::Padding2d;
    use crate::testutil::{assert_close, rng};

    const CH: [usize; 6] = [1, 3, 7, 13, 17, 33];
    const KERNELS: [(usize, usize); 5] = [(1, 1), (3, 3), (5, 3), (3, 5), (2, 2)];
    const ACTS: [Option<Activation>; 4] = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Tanh),
    ];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    /// A random valid transposed convolution: ragged channels, 1-3 groups, stride 1-3,
    /// dilation 1-2, random asymmetric cropping and output padding.
    fn random_params(r: &mut crate::rng::Rng, case: usize) -> ConvTranspose2dParams {
        loop {
            let groups = 1 + case % 3;
            let (kh, kw) = KERNELS[r.range(0, KERNELS.len() - 1)];
            let (sh, sw) = (r.range(1, 3), r.range(1, 3));
            let padding = if case.is_multiple_of(2) {
                Padding2d::ZERO
            } else {
                Padding2d::new(r.range(0, 2), r.range(0, 2), r.range(0, 2), r.range(0, 2))
            };
            let p = ConvTranspose2dParams {
                n: r.range(1, 2),
                h: r.range(1, 8),
                w: r.range(1, 8),
                c_in: groups * CH[r.range(0, CH.len() - 1)],
                c_out: groups * CH[r.range(0, CH.len() - 1)],
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dilation_h: r.range(1, 2),
                dilation_w: r.range(1, 2),
                padding,
                output_padding_h: r.range(0, sh - 1),
                output_padding_w: r.range(0, sw - 1),
                groups,
            };
            if p.validate().is_ok() {
                return p;
            }
        }
    }

    fn tiers() -> Vec<(&'static str, ConvTranspose2dFn)> {
        let mut t: Vec<(&'static str, ConvTranspose2dFn)> = vec![
            ("reference", Kernels::reference().conv_transpose2d),
            ("portable", Kernels::portable().conv_transpose2d),
            ("best", Kernels::best().conv_transpose2d),
            ("dispatched", conv_transpose2d_fast),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::x86_64::sgemm_avx2::available() {
            t.push(("avx2", conv_transpose2d_avx2));
        }
        t
    }

    fn check(p: &ConvTranspose2dParams, r: &mut crate::rng::Rng, case: usize) -> Vec<&'static str> {
        let x = rand_f32(r, p.x_len().unwrap());
        let w = rand_f32(r, p.w_len().unwrap());
        let b = rand_f32(r, p.c_out);
        let bias = (!case.is_multiple_of(3)).then_some(&b[..]);
        let act = ACTS[case % ACTS.len()];
        let mut want = vec![0.0f64; p.y_len().unwrap()];
        let b64 = bias.map(f64s);
        conv_transpose2d(*p, &f64s(&x), &f64s(&w), b64.as_deref(), &mut want).unwrap();
        if let Some(act) = act {
            want.iter_mut().for_each(|v| *v = act.apply(*v));
        }
        let mut ran = Vec::new();
        for threads in [1, 2] {
            for (name, f) in tiers() {
                let mut y = vec![f32::NAN; want.len()];
                f(p, &x, &w, bias, act, threads, &mut y).unwrap();
                let what = format!("conv_transpose2d/{name}/t{threads}/{p:?} act={act:?}");
                assert_close(&what, &f64s(&y), &want, 1e-5);
                if threads == 1 {
                    ran.push(name);
                }
            }
        }
        // The threaded path on a small shape: 2 and 3 workers over the output rows.
        let conv = p.as_conv2d().unwrap();
        for threads in [2, 3] {
            let mut y = vec![f32::NAN; want.len()];
            crate::conv2d_grad::col2im_driver(
                &conv,
                &x,
                &w,
                bias,
                act,
                threads,
                &mut y,
                crate::portable::sgemm::sgemm,
                0,
            )
            .unwrap();
            assert_close(&format!("forced t{threads}/{p:?}"), &f64s(&y), &want, 1e-5);
        }
        ran
    }

    #[test]
    fn every_tier_matches_reference() {
        let mut r = rng("conv_transpose2d_fast");
        let mut ran = Vec::new();
        for case in 0..36 {
            let p = random_params(&mut r, case);
            ran = check(&p, &mut r, case);
        }
        // Several column blocks, strided, grouped, on the threaded path.
        let big = ConvTranspose2dParams {
            n: 2,
            h: 21,
            w: 17,
            c_in: 24,
            c_out: 16,
            kh: 3,
            kw: 3,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::symmetric(1, 1),
            output_padding_h: 1,
            output_padding_w: 0,
            groups: 2,
        };
        check(&big, &mut r, 1);
        println!("conv_transpose2d tiers run: {ran:?}");
    }

    #[test]
    fn errors_not_panics() {
        let p = ConvTranspose2dParams {
            n: 1,
            h: 3,
            w: 3,
            c_in: 2,
            c_out: 3,
            kh: 3,
            kw: 3,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
            output_padding_h: 0,
            output_padding_w: 0,
            groups: 1,
        };
        let (xl, wl, yl) = (p.x_len().unwrap(), p.w_len().unwrap(), p.y_len().unwrap());
        let x = vec![1.0f32; xl];
        let w = vec![1.0f32; wl];
        let b = vec![0.0f32; 3];
        let mut y = vec![0.0f32; yl];
        for (name, f) in tiers() {
            assert!(f(&p, &x, &w, Some(&b), None, 1, &mut y).is_ok(), "{name}");
            assert!(f(&p, &x[..xl - 1], &w, None, None, 1, &mut y).is_err());
            assert!(f(&p, &x, &w[..wl - 1], None, None, 1, &mut y).is_err());
            assert!(f(&p, &x, &w, Some(&b[..2]), None, 1, &mut y).is_err());
            assert!(f(&p, &x, &w, None, None, 1, &mut y[..yl - 1]).is_err());
            let leaky = Some(Activation::LeakyRelu(f64::NAN));
            assert!(f(&p, &x, &w, None, leaky, 1, &mut y).is_err(), "{name}");
            let bad = ConvTranspose2dParams {
                output_padding_h: 2,
                ..p
            };
            assert!(f(&bad, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
            let bad = ConvTranspose2dParams { groups: 2, ..p };
            assert!(f(&bad, &x, &w, None, None, 1, &mut y).is_err(), "{name}");
        }
    }
}
