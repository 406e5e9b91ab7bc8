//! `sigmoid_bce`: binary cross-entropy on logits, averaged over all elements, in the stable
//! form `max(x, 0) - x * t + log(1 + exp(-|x|))`. Inputs: logits and targets (in `[0, 1]`) of
//! the same non-empty shape; the output is a rank-0 scalar.

use super::mse::pair_loss_infer;
use super::{GpuValue, gpu_arg};
use super::{OpCase, OpDef, first_numel, input_f32, random_f32};
use crate::backend::gpu::kernels::loss as gpu_loss;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::loss as reference;
use spore_kernels_cpu::rng::Rng;

/// Sigmoid binary cross-entropy with logits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SigmoidBce;

impl OpDef for SigmoidBce {
    const NAME: &'static str = "sigmoid_bce";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        pair_loss_infer(inputs, "logits", "targets")
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let logits = input_f32(Self::NAME, inputs, 0)?;
        let targets = input_f32(Self::NAME, inputs, 1)?;
        let mut loss = 0f32;
        reference::sigmoid_bce_with_logits(logits, targets, &mut loss)?;
        Ok(vec![Tensor::scalar(loss)])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let logits = input_f32(Self::NAME, inputs, 0)?;
        let targets = input_f32(Self::NAME, inputs, 1)?;
        let kind = spore_kernels_cpu::loss::Loss::SigmoidBce;
        let mut loss = 0f32;
        spore_kernels_cpu::loss::loss(kind, logits, targets, &mut loss, threads)?;
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
        let p = gpu_loss::Loss::new(gpu_loss::LossKind::SigmoidBce, rows, cols);
        gpu_loss::record::<f32>(gpu, rec, a.buffer, b.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(SigmoidBce)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, shape, logit scale, hard 0/1 targets): soft targets, hard labels, logits large
        // enough to overflow a naive exp.
        let configs: [(&str, &[usize], f32, bool); 3] = [
            ("soft_targets", &[3, 4], 3.0, false),
            ("hard_targets", &[2, 3, 2], 2.0, true),
            ("large_logits", &[5], 100.0, true),
        ];
        configs
            .into_iter()
            .map(|(name, s, scale, hard)| {
                let logits = random_f32(rng, s)?.map_f32(|v| v * scale)?;
                let mut targets = random_f32(rng, s)?.map_f32(|v| {
                    if hard {
                        f32::from(u8::from(v > 0.0))
                    } else {
                        (v + 1.0) / 2.0
                    }
                })?;
                // A few hard labels can all come out 0; cases never have an all-zero input.
                if let (true, Some(first)) = (hard, targets.as_mut_slice::<f32>()?.first_mut()) {
                    *first = 1.0;
                }
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: SigmoidBce.into(),
                    inputs: vec![logits, targets],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// One `loss_grad` node for the prediction; the target gets no gradient.
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::loss_grad::loss_rule(super::loss_grad::LossKind::SigmoidBce, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(67);
        for case in SigmoidBce::cases(&mut rng).unwrap() {
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
        assert!(SigmoidBce.infer(&[&f(&[2, 3]), &f(&[2])]).is_err());
        assert!(SigmoidBce.infer(&[&f(&[2])]).is_err());
        assert!(
            SigmoidBce.infer(&[&f(&[2]), &f(&[2])]).unwrap()[0]
                .shape
                .is_empty()
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        // Logit 0 costs ln 2 whatever the target; logit -1000 with target 0 costs 0.
        let x = Tensor::from_vec(&[2], vec![0f32, -1000.]).unwrap();
        let t = Tensor::from_vec(&[2], vec![1f32, 0.]).unwrap();
        let got = SigmoidBce.eval_ref(&[&x, &t]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap()[0];
        assert!((got - 2f32.ln() / 2.0).abs() < 1e-6, "{got}");
    }
}
