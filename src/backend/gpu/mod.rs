//! The wgpu compute backend: device context ([`GpuContext`]), the shader registry, and one
//! host file per WGSL kernel family under [`kernels`].

mod context;
pub mod kernels;
pub mod shaders;

pub use context::{
    AdapterSummary, GpuContext, GpuOptions, PowerPreference, Recorder, list_adapters,
};
