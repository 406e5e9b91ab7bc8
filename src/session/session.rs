//! `Session`: input and output tensors by name, `run`, `run_with(observer)`, `resize`.
//!
//! A session is `Send + Sync`: `run(&self)` takes a try-lock on the run state, so a second
//! run started (from another thread) while one is in progress fails with
//! [`Error::Reentrant`] (-102) instead of blocking or racing. Inputs are checked against the
//! graph before anything is touched; a failed or stopped run leaves the session usable.

use super::context::Context;
use super::observer::{Flow, NodeInfo, RunObserver};
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, ValueId, ValueKind};
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex, TryLockError};

/// A loaded model: an immutable, checked graph, shareable by many sessions.
#[derive(Debug, Clone)]
pub struct Model {
    graph: Arc<Graph>,
}

impl Model {
    /// A model of `graph`.
    pub fn from_graph(graph: Graph) -> Model {
        Model {
            graph: Arc::new(graph),
        }
    }

    /// A model from Spore model-file bytes, verified (code -200 on any bad byte).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Ok(Model::from_graph(crate::format::load(bytes)?))
    }

    /// A model from a Spore model file.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Model> {
        Ok(Model::from_graph(crate::format::load_file(path)?))
    }

    /// The model as Spore model-file bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::format::save(&self.graph)
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

struct NoObserver;
impl RunObserver for NoObserver {}

/// Per-run mutable state, behind the run lock.
#[derive(Default)]
struct RunState {
    outputs: Vec<Tensor>,
}

/// A model bound to a context, with its input and output tensors.
pub struct Session {
    ctx: Context,
    graph: Arc<Graph>,
    inputs: Vec<Tensor>,
    state: Mutex<RunState>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("nodes", &self.graph.nodes().len())
            .finish()
    }
}

fn zeros_for(graph: &Graph, id: ValueId) -> Result<Tensor> {
    let v = graph.value(id)?;
    Tensor::zeros(v.fact.dtype, &v.fact.shape)
}

impl Session {
    /// A session running `model` on `ctx`'s devices.
    pub fn new(ctx: &Context, model: &Model) -> Result<Session> {
        let graph = Arc::clone(&model.graph);
        let inputs = graph
            .inputs()
            .iter()
            .map(|&id| zeros_for(&graph, id))
            .collect::<Result<_>>()?;
        Ok(Session {
            ctx: ctx.clone(),
            graph,
            inputs,
            state: Mutex::new(RunState::default()),
        })
    }

    /// A session straight from a model buffer (MindSpore Lite's `CreateSession(model_buf)`).
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Session> {
        Session::new(ctx, &Model::from_bytes(bytes)?)
    }

    /// The context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The (possibly resized) graph this session runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Names and tensors of the inputs, in graph order.
    pub fn inputs(&self) -> Vec<(&str, &Tensor)> {
        self.graph
            .inputs()
            .iter()
            .zip(&self.inputs)
            .filter_map(|(&id, t)| Some((self.graph.value(id).ok()?.name.as_str(), t)))
            .collect()
    }

    /// The input tensor called `name`, to fill (e.g. with `copy_from_slice`).
    pub fn input_by_tensor_name(&mut self, name: &str) -> Result<&mut Tensor> {
        let pos = self
            .graph
            .inputs()
            .iter()
            .position(|&id| self.graph.value(id).is_ok_and(|v| v.name == name))
            .ok_or_else(|| Error::Missing {
                what: format!("input tensor `{name}`"),
            })?;
        self.inputs.get_mut(pos).ok_or_else(|| Error::Missing {
            what: format!("input tensor `{name}`"),
        })
    }

    /// Names of the outputs, in graph order.
    pub fn output_tensor_names(&self) -> Vec<String> {
        self.graph
            .outputs()
            .iter()
            .filter_map(|&id| self.graph.value(id).ok().map(|v| v.name.clone()))
            .collect()
    }

    fn lock_state(&self) -> Result<std::sync::MutexGuard<'_, RunState>> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(Error::Reentrant),
            // A panic inside a previous run (a bug) must not brick the session.
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        }
    }

    /// Names and copies of the outputs of the last run (empty before the first run).
    pub fn outputs(&self) -> Result<Vec<(String, Tensor)>> {
        let state = self.lock_state()?;
        Ok(self
            .output_tensor_names()
            .into_iter()
            .zip(state.outputs.iter().cloned())
            .collect())
    }

    /// A copy of the output called `name` from the last run.
    pub fn output_by_tensor_name(&self, name: &str) -> Result<Tensor> {
        let pos = self
            .output_tensor_names()
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::Missing {
                what: format!("output tensor `{name}`"),
            })?;
        let state = self.lock_state()?;
        state
            .outputs
            .get(pos)
            .cloned()
            .ok_or_else(|| Error::Missing {
                what: format!("output `{name}`: the session has not run yet"),
            })
    }

    /// Runs the model on the current inputs.
    pub fn run(&self) -> Result<()> {
        self.run_with(&mut NoObserver)
    }

    /// Runs the model, calling `observer` around every node.
    pub fn run_with(&self, observer: &mut dyn RunObserver) -> Result<()> {
        let mut state = self.lock_state()?;
        self.check_inputs()?;
        let outputs = execute(&self.ctx, &self.graph, &self.inputs, observer)?;
        state.outputs = outputs;
        Ok(())
    }

    fn check_inputs(&self) -> Result<()> {
        for (&id, t) in self.graph.inputs().iter().zip(&self.inputs) {
            let v = self.graph.value(id)?;
            if t.dtype() != v.fact.dtype || t.dims() != v.fact.shape.as_slice() {
                return Err(Error::InputTensor {
                    name: v.name.clone(),
                    reason: format!(
                        "expected {} {:?}, got {} {:?}",
                        v.fact.dtype,
                        v.fact.shape,
                        t.dtype(),
                        t.dims()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Changes input shapes (e.g. the batch size) and re-infers every shape. On error the
    /// session is unchanged.
    pub fn resize(&mut self, shapes: &[(&str, &[usize])]) -> Result<()> {
        let _guard = self.lock_state()?;
        let g = &self.graph;
        for (name, _) in shapes {
            if !g
                .inputs()
                .iter()
                .any(|&id| g.value(id).is_ok_and(|v| v.name == *name))
            {
                return Err(Error::Missing {
                    what: format!("input tensor `{name}`"),
                });
            }
        }
        let mut b = GraphBuilder::new();
        let mut map = vec![None; g.values().len()];
        for (i, v) in g.values().iter().enumerate() {
            match &v.kind {
                ValueKind::Input => {
                    let shape = shapes
                        .iter()
                        .find(|(n, _)| *n == v.name)
                        .map_or(v.fact.shape.as_slice(), |(_, s)| s);
                    map[i] = Some(b.input(&v.name, v.fact.dtype, shape)?);
                }
                ValueKind::Constant { data, trainable } => {
                    map[i] = Some(b.add_constant(&v.name, (**data).clone(), *trainable)?);
                    b.set_quant(
                        ValueId(map[i].map_or(0, |m: ValueId| m.0)),
                        v.fact.quant.clone(),
                    )?;
                }
                ValueKind::Output { .. } => {}
            }
        }
        let lookup = |map: &[Option<ValueId>], id: ValueId| {
            map.get(id.0)
                .copied()
                .flatten()
                .ok_or_else(|| Error::Missing {
                    what: format!("value #{}", id.0),
                })
        };
        for node in g.nodes() {
            let ins = node
                .inputs
                .iter()
                .map(|&id| lookup(&map, id))
                .collect::<Result<Vec<_>>>()?;
            let outs = b.node(&node.name, node.op.clone(), &ins)?;
            for (&old, new) in node.outputs.iter().zip(outs) {
                if let Some(slot) = map.get_mut(old.0) {
                    *slot = Some(new);
                }
            }
        }
        for &o in g.outputs() {
            b.output(lookup(&map, o)?)?;
        }
        for (k, v) in g.metadata() {
            b.metadata(k, v);
        }
        let graph = b.build()?;
        let inputs = graph
            .inputs()
            .iter()
            .map(|&id| zeros_for(&graph, id))
            .collect::<Result<Vec<_>>>()?;
        drop(_guard);
        self.graph = Arc::new(graph);
        self.inputs = inputs;
        *self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = RunState::default();
        Ok(())
    }
}

/// Where one node runs: the GPU when the context has one and the op has a WGSL kernel, else
/// the tuned CPU kernels. (Per-node placement with a host round trip per GPU node; the planner
/// replaces this with fused, buffer-resident GPU segments.)
fn eval_node(
    ctx: &Context,
    op: &crate::ops::Op,
    ins: &[&Tensor],
) -> (Result<Vec<Tensor>>, &'static str) {
    if let Some(gpu) = ctx.gpu() {
        match op.eval_gpu(gpu, ins) {
            Err(Error::NotSupported { .. }) => {}
            other => return (other, "gpu"),
        }
    }
    (op.eval_cpu(ins, ctx.cpu_threads()), "cpu")
}

/// The simple executor: every node in order, each on the device [`eval_node`] picks.
fn execute(
    ctx: &Context,
    graph: &Graph,
    inputs: &[Tensor],
    observer: &mut dyn RunObserver,
) -> Result<Vec<Tensor>> {
    let mut computed: Vec<Option<Tensor>> = vec![None; graph.values().len()];
    let want = observer.wants_tensors();
    for (index, node) in graph.nodes().iter().enumerate() {
        let device = if ctx.gpu().is_some() { "gpu" } else { "cpu" };
        let info = NodeInfo {
            name: &node.name,
            op: node.op.name(),
            index,
            device,
        };
        let ins: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&id| value_ref(graph, inputs, &computed, id))
            .collect::<Result<_>>()?;
        if observer.before(&info, if want { &ins } else { &[] }) == Flow::Stop {
            return Err(Error::Stopped {
                node: node.name.clone(),
            });
        }
        let (outs, ran_on) = eval_node(ctx, &node.op, &ins);
        let info = NodeInfo {
            device: ran_on,
            ..info
        };
        let outs = outs.map_err(|e| match e {
            Error::OpExecution { op, reason, .. } => Error::OpExecution {
                op,
                node: node.name.clone(),
                reason,
            },
            other => Error::OpExecution {
                op: node.op.name().into(),
                node: node.name.clone(),
                reason: other.to_string(),
            },
        })?;
        if outs.len() != node.outputs.len() {
            return Err(Error::OpExecution {
                op: node.op.name().into(),
                node: node.name.clone(),
                reason: format!(
                    "produced {} outputs, expected {}",
                    outs.len(),
                    node.outputs.len()
                ),
            });
        }
        let out_refs: Vec<&Tensor> = outs.iter().collect();
        let flow = observer.after(&info, if want { &out_refs } else { &[] });
        for (&id, t) in node.outputs.iter().zip(outs) {
            if let Some(slot) = computed.get_mut(id.0) {
                *slot = Some(t);
            }
        }
        if flow == Flow::Stop {
            return Err(Error::Stopped {
                node: node.name.clone(),
            });
        }
    }
    graph
        .outputs()
        .iter()
        .map(|&id| value_ref(graph, inputs, &computed, id).cloned())
        .collect()
}

fn value_ref<'a>(
    graph: &'a Graph,
    inputs: &'a [Tensor],
    computed: &'a [Option<Tensor>],
    id: ValueId,
) -> Result<&'a Tensor> {
    let v = graph.value(id)?;
    let missing = || Error::Missing {
        what: format!("value `{}`", v.name),
    };
    match &v.kind {
        ValueKind::Constant { data, .. } => Ok(data),
        ValueKind::Input => {
            let pos = graph
                .inputs()
                .iter()
                .position(|&i| i == id)
                .ok_or_else(missing)?;
            inputs.get(pos).ok_or_else(missing)
        }
        ValueKind::Output { .. } => computed
            .get(id.0)
            .and_then(|t| t.as_ref())
            .ok_or_else(missing),
    }
}
