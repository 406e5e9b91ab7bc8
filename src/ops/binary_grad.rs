//! `binary_grad`: the backward op of [`Binary`](super::binary::Binary) for the kinds whose
//! gradient needs the operands (sub, mul, div, max, min; add is pure routing and reuses
//! `reduce_sum` / `reshape`). Inputs `[a, b, dy]` with `dy` of the broadcast shape; outputs
//! `[da, db]` of the shapes of `a` and `b`: `dy * partial` summed over the axes along which
//! that operand was broadcast. `max` / `min` route the whole of `dy` to the selected operand,
//! to `a` on ties.

use super::GpuValue;
use super::binary::{BinaryKind, kind_name};
use super::{AttrValue, OpCase, OpDef, all_f32, arity, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::binary as reference;
use spore_kernels_cpu::rng::Rng;

/// Sums `g` (a gradient of the broadcast shape) back to `target`, the shape of an operand that
/// was broadcast into it: `reduce_sum` over the stretched axes (keeping them as 1), then a
/// `reshape` dropping the leading axes `target` lacks. Returns `g` itself when nothing was
/// broadcast, so the common equal-shape case adds no node.
pub(crate) fn sum_to_shape(
    builder: &mut crate::graph::GraphBuilder,
    name: &str,
    g: crate::graph::ValueId,
    target: &[usize],
) -> Result<crate::graph::ValueId> {
    let out = builder.fact(g)?.shape.clone();
    if out == target {
        return Ok(g);
    }
    let lead = out.len().saturating_sub(target.len());
    let axes: Vec<i64> = (0..out.len())
        .filter(|&i| i < lead || (target[i - lead] == 1 && out[i] != 1))
        .map(|i| i as i64)
        .collect();
    let mut v = g;
    if !axes.is_empty() {
        v = builder.node1(
            &format!("{name}_sum"),
            super::reduce_sum::ReduceSum {
                axes,
                keep_dims: true,
            },
            &[v],
        )?;
    }
    if builder.fact(v)?.shape != target {
        v = builder.node1(
            &format!("{name}_reshape"),
            super::reshape::Reshape {
                shape: target.iter().map(|&d| d as i64).collect(),
            },
            &[v],
        )?;
    }
    Ok(v)
}

/// Gradient of an elementwise binary op with respect to both operands.
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryGrad {
    /// The forward function.
    pub kind: BinaryKind,
}

impl OpDef for BinaryGrad {
    const NAME: &'static str = "binary_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 3, 3)?;
        all_f32(inputs)?;
        let out = reference::broadcast_shape(&inputs[0].shape, &inputs[1].shape)
            .map_err(|e| e.to_string())?;
        if inputs[2].shape != out {
            return Err(format!(
                "dy has shape {:?}, the broadcast of a and b is {out:?}",
                inputs[2].shape
            ));
        }
        Ok(vec![
            TensorFact::f32(inputs[0].shape.clone()),
            TensorFact::f32(inputs[1].shape.clone()),
        ])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let a = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let dy = input_f32(Self::NAME, inputs, 2)?;
        let (ad, bd) = (inputs[0].dims(), inputs[1].dims());
        let mut da = vec![0f32; a.len()];
        let mut db = vec![0f32; b.len()];
        reference::binary_grad(self.kind, a, ad, b, bd, dy, &mut da, &mut db)?;
        Ok(vec![tensor_f32(ad, da)?, tensor_f32(bd, db)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let a = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let dy = input_f32(Self::NAME, inputs, 2)?;
        let (ad, bd) = (inputs[0].dims(), inputs[1].dims());
        let mut da = vec![0f32; a.len()];
        let mut db = vec![0f32; b.len()];
        spore_kernels_cpu::binary::binary_grad(
            self.kind, a, ad, b, bd, dy, &mut da, &mut db, threads,
        )?;
        Ok(vec![tensor_f32(ad, da)?, tensor_f32(bd, db)?])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("kind", AttrValue::Str(kind_name(self.kind).to_string()))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        // The forward op's parser knows the names; reuse it so the two never disagree.
        let fwd = super::binary::Binary::from_attrs(attrs)?;
        Ok(BinaryGrad { kind: fwd.kind })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // One case per kind, over equal shapes and every broadcasting pattern (middle axis,
        // scalar, both operands stretched, a missing leading axis), ragged sizes.
        let configs: [(BinaryKind, &[usize], &[usize]); 6] = [
            (BinaryKind::Add, &[2, 3, 7], &[2, 3, 7]),
            (BinaryKind::Sub, &[3, 1, 5], &[2, 1]),
            (BinaryKind::Mul, &[1, 13], &[3, 1]),
            (BinaryKind::Div, &[2, 5], &[]),
            (BinaryKind::Max, &[3, 4, 2], &[4, 1]),
            (BinaryKind::Min, &[17], &[2, 17]),
        ];
        configs
            .iter()
            .enumerate()
            .map(|(i, &(kind, sa, sb))| {
                let out = reference::broadcast_shape(sa, sb)?;
                let a = random_f32(rng, sa)?;
                // Keep divisors away from zero.
                let b =
                    random_f32(rng, sb)?.map_f32(|v| if v >= 0.0 { v + 0.5 } else { v - 0.5 })?;
                Ok(OpCase {
                    name: format!("{}/{}_{i}", Self::NAME, kind_name(kind)),
                    op: BinaryGrad { kind }.into(),
                    inputs: vec![a, b, random_f32(rng, &out)?],
                })
            })
            .collect()
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.infer(inputs)?;
        kernels::broadcast_grad::BinaryGrad::new(self.kind, &inputs[0].shape, &inputs[1].shape)
            .check()
            .map_err(|e| e.to_string())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let (&[a, b, dy], &[da, db]) = (inputs, outputs) else {
            return Err(super::exec_err(
                Self::NAME,
                "expects inputs [a, b, dy] and two outputs",
            ));
        };
        let p = kernels::broadcast_grad::BinaryGrad::new(self.kind, a.dims(), b.dims());
        kernels::broadcast_grad::record_binary_grad::<f32>(
            gpu, rec, a.buffer, b.buffer, dy.buffer, da.buffer, db.buffer, &p,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // Two partials and two multiply-accumulates per output element.
        4 * inputs.get(2).map_or(0, |f| f.numel() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(13);
        crate::ops::activation_grad::tests::check_cpu_matches_ref(
            &BinaryGrad::cases(&mut rng).unwrap(),
        );
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let op = BinaryGrad {
            kind: BinaryKind::Mul,
        };
        assert!(op.infer(&[&f(&[2, 3]), &f(&[2, 3])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[3, 2]), &f(&[2, 3])]).is_err());
        assert!(op.infer(&[&f(&[2, 1]), &f(&[3]), &f(&[2, 1])]).is_err());
        assert!(op.infer(&[&f(&[2, 1]), &f(&[3]), &f(&[3, 2])]).is_err());
        let outs = op.infer(&[&f(&[2, 1]), &f(&[3]), &f(&[2, 3])]).unwrap();
        assert_eq!(outs[0].shape, [2, 1]);
        assert_eq!(outs[1].shape, [3]);
    }
}
