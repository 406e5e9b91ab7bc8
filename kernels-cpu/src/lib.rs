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
//! * [`sgemm`](mod@sgemm) is the tuned GEMM (bias + activation epilogue), reached through the
//!   [`dispatch`] table that picks reference, portable or AVX2 kernels at run time;
//!   [`conv2d`](mod@conv2d) is the tuned convolution on top of it (im2col + sgemm).
//!
//! Layout conventions: activations NHWC, convolution weights OHWI, matrices row-major.
//! Kernels check their slice lengths and parameters first and return [`KernelError`]; they
//! never panic on bad input.

pub mod activation;
pub mod batch_norm;
pub mod binary;
pub mod conv2d;
pub mod conv2d_grad;
pub mod conv_transpose2d;
pub mod cpu;
pub mod depthwise_conv2d;
pub mod dispatch;
pub mod error;
pub mod loss;
pub mod matmul_grad;
pub mod optimizer;
pub mod parallel;
pub mod pool2d;
pub mod portable;
pub mod reduce;
pub mod reference;
pub mod rng;
pub mod sgemm;
pub mod softmax;
pub mod winograd;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(test)]
pub(crate) mod testutil;

pub use conv2d::conv2d_fast;
pub use dispatch::{Kernels, Tier, kernels};
pub use error::{KernelError, Result};
pub use sgemm::{SgemmParams, sgemm};
