//! The GPU backward kernels and optimizer updates against the f64 reference on fresh random
//! data: activation derivatives, softmax / log-softmax gradients, broadcast binary gradients,
//! broadcast_to, slice, every loss gradient, max / average / global pooling gradients
//! (stride 2, padding), batch-norm gradients (training and inference), SGD (momentum,
//! dampening, Nesterov, weight decay) and Adam / AdamW; ragged sizes, batch > 1, at least two
//! knob candidates each; determinism of the reductions; plus ignored timing runs.

use crate::common::{gpu, rel_l2, seed};
use spore::backend::gpu::kernels::batch_norm_grad::{self as bng, BatchNormGrad};
use spore::backend::gpu::kernels::broadcast_grad::{self as bg, BinaryGrad, BroadcastTo, Slice};
use spore::backend::gpu::kernels::elementwise_grad::{
    self as eg, ActivationGrad, LossGrad, LossGradKind, RowKnobs, SoftmaxGrad,
};
use spore::backend::gpu::kernels::optimizer::{self as opt, Adam, Sgd};
use spore::backend::gpu::kernels::pool2d::{Pool, Pool2d};
use spore::backend::gpu::kernels::pool2d_grad;
use spore::backend::gpu::kernels::reduce;
use spore::kernels_cpu::reference as r;
use spore::kernels_cpu::reference::activation::Activation;
use spore::kernels_cpu::reference::avg_pool2d::AvgPool2dParams;
use spore::kernels_cpu::reference::batch_norm::{BatchNormParams, BatchNormTrainParams};
use spore::kernels_cpu::reference::binary::BinaryOp;
use spore::kernels_cpu::reference::global_avg_pool::GlobalAvgPoolParams;
use spore::kernels_cpu::reference::max_pool2d::MaxPool2dParams;
use spore::kernels_cpu::reference::window::Padding2d;
use spore::kernels_cpu::rng::Rng;
use spore::ops::OpDef;
use spore::tensor::Tensor;

fn random(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi) as f32).collect()
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32]) {
    let err = rel_l2(got, want);
    assert!(err <= 1e-4, "{what}: rel err {err:e}");
}

#[test]
fn activation_grad_every_kind() {
    let name = "activation_grad/random/gpu-f32";
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
        for (k, n) in [[7, 1003, 4099, 33, 257, 999, 65, 13, 301][i], 2 * 3 * 5 * 7]
            .into_iter()
            .enumerate()
        {
            let x = random(&mut rng, n, -8.0, 8.0);
            let dy = random(&mut rng, n, -1.0, 1.0);
            let mut want = vec![0f32; n];
            r::activation::activation_grad(act, &x, &dy, &mut want).unwrap();
            let knobs = eg::CANDIDATES[(i + k) % eg::CANDIDATES.len()];
            let p = ActivationGrad { len: n, act, knobs };
            let got = eg::run_activation_grad(g, &x, &dy, &p).unwrap();
            close(&format!("{act:?} n={n} {knobs:?}"), &got, &want);
        }
    }
    // GELU's far negative tail pointwise: the erfc form keeps relative precision there.
    let x: Vec<f32> = vec![-7.5, -6.0, -4.0, -2.5];
    let dy = vec![1f32; 4];
    let mut want = vec![0f32; 4];
    r::activation::activation_grad(Activation::Gelu, &x, &dy, &mut want).unwrap();
    let p = ActivationGrad {
        len: 4,
        act: Activation::Gelu,
        knobs: eg::CANDIDATES[0],
    };
    let got = eg::run_activation_grad(g, &x, &dy, &p).unwrap();
    for (gv, wv) in got.iter().zip(&want) {
        assert!(
            ((gv - wv) / wv).abs() < 1e-4,
            "gelu' tail: got {gv:e}, want {wv:e}"
        );
    }
    println!("{name}: every activation derivative matches");
}

#[test]
fn softmax_and_log_softmax_grad() {
    let name = "softmax_grad/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    for (i, (rows, cols)) in [(3, 7), (5, 1000), (37, 13), (2, 301)]
        .into_iter()
        .enumerate()
    {
        for log in [false, true] {
            let x = random(&mut rng, rows * cols, -4.0, 4.0);
            let mut y = vec![0f32; rows * cols];
            if log {
                r::softmax::log_softmax(rows, cols, &x, &mut y).unwrap();
            } else {
                r::softmax::softmax(rows, cols, &x, &mut y).unwrap();
            }
            let dy = random(&mut rng, rows * cols, -1.0, 1.0);
            let mut want = vec![0f32; rows * cols];
            if log {
                r::softmax::log_softmax_grad(rows, cols, &y, &dy, &mut want).unwrap();
            } else {
                r::softmax::softmax_grad(rows, cols, &y, &dy, &mut want).unwrap();
            }
            for knobs in [
                RowKnobs::for_cols(cols),
                eg::ROW_CANDIDATES[i % eg::ROW_CANDIDATES.len()],
            ] {
                let p = SoftmaxGrad {
                    rows,
                    cols,
                    log,
                    knobs,
                };
                let got = eg::run_softmax_grad(g, &y, &dy, &p).unwrap();
                close(&format!("{rows}x{cols} log={log} {knobs:?}"), &got, &want);
            }
        }
    }
}

#[test]
fn binary_grad_broadcasting() {
    let name = "binary_grad/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let configs: [(BinaryOp, &[usize], &[usize]); 8] = [
        (BinaryOp::Add, &[2, 3, 7], &[2, 3, 7]),
        (BinaryOp::Sub, &[3, 1, 5], &[2, 1]),
        (BinaryOp::Mul, &[2, 9, 11, 13], &[13]),
        (BinaryOp::Div, &[2, 5], &[]),
        (BinaryOp::Max, &[3, 4, 2], &[4, 1]),
        (BinaryOp::Min, &[17], &[2, 17]),
        (BinaryOp::Mul, &[3, 1, 7, 1], &[1, 5, 1, 9]),
        (BinaryOp::Add, &[], &[3, 301]),
    ];
    for (i, &(op, sa, sb)) in configs.iter().enumerate() {
        let out = r::binary::broadcast_shape(sa, sb).unwrap();
        let (na, nb, n): (usize, usize, usize) = (
            sa.iter().product(),
            sb.iter().product(),
            out.iter().product(),
        );
        let a = random(&mut rng, na, -2.0, 2.0);
        // b away from 0 (division) and from a (max / min ties).
        let b: Vec<f32> = random(&mut rng, nb, -2.0, 2.0)
            .into_iter()
            .map(|v| if v >= 0.0 { v + 0.5 } else { v - 0.5 })
            .collect();
        let dy = random(&mut rng, n, -1.0, 1.0);
        let (mut da, mut db) = (vec![0f32; na], vec![0f32; nb]);
        r::binary::binary_grad(op, &a, sa, &b, sb, &dy, &mut da, &mut db).unwrap();
        for k in [i, i + 1] {
            let p = BinaryGrad {
                op,
                a_shape: sa.to_vec(),
                b_shape: sb.to_vec(),
                knobs: bg::CANDIDATES[k % bg::CANDIDATES.len()],
                reduce: reduce::CANDIDATES[k % reduce::CANDIDATES.len()],
            };
            let (ga, gb) = bg::run_binary_grad(g, &a, &b, &dy, &p).unwrap();
            close(&format!("{op:?} {sa:?} {sb:?} da"), &ga, &da);
            close(&format!("{op:?} {sa:?} {sb:?} db"), &gb, &db);
        }
    }
}

#[test]
fn broadcast_to_and_slice() {
    let name = "broadcast_to_slice/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let configs: [(&[usize], &[usize], f64); 5] = [
        (&[3, 1, 7], &[3, 5, 7], 1.0),
        (&[4, 1], &[2, 3, 4, 13], 1.0),
        (&[], &[3, 17], 0.25),
        (&[2, 3], &[2, 3], 1.0 / 3.0),
        (&[2, 1, 1, 33], &[2, 9, 7, 33], 1.0 / 63.0),
    ];
    for (i, &(xs, shape, scale)) in configs.iter().enumerate() {
        let x = random(&mut rng, xs.iter().product(), -1.0, 1.0);
        let axes: Vec<i64> = {
            let lead = shape.len() - xs.len();
            (0..shape.len())
                .filter(|&k| k < lead || xs[k - lead] == 1)
                .map(|k| k as i64)
                .collect()
        };
        let mut want = vec![0f32; shape.iter().product()];
        r::reduce::reduce_sum_grad(shape, &axes, &x, &mut want).unwrap();
        let want: Vec<f32> = want
            .iter()
            .map(|&v| (f64::from(v) * scale) as f32)
            .collect();
        for k in [i, i + 1] {
            let p = BroadcastTo {
                x_shape: xs.to_vec(),
                shape: shape.to_vec(),
                scale,
                knobs: bg::CANDIDATES[k % bg::CANDIDATES.len()],
            };
            let got = bg::run_broadcast_to(g, &x, &p).unwrap();
            close(&format!("broadcast {xs:?} -> {shape:?}"), &got, &want);
        }
    }
    let slices: [(&[usize], usize, usize, usize); 4] = [
        (&[2, 3, 7], 2, 1, 5),
        (&[5, 3], 0, 3, 5),
        (&[2, 13, 3], 1, 0, 4),
        (&[3, 301, 5], 1, 17, 300),
    ];
    for (i, &(shape, axis, start, end)) in slices.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = random(&mut rng, n, -1.0, 1.0);
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut want = Vec::new();
        for o in 0..outer {
            let base = o * shape[axis] * inner;
            want.extend_from_slice(&x[base + start * inner..base + end * inner]);
        }
        for k in [i, i + 1] {
            let p = Slice {
                shape: shape.to_vec(),
                axis,
                start,
                end,
                knobs: bg::CANDIDATES[k % bg::CANDIDATES.len()],
            };
            let got = bg::run_slice(g, &x, &p).unwrap();
            assert_eq!(got, want, "slice {shape:?} axis {axis} {start}..{end}");
            // i32 goes through the same word copy.
            let xi: Vec<i32> = (0..n as i32).collect();
            let gi = bg::run_slice(g, &xi, &p).unwrap();
            // The same slice of the index sequence (computed from indices, not by searching
            // x for each value: random f32 data can repeat a value).
            let mut wi = Vec::new();
            for o in 0..outer {
                let base = (o * shape[axis] * inner) as i32;
                wi.extend((start * inner..end * inner).map(|j| base + j as i32));
            }
            assert_eq!(gi, wi, "i32 slice");
        }
    }
}

#[test]
fn loss_grad_every_kind() {
    let name = "loss_grad/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let kinds = [
        LossGradKind::SoftmaxCrossEntropy,
        LossGradKind::SparseSoftmaxCrossEntropy,
        LossGradKind::Mse,
        LossGradKind::SigmoidBce,
        LossGradKind::SmoothL1 { beta: 1.0 },
        LossGradKind::SmoothL1 { beta: 0.0 },
        LossGradKind::SmoothL1 { beta: 0.3 },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        for (k, (rows, classes)) in [(3, 7), (37, 13), (5, 1000)].into_iter().enumerate() {
            let n = rows * classes;
            let scale = if k == 2 { 20.0 } else { 4.0 };
            let pred = random(&mut rng, n, -scale, scale);
            let dloss = rng.uniform(0.5, 2.0) as f32;
            let mut target = random(&mut rng, n, -1.0, 1.0);
            if matches!(
                kind,
                LossGradKind::SoftmaxCrossEntropy | LossGradKind::SigmoidBce
            ) {
                target.iter_mut().for_each(|t| *t = t.abs());
            }
            let labels: Vec<i32> = (0..rows)
                .map(|_| rng.range(0, classes - 1) as i32)
                .collect();
            let mut want = vec![0f32; n];
            match kind {
                LossGradKind::SoftmaxCrossEntropy => r::loss::softmax_cross_entropy_grad(
                    rows, classes, &pred, &target, dloss, &mut want,
                ),
                LossGradKind::SparseSoftmaxCrossEntropy => {
                    r::loss::sparse_softmax_cross_entropy_grad(
                        rows, classes, &pred, &labels, dloss, &mut want,
                    )
                }
                LossGradKind::Mse => r::loss::mse_grad(&pred, &target, dloss, &mut want),
                LossGradKind::SigmoidBce => {
                    r::loss::sigmoid_bce_with_logits_grad(&pred, &target, dloss, &mut want)
                }
                LossGradKind::SmoothL1 { beta } => {
                    r::loss::smooth_l1_grad(beta, &pred, &target, dloss, &mut want)
                }
            }
            .unwrap();
            let ce = matches!(
                kind,
                LossGradKind::SoftmaxCrossEntropy | LossGradKind::SparseSoftmaxCrossEntropy
            );
            let (pr, pc) = if ce { (rows, classes) } else { (1, n) };
            let knobs = eg::ROW_CANDIDATES[(i + k) % eg::ROW_CANDIDATES.len()];
            let p = LossGrad {
                kind,
                rows: pr,
                classes: pc,
                knobs,
            };
            let got = eg::run_loss_grad(g, &pred, &target, &labels, dloss, &p).unwrap();
            close(&format!("{kind:?} {rows}x{classes} {knobs:?}"), &got, &want);
        }
    }
}

#[test]
fn pool_grads_stride2_padding() {
    let name = "pool2d_grad/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let mut done = 0;
    let mut i = 0;
    while done < 12 {
        i += 1;
        let (h, w, c) = (rng.range(5, 13), rng.range(4, 11), [1, 3, 7, 13, 17][i % 5]);
        let (kh, kw) = (rng.range(2, 3), rng.range(2, 4));
        let padding = Padding2d::new(
            rng.range(0, 1),
            rng.range(0, 2),
            rng.range(0, 2),
            rng.range(0, 1),
        );
        let (sh, sw) = (2, rng.range(1, 3));
        let n = 2 + i % 2;
        let pool = if i % 2 == 0 {
            let m = MaxPool2dParams {
                n,
                h,
                w,
                c,
                kh,
                kw,
                stride_h: sh,
                stride_w: sw,
                dilation_h: rng.range(1, 2),
                dilation_w: 1,
                padding,
            };
            if m.validate().is_err() {
                continue;
            }
            Pool::Max(m)
        } else {
            let a = AvgPool2dParams {
                n,
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
        let (x_len, y_len) = match pool {
            Pool::Max(m) => (m.x_len().unwrap(), m.y_len().unwrap()),
            Pool::Avg(a) => (a.x_len().unwrap(), a.y_len().unwrap()),
        };
        // Coarse values so max windows see ties (the first maximum must win).
        let x: Vec<f32> = (0..x_len).map(|_| (rng.range(0, 8) as f32) - 4.0).collect();
        let dy = random(&mut rng, y_len, -1.0, 1.0);
        let mut want = vec![0f32; x_len];
        match pool {
            Pool::Max(m) => r::max_pool2d::max_pool2d_grad(m, &x, &dy, &mut want).unwrap(),
            Pool::Avg(a) => r::avg_pool2d::avg_pool2d_grad(a, &dy, &mut want).unwrap(),
        }
        for k in [i, i + 1] {
            let p = Pool2d {
                pool,
                knobs: pool2d_grad::CANDIDATES[k % pool2d_grad::CANDIDATES.len()],
            };
            let got = pool2d_grad::run(g, &x, &dy, &p).unwrap();
            close(&format!("{pool:?}"), &got, &want);
        }
        done += 1;
    }
    for (k, (n, h, w, c)) in [(2, 7, 5, 13), (3, 1, 1, 3), (2, 14, 14, 33)]
        .into_iter()
        .enumerate()
    {
        let shape = GlobalAvgPoolParams { n, h, w, c };
        let dy = random(&mut rng, n * c, -1.0, 1.0);
        let mut want = vec![0f32; shape.x_len().unwrap()];
        r::global_avg_pool::global_avg_pool_grad(shape, &dy, &mut want).unwrap();
        for kk in [k, k + 1] {
            let got =
                pool2d_grad::run_global(g, &dy, shape, bg::CANDIDATES[kk % bg::CANDIDATES.len()])
                    .unwrap();
            close(&format!("global_avg_pool_grad {shape:?}"), &got, &want);
        }
    }
}

/// The reference training-mode gradient: the forward's saved statistics, then the backward.
fn bn_train_ref(
    rows: usize,
    c: usize,
    eps: f64,
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
) -> bng::Grads<f32> {
    let p = BatchNormTrainParams {
        rows,
        channels: c,
        eps,
        momentum: 0.0,
    };
    let (mut rm, mut rv) = (vec![0f32; c], vec![1f32; c]);
    let (mut mean, mut inv_std) = (vec![0f32; c], vec![0f32; c]);
    let mut y = vec![0f32; rows * c];
    let beta = vec![0f32; c];
    r::batch_norm::batch_norm_train(
        p,
        x,
        gamma,
        &beta,
        &mut rm,
        &mut rv,
        &mut y,
        &mut mean,
        &mut inv_std,
    )
    .unwrap();
    let mut out = bng::Grads {
        dx: vec![0f32; rows * c],
        dgamma: vec![0f32; c],
        dbeta: vec![0f32; c],
    };
    r::batch_norm::batch_norm_grad(
        p,
        x,
        dy,
        gamma,
        &mean,
        &inv_std,
        &mut out.dx,
        &mut out.dgamma,
        &mut out.dbeta,
    )
    .unwrap();
    out
}

#[test]
fn batch_norm_grad_train_and_inference() {
    let name = "batch_norm_grad/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    for (i, (rows, c, offset)) in [
        (2 * 5 * 7, 13, 0.0),
        (1001, 3, 0.0),
        // Not 2 rows: there x_hat = +-1 whatever x is, dx is ~0 and its relative error
        // measures only cancellation.
        (6, 1, 0.0),
        (3 * 37, 17, 100.0),
        (4000, 5, 0.0),
    ]
    .into_iter()
    .enumerate()
    {
        let x = random(&mut rng, rows * c, offset - 3.0, offset + 5.0);
        let gamma = random(&mut rng, c, -2.0, 2.0);
        let dy = random(&mut rng, rows * c, -1.0, 1.0);
        let want = bn_train_ref(rows, c, 1e-5, &x, &gamma, &dy);
        for k in [i, i + 1] {
            let p = BatchNormGrad {
                rows,
                channels: c,
                eps: 1e-5,
                training: true,
                knobs: bng::CANDIDATES[k % bng::CANDIDATES.len()],
            };
            let got = bng::run(g, &x, &gamma, &dy, None, &p).unwrap();
            let what = format!("train {rows}x{c} offset {offset} {:?}", p.knobs);
            close(&format!("{what} dx"), &got.dx, &want.dx);
            close(&format!("{what} dgamma"), &got.dgamma, &want.dgamma);
            close(&format!("{what} dbeta"), &got.dbeta, &want.dbeta);
        }
        // Inference: frozen statistics.
        let mean = random(&mut rng, c, offset - 1.0, offset + 2.0);
        let var = random(&mut rng, c, 0.1, 3.0);
        let shape = BatchNormParams {
            rows,
            channels: c,
            eps: 1e-3,
        };
        let mut want = bng::Grads {
            dx: vec![0f32; rows * c],
            dgamma: vec![0f32; c],
            dbeta: vec![0f32; c],
        };
        r::batch_norm::batch_norm_inference_grad(
            shape,
            &x,
            &dy,
            &mean,
            &var,
            &gamma,
            &mut want.dx,
            &mut want.dgamma,
            &mut want.dbeta,
        )
        .unwrap();
        for k in [i, i + 2] {
            let p = BatchNormGrad {
                rows,
                channels: c,
                eps: 1e-3,
                training: false,
                knobs: bng::CANDIDATES[k % bng::CANDIDATES.len()],
            };
            let got = bng::run(g, &x, &gamma, &dy, Some((&mean, &var)), &p).unwrap();
            let what = format!("inference {rows}x{c} {:?}", p.knobs);
            close(&format!("{what} dx"), &got.dx, &want.dx);
            close(&format!("{what} dgamma"), &got.dgamma, &want.dgamma);
            close(&format!("{what} dbeta"), &got.dbeta, &want.dbeta);
        }
    }
}

#[test]
fn reductions_are_deterministic() {
    let name = "grad_determinism/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let (rows, c) = (20_000, 7);
    let x = random(&mut rng, rows * c, -3.0, 5.0);
    let gamma = random(&mut rng, c, -2.0, 2.0);
    let dy = random(&mut rng, rows * c, -1.0, 1.0);
    let p = BatchNormGrad {
        rows,
        channels: c,
        eps: 1e-5,
        training: true,
        knobs: bng::Knobs::default(),
    };
    let first = bng::run(g, &x, &gamma, &dy, None, &p).unwrap();
    let second = bng::run(g, &x, &gamma, &dy, None, &p).unwrap();
    assert_eq!(
        first, second,
        "batch_norm_grad is not bit-identical run to run"
    );
    let (sa, sb) = ([50, 41, 7], [7]);
    let a = random(&mut rng, 50 * 41 * 7, -1.0, 1.0);
    let b = random(&mut rng, 7, 0.5, 1.5);
    let dy = random(&mut rng, 50 * 41 * 7, -1.0, 1.0);
    let p = BinaryGrad::new(BinaryOp::Mul, &sa, &sb);
    let first = bg::run_binary_grad(g, &a, &b, &dy, &p).unwrap();
    let second = bg::run_binary_grad(g, &a, &b, &dy, &p).unwrap();
    assert_eq!(first, second, "binary_grad is not bit-identical run to run");
    println!("{name}: bit-identical");
}

fn scalar_f32(v: f32) -> Tensor {
    Tensor::from_vec(&[], vec![v]).unwrap()
}

fn scalar_i32(v: i32) -> Tensor {
    Tensor::from_vec(&[], vec![v]).unwrap()
}

#[test]
fn sgd_every_variant() {
    use spore::ops::sgd_update::SgdUpdate;
    let name = "sgd_update/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let variants = [
        (0.0, 0.0, false, 0.0),
        (0.0, 0.0, false, 1e-2),
        (0.9, 0.0, false, 0.0),
        (0.9, 0.1, false, 1e-2),
        (0.8, 0.0, true, 5e-4),
    ];
    for (i, (momentum, dampening, nesterov, weight_decay)) in variants.into_iter().enumerate() {
        for step in [0, 3] {
            let n = [1003, 13, 4099, 257, 33][i];
            let op = SgdUpdate {
                momentum,
                dampening,
                nesterov,
                weight_decay,
            };
            let p = random(&mut rng, n, -1.0, 1.0);
            let gr = random(&mut rng, n, -1.0, 1.0);
            let buf = random(&mut rng, n, -1.0, 1.0);
            let lr = rng.uniform(0.01, 0.2) as f32;
            let t = |v: &[f32]| Tensor::from_vec(&[v.len()], v.to_vec()).unwrap();
            let mut inputs = vec![t(&p), t(&gr), scalar_f32(lr), scalar_i32(step)];
            if momentum != 0.0 {
                inputs.push(t(&buf));
            }
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let want = op.eval_ref(&refs).unwrap();
            let s = Sgd {
                len: n,
                momentum,
                dampening,
                nesterov,
                weight_decay,
                knobs: opt::CANDIDATES[(i + step as usize) % opt::CANDIDATES.len()],
            };
            let buf_in = (momentum != 0.0).then_some(&buf[..]);
            let (np, nb) = opt::run_sgd(g, &p, &gr, lr, step, buf_in, &s).unwrap();
            let what = format!("{op:?} step {step}");
            close(&format!("{what} p"), &np, &want[0].to_f32_vec());
            if momentum != 0.0 {
                close(&format!("{what} buf"), &nb, &want[1].to_f32_vec());
            }
            // The op path (record_gpu through eval_gpu).
            let via_op = op.eval_gpu(g, &refs).unwrap();
            for (got, w) in via_op.iter().zip(&want) {
                close(&format!("{what} op"), &got.to_f32_vec(), &w.to_f32_vec());
            }
        }
    }
}

#[test]
fn adam_every_variant() {
    use spore::ops::adam_update::AdamUpdate;
    let name = "adam_update/random/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let variants = [
        AdamUpdate::default(),
        AdamUpdate {
            weight_decay: 1e-2,
            ..Default::default()
        },
        AdamUpdate {
            beta1: 0.8,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.05,
            decoupled: true,
        },
        AdamUpdate {
            beta1: 0.0,
            beta2: 0.9,
            ..Default::default()
        },
    ];
    for (i, op) in variants.into_iter().enumerate() {
        for step in [0, 1, 29, 5000] {
            let n = [1003, 11, 4099, 37][i];
            let p = random(&mut rng, n, -1.0, 1.0);
            let gr = random(&mut rng, n, -1.0, 1.0);
            let m = random(&mut rng, n, -0.1, 0.1);
            let v = random(&mut rng, n, 0.01, 1.0);
            let lr = rng.uniform(0.001, 0.1) as f32;
            let t = |v: &[f32]| Tensor::from_vec(&[v.len()], v.to_vec()).unwrap();
            let inputs = [
                t(&p),
                t(&gr),
                t(&m),
                t(&v),
                scalar_f32(lr),
                scalar_i32(step),
            ];
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let want = op.eval_ref(&refs).unwrap();
            let a = Adam {
                len: n,
                beta1: op.beta1,
                beta2: op.beta2,
                eps: op.eps,
                weight_decay: op.weight_decay,
                decoupled: op.decoupled,
                knobs: opt::CANDIDATES[(i + step as usize) % opt::CANDIDATES.len()],
            };
            let got = opt::run_adam(g, &p, &gr, &m, &v, lr, step, &a).unwrap();
            let what = format!("{op:?} step {step}");
            close(&format!("{what} p"), &got.p, &want[0].to_f32_vec());
            close(&format!("{what} m"), &got.m, &want[1].to_f32_vec());
            close(&format!("{what} v"), &got.v, &want[2].to_f32_vec());
            // The update itself (p' - p) to 1e-4 too: p' alone hides a wrong small step.
            let dp_got: Vec<f32> = got.p.iter().zip(&p).map(|(a, b)| a - b).collect();
            let dp_want: Vec<f32> = want[0]
                .to_f32_vec()
                .iter()
                .zip(&p)
                .map(|(a, b)| a - b)
                .collect();
            assert!(rel_l2(&dp_got, &dp_want) <= 1e-3, "{what}: update");
            let via_op = op.eval_gpu(g, &refs).unwrap();
            for (got, w) in via_op.iter().zip(&want) {
                close(&format!("{what} op"), &got.to_f32_vec(), &w.to_f32_vec());
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let name = "grad_ops/bad_args/gpu-f32";
    let Some(g) = gpu(name) else {
        return;
    };
    let x = vec![0f32; 6];
    let bad = ActivationGrad {
        len: 6,
        act: Activation::Relu,
        knobs: spore::backend::gpu::kernels::unary::Knobs { wg: 100, ept: 1 },
    };
    assert!(eg::run_activation_grad(g, &x, &x, &bad).is_err());
    let short = SoftmaxGrad::new(2, 4, false);
    assert!(eg::run_softmax_grad(g, &x, &x, &short).is_err());
    let p = BinaryGrad::new(BinaryOp::Add, &[2, 3], &[3, 2]);
    assert!(bg::run_binary_grad(g, &x, &x, &x, &p).is_err());
    let s = Slice {
        shape: vec![2, 3],
        axis: 1,
        start: 2,
        end: 2,
        knobs: bg::Knobs::default(),
    };
    assert!(bg::run_slice(g, &x, &s).is_err());
    let bn = BatchNormGrad {
        rows: 1,
        channels: 6,
        eps: 1e-5,
        training: true,
        knobs: bng::Knobs::default(),
    };
    assert!(bng::run(g, &x, &x, &x, None, &bn).is_err());
    let sgd = Sgd {
        len: 6,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: true,
        weight_decay: 0.0,
        knobs: opt::CANDIDATES[0],
    };
    assert!(opt::run_sgd(g, &x, &x, 0.1, 0, None, &sgd).is_err());
    let adam = Adam {
        len: 6,
        beta1: 1.0,
        beta2: 0.9,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
        knobs: opt::CANDIDATES[0],
    };
    assert!(opt::run_adam(g, &x, &x, &x, &x, 0.1, 0, &adam).is_err());
}

/// Throughput on this GPU (run with `--ignored --nocapture`): batch_norm_grad training on
/// 32x28x28x64 and adam_update on 1M parameters, GB/s of compulsory traffic.
#[test]
#[ignore]
fn timing_batch_norm_grad_and_adam() {
    let name = "grad_ops/timing";
    let Some(g) = gpu(name) else {
        return;
    };
    let mut rng = Rng::new(seed(name));
    let time = |f: &mut dyn FnMut()| {
        f();
        let reps = 5;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() / reps as f64
    };
    let (rows, c) = (32 * 28 * 28, 64);
    let n = rows * c;
    let xb = g
        .upload("x", bytemuck::cast_slice(&random(&mut rng, n, -1.0, 1.0)))
        .unwrap();
    let dyb = g
        .upload("dy", bytemuck::cast_slice(&random(&mut rng, n, -1.0, 1.0)))
        .unwrap();
    let gb = g
        .upload(
            "gamma",
            bytemuck::cast_slice(&random(&mut rng, c, -1.0, 1.0)),
        )
        .unwrap();
    let dxb = g.poisoned("dx", (n * 4) as u64).unwrap();
    let dgb = g.poisoned("dg", (c * 4) as u64).unwrap();
    let dbb = g.poisoned("db", (c * 4) as u64).unwrap();
    for knobs in bng::CANDIDATES {
        let p = BatchNormGrad {
            rows,
            channels: c,
            eps: 1e-5,
            training: true,
            knobs: *knobs,
        };
        let t = time(&mut || {
            let mut rec = g.recorder();
            bng::record::<f32>(g, &mut rec, &xb, &gb, &dyb, None, &dxb, &dgb, &dbb, &p).unwrap();
            rec.submit().unwrap();
            g.sync().unwrap();
        });
        // x and dy read twice (stats, apply), dx written once.
        let bytes = (5 * n * 4) as f64;
        println!(
            "batch_norm_grad train 32x28x28x64 {knobs:?}: {:.2} ms, {:.2} GB/s",
            t * 1e3,
            bytes / t / 1e9
        );
    }
    // The same op on the CPU for comparison: the f64 reference and the tuned kernels.
    {
        use spore::ops::batch_norm_grad::BatchNormGrad as Op;
        let t4 = |v: Vec<f32>, d: &[usize]| Tensor::from_vec(d, v).unwrap();
        let inputs = [
            t4(random(&mut rng, n, -1.0, 1.0), &[32, 28, 28, 64]),
            t4(random(&mut rng, c, -1.0, 1.0), &[64]),
            t4(random(&mut rng, n, -1.0, 1.0), &[32, 28, 28, 64]),
        ];
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let op = Op {
            eps: 1e-5,
            training: true,
        };
        let tr = time(&mut || {
            op.eval_ref(&refs).unwrap();
        });
        let tc = time(&mut || {
            op.eval_cpu(&refs, 2).unwrap();
        });
        let bytes = (5 * n * 4) as f64;
        println!(
            "batch_norm_grad train on the CPU: reference {:.2} ms ({:.2} GB/s), tuned 2 threads \
             {:.2} ms ({:.2} GB/s)",
            tr * 1e3,
            bytes / tr / 1e9,
            tc * 1e3,
            bytes / tc / 1e9
        );
    }
    let n = 1 << 20;
    let bufs: Vec<wgpu::Buffer> = (0..4)
        .map(|_| {
            g.upload("s", bytemuck::cast_slice(&random(&mut rng, n, 0.01, 1.0)))
                .unwrap()
        })
        .collect();
    let outs: Vec<wgpu::Buffer> = (0..3)
        .map(|_| g.poisoned("o", (n * 4) as u64).unwrap())
        .collect();
    {
        use spore::ops::adam_update::AdamUpdate;
        let t1 = |v: Vec<f32>| Tensor::from_vec(&[n], v).unwrap();
        let inputs = [
            t1(random(&mut rng, n, -1.0, 1.0)),
            t1(random(&mut rng, n, -1.0, 1.0)),
            t1(random(&mut rng, n, -0.1, 0.1)),
            t1(random(&mut rng, n, 0.01, 1.0)),
            scalar_f32(0.01),
            scalar_i32(7),
        ];
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let op = AdamUpdate {
            weight_decay: 0.01,
            decoupled: true,
            ..Default::default()
        };
        let t = time(&mut || {
            op.eval_cpu(&refs, 2).unwrap();
        });
        println!(
            "adam_update 1M params on the CPU (eval_cpu = f64 reference): {:.2} ms, {:.2} GB/s",
            t * 1e3,
            (7 * n * 4) as f64 / t / 1e9
        );
    }
    let lr = g.upload("lr", bytemuck::bytes_of(&0.01f32)).unwrap();
    let st = g.upload("step", bytemuck::bytes_of(&7i32)).unwrap();
    for knobs in opt::CANDIDATES {
        let a = Adam {
            len: n,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
            knobs: *knobs,
        };
        let t = time(&mut || {
            let mut rec = g.recorder();
            opt::record_adam::<f32>(
                g,
                &mut rec,
                &bufs[0],
                &bufs[1],
                opt::Moments {
                    m: &bufs[2],
                    v: &bufs[3],
                },
                opt::Scalars { lr: &lr, step: &st },
                &outs[0],
                opt::Moments {
                    m: &outs[1],
                    v: &outs[2],
                },
                &a,
            )
            .unwrap();
            rec.submit().unwrap();
            g.sync().unwrap();
        });
        let bytes = (7 * n * 4) as f64;
        println!(
            "adam_update 1M params {knobs:?}: {:.2} ms, {:.2} GB/s",
            t * 1e3,
            bytes / t / 1e9
        );
    }
}
