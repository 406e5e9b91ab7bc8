//! `softmax`: `y = exp(x) / sum(exp(x))` over the last axis (any rank >= 1; the other axes are
//! rows), computed with the row maximum subtracted so large logits do not overflow.

use super::GpuValue;
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32, rows_last,
};
use crate::backend::gpu::kernels::softmax as gpu_softmax;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::softmax as reference;
use spore_kernels_cpu::rng::Rng;

/// Softmax over the last axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Softmax;

/// Inference shared by softmax and log-softmax: one f32 input of rank >= 1, same shape out.
pub(crate) fn infer_last_axis(
    inputs: &[&TensorFact],
) -> std::result::Result<Vec<TensorFact>, String> {
    arity(inputs.len(), 1, 1)?;
    all_f32(inputs)?;
    rows_last("x", &inputs[0].shape)?;
    Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
}

/// The row kernel signature of `reference::softmax` and `reference::log_softmax`.
pub(crate) type RowKernel = fn(usize, usize, &[f32], &mut [f32]) -> spore_kernels_cpu::Result<()>;

/// `eval_ref` shared by softmax and log-softmax: `kernel` over rows of the last axis.
pub(crate) fn eval_last_axis(
    op: &str,
    kernel: RowKernel,
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let x = input_f32(op, inputs, 0)?;
    let (rows, cols) =
        rows_last("x", inputs[0].dims()).map_err(|reason| super::exec_err(op, reason))?;
    let mut y = vec![0f32; x.len()];
    kernel(rows, cols, x, &mut y)?;
    Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
}

/// `eval_cpu` shared by softmax (`log = false`) and log-softmax: the tuned row kernels.
pub(crate) fn eval_last_axis_cpu(
    op: &str,
    log: bool,
    inputs: &[&Tensor],
    threads: usize,
) -> Result<Vec<Tensor>> {
    let x = input_f32(op, inputs, 0)?;
    let (rows, cols) =
        rows_last("x", inputs[0].dims()).map_err(|reason| super::exec_err(op, reason))?;
    let mut y = vec![0f32; x.len()];
    if log {
        spore_kernels_cpu::softmax::log_softmax(rows, cols, x, &mut y, threads)?;
    } else {
        spore_kernels_cpu::softmax::softmax(rows, cols, x, &mut y, threads)?;
    }
    Ok(vec![super::tensor_f32(inputs[0].dims(), y)?])
}

/// Records softmax (`log` false) or log-softmax over the last axis of `inputs[0]` into
/// `outputs[0]`: the GPU path of both ops.
pub(crate) fn record_last_axis_gpu(
    op: &str,
    log: bool,
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    inputs: &[GpuValue<'_>],
    outputs: &[GpuValue<'_>],
) -> Result<()> {
    let x = super::gpu_arg(op, inputs, 0, "input")?;
    let y = super::gpu_arg(op, outputs, 0, "output")?;
    let (rows, cols) = rows_last("x", x.dims()).map_err(|reason| super::exec_err(op, reason))?;
    let p = gpu_softmax::Softmax::new(rows, cols, log);
    gpu_softmax::record::<f32>(gpu, rec, x.buffer, y.buffer, &p)
}

/// Conformance cases shared by softmax and log-softmax: rank 1, 2 and 4, and logits large
/// enough to overflow a naive exp.
pub(crate) fn last_axis_cases(name: &str, op: super::Op, rng: &mut Rng) -> Result<Vec<OpCase>> {
    let configs: [(&[usize], f32); 4] = [
        (&[7], 1.0),
        (&[5, 3], 4.0),
        (&[2, 3, 2, 5], 1.0),
        (&[3, 4], 200.0),
    ];
    configs
        .iter()
        .enumerate()
        .map(|(i, &(x, scale))| {
            Ok(OpCase {
                name: format!("{name}/rank{}_{i}", x.len()),
                op: op.clone(),
                inputs: vec![random_f32(rng, x)?.map_f32(|v| v * scale)?],
            })
        })
        .collect()
}

impl OpDef for Softmax {
    const NAME: &'static str = "softmax";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        infer_last_axis(inputs)
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        eval_last_axis(Self::NAME, reference::softmax, inputs)
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        eval_last_axis_cpu(Self::NAME, false, inputs, threads)
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
        super::softmax::record_last_axis_gpu(Self::NAME, false, gpu, rec, inputs, outputs)
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(Softmax)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        last_axis_cases(Self::NAME, Softmax.into(), rng)
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        first_numel(inputs)
    }

    /// `dx = y * (dy - sum(dy * y))` per row: one `softmax_grad` node on the forward OUTPUT
    /// (cheaper than recomputing the exponentials from `x`).
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let (Some(dy), Some(&y)) = (
            ctx.output_grads.first().copied().flatten(),
            ctx.outputs.first(),
        ) else {
            return Ok(vec![None]);
        };
        let dx = ctx.builder.node1(
            &format!("{}/grad_x", ctx.node),
            super::softmax_grad::SoftmaxGrad,
            &[y, dy],
        )?;
        Ok(vec![Some(dx)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infer_refuses_bad_shapes() {
        assert!(Softmax.infer(&[&TensorFact::f32([])]).is_err());
        assert!(Softmax.infer(&[&TensorFact::f32([3, 0])]).is_err());
        assert!(
            Softmax
                .infer(&[&TensorFact::new(crate::DType::I32, [3])])
                .is_err()
        );
        assert!(Softmax.infer(&[]).is_err());
        assert_eq!(
            Softmax.infer(&[&TensorFact::f32([2, 3])]).unwrap()[0].shape,
            [2, 3]
        );
    }

    #[test]
    fn eval_matches_hand_computed() {
        // Rows [0, ln 3] and [5, 5]: softmax [1/4, 3/4] and [1/2, 1/2].
        let x = Tensor::from_vec(&[2, 2], vec![0f32, 3f32.ln(), 5., 5.]).unwrap();
        let y = Softmax.eval_ref(&[&x]).unwrap()[0].to_vec::<f32>().unwrap();
        let want = [0.25f32, 0.75, 0.5, 0.5];
        for (g, w) in y.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(31);
        for case in Softmax::cases(&mut rng).unwrap() {
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
}
