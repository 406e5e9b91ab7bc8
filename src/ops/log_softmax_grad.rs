//! `log_softmax_grad`: the backward op of [`LogSoftmax`](super::log_softmax::LogSoftmax) over
//! the last axis, from the forward OUTPUT: inputs `[y, dy]`, `dx = dy - exp(y) * sum_c dy`
//! per row. Inference and cases are `softmax_grad`'s.

use super::softmax_grad::{
    eval_row_grad, eval_row_grad_cpu, infer_row_grad, record_row_grad, row_grad_cases,
};
use super::{GpuValue, OpCase, OpDef, first_numel};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::softmax as reference;
use spore_kernels_cpu::rng::Rng;

/// Gradient of log-softmax over the last axis, from its output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogSoftmaxGrad;

impl OpDef for LogSoftmaxGrad {
    const NAME: &'static str = "log_softmax_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        infer_row_grad(inputs)
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        eval_row_grad(Self::NAME, reference::log_softmax_grad, inputs)
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        eval_row_grad_cpu(
            Self::NAME,
            spore_kernels_cpu::softmax::log_softmax_grad,
            inputs,
            threads,
        )
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(LogSoftmaxGrad)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        row_grad_cases(
            Self::NAME,
            LogSoftmaxGrad.into(),
            super::log_softmax::LogSoftmax.into(),
            rng,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // A row sum, an exp and a multiply-subtract per element.
        4 * first_numel(inputs)
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        infer_row_grad(inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        record_row_grad(Self::NAME, true, gpu, rec, inputs, outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(13);
        crate::ops::activation_grad::tests::check_cpu_matches_ref(
            &LogSoftmaxGrad::cases(&mut rng).unwrap(),
        );
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let op = LogSoftmaxGrad;
        assert!(op.infer(&[&f(&[4])]).is_err());
        assert!(op.infer(&[&f(&[4]), &f(&[5])]).is_err());
        assert!(op.infer(&[&f(&[]), &f(&[])]).is_err());
        assert_eq!(op.infer(&[&f(&[4]), &f(&[4])]).unwrap()[0].shape, [4]);
    }
}
