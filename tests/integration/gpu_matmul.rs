//! GPU matmul kernels (tiled, small-M, split-K, naive) against the f64 reference on fresh
//! random data: ragged shapes, batches, every transpose combination, shared B, bias on/off and
//! the fused activations. Plus an `#[ignore]`d GFLOP/s measurement.

use crate::common::{gpu, rel_l2, seed};
use spore::backend::gpu::GpuContext;
use spore::backend::gpu::kernels::matmul::{self, CANDIDATES, Matmul, Tile, Variant};
use spore::kernels_cpu::reference::activation::Activation;
use spore::kernels_cpu::reference::matmul::{MatmulParams, matmul as ref_matmul};
use spore::kernels_cpu::rng::Rng;

/// Every activation the epilogue knows, `None` first.
pub const ACTS: [Option<Activation>; 10] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Relu6),
    Some(Activation::LeakyRelu(0.1)),
    Some(Activation::Sigmoid),
    Some(Activation::Tanh),
    Some(Activation::HardSwish),
    Some(Activation::HardSigmoid),
    Some(Activation::Gelu),
    Some(Activation::GeluTanh),
];

pub fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// The f64 reference with bias and activation applied, rounded to f32.
fn reference(
    p: MatmulParams,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    act: Option<Activation>,
) -> Vec<f32> {
    let a64: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    let mut c = vec![0f64; p.batch * p.m * p.n];
    ref_matmul(p, &a64, &b64, &mut c).unwrap();
    c.iter()
        .enumerate()
        .map(|(i, &v)| {
            let v = v + bias.map_or(0.0, |bb| f64::from(bb[i % p.n]));
            act.map_or(v, |f| f.apply(v)) as f32
        })
        .collect()
}

/// Runs one configuration on the GPU and checks it against the reference.
fn check(
    g: &GpuContext,
    rng: &mut Rng,
    p: MatmulParams,
    with_bias: bool,
    act: Option<Activation>,
    variant: Variant,
) {
    let (na, nb, _) = p.validate("test").unwrap();
    let a = random(rng, na);
    let b = random(rng, nb);
    let bias = with_bias.then(|| random(rng, p.n));
    let mm = Matmul { p, act, variant };
    let got = matmul::run(g, &a, &b, bias.as_deref(), &mm).unwrap();
    let want = reference(p, &a, &b, bias.as_deref(), act);
    let err = rel_l2(&got, &want);
    assert!(
        err <= 1e-4,
        "{variant:?} {p:?} bias={with_bias} {act:?}: rel L2 {err:e}"
    );
}

/// Ragged `(batch, m, n, k)` shapes: 1, primes, just past multiples of 4, 16, 32 and 64.
const SHAPES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1),
    (2, 3, 17, 33),
    (3, 65, 33, 17),
    (1, 70, 65, 3),
    (2, 17, 3, 65),
    (1, 66, 69, 67),
];

/// Every shape x every transpose combination, alternating shared B, bias and activation.
fn sweep(g: &GpuContext, rng: &mut Rng, shapes: &[(usize, usize, usize, usize)], variant: Variant) {
    let mut case = 0;
    for &(batch, m, n, k) in shapes {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let shared = case % 3 == 1 || batch == 1;
            let p = MatmulParams {
                batch,
                m,
                n,
                k,
                transpose_a: ta,
                transpose_b: tb,
                b_batch: if shared { 1 } else { batch },
            };
            check(g, rng, p, case % 2 == 0, ACTS[case % ACTS.len()], variant);
            case += 1;
        }
    }
}

#[test]
fn matmul_tiled_matches_reference() {
    let name = "matmul/tiled/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for &tile in &CANDIDATES[..2] {
        println!("{name}: tile {tile:?}");
        sweep(g, &mut rng, &SHAPES, Variant::Tiled(tile));
    }
    // Every activation, with and without bias, on one multi-tile batched shape.
    for (i, act) in ACTS.into_iter().enumerate() {
        let p = MatmulParams {
            batch: 2,
            b_batch: 2,
            ..MatmulParams::new(67, 70, 21)
        };
        check(
            g,
            &mut rng,
            p,
            i % 2 == 1,
            act,
            Variant::Tiled(Tile::DEFAULT),
        );
    }
}

#[test]
fn matmul_rows_matches_reference() {
    let name = "matmul/rows/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for &wg in &matmul::ROWS_CANDIDATES[..2] {
        println!("{name}: wg {wg}");
        sweep(g, &mut rng, &SHAPES, Variant::Rows { wg });
    }
    // Every activation, with and without bias, on a batched shape wider than one workgroup
    // and taller than one 16-row block.
    for (i, act) in ACTS.into_iter().enumerate() {
        let p = MatmulParams {
            batch: 2,
            b_batch: 2,
            ..MatmulParams::new(37, 70, 21)
        };
        check(g, &mut rng, p, i % 2 == 1, act, Variant::Rows { wg: 32 });
    }
}

#[test]
fn matmul_small_matches_reference() {
    let name = "matmul/small/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    let shapes = [(1, 1, 33, 300), (2, 2, 17, 65), (3, 3, 7, 1), (1, 1, 70, 3)];
    for wg in [64, 32] {
        println!("{name}: wg {wg}");
        sweep(g, &mut rng, &shapes, Variant::Small { wg });
    }
}

#[test]
fn matmul_splitk_matches_reference() {
    let name = "matmul/splitk/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    let shapes = [(1, 17, 13, 300), (2, 33, 65, 301), (3, 3, 5, 297)];
    for (tile, splits) in [(Tile::DEFAULT, 2), (CANDIDATES[1], 3), (Tile::DEFAULT, 16)] {
        // 16 splits of k ~ 300 leave the last slices empty: they must contribute zeros.
        println!("{name}: tile {tile:?}, {splits} splits");
        sweep(g, &mut rng, &shapes, Variant::SplitK { tile, splits });
    }
}

#[test]
fn matmul_naive_matches_reference() {
    let name = "matmul/naive/gpu-f32";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    sweep(g, &mut rng, &SHAPES[..4], Variant::Naive);
}

#[test]
fn matmul_chosen_variant_and_f16() {
    let name = "matmul/auto+f16/gpu";
    let Some(g) = gpu(name) else { return };
    let mut rng = Rng::new(seed(name));
    for (m, n, k) in [(1, 40, 50), (9, 9, 1100), (40, 30, 20)] {
        let p = MatmulParams::new(m, n, k);
        let v = Variant::choose(&p);
        println!("{name}: {m}x{n}x{k} -> {v:?}");
        check(g, &mut rng, p, true, Some(Activation::Relu), v);
    }
    if !g.has_f16() {
        println!("{name}: no SHADER_F16; f16 skipped");
        return;
    }
    let p = MatmulParams::new(19, 23, 37);
    let a = random(&mut rng, 19 * 37);
    let b = random(&mut rng, 37 * 23);
    let ah: Vec<half::f16> = a.iter().map(|&v| half::f16::from_f32(v)).collect();
    let bh: Vec<half::f16> = b.iter().map(|&v| half::f16::from_f32(v)).collect();
    let got: Vec<f32> = matmul::run(g, &ah, &bh, None, &Matmul::new(p))
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let ar: Vec<f32> = ah.iter().map(|v| v.to_f32()).collect();
    let br: Vec<f32> = bh.iter().map(|v| v.to_f32()).collect();
    let err = rel_l2(&got, &reference(p, &ar, &br, None, None));
    assert!(err <= 1e-2, "f16 matmul rel L2 {err:e}");
}

#[test]
fn matmul_bad_arguments_are_errors() {
    let Some(g) = gpu("matmul/errors/gpu") else {
        return;
    };
    let p = MatmulParams::new(2, 3, 4);
    let a = vec![1f32; 8];
    let b = vec![1f32; 12];
    let ok = Matmul::new(p);
    assert_eq!(matmul::run(g, &a, &b, None, &ok).unwrap(), vec![4.0; 6]);
    assert!(matmul::run(g, &a[..7], &b, None, &ok).is_err());
    assert!(matmul::run(g, &a, &b[..11], None, &ok).is_err());
    assert!(matmul::run(g, &a, &b, Some(&[1.0; 2]), &ok).is_err());
    let bad_tile = Matmul {
        variant: Variant::Tiled(Tile {
            bk: 6,
            ..Tile::DEFAULT
        }),
        ..ok
    };
    assert!(matmul::run(g, &a, &b, None, &bad_tile).is_err());
    let bad_split = Matmul {
        variant: Variant::SplitK {
            tile: Tile::DEFAULT,
            splits: 0,
        },
        ..ok
    };
    assert!(matmul::run(g, &a, &b, None, &bad_split).is_err());
    let bad_batch = Matmul {
        p: MatmulParams {
            batch: 3,
            b_batch: 2,
            ..p
        },
        ..ok
    };
    assert!(matmul::run(g, &a, &b, None, &bad_batch).is_err());
    let nan_slope = Matmul {
        act: Some(Activation::LeakyRelu(f64::NAN)),
        ..ok
    };
    assert!(matmul::run(g, &a, &b, None, &nan_slope).is_err());
    g.check_health().unwrap();
}

/// Seconds per call of `mm` on buffers already on the GPU (best of `reps`, after a warm-up).
pub fn time_matmul(g: &GpuContext, mm: &Matmul, reps: usize) -> f64 {
    let (na, nb, nc) = mm.validate().unwrap();
    let mut rng = Rng::new(1);
    let ab = g
        .upload("a", bytemuck::cast_slice(&random(&mut rng, na)))
        .unwrap();
    let bb = g
        .upload("b", bytemuck::cast_slice(&random(&mut rng, nb)))
        .unwrap();
    let cb = g.poisoned("c", (nc * 4) as u64).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..=reps {
        let t = std::time::Instant::now();
        let mut rec = g.recorder();
        matmul::record::<f32>(g, &mut rec, &ab, &bb, None, &cb, mm).unwrap();
        rec.submit().unwrap();
        g.sync().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

#[test]
#[ignore = "timing, not a test: cargo test --release --test integration gpu_matmul_gflops -- --ignored --nocapture"]
fn gpu_matmul_gflops() {
    let Some(g) = gpu("matmul/gflops") else {
        return;
    };
    for n in [256usize, 512] {
        let p = MatmulParams::new(n, n, n);
        let flops = 2.0 * (n * n * n) as f64;
        let naive = time_matmul(
            g,
            &Matmul {
                p,
                act: None,
                variant: Variant::Naive,
            },
            2,
        );
        println!(
            "matmul {n}^3 naive: {:.3} GFLOP/s ({:.1} ms)",
            flops / naive * 1e-9,
            naive * 1e3
        );
        for &tile in CANDIDATES {
            let t = time_matmul(
                g,
                &Matmul {
                    p,
                    act: None,
                    variant: Variant::Tiled(tile),
                },
                2,
            );
            println!(
                "matmul {n}^3 tiled {tile:?}: {:.3} GFLOP/s ({:.1} ms), {:.2}x naive",
                flops / t * 1e-9,
                t * 1e3,
                naive / t
            );
        }
    }
}
