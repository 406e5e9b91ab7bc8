// Snippet `activation`: the fused activation epilogue shared by every kernel that applies one
// (matmul, conv2d, conv_transpose2d, the elementwise activation kernels).
//
// Not a shader on its own: `shaders::source` prepends it (after the prelude) to the shaders
// that list it in `SHADER_SNIPPETS`. Works on f32 values so the same code serves the f16
// prelude (kernels accumulate in f32 and cast to Elem on store).
//
// Codes mirror `spore::backend::gpu::kernels::activation_wgsl::code` and the reference enum
// `Activation`: 0 none, 1 relu, 2 relu6, 3 leaky_relu(alpha), 4 sigmoid, 5 tanh,
// 6 hard_swish, 7 hard_sigmoid, 8 gelu (erf), 9 gelu_tanh. Unknown codes act as none.

const ACT_NONE: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_RELU6: u32 = 2u;
const ACT_LEAKY_RELU: u32 = 3u;
const ACT_SIGMOID: u32 = 4u;
const ACT_TANH: u32 = 5u;
const ACT_HARD_SWISH: u32 = 6u;
const ACT_HARD_SIGMOID: u32 = 7u;
const ACT_GELU: u32 = 8u;
const ACT_GELU_TANH: u32 = 9u;

// Logistic function that never evaluates exp of a large positive number.
fn act_sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

// tanh with the argument clamped: some drivers build tanh from exp and return NaN for large
// |v|; at |v| = 15, tanh is 1 to f32 precision anyway.
fn act_tanh(v: f32) -> f32 {
    return tanh(clamp(v, -15.0, 15.0));
}

// erfc(a) for a >= 0, by the Chebyshev fit of Numerical Recipes' `erfcc`: fractional error
// below 1.2e-7 everywhere, including the far tail, where 1 - erf(a) would cancel to nothing
// (A&S 7.1.26's erf, used before, is only accurate to 1.5e-7 absolute, i.e. tens of percent
// relative for a > 3; GELU at x = -4 came out 1e-3 off relative, at x = -10 wrong).
fn act_erfc_pos(a: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * a);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(p - a * a);
}

// x * Phi(x), Phi the normal CDF, without cancellation: for x < 0, Phi(x) =
// erfc(|x| / sqrt 2) / 2 directly; for x >= 0, 1 - erfc(x / sqrt 2) / 2.
fn act_gelu(v: f32) -> f32 {
    let c = act_erfc_pos(abs(v) * 0.70710678118654752);
    return select(v * (1.0 - 0.5 * c), 0.5 * v * c, v < 0.0);
}

// 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the sigmoid form
// keeps full relative precision for x << 0, where 1 + tanh(u) would cancel.
fn act_gelu_tanh(v: f32) -> f32 {
    let u = 0.7978845608028654 * (v + 0.044715 * v * v * v);
    return v * act_sigmoid(2.0 * u);
}

// The activation `code` (with slope `alpha` for leaky relu) of one f32 value.
fn activate(code: u32, alpha: f32, v: f32) -> f32 {
    switch code {
        case 1u: { return max(v, 0.0); }
        case 2u: { return clamp(v, 0.0, 6.0); }
        case 3u: { return select(alpha * v, v, v > 0.0); }
        case 4u: { return act_sigmoid(v); }
        case 5u: { return act_tanh(v); }
        case 6u: { return v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 7u: { return clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 8u: { return act_gelu(v); }
        case 9u: { return act_gelu_tanh(v); }
        default: { return v; }
    }
}
