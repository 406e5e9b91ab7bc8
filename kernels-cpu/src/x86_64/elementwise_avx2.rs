//! AVX2 + FMA builds of the elementwise kernels (activation, batch norm, softmax, pooling,
//! binary ops, reductions, optimizers): the SAME safe generic bodies as the portable tier,
//! compiled inside `#[target_feature(enable = "avx2,fma")]` functions (multiversioning), so
//! LLVM vectorises them 8 lanes wide with FMA. Each public wrapper here is safe: it checks the
//! CPU features and runs the portable body instead on a CPU without them. The bodies index
//! only through safe slices, so they need no argument checks beyond what they do themselves.

use crate::activation::Activation;
use crate::binary::BinaryOp;
use crate::pool2d::{AvgPool2dParams, MaxPool2dParams};

/// Whether this CPU can run the AVX2 + FMA builds.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Generates, for each `name => body; fn(args)`, a safe `pub fn name(args)` that runs `body`
/// compiled with AVX2 + FMA (the body is `#[inline(always)]`, so it is compiled into the
/// feature-enabled function), or the plain body where the CPU lacks them.
macro_rules! avx2_build {
    ($( $name:ident => $path:path ; fn ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {$(
        #[doc = concat!("AVX2 + FMA build of `", stringify!($path), "` (the portable body on a CPU without them).")]
        #[allow(clippy::too_many_arguments)] // mirrors the body's signature
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn inner($($arg: $ty),*) $(-> $ret)? {
                $path($($arg),*)
            }
            if !available() {
                return $path($($arg),*);
            }
            // SAFETY: `available()` just confirmed AVX2 and FMA, `inner`'s only precondition.
            unsafe { inner($($arg),*) }
        }
    )*};
}

avx2_build! {
    act_core => crate::activation::act_core; fn(act: Activation, x: &[f32], y: &mut [f32]);
    act_grad_core => crate::activation::act_grad_core;
        fn(act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]);
}

avx2_build! {
    bn_apply_core => crate::batch_norm::bn_apply_core;
        fn(x: &[f32], m: &[f32], s: &[f32], b: &[f32], act: Option<Activation>, y: &mut [f32]);
    bn_sum_core => crate::batch_norm::bn_sum_core; fn(x: &[f32], out: &mut [f64]);
    bn_sq_core => crate::batch_norm::bn_sq_core;
        fn(x: &[f32], m: &[f32], s1: &mut [f64], s2: &mut [f64]);
    bn_grad_sums_core => crate::batch_norm::bn_grad_sums_core;
        fn(x: &[f32], dy: &[f32], m: &[f32], s1: &mut [f64], s2: &mut [f64]);
    bn_grad_apply_core => crate::batch_norm::bn_grad_apply_core;
        fn(x: &[f32], dy: &[f32], m: &[f32], k1: &[f32], k2: &[f32], k3: &[f32], dx: &mut [f32]);
}

avx2_build! {
    softmax_core => crate::softmax::softmax_core;
        fn(cols: usize, x: &[f32], y: &mut [f32], log: bool);
    softmax_grad_core => crate::softmax::softmax_grad_core;
        fn(cols: usize, y: &[f32], dy: &[f32], dx: &mut [f32], log: bool);
    ce_core => crate::softmax::ce_core;
        fn(cols: usize, logits: &[f32], labels: &[usize], scale: f32, dlogits: Option<&mut [f32]>) -> f64;
}

avx2_build! {
    sgd_core => crate::optimizer::sgd_core; fn(lr: f32, wd: f32, param: &mut [f32], grad: &[f32]);
    momentum_core => crate::optimizer::momentum_core;
        fn(lr: f32, mu: f32, wd: f32, nesterov: bool, param: &mut [f32], grad: &[f32], velocity: &mut [f32]);
    adam_core => crate::optimizer::adam_core;
        fn(step: f32, betas: [f32; 4], eps: f32, rs: f32, wd: f32, decay: f32,
           param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]);
}

avx2_build! {
    max_pool_core => crate::pool2d::max_pool_core;
        fn(p: MaxPool2dParams, out_hw: (usize, usize), x: &[f32], first: usize, y: &mut [f32]);
    max_pool_grad_core => crate::pool2d::max_pool_grad_core;
        fn(p: MaxPool2dParams, out_hw: (usize, usize), x: &[f32], dy: &[f32], dx: &mut [f32]);
    avg_pool_core => crate::pool2d::avg_pool_core;
        fn(p: AvgPool2dParams, out_hw: (usize, usize), x: &[f32], first: usize, y: &mut [f32]);
    avg_pool_grad_core => crate::pool2d::avg_pool_grad_core;
        fn(p: AvgPool2dParams, out_hw: (usize, usize), dy: &[f32], first: usize, dx: &mut [f32]);
}

avx2_build! {
    binary_same_core => crate::binary::binary_same_core;
        fn(op: BinaryOp, a: &[f32], b: &[f32], y: &mut [f32]);
    binary_row_core => crate::binary::binary_row_core;
        fn(op: BinaryOp, full: &[f32], row: &[f32], swap: bool, y: &mut [f32]);
    binary_grad_same_core => crate::binary::binary_grad_same_core;
        fn(op: BinaryOp, a: &[f32], b: &[f32], dy: &[f32], da: &mut [f32], db: &mut [f32]);
    binary_grad_row_core => crate::binary::binary_grad_row_core;
        fn(op: BinaryOp, full: &[f32], row: &[f32], swap: bool, dy: &[f32], dfull: &mut [f32],
           acc: &mut [f64]);
}

avx2_build! {
    row_sums_core => crate::reduce::row_sums_core;
        fn(mid: usize, x: &[f32], scale: f64, y: &mut [f32]);
}
