//! `elementwise_chain`: a run of elementwise steps over same-shape tensors in ONE kernel, one
//! pass over memory instead of one per step. The planner's `fuse_elementwise` rule builds it
//! from chains of `activation` and same-shape `binary` nodes: ResNet's residual join
//! `relu(add(a, b))`, `mul(sigmoid(x), x)` (swish), `tanh(sub(a, b)) + c`, ...
//!
//! The accumulator starts as input 0 and each [`Step`] updates it: an activation, or a binary
//! function with input `k` (`acc op in[k]`, or `in[k] op acc` when reversed). Binary `max` /
//! `min` keep the left operand on ties, like `binary`. At most [`MAX_INPUTS`] inputs and
//! [`MAX_STEPS`] steps (the GPU kernel's bindings and uniform); every input has the output's
//! shape, and every input after the first is read by some step.
//!
//! The attribute `steps` is text, one step per comma: `relu`, `leaky_relu:0.1`, `add:1`,
//! `rsub:2` (reversed), ... Inference only: the op has no gradient rule, and the rule that
//! makes it never runs on training graphs.

use super::activation::{ActivationKind, kind_name as act_name};
use super::binary::BinaryKind;
use super::{GpuValue, OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32};
use crate::backend::gpu::kernels::elementwise_chain as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// Most inputs a chain reads (the GPU kernel's storage bindings).
pub const MAX_INPUTS: usize = 4;
/// Most steps in a chain (the GPU kernel's uniform program).
pub const MAX_STEPS: usize = 8;

/// One step of the chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// `acc = act(acc)`.
    Act(ActivationKind),
    /// `acc = acc op in[operand]`, or `in[operand] op acc` when `reversed`.
    Bin {
        /// The function.
        kind: BinaryKind,
        /// Which input is the other operand.
        operand: usize,
        /// Whether the accumulator is the right operand.
        reversed: bool,
    },
}

const BIN_NAMES: [(BinaryKind, &str); 6] = [
    (BinaryKind::Add, "add"),
    (BinaryKind::Sub, "sub"),
    (BinaryKind::Mul, "mul"),
    (BinaryKind::Div, "div"),
    (BinaryKind::Max, "max"),
    (BinaryKind::Min, "min"),
];

const ACTS: [ActivationKind; 9] = super::activation::ALL_KINDS;

impl Step {
    /// The step's text form (see the module docs).
    pub fn to_text(&self) -> String {
        match self {
            Step::Act(ActivationKind::LeakyRelu(a)) => format!("leaky_relu:{a}"),
            Step::Act(a) => act_name(*a).to_string(),
            Step::Bin {
                kind,
                operand,
                reversed,
            } => {
                let name = BIN_NAMES
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or("?", |(_, n)| n);
                format!("{}{name}:{operand}", if *reversed { "r" } else { "" })
            }
        }
    }

    /// Parses [`Step::to_text`].
    pub fn parse(s: &str) -> Option<Step> {
        let (head, arg) = match s.split_once(':') {
            Some((h, a)) => (h, Some(a)),
            None => (s, None),
        };
        if head == "leaky_relu" {
            let a: f64 = arg?.parse().ok()?;
            return a
                .is_finite()
                .then_some(Step::Act(ActivationKind::LeakyRelu(a)));
        }
        if let Some(a) = ACTS.iter().find(|a| act_name(**a) == head) {
            return arg.is_none().then_some(Step::Act(*a));
        }
        let (reversed, name) = match head.strip_prefix('r') {
            Some(rest) if BIN_NAMES.iter().any(|(_, n)| *n == rest) => (true, rest),
            _ => (false, head),
        };
        let kind = BIN_NAMES.iter().find(|(_, n)| *n == name)?.0;
        Some(Step::Bin {
            kind,
            operand: arg?.parse().ok()?,
            reversed,
        })
    }

    /// Applies the step in f64 (the reference's precision).
    fn apply_f64(&self, acc: f64, inputs: &[f64]) -> f64 {
        match *self {
            Step::Act(a) => a.apply(acc),
            Step::Bin {
                kind,
                operand,
                reversed,
            } => {
                let b = inputs.get(operand).copied().unwrap_or(f64::NAN);
                let (x, y) = if reversed { (b, acc) } else { (acc, b) };
                binary_f64(kind, x, y)
            }
        }
    }
}

fn binary_f64(kind: BinaryKind, a: f64, b: f64) -> f64 {
    match kind {
        BinaryKind::Add => a + b,
        BinaryKind::Sub => a - b,
        BinaryKind::Mul => a * b,
        BinaryKind::Div => a / b,
        BinaryKind::Max => {
            if a >= b {
                a
            } else {
                b
            }
        }
        BinaryKind::Min => {
            if a <= b {
                a
            } else {
                b
            }
        }
    }
}

/// `acc[i] = acc[i] op b[i]` (or `b[i] op acc[i]`), one tight loop per function so each
/// vectorises.
fn binary_block(kind: BinaryKind, reversed: bool, acc: &mut [f32], b: &[f32]) {
    macro_rules! each {
        ($f:expr) => {
            for (a, &o) in acc.iter_mut().zip(b) {
                let (x, y) = if reversed { (o, *a) } else { (*a, o) };
                *a = $f(x, y);
            }
        };
    }
    match kind {
        BinaryKind::Add => each!(|x: f32, y: f32| x + y),
        BinaryKind::Sub => each!(|x: f32, y: f32| x - y),
        BinaryKind::Mul => each!(|x: f32, y: f32| x * y),
        BinaryKind::Div => each!(|x: f32, y: f32| x / y),
        BinaryKind::Max => each!(|x: f32, y: f32| if x >= y { x } else { y }),
        BinaryKind::Min => each!(|x: f32, y: f32| if x <= y { x } else { y }),
    }
}

/// A chain of elementwise steps (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ElementwiseChain {
    /// The steps, applied in order to the accumulator (input 0).
    pub steps: Vec<Step>,
}

impl ElementwiseChain {
    /// Checks the steps against `inputs` inputs.
    pub fn check(&self, inputs: usize) -> std::result::Result<(), String> {
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(format!("1 to {MAX_STEPS} steps, got {}", self.steps.len()));
        }
        let mut read = vec![false; inputs];
        read[0] = true;
        for s in &self.steps {
            if let Step::Bin { operand, .. } = s {
                match read.get_mut(*operand) {
                    Some(r) => *r = true,
                    None => {
                        return Err(format!(
                            "step `{}` reads input {operand} of {inputs}",
                            s.to_text()
                        ));
                    }
                }
            }
        }
        if let Some(k) = read.iter().position(|r| !r) {
            return Err(format!("input {k} is read by no step"));
        }
        Ok(())
    }

    fn text(&self) -> String {
        self.steps
            .iter()
            .map(Step::to_text)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Elements per block of the CPU kernel: the accumulator stays in L1 while every step runs.
const BLOCK: usize = 2048;
/// Elements below which the CPU kernel stays on one thread.
const PAR_MIN: usize = 1 << 16;

impl OpDef for ElementwiseChain {
    const NAME: &'static str = "elementwise_chain";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, MAX_INPUTS)?;
        all_f32(inputs)?;
        self.check(inputs.len())?;
        let shape = &inputs[0].shape;
        if let Some(k) = inputs.iter().position(|f| &f.shape != shape) {
            return Err(format!(
                "every input must have input 0's shape {shape:?}; input {k} is {:?}",
                inputs[k].shape
            ));
        }
        Ok(vec![TensorFact::f32(shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let ins = (0..inputs.len())
            .map(|k| input_f32(Self::NAME, inputs, k))
            .collect::<Result<Vec<_>>>()?;
        let mut row = vec![0f64; ins.len()];
        let y: Vec<f32> = (0..ins[0].len())
            .map(|i| {
                for (r, x) in row.iter_mut().zip(&ins) {
                    *r = f64::from(x[i]);
                }
                let acc = self.steps.iter().fold(row[0], |a, s| s.apply_f64(a, &row));
                acc as f32
            })
            .collect();
        Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let ins = (0..inputs.len())
            .map(|k| input_f32(Self::NAME, inputs, k))
            .collect::<Result<Vec<_>>>()?;
        let x0 = ins[0];
        let mut out = Tensor::zeros(crate::tensor::DType::F32, inputs[0].dims())?;
        let y = out.as_mut_slice::<f32>()?;
        let threads = if y.len() < PAR_MIN { 1 } else { threads };
        spore_kernels_cpu::parallel::par_chunks_mut(y, BLOCK, threads, |first, chunk| {
            let mut tmp = vec![0f32; BLOCK.min(chunk.len())];
            for (b, acc) in chunk.chunks_mut(BLOCK).enumerate() {
                let off = (first + b) * BLOCK;
                let n = acc.len();
                acc.copy_from_slice(&x0[off..off + n]);
                for step in &self.steps {
                    match *step {
                        Step::Act(a) => {
                            tmp[..n].copy_from_slice(acc);
                            spore_kernels_cpu::activation::activation(a, &tmp[..n], acc, 1)?;
                        }
                        Step::Bin {
                            kind,
                            operand,
                            reversed,
                        } => binary_block(kind, reversed, acc, &ins[operand][off..off + n]),
                    }
                }
            }
            Ok(())
        })?;
        Ok(vec![out])
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
        let Some(y) = outputs.first() else {
            return Err(exec_err(Self::NAME, "expects one output"));
        };
        let bufs: Vec<&wgpu::Buffer> = inputs.iter().map(|v| v.buffer).collect();
        gpu_kernel::record::<f32>(gpu, rec, &bufs, y.buffer, y.numel(), &self.steps)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("steps", AttrValue::Str(self.text()))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let text = attrs.str("steps")?;
        let steps = text
            .split(',')
            .map(|s| {
                Step::parse(s.trim())
                    .ok_or_else(|| attrs.err("steps", format!("unknown step `{s}` in `{text}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(attrs.err("steps", format!("1 to {MAX_STEPS} steps, got `{text}`")));
        }
        Ok(ElementwiseChain { steps })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let bin = |kind, operand, reversed| Step::Bin {
            kind,
            operand,
            reversed,
        };
        let chains: Vec<(usize, Vec<Step>)> = vec![
            // ResNet's join.
            (
                2,
                vec![
                    bin(BinaryKind::Add, 1, false),
                    Step::Act(ActivationKind::Relu),
                ],
            ),
            // Swish.
            (
                1,
                vec![
                    Step::Act(ActivationKind::Sigmoid),
                    bin(BinaryKind::Mul, 0, false),
                ],
            ),
            (
                3,
                vec![
                    bin(BinaryKind::Sub, 1, true),
                    Step::Act(ActivationKind::Tanh),
                    bin(BinaryKind::Add, 2, false),
                    Step::Act(ActivationKind::LeakyRelu(0.1)),
                ],
            ),
            (
                4,
                vec![
                    bin(BinaryKind::Max, 1, false),
                    bin(BinaryKind::Min, 2, true),
                    Step::Act(ActivationKind::HardSwish),
                    bin(BinaryKind::Div, 3, false),
                    bin(BinaryKind::Div, 1, true),
                    Step::Act(ActivationKind::Relu6),
                ],
            ),
            (
                2,
                vec![
                    bin(BinaryKind::Mul, 1, false),
                    Step::Act(ActivationKind::Gelu),
                    bin(BinaryKind::Add, 1, false),
                    Step::Act(ActivationKind::HardSigmoid),
                    bin(BinaryKind::Sub, 0, false),
                    Step::Act(ActivationKind::GeluTanh),
                    bin(BinaryKind::Mul, 1, true),
                    Step::Act(ActivationKind::Sigmoid),
                ],
            ),
        ];
        // Ragged sizes, and one big enough for the threaded, multi-block CPU path.
        let shapes: [&[usize]; 5] = [&[7], &[2, 3, 5], &[1, 9, 9, 13], &[3, 67], &[2, 181, 181]];
        let mut cases = Vec::new();
        for (i, ((n, steps), shape)) in chains.into_iter().zip(shapes).enumerate() {
            // Operands away from zero: some chains divide by them.
            let inputs = (0..n)
                .map(|_| {
                    random_f32(rng, shape)?.map_f32(|v| if v >= 0.0 { v + 0.5 } else { v - 0.5 })
                })
                .collect::<Result<Vec<_>>>()?;
            cases.push(OpCase {
                name: format!("{}/chain_{i}", Self::NAME),
                op: ElementwiseChain { steps }.into(),
                inputs,
            });
        }
        Ok(cases)
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        inputs.first().map_or(0, |f| f.numel() as u64) * self.steps.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_text() {
        let steps = [
            Step::Act(ActivationKind::Relu),
            Step::Act(ActivationKind::LeakyRelu(0.25)),
            Step::Bin {
                kind: BinaryKind::Sub,
                operand: 3,
                reversed: true,
            },
            Step::Bin {
                kind: BinaryKind::Max,
                operand: 1,
                reversed: false,
            },
        ];
        for s in steps {
            assert_eq!(Step::parse(&s.to_text()), Some(s), "{}", s.to_text());
        }
        for bad in [
            "",
            "relu:1",
            "frobnicate:1",
            "add",
            "add:x",
            "leaky_relu",
            "leaky_relu:inf",
        ] {
            assert_eq!(Step::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_chains_are_refused() {
        let chain = |steps| ElementwiseChain { steps };
        let add = |operand| Step::Bin {
            kind: BinaryKind::Add,
            operand,
            reversed: false,
        };
        assert!(chain(vec![]).check(1).is_err());
        assert!(
            chain(vec![add(2)]).check(2).is_err(),
            "operand out of range"
        );
        assert!(
            chain(vec![Step::Act(ActivationKind::Relu)])
                .check(2)
                .is_err(),
            "unused input"
        );
        assert!(chain(vec![add(1); MAX_STEPS + 1]).check(2).is_err());
        let f = TensorFact::f32(vec![2, 3]);
        let g = TensorFact::f32(vec![3, 2]);
        assert!(
            chain(vec![add(1)]).infer(&[&f, &g]).is_err(),
            "shapes differ"
        );
        assert!(chain(vec![add(1)]).infer(&[&f, &f]).is_ok());
    }
}
