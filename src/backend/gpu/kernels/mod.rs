//! Host side of the WGSL kernels: one file per kernel family, each with its `Params` mirror
//! and a function that records or runs the dispatch.

pub mod activation_wgsl;
pub mod batch_norm;
pub mod bias_add;
pub mod binary;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod depthwise_conv2d;
pub mod matmul;
pub mod pool2d;
pub mod reduce;
pub mod softmax;
pub mod unary;

/// `(shader, size_of::<Params>())` for every kernel, checked against naga's layout in tests.
pub const PARAMS_SIZES: &[(&str, usize)] = &[
    ("bias_add", std::mem::size_of::<bias_add::Params>()),
    ("batch_norm", std::mem::size_of::<batch_norm::Params>()),
    (
        "batch_norm_stats",
        std::mem::size_of::<batch_norm::StatsParams>(),
    ),
    (
        "batch_norm_combine",
        std::mem::size_of::<batch_norm::CombineParams>(),
    ),
    ("binary", std::mem::size_of::<binary::Params>()),
    (
        "depthwise_conv2d",
        std::mem::size_of::<depthwise_conv2d::Params>(),
    ),
    (
        "depthwise_conv2d_naive",
        std::mem::size_of::<depthwise_conv2d::Params>(),
    ),
    (
        "depthwise_conv2d_vec4",
        std::mem::size_of::<depthwise_conv2d::Params>(),
    ),
    (
        "global_avg_pool",
        std::mem::size_of::<pool2d::GlobalParams>(),
    ),
    ("pool2d", std::mem::size_of::<pool2d::Params>()),
    ("reduce", std::mem::size_of::<reduce::Params>()),
    ("softmax", std::mem::size_of::<softmax::Params>()),
    ("unary", std::mem::size_of::<unary::Params>()),
    ("matmul", std::mem::size_of::<matmul::Params>()),
    ("matmul_naive", std::mem::size_of::<matmul::Params>()),
    ("matmul_small", std::mem::size_of::<matmul::Params>()),
    ("matmul_splitk", std::mem::size_of::<matmul::Params>()),
    (
        "matmul_splitk_reduce",
        std::mem::size_of::<matmul::Params>(),
    ),
    ("conv2d", std::mem::size_of::<conv2d::Params>()),
    ("conv2d_naive", std::mem::size_of::<conv2d::Params>()),
    ("conv_transpose2d", std::mem::size_of::<conv2d::Params>()),
];

/// An element type with a WGSL prelude: f32 everywhere, f16 where `SHADER_F16` exists.
pub trait GpuElement: crate::tensor::Element {
    /// The prelude's name (`"f32"` / `"f16"`).
    const WGSL: &'static str;
}

impl GpuElement for f32 {
    const WGSL: &'static str = "f32";
}

impl GpuElement for half::f16 {
    const WGSL: &'static str = "f16";
}
