//! Winograd F(4x4, 3x3) convolution (3x3 kernel, stride 1, dilation 1, one group, any padding)
//! for the portable and AVX2 tiers of [`crate::conv2d::Conv2dPlan`].
//!
//! Each 4x4 output tile comes from a 6x6 input tile `d`: `Y = A^T [ (G g G^T) . (B^T d B) ] A`
//! (Lavin & Gray, interpolation points 0, +-1, +-2, inf). With `U = G g G^T` computed ONCE per
//! plan (in f64) and `V = B^T d B`, the 36 element-wise products summed over input channels
//! are 36 independent GEMMs `M[xi] = V[xi] @ U[xi]`, `[tiles, c_in] x [c_in, c_out]`, run by the
//! tuned sgemm driver on a pre-packed `U` ([`PackedB`]). That is 2.25 multiplies per output
//! and input channel instead of 9 (4x fewer flops), paid for with transforms that cost
//! O(tiles * channels) and with accuracy: relative L2 error about 1e-6..1e-5 against the f64
//! reference on unit-scale random data (the points +-2 amplify rounding by up to ~10x over a
//! direct f32 sum); the tests bound it by [`WINOGRAD_TOL`].
//!
//! Work is cut into blocks of `TB` tiles (a multiple of the 6-row register block): the input
//! transform writes `V` for a block straight into the packed-`A` layout of the sgemm driver
//! (no packing pass), the 36 GEMMs write `M` `[36][TB][c_out]`, and the output transform adds
//! the bias, applies the activation and stores the in-bounds pixels. Threads take contiguous
//! ranges of tile rows, so each owns a contiguous slice of `y`.
//!
//! The transforms are safe generic code over 8-lane arrays (vectorised over channels), inlined
//! into the portable tier as is and into `#[target_feature(enable = "avx2,fma")]` wrappers in
//! `x86_64/winograd_avx2.rs` (multiversioning).

use crate::error::Result;
use crate::reference::activation::Activation;
use crate::reference::conv2d::Conv2dParams;
use crate::sgemm::{GemmKind, PackedB, apply_activation, gemm_packed_a};
use std::sync::Mutex;

/// Relative L2 error bound of F(4x4, 3x3) against the f64 reference, as tested (measured
/// errors on unit-scale random data are ~1e-6..1e-5 for c_in up to 256).
pub const WINOGRAD_TOL: f64 = 1e-4;

/// Fewest tiles per worker thread.
const MIN_TILES_PER_WORKER: usize = 24;

/// Channel lanes processed together by the transforms.
const L: usize = 8;
type Lanes = [f32; L];

/// Whether the Winograd path can compute `p` (3x3, stride 1, dilation 1, one group).
pub fn applicable(p: &Conv2dParams) -> bool {
    p.kh == 3
        && p.kw == 3
        && p.stride_h == 1
        && p.stride_w == 1
        && p.dilation_h == 1
        && p.dilation_w == 1
        && p.groups == 1
}

/// One worker's share: tile rows `[q0, q1)`, the offset of its slice of `y`, the slice.
type Part<'a> = (usize, usize, usize, &'a mut [f32]);

/// Geometry shared by the transforms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geo {
    h: usize,
    w: usize,
    c_in: usize,
    c_out: usize,
    top: usize,
    left: usize,
    out_h: usize,
    out_w: usize,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
}

impl Geo {
    /// `(image, tile row, tile column)` of flattened tile `t`.
    #[inline(always)]
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let q = t / self.tw;
        (q / self.th, q % self.th, t % self.tw)
    }
}

/// The input transform of one block (`fn(geo, x, first tile, tiles, v, v stride per xi)`).
pub(crate) type InputFn = fn(&Geo, &[f32], usize, usize, &mut [f32], usize);
/// The output transform of one block
/// (`fn(geo, m, m stride per xi, first tile, tiles, bias, act, y, y offset of y[0])`).
pub(crate) type OutputFn =
    fn(&Geo, &[f32], usize, usize, usize, &[f32], Option<Activation>, &mut [f32], usize);

/// The weights of a Winograd plan: the 36 transformed `[c_in, c_out]` matrices, packed.
#[derive(Debug)]
pub(crate) struct WinogradPlan {
    u: Vec<PackedB>,
    kind: GemmKind,
}

impl WinogradPlan {
    /// Transforms and packs the OHWI weight `w` of a validated, [`applicable`] `p` for `kind`
    /// (portable or AVX2).
    pub(crate) fn new(p: &Conv2dParams, w: &[f32], kind: GemmKind) -> Result<Self> {
        let (ci, co) = (p.c_in, p.c_out);
        // G (6x3) of F(4, 3).
        const G: [[f64; 3]; 6] = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let mut mats = vec![vec![0.0f32; ci * co]; 36];
        // `ic` outer, `oc` inner: the 36 outputs are written contiguously along `oc` (the
        // other order wrote each of 36 matrices with stride `c_out`, ~6x slower at 256x256).
        for ic in 0..ci {
            for oc in 0..co {
                let g = |ki: usize, kj: usize| f64::from(w[((oc * 3 + ki) * 3 + kj) * ci + ic]);
                // t = G g (6x3), then U = t G^T (6x6).
                let mut t = [[0.0f64; 3]; 6];
                for (i, ti) in t.iter_mut().enumerate() {
                    for (j, tij) in ti.iter_mut().enumerate() {
                        *tij = (0..3).map(|k| G[i][k] * g(k, j)).sum();
                    }
                }
                for i in 0..6 {
                    for j in 0..6 {
                        let u: f64 = (0..3).map(|k| t[i][k] * G[j][k]).sum();
                        mats[i * 6 + j][ic * co + oc] = u as f32;
                    }
                }
            }
        }
        let u = mats
            .iter()
            .map(|m| PackedB::new(kind, ci, co, false, m))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { u, kind })
    }

    /// Runs a validated convolution: `x`, `y` NHWC, `bias` of `c_out` values (zeros when the
    /// plan has none), on up to `threads` pool workers.
    pub(crate) fn run(
        &self,
        p: &Conv2dParams,
        x: &[f32],
        bias: &[f32],
        act: Option<Activation>,
        threads: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let (out_h, out_w) = (p.out_h()?, p.out_w()?);
        let g = Geo {
            h: p.h,
            w: p.w,
            c_in: p.c_in,
            c_out: p.c_out,
            top: p.padding.top,
            left: p.padding.left,
            out_h,
            out_w,
            th: out_h.div_ceil(4),
            tw: out_w.div_ceil(4),
        };
        let (input, output) = self.transforms();
        let tile_rows = p.n * g.th;
        // Same threshold as im2col, on the direct-convolution flops.
        let flops = 2 * p.n * out_h * out_w * 9 * p.c_in * p.c_out;
        // At least MIN_TILES_PER_WORKER tiles per worker: fewer, and every worker streams all
        // of U from memory for a GEMM of a couple of rows (14x14x256 and 7x7x512 lost).
        let tiles = tile_rows * g.tw;
        let asked = threads.max(1);
        let threads = if flops >= crate::sgemm::PAR_MIN_FLOPS {
            threads
                .min(tile_rows)
                .min(tiles / MIN_TILES_PER_WORKER)
                .max(1)
        } else {
            1
        };
        // Contiguous ranges of tile rows, one per worker, and the matching slices of `y`.
        let row_len = out_w * p.c_out;
        let per = tile_rows.div_ceil(threads);
        let mut parts: Vec<Mutex<Option<Part<'_>>>> = Vec::new();
        let mut rest = y;
        let mut y_off = 0;
        for q0 in (0..tile_rows).step_by(per) {
            let q1 = (q0 + per).min(tile_rows);
            // Output rows covered by tile rows [q0, q1): whole images plus partial ones.
            let row_end = |q: usize| (q / g.th) * out_h + (4 * (q % g.th)).min(out_h);
            let rows = row_end(q1) - row_end(q0);
            let (head, tail) = rest.split_at_mut(rows * row_len);
            parts.push(Mutex::new(Some((q0, q1, y_off, head))));
            y_off += rows * row_len;
            rest = tail;
        }
        let tb = block_tiles(p.c_in, p.c_out);
        // Too few tiles to split (14x14 and 7x7 layers at batch 1) but threads to spare:
        // split the 36 GEMMs of each block instead, so each worker streams only its share of
        // `U` (36 * c_in * c_out floats, 37 MB at 512 channels, the cost of such a layer).
        // Measured 2026-11-26 (Zen 4, 2 threads, ResNet-18 224 b1 end to end through
        // `spore bench models`, best of 2 x 16 runs): 21.5-24.3 ms before, 17.8 ms after;
        // 1 thread unchanged (27.8-28.3 ms).
        let inner = if parts.len() == 1 && asked > 1 && flops >= crate::sgemm::PAR_MIN_FLOPS {
            asked.min(36)
        } else {
            1
        };
        let results = crate::parallel::par_map(threads, parts.len(), |i| -> Result<()> {
            let taken = parts[i].lock().map(|mut s| s.take()).ok().flatten();
            let Some((q0, q1, y0, ys)) = taken else {
                return Ok(());
            };
            let vs = tb * g.c_in;
            let ms = tb * g.c_out;
            let mut v = vec![0.0f32; 36 * vs];
            let mut m = vec![0.0f32; 36 * ms];
            let (t_end, mut t0) = (q1 * g.tw, q0 * g.tw);
            while t0 < t_end {
                let mt = tb.min(t_end - t0);
                input(&g, x, t0, mt, &mut v, vs);
                let rows = mt.div_ceil(MR) * MR;
                let v = &v;
                let gemms = |xi0: usize, mc: &mut [f32]| -> Result<()> {
                    for (j, mx) in mc.chunks_exact_mut(ms).enumerate() {
                        let xi = xi0 + j;
                        let u = self.u.get(xi).ok_or(crate::KernelError::Param {
                            kernel: "winograd",
                            param: "u",
                            reason: format!("no transformed weight {xi}"),
                        })?;
                        gemm_packed_a(
                            mt,
                            &v[xi * vs..xi * vs + rows * g.c_in],
                            u,
                            &mut mx[..mt * g.c_out],
                        )?;
                    }
                    Ok(())
                };
                crate::parallel::par_chunks_mut(&mut m, ms, inner, gemms)?;
                output(&g, &m, ms, t0, mt, bias, act, ys, y0);
                t0 += mt;
            }
            Ok(())
        })?;
        results.into_iter().collect()
    }

    fn transforms(&self) -> (InputFn, OutputFn) {
        #[cfg(target_arch = "x86_64")]
        if self.kind == GemmKind::Avx2 {
            return (
                crate::x86_64::winograd_avx2::input_transform,
                crate::x86_64::winograd_avx2::output_transform,
            );
        }
        (input_portable, output_portable)
    }
}

/// Rows of the sgemm register block (both tiers): the packed-`A` panel height.
const MR: usize = crate::sgemm::PACK_MR;

/// Tiles per block: `V` and `M` of a block (`36 * TB * (c_in + c_out)` floats) should stay
/// within about half of the 1 MiB L2, rounded to the 6-row register block, 12..96.
fn block_tiles(c_in: usize, c_out: usize) -> usize {
    let t = (1usize << 17) / (36 * (c_in + c_out));
    (t / MR * MR).clamp(2 * MR, 16 * MR)
}

/// Copies `src` (at most `L` values) into the first lanes of `dst`; a full vector is one load
/// (a variable-length `copy_from_slice` would be a `memcpy` call per vector).
#[inline(always)]
fn load_lanes(dst: &mut Lanes, src: &[f32]) {
    if let Ok(a) = <&[f32; L]>::try_from(src) {
        *dst = *a;
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Copies the first `dst.len()` (at most `L`) lanes of `src` into `dst`.
#[inline(always)]
fn store_lanes(dst: &mut [f32], src: &Lanes) {
    if let Ok(a) = <&mut [f32; L]>::try_from(&mut *dst) {
        *a = *src;
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// `B^T` applied to 6 lanes-vectors.
#[inline(always)]
fn bt6(d: &[Lanes; 6]) -> [Lanes; 6] {
    let mut r = [[0.0f32; L]; 6];
    for l in 0..L {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `A^T` applied to 6 lanes-vectors (4 results).
#[inline(always)]
fn at4(m: &[Lanes; 6]) -> [Lanes; 4] {
    let mut r = [[0.0f32; L]; 4];
    for l in 0..L {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
        r[0][l] = m0 + s12 + s34;
        r[1][l] = d12 + 2.0 * d34;
        r[2][l] = s12 + 4.0 * s34;
        r[3][l] = d12 + 8.0 * d34 + m5;
    }
    r
}

/// Input transform of tiles `[t0, t0 + mt)` into `v`: for each `xi`, `v[xi * vs..]` holds
/// `ceil(mt / 6)` packed-`A` panels (`[panel][c_in][6]`, block tile `ti` in row `ti % 6` of
/// panel `ti / 6`; rows past `mt` zero). Measured against writing row-major `V` with vector
/// stores and reading it with the strided micro-kernel (56x56x64, 1 thread): input 0.31 vs
/// 0.23 ms but GEMM 0.60 vs 0.73 ms, so transposing into the packed layout here wins overall.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `lane` indexes the inner axis of `buf`, by design
pub(crate) fn input_generic(g: &Geo, x: &[f32], t0: usize, mt: usize, v: &mut [f32], vs: usize) {
    let ci = g.c_in;
    for p0 in (0..mt).step_by(MR) {
        let np = MR.min(mt - p0);
        for c0 in (0..ci).step_by(L) {
            let nl = L.min(ci - c0);
            // One panel's transforms, [xi][tile][lane], then written channel-major below so
            // each `xi` gets one contiguous run of `nl * MR` values.
            let mut buf = [[[0.0f32; L]; MR]; 36];
            for lane in 0..np {
                let (nb, tr, tc) = g.tile(t0 + p0 + lane);
                let mut d = [[[0.0f32; L]; 6]; 6];
                for (i, di) in d.iter_mut().enumerate() {
                    let Some(ih) = (4 * tr + i).checked_sub(g.top).filter(|&v| v < g.h) else {
                        continue;
                    };
                    for (j, dij) in di.iter_mut().enumerate() {
                        let Some(iw) = (4 * tc + j).checked_sub(g.left).filter(|&v| v < g.w) else {
                            continue;
                        };
                        let s = ((nb * g.h + ih) * g.w + iw) * ci + c0;
                        load_lanes(dij, &x[s..s + nl]);
                    }
                }
                // Columns first (t = B^T d), then rows (V = t B).
                let mut t = [[[0.0f32; L]; 6]; 6];
                for j in 0..6 {
                    let col = [d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]];
                    let r = bt6(&col);
                    for i in 0..6 {
                        t[i][j] = r[i];
                    }
                }
                for (i, ti_row) in t.iter().enumerate() {
                    for (j, rj) in bt6(ti_row).iter().enumerate() {
                        buf[i * 6 + j][lane] = *rj;
                    }
                }
            }
            for (xi, bx) in buf.iter().enumerate() {
                let base = xi * vs + p0 * ci + c0 * MR;
                let dst = &mut v[base..base + nl * MR];
                for (c, row) in dst.chunks_exact_mut(MR).enumerate() {
                    for (o, lanes) in row.iter_mut().zip(bx) {
                        *o = lanes[c];
                    }
                }
            }
        }
    }
}

/// Output transform of tiles `[t0, t0 + mt)` from `m` (`[36][TB][c_out]`, stride `ms` per
/// `xi`): `A^T M A + bias`, activation, stored where inside the output; `y[0]` is element `y0`
/// of the whole output.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn output_generic(
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
    let co = g.c_out;
    for ti in 0..mt {
        let (nb, tr, tc) = g.tile(t0 + ti);
        for oc0 in (0..co).step_by(L) {
            let nl = L.min(co - oc0);
            let mut mm = [[[0.0f32; L]; 6]; 6];
            for (xi, dst) in mm.iter_mut().flatten().enumerate() {
                let s = xi * ms + ti * co + oc0;
                load_lanes(dst, &m[s..s + nl]);
            }
            let mut t = [[[0.0f32; L]; 6]; 4];
            for j in 0..6 {
                let col = [mm[0][j], mm[1][j], mm[2][j], mm[3][j], mm[4][j], mm[5][j]];
                let r = at4(&col);
                for i in 0..4 {
                    t[i][j] = r[i];
                }
            }
            let mut b = [0.0f32; L];
            load_lanes(&mut b, &bias[oc0..oc0 + nl]);
            let mut o = [[[0.0f32; L]; 4]; 4];
            for (oi, ti_row) in o.iter_mut().zip(&t) {
                *oi = at4(ti_row);
                for lanes in oi.iter_mut() {
                    for (v, bv) in lanes.iter_mut().zip(&b) {
                        *v += *bv;
                    }
                }
            }
            if let Some(act) = act {
                apply_activation(act, o.as_flattened_mut().as_flattened_mut());
            }
            for (i, oi) in o.iter().enumerate() {
                let oh = 4 * tr + i;
                if oh >= g.out_h {
                    break;
                }
                for (j, oij) in oi.iter().enumerate() {
                    let ow = 4 * tc + j;
                    if ow >= g.out_w {
                        break;
                    }
                    let d = ((nb * g.out_h + oh) * g.out_w + ow) * co + oc0 - y0;
                    store_lanes(&mut y[d..d + nl], oij);
                }
            }
        }
    }
}

/// The portable input transform (the generic body for the baseline target).
fn input_portable(g: &Geo, x: &[f32], t0: usize, mt: usize, v: &mut [f32], vs: usize) {
    input_generic(g, x, t0, mt, v, vs);
}

/// The portable output transform.
#[allow(clippy::too_many_arguments)]
fn output_portable(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::window::Padding2d;

    /// Time per stage (1 thread) on the 56x56x64->64 layer:
    /// `cargo test --release -p spore-kernels-cpu winograd_stages -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn winograd_stages() {
        let mut r = crate::testutil::rng("winograd_stages");
        for (hw, c) in [(56, 64), (14, 256)] {
            let p = Conv2dParams {
                n: 1,
                h: hw,
                w: hw,
                c_in: c,
                c_out: c,
                kh: 3,
                kw: 3,
                stride_h: 1,
                stride_w: 1,
                dilation_h: 1,
                dilation_w: 1,
                padding: Padding2d::symmetric(1, 1),
                groups: 1,
            };
            let x: Vec<f32> = (0..p.x_len().unwrap())
                .map(|_| r.uniform(-1.0, 1.0) as f32)
                .collect();
            let w: Vec<f32> = (0..p.w_len().unwrap())
                .map(|_| r.uniform(-1.0, 1.0) as f32)
                .collect();
            let kind = GemmKind::for_tier(crate::dispatch::Tier::Best);
            let plan = WinogradPlan::new(&p, &w, kind).unwrap();
            let g = Geo {
                h: hw,
                w: hw,
                c_in: c,
                c_out: c,
                top: 1,
                left: 1,
                out_h: hw,
                out_w: hw,
                th: hw.div_ceil(4),
                tw: hw.div_ceil(4),
            };
            let (input, output) = plan.transforms();
            let tb = block_tiles(c, c);
            let tiles = g.th * g.tw;
            let mut v = vec![0.0f32; 36 * tb * c];
            let mut m = vec![0.0f32; 36 * tb * c];
            let mut y = vec![0.0f32; p.y_len().unwrap()];
            let bias = vec![0.0f32; c];
            let (mut ti, mut tg, mut to) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
            for _ in 0..20 {
                let (mut a, mut b, mut o) = (0.0, 0.0, 0.0);
                let mut t0 = 0;
                while t0 < tiles {
                    let mt = tb.min(tiles - t0);
                    let s = std::time::Instant::now();
                    input(&g, &x, t0, mt, &mut v, tb * c);
                    a += s.elapsed().as_secs_f64();
                    let s = std::time::Instant::now();
                    let rows = mt.div_ceil(MR) * MR;
                    for (xi, u) in plan.u.iter().enumerate() {
                        gemm_packed_a(
                            mt,
                            &v[xi * tb * c..xi * tb * c + rows * c],
                            u,
                            &mut m[xi * tb * c..xi * tb * c + mt * c],
                        )
                        .unwrap();
                    }
                    b += s.elapsed().as_secs_f64();
                    let s = std::time::Instant::now();
                    output(&g, &m, tb * c, t0, mt, &bias, None, &mut y, 0);
                    o += s.elapsed().as_secs_f64();
                    t0 += mt;
                }
                ti = ti.min(a);
                tg = tg.min(b);
                to = to.min(o);
            }
            let gflop = 2.0 * 36.0 * (tiles * c * c) as f64 / 1e9;
            println!(
                "winograd {hw}x{hw}x{c} tb={tb}: input {:.3} ms, gemm {:.3} ms ({:.1} GFLOP/s), output {:.3} ms",
                ti * 1e3,
                tg * 1e3,
                gflop / tg,
                to * 1e3
            );
        }
    }
}
