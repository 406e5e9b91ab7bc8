//! The MNIST digits: loads the four IDX files of a directory such as the bundled
//! `tools/data/mnist-10k/` (8,000 training and 2,000 test digits; see its README for
//! provenance) and checks that they belong together.

use super::idx::read_idx;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// One split of MNIST: images `[n, 28, 28]` u8 and labels `[n]` u8 in `0..10`.
#[derive(Debug, Clone)]
pub struct MnistSplit {
    /// Images, one byte a pixel, 0 = background.
    pub images: Tensor,
    /// Labels, 0..=9.
    pub labels: Tensor,
}

impl MnistSplit {
    /// Number of digits.
    pub fn len(&self) -> usize {
        self.labels.numel()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(images: Tensor, labels: Tensor, which: &str) -> Result<MnistSplit> {
        let bad = |reason: String| Error::Format {
            format: "MNIST",
            reason,
        };
        if images.dtype() != DType::U8 || labels.dtype() != DType::U8 {
            return Err(bad(format!("{which}: images and labels must be u8")));
        }
        let d = images.dims();
        if d.len() != 3 || d[1] != 28 || d[2] != 28 {
            return Err(bad(format!(
                "{which}: images have shape {d:?}, expected [n, 28, 28]"
            )));
        }
        if labels.dims() != [d[0]] {
            return Err(bad(format!(
                "{which}: {} images but labels of shape {:?}",
                d[0],
                labels.dims()
            )));
        }
        if let Some(l) = labels.as_slice::<u8>()?.iter().find(|&&l| l > 9) {
            return Err(bad(format!("{which}: label {l} is not a digit")));
        }
        Ok(MnistSplit { images, labels })
    }
}

/// The training and test splits.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training digits.
    pub train: MnistSplit,
    /// Test digits.
    pub test: MnistSplit,
}

/// Loads `{train,test}-{images-idx3,labels-idx1}-ubyte.gz` from `dir`.
pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
    let dir = dir.as_ref();
    let split = |which: &str| -> Result<MnistSplit> {
        let images = read_idx(dir.join(format!("{which}-images-idx3-ubyte.gz")))?;
        let labels = read_idx(dir.join(format!("{which}-labels-idx1-ubyte.gz")))?;
        MnistSplit::check(images, labels, which)
    };
    Ok(Mnist {
        train: split("train")?,
        test: split("test")?,
    })
}
