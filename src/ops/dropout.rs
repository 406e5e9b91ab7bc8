//! `dropout`: inverted dropout. With `training = false` it is the identity; with
//! `training = true` element `i` is kept iff the counter-based draw `uniform(seed, i) >= rate`
//! and kept elements are scaled by `1 / (1 - rate)`, so every backend draws the same mask.

use super::{AttrValue, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32};
use crate::backend::gpu::GpuContext;
use crate::error::Error;
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

impl OpDef for Dropout {
    const NAME: &'static str = "dropout";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let x = input_f32(Self::NAME, inputs, 0)?;
        if !self.training {
            return Ok(vec![inputs[0].clone()]);
        }
        let mut y = vec![0f32; x.len()];
        reference::dropout(self.rate, self.seed, x, &mut y)?;
        Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
    }

    /// Inference is the identity (no kernel to run: the input is the output); training
    /// needs the counter-based mask, which has no WGSL port yet.
    fn eval_gpu(&self, _gpu: &GpuContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        input_f32(Self::NAME, inputs, 0)?;
        if !self.training {
            return Ok(vec![inputs[0].clone()]);
        }
        Err(Error::NotSupported {
            what: format!(
                "`{}` with training = true on the GPU (no WGSL port of the counter-based mask)",
                Self::NAME
            ),
        })
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
        let dx = ctx
            .builder
            .node1(&format!("{}/grad_x", ctx.node), self.clone(), &[dy])?;
        Ok(vec![Some(dx)])
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
