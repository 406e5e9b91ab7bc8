//! `activation_grad`: the backward op of [`Activation`](super::activation::Activation) (and of
//! the activations fused into conv, depthwise and matmul): `dx = dy * act'(x)` elementwise,
//! from the activation's INPUT `x` (the pre-activation), inputs `[x, dy]`.

use super::activation::{ALL_KINDS, ActivationKind, get_kind, kind_name, put_kind};
use super::{GpuValue, OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels::elementwise_grad as kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::activation as reference;
use spore_kernels_cpu::rng::Rng;

/// Gradient of an elementwise activation with respect to its input.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationGrad {
    /// The forward function.
    pub kind: ActivationKind,
}

impl OpDef for ActivationGrad {
    const NAME: &'static str = "activation_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 2)?;
        all_f32(inputs)?;
        if inputs[0].shape != inputs[1].shape {
            return Err(format!(
                "dy has shape {:?}, x has {:?}: they must match",
                inputs[1].shape, inputs[0].shape
            ));
        }
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = super::out_shape(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let mut dx = vec![0f32; x.len()];
        reference::activation_grad(self.kind, x, dy, &mut dx)?;
        Ok(vec![tensor_f32(&shape, dx)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let shape = super::out_shape(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let dy = input_f32(Self::NAME, inputs, 1)?;
        let mut dx = vec![0f32; x.len()];
        spore_kernels_cpu::activation::activation_grad(self.kind, x, dy, &mut dx, threads)
            .map_err(|e| exec_err(Self::NAME, e.to_string()))?;
        Ok(vec![tensor_f32(&shape, dx)?])
    }

    fn attrs(&self) -> Attrs {
        put_kind(Attrs::new(Self::NAME), "kind", Some(self.kind))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        match get_kind(attrs, "kind")? {
            Some(kind) => Ok(ActivationGrad { kind }),
            None => Err(attrs.err("kind", "`none` is not an activation")),
        }
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // Every kind (so the conformance suite covers each derivative), ragged shapes, inputs
        // spread over [-8, 8) to reach every piece of the piecewise functions.
        ALL_KINDS
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let dims: &[usize] = if i % 2 == 0 { &[2, 3, 5, 7] } else { &[13, 3] };
                Ok(OpCase {
                    name: format!("{}/{}", Self::NAME, kind_name(kind)),
                    op: ActivationGrad { kind }.into(),
                    inputs: vec![
                        random_f32(rng, dims)?.map_f32(|v| v * 8.0)?,
                        random_f32(rng, dims)?,
                    ],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // Derivative plus one multiply per element.
        2 * super::first_numel(inputs)
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
        let (&[x, dy], &[dx]) = (inputs, outputs) else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [x, dy] and one output",
            ));
        };
        let p = kernel::ActivationGrad {
            len: x.numel(),
            act: self.kind,
            knobs: crate::backend::gpu::kernels::unary::Knobs::default(),
        };
        kernel::record_activation_grad::<f32>(gpu, rec, x.buffer, dy.buffer, dx.buffer, &p)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = ActivationGrad {
            kind: ActivationKind::Relu,
        };
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[2, 3])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[3, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[6])]).is_err());
        let i = TensorFact::new(crate::tensor::DType::I32, [2, 3]);
        assert!(op.infer(&[&f(&[2, 3]), &i]).is_err());
        assert_eq!(
            op.infer(&[&f(&[2, 3]), &f(&[2, 3])]).unwrap()[0].shape,
            [2, 3]
        );
    }

    /// Checks `eval_cpu` (the tuned kernels, 1 and 2 threads) against `eval_ref` on every
    /// case and output: relative L2 error <= 1e-5. Shared by the grad ops' tests.
    pub(crate) fn check_cpu_matches_ref(cases: &[OpCase]) {
        for case in cases {
            let refs: Vec<&Tensor> = case.inputs.iter().collect();
            let want = case.op.eval_ref(&refs).unwrap();
            for threads in [1, 2] {
                let got = case.op.eval_cpu(&refs, threads).unwrap();
                assert_eq!(got.len(), want.len(), "{}", case.name);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.dims(), w.dims(), "{}", case.name);
                    let (mut num, mut den) = (0f64, 0f64);
                    for (&g, &w) in g.to_f32_vec().iter().zip(&w.to_f32_vec()) {
                        num += (f64::from(g) - f64::from(w)).powi(2);
                        den += f64::from(w).powi(2);
                    }
                    let err = (num / den.max(1e-30)).sqrt();
                    assert!(err <= 1e-5, "{} threads {threads}: {err:.2e}", case.name);
                }
            }
            println!("{}: eval_cpu matches eval_ref", case.name);
        }
    }

    /// Throughput of the gradelem backward ops, reference vs tuned CPU at 1 and 2 threads
    /// (run with `--ignored --nocapture`; the numbers go in the report, not in asserts).
    #[test]
    #[ignore]
    fn timing_backward_ops() {
        use crate::ops::binary::BinaryKind;
        use crate::ops::loss_grad::{LossGrad, LossKind};
        let mut rng = Rng::new(3);
        let r = |rng: &mut Rng, s: &[usize]| random_f32(rng, s).unwrap();
        let act = [32, 28, 28, 64];
        let rows = [256, 1000];
        let labels = Tensor::from_vec(&[256], (0..256i32).map(|i| i * 7 % 1000).collect()).unwrap();
        let probs = crate::ops::softmax::Softmax
            .eval_ref(&[&r(&mut rng, &rows)])
            .unwrap();
        let cases: Vec<(&str, crate::ops::Op, Vec<Tensor>)> = vec![
            (
                "activation_grad relu [32,28,28,64]",
                ActivationGrad {
                    kind: ActivationKind::Relu,
                }
                .into(),
                vec![r(&mut rng, &act), r(&mut rng, &act)],
            ),
            (
                "activation_grad sigmoid [32,28,28,64]",
                ActivationGrad {
                    kind: ActivationKind::Sigmoid,
                }
                .into(),
                vec![r(&mut rng, &act), r(&mut rng, &act)],
            ),
            (
                "softmax_grad [256,1000]",
                crate::ops::softmax_grad::SoftmaxGrad.into(),
                vec![probs[0].clone(), r(&mut rng, &rows)],
            ),
            (
                "binary_grad mul [32,28,28,64]x[64]",
                crate::ops::binary_grad::BinaryGrad {
                    kind: BinaryKind::Mul,
                }
                .into(),
                vec![r(&mut rng, &act), r(&mut rng, &[64]), r(&mut rng, &act)],
            ),
            (
                "binary_grad mul same shape [32,28,28,64]",
                crate::ops::binary_grad::BinaryGrad {
                    kind: BinaryKind::Mul,
                }
                .into(),
                vec![r(&mut rng, &act), r(&mut rng, &act), r(&mut rng, &act)],
            ),
            (
                "broadcast_to mean [32,1,1,64]->[32,28,28,64]",
                crate::ops::broadcast_to::BroadcastTo {
                    shape: act.to_vec(),
                    scale: 1.0 / 784.0,
                }
                .into(),
                vec![r(&mut rng, &[32, 1, 1, 64])],
            ),
            (
                "loss_grad sparse_ce [256,1000]",
                LossGrad {
                    kind: LossKind::SparseSoftmaxCrossEntropy,
                }
                .into(),
                vec![r(&mut rng, &rows), labels, Tensor::scalar(1f32)],
            ),
        ];
        for (name, op, inputs) in cases {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let facts: Vec<TensorFact> = inputs
                .iter()
                .map(|t| TensorFact::new(t.dtype(), t.dims()))
                .collect();
            let frefs: Vec<&TensorFact> = facts.iter().collect();
            let flops = op.flops(&frefs) as f64;
            // Bytes touched: every input read once, every output written once.
            let out_bytes: usize = op
                .eval_ref(&refs)
                .unwrap()
                .iter()
                .map(|t| t.numel() * 4)
                .sum();
            let bytes = (inputs.iter().map(|t| t.numel() * 4).sum::<usize>() + out_bytes) as f64;
            let time = |f: &dyn Fn()| {
                f();
                let reps = 5;
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() / reps as f64
            };
            let tr = time(&|| {
                op.eval_ref(&refs).unwrap();
            });
            let t1 = time(&|| {
                op.eval_cpu(&refs, 1).unwrap();
            });
            let t2 = time(&|| {
                op.eval_cpu(&refs, 2).unwrap();
            });
            println!(
                "{name}: reference {:.2} ms; cpu 1t {:.2} ms ({:.1} GB/s, {:.2} GFLOP/s); \
                 cpu 2t {:.2} ms ({:.1} GB/s)",
                tr * 1e3,
                t1 * 1e3,
                bytes / t1 / 1e9,
                flops / t1 / 1e9,
                t2 * 1e3,
                bytes / t2 / 1e9
            );
        }
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(11);
        check_cpu_matches_ref(&ActivationGrad::cases(&mut rng).unwrap());
    }
}
