//! The planner: every zoo model gives the same outputs all-CPU, all-GPU (software adapter)
//! and in a forced mixed plan; one submit per GPU segment; segmentation stays acyclic on
//! diamond and skip-connection graphs (and random DAGs); the memory plan's peak and its
//! poisoned-buffer check; GPU fault fallback; validation mode naming a wrong node.

use crate::common::{rel_l2, seed};
use spore::graph::{Graph, GraphBuilder, NodeId, ValueKind};
use spore::kernels_cpu::rng::Rng;
use spore::layers::ActivationKind;
use spore::models::{Arch, ModelConfig};
use spore::ops::activation::Activation;
use spore::ops::binary::{Binary, BinaryKind};
use spore::plan::partition::segment_devices;
use spore::plan::{DeviceKind, Plan, PlanOptions, Reason};
use spore::session::{
    Context, CpuOptions, Device, Flow, GpuOptions, Model, NodeInfo, RunObserver, Session,
};
use spore::{DType, Error, GpuErrorKind, Tensor};
use std::sync::OnceLock;

/// One context with the software GPU for the whole file (each context opens its own device
/// and pipeline cache), or `None` when there is no adapter (see `common::gpu`).
fn gpu_ctx(test: &str) -> Option<Context> {
    crate::common::gpu(test)?;
    static CTX: OnceLock<Option<Context>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = Context::builder()
            .devices([
                Device::Gpu(GpuOptions {
                    allow_software: true,
                    ..Default::default()
                }),
                Device::Cpu(CpuOptions { threads: 2 }),
            ])
            .build()
            .ok()?;
        ctx.gpu().is_some().then_some(ctx)
    })
    .clone()
}

fn cpu_ctx() -> Context {
    Context::builder()
        .devices([Device::Cpu(CpuOptions { threads: 2 })])
        .build()
        .unwrap()
}

fn random_inputs(s: &Session, rng: &mut Rng) -> Vec<(String, Tensor)> {
    s.inputs()
        .iter()
        .map(|(n, t)| {
            let data: Vec<f32> = (0..t.numel())
                .map(|_| rng.uniform(-1.0, 1.0) as f32)
                .collect();
            (n.to_string(), Tensor::from_vec(t.dims(), data).unwrap())
        })
        .collect()
}

fn run(s: &mut Session, inputs: &[(String, Tensor)]) -> Vec<Tensor> {
    for (n, t) in inputs {
        *s.input_by_tensor_name(n).unwrap() = t.clone();
    }
    s.run().unwrap();
    s.outputs().unwrap().into_iter().map(|(_, t)| t).collect()
}

fn assert_close(what: &str, got: &[Tensor], want: &[Tensor], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.dims(), w.dims(), "{what}");
        let e = rel_l2(&g.to_f32_vec(), &w.to_f32_vec());
        assert!(e <= tol, "{what}: relative L2 {e:.3e} > {tol:.0e}");
    }
}

/// Checks the plan's segment order is a valid schedule: every node input comes from an
/// earlier segment or an earlier node of the same segment.
fn assert_schedule(graph: &Graph, segments: &[spore::plan::Segment]) {
    let mut done = vec![false; graph.nodes().len()];
    for (s, seg) in segments.iter().enumerate() {
        for &n in &seg.nodes {
            for &v in &graph.nodes()[n.0].inputs {
                if let ValueKind::Output { node, .. } = graph.value(v).unwrap().kind {
                    assert!(
                        done[node.0],
                        "segment {s}: node {} runs before its input",
                        n.0
                    );
                }
            }
            done[n.0] = true;
        }
    }
    assert!(done.iter().all(|&d| d), "a node is in no segment");
}

/// The small configuration each zoo model is planned at.
fn small(arch: Arch) -> ModelConfig {
    match arch {
        Arch::LeNet5 => ModelConfig::new(28, 1, 10).batch(2),
        Arch::AlexNet => ModelConfig::new(64, 3, 10).width(0.125),
        _ => ModelConfig::new(32, 3, 10).width(0.25).batch(2),
    }
}

fn seeded(arch: Arch, rng: &mut Rng) -> Graph {
    arch.build(&small(arch).seed(rng.range(0, 1 << 20) as u64))
        .unwrap()
}

#[test]
fn zoo_models_agree_all_cpu_all_gpu_and_mixed() {
    let mut rng = Rng::new(seed("plan/zoo"));
    let gpu = gpu_ctx("plan/zoo");
    for arch in Arch::ALL {
        let t = std::time::Instant::now();
        let model = Model::from_graph(seeded(arch, &mut rng));
        let mut cpu = Session::new(&cpu_ctx(), &model).unwrap();
        assert_eq!(cpu.plan().gpu_segments(), 0);
        let inputs = random_inputs(&cpu, &mut rng);
        let want = run(&mut cpu, &inputs);
        let Some(ctx) = &gpu else { continue };
        let all = PlanOptions::default().gpu_everywhere();
        let mut g = Session::with_options(ctx, &model, all.clone()).unwrap();
        let got = run(&mut g, &inputs);
        assert_close(&format!("{}/gpu", arch.name()), &got, &want, 1e-4);
        let plan = g.plan();
        assert_schedule(plan.graph(), plan.segments());
        let stats = g.run_stats().unwrap();
        assert_eq!(
            stats.gpu_submits(),
            plan.gpu_segments(),
            "one submit per GPU segment"
        );
        for st in stats
            .segments
            .iter()
            .filter(|s| s.device == DeviceKind::Gpu)
        {
            assert_eq!(st.submits, 1);
            assert!(st.dispatches > 0, "{st:?}");
        }
        let (c, gn) = plan.node_counts();
        // Mixed: every other GPU-capable node denied, so islands and transfers alternate.
        let deny: Vec<String> = plan
            .graph()
            .nodes()
            .iter()
            .zip(plan.placements())
            .filter(|(_, p)| p.device == DeviceKind::Gpu)
            .step_by(2)
            .map(|(n, _)| n.name.clone())
            .collect();
        let mixed = PlanOptions {
            deny_gpu_nodes: deny,
            ..all
        };
        let mut m = Session::with_options(ctx, &model, mixed).unwrap();
        let got = run(&mut m, &inputs);
        assert_close(&format!("{}/mixed", arch.name()), &got, &want, 1e-4);
        let mp = m.plan();
        assert_schedule(mp.graph(), mp.segments());
        assert_eq!(m.run_stats().unwrap().gpu_submits(), mp.gpu_segments());
        println!(
            "{}: all-gpu {gn} gpu / {c} cpu nodes, {} gpu segments, {} dispatches; mixed {} \
             segments ({} gpu); {:?}",
            arch.name(),
            plan.gpu_segments(),
            stats.dispatches(),
            mp.segments().len(),
            mp.gpu_segments(),
            t.elapsed()
        );
    }
}

/// `x -> a -> b -> c`, `a -> c` (the diamond), plus `c -> d`, `a -> e`, `b -> e`, `d + e`.
fn diamond() -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("x", DType::F32, &[3, 5, 7]).unwrap();
    let act = |k| Activation { kind: k };
    let add = Binary {
        kind: BinaryKind::Add,
    };
    let a = b.node1("a", act(ActivationKind::Tanh), &[x]).unwrap();
    let bb = b.node1("b", act(ActivationKind::Sigmoid), &[a]).unwrap();
    let c = b.node1("c", add.clone(), &[a, bb]).unwrap();
    let d = b.node1("d", act(ActivationKind::Relu), &[c]).unwrap();
    let e = b.node1("e", add.clone(), &[a, bb]).unwrap();
    let f = b.node1("f", add, &[d, e]).unwrap();
    b.output(f).unwrap();
    b.build().unwrap()
}

#[test]
fn segmentation_is_acyclic_on_diamond_skip_and_random_graphs() {
    use DeviceKind::{Cpu, Gpu};
    let g = diamond();
    // The classic trap: a (gpu) -> b (cpu) -> c (gpu) with a -> c. Grouping a and c would
    // make a cycle with b's segment.
    let segs = segment_devices(&g, &[Gpu, Cpu, Gpu, Gpu, Gpu, Gpu]).unwrap();
    assert_schedule(&g, &segs);
    let seg_of = |n: usize| {
        segs.iter()
            .position(|s| s.nodes.contains(&NodeId(n)))
            .unwrap()
    };
    assert_ne!(seg_of(0), seg_of(2), "a and c must not share a segment");
    assert_eq!(segs.len(), 3, "{segs:?}");
    // Skip connection: a, b on the gpu, c on the cpu, d (after c) on the gpu.
    let segs = segment_devices(&g, &[Gpu, Gpu, Cpu, Gpu, Gpu, Gpu]).unwrap();
    assert_schedule(&g, &segs);
    assert_ne!(seg_of_in(&segs, 0), seg_of_in(&segs, 3));
    assert_eq!(
        seg_of_in(&segs, 0),
        seg_of_in(&segs, 4),
        "e joins a's segment"
    );
    // Random DAGs with random placements.
    let mut rng = Rng::new(seed("plan/acyclic"));
    for _ in 0..200 {
        let mut b = GraphBuilder::new();
        let mut vals = vec![b.input("x", DType::F32, &[4]).unwrap()];
        let n = rng.range(2, 24);
        for i in 0..n {
            let p = vals[rng.range(0, vals.len() - 1)];
            let q = vals[rng.range(0, vals.len() - 1)];
            let v = if rng.range(0, 1) == 0 {
                b.node1(
                    &format!("n{i}"),
                    Activation {
                        kind: ActivationKind::Relu,
                    },
                    &[p],
                )
            } else {
                b.node1(
                    &format!("n{i}"),
                    Binary {
                        kind: BinaryKind::Add,
                    },
                    &[p, q],
                )
            }
            .unwrap();
            vals.push(v);
        }
        b.output(*vals.last().unwrap()).unwrap();
        let g = b.build().unwrap();
        let devs: Vec<DeviceKind> = (0..n)
            .map(|_| if rng.range(0, 1) == 0 { Cpu } else { Gpu })
            .collect();
        let segs = segment_devices(&g, &devs).unwrap();
        assert_schedule(&g, &segs);
        for s in &segs {
            assert!(s.nodes.iter().all(|n| devs[n.0] == s.device));
        }
    }
    // End to end on the GPU with b denied: same outputs as the CPU.
    let Some(ctx) = gpu_ctx("plan/diamond") else {
        return;
    };
    let model = Model::from_graph(diamond());
    let mut cpu = Session::new(&cpu_ctx(), &model).unwrap();
    let inputs = random_inputs(&cpu, &mut rng);
    let want = run(&mut cpu, &inputs);
    let opts = PlanOptions {
        deny_gpu_nodes: vec!["b".into()],
        ..PlanOptions::default().gpu_everywhere()
    };
    let mut s = Session::with_options(&ctx, &model, opts).unwrap();
    let got = run(&mut s, &inputs);
    assert_close("diamond/mixed", &got, &want, 1e-4);
    let plan = s.plan();
    assert_schedule(plan.graph(), plan.segments());
    println!("{}", plan.describe());
}

fn seg_of_in(segs: &[spore::plan::Segment], n: usize) -> usize {
    segs.iter()
        .position(|s| s.nodes.contains(&NodeId(n)))
        .unwrap()
}

#[test]
fn mobilenet_v2_memory_peak_is_under_40_percent() {
    let g = Arch::MobileNetV2
        .build(&ModelConfig::new(32, 3, 10).width(0.25))
        .unwrap();
    let plan = Plan::new(&g, &cpu_ctx(), &PlanOptions::default()).unwrap();
    let m = plan.memory();
    println!("mobilenet_v2 cpu: {m}");
    assert!(m.ratio() <= 0.4, "{m}");
    if let Some(ctx) = gpu_ctx("plan/memory") {
        let plan = Plan::new(&g, &ctx, &PlanOptions::default().gpu_everywhere()).unwrap();
        let m = plan.memory();
        println!("mobilenet_v2 gpu: {m}");
        assert!(m.ratio() <= 0.4, "{m}");
        assert!(plan.memory_plan().find_overlap().is_none());
    }
}

/// A chain with skips, all GPU-capable ops, so buffers get reused many times.
fn chain(rng: &mut Rng) -> Graph {
    let mut b = GraphBuilder::new();
    let x = b.input("x", DType::F32, &[2, 9, 11]).unwrap();
    let kinds = [
        ActivationKind::Tanh,
        ActivationKind::Sigmoid,
        ActivationKind::Relu,
        ActivationKind::HardSwish,
    ];
    let mut prev = x;
    let mut skip = x;
    for i in 0..16 {
        let k = kinds[rng.range(0, 3)];
        let y = b
            .node1(&format!("act{i}"), Activation { kind: k }, &[prev])
            .unwrap();
        prev = if i % 3 == 2 {
            let s = b
                .node1(
                    &format!("add{i}"),
                    Binary {
                        kind: BinaryKind::Add,
                    },
                    &[y, skip],
                )
                .unwrap();
            skip = s;
            s
        } else {
            y
        };
    }
    b.output(prev).unwrap();
    b.output(skip).unwrap();
    b.build().unwrap()
}

#[test]
fn gpu_buffer_reuse_gives_the_same_outputs_as_one_buffer_per_value() {
    let mut rng = Rng::new(seed("plan/reuse"));
    let Some(ctx) = gpu_ctx("plan/reuse") else {
        return;
    };
    for model in [
        Model::from_graph(chain(&mut rng)),
        Model::from_graph(seeded(Arch::MobileNetV2, &mut rng)),
    ] {
        let reuse = PlanOptions::default().gpu_everywhere();
        let separate = PlanOptions {
            reuse_gpu_buffers: false,
            ..reuse.clone()
        };
        let mut a = Session::with_options(&ctx, &model, reuse).unwrap();
        let mut b = Session::with_options(&ctx, &model, separate).unwrap();
        let inputs = random_inputs(&a, &mut rng);
        let (ra, rb) = (run(&mut a, &inputs), run(&mut b, &inputs));
        let (ma, mb) = (a.plan().memory(), b.plan().memory());
        println!("reuse: {ma}\nno reuse: {mb}");
        assert!(a.plan().memory_plan().find_overlap().is_none());
        if a.plan().gpu_segments() > 0 {
            assert!(ma.gpu_slots < mb.gpu_slots, "{ma} vs {mb}");
        }
        // Slots start poisoned (NaN) and are shared: an overlap of live values or an
        // unwritten element would show here.
        assert_close("reuse vs separate", &ra, &rb, 0.0);
        assert!(
            ra.iter()
                .all(|t| t.to_f32_vec().iter().all(|v| v.is_finite()))
        );
        // A second run over the now-dirty slots gives the same outputs.
        assert_close("second run", &run(&mut a, &inputs), &ra, 0.0);
    }
}

#[test]
fn gpu_fault_replans_on_the_cpu_with_inputs_and_weights_intact() {
    let mut rng = Rng::new(seed("plan/fault"));
    let Some(ctx) = gpu_ctx("plan/fault") else {
        return;
    };
    for kind in [GpuErrorKind::DeviceLost, GpuErrorKind::OutOfMemory] {
        let graph = chain(&mut rng);
        let model = Model::from_graph(graph.clone());
        let mut s =
            Session::with_options(&ctx, &model, PlanOptions::default().gpu_everywhere()).unwrap();
        assert!(s.plan().gpu_segments() > 0);
        let inputs = random_inputs(&s, &mut rng);
        let want = run(&mut Session::new(&cpu_ctx(), &model).unwrap(), &inputs);
        s.inject_gpu_fault(kind);
        let got = run(&mut s, &inputs);
        assert_close("after fault", &got, &want, 1e-4);
        assert!(s.run_stats().unwrap().fell_back_to_cpu);
        assert_eq!(s.plan().gpu_segments(), 0, "re-planned on the CPU");
        for (n, t) in s.inputs() {
            let given = &inputs.iter().find(|(m, _)| m == n).unwrap().1;
            assert_eq!(t, given, "input `{n}` changed");
        }
        assert_eq!(s.graph(), &graph, "weights changed");
        // And the session keeps working.
        assert_close("after fault, again", &run(&mut s, &inputs), &want, 1e-4);
    }
}

#[test]
fn validation_mode_reports_every_node_and_names_a_wrong_one() {
    let mut rng = Rng::new(seed("plan/validate"));
    let graph = seeded(Arch::MobileNetV2, &mut rng);
    let model = Model::from_graph(graph.clone());
    let mut ctxs = vec![cpu_ctx().with_validate(true)];
    let mut opts = vec![PlanOptions::default()];
    if let Some(g) = gpu_ctx("plan/validate") {
        ctxs.push(g.with_validate(true));
        opts.push(PlanOptions::default().gpu_everywhere());
    }
    for (ctx, o) in ctxs.iter().zip(opts) {
        let mut s = Session::with_options(ctx, &model, o.clone()).unwrap();
        let inputs = random_inputs(&s, &mut rng);
        run(&mut s, &inputs);
        let report = s.validation_report().unwrap();
        assert_eq!(report.len(), s.plan().graph().nodes().len());
        let worst = report
            .iter()
            .map(|r| r.worst_rel_error)
            .fold(0f64, f64::max);
        println!(
            "validation ({} gpu nodes): {} nodes, worst relative error {worst:.2e}",
            s.plan().node_counts().1,
            report.len()
        );
        assert!(report.iter().all(|r| r.worst_rel_error <= r.tolerance));
        // A deliberately wrong node: the error names it.
        let victim = s.plan().graph().nodes()[s.plan().graph().nodes().len() / 2]
            .name
            .clone();
        let bad = PlanOptions {
            perturb_node: Some(victim.clone()),
            ..o
        };
        let mut s = Session::with_options(ctx, &model, bad).unwrap();
        for (n, t) in &inputs {
            *s.input_by_tensor_name(n).unwrap() = t.clone();
        }
        match s.run() {
            Err(Error::OpExecution { node, reason, .. }) => {
                assert_eq!(node, victim, "{reason}");
                assert!(reason.contains("validation"), "{reason}");
            }
            other => panic!("expected a validation error at `{victim}`, got {other:?}"),
        }
    }
}

struct Watch {
    seen: Vec<(String, &'static str, usize)>,
    stop_at: Option<String>,
}

impl RunObserver for Watch {
    fn wants_tensors(&self) -> bool {
        true
    }
    fn before(&mut self, node: &NodeInfo<'_>, inputs: &[&Tensor]) -> Flow {
        assert!(!inputs.is_empty());
        if self.stop_at.as_deref() == Some(node.name) {
            return Flow::Stop;
        }
        Flow::Continue
    }
    fn after(&mut self, node: &NodeInfo<'_>, outputs: &[&Tensor]) -> Flow {
        self.seen
            .push((node.name.to_string(), node.device, outputs.len()));
        Flow::Continue
    }
}

#[test]
fn observers_see_gpu_nodes_and_can_stop_inside_a_segment() {
    let mut rng = Rng::new(seed("plan/observer"));
    let Some(ctx) = gpu_ctx("plan/observer") else {
        return;
    };
    let model = Model::from_graph(chain(&mut rng));
    let mut s =
        Session::with_options(&ctx, &model, PlanOptions::default().gpu_everywhere()).unwrap();
    let inputs = random_inputs(&s, &mut rng);
    let want = run(&mut s, &inputs);
    let mut w = Watch {
        seen: vec![],
        stop_at: None,
    };
    s.run_with(&mut w).unwrap();
    assert_eq!(w.seen.len(), model.graph().nodes().len());
    assert!(w.seen.iter().any(|(_, d, _)| *d == "gpu"));
    assert_close(
        "observed run",
        &s.outputs()
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>(),
        &want,
        0.0,
    );
    let stop = w.seen[w.seen.len() / 2].0.clone();
    let mut w = Watch {
        seen: vec![],
        stop_at: Some(stop.clone()),
    };
    assert!(matches!(s.run_with(&mut w), Err(Error::Stopped { node }) if node == stop));
    assert_close("after stop", &run(&mut s, &inputs), &want, 0.0);
}

#[test]
fn island_rule_no_gpu_and_describe() {
    let mut rng = Rng::new(seed("plan/island"));
    let g = chain(&mut rng);
    // No GPU: all CPU, and the reason says so.
    let plan = Plan::new(&g, &cpu_ctx(), &PlanOptions::default()).unwrap();
    assert_eq!(plan.gpu_segments(), 0);
    assert!(plan.placements().iter().all(|p| p.reason == Reason::NoGpu));
    let Some(ctx) = gpu_ctx("plan/island") else {
        return;
    };
    // A few hundred elementwise FLOPs cannot pay for their transfers: all on the CPU.
    let plan = Plan::new(&g, &ctx, &PlanOptions::default()).unwrap();
    assert_eq!(plan.gpu_segments(), 0);
    let d = plan.describe();
    println!("{d}");
    if plan
        .placements()
        .iter()
        .any(|p| matches!(p.reason, Reason::TooSmall { .. }))
    {
        assert!(d.contains("too small"), "{d}");
    }
    // Denied ops show as such; the rest stay on the GPU with the rule off.
    let opts = PlanOptions::default()
        .gpu_everywhere()
        .deny_ops(&["binary"]);
    let mut s = Session::with_options(&ctx, &Model::from_graph(g), opts).unwrap();
    let inputs = random_inputs(&s, &mut rng);
    run(&mut s, &inputs);
    let d = s.plan().describe();
    println!("{d}");
    assert!(d.contains("denied on gpu"), "{d}");
    assert!(d.contains("dispatches"), "{d}");
    assert!(d.contains("segment 0"), "{d}");
}

/// Every node of `graph` in order on `eval_cpu`, keeping every value: the executor the
/// planner replaced, as the oracle for the plan's wiring and freeing.
fn naive_walk(graph: &Graph, inputs: &[(String, Tensor)]) -> Vec<Tensor> {
    let mut vals: Vec<Option<Tensor>> = vec![None; graph.values().len()];
    for (i, v) in graph.values().iter().enumerate() {
        match &v.kind {
            ValueKind::Constant { data, .. } => vals[i] = Some((**data).clone()),
            ValueKind::Input => {
                vals[i] = Some(inputs.iter().find(|(n, _)| *n == v.name).unwrap().1.clone())
            }
            ValueKind::Output { .. } => {}
        }
    }
    for node in graph.nodes() {
        let ins: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|v| vals[v.0].as_ref().unwrap())
            .collect();
        let outs = node.op.eval_cpu(&ins, 1).unwrap();
        for (o, t) in node.outputs.iter().zip(outs) {
            vals[o.0] = Some(t);
        }
    }
    graph
        .outputs()
        .iter()
        .map(|o| vals[o.0].clone().unwrap())
        .collect()
}

#[test]
fn cpu_plan_matches_a_naive_walk_on_a_training_graph() {
    let mut rng = Rng::new(seed("plan/train_graph"));
    for arch in [Arch::LeNet5, Arch::MobileNetV1] {
        train_graph_case(arch, &mut rng);
    }
}

fn train_graph_case(arch: Arch, rng: &mut Rng) {
    use spore::train::{Optimizer, TrainConfig, TrainSession};
    let model = Model::from_graph(seeded(arch, rng));
    let config = TrainConfig {
        optimizer: Optimizer::sgd(0.05),
        ..Default::default()
    };
    let ts = TrainSession::new(&Context::cpu(), &model, config).unwrap();
    let graph = ts.graph().clone();
    let inputs: Vec<(String, Tensor)> = graph
        .inputs()
        .iter()
        .map(|&id| {
            let v = graph.value(id).unwrap();
            let dims = &v.fact.shape;
            let n: usize = dims.iter().product();
            let t = match (v.fact.dtype, dims.len()) {
                (DType::I32, 0) => Tensor::from_vec(dims, vec![3i32]).unwrap(),
                (DType::I32, _) => {
                    Tensor::from_vec(dims, (0..n).map(|_| rng.range(0, 9) as i32).collect())
                        .unwrap()
                }
                (_, 0) => Tensor::from_vec(dims, vec![0.05f32]).unwrap(),
                _ => Tensor::from_vec(
                    dims,
                    (0..n)
                        .map(|_| rng.uniform(-0.5, 0.5) as f32)
                        .collect::<Vec<f32>>(),
                )
                .unwrap(),
            };
            (v.name.clone(), t)
        })
        .collect();
    let want = naive_walk(&graph, &inputs);
    let m = Model::from_graph(graph);
    let unfused = PlanOptions::default().with_fusion(false);
    let got = run(
        &mut Session::with_options(&Context::cpu(), &m, unfused).unwrap(),
        &inputs,
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g.as_bytes(),
            w.as_bytes(),
            "unfused plan differs from the naive walk"
        );
    }
    let got = run(&mut Session::new(&Context::cpu(), &m).unwrap(), &inputs);
    assert_close("fused training graph", &got, &want, 1e-4);
}

#[test]
fn fused_equals_unfused_on_every_zoo_model() {
    let mut rng = Rng::new(seed("plan/fused"));
    for arch in Arch::ALL {
        let model = Model::from_graph(seeded(arch, &mut rng));
        let off = PlanOptions::default().with_fusion(false);
        let mut plain = Session::with_options(&cpu_ctx(), &model, off).unwrap();
        let inputs = random_inputs(&plain, &mut rng);
        let want = run(&mut plain, &inputs);
        let mut fused = Session::new(&cpu_ctx(), &model).unwrap();
        let got = run(&mut fused, &inputs);
        assert_close(&format!("{}/fused", arch.name()), &got, &want, 1e-4);
        let plan = fused.plan();
        println!(
            "{}: {} -> {} nodes; {}",
            arch.name(),
            model.graph().nodes().len(),
            plan.graph().nodes().len(),
            plan.fusion_notes()
                .first()
                .map_or("no rewrites", String::as_str)
        );
    }
}
