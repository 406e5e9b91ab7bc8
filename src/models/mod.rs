//! The model zoo: LeNet-5, AlexNet, ResNet-18/50, MobileNetV1/V2/V3 and EfficientNet-B0 as
//! inference [`Graph`]s built from [`crate::layers`].
//!
//! Every builder takes a [`ModelConfig`] and returns a graph with one input `data`
//! `[batch, input_size, input_size, in_channels]` (NHWC) and one output `logits`
//! `[batch, classes]`. Batch norm stays a separate node (folding it into the convolution is
//! the planner's job) and dropout is an inference-mode (identity) node.
//!
//! The architectures follow torchvision exactly (channel rounding, strides, residual
//! conditions, activations, initialisation) and name every parameter like the torchvision
//! `state_dict` key, so [`torch`] can load PyTorch weights by name. Parameter counts at the
//! standard configuration (224, 3 channels, 1000 classes, width 1) match torchvision's
//! `sum(p.numel() for p in model.parameters())`, which [`trainable_parameter_count`] mirrors
//! (batch-norm running statistics are buffers in PyTorch, non-trainable constants here).
//!
//! ```
//! use spore::models::{self, ModelConfig};
//! # fn main() -> spore::Result<()> {
//! let graph = models::mobilenet_v2(&ModelConfig::new(32, 3, 10).width(0.25))?;
//! let logits = graph.value(graph.value_by_name("logits").unwrap())?;
//! assert_eq!(logits.fact.shape, vec![1, 10]);
//! # Ok(())
//! # }
//! ```

mod alexnet;
mod efficientnet;
mod lenet;
mod mobilenet_v1;
mod mobilenet_v2;
mod mobilenet_v3;
mod resnet;
pub mod torch;

pub use alexnet::alexnet;
pub use efficientnet::efficientnet_b0;
pub use lenet::lenet5;
pub use mobilenet_v1::mobilenet_v1;
pub use mobilenet_v2::mobilenet_v2;
pub use mobilenet_v3::{mobilenet_v3_large, mobilenet_v3_small};
pub use resnet::{ResidualBlock, resnet18, resnet50};

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId, ValueKind};
use crate::layers::{Act, BatchNorm, Conv2d, DepthwiseConv2d, Init, Layer, Net, ParamSource, pad};

/// What every zoo builder takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Input height and width.
    pub input_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output classes.
    pub classes: usize,
    /// Channel width multiplier (MobileNets / EfficientNet round with torchvision's
    /// [`make_divisible`]; see each builder).
    pub width_multiplier: f64,
    /// Batch size of the `data` input.
    pub batch: usize,
    /// Seed of the parameter initialisation.
    pub seed: u64,
    /// Given weights by parameter name (e.g. from [`torch::import_state_dict`]); the rest is
    /// initialised from `seed`.
    pub params: Option<ParamSource>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            input_size: 224,
            in_channels: 3,
            classes: 1000,
            width_multiplier: 1.0,
            batch: 1,
            seed: 0,
            params: None,
        }
    }
}

impl ModelConfig {
    /// `input_size` x `input_size` x `in_channels` images into `classes`; width 1, batch 1,
    /// seed 0.
    pub fn new(input_size: usize, in_channels: usize, classes: usize) -> ModelConfig {
        ModelConfig {
            input_size,
            in_channels,
            classes,
            ..ModelConfig::default()
        }
    }

    /// With width multiplier `w`.
    pub fn width(mut self, w: f64) -> ModelConfig {
        self.width_multiplier = w;
        self
    }

    /// With batch size `b`.
    pub fn batch(mut self, b: usize) -> ModelConfig {
        self.batch = b;
        self
    }

    /// With seed `s`.
    pub fn seed(mut self, s: u64) -> ModelConfig {
        self.seed = s;
        self
    }

    /// With given weights.
    pub fn params(mut self, p: ParamSource) -> ModelConfig {
        self.params = Some(p);
        self
    }

    fn check(&self) -> Result<()> {
        let positive = [
            ("input_size", self.input_size),
            ("in_channels", self.in_channels),
            ("classes", self.classes),
            ("batch", self.batch),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::invalid_param(name, "must be positive"));
            }
        }
        if !(self.width_multiplier.is_finite() && self.width_multiplier > 0.0) {
            return Err(Error::invalid_param(
                "width_multiplier",
                format!("{} must be finite and positive", self.width_multiplier),
            ));
        }
        Ok(())
    }
}

/// torchvision's `_make_divisible(v, divisor, min_value=None)`: the multiple of `divisor`
/// nearest to `v` (at least `divisor`), bumped up one step when rounding lost more than 10%.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    // int(v + d / 2) // d * d, as Python computes it for v >= 0.
    let rounded = ((v + d / 2.0).floor() / d).floor() * d;
    let mut new_v = rounded.max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// Trainable elements (PyTorch's `sum(p.numel() for p in model.parameters())`):
/// [`Graph::parameter_count`] also counts batch-norm running statistics and fixed constants.
pub fn trainable_parameter_count(graph: &Graph) -> usize {
    graph
        .values()
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                ValueKind::Constant {
                    trainable: true,
                    ..
                }
            )
        })
        .map(|v| v.fact.numel())
        .sum()
}

/// Every architecture of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    /// [`lenet5`].
    LeNet5,
    /// [`alexnet`].
    AlexNet,
    /// [`resnet18`].
    ResNet18,
    /// [`resnet50`].
    ResNet50,
    /// [`mobilenet_v1`].
    MobileNetV1,
    /// [`mobilenet_v2`].
    MobileNetV2,
    /// [`mobilenet_v3_small`].
    MobileNetV3Small,
    /// [`mobilenet_v3_large`].
    MobileNetV3Large,
    /// [`efficientnet_b0`].
    EfficientNetB0,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 9] = [
        Arch::LeNet5,
        Arch::AlexNet,
        Arch::ResNet18,
        Arch::ResNet50,
        Arch::MobileNetV1,
        Arch::MobileNetV2,
        Arch::MobileNetV3Small,
        Arch::MobileNetV3Large,
        Arch::EfficientNetB0,
    ];

    /// The snake_case name (torchvision's builder name where there is one).
    pub fn name(self) -> &'static str {
        match self {
            Arch::LeNet5 => "lenet5",
            Arch::AlexNet => "alexnet",
            Arch::ResNet18 => "resnet18",
            Arch::ResNet50 => "resnet50",
            Arch::MobileNetV1 => "mobilenet_v1",
            Arch::MobileNetV2 => "mobilenet_v2",
            Arch::MobileNetV3Small => "mobilenet_v3_small",
            Arch::MobileNetV3Large => "mobilenet_v3_large",
            Arch::EfficientNetB0 => "efficientnet_b0",
        }
    }

    /// The architecture called `name`.
    pub fn from_name(name: &str) -> Result<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                Error::invalid_param(
                    "model",
                    format!("unknown model `{name}`; known: {}", names.join(", ")),
                )
            })
    }

    /// Builds the graph.
    pub fn build(self, cfg: &ModelConfig) -> Result<Graph> {
        match self {
            Arch::LeNet5 => lenet5(cfg),
            Arch::AlexNet => alexnet(cfg),
            Arch::ResNet18 => resnet18(cfg),
            Arch::ResNet50 => resnet50(cfg),
            Arch::MobileNetV1 => mobilenet_v1(cfg),
            Arch::MobileNetV2 => mobilenet_v2(cfg),
            Arch::MobileNetV3Small => mobilenet_v3_small(cfg),
            Arch::MobileNetV3Large => mobilenet_v3_large(cfg),
            Arch::EfficientNetB0 => efficientnet_b0(cfg),
        }
    }

    /// The standard configuration: 28x28x1 and 10 classes for LeNet-5, 224x224x3 and 1000
    /// classes for the others.
    pub fn standard_config(self) -> ModelConfig {
        match self {
            Arch::LeNet5 => ModelConfig::new(28, 1, 10),
            _ => ModelConfig::default(),
        }
    }

    /// torchvision's parameter count at [`Arch::standard_config`] (`None` where torchvision
    /// has no such model); [`trainable_parameter_count`] of the graph equals it.
    pub fn torchvision_parameter_count(self) -> Option<usize> {
        match self {
            Arch::LeNet5 | Arch::MobileNetV1 => None,
            Arch::AlexNet => Some(61_100_840),
            Arch::ResNet18 => Some(11_689_512),
            Arch::ResNet50 => Some(25_557_032),
            Arch::MobileNetV2 => Some(3_504_872),
            Arch::MobileNetV3Small => Some(2_542_856),
            Arch::MobileNetV3Large => Some(5_483_032),
            Arch::EfficientNetB0 => Some(5_288_548),
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Arch> {
        Arch::from_name(s)
    }
}

/// A net with the `data` input of `cfg` (after checking `cfg`).
fn start(cfg: &ModelConfig) -> Result<(Net, ValueId)> {
    cfg.check()?;
    let mut net = Net::with_params(cfg.seed, cfg.params.clone().unwrap_or_default());
    let s = cfg.input_size;
    let x = net.input("data", &[cfg.batch, s, s, cfg.in_channels])?;
    Ok((net, x))
}

/// Finishes a zoo graph whose output `logits` is `y`.
fn finish(mut net: Net, arch: Arch, cfg: &ModelConfig, y: ValueId) -> Result<Graph> {
    net.metadata("model", arch.name());
    net.metadata("producer", concat!("spore ", env!("CARGO_PKG_VERSION")));
    net.metadata("width_multiplier", &cfg.width_multiplier.to_string());
    net.finish(&[y])
}

/// torchvision's `Conv2dNormActivation`: children `0` (convolution, no bias), `1` (batch
/// norm), `2` (activation, if any); padding `(kernel - 1) / 2 * dilation`. A grouped
/// convolution with one group per channel (`depthwise`) becomes a `depthwise_conv2d`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBnAct {
    /// Output channels (ignored when `depthwise`: the input's).
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation.
    pub dilation: usize,
    /// One group per channel.
    pub depthwise: bool,
    /// Batch-norm epsilon.
    pub eps: f64,
    /// Activation after the batch norm (`None`: linear, as a projection).
    pub activation: Option<Act>,
    /// Convolution weight initialiser.
    pub weight_init: Init,
}

impl ConvBnAct {
    /// A `kernel` x `kernel` convolution to `out_channels`, stride 1, torchvision's
    /// ResNet / MobileNet initialisation ([`Init::HE_FAN_OUT`]), BN eps 1e-5.
    pub fn new(out_channels: usize, kernel: usize, activation: Option<Act>) -> ConvBnAct {
        ConvBnAct {
            out_channels,
            kernel,
            stride: 1,
            dilation: 1,
            depthwise: false,
            eps: 1e-5,
            activation,
            weight_init: Init::HE_FAN_OUT,
        }
    }

    /// With stride `s`.
    pub fn stride(mut self, s: usize) -> ConvBnAct {
        self.stride = s;
        self
    }

    /// Depthwise.
    pub fn depthwise(mut self) -> ConvBnAct {
        self.depthwise = true;
        self
    }

    /// With batch-norm epsilon `eps`.
    pub fn eps(mut self, eps: f64) -> ConvBnAct {
        self.eps = eps;
        self
    }
}

impl Layer for ConvBnAct {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("conv_bn_act", |net| {
            let p = self.kernel.saturating_sub(1) / 2 * self.dilation;
            let y = net.scope("0", |net| {
                if self.depthwise {
                    let mut conv = DepthwiseConv2d::new(self.kernel)
                        .stride(self.stride)
                        .dilation(self.dilation);
                    conv.padding = pad(p);
                    conv.init(self.weight_init, Init::ZEROS)
                        .bias(false)
                        .build(net, x)
                } else {
                    let mut conv = Conv2d::new(self.out_channels, self.kernel)
                        .stride(self.stride)
                        .dilation(self.dilation);
                    conv.padding = pad(p);
                    conv.init(self.weight_init, Init::ZEROS)
                        .bias(false)
                        .build(net, x)
                }
            })?;
            let y = net.scope("1", |net| BatchNorm::new().eps(self.eps).build(net, y))?;
            match self.activation {
                Some(act) => net.scope("2", |net| act.build(net, y)),
                None => Ok(y),
            }
        })
    }
}
