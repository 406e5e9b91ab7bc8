//! AVX2 + FMA builds of the Winograd F(4x4, 3x3) transforms: the safe generic bodies of
//! [`crate::winograd`] compiled inside `#[target_feature(enable = "avx2,fma")]` functions
//! (multiversioning), so the 8-lane channel loops become single ymm operations. Each public
//! wrapper checks the CPU features and falls back to the baseline build without them.

use crate::reference::activation::Activation;
use crate::winograd::{Geo, input_generic, output_generic};

/// The input transform of one block (see `crate::winograd::input_generic`).
pub(crate) fn input_transform(g: &Geo, x: &[f32], t0: usize, mt: usize, v: &mut [f32], vs: usize) {
    if super::sgemm_avx2::available() {
        // SAFETY: AVX2 and FMA were detected just above; the body is safe code.
        unsafe { input_avx2(g, x, t0, mt, v, vs) }
    } else {
        input_generic(g, x, t0, mt, v, vs);
    }
}

/// The output transform of one block (see `crate::winograd::output_generic`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn output_transform(
    g: &Geo,
    m: &[f32],
    ms: usize,
    t0: usize,
    mt: usize,
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
    y0: usize,
) {
    if super::sgemm_avx2::available() {
        // SAFETY: AVX2 and FMA were detected just above; the body is safe code.
        unsafe { output_avx2(g, m, ms, t0, mt, bias, act, y, y0) }
    } else {
        output_generic(g, m, ms, t0, mt, bias, act, y, y0);
    }
}

/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
unsafe fn input_avx2(g: &Geo, x: &[f32], t0: usize, mt: usize, v: &mut [f32], vs: usize) {
    input_generic(g, x, t0, mt, v, vs);
}

/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn output_avx2(
    g: &Geo,
    m: &[f32],
    ms: usize,
    t0: usize,
    mt: usize,
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
    y0: usize,
) {
    output_generic(g, m, ms, t0, mt, bias, act, y, y0);
}
