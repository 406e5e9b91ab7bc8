//! Helpers shared by the gradient rules of the convolution / matmul / normalisation / pooling
//! group and by their backward ops: reading the output gradient, pushing it back through a
//! fused activation, and embedding a forward op's attributes in a backward op's attributes
//! (so a backward op is rebuilt from a model file with exactly the forward's validation).

use super::activation::ActivationKind;
use super::activation_grad::ActivationGrad;
use super::{Attrs, GradContext, Op, OpDef, ints_attr};
use crate::error::{Error, Result};
use crate::graph::ValueId;

/// Largest dimension a shape attribute (`input_shape`, `weight_shape`) may hold: far beyond
/// any real tensor. Element counts are still checked by the ops' `infer` (the kernels'
/// parameter validation multiplies with overflow checks).
pub(crate) const MAX_DIM: usize = 1 << 32;

/// The loss's gradient with respect to the node's first (only) output, if it reaches the loss.
pub(crate) fn output_grad(ctx: &GradContext<'_>) -> Option<ValueId> {
    ctx.output_grads.first().copied().flatten()
}

/// Whether `act'(x)` can be read off `y = act(x)` itself: true where `act` is monotone with
/// the same kinks on both sides (ReLU, ReLU6, leaky ReLU with a positive slope). Reading the
/// output saves recomputing the pre-activation.
fn derivative_from_output(kind: ActivationKind) -> bool {
    match kind {
        ActivationKind::Relu | ActivationKind::Relu6 => true,
        ActivationKind::LeakyRelu(alpha) => alpha > 0.0,
        _ => false,
    }
}

/// The gradient with respect to the pre-activation of a node with fused activation `act`:
/// `dy` itself without one, else `activation_grad(x_or_y, dy)` named `<node>/grad_act`.
/// For ReLU-like activations `x_or_y` is the node's output; otherwise the pre-activation is
/// recomputed by `unfused` (the forward op without its activation) as `<node>/grad_preact`.
pub(crate) fn through_act(
    ctx: &mut GradContext<'_>,
    act: Option<ActivationKind>,
    dy: ValueId,
    unfused: impl Into<Op>,
) -> Result<ValueId> {
    let Some(kind) = act else {
        return Ok(dy);
    };
    let x_or_y = match ctx.outputs.first() {
        Some(&y) if derivative_from_output(kind) => y,
        _ => ctx.builder.node1(
            &format!("{}/grad_preact", ctx.node),
            unfused.into(),
            ctx.inputs,
        )?,
    };
    ctx.builder.node1(
        &format!("{}/grad_act", ctx.node),
        ActivationGrad { kind },
        &[x_or_y, dy],
    )
}

/// `inner`'s attributes relabelled as attributes of op `name`.
pub(crate) fn embed(name: &'static str, inner: &Attrs) -> Attrs {
    inner
        .items()
        .iter()
        .fold(Attrs::new(name), |a, (k, v)| a.with(k, v.clone()))
}

/// Rebuilds the embedded forward op `O` from a backward op's attributes.
pub(crate) fn unembed<O: OpDef>(name: &'static str, attrs: &Attrs) -> Result<O> {
    O::from_attrs(&Attrs::from_items(name, "", attrs.items().to_vec()))
}

/// Attributes of op `name`: `inner`'s plus a 4-D shape attribute `key`.
pub(crate) fn embed_with_shape(
    name: &'static str,
    inner: &Attrs,
    key: &str,
    shape: &[usize],
) -> Attrs {
    embed(name, inner).with(key, ints_attr(shape))
}

/// Reads a positive N-D shape attribute `key`.
pub(crate) fn shape_attr<const N: usize>(attrs: &Attrs, key: &str) -> Result<[usize; N]> {
    let s = attrs.usizes::<N>(key, MAX_DIM)?;
    if s.contains(&0) {
        return Err(attrs.err(key, format!("{s:?} has a zero dimension")));
    }
    Ok(s)
}

/// `2 * prod(factors)` (a multiply-add count), saturating instead of overflowing, for `flops`
/// on shapes `infer` has accepted.
pub(crate) fn mac_flops(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(2u64, |a, &d| a.saturating_mul(d as u64))
}

/// Checks a gradient input has the shape the forward produced.
pub(crate) fn check_shape(
    what: &str,
    got: &[usize],
    want: &[usize],
) -> std::result::Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} has shape {got:?}, expected {want:?}"))
    }
}

/// The forward node's input `i`, or an error naming the node.
pub(crate) fn input(ctx: &GradContext<'_>, i: usize) -> Result<ValueId> {
    ctx.inputs.get(i).copied().ok_or_else(|| {
        Error::invalid_param("grad", format!("node `{}` has no input {i}", ctx.node))
    })
}

/// The shape of value `v` as an N-D array, or an error naming the node.
pub(crate) fn shape_of<const N: usize>(ctx: &GradContext<'_>, v: ValueId) -> Result<[usize; N]> {
    let shape = &ctx.builder.fact(v)?.shape;
    <[usize; N]>::try_from(shape.as_slice()).map_err(|_| {
        Error::invalid_param(
            "grad",
            format!(
                "node `{}`: expected a rank-{N} value, got {shape:?}",
                ctx.node
            ),
        )
    })
}

/// A reduce_sum node `<node>/grad_bias` summing `dy` over every axis but the last: the bias
/// gradient of every op that adds a per-channel bias to its output.
pub(crate) fn bias_grad(ctx: &mut GradContext<'_>, dy: ValueId) -> Result<ValueId> {
    let rank = ctx.builder.fact(dy)?.rank();
    let axes: Vec<i64> = (0..rank.saturating_sub(1) as i64).collect();
    ctx.builder.node1(
        &format!("{}/grad_bias", ctx.node),
        super::reduce_sum::ReduceSum {
            axes,
            keep_dims: false,
        },
        &[dy],
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::ops::OpCase;
    use crate::tensor::Tensor;

    /// Relative L2 distance of `got` from `want`.
    pub(crate) fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
        let (mut num, mut den) = (0f64, 0f64);
        for (&g, &w) in got.iter().zip(want) {
            num += (f64::from(g) - f64::from(w)).powi(2);
            den += f64::from(w).powi(2);
        }
        (num / den.max(1e-30)).sqrt()
    }

    /// Checks `eval_cpu` (1 and 2 threads) against `eval_ref` on every output of `case`.
    pub(crate) fn check_cpu_vs_ref(case: &OpCase) {
        let refs: Vec<&Tensor> = case.inputs.iter().collect();
        let want = case.op.eval_ref(&refs).unwrap();
        for threads in [1, 2] {
            let got = case.op.eval_cpu(&refs, threads).unwrap();
            assert_eq!(got.len(), want.len(), "{}", case.name);
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.dims(), w.dims(), "{} output {k}", case.name);
                let err = rel_l2(&g.to_f32_vec(), &w.to_f32_vec());
                assert!(
                    err <= 1e-5,
                    "{} output {k} threads {threads}: {err:.2e}",
                    case.name
                );
            }
        }
        println!("{}: eval_cpu matches eval_ref", case.name);
    }

    /// Whatever a backward op's `infer` accepts among mangled input facts (inputs dropped or
    /// added, ranks changed, dimensions zeroed or grown, dtype flipped), `eval_ref` and
    /// `eval_cpu` run and give the inferred shapes; `flops` never panics. (The conformance
    /// suite does the same for every op; this keeps the group's ops covered on their own.)
    #[test]
    fn mangled_inputs_give_errors_not_panics() {
        use crate::graph::TensorFact;
        use crate::ops::OpDef;
        use crate::tensor::DType;
        use spore_kernels_cpu::rng::Rng;
        let mut rng = Rng::new(99);
        let mut cases = Vec::new();
        cases.extend(crate::ops::conv2d_grad_input::Conv2dGradInput::cases(&mut rng).unwrap());
        cases.extend(crate::ops::conv2d_grad_weight::Conv2dGradWeight::cases(&mut rng).unwrap());
        cases.extend(
            crate::ops::depthwise_conv2d_grad_input::DepthwiseConv2dGradInput::cases(&mut rng)
                .unwrap(),
        );
        cases.extend(
            crate::ops::depthwise_conv2d_grad_weight::DepthwiseConv2dGradWeight::cases(&mut rng)
                .unwrap(),
        );
        cases.extend(
            crate::ops::conv_transpose2d_grad_weight::ConvTranspose2dGradWeight::cases(&mut rng)
                .unwrap(),
        );
        cases.extend(crate::ops::max_pool2d_grad::MaxPool2dGrad::cases(&mut rng).unwrap());
        cases.extend(crate::ops::avg_pool2d_grad::AvgPool2dGrad::cases(&mut rng).unwrap());
        cases.extend(crate::ops::global_avg_pool_grad::GlobalAvgPoolGrad::cases(&mut rng).unwrap());
        cases.extend(crate::ops::batch_norm_grad::BatchNormGrad::cases(&mut rng).unwrap());
        let mut accepted = 0;
        for case in cases {
            let facts: Vec<TensorFact> = case
                .inputs
                .iter()
                .map(|t| TensorFact::new(t.dtype(), t.dims()))
                .collect();
            let mut variants = vec![Vec::new(), facts[..facts.len() - 1].to_vec()];
            let mut extra = facts.clone();
            extra.push(facts[0].clone());
            variants.push(extra);
            for i in 0..facts.len() {
                let shape = facts[i].shape.clone();
                let mut shapes = vec![
                    shape[1..].to_vec(),
                    [&[2][..], &shape].concat(),
                    [&shape[..], &[1][..]].concat(),
                ];
                for ax in 0..shape.len() {
                    for d in [0, shape[ax] + 1, 1] {
                        let mut s = shape.clone();
                        s[ax] = d;
                        shapes.push(s);
                    }
                }
                for s in shapes {
                    let mut v = facts.clone();
                    v[i] = TensorFact::f32(s);
                    variants.push(v);
                }
                let mut v = facts.clone();
                v[i] = TensorFact::new(DType::I32, shape);
                variants.push(v);
            }
            for variant in variants {
                let refs: Vec<&TensorFact> = variant.iter().collect();
                case.op.flops(&refs);
                let Ok(inferred) = case.op.infer(&refs) else {
                    continue;
                };
                accepted += 1;
                let tensors: Vec<Tensor> = variant
                    .iter()
                    .map(|f| crate::ops::random_f32(&mut rng, &f.shape).unwrap())
                    .collect();
                let inputs: Vec<&Tensor> = tensors.iter().collect();
                for outs in [
                    case.op.eval_ref(&inputs).unwrap(),
                    case.op.eval_cpu(&inputs, 2).unwrap(),
                ] {
                    let dims: Vec<&[usize]> = outs.iter().map(|t| t.dims()).collect();
                    let want: Vec<&[usize]> = inferred.iter().map(|f| &f.shape[..]).collect();
                    assert_eq!(dims, want, "{}: {:?}", case.name, refs);
                }
            }
        }
        println!("{accepted} mangled variants accepted and run");
    }
}

#[cfg(test)]
mod timing {
    use crate::graph::TensorFact;
    use crate::ops::conv2d::{Conv2d, Padding};
    use crate::ops::conv2d_grad_input::Conv2dGradInput;
    use crate::ops::conv2d_grad_weight::Conv2dGradWeight;
    use crate::ops::depthwise_conv2d::DepthwiseConv2d;
    use crate::ops::depthwise_conv2d_grad_input::DepthwiseConv2dGradInput;
    use crate::ops::depthwise_conv2d_grad_weight::DepthwiseConv2dGradWeight;
    use crate::ops::{Op, random_f32};
    use crate::tensor::Tensor;
    use spore_kernels_cpu::rng::Rng;
    use std::time::Instant;

    /// Best-of-3 seconds of `f`.
    fn best(mut f: impl FnMut()) -> f64 {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Times the backward ops on a ResNet / MobileNet-sized layer: `eval_ref` against
    /// `eval_cpu` on 1 and 2 threads. Run with
    /// `cargo test --release -p spore --lib grad_util::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn backward_op_throughput() {
        let mut rng = Rng::new(5);
        let conv = Conv2d {
            padding: Padding::Same,
            ..Default::default()
        };
        let dw = DepthwiseConv2d {
            padding: Padding::Same,
            ..Default::default()
        };
        let (x, w, dy) = ([4, 28, 28, 64], [64, 3, 3, 64], [4, 28, 28, 64]);
        let (dwx, dww) = ([4, 56, 56, 96], [3, 3, 96]);
        let ops: Vec<(&str, Op, Vec<Tensor>)> = vec![
            (
                "conv2d_grad_input 4x28x28x64 k3 64",
                Conv2dGradInput {
                    conv: conv.clone(),
                    input_shape: x,
                }
                .into(),
                vec![
                    random_f32(&mut rng, &dy).unwrap(),
                    random_f32(&mut rng, &w).unwrap(),
                ],
            ),
            (
                "conv2d_grad_weight 4x28x28x64 k3 64",
                Conv2dGradWeight {
                    conv,
                    weight_shape: w,
                }
                .into(),
                vec![
                    random_f32(&mut rng, &x).unwrap(),
                    random_f32(&mut rng, &dy).unwrap(),
                ],
            ),
            (
                "depthwise_conv2d_grad_input 4x56x56x96 k3",
                DepthwiseConv2dGradInput {
                    conv: dw.clone(),
                    input_shape: dwx,
                }
                .into(),
                vec![
                    random_f32(&mut rng, &dwx).unwrap(),
                    random_f32(&mut rng, &dww).unwrap(),
                ],
            ),
            (
                "depthwise_conv2d_grad_weight 4x56x56x96 k3",
                DepthwiseConv2dGradWeight {
                    conv: dw,
                    weight_shape: dww,
                }
                .into(),
                vec![
                    random_f32(&mut rng, &dwx).unwrap(),
                    random_f32(&mut rng, &dwx).unwrap(),
                ],
            ),
        ];
        for (name, op, inputs) in ops {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let facts: Vec<TensorFact> = inputs
                .iter()
                .map(|t| TensorFact::new(t.dtype(), t.dims()))
                .collect();
            let frefs: Vec<&TensorFact> = facts.iter().collect();
            let gflop = op.flops(&frefs) as f64 * 1e-9;
            let t_ref = best(|| {
                op.eval_ref(&refs).unwrap();
            });
            let t1 = best(|| {
                op.eval_cpu(&refs, 1).unwrap();
            });
            let t2 = best(|| {
                op.eval_cpu(&refs, 2).unwrap();
            });
            println!(
                "{name}: {gflop:.3} GFLOP; reference {:.2} GFLOP/s, cpu 1 thread {:.1} GFLOP/s, \
                 2 threads {:.1} GFLOP/s",
                gflop / t_ref,
                gflop / t1,
                gflop / t2
            );
        }
    }
}
