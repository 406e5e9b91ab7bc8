//! Seeded parameter initialisers with PyTorch's conventions (fan computation, Kaiming gains),
//! so a Spore model starts from the same distribution as its PyTorch twin and trains alike.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use spore_kernels_cpu::rng::Rng;

/// `sqrt(5)`: the leaky-relu slope PyTorch passes to `kaiming_uniform_` in the default
/// `reset_parameters` of `nn.Conv2d` and `nn.Linear`.
pub const TORCH_DEFAULT_A: f32 = 2.236_068;

/// Which fan a Kaiming initialiser divides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// Inputs feeding one output (preserves the forward variance).
    FanIn,
    /// Outputs one input feeds (preserves the backward variance; torchvision's choice for
    /// ResNet, MobileNet and EfficientNet convolutions).
    FanOut,
}

/// A weight's fans, computed as PyTorch's `_calculate_fan_in_and_fan_out` does on the
/// PyTorch-layout tensor: `fan_in = in_channels / groups * kh * kw`,
/// `fan_out = out_channels * kh * kw` (for a Linear layer `in` and `out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fans {
    /// Inputs per output.
    pub fan_in: usize,
    /// Outputs per input.
    pub fan_out: usize,
}

impl Fans {
    /// Fans `fan_in` and `fan_out`.
    pub fn new(fan_in: usize, fan_out: usize) -> Fans {
        Fans { fan_in, fan_out }
    }

    fn pick(self, mode: FanMode) -> usize {
        match mode {
            FanMode::FanIn => self.fan_in,
            FanMode::FanOut => self.fan_out,
        }
    }
}

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element `value`.
    Constant(f32),
    /// Uniform in `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// Normal with `mean` and `std`.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// PyTorch `kaiming_uniform_(a, mode, nonlinearity="leaky_relu")`: uniform in
    /// `±gain * sqrt(3 / fan)`, `gain = sqrt(2 / (1 + a^2))`.
    KaimingUniform {
        /// Leaky-relu slope in the gain (`sqrt(5)` for PyTorch's layer default).
        a: f32,
        /// The fan to divide by.
        mode: FanMode,
    },
    /// PyTorch `kaiming_normal_(a, mode, nonlinearity="leaky_relu")`: normal with
    /// `std = gain / sqrt(fan)`, `gain = sqrt(2 / (1 + a^2))` (`a = 0` is He init for relu).
    KaimingNormal {
        /// Leaky-relu slope in the gain.
        a: f32,
        /// The fan to divide by.
        mode: FanMode,
    },
    /// PyTorch's default conv / linear bias: uniform in `±1 / sqrt(fan_in)` (0 when
    /// `fan_in` is 0), `fan_in` being the weight's.
    BiasUniform,
}

impl Init {
    /// All zeros.
    pub const ZEROS: Init = Init::Constant(0.0);
    /// All ones.
    pub const ONES: Init = Init::Constant(1.0);
    /// PyTorch's default conv / linear weight: `kaiming_uniform_(a = sqrt(5))` over `fan_in`,
    /// i.e. uniform in `±1 / sqrt(fan_in)`.
    pub const TORCH_WEIGHT: Init = Init::KaimingUniform {
        a: TORCH_DEFAULT_A,
        mode: FanMode::FanIn,
    };
    /// torchvision's conv init for ResNet / MobileNet / EfficientNet:
    /// `kaiming_normal_(mode="fan_out")` (relu gain `sqrt(2)`).
    pub const HE_FAN_OUT: Init = Init::KaimingNormal {
        a: 0.0,
        mode: FanMode::FanOut,
    };

    /// A tensor of `dims` drawn from this initialiser with `rng`; `fans` are the weight's.
    pub fn tensor(&self, dims: &[usize], fans: Fans, rng: &mut Rng) -> Result<Tensor> {
        let n = crate::shape::numel(dims)?;
        let gain = |a: f32| (2.0 / (1.0 + f64::from(a) * f64::from(a))).sqrt();
        let fan = |mode: FanMode| -> Result<f64> {
            match fans.pick(mode) {
                0 => Err(Error::invalid_param(
                    "init",
                    "a Kaiming initialiser needs a non-zero fan",
                )),
                f => Ok(f as f64),
            }
        };
        let data = match *self {
            Init::Constant(v) => vec![v; n],
            Init::Uniform { low, high } => uniform(rng, n, f64::from(low), f64::from(high)),
            Init::Normal { mean, std } => normal(rng, n, f64::from(mean), f64::from(std)),
            Init::KaimingUniform { a, mode } => {
                let bound = gain(a) * (3.0 / fan(mode)?).sqrt();
                uniform(rng, n, -bound, bound)
            }
            Init::KaimingNormal { a, mode } => normal(rng, n, 0.0, gain(a) / fan(mode)?.sqrt()),
            Init::BiasUniform => {
                let bound = if fans.fan_in == 0 {
                    0.0
                } else {
                    1.0 / (fans.fan_in as f64).sqrt()
                };
                uniform(rng, n, -bound, bound)
            }
        };
        Tensor::from_vec(dims, data)
    }
}

/// 24-bit uniform in `(0, 1)`: one counter hash per draw (initialising 25 M parameters must
/// take well under a second), never exactly 0 so `ln` below stays finite.
fn open01(rng: &mut Rng) -> f64 {
    (f64::from(rng.next_u32() >> 8) + 0.5) * (1.0 / 16_777_216.0)
}

fn uniform(rng: &mut Rng, n: usize, low: f64, high: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (low + (high - low) * open01(rng)) as f32)
        .collect()
}

/// Box-Muller, using both the cosine and the sine of each pair (half the draws of
/// `Rng::normal`, which discards the sine).
fn normal(rng: &mut Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = (-2.0 * open01(rng).ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * open01(rng)).sin_cos();
        out.push((mean + std * r * c) as f32);
        if out.len() < n {
            out.push((mean + std * r * s) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(t: &Tensor) -> (f64, f64, f64) {
        let v = t.to_f32_vec();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        let max = v.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
        (mean, var.sqrt(), max)
    }

    #[test]
    fn torch_default_weight_is_uniform_one_over_sqrt_fan_in() {
        let t = Init::TORCH_WEIGHT
            .tensor(&[64, 100], Fans::new(100, 64), &mut Rng::new(1))
            .unwrap();
        let (mean, std, max) = stats(&t);
        assert!(max <= 0.1 + 1e-6, "{max}");
        assert!(mean.abs() < 0.005, "{mean}");
        // Uniform(-b, b) has std b / sqrt(3).
        assert!((std - 0.1 / 3f64.sqrt()).abs() < 0.003, "{std}");
    }

    #[test]
    fn he_fan_out_has_the_right_std() {
        let fans = Fans::new(3 * 9, 32 * 9);
        let t = Init::HE_FAN_OUT
            .tensor(&[32, 3, 3, 3 * 40], fans, &mut Rng::new(2))
            .unwrap();
        let (mean, std, _) = stats(&t);
        let want = (2.0f64 / 288.0).sqrt();
        assert!(mean.abs() < 0.01 * want * 10.0, "{mean}");
        assert!((std / want - 1.0).abs() < 0.05, "{std} vs {want}");
    }

    #[test]
    fn same_seed_same_tensor() {
        let a = Init::Normal {
            mean: 0.0,
            std: 1.0,
        }
        .tensor(&[5], Fans::default(), &mut Rng::new(3));
        let b = Init::Normal {
            mean: 0.0,
            std: 1.0,
        }
        .tensor(&[5], Fans::default(), &mut Rng::new(3));
        assert_eq!(a.unwrap(), b.unwrap());
    }
}
