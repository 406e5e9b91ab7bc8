//! The autotuner: for each tunable kernel instance of a model, runs every legal candidate on
//! random inputs, rejects any whose output disagrees with the reference (never cached), times
//! the rest (GPU timestamps when the adapter has them, else the wall clock around a submit
//! and a blocking wait; warm-up, several samples, median), prunes candidates clearly slower
//! than the leader, and stops at a time budget.
//!
//! The candidates run through the same path a session uses: the tuner loads each label into
//! the GPU context's tuning table and calls the op's `record_gpu`, so what is measured is what
//! a session with the cache will run. The table is restored afterwards.

use super::TuneSpec;
use super::cache::{Entry, TuneCache};
use crate::backend::gpu::{AdapterSummary, GpuContext};
use crate::conformance::{GPU_TOLERANCE, rel_l2};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorFact};
use crate::ops::{GpuValue, Op};
use crate::plan::fuse::{FuseOptions, fuse};
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::rng::Rng;
use std::time::{Duration, Instant};

/// Label of the self-test candidate (see [`TuneOptions::self_test`]).
pub const BROKEN_LABEL: &str = "self-test: broken";

/// How to tune.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Wall-clock budget for the whole search; instances left when it runs out keep their
    /// defaults (reported as incomplete).
    pub budget: Duration,
    /// Untimed runs before sampling.
    pub warmup: usize,
    /// Timed runs per candidate (the median counts).
    pub samples: usize,
    /// A candidate whose first timed run is this many times the leader's median stops there.
    pub prune_factor: f64,
    /// Largest relative L2 error against the reference a candidate may show.
    pub tolerance: f64,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Which clock times the candidates.
    pub clock: Clock,
    /// Adds to every instance a deliberately wrong candidate (the default kernel with a sign
    /// flipped in every seventh output) that the verifier must reject: a check of the checker.
    pub self_test: bool,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            budget: Duration::from_secs(600),
            warmup: 1,
            samples: 5,
            prune_factor: 1.5,
            tolerance: GPU_TOLERANCE,
            seed: 0x5eed,
            clock: Clock::Auto,
            self_test: false,
        }
    }
}

/// How candidates are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// GPU timestamp queries when the adapter has them, else the wall clock.
    #[default]
    Auto,
    /// Wall clock from submit to completion (what a session's run sees, driver overhead
    /// included; on a software adapter the timestamps measure only part of the work).
    Wall,
}

/// One tunable kernel instance: an op on concrete input shapes, and the nodes that run it.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Key, candidates, shader hash.
    pub spec: TuneSpec,
    /// The op (as planned: fused activations included).
    pub op: Op,
    /// Its input facts (the first node's, for instances that share a key).
    pub inputs: Vec<TensorFact>,
    /// Names of the nodes with this key.
    pub nodes: Vec<String>,
    /// Floating-point operations of one run.
    pub flops: u64,
}

/// The tunable kernel instances of `graph` on `gpu`, after the inference fusion a session
/// applies (so keys match what sessions record), one per key, largest first.
pub fn collect(graph: &Graph, gpu: &GpuContext) -> Result<Vec<Instance>> {
    let (fused, _) = fuse(graph, &FuseOptions::inference())?;
    let mut out: Vec<Instance> = Vec::new();
    for node in fused.nodes() {
        let facts = node
            .inputs
            .iter()
            .map(|&v| fused.value(v).map(|v| v.fact.clone()))
            .collect::<Result<Vec<TensorFact>>>()?;
        let refs: Vec<&TensorFact> = facts.iter().collect();
        if node.op.gpu_support(&refs).is_err() {
            continue;
        }
        let Some(spec) = node.op.gpu_tune(&refs, gpu) else {
            continue;
        };
        if let Some(i) = out.iter_mut().find(|i| i.spec.key == spec.key) {
            i.nodes.push(node.name.clone());
            continue;
        }
        out.push(Instance {
            flops: node.op.flops(&refs),
            spec,
            op: node.op.clone(),
            inputs: facts,
            nodes: vec![node.name.clone()],
        });
    }
    out.sort_by_key(|i| std::cmp::Reverse(i.flops));
    Ok(out)
}

/// What happened to one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Verified and timed in full.
    Timed,
    /// Verified; stopped after one timed run, clearly slower than the leader.
    Pruned,
    /// Its output disagreed with the reference: never cached.
    Rejected(String),
    /// It could not run (a pipeline or recording error).
    Failed(String),
    /// The budget ran out first.
    Skipped,
}

/// One candidate's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateResult {
    /// The candidate's label.
    pub choice: String,
    /// Relative L2 error against the reference (when it ran).
    pub rel_err: Option<f64>,
    /// Median time in microseconds (when timed).
    pub median_us: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

/// One instance's result.
#[derive(Debug, Clone)]
pub struct InstanceResult {
    /// What was tuned.
    pub spec: TuneSpec,
    /// The nodes sharing the key.
    pub nodes: Vec<String>,
    /// Floating-point operations of one run.
    pub flops: u64,
    /// Every candidate, in the order tried (the default first).
    pub candidates: Vec<CandidateResult>,
}

impl InstanceResult {
    /// The default candidate's median time.
    pub fn default_us(&self) -> Option<f64> {
        self.candidates.first().and_then(|c| c.median_us)
    }

    /// The fastest fully timed candidate and its median.
    pub fn best(&self) -> Option<(&str, f64)> {
        self.candidates
            .iter()
            .filter(|c| c.verdict == Verdict::Timed)
            .filter_map(|c| c.median_us.map(|t| (c.choice.as_str(), t)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Default time over best time (1.0 when either is missing).
    pub fn speedup(&self) -> f64 {
        match (self.default_us(), self.best()) {
            (Some(d), Some((_, b))) if b > 0.0 => d / b,
            _ => 1.0,
        }
    }

    /// Candidates whose output the verifier refused.
    pub fn rejected(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Rejected(_)))
            .count()
    }

    /// Whether every candidate was tried before the budget ran out.
    pub fn complete(&self) -> bool {
        !self
            .candidates
            .iter()
            .any(|c| c.verdict == Verdict::Skipped)
    }
}

/// Progress, for a progress bar.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Instances finished.
    pub done: usize,
    /// Instances in all.
    pub total: usize,
    /// The instance being tuned.
    pub key: String,
}

/// The whole search's result.
#[derive(Debug, Clone)]
pub struct TuneReport {
    /// The adapter tuned on.
    pub adapter: AdapterSummary,
    /// `gpu timestamps` or `wall clock`.
    pub clock: &'static str,
    /// One result per instance, in the order tuned (largest first).
    pub instances: Vec<InstanceResult>,
    /// Time the search took.
    pub elapsed: Duration,
    /// Whether the budget stopped the search before every candidate ran.
    pub budget_exhausted: bool,
}

impl TuneReport {
    /// Cache entries for every instance with a timed default and a timed winner (rejected
    /// candidates can never win: only fully timed, verified ones do).
    pub fn entries(&self) -> Vec<Entry> {
        self.instances
            .iter()
            .filter_map(|i| {
                let d = i.default_us()?;
                let (choice, b) = i.best()?;
                Some(TuneCache::entry(&self.adapter, &i.spec, choice, d, b))
            })
            .collect()
    }

    /// Geometric mean of the per-instance speedups (default time / tuned time) over the
    /// instances that have both.
    pub fn geomean_speedup(&self) -> f64 {
        let s: Vec<f64> = self
            .instances
            .iter()
            .filter(|i| i.default_us().is_some() && i.best().is_some())
            .map(InstanceResult::speedup)
            .collect();
        if s.is_empty() {
            return 1.0;
        }
        (s.iter().map(|v| v.ln()).sum::<f64>() / s.len() as f64).exp()
    }

    /// Candidates rejected over all instances.
    pub fn rejected(&self) -> usize {
        self.instances.iter().map(InstanceResult::rejected).sum()
    }

    /// The final table: per instance, default time, best time, speedup, winner, rejected.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<58} {:>5} {:>11} {:>11} {:>7}  {:<22} {:>8}\n",
            "kernel instance", "nodes", "default us", "best us", "speedup", "winner", "rejected"
        );
        for i in &self.instances {
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |t| format!("{t:.1}"));
            let (winner, best) = match i.best() {
                Some((c, t)) => (c.to_string(), Some(t)),
                None => ("(none)".into(), None),
            };
            let mut key = i.spec.key.to_string();
            if !i.complete() {
                key.push_str(" *");
            }
            s.push_str(&format!(
                "{:<58} {:>5} {:>11} {:>11} {:>6.2}x  {:<22} {:>8}\n",
                key,
                i.nodes.len(),
                fmt(i.default_us()),
                fmt(best),
                i.speedup(),
                winner,
                i.rejected()
            ));
        }
        s.push_str(&format!(
            "{} instances, geometric-mean speedup {:.2}x, {} candidates rejected, {:.1} s ({}){}\n",
            self.instances.len(),
            self.geomean_speedup(),
            self.rejected(),
            self.elapsed.as_secs_f64(),
            self.clock,
            if self.budget_exhausted {
                "; budget exhausted (* = not every candidate ran)"
            } else {
                ""
            }
        ));
        s
    }
}

/// Tunes `instances` on `gpu`. `progress` is called before each instance and once at the end.
/// The GPU context's tuning table is left as it was.
pub fn tune(
    gpu: &GpuContext,
    instances: &[Instance],
    opts: &TuneOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TuneReport> {
    if opts.samples == 0 {
        return Err(Error::invalid_param("samples", "at least 1"));
    }
    let start = Instant::now();
    let deadline = start + opts.budget;
    let timed = opts.clock == Clock::Auto && gpu.recorder_timed(1)?.is_some();
    let mut rng = Rng::new(opts.seed);
    let mut results = Vec::with_capacity(instances.len());
    let mut exhausted = false;
    for (n, inst) in instances.iter().enumerate() {
        progress(&Progress {
            done: n,
            total: instances.len(),
            key: inst.spec.key.to_string(),
        });
        let previous = gpu.tuned(&inst.spec.key);
        let r = tune_one(gpu, inst, opts, &mut rng, deadline, timed);
        // Restore the table whatever happened.
        match previous {
            Some(c) => gpu.set_tuned(inst.spec.key.clone(), c),
            None => {
                gpu.remove_tuned(&inst.spec.key);
            }
        }
        let r = r?;
        exhausted |= !r.complete();
        results.push(r);
    }
    progress(&Progress {
        done: instances.len(),
        total: instances.len(),
        key: String::new(),
    });
    Ok(TuneReport {
        adapter: gpu.adapter().clone(),
        clock: if timed {
            "gpu timestamps"
        } else {
            "wall clock"
        },
        instances: results,
        elapsed: start.elapsed(),
        budget_exhausted: exhausted,
    })
}

/// Inputs and timing outputs on the GPU, and the reference outputs, of one instance.
struct Bench {
    inputs: Vec<wgpu::Buffer>,
    /// Output buffers the timed runs write (verification uses fresh poisoned ones).
    outputs: Vec<wgpu::Buffer>,
    in_facts: Vec<TensorFact>,
    out_facts: Vec<TensorFact>,
    want: Vec<Vec<f32>>,
}

fn out_bytes(f: &TensorFact) -> u64 {
    (f.numel() * f.dtype.size()) as u64
}

fn prepare(gpu: &GpuContext, inst: &Instance, rng: &mut Rng) -> Result<Bench> {
    let mut tensors = Vec::with_capacity(inst.inputs.len());
    for f in &inst.inputs {
        if f.dtype != DType::F32 {
            return Err(Error::NotSupported {
                what: format!("tuning {} with a {} input", inst.spec.key, f.dtype),
            });
        }
        let data: Vec<f32> = (0..f.numel())
            .map(|_| rng.uniform(-1.0, 1.0) as f32)
            .collect();
        tensors.push(Tensor::from_vec(&f.shape, data)?);
    }
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let want = inst
        .op
        .eval_ref(&refs)?
        .iter()
        .map(Tensor::to_f32_vec)
        .collect();
    let in_refs: Vec<&TensorFact> = inst.inputs.iter().collect();
    let out_facts = inst
        .op
        .infer(&in_refs)
        .map_err(|reason| Error::invalid_param("instance", reason))?;
    let inputs = tensors
        .iter()
        .map(|t| gpu.upload("tune_input", t.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let outputs = out_facts
        .iter()
        .map(|f| gpu.poisoned("tune_output", out_bytes(f)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Bench {
        inputs,
        outputs,
        in_facts: inst.inputs.clone(),
        out_facts,
        want,
    })
}

/// Records the op into `rec`, writing `outs`.
fn record(
    gpu: &GpuContext,
    inst: &Instance,
    b: &Bench,
    rec: &mut crate::backend::gpu::Recorder<'_>,
    outs: &[wgpu::Buffer],
) -> Result<()> {
    let ins: Vec<GpuValue<'_>> = b
        .inputs
        .iter()
        .zip(&b.in_facts)
        .map(|(buffer, fact)| GpuValue { buffer, fact })
        .collect();
    let os: Vec<GpuValue<'_>> = outs
        .iter()
        .zip(&b.out_facts)
        .map(|(buffer, fact)| GpuValue { buffer, fact })
        .collect();
    inst.op.record_gpu(gpu, rec, &ins, &os)
}

/// Runs the candidate once on poisoned outputs and returns its relative error against the
/// reference (`Err(why)` for a disagreement or a non-finite output).
fn verify(
    gpu: &GpuContext,
    inst: &Instance,
    b: &Bench,
    broken: bool,
    tol: f64,
) -> Result<std::result::Result<f64, String>> {
    let outs = b
        .out_facts
        .iter()
        .map(|f| gpu.poisoned("tune_output", out_bytes(f)))
        .collect::<Result<Vec<_>>>()?;
    let mut rec = gpu.recorder();
    record(gpu, inst, b, &mut rec, &outs)?;
    rec.submit()?;
    let mut worst = 0f64;
    for (i, ((buf, fact), want)) in outs.iter().zip(&b.out_facts).zip(&b.want).enumerate() {
        let bytes = gpu.read_back(buf, out_bytes(fact))?;
        let mut got: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        if broken {
            got.iter_mut().step_by(7).for_each(|v| *v = -*v);
        }
        if let Some(j) = got.iter().position(|v| !v.is_finite()) {
            return Ok(Err(format!("output {i} element {j} is {}", got[j])));
        }
        let e = rel_l2(&got, want);
        // NaN fails too (a NaN error is caught here, not compared).
        if e.is_nan() || e > tol {
            return Ok(Err(format!("output {i}: rel L2 {e:.2e} > {tol:.0e}")));
        }
        worst = worst.max(e);
    }
    Ok(Ok(worst))
}

/// One timed run in seconds: GPU timestamps summed over the passes, else wall clock from
/// submit to completion (recording happens before the clock starts).
fn time_once(gpu: &GpuContext, inst: &Instance, b: &Bench, timed: bool) -> Result<f64> {
    if timed && let Some(mut rec) = gpu.recorder_timed(64)? {
        record(gpu, inst, b, &mut rec, &b.outputs)?;
        if let Some(t) = rec.submit_timed()? {
            return Ok(t);
        }
        return Err(Error::gpu(
            crate::error::GpuErrorKind::Internal,
            "no timestamps were written",
        ));
    }
    let mut rec = gpu.recorder();
    record(gpu, inst, b, &mut rec, &b.outputs)?;
    let t0 = Instant::now();
    rec.submit()?;
    gpu.sync()?;
    Ok(t0.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn tune_one(
    gpu: &GpuContext,
    inst: &Instance,
    opts: &TuneOptions,
    rng: &mut Rng,
    deadline: Instant,
    timed: bool,
) -> Result<InstanceResult> {
    let bench = prepare(gpu, inst, rng)?;
    let mut labels: Vec<(String, bool)> = inst
        .spec
        .candidates
        .iter()
        .map(|c| (c.clone(), false))
        .collect();
    if opts.self_test
        && let Some(first) = inst.spec.candidates.first()
    {
        labels.insert(1, (first.clone(), true));
    }
    let mut out = Vec::with_capacity(labels.len());
    let mut leader = f64::INFINITY;
    for (label, broken) in labels {
        let shown = if broken {
            BROKEN_LABEL.to_string()
        } else {
            label.clone()
        };
        let mut res = CandidateResult {
            choice: shown,
            rel_err: None,
            median_us: None,
            verdict: Verdict::Skipped,
        };
        // The default is always measured (it is the baseline); the rest only within budget.
        if !out.is_empty() && Instant::now() >= deadline {
            out.push(res);
            continue;
        }
        gpu.set_tuned(inst.spec.key.clone(), label.clone());
        match verify(gpu, inst, &bench, broken, opts.tolerance) {
            Err(e) => res.verdict = Verdict::Failed(e.to_string()),
            Ok(Err(why)) => res.verdict = Verdict::Rejected(why),
            Ok(Ok(e)) => {
                res.rel_err = Some(e);
                let run = || time_once(gpu, inst, &bench, timed);
                let mut samples = Vec::with_capacity(opts.samples);
                let outcome = (|| -> Result<Verdict> {
                    for _ in 0..opts.warmup {
                        run()?;
                    }
                    for i in 0..opts.samples {
                        let t = run()?;
                        samples.push(t * 1e6);
                        if i == 0 && t * 1e6 > opts.prune_factor * leader {
                            return Ok(Verdict::Pruned);
                        }
                    }
                    Ok(Verdict::Timed)
                })();
                match outcome {
                    Ok(v) => {
                        let m = median(samples);
                        if v == Verdict::Timed {
                            leader = leader.min(m);
                        }
                        res.median_us = Some(m);
                        res.verdict = v;
                    }
                    Err(e) => res.verdict = Verdict::Failed(e.to_string()),
                }
            }
        }
        out.push(res);
    }
    Ok(InstanceResult {
        spec: inst.spec.clone(),
        nodes: inst.nodes.clone(),
        flops: inst.flops,
        candidates: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![5.0]), 5.0);
    }
}
