//! The GPU smoke path: open whatever adapter exists, run the bias_add WGSL kernel on fresh
//! random data of ragged sizes, read back, compare with the reference kernel.

use crate::common::{gpu, rel_l2, seed};
use spore::backend::gpu::kernels::bias_add;
use spore::kernels_cpu::reference::bias_add as reference;
use spore::kernels_cpu::rng::Rng;

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-2.0, 2.0) as f32).collect()
}

#[test]
fn bias_add_matches_reference_f32() {
    let Some(g) = gpu("bias_add/random/gpu-f32") else {
        return;
    };
    let mut rng = Rng::new(seed("bias_add/random/gpu-f32"));
    // Ragged sizes: not multiples of the workgroup or of 4; one channel; one row.
    for (rows, channels) in [(1, 1), (7, 3), (33, 5), (1, 257), (300, 17)] {
        let x = random(&mut rng, rows * channels);
        let b = random(&mut rng, channels);
        let got = bias_add::run(g, &x, &b).unwrap();
        let mut want = vec![0f32; x.len()];
        reference::bias_add(
            reference::BiasAddParams { rows, channels },
            &x,
            &b,
            &mut want,
        )
        .unwrap();
        let err = rel_l2(&got, &want);
        assert!(err <= 1e-6, "bias_add {rows}x{channels}: rel err {err:e}");
    }
}

#[test]
fn bias_add_matches_reference_f16() {
    let Some(g) = gpu("bias_add/random/gpu-f16") else {
        return;
    };
    if !g.has_f16() {
        println!("bias_add/random/gpu-f16: adapter has no SHADER_F16; f32 path tested only");
        return;
    }
    let mut rng = Rng::new(seed("bias_add/random/gpu-f16"));
    let (rows, channels) = (19, 6);
    let x = random(&mut rng, rows * channels);
    let b = random(&mut rng, channels);
    let xh: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
    let bh: Vec<half::f16> = b.iter().map(|&v| half::f16::from_f32(v)).collect();
    let got: Vec<f32> = bias_add::run(g, &xh, &bh)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let xr: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    let br: Vec<f32> = bh.iter().map(|v| v.to_f32()).collect();
    let mut want = vec![0f32; x.len()];
    reference::bias_add(
        reference::BiasAddParams { rows, channels },
        &xr,
        &br,
        &mut want,
    )
    .unwrap();
    let err = rel_l2(&got, &want);
    assert!(
        err <= 1e-2 && err.is_finite(),
        "f16 bias_add rel err {err:e}"
    );
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let Some(g) = gpu("bias_add/errors/gpu") else {
        return;
    };
    assert!(bias_add::run(g, &[1.0f32, 2.0, 3.0], &[1.0, 2.0]).is_err());
    assert!(bias_add::run::<f32>(g, &[1.0], &[]).is_err());
    // An unknown pipeline is an error, and the context stays usable afterwards.
    assert!(g.pipeline("no_such_shader", "f32", &[]).is_err());
    // A wrong override name is a wgpu validation error, captured rather than panicking.
    let e = g
        .pipeline("bias_add", "f32", &[("NOT_AN_OVERRIDE", 1.0)])
        .unwrap_err();
    println!("captured: {e}");
    let ok = bias_add::run(g, &[1.0f32, 2.0], &[0.5, 0.25]).unwrap();
    assert_eq!(ok, vec![1.5, 2.25]);
    g.check_health().unwrap();
}

#[test]
fn validation_errors_and_oversized_allocations_are_errors() {
    let Some(g) = gpu("gpu/errors/validation_and_oom") else {
        return;
    };
    // Oversized: past the adapter's buffer limits, refused before wgpu sees it.
    let huge = g.adapter().max_buffer_size.saturating_add(4);
    let e = g.poisoned("huge", huge).unwrap_err();
    println!("oversized poisoned buffer: {e}");
    assert!(g.acquire("huge", huge).is_err());
    // Oversized for wgpu itself: a request wgpu (not our size check) must refuse.
    let e = g
        .scoped(|| {
            g.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("too_big"),
                size: huge.next_multiple_of(4),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })
        .unwrap_err();
    println!("oversized wgpu buffer: {e}");
    // A validation error inside wgpu: binding a uniform-only buffer where the shader wants
    // storage (bias_add's binding 0), and too few bindings.
    let pipeline = g.pipeline("bias_add", "f32", &[("WG", 256.0)]).unwrap();
    let x = g.upload("x", &[0u8; 16]).unwrap();
    let uniform = g.uniform("params", &[0u32; 4]).unwrap();
    let mut rec = g.recorder();
    let e = rec
        .dispatch(&pipeline, &[&uniform, &x, &x, &uniform], [1, 1, 1])
        .unwrap_err();
    println!("wrong buffer usage: {e}");
    let e = rec.dispatch(&pipeline, &[&x], [1, 1, 1]).unwrap_err();
    println!("missing bindings: {e}");
    drop(rec);
    // The context is still healthy and usable afterwards.
    g.check_health().unwrap();
    let ok = bias_add::run(g, &[1.0f32, 2.0], &[0.5, 0.25]).unwrap();
    assert_eq!(ok, vec![1.5, 2.25]);
}
