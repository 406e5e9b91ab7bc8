//! The `spore` command-line program: `devices`, `inspect`, `run` (and `zoo`).
//! wgpu-hal logs are off by default: probing the GL backend on a headless machine logs
//! harmless EGL failures (set `RUST_LOG=wgpu_hal=warn` to see them).
//! (train, run, bench, autotune, inspect and quantize join as their issues land.)

mod autotune;
mod bench;
mod bench_models;
mod conformance;
mod devices;
mod inspect;
mod plot;
mod run;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Spore: run and train neural networks on the device you already have.
#[derive(Parser)]
#[command(name = "spore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `spore bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchTarget {
    /// The tuned CPU kernels.
    Cpu,
    /// Whole models (forward and training step) through Session / TrainSession.
    Models,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter (name, backend, type, driver, f16/timestamp support, limits)
    /// and the CPU's features and threads.
    Devices,
    /// Print a model's inputs, outputs, ops, parameter count and FLOPs per op.
    Inspect {
        /// A Spore model file.
        model: PathBuf,
        /// Show the execution plan: segments, devices, transfers, why each node went where.
        #[arg(long)]
        plan: bool,
        /// Device to plan for (with --plan).
        #[arg(long, value_enum, default_value = "auto")]
        device: run::DeviceArg,
        /// Let a software GPU adapter (lavapipe) count as a GPU (with --plan).
        #[arg(long)]
        software_gpu: bool,
    },
    /// Run a model and print its outputs and timing.
    Run {
        /// A Spore model file.
        model: PathBuf,
        /// Device to run on.
        #[arg(long, value_enum, default_value = "auto")]
        device: run::DeviceArg,
        /// An input as NAME=FILE.npy (repeatable); missing inputs get seeded random data.
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// Runs to time.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Save every output as NAME.npy into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Check every node's output against the reference and print the worst error per
        /// node (fails naming the node on a mismatch).
        #[arg(long)]
        validate: bool,
        /// Load this autotuning cache (`spore autotune --out`): GPU kernels use the tuned
        /// choices where an entry matches the adapter.
        #[arg(long)]
        tune_cache: Option<PathBuf>,
    },
    /// Train a network on MNIST-format digits (default: LeNet-5 from scratch on the bundled
    /// 8,000 digits, tested on the 2,000 held out) on the best available device.
    Train {
        /// A zoo architecture (default lenet5); ignored with --model.
        #[arg(default_value = "lenet5")]
        arch: String,
        /// Train this model file instead (input [batch, 28, 28, 1], 10 classes).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Directory with {train,test}-{images-idx3,labels-idx1}-ubyte.gz.
        #[arg(long, default_value = "tools/data/mnist-10k")]
        data: PathBuf,
        /// Device.
        #[arg(long, value_enum, default_value = "auto")]
        device: run::DeviceArg,
        /// Epochs.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// Batch size.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Base learning rate (cosine-decayed to 5%).
        #[arg(long, default_value_t = 0.05)]
        lr: f32,
        /// Optimizer.
        #[arg(long, value_enum, default_value = "momentum")]
        optimizer: train::OptimizerArg,
        /// Freeze parameters whose name starts with this prefix (repeatable).
        #[arg(long)]
        freeze: Vec<String>,
        /// Resume from a checkpoint.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "runs/train")]
        out: PathBuf,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Train on only the first N digits (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
    },
    /// Benchmark the tuned CPU kernels or whole models on the peers' workloads (JSONL like `../shared/peers`;
    /// with `--peers FILE` also the side-by-side table with ratios).
    Bench {
        /// What to benchmark: `cpu` (kernels) or `models` (whole models).
        #[arg(value_enum)]
        target: BenchTarget,
        /// Thread counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Only workloads whose name contains this.
        #[arg(long)]
        only: Option<String>,
        /// Append the JSONL records to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Peer results (JSONL from `../shared/peers/run_all.sh`) to compare with; repeatable.
        #[arg(long)]
        peers: Vec<PathBuf>,
        /// `models` only: run on the GPU instead of the CPU.
        #[arg(long)]
        gpu: bool,
        /// `models --gpu` only: let a software adapter (lavapipe) count as a GPU.
        #[arg(long)]
        software_gpu: bool,
        /// `models --gpu` only: also time each workload with this autotuning cache loaded
        /// (default and tuned kernels side by side).
        #[arg(long)]
        tune_cache: Option<PathBuf>,
    },
    /// Tune the GPU kernels of a model (or a shapes file) on an adapter: every candidate is
    /// checked against the reference (wrong ones are rejected, never cached), timed, and the
    /// winners merged into a JSON cache that `spore run --tune-cache` loads.
    Autotune {
        /// A Spore model file.
        #[arg(long, conflicts_with_all = ["zoo", "shapes"])]
        model: Option<PathBuf>,
        /// A zoo architecture (e.g. mobilenet_v2, resnet18).
        #[arg(long, conflicts_with = "shapes")]
        zoo: Option<String>,
        /// A JSON list of {"op": NAME, "attrs": {..}, "inputs": [[dims], ..]}.
        #[arg(long)]
        shapes: Option<PathBuf>,
        /// With --zoo: input height = width (default: the architecture's standard size).
        #[arg(long)]
        input_size: Option<usize>,
        /// With --zoo: batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Case-insensitive substring of the adapter name (`spore devices` lists them);
        /// software adapters are accepted.
        #[arg(long)]
        adapter: Option<String>,
        /// Time budget for the whole search, seconds.
        #[arg(long, default_value_t = 600)]
        budget: u64,
        /// Timed runs per candidate (the median counts).
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// The cache file to merge the results into.
        #[arg(long, default_value = "tune.json")]
        out: PathBuf,
        /// Also try a deliberately wrong candidate per instance, which must be rejected (a
        /// check that verification works).
        #[arg(long)]
        self_test: bool,
        /// Time candidates with the wall clock (submit to completion) even where the adapter
        /// has GPU timestamps.
        #[arg(long)]
        wall_clock: bool,
    },
    /// Run every op's seeded cases on every available backend (reference, tuned CPU at 1 and
    /// N threads, GPU) against the reference; one row per op x backend; exit 1 on any failure.
    Conformance {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seed for the cases (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Also fail when a backend has no kernel for an op.
        #[arg(long)]
        require_all: bool,
        /// Skip the GPU even if one exists.
        #[arg(long)]
        no_gpu: bool,
    },
    /// Write a zoo model (random weights, seeded) to a Spore model file.
    Zoo {
        /// lenet5, alexnet, resnet18, resnet50, mobilenet_v1, mobilenet_v2,
        /// mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0.
        name: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Input height = width (default: the architecture's standard size).
        #[arg(long)]
        input_size: Option<usize>,
        /// Output classes (default: the architecture's standard count).
        #[arg(long)]
        classes: Option<usize>,
        /// Channel width multiplier.
        #[arg(long)]
        width: Option<f64>,
        /// Batch size of the `data` input.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Initialisation seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn zoo(
    name: &str,
    out: &PathBuf,
    input_size: Option<usize>,
    classes: Option<usize>,
    width: Option<f64>,
    batch: usize,
    seed: u64,
) -> spore::Result<()> {
    let arch = spore::models::Arch::from_name(name)?;
    let std = arch.standard_config();
    let cfg = spore::models::ModelConfig {
        input_size: input_size.unwrap_or(std.input_size),
        classes: classes.unwrap_or(std.classes),
        width_multiplier: width.unwrap_or(std.width_multiplier),
        batch,
        seed,
        ..std
    };
    let graph = arch.build(&cfg)?;
    spore::format::save_file(&graph, out)?;
    println!(
        "{}: {} nodes, {} parameters -> {}",
        arch.name(),
        graph.nodes().len(),
        graph.parameter_count(),
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,wgpu_hal=off"),
    )
    .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => {
            print!("{}", devices::render());
            Ok(())
        }
        Command::Inspect {
            model,
            plan,
            device,
            software_gpu,
        } => spore::format::load_file(&model)
            .and_then(|g| {
                if plan {
                    inspect::render_plan(&g, device, software_gpu)
                } else {
                    inspect::render(&g)
                }
            })
            .map(|report| print!("{report}")),
        Command::Run {
            model,
            device,
            inputs,
            repeat,
            out_dir,
            validate,
            tune_cache,
        } => run::run(
            &model,
            device,
            &inputs,
            repeat,
            out_dir.as_ref(),
            validate,
            tune_cache.as_ref(),
        ),
        Command::Train {
            arch,
            model,
            data,
            device,
            epochs,
            batch,
            lr,
            optimizer,
            freeze,
            resume,
            out,
            seed,
            limit,
        } => train::train(&train::Options {
            arch,
            model,
            data,
            device,
            epochs,
            batch,
            lr,
            optimizer,
            freeze,
            resume,
            out,
            seed,
            limit,
        }),
        Command::Bench {
            target: BenchTarget::Cpu,
            threads,
            only,
            out,
            peers,
            ..
        } => bench::cpu(&bench::Options {
            threads,
            only,
            out,
            peers,
        }),
        Command::Bench {
            target: BenchTarget::Models,
            threads,
            only,
            out,
            peers,
            gpu,
            software_gpu,
            tune_cache,
        } => bench_models::models(&bench_models::Options {
            threads,
            only,
            out,
            peers,
            gpu,
            software_gpu,
            tune_cache,
        }),
        Command::Autotune {
            model,
            zoo,
            shapes,
            input_size,
            batch,
            adapter,
            budget,
            samples,
            out,
            self_test,
            wall_clock,
        } => {
            let source = match (model, zoo, shapes) {
                (Some(m), _, _) => Some(autotune::Source::Model(m)),
                (_, Some(name), _) => Some(autotune::Source::Zoo {
                    name,
                    input_size,
                    batch,
                }),
                (_, _, Some(s)) => Some(autotune::Source::Shapes(s)),
                _ => None,
            };
            match source {
                Some(source) => autotune::run(&autotune::Args {
                    source,
                    adapter,
                    budget,
                    samples,
                    out,
                    self_test,
                    wall_clock,
                }),
                None => Err(spore::Error::InvalidInput {
                    reason: "give one of --model FILE, --zoo NAME, --shapes FILE".into(),
                }),
            }
        }
        Command::Conformance {
            json,
            seed,
            require_all,
            no_gpu,
        } => match conformance::run(json, seed, require_all, no_gpu) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Zoo {
            name,
            out,
            input_size,
            classes,
            width,
            batch,
            seed,
        } => zoo(&name, &out, input_size, classes, width, batch, seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e: spore::Error = e;
            eprintln!("error [{}]: {e}", e.code().as_i32());
            ExitCode::FAILURE
        }
    }
}
