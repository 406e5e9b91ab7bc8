//! `matmul`: batched matrix multiply `op(a) @ op(b)` with transpose flags, an optional bias over
//! the last (output) axis and an optional fused activation. `a` is `[batch..., m, k]` (rank >= 2,
//! its batch dimensions flattened); `b` is either `[k, n]`, one weight shared by every batch
//! entry (a Dense layer), or `[batch..., k, n]` with exactly `a`'s batch dimensions. The output
//! is `[batch..., m, n]`.

use super::activation::{ActivationKind, apply_in_place, get_kind, put_kind};
use super::grad_util::{bias_grad, input, output_grad, through_act};
use super::reshape::Reshape;
use super::{GpuValue, gpu_arg};
use super::{
    GradContext, OpCase, OpDef, all_f32, arity, check_bias, input_f32, out_shape, random_f32,
    tensor_f32,
};
use crate::backend::gpu::kernels::matmul as gpu_kernel;
use crate::backend::gpu::{GpuContext, Recorder};
use crate::error::Result;
use crate::graph::{TensorFact, ValueId};
use crate::ops::Attrs;
use crate::ops::attrs::AttrValue;
use crate::tensor::Tensor;
use crate::tune::TuneSpec;
use spore_kernels_cpu::reference::bias_add::{BiasAddParams, bias_add};
use spore_kernels_cpu::reference::matmul as reference;
use spore_kernels_cpu::rng::Rng;

/// Batched matrix multiply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatMul {
    /// `a`'s last two axes are `[k, m]` (use `a^T`).
    pub transpose_a: bool,
    /// `b`'s last two axes are `[n, k]` (use `b^T`; PyTorch `Linear` weights).
    pub transpose_b: bool,
    /// Fused activation applied to the output (after the bias).
    pub act: Option<ActivationKind>,
}

impl MatMul {
    /// The GPU kernel's description of this product on shape `p`.
    fn gpu_matmul(&self, p: reference::MatmulParams) -> gpu_kernel::Matmul {
        gpu_kernel::Matmul {
            act: self.act,
            ..gpu_kernel::Matmul::new(p)
        }
    }

    /// Kernel parameters and output shape for `a` and `b`.
    pub fn params(
        &self,
        a: &[usize],
        b: &[usize],
    ) -> std::result::Result<(reference::MatmulParams, Vec<usize>), String> {
        if a.len() < 2 || b.len() < 2 {
            return Err(format!("expects a and b of rank >= 2, got {a:?} and {b:?}"));
        }
        let (a_batch, a_mat) = a.split_at(a.len() - 2);
        let (b_batch, b_mat) = b.split_at(b.len() - 2);
        if b.len() != 2 && b_batch != a_batch {
            return Err(format!(
                "b must be rank 2 (shared) or have a's batch dimensions {a_batch:?}, got {b:?}"
            ));
        }
        let (m, ka) = if self.transpose_a {
            (a_mat[1], a_mat[0])
        } else {
            (a_mat[0], a_mat[1])
        };
        let (kb, n) = if self.transpose_b {
            (b_mat[1], b_mat[0])
        } else {
            (b_mat[0], b_mat[1])
        };
        if ka != kb {
            return Err(format!(
                "contracted sizes differ: a gives k = {ka}, b gives k = {kb}"
            ));
        }
        let batch = a_batch
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("batch dimensions {a_batch:?} overflow"))?;
        let p = reference::MatmulParams {
            batch,
            m,
            n,
            k: ka,
            transpose_a: self.transpose_a,
            transpose_b: self.transpose_b,
            b_batch: if b.len() == 2 { 1 } else { batch },
        };
        p.validate(Self::NAME).map_err(|e| e.to_string())?;
        let mut out = a_batch.to_vec();
        out.extend([m, n]);
        Ok((p, out))
    }
}

impl OpDef for MatMul {
    const NAME: &'static str = "matmul";

    fn infer(&self, inputs: &[&TensorFact]) -> std::result::Result<Vec<TensorFact>, String> {
        arity(inputs.len(), 2, 3)?;
        all_f32(inputs)?;
        let (p, out) = self.params(&inputs[0].shape, &inputs[1].shape)?;
        check_bias(inputs.get(2).copied(), p.n)?;
        Ok(vec![TensorFact::f32(out)])
    }

    fn eval_ref(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let a = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let (p, _) = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let (_, _, c_len) = p.validate(Self::NAME)?;
        let mut y = vec![0f32; c_len];
        reference::matmul(p, a, b, &mut y)?;
        if inputs.len() > 2 {
            let bias = input_f32(Self::NAME, inputs, 2)?;
            let bp = BiasAddParams {
                rows: p.batch * p.m,
                channels: p.n,
            };
            let c = y.clone();
            bias_add(bp, &c, bias, &mut y)?;
        }
        if let Some(act) = self.act {
            apply_in_place(act, &mut y)?;
        }
        Ok(vec![tensor_f32(&shape, y)?])
    }

    fn eval_cpu(&self, inputs: &[&Tensor], threads: usize) -> Result<Vec<Tensor>> {
        let shape = out_shape(self, inputs)?;
        let a = input_f32(Self::NAME, inputs, 0)?;
        let b = input_f32(Self::NAME, inputs, 1)?;
        let bias = super::optional_input_f32(Self::NAME, inputs, 2)?;
        let (p, _) = self
            .params(inputs[0].dims(), inputs[1].dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let (_, _, c_len) = p.validate(Self::NAME)?;
        let mut y = vec![0f32; c_len];
        let sp = spore_kernels_cpu::SgemmParams {
            mm: p,
            activation: self.act,
            threads,
        };
        spore_kernels_cpu::sgemm(&sp, a, b, bias, &mut y)?;
        Ok(vec![tensor_f32(&shape, y)?])
    }

    fn gpu_support(&self, inputs: &[&TensorFact]) -> std::result::Result<(), String> {
        super::gpu_f32_fits(self, inputs)?;
        let (p, _) = self.params(&inputs[0].shape, &inputs[1].shape)?;
        self.gpu_matmul(p).validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn record_gpu(
        &self,
        gpu: &GpuContext,
        rec: &mut Recorder<'_>,
        inputs: &[GpuValue<'_>],
        outputs: &[GpuValue<'_>],
    ) -> Result<()> {
        let a = gpu_arg(Self::NAME, inputs, 0, "input")?;
        let b = gpu_arg(Self::NAME, inputs, 1, "input")?;
        let c = gpu_arg(Self::NAME, outputs, 0, "output")?;
        let (p, _) = self
            .params(a.dims(), b.dims())
            .map_err(|reason| super::exec_err(Self::NAME, reason))?;
        let bias = inputs.get(2).map(|v| v.buffer);
        let mut mm = self.gpu_matmul(p);
        mm.variant = crate::tune::choose(
            gpu,
            || Some(gpu_kernel::tune_spec(&p, gpu)),
            mm.variant,
            gpu_kernel::Variant::parse,
            |v| gpu_kernel::Matmul { variant: *v, ..mm }.validate().is_ok(),
        );
        gpu_kernel::record::<f32>(gpu, rec, a.buffer, b.buffer, bias, c.buffer, &mm)
    }

    fn gpu_tune(&self, inputs: &[&TensorFact], gpu: &GpuContext) -> Option<TuneSpec> {
        let (a, b) = (inputs.first()?, inputs.get(1)?);
        let (p, _) = self.params(&a.shape, &b.shape).ok()?;
        Some(gpu_kernel::tune_spec(&p, gpu))
    }

    fn attrs(&self) -> Attrs {
        let a = Attrs::new(Self::NAME)
            .with("transpose_a", AttrValue::Bool(self.transpose_a))
            .with("transpose_b", AttrValue::Bool(self.transpose_b));
        put_kind(a, "act", self.act)
    }

    fn from_attrs(attrs: &Attrs) -> Result<Self> {
        Ok(MatMul {
            transpose_a: attrs.bool("transpose_a")?,
            transpose_b: attrs.bool("transpose_b")?,
            act: get_kind(attrs, "act")?,
        })
    }

    fn cases(rng: &mut Rng) -> Result<Vec<OpCase>> {
        // (name, a, b, op, bias): a Dense layer, a shared PyTorch-style weight under flattened
        // batch dimensions, batched products with transposes, a fused activation.
        type Config = (&'static str, Vec<usize>, Vec<usize>, MatMul, bool);
        let configs: Vec<Config> = vec![
            (
                "dense_bias_relu",
                vec![5, 7],
                vec![7, 3],
                MatMul {
                    act: Some(ActivationKind::Relu),
                    ..Default::default()
                },
                true,
            ),
            (
                "shared_transpose_b",
                vec![2, 3, 4],
                vec![5, 4],
                MatMul {
                    transpose_b: true,
                    ..Default::default()
                },
                true,
            ),
            (
                "batched",
                vec![2, 3, 4, 5],
                vec![2, 3, 5, 2],
                MatMul::default(),
                false,
            ),
            (
                "batched_transpose_both_gelu",
                vec![3, 4, 2],
                vec![3, 5, 4],
                MatMul {
                    transpose_a: true,
                    transpose_b: true,
                    act: Some(ActivationKind::Gelu),
                },
                true,
            ),
        ];
        configs
            .into_iter()
            .map(|(name, a, b, op, bias)| {
                let n = if op.transpose_b {
                    b[b.len() - 2]
                } else {
                    b[b.len() - 1]
                };
                let mut inputs = vec![random_f32(rng, &a)?, random_f32(rng, &b)?];
                if bias {
                    inputs.push(random_f32(rng, &[n])?);
                }
                Ok(OpCase {
                    name: format!("{}/{name}", Self::NAME),
                    op: op.into(),
                    inputs,
                })
            })
            .collect()
    }

    fn flops(&self, inputs: &[&TensorFact]) -> u64 {
        match (inputs.first(), inputs.get(1)) {
            (Some(a), Some(b)) => self.params(&a.shape, &b.shape).map_or(0, |(p, _)| {
                [p.batch, p.m, p.n, p.k]
                    .iter()
                    .fold(2u64, |a, &d| a.saturating_mul(d as u64))
            }),
            _ => 0,
        }
    }

    /// Through the fused activation (if any) to `g`, then, with `opA`/`opB` the transposes,
    /// `d opA(a) = g opB(b)^T` and `d opB(b) = opA(a)^T g`, each a `matmul` with transpose
    /// flags (no transpose op needed). A shared rank-2 `b` under batch dimensions sums its
    /// gradient over the batch: one GEMM over the rows flattened with `reshape` when `a` is
    /// not transposed, else a batched product and `reduce_sum`. `db = reduce_sum(g)`.
    fn grad(&self, ctx: &mut GradContext<'_>) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = output_grad(ctx) else {
            return Ok(vec![None; ctx.inputs.len()]);
        };
        let (a, b) = (input(ctx, 0)?, input(ctx, 1)?);
        let a_shape = ctx.builder.fact(a)?.shape.clone();
        let b_rank = ctx.builder.fact(b)?.rank();
        let (ta, tb) = (self.transpose_a, self.transpose_b);
        let batch_rank = a_shape.len().saturating_sub(2);
        let shared_b = b_rank == 2 && batch_rank > 0;
        if ta && shared_b {
            // d a[i] = opB(b) g[i]^T puts the shared b first, which matmul only allows
            // unbatched; it would need a transpose op.
            return Err(crate::Error::NotSupported {
                what: format!(
                    "the gradient of `matmul` node `{}` with transpose_a and a shared rank-2 b                      under batch dimensions",
                    ctx.node
                ),
            });
        }
        let unfused = MatMul {
            act: None,
            ..self.clone()
        };
        let g = through_act(ctx, self.act, dy, unfused)?;
        let mm = |transpose_a, transpose_b| MatMul {
            transpose_a,
            transpose_b,
            act: None,
        };
        let node = ctx.node.to_string();
        let da = if ta {
            ctx.builder
                .node1(&format!("{node}/grad_a"), mm(tb, true), &[b, g])?
        } else {
            ctx.builder
                .node1(&format!("{node}/grad_a"), mm(false, !tb), &[g, b])?
        };
        // The operands of b's gradient: flattened to rows when b is shared (`ta` is false
        // there, so the rows of `a` and `g` line up).
        let (a_op, g_op) = if shared_b {
            let k = a_shape.last().copied().unwrap_or(1) as i64;
            let n = ctx.builder.fact(g)?.shape.last().copied().unwrap_or(1) as i64;
            let a2 = ctx.builder.node1(
                &format!("{node}/grad_b_a_rows"),
                Reshape { shape: vec![-1, k] },
                &[a],
            )?;
            let g2 = ctx.builder.node1(
                &format!("{node}/grad_b_dy_rows"),
                Reshape { shape: vec![-1, n] },
                &[g],
            )?;
            (a2, g2)
        } else {
            (a, g)
        };
        let db = if tb {
            ctx.builder
                .node1(&format!("{node}/grad_b"), mm(true, ta), &[g_op, a_op])?
        } else {
            ctx.builder
                .node1(&format!("{node}/grad_b"), mm(!ta, false), &[a_op, g_op])?
        };
        let mut grads = vec![Some(da), Some(db)];
        if ctx.inputs.len() > 2 {
            grads.push(Some(bias_grad(ctx, g)?));
        }
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::{GradCheck, check_rule};

    #[test]
    fn grad_rule_matches_finite_differences() {
        let mut rng = Rng::new(71);
        let mut cases = MatMul::cases(&mut rng).unwrap();
        // Every transpose combination, batched and shared b, with and without bias.
        for (i, (ta, tb)) in [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .enumerate()
        {
            let (m, k, n) = (3, 5, 4);
            let a = if ta { vec![2, k, m] } else { vec![2, m, k] };
            let b = if tb { vec![2, n, k] } else { vec![2, k, n] };
            let op = MatMul {
                transpose_a: ta,
                transpose_b: tb,
                act: None,
            };
            let mut inputs = vec![
                random_f32(&mut rng, &a).unwrap(),
                random_f32(&mut rng, &b).unwrap(),
            ];
            if i % 2 == 0 {
                inputs.push(random_f32(&mut rng, &[n]).unwrap());
            }
            cases.push(OpCase {
                name: format!("matmul/grad_batched_t{ta}_{tb}"),
                op: op.clone().into(),
                inputs: inputs.clone(),
            });
            if !ta {
                // The same with b shared by 2 x 2 batch entries.
                let b2 = if tb { vec![n, k] } else { vec![k, n] };
                let a2 = vec![2, 2, m, k];
                cases.push(OpCase {
                    name: format!("matmul/grad_shared_t{ta}_{tb}"),
                    op: MatMul {
                        act: Some(crate::ops::activation::ActivationKind::Sigmoid),
                        ..op
                    }
                    .into(),
                    inputs: vec![
                        random_f32(&mut rng, &a2).unwrap(),
                        random_f32(&mut rng, &b2).unwrap(),
                    ],
                });
            }
        }
        for case in cases {
            let cfg = match &case.op {
                crate::ops::Op::MatMul(MatMul {
                    act: Some(crate::ops::activation::ActivationKind::Relu),
                    ..
                }) => GradCheck {
                    eps: 1e-3,
                    tol: 1e-2,
                },
                _ => GradCheck::default(),
            };
            let wrt: Vec<usize> = (0..case.inputs.len()).collect();
            let err = check_rule(&case.op, &case.inputs, &wrt, cfg, &mut rng)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            println!("{}: worst rel err {err:.2e}", case.name);
        }
    }

    #[test]
    fn grad_rule_refuses_transposed_a_with_shared_b_under_batch() {
        let mut rng = Rng::new(72);
        let op = MatMul {
            transpose_a: true,
            ..Default::default()
        };
        let inputs = vec![
            random_f32(&mut rng, &[2, 4, 3]).unwrap(),
            random_f32(&mut rng, &[4, 5]).unwrap(),
        ];
        let err = check_rule(&op.into(), &inputs, &[0, 1], GradCheck::default(), &mut rng);
        assert!(
            matches!(err, Err(crate::Error::NotSupported { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn infer_refuses_bad_shapes() {
        let op = MatMul::default();
        let f = |s: &[usize]| TensorFact::f32(s);
        assert!(op.infer(&[&f(&[3]), &f(&[3, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[4, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 2, 3]), &f(&[3, 3, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 2, 3]), &f(&[1, 3, 2])]).is_err());
        assert!(op.infer(&[&f(&[2, 3]), &f(&[3, 2]), &f(&[3])]).is_err());
        assert!(op.infer(&[&f(&[2, 0]), &f(&[0, 2])]).is_err());
        let out = op.infer(&[&f(&[4, 2, 3]), &f(&[3, 5])]).unwrap();
        assert_eq!(out[0].shape, [4, 2, 5]);
    }

    #[test]
    fn eval_matches_hand_computed() {
        // [[1, 2], [3, 4]] @ [[1, 0, 1], [0, 1, -1]] + [10, 20, 30].
        let a = Tensor::from_vec(&[2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let b = Tensor::from_vec(&[2, 3], vec![1f32, 0., 1., 0., 1., -1.]).unwrap();
        let bias = Tensor::from_vec(&[3], vec![10f32, 20., 30.]).unwrap();
        let y = MatMul::default().eval_ref(&[&a, &b, &bias]).unwrap();
        assert_eq!(
            y[0].to_vec::<f32>().unwrap(),
            vec![11., 22., 29., 13., 24., 29.]
        );
        // The same product with b stored transposed.
        let bt = Tensor::from_vec(&[3, 2], vec![1f32, 0., 0., 1., 1., -1.]).unwrap();
        let op = MatMul {
            transpose_b: true,
            ..Default::default()
        };
        let y = op.eval_ref(&[&a, &bt, &bias]).unwrap();
        assert_eq!(
            y[0].to_vec::<f32>().unwrap(),
            vec![11., 22., 29., 13., 24., 29.]
        );
    }

    #[test]
    fn flops_count_multiply_adds_twice() {
        let (a, b) = (TensorFact::f32([4, 2, 3]), TensorFact::f32([3, 5]));
        assert_eq!(MatMul::default().flops(&[&a, &b]), 2 * 4 * 2 * 3 * 5);
        assert_eq!(MatMul::default().flops(&[&a]), 0);
    }
}
