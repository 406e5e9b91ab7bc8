//! The one criterion benchmark binary: the reference kernels — the baseline every tuned CPU
//! and GPU kernel is compared against — the tuned CPU sgemm and conv2d, and the GPU smoke kernel.
//! Run: `cargo bench --bench spore`; results go to `benches/RESULTS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spore::kernels_cpu::reference::{conv2d, matmul, window::Padding2d};
use spore::kernels_cpu::rng::Rng;
use std::hint::black_box;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
}

fn reference_kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    let n = 128;
    let p = matmul::MatmulParams::new(n, n, n);
    let (a, b) = (random(n * n, 1), random(n * n, 2));
    let mut out = vec![0f32; n * n];
    g.throughput(Throughput::Elements((2 * n * n * n) as u64));
    g.bench_function("matmul/128x128x128", |bench| {
        bench.iter(|| matmul::matmul(p, black_box(&a), black_box(&b), &mut out).unwrap())
    });

    let p = conv2d::Conv2dParams {
        n: 1,
        h: 28,
        w: 28,
        c_in: 8,
        c_out: 16,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::symmetric(1, 1),
        groups: 1,
    };
    let x = random(p.x_len().unwrap(), 3);
    let w = random(p.w_len().unwrap(), 4);
    let mut y = vec![0f32; p.y_len().unwrap()];
    let flops = 2 * 28 * 28 * 16 * 9 * 8;
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function("conv2d/28x28x8->16/k3", |bench| {
        bench.iter(|| conv2d::conv2d(p, black_box(&x), black_box(&w), None, &mut y).unwrap())
    });
    g.finish();
}

/// The tuned sgemm: the best tier on one thread (the single-core comparison with the peers),
/// the same on two threads, and the portable tier as the floor.
fn sgemm(c: &mut Criterion) {
    use spore::kernels_cpu::{Kernels, SgemmParams, kernels};
    let best = kernels();
    let portable = Kernels::portable();
    let mut g = c.benchmark_group("sgemm");
    // 2048^3 takes ~0.2 s per call: 10 samples keep the group within minutes.
    g.sample_size(10);
    for n in [256usize, 512, 1024, 2048] {
        let (a, b) = (random(n * n, 7), random(n * n, 8));
        let mut out = vec![0f32; n * n];
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        for (label, table, threads) in [
            (best.sgemm_impl, best, 1),
            (best.sgemm_impl, best, 2),
            (portable.sgemm_impl, &portable, 1),
        ] {
            if table.tier == portable.tier && best.tier != portable.tier && n > 1024 {
                continue;
            }
            let p = SgemmParams {
                threads,
                ..SgemmParams::new(n, n, n)
            };
            let id = format!("{}/t{threads}/{n}x{n}x{n}", label.replace(' ', "_"));
            g.bench_function(id, |bench| {
                bench.iter(|| {
                    (table.sgemm)(&p, black_box(&a), black_box(&b), None, &mut out).unwrap()
                })
            });
        }
    }
    g.finish();
}

/// The tuned conv2d (im2col + sgemm, or one sgemm for pointwise), best tier, one thread, on
/// the peers' workloads. Throughput is 2 * MACs.
fn conv2d_tuned(c: &mut Criterion) {
    use spore::kernels_cpu::kernels;
    use spore::kernels_cpu::reference::conv2d::Conv2dParams;
    let best = kernels();
    let mut g = c.benchmark_group("conv2d");
    let base = Conv2dParams {
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
    let pointwise = Conv2dParams {
        c_in: 144,
        c_out: 24,
        kh: 1,
        kw: 1,
        padding: Padding2d::ZERO,
        ..base
    };
    let stem = Conv2dParams {
        h: 224,
        w: 224,
        c_in: 3,
        c_out: 32,
        stride_h: 2,
        stride_w: 2,
        padding: Padding2d::same((224, 224), (3, 3), (2, 2), (1, 1)),
        ..base
    };
    for (name, p) in [
        ("conv3x3_b1_64to64_56", base),
        ("pw1x1_b1_144to24_56", pointwise),
        ("conv3x3s2_b1_3to32_224_stem", stem),
    ] {
        let x = random(p.x_len().unwrap(), 9);
        let w = random(p.w_len().unwrap(), 10);
        let bias = random(p.c_out, 11);
        let mut y = vec![0f32; p.y_len().unwrap()];
        let macs = p.y_len().unwrap() * p.kh * p.kw * (p.c_in / p.groups);
        g.throughput(Throughput::Elements((2 * macs) as u64));
        let id = format!("{}/t1/{name}", best.conv2d_impl.replace(' ', "_"));
        g.bench_function(id, |bench| {
            bench.iter(|| {
                (best.conv2d)(
                    &p,
                    black_box(&x),
                    black_box(&w),
                    Some(&bias),
                    None,
                    1,
                    &mut y,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn gpu_smoke(c: &mut Criterion) {
    use spore::backend::gpu::{GpuContext, GpuOptions, kernels::bias_add};
    let opts = GpuOptions {
        allow_software: true,
        ..Default::default()
    };
    let Ok(gpu) = GpuContext::new(&opts) else {
        println!("gpu/bias_add: skipped: no GPU adapter");
        return;
    };
    let (rows, channels) = (4096, 64);
    let x = random(rows * channels, 5);
    let b = random(channels, 6);
    let mut g = c.benchmark_group(format!("gpu/{}", gpu.adapter().name));
    g.throughput(Throughput::Bytes((rows * channels * 4) as u64));
    // Includes upload and read-back: this is the single-kernel smoke path, not a fused plan.
    g.bench_function("bias_add/4096x64/round_trip", |bench| {
        bench.iter(|| bias_add::run(&gpu, black_box(&x), black_box(&b)).unwrap())
    });
    g.finish();
}

/// GPU matmul (tiled vs naive) and conv2d (implicit GEMM vs naive) on buffers already on the
/// device: record, submit, `sync()` before the clock stops. Throughput is 2 * MACs.
fn gpu_kernels(c: &mut Criterion) {
    use spore::backend::gpu::kernels::{conv2d as gconv, matmul as gmm};
    use spore::backend::gpu::{GpuContext, GpuOptions};
    let opts = GpuOptions {
        allow_software: true,
        ..Default::default()
    };
    let Ok(gpu) = GpuContext::new(&opts) else {
        println!("gpu_kernels: skipped: no GPU adapter");
        return;
    };
    let mut g = c.benchmark_group(format!("gpu_kernels/{}", gpu.adapter().name));
    // The software adapter needs ~0.1-1 s per 512^3 product.
    g.sample_size(10);
    for n in [256usize, 512] {
        let p = matmul::MatmulParams::new(n, n, n);
        let ab = gpu
            .upload("a", bytemuck::cast_slice(&random(n * n, 12)))
            .unwrap();
        let bb = gpu
            .upload("b", bytemuck::cast_slice(&random(n * n, 13)))
            .unwrap();
        let cb = gpu.poisoned("c", (n * n * 4) as u64).unwrap();
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        for (label, variant) in [
            ("tiled", gmm::Variant::Tiled(gmm::Tile::DEFAULT)),
            ("naive", gmm::Variant::Naive),
        ] {
            let mm = gmm::Matmul {
                p,
                act: None,
                variant,
            };
            g.bench_function(format!("matmul/{label}/{n}x{n}x{n}"), |bench| {
                bench.iter(|| {
                    let mut rec = gpu.recorder();
                    gmm::record::<f32>(&gpu, &mut rec, &ab, &bb, None, &cb, &mm).unwrap();
                    rec.submit().unwrap();
                    gpu.sync().unwrap();
                })
            });
        }
    }
    let p = conv2d::Conv2dParams {
        n: 1,
        h: 28,
        w: 28,
        c_in: 32,
        c_out: 32,
        kh: 3,
        kw: 3,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::symmetric(1, 1),
        groups: 1,
    };
    let xb = gpu
        .upload("x", bytemuck::cast_slice(&random(p.x_len().unwrap(), 14)))
        .unwrap();
    let wb = gpu
        .upload("w", bytemuck::cast_slice(&random(p.w_len().unwrap(), 15)))
        .unwrap();
    let bias = gpu
        .upload("bias", bytemuck::cast_slice(&random(p.c_out, 16)))
        .unwrap();
    let yb = gpu.poisoned("y", (p.y_len().unwrap() * 4) as u64).unwrap();
    g.throughput(Throughput::Elements((2 * 28 * 28 * 32 * 32 * 9) as u64));
    for (label, variant) in [
        ("implicit_gemm", gconv::Variant::Tiled(gmm::Tile::DEFAULT)),
        ("naive", gconv::Variant::Naive),
    ] {
        let conv = gconv::Conv2d {
            p,
            act: Some(spore::kernels_cpu::reference::activation::Activation::Relu),
            variant,
        };
        g.bench_function(format!("conv2d/{label}/1x28x28x32->32/k3"), |bench| {
            bench.iter(|| {
                let mut rec = gpu.recorder();
                gconv::record::<f32>(&gpu, &mut rec, &xb, &wb, Some(&bias), &yb, &conv).unwrap();
                rec.submit().unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    reference_kernels,
    sgemm,
    conv2d_tuned,
    gpu_smoke,
    gpu_kernels
);
criterion_main!(benches);
