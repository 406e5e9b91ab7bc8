//! AVX2 + FMA direct convolution for few input channels (`c_in <= 4`, one group: the RGB
//! "stem" layer, e.g. 224x224x3 -> 32, 3x3 stride 2), where im2col + GEMM has a reduction depth
//! of only `kh * kw * c_in` (27) and spends most of its time gathering.
//!
//! Vectorised over output channels: blocks of up to 32 channels (4 ymm), 3 output pixels per
//! iteration, i.e. 12 accumulators + 3 broadcast input values + 1 weight vector = 16 ymm
//! registers. Each output row first copies its `kh` input rows into a zero-padded row buffer,
//! so the inner loop has no bounds logic at all. Weights are rearranged once per plan
//! ([`StemPlan::new`]) as `[oc block][kh][kw][c_in][block width]`, the block width padded to a
//! multiple of 8 lanes with zeros.

use super::sgemm_avx2::available;
use crate::error::{Result, check_param};
use crate::reference::activation::Activation;
use crate::reference::conv2d::Conv2dParams;
use crate::sgemm::apply_activation;
use std::arch::x86_64::{
    _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
};

const KERNEL: &str = "conv2d_stem";
/// Output channels per block (4 ymm registers).
const OB: usize = 32;
/// Output pixels per inner iteration.
const P: usize = 3;

/// Whether the direct stem kernel can compute `p` (and this CPU has AVX2 + FMA).
pub fn applicable(p: &Conv2dParams) -> bool {
    p.c_in <= 4 && p.groups == 1 && available()
}

/// Weights (and bias) of one stem convolution, rearranged for the kernel.
#[derive(Debug)]
pub(crate) struct StemPlan {
    /// `[oc block][kh][kw][c_in][bw]`, `bw` = the block's width rounded up to 8.
    wr: Vec<f32>,
    /// The bias padded with zeros to a multiple of 8.
    bias: Vec<f32>,
}

impl StemPlan {
    /// Rearranges the OHWI weight of a validated `p` (see [`applicable`]); `bias` has
    /// `c_out` values.
    pub(crate) fn new(p: &Conv2dParams, w: &[f32], bias: &[f32]) -> Result<Self> {
        check_param(KERNEL, "c_in", applicable(p), || {
            "needs c_in <= 4, one group and AVX2 + FMA".into()
        })?;
        let ocp = p.c_out.div_ceil(8) * 8;
        let taps = p.kh * p.kw * p.c_in;
        let mut wr = vec![0.0f32; ocp * taps];
        for b0 in (0..ocp).step_by(OB) {
            let bw = OB.min(ocp - b0);
            for t in 0..taps {
                for l in 0..bw.min(p.c_out.saturating_sub(b0)) {
                    wr[b0 * taps + t * bw + l] = w[(b0 + l) * taps + t];
                }
            }
        }
        let mut bp = vec![0.0f32; ocp];
        bp[..p.c_out].copy_from_slice(bias);
        Ok(Self { wr, bias: bp })
    }

    /// Runs a validated convolution on up to `threads` pool workers (whole output rows each).
    pub(crate) fn run(
        &self,
        p: &Conv2dParams,
        x: &[f32],
        act: Option<Activation>,
        threads: usize,
        y: &mut [f32],
    ) -> Result<()> {
        check_param(KERNEL, "cpu", available(), || {
            "this CPU lacks AVX2 or FMA".into()
        })?;
        let (out_h, out_w) = (p.out_h()?, p.out_w()?);
        let (sh, sw, dh, dw) = (p.stride_h, p.stride_w, p.dilation_h, p.dilation_w);
        let ci = p.c_in;
        let wp = (out_w - 1) * sw + (p.kw - 1) * dw + 1;
        let row_len = wp * ci;
        let flops = 2 * p.n * out_h * out_w * p.kh * p.kw * ci * p.c_out;
        // A stem row is cheap to split; its threshold is lower than sgemm's (no B packing).
        let threads = if flops >= crate::sgemm::PAR_MIN_FLOPS / 4 {
            threads
        } else {
            1
        };
        let taps = p.kh * p.kw * ci;
        let ocp = self.bias.len();
        crate::parallel::par_chunks_mut(y, out_w * p.c_out, threads, |r0, chunk| {
            let mut prow = vec![0.0f32; p.kh * row_len];
            for (r, yrow) in chunk.chunks_exact_mut(out_w * p.c_out).enumerate() {
                let (nb, oh) = ((r0 + r) / out_h, (r0 + r) % out_h);
                for (ki, dst) in prow.chunks_exact_mut(row_len).enumerate() {
                    dst.fill(0.0);
                    let Some(ih) = (oh * sh + ki * dh)
                        .checked_sub(p.padding.top)
                        .filter(|&v| v < p.h)
                    else {
                        continue;
                    };
                    // Padded column pc holds input column pc - left.
                    let lo = p.padding.left.min(wp);
                    let hi = (p.padding.left + p.w).min(wp);
                    if lo < hi {
                        let s = ((nb * p.h + ih) * p.w + (lo - p.padding.left)) * ci;
                        dst[lo * ci..hi * ci].copy_from_slice(&x[s..s + (hi - lo) * ci]);
                    }
                }
                for b0 in (0..ocp).step_by(OB) {
                    let bw = OB.min(ocp - b0);
                    let geo = RowGeo {
                        row_len,
                        ci,
                        kh: p.kh,
                        kw: p.kw,
                        sw,
                        dw,
                        out_w,
                        c_out: p.c_out,
                        oc0: b0,
                    };
                    let wb = &self.wr[b0 * taps..(b0 + bw) * taps];
                    let bb = &self.bias[b0..b0 + bw];
                    stem_row(&geo, bw / 8, &prow, wb, bb, yrow);
                }
                if let Some(act) = act {
                    apply_activation(act, yrow);
                }
            }
            Ok(())
        })
    }
}

/// Geometry of one output row.
#[derive(Clone, Copy)]
struct RowGeo {
    row_len: usize,
    ci: usize,
    kh: usize,
    kw: usize,
    sw: usize,
    dw: usize,
    out_w: usize,
    c_out: usize,
    oc0: usize,
}

/// One output row, channels `[oc0, oc0 + 8 * nv)` (clipped to `c_out`): checks every bound,
/// then enters the AVX2 kernel for `nv` vectors.
fn stem_row(g: &RowGeo, nv: usize, prow: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    if g.out_w == 0 || g.kw == 0 || g.kh == 0 {
        return;
    }
    let taps = g.kh * g.kw * g.ci;
    let last_col = (g.out_w - 1) * g.sw + (g.kw - 1) * g.dw;
    let ok = (1..=4).contains(&nv)
        && g.ci > 0
        && (last_col + 1) * g.ci <= g.row_len
        && prow.len() >= g.kh * g.row_len
        && w.len() >= taps * nv * 8
        && bias.len() >= nv * 8
        && y.len() >= g.out_w * g.c_out
        && g.oc0 < g.c_out
        && available();
    if !ok {
        // Unreachable from `StemPlan::run`, which sizes everything; stay safe regardless.
        y.fill(f32::NAN);
        return;
    }
    // SAFETY: every read and write bound the kernel relies on was checked just above, and
    // AVX2 + FMA are available.
    unsafe {
        match nv {
            1 => row_kernel::<1>(g, prow.as_ptr(), w.as_ptr(), bias.as_ptr(), y.as_mut_ptr()),
            2 => row_kernel::<2>(g, prow.as_ptr(), w.as_ptr(), bias.as_ptr(), y.as_mut_ptr()),
            3 => row_kernel::<3>(g, prow.as_ptr(), w.as_ptr(), bias.as_ptr(), y.as_mut_ptr()),
            _ => row_kernel::<4>(g, prow.as_ptr(), w.as_ptr(), bias.as_ptr(), y.as_mut_ptr()),
        }
    }
}

/// # Safety
/// AVX2 and FMA must be available; `prow` valid for `kh * row_len` reads with every tap
/// column inside a row, `w` for `kh * kw * ci * NV * 8`, `bias` for `NV * 8`, `y` for
/// `out_w * c_out` writes, `oc0 < c_out`.
#[target_feature(enable = "avx2,fma")]
unsafe fn row_kernel<const NV: usize>(
    g: &RowGeo,
    prow: *const f32,
    w: *const f32,
    bias: *const f32,
    y: *mut f32,
) {
    let bw = NV * 8;
    let nl = bw.min(g.c_out - g.oc0);
    let mut ow = 0;
    while ow < g.out_w {
        let np = P.min(g.out_w - ow);
        let mut acc = [[_mm256_setzero_ps(); NV]; P];
        for a in acc.iter_mut() {
            for (v, av) in a.iter_mut().enumerate() {
                // SAFETY: `bias` holds NV * 8 values.
                *av = unsafe { _mm256_loadu_ps(bias.add(v * 8)) };
            }
        }
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let col = ow * g.sw + kj * g.dw;
                let wt = ((ki * g.kw + kj) * g.ci) * bw;
                for ic in 0..g.ci {
                    // Pixels past the row end (np < P) re-read the last pixel: in bounds,
                    // results discarded.
                    let mut xb = [_mm256_setzero_ps(); P];
                    for (pp, xv) in xb.iter_mut().enumerate() {
                        let c = col + pp.min(np - 1) * g.sw;
                        // SAFETY: column c <= last_col and row ki < kh, checked by the caller.
                        *xv = unsafe {
                            _mm256_broadcast_ss(&*prow.add(ki * g.row_len + c * g.ci + ic))
                        };
                    }
                    for v in 0..NV {
                        // SAFETY: tap (ki, kj, ic), lanes v*8..v*8+8 < NV*8 of the block.
                        let wv = unsafe { _mm256_loadu_ps(w.add(wt + ic * bw + v * 8)) };
                        for (a, xv) in acc.iter_mut().zip(&xb) {
                            a[v] = _mm256_fmadd_ps(*xv, wv, a[v]);
                        }
                    }
                }
            }
        }
        for (pp, a) in acc.iter().enumerate().take(np) {
            let dst = (ow + pp) * g.c_out + g.oc0;
            if nl == bw {
                for (v, av) in a.iter().enumerate() {
                    // SAFETY: oc0 + NV*8 <= c_out here, pixel ow+pp < out_w.
                    unsafe { _mm256_storeu_ps(y.add(dst + v * 8), *av) };
                }
            } else {
                let mut tmp = [0.0f32; OB];
                for (v, av) in a.iter().enumerate() {
                    // SAFETY: tmp holds 32 >= NV*8 values.
                    unsafe { _mm256_storeu_ps(tmp.as_mut_ptr().add(v * 8), *av) };
                }
                for (l, t) in tmp.iter().enumerate().take(nl) {
                    // SAFETY: oc0 + l < c_out, pixel ow+pp < out_w.
                    unsafe { *y.add(dst + l) = *t };
                }
            }
        }
        ow += P;
    }
}
