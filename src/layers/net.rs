//! [`Net`]: a [`GraphBuilder`] with name scopes, seeded parameter initialisation and a
//! [`ParamSource`] of given weights, the state every layer's `build` reads and extends.

use super::init::{Fans, Init};
use crate::error::{Error, Result};
use crate::graph::{Graph, GraphBuilder, TensorFact, ValueId, ValueKind};
use crate::models::torch::{self, TorchLayout};
use crate::ops::Op;
use crate::tensor::{DType, Tensor};
use spore_kernels_cpu::rng::{Rng, mix64};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Weights by parameter name, consulted by [`Net`] before it initialises a parameter, so a
/// graph can be built with given (e.g. PyTorch-trained) weights. Cheap to clone (shared).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamSource {
    tensors: Arc<BTreeMap<String, Tensor>>,
    /// Every parameter the net creates must come from this source (a random initialisation
    /// is an error); set it when a golden test must not silently run on random weights.
    pub require_all: bool,
}

impl ParamSource {
    /// An empty source.
    pub fn new() -> ParamSource {
        ParamSource::default()
    }

    /// Every constant of `graph` (trainable or not) by name: rebuilds the same architecture
    /// with the same weights (e.g. at another batch size).
    pub fn from_graph(graph: &Graph) -> ParamSource {
        let tensors = graph
            .values()
            .iter()
            .filter_map(|v| match &v.kind {
                ValueKind::Constant { data, .. } => Some((v.name.clone(), (**data).clone())),
                _ => None,
            })
            .collect();
        ParamSource {
            tensors: Arc::new(tensors),
            require_all: false,
        }
    }

    /// Adds (or replaces) `name`; returns the tensor it replaced.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        Arc::make_mut(&mut self.tensors).insert(name.into(), tensor)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Names and tensors, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The model-building state: a [`GraphBuilder`], a seed, a stack of name scopes and an
/// optional [`ParamSource`].
///
/// Names: scopes join with `.` like PyTorch module paths, so a parameter `weight` created in
/// scope `features` / `0` / `0` is called `features.0.0.weight`, exactly PyTorch's
/// `state_dict` key. A node is named after its scope (`features.0.0`), or `scope.hint` when
/// the scope already names a node; a layer built outside every scope opens an automatic one
/// (`dense_0`, `conv2d_1`, ...) so top-level layers never collide.
///
/// Initialisation: each parameter draws from its own stream `hash(seed, name)`, so a
/// parameter's initial value depends only on the seed and its name, not on how many
/// parameters came before it or were taken from the [`ParamSource`].
#[derive(Debug)]
pub struct Net {
    builder: GraphBuilder,
    seed: u64,
    scopes: Vec<String>,
    names: HashSet<String>,
    auto_counts: HashMap<String, usize>,
    source: ParamSource,
    used: BTreeSet<String>,
    next_name: Option<String>,
    flattened: HashMap<ValueId, [usize; 3]>,
    layouts: BTreeMap<String, TorchLayout>,
}

impl Net {
    /// An empty net whose parameters are initialised from `seed`.
    pub fn new(seed: u64) -> Net {
        Net::with_params(seed, ParamSource::new())
    }

    /// An empty net that takes parameters from `source` where it has them and initialises the
    /// rest from `seed`.
    pub fn with_params(seed: u64, source: ParamSource) -> Net {
        Net {
            builder: GraphBuilder::new(),
            seed,
            scopes: Vec::new(),
            names: HashSet::new(),
            auto_counts: HashMap::new(),
            source,
            used: BTreeSet::new(),
            next_name: None,
            flattened: HashMap::new(),
            layouts: BTreeMap::new(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Declares an f32 graph input `name` (not scoped) of `shape`.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<ValueId> {
        self.claim(name)?;
        self.builder.input(name, DType::F32, shape)
    }

    /// Runs `f` inside scope `name` (names created there are prefixed `name.`); the scope is
    /// left even when `f` fails.
    pub fn scope<T>(&mut self, name: &str, f: impl FnOnce(&mut Net) -> Result<T>) -> Result<T> {
        if name.is_empty() {
            return Err(Error::invalid_param(
                "scope",
                "scope names must not be empty",
            ));
        }
        self.scopes.push(name.to_string());
        let out = f(self);
        self.scopes.pop();
        out
    }

    /// Runs `f` as the body of a layer of kind `kind`: in the current scope, or in a fresh
    /// automatic scope `kind_<n>` when no scope is open (so two top-level layers never share
    /// a parameter name).
    pub fn layer<T>(&mut self, kind: &str, f: impl FnOnce(&mut Net) -> Result<T>) -> Result<T> {
        if !self.scopes.is_empty() {
            return f(self);
        }
        let name = loop {
            let count = self.auto_counts.entry(kind.to_string()).or_insert(0);
            let candidate = format!("{kind}_{count}");
            *count += 1;
            if !self.names.contains(&candidate) {
                break candidate;
            }
        };
        self.scope(&name, f)
    }

    /// The current scope path (`""` outside every scope).
    pub fn path(&self) -> String {
        self.scopes.join(".")
    }

    /// `local` qualified by the current scope path.
    pub fn qualify(&self, local: &str) -> String {
        if self.scopes.is_empty() {
            local.to_string()
        } else {
            format!("{}.{local}", self.path())
        }
    }

    /// Names the next node [`Net::node`] adds `name` exactly (e.g. a model's `logits`),
    /// whatever its scope. It is consumed by that one node, so set it just before building a
    /// single-node layer (Dense, Conv2d, an activation); a multi-node layer would give the
    /// name to its first node.
    pub fn name_next_node(&mut self, name: &str) {
        self.next_name = Some(name.to_string());
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if !self.names.insert(name.to_string()) {
            return Err(Error::invalid_param(
                "name",
                format!("`{name}` is already used"),
            ));
        }
        Ok(())
    }

    fn unique(&self, base: String) -> String {
        if !self.names.contains(&base) {
            return base;
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|c| !self.names.contains(c))
            .unwrap_or(base)
    }

    /// The name the next node with `hint` gets (see [`Net`]).
    fn node_name(&mut self, hint: &str) -> String {
        if let Some(name) = self.next_name.take() {
            return name;
        }
        let path = self.path();
        if path.is_empty() {
            self.unique(hint.to_string())
        } else if !self.names.contains(&path) {
            path
        } else {
            self.unique(format!("{path}.{hint}"))
        }
    }

    /// Adds a single-output node applying `op` to `inputs`, named after the scope (or
    /// `hint`); shape inference runs here.
    pub fn node(&mut self, hint: &str, op: impl Into<Op>, inputs: &[ValueId]) -> Result<ValueId> {
        let name = self.node_name(hint);
        let out = self.builder.node1(&name, op, inputs)?;
        self.names.insert(name);
        Ok(out)
    }

    /// A trainable parameter `local` (scoped) of `dims`: from the [`ParamSource`] if it has
    /// the name, else drawn from `init` with the weight's `fans`.
    pub fn param(
        &mut self,
        local: &str,
        dims: &[usize],
        init: Init,
        fans: Fans,
    ) -> Result<ValueId> {
        self.constant_value(local, dims, init, fans, true)
    }

    /// A non-trainable constant `local` (scoped), e.g. batch-norm running statistics; taken
    /// from the [`ParamSource`] like [`Net::param`].
    pub fn buffer(&mut self, local: &str, dims: &[usize], init: Init) -> Result<ValueId> {
        self.constant_value(local, dims, init, Fans::default(), false)
    }

    fn constant_value(
        &mut self,
        local: &str,
        dims: &[usize],
        init: Init,
        fans: Fans,
        trainable: bool,
    ) -> Result<ValueId> {
        let name = self.qualify(local);
        let data = match self.source.get(&name) {
            Some(t) => {
                if t.dims() != dims || t.dtype() != DType::F32 {
                    return Err(Error::ShapeMismatch {
                        shapes: vec![dims.to_vec(), t.dims().to_vec()],
                        reason: format!(
                            "parameter `{name}`: the model needs f32 {dims:?}, the source has {} {:?}",
                            t.dtype(),
                            t.dims()
                        ),
                    });
                }
                self.used.insert(name.clone());
                t.clone()
            }
            None if self.source.require_all => {
                return Err(Error::Missing {
                    what: format!("parameter `{name}` in the parameter source"),
                });
            }
            None => {
                let mut rng = Rng::new(self.name_seed(&name));
                init.tensor(dims, fans, &mut rng)?
            }
        };
        self.claim(&name)?;
        self.builder.add_constant(&name, data, trainable)
    }

    /// A non-trainable constant `local` (scoped) holding `data` as given: derived data such
    /// as a pooling matrix, which no [`ParamSource`] provides.
    pub fn fixed_constant(&mut self, local: &str, data: Tensor) -> Result<ValueId> {
        let name = self.qualify(local);
        self.claim(&name)?;
        self.builder.add_constant(&name, data, false)
    }

    /// The random stream of name `name` under this net's seed (parameters, dropout masks).
    pub fn name_seed(&self, name: &str) -> u64 {
        mix64(self.seed ^ mix64(fnv1a(name)))
    }

    /// The fact (dtype, shape) of `id`.
    pub fn fact(&self, id: ValueId) -> Result<&TensorFact> {
        self.builder.fact(id)
    }

    /// The shape of `id`.
    pub fn shape(&self, id: ValueId) -> Result<Vec<usize>> {
        Ok(self.builder.fact(id)?.shape.clone())
    }

    /// Records that `flat` is `[n, h * w * c]`, an NHWC activation flattened in `(h, w, c)`
    /// order, so a Dense layer reading it can tell importers to permute PyTorch's `(c, h, w)`
    /// columns.
    pub fn mark_flattened_nhwc(&mut self, flat: ValueId, hwc: [usize; 3]) {
        self.flattened.insert(flat, hwc);
    }

    /// `[h, w, c]` when `id` is (a shape-preserving function of) a flattened NHWC activation.
    pub fn flattened_nhwc(&self, id: ValueId) -> Option<[usize; 3]> {
        self.flattened.get(&id).copied()
    }

    /// Carries [`Net::flattened_nhwc`] from `from` to `to` across an elementwise layer.
    pub fn forward_flattened(&mut self, from: ValueId, to: ValueId) {
        if let Some(hwc) = self.flattened_nhwc(from) {
            self.flattened.insert(to, hwc);
        }
    }

    /// Records how PyTorch's tensor for parameter `name` (fully qualified) maps onto ours
    /// when the shapes alone do not say (stored in the graph metadata by [`Net::finish`]).
    pub fn set_torch_layout(&mut self, name: &str, layout: TorchLayout) {
        self.layouts.insert(name.to_string(), layout);
    }

    /// Sets a graph metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.builder.metadata(key, value);
    }

    /// Marks `outputs` as the graph outputs and finishes the graph. Fails when the
    /// [`ParamSource`] holds a name no parameter used (a typo must not fall back to a random
    /// initialisation silently).
    pub fn finish(mut self, outputs: &[ValueId]) -> Result<Graph> {
        let unused: Vec<&str> = self
            .source
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !self.used.contains(*k))
            .collect();
        if !unused.is_empty() {
            let shown: Vec<&str> = unused.iter().take(8).copied().collect();
            return Err(Error::invalid_param(
                "params",
                format!(
                    "{} source tensors match no parameter of the model: {shown:?}",
                    unused.len()
                ),
            ));
        }
        for &o in outputs {
            self.builder.output(o)?;
        }
        for (name, layout) in &self.layouts {
            self.builder
                .metadata(&torch::layout_key(name), &layout.to_string());
        }
        self.builder.build()
    }
}

/// FNV-1a over the name's bytes: a stable (unlike `std`'s hasher) per-name stream id.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
