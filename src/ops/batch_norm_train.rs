//! `batch_norm_train`: training-mode batch normalisation over the last (channel) axis, what
//! [`BatchNorm`](super::batch_norm::BatchNorm) becomes in a training graph (PyTorch's
//! `model.train()`). It normalises with the batch mean and biased batch variance and returns
//! the running statistics blended with the batch ones, so the trainer can commit them after
//! the step:
//!
//! * inputs `[x, running_mean, running_var, gamma, beta]` (the last four `[c]`);
//! * outputs `[y, new_running_mean, new_running_var]`, with
//!   `new = (1 - momentum) * running + momentum * batch` (the variance blended in unbiased).
//!
//! Its gradient is `batch_norm_grad` with `training = true` (through the batch statistics).

use super::batch_norm_grad::BatchNormGrad;
use super::grad_util::{input, output_grad};
use super::{
    GpuValue, GradContext, OpCase, OpDef, all_f32, arity, exec_err, first_numel, input_f32,
    random_f32, rows_last, tensor_f32,
};
use crate::backend::gpu::kernels::batch_norm as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::batch_norm as reference;
use spore_kernels_cpu::rng::Rng;

/// Training-mode batch norm: batch statistics, running statistics updated.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormTrain {
    /// Added to the biased batch variance before the square root; finite and non-negative.
    pub eps: f64,
    /// Weight of the batch statistic in the running-stat update, in `[0, 1]` (PyTorch's
    /// `momentum`, default 0.1).
    pub momentum: f64,
}

impl Default for BatchNormTrain {
    fn default() -> Self {
        BatchNormTrain {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

const STATS: [&str; 4] = ["running_mean", "running_var", "gamma", "beta"];

impl BatchNormTrain {
    fn params(&self, x: &[usize]) -> Result<reference::BatchNormTrainParams> {
        let (rows, channels) = rows_last("x", x).map_err(|r| exec_err(Self::NAME, r))?;
        Ok(reference::BatchNormTrainParams {
            rows,
            channels,
            eps: self.eps,
            momentum: self.momentum,
        })
    }

    /// Runs `kernel` (reference or tuned) on `inputs`, returning `[y, mean, var]`.
    fn eval_with(
        &self,
        inputs: &[&Tensor],
        kernel: impl FnOnce(
            reference::BatchNormTrainParams,
            [&[f32]; 3],
            &mut [f32],
            &mut [f32],
            &mut [f32],
            &mut [f32],
            &mut [f32],
        ) -> Result<()>,
    ) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let [rm, rv, gamma, beta] = [1, 2, 3, 4].map(|i| input_f32(Self::NAME, inputs, i));
        let p = self.params(inputs[0].dims())?;
        let (mut mean, mut var) = (rm?.to_vec(), rv?.to_vec());
        let c = p.channels;
        let (mut y, mut saved_mean, mut saved_inv_std) =
            (vec![0f32; x.len()], vec![0f32; c], vec![0f32; c]);
        kernel(
            p,
            [x, gamma?, beta?],
            &mut mean,
            &mut var,
            &mut y,
            &mut saved_mean,
            &mut saved_inv_std,
        )?;
        Ok(vec![
            tensor_f32(inputs[0].dims(), y)?,
            tensor_f32(&[c], mean)?,
            tensor_f32(&[c], var)?,
        ])
    }
}

impl OpDef for BatchNormTrain {
    const NAME: &'static str = "batch_norm_train";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 5, 5)?;
        all_f32(inputs)?;
        let (rows, c) = rows_last("x", &inputs[0].shape)?;
        if rows < 2 {
            return Err(format!(
                "x has {rows} row(s) per channel; batch statistics need at least 2"
            ));
        }
        for (name, f) in STATS.iter().zip(&inputs[1..]) {
            if f.shape != [c] {
                return Err(format!("{name} has shape {:?}, expected [{c}]", f.shape));
            }
        }
        Ok(vec![
            TensorFact::f32(inputs[0].shape.clone()),
            TensorFact::f32(vec![c]),
            TensorFact::f32(vec![c]),
        ])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.eval_with(inputs, |p, [x, g, b], rm, rv, y, sm, si| {
            reference::batch_norm_train(p, x, g, b, rm, rv, y, sm, si)?;
            Ok(())
        })
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        self.eval_with(inputs, |p, [x, g, b], rm, rv, y, sm, si| {
            spore_kernels_cpu::batch_norm::batch_norm_train(
                p, x, g, b, rm, rv, y, sm, si, threads,
            )?;
            Ok(())
        })
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        all_f32(inputs)
    }

    /// Copies the running statistics into the outputs, then records stats + combine + apply
    /// (`kernels::batch_norm::record_train`) updating those copies in place; the batch
    /// mean and inverse std go to pooled scratch buffers (the gradient recomputes them).
    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let ([x, rm, rv, gamma, beta], [y, new_mean, new_var]) = (inputs, outputs) else {
            return Err(exec_err(Self::NAME, "expects 5 inputs and 3 outputs"));
        };
        let p = self.params(x.dims())?;
        let bytes = (p.channels * 4) as u64;
        rec.copy(rm.buffer, 0, new_mean.buffer, 0, bytes)?;
        rec.copy(rv.buffer, 0, new_var.buffer, 0, bytes)?;
        // Pooled scratch (held until submit): no allocation or upload per run.
        let saved_mean = rec.scratch("batch_norm_train/saved_mean", bytes)?;
        let saved_inv_std = rec.scratch("batch_norm_train/saved_inv_std", bytes)?;
        let bn = gpu_kernel::BatchNormTrain {
            shape: p,
            act: None,
            knobs: gpu_kernel::Knobs::default(),
        };
        gpu_kernel::record_train::<f32>(
            gpu,
            rec,
            x.buffer,
            gamma.buffer,
            beta.buffer,
            new_mean.buffer,
            new_var.buffer,
            y.buffer,
            &saved_mean,
            &saved_inv_std,
            &bn,
        )
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("eps", AttrValue::Float(self.eps))
            .with("momentum", AttrValue::Float(self.momentum))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let eps = attrs.float("eps")?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(attrs.err("eps", format!("{eps} must be finite and non-negative")));
        }
        let momentum = attrs.float("momentum")?;
        if !(0.0..=1.0).contains(&momentum) {
            return Err(attrs.err("momentum", format!("{momentum} must be in [0, 1]")));
        }
        Ok(BatchNormTrain { eps, momentum })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // NHWC with ragged channels, a matrix, and momentum at both ends of its range.
        let configs: [(&str, &[usize], f64, f64); 3] = [
            ("nhwc", &[2, 3, 4, 5], 1e-5, 0.1),
            ("matrix", &[7, 3], 1e-3, 1.0),
            ("frozen_running", &[3, 2, 2, 13], 0.0, 0.0),
        ];
        configs
            .into_iter()
            .map(|(name, x, eps, momentum)| {
                let c = x.last().copied().unwrap_or(1);
                let var = random_f32(rng, &[c])?.map_f32(|v| v.abs() + 0.25)?;
                let inputs = vec![
                    random_f32(rng, x)?,
                    random_f32(rng, &[c])?,
                    var,
                    random_f32(rng, &[c])?,
                    random_f32(rng, &[c])?,
                ];
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: BatchNormTrain { eps, momentum }.into(),
                    inputs,
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        4 * first_numel(inputs)
    }

    /// `batch_norm_grad` in training mode on `[x, gamma, dy]` gives `dx`, `dgamma`, `dbeta`;
    /// the running statistics are buffers, not trained: no gradient flows to them (nor from
    /// the updated statistics, which are not differentiable outputs).
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None; 5]);
        };
        let (x, gamma) = (input(ctx, 0)?, input(ctx, 3)?);
        let outs = ctx.builder.node(
            &format!("{}/grad", ctx.node),
            BatchNormGrad {
                eps: self.eps,
                training: true,
            },
            &[x, gamma, dy],
        )?;
        let &[dx, dgamma, dbeta] = outs.as_slice() else {
            return Err(crate::Error::invalid_param(
                "grad",
                format!("batch_norm_grad gave {} outputs, expected 3", outs.len()),
            ));
        };
        Ok(vec![Some(dx), None, None, Some(dgamma), Some(dbeta)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(83);
        for case in BatchNormTrain::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule_outputs(
                &case.op,
                &case.inputs,
                &[0, 3, 4],
                Default::default(),
                &mut rng,
                1,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn running_stats_follow_pytorch() {
        // One channel, x = [1, 2, 3, 6]: batch mean 3, biased var 3.5, unbiased 14/3.
        let op = BatchNormTrain {
            eps: 0.0,
            momentum: 0.25,
        };
        let x = Tensor::from_vec(&[4, 1], vec![1f32, 2.0, 3.0, 6.0]).unwrap();
        let c = |v: f32| Tensor::from_vec(&[1], vec![v]).unwrap();
        let (rm, rv, g, b) = (c(1.0), c(2.0), c(1.0), c(0.0));
        let out = op.eval_ref(&[&x, &rm, &rv, &g, &b]).unwrap();
        let mean = out[1].to_f32_vec()[0];
        let var = out[2].to_f32_vec()[0];
        assert!((mean - (0.75 * 1.0 + 0.25 * 3.0)).abs() < 1e-6, "{mean}");
        assert!(
            (var - (0.75 * 2.0 + 0.25 * 14.0 / 3.0)).abs() < 1e-6,
            "{var}"
        );
        let y = out[0].to_f32_vec();
        let inv = 1.0 / 3.5f32.sqrt();
        assert!((y[3] - 3.0 * inv).abs() < 1e-5, "{y:?}");
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = BatchNormTrain::default();
        let x = TensorFact::f32(vec![4, 3]);
        let c3 = TensorFact::f32(vec![3]);
        let c2 = TensorFact::f32(vec![2]);
        assert!(op.infer(&[&x, &c3, &c3, &c3, &c3]).is_ok());
        assert!(op.infer(&[&x, &c2, &c3, &c3, &c3]).is_err());
        assert!(op.infer(&[&x, &c3, &c3, &c3]).is_err());
        let one_row = TensorFact::f32(vec![1, 3]);
        assert!(op.infer(&[&one_row, &c3, &c3, &c3, &c3]).is_err());
    }
}
