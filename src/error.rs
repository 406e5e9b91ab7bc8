//! The one public error type, its stable numeric codes, and their messages.
//!
//! Codes follow MindSpore Lite's `STATUS` values so that users migrating from it (and
//! bindings in other languages) keep their error handling: `Error::code()` maps every
//! variant onto an [`ErrorCode`], and [`error_info`] gives each code's message.
//! Variants carry structured fields (op, node, shapes) rather than free text wherever a
//! field would do, so callers can react programmatically.

use spore_kernels_cpu::KernelError;
use thiserror::Error;

/// Result alias used across Spore.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable numeric status codes (MindSpore Lite's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No error.
    Ok = 0,
    /// Generic error.
    Error = -1,
    /// A required object is null or missing.
    NullPtr = -2,
    /// A parameter is invalid.
    ParamInvalid = -3,
    /// Nothing changed.
    NoChange = -4,
    /// No error, but the run exited early (an observer stopped it).
    SuccessExit = -5,
    /// Memory allocation failed.
    MemoryFailed = -6,
    /// Not supported.
    NotSupport = -7,
    /// Thread pool error.
    ThreadPoolError = -8,
    /// Index out of a tensor's range.
    OutOfTensorRange = -100,
    /// An input tensor is wrong (shape, dtype, size).
    InputTensorError = -101,
    /// A run was started while another was in progress.
    ReentrantError = -102,
    /// The model file or buffer is malformed.
    GraphFileError = -200,
    /// No such op.
    NotFindOp = -300,
    /// Invalid op name.
    InvalidOpName = -301,
    /// Invalid op attribute.
    InvalidOpAttr = -302,
    /// An op failed while executing.
    OpExecuteFailure = -303,
    /// A data format error.
    FormatError = -400,
    /// Shape inference failed.
    InferError = -500,
    /// A shape is invalid before the run (it can only be inferred at run time).
    InferInvalid = -501,
    /// Invalid user input.
    InputParamInvalid = -600,
}

impl ErrorCode {
    /// Every code, in numeric order from 0 downwards.
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::Ok,
        ErrorCode::Error,
        ErrorCode::NullPtr,
        ErrorCode::ParamInvalid,
        ErrorCode::NoChange,
        ErrorCode::SuccessExit,
        ErrorCode::MemoryFailed,
        ErrorCode::NotSupport,
        ErrorCode::ThreadPoolError,
        ErrorCode::OutOfTensorRange,
        ErrorCode::InputTensorError,
        ErrorCode::ReentrantError,
        ErrorCode::GraphFileError,
        ErrorCode::NotFindOp,
        ErrorCode::InvalidOpName,
        ErrorCode::InvalidOpAttr,
        ErrorCode::OpExecuteFailure,
        ErrorCode::FormatError,
        ErrorCode::InferError,
        ErrorCode::InferInvalid,
        ErrorCode::InputParamInvalid,
    ];

    /// The numeric value.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with numeric value `v`, if there is one.
    pub fn from_i32(v: i32) -> Option<ErrorCode> {
        Self::ALL.iter().copied().find(|c| c.as_i32() == v)
    }

    /// This code's message.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Ok => "No error occurs.",
            ErrorCode::Error => "Common error code.",
            ErrorCode::NullPtr => "NULL pointer returned.",
            ErrorCode::ParamInvalid => "Invalid parameter.",
            ErrorCode::NoChange => "No change.",
            ErrorCode::SuccessExit => "No error but exit.",
            ErrorCode::MemoryFailed => "Failed to create memory.",
            ErrorCode::NotSupport => "Failed to support.",
            ErrorCode::ThreadPoolError => "Failed to create thread pool.",
            ErrorCode::OutOfTensorRange => "Failed to check range.",
            ErrorCode::InputTensorError => "Failed to check input tensor.",
            ErrorCode::ReentrantError => "Exist executor running.",
            ErrorCode::GraphFileError => "Failed to verify graph file.",
            ErrorCode::NotFindOp => "Failed to find operator.",
            ErrorCode::InvalidOpName => "Invalid operator name.",
            ErrorCode::InvalidOpAttr => "Invalid operator attr.",
            ErrorCode::OpExecuteFailure => "Failed to execute operator.",
            ErrorCode::FormatError => "Failed to checking tensor format.",
            ErrorCode::InferError => "Failed to infer shape.",
            ErrorCode::InferInvalid => "Invalid infer shape before runtime.",
            ErrorCode::InputParamInvalid => "Invalid input param by user.",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.as_i32())
    }
}

/// The message for a numeric status code; unknown codes get a generic message.
pub fn error_info(code: i32) -> &'static str {
    match ErrorCode::from_i32(code) {
        Some(c) => c.message(),
        None => "Unknown error code.",
    }
}

/// What went wrong with the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpuErrorKind {
    /// No adapter matched the request.
    NoAdapter,
    /// The device could not be created.
    RequestDevice,
    /// The device was lost (driver reset, unplugged, ...).
    DeviceLost,
    /// The GPU ran out of memory.
    OutOfMemory,
    /// wgpu rejected a call (a bug in Spore or an unsupported limit).
    Validation,
    /// A map, poll or other internal failure.
    Internal,
}

/// Every error Spore returns. Match on variants for details, or call [`Error::code`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A function parameter is out of its legal range.
    #[error("invalid parameter `{param}`: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        param: String,
        /// Why it is refused.
        reason: String,
    },
    /// Something required is missing (a tensor name, a file).
    #[error("missing {what}")]
    Missing {
        /// What is missing.
        what: String,
    },
    /// An allocation failed or would exceed a limit.
    #[error("out of memory on {device}: {bytes} bytes requested")]
    OutOfMemory {
        /// Where (`cpu`, or a GPU adapter's name).
        device: String,
        /// Bytes requested.
        bytes: u64,
    },
    /// An op or feature is not supported here.
    #[error("not supported: {what}")]
    NotSupported {
        /// What is not supported.
        what: String,
    },
    /// An index lies outside a tensor's dimension.
    #[error("index {index} is out of range for axis {axis} of size {size}")]
    OutOfRange {
        /// The index as given (may be negative).
        index: i64,
        /// The axis it addressed.
        axis: usize,
        /// That axis's size.
        size: usize,
    },
    /// An indexing expression is malformed (two ellipses, too many indices, zero step).
    #[error("bad index for shape {shape:?}: {reason}")]
    BadIndex {
        /// The shape being indexed.
        shape: Vec<usize>,
        /// Why the index is refused.
        reason: String,
    },
    /// An input tensor has the wrong shape, dtype or size.
    #[error("input tensor `{name}`: {reason}")]
    InputTensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor was read as a type other than its dtype.
    #[error("dtype mismatch: tensor holds {actual}, asked for {expected}")]
    DTypeMismatch {
        /// The dtype asked for.
        expected: crate::DType,
        /// The tensor's dtype.
        actual: crate::DType,
    },
    /// A shape does not fit the data or the operation.
    #[error("shape mismatch: {reason} (shapes {shapes:?})")]
    ShapeMismatch {
        /// The shapes involved.
        shapes: Vec<Vec<usize>>,
        /// What is wrong.
        reason: String,
    },
    /// A run was started while another was in progress.
    #[error("a run is already in progress on this session")]
    Reentrant,
    /// A model file or buffer is malformed.
    #[error("bad model file: {reason}")]
    GraphFile {
        /// What is wrong.
        reason: String,
    },
    /// A data file (IDX, NPY, ...) is malformed.
    #[error("bad {format} data: {reason}")]
    Format {
        /// The file format.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No op of this name exists.
    #[error("no op named `{op}`")]
    OpNotFound {
        /// The name asked for.
        op: String,
    },
    /// An op attribute is invalid.
    #[error("{op} `{node}`: invalid attribute `{attr}`: {reason}")]
    InvalidOpAttr {
        /// The op type.
        op: String,
        /// The node's name.
        node: String,
        /// The attribute.
        attr: String,
        /// Why it is refused.
        reason: String,
    },
    /// An op failed while executing.
    #[error("{op} `{node}` failed: {reason}")]
    OpExecution {
        /// The op type.
        op: String,
        /// The node's name.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// Shape inference failed.
    #[error("{op} `{node}`: cannot infer shape from inputs {inputs:?}: {reason}")]
    ShapeInference {
        /// The op type.
        op: String,
        /// The node's name.
        node: String,
        /// The input shapes.
        inputs: Vec<Vec<usize>>,
        /// Why.
        reason: String,
    },
    /// The run was stopped early by an observer.
    #[error("run stopped by the observer at node `{node}`")]
    Stopped {
        /// The node at which the observer stopped the run.
        node: String,
    },
    /// User input is invalid (a CLI argument, a config value).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A CPU kernel refused its arguments.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The GPU failed.
    #[error("GPU error ({kind:?}): {message}")]
    Gpu {
        /// The kind of failure.
        kind: GpuErrorKind,
        /// The driver's or wgpu's message.
        message: String,
    },
    /// An I/O error, with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The stable numeric code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidParameter { .. } => ErrorCode::ParamInvalid,
            Error::Missing { .. } => ErrorCode::NullPtr,
            Error::OutOfMemory { .. } => ErrorCode::MemoryFailed,
            Error::NotSupported { .. } => ErrorCode::NotSupport,
            Error::OutOfRange { .. } | Error::BadIndex { .. } => ErrorCode::OutOfTensorRange,
            Error::InputTensor { .. } => ErrorCode::InputTensorError,
            Error::DTypeMismatch { .. } | Error::ShapeMismatch { .. } => ErrorCode::ParamInvalid,
            Error::Reentrant => ErrorCode::ReentrantError,
            Error::GraphFile { .. } => ErrorCode::GraphFileError,
            Error::Format { .. } => ErrorCode::FormatError,
            Error::OpNotFound { .. } => ErrorCode::NotFindOp,
            Error::InvalidOpAttr { .. } => ErrorCode::InvalidOpAttr,
            Error::OpExecution { .. } => ErrorCode::OpExecuteFailure,
            Error::ShapeInference { .. } => ErrorCode::InferError,
            Error::Stopped { .. } => ErrorCode::SuccessExit,
            Error::InvalidInput { .. } => ErrorCode::InputParamInvalid,
            Error::Kernel(_) => ErrorCode::ParamInvalid,
            Error::Gpu { kind, .. } => match kind {
                GpuErrorKind::NoAdapter => ErrorCode::NotSupport,
                GpuErrorKind::OutOfMemory => ErrorCode::MemoryFailed,
                GpuErrorKind::Validation => ErrorCode::OpExecuteFailure,
                GpuErrorKind::RequestDevice | GpuErrorKind::DeviceLost | GpuErrorKind::Internal => {
                    ErrorCode::Error
                }
            },
            Error::Io { .. } => ErrorCode::Error,
        }
    }

    /// Shorthand for [`Error::InvalidParameter`].
    pub fn invalid_param(param: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            param: param.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Gpu`].
    pub fn gpu(kind: GpuErrorKind, message: impl Into<String>) -> Self {
        Error::Gpu {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_mindspore_numbers() {
        let expected = [
            0, -1, -2, -3, -4, -5, -6, -7, -8, -100, -101, -102, -200, -300, -301, -302, -303,
            -400, -500, -501, -600,
        ];
        let got: Vec<i32> = ErrorCode::ALL.iter().map(|c| c.as_i32()).collect();
        assert_eq!(got, expected);
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_i32(c.as_i32()), Some(c));
            assert_eq!(error_info(c.as_i32()), c.message());
            assert!(!c.message().is_empty());
        }
        assert_eq!(error_info(-12345), "Unknown error code.");
        assert_eq!(ErrorCode::from_i32(-9), None);
    }

    #[test]
    fn variants_map_to_codes() {
        assert_eq!(Error::Reentrant.code().as_i32(), -102);
        assert_eq!(
            Error::GraphFile { reason: "x".into() }.code().as_i32(),
            -200
        );
        let e = Error::ShapeInference {
            op: "conv2d".into(),
            node: "conv1".into(),
            inputs: vec![vec![1, 2], vec![3]],
            reason: "rank".into(),
        };
        assert_eq!(e.code(), ErrorCode::InferError);
        assert!(e.to_string().contains("conv1") && e.to_string().contains("[1, 2]"));
        assert_eq!(
            Error::gpu(GpuErrorKind::OutOfMemory, "oom").code(),
            ErrorCode::MemoryFailed
        );
        assert_eq!(
            Error::OutOfRange {
                index: -5,
                axis: 0,
                size: 3
            }
            .code()
            .as_i32(),
            -100
        );
    }
}
