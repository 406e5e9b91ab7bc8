//! `concat`: joins one or more tensors along `axis` (negative counts from the end). All inputs
//! share a dtype (any) and a rank >= 1, and every dimension but `axis` must be equal.

use super::{AttrValue, MAX_RANK, OpCase, OpDef, out_shape, random_f32, resolve_axis};
use super::{GpuValue, gpu_arg};
use crate::backend::gpu::kernels::concat as gpu_concat;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// Concatenation along an axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Concat {
    /// The joined axis; negative counts from the end.
    pub axis: i64,
}

impl Concat {
    /// Each non-empty input's index and slot in output `y`, in bytes (the GPU copy plan):
    /// row-major, so every input contributes one contiguous run per index of the axes before
    /// `axis`.
    fn pieces(
        &self,
        inputs: &[&TensorFact],
        y: &TensorFact,
    ) -> std::result::Result<Vec<(usize, gpu_concat::Piece)>, String> {
        let axis = resolve_axis(self.axis, y.shape.len())?;
        let size = y.dtype.size();
        let outer: usize = y.shape[..axis].iter().product();
        let y_row_bytes = y.shape[axis..].iter().product::<usize>() * size;
        let mut off = 0;
        let mut pieces = Vec::with_capacity(inputs.len());
        for (i, f) in inputs.iter().enumerate() {
            let chunk_bytes = f.shape.get(axis..).unwrap_or(&[]).iter().product::<usize>() * size;
            if chunk_bytes > 0 && outer > 0 {
                pieces.push((
                    i,
                    gpu_concat::Piece {
                        outer,
                        chunk_bytes,
                        y_row_bytes,
                        y_off_bytes: off,
                    },
                ));
            }
            off += chunk_bytes;
        }
        Ok(pieces)
    }
}

impl OpDef for Concat {
    const NAME: &'static str = "concat";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        let Some(first) = inputs.first() else {
            return Err("expects at least 1 input, got 0".into());
        };
        if first.rank() == 0 {
            return Err("cannot concatenate scalars (rank 0)".into());
        }
        let axis = resolve_axis(self.axis, first.rank())?;
        let mut out = first.shape.clone();
        for (i, f) in inputs.iter().enumerate().skip(1) {
            if f.dtype != first.dtype {
                return Err(format!(
                    "input {i} is {}, input 0 is {}",
                    f.dtype, first.dtype
                ));
            }
            let same_others = f.rank() == first.rank()
                && f.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(d, (a, b))| d == axis || a == b);
            if !same_others {
                return Err(format!(
                    "input {i} has shape {:?}, input 0 {:?}: all dimensions but axis {axis} must \
                     be equal",
                    f.shape, first.shape
                ));
            }
            out[axis] = out[axis]
                .checked_add(f.shape[axis])
                .ok_or_else(|| "the concatenated dimension overflows".to_string())?;
        }
        crate::shape::numel(&out).map_err(|e| e.to_string())?;
        Ok(vec![TensorFact::new(first.dtype, out)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let dtype = inputs[0].dtype();
        let mut y = Tensor::zeros(dtype, &shape)?;
        if y.numel() == 0 {
            return Ok(vec![y]);
        }
        let axis = resolve_axis(self.axis, shape.len())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        // Row-major: every input contributes one contiguous run per outer index.
        let outer = crate::shape::numel(&shape[..axis])?;
        let runs: Vec<usize> = inputs
            .iter()
            .map(|t| crate::shape::numel(&t.dims()[axis..]).map(|n| n * dtype.size()))
            .collect::<Result<_>>()?;
        let dst = y.as_bytes_mut();
        let mut pos = 0;
        for o in 0..outer {
            for (t, &run) in inputs.iter().zip(&runs) {
                let src = t.as_bytes();
                dst[pos..pos + run].copy_from_slice(&src[o * run..(o + 1) * run]);
                pos += run;
            }
        }
        Ok(vec![y])
    }

    /// Any dtype whose per-row runs are whole 32-bit words (f32 and i32 always).
    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        let out = self.infer(inputs)?;
        let y = out.first().ok_or("inference gave no output")?;
        for (_, piece) in self.pieces(inputs, y)? {
            gpu_concat::supports(&piece)?;
        }
        Ok(())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let y = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let facts: Vec<&TensorFact> = inputs.iter().map(|v| v.fact).collect();
        let pieces = self
            .pieces(&facts, y.fact)
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        for (i, piece) in &pieces {
            let x = gpu_arg(Self::NAME, inputs, *i, "input")?;
            gpu_concat::record_piece(gpu, rec, x.buffer, y.buffer, piece)?;
        }
        Ok(())
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME).with("axis", AttrValue::Int(self.axis))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let axis = attrs.int("axis")?;
        let max = MAX_RANK as i64;
        if !(-max..max).contains(&axis) {
            return Err(attrs.err("axis", format!("{axis} is outside -{max}..{max}")));
        }
        Ok(Concat { axis })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, inputs, axis): three ragged inputs on the last axis via -1, axis 0, a single
        // input, NHWC channels, a middle axis.
        let configs: [(&str, &[&[usize]], i64); 5] = [
            ("three_last_axis", &[&[2, 3, 1], &[2, 3, 4], &[2, 3, 2]], -1),
            ("axis0", &[&[1, 4], &[3, 4]], 0),
            ("single", &[&[2, 5]], 1),
            ("nhwc_channels", &[&[1, 3, 2, 3], &[1, 3, 2, 5]], 3),
            ("middle_negative", &[&[2, 1, 3], &[2, 4, 3]], -2),
        ];
        let mut cases = configs
            .iter()
            .map(|&(name, shapes, axis)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: Concat { axis }.into(),
                    inputs: shapes
                        .iter()
                        .map(|s| random_f32(rng, s))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Concat is dtype-agnostic: integer labels too.
        cases.push(OpCase {
            name: format!("{}/i32", Self::NAME),
            op: Concat { axis: 0 }.into(),
            inputs: vec![
                Tensor::from_vec(&[2], vec![3i32, 1])?,
                Tensor::from_vec(&[3], vec![4i32, 1, 5])?,
            ],
        });
        Ok(cases)
    }

    /// Each input's gradient is its own stretch of `dy` along `axis`: one `slice` node per
    /// input (`dy` itself for a single input). Integer inputs get no gradient.
    fn grad(&self, ctx: &mut super::GradContext<'_>) -> Result<Vec<Option<crate::graph::ValueId>>> {
        let Some(dy) = ctx.output_grads.first().copied().flatten() else {
            return Ok(vec![None; ctx.inputs.len()]);
        };
        let mut grads = Vec::with_capacity(ctx.inputs.len());
        let mut start = 0usize;
        for (i, &x) in ctx.inputs.iter().enumerate() {
            let fact = ctx.builder.fact(x)?;
            let axis = resolve_axis(self.axis, fact.rank())
                .map_err(|reason| super::exec_err(Self::NAME, reason))?;
            let len = fact.shape[axis];
            let is_f32 = fact.dtype == crate::tensor::DType::F32;
            let end = start + len;
            grads.push(match (is_f32, ctx.inputs.len()) {
                (false, _) => None,
                (true, 1) => Some(dy),
                (true, _) => Some(ctx.builder.node1(
                    &format!("{}/grad_{i}", ctx.node),
                    super::slice::Slice {
                        axis: self.axis,
                        start,
                        end,
                    },
                    &[dy],
                )?),
            });
            start = end;
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let op = Concat { axis: 1 };
        assert!(op.infer(&[]).is_err());
        assert!(op.infer(&[&f(&[])]).is_err());
        assert!(op.infer(&[&f(&[2])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[3, 3])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[2, 3, 1])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[2])]).is_err());
        let i = TensorFact::new(crate::DType::I32, [2, 3]);
        assert!(op.infer(&[&f(&[2, 3]), &i]).is_err());
        assert!(Concat { axis: -3 }.infer(&[&f(&[2, 3])]).is_err());
        assert_eq!(
            op.infer(&[&f(&[2, 3]), &f(&[2, 1])]).unwrap()[0].shape,
            [2, 4]
        );
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(59);
        for case in Concat::cases(&mut rng).unwrap() {
            // Integer inputs get no gradient (and the check holds them fixed).
            let wrt: Vec<usize> = (0..case.inputs.len())
                .filter(|&i| case.inputs[i].dtype() == crate::tensor::DType::F32)
                .collect();
            let err = crate::ops::gradcheck::check_rule(
                &case.op,
                &case.inputs,
                &wrt,
                Default::default(),
                &mut rng,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn eval_matches_hand_computed() {
        let a = Tensor::from_vec(&[2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let b = Tensor::from_vec(&[2, 1], vec![5f32, 6.]).unwrap();
        let y = Concat { axis: -1 }.eval_ref(&[&a, &b]).unwrap();
        assert_eq!(y[0].dims(), [2, 3]);
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1., 2., 5., 3., 4., 6.]);
        let y = Concat { axis: 0 }
            .eval_ref(&[&a, &b.reshape(&[1, 2]).unwrap()])
            .unwrap();
        assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
    }
}
