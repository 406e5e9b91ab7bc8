//! `spore autotune`: collects a model's tunable GPU kernel instances (or reads them from a
//! shapes file), runs the tuner on the chosen adapter with a progress bar, prints the
//! per-instance table, and merges the winners into a JSON cache that `spore run --tune-cache`
//! and `ContextBuilder::tune_cache` load.

use indicatif::{ProgressBar, ProgressStyle};
use spore::backend::gpu::{GpuContext, GpuOptions};
use spore::graph::TensorFact;
use spore::ops::{AttrValue, Op};
use spore::tune::cache::TuneCache;
use spore::tune::tuner::{self, Instance, TuneOptions};
use spore::{DType, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kernel instances come from.
pub enum Source {
    /// A Spore model file.
    Model(PathBuf),
    /// A zoo architecture at `input_size` (None = standard) and `batch`.
    Zoo {
        /// Architecture name.
        name: String,
        /// Input height = width.
        input_size: Option<usize>,
        /// Batch.
        batch: usize,
    },
    /// A JSON list of `{"op": NAME, "attrs": {..}, "inputs": [[dims], ..]}` (f32 inputs).
    Shapes(PathBuf),
}

/// The command's options.
pub struct Args {
    /// Instances to tune.
    pub source: Source,
    /// Case-insensitive substring of the adapter name (software adapters are accepted: naming
    /// or tuning one is an explicit request).
    pub adapter: Option<String>,
    /// Budget in seconds.
    pub budget: u64,
    /// Timed runs per candidate.
    pub samples: usize,
    /// Cache file to merge the winners into.
    pub out: PathBuf,
    /// Add a deliberately wrong candidate that must be rejected.
    pub self_test: bool,
    /// Time with the wall clock even where GPU timestamps exist.
    pub wall_clock: bool,
}

fn read_shapes(path: &Path, gpu: &GpuContext) -> Result<Vec<Instance>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    let bad = |reason: String| Error::InvalidInput {
        reason: format!("{}: {reason}", path.display()),
    };
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON list: {e}")))?;
    let mut out: Vec<Instance> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = item["op"]
            .as_str()
            .ok_or_else(|| bad(format!("item {i}: no \"op\" string")))?;
        let mut attrs = Vec::new();
        if let Some(map) = item["attrs"].as_object() {
            for (k, v) in map {
                let value = match v {
                    serde_json::Value::Bool(b) => AttrValue::Bool(*b),
                    serde_json::Value::String(s) => AttrValue::Str(s.clone()),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => AttrValue::Int(i),
                        None => AttrValue::Float(n.as_f64().unwrap_or(0.0)),
                    },
                    serde_json::Value::Array(a) if a.iter().all(|x| x.is_i64()) => {
                        AttrValue::Ints(a.iter().filter_map(|x| x.as_i64()).collect())
                    }
                    serde_json::Value::Array(a) => {
                        AttrValue::Floats(a.iter().filter_map(|x| x.as_f64()).collect())
                    }
                    _ => return Err(bad(format!("item {i}: attribute `{k}` is not a value"))),
                };
                attrs.push((k.clone(), value));
            }
        }
        let op = Op::from_name(name, &format!("shapes[{i}]"), attrs)?;
        let inputs: Vec<TensorFact> = item["inputs"]
            .as_array()
            .ok_or_else(|| bad(format!("item {i}: no \"inputs\" list")))?
            .iter()
            .map(|dims| {
                dims.as_array()
                    .map(|d| {
                        TensorFact::new(
                            DType::F32,
                            d.iter()
                                .filter_map(|x| x.as_u64())
                                .map(|x| x as usize)
                                .collect::<Vec<_>>(),
                        )
                    })
                    .ok_or_else(|| bad(format!("item {i}: an input is not a dims list")))
            })
            .collect::<Result<_>>()?;
        let refs: Vec<&TensorFact> = inputs.iter().collect();
        op.infer(&refs)
            .map_err(|reason| bad(format!("item {i} ({name}): {reason}")))?;
        let spec = op
            .gpu_tune(&refs, gpu)
            .ok_or_else(|| bad(format!("item {i}: `{name}` has no tunable GPU kernel")))?;
        if let Some(inst) = out.iter_mut().find(|x| x.spec.key == spec.key) {
            inst.nodes.push(format!("shapes[{i}]"));
            continue;
        }
        out.push(Instance {
            flops: op.flops(&refs),
            spec,
            op,
            inputs,
            nodes: vec![format!("shapes[{i}]")],
        });
    }
    Ok(out)
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let gpu = GpuContext::new(&GpuOptions {
        adapter: args.adapter.clone(),
        allow_software: true,
        ..Default::default()
    })?;
    let a = gpu.adapter();
    println!(
        "adapter: {} ({}, {}, driver {}); timestamps {}",
        a.name, a.backend, a.device_type, a.driver, a.timestamp_query
    );
    let instances = match &args.source {
        Source::Model(path) => tuner::collect(&spore::format::load_file(path)?, &gpu)?,
        Source::Zoo {
            name,
            input_size,
            batch,
        } => {
            let arch = spore::models::Arch::from_name(name)?;
            let std = arch.standard_config();
            let cfg = spore::models::ModelConfig {
                input_size: input_size.unwrap_or(std.input_size),
                batch: *batch,
                ..std
            };
            tuner::collect(&arch.build(&cfg)?, &gpu)?
        }
        Source::Shapes(path) => read_shapes(path, &gpu)?,
    };
    let candidates: usize = instances.iter().map(|i| i.spec.candidates.len()).sum();
    println!(
        "{} tunable kernel instances, {candidates} candidates, budget {} s",
        instances.len(),
        args.budget
    );
    let opts = TuneOptions {
        budget: Duration::from_secs(args.budget),
        samples: args.samples,
        self_test: args.self_test,
        clock: if args.wall_clock {
            tuner::Clock::Wall
        } else {
            tuner::Clock::Auto
        },
        ..TuneOptions::default()
    };
    let bar = ProgressBar::new(instances.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = tuner::tune(&gpu, &instances, &opts, &mut |p| {
        bar.set_position(p.done as u64);
        bar.set_message(p.key.clone());
    })?;
    bar.finish_and_clear();
    print!("{}", report.table());
    for inst in &report.instances {
        for c in &inst.candidates {
            if let spore::tune::tuner::Verdict::Rejected(why) = &c.verdict {
                println!("rejected: {} `{}`: {why}", inst.spec.key, c.choice);
            }
        }
    }
    let mut cache = if args.out.exists() {
        TuneCache::load(&args.out)?
    } else {
        TuneCache::default()
    };
    let entries = report.entries();
    let n = entries.len();
    cache.merge(entries);
    cache.save(&args.out)?;
    println!(
        "wrote {n} entries to {} ({} in the file)",
        args.out.display(),
        cache.entries.len()
    );
    Ok(())
}
