//! `spore inspect MODEL`: inputs, outputs, ops, parameter count and FLOPs per op.

use spore::Result;
use spore::graph::Graph;
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
