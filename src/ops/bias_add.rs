//! `bias_add`: `y = x + b` with `b` `[c]` broadcast over the last (channel) axis of `x`
//! (NHWC activations, `[batch, features]` matrices, any rank >= 1).

use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32, rows_last,
    tensor_f32,
};
use crate::backend::gpu::kernels::bias_add as gpu_bias_add;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::bias_add as reference;
use spore_kernels_cpu::rng::Rng;

/// Bias addition over the last axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BiasAdd;

impl BiasAdd {
    /// Kernel parameters for `x` and bias `b`.
    pub fn params(
        &self,
        x: &[usize],
        b: &[usize],
    ) -> std::result::Result<reference::BiasAddParams, String> {
        let (rows, channels) = rows_last("x", x)?;
        if b != [channels] {
            return Err(format!("bias has shape {b:?}, expected [{channels}]"));
        }
        Ok(reference::BiasAddParams { rows, channels })
    }
}

impl OpDef for BiasAdd {
    const NAME: &'static str = "bias_add";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        self.params(&inputs[0].shape, &inputs[1].shape)?;
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; x.len()];
        reference::bias_add(p, x, b, &mut y)?;
        Ok(vec![tensor_f32(inputs[0].dims(), y)?])
    }

    /// The tuned broadcasting add: `b` is one row of `x`, the kernel's row fast path.
    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; x.len()];
        spore_kernels_cpu::binary::binary(
            spore_kernels_cpu::reference::binary::BinaryOp::Add,
            x,
            &[p.rows, p.channels],
            b,
            &[p.channels],
            &mut y,
            threads,
        )?;
        Ok(vec![tensor_f32(inputs[0].dims(), y)?])
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
        let x = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let b = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        self.params(x.dims(), b.dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        gpu_bias_add::record::<f32>(gpu, rec, x.buffer, b.buffer, y.buffer, x.numel(), b.numel())
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(BiasAdd)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let shapes: [&[usize]; 3] = [&[2, 3, 4, 5], &[7, 3], &[6]];
        shapes
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let c = x.last().copied().unwrap_or(1);
                Ok(OpCase {
                    name: format!("{}/rank{}_{i}", Self::NAME, x.len()),
                    op: BiasAdd.into(),
                    inputs: vec![random_f32(rng, x)?, random_f32(rng, &[c])?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// `dx = dy`; `db = sum(dy)` over every axis but the last.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = ctx.output_grads.first().copied().flatten() else {
            return Ok(vec![None, None]);
        };
        let rank = ctx.builder.fact(dy)?.rank();
        let axes: Vec<i64> = (0..rank.saturating_sub(1) as i64).collect();
        let db = ctx.builder.node1(
            &format!("{}/grad_bias", ctx.node),
            super::reduce_sum::ReduceSum {
                axes,
                keep_dims: false,
            },
            &[dy],
        )?;
        Ok(vec![Some(dy), Some(db)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(BiasAdd.infer(&[&f(&[]), &f(&[1])]).is_err());
        assert!(BiasAdd.infer(&[&f(&[2, 3]), &f(&[2])]).is_err());
        assert!(BiasAdd.infer(&[&f(&[2, 3]), &f(&[1, 3])]).is_err());
        assert!(BiasAdd.infer(&[&f(&[2, 3])]).is_err());
        assert!(BiasAdd.infer(&[&f(&[2, 0]), &f(&[0])]).is_err());
        assert_eq!(
            BiasAdd.infer(&[&f(&[2, 3]), &f(&[3])]).unwrap()[0].shape,
            [2, 3]
        );
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(7);
        for case in BiasAdd::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &[0, 1],
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn eval_matches_hand_computed() {
        let x = Tensor::from_vec(&[2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let b = Tensor::from_vec(&[2], vec![10f32, 20.]).unwrap();
        let y = BiasAdd.eval_ref(&[&x, &b]).unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![11., 22., 13., 24.]);
    }
}
