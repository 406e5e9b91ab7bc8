//! Cross-backend conformance: every op's seeded `cases()` run on each backend (the reference,
//! the tuned CPU kernels at 1 and N threads, the GPU) and compared with the reference oracle.
//! `spore conformance` prints the rows; the integration tests assert on them, so CI and a user
//! at a terminal see the same verdicts.
//!
//! Tolerances are relative L2 errors against the f64-accumulating reference: `1e-5` for the
//! CPU (f32 with reordered sums), `1e-4` for the GPU (f32, different reduction trees, fast
//! math in some drivers). An op with no kernel on a backend is reported as `missing`, not
//! silently passed.

use crate::backend::gpu::GpuContext;
use crate::error::{Error, Result};
use crate::ops::{Op, OpCase};
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// Worst relative L2 error the tuned CPU kernels may show.
pub const CPU_TOLERANCE: f64 = 1e-5;
/// Worst relative L2 error the GPU kernels may show (f32).
pub const GPU_TOLERANCE: f64 = 1e-4;

/// A backend to check.
#[derive(Debug, Clone, Copy)]
pub enum Backend<'g> {
    /// The reference itself: checks inference agrees with what it produces, and finiteness.
    Reference,
    /// The tuned CPU kernels on this many threads.
    Cpu {
        /// Worker threads.
        threads: usize,
    },
    /// The GPU kernels, one op at a time.
    Gpu(&'g GpuContext),
}

impl Backend<'_> {
    /// Row label: `reference`, `cpu-1t`, `gpu`.
    pub fn label(&self) -> String {
        match self {
            Backend::Reference => "reference".into(),
            Backend::Cpu { threads } => format!("cpu-{threads}t"),
            Backend::Gpu(_) => "gpu".into(),
        }
    }

    fn tolerance(&self) -> f64 {
        match self {
            Backend::Reference => 0.0,
            Backend::Cpu { .. } => CPU_TOLERANCE,
            Backend::Gpu(_) => GPU_TOLERANCE,
        }
    }

    fn eval(&self, op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        match self {
            Backend::Reference => op.eval_ref(inputs),
            Backend::Cpu { threads } => op.eval_cpu(inputs, *threads),
            Backend::Gpu(gpu) => op.eval_gpu(gpu, inputs),
        }
    }
}

/// The verdict of one op on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every case within tolerance.
    Pass,
    /// Some case out of tolerance, non-finite, misshapen, or erroring.
    Fail,
    /// The backend has no kernel for this op.
    Missing,
}

impl Status {
    /// `pass`, `FAIL`, `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Missing => "missing",
        }
    }
}

/// One op on one backend.
#[derive(Debug, Clone)]
pub struct Row {
    /// The op's name.
    pub op: &'static str,
    /// [`Backend::label`].
    pub backend: String,
    /// Cases run.
    pub cases: usize,
    /// Worst relative L2 error over the cases' outputs.
    pub worst: f64,
    /// The tolerance applied.
    pub tolerance: f64,
    /// The verdict.
    pub status: Status,
    /// The first failing case and why (empty when passing).
    pub detail: String,
}

/// Relative L2 error `|a - b| / max(|b|, tiny)` in f64.
pub fn rel_l2(actual: &[f32], expected: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&a, &e) in actual.iter().zip(expected) {
        let d = f64::from(a) - f64::from(e);
        num += d * d;
        den += f64::from(e) * f64::from(e);
    }
    if actual.len() != expected.len() {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

/// Checks `got` against the reference outputs `want`: same count, shapes, dtypes, finite
/// values; returns the worst relative error or why it failed.
fn compare(got: &[Tensor], want: &[Tensor]) -> std::result::Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.dims() != w.dims() || g.dtype() != w.dtype() {
            return Err(format!(
                "output {i}: {} {:?}, expected {} {:?}",
                g.dtype(),
                g.dims(),
                w.dtype(),
                w.dims()
            ));
        }
        let (gv, wv) = (g.to_f32_vec(), w.to_f32_vec());
        if let Some(j) = gv.iter().position(|v| !v.is_finite()) {
            return Err(format!("output {i}: element {j} is {}", gv[j]));
        }
        let e = rel_l2(&gv, &wv);
        if e.is_nan() {
            return Err(format!("output {i}: NaN error"));
        }
        worst = worst.max(e);
    }
    Ok(worst)
}

/// Runs every op's cases (drawn from `seed`) on every backend; rows in op-list order, then
/// backend order. Fails only if the cases themselves cannot be built.
pub fn run(backends: &[Backend<'_>], seed: u64) -> Result<Vec<Row>> {
    let mut rng = Rng::new(seed);
    let cases = Op::all_cases(&mut rng)?;
    let mut rows = Vec::new();
    for &name in Op::NAMES {
        let op_cases: Vec<&OpCase> = cases.iter().filter(|c| c.op.name() == name).collect();
        // The oracle's outputs, computed once per case.
        let wants: Vec<Result<Vec<Tensor>>> = op_cases
            .iter()
            .map(|c| {
                let ins: Vec<&Tensor> = c.inputs.iter().collect();
                c.op.eval_ref(&ins)
            })
            .collect();
        for backend in backends {
            rows.push(check_op(name, &op_cases, &wants, backend));
        }
    }
    Ok(rows)
}

fn check_op(
    name: &'static str,
    cases: &[&OpCase],
    wants: &[Result<Vec<Tensor>>],
    backend: &Backend<'_>,
) -> Row {
    let mut row = Row {
        op: name,
        backend: backend.label(),
        cases: 0,
        worst: 0.0,
        tolerance: backend.tolerance(),
        status: Status::Pass,
        detail: String::new(),
    };
    for (case, want) in cases.iter().zip(wants) {
        row.cases += 1;
        let want = match want {
            Ok(w) => w,
            Err(e) => {
                row.status = Status::Fail;
                row.detail = format!("{}: reference: {e}", case.name);
                return row;
            }
        };
        let ins: Vec<&Tensor> = case.inputs.iter().collect();
        let got = match backend.eval(&case.op, &ins) {
            Ok(g) => g,
            Err(Error::NotSupported { what }) => {
                row.status = Status::Missing;
                row.detail = what;
                return row;
            }
            Err(e) => {
                row.status = Status::Fail;
                row.detail = format!("{}: {e}", case.name);
                return row;
            }
        };
        match compare(&got, want) {
            Ok(e) => {
                row.worst = row.worst.max(e);
                if e > row.tolerance && row.status == Status::Pass {
                    row.status = Status::Fail;
                    row.detail = format!("{}: rel L2 {e:.2e} > {:.0e}", case.name, row.tolerance);
                }
            }
            Err(why) => {
                row.status = Status::Fail;
                row.detail = format!("{}: {why}", case.name);
                return row;
            }
        }
    }
    row
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<28} {:<10} {:>5} {:>10} {:>7}  {}\n",
        "op", "backend", "cases", "worst", "status", "detail"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<28} {:<10} {:>5} {:>10.2e} {:>7}  {}\n",
            r.op,
            r.backend,
            r.cases,
            r.worst,
            r.status.as_str(),
            r.detail
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_l2_is_relative_and_catches_length() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        let e = rel_l2(&[1.1, 2.0], &[1.0, 2.0]);
        assert!((e - 0.1 / 5f64.sqrt()).abs() < 1e-6);
        assert!(rel_l2(&[1.0], &[1.0, 2.0]).is_infinite());
    }
}
