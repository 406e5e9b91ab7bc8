//! `depthwise_conv2d`: depthwise 2-D convolution with a channel multiplier, NHWC activations
//! and `[kh, kw, c_in * multiplier]` weights (the multiplier is implied by the weight shape),
//! with stride, explicit (possibly asymmetric) or SAME padding, dilation, optional bias, and an
//! optional fused activation (set by `plan::fuse`, read by every backend).

use super::activation::{ActivationKind, apply_in_place, get_kind, put_kind};
use super::conv2d::{MAX_WINDOW, Padding};
use super::depthwise_conv2d_grad_input::DepthwiseConv2dGradInput;
use super::depthwise_conv2d_grad_weight::DepthwiseConv2dGradWeight;
use super::grad_util::{bias_grad, input, output_grad, shape_of, through_act};
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, check_bias, input_f32, ints_attr,
    optional_input_f32, random_f32, tensor_f32,
};
use crate::backend::gpu::kernels::depthwise_conv2d as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use crate::tune::TuneSpec;
use spore_kernels_cpu::reference::depthwise_conv2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// Depthwise 2-D convolution: output channel `ic * multiplier + m` convolves input channel
/// `ic` with its own kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv2d {
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Fused activation applied to the output.
    pub act: Option<ActivationKind>,
}

impl Default for DepthwiseConv2d {
    fn default() -> Self {
        DepthwiseConv2d {
            strides: [1, 1],
            dilations: [1, 1],
            padding: Padding::Explicit(Padding2d::ZERO),
            act: None,
        }
    }
}

impl DepthwiseConv2d {
    /// Kernel parameters for input `x` `[n, h, w, c_in]` and weight `[kh, kw, c_in * m]`.
    pub fn params(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<reference::DepthwiseConv2dParams, String> {
        if x.len() != 4 || w.len() != 3 {
            return Err(format!(
                "expects x rank 4 (NHWC) and w rank 3 ([kh, kw, c_in * multiplier]), got {x:?} \
                 and {w:?}"
            ));
        }
        if x[3] == 0 || w[2] == 0 || !w[2].is_multiple_of(x[3]) {
            return Err(format!(
                "weight has {} output channels, not a positive multiple of the {} input channels",
                w[2], x[3]
            ));
        }
        let p = reference::DepthwiseConv2dParams {
            n: x[0],
            h: x[1],
            w: x[2],
            c_in: x[3],
            multiplier: w[2] / x[3],
            kh: w[0],
            kw: w[1],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dilation_h: self.dilations[0],
            dilation_w: self.dilations[1],
            padding: self
                .padding
                .resolve([x[1], x[2]], [w[0], w[1]], self.strides, self.dilations),
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

impl OpDef for DepthwiseConv2d {
    const NAME: &'static str = "depthwise_conv2d";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 3)?;
        all_f32(inputs)?;
        let p = self.params(&inputs[0].shape, &inputs[1].shape)?;
        let c_out = p.c_out().map_err(|e| e.to_string())?;
        check_bias(inputs.get(2).copied(), c_out)?;
        let (oh, ow) = (
            p.out_h().map_err(|e| e.to_string())?,
            p.out_w().map_err(|e| e.to_string())?,
        );
        Ok(vec![TensorFact::f32([p.n, oh, ow, c_out])])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let w = input_f32(Self::NAME, inputs, 1)?;
        let bias = optional_input_f32(Self::NAME, inputs, 2)?;
        let p = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        reference::depthwise_conv2d(p, x, w, bias, &mut y)?;
        if let Some(act) = self.act {
            apply_in_place(act, &mut y)?;
        }
        Ok(vec![tensor_f32(
            &[p.n, p.out_h()?, p.out_w()?, p.c_out()?],
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
        spore_kernels_cpu::depthwise_conv2d::depthwise_conv2d_fast(
            &p, x, w, bias, self.act, threads, &mut y,
        )?;
        Ok(vec![tensor_f32(
            &[p.n, p.out_h()?, p.out_w()?, p.c_out()?],
            y,
        )?])
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
        let w = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let p = self
            .params(x.dims(), w.dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let knobs = crate::tune::choose(
            gpu,
            || Some(gpu_kernel::tune_spec(&p)),
            gpu_kernel::Knobs::default(),
            gpu_kernel::Knobs::parse,
            |k| k.wg.is_power_of_two() && k.wg <= 256 && (1..=8).contains(&k.cols),
        );
        let conv = gpu_kernel::DepthwiseConv2d {
            shape: p,
            act: self.act,
            knobs,
        };
        let bias = inputs.get(2).map(|b| b.buffer);
        gpu_kernel::record::<f32>(gpu, rec, x.buffer, w.buffer, bias, y.buffer, &conv)
    }

    fn gpu_tune(&self, inputs: &[&TensorFact], _gpu: &GpuContext) -> Option<TuneSpec> {
        let (x, w) = (inputs.first()?, inputs.get(1)?);
        let p = self.params(&x.shape, &w.shape).ok()?;
        Some(gpu_kernel::tune_spec(&p))
    }

    fn attrs(&self) -> Attrs {
        let a = Attrs::new(Self::NAME)
            .with("strides", ints_attr(&self.strides))
            .with("dilations", ints_attr(&self.dilations));
        put_kind(self.padding.put(a), "act", self.act)
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
        Ok(DepthwiseConv2d {
            strides,
            dilations,
            padding: Padding::get(attrs)?,
            act: get_kind(attrs, "act")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, w, op, bias): ragged sizes, stride 2 with asymmetric padding, SAME with
        // dilation 2, multiplier 2, a fused activation.
        type Config = (&'static str, [usize; 4], [usize; 3], DepthwiseConv2d, bool);
        let configs: Vec<Config> = vec![
            (
                "basic",
                [1, 5, 6, 3],
                [3, 3, 3],
                DepthwiseConv2d::default(),
                true,
            ),
            (
                "stride2_asym_pad",
                [2, 7, 6, 2],
                [3, 2, 2],
                DepthwiseConv2d {
                    strides: [2, 2],
                    padding: Padding::Explicit(Padding2d::new(1, 0, 2, 1)),
                    ..Default::default()
                },
                true,
            ),
            (
                "same_dilation2",
                [1, 7, 7, 3],
                [3, 3, 3],
                DepthwiseConv2d {
                    dilations: [2, 2],
                    padding: Padding::Same,
                    ..Default::default()
                },
                false,
            ),
            (
                "multiplier2_relu6",
                [1, 6, 5, 3],
                [3, 3, 6],
                DepthwiseConv2d {
                    strides: [2, 1],
                    padding: Padding::Same,
                    act: Some(ActivationKind::Relu6),
                    ..Default::default()
                },
                true,
            ),
        ];
        configs
            .into_iter()
            .map(|(name, x, w, op, bias)| {
                let mut inputs = vec![random_f32(rng, &x)?, random_f32(rng, &w)?];
                if bias {
                    inputs.push(random_f32(rng, &[w[2]])?);
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
        match (inputs.get(1), self.infer(inputs)) {
            (Some(w), Ok(out)) => {
                (2 * out[0].numel() as u64).saturating_mul((w.shape[0] * w.shape[1]) as u64)
            }
            _ => 0,
        }
    }

    /// Through the fused activation (if any) to `dz`, then
    /// `dx = depthwise_conv2d_grad_input(dz, w)`, `dw = depthwise_conv2d_grad_weight(x, dz)`
    /// and `db = reduce_sum(dz)` over `n, h, w`.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None; ctx.inputs.len()]);
        };
        let unfused = DepthwiseConv2d {
            act: None,
            ..self.clone()
        };
        let (x, w) = (input(ctx, 0)?, input(ctx, 1)?);
        let (input_shape, weight_shape) = (shape_of::<4>(ctx, x)?, shape_of::<3>(ctx, w)?);
        let dz = through_act(ctx, self.act, dy, unfused.clone())?;
        let dx = ctx.builder.node1(
            &format!("{}/grad_input", ctx.node),
            DepthwiseConv2dGradInput {
                conv: unfused.clone(),
                input_shape,
            },
            &[dz, w],
        )?;
        let dw = ctx.builder.node1(
            &format!("{}/grad_weight", ctx.node),
            DepthwiseConv2dGradWeight {
                conv: unfused,
                weight_shape,
            },
            &[x, dz],
        )?;
        let mut grads = vec![Some(dx), Some(dw)];
        if ctx.inputs.len() > 2 {
            grads.push(Some(bias_grad(ctx, dz)?));
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{GradCheck, check_rule};

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(41);
        for case in DepthwiseConv2d::cases(&mut rng).unwrap() {
            let cfg = match &case.op {
                crate::ops::Op::DepthwiseConv2d(c) if c.act.is_some() => GradCheck {
                    eps: 1e-3,
                    tol: 1e-2,
                },
                _ => GradCheck::default(),
            };
            let wrt: Vec<usize> = (0..case.inputs.len()).collect();
            let err = check_rule(&case.op, &case.inputs, &wrt, cfg, &mut rng)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
        // A smooth fused activation (recomputes the pre-activation) with a multiplier.
        let op = DepthwiseConv2d {
            strides: [1, 2],
            act: Some(crate::ops::activation::ActivationKind::Tanh),
            ..Default::default()
        };
        let inputs = vec![
            random_f32(&mut rng, &[2, 4, 5, 2]).unwrap(),
            random_f32(&mut rng, &[2, 3, 6]).unwrap(),
            random_f32(&mut rng, &[6]).unwrap(),
        ];
        let err = check_rule(
            &op.into(),
            &inputs,
            &[0, 1, 2],
            GradCheck::default(),
            &mut rng,
        )
        .unwrap();
        println!("depthwise_conv2d tanh multiplier3: worst rel err {err:.2e}");
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = DepthwiseConv2d::default();
        let x = TensorFact::f32([1, 4, 4, 3]);
        for w in [vec![3, 3], vec![3, 3, 4], vec![3, 3, 0], vec![5, 5, 3]] {
            assert!(op.infer(&[&x, &TensorFact::f32(w)]).is_err());
        }
        assert!(
            op.infer(&[&TensorFact::f32([4, 4, 3]), &TensorFact::f32([3, 3, 3])])
                .is_err()
        );
        assert!(op.infer(&[&x]).is_err());
        let bad_bias = TensorFact::f32([5]);
        assert!(
            op.infer(&[&x, &TensorFact::f32([3, 3, 6]), &bad_bias])
                .is_err()
        );
        let out = op.infer(&[&x, &TensorFact::f32([3, 3, 6])]).unwrap();
        assert_eq!(out[0].shape, [1, 2, 2, 6]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        // x [1, 2, 2, 1] = 1..4, w [2, 2, 2]: channel 0 all ones, channel 1 all twos.
        let x = Tensor::from_vec(&[1, 2, 2, 1], vec![1f32, 2., 3., 4.]).unwrap();
        let w = Tensor::from_vec(&[2, 2, 2], vec![1f32, 2., 1., 2., 1., 2., 1., 2.]).unwrap();
        let b = Tensor::from_vec(&[2], vec![0.5f32, -1.0]).unwrap();
        let y = DepthwiseConv2d::default().eval_ref(&[&x, &w, &b]).unwrap();
        assert_eq!(y[0].dims(), [1, 1, 1, 2]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![10.5, 19.0]);
    }

    #[test]
    fn flops_count_multiply_adds_twice() {
        let (x, w) = (TensorFact::f32([1, 4, 4, 3]), TensorFact::f32([3, 3, 6]));
        // Output [1, 2, 2, 6], 9 taps each.
        assert_eq!(DepthwiseConv2d::default().flops(&[&x, &w]), 2 * 24 * 9);
    }
}
