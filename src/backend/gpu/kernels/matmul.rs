//! Batched matmul on the GPU (`shaders/matmul*.wgsl`): `C[b] = act(op(A[b]) @ op(B[b]) + bias)`
//! with transpose flags, a shared `B`, and a fused bias + activation epilogue.
//!
//! Four variants share one `Params` uniform: the tiled, register-blocked kernel (the default),
//! a small-M kernel (one workgroup reduces one dot product: matrix-vector products), split-K
//! (partial products over K slices, then an ordered reduction: long K, small outputs), and the
//! naive one-output-per-invocation baseline that benches compare against.

use super::GpuElement;
use super::activation_wgsl;
use super::bias_add::grid_1d;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use crate::tune::{TuneKey, TuneSpec, bucket, shader_hash};
use spore_kernels_cpu::reference::activation::Activation;
use spore_kernels_cpu::reference::matmul::MatmulParams;

/// Mirror of the `Params` uniform shared by every matmul shader.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Number of products.
    pub batch: u32,
    /// Rows of `op(A)` and `C`.
    pub m: u32,
    /// Columns of `op(B)` and `C`.
    pub n: u32,
    /// Contracted dimension.
    pub k: u32,
    /// 1 when `A` is stored `[batch, k, m]`.
    pub trans_a: u32,
    /// 1 when `B` is stored `[b_batch, n, k]`.
    pub trans_b: u32,
    /// Elements between consecutive `B` matrices (0 = shared `B`).
    pub b_stride: u32,
    /// 1 when a bias `[n]` is added.
    pub has_bias: u32,
    /// Activation code (see [`activation_wgsl::code`]).
    pub act: u32,
    /// Leaky-relu slope.
    pub alpha: f32,
    /// Split-K: K elements per split.
    pub k_chunk: u32,
    /// Split-K: number of splits (1 otherwise).
    pub splits: u32,
}

/// Tuning knobs of the tiled kernels (`matmul`, `matmul_splitk`, and `conv2d`): workgroup
/// `wg_x x wg_y` invocations, each computing a 4x4 block, so the tile is
/// `4*wg_y x 4*wg_x`; `bk` is the K depth staged in workgroup memory per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Invocations along N (columns).
    pub wg_x: u32,
    /// Invocations along M (rows).
    pub wg_y: u32,
    /// K-tile depth (a multiple of 4).
    pub bk: u32,
}

impl Tile {
    /// The default: 16 x 16 invocations, a 64 x 64 tile, K steps of 16 (8 KiB of workgroup
    /// memory), valid under the downlevel limits.
    pub const DEFAULT: Tile = Tile {
        wg_x: 16,
        wg_y: 16,
        bk: 16,
    };

    /// Rows of `C` per workgroup.
    pub fn tile_m(&self) -> u32 {
        4 * self.wg_y
    }

    /// Columns of `C` per workgroup.
    pub fn tile_n(&self) -> u32 {
        4 * self.wg_x
    }

    /// Refuses knob sets outside the downlevel limits (256 invocations, 16 KiB of workgroup
    /// memory) or with a K depth that is not a positive multiple of 4.
    pub fn validate(&self) -> Result<()> {
        let inv = self.wg_x * self.wg_y;
        let shared = 16 * self.bk * (self.wg_x + self.wg_y);
        if self.wg_x == 0 || self.wg_y == 0 || inv > 256 {
            return Err(Error::invalid_param(
                "tile",
                format!("{self:?}: 1..=256 invocations per workgroup"),
            ));
        }
        if self.bk == 0 || !self.bk.is_multiple_of(4) || shared > 16 * 1024 {
            return Err(Error::invalid_param(
                "tile",
                format!("{self:?}: bk must be a positive multiple of 4 within 16 KiB"),
            ));
        }
        Ok(())
    }

    pub(crate) fn constants(&self) -> [(&'static str, f64); 3] {
        [
            ("WG_X", f64::from(self.wg_x)),
            ("WG_Y", f64::from(self.wg_y)),
            ("BK", f64::from(self.bk)),
        ]
    }
}

impl Tile {
    /// The autotuner's label, e.g. `tile 16x16 bk16` (parsed back by [`Tile::parse`]).
    pub fn label(&self) -> String {
        format!("tile {}x{} bk{}", self.wg_x, self.wg_y, self.bk)
    }

    /// Parses a [`Tile::label`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Tile> {
        let rest = s.strip_prefix("tile ")?;
        let (dims, bk) = rest.split_once(" bk")?;
        let (x, y) = dims.split_once('x')?;
        Some(Tile {
            wg_x: x.parse().ok()?,
            wg_y: y.parse().ok()?,
            bk: bk.parse().ok()?,
        })
    }

    /// Whether the tile fits `gpu`'s invocation and workgroup-memory limits (the tuner only
    /// offers candidates that do).
    pub fn fits(&self, gpu: &GpuContext) -> bool {
        let a = gpu.adapter();
        self.validate().is_ok()
            && self.wg_x * self.wg_y <= a.max_compute_invocations_per_workgroup
            && 16 * self.bk * (self.wg_x + self.wg_y) <= a.max_compute_workgroup_storage_size
    }
}

/// Legal tile knob sets for the autotuner (all within the downlevel limits).
pub const CANDIDATES: &[Tile] = &[
    Tile::DEFAULT,
    Tile {
        wg_x: 8,
        wg_y: 8,
        bk: 16,
    },
    Tile {
        wg_x: 16,
        wg_y: 8,
        bk: 16,
    },
    Tile {
        wg_x: 8,
        wg_y: 16,
        bk: 32,
    },
    Tile {
        wg_x: 16,
        wg_y: 16,
        bk: 32,
    },
    // Narrow and tall tiles: the autotuner's picks for the few-channel pointwise layers of
    // MobileNetV2 (24 or 32 output channels) were all 8 wide.
    Tile {
        wg_x: 4,
        wg_y: 16,
        bk: 32,
    },
    Tile {
        wg_x: 4,
        wg_y: 32,
        bk: 16,
    },
    Tile {
        wg_x: 8,
        wg_y: 32,
        bk: 16,
    },
    Tile {
        wg_x: 8,
        wg_y: 8,
        bk: 32,
    },
    Tile {
        wg_x: 16,
        wg_y: 8,
        bk: 32,
    },
];

/// Every shader a matmul candidate may run.
pub const TUNE_SHADERS: &[&str] = &[
    "matmul",
    "matmul_small",
    "matmul_splitk",
    "matmul_splitk_reduce",
    "matmul_rows",
    "matmul_naive",
];

/// The autotuner's view of product `p` on `gpu`: key `matmul f32 [batch, m, n, k, trans_a,
/// trans_b, shared_b]` (sizes bucketed) and the [`Variant::candidates`].
pub fn tune_spec(p: &MatmulParams, gpu: &GpuContext) -> TuneSpec {
    TuneSpec {
        key: TuneKey {
            kernel: "matmul".into(),
            dtype: "f32".into(),
            shape: vec![
                bucket(p.batch),
                bucket(p.m),
                bucket(p.n),
                bucket(p.k),
                u32::from(p.transpose_a),
                u32::from(p.transpose_b),
                u32::from(p.b_batch == 1),
            ],
        },
        candidates: Variant::candidates(p, gpu)
            .iter()
            .map(Variant::label)
            .collect(),
        shader_hash: shader_hash(TUNE_SHADERS),
    }
}

/// Which matmul kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Workgroup-memory tiles with 4x4 register blocks (`matmul.wgsl`).
    Tiled(Tile),
    /// One workgroup of `wg` invocations (a power of two <= 256) per output element
    /// (`matmul_small.wgsl`): matrix-vector and tiny-M products.
    Small {
        /// Invocations per workgroup.
        wg: u32,
    },
    /// `splits` slices of K (`matmul_splitk.wgsl`) summed in order by
    /// `matmul_splitk_reduce.wgsl`: long K with few outputs.
    SplitK {
        /// Tile of the partial-product kernel.
        tile: Tile,
        /// Number of K slices (>= 1).
        splits: u32,
    },
    /// One column of a 16-row block per invocation, A reads broadcast across the workgroup,
    /// no workgroup memory or barriers (`matmul_rows.wgsl`): an autotuner candidate. On
    /// lavapipe it measured 0.46 GFLOP/s at 512^3 against the tiles' 0.83 (2.6x naive vs 4.6x),
    /// so no default picks it.
    Rows {
        /// Invocations (columns) per workgroup, a power of two <= 256.
        wg: u32,
    },
    /// One output per invocation (`matmul_naive.wgsl`): the baseline.
    Naive,
}

/// Legal `Variant::Rows` workgroup sizes for the autotuner.
pub const ROWS_CANDIDATES: &[u32] = &[64, 32, 128];

impl Variant {
    /// The autotuner's label: `tile 16x16 bk16`, `small wg64`,
    /// `splitk 16x16 bk16 s4`, `rows wg64` or `naive` (parsed back by [`Variant::parse`]).
    pub fn label(&self) -> String {
        match self {
            Variant::Tiled(t) => t.label(),
            Variant::Small { wg } => format!("small wg{wg}"),
            Variant::SplitK { tile, splits } => {
                format!("split{} s{splits}", tile.label().trim_start_matches("tile"))
            }
            Variant::Rows { wg } => format!("rows wg{wg}"),
            Variant::Naive => "naive".into(),
        }
    }

    /// Parses a [`Variant::label`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Variant> {
        if s == "naive" {
            return Some(Variant::Naive);
        }
        if let Some(wg) = s.strip_prefix("small wg") {
            return Some(Variant::Small {
                wg: wg.parse().ok()?,
            });
        }
        if let Some(wg) = s.strip_prefix("rows wg") {
            return Some(Variant::Rows {
                wg: wg.parse().ok()?,
            });
        }
        if let Some(rest) = s.strip_prefix("split ") {
            let (tile, splits) = rest.rsplit_once(" s")?;
            return Some(Variant::SplitK {
                tile: Tile::parse(&format!("tile {tile}"))?,
                splits: splits.parse().ok()?,
            });
        }
        Tile::parse(s).map(Variant::Tiled)
    }

    /// Every variant the autotuner tries for `p` on `gpu`: the tiles that fit its limits, the
    /// small-M and split-K kernels where the shape suits them, the rows kernel, and the naive
    /// baseline (pruned quickly, but a fair reference point). The default comes first.
    pub fn candidates(p: &MatmulParams, gpu: &GpuContext) -> Vec<Variant> {
        let mut out = vec![Variant::choose(p)];
        let mut push = |v: Variant| {
            if !out.contains(&v) {
                out.push(v);
            }
        };
        for t in CANDIDATES.iter().filter(|t| t.fits(gpu)) {
            push(Variant::Tiled(*t));
        }
        if p.m <= 16 {
            for wg in [32, 64, 128, 256] {
                push(Variant::Small { wg });
            }
        }
        if p.k >= 256 {
            for splits in [2, 4, 8] {
                if p.k >= 64 * splits as usize {
                    push(Variant::SplitK {
                        tile: Tile::DEFAULT,
                        splits,
                    });
                }
            }
        }
        for wg in ROWS_CANDIDATES {
            push(Variant::Rows { wg: *wg });
        }
        push(Variant::Naive);
        out
    }

    /// A sensible variant for `p` without tuning data: small-M for a handful of rows, split-K
    /// when K dwarfs an output that cannot fill the GPU, the default tile otherwise.
    pub fn choose(p: &MatmulParams) -> Variant {
        let outputs = p.batch * p.m * p.n;
        if p.m <= 2 {
            Variant::Small { wg: 64 }
        } else if p.k >= 1024 && outputs <= 128 * 128 && p.k >= 4 * p.m.max(p.n) {
            let splits = (p.k / 256).clamp(2, 16) as u32;
            Variant::SplitK {
                tile: Tile::DEFAULT,
                splits,
            }
        } else {
            Variant::Tiled(Tile::DEFAULT)
        }
    }
}

/// One matmul: shape and layout, fused activation, and the kernel to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matmul {
    /// Shape and layout (validated like the reference's).
    pub p: MatmulParams,
    /// Activation applied after the bias (`None` = identity).
    pub act: Option<Activation>,
    /// Kernel variant.
    pub variant: Variant,
}

impl Matmul {
    /// The product `p` with no activation and the [`Variant::choose`] kernel.
    pub fn new(p: MatmulParams) -> Self {
        Matmul {
            p,
            act: None,
            variant: Variant::choose(&p),
        }
    }

    /// Element counts of `(A, B, C)`, after validating the shape, the variant's knobs, and
    /// that every index fits the shaders' u32 arithmetic.
    pub fn validate(&self) -> Result<(usize, usize, usize)> {
        let (na, nb, nc) = self.p.validate("matmul")?;
        for (what, len) in [("a", na), ("b", nb), ("c", nc)] {
            if u32::try_from(len).is_err() {
                return Err(Error::invalid_param(what, "more than 2^32 elements"));
            }
        }
        if self.p.batch > 65535 {
            return Err(Error::invalid_param("batch", "at most 65535 on the GPU"));
        }
        match self.variant {
            Variant::Tiled(t) => t.validate()?,
            Variant::Small { wg } => {
                if !wg.is_power_of_two() || wg > 256 {
                    return Err(Error::invalid_param(
                        "wg",
                        format!("{wg}: a power of two up to 256"),
                    ));
                }
            }
            Variant::SplitK { tile, splits } => {
                tile.validate()?;
                let partial = (splits as usize).checked_mul(nc);
                if splits == 0 || partial.is_none_or(|v| u32::try_from(v).is_err()) {
                    return Err(Error::invalid_param(
                        "splits",
                        format!("{splits}: at least 1, and splits * outputs below 2^32"),
                    ));
                }
                if self.p.batch * splits as usize > 65535 {
                    return Err(Error::invalid_param("splits", "batch * splits above 65535"));
                }
            }
            Variant::Rows { wg } => {
                if !wg.is_power_of_two() || wg > 256 {
                    return Err(Error::invalid_param(
                        "wg",
                        format!("{wg}: a power of two up to 256"),
                    ));
                }
            }
            Variant::Naive => {}
        }
        Ok((na, nb, nc))
    }

    fn params(&self, has_bias: bool) -> Result<Params> {
        let p = &self.p;
        let (act, alpha) = activation_wgsl::encode(self.act)?;
        let (k_chunk, splits) = match self.variant {
            Variant::SplitK { tile, splits } => {
                // Whole K tiles per split, so a split never stages another split's depth.
                let chunk = (p.k as u32).div_ceil(splits).next_multiple_of(tile.bk);
                (chunk, splits)
            }
            _ => (p.k as u32, 1),
        };
        Ok(Params {
            batch: p.batch as u32,
            m: p.m as u32,
            n: p.n as u32,
            k: p.k as u32,
            trans_a: u32::from(p.transpose_a),
            trans_b: u32::from(p.transpose_b),
            b_stride: if p.b_batch == 1 {
                0
            } else {
                (p.k * p.n) as u32
            },
            has_bias: u32::from(has_bias),
            act,
            alpha,
            k_chunk,
            splits,
        })
    }
}

/// Fails unless `buf` holds at least `elems` elements of `T`.
pub(crate) fn check_buffer<T>(what: &str, buf: &wgpu::Buffer, elems: usize) -> Result<()> {
    let need = (elems * std::mem::size_of::<T>()) as u64;
    if buf.size() < need {
        return Err(Error::ShapeMismatch {
            shapes: vec![
                vec![elems],
                vec![buf.size() as usize / std::mem::size_of::<T>()],
            ],
            reason: format!("{what}: buffer of {} bytes, {need} needed", buf.size()),
        });
    }
    Ok(())
}

/// Records `mm` on buffers already on the GPU: `a` `[batch*m*k]`, `b` `[b_batch*k*n]`,
/// optional `bias` `[n]`, output `c` `[batch*m*n]` (elements of `T`). Split-K allocates its
/// f32 scratch buffer here. Nothing runs until the recorder is submitted.
#[allow(clippy::too_many_arguments)]
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    c: &wgpu::Buffer,
    mm: &Matmul,
) -> Result<()> {
    let (na, nb, nc) = mm.validate()?;
    check_buffer::<T>("a", a, na)?;
    check_buffer::<T>("b", b, nb)?;
    check_buffer::<T>("c", c, nc)?;
    if let Some(bb) = bias {
        check_buffer::<T>("bias", bb, mm.p.n)?;
    }
    let params = mm.params(bias.is_some())?;
    let dummy;
    let bias_buf = match bias {
        Some(bb) => bb,
        None => {
            dummy = gpu.upload("no_bias", &[0u8; 4])?;
            &dummy
        }
    };
    let pb = gpu.uniform("matmul_params", &params)?;
    let max = gpu.adapter().max_compute_workgroups_per_dimension;
    let (m, n, batch) = (params.m, params.n, params.batch);
    let too_big = |g: [u32; 3]| -> Result<[u32; 3]> {
        if g.iter().any(|&d| d > max) {
            return Err(Error::invalid_param(
                "shape",
                format!("needs {g:?} workgroups, the adapter allows {max} per dimension"),
            ));
        }
        Ok(g)
    };
    match mm.variant {
        Variant::Tiled(t) => {
            let pipe = gpu.pipeline("matmul", T::WGSL, &t.constants())?;
            let grid = too_big([n.div_ceil(t.tile_n()), m.div_ceil(t.tile_m()), batch])?;
            rec.dispatch(&pipe, &[a, b, bias_buf, c, &pb], grid)
        }
        Variant::Naive => {
            let (wx, wy) = (16u32, 16u32);
            let pipe = gpu.pipeline(
                "matmul_naive",
                T::WGSL,
                &[("WG_X", f64::from(wx)), ("WG_Y", f64::from(wy))],
            )?;
            let grid = too_big([n.div_ceil(wx), m.div_ceil(wy), batch])?;
            rec.dispatch(&pipe, &[a, b, bias_buf, c, &pb], grid)
        }
        Variant::Rows { wg } => {
            let pipe = gpu.pipeline("matmul_rows", T::WGSL, &[("WG", f64::from(wg))])?;
            let grid = too_big([n.div_ceil(wg), m.div_ceil(16), batch])?;
            rec.dispatch(&pipe, &[a, b, bias_buf, c, &pb], grid)
        }
        Variant::Small { wg } => {
            let pipe = gpu.pipeline("matmul_small", T::WGSL, &[("WG", f64::from(wg))])?;
            // Workgroups stride over columns beyond the x limit.
            let grid = too_big([n.min(max), m, batch])?;
            rec.dispatch(&pipe, &[a, b, bias_buf, c, &pb], grid)
        }
        Variant::SplitK { tile, splits } => {
            let partial = gpu.poisoned("splitk_partial", (splits as usize * nc * 4) as u64)?;
            let pipe = gpu.pipeline("matmul_splitk", T::WGSL, &tile.constants())?;
            let grid = too_big([
                n.div_ceil(tile.tile_n()),
                m.div_ceil(tile.tile_m()),
                batch * splits,
            ])?;
            rec.dispatch(&pipe, &[a, b, &partial, &pb], grid)?;
            let wg = 256;
            let reduce = gpu.pipeline("matmul_splitk_reduce", T::WGSL, &[("WG", f64::from(wg))])?;
            rec.dispatch(
                &reduce,
                &[&partial, bias_buf, c, &pb],
                grid_1d(nc as u32, wg, max),
            )
        }
    }
}

/// Runs `mm` on host slices: uploads, poisons the output, records, submits, reads back.
pub fn run<T: GpuElement>(
    gpu: &GpuContext,
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    mm: &Matmul,
) -> Result<Vec<T>> {
    let (na, nb, nc) = mm.validate()?;
    let mismatch = |what: &str, want: usize, got: usize| Error::ShapeMismatch {
        shapes: vec![vec![want], vec![got]],
        reason: format!("matmul: `{what}` has {got} elements, the shape needs {want}"),
    };
    if a.len() != na {
        return Err(mismatch("a", na, a.len()));
    }
    if b.len() != nb {
        return Err(mismatch("b", nb, b.len()));
    }
    if let Some(bb) = bias
        && bb.len() != mm.p.n
    {
        return Err(mismatch("bias", mm.p.n, bb.len()));
    }
    let ab = gpu.upload("a", bytemuck::cast_slice(a))?;
    let bb = gpu.upload("b", bytemuck::cast_slice(b))?;
    let biasb = bias
        .map(|v| gpu.upload("bias", bytemuck::cast_slice(v)))
        .transpose()?;
    let bytes = (nc * std::mem::size_of::<T>()) as u64;
    let cb = gpu.poisoned("c", bytes)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &ab, &bb, biasb.as_ref(), &cb, mm)?;
    rec.submit()?;
    let out = gpu.read_back(&cb, bytes)?;
    Ok(bytemuck::pod_collect_to_vec(&out[..bytes as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_legal_and_distinct() {
        for (i, t) in CANDIDATES.iter().enumerate() {
            t.validate().unwrap();
            assert!(!CANDIDATES[..i].contains(t), "{t:?} twice");
        }
        assert!(
            Tile {
                bk: 6,
                ..Tile::DEFAULT
            }
            .validate()
            .is_err()
        );
        assert!(
            Tile {
                wg_x: 32,
                ..Tile::DEFAULT
            }
            .validate()
            .is_err()
        );
        assert!(
            Tile {
                bk: 64,
                ..Tile::DEFAULT
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn choose_picks_by_shape() {
        let v = |m, n, k| Variant::choose(&MatmulParams::new(m, n, k));
        assert!(matches!(v(1, 1000, 1000), Variant::Small { .. }));
        assert!(matches!(v(16, 16, 4096), Variant::SplitK { .. }));
        assert!(matches!(v(256, 256, 256), Variant::Tiled(_)));
    }
}
