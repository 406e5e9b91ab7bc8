//! `sgd_update`: one step of stochastic gradient descent with PyTorch's `torch.optim.SGD`
//! semantics (weight decay, momentum with dampening, Nesterov), as a graph op so the training
//! graph updates its parameters on whatever device runs it.
//!
//! Inputs: `param`, `grad` (same shape), `lr` (f32 scalar), `step` (i32 scalar: steps already
//! taken, 0 on the first step), and with momentum the velocity `buf` (same shape). Outputs: the new `param`
//! and, with momentum, the new `buf`:
//!
//! ```text
//! g = grad + weight_decay * param
//! buf = g                                   on the first step (step input 0)
//! buf = momentum * buf + (1 - dampening) * g  afterwards
//! g = nesterov ? g + momentum * buf : buf
//! param = param - lr * g
//! ```
//!
//! MindSpore's `Momentum` optimizer is this op with dampening 0.

use super::GpuValue;
use super::{OpCase, OpDef, arity, input_f32, random_f32, tensor_f32};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::optimizer;
use spore_kernels_cpu::rng::Rng;

/// SGD hyperparameters that do not change between steps (the learning rate is an input, so
/// schedules need no graph rebuild).
#[derive(Debug, Clone, PartialEq)]
pub struct SgdUpdate {
    /// Momentum factor (0 = plain SGD, no velocity input).
    pub momentum: f64,
    /// Dampening of the gradient in the velocity update.
    pub dampening: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0, as in PyTorch).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Default for SgdUpdate {
    fn default() -> Self {
        SgdUpdate {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl SgdUpdate {
    /// Whether the op carries a velocity buffer.
    pub fn has_buffer(&self) -> bool {
        self.momentum != 0.0
    }

    fn check(&self) -> std::result::Result<(), String> {
        let finite = [self.momentum, self.dampening, self.weight_decay];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!(
                "momentum, dampening and weight decay must be finite and >= 0, got {finite:?}"
            ));
        }
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err("Nesterov momentum needs momentum > 0 and dampening 0".into());
        }
        Ok(())
    }
}

/// Reads the `lr` (f32) and `step` (i32, steps already taken) scalars; returns the learning
/// rate and the 1-based number of the step being taken.
pub(crate) fn lr_step(op: &str, inputs: &[&Tensor], lr: usize, step: usize) -> Result<(f64, i32)> {
    let l = input_f32(op, inputs, lr)?;
    let s = inputs
        .get(step)
        .ok_or_else(|| super::exec_err(op, "missing step input"))?
        .as_slice::<i32>()?;
    match (l, s) {
        // `step` counts the steps already taken; the update is step number `step + 1`.
        ([l], [s]) if l.is_finite() && (0..i32::MAX).contains(s) => Ok((f64::from(*l), *s + 1)),
        _ => Err(super::exec_err(
            op,
            format!("lr must be one finite value and step one value >= 0, got {l:?} and {s:?}"),
        )),
    }
}

/// Checks the scalar `lr` / `step` facts.
pub(crate) fn check_scalars(lr: &TensorFact, step: &TensorFact) -> std::result::Result<(), String> {
    if lr.dtype != DType::F32 || lr.numel() != 1 || lr.rank() > 1 {
        return Err(format!(
            "lr must be an f32 scalar, got {} {:?}",
            lr.dtype, lr.shape
        ));
    }
    if step.dtype != DType::I32 || step.numel() != 1 || step.rank() > 1 {
        return Err(format!(
            "step must be an i32 scalar, got {} {:?}",
            step.dtype, step.shape
        ));
    }
    Ok(())
}

impl OpDef for SgdUpdate {
    const NAME: &'static str = "sgd_update";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        self.check()?;
        let n = if self.has_buffer() { 5 } else { 4 };
        arity(inputs.len(), n, n)?;
        let (p, g) = (inputs[0], inputs[1]);
        if p.dtype != DType::F32 || g.dtype != DType::F32 || p.shape != g.shape {
            return Err(format!(
                "param and grad must be f32 of one shape, got {:?} and {:?}",
                p.shape, g.shape
            ));
        }
        check_scalars(inputs[2], inputs[3])?;
        if self.has_buffer() {
            if inputs[4].shape != p.shape || inputs[4].dtype != DType::F32 {
                return Err(format!(
                    "velocity has shape {:?}, expected {:?}",
                    inputs[4].shape, p.shape
                ));
            }
            Ok(vec![p.clone(), p.clone()])
        } else {
            Ok(vec![p.clone()])
        }
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let p = input_f32(Self::NAME, inputs, 0)?;
        let g = input_f32(Self::NAME, inputs, 1)?;
        let (lr, step) = lr_step(Self::NAME, inputs, 2, 3)?;
        let dims = inputs[0].dims();
        let mut new_p = Vec::with_capacity(p.len());
        if !self.has_buffer() {
            for (&pi, &gi) in p.iter().zip(g) {
                let gi = f64::from(gi) + self.weight_decay * f64::from(pi);
                new_p.push((f64::from(pi) - lr * gi) as f32);
            }
            return Ok(vec![tensor_f32(dims, new_p)?]);
        }
        let buf = input_f32(Self::NAME, inputs, 4)?;
        let mut new_buf = Vec::with_capacity(p.len());
        for ((&pi, &gi), &bi) in p.iter().zip(g).zip(buf) {
            let gi = f64::from(gi) + self.weight_decay * f64::from(pi);
            let b = if step == 1 {
                gi
            } else {
                self.momentum * f64::from(bi) + (1.0 - self.dampening) * gi
            };
            let d = if self.nesterov {
                gi + self.momentum * b
            } else {
                b
            };
            new_p.push((f64::from(pi) - lr * d) as f32);
            new_buf.push(b as f32);
        }
        Ok(vec![tensor_f32(dims, new_p)?, tensor_f32(dims, new_buf)?])
    }

    /// The tuned f32 kernels (`kernels-cpu` optimizer: SGD, momentum, Nesterov), writing into
    /// copies of the parameter and velocity; dampening, which they do not take, uses the
    /// reference.
    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        if self.dampening != 0.0 {
            return self.eval_ref(inputs);
        }
        super::infer_eval(self, inputs)?;
        let (lr, step) = lr_step(Self::NAME, inputs, 2, 3)?;
        let g = input_f32(Self::NAME, inputs, 1)?;
        let mut p = inputs[0].clone();
        if !self.has_buffer() {
            let sp = optimizer::SgdParams {
                lr,
                weight_decay: self.weight_decay,
            };
            optimizer::sgd(sp, p.as_mut_slice::<f32>()?, g, threads)?;
            return Ok(vec![p]);
        }
        // The first step starts the velocity at the gradient: from a zero velocity, the
        // kernel's `v = mu * v + g` gives exactly that whatever the input buffer holds.
        let mut buf = if step == 1 {
            Tensor::zeros(DType::F32, inputs[0].dims())?
        } else {
            inputs[4].clone()
        };
        let mp = optimizer::MomentumParams {
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        };
        optimizer::momentum(
            mp,
            p.as_mut_slice::<f32>()?,
            g,
            buf.as_mut_slice::<f32>()?,
            threads,
        )?;
        Ok(vec![p, buf])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("momentum", AttrValue::Float(self.momentum))
            .with("dampening", AttrValue::Float(self.dampening))
            .with("nesterov", AttrValue::Bool(self.nesterov))
            .with("weight_decay", AttrValue::Float(self.weight_decay))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let op = SgdUpdate {
            momentum: attrs.float("momentum")?,
            dampening: attrs.float("dampening")?,
            nesterov: attrs.bool("nesterov")?,
            weight_decay: attrs.float("weight_decay")?,
        };
        op.check().map_err(|r| attrs.err("momentum", r))?;
        Ok(op)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs = [
            ("plain", SgdUpdate::default(), 0, &[7usize, 3][..]),
            (
                "momentum_first_step",
                SgdUpdate {
                    momentum: 0.9,
                    ..Default::default()
                },
                0,
                &[5][..],
            ),
            (
                "momentum_dampening_wd",
                SgdUpdate {
                    momentum: 0.9,
                    dampening: 0.1,
                    weight_decay: 1e-2,
                    nesterov: false,
                },
                3,
                &[2, 3, 5][..],
            ),
            (
                "nesterov",
                SgdUpdate {
                    momentum: 0.8,
                    nesterov: true,
                    weight_decay: 5e-4,
                    ..Default::default()
                },
                8,
                &[13][..],
            ),
        ];
        configs
            .into_iter()
            .map(|(name, op, step, shape)| {
                let mut inputs = vec![
                    random_f32(rng, shape)?,
                    random_f32(rng, shape)?,
                    Tensor::from_vec(&[], vec![rng.uniform(0.01, 0.2) as f32])?,
                    Tensor::from_vec(&[], vec![step])?,
                ];
                if op.has_buffer() {
                    inputs.push(random_f32(rng, shape)?);
                }
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: op.into(),
                    inputs,
                })
            })
            .collect()
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.infer(inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        use kernels::optimizer as k;
        let (Some(p), Some(g), Some(lr), Some(step), Some(new_p)) = (
            inputs.first(),
            inputs.get(1),
            inputs.get(2),
            inputs.get(3),
            outputs.first(),
        ) else {
            return Err(super::exec_err(
                Self::NAME,
                "expects [param, grad, lr, step, ..] inputs",
            ));
        };
        let s = k::Sgd {
            len: p.numel(),
            momentum: self.momentum,
            dampening: self.dampening,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            knobs: crate::backend::gpu::kernels::unary::Knobs::default(),
        };
        k::record_sgd::<f32>(
            gpu,
            rec,
            p.buffer,
            g.buffer,
            k::Scalars {
                lr: lr.buffer,
                step: step.buffer,
            },
            inputs.get(4).map(|b| b.buffer),
            new_p.buffer,
            outputs.get(1).map(|b| b.buffer),
            &s,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        4 * super::first_numel(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(&[v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn matches_a_hand_computation() {
        // PyTorch: p=1, g=0.5, lr=0.1, wd=0.1 -> g'=0.6; step 1: buf=0.6, p=1-0.06=0.94.
        let op = SgdUpdate {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.1,
        };
        let lr = Tensor::from_vec(&[], vec![0.1f32]).unwrap();
        let s1 = Tensor::from_vec(&[], vec![0i32]).unwrap();
        let out = op
            .eval_ref(&[&t(&[1.0]), &t(&[0.5]), &lr, &s1, &t(&[123.0])])
            .unwrap();
        assert!((out[0].to_f32_vec()[0] - 0.94).abs() < 1e-7);
        assert!((out[1].to_f32_vec()[0] - 0.6).abs() < 1e-7);
        // Step 2 from there with g=0.5: g'=0.5+0.094=0.594, buf=0.9*0.6+0.594=1.134,
        // p=0.94-0.1134=0.8266.
        let s2 = Tensor::from_vec(&[], vec![1i32]).unwrap();
        let out = op
            .eval_ref(&[&out[0], &t(&[0.5]), &lr, &s2, &out[1]])
            .unwrap();
        assert!((out[0].to_f32_vec()[0] - 0.8266).abs() < 1e-6);
        assert!((out[1].to_f32_vec()[0] - 1.134).abs() < 1e-6);
    }

    #[test]
    fn refuses_bad_inputs() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let lr = TensorFact::f32(Vec::new());
        let step = TensorFact::new(DType::I32, Vec::<usize>::new());
        let op = SgdUpdate::default();
        assert!(op.infer(&[&f(&[3]), &f(&[3]), &lr, &step]).is_ok());
        assert!(op.infer(&[&f(&[3]), &f(&[4]), &lr, &step]).is_err());
        assert!(op.infer(&[&f(&[3]), &f(&[3]), &step, &lr]).is_err());
        let nesterov_without_momentum = SgdUpdate {
            nesterov: true,
            ..Default::default()
        };
        assert!(
            nesterov_without_momentum
                .infer(&[&f(&[3]), &f(&[3]), &lr, &step])
                .is_err()
        );
        let lr_bad = Tensor::from_vec(&[], vec![f32::NAN]).unwrap();
        let s = Tensor::from_vec(&[], vec![0i32]).unwrap();
        assert!(op.eval_ref(&[&t(&[1.0]), &t(&[1.0]), &lr_bad, &s]).is_err());
        let neg = Tensor::from_vec(&[], vec![-1i32]).unwrap();
        let lr = Tensor::from_vec(&[], vec![0.1f32]).unwrap();
        assert!(op.eval_ref(&[&t(&[1.0]), &t(&[1.0]), &lr, &neg]).is_err());
    }
}
