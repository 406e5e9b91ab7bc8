//! Depthwise convolution on the GPU against the reference: random windows (channels 1, 3, 4,
//! 8, 13; multiplier 1-2; kernels 3x3, 5x5, 3x5; stride and dilation 1-2; symmetric,
//! asymmetric and SAME padding), every shader variant and several knob sets, bias and fused
//! activation, a MobileNet-like 14x14x32 layer, and bad arguments. Plus an ignored timing run.

use crate::common::{gpu, rel_l2, seed};
use spore::backend::gpu::kernels::depthwise_conv2d::{
    self as dw, CANDIDATES, DepthwiseConv2d, Knobs, Variant,
};
use spore::kernels_cpu::reference::activation::Activation;
use spore::kernels_cpu::reference::depthwise_conv2d::{DepthwiseConv2dParams, depthwise_conv2d};
use spore::kernels_cpu::reference::window::Padding2d;
use spore::kernels_cpu::rng::Rng;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

fn reference(
    p: DepthwiseConv2dParams,
    act: Option<Activation>,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> Vec<f32> {
    let mut y = vec![0f32; p.y_len().unwrap()];
    depthwise_conv2d(p, x, w, b, &mut y).unwrap();
    if let Some(a) = act {
        for v in &mut y {
            *v = a.apply(f64::from(*v)) as f32;
        }
    }
    y
}

/// A random valid depthwise convolution for case `i`.
fn random_params(rng: &mut Rng, i: usize) -> DepthwiseConv2dParams {
    let channels = [1, 3, 4, 8, 13];
    let kernels = [(3, 3), (5, 5), (3, 5)];
    loop {
        let (kh, kw) = kernels[i % 3];
        let (h, w) = (rng.range(4, 11), rng.range(4, 12));
        let (sh, sw) = (rng.range(1, 2), rng.range(1, 2));
        let (dh, dw) = if i % 4 == 3 {
            (rng.range(1, 2), rng.range(1, 2))
        } else {
            (1, 1)
        };
        let padding = match i % 4 {
            0 => Padding2d::ZERO,
            1 => Padding2d::symmetric(kh / 2, kw / 2),
            2 => Padding2d::new(
                rng.range(0, 2),
                rng.range(0, 3),
                rng.range(0, 3),
                rng.range(0, 1),
            ),
            _ => Padding2d::same((h, w), (kh, kw), (sh, sw), (dh, dw)),
        };
        let p = DepthwiseConv2dParams {
            n: 2,
            h,
            w,
            c_in: channels[i % channels.len()],
            multiplier: if i % 3 == 1 { 2 } else { 1 },
            kh,
            kw,
            stride_h: sh,
            stride_w: sw,
            dilation_h: dh,
            dilation_w: dw,
            padding,
        };
        if p.validate().is_ok() {
            return p;
        }
    }
}

#[test]
fn depthwise_matches_reference_on_random_windows() {
    let name = "depthwise_conv2d/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let acts = [
        None,
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::HardSwish),
    ];
    let mut ran = std::collections::BTreeSet::new();
    for i in 0..15 {
        let shape = random_params(&mut rng, i);
        let x = random(&mut rng, shape.x_len().unwrap());
        let w = random(&mut rng, shape.w_len().unwrap());
        let b = random(&mut rng, shape.c_out().unwrap());
        let bias = (i % 2 == 0).then_some(&b[..]);
        let act = acts[i % acts.len()];
        let want = reference(shape, act, &x, &w, bias);
        let p = DepthwiseConv2d {
            shape,
            act,
            knobs: CANDIDATES[i % CANDIDATES.len()],
        };
        for variant in [p.variant(), Variant::Naive] {
            ran.insert(format!("{variant:?}"));
            let got = dw::run_variant(g, &x, &w, bias, &p, variant).unwrap();
            let err = rel_l2(&got, &want);
            assert!(err <= 1e-4, "{variant:?} {p:?}: rel err {err:e}");
        }
    }
    println!("{name}: variants run: {ran:?}");
}

#[test]
fn depthwise_mobilenet_layer_every_candidate() {
    let name = "depthwise_conv2d/14x14x32-3x3/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let shape = DepthwiseConv2dParams {
        n: 1,
        h: 14,
        w: 14,
        c_in: 32,
        multiplier: 1,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::symmetric(1, 1),
    };
    let x = random(&mut rng, shape.x_len().unwrap());
    let w = random(&mut rng, shape.w_len().unwrap());
    let b = random(&mut rng, 32);
    let act = Some(Activation::Relu6);
    let want = reference(shape, act, &x, &w, Some(&b));
    for &knobs in CANDIDATES {
        let p = DepthwiseConv2d { shape, act, knobs };
        let got = dw::run(g, &x, &w, Some(&b), &p).unwrap();
        let err = rel_l2(&got, &want);
        println!("{name}: {:?} {knobs:?}: rel err {err:e}", p.variant());
        assert!(err <= 1e-4, "{knobs:?}: rel err {err:e}");
    }
    // Batch 2, stride 2, a multiple-of-4 channel count with multiplier 2 (scalar path).
    let shape = DepthwiseConv2dParams {
        n: 2,
        c_in: 4,
        multiplier: 2,
        stride_h: 2,
        stride_w: 2,
        ..shape
    };
    let x = random(&mut rng, shape.x_len().unwrap());
    let w = random(&mut rng, shape.w_len().unwrap());
    let want = reference(shape, None, &x, &w, None);
    let p = DepthwiseConv2d {
        shape,
        act: None,
        knobs: Knobs::default(),
    };
    assert_eq!(p.variant(), Variant::Scalar);
    let got = dw::run(g, &x, &w, None, &p).unwrap();
    assert!(rel_l2(&got, &want) <= 1e-4);
}

#[test]
fn depthwise_f16_runs_where_available() {
    let name = "depthwise_conv2d/f16/gpu";
    let Some(g) = gpu(name) else {
        return;
    };
    if !g.has_f16() {
        println!("{name}: adapter has no SHADER_F16; skipped");
        return;
    }
    let mut rng = Rng::new(seed(name));
    let shape = DepthwiseConv2dParams {
        n: 2,
        h: 6,
        w: 7,
        c_in: 8,
        multiplier: 1,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::symmetric(1, 1),
    };
    let to_h =
        |v: &[f32]| -> Vec<half::f16> { v.iter().map(|&a| half::f16::from_f32(a)).collect() };
    let back = |v: &[half::f16]| -> Vec<f32> { v.iter().map(|a| a.to_f32()).collect() };
    let x = to_h(&random(&mut rng, shape.x_len().unwrap()));
    let w = to_h(&random(&mut rng, shape.w_len().unwrap()));
    let want = reference(shape, None, &back(&x), &back(&w), None);
    let p = DepthwiseConv2d {
        shape,
        act: None,
        knobs: Knobs::default(),
    };
    let got = back(&dw::run(g, &x, &w, None, &p).unwrap());
    let err = rel_l2(&got, &want);
    assert!(err <= 1e-2, "f16 rel err {err:e}");
}

#[test]
fn depthwise_bad_arguments_are_errors() {
    let Some(g) = gpu("depthwise_conv2d/errors/gpu") else {
        return;
    };
    let shape = DepthwiseConv2dParams {
        n: 1,
        h: 4,
        w: 4,
        c_in: 3,
        multiplier: 1,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::ZERO,
    };
    let p = DepthwiseConv2d {
        shape,
        act: None,
        knobs: Knobs::default(),
    };
    let x = vec![0.5f32; 48];
    let w = vec![0.5f32; 27];
    assert!(dw::run(g, &x[..47], &w, None, &p).is_err());
    assert!(dw::run(g, &x, &w[..26], None, &p).is_err());
    assert!(dw::run(g, &x, &w, Some(&[1.0, 2.0]), &p).is_err());
    // The vec4 shader refuses 3 channels; bad knobs and windows are refused.
    assert!(dw::run_variant(g, &x, &w, None, &p, Variant::Vec4).is_err());
    let bad_cols = DepthwiseConv2d {
        knobs: Knobs { cols: 9, ..p.knobs },
        ..p
    };
    assert!(dw::run(g, &x, &w, None, &bad_cols).is_err());
    let bad_wg = DepthwiseConv2d {
        knobs: Knobs { wg: 100, ..p.knobs },
        ..p
    };
    assert!(dw::run(g, &x, &w, None, &bad_wg).is_err());
    let too_big = DepthwiseConv2d {
        shape: DepthwiseConv2dParams { kh: 5, ..shape },
        ..p
    };
    assert!(dw::run(g, &x, &w, None, &too_big).is_err());
    let ok = dw::run(g, &x, &w, None, &p).unwrap();
    assert_eq!(ok, vec![0.5 * 0.5 * 9.0 * 1.0; 12]);
}

/// `cargo test --release --test integration depthwise_timing -- --ignored --nocapture`
#[test]
#[ignore]
fn depthwise_timing() {
    let Some(g) = gpu("depthwise_conv2d/timing") else {
        return;
    };
    let mut rng = Rng::new(1);
    let shape = DepthwiseConv2dParams {
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
        padding: Padding2d::symmetric(1, 1),
    };
    let x = random(&mut rng, shape.x_len().unwrap());
    let w = random(&mut rng, shape.w_len().unwrap());
    let b = random(&mut rng, 144);
    let xb = g.upload("x", bytemuck::cast_slice(&x)).unwrap();
    let wb = g.upload("w", bytemuck::cast_slice(&w)).unwrap();
    let bb = g.upload("b", bytemuck::cast_slice(&b)).unwrap();
    let yb = g
        .poisoned("y", (shape.y_len().unwrap() * 4) as u64)
        .unwrap();
    let flops = 2.0 * shape.y_len().unwrap() as f64 * 9.0;
    let time = |p: &DepthwiseConv2d, variant: Variant| {
        let once = || {
            let mut rec = g.recorder();
            dw::record_variant::<f32>(g, &mut rec, &xb, &wb, Some(&bb), &yb, p, variant).unwrap();
            rec.submit().unwrap();
            g.sync().unwrap();
        };
        once();
        let iters = 5;
        let t = std::time::Instant::now();
        for _ in 0..iters {
            once();
        }
        let s = t.elapsed().as_secs_f64() / f64::from(iters);
        println!(
            "depthwise 1x56x56x144 3x3 {variant:?} {:?}: {:.2} ms, {:.2} GFLOP/s",
            p.knobs,
            s * 1e3,
            flops / s / 1e9
        );
    };
    for &knobs in CANDIDATES {
        let p = DepthwiseConv2d {
            shape,
            act: Some(Activation::Relu6),
            knobs,
        };
        time(&p, p.variant());
    }
    let p = DepthwiseConv2d {
        shape,
        act: Some(Activation::Relu6),
        knobs: Knobs {
            wg: 256,
            ..Knobs::default()
        },
    };
    time(&p, Variant::Naive);
    let p = DepthwiseConv2d {
        shape,
        act: Some(Activation::Relu6),
        knobs: Knobs::default(),
    };
    time(&p, Variant::Naive);
}
