//! The small GPU ops against the reference on fresh random data with ragged sizes: every
//! activation, broadcast binaries, softmax / log-softmax, sum / mean reductions, max / average /
//! global pooling, batch norm (inference and training, including a large-offset batch), and
//! bad arguments. Plus an ignored batch-norm timing run.

use crate::common::{gpu, rel_l2, seed};
use spore::backend::gpu::kernels::batch_norm::{self as bn, BatchNorm, BatchNormTrain};
use spore::backend::gpu::kernels::binary::{self, Binary};
use spore::backend::gpu::kernels::pool2d::{self, GlobalAvgPool, Pool, Pool2d};
use spore::backend::gpu::kernels::reduce::{self, Reduce};
use spore::backend::gpu::kernels::softmax::{self, Softmax};
use spore::backend::gpu::kernels::unary::{self, Unary};
use spore::kernels_cpu::reference as r;
use spore::kernels_cpu::reference::activation::Activation;
use spore::kernels_cpu::reference::avg_pool2d::AvgPool2dParams;
use spore::kernels_cpu::reference::batch_norm::{BatchNormParams, BatchNormTrainParams};
use spore::kernels_cpu::reference::binary::BinaryOp;
use spore::kernels_cpu::reference::global_avg_pool::GlobalAvgPoolParams;
use spore::kernels_cpu::reference::max_pool2d::MaxPool2dParams;
use spore::kernels_cpu::reference::window::Padding2d;
use spore::kernels_cpu::rng::Rng;

fn random(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi) as f32).collect()
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32]) {
    let err = rel_l2(got, want);
    assert!(err <= 1e-4, "{what}: rel err {err:e}");
}

#[test]
fn unary_every_activation() {
    let name = "activation/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let acts = [
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu(0.13),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSwish,
        Activation::HardSigmoid,
        Activation::Gelu,
        Activation::GeluTanh,
    ];
    for (i, act) in acts.into_iter().enumerate() {
        // Single elements only for the piecewise-linear functions: the shared snippet's GELU
        // forms lose relative precision in the far negative tail (1 + erf / 1 + tanh cancel,
        // ~1e-3 relative at x = -4 on a value of ~1e-4), which a one-element rel-L2 would
        // measure pointwise.
        let n = [1, 7, 1003, 4099, 1, 33, 257, 999, 65][i];
        let x = random(&mut rng, n, -8.0, 8.0);
        let mut want = vec![0f32; n];
        r::activation::activation(act, &x, &mut want).unwrap();
        let knobs = unary::CANDIDATES[i % unary::CANDIDATES.len()];
        let got = unary::run(g, &x, &Unary { len: n, act, knobs }).unwrap();
        close(&format!("{act:?} n={n} {knobs:?}"), &got, &want);
    }
}

#[test]
fn binary_broadcasts_like_numpy() {
    let name = "binary/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let shapes: [(&[usize], &[usize]); 8] = [
        (&[2, 3, 1, 5], &[3, 4, 1]),
        (&[7], &[7]),
        (&[2, 3, 4, 5], &[5]),
        (&[1], &[3, 1]),
        (&[], &[4, 3]),
        (&[5, 1, 3], &[1, 6, 1]),
        (&[2, 1, 3, 1, 2, 3], &[3, 4, 1, 3]),
        (&[33, 17], &[33, 1]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    for (i, (sa, sb)) in shapes.into_iter().enumerate() {
        let a = random(&mut rng, sa.iter().product(), -2.0, 2.0);
        // Divisors kept away from zero.
        let b: Vec<f32> = random(&mut rng, sb.iter().product(), 0.5, 2.0)
            .into_iter()
            .enumerate()
            .map(|(k, v)| if k % 3 == 1 { -v } else { v })
            .collect();
        for (j, op) in ops.into_iter().enumerate() {
            let p = Binary {
                op,
                a_shape: sa.to_vec(),
                b_shape: sb.to_vec(),
                knobs: binary::CANDIDATES[(i + j) % binary::CANDIDATES.len()],
            };
            let out = p.out_shape().unwrap();
            let mut want = vec![0f32; out.iter().product()];
            r::binary::binary(op, &a, sa, &b, sb, &mut want).unwrap();
            let got = binary::run(g, &a, &b, &p).unwrap();
            close(&format!("{op:?} {sa:?} {sb:?}"), &got, &want);
        }
    }
}

#[test]
fn softmax_and_log_softmax_rows() {
    let name = "softmax/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    for (i, (rows, cols)) in [(3, 1), (5, 7), (2, 1000), (67, 33)]
        .into_iter()
        .enumerate()
    {
        // Large logits: the max subtraction is what keeps exp finite.
        let x = random(&mut rng, rows * cols, -30.0, 90.0);
        for log in [false, true] {
            let mut want = vec![0f32; rows * cols];
            if log {
                r::softmax::log_softmax(rows, cols, &x, &mut want).unwrap();
            } else {
                r::softmax::softmax(rows, cols, &x, &mut want).unwrap();
            }
            let mut p = Softmax::new(rows, cols, log);
            for knobs in [p.knobs, softmax::CANDIDATES[i % softmax::CANDIDATES.len()]] {
                p.knobs = knobs;
                let got = softmax::run(g, &x, &p).unwrap();
                close(
                    &format!("softmax log={log} {rows}x{cols} {knobs:?}"),
                    &got,
                    &want,
                );
            }
        }
    }
}

#[test]
fn reductions_over_last_and_leading_axes() {
    let name = "reduce/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let cases: [(&[usize], &[i64]); 9] = [
        (&[3, 1000], &[-1]),
        (&[5, 7], &[1]),
        (&[4, 5, 6], &[0]),
        (&[4, 5, 6], &[0, 1]),
        (&[2, 3, 4, 5], &[0, 2]),
        (&[2, 3, 4], &[]),
        (&[3, 4], &[0, 1]),
        (&[2, 1, 300], &[2, 1]),
        (&[17], &[0]),
    ];
    for (i, (shape, axes)) in cases.into_iter().enumerate() {
        let x = random(&mut rng, shape.iter().product(), -1.0, 3.0);
        for mean in [false, true] {
            let out: usize = r::reduce::reduced_shape(shape, axes)
                .unwrap()
                .iter()
                .product();
            let mut want = vec![0f32; out];
            if mean {
                r::reduce::reduce_mean(&x, shape, axes, &mut want).unwrap();
            } else {
                r::reduce::reduce_sum(&x, shape, axes, &mut want).unwrap();
            }
            for k in [i, i + 1] {
                let p = Reduce {
                    shape: shape.to_vec(),
                    axes: axes.to_vec(),
                    mean,
                    knobs: reduce::CANDIDATES[k % reduce::CANDIDATES.len()],
                };
                let got = reduce::run(g, &x, &p).unwrap();
                close(
                    &format!("reduce {shape:?} {axes:?} mean={mean}"),
                    &got,
                    &want,
                );
            }
        }
    }
}

#[test]
fn pooling_max_avg_global() {
    let name = "pool2d/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let mut done = 0;
    let mut i = 0;
    while done < 12 {
        i += 1;
        let (h, w, c) = (rng.range(3, 13), rng.range(3, 11), [1, 3, 7, 13, 17][i % 5]);
        let (kh, kw) = (rng.range(1, 3), rng.range(2, 4));
        let padding = Padding2d::new(
            rng.range(0, 1),
            rng.range(0, 2),
            rng.range(0, 2),
            rng.range(0, 1),
        );
        let (sh, sw) = (rng.range(1, 2), rng.range(1, 3));
        let pool = if i % 2 == 0 {
            let m = MaxPool2dParams {
                n: 2,
                h,
                w,
                c,
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dilation_h: rng.range(1, 2),
                dilation_w: rng.range(1, 2),
                padding,
            };
            if m.validate().is_err() {
                continue;
            }
            Pool::Max(m)
        } else {
            let a = AvgPool2dParams {
                n: 2,
                h,
                w,
                c,
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                padding,
                count_include_pad: i % 4 == 1,
            };
            if a.validate().is_err() {
                continue;
            }
            Pool::Avg(a)
        };
        let x_len = match pool {
            Pool::Max(m) => m.x_len().unwrap(),
            Pool::Avg(a) => a.x_len().unwrap(),
        };
        let x = random(&mut rng, x_len, -3.0, 1.0);
        let want = match pool {
            Pool::Max(m) => {
                let mut y = vec![0f32; m.y_len().unwrap()];
                r::max_pool2d::max_pool2d(m, &x, &mut y).unwrap();
                y
            }
            Pool::Avg(a) => {
                let mut y = vec![0f32; a.y_len().unwrap()];
                r::avg_pool2d::avg_pool2d(a, &x, &mut y).unwrap();
                y
            }
        };
        let p = Pool2d {
            pool,
            knobs: pool2d::CANDIDATES[i % pool2d::CANDIDATES.len()],
        };
        let got = pool2d::run(g, &x, &p).unwrap();
        close(&format!("{pool:?}"), &got, &want);
        if let Pool::Max(_) = pool {
            // Max pooling selects values: bit-exact.
            assert_eq!(got, want, "{pool:?}");
        }
        done += 1;
    }
    for (k, (n, h, w, c)) in [(2, 7, 5, 13), (3, 1, 1, 3), (2, 14, 14, 33)]
        .into_iter()
        .enumerate()
    {
        let shape = GlobalAvgPoolParams { n, h, w, c };
        let x = random(&mut rng, shape.x_len().unwrap(), -1.0, 2.0);
        let mut want = vec![0f32; n * c];
        r::global_avg_pool::global_avg_pool(shape, &x, &mut want).unwrap();
        let p = GlobalAvgPool {
            shape,
            knobs: pool2d::CANDIDATES[k % pool2d::CANDIDATES.len()],
        };
        let got = pool2d::run_global_avg(g, &x, &p).unwrap();
        close(&format!("global_avg_pool {shape:?}"), &got, &want);
    }
}

#[test]
fn batch_norm_inference_matches_reference() {
    let name = "batch_norm/inference/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    for (i, (rows, channels)) in [(37, 13), (1000, 3), (2, 1), (301, 17)]
        .into_iter()
        .enumerate()
    {
        let shape = BatchNormParams {
            rows,
            channels,
            eps: 1e-5,
        };
        let x = random(&mut rng, rows * channels, -3.0, 5.0);
        let mean = random(&mut rng, channels, -1.0, 2.0);
        let var = random(&mut rng, channels, 0.1, 3.0);
        let gamma = random(&mut rng, channels, -2.0, 2.0);
        let beta = random(&mut rng, channels, -1.0, 1.0);
        let act = [None, Some(Activation::Relu), Some(Activation::HardSwish)][i % 3];
        let mut want = vec![0f32; rows * channels];
        r::batch_norm::batch_norm_inference(shape, &x, &mean, &var, &gamma, &beta, &mut want)
            .unwrap();
        if let Some(a) = act {
            for v in &mut want {
                *v = a.apply(f64::from(*v)) as f32;
            }
        }
        for k in [i, i + 1] {
            let p = BatchNorm {
                shape,
                act,
                knobs: bn::CANDIDATES[k % bn::CANDIDATES.len()],
            };
            let got = bn::run(g, &x, &mean, &var, &gamma, &beta, &p).unwrap();
            close(&format!("batch_norm {rows}x{channels} {p:?}"), &got, &want);
        }
    }
}

#[test]
fn batch_norm_training_matches_reference() {
    let name = "batch_norm/train/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    // (rows, channels, mean, std): the 100 +- 1 batch is where sum / sum-of-squares in f32
    // would lose the variance.
    for (i, (rows, channels, mu, sd)) in [
        (1200, 5, 100.0, 1.0),
        (2, 3, 0.0, 1.0),
        (257, 17, -2.0, 3.0),
        (4100, 1, 1000.0, 0.5),
    ]
    .into_iter()
    .enumerate()
    {
        let shape = BatchNormTrainParams {
            rows,
            channels,
            eps: 1e-5,
            momentum: 0.1,
        };
        let x: Vec<f32> = (0..rows * channels)
            .map(|_| (mu + sd * rng.normal()) as f32)
            .collect();
        let gamma = random(&mut rng, channels, 0.5, 2.0);
        let beta = random(&mut rng, channels, -1.0, 1.0);
        let rm0 = random(&mut rng, channels, -1.0, 1.0);
        let rv0 = random(&mut rng, channels, 0.5, 2.0);
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let mut y = vec![0f32; rows * channels];
        let (mut sm, mut si) = (vec![0f32; channels], vec![0f32; channels]);
        r::batch_norm::batch_norm_train(
            shape, &x, &gamma, &beta, &mut rm, &mut rv, &mut y, &mut sm, &mut si,
        )
        .unwrap();
        for k in [i, i + 1] {
            let p = BatchNormTrain {
                shape,
                act: None,
                knobs: bn::CANDIDATES[k % bn::CANDIDATES.len()],
            };
            let got = bn::run_train(g, &x, &gamma, &beta, &rm0, &rv0, &p).unwrap();
            let what = format!("batch_norm_train {rows}x{channels} mean {mu} {:?}", p.knobs);
            close(&format!("{what} y"), &got.y, &y);
            close(&format!("{what} saved_mean"), &got.saved_mean, &sm);
            close(&format!("{what} saved_inv_std"), &got.saved_inv_std, &si);
            close(&format!("{what} running_mean"), &got.running_mean, &rm);
            close(&format!("{what} running_var"), &got.running_var, &rv);
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let Some(g) = gpu("gpu_ops/errors/gpu") else {
        return;
    };
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    // unary: length mismatch, zero length, bad knobs.
    let u = Unary {
        len: 5,
        act: Activation::Relu,
        knobs: unary::Knobs::default(),
    };
    assert!(unary::run(g, &x, &u).is_err());
    assert!(unary::run::<f32>(g, &[], &Unary { len: 0, ..u }).is_err());
    let bad = Unary {
        len: 6,
        knobs: unary::Knobs { wg: 300, ept: 1 },
        ..u
    };
    assert!(unary::run(g, &x, &bad).is_err());
    let nan_slope = Unary {
        len: 6,
        act: Activation::LeakyRelu(f64::NAN),
        ..u
    };
    assert!(unary::run(g, &x, &nan_slope).is_err());
    // binary: shapes that do not broadcast, data that does not fit its shape.
    let b = Binary {
        op: BinaryOp::Add,
        a_shape: vec![2, 3],
        b_shape: vec![2],
        knobs: binary::Knobs::default(),
    };
    assert!(binary::run(g, &x, &x[..2], &b).is_err());
    let b = Binary {
        b_shape: vec![3],
        ..b
    };
    assert!(binary::run(g, &x, &x[..2], &b).is_err());
    assert_eq!(
        binary::run(g, &x, &x[..3], &b).unwrap(),
        vec![2.0, 4.0, 6.0, 5.0, 7.0, 9.0]
    );
    // softmax / reduce.
    assert!(softmax::run(g, &x, &Softmax::new(4, 2, false)).is_err());
    assert!(softmax::run(g, &x, &Softmax::new(0, 6, false)).is_err());
    let red = Reduce {
        shape: vec![2, 3],
        axes: vec![2],
        mean: false,
        knobs: reduce::Knobs::default(),
    };
    assert!(reduce::run(g, &x, &red).is_err());
    let red = Reduce {
        axes: vec![1, 1],
        ..red
    };
    assert!(reduce::run(g, &x, &red).is_err());
    let red = Reduce {
        shape: vec![2, 4],
        axes: vec![1],
        ..red
    };
    assert!(reduce::run(g, &x, &red).is_err());
    // pooling: a window bigger than the input, a window of padding only, wrong lengths.
    let m = MaxPool2dParams {
        n: 1,
        h: 2,
        w: 3,
        c: 1,
        kh: 3,
        kw: 1,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
        padding: Padding2d::ZERO,
    };
    let pool = |pool| Pool2d {
        pool,
        knobs: pool2d::Knobs::default(),
    };
    assert!(pool2d::run(g, &x, &pool(Pool::Max(m))).is_err());
    let pad_only = MaxPool2dParams {
        kh: 1,
        padding: Padding2d::new(2, 0, 0, 0),
        ..m
    };
    assert!(pool2d::run(g, &x, &pool(Pool::Max(pad_only))).is_err());
    let ok = MaxPool2dParams { kh: 1, ..m };
    assert!(pool2d::run(g, &x[..5], &pool(Pool::Max(ok))).is_err());
    assert_eq!(
        pool2d::run(g, &x, &pool(Pool::Max(ok))).unwrap(),
        x.to_vec()
    );
    let gap = GlobalAvgPool {
        shape: GlobalAvgPoolParams {
            n: 1,
            h: 0,
            w: 3,
            c: 2,
        },
        knobs: pool2d::Knobs::default(),
    };
    assert!(pool2d::run_global_avg(g, &x, &gap).is_err());
    // batch norm: lengths, one training row, bad momentum and eps.
    let c = [1.0f32, 1.0, 1.0];
    let p = BatchNorm {
        shape: BatchNormParams {
            rows: 2,
            channels: 3,
            eps: 1e-5,
        },
        act: None,
        knobs: bn::Knobs::default(),
    };
    assert!(bn::run(g, &x[..5], &c, &c, &c, &c, &p).is_err());
    assert!(bn::run(g, &x, &c[..2], &c, &c, &c, &p).is_err());
    let neg_eps = BatchNorm {
        shape: BatchNormParams {
            eps: -1.0,
            ..p.shape
        },
        ..p
    };
    assert!(bn::run(g, &x, &c, &c, &c, &c, &neg_eps).is_err());
    let t = BatchNormTrain {
        shape: BatchNormTrainParams {
            rows: 1,
            channels: 6,
            eps: 1e-5,
            momentum: 0.1,
        },
        act: None,
        knobs: bn::Knobs::default(),
    };
    let c6 = [1.0f32; 6];
    assert!(bn::run_train(g, &x, &c6, &c6, &c6, &c6, &t).is_err());
    let t = BatchNormTrain {
        shape: BatchNormTrainParams {
            rows: 2,
            channels: 3,
            eps: 1e-5,
            momentum: 1.5,
        },
        ..t
    };
    assert!(bn::run_train(g, &x, &c, &c, &c, &c, &t).is_err());
    g.check_health().unwrap();
}

/// `cargo test --release --test integration batch_norm_timing -- --ignored --nocapture`
#[test]
#[ignore]
fn batch_norm_timing() {
    let Some(g) = gpu("batch_norm/timing") else {
        return;
    };
    let mut rng = Rng::new(1);
    let (rows, channels) = (32 * 28 * 28, 64);
    let x = random(&mut rng, rows * channels, -1.0, 1.0);
    let c = random(&mut rng, channels, 0.5, 1.5);
    let up = |v: &[f32]| g.upload("t", bytemuck::cast_slice(v)).unwrap();
    let (xb, mb, vb, gb, bb, rmb, rvb) = (up(&x), up(&c), up(&c), up(&c), up(&c), up(&c), up(&c));
    let yb = g.poisoned("y", (x.len() * 4) as u64).unwrap();
    let (smb, sib) = (up(&c), up(&c));
    let bytes = (x.len() * 4) as f64;
    let time = |what: &str, traffic: f64, f: &dyn Fn(&mut spore::backend::gpu::Recorder<'_>)| {
        let once = || {
            let mut rec = g.recorder();
            f(&mut rec);
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
            "batch_norm 32x28x28x64 {what}: {:.2} ms, {:.2} GB/s",
            s * 1e3,
            traffic / s / 1e9
        );
    };
    for &knobs in bn::CANDIDATES {
        let p = BatchNorm {
            shape: BatchNormParams {
                rows,
                channels,
                eps: 1e-5,
            },
            act: Some(Activation::Relu),
            knobs,
        };
        time(&format!("inference {knobs:?}"), 2.0 * bytes, &|rec| {
            bn::record::<f32>(g, rec, &xb, &mb, &vb, &gb, &bb, &yb, &p).unwrap();
        });
        let t = BatchNormTrain {
            shape: BatchNormTrainParams {
                rows,
                channels,
                eps: 1e-5,
                momentum: 0.1,
            },
            act: None,
            knobs,
        };
        // Stats read x once, apply reads it again and writes y.
        time(&format!("training {knobs:?}"), 3.0 * bytes, &|rec| {
            bn::record_train::<f32>(g, rec, &xb, &gb, &bb, &rmb, &rvb, &yb, &smb, &sib, &t)
                .unwrap();
        });
    }
}
