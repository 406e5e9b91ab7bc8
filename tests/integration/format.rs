//! The model file format: exact, deterministic round trips (graphs, every op's attributes,
//! metadata, trainable flags, quantization, optimizer state) and the loader's refusals:
//! every malformed or hostile file gives code -200 with a specific message and never panics.
//!
//! Malformed files are written with the same generated FlatBuffers code the crate uses
//! (compiled here a second time, since it is private to the crate) through a plain mirror of
//! the schema, so each test changes exactly one thing in an otherwise valid file.

use crate::common::seed;
use spore::format::{self, Limits, StateEntry};
use spore::graph::{Graph, GraphBuilder, QuantParams, ValueId, ValueKind};
use spore::kernels_cpu::rng::Rng;
use spore::ops::Op;
use spore::ops::activation::{Activation, ActivationKind};
use spore::ops::binary::{Binary, BinaryKind};
use spore::ops::conv2d::{Conv2d, Padding};
use spore::{DType, Error, Tensor};

#[allow(
    unused_imports,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    deprecated,
    unsafe_op_in_unsafe_fn,
    clippy::all
)]
#[path = "../../src/format/generated/model_generated.rs"]
#[rustfmt::skip]
mod generated;

use generated::spore::fb;

// ---- a plain mirror of the schema, to write files the saver never would ----------------

#[derive(Debug, Clone, PartialEq)]
enum RawAttrValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    /// Union type NONE and no value.
    Empty,
    /// A value written under another union type code.
    Retyped(u8, Box<RawAttrValue>),
}

#[derive(Debug, Clone, PartialEq)]
struct RawTensor {
    name: Option<String>,
    dtype: u8,
    shape: Vec<u64>,
    data: Option<Vec<u8>>,
    kind: u8,
    trainable: bool,
    quant: Option<(Vec<f32>, Vec<i32>, i32)>,
}

#[derive(Debug, Clone, PartialEq)]
struct RawNode {
    name: Option<String>,
    op: Option<String>,
    inputs: Vec<u32>,
    outputs: Vec<u32>,
    attrs: Vec<(Option<String>, RawAttrValue)>,
}

#[derive(Debug, Clone, PartialEq)]
struct RawModel {
    version: u32,
    tensors: Vec<RawTensor>,
    nodes: Vec<RawNode>,
    inputs: Vec<u32>,
    outputs: Vec<u32>,
    metadata: Vec<(String, String)>,
    state: Option<Vec<(String, Vec<RawTensor>)>>,
}

fn decode_tensor(t: fb::Tensor<'_>) -> RawTensor {
    RawTensor {
        name: t.name().map(str::to_string),
        dtype: t.dtype().0,
        shape: t.shape().map(|v| v.iter().collect()).unwrap_or_default(),
        data: t.data().map(|d| d.bytes().to_vec()),
        kind: t.kind().0,
        trainable: t.trainable(),
        quant: t.quant().map(|q| {
            (
                q.scale().map(|v| v.iter().collect()).unwrap_or_default(),
                q.zero_point()
                    .map(|v| v.iter().collect())
                    .unwrap_or_default(),
                q.axis(),
            )
        }),
    }
}

fn decode(bytes: &[u8]) -> RawModel {
    let m = fb::size_prefixed_root_as_model(bytes).unwrap();
    RawModel {
        version: m.format_version(),
        tensors: m.tensors().unwrap().iter().map(decode_tensor).collect(),
        nodes: m
            .nodes()
            .unwrap()
            .iter()
            .map(|n| RawNode {
                name: n.name().map(str::to_string),
                op: n.op().map(str::to_string),
                inputs: n.inputs().unwrap().iter().collect(),
                outputs: n.outputs().unwrap().iter().collect(),
                attrs: n
                    .attrs()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        let v = match a.value_type() {
                            fb::AttrValue::IntValue => {
                                RawAttrValue::Int(a.value_as_int_value().unwrap().value())
                            }
                            fb::AttrValue::FloatValue => {
                                RawAttrValue::Float(a.value_as_float_value().unwrap().value())
                            }
                            fb::AttrValue::BoolValue => {
                                RawAttrValue::Bool(a.value_as_bool_value().unwrap().value())
                            }
                            fb::AttrValue::StringValue => RawAttrValue::Str(
                                a.value_as_string_value()
                                    .unwrap()
                                    .value()
                                    .unwrap()
                                    .to_string(),
                            ),
                            fb::AttrValue::IntsValue => RawAttrValue::Ints(
                                a.value_as_ints_value()
                                    .unwrap()
                                    .value()
                                    .unwrap()
                                    .iter()
                                    .collect(),
                            ),
                            fb::AttrValue::FloatsValue => RawAttrValue::Floats(
                                a.value_as_floats_value()
                                    .unwrap()
                                    .value()
                                    .unwrap()
                                    .iter()
                                    .collect(),
                            ),
                            _ => RawAttrValue::Empty,
                        };
                        (a.name().map(str::to_string), v)
                    })
                    .collect(),
            })
            .collect(),
        inputs: m.inputs().unwrap().iter().collect(),
        outputs: m.outputs().unwrap().iter().collect(),
        metadata: m
            .metadata()
            .unwrap()
            .iter()
            .map(|kv| {
                (
                    kv.key().unwrap().to_string(),
                    kv.value().unwrap().to_string(),
                )
            })
            .collect(),
        state: m.optimizer_state().map(|s| {
            s.iter()
                .map(|e| {
                    (
                        e.name().unwrap().to_string(),
                        e.tensors().unwrap().iter().map(decode_tensor).collect(),
                    )
                })
                .collect()
        }),
    }
}

type Fbb<'a> = flatbuffers::FlatBufferBuilder<'a>;

fn encode_tensor<'a>(fbb: &mut Fbb<'a>, t: &RawTensor) -> flatbuffers::WIPOffset<fb::Tensor<'a>> {
    let name = t.name.as_deref().map(|n| fbb.create_string(n));
    let shape = fbb.create_vector(&t.shape);
    let data = t.data.as_ref().map(|d| fbb.create_vector(d));
    let quant = t.quant.as_ref().map(|(s, z, axis)| {
        let scale = fbb.create_vector(s);
        let zero_point = fbb.create_vector(z);
        fb::Quant::create(
            fbb,
            &fb::QuantArgs {
                scale: Some(scale),
                zero_point: Some(zero_point),
                axis: *axis,
            },
        )
    });
    fb::Tensor::create(
        fbb,
        &fb::TensorArgs {
            name,
            dtype: fb::DataType(t.dtype),
            shape: Some(shape),
            data,
            kind: fb::TensorKind(t.kind),
            trainable: t.trainable,
            quant,
        },
    )
}

/// Writes `m` in the saver's object order, so an unmodified mirror gives identical bytes.
fn encode_attr_value(
    fbb: &mut Fbb<'_>,
    av: &RawAttrValue,
) -> (
    fb::AttrValue,
    Option<flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>>,
) {
    match av {
        RawAttrValue::Int(v) => (
            fb::AttrValue::IntValue,
            Some(fb::IntValue::create(fbb, &fb::IntValueArgs { value: *v }).as_union_value()),
        ),
        RawAttrValue::Float(v) => (
            fb::AttrValue::FloatValue,
            Some(fb::FloatValue::create(fbb, &fb::FloatValueArgs { value: *v }).as_union_value()),
        ),
        RawAttrValue::Bool(v) => (
            fb::AttrValue::BoolValue,
            Some(fb::BoolValue::create(fbb, &fb::BoolValueArgs { value: *v }).as_union_value()),
        ),
        RawAttrValue::Str(s) => {
            let s = fbb.create_string(s);
            (
                fb::AttrValue::StringValue,
                Some(
                    fb::StringValue::create(fbb, &fb::StringValueArgs { value: Some(s) })
                        .as_union_value(),
                ),
            )
        }
        RawAttrValue::Ints(v) => {
            let v = fbb.create_vector(v);
            (
                fb::AttrValue::IntsValue,
                Some(
                    fb::IntsValue::create(fbb, &fb::IntsValueArgs { value: Some(v) })
                        .as_union_value(),
                ),
            )
        }
        RawAttrValue::Floats(v) => {
            let v = fbb.create_vector(v);
            (
                fb::AttrValue::FloatsValue,
                Some(
                    fb::FloatsValue::create(fbb, &fb::FloatsValueArgs { value: Some(v) })
                        .as_union_value(),
                ),
            )
        }
        RawAttrValue::Empty => (fb::AttrValue::NONE, None),
        RawAttrValue::Retyped(code, inner) => {
            (fb::AttrValue(*code), encode_attr_value(fbb, inner).1)
        }
    }
}

fn encode(m: &RawModel) -> Vec<u8> {
    let mut fbb = Fbb::new();
    let tensors: Vec<_> = m
        .tensors
        .iter()
        .map(|t| encode_tensor(&mut fbb, t))
        .collect();
    let tensors = fbb.create_vector(&tensors);
    let mut nodes = Vec::new();
    for n in &m.nodes {
        let name = n.name.as_deref().map(|s| fbb.create_string(s));
        let op = n.op.as_deref().map(|s| fbb.create_string(s));
        let inputs = fbb.create_vector(&n.inputs);
        let outputs = fbb.create_vector(&n.outputs);
        let mut attrs = Vec::new();
        for (an, av) in &n.attrs {
            let an = an.as_deref().map(|s| fbb.create_string(s));
            let (ty, val) = encode_attr_value(&mut fbb, av);
            attrs.push(fb::Attr::create(
                &mut fbb,
                &fb::AttrArgs {
                    name: an,
                    value_type: ty,
                    value: val,
                },
            ));
        }
        let attrs = fbb.create_vector(&attrs);
        nodes.push(fb::Node::create(
            &mut fbb,
            &fb::NodeArgs {
                name,
                op,
                inputs: Some(inputs),
                outputs: Some(outputs),
                attrs: Some(attrs),
            },
        ));
    }
    let nodes = fbb.create_vector(&nodes);
    let inputs = fbb.create_vector(&m.inputs);
    let outputs = fbb.create_vector(&m.outputs);
    let mut md = Vec::new();
    for (k, v) in &m.metadata {
        let key = fbb.create_string(k);
        let value = fbb.create_string(v);
        md.push(fb::KeyValue::create(
            &mut fbb,
            &fb::KeyValueArgs {
                key: Some(key),
                value: Some(value),
            },
        ));
    }
    let metadata = fbb.create_vector(&md);
    let state = m.state.as_ref().map(|entries| {
        let mut out = Vec::new();
        for (name, ts) in entries {
            let name = fbb.create_string(name);
            let ts: Vec<_> = ts.iter().map(|t| encode_tensor(&mut fbb, t)).collect();
            let ts = fbb.create_vector(&ts);
            out.push(fb::NamedTensorList::create(
                &mut fbb,
                &fb::NamedTensorListArgs {
                    name: Some(name),
                    tensors: Some(ts),
                },
            ));
        }
        fbb.create_vector(&out)
    });
    let model = fb::Model::create(
        &mut fbb,
        &fb::ModelArgs {
            format_version: m.version,
            tensors: Some(tensors),
            nodes: Some(nodes),
            inputs: Some(inputs),
            outputs: Some(outputs),
            metadata: Some(metadata),
            optimizer_state: state,
        },
    );
    fbb.finish_size_prefixed(model, Some("SPOR"));
    fbb.finished_data().to_vec()
}

// ---- fixtures -------------------------------------------------------------------------------

fn random(rng: &mut Rng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    Tensor::from_vec(
        dims,
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect(),
    )
    .unwrap()
}

/// x [1,6,6,3] -> conv 3x3 SAME (trainable w, b) -> relu6 -> * scale -> + skip 1x1 conv ->
/// "prob"; plus an int8 per-channel-quantized constant, a quantized activation and metadata.
fn sample_graph(rng: &mut Rng) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("x", DType::F32, &[1, 6, 6, 3]).unwrap();
    let w = b.parameter("w", random(rng, &[4, 3, 3, 3])).unwrap();
    let bias = b.parameter("bias", random(rng, &[4])).unwrap();
    let conv = Conv2d {
        padding: Padding::Same,
        ..Default::default()
    };
    let c = b.node1("conv", conv, &[x, w, bias]).unwrap();
    let r = b
        .node1(
            "relu6",
            Activation {
                kind: ActivationKind::Relu6,
            },
            &[c],
        )
        .unwrap();
    let s = b.constant("scale", random(rng, &[4])).unwrap();
    let m = b
        .node1(
            "mul",
            Binary {
                kind: BinaryKind::Mul,
            },
            &[r, s],
        )
        .unwrap();
    let w2 = b.parameter("w_skip", random(rng, &[4, 1, 1, 3])).unwrap();
    let fused = Conv2d {
        act: Some(ActivationKind::LeakyRelu(0.25)),
        ..Default::default()
    };
    let k = b.node1("skip", fused, &[x, w2]).unwrap();
    let y = b
        .node1(
            "prob",
            Binary {
                kind: BinaryKind::Add,
            },
            &[m, k],
        )
        .unwrap();
    let q = b
        .constant(
            "qweight",
            Tensor::from_vec(&[3, 2], vec![-128i8, -1, 0, 1, 7, 127]).unwrap(),
        )
        .unwrap();
    b.set_quant(
        q,
        Some(QuantParams {
            scale: vec![0.5, 0.25, 0.125],
            zero_point: vec![0, -3, 5],
            axis: Some(0),
        }),
    )
    .unwrap();
    b.set_quant(
        r,
        Some(QuantParams {
            scale: vec![6.0 / 255.0],
            zero_point: vec![-128],
            axis: None,
        }),
    )
    .unwrap();
    b.output(y).unwrap();
    b.output(r).unwrap();
    b.metadata("producer", "spore tests");
    b.metadata("description", "conv, relu6, mul, skip conv, add");
    b.build().unwrap()
}

fn sample_bytes() -> Vec<u8> {
    format::save(&sample_graph(&mut Rng::new(7))).unwrap()
}

/// Asserts `r` is a GraphFile error (code -200) whose message contains `needle`.
#[track_caller]
fn expect_graph_file<T: std::fmt::Debug>(r: spore::Result<T>, needle: &str) {
    match r {
        Ok(v) => panic!("expected a -200 error containing `{needle}`, got Ok({v:?})"),
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(e.code().as_i32(), -200, "wrong code for: {msg}");
            assert!(matches!(e, Error::GraphFile { .. }), "not GraphFile: {e:?}");
            assert!(
                msg.contains(needle),
                "message `{msg}` does not contain `{needle}`"
            );
        }
    }
}

/// Saves the sample, applies `edit` to its mirror, and loads the result.
fn load_edited(edit: impl FnOnce(&mut RawModel)) -> spore::Result<Graph> {
    let mut raw = decode(&sample_bytes());
    edit(&mut raw);
    format::load(&encode(&raw))
}

fn tensor_index(raw: &RawModel, name: &str) -> usize {
    raw.tensors
        .iter()
        .position(|t| t.name.as_deref() == Some(name))
        .unwrap()
}

fn node_index(raw: &RawModel, name: &str) -> usize {
    raw.nodes
        .iter()
        .position(|n| n.name.as_deref() == Some(name))
        .unwrap()
}

// ---- round trips ----------------------------------------------------------------------------

#[test]
fn round_trip_is_exact_and_deterministic() {
    let g = sample_graph(&mut Rng::new(seed("format/round_trip")));
    let bytes = format::save(&g).unwrap();
    assert_eq!(&bytes[8..12], b"SPOR");
    assert_eq!(
        u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize,
        bytes.len() - 4
    );
    let back = format::load(&bytes).unwrap();
    assert_eq!(back, g);
    assert_eq!(
        format::save(&back).unwrap(),
        bytes,
        "re-saving must give identical bytes"
    );
    assert_eq!(
        format::save(&g).unwrap(),
        bytes,
        "saving twice must give identical bytes"
    );
    assert_eq!(Graph::from_bytes(&g.to_bytes().unwrap()).unwrap(), g);
}

#[test]
fn metadata_trainable_flags_and_quant_round_trip() {
    let g = format::load(&sample_bytes()).unwrap();
    assert_eq!(
        g.metadata().get("producer").map(String::as_str),
        Some("spore tests")
    );
    assert_eq!(g.metadata().len(), 2);
    let trainable = |name: &str| match &g.value(g.value_by_name(name).unwrap()).unwrap().kind {
        ValueKind::Constant { trainable, .. } => *trainable,
        other => panic!("{name} is {other:?}"),
    };
    assert!(trainable("w") && trainable("bias") && trainable("w_skip"));
    assert!(!trainable("scale") && !trainable("qweight"));
    let q = g.value(g.value_by_name("qweight").unwrap()).unwrap();
    assert_eq!(q.fact.dtype, DType::I8);
    assert_eq!(
        q.fact.quant,
        Some(QuantParams {
            scale: vec![0.5, 0.25, 0.125],
            zero_point: vec![0, -3, 5],
            axis: Some(0)
        })
    );
    match &q.kind {
        ValueKind::Constant { data, .. } => {
            assert_eq!(data.to_vec::<i8>().unwrap(), vec![-128, -1, 0, 1, 7, 127]);
        }
        other => panic!("{other:?}"),
    }
    let r = g.value(g.value_by_name("relu6").unwrap()).unwrap();
    assert_eq!(
        r.fact.quant.as_ref().map(|q| q.zero_point.clone()),
        Some(vec![-128])
    );
    assert_eq!(g.outputs().len(), 2);
    assert_eq!(g.inputs(), &[ValueId(0)]);
}

#[test]
fn the_test_mirror_is_faithful() {
    // The malformed-file tests below are only meaningful if an unedited mirror reproduces
    // the saver's bytes exactly.
    let bytes = sample_bytes();
    assert_eq!(encode(&decode(&bytes)), bytes);
    assert!(format::load(&encode(&decode(&bytes))).is_ok());
}

#[test]
fn every_op_case_round_trips() {
    // Each conformance case as a one-node graph (first input fed, the rest constants): every
    // op's attributes survive the file, whatever ops exist by now.
    let mut rng = Rng::new(seed("format/every_op"));
    let cases = Op::all_cases(&mut rng).unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let mut b = GraphBuilder::new();
        let mut ids = Vec::new();
        for (i, t) in case.inputs.iter().enumerate() {
            ids.push(if i == 0 {
                b.input("in0", t.dtype(), t.dims()).unwrap()
            } else {
                b.parameter(&format!("in{i}"), t.clone()).unwrap()
            });
        }
        let outs = b.node("node", case.op.clone(), &ids).unwrap();
        for o in outs {
            b.output(o).unwrap();
        }
        let g = b.build().unwrap();
        let bytes = format::save(&g).unwrap_or_else(|e| panic!("{}: save: {e}", case.name));
        let back = format::load(&bytes).unwrap_or_else(|e| panic!("{}: load: {e}", case.name));
        assert_eq!(back, g, "{}: the loaded graph differs", case.name);
        assert_eq!(
            format::save(&back).unwrap(),
            bytes,
            "{}: bytes differ",
            case.name
        );
    }
}

#[test]
fn checkpoint_round_trips_optimizer_state() {
    let g = sample_graph(&mut Rng::new(3));
    let mut rng = Rng::new(4);
    let state = vec![
        StateEntry {
            name: "w".into(),
            tensors: vec![
                random(&mut rng, &[4, 3, 3, 3]),
                random(&mut rng, &[4, 3, 3, 3]),
            ],
        },
        StateEntry {
            name: "step".into(),
            tensors: vec![Tensor::scalar(17i32)],
        },
        StateEntry {
            name: "empty".into(),
            tensors: vec![],
        },
    ];
    let bytes = format::save_checkpoint(&g, &state).unwrap();
    let cp = format::load_checkpoint(&bytes).unwrap();
    assert_eq!(cp.graph, g);
    assert_eq!(cp.optimizer_state, state);
    assert_eq!(
        format::save_checkpoint(&cp.graph, &cp.optimizer_state).unwrap(),
        bytes
    );
    // A plain load reads the graph and drops the state.
    assert_eq!(format::load(&bytes).unwrap(), g);
    // A plain model has no state section at all.
    assert_eq!(decode(&format::save(&g).unwrap()).state, None);

    let dup = vec![state[1].clone(), state[1].clone()];
    let mut raw = decode(&format::save_checkpoint(&g, &dup).unwrap());
    expect_graph_file(
        format::load_checkpoint(&encode(&raw)),
        "optimizer state `step` appears twice",
    );
    raw.state = Some(vec![(
        "m".into(),
        vec![RawTensor {
            data: Some(vec![0; 3]),
            ..raw_const()
        }],
    )]);
    expect_graph_file(
        format::load_checkpoint(&encode(&raw)),
        "optimizer state `m` tensor 0: 3 data bytes",
    );
}

fn raw_const() -> RawTensor {
    RawTensor {
        name: None,
        dtype: 0,
        shape: vec![2],
        data: Some(vec![0; 8]),
        kind: 1,
        trainable: false,
        quant: None,
    }
}

#[test]
fn a_long_chain_round_trips_under_the_default_limits() {
    // Thousands of tiny tables: the worst legitimate ratio of verifier "apparent size" to file
    // size, which `Limits::max_apparent_size_factor` must allow.
    let mut b = GraphBuilder::new();
    let mut v = b.input("x", DType::F32, &[2]).unwrap();
    for i in 0..3000 {
        v = b
            .node1(
                &format!("a{i}"),
                Activation {
                    kind: ActivationKind::LeakyRelu(0.5),
                },
                &[v],
            )
            .unwrap();
    }
    b.output(v).unwrap();
    let g = b.build().unwrap();
    let bytes = format::save(&g).unwrap();
    assert_eq!(format::load(&bytes).unwrap(), g);
    // The smallest factor this file passes with, for the record in `Limits`' docs.
    let min_factor = (1..=8)
        .find(|&f| {
            let limits = Limits {
                max_apparent_size_factor: f,
                ..Limits::default()
            };
            format::load_with_limits(&bytes, &limits).is_ok()
        })
        .unwrap();
    println!(
        "chain of 3000 nodes: {} bytes, passes with apparent-size factor {min_factor}",
        bytes.len()
    );
    let limits = Limits {
        max_nodes: 100,
        ..Limits::default()
    };
    expect_graph_file(
        format::load_with_limits(&bytes, &limits),
        "3000 nodes, more than the limit of 100",
    );
}

#[test]
fn file_helpers_round_trip() {
    let g = sample_graph(&mut Rng::new(5));
    let dir = std::env::temp_dir().join(format!("spore-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("sample.{}", format::FILE_EXTENSION));
    format::save_file(&g, &path).unwrap();
    assert_eq!(format::load_file(&path).unwrap(), g);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        format::load_file(&path).unwrap_err().code().as_i32(),
        -1,
        "a missing file is an I/O error"
    );
}

// ---- refusals -------------------------------------------------------------------------------

#[test]
fn empty_short_and_wrongly_identified_buffers() {
    expect_graph_file(format::load(&[]), "empty buffer");
    expect_graph_file(format::load(&[1, 2, 3]), "too short");
    let mut bytes = sample_bytes();
    bytes[8..12].copy_from_slice(b"TFL3");
    expect_graph_file(format::load(&bytes), "wrong file identifier \"TFL3\"");
    expect_graph_file(format::load(&[0u8; 64]), "wrong file identifier");
}

#[test]
fn truncation_at_every_length_is_refused() {
    let bytes = sample_bytes();
    for len in 0..bytes.len() {
        let r = format::load(&bytes[..len]);
        let e = r
            .err()
            .unwrap_or_else(|| panic!("truncated to {len} bytes but loaded"));
        assert_eq!(e.code().as_i32(), -200, "truncated to {len}: {e}");
    }
    expect_graph_file(
        format::load(&bytes[..bytes.len() - 1]),
        "the file is truncated",
    );
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 8]);
    expect_graph_file(format::load(&longer), "the file is followed by extra bytes");
}

#[test]
fn every_single_bit_flip_loads_or_errors_never_panics() {
    let bytes = sample_bytes();
    assert!(format::load(&bytes).is_ok());
    let (mut ok, mut refused) = (0usize, 0usize);
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        match std::panic::catch_unwind(|| format::load(&b)) {
            Ok(Ok(g)) => {
                ok += 1;
                // Whatever loads is a valid graph: it saves and loads back to itself.
                let again = format::save(&g).unwrap();
                assert_eq!(format::load(&again).unwrap(), g, "bit {bit}");
            }
            Ok(Err(e)) => {
                refused += 1;
                assert_eq!(e.code().as_i32(), -200, "bit {bit}: {e}");
            }
            Err(_) => panic!("flipping bit {bit} made `load` panic"),
        }
    }
    println!(
        "{} bit flips: {ok} still load (data, padding), {refused} refused",
        bytes.len() * 8
    );
    assert!(refused > 0);
}

#[test]
fn unsupported_version_names_both_versions() {
    let r = load_edited(|m| m.version = 2);
    expect_graph_file(
        r,
        "unsupported format version 2: this build of Spore reads version 1",
    );
    expect_graph_file(load_edited(|m| m.version = 0), "format version 0");
}

#[test]
fn out_of_range_indices_are_refused() {
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "relu6");
            m.nodes[j].inputs[0] = 999;
        }),
        "node `relu6` input #0 is tensor index 999",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "conv");
            m.nodes[j].outputs[0] = u32::MAX;
        }),
        "node `conv` output #0 is tensor index 4294967295",
    );
    expect_graph_file(
        load_edited(|m| m.outputs = vec![100]),
        "graph output #0 is tensor index 100",
    );
    expect_graph_file(
        load_edited(|m| m.inputs = vec![77]),
        "graph input #0 is tensor index 77",
    );
}

#[test]
fn producers_inputs_and_outputs_are_checked() {
    expect_graph_file(
        load_edited(|m| {
            let w = tensor_index(m, "w") as u32;
            let j = node_index(m, "relu6");
            m.nodes[j].outputs[0] = w;
        }),
        "a constant tensor: nodes produce activation tensors only",
    );
    expect_graph_file(
        load_edited(|m| {
            let c = tensor_index(m, "conv") as u32;
            let j = node_index(m, "relu6");
            m.nodes[j].outputs[0] = c;
        }),
        "tensor 3 `conv` is produced twice",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "skip");
            m.nodes.remove(j);
        }),
        "activation tensor 8 `skip` is produced by no node",
    );
    expect_graph_file(
        load_edited(|m| m.nodes.swap(0, 1)),
        "nodes are out of order",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "conv");
            let later = tensor_index(m, "scale") as u32;
            m.nodes[j].inputs[0] = later;
        }),
        "node `conv` reads tensor 5 `scale`, which is not defined before the node",
    );
    expect_graph_file(
        load_edited(|m| m.inputs.clear()),
        "input tensor 0 `x` is missing from the graph inputs",
    );
    expect_graph_file(
        load_edited(|m| m.inputs = vec![1]),
        "graph input #0 is tensor 1 `w`, a constant tensor",
    );
    expect_graph_file(
        load_edited(|m| m.outputs.clear()),
        "the graph has no outputs",
    );
    expect_graph_file(
        load_edited(|m| m.outputs.push(m.outputs[0])),
        "graph output #2: tensor 9 `prob` is listed twice",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "relu6");
            m.nodes[j].outputs.clear();
        }),
        "node 1 `relu6` has no outputs",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "relu6");
            m.tensors[i].name = Some("other".into());
        }),
        "tensor 4 is named `other` in the file, but its node names it `relu6`",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "scale");
            m.tensors[i].name = Some("w".into());
        }),
        "`w` is already used",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "scale");
            m.tensors[i].name = None;
        }),
        "tensor 5 has no name",
    );
    expect_graph_file(
        load_edited(|m| m.metadata.push(("producer".into(), "again".into()))),
        "metadata key `producer` appears twice",
    );
}

#[test]
fn tensor_declarations_are_checked() {
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "w");
            m.tensors[i].data.as_mut().unwrap().pop();
        }),
        "tensor 1 `w`: 431 data bytes, but shape [4, 3, 3, 3] of f32 needs 432",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "w");
            m.tensors[i].shape = vec![5, 3, 3, 3];
        }),
        "needs 540",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].data = Some(vec![0; 432])),
        "tensor 0 `x`: an input tensor must not carry data, found 432 bytes",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].trainable = true),
        "only constants can be trainable",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].dtype = 9),
        "tensor 0 `x`: unknown dtype code 9",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].kind = 3),
        "tensor 0 `x`: unknown tensor kind code 3",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].shape = vec![1; 9]),
        "tensor 0 `x`: rank 9 exceeds the limit of 8",
    );
    // Declared output shapes must match inference.
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "relu6");
            m.tensors[i].shape = vec![1, 6, 6, 5];
        }),
        "the file declares f32 [1, 6, 6, 5], but shape inference gives f32 [1, 6, 6, 4]",
    );
    // A changed input shape makes inference itself fail.
    expect_graph_file(
        load_edited(|m| m.tensors[0].shape = vec![1, 6, 6, 2]),
        "node `conv`: conv2d `conv`: cannot infer shape",
    );
}

#[test]
fn huge_declared_shapes_error_without_allocating() {
    // An input of 2^80 elements, and a constant claiming 2^40 x 2^40 with no data: refused by
    // the shape limits before any allocation (an attempt would abort the test process).
    expect_graph_file(
        load_edited(|m| m.tensors[0].shape = vec![1 << 40, 1 << 40]),
        "dimension 1099511627776 of shape [1099511627776, 1099511627776] exceeds the limit",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = tensor_index(m, "scale");
            m.tensors[i].shape = vec![1 << 40, 1 << 40];
        }),
        "tensor 5 `scale`: dimension 1099511627776",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].shape = vec![1 << 20, 1 << 20, 1 << 20]),
        "has more than the limit of 4294967296 elements per tensor",
    );
    expect_graph_file(
        load_edited(|m| m.tensors[0].shape = vec![0, 1 << 40]),
        "dimension 1099511627776",
    );
    // Many tensors each within the per-tensor cap still hit the total cap.
    let limits = Limits {
        max_total_elements: 500,
        ..Limits::default()
    };
    expect_graph_file(
        format::load_with_limits(&sample_bytes(), &limits),
        "more than the limit of 500 elements over all tensors",
    );
    let limits = Limits {
        max_rank: 2,
        ..Limits::default()
    };
    expect_graph_file(
        format::load_with_limits(&sample_bytes(), &limits),
        "rank 4 exceeds the limit of 2",
    );
    // `save` applies the same limits, so it never writes a file `load` refuses.
    expect_graph_file(
        format::save_with_limits(&sample_graph(&mut Rng::new(1)), &limits),
        "rank 4 exceeds the limit of 2",
    );
}

#[test]
fn quantization_parameters_are_checked() {
    let q = |m: &mut RawModel| tensor_index(m, "qweight");
    expect_graph_file(
        load_edited(|m| {
            let i = q(m);
            m.tensors[i].quant.as_mut().unwrap().0.pop();
        }),
        "quantization has 2 scales but 3 zero points",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = q(m);
            m.tensors[i].quant.as_mut().unwrap().2 = 1;
        }),
        "quantization along axis 1 needs 2 scales for shape [3, 2], found 3",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = q(m);
            m.tensors[i].quant.as_mut().unwrap().2 = 7;
        }),
        "quantization axis 7 is out of range",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = q(m);
            m.tensors[i].quant.as_mut().unwrap().2 = -2;
        }),
        "quantization axis -2 is invalid",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = q(m);
            m.tensors[i].quant.as_mut().unwrap().0[1] = f32::NAN;
        }),
        "scale NaN is not finite and positive",
    );
    expect_graph_file(
        load_edited(|m| {
            let i = q(m);
            m.tensors[i].quant.as_mut().unwrap().2 = -1;
        }),
        "is per tensor but has 3 scales",
    );
}

#[test]
fn ops_and_attributes_are_checked() {
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "relu6");
            m.nodes[j].op = Some("frobnicate".into());
        }),
        "node `relu6` has unknown op `frobnicate` (this build knows conv2d, activation, binary",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "relu6");
            m.nodes[j].op = None;
        }),
        "node 1 `relu6` has no op name",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "relu6");
            m.nodes[j].attrs[0].1 = RawAttrValue::Str("bogus".into());
        }),
        "unknown activation `bogus`",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "conv");
            let a = m.nodes[j]
                .attrs
                .iter_mut()
                .find(|(n, _)| n.as_deref() == Some("strides"))
                .unwrap();
            a.1 = RawAttrValue::Ints(vec![0, 1]);
        }),
        "invalid attribute `strides`: must be positive",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "conv");
            let a = m.nodes[j]
                .attrs
                .iter_mut()
                .find(|(n, _)| n.as_deref() == Some("groups"))
                .unwrap();
            a.1 = RawAttrValue::Float(1.5);
        }),
        "invalid attribute `groups`: expected an integer",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "conv");
            m.nodes[j]
                .attrs
                .retain(|(n, _)| n.as_deref() != Some("padding"));
        }),
        "invalid attribute `padding`: missing",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "mul");
            m.nodes[j].attrs[0].1 = RawAttrValue::Empty;
        }),
        "node `mul` attribute `kind` has no value",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "mul");
            m.nodes[j].attrs[0].1 = RawAttrValue::Retyped(42, Box::new(RawAttrValue::Int(1)));
        }),
        "unknown value type code 42",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "mul");
            let dup = m.nodes[j].attrs[0].clone();
            m.nodes[j].attrs.push(dup);
        }),
        "node `mul` has attribute `kind` twice",
    );
    expect_graph_file(
        load_edited(|m| {
            let j = node_index(m, "mul");
            m.nodes[j].attrs[0].0 = None;
        }),
        "node `mul` attribute #0 has no name",
    );
}

// ---- fuzz smoke -------------------------------------------------------------------------------

/// Seed corpus: valid models of several shapes, one per few op cases. The same files seed
/// cargo-fuzz (`tools/fuzz/seeds`, see tools/fuzz/README.md).
fn corpus() -> Vec<Vec<u8>> {
    let mut out = vec![sample_bytes()];
    let g = sample_graph(&mut Rng::new(11));
    let state = vec![StateEntry {
        name: "w".into(),
        tensors: vec![Tensor::scalar(1.5f32)],
    }];
    out.push(format::save_checkpoint(&g, &state).unwrap());
    let mut rng = Rng::new(12);
    for case in Op::all_cases(&mut rng).unwrap().into_iter().step_by(7) {
        let mut b = GraphBuilder::new();
        let ids: Vec<ValueId> = case
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i == 0 {
                    b.input("a", t.dtype(), t.dims()).unwrap()
                } else {
                    b.constant(&format!("c{i}"), t.clone()).unwrap()
                }
            })
            .collect();
        for o in b.node("n", case.op, &ids).unwrap() {
            b.output(o).unwrap();
        }
        out.push(format::save(&b.build().unwrap()).unwrap());
    }
    out
}

/// Mutated inputs per smoke run: ~0.5 s in the test profile.
const MUTATIONS: usize = 20_000;

#[test]
fn format_fuzz_smoke() {
    // The cargo-fuzz target's body over the corpus and deterministic mutations of it: bit
    // flips, byte overwrites with interesting values, truncations, splices of two models and
    // duplicated ranges. `fuzz_one` returns Err on a broken round-trip property; a panic
    // inside `load` fails this test too. See tools/fuzz/README.md for why this runs here.
    let corpus = corpus();
    // Refreshes cargo-fuzz's committed seeds: SPORE_FUZZ_SEEDS_OUT=tools/fuzz/seeds.
    if let Ok(dir) = std::env::var("SPORE_FUZZ_SEEDS_OUT") {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, c) in corpus.iter().enumerate() {
            std::fs::write(
                std::path::Path::new(&dir).join(format!("seed_{i:02}.spore")),
                c,
            )
            .unwrap();
        }
    }
    // Deterministic by default, so CI runs the same inputs every time; SPORE_TEST_SEED
    // explores others.
    let s = std::env::var("SPORE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED);
    println!("format/fuzz_smoke: SPORE_TEST_SEED={s}");
    let mut rng = Rng::new(s);
    let interesting: [u8; 8] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0x08, 0x10, 0x40];
    let mut runs = 0usize;
    let mut loaded = 0usize;
    let mut check = |data: &[u8]| {
        runs += 1;
        let r = std::panic::catch_unwind(|| format::fuzz_one(data));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "fuzz_one found a broken property on {} bytes: {e}",
                data.len()
            ),
            Err(_) => panic!("fuzz_one panicked on {} bytes: {:02x?}", data.len(), data),
        }
        if format::load_checkpoint(data).is_ok() {
            loaded += 1;
        }
    };
    for seed_input in &corpus {
        check(seed_input);
    }
    // `Rng::range` is inclusive; `pick(n)` is uniform in 0..n.
    let mut pick = |n: usize| rng.range(0, n.saturating_sub(1));
    for _ in 0..MUTATIONS {
        let a = &corpus[pick(corpus.len())];
        let mut m = a.clone();
        match pick(6) {
            0 => {
                for _ in 0..=pick(3) {
                    let bit = pick(m.len() * 8);
                    m[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => {
                let at = pick(m.len());
                m[at] = interesting[pick(interesting.len())];
            }
            2 => {
                // A 32-bit field (offset, length, index) set to an extreme value.
                let at = pick(m.len() - 3) & !3;
                let v: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, m.len() as u32][pick(6)];
                m[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 => m.truncate(pick(m.len())),
            4 => {
                let b = &corpus[pick(corpus.len())];
                let cut = pick(m.len().min(b.len()));
                m.truncate(cut);
                m.extend_from_slice(&b[cut..]);
            }
            _ => {
                let start = pick(m.len());
                let end = start + pick(64.min(m.len() - start) + 1);
                let chunk = m[start..end].to_vec();
                let at = pick(m.len() + 1);
                m.splice(at..at, chunk);
            }
        }
        check(&m);
    }
    println!("format fuzz smoke: {runs} inputs, {loaded} loaded, the rest refused with -200");
    assert!(runs > MUTATIONS);
}
