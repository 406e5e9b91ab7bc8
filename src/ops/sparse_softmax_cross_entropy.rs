//! `sparse_softmax_cross_entropy`: `-(1/rows) * sum_r log_softmax(logits)[r, labels[r]]` for
//! logits `[rows, classes]` (f32) and integer class labels `[rows]` (i32; a label outside
//! `[0, classes)` fails at run time). The output is a rank-0 scalar.

use super::softmax_cross_entropy::rows_classes;
use super::{GpuValue, gpu_arg};
use super::{OpCase, OpDef, first_numel, input_f32, random_f32};
use crate::backend::gpu::kernels::loss as gpu_loss;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::reference::loss as reference;
use spore_kernels_cpu::rng::Rng;

/// Softmax cross-entropy with integer labels, averaged over rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseSoftmaxCrossEntropy;

impl OpDef for SparseSoftmaxCrossEntropy {
    const NAME: &'static str = "sparse_softmax_cross_entropy";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        super::arity(inputs.len(), 2, 2)?;
        let (logits, labels) = (inputs[0], inputs[1]);
        if logits.dtype != DType::F32 {
            return Err(format!("logits are {}, expected f32", logits.dtype));
        }
        if labels.dtype != DType::I32 {
            return Err(format!("labels are {}, expected i32", labels.dtype));
        }
        let (rows, _) = rows_classes(&logits.shape)?;
        if labels.shape != [rows] {
            return Err(format!(
                "labels have shape {:?}, expected [{rows}]",
                labels.shape
            ));
        }
        Ok(vec![TensorFact::f32(Vec::new())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let logits = input_f32(Self::NAME, inputs, 0)?;
        let labels = inputs[1].as_slice::<i32>()?;
        let (rows, classes) =
            rows_classes(inputs[0].dims()).map_err(|r| super::exec_err(Self::NAME, r))?;
        let mut loss = 0f32;
        reference::sparse_softmax_cross_entropy(rows, classes, logits, labels, &mut loss)?;
        Ok(vec![Tensor::scalar(loss)])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let logits = input_f32(Self::NAME, inputs, 0)?;
        let labels = inputs[1].as_slice::<i32>()?;
        let (rows, classes) =
            rows_classes(inputs[0].dims()).map_err(|r| super::exec_err(Self::NAME, r))?;
        let mut loss = 0f32;
        spore_kernels_cpu::softmax::sparse_softmax_cross_entropy(
            rows, classes, logits, labels, &mut loss, threads,
        )?;
        Ok(vec![Tensor::scalar(loss)])
    }

    /// f32 logits and i32 labels; one row-wise kernel and a deterministic sum. A label
    /// outside `[0, classes)` gives a NaN loss (a shader cannot raise an error; the CPU paths
    /// refuse such labels).
    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.infer(inputs)?;
        let n = inputs[0].numel();
        if u32::try_from(n).is_err() {
            return Err(format!(
                "{n} logits: 2^32 or more (the shaders index with u32)"
            ));
        }
        Ok(())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let logits = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let labels = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let (rows, classes) =
            rows_classes(logits.dims()).map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let p = gpu_loss::Loss::new(gpu_loss::LossKind::SparseSoftmaxCrossEntropy, rows, classes);
        gpu_loss::record::<f32>(gpu, rec, logits.buffer, labels.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(SparseSoftmaxCrossEntropy)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, rows, classes, logit scale): ragged sizes, many classes, large logits.
        let configs = [
            ("basic", 4, 5, 3.0),
            ("tall", 6, 3, 1.0),
            ("large_logits", 2, 10, 200.0),
        ];
        configs
            .into_iter()
            .map(|(name, rows, classes, scale)| {
                let logits = random_f32(rng, &[rows, classes])?.map_f32(|v| v * scale)?;
                // Row r's label is random, but row 0's is never class 0: labels never all zero.
                let labels: Vec<i32> = (0..rows)
                    .map(|r| rng.range(usize::from(r == 0), classes - 1) as i32)
                    .collect();
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: SparseSoftmaxCrossEntropy.into(),
                    inputs: vec![logits, Tensor::from_vec(&[rows], labels)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// One `loss_grad` node for the prediction; the target gets no gradient.
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::loss_grad::loss_rule(super::loss_grad::LossKind::SparseSoftmaxCrossEntropy, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(67);
        for case in SparseSoftmaxCrossEntropy::cases(&mut rng).unwrap() {
            let cfg = Default::default();
            let err =
                crate::ops::gradcheck::check_rule(&case.op, &case.inputs, &[0], cfg, &mut rng)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_inputs() {
        let op = SparseSoftmaxCrossEntropy;
        let logits = TensorFact::f32([3, 4]);
        let labels = TensorFact::new(DType::I32, [3]);
        assert!(op.infer(&[&logits, &TensorFact::f32([3])]).is_err());
        assert!(
            op.infer(&[&logits, &TensorFact::new(DType::I32, [4])])
                .is_err()
        );
        assert!(
            op.infer(&[&logits, &TensorFact::new(DType::I32, [3, 1])])
                .is_err()
        );
        assert!(op.infer(&[&TensorFact::f32([3]), &labels]).is_err());
        assert!(
            op.infer(&[&TensorFact::new(DType::I32, [3, 4]), &labels])
                .is_err()
        );
        assert!(op.infer(&[&logits]).is_err());
        assert!(op.infer(&[&logits, &labels]).unwrap()[0].shape.is_empty());
    }

    #[test]
    fn eval_matches_hand_computed_and_refuses_bad_labels() {
        // Row 0: logits [0, ln 3], label 1: -ln(3/4). Row 1: [5, 5], label 0: ln 2.
        let logits = Tensor::from_vec(&[2, 2], vec![0f32, 3f32.ln(), 5., 5.]).unwrap();
        let labels = Tensor::from_vec(&[2], vec![1i32, 0]).unwrap();
        let y = SparseSoftmaxCrossEntropy
            .eval_ref(&[&logits, &labels])
            .unwrap();
        let got = y[0].to_vec::<f32>().unwrap()[0];
        let want = (-(0.75f32).ln() + 2f32.ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let bad = Tensor::from_vec(&[2], vec![1i32, 2]).unwrap();
        assert!(
            SparseSoftmaxCrossEntropy
                .eval_ref(&[&logits, &bad])
                .is_err()
        );
    }
}
