//! Graph -> model-file bytes. Deterministic (metadata is a sorted map, everything else is in
//! graph order), and refuses what `load` would refuse, so a saved file always loads.

use super::generated::spore::fb;
use super::load::{check_quant, check_shape};
use super::{FILE_IDENTIFIER, FORMAT_VERSION, Limits, StateEntry, graph_file};
use crate::error::Result;
use crate::graph::{Graph, QuantParams, ValueKind};
use crate::ops::AttrValue;
use crate::tensor::{DType, Tensor};
use flatbuffers::{FlatBufferBuilder, Vector, WIPOffset};
use std::borrow::Cow;

/// Generous per-object overheads (table, vtable, offsets, alignment padding) for the size
/// estimate: it must be an upper bound, because the FlatBuffers builder panics beyond 2 GiB.
const TABLE_OVERHEAD: u64 = 256;

pub(super) fn save(graph: &Graph, state: &[StateEntry], limits: &Limits) -> Result<Vec<u8>> {
    let estimate = check(graph, state, limits)?;
    // Start small: the estimate can be several times the real size for tiny-tensor graphs.
    let capacity = usize::try_from(estimate.min(1 << 24)).unwrap_or(1 << 24);
    let mut fbb = FlatBufferBuilder::with_capacity(capacity);

    let mut tensors = Vec::with_capacity(graph.values().len());
    for v in graph.values() {
        let (kind, data, trainable) = match &v.kind {
            ValueKind::Input => (fb::TensorKind::Input, None, false),
            ValueKind::Constant { data, trainable } => {
                (fb::TensorKind::Constant, Some(data.as_ref()), *trainable)
            }
            ValueKind::Output { .. } => (fb::TensorKind::Activation, None, false),
        };
        let t = write_tensor(
            &mut fbb,
            Some(&v.name),
            v.fact.dtype,
            &v.fact.shape,
            data,
            kind,
            trainable,
            v.fact.quant.as_ref(),
        );
        tensors.push(t);
    }
    let tensors = fbb.create_vector(&tensors);

    let mut nodes = Vec::with_capacity(graph.nodes().len());
    for n in graph.nodes() {
        let name = fbb.create_string(&n.name);
        let op = fbb.create_string(n.op.name());
        let inputs = index_vector(&mut fbb, n.inputs.iter().map(|v| v.0))?;
        let outputs = index_vector(&mut fbb, n.outputs.iter().map(|v| v.0))?;
        let attrs = n.op.attrs();
        let mut items = Vec::with_capacity(attrs.items().len());
        for (attr_name, value) in attrs.items() {
            items.push(write_attr(&mut fbb, attr_name, value));
        }
        let attrs = fbb.create_vector(&items);
        nodes.push(fb::Node::create(
            &mut fbb,
            &fb::NodeArgs {
                name: Some(name),
                op: Some(op),
                inputs: Some(inputs),
                outputs: Some(outputs),
                attrs: Some(attrs),
            },
        ));
    }
    let nodes = fbb.create_vector(&nodes);

    let inputs = index_vector(&mut fbb, graph.inputs().iter().map(|v| v.0))?;
    let outputs = index_vector(&mut fbb, graph.outputs().iter().map(|v| v.0))?;

    let mut metadata = Vec::with_capacity(graph.metadata().len());
    for (k, v) in graph.metadata() {
        let key = fbb.create_string(k);
        let value = fbb.create_string(v);
        metadata.push(fb::KeyValue::create(
            &mut fbb,
            &fb::KeyValueArgs {
                key: Some(key),
                value: Some(value),
            },
        ));
    }
    let metadata = fbb.create_vector(&metadata);

    // Absent (rather than empty) when there is no state, so a plain model carries no trace
    // of the checkpoint feature.
    let optimizer_state = if state.is_empty() {
        None
    } else {
        let mut entries = Vec::with_capacity(state.len());
        for entry in state {
            let name = fbb.create_string(&entry.name);
            let mut ts = Vec::with_capacity(entry.tensors.len());
            for t in &entry.tensors {
                ts.push(write_tensor(
                    &mut fbb,
                    None,
                    t.dtype(),
                    t.dims(),
                    Some(t),
                    fb::TensorKind::Constant,
                    false,
                    None,
                ));
            }
            let ts = fbb.create_vector(&ts);
            entries.push(fb::NamedTensorList::create(
                &mut fbb,
                &fb::NamedTensorListArgs {
                    name: Some(name),
                    tensors: Some(ts),
                },
            ));
        }
        Some(fbb.create_vector(&entries))
    };

    let model = fb::Model::create(
        &mut fbb,
        &fb::ModelArgs {
            format_version: FORMAT_VERSION,
            tensors: Some(tensors),
            nodes: Some(nodes),
            inputs: Some(inputs),
            outputs: Some(outputs),
            metadata: Some(metadata),
            optimizer_state,
        },
    );
    // Size-prefixed, so that truncation and trailing bytes are detected (see `load`).
    fbb.finish_size_prefixed(model, Some(FILE_IDENTIFIER));
    let (mut buf, head) = fbb.collapse();
    buf.drain(..head.min(buf.len()));
    Ok(buf)
}

/// Checks `graph` and `state` against `limits` with the loader's own rules and returns an
/// upper bound of the file size.
fn check(graph: &Graph, state: &[StateEntry], limits: &Limits) -> Result<u64> {
    if graph.values().len() > limits.max_values {
        return Err(graph_file(format!(
            "the graph has {} values, more than the limit of {}",
            graph.values().len(),
            limits.max_values
        )));
    }
    if graph.nodes().len() > limits.max_nodes {
        return Err(graph_file(format!(
            "the graph has {} nodes, more than the limit of {}",
            graph.nodes().len(),
            limits.max_nodes
        )));
    }
    check_order(graph)?;
    let mut total_elements = 0u64;
    let mut size = 1024u64;
    for (i, v) in graph.values().iter().enumerate() {
        let what = || format!("tensor {i} `{}`", v.name);
        check_shape(&what, &v.fact.shape, limits, &mut total_elements)?;
        if let Some(q) = &v.fact.quant {
            check_quant(&what, q, &v.fact.shape)?;
        }
        let data = match &v.kind {
            ValueKind::Constant { data, .. } => data.as_bytes().len() as u64,
            _ => 0,
        };
        let quant = v
            .fact
            .quant
            .as_ref()
            .map_or(0, |q| 8 * q.scale.len() as u64);
        size = size
            .saturating_add(TABLE_OVERHEAD)
            .saturating_add(v.name.len() as u64)
            .saturating_add(8 * v.fact.shape.len() as u64)
            .saturating_add(data)
            .saturating_add(quant);
    }
    for n in graph.nodes() {
        size = size
            .saturating_add(TABLE_OVERHEAD)
            .saturating_add(n.name.len() as u64 + n.op.name().len() as u64)
            .saturating_add(4 * (n.inputs.len() + n.outputs.len()) as u64);
        for (name, value) in n.op.attrs().items() {
            let payload = match value {
                AttrValue::Str(s) => s.len(),
                AttrValue::Ints(v) => 8 * v.len(),
                AttrValue::Floats(v) => 8 * v.len(),
                AttrValue::Int(_) | AttrValue::Float(_) | AttrValue::Bool(_) => 8,
            };
            size = size
                .saturating_add(TABLE_OVERHEAD)
                .saturating_add((name.len() + payload) as u64);
        }
    }
    size = size.saturating_add(8 * (graph.inputs().len() + graph.outputs().len()) as u64);
    for (k, v) in graph.metadata() {
        size = size.saturating_add(TABLE_OVERHEAD + (k.len() + v.len()) as u64);
    }
    for entry in state {
        size = size.saturating_add(TABLE_OVERHEAD + entry.name.len() as u64);
        for (j, t) in entry.tensors.iter().enumerate() {
            let what = || format!("optimizer state `{}` tensor {j}", entry.name);
            check_shape(&what, t.dims(), limits, &mut total_elements)?;
            size = size
                .saturating_add(TABLE_OVERHEAD)
                .saturating_add(8 * t.dims().len() as u64)
                .saturating_add(t.as_bytes().len() as u64);
        }
    }
    let cap = limits
        .max_file_bytes
        .min(flatbuffers::FLATBUFFERS_MAX_BUFFER_SIZE - 1) as u64;
    if size > cap {
        return Err(graph_file(format!(
            "the model needs up to {size} bytes, more than the {cap}-byte file limit"
        )));
    }
    Ok(size)
}

/// The value order `load` requires (see `model.fbs`): graph inputs are the input values in
/// value order, and each node's outputs are consecutive values, after its inputs, in node
/// order. `GraphBuilder` always produces it; checking here means a graph made some other way
/// gets an error now rather than a file that does not load.
fn check_order(graph: &Graph) -> Result<()> {
    let input_values = graph
        .values()
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v.kind, ValueKind::Input))
        .map(|(i, _)| i);
    if !input_values.eq(graph.inputs().iter().map(|v| v.0)) {
        return Err(graph_file(
            "the graph inputs are not its input values in value order",
        ));
    }
    let mut next_node = 0usize;
    for (i, v) in graph.values().iter().enumerate() {
        let ValueKind::Output { node, index: 0 } = v.kind else {
            continue;
        };
        let n = graph.nodes().get(node.0).filter(|_| node.0 == next_node);
        let in_order = n.is_some_and(|n| {
            n.outputs.iter().enumerate().all(|(k, o)| o.0 == i + k)
                && n.inputs.iter().all(|x| x.0 < i)
        });
        if !in_order {
            return Err(graph_file(format!(
                "value {i} `{}`: nodes and their outputs are not in execution order",
                v.name
            )));
        }
        next_node += 1;
    }
    if next_node != graph.nodes().len() {
        return Err(graph_file(
            "some nodes have no first output among the values",
        ));
    }
    Ok(())
}

fn dtype_to_fb(d: DType) -> fb::DataType {
    match d {
        DType::F32 => fb::DataType::F32,
        DType::F16 => fb::DataType::F16,
        DType::I8 => fb::DataType::I8,
        DType::U8 => fb::DataType::U8,
        DType::I32 => fb::DataType::I32,
    }
}

/// A tensor's bytes in the file's byte order (little-endian).
fn le_bytes(t: &Tensor) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(t.as_bytes())
    } else {
        let mut v = t.as_bytes().to_vec();
        v.chunks_exact_mut(t.dtype().size())
            .for_each(<[u8]>::reverse);
        Cow::Owned(v)
    }
}

fn index_vector<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    ids: impl Iterator<Item = usize>,
) -> Result<WIPOffset<Vector<'a, u32>>> {
    let ids = ids
        .map(|i| u32::try_from(i).map_err(|_| graph_file(format!("value index {i} exceeds u32"))))
        .collect::<Result<Vec<u32>>>()?;
    Ok(fbb.create_vector(&ids))
}

#[allow(clippy::too_many_arguments)]
fn write_tensor<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    name: Option<&str>,
    dtype: DType,
    shape: &[usize],
    data: Option<&Tensor>,
    kind: fb::TensorKind,
    trainable: bool,
    quant: Option<&QuantParams>,
) -> WIPOffset<fb::Tensor<'a>> {
    let name = name.map(|n| fbb.create_string(n));
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let shape = fbb.create_vector(&shape);
    let data = data.map(|t| fbb.create_vector(&le_bytes(t)));
    let quant = quant.map(|q| {
        let scale = fbb.create_vector(&q.scale);
        let zero_point = fbb.create_vector(&q.zero_point);
        fb::Quant::create(
            fbb,
            &fb::QuantArgs {
                scale: Some(scale),
                zero_point: Some(zero_point),
                // `check_quant` bounded the axis by the rank (<= max_rank).
                axis: q.axis.map_or(-1, |a| i32::try_from(a).unwrap_or(i32::MAX)),
            },
        )
    });
    fb::Tensor::create(
        fbb,
        &fb::TensorArgs {
            name,
            dtype: dtype_to_fb(dtype),
            shape: Some(shape),
            data,
            kind,
            trainable,
            quant,
        },
    )
}

fn write_attr<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    name: &str,
    value: &AttrValue,
) -> WIPOffset<fb::Attr<'a>> {
    let name = fbb.create_string(name);
    let (value_type, value) = match value {
        AttrValue::Int(v) => (
            fb::AttrValue::IntValue,
            fb::IntValue::create(fbb, &fb::IntValueArgs { value: *v }).as_union_value(),
        ),
        AttrValue::Float(v) => (
            fb::AttrValue::FloatValue,
            fb::FloatValue::create(fbb, &fb::FloatValueArgs { value: *v }).as_union_value(),
        ),
        AttrValue::Bool(v) => (
            fb::AttrValue::BoolValue,
            fb::BoolValue::create(fbb, &fb::BoolValueArgs { value: *v }).as_union_value(),
        ),
        AttrValue::Str(s) => {
            let s = fbb.create_string(s);
            (
                fb::AttrValue::StringValue,
                fb::StringValue::create(fbb, &fb::StringValueArgs { value: Some(s) })
                    .as_union_value(),
            )
        }
        AttrValue::Ints(v) => {
            let v = fbb.create_vector(v);
            (
                fb::AttrValue::IntsValue,
                fb::IntsValue::create(fbb, &fb::IntsValueArgs { value: Some(v) }).as_union_value(),
            )
        }
        AttrValue::Floats(v) => {
            let v = fbb.create_vector(v);
            (
                fb::AttrValue::FloatsValue,
                fb::FloatsValue::create(fbb, &fb::FloatsValueArgs { value: Some(v) })
                    .as_union_value(),
            )
        }
    };
    fb::Attr::create(
        fbb,
        &fb::AttrArgs {
            name: Some(name),
            value_type,
            value: Some(value),
        },
    )
}
