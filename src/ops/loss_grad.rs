//! `loss_grad`: the backward op of every training loss (`softmax_cross_entropy`,
//! `sparse_softmax_cross_entropy`, `mse`, `sigmoid_bce`, `smooth_l1`), the loss named by the
//! `kind` attribute. Inputs `[prediction, target, dloss]` as the forward op's two inputs plus
//! the rank-0 upstream gradient; the output is the gradient with respect to the prediction
//! (logits), with the forward reductions (means over rows or elements) folded in. Targets and
//! labels get no gradient.

use super::GpuValue;
use super::{AttrValue, Op, OpCase, OpDef, arity, first_numel, input_f32, tensor_f32};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::reference::loss as reference;
use spore_kernels_cpu::rng::Rng;

/// Which loss a [`LossGrad`] differentiates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossKind {
    /// `softmax_cross_entropy` (dense targets).
    SoftmaxCrossEntropy,
    /// `sparse_softmax_cross_entropy` (i32 labels).
    SparseSoftmaxCrossEntropy,
    /// `mse`.
    Mse,
    /// `sigmoid_bce` (with logits).
    SigmoidBce,
    /// `smooth_l1` with its `beta`.
    SmoothL1 {
        /// Width of the quadratic zone (finite, >= 0).
        beta: f64,
    },
}

impl LossKind {
    /// The forward op's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SoftmaxCrossEntropy => super::softmax_cross_entropy::SoftmaxCrossEntropy::NAME,
            Self::SparseSoftmaxCrossEntropy => {
                super::sparse_softmax_cross_entropy::SparseSoftmaxCrossEntropy::NAME
            }
            Self::Mse => super::mse::Mse::NAME,
            Self::SigmoidBce => super::sigmoid_bce::SigmoidBce::NAME,
            Self::SmoothL1 { .. } => super::smooth_l1::SmoothL1::NAME,
        }
    }

    /// The forward loss op.
    pub fn forward(self) -> Op {
        match self {
            Self::SoftmaxCrossEntropy => super::softmax_cross_entropy::SoftmaxCrossEntropy.into(),
            Self::SparseSoftmaxCrossEntropy => {
                super::sparse_softmax_cross_entropy::SparseSoftmaxCrossEntropy.into()
            }
            Self::Mse => super::mse::Mse.into(),
            Self::SigmoidBce => super::sigmoid_bce::SigmoidBce.into(),
            Self::SmoothL1 { beta } => super::smooth_l1::SmoothL1 { beta }.into(),
        }
    }

    /// Every kind (smooth L1 with `beta = 1`), for cases.
    pub const ALL: [LossKind; 5] = [
        Self::SoftmaxCrossEntropy,
        Self::SparseSoftmaxCrossEntropy,
        Self::Mse,
        Self::SigmoidBce,
        Self::SmoothL1 { beta: 1.0 },
    ];
}

/// Gradient of a training loss with respect to its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrad {
    /// The loss.
    pub kind: LossKind,
}

/// The gradient rule shared by the loss ops: one `loss_grad` node
/// `[prediction, target, dloss]`; the target gets no gradient.
pub(crate) fn loss_rule(
    kind: LossKind,
    ctx: &mut super::GradContext<'_>,
) -> Result<Vec<Option<ValueId>>> {
    let (Some(dloss), &[pred, target]) = (ctx.output_grads.first().copied().flatten(), ctx.inputs)
    else {
        return Ok(vec![None; ctx.inputs.len()]);
    };
    let dpred = ctx.builder.node1(
        &format!("{}/grad_prediction", ctx.node),
        LossGrad { kind },
        &[pred, target, dloss],
    )?;
    Ok(vec![Some(dpred), None])
}

/// `(rows, classes)` of the logits of a cross-entropy, as an op-execution error.
fn rows_classes(dims: &[usize]) -> Result<(usize, usize)> {
    super::softmax_cross_entropy::rows_classes(dims)
        .map_err(|reason| super::exec_err(LossGrad::NAME, reason))
}

impl OpDef for LossGrad {
    const NAME: &'static str = "loss_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 3, 3)?;
        // The forward op checks prediction and target exactly as the loss did.
        self.kind.forward().infer(&inputs[..2])?;
        let dloss = inputs[2];
        if dloss.dtype != DType::F32 || dloss.rank() != 0 {
            return Err(format!(
                "dloss must be an f32 scalar (rank 0), got {} {:?}",
                dloss.dtype, dloss.shape
            ));
        }
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let pred = input_f32(Self::NAME, inputs, 0)?;
        let dloss = input_f32(Self::NAME, inputs, 2)?
            .first()
            .copied()
            .ok_or_else(|| super::exec_err(Self::NAME, "dloss is empty"))?;
        let dims = inputs[0].dims();
        let mut d = vec![0f32; pred.len()];
        match self.kind {
            LossKind::SoftmaxCrossEntropy => {
                let (rows, classes) = rows_classes(dims)?;
                let t = input_f32(Self::NAME, inputs, 1)?;
                reference::softmax_cross_entropy_grad(rows, classes, pred, t, dloss, &mut d)?;
            }
            LossKind::SparseSoftmaxCrossEntropy => {
                let (rows, classes) = rows_classes(dims)?;
                let labels = inputs[1].as_slice::<i32>()?;
                reference::sparse_softmax_cross_entropy_grad(
                    rows, classes, pred, labels, dloss, &mut d,
                )?;
            }
            LossKind::Mse => {
                let t = input_f32(Self::NAME, inputs, 1)?;
                reference::mse_grad(pred, t, dloss, &mut d)?;
            }
            LossKind::SigmoidBce => {
                let t = input_f32(Self::NAME, inputs, 1)?;
                reference::sigmoid_bce_with_logits_grad(pred, t, dloss, &mut d)?;
            }
            LossKind::SmoothL1 { beta } => {
                let t = input_f32(Self::NAME, inputs, 1)?;
                reference::smooth_l1_grad(beta, pred, t, dloss, &mut d)?;
            }
        }
        Ok(vec![tensor_f32(dims, d)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        use spore_kernels_cpu::loss::Loss;
        super::infer_eval(self, inputs)?;
        let pred = input_f32(Self::NAME, inputs, 0)?;
        let dloss = input_f32(Self::NAME, inputs, 2)?
            .first()
            .copied()
            .ok_or_else(|| super::exec_err(Self::NAME, "dloss is empty"))?;
        let dims = inputs[0].dims();
        let mut d = vec![0f32; pred.len()];
        // Every loss has a tuned kernel: the sparse cross-entropy in `softmax`, the others
        // (dense cross-entropy and the elementwise losses) in `loss`.
        let kind = match self.kind {
            LossKind::SparseSoftmaxCrossEntropy => {
                let (rows, classes) = rows_classes(dims)?;
                let labels = inputs[1].as_slice::<i32>()?;
                spore_kernels_cpu::softmax::sparse_softmax_cross_entropy_grad(
                    rows, classes, pred, labels, dloss, &mut d, threads,
                )?;
                return Ok(vec![tensor_f32(dims, d)?]);
            }
            LossKind::SoftmaxCrossEntropy => {
                let (rows, classes) = rows_classes(dims)?;
                Loss::SoftmaxCrossEntropy { rows, classes }
            }
            LossKind::Mse => Loss::Mse,
            LossKind::SigmoidBce => Loss::SigmoidBce,
            LossKind::SmoothL1 { beta } => Loss::SmoothL1 { beta },
        };
        let target = input_f32(Self::NAME, inputs, 1)?;
        spore_kernels_cpu::loss::loss_grad(kind, pred, target, dloss, &mut d, threads)?;
        Ok(vec![tensor_f32(dims, d)?])
    }

    fn attrs(&self) -> Attrs {
        let beta = match self.kind {
            LossKind::SmoothL1 { beta } => beta,
            _ => 0.0,
        };
        Attrs::new(Self::NAME)
            .with("kind", AttrValue::Str(self.kind.name().to_string()))
            .with("beta", AttrValue::Float(beta))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let name = attrs.str("kind")?;
        let kind = match name {
            "smooth_l1" => {
                let beta = attrs.float("beta")?;
                if !(beta.is_finite() && beta >= 0.0) {
                    return Err(
                        attrs.err("beta", format!("{beta} must be finite and non-negative"))
                    );
                }
                LossKind::SmoothL1 { beta }
            }
            other => LossKind::ALL
                .into_iter()
                .find(|k| k.name() == other && !matches!(k, LossKind::SmoothL1 { .. }))
                .ok_or_else(|| attrs.err("kind", format!("unknown loss `{other}`")))?,
        };
        Ok(LossGrad { kind })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // The forward loss's own cases (valid labels, soft and hard targets, large logits,
        // every smooth-L1 beta) with a random upstream scalar appended.
        let mut cases = Vec::new();
        for kind in LossKind::ALL {
            let forward = match kind {
                LossKind::SoftmaxCrossEntropy => {
                    super::softmax_cross_entropy::SoftmaxCrossEntropy::cases(rng)?
                }
                LossKind::SparseSoftmaxCrossEntropy => {
                    super::sparse_softmax_cross_entropy::SparseSoftmaxCrossEntropy::cases(rng)?
                }
                LossKind::Mse => super::mse::Mse::cases(rng)?,
                LossKind::SigmoidBce => super::sigmoid_bce::SigmoidBce::cases(rng)?,
                LossKind::SmoothL1 { .. } => super::smooth_l1::SmoothL1::cases(rng)?,
            };
            for case in forward.into_iter().take(2) {
                let kind = match case.op {
                    Op::SmoothL1(ref op) => LossKind::SmoothL1 { beta: op.beta },
                    _ => kind,
                };
                let mut inputs = case.inputs;
                inputs.push(Tensor::scalar(rng.uniform(0.5, 2.0) as f32));
                cases.push(OpCase {
                    name: format!("{}/{}", Self::NAME, case.name),
                    op: LossGrad { kind }.into(),
                    inputs,
                });
            }
        }
        Ok(cases)
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.infer(inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let (&[pred, target, dloss], &[dpred]) = (inputs, outputs) else {
            return Err(super::exec_err(
                Self::NAME,
                "expects inputs [pred, target, dloss] and one output",
            ));
        };
        use kernels::elementwise_grad::{self as k, LossGradKind};
        let kind = match self.kind {
            LossKind::SoftmaxCrossEntropy => LossGradKind::SoftmaxCrossEntropy,
            LossKind::SparseSoftmaxCrossEntropy => LossGradKind::SparseSoftmaxCrossEntropy,
            LossKind::Mse => LossGradKind::Mse,
            LossKind::SigmoidBce => LossGradKind::SigmoidBce,
            LossKind::SmoothL1 { beta } => LossGradKind::SmoothL1 { beta },
        };
        let (rows, classes) = match self.kind {
            LossKind::SoftmaxCrossEntropy | LossKind::SparseSoftmaxCrossEntropy => {
                rows_classes(pred.dims())?
            }
            _ => (1, pred.numel()),
        };
        let p = k::LossGrad {
            kind,
            rows,
            classes,
            knobs: k::RowKnobs::for_cols(classes),
        };
        k::record_loss_grad::<f32>(
            gpu,
            rec,
            pred.buffer,
            target.buffer,
            dloss.buffer,
            dpred.buffer,
            &p,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // Cross-entropy: an exp and a few flops per logit; the others a few per element.
        4 * first_numel(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(13);
        crate::ops::activation_grad::tests::check_cpu_matches_ref(
            &LossGrad::cases(&mut rng).unwrap(),
        );
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let mse = LossGrad {
            kind: LossKind::Mse,
        };
        assert!(mse.infer(&[&f(&[2, 3]), &f(&[2, 3])]).is_err());
        assert!(mse.infer(&[&f(&[2, 3]), &f(&[3, 2]), &f(&[])]).is_err());
        assert!(mse.infer(&[&f(&[2, 3]), &f(&[2, 3]), &f(&[1])]).is_err());
        assert_eq!(
            mse.infer(&[&f(&[2, 3]), &f(&[2, 3]), &f(&[])]).unwrap()[0].shape,
            [2, 3]
        );
        let sparse = LossGrad {
            kind: LossKind::SparseSoftmaxCrossEntropy,
        };
        let labels = TensorFact::new(DType::I32, [2]);
        assert!(sparse.infer(&[&f(&[2, 3]), &f(&[2]), &f(&[])]).is_err());
        assert!(sparse.infer(&[&f(&[2, 3]), &labels, &f(&[])]).is_ok());
        assert!(sparse.infer(&[&f(&[3, 3]), &labels, &f(&[])]).is_err());
        let ce = LossGrad {
            kind: LossKind::SoftmaxCrossEntropy,
        };
        assert!(ce.infer(&[&f(&[6]), &f(&[6]), &f(&[])]).is_err());
    }

    #[test]
    fn from_attrs_refuses_bad_values() {
        let bad_beta = LossGrad {
            kind: LossKind::SmoothL1 { beta: -1.0 },
        };
        assert!(LossGrad::from_attrs(&bad_beta.attrs()).is_err());
        let unknown = Attrs::new(LossGrad::NAME)
            .with("kind", AttrValue::Str("hinge".into()))
            .with("beta", AttrValue::Float(0.0));
        assert!(LossGrad::from_attrs(&unknown).is_err());
        for kind in LossKind::ALL {
            let op = LossGrad { kind };
            assert_eq!(LossGrad::from_attrs(&op.attrs()).unwrap(), op);
        }
    }
}
