//! The `spore` command-line program: `spore devices` lists what Spore can run on.
//! wgpu-hal logs are off by default: probing the GL backend on a headless machine logs
//! harmless EGL failures (set `RUST_LOG=wgpu_hal=warn` to see them).
//! (train, run, bench, autotune, inspect and quantize join as their issues land.)

mod devices;

use clap::{Parser, Subcommand};
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
