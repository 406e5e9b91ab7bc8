//! Elementwise binary ops on the GPU (`shaders/binary.wgsl`): `y = a op b` for add, sub, mul,
//! div, max, min with NumPy broadcasting. The host right-aligns the shapes, drops size-1 output
//! axes and merges neighbouring axes that broadcast alike, so any rank whose merged form has
//! at most [`MAX_RANK`] axes runs in one dispatch (e.g. `[2, 3, 1, 5] op [3, 4, 1]` merges to
//! rank 4, a bias-like `[n, h, w, c] op [c]` to rank 2).

use super::GpuElement;
use super::unary::{check_buffer, check_wg, grid, output, read, to_u32, upload};
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use crate::tune::{TuneKey, TuneSpec, bucket, shader_hash};
use spore_kernels_cpu::reference::binary::{BinaryOp, broadcast_shape};

/// Axes the shader's `Params` can describe after merging.
pub const MAX_RANK: usize = 8;

/// Mirror of the shader's `Params` uniform.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    /// Output element count.
    pub total: u32,
    /// Merged rank (<= [`MAX_RANK`]).
    pub rank: u32,
    /// 0 add, 1 sub, 2 mul, 3 div, 4 max, 5 min.
    pub op: u32,
    /// Bit 0: `a` is laid out like `y`; bit 1: `b` is.
    pub flags: u32,
    /// Merged output sizes.
    pub dims: [u32; MAX_RANK],
    /// `a`'s element strides per merged axis (0 where broadcast).
    pub stride_a: [u32; MAX_RANK],
    /// `b`'s element strides per merged axis (0 where broadcast).
    pub stride_b: [u32; MAX_RANK],
}

/// Tuning knobs (`WG` override).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Invocations per workgroup (power of two <= 256).
    pub wg: u32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs { wg: 256 }
    }
}

impl Knobs {
    /// The autotuner's label, e.g. `wg256` (parsed back by [`Knobs::parse`]).
    pub fn label(&self) -> String {
        format!("wg{}", self.wg)
    }

    /// Parses a [`Knobs::label`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Knobs> {
        Some(Knobs {
            wg: s.strip_prefix("wg")?.parse().ok()?,
        })
    }
}

/// Legal knob sets for the autotuner.
pub const CANDIDATES: &[Knobs] = &[Knobs { wg: 256 }, Knobs { wg: 64 }, Knobs { wg: 128 }];

/// The autotuner's view of a binary op producing `out_len` elements: key `binary f32
/// [elements, broadcasts]` (elements bucketed; `broadcasts` 1 when the operand shapes
/// differ) and the [`CANDIDATES`], the default first.
pub fn tune_spec(out_len: usize, broadcasts: bool) -> TuneSpec {
    let mut candidates = vec![Knobs::default().label()];
    for k in CANDIDATES {
        if !candidates.contains(&k.label()) {
            candidates.push(k.label());
        }
    }
    TuneSpec {
        key: TuneKey {
            kernel: "binary".into(),
            dtype: "f32".into(),
            shape: vec![bucket(out_len), u32::from(broadcasts)],
        },
        candidates,
        shader_hash: shader_hash(&["binary"]),
    }
}

/// One broadcast binary op.
#[derive(Debug, Clone, PartialEq)]
pub struct Binary {
    /// The operation.
    pub op: BinaryOp,
    /// Shape of `a` (`[]` is a scalar).
    pub a_shape: Vec<usize>,
    /// Shape of `b` (`[]` is a scalar).
    pub b_shape: Vec<usize>,
    /// Tuning knobs.
    pub knobs: Knobs,
}

fn op_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Max => 4,
        BinaryOp::Min => 5,
    }
}

/// Row-major strides of `shape` right-aligned to `out`, 0 on broadcast axes.
fn strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut s = vec![0; out.len()];
    let offset = out.len() - shape.len();
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        if shape[i] != 1 {
            s[offset + i] = stride;
        }
        stride *= shape[i];
    }
    s
}

impl Binary {
    /// The broadcast output shape (errors when the shapes do not broadcast).
    pub fn out_shape(&self) -> Result<Vec<usize>> {
        Ok(broadcast_shape(&self.a_shape, &self.b_shape)?)
    }

    /// Validates the shapes and builds the shader parameters.
    pub fn params(&self) -> Result<Params> {
        self.knobs_ok()?;
        let out = self.out_shape()?;
        let total: usize = out.iter().product();
        let sa = strides(&self.a_shape, &out);
        let sb = strides(&self.b_shape, &out);
        // (size, stride_a, stride_b) per axis, size-1 axes dropped, then neighbours merged
        // where both operands step through them contiguously (or both broadcast).
        let mut axes: Vec<(usize, usize, usize)> = Vec::new();
        for ((&d, &a), &b) in out.iter().zip(&sa).zip(&sb) {
            if d == 1 {
                continue;
            }
            match axes.last_mut() {
                Some(last) if last.1 == a * d && last.2 == b * d => {
                    *last = (last.0 * d, a, b);
                }
                _ => axes.push((d, a, b)),
            }
        }
        if axes.len() > MAX_RANK {
            return Err(Error::NotSupported {
                what: format!(
                    "binary broadcast of {:?} and {:?}: {} axes after merging, the shader takes {MAX_RANK}",
                    self.a_shape,
                    self.b_shape,
                    axes.len()
                ),
            });
        }
        let mut p = Params {
            total: to_u32("total", total)?,
            rank: axes.len() as u32,
            op: op_code(self.op),
            flags: 0,
            dims: [1; MAX_RANK],
            stride_a: [0; MAX_RANK],
            stride_b: [0; MAX_RANK],
        };
        for (i, &(d, a, b)) in axes.iter().enumerate() {
            p.dims[i] = to_u32("dim", d)?;
            p.stride_a[i] = to_u32("stride", a)?;
            p.stride_b[i] = to_u32("stride", b)?;
        }
        let a_len: usize = self.a_shape.iter().product();
        let b_len: usize = self.b_shape.iter().product();
        // An operand with as many elements as the output broadcasts nowhere: its index is the
        // output index, and the shader skips the decode for it.
        if a_len == total {
            p.flags |= 1;
        }
        if b_len == total {
            p.flags |= 2;
        }
        Ok(p)
    }

    fn knobs_ok(&self) -> Result<()> {
        check_wg(self.knobs.wg)
    }
}

/// Records `y = a op b` on buffers already on the GPU (`y` has [`Binary::out_shape`]).
pub fn record<T: GpuElement>(
    gpu: &GpuContext,
    rec: &mut Recorder<'_>,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    y: &wgpu::Buffer,
    p: &Binary,
) -> Result<()> {
    let params = p.params()?;
    check_buffer::<T>("a", a, p.a_shape.iter().product())?;
    check_buffer::<T>("b", b, p.b_shape.iter().product())?;
    check_buffer::<T>("y", y, params.total as usize)?;
    let pipeline = gpu.pipeline("binary", T::WGSL, &[("WG", f64::from(p.knobs.wg))])?;
    let pb = gpu.uniform("binary_params", &params)?;
    rec.dispatch(
        &pipeline,
        &[a, b, y, &pb],
        grid(gpu, params.total, p.knobs.wg),
    )
}

/// Uploads `a` and `b`, runs [`record`], reads `y` back.
pub fn run<T: GpuElement>(gpu: &GpuContext, a: &[T], b: &[T], p: &Binary) -> Result<Vec<T>> {
    let params = p.params()?;
    let (a_len, b_len) = (
        p.a_shape.iter().product::<usize>(),
        p.b_shape.iter().product::<usize>(),
    );
    if a.len() != a_len || b.len() != b_len {
        return Err(Error::ShapeMismatch {
            shapes: vec![p.a_shape.clone(), p.b_shape.clone()],
            reason: format!(
                "binary: data lengths {} and {} do not match the shapes",
                a.len(),
                b.len()
            ),
        });
    }
    let total = params.total as usize;
    let ab = upload(gpu, "a", a)?;
    let bb = upload(gpu, "b", b)?;
    let yb = output::<T>(gpu, "y", total)?;
    let mut rec = gpu.recorder();
    record::<T>(gpu, &mut rec, &ab, &bb, &yb, p)?;
    rec.submit()?;
    read::<T>(gpu, &yb, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(a: &[usize], b: &[usize]) -> Params {
        Binary {
            op: BinaryOp::Add,
            a_shape: a.to_vec(),
            b_shape: b.to_vec(),
            knobs: Knobs::default(),
        }
        .params()
        .unwrap()
    }

    #[test]
    fn broadcast_axes_merge() {
        // Bias-like: [2, 3, 4, 5] + [5] is [24, 5] with b broadcast along the first axis.
        let p = params(&[2, 3, 4, 5], &[5]);
        assert_eq!(p.rank, 2);
        assert_eq!(&p.dims[..2], &[24, 5]);
        assert_eq!(&p.stride_b[..2], &[0, 1]);
        assert_eq!(p.flags, 1);
        // [2, 3, 1, 5] op [3, 4, 1] -> [2, 3, 4, 5].
        let p = params(&[2, 3, 1, 5], &[3, 4, 1]);
        assert_eq!(p.total, 120);
        assert_eq!(&p.dims[..p.rank as usize], &[2, 3, 4, 5]);
        assert_eq!(&p.stride_a[..4], &[15, 5, 0, 1]);
        assert_eq!(&p.stride_b[..4], &[0, 4, 1, 0]);
        // Scalars and equal shapes.
        assert_eq!(params(&[], &[]).total, 1);
        assert_eq!(params(&[3, 4], &[3, 4]).flags, 3);
        assert_eq!(params(&[3, 4], &[3, 4]).rank, 1);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let b = Binary {
            op: BinaryOp::Mul,
            a_shape: vec![2, 3],
            b_shape: vec![4],
            knobs: Knobs::default(),
        };
        assert!(b.params().is_err());
        let b = Binary {
            a_shape: vec![2, 0],
            b_shape: vec![1],
            ..b
        };
        assert!(b.params().is_err());
        // Nine alternating broadcast axes cannot merge below nine.
        let a: Vec<usize> = (0..9).map(|i| if i % 2 == 0 { 2 } else { 1 }).collect();
        let bs: Vec<usize> = (0..9).map(|i| if i % 2 == 0 { 1 } else { 2 }).collect();
        let b = Binary {
            op: BinaryOp::Add,
            a_shape: a,
            b_shape: bs,
            knobs: Knobs::default(),
        };
        assert!(b.params().is_err());
    }
}
