//! Host side of the WGSL kernels: one file per kernel family, each with its `Params` mirror
//! and a function that records or runs the dispatch.

pub mod activation_wgsl;
pub mod batch_norm;
pub mod bias_add;
pub mod binary;
pub mod conv2d;
pub mod conv2d_grad;
pub mod conv_transpose2d;
pub mod depthwise_conv2d;
pub mod depthwise_conv2d_grad;
pub mod elementwise_chain;
pub mod matmul;
pub mod pool2d;
pub mod reduce;
pub mod softmax;
pub mod unary;
// gpu5: forward ops around the main kernels.
pub mod concat;
pub mod dropout;
pub mod loss;
// gelem: non-conv gradients and optimizer updates.
pub mod batch_norm_grad;
pub mod broadcast_grad;
pub mod elementwise_grad;
pub mod optimizer;
pub mod pool2d_grad;

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
        "elementwise_chain",
        std::mem::size_of::<elementwise_chain::Params>(),
    ),
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
    ("matmul_rows", std::mem::size_of::<matmul::Params>()),
    ("conv2d_rows", std::mem::size_of::<conv2d::Params>()),
    ("concat", std::mem::size_of::<concat::Params>()),
    ("dropout", std::mem::size_of::<dropout::Params>()),
    ("loss_rows", std::mem::size_of::<loss::RowsParams>()),
    ("loss_elem", std::mem::size_of::<loss::ElemParams>()),
    ("loss_reduce", std::mem::size_of::<loss::ReduceParams>()),
    (
        "conv2d_grad_input",
        std::mem::size_of::<conv2d_grad::GradParams>(),
    ),
    (
        "conv2d_grad_input_naive",
        std::mem::size_of::<conv2d_grad::GradParams>(),
    ),
    (
        "conv2d_grad_weight",
        std::mem::size_of::<conv2d_grad::GradParams>(),
    ),
    (
        "conv2d_grad_weight_naive",
        std::mem::size_of::<conv2d_grad::GradParams>(),
    ),
    (
        "depthwise_conv2d_grad_input",
        std::mem::size_of::<depthwise_conv2d_grad::DwGradParams>(),
    ),
    (
        "depthwise_conv2d_grad_input_naive",
        std::mem::size_of::<depthwise_conv2d_grad::DwGradParams>(),
    ),
    (
        "depthwise_conv2d_grad_input_vec4",
        std::mem::size_of::<depthwise_conv2d_grad::DwGradParams>(),
    ),
    (
        "depthwise_conv2d_grad_weight",
        std::mem::size_of::<depthwise_conv2d_grad::DwGradParams>(),
    ),
    (
        "depthwise_conv2d_grad_weight_naive",
        std::mem::size_of::<depthwise_conv2d_grad::DwGradParams>(),
    ),
    (
        "depthwise_conv2d_grad_weight_vec4",
        std::mem::size_of::<depthwise_conv2d_grad::DwGradParams>(),
    ),
    // gelem
    (
        "activation_grad",
        std::mem::size_of::<elementwise_grad::ActivationGradParams>(),
    ),
    (
        "softmax_grad",
        std::mem::size_of::<elementwise_grad::RowGradParams>(),
    ),
    (
        "loss_grad",
        std::mem::size_of::<elementwise_grad::LossGradParams>(),
    ),
    ("binary_grad", std::mem::size_of::<binary::Params>()),
    (
        "broadcast_to",
        std::mem::size_of::<broadcast_grad::BroadcastParams>(),
    ),
    ("slice", std::mem::size_of::<broadcast_grad::SliceParams>()),
    ("pool2d_grad", std::mem::size_of::<pool2d::Params>()),
    (
        "batch_norm_grad_stats",
        std::mem::size_of::<batch_norm_grad::StatsParams>(),
    ),
    (
        "batch_norm_grad_combine",
        std::mem::size_of::<batch_norm_grad::CombineParams>(),
    ),
    (
        "batch_norm_grad_apply",
        std::mem::size_of::<batch_norm_grad::ApplyParams>(),
    ),
    ("sgd_update", std::mem::size_of::<optimizer::SgdParams>()),
    ("adam_update", std::mem::size_of::<optimizer::AdamParams>()),
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
