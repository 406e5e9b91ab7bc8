//! Training on device: autograd as a graph transform ([`autograd`]), optimizer updates as graph
//! ops (`sgd_update`, `adam_update`), and [`TrainSession`], which runs the training graph on
//! the context's devices and keeps parameters and optimizer state between steps.

pub mod autograd;
mod session;

pub use autograd::{BufferSlot, BuildOptions, Loss, ParamSlot, TrainGraph};
pub use session::{Optimizer, Schedule, TrainConfig, TrainSession, Trainable};
