//! conv2d gradients on the GPU (`shaders/conv2d_grad_*.wgsl`): NHWC activations, OHWI
//! weights, stride, asymmetric padding, dilation, groups.
//!
//! * Input gradient: a transposed implicit GEMM on the conv2d / matmul tile core, dispatched
//!   per stride phase so each dx pixel only visits the taps that can reach it
//!   (`conv2d_grad_input`); `conv2d_grad_input_naive` is the one-output-per-invocation baseline.
//! * Weight gradient: a GEMM with K = n * out_h * out_w, split over K into f32 partials
//!   (`conv2d_grad_weight`) summed in split order by `matmul_splitk_reduce`, so results are
//!   bit-identical run to run; `conv2d_grad_weight_naive` is the baseline.
//! * conv_transpose2d's weight gradient is conv2d's with `x` and `dy` swapped (the transposed
//!   convolution's weight `[c_in, kh, kw, c_out / groups]` is the OHWI weight of its matching
//!   conv), so it reuses the weight-gradient kernels.
//!
//! The bias gradient is not here: the autograd rules emit a `reduce_sum` of `dy`, which has
//! its own GPU kernel.

use super::GpuElement;
use super::activation_wgsl;
use super::bias_add::grid_1d;
use super::conv2d::u32_of;
use super::matmul::{self, Tile, check_buffer};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::conv_transpose2d::ConvTranspose2dParams;
use spore_kernels_cpu::reference::conv2d::Conv2dParams;

/// Mirror of the `GradParams` uniform of the four conv2d gradient shaders.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GradParams {
    /// Batch.
    pub n: u32,
    /// Input height.
    pub h: u32,
    /// Input width.
    pub w: u32,
    /// Input channels.
    pub c_in: u32,
    /// Output channels.
    pub c_out: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
    /// Vertical dilation.
    pub dilation_h: u32,
    /// Horizontal dilation.
    pub dilation_w: u32,
    /// Zero rows above.
    pub pad_top: u32,
    /// Zero columns on the left.
    pub pad_left: u32,
    /// Output height.
    pub out_h: u32,
    /// Output width.
    pub out_w: u32,
    /// Channel groups.
    pub groups: u32,
    /// Input channels per group.
    pub cig: u32,
    /// Output channels per group.
    pub cog: u32,
    /// Weight row length `kh * kw * cig`.
    pub kdim: u32,
    /// dy pixels `n * out_h * out_w` (the weight gradient's K).
    pub rows: u32,
    /// Weight gradient: K slices.
    pub splits: u32,
    /// Weight gradient: K elements per slice (a multiple of the tile's `bk`).
    pub k_chunk: u32,
    /// Pads the struct to 16 bytes.
    pub _pad0: u32,
    /// Pads the struct to 16 bytes.
    pub _pad1: u32,
}

/// Which input-gradient kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputVariant {
    /// Transposed implicit GEMM, per stride phase, with the matmul tile knobs.
    Tiled(Tile),
    /// One dx element per invocation: the baseline.
    Naive,
}

/// Legal input-gradient tile knob sets for the autotuner: the matmul ones whose tiles leave
/// room for the row table under 16 KiB of workgroup memory ([`check_input_tile`]).
pub const INPUT_CANDIDATES: &[Tile] = &[
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
];

/// Downlevel workgroup-memory limit every kernel stays within.
const SHARED_LIMIT: u32 = 16 * 1024;

/// Refuses a tile whose matmul staging plus `table` bytes exceed 16 KiB.
fn check_shared(t: &Tile, table: u32) -> Result<()> {
    t.validate()?;
    let shared = 16 * t.bk * (t.wg_x + t.wg_y) + table;
    if shared > SHARED_LIMIT {
        return Err(Error::invalid_param(
            "tile",
            format!("{t:?}: {shared} bytes of workgroup memory, at most {SHARED_LIMIT}"),
        ));
    }
    Ok(())
}

/// Checks an input-gradient tile: the matmul limits plus its row table (16 bytes per row).
pub fn check_input_tile(t: &Tile) -> Result<()> {
    check_shared(t, 16 * 4 * t.wg_y)
}

/// Checks a weight-gradient tile: the matmul limits plus its column table (16 bytes per
/// column) and double-buffered K table (16 bytes per K element, twice).
pub fn check_weight_tile(t: &Tile) -> Result<()> {
    check_shared(t, 16 * (4 * t.wg_x + 2 * t.bk))
}

/// Knobs of the split-K weight-gradient kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightKnobs {
    /// Tile of the partial-product pass (rows = output channels, columns = weight columns).
    pub tile: Tile,
    /// K slices; 0 picks a count from the shape ([`default_splits`]).
    pub splits: u32,
}

impl Default for WeightKnobs {
    fn default() -> Self {
        WeightKnobs {
            tile: Tile::DEFAULT,
            splits: 0,
        }
    }
}

/// Legal weight-gradient knob sets for the autotuner.
pub const WEIGHT_CANDIDATES: &[WeightKnobs] = &[
    WeightKnobs {
        tile: Tile::DEFAULT,
        splits: 0,
    },
    WeightKnobs {
        tile: Tile {
            wg_x: 16,
            wg_y: 8,
            bk: 16,
        },
        splits: 0,
    },
    WeightKnobs {
        tile: Tile {
            wg_x: 8,
            wg_y: 8,
            bk: 16,
        },
        splits: 4,
    },
    WeightKnobs {
        tile: Tile::DEFAULT,
        splits: 16,
    },
    WeightKnobs {
        tile: Tile {
            wg_x: 8,
            wg_y: 16,
            bk: 32,
        },
        splits: 1,
    },
];

/// Which weight-gradient kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightVariant {
    /// Split-K GEMM partials + ordered reduce.
    SplitK(WeightKnobs),
    /// One dW element per invocation: the baseline.
    Naive,
}

/// K slices for a weight gradient with `k` rows and an output grid of `tiles` workgroups when
/// the knobs leave it open: enough workgroups to fill a GPU (about 64), but at least 256 rows
/// per slice so the partials stay small next to the work.
pub fn default_splits(k: usize, tiles: usize) -> u32 {
    let by_work = (k / 256).max(1);
    let by_fill = 64usize.div_ceil(tiles.max(1));
    by_work.min(by_fill).clamp(1, 32) as u32
}

/// The uniform for convolution `p` (splits / k_chunk zero: the weight kernel fills them).
pub fn grad_params(p: &Conv2dParams) -> Result<GradParams> {
    p.validate()?;
    let (out_h, out_w) = (p.out_h()?, p.out_w()?);
    let cig = p.c_in / p.groups;
    let u = u32_of;
    for (what, len) in [("x", p.x_len()?), ("w", p.w_len()?), ("y", p.y_len()?)] {
        // The tables hold pixel bases and signed coordinates as i32.
        if len > i32::MAX as usize {
            return Err(Error::invalid_param(what, "above 2^31 elements on the GPU"));
        }
    }
    // The shaders form padded coordinates (ih + pad, oh * stride + k * dilation) in u32.
    let span_h = (out_h * p.stride_h).saturating_add(p.kh * p.dilation_h) + p.padding.top;
    let span_w = (out_w * p.stride_w).saturating_add(p.kw * p.dilation_w) + p.padding.left;
    u("window", span_h.max(span_w).max(p.h + p.padding.top))?;
    u("window", p.w + p.padding.left)?;
    // The phase dispatch puts groups * stride_h * stride_w in one grid dimension.
    u("stride", p.groups * p.stride_h * p.stride_w)?;
    Ok(GradParams {
        n: u("n", p.n)?,
        h: u("h", p.h)?,
        w: u("w", p.w)?,
        c_in: u("c_in", p.c_in)?,
        c_out: u("c_out", p.c_out)?,
        kh: u("kh", p.kh)?,
        kw: u("kw", p.kw)?,
        stride_h: u("stride_h", p.stride_h)?,
        stride_w: u("stride_w", p.stride_w)?,
        dilation_h: u("dilation_h", p.dilation_h)?,
        dilation_w: u("dilation_w", p.dilation_w)?,
        pad_top: u("padding", p.padding.top)?,
        pad_left: u("padding", p.padding.left)?,
        out_h: u("out_h", out_h)?,
        out_w: u("out_w", out_w)?,
        groups: u("groups", p.groups)?,
        cig: u("c_in", cig)?,
        cog: u("c_out", p.c_out / p.groups)?,
        kdim: u("w", p.kh * p.kw * cig)?,
        rows: u("y", p.n * out_h * out_w)?,
        splits: 0,
        k_chunk: 0,
        _pad0: 0,
        _pad1: 0,
    })
}

/// Fails when a grid exceeds the adapter's per-dimension limit.
fn check_grid(gpu: &GpuContext, grid: [u32; 3]) -> Result<[u32; 3]> {
    let max = gpu.adapter().max_compute_workgroups_per_dimension;
    if grid.iter().any(|&d| d > max) {
        return Err(Error::invalid_param(
            "shape",
            format!("needs {grid:?} workgroups, the adapter allows {max} per dimension"),
        ));
    }
    Ok(grid)
}

/// Records `dx` (NHWC `[n, h, w, c_in]`) of convolution `p` from `dy` (NHWC) and `w` (OHWI)
/// on buffers already on the GPU.
pub fn record_input<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    dx: &wgpu::Buffer,
    p: &Conv2dParams,
    variant: InputVariant,
) -> Result<()> {
    let params = grad_params(p)?;
    check_buffer::<T>("dy", dy, p.y_len()?)?;
    check_buffer::<T>("w", w, p.w_len()?)?;
    let nx = p.x_len()?;
    check_buffer::<T>("dx", dx, nx)?;
    let pb = gpu.uniform("conv2d_grad_input_params", &params)?;
    match variant {
        InputVariant::Tiled(t) => {
            check_input_tile(&t)?;
            // The largest stride phase holds ceil(h / sh) x ceil(w / sw) pixels per image.
            let phase_rows = p.n * p.h.div_ceil(p.stride_h) * p.w.div_ceil(p.stride_w);
            let grid = check_grid(
                gpu,
                [
                    params.cig.div_ceil(t.tile_n()),
                    u32_of("dx", phase_rows)?.div_ceil(t.tile_m()),
                    params.groups * params.stride_h * params.stride_w,
                ],
            )?;
            let pipe = gpu.pipeline("conv2d_grad_input", T::WGSL, &t.constants())?;
            rec.dispatch(&pipe, &[dy, w, dx, &pb], grid)
        }
        InputVariant::Naive => {
            let wg = 256;
            let max = gpu.adapter().max_compute_workgroups_per_dimension;
            let pipe =
                gpu.pipeline("conv2d_grad_input_naive", T::WGSL, &[("WG", f64::from(wg))])?;
            rec.dispatch(&pipe, &[dy, w, dx, &pb], grid_1d(nx as u32, wg, max))
        }
    }
}

/// Records `dw` (OHWI `[c_out, kh, kw, c_in / groups]`) of convolution `p` from `x` and `dy`
/// (NHWC) on buffers already on the GPU. Split-K allocates its f32 scratch buffer here.
pub fn record_weight<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    p: &Conv2dParams,
    variant: WeightVariant,
) -> Result<()> {
    let mut params = grad_params(p)?;
    check_buffer::<T>("x", x, p.x_len()?)?;
    check_buffer::<T>("dy", dy, p.y_len()?)?;
    let nw = p.w_len()?;
    check_buffer::<T>("dw", dw, nw)?;
    let max = gpu.adapter().max_compute_workgroups_per_dimension;
    match variant {
        WeightVariant::SplitK(knobs) => {
            let t = knobs.tile;
            check_weight_tile(&t)?;
            let (gx, gy) = (
                params.kdim.div_ceil(t.tile_n()),
                params.cog.div_ceil(t.tile_m()),
            );
            let tiles = (gx * gy * params.groups) as usize;
            let rows = params.rows as usize;
            let splits = match knobs.splits {
                0 => default_splits(rows, tiles),
                s => s,
            };
            // Whole K tiles per slice, so a slice never stages another slice's depth; the
            // slice count then shrinks to the slices that hold rows.
            let k_chunk = params.rows.div_ceil(splits).next_multiple_of(t.bk);
            let splits = params.rows.div_ceil(k_chunk).max(1);
            params.splits = splits;
            params.k_chunk = k_chunk;
            let partial_len = (splits as usize)
                .checked_mul(nw)
                .filter(|&v| u32::try_from(v).is_ok());
            let Some(partial_len) = partial_len else {
                return Err(Error::invalid_param(
                    "splits",
                    format!("{splits} slices of {nw} weights exceed 2^32"),
                ));
            };
            let grid = check_grid(gpu, [gx, gy, splits * params.groups])?;
            let pb = gpu.uniform("conv2d_grad_weight_params", &params)?;
            let partial = gpu.poisoned("conv2d_grad_weight_partial", (partial_len * 4) as u64)?;
            let pipe = gpu.pipeline("conv2d_grad_weight", T::WGSL, &t.constants())?;
            rec.dispatch(&pipe, &[x, dy, &partial, &pb], grid)?;
            record_reduce::<T>(gpu, rec, &partial, dw, (params.c_out, params.kdim, splits))
        }
        WeightVariant::Naive => {
            let pb = gpu.uniform("conv2d_grad_weight_params", &params)?;
            let wg = 256;
            let pipe = gpu.pipeline(
                "conv2d_grad_weight_naive",
                T::WGSL,
                &[("WG", f64::from(wg))],
            )?;
            rec.dispatch(&pipe, &[x, dy, dw, &pb], grid_1d(nw as u32, wg, max))
        }
    }
}

/// Records the ordered sum of `splits` f32 partials `[splits, m, n]` into `out` `[m, n]` with
/// `matmul_splitk_reduce` (no bias, no activation).
pub(crate) fn record_reduce<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    partial: &wgpu::Buffer,
    out: &wgpu::Buffer,
    (m, n, splits): (u32, u32, u32),
) -> Result<()> {
    let (act, alpha) = activation_wgsl::encode(None)?;
    let params = matmul::Params {
        batch: 1,
        m,
        n,
        k: 0,
        trans_a: 0,
        trans_b: 0,
        b_stride: 0,
        has_bias: 0,
        act,
        alpha,
        k_chunk: 0,
        splits,
    };
    let pb = gpu.uniform("splitk_reduce_params", &params)?;
    let no_bias = gpu.upload("no_bias", &[0u8; 4])?;
    let wg = 256;
    let max = gpu.adapter().max_compute_workgroups_per_dimension;
    let reduce = gpu.pipeline("matmul_splitk_reduce", T::WGSL, &[("WG", f64::from(wg))])?;
    rec.dispatch(
        &reduce,
        &[partial, &no_bias, out, &pb],
        grid_1d(m * n, wg, max),
    )
}

/// Records the weight gradient of transposed convolution `p` (`dw` `[c_in, kh, kw,
/// c_out / groups]`) from its input `x` and output gradient `dy`: conv2d's weight gradient of
/// the matching convolution with the roles of `x` and `dy` swapped.
pub fn record_transpose_weight<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    p: &ConvTranspose2dParams,
    variant: WeightVariant,
) -> Result<()> {
    let conv = p.as_conv2d()?;
    record_weight::<T>(gpu, rec, dy, x, dw, &conv, variant)
}

/// Uploads two inputs of the expected lengths, runs `record` into a poisoned output of
/// `n_out` elements, reads it back.
fn run_two<T: GpuElement>(
    gpu: &GpuContext,
    kernel: &str,
    (a, na): (&[T], usize),
    (b, nb): (&[T], usize),
    n_out: usize,
    record: impl FnOnce(&mut Recorder<'_>, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer) -> Result<()>,
) -> Result<Vec<T>> {
    for (what, got, want) in [("first input", a.len(), na), ("second input", b.len(), nb)] {
        if got != want {
            return Err(Error::ShapeMismatch {
                shapes: vec![vec![want], vec![got]],
                reason: format!("{kernel}: {what} has {got} elements, the shape needs {want}"),
            });
        }
    }
    let ab = gpu.upload("a", bytemuck::cast_slice(a))?;
    let bb = gpu.upload("b", bytemuck::cast_slice(b))?;
    let bytes = (n_out * std::mem::size_of::<T>()) as u64;
    let out = gpu.poisoned("out", bytes)?;
    let mut rec = gpu.recorder();
    record(&mut rec, &ab, &bb, &out)?;
    rec.submit()?;
    let v = gpu.read_back(&out, bytes)?;
    Ok(bytemuck::pod_collect_to_vec(&v[..bytes as usize]))
}

/// Runs [`record_input`] on host slices: `dy` NHWC, `w` OHWI; returns `dx`.
pub fn run_input<T: GpuElement>(
    gpu: &GpuContext,
    dy: &[T],
    w: &[T],
    p: &Conv2dParams,
    variant: InputVariant,
) -> Result<Vec<T>> {
    p.validate()?;
    run_two(
        gpu,
        "conv2d_grad_input",
        (dy, p.y_len()?),
        (w, p.w_len()?),
        p.x_len()?,
        |rec, a, b, out| record_input::<T>(gpu, rec, a, b, out, p, variant),
    )
}

/// Runs [`record_weight`] on host slices: `x`, `dy` NHWC; returns `dw` OHWI.
pub fn run_weight<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    dy: &[T],
    p: &Conv2dParams,
    variant: WeightVariant,
) -> Result<Vec<T>> {
    p.validate()?;
    run_two(
        gpu,
        "conv2d_grad_weight",
        (x, p.x_len()?),
        (dy, p.y_len()?),
        p.w_len()?,
        |rec, a, b, out| record_weight::<T>(gpu, rec, a, b, out, p, variant),
    )
}

/// Runs [`record_transpose_weight`] on host slices: `x`, `dy` NHWC; returns `dw`
/// `[c_in, kh, kw, c_out / groups]`.
pub fn run_transpose_weight<T: GpuElement>(
    gpu: &GpuContext,
    x: &[T],
    dy: &[T],
    p: &ConvTranspose2dParams,
    variant: WeightVariant,
) -> Result<Vec<T>> {
    p.validate()?;
    run_two(
        gpu,
        "conv_transpose2d_grad_weight",
        (x, p.x_len()?),
        (dy, p.y_len()?),
        p.w_len()?,
        |rec, a, b, out| record_transpose_weight::<T>(gpu, rec, a, b, out, p, variant),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_legal_and_distinct() {
        for (i, k) in WEIGHT_CANDIDATES.iter().enumerate() {
            check_weight_tile(&k.tile).unwrap();
            assert!(!WEIGHT_CANDIDATES[..i].contains(k), "{k:?} twice");
        }
        for (i, t) in INPUT_CANDIDATES.iter().enumerate() {
            check_input_tile(t).unwrap();
            assert!(!INPUT_CANDIDATES[..i].contains(t), "{t:?} twice");
        }
        // The largest matmul tile leaves no room for the tables.
        let full = Tile {
            wg_x: 16,
            wg_y: 16,
            bk: 32,
        };
        assert!(check_input_tile(&full).is_err());
        assert!(check_weight_tile(&full).is_err());
    }

    #[test]
    fn default_splits_fill_the_gpu_without_tiny_slices() {
        assert_eq!(default_splits(100, 1), 1);
        assert_eq!(default_splits(3136, 9), 8);
        assert_eq!(default_splits(1 << 20, 1), 32);
        assert_eq!(default_splits(1 << 20, 1000), 1);
    }
}
