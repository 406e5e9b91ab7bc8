//! `reshape`: the same elements under a new shape. The `shape` attribute lists the new
//! dimensions; one of them may be `-1`, inferred from the element count. `0` is NOT special
//! (it is a zero-size dimension, unlike ONNX's "copy the input dimension"). The element count
//! must match. Any dtype.

use super::{AttrValue, MAX_RANK, OpCase, OpDef, arity, out_shape, random_f32};
use super::{GpuValue, gpu_arg};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// Reshape to a fixed shape (with at most one inferred `-1`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reshape {
    /// The new dimensions; each `>= 0`, or `-1` once.
    pub shape: Vec<i64>,
}

impl Reshape {
    /// The output dimensions for an input of `input`.
    pub fn target(&self, input: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let overflow = || format!("element count of {input:?} overflows");
        let n = input
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(overflow)?;
        let mut known = 1usize;
        let mut infer_at = None;
        let mut out = Vec::with_capacity(self.shape.len());
        for (i, &d) in self.shape.iter().enumerate() {
            if d == -1 {
                if infer_at.replace(i).is_some() {
                    return Err(format!("shape {:?} has more than one -1", self.shape));
                }
                out.push(0);
                continue;
            }
            let d = usize::try_from(d)
                .map_err(|_| format!("shape {:?} has a negative dimension {d}", self.shape))?;
            known = known
                .checked_mul(d)
                .ok_or_else(|| format!("element count of shape {:?} overflows", self.shape))?;
            out.push(d);
        }
        match infer_at {
            Some(i) => {
                if known == 0 || n % known != 0 {
                    return Err(format!(
                        "cannot infer the -1 of {:?} from {n} elements of {input:?}",
                        self.shape
                    ));
                }
                out[i] = n / known;
            }
            None if known != n => {
                return Err(format!(
                    "shape {:?} has {known} elements, the input {input:?} has {n}",
                    self.shape
                ));
            }
            None => {}
        }
        Ok(out)
    }
}

impl OpDef for Reshape {
    const NAME: &'static str = "reshape";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        let out = self.target(&inputs[0].shape)?;
        Ok(vec![TensorFact::new(inputs[0].dtype, out)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        Ok(vec![inputs[0].clone().reshape(&shape)?])
    }

    /// Any dtype: the GPU path is a byte copy (no kernel), which the planner may later
    /// replace by aliasing the buffer.
    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.infer(inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        _gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let x = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let bytes = x.numel() * x.fact.dtype.size();
        crate::backend::gpu::kernels::concat::record_copy(rec, x.buffer, y.buffer, bytes)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("shape", AttrValue::Ints(self.shape.clone()))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let shape = attrs.ints("shape")?.to_vec();
        if shape.len() > MAX_RANK {
            return Err(attrs.err("shape", format!("rank {} exceeds {MAX_RANK}", shape.len())));
        }
        if let Some(d) = shape.iter().find(|&&d| d < -1) {
            return Err(attrs.err("shape", format!("dimension {d} is below -1")));
        }
        if shape.iter().filter(|&&d| d == -1).count() > 1 {
            return Err(attrs.err("shape", "more than one -1"));
        }
        Ok(Reshape { shape })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs: [(&str, &[usize], &[i64]); 4] = [
            ("infer_last", &[2, 3, 4], &[4, -1]),
            ("explicit", &[6, 5], &[5, 3, 2]),
            ("to_vector", &[2, 3, 4], &[-1]),
            ("infer_first_to_rank4", &[12, 2], &[-1, 2, 3, 1]),
        ];
        let mut cases = configs
            .iter()
            .map(|&(name, x, shape)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: Reshape {
                        shape: shape.to_vec(),
                    }
                    .into(),
                    inputs: vec![random_f32(rng, x)?],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Reshape is dtype-agnostic: integer labels too.
        cases.push(OpCase {
            name: format!("{}/i32", Self::NAME),
            op: Reshape { shape: vec![3, 2] }.into(),
            inputs: vec![Tensor::from_vec(&[6], vec![3i32, 1, 4, 1, 5, 9])?],
        });
        Ok(cases)
    }

    /// `dx = reshape(dy, shape of x)`; see [`reshape_back`].
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        reshape_back(ctx)
    }
}

/// The gradient rule of the pure re-views (`reshape`, `flatten`): `dy` reshaped back to the
/// input's shape. Integer inputs (labels, indices) get no gradient.
pub(crate) fn reshape_back(
    ctx: &mut super::GradContext<'_>,
) -> Result<Vec<Option<crate::graph::ValueId>>> {
    let (Some(dy), Some(&x)) = (
        ctx.output_grads.first().copied().flatten(),
        ctx.inputs.first(),
    ) else {
        return Ok(vec![None]);
    };
    let fact = ctx.builder.fact(x)?;
    if fact.dtype != crate::tensor::DType::F32 {
        return Ok(vec![None]);
    }
    let shape = fact.shape.iter().map(|&d| d as i64).collect();
    let dx = ctx
        .builder
        .node1(&format!("{}/grad_x", ctx.node), Reshape { shape }, &[dy])?;
    Ok(vec![Some(dx)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(shape: &[i64]) -> Reshape {
        Reshape {
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let x = TensorFact::f32([2, 3, 4]);
        assert!(op(&[5, -1]).infer(&[&x]).is_err());
        assert!(op(&[2, 3]).infer(&[&x]).is_err());
        assert!(op(&[-1, -1]).infer(&[&x]).is_err());
        assert!(op(&[0, -1]).infer(&[&x]).is_err());
        assert!(op(&[-2, -12]).infer(&[&x]).is_err());
        assert!(op(&[i64::MAX, i64::MAX]).infer(&[&x]).is_err());
        assert!(op(&[24]).infer(&[]).is_err());
        assert_eq!(
            op(&[0, 5]).infer(&[&TensorFact::f32([3, 0])]).unwrap()[0].shape,
            [0, 5]
        );
        assert_eq!(op(&[-1, 6]).infer(&[&x]).unwrap()[0].shape, [4, 6]);
        assert_eq!(
            op(&[]).infer(&[&TensorFact::f32([1, 1])]).unwrap()[0].shape,
            [0usize; 0]
        );
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(47);
        for case in Reshape::cases(&mut rng).unwrap() {
            // Integer inputs get no gradient (and the check holds them fixed).
            let wrt: &[usize] = if case.inputs[0].dtype() == crate::tensor::DType::F32 {
                &[0]
            } else {
                &[]
            };
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                wrt,
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn eval_keeps_data() {
        let x = Tensor::from_vec(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let y = op(&[3, -1]).eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [3, 2]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn from_attrs_refuses_bad_shapes() {
        for shape in [vec![-2], vec![-1, 2, -1]] {
            assert!(
                Reshape::from_attrs(&op(&shape).attrs()).is_err(),
                "{shape:?}"
            );
        }
    }
}
