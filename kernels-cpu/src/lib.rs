//! `spore-kernels-cpu`: Spore's CPU kernels, as a leaf crate that knows nothing of `spore`.
//!
//! Every kernel takes plain slices and a small argument struct, so it can be called from the
//! runtime, from benchmarks and from tests alike.
//!
//! * [`reference`](mod@reference) is THE oracle: naive loops with f64 accumulation, written to be obviously
//!   right. Every fast kernel (CPU, GPU, fused, int8) is tested against it.
//! * [`rng`] is the counter-based random generator that seeded ops (dropout) and the test
//!   suites share, so a CPU and a GPU kernel can draw the same mask.
//!
//! Layout conventions: activations NHWC, convolution weights OHWI, matrices row-major.
//! Kernels check their slice lengths and parameters first and return [`KernelError`]; they
//! never panic on bad input.

pub mod cpu;
pub mod error;
pub mod reference;
pub mod rng;

#[cfg(test)]
pub(crate) mod testutil;

pub use error::{KernelError, Result};
