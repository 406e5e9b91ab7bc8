//! `mse`: mean squared error `mean((pred - target)^2)` over all elements of two f32 tensors of
//! the same (non-empty) shape; the output is a rank-0 scalar. The shape check here is shared
//! with the other elementwise losses (`sigmoid_bce`, `smooth_l1`).

use super::{GpuValue, gpu_arg};
use super::{OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32};
use crate::backend::gpu::kernels::loss as gpu_loss;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::loss as reference;
use spore_kernels_cpu::rng::Rng;

/// Mean squared error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mse;

/// Inference of an elementwise loss: two f32 inputs of one shape with at least one element,
/// giving a rank-0 scalar.
pub(crate) fn pair_loss_infer(
    inputs: &[&TensorFact],
    a: &str,
    b: &str,
) -> std::result::Result<Vec<TensorFact>, String> {
    arity(inputs.len(), 2, 2)?;
    all_f32(inputs)?;
    if inputs[0].shape != inputs[1].shape {
        return Err(format!(
            "{a} has shape {:?}, {b} {:?}",
            inputs[0].shape, inputs[1].shape
        ));
    }
    super::no_zero_dim(a, &inputs[0].shape)?;
    Ok(vec![TensorFact::f32(Vec::new())])
}

impl OpDef for Mse {
    const NAME: &'static str = "mse";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        pair_loss_infer(inputs, "pred", "target")
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let pred = input_f32(Self::NAME, inputs, 0)?;
        let target = input_f32(Self::NAME, inputs, 1)?;
        let mut loss = 0f32;
        reference::mse(pred, target, &mut loss)?;
        Ok(vec![Tensor::scalar(loss)])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let pred = input_f32(Self::NAME, inputs, 0)?;
        let target = input_f32(Self::NAME, inputs, 1)?;
        let kind = spore_kernels_cpu::loss::Loss::Mse;
        let mut loss = 0f32;
        spore_kernels_cpu::loss::loss(kind, pred, target, &mut loss, threads)?;
        Ok(vec![Tensor::scalar(loss)])
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
        let a = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let b = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let (rows, cols) = (1, a.numel());
        let p = gpu_loss::Loss::new(gpu_loss::LossKind::Mse, rows, cols);
        gpu_loss::record::<f32>(gpu, rec, a.buffer, b.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(Mse)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let shapes: [&[usize]; 3] = [&[2, 3, 4], &[7], &[]];
        shapes
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                Ok(OpCase {
                    name: format!("{}/rank{}_{i}", Self::NAME, s.len()),
                    op: Mse.into(),
                    inputs: vec![random_f32(rng, s)?, random_f32(rng, s)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// One `loss_grad` node for the prediction; the target gets no gradient.
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::loss_grad::loss_rule(super::loss_grad::LossKind::Mse, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(67);
        for case in Mse::cases(&mut rng).unwrap() {
            let cfg = Default::default();
            let err =
                crate::ops::gradcheck::check_rule(&case.op, &case.inputs, &[0], cfg, &mut rng)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(Mse.infer(&[&f(&[2, 3]), &f(&[3, 2])]).is_err());
        assert!(Mse.infer(&[&f(&[6]), &f(&[6, 1])]).is_err());
        assert!(Mse.infer(&[&f(&[0]), &f(&[0])]).is_err());
        assert!(Mse.infer(&[&f(&[2])]).is_err());
        assert!(
            Mse.infer(&[&f(&[2]), &TensorFact::new(crate::DType::I32, [2])])
                .is_err()
        );
        assert!(
            Mse.infer(&[&f(&[2, 3]), &f(&[2, 3])]).unwrap()[0]
                .shape
                .is_empty()
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        let p = Tensor::from_vec(&[2], vec![1f32, 4.]).unwrap();
        let t = Tensor::from_vec(&[2], vec![0f32, 2.]).unwrap();
        let y = Mse.eval_ref(&[&p, &t]).unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![2.5]);
    }
}
