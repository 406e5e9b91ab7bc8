//! `depthwise_conv2d_grad_input`: the input gradient of
//! [`DepthwiseConv2d`](super::depthwise_conv2d::DepthwiseConv2d), inputs `[dy, w]` (`dy`
//! `[n, out_h, out_w, c_in * m]`, `w` `[kh, kw, c_in * m]`), output `dx` `[n, h, w, c_in]`.
//! The input shape is an attribute: with a stride above 1 several input sizes give one `dy`.

use super::GpuValue;
use super::conv2d::Padding;
use super::depthwise_conv2d::DepthwiseConv2d;
use super::grad_util::{check_shape, embed_with_shape, mac_flops, shape_attr, unembed};
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels::depthwise_conv2d_grad::{self as gpu_kernel, DepthwiseGrad};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::depthwise_conv2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a depthwise convolution with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv2dGradInput {
    /// The forward convolution (no fused activation: the rule applies its gradient first).
    pub conv: DepthwiseConv2d,
    /// The forward input's shape `[n, h, w, c_in]`.
    pub input_shape: [usize; 4],
}

impl DepthwiseConv2dGradInput {
    /// Kernel parameters for `dy` and `w`, checking `dy` is the forward's output shape.
    pub fn params(
        &self,
        dy: &[usize],
        w: &[usize],
    ) -> std::result::Result<reference::DepthwiseConv2dParams, String> {
        if self.conv.act.is_some() {
            return Err("the embedded convolution must not carry a fused activation".into());
        }
        let p = self.conv.params(&self.input_shape, w)?;
        let e = |e: spore_kernels_cpu::KernelError| e.to_string();
        check_shape(
            "dy",
            dy,
            &[
                p.n,
                p.out_h().map_err(e)?,
                p.out_w().map_err(e)?,
                p.c_out().map_err(e)?,
            ],
        )?;
        Ok(p)
    }
}

impl OpDef for DepthwiseConv2dGradInput {
    const NAME: &'static str = "depthwise_conv2d_grad_input";

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
        reference::depthwise_conv2d_grad_input(p, dy, w, &mut dx)?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let dy = input_f32(Self::NAME, inputs, 0)?;
        let w = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dx = vec![0f32; p.x_len()?];
        spore_kernels_cpu::depthwise_conv2d::depthwise_conv2d_grad_input_fast(
            &p, w, dy, threads, &mut dx,
        )?;
        Ok(vec![tensor_f32(&self.input_shape, dx)?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        let shape = self.params(&inputs[0].shape, &inputs[1].shape)?;
        DepthwiseGrad {
            shape,
            knobs: gpu_kernel::Knobs::default(),
        }
        .validate()
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
        let shape = self
            .params(dy.dims(), w.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let p = DepthwiseGrad {
            shape,
            knobs: gpu_kernel::Knobs::default(),
        };
        gpu_kernel::record_input::<f32>(gpu, rec, dy.buffer, w.buffer, dx.buffer, &p)
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
        let conv: DepthwiseConv2d = unembed(Self::NAME, attrs)?;
        if conv.act.is_some() {
            return Err(attrs.err("act", "a gradient op carries no fused activation"));
        }
        Ok(DepthwiseConv2dGradInput {
            conv,
            input_shape: shape_attr(attrs, "input_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        cases(rng, Self::NAME, |conv, x, _| {
            (
                DepthwiseConv2dGradInput {
                    conv,
                    input_shape: x,
                }
                .into(),
                false,
            )
        })
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        match (inputs.first(), inputs.get(1), self.infer(inputs)) {
            (Some(dy), Some(w), Ok(_)) => mac_flops(&[dy.numel(), w.shape[0], w.shape[1]]),
            _ => 0,
        }
    }
}

/// The shared seeded cases of the two depthwise backward ops: `make(conv, x, w)` gives the op
/// and whether its inputs are `[x, dy]` (weight gradient) rather than `[dy, w]`.
pub(crate) fn cases(
    rng: &mut Rng,
    name: &str,
    make: impl Fn(DepthwiseConv2d, [usize; 4], [usize; 3]) -> (super::Op, bool),
) -> Result<Vec<OpCase>> {
    // Ragged channels, stride 2 with asymmetric padding, SAME with dilation, multiplier 2.
    let configs: Vec<(&str, [usize; 4], [usize; 3], DepthwiseConv2d)> = vec![
        ("basic", [1, 5, 6, 3], [3, 3, 3], DepthwiseConv2d::default()),
        (
            "stride2_asym_pad",
            [2, 8, 7, 5],
            [3, 2, 5],
            DepthwiseConv2d {
                strides: [2, 2],
                padding: Padding::Explicit(Padding2d::new(1, 0, 2, 1)),
                ..Default::default()
            },
        ),
        (
            "same_dilation2_multiplier2",
            [1, 7, 6, 3],
            [3, 3, 6],
            DepthwiseConv2d {
                dilations: [2, 2],
                padding: Padding::Same,
                ..Default::default()
            },
        ),
    ];
    configs
        .into_iter()
        .map(|(case, x, w, conv)| {
            let p = conv.params(&x, &w).map_err(|r| exec_err(name, r))?;
            let dy = [p.n, p.out_h()?, p.out_w()?, p.c_out()?];
            let (op, weight_grad) = make(conv, x, w);
            let inputs = if weight_grad {
                vec![random_f32(rng, &x)?, random_f32(rng, &dy)?]
            } else {
                vec![random_f32(rng, &dy)?, random_f32(rng, &w)?]
            };
            Ok(OpCase {
                name: format!("{name}/{case}"),
                op,
                inputs,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = DepthwiseConv2dGradInput {
            conv: DepthwiseConv2d::default(),
            input_shape: [1, 5, 5, 3],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[1, 4, 4, 3]), &f(&[3, 3, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 3, 6]), &f(&[3, 3, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 3, 4]), &f(&[3, 3, 4])]).is_err());
        assert!(op.infer(&[&f(&[1, 3, 3, 3])]).is_err());
        let out = op.infer(&[&f(&[1, 3, 3, 6]), &f(&[3, 3, 6])]).unwrap();
        assert_eq!(out[0].shape, [1, 5, 5, 3]);
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(23);
        for case in DepthwiseConv2dGradInput::cases(&mut rng).unwrap() {
            crate::ops::grad_util::tests::check_cpu_vs_ref(&case);
        }
    }
}
