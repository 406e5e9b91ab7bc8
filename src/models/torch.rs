//! Moving weights between PyTorch `state_dict`s and Spore graphs.
//!
//! Names: the zoo's parameters carry PyTorch's `state_dict` keys (`features.0.0.weight`,
//! `features.0.1.running_mean`, `classifier.1.bias`, ...), so a key finds its value by name.
//! `num_batches_tracked` has no counterpart (inference does not need it) and is skipped.
//!
//! Layouts ([`TorchLayout`]): PyTorch is NCHW with OIHW weights, Spore NHWC with OHWI:
//!
//! | PyTorch tensor | PyTorch layout | Spore layout | rule |
//! |---|---|---|---|
//! | conv weight | `[o, i/g, kh, kw]` | `[o, kh, kw, i/g]` | [`TorchLayout::Conv`] |
//! | depthwise conv weight (`groups = c`) | `[c*m, 1, kh, kw]` | `[kh, kw, c*m]` | [`TorchLayout::Depthwise`] |
//! | Linear weight | `[out, in]` | `[in, out]` (matmul `b`, no transpose) | [`TorchLayout::Linear`] |
//! | Linear after `flatten` of an `[n, c, h, w]` map | `[out, c*h*w]`, columns `(c, h, w)` | `[h*w*c, out]`, rows `(h, w, c)` | [`TorchLayout::LinearFromNhwc`] |
//! | biases, batch-norm `weight`/`bias`/`running_*` | `[c]` | `[c]` | [`TorchLayout::Copy`] |
//!
//! The flatten case exists because our activations are NHWC: flattening gives features in
//! `(h, w, c)` order where PyTorch's gives `(c, h, w)`, so the first Linear layer after a
//! flatten (LeNet's `fc1`, AlexNet's `classifier.1`) must have its input rows permuted. The
//! Dense layer records this in the graph metadata (key [`layout_key`]), and [`layout_for`]
//! reads it; every other layout follows from the two ranks.
//!
//! ```no_run
//! # fn main() -> spore::Result<()> {
//! use spore::models::{self, ModelConfig, torch};
//! let cfg = ModelConfig::new(224, 3, 1000);
//! let template = models::mobilenet_v2(&cfg)?;
//! # let state_dict: Vec<(String, Vec<usize>, Vec<f32>)> = vec![];
//! // (name, PyTorch shape, data) from a state_dict, e.g. read from .npy files.
//! let source = torch::import_state_dict(
//!     &template,
//!     state_dict.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
//! )?;
//! let graph = torch::replace_constants(template, &source)?;
//! // or: models::mobilenet_v2(&ModelConfig { params: Some(source), ..cfg })?
//! # let _ = graph; Ok(())
//! # }
//! ```

use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, ValueId, ValueKind};
use crate::layers::ParamSource;
use crate::tensor::Tensor;
use std::collections::BTreeSet;

/// How a PyTorch tensor maps onto a Spore parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchLayout {
    /// Same shape, same element order.
    Copy,
    /// `[o, i, kh, kw]` (OIHW) -> `[o, kh, kw, i]` (OHWI).
    Conv,
    /// `[c*m, 1, kh, kw]` -> `[kh, kw, c*m]`.
    Depthwise,
    /// `[out, in]` -> `[in, out]`.
    Linear,
    /// `[out, c*h*w]` with columns in `(c, h, w)` order -> `[h*w*c, out]` with rows in
    /// `(h, w, c)` order.
    LinearFromNhwc {
        /// Height of the flattened map.
        h: usize,
        /// Width of the flattened map.
        w: usize,
        /// Channels of the flattened map.
        c: usize,
    },
}

impl std::fmt::Display for TorchLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TorchLayout::Copy => write!(f, "copy"),
            TorchLayout::Conv => write!(f, "conv"),
            TorchLayout::Depthwise => write!(f, "depthwise"),
            TorchLayout::Linear => write!(f, "linear"),
            TorchLayout::LinearFromNhwc { h, w, c } => write!(f, "linear_from_nhwc:{h},{w},{c}"),
        }
    }
}

impl std::str::FromStr for TorchLayout {
    type Err = Error;

    fn from_str(s: &str) -> Result<TorchLayout> {
        let bad = || Error::invalid_param("torch_layout", format!("unknown layout `{s}`"));
        Ok(match s {
            "copy" => TorchLayout::Copy,
            "conv" => TorchLayout::Conv,
            "depthwise" => TorchLayout::Depthwise,
            "linear" => TorchLayout::Linear,
            other => {
                let dims = other.strip_prefix("linear_from_nhwc:").ok_or_else(bad)?;
                let v: Vec<usize> = dims
                    .split(',')
                    .map(|d| d.parse::<usize>().map_err(|_| bad()))
                    .collect::<Result<_>>()?;
                let &[h, w, c] = v.as_slice() else {
                    return Err(bad());
                };
                TorchLayout::LinearFromNhwc { h, w, c }
            }
        })
    }
}

/// The graph-metadata key holding the layout of parameter `name` when the ranks alone do not
/// determine it.
pub fn layout_key(name: &str) -> String {
    format!("torch_layout:{name}")
}

fn mismatch(what: &str, shapes: Vec<Vec<usize>>) -> Error {
    Error::ShapeMismatch {
        shapes,
        reason: what.to_string(),
    }
}

/// The Spore shape of a PyTorch tensor of `torch_shape` under `layout`.
pub fn spore_shape(layout: TorchLayout, torch_shape: &[usize]) -> Result<Vec<usize>> {
    let bad = |why: &str| {
        mismatch(
            &format!("{layout} layout: {why}"),
            vec![torch_shape.to_vec()],
        )
    };
    Ok(match (layout, torch_shape) {
        (TorchLayout::Copy, s) => s.to_vec(),
        (TorchLayout::Conv, &[o, i, kh, kw]) => vec![o, kh, kw, i],
        (TorchLayout::Depthwise, &[cm, 1, kh, kw]) => vec![kh, kw, cm],
        (TorchLayout::Linear, &[out, inp]) => vec![inp, out],
        (TorchLayout::LinearFromNhwc { h, w, c }, &[out, inp]) => {
            if h * w * c != inp {
                return Err(bad(&format!("{inp} inputs are not {c} x {h} x {w}")));
            }
            vec![inp, out]
        }
        (TorchLayout::Conv, _) => return Err(bad("expects [o, i, kh, kw]")),
        (TorchLayout::Depthwise, _) => return Err(bad("expects [c*m, 1, kh, kw]")),
        (TorchLayout::Linear | TorchLayout::LinearFromNhwc { .. }, _) => {
            return Err(bad("expects [out, in]"));
        }
    })
}

/// Index map: element `k` of the Spore tensor is element `src[k]` of the PyTorch tensor.
fn gather_map(layout: TorchLayout, torch_shape: &[usize]) -> Result<Vec<usize>> {
    spore_shape(layout, torch_shape)?;
    let n = crate::shape::numel(torch_shape)?;
    let mut map = Vec::with_capacity(n);
    match (layout, torch_shape) {
        (TorchLayout::Conv, &[o, i, kh, kw]) => {
            for oo in 0..o {
                for y in 0..kh {
                    for x in 0..kw {
                        for ii in 0..i {
                            map.push(((oo * i + ii) * kh + y) * kw + x);
                        }
                    }
                }
            }
        }
        (TorchLayout::Depthwise, &[cm, _, kh, kw]) => {
            for y in 0..kh {
                for x in 0..kw {
                    for c in 0..cm {
                        map.push((c * kh + y) * kw + x);
                    }
                }
            }
        }
        (TorchLayout::Linear, &[out, inp]) => {
            for r in 0..inp {
                for o in 0..out {
                    map.push(o * inp + r);
                }
            }
        }
        (TorchLayout::LinearFromNhwc { h, w, c }, &[out, inp]) => {
            // Our row (y * w + x) * c + ci reads PyTorch's column ci * h * w + y * w + x.
            for y in 0..h {
                for x in 0..w {
                    for ci in 0..c {
                        let col = ci * h * w + y * w + x;
                        map.extend((0..out).map(|o| o * inp + col));
                    }
                }
            }
        }
        _ => map.extend(0..n),
    }
    Ok(map)
}

/// Converts PyTorch data of `torch_shape` (row-major) to a Spore tensor under `layout`.
pub fn to_spore(layout: TorchLayout, torch_shape: &[usize], data: &[f32]) -> Result<Tensor> {
    let n = crate::shape::numel(torch_shape)?;
    if data.len() != n {
        return Err(mismatch(
            &format!("{} values for a PyTorch tensor of {n} elements", data.len()),
            vec![torch_shape.to_vec()],
        ));
    }
    let dims = spore_shape(layout, torch_shape)?;
    let out: Vec<f32> = gather_map(layout, torch_shape)?
        .into_iter()
        .map(|i| data[i])
        .collect();
    Tensor::from_vec(&dims, out)
}

/// The inverse of [`to_spore`]: PyTorch data (row-major, `torch_shape`) from a Spore tensor.
pub fn to_torch(layout: TorchLayout, torch_shape: &[usize], tensor: &Tensor) -> Result<Vec<f32>> {
    let dims = spore_shape(layout, torch_shape)?;
    if tensor.dims() != dims.as_slice() {
        return Err(mismatch(
            "tensor does not have the Spore shape of this layout",
            vec![dims, tensor.dims().to_vec()],
        ));
    }
    let src = tensor.as_slice::<f32>()?;
    let mut out = vec![0f32; src.len()];
    for (k, i) in gather_map(layout, torch_shape)?.into_iter().enumerate() {
        out[i] = src[k];
    }
    Ok(out)
}

/// The layout of parameter `name` of `graph` for a PyTorch tensor of rank `torch_rank`: the
/// metadata entry if the builder wrote one, else from the ranks (1 or equal shapes: copy;
/// 4 -> 4: conv; 4 -> 3: depthwise; 2 -> 2: linear).
pub fn layout_for(graph: &Graph, name: &str, torch_rank: usize) -> Result<TorchLayout> {
    if let Some(s) = graph.metadata().get(&layout_key(name)) {
        return s.parse();
    }
    let id = graph.value_by_name(name).ok_or_else(|| Error::Missing {
        what: format!("parameter `{name}`"),
    })?;
    let ours = graph.value(id)?.fact.rank();
    Ok(match (torch_rank, ours) {
        (4, 4) => TorchLayout::Conv,
        (4, 3) => TorchLayout::Depthwise,
        (2, 2) => TorchLayout::Linear,
        (a, b) if a == b => TorchLayout::Copy,
        (a, b) => {
            return Err(Error::invalid_param(
                name,
                format!("no layout maps a rank-{a} PyTorch tensor onto a rank-{b} parameter"),
            ));
        }
    })
}

fn constant_id(graph: &Graph, name: &str) -> Result<ValueId> {
    let id = graph.value_by_name(name).ok_or_else(|| Error::Missing {
        what: format!("parameter `{name}` in the graph"),
    })?;
    match graph.value(id)?.kind {
        ValueKind::Constant { .. } => Ok(id),
        _ => Err(Error::invalid_param(name, "is not a constant of the graph")),
    }
}

/// PyTorch tensor `name` (`torch_shape`, row-major `data`) as the Spore tensor of `graph`'s
/// parameter of that name, in its layout; the result's shape is checked against the graph.
pub fn import_torch_param(
    graph: &Graph,
    name: &str,
    torch_shape: &[usize],
    data: &[f32],
) -> Result<Tensor> {
    let id = constant_id(graph, name)?;
    let layout = layout_for(graph, name, torch_shape.len())?;
    let t = to_spore(layout, torch_shape, data)?;
    let want = &graph.value(id)?.fact.shape;
    if t.dims() != want.as_slice() {
        return Err(mismatch(
            &format!(
                "`{name}`: PyTorch {torch_shape:?} maps to {:?}, the graph has {want:?}",
                t.dims()
            ),
            vec![torch_shape.to_vec(), want.clone()],
        ));
    }
    Ok(t)
}

/// Parameter `name` of `graph` in PyTorch's layout: `(torch_shape, data)`, the inverse of
/// [`import_torch_param`] (for exporting to PyTorch or for round-trip tests). `torch_shape`
/// is needed only to tell `[o, i, kh, kw]` apart; pass the state_dict's shape.
pub fn export_torch_param(graph: &Graph, name: &str, torch_shape: &[usize]) -> Result<Vec<f32>> {
    let id = constant_id(graph, name)?;
    let layout = layout_for(graph, name, torch_shape.len())?;
    match &graph.value(id)?.kind {
        ValueKind::Constant { data, .. } => to_torch(layout, torch_shape, data),
        _ => Err(Error::invalid_param(name, "is not a constant of the graph")),
    }
}

/// One `state_dict` entry: name, PyTorch shape, row-major data.
pub type StateDictEntry = (String, Vec<usize>, Vec<f32>);

/// The PyTorch shape of a Spore tensor of `dims` under `layout` (the inverse of
/// [`spore_shape`]).
pub fn torch_shape(layout: TorchLayout, dims: &[usize]) -> Result<Vec<usize>> {
    let shape = match (layout, dims) {
        (TorchLayout::Copy, d) => d.to_vec(),
        (TorchLayout::Conv, &[o, kh, kw, i]) => vec![o, i, kh, kw],
        (TorchLayout::Depthwise, &[kh, kw, cm]) => vec![cm, 1, kh, kw],
        (TorchLayout::Linear | TorchLayout::LinearFromNhwc { .. }, &[inp, out]) => vec![out, inp],
        _ => {
            return Err(mismatch(
                &format!("no PyTorch shape for {dims:?} under {layout}"),
                vec![dims.to_vec()],
            ));
        }
    };
    // Checks the flatten dimensions against the size, too.
    spore_shape(layout, &shape)?;
    Ok(shape)
}

/// `graph`'s parameters as a PyTorch `state_dict`: `(name, PyTorch shape, row-major data)`
/// for every constant named like a PyTorch parameter or buffer (`*.weight`, `*.bias`,
/// `*.running_mean`, `*.running_var`), sorted by name. The layout comes from the metadata
/// or from our rank (4: conv, 3: depthwise, 2: linear, else copy). Feeding the result to
/// [`import_state_dict`] gives the same tensors back.
pub fn export_state_dict(graph: &Graph) -> Result<Vec<StateDictEntry>> {
    let suffixes = [".weight", ".bias", ".running_mean", ".running_var"];
    let mut out = Vec::new();
    for v in graph.values() {
        let ValueKind::Constant { data, .. } = &v.kind else {
            continue;
        };
        if !suffixes.iter().any(|s| v.name.ends_with(s)) {
            continue;
        }
        let layout = match graph.metadata().get(&layout_key(&v.name)) {
            Some(s) => s.parse()?,
            None => match v.fact.rank() {
                4 => TorchLayout::Conv,
                3 => TorchLayout::Depthwise,
                2 => TorchLayout::Linear,
                _ => TorchLayout::Copy,
            },
        };
        let shape = torch_shape(layout, data.dims())?;
        let values = to_torch(layout, &shape, data)?;
        out.push((v.name.clone(), shape, values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// A [`ParamSource`] from a PyTorch `state_dict` given as `(name, shape, data)` entries,
/// converted into `graph`'s layouts (use the graph the zoo builds with the same config as a
/// template). `num_batches_tracked` entries are skipped; a name the graph lacks is an error,
/// and so is a trainable parameter of the graph that the state_dict lacks.
pub fn import_state_dict<'a>(
    graph: &Graph,
    entries: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
) -> Result<ParamSource> {
    let mut source = ParamSource::new();
    for (name, shape, data) in entries {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        source.insert(name, import_torch_param(graph, name, shape, data)?);
    }
    let missing: Vec<&str> = graph
        .values()
        .iter()
        .filter(|v| {
            matches!(
                v.kind,
                ValueKind::Constant {
                    trainable: true,
                    ..
                }
            )
        })
        .map(|v| v.name.as_str())
        .filter(|n| source.get(n).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Missing {
            what: format!(
                "{} parameters in the state_dict, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(8)]
            ),
        });
    }
    Ok(source)
}

/// `graph` with each constant named in `source` replaced by the source's tensor (same dtype
/// and shape; trainable flags and quantization annotations are kept). Every source name must
/// be a constant of the graph.
pub fn replace_constants(graph: Graph, source: &ParamSource) -> Result<Graph> {
    let mut seen = BTreeSet::new();
    for (name, t) in source.iter() {
        let id = constant_id(&graph, name)?;
        let fact = &graph.value(id)?.fact;
        if t.dims() != fact.shape.as_slice() || t.dtype() != fact.dtype {
            return Err(mismatch(
                &format!(
                    "`{name}`: the graph has {} {:?}, the source {} {:?}",
                    fact.dtype,
                    fact.shape,
                    t.dtype(),
                    t.dims()
                ),
                vec![fact.shape.clone(), t.dims().to_vec()],
            ));
        }
        seen.insert(name.to_string());
    }
    let mut b = GraphBuilder::new();
    let mut map: Vec<Option<ValueId>> = vec![None; graph.values().len()];
    let lookup = |map: &[Option<ValueId>], id: ValueId| {
        map.get(id.0)
            .copied()
            .flatten()
            .ok_or_else(|| Error::Missing {
                what: format!("value #{}", id.0),
            })
    };
    // Values are stored in creation order; a node's inputs precede it, so one pass that adds
    // inputs and constants as they come and each node when its first output comes keeps
    // every name and id order as it was.
    for (i, v) in graph.values().iter().enumerate() {
        match &v.kind {
            ValueKind::Input => map[i] = Some(b.input(&v.name, v.fact.dtype, &v.fact.shape)?),
            ValueKind::Constant { data, trainable } => {
                let t = source
                    .get(&v.name)
                    .cloned()
                    .unwrap_or_else(|| (**data).clone());
                let id = b.add_constant(&v.name, t, *trainable)?;
                b.set_quant(id, v.fact.quant.clone())?;
                map[i] = Some(id);
            }
            ValueKind::Output { node, index } => {
                if *index != 0 {
                    continue;
                }
                let n = graph.nodes().get(node.0).ok_or_else(|| Error::Missing {
                    what: format!("node #{}", node.0),
                })?;
                let ins = n
                    .inputs
                    .iter()
                    .map(|&id| lookup(&map, id))
                    .collect::<Result<Vec<_>>>()?;
                let outs = b.node(&n.name, n.op.clone(), &ins)?;
                for (&old, new) in n.outputs.iter().zip(outs) {
                    let q = graph.value(old)?.fact.quant.clone();
                    b.set_quant(new, q)?;
                    if let Some(slot) = map.get_mut(old.0) {
                        *slot = Some(new);
                    }
                }
            }
        }
    }
    for &o in graph.outputs() {
        b.output(lookup(&map, o)?)?;
    }
    for (k, v) in graph.metadata() {
        b.metadata(k, v);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32).collect()
    }

    #[test]
    fn conv_oihw_to_ohwi() {
        // [o=2, i=3, kh=1, kw=2]: ours[o][y][x][i] = torch[o][i][y][x].
        let t = to_spore(TorchLayout::Conv, &[2, 3, 1, 2], &seq(12)).unwrap();
        assert_eq!(t.dims(), &[2, 1, 2, 3]);
        assert_eq!(
            t.get::<f32>(&[1, 0, 1, 2]).unwrap(),
            ((3 + 2) * 2 + 1) as f32
        );
    }

    #[test]
    fn depthwise_and_linear() {
        let t = to_spore(TorchLayout::Depthwise, &[4, 1, 2, 3], &seq(24)).unwrap();
        assert_eq!(t.dims(), &[2, 3, 4]);
        assert_eq!(t.get::<f32>(&[1, 2, 3]).unwrap(), (3 * 6 + 5) as f32);
        let t = to_spore(TorchLayout::Linear, &[2, 3], &seq(6)).unwrap();
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(t.get::<f32>(&[2, 1]).unwrap(), 5.0);
    }

    #[test]
    fn flatten_permutation() {
        // c=2, h=1, w=3: torch column ci*3 + x, our row x*2 + ci.
        let l = TorchLayout::LinearFromNhwc { h: 1, w: 3, c: 2 };
        let t = to_spore(l, &[1, 6], &seq(6)).unwrap();
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        assert_eq!("linear_from_nhwc:1,3,2".parse::<TorchLayout>().unwrap(), l);
    }

    #[test]
    fn every_layout_round_trips() {
        let cases: [(TorchLayout, &[usize]); 5] = [
            (TorchLayout::Copy, &[5]),
            (TorchLayout::Conv, &[3, 2, 3, 2]),
            (TorchLayout::Depthwise, &[6, 1, 3, 3]),
            (TorchLayout::Linear, &[4, 7]),
            (TorchLayout::LinearFromNhwc { h: 2, w: 3, c: 2 }, &[3, 12]),
        ];
        for (layout, shape) in cases {
            let n = shape.iter().product();
            let t = to_spore(layout, shape, &seq(n)).unwrap();
            assert_eq!(to_torch(layout, shape, &t).unwrap(), seq(n), "{layout}");
            assert_eq!(layout.to_string().parse::<TorchLayout>().unwrap(), layout);
        }
    }
}
