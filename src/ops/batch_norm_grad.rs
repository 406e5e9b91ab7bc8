//! `batch_norm_grad`: the backward op of batch normalisation over the last (channel) axis,
//! outputs `[dx, dgamma, dbeta]`. Training mode (`training = true`, inputs `[x, gamma, dy]`)
//! differentiates through the batch statistics, which it recomputes from `x` (one pass, cheaper
//! than carrying them from the forward); inference mode (inputs `[x, gamma, dy, mean, var]`)
//! treats the given statistics as constants, the gradient of
//! [`BatchNorm`](super::batch_norm::BatchNorm).

use super::GpuValue;
use super::{OpCase, OpDef, all_f32, arity, exec_err, input_f32, random_f32, rows_last};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::batch_norm as reference;
use spore_kernels_cpu::rng::Rng;

/// Gradient of batch normalisation with respect to `x`, `gamma` and `beta`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormGrad {
    /// Added to the variance before the square root; finite and non-negative.
    pub eps: f64,
    /// Differentiate through the batch statistics (the forward normalised with them).
    pub training: bool,
}

impl Default for BatchNormGrad {
    fn default() -> Self {
        BatchNormGrad {
            eps: 1e-5,
            training: false,
        }
    }
}

impl BatchNormGrad {
    /// `(rows, channels)` of `x`, checking every input's shape.
    fn shape(&self, inputs: &[&TensorFact]) -> std::result::Result<(usize, usize), String> {
        let n = if self.training { 3 } else { 5 };
        arity(inputs.len(), n, n)?;
        all_f32(inputs)?;
        let (rows, c) = rows_last("x", &inputs[0].shape)?;
        if inputs[2].shape != inputs[0].shape {
            return Err(format!(
                "dy has shape {:?}, x has {:?}: they must match",
                inputs[2].shape, inputs[0].shape
            ));
        }
        for (name, f) in [("gamma", 1), ("mean", 3), ("var", 4)]
            .into_iter()
            .filter_map(|(name, i)| inputs.get(i).map(|f| (name, f)))
        {
            if f.shape != [c] {
                return Err(format!("{name} has shape {:?}, expected [{c}]", f.shape));
            }
        }
        if self.training && rows < 2 {
            return Err(format!(
                "training statistics need at least 2 rows per channel, x {:?} has {rows}",
                inputs[0].shape
            ));
        }
        Ok((rows, c))
    }

    fn run(&self, inputs: &[&Tensor], threads: Option<usize>) -> Result<Vec<Tensor>> {
        let facts: Vec<TensorFact> = inputs
            .iter()
            .map(|t| TensorFact::new(t.dtype(), t.dims()))
            .collect();
        let refs: Vec<&TensorFact> = facts.iter().collect();
        let (rows, channels) = self.shape(&refs).map_err(|r| exec_err(Self::NAME, r))?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let gamma = input_f32(Self::NAME, inputs, 1)?;
        let dy = input_f32(Self::NAME, inputs, 2)?;
        let mut dx = vec![0f32; x.len()];
        let (mut dgamma, mut dbeta) = (vec![0f32; channels], vec![0f32; channels]);
        if self.training {
            let p = reference::BatchNormTrainParams {
                rows,
                channels,
                eps: self.eps,
                momentum: 0.0,
            };
            // The batch statistics, as the training forward saved them (the running
            // statistics and `y` it also writes are scratch here).
            let (mut rm, mut rv) = (vec![0f32; channels], vec![1f32; channels]);
            let (mut mean, mut inv_std) = (vec![0f32; channels], vec![0f32; channels]);
            let mut y = vec![0f32; x.len()];
            let beta = vec![0f32; channels];
            match threads {
                None => {
                    reference::batch_norm_train(
                        p,
                        x,
                        gamma,
                        &beta,
                        &mut rm,
                        &mut rv,
                        &mut y,
                        &mut mean,
                        &mut inv_std,
                    )?;
                    reference::batch_norm_grad(
                        p,
                        x,
                        dy,
                        gamma,
                        &mean,
                        &inv_std,
                        &mut dx,
                        &mut dgamma,
                        &mut dbeta,
                    )?;
                }
                Some(t) => {
                    use spore_kernels_cpu::batch_norm as fast;
                    fast::batch_norm_train(
                        p,
                        x,
                        gamma,
                        &beta,
                        &mut rm,
                        &mut rv,
                        &mut y,
                        &mut mean,
                        &mut inv_std,
                        t,
                    )?;
                    fast::batch_norm_grad(
                        p,
                        x,
                        dy,
                        gamma,
                        &mean,
                        &inv_std,
                        &mut dx,
                        &mut dgamma,
                        &mut dbeta,
                        t,
                    )?;
                }
            }
        } else {
            let p = reference::BatchNormParams {
                rows,
                channels,
                eps: self.eps,
            };
            let mean = input_f32(Self::NAME, inputs, 3)?;
            let var = input_f32(Self::NAME, inputs, 4)?;
            match threads {
                None => reference::batch_norm_inference_grad(
                    p,
                    x,
                    dy,
                    mean,
                    var,
                    gamma,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                )?,
                Some(t) => spore_kernels_cpu::batch_norm::batch_norm_inference_grad(
                    p,
                    x,
                    dy,
                    mean,
                    var,
                    gamma,
                    &mut dx,
                    &mut dgamma,
                    &mut dbeta,
                    t,
                )?,
            }
        }
        Ok(vec![
            Tensor::from_vec(inputs[0].dims(), dx)?,
            Tensor::from_vec(&[channels], dgamma)?,
            Tensor::from_vec(&[channels], dbeta)?,
        ])
    }
}

impl OpDef for BatchNormGrad {
    const NAME: &'static str = "batch_norm_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        let (_, c) = self.shape(inputs)?;
        Ok(vec![
            TensorFact::f32(inputs[0].shape.clone()),
            TensorFact::f32([c]),
            TensorFact::f32([c]),
        ])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.run(inputs, None)
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        self.run(inputs, Some(threads))
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("eps", AttrValue::Float(self.eps))
            .with("training", AttrValue::Bool(self.training))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let eps = attrs.float("eps")?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(attrs.err("eps", format!("{eps} must be finite and non-negative")));
        }
        Ok(BatchNormGrad {
            eps,
            training: attrs.bool("training")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, eps, training): NHWC with ragged channels, a matrix, eps 0 in training.
        let configs: [(&str, &[usize], f64, bool); 4] = [
            ("train_nhwc", &[2, 3, 4, 5], 1e-5, true),
            ("train_matrix_eps0", &[7, 13], 0.0, true),
            ("inference_nhwc", &[2, 3, 4, 5], 1e-5, false),
            ("inference_matrix", &[7, 3], 1e-3, false),
        ];
        configs
            .into_iter()
            .map(|(name, x, eps, training)| {
                let c = x.last().copied().unwrap_or(1);
                let mut inputs = vec![
                    random_f32(rng, x)?,
                    random_f32(rng, &[c])?,
                    random_f32(rng, x)?,
                ];
                if !training {
                    inputs.push(random_f32(rng, &[c])?);
                    inputs.push(random_f32(rng, &[c])?.map_f32(|v| v.abs() + 0.25)?);
                }
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: BatchNormGrad { eps, training }.into(),
                    inputs,
                })
            })
            .collect()
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.shape(inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        use kernels::batch_norm_grad as k;
        let (Some(x), Some(gamma), Some(dy), &[dx, dgamma, dbeta]) =
            (inputs.first(), inputs.get(1), inputs.get(2), outputs)
        else {
            return Err(exec_err(
                Self::NAME,
                "expects inputs [x, gamma, dy, ..] and three outputs",
            ));
        };
        let (rows, channels) = rows_last("x", x.dims()).map_err(|r| exec_err(Self::NAME, r))?;
        let stats = match (self.training, inputs.get(3), inputs.get(4)) {
            (true, None, None) => None,
            (false, Some(mean), Some(var)) => Some(k::FrozenStats {
                mean: mean.buffer,
                var: var.buffer,
            }),
            _ => return Err(exec_err(Self::NAME, "wrong input count for the mode")),
        };
        let p = k::BatchNormGrad {
            rows,
            channels,
            eps: self.eps,
            training: self.training,
            knobs: k::Knobs::default(),
        };
        k::record::<f32>(
            gpu,
            rec,
            x.buffer,
            gamma.buffer,
            dy.buffer,
            stats,
            dx.buffer,
            dgamma.buffer,
            dbeta.buffer,
            &p,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // Per element: the two reductions and the dx formula (training adds the statistics).
        let per = if self.training { 10 } else { 5 };
        super::first_numel(inputs).saturating_mul(per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let (x, c) = (f(&[4, 3]), f(&[3]));
        let train = BatchNormGrad {
            eps: 1e-5,
            training: true,
        };
        let inf = BatchNormGrad::default();
        assert!(train.infer(&[&x, &c]).is_err());
        assert!(train.infer(&[&x, &f(&[4]), &x]).is_err());
        assert!(train.infer(&[&x, &c, &f(&[3, 4])]).is_err());
        assert!(train.infer(&[&f(&[1, 3]), &c, &f(&[1, 3])]).is_err());
        assert!(inf.infer(&[&x, &c, &x]).is_err());
        assert!(inf.infer(&[&x, &c, &x, &c, &f(&[2])]).is_err());
        let out = train.infer(&[&x, &c, &x]).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            (&out[0].shape[..], &out[1].shape[..]),
            (&[4, 3][..], &[3][..])
        );
        assert_eq!(inf.infer(&[&x, &c, &x, &c, &c]).unwrap().len(), 3);
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(26);
        for case in BatchNormGrad::cases(&mut rng).unwrap() {
            crate::ops::grad_util::tests::check_cpu_vs_ref(&case);
        }
    }

    /// Training mode against central differences, in f64, of the reference training forward
    /// (no forward op normalises with batch statistics yet, so `check_rule` cannot reach it).
    #[test]
    fn training_grad_matches_finite_differences_of_the_training_forward() {
        let mut rng = Rng::new(27);
        let (rows, c) = (6usize, 3usize);
        let x: Vec<f64> = (0..rows * c).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let g: Vec<f64> = (0..c).map(|_| rng.uniform(0.5, 1.5)).collect();
        let b: Vec<f64> = (0..c).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let dy: Vec<f64> = (0..rows * c).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let p = reference::BatchNormTrainParams {
            rows,
            channels: c,
            eps: 1e-3,
            momentum: 0.0,
        };
        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            let (mut rm, mut rv, mut m, mut s) =
                (vec![0.0; c], vec![1.0; c], vec![0.0; c], vec![0.0; c]);
            let mut y = vec![0.0; rows * c];
            reference::batch_norm_train(p, x, g, b, &mut rm, &mut rv, &mut y, &mut m, &mut s)
                .unwrap();
            y.iter().zip(&dy).map(|(a, d)| a * d).sum()
        };
        let numeric = |v: &[f64], which: usize| -> Vec<f64> {
            (0..v.len())
                .map(|i| {
                    let h = 1e-6;
                    let at = |d: f64| {
                        let mut w = v.to_vec();
                        w[i] += d;
                        match which {
                            0 => loss(&w, &g, &b),
                            1 => loss(&x, &w, &b),
                            _ => loss(&x, &g, &w),
                        }
                    };
                    (at(h) - at(-h)) / (2.0 * h)
                })
                .collect()
        };
        let t = |v: &[f64], dims: &[usize]| {
            Tensor::from_vec(dims, v.iter().map(|&a| a as f32).collect::<Vec<f32>>()).unwrap()
        };
        let op = BatchNormGrad {
            eps: 1e-3,
            training: true,
        };
        let (xt, gt, dyt) = (t(&x, &[rows, c]), t(&g, &[c]), t(&dy, &[rows, c]));
        let got = op.eval_ref(&[&xt, &gt, &dyt]).unwrap();
        for (k, (want, name)) in [
            (numeric(&x, 0), "dx"),
            (numeric(&g, 1), "dgamma"),
            (numeric(&b, 2), "dbeta"),
        ]
        .iter()
        .enumerate()
        {
            let want32: Vec<f32> = want.iter().map(|&a| a as f32).collect();
            let err = crate::ops::grad_util::tests::rel_l2(&got[k].to_f32_vec(), &want32);
            println!("batch_norm_grad training {name}: rel err {err:.2e}");
            assert!(err < 1e-4, "{name}: {err:.2e}");
        }
    }
}
