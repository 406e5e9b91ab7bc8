//! `spore bench models`: whole models through the public API (Session, TrainSession) on the
//! CPU, on the peers' model workloads with the same names, batch sizes and timing method
//! (`lenet5 fwd b32`, `lenet5 train step b32`, `mobilenetv2 fwd b1` / `b8`, `mobilenetv2
//! train step b8`), so `--peers` joins them with `../shared/peers`' PyTorch and ONNX Runtime
//! rows. The train step is the peers' one: forward, softmax cross-entropy, backward, SGD with
//! momentum 0.9 (lr 0.01). Random inputs and labels; the weights are the zoo's seeded
//! initialisation (speed does not depend on them).
//!
//! `--device gpu` runs the same workloads on the first GPU (software adapters allowed only
//! with `--software-gpu`); GFLOP/s there are for comparison with the CPU rows, not the peers.

use crate::bench::{Record, time};
use spore::kernels_cpu::rng::Rng;
use spore::models::{Arch, ModelConfig};
use spore::session::{Context, CpuOptions, Device, GpuOptions, Model, Session};
use spore::train::{Optimizer, TrainConfig, TrainSession};
use spore::{Result, Tensor};

/// One model workload.
struct Workload {
    name: &'static str,
    arch: Arch,
    input: usize,
    channels: usize,
    classes: usize,
    batch: usize,
    train: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "lenet5 fwd b32",
        arch: Arch::LeNet5,
        input: 28,
        channels: 1,
        classes: 10,
        batch: 32,
        train: false,
    },
    Workload {
        name: "lenet5 train step b32",
        arch: Arch::LeNet5,
        input: 28,
        channels: 1,
        classes: 10,
        batch: 32,
        train: true,
    },
    Workload {
        name: "mobilenetv2 fwd b1",
        arch: Arch::MobileNetV2,
        input: 224,
        channels: 3,
        classes: 1000,
        batch: 1,
        train: false,
    },
    Workload {
        name: "mobilenetv2 fwd b8",
        arch: Arch::MobileNetV2,
        input: 224,
        channels: 3,
        classes: 1000,
        batch: 8,
        train: false,
    },
    Workload {
        name: "mobilenetv2 train step b8",
        arch: Arch::MobileNetV2,
        input: 224,
        channels: 3,
        classes: 1000,
        batch: 8,
        train: true,
    },
    Workload {
        name: "resnet18 fwd b1",
        arch: Arch::ResNet18,
        input: 224,
        channels: 3,
        classes: 1000,
        batch: 1,
        train: false,
    },
];

/// What `spore bench models` takes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Thread counts (CPU).
    pub threads: Vec<usize>,
    /// Only workloads whose name contains this.
    pub only: Option<String>,
    /// Append JSONL records here.
    pub out: Option<std::path::PathBuf>,
    /// Peer JSONL files to compare against.
    pub peers: Vec<std::path::PathBuf>,
    /// Run on the GPU instead of the CPU.
    pub gpu: bool,
    /// Let a software GPU adapter count (with `gpu`).
    pub software_gpu: bool,
    /// With `gpu`: also run each workload with this autotuning cache loaded, so the default
    /// and tuned kernels are timed side by side.
    pub tune_cache: Option<std::path::PathBuf>,
}

fn context(opts: &Options, threads: usize) -> Result<Context> {
    let device = if opts.gpu {
        Device::Gpu(GpuOptions {
            allow_software: opts.software_gpu,
            ..GpuOptions::default()
        })
    } else {
        Device::Cpu(CpuOptions { threads })
    };
    Context::builder().devices([device]).build()
}

/// `spore bench models`.
pub fn models(opts: &Options) -> Result<()> {
    let want = |name: &str| opts.only.as_deref().is_none_or(|o| name.contains(o));
    let mut rng = Rng::new(0x5eed);
    let mut records = Vec::new();
    let threads = if opts.gpu {
        vec![1]
    } else {
        opts.threads.clone()
    };
    // Default kernels, then (with a cache) the tuned ones, on the same context.
    let tunings: &[bool] = if opts.gpu && opts.tune_cache.is_some() {
        &[false, true]
    } else {
        &[false]
    };
    for &t in &threads {
        let ctx = context(opts, t)?;
        for (w, &tuned) in WORKLOADS
            .iter()
            .filter(|w| want(w.name))
            .flat_map(|w| tunings.iter().map(move |tu| (w, tu)))
        {
            if let Some(gpu) = ctx.gpu() {
                gpu.clear_tuning();
                if let (true, Some(path)) = (tuned, &opts.tune_cache) {
                    let r = ctx.tune_cache(path)?;
                    println!(
                        "{}: tune cache {}: {} entries applied, {} ignored",
                        w.name,
                        path.display(),
                        r.applied,
                        r.ignored.len()
                    );
                }
            }
            let cfg = ModelConfig {
                input_size: w.input,
                in_channels: w.channels,
                classes: w.classes,
                batch: w.batch,
                seed: 1,
                ..w.arch.standard_config()
            };
            let graph = w.arch.build(&cfg)?;
            let fwd_flops: u64 = graph.flops().iter().map(|(_, _, f)| f).sum();
            let n = w.batch * w.input * w.input * w.channels;
            let x: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            let x = Tensor::from_vec(&[w.batch, w.input, w.input, w.channels], x)?;
            let model = Model::from_graph(graph);
            let (med, mn, runs, flops, note) = if w.train {
                let labels: Vec<i32> = (0..w.batch)
                    .map(|_| rng.range(0, w.classes - 1) as i32)
                    .collect();
                let y = Tensor::from_vec(&[w.batch], labels)?;
                let mut ts = TrainSession::new(
                    &ctx,
                    &model,
                    TrainConfig {
                        optimizer: Optimizer::momentum(0.01, 0.9),
                        ..Default::default()
                    },
                )?;
                let (med, mn, runs) = time(|| ts.step(std::slice::from_ref(&x), &y).map(|_| ()))?;
                (
                    med,
                    mn,
                    runs,
                    3 * fwd_flops,
                    "fwd+bwd+SGD(momentum) step; flops = 3x fwd".to_string(),
                )
            } else {
                let mut s = Session::new(&ctx, &model)?;
                let input = s
                    .inputs()
                    .first()
                    .map(|(name, _)| name.to_string())
                    .unwrap_or_default();
                *s.input_by_tensor_name(&input)? = x.clone();
                let (med, mn, runs) = time(|| s.run())?;
                (med, mn, runs, fwd_flops, String::new())
            };
            let record = Record {
                workload: w.name.to_string(),
                peer: format!(
                    "spore {} ({})",
                    env!("CARGO_PKG_VERSION"),
                    match (opts.gpu, tuned) {
                        (false, _) => "cpu",
                        (true, false) => "gpu",
                        (true, true) => "gpu, tuned",
                    }
                ),
                threads: t,
                median_s: med,
                min_s: mn,
                runs,
                flops: Some(flops as f64),
                note,
            };
            crate::bench::emit(&record, opts.out.as_deref())?;
            records.push(record);
        }
    }
    if !opts.peers.is_empty() {
        print!("{}", crate::bench::side_by_side(&records, &opts.peers)?);
    }
    Ok(())
}
