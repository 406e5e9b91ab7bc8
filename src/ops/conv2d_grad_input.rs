//! `conv2d_grad_input`: the input gradient of [`Conv2d`](super::conv2d::Conv2d), inputs
//! `[dy, w]` (`dy` `[n, out_h, out_w, c_out]`, `w` OHWI), output `dx` `[n, h, w, c_in]`. The
//! input shape is an attribute: with a stride above 1 several input sizes give the same `dy`.

use super::GpuValue;
use super::conv2d::{Conv2d, Padding};
use super::grad_util::{check_shape, embed_with_shape, mac_flops, shape_attr, unembed};
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels::conv2d_grad::{self as gpu_kernel, InputVariant};
use crate::backend::gpu::kernels::matmul::Tile;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::conv2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a convolution with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dGradInput {
    /// The forward convolution (its fused activation must be `None`: the rule applies the
    /// activation's gradient before this op).
    pub conv: Conv2d,
    /// The forward input's shape `[n, h, w, c_in]`.
    pub input_shape: [usize; 4],
}

impl Conv2dGradInput {
    /// Kernel parameters for `dy` and `w`, checking `dy` is the forward's output shape.
    pub fn params(
        &self,
        dy: &[usize],
        w: &[usize],
    ) -> std::result::Result<reference::Conv2dParams, String> {
        if self.conv.act.is_some() {
            return Err("the embedded convolution must not carry a fused activation".into());
        }
        let p = self.conv.params(&self.input_shape, w)?;
        let oh = p.out_h().map_err(|e| e.to_string())?;
        let ow = p.out_w().map_err(|e| e.to_string())?;
        check_shape("dy", dy, &[p.n, oh, ow, p.c_out])?;
        Ok(p)
    }
}

impl OpDef for Conv2dGradInput {
    const NAME: &'static str = "conv2d_grad_input";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        self.params(&inputs[0].shape, &inputs[1].shape)?;
        Ok(vec![TensorFact::f32(self.input_shape)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let dy = input_f32(Self::NAME, inputs, 0)?;
        let w = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; p.x_len()?];
        reference::conv2d_grad_input(p, dy, w, &mut dx)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let dy = input_f32(Self::NAME, inputs, 0)?;
        let w = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; p.x_len()?];
        spore_kernels_cpu::conv2d_grad::conv2d_grad_input_fast(&p, dy, w, threads, &mut dx)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        let p = self.params(&inputs[0].shape, &inputs[1].shape)?;
        gpu_kernel::grad_params(&p)
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
        let ([dy, w], [dx]) = (inputs, outputs) else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [dy, w] and one output",
            ));
        };
        let p = self
            .params(dy.dims(), w.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        // The transposed implicit GEMM on the default tile (the tune cache may pick another).
        let variant = InputVariant::Tiled(Tile::DEFAULT);
        gpu_kernel::record_input::<f32>(gpu, rec, dy.buffer, w.buffer, dx.buffer, &p, variant)
    }

    fn attrs(&self) -> Attrs {
        embed_with_shape(
            Self::NAME,
            &self.conv.attrs(),
            "input_shape",
            &self.input_shape,
        )
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let conv: Conv2d = unembed(Self::NAME, attrs)?;
        if conv.act.is_some() {
            return Err(attrs.err("act", "a gradient op carries no fused activation"));
        }
        Ok(Conv2dGradInput {
            conv,
            input_shape: shape_attr(attrs, "input_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x shape, w shape, conv): ragged channels, stride 2 with asymmetric padding
        // (an input row the windows skip), SAME with dilation, groups.
        let configs: Vec<(&str, [usize; 4], [usize; 4], Conv2d)> = vec![
            ("basic", [1, 5, 5, 3], [4, 3, 3, 3], Conv2d::default()),
            (
                "stride2_asym_pad",
                [2, 8, 7, 2],
                [3, 3, 2, 2],
                Conv2d {
                    strides: [2, 2],
                    padding: Padding::Explicit(Padding2d::new(1, 0, 2, 1)),
                    ..Default::default()
                },
            ),
            (
                "same_dilation2_groups",
                [1, 7, 6, 6],
                [9, 3, 3, 2],
                Conv2d {
                    dilations: [2, 2],
                    groups: 3,
                    padding: Padding::Same,
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
                    op: Conv2dGradInput {
                        conv,
                        input_shape: x,
                    }
                    .into(),
                    inputs: vec![random_f32(rng, &dy)?, random_f32(rng, &w)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // The same multiply-adds as the forward: one per (output cell, tap, input channel).
        match (inputs.first(), inputs.get(1), self.infer(inputs)) {
            (Some(dy), Some(w), Ok(_)) => {
                mac_flops(&[dy.numel(), w.shape[1], w.shape[2], w.shape[3]])
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = Conv2dGradInput {
            conv: Conv2d::default(),
            input_shape: [1, 5, 5, 3],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        // dy of the wrong spatial size, the wrong channel count, w of the wrong channels.
        assert!(op.infer(&[&f(&[1, 4, 4, 4]), &f(&[4, 3, 3, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 3, 5]), &f(&[4, 3, 3, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 3, 4]), &f(&[4, 3, 3, 2])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 3, 4])]).is_err());
        let fused = Conv2dGradInput {
            conv: Conv2d {
                act: Some(super::super::activation::ActivationKind::Relu),
                ..Default::default()
            },
            input_shape: [1, 5, 5, 3],
        };
        assert!(
            fused
                .infer(&[&f(&[1, 3, 3, 4]), &f(&[4, 3, 3, 3])])
                .is_err()
        );
        let out = op.infer(&[&f(&[1, 3, 3, 4]), &f(&[4, 3, 3, 3])]).unwrap();
        assert_eq!(out[0].shape, [1, 5, 5, 3]);
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(21);
        for case in Conv2dGradInput::cases(&mut rng).unwrap() {
            crate::ops::grad_util::tests::check_cpu_vs_ref(&case);
        }
    }
}
