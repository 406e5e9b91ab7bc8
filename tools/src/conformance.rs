//! `spore conformance`: every op's seeded cases on every backend this machine has, against the
//! reference (see `spore::conformance`). Prints a table (or `--json`) and says whether all passed.

use spore::Result;
use spore::backend::gpu::{GpuContext, GpuOptions};
use spore::conformance::{self, Backend, Status};

/// Runs the suite; `Ok(false)` when any row failed (or, with `require_all`, is missing).
pub fn run(json: bool, seed: Option<u64>, require_all: bool, no_gpu: bool) -> Result<bool> {
    let seed = seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        spore::kernels_cpu::rng::mix64(t)
    });
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // Conformance wants every backend, so the software adapter counts here.
    let gpu = if no_gpu {
        None
    } else {
        match GpuContext::new(&GpuOptions {
            allow_software: true,
            ..Default::default()
        }) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("no GPU backend: {e}");
                None
            }
        }
    };
    let mut backends = vec![Backend::Reference, Backend::Cpu { threads: 1 }];
    if threads > 1 {
        backends.push(Backend::Cpu { threads });
    }
    if let Some(g) = &gpu {
        backends.push(Backend::Gpu(g));
    }
    let rows = conformance::run(&backends, seed)?;
    let failed = rows
        .iter()
        .any(|r| r.status == Status::Fail || (require_all && r.status == Status::Missing));
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "op": r.op,
                    "backend": r.backend,
                    "cases": r.cases,
                    "worst_rel_l2": r.worst,
                    "tolerance": r.tolerance,
                    "status": r.status.as_str(),
                    "detail": r.detail,
                })
            })
            .collect();
        let doc = serde_json::json!({ "seed": seed, "passed": !failed, "rows": items });
        println!("{doc:#}");
    } else {
        println!("seed {seed} (rerun with --seed {seed})");
        if let Some(g) = &gpu {
            println!("gpu: {} ({})", g.adapter().name, g.adapter().backend);
        }
        print!("{}", conformance::table(&rows));
        let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
        println!(
            "{} rows: {} pass, {} FAIL, {} missing",
            rows.len(),
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Missing)
        );
    }
    Ok(!failed)
}
