//! `plan::fuse`: backend-independent graph rewrites applied to a fixpoint before the graph is
//! partitioned. Each rule is one small function that finds one match and rewrites it; every
//! rewrite removes at least one node, so the loop terminates after at most as many rounds as
//! the graph has nodes.
//!
//! Rules ([`Rule`]):
//! * [`Rule::FoldBatchNorm`]: inference `batch_norm` after `conv2d` / `depthwise_conv2d` /
//!   dense `matmul` folds into the weights and bias (`w' = w * s`, `b' = (b - mean) * s + beta`,
//!   `s = gamma / sqrt(var + eps)` per output channel). Never in training graphs.
//! * [`Rule::FoldAffine`]: `binary` add / sub / mul / div of a producer's output with a
//!   per-channel (or scalar) constant folds into the same weights and bias.
//! * [`Rule::FuseBias`]: `bias_add` becomes the producer's bias input (or is summed into a
//!   constant bias it already has).
//! * [`Rule::FuseActivation`]: `activation` becomes the `act` attribute of `conv2d`,
//!   `depthwise_conv2d` or `matmul` (`conv_transpose2d` has no `act` attribute yet, so it takes
//!   the bias only).
//! * [`Rule::DropIdentity`]: inference `dropout`, and `reshape` / `flatten` to the same shape.
//! * [`Rule::MergeReshape`]: `reshape` of `reshape` (or of `flatten`) becomes one `reshape`.
//! * [`Rule::FoldConstant`]: a node whose inputs are all constants becomes constants (through
//!   `eval_ref`), up to [`FuseOptions::max_folded_bytes`] so big weights are not duplicated.
//! * [`Rule::FuseElementwise`]: an `activation` or same-shape `binary` whose input comes from
//!   another (or from an `elementwise_chain`) becomes one `elementwise_chain` node, one pass
//!   over memory: ResNet's `relu(add(a, b))`, swish's `mul(sigmoid(x), x)`. Tried last, so a
//!   convolution or matmul producer still takes an activation into its epilogue. Never in
//!   training graphs (the chain has no gradient rule).
//!
//! Invariants: a value is only fused away when its single consumer is the node being merged
//! and it is not a graph output, so an intermediate a caller (or a gradient node of a training
//! graph) reads is never lost; a fused node takes the name of the last value it replaces, so
//! graph outputs keep their names and `output_by_tensor_name` still works.
//!
//! Not merged: broadcasting binaries (their operands differ in shape; per-channel constants
//! fold into weights instead), and chains past the kernel's 4 inputs or 8 steps.

use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, TensorFact, ValueKind};
use crate::ops::Op;
use crate::ops::activation::ActivationKind;
use crate::ops::binary::BinaryKind;
use crate::ops::elementwise_chain::{ElementwiseChain, MAX_INPUTS, MAX_STEPS, Step};
use crate::ops::reshape::Reshape;
use crate::tensor::{DType, Tensor};
use std::collections::HashSet;
use std::sync::Arc;

/// One rewrite rule of [`fuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Inference batch norm into the preceding convolution or dense matmul.
    FoldBatchNorm,
    /// Add / sub / mul / div by a per-channel constant into the preceding weights and bias.
    FoldAffine,
    /// `bias_add` into the preceding convolution or matmul.
    FuseBias,
    /// `activation` into the preceding convolution or matmul's `act` attribute.
    FuseActivation,
    /// Inference dropout and same-shape reshape / flatten removed.
    DropIdentity,
    /// Reshape of reshape (or of flatten) merged into one reshape.
    MergeReshape,
    /// Nodes whose inputs are all constants evaluated once.
    FoldConstant,
    /// Runs of activations and same-shape binaries into one `elementwise_chain`.
    FuseElementwise,
}

impl Rule {
    /// Every rule, in the order each fixpoint round tries them.
    pub const ALL: [Rule; 8] = [
        Rule::DropIdentity,
        Rule::MergeReshape,
        Rule::FoldConstant,
        Rule::FoldBatchNorm,
        Rule::FoldAffine,
        Rule::FuseBias,
        Rule::FuseActivation,
        Rule::FuseElementwise,
    ];

    /// The rule's snake_case name (for reports).
    pub fn name(self) -> &'static str {
        match self {
            Rule::FoldBatchNorm => "fold_batch_norm",
            Rule::FoldAffine => "fold_affine",
            Rule::FuseBias => "fuse_bias",
            Rule::FuseActivation => "fuse_activation",
            Rule::DropIdentity => "drop_identity",
            Rule::MergeReshape => "merge_reshape",
            Rule::FoldConstant => "fold_constant",
            Rule::FuseElementwise => "fuse_elementwise",
        }
    }
}

/// Default cap on the bytes one constant-folded node may produce (16 MiB).
pub const MAX_FOLDED_BYTES: usize = 16 << 20;

/// What [`fuse`] may do.
#[derive(Debug, Clone, PartialEq)]
pub struct FuseOptions {
    /// The graph trains: no batch-norm or affine folding (they rewrite weights a training
    /// graph updates), no folding of trainable constants.
    pub training: bool,
    /// The rules that are on (all by default).
    pub rules: Vec<Rule>,
    /// Largest output, in bytes, a constant-folded node may produce.
    pub max_folded_bytes: usize,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions::inference()
    }
}

impl FuseOptions {
    /// Every rule, for an inference graph.
    pub fn inference() -> FuseOptions {
        FuseOptions {
            training: false,
            rules: Rule::ALL.to_vec(),
            max_folded_bytes: MAX_FOLDED_BYTES,
        }
    }

    /// Every rule that is safe in a training graph.
    pub fn training() -> FuseOptions {
        FuseOptions {
            training: true,
            ..FuseOptions::inference()
        }
    }

    /// Only `rules` on.
    pub fn with_rules(mut self, rules: &[Rule]) -> FuseOptions {
        self.rules = rules.to_vec();
        self
    }

    fn on(&self, rule: Rule) -> bool {
        self.rules.contains(&rule)
    }
}

/// One rewrite [`fuse`] applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// The rule.
    pub rule: Rule,
    /// The original nodes it merged or removed, in execution order.
    pub merged: Vec<String>,
    /// The node that now does their work (empty when they were simply removed or became
    /// constants).
    pub node: String,
}

impl std::fmt::Display for Rewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let into = if self.node.is_empty() {
            "(removed)"
        } else {
            &self.node
        };
        write!(
            f,
            "{}: {} -> {into}",
            self.rule.name(),
            self.merged.join(" + ")
        )
    }
}

/// Every rewrite [`fuse`] applied, in order, for `Plan::describe`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FuseReport {
    /// The rewrites.
    pub rewrites: Vec<Rewrite>,
    /// Nodes before fusing.
    pub nodes_before: usize,
    /// Nodes after fusing.
    pub nodes_after: usize,
}

impl FuseReport {
    /// How many rewrites `rule` made.
    pub fn count(&self, rule: Rule) -> usize {
        self.rewrites.iter().filter(|r| r.rule == rule).count()
    }

    /// One line per rewrite after a summary line.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "fusion: {} rewrites, {} -> {} nodes\n",
            self.rewrites.len(),
            self.nodes_before,
            self.nodes_after
        );
        for r in &self.rewrites {
            s.push_str(&format!("  {r}\n"));
        }
        s
    }
}

/// Rewrites `graph` with the rules `opts` turns on until none applies. Graph inputs, outputs
/// and their names are preserved; the result is checked by re-running shape inference.
pub fn fuse(graph: &Graph, opts: &FuseOptions) -> Result<(Graph, FuseReport)> {
    let mut work = Work::from_graph(graph)?;
    let mut report = FuseReport {
        nodes_before: graph.nodes().len(),
        ..FuseReport::default()
    };
    // Every rewrite removes a node, so there can be no more rewrites than nodes; the bound
    // turns a rule that fails to make progress into an error instead of a hang.
    let limit = graph.nodes().len() + 1;
    loop {
        let mut changed = false;
        for &rule in Rule::ALL.iter().filter(|&&r| opts.on(r)) {
            while let Some(rw) = work.apply(rule, opts)? {
                report.rewrites.push(rw);
                changed = true;
                if report.rewrites.len() > limit {
                    return Err(Error::invalid_param(
                        "fuse",
                        format!("rule {} did not reach a fixpoint", rule.name()),
                    ));
                }
            }
        }
        if !changed {
            break;
        }
    }
    let out = work.into_graph(graph)?;
    report.nodes_after = out.nodes().len();
    Ok((out, report))
}

// ---- the working copy ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum WKind {
    Input,
    Constant { data: Arc<Tensor>, trainable: bool },
    Computed,
}

#[derive(Debug, Clone)]
struct WValue {
    name: String,
    fact: TensorFact,
    kind: WKind,
}

#[derive(Debug, Clone)]
struct WNode {
    name: String,
    op: Op,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

/// A mutable copy of the graph: removed nodes are `None`, so indices stay stable and the
/// remaining nodes stay in a valid execution order (a merged node is put in the place of the
/// LAST node it replaces, after all of their inputs).
struct Work {
    values: Vec<WValue>,
    nodes: Vec<Option<WNode>>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    /// Every name ever used, so new constants never collide with a live or removed name.
    names: HashSet<String>,
    /// Nodes whose constant folding failed (not retried).
    no_fold: HashSet<usize>,
}

/// Which weight axis holds the output channel.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ChannelAxis {
    First,
    Last,
}

/// Use counts, producers and graph-output flags of the current working graph.
struct Uses {
    count: Vec<usize>,
    producer: Vec<Option<usize>>,
    output: Vec<bool>,
}

impl Uses {
    /// Read by exactly one node (once) and not a graph output: safe to fuse away.
    fn private(&self, v: usize) -> bool {
        self.count[v] == 1 && !self.output[v]
    }
}

impl Work {
    fn from_graph(g: &Graph) -> Result<Work> {
        let values = g
            .values()
            .iter()
            .map(|v| WValue {
                name: v.name.clone(),
                fact: v.fact.clone(),
                kind: match &v.kind {
                    ValueKind::Input => WKind::Input,
                    ValueKind::Constant { data, trainable } => WKind::Constant {
                        data: data.clone(),
                        trainable: *trainable,
                    },
                    ValueKind::Output { .. } => WKind::Computed,
                },
            })
            .collect::<Vec<_>>();
        let nodes = g
            .nodes()
            .iter()
            .map(|n| {
                Some(WNode {
                    name: n.name.clone(),
                    op: n.op.clone(),
                    inputs: n.inputs.iter().map(|v| v.0).collect(),
                    outputs: n.outputs.iter().map(|v| v.0).collect(),
                })
            })
            .collect();
        let names = values
            .iter()
            .map(|v| v.name.clone())
            .chain(g.nodes().iter().map(|n| n.name.clone()))
            .collect();
        Ok(Work {
            values,
            nodes,
            inputs: g.inputs().iter().map(|v| v.0).collect(),
            outputs: g.outputs().iter().map(|v| v.0).collect(),
            names,
            no_fold: HashSet::new(),
        })
    }

    fn uses(&self) -> Uses {
        let n = self.values.len();
        let mut u = Uses {
            count: vec![0; n],
            producer: vec![None; n],
            output: vec![false; n],
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            for &v in &node.inputs {
                u.count[v] += 1;
            }
            for &v in &node.outputs {
                u.producer[v] = Some(i);
            }
        }
        for &v in &self.outputs {
            u.output[v] = true;
        }
        u
    }

    fn node(&self, i: usize) -> Option<&WNode> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// The data of `v` when it is an unquantized f32 constant.
    fn constant_f32(&self, v: usize) -> Option<(&Arc<Tensor>, bool)> {
        let val = self.values.get(v)?;
        match &val.kind {
            WKind::Constant { data, trainable }
                if data.dtype() == DType::F32 && val.fact.quant.is_none() =>
            {
                Some((data, *trainable))
            }
            _ => None,
        }
    }

    /// A name based on `base` that no value or node has ever had.
    fn fresh_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Puts `data` where constant `old` was when nothing else reads `old` (keeping its name, so
    /// a folded model's weights keep their state-dict names), else in a new constant.
    fn put_constant(&mut self, old: usize, data: Tensor, uses: &Uses) -> Result<usize> {
        let trainable = match &self.values[old].kind {
            WKind::Constant { trainable, .. } => *trainable,
            _ => false,
        };
        if uses.private(old)
            && matches!(self.values[old].kind, WKind::Constant { .. })
            && self.values[old].fact.shape == data.dims()
        {
            self.values[old].kind = WKind::Constant {
                data: Arc::new(data),
                trainable,
            };
            return Ok(old);
        }
        let base = format!("{}/fused", self.values[old].name);
        Ok(self.new_constant(&base, data, trainable))
    }

    fn new_constant(&mut self, base: &str, data: Tensor, trainable: bool) -> usize {
        let name = self.fresh_name(base);
        self.values.push(WValue {
            name,
            fact: TensorFact::new(data.dtype(), data.dims()),
            kind: WKind::Constant {
                data: Arc::new(data),
                trainable,
            },
        });
        self.values.len() - 1
    }

    /// The bias of a new or updated producer: `old` (if any) replaced by `data`.
    fn put_bias(
        &mut self,
        old: Option<usize>,
        weight: usize,
        data: Tensor,
        uses: &Uses,
    ) -> Result<usize> {
        match old {
            Some(b) => self.put_constant(b, data, uses),
            None => {
                let wname = self.values[weight].name.clone();
                let trainable = matches!(
                    self.values[weight].kind,
                    WKind::Constant {
                        trainable: true,
                        ..
                    }
                );
                // `features.0.0.weight` gets `features.0.0.bias`, like a PyTorch layer.
                let base = match wname.strip_suffix("weight") {
                    Some(stem) => format!("{stem}bias"),
                    None => format!("{wname}/bias"),
                };
                Ok(self.new_constant(&base, data, trainable))
            }
        }
    }

    /// Replaces nodes `first` and `last` (`first` feeds `last`) by `merged` in `last`'s place.
    fn merge(&mut self, first: usize, last: usize, merged: WNode, rule: Rule) -> Rewrite {
        let a = self.nodes[first].take().map(|n| n.name).unwrap_or_default();
        let b = self.nodes[last].take().map(|n| n.name).unwrap_or_default();
        let node = merged.name.clone();
        self.nodes[last] = Some(merged);
        Rewrite {
            rule,
            merged: vec![a, b],
            node,
        }
    }

    fn apply(&mut self, rule: Rule, opts: &FuseOptions) -> Result<Option<Rewrite>> {
        match rule {
            Rule::FoldBatchNorm if !opts.training => self.fold_batch_norm(),
            Rule::FoldAffine if !opts.training => self.fold_affine(),
            Rule::FoldBatchNorm | Rule::FoldAffine => Ok(None),
            Rule::FuseBias => self.fuse_bias(),
            Rule::FuseActivation => Ok(self.fuse_activation()),
            Rule::DropIdentity => Ok(self.drop_identity()),
            Rule::MergeReshape => Ok(self.merge_reshape()),
            Rule::FoldConstant => self.fold_constant(opts),
            Rule::FuseElementwise if !opts.training => Ok(self.fuse_elementwise()),
            Rule::FuseElementwise => Ok(None),
        }
    }

    /// `node` as chain steps over its own inputs, when it is an activation, a same-shape
    /// binary, or already a chain (all of its inputs with its output's shape).
    fn chain_steps(&self, node: &WNode) -> Option<Vec<Step>> {
        let out = &self.values[*node.outputs.first()?].fact;
        if out.dtype != DType::F32
            || node
                .inputs
                .iter()
                .any(|&v| self.values[v].fact.shape != out.shape)
        {
            return None;
        }
        match &node.op {
            Op::Activation(a) => Some(vec![Step::Act(a.kind)]),
            Op::Binary(b) => Some(vec![Step::Bin {
                kind: b.kind,
                operand: 1,
                reversed: false,
            }]),
            Op::ElementwiseChain(c) => Some(c.steps.clone()),
            _ => None,
        }
    }

    fn fuse_elementwise(&mut self) -> Option<Rewrite> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(node) = self.node(j) else { continue };
            let Some(n_steps) = self.chain_steps(node) else {
                continue;
            };
            for pos in 0..node.inputs.len() {
                let Some((p, prod)) = self.private_producer(node.inputs[pos], &uses) else {
                    continue;
                };
                let Some(p_steps) = self.chain_steps(prod) else {
                    continue;
                };
                // The producer's value must be the consumer's accumulator (input 0), or the
                // other operand of a single binary, which then runs reversed.
                let n_steps = match (pos, n_steps.as_slice()) {
                    (0, _) => n_steps.clone(),
                    (
                        1,
                        [
                            Step::Bin {
                                kind,
                                operand: 1,
                                reversed,
                            },
                        ],
                    ) => vec![Step::Bin {
                        kind: *kind,
                        operand: 0,
                        reversed: !reversed,
                    }],
                    _ => continue,
                };
                // Inputs: the producer's, then the consumer's others, each value once.
                let mut inputs: Vec<usize> = Vec::new();
                let slot = |v: usize, inputs: &mut Vec<usize>| {
                    inputs.iter().position(|&u| u == v).unwrap_or_else(|| {
                        inputs.push(v);
                        inputs.len() - 1
                    })
                };
                let p_map: Vec<usize> = prod.inputs.iter().map(|&v| slot(v, &mut inputs)).collect();
                let n_map: Vec<Option<usize>> = node
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (i != pos).then(|| slot(v, &mut inputs)))
                    .collect();
                if inputs.first() != prod.inputs.first() {
                    continue;
                }
                let remap = |s: &Step, map: &dyn Fn(usize) -> Option<usize>| -> Option<Step> {
                    Some(match *s {
                        Step::Act(a) => Step::Act(a),
                        Step::Bin {
                            kind,
                            operand,
                            reversed,
                        } => Step::Bin {
                            kind,
                            operand: map(operand)?,
                            reversed,
                        },
                    })
                };
                let mut steps = Vec::with_capacity(p_steps.len() + n_steps.len());
                for s in &p_steps {
                    steps.push(remap(s, &|k| p_map.get(k).copied())?);
                }
                // In the reversed single binary the operand index already names the
                // consumer's input 0.
                for s in &n_steps {
                    steps.push(remap(s, &|k| n_map.get(k).copied().flatten())?);
                }
                if inputs.len() > MAX_INPUTS || steps.len() > MAX_STEPS {
                    continue;
                }
                let chain = ElementwiseChain { steps };
                if chain.check(inputs.len()).is_err() {
                    continue;
                }
                let merged = WNode {
                    name: node.name.clone(),
                    op: chain.into(),
                    inputs,
                    outputs: node.outputs.clone(),
                };
                return Some(self.merge(p, j, merged, Rule::FuseElementwise));
            }
        }
        None
    }

    /// The node producing `v` when `v` is private to its one consumer.
    fn private_producer(&self, v: usize, uses: &Uses) -> Option<(usize, &WNode)> {
        if !uses.private(v) {
            return None;
        }
        let p = uses.producer[v]?;
        let node = self.node(p)?;
        (node.outputs.len() == 1).then_some((p, node))
    }

    /// For a producer whose output may be scaled per channel: the weight's output-channel
    /// axis (`None` when the op has a fused activation, a non-constant or batched weight).
    fn scalable(&self, node: &WNode) -> Option<ChannelAxis> {
        let w = *node.inputs.get(1)?;
        self.constant_f32(w)?;
        if let Some(&b) = node.inputs.get(2) {
            self.constant_f32(b)?;
        }
        match &node.op {
            Op::Conv2d(c) if c.act.is_none() => Some(ChannelAxis::First),
            Op::DepthwiseConv2d(c) if c.act.is_none() => Some(ChannelAxis::Last),
            Op::MatMul(m) if m.act.is_none() && self.values[w].fact.rank() == 2 => {
                Some(if m.transpose_b {
                    ChannelAxis::First
                } else {
                    ChannelAxis::Last
                })
            }
            _ => None,
        }
    }

    /// Rewrites producer `p` (output channels `c`) to compute `alpha * y + beta` per channel,
    /// as node `name` writing `out`; returns the merged node.
    fn affine_producer(
        &mut self,
        p: usize,
        axis: ChannelAxis,
        alpha: &[f64],
        beta: &[f64],
        target: (String, usize),
        uses: &Uses,
    ) -> Result<Option<WNode>> {
        let (name, out) = target;
        let Some(prod) = self.node(p).cloned() else {
            return Ok(None);
        };
        let c = alpha.len();
        let w = prod.inputs[1];
        let Some((wdata, _)) = self.constant_f32(w) else {
            return Ok(None);
        };
        // A pure shift leaves the weight alone (and shared weights unduplicated).
        let new_w = if alpha.iter().all(|&a| a == 1.0) {
            None
        } else {
            match scale_channels(wdata, axis, alpha)? {
                Some(t) => Some(t),
                None => return Ok(None),
            }
        };
        let old_b = prod.inputs.get(2).copied();
        let b: Vec<f64> = match old_b {
            Some(b) => match self.constant_f32(b) {
                Some((t, _)) if t.numel() == c => {
                    t.as_slice::<f32>()?.iter().map(|&v| f64::from(v)).collect()
                }
                _ => return Ok(None),
            },
            None => vec![0.0; c],
        };
        let new_b: Vec<f32> = b
            .iter()
            .zip(alpha)
            .zip(beta)
            .map(|((&b, &a), &s)| (b * a + s) as f32)
            .collect();
        let wv = match new_w {
            Some(t) => self.put_constant(w, t, uses)?,
            None => w,
        };
        let bv = self.put_bias(old_b, w, Tensor::from_vec(&[c], new_b)?, uses)?;
        Ok(Some(WNode {
            name,
            op: prod.op.clone(),
            inputs: vec![prod.inputs[0], wv, bv],
            outputs: vec![out],
        }))
    }

    fn fold_batch_norm(&mut self) -> Result<Option<Rewrite>> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(bn) = self.node(j) else { continue };
            let Op::BatchNorm(op) = &bn.op else { continue };
            let Some((p, prod)) = self.private_producer(bn.inputs[0], &uses) else {
                continue;
            };
            let Some(axis) = self.scalable(prod) else {
                continue;
            };
            let stats: Option<Vec<&[f32]>> = bn.inputs[1..]
                .iter()
                .map(|&v| {
                    self.constant_f32(v)
                        .and_then(|(t, _)| t.as_slice::<f32>().ok())
                })
                .collect();
            let Some(stats) = stats else { continue };
            let [mean, var, gamma, beta] = stats.as_slice() else {
                continue;
            };
            // The reference's formula, in f64: gamma * (x - mean) / sqrt(var + eps) + beta.
            let scale: Vec<f64> = var
                .iter()
                .zip(gamma.iter())
                .map(|(&v, &g)| f64::from(g) / (f64::from(v) + op.eps).sqrt())
                .collect();
            let shift: Vec<f64> = mean
                .iter()
                .zip(beta.iter())
                .zip(&scale)
                .map(|((&m, &b), &s)| f64::from(b) - f64::from(m) * s)
                .collect();
            if scale.iter().chain(&shift).any(|v| !v.is_finite()) {
                continue;
            }
            let (name, out) = (bn.name.clone(), bn.outputs[0]);
            let Some(merged) = self.affine_producer(p, axis, &scale, &shift, (name, out), &uses)?
            else {
                continue;
            };
            return Ok(Some(self.merge(p, j, merged, Rule::FoldBatchNorm)));
        }
        Ok(None)
    }

    fn fold_affine(&mut self) -> Result<Option<Rewrite>> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(node) = self.node(j) else { continue };
            let Op::Binary(bin) = &node.op else { continue };
            let (x, k, x_first) = match (
                self.constant_f32(node.inputs[0]),
                self.constant_f32(node.inputs[1]),
            ) {
                (None, Some(_)) => (node.inputs[0], node.inputs[1], true),
                (Some(_), None) => (node.inputs[1], node.inputs[0], false),
                _ => continue,
            };
            let out = node.outputs[0];
            // The constant must not broadcast the producer's output to a bigger shape.
            if self.values[out].fact.shape != self.values[x].fact.shape {
                continue;
            }
            let Some((p, prod)) = self.private_producer(x, &uses) else {
                continue;
            };
            let Some(axis) = self.scalable(prod) else {
                continue;
            };
            let Some(&c) = self.values[x].fact.shape.last() else {
                continue;
            };
            let Some(kv) = self
                .constant_f32(k)
                .and_then(|(t, _)| per_channel(t, &self.values[x].fact.shape))
            else {
                continue;
            };
            let (alpha, beta): (Vec<f64>, Vec<f64>) = match (bin.kind, x_first) {
                (BinaryKind::Add, _) => (vec![1.0; c], kv),
                (BinaryKind::Sub, true) => (vec![1.0; c], kv.iter().map(|v| -v).collect()),
                (BinaryKind::Sub, false) => (vec![-1.0; c], kv),
                (BinaryKind::Mul, _) => (kv, vec![0.0; c]),
                (BinaryKind::Div, true) if kv.iter().all(|&v| v != 0.0) => {
                    (kv.iter().map(|v| 1.0 / v).collect(), vec![0.0; c])
                }
                _ => continue,
            };
            let name = node.name.clone();
            let Some(merged) = self.affine_producer(p, axis, &alpha, &beta, (name, out), &uses)?
            else {
                continue;
            };
            return Ok(Some(self.merge(p, j, merged, Rule::FoldAffine)));
        }
        Ok(None)
    }

    fn fuse_bias(&mut self) -> Result<Option<Rewrite>> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(node) = self.node(j) else { continue };
            let Op::BiasAdd(_) = &node.op else { continue };
            let (x, b) = (node.inputs[0], node.inputs[1]);
            let Some((p, prod)) = self.private_producer(x, &uses) else {
                continue;
            };
            let (node, prod) = (node.clone(), prod.clone());
            let takes_bias = match &prod.op {
                Op::Conv2d(c) => c.act.is_none(),
                Op::DepthwiseConv2d(c) => c.act.is_none(),
                Op::MatMul(m) => m.act.is_none(),
                Op::ConvTranspose2d(_) => true,
                _ => false,
            };
            if !takes_bias || prod.inputs.len() < 2 {
                continue;
            }
            let mut inputs = prod.inputs.clone();
            match prod.inputs.get(2).copied() {
                None => inputs.push(b),
                // Two constant biases add up to one.
                Some(old) => {
                    let (Some((t0, _)), Some((t1, _))) =
                        (self.constant_f32(old), self.constant_f32(b))
                    else {
                        continue;
                    };
                    if t0.dims() != t1.dims() {
                        continue;
                    }
                    let sum: Vec<f32> = t0
                        .as_slice::<f32>()?
                        .iter()
                        .zip(t1.as_slice::<f32>()?)
                        .map(|(&a, &c)| a + c)
                        .collect();
                    let dims = t0.dims().to_vec();
                    inputs[2] = self.put_constant(old, Tensor::from_vec(&dims, sum)?, &uses)?;
                }
            }
            let merged = WNode {
                name: node.name.clone(),
                op: prod.op.clone(),
                inputs,
                outputs: node.outputs.clone(),
            };
            return Ok(Some(self.merge(p, j, merged, Rule::FuseBias)));
        }
        Ok(None)
    }

    fn fuse_activation(&mut self) -> Option<Rewrite> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(node) = self.node(j) else { continue };
            let Op::Activation(a) = &node.op else {
                continue;
            };
            let Some((p, prod)) = self.private_producer(node.inputs[0], &uses) else {
                continue;
            };
            let Some(op) = with_act(&prod.op, a.kind) else {
                continue;
            };
            let merged = WNode {
                name: node.name.clone(),
                op,
                inputs: prod.inputs.clone(),
                outputs: node.outputs.clone(),
            };
            return Some(self.merge(p, j, merged, Rule::FuseActivation));
        }
        None
    }

    fn drop_identity(&mut self) -> Option<Rewrite> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(node) = self.node(j) else { continue };
            let (Some(&x), Some(&y)) = (node.inputs.first(), node.outputs.first()) else {
                continue;
            };
            let identity = match &node.op {
                Op::Dropout(d) => !d.training,
                Op::Reshape(_) | Op::Flatten(_) => {
                    self.values[x].fact.shape == self.values[y].fact.shape
                }
                _ => false,
            };
            if !identity || node.inputs.len() != 1 || node.outputs.len() != 1 {
                continue;
            }
            let name = node.name.clone();
            if !uses.output[y] {
                // Readers of y read x instead.
                for n in self.nodes.iter_mut().flatten() {
                    for v in n.inputs.iter_mut().filter(|v| **v == y) {
                        *v = x;
                    }
                }
                self.nodes[j] = None;
                return Some(Rewrite {
                    rule: Rule::DropIdentity,
                    merged: vec![name],
                    node: String::new(),
                });
            }
            // y is a graph output: x's producer takes over y (and its name) if x is private.
            let Some((p, _)) = self.private_producer(x, &uses) else {
                continue;
            };
            let Some(prod) = self.nodes[p].as_mut() else {
                continue;
            };
            let prod_name = std::mem::replace(&mut prod.name, self.values[y].name.clone());
            prod.outputs = vec![y];
            self.nodes[j] = None;
            return Some(Rewrite {
                rule: Rule::DropIdentity,
                merged: vec![prod_name, name],
                node: self.values[y].name.clone(),
            });
        }
        None
    }

    fn merge_reshape(&mut self) -> Option<Rewrite> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            let Some(node) = self.node(j) else { continue };
            let Op::Reshape(outer) = &node.op else {
                continue;
            };
            let Some((p, prod)) = self.private_producer(node.inputs[0], &uses) else {
                continue;
            };
            if !matches!(prod.op, Op::Reshape(_) | Op::Flatten(_)) {
                continue;
            }
            // The outer target (with its `-1`) applies to the inner input: same element count.
            let merged = WNode {
                name: node.name.clone(),
                op: Op::Reshape(Reshape {
                    shape: outer.shape.clone(),
                }),
                inputs: prod.inputs.clone(),
                outputs: node.outputs.clone(),
            };
            return Some(self.merge(p, j, merged, Rule::MergeReshape));
        }
        None
    }

    fn fold_constant(&mut self, opts: &FuseOptions) -> Result<Option<Rewrite>> {
        let uses = self.uses();
        for j in 0..self.nodes.len() {
            if self.no_fold.contains(&j) {
                continue;
            }
            let Some(node) = self.node(j) else { continue };
            if node.inputs.is_empty() || node.outputs.iter().any(|&o| uses.output[o]) {
                continue;
            }
            let consts: Option<Vec<(Arc<Tensor>, bool)>> = node
                .inputs
                .iter()
                .map(|&v| match &self.values[v].kind {
                    WKind::Constant { data, trainable } if self.values[v].fact.quant.is_none() => {
                        Some((data.clone(), *trainable))
                    }
                    _ => None,
                })
                .collect();
            let Some(consts) = consts else { continue };
            // A training graph updates its trainable constants; folding would freeze them.
            if opts.training && consts.iter().any(|(_, t)| *t) {
                continue;
            }
            let bytes: usize = node
                .outputs
                .iter()
                .map(|&o| {
                    let f = &self.values[o].fact;
                    f.numel().saturating_mul(f.dtype.size())
                })
                .fold(0, usize::saturating_add);
            if bytes > opts.max_folded_bytes {
                continue;
            }
            let refs: Vec<&Tensor> = consts.iter().map(|(t, _)| t.as_ref()).collect();
            let outs = match node.op.eval_ref(&refs) {
                Ok(o) if o.len() == node.outputs.len() => o,
                other => {
                    log::debug!(
                        "fuse: not folding constant node `{}`: {:?}",
                        node.name,
                        other.err()
                    );
                    self.no_fold.insert(j);
                    continue;
                }
            };
            let name = node.name.clone();
            let outputs = node.outputs.clone();
            for (o, t) in outputs.into_iter().zip(outs) {
                self.values[o].kind = WKind::Constant {
                    data: Arc::new(t),
                    trainable: false,
                };
            }
            self.nodes[j] = None;
            return Ok(Some(Rewrite {
                rule: Rule::FoldConstant,
                merged: vec![name],
                node: String::new(),
            }));
        }
        Ok(None)
    }

    /// Rebuilds a checked [`Graph`]: inputs, then the constants still read, then the nodes.
    fn into_graph(self, original: &Graph) -> Result<Graph> {
        let uses = self.uses();
        let mut b = GraphBuilder::new();
        let mut map = vec![None; self.values.len()];
        for &i in &self.inputs {
            let v = &self.values[i];
            let id = b.input(&v.name, v.fact.dtype, &v.fact.shape)?;
            b.set_quant(id, v.fact.quant.clone())?;
            map[i] = Some(id);
        }
        for (i, v) in self.values.iter().enumerate() {
            if let WKind::Constant { data, trainable } = &v.kind
                && map[i].is_none()
                && (uses.count[i] > 0 || uses.output[i])
            {
                let id = b.add_constant(&v.name, (**data).clone(), *trainable)?;
                b.set_quant(id, v.fact.quant.clone())?;
                map[i] = Some(id);
            }
        }
        for node in self.nodes.iter().flatten() {
            let ins = node
                .inputs
                .iter()
                .map(|&v| {
                    map[v].ok_or_else(|| {
                        rebuild_err(format!(
                            "node `{}` reads `{}`, which no earlier node or constant defines",
                            node.name, self.values[v].name
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let outs = b.node(&node.name, node.op.clone(), &ins)?;
            for (&old, &new) in node.outputs.iter().zip(&outs) {
                let want = &self.values[old];
                let got = b.fact(new)?;
                if b.value_name(new)? != want.name
                    || got.dtype != want.fact.dtype
                    || got.shape != want.fact.shape
                {
                    return Err(rebuild_err(format!(
                        "node `{}` output `{}` {} {:?} became `{}` {} {:?}",
                        node.name,
                        want.name,
                        want.fact.dtype,
                        want.fact.shape,
                        b.value_name(new)?,
                        got.dtype,
                        got.shape
                    )));
                }
                b.set_quant(new, want.fact.quant.clone())?;
                map[old] = Some(new);
            }
        }
        for &o in &self.outputs {
            let id = map[o].ok_or_else(|| {
                rebuild_err(format!(
                    "output `{}` lost its producer",
                    self.values[o].name
                ))
            })?;
            b.output(id)?;
        }
        for (k, v) in original.metadata() {
            b.metadata(k, v);
        }
        b.build()
    }
}

fn rebuild_err(reason: String) -> Error {
    Error::invalid_param("fuse", reason)
}

/// `op` with fused activation `kind`, when it has an `act` attribute that is still unset.
fn with_act(op: &Op, kind: ActivationKind) -> Option<Op> {
    match op {
        Op::Conv2d(c) if c.act.is_none() => {
            let mut c = c.clone();
            c.act = Some(kind);
            Some(c.into())
        }
        Op::DepthwiseConv2d(c) if c.act.is_none() => {
            let mut c = c.clone();
            c.act = Some(kind);
            Some(c.into())
        }
        Op::MatMul(m) if m.act.is_none() => {
            let mut m = m.clone();
            m.act = Some(kind);
            Some(m.into())
        }
        _ => None,
    }
}

/// `k` as one value per channel of an output of `out` dims: a scalar, or `[1, ..., 1, c]`
/// of rank at most `out`'s.
fn per_channel(k: &Tensor, out: &[usize]) -> Option<Vec<f64>> {
    let c = *out.last()?;
    let data = k.as_slice::<f32>().ok()?;
    let dims = k.dims();
    if dims.len() > out.len() {
        return None;
    }
    if data.len() == 1 {
        return Some(vec![f64::from(data[0]); c]);
    }
    let (&last, rest) = dims.split_last()?;
    (last == c && rest.iter().all(|&d| d == 1))
        .then(|| data.iter().map(|&v| f64::from(v)).collect())
}

/// `w` with every element of output channel `o` multiplied by `alpha[o]` (computed in f64);
/// `None` when the channel axis does not have `alpha.len()` entries.
fn scale_channels(w: &Tensor, axis: ChannelAxis, alpha: &[f64]) -> Result<Option<Tensor>> {
    let c = alpha.len();
    let data = w.as_slice::<f32>()?;
    let dims = w.dims();
    let (axis_len, inner) = match axis {
        ChannelAxis::First => (dims.first().copied(), data.len() / c.max(1)),
        ChannelAxis::Last => (dims.last().copied(), 1),
    };
    if axis_len != Some(c) || c == 0 {
        return Ok(None);
    }
    let out: Vec<f32> = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = match axis {
                ChannelAxis::First => i / inner,
                ChannelAxis::Last => i % c,
            };
            (f64::from(v) * alpha[ch]) as f32
        })
        .collect();
    Ok(Some(Tensor::from_vec(dims, out)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ValueId;
    use crate::models::{Arch, ModelConfig};
    use crate::ops::activation::Activation;
    use crate::ops::batch_norm::BatchNorm;
    use crate::ops::bias_add::BiasAdd;
    use crate::ops::binary::Binary;
    use crate::ops::conv_transpose2d::ConvTranspose2d;
    use crate::ops::conv2d::{Conv2d, Padding};
    use crate::ops::depthwise_conv2d::DepthwiseConv2d;
    use crate::ops::dropout::Dropout;
    use crate::ops::flatten::Flatten;
    use crate::ops::global_avg_pool::GlobalAvgPool;
    use crate::ops::matmul::MatMul;
    use spore_kernels_cpu::rng::Rng;

    /// A fresh clock seed (or `SPORE_TEST_SEED`), printed so a failure can be replayed.
    fn rng() -> Rng {
        let seed = std::env::var("SPORE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        println!("SPORE_TEST_SEED={seed}");
        Rng::new(seed)
    }

    fn rand_t(rng: &mut Rng, dims: &[usize], lo: f64, hi: f64) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi) as f32).collect();
        Tensor::from_vec(dims, v).unwrap()
    }

    /// Random data for every graph input (i32 inputs are labels in `0..classes`).
    fn feeds(g: &Graph, rng: &mut Rng, classes: usize) -> Vec<Tensor> {
        g.inputs()
            .iter()
            .map(|&i| {
                let f = &g.value(i).unwrap().fact;
                match f.dtype {
                    DType::I32 => {
                        let v: Vec<i32> = (0..f.numel())
                            .map(|_| rng.range(0, classes - 1) as i32)
                            .collect();
                        Tensor::from_vec(&f.shape, v).unwrap()
                    }
                    // Variances (batch-norm state inputs of a training graph) are positive.
                    _ if g.value(i).unwrap().name.contains("var") => {
                        rand_t(rng, &f.shape, 0.5, 1.5)
                    }
                    _ => rand_t(rng, &f.shape, -1.0, 1.0),
                }
            })
            .collect()
    }

    /// Runs `g` node by node through `eval_ref`; returns the outputs by name.
    fn eval(g: &Graph, inputs: &[Tensor]) -> Vec<(String, Tensor)> {
        let mut computed: Vec<Option<Tensor>> = vec![None; g.values().len()];
        for (&i, t) in g.inputs().iter().zip(inputs) {
            computed[i.0] = Some(t.clone());
        }
        let get = |computed: &[Option<Tensor>], id: usize| -> Tensor {
            match &g.values()[id].kind {
                ValueKind::Constant { data, .. } => (**data).clone(),
                _ => computed[id].clone().expect("value computed before use"),
            }
        };
        for n in g.nodes() {
            let outs = {
                let refs: Vec<&Tensor> = n
                    .inputs
                    .iter()
                    .map(|v| match &g.values()[v.0].kind {
                        ValueKind::Constant { data, .. } => data.as_ref(),
                        _ => computed[v.0].as_ref().expect("value computed before use"),
                    })
                    .collect();
                n.op.eval_ref(&refs)
                    .unwrap_or_else(|e| panic!("node {}: {e}", n.name))
            };
            for (o, t) in n.outputs.iter().zip(outs) {
                computed[o.0] = Some(t);
            }
        }
        g.outputs()
            .iter()
            .map(|o| (g.values()[o.0].name.clone(), get(&computed, o.0)))
            .collect()
    }

    fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
        assert_eq!(a.len(), b.len());
        let num: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
        if den == 0.0 {
            num.sqrt()
        } else {
            (num / den).sqrt()
        }
    }

    /// Fuses `g`, checks outputs keep names and values (rel L2 <= `tol`) on random inputs.
    fn check_same(g: &Graph, opts: &FuseOptions, tol: f64, rng: &mut Rng) -> (Graph, FuseReport) {
        let t0 = std::time::Instant::now();
        let (f, report) = fuse(g, opts).unwrap();
        println!("fuse took {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        print!("{}", report.describe());
        let x = feeds(g, rng, 4);
        let (a, b) = (eval(g, &x), eval(&f, &x));
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb, "output names differ");
            assert_eq!(ta.dims(), tb.dims(), "output {na}");
            let e = rel_l2(tb, ta);
            println!("output {na}: rel L2 {e:.2e}");
            assert!(e <= tol, "output {na}: rel L2 {e} > {tol}");
        }
        (f, report)
    }

    fn count(g: &Graph, name: &str) -> usize {
        g.nodes().iter().filter(|n| n.op.name() == name).count()
    }

    /// Random batch-norm statistics and affine parameters, so no batch norm is an identity.
    fn randomize_bn(mut g: Graph, rng: &mut Rng) -> Graph {
        let ranges = [(-0.3, 0.3), (0.5, 1.5), (0.7, 1.3), (-0.3, 0.3)];
        let stats: Vec<(String, Vec<usize>, (f64, f64))> = g
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm(_)))
            .flat_map(|n| n.inputs[1..].iter().zip(ranges).collect::<Vec<_>>())
            .map(|(&v, r)| {
                let v = g.value(v).unwrap();
                (v.name.clone(), v.fact.shape.clone(), r)
            })
            .collect();
        for (name, dims, (lo, hi)) in stats {
            g.replace_constant(&name, rand_t(rng, &dims, lo, hi))
                .unwrap();
        }
        g
    }

    fn check_model(arch: Arch, cfg: ModelConfig) -> (Graph, Graph, FuseReport) {
        let mut rng = rng();
        let g = randomize_bn(arch.build(&cfg).unwrap(), &mut rng);
        let (f, report) = check_same(&g, &FuseOptions::default(), 1e-5, &mut rng);
        println!(
            "{}: {} -> {} nodes",
            arch.name(),
            report.nodes_before,
            report.nodes_after
        );
        assert_eq!(
            count(&f, "batch_norm"),
            0,
            "{}: batch norm left",
            arch.name()
        );
        assert_eq!(count(&f, "dropout"), 0, "{}: dropout left", arch.name());
        assert!(f.value_by_name("logits").is_some());
        // Every activation a convolution or matmul feeds alone is fused into it.
        for n in f.nodes().iter().filter(|n| n.op.name() == "activation") {
            let x = n.inputs[0];
            let readers = f.nodes().iter().filter(|m| m.inputs.contains(&x)).count();
            if let ValueKind::Output { node, .. } = f.value(x).unwrap().kind {
                let p = &f.nodes()[node.0];
                let fusable = matches!(p.op.name(), "conv2d" | "depthwise_conv2d" | "matmul");
                assert!(
                    !fusable || readers > 1,
                    "{}: activation {} after {} not fused",
                    arch.name(),
                    n.name,
                    p.name
                );
            }
        }
        // A fixpoint: fusing again changes nothing.
        let (again, r2) = fuse(&f, &FuseOptions::default()).unwrap();
        assert!(r2.rewrites.is_empty(), "{}", r2.describe());
        assert_eq!(again.nodes().len(), f.nodes().len());
        (g, f, report)
    }

    #[test]
    fn zoo_lenet5() {
        check_model(Arch::LeNet5, ModelConfig::new(28, 1, 10).batch(2));
    }

    #[test]
    fn zoo_alexnet() {
        check_model(Arch::AlexNet, ModelConfig::new(64, 3, 10));
    }

    #[test]
    fn zoo_resnet18_folds_every_batch_norm() {
        let (g, f, report) = check_model(Arch::ResNet18, ModelConfig::new(32, 3, 10).batch(2));
        let bns = count(&g, "batch_norm");
        assert_eq!(report.count(Rule::FoldBatchNorm), bns);
        // Stem + the first conv of each of the 8 blocks carry a relu; the second conv and the
        // downsample convs feed the residual add.
        let with_act = f
            .nodes()
            .iter()
            .filter(|n| matches!(&n.op, Op::Conv2d(c) if c.act == Some(ActivationKind::Relu)))
            .count();
        assert_eq!(with_act, 9);
        assert_eq!(count(&f, "conv2d"), count(&g, "conv2d"));
        // Each block's residual add and the relu after it run as one elementwise chain.
        assert_eq!(count(&f, "activation"), 0);
        assert_eq!(count(&f, "binary"), 0);
        assert_eq!(count(&f, "elementwise_chain"), 8);
        assert_eq!(report.count(Rule::FuseElementwise), 8);
    }

    /// A graph of elementwise nodes on `[2, 3, 5]` inputs `a`, `b`, `c`.
    fn elementwise_graph(build: impl Fn(&mut GraphBuilder, [ValueId; 3]) -> ValueId) -> Graph {
        let mut b = GraphBuilder::new();
        let ins = ["a", "b", "c"].map(|n| b.input(n, DType::F32, &[2, 3, 5]).unwrap());
        let y = build(&mut b, ins);
        b.output(y).unwrap();
        b.build().unwrap()
    }

    fn act(b: &mut GraphBuilder, name: &str, kind: ActivationKind, x: ValueId) -> ValueId {
        b.node1(name, crate::ops::activation::Activation { kind }, &[x])
            .unwrap()
    }

    fn bin(b: &mut GraphBuilder, name: &str, kind: BinaryKind, x: ValueId, y: ValueId) -> ValueId {
        b.node1(name, crate::ops::binary::Binary { kind }, &[x, y])
            .unwrap()
    }

    #[test]
    fn elementwise_runs_become_one_chain() {
        let mut rng = rng();
        let opts = FuseOptions::default();
        // relu(a + b): the residual join.
        let g = elementwise_graph(|b, [x, y, _]| {
            let s = bin(b, "add", BinaryKind::Add, x, y);
            act(b, "relu", ActivationKind::Relu, s)
        });
        let (f, _) = check_same(&g, &opts, 1e-6, &mut rng);
        assert_eq!(f.nodes().len(), 1);
        assert_eq!(f.nodes()[0].op.name(), "elementwise_chain");
        // x * sigmoid(x): swish, one input read twice.
        let g = elementwise_graph(|b, [x, _, _]| {
            let s = act(b, "sig", ActivationKind::Sigmoid, x);
            bin(b, "swish", BinaryKind::Mul, x, s)
        });
        let (f, _) = check_same(&g, &opts, 1e-6, &mut rng);
        assert_eq!(f.nodes().len(), 1);
        assert_eq!(f.nodes()[0].inputs.len(), 1);
        // c - tanh(a - b), then leaky relu: the producer on the right of a subtraction.
        let g = elementwise_graph(|b, [x, y, z]| {
            let d = bin(b, "d", BinaryKind::Sub, x, y);
            let t = act(b, "t", ActivationKind::Tanh, d);
            let e = bin(b, "e", BinaryKind::Sub, z, t);
            act(b, "l", ActivationKind::LeakyRelu(0.2), e)
        });
        let (f, report) = check_same(&g, &opts, 1e-6, &mut rng);
        assert_eq!(f.nodes().len(), 1, "{}", report.describe());
        assert_eq!(f.nodes()[0].inputs.len(), 3);
        // A value read twice stays: both readers need it.
        let g = elementwise_graph(|b, [x, y, _]| {
            let s = bin(b, "s", BinaryKind::Add, x, y);
            let r = act(b, "r", ActivationKind::Relu, s);
            let t = act(b, "t", ActivationKind::Tanh, s);
            bin(b, "m", BinaryKind::Mul, r, t)
        });
        let (f, _) = check_same(&g, &opts, 1e-6, &mut rng);
        assert!(f.value_by_name("s").is_some(), "the shared sum is kept");
        assert!(f.nodes().len() < 4);
        // Training graphs keep the nodes (the chain has no gradient).
        let g = elementwise_graph(|b, [x, y, _]| {
            let s = bin(b, "add", BinaryKind::Add, x, y);
            act(b, "relu", ActivationKind::Relu, s)
        });
        let (f, _) = fuse(&g, &FuseOptions::training()).unwrap();
        assert_eq!(f.nodes().len(), 2);
    }

    #[test]
    fn zoo_resnet50() {
        check_model(Arch::ResNet50, ModelConfig::new(32, 3, 10));
    }

    #[test]
    fn zoo_mobilenet_v1() {
        check_model(Arch::MobileNetV1, ModelConfig::new(32, 3, 10).width(0.5));
    }

    #[test]
    fn zoo_mobilenet_v2() {
        let (_, f, _) = check_model(Arch::MobileNetV2, ModelConfig::new(32, 3, 10).width(0.5));
        assert!(f.nodes().iter().any(|n| matches!(
            &n.op,
            Op::DepthwiseConv2d(c) if c.act == Some(ActivationKind::Relu6)
        )));
    }

    #[test]
    fn zoo_mobilenet_v3_small() {
        check_model(Arch::MobileNetV3Small, ModelConfig::new(32, 3, 10));
    }

    #[test]
    fn zoo_mobilenet_v3_large() {
        check_model(
            Arch::MobileNetV3Large,
            ModelConfig::new(32, 3, 10).width(0.5),
        );
    }

    #[test]
    fn zoo_efficientnet_b0() {
        check_model(Arch::EfficientNetB0, ModelConfig::new(32, 3, 10).width(0.5));
    }

    /// `x [1, 6, 6, 3]` -> conv (no bias) -> bias_add -> mul by `[1, 1, 1, 4]` -> sub scalar
    /// -> relu, with the conv weight shared by a second conv -> batch norm.
    fn conv_chain(rng: &mut Rng) -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input("x", DType::F32, &[1, 6, 6, 3]).unwrap();
        let w = b
            .parameter("c.weight", rand_t(rng, &[4, 3, 3, 3], -1.0, 1.0))
            .unwrap();
        let conv = Conv2d {
            padding: Padding::Same,
            ..Conv2d::default()
        };
        let c = b.node1("c", conv.clone(), &[x, w]).unwrap();
        let bias = b.constant("bias", rand_t(rng, &[4], -1.0, 1.0)).unwrap();
        let c = b.node1("bias_add", BiasAdd, &[c, bias]).unwrap();
        let k = b
            .constant("k", rand_t(rng, &[1, 1, 1, 4], 0.5, 1.5))
            .unwrap();
        let c = b
            .node1(
                "mul",
                Binary {
                    kind: BinaryKind::Mul,
                },
                &[k, c],
            )
            .unwrap();
        let s = b.constant("s", rand_t(rng, &[], -0.5, 0.5)).unwrap();
        let c = b
            .node1(
                "sub",
                Binary {
                    kind: BinaryKind::Sub,
                },
                &[c, s],
            )
            .unwrap();
        let y = b
            .node1(
                "relu",
                Activation {
                    kind: ActivationKind::Relu,
                },
                &[c],
            )
            .unwrap();
        b.output(y).unwrap();
        // The shared weight: folding the second conv's batch norm must not touch the first.
        let c2 = b.node1("c2", conv, &[x, w]).unwrap();
        let stats: Vec<_> = [
            ("m", -0.3, 0.3),
            ("v", 0.5, 1.5),
            ("g", 0.7, 1.3),
            ("be", -0.3, 0.3),
        ]
        .iter()
        .map(|&(n, lo, hi)| b.constant(n, rand_t(rng, &[4], lo, hi)).unwrap())
        .collect();
        let mut bn_in = vec![c2];
        bn_in.extend(stats);
        let y2 = b.node1("bn", BatchNorm { eps: 1e-3 }, &bn_in).unwrap();
        b.output(y2).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn conv_bias_affine_activation_and_shared_weight() {
        let mut rng = rng();
        let g = conv_chain(&mut rng);
        let (f, report) = check_same(&g, &FuseOptions::default(), 1e-5, &mut rng);
        for rule in [Rule::FuseBias, Rule::FuseActivation, Rule::FoldBatchNorm] {
            assert_eq!(report.count(rule), 1, "{}", rule.name());
        }
        assert_eq!(report.count(Rule::FoldAffine), 2);
        assert_eq!(f.nodes().len(), 2);
        let relu = &f.nodes()[0];
        assert_eq!(relu.name, "relu");
        assert!(matches!(&relu.op, Op::Conv2d(c) if c.act == Some(ActivationKind::Relu)));
        assert_eq!(relu.inputs.len(), 3);
        // The shared weight is scaled in place for one conv and copied for the other.
        let w = f.value_by_name("c.weight").unwrap();
        let copy = f.value_by_name("c.weight/fused").unwrap();
        assert_eq!(f.nodes()[0].inputs[1], w);
        assert_eq!(f.nodes()[1].inputs[1], copy);
        assert!(f.value_by_name("c.bias").is_some());
        assert_eq!(f.nodes()[1].name, "bn");
    }

    #[test]
    fn matmul_depthwise_and_transpose_epilogues() {
        let mut rng = rng();
        let mut b = GraphBuilder::new();
        let a = b.input("a", DType::F32, &[3, 5]).unwrap();
        let w = b
            .constant("fc.weight", rand_t(&mut rng, &[7, 5], -1.0, 1.0))
            .unwrap();
        let mm = MatMul {
            transpose_b: true,
            ..MatMul::default()
        };
        let y = b.node1("fc", mm, &[a, w]).unwrap();
        let bias = b
            .constant("fc.bias", rand_t(&mut rng, &[7], -1.0, 1.0))
            .unwrap();
        let y = b.node1("fc_bias", BiasAdd, &[y, bias]).unwrap();
        let mut bn_in = vec![y];
        for (n, lo, hi) in [
            ("m", -0.3, 0.3),
            ("v", 0.5, 1.5),
            ("g", 0.7, 1.3),
            ("be", -0.3, 0.3),
        ] {
            bn_in.push(b.constant(n, rand_t(&mut rng, &[7], lo, hi)).unwrap());
        }
        let y = b.node1("fc_bn", BatchNorm { eps: 1e-5 }, &bn_in).unwrap();
        let y = b
            .node1(
                "fc_act",
                Activation {
                    kind: ActivationKind::LeakyRelu(0.1),
                },
                &[y],
            )
            .unwrap();
        b.output(y).unwrap();
        // Depthwise with multiplier 2 -> batch norm -> relu6.
        let x = b.input("x", DType::F32, &[1, 5, 5, 3]).unwrap();
        let dw = b
            .constant("dw.weight", rand_t(&mut rng, &[3, 3, 6], -1.0, 1.0))
            .unwrap();
        let d = b
            .node1(
                "dw",
                DepthwiseConv2d {
                    padding: Padding::Same,
                    ..DepthwiseConv2d::default()
                },
                &[x, dw],
            )
            .unwrap();
        let mut bn_in = vec![d];
        for (n, lo, hi) in [
            ("dm", -0.3, 0.3),
            ("dv", 0.5, 1.5),
            ("dg", 0.7, 1.3),
            ("db", -0.3, 0.3),
        ] {
            bn_in.push(b.constant(n, rand_t(&mut rng, &[6], lo, hi)).unwrap());
        }
        let d = b.node1("dw_bn", BatchNorm { eps: 1e-5 }, &bn_in).unwrap();
        let d = b
            .node1(
                "dw_act",
                Activation {
                    kind: ActivationKind::Relu6,
                },
                &[d],
            )
            .unwrap();
        b.output(d).unwrap();
        // Transposed conv: takes the bias; its activation stays a node (no `act` attribute).
        let t = b
            .constant("t.weight", rand_t(&mut rng, &[3, 2, 2, 4], -1.0, 1.0))
            .unwrap();
        let tc = ConvTranspose2d {
            strides: [2, 2],
            ..ConvTranspose2d::default()
        };
        let t = b.node1("t", tc, &[x, t]).unwrap();
        let tb = b
            .constant("t.bias", rand_t(&mut rng, &[4], -1.0, 1.0))
            .unwrap();
        let t = b.node1("t_bias", BiasAdd, &[t, tb]).unwrap();
        let t = b
            .node1(
                "t_act",
                Activation {
                    kind: ActivationKind::Sigmoid,
                },
                &[t],
            )
            .unwrap();
        b.output(t).unwrap();
        let g = b.build().unwrap();
        let (f, report) = check_same(&g, &FuseOptions::default(), 1e-5, &mut rng);
        assert_eq!(report.count(Rule::FoldBatchNorm), 2);
        assert_eq!(report.count(Rule::FuseBias), 2);
        assert_eq!(report.count(Rule::FuseActivation), 2);
        let names: Vec<&str> = f.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["fc_act", "dw_act", "t_bias", "t_act"]);
        assert!(matches!(&f.nodes()[0].op, Op::MatMul(m) if m.act.is_some()));
        assert!(matches!(&f.nodes()[1].op, Op::DepthwiseConv2d(c) if c.act.is_some()));
        // The folded dense weight keeps its name (nothing else reads it).
        assert!(f.value_by_name("fc.weight").is_some());
        // The created bias is named like a PyTorch layer's.
        assert_eq!(f.nodes()[1].inputs[2], f.value_by_name("dw.bias").unwrap());
    }

    #[test]
    fn intermediate_outputs_are_not_fused_away() {
        let mut rng = rng();
        let mut b = GraphBuilder::new();
        let x = b.input("x", DType::F32, &[1, 4, 4, 2]).unwrap();
        let w = b
            .constant("w", rand_t(&mut rng, &[3, 1, 1, 2], -1.0, 1.0))
            .unwrap();
        let c = b.node1("conv", Conv2d::default(), &[x, w]).unwrap();
        let mut bn_in = vec![c];
        for (n, lo, hi) in [
            ("m", -0.3, 0.3),
            ("v", 0.5, 1.5),
            ("g", 0.7, 1.3),
            ("be", -0.3, 0.3),
        ] {
            bn_in.push(b.constant(n, rand_t(&mut rng, &[3], lo, hi)).unwrap());
        }
        let pre = b.node1("bn", BatchNorm { eps: 1e-5 }, &bn_in).unwrap();
        let y = b
            .node1(
                "relu",
                Activation {
                    kind: ActivationKind::Relu,
                },
                &[pre],
            )
            .unwrap();
        b.output(y).unwrap();
        // The pre-activation value is an output too: the relu must stay separate.
        b.output(pre).unwrap();
        let g = b.build().unwrap();
        let (f, report) = check_same(&g, &FuseOptions::default(), 1e-5, &mut rng);
        assert_eq!(report.count(Rule::FoldBatchNorm), 1);
        assert_eq!(report.count(Rule::FuseActivation), 0);
        assert_eq!(count(&f, "activation"), 1);
        assert!(f.value_by_name("bn").is_some());
        // With the conv output itself an output, nothing folds.
        let mut b = g.clone().into_builder();
        b.output(c).unwrap();
        let g2 = b.build().unwrap();
        let (f2, r2) = check_same(&g2, &FuseOptions::default(), 1e-5, &mut rng);
        assert!(r2.rewrites.is_empty(), "{}", r2.describe());
        assert_eq!(f2.nodes().len(), 3);
    }

    #[test]
    fn identities_reshapes_and_fixpoint() {
        let mut rng = rng();
        let mut b = GraphBuilder::new();
        let x = b.input("x", DType::F32, &[2, 3, 4]).unwrap();
        // A long chain: dropout, same-shape reshapes, reshape of reshape, same-shape flatten.
        let mut y = x;
        for i in 0..20 {
            y = b
                .node1(
                    &format!("drop{i}"),
                    Dropout {
                        training: false,
                        ..Dropout::default()
                    },
                    &[y],
                )
                .unwrap();
            y = b
                .node1(
                    &format!("same{i}"),
                    Reshape {
                        shape: vec![2, 3, 4],
                    },
                    &[y],
                )
                .unwrap();
            y = b
                .node1(&format!("flat{i}"), Reshape { shape: vec![6, -1] }, &[y])
                .unwrap();
            y = b
                .node1(&format!("flat_same{i}"), Flatten { axis: 1 }, &[y])
                .unwrap();
            y = b
                .node1(
                    &format!("back{i}"),
                    Reshape {
                        shape: vec![2, -1, 4],
                    },
                    &[y],
                )
                .unwrap();
        }
        let z = b
            .node1(
                "act",
                Activation {
                    kind: ActivationKind::Tanh,
                },
                &[y],
            )
            .unwrap();
        let out = b
            .node1(
                "out",
                Dropout {
                    training: false,
                    ..Dropout::default()
                },
                &[z],
            )
            .unwrap();
        b.output(out).unwrap();
        // A dropout of a graph input that is itself an output has no producer to take over.
        let keep = b
            .node1(
                "keep",
                Dropout {
                    training: false,
                    ..Dropout::default()
                },
                &[x],
            )
            .unwrap();
        b.output(keep).unwrap();
        // Training dropout is not an identity.
        let t = b
            .node1(
                "train_drop",
                Dropout {
                    training: true,
                    rate: 0.5,
                    seed: 3,
                },
                &[x],
            )
            .unwrap();
        b.output(t).unwrap();
        let g = b.build().unwrap();
        let (f, report) = check_same(&g, &FuseOptions::default(), 0.0, &mut rng);
        let names: Vec<&str> = f.nodes().iter().map(|n| n.name.as_str()).collect();
        // The chain cancels out; `act` took over the name of the output dropout.
        assert_eq!(
            names,
            ["out", "keep", "train_drop"],
            "{}",
            report.describe()
        );
        assert!(report.rewrites.len() <= g.nodes().len());
        let (_, again) = fuse(&f, &FuseOptions::default()).unwrap();
        assert!(again.rewrites.is_empty());
        // Rules can be switched off.
        let (same, none) = fuse(&g, &FuseOptions::default().with_rules(&[])).unwrap();
        assert!(none.rewrites.is_empty());
        assert_eq!(same.nodes().len(), g.nodes().len());
    }

    #[test]
    fn merges_reshape_of_reshape() {
        let mut rng = rng();
        let mut b = GraphBuilder::new();
        let x = b.input("x", DType::F32, &[2, 3, 4]).unwrap();
        let y = b.node1("f", Flatten { axis: 1 }, &[x]).unwrap();
        let y = b.node1("r1", Reshape { shape: vec![4, 6] }, &[y]).unwrap();
        let y = b.node1("r2", Reshape { shape: vec![-1, 2] }, &[y]).unwrap();
        b.output(y).unwrap();
        let g = b.build().unwrap();
        let (f, report) = check_same(&g, &FuseOptions::default(), 0.0, &mut rng);
        assert_eq!(report.count(Rule::MergeReshape), 2);
        assert_eq!(f.nodes().len(), 1);
        assert_eq!(f.nodes()[0].name, "r2");
        assert!(matches!(&f.nodes()[0].op, Op::Reshape(r) if r.shape == [-1, 2]));
    }

    #[test]
    fn folds_constants_within_the_size_cap() {
        let mut rng = rng();
        let mut b = GraphBuilder::new();
        let a = b.input("a", DType::F32, &[2, 6]).unwrap();
        let c = b
            .constant("c", rand_t(&mut rng, &[3, 2, 5], -1.0, 1.0))
            .unwrap();
        let c = b
            .node1("c_flat", Reshape { shape: vec![6, 5] }, &[c])
            .unwrap();
        let k = b
            .constant("k", rand_t(&mut rng, &[6, 5], -1.0, 1.0))
            .unwrap();
        let c = b
            .node1(
                "c_sum",
                Binary {
                    kind: BinaryKind::Add,
                },
                &[c, k],
            )
            .unwrap();
        let y = b.node1("mm", MatMul::default(), &[a, c]).unwrap();
        b.output(y).unwrap();
        let g = b.build().unwrap();
        let (f, report) = check_same(&g, &FuseOptions::default(), 0.0, &mut rng);
        assert_eq!(report.count(Rule::FoldConstant), 2);
        assert_eq!(f.nodes().len(), 1);
        assert!(matches!(
            f.value(f.value_by_name("c_sum").unwrap()).unwrap().kind,
            ValueKind::Constant { .. }
        ));
        // Over the cap (120 bytes each), nothing folds.
        let opts = FuseOptions {
            max_folded_bytes: 100,
            ..FuseOptions::default()
        };
        let (_, r) = check_same(&g, &opts, 0.0, &mut rng);
        assert_eq!(r.count(Rule::FoldConstant), 0);
    }

    /// conv (param) -> batch norm (trainable gamma / beta) -> relu -> pool -> dense + bias_add.
    fn small_trainable(rng: &mut Rng) -> Graph {
        let mut b = GraphBuilder::new();
        let x = b.input("data", DType::F32, &[2, 5, 5, 3]).unwrap();
        let w = b
            .parameter("conv.weight", rand_t(rng, &[4, 3, 3, 3], -1.0, 1.0))
            .unwrap();
        let c = b
            .node1(
                "conv",
                Conv2d {
                    padding: Padding::Same,
                    ..Conv2d::default()
                },
                &[x, w],
            )
            .unwrap();
        let mean = b
            .constant("bn.running_mean", rand_t(rng, &[4], -0.3, 0.3))
            .unwrap();
        let var = b
            .constant("bn.running_var", rand_t(rng, &[4], 0.5, 1.5))
            .unwrap();
        let gamma = b
            .parameter("bn.weight", rand_t(rng, &[4], 0.7, 1.3))
            .unwrap();
        let beta = b
            .parameter("bn.bias", rand_t(rng, &[4], -0.3, 0.3))
            .unwrap();
        let c = b
            .node1("bn", BatchNorm { eps: 1e-5 }, &[c, mean, var, gamma, beta])
            .unwrap();
        let c = b
            .node1(
                "relu",
                Activation {
                    kind: ActivationKind::Relu,
                },
                &[c],
            )
            .unwrap();
        let p = b.node1("pool", GlobalAvgPool, &[c]).unwrap();
        let p = b.node1("flat", Flatten { axis: 1 }, &[p]).unwrap();
        let fw = b
            .parameter("fc.weight", rand_t(rng, &[4, 4], -1.0, 1.0))
            .unwrap();
        let y = b.node1("fc", MatMul::default(), &[p, fw]).unwrap();
        let fb = b
            .parameter("fc.bias", rand_t(rng, &[4], -1.0, 1.0))
            .unwrap();
        let y = b.node1("logits", BiasAdd, &[y, fb]).unwrap();
        b.output(y).unwrap();
        b.build().unwrap()
    }

    #[test]
    fn training_graph_keeps_batch_norm_and_gradients() {
        let mut rng = rng();
        let fwd = small_trainable(&mut rng);
        let tg = crate::train::autograd::build(
            &fwd,
            crate::train::Loss::SparseSoftmaxCrossEntropy,
            &|_| true,
        )
        .unwrap();
        let g = &tg.graph;
        let (f, report) = check_same(g, &FuseOptions::training(), 1e-5, &mut rng);
        // Autograd turned the batch norm into `batch_norm_train`, which stays, and the
        // pre-activation value its gradient reads keeps the relu a separate node.
        assert_eq!(count(g, "batch_norm_train"), 1);
        assert_eq!(count(&f, "batch_norm_train"), 1);
        assert_eq!(count(&f, "activation"), 1);
        assert_eq!(report.count(Rule::FuseBias), 1);
        assert_eq!(report.count(Rule::FoldBatchNorm), 0);
        assert_eq!(report.count(Rule::FoldAffine), 0);
        // The inference rules on the forward graph alone do fold it.
        let (inf, _) = check_same(&fwd, &FuseOptions::default(), 1e-5, &mut rng);
        assert_eq!(count(&inf, "batch_norm"), 0);
        // conv+bn+relu, pool, dense+bias (the flatten of a `[n, c]` pool is an identity).
        assert_eq!(inf.nodes().len(), 3);
    }

    #[test]
    fn train_session_export_folds_batch_norm() {
        use crate::session::{Context, Model};
        use crate::train::{TrainConfig, TrainSession};
        let mut rng = rng();
        let model = Model::from_graph(small_trainable(&mut rng));
        let mut ts = TrainSession::new(&Context::cpu(), &model, TrainConfig::default()).unwrap();
        let x = rand_t(&mut rng, &[2, 5, 5, 3], -1.0, 1.0);
        let labels = Tensor::from_vec(&[2], vec![1i32, 3]).unwrap();
        ts.step(std::slice::from_ref(&x), &labels).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "spore-fuse-export-{}-{}",
            std::process::id(),
            rng.next_u32()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.spore");
        ts.export(&path).unwrap();
        let exported = crate::format::load_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(count(&exported, "batch_norm"), 0);
        assert_eq!(exported.nodes().len(), 3);
        let trained = ts.inference_graph().unwrap();
        assert_eq!(count(&trained, "batch_norm"), 1);
        let (a, b) = (
            eval(&trained, std::slice::from_ref(&x)),
            eval(&exported, &[x]),
        );
        assert_eq!(a[0].0, b[0].0);
        let e = rel_l2(&b[0].1, &a[0].1);
        println!("exported vs trained: rel L2 {e:.2e}");
        assert!(e <= 1e-5);
    }

    /// Timing of `fuse` itself on the zoo (not a test: run with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn time_fuse_on_zoo() {
        for arch in [
            Arch::ResNet18,
            Arch::ResNet50,
            Arch::MobileNetV2,
            Arch::EfficientNetB0,
        ] {
            let g = arch.build(&ModelConfig::new(224, 3, 1000)).unwrap();
            for (what, opts) in [
                ("rebuild only", FuseOptions::default().with_rules(&[])),
                ("all rules", FuseOptions::default()),
            ] {
                let t0 = std::time::Instant::now();
                let (f, _) = fuse(&g, &opts).unwrap();
                println!(
                    "{} {what}: {:.1} ms, {} -> {} nodes",
                    arch.name(),
                    t0.elapsed().as_secs_f64() * 1e3,
                    g.nodes().len(),
                    f.nodes().len()
                );
            }
        }
    }

    #[test]
    fn zoo_covers_every_arch() {
        // The per-model tests above list every architecture; a new one must get a test.
        assert_eq!(Arch::ALL.len(), 9);
    }
}
