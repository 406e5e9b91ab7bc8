//! `batch_norm`: inference-mode batch normalisation over the last (channel) axis,
//! `y = gamma * (x - mean) / sqrt(var + eps) + beta`, with inputs `x, mean, var, gamma, beta`
//! (the last four `[c]`). `plan` folds it into a preceding convolution where it can.

use super::batch_norm_grad::BatchNormGrad;
use super::grad_util::{input, output_grad};
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32, rows_last,
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

/// Inference batch norm with frozen statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance before the square root; finite and non-negative.
    pub eps: f64,
}

impl Default for BatchNorm {
    fn default() -> Self {
        BatchNorm { eps: 1e-5 }
    }
}

impl BatchNorm {
    /// Kernel parameters for input `x` `[rows..., channels]`.
    fn params(&self, x: &[usize]) -> Result<reference::BatchNormParams> {
        let (rows, channels) =
            rows_last("x", x).map_err(|reason| super::exec_err(Self::NAME, reason))?;
        Ok(reference::BatchNormParams {
            rows,
            channels,
            eps: self.eps,
        })
    }
}

const STATS: [&str; 4] = ["mean", "var", "gamma", "beta"];

impl OpDef for BatchNorm {
    const NAME: &'static str = "batch_norm";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 5, 5)?;
        all_f32(inputs)?;
        let (_, c) = rows_last("x", &inputs[0].shape)?;
        for (name, f) in STATS.iter().zip(&inputs[1..]) {
            if f.shape != [c] {
                return Err(format!("{name} has shape {:?}, expected [{c}]", f.shape));
            }
        }
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let [mean, var, gamma, beta] = [1, 2, 3, 4].map(|i| input_f32(Self::NAME, inputs, i));
        let (rows, channels) = rows_last("x", inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let p = reference::BatchNormParams {
            rows,
            channels,
            eps: self.eps,
        };
        let mut y = vec![0f32; x.len()];
        reference::batch_norm_inference(p, x, mean?, var?, gamma?, beta?, &mut y)?;
        Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let [mean, var, gamma, beta] = [1, 2, 3, 4].map(|i| input_f32(Self::NAME, inputs, i));
        let p = self.params(inputs[0].dims())?;
        let mut y = vec![0f32; x.len()];
        spore_kernels_cpu::batch_norm::batch_norm_inference(
            p, x, mean?, var?, gamma?, beta?, None, threads, &mut y,
        )?;
        Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        super::gpu_f32_fits(self, inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let x = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let [mean, var, gamma, beta] =
            [1, 2, 3, 4].map(|i| gpu_arg(Self::NAME, inputs, i, "input"));
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let bn = gpu_kernel::BatchNorm {
            shape: self.params(x.dims())?,
            act: None,
            knobs: gpu_kernel::Knobs::default(),
        };
        gpu_kernel::record::<f32>(
            gpu,
            rec,
            x.buffer,
            mean?.buffer,
            var?.buffer,
            gamma?.buffer,
            beta?.buffer,
            y.buffer,
            &bn,
        )
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("eps", AttrValue::Float(self.eps))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let eps = attrs.float("eps")?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(attrs.err("eps", format!("{eps} must be finite and non-negative")));
        }
        Ok(BatchNorm { eps })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, eps): NHWC, a matrix, a vector; eps 0 with variances kept positive.
        let configs: [(&str, &[usize], f64); 3] = [
            ("nhwc", &[2, 3, 4, 5], 1e-5),
            ("matrix", &[7, 3], 1e-3),
            ("vector_eps0", &[6], 0.0),
        ];
        configs
            .into_iter()
            .map(|(name, x, eps)| {
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
                    op: BatchNorm { eps }.into(),
                    inputs,
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// Frozen statistics (inference mode): one `batch_norm_grad` node (`training = false`)
    /// gives `dx`, `dgamma`, `dbeta`; `mean` and `var` are running buffers, not trained, so
    /// no gradient flows to them.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None; 5]);
        };
        let [x, mean, var, gamma] = [0, 1, 2, 3].map(|i| input(ctx, i));
        let outs = ctx.builder.node(
            &format!("{}/grad", ctx.node),
            BatchNormGrad {
                eps: self.eps,
                training: false,
            },
            &[x?, gamma?, dy, mean?, var?],
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
        let mut rng = Rng::new(81);
        for case in BatchNorm::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &[0, 3, 4],
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = BatchNorm::default();
        let c = TensorFact::f32([3]);
        let x = TensorFact::f32([2, 3]);
        assert!(op.infer(&[&x, &c, &c, &c]).is_err());
        assert!(op.infer(&[&TensorFact::f32([]), &c, &c, &c, &c]).is_err());
        assert!(op.infer(&[&x, &c, &TensorFact::f32([2]), &c, &c]).is_err());
        assert!(
            op.infer(&[&x, &c, &c, &c, &TensorFact::new(crate::DType::I32, [3])])
                .is_err()
        );
        assert_eq!(op.infer(&[&x, &c, &c, &c, &c]).unwrap()[0].shape, [2, 3]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        // Channel 0: (x - 1) / 2 * 3 + 1; channel 1: (x - 0) / 1 * 1 + 0 (var 4 and 1, eps 0).
        let x = Tensor::from_vec(&[2, 2], vec![5f32, 2., -1., -3.]).unwrap();
        let t = |v: [f32; 2]| Tensor::from_vec(&[2], v.to_vec()).unwrap();
        let (mean, var, gamma, beta) = (t([1., 0.]), t([4., 1.]), t([3., 1.]), t([1., 0.]));
        let y = BatchNorm { eps: 0.0 }
            .eval_ref(&[&x, &mean, &var, &gamma, &beta])
            .unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![7., 2., -2., -3.]);
    }

    #[test]
    fn from_attrs_refuses_bad_eps() {
        for eps in [-1.0, f64::NAN, f64::INFINITY] {
            let a = Attrs::new(BatchNorm::NAME).with("eps", AttrValue::Float(eps));
            assert!(BatchNorm::from_attrs(&a).is_err());
        }
    }
}
