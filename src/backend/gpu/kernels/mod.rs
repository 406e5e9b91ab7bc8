//! Host side of the WGSL kernels: one file per kernel family, each with its `Params` mirror
//! and a function that records or runs the dispatch.

pub mod bias_add;

/// `(shader, size_of::<Params>())` for every kernel, checked against naga's layout in tests.
pub const PARAMS_SIZES: &[(&str, usize)] = &[("bias_add", std::mem::size_of::<bias_add::Params>())];

/// An element type with a WGSL prelude: f32 everywhere, f16 where `SHADER_F16` exists.
pub trait GpuElement: crate::tensor::Element {
    /// The prelude's name (`"f32"` / `"f16"`).
    const WGSL: &'static str;
}

impl GpuElement for f32 {
    const WGSL: &'static str = "f32";
}

impl GpuElement for half::f16 {
    const WGSL: &'static str = "f16";
}
