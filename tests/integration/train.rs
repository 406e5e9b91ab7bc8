//! Training end to end: LeNet-5 learns the bundled digits, checkpoints resume exactly,
//! frozen parameters stay bit-identical (and get no backward nodes), and a training step gives
//! the same loss on the CPU and on the GPU.

use spore::Tensor;
use spore::data::mnist;
use spore::models::{Arch, ModelConfig};
use spore::session::{Context, Device, GpuOptions, Model};
use spore::train::{Loss, Optimizer, Schedule, TrainConfig, TrainSession, Trainable};

/// `n` normalised digits `[n, 28, 28, 1]` and their labels, from `offset`.
fn digits(split: &mnist::MnistSplit, offset: usize, n: usize) -> (Tensor, Tensor) {
    let px = split.images.as_slice::<u8>().unwrap();
    let x: Vec<f32> = px[offset * 784..(offset + n) * 784]
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - 0.1307) / 0.3081)
        .collect();
    let y: Vec<i32> = split.labels.as_slice::<u8>().unwrap()[offset..offset + n]
        .iter()
        .map(|&l| i32::from(l))
        .collect();
    (
        Tensor::from_vec(&[n, 28, 28, 1], x).unwrap(),
        Tensor::from_vec(&[n], y).unwrap(),
    )
}

fn lenet(batch: usize, seed: u64) -> Model {
    let cfg = ModelConfig {
        input_size: 28,
        in_channels: 1,
        classes: 10,
        batch,
        seed,
        ..Arch::LeNet5.standard_config()
    };
    Model::from_graph(Arch::LeNet5.build(&cfg).unwrap())
}

fn data() -> mnist::Mnist {
    mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/data/mnist-10k")).unwrap()
}

fn config(optimizer: Optimizer, trainable: Trainable) -> TrainConfig {
    TrainConfig {
        loss: Loss::SparseSoftmaxCrossEntropy,
        optimizer,
        trainable,
        schedule: Schedule::Constant,
    }
}

#[test]
fn lenet_learns_the_digits() {
    let d = data();
    let batch = 32;
    let mut ts = TrainSession::new(
        &Context::cpu(),
        &lenet(batch, 3),
        config(Optimizer::momentum(0.05, 0.9), Trainable::All),
    )
    .unwrap();
    let (tx, ty) = digits(&d.test, 0, 500);
    let (loss0, acc0) = ts.evaluate(&tx, &ty, 250).unwrap();
    let mut losses = Vec::new();
    for epoch in 0..2 {
        for b in 0..24 {
            let (x, y) = digits(&d.train, b * batch, batch);
            let l = ts.step(&[x], &y).unwrap();
            assert!(l.is_finite(), "epoch {epoch} batch {b}: loss {l}");
            losses.push(l);
        }
    }
    let (loss1, acc1) = ts.evaluate(&tx, &ty, 250).unwrap();
    println!("test loss {loss0:.3} -> {loss1:.3}, accuracy {acc0:.3} -> {acc1:.3}");
    assert!(loss1 < 0.6 * loss0, "test loss {loss0} -> {loss1}");
    assert!(acc1 > 0.75, "accuracy after 48 steps on 768 digits: {acc1}");
    // The exported model runs in a plain Session with the trained weights.
    let dir = std::env::temp_dir().join(format!("spore-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lenet.spore");
    ts.export(&path).unwrap();
    let g = spore::format::load_file(&path).unwrap();
    let mut s = spore::session::Session::new(&Context::cpu(), &Model::from_graph(g)).unwrap();
    let (x, _) = digits(&d.test, 0, batch);
    *s.input_by_tensor_name("data").unwrap() = x;
    s.run().unwrap();
    assert_eq!(s.outputs().unwrap()[0].1.dims(), [batch, 10]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn checkpoint_resume_continues_with_identical_losses() {
    let d = data();
    let batch = 16;
    let model = lenet(batch, 5);
    let cfg = || config(Optimizer::adam(1e-3), Trainable::All);
    let dir = std::env::temp_dir().join(format!("spore-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("ck.spore");
    let mut a = TrainSession::new(&Context::cpu(), &model, cfg()).unwrap();
    for b in 0..3 {
        let (x, y) = digits(&d.train, b * batch, batch);
        a.step(&[x], &y).unwrap();
    }
    a.save_checkpoint(&ck).unwrap();
    // A crash mid-save leaves a stray temporary file, never a torn checkpoint.
    std::fs::write(dir.join(".ck.spore.tmp-999"), b"torn").unwrap();
    let cont: Vec<f32> = (3..6)
        .map(|b| {
            let (x, y) = digits(&d.train, b * batch, batch);
            a.step(&[x], &y).unwrap()
        })
        .collect();
    let mut r = TrainSession::new(&Context::cpu(), &model, cfg()).unwrap();
    r.load_checkpoint(&ck).unwrap();
    assert_eq!(r.steps(), 3);
    let resumed: Vec<f32> = (3..6)
        .map(|b| {
            let (x, y) = digits(&d.train, b * batch, batch);
            r.step(&[x], &y).unwrap()
        })
        .collect();
    assert_eq!(cont, resumed);
    // A checkpoint of another optimizer does not load, and leaves the session as it was.
    let mut sgd = TrainSession::new(
        &Context::cpu(),
        &model,
        config(Optimizer::momentum(0.1, 0.9), Trainable::All),
    )
    .unwrap();
    assert!(sgd.load_checkpoint(&ck).is_err());
    assert_eq!(sgd.steps(), 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn frozen_parameters_stay_bit_identical_and_get_no_backward() {
    let d = data();
    let batch = 16;
    let model = lenet(batch, 9);
    let names: Vec<String> = model
        .graph()
        .values()
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                spore::graph::ValueKind::Constant {
                    trainable: true,
                    ..
                }
            )
        })
        .map(|v| v.name.clone())
        .collect();
    let frozen: Vec<&String> = names.iter().filter(|n| n.starts_with("conv")).collect();
    assert!(!frozen.is_empty(), "{names:?}");
    let mut ts = TrainSession::new(
        &Context::cpu(),
        &model,
        config(Optimizer::sgd(0.1), Trainable::Freeze(vec!["conv".into()])),
    )
    .unwrap();
    for n in &frozen {
        assert!(ts.parameter(n).is_none(), "{n} should not train");
    }
    // No backward node touches the frozen convolutions (transfer learning runs them forward only).
    let backward_convs: Vec<&str> = ts
        .graph()
        .nodes()
        .iter()
        .map(|n| n.op.name())
        .filter(|op| op.starts_with("conv2d_grad"))
        .collect();
    assert!(backward_convs.is_empty(), "{backward_convs:?}");
    for b in 0..3 {
        let (x, y) = digits(&d.train, b * batch, batch);
        ts.step(&[x], &y).unwrap();
    }
    let g = ts.inference_graph().unwrap();
    for n in &frozen {
        let before = model
            .graph()
            .value(model.graph().value_by_name(n).unwrap())
            .unwrap();
        let after = g.value(g.value_by_name(n).unwrap()).unwrap();
        assert_eq!(before.kind, after.kind, "{n} changed");
    }
    // The trained head did move.
    let fc = names.iter().find(|n| n.starts_with("fc3")).unwrap();
    let before = model
        .graph()
        .value(model.graph().value_by_name(fc).unwrap())
        .unwrap();
    let after = g.value(g.value_by_name(fc).unwrap()).unwrap();
    assert_ne!(before.kind, after.kind);
}

#[test]
fn training_steps_agree_on_cpu_and_gpu() {
    let Some(_) = crate::common::gpu("train/cpu_vs_gpu") else {
        return;
    };
    let d = data();
    let batch = 8;
    let model = lenet(batch, 11);
    let gpu_ctx = Context::builder()
        .devices([Device::Gpu(GpuOptions {
            allow_software: true,
            ..Default::default()
        })])
        .build()
        .unwrap();
    assert!(gpu_ctx.gpu().is_some());
    let cfg = || config(Optimizer::momentum(0.05, 0.9), Trainable::All);
    let mut cpu = TrainSession::new(&Context::cpu(), &model, cfg()).unwrap();
    let mut gpu = TrainSession::new(&gpu_ctx, &model, cfg()).unwrap();
    for b in 0..3 {
        let (x, y) = digits(&d.train, b * batch, batch);
        let lc = cpu.step(std::slice::from_ref(&x), &y).unwrap();
        let lg = gpu.step(&[x], &y).unwrap();
        let rel = (f64::from(lc) - f64::from(lg)).abs() / f64::from(lc).abs().max(1e-6);
        println!("step {b}: cpu {lc} gpu {lg} rel {rel:e}");
        assert!(rel <= 1e-4, "step {b}: cpu {lc}, gpu {lg}");
    }
}
