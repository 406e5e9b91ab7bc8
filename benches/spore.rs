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
    // The software adapter needs ~0.1-1 s per 512^3 product (naive: several s at 1024^3).
    g.sample_size(10);
    for n in [256usize, 512, 1024] {
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
            ("rows", gmm::Variant::Rows { wg: 64 }),
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
    g.throughput(Throughput::Elements((2 * 56 * 56 * 64 * 64 * 9) as u64));
    for (label, variant) in [
        ("implicit_gemm", gconv::Variant::Tiled(gmm::Tile::DEFAULT)),
        ("rows", gconv::Variant::Rows { wg: 64 }),
        ("naive", gconv::Variant::Naive),
    ] {
        let conv = gconv::Conv2d {
            p,
            act: Some(spore::kernels_cpu::reference::activation::Activation::Relu),
            variant,
        };
        g.bench_function(format!("conv2d/{label}/1x56x56x64->64/k3"), |bench| {
            bench.iter(|| {
                let mut rec = gpu.recorder();
                gconv::record::<f32>(&gpu, &mut rec, &xb, &wb, Some(&bias), &yb, &conv).unwrap();
                rec.submit().unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    // Depthwise 3x3 over 144 channels (MobileNetV2's expanded width): tuned vs naive.
    let dp = spore::kernels_cpu::reference::depthwise_conv2d::DepthwiseConv2dParams {
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
    let n_x = 56 * 56 * 144;
    let dxb = gpu
        .upload("x", bytemuck::cast_slice(&random(n_x, 17)))
        .unwrap();
    let dwb = gpu
        .upload("w", bytemuck::cast_slice(&random(9 * 144, 18)))
        .unwrap();
    let dyb = gpu.poisoned("y", (n_x * 4) as u64).unwrap();
    g.throughput(Throughput::Elements((2 * n_x * 9) as u64));
    let dw = spore::backend::gpu::kernels::depthwise_conv2d::DepthwiseConv2d {
        shape: dp,
        act: None,
        knobs: Default::default(),
    };
    for naive in [false, true] {
        let label = if naive { "naive" } else { "tuned" };
        g.bench_function(format!("depthwise/{label}/1x56x56x144/k3"), |bench| {
            use spore::backend::gpu::kernels::depthwise_conv2d as gdw;
            bench.iter(|| {
                let mut rec = gpu.recorder();
                if naive {
                    gdw::record_naive::<f32>(&gpu, &mut rec, &dxb, &dwb, None, &dyb, &dw).unwrap();
                } else {
                    gdw::record::<f32>(&gpu, &mut rec, &dxb, &dwb, None, &dyb, &dw).unwrap();
                }
                rec.submit().unwrap();
                gpu.sync().unwrap();
            })
        });
    }
    g.finish();
}

/// The tuned CPU kernels that have no other bench (dispatched tier, 1 and 2 threads):
/// depthwise forward + grads, batch norm, pooling, softmax, cross-entropies and losses,
/// conv2d grads and optimizer updates. Throughput is flops (2 * MACs) for the convolutions
/// and bytes moved (inputs read + outputs written, f32) for the memory-bound ops.
fn cpu_ops(c: &mut Criterion) {
    use spore::kernels_cpu::batch_norm::{
        BatchNormParams, BatchNormTrainParams, batch_norm_grad, batch_norm_inference,
        batch_norm_train,
    };
    use spore::kernels_cpu::conv2d_grad::{conv2d_grad_input_fast, conv2d_grad_weight_fast};
    use spore::kernels_cpu::depthwise_conv2d::{
        DepthwiseConv2dParams, depthwise_conv2d_fast, depthwise_conv2d_grad_input_fast,
        depthwise_conv2d_grad_weight_fast,
    };
    use spore::kernels_cpu::loss::{Loss, loss, loss_grad};
    use spore::kernels_cpu::optimizer::{AdamParams, SgdParams, adam, sgd};
    use spore::kernels_cpu::pool2d::{avg_pool2d, avg_pool2d_grad, max_pool2d, max_pool2d_grad};
    use spore::kernels_cpu::reference::avg_pool2d::AvgPool2dParams;
    use spore::kernels_cpu::reference::conv2d::Conv2dParams;
    use spore::kernels_cpu::reference::max_pool2d::MaxPool2dParams;
    use spore::kernels_cpu::softmax::{softmax, sparse_softmax_cross_entropy_fused};
    let mut g = c.benchmark_group("cpu_ops");
    let bytes = |floats: usize| Throughput::Bytes((4 * floats) as u64);
    for t in [1usize, 2] {
        // Depthwise 1x56x56x144, 3x3, stride 1, pad 1.
        let dp = DepthwiseConv2dParams {
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
        let (x, w) = (
            random(dp.x_len().unwrap(), 1),
            random(dp.w_len().unwrap(), 2),
        );
        let dy = random(dp.y_len().unwrap(), 3);
        let (mut y, mut dx) = (vec![0f32; dy.len()], vec![0f32; x.len()]);
        let (mut dw, mut db) = (vec![0f32; w.len()], vec![0f32; 144]);
        g.throughput(Throughput::Elements((2 * dy.len() * 9) as u64));
        g.bench_function(format!("depthwise_fwd/t{t}/1x56x56x144_k3"), |b| {
            b.iter(|| depthwise_conv2d_fast(&dp, black_box(&x), &w, None, None, t, &mut y).unwrap())
        });
        g.bench_function(format!("depthwise_grad_input/t{t}/1x56x56x144_k3"), |b| {
            b.iter(|| {
                depthwise_conv2d_grad_input_fast(&dp, &w, black_box(&dy), t, &mut dx).unwrap()
            })
        });
        g.bench_function(format!("depthwise_grad_weight/t{t}/1x56x56x144_k3"), |b| {
            b.iter(|| {
                depthwise_conv2d_grad_weight_fast(
                    &dp,
                    black_box(&x),
                    &dy,
                    t,
                    &mut dw,
                    Some(&mut db),
                )
                .unwrap()
            })
        });

        // Conv2d grads, 1x56x56x64 -> 64, 3x3, pad 1.
        let cp = Conv2dParams {
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
        let (x, w) = (
            random(cp.x_len().unwrap(), 4),
            random(cp.w_len().unwrap(), 5),
        );
        let dy = random(cp.y_len().unwrap(), 6);
        let (mut dx, mut dw, mut db) = (vec![0f32; x.len()], vec![0f32; w.len()], vec![0f32; 64]);
        g.throughput(Throughput::Elements((2 * dy.len() * 576) as u64));
        g.bench_function(format!("conv2d_grad_input/t{t}/1x56x56x64to64_k3"), |b| {
            b.iter(|| conv2d_grad_input_fast(&cp, black_box(&dy), &w, t, &mut dx).unwrap())
        });
        g.bench_function(format!("conv2d_grad_weight/t{t}/1x56x56x64to64_k3"), |b| {
            b.iter(|| {
                conv2d_grad_weight_fast(&cp, black_box(&x), &dy, t, &mut dw, Some(&mut db)).unwrap()
            })
        });

        // Batch norm 32x28x28x64.
        let (rows, ch) = (32 * 28 * 28, 64);
        let n = rows * ch;
        let x = random(n, 7);
        let dy = random(n, 8);
        let (gamma, beta) = (random(ch, 9), random(ch, 10));
        let (mean, var) = (random(ch, 11), vec![1.5f32; ch]);
        let (mut y, mut dx) = (vec![0f32; n], vec![0f32; n]);
        let (mut rm, mut rv) = (vec![0f32; ch], vec![1f32; ch]);
        let (mut sm, mut ss) = (vec![0f32; ch], vec![0f32; ch]);
        let (mut dg, mut dbt) = (vec![0f32; ch], vec![0f32; ch]);
        let bp = BatchNormParams {
            rows,
            channels: ch,
            eps: 1e-5,
        };
        let tp = BatchNormTrainParams {
            rows,
            channels: ch,
            eps: 1e-5,
            momentum: 0.1,
        };
        g.throughput(bytes(2 * n));
        g.bench_function(format!("batch_norm_inference/t{t}/32x28x28x64"), |b| {
            b.iter(|| {
                batch_norm_inference(
                    bp,
                    black_box(&x),
                    &mean,
                    &var,
                    &gamma,
                    &beta,
                    None,
                    t,
                    &mut y,
                )
                .unwrap()
            })
        });
        g.bench_function(format!("batch_norm_train/t{t}/32x28x28x64"), |b| {
            b.iter(|| {
                batch_norm_train(
                    tp,
                    black_box(&x),
                    &gamma,
                    &beta,
                    &mut rm,
                    &mut rv,
                    &mut y,
                    &mut sm,
                    &mut ss,
                    t,
                )
                .unwrap()
            })
        });
        g.throughput(bytes(3 * n));
        g.bench_function(format!("batch_norm_grad/t{t}/32x28x28x64"), |b| {
            b.iter(|| {
                batch_norm_grad(
                    tp,
                    black_box(&x),
                    &dy,
                    &gamma,
                    &sm,
                    &ss,
                    &mut dx,
                    &mut dg,
                    &mut dbt,
                    t,
                )
                .unwrap()
            })
        });

        // Pooling 2x2 stride 2 on 32x28x28x64 (same x as batch norm).
        let mp = MaxPool2dParams {
            n: 32,
            h: 28,
            w: 28,
            c: 64,
            kh: 2,
            kw: 2,
            stride_h: 2,
            stride_w: 2,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::ZERO,
        };
        let ap = AvgPool2dParams {
            n: 32,
            h: 28,
            w: 28,
            c: 64,
            kh: 2,
            kw: 2,
            stride_h: 2,
            stride_w: 2,
            padding: Padding2d::ZERO,
            count_include_pad: true,
        };
        let mut py = vec![0f32; n / 4];
        let pdy = random(n / 4, 12);
        g.throughput(bytes(n + n / 4));
        g.bench_function(format!("max_pool2d/t{t}/32x28x28x64_k2s2"), |b| {
            b.iter(|| max_pool2d(mp, black_box(&x), &mut py, t).unwrap())
        });
        g.bench_function(format!("avg_pool2d/t{t}/32x28x28x64_k2s2"), |b| {
            b.iter(|| avg_pool2d(ap, black_box(&x), &mut py, t).unwrap())
        });
        g.bench_function(format!("avg_pool2d_grad/t{t}/32x28x28x64_k2s2"), |b| {
            b.iter(|| avg_pool2d_grad(ap, black_box(&pdy), &mut dx, t).unwrap())
        });
        g.throughput(bytes(2 * n + n / 4));
        g.bench_function(format!("max_pool2d_grad/t{t}/32x28x28x64_k2s2"), |b| {
            b.iter(|| max_pool2d_grad(mp, black_box(&x), &pdy, &mut dx, t).unwrap())
        });

        // Softmax and cross-entropies over 32 rows of 1000 classes.
        let (r, k) = (32, 1000);
        let z = random(r * k, 13);
        let targets: Vec<f32> = random(r * k, 14).iter().map(|v| v.abs() / 500.0).collect();
        let labels: Vec<i32> = (0..r as i32).map(|i| (i * 37) % k as i32).collect();
        let mut sy = vec![0f32; r * k];
        let mut lv = 0f32;
        g.throughput(bytes(2 * r * k));
        g.bench_function(format!("softmax/t{t}/32x1000"), |b| {
            b.iter(|| softmax(r, k, black_box(&z), &mut sy, t).unwrap())
        });
        g.bench_function(format!("sparse_ce_fused/t{t}/32x1000"), |b| {
            b.iter(|| {
                sparse_softmax_cross_entropy_fused(
                    r,
                    k,
                    black_box(&z),
                    &labels,
                    1.0,
                    &mut lv,
                    &mut sy,
                    t,
                )
                .unwrap()
            })
        });
        let ce = Loss::SoftmaxCrossEntropy {
            rows: r,
            classes: k,
        };
        g.bench_function(format!("dense_ce/t{t}/32x1000"), |b| {
            b.iter(|| loss(ce, black_box(&z), &targets, &mut lv, t).unwrap())
        });
        g.throughput(bytes(3 * r * k));
        g.bench_function(format!("dense_ce_grad/t{t}/32x1000"), |b| {
            b.iter(|| loss_grad(ce, black_box(&z), &targets, 1.0, &mut sy, t).unwrap())
        });

        // Elementwise losses and optimizer updates over 1M values.
        let m = 1 << 20;
        let p = random(m, 15);
        let tg: Vec<f32> = random(m, 16).iter().map(|v| 0.5 + 0.5 * v).collect();
        let mut gd = vec![0f32; m];
        g.throughput(bytes(2 * m));
        for (name, kind) in [("mse", Loss::Mse), ("sigmoid_bce", Loss::SigmoidBce)] {
            g.bench_function(format!("{name}/t{t}/1M"), |b| {
                b.iter(|| loss(kind, black_box(&p), &tg, &mut lv, t).unwrap())
            });
        }
        g.throughput(bytes(3 * m));
        g.bench_function(format!("sigmoid_bce_grad/t{t}/1M"), |b| {
            b.iter(|| loss_grad(Loss::SigmoidBce, black_box(&p), &tg, 1.0, &mut gd, t).unwrap())
        });
        let mut param = random(m, 17);
        let (mut am, mut av) = (vec![0f32; m], vec![0f32; m]);
        let sp = SgdParams {
            lr: 1e-3,
            weight_decay: 1e-4,
        };
        let adp = AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            step: 10,
        };
        g.bench_function(format!("sgd_update/t{t}/1M"), |b| {
            b.iter(|| sgd(sp, &mut param, black_box(&p), t).unwrap())
        });
        g.throughput(bytes(7 * m));
        g.bench_function(format!("adam_update/t{t}/1M"), |b| {
            b.iter(|| adam(adp, &mut param, black_box(&p), &mut am, &mut av, t).unwrap())
        });
    }
    g.finish();
}

/// GPU convolution gradients, tuned vs naive, on buffers already on the device: conv2d dx and
/// dW at 1x56x56x64 -> 64 3x3 pad 1, depthwise dx and dW at 1x56x56x144 3x3 pad 1. Record,
/// submit, `sync()` before the clock stops. Throughput is 2 * MACs.
fn gpu_grad_kernels(c: &mut Criterion) {
    use spore::backend::gpu::kernels::conv2d_grad::{self as cg, InputVariant, WeightVariant};
    use spore::backend::gpu::kernels::depthwise_conv2d_grad::{self as dg, DepthwiseGrad};
    use spore::backend::gpu::{GpuContext, GpuOptions};
    use spore::kernels_cpu::reference::depthwise_conv2d::DepthwiseConv2dParams;
    let opts = GpuOptions {
        allow_software: true,
        ..Default::default()
    };
    let Ok(gpu) = GpuContext::new(&opts) else {
        println!("gpu_grad_kernels: skipped: no GPU adapter");
        return;
    };
    let up = |n: usize, seed: u64| {
        gpu.upload("t", bytemuck::cast_slice(&random(n, seed)))
            .unwrap()
    };
    let mut g = c.benchmark_group(format!("gpu_grad_kernels/{}", gpu.adapter().name));
    // The software adapter needs ~0.1-2 s per call at these shapes.
    g.sample_size(10);
    let p = conv2d::Conv2dParams {
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
    let (xb, wb, yb) = (
        up(p.x_len().unwrap(), 21),
        up(p.w_len().unwrap(), 22),
        up(p.y_len().unwrap(), 23),
    );
    let dxb = gpu.poisoned("dx", (p.x_len().unwrap() * 4) as u64).unwrap();
    let dwb = gpu.poisoned("dw", (p.w_len().unwrap() * 4) as u64).unwrap();
    g.throughput(Throughput::Elements((2 * 56 * 56 * 64 * 64 * 9) as u64));
    for (label, v) in [
        ("tiled", InputVariant::Tiled(cg::INPUT_CANDIDATES[0])),
        ("naive", InputVariant::Naive),
    ] {
        g.bench_function(
            format!("conv2d_grad_input/{label}/1x56x56x64->64/k3"),
            |b| {
                b.iter(|| {
                    let mut rec = gpu.recorder();
                    cg::record_input::<f32>(&gpu, &mut rec, &yb, &wb, &dxb, &p, v).unwrap();
                    rec.submit().unwrap();
                    gpu.sync().unwrap();
                })
            },
        );
    }
    for (label, v) in [
        ("splitk", WeightVariant::SplitK(cg::WeightKnobs::default())),
        ("naive", WeightVariant::Naive),
    ] {
        g.bench_function(
            format!("conv2d_grad_weight/{label}/1x56x56x64->64/k3"),
            |b| {
                b.iter(|| {
                    let mut rec = gpu.recorder();
                    cg::record_weight::<f32>(&gpu, &mut rec, &xb, &yb, &dwb, &p, v).unwrap();
                    rec.submit().unwrap();
                    gpu.sync().unwrap();
                })
            },
        );
    }
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
    let (xb, wb, yb) = (
        up(shape.x_len().unwrap(), 24),
        up(shape.w_len().unwrap(), 25),
        up(shape.y_len().unwrap(), 26),
    );
    let dxb = gpu
        .poisoned("dx", (shape.x_len().unwrap() * 4) as u64)
        .unwrap();
    let dwb = gpu
        .poisoned("dw", (shape.w_len().unwrap() * 4) as u64)
        .unwrap();
    let dp = DepthwiseGrad {
        shape,
        knobs: dg::Knobs::default(),
    };
    g.throughput(Throughput::Elements((2 * 56 * 56 * 144 * 9) as u64));
    for (label, v) in [("tuned", dp.variant()), ("naive", dg::Variant::Naive)] {
        g.bench_function(
            format!("depthwise_grad_input/{label}/1x56x56x144/k3"),
            |b| {
                b.iter(|| {
                    let mut rec = gpu.recorder();
                    dg::record_input_variant::<f32>(&gpu, &mut rec, &yb, &wb, &dxb, &dp, v)
                        .unwrap();
                    rec.submit().unwrap();
                    gpu.sync().unwrap();
                })
            },
        );
        g.bench_function(
            format!("depthwise_grad_weight/{label}/1x56x56x144/k3"),
            |b| {
                b.iter(|| {
                    let mut rec = gpu.recorder();
                    dg::record_weight_variant::<f32>(&gpu, &mut rec, &xb, &yb, &dwb, &dp, v)
                        .unwrap();
                    rec.submit().unwrap();
                    gpu.sync().unwrap();
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    reference_kernels,
    sgemm,
    conv2d_tuned,
    cpu_ops,
    gpu_smoke,
    gpu_kernels,
    gpu_grad_kernels
);
criterion_main!(benches);
