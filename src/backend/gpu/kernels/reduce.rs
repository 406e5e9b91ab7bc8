//! Sum / mean reductions on the GPU (`shaders/reduce.wgsl`) with the reference's keepdims
//! semantics over any axis set. Each maximal run of neighbouring reduced axes is one pass over
//! a `[outer, red, inner]` view (last run first), so a last-axis reduction is one row pass
//! (a workgroup per row), a leading-axes reduction one column pass (an invocation per kept
//! element, coalesced), and e.g. axes `[0, 2]` of a rank-3 tensor two passes through a scratch
//! buffer. Means scale each pass by `1 / red`, which multiplies out to `1 / count`.

use super::GpuElement;
use super::unary::{check_buffer, check_wg, grid, grid_groups, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use spore_kernels_cpu::reference::reduce::reduced_shape;

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Product of the axes before the reduced run.
    pub outer: u32,
    /// Product of the reduced run.
    pub red: u32,
    /// Product of the axes after the reduced run.
    pub inner: u32,
    /// 0 = rows (workgroup per output, `inner == 1`), 1 = columns (invocation per output).
    pub mode: u32,
    /// 1 for a sum, `1 / red` for a mean.
    pub scale: f32,
    /// Uniform structs are padded to 16 bytes.
    pub _pad: [u32; 3],
}

/// Tuning knobs (`WG` override, a power of two <= 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup.
    pub wg: u32,
    /// Smallest reduced length that gets a workgroup per row (shorter rows loop in one
    /// invocation each instead: a barrier tree over 3 values costs more than it saves).
    pub row_min: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            wg: 128,
            row_min: 64,
        }
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[
    Knobs {
        wg: 128,
        row_min: 64,
    },
    Knobs { wg: 64, row_min: 1 },
    Knobs {
        wg: 256,
        row_min: 256,
    },
];

/// One reduction of `x` (shape `shape`) over `axes` (negative = from the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Reduce {
    /// Input shape.
    pub shape: Vec<usize>,
    /// Reduced axes (NumPy style; duplicates and out-of-range axes are errors).
    pub axes: Vec<i64>,
    /// Mean instead of sum.
    pub mean: bool,
    /// Tuning knobs.
    pub knobs: Knobs,
}

impl Reduce {
    /// The keepdims output shape (reduced axes become 1).
    pub fn out_shape(&self) -> Result<Vec<usize>> {
        Ok(reduced_shape(&self.shape, &self.axes)?)
    }

    /// The passes, in order: one `Params` per maximal run of reduced axes (size-1 axes
    /// ignored), last run first. Empty when nothing is reduced.
    pub fn passes(&self) -> Result<Vec<Params>> {
        check_wg(self.knobs.wg)?;
        let out = self.out_shape()?;
        to_u32("element count", self.shape.iter().product())?;
        // (size, reduced) with size-1 axes dropped and equal neighbours merged.
        let mut runs: Vec<(usize, bool)> = Vec::new();
        for (&d, &o) in self.shape.iter().zip(&out) {
            if d == 1 {
                continue;
            }
            let reduced = o == 1;
            match runs.last_mut() {
                Some(last) if last.1 == reduced => last.0 *= d,
                _ => runs.push((d, reduced)),
            }
        }
        let mut passes = Vec::new();
        for k in (0..runs.len()).rev() {
            if !runs[k].1 {
                continue;
            }
            let outer: usize = runs[..k].iter().map(|r| r.0).product();
            let inner: usize = runs[k + 1..].iter().map(|r| r.0).product();
            let red = runs[k].0;
            let rows = inner == 1 && red >= self.knobs.row_min as usize;
            passes.push(Params {
                outer: to_u32("outer", outer)?,
                red: to_u32("red", red)?,
                inner: to_u32("inner", inner)?,
                mode: if rows { 0 } else { 1 },
                scale: if self.mean { 1.0 / red as f32 } else { 1.0 },
                _pad: [0; 3],
            });
            runs[k].0 = 1;
        }
        Ok(passes)
    }
}

/// Records the reduction of `x` into `y` (keepdims shape [`Reduce::out_shape`]); multi-run
/// axis sets go through scratch buffers created here.
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Reduce,
) -> Result<()> {
    let passes = p.passes()?;
    let n_in: usize = p.shape.iter().product();
    let n_out: usize = p.out_shape()?.iter().product();
    check_buffer::<T>("x", x, n_in)?;
    check_buffer::<T>("y", y, n_out)?;
    if passes.is_empty() {
        // Nothing reduced: a copy (4-byte multiple, as copies require; both buffers are
        // padded to it).
        let bytes = ((n_in * std::mem::size_of::<T>()) as u64).next_multiple_of(4);
        return rec.copy(x, 0, y, 0, bytes.min(x.size()).min(y.size()));
    }
    let pipeline = gpu.pipeline("reduce", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let mut scratch: Option<wgpu::Buffer> = None;
    for (i, pass) in passes.iter().enumerate() {
        let outputs = pass.outer as usize * pass.inner as usize;
        let last = i + 1 == passes.len();
        let dst = if last {
            None
        } else {
            Some(output::<T>(gpu, "reduce_scratch", outputs)?)
        };
        let src = scratch.as_ref().unwrap_or(x);
        let dst_ref = dst.as_ref().unwrap_or(y);
        let pb = gpu.uniform("reduce_params", pass)?;
        let groups = if pass.mode == 0 {
            grid_groups(gpu, pass.outer)
        } else {
            grid(gpu, to_u32("outputs", outputs)?, p.knobs.wg)
        };
        rec.dispatch(&pipeline, &[src, dst_ref, &pb], groups)?;
        scratch = dst;
    }
    Ok(())
}

/// Uploads `x`, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, x: &[T], p: &Reduce) -> Result<Vec<T>> {
    let out = p.out_shape()?;
    let n_in: usize = p.shape.iter().product();
    if x.len() != n_in {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![x.len()], p.shape.clone()],
            reason: "reduce: x length differs from the shape's element count".into(),
        });
    }
    let n_out: usize = out.iter().product();
    let xb = upload(gpu, "x", x)?;
    let yb = output::<T>(gpu, "y", n_out)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &xb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, n_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(shape: &[usize], axes: &[i64]) -> Vec<(u32, u32, u32, u32)> {
        Reduce {
            shape: shape.to_vec(),
            axes: axes.to_vec(),
            mean: false,
            knobs: Knobs::default(),
        }
        .passes()
        .unwrap()
        .iter()
        .map(|p| (p.outer, p.red, p.inner, p.mode))
        .collect()
    }

    #[test]
    fn axis_runs_become_passes() {
        assert_eq!(passes(&[3, 100], &[-1]), vec![(3, 100, 1, 0)]);
        assert_eq!(passes(&[3, 7], &[1]), vec![(3, 7, 1, 1)]);
        assert_eq!(passes(&[2, 3, 4], &[0, 1]), vec![(1, 6, 4, 1)]);
        assert_eq!(
            passes(&[2, 3, 4], &[0, 2]),
            vec![(6, 4, 1, 1), (1, 2, 3, 1)]
        );
        assert_eq!(passes(&[2, 1, 4], &[1]), vec![]);
        assert!(
            Reduce {
                shape: vec![2, 3],
                axes: vec![2],
                mean: true,
                knobs: Knobs::default()
            }
            .passes()
            .is_err()
        );
    }
}
