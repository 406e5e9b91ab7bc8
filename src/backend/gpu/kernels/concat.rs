//! Concatenation and plain copies on the GPU (`shaders/concat.wgsl`): each input of a
//! concatenation is copied into its slot of the output, as one buffer-to-buffer copy when
//! its slot is contiguous (the outermost axis), else one dispatch of the strided copy
//! kernel. Everything moves 32-bit words, so any dtype whose runs are whole words works
//! (f32 and i32 always) and bits are never reinterpreted as floats.

use super::bias_add::grid_1d;
use super::unary::{check_wg, to_u32};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};

/// Mirror of the shader's `Params` uniform (all in 32-bit words).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Rows of the `[outer, ...]` view.
    pub outer: u32,
    /// Words per row of the input.
    pub chunk: u32,
    /// Words per row of the output.
    pub y_row: u32,
    /// Word offset of this input inside an output row.
    pub y_off: u32,
}

/// Invocations per workgroup.
const WG: u32 = 256;

/// One input's part of a concatenation, in bytes: the output is `[outer, y_row_bytes]`,
/// the input `[outer, chunk_bytes]`, landing at `y_off_bytes` inside each output row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Rows (the product of the dimensions before the axis).
    pub outer: usize,
    /// Bytes per row of the input.
    pub chunk_bytes: usize,
    /// Bytes per row of the output.
    pub y_row_bytes: usize,
    /// Byte offset of the input inside an output row.
    pub y_off_bytes: usize,
}

impl Piece {
    fn words(&self) -> Result<Params> {
        for (what, v) in [
            ("chunk bytes", self.chunk_bytes),
            ("output row bytes", self.y_row_bytes),
            ("offset bytes", self.y_off_bytes),
        ] {
            if v % 4 != 0 {
                return Err(Error::NotSupported {
                    what: format!("concat on the GPU with {what} {v} (not whole 32-bit words)"),
                });
            }
        }
        if self.chunk_bytes == 0 || self.outer == 0 {
            return Err(Error::invalid_param("piece", "empty input"));
        }
        if self.y_off_bytes + self.chunk_bytes > self.y_row_bytes {
            return Err(Error::invalid_param(
                "piece",
                format!(
                    "input run {}..{} overflows the output row of {} bytes",
                    self.y_off_bytes,
                    self.y_off_bytes + self.chunk_bytes,
                    self.y_row_bytes
                ),
            ));
        }
        let params = Params {
            outer: to_u32("outer", self.outer)?,
            chunk: to_u32("chunk", self.chunk_bytes / 4)?,
            y_row: to_u32("y_row", self.y_row_bytes / 4)?,
            y_off: to_u32("y_off", self.y_off_bytes / 4)?,
        };
        to_u32(
            "input words",
            self.outer.saturating_mul(self.chunk_bytes / 4),
        )?;
        to_u32(
            "output words",
            self.outer.saturating_mul(self.y_row_bytes / 4),
        )?;
        Ok(params)
    }
}

/// Whether [`record_piece`] can copy `p` (whole 32-bit words, sizes below 2^32 words).
pub fn supports(p: &Piece) -> std::result::Result<(), String> {
    p.words().map(|_| ()).map_err(|e| e.to_string())
}

fn check_bytes(name: &str, buf: &wgpu::Buffer, need: usize) -> Result<()> {
    if buf.size() < need as u64 {
        return Err(Error::ShapeMismatch {
            shapes: vec![vec![need], vec![buf.size() as usize]],
            reason: format!("buffer `{name}` holds {} bytes, needs {need}", buf.size()),
        });
    }
    Ok(())
}

/// Records the copy of one input `x` into its slot of `y`.
pub fn record_piece(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Piece,
) -> Result<()> {
    let params = p.words()?;
    check_wg(WG)?;
    check_bytes("x", x, p.outer * p.chunk_bytes)?;
    check_bytes("y", y, p.outer * p.y_row_bytes)?;
    if p.outer == 1 || p.chunk_bytes == p.y_row_bytes {
        // Contiguous destination: a plain copy, no shader.
        // (A whole-row input has offset 0.)
        return rec.copy(
            x,
            0,
            y,
            p.y_off_bytes as u64,
            (p.outer * p.chunk_bytes) as u64,
        );
    }
    let pipeline = gpu.pipeline("concat", "f32", &[("WG", f64::from(WG))])?;
    let pb = gpu.uniform("concat_params", &params)?;
    let words = params.outer * params.chunk;
    let grid = grid_1d(
        words,
        WG,
        gpu.adapter().max_compute_workgroups_per_dimension,
    );
    rec.dispatch(&pipeline, &[x, y, &pb], grid)
}

/// Records a copy of the first `bytes` of `x` into `y` (reshape, flatten: same bytes, new
/// shape). The size is rounded up to whole words; GPU buffers are padded to 4 bytes. A copy
/// onto itself (an aliased buffer) is nothing to do.
pub fn record_copy(
    rec: &mut Recorder<'_>,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    bytes: usize,
) -> Result<()> {
    let size = (bytes as u64).next_multiple_of(4);
    if size == 0 || x == y {
        return Ok(());
    }
    check_bytes("x", x, size as usize)?;
    check_bytes("y", y, size as usize)?;
    rec.copy(x, 0, y, 0, size)
}
