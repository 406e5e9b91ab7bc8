//! `binary`: elementwise add, sub, mul, div, max and min with NumPy broadcasting.

use super::{OpCase, OpDef, all_f32, arity, input_f32, random_f32, tensor_f32};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::binary as reference;
use spore_kernels_cpu::rng::Rng;

/// The binary functions (re-exported from the reference kernels).
pub type BinaryKind = reference::BinaryOp;

const KINDS: [(BinaryKind, &str); 6] = [
    (BinaryKind::Add, "add"),
    (BinaryKind::Sub, "sub"),
    (BinaryKind::Mul, "mul"),
    (BinaryKind::Div, "div"),
    (BinaryKind::Max, "max"),
    (BinaryKind::Min, "min"),
];

/// The snake_case name of a binary function.
pub fn kind_name(kind: BinaryKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("?", |(_, n)| n)
}

/// Elementwise binary op with broadcasting.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// The function.
    pub kind: BinaryKind,
}

impl OpDef for Binary {
    const NAME: &'static str = "binary";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        let shape = reference::broadcast_shape(&inputs[0].shape, &inputs[1].shape)
            .map_err(|e| e.to_string())?;
        Ok(vec![TensorFact::f32(shape)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let a = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let (ad, bd) = (inputs[0].dims(), inputs[1].dims());
        let shape = reference::broadcast_shape(ad, bd)?;
        let mut y = vec![0f32; crate::shape::numel(&shape)?];
        reference::binary(self.kind, a, ad, b, bd, &mut y)?;
        Ok(vec![tensor_f32(&shape, y)?])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("kind", AttrValue::Str(kind_name(self.kind).to_string()))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let name = attrs.str("kind")?;
        KINDS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(kind, _)| Binary { kind: *kind })
            .ok_or_else(|| attrs.err("kind", format!("unknown binary op `{name}`")))
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let shapes: [(&[usize], &[usize]); 4] = [
            (&[2, 3, 4], &[2, 3, 4]),
            (&[3, 1, 4], &[2, 1]),
            (&[2, 5], &[]),
            (&[1, 3], &[4, 1]),
        ];
        let mut cases = Vec::new();
        for (kind, name) in KINDS {
            for (i, (sa, sb)) in shapes.iter().enumerate() {
                let a = random_f32(rng, sa)?;
                // Keep divisors away from zero.
                let b =
                    random_f32(rng, sb)?.map_f32(|v| if v >= 0.0 { v + 0.5 } else { v - 0.5 })?;
                cases.push(OpCase {
                    name: format!("{}/{name}_{i}", Self::NAME),
                    op: Binary { kind }.into(),
                    inputs: vec![a, b],
                });
            }
        }
        Ok(cases)
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        self.infer(inputs)
            .ok()
            .and_then(|o| o.first().map(|f| f.numel() as u64))
            .unwrap_or(0)
    }
}
