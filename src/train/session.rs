//! `TrainSession`: trains a model on the context's devices.
//!
//! The training graph (forward, loss, backward from [`super::autograd`], then one
//! `sgd_update` / `adam_update` node per trainable parameter) runs as an ordinary
//! [`Session`], so the planner and every kernel serve training unchanged. Parameters,
//! optimizer state, the learning rate and the step count are graph inputs, fed each step; the
//! update nodes' outputs become the next step's parameters and state — but only after the
//! step's loss and every new parameter are checked finite, so a diverging step leaves the last
//! good weights intact and names the first node that produced a non-finite value.

use super::autograd::{self, BuildOptions, Loss, TrainGraph};
use crate::error::{Error, Result};
use crate::format::StateEntry;
use crate::graph::{Graph, GraphBuilder};
use crate::ops::Op;
use crate::ops::adam_update::AdamUpdate;
use crate::ops::sgd_update::SgdUpdate;
use crate::session::{Context, Flow, Model, NodeInfo, RunObserver, Session};
use crate::tensor::{DType, Tensor};
use std::path::Path;
use std::sync::Arc;

/// Which parameters train.
#[derive(Clone, Default)]
pub enum Trainable {
    /// Every parameter the model marks trainable.
    #[default]
    All,
    /// Only parameters whose name starts with one of these prefixes (e.g. a new head).
    Only(Vec<String>),
    /// Every parameter except those whose name starts with one of these prefixes (a frozen
    /// backbone).
    Freeze(Vec<String>),
    /// Parameters the predicate accepts, by name.
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl std::fmt::Debug for Trainable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trainable::All => write!(f, "All"),
            Trainable::Only(p) => write!(f, "Only({p:?})"),
            Trainable::Freeze(p) => write!(f, "Freeze({p:?})"),
            Trainable::Predicate(_) => write!(f, "Predicate(..)"),
        }
    }
}

impl Trainable {
    /// Whether parameter `name` trains.
    pub fn accepts(&self, name: &str) -> bool {
        match self {
            Trainable::All => true,
            Trainable::Only(p) => p.iter().any(|p| name.starts_with(p.as_str())),
            Trainable::Freeze(p) => !p.iter().any(|p| name.starts_with(p.as_str())),
            Trainable::Predicate(f) => f(name),
        }
    }
}

/// The optimizer (PyTorch semantics; see the `sgd_update` and `adam_update` ops).
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// SGD with optional momentum (MindSpore's `Momentum` is SGD with dampening 0).
    Sgd {
        /// Base learning rate.
        lr: f32,
        /// Momentum factor.
        momentum: f64,
        /// Dampening.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 weight decay.
        weight_decay: f64,
    },
    /// Adam (or AdamW with `decoupled`).
    Adam {
        /// Base learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator epsilon.
        eps: f64,
        /// Weight decay.
        weight_decay: f64,
        /// AdamW's decoupled decay.
        decoupled: bool,
    },
}

impl Optimizer {
    /// Plain SGD.
    pub fn sgd(lr: f32) -> Self {
        Optimizer::Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum (MindSpore's `Momentum`).
    pub fn momentum(lr: f32, momentum: f64) -> Self {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Adam with PyTorch's defaults.
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with decoupled weight decay `wd`.
    pub fn adamw(lr: f32, wd: f64) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: wd,
            decoupled: true,
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => *lr,
        }
    }

    /// The update op and the names of its state tensors.
    fn update(&self) -> (Op, &'static [&'static str]) {
        match *self {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                let op = SgdUpdate {
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                };
                let state: &'static [&'static str] =
                    if op.has_buffer() { &["velocity"] } else { &[] };
                (op.into(), state)
            }
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
                ..
            } => (
                AdamUpdate {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    decoupled,
                }
                .into(),
                &["adam_m", "adam_v"],
            ),
        }
    }
}

/// Learning-rate schedule: a factor on the base rate as a function of the step (0-based).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Schedule {
    /// Always 1.
    #[default]
    Constant,
    /// `gamma^(step / every)`.
    Step {
        /// Steps between decays.
        every: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine from 1 down to `min_factor` over `total` steps, then flat.
    Cosine {
        /// Steps of the decay.
        total: u64,
        /// Final factor.
        min_factor: f64,
    },
    /// Linear warm-up from `1/steps` to 1 over `steps`, then `after`.
    WarmUp {
        /// Warm-up steps.
        steps: u64,
        /// The schedule after warm-up (its step count starts at 0 after warm-up).
        after: Box<Schedule>,
    },
}

impl Schedule {
    /// The factor at `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Step { every, gamma } => gamma.powf((step / (*every).max(1)) as f64),
            Schedule::Cosine { total, min_factor } => {
                let t = (step.min(*total) as f64) / (*total).max(1) as f64;
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::WarmUp { steps, after } => {
                if step < *steps {
                    (step + 1) as f64 / *steps as f64
                } else {
                    after.factor(step - steps)
                }
            }
        }
    }
}

/// What to train and how.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The loss on the model's first output.
    pub loss: Loss,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Which parameters train.
    pub trainable: Trainable,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// How forward ops train: batch norm with batch statistics and running-stat momentum
    /// (the default, as PyTorch's `model.train()`), or frozen statistics.
    pub build: BuildOptions,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            loss: Loss::SparseSoftmaxCrossEntropy,
            optimizer: Optimizer::momentum(0.01, 0.9),
            trainable: Trainable::All,
            schedule: Schedule::Constant,
            build: BuildOptions::default(),
        }
    }
}

/// Where the update outputs of one parameter are.
#[derive(Debug, Clone)]
struct Slot {
    /// Parameter name.
    name: String,
    /// Training-graph input names: state tensors.
    state_inputs: Vec<String>,
    /// Output positions: new parameter, then new state.
    outputs: Vec<usize>,
}

/// A model being trained.
pub struct TrainSession {
    ctx: Context,
    forward: Graph,
    train: TrainGraph,
    session: Session,
    slots: Vec<Slot>,
    params: Vec<Tensor>,
    state: Vec<Vec<Tensor>>,
    /// Current values of the graph's buffers (batch norm running statistics), in
    /// `train.buffers` order.
    buffers: Vec<Tensor>,
    step: u64,
    config: TrainConfig,
    lr_override: Option<f32>,
    training: bool,
    lr_input: String,
    step_input: String,
}

impl std::fmt::Debug for TrainSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainSession")
            .field("params", &self.slots.len())
            .field("step", &self.step)
            .field("config", &self.config)
            .finish()
    }
}

/// Records the first node whose output holds a non-finite value.
#[derive(Default)]
struct FirstNonFinite(Option<String>);

impl RunObserver for FirstNonFinite {
    fn wants_tensors(&self) -> bool {
        true
    }

    fn after(&mut self, node: &NodeInfo<'_>, outputs: &[&Tensor]) -> Flow {
        let bad = outputs
            .iter()
            .any(|t| t.dtype() == DType::F32 && t.to_f32_vec().iter().any(|v| !v.is_finite()));
        if bad {
            self.0 = Some(format!("{} ({})", node.name, node.op));
            return Flow::Stop;
        }
        Flow::Continue
    }
}

impl TrainSession {
    /// Builds the training graph of `model` and a session running it on `ctx`.
    pub fn new(ctx: &Context, model: &Model, config: TrainConfig) -> Result<TrainSession> {
        let forward = model.graph().clone();
        let trainable = config.trainable.clone();
        let tg = autograd::build_with(
            &forward,
            config.loss,
            &|n| trainable.accepts(n),
            config.build,
        )?;
        if tg.params.is_empty() {
            return Err(Error::invalid_param(
                "trainable",
                "no parameter of the model is selected for training",
            ));
        }
        // Extend with the optimizer: lr and step inputs, state inputs, one update per param.
        let (op, state_names) = config.optimizer.update();
        let mut b: GraphBuilder = tg.graph.clone().into_builder();
        let lr_input = fresh(&b, "optimizer/lr");
        let lr = b.input(&lr_input, DType::F32, &[])?;
        // One step input serves the optimizers and the dropout masks.
        let (step_input, step) = match &tg.step_input {
            Some(name) => (
                name.clone(),
                b.value_id(name).ok_or_else(|| Error::Missing {
                    what: format!("input `{name}`"),
                })?,
            ),
            None => {
                let name = fresh(&b, "optimizer/step");
                let id = b.input(&name, DType::I32, &[])?;
                (name, id)
            }
        };
        let mut pending = Vec::new();
        for p in &tg.params {
            let pid = b.value_id(&p.name).ok_or_else(|| Error::Missing {
                what: format!("parameter `{}`", p.name),
            })?;
            let gid = *tg
                .graph
                .outputs()
                .get(p.grad_output)
                .ok_or_else(|| Error::Missing {
                    what: format!("gradient of `{}`", p.name),
                })?;
            let mut state_inputs = Vec::new();
            let mut state_ids = Vec::new();
            for s in state_names {
                let name = fresh(&b, &format!("{}/{s}", p.name));
                state_ids.push(b.input(&name, DType::F32, p.init.dims())?);
                state_inputs.push(name);
            }
            let mut ins = vec![pid, gid, lr, step];
            // sgd_update takes its velocity last; adam_update its moments before lr and step.
            if matches!(op, Op::AdamUpdate(_)) {
                ins = vec![pid, gid];
                ins.extend(&state_ids);
                ins.extend([lr, step]);
            } else {
                ins.extend(&state_ids);
            }
            let node = fresh(&b, &format!("{}/update", p.name));
            let outs = b.node(&node, op.clone(), &ins)?;
            for &o in &outs {
                b.output(o)?;
            }
            let out_names = outs
                .iter()
                .map(|&o| b.value_name(o))
                .collect::<Result<Vec<_>>>()?;
            pending.push((p.name.clone(), state_inputs, out_names));
        }
        let graph = b.build()?;
        let slots = pending
            .into_iter()
            .map(|(name, state_inputs, out_names)| {
                let outputs = out_names
                    .iter()
                    .map(|n| {
                        graph
                            .outputs()
                            .iter()
                            .position(|&o| graph.value(o).is_ok_and(|v| &v.name == n))
                            .ok_or_else(|| Error::Missing {
                                what: format!("training output `{n}`"),
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Slot {
                    name,
                    state_inputs,
                    outputs,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params: Vec<Tensor> = tg.params.iter().map(|p| p.init.clone()).collect();
        let state = tg
            .params
            .iter()
            .map(|p| {
                state_names
                    .iter()
                    .map(|_| Tensor::zeros(DType::F32, p.init.dims()))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let buffers: Vec<Tensor> = tg.buffers.iter().map(|b| b.init.clone()).collect();
        // Buffer output positions move when the optimizer's outputs are appended: look them
        // up by name again.
        let mut tg = tg;
        for buf in &mut tg.buffers {
            let name = tg
                .graph
                .outputs()
                .get(buf.output)
                .and_then(|&o| tg.graph.value(o).ok())
                .map(|v| v.name.clone())
                .ok_or_else(|| Error::Missing {
                    what: format!("update of buffer `{}`", buf.name),
                })?;
            buf.output = graph
                .outputs()
                .iter()
                .position(|&o| graph.value(o).is_ok_and(|v| v.name == name))
                .ok_or_else(|| Error::Missing {
                    what: format!("training output `{name}`"),
                })?;
        }
        let train = TrainGraph { graph, ..tg };
        let session = Session::new(ctx, &Model::from_graph(train.graph.clone()))?;
        Ok(TrainSession {
            ctx: ctx.clone(),
            forward,
            train,
            session,
            slots,
            params,
            state,
            buffers,
            step: 0,
            config,
            lr_override: None,
            training: true,
            lr_input,
            step_input,
        })
    }

    /// The training graph (forward, loss, backward, updates).
    pub fn graph(&self) -> &Graph {
        &self.train.graph
    }

    /// Names of the trained parameters, in order.
    pub fn parameter_names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// The current value of buffer `name` (a batch norm running statistic).
    pub fn buffer(&self, name: &str) -> Option<&Tensor> {
        self.train
            .buffers
            .iter()
            .position(|b| b.name == name)
            .map(|i| &self.buffers[i])
    }

    /// The current value of parameter `name`.
    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.slots
            .iter()
            .position(|s| s.name == name)
            .map(|i| &self.params[i])
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Training mode (the default): dropout active, batch statistics.
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Evaluation mode: [`TrainSession::step`] refuses to run.
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// Overrides the learning rate from the next step on (the schedule no longer applies).
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::invalid_param(
                "lr",
                format!("{lr} must be finite and >= 0"),
            ));
        }
        self.lr_override = Some(lr);
        Ok(())
    }

    /// The learning rate the next step uses.
    pub fn learning_rate(&self) -> f32 {
        self.lr_override.unwrap_or_else(|| {
            (f64::from(self.config.optimizer.lr()) * self.config.schedule.factor(self.step)) as f32
        })
    }

    /// One training step on a batch: `inputs` are the model's data inputs in order, `labels`
    /// the loss's targets. Returns the batch loss. On a non-finite loss or parameter the step
    /// is not applied and the error names the first node that produced a non-finite value.
    pub fn step(&mut self, inputs: &[Tensor], labels: &Tensor) -> Result<f32> {
        self.step_observed(inputs, labels, None)
    }

    /// [`TrainSession::step`] with per-node callbacks, as [`Session::run_with`]: `observer`
    /// sees every node of the training graph (forward, loss, backward, updates) before and
    /// after it runs, with its tensors on request, and may stop the step (`Flow::Stop` gives
    /// `Error::Stopped`, and nothing is committed).
    pub fn step_with(
        &mut self,
        inputs: &[Tensor],
        labels: &Tensor,
        observer: &mut dyn RunObserver,
    ) -> Result<f32> {
        self.step_observed(inputs, labels, Some(observer))
    }

    fn step_observed(
        &mut self,
        inputs: &[Tensor],
        labels: &Tensor,
        observer: Option<&mut dyn RunObserver>,
    ) -> Result<f32> {
        if !self.training {
            return Err(Error::invalid_param(
                "mode",
                "the session is in eval mode; call train() first",
            ));
        }
        if inputs.len() != self.train.data_inputs.len() {
            return Err(Error::InputTensor {
                name: "inputs".into(),
                reason: format!(
                    "{} data tensors given, the model has {} inputs",
                    inputs.len(),
                    self.train.data_inputs.len()
                ),
            });
        }
        self.fit_batch(inputs, labels)?;
        let lr = self.learning_rate();
        // The update ops take the number of steps already taken.
        let step = i32::try_from(self.step)
            .ok()
            .filter(|&s| s < i32::MAX)
            .ok_or_else(|| Error::invalid_param("step", "more than 2^31 steps"))?;
        {
            let s = &mut self.session;
            for (name, t) in self.train.data_inputs.iter().zip(inputs) {
                *s.input_by_tensor_name(name)? = t.clone();
            }
            *s.input_by_tensor_name(&self.train.labels)? = labels.clone();
            for ((slot, p), st) in self.slots.iter().zip(&self.params).zip(&self.state) {
                *s.input_by_tensor_name(&slot.name)? = p.clone();
                for (name, t) in slot.state_inputs.iter().zip(st) {
                    *s.input_by_tensor_name(name)? = t.clone();
                }
            }
            for (buf, t) in self.train.buffers.iter().zip(&self.buffers) {
                *s.input_by_tensor_name(&buf.name)? = t.clone();
            }
            *s.input_by_tensor_name(&self.lr_input)? = Tensor::from_vec(&[], vec![lr])?;
            *s.input_by_tensor_name(&self.step_input)? = Tensor::from_vec(&[], vec![step])?;
        }
        match observer {
            Some(o) => self.session.run_with(o)?,
            None => self.session.run()?,
        }
        let outs = self.session.outputs()?;
        let loss = outs
            .get(self.train.loss_output)
            .map(|(_, t)| t.to_f32_vec())
            .and_then(|v| v.first().copied())
            .ok_or_else(|| Error::Missing {
                what: "the loss output".into(),
            })?;
        let mut new_params = Vec::with_capacity(self.slots.len());
        let mut new_state = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let mut it = slot.outputs.iter().map(|&i| {
                outs.get(i)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| Error::Missing {
                        what: format!("update output of `{}`", slot.name),
                    })
            });
            let p = it.next().ok_or_else(|| Error::Missing {
                what: format!("update output of `{}`", slot.name),
            })??;
            new_params.push(p);
            new_state.push(it.collect::<Result<Vec<_>>>()?);
        }
        let new_buffers = self
            .train
            .buffers
            .iter()
            .map(|buf| {
                outs.get(buf.output)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| Error::Missing {
                        what: format!("update of buffer `{}`", buf.name),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let finite = loss.is_finite()
            && new_params
                .iter()
                .all(|p| p.to_f32_vec().iter().all(|v| v.is_finite()));
        if !finite {
            let mut probe = FirstNonFinite::default();
            // The probe stops the run at the culprit: that `Stopped` error is expected.
            let _ = self.session.run_with(&mut probe);
            return Err(Error::OpExecution {
                op: "train_step".into(),
                node: probe.0.clone().unwrap_or_else(|| "?".into()),
                reason: format!(
                    "step {} produced a non-finite loss or parameter (loss {loss}); first \
                     non-finite value at node {}; weights left at step {}",
                    self.step + 1,
                    probe.0.unwrap_or_else(|| "(none found)".into()),
                    self.step
                ),
            });
        }
        self.params = new_params;
        self.state = new_state;
        self.buffers = new_buffers;
        self.step += 1;
        Ok(loss)
    }

    /// Resizes the training session when a batch's size differs from the graph's.
    fn fit_batch(&mut self, inputs: &[Tensor], labels: &Tensor) -> Result<()> {
        let g = self.session.graph();
        let mut changes: Vec<(String, Vec<usize>)> = Vec::new();
        for (name, t) in self
            .train
            .data_inputs
            .iter()
            .chain(std::iter::once(&self.train.labels))
            .zip(inputs.iter().chain(std::iter::once(labels)))
        {
            let id = g.value_by_name(name).ok_or_else(|| Error::Missing {
                what: format!("input `{name}`"),
            })?;
            if g.value(id)?.fact.shape != t.dims() {
                changes.push((name.clone(), t.dims().to_vec()));
            }
        }
        if !changes.is_empty() {
            let refs: Vec<(&str, &[usize])> = changes
                .iter()
                .map(|(n, s)| (n.as_str(), s.as_slice()))
                .collect();
            self.session.resize(&refs)?;
        }
        Ok(())
    }

    /// The model with the current parameters (an inference graph `Session` can run).
    pub fn inference_graph(&self) -> Result<Graph> {
        let mut g = self.forward.clone();
        for (slot, p) in self.slots.iter().zip(&self.params) {
            g.replace_constant(&slot.name, p.clone())?;
        }
        for (buf, t) in self.train.buffers.iter().zip(&self.buffers) {
            g.replace_constant(&buf.name, t.clone())?;
        }
        Ok(g)
    }

    /// Mean loss and accuracy (argmax of the first output against integer labels) over
    /// `images` `[n, ...]` and `labels` `[n]` (i32), in batches of `batch`.
    pub fn evaluate(&self, images: &Tensor, labels: &Tensor, batch: usize) -> Result<(f32, f32)> {
        let n = labels.numel();
        if n == 0 || images.dims().first() != Some(&n) || batch == 0 {
            return Err(Error::invalid_param(
                "evaluate",
                format!("{n} labels for images {:?}, batch {batch}", images.dims()),
            ));
        }
        let graph = self.inference_graph()?;
        let input = self
            .train
            .data_inputs
            .first()
            .ok_or_else(|| Error::Missing {
                what: "a data input".into(),
            })?;
        let mut session = Session::new(&self.ctx, &Model::from_graph(graph))?;
        let labels = labels.as_slice::<i32>()?;
        let per: usize = images.dims()[1..].iter().product();
        let x = images.as_slice::<f32>()?;
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        let mut start = 0;
        while start < n {
            let m = batch.min(n - start);
            let mut dims = images.dims().to_vec();
            dims[0] = m;
            let cur = session
                .inputs()
                .first()
                .map(|(_, t)| t.dims().to_vec())
                .unwrap_or_default();
            if cur != dims {
                session.resize(&[(input.as_str(), &dims)])?;
            }
            *session.input_by_tensor_name(input)? =
                Tensor::from_vec(&dims, x[start * per..(start + m) * per].to_vec())?;
            session.run()?;
            let (_, logits) =
                session
                    .outputs()?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Missing {
                        what: "model output".into(),
                    })?;
            let l = logits.to_f32_vec();
            let classes = l.len() / m;
            for r in 0..m {
                let row = &l[r * classes..(r + 1) * classes];
                let label = labels[start + r] as usize;
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let lse = f64::from(max)
                    + row
                        .iter()
                        .map(|&v| (f64::from(v) - f64::from(max)).exp())
                        .sum::<f64>()
                        .ln();
                loss_sum += lse - f64::from(*row.get(label).unwrap_or(&0.0));
                let arg = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |acc, (i, &v)| {
                            if v > acc.1 { (i, v) } else { acc }
                        },
                    )
                    .0;
                if arg == label {
                    correct += 1;
                }
            }
            start += m;
        }
        Ok(((loss_sum / n as f64) as f32, correct as f32 / n as f32))
    }

    /// Writes the inference model (current weights, training ops dropped) that `Session`
    /// loads, with the inference rewrites of `plan::fuse` applied: batch norm folded into
    /// the convolutions, activations fused, identities dropped (checkpoints keep the
    /// unfused graph, so training can resume from them).
    pub fn export(&self, path: impl AsRef<Path>) -> Result<()> {
        let (graph, _) = crate::plan::fuse::fuse(
            &self.inference_graph()?,
            &crate::plan::fuse::FuseOptions::inference(),
        )?;
        let bytes = crate::format::save(&graph)?;
        write_atomically(path.as_ref(), &bytes)
    }

    /// Saves weights, optimizer state and the step to `path`, atomically: a temporary file
    /// is written and synced, then renamed over `path`, so a crash mid-save leaves the
    /// previous checkpoint intact.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut state: Vec<StateEntry> = self
            .slots
            .iter()
            .zip(&self.state)
            .filter(|(_, st)| !st.is_empty())
            .map(|(slot, st)| StateEntry {
                name: slot.name.clone(),
                tensors: st.clone(),
            })
            .collect();
        let step = i32::try_from(self.step).unwrap_or(i32::MAX);
        let mut meta = vec![Tensor::from_vec(&[], vec![step])?];
        if let Some(lr) = self.lr_override {
            meta.push(Tensor::from_vec(&[], vec![lr])?);
        }
        state.push(StateEntry {
            name: STEP_ENTRY.into(),
            tensors: meta,
        });
        let bytes = crate::format::save_checkpoint(&self.inference_graph()?, &state)?;
        write_atomically(path.as_ref(), &bytes)
    }

    /// Restores weights, optimizer state and step from a checkpoint written by
    /// [`TrainSession::save_checkpoint`] for the same model and optimizer. On any error the
    /// session is unchanged.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let ck = crate::format::load_checkpoint(&bytes)?;
        let mut params = Vec::with_capacity(self.slots.len());
        let mut state = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let id = ck
                .graph
                .value_by_name(&slot.name)
                .ok_or_else(|| Error::Missing {
                    what: format!("parameter `{}` in {}", slot.name, path.display()),
                })?;
            let p = match &ck.graph.value(id)?.kind {
                crate::graph::ValueKind::Constant { data, .. } => (**data).clone(),
                _ => {
                    return Err(Error::invalid_param(
                        "checkpoint",
                        format!("`{}` is not a parameter", slot.name),
                    ));
                }
            };
            if p.dims() != self.params[i].dims() || p.dtype() != self.params[i].dtype() {
                return Err(Error::invalid_param(
                    "checkpoint",
                    format!(
                        "`{}` has shape {:?}, the model {:?}",
                        slot.name,
                        p.dims(),
                        self.params[i].dims()
                    ),
                ));
            }
            params.push(p);
            let st = if self.state[i].is_empty() {
                Vec::new()
            } else {
                let entry = ck
                    .optimizer_state
                    .iter()
                    .find(|e| e.name == slot.name)
                    .ok_or_else(|| Error::Missing {
                        what: format!("optimizer state of `{}`", slot.name),
                    })?;
                if entry.tensors.len() != self.state[i].len()
                    || entry
                        .tensors
                        .iter()
                        .zip(&self.state[i])
                        .any(|(a, b)| a.dims() != b.dims())
                {
                    return Err(Error::invalid_param(
                        "checkpoint",
                        format!(
                            "optimizer state of `{}` does not match this optimizer",
                            slot.name
                        ),
                    ));
                }
                entry.tensors.clone()
            };
            state.push(st);
        }
        let meta = ck
            .optimizer_state
            .iter()
            .find(|e| e.name == STEP_ENTRY)
            .ok_or_else(|| Error::Missing {
                what: format!("the step count in {}", path.display()),
            })?;
        let step = meta
            .tensors
            .first()
            .and_then(|t| t.as_slice::<i32>().ok().and_then(|s| s.first().copied()))
            .filter(|&s| s >= 0)
            .ok_or_else(|| Error::invalid_param("checkpoint", "bad step count"))?;
        let lr = meta
            .tensors
            .get(1)
            .and_then(|t| t.as_slice::<f32>().ok().and_then(|s| s.first().copied()));
        let mut buffers = Vec::with_capacity(self.buffers.len());
        for (buf, cur) in self.train.buffers.iter().zip(&self.buffers) {
            let t = ck
                .graph
                .value_by_name(&buf.name)
                .and_then(|id| ck.graph.value(id).ok())
                .and_then(|v| match &v.kind {
                    crate::graph::ValueKind::Constant { data, .. } => Some((**data).clone()),
                    _ => None,
                })
                .filter(|t| t.dims() == cur.dims() && t.dtype() == cur.dtype())
                .ok_or_else(|| Error::Missing {
                    what: format!("buffer `{}` in {}", buf.name, path.display()),
                })?;
            buffers.push(t);
        }
        self.params = params;
        self.state = state;
        self.buffers = buffers;
        self.step = step as u64;
        self.lr_override = lr;
        Ok(())
    }
}

/// Name of the checkpoint entry holding the step (and a learning-rate override).
const STEP_ENTRY: &str = "__train__/step";

/// `base`, or `base#2`, ... if taken.
fn fresh(b: &GraphBuilder, base: &str) -> String {
    if !b.has_name(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}#{i}"))
        .find(|n| !b.has_name(n))
        .unwrap_or_else(|| base.to_string())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path`, and
/// syncs the directory, so readers see the old file or the new one, never a torn one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| {
        Error::invalid_param("path", format!("{} has no file name", path.display()))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        // Persist the rename itself (best effort: not every platform can open a directory).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
