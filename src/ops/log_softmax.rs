//! `log_softmax`: `y = x - log(sum(exp(x)))` over the last axis (any rank >= 1; the other axes
//! are rows), computed with the row maximum subtracted so large logits do not overflow.

use super::softmax::{eval_last_axis, infer_last_axis, last_axis_cases};
use super::{OpCase, OpDef, first_numel};
use crate::error::Result;
use crate::graph::TensorFact;
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
}
