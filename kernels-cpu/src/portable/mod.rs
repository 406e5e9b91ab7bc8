//! Portable tuned kernels: safe Rust written so LLVM vectorises it for whatever baseline the
//! target has (SSE2 on x86_64, NEON on aarch64). They fill every [`crate::dispatch::Kernels`]
//! slot before ISA-specific kernels overwrite the ones they improve.

pub mod sgemm;
