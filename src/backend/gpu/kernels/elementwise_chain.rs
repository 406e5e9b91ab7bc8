//! A fused chain of elementwise steps on the GPU (`shaders/elementwise_chain.wgsl`): the
//! program travels in the uniform, so one pipeline serves every chain.

use super::GpuElement;
use super::activation_wgsl;
use super::unary::{check_buffer, check_wg, grid, to_u32};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use crate::ops::binary::BinaryKind;
use crate::ops::elementwise_chain::{MAX_INPUTS, MAX_STEPS, Step};

/// Mirror of one `Step` of the shader's program.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepParams {
    /// Activation code (< 16), or 16 + binary code (+ 32 when reversed).
    pub op: u32,
    /// Input index of a binary step's other operand.
    pub operand: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// Pads the step to 16 bytes (uniform array stride).
    pub _pad0: u32,
}

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Elements.
    pub total: u32,
    /// Steps in use.
    pub steps: u32,
    /// Padding to 16 bytes.
    pub _pad0: u32,
    /// Padding to 16 bytes.
    pub _pad1: u32,
    /// The program.
    pub prog: [StepParams; MAX_STEPS],
}

/// Workgroup size.
pub const WG: u32 = 256;

fn binary_code(kind: BinaryKind) -> u32 {
    match kind {
        BinaryKind::Add => 0,
        BinaryKind::Sub => 1,
        BinaryKind::Mul => 2,
        BinaryKind::Div => 3,
        BinaryKind::Max => 4,
        BinaryKind::Min => 5,
    }
}

/// Encodes `steps` for `inputs` inputs of `total` elements.
pub fn params(total: usize, inputs: usize, steps: &[Step]) -> Result<Params> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(Error::invalid_param(
            "steps",
            format!("1 to {MAX_STEPS} steps, got {}", steps.len()),
        ));
    }
    let mut prog = [StepParams::default(); MAX_STEPS];
    for (p, s) in prog.iter_mut().zip(steps) {
        *p = match *s {
            Step::Act(a) => {
                let (op, alpha) = activation_wgsl::encode(Some(a))?;
                StepParams {
                    op,
                    alpha,
                    ..StepParams::default()
                }
            }
            Step::Bin {
                kind,
                operand,
                reversed,
            } => {
                if operand >= inputs {
                    return Err(Error::invalid_param(
                        "steps",
                        format!("operand {operand} of {inputs} inputs"),
                    ));
                }
                StepParams {
                    op: 16 + binary_code(kind) + if reversed { 32 } else { 0 },
                    operand: operand as u32,
                    ..StepParams::default()
                }
            }
        };
    }
    Ok(Params {
        total: to_u32("total", total)?,
        steps: steps.len() as u32,
        _pad0: 0,
        _pad1: 0,
        prog,
    })
}

/// Records the chain over `inputs` (1 to [`MAX_INPUTS`] buffers of `total` elements) into `y`.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    inputs: &[&wgpu::Buffer],
    y: &wgpu::Buffer,
    total: usize,
    steps: &[Step],
) -> Result<()> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(Error::invalid_param(
            "inputs",
            format!("1 to {MAX_INPUTS}, got {}", inputs.len()),
        ));
    }
    if total == 0 {
        return Ok(());
    }
    let params = params(total, inputs.len(), steps)?;
    for (k, b) in inputs.iter().enumerate() {
        check_buffer::<T>(&format!("in{k}"), b, total)?;
    }
    check_buffer::<T>("y", y, total)?;
    check_wg(WG)?;
    let pipeline = gpu.pipeline("elementwise_chain", T::WGSL, &[("WG", f64::from(WG))])?;
    let pb = gpu.uniform("elementwise_chain_params", &params)?;
    // Unused input bindings read input 0 (never indexed by the program).
    let bind: Vec<&wgpu::Buffer> = (0..MAX_INPUTS)
        .map(|k| inputs.get(k).copied().unwrap_or(inputs[0]))
        .chain([y, &pb])
        .collect();
    rec.dispatch(&pipeline, &bind, grid(gpu, params.total, WG))
}
