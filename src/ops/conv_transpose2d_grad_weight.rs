//! `conv_transpose2d_grad_weight`: the weight gradient of
//! [`ConvTranspose2d`](super::conv_transpose2d::ConvTranspose2d), inputs `[x, dy]` (`x`
//! `[n, h, w, c_in]`, `dy` `[n, out_h, out_w, c_out]`), output `dw`
//! `[c_in, kh, kw, c_out / groups]`. The weight shape is an attribute. It is the matching
//! convolution's weight gradient with `x` and `dy` swapped, so the CPU path reuses the tuned
//! `conv2d_grad_weight` kernel.

use super::GpuValue;
use super::conv_transpose2d::ConvTranspose2d;
use super::grad_util::{check_shape, embed_with_shape, mac_flops, shape_attr, unembed};
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels::conv2d_grad::{self as gpu_kernel, WeightKnobs, WeightVariant};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::conv_transpose2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a transposed convolution with respect to its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose2dGradWeight {
    /// The forward transposed convolution.
    pub conv: ConvTranspose2d,
    /// The forward weight's shape `[c_in, kh, kw, c_out / groups]`.
    pub weight_shape: [usize; 4],
}

impl ConvTranspose2dGradWeight {
    /// Kernel parameters for `x` and `dy`, checking `dy` is the forward's output shape.
    pub fn params(
        &self,
        x: &[usize],
        dy: &[usize],
    ) -> std::result::Result<reference::ConvTranspose2dParams, String> {
        let p = self.conv.params(x, &self.weight_shape)?;
        let e = |e: spore_kernels_cpu::KernelError| e.to_string();
        check_shape(
            "dy",
            dy,
            &[p.n, p.out_h().map_err(e)?, p.out_w().map_err(e)?, p.c_out],
        )?;
        Ok(p)
    }
}

impl OpDef for ConvTranspose2dGradWeight {
    const NAME: &'static str = "conv_transpose2d_grad_weight";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        self.params(&inputs[0].shape, &inputs[1].shape)?;
        Ok(vec![TensorFact::f32(self.weight_shape)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dw = vec![0f32; p.w_len()?];
        reference::conv_transpose2d_grad_weight(p, x, dy, &mut dw)?;
        Ok(vec![tensor_f32(&self.weight_shape, dw)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dw = vec![0f32; p.w_len()?];
        // The matching conv reads `dy` as its input and `x` as its output gradient.
        spore_kernels_cpu::conv2d_grad::conv2d_grad_weight_fast(
            &p.as_conv2d()?,
            dy,
            x,
            threads,
            &mut dw,
            None,
        )?;
        Ok(vec![tensor_f32(&self.weight_shape, dw)?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        let p = self.params(&inputs[0].shape, &inputs[1].shape)?;
        let conv = p.as_conv2d().map_err(|e| e.to_string())?;
        gpu_kernel::grad_params(&conv)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let ([x, dy], [dw]) = (inputs, outputs) else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [x, dy] and one output",
            ));
        };
        let p = self
            .params(x.dims(), dy.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        // conv2d's split-K weight gradient of the matching convolution, x and dy swapped.
        let variant = WeightVariant::SplitK(WeightKnobs::default());
        gpu_kernel::record_transpose_weight::<f32>(
            gpu, rec, x.buffer, dy.buffer, dw.buffer, &p, variant,
        )
    }

    fn attrs(&self) -> Attrs {
        embed_with_shape(
            Self::NAME,
            &self.conv.attrs(),
            "weight_shape",
            &self.weight_shape,
        )
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        Ok(ConvTranspose2dGradWeight {
            conv: unembed(Self::NAME, attrs)?,
            weight_shape: shape_attr(attrs, "weight_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs: Vec<(&str, [usize; 4], [usize; 4], ConvTranspose2d)> = vec![
            (
                "basic",
                [1, 3, 4, 3],
                [3, 3, 3, 2],
                ConvTranspose2d::default(),
            ),
            (
                "stride2_pads_outpad",
                [2, 3, 3, 5],
                [5, 3, 3, 3],
                ConvTranspose2d {
                    strides: [2, 2],
                    pads: Padding2d::symmetric(1, 1),
                    output_padding: [1, 0],
                    ..Default::default()
                },
            ),
            (
                "dilation2_groups2",
                [1, 4, 3, 4],
                [4, 2, 3, 3],
                ConvTranspose2d {
                    dilations: [2, 2],
                    strides: [1, 2],
                    pads: Padding2d::new(1, 0, 0, 2),
                    groups: 2,
                    ..Default::default()
                },
            ),
        ];
        configs
            .into_iter()
            .map(|(name, x, w, conv)| {
                let p = conv.params(&x, &w).map_err(|r| exec_err(Self::NAME, r))?;
                let dy = [p.n, p.out_h()?, p.out_w()?, p.c_out];
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: ConvTranspose2dGradWeight {
                        conv,
                        weight_shape: w,
                    }
                    .into(),
                    inputs: vec![random_f32(rng, &x)?, random_f32(rng, &dy)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // One multiply-add per (input cell, tap, output channel of the group).
        let [_, kh, kw, co] = self.weight_shape;
        match (inputs.first(), self.infer(inputs)) {
            (Some(x), Ok(_)) => mac_flops(&[x.numel(), kh, kw, co]),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = ConvTranspose2dGradWeight {
            conv: ConvTranspose2d::default(),
            weight_shape: [3, 3, 3, 2],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        // Forward: x [1, 3, 4, 3] -> y [1, 5, 6, 2].
        assert!(op.infer(&[&f(&[1, 3, 4, 3]), &f(&[1, 5, 5, 2])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 4, 3]), &f(&[1, 5, 6, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 4, 2]), &f(&[1, 5, 6, 2])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 4, 3])]).is_err());
        let out = op.infer(&[&f(&[1, 3, 4, 3]), &f(&[1, 5, 6, 2])]).unwrap();
        assert_eq!(out[0].shape, [3, 3, 3, 2]);
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(25);
        for case in ConvTranspose2dGradWeight::cases(&mut rng).unwrap() {
            crate::ops::grad_util::tests::check_cpu_vs_ref(&case);
        }
    }
}
