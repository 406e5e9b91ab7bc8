//! `softmax_grad`: the backward op of [`Softmax`](super::softmax::Softmax) over the last axis,
//! from the forward OUTPUT: inputs `[y, dy]`, `dx = y * (dy - sum_c dy * y)` per row.
//! The inference and cases here are shared with `log_softmax_grad`.

use super::{
    GpuValue, OpCase, OpDef, all_f32, arity, first_numel, input_f32, random_f32, rows_last,
};
use crate::backend::gpu::kernels::elementwise_grad as kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::TensorFact;
use crate::ops::Attrs;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::softmax as reference;
use spore_kernels_cpu::rng::Rng;

/// Gradient of softmax over the last axis, from its output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SoftmaxGrad;

/// Inference shared by the two softmax gradients: `[y, dy]`, f32, equal shapes of rank >= 1.
pub(crate) fn infer_row_grad(
    inputs: &[&TensorFact],
) -> std::result::Result<Vec<TensorFact>, String> {
    arity(inputs.len(), 2, 2)?;
    all_f32(inputs)?;
    rows_last("y", &inputs[0].shape)?;
    if inputs[1].shape != inputs[0].shape {
        return Err(format!(
            "dy has shape {:?}, y has {:?}: they must match",
            inputs[1].shape, inputs[0].shape
        ));
    }
    Ok(vec![TensorFact::f32(inputs[0].shape.clone())])
}

/// The row-gradient kernel signature of `reference::softmax_grad` / `log_softmax_grad`.
pub(crate) type RowGradKernel =
    fn(usize, usize, &[f32], &[f32], &mut [f32]) -> spore_kernels_cpu::Result<()>;

/// `eval_ref` shared by the two softmax gradients: `kernel` over rows of the last axis.
pub(crate) fn eval_row_grad(
    op: &'static str,
    kernel: RowGradKernel,
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let facts: Vec<TensorFact> = inputs
        .iter()
        .map(|t| TensorFact::new(t.dtype(), t.dims()))
        .collect();
    let refs: Vec<&TensorFact> = facts.iter().collect();
    infer_row_grad(&refs).map_err(|reason| super::exec_err(op, reason))?;
    let y = input_f32(op, inputs, 0)?;
    let dy = input_f32(op, inputs, 1)?;
    let (rows, cols) =
        rows_last("y", inputs[0].dims()).map_err(|reason| super::exec_err(op, reason))?;
    let mut dx = vec![0f32; y.len()];
    kernel(rows, cols, y, dy, &mut dx)?;
    Ok(vec![super::tensor_f32(inputs[0].dims(), dx)?])
}

/// `record_gpu` shared by the two softmax gradients: the row kernel over `[rows, last axis]`
/// (`log` selects log-softmax).
pub(crate) fn record_row_grad(
    op: &'static str,
    log: bool,
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    inputs: &[GpuValue<'_>],
    outputs: &[GpuValue<'_>],
) -> Result<()> {
    let (&[y, dy], &[dx]) = (inputs, outputs) else {
        return Err(super::exec_err(op, "expects inputs [y, dy] and one output"));
    };
    let (rows, cols) = rows_last("y", y.dims()).map_err(|reason| super::exec_err(op, reason))?;
    let p = kernel::SoftmaxGrad::new(rows, cols, log);
    kernel::record_softmax_grad::<f32>(gpu, rec, y.buffer, dy.buffer, dx.buffer, &p)
}

/// The threaded row-gradient signature of `spore_kernels_cpu::softmax::{softmax_grad,
/// log_softmax_grad}` (rows, cols, y, dy, dx, threads).
pub(crate) type RowGradKernelCpu =
    fn(usize, usize, &[f32], &[f32], &mut [f32], usize) -> spore_kernels_cpu::Result<()>;

/// `eval_cpu` shared by the two softmax gradients: the tuned row kernel `kernel`
/// (`spore_kernels_cpu::softmax`), on up to `threads` threads.
pub(crate) fn eval_row_grad_cpu(
    op: &'static str,
    kernel: RowGradKernelCpu,
    inputs: &[&Tensor],
    threads: usize,
) -> Result<Vec<Tensor>> {
    let facts: Vec<TensorFact> = inputs
        .iter()
        .map(|t| TensorFact::new(t.dtype(), t.dims()))
        .collect();
    let refs: Vec<&TensorFact> = facts.iter().collect();
    infer_row_grad(&refs).map_err(|reason| super::exec_err(op, reason))?;
    let y = input_f32(op, inputs, 0)?;
    let dy = input_f32(op, inputs, 1)?;
    let (rows, cols) =
        rows_last("y", inputs[0].dims()).map_err(|reason| super::exec_err(op, reason))?;
    let mut dx = vec![0f32; y.len()];
    kernel(rows, cols, y, dy, &mut dx, threads)?;
    Ok(vec![super::tensor_f32(inputs[0].dims(), dx)?])
}

/// Cases shared by the two softmax gradients: `y` is a real forward output (made by
/// `forward` from random logits), `dy` random; ragged rank 1, 2 and 4 shapes.
pub(crate) fn row_grad_cases(
    name: &str,
    op: super::Op,
    forward: super::Op,
    rng: &mut Rng,
) -> Result<Vec<OpCase>> {
    let shapes: [&[usize]; 3] = [&[7], &[5, 13], &[2, 3, 2, 17]];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let x = random_f32(rng, s)?.map_f32(|v| v * 3.0)?;
            let y = forward
                .eval_ref(&[&x])?
                .into_iter()
                .next()
                .ok_or_else(|| super::exec_err(op.name(), "forward gave no output"))?;
            Ok(OpCase {
                name: format!("{name}/rank{}_{i}", s.len()),
                op: op.clone(),
                inputs: vec![y, random_f32(rng, s)?],
            })
        })
        .collect()
}

impl OpDef for SoftmaxGrad {
    const NAME: &'static str = "softmax_grad";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        infer_row_grad(inputs)
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        eval_row_grad(Self::NAME, reference::softmax_grad, inputs)
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        eval_row_grad_cpu(
            Self::NAME,
            spore_kernels_cpu::softmax::softmax_grad,
            inputs,
            threads,
        )
    }

    fn attrs(&self) -> Attrs {
        Attrs::new(Self::NAME)
    }

    fn from_attrs(_attrs: &Attrs) -> Result<Self> {
        Ok(SoftmaxGrad)
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        row_grad_cases(
            Self::NAME,
            SoftmaxGrad.into(),
            super::softmax::Softmax.into(),
            rng,
        )
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        // A dot product and a multiply-subtract per element.
        4 * first_numel(inputs)
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        infer_row_grad(inputs).map(|_| ())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        record_row_grad(Self::NAME, false, gpu, rec, inputs, outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_cpu_matches_reference() {
        let mut rng = Rng::new(13);
        crate::ops::activation_grad::tests::check_cpu_matches_ref(
            &SoftmaxGrad::cases(&mut rng).unwrap(),
        );
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let f = |s: &[usize]| TensorFact::f32(s);
        let op = SoftmaxGrad;
        assert!(op.infer(&[&f(&[2, 3])]).is_err());
        assert!(op.infer(&[&f(&[]), &f(&[])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[3, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 0]), &f(&[2, 0])]).is_err());
        assert_eq!(
            op.infer(&[&f(&[2, 3]), &f(&[2, 3])]).unwrap()[0].shape,
            [2, 3]
        );
    }
}
