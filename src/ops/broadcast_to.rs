//! `broadcast_to`: `y = scale * x` stretched to a target `shape` by NumPy broadcasting (shapes
//! right-aligned, missing leading axes and axes of size 1 stretch). It is the gradient of
//! `reduce_sum` (`scale = 1`) and `reduce_mean` (`scale = 1 / count`), whose upstream
//! gradient is broadcast back over the reduced axes; the scale is folded in so the mean's
//! gradient costs one pass, not two.

use super::GpuValue;
use super::{
    AttrValue, MAX_RANK, OpCase, OpDef, all_f32, arity, ints_attr, no_zero_dim, random_f32,
    tensor_f32,
};
use crate::backend::gpu::kernels;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::reduce as reference;
use spore_kernels_cpu::rng::Rng;

/// Broadcast to a fixed shape, times a scale.
#[derive(Debug, Clone, PartialEq)]
pub struct BroadcastTo {
    /// The output shape.
    pub shape: Vec<usize>,
    /// Factor applied to every element (finite; 1 for a plain broadcast).
    pub scale: f64,
}

impl BroadcastTo {
    /// The axes of the target along which `x` (shape `x`) is stretched: the leading axes `x`
    /// lacks and its size-1 axes. Errors when `x` does not broadcast to the target.
    pub fn stretched_axes(&self, x: &[usize]) -> std::result::Result<Vec<i64>, String> {
        no_zero_dim("x", x)?;
        no_zero_dim("shape", &self.shape)?;
        crate::shape::numel(&self.shape).map_err(|e| e.to_string())?;
        let rank = self.shape.len();
        if x.len() > rank {
            return Err(format!(
                "x {x:?} has a higher rank than the target {:?}",
                self.shape
            ));
        }
        let lead = rank - x.len();
        let mut axes = Vec::new();
        for (i, &t) in self.shape.iter().enumerate() {
            let d = if i < lead { 1 } else { x[i - lead] };
            if d == 1 {
                axes.push(i as i64);
            } else if d != t {
                return Err(format!(
                    "x {x:?} does not broadcast to {:?} (axis {i}: {d} vs {t})",
                    self.shape
                ));
            }
        }
        Ok(axes)
    }
}

impl BroadcastTo {
    /// The GPU kernel's description for an input of shape `x`.
    fn kernel(&self, x: &[usize]) -> kernels::broadcast_grad::BroadcastTo {
        kernels::broadcast_grad::BroadcastTo {
            x_shape: x.to_vec(),
            shape: self.shape.clone(),
            scale: self.scale,
            knobs: kernels::broadcast_grad::Knobs::default(),
        }
    }
}

impl OpDef for BroadcastTo {
    const NAME: &'static str = "broadcast_to";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 1, 1)?;
        all_f32(inputs)?;
        if !self.scale.is_finite() {
            return Err(format!("scale {} is not finite", self.scale));
        }
        self.stretched_axes(&inputs[0].shape)?;
        Ok(vec![TensorFact::f32(self.shape.clone())])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let x = input_f32(inputs)?;
        let axes = self
            .stretched_axes(inputs[0].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let mut y = vec![0f32; crate::shape::numel(&self.shape)?];
        // The input holds exactly the keepdims layout of a reduction of the target over the
        // stretched axes, so the reference reduction gradient is the broadcast.
        reference::reduce_sum_grad(&self.shape, &axes, x, &mut y)?;
        if self.scale != 1.0 {
            y.iter_mut()
                .for_each(|v| *v = (f64::from(*v) * self.scale) as f32);
        }
        Ok(vec![tensor_f32(&self.shape, y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        super::infer_eval(self, inputs)?;
        let x = input_f32(inputs)?;
        let total = crate::shape::numel(&self.shape)?;
        let count = total / x.len().max(1);
        // The reduction gradients of the tuned kernels are exactly this op for scale 1 (sum)
        // and 1 / count (mean); other scales take the run-copy loop below.
        if self.scale == 1.0 || self.scale == 1.0 / count as f64 {
            let axes = self
                .stretched_axes(inputs[0].dims())
                .map_err(|reason| super::exec_err(Self::NAME, reason))?;
            let mut y = vec![0f32; total];
            if self.scale == 1.0 {
                spore_kernels_cpu::reduce::reduce_sum_grad(&self.shape, &axes, x, &mut y, threads)?;
            } else {
                spore_kernels_cpu::reduce::reduce_mean_grad(
                    &self.shape,
                    &axes,
                    x,
                    &mut y,
                    threads,
                )?;
            }
            return Ok(vec![tensor_f32(&self.shape, y)?]);
        }
        let y = broadcast_fast(x, inputs[0].dims(), &self.shape, self.scale);
        Ok(vec![tensor_f32(&self.shape, y)?])
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
            .with("shape", ints_attr(&self.shape))
            .with("scale", AttrValue::Float(self.scale))
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        let dims = attrs.ints("shape")?;
        if dims.len() > MAX_RANK {
            return Err(attrs.err("shape", format!("rank {} > {MAX_RANK}", dims.len())));
        }
        let shape = dims
            .iter()
            .map(|&d| match usize::try_from(d) {
                Ok(d) if d > 0 => Ok(d),
                _ => Err(attrs.err("shape", format!("dimension {d} is not positive"))),
            })
            .collect::<Result<Vec<usize>>>()?;
        crate::shape::numel(&shape).map_err(|e| attrs.err("shape", e.to_string()))?;
        let scale = attrs.float("scale")?;
        if !scale.is_finite() {
            return Err(attrs.err("scale", format!("{scale} is not finite")));
        }
        Ok(BroadcastTo { shape, scale })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (x, target, scale): a middle axis, leading axes plus a size-1 axis, a scalar, and
        // a no-op broadcast with a mean-like scale.
        let configs: [(&str, &[usize], &[usize], f64); 4] = [
            ("middle_axis", &[3, 1, 7], &[3, 5, 7], 1.0),
            ("leading_and_one", &[4, 1], &[2, 3, 4, 13], 1.0),
            ("scalar", &[], &[3, 17], 0.25),
            ("same_shape_scaled", &[2, 3], &[2, 3], 1.0 / 3.0),
        ];
        configs
            .iter()
            .map(|&(name, x, shape, scale)| {
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: BroadcastTo {
                        shape: shape.to_vec(),
                        scale,
                    }
                    .into(),
                    inputs: vec![random_f32(rng, x)?],
                })
            })
            .collect()
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        self.infer(inputs)?;
        self.kernel(&inputs[0].shape)
            .params()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let (&[x], &[y]) = (inputs, outputs) else {
            return Err(super::exec_err(
                Self::NAME,
                "expects one input and one output",
            ));
        };
        kernels::broadcast_grad::record_broadcast_to::<f32>(
            gpu,
            rec,
            x.buffer,
            y.buffer,
            &self.kernel(x.dims()),
        )
    }

    fn flops(&self, _inputs: &[&TensorFact]) -> u64 {
        // One multiply per output element.
        self.shape.iter().product::<usize>() as u64
    }
}

/// The gradient rule of `reduce_sum` (`mean = false`) and `reduce_mean` over `axes`: `dy`
/// broadcast back to the input's shape (divided by the reduced count for the mean). Without
/// `keep_dims`, a `reshape` first restores the reduced axes as size 1 unless they are all
/// leading (right-aligned broadcasting already puts them back). No reduced axis: `dy` itself.
pub(crate) fn reduce_grad(
    ctx: &mut super::GradContext<'_>,
    axes: &[i64],
    keep_dims: bool,
    mean: bool,
) -> Result<Vec<Option<crate::graph::ValueId>>> {
    let (Some(dy), Some(&x)) = (
        ctx.output_grads.first().copied().flatten(),
        ctx.inputs.first(),
    ) else {
        return Ok(vec![None]);
    };
    let shape = ctx.builder.fact(x)?.shape.clone();
    let keep = reference::reduced_shape(&shape, axes)?;
    let count = shape.iter().product::<usize>() / keep.iter().product::<usize>().max(1);
    if count == 1 && ctx.builder.fact(dy)?.shape == shape {
        return Ok(vec![Some(dy)]);
    }
    let mut g = dy;
    // Reduced axes exactly `0..m`: dy is `shape[m..]`, which right-aligned broadcasting
    // stretches correctly over the missing leading axes.
    let m = axes.len();
    let reduced_is_leading = axes
        .iter()
        .map(|&a| super::resolve_axis(a, shape.len()))
        .collect::<std::result::Result<Vec<usize>, String>>()
        .map_err(|reason| super::exec_err("reduce grad", reason))?
        .iter()
        .all(|&a| a < m);
    if !keep_dims && !reduced_is_leading {
        g = ctx.builder.node1(
            &format!("{}/grad_x_reshape", ctx.node),
            super::reshape::Reshape {
                shape: keep.iter().map(|&d| d as i64).collect(),
            },
            &[g],
        )?;
    }
    let dx = ctx.builder.node1(
        &format!("{}/grad_x", ctx.node),
        BroadcastTo {
            shape,
            scale: if mean { 1.0 / count as f64 } else { 1.0 },
        },
        &[g],
    )?;
    Ok(vec![Some(dx)])
}

/// Input 0 as f32.
fn input_f32<'a>(inputs: &[&'a Tensor]) -> Result<&'a [f32]> {
    super::input_f32(BroadcastTo::NAME, inputs, 0)
}

/// The broadcast by contiguous runs (memory-bound, so no threads): the output is walked in
/// row-major blocks of the innermost axes that `x` shares with the target, copied (and
/// scaled) from `x`; a stretched innermost axis repeats one value. `x` must broadcast to
/// `shape` (checked by the caller's `infer`).
fn broadcast_fast(x: &[f32], x_shape: &[usize], shape: &[usize], scale: f64) -> Vec<f32> {
    let rank = shape.len();
    let lead = rank - x_shape.len();
    let xd: Vec<usize> = (0..rank)
        .map(|i| if i < lead { 1 } else { x_shape[i - lead] })
        .collect();
    // Innermost run: the longest suffix of axes where x matches the target (not stretched).
    let mut inner = 1usize;
    let mut split = rank;
    while split > 0 && xd[split - 1] == shape[split - 1] {
        split -= 1;
        inner *= shape[split];
    }
    let total: usize = shape.iter().product();
    let mut y = Vec::with_capacity(total);
    // x strides over the outer axes (0 where stretched).
    let mut xs = vec![0usize; split];
    let mut s = inner;
    for i in (0..split).rev() {
        if xd[i] != 1 {
            xs[i] = s;
        }
        s *= xd[i];
    }
    let mut idx = vec![0usize; split];
    let outer = total / inner;
    for _ in 0..outer {
        let off: usize = idx.iter().zip(&xs).map(|(a, b)| a * b).sum();
        let src = &x[off..off + inner];
        if scale == 1.0 {
            y.extend_from_slice(src);
        } else {
            // In f64 like the reference, so both round the same product.
            y.extend(src.iter().map(|&v| (f64::from(v) * scale) as f32));
        }
        for ax in (0..split).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(shape: &[usize]) -> BroadcastTo {
        BroadcastTo {
            shape: shape.to_vec(),
            scale: 1.0,
        }
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op(&[2, 3]).infer(&[&f(&[3, 3])]).is_err());
        assert!(op(&[3]).infer(&[&f(&[2, 3])]).is_err());
        assert!(op(&[2, 0]).infer(&[&f(&[1])]).is_err());
        assert!(op(&[2, 3]).infer(&[&f(&[2, 3]), &f(&[2, 3])]).is_err());
        let nan = BroadcastTo {
            shape: vec![2],
            scale: f64::NAN,
        };
        assert!(nan.infer(&[&f(&[1])]).is_err());
        assert_eq!(
            op(&[4, 2, 3]).infer(&[&f(&[2, 1])]).unwrap()[0].shape,
            [4, 2, 3]
        );
    }

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(5);
        let mut cases = BroadcastTo::cases(&mut rng).unwrap();
        // A scale that is neither 1 nor 1 / count takes the run-copy path.
        cases.push(OpCase {
            name: "broadcast_to/odd_scale".into(),
            op: BroadcastTo {
                shape: vec![2, 5, 3],
                scale: 0.7,
            }
            .into(),
            inputs: vec![random_f32(&mut rng, &[5, 1]).unwrap()],
        });
        crate::ops::activation_grad::tests::check_cpu_matches_ref(&cases);
    }
}
