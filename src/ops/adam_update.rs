//! `adam_update`: one Adam (or AdamW) step with PyTorch's `torch.optim.Adam` / `AdamW`
//! semantics, as a graph op.
//!
//! Inputs: `param`, `grad`, `m`, `v` (same shape), `lr` (f32 scalar), `step` (i32 scalar:
//! steps already taken, 0 on the first; `t = step + 1` below). Outputs: the new `param`, `m`, `v`:
//!
//! ```text
//! Adam:   g = grad + weight_decay * param
//! AdamW:  param = param * (1 - lr * weight_decay); g = grad
//! m = beta1 * m + (1 - beta1) * g
//! v = beta2 * v + (1 - beta2) * g^2
//! param = param - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```

use super::GpuValue;
use super::sgd_update::{check_scalars, lr_step};
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

/// Adam hyperparameters that do not change between steps.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamUpdate {
    /// First-moment decay, in `[0, 1)`.
    pub beta1: f64,
    /// Second-moment decay, in `[0, 1)`.
    pub beta2: f64,
    /// Added to the denominator; > 0.
    pub eps: f64,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// AdamW: decay the weights directly instead of adding to the gradient.
    pub decoupled: bool,
}

impl Default for AdamUpdate {
    fn default() -> Self {
        AdamUpdate {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

impl AdamUpdate {
    fn check(&self) -> std::result::Result<(), String> {
        let beta_ok = |b: f64| (0.0..1.0).contains(&b);
        if !beta_ok(self.beta1) || !beta_ok(self.beta2) {
            return Err(format!(
                "betas must be in [0, 1), got {} and {}",
                self.beta1, self.beta2
            ));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(format!("eps must be finite and > 0, got {}", self.eps));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "weight decay must be finite and >= 0, got {}",
                self.weight_decay
            ));
        }
        Ok(())
    }
}

impl OpDef for AdamUpdate {
    const NAME: &'static str = "adam_update";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        self.check()?;
        arity(inputs.len(), 6, 6)?;
        let p = inputs[0];
        for (name, f) in ["grad", "m", "v"].iter().zip(&inputs[1..4]) {
            if f.dtype != DType::F32 || f.shape != p.shape || p.dtype != DType::F32 {
                return Err(format!(
                    "{name} is {} {:?}, expected f32 {:?} like param",
                    f.dtype, f.shape, p.shape
                ));
            }
        }
        check_scalars(inputs[4], inputs[5])?;
        Ok(vec![p.clone(), p.clone(), p.clone()])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let [p, g, m, v] = [0, 1, 2, 3].map(|i| input_f32(Self::NAME, inputs, i));
        let (p, g, m, v) = (p?, g?, m?, v?);
        let (lr, step) = lr_step(Self::NAME, inputs, 4, 5)?;
        let bc1 = 1.0 - self.beta1.powi(step);
        let bc2 = 1.0 - self.beta2.powi(step);
        let (mut np, mut nm, mut nv) = (
            Vec::with_capacity(p.len()),
            Vec::with_capacity(p.len()),
            Vec::with_capacity(p.len()),
        );
        for i in 0..p.len() {
            let mut pi = f64::from(p[i]);
            let mut gi = f64::from(g[i]);
            if self.decoupled {
                pi *= 1.0 - lr * self.weight_decay;
            } else {
                gi += self.weight_decay * pi;
            }
            let mi = self.beta1 * f64::from(m[i]) + (1.0 - self.beta1) * gi;
            let vi = self.beta2 * f64::from(v[i]) + (1.0 - self.beta2) * gi * gi;
            let denom = vi.sqrt() / bc2.sqrt() + self.eps;
            pi -= lr / bc1 * mi / denom;
            np.push(pi as f32);
            nm.push(mi as f32);
            nv.push(vi as f32);
        }
        let dims = inputs[0].dims();
        Ok(vec![
            tensor_f32(dims, np)?,
            tensor_f32(dims, nm)?,
            tensor_f32(dims, nv)?,
        ])
    }

    /// The tuned f32 kernel (`kernels-cpu` optimizer), updating copies of the parameter and
    /// both moments in one pass.
    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let g = input_f32(Self::NAME, inputs, 1)?;
        let (lr, step) = lr_step(Self::NAME, inputs, 4, 5)?;
        let (mut p, mut m, mut v) = (inputs[0].clone(), inputs[2].clone(), inputs[3].clone());
        let ap = optimizer::AdamParams {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: self.decoupled,
            step: step as u64,
        };
        optimizer::adam(
            ap,
            p.as_mut_slice::<f32>()?,
            g,
            m.as_mut_slice::<f32>()?,
            v.as_mut_slice::<f32>()?,
            threads,
        )?;
        Ok(vec![p, m, v])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("beta1", AttrValue::Float(self.beta1))
            .with("beta2", AttrValue::Float(self.beta2))
            .with("eps", AttrValue::Float(self.eps))
            .with("weight_decay", AttrValue::Float(self.weight_decay))
            .with("decoupled", AttrValue::Bool(self.decoupled))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let op = AdamUpdate {
            beta1: attrs.float("beta1")?,
            beta2: attrs.float("beta2")?,
            eps: attrs.float("eps")?,
            weight_decay: attrs.float("weight_decay")?,
            decoupled: attrs.bool("decoupled")?,
        };
        op.check().map_err(|r| attrs.err("beta1", r))?;
        Ok(op)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs = [
            (
                "adam_first_step",
                AdamUpdate::default(),
                0,
                &[7usize, 3][..],
            ),
            (
                "adam_l2",
                AdamUpdate {
                    weight_decay: 1e-2,
                    ..Default::default()
                },
                4,
                &[11][..],
            ),
            (
                "adamw",
                AdamUpdate {
                    beta1: 0.8,
                    beta2: 0.99,
                    eps: 1e-6,
                    weight_decay: 0.05,
                    decoupled: true,
                },
                29,
                &[2, 2, 5][..],
            ),
        ];
        configs
            .into_iter()
            .map(|(name, op, step, shape)| {
                let v: Vec<f32> = (0..shape.iter().product::<usize>())
                    .map(|_| rng.uniform(0.01, 1.0) as f32)
                    .collect();
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: op.into(),
                    inputs: vec![
                        random_f32(rng, shape)?,
                        random_f32(rng, shape)?,
                        random_f32(rng, shape)?,
                        Tensor::from_vec(shape, v)?,
                        Tensor::from_vec(&[], vec![rng.uniform(1e-3, 1e-2) as f32])?,
                        Tensor::from_vec(&[], vec![step])?,
                    ],
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
        let (&[p, g, m, v, lr, step], &[np, nm, nv]) = (inputs, outputs) else {
            return Err(super::exec_err(
                Self::NAME,
                "expects inputs [param, grad, m, v, lr, step] and three outputs",
            ));
        };
        let a = k::Adam {
            len: p.numel(),
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: self.decoupled,
            knobs: crate::backend::gpu::kernels::unary::Knobs::default(),
        };
        k::record_adam::<f32>(
            gpu,
            rec,
            p.buffer,
            g.buffer,
            k::Moments {
                m: m.buffer,
                v: v.buffer,
            },
            k::Scalars {
                lr: lr.buffer,
                step: step.buffer,
            },
            np.buffer,
            k::Moments {
                m: nm.buffer,
                v: nv.buffer,
            },
            &a,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        12 * super::first_numel(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(&[v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // On step 1, m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps).
        let op = AdamUpdate::default();
        let lr = Tensor::from_vec(&[], vec![0.01f32]).unwrap();
        let s1 = Tensor::from_vec(&[], vec![0i32]).unwrap();
        let out = op
            .eval_ref(&[
                &t(&[1.0, -2.0]),
                &t(&[0.5, -3.0]),
                &t(&[0.0, 0.0]),
                &t(&[0.0, 0.0]),
                &lr,
                &s1,
            ])
            .unwrap();
        let p = out[0].to_f32_vec();
        assert!((p[0] - 0.99).abs() < 1e-6, "{p:?}");
        assert!((p[1] - (-1.99)).abs() < 1e-6, "{p:?}");
        let m = out[1].to_f32_vec();
        assert!((m[0] - 0.05).abs() < 1e-7 && (m[1] - (-0.3)).abs() < 1e-7);
        let v = out[2].to_f32_vec();
        assert!((v[0] - 0.00025).abs() < 1e-9 && (v[1] - 0.009).abs() < 1e-8);
    }

    #[test]
    fn adamw_decays_weights_before_the_step() {
        // Zero gradient: only the decoupled decay acts: p * (1 - lr * wd).
        let op = AdamUpdate {
            weight_decay: 0.1,
            decoupled: true,
            ..Default::default()
        };
        let lr = Tensor::from_vec(&[], vec![0.5f32]).unwrap();
        let s = Tensor::from_vec(&[], vec![3i32]).unwrap();
        let out = op
            .eval_ref(&[&t(&[2.0]), &t(&[0.0]), &t(&[0.0]), &t(&[0.0]), &lr, &s])
            .unwrap();
        assert!((out[0].to_f32_vec()[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn refuses_bad_hyperparameters() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let lr = TensorFact::f32(Vec::new());
        let step = TensorFact::new(DType::I32, Vec::<usize>::new());
        let bad = AdamUpdate {
            beta1: 1.0,
            ..Default::default()
        };
        assert!(
            bad.infer(&[&f(&[2]), &f(&[2]), &f(&[2]), &f(&[2]), &lr, &step])
                .is_err()
        );
        let ok = AdamUpdate::default();
        assert!(
            ok.infer(&[&f(&[2]), &f(&[2]), &f(&[2]), &f(&[2]), &lr, &step])
                .is_ok()
        );
        assert!(
            ok.infer(&[&f(&[2]), &f(&[2]), &f(&[3]), &f(&[2]), &lr, &step])
                .is_err()
        );
    }
}
