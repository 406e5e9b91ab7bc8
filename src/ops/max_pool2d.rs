//! `max_pool2d`: 2-D max pooling over NHWC activations, per channel, with window, stride,
//! dilation and explicit (possibly asymmetric) or SAME padding. Padding cells never win, and
//! padding so large that a window reads only padding is refused.

use super::conv2d::{MAX_WINDOW, Padding};
use super::grad_util::{input, output_grad};
use super::max_pool2d_grad::MaxPool2dGrad;
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, input_f32, ints_attr, random_f32, tensor_f32,
};
use crate::backend::gpu::kernels::pool2d as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::max_pool2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// 2-D max pooling.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxPool2d {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
    /// Padding.
    pub padding: Padding,
}

impl Default for MaxPool2d {
    fn default() -> Self {
        MaxPool2d {
            kernel: [2, 2],
            strides: [2, 2],
            dilations: [1, 1],
            padding: Padding::Explicit(Padding2d::ZERO),
        }
    }
}

impl MaxPool2d {
    /// Kernel parameters for input `x` `[n, h, w, c]`.
    pub fn params(&self, x: &[usize]) -> std::result::Result<reference::MaxPool2dParams, String> {
        let &[n, h, w, c] = x else {
            return Err(format!("expects x rank 4 (NHWC), got {x:?}"));
        };
        let p = reference::MaxPool2dParams {
            n,
            h,
            w,
            c,
            kh: self.kernel[0],
            kw: self.kernel[1],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dilation_h: self.dilations[0],
            dilation_w: self.dilations[1],
            padding: self
                .padding
                .resolve([h, w], self.kernel, self.strides, self.dilations),
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

/// Reads and checks the `kernel`, `strides` and `dilations` attributes of a pooling op.
pub(crate) fn window_attrs(attrs: &Attrs, names: &[&str]) -> Result<Vec<[usize; 2]>> {
    names
        .iter()
        .map(|&name| {
            let v = attrs.usizes::<2>(name, MAX_WINDOW)?;
            if v.contains(&0) {
                return Err(attrs.err(name, "must be positive"));
            }
            Ok(v)
        })
        .collect()
}

impl OpDef for MaxPool2d {
    const NAME: &'static str = "max_pool2d";

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
        reference::max_pool2d(p, x, &mut y)?;
        Ok(vec![tensor_f32(&[p.n, p.out_h()?, p.out_w()?, p.c], y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let p = self
            .params(inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; p.y_len()?];
        spore_kernels_cpu::pool2d::max_pool2d(p, x, &mut y, threads)?;
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
            pool: gpu_kernel::Pool::Max(p),
            knobs: gpu_kernel::Knobs::default(),
        };
        gpu_kernel::record::<f32>(gpu, rec, x.buffer, y.buffer, &pool)
    }

    fn attrs(&self) -> Attrs {
        let a = Attrs::new(Self::NAME)
            .with("kernel", ints_attr(&self.kernel))
            .with("strides", ints_attr(&self.strides))
            .with("dilations", ints_attr(&self.dilations));
        self.padding.put(a)
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let v = window_attrs(attrs, &["kernel", "strides", "dilations"])?;
        Ok(MaxPool2d {
            kernel: v[0],
            strides: v[1],
            dilations: v[2],
            padding: Padding::get(attrs)?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, op): the classic 2x2/2, overlapping 3x3/2 SAME on ragged sizes, dilation 2
        // with asymmetric padding, a non-square window.
        let configs: Vec<(&str, [usize; 4], MaxPool2d)> = vec![
            ("k2s2", [2, 6, 4, 3], MaxPool2d::default()),
            (
                "k3s2_same",
                [1, 7, 5, 2],
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
            (
                "k3x1_s1",
                [2, 5, 3, 4],
                MaxPool2d {
                    kernel: [3, 1],
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
        // One comparison per window tap.
        self.infer(inputs).map_or(0, |o| {
            (o[0].numel() as u64).saturating_mul((self.kernel[0] * self.kernel[1]) as u64)
        })
    }

    /// `dx = max_pool2d_grad(x, dy)`: each `dy` cell to its window's winner.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None]);
        };
        let x = input(ctx, 0)?;
        let dx = ctx.builder.node1(
            &format!("{}/grad_input", ctx.node),
            MaxPool2dGrad { pool: self.clone() },
            &[x, dy],
        )?;
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(61);
        for case in MaxPool2d::cases(&mut rng).unwrap() {
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &[0],
                crate::ops::gradcheck::GradCheck {
                    eps: 1e-3,
                    tol: 1e-2,
                },
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = MaxPool2d::default();
        assert!(op.infer(&[&TensorFact::f32([4, 4, 3])]).is_err());
        assert!(op.infer(&[&TensorFact::f32([1, 1, 4, 3])]).is_err());
        assert!(op.infer(&[&TensorFact::f32([1, 0, 4, 3])]).is_err());
        assert!(op.infer(&[]).is_err());
        let huge_pad = MaxPool2d {
            padding: Padding::Explicit(Padding2d::new(3, 0, 0, 0)),
            ..Default::default()
        };
        assert!(huge_pad.infer(&[&TensorFact::f32([1, 4, 4, 1])]).is_err());
        assert_eq!(
            op.infer(&[&TensorFact::f32([1, 5, 4, 3])]).unwrap()[0].shape,
            [1, 2, 2, 3]
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        let x = Tensor::from_vec(&[1, 2, 4, 1], vec![1f32, -2., 3., 0., -5., 4., 2., 7.]).unwrap();
        let y = MaxPool2d::default().eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![4., 7.]);
    }
}
