//! The host half of `shaders/snippets/activation.wgsl`: how a reference [`Activation`] is
//! encoded as the `(act, alpha)` pair that fused epilogues read from their `Params` uniform.

use crate::error::{Error, Result};
use spore_kernels_cpu::reference::activation::Activation;

/// WGSL activation codes (the `ACT_*` constants of the snippet).
pub mod code {
    /// Identity.
    pub const NONE: u32 = 0;
    /// `max(x, 0)`.
    pub const RELU: u32 = 1;
    /// `clamp(x, 0, 6)`.
    pub const RELU6: u32 = 2;
    /// `x > 0 ? x : alpha * x`.
    pub const LEAKY_RELU: u32 = 3;
    /// Logistic function.
    pub const SIGMOID: u32 = 4;
    /// Hyperbolic tangent.
    pub const TANH: u32 = 5;
    /// `x * relu6(x + 3) / 6`.
    pub const HARD_SWISH: u32 = 6;
    /// `relu6(x + 3) / 6`.
    pub const HARD_SIGMOID: u32 = 7;
    /// Exact (erf) GELU.
    pub const GELU: u32 = 8;
    /// tanh-approximated GELU.
    pub const GELU_TANH: u32 = 9;
}

/// `(code, alpha)` for an optional activation (`None` = identity). Errors on a leaky-relu
/// slope that is not finite in f32.
pub fn encode(act: Option<Activation>) -> Result<(u32, f32)> {
    let Some(act) = act else {
        return Ok((code::NONE, 0.0));
    };
    Ok(match act {
        Activation::Relu => (code::RELU, 0.0),
        Activation::Relu6 => (code::RELU6, 0.0),
        Activation::LeakyRelu(alpha) => {
            let a = alpha as f32;
            if !a.is_finite() {
                return Err(Error::invalid_param(
                    "alpha",
                    format!("leaky relu slope must be finite in f32, got {alpha}"),
                ));
            }
            (code::LEAKY_RELU, a)
        }
        Activation::Sigmoid => (code::SIGMOID, 0.0),
        Activation::Tanh => (code::TANH, 0.0),
        Activation::HardSwish => (code::HARD_SWISH, 0.0),
        Activation::HardSigmoid => (code::HARD_SIGMOID, 0.0),
        Activation::Gelu => (code::GELU, 0.0),
        Activation::GeluTanh => (code::GELU_TANH, 0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_snippet() {
        let src = crate::backend::gpu::shaders::SNIPPETS
            .iter()
            .find(|(n, _)| *n == "activation")
            .unwrap()
            .1;
        for (name, c) in [
            ("ACT_NONE", code::NONE),
            ("ACT_RELU", code::RELU),
            ("ACT_RELU6", code::RELU6),
            ("ACT_LEAKY_RELU", code::LEAKY_RELU),
            ("ACT_SIGMOID", code::SIGMOID),
            ("ACT_TANH", code::TANH),
            ("ACT_HARD_SWISH", code::HARD_SWISH),
            ("ACT_HARD_SIGMOID", code::HARD_SIGMOID),
            ("ACT_GELU", code::GELU),
            ("ACT_GELU_TANH", code::GELU_TANH),
        ] {
            let line = format!("const {name}: u32 = {c}u;");
            assert!(src.contains(&line), "snippet lacks `{line}`");
        }
        assert_eq!(encode(None).unwrap(), (0, 0.0));
        assert_eq!(
            encode(Some(Activation::LeakyRelu(0.25))).unwrap(),
            (3, 0.25)
        );
        assert!(encode(Some(Activation::LeakyRelu(f64::NAN))).is_err());
        assert!(encode(Some(Activation::LeakyRelu(1e300))).is_err());
    }
}
