//! Host tensors: owned, 64-byte aligned storage with a dtype and a shape; typed views; and
//! NumPy-style slicing into strided views ([`TensorView`]) that copy only when asked.

use crate::error::{Error, Result};
use crate::shape::{Layout, Shape, SliceArg, parse_index};
use bytemuck::{Pod, Zeroable};

/// Element types a tensor can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float (`half::f16`).
    F16,
    /// Signed 8-bit integer (quantized data).
    I8,
    /// Unsigned 8-bit integer (quantized data, images).
    U8,
    /// Signed 32-bit integer (labels, indices, int8 accumulators).
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }

    /// Lower-case name (`f32`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I32 => "i32",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that is the element type of some [`DType`].
pub trait Element: Pod + std::fmt::Debug + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DType;
    /// Converts to f32 (exact for every dtype but i32 beyond 2^24).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
}
impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        self.to_f32()
    }
}
impl Element for i8 {
    const DTYPE: DType = DType::I8;
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// 64 bytes aligned to 64: the unit of tensor storage, so every tensor starts on a cache
/// line and SIMD kernels can use aligned loads.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Block([u8; 64]);

/// The largest tensor Spore allocates on the host (16 GiB): a hostile shape must give an
/// error, not an abort inside the allocator.
pub const MAX_TENSOR_BYTES: usize = 16 << 30;

/// An owned, contiguous, row-major host tensor.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    blocks: Vec<Block>,
    len: usize,
}

impl Tensor {
    /// A tensor of `dtype` and `dims` filled with zero bytes.
    pub fn zeros(dtype: DType, dims: &[usize]) -> Result<Tensor> {
        let n = crate::shape::numel(dims)?;
        let len = n
            .checked_mul(dtype.size())
            .filter(|&b| b <= MAX_TENSOR_BYTES)
            .ok_or_else(|| Error::OutOfMemory {
                device: "cpu".into(),
                bytes: (n as u64).saturating_mul(dtype.size() as u64),
            })?;
        let nblocks = len.div_ceil(64);
        let mut blocks = Vec::new();
        blocks
            .try_reserve_exact(nblocks)
            .map_err(|_| Error::OutOfMemory {
                device: "cpu".into(),
                bytes: len as u64,
            })?;
        blocks.resize(nblocks, Block([0; 64]));
        Ok(Tensor {
            dtype,
            shape: Shape::new(dims),
            blocks,
            len,
        })
    }

    /// A tensor holding `data` with shape `dims`; the element count must match.
    pub fn from_slice<T: Element>(dims: &[usize], data: &[T]) -> Result<Tensor> {
        let mut t = Tensor::zeros(T::DTYPE, dims)?;
        t.copy_from_slice(data)?;
        Ok(t)
    }

    /// Like [`Tensor::from_slice`], taking a vector.
    pub fn from_vec<T: Element>(dims: &[usize], data: Vec<T>) -> Result<Tensor> {
        Tensor::from_slice(dims, &data)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        let mut t = Tensor {
            dtype: T::DTYPE,
            shape: Shape::new(vec![]),
            blocks: vec![Block([0; 64])],
            len: T::DTYPE.size(),
        };
        t.as_bytes_mut().copy_from_slice(bytemuck::bytes_of(&value));
        t
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.len / self.dtype.size()
    }

    /// The raw bytes (native endianness).
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<Block, u8>(&self.blocks)[..self.len]
    }

    /// The raw bytes, mutable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<Block, u8>(&mut self.blocks)[..len]
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        if T::DTYPE == self.dtype {
            Ok(())
        } else {
            Err(Error::DTypeMismatch {
                expected: T::DTYPE,
                actual: self.dtype,
            })
        }
    }

    /// The elements as a typed slice; errors if `T` is not the tensor's dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_dtype::<T>()?;
        // Storage is 64-byte aligned and `len` a multiple of the element size: cannot fail.
        bytemuck::try_cast_slice(self.as_bytes())
            .map_err(|e| Error::invalid_param("tensor", format!("cast failed: {e:?}")))
    }

    /// The elements as a mutable typed slice.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_dtype::<T>()?;
        bytemuck::try_cast_slice_mut(self.as_bytes_mut())
            .map_err(|e| Error::invalid_param("tensor", format!("cast failed: {e:?}")))
    }

    /// A copy of the elements.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(self.as_slice::<T>()?.to_vec())
    }

    /// The elements converted to f32, whatever the dtype.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        fn conv<T: Element>(b: &[u8]) -> Vec<f32> {
            b.chunks_exact(std::mem::size_of::<T>())
                .map(|c| bytemuck::pod_read_unaligned::<T>(c).to_f32())
                .collect()
        }
        let b = self.as_bytes();
        match self.dtype {
            DType::F32 => conv::<f32>(b),
            DType::F16 => conv::<half::f16>(b),
            DType::I8 => conv::<i8>(b),
            DType::U8 => conv::<u8>(b),
            DType::I32 => conv::<i32>(b),
        }
    }

    /// Overwrites every element from `data`, which must have the same dtype and length.
    pub fn copy_from_slice<T: Element>(&mut self, data: &[T]) -> Result<()> {
        let n = self.numel();
        if data.len() != n {
            return Err(Error::ShapeMismatch {
                shapes: vec![self.dims().to_vec(), vec![data.len()]],
                reason: format!("{} elements given for a tensor of {n}", data.len()),
            });
        }
        self.as_mut_slice::<T>()?.copy_from_slice(data);
        Ok(())
    }

    /// The same data with new dimensions (same element count).
    pub fn reshape(mut self, dims: &[usize]) -> Result<Tensor> {
        let n = crate::shape::numel(dims)?;
        if n != self.numel() {
            return Err(Error::ShapeMismatch {
                shapes: vec![self.dims().to_vec(), dims.to_vec()],
                reason: "reshape must keep the element count".into(),
            });
        }
        self.shape = Shape::new(dims);
        Ok(self)
    }

    /// Applies `f` to every element of an f32 tensor.
    pub fn map_f32(mut self, f: impl Fn(f32) -> f32) -> Result<Tensor> {
        self.as_mut_slice::<f32>()?
            .iter_mut()
            .for_each(|v| *v = f(*v));
        Ok(self)
    }

    /// The element at `index` (one position per axis).
    pub fn get<T: Element>(&self, index: &[usize]) -> Result<T> {
        self.view().get(index)
    }

    /// A view of the whole tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            tensor: self,
            layout: Layout::contiguous(self.dims()),
        }
    }

    /// NumPy basic indexing: `t.slice(&[0.into(), SliceArg::Ellipsis, (1..3).into()])`.
    pub fn slice(&self, args: &[SliceArg]) -> Result<TensorView<'_>> {
        self.view().slice(args)
    }

    /// NumPy basic indexing from its text form: `t.slice_str("0, ..., 1:3, None")`.
    pub fn slice_str(&self, expr: &str) -> Result<TensorView<'_>> {
        self.view().slice_str(expr)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: Vec<f32> = self.to_f32_vec().into_iter().take(8).collect();
        write!(
            f,
            "Tensor({} {:?}, first {:?})",
            self.dtype,
            self.dims(),
            head
        )
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype
            && self.shape == other.shape
            && self.as_bytes() == other.as_bytes()
    }
}

/// A strided view into a [`Tensor`]: the result of slicing. Copy out with
/// [`TensorView::to_tensor`].
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    tensor: &'a Tensor,
    layout: Layout,
}

impl<'a> TensorView<'a> {
    /// The view's dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.layout.dims
    }

    /// The strided layout over the tensor's buffer.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Slices the view further.
    pub fn slice(&self, args: &[SliceArg]) -> Result<TensorView<'a>> {
        Ok(TensorView {
            tensor: self.tensor,
            layout: self.layout.slice(args)?,
        })
    }

    /// Slices the view further, from NumPy text syntax.
    pub fn slice_str(&self, expr: &str) -> Result<TensorView<'a>> {
        let args = parse_index(expr).map_err(|e| match e {
            Error::BadIndex { reason, .. } => Error::BadIndex {
                shape: self.layout.dims.clone(),
                reason,
            },
            other => other,
        })?;
        self.slice(&args)
    }

    /// The element at `index`.
    pub fn get<T: Element>(&self, index: &[usize]) -> Result<T> {
        let pos = self.layout.offset_of(index)?;
        let data = self.tensor.as_slice::<T>()?;
        data.get(pos).copied().ok_or(Error::OutOfRange {
            index: pos as i64,
            axis: 0,
            size: data.len(),
        })
    }

    /// A contiguous copy.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let es = self.tensor.dtype.size();
        let mut out = Tensor::zeros(self.tensor.dtype, &self.layout.dims)?;
        let src = self.tensor.as_bytes();
        let dst = out.as_bytes_mut();
        for (i, pos) in self.layout.offsets().into_iter().enumerate() {
            let from = src
                .get(pos * es..(pos + 1) * es)
                .ok_or_else(|| Error::OutOfRange {
                    index: pos as i64,
                    axis: 0,
                    size: src.len() / es,
                })?;
            dst[i * es..(i + 1) * es].copy_from_slice(from);
        }
        Ok(out)
    }

    /// The view's elements, in row-major order, copied into a vector.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.to_tensor()?.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor whose element at each position equals its flat index.
    fn iota(dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        Tensor::from_vec(dims, (0..n as i32).collect()).unwrap()
    }

    fn check(dims: &[usize], expr: &str, want_dims: &[usize], want: &[i32]) {
        let t = iota(dims);
        let v = t.slice_str(expr).unwrap();
        assert_eq!(v.dims(), want_dims, "x{dims:?}[{expr}] shape");
        assert_eq!(v.to_vec::<i32>().unwrap(), want, "x{dims:?}[{expr}] values");
    }

    #[test]
    fn storage_is_aligned_and_typed() {
        let t = Tensor::from_vec(&[3, 5], (0..15).map(|i| i as f32 * 0.5).collect()).unwrap();
        assert_eq!(t.as_bytes().as_ptr() as usize % 64, 0);
        assert_eq!(t.as_slice::<f32>().unwrap()[7], 3.5);
        assert!(matches!(
            t.as_slice::<i32>(),
            Err(Error::DTypeMismatch { .. })
        ));
        assert_eq!(t.get::<f32>(&[2, 4]).unwrap(), 7.0);
        assert!(matches!(
            t.get::<f32>(&[3, 0]),
            Err(Error::OutOfRange { axis: 0, .. })
        ));
        let h = Tensor::from_vec(
            &[2],
            vec![half::f16::from_f32(1.5), half::f16::from_f32(-2.0)],
        )
        .unwrap();
        assert_eq!(h.to_f32_vec(), vec![1.5, -2.0]);
        assert_eq!(Tensor::scalar(7u8).to_f32_vec(), vec![7.0]);
        assert!(Tensor::from_vec(&[2, 2], vec![1.0f32; 3]).is_err());
        assert!(iota(&[2, 3]).reshape(&[3, 2]).is_ok());
        assert!(iota(&[2, 3]).reshape(&[4, 2]).is_err());
    }

    #[test]
    fn hostile_sizes_error() {
        assert!(matches!(
            Tensor::zeros(DType::F32, &[usize::MAX, 2]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            Tensor::zeros(DType::F32, &[1 << 40]),
            Err(Error::OutOfMemory { .. })
        ));
    }

    #[test]
    fn integers_ranges_steps() {
        // Expected values are what NumPy gives for np.arange(N).reshape(dims)[expr].
        check(&[2, 3], "1", &[3], &[3, 4, 5]);
        check(&[2, 3], "-1, -1", &[], &[5]);
        check(&[2, 3], ":, 1", &[2], &[1, 4]);
        check(&[2, 3], ":, ::2", &[2, 2], &[0, 2, 3, 5]);
        check(&[2, 3], "::-1, ::-2", &[2, 2], &[5, 3, 2, 0]);
        check(&[5], "1:4:2", &[2], &[1, 3]);
        check(&[5], "-2:", &[2], &[3, 4]);
        check(&[5], "10:", &[0], &[]);
        check(&[5], "3:0:-1", &[3], &[3, 2, 1]);
        check(&[5], "-100:100", &[5], &[0, 1, 2, 3, 4]);
        check(&[2, 3], "", &[2, 3], &[0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn new_axes() {
        check(&[2, 3], "None", &[1, 2, 3], &[0, 1, 2, 3, 4, 5]);
        check(&[2, 3], ":, None, 1", &[2, 1], &[1, 4]);
        check(&[2, 3], "None, 1, None", &[1, 1, 3], &[3, 4, 5]);
    }

    /// Regression tests for the ellipsis bug of the runtime Spore descends from: the ellipsis
    /// must expand to exactly `rank - (integers + ranges)` axes; new axes never count.
    #[test]
    fn ellipsis_regressions() {
        // Ellipsis at the front.
        check(&[2, 3, 4], "..., 0", &[2, 3], &[0, 4, 8, 12, 16, 20]);
        // Ellipsis in the middle.
        check(&[2, 3, 4], "1, ..., 2", &[3], &[14, 18, 22]);
        check(&[2, 2, 2, 2], "0, ..., 1", &[2, 2], &[1, 3, 5, 7]);
        // Ellipsis matching zero axes, at the front, middle and end.
        check(&[2, 3], "..., 1, 2", &[], &[5]);
        check(&[2, 3], "1, ..., 2", &[], &[5]);
        check(&[2, 3], "1, 2, ...", &[], &[5]);
        // Ellipsis with new axes: new axes consume no input axis.
        check(&[2, 3], "..., None", &[2, 3, 1], &[0, 1, 2, 3, 4, 5]);
        check(
            &[2, 3],
            "None, ..., None",
            &[1, 2, 3, 1],
            &[0, 1, 2, 3, 4, 5],
        );
        check(
            &[2, 3, 4],
            "None, ..., 0, None",
            &[1, 2, 3, 1],
            &[0, 4, 8, 12, 16, 20],
        );
        check(
            &[2, 3, 4],
            "0, None, ..., ::3",
            &[1, 3, 2],
            &[0, 3, 4, 7, 8, 11],
        );
        // Ellipsis alone, and on a rank-0 tensor.
        check(&[2, 2], "...", &[2, 2], &[0, 1, 2, 3]);
        let s = Tensor::scalar(9i32);
        assert_eq!(s.slice_str("...").unwrap().dims(), &[] as &[usize]);
        assert_eq!(s.slice_str("..., None").unwrap().dims(), &[1]);
        // Negative index after an ellipsis addresses the last axis.
        check(&[2, 3], "..., -1", &[2], &[2, 5]);
        // Two ellipses and too many indices are errors, not panics.
        assert!(matches!(
            iota(&[2, 3]).slice_str("..., 0, ..."),
            Err(Error::BadIndex { .. })
        ));
        assert!(matches!(
            iota(&[2, 3]).slice_str("0, ..., 0, 0"),
            Err(Error::BadIndex { .. })
        ));
    }

    #[test]
    fn chained_views_and_typed_api() {
        let t = iota(&[4, 5]);
        let v = t
            .slice(&[(1..4).into(), SliceArg::range(None, None, -2)])
            .unwrap();
        assert_eq!(v.dims(), &[3, 3]);
        let w = v.slice(&[SliceArg::Ellipsis, SliceArg::Index(0)]).unwrap();
        assert_eq!(w.to_vec::<i32>().unwrap(), vec![9, 14, 19]);
        assert_eq!(v.get::<i32>(&[2, 1]).unwrap(), 17);
        assert!(v.get::<i32>(&[3, 0]).is_err());
        assert!(v.to_vec::<f32>().is_err());
    }
}
