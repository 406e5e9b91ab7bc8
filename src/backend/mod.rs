//! Execution backends. For now the GPU context and its kernel library; the CPU backend and
//! the `Backend` trait arrive with the planner.

pub mod gpu;
