//! Reader for the IDX format (LeCun's MNIST files), raw or gzip-compressed.
//!
//! Layout: two zero bytes, a type byte, a rank byte, `rank` big-endian u32 dimensions, then
//! the elements big-endian in row-major order. Sizes are checked before anything is
//! allocated and the decompressor is bounded by the declared size, so a truncated, hostile or
//! gzip-bomb file gives a [`Error::Format`] (code -400), never a panic or an unbounded
//! allocation.

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::io::Read;

/// The largest payload an IDX file may declare (1 GiB).
pub const MAX_IDX_BYTES: usize = 1 << 30;

fn bad(reason: impl Into<String>) -> Error {
    Error::Format {
        format: "IDX",
        reason: reason.into(),
    }
}

/// Parses IDX data, gzip-compressed (detected by its magic `1f 8b`) or raw.
///
/// Element types map onto tensor dtypes: u8 -> U8, i8 -> I8, i16 and i32 -> I32,
/// f32 and f64 -> F32 (f64 narrowed).
pub fn read_idx_bytes(bytes: &[u8]) -> Result<Tensor> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut decoder = flate2::read::GzDecoder::new(bytes);
        parse(&mut decoder)
    } else {
        parse(&mut &bytes[..])
    }
}

/// Reads an IDX file (see [`read_idx_bytes`]).
pub fn read_idx(path: impl AsRef<std::path::Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_idx_bytes(&bytes)
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(format!("truncated: file ends inside the {what}")),
        _ => bad(format!("cannot read the {what}: {e}")),
    })
}

fn parse(r: &mut dyn Read) -> Result<Tensor> {
    let mut magic = [0u8; 4];
    read_exact(r, &mut magic, "magic number")?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(format!(
            "wrong magic {magic:02x?}: an IDX file starts with two zero bytes"
        )));
    }
    let (elem_size, dtype): (usize, DType) = match magic[2] {
        0x08 => (1, DType::U8),
        0x09 => (1, DType::I8),
        0x0B => (2, DType::I32),
        0x0C => (4, DType::I32),
        0x0D => (4, DType::F32),
        0x0E => (8, DType::F32),
        t => return Err(bad(format!("unknown element type 0x{t:02x}"))),
    };
    let rank = usize::from(magic[3]);
    if rank == 0 {
        return Err(bad("rank 0"));
    }
    let mut header = vec![0u8; 4 * rank];
    read_exact(r, &mut header, "dimensions")?;
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let payload = dims
        .iter()
        .try_fold(elem_size, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            bad(format!(
                "declared shape {dims:?} exceeds {MAX_IDX_BYTES} bytes"
            ))
        })?;
    let mut raw = vec![0u8; payload];
    read_exact(r, &mut raw, "data")?;
    let mut trailing = [0u8; 1];
    match r.read(&mut trailing) {
        Ok(0) => {}
        Ok(_) => {
            return Err(bad(format!(
                "trailing bytes after the {payload}-byte payload"
            )));
        }
        Err(e) => return Err(bad(format!("cannot read past the payload: {e}"))),
    }
    let mut t = Tensor::zeros(dtype, &dims)?;
    match magic[2] {
        0x08 | 0x09 => t.as_bytes_mut().copy_from_slice(&raw),
        0x0B => {
            let v: Vec<i32> = raw
                .chunks_exact(2)
                .map(|c| i32::from(i16::from_be_bytes([c[0], c[1]])))
                .collect();
            t.copy_from_slice(&v)?;
        }
        0x0C => {
            let v: Vec<i32> = raw
                .chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            t.copy_from_slice(&v)?;
        }
        0x0D => {
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            t.copy_from_slice(&v)?;
        }
        _ => {
            let v: Vec<f32> = raw
                .chunks_exact(8)
                .map(|c| {
                    f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect();
            t.copy_from_slice(&v)?;
        }
    }
    Ok(t)
}

/// Encodes a u8 tensor as raw (uncompressed) IDX: the inverse of [`read_idx_bytes`] for
/// images and labels.
pub fn write_idx_u8(t: &Tensor) -> Result<Vec<u8>> {
    let data = t.as_slice::<u8>()?;
    let rank = u8::try_from(t.dims().len())
        .ok()
        .filter(|&r| r > 0)
        .ok_or_else(|| Error::invalid_param("tensor", "IDX needs rank 1..=255"))?;
    let mut out = vec![0, 0, 0x08, rank];
    for &d in t.dims() {
        let d = u32::try_from(d).map_err(|_| Error::invalid_param("tensor", "dim > u32"))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trip_raw_and_gzip() {
        let t = Tensor::from_vec(&[2, 3], vec![1u8, 2, 3, 250, 0, 7]).unwrap();
        let raw = write_idx_u8(&t).unwrap();
        assert_eq!(read_idx_bytes(&raw).unwrap(), t);
        assert_eq!(read_idx_bytes(&gzip(&raw)).unwrap(), t);
    }

    #[test]
    fn other_element_types() {
        let mut b = vec![0, 0, 0x0C, 1, 0, 0, 0, 2];
        b.extend_from_slice(&(-5i32).to_be_bytes());
        b.extend_from_slice(&70000i32.to_be_bytes());
        assert_eq!(
            read_idx_bytes(&b).unwrap().to_vec::<i32>().unwrap(),
            vec![-5, 70000]
        );
        let mut b = vec![0, 0, 0x0D, 1, 0, 0, 0, 1];
        b.extend_from_slice(&1.5f32.to_be_bytes());
        assert_eq!(
            read_idx_bytes(&b).unwrap().to_vec::<f32>().unwrap(),
            vec![1.5]
        );
        let mut b = vec![0, 0, 0x0B, 1, 0, 0, 0, 1];
        b.extend_from_slice(&(-3i16).to_be_bytes());
        assert_eq!(
            read_idx_bytes(&b).unwrap().to_vec::<i32>().unwrap(),
            vec![-3]
        );
        let mut b = vec![0, 0, 0x0E, 1, 0, 0, 0, 1];
        b.extend_from_slice(&0.25f64.to_be_bytes());
        assert_eq!(
            read_idx_bytes(&b).unwrap().to_vec::<f32>().unwrap(),
            vec![0.25]
        );
        let b = vec![0, 0, 0x09, 1, 0, 0, 0, 1, 0xFF];
        assert_eq!(
            read_idx_bytes(&b).unwrap().to_vec::<i8>().unwrap(),
            vec![-1]
        );
    }

    fn assert_format_error(bytes: &[u8], needle: &str) {
        match read_idx_bytes(bytes) {
            Err(e @ Error::Format { .. }) => {
                assert_eq!(e.code().as_i32(), -400);
                assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
            }
            other => panic!("expected a format error containing `{needle}`, got {other:?}"),
        }
    }

    #[test]
    fn bad_files_give_errors() {
        let t = Tensor::from_vec(&[4, 4], (0..16).map(|i| i as u8 * 13).collect()).unwrap();
        let good = write_idx_u8(&t).unwrap();
        // Truncated at every possible length, raw and compressed.
        for cut in 0..good.len() {
            assert_format_error(&good[..cut], "truncated");
        }
        let gz = gzip(&good);
        for cut in [2, 10, gz.len() / 2, gz.len() - 9] {
            assert!(
                matches!(read_idx_bytes(&gz[..cut]), Err(Error::Format { .. })),
                "gz cut {cut}"
            );
        }
        // Wrong magic.
        let mut wrong = good.clone();
        wrong[0] = 0x42;
        assert_format_error(&wrong, "magic");
        let mut wrong = good.clone();
        wrong[2] = 0x07;
        assert_format_error(&wrong, "element type");
        let mut wrong = good.clone();
        wrong[3] = 0;
        assert_format_error(&wrong, "rank 0");
        // Trailing garbage.
        let mut long = good.clone();
        long.push(1);
        assert_format_error(&long, "trailing");
        // A hostile declared size fails before any allocation.
        let huge = [
            0, 0, 0x08, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 9,
        ];
        assert_format_error(&huge, "exceeds");
        // A missing file is an I/O error naming the path.
        let e = read_idx("/nonexistent/x.idx").unwrap_err();
        assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/nonexistent/x.idx"));
    }
}
