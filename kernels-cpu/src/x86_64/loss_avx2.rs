//! AVX2 + FMA builds of the loss bodies in [`crate::loss`]: the SAME safe generic code,
//! compiled inside `#[target_feature(enable = "avx2,fma")]` functions (multiversioning), so
//! LLVM vectorises it 8 lanes wide with FMA. Each public wrapper is safe: it checks the CPU
//! features and runs the portable body instead on a CPU without them. The bodies index only
//! through safe slices, so they need no argument checks beyond their own.

use crate::loss::Loss;

/// Whether this CPU can run the AVX2 + FMA builds.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// For each `name => body; fn(args) -> ret`, a safe `pub fn name(args)` running `body`
/// compiled with AVX2 + FMA (the body is `#[inline(always)]`), or the plain body without them.
macro_rules! avx2_build {
    ($( $name:ident => $path:path ; fn ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {$(
        #[doc = concat!("AVX2 + FMA build of `", stringify!($path), "` (the portable body on a CPU without them).")]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[target_feature(enable = "avx2,fma")]
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
    ce_dense_core => crate::loss::ce_dense_core;
        fn(classes: usize, z: &[f32], t: &[f32], scale: f32, dz: Option<&mut [f32]>) -> f64;
    pair_sum_core => crate::loss::pair_sum_core; fn(kind: Loss, pred: &[f32], target: &[f32]) -> f64;
    pair_grad_core => crate::loss::pair_grad_core;
        fn(kind: Loss, scale: f32, pred: &[f32], target: &[f32], d: &mut [f32]);
}
