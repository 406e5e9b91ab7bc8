//! GPU conv2d (implicit GEMM, 1x1-as-matmul, naive) and conv_transpose2d kernels against the
//! f64 reference on fresh random data: random windows (stride, dilation, groups, asymmetric
//! padding, ragged channels, batch 2), a stem-like 3-channel case, a 1x1 case, fused bias and
//! activations; plus an `#[ignore]`d GFLOP/s measurement.

use crate::common::{gpu, rel_l2, seed};
use crate::gpu_matmul::{ACTS, random};
use spore::backend::gpu::GpuContext;
use spore::backend::gpu::kernels::conv_transpose2d::{self, ConvTranspose2d};
use spore::backend::gpu::kernels::conv2d::{self, CANDIDATES, Conv2d, Variant};
use spore::backend::gpu::kernels::matmul::Tile;
use spore::kernels_cpu::reference::activation::Activation;
use spore::kernels_cpu::reference::conv_transpose2d::{
    ConvTranspose2dParams, conv_transpose2d as ref_conv_t,
};
use spore::kernels_cpu::reference::conv2d::{Conv2dParams, conv2d as ref_conv};
use spore::kernels_cpu::reference::window::Padding2d;
use spore::kernels_cpu::rng::Rng;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn finish(y: &[f64], act: Option<Activation>) -> Vec<f32> {
    y.iter()
        .map(|&v| act.map_or(v, |f| f.apply(v)) as f32)
        .collect()
}

/// A random valid convolution: stride 1-2, dilation 1-2, groups 1-3, asymmetric padding,
/// ragged channel counts, batch 2.
fn random_conv(rng: &mut Rng) -> Conv2dParams {
    loop {
        let groups = rng.range(1, 3);
        let p = Conv2dParams {
            n: 2,
            h: rng.range(3, 11),
            w: rng.range(3, 11),
            c_in: groups * rng.range(1, 7),
            c_out: groups * rng.range(1, 9),
            kh: rng.range(1, 3),
            kw: rng.range(1, 3),
            stride_h: rng.range(1, 2),
            stride_w: rng.range(1, 2),
            dilation_h: rng.range(1, 2),
            dilation_w: rng.range(1, 2),
            padding: Padding2d::new(
                rng.range(0, 2),
                rng.range(0, 2),
                rng.range(0, 2),
                rng.range(0, 2),
            ),
            groups,
        };
        if p.validate().is_ok() {
            return p;
        }
    }
}

fn check_conv(
    g: &GpuContext,
    rng: &mut Rng,
    p: Conv2dParams,
    with_bias: bool,
    act: Option<Activation>,
    variant: Variant,
) {
    let x = random(rng, p.x_len().unwrap());
    let w = random(rng, p.w_len().unwrap());
    let bias = with_bias.then(|| random(rng, p.c_out));
    let conv = Conv2d { p, act, variant };
    let got = conv2d::run(g, &x, &w, bias.as_deref(), &conv).unwrap();
    let mut want = vec![0f64; p.y_len().unwrap()];
    let b64 = bias.as_deref().map(f64s);
    ref_conv(p, &f64s(&x), &f64s(&w), b64.as_deref(), &mut want).unwrap();
    let err = rel_l2(&got, &finish(&want, act));
    assert!(
        err <= 1e-4,
        "{variant:?} {p:?} bias={with_bias} {act:?}: rel L2 {err:e}"
    );
}

/// Fixed cases: stem-like (3 channels in, stride 2, TF-SAME-style asymmetric padding), a
/// pointwise conv (the matmul path), a strided 1x1 (not pointwise), and a multi-tile case
/// (rows > 64, output channels > 64, K > 16).
fn fixed_cases() -> Vec<Conv2dParams> {
    let base = Conv2dParams {
        n: 2,
        h: 17,
        w: 15,
        c_in: 3,
        c_out: 13,
        kh: 3,
        kw: 3,
        stride_h: 2,
        stride_w: 2,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::new(0, 1, 0, 1),
        groups: 1,
    };
    vec![
        base,
        Conv2dParams {
            h: 7,
            w: 5,
            c_in: 17,
            c_out: 33,
            kh: 1,
            kw: 1,
            stride_h: 1,
            stride_w: 1,
            padding: Padding2d::ZERO,
            ..base
        },
        Conv2dParams {
            h: 7,
            w: 6,
            c_in: 5,
            c_out: 7,
            kh: 1,
            kw: 1,
            padding: Padding2d::ZERO,
            ..base
        },
        Conv2dParams {
            h: 6,
            w: 6,
            c_in: 5,
            c_out: 67,
            stride_h: 1,
            stride_w: 1,
            padding: Padding2d::symmetric(1, 1),
            ..base
        },
    ]
}

#[test]
fn conv2d_tiled_matches_reference() {
    let name = "conv2d/tiled/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for (t, &tile) in CANDIDATES[..2].iter().enumerate() {
        println!("{name}: tile {tile:?}");
        for i in 0..12 {
            let p = random_conv(&mut rng);
            check_conv(
                g,
                &mut rng,
                p,
                i % 2 == t,
                ACTS[(i + t) % ACTS.len()],
                Variant::Tiled(tile),
            );
        }
        for (i, p) in fixed_cases().into_iter().enumerate() {
            check_conv(
                g,
                &mut rng,
                p,
                i % 2 == 0,
                ACTS[(2 * i + 1) % ACTS.len()],
                Variant::Tiled(tile),
            );
        }
    }
}

#[test]
fn conv2d_rows_matches_reference() {
    let name = "conv2d/rows/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for (t, wg) in [64u32, 32].into_iter().enumerate() {
        println!("{name}: wg {wg}");
        for i in 0..12 {
            let p = random_conv(&mut rng);
            let act = ACTS[(i + t) % ACTS.len()];
            check_conv(g, &mut rng, p, i % 2 == t, act, Variant::Rows { wg });
        }
        for (i, p) in fixed_cases().into_iter().enumerate() {
            let act = ACTS[(2 * i + 1) % ACTS.len()];
            check_conv(g, &mut rng, p, i % 2 == 0, act, Variant::Rows { wg });
        }
    }
}

#[test]
fn conv2d_naive_matches_reference() {
    let name = "conv2d/naive/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for i in 0..12 {
        let p = random_conv(&mut rng);
        check_conv(
            g,
            &mut rng,
            p,
            i % 2 == 0,
            ACTS[i % ACTS.len()],
            Variant::Naive,
        );
    }
    for p in fixed_cases() {
        check_conv(
            g,
            &mut rng,
            p,
            true,
            Some(Activation::HardSwish),
            Variant::Naive,
        );
    }
}

#[test]
fn conv2d_bad_arguments_are_errors() {
    let Some(g) = gpu("conv2d/errors/gpu") else {
        return;
    };
    let p = fixed_cases()[0];
    let x = vec![1f32; p.x_len().unwrap()];
    let w = vec![1f32; p.w_len().unwrap()];
    let ok = Conv2d::new(p);
    assert!(conv2d::run(g, &x, &w, None, &ok).is_ok());
    assert!(conv2d::run(g, &x[1..], &w, None, &ok).is_err());
    assert!(conv2d::run(g, &x, &w[1..], None, &ok).is_err());
    assert!(conv2d::run(g, &x, &w, Some(&[0.0; 2]), &ok).is_err());
    let bad_groups = Conv2d {
        p: Conv2dParams { groups: 2, ..p },
        ..ok
    };
    assert!(conv2d::run(g, &x, &w, None, &bad_groups).is_err());
    let bad_tile = Conv2d {
        variant: Variant::Tiled(Tile {
            wg_x: 0,
            ..Tile::DEFAULT
        }),
        ..ok
    };
    assert!(conv2d::run(g, &x, &w, None, &bad_tile).is_err());
    g.check_health().unwrap();
}

/// A random valid transposed convolution: stride 1-3, dilation 1-2, groups 1-3, asymmetric
/// cropping, output padding below the stride, ragged channels, batch 2.
fn random_conv_t(rng: &mut Rng) -> ConvTranspose2dParams {
    loop {
        let groups = rng.range(1, 3);
        let (sh, sw) = (rng.range(1, 3), rng.range(1, 3));
        let p = ConvTranspose2dParams {
            n: 2,
            h: rng.range(2, 7),
            w: rng.range(2, 7),
            c_in: groups * rng.range(1, 6),
            c_out: groups * rng.range(1, 6),
            kh: rng.range(1, 4),
            kw: rng.range(1, 4),
            stride_h: sh,
            stride_w: sw,
            dilation_h: rng.range(1, 2),
            dilation_w: rng.range(1, 2),
            padding: Padding2d::new(
                rng.range(0, 2),
                rng.range(0, 2),
                rng.range(0, 2),
                rng.range(0, 2),
            ),
            output_padding_h: rng.range(0, sh - 1),
            output_padding_w: rng.range(0, sw - 1),
            groups,
        };
        if p.validate().is_ok() {
            return p;
        }
    }
}

#[test]
fn conv_transpose2d_matches_reference() {
    let name = "conv_transpose2d/gather/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for i in 0..8 {
        let p = random_conv_t(&mut rng);
        let act = ACTS[(3 * i) % ACTS.len()];
        let x = random(&mut rng, p.x_len().unwrap());
        let w = random(&mut rng, p.w_len().unwrap());
        let bias = (i % 2 == 0).then(|| random(&mut rng, p.c_out));
        let ct = ConvTranspose2d { p, act };
        let got = conv_transpose2d::run(g, &x, &w, bias.as_deref(), &ct).unwrap();
        let mut want = vec![0f64; p.y_len().unwrap()];
        let b64 = bias.as_deref().map(f64s);
        ref_conv_t(p, &f64s(&x), &f64s(&w), b64.as_deref(), &mut want).unwrap();
        let err = rel_l2(&got, &finish(&want, act));
        assert!(err <= 1e-4, "{p:?} {act:?}: rel L2 {err:e}");
    }
    // Bad shapes are errors.
    let p = random_conv_t(&mut rng);
    let x = vec![1f32; p.x_len().unwrap()];
    let w = vec![1f32; p.w_len().unwrap()];
    let ct = ConvTranspose2d { p, act: None };
    assert!(conv_transpose2d::run(g, &x[1..], &w, None, &ct).is_err());
    assert!(conv_transpose2d::run(g, &x, &w[1..], None, &ct).is_err());
    let bad = ConvTranspose2d {
        p: ConvTranspose2dParams {
            output_padding_h: p.stride_h,
            ..p
        },
        act: None,
    };
    assert!(conv_transpose2d::run(g, &x, &w, None, &bad).is_err());
}

/// Seconds per call of `conv` on buffers already on the GPU (best of `reps`, after a warm-up).
pub fn time_conv(g: &GpuContext, conv: &Conv2d, reps: usize) -> f64 {
    let (nx, nw, ny) = conv.validate().unwrap();
    let mut rng = Rng::new(2);
    let xb = g
        .upload("x", bytemuck::cast_slice(&random(&mut rng, nx)))
        .unwrap();
    let wb = g
        .upload("w", bytemuck::cast_slice(&random(&mut rng, nw)))
        .unwrap();
    let yb = g.poisoned("y", (ny * 4) as u64).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..=reps {
        let t = std::time::Instant::now();
        let mut rec = g.recorder();
        conv2d::record::<f32>(g, &mut rec, &xb, &wb, None, &yb, conv).unwrap();
        rec.submit().unwrap();
        g.sync().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

#[test]
#[ignore = "timing, not a test: cargo test --release --test integration gpu_conv2d_gflops -- --ignored --nocapture"]
fn gpu_conv2d_gflops() {
    let Some(g) = gpu("conv2d/gflops") else {
        return;
    };
    let p = Conv2dParams {
        n: 1,
        h: 56,
        w: 56,
        c_in: 64,
        c_out: 64,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::symmetric(1, 1),
        groups: 1,
    };
    let flops = 2.0 * (56 * 56 * 64 * 64 * 9) as f64;
    let naive = time_conv(
        g,
        &Conv2d {
            p,
            act: None,
            variant: Variant::Naive,
        },
        2,
    );
    println!(
        "conv2d 1x56x56x64->64 3x3 naive: {:.3} GFLOP/s ({:.1} ms)",
        flops / naive * 1e-9,
        naive * 1e3
    );
    for &tile in CANDIDATES {
        let t = time_conv(
            g,
            &Conv2d {
                p,
                act: None,
                variant: Variant::Tiled(tile),
            },
            2,
        );
        println!(
            "conv2d 1x56x56x64->64 3x3 tiled {tile:?}: {:.3} GFLOP/s ({:.1} ms), {:.2}x naive",
            flops / t * 1e-9,
            t * 1e3,
            naive / t
        );
    }
}
