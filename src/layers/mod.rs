//! Model-building layers: plain structs with public configuration fields, each turned into
//! graph nodes by [`Layer::build`] on a [`Net`].
//!
//! A layer reads its fields when it is *built*, not when it is constructed, so changing a
//! field after `new` is honoured (the runtime Spore descends from once dropped a Dense
//! layer's activation that was set after construction).
//!
//! ```
//! use spore::layers::{Dense, Flatten, Layer, Net, Sequential};
//! use spore::ops::activation::ActivationKind;
//!
//! # fn main() -> spore::Result<()> {
//! let mut net = Net::new(42);
//! let x = net.input("data", &[2, 4, 4, 3])?;
//! let mut head = Sequential::new();
//! head.push(Flatten::new());
//! let mut fc = Dense::new(10);
//! fc.activation = Some(ActivationKind::Relu); // set after construction: still applied
//! head.push(fc);
//! let y = net.scope("head", |net| head.build(net, x))?;
//! let graph = net.finish(&[y])?;
//! assert!(graph.value_by_name("head.1.weight").is_some()); // PyTorch-style names
//! # Ok(())
//! # }
//! ```
//!
//! Layouts: activations are NHWC, convolution weights OHWI `[c_out, kh, kw, c_in / groups]`,
//! depthwise weights `[kh, kw, c_in * multiplier]`, Dense weights `[in, out]` (see
//! [`crate::models::torch`] for the mapping from PyTorch's layouts).

mod activation;
mod adaptive_avg_pool2d;
mod add;
mod avg_pool2d;
mod batch_norm;
mod concat;
mod conv2d;
mod dense;
mod depthwise_conv2d;
mod dropout;
mod flatten;
mod global_avg_pool;
mod init;
mod max_pool2d;
mod net;
mod reshape;
mod silu;
mod squeeze_excite;

pub use activation::{Act, Activation};
pub use adaptive_avg_pool2d::AdaptiveAvgPool2d;
pub use add::Add;
pub use avg_pool2d::AvgPool2d;
pub use batch_norm::BatchNorm;
pub use concat::Concat;
pub use conv2d::Conv2d;
pub use dense::Dense;
pub use depthwise_conv2d::DepthwiseConv2d;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use global_avg_pool::GlobalAvgPool;
pub use init::{FanMode, Fans, Init, TORCH_DEFAULT_A};
pub use max_pool2d::MaxPool2d;
pub use net::{Net, ParamSource};
pub use reshape::Reshape;
pub use silu::Silu;
pub use squeeze_excite::SqueezeExcite;

pub use crate::ops::activation::ActivationKind;
pub use crate::ops::conv2d::Padding;
pub use spore_kernels_cpu::reference::window::Padding2d;

use crate::error::Result;
use crate::graph::ValueId;

/// A single-input layer.
pub trait Layer: std::fmt::Debug {
    /// Adds this layer's parameters and nodes to `net`, reading `x`; returns the output.
    /// Parameters are named in the current scope of `net` (see [`Net`]).
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId>;
}

/// A multi-input layer (elementwise sums, concatenations).
pub trait Merge: std::fmt::Debug {
    /// Adds this layer's nodes to `net`, reading `inputs`; returns the output.
    fn build(&self, net: &mut Net, inputs: &[ValueId]) -> Result<ValueId>;
}

/// PyTorch-style symmetric padding: `p` cells on every side.
pub fn pad(p: usize) -> Padding {
    Padding::Explicit(Padding2d::symmetric(p, p))
}

/// Layers applied in order, each in a scope named by its index (`0`, `1`, ...) or by the
/// name given to [`Sequential::push_named`]: PyTorch's `nn.Sequential` naming.
#[derive(Debug, Default)]
pub struct Sequential {
    /// The children and their scope names, in order.
    pub layers: Vec<(String, Box<dyn Layer>)>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends `layer`, named by its index.
    pub fn push(&mut self, layer: impl Layer + 'static) -> &mut Sequential {
        let name = self.layers.len().to_string();
        self.layers.push((name, Box::new(layer)));
        self
    }

    /// Appends `layer` named `name`.
    pub fn push_named(&mut self, name: &str, layer: impl Layer + 'static) -> &mut Sequential {
        self.layers.push((name.to_string(), Box::new(layer)));
        self
    }

    /// Builder form of [`Sequential::push`].
    pub fn with(mut self, layer: impl Layer + 'static) -> Sequential {
        self.push(layer);
        self
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no children.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Layer for Sequential {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        self.layers.iter().try_fold(x, |x, (name, layer)| {
            net.scope(name, |net| layer.build(net, x))
        })
    }
}

impl<L: Layer + ?Sized> Layer for Box<L> {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        (**self).build(net, x)
    }
}
