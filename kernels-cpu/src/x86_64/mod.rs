//! x86_64 kernels (AVX2 + FMA, selected at run time). The only place in the crate with
//! `unsafe`: each block carries a `// SAFETY:` line, and every public function here is safe and
//! checks both its arguments and the CPU features before reaching one.

pub mod conv_stem_avx2;
pub mod depthwise_avx2;
pub mod elementwise_avx2;
pub mod loss_avx2;
pub mod sgemm_avx2;
pub mod sgemm_avx512;
pub mod winograd_avx2;
