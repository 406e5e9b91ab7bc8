//! What a user touches: [`Context`] (devices), [`Model`] (a verified graph), [`Session`]
//! (buffers and runs), and [`RunObserver`] callbacks.
//!
//! A session runs a [`crate::plan::Plan`]: fused, partitioned between the GPU and the CPU,
//! memory-planned.

mod context;
mod observer;
#[allow(clippy::module_inception)]
mod session;

pub use context::{
    Context, ContextBuilder, CpuOptions, Device, GpuOptions, MAX_CPU_THREADS, Precision,
};
pub use observer::{Flow, NodeInfo, RunObserver};
pub use session::{Model, Session};
