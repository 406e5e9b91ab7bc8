//! Placement and segmentation: each node goes to the first device in the context's priority
//! list that supports it, runs of same-device nodes form segments, and every edge between
//! devices becomes an explicit [`Transfer`].
//!
//! Acyclic by construction: a node joins an existing segment only if no path leaves that
//! segment and comes back into it through the node. Each segment keeps the set of segments
//! that can reach it (transitively closed); node `n` may join segment `S` only if `S` cannot
//! reach any of `n`'s other producer segments. Merging a node into `S` adds edges
//! `producer -> S` only, so the check keeps the segment graph a DAG, which is then ordered
//! topologically (Kahn, lowest segment first).
//!
//! Island rule (why tiny GPU segments go to the CPU): a GPU segment costs a submit and a
//! synchronisation plus its transfers, which the CPU does not pay. A GPU segment moves to the
//! CPU when `flops < min_gpu_flops_per_byte * transfer_bytes + min_gpu_segment_flops`, where
//! `transfer_bytes` counts its uploads (graph inputs and CPU-produced values; resident
//! weights are free) and its read-backs. Defaults: 4 FLOP per byte (a CPU core does
//! ~50 GFLOP/s where a host link moves ~10 GB/s, so below ~5 FLOP/byte the copy alone costs
//! more than computing on the CPU) and 1 MFLOP (~20 µs of submit and sync latency at CPU
//! speed). Moving a segment changes its neighbours' transfers, so the rule is applied until
//! nothing moves (monotone: nodes only ever move to the CPU).

use super::{DeviceKind, PlanOptions, missing_node};
use crate::backend::gpu::GpuContext;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, TensorFact, ValueId, ValueKind};
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;

/// Default FLOPs per transferred byte a GPU segment must reach to stay on the GPU.
pub const DEFAULT_MIN_GPU_FLOPS_PER_BYTE: f64 = 4.0;
/// Default FLOPs every GPU segment must reach to pay for its submit.
pub const DEFAULT_MIN_GPU_SEGMENT_FLOPS: u64 = 1_000_000;

/// Why a node runs where it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// The first device in the priority list that supports it.
    Preferred,
    /// The GPU's kernel cannot take it.
    Unsupported(String),
    /// Its GPU segment was too small to pay for its transfers (the island rule).
    TooSmall {
        /// The segment's FLOPs.
        flops: u64,
        /// The bytes the segment would have moved.
        bytes: u64,
    },
    /// [`PlanOptions::deny_gpu_ops`] / [`PlanOptions::deny_gpu_nodes`] kept it off the GPU.
    Denied,
    /// The context has no GPU.
    NoGpu,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Preferred => write!(f, "preferred"),
            Reason::Unsupported(r) => write!(f, "unsupported on gpu: {r}"),
            Reason::TooSmall { flops, bytes } => write!(
                f,
                "too small for the gpu: {flops} FLOP for {bytes} transfer bytes"
            ),
            Reason::Denied => write!(f, "denied on gpu by options"),
            Reason::NoGpu => write!(f, "preferred (no gpu in the context)"),
        }
    }
}

/// Where one node runs, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The device.
    pub device: DeviceKind,
    /// Why.
    pub reason: Reason,
}

/// A value crossing devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// The value.
    pub value: ValueId,
    /// Where it is (`host` for graph inputs, `cpu`, `gpu`).
    pub from: &'static str,
    /// Where it goes (`cpu`, `gpu`, `host` for graph outputs).
    pub to: &'static str,
    /// Its size.
    pub bytes: u64,
}

/// A run of nodes on one device, executed together (one submit on the GPU).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The device.
    pub device: DeviceKind,
    /// Its nodes, in execution order.
    pub nodes: Vec<NodeId>,
    /// Values that cross into this segment's device before it runs (uploads for a GPU
    /// segment; read-backs of GPU values a CPU segment reads).
    pub transfers_in: Vec<Transfer>,
    /// Values this segment produces that another device or the caller needs.
    pub transfers_out: Vec<Transfer>,
    /// FLOPs of its nodes.
    pub flops: u64,
}

impl Segment {
    /// Bytes moved in and out.
    pub fn transfer_bytes(&self) -> u64 {
        self.transfers_in
            .iter()
            .chain(&self.transfers_out)
            .map(|t| t.bytes)
            .sum()
    }
}

/// Bytes of a value (its fact).
pub(crate) fn fact_bytes(f: &TensorFact) -> u64 {
    (f.numel() as u64).saturating_mul(f.dtype.size() as u64)
}

/// The producing node of `v`, if a node produces it.
pub(crate) fn producer(graph: &Graph, v: ValueId) -> Option<NodeId> {
    match graph.value(v).ok()?.kind {
        ValueKind::Output { node, .. } => Some(node),
        _ => None,
    }
}

/// Places every node and cuts the graph into segments in execution order. `gpu` is the GPU
/// when it comes before the CPU in the priority list; `has_gpu` says whether the context has
/// one at all (for the reason shown).
pub fn partition(
    graph: &Graph,
    gpu: Option<&GpuContext>,
    has_gpu: bool,
    opts: &PlanOptions,
) -> Result<(Vec<Placement>, Vec<Segment>)> {
    let mut placements = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        let facts: Vec<&TensorFact> = node
            .inputs
            .iter()
            .map(|&v| graph.value(v).map(|v| &v.fact))
            .collect::<Result<_>>()?;
        let p = if gpu.is_none() {
            Placement {
                device: DeviceKind::Cpu,
                reason: if has_gpu {
                    Reason::Preferred
                } else {
                    Reason::NoGpu
                },
            }
        } else if opts.deny_gpu_ops.iter().any(|o| o == node.op.name())
            || opts.deny_gpu_nodes.contains(&node.name)
        {
            Placement {
                device: DeviceKind::Cpu,
                reason: Reason::Denied,
            }
        } else {
            match node.op.gpu_support(&facts) {
                Ok(()) => Placement {
                    device: DeviceKind::Gpu,
                    reason: Reason::Preferred,
                },
                Err(r) => Placement {
                    device: DeviceKind::Cpu,
                    reason: Reason::Unsupported(r),
                },
            }
        };
        placements.push(p);
    }
    // The island rule, to a fixpoint.
    loop {
        let segments = segment(graph, &placements)?;
        let mut moved = false;
        for seg in segments.iter().filter(|s| s.device == DeviceKind::Gpu) {
            let bytes = seg.transfer_bytes();
            let need =
                opts.min_gpu_flops_per_byte * bytes as f64 + opts.min_gpu_segment_flops as f64;
            if (seg.flops as f64) < need {
                for n in &seg.nodes {
                    if let Some(p) = placements.get_mut(n.0) {
                        *p = Placement {
                            device: DeviceKind::Cpu,
                            reason: Reason::TooSmall {
                                flops: seg.flops,
                                bytes,
                            },
                        };
                    }
                }
                moved = true;
            }
        }
        if !moved {
            return Ok((placements, segments));
        }
    }
}

/// Segments for given per-node devices (tests and tools: any placement, GPU or not), in
/// execution order.
pub fn segment_devices(graph: &Graph, devices: &[DeviceKind]) -> Result<Vec<Segment>> {
    let placements: Vec<Placement> = devices
        .iter()
        .map(|&device| Placement {
            device,
            reason: Reason::Preferred,
        })
        .collect();
    segment(graph, &placements)
}

/// Segments for fixed placements (see the module docs for why they are acyclic).
pub(crate) fn segment(graph: &Graph, placements: &[Placement]) -> Result<Vec<Segment>> {
    let nodes = graph.nodes();
    let mut seg_of = vec![usize::MAX; nodes.len()];
    let mut devs: Vec<DeviceKind> = Vec::new();
    let mut members: Vec<Vec<NodeId>> = Vec::new();
    // anc[s]: the segments that can reach s (transitively closed).
    let mut anc: Vec<BTreeSet<usize>> = Vec::new();
    let mut last_of = [None::<usize>; 2];
    let dev_index = |d: DeviceKind| match d {
        DeviceKind::Cpu => 0,
        DeviceKind::Gpu => 1,
    };
    for (i, node) in nodes.iter().enumerate() {
        let d = placements
            .get(i)
            .map(|p| p.device)
            .ok_or_else(|| missing_node(NodeId(i)))?;
        let preds: BTreeSet<usize> = node
            .inputs
            .iter()
            .filter_map(|&v| producer(graph, v))
            .filter_map(|p| seg_of.get(p.0).copied())
            .collect();
        // Candidates: producer segments on the same device (latest first), then the latest
        // segment of the device.
        let mut candidates: Vec<usize> = preds
            .iter()
            .rev()
            .copied()
            .filter(|&p| devs.get(p) == Some(&d))
            .collect();
        if let Some(l) = last_of[dev_index(d)] {
            candidates.push(l);
        }
        let ok = |c: usize| {
            preds
                .iter()
                .all(|&p| p == c || !anc.get(p).is_some_and(|a| a.contains(&c)))
        };
        let chosen = match candidates.into_iter().find(|&c| ok(c)) {
            Some(c) => c,
            None => {
                devs.push(d);
                members.push(Vec::new());
                anc.push(BTreeSet::new());
                devs.len() - 1
            }
        };
        if let Some(s) = seg_of.get_mut(i) {
            *s = chosen;
        }
        if let Some(m) = members.get_mut(chosen) {
            m.push(NodeId(i));
        }
        last_of[dev_index(d)] = Some(chosen);
        // New ancestors of `chosen`, then of everything `chosen` reaches.
        let mut grow = BTreeSet::new();
        for &p in preds.iter().filter(|&&p| p != chosen) {
            grow.insert(p);
            if let Some(a) = anc.get(p) {
                grow.extend(a.iter().copied());
            }
        }
        if grow.contains(&chosen) {
            return Err(Error::Missing {
                what: format!("an acyclic segmentation (node `{}`)", node.name),
            });
        }
        if !grow.is_empty() {
            for (x, a) in anc.iter_mut().enumerate() {
                if x == chosen || a.contains(&chosen) {
                    a.extend(grow.iter().copied());
                }
            }
        }
    }
    // Topological order of the segment DAG (lowest index first among the ready ones).
    let n = devs.len();
    let mut indeg = vec![0usize; n];
    let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (i, node) in nodes.iter().enumerate() {
        let s = seg_of[i];
        for p in node.inputs.iter().filter_map(|&v| producer(graph, v)) {
            let ps = seg_of.get(p.0).copied().unwrap_or(usize::MAX);
            if ps != s && ps < n && succ[ps].insert(s) {
                indeg[s] += 1;
            }
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&s| indeg[s] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(s)) = ready.pop() {
        order.push(s);
        for &t in &succ[s] {
            indeg[t] -= 1;
            if indeg[t] == 0 {
                ready.push(std::cmp::Reverse(t));
            }
        }
    }
    if order.len() != n {
        return Err(Error::Missing {
            what: "an acyclic segment order (the segment graph has a cycle)".into(),
        });
    }
    let mut rank = vec![0usize; n];
    for (r, &s) in order.iter().enumerate() {
        rank[s] = r;
    }
    let mut segments: Vec<Segment> = order
        .iter()
        .map(|&s| Segment {
            device: devs[s],
            nodes: members[s].clone(),
            transfers_in: Vec::new(),
            transfers_out: Vec::new(),
            flops: 0,
        })
        .collect();
    // FLOPs and transfers.
    let device_of_value = |v: ValueId| -> Option<DeviceKind> {
        producer(graph, v).and_then(|p| placements.get(p.0).map(|pl| pl.device))
    };
    let outputs: BTreeSet<ValueId> = graph.outputs().iter().copied().collect();
    let mut consumers_of: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); graph.values().len()];
    for (i, node) in nodes.iter().enumerate() {
        for v in &node.inputs {
            if let Some(c) = consumers_of.get_mut(v.0) {
                c.insert(rank[seg_of[i]]);
            }
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let seg = &mut segments[rank[seg_of[i]]];
        let facts: Vec<&TensorFact> = node
            .inputs
            .iter()
            .map(|&v| graph.value(v).map(|v| &v.fact))
            .collect::<Result<_>>()?;
        seg.flops = seg.flops.saturating_add(node.op.flops(&facts));
    }
    for (v, value) in graph.values().iter().enumerate() {
        let v = ValueId(v);
        let bytes = fact_bytes(&value.fact);
        let from = device_of_value(v);
        let is_const = matches!(value.kind, ValueKind::Constant { .. });
        // Segments (execution rank) consuming v, per device.
        let consumers = std::mem::take(&mut consumers_of[v.0]);
        for &c in &consumers {
            let to = segments[c].device;
            let cross = match from {
                Some(f) => f != to,
                // Graph inputs cross into the GPU; constants there are resident.
                None => to == DeviceKind::Gpu && !is_const,
            };
            if !cross {
                continue;
            }
            // A value moves to a device once: at its first consuming segment there.
            let first = consumers
                .iter()
                .copied()
                .find(|&k| segments[k].device == to)
                == Some(c);
            if first {
                segments[c].transfers_in.push(Transfer {
                    value: v,
                    from: from.map_or("host", DeviceKind::name),
                    to: to.name(),
                    bytes,
                });
            }
        }
        if let (Some(DeviceKind::Gpu), Some(p)) = (from, producer(graph, v)) {
            let needs_host = outputs.contains(&v)
                || consumers
                    .iter()
                    .any(|&k| segments[k].device == DeviceKind::Cpu);
            if needs_host {
                let ps = rank[seg_of[p.0]];
                let to = if consumers
                    .iter()
                    .any(|&k| segments[k].device == DeviceKind::Cpu)
                {
                    "cpu"
                } else {
                    "host"
                };
                segments[ps].transfers_out.push(Transfer {
                    value: v,
                    from: "gpu",
                    to,
                    bytes,
                });
            }
        }
    }
    Ok(segments)
}
