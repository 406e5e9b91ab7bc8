//! `log_softmax`: `y = x - log(sum(exp(x)))` over the last axis (any rank >= 1; the other axes
//! are rows), computed with the row maximum subtracted so large logits do not overflow.

use super::GpuValue;
use super::softmax::eval_last_axis_cpu;
use super::softmax::{eval_last_axis, infer_last_axis, last_axis_cases};
use super::{GradContext, OpCase, OpDef, first_numel};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::softmax as reference;
use spore_kernels_cpu::rng::Rng;

/// Log-softmax over the last axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogSoftmax;

impl OpDef for LogSoftmax {
    const NAME: &'static str = "log_softmax";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        infer_last_axis(inputs)
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        eval_last_axis(Self::NAME, reference::log_softmax, inputs)
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        eval_last_axis_cpu(Self::NAME, true, inputs, threads)
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
        super::softmax::record_last_axis_gpu(Self::NAME, true, gpu, rec, inputs, outputs)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(LogSoftmax)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        last_axis_cases(Self::NAME, LogSoftmax.into(), rng)
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// `dx = dy - exp(y) * sum(dy)` per row: one `log_softmax_grad` node on the forward OUTPUT.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let (Some(dy), Some(&y)) = (
            ctx.output_grads.first().copied().flatten(),
            ctx.outputs.first(),
        ) else {
            return Ok(vec![None]);
        };
        let dx = ctx.builder.node1(
            &format!("{}/grad_x", ctx.node),
            super::log_softmax_grad::LogSoftmaxGrad,
            &[y, dy],
        )?;
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        assert!(LogSoftmax.infer(&[&TensorFact::f32([])]).is_err());
        assert!(LogSoftmax.infer(&[&TensorFact::f32([3, 0])]).is_err());
        assert!(
            LogSoftmax
                .infer(&[&TensorFact::new(crate::DType::I32, [3])])
                .is_err()
        );
        assert!(LogSoftmax.infer(&[]).is_err());
        assert_eq!(
            LogSoftmax.infer(&[&TensorFact::f32([2, 3])]).unwrap()[0].shape,
            [2, 3]
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        // Rows [0, ln 3] and [5, 5]: softmax [1/4, 3/4] and [1/2, 1/2].
        let x = Tensor::from_vec(&[2, 2], vec![0f32, 3f32.ln(), 5., 5.]).unwrap();
        let y = LogSoftmax.eval_ref(&[&x]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap();
        let want = [0.25f32, 0.75, 0.5, 0.5].map(|p| p.ln());
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(37);
        for case in LogSoftmax::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &[0],
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }
}
