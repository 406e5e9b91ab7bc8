//! GPU convolution-family gradient kernels (conv2d dx / dW, conv_transpose2d dW, depthwise dx /
//! dW; tuned and naive) against the f64 reference on fresh random data: ragged channels,
//! batch 2, stride 1-3, asymmetric padding, dilation 2, groups 2, channel multiplier 2, shapes
//! larger than one tile, several knob candidates; split-K determinism; plus an `#[ignore]`d
//! GFLOP/s measurement (tuned vs naive).

use crate::common::{gpu, rel_l2, seed};
use crate::gpu_matmul::random;
use spore::backend::gpu::GpuContext;
use spore::backend::gpu::kernels::conv2d_grad::{
    self, INPUT_CANDIDATES, InputVariant, WEIGHT_CANDIDATES, WeightKnobs, WeightVariant,
};
use spore::backend::gpu::kernels::depthwise_conv2d_grad::{
    self as dwg, CANDIDATES as DW_CANDIDATES, DepthwiseGrad, Knobs, Variant,
};
use spore::backend::gpu::kernels::matmul::Tile;
use spore::kernels_cpu::reference::conv_transpose2d::{
    ConvTranspose2dParams, conv_transpose2d_grad_weight as ref_ct_grad_weight,
};
use spore::kernels_cpu::reference::conv2d::{
    Conv2dParams, conv2d_grad_input as ref_grad_input, conv2d_grad_weight as ref_grad_weight,
};
use spore::kernels_cpu::reference::depthwise_conv2d::{
    DepthwiseConv2dParams, depthwise_conv2d_grad_input as ref_dw_grad_input,
    depthwise_conv2d_grad_weight as ref_dw_grad_weight,
};
use spore::kernels_cpu::reference::window::Padding2d;
use spore::kernels_cpu::rng::Rng;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[allow(clippy::too_many_arguments)]
fn conv(
    (n, h, w, c_in, c_out): (usize, usize, usize, usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
    pad: Padding2d,
    groups: usize,
) -> Conv2dParams {
    let p = Conv2dParams {
        n,
        h,
        w,
        c_in,
        c_out,
        kh,
        kw,
        stride_h: sh,
        stride_w: sw,
        dilation_h: dh,
        dilation_w: dw,
        padding: pad,
        groups,
    };
    p.validate().unwrap();
    p
}

/// Fixed convolutions covering the features, plus random ones; the last is larger than the
/// default 64 x 64 tile in every GEMM dimension of both gradients.
fn conv_cases(rng: &mut Rng) -> Vec<Conv2dParams> {
    let mut v = vec![
        // Stride 2, asymmetric padding, ragged channels, batch 2.
        conv(
            (2, 9, 8, 3, 5),
            (3, 2),
            (2, 2),
            (1, 1),
            Padding2d::new(1, 0, 2, 1),
            1,
        ),
        // Dilation 2, groups 2, SAME-like padding.
        conv(
            (2, 7, 6, 6, 10),
            (3, 3),
            (1, 1),
            (2, 2),
            Padding2d::new(2, 2, 2, 2),
            2,
        ),
        // Stride 3 with dilation 2 (tap step 3 / gcd(3, 2) = 3), mixed strides, groups 2.
        conv(
            (2, 11, 10, 4, 6),
            (5, 4),
            (3, 2),
            (2, 1),
            Padding2d::new(3, 1, 0, 2),
            2,
        ),
        // Stride 2 with dilation 2 (only one tap phase reaches a pixel: others get 0).
        conv(
            (2, 8, 9, 7, 3),
            (3, 3),
            (2, 2),
            (2, 2),
            Padding2d::new(2, 1, 1, 2),
            1,
        ),
    ];
    for _ in 0..2 {
        loop {
            let groups = rng.range(1, 2);
            let p = Conv2dParams {
                n: 2,
                h: rng.range(3, 10),
                w: rng.range(3, 10),
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
                v.push(p);
                break;
            }
        }
    }
    // dx: 162 pixels x 67 channels, K = 9 x 70; dW: 70 x 603, K = 162.
    v.push(conv(
        (2, 9, 9, 67, 70),
        (3, 3),
        (1, 1),
        (1, 1),
        Padding2d::new(1, 1, 1, 1),
        1,
    ));
    v
}

fn check_input(g: &GpuContext, rng: &mut Rng, p: Conv2dParams, variant: InputVariant) {
    let dy = random(rng, p.y_len().unwrap());
    let w = random(rng, p.w_len().unwrap());
    let got = conv2d_grad::run_input(g, &dy, &w, &p, variant).unwrap();
    let mut want = vec![0f64; p.x_len().unwrap()];
    ref_grad_input(p, &f64s(&dy), &f64s(&w), &mut want).unwrap();
    let err = rel_l2(&got, &f32s(&want));
    assert!(err <= 1e-4, "dx {variant:?} {p:?}: rel L2 {err:e}");
}

fn check_weight(g: &GpuContext, rng: &mut Rng, p: Conv2dParams, variant: WeightVariant) {
    let x = random(rng, p.x_len().unwrap());
    let dy = random(rng, p.y_len().unwrap());
    let got = conv2d_grad::run_weight(g, &x, &dy, &p, variant).unwrap();
    let mut want = vec![0f64; p.w_len().unwrap()];
    ref_grad_weight(p, &f64s(&x), &f64s(&dy), &mut want).unwrap();
    let err = rel_l2(&got, &f32s(&want));
    assert!(err <= 1e-4, "dW {variant:?} {p:?}: rel L2 {err:e}");
}

#[test]
fn conv2d_grad_input_matches_reference() {
    let Some(g) = gpu("conv2d_grad_input_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(seed("conv2d_grad_input_matches_reference"));
    let cases = conv_cases(&mut rng);
    for (i, p) in cases.iter().enumerate() {
        // Two tile candidates alternate over the cases; the largest runs both.
        check_input(
            g,
            &mut rng,
            *p,
            InputVariant::Tiled(INPUT_CANDIDATES[i % 2]),
        );
        check_input(g, &mut rng, *p, InputVariant::Naive);
    }
    let big = cases[cases.len() - 1];
    check_input(g, &mut rng, big, InputVariant::Tiled(INPUT_CANDIDATES[0]));
    println!(
        "conv2d_grad_input: {} shapes, tiles {:?}",
        cases.len(),
        &INPUT_CANDIDATES[..2]
    );
}

#[test]
fn conv2d_grad_weight_matches_reference() {
    let Some(g) = gpu("conv2d_grad_weight_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(seed("conv2d_grad_weight_matches_reference"));
    let cases = conv_cases(&mut rng);
    for (i, p) in cases.iter().enumerate() {
        let knobs = WEIGHT_CANDIDATES[i % WEIGHT_CANDIDATES.len()];
        check_weight(g, &mut rng, *p, WeightVariant::SplitK(knobs));
        check_weight(g, &mut rng, *p, WeightVariant::Naive);
    }
    // Many slices on a long K (some slices shorter than the rest).
    let big = cases[cases.len() - 1];
    for splits in [3, 7] {
        let knobs = WeightKnobs {
            tile: Tile::DEFAULT,
            splits,
        };
        check_weight(g, &mut rng, big, WeightVariant::SplitK(knobs));
    }
}

#[test]
fn conv2d_grad_weight_is_deterministic() {
    let Some(g) = gpu("conv2d_grad_weight_is_deterministic") else {
        return;
    };
    let mut rng = Rng::new(seed("conv2d_grad_weight_is_deterministic"));
    let p = conv(
        (2, 12, 11, 5, 9),
        (3, 3),
        (1, 1),
        (1, 1),
        Padding2d::new(1, 1, 1, 1),
        1,
    );
    let x = random(&mut rng, p.x_len().unwrap());
    let dy = random(&mut rng, p.y_len().unwrap());
    let v = WeightVariant::SplitK(WeightKnobs {
        tile: Tile {
            wg_x: 8,
            wg_y: 8,
            bk: 16,
        },
        splits: 5,
    });
    let a = conv2d_grad::run_weight(g, &x, &dy, &p, v).unwrap();
    let b = conv2d_grad::run_weight(g, &x, &dy, &p, v).unwrap();
    assert!(
        a.iter().zip(&b).all(|(u, w)| u.to_bits() == w.to_bits()),
        "split-K dW differs between two runs"
    );
    let sh = DepthwiseConv2dParams {
        n: 2,
        h: 13,
        w: 9,
        c_in: 8,
        multiplier: 1,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::new(1, 1, 1, 1),
    };
    let x = random(&mut rng, sh.x_len().unwrap());
    let dy = random(&mut rng, sh.y_len().unwrap());
    let dp = DepthwiseGrad {
        shape: sh,
        knobs: Knobs {
            chunk: 3,
            ..Knobs::default()
        },
    };
    let a = dwg::run_weight(g, &x, &dy, &dp).unwrap();
    let b = dwg::run_weight(g, &x, &dy, &dp).unwrap();
    assert!(
        a.iter().zip(&b).all(|(u, w)| u.to_bits() == w.to_bits()),
        "depthwise dW differs between two runs"
    );
}

#[test]
fn conv_transpose2d_grad_weight_matches_reference() {
    let Some(g) = gpu("conv_transpose2d_grad_weight_matches_reference") else {
        return;
    };
    let mut rng = Rng::new(seed("conv_transpose2d_grad_weight_matches_reference"));
    let mut done = 0;
    while done < 4 {
        let groups = rng.range(1, 2);
        let (sh, sw) = (rng.range(1, 2), rng.range(1, 3));
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
        if p.validate().is_err() {
            continue;
        }
        let x = random(&mut rng, p.x_len().unwrap());
        let dy = random(&mut rng, p.y_len().unwrap());
        let mut want = vec![0f64; p.w_len().unwrap()];
        ref_ct_grad_weight(p, &f64s(&x), &f64s(&dy), &mut want).unwrap();
        for v in [
            WeightVariant::SplitK(WEIGHT_CANDIDATES[done % 2]),
            WeightVariant::Naive,
        ] {
            let got = conv2d_grad::run_transpose_weight(g, &x, &dy, &p, v).unwrap();
            let err = rel_l2(&got, &f32s(&want));
            assert!(err <= 1e-4, "conv_t dW {v:?} {p:?}: rel L2 {err:e}");
        }
        done += 1;
    }
}

fn dw_cases() -> Vec<DepthwiseConv2dParams> {
    let d = |(n, h, w, c, m): (usize, usize, usize, usize, usize),
             (kh, kw): (usize, usize),
             (sh, sw): (usize, usize),
             (dh, dw): (usize, usize),
             pad: Padding2d| {
        let p = DepthwiseConv2dParams {
            n,
            h,
            w,
            c_in: c,
            multiplier: m,
            kh,
            kw,
            stride_h: sh,
            stride_w: sw,
            dilation_h: dh,
            dilation_w: dw,
            padding: pad,
        };
        p.validate().unwrap();
        p
    };
    vec![
        // vec4-eligible, stride 1, SAME padding.
        d(
            (2, 7, 9, 12, 1),
            (3, 3),
            (1, 1),
            (1, 1),
            Padding2d::new(1, 1, 1, 1),
        ),
        // vec4-eligible, stride 2, asymmetric padding, 5x4 kernel.
        d(
            (2, 11, 10, 8, 1),
            (5, 4),
            (2, 2),
            (1, 1),
            Padding2d::new(2, 1, 0, 2),
        ),
        // Ragged channels, multiplier 2, dilation 2.
        d(
            (2, 8, 7, 3, 2),
            (3, 3),
            (1, 1),
            (2, 2),
            Padding2d::new(2, 2, 2, 2),
        ),
        // Ragged channels, stride 2 + dilation 2, multiplier 2, asymmetric padding.
        d(
            (2, 9, 10, 7, 2),
            (3, 2),
            (2, 2),
            (2, 2),
            Padding2d::new(1, 0, 2, 1),
        ),
        // Ragged channels (13), stride 2 x 1, multiplier 1 (scalar path).
        d(
            (2, 9, 8, 13, 1),
            (3, 3),
            (2, 1),
            (1, 1),
            Padding2d::new(0, 1, 1, 0),
        ),
    ]
}

#[test]
fn depthwise_conv2d_grads_match_reference() {
    let Some(g) = gpu("depthwise_conv2d_grads_match_reference") else {
        return;
    };
    let mut rng = Rng::new(seed("depthwise_conv2d_grads_match_reference"));
    let mut ran = std::collections::BTreeSet::new();
    for (i, s) in dw_cases().into_iter().enumerate() {
        let x = random(&mut rng, s.x_len().unwrap());
        let w = random(&mut rng, s.w_len().unwrap());
        let dy = random(&mut rng, s.y_len().unwrap());
        let mut want_dx = vec![0f64; x.len()];
        ref_dw_grad_input(s, &f64s(&dy), &f64s(&w), &mut want_dx).unwrap();
        let mut want_dw = vec![0f64; w.len()];
        ref_dw_grad_weight(s, &f64s(&x), &f64s(&dy), &mut want_dw).unwrap();
        // Two candidates per shape (rotating through the list), plus the naive shaders.
        for knobs in [
            DW_CANDIDATES[i % DW_CANDIDATES.len()],
            DW_CANDIDATES[(i + 1) % DW_CANDIDATES.len()],
        ] {
            let p = DepthwiseGrad { shape: s, knobs };
            let mut variants = vec![p.variant(), Variant::Naive];
            if p.variant() == Variant::Vec4 {
                variants.push(Variant::Scalar);
            }
            for v in variants {
                ran.insert(format!("{v:?}"));
                let dx = dwg::run_input_variant(g, &dy, &w, &p, v).unwrap();
                let err = rel_l2(&dx, &f32s(&want_dx));
                assert!(err <= 1e-4, "depthwise dx {v:?} {knobs:?} {s:?}: {err:e}");
                let dw = dwg::run_weight_variant(g, &x, &dy, &p, v).unwrap();
                let err = rel_l2(&dw, &f32s(&want_dw));
                assert!(err <= 1e-4, "depthwise dW {v:?} {knobs:?} {s:?}: {err:e}");
            }
        }
    }
    println!("depthwise grads: variants {ran:?}");
    assert_eq!(ran.len(), 3);
}

#[test]
fn grad_kernels_refuse_bad_arguments() {
    let Some(g) = gpu("grad_kernels_refuse_bad_arguments") else {
        return;
    };
    let p = conv(
        (1, 5, 5, 3, 4),
        (3, 3),
        (1, 1),
        (1, 1),
        Padding2d::new(1, 1, 1, 1),
        1,
    );
    let v = vec![0.5f32; 10];
    assert!(conv2d_grad::run_input(g, &v, &v, &p, InputVariant::Naive).is_err());
    assert!(conv2d_grad::run_weight(g, &v, &v, &p, WeightVariant::Naive).is_err());
    let bad_tile = Tile {
        wg_x: 32,
        wg_y: 16,
        bk: 16,
    };
    let dy = vec![0.5f32; p.y_len().unwrap()];
    let w = vec![0.5f32; p.w_len().unwrap()];
    assert!(conv2d_grad::run_input(g, &dy, &w, &p, InputVariant::Tiled(bad_tile)).is_err());
    let s = DepthwiseConv2dParams {
        n: 1,
        h: 5,
        w: 5,
        c_in: 3,
        multiplier: 1,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::new(1, 1, 1, 1),
    };
    let dp = DepthwiseGrad {
        shape: s,
        knobs: Knobs::default(),
    };
    let (x, dy) = (vec![0.5f32; 75], vec![0.5f32; 75]);
    // vec4 on 3 channels is refused, as are a zero chunk and a bad workgroup size.
    assert!(dwg::run_weight_variant(g, &x, &dy, &dp, Variant::Vec4).is_err());
    for knobs in [
        Knobs {
            chunk: 0,
            ..Knobs::default()
        },
        Knobs {
            wg: 96,
            ..Knobs::default()
        },
    ] {
        let bad = DepthwiseGrad { shape: s, knobs };
        assert!(dwg::run_weight(g, &x, &dy, &bad).is_err());
    }
    assert!(dwg::run_input(g, &x[..10], &dy, &dp).is_err());
}

/// Best-of-`reps` seconds of `record` on buffers already on the GPU (after a warm-up).
fn time(
    g: &GpuContext,
    reps: usize,
    mut record: impl FnMut(&mut spore::backend::gpu::Recorder<'_>),
) -> f64 {
    let mut best = f64::INFINITY;
    for i in 0..=reps {
        let t = std::time::Instant::now();
        let mut rec = g.recorder();
        record(&mut rec);
        rec.submit().unwrap();
        g.sync().unwrap();
        if i > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    best
}

/// GFLOP/s of the tuned and naive gradient kernels at the bench shapes (1x56x56x64 -> 64 3x3
/// pad 1; depthwise 1x56x56x144 3x3). Run with `--ignored --nocapture`.
#[test]
#[ignore = "timing, not a test: run by hand"]
fn grad_kernels_gflops() {
    let Some(g) = gpu("grad_kernels_gflops") else {
        return;
    };
    let buf = |n: usize| {
        g.upload(
            "t",
            &vec![0x3c00_3c00u32; n]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let p = conv(
        (1, 56, 56, 64, 64),
        (3, 3),
        (1, 1),
        (1, 1),
        Padding2d::new(1, 1, 1, 1),
        1,
    );
    let flops = 2.0 * (56 * 56 * 64 * 64 * 9) as f64;
    let (xb, wb, yb) = (
        buf(p.x_len().unwrap()),
        buf(p.w_len().unwrap()),
        buf(p.y_len().unwrap()),
    );
    let reps = 3;
    let report = |name: &str, tuned: f64, naive: f64, flops: f64| {
        println!(
            "{name}: tuned {:.3} GFLOP/s ({:.1} ms), naive {:.3} GFLOP/s ({:.1} ms), ratio {:.1}x",
            flops / tuned / 1e9,
            tuned * 1e3,
            flops / naive / 1e9,
            naive * 1e3,
            naive / tuned
        );
    };
    // Prints one candidate's time and passes it on.
    fn note<K: std::fmt::Debug>(k: K, s: f64) -> f64 {
        println!("  {k:?}: {:.1} ms", s * 1e3);
        s
    }
    let tiled = |v| {
        time(g, reps, |rec| {
            conv2d_grad::record_input::<f32>(g, rec, &yb, &wb, &xb, &p, v).unwrap()
        })
    };
    let tuned = INPUT_CANDIDATES
        .iter()
        .map(|&t| note(t, tiled(InputVariant::Tiled(t))))
        .fold(f64::INFINITY, f64::min);
    let naive = tiled(InputVariant::Naive);
    report("conv2d_grad_input 1x56x56x64->64 3x3", tuned, naive, flops);
    let wgrad = |v| {
        time(g, reps, |rec| {
            conv2d_grad::record_weight::<f32>(g, rec, &xb, &yb, &wb, &p, v).unwrap()
        })
    };
    let tuned = WEIGHT_CANDIDATES
        .iter()
        .map(|&k| note(k, wgrad(WeightVariant::SplitK(k))))
        .fold(f64::INFINITY, f64::min);
    let naive = wgrad(WeightVariant::Naive);
    report("conv2d_grad_weight 1x56x56x64->64 3x3", tuned, naive, flops);
    let s = DepthwiseConv2dParams {
        n: 1,
        h: 56,
        w: 56,
        c_in: 144,
        multiplier: 1,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::new(1, 1, 1, 1),
    };
    let flops = 2.0 * (56 * 56 * 144 * 9) as f64;
    let (xb, wb, yb) = (
        buf(s.x_len().unwrap()),
        buf(s.w_len().unwrap()),
        buf(s.y_len().unwrap()),
    );
    let dwi = |knobs, v| {
        time(g, reps, |rec| {
            dwg::record_input_variant::<f32>(
                g,
                rec,
                &yb,
                &wb,
                &xb,
                &DepthwiseGrad { shape: s, knobs },
                v,
            )
            .unwrap()
        })
    };
    let tuned = DW_CANDIDATES
        .iter()
        .map(|&k| note(k, dwi(k, DepthwiseGrad { shape: s, knobs: k }.variant())))
        .fold(f64::INFINITY, f64::min);
    let naive = dwi(Knobs::default(), Variant::Naive);
    report("depthwise_grad_input 1x56x56x144 3x3", tuned, naive, flops);
    let dww = |knobs, v| {
        time(g, reps, |rec| {
            dwg::record_weight_variant::<f32>(
                g,
                rec,
                &xb,
                &yb,
                &wb,
                &DepthwiseGrad { shape: s, knobs },
                v,
            )
            .unwrap()
        })
    };
    let tuned = DW_CANDIDATES
        .iter()
        .map(|&k| note(k, dww(k, DepthwiseGrad { shape: s, knobs: k }.variant())))
        .fold(f64::INFINITY, f64::min);
    let naive = dww(Knobs::default(), Variant::Naive);
    report("depthwise_grad_weight 1x56x56x144 3x3", tuned, naive, flops);
}
