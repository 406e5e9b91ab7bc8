//! # Spore
//!
//! Spore runs **and trains** neural networks on the device a user already has. Its core is a
//! GPU compute backend on `wgpu` with a library of WGSL kernels, backed by tuned CPU kernels
//! (crate `spore-kernels-cpu`) and a slow, obviously-correct reference that every result can
//! be checked against.
//!
//! ## Quick start
//!
//! ```
//! use spore::{DType, Tensor};
//!
//! # fn main() -> spore::Result<()> {
//! // An owned, aligned host tensor, sliced with NumPy semantics.
//! let t = Tensor::from_vec(&[2, 3, 4], (0..24).map(|i| i as f32).collect())?;
//! let v = t.slice_str("..., 1:3, None, -1")?;   // shape [2, 2, 1]
//! assert_eq!(v.dims(), &[2, 2, 1]);
//! assert_eq!(v.to_vec::<f32>()?, vec![7.0, 11.0, 19.0, 23.0]);
//! assert_eq!(t.dtype(), DType::F32);
//!
//! // Every error has a stable MindSpore-Lite code.
//! let err = t.slice_str("5").unwrap_err();
//! assert_eq!(err.code().as_i32(), -100);
//! # Ok(())
//! # }
//! ```
//!
//! The GPU path: [`backend::gpu::GpuContext::new`] opens an adapter; kernels live in
//! [`backend::gpu::kernels`].

pub mod backend;
pub mod conformance;
pub mod data;
pub mod error;
pub mod format;
pub mod graph;
pub mod layers;
pub mod models;
pub mod ops;
pub mod plan;
pub mod session;
pub mod shape;
pub mod tensor;
pub mod train;
pub mod tune;

pub use error::{Error, ErrorCode, GpuErrorKind, Result, error_info};
pub use shape::{Layout, Shape, SliceArg, parse_index};
pub use spore_kernels_cpu as kernels_cpu;
pub use tensor::{DType, Element, Tensor, TensorView};
