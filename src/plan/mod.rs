//! The planner: fuse -> partition -> memory -> compile => [`Plan`].
//!
//! A [`Plan`] is immutable and `Send + Sync`: which device runs each node and why, the
//! segments (maximal acyclic runs of same-device nodes), the transfers between them, the
//! memory plan (GPU buffer slots reused across non-overlapping lifetimes), and the weights a
//! GPU segment reads, uploaded once when the plan is built and kept resident. Sessions
//! execute it (`exec.rs`): one command buffer and one submit per GPU segment run, read-backs
//! only where a CPU segment, a graph output or an observer needs a value.

mod cpu_fast;
pub(crate) mod exec;
pub mod fuse;
pub mod memory;
pub mod partition;

pub use exec::{NodeValidation, RunStats, SegmentStats};
pub use memory::{MemoryPlan, MemoryReport};
pub use partition::{
    DEFAULT_MIN_GPU_FLOPS_PER_BYTE, DEFAULT_MIN_GPU_SEGMENT_FLOPS, Placement, Reason, Segment,
    Transfer,
};

use crate::backend::gpu::GpuContext;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, ValueId, ValueKind};
use crate::session::Context;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The tuned CPU kernels (`OpDef::eval_cpu`).
    Cpu,
    /// The context's GPU (`OpDef::record_gpu`).
    Gpu,
}

impl DeviceKind {
    /// `cpu` or `gpu` (what observers see in [`crate::session::NodeInfo::device`]).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }
}

/// Planner options. `Default` is what [`crate::session::Session::new`] uses.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Op names (`conv2d`, `matmul`, ...) forced onto the CPU, e.g. to build a mixed plan.
    pub deny_gpu_ops: Vec<String>,
    /// Node names forced onto the CPU.
    pub deny_gpu_nodes: Vec<String>,
    /// Run the fusion rewrites ([`fuse::fuse`]) before partitioning.
    pub fuse: bool,
    /// Island rule: a GPU segment whose FLOPs are below `min_gpu_flops_per_byte` times the
    /// bytes it uploads and reads back, plus [`PlanOptions::min_gpu_segment_flops`], moves to
    /// the CPU. 0 with `min_gpu_segment_flops` 0 keeps every GPU-capable node on the GPU.
    pub min_gpu_flops_per_byte: f64,
    /// The fixed part of the island rule: FLOPs a GPU segment must do to pay for one submit
    /// and its synchronisation.
    pub min_gpu_segment_flops: u64,
    /// Reuse GPU buffers across values whose lifetimes do not overlap (off: one buffer per
    /// value, the baseline the poisoned-buffer tests compare with).
    pub reuse_gpu_buffers: bool,
    /// Test hook: multiply the outputs of the node of this name by 1.01, so validation mode
    /// must catch it.
    #[doc(hidden)]
    pub perturb_node: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            deny_gpu_ops: Vec::new(),
            deny_gpu_nodes: Vec::new(),
            fuse: true,
            min_gpu_flops_per_byte: DEFAULT_MIN_GPU_FLOPS_PER_BYTE,
            min_gpu_segment_flops: DEFAULT_MIN_GPU_SEGMENT_FLOPS,
            reuse_gpu_buffers: true,
            perturb_node: None,
        }
    }
}

impl PlanOptions {
    /// Every GPU-capable node on the GPU: the island rule off (tests, explicit requests).
    pub fn gpu_everywhere(mut self) -> Self {
        self.min_gpu_flops_per_byte = 0.0;
        self.min_gpu_segment_flops = 0;
        self
    }

    /// With `ops` denied on the GPU.
    pub fn deny_ops(mut self, ops: &[&str]) -> Self {
        self.deny_gpu_ops.extend(ops.iter().map(|s| s.to_string()));
        self
    }

    /// With fusion on or off.
    pub fn with_fusion(mut self, on: bool) -> Self {
        self.fuse = on;
        self
    }
}

/// A planned graph: placements, segments in execution order, transfers, memory plan and the
/// resident GPU weights. Immutable (apart from the dispatch counts the first run records for
/// [`Plan::describe`]); share it with `Arc`.
pub struct Plan {
    graph: Arc<Graph>,
    gpu: Option<Arc<GpuContext>>,
    cpu_threads: usize,
    placements: Vec<Placement>,
    segments: Vec<Segment>,
    /// Segment index of each node.
    node_segment: Vec<usize>,
    memory: MemoryPlan,
    /// Constants read by GPU nodes, uploaded once.
    resident: HashMap<ValueId, wgpu::Buffer>,
    fuse_notes: Vec<String>,
    /// Dispatches recorded by each segment's last run (0 before any run).
    dispatches: Vec<AtomicUsize>,
    options: PlanOptions,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("nodes", &self.graph.nodes().len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

/// Whether `graph` trains (has optimizer updates or backward ops), so fusion must keep
/// batch norm and the values backward nodes read.
fn is_training_graph(graph: &Graph) -> bool {
    graph.nodes().iter().any(|n| {
        let name = n.op.name();
        name.ends_with("_update") || name.contains("grad") || name == "batch_norm_train"
    })
}

impl Plan {
    /// Plans `graph` for `ctx`'s devices.
    pub fn new(graph: &Graph, ctx: &Context, opts: &PlanOptions) -> Result<Plan> {
        Self::build(graph, ctx.gpu().cloned(), ctx.prefers_gpu(), ctx, opts)
    }

    /// Plans `graph` on the CPU alone (the fallback after a GPU fault).
    pub fn cpu_only(graph: &Graph, ctx: &Context, opts: &PlanOptions) -> Result<Plan> {
        Self::build(graph, None, false, ctx, opts)
    }

    fn build(
        graph: &Graph,
        gpu: Option<Arc<GpuContext>>,
        gpu_first: bool,
        ctx: &Context,
        opts: &PlanOptions,
    ) -> Result<Plan> {
        // Training graphs are planned unfused for now: the training-safe rules are new and
        // the gain there is small (batch norm cannot fold); see `run_fusion`.
        let (graph, fuse_notes) = if opts.fuse && !is_training_graph(graph) {
            run_fusion(graph, false)?
        } else {
            (graph.clone(), Vec::new())
        };
        let graph = Arc::new(graph);
        let (placements, segments) = partition::partition(
            &graph,
            gpu.as_deref().filter(|_| gpu_first),
            gpu.is_some(),
            opts,
        )?;
        let mut node_segment = vec![usize::MAX; graph.nodes().len()];
        for (s, seg) in segments.iter().enumerate() {
            for n in &seg.nodes {
                if let Some(slot) = node_segment.get_mut(n.0) {
                    *slot = s;
                }
            }
        }
        let memory = memory::plan_memory(&graph, &segments, opts.reuse_gpu_buffers)?;
        let mut resident = HashMap::new();
        if let Some(g) = &gpu {
            for seg in segments.iter().filter(|s| s.device == DeviceKind::Gpu) {
                for &n in &seg.nodes {
                    let node = graph.nodes().get(n.0).ok_or_else(|| missing_node(n))?;
                    for &v in &node.inputs {
                        if resident.contains_key(&v) {
                            continue;
                        }
                        if let ValueKind::Constant { data, .. } = &graph.value(v)?.kind {
                            let name = &graph.value(v)?.name;
                            resident.insert(v, g.upload(name, data.as_bytes())?);
                        }
                    }
                }
            }
        }
        let dispatches = segments.iter().map(|_| AtomicUsize::new(0)).collect();
        Ok(Plan {
            graph,
            gpu,
            cpu_threads: ctx.cpu_threads(),
            placements,
            segments,
            node_segment,
            memory,
            resident,
            fuse_notes,
            dispatches,
            options: opts.clone(),
        })
    }

    /// The graph this plan runs (after fusion).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph, shared.
    /// The GPU the plan's GPU segments run on, if any.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        self.gpu.as_ref()
    }

    /// CPU worker threads for CPU segments.
    pub fn cpu_threads(&self) -> usize {
        self.cpu_threads
    }

    /// Where each node runs and why, indexed by node.
    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }

    /// The segments, in execution order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment (index into [`Plan::segments`]) node `n` belongs to.
    pub fn node_segment(&self, n: NodeId) -> Option<usize> {
        self.node_segment.get(n.0).copied()
    }

    /// Number of GPU segments.
    pub fn gpu_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.device == DeviceKind::Gpu)
            .count()
    }

    /// Nodes placed on each device: `(cpu, gpu)`.
    pub fn node_counts(&self) -> (usize, usize) {
        let gpu = self
            .placements
            .iter()
            .filter(|p| p.device == DeviceKind::Gpu)
            .count();
        (self.placements.len() - gpu, gpu)
    }

    /// The memory plan (liveness intervals, GPU buffer slots).
    pub fn memory_plan(&self) -> &MemoryPlan {
        &self.memory
    }

    /// Peak bytes against allocating every intermediate separately.
    pub fn memory(&self) -> MemoryReport {
        self.memory.report()
    }

    /// The options the plan was built with.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    /// What fusion rewrote, one line per rewrite.
    pub fn fusion_notes(&self) -> &[String] {
        &self.fuse_notes
    }

    pub(crate) fn resident(&self, v: ValueId) -> Option<&wgpu::Buffer> {
        self.resident.get(&v)
    }

    pub(crate) fn record_dispatches(&self, segment: usize, n: usize) {
        if let Some(d) = self.dispatches.get(segment) {
            d.store(n, Ordering::Relaxed);
        }
    }

    /// Dispatches segment `segment` recorded in its last run (0 before any run, and for CPU
    /// segments).
    pub fn dispatches(&self, segment: usize) -> usize {
        self.dispatches
            .get(segment)
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// A human-readable explanation: each segment with its device, nodes, dispatches,
    /// transfers in and out (bytes), and why each node went where it went.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let (cpu, gpu) = self.node_counts();
        let _ = writeln!(
            s,
            "plan: {} nodes ({} gpu, {} cpu) in {} segments ({} gpu)",
            self.placements.len(),
            gpu,
            cpu,
            self.segments.len(),
            self.gpu_segments()
        );
        match &self.gpu {
            Some(g) => {
                let _ = writeln!(s, "gpu: {}", g.adapter().name);
            }
            None => {
                let _ = writeln!(s, "gpu: none (all-CPU plan)");
            }
        }
        if !self.fuse_notes.is_empty() {
            let _ = writeln!(s, "fusion:");
            for n in &self.fuse_notes {
                let _ = writeln!(s, "  {n}");
            }
        }
        let value_name = |v: ValueId| {
            self.graph
                .value(v)
                .map_or_else(|_| format!("#{}", v.0), |v| v.name.clone())
        };
        for (i, seg) in self.segments.iter().enumerate() {
            let d = self.dispatches(i);
            let extra = match seg.device {
                DeviceKind::Gpu if d > 0 => format!(", {d} dispatches, 1 submit"),
                DeviceKind::Gpu => ", dispatches counted at the first run, 1 submit".to_string(),
                DeviceKind::Cpu => String::new(),
            };
            let _ = writeln!(
                s,
                "segment {i}: {} ({} nodes, {:.3} MFLOP{extra})",
                seg.device.name(),
                seg.nodes.len(),
                seg.flops as f64 / 1e6,
            );
            for t in &seg.transfers_in {
                let _ = writeln!(
                    s,
                    "  in : {} {} -> {} ({} bytes)",
                    value_name(t.value),
                    t.from,
                    t.to,
                    t.bytes
                );
            }
            for &n in &seg.nodes {
                let (Some(node), Some(p)) = (self.graph.nodes().get(n.0), self.placements.get(n.0))
                else {
                    continue;
                };
                let _ = writeln!(s, "  {:<40} {:<24} {}", node.name, node.op.name(), p.reason);
            }
            for t in &seg.transfers_out {
                let _ = writeln!(
                    s,
                    "  out: {} {} -> {} ({} bytes)",
                    value_name(t.value),
                    t.from,
                    t.to,
                    t.bytes
                );
            }
        }
        let m = self.memory();
        let _ = writeln!(s, "{m}");
        s
    }
}

/// The fusion pass ([`fuse::fuse`]): the rewritten graph and one note per rewrite. Training
/// graphs get the training-safe rules (no batch-norm folding, no fusing across values a
/// backward node reads).
fn run_fusion(graph: &Graph, training: bool) -> Result<(Graph, Vec<String>)> {
    let opts = if training {
        fuse::FuseOptions::training()
    } else {
        fuse::FuseOptions::inference()
    };
    let (g, report) = fuse::fuse(graph, &opts)?;
    let mut notes = Vec::with_capacity(report.rewrites.len() + 1);
    if !report.rewrites.is_empty() {
        notes.push(format!(
            "{} rewrites, {} -> {} nodes",
            report.rewrites.len(),
            report.nodes_before,
            report.nodes_after
        ));
        notes.extend(report.rewrites.iter().map(ToString::to_string));
    }
    Ok((g, notes))
}

pub(crate) fn missing_node(n: NodeId) -> Error {
    Error::Missing {
        what: format!("node #{}", n.0),
    }
}
