//! `avg_pool2d`: 2-D average pooling over NHWC activations, per channel, with window, stride
//! and explicit (possibly asymmetric) or SAME padding. `count_include_pad` divides by the
//! whole window (padding counts as zeros, PyTorch's default) instead of by its real cells
//! (TF / ONNX); without it a window of padding alone is refused.

use super::avg_pool2d_grad::AvgPool2dGrad;
use super::conv2d::Padding;
use super::grad_util::{input, output_grad, shape_of};
use super::max_pool2d::window_attrs;
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, input_f32, ints_attr, random_f32, tensor_f32,
};
use crate::backend::gpu::kernels::pool2d as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::avg_pool2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// 2-D average pooling.
#[derive(Debug, Clone, PartialEq)]
pub struct AvgPool2d {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Divide by `kh * kw` rather than by the number of real cells.
    pub count_include_pad: bool,
}

impl Default for AvgPool2d {
    fn default() -> Self {
        AvgPool2d {
            kernel: [2, 2],
            strides: [2, 2],
            padding: Padding::Explicit(Padding2d::ZERO),
            count_include_pad: false,
        }
    }
}

impl AvgPool2d {
    /// Kernel parameters for input `x` `[n, h, w, c]`.
    pub fn params(&self, x: &[usize]) -> std::result::Result<reference::AvgPool2dParams, String> {
        let &[n, h, w, c] = x else {
            return Err(format!("expects x rank 4 (NHWC), got {x:?}"));
        };
        let p = reference::AvgPool2dParams {
            n,
            h,
            w,
            c,
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            padding: self
                .padding
                .resolve([h, w], self.kernel, self.strides, [1, 1]),
            count_include_pad: self.count_include_pad,
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

impl OpDef for AvgPool2d {
    const NAME: &'static str = "avg_pool2d";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        let p = self.params(&inputs[0].shape)?;
        let (oh, ow) = (
            p.out_h().map_err(|e| e.to_string())?,
            p.out_w().map_err(|e| e.to_string())?,
        );
        Ok(vec![TensorFact::f32([p.n, oh, ow, p.c])])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        reference::avg_pool2d(p, x, &mut y)?;
        Ok(vec![tensor_f32(&[p.n, p.out_h()?, p.out_w()?, p.c], y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        spore_kernels_cpu::pool2d::avg_pool2d(p, x, &mut y, threads)?;
        Ok(vec![tensor_f32(&[p.n, p.out_h()?, p.out_w()?, p.c], y)?])
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
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let p = self
            .params(x.dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let pool = gpu_kernel::Pool2d {
            pool: gpu_kernel::Pool::Avg(p),
            knobs: gpu_kernel::Knobs::default(),
        };
        gpu_kernel::record::<f32>(gpu, rec, x.buffer, y.buffer, &pool)
    }

    fn attrs(&self) -> Attrs {
        let a = Attrs::new(Self::NAME)
            .with("kernel", ints_attr(&self.kernel))
            .with("strides", ints_attr(&self.strides))
            .with("count_include_pad", AttrValue::Bool(self.count_include_pad));
        self.padding.put(a)
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let v = window_attrs(attrs, &["kernel", "strides"])?;
        Ok(AvgPool2d {
            kernel: v[0],
            strides: v[1],
            padding: Padding::get(attrs)?,
            count_include_pad: attrs.bool("count_include_pad")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, op): the classic 2x2/2, 3x3/2 SAME counting real cells only, asymmetric
        // padding counted as zeros, a non-square window at stride 1.
        let configs: Vec<(&str, [usize; 4], AvgPool2d)> = vec![
            ("k2s2", [2, 6, 4, 3], AvgPool2d::default()),
            (
                "k3s2_same",
                [1, 7, 5, 2],
                AvgPool2d {
                    kernel: [3, 3],
                    padding: Padding::Same,
                    ..Default::default()
                },
            ),
            (
                "asym_pad_include_pad",
                [1, 5, 6, 3],
                AvgPool2d {
                    kernel: [3, 2],
                    strides: [2, 1],
                    padding: Padding::Explicit(Padding2d::new(1, 0, 0, 1)),
                    count_include_pad: true,
                },
            ),
            (
                "k1x3_s1",
                [2, 3, 5, 4],
                AvgPool2d {
                    kernel: [1, 3],
                    strides: [1, 1],
                    ..Default::default()
                },
            ),
        ];
        configs
            .into_iter()
            .map(|(name, x, op)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: op.into(),
                    inputs: vec![random_f32(rng, &x)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // One addition per window tap.
        self.infer(inputs).map_or(0, |o| {
            (o[0].numel() as u64).saturating_mul((self.kernel[0] * self.kernel[1]) as u64)
        })
    }

    /// `dx = avg_pool2d_grad(dy)` for `x`'s shape: each `dy` cell spread over its window.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None]);
        };
        let input_shape = shape_of::<4>(ctx, input(ctx, 0)?)?;
        let dx = ctx.builder.node1(
            &format!("{}/grad_input", ctx.node),
            AvgPool2dGrad {
                pool: self.clone(),
                input_shape,
            },
            &[dy],
        )?;
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(62);
        for case in AvgPool2d::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &[0],
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = AvgPool2d::default();
        assert!(op.infer(&[&TensorFact::f32([4, 4])]).is_err());
        assert!(op.infer(&[&TensorFact::f32([1, 4, 1, 3])]).is_err());
        assert!(
            op.infer(&[&TensorFact::new(crate::DType::I32, [1, 4, 4, 3])])
                .is_err()
        );
        let pad_only = AvgPool2d {
            padding: Padding::Explicit(Padding2d::new(2, 0, 0, 0)),
            ..Default::default()
        };
        assert!(pad_only.infer(&[&TensorFact::f32([1, 4, 4, 1])]).is_err());
        let counted = AvgPool2d {
            count_include_pad: true,
            ..pad_only
        };
        assert!(counted.infer(&[&TensorFact::f32([1, 4, 4, 1])]).is_ok());
    }

    #[test]
    fn eval_matches_hand_computed() {
        // A 2x2 window, padding 1 on the left: real-cell mean vs. whole-window mean.
        let x = Tensor::from_vec(&[1, 2, 1, 1], vec![2f32, 6.]).unwrap();
        let mut op = AvgPool2d {
            padding: Padding::Explicit(Padding2d::new(0, 0, 1, 0)),
            ..Default::default()
        };
        assert_eq!(
            op.eval_ref(&[&x]).unwrap()[0].to_vec::<f32>().unwrap(),
            vec![4.]
        );
        op.count_include_pad = true;
        assert_eq!(
            op.eval_ref(&[&x]).unwrap()[0].to_vec::<f32>().unwrap(),
            vec![2.]
        );
    }
}
