//! `avg_pool2d_grad`: the input gradient of [`AvgPool2d`](super::avg_pool2d::AvgPool2d),
//! input `[dy]`, output `dx` of the attribute `input_shape` (several input sizes pool to one
//! output size): each `dy` cell is spread evenly over its window's cells.

use super::GpuValue;
use super::avg_pool2d::AvgPool2d;
use super::conv2d::Padding;
use super::grad_util::{check_shape, embed_with_shape, mac_flops, shape_attr, unembed};
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::avg_pool2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Gradient of an average pooling with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct AvgPool2dGrad {
    /// The forward pooling.
    pub pool: AvgPool2d,
    /// The forward input's shape `[n, h, w, c]`.
    pub input_shape: [usize; 4],
}

impl AvgPool2dGrad {
    /// Kernel parameters, checking `dy` is the forward's output shape.
    pub fn params(&self, dy: &[usize]) -> std::result::Result<reference::AvgPool2dParams, String> {
        let p = self.pool.params(&self.input_shape)?;
        let e = |e: spore_kernels_cpu::KernelError| e.to_string();
        check_shape(
            "dy",
            dy,
            &[p.n, p.out_h().map_err(e)?, p.out_w().map_err(e)?, p.c],
        )?;
        Ok(p)
    }
}

impl OpDef for AvgPool2dGrad {
    const NAME: &'static str = "avg_pool2d_grad";

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
        reference::avg_pool2d_grad(p, dy, &mut dx)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let dy = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; p.x_len()?];
        spore_kernels_cpu::pool2d::avg_pool2d_grad(p, dy, &mut dx, threads)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn attrs(&self) -> Attrs {
        embed_with_shape(
            Self::NAME,
            &self.pool.attrs(),
            "input_shape",
            &self.input_shape,
        )
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        Ok(AvgPool2dGrad {
            pool: unembed(Self::NAME, attrs)?,
            input_shape: shape_attr(attrs, "input_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs: Vec<(&str, [usize; 4], AvgPool2d)> = vec![
            ("k2s2", [2, 7, 4, 3], AvgPool2d::default()),
            (
                "k3s2_same_exclude_pad",
                [1, 7, 5, 5],
                AvgPool2d {
                    kernel: [3, 3],
                    padding: Padding::Same,
                    count_include_pad: false,
                    ..Default::default()
                },
            ),
            (
                "k3x2_asym_pad_include_pad",
                [1, 6, 7, 2],
                AvgPool2d {
                    kernel: [3, 2],
                    strides: [1, 2],
                    padding: Padding::Explicit(Padding2d::new(1, 0, 0, 1)),
                    count_include_pad: true,
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
                    op: AvgPool2dGrad {
                        pool,
                        input_shape: x,
                    }
                    .into(),
                    inputs: vec![random_f32(rng, &dy)?],
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
        let pool = kernels::pool2d::Pool2d {
            pool: kernels::pool2d::Pool::Avg(p),
            knobs: kernels::pool2d::Knobs::default(),
        };
        kernels::pool2d_grad::record::<f32>(gpu, rec, None, dy.buffer, dx.buffer, &pool)
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // One addition per window tap, as the forward.
        let [kh, kw] = self.pool.kernel;
        match (inputs.first(), self.infer(inputs)) {
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
        let op = AvgPool2dGrad {
            pool: AvgPool2d::default(),
            input_shape: [1, 4, 5, 3],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[1, 2, 3, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 2, 2, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 2, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 2, 2, 3]), &f(&[1, 2, 2, 3])]).is_err());
        assert_eq!(
            op.infer(&[&f(&[1, 2, 2, 3])]).unwrap()[0].shape,
            [1, 4, 5, 3]
        );
    }
}
