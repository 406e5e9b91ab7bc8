//! Per-node callbacks: a [`RunObserver`] is called before and after every node, can look at
//! its tensors (on request, since that may need a read-back), and can stop the run.

use crate::tensor::Tensor;

/// What an observer learns about a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo<'a> {
    /// The node's name.
    pub name: &'a str,
    /// The op's snake_case name (`conv2d`, ...).
    pub op: &'static str,
    /// Position in execution order.
    pub index: usize,
    /// Where it runs (`cpu`, `gpu`).
    pub device: &'static str,
}

/// Whether to go on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Run on.
    Continue,
    /// Stop the run: `run_with` returns [`crate::Error::Stopped`] and the session stays usable.
    Stop,
}

/// Called around every node of a run.
pub trait RunObserver {
    /// Whether the callbacks want tensors (otherwise they get empty slices and no read-back
    /// happens).
    fn wants_tensors(&self) -> bool {
        false
    }

    /// Before `node` runs, with its inputs if [`RunObserver::wants_tensors`].
    fn before(&mut self, _node: &NodeInfo<'_>, _inputs: &[&Tensor]) -> Flow {
        Flow::Continue
    }

    /// After `node` ran, with its outputs if [`RunObserver::wants_tensors`].
    fn after(&mut self, _node: &NodeInfo<'_>, _outputs: &[&Tensor]) -> Flow {
        Flow::Continue
    }
}
