//! Op conformance over every op's seeded `cases()`: inference agrees with what `eval_ref`
//! produces, attributes round-trip, outputs are finite, inputs are never all zero, and
//! mangled inputs (wrong count, rank, sizes or dtype) give errors rather than panics. Backends join as they land
//! (test ids read `<op>/<case>/<device>`).

use crate::common::seed;
use spore::graph::TensorFact;
use spore::kernels_cpu::rng::Rng;
use spore::ops::Op;
use spore::{DType, Tensor};

#[test]
fn every_case_infers_what_eval_ref_produces() {
    let mut rng = Rng::new(seed("conformance/infer_vs_eval"));
    let cases = Op::all_cases(&mut rng).unwrap();
    assert!(!cases.is_empty());
    let mut seen = std::collections::HashSet::new();
    for case in &cases {
        assert!(
            seen.insert(case.name.clone()),
            "duplicate case id {}",
            case.name
        );
        let id = format!("{}/reference", case.name);
        let facts: Vec<TensorFact> = case
            .inputs
            .iter()
            .map(|t| TensorFact::new(t.dtype(), t.dims()))
            .collect();
        let refs: Vec<&TensorFact> = facts.iter().collect();
        let inferred = case
            .op
            .infer(&refs)
            .unwrap_or_else(|e| panic!("{id}: infer: {e}"));
        let inputs: Vec<&spore::Tensor> = case.inputs.iter().collect();
        let outputs = case
            .op
            .eval_ref(&inputs)
            .unwrap_or_else(|e| panic!("{id}: eval: {e}"));
        assert_eq!(inferred.len(), outputs.len(), "{id}: output count");
        for (i, (f, t)) in inferred.iter().zip(&outputs).enumerate() {
            assert_eq!(f.shape, t.dims(), "{id}: output {i} shape");
            assert_eq!(f.dtype, t.dtype(), "{id}: output {i} dtype");
            assert!(
                t.to_f32_vec().iter().all(|v| v.is_finite()),
                "{id}: output {i} not finite"
            );
        }
    }
    // Every op contributes cases.
    for name in Op::NAMES {
        assert!(
            cases.iter().any(|c| c.op.name() == *name),
            "op {name} has no cases"
        );
    }
}

#[test]
fn attributes_round_trip() {
    let mut rng = Rng::new(seed("conformance/attrs"));
    for case in Op::all_cases(&mut rng).unwrap() {
        let items = case.op.attrs().items().to_vec();
        let back = Op::from_name(case.op.name(), "n", items).unwrap();
        assert_eq!(back, case.op, "{}: attrs round trip", case.name);
    }
    let e = Op::from_name("no_such_op", "n", vec![]).unwrap_err();
    assert_eq!(e.code().as_i32(), -300);
}

#[test]
fn case_inputs_are_never_all_zero() {
    let mut rng = Rng::new(seed("conformance/nonzero"));
    for case in Op::all_cases(&mut rng).unwrap() {
        for (i, t) in case.inputs.iter().enumerate() {
            // A rank-0 i32 input is a counter (an optimizer's step), not data: 0 is the first step.
            if t.dtype() == DType::I32 && t.dims().is_empty() {
                continue;
            }
            assert!(
                t.to_f32_vec().iter().any(|&v| v != 0.0),
                "{}: input {i} is all zero",
                case.name
            );
        }
    }
}

/// Variants of a case's input facts: too few / too many inputs, each input with its rank
/// lowered and raised, each dimension grown or zeroed, and the other dtype.
fn mangle(facts: &[TensorFact]) -> Vec<Vec<TensorFact>> {
    let mut out = vec![Vec::new(), facts[..facts.len() - 1].to_vec()];
    let mut extra = facts.to_vec();
    extra.push(facts[0].clone());
    out.push(extra);
    for i in 0..facts.len() {
        let mut with = |f: TensorFact| {
            let mut v = facts.to_vec();
            v[i] = f;
            out.push(v);
        };
        let f = &facts[i];
        let shape = &f.shape;
        if !shape.is_empty() {
            with(TensorFact::new(f.dtype, &shape[1..]));
            with(TensorFact::new(f.dtype, &shape[..shape.len() - 1]));
        }
        with(TensorFact::new(f.dtype, [&[2][..], shape].concat()));
        with(TensorFact::new(f.dtype, [shape, &[1][..]].concat()));
        for ax in 0..shape.len() {
            for d in [0, shape[ax] + 1, 1] {
                let mut s = shape.clone();
                s[ax] = d;
                with(TensorFact::new(f.dtype, s));
            }
        }
        let other = if f.dtype == DType::F32 {
            DType::I32
        } else {
            DType::F32
        };
        with(TensorFact::new(other, shape.clone()));
    }
    out
}

/// A tensor of `fact`: random f32 data, or zeros (valid class labels) for other dtypes.
fn tensor_of(rng: &mut Rng, fact: &TensorFact) -> Tensor {
    let mut t = Tensor::zeros(fact.dtype, &fact.shape).unwrap();
    if fact.dtype == DType::F32 {
        for v in t.as_mut_slice::<f32>().unwrap() {
            *v = rng.uniform(-1.0, 1.0) as f32;
        }
    }
    t
}

#[test]
fn mangled_inputs_give_errors_not_panics() {
    let mut rng = Rng::new(seed("conformance/mangled"));
    for case in Op::all_cases(&mut rng.clone()).unwrap() {
        let facts: Vec<TensorFact> = case
            .inputs
            .iter()
            .map(|t| TensorFact::new(t.dtype(), t.dims()))
            .collect();
        for variant in mangle(&facts) {
            let refs: Vec<&TensorFact> = variant.iter().collect();
            let shapes: Vec<_> = variant.iter().map(|f| (f.dtype, f.shape.clone())).collect();
            let id = format!("{}: {shapes:?}", case.name);
            let inferred = case.op.infer(&refs);
            case.op.flops(&refs);
            // Whatever infer accepts, eval_ref must run and produce the inferred shapes.
            if let Ok(inferred) = inferred {
                let tensors: Vec<Tensor> = variant.iter().map(|f| tensor_of(&mut rng, f)).collect();
                let inputs: Vec<&Tensor> = tensors.iter().collect();
                let outputs = case
                    .op
                    .eval_ref(&inputs)
                    .unwrap_or_else(|e| panic!("{id}: infer accepted, eval_ref failed: {e}"));
                assert_eq!(inferred.len(), outputs.len(), "{id}: output count");
                for (f, t) in inferred.iter().zip(&outputs) {
                    assert_eq!(f.shape, t.dims(), "{id}: output shape");
                    assert_eq!(f.dtype, t.dtype(), "{id}: output dtype");
                }
            }
        }
    }
}

/// The cross-backend suite `spore conformance` runs: every op's cases on the reference, the
/// tuned CPU kernels at 1 and 2 threads, and the GPU, each within its tolerance.
#[test]
fn every_op_agrees_on_every_backend() {
    use spore::conformance::{self, Backend, Status};
    let mut backends = vec![
        Backend::Reference,
        Backend::Cpu { threads: 1 },
        Backend::Cpu { threads: 2 },
    ];
    if let Some(g) = crate::common::gpu("conformance/backends") {
        backends.push(Backend::Gpu(g));
    }
    let rows = conformance::run(&backends, seed("conformance/backends")).unwrap();
    println!("{}", conformance::table(&rows));
    let failed: Vec<_> = rows.iter().filter(|r| r.status == Status::Fail).collect();
    assert!(failed.is_empty(), "failing rows: {failed:#?}");
    // The reference and the CPU backends cover every op.
    for r in &rows {
        if !r.backend.starts_with("gpu") {
            assert_eq!(r.status, Status::Pass, "{r:?}");
        }
    }
}
