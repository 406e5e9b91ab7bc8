//! Data loading: the IDX format (MNIST's own, optionally gzip-compressed) and the MNIST
//! digits bundled with the project.

pub mod idx;
pub mod mnist;
pub mod npy;
