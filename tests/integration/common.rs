//! Shared test fixtures: the one GPU context, seeded random data, closeness checks.

use spore::backend::gpu::{GpuContext, GpuOptions};
use std::io::Write;
use std::sync::OnceLock;

/// The GPU every GPU test shares, or `None` (after printing `skipped: no GPU adapter`) when
/// there is none. Under `SPORE_REQUIRE_GPU=1` a missing adapter fails the test instead, so CI
/// can never skip the GPU path silently.
pub fn gpu(test: &str) -> Option<&'static GpuContext> {
    static GPU: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    let ctx = GPU.get_or_init(|| {
        // Tests accept the software adapter (lavapipe): it is what CI has.
        let opts = GpuOptions {
            allow_software: true,
            ..Default::default()
        };
        let ctx = GpuContext::new(&opts).map_err(|e| e.to_string());
        // Straight to stderr, past the test harness's capture, so the CI log names the adapter.
        let line = match &ctx {
            Ok(g) => {
                let a = g.adapter();
                format!(
                    "GPU tests run on: {} ({}, {}, {})\n",
                    a.name, a.backend, a.device_type, a.driver
                )
            }
            Err(e) => format!("GPU tests: no adapter: {e}\n"),
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
        ctx
    });
    match ctx {
        Ok(g) => {
            println!(
                "{test}: GPU adapter: {} ({}, {})",
                g.adapter().name,
                g.adapter().backend,
                g.adapter().device_type
            );
            Some(g)
        }
        Err(e) => {
            if std::env::var("SPORE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: SPORE_REQUIRE_GPU=1 but no GPU adapter: {e}");
            }
            println!("{test}: skipped: no GPU adapter ({e})");
            None
        }
    }
}

/// A fresh seed (or `SPORE_TEST_SEED` to replay), printed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("SPORE_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            spore::kernels_cpu::rng::mix64(t.as_nanos() as u64)
        });
    println!("{test}: SPORE_TEST_SEED={s}");
    s
}

/// Relative L2 error of `a` against `b`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let d = f64::from(*x) - f64::from(*y);
        num += d * d;
        den += f64::from(*y) * f64::from(*y);
    }
    (num / den.max(1e-60)).sqrt()
}
