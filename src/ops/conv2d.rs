//! `conv2d`: 2-D convolution, NHWC activations and OHWI weights, with stride, explicit
//! (possibly asymmetric) or SAME padding, dilation, groups, optional bias, and an optional
//! fused activation (set by `plan::fuse`, read by every backend).

use super::activation::{ActivationKind, apply_in_place, get_kind, put_kind};
use super::conv2d_grad_input::Conv2dGradInput;
use super::conv2d_grad_weight::Conv2dGradWeight;
use super::grad_util::{bias_grad, input, output_grad, shape_of, through_act};
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, check_bias, input_f32, optional_input_f32,
    random_f32, tensor_f32,
};
use crate::backend::gpu::kernels::conv2d as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use crate::tune::TuneSpec;
use spore_kernels_cpu::reference::conv2d as reference;
use spore_kernels_cpu::reference::window::Padding2d;
use spore_kernels_cpu::rng::Rng;

/// How a window op pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Explicit cells on each side.
    Explicit(Padding2d),
    /// TensorFlow SAME: output = ceil(input / stride), extra cell at the end.
    Same,
}

impl Padding {
    /// The explicit padding for an input of `hw` and a window of `k`, `stride`, `dilation`.
    pub fn resolve(
        self,
        hw: [usize; 2],
        k: [usize; 2],
        stride: [usize; 2],
        dil: [usize; 2],
    ) -> Padding2d {
        match self {
            Padding::Explicit(p) => p,
            Padding::Same => Padding2d::same(
                (hw[0], hw[1]),
                (k[0], k[1]),
                (stride[0], stride[1]),
                (dil[0], dil[1]),
            ),
        }
    }

    /// Writes `padding` (`same` / `explicit`) and `pads` `[top, bottom, left, right]`.
    pub fn put(self, attrs: Attrs) -> Attrs {
        let (mode, p) = match self {
            Padding::Explicit(p) => ("explicit", p),
            Padding::Same => ("same", Padding2d::ZERO),
        };
        attrs.with("padding", AttrValue::Str(mode.into())).with(
            "pads",
            AttrValue::Ints(vec![
                p.top as i64,
                p.bottom as i64,
                p.left as i64,
                p.right as i64,
            ]),
        )
    }

    /// Reads what [`Padding::put`] wrote.
    pub fn get(attrs: &Attrs) -> Result<Padding> {
        match attrs.str("padding")? {
            "same" => Ok(Padding::Same),
            "explicit" => {
                let [t, b, l, r] = attrs.usizes::<4>("pads", MAX_WINDOW)?;
                Ok(Padding::Explicit(Padding2d::new(t, b, l, r)))
            }
            other => Err(attrs.err("padding", format!("unknown padding mode `{other}`"))),
        }
    }
}

/// Largest stride, dilation, kernel or pad an attribute may hold: far beyond any real model,
/// small enough that products cannot overflow.
pub const MAX_WINDOW: usize = 1 << 16;

/// A conformance case: name, x shape, w shape, op, with bias.
type CaseConfig = (&'static str, [usize; 4], [usize; 4], Conv2d, bool);

/// 2-D convolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Channel groups (1 = dense convolution).
    pub groups: usize,
    /// Fused activation applied to the output.
    pub act: Option<ActivationKind>,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            strides: [1, 1],
            dilations: [1, 1],
            padding: Padding::Explicit(Padding2d::ZERO),
            groups: 1,
            act: None,
        }
    }
}

impl Conv2d {
    /// The GPU kernel's description of this convolution on shape `p`.
    fn gpu_conv(&self, p: reference::Conv2dParams) -> gpu_kernel::Conv2d {
        gpu_kernel::Conv2d {
            act: self.act,
            ..gpu_kernel::Conv2d::new(p)
        }
    }

    /// Kernel parameters for input `x` `[n, h, w, c]` and weight `[o, kh, kw, c/g]`.
    pub fn params(
        &self,
        x: &[usize],
        w: &[usize],
    ) -> std::result::Result<reference::Conv2dParams, String> {
        if x.len() != 4 || w.len() != 4 {
            return Err(format!(
                "expects x rank 4 (NHWC) and w rank 4 (OHWI), got {x:?} and {w:?}"
            ));
        }
        if self.groups == 0 || w[3].checked_mul(self.groups) != Some(x[3]) {
            return Err(format!(
                "weight expects {} x {} input channels, x has {}",
                w[3], self.groups, x[3]
            ));
        }
        let p = reference::Conv2dParams {
            n: x[0],
            h: x[1],
            w: x[2],
            c_in: x[3],
            c_out: w[0],
            kh: w[1],
            kw: w[2],
            stride_h: self.strides[0],
            stride_w: self.strides[1],
            dilation_h: self.dilations[0],
            dilation_w: self.dilations[1],
            padding: self
                .padding
                .resolve([x[1], x[2]], [w[1], w[2]], self.strides, self.dilations),
            groups: self.groups,
        };
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }
}

impl OpDef for Conv2d {
    const NAME: &'static str = "conv2d";

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
            .map_err(|reason| crate::Error::OpExecution {
                op: Self::NAME.into(),
                node: String::new(),
                reason,
            })?;
        let mut y = vec![0f32; p.y_len()?];
        reference::conv2d(p, x, w, bias, &mut y)?;
        if let Some(act) = self.act {
            apply_in_place(act, &mut y)?;
        }
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
        spore_kernels_cpu::conv2d_fast(&p, x, w, bias, self.act, threads, &mut y)?;
        Ok(vec![tensor_f32(
            &[p.n, p.out_h()?, p.out_w()?, p.c_out],
            y,
        )?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        super::gpu_f32_fits(self, inputs)?;
        let p = self.params(&inputs[0].shape, &inputs[1].shape)?;
        self.gpu_conv(p).validate().map_err(|e| e.to_string())?;
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
        let bias = inputs.get(2).map(|b| b.buffer);
        let mut conv = self.gpu_conv(p);
        conv.variant = crate::tune::choose(
            gpu,
            || Some(gpu_kernel::tune_spec(&p, gpu)),
            conv.variant,
            gpu_kernel::Variant::parse,
            |v| {
                gpu_kernel::Conv2d {
                    variant: *v,
                    ..conv
                }
                .validate()
                .is_ok()
            },
        );
        gpu_kernel::record::<f32>(gpu, rec, x.buffer, w.buffer, bias, y.buffer, &conv)
    }

    fn gpu_tune(&self, inputs: &[&TensorFact], gpu: &GpuContext) -> Option<TuneSpec> {
        let (x, w) = (inputs.first()?, inputs.get(1)?);
        let p = self.params(&x.shape, &w.shape).ok()?;
        Some(gpu_kernel::tune_spec(&p, gpu))
    }

    fn attrs(&self) -> Attrs {
        let a = Attrs::new(Self::NAME)
            .with(
                "strides",
                AttrValue::Ints(self.strides.iter().map(|&v| v as i64).collect()),
            )
            .with(
                "dilations",
                AttrValue::Ints(self.dilations.iter().map(|&v| v as i64).collect()),
            )
            .with("groups", AttrValue::Int(self.groups as i64));
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
        let groups = attrs.usize("groups", MAX_WINDOW)?;
        if groups == 0 {
            return Err(attrs.err("groups", "must be positive"));
        }
        Ok(Conv2d {
            strides,
            dilations,
            padding: Padding::get(attrs)?,
            groups,
            act: get_kind(attrs, "act")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, w, op, bias): ragged sizes, stride 2, asymmetric and SAME padding,
        // dilation 2, groups, a fused activation.
        let configs: Vec<CaseConfig> = vec![
            ("basic", [1, 5, 5, 3], [4, 3, 3, 3], Conv2d::default(), true),
            (
                "stride2_asym_pad",
                [2, 7, 6, 2],
                [3, 3, 2, 2],
                Conv2d {
                    strides: [2, 2],
                    padding: Padding::Explicit(Padding2d::new(1, 0, 2, 1)),
                    ..Default::default()
                },
                true,
            ),
            (
                "same_dilation2",
                [1, 7, 7, 3],
                [5, 3, 3, 3],
                Conv2d {
                    dilations: [2, 2],
                    padding: Padding::Same,
                    ..Default::default()
                },
                false,
            ),
            (
                "groups3_relu",
                [1, 6, 5, 6],
                [9, 3, 3, 2],
                Conv2d {
                    groups: 3,
                    padding: Padding::Same,
                    act: Some(ActivationKind::Relu),
                    ..Default::default()
                },
                true,
            ),
            (
                "pointwise_relu6",
                [2, 4, 3, 5],
                [7, 1, 1, 5],
                Conv2d {
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
                    inputs.push(random_f32(rng, &[w[0]])?);
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
        match (inputs.first(), inputs.get(1), self.infer(inputs)) {
            (Some(_), Some(w), Ok(out)) => {
                let macs_per_out = (w.shape[1] * w.shape[2] * w.shape[3]) as u64;
                2 * out[0].numel() as u64 * macs_per_out
            }
            _ => 0,
        }
    }

    /// Through the fused activation (if any) to `dz`, then `dx = conv2d_grad_input(dz, w)`,
    /// `dw = conv2d_grad_weight(x, dz)` and `db = reduce_sum(dz)` over `n, h, w`.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None; ctx.inputs.len()]);
        };
        let unfused = Conv2d {
            act: None,
            ..self.clone()
        };
        let (x, w) = (input(ctx, 0)?, input(ctx, 1)?);
        let (input_shape, weight_shape) = (shape_of::<4>(ctx, x)?, shape_of::<4>(ctx, w)?);
        let dz = through_act(ctx, self.act, dy, unfused.clone())?;
        let dx = ctx.builder.node1(
            &format!("{}/grad_input", ctx.node),
            Conv2dGradInput {
                conv: unfused.clone(),
                input_shape,
            },
            &[dz, w],
        )?;
        let dw = ctx.builder.node1(
            &format!("{}/grad_weight", ctx.node),
            Conv2dGradWeight {
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
        let mut rng = Rng::new(31);
        for case in Conv2d::cases(&mut rng).unwrap() {
            // Fused ReLU-family kinks: a smaller step keeps the differences off them.
            let cfg = match &case.op {
                crate::ops::Op::Conv2d(c) if c.act.is_some() => GradCheck {
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
    }

    #[test]
    fn grad_rule_handles_every_activation_and_a_missing_dy() {
        let mut rng = Rng::new(32);
        for kind in super::super::activation::ALL_KINDS {
            let op = Conv2d {
                strides: [2, 1],
                padding: Padding::Same,
                act: Some(kind),
                ..Default::default()
            };
            let inputs = vec![
                random_f32(&mut rng, &[1, 5, 4, 3]).unwrap(),
                random_f32(&mut rng, &[2, 3, 2, 3]).unwrap(),
                random_f32(&mut rng, &[2]).unwrap(),
            ];
            let cfg = GradCheck {
                eps: 1e-3,
                tol: 1e-2,
            };
            let err = check_rule(&op.clone().into(), &inputs, &[0, 1, 2], cfg, &mut rng)
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            println!("conv2d act {kind:?}: worst rel err {err:.2e}");
        }
        // No gradient reaches the output: none flows to the inputs, and no node is added.
        let mut b = crate::graph::GraphBuilder::new();
        let x = b.input("x", crate::DType::F32, &[1, 3, 3, 2]).unwrap();
        let w = b.input("w", crate::DType::F32, &[1, 1, 1, 2]).unwrap();
        let y = b.node("c", Conv2d::default(), &[x, w]).unwrap();
        let mut ctx = GradContext {
            builder: &mut b,
            node: "c",
            inputs: &[x, w],
            outputs: &y,
            output_grads: &[None],
        };
        assert_eq!(Conv2d::default().grad(&mut ctx).unwrap(), vec![None, None]);
    }
}
