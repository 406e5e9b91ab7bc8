//! `Session`: input and output tensors by name, `run`, `run_with(observer)`, `resize`.
//!
//! A session is `Send + Sync`: `run(&self)` takes a try-lock on the run state, so a second
//! run started (from another thread) while one is in progress fails with
//! [`Error::Reentrant`] (-102) instead of blocking or racing. Inputs are checked against the
//! graph before anything is touched; a failed or stopped run leaves the session usable.
//!
//! `Session::new` builds a [`Plan`] (fusion, placement, segments, memory plan; weights a GPU
//! segment reads are uploaded once) and `run` executes it. When a GPU segment fails with a
//! lost device or out of memory, the session re-plans on the CPU alone and runs again: the
//! caller's inputs and the model's weights are only ever read, so they are intact.

use super::context::Context;
use super::observer::RunObserver;
use crate::error::{Error, GpuErrorKind, Result};
use crate::graph::{Graph, GraphBuilder, ValueId, ValueKind};
use crate::plan::exec::{Slots, execute, is_gpu_fault};
use crate::plan::{NodeValidation, Plan, PlanOptions, RunStats};
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
    /// GPU buffer slots of the current plan.
    slots: Slots,
    /// GPU buffer slots of the observed (unfused) plan.
    observed_slots: Slots,
    stats: RunStats,
    validation: Vec<NodeValidation>,
}

/// A model bound to a context, with its input and output tensors.
pub struct Session {
    ctx: Context,
    graph: Arc<Graph>,
    inputs: Vec<Tensor>,
    options: PlanOptions,
    plan: Mutex<Arc<Plan>>,
    /// The unfused plan `run_with` executes, so observers see the model's own nodes; built at
    /// the first observed run (the same as `plan` when fusion is off).
    observed: Mutex<Option<Arc<Plan>>>,
    /// Test hook: the next GPU segment fails with this.
    fault: Mutex<Option<GpuErrorKind>>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held only for a pointer swap or a flag: a panic elsewhere cannot leave them torn.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Plans `graph`; a GPU that faults while the plan uploads its weights leaves a CPU plan.
fn make_plan(graph: &Graph, ctx: &Context, opts: &PlanOptions) -> Result<Plan> {
    match Plan::new(graph, ctx, opts) {
        Err(e) if is_gpu_fault(&e) => {
            log::warn!("GPU failed while planning ({e}); planning on the CPU");
            Plan::cpu_only(graph, ctx, opts)
        }
        other => other,
    }
}

impl Session {
    /// A session running `model` on `ctx`'s devices.
    pub fn new(ctx: &Context, model: &Model) -> Result<Session> {
        Session::with_options(ctx, model, PlanOptions::default())
    }

    /// A session with planner options (ops denied on the GPU, the island rule, fusion).
    pub fn with_options(ctx: &Context, model: &Model, options: PlanOptions) -> Result<Session> {
        let graph = Arc::clone(&model.graph);
        let inputs = graph
            .inputs()
            .iter()
            .map(|&id| zeros_for(&graph, id))
            .collect::<Result<_>>()?;
        let plan = make_plan(&graph, ctx, &options)?;
        Ok(Session {
            ctx: ctx.clone(),
            graph,
            inputs,
            options,
            plan: Mutex::new(Arc::new(plan)),
            observed: Mutex::new(None),
            fault: Mutex::new(None),
            state: Mutex::new(RunState::default()),
        })
    }

    /// The plan the next run executes (after a GPU fault: the all-CPU plan).
    pub fn plan(&self) -> Arc<Plan> {
        Arc::clone(&lock(&self.plan))
    }

    /// What the last run did per segment (dispatches, submits, transfers, time).
    pub fn run_stats(&self) -> Result<RunStats> {
        Ok(self.lock_state()?.stats.clone())
    }

    /// Validation mode's report: the worst relative error per node against the reference
    /// over the runs so far (empty unless the context validates).
    pub fn validation_report(&self) -> Result<Vec<NodeValidation>> {
        Ok(self.lock_state()?.validation.clone())
    }

    /// Test hook: the next GPU segment run fails with `kind` (e.g. device lost), as a real
    /// fault would.
    #[doc(hidden)]
    pub fn inject_gpu_fault(&self, kind: GpuErrorKind) {
        *lock(&self.fault) = Some(kind);
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

    /// Runs the model on the current inputs (the fused plan).
    pub fn run(&self) -> Result<()> {
        self.run_observed(&mut NoObserver, false)
    }

    /// Runs the model, calling `observer` around every node of the model (an unfused plan,
    /// so observers see the model's own nodes; in the plan's execution order,
    /// `NodeInfo::device` saying where each ran).
    pub fn run_with(&self, observer: &mut dyn RunObserver) -> Result<()> {
        self.run_observed(observer, self.options.fuse)
    }

    fn run_observed(&self, observer: &mut dyn RunObserver, unfused: bool) -> Result<()> {
        let mut state = self.lock_state()?;
        self.check_inputs()?;
        let opts = PlanOptions {
            fuse: self.options.fuse && !unfused,
            ..self.options.clone()
        };
        let plan = if unfused {
            let mut o = lock(&self.observed);
            match &*o {
                Some(p) => Arc::clone(p),
                None => {
                    let p = Arc::new(make_plan(&self.graph, &self.ctx, &opts)?);
                    *o = Some(Arc::clone(&p));
                    p
                }
            }
        } else {
            self.plan()
        };
        match self.run_plan(&plan, &mut state, observer, unfused) {
            Err(e) if is_gpu_fault(&e) && plan.gpu().is_some() => {
                log::warn!("GPU segment failed ({e}); re-planning on the CPU and running again");
                let cpu = Arc::new(Plan::cpu_only(&self.graph, &self.ctx, &opts)?);
                if unfused {
                    *lock(&self.observed) = Some(Arc::clone(&cpu));
                    state.observed_slots = Slots::default();
                } else {
                    *lock(&self.plan) = Arc::clone(&cpu);
                    state.slots = Slots::default();
                }
                // The device is gone for the other plan too: it re-plans at its next run.
                self.run_plan(&cpu, &mut state, observer, unfused)?;
                state.stats.fell_back_to_cpu = true;
                Ok(())
            }
            other => other,
        }
    }

    fn run_plan(
        &self,
        plan: &Plan,
        state: &mut RunState,
        observer: &mut dyn RunObserver,
        unfused: bool,
    ) -> Result<()> {
        let pg = plan.graph();
        // The plan's graph (fused) keeps input and output names.
        let inputs = pg
            .inputs()
            .iter()
            .map(|&id| {
                let name = &pg.value(id)?.name;
                self.graph
                    .inputs()
                    .iter()
                    .position(|&i| self.graph.value(i).is_ok_and(|v| &v.name == name))
                    .and_then(|p| self.inputs.get(p))
                    .ok_or_else(|| Error::Missing {
                        what: format!("input tensor `{name}`"),
                    })
            })
            .collect::<Result<Vec<&Tensor>>>()?;
        let RunState {
            slots,
            observed_slots,
            validation,
            ..
        } = state;
        let (outs, stats) = execute(
            plan,
            if unfused { observed_slots } else { slots },
            &inputs,
            observer,
            self.ctx.validate(),
            validation,
            &self.fault,
        )?;
        let mut outputs = Vec::with_capacity(self.graph.outputs().len());
        for (k, &id) in self.graph.outputs().iter().enumerate() {
            let name = &self.graph.value(id)?.name;
            let pos = pg
                .outputs()
                .iter()
                .position(|&o| pg.value(o).is_ok_and(|v| &v.name == name))
                .unwrap_or(k);
            outputs.push(outs.get(pos).cloned().ok_or_else(|| Error::Missing {
                what: format!("output `{name}` of the plan"),
            })?);
        }
        state.outputs = outputs;
        state.stats = stats;
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
        let plan = make_plan(&graph, &self.ctx, &self.options)?;
        drop(_guard);
        self.graph = Arc::new(graph);
        self.inputs = inputs;
        *self
            .plan
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(plan);
        *self
            .observed
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        *self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = RunState::default();
        Ok(())
    }
}
