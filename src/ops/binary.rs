//! `binary`: elementwise add, sub, mul, div, max and min with NumPy broadcasting.

use super::{GpuValue, gpu_arg};
use super::{GradContext, OpCase, OpDef, all_f32, arity, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels::binary as gpu_binary;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use crate::tune::TuneSpec;
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

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let shape = super::out_shape(self, inputs)?;
        let a = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let mut y = vec![0f32; crate::shape::numel(&shape)?];
        spore_kernels_cpu::binary::binary(
            self.kind,
            a,
            inputs[0].dims(),
            b,
            inputs[1].dims(),
            &mut y,
            threads,
        )?;
        Ok(vec![tensor_f32(&shape, y)?])
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
        let a = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let b = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        // An empty broadcast result has nothing to compute (the kernel refuses zero sizes).
        if y.numel() == 0 {
            return Ok(());
        }
        let knobs = crate::tune::choose(
            gpu,
            || Some(gpu_binary::tune_spec(y.numel(), a.dims() != b.dims())),
            gpu_binary::Knobs::default(),
            gpu_binary::Knobs::parse,
            |k| k.wg.is_power_of_two() && k.wg <= 256,
        );
        let p = gpu_binary::Binary {
            op: self.kind,
            a_shape: a.dims().to_vec(),
            b_shape: b.dims().to_vec(),
            knobs,
        };
        gpu_binary::record::<f32>(gpu, rec, a.buffer, b.buffer, y.buffer, &p)
    }

    fn gpu_tune(&self, inputs: &[&TensorFact], _gpu: &GpuContext) -> Option<TuneSpec> {
        let (a, b) = (inputs.first()?, inputs.get(1)?);
        let out = self.infer(inputs).ok()?;
        let numel: usize = out.first()?.shape.iter().product();
        (numel > 0).then(|| gpu_binary::tune_spec(numel, a.shape != b.shape))
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

    /// `add`: `dy` summed back to each operand's shape (no new op; nothing at all when the
    /// shapes are equal). The others: one `binary_grad` node (it needs the operands and
    /// reduces broadcast axes itself) giving `[da, db]`.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let (Some(dy), &[a, b]) = (ctx.output_grads.first().copied().flatten(), ctx.inputs) else {
            return Ok(vec![None; ctx.inputs.len()]);
        };
        if self.kind == BinaryKind::Add {
            let mut grads = Vec::with_capacity(2);
            for (v, what) in [(a, "a"), (b, "b")] {
                let shape = ctx.builder.fact(v)?.shape.clone();
                let name = format!("{}/grad_{what}", ctx.node);
                grads.push(Some(super::binary_grad::sum_to_shape(
                    ctx.builder,
                    &name,
                    dy,
                    &shape,
                )?));
            }
            return Ok(grads);
        }
        let outs = ctx.builder.node(
            &format!("{}/grad", ctx.node),
            super::binary_grad::BinaryGrad { kind: self.kind },
            &[a, b, dy],
        )?;
        Ok(outs.into_iter().map(Some).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(41);
        let mut cases = Binary::cases(&mut rng).unwrap();
        // Broadcasting onto a rank-1 operand and a missing leading axis on `a`.
        for kind in [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Div] {
            cases.push(OpCase {
                name: format!("binary/{}_extra", kind_name(kind)),
                op: Binary { kind }.into(),
                inputs: vec![
                    random_f32(&mut rng, &[7]).unwrap(),
                    random_f32(&mut rng, &[3, 2, 7])
                        .unwrap()
                        .map_f32(|v| if v >= 0.0 { v + 0.5 } else { v - 0.5 })
                        .unwrap(),
                ],
            });
        }
        for case in cases {
            let crate::ops::Op::Binary(op) = &case.op else {
                unreachable!()
            };
            if op.kind == BinaryKind::Add && case.inputs[0].dims() == case.inputs[1].dims() {
                // Both gradients are `dy` itself, ONE value: check_rule lists graph outputs
                // by value and would drop the second, so check the wiring directly.
                let mut b = crate::graph::GraphBuilder::new();
                let dims = case.inputs[0].dims();
                let a = b.input("a", crate::tensor::DType::F32, dims).unwrap();
                let bb = b.input("b", crate::tensor::DType::F32, dims).unwrap();
                let y = b.node("fwd", case.op.clone(), &[a, bb]).unwrap();
                let dy = b.input("dy", crate::tensor::DType::F32, dims).unwrap();
                let mut ctx = GradContext {
                    builder: &mut b,
                    node: "fwd",
                    inputs: &[a, bb],
                    outputs: &y,
                    output_grads: &[Some(dy)],
                };
                let grads = op.grad(&mut ctx).unwrap();
                assert_eq!(grads, vec![Some(dy), Some(dy)], "{}", case.name);
                continue;
            }
            // max / min have a kink where the operands cross: a smaller step.
            let cfg = match op.kind {
                BinaryKind::Max | BinaryKind::Min => crate::ops::gradcheck::GradCheck {
                    eps: 1e-3,
                    tol: 1e-2,
                },
                _ => Default::default(),
            };
            let err =
                crate::ops::gradcheck::check_rule(&case.op, &case.inputs, &[0, 1], cfg, &mut rng)
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }
}
