//! `conv2d_grad_weight`: the weight gradient of [`Conv2d`](super::conv2d::Conv2d), inputs
//! `[x, dy]` (`x` `[n, h, w, c_in]`, `dy` `[n, out_h, out_w, c_out]`), output `dw` OHWI
//! `[c_out, kh, kw, c_in / groups]`. The weight shape is an attribute (the kernel size cannot
//! be read off `x` and `dy`). The bias gradient is a separate `reduce_sum` of `dy`.

use super::GpuValue;
use super::conv2d::{Conv2d, Padding};
use super::grad_util::{check_shape, embed_with_shape, mac_flops, shape_attr, unembed};
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels::conv2d_grad::{self as gpu_kernel, WeightKnobs, WeightVariant};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::conv2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Gradient of a convolution with respect to its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dGradWeight {
    /// The forward convolution (no fused activation: the rule applies its gradient first).
    pub conv: Conv2d,
    /// The forward weight's shape `[c_out, kh, kw, c_in / groups]`.
    pub weight_shape: [usize; 4],
}

impl Conv2dGradWeight {
    /// Kernel parameters for `x` and `dy`, checking `dy` is the forward's output shape.
    pub fn params(
        &self,
        x: &[usize],
        dy: &[usize],
    ) -> std::result::Result<reference::Conv2dParams, String> {
        if self.conv.act.is_some() {
            return Err("the embedded convolution must not carry a fused activation".into());
        }
        let p = self.conv.params(x, &self.weight_shape)?;
        let oh = p.out_h().map_err(|e| e.to_string())?;
        let ow = p.out_w().map_err(|e| e.to_string())?;
        check_shape("dy", dy, &[p.n, oh, ow, p.c_out])?;
        Ok(p)
    }
}

impl OpDef for Conv2dGradWeight {
    const NAME: &'static str = "conv2d_grad_weight";

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
        reference::conv2d_grad_weight(p, x, dy, &mut dw)?;
        Ok(vec![tensor_f32(&self.weight_shape, dw)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        let mut dw = vec![0f32; p.w_len()?];
        spore_kernels_cpu::conv2d_grad::conv2d_grad_weight_fast(&p, x, dy, threads, &mut dw, None)?;
        Ok(vec![tensor_f32(&self.weight_shape, dw)?])
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
        let ([x, dy], [dw]) = (inputs, outputs) else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [x, dy] and one output",
            ));
        };
        let p = self
            .params(x.dims(), dy.dims())
            .map_err(|r| exec_err(Self::NAME, r))?;
        // Split-K GEMM with a shape-chosen split count; deterministic (ordered reduce).
        let variant = WeightVariant::SplitK(WeightKnobs::default());
        gpu_kernel::record_weight::<f32>(gpu, rec, x.buffer, dy.buffer, dw.buffer, &p, variant)
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
        let conv: Conv2d = unembed(Self::NAME, attrs)?;
        if conv.act.is_some() {
            return Err(attrs.err("act", "a gradient op carries no fused activation"));
        }
        Ok(Conv2dGradWeight {
            conv,
            weight_shape: shape_attr(attrs, "weight_shape")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
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
                    op: Conv2dGradWeight {
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
        // One multiply-add per (output cell, tap, input channel of the group), as the forward.
        let [_, kh, kw, ci] = self.weight_shape;
        match (inputs.get(1), self.infer(inputs)) {
            (Some(dy), Ok(_)) => mac_flops(&[dy.numel(), kh, kw, ci]),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = Conv2dGradWeight {
            conv: Conv2d::default(),
            weight_shape: [4, 3, 3, 3],
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[1, 5, 5, 3]), &f(&[1, 4, 4, 4])]).is_err());
        assert!(op.infer(&[&f(&[1, 5, 5, 2]), &f(&[1, 3, 3, 4])]).is_err());
        assert!(op.infer(&[&f(&[1, 5, 5, 3]), &f(&[2, 3, 3, 4])]).is_err());
        assert!(op.infer(&[&f(&[5, 5, 3]), &f(&[1, 3, 3, 4])]).is_err());
        let out = op.infer(&[&f(&[1, 5, 5, 3]), &f(&[1, 3, 3, 4])]).unwrap();
        assert_eq!(out[0].shape, [4, 3, 3, 3]);
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(22);
        for case in Conv2dGradWeight::cases(&mut rng).unwrap() {
            crate::ops::grad_util::tests::check_cpu_vs_ref(&case);
        }
    }
}
