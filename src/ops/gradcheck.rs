//! Test support: checks an op's gradient rule ([`OpDef::grad`](super::OpDef::grad)) end to end
//! at graph level. The rule's backward nodes are built into a graph, run through a CPU
//! [`Session`](crate::session::Session) (so the grad ops' `infer`, `eval_cpu` and wiring are
//! all exercised), and compared with central finite differences of the forward op's
//! `eval_ref` on the scalar `L(x) = sum_j <op(x)_j, dy_j>` for random `dy`.
//!
//! The kernels' gradients are already checked in f64 by `spore-kernels-cpu`; this catches
//! wiring mistakes (wrong input, missing transpose, lost broadcast reduction), so an f32
//! finite difference with a loose tolerance is enough.

use super::{GradContext, Op};
use crate::error::{Error, Result};
use crate::graph::{GraphBuilder, ValueId};
use crate::session::{Context, Model, Session};
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::rng::Rng;

/// How to check one rule.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Finite-difference step (1e-2 for smooth ops; smaller where kinks are near).
    pub eps: f64,
    /// Largest relative L2 error allowed per input gradient.
    pub tol: f64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 1e-2,
            tol: 2e-3,
        }
    }
}

fn sum_dot(outs: &[Tensor], dys: &[Tensor]) -> f64 {
    outs.iter()
        .zip(dys)
        .map(|(y, d)| {
            y.to_f32_vec()
                .iter()
                .zip(d.to_f32_vec())
                .map(|(&a, b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
        })
        .sum()
}

/// Checks `op`'s gradient rule on `inputs`: every input whose rule returns a gradient is
/// compared with finite differences (f32 inputs only; integer inputs such as labels are held
/// fixed). `wrt` lists the inputs that MUST receive a gradient. Returns the worst error.
pub fn check_rule(
    op: &Op,
    inputs: &[Tensor],
    wrt: &[usize],
    cfg: GradCheck,
    rng: &mut Rng,
) -> Result<f64> {
    check_rule_outputs(op, inputs, wrt, cfg, rng, usize::MAX)
}

/// [`check_rule`] where only the first `differentiable` outputs reach the loss (the others,
/// e.g. `batch_norm_train`'s updated running statistics, get no gradient: their `dy` is zero
/// in the finite differences and `None` for the rule).
pub fn check_rule_outputs(
    op: &Op,
    inputs: &[Tensor],
    wrt: &[usize],
    cfg: GradCheck,
    rng: &mut Rng,
    differentiable: usize,
) -> Result<f64> {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let outs = op.eval_ref(&refs)?;
    let dys: Vec<Tensor> = outs
        .iter()
        .enumerate()
        .map(|(j, y)| {
            let n = y.dims().iter().product::<usize>();
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    if j < differentiable {
                        rng.uniform(-1.0, 1.0) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            Tensor::from_vec(y.dims(), data)
        })
        .collect::<Result<_>>()?;

    // Graph: x_i inputs, the forward node, dy_j inputs, the rule's backward nodes.
    let mut b = GraphBuilder::new();
    let xs: Vec<ValueId> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| b.input(&format!("x{i}"), t.dtype(), t.dims()))
        .collect::<Result<_>>()?;
    let ys = b.node("fwd", op.clone(), &xs)?;
    let dy_ids: Vec<Option<ValueId>> = dys
        .iter()
        .enumerate()
        .map(|(j, t)| {
            if j < differentiable {
                b.input(&format!("dy{j}"), t.dtype(), t.dims()).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let grads = {
        let mut ctx = GradContext {
            builder: &mut b,
            node: "fwd",
            inputs: &xs,
            outputs: &ys,
            output_grads: &dy_ids,
        };
        op.grad(&mut ctx)?
    };
    if grads.len() != inputs.len() {
        return Err(Error::invalid_param(
            "grad",
            format!("{} gradients for {} inputs", grads.len(), inputs.len()),
        ));
    }
    for &i in wrt {
        if grads.get(i).copied().flatten().is_none() {
            return Err(Error::invalid_param(
                "grad",
                format!("no gradient for input {i}"),
            ));
        }
    }
    // (input index, gradient value name): a rule may hand one value to several inputs (add
    // with equal shapes), and the graph lists an output once, so results are found by name.
    let mut out_index = Vec::new();
    for (i, g) in grads.iter().enumerate() {
        if let Some(g) = g {
            b.output(*g)?;
            out_index.push((i, b.value_name(*g)?));
        }
    }
    // Keep the forward output alive as a graph output too (a rule may not use it).
    for &y in &ys {
        b.output(y)?;
    }
    let graph = b.build()?;
    let mut session = Session::new(&Context::cpu(), &Model::from_graph(graph))?;
    for (i, t) in inputs.iter().enumerate() {
        *session.input_by_tensor_name(&format!("x{i}"))? = t.clone();
    }
    for (j, t) in dys.iter().enumerate().take(differentiable) {
        *session.input_by_tensor_name(&format!("dy{j}"))? = t.clone();
    }
    session.run()?;
    let results = session.outputs()?;

    let mut worst = 0f64;
    for (i, gname) in &out_index {
        let i = *i;
        let got = &results
            .iter()
            .find(|(n, _)| n == gname)
            .ok_or_else(|| Error::Missing {
                what: format!("gradient output `{gname}`"),
            })?
            .1;
        if got.dims() != inputs[i].dims() {
            return Err(Error::invalid_param(
                "grad",
                format!(
                    "gradient of input {i} has shape {:?}, input has {:?}",
                    got.dims(),
                    inputs[i].dims()
                ),
            ));
        }
        if inputs[i].dtype() != DType::F32 {
            continue;
        }
        let base = inputs[i].to_f32_vec();
        let mut numeric = vec![0f64; base.len()];
        for (e, slot) in numeric.iter_mut().enumerate() {
            let eval_at = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[e] = (f64::from(v[e]) + delta) as f32;
                let mut ins = inputs.to_vec();
                ins[i] = Tensor::from_vec(inputs[i].dims(), v)?;
                let r: Vec<&Tensor> = ins.iter().collect();
                Ok(sum_dot(&op.eval_ref(&r)?, &dys))
            };
            // The step actually taken in f32, so the quotient uses the true difference.
            let hi = (f64::from(base[e]) + cfg.eps) as f32;
            let lo = (f64::from(base[e]) - cfg.eps) as f32;
            let h = f64::from(hi) - f64::from(lo);
            *slot = (eval_at(cfg.eps)? - eval_at(-cfg.eps)?) / h;
        }
        let analytic = got.to_f32_vec();
        let (mut num, mut den) = (0f64, 0f64);
        for (&a, &n) in analytic.iter().zip(&numeric) {
            num += (f64::from(a) - n).powi(2);
            den += n * n;
        }
        let err = (num / den.max(1e-20)).sqrt();
        if err > cfg.tol {
            return Err(Error::invalid_param(
                "grad",
                format!(
                    "input {i}: relative L2 error {err:.3e} > {:.0e} (analytic {:?}.., numeric {:?}..)",
                    cfg.tol,
                    &analytic[..analytic.len().min(4)],
                    &numeric[..numeric.len().min(4)]
                ),
            ));
        }
        worst = worst.max(err);
    }
    Ok(worst)
}
