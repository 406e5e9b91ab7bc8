//! `flatten`: `[d0, ..., d(axis-1), d(axis), ...]` -> `[d0 * ... * d(axis-1), d(axis) * ...]`,
//! always rank 2 (ONNX `Flatten`). `axis` defaults to 1 (keep the batch axis); it may be
//! negative (counting from the end) and ranges over `-rank..=rank`, so `axis = 0` gives
//! `[1, numel]` and `axis = rank` gives `[numel, 1]`. Any dtype.

use super::{AttrValue, MAX_RANK, OpCase, OpDef, arity, out_shape, random_f32};
use super::{GpuValue, gpu_arg};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// Flatten to a matrix at `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Flatten {
    /// Where the column axes start; negative counts from the end.
    pub axis: i64,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { axis: 1 }
    }
}

impl Flatten {
    /// The output `[rows, cols]` for an input of `input`.
    pub fn target(&self, input: &[usize]) -> std::result::Result<[usize; 2], String> {
        let rank = input.len();
        let r = i64::try_from(rank).map_err(|e| e.to_string())?;
        let resolved = if self.axis < 0 {
            self.axis.checked_add(r)
        } else {
            Some(self.axis)
        };
        let axis = match resolved {
            Some(a) if (0..=r).contains(&a) => usize::try_from(a).map_err(|e| e.to_string())?,
            _ => return Err(format!("axis {} is outside -{rank}..={rank}", self.axis)),
        };
        let prod = |d: &[usize]| {
            d.iter()
                .try_fold(1usize, |a, &x| a.checked_mul(x))
                .ok_or_else(|| format!("element count of {input:?} overflows"))
        };
        Ok([prod(&input[..axis])?, prod(&input[axis..])?])
    }
}

impl OpDef for Flatten {
    const NAME: &'static str = "flatten";

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
        Attrs::new(Self::NAME).with("axis", AttrValue::Int(self.axis))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let axis = attrs.int("axis")?;
        let max = MAX_RANK as i64;
        if !(-max..=max).contains(&axis) {
            return Err(attrs.err("axis", format!("{axis} is outside -{max}..={max}")));
        }
        Ok(Flatten { axis })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        let configs: [(&str, &[usize], i64); 4] = [
            ("default_axis1", &[2, 3, 2, 2], 1),
            ("negative_axis", &[2, 3, 2, 5], -2),
            ("axis0", &[3, 4], 0),
            ("axis_rank", &[2, 3, 2], 3),
        ];
        configs
            .iter()
            .map(|&(name, x, axis)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: Flatten { axis }.into(),
                    inputs: vec![random_f32(rng, x)?],
                })
            })
            .collect()
    }

    /// `dx = reshape(dy, shape of x)` (see [`super::reshape::reshape_back`]).
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::reshape::reshape_back(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_axes() {
        let x = TensorFact::f32([2, 3, 4]);
        assert!(Flatten { axis: 4 }.infer(&[&x]).is_err());
        assert!(Flatten { axis: -4 }.infer(&[&x]).is_err());
        assert!(Flatten { axis: i64::MIN }.infer(&[&x]).is_err());
        assert!(Flatten::default().infer(&[&TensorFact::f32([])]).is_err());
        assert!(Flatten::default().infer(&[]).is_err());
        assert_eq!(Flatten::default().infer(&[&x]).unwrap()[0].shape, [2, 12]);
        assert_eq!(Flatten { axis: -3 }.infer(&[&x]).unwrap()[0].shape, [1, 24]);
        assert_eq!(
            Flatten { axis: 0 }.infer(&[&TensorFact::f32([])]).unwrap()[0].shape,
            [1, 1]
        );
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(53);
        for case in Flatten::cases(&mut rng).unwrap() {
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
    fn eval_keeps_data() {
        let x = Tensor::from_vec(&[1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let y = Flatten { axis: -1 }.eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [2, 2]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
    }
}
