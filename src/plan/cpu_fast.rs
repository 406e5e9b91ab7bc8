//! The CPU fast path of plan execution: per-node state prepared once per session and
//! outputs written into recycled buffers.
//!
//! `OpDef::eval_cpu` is stateless: a convolution packs (or Winograd-transforms) its weights
//! on every call, sgemm packs `B` on every call, and every op allocates a fresh output
//! (a zeroed `Vec`, then a copy into a zeroed `Tensor`; fresh big allocations also page-fault).
//! Profiled 2026-11-26 (Zen 4, MobileNetV2 224 b8, 1 thread): about a third of the run was
//! that glue (copies, page clearing, `Tensor::zeros`), and the one-shot sgemm never splits a
//! product under 2^26 flops, so most layers ran on one thread whatever the thread count.
//!
//! Here, for the nodes of a CPU segment:
//! * `conv2d` with constant weights (and constant or no bias) builds a
//!   [`spore_kernels_cpu::conv2d::Conv2dPlan`] at its first run (packed GEMM panels,
//!   Winograd `U`, stem or depthwise layout) and reuses it;
//! * a plain `matmul` whose `B` is a constant matrix packs `B` once
//!   ([`spore_kernels_cpu::sgemm::PackedB`]);
//! * those two, `depthwise_conv2d`, `binary`, `activation` and `global_avg_pool` write into
//!   an f32 tensor from the session's [`BufferPool`] instead of allocating;
//! * every other op runs `eval_cpu` as before.
//!
//! The prepared state lives in the session's per-plan state (`exec::Slots`), so it is rebuilt
//! after `resize` or a re-plan (shapes are fixed within one plan). Measured 2026-11-26 (Zen 4,
//! `spore bench models`, same sitting, best of 2 x 60 runs), MobileNetV2 224 b1 on 1 / 2
//! threads: 14.8 / 12.9 ms before this file, 12.5 / 7.7 ms with it (the sgemm epilogue and
//! Winograd fixes in `kernels-cpu` came after).

use crate::error::{Error, Result};
use crate::graph::{Graph, Node, ValueKind};
use crate::ops::Op;
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::conv2d::Conv2dPlan;
use spore_kernels_cpu::reference::matmul::MatmulParams;
use spore_kernels_cpu::sgemm::{GemmKind, PackedB, SgemmParams, sgemm_prepacked};
use std::collections::HashMap;

/// Recycled f32 tensors, by element count. A tensor handed back is kept only while fewer
/// tensors of its size are pooled than the pool itself allocated, so the pool never grows
/// beyond the most same-sized values one run needed at once (tensors `eval_cpu` allocated
/// are dropped once that many are kept).
#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<usize, Vec<Tensor>>,
    allocated: HashMap<usize, usize>,
}

impl BufferPool {
    /// An f32 tensor of `dims` with unspecified contents (a recycled one when available).
    pub(crate) fn take(&mut self, dims: &[usize]) -> Result<Tensor> {
        let n = crate::shape::numel(dims)?;
        if let Some(t) = self.free.get_mut(&n).and_then(Vec::pop) {
            // Test builds poison recycled buffers (NaN), so a kernel that leaves an element
            // unwritten shows in every session test instead of silently reusing old data.
            #[cfg(test)]
            let t = t.map_f32(|_| f32::NAN)?;
            return t.reshape(dims);
        }
        *self.allocated.entry(n).or_insert(0) += 1;
        Tensor::zeros(DType::F32, dims)
    }

    /// Hands `t` back for reuse (dropped when the pool already keeps enough of its size).
    pub(crate) fn give(&mut self, t: Tensor) {
        if t.dtype() != DType::F32 {
            return;
        }
        let n = t.numel();
        let cap = self.allocated.get(&n).copied().unwrap_or(0);
        let list = self.free.entry(n).or_default();
        if list.len() < cap {
            list.push(t);
        }
    }

    /// Tensors currently pooled (tests).
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.free.values().map(Vec::len).sum()
    }
}

/// What a node keeps between runs.
enum Prepared {
    /// No preparation: the op's own `eval_cpu`.
    Generic,
    /// A convolution with its weights prepared.
    Conv(Box<Conv2dPlan>),
    /// A product with a constant, packed `B`: `C[m, n] = act(A[m, k] @ B + bias)`.
    MatMul(Box<PackedMatMul>),
    /// An op that only needs its output written into a pooled buffer.
    Direct,
}

/// A matmul with its constant `B` packed in column slabs `(first column, width, panels)`:
/// one slab (threads split the rows of `C`), or, for products with too few rows to split
/// (a classifier at batch 1..11), one slab per thread, each worker streaming its share of
/// `B` (measured 2026-11-26, Zen 4, 2 threads: MobileNetV2's 1280 -> 1000 classifier at
/// batch 1 was 4.6% of the run on the calling thread alone).
struct PackedMatMul {
    slabs: Vec<(usize, usize, PackedB)>,
    sp: SgemmParams,
}

/// Fewest rows of `C` for which the sgemm splits rows over threads (2 x its 6-row block).
const MIN_SPLIT_ROWS: usize = 12;

/// The per-session CPU state of one plan: prepared nodes and the buffer pool.
#[derive(Default)]
pub(crate) struct CpuState {
    /// Indexed by node; `None` until the node's first run.
    prepared: Vec<Option<Prepared>>,
    /// Recycled output buffers.
    pub(crate) pool: BufferPool,
}

/// The data of input `i` when it is a graph constant.
fn constant<'g>(graph: &'g Graph, node: &Node, i: usize) -> Option<&'g Tensor> {
    let v = node.inputs.get(i)?;
    match &graph.value(*v).ok()?.kind {
        ValueKind::Constant { data, .. } => Some(data),
        _ => None,
    }
}

/// Input `i` as f32 data.
fn f32_in<'a>(node: &Node, ins: &[&'a Tensor], i: usize) -> Result<&'a [f32]> {
    ins.get(i)
        .ok_or_else(|| exec_err(node, format!("missing input {i}")))?
        .as_slice::<f32>()
}

/// The dimensions of input `i`.
fn dims_in<'a>(node: &Node, ins: &[&'a Tensor], i: usize) -> Result<&'a [usize]> {
    Ok(ins
        .get(i)
        .ok_or_else(|| exec_err(node, format!("missing input {i}")))?
        .dims())
}

/// An execution error naming `node`.
fn exec_err(node: &Node, reason: impl Into<String>) -> Error {
    Error::OpExecution {
        op: node.op.name().into(),
        node: node.name.clone(),
        reason: reason.into(),
    }
}

/// Builds what `node` keeps between runs (its inputs as they are at its first run), for
/// `threads` workers.
fn prepare(graph: &Graph, node: &Node, ins: &[&Tensor], threads: usize) -> Result<Prepared> {
    let f32s = ins.iter().all(|t| t.dtype() == DType::F32) && node.outputs.len() == 1;
    if !f32s {
        return Ok(Prepared::Generic);
    }
    Ok(match &node.op {
        Op::Conv2d(c) => {
            let (Some(w), true) = (
                constant(graph, node, 1),
                ins.len() == 2 || constant(graph, node, 2).is_some(),
            ) else {
                return Ok(Prepared::Direct);
            };
            let (x, wt) = match (ins.first(), ins.get(1)) {
                (Some(x), Some(wt)) => (x, wt),
                _ => return Ok(Prepared::Generic),
            };
            let p = c
                .params(x.dims(), wt.dims())
                .map_err(|reason| exec_err(node, reason))?;
            let bias = match ins.get(2) {
                Some(b) => Some(b.as_slice::<f32>()?),
                None => None,
            };
            let plan = Conv2dPlan::new(&p, w.as_slice::<f32>()?, bias, c.act)?;
            Prepared::Conv(Box::new(plan))
        }
        Op::MatMul(m) => {
            let (Some(b), Some(a)) = (constant(graph, node, 1), ins.first()) else {
                return Ok(Prepared::Direct);
            };
            if m.transpose_a || b.dims().len() != 2 {
                return Ok(Prepared::Direct);
            }
            let (p, _) = m
                .params(a.dims(), b.dims())
                .map_err(|reason| exec_err(node, reason))?;
            // `A` is `[batch, m, k]` row-major against one shared `B`: one `[batch * m, k]`
            // product.
            let rows = p.batch * p.m;
            let mut mm = MatmulParams::new(rows, p.n, p.k);
            mm.transpose_b = false;
            let kind = GemmKind::for_tier(spore_kernels_cpu::kernels().tier);
            let bm = b.as_slice::<f32>()?;
            let (k, n) = (p.k, p.n);
            // Column slabs, 16-aligned (the AVX2 panel width), one per thread.
            let per = if rows < MIN_SPLIT_ROWS && threads > 1 {
                n.div_ceil(threads.min(n / 32).max(1)).next_multiple_of(16)
            } else {
                n
            };
            let mut slabs = Vec::new();
            for j0 in (0..n).step_by(per.max(1)) {
                let nw = per.min(n - j0);
                let packed = if nw == n {
                    PackedB::new(kind, k, n, m.transpose_b, bm)?
                } else if m.transpose_b {
                    // `B` is `[n, k]`: the slab is rows j0..j0 + nw.
                    let part = bm
                        .get(j0 * k..(j0 + nw) * k)
                        .ok_or_else(|| exec_err(node, "matmul weight shorter than its shape"))?;
                    PackedB::new(kind, k, nw, true, part)?
                } else {
                    // `B` is `[k, n]`: gather the slab's columns.
                    let part: Vec<f32> = bm
                        .chunks_exact(n)
                        .flat_map(|row| row.iter().skip(j0).take(nw).copied())
                        .collect();
                    PackedB::new(kind, k, nw, false, &part)?
                };
                slabs.push((j0, nw, packed));
            }
            let sp = SgemmParams {
                mm,
                activation: m.act,
                threads: 1,
            };
            Prepared::MatMul(Box::new(PackedMatMul { slabs, sp }))
        }
        Op::DepthwiseConv2d(_) | Op::Binary(_) | Op::Activation(_) | Op::GlobalAvgPool(_) => {
            Prepared::Direct
        }
        _ => Prepared::Generic,
    })
}

impl CpuState {
    /// Runs `node` (index `idx` in the plan graph) on `ins` with up to `threads` threads and
    /// returns its outputs.
    pub(crate) fn run(
        &mut self,
        graph: &Graph,
        idx: usize,
        node: &Node,
        ins: &[&Tensor],
        threads: usize,
    ) -> Result<Vec<Tensor>> {
        if self.prepared.len() != graph.nodes().len() {
            self.prepared = (0..graph.nodes().len()).map(|_| None).collect();
        }
        let slot = self
            .prepared
            .get_mut(idx)
            .ok_or_else(|| exec_err(node, "node index outside the plan"))?;
        if slot.is_none() {
            *slot = Some(prepare(graph, node, ins, threads)?);
        }
        let Some(prep) = slot.as_ref() else {
            return node.op.eval_cpu(ins, threads);
        };
        if matches!(prep, Prepared::Generic) {
            return node.op.eval_cpu(ins, threads);
        }
        let out_id = node
            .outputs
            .first()
            .ok_or_else(|| exec_err(node, "no output"))?;
        let dims = graph.value(*out_id)?.fact.shape.clone();
        let mut out = self.pool.take(&dims)?;
        let r = run_into(prep, node, ins, threads, out.as_mut_slice::<f32>()?);
        match r {
            Ok(()) => Ok(vec![out]),
            Err(e) => {
                self.pool.give(out);
                Err(e)
            }
        }
    }
}

/// Runs a prepared node, writing its single output into `y` (every element).
fn run_into(
    prep: &Prepared,
    node: &Node,
    ins: &[&Tensor],
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    match (prep, &node.op) {
        (Prepared::Conv(plan), _) => Ok(plan.run(f32_in(node, ins, 0)?, threads, y)?),
        (Prepared::MatMul(pm), _) => {
            let sp = SgemmParams { threads, ..pm.sp };
            let bias = ins.get(2).map(|b| b.as_slice::<f32>()).transpose()?;
            let a = f32_in(node, ins, 0)?;
            if let [(_, _, packed)] = pm.slabs.as_slice() {
                return Ok(sgemm_prepacked(&sp, a, packed, bias, y)?);
            }
            let (rows, n) = (sp.mm.m, sp.mm.n);
            let parts = spore_kernels_cpu::parallel::par_map(
                threads,
                pm.slabs.len(),
                |t| -> Result<Vec<f32>> {
                    let (j0, nw, packed) = pm
                        .slabs
                        .get(t)
                        .ok_or_else(|| exec_err(node, "missing weight slab"))?;
                    let mut part = vec![0.0f32; rows * nw];
                    let slab = SgemmParams {
                        mm: MatmulParams::new(rows, *nw, sp.mm.k),
                        threads: 1,
                        ..sp
                    };
                    let b = bias
                        .map(|b| {
                            b.get(*j0..j0 + nw)
                                .ok_or_else(|| exec_err(node, "short bias"))
                        })
                        .transpose()?;
                    sgemm_prepacked(&slab, a, packed, b, &mut part)?;
                    Ok(part)
                },
            )?;
            for ((j0, nw, _), part) in pm.slabs.iter().zip(parts) {
                let part = part?;
                for (yr, pr) in y.chunks_exact_mut(n).zip(part.chunks_exact(*nw)) {
                    if let Some(dst) = yr.get_mut(*j0..j0 + nw) {
                        dst.copy_from_slice(pr);
                    }
                }
            }
            Ok(())
        }
        (_, Op::Conv2d(c)) => {
            let (x, w) = (f32_in(node, ins, 0)?, f32_in(node, ins, 1)?);
            let bias = ins.get(2).map(|b| b.as_slice::<f32>()).transpose()?;
            let p = c
                .params(dims_in(node, ins, 0)?, dims_in(node, ins, 1)?)
                .map_err(|reason| exec_err(node, reason))?;
            Ok(spore_kernels_cpu::conv2d_fast(
                &p, x, w, bias, c.act, threads, y,
            )?)
        }
        (_, Op::MatMul(m)) => {
            let (a, b) = (f32_in(node, ins, 0)?, f32_in(node, ins, 1)?);
            let bias = ins.get(2).map(|b| b.as_slice::<f32>()).transpose()?;
            let (p, _) = m
                .params(dims_in(node, ins, 0)?, dims_in(node, ins, 1)?)
                .map_err(|reason| exec_err(node, reason))?;
            let sp = SgemmParams {
                mm: p,
                activation: m.act,
                threads,
            };
            Ok(spore_kernels_cpu::sgemm(&sp, a, b, bias, y)?)
        }
        (_, Op::DepthwiseConv2d(d)) => {
            let (x, w) = (f32_in(node, ins, 0)?, f32_in(node, ins, 1)?);
            let bias = ins.get(2).map(|b| b.as_slice::<f32>()).transpose()?;
            let p = d
                .params(dims_in(node, ins, 0)?, dims_in(node, ins, 1)?)
                .map_err(|reason| exec_err(node, reason))?;
            Ok(spore_kernels_cpu::depthwise_conv2d::depthwise_conv2d_fast(
                &p, x, w, bias, d.act, threads, y,
            )?)
        }
        (_, Op::Binary(b)) => {
            let (x0, x1) = (f32_in(node, ins, 0)?, f32_in(node, ins, 1)?);
            Ok(spore_kernels_cpu::binary::binary(
                b.kind,
                x0,
                dims_in(node, ins, 0)?,
                x1,
                dims_in(node, ins, 1)?,
                y,
                threads,
            )?)
        }
        (_, Op::Activation(a)) => Ok(spore_kernels_cpu::activation::activation(
            a.kind,
            f32_in(node, ins, 0)?,
            y,
            threads,
        )?),
        (_, Op::GlobalAvgPool(g)) => {
            let p = g
                .params(dims_in(node, ins, 0)?)
                .map_err(|reason| exec_err(node, reason))?;
            Ok(spore_kernels_cpu::pool2d::global_avg_pool(
                p,
                f32_in(node, ins, 0)?,
                y,
                threads,
            )?)
        }
        _ => Err(exec_err(node, "no direct CPU path for this op")),
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;
    use crate::conformance::rel_l2;
    use crate::models::{Arch, ModelConfig};
    use crate::session::{Context, CpuOptions, Device, Model, Session};
    use crate::tensor::Tensor;
    use spore_kernels_cpu::rng::Rng;

    /// A fresh clock seed (or `SPORE_TEST_SEED`), printed so a failure can be replayed.
    fn seed() -> u64 {
        let seed = std::env::var("SPORE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        println!("SPORE_TEST_SEED={seed}");
        seed
    }

    fn ctx(threads: usize, validate: bool) -> Context {
        Context::builder()
            .devices([Device::Cpu(CpuOptions { threads })])
            .validate(validate)
            .build()
            .unwrap()
    }

    fn random_input(s: &Session, rng: &mut Rng) -> (String, Tensor) {
        let (name, t) = s.inputs()[0];
        let data: Vec<f32> = (0..t.numel())
            .map(|_| rng.uniform(-1.0, 1.0) as f32)
            .collect();
        (name.to_string(), Tensor::from_vec(t.dims(), data).unwrap())
    }

    fn run(s: &mut Session, input: &(String, Tensor)) -> Vec<f32> {
        *s.input_by_tensor_name(&input.0).unwrap() = input.1.clone();
        s.run().unwrap();
        let outs = s.outputs().unwrap();
        outs.iter().flat_map(|(_, t)| t.to_f32_vec()).collect()
    }

    #[test]
    fn pool_recycles_by_size_and_never_grows_past_what_it_allocated() {
        let mut pool = BufferPool::default();
        let a = pool.take(&[2, 3]).unwrap();
        let b = pool.take(&[6]).unwrap();
        pool.give(a);
        pool.give(b);
        // A tensor the pool did not allocate (say, from `eval_cpu`) is not kept past the cap.
        pool.give(Tensor::zeros(crate::tensor::DType::F32, &[3, 2]).unwrap());
        pool.give(Tensor::zeros(crate::tensor::DType::F32, &[5]).unwrap());
        assert_eq!(pool.pooled(), 2);
        let c = pool.take(&[3, 2]).unwrap();
        assert_eq!(c.dims(), &[3, 2]);
        assert!(
            c.to_f32_vec().iter().all(|v| v.is_nan()),
            "recycled = poisoned"
        );
        assert_eq!(pool.pooled(), 1);
    }

    /// Every zoo model on the CPU fast path (prepared weights, recycled poisoned buffers), 1
    /// and 2 threads: each node within tolerance of its reference (validation mode) on three
    /// runs, the third on the first run's input giving bit-identical outputs; a session
    /// without validation (buffers recycled within the run too) gives the same bits.
    #[test]
    fn repeated_runs_match_the_reference_and_each_other() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        for arch in Arch::ALL {
            let cfg = match arch {
                Arch::LeNet5 => ModelConfig::new(28, 1, 10).batch(3),
                Arch::AlexNet => ModelConfig::new(64, 3, 10).width(0.125),
                _ => ModelConfig::new(32, 3, 10).width(0.25).batch(2),
            };
            let model = Model::from_graph(arch.build(&cfg.seed(seed)).unwrap());
            for threads in [1, 2] {
                let mut checked = Session::new(&ctx(threads, true), &model).unwrap();
                let mut fast = Session::new(&ctx(threads, false), &model).unwrap();
                let x1 = random_input(&checked, &mut rng);
                let x2 = random_input(&checked, &mut rng);
                let want1 = run(&mut checked, &x1);
                let want2 = run(&mut checked, &x2);
                assert_eq!(run(&mut checked, &x1), want1, "{}", arch.name());
                for report in checked.validation_report().unwrap() {
                    assert!(report.worst_rel_error <= report.tolerance, "{report:?}");
                }
                for _ in 0..2 {
                    assert_eq!(run(&mut fast, &x1), want1, "{} t{threads}", arch.name());
                    assert_eq!(run(&mut fast, &x2), want2, "{} t{threads}", arch.name());
                }
            }
            println!(
                "{}: fast path = validated path, 1 and 2 threads",
                arch.name()
            );
        }
    }

    /// A matmul with a constant `B` (both layouts, bias, ReLU) on 1..13 rows: one packed
    /// slab with rows split, or (2 threads, under 12 rows) one column slab per thread;
    /// every case within 1e-5 of the reference, twice (recycled buffers).
    #[test]
    fn packed_matmul_slabs_match_the_reference() {
        use crate::graph::GraphBuilder;
        use crate::ops::activation::ActivationKind;
        use crate::ops::matmul::MatMul;
        use crate::tensor::DType;
        let mut rng = Rng::new(seed());
        let mut rand = |dims: &[usize]| {
            let n = dims.iter().product::<usize>();
            let v: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
            Tensor::from_vec(dims, v).unwrap()
        };
        let mut ran = Vec::new();
        for (rows, k, n, transpose_b) in [
            (1, 37, 100, true),
            (3, 64, 1000, false),
            (11, 13, 65, true),
            (13, 29, 70, false),
            (2, 5, 7, true),
        ] {
            let w = if transpose_b {
                rand(&[n, k])
            } else {
                rand(&[k, n])
            };
            let bias = rand(&[n]);
            let op = MatMul {
                transpose_b,
                act: Some(ActivationKind::Relu),
                ..MatMul::default()
            };
            let mut b = GraphBuilder::new();
            let a = b.input("a", DType::F32, &[rows, k]).unwrap();
            let wv = b.constant("w", w.clone()).unwrap();
            let bv = b.constant("b", bias.clone()).unwrap();
            let y = b.node1("fc", op.clone(), &[a, wv, bv]).unwrap();
            b.output(y).unwrap();
            let model = Model::from_graph(b.build().unwrap());
            let x = rand(&[rows, k]);
            let want = crate::ops::Op::from(op)
                .eval_ref(&[&x, &w, &bias])
                .unwrap()
                .remove(0)
                .to_f32_vec();
            for threads in [1, 2] {
                let mut s = Session::new(&ctx(threads, false), &model).unwrap();
                let input = ("a".to_string(), x.clone());
                for _ in 0..2 {
                    let got = run(&mut s, &input);
                    let e = rel_l2(&got, &want);
                    assert!(e <= 1e-5, "{rows}x{k}x{n} t{threads}: {e:.2e}");
                }
                ran.push(format!("{rows}x{k}x{n}/t{threads}"));
            }
        }
        println!("packed matmul ran: {ran:?}");
    }

    /// `resize` between runs rebuilds the prepared state: a resized session agrees with a
    /// fresh one built at the new batch size.
    #[test]
    fn resize_between_runs_rebuilds_the_prepared_state() {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let cfg = ModelConfig::new(32, 3, 10).width(0.25).seed(seed);
        let model = Model::from_graph(Arch::MobileNetV2.build(&cfg.clone().batch(2)).unwrap());
        let mut s = Session::new(&ctx(2, false), &model).unwrap();
        let x = random_input(&s, &mut rng);
        run(&mut s, &x);
        s.resize(&[(x.0.as_str(), &[3, 32, 32, 3])]).unwrap();
        let x3 = random_input(&s, &mut rng);
        let got = run(&mut s, &x3);
        let model3 = Model::from_graph(Arch::MobileNetV2.build(&cfg.batch(3)).unwrap());
        let mut fresh = Session::new(&ctx(2, false), &model3).unwrap();
        let want = run(&mut fresh, &x3);
        assert!(rel_l2(&got, &want) <= 1e-6, "{}", rel_l2(&got, &want));
        // And back, running twice.
        s.resize(&[(x.0.as_str(), &[2, 32, 32, 3])]).unwrap();
        let a = run(&mut s, &x);
        assert_eq!(run(&mut s, &x), a);
    }
}
