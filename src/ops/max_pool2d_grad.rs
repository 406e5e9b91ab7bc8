//! `max_pool2d_grad`: the input gradient of [`MaxPool2d`](super::max_pool2d::MaxPool2d),
//! inputs `[x, dy]`, output `dx` shaped like `x`: each `dy` cell goes to its window's winner,
//! found again from `x` (so the forward's argmax need not be stored); a cell winning several
//! windows sums their `dy`.

use super::GpuValue;
use super::conv2d::Padding;
use super::grad_util::{check_shape, embed, mac_flops, unembed};
use super::max_pool2d::MaxPool2d;
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::max_pool2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a max pooling with respect to its input.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaxPool2dGrad {
    /// The forward pooling.
    pub pool: MaxPool2d,
}

impl MaxPool2dGrad {
    /// Kernel parameters for `x` and `dy`, checking `dy` is the forward's output shape.
    pub fn params(
        &self,
        x: &[usize],
        dy: &[usize],
    ) -> std::result::Result<reference::MaxPool2dParams, String> {
        let p = self.pool.params(x)?;
        let e = |e: spore_kernels_cpu::KernelError| e.to_string();
        check_shape(
            "dy",
            dy,
            &[p.n, p.out_h().map_err(e)?, p.out_w().map_err(e)?, p.c],
        )?;
        Ok(p)
    }
}

impl OpDef for MaxPool2dGrad {
    const NAME: &'static str = "max_pool2d_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        self.params(&inputs[0].shape, &inputs[1].shape)?;
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; x.len()];
        reference::max_pool2d_grad(p, x, dy, &mut dx)?;
        Ok(vec![tensor_f32(inputs[0].dims(), dx)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; x.len()];
        spore_kernels_cpu::pool2d::max_pool2d_grad(p, x, dy, &mut dx, threads)?;
        Ok(vec![tensor_f32(inputs[0].dims(), dx)?])
    }

    fn attrs(&self) -> Attrs {
        embed(Self::NAME, &self.pool.attrs())
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        Ok(MaxPool2dGrad {
            pool: unembed(Self::NAME, attrs)?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs: Vec<(&str, [usize; 4], MaxPool2d)> = vec![
            ("k2s2", [2, 6, 4, 3], MaxPool2d::default()),
            (
                "k3s2_same",
                [1, 7, 5, 5],
                MaxPool2d {
                    kernel: [3, 3],
                    padding: Padding::Same,
                    ..Default::default()
                },
            ),
            (
                "dilation2_asym_pad",
                [1, 7, 6, 3],
                MaxPool2d {
                    kernel: [2, 3],
                    strides: [1, 2],
                    dilations: [2, 2],
                    padding: Padding::Explicit(Padding2d::new(1, 0, 0, 2)),
                },
            ),
        ];
        configs
            .into_iter()
            .map(|(name, x, pool)| {
                let p = pool.params(&x).map_err(|r| exec_err(Self::NAME, r))?;
                let dy = [p.n, p.out_h()?, p.out_w()?, p.c];
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: MaxPool2dGrad { pool }.into(),
                    inputs: vec![random_f32(rng, &x)?, random_f32(rng, &dy)?],
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
        let (&[x, dy], &[dx]) = (inputs, outputs) else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [x, dy] and one output",
            ));
        };
        let p = self
            .params(x.dims(), dy.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let pool = kernels::pool2d::Pool2d {
            pool: kernels::pool2d::Pool::Max(p),
            knobs: kernels::pool2d::Knobs::default(),
        };
        kernels::pool2d_grad::record::<f32>(gpu, rec, Some(x.buffer), dy.buffer, dx.buffer, &pool)
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // One comparison per window tap, as the forward.
        let [kh, kw] = self.pool.kernel;
        match (inputs.get(1), self.infer(inputs)) {
            (Some(dy), Ok(_)) => mac_flops(&[dy.numel(), kh, kw]) / 2,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = MaxPool2dGrad::default();
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[1, 4, 4, 3]), &f(&[1, 2, 2, 2])]).is_err());
        assert!(op.infer(&[&f(&[1, 4, 4, 3]), &f(&[1, 4, 4, 3])]).is_err());
        assert!(op.infer(&[&f(&[4, 4, 3]), &f(&[1, 2, 2, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 4, 4, 3])]).is_err());
        let out = op.infer(&[&f(&[1, 4, 4, 3]), &f(&[1, 2, 2, 3])]).unwrap();
        assert_eq!(out[0].shape, [1, 4, 4, 3]);
    }
}
