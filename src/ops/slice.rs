//! `slice`: the elements of `x` with index `start..end` along `axis` (negative counts from
//! the end), every other axis whole. Any dtype. It is the gradient of `concat`: each input's
//! gradient is its own stretch of `dy`.

use super::GpuValue;
use super::{AttrValue, MAX_RANK, OpCase, OpDef, arity, out_shape, random_f32, resolve_axis};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::DType;
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// A contiguous range along one axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slice {
    /// The sliced axis; negative counts from the end.
    pub axis: i64,
    /// First index kept.
    pub start: usize,
    /// One past the last index kept (`start < end <= dim`).
    pub end: usize,
}

impl OpDef for Slice {
    const NAME: &'static str = "slice";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        let x = inputs[0];
        if x.rank() == 0 {
            return Err("cannot slice a scalar (rank 0)".into());
        }
        let axis = resolve_axis(self.axis, x.rank())?;
        let dim = x.shape[axis];
        if !(self.start < self.end && self.end <= dim) {
            return Err(format!(
                "range {}..{} is empty or outside 0..{dim} of axis {axis}",
                self.start, self.end
            ));
        }
        let mut out = x.shape.clone();
        out[axis] = self.end - self.start;
        Ok(vec![TensorFact::new(x.dtype, out)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let x = inputs[0];
        let dims = x.dims();
        let axis = resolve_axis(self.axis, dims.len())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = Tensor::zeros(x.dtype(), &shape)?;
        if y.numel() == 0 {
            return Ok(vec![y]);
        }
        // Row-major: per outer index, one contiguous run of `(end - start) * inner` elements.
        let size = x.dtype().size();
        let outer = crate::shape::numel(&dims[..axis])?;
        let inner = crate::shape::numel(&dims[axis + 1..])? * size;
        let (src_run, dst_run) = (dims[axis] * inner, (self.end - self.start) * inner);
        let skip = self.start * inner;
        let src = x.as_bytes();
        for (o, dst) in y
            .as_bytes_mut()
            .chunks_exact_mut(dst_run)
            .enumerate()
            .take(outer)
        {
            let from = o * src_run + skip;
            dst.copy_from_slice(&src[from..from + dst_run]);
        }
        Ok(vec![y])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        let out = self.infer(inputs)?;
        match out.first().map(|f| f.dtype) {
            Some(DType::F32 | DType::I32) => Ok(()),
            Some(other) => Err(format!("slices 4-byte elements on the GPU, got {other}")),
            None => Err("no output".into()),
        }
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let (&[x], &[_]) = (inputs, outputs) else {
            return Err(super::exec_err(
                Self::NAME,
                "expects one input and one output",
            ));
        };
        let y = outputs[0];
        let axis = resolve_axis(self.axis, x.fact.rank())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let p = kernels::broadcast_grad::Slice {
            shape: x.dims().to_vec(),
            axis,
            start: self.start,
            end: self.end,
            knobs: kernels::broadcast_grad::Knobs::default(),
        };
        kernels::broadcast_grad::record_slice(gpu, rec, x.buffer, y.buffer, &p)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("axis", AttrValue::Int(self.axis))
            .with("start", AttrValue::Int(self.start as i64))
            .with("end", AttrValue::Int(self.end as i64))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let axis = attrs.int("axis")?;
        let max = MAX_RANK as i64;
        if !(-max..max).contains(&axis) {
            return Err(attrs.err("axis", format!("{axis} is outside -{max}..{max}")));
        }
        let start = attrs.usize("start", usize::MAX)?;
        let end = attrs.usize("end", usize::MAX)?;
        if start >= end {
            return Err(attrs.err("end", format!("range {start}..{end} is empty")));
        }
        Ok(Slice { axis, start, end })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, x, axis, start, end): the last axis via -1, axis 0, a middle axis, the
        // whole axis.
        let configs: [(&str, &[usize], i64, usize, usize); 4] = [
            ("last_axis", &[2, 3, 7], -1, 1, 5),
            ("axis0", &[5, 3], 0, 3, 5),
            ("middle", &[2, 13, 3], 1, 0, 4),
            ("whole", &[3, 2], 1, 0, 2),
        ];
        configs
            .iter()
            .map(|&(name, x, axis, start, end)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: Slice { axis, start, end }.into(),
                    inputs: vec![random_f32(rng, x)?],
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(axis: i64, start: usize, end: usize) -> Slice {
        Slice { axis, start, end }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let x = TensorFact::f32([2, 3, 4]);
        assert!(op(3, 0, 1).infer(&[&x]).is_err());
        assert!(op(-4, 0, 1).infer(&[&x]).is_err());
        assert!(op(1, 2, 2).infer(&[&x]).is_err());
        assert!(op(1, 2, 4).infer(&[&x]).is_err());
        assert!(op(0, 0, 1).infer(&[&TensorFact::f32([])]).is_err());
        assert!(op(0, 0, 1).infer(&[]).is_err());
        assert_eq!(op(-2, 1, 3).infer(&[&x]).unwrap()[0].shape, [2, 2, 4]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        let x = Tensor::from_vec(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let y = op(1, 1, 3).eval_ref(&[&x]).unwrap();
        assert_eq!(y[0].dims(), [2, 2]);
        assert_eq!(y[0].to_vec::<i32>().unwrap(), vec![2, 3, 5, 6]);
    }

    #[test]
    fn from_attrs_refuses_bad_ranges() {
        assert!(Slice::from_attrs(&op(0, 3, 3).attrs()).is_err());
        assert!(Slice::from_attrs(&op(1000, 0, 1).attrs()).is_err());
        let neg = Attrs::new(Slice::NAME)
            .with("axis", AttrValue::Int(0))
            .with("start", AttrValue::Int(-1))
            .with("end", AttrValue::Int(2));
        assert!(Slice::from_attrs(&neg).is_err());
    }
}
