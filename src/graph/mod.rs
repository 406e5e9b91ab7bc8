//! The portable IR: values with static facts, nodes with ops, graph inputs and outputs.
//! [`GraphBuilder`] runs each op's inference as nodes are added, so an ill-typed graph cannot
//! be built; the error names the node and the input shapes.

mod fact;

pub use fact::{QuantParams, TensorFact};

use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Index of a value in its graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// Index of a node in its graph (nodes are stored in a valid execution order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    /// Fed by the user at run time.
    Input,
    /// A constant or parameter stored in the model.
    Constant {
        /// The data.
        data: Arc<Tensor>,
        /// Whether training updates it.
        trainable: bool,
    },
    /// Output `index` of node `node`.
    Output {
        /// Producer.
        node: NodeId,
        /// Output slot.
        index: usize,
    },
}

/// A named value.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// Unique name (tensor name in the API).
    pub name: String,
    /// Static dtype and shape.
    pub fact: TensorFact,
    /// Origin.
    pub kind: ValueKind,
}

/// A named op application.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique name.
    pub name: String,
    /// The op and its attributes.
    pub op: Op,
    /// Input values.
    pub inputs: Vec<ValueId>,
    /// Output values.
    pub outputs: Vec<ValueId>,
}

/// A checked, topologically ordered computation graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    values: Vec<Value>,
    nodes: Vec<Node>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    metadata: BTreeMap<String, String>,
}

impl Graph {
    /// All values.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// All nodes, in execution order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Graph inputs, in order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// Graph outputs, in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// Free-form metadata (producer, description, ...).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The value `id`.
    pub fn value(&self, id: ValueId) -> Result<&Value> {
        self.values.get(id.0).ok_or_else(|| Error::Missing {
            what: format!("value #{}", id.0),
        })
    }

    /// The value called `name`.
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name).map(ValueId)
    }

    /// Parameter count: elements of all constants.
    pub fn parameter_count(&self) -> usize {
        self.values
            .iter()
            .filter(|v| matches!(v.kind, ValueKind::Constant { .. }))
            .map(|v| v.fact.numel())
            .sum()
    }

    /// Floating-point operations of one forward pass, per node.
    pub fn flops(&self) -> Vec<(String, &'static str, u64)> {
        self.nodes
            .iter()
            .map(|n| {
                let facts: Vec<&TensorFact> = n
                    .inputs
                    .iter()
                    .filter_map(|&v| self.values.get(v.0))
                    .map(|v| &v.fact)
                    .collect();
                (n.name.clone(), n.op.name(), n.op.flops(&facts))
            })
            .collect()
    }

    /// Replaces the data of constant `name` (a trained parameter, say) with `data` of the same
    /// dtype and shape.
    pub fn replace_constant(&mut self, name: &str, data: Tensor) -> Result<()> {
        let id = self.value_by_name(name).ok_or_else(|| Error::Missing {
            what: format!("constant `{name}`"),
        })?;
        let v = &mut self.values[id.0];
        if v.fact.dtype != data.dtype() || v.fact.shape != data.dims() {
            return Err(Error::invalid_param(
                name,
                format!(
                    "new value is {} {:?}, the constant is {} {:?}",
                    data.dtype(),
                    data.dims(),
                    v.fact.dtype,
                    v.fact.shape
                ),
            ));
        }
        match &mut v.kind {
            ValueKind::Constant { data: d, .. } => {
                *d = Arc::new(data);
                Ok(())
            }
            _ => Err(Error::invalid_param(name, "is not a constant")),
        }
    }

    /// The graph without the nodes no output depends on, and without constants nothing uses
    /// (inputs are kept: they are the caller's interface). Value ids change; names do not.
    pub fn prune(self) -> Graph {
        let mut live = vec![false; self.values.len()];
        for o in &self.outputs {
            live[o.0] = true;
        }
        let mut keep_node = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|o| live[o.0]) {
                keep_node[i] = true;
                for inp in &node.inputs {
                    live[inp.0] = true;
                }
            }
        }
        for i in &self.inputs {
            live[i.0] = true;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if keep_node[i] {
                for o in &node.outputs {
                    live[o.0] = true;
                }
            }
        }
        let mut remap = vec![None; self.values.len()];
        let mut values = Vec::new();
        for (i, v) in self.values.into_iter().enumerate() {
            if live[i] {
                remap[i] = Some(ValueId(values.len()));
                values.push(v);
            }
        }
        let map = |id: &ValueId| remap[id.0].unwrap_or(*id);
        let mut node_remap = vec![None; self.nodes.len()];
        let mut nodes = Vec::new();
        for (i, mut node) in self.nodes.into_iter().enumerate() {
            if keep_node[i] {
                node_remap[i] = Some(NodeId(nodes.len()));
                node.inputs = node.inputs.iter().map(map).collect();
                node.outputs = node.outputs.iter().map(map).collect();
                nodes.push(node);
            }
        }
        for v in &mut values {
            if let ValueKind::Output { node, .. } = &mut v.kind {
                *node = node_remap[node.0].unwrap_or(*node);
            }
        }
        Graph {
            values,
            nodes,
            inputs: self.inputs.iter().map(map).collect(),
            outputs: self.outputs.iter().map(map).collect(),
            metadata: self.metadata,
        }
    }

    /// Rebuilds a builder holding this graph (to extend or rewrite it).
    pub fn into_builder(self) -> GraphBuilder {
        let names = self
            .values
            .iter()
            .map(|v| v.name.clone())
            .chain(self.nodes.iter().map(|n| n.name.clone()))
            .collect();
        GraphBuilder { graph: self, names }
    }
}

/// Builds a [`Graph`], checking every node as it is added.
#[derive(Debug, Clone, Default)]
pub struct GraphBuilder {
    graph: Graph,
    names: HashSet<String>,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid_param("name", "names must not be empty"));
        }
        if !self.names.insert(name.to_string()) {
            return Err(Error::invalid_param(
                "name",
                format!("`{name}` is already used"),
            ));
        }
        Ok(())
    }

    fn push_value(&mut self, name: &str, fact: TensorFact, kind: ValueKind) -> Result<ValueId> {
        self.claim(name)?;
        self.graph.values.push(Value {
            name: name.to_string(),
            fact,
            kind,
        });
        Ok(ValueId(self.graph.values.len() - 1))
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[usize]) -> Result<ValueId> {
        crate::shape::numel(shape)?;
        let id = self.push_value(name, TensorFact::new(dtype, shape), ValueKind::Input)?;
        self.graph.inputs.push(id);
        Ok(id)
    }

    /// Adds a constant (not trained).
    pub fn constant(&mut self, name: &str, data: Tensor) -> Result<ValueId> {
        self.add_constant(name, data, false)
    }

    /// Adds a trainable parameter.
    pub fn parameter(&mut self, name: &str, data: Tensor) -> Result<ValueId> {
        self.add_constant(name, data, true)
    }

    /// Adds a constant with a quantization annotation or trainable flag (used by the loader).
    pub fn add_constant(&mut self, name: &str, data: Tensor, trainable: bool) -> Result<ValueId> {
        let fact = TensorFact::new(data.dtype(), data.dims());
        self.push_value(
            name,
            fact,
            ValueKind::Constant {
                data: Arc::new(data),
                trainable,
            },
        )
    }

    /// Sets the quantization parameters of value `id`.
    pub fn set_quant(&mut self, id: ValueId, quant: Option<QuantParams>) -> Result<()> {
        let v = self
            .graph
            .values
            .get_mut(id.0)
            .ok_or_else(|| Error::Missing {
                what: format!("value #{}", id.0),
            })?;
        v.fact.quant = quant;
        Ok(())
    }

    /// The fact of value `id`.
    pub fn fact(&self, id: ValueId) -> Result<&TensorFact> {
        Ok(&self.graph.value(id)?.fact)
    }

    /// Adds node `name` applying `op` to `inputs`; runs inference and returns the outputs,
    /// named `name` (one output) or `name:i`.
    pub fn node(
        &mut self,
        name: &str,
        op: impl Into<Op>,
        inputs: &[ValueId],
    ) -> Result<Vec<ValueId>> {
        let op = op.into();
        let facts: Vec<&TensorFact> = inputs
            .iter()
            .map(|&v| self.fact(v))
            .collect::<Result<_>>()?;
        let outs = op.infer(&facts).map_err(|reason| Error::ShapeInference {
            op: op.name().to_string(),
            node: name.to_string(),
            inputs: facts.iter().map(|f| f.shape.clone()).collect(),
            reason,
        })?;
        if self.names.contains(name) {
            return Err(Error::invalid_param(
                "name",
                format!("`{name}` is already used"),
            ));
        }
        let node_id = NodeId(self.graph.nodes.len());
        let single = outs.len() == 1;
        let mut out_ids = Vec::with_capacity(outs.len());
        for (i, fact) in outs.into_iter().enumerate() {
            let vname = if single {
                name.to_string()
            } else {
                format!("{name}:{i}")
            };
            out_ids.push(self.push_value(
                &vname,
                fact,
                ValueKind::Output {
                    node: node_id,
                    index: i,
                },
            )?);
        }
        // The node shares its single output's name; claim it only if it was not claimed above.
        if !single {
            self.claim(name)?;
        }
        self.graph.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.to_vec(),
            outputs: out_ids.clone(),
        });
        Ok(out_ids)
    }

    /// Like [`GraphBuilder::node`] for single-output ops.
    pub fn node1(&mut self, name: &str, op: impl Into<Op>, inputs: &[ValueId]) -> Result<ValueId> {
        let outs = self.node(name, op, inputs)?;
        match outs.as_slice() {
            [one] => Ok(*one),
            _ => Err(Error::invalid_param(
                name,
                format!("op has {} outputs, expected 1", outs.len()),
            )),
        }
    }

    /// Whether `name` is taken by a value or a node.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The name of value `id`.
    pub fn value_name(&self, id: ValueId) -> Result<String> {
        Ok(self.graph.value(id)?.name.clone())
    }

    /// The value called `name`, if any.
    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.graph.value_by_name(name)
    }

    /// Marks `id` as a graph output.
    pub fn output(&mut self, id: ValueId) -> Result<()> {
        self.graph.value(id)?;
        if !self.graph.outputs.contains(&id) {
            self.graph.outputs.push(id);
        }
        Ok(())
    }

    /// Sets a metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.graph
            .metadata
            .insert(key.to_string(), value.to_string());
    }

    /// Finishes the graph; it needs at least one output.
    pub fn build(self) -> Result<Graph> {
        if self.graph.outputs.is_empty() {
            return Err(Error::invalid_param(
                "outputs",
                "a graph needs at least one output",
            ));
        }
        Ok(self.graph)
    }
}
