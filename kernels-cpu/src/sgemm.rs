//! Single-precision GEMM with a fused bias + activation epilogue: the public, safe entry point,
//! its argument checks, the reference tier, and the cache-blocked driver every tuned tier shares.
//!
//! `C[b] = act(op(A[b]) @ op(B[b]) + bias)`, shapes and layouts as in
//! [`MatmulParams`]: row-major, transpose flags for `A` and `B`, optional shared `B`.
//!
//! The driver (`gemm_blocked`) is the BLIS loop nest: `B` is packed into `KC x NR` column
//! panels, `A` into `MC x KC` blocks of `MR`-row panels, both zero-padded at ragged edges, and a
//! micro-kernel computes one `MR x NR` tile of dot products over `KC` into a small buffer that
//! safe code then adds into `C` (and, on the last `KC` block, finishes with bias + activation).
//! Going through the buffer costs one `MR x NR` store per `2 * MR * NR * KC` flops (< 1%), and
//! keeps every ragged edge and the epilogue out of the unsafe micro-kernels. The AVX-512 tier
//! instead hands the driver a [`CKernel`] that adds its tile straight into `C` with masked
//! stores at ragged edges; the epilogue stays in safe code, run on each finished tile.
//!
//! Packing buffers are kept per thread between calls (`with_scratch`); threads split the rows
//! of `C`, or its columns when there are too few rows for every thread.

use crate::error::{check_len, check_param};
use crate::reference::activation::Activation;
use crate::reference::matmul::{MatmulParams, matmul};

/// Arguments of one [`sgemm`] call besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgemmParams {
    /// Shape, batch and transpose flags.
    pub mm: MatmulParams,
    /// Activation applied after the bias (None: identity).
    pub activation: Option<Activation>,
    /// Worker threads (1 = the calling thread only; 0 is treated as 1). Problems under
    /// [`PAR_MIN_FLOPS`] always run on one thread, so small products never pay for spawning.
    pub threads: usize,
}

impl SgemmParams {
    /// A plain `[m, k] @ [k, n]` product on one thread, no activation.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            mm: MatmulParams::new(m, n, k),
            activation: None,
            threads: 1,
        }
    }

    /// Checks the shape, the activation and every slice length (`bias` must have `n`
    /// elements). Every tier calls this before touching the data.
    pub fn validate(
        &self,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        c: &[f32],
    ) -> crate::Result<()> {
        const K: &str = "sgemm";
        let (_, nb, _) = self.mm.validate(K)?;
        check_len(K, "b", nb, b.len())?;
        self.validate_a_c(a, bias, c)
    }

    /// [`Self::validate`] without `B` (for a pre-packed one).
    fn validate_a_c(&self, a: &[f32], bias: Option<&[f32]>, c: &[f32]) -> crate::Result<()> {
        const K: &str = "sgemm";
        let (na, _, nc) = self.mm.validate(K)?;
        check_len(K, "a", na, a.len())?;
        check_len(K, "c", nc, c.len())?;
        if let Some(bias) = bias {
            check_len(K, "bias", self.mm.n, bias.len())?;
        }
        if let Some(a) = self.activation {
            a.validate(K)?;
        }
        Ok(())
    }
}

/// Below this many flops (`2*m*n*k` per batch entry) [`SgemmParams::threads`] is ignored:
/// besides the pool hand-off, every thread packs all of `B` itself. Measured 2026-11-25
/// (Zen 4, AVX2 tier): at 256^3 (2^25 flops) 2 threads gave 89-102 GFLOP/s against 93 on
/// one, at 512^3 135-152 against 97, so the split starts above 256^3.
pub const PAR_MIN_FLOPS: usize = 1 << 26;

/// [`PAR_MIN_FLOPS`] for the AVX-512 tier, whose workers reuse their packing buffers: measured
/// 2026-11-26 (Zen 4, 2 threads, high priority on the shared VM; best runs): 192^3 (2^23.7)
/// 142 GFLOP/s against 98 on one thread, 256^3 160 against 100, 384^3 193 against 106; 128^3
/// lost (60-72 against 85). Some runs lost at every size on 2 threads (the VM's other load),
/// so the split starts a little above 160^3.
pub const PAR_MIN_FLOPS_DIRECT: usize = 1 << 23;

/// [`PAR_MIN_FLOPS`] for [`sgemm_prepacked`]: with `B` packed once, a split only costs the
/// pool hand-off (a few microseconds), so products from about 50 us of work up are split.
pub const PAR_MIN_FLOPS_PREPACKED: usize = 1 << 22;

/// The signature of an sgemm implementation (a [`crate::dispatch::Kernels`] slot).
pub type SgemmFn =
    fn(&SgemmParams, &[f32], &[f32], Option<&[f32]>, &mut [f32]) -> crate::Result<()>;

/// `C = act(op(A) @ op(B) + bias)` with the best implementation this CPU supports (or the tier
/// `SPORE_CPU_KERNELS` forces). Checks every length first; never panics on bad input.
pub fn sgemm(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    (crate::dispatch::kernels().sgemm)(p, a, b, bias, c)
}

/// The reference tier: the f64-accumulating oracle, then bias and activation in f64.
pub fn sgemm_reference(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    p.validate(a, b, bias, c)?;
    matmul(p.mm, a, b, c)?;
    let n = p.mm.n;
    for row in c.chunks_exact_mut(n) {
        for (j, v) in row.iter_mut().enumerate() {
            let mut x = f64::from(*v);
            if let Some(bias) = bias {
                x += f64::from(bias[j]);
            }
            if let Some(act) = p.activation {
                x = act.apply(x);
            }
            *v = x as f32;
        }
    }
    Ok(())
}

/// Which tier's register block and blocking a [`PackedB`] is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKind {
    /// No packing: `op(B)` kept row-major, multiplied by the f64 reference.
    Reference,
    /// The portable 6x8 tier.
    Portable,
    /// The AVX2 + FMA 6x16 tier (only constructible where the CPU has both).
    Avx2,
}

impl GemmKind {
    /// The kind the dispatch table of `tier` runs on this CPU.
    pub fn for_tier(tier: crate::dispatch::Tier) -> Self {
        match tier {
            crate::dispatch::Tier::Reference => Self::Reference,
            crate::dispatch::Tier::Portable => Self::Portable,
            crate::dispatch::Tier::Best => {
                #[cfg(target_arch = "x86_64")]
                if crate::x86_64::sgemm_avx2::available() {
                    return Self::Avx2;
                }
                Self::Portable
            }
        }
    }

    /// Whether this CPU can run the kind.
    pub fn available(self) -> bool {
        match self {
            Self::Reference | Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => crate::x86_64::sgemm_avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2 => false,
        }
    }
}

/// A `[k, n]` right-hand side packed once (for a convolution plan's weights, say) in the
/// layout the blocked driver of one [`GemmKind`] reads: for each `NC` column block, for each
/// `KC` row block, `NR`-column panels of `kc` rows of `NR` values, zero-padded. Products with
/// it ([`sgemm_prepacked`]) skip packing `B` entirely, so threads no longer pack it each.
#[derive(Debug)]
pub struct PackedB {
    kind: GemmKind,
    k: usize,
    n: usize,
    /// Storage; the packed data starts at `off` (64-byte aligned, see `gemm_blocked`).
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl PackedB {
    /// Packs `op(B)` (`b` is `[k, n]`, or `[n, k]` when `transpose_b`) for `kind`. Errors on
    /// a zero or overflowing shape, a wrong `b` length, or a kind this CPU cannot run.
    pub fn new(
        kind: GemmKind,
        k: usize,
        n: usize,
        transpose_b: bool,
        b: &[f32],
    ) -> crate::Result<Self> {
        const K: &str = "sgemm_prepacked";
        check_param(K, "shape", k > 0 && n > 0, || {
            format!("k = {k} and n = {n} must be positive")
        })?;
        let kn = crate::error::checked_product(K, &[k, n])?;
        check_len(K, "b", kn, b.len())?;
        check_param(K, "kind", kind.available(), || {
            format!("this CPU cannot run the {kind:?} sgemm")
        })?;
        let (rs, cs) = if transpose_b { (1, k) } else { (n, 1) };
        let view = View { off: 0, rs, cs };
        let (nr, blk) = match kind {
            GemmKind::Reference => (1, None),
            GemmKind::Portable => (
                crate::portable::sgemm::NR,
                Some(crate::portable::sgemm::BLOCKING),
            ),
            #[cfg(target_arch = "x86_64")]
            GemmKind::Avx2 => (
                crate::x86_64::sgemm_avx2::NR,
                Some(crate::x86_64::sgemm_avx2::BLOCKING),
            ),
            #[cfg(not(target_arch = "x86_64"))]
            GemmKind::Avx2 => (1, None),
        };
        let len = crate::error::checked_product(K, &[k, n.div_ceil(nr), nr])?;
        let mut buf = vec![0.0f32; len + 16];
        let off = buf.as_ptr().align_offset(64).min(16);
        let out = &mut buf[off..off + len];
        match blk {
            None => {
                for (i, row) in out.chunks_exact_mut(n).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = b[i * rs + j * cs];
                    }
                }
            }
            Some(blk) => {
                for jc in (0..n).step_by(blk.nc) {
                    let nc = blk.nc.min(n - jc);
                    let ncp = nc.div_ceil(nr) * nr;
                    for pc in (0..k).step_by(blk.kc) {
                        let kc = blk.kc.min(k - pc);
                        let dst = &mut out[jc * k + pc * ncp..jc * k + pc * ncp + kc * ncp];
                        match kind {
                            GemmKind::Portable => {
                                pack_b::<{ crate::portable::sgemm::NR }>(
                                    b, view, pc, kc, jc, nc, dst,
                                );
                            }
                            #[cfg(target_arch = "x86_64")]
                            GemmKind::Avx2 => {
                                pack_b::<{ crate::x86_64::sgemm_avx2::NR }>(
                                    b, view, pc, kc, jc, nc, dst,
                                );
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(Self {
            kind,
            k,
            n,
            buf,
            off,
            len,
        })
    }

    /// The kind this was packed for.
    pub fn kind(&self) -> GemmKind {
        self.kind
    }

    /// `(k, n)`: the shape of `op(B)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn data(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
}

/// `C[b] = act(A[b] @ B + bias)` with a pre-packed `B` (shared by every batch entry), on the
/// tier `b` was packed for. `p.mm.n` and `p.mm.k` must match `b.shape()`; `p.mm.b_batch` must
/// be 1; `p.mm.transpose_b` is ignored (any transpose was applied when packing). Checks every
/// length first; never panics on bad input.
pub fn sgemm_prepacked(
    p: &SgemmParams,
    a: &[f32],
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
) -> crate::Result<()> {
    const K: &str = "sgemm_prepacked";
    check_param(K, "b", (p.mm.k, p.mm.n) == b.shape(), || {
        format!(
            "packed B is {:?} but the product needs (k, n) = ({}, {})",
            b.shape(),
            p.mm.k,
            p.mm.n
        )
    })?;
    check_param(K, "b_batch", p.mm.b_batch == 1, || {
        "a packed B is shared by every batch entry".into()
    })?;
    let mut q = *p;
    q.mm.transpose_b = false;
    q.validate_a_c(a, bias, c)?;
    let data = b.data();
    match b.kind {
        GemmKind::Reference => sgemm_reference(&q, a, data, bias, c),
        GemmKind::Portable => {
            use crate::portable::sgemm::{BLOCKING, MR, NR};
            run_rows::<MR, NR>(
                &q,
                a,
                bias,
                c,
                crate::portable::sgemm::MICRO,
                None,
                BLOCKING,
                PAR_MIN_FLOPS_PREPACKED,
                |_| BSrc::Packed(data),
            )
        }
        #[cfg(target_arch = "x86_64")]
        GemmKind::Avx2 => {
            use crate::x86_64::sgemm_avx2::{BLOCKING, MR, NR};
            run_rows::<MR, NR>(
                &q,
                a,
                bias,
                c,
                crate::x86_64::sgemm_avx2::MICRO,
                None,
                BLOCKING,
                PAR_MIN_FLOPS_PREPACKED,
                |_| BSrc::Packed(data),
            )
        }
        #[cfg(not(target_arch = "x86_64"))]
        GemmKind::Avx2 => Err(crate::KernelError::Param {
            kernel: K,
            param: "kind",
            reason: "AVX2 packing on a non-x86_64 target".into(),
        }),
    }
}

/// Rows per packed `A` panel of every packing tier (both register blocks are 6 rows tall), the
/// layout [`gemm_packed_a`] expects.
pub(crate) const PACK_MR: usize = 6;

/// `c = a @ b` on one thread, no bias or activation, with `a` already packed as
/// `ceil(m / PACK_MR)` panels of `k * PACK_MR` values (see [`ASrc::Packed`]) and `b` pre-packed.
/// `c` is `[m, n]` row-major. Used by the Winograd convolution, whose input transform writes
/// straight into the packed layout.
pub(crate) fn gemm_packed_a(m: usize, a: &[f32], b: &PackedB, c: &mut [f32]) -> crate::Result<()> {
    const K: &str = "sgemm_packed_a";
    let (k, n) = b.shape();
    check_len(K, "a", m.div_ceil(PACK_MR) * PACK_MR * k, a.len())?;
    check_len(K, "c", m * n, c.len())?;
    let data = b.data();
    match b.kind {
        GemmKind::Portable => {
            use crate::portable::sgemm::{BLOCKING, MR, NR};
            const { assert!(MR == PACK_MR) };
            gemm_blocked::<MR, NR>(
                m,
                n,
                k,
                ASrc::Packed(a),
                BSrc::Packed(data),
                None,
                None,
                c,
                crate::portable::sgemm::MICRO,
                None,
                BLOCKING,
            );
            Ok(())
        }
        #[cfg(target_arch = "x86_64")]
        GemmKind::Avx2 => {
            use crate::x86_64::sgemm_avx2::{BLOCKING, MR, NR};
            const { assert!(MR == PACK_MR) };
            gemm_blocked::<MR, NR>(
                m,
                n,
                k,
                ASrc::Packed(a),
                BSrc::Packed(data),
                None,
                None,
                c,
                crate::x86_64::sgemm_avx2::MICRO,
                None,
                BLOCKING,
            );
            Ok(())
        }
        _ => Err(crate::KernelError::Param {
            kernel: K,
            param: "kind",
            reason: format!("no packed-A driver for {:?}", b.kind),
        }),
    }
}

/// A micro-kernel: `out[r * NR + c] = sum_kk a[kk * MR + r] * b[kk * NR + c]` over `kc`
/// steps, from a packed `A` panel (`kc * MR`) and a packed `B` panel (`kc * NR`).
pub(crate) type MicroKernel = fn(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]);

/// A micro-kernel reading `A` unpacked: `out[r * NR + c] = sum_kk a[r * lda + kk] *
/// b[kk * NR + c]` (row-major `A`, rows `lda` apart).
pub(crate) type StridedKernel = fn(kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]);

/// A micro-kernel that writes its tile straight into `C` (no tile buffer): computes the full
/// `MR x NR` tile from packed panels as [`MicroKernel`] does, then stores (`first`) or adds
/// (otherwise) its top-left `mr x nr` corner into `c`, whose rows are `ldc` apart (`c` starts
/// at the tile's top-left element and holds at least `(mr - 1) * ldc + nr` values). Ragged
/// edges are the kernel's own business (masked stores), so the driver never round-trips a
/// tile through memory.
pub(crate) type CKernel = fn(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    mr: usize,
    nr: usize,
    first: bool,
);

/// A packed micro-kernel that handles a full `MR x NR` tile in registers, straight into `C`
/// (rows `ldc` apart): `T = A @ B` over one `KC` block, `C = T` on the first block or
/// `C += T` after it, and on the last block also `C = act(C + bias)`, in the same order of
/// operations as the tile-buffer path. Returns `false`, touching nothing, when it does not
/// handle `act` (the driver then goes through the tile buffer). For small `k` (1x1
/// convolutions with 16-64 input channels) the tile round trip and the scalar epilogue cost
/// as much as the product itself.
pub(crate) type FusedKernel = fn(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    first: bool,
    last: bool,
    bias: Option<&[f32]>,
    act: Option<Activation>,
) -> bool;

/// A tier's micro-kernels: the packed one, and optionally one that reads a row-major `A` in
/// place (used when each `A` panel meets few `B` panels, so packing it would not pay).
#[derive(Clone, Copy)]
pub(crate) struct Micro {
    /// Packed `A` and `B`.
    pub packed: MicroKernel,
    /// Row-major `A`, packed `B`.
    pub strided: Option<StridedKernel>,
    /// Packed `A` and `B`, full tile, epilogue fused (see [`FusedKernel`]).
    pub fused: Option<FusedKernel>,
}

/// Widest `n` for which a row-major `A` is read in place (with a strided micro-kernel)
/// instead of packed: each `A` panel then meets at most 4 `B` panels of 16, and packing it
/// (a scalar transpose) cost about as much as the product. Measured 2026-11-25 on the
/// pointwise 144->24 56x56 layer (see the conv2d timing test).
const DIRECT_A_MAX_N: usize = 64;

/// Cache-blocking sizes of the driver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    /// Depth of one packed block (the `B` panel `KC x NR` should sit in L1).
    pub kc: usize,
    /// Rows of `A` packed at once (the `MC x KC` block should sit in L2); a multiple of `MR`.
    pub mc: usize,
    /// Columns of `B` packed at once (the `KC x NC` block lives in L3).
    pub nc: usize,
}

/// One matrix of a product as the driver sees it: element `(i, j)` at `off + i*rs + j*cs`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    /// Offset of element `(0, 0)`.
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// Runs every batch entry of a validated problem through the blocked driver, splitting the
/// rows of `C` over `p.threads` pool workers ([`crate::parallel`]) when the product is large
/// enough.
pub(crate) fn run_blocked<const MR: usize, const NR: usize>(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    micro: Micro,
    blk: Blocking,
) -> crate::Result<()> {
    let mm = p.mm;
    let (rs_b, cs_b) = if mm.transpose_b { (1, mm.k) } else { (mm.n, 1) };
    run_rows::<MR, NR>(p, a, bias, c, micro, None, blk, PAR_MIN_FLOPS, |bi| {
        let off = if mm.b_batch == 1 { 0 } else { bi * mm.k * mm.n };
        BSrc::Raw(
            b,
            View {
                off,
                rs: rs_b,
                cs: cs_b,
            },
        )
    })
}

/// [`run_blocked`] for a tier whose micro-kernel writes `C` directly ([`CKernel`]): no tile
/// buffer, the bias + activation epilogue applied to each finished tile while it is in L1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_blocked_c<const MR: usize, const NR: usize>(
    p: &SgemmParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    micro: Micro,
    direct: CKernel,
    blk: Blocking,
) -> crate::Result<()> {
    let mm = p.mm;
    let (rs_b, cs_b) = if mm.transpose_b { (1, mm.k) } else { (mm.n, 1) };
    run_rows::<MR, NR>(
        p,
        a,
        bias,
        c,
        micro,
        Some(direct),
        blk,
        PAR_MIN_FLOPS_DIRECT,
        |bi| {
            let off = if mm.b_batch == 1 { 0 } else { bi * mm.k * mm.n };
            BSrc::Raw(
                b,
                View {
                    off,
                    rs: rs_b,
                    cs: cs_b,
                },
            )
        },
    )
}

/// The shared row-splitting loop of [`run_blocked`] and the pre-packed entry: every batch
/// entry, its rows of `C` split over the pool when the product is worth it; `bsrc(bi)` says
/// where batch entry `bi` finds `B`.
#[allow(clippy::too_many_arguments)]
fn run_rows<'b, const MR: usize, const NR: usize>(
    p: &SgemmParams,
    a: &[f32],
    bias: Option<&[f32]>,
    c: &mut [f32],
    micro: Micro,
    direct: Option<CKernel>,
    blk: Blocking,
    min_flops: usize,
    bsrc: impl Fn(usize) -> BSrc<'b> + Sync,
) -> crate::Result<()> {
    let mm = p.mm;
    let (m, n, k) = (mm.m, mm.n, mm.k);
    let (rs_a, cs_a) = if mm.transpose_a { (1, m) } else { (k, 1) };
    let flops = 2 * m * n * k;
    let want = if flops >= min_flops {
        p.threads.max(1)
    } else {
        1
    };
    // At least 2*MR rows (or 2*NR columns) per thread, or the split costs more than it brings.
    let row_threads = want.min(m.div_ceil(2 * MR)).max(1);
    let col_threads = want.min(n / (2 * NR)).max(1);
    for (bi, cb) in c.chunks_exact_mut(m * n).enumerate() {
        let a_off = bi * m * k;
        let av = View {
            off: a_off,
            rs: rs_a,
            cs: cs_a,
        };
        let bs = bsrc(bi);
        if let (true, BSrc::Raw(bm, bv)) = (col_threads > row_threads, bs) {
            // Few rows (a small batch through a wide layer): split the columns instead. Each
            // worker computes its `m x nw` slab into a buffer of its own (C's column ranges
            // are not contiguous), then the slabs are copied in: `m * n` moves against
            // `2 * m * n * k` flops.
            let per = n.div_ceil(col_threads).div_ceil(NR) * NR;
            let slabs = crate::parallel::par_map(col_threads, n.div_ceil(per), |t| {
                let (j0, nw) = (t * per, per.min(n - t * per));
                let mut slab = vec![0.0f32; m * nw];
                let bt = View {
                    off: bv.off + j0 * bv.cs,
                    ..bv
                };
                gemm_blocked::<MR, NR>(
                    m,
                    nw,
                    k,
                    ASrc::Raw(a, av),
                    BSrc::Raw(bm, bt),
                    bias.map(|b| &b[j0..j0 + nw]),
                    p.activation,
                    &mut slab,
                    micro,
                    direct,
                    blk,
                );
                slab
            })?;
            for (t, slab) in slabs.iter().enumerate() {
                let nw = slab.len() / m;
                for (crow, srow) in cb.chunks_exact_mut(n).zip(slab.chunks_exact(nw)) {
                    crow[t * per..t * per + nw].copy_from_slice(srow);
                }
            }
            continue;
        }
        crate::parallel::par_chunks_mut(cb, n, row_threads, |i0, chunk| {
            let mt = chunk.len() / n;
            let av = View {
                off: a_off + i0 * rs_a,
                ..av
            };
            gemm_blocked::<MR, NR>(
                mt,
                n,
                k,
                ASrc::Raw(a, av),
                bs,
                bias,
                p.activation,
                chunk,
                micro,
                direct,
                blk,
            );
            Ok(())
        })?;
    }
    Ok(())
}

/// Where the driver reads `A` from.
#[derive(Clone, Copy)]
pub(crate) enum ASrc<'a> {
    /// A strided matrix, packed block by block.
    Raw(&'a [f32], View),
    /// Already packed: `ceil(m / MR)` panels of `k * MR` values, `MR` rows contiguous per
    /// column, zero-padded past row `m`.
    Packed(&'a [f32]),
}

/// Where the driver reads `B` from.
#[derive(Clone, Copy)]
pub(crate) enum BSrc<'a> {
    /// A strided matrix, packed block by block.
    Raw(&'a [f32], View),
    /// The data of a [`PackedB`] for this driver's `NR` and blocking.
    Packed(&'a [f32]),
}

/// The BLIS loop nest for one `[m, k] @ [k, n]` product into the row-major `c` (`m * n`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_blocked<const MR: usize, const NR: usize>(
    m: usize,
    n: usize,
    k: usize,
    a: ASrc<'_>,
    b: BSrc<'_>,
    bias: Option<&[f32]>,
    act: Option<Activation>,
    c: &mut [f32],
    micro: Micro,
    direct: Option<CKernel>,
    blk: Blocking,
) {
    let kc_max = blk.kc.min(k);
    let nc_max = blk.nc.min(n.div_ceil(NR) * NR);
    let mc_max = blk.mc.min(m.div_ceil(MR) * MR);
    // Packed panels start on a 64-byte boundary, so no 32-byte load in the micro-kernel
    // splits a cache line (the allocator only promises 16 bytes). Pre-packed operands need no
    // buffer.
    let blen = if matches!(b, BSrc::Raw(..)) {
        kc_max * nc_max
    } else {
        0
    };
    let alen = if matches!(a, ASrc::Raw(..)) {
        kc_max * mc_max
    } else {
        0
    };
    let direct_a = match (a, micro.strided) {
        (ASrc::Raw(_, av), Some(_)) => av.cs == 1 && n <= DIRECT_A_MAX_N,
        _ => false,
    };
    with_scratch(blen + alen + 32, |buf| {
        let boff = buf.as_ptr().align_offset(64).min(16);
        let (bregion, rest) = buf.split_at_mut(boff + blen);
        let bpack = &mut bregion[boff..];
        let aoff = rest.as_ptr().align_offset(64).min(16);
        let apack = &mut rest[aoff..aoff + alen];
        blocked_loops::<MR, NR>(
            m, n, k, a, b, bias, act, c, micro, direct, blk, direct_a, bpack, apack,
        );
    });
}

/// Most floats of packing buffer a thread keeps between products (16 MiB): enough for every
/// tier's `KC x NC` + `MC x KC` blocks, so repeated products skip the allocation and the page
/// faults of fresh memory (measured ~5% of a 1024^3 product on Zen 4).
const SCRATCH_KEEP: usize = 4 << 20;

/// Runs `f` on a scratch buffer of `len` floats (contents unspecified): the calling thread's
/// cached one when it is free and `len` is at most [`SCRATCH_KEEP`], else a fresh one.
fn with_scratch<R>(len: usize, mut f: impl FnMut(&mut [f32]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    let cached = SCRATCH.try_with(|cell| {
        let mut v = cell.try_borrow_mut().ok().filter(|_| len <= SCRATCH_KEEP)?;
        if v.len() < len {
            v.resize(len, 0.0);
        }
        Some(f(&mut v[..len]))
    });
    match cached {
        Ok(Some(r)) => r,
        // Busy (re-entered), being torn down, or too big to keep: a buffer of its own.
        _ => f(&mut vec![0.0f32; len]),
    }
}

/// The loop nest of [`gemm_blocked`] on its packing buffers.
#[allow(clippy::too_many_arguments)]
fn blocked_loops<const MR: usize, const NR: usize>(
    m: usize,
    n: usize,
    k: usize,
    a: ASrc<'_>,
    b: BSrc<'_>,
    bias: Option<&[f32]>,
    act: Option<Activation>,
    c: &mut [f32],
    micro: Micro,
    direct: Option<CKernel>,
    blk: Blocking,
    direct_a: bool,
    bpack: &mut [f32],
    apack: &mut [f32],
) {
    const { assert!(MR * NR <= 512) };
    let mut tile = [0.0f32; 512];
    let tile = &mut tile[..MR * NR];
    for jc in (0..n).step_by(blk.nc) {
        let nc = blk.nc.min(n - jc);
        let ncp = nc.div_ceil(NR) * NR;
        for pc in (0..k).step_by(blk.kc) {
            let kc = blk.kc.min(k - pc);
            let first = pc == 0;
            let last = pc + kc == k;
            let bp_all: &[f32] = match b {
                BSrc::Raw(bm, bv) => {
                    pack_b::<NR>(bm, bv, pc, kc, jc, nc, bpack);
                    bpack
                }
                // Layout of `PackedB`: `jc` blocks (all but the last a full, NR-aligned
                // `nc` wide) of `k` rows, each `kc` block `ncp` wide.
                BSrc::Packed(d) => &d[jc * k + pc * ncp..jc * k + pc * ncp + kc * ncp],
            };
            for ic in (0..m).step_by(blk.mc) {
                let mc = blk.mc.min(m - ic);
                if let ASrc::Raw(am, av) = a {
                    if !direct_a {
                        pack_a::<MR>(am, av, ic, mc, pc, kc, apack);
                    } else if !mc.is_multiple_of(MR) {
                        // Only the ragged last panel goes through the packed kernel.
                        let il = mc / MR * MR;
                        pack_a::<MR>(am, av, ic + il, mc - il, pc, kc, &mut apack[il * kc..]);
                    }
                }
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let bp = &bp_all[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let mr = MR.min(mc - ir);
                        let ap = match a {
                            ASrc::Raw(..) => &apack[ir * kc..(ir + MR) * kc],
                            ASrc::Packed(d) => {
                                let s = (ic + ir) / MR * k * MR + pc * MR;
                                &d[s..s + kc * MR]
                            }
                        };
                        let (i0, j0) = (ic + ir, jc + jr);
                        if let (Some(ck), false) = (direct, direct_a) {
                            let cs = &mut c[i0 * n + j0..(i0 + mr - 1) * n + j0 + nr];
                            ck(kc, ap, bp, cs, n, mr, nr, first);
                            if last && (bias.is_some() || act.is_some()) {
                                for r in 0..mr {
                                    let crow = &mut c[(i0 + r) * n + j0..(i0 + r) * n + j0 + nr];
                                    epilogue(crow, bias.map(|b| &b[j0..j0 + nr]), act);
                                }
                            }
                            continue;
                        }
                        if let (Some(fused), true) =
                            (micro.fused, mr == MR && nr == NR && !direct_a)
                            && fused(
                                kc,
                                ap,
                                bp,
                                &mut c[i0 * n + j0..],
                                n,
                                first,
                                last,
                                bias.map(|b| &b[j0..j0 + nr]),
                                act,
                            )
                        {
                            continue;
                        }
                        match (a, micro.strided) {
                            (ASrc::Raw(am, av), Some(strided)) if direct_a && mr == MR => {
                                let s = av.off + (ic + ir) * av.rs + pc;
                                strided(kc, &am[s..], av.rs, bp, tile);
                            }
                            _ => (micro.packed)(kc, ap, bp, tile),
                        }
                        for r in 0..mr {
                            let crow = &mut c[(i0 + r) * n + j0..(i0 + r) * n + j0 + nr];
                            let trow = &tile[r * NR..r * NR + nr];
                            store_row(crow, trow, first, last, bias.map(|b| &b[j0..j0 + nr]), act);
                        }
                    }
                }
            }
        }
    }
}

/// Writes (first `KC` block) or accumulates one tile row into `C`, and on the last block adds
/// the bias and applies the activation.
#[inline]
fn store_row(
    crow: &mut [f32],
    trow: &[f32],
    first: bool,
    last: bool,
    bias: Option<&[f32]>,
    act: Option<Activation>,
) {
    if first && last {
        // The whole product in one `KC` block (every 1x1 convolution with up to 512 input
        // channels): one pass `C = act(tile + bias)`. Copying the row first and re-reading it
        // for the bias cost a `memcpy` call and a stalled reload per row: profiled 2026-11-26
        // (Zen 4, MobileNetV2 224 b1, 1 thread) that store was 25% of the whole model.
        store_row_once(crow, trow, bias, act);
        return;
    }
    if first {
        crow.copy_from_slice(trow);
    } else {
        for (cv, tv) in crow.iter_mut().zip(trow) {
            *cv += *tv;
        }
    }
    if last {
        epilogue(crow, bias, act);
    }
}

/// `crow = act(trow + bias)` in one pass for the piecewise-linear activations a convolution
/// usually carries (none, ReLU, ReLU6); others add the bias, then go through
/// [`apply_activation`] on the row while it is in L1.
#[inline]
fn store_row_once(crow: &mut [f32], trow: &[f32], bias: Option<&[f32]>, act: Option<Activation>) {
    let trow = &trow[..crow.len()];
    match (bias, act) {
        (Some(b), None) => {
            for ((cv, tv), bv) in crow.iter_mut().zip(trow).zip(b) {
                *cv = *tv + *bv;
            }
        }
        (Some(b), Some(Activation::Relu)) => {
            for ((cv, tv), bv) in crow.iter_mut().zip(trow).zip(b) {
                *cv = (*tv + *bv).max(0.0);
            }
        }
        (Some(b), Some(Activation::Relu6)) => {
            for ((cv, tv), bv) in crow.iter_mut().zip(trow).zip(b) {
                *cv = (*tv + *bv).clamp(0.0, 6.0);
            }
        }
        (None, Some(Activation::Relu)) => {
            for (cv, tv) in crow.iter_mut().zip(trow) {
                *cv = tv.max(0.0);
            }
        }
        (None, Some(Activation::Relu6)) => {
            for (cv, tv) in crow.iter_mut().zip(trow) {
                *cv = tv.clamp(0.0, 6.0);
            }
        }
        (Some(b), Some(a)) => {
            for ((cv, tv), bv) in crow.iter_mut().zip(trow).zip(b) {
                *cv = *tv + *bv;
            }
            apply_activation(a, crow);
        }
        (None, a) => {
            crow.copy_from_slice(trow);
            if let Some(a) = a {
                apply_activation(a, crow);
            }
        }
    }
}

/// Adds the bias to one finished row segment of `C` and applies the activation.
#[inline]
fn epilogue(crow: &mut [f32], bias: Option<&[f32]>, act: Option<Activation>) {
    if let Some(bias) = bias {
        for (cv, bv) in crow.iter_mut().zip(bias) {
            *cv += *bv;
        }
    }
    if let Some(act) = act {
        apply_activation(act, crow);
    }
}

/// Applies `act` in place. The piecewise-linear ones run in f32 (vectorisable, exact up to
/// f32 rounding); the transcendental ones go through the f64 reference formula, whose cost is
/// O(m*n) against the product's O(m*n*k).
pub(crate) fn apply_activation(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Relu6 => v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0)),
        Activation::LeakyRelu(alpha) => {
            let alpha = alpha as f32;
            v.iter_mut()
                .for_each(|x| *x = if *x > 0.0 { *x } else { alpha * *x });
        }
        Activation::HardSwish => v
            .iter_mut()
            .for_each(|x| *x = *x * (*x + 3.0).clamp(0.0, 6.0) / 6.0),
        Activation::HardSigmoid => v
            .iter_mut()
            .for_each(|x| *x = (*x + 3.0).clamp(0.0, 6.0) / 6.0),
        other => v
            .iter_mut()
            .for_each(|x| *x = other.apply(f64::from(*x)) as f32),
    }
}

/// Packs `op(B)[pc..pc+kc, jc..jc+nc]` as `NR`-column panels, each `kc` rows of `NR`
/// contiguous values, zero-padded past column `nc`.
fn pack_b<const NR: usize>(
    b: &[f32],
    bv: View,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    out: &mut [f32],
) {
    if bv.cs == 1 {
        // Row-major B: walk its rows (contiguous reads the prefetcher follows) and deal each
        // row out to the panels, instead of reading `NR` values per row per panel at the
        // row stride (+1-2% at 1024^3 with the AVX-512 tier, measured 2026-11-26).
        for kk in 0..kc {
            let base = bv.off + (pc + kk) * bv.rs + jc;
            let src = &b[base..base + nc];
            for (piece, dst) in src.chunks(NR).zip(out.chunks_exact_mut(NR * kc)) {
                // Always `NR` long (the slice is `NR` wide); the array type lets a full
                // piece copy as a few vector moves instead of a `memcpy` call.
                let Ok(row) = <&mut [f32; NR]>::try_from(&mut dst[kk * NR..kk * NR + NR]) else {
                    continue;
                };
                if let Ok(full) = <&[f32; NR]>::try_from(piece) {
                    *row = *full;
                } else {
                    row[..piece.len()].copy_from_slice(piece);
                    row[piece.len()..].fill(0.0);
                }
            }
        }
        return;
    }
    for (panel, dst) in (0..nc).step_by(NR).zip(out.chunks_exact_mut(NR * kc)) {
        let w = NR.min(nc - panel);
        let j0 = jc + panel;
        for (kk, row) in dst.chunks_exact_mut(NR).enumerate() {
            let base = bv.off + (pc + kk) * bv.rs + j0 * bv.cs;
            if bv.cs == 1 {
                row[..w].copy_from_slice(&b[base..base + w]);
            } else {
                for (jj, x) in row[..w].iter_mut().enumerate() {
                    *x = b[base + jj * bv.cs];
                }
            }
            row[w..].fill(0.0);
        }
    }
}

/// Packs `op(A)[ic..ic+mc, pc..pc+kc]` as `MR`-row panels, each `kc` columns of `MR`
/// contiguous values, zero-padded past row `mc`.
fn pack_a<const MR: usize>(
    a: &[f32],
    av: View,
    ic: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    out: &mut [f32],
) {
    for (panel, dst) in (0..mc).step_by(MR).zip(out.chunks_exact_mut(MR * kc)) {
        let h = MR.min(mc - panel);
        let i0 = ic + panel;
        if av.rs == 1 {
            // Transposed A: the MR rows of one column are contiguous.
            for (kk, col) in dst.chunks_exact_mut(MR).enumerate() {
                let base = av.off + i0 + (pc + kk) * av.cs;
                col[..h].copy_from_slice(&a[base..base + h]);
                col[h..].fill(0.0);
            }
        } else {
            // Fetch the next panel's rows into L2 while this one is packed: reading A at its
            // row stride is latency-bound, and this took 1024^3 (AVX-512 tier) from ~103 to
            // ~105.5 GFLOP/s (measured 2026-11-26, 3 interleaved runs each).
            #[cfg(target_arch = "x86_64")]
            {
                for r in panel + MR..(panel + 2 * MR).min(mc) {
                    let base = av.off + (ic + r) * av.rs + pc * av.cs;
                    crate::x86_64::sgemm_avx512::prefetch_l2(&a[base..base + kc]);
                }
            }
            // Row-major A: row by row, one strided store per value. Each row piece is first
            // copied whole into a small buffer: the copy (wide loads, few stores) keeps many
            // cache misses in flight, where the scalar scatter alone filled the store buffer
            // after a few lines and packing ran at memory latency (~6% of a 1024^3 product).
            let mut tmp = [0.0f32; 256];
            for r in 0..MR {
                if r < h {
                    let base = av.off + (i0 + r) * av.rs + pc * av.cs;
                    let row = &a[base..base + kc];
                    for (piece, cols) in row.chunks(256).zip(dst.chunks_mut(256 * MR)) {
                        let t = &mut tmp[..piece.len()];
                        t.copy_from_slice(piece);
                        for (col, &x) in cols.chunks_exact_mut(MR).zip(t.iter()) {
                            col[r] = x;
                        }
                    }
                } else {
                    for col in dst.chunks_exact_mut(MR) {
                        col[r] = 0.0;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::{assert_close, rng};

    const SIZES: [usize; 9] = [1, 2, 5, 7, 13, 31, 64, 100, 257];
    const ACTS: [Option<Activation>; 10] = [
        None,
        Some(Activation::Relu),
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Sigmoid),
        Some(Activation::Tanh),
        Some(Activation::HardSwish),
        Some(Activation::HardSigmoid),
        Some(Activation::Gelu),
        Some(Activation::GeluTanh),
    ];

    fn rand_f32(r: &mut crate::rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| r.uniform(-1.0, 1.0) as f32).collect()
    }

    /// Relative L2 error <= 1e-5, except where the outputs nearly cancel (a few tiny dot
    /// products, e.g. m = 2, n = 1): there an f32 sum of `k` unit-scale products is only
    /// accurate to ~`sqrt(k) * 1e-7` absolute, so the absolute RMS error must be under 1e-6
    /// per `sqrt(k)` instead.
    #[track_caller]
    pub(crate) fn close_or_cancelled(what: &str, got: &[f64], want: &[f64], k: usize) {
        let sq: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
        let rms = (sq / want.len().max(1) as f64).sqrt();
        if rms <= 1e-6 * (k as f64).sqrt() {
            return;
        }
        assert_close(what, got, want, 1e-5);
    }

    /// Checks `f` against the reference matmul + bias + activation on random ragged
    /// problems: every transpose combination, every activation, batched and shared `B`.
    pub(crate) fn check_tier(name: &str, f: SgemmFn) {
        let mut r = rng(name);
        for case in 0..40 {
            let pick = |r: &mut crate::rng::Rng| SIZES[r.range(0, SIZES.len() - 1)];
            let (m, n, k) = (pick(&mut r), pick(&mut r), pick(&mut r));
            let batch = if case % 4 == 0 { 3 } else { 1 };
            let mm = MatmulParams {
                batch,
                m,
                n,
                k,
                transpose_a: case % 2 == 1,
                transpose_b: (case / 2) % 2 == 1,
                b_batch: if case % 8 == 0 { 1 } else { batch },
            };
            let p = SgemmParams {
                mm,
                activation: ACTS[case % ACTS.len()],
                threads: 1 + case % 3,
            };
            let a = rand_f32(&mut r, batch * m * k);
            let b = rand_f32(&mut r, mm.b_batch * k * n);
            let bias = rand_f32(&mut r, n);
            let bias = if case % 3 == 0 { None } else { Some(&bias[..]) };
            let mut want = vec![0.0f32; batch * m * n];
            let mut got = vec![f32::NAN; batch * m * n];
            sgemm_reference(&p, &a, &b, bias, &mut want).unwrap();
            f(&p, &a, &b, bias, &mut got).unwrap();
            let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            close_or_cancelled(
                &format!("sgemm/{name}/{p:?} bias={}", bias.is_some()),
                &w(&got),
                &w(&want),
                k,
            );
        }
        // Ragged around the register blocks (6x8, 6x16, 14x32: one row/column short of, on,
        // and past a tile) and the KC blocks (512 + 1), every transpose, bias, activation and
        // 1 and 2 threads; the last case has too few rows for a row split, so the direct
        // (AVX-512) driver splits its columns over 2 threads.
        let edges = [
            (13, 97, 5),
            (14, 96, 513),
            (15, 95, 3),
            (29, 129, 64),
            (28, 65, 1),
            (43, 33, 17),
            (7, 1000, 700),
        ];
        for (case, &(m, n, k)) in edges.iter().enumerate() {
            let mut mm = MatmulParams::new(m, n, k);
            mm.transpose_a = case % 2 == 1;
            mm.transpose_b = case % 3 == 1;
            let p = SgemmParams {
                mm,
                activation: ACTS[(case * 3) % ACTS.len()],
                threads: if m * n * k > 1 << 22 { 2 } else { 1 + case % 2 },
            };
            let a = rand_f32(&mut r, m * k);
            let b = rand_f32(&mut r, k * n);
            let bias = rand_f32(&mut r, n);
            let bias = (case % 4 != 3).then_some(&bias[..]);
            let mut want = vec![0.0f32; m * n];
            let mut got = vec![f32::NAN; m * n];
            sgemm_reference(&p, &a, &b, bias, &mut want).unwrap();
            f(&p, &a, &b, bias, &mut got).unwrap();
            let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            close_or_cancelled(&format!("sgemm/{name}/edge/{p:?}"), &w(&got), &w(&want), k);
        }
        // Big enough to cross PAR_MIN_FLOPS and several KC/MC blocks, on 3 threads (the last
        // row chunk ragged), with and without transposes.
        let (m, n, k) = (300, 200, 1100);
        for transpose in [false, true] {
            let mut mm = MatmulParams::new(m, n, k);
            mm.transpose_a = transpose;
            mm.transpose_b = transpose;
            let p = SgemmParams {
                mm,
                activation: Some(Activation::Relu),
                threads: 3,
            };
            let a = rand_f32(&mut r, m * k);
            let b = rand_f32(&mut r, k * n);
            let bias = rand_f32(&mut r, n);
            let mut want = vec![0.0f32; m * n];
            let mut got = vec![f32::NAN; m * n];
            sgemm_reference(&p, &a, &b, Some(&bias), &mut want).unwrap();
            f(&p, &a, &b, Some(&bias), &mut got).unwrap();
            let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            assert_close(
                &format!("sgemm/{name}/large/transpose={transpose}"),
                &w(&got),
                &w(&want),
                1e-5,
            );
        }
    }

    /// Wrong lengths and bad parameters are errors, for tier `f`.
    pub(crate) fn check_errors(f: SgemmFn) {
        let p = SgemmParams::new(2, 3, 4);
        let (a, b, bias) = (vec![1.0f32; 8], vec![1.0f32; 12], vec![0.0f32; 3]);
        let mut c = vec![0.0f32; 6];
        assert!(f(&p, &a, &b, Some(&bias), &mut c).is_ok());
        assert!(f(&p, &a[..7], &b, None, &mut c).is_err());
        assert!(f(&p, &a, &b[..11], None, &mut c).is_err());
        assert!(f(&p, &a, &b, Some(&bias[..2]), &mut c).is_err());
        assert!(f(&p, &a, &b, None, &mut c[..5]).is_err());
        let zero = SgemmParams::new(0, 3, 4);
        assert!(f(&zero, &[], &b, None, &mut []).is_err());
        let leaky = SgemmParams {
            activation: Some(Activation::LeakyRelu(f64::NAN)),
            ..p
        };
        assert!(f(&leaky, &a, &b, None, &mut c).is_err());
        let mut bb = p;
        bb.mm.b_batch = 2;
        assert!(f(&bb, &a, &b, None, &mut c).is_err());
        let huge = SgemmParams::new(usize::MAX / 2, 3, 4);
        assert!(f(&huge, &a, &b, None, &mut c).is_err());
    }

    #[test]
    fn prepacked_matches_oracle() {
        let mut r = rng("sgemm_prepacked");
        let mut kinds = vec![GemmKind::Reference, GemmKind::Portable];
        if GemmKind::Avx2.available() {
            kinds.push(GemmKind::Avx2);
        }
        println!("sgemm_prepacked kinds: {kinds:?}");
        for case in 0..24 {
            let pick = |r: &mut crate::rng::Rng| SIZES[r.range(0, SIZES.len() - 1)];
            let (m, n, k) = (pick(&mut r), pick(&mut r), pick(&mut r));
            let (m, n, k) = if case == 0 {
                (300, 3100, 600)
            } else {
                (m, n, k)
            };
            let mut mm = MatmulParams::new(m, n, k);
            mm.batch = 1 + case % 2;
            mm.transpose_a = case % 3 == 1;
            mm.transpose_b = case % 4 >= 2;
            let p = SgemmParams {
                mm,
                activation: ACTS[case % ACTS.len()],
                threads: 1 + case % 2,
            };
            let a = rand_f32(&mut r, mm.batch * m * k);
            let b = rand_f32(&mut r, k * n);
            let bias = rand_f32(&mut r, n);
            let bias = (case % 3 != 0).then_some(&bias[..]);
            let mut want = vec![0.0f32; mm.batch * m * n];
            sgemm_reference(&p, &a, &b, bias, &mut want).unwrap();
            for &kind in &kinds {
                let pb = PackedB::new(kind, k, n, mm.transpose_b, &b).unwrap();
                let mut got = vec![f32::NAN; want.len()];
                sgemm_prepacked(&p, &a, &pb, bias, &mut got).unwrap();
                let w = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
                close_or_cancelled(
                    &format!("sgemm_prepacked/{kind:?}/{p:?}"),
                    &w(&got),
                    &w(&want),
                    k,
                );
                let mut bad = p;
                bad.mm.k += 1;
                assert!(sgemm_prepacked(&bad, &a, &pb, bias, &mut got).is_err());
            }
        }
        assert!(PackedB::new(GemmKind::Portable, 3, 4, false, &[0.0; 11]).is_err());
        assert!(PackedB::new(GemmKind::Portable, 0, 4, false, &[]).is_err());
    }

    /// `cargo test --release -p spore-kernels-cpu prepacked_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn prepacked_timing() {
        let mut r = rng("prepacked_timing");
        for (m, n, k) in [(3136, 24, 144), (3136, 64, 576), (1024, 1024, 1024)] {
            let a = rand_f32(&mut r, m * k);
            let b = rand_f32(&mut r, k * n);
            let mut c = vec![0.0f32; m * n];
            let pb = PackedB::new(
                GemmKind::for_tier(crate::dispatch::Tier::Best),
                k,
                n,
                false,
                &b,
            )
            .unwrap();
            for threads in [1, 2] {
                let mut p = SgemmParams::new(m, n, k);
                p.threads = threads;
                let mut best = f64::INFINITY;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    sgemm_prepacked(&p, &a, &pb, None, &mut c).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "prepacked {m}x{n}x{k} t={threads}: {:.1} GFLOP/s",
                    2.0 * (m * n * k) as f64 / best / 1e9
                );
            }
        }
    }

    #[test]
    fn reference_tier_matches_oracle() {
        check_tier("reference", sgemm_reference);
        check_errors(sgemm_reference);
    }

    #[test]
    fn dispatched_entry_matches_oracle() {
        println!(
            "sgemm/dispatched: {}",
            crate::dispatch::kernels().sgemm_impl
        );
        check_tier("dispatched", sgemm);
        check_errors(sgemm);
    }
}
