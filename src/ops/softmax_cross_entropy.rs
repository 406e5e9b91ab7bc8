//! `softmax_cross_entropy`: `-(1/rows) * sum_r sum_c targets[r, c] * log_softmax(logits)[r, c]`
//! for logits `[rows, classes]` and dense (one-hot or soft) targets of the same shape; the
//! output is a rank-0 scalar. The row `logsumexp` is computed stably.

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

/// Softmax cross-entropy with dense targets, averaged over rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SoftmaxCrossEntropy;

/// `(rows, classes)` of a `[rows, classes]` logits shape with no zero dimension.
pub(crate) fn rows_classes(logits: &[usize]) -> std::result::Result<(usize, usize), String> {
    match *logits {
        [rows, classes] if rows > 0 && classes > 0 => Ok((rows, classes)),
        _ => Err(format!(
            "logits must be [rows, classes] with both >= 1, got {logits:?}"
        )),
    }
}

/// Rows of `classes` random logits times `scale`, and targets: one-hot rows, or soft rows
/// (positive, summing to 1).
pub(crate) fn logits_and_targets(
    rng: &mut Rng,
    rows: usize,
    classes: usize,
    scale: f32,
    one_hot: bool,
) -> Result<(Tensor, Tensor)> {
    let logits = random_f32(rng, &[rows, classes])?.map_f32(|v| v * scale)?;
    let mut t = vec![0f32; rows * classes];
    for row in t.chunks_exact_mut(classes) {
        if one_hot {
            row[rng.range(0, classes - 1)] = 1.0;
        } else {
            row.iter_mut()
                .for_each(|v| *v = rng.uniform(0.1, 1.0) as f32);
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
    }
    Ok((logits, Tensor::from_vec(&[rows, classes], t)?))
}

impl OpDef for SoftmaxCrossEntropy {
    const NAME: &'static str = "softmax_cross_entropy";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        rows_classes(&inputs[0].shape)?;
        if inputs[1].shape != inputs[0].shape {
            return Err(format!(
                "targets have shape {:?}, logits {:?}",
                inputs[1].shape, inputs[0].shape
            ));
        }
        Ok(vec![TensorFact::f32(Vec::new())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let logits = input_f32(Self::NAME, inputs, 0)?;
        let targets = input_f32(Self::NAME, inputs, 1)?;
        let (rows, classes) =
            rows_classes(inputs[0].dims()).map_err(|r| super::exec_err(Self::NAME, r))?;
        let mut loss = 0f32;
        reference::softmax_cross_entropy(rows, classes, logits, targets, &mut loss)?;
        Ok(vec![Tensor::scalar(loss)])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let logits = input_f32(Self::NAME, inputs, 0)?;
        let targets = input_f32(Self::NAME, inputs, 1)?;
        let (rows, classes) =
            rows_classes(inputs[0].dims()).map_err(|r| super::exec_err(Self::NAME, r))?;
        let kind = spore_kernels_cpu::loss::Loss::SoftmaxCrossEntropy { rows, classes };
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
        let (rows, cols) =
            rows_classes(a.dims()).map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let p = gpu_loss::Loss::new(gpu_loss::LossKind::SoftmaxCrossEntropy, rows, cols);
        gpu_loss::record::<f32>(gpu, rec, a.buffer, b.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(SoftmaxCrossEntropy)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, rows, classes, logit scale, one-hot): one-hot and soft targets, a single row,
        // logits large enough to overflow a naive exp.
        let configs = [
            ("one_hot", 4, 5, 3.0, true),
            ("soft", 3, 7, 1.0, false),
            ("single_row_large", 1, 2, 200.0, true),
        ];
        configs
            .into_iter()
            .map(|(name, rows, classes, scale, one_hot)| {
                let (logits, targets) = logits_and_targets(rng, rows, classes, scale, one_hot)?;
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: SoftmaxCrossEntropy.into(),
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
        super::loss_grad::loss_rule(super::loss_grad::LossKind::SoftmaxCrossEntropy, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tuned CPU kernels of every forward loss in `spore_kernels_cpu::loss` (dense
    /// cross-entropy, mse, sigmoid BCE, smooth L1) agree with the reference on their cases.
    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(29);
        let mut cases = SoftmaxCrossEntropy::cases(&mut rng).unwrap();
        cases.extend(crate::ops::mse::Mse::cases(&mut rng).unwrap());
        cases.extend(crate::ops::sigmoid_bce::SigmoidBce::cases(&mut rng).unwrap());
        cases.extend(crate::ops::smooth_l1::SmoothL1::cases(&mut rng).unwrap());
        crate::ops::activation_grad::tests::check_cpu_matches_ref(&cases);
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(67);
        for case in SoftmaxCrossEntropy::cases(&mut rng).unwrap() {
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
        let op = SoftmaxCrossEntropy;
        assert!(op.infer(&[&f(&[5]), &f(&[5])]).is_err());
        assert!(op.infer(&[&f(&[2, 3, 4]), &f(&[2, 3, 4])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[3, 2])]).is_err());
        assert!(op.infer(&[&f(&[0, 3]), &f(&[0, 3])]).is_err());
        assert!(op.infer(&[&f(&[2, 3])]).is_err());
        assert!(
            op.infer(&[&f(&[2, 3]), &f(&[2, 3])]).unwrap()[0]
                .shape
                .is_empty()
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        // Logits [0, ln 3], target class 1: -ln(3/4).
        let logits = Tensor::from_vec(&[1, 2], vec![0f32, 3f32.ln()]).unwrap();
        let targets = Tensor::from_vec(&[1, 2], vec![0f32, 1.]).unwrap();
        let y = SoftmaxCrossEntropy.eval_ref(&[&logits, &targets]).unwrap();
        assert!(y[0].dims().is_empty());
        let got = y[0].to_vec::<f32>().unwrap()[0];
        assert!((got - -(0.75f32).ln()).abs() < 1e-6, "{got}");
    }
}
