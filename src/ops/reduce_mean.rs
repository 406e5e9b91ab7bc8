//! `reduce_mean`: mean over a set of axes, with `reduce_sum`'s axis and `keep_dims` rules
//! (negative axes allowed, reduced axes removed unless `keep_dims`, an empty list is a copy).

use super::GpuValue;
use super::reduce_sum::{reduce_attrs, reduce_cases, reduce_from_attrs, reduce_infer};
use super::{OpCase, OpDef, first_numel, input_f32, out_shape, tensor_f32};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::reduce as reference;
use spore_kernels_cpu::rng::Rng;

/// Mean over axes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReduceMean {
    /// Axes to reduce, negative counting from the end.
    pub axes: Vec<i64>,
    /// Keep the reduced axes as size 1.
    pub keep_dims: bool,
}

impl OpDef for ReduceMean {
    const NAME: &'static str = "reduce_mean";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        reduce_infer(&self.axes, self.keep_dims, inputs)
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let mut y = vec![0f32; crate::shape::numel(&shape)?];
        reference::reduce_mean(x, inputs[0].dims(), &self.axes, &mut y)?;
        Ok(vec![tensor_f32(&shape, y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let mut y = vec![0f32; crate::shape::numel(&shape)?];
        spore_kernels_cpu::reduce::reduce_mean(x, inputs[0].dims(), &self.axes, &mut y, threads)?;
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
        super::reduce_sum::reduce_record_gpu(
            Self::NAME,
            &self.axes,
            true,
            gpu,
            rec,
            inputs,
            outputs,
        )
    }

    fn attrs(&self) -> Attrs {
        reduce_attrs(Self::NAME, &self.axes, self.keep_dims)
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let (axes, keep_dims) = reduce_from_attrs(attrs)?;
        Ok(ReduceMean { axes, keep_dims })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        reduce_cases(rng, Self::NAME, |axes, keep_dims| {
            ReduceMean { axes, keep_dims }.into()
        })
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// `dy` broadcast back over the reduced axes (`broadcast_to`, see
    /// [`reduce_grad`](super::broadcast_to::reduce_grad)).
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::broadcast_to::reduce_grad(ctx, &self.axes, self.keep_dims, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(43);
        let mut cases = ReduceMean::cases(&mut rng).unwrap();
        // A leading axis without keep_dims (no reshape needed), a size-1 reduced axis, and
        // an empty axis list (the identity).
        let extra: [(&[usize], &[i64], bool); 3] = [
            (&[3, 2, 5], &[0], false),
            (&[2, 1, 3], &[1], false),
            (&[4, 3], &[], false),
        ];
        for (i, (x, axes, keep_dims)) in extra.into_iter().enumerate() {
            cases.push(OpCase {
                name: format!("extra_{i}"),
                op: ReduceMean {
                    axes: axes.to_vec(),
                    keep_dims,
                }
                .into(),
                inputs: vec![crate::ops::random_f32(&mut rng, x).unwrap()],
            });
        }
        for case in cases {
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
    fn infer_refuses_bad_axes() {
        let op = ReduceMean {
            axes: vec![2],
            keep_dims: true,
        };
        assert!(op.infer(&[&TensorFact::f32([2, 3])]).is_err());
        assert!(
            op.infer(&[&TensorFact::new(crate::DType::I32, [2, 3, 4])])
                .is_err()
        );
        assert_eq!(
            op.infer(&[&TensorFact::f32([2, 3, 4])]).unwrap()[0].shape,
            [2, 3, 1]
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        let x = Tensor::from_vec(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let op = ReduceMean {
            axes: vec![-2],
            keep_dims: true,
        };
        let y = op.eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [1, 3]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![2.5, 3.5, 4.5]);
    }
}
