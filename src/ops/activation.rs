//! `activation`: elementwise relu, relu6, leaky relu, sigmoid, tanh, hard-swish,
//! hard-sigmoid and gelu, one op with the function as an attribute. The same
//! [`ActivationKind`] is the fused-activation attribute of conv, depthwise and matmul.

use super::{
    GpuValue, GradContext, OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32,
    tensor_f32,
};
use crate::backend::gpu::kernels::unary;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::activation as reference;
use spore_kernels_cpu::rng::Rng;

/// The activation functions (re-exported from the reference kernels).
pub type ActivationKind = reference::Activation;

/// The snake_case name of an activation (`leaky_relu`'s slope is a separate attribute).
pub fn kind_name(kind: ActivationKind) -> &'static str {
    match kind {
        ActivationKind::Relu => "relu",
        ActivationKind::Relu6 => "relu6",
        ActivationKind::LeakyRelu(_) => "leaky_relu",
        ActivationKind::Sigmoid => "sigmoid",
        ActivationKind::Tanh => "tanh",
        ActivationKind::HardSwish => "hard_swish",
        ActivationKind::HardSigmoid => "hard_sigmoid",
        ActivationKind::Gelu => "gelu",
        ActivationKind::GeluTanh => "gelu_tanh",
    }
}

/// Every activation, with a representative leaky slope.
pub const ALL_KINDS: [ActivationKind; 9] = [
    ActivationKind::Relu,
    ActivationKind::Relu6,
    ActivationKind::LeakyRelu(0.1),
    ActivationKind::Sigmoid,
    ActivationKind::Tanh,
    ActivationKind::HardSwish,
    ActivationKind::HardSigmoid,
    ActivationKind::Gelu,
    ActivationKind::GeluTanh,
];

/// Writes an optional activation as attributes `prefix` (name or `none`) and `prefix_alpha`.
pub fn put_kind(attrs: Attrs, prefix: &str, kind: Option<ActivationKind>) -> Attrs {
    let name = kind.map_or("none", kind_name);
    let alpha = match kind {
        Some(ActivationKind::LeakyRelu(a)) => a,
        _ => 0.0,
    };
    attrs
        .with(prefix, AttrValue::Str(name.to_string()))
        .with(&format!("{prefix}_alpha"), AttrValue::Float(alpha))
}

/// Reads an optional activation written by [`put_kind`].
pub fn get_kind(attrs: &Attrs, prefix: &str) -> Result<Option<ActivationKind>> {
    let name = attrs.str(prefix)?;
    let alpha_name = format!("{prefix}_alpha");
    Ok(Some(match name {
        "none" => return Ok(None),
        "relu" => ActivationKind::Relu,
        "relu6" => ActivationKind::Relu6,
        "leaky_relu" => {
            let a = attrs.float(&alpha_name)?;
            if !a.is_finite() {
                return Err(attrs.err(&alpha_name, format!("slope {a} is not finite")));
            }
            ActivationKind::LeakyRelu(a)
        }
        "sigmoid" => ActivationKind::Sigmoid,
        "tanh" => ActivationKind::Tanh,
        "hard_swish" => ActivationKind::HardSwish,
        "hard_sigmoid" => ActivationKind::HardSigmoid,
        "gelu" => ActivationKind::Gelu,
        "gelu_tanh" => ActivationKind::GeluTanh,
        other => return Err(attrs.err(prefix, format!("unknown activation `{other}`"))),
    }))
}

/// Applies `kind` in place (the fused-activation path of conv and matmul).
pub fn apply_in_place(kind: ActivationKind, data: &mut [f32]) -> Result<()> {
    let x = data.to_vec();
    reference::activation(kind, &x, data)?;
    Ok(())
}

/// Elementwise activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    /// The function.
    pub kind: ActivationKind,
}

impl OpDef for Activation {
    const NAME: &'static str = "activation";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let mut y = vec![0f32; x.len()];
        reference::activation(self.kind, x, &mut y)?;
        Ok(vec![tensor_f32(inputs[0].dims(), y)?])
    }

    fn attrs(&self) -> Attrs {
        put_kind(Attrs::new(Self::NAME), "kind", Some(self.kind))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        match get_kind(attrs, "kind")? {
            Some(kind) => Ok(Activation { kind }),
            None => Err(attrs.err("kind", "`none` is not an activation op")),
        }
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        ALL_KINDS
            .iter()
            .map(|&kind| {
                Ok(OpCase {
                    name: format!("{}/{}", Self::NAME, kind_name(kind)),
                    op: Activation { kind }.into(),
                    inputs: vec![random_f32(rng, &[2, 3, 5, 7])?.map_f32(|v| v * 8.0)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        inputs.first().map_or(0, |f| f.numel() as u64)
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        let mut y = vec![0f32; x.len()];
        spore_kernels_cpu::activation::activation(self.kind, x, &mut y, threads)?;
        Ok(vec![tensor_f32(inputs[0].dims(), y)?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        all_f32(inputs)
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let (Some(x), Some(y)) = (inputs.first(), outputs.first()) else {
            return Err(exec_err(Self::NAME, "expects one input and one output"));
        };
        let p = unary::Unary {
            len: x.numel(),
            act: self.kind,
            knobs: unary::Knobs::default(),
        };
        unary::record::<f32>(gpu, rec, x.buffer, y.buffer, &p)
    }

    /// `dx = dy * act'(x)`, one `activation_grad` node reading the forward INPUT `x`.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let (Some(dy), Some(&x)) = (
            ctx.output_grads.first().copied().flatten(),
            ctx.inputs.first(),
        ) else {
            return Ok(vec![None]);
        };
        let dx = ctx.builder.node1(
            &format!("{}/grad_x", ctx.node),
            super::activation_grad::ActivationGrad { kind: self.kind },
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
        let mut rng = Rng::new(21);
        for case in Activation::cases(&mut rng).unwrap() {
            // Kinks (relu / leaky at 0, relu6 at 0 and 6, hard_* at +-3): a small step, and
            // inputs moved off the kinks so no difference straddles one.
            let cfg = crate::ops::gradcheck::GradCheck {
                eps: 1e-3,
                tol: 1e-2,
            };
            let x = case.inputs[0]
                .clone()
                .map_f32(|v| {
                    let near = [-3.0f32, 0.0, 3.0, 6.0]
                        .iter()
                        .any(|k| (v - k).abs() < 0.01);
                    if near { v + 0.05 } else { v }
                })
                .unwrap();
            let err = crate::ops::gradcheck::check_rule(&case.op, &[x], &[0], cfg, &mut rng)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }
}
