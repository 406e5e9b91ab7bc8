//! The one integration-test binary: every suite is a module here, sharing one GPU device and
//! its pipeline cache (pipelines take 0.1-3.5 s each to compile on the software adapter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
mod conformance;
mod format;
mod golden;
mod gpu_conv2d;
mod gpu_conv_grad;
mod gpu_depthwise;
mod gpu_forward_ops;
mod gpu_grad_ops;
mod gpu_matmul;
mod gpu_ops;
mod gpu_smoke;
mod mnist;
mod models;
mod plan;
mod session;
mod train;
mod tune;
