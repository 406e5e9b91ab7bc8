//! Elementwise activations (ReLU family, sigmoid, tanh, the MobileNetV3 hard functions and
//! GELU) and their gradients, plus the accurate f64 [`erf`] / [`erfc`] that exact GELU needs.
//!
//! Definitions follow PyTorch, including the one-sided choices at the kinks, so a gradient
//! computed here matches what a model trained there expects.

use super::Real;
use crate::error::{check_len, check_param};

/// An elementwise activation function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`; gradient 0 at `x = 0`.
    Relu,
    /// `min(max(x, 0), 6)`; gradient 1 strictly inside `(0, 6)`, else 0.
    Relu6,
    /// `x` for `x > 0`, `alpha * x` otherwise (the slope `alpha` must be finite).
    LeakyRelu(f64),
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x * relu6(x + 3) / 6` (MobileNetV3 / PyTorch `Hardswish`).
    HardSwish,
    /// `relu6(x + 3) / 6` (MobileNetV3 / PyTorch `Hardsigmoid`); gradient `1/6` strictly
    /// inside `(-3, 3)`, else 0.
    HardSigmoid,
    /// Exact GELU: `x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))`.
    Gelu,
    /// The tanh approximation of GELU:
    /// `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))`.
    GeluTanh,
}

/// `sqrt(2 / pi)`, the tanh-GELU scale.
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
/// The cubic coefficient of tanh-GELU.
const GELU_TANH_C: f64 = 0.044_715;

/// Numerically stable logistic function (never evaluates `exp` of a large positive number).
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `exp(-x^2)` with the rounding error of `x^2` compensated: for `|x|` near 6 a plain
/// `(-x * x).exp()` loses ~`x^2` ulps, which would cap erf's accuracy.
fn exp_neg_sq(x: f64) -> f64 {
    let sq = x * x;
    let sq_err = x.mul_add(x, -sq); // x*x - sq, exactly
    (-sq).exp() * (1.0 - sq_err)
}

/// `erf(x)` for `|x| < 2` by the series `2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (2n+1)!!`,
/// whose terms are all of one sign, so it has no cancellation (unlike the Taylor series).
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0f64;
    // At |x| < 2 the ratio 2x^2/(2n+1) falls below 1/2 within ~10 terms; 200 is a safe cap.
    for _ in 0..200 {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
        if term.abs() <= sum.abs() * 1e-17 {
            break;
        }
    }
    std::f64::consts::FRAC_2_SQRT_PI * exp_neg_sq(x) * sum
}

/// `erfc(x)` for `x >= 2` by the continued fraction (Abramowitz & Stegun 7.1.14)
/// `exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`, evaluated with the
/// modified Lentz algorithm.
fn erfc_cf(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0f64;
    for j in 1..500 {
        let a = f64::from(j) * 0.5;
        d = x + a * d;
        if d.abs() < TINY {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    // 1/sqrt(pi) = FRAC_2_SQRT_PI / 2.
    0.5 * std::f64::consts::FRAC_2_SQRT_PI * exp_neg_sq(x) / f
}

/// The error function, accurate to a few ulps in f64 (series below 2, continued fraction
/// for the complement above).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.0 {
        erf_series(a)
    } else if a < 30.0 {
        1.0 - erfc_cf(a)
    } else {
        1.0
    };
    if x < 0.0 { -r } else { r }
}

/// The complementary error function `1 - erf(x)`, computed without cancellation for large `x`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 2.0 {
        // Below 2 erfc >= 0.0047, so `1 - erf` loses at most ~8 bits; negative x is exact.
        1.0 - erf(x)
    } else if x < 30.0 {
        erfc_cf(x)
    } else {
        0.0
    }
}

/// Standard normal CDF `Phi(x) = erfc(-x / sqrt 2) / 2`, accurate in the far left tail.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Standard normal density.
fn normal_pdf(x: f64) -> f64 {
    // 1/sqrt(2 pi) = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 / 2.
    0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 * (-0.5 * x * x).exp()
}

impl Activation {
    /// The activation of one value.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Self::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Self::Relu6 => x.clamp(0.0, 6.0),
            Self::LeakyRelu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Self::Sigmoid => sigmoid(x),
            Self::Tanh => x.tanh(),
            Self::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Self::HardSigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Self::Gelu => x * normal_cdf(x),
            Self::GeluTanh => {
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh())
            }
        }
    }

    /// The derivative `d apply(x) / dx`, with PyTorch's choices at the kinks.
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Self::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Relu6 => {
                if x > 0.0 && x < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::LeakyRelu(alpha) => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Self::Sigmoid => {
                let s = sigmoid(x);
                s * (1.0 - s)
            }
            Self::Tanh => {
                let t = x.tanh();
                1.0 - t * t
            }
            // PyTorch's hardswish_backward: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above.
            Self::HardSwish => {
                if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    x / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            Self::HardSigmoid => {
                if x > -3.0 && x < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            Self::Gelu => normal_cdf(x) + x * normal_pdf(x),
            Self::GeluTanh => {
                let t = (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh();
                let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x);
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
            }
        }
    }

    /// Checks the activation's parameters (a leaky-relu slope must be finite); every kernel
    /// with a fused activation epilogue calls this.
    pub(crate) fn validate(self, kernel: &'static str) -> crate::Result<()> {
        if let Self::LeakyRelu(alpha) = self {
            check_param(kernel, "alpha", alpha.is_finite(), || {
                format!("leaky relu slope must be finite, got {alpha}")
            })?;
        }
        Ok(())
    }
}

/// `y[i] = act(x[i])`.
pub fn activation<T: Real>(act: Activation, x: &[T], y: &mut [T]) -> crate::Result<()> {
    const K: &str = "activation";
    act.validate(K)?;
    check_len(K, "y", x.len(), y.len())?;
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = T::from_f64(act.apply(xi.to_f64()));
    }
    Ok(())
}

/// `dx[i] = dy[i] * act'(x[i])`, from the activation's INPUT `x`. Overwrites `dx`.
pub fn activation_grad<T: Real>(
    act: Activation,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
) -> crate::Result<()> {
    const K: &str = "activation_grad";
    act.validate(K)?;
    check_len(K, "dy", x.len(), dy.len())?;
    check_len(K, "dx", x.len(), dx.len())?;
    for ((dxi, xi), dyi) in dx.iter_mut().zip(x).zip(dy) {
        *dxi = T::from_f64(dyi.to_f64() * act.derivative(xi.to_f64()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, check_grad, rand_range, rand_vec, rng};

    const ALL: [Activation; 9] = [
        Activation::Relu,
        Activation::Relu6,
        Activation::LeakyRelu(0.1),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSwish,
        Activation::HardSigmoid,
        Activation::Gelu,
        Activation::GeluTanh,
    ];

    /// Relative error check that also accepts exact zeros.
    #[track_caller]
    fn near(got: f64, want: f64, rel: f64) {
        let err = (got - want).abs();
        assert!(
            err <= rel * want.abs() || err == 0.0,
            "got {got:e}, want {want:e} (err {err:e})"
        );
    }

    #[test]
    fn erf_matches_known_values() {
        // (x, erf(x), erfc(x)), from mpmath at 40 digits.
        let table: [(f64, f64, f64); 13] = [
            (0.5, 0.520_499_877_813_046_5, 0.479_500_122_186_953_5),
            (1.0, 0.842_700_792_949_714_9, 0.157_299_207_050_285_13),
            (2.0, 0.995_322_265_018_952_7, 0.004_677_734_981_047_266),
            (-0.3, -0.328_626_759_459_127_43, 1.328_626_759_459_127_4),
            (0.01, 0.011_283_415_555_849_617, 0.988_716_584_444_150_4),
            (1e-8, 1.128_379_167_095_512_5e-8, 0.999_999_988_716_208_3),
            (2.5, 0.999_593_047_982_555_1, 0.000_406_952_017_444_958_9),
            (3.0, 0.999_977_909_503_001_4, 2.209_049_699_858_544e-5),
            (4.0, 0.999_999_984_582_742_1, 1.541_725_790_028_002e-8),
            (5.5, 0.999_999_999_999_992_6, 7.357_847_917_974_398e-15),
            (-1.7, -0.983_790_458_590_774_6, 1.983_790_458_590_774_6),
            (6.0, 1.0, 2.151_973_671_249_891_3e-17),
            (10.0, 1.0, 2.088_487_583_762_545e-45),
        ];
        for (x, e, ec) in table {
            near(erf(x), e, 2e-15);
            near(erfc(x), ec, 1e-13);
            near(erf(-x), -e, 2e-15);
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
    }

    #[test]
    fn erf_is_continuous_at_the_branch_point() {
        let below = erf(2.0 - 1e-15);
        let above = erf(2.0);
        assert!((above - below).abs() < 1e-15, "{below} vs {above}");
    }

    #[test]
    fn forward_known_values() {
        use Activation::*;
        let cases: [(Activation, f64, f64); 20] = [
            (Relu, -1.5, 0.0),
            (Relu, 2.5, 2.5),
            (Relu6, 7.0, 6.0),
            (Relu6, 3.0, 3.0),
            (Relu6, -2.0, 0.0),
            (LeakyRelu(0.2), -2.0, -0.4),
            (LeakyRelu(0.2), 2.0, 2.0),
            (Sigmoid, 0.0, 0.5),
            (Sigmoid, 2.0, 0.880_797_077_977_882_3),
            (Sigmoid, -800.0, 0.0),
            (Tanh, 0.5, 0.462_117_157_260_009_8),
            (HardSigmoid, 0.0, 0.5),
            (HardSigmoid, 1.5, 0.75),
            (HardSigmoid, -4.0, 0.0),
            (HardSwish, 1.5, 1.125),
            (HardSwish, 4.0, 4.0),
            (HardSwish, -3.5, 0.0),
            // GELU values from mpmath: x * (1 + erf(x / sqrt 2)) / 2.
            (Gelu, 1.0, 0.841_344_746_068_542_9),
            (Gelu, -2.0, -0.045_500_263_896_358_42),
            (GeluTanh, 1.0, 0.841_191_990_608_276_7),
        ];
        for (act, x, want) in cases {
            let got = act.apply(x);
            assert!(
                (got - want).abs() <= 1e-15 * want.abs().max(1.0),
                "{act:?}({x}) = {got}, want {want}"
            );
        }
        // Far left tail of GELU: computed through erfc, so no cancellation to 0.
        near(Gelu.apply(-10.0), -7.619_853_024_160_526e-23, 1e-12);
    }

    /// Random inputs over `[-bound, bound)` nudged at least 1e-3 away from every kink.
    fn away_from_kinks(r: &mut crate::rng::Rng, n: usize, bound: f64) -> Vec<f64> {
        rand_range(r, n, -bound, bound)
            .into_iter()
            .map(|v| {
                let mut v = v;
                for k in [-3.0, 0.0, 3.0, 6.0] {
                    if (v - k).abs() < 1e-3 {
                        v = k + if v >= k { 1e-3 } else { -1e-3 };
                    }
                }
                v
            })
            .collect()
    }

    #[test]
    fn grads_match_finite_differences() {
        let mut r = rng("activation::grads_match_finite_differences");
        for act in ALL {
            for _ in 0..5 {
                let n = r.range(1, 40);
                // The smooth functions saturate: beyond ~4 their derivatives fall to the level
                // of the finite differences' rounding noise, so only the linear pieces get the
                // wide range (which covers relu6's kink at 6).
                let smooth = matches!(
                    act,
                    Activation::Sigmoid
                        | Activation::Tanh
                        | Activation::Gelu
                        | Activation::GeluTanh
                );
                let x = away_from_kinks(&mut r, n, if smooth { 4.0 } else { 8.0 });
                let dy = rand_vec(&mut r, n);
                let mut dx = vec![0.0; n];
                activation_grad(act, &x, &dy, &mut dx).unwrap();
                let f = |v: &[f64]| {
                    let mut y = vec![0.0; v.len()];
                    activation(act, v, &mut y).unwrap();
                    y
                };
                check_grad(&format!("{act:?}"), &f, &x, &dy, &dx);
            }
        }
    }

    #[test]
    fn derivatives_at_kinks_follow_pytorch() {
        use Activation::*;
        assert_eq!(Relu.derivative(0.0), 0.0);
        assert_eq!(Relu6.derivative(0.0), 0.0);
        assert_eq!(Relu6.derivative(6.0), 0.0);
        assert_eq!(LeakyRelu(0.3).derivative(0.0), 0.3);
        assert_eq!(HardSigmoid.derivative(3.0), 0.0);
        assert_eq!(HardSigmoid.derivative(-3.0), 0.0);
        assert_eq!(HardSwish.derivative(3.0), 1.5);
        assert_eq!(HardSwish.derivative(-3.0), -0.5);
    }

    #[test]
    fn f32_agrees_with_f64() {
        let mut r = rng("activation::f32_agrees_with_f64");
        for act in ALL {
            let x32: Vec<f32> = rand_range(&mut r, 64, -6.0, 6.0)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let x64: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
            let dy32: Vec<f32> = rand_vec(&mut r, 64).iter().map(|&v| v as f32).collect();
            let dy64: Vec<f64> = dy32.iter().map(|&v| f64::from(v)).collect();
            let (mut y32, mut dx32) = (vec![0.0f32; 64], vec![0.0f32; 64]);
            let (mut y64, mut dx64) = (vec![0.0f64; 64], vec![0.0f64; 64]);
            activation(act, &x32, &mut y32).unwrap();
            activation(act, &x64, &mut y64).unwrap();
            activation_grad(act, &x32, &dy32, &mut dx32).unwrap();
            activation_grad(act, &x64, &dy64, &mut dx64).unwrap();
            let w = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
            assert_close(&format!("{act:?} y"), &w(&y32), &y64, 1e-6);
            assert_close(&format!("{act:?} dx"), &w(&dx32), &dx64, 1e-6);
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = [1.0f64, -2.0, 3.0];
        let mut y = [0.0f64; 2];
        assert!(activation(Activation::Relu, &x, &mut y).is_err());
        let mut y3 = [0.0f64; 3];
        assert!(activation(Activation::LeakyRelu(f64::NAN), &x, &mut y3).is_err());
        assert!(activation(Activation::LeakyRelu(f64::INFINITY), &x, &mut y3).is_err());
        assert!(activation_grad(Activation::Tanh, &x, &x[..2], &mut y3).is_err());
        assert!(activation_grad(Activation::Tanh, &x, &x, &mut y).is_err());
    }
}
