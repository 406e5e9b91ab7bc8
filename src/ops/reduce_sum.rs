//! `reduce_sum`: sum over a set of axes (negative axes count from the end; duplicates and
//! out-of-range axes are refused). With `keep_dims` the reduced axes stay as size 1, without
//! it they are removed (reducing every axis then gives a rank-0 scalar). An empty axis list
//! reduces nothing, as NumPy's `axis=()` (NOT ONNX's "reduce everything").
//!
//! The attribute handling, inference and cases here are shared with `reduce_mean`.

use super::GpuValue;
use super::{
    AttrValue, MAX_RANK, Op, OpCase, OpDef, all_f32, arity, first_numel, input_f32, no_zero_dim,
    out_shape, random_f32, resolve_axis, tensor_f32,
};
use crate::backend::gpu::kernels::reduce as gpu_reduce;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::reduce as reference;
use spore_kernels_cpu::rng::Rng;

/// Sum over axes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReduceSum {
    /// Axes to reduce, negative counting from the end.
    pub axes: Vec<i64>,
    /// Keep the reduced axes as size 1.
    pub keep_dims: bool,
}

/// Output fact of a reduction of `inputs[0]` over `axes`.
pub(crate) fn reduce_infer(
    axes: &[i64],
    keep_dims: bool,
    inputs: &[&TensorFact],
) -> std::result::Result<Vec<TensorFact>, String> {
    arity(inputs.len(), 1, 1)?;
    all_f32(inputs)?;
    let shape = &inputs[0].shape;
    no_zero_dim("x", shape)?;
    let mut reduced = vec![false; shape.len()];
    for &ax in axes {
        let i = resolve_axis(ax, shape.len())?;
        if reduced[i] {
            return Err(format!("axis {ax} is repeated in {axes:?}"));
        }
        reduced[i] = true;
    }
    let out: Vec<usize> = shape
        .iter()
        .zip(&reduced)
        .filter_map(|(&d, &r)| match (r, keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok(vec![TensorFact::f32(out)])
}

/// Records a sum (or mean) of `inputs[0]` over `axes` into `outputs[0]`: the GPU path of
/// both reductions.
pub(crate) fn reduce_record_gpu(
    op: &str,
    axes: &[i64],
    mean: bool,
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    inputs: &[GpuValue<'_>],
    outputs: &[GpuValue<'_>],
) -> Result<()> {
    let x = super::gpu_arg(op, inputs, 0, "input")?;
    let y = super::gpu_arg(op, outputs, 0, "output")?;
    let p = gpu_reduce::Reduce {
        shape: x.dims().to_vec(),
        axes: axes.to_vec(),
        mean,
        knobs: gpu_reduce::Knobs::default(),
    };
    gpu_reduce::record::<f32>(gpu, rec, x.buffer, y.buffer, &p)
}

/// Attributes `axes` and `keep_dims` of op `name`.
pub(crate) fn reduce_attrs(name: &'static str, axes: &[i64], keep_dims: bool) -> Attrs {
    Attrs::new(name)
        .with("axes", AttrValue::Ints(axes.to_vec()))
        .with("keep_dims", AttrValue::Bool(keep_dims))
}

/// Reads and checks what [`reduce_attrs`] wrote: at most [`MAX_RANK`] axes, each in
/// `-MAX_RANK..MAX_RANK`, none listed twice (the rank-dependent checks are `infer`'s).
pub(crate) fn reduce_from_attrs(attrs: &Attrs) -> Result<(Vec<i64>, bool)> {
    let axes = attrs.ints("axes")?.to_vec();
    if axes.len() > MAX_RANK {
        return Err(attrs.err("axes", format!("{} axes, at most {MAX_RANK}", axes.len())));
    }
    let max = MAX_RANK as i64;
    for (i, &ax) in axes.iter().enumerate() {
        if !(-max..max).contains(&ax) {
            return Err(attrs.err("axes", format!("axis {ax} is outside -{max}..{max}")));
        }
        if axes[..i].contains(&ax) {
            return Err(attrs.err("axes", format!("axis {ax} is repeated")));
        }
    }
    Ok((axes, attrs.bool("keep_dims")?))
}

/// Seeded cases for a reduction op built by `make`: negative axes, keep_dims both ways,
/// several axes, and every axis down to a scalar.
pub(crate) fn reduce_cases(
    rng: &mut Rng,
    name: &str,
    make: fn(Vec<i64>, bool) -> Op,
) -> Result<Vec<OpCase>> {
    let configs: [(&str, &[usize], &[i64], bool); 4] = [
        ("last_axis", &[2, 3, 4], &[-1], false),
        ("axes0_2_keep", &[3, 4, 5], &[0, 2], true),
        ("rank4_neg_axes", &[2, 3, 2, 4], &[1, -1], false),
        ("all_to_scalar", &[3, 5], &[0, 1], false),
    ];
    configs
        .iter()
        .map(|&(case, x, axes, keep)| {
            Ok(OpCase {
                name: format!("{name}/{case}"),
                op: make(axes.to_vec(), keep),
                inputs: vec![random_f32(rng, x)?],
            })
        })
        .collect()
}

impl OpDef for ReduceSum {
    const NAME: &'static str = "reduce_sum";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        reduce_infer(&self.axes, self.keep_dims, inputs)
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let mut y = vec![0f32; crate::shape::numel(&shape)?];
        reference::reduce_sum(x, inputs[0].dims(), &self.axes, &mut y)?;
        Ok(vec![tensor_f32(&shape, y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let x = input_f32(Self::NAME, inputs, 0)?;
        let mut y = vec![0f32; crate::shape::numel(&shape)?];
        spore_kernels_cpu::reduce::reduce_sum(x, inputs[0].dims(), &self.axes, &mut y, threads)?;
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
            false,
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
        Ok(ReduceSum { axes, keep_dims })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        reduce_cases(rng, Self::NAME, |axes, keep_dims| {
            ReduceSum { axes, keep_dims }.into()
        })
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// `dy` broadcast back over the reduced axes (`broadcast_to`, see
    /// [`reduce_grad`](super::broadcast_to::reduce_grad)).
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        super::broadcast_to::reduce_grad(ctx, &self.axes, self.keep_dims, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(43);
        let mut cases = ReduceSum::cases(&mut rng).unwrap();
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
                op: ReduceSum {
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

    fn op(axes: &[i64], keep_dims: bool) -> ReduceSum {
        ReduceSum {
            axes: axes.to_vec(),
            keep_dims,
        }
    }

    #[test]
    fn infer_refuses_bad_axes() {
        let x = TensorFact::f32([2, 3, 4]);
        assert!(op(&[3], false).infer(&[&x]).is_err());
        assert!(op(&[-4], false).infer(&[&x]).is_err());
        assert!(op(&[1, -2], false).infer(&[&x]).is_err());
        assert!(op(&[0], false).infer(&[&TensorFact::f32([])]).is_err());
        assert!(op(&[0], false).infer(&[&TensorFact::f32([2, 0])]).is_err());
        assert_eq!(op(&[0, -1], false).infer(&[&x]).unwrap()[0].shape, [3]);
        assert_eq!(op(&[0, -1], true).infer(&[&x]).unwrap()[0].shape, [1, 3, 1]);
        assert_eq!(op(&[], false).infer(&[&x]).unwrap()[0].shape, [2, 3, 4]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        let x = Tensor::from_vec(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let y = op(&[-1], false).eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [2]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![6., 15.]);
        let y = op(&[0, 1], true).eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [1, 1]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![21.]);
    }

    #[test]
    fn from_attrs_refuses_bad_axes() {
        for axes in [vec![1, 1], vec![1000], vec![i64::MIN]] {
            let a = reduce_attrs(ReduceSum::NAME, &axes, false);
            assert!(ReduceSum::from_attrs(&a).is_err(), "{axes:?}");
        }
    }
}
