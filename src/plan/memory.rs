//! The memory plan: liveness intervals per value per device over the plan's execution steps
//! (one step per node), GPU buffer slots shared by values whose intervals do not overlap
//! (greedy best fit by size), and the host values' last uses (the executor frees each CPU
//! intermediate after it). Rebuilt with the plan, so a resize recomputes it.
//!
//! Intervals are inclusive: a node's inputs and outputs are live at its step, so an output
//! never shares a buffer with an input of the same node. A GPU value read back at the end
//! of its segment stays live until that end (the read-back copy runs after the last
//! dispatch), and an uploaded value is live from its segment's first step.

use super::partition::{Segment, fact_bytes};
use super::{DeviceKind, missing_node};
use crate::error::Result;
use crate::graph::{Graph, NodeId, ValueId, ValueKind};
use std::collections::BTreeSet;
use std::fmt;

/// Inclusive step interval `[start, end]`.
pub type Interval = (usize, usize);

/// The memory plan of a [`super::Plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Nodes in execution order (step `k` runs `steps[k]`).
    pub steps: Vec<NodeId>,
    /// First and last step of each segment.
    pub segment_steps: Vec<Interval>,
    /// GPU liveness interval of each value resident in a slot (constants live in their own
    /// resident buffers and have none).
    pub gpu_interval: Vec<Option<Interval>>,
    /// GPU buffer slot of each value.
    pub gpu_slot: Vec<Option<usize>>,
    /// Size of each slot, bytes (a multiple of 4).
    pub slot_bytes: Vec<u64>,
    /// Host liveness interval of each intermediate held on the host.
    pub host_interval: Vec<Option<Interval>>,
    /// Step after which the host copy of a value may be dropped (`None`: keep it, e.g. a
    /// graph output).
    pub host_last_use: Vec<Option<usize>>,
    /// Bytes of every node output, each allocated separately.
    pub intermediate_bytes: u64,
    /// Bytes of each value.
    value_bytes: Vec<u64>,
}

/// Peak memory against allocating every intermediate separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReport {
    /// Sum of every intermediate (node output), each allocated separately.
    pub intermediate_bytes: u64,
    /// Most host bytes of intermediates live at once (each freed after its last use).
    pub host_peak_bytes: u64,
    /// GPU buffer slots allocated for intermediates and uploads.
    pub gpu_slots: usize,
    /// Bytes of those slots.
    pub gpu_slot_bytes: u64,
    /// Bytes of the GPU-resident values without reuse (one buffer each).
    pub gpu_value_bytes: u64,
    /// `host_peak_bytes + gpu_slot_bytes`.
    pub peak_bytes: u64,
}

impl MemoryReport {
    /// `peak_bytes / intermediate_bytes` (0 with no intermediates).
    pub fn ratio(&self) -> f64 {
        if self.intermediate_bytes == 0 {
            0.0
        } else {
            self.peak_bytes as f64 / self.intermediate_bytes as f64
        }
    }
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory: peak {} bytes = {:.1}% of {} bytes of intermediates (host peak {}, gpu {} \
             slots {} bytes for {} bytes of values)",
            self.peak_bytes,
            100.0 * self.ratio(),
            self.intermediate_bytes,
            self.host_peak_bytes,
            self.gpu_slots,
            self.gpu_slot_bytes,
            self.gpu_value_bytes
        )
    }
}

impl MemoryPlan {
    /// The report.
    pub fn report(&self) -> MemoryReport {
        let max_step = self.steps.len();
        // Host peak: sweep the intervals (events at start and after end).
        let mut delta = vec![0i128; max_step + 2];
        for (v, iv) in self.host_interval.iter().enumerate() {
            if let Some((a, b)) = iv {
                let bytes = self.value_bytes.get(v).copied().unwrap_or(0) as i128;
                delta[(*a).min(max_step)] += bytes;
                delta[(*b + 1).min(max_step + 1)] -= bytes;
            }
        }
        let (mut live, mut peak) = (0i128, 0i128);
        for d in &delta {
            live += d;
            peak = peak.max(live);
        }
        let host_peak_bytes = u64::try_from(peak).unwrap_or(0);
        let gpu_slot_bytes = self.slot_bytes.iter().sum();
        let gpu_value_bytes = self
            .gpu_interval
            .iter()
            .enumerate()
            .filter(|(_, iv)| iv.is_some())
            .map(|(v, _)| padded(self.value_bytes.get(v).copied().unwrap_or(0)))
            .sum();
        MemoryReport {
            intermediate_bytes: self.intermediate_bytes,
            host_peak_bytes,
            gpu_slots: self.slot_bytes.len(),
            gpu_slot_bytes,
            gpu_value_bytes,
            peak_bytes: host_peak_bytes + gpu_slot_bytes,
        }
    }

    /// Whether two values sharing a GPU slot have overlapping lifetimes (a planner bug; the
    /// tests assert this is `None`).
    pub fn find_overlap(&self) -> Option<(ValueId, ValueId)> {
        let mut by_slot: Vec<Vec<(usize, Interval)>> = vec![Vec::new(); self.slot_bytes.len()];
        for (v, (slot, iv)) in self.gpu_slot.iter().zip(&self.gpu_interval).enumerate() {
            if let (Some(s), Some(iv)) = (slot, iv) {
                by_slot.get_mut(*s)?.push((v, *iv));
            }
        }
        for vals in &by_slot {
            for (i, (a, ia)) in vals.iter().enumerate() {
                for (b, ib) in &vals[i + 1..] {
                    if ia.0 <= ib.1 && ib.0 <= ia.1 {
                        return Some((ValueId(*a), ValueId(*b)));
                    }
                }
            }
        }
        None
    }
}

fn padded(bytes: u64) -> u64 {
    bytes.max(4).next_multiple_of(4)
}

impl MemoryPlan {
    /// Bytes of value `v`.
    pub fn bytes_of(&self, v: ValueId) -> u64 {
        self.value_bytes.get(v.0).copied().unwrap_or(0)
    }
}

/// Builds the memory plan for `segments` (in execution order).
pub(crate) fn plan_memory(graph: &Graph, segments: &[Segment], reuse: bool) -> Result<MemoryPlan> {
    let nv = graph.values().len();
    let value_bytes: Vec<u64> = graph.values().iter().map(|v| fact_bytes(&v.fact)).collect();
    let mut steps = Vec::new();
    let mut segment_steps = Vec::with_capacity(segments.len());
    let mut step_device = Vec::new();
    let mut seg_of_step = Vec::new();
    for (s, seg) in segments.iter().enumerate() {
        let a = steps.len();
        steps.extend(seg.nodes.iter().copied());
        step_device.extend(seg.nodes.iter().map(|_| seg.device));
        seg_of_step.extend(seg.nodes.iter().map(|_| s));
        segment_steps.push((a, steps.len().saturating_sub(1).max(a)));
    }
    // Uses per value: last GPU consumer step, last host use step.
    let mut last_gpu_use: Vec<Option<usize>> = vec![None; nv];
    let mut last_host_use: Vec<Option<usize>> = vec![None; nv];
    for (k, n) in steps.iter().enumerate() {
        let node = graph.nodes().get(n.0).ok_or_else(|| missing_node(*n))?;
        for v in &node.inputs {
            let slot = match step_device[k] {
                DeviceKind::Gpu => &mut last_gpu_use[v.0],
                DeviceKind::Cpu => &mut last_host_use[v.0],
            };
            *slot = Some(slot.map_or(k, |x: usize| x.max(k)));
        }
    }
    let outputs: BTreeSet<ValueId> = graph.outputs().iter().copied().collect();
    let mut gpu_interval: Vec<Option<Interval>> = vec![None; nv];
    let mut host_interval: Vec<Option<Interval>> = vec![None; nv];
    let mut host_last_use: Vec<Option<usize>> = vec![None; nv];
    // Uploads: host values live on the GPU from their first GPU segment's start, and on the
    // host until that upload at least.
    for (s, seg) in segments.iter().enumerate() {
        if seg.device != DeviceKind::Gpu {
            continue;
        }
        let (a, _) = segment_steps[s];
        for t in &seg.transfers_in {
            let v = t.value.0;
            let end = last_gpu_use[v].unwrap_or(a).max(a);
            gpu_interval[v] = Some((a, end));
            last_host_use[v] = Some(last_host_use[v].map_or(a, |x| x.max(a)));
        }
    }
    let end_step = steps.len().saturating_sub(1);
    for (k, n) in steps.iter().enumerate() {
        let node = graph.nodes().get(n.0).ok_or_else(|| missing_node(*n))?;
        let (_, seg_end) = segment_steps[seg_of_step[k]];
        for o in &node.outputs {
            let v = o.0;
            let is_out = outputs.contains(o);
            match step_device[k] {
                DeviceKind::Gpu => {
                    let read_back = is_out || last_host_use[v].is_some();
                    let mut end = last_gpu_use[v].unwrap_or(k).max(k);
                    if read_back {
                        end = end.max(seg_end);
                        let host_end = if is_out {
                            end_step
                        } else {
                            last_host_use[v].unwrap_or(seg_end).max(seg_end)
                        };
                        host_interval[v] = Some((seg_end, host_end));
                    }
                    gpu_interval[v] = Some((k, end));
                }
                DeviceKind::Cpu => {
                    let host_end = if is_out {
                        end_step
                    } else {
                        last_host_use[v].unwrap_or(k).max(k)
                    };
                    host_interval[v] = Some((k, host_end));
                }
            }
            if !is_out {
                host_last_use[v] = last_host_use[v];
            }
        }
    }
    // Host values that are not intermediates (inputs) are the caller's: never freed, not
    // counted. Constants are the model's.
    for (v, value) in graph.values().iter().enumerate() {
        if !matches!(value.kind, ValueKind::Output { .. }) {
            host_last_use[v] = None;
        }
    }
    // Greedy best fit over GPU intervals, in order of start (larger first on ties).
    let mut order: Vec<usize> = (0..nv).filter(|&v| gpu_interval[v].is_some()).collect();
    order.sort_by_key(|&v| {
        let (a, _) = gpu_interval[v].unwrap_or((0, 0));
        (a, std::cmp::Reverse(value_bytes[v]))
    });
    let mut gpu_slot: Vec<Option<usize>> = vec![None; nv];
    let mut slot_bytes: Vec<u64> = Vec::new();
    // (end step, slot) of the values holding each busy slot.
    let mut busy: Vec<(usize, usize)> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for v in order {
        let Some((a, b)) = gpu_interval[v] else {
            continue;
        };
        let need = padded(value_bytes[v]);
        if reuse {
            busy.retain(|&(end, slot)| {
                if end < a {
                    free.push(slot);
                    false
                } else {
                    true
                }
            });
        }
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, s)| slot_bytes[**s] >= need)
            .min_by_key(|(_, s)| slot_bytes[**s])
            .map(|(i, _)| i)
            .or_else(|| {
                // Nothing big enough: grow the largest free slot rather than add one.
                free.iter()
                    .enumerate()
                    .max_by_key(|(_, s)| slot_bytes[**s])
                    .map(|(i, _)| i)
            });
        let slot = match best {
            Some(i) => {
                let s = free.swap_remove(i);
                slot_bytes[s] = slot_bytes[s].max(need);
                s
            }
            None => {
                slot_bytes.push(need);
                slot_bytes.len() - 1
            }
        };
        gpu_slot[v] = Some(slot);
        busy.push((b, slot));
    }
    let intermediate_bytes = graph
        .values()
        .iter()
        .zip(&value_bytes)
        .filter(|(v, _)| matches!(v.kind, ValueKind::Output { .. }))
        .map(|(_, b)| *b)
        .sum();
    Ok(MemoryPlan {
        steps,
        segment_steps,
        gpu_interval,
        gpu_slot,
        slot_bytes,
        host_interval,
        host_last_use,
        intermediate_bytes,
        value_bytes,
    })
}
