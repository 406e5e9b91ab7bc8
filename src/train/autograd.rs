//! Autograd as a graph transform: from an inference graph and a loss, the training graph
//! that computes the loss and the gradient of every trainable parameter in one run.
//!
//! 1. The forward graph is copied with each trainable parameter turned into a graph INPUT
//!    named after it (so the optimizer can update it between steps without rebuilding), and
//!    frozen parameters kept as constants.
//! 2. The loss node is appended (`loss(prediction, labels)`, labels a new input).
//! 3. A value *needs a gradient* if it is a trainable parameter or is computed from one; the
//!    reverse walk visits only nodes with such an input, so a frozen backbone gets no backward
//!    nodes at all (transfer learning).
//! 4. Walking nodes in reverse order, each node's rule ([`Op::grad`]) emits backward nodes;
//!    gradients reaching one value along several paths are summed with `add` nodes.
//! 5. Dead backward nodes (e.g. the input gradient of the first convolution, which nothing
//!    needs) are pruned.
//!
//! In training mode (the default, [`BuildOptions`]) each `batch_norm` whose running statistics
//! are model constants becomes `batch_norm_train`: the statistics turn into graph inputs
//! ("buffers") and their updated values into outputs, which the trainer commits after a step.
//!
//! Outputs of the training graph, in order: the loss, the forward outputs, one gradient per
//! trainable parameter (`grad/<name>`), then the updated buffers.

use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, ValueId, ValueKind};
use crate::ops::batch_norm_train::BatchNormTrain;
use crate::ops::binary::{Binary, BinaryKind};
use crate::ops::{GradContext, Op};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;

/// The loss appended to the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy with integer class labels (`[batch]` i32), mean over the batch.
    SparseSoftmaxCrossEntropy,
    /// Softmax cross-entropy with dense (probability) labels shaped like the logits.
    SoftmaxCrossEntropy,
    /// Mean squared error against targets shaped like the prediction.
    Mse,
    /// Sigmoid binary cross-entropy on logits.
    SigmoidBce,
    /// Smooth L1 (Huber with delta 1).
    SmoothL1,
}

impl Loss {
    fn op(self) -> Op {
        use crate::ops::*;
        match self {
            Loss::SparseSoftmaxCrossEntropy => {
                sparse_softmax_cross_entropy::SparseSoftmaxCrossEntropy.into()
            }
            Loss::SoftmaxCrossEntropy => softmax_cross_entropy::SoftmaxCrossEntropy.into(),
            Loss::Mse => mse::Mse.into(),
            Loss::SigmoidBce => sigmoid_bce::SigmoidBce.into(),
            Loss::SmoothL1 => smooth_l1::SmoothL1::default().into(),
        }
    }

    /// The labels' dtype and shape for a prediction of `shape`.
    fn labels(self, shape: &[usize]) -> (DType, Vec<usize>) {
        match self {
            Loss::SparseSoftmaxCrossEntropy => (DType::I32, shape[..1.min(shape.len())].to_vec()),
            _ => (DType::F32, shape.to_vec()),
        }
    }
}

/// One trainable parameter of a [`TrainGraph`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSlot {
    /// The parameter's name (as in the model).
    pub name: String,
    /// Its initial value (from the model).
    pub init: Tensor,
    /// Its position among the training graph's inputs.
    pub input: usize,
    /// Its gradient's position among the training graph's outputs.
    pub grad_output: usize,
}

/// One non-trained state tensor the training graph updates: a batch norm's running mean or
/// variance (an input fed each step; its new value an output the trainer commits).
#[derive(Debug, Clone, PartialEq)]
pub struct BufferSlot {
    /// The buffer's name (as in the model).
    pub name: String,
    /// Its initial value (from the model).
    pub init: Tensor,
    /// Its position among the training graph's inputs.
    pub input: usize,
    /// Its updated value's position among the training graph's outputs.
    pub output: usize,
}

/// How forward ops behave in the training graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildOptions {
    /// Batch norm normalises with batch statistics and updates its running statistics
    /// (PyTorch's `model.train()`), wherever those statistics are constants of the model.
    /// `false` keeps them frozen (inference-mode batch norm, e.g. a frozen backbone).
    pub batch_norm_train: bool,
    /// Weight of the batch statistic in the running-stat update (PyTorch's `momentum`).
    pub batch_norm_momentum: f64,
    /// Dropout drops (PyTorch's `model.train()`), with a mask that changes every step: each
    /// dropout node gets the graph input `train/step` (i32, the steps already taken).
    pub dropout_train: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            batch_norm_train: true,
            batch_norm_momentum: 0.1,
            dropout_train: true,
        }
    }
}

/// The training graph and where everything is in it.
#[derive(Debug, Clone)]
pub struct TrainGraph {
    /// Inputs: the model's inputs, the labels, the trainable parameters.
    pub graph: Graph,
    /// Names of the model's data inputs.
    pub data_inputs: Vec<String>,
    /// Name of the labels input.
    pub labels: String,
    /// Position of the loss among the outputs (always 0).
    pub loss_output: usize,
    /// Number of forward outputs (outputs `1..=n`).
    pub forward_outputs: usize,
    /// The trainable parameters.
    pub params: Vec<ParamSlot>,
    /// Running statistics updated by training-mode batch norm.
    pub buffers: Vec<BufferSlot>,
    /// The i32 scalar input holding the steps already taken (dropout masks), if any node
    /// reads it.
    pub step_input: Option<String>,
}

/// Builds the training graph of `forward` (whose first output is the prediction) with `loss`,
/// training the parameters `trainable` accepts (by name), with the default [`BuildOptions`].
pub fn build(forward: &Graph, loss: Loss, trainable: &dyn Fn(&str) -> bool) -> Result<TrainGraph> {
    build_with(forward, loss, trainable, BuildOptions::default())
}

/// The running statistics (inputs 1 and 2) of every `batch_norm` whose statistics are
/// constants: they become buffers in training mode.
fn batch_norm_buffers(forward: &Graph) -> Vec<ValueId> {
    let mut ids = Vec::new();
    for node in forward.nodes() {
        if !matches!(node.op, Op::BatchNorm(_)) {
            continue;
        }
        let stats = [node.inputs.get(1), node.inputs.get(2)];
        let constant = |id: Option<&ValueId>| {
            id.and_then(|&id| forward.value(id).ok())
                .is_some_and(|v| matches!(v.kind, ValueKind::Constant { .. }))
        };
        if stats.iter().all(|&id| constant(id)) {
            ids.extend(stats.into_iter().flatten().copied());
        }
    }
    ids
}

/// [`build`] with explicit options.
pub fn build_with(
    forward: &Graph,
    loss: Loss,
    trainable: &dyn Fn(&str) -> bool,
    opts: BuildOptions,
) -> Result<TrainGraph> {
    let buffer_ids = if opts.batch_norm_train {
        batch_norm_buffers(forward)
    } else {
        Vec::new()
    };
    let mut buffers: Vec<BufferSlot> = Vec::new();
    // (buffer name, updated value name) pairs, resolved to positions after pruning.
    let mut buffer_updates: Vec<(String, ValueId)> = Vec::new();
    let pred_old = *forward.outputs().first().ok_or_else(|| Error::Missing {
        what: "a model output to train".into(),
    })?;
    let mut b = GraphBuilder::new();
    let mut map: Vec<Option<ValueId>> = vec![None; forward.values().len()];
    let mut needs = HashMap::<ValueId, bool>::new();
    let mut params = Vec::new();
    let mut data_inputs = Vec::new();
    // Model inputs first, so the data inputs keep their positions.
    for &id in forward.inputs() {
        let v = forward.value(id)?;
        let new = b.input(&v.name, v.fact.dtype, &v.fact.shape)?;
        map[id.0] = Some(new);
        data_inputs.push(v.name.clone());
    }
    for (i, v) in forward.values().iter().enumerate() {
        if let ValueKind::Constant { data, trainable: t } = &v.kind {
            if buffer_ids.contains(&ValueId(i)) {
                let id = b.input(&v.name, v.fact.dtype, &v.fact.shape)?;
                buffers.push(BufferSlot {
                    name: v.name.clone(),
                    init: (**data).clone(),
                    input: 0, // fixed below
                    output: 0,
                });
                map[i] = Some(id);
                continue;
            }
            // Only float parameters the model marks trainable (or any float constant the
            // predicate names explicitly) are trained.
            let train = *t && v.fact.dtype == DType::F32 && trainable(&v.name);
            let new = if train {
                let id = b.input(&v.name, v.fact.dtype, &v.fact.shape)?;
                params.push(ParamSlot {
                    name: v.name.clone(),
                    init: (**data).clone(),
                    input: 0, // fixed below
                    grad_output: 0,
                });
                needs.insert(id, true);
                id
            } else {
                let id = b.add_constant(&v.name, (**data).clone(), false)?;
                b.set_quant(id, v.fact.quant.clone())?;
                id
            };
            map[i] = Some(new);
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
    // Forward nodes, remembering which need a backward pass.
    let mut fwd_nodes = Vec::new();
    let mut step_input: Option<(String, ValueId)> = None;
    for node in forward.nodes() {
        let mut ins = node
            .inputs
            .iter()
            .map(|&id| lookup(&map, id))
            .collect::<Result<Vec<_>>>()?;
        // Training-mode dropout, its mask stream advanced by the step input.
        let mut op = node.op.clone();
        if let Op::Dropout(d) = &node.op
            && opts.dropout_train
            && ins.len() == 1
        {
            let step = match &step_input {
                Some((_, id)) => *id,
                None => {
                    let name = unique(&b, "train/step");
                    let id = b.input(&name, DType::I32, &[])?;
                    step_input = Some((name, id));
                    id
                }
            };
            ins.push(step);
            op = Op::Dropout(crate::ops::dropout::Dropout {
                training: true,
                ..d.clone()
            });
        }
        let bn_train = match &node.op {
            Op::BatchNorm(bn)
                if node.inputs.len() == 5
                    && buffer_ids.contains(&node.inputs[1])
                    && buffer_ids.contains(&node.inputs[2]) =>
            {
                Some(BatchNormTrain {
                    eps: bn.eps,
                    momentum: opts.batch_norm_momentum,
                })
            }
            _ => None,
        };
        // The op the training graph runs (and whose gradient rule the reverse walk calls).
        if let Some(bn) = bn_train {
            op = Op::BatchNormTrain(bn);
        }
        let outs = b.node(&node.name, op.clone(), &ins)?;
        if matches!(op, Op::BatchNormTrain(_))
            && let [_, new_mean, new_var] = outs[..]
        {
            for (buf, new) in [(node.inputs[1], new_mean), (node.inputs[2], new_var)] {
                buffer_updates.push((forward.value(buf)?.name.clone(), new));
            }
        }
        let any = ins.iter().any(|i| needs.get(i).copied().unwrap_or(false));
        for (&old, &new) in node.outputs.iter().zip(&outs) {
            map[old.0] = Some(new);
            if any {
                needs.insert(new, true);
            }
        }
        fwd_nodes.push((node.name.clone(), op, ins, outs, any));
    }
    let pred = lookup(&map, pred_old)?;
    let pred_fact = b.fact(pred)?.clone();
    let (label_dtype, label_shape) = loss.labels(&pred_fact.shape);
    let labels_name = unique(&b, "labels");
    let labels = b.input(&labels_name, label_dtype, &label_shape)?;
    let loss_name = unique(&b, "loss");
    let loss_val = b.node1(&loss_name, loss.op(), &[pred, labels])?;
    let seed_name = unique(&b, "loss/grad_seed");
    let seed = b.constant(&seed_name, Tensor::from_vec(&[], vec![1f32])?)?;

    // Reverse walk. `grads[v]` is the accumulated gradient of value v.
    let mut grads: HashMap<ValueId, ValueId> = HashMap::new();
    let mut adds = 0usize;
    let mut accumulate = |b: &mut GraphBuilder,
                          grads: &mut HashMap<ValueId, ValueId>,
                          v: ValueId,
                          g: ValueId|
     -> Result<()> {
        match grads.get(&v).copied() {
            None => {
                grads.insert(v, g);
            }
            Some(prev) => {
                adds += 1;
                let name = unique(b, &format!("grad_accumulate/{adds}"));
                let sum = b.node1(
                    &name,
                    Binary {
                        kind: BinaryKind::Add,
                    },
                    &[prev, g],
                )?;
                grads.insert(v, sum);
            }
        }
        Ok(())
    };
    // The loss node's own rule gives the prediction's gradient.
    {
        let loss_op = loss.op();
        let ins = [pred, labels];
        let outs = [loss_val];
        let og = [Some(seed)];
        let mut ctx = GradContext {
            builder: &mut b,
            node: &loss_name,
            inputs: &ins,
            outputs: &outs,
            output_grads: &og,
        };
        let g = loss_op.grad(&mut ctx)?;
        if let Some(Some(gp)) = g.first() {
            accumulate(&mut b, &mut grads, pred, *gp)?;
        }
    }
    for (name, op, ins, outs, any) in fwd_nodes.iter().rev() {
        if !any {
            continue;
        }
        let og: Vec<Option<ValueId>> = outs.iter().map(|o| grads.get(o).copied()).collect();
        if og.iter().all(Option::is_none) {
            continue;
        }
        let g = {
            let mut ctx = GradContext {
                builder: &mut b,
                node: name,
                inputs: ins,
                outputs: outs,
                output_grads: &og,
            };
            op.grad(&mut ctx).map_err(|e| match e {
                Error::NotSupported { what } => Error::NotSupported {
                    what: format!("training through node `{name}`: {what}"),
                },
                other => other,
            })?
        };
        if g.len() != ins.len() {
            return Err(Error::OpExecution {
                op: op.name().into(),
                node: name.clone(),
                reason: format!(
                    "gradient rule returned {} gradients for {} inputs",
                    g.len(),
                    ins.len()
                ),
            });
        }
        for (&input, gi) in ins.iter().zip(g) {
            if let Some(gi) = gi
                && needs.get(&input).copied().unwrap_or(false)
            {
                accumulate(&mut b, &mut grads, input, gi)?;
            }
        }
    }

    // Outputs: loss, forward outputs, parameter gradients.
    b.output(loss_val)?;
    let mut forward_outputs = 0;
    for &o in forward.outputs() {
        b.output(lookup(&map, o)?)?;
        forward_outputs += 1;
    }
    let mut grad_ids = Vec::with_capacity(params.len());
    for p in &params {
        let id = b.value_id(&p.name).ok_or_else(|| Error::Missing {
            what: format!("parameter `{}`", p.name),
        })?;
        let g = match grads.get(&id) {
            Some(&g) => g,
            // A trainable parameter the loss does not depend on: its gradient is zero.
            None => {
                let name = unique(&b, &format!("grad/{}/zero", p.name));
                b.constant(&name, Tensor::zeros(p.init.dtype(), p.init.dims())?)?
            }
        };
        b.output(g)?;
        grad_ids.push(g);
    }
    // A buffer updated by several nodes (a shared batch norm) keeps the last update.
    let mut update_names: Vec<(String, String)> = Vec::new();
    for (buf, new) in &buffer_updates {
        b.output(*new)?;
        let name = b.value_name(*new)?;
        update_names.retain(|(n, _)| n != buf);
        update_names.push((buf.clone(), name));
    }
    // Positions are looked up by name after pruning (ids change; an output listed twice
    // appears once).
    let grad_names: Vec<String> = grad_ids
        .iter()
        .map(|&g| b.value_name(g))
        .collect::<Result<_>>()?;
    let graph = b.build()?.prune();
    let input_pos = |name: &str| {
        graph
            .inputs()
            .iter()
            .position(|&i| graph.value(i).is_ok_and(|v| v.name == name))
            .ok_or_else(|| Error::Missing {
                what: format!("training input `{name}`"),
            })
    };
    let output_pos = |name: &str| {
        graph
            .outputs()
            .iter()
            .position(|&i| graph.value(i).is_ok_and(|v| v.name == name))
            .ok_or_else(|| Error::Missing {
                what: format!("training output `{name}`"),
            })
    };
    for (p, gname) in params.iter_mut().zip(&grad_names) {
        p.input = input_pos(&p.name)?;
        p.grad_output = output_pos(gname)?;
    }
    // A buffer no batch norm updates any more (pruned) stays out of the slots.
    buffers.retain(|buf| update_names.iter().any(|(n, _)| n == &buf.name));
    for buf in &mut buffers {
        buf.input = input_pos(&buf.name)?;
        let new = update_names
            .iter()
            .find(|(n, _)| n == &buf.name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        buf.output = output_pos(new)?;
    }
    // A step input nothing reads any more was pruned away.
    let step_input = step_input
        .map(|(name, _)| name)
        .filter(|name| graph.value_by_name(name).is_some());
    Ok(TrainGraph {
        graph,
        data_inputs,
        labels: labels_name,
        loss_output: 0,
        forward_outputs,
        params,
        buffers,
        step_input,
    })
}

/// `base`, or `base#2`, `base#3`, ... if taken.
fn unique(b: &GraphBuilder, base: &str) -> String {
    if !b.has_name(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}#{i}"))
        .find(|n| !b.has_name(n))
        .unwrap_or_else(|| base.to_string())
}
