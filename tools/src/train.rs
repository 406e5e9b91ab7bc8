//! `spore train`: trains a model on an MNIST-format digit set (by default LeNet-5 from
//! scratch on the bundled 8,000 training digits, evaluated on the 2,000 held-out ones) on the
//! best available device, with a progress bar, per-epoch loss / accuracy / throughput, a
//! checkpoint after every epoch, the exported inference model, and the curves as CSV and PNG.

use crate::run::{DeviceArg, context};
use indicatif::{ProgressBar, ProgressStyle};
use spore::data::mnist::{self, MnistSplit};
use spore::kernels_cpu::rng::Rng;
use spore::session::Model;
use spore::train::{Loss, Optimizer, Schedule, TrainConfig, TrainSession, Trainable};
use spore::{Error, Result, Tensor};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which optimizer the user picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerArg {
    /// Plain SGD.
    Sgd,
    /// SGD with momentum 0.9.
    Momentum,
    /// Adam.
    Adam,
    /// AdamW (weight decay 0.01).
    Adamw,
}

/// Everything `spore train` takes.
#[derive(Debug, Clone)]
pub struct Options {
    /// A zoo architecture name (`lenet5`) when no model file is given.
    pub arch: String,
    /// A model file to train instead of a zoo architecture.
    pub model: Option<PathBuf>,
    /// MNIST-format directory.
    pub data: PathBuf,
    /// Device.
    pub device: DeviceArg,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Base learning rate.
    pub lr: f32,
    /// Optimizer.
    pub optimizer: OptimizerArg,
    /// Parameter-name prefixes to freeze.
    pub freeze: Vec<String>,
    /// A checkpoint to resume from.
    pub resume: Option<PathBuf>,
    /// Output directory (checkpoint, model, curves).
    pub out: PathBuf,
    /// Seed (initialisation and shuffling).
    pub seed: u64,
    /// Train on only the first N digits (quick runs); 0 = all.
    pub limit: usize,
}

/// MNIST normalisation (PyTorch's usual constants).
const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

/// Images `[n, 28, 28]` u8 -> `[n, 28, 28, 1]` normalised f32; labels -> i32.
fn prepare(split: &MnistSplit, limit: usize) -> Result<(Vec<f32>, Vec<i32>)> {
    let n = if limit > 0 {
        limit.min(split.len())
    } else {
        split.len()
    };
    let px = split.images.as_slice::<u8>()?;
    let x = px[..n * 784]
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - MEAN) / STD)
        .collect();
    let y = split.labels.as_slice::<u8>()?[..n]
        .iter()
        .map(|&l| i32::from(l))
        .collect();
    Ok((x, y))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Runs `spore train`.
pub fn train(o: &Options) -> Result<()> {
    let data = mnist::load(&o.data)?;
    let (train_x, train_y) = prepare(&data.train, o.limit)?;
    let (test_x, test_y) = prepare(&data.test, 0)?;
    let n = train_y.len();
    if o.batch == 0 || o.batch > n {
        return Err(Error::invalid_param(
            "--batch",
            format!("{} must be in 1..={n}", o.batch),
        ));
    }
    let graph = match &o.model {
        Some(path) => spore::format::load_file(path)?,
        None => {
            let arch = spore::models::Arch::from_name(&o.arch)?;
            let cfg = spore::models::ModelConfig {
                input_size: 28,
                in_channels: 1,
                classes: 10,
                batch: o.batch,
                seed: o.seed,
                ..arch.standard_config()
            };
            arch.build(&cfg)?
        }
    };
    let ctx = context(o.device)?;
    let optimizer = match o.optimizer {
        OptimizerArg::Sgd => Optimizer::sgd(o.lr),
        OptimizerArg::Momentum => Optimizer::momentum(o.lr, 0.9),
        OptimizerArg::Adam => Optimizer::adam(o.lr),
        OptimizerArg::Adamw => Optimizer::adamw(o.lr, 0.01),
    };
    let steps_per_epoch = n.div_ceil(o.batch);
    let config = TrainConfig {
        loss: Loss::SparseSoftmaxCrossEntropy,
        optimizer,
        trainable: if o.freeze.is_empty() {
            Trainable::All
        } else {
            Trainable::Freeze(o.freeze.clone())
        },
        schedule: Schedule::Cosine {
            total: (steps_per_epoch * o.epochs) as u64,
            min_factor: 0.05,
        },
        ..Default::default()
    };
    let mut ts = TrainSession::new(&ctx, &Model::from_graph(graph), config)?;
    if let Some(ck) = &o.resume {
        ts.load_checkpoint(ck)?;
        println!("resumed from {} at step {}", ck.display(), ts.steps());
    }
    std::fs::create_dir_all(&o.out).map_err(io_err(&o.out))?;
    println!(
        "training {} on {} ({} trainable tensors, {} training / {} test digits, batch {}, {:?}, lr {})",
        o.model
            .as_ref()
            .map_or(o.arch.clone(), |p| p.display().to_string()),
        ctx.describe().join(", "),
        ts.parameter_names().len(),
        n,
        test_y.len(),
        o.batch,
        o.optimizer,
        o.lr
    );
    let test_images = Tensor::from_vec(&[test_y.len(), 28, 28, 1], test_x)?;
    let test_labels = Tensor::from_vec(&[test_y.len()], test_y)?;
    let curves_path = o.out.join("curves.csv");
    let mut curves = std::fs::File::create(&curves_path).map_err(io_err(&curves_path))?;
    writeln!(
        curves,
        "epoch,train_loss,test_loss,test_accuracy,images_per_s"
    )
    .map_err(io_err(&curves_path))?;
    let mut rng = Rng::new(o.seed ^ 0x5eed);
    let start_epoch = (ts.steps() as usize) / steps_per_epoch;
    let mut last_acc = 0f32;
    let png_path = o.out.join("curves.png");
    let mut plot = crate::plot::Curves::default();
    for epoch in start_epoch..o.epochs {
        // Fisher-Yates shuffle of the sample order, seeded per run.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.range(0, i));
        }
        let bar = ProgressBar::new(steps_per_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, o.epochs));
        let t0 = Instant::now();
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        // The training-loss curve: a running mean over every `every` steps.
        let every = (steps_per_epoch / 25).max(1);
        let mut window = 0f64;
        for chunk in order.chunks(o.batch) {
            let m = chunk.len();
            let mut xb = Vec::with_capacity(m * 784);
            let mut yb = Vec::with_capacity(m);
            for &i in chunk {
                xb.extend_from_slice(&train_x[i * 784..(i + 1) * 784]);
                yb.push(train_y[i]);
            }
            let x = Tensor::from_vec(&[m, 28, 28, 1], xb)?;
            let y = Tensor::from_vec(&[m], yb)?;
            let loss = ts.step(&[x], &y)?;
            loss_sum += f64::from(loss);
            window += f64::from(loss);
            batches += 1;
            if batches % every == 0 {
                let x = epoch as f64 + batches as f64 / steps_per_epoch as f64;
                plot.train_loss.push((x, window / every as f64));
                window = 0.0;
            }
            if batches % 10 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / batches as f64));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        let (test_loss, acc) = ts.evaluate(&test_images, &test_labels, 256)?;
        last_acc = acc;
        let train_loss = loss_sum / batches.max(1) as f64;
        println!(
            "epoch {}/{}: train loss {train_loss:.4}, test loss {test_loss:.4}, test accuracy {:.2}%, {:.0} images/s ({secs:.1} s)",
            epoch + 1,
            o.epochs,
            acc * 100.0,
            n as f64 / secs
        );
        writeln!(
            curves,
            "{},{train_loss},{test_loss},{acc},{}",
            epoch + 1,
            n as f64 / secs
        )
        .map_err(io_err(&curves_path))?;
        ts.save_checkpoint(o.out.join("checkpoint.spore"))?;
        plot.test_loss
            .push(((epoch + 1) as f64, f64::from(test_loss)));
        plot.test_accuracy
            .push(((epoch + 1) as f64, f64::from(acc) * 100.0));
        crate::plot::write_png(&png_path, &plot, o.epochs)?;
    }
    let model_path = o.out.join("model.spore");
    ts.export(&model_path)?;
    println!(
        "test accuracy {:.2}%; checkpoint {}, model {}, curves {} and {}",
        last_acc * 100.0,
        o.out.join("checkpoint.spore").display(),
        model_path.display(),
        curves_path.display(),
        png_path.display()
    );
    Ok(())
}
