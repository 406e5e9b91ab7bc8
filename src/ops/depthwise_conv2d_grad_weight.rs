//! `depthwise_conv2d_grad_weight`: the weight gradient of
//! [`DepthwiseConv2d`](super::depthwise_conv2d::DepthwiseConv2d), inputs `[x, dy]` (`x`
//! `[n, h, w, c_in]`, `dy` `[n, out_h, out_w, c_in * m]`), output `dw` `[kh, kw, c_in * m]`.
//! The weight shape is an attribute; the bias gradient is a separate `reduce_sum` of `dy`.

use super::GpuValue;
use super::depthwise_conv2d::DepthwiseConv2d;
use super::grad_util::{check_shape, embed_with_shape, mac_flops, shape_attr, unembed};
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, tensor_f32};
use crate::backend::gpu::kernels::depthwise_conv2d_grad::{self as gpu_kernel, DepthwiseGrad};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::depthwise_conv2d as reference;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a depthwise convolution with respect to its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv2dGradWeight {
    /// The forward convolution (no fused activation: the rule applies its gradient first).
    pub conv: DepthwiseConv2d,
    /// The forward weight's shape `[kh, kw, c_in * multiplier]`.
    pub weight_shape: [usize; 3],
}

impl DepthwiseConv2dGradWeight {
    /// Kernel parameters for `x` and `dy`, checking `dy` is the forward's output shape.
    pub fn params(
        &self,
        x: &[usize],
        dy: &[usize],
    ) -> std::result::Result<reference::DepthwiseConv2dParams, String> {
        if self.conv.act.is_some() {
            return Err("the embedded convolution must not carry a fused activation".into());
        }
        let p = self.conv.params(x, &self.weight_shape)?;
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

impl OpDef for DepthwiseConv2dGradWeight {
    const NAME: &'static str = "depthwise_conv2d_grad_weight";

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
        reference::depthwise_conv2d_grad_weight(p, x, dy, &mut dw)?;
        Ok(vec![tensor_f32(&self.weight_shape, dw)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dw = vec![0f32; p.w_len()?];
        spore_kernels_cpu::depthwise_conv2d::depthwise_conv2d_grad_weight_fast(
            &p, x, dy, threads, &mut dw, None,
        )?;
        Ok(vec![tensor_f32(&self.weight_shape, dw)?])
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
        let ([x, dy], [dw]) = (inputs, outputs) else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [x, dy] and one output",
            ));
        };
        let shape = self
            .params(x.dims(), dy.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let p = DepthwiseGrad {
            shape,
            knobs: gpu_kernel::Knobs::default(),
        };
        // Row-chunk partials + ordered reduce: deterministic.
        gpu_kernel::record_weight::<f32>(gpu, rec, x.buffer, dy.buffer, dw.buffer, &p)
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
        let conv: DepthwiseConv2d = unembed(Self::NAME, attrs)?;
        if conv.act.is_some() {
            return Err(attrs.err("act", "a gradient op carries no fused activation"));
        }
        Ok(DepthwiseConv2dGradWeight {
            conv,
            weight_shape: shape_attr(attrs, "weight_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        super::depthwise_conv2d_grad_input::cases(rng, Self::NAME, |conv, _, w| {
            (
                DepthwiseConv2dGradWeight {
                    conv,
                    weight_shape: w,
                }
                .into(),
                true,
            )
        })
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        let [kh, kw, _] = self.weight_shape;
        match (inputs.get(1), self.infer(inputs)) {
            (Some(dy), Ok(_)) => mac_flops(&[dy.numel(), kh, kw]),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = DepthwiseConv2dGradWeight {
            conv: DepthwiseConv2d::default(),
            weight_shape: [3, 3, 6],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[1, 5, 5, 3]), &f(&[1, 3, 3, 3])]).is_err());
        assert!(op.infer(&[&f(&[1, 5, 5, 4]), &f(&[1, 3, 3, 6])]).is_err());
        assert!(op.infer(&[&f(&[1, 5, 5, 3]), &f(&[1, 4, 4, 6])]).is_err());
        assert!(op.infer(&[&f(&[1, 5, 5, 3])]).is_err());
        let out = op.infer(&[&f(&[1, 5, 5, 3]), &f(&[1, 3, 3, 6])]).unwrap();
        assert_eq!(out[0].shape, [3, 3, 6]);
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(24);
        for case in DepthwiseConv2dGradWeight::cases(&mut rng).unwrap() {
            crate::ops::grad_util::tests::check_cpu_vs_ref(&case);
        }
    }
}
