//! Op conformance over every op's seeded `cases()`: inference agrees with what `eval_ref`
//! produces, attributes round-trip, outputs are finite. Backends join as they land
//! (test ids read `<op>/<case>/<device>`).

use crate::common::seed;
use spore::graph::TensorFact;
use spore::kernels_cpu::rng::Rng;
use spore::ops::Op;

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
