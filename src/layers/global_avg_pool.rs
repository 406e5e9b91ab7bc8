//! [`GlobalAvgPool`]: each channel's spatial mean, `[n, h, w, c]` -> `[n, c]` (PyTorch's
//! `adaptive_avg_pool2d(x, 1)` followed by `flatten(1)`).

use super::{Layer, Net};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::global_avg_pool as op;

/// Global average pooling to `[n, c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    /// The layer.
    pub fn new() -> GlobalAvgPool {
        GlobalAvgPool
    }
}

impl Layer for GlobalAvgPool {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("global_avg_pool", |net| {
            net.node("global_avg_pool", op::GlobalAvgPool, &[x])
        })
    }
}
