//! `smooth_l1`: the Huber-style loss of PyTorch's `SmoothL1Loss`, averaged over all elements:
//! with `d = pred - target`, `0.5 d^2 / beta` where `|d| < beta`, else `|d| - 0.5 beta`
//! (`beta = 0` is plain L1). Inputs of the same non-empty shape; a rank-0 scalar output.

use super::mse::pair_loss_infer;
use super::{AttrValue, OpCase, OpDef, first_numel, input_f32, random_f32};
use super::{GpuValue, gpu_arg};
use crate::backend::gpu::kernels::loss as gpu_loss;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::loss as reference;
use spore_kernels_cpu::rng::Rng;

/// Smooth L1 loss.
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothL1 {
    /// Width of the quadratic zone; finite and non-negative.
    pub beta: f64,
}

impl Default for SmoothL1 {
    fn default() -> Self {
        SmoothL1 { beta: 1.0 }
    }
}

impl OpDef for SmoothL1 {
    const NAME: &'static str = "smooth_l1";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        pair_loss_infer(inputs, "pred", "target")
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let pred = input_f32(Self::NAME, inputs, 0)?;
        let target = input_f32(Self::NAME, inputs, 1)?;
        let mut loss = 0f32;
        reference::smooth_l1(self.beta, pred, target, &mut loss)?;
        Ok(vec![Tensor::scalar(loss)])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let pred = input_f32(Self::NAME, inputs, 0)?;
        let target = input_f32(Self::NAME, inputs, 1)?;
        let kind = spore_kernels_cpu::loss::Loss::SmoothL1 { beta: self.beta };
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
        let p = gpu_loss::Loss::new(gpu_loss::LossKind::SmoothL1 { beta: self.beta }, rows, cols);
        gpu_loss::record::<f32>(gpu, rec, a.buffer, b.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("beta", AttrValue::Float(self.beta))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let beta = attrs.float("beta")?;
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(attrs.err("beta", format!("{beta} must be finite and non-negative")));
        }
        Ok(SmoothL1 { beta })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // Differences up to 4 fall on both sides of every beta: the default 1, a narrow
        // quadratic zone, and beta 0 (plain L1).
        let configs: [(&str, &[usize], f64); 3] = [
            ("beta1", &[3, 4], 1.0),
            ("beta_0_3", &[2, 3, 2], 0.3),
            ("l1_beta0", &[7], 0.0),
        ];
        configs
            .into_iter()
            .map(|(name, s, beta)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: SmoothL1 { beta }.into(),
                    inputs: vec![
                        random_f32(rng, s)?.map_f32(|v| v * 2.0)?,
                        random_f32(rng, s)?.map_f32(|v| v * 2.0)?,
                    ],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// One `loss_grad` node for the prediction; the target gets no gradient.
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::loss_grad::loss_rule(
            super::loss_grad::LossKind::SmoothL1 { beta: self.beta },
            ctx,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(67);
        for case in SmoothL1::cases(&mut rng).unwrap() {
            // Kinks at |d| = beta (second derivative) and, for beta 0, at d = 0.
            let cfg = crate::ops::gradcheck::GradCheck {
                eps: 1e-3,
                tol: 1e-2,
            };
            let err =
                crate::ops::gradcheck::check_rule(&case.op, &case.inputs, &[0], cfg, &mut rng)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let op = SmoothL1::default();
        assert!(op.infer(&[&f(&[2, 3]), &f(&[2, 2])]).is_err());
        assert!(op.infer(&[&f(&[]), &f(&[1])]).is_err());
        assert!(op.infer(&[&f(&[3]), &f(&[3])]).unwrap()[0].shape.is_empty());
    }

    #[test]
    fn eval_matches_hand_computed() {
        // beta 1: d = 0.5 -> 0.125; d = -3 -> 2.5. Mean 1.3125.
        let p = Tensor::from_vec(&[2], vec![1.5f32, -1.]).unwrap();
        let t = Tensor::from_vec(&[2], vec![1f32, 2.]).unwrap();
        let y = SmoothL1::default().eval_ref(&[&p, &t]).unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1.3125]);
    }

    #[test]
    fn from_attrs_refuses_bad_beta() {
        for beta in [-0.5, f64::NAN, f64::INFINITY] {
            let a = SmoothL1 { beta }.attrs();
            assert!(SmoothL1::from_attrs(&a).is_err(), "{beta}");
        }
    }
}
