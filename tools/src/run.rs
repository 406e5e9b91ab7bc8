//! `spore run MODEL`: fills inputs (from `.npy` files, else seeded random data), runs the
//! model N times on the chosen device, prints outputs and timing.

use spore::data::npy::{read_npy, write_npy_bytes};
use spore::kernels_cpu::rng::Rng;
use spore::session::{Context, CpuOptions, Device, GpuOptions, Model, Session};
use spore::{DType, Error, Result, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// Which device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// Best available: a hardware GPU, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// A GPU, software adapters included (asked for explicitly), CPU as last resort.
    Gpu,
}

/// The context for a device choice.
pub fn context(device: DeviceArg) -> Result<Context> {
    let devices = match device {
        DeviceArg::Auto => vec![Device::Auto],
        DeviceArg::Cpu => vec![Device::Cpu(CpuOptions::default())],
        DeviceArg::Gpu => vec![Device::Gpu(GpuOptions {
            allow_software: true,
            ..Default::default()
        })],
    };
    Context::builder().devices(devices).build()
}

/// Seeded random data for an input of `dtype` and `dims`.
pub fn random_input(dtype: DType, dims: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let n: usize = dims.iter().product();
    match dtype {
        DType::F32 => Tensor::from_vec(
            dims,
            (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect(),
        ),
        DType::I32 => Tensor::from_vec(dims, (0..n).map(|_| rng.range(0, 9) as i32).collect()),
        DType::U8 => Tensor::from_vec(dims, (0..n).map(|_| rng.range(0, 255) as u8).collect()),
        other => Err(Error::NotSupported {
            what: format!("random {other} inputs"),
        }),
    }
}

/// Runs the command.
pub fn run(
    model: &PathBuf,
    device: DeviceArg,
    inputs: &[String],
    repeat: usize,
    out_dir: Option<&PathBuf>,
    validate: bool,
    tune_cache: Option<&PathBuf>,
) -> Result<()> {
    let model = Model::from_file(model)?;
    let ctx = context(device)?.with_validate(validate);
    if let Some(path) = tune_cache {
        let r = ctx.tune_cache(path)?;
        println!(
            "tune cache {}: {} entries applied, {} for other adapters or no GPU, {} ignored",
            path.display(),
            r.applied,
            r.other_adapters,
            r.ignored.len()
        );
    }
    for note in ctx.notes() {
        println!("note: {note}");
    }
    println!("devices: {}", ctx.describe().join(", "));
    let mut session = Session::new(&ctx, &model)?;
    {
        let plan = session.plan();
        let (cpu, gpu) = plan.node_counts();
        println!(
            "plan: {gpu} nodes on the gpu, {cpu} on the cpu, {} segments ({} gpu); \
             `spore inspect MODEL --plan` explains it",
            plan.segments().len(),
            plan.gpu_segments()
        );
    }
    let names: Vec<(String, DType, Vec<usize>)> = session
        .inputs()
        .iter()
        .map(|(n, t)| (n.to_string(), t.dtype(), t.dims().to_vec()))
        .collect();
    for (i, (name, dtype, dims)) in names.iter().enumerate() {
        let given = inputs.iter().find_map(|arg| {
            let (n, path) = arg.split_once('=')?;
            (n == name).then(|| PathBuf::from(path))
        });
        let tensor = match given {
            Some(path) => read_npy(&path)?,
            None => {
                println!(
                    "input `{name}`: seeded random {dtype} {dims:?} (pass --input {name}=file.npy)"
                );
                random_input(*dtype, dims, 1000 + i as u64)?
            }
        };
        *session.input_by_tensor_name(name)? = tensor;
    }
    for arg in inputs {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if !names.iter().any(|(n, _, _)| n == name) {
            return Err(Error::InvalidInput {
                reason: format!(
                    "`--input {arg}`: the model has no input `{name}` (inputs: {})",
                    names
                        .iter()
                        .map(|n| n.0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut times = Vec::with_capacity(repeat.max(1));
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        session.run()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    for (name, t) in session.outputs()? {
        let v = t.to_f32_vec();
        let head: Vec<String> = v.iter().take(10).map(|x| format!("{x:.4e}")).collect();
        println!(
            "output `{name}`: {} {:?} [{}{}]",
            t.dtype(),
            t.dims(),
            head.join(", "),
            if v.len() > 10 { ", ..." } else { "" }
        );
        if let [rows, cols] = t.dims() {
            let argmax: Vec<usize> = (0..*rows)
                .map(|r| {
                    (0..*cols)
                        .max_by(|&a, &b| v[r * cols + a].total_cmp(&v[r * cols + b]))
                        .unwrap_or(0)
                })
                .collect();
            println!("  argmax per row: {argmax:?}");
        }
        if let Some(dir) = out_dir {
            let path = dir.join(format!("{}.npy", name.replace(['/', ':'], "_")));
            std::fs::write(&path, write_npy_bytes(&t)?).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })?;
            println!("  saved {}", path.display());
        }
    }
    if validate {
        println!("validation (worst relative error against the reference, per node):");
        for r in session.validation_report()? {
            println!(
                "  {:<40} {:<24} {} {:.3e} (tolerance {:.0e})",
                r.node,
                r.op,
                r.device.name(),
                r.worst_rel_error,
                r.tolerance
            );
        }
    }
    // The last run, segment by segment: where the time went and how the GPU was fed.
    let stats = session.run_stats()?;
    for seg in &stats.segments {
        println!(
            "segment {} ({}): {} nodes, {} dispatches, {} submits, {:.1} KiB up, {:.1} KiB back, {:.3} ms",
            seg.index,
            seg.device.name(),
            seg.nodes,
            seg.dispatches,
            seg.submits,
            seg.upload_bytes as f64 / 1024.0,
            seg.readback_bytes as f64 / 1024.0,
            seg.seconds * 1e3
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "runs: {}   min {:.3} ms   median {:.3} ms",
        times.len(),
        times[0],
        median
    );
    Ok(())
}
