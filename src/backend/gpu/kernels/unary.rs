//! Elementwise activation on the GPU (`shaders/unary.wgsl`): `y = act(x)` for any shape,
//! plus the small host helpers the other gpuops kernel files share (u32 conversion, buffer
//! size checks, upload / poison / read-back of typed slices).

use super::GpuElement;
use super::activation_wgsl;
use super::bias_add::grid_1d;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::activation::Activation;

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Element count.
    pub total: u32,
    /// Activation code (see [`activation_wgsl::code`]).
    pub act: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: u32,
}

/// Tuning knobs of the elementwise kernels (`WG`, `EPT` overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (<= 256).
    pub wg: u32,
    /// Elements per invocation (1..=8).
    pub ept: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { wg: 256, ept: 1 }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[
    Knobs { wg: 256, ept: 1 },
    Knobs { wg: 64, ept: 1 },
    Knobs { wg: 128, ept: 2 },
    Knobs { wg: 256, ept: 4 },
];

impl Knobs {
    /// Refuses knobs outside the downlevel limits the shaders are written for.
    pub fn validate(&self) -> Result<()> {
        check_wg(self.wg)?;
        if !(1..=8).contains(&self.ept) {
            return Err(Error::invalid_param(
                "ept",
                format!("elements per invocation must be in 1..=8, got {}", self.ept),
            ));
        }
        Ok(())
    }
}

/// One elementwise activation over `len` elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Unary {
    /// Element count of `x` and `y`.
    pub len: usize,
    /// The activation.
    pub act: Activation,
    /// Tuning knobs.
    pub knobs: Knobs,
}

/// Records `y = act(x)` on buffers already on the GPU.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Unary,
) -> Result<()> {
    p.knobs.validate()?;
    let total = to_u32("len", p.len)?;
    if total == 0 {
        return Err(Error::invalid_param("len", "must be positive"));
    }
    check_buffer::<T>("x", x, p.len)?;
    check_buffer::<T>("y", y, p.len)?;
    let (act, alpha) = activation_wgsl::encode(Some(p.act))?;
    let params = Params {
        total,
        act,
        alpha,
        _pad: 0,
    };
    let pipeline = gpu.pipeline(
        "unary",
        T::WGSL,
        &[
            ("WG", f64::from(p.knobs.wg)),
            ("EPT", f64::from(p.knobs.ept)),
        ],
    )?;
    let pb = gpu.uniform("unary_params", &params)?;
    let threads = total.div_ceil(p.knobs.ept);
    rec.dispatch(&pipeline, &[x, y, &pb], grid(gpu, threads, p.knobs.wg))
}

/// Uploads `x`, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], p: &Unary) -> Result<Vec<T>> {
    if x.len() != p.len {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], vec![p.len]],
            reason: "unary: x length differs from params.len".into(),
        });
    }
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", p.len)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, p.len)
}

/// `v` as a u32 shader parameter, or an error naming `what`.
pub(crate) fn to_u32(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid_param(what, format!("{v} exceeds u32")))
}

/// Refuses a workgroup size the shaders cannot run under downlevel limits: 1..=256, and a
/// power of two (the tree reductions halve it).
pub(crate) fn check_wg(wg: u32) -> Result<()> {
    if wg == 0 || wg > 256 || !wg.is_power_of_two() {
        return Err(Error::invalid_param(
            "wg",
            format!("workgroup size must be a power of two in 1..=256, got {wg}"),
        ));
    }
    Ok(())
}

/// Refuses a buffer too small for `elems` elements of `T`.
pub(crate) fn check_buffer<T: GpuElement>(
    name: &str,
    buf: &wgpu::Buffer,
    elems: usize,
) -> Result<()> {
    let need = (elems as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    if buf.size() < need {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![elems], vec![buf.size() as usize]],
            reason: format!(
                "buffer `{name}` holds {} bytes, needs {need} ({elems} elements)",
                buf.size()
            ),
        });
    }
    Ok(())
}

/// A 1-D grid of `threads` invocations in workgroups of `wg`, folded past the limit.
pub(crate) fn grid(gpu: &GpuContext, threads: u32, wg: u32) -> [u32; 3] {
    grid_1d(
        threads,
        wg,
        gpu.adapter().max_compute_workgroups_per_dimension,
    )
}

/// A grid of `groups` workgroups (one per row), folded into (x, y) past the limit.
pub(crate) fn grid_groups(gpu: &GpuContext, groups: u32) -> [u32; 3] {
    grid_1d(
        groups,
        1,
        gpu.adapter().max_compute_workgroups_per_dimension,
    )
}

/// Uploads a typed slice.
pub(crate) fn upload<T: GpuElement>(
    gpu: &GpuContext,
    label: &str,
    data: &[T],
) -> Result<wgpu::Buffer> {
    gpu.upload(label, bytemuck::cast_slice(data))
}

/// A poisoned (NaN-filled) output buffer of `elems` elements of `T`.
pub(crate) fn output<T: GpuElement>(
    gpu: &GpuContext,
    label: &str,
    elems: usize,
) -> Result<wgpu::Buffer> {
    gpu.poisoned(label, (elems * std::mem::size_of::<T>()) as u64)
}

/// Reads `elems` elements of `T` back from `buf`.
pub(crate) fn read<T: GpuElement>(
    gpu: &GpuContext,
    buf: &wgpu::Buffer,
    elems: usize,
) -> Result<Vec<T>> {
    let bytes = gpu.read_back(buf, (elems * std::mem::size_of::<T>()) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}
