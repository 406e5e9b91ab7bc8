//! THE oracle: naive loops with f64 accumulation, written to be obviously right.
//!
//! Every fast kernel — portable, AVX2, WGSL, fused, int8 — is tested against these functions.
//! They are generic over [`Real`] (f32 and f64): the runtime calls them on f32 data, and the
//! gradient suites call them on f64 data so central finite differences are accurate to ~1e-9.
//! Whatever the element type, sums are accumulated in f64.
//!
//! Layout: activations NHWC, convolution weights OHWI (`[out_channels, kh, kw, in_channels /
//! groups]`), matrices row-major. Each file holds one op's forward and backward functions.

pub mod activation;
pub mod avg_pool2d;
pub mod batch_norm;
pub mod bias_add;
pub mod binary;
pub mod conv2d;
pub mod conv_transpose2d;
pub mod depthwise_conv2d;
pub mod dropout;
pub mod global_avg_pool;
pub mod loss;
pub mod matmul;
pub mod max_pool2d;
pub mod reduce;
pub mod softmax;
pub mod window;

/// An element type the reference kernels run on: f32 (the runtime) or f64 (gradient checks).
pub trait Real: Copy + Default + PartialOrd + std::fmt::Debug + Send + Sync + 'static {
    /// Widens to f64 (exact for f32 and f64).
    fn to_f64(self) -> f64;
    /// Narrows from f64 (round to nearest).
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
}
