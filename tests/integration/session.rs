//! The Context / Session API: names, runs, callbacks (counting, stopping), resize,
//! re-entrancy, wrong inputs, and concurrent sessions sharing one model and context.

use crate::common::seed;
use spore::graph::GraphBuilder;
use spore::kernels_cpu::rng::Rng;
use spore::ops::activation::{Activation, ActivationKind};
use spore::ops::binary::{Binary, BinaryKind};
use spore::ops::conv2d::{Conv2d, Padding};
use spore::session::{Context, CpuOptions, Device, Flow, Model, NodeInfo, RunObserver, Session};
use spore::{DType, Error, Tensor};

fn random(rng: &mut Rng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    Tensor::from_vec(
        dims,
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect(),
    )
    .unwrap()
}

/// data [n,6,6,3] -> conv 3x3 SAME (4 ch) -> relu -> + skip(1x1 conv) -> "prob"
fn model(rng: &mut Rng, batch: usize) -> Model {
    let mut b = GraphBuilder::new();
    let x = b.input("data", DType::F32, &[batch, 6, 6, 3]).unwrap();
    let w1 = b.parameter("w1", random(rng, &[4, 3, 3, 3])).unwrap();
    let b1 = b.parameter("b1", random(rng, &[4])).unwrap();
    let w2 = b.parameter("w2", random(rng, &[4, 1, 1, 3])).unwrap();
    let same = Conv2d {
        padding: Padding::Same,
        ..Default::default()
    };
    let c1 = b.node1("conv1", same.clone(), &[x, w1, b1]).unwrap();
    let r = b
        .node1(
            "relu1",
            Activation {
                kind: ActivationKind::Relu,
            },
            &[c1],
        )
        .unwrap();
    let c2 = b.node1("skip", Conv2d::default(), &[x, w2]).unwrap();
    let y = b
        .node1(
            "prob",
            Binary {
                kind: BinaryKind::Add,
            },
            &[r, c2],
        )
        .unwrap();
    b.output(y).unwrap();
    Model::from_graph(b.build().unwrap())
}

fn cpu_ctx() -> Context {
    Context::builder()
        .devices([Device::Cpu(CpuOptions { threads: 1 })])
        .build()
        .unwrap()
}

#[test]
fn names_run_and_outputs() {
    let mut rng = Rng::new(seed("session/run"));
    let m = model(&mut rng, 2);
    let mut s = Session::new(&cpu_ctx(), &m).unwrap();
    assert_eq!(s.inputs().len(), 1);
    assert_eq!(s.inputs()[0].0, "data");
    assert_eq!(s.output_tensor_names(), vec!["prob".to_string()]);
    assert!(
        s.output_by_tensor_name("prob").is_err(),
        "no output before the first run"
    );
    let x = random(&mut rng, &[2, 6, 6, 3]);
    s.input_by_tensor_name("data")
        .unwrap()
        .copy_from_slice(x.as_slice::<f32>().unwrap())
        .unwrap();
    s.run().unwrap();
    let y = s.output_by_tensor_name("prob").unwrap();
    assert_eq!(y.dims(), &[2, 6, 6, 4]);
    // Same numbers as evaluating the ops by hand.
    let g = m.graph();
    let c = |name: &str| match &g.value(g.value_by_name(name).unwrap()).unwrap().kind {
        spore::graph::ValueKind::Constant { data, .. } => (**data).clone(),
        _ => unreachable!(),
    };
    let same = Conv2d {
        padding: Padding::Same,
        ..Default::default()
    };
    let c1 = same
        .clone()
        .into_op()
        .eval_ref(&[&x, &c("w1"), &c("b1")])
        .unwrap()
        .remove(0);
    let r = c1.map_f32(|v| v.max(0.0)).unwrap();
    let c2 = Conv2d::default()
        .into_op()
        .eval_ref(&[&x, &c("w2")])
        .unwrap()
        .remove(0);
    let want: Vec<f32> = r
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .zip(c2.as_slice::<f32>().unwrap())
        .map(|(a, b)| a + b)
        .collect();
    // The session runs the tuned CPU kernels: equal to the reference up to f32 reordering.
    let err = crate::common::rel_l2(y.as_slice::<f32>().unwrap(), &want);
    assert!(err <= 1e-5, "session vs reference: rel err {err:e}");
    assert_eq!(s.outputs().unwrap().len(), 1);
    // Unknown names are errors with the right code.
    assert_eq!(
        s.input_by_tensor_name("nope").unwrap_err().code().as_i32(),
        -2
    );
    assert_eq!(
        s.output_by_tensor_name("nope").unwrap_err().code().as_i32(),
        -2
    );
}

trait IntoOp {
    fn into_op(self) -> spore::ops::Op;
}
impl IntoOp for Conv2d {
    fn into_op(self) -> spore::ops::Op {
        self.into()
    }
}

struct Counter {
    before: Vec<String>,
    after: usize,
    stop_at: Option<&'static str>,
    tensors: bool,
    seen_output_shapes: Vec<Vec<usize>>,
}

impl RunObserver for Counter {
    fn wants_tensors(&self) -> bool {
        self.tensors
    }
    fn before(&mut self, node: &NodeInfo<'_>, inputs: &[&Tensor]) -> Flow {
        self.before.push(format!("{}:{}", node.name, node.op));
        assert_eq!(inputs.is_empty(), !self.tensors);
        if self.stop_at == Some(node.name) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
    fn after(&mut self, _node: &NodeInfo<'_>, outputs: &[&Tensor]) -> Flow {
        self.after += 1;
        self.seen_output_shapes
            .extend(outputs.iter().map(|t| t.dims().to_vec()));
        Flow::Continue
    }
}

#[test]
fn callbacks_count_and_stop() {
    let mut rng = Rng::new(seed("session/callbacks"));
    let s = Session::new(&cpu_ctx(), &model(&mut rng, 1)).unwrap();
    let mut c = Counter {
        before: vec![],
        after: 0,
        stop_at: None,
        tensors: true,
        seen_output_shapes: vec![],
    };
    s.run_with(&mut c).unwrap();
    assert_eq!(
        c.before,
        vec![
            "conv1:conv2d",
            "relu1:activation",
            "skip:conv2d",
            "prob:binary"
        ]
    );
    assert_eq!(c.after, 4);
    assert_eq!(c.seen_output_shapes[0], vec![1, 6, 6, 4]);
    let first = s.output_by_tensor_name("prob").unwrap();
    // Stopping returns a clear error, keeps the last outputs, and the session still runs.
    let mut stop = Counter {
        before: vec![],
        after: 0,
        stop_at: Some("skip"),
        tensors: false,
        seen_output_shapes: vec![],
    };
    let e = s.run_with(&mut stop).unwrap_err();
    assert!(
        matches!(&e, Error::Stopped { node } if node == "skip"),
        "{e}"
    );
    assert_eq!(stop.after, 2);
    assert_eq!(s.output_by_tensor_name("prob").unwrap(), first);
    s.run().unwrap();
}

#[test]
fn reentrant_run_is_refused() {
    struct Reenter<'a> {
        session: &'a Session,
        result: Option<Error>,
    }
    impl RunObserver for Reenter<'_> {
        fn before(&mut self, _: &NodeInfo<'_>, _: &[&Tensor]) -> Flow {
            if self.result.is_none() {
                self.result = self.session.run().err();
            }
            Flow::Continue
        }
    }
    let mut rng = Rng::new(seed("session/reentrant"));
    let s = Session::new(&cpu_ctx(), &model(&mut rng, 1)).unwrap();
    let mut obs = Reenter {
        session: &s,
        result: None,
    };
    s.run_with(&mut obs).unwrap();
    let e = obs.result.expect("the nested run must fail");
    assert_eq!(e.code().as_i32(), -102, "{e}");
    s.run().unwrap();
}

#[test]
fn wrong_inputs_are_refused_without_touching_state() {
    let mut rng = Rng::new(seed("session/wrong_inputs"));
    let mut s = Session::new(&cpu_ctx(), &model(&mut rng, 1)).unwrap();
    s.run().unwrap();
    let before = s.output_by_tensor_name("prob").unwrap();
    *s.input_by_tensor_name("data").unwrap() = random(&mut rng, &[1, 5, 6, 3]);
    let e = s.run().unwrap_err();
    assert_eq!(e.code().as_i32(), -101, "{e}");
    *s.input_by_tensor_name("data").unwrap() = Tensor::zeros(DType::I32, &[1, 6, 6, 3]).unwrap();
    assert_eq!(s.run().unwrap_err().code().as_i32(), -101);
    assert_eq!(s.output_by_tensor_name("prob").unwrap(), before);
    // copy_from_slice of the wrong length is refused too.
    assert!(
        s.input_by_tensor_name("data")
            .unwrap()
            .copy_from_slice(&[1.0f32; 3])
            .is_err()
    );
}

#[test]
fn resize_changes_the_batch() {
    let mut rng = Rng::new(seed("session/resize"));
    let mut s = Session::new(&cpu_ctx(), &model(&mut rng, 1)).unwrap();
    s.resize(&[("data", &[3, 6, 6, 3])]).unwrap();
    assert_eq!(s.inputs()[0].1.dims(), &[3, 6, 6, 3]);
    *s.input_by_tensor_name("data").unwrap() = random(&mut rng, &[3, 6, 6, 3]);
    s.run().unwrap();
    assert_eq!(
        s.output_by_tensor_name("prob").unwrap().dims(),
        &[3, 6, 6, 4]
    );
    // A shape the graph cannot take is an error naming the node, and nothing changes.
    let e = s.resize(&[("data", &[3, 6, 6, 5])]).unwrap_err();
    assert!(e.to_string().contains("conv1"), "{e}");
    assert_eq!(s.inputs()[0].1.dims(), &[3, 6, 6, 3]);
    assert!(s.resize(&[("nope", &[1])]).is_err());
    s.run().unwrap();
}

#[test]
fn concurrent_sessions_share_model_and_context() {
    let mut rng = Rng::new(seed("session/concurrent"));
    let m = model(&mut rng, 2);
    let ctx = cpu_ctx();
    let x = random(&mut rng, &[2, 6, 6, 3]);
    let mut reference = Session::new(&ctx, &m).unwrap();
    *reference.input_by_tensor_name("data").unwrap() = x.clone();
    reference.run().unwrap();
    let want = reference.output_by_tensor_name("prob").unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let (m, ctx, x, want) = (&m, &ctx, &x, &want);
            scope.spawn(move || {
                let mut s = Session::new(ctx, m).unwrap();
                *s.input_by_tensor_name("data").unwrap() = x.clone();
                for _ in 0..3 {
                    s.run().unwrap();
                    assert_eq!(&s.output_by_tensor_name("prob").unwrap(), want);
                }
            });
        }
    });
    // The same with a context holding the (shared) GPU, when there is one.
    if crate::common::gpu("session/concurrent/gpu").is_some() {
        let gpu_ctx = Context::builder()
            .devices([Device::Gpu(spore::session::GpuOptions {
                allow_software: true,
                ..Default::default()
            })])
            .build()
            .unwrap();
        assert!(gpu_ctx.gpu().is_some());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                let (m, ctx, x, want) = (&m, &gpu_ctx, &x, &want);
                scope.spawn(move || {
                    let mut s = Session::new(ctx, m).unwrap();
                    *s.input_by_tensor_name("data").unwrap() = x.clone();
                    s.run().unwrap();
                    // GPU kernels sum in another order than the CPU's: equal within f32 noise.
                    let got = s.output_by_tensor_name("prob").unwrap();
                    let err = crate::common::rel_l2(
                        got.as_slice::<f32>().unwrap(),
                        want.as_slice::<f32>().unwrap(),
                    );
                    assert!(err <= 1e-5, "GPU session vs CPU session: rel err {err:e}");
                });
            }
        });
    }
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Session>();
    assert_send_sync::<Context>();
}

#[test]
fn context_validation() {
    let e = Context::builder()
        .devices([Device::Cpu(CpuOptions { threads: 100_000 })])
        .build()
        .unwrap_err();
    assert_eq!(e.code().as_i32(), -3);
    let e = Context::builder()
        .devices([
            Device::Cpu(CpuOptions::default()),
            Device::Cpu(CpuOptions::default()),
        ])
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("twice"));
    // Auto never picks a software adapter; CPU is always there.
    let ctx = Context::builder().devices([Device::Auto]).build().unwrap();
    if let Some(g) = ctx.gpu() {
        assert!(!g.adapter().is_software);
    }
    assert!(ctx.describe().last().unwrap().starts_with("cpu:"));
}

#[test]
fn ill_typed_graphs_cannot_be_built() {
    let mut b = GraphBuilder::new();
    let x = b.input("x", DType::F32, &[1, 5, 5, 3]).unwrap();
    let w = b
        .constant("w", Tensor::zeros(DType::F32, &[4, 3, 3, 2]).unwrap())
        .unwrap();
    let e = b.node1("bad_conv", Conv2d::default(), &[x, w]).unwrap_err();
    assert_eq!(e.code().as_i32(), -500);
    let msg = e.to_string();
    assert!(
        msg.contains("bad_conv") && msg.contains("[1, 5, 5, 3]") && msg.contains("[4, 3, 3, 2]"),
        "{msg}"
    );
    assert!(
        b.input("x", DType::F32, &[1]).is_err(),
        "duplicate names are refused"
    );
}
