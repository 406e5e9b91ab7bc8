//! NumPy `.npy` files to and from tensors (through the `npyz` crate), for `spore run --input`
//! and for exchanging test data with Python.

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use npyz::WriterBuilder;

/// Largest array a `.npy` file may declare (1 GiB of data).
pub const MAX_NPY_BYTES: u64 = 1 << 30;

fn bad(reason: impl Into<String>) -> Error {
    Error::Format {
        format: "NPY",
        reason: reason.into(),
    }
}

/// Reads a C-order `.npy` array of f32, i32, u8 or i8 (little-endian or byte-sized).
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor> {
    let file = npyz::NpyFile::new(bytes).map_err(|e| bad(format!("bad header: {e}")))?;
    if file.order() != npyz::Order::C {
        return Err(bad(
            "Fortran-order arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let dims: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} too large"))))
        .collect::<Result<_>>()?;
    let descr = file.dtype().descr();
    let (dtype, size) = match descr.as_str() {
        "'<f4'" => (DType::F32, 4u64),
        "'<i4'" => (DType::I32, 4),
        "'|u1'" => (DType::U8, 1),
        "'|i1'" => (DType::I8, 1),
        other => {
            return Err(bad(format!(
                "element type {other} is not supported (use float32, int32, uint8, int8)"
            )));
        }
    };
    let total = file
        .shape()
        .iter()
        .try_fold(size, |a, &d| a.checked_mul(d))
        .filter(|&b| b <= MAX_NPY_BYTES)
        .ok_or_else(|| {
            bad(format!(
                "declared shape {dims:?} exceeds {MAX_NPY_BYTES} bytes"
            ))
        })?;
    let _ = total;
    let io = |e: std::io::Error| bad(format!("cannot read data: {e}"));
    match dtype {
        DType::F32 => Tensor::from_vec(&dims, file.into_vec::<f32>().map_err(io)?),
        DType::I32 => Tensor::from_vec(&dims, file.into_vec::<i32>().map_err(io)?),
        DType::U8 => Tensor::from_vec(&dims, file.into_vec::<u8>().map_err(io)?),
        _ => Tensor::from_vec(&dims, file.into_vec::<i8>().map_err(io)?),
    }
}

/// Reads a `.npy` file (see [`read_npy_bytes`]).
pub fn read_npy(path: impl AsRef<std::path::Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_npy_bytes(&bytes)
}

/// Writes a tensor as `.npy` bytes (f16 is widened to f32).
pub fn write_npy_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
    let io = |e: std::io::Error| bad(format!("cannot write: {e}"));
    macro_rules! write_as {
        ($ty:ty, $data:expr) => {{
            let mut w = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut out)
                .begin_nd()
                .map_err(io)?;
            w.extend($data.iter().copied()).map_err(io)?;
            w.finish().map_err(io)?;
        }};
    }
    match t.dtype() {
        DType::F32 => write_as!(f32, t.as_slice::<f32>()?),
        DType::F16 => write_as!(f32, t.to_f32_vec()),
        DType::I32 => write_as!(i32, t.as_slice::<i32>()?),
        DType::U8 => write_as!(u8, t.as_slice::<u8>()?),
        DType::I8 => write_as!(i8, t.as_slice::<i8>()?),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = Tensor::from_vec(&[2, 3], vec![1.5f32, -2.0, 0.25, 4.0, 5.0, -6.5]).unwrap();
        assert_eq!(read_npy_bytes(&write_npy_bytes(&t).unwrap()).unwrap(), t);
        let t = Tensor::from_vec(&[4], vec![1i32, -2, 3, i32::MAX]).unwrap();
        assert_eq!(read_npy_bytes(&write_npy_bytes(&t).unwrap()).unwrap(), t);
        let t = Tensor::from_vec(&[1, 2], vec![7u8, 255]).unwrap();
        assert_eq!(read_npy_bytes(&write_npy_bytes(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn bad_files_are_errors() {
        let t = Tensor::from_vec(&[3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let good = write_npy_bytes(&t).unwrap();
        for cut in 0..good.len() {
            assert!(read_npy_bytes(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(read_npy_bytes(b"not an npy file at all").is_err());
        let e = read_npy_bytes(&good[..good.len() - 1]).unwrap_err();
        assert_eq!(e.code().as_i32(), -400);
    }
}
