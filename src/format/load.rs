//! Model-file bytes -> [`Graph`], treating the bytes as hostile: structural verification
//! first, then semantic checks on everything the file declares (bounded before anything is
//! allocated), then a replay through [`GraphBuilder`] so shape inference runs again. Every
//! failure is an [`Error::GraphFile`](crate::Error::GraphFile) naming what is wrong.

use super::generated::spore::fb;
use super::{
    Checkpoint, FILE_IDENTIFIER, FORMAT_VERSION, Limits, StateEntry, graph_file, in_context,
};
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, QuantParams, ValueId};
use crate::ops::{AttrValue, Op};
use crate::tensor::{DType, Tensor};
use flatbuffers::{ForwardsUOffset, Vector, VerifierOptions};
use std::collections::HashSet;

/// Size prefix, root offset and file identifier (4 bytes each): the least a file can be.
const MIN_FILE_BYTES: usize = 12;

/// Where a value comes from, as the file declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Input,
    Constant,
    Activation,
}

impl Kind {
    /// The kind with its article, for messages ("an input").
    fn described(self) -> &'static str {
        match self {
            Kind::Input => "an input",
            Kind::Constant => "a constant",
            Kind::Activation => "an activation",
        }
    }
}

/// A tensor entry after its own checks (shape within limits, data length, quantization).
struct Decl<'a> {
    name: &'a str,
    dtype: DType,
    dims: Vec<usize>,
    kind: Kind,
    trainable: bool,
    quant: Option<QuantParams>,
    data: &'a [u8],
}

/// A node entry after its index checks; attributes are parsed when the node is built.
struct NodeDecl<'a> {
    name: &'a str,
    op: &'a str,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    attrs: Option<Vector<'a, ForwardsUOffset<fb::Attr<'a>>>>,
}

pub(super) fn load(bytes: &[u8], limits: &Limits) -> Result<Checkpoint> {
    let model = verify(bytes, limits)?;

    let version = model.format_version();
    if version != FORMAT_VERSION {
        return Err(graph_file(format!(
            "unsupported format version {version}: this build of Spore reads version \
             {FORMAT_VERSION} only"
        )));
    }

    let mut total_elements = 0u64;
    let decls = parse_tensors(model, limits, &mut total_elements)?;
    let nodes = parse_nodes(model, &decls, limits)?;
    let producer = check_producers(&decls, &nodes)?;
    check_graph_inputs(model, &decls)?;
    let outputs = parse_graph_outputs(model, &decls)?;
    let metadata = parse_metadata(model)?;
    let optimizer_state = parse_optimizer_state(model, limits, &mut total_elements)?;

    let graph = replay(&decls, &nodes, &producer, &outputs, &metadata)?;
    Ok(Checkpoint {
        graph,
        optimizer_state,
    })
}

/// Size, identifier, then the FlatBuffers verifier with explicit caps.
fn verify<'a>(bytes: &'a [u8], limits: &Limits) -> Result<fb::Model<'a>> {
    if bytes.is_empty() {
        return Err(graph_file("empty buffer: a model file cannot be empty"));
    }
    if bytes.len() < MIN_FILE_BYTES {
        return Err(graph_file(format!(
            "buffer of {} bytes is too short for a model file (at least {MIN_FILE_BYTES}: size \
             prefix, root offset and the `{FILE_IDENTIFIER}` identifier)",
            bytes.len()
        )));
    }
    if bytes.len() > limits.max_file_bytes {
        return Err(graph_file(format!(
            "buffer of {} bytes exceeds the {}-byte limit",
            bytes.len(),
            limits.max_file_bytes
        )));
    }
    let ident = bytes.get(8..12).unwrap_or_default();
    if ident != FILE_IDENTIFIER.as_bytes() {
        return Err(graph_file(format!(
            "wrong file identifier \"{}\" (expected \"{FILE_IDENTIFIER}\"): not a Spore model",
            ident.escape_ascii()
        )));
    }
    // The size prefix is what makes truncation detectable: without it, cutting trailing
    // alignment padding (or appending bytes) would still verify.
    let prefix = bytes
        .get(0..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes) as usize;
    let body = bytes.len() - 4;
    if prefix != body {
        return Err(graph_file(format!(
            "the size prefix says {prefix} bytes follow it, but {body} do: the file is {}",
            if prefix > body {
                "truncated"
            } else {
                "followed by extra bytes"
            }
        )));
    }
    let opts = VerifierOptions {
        max_depth: limits.max_depth,
        max_tables: limits.max_tables,
        max_apparent_size: bytes
            .len()
            .saturating_mul(limits.max_apparent_size_factor)
            .min(flatbuffers::FLATBUFFERS_MAX_BUFFER_SIZE),
        ignore_missing_null_terminator: false,
    };
    fb::size_prefixed_root_as_model_with_opts(&opts, bytes).map_err(|e| {
        // The verifier's message spans several lines (the error, then a trace of fields).
        let msg = e.to_string();
        let msg: Vec<&str> = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        graph_file(format!(
            "FlatBuffers verification failed: {}",
            msg.join("; ")
        ))
    })
}

fn parse_tensors<'a>(
    model: fb::Model<'a>,
    limits: &Limits,
    total: &mut u64,
) -> Result<Vec<Decl<'a>>> {
    let Some(tensors) = model.tensors() else {
        return Ok(Vec::new());
    };
    if tensors.len() > limits.max_values {
        return Err(graph_file(format!(
            "the file has {} tensors, more than the limit of {}",
            tensors.len(),
            limits.max_values
        )));
    }
    let mut decls = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        decls.push(parse_tensor(i, t, limits, total)?);
    }
    Ok(decls)
}

fn parse_tensor<'a>(
    i: usize,
    t: fb::Tensor<'a>,
    limits: &Limits,
    total: &mut u64,
) -> Result<Decl<'a>> {
    let name = match t.name() {
        Some(n) if !n.is_empty() => n,
        _ => return Err(graph_file(format!("tensor {i} has no name"))),
    };
    let what = || format!("tensor {i} `{name}`");
    let dtype = dtype_from_fb(t.dtype())
        .ok_or_else(|| graph_file(format!("{}: unknown dtype code {}", what(), t.dtype().0)))?;
    let kind = match t.kind() {
        fb::TensorKind::Input => Kind::Input,
        fb::TensorKind::Constant => Kind::Constant,
        fb::TensorKind::Activation => Kind::Activation,
        other => {
            return Err(graph_file(format!(
                "{}: unknown tensor kind code {}",
                what(),
                other.0
            )));
        }
    };
    let dims = parse_dims(&what, t.shape(), limits)?;
    let numel = check_shape(&what, &dims, limits, total)?;
    let data = t.data().map_or(&[][..], |d| d.bytes());
    if kind == Kind::Constant {
        check_data_len(&what, dtype, &dims, numel, data.len())?;
    } else if !data.is_empty() {
        return Err(graph_file(format!(
            "{}: {} tensor must not carry data, found {} bytes",
            what(),
            kind.described(),
            data.len()
        )));
    }
    let trainable = t.trainable();
    if trainable && kind != Kind::Constant {
        return Err(graph_file(format!(
            "{}: only constants can be trainable, this is {} tensor",
            what(),
            kind.described()
        )));
    }
    let quant = match t.quant() {
        Some(q) => Some(parse_quant(&what, q, &dims)?),
        None => None,
    };
    Ok(Decl {
        name,
        dtype,
        dims,
        kind,
        trainable,
        quant,
        data,
    })
}

/// The declared dimensions, refusing a rank above the limit before collecting them.
fn parse_dims(
    what: &impl Fn() -> String,
    shape: Option<Vector<'_, u64>>,
    limits: &Limits,
) -> Result<Vec<usize>> {
    let Some(shape) = shape else {
        return Ok(Vec::new());
    };
    if shape.len() > limits.max_rank {
        return Err(graph_file(format!(
            "{}: rank {} exceeds the limit of {}",
            what(),
            shape.len(),
            limits.max_rank
        )));
    }
    shape
        .iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| {
                graph_file(format!(
                    "{}: dimension {d} does not fit this machine's usize",
                    what()
                ))
            })
        })
        .collect()
}

/// Checks rank, each dimension, the element count and the running total against `limits`;
/// returns the element count.
pub(super) fn check_shape(
    what: &impl Fn() -> String,
    dims: &[usize],
    limits: &Limits,
    total: &mut u64,
) -> Result<u64> {
    if dims.len() > limits.max_rank {
        return Err(graph_file(format!(
            "{}: rank {} exceeds the limit of {}",
            what(),
            dims.len(),
            limits.max_rank
        )));
    }
    // Each dimension is bounded on its own so that a zero elsewhere cannot hide a huge one
    // (strides and loop bounds downstream would still see it); the product is checked too,
    // since eight dimensions of 2^32 overflow u64.
    if let Some(&d) = dims
        .iter()
        .find(|&&d| d as u64 > limits.max_tensor_elements)
    {
        return Err(graph_file(format!(
            "{}: dimension {d} of shape {dims:?} exceeds the limit of {} elements per tensor",
            what(),
            limits.max_tensor_elements
        )));
    }
    let numel = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .filter(|&n| n <= limits.max_tensor_elements)
        .ok_or_else(|| {
            graph_file(format!(
                "{}: shape {dims:?} has more than the limit of {} elements per tensor",
                what(),
                limits.max_tensor_elements
            ))
        })?;
    *total = total.saturating_add(numel);
    if *total > limits.max_total_elements {
        return Err(graph_file(format!(
            "{}: the file declares more than the limit of {} elements over all tensors",
            what(),
            limits.max_total_elements
        )));
    }
    Ok(numel)
}

fn check_data_len(
    what: &impl Fn() -> String,
    dtype: DType,
    dims: &[usize],
    numel: u64,
    len: usize,
) -> Result<()> {
    let expected = numel.checked_mul(dtype.size() as u64);
    if expected != Some(len as u64) {
        return Err(graph_file(format!(
            "{}: {len} data bytes, but shape {dims:?} of {dtype} needs {}",
            what(),
            expected.map_or_else(|| "more than u64::MAX".to_string(), |e| e.to_string())
        )));
    }
    Ok(())
}

fn parse_quant(
    what: &impl Fn() -> String,
    q: fb::Quant<'_>,
    dims: &[usize],
) -> Result<QuantParams> {
    let scale: Vec<f32> = q.scale().map(|v| v.iter().collect()).unwrap_or_default();
    let zero_point: Vec<i32> = q
        .zero_point()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let axis = match q.axis() {
        -1 => None,
        a => Some(usize::try_from(a).map_err(|_| {
            graph_file(format!(
                "{}: quantization axis {a} is invalid (-1 = per tensor, else 0..rank)",
                what()
            ))
        })?),
    };
    let quant = QuantParams {
        scale,
        zero_point,
        axis,
    };
    check_quant(what, &quant, dims)?;
    Ok(quant)
}

/// Quantization parameters fit their tensor: one (scale, zero point) pair per tensor, or one
/// per channel along an existing axis; scales finite and positive.
pub(super) fn check_quant(
    what: &impl Fn() -> String,
    q: &QuantParams,
    dims: &[usize],
) -> Result<()> {
    let bad = |reason: String| graph_file(format!("{}: quantization {reason}", what()));
    if q.scale.len() != q.zero_point.len() {
        return Err(bad(format!(
            "has {} scales but {} zero points",
            q.scale.len(),
            q.zero_point.len()
        )));
    }
    let expected = match q.axis {
        None => 1,
        Some(a) => *dims.get(a).ok_or_else(|| {
            bad(format!(
                "axis {a} is out of range for shape {dims:?} (rank {})",
                dims.len()
            ))
        })?,
    };
    if q.scale.len() != expected {
        return Err(bad(match q.axis {
            None => format!("is per tensor but has {} scales", q.scale.len()),
            Some(a) => format!(
                "along axis {a} needs {expected} scales for shape {dims:?}, found {}",
                q.scale.len()
            ),
        }));
    }
    if let Some(s) = q.scale.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(bad(format!("scale {s} is not finite and positive")));
    }
    Ok(())
}

fn dtype_from_fb(d: fb::DataType) -> Option<DType> {
    Some(match d {
        fb::DataType::F32 => DType::F32,
        fb::DataType::F16 => DType::F16,
        fb::DataType::I8 => DType::I8,
        fb::DataType::U8 => DType::U8,
        fb::DataType::I32 => DType::I32,
        _ => return None,
    })
}

/// Reads an index vector, checking each index against the `n` tensors of the file.
fn indices(
    v: Option<Vector<'_, u32>>,
    n: usize,
    what: impl Fn(usize) -> String,
) -> Result<Vec<usize>> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    v.iter()
        .enumerate()
        .map(|(k, i)| {
            let i = i as usize;
            if i < n {
                Ok(i)
            } else {
                Err(graph_file(format!(
                    "{} is tensor index {i}, but the file has {n} tensors",
                    what(k)
                )))
            }
        })
        .collect()
}

fn parse_nodes<'a>(
    model: fb::Model<'a>,
    decls: &[Decl<'a>],
    limits: &Limits,
) -> Result<Vec<NodeDecl<'a>>> {
    let Some(nodes) = model.nodes() else {
        return Ok(Vec::new());
    };
    if nodes.len() > limits.max_nodes {
        return Err(graph_file(format!(
            "the file has {} nodes, more than the limit of {}",
            nodes.len(),
            limits.max_nodes
        )));
    }
    let n = decls.len();
    let mut out = Vec::with_capacity(nodes.len());
    for (j, node) in nodes.iter().enumerate() {
        let name = match node.name() {
            Some(s) if !s.is_empty() => s,
            _ => return Err(graph_file(format!("node {j} has no name"))),
        };
        let op = match node.op() {
            Some(s) if !s.is_empty() => s,
            _ => return Err(graph_file(format!("node {j} `{name}` has no op name"))),
        };
        let inputs = indices(node.inputs(), n, |k| format!("node `{name}` input #{k}"))?;
        let outputs = indices(node.outputs(), n, |k| format!("node `{name}` output #{k}"))?;
        if outputs.is_empty() {
            return Err(graph_file(format!("node {j} `{name}` has no outputs")));
        }
        out.push(NodeDecl {
            name,
            op,
            inputs,
            outputs,
            attrs: node.attrs(),
        });
    }
    Ok(out)
}

/// Each activation is produced by exactly one node and nothing else is produced; returns the
/// producing node of each tensor.
fn check_producers(decls: &[Decl<'_>], nodes: &[NodeDecl<'_>]) -> Result<Vec<Option<usize>>> {
    let mut producer: Vec<Option<usize>> = vec![None; decls.len()];
    for (j, node) in nodes.iter().enumerate() {
        for (k, &o) in node.outputs.iter().enumerate() {
            let (Some(d), Some(slot)) = (decls.get(o), producer.get_mut(o)) else {
                return Err(graph_file(format!(
                    "node `{}` output #{k}: tensor index {o} out of range",
                    node.name
                )));
            };
            if d.kind != Kind::Activation {
                return Err(graph_file(format!(
                    "node `{}` output #{k} is tensor {o} `{}`, {} tensor: nodes produce \
                     activation tensors only",
                    node.name,
                    d.name,
                    d.kind.described()
                )));
            }
            if let Some(first) = *slot {
                let first_name = nodes.get(first).map_or("?", |n| n.name);
                return Err(graph_file(if first == j {
                    format!(
                        "node `{}` lists tensor {o} `{}` twice among its outputs",
                        node.name, d.name
                    )
                } else {
                    format!(
                        "tensor {o} `{}` is produced twice: by node `{first_name}` and by node \
                         `{}`",
                        d.name, node.name
                    )
                }));
            }
            *slot = Some(j);
        }
    }
    for ((i, d), p) in decls.iter().enumerate().zip(&producer) {
        if d.kind == Kind::Activation && p.is_none() {
            return Err(graph_file(format!(
                "activation tensor {i} `{}` is produced by no node",
                d.name
            )));
        }
    }
    Ok(producer)
}

/// `Model.inputs` lists the input tensors, each once, in tensor order: exactly what the
/// builder records, so there is one way to write a graph's inputs.
fn check_graph_inputs(model: fb::Model<'_>, decls: &[Decl<'_>]) -> Result<()> {
    let declared = indices(model.inputs(), decls.len(), |k| format!("graph input #{k}"))?;
    let mut expected = decls
        .iter()
        .enumerate()
        .filter(|(_, d)| d.kind == Kind::Input)
        .map(|(i, _)| i);
    for (k, &i) in declared.iter().enumerate() {
        let d = decls
            .get(i)
            .ok_or_else(|| graph_file(format!("graph input #{k}: tensor {i} out of range")))?;
        if d.kind != Kind::Input {
            return Err(graph_file(format!(
                "graph input #{k} is tensor {i} `{}`, {} tensor",
                d.name,
                d.kind.described()
            )));
        }
        match expected.next() {
            Some(e) if e == i => {}
            _ => {
                return Err(graph_file(format!(
                    "graph input #{k} is tensor {i} `{}`: graph inputs must list every input \
                     tensor exactly once, in tensor order",
                    d.name
                )));
            }
        }
    }
    if let Some(missing) = expected.next() {
        let name = decls.get(missing).map_or("?", |d| d.name);
        return Err(graph_file(format!(
            "input tensor {missing} `{name}` is missing from the graph inputs"
        )));
    }
    Ok(())
}

fn parse_graph_outputs(model: fb::Model<'_>, decls: &[Decl<'_>]) -> Result<Vec<usize>> {
    let outputs = indices(model.outputs(), decls.len(), |k| {
        format!("graph output #{k}")
    })?;
    if outputs.is_empty() {
        return Err(graph_file("the graph has no outputs"));
    }
    let mut seen = HashSet::with_capacity(outputs.len());
    for (k, &o) in outputs.iter().enumerate() {
        if !seen.insert(o) {
            let name = decls.get(o).map_or("?", |d| d.name);
            return Err(graph_file(format!(
                "graph output #{k}: tensor {o} `{name}` is listed twice"
            )));
        }
    }
    Ok(outputs)
}

fn parse_metadata<'a>(model: fb::Model<'a>) -> Result<Vec<(&'a str, &'a str)>> {
    let Some(entries) = model.metadata() else {
        return Ok(Vec::new());
    };
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for (k, kv) in entries.iter().enumerate() {
        let key = kv
            .key()
            .ok_or_else(|| graph_file(format!("metadata entry #{k} has no key")))?;
        let value = kv
            .value()
            .ok_or_else(|| graph_file(format!("metadata entry `{key}` has no value")))?;
        if !seen.insert(key) {
            return Err(graph_file(format!("metadata key `{key}` appears twice")));
        }
        out.push((key, value));
    }
    Ok(out)
}

fn parse_optimizer_state(
    model: fb::Model<'_>,
    limits: &Limits,
    total: &mut u64,
) -> Result<Vec<StateEntry>> {
    let Some(entries) = model.optimizer_state() else {
        return Ok(Vec::new());
    };
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        let name = match entry.name() {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err(graph_file(format!(
                    "optimizer state entry #{k} has no name"
                )));
            }
        };
        if !seen.insert(name) {
            return Err(graph_file(format!(
                "optimizer state `{name}` appears twice"
            )));
        }
        let mut tensors = Vec::new();
        for (j, t) in entry.tensors().iter().flatten().enumerate() {
            let what = || format!("optimizer state `{name}` tensor {j}");
            let dtype = dtype_from_fb(t.dtype()).ok_or_else(|| {
                graph_file(format!("{}: unknown dtype code {}", what(), t.dtype().0))
            })?;
            if t.kind() != fb::TensorKind::Constant {
                return Err(graph_file(format!(
                    "{}: optimizer state must be constant tensors (kind code {})",
                    what(),
                    t.kind().0
                )));
            }
            let dims = parse_dims(&what, t.shape(), limits)?;
            let numel = check_shape(&what, &dims, limits, total)?;
            let data = t.data().map_or(&[][..], |d| d.bytes());
            check_data_len(&what, dtype, &dims, numel, data.len())?;
            tensors.push(tensor_from_le(&what, dtype, &dims, data)?);
        }
        out.push(StateEntry {
            name: name.to_string(),
            tensors,
        });
    }
    Ok(out)
}

/// A tensor from little-endian file bytes (length already checked against the shape).
fn tensor_from_le(
    what: &impl Fn() -> String,
    dtype: DType,
    dims: &[usize],
    data: &[u8],
) -> Result<Tensor> {
    let mut t = Tensor::zeros(dtype, dims).map_err(|e| in_context(what(), e))?;
    let dst = t.as_bytes_mut();
    if dst.len() != data.len() {
        return Err(graph_file(format!(
            "{}: {} data bytes for a tensor of {} bytes",
            what(),
            data.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(data);
    if cfg!(target_endian = "big") {
        dst.chunks_exact_mut(dtype.size()).for_each(<[u8]>::reverse);
    }
    Ok(t)
}

fn parse_attrs(
    node: &str,
    attrs: Option<Vector<'_, ForwardsUOffset<fb::Attr<'_>>>>,
) -> Result<Vec<(String, AttrValue)>> {
    let Some(attrs) = attrs else {
        return Ok(Vec::new());
    };
    let mut seen = HashSet::with_capacity(attrs.len());
    let mut items = Vec::with_capacity(attrs.len());
    for (k, a) in attrs.iter().enumerate() {
        let name = match a.name() {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err(graph_file(format!(
                    "node `{node}` attribute #{k} has no name"
                )));
            }
        };
        if !seen.insert(name) {
            return Err(graph_file(format!(
                "node `{node}` has attribute `{name}` twice"
            )));
        }
        let value = match a.value_type() {
            fb::AttrValue::IntValue => a.value_as_int_value().map(|v| AttrValue::Int(v.value())),
            fb::AttrValue::FloatValue => a
                .value_as_float_value()
                .map(|v| AttrValue::Float(v.value())),
            fb::AttrValue::BoolValue => a.value_as_bool_value().map(|v| AttrValue::Bool(v.value())),
            fb::AttrValue::StringValue => a
                .value_as_string_value()
                .and_then(|v| v.value())
                .map(|s| AttrValue::Str(s.to_string())),
            fb::AttrValue::IntsValue => a
                .value_as_ints_value()
                .and_then(|v| v.value())
                .map(|v| AttrValue::Ints(v.iter().collect())),
            fb::AttrValue::FloatsValue => a
                .value_as_floats_value()
                .and_then(|v| v.value())
                .map(|v| AttrValue::Floats(v.iter().collect())),
            fb::AttrValue::NONE => None,
            other => {
                return Err(graph_file(format!(
                    "node `{node}` attribute `{name}` has unknown value type code {}",
                    other.0
                )));
            }
        };
        let value = value
            .ok_or_else(|| graph_file(format!("node `{node}` attribute `{name}` has no value")))?;
        items.push((name.to_string(), value));
    }
    Ok(items)
}

/// Rebuilds the graph through [`GraphBuilder`] in file order, so every node's shape
/// inference runs again, and checks what it infers against what the file declares.
fn replay(
    decls: &[Decl<'_>],
    nodes: &[NodeDecl<'_>],
    producer: &[Option<usize>],
    outputs: &[usize],
    metadata: &[(&str, &str)],
) -> Result<Graph> {
    let mut b = GraphBuilder::new();
    let mut next_node = 0usize;
    let mut i = 0usize;
    while let Some(d) = decls.get(i) {
        let what = || format!("tensor {i} `{}`", d.name);
        match d.kind {
            Kind::Input => {
                let id = b
                    .input(d.name, d.dtype, &d.dims)
                    .map_err(|e| in_context(what(), e))?;
                b.set_quant(id, d.quant.clone())
                    .map_err(|e| in_context(what(), e))?;
                i += 1;
            }
            Kind::Constant => {
                let t = tensor_from_le(&what, d.dtype, &d.dims, d.data)?;
                let id = b
                    .add_constant(d.name, t, d.trainable)
                    .map_err(|e| in_context(what(), e))?;
                b.set_quant(id, d.quant.clone())
                    .map_err(|e| in_context(what(), e))?;
                i += 1;
            }
            Kind::Activation => {
                let j = producer
                    .get(i)
                    .copied()
                    .flatten()
                    .ok_or_else(|| graph_file(format!("{}: produced by no node", what())))?;
                let node = nodes
                    .get(j)
                    .ok_or_else(|| graph_file(format!("{}: producer {j} out of range", what())))?;
                if j != next_node {
                    let expected = nodes.get(next_node).map_or("?", |n| n.name);
                    return Err(graph_file(format!(
                        "nodes are out of order: {} comes from node {j} `{}`, but node \
                         {next_node} `{expected}` comes first; nodes must be listed in the \
                         order their outputs appear among the tensors",
                        what(),
                        node.name
                    )));
                }
                build_node(&mut b, decls, node, i)?;
                next_node += 1;
                i += node.outputs.len();
            }
        }
    }
    for &o in outputs {
        b.output(ValueId(o))
            .map_err(|e| in_context(format!("graph output tensor {o}"), e))?;
    }
    for (k, v) in metadata {
        b.metadata(k, v);
    }
    let graph = b.build().map_err(|e| in_context("building the graph", e))?;

    // Node outputs are named by the builder (`node` or `node:k`); the file must agree, or
    // saving the loaded graph would not reproduce the file.
    if graph.values().len() != decls.len() {
        return Err(graph_file(format!(
            "the file has {} tensors but the graph built from it has {}",
            decls.len(),
            graph.values().len()
        )));
    }
    for (i, (v, d)) in graph.values().iter().zip(decls).enumerate() {
        if v.name != d.name {
            return Err(graph_file(format!(
                "tensor {i} is named `{}` in the file, but its node names it `{}`",
                d.name, v.name
            )));
        }
    }
    Ok(graph)
}

/// Adds `node`, whose first output is tensor `first`, and checks its outputs.
fn build_node(
    b: &mut GraphBuilder,
    decls: &[Decl<'_>],
    node: &NodeDecl<'_>,
    first: usize,
) -> Result<()> {
    let name = node.name;
    if node
        .outputs
        .iter()
        .enumerate()
        .any(|(k, &o)| Some(o) != first.checked_add(k))
    {
        return Err(graph_file(format!(
            "node `{name}` outputs tensors {:?}: a node's outputs must be consecutive tensors, \
             in order",
            node.outputs
        )));
    }
    if let Some(&x) = node.inputs.iter().find(|&&x| x >= first) {
        let xname = decls.get(x).map_or("?", |d| d.name);
        return Err(graph_file(format!(
            "node `{name}` reads tensor {x} `{xname}`, which is not defined before the node \
             (its first output is tensor {first}); tensors must be in execution order"
        )));
    }
    let items = parse_attrs(name, node.attrs)?;
    let op = Op::from_name(node.op, name, items).map_err(|e| match e {
        Error::OpNotFound { op } => graph_file(format!(
            "node `{name}` has unknown op `{op}` (this build knows {})",
            Op::NAMES.join(", ")
        )),
        other => in_context(format!("node `{name}`"), other),
    })?;
    let inputs: Vec<ValueId> = node.inputs.iter().map(|&x| ValueId(x)).collect();
    let ids = b
        .node(name, op, &inputs)
        .map_err(|e| in_context(format!("node `{name}`"), e))?;
    if ids.len() != node.outputs.len() {
        return Err(graph_file(format!(
            "node `{name}` ({}) produces {} outputs, the file lists {}",
            node.op,
            ids.len(),
            node.outputs.len()
        )));
    }
    for (k, (&id, &o)) in ids.iter().zip(&node.outputs).enumerate() {
        let d = decls
            .get(o)
            .ok_or_else(|| graph_file(format!("node `{name}` output #{k} out of range")))?;
        if id != ValueId(o) {
            return Err(graph_file(format!(
                "node `{name}` output #{k} became value {} instead of tensor {o}",
                id.0
            )));
        }
        let fact = b
            .fact(id)
            .map_err(|e| in_context(format!("node `{name}`"), e))?;
        if fact.dtype != d.dtype || fact.shape != d.dims {
            return Err(graph_file(format!(
                "node `{name}` output #{k} (tensor {o} `{}`): the file declares {} {:?}, but \
                 shape inference gives {} {:?}",
                d.name, d.dtype, d.dims, fact.dtype, fact.shape
            )));
        }
        b.set_quant(id, d.quant.clone())
            .map_err(|e| in_context(format!("node `{name}`"), e))?;
    }
    Ok(())
}
