//! Runs a [`Plan`]: CPU segments node by node on the tuned kernels (each intermediate handed
//! back to the session's buffer pool after its last use; weights prepared once per session,
//! see `cpu_fast.rs`), GPU segments recorded into one command encoder and submitted once,
//! with the segment's uploads written into its buffer slots first and the read-backs copied
//! to staging buffers inside the same submit.
//!
//! When an observer wants tensors, or in validation mode, a GPU segment is split: each node
//! is submitted alone and its outputs read back, so callbacks and the reference comparison
//! see every value (the documented price of looking inside a segment).

use super::cpu_fast::CpuState;
use super::{DeviceKind, Plan, missing_node};
use crate::backend::gpu::{GpuContext, PooledBuffer, Recorder};
use crate::error::{Error, GpuErrorKind, Result};
use crate::graph::{Graph, Node, ValueId, ValueKind};
use crate::ops::GpuValue;
use crate::session::{Flow, NodeInfo, RunObserver};
use crate::tensor::{DType, Tensor};
use std::sync::Mutex;
use std::time::Instant;

/// What one segment's run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentStats {
    /// Segment index in [`Plan::segments`].
    pub index: usize,
    /// Its device.
    pub device: DeviceKind,
    /// Nodes run.
    pub nodes: usize,
    /// GPU dispatches recorded.
    pub dispatches: usize,
    /// Command buffers submitted (1 per GPU segment unless tensors were requested).
    pub submits: usize,
    /// Bytes uploaded to the GPU.
    pub upload_bytes: u64,
    /// Bytes read back from the GPU.
    pub readback_bytes: u64,
    /// Wall-clock seconds, read-backs included.
    pub seconds: f64,
}

/// What a run did, segment by segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    /// One entry per segment run.
    pub segments: Vec<SegmentStats>,
    /// Whether the run fell back to an all-CPU plan after a GPU fault.
    pub fell_back_to_cpu: bool,
}

impl RunStats {
    /// Command buffers submitted in all.
    pub fn gpu_submits(&self) -> usize {
        self.segments.iter().map(|s| s.submits).sum()
    }

    /// Dispatches recorded in all.
    pub fn dispatches(&self) -> usize {
        self.segments.iter().map(|s| s.dispatches).sum()
    }
}

/// Validation mode's record for one node: the worst relative error seen against the
/// reference, and the tolerance it was held to.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeValidation {
    /// The node.
    pub node: String,
    /// Its op.
    pub op: &'static str,
    /// Where it ran.
    pub device: DeviceKind,
    /// Worst relative L2 error over the runs so far.
    pub worst_rel_error: f64,
    /// The tolerance.
    pub tolerance: f64,
}

/// The per-session state a plan runs with: the GPU buffer slots, allocated at the first run,
/// and the CPU nodes' prepared weights and recycled output buffers.
#[derive(Default)]
pub(crate) struct Slots {
    /// The GPU buffer slots.
    gpu: GpuSlots,
    /// Prepared CPU nodes and the host buffer pool (reset with the slots on a re-plan).
    cpu: CpuState,
}

/// The GPU buffer slots of a plan in one session.
#[derive(Default)]
struct GpuSlots {
    /// From the context's buffer pool: a re-plan or a dropped session hands them back.
    buffers: Vec<PooledBuffer>,
}

/// Whether `e` means the GPU cannot go on (device lost, out of memory): the session then
/// re-plans on the CPU.
pub(crate) fn is_gpu_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::Gpu {
            kind: GpuErrorKind::DeviceLost | GpuErrorKind::OutOfMemory,
            ..
        } | Error::OutOfMemory { .. }
    )
}

/// Tolerance of validation mode for `node` on `device`: 1e-4 on the GPU, 1e-5 on the CPU
/// except convolutions, which may take the Winograd path (1e-4).
fn tolerance(node: &Node, device: DeviceKind) -> f64 {
    match device {
        DeviceKind::Gpu => 1e-4,
        DeviceKind::Cpu if node.op.name().starts_with("conv") => 1e-4,
        DeviceKind::Cpu => 1e-5,
    }
}

/// Relative error of `got` against `want`: relative L2 for floats, 0/1 for exact types.
fn rel_error(got: &Tensor, want: &Tensor) -> f64 {
    if got.dtype() != want.dtype() || got.dims() != want.dims() {
        return f64::INFINITY;
    }
    if got.dtype() != DType::F32 {
        return if got.as_bytes() == want.as_bytes() {
            0.0
        } else {
            1.0
        };
    }
    let (a, b) = (got.to_f32_vec(), want.to_f32_vec());
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(&b) {
        let d = f64::from(*x) - f64::from(*y);
        num += d * d;
        den += f64::from(*y) * f64::from(*y);
    }
    if !num.is_finite() {
        return f64::INFINITY;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

struct Runner<'a> {
    plan: &'a Plan,
    graph: &'a Graph,
    inputs: &'a [&'a Tensor],
    host: Vec<Option<Tensor>>,
    observer: &'a mut dyn RunObserver,
    want: bool,
    per_node: bool,
    validate: bool,
    validation: &'a mut Vec<NodeValidation>,
    fault: &'a Mutex<Option<GpuErrorKind>>,
    stats: RunStats,
    index: usize,
    cpu: &'a mut CpuState,
}

/// Runs `plan` on `inputs` (aligned with the plan graph's inputs) and returns the graph
/// outputs in order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute(
    plan: &Plan,
    slots: &mut Slots,
    inputs: &[&Tensor],
    observer: &mut dyn RunObserver,
    validate: bool,
    validation: &mut Vec<NodeValidation>,
    fault: &Mutex<Option<GpuErrorKind>>,
) -> Result<(Vec<Tensor>, RunStats)> {
    let graph = plan.graph();
    let want = observer.wants_tensors();
    let per_node = want || validate || plan.options().perturb_node.is_some();
    let (gpu_slots, cpu) = (&mut slots.gpu, &mut slots.cpu);
    let mut r = Runner {
        plan,
        graph,
        inputs,
        host: vec![None; graph.values().len()],
        observer,
        want,
        per_node,
        validate,
        validation,
        fault,
        stats: RunStats::default(),
        index: 0,
        cpu,
    };
    for (s, seg) in plan.segments().iter().enumerate() {
        let t0 = Instant::now();
        let mut st = SegmentStats {
            index: s,
            device: seg.device,
            nodes: seg.nodes.len(),
            dispatches: 0,
            submits: 0,
            upload_bytes: 0,
            readback_bytes: 0,
            seconds: 0.0,
        };
        match seg.device {
            DeviceKind::Cpu => {
                for &n in &seg.nodes {
                    let node = graph.nodes().get(n.0).ok_or_else(|| missing_node(n))?;
                    r.cpu_node(n.0, node)?;
                }
            }
            DeviceKind::Gpu => {
                let gpu = plan.gpu().ok_or_else(|| Error::Missing {
                    what: "the GPU of a GPU segment".into(),
                })?;
                r.gpu_segment(gpu, s, gpu_slots, &mut st)?;
                plan.record_dispatches(s, st.dispatches);
            }
        }
        st.seconds = t0.elapsed().as_secs_f64();
        r.stats.segments.push(st);
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|&v| r.host_ref(v).cloned())
        .collect::<Result<Vec<_>>>()?;
    // What is still on the host (the outputs, copied above) serves the next run.
    for t in r.host.drain(..).flatten() {
        r.cpu.pool.give(t);
    }
    Ok((outputs, r.stats))
}

fn node_error(node: &Node, e: Error) -> Error {
    match e {
        Error::OpExecution { op, reason, .. } => Error::OpExecution {
            op,
            node: node.name.clone(),
            reason,
        },
        e if is_gpu_fault(&e) => e,
        Error::Stopped { .. } => e,
        other => Error::OpExecution {
            op: node.op.name().into(),
            node: node.name.clone(),
            reason: other.to_string(),
        },
    }
}

/// The host copy of `v`: a constant's data, a graph input, or a computed value.
fn host_value<'x>(
    graph: &'x Graph,
    inputs: &'x [&'x Tensor],
    host: &'x [Option<Tensor>],
    v: ValueId,
) -> Result<&'x Tensor> {
    let value = graph.value(v)?;
    let missing = || Error::Missing {
        what: format!("value `{}` on the host", value.name),
    };
    match &value.kind {
        ValueKind::Constant { data, .. } => Ok(data),
        ValueKind::Input => {
            let pos = graph
                .inputs()
                .iter()
                .position(|&i| i == v)
                .ok_or_else(missing)?;
            inputs.get(pos).copied().ok_or_else(missing)
        }
        ValueKind::Output { .. } => host.get(v.0).and_then(Option::as_ref).ok_or_else(missing),
    }
}

impl Runner<'_> {
    fn host_ref(&self, v: ValueId) -> Result<&Tensor> {
        host_value(self.graph, self.inputs, &self.host, v)
    }

    fn info<'n>(&self, node: &'n Node, device: DeviceKind) -> NodeInfo<'n> {
        NodeInfo {
            name: &node.name,
            op: node.op.name(),
            index: self.index,
            device: device.name(),
        }
    }

    fn stop(node: &Node) -> Error {
        Error::Stopped {
            node: node.name.clone(),
        }
    }

    /// Drops host copies whose last use is `step` (not in per-node mode, where callbacks may
    /// still ask for them).
    fn free_after(&mut self, node: &Node, step: usize) {
        if self.per_node {
            return;
        }
        let last = &self.plan.memory_plan().host_last_use;
        for v in &node.inputs {
            if last.get(v.0).copied().flatten().is_some_and(|l| l <= step)
                && let Some(t) = self.host.get_mut(v.0).and_then(Option::take)
            {
                self.cpu.pool.give(t);
            }
        }
    }

    /// Perturbation (test hook) and validation of a node's host outputs.
    fn check_outputs(
        &mut self,
        node: &Node,
        device: DeviceKind,
        outs: &mut [Tensor],
        ins: &[&Tensor],
    ) -> Result<()> {
        if self.plan.options().perturb_node.as_deref() == Some(node.name.as_str()) {
            for t in outs.iter_mut() {
                if t.dtype() == DType::F32 {
                    *t = std::mem::replace(t, Tensor::scalar(0f32)).map_f32(|x| x * 1.01 + 1e-3)?;
                }
            }
        }
        if !self.validate {
            return Ok(());
        }
        let want = node.op.eval_ref(ins).map_err(|e| node_error(node, e))?;
        let worst = outs
            .iter()
            .zip(&want)
            .map(|(g, w)| rel_error(g, w))
            .fold(0f64, f64::max);
        let tol = tolerance(node, device);
        match self.validation.iter_mut().find(|v| v.node == node.name) {
            Some(v) => {
                v.worst_rel_error = v.worst_rel_error.max(worst);
                v.device = device;
            }
            None => self.validation.push(NodeValidation {
                node: node.name.clone(),
                op: node.op.name(),
                device,
                worst_rel_error: worst,
                tolerance: tol,
            }),
        }
        if worst.is_nan() || worst > tol {
            return Err(Error::OpExecution {
                op: node.op.name().into(),
                node: node.name.clone(),
                reason: format!(
                    "validation: relative error {worst:.3e} against the reference exceeds \
                     the tolerance {tol:.0e} on the {}",
                    device.name()
                ),
            });
        }
        Ok(())
    }

    fn cpu_node(&mut self, idx: usize, node: &Node) -> Result<()> {
        let step = self.index;
        let info = self.info(node, DeviceKind::Cpu);
        let mut outs = {
            let ins: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&v| host_value(self.graph, self.inputs, &self.host, v))
                .collect::<Result<_>>()?;
            if self
                .observer
                .before(&info, if self.want { &ins } else { &[] })
                == Flow::Stop
            {
                return Err(Self::stop(node));
            }
            let outs = self
                .cpu
                .run(self.graph, idx, node, &ins, self.plan.cpu_threads())
                .map_err(|e| node_error(node, e))?;
            if outs.len() != node.outputs.len() {
                return Err(Error::OpExecution {
                    op: node.op.name().into(),
                    node: node.name.clone(),
                    reason: format!(
                        "produced {} outputs, expected {}",
                        outs.len(),
                        node.outputs.len()
                    ),
                });
            }
            outs
        };
        if self.per_node {
            // Validation needs the inputs again; they are still on the host in this mode.
            let ins: Vec<Tensor> = node
                .inputs
                .iter()
                .map(|&v| self.host_ref(v).cloned())
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = ins.iter().collect();
            self.check_outputs(node, DeviceKind::Cpu, &mut outs, &refs)?;
        }
        let flow = {
            let refs: Vec<&Tensor> = outs.iter().collect();
            self.observer
                .after(&info, if self.want { &refs } else { &[] })
        };
        for (&v, t) in node.outputs.iter().zip(outs) {
            if let Some(slot) = self.host.get_mut(v.0) {
                *slot = Some(t);
            }
        }
        self.free_after(node, step);
        self.index += 1;
        if flow == Flow::Stop {
            return Err(Self::stop(node));
        }
        Ok(())
    }

    fn buffer<'b>(&'b self, slots: &'b GpuSlots, v: ValueId) -> Result<&'b wgpu::Buffer> {
        if let Some(b) = self.plan.resident(v) {
            return Ok(b);
        }
        self.plan
            .memory_plan()
            .gpu_slot
            .get(v.0)
            .copied()
            .flatten()
            .and_then(|s| slots.buffers.get(s))
            .map(|b| &**b)
            .ok_or_else(|| Error::Missing {
                what: format!(
                    "a GPU buffer for value `{}`",
                    self.graph.value(v).map_or("?", |v| v.name.as_str())
                ),
            })
    }

    fn record_node(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        slots: &GpuSlots,
        node: &Node,
    ) -> Result<()> {
        let values = |ids: &[ValueId]| -> Result<Vec<GpuValue<'_>>> {
            ids.iter()
                .map(|&v| {
                    Ok(GpuValue {
                        buffer: self.buffer(slots, v)?,
                        fact: &self.graph.value(v)?.fact,
                    })
                })
                .collect()
        };
        let ins = values(&node.inputs)?;
        let outs = values(&node.outputs)?;
        node.op
            .record_gpu(gpu, rec, &ins, &outs)
            .map_err(|e| node_error(node, e))
    }

    fn gpu_segment(
        &mut self,
        gpu: &GpuContext,
        s: usize,
        slots: &mut GpuSlots,
        st: &mut SegmentStats,
    ) -> Result<()> {
        let injected = self
            .fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(kind) = injected {
            return Err(Error::gpu(kind, "injected fault (test hook)"));
        }
        gpu.check_health()?;
        let plan = self.plan;
        let seg = plan.segments().get(s).ok_or_else(|| Error::Missing {
            what: format!("segment {s}"),
        })?;
        let mem = plan.memory_plan();
        if slots.buffers.len() != mem.slot_bytes.len() {
            // First run of this plan in this session: take the slots from the pool and
            // poison them (0xFF = NaN), so a value a kernel forgot to write shows.
            slots.buffers = Vec::with_capacity(mem.slot_bytes.len());
            for (i, &b) in mem.slot_bytes.iter().enumerate() {
                let buf = gpu.acquire(&format!("slot{i}"), b)?;
                let poison = vec![0xFFu8; usize::try_from(b).unwrap_or(0)];
                gpu.scoped(|| gpu.queue().write_buffer(&buf, 0, &poison))?;
                slots.buffers.push(buf);
            }
        }
        for t in &seg.transfers_in {
            let bytes = self.host_ref(t.value)?.as_bytes();
            let buf = self.buffer(slots, t.value)?;
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().max(4).next_multiple_of(4), 0);
            gpu.scoped(|| gpu.queue().write_buffer(buf, 0, &padded))?;
            st.upload_bytes += bytes.len() as u64;
        }
        let graph = self.graph;
        if !self.per_node {
            let mut rec = gpu.recorder();
            for &n in &seg.nodes {
                let node = graph.nodes().get(n.0).ok_or_else(|| missing_node(n))?;
                let info = self.info(node, DeviceKind::Gpu);
                if self.observer.before(&info, &[]) == Flow::Stop {
                    return Err(Self::stop(node));
                }
                self.record_node(gpu, &mut rec, slots, node)?;
                self.index += 1;
                if self.observer.after(&info, &[]) == Flow::Stop {
                    return Err(Self::stop(node));
                }
            }
            st.dispatches += rec.dispatches();
            let items: Vec<ValueId> = seg.transfers_out.iter().map(|t| t.value).collect();
            let data = self.submit_and_read(gpu, rec, slots, &items)?;
            st.submits += 1;
            for (v, t) in items.into_iter().zip(data) {
                st.readback_bytes += t.as_bytes().len() as u64;
                if let Some(slot) = self.host.get_mut(v.0) {
                    *slot = Some(t);
                }
            }
            // Uploaded host values whose last use was the upload.
            let (a, _) = mem.segment_steps.get(s).copied().unwrap_or((0, 0));
            for t in &seg.transfers_in {
                if mem
                    .host_last_use
                    .get(t.value.0)
                    .copied()
                    .flatten()
                    .is_some_and(|l| l <= a)
                    && let Some(slot) = self.host.get_mut(t.value.0)
                {
                    *slot = None;
                }
            }
            return Ok(());
        }
        // Split mode: one submit per node, every output read back.
        for &n in &seg.nodes {
            let node = graph.nodes().get(n.0).ok_or_else(|| missing_node(n))?;
            let info = self.info(node, DeviceKind::Gpu);
            let ins: Vec<Tensor> = node
                .inputs
                .iter()
                .map(|&v| self.host_ref(v).cloned())
                .collect::<Result<_>>()?;
            let in_refs: Vec<&Tensor> = ins.iter().collect();
            if self
                .observer
                .before(&info, if self.want { &in_refs } else { &[] })
                == Flow::Stop
            {
                return Err(Self::stop(node));
            }
            let mut rec = gpu.recorder();
            self.record_node(gpu, &mut rec, slots, node)?;
            st.dispatches += rec.dispatches();
            let mut outs = self.submit_and_read(gpu, rec, slots, &node.outputs)?;
            st.submits += 1;
            st.readback_bytes += outs.iter().map(|t| t.as_bytes().len() as u64).sum::<u64>();
            self.check_outputs(node, DeviceKind::Gpu, &mut outs, &in_refs)?;
            let flow = {
                let refs: Vec<&Tensor> = outs.iter().collect();
                self.observer
                    .after(&info, if self.want { &refs } else { &[] })
            };
            for (&v, t) in node.outputs.iter().zip(outs) {
                if let Some(slot) = self.host.get_mut(v.0) {
                    *slot = Some(t);
                }
            }
            self.index += 1;
            if flow == Flow::Stop {
                return Err(Self::stop(node));
            }
        }
        Ok(())
    }

    /// Copies `values` into staging buffers inside `rec`, submits it (the segment's one
    /// submit), waits, and returns the values as host tensors.
    fn submit_and_read(
        &self,
        gpu: &GpuContext,
        mut rec: Recorder<'_>,
        slots: &GpuSlots,
        values: &[ValueId],
    ) -> Result<Vec<Tensor>> {
        let mut staging = Vec::with_capacity(values.len());
        for &v in values {
            let fact = &self.graph.value(v)?.fact;
            let t = Tensor::zeros(fact.dtype, &fact.shape)?;
            let padded = (t.as_bytes().len().max(4) as u64).next_multiple_of(4);
            let buf = gpu.scoped(|| {
                gpu.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("plan_read_back"),
                    size: padded,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?;
            rec.copy(self.buffer(slots, v)?, 0, &buf, 0, padded)?;
            staging.push((t, buf));
        }
        rec.submit()?;
        if staging.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, (_, buf)) in staging.iter().enumerate() {
            let tx = tx.clone();
            buf.map_async(wgpu::MapMode::Read, .., move |r| {
                // The receiver outlives the callbacks unless we already returned an error.
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        gpu.sync()?;
        // Wait for every callback, not just those already delivered: sessions on other threads
        // poll the same device, and one of their polls may be the one firing our callbacks,
        // a moment after our own poll returned (a `try_iter` here lost that race now and then:
        // "0 of 1 read-back buffers mapped").
        let mut mapped = 0;
        let mut polls = 0;
        while mapped < staging.len() {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok((_, r)) => {
                    r.map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?;
                    mapped += 1;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if polls < 100 => {
                    polls += 1;
                    gpu.sync()?;
                }
                Err(_) => break,
            }
        }
        if mapped != staging.len() {
            return Err(Error::gpu(
                GpuErrorKind::Internal,
                format!("{mapped} of {} read-back buffers mapped", staging.len()),
            ));
        }
        let mut out = Vec::with_capacity(staging.len());
        for (mut t, buf) in staging {
            {
                let view = buf
                    .get_mapped_range(..)
                    .map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?;
                let n = t.as_bytes().len();
                let src = view.get(..n).ok_or_else(|| {
                    Error::gpu(GpuErrorKind::Internal, "short GPU read-back".to_string())
                })?;
                t.as_bytes_mut().copy_from_slice(src);
            }
            buf.unmap();
            out.push(t);
        }
        Ok(out)
    }
}
