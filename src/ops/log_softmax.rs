//! `log_softmax`: `y = x - log(sum(exp(x)))` over the last axis (any rank >= 1; the other axes
//! are rows), computed with the row maximum subtracted so large logits do not overflow.

use super::{OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32, rows_last};
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
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        rows_last("x", &inputs[0].shape)?;
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let (rows, cols) = rows_last("x", inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; x.len()];
        reference::log_softmax(rows, cols, x, &mut y)?;
        Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(LogSoftmax)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // Rank 1, 2 and 4; one with logits large enough to overflow a naive exp.
        let configs: [(&[usize], f32); 4] = [
            (&[7], 1.0),
            (&[5, 3], 4.0),
            (&[2, 3, 2, 5], 1.0),
            (&[3, 4], 200.0),
        ];
        configs
            .iter()
            .enumerate()
            .map(|(i, &(x, scale))| {
                Ok(OpCase {
                    name: format!("{}/rank{}_{i}", Self::NAME, x.len()),
                    op: LogSoftmax.into(),
                    inputs: vec![random_f32(rng, x)?.map_f32(|v| v * scale)?],
                })
            })
            .collect()
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
