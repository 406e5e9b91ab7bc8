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

// erf by Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7, below f32 resolution of
// GELU's output scale).
fn act_erf(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-a * a);
    return select(r, -r, v < 0.0);
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
        case 8u: { return 0.5 * v * (1.0 + act_erf(v * 0.70710678118654752)); }
        case 9u: {
            return 0.5 * v * (1.0 + act_tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        }
        default: { return v; }
    }
}
