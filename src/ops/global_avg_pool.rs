//! `global_avg_pool`: each channel's mean over all spatial positions, NHWC `[n, h, w, c]` ->
//! `[n, c]`. The output is rank 2, NOT `[n, 1, 1, c]`: the usual next op is a Dense layer
//! (`matmul`); a graph that needs the rank-4 form appends a `reshape`.

use super::global_avg_pool_grad::GlobalAvgPoolGrad;
use super::grad_util::{input, output_grad, shape_of};
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32, tensor_f32,
};
use crate::backend::gpu::kernels::pool2d as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::global_avg_pool as reference;
use spore_kernels_cpu::rng::Rng;

/// Global average pooling to `[n, c]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    /// Kernel parameters for input `x` `[n, h, w, c]`.
    pub fn params(
        &self,
        x: &[usize],
    ) -> std::result::Result<reference::GlobalAvgPoolParams, String> {
        let &[n, h, w, c] = x else {
            return Err(format!("expects x rank 4 (NHWC), got {x:?}"));
        };
        let p = reference::GlobalAvgPoolParams { n, h, w, c };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

impl OpDef for GlobalAvgPool {
    const NAME: &'static str = "global_avg_pool";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        let p = self.params(&inputs[0].shape)?;
        Ok(vec![TensorFact::f32([p.n, p.c])])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        reference::global_avg_pool(p, x, &mut y)?;
        Ok(vec![tensor_f32(&[p.n, p.c], y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        spore_kernels_cpu::pool2d::global_avg_pool(p, x, &mut y, threads)?;
        Ok(vec![tensor_f32(&[p.n, p.c], y)?])
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
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let p = self
            .params(x.dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let pool = gpu_kernel::GlobalAvgPool {
            shape: p,
            knobs: gpu_kernel::Knobs::default(),
        };
        gpu_kernel::record_global_avg::<f32>(gpu, rec, x.buffer, y.buffer, &pool)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(GlobalAvgPool)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let shapes: [[usize; 4]; 3] = [[2, 5, 3, 4], [1, 1, 1, 7], [3, 4, 7, 2]];
        shapes
            .iter()
            .enumerate()
            .map(|(i, x)| {
                Ok(OpCase {
                    name: format!("{}/case{i}", Self::NAME),
                    op: GlobalAvgPool.into(),
                    inputs: vec![random_f32(rng, x)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// `dx = global_avg_pool_grad(dy)` for `x`'s shape: `dy / (h * w)` at every cell.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None]);
        };
        let input_shape = shape_of::<4>(ctx, input(ctx, 0)?)?;
        let dx = ctx.builder.node1(
            &format!("{}/grad_input", ctx.node),
            GlobalAvgPoolGrad { input_shape },
            &[dy],
        )?;
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(63);
        for case in GlobalAvgPool::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &[0],
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        assert!(GlobalAvgPool.infer(&[&TensorFact::f32([2, 3, 4])]).is_err());
        assert!(
            GlobalAvgPool
                .infer(&[&TensorFact::f32([2, 3, 0, 4])])
                .is_err()
        );
        assert!(GlobalAvgPool.infer(&[]).is_err());
        let out = GlobalAvgPool
            .infer(&[&TensorFact::f32([2, 3, 5, 4])])
            .unwrap();
        assert_eq!(out[0].shape, [2, 4]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        let x = Tensor::from_vec(&[1, 2, 1, 2], vec![1f32, 10., 3., 20.]).unwrap();
        let y = GlobalAvgPool.eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [1, 2]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![2., 15.]);
    }
}
