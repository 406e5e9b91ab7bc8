//! AVX2 + FMA depthwise convolution: the generic bodies of [`crate::depthwise_conv2d`]
//! compiled inside `avx2,fma` functions (multiversioning, fused multiply-adds), plus intrinsics
//! kernels specialised for the interior of 3x3 / 5x5, stride 1 / 2, dilation 1, multiplier 1:
//! register blocks of 8 output columns x 8 channels (8 independent FMA chains, one weight
//! vector loaded per tap and reused by the 8 columns, the input streamed from L1 as memory
//! operands), the block walking all channels before moving on so its input window (rows x
//! `8 * stride + k - 1` columns x channels) stays in L1.

use crate::depthwise_conv2d::{
    DepthwiseConv2dParams, Geom, drive_fwd, drive_gi, drive_gw, fwd_rows, gi_rows, gw_rows, no_cpu,
};
use crate::error::Result;
use crate::reference::activation::Activation;
use std::arch::x86_64::{
    __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

const KERNEL: &str = "depthwise_conv2d_avx2";

/// Whether this CPU can run the AVX2 tier.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Forward depthwise convolution, AVX2 + FMA tier (see
/// [`crate::depthwise_conv2d::depthwise_conv2d_fast`]). Returns an error on a CPU without AVX2
/// or FMA.
pub fn depthwise_conv2d(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    threads: usize,
    y: &mut [f32],
) -> Result<()> {
    if !available() {
        return Err(no_cpu(KERNEL));
    }
    drive_fwd(p, x, w, bias, act, threads, y, fwd_rows_avx2)
}

/// Grad input, AVX2 + FMA tier. Returns an error on a CPU without AVX2 or FMA.
pub fn depthwise_conv2d_grad_input(
    p: &DepthwiseConv2dParams,
    w: &[f32],
    dy: &[f32],
    threads: usize,
    dx: &mut [f32],
) -> Result<()> {
    if !available() {
        return Err(no_cpu(KERNEL));
    }
    drive_gi(p, w, dy, threads, dx, fwd_rows_avx2, gi_rows_avx2)
}

/// Grad weight (+ bias), AVX2 + FMA tier. Returns an error on a CPU without AVX2 or FMA.
pub fn depthwise_conv2d_grad_weight(
    p: &DepthwiseConv2dParams,
    x: &[f32],
    dy: &[f32],
    threads: usize,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) -> Result<()> {
    if !available() {
        return Err(no_cpu(KERNEL));
    }
    drive_gw(p, x, dy, threads, dw, db, gw_rows_avx2)
}

/// Forward rows; falls back to the portable body if the CPU lacks the features (never the
/// case when reached through the entry points above, which check first).
fn fwd_rows_avx2(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    first: usize,
    y: &mut [f32],
) {
    if available() {
        // SAFETY: AVX2 and FMA were just detected; the body is safe code.
        unsafe { fwd_rows_tf(g, x, w, bias, act, first, y) }
    } else {
        fwd_rows::<false>(g, x, w, bias, act, first, y, None);
    }
}

#[target_feature(enable = "avx2,fma")]
fn fwd_rows_tf(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
    first: usize,
    y: &mut [f32],
) {
    fwd_rows::<true>(g, x, w, bias, act, first, y, Some(special));
}

fn gi_rows_avx2(g: &Geom, w: &[f32], dy: &[f32], first: usize, dx: &mut [f32]) {
    if available() {
        // SAFETY: AVX2 and FMA were just detected; the body is safe code.
        unsafe { gi_rows_tf(g, w, dy, first, dx) }
    } else {
        gi_rows::<false>(g, w, dy, first, dx, None);
    }
}

#[target_feature(enable = "avx2,fma")]
fn gi_rows_tf(g: &Geom, w: &[f32], dy: &[f32], first: usize, dx: &mut [f32]) {
    gi_rows::<true>(g, w, dy, first, dx, Some(gi_pixel));
}

fn gw_rows_avx2(g: &Geom, x: &[f32], dy: &[f32], r0: usize, r1: usize, part: &mut [f64]) {
    if available() {
        // SAFETY: AVX2 and FMA were just detected; the body is safe code.
        unsafe { gw_rows_tf(g, x, dy, r0, r1, part) }
    } else {
        gw_rows::<false>(g, x, dy, r0, r1, part, None);
    }
}

#[target_feature(enable = "avx2,fma")]
fn gw_rows_tf(g: &Geom, x: &[f32], dy: &[f32], r0: usize, r1: usize, part: &mut [f64]) {
    gw_rows::<true>(g, x, dy, r0, r1, part, Some(gw_tap));
}

/// Pointers and sizes one specialised interior call needs, all checked by [`special`].
struct Args {
    /// `x[n, oh * s - top, 0, 0]`: the first input row the output row reads.
    x: *const f32,
    /// Floats per input row, `w * c`.
    row: usize,
    /// Channels.
    c: usize,
    /// The weight `[k, k, c]`.
    w: *const f32,
    /// The bias `[c]`, or null.
    bias: *const f32,
    /// The output row `[out_w, c]`.
    y: *mut f32,
    /// Interior output columns `[ow_lo, ow_hi)`.
    ow_lo: usize,
    ow_hi: usize,
    /// Left padding (`ow_lo * s >= left`).
    left: usize,
    /// Channels handled, a multiple of 8 `<= c`.
    c_full: usize,
}

/// The specialised interior kernel for row `(n, oh)`, channels `[0, c_full)`, if the shape is
/// one it covers and every index it will touch is in bounds; returns whether it ran.
#[allow(clippy::too_many_arguments)]
fn special(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    oh: usize,
    yrow: &mut [f32],
    c_full: usize,
) -> bool {
    let p = &g.p;
    let k = p.kh;
    let s = p.stride_h;
    if p.multiplier != 1
        || p.kw != k
        || p.stride_w != s
        || p.dilation_h != 1
        || p.dilation_w != 1
        || !matches!(k, 3 | 5)
        || !matches!(s, 1 | 2)
        || !available()
    {
        return false;
    }
    let c = g.c_out;
    // Every vertical tap inside the input.
    let Some(ih0) = (oh * s).checked_sub(p.padding.top) else {
        return false;
    };
    let in_bounds = ih0 + k <= p.h
        && g.ow_lo < g.ow_hi
        && g.ow_hi <= g.out_w
        && g.ow_lo * s >= p.padding.left
        && (g.ow_hi - 1) * s + k <= p.w + p.padding.left
        && c_full.is_multiple_of(8)
        && c_full <= c
        && x.len() >= (n * p.h + ih0 + k) * p.w * c
        && w.len() >= k * k * c
        && bias.is_none_or(|b| b.len() >= c)
        && yrow.len() >= g.out_w * c;
    if !in_bounds {
        return false;
    }
    let a = Args {
        // In bounds: checked just above (`x.len()` covers rows ih0..ih0 + k of image n).
        x: x[(n * p.h + ih0) * p.w * c..].as_ptr(),
        row: p.w * c,
        c,
        w: w.as_ptr(),
        bias: bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        y: yrow.as_mut_ptr(),
        ow_lo: g.ow_lo,
        ow_hi: g.ow_hi,
        left: p.padding.left,
        c_full,
    };
    // SAFETY: AVX2 and FMA were detected above; `in_bounds` guarantees that for every
    // interior column and tap the input cell `(ih0 + ki, ow * s + kj - left)` lies in rows
    // `ih0..ih0 + k` of image `n` inside `x`, that the weight has `k * k * c` values, the
    // bias (if any) `c`, the output row `out_w * c`, and that channels `< c_full <= c`.
    unsafe {
        match (k, s) {
            (3, 1) => interior::<3, 1>(&a),
            (3, 2) => interior::<3, 2>(&a),
            (5, 1) => interior::<5, 1>(&a),
            _ => interior::<5, 2>(&a),
        }
    }
    true
}

/// # Safety
/// AVX2 and FMA must be available and `a` must satisfy the bounds [`special`] checks.
#[target_feature(enable = "avx2,fma")]
unsafe fn interior<const K: usize, const S: usize>(a: &Args) {
    let mut ow = a.ow_lo;
    while ow + 8 <= a.ow_hi {
        // SAFETY: columns ow..ow + 8 are interior; the caller's contract covers them.
        unsafe { block::<K, S, 8>(a, ow) };
        ow += 8;
    }
    while ow + 4 <= a.ow_hi {
        // SAFETY: as above, columns ow..ow + 4.
        unsafe { block::<K, S, 4>(a, ow) };
        ow += 4;
    }
    while ow < a.ow_hi {
        // SAFETY: as above, column ow.
        unsafe { block::<K, S, 1>(a, ow) };
        ow += 1;
    }
}

/// Output columns `ow..ow + R` (interior), every full channel block.
///
/// # Safety
/// AVX2 and FMA must be available; `ow..ow + R` must lie in `[a.ow_lo, a.ow_hi)` and `a`
/// satisfy the bounds [`special`] checks.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn block<const K: usize, const S: usize, const R: usize>(a: &Args, ow: usize) {
    let c = a.c;
    // Column of tap 0 of output column `ow`: `ow * S >= ow_lo * S >= left`.
    let x0 = (ow * S - a.left) * c;
    for cb in (0..a.c_full).step_by(8) {
        // SAFETY: `cb + 8 <= c_full <= c`; the bias (if not null) has `c` values; every input
        // offset is row ki < K of the checked rows, column `(ow + r) * S + kj - left` of an
        // interior column; the weight tap `(ki, kj)` is < K * K; the output column is < out_w.
        unsafe {
            let b = if a.bias.is_null() {
                _mm256_setzero_ps()
            } else {
                _mm256_loadu_ps(a.bias.add(cb))
            };
            let mut acc: [__m256; R] = [b; R];
            let xb = a.x.add(x0 + cb);
            for ki in 0..K {
                let xr = xb.add(ki * a.row);
                for kj in 0..K {
                    let wv = _mm256_loadu_ps(a.w.add((ki * K + kj) * c + cb));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let xv = _mm256_loadu_ps(xr.add((r * S + kj) * c));
                        *acc_r = _mm256_fmadd_ps(xv, wv, *acc_r);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                _mm256_storeu_ps(a.y.add((ow + r) * c + cb), *acc_r);
            }
        }
    }
}

/// Grad-input pixel (multiplier 1): `dxpix[ch] = sum over pairs of dy[dyo + ch] * w[wo + ch]`
/// with intrinsics, after checking every pair's bounds; returns whether it ran.
fn gi_pixel(pairs: &[(usize, usize)], w: &[f32], dy: &[f32], dxpix: &mut [f32]) -> bool {
    let c = dxpix.len();
    let ok = available()
        && pairs
            .iter()
            .all(|&(dyo, wo)| dyo + c <= dy.len() && wo + c <= w.len());
    if !ok {
        return false;
    }
    // SAFETY: AVX2 and FMA were detected; every pair reads `c` values of `dy` and `w` in
    // bounds (checked above) and `dxpix` has `c` values.
    unsafe { gi_pixel_tf(pairs, w.as_ptr(), dy.as_ptr(), dxpix.as_mut_ptr(), c) };
    true
}

/// # Safety
/// AVX2 and FMA must be available; for every pair, `dy[dyo..dyo + c]` and `w[wo..wo + c]`
/// must be in bounds, and `dx` valid for `c` writes.
#[target_feature(enable = "avx2,fma")]
unsafe fn gi_pixel_tf(
    pairs: &[(usize, usize)],
    w: *const f32,
    dy: *const f32,
    dx: *mut f32,
    c: usize,
) {
    let mut c0 = 0;
    // 32 channels (four independent FMA chains) per pass, then 8, then scalars.
    while c0 + 32 <= c {
        let mut acc = [_mm256_setzero_ps(); 4];
        for &(dyo, wo) in pairs {
            for (b, a) in acc.iter_mut().enumerate() {
                // SAFETY: `c0 + 8 * b + 8 <= c`, inside the pair's checked range.
                unsafe {
                    let d = _mm256_loadu_ps(dy.add(dyo + c0 + 8 * b));
                    let wv = _mm256_loadu_ps(w.add(wo + c0 + 8 * b));
                    *a = _mm256_fmadd_ps(d, wv, *a);
                }
            }
        }
        for (b, a) in acc.iter().enumerate() {
            // SAFETY: `c0 + 8 * b + 8 <= c`.
            unsafe { _mm256_storeu_ps(dx.add(c0 + 8 * b), *a) };
        }
        c0 += 32;
    }
    while c0 + 8 <= c {
        let mut a = [_mm256_setzero_ps(); 2];
        for (i, &(dyo, wo)) in pairs.iter().enumerate() {
            // SAFETY: `c0 + 8 <= c`, inside the pair's checked range.
            unsafe {
                let d = _mm256_loadu_ps(dy.add(dyo + c0));
                let wv = _mm256_loadu_ps(w.add(wo + c0));
                a[i & 1] = _mm256_fmadd_ps(d, wv, a[i & 1]);
            }
        }
        // SAFETY: `c0 + 8 <= c`.
        unsafe { _mm256_storeu_ps(dx.add(c0), _mm256_add_ps(a[0], a[1])) };
        c0 += 8;
    }
    for ch in c0..c {
        let mut s = 0.0f32;
        for &(dyo, wo) in pairs {
            // SAFETY: `ch < c`, inside the pair's checked range.
            s = unsafe { (*dy.add(dyo + ch)).mul_add(*w.add(wo + ch), s) };
        }
        // SAFETY: `ch < c`.
        unsafe { *dx.add(ch) = s };
    }
}

/// Grad-weight tap (see [`crate::depthwise_conv2d::GwTapFn`]) with intrinsics, after checking
/// the bounds of every access; returns whether it ran.
#[allow(clippy::too_many_arguments)]
fn gw_tap(
    x: &[f32],
    dy: &[f32],
    x0: usize,
    x_step: usize,
    dy0: usize,
    cols: usize,
    c: usize,
    c_full: usize,
    dwt: &mut [f32],
) -> bool {
    let ok = available()
        && cols > 0
        && c_full.is_multiple_of(8)
        && c_full <= c
        && dwt.len() >= c_full
        && x0 + (cols - 1) * x_step + c_full <= x.len()
        && dy0 + (cols - 1) * c + c_full <= dy.len();
    if !ok {
        return false;
    }
    // SAFETY: AVX2 and FMA were detected; the last column's reads end inside `x` and `dy`
    // (checked above; earlier columns are lower), and `dwt` has `c_full` values.
    unsafe {
        gw_tap_tf(
            x.as_ptr().add(x0),
            dy.as_ptr().add(dy0),
            x_step,
            cols,
            c,
            c_full,
            dwt.as_mut_ptr(),
        )
    };
    true
}

/// # Safety
/// AVX2 and FMA must be available; `x` must be valid for reads at `j * x_step + ch` and `dy`
/// at `j * c + ch` for `j < cols`, `ch < c_full`, and `dw` for `c_full` reads and writes.
#[target_feature(enable = "avx2,fma")]
unsafe fn gw_tap_tf(
    x: *const f32,
    dy: *const f32,
    x_step: usize,
    cols: usize,
    c: usize,
    c_full: usize,
    dw: *mut f32,
) {
    for cb in (0..c_full).step_by(8) {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j + 4 <= cols {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: `j + u < cols` and `cb + 8 <= c_full`, the caller's range.
                unsafe {
                    let xv = _mm256_loadu_ps(x.add((j + u) * x_step + cb));
                    let dv = _mm256_loadu_ps(dy.add((j + u) * c + cb));
                    *a = _mm256_fmadd_ps(xv, dv, *a);
                }
            }
            j += 4;
        }
        while j < cols {
            // SAFETY: `j < cols` and `cb + 8 <= c_full`, the caller's range.
            unsafe {
                let xv = _mm256_loadu_ps(x.add(j * x_step + cb));
                let dv = _mm256_loadu_ps(dy.add(j * c + cb));
                acc[0] = _mm256_fmadd_ps(xv, dv, acc[0]);
            }
            j += 1;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        // SAFETY: `cb + 8 <= c_full`, inside `dw`.
        unsafe { _mm256_storeu_ps(dw.add(cb), _mm256_add_ps(_mm256_loadu_ps(dw.add(cb)), s)) };
    }
}
