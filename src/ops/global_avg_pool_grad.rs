//! `global_avg_pool_grad`: the input gradient of
//! [`GlobalAvgPool`](super::global_avg_pool::GlobalAvgPool), input `dy` `[n, c]`, output `dx`
//! of the attribute `input_shape` `[n, h, w, c]`: `dx[n, i, j, c] = dy[n, c] / (h * w)`.

use super::GpuValue;
use super::global_avg_pool::GlobalAvgPool;
use super::grad_util::{check_shape, mac_flops, shape_attr};
use super::{
    OpCase, OpDef, all_f32, arity, exec_err, input_f32, ints_attr, random_f32, tensor_f32,
};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::global_avg_pool as reference;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a global average pooling with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalAvgPoolGrad {
    /// The forward input's shape `[n, h, w, c]`.
    pub input_shape: [usize; 4],
}

impl GlobalAvgPoolGrad {
    /// Kernel parameters, checking `dy` is `[n, c]`.
    pub fn params(
        &self,
        dy: &[usize],
    ) -> std::result::Result<reference::GlobalAvgPoolParams, String> {
        let p = GlobalAvgPool.params(&self.input_shape)?;
        check_shape("dy", dy, &[p.n, p.c])?;
        Ok(p)
    }
}

impl OpDef for GlobalAvgPoolGrad {
    const NAME: &'static str = "global_avg_pool_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        self.params(&inputs[0].shape)?;
        Ok(vec![TensorFact::f32(self.input_shape)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let dy = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; p.x_len()?];
        reference::global_avg_pool_grad(p, dy, &mut dx)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let dy = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; p.x_len()?];
        spore_kernels_cpu::pool2d::global_avg_pool_grad(p, dy, &mut dx, threads)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("input_shape", ints_attr(&self.input_shape))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        Ok(GlobalAvgPoolGrad {
            input_shape: shape_attr(attrs, "input_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let shapes: [[usize; 4]; 3] = [[2, 5, 3, 4], [1, 1, 1, 7], [3, 4, 7, 13]];
        shapes
            .iter()
            .map(|&x| {
                Ok(OpCase {
                    name: format!("{}/{}x{}x{}x{}", Self::NAME, x[0], x[1], x[2], x[3]),
                    op: GlobalAvgPoolGrad { input_shape: x }.into(),
                    inputs: vec![random_f32(rng, &[x[0], x[3]])?],
                })
            })
            .collect()
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
        let (&[dy], &[dx]) = (inputs, outputs) else {
            return Err(exec_err(Self::NAME, "expects one input and one output"));
        };
        let p = self
            .params(dy.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        kernels::pool2d_grad::record_global::<f32>(
            gpu,
            rec,
            dy.buffer,
            dx.buffer,
            p,
            kernels::broadcast_grad::Knobs::default(),
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // One multiply per input cell.
        match self.infer(inputs) {
            Ok(_) => mac_flops(&self.input_shape) / 2,
            Err(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = GlobalAvgPoolGrad {
            input_shape: [2, 3, 4, 5],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[2, 4])]).is_err());
        assert!(op.infer(&[&f(&[1, 5])]).is_err());
        assert!(op.infer(&[&f(&[2, 1, 1, 5])]).is_err());
        assert!(op.infer(&[&f(&[2, 5]), &f(&[2, 5])]).is_err());
        assert_eq!(op.infer(&[&f(&[2, 5])]).unwrap()[0].shape, [2, 3, 4, 5]);
        assert!(
            GlobalAvgPoolGrad::from_attrs(
                &Attrs::new("global_avg_pool_grad").with("input_shape", ints_attr(&[2, 0, 4, 5]))
            )
            .is_err()
        );
    }
}
