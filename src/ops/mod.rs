//! The closed op set. `ops!` below is THE list: it generates [`Op`], one variant per op,
//! each defined in its own file implementing [`OpDef`] — attributes, shape/dtype inference,
//! `eval_ref` through the reference kernels, a gradient hook, and seeded `cases()` that the
//! conformance suites iterate, so a new op is tested without a new test file.

pub mod attrs;
pub(crate) mod grad_util;
#[cfg(test)]
pub(crate) mod gradcheck;

pub use attrs::{AttrValue, Attrs};

use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::{Error, Result};
use crate::graph::{GraphBuilder, TensorFact, ValueId};
use crate::tensor::{DType, Tensor};
use crate::tune::TuneSpec;
use spore_kernels_cpu::rng::Rng;

/// One seeded conformance case: an op and random inputs.
#[derive(Debug, Clone)]
pub struct OpCase {
    /// Case name, unique within the op (`<op>/<case>` is the test id).
    pub name: String,
    /// The op with its attributes.
    pub op: Op,
    /// Input tensors (fresh random data, never all zero).
    pub inputs: Vec<Tensor>,
}

/// A value resident on the GPU: the storage buffer holding it (at least `fact`'s byte size,
/// padded to 4 bytes) and its fact. Kernels bind `buffer` whole.
#[derive(Debug, Clone, Copy)]
pub struct GpuValue<'a> {
    /// The storage buffer.
    pub buffer: &'a wgpu::Buffer,
    /// Element type and shape of the value in it.
    pub fact: &'a TensorFact,
}

impl GpuValue<'_> {
    /// The value's dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.fact.shape
    }

    /// The value's element count.
    pub fn numel(&self) -> usize {
        self.fact.shape.iter().product()
    }
}

/// What every op implements.
pub trait OpDef: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The op's snake_case name, used in model files, test ids and file names.
    const NAME: &'static str;

    /// Output facts from input facts; `Err(reason)` when the inputs do not fit. The graph
    /// builder wraps the reason with the node's name and the input shapes.
    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String>;

    /// Runs the op on the reference kernels.
    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>>;

    /// Attributes for serialisation.
    fn attrs(&self) -> Attrs;

    /// Rebuilds the op from attributes (inverse of [`OpDef::attrs`]); checks every value.
    fn from_attrs(attrs: &Attrs) -> Result<Self>;

    /// Seeded conformance cases, drawing data from `rng`.
    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>>;

    /// Floating-point operations for these inputs (multiply-adds count 2), for `inspect`.
    fn flops(&self, _inputs: &[&TensorFact]) -> u64 {
        0
    }

    /// Runs the op on the tuned CPU kernels (the dispatch table of `spore-kernels-cpu`) with up
    /// to `threads` workers. Ops without a tuned kernel yet run the reference.
    fn eval_cpu(&self, inputs: &[&Tensor], _threads: usize) -> Result<Vec<Tensor>> {
        self.eval_ref(inputs)
    }

    /// Runs the op alone on the GPU: uploads the inputs, records its kernel(s), reads the
    /// outputs back. (The planner keeps tensors resident across a fused segment instead; this
    /// is the per-op path conformance and fallback use.) Ops without a WGSL kernel say so with
    /// [`Error::NotSupported`], and the executor places them on the CPU.
    ///
    /// The default runs [`OpDef::record_gpu`] on freshly uploaded inputs and poisoned (NaN)
    /// outputs, so an op with a `record_gpu` gets this path for free.
    fn eval_gpu(&self, gpu: &GpuContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        eval_gpu_by_record(self, gpu, inputs)
    }

    /// Whether [`OpDef::record_gpu`] can run these inputs (`Err(reason)` when not: no
    /// kernel, an element type or shape the kernel does not take). Pure and cheap: the
    /// planner asks it for every node when it partitions a graph.
    fn gpu_support(&self, _inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        Err("no WGSL kernel yet".into())
    }

    /// Records the op's kernel(s) into `rec` on values already resident on the GPU: the
    /// planner's path, which chains every node of a segment into one command buffer and
    /// submits once. `outputs` are allocated by the caller with the sizes `infer` gives (and
    /// may hold garbage: the kernel writes every element). Only called when
    /// [`OpDef::gpu_support`] said yes.
    fn record_gpu(
        &self,
        _gpu: &GpuContext,
        _rec: &mut Recorder<'_>,
        _inputs: &[GpuValue<'_>],
        _outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        Err(Error::NotSupported {
            what: format!("`{}` on the GPU (no WGSL kernel yet)", Self::NAME),
        })
    }

    /// The tunable kernel instance [`OpDef::record_gpu`] would run for these inputs on `gpu`
    /// (`crate::tune`): its cache key and legal knob candidates, or `None` when the kernel
    /// has no knobs. A `record_gpu` that answers here must also honour `gpu`'s tuned
    /// choice for the same key (through [`crate::tune::choose`]).
    fn gpu_tune(&self, _inputs: &[&TensorFact], _gpu: &GpuContext) -> Option<TuneSpec> {
        None
    }

    /// The gradient rule: emits backward nodes into `ctx.builder` and returns, for each input,
    /// the value holding the loss's gradient with respect to it (`None`: no gradient flows).
    /// Autograd (`train`) calls it in reverse topological order. Ops without a rule yet say so.
    fn grad(&self, _ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        Err(Error::NotSupported {
            what: format!("the gradient of `{}` (no rule yet)", Self::NAME),
        })
    }
}

/// What a gradient rule sees, and the graph it extends with backward nodes.
pub struct GradContext<'a> {
    /// The graph under construction (forward nodes already in it).
    pub builder: &'a mut GraphBuilder,
    /// The forward node's name: backward nodes are named after it.
    pub node: &'a str,
    /// The forward node's inputs.
    pub inputs: &'a [ValueId],
    /// The forward node's outputs.
    pub outputs: &'a [ValueId],
    /// The loss's gradient with respect to each output (`None`: that output does not reach it).
    pub output_grads: &'a [Option<ValueId>],
}

macro_rules! ops {
    ($($variant:ident => $module:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every op Spore knows, with its attributes.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Op {
            $(
                #[doc = concat!("See [`", stringify!($module), "`].")]
                $variant($module::$variant),
            )*
        }

        $(
            impl From<$module::$variant> for Op {
                fn from(op: $module::$variant) -> Op {
                    Op::$variant(op)
                }
            }
        )*

        impl Op {
            /// Every op's name, in list order.
            pub const NAMES: &'static [&'static str] = &[$(<$module::$variant as OpDef>::NAME),*];

            /// The op's snake_case name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$variant(_) => <$module::$variant as OpDef>::NAME,)*
                }
            }

            /// See [`OpDef::infer`].
            pub fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
                match self {
                    $(Op::$variant(op) => op.infer(inputs),)*
                }
            }

            /// See [`OpDef::eval_ref`].
            pub fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
                match self {
                    $(Op::$variant(op) => op.eval_ref(inputs),)*
                }
            }

            /// See [`OpDef::attrs`].
            pub fn attrs(&self) -> Attrs {
                match self {
                    $(Op::$variant(op) => op.attrs(),)*
                }
            }

            /// See [`OpDef::grad`].
            pub fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
                match self {
                    $(Op::$variant(op) => op.grad(ctx),)*
                }
            }

            /// See [`OpDef::eval_cpu`].
            pub fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
                match self {
                    $(Op::$variant(op) => op.eval_cpu(inputs, threads),)*
                }
            }

            /// See [`OpDef::eval_gpu`].
            pub fn eval_gpu(&self, gpu: &GpuContext, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
                match self {
                    $(Op::$variant(op) => op.eval_gpu(gpu, inputs),)*
                }
            }

            /// See [`OpDef::gpu_support`].
            pub fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
                match self {
                    $(Op::$variant(op) => op.gpu_support(inputs),)*
                }
            }

            /// See [`OpDef::record_gpu`].
            pub fn record_gpu(
                &self,
                gpu: &GpuContext,
                rec: &mut Recorder<'_>,
                inputs: &[GpuValue<'_>],
                outputs: &[GpuValue<'_>],
            ) -> Result<()> {
                match self {
                    $(Op::$variant(op) => op.record_gpu(gpu, rec, inputs, outputs),)*
                }
            }

            /// See [`OpDef::gpu_tune`].
            pub fn gpu_tune(&self, inputs: &[&TensorFact], gpu: &GpuContext) -> Option<TuneSpec> {
                match self {
                    $(Op::$variant(op) => op.gpu_tune(inputs, gpu),)*
                }
            }

            /// See [`OpDef::flops`].
            pub fn flops(&self, inputs: &[&TensorFact]) -> u64 {
                match self {
                    $(Op::$variant(op) => op.flops(inputs),)*
                }
            }

            /// The op called `name` rebuilt from `attrs` (for node `node`, in errors).
            pub fn from_name(name: &str, node: &str, items: Vec<(String, AttrValue)>) -> Result<Op> {
                match name {
                    $(n if n == <$module::$variant as OpDef>::NAME => {
                        let attrs = Attrs::from_items(<$module::$variant as OpDef>::NAME, node, items);
                        Ok(Op::$variant(<$module::$variant as OpDef>::from_attrs(&attrs)?))
                    })*
                    other => Err(Error::OpNotFound { op: other.to_string() }),
                }
            }

            /// Every op's conformance cases.
            pub fn all_cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
                let mut all = Vec::new();
                $(all.extend(<$module::$variant as OpDef>::cases(rng)?);)*
                Ok(all)
            }
        }
    };
}

ops! {
    Conv2d => conv2d,
    Activation => activation,
    Binary => binary,
    DepthwiseConv2d => depthwise_conv2d,
    ConvTranspose2d => conv_transpose2d,
    MatMul => matmul,
    BiasAdd => bias_add,
    BatchNorm => batch_norm,
    MaxPool2d => max_pool2d,
    AvgPool2d => avg_pool2d,
    GlobalAvgPool => global_avg_pool,
    Softmax => softmax,
    LogSoftmax => log_softmax,
    ReduceSum => reduce_sum,
    ReduceMean => reduce_mean,
    Reshape => reshape,
    Flatten => flatten,
    Concat => concat,
    Dropout => dropout,
    SoftmaxCrossEntropy => softmax_cross_entropy,
    SparseSoftmaxCrossEntropy => sparse_softmax_cross_entropy,
    Mse => mse,
    SigmoidBce => sigmoid_bce,
    SmoothL1 => smooth_l1,
    // Optimizer updates (training graphs).
    SgdUpdate => sgd_update,
    AdamUpdate => adam_update,
    // gradelem: backward ops of the elementwise / reduction / loss group.
    ActivationGrad => activation_grad,
    SoftmaxGrad => softmax_grad,
    LogSoftmaxGrad => log_softmax_grad,
    BinaryGrad => binary_grad,
    BroadcastTo => broadcast_to,
    Slice => slice,
    LossGrad => loss_grad,
    // gradconv: backward ops of the conv / matmul / batch-norm / pooling group.
    Conv2dGradInput => conv2d_grad_input,
    Conv2dGradWeight => conv2d_grad_weight,
    DepthwiseConv2dGradInput => depthwise_conv2d_grad_input,
    DepthwiseConv2dGradWeight => depthwise_conv2d_grad_weight,
    ConvTranspose2dGradWeight => conv_transpose2d_grad_weight,
    MaxPool2dGrad => max_pool2d_grad,
    AvgPool2dGrad => avg_pool2d_grad,
    GlobalAvgPoolGrad => global_avg_pool_grad,
    BatchNormGrad => batch_norm_grad,
    // lead: training-mode forward ops.
    BatchNormTrain => batch_norm_train,
    // Planner-made: fused runs of elementwise ops (plan::fuse).
    ElementwiseChain => elementwise_chain,
}

// ---- helpers shared by the op files -------------------------------------------------------

/// Checks the input count is in `min..=max`.
pub(crate) fn arity(inputs: usize, min: usize, max: usize) -> std::result::Result<(), String> {
    if inputs < min || inputs > max {
        if min == max {
            Err(format!("expects {min} inputs, got {inputs}"))
        } else {
            Err(format!("expects {min} to {max} inputs, got {inputs}"))
        }
    } else {
        Ok(())
    }
}

/// Checks every input is f32.
pub(crate) fn all_f32(inputs: &[&TensorFact]) -> std::result::Result<(), String> {
    match inputs.iter().position(|f| f.dtype != DType::F32) {
        Some(i) => Err(format!("input {i} is {}, expected f32", inputs[i].dtype)),
        None => Ok(()),
    }
}

/// Input `i` as an f32 slice, or an op-execution error naming the op.
pub(crate) fn input_f32<'a>(op: &str, inputs: &[&'a Tensor], i: usize) -> Result<&'a [f32]> {
    let t = inputs.get(i).ok_or_else(|| Error::OpExecution {
        op: op.to_string(),
        node: String::new(),
        reason: format!("missing input {i}"),
    })?;
    t.as_slice::<f32>()
}

/// Optional input `i` (e.g. a bias) as an f32 slice: `None` when absent.
pub(crate) fn optional_input_f32<'a>(
    op: &str,
    inputs: &[&'a Tensor],
    i: usize,
) -> Result<Option<&'a [f32]>> {
    if inputs.len() > i {
        input_f32(op, inputs, i).map(Some)
    } else {
        Ok(None)
    }
}

/// Checks an optional bias fact is `[channels]`.
pub(crate) fn check_bias(
    bias: Option<&TensorFact>,
    channels: usize,
) -> std::result::Result<(), String> {
    match bias {
        Some(b) if b.shape != [channels] => Err(format!(
            "bias has shape {:?}, expected [{channels}]",
            b.shape
        )),
        _ => Ok(()),
    }
}

/// A random f32 tensor of `dims`, uniform in `[-1, 1)`.
pub(crate) fn random_f32(rng: &mut Rng, dims: &[usize]) -> Result<Tensor> {
    let n = crate::shape::numel(dims)?;
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
    Tensor::from_vec(dims, data)
}

/// An f32 tensor from a kernel's output vector.
pub(crate) fn tensor_f32(dims: &[usize], data: Vec<f32>) -> Result<Tensor> {
    Tensor::from_vec(dims, data)
}

/// Largest rank, and longest axis list, an attribute or an axis argument may describe.
pub const MAX_RANK: usize = 64;

/// An op-execution error of op `op`.
pub(crate) fn exec_err(op: &str, reason: impl Into<String>) -> Error {
    Error::OpExecution {
        op: op.to_string(),
        node: String::new(),
        reason: reason.into(),
    }
}

/// Runs `op`'s inference on the facts of `inputs`, so `eval_ref` refuses exactly what `infer`
/// refuses (as an op-execution error) and allocates the shapes `infer` promised.
pub(crate) fn infer_eval<O: OpDef>(op: &O, inputs: &[&Tensor]) -> Result<Vec<TensorFact>> {
    let facts: Vec<TensorFact> = inputs
        .iter()
        .map(|t| TensorFact::new(t.dtype(), t.dims()))
        .collect();
    let refs: Vec<&TensorFact> = facts.iter().collect();
    op.infer(&refs).map_err(|reason| exec_err(O::NAME, reason))
}

/// The shape of the first output `infer_eval` gives, or an error when there is none.
pub(crate) fn out_shape<O: OpDef>(op: &O, inputs: &[&Tensor]) -> Result<Vec<usize>> {
    infer_eval(op, inputs)?
        .into_iter()
        .next()
        .map(|f| f.shape)
        .ok_or_else(|| exec_err(O::NAME, "inference gave no output"))
}

/// Refuses a zero dimension in `shape` (the reference kernels refuse empty tensors).
pub(crate) fn no_zero_dim(what: &str, shape: &[usize]) -> std::result::Result<(), String> {
    if shape.contains(&0) {
        Err(format!("{what} has a zero dimension: {shape:?}"))
    } else {
        Ok(())
    }
}

/// Views `shape` (rank >= 1, no zero dimension) as `[rows, channels]`, `channels` its last
/// axis and `rows` the product of the others.
pub(crate) fn rows_last(
    what: &str,
    shape: &[usize],
) -> std::result::Result<(usize, usize), String> {
    let Some((&last, outer)) = shape.split_last() else {
        return Err(format!("{what} must have rank >= 1, got a scalar"));
    };
    no_zero_dim(what, shape)?;
    let rows = outer
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{what} {shape:?}: element count overflows"))?;
    rows.checked_mul(last)
        .ok_or_else(|| format!("{what} {shape:?}: element count overflows"))?;
    Ok((rows, last))
}

/// Resolves `axis` against `rank`: `-rank..rank`, negative counting from the end.
pub(crate) fn resolve_axis(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let r = i64::try_from(rank).unwrap_or(i64::MAX);
    let resolved = if axis < 0 {
        axis.checked_add(r)
    } else {
        Some(axis)
    };
    match resolved {
        Some(v) if (0..r).contains(&v) => usize::try_from(v).map_err(|e| e.to_string()),
        _ => Err(format!("axis {axis} is out of range for rank {rank}")),
    }
}

/// An integer-list attribute from usizes.
pub(crate) fn ints_attr(v: &[usize]) -> AttrValue {
    AttrValue::Ints(v.iter().map(|&x| x as i64).collect())
}

/// Element count of the first input, for elementwise ops' `flops`.
pub(crate) fn first_numel(inputs: &[&TensorFact]) -> u64 {
    inputs.first().map_or(0, |f| f.numel() as u64)
}

/// The default [`OpDef::eval_gpu`]: uploads `inputs`, allocates poisoned outputs of the
/// inferred shapes, records [`OpDef::record_gpu`] into one command buffer, submits it and
/// reads the outputs back.
pub(crate) fn eval_gpu_by_record<O: OpDef>(
    op: &O,
    gpu: &GpuContext,
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>> {
    let in_facts: Vec<TensorFact> = inputs
        .iter()
        .map(|t| TensorFact::new(t.dtype(), t.dims()))
        .collect();
    let in_refs: Vec<&TensorFact> = in_facts.iter().collect();
    op.gpu_support(&in_refs)
        .map_err(|reason| Error::NotSupported {
            what: format!("`{}` on the GPU: {reason}", O::NAME),
        })?;
    let out_facts = op
        .infer(&in_refs)
        .map_err(|reason| exec_err(O::NAME, reason))?;
    let mut outputs = out_facts
        .iter()
        .map(|f| Tensor::zeros(f.dtype, &f.shape))
        .collect::<Result<Vec<Tensor>>>()?;
    // Nothing to compute (an empty output): the zeros are the answer, and a zero-sized
    // dispatch would be refused by some drivers.
    if outputs.iter().all(|t| t.numel() == 0) {
        return Ok(outputs);
    }
    let in_bufs = inputs
        .iter()
        .map(|t| gpu.upload(O::NAME, t.as_bytes()))
        .collect::<Result<Vec<_>>>()?;
    let out_bufs = outputs
        .iter()
        .map(|t| gpu.poisoned(O::NAME, t.as_bytes().len() as u64))
        .collect::<Result<Vec<_>>>()?;
    let in_values: Vec<GpuValue<'_>> = in_bufs
        .iter()
        .zip(&in_facts)
        .map(|(buffer, fact)| GpuValue { buffer, fact })
        .collect();
    let out_values: Vec<GpuValue<'_>> = out_bufs
        .iter()
        .zip(&out_facts)
        .map(|(buffer, fact)| GpuValue { buffer, fact })
        .collect();
    let mut rec = gpu.recorder();
    op.record_gpu(gpu, &mut rec, &in_values, &out_values)?;
    rec.submit()?;
    for (t, buf) in outputs.iter_mut().zip(&out_bufs) {
        let bytes = gpu.read_back(buf, t.as_bytes().len() as u64)?;
        let n = t.as_bytes().len();
        let src = bytes
            .get(..n)
            .ok_or_else(|| exec_err(O::NAME, "short GPU read-back"))?;
        t.as_bytes_mut().copy_from_slice(src);
    }
    Ok(outputs)
}

/// Value `i` of a `record_gpu` argument list (`what`: `"input"` or `"output"`), or an
/// op-execution error naming the op: the recorders index their arguments through this so a
/// short list is an error, never a panic.
pub(crate) fn gpu_arg<'v, 'a>(
    op: &str,
    values: &'v [GpuValue<'a>],
    i: usize,
    what: &str,
) -> Result<&'v GpuValue<'a>> {
    values
        .get(i)
        .ok_or_else(|| exec_err(op, format!("missing GPU {what} {i}")))
}

/// The common part of [`OpDef::gpu_support`]: every input f32, `infer` accepts the inputs,
/// and every input and output has fewer than 2^32 elements (the shaders index with u32).
pub(crate) fn gpu_f32_fits<O: OpDef>(
    op: &O,
    inputs: &[&TensorFact],
) -> std::result::Result<Vec<TensorFact>, String> {
    all_f32(inputs)?;
    let outputs = op.infer(inputs)?;
    for f in inputs.iter().copied().chain(&outputs) {
        if u32::try_from(f.numel()).is_err() {
            return Err(format!(
                "shape {:?} has 2^32 or more elements (the shaders index with u32)",
                f.shape
            ));
        }
    }
    Ok(outputs)
}
