//! What a user touches: [`Context`] (devices), [`Model`] (a verified graph), [`Session`]
//! (buffers and runs), and [`RunObserver`] callbacks.
//!
//! Until the planner lands, a session executes nodes in order on the CPU reference kernels.

mod context;
mod observer;
#[allow(clippy::module_inception)]
mod session;

pub use context::{
    Context, ContextBuilder, CpuOptions, Device, GpuOptions, MAX_CPU_THREADS, Precision,
};
pub use observer::{Flow, NodeInfo, RunObserver};
pub use session::{Model, Session};
