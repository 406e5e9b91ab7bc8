//! `conv_transpose2d`: transposed 2-D convolution ("deconvolution"), NHWC activations and
//! `[c_in, kh, kw, c_out / groups]` weights (the OHWI weight of the matching conv2d), with
//! stride, dilation, explicit (possibly asymmetric) pads cropping the full output,
//! `output_padding`, groups and optional bias.

use super::conv_transpose2d_grad_weight::ConvTranspose2dGradWeight;
use super::conv2d::{Conv2d, MAX_WINDOW, Padding};
use super::grad_util::{bias_grad, input, output_grad, shape_of};
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, check_bias, input_f32, ints_attr,
    optional_input_f32, random_f32, tensor_f32,
};
use crate::backend::gpu::kernels::conv_transpose2d as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::conv_transpose2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Transposed 2-D convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose2d {
    /// `[stride_h, stride_w]` (the upsampling factors).
    pub strides: [usize; 2],
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
    /// Cells cropped from each side of the full output (the matching conv's padding).
    pub pads: Padding2d,
    /// `[rows, columns]` added at the bottom / right of the output; each below its stride.
    pub output_padding: [usize; 2],
    /// Channel groups (1 = dense).
    pub groups: usize,
}

impl Default for ConvTranspose2d {
    fn default() -> Self {
        ConvTranspose2d {
            strides: [1, 1],
            dilations: [1, 1],
            pads: Padding2d::ZERO,
            output_padding: [0, 0],
            groups: 1,
        }
    }
}

impl ConvTranspose2d {
    /// Kernel parameters for input `x` `[n, h, w, c_in]` and weight `[c_in, kh, kw, c_out/g]`.
    pub fn params(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<reference::ConvTranspose2dParams, String> {
        if x.len() != 4 || w.len() != 4 {
            return Err(format!(
                "expects x rank 4 (NHWC) and w rank 4 ([c_in, kh, kw, c_out / groups]), got \
                 {x:?} and {w:?}"
            ));
        }
        if w[0] != x[3] {
            return Err(format!(
                "weight expects {} input channels, x has {}",
                w[0], x[3]
            ));
        }
        let c_out = w[3]
            .checked_mul(self.groups)
            .ok_or_else(|| format!("{} x {} output channels overflow", w[3], self.groups))?;
        let p = reference::ConvTranspose2dParams {
            n: x[0],
            h: x[1],
            w: x[2],
            c_in: x[3],
            c_out,
            kh: w[1],
            kw: w[2],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dilation_h: self.dilations[0],
            dilation_w: self.dilations[1],
            padding: self.pads,
            output_padding_h: self.output_padding[0],
            output_padding_w: self.output_padding[1],
            groups: self.groups,
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

impl OpDef for ConvTranspose2d {
    const NAME: &'static str = "conv_transpose2d";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 3)?;
        all_f32(inputs)?;
        let p = self.params(&inputs[0].shape, &inputs[1].shape)?;
        check_bias(inputs.get(2).copied(), p.c_out)?;
        let (oh, ow) = (
            p.out_h().map_err(|e| e.to_string())?,
            p.out_w().map_err(|e| e.to_string())?,
        );
        Ok(vec![TensorFact::f32([p.n, oh, ow, p.c_out])])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let w = input_f32(Self::NAME, inputs, 1)?;
        let bias = optional_input_f32(Self::NAME, inputs, 2)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        reference::conv_transpose2d(p, x, w, bias, &mut y)?;
        Ok(vec![tensor_f32(
            &[p.n, p.out_h()?, p.out_w()?, p.c_out],
            y,
        )?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let w = input_f32(Self::NAME, inputs, 1)?;
        let bias = optional_input_f32(Self::NAME, inputs, 2)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        spore_kernels_cpu::conv_transpose2d::conv_transpose2d_fast(
            &p, x, w, bias, None, threads, &mut y,
        )?;
        Ok(vec![tensor_f32(
            &[p.n, p.out_h()?, p.out_w()?, p.c_out],
            y,
        )?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        super::gpu_f32_fits(self, inputs)?;
        let p = self.params(&inputs[0].shape, &inputs[1].shape)?;
        gpu_kernel::ConvTranspose2d { p, act: None }
            .validate()
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let x = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let w = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let p = self
            .params(x.dims(), w.dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let ct = gpu_kernel::ConvTranspose2d { p, act: None };
        let bias = inputs.get(2).map(|b| b.buffer);
        gpu_kernel::record::<f32>(gpu, rec, x.buffer, w.buffer, bias, y.buffer, &ct)
    }

    fn attrs(&self) -> Attrs {
        let p = self.pads;
        Attrs::new(Self::NAME)
            .with("strides", ints_attr(&self.strides))
            .with("dilations", ints_attr(&self.dilations))
            .with("pads", ints_attr(&[p.top, p.bottom, p.left, p.right]))
            .with("output_padding", ints_attr(&self.output_padding))
            .with("groups", super::AttrValue::Int(self.groups as i64))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let strides = attrs.usizes::<2>("strides", MAX_WINDOW)?;
        let dilations = attrs.usizes::<2>("dilations", MAX_WINDOW)?;
        if strides.contains(&0) {
            return Err(attrs.err("strides", "must be positive"));
        }
        if dilations.contains(&0) {
            return Err(attrs.err("dilations", "must be positive"));
        }
        let [t, b, l, r] = attrs.usizes::<4>("pads", MAX_WINDOW)?;
        let output_padding = attrs.usizes::<2>("output_padding", MAX_WINDOW)?;
        if output_padding[0] >= strides[0] || output_padding[1] >= strides[1] {
            return Err(attrs.err(
                "output_padding",
                format!("{output_padding:?} must be below the strides {strides:?}"),
            ));
        }
        let groups = attrs.usize("groups", MAX_WINDOW)?;
        if groups == 0 {
            return Err(attrs.err("groups", "must be positive"));
        }
        Ok(ConvTranspose2d {
            strides,
            dilations,
            pads: Padding2d::new(t, b, l, r),
            output_padding,
            groups,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, w, op, bias): ragged sizes, stride 2 with pads and output_padding,
        // dilation 2 with asymmetric pads, groups.
        type Config = (&'static str, [usize; 4], [usize; 4], ConvTranspose2d, bool);
        let configs: Vec<Config> = vec![
            (
                "basic",
                [1, 3, 4, 3],
                [3, 3, 3, 2],
                ConvTranspose2d::default(),
                true,
            ),
            (
                "stride2_pads_outpad",
                [2, 3, 3, 2],
                [2, 3, 3, 3],
                ConvTranspose2d {
                    strides: [2, 2],
                    pads: Padding2d::symmetric(1, 1),
                    output_padding: [1, 0],
                    ..Default::default()
                },
                true,
            ),
            (
                "dilation2_asym_pads",
                [1, 4, 3, 2],
                [2, 2, 3, 3],
                ConvTranspose2d {
                    dilations: [2, 2],
                    strides: [1, 2],
                    pads: Padding2d::new(1, 0, 0, 2),
                    ..Default::default()
                },
                false,
            ),
            (
                "groups2",
                [1, 3, 3, 4],
                [4, 2, 2, 3],
                ConvTranspose2d {
                    groups: 2,
                    strides: [2, 2],
                    ..Default::default()
                },
                true,
            ),
        ];
        configs
            .into_iter()
            .map(|(name, x, w, op, bias)| {
                let c_out = w[3] * op.groups;
                let mut inputs = vec![random_f32(rng, &x)?, random_f32(rng, &w)?];
                if bias {
                    inputs.push(random_f32(rng, &[c_out])?);
                }
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: op.into(),
                    inputs,
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // Every input cell stamps kh * kw * (c_out / groups) multiply-adds.
        match (inputs.first(), inputs.get(1), self.infer(inputs)) {
            (Some(x), Some(w), Ok(_)) => {
                (2 * x.numel() as u64).saturating_mul((w.shape[1] * w.shape[2] * w.shape[3]) as u64)
            }
            _ => 0,
        }
    }

    /// `dx` is the matching convolution of `dy` with the same weight (a `conv2d` node),
    /// `dw = conv_transpose2d_grad_weight(x, dy)` and `db = reduce_sum(dy)` over `n, h, w`.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None; ctx.inputs.len()]);
        };
        let (x, w) = (input(ctx, 0)?, input(ctx, 1)?);
        let weight_shape = shape_of::<4>(ctx, w)?;
        let matching = Conv2d {
            strides: self.strides,
            dilations: self.dilations,
            padding: Padding::Explicit(self.pads),
            groups: self.groups,
            act: None,
        };
        let dx = ctx
            .builder
            .node1(&format!("{}/grad_input", ctx.node), matching, &[dy, w])?;
        let (got, want) = (&ctx.builder.fact(dx)?.shape, &ctx.builder.fact(x)?.shape);
        if got != want {
            return Err(crate::Error::invalid_param(
                "grad",
                format!(
                    "node `{}`: the matching convolution gives {got:?}, the input is {want:?}",
                    ctx.node
                ),
            ));
        }
        let dw = ctx.builder.node1(
            &format!("{}/grad_weight", ctx.node),
            ConvTranspose2dGradWeight {
                conv: self.clone(),
                weight_shape,
            },
            &[x, dy],
        )?;
        let mut grads = vec![Some(dx), Some(dw)];
        if ctx.inputs.len() > 2 {
            grads.push(Some(bias_grad(ctx, dy)?));
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(51);
        for case in ConvTranspose2d::cases(&mut rng).unwrap() {
            let wrt: Vec<usize> = (0..case.inputs.len()).collect();
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &wrt,
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = ConvTranspose2d::default();
        let x = TensorFact::f32([1, 3, 3, 2]);
        assert!(op.infer(&[&x, &TensorFact::f32([2, 3, 3])]).is_err());
        assert!(op.infer(&[&x, &TensorFact::f32([3, 3, 3, 2])]).is_err());
        assert!(
            op.infer(&[&TensorFact::f32([3]), &TensorFact::f32([2, 3, 3, 2])])
                .is_err()
        );
        let grouped = ConvTranspose2d {
            groups: 3,
            ..Default::default()
        };
        assert!(
            grouped
                .infer(&[&x, &TensorFact::f32([2, 3, 3, 1])])
                .is_err()
        );
        let cropped = ConvTranspose2d {
            pads: Padding2d::symmetric(3, 0),
            ..Default::default()
        };
        assert!(
            cropped
                .infer(&[&x, &TensorFact::f32([2, 3, 3, 1])])
                .is_err()
        );
        let out = op.infer(&[&x, &TensorFact::f32([2, 3, 3, 5])]).unwrap();
        assert_eq!(out[0].shape, [1, 5, 5, 5]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        // One input row [1, 2] stamped with kernel [1, 10] at stride 2: [1, 10, 2, 20].
        let x = Tensor::from_vec(&[1, 1, 2, 1], vec![1f32, 2.]).unwrap();
        let w = Tensor::from_vec(&[1, 1, 2, 1], vec![1f32, 10.]).unwrap();
        let op = ConvTranspose2d {
            strides: [1, 2],
            ..Default::default()
        };
        let y = op.eval_ref(&[&x, &w]).unwrap();
        assert_eq!(y[0].dims(), [1, 1, 4, 1]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1.0, 10.0, 2.0, 20.0]);
    }
}
