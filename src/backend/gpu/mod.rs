//! The wgpu compute backend: device context ([`GpuContext`]), the shader registry, and one
//! host file per WGSL kernel family under [`kernels`].

mod context;
pub mod kernels;
pub mod shaders;

pub use context::{
    AdapterSummary, DEFAULT_POOL_CAP_BYTES, GpuContext, GpuOptions, MIN_POOL_CLASS_BYTES,
    PoolStats, PooledBuffer, PowerPreference, Recorder, list_adapters, size_class,
};
