//! Autotuning: the verifier rejects a wrong candidate and never caches it, the cache round-trips
//! through JSON and a file, stale entries are ignored, a session with a cache gives the same
//! outputs as one without, and a loaded choice really changes what the session records.

use spore::backend::gpu::GpuContext;
use spore::kernels_cpu::rng::Rng;
use spore::models::{Arch, ModelConfig};
use spore::session::{Context, CpuOptions, Device, GpuOptions, Model, Session};
use spore::tune::cache::{AdapterId, Entry, FORMAT_VERSION, TuneCache};
use spore::tune::family_hash;
use spore::tune::tuner::{self, BROKEN_LABEL, TuneOptions, Verdict};
use spore::{Error, Tensor};
use std::time::Duration;

fn gpu_context(cache: Option<&std::path::Path>) -> Context {
    let mut b = Context::builder().devices([
        Device::Gpu(GpuOptions {
            allow_software: true,
            ..Default::default()
        }),
        Device::Cpu(CpuOptions { threads: 2 }),
    ]);
    if let Some(p) = cache {
        b = b.tune_cache(p);
    }
    b.build().unwrap()
}

/// Runs `model` on `ctx` with `x`, returning the first output and the dispatches recorded.
fn run(ctx: &Context, model: &Model, x: &Tensor) -> (Vec<f32>, usize) {
    let mut s = Session::new(ctx, model).unwrap();
    let name = s.inputs()[0].0.to_string();
    *s.input_by_tensor_name(&name).unwrap() = x.clone();
    s.run().unwrap();
    let plan = s.plan();
    let dispatches = (0..plan.segments().len()).map(|i| plan.dispatches(i)).sum();
    (s.outputs().unwrap()[0].1.to_f32_vec(), dispatches)
}

fn entry(kernel: &str, choice: &str, adapter: &str) -> Entry {
    Entry {
        adapter: AdapterId {
            name: adapter.into(),
            vendor: 1,
            device: 2,
            driver: "d".into(),
            backend: "Vulkan".into(),
        },
        kernel: kernel.into(),
        dtype: "f32".into(),
        shape: vec![1, 2, 3],
        shader_hash: family_hash(kernel).unwrap_or_default(),
        choice: choice.into(),
        default_us: 10.0,
        best_us: 5.0,
    }
}

#[test]
fn cache_round_trips_and_merges() {
    let mut c = TuneCache::default();
    c.merge([
        entry("conv2d", "tile 8x8 bk16", "a"),
        entry("matmul", "rows wg64", "a"),
        entry("matmul", "rows wg64", "b"),
    ]);
    let back = TuneCache::from_json(&c.to_json().unwrap()).unwrap();
    assert_eq!(back, c);
    let dir = std::env::temp_dir().join(format!("spore-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tune.json");
    c.save(&path).unwrap();
    assert_eq!(TuneCache::load(&path).unwrap(), c);
    // Re-tuning the same adapter and key replaces the entry; other adapters stay.
    c.merge([entry("matmul", "tile 16x8 bk16", "a")]);
    assert_eq!(c.entries.len(), 3);
    assert!(
        c.entries
            .iter()
            .any(|e| e.adapter.name == "a" && e.choice == "tile 16x8 bk16")
    );
    // Not a cache: a clear error, not a panic.
    assert!(matches!(
        TuneCache::from_json("{\"format\":\"other\",\"version\":1,\"entries\":[]}"),
        Err(Error::Format { .. })
    ));
    assert!(TuneCache::from_json("[1, 2").is_err());
    assert!(matches!(
        TuneCache::load(&dir.join("missing.json")),
        Err(Error::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// The whole flow on a small MobileNetV2 (conv, depthwise, residual adds, the classifier
/// matmul), on a context of its own: tuning loads choices into its GPU's table.
#[test]
fn autotuning_end_to_end() {
    if crate::common::gpu("tune/end_to_end").is_none() {
        return;
    }
    let graph = Arch::MobileNetV2
        .build(&ModelConfig::new(32, 3, 10).width(0.25))
        .unwrap();
    let model = Model::from_graph(graph.clone());
    let mut rng = Rng::new(crate::common::seed("tune/end_to_end"));
    let x: Vec<f32> = (0..32 * 32 * 3)
        .map(|_| rng.uniform(-1.0, 1.0) as f32)
        .collect();
    let x = Tensor::from_vec(&[1, 32, 32, 3], x).unwrap();

    // Defaults.
    let plain = gpu_context(None);
    let gpu: &GpuContext = plain.gpu().unwrap();
    let (want, default_dispatches) = run(&plain, &model, &x);

    // Tune, with the self-test candidate in every instance.
    let instances = tuner::collect(&graph, gpu).unwrap();
    let kernels: Vec<&str> = instances
        .iter()
        .map(|i| i.spec.key.kernel.as_str())
        .collect();
    for k in ["conv2d", "depthwise_conv2d", "matmul", "binary"] {
        assert!(kernels.contains(&k), "no {k} instance in {kernels:?}");
    }
    let opts = TuneOptions {
        budget: Duration::from_secs(300),
        warmup: 0,
        samples: 1,
        self_test: true,
        ..TuneOptions::default()
    };
    let report = tuner::tune(gpu, &instances, &opts, &mut |_| {}).unwrap();
    println!("{}", report.table());
    assert!(
        gpu.tuned_entries().is_empty(),
        "the tuner restores the table"
    );
    for inst in &report.instances {
        let rejected: Vec<&str> = inst
            .candidates
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Rejected(_)))
            .map(|c| c.choice.as_str())
            .collect();
        assert_eq!(rejected, [BROKEN_LABEL], "{}", inst.spec.key);
        assert!(
            inst.default_us().is_some(),
            "{}: default not timed",
            inst.spec.key
        );
    }
    let entries = report.entries();
    assert_eq!(entries.len(), instances.len());
    for (e, inst) in entries.iter().zip(&report.instances) {
        assert_ne!(e.choice, BROKEN_LABEL);
        assert!(inst.spec.candidates.contains(&e.choice), "{}", e.choice);
        assert!(e.best_us <= e.default_us);
    }

    // Through a file into a new context: same outputs.
    let dir = std::env::temp_dir().join(format!("spore-tune-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tune.json");
    let mut cache = TuneCache::default();
    cache.merge(entries.clone());
    cache.save(&path).unwrap();
    let tuned = gpu_context(Some(&path));
    let tgpu = tuned.gpu().unwrap();
    assert_eq!(tgpu.tuned_entries().len(), entries.len());
    let (got, _) = run(&tuned, &model, &x);
    let err = crate::common::rel_l2(&got, &want);
    assert!(err <= 1e-4, "tuned outputs differ: {err:e}");

    // Stale entries are ignored, never trusted.
    let mut stale = cache.clone();
    stale.entries[0].shader_hash = "0000000000000000".into();
    stale.entries[1].adapter.name = "some other GPU".into();
    stale.entries[2].choice = "tile 3x3 bk7 of nonsense".into();
    tgpu.clear_tuning();
    let r = stale.apply(tgpu);
    assert_eq!(r.applied, entries.len() - 3, "{r:?}");
    assert_eq!(r.other_adapters, 1);
    assert_eq!(r.ignored.len(), 2, "{r:?}");
    assert!(tgpu.tuned(&stale.entries[0].key()).is_none());
    let old = TuneCache {
        version: FORMAT_VERSION + 1,
        ..cache.clone()
    };
    tgpu.clear_tuning();
    let r = old.apply(tgpu);
    assert_eq!((r.applied, r.ignored.len()), (0, entries.len()));
    assert!(tgpu.tuned_entries().is_empty());

    // A loaded choice is what the session records: split-K on the classifier adds a
    // reduction dispatch, with the same outputs.
    let mm = instances
        .iter()
        .find(|i| i.spec.key.kernel == "matmul")
        .unwrap();
    let split = mm
        .spec
        .candidates
        .iter()
        .find(|c| c.starts_with("split"))
        .expect("the classifier has a long K: split-K is a candidate");
    assert!(!mm.spec.candidates[0].starts_with("split"));
    tgpu.set_tuned(mm.spec.key.clone(), split.clone());
    let (got, dispatches) = run(&tuned, &model, &x);
    assert_eq!(dispatches, default_dispatches + 1);
    let err = crate::common::rel_l2(&got, &want);
    assert!(err <= 1e-4, "split-K outputs differ: {err:e}");
    std::fs::remove_dir_all(&dir).ok();
}
