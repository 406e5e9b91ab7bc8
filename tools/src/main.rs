//! The `spore` command-line program: `devices`, `inspect`, `run` (and `zoo`).
//! wgpu-hal logs are off by default: probing the GL backend on a headless machine logs
//! harmless EGL failures (set `RUST_LOG=wgpu_hal=warn` to see them).
//! (train, run, bench, autotune, inspect and quantize join as their issues land.)

mod devices;
mod inspect;
mod run;

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

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter (name, backend, type, driver, f16/timestamp support, limits)
    /// and the CPU's features and threads.
    Devices,
    /// Print a model's inputs, outputs, ops, parameter count and FLOPs per op.
    Inspect {
        /// A Spore model file.
        model: PathBuf,
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
    },
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
        Command::Inspect { model } => spore::format::load_file(&model)
            .and_then(|g| inspect::render(&g))
            .map(|report| print!("{report}")),
        Command::Run { model, device, inputs, repeat, out_dir } => {
            run::run(&model, device, &inputs, repeat, out_dir.as_ref())
        }
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
