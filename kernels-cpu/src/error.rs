//! The error type of the CPU kernels: bad slice lengths and bad parameters.

use thiserror::Error;

/// What a kernel says when it refuses its arguments. `spore` maps it onto its own `Error`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A slice argument does not have the length its parameters imply.
    #[error("{kernel}: `{arg}` has {actual} elements, expected {expected}")]
    Length {
        /// Kernel name, e.g. `conv2d`.
        kernel: &'static str,
        /// Argument name, e.g. `x`.
        arg: &'static str,
        /// Length implied by the parameters.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// A parameter is out of its legal range (zero stride, groups not dividing channels, ...).
    #[error("{kernel}: invalid parameter `{param}`: {reason}")]
    Param {
        /// Kernel name.
        kernel: &'static str,
        /// Parameter name.
        param: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Result alias for kernels.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Checks that `slice_len == expected`, naming the kernel and argument otherwise.
pub fn check_len(
    kernel: &'static str,
    arg: &'static str,
    expected: usize,
    slice_len: usize,
) -> Result<()> {
    if expected == slice_len {
        Ok(())
    } else {
        Err(KernelError::Length {
            kernel,
            arg,
            expected,
            actual: slice_len,
        })
    }
}

/// Returns a [`KernelError::Param`] unless `ok`.
pub fn check_param(
    kernel: &'static str,
    param: &'static str,
    ok: bool,
    reason: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(KernelError::Param {
            kernel,
            param,
            reason: reason(),
        })
    }
}

/// Multiplies dimensions, refusing overflow (a hostile shape must not wrap around).
pub fn checked_product(kernel: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| KernelError::Param {
            kernel,
            param: "shape",
            reason: format!("element count of {dims:?} overflows usize"),
        })
}
