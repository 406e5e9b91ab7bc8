//! `dropout`: inverted dropout. With `training = false` it is the identity; with
//! `training = true` element `i` is kept iff the counter-based draw `uniform(seed, i) >= rate`
//! and kept elements are scaled by `1 / (1 - rate)`, so every backend draws the same mask.
//!
//! An optional second input `step` (an i32 scalar) makes the mask change from step to step
//! in a training graph without rebuilding it: the stream is `seed` mixed with `step`
//! ([`Dropout::stream`]). Autograd feeds the trainer's step count there.

use super::{AttrValue, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32};
use super::{GpuValue, gpu_arg};
use crate::backend::gpu::kernels::{concat as gpu_concat, dropout as gpu_dropout};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::dropout as reference;
use spore_kernels_cpu::rng::Rng;

/// Inverted dropout.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    /// Probability of dropping an element, in `[0, 1)`.
    pub rate: f32,
    /// Mask stream (stored in the `seed` attribute as the same 64 bits, read as `i64`).
    pub seed: u64,
    /// Apply the mask (training) or pass `x` through (inference).
    pub training: bool,
}

impl Default for Dropout {
    fn default() -> Self {
        Dropout {
            rate: 0.5,
            seed: 0,
            training: false,
        }
    }
}

impl Dropout {
    /// The mask stream for this run: `seed`, or `seed` mixed with the `step` input when
    /// there is one (a golden-ratio multiple, so consecutive steps are far apart).
    pub fn stream(&self, inputs: &[&Tensor]) -> Result<u64> {
        match inputs.get(1) {
            None => Ok(self.seed),
            Some(t) => {
                let step = t
                    .as_slice::<i32>()?
                    .first()
                    .copied()
                    .ok_or_else(|| super::exec_err(Self::NAME, "empty step input"))?;
                Ok(self
                    .seed
                    .wrapping_add((step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            }
        }
    }
}

impl OpDef for Dropout {
    const NAME: &'static str = "dropout";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 2)?;
        all_f32(&inputs[..1])?;
        if let Some(step) = inputs.get(1)
            && (step.dtype != crate::DType::I32 || !step.shape.is_empty())
        {
            return Err(format!(
                "step must be an i32 scalar, got {} {:?}",
                step.dtype.name(),
                step.shape
            ));
        }
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        if !self.training {
            return Ok(vec![inputs[0].clone()]);
        }
        let mut y = vec![0f32; x.len()];
        reference::dropout(self.rate, self.stream(inputs)?, x, &mut y)?;
        Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
    }

    /// Inference is a copy (the planner may alias it away); training draws the
    /// counter-based mask in the shader, element for element the reference's.
    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        if inputs.len() > 1 && self.training {
            // The stream is mixed on the host; the shader takes it as a uniform.
            return Err("a per-step `step` input is read on the host".into());
        }
        super::gpu_f32_fits(self, &inputs[..1.min(inputs.len())]).map(|_| ())
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
        if !self.training || x.numel() == 0 {
            let bytes = x.numel() * x.fact.dtype.size();
            return gpu_concat::record_copy(rec, x.buffer, y.buffer, bytes);
        }
        let p = gpu_dropout::Dropout {
            len: x.numel(),
            rate: self.rate,
            seed: self.seed,
            knobs: gpu_dropout::Knobs::default(),
        };
        gpu_dropout::record::<f32>(gpu, rec, x.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("rate", AttrValue::Float(f64::from(self.rate)))
            .with("seed", AttrValue::Int(self.seed as i64))
            .with("training", AttrValue::Bool(self.training))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let rate = attrs.float("rate")? as f32;
        if !(0.0..1.0).contains(&rate) {
            return Err(attrs.err("rate", format!("{rate} is outside [0, 1)")));
        }
        Ok(Dropout {
            rate,
            seed: attrs.int("seed")? as u64,
            training: attrs.bool("training")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs: [(&str, &[usize], Dropout); 4] = [
            (
                "inference_identity",
                &[2, 3, 4],
                Dropout {
                    rate: 0.5,
                    seed: 7,
                    training: false,
                },
            ),
            (
                "training_half",
                &[4, 5, 3],
                Dropout {
                    rate: 0.5,
                    seed: 7,
                    training: true,
                },
            ),
            (
                "training_low_rate",
                &[3, 7],
                Dropout {
                    rate: 0.1,
                    seed: u64::MAX,
                    training: true,
                },
            ),
            (
                "training_rate0",
                &[6],
                Dropout {
                    rate: 0.0,
                    seed: 1,
                    training: true,
                },
            ),
        ];
        configs
            .into_iter()
            .map(|(name, x, op)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: op.into(),
                    inputs: vec![random_f32(rng, x)?],
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        if self.training {
            first_numel(inputs)
        } else {
            0
        }
    }

    /// The same mask applied to `dy`: with the same `rate` and `seed` this very op IS the
    /// gradient (`dx = dy * keep / (1 - rate)`), so no dedicated grad op is needed. In
    /// inference mode the gradient is `dy` itself.
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        let Some(dy) = ctx.output_grads.first().copied().flatten() else {
            return Ok(vec![None]);
        };
        if !self.training {
            return Ok(vec![Some(dy)]);
        }
        // The same op on `dy`, with the same step input, draws the same mask.
        let mut ins = vec![dy];
        ins.extend(ctx.inputs.get(1).copied());
        let dx = ctx
            .builder
            .node1(&format!("{}/grad_x", ctx.node), self.clone(), &ins)?;
        let mut grads = vec![Some(dx)];
        grads.resize(ctx.inputs.len(), None);
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_inputs() {
        let op = Dropout::default();
        assert!(op.infer(&[]).is_err());
        assert!(
            op.infer(&[&TensorFact::new(crate::DType::I32, [3])])
                .is_err()
        );
        let x = TensorFact::f32([3]);
        assert!(op.infer(&[&x, &x]).is_err());
        let step = TensorFact::new(crate::DType::I32, []);
        assert!(op.infer(&[&x, &step]).is_ok());
        assert!(op.infer(&[&x, &step, &step]).is_err());
        assert!(
            op.infer(&[&x, &TensorFact::new(crate::DType::I32, [1])])
                .is_err()
        );
    }

    #[test]
    fn eval_identity_and_mask() {
        let x = Tensor::from_vec(&[64], (1..=64).map(|i| i as f32).collect()).unwrap();
        let op = Dropout {
            rate: 0.25,
            seed: 3,
            training: false,
        };
        let y = op.eval_ref(&[&x]).unwrap()[0].to_vec::<f32>().unwrap();
        assert_eq!(y, x.to_vec::<f32>().unwrap());
        let y = Dropout {
            training: true,
            ..op
        }
        .eval_ref(&[&x])
        .unwrap()[0]
            .to_vec::<f32>()
            .unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count();
        assert!(kept > 32 && kept < 64, "kept {kept} of 64");
        for (i, v) in y.iter().enumerate() {
            assert!(*v == 0.0 || (v - (i + 1) as f32 / 0.75).abs() < 1e-4);
        }
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(61);
        for case in Dropout::cases(&mut rng).unwrap() {
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
    fn step_input_changes_the_mask_and_its_gradient_follows() {
        let op = Dropout {
            rate: 0.5,
            seed: 11,
            training: true,
        };
        let x = Tensor::from_vec(&[256], (0..256).map(|i| 1.0 + i as f32).collect()).unwrap();
        let mask = |step: i32| {
            let s = Tensor::scalar(step);
            op.eval_ref(&[&x, &s]).unwrap()[0]
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v != 0.0)
                .collect::<Vec<bool>>()
        };
        assert_eq!(mask(3), mask(3));
        assert_ne!(mask(3), mask(4));
        let mut rng = Rng::new(62);
        let err = crate::ops::gradcheck::check_rule(
            &op.clone().into(),
            &[x.clone(), Tensor::scalar(5i32)],
            &[0],
            Default::default(),
            &mut rng,
        )
        .unwrap();
        assert!(err < 1e-3, "{err}");
    }

    #[test]
    fn from_attrs_refuses_bad_rate() {
        for rate in [-0.1, 1.0, 0.999_999_999, f64::NAN] {
            let a = Dropout::default().attrs();
            let items: Vec<_> = a
                .items()
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        if n == "rate" {
                            AttrValue::Float(rate)
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect();
            let a = Attrs::from_items(Dropout::NAME, "n", items);
            assert!(Dropout::from_attrs(&a).is_err(), "{rate}");
        }
    }
}
