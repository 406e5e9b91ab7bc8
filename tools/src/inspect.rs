//! `spore inspect MODEL`: inputs, outputs, ops, parameter count and FLOPs per op; with
//! `--plan`, the planner's segments, devices, transfers and reasons.

use crate::run::DeviceArg;
use spore::Result;
use spore::graph::Graph;
use spore::session::{Context, CpuOptions, Device, GpuOptions, Model, Session};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The report for `graph`.
pub fn render(graph: &Graph) -> Result<String> {
    let mut s = String::new();
    let fmt_value = |id| -> Result<String> {
        let v = graph.value(id)?;
        Ok(format!(
            "{:<24} {} {:?}",
            v.name, v.fact.dtype, v.fact.shape
        ))
    };
    let _ = writeln!(s, "inputs:");
    for &id in graph.inputs() {
        let _ = writeln!(s, "  {}", fmt_value(id)?);
    }
    let _ = writeln!(s, "outputs:");
    for &id in graph.outputs() {
        let _ = writeln!(s, "  {}", fmt_value(id)?);
    }
    for (k, v) in graph.metadata() {
        let _ = writeln!(s, "metadata: {k} = {v}");
    }
    let flops = graph.flops();
    let mut per_op: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for (_, op, f) in &flops {
        let e = per_op.entry(op).or_default();
        e.0 += 1;
        e.1 += f;
    }
    let total: u64 = flops.iter().map(|(_, _, f)| f).sum();
    let _ = writeln!(
        s,
        "nodes: {}   parameters: {}   FLOPs: {} ({:.1} MFLOP)",
        graph.nodes().len(),
        graph.parameter_count(),
        total,
        total as f64 / 1e6
    );
    let _ = writeln!(
        s,
        "{:<28} {:>6} {:>14} {:>7}",
        "op", "nodes", "FLOPs", "share"
    );
    for (op, (count, f)) in &per_op {
        let share = if total > 0 {
            100.0 * *f as f64 / total as f64
        } else {
            0.0
        };
        let _ = writeln!(s, "{op:<28} {count:>6} {f:>14} {share:>6.1}%");
    }
    let _ = writeln!(s, "per node:");
    for (name, op, f) in &flops {
        let _ = writeln!(s, "  {name:<40} {op:<24} {f:>12}");
    }
    Ok(s)
}

/// `spore inspect MODEL --plan`: the plan for `device` (with `software_gpu`, a software
/// adapter counts as a GPU even for `auto`), after one run on seeded random inputs so the
/// GPU segments' dispatch counts are known.
pub fn render_plan(graph: &Graph, device: DeviceArg, software_gpu: bool) -> Result<String> {
    let ctx = match (device, software_gpu) {
        (DeviceArg::Auto, true) | (DeviceArg::Gpu, _) => Context::builder()
            .devices([
                Device::Gpu(GpuOptions {
                    allow_software: true,
                    ..Default::default()
                }),
                Device::Cpu(CpuOptions::default()),
            ])
            .build()?,
        _ => crate::run::context(device)?,
    };
    let mut session = Session::new(&ctx, &Model::from_graph(graph.clone()))?;
    let names: Vec<(String, Vec<usize>, spore::DType)> = session
        .inputs()
        .iter()
        .map(|(n, t)| (n.to_string(), t.dims().to_vec(), t.dtype()))
        .collect();
    for (i, (name, dims, dtype)) in names.iter().enumerate() {
        *session.input_by_tensor_name(name)? =
            crate::run::random_input(*dtype, dims, 1000 + i as u64)?;
    }
    session.run()?;
    let mut s = String::new();
    for line in ctx.describe() {
        let _ = writeln!(s, "device: {line}");
    }
    s.push_str(&session.plan().describe());
    let stats = session.run_stats()?;
    for st in &stats.segments {
        let _ = writeln!(
            s,
            "run: segment {} {}: {} nodes, {} dispatches, {} submits, {:.3} ms",
            st.index,
            st.device.name(),
            st.nodes,
            st.dispatches,
            st.submits,
            st.seconds * 1e3
        );
    }
    Ok(s)
}
