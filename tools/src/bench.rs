//! `spore bench cpu`: our tuned CPU kernels on exactly the workloads (names, shapes, FLOP
//! formulas, timing method) of `../shared/peers`, so the two JSONL streams can be joined; with
//! `--peers FILE` it prints the side-by-side table (ours, the best peer, the ratio) that
//! `benches/RESULTS.md` records.
//!
//! Timing matches `peers/py/common.py`: warm up for >= 0.3 s and >= 3 calls, then time each
//! call alone until >= 10 calls and >= 1.5 s; report the median.

use spore::kernels_cpu as k;
use spore::kernels_cpu::reference::conv2d::Conv2dParams;
use spore::kernels_cpu::reference::window::Padding2d;
use spore::kernels_cpu::rng::Rng;
use spore::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One measurement, in the peers' JSONL schema.
#[derive(Debug, Clone)]
pub struct Record {
    /// Workload name, identical to the peers' (`sgemm 1024^3`, `conv3x3_b1_64to64_56 fwd`).
    pub workload: String,
    /// `spore 0.1.0 (<kernel>)`.
    pub peer: String,
    /// Threads.
    pub threads: usize,
    /// Median seconds per call.
    pub median_s: f64,
    /// Fastest call, seconds.
    pub min_s: f64,
    /// Timed calls.
    pub runs: usize,
    /// Flops per call (None for memory-bound workloads).
    pub flops: Option<f64>,
    /// Free text (GB/s for memory-bound workloads).
    pub note: String,
}

impl Record {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.workload,
            "peer": self.peer,
            "threads": self.threads,
            "median_ms": self.median_s * 1e3,
            "min_ms": self.min_s * 1e3,
            "runs": self.runs,
            "gflops": self.flops.map(|f| f / self.median_s * 1e-9),
            "note": self.note,
        })
    }
}

/// Times `f` the way the peers do; returns (median, min, runs).
pub fn time(mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64, usize)> {
    let t0 = Instant::now();
    f()?;
    // Workloads of seconds per run (a large model on the software GPU) get one warm-up and
    // three timed runs instead of 3 + 10, so a sitting stays minutes long.
    let slow = t0.elapsed() > Duration::from_secs(2);
    let (warmups, min_runs) = if slow { (1, 3) } else { (3, 10) };
    let mut w = 1;
    while w < warmups || t0.elapsed() < Duration::from_millis(300) {
        f()?;
        w += 1;
    }
    let mut times = Vec::new();
    let t1 = Instant::now();
    while times.len() < min_runs
        || (t1.elapsed() < Duration::from_millis(1500) && times.len() < 2000)
    {
        let s = Instant::now();
        f()?;
        times.push(s.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    };
    Ok((median, times[0], n))
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
}

/// A convolution workload of the peers' `CONVS` table.
struct ConvLoad {
    name: &'static str,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
}

const CONVS: [ConvLoad; 5] = [
    ConvLoad {
        name: "conv3x3_b1_64to64_56",
        cin: 64,
        cout: 64,
        hw: 56,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 1,
    },
    ConvLoad {
        name: "conv3x3s2_b1_3to32_224_stem",
        cin: 3,
        cout: 32,
        hw: 224,
        k: 3,
        stride: 2,
        pad: 1,
        groups: 1,
    },
    ConvLoad {
        name: "dw3x3_b1_144_56",
        cin: 144,
        cout: 144,
        hw: 56,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 144,
    },
    ConvLoad {
        name: "dw3x3_b1_384_14",
        cin: 384,
        cout: 384,
        hw: 14,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 384,
    },
    ConvLoad {
        name: "pw1x1_b1_144to24_56",
        cin: 144,
        cout: 24,
        hw: 56,
        k: 1,
        stride: 1,
        pad: 0,
        groups: 1,
    },
];

impl ConvLoad {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            n: 1,
            h: self.hw,
            w: self.hw,
            c_in: self.cin,
            c_out: self.cout,
            kh: self.k,
            kw: self.k,
            stride_h: self.stride,
            stride_w: self.stride,
            dilation_h: 1,
            dilation_w: 1,
            padding: Padding2d::new(self.pad, self.pad, self.pad, self.pad),
            groups: self.groups,
        }
    }

    /// `2 * MACs` of the forward pass, bias excluded (the peers' `conv_flops`).
    fn flops(&self) -> f64 {
        let ho = (self.hw + 2 * self.pad - self.k) / self.stride + 1;
        2.0 * (self.cout * ho * ho * (self.cin / self.groups) * self.k * self.k) as f64
    }
}

/// What to run.
pub struct Options {
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Only workloads whose name contains this.
    pub only: Option<String>,
    /// Append JSONL records here.
    pub out: Option<PathBuf>,
    /// Peer JSONL files to compare against.
    pub peers: Vec<PathBuf>,
}

/// Prints `r` as a JSONL line and appends it to `out` when given.
pub fn emit(r: &Record, out: Option<&std::path::Path>) -> Result<()> {
    let line = r.json().to_string();
    println!("{line}");
    if let Some(out) = out {
        let io = |source| Error::Io {
            path: out.display().to_string(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .map_err(io)?;
        writeln!(f, "{line}").map_err(io)?;
    }
    Ok(())
}

/// `spore bench cpu`.
pub fn cpu(opts: &Options) -> Result<()> {
    let table = k::kernels();
    let peer = |kernel: &str| format!("spore {} ({kernel})", env!("CARGO_PKG_VERSION"));
    let want = |name: &str| opts.only.as_deref().is_none_or(|o| name.contains(o));
    let mut rng = Rng::new(0x5eed);
    let mut records = Vec::new();
    let mut emit = |r: Record| -> Result<()> {
        emit(&r, opts.out.as_deref())?;
        records.push(r);
        Ok(())
    };
    for &threads in &opts.threads {
        for n in [256usize, 512, 1024, 2048] {
            let name = format!("sgemm {n}^3");
            if !want(&name) {
                continue;
            }
            let a = random(&mut rng, n * n);
            let b = random(&mut rng, n * n);
            let mut c = vec![0f32; n * n];
            let mut p = k::SgemmParams::new(n, n, n);
            p.threads = threads;
            let (med, mn, runs) = time(|| Ok(k::sgemm(&p, &a, &b, None, &mut c)?))?;
            emit(Record {
                workload: name,
                peer: peer(table.sgemm_impl),
                threads,
                median_s: med,
                min_s: mn,
                runs,
                flops: Some(2.0 * (n * n * n) as f64),
                note: String::new(),
            })?;
        }
        for load in &CONVS {
            let p = load.params();
            let x = random(&mut rng, p.x_len()?);
            let mut y = vec![0f32; p.y_len()?];
            let dy = random(&mut rng, y.len());
            let mut dx = vec![0f32; x.len()];
            let fwd = format!("{} fwd", load.name);
            let fb = format!("{} fwd+bwd", load.name);
            let mut rec = |workload: String, kernel: &str, t: (f64, f64, usize), flops: f64| {
                emit(Record {
                    workload,
                    peer: peer(kernel),
                    threads,
                    median_s: t.0,
                    min_s: t.1,
                    runs: t.2,
                    flops: Some(flops),
                    note: String::new(),
                })
            };
            if load.groups == load.cin && load.cin == load.cout {
                // Depthwise: the direct kernels, not a grouped GEMM.
                let dp = k::reference::depthwise_conv2d::DepthwiseConv2dParams {
                    n: 1,
                    h: load.hw,
                    w: load.hw,
                    c_in: load.cin,
                    multiplier: 1,
                    kh: load.k,
                    kw: load.k,
                    stride_h: load.stride,
                    stride_w: load.stride,
                    dilation_h: 1,
                    dilation_w: 1,
                    padding: p.padding,
                };
                let w = random(&mut rng, dp.w_len()?);
                let mut dw = vec![0f32; w.len()];
                let run_fwd = |y: &mut [f32]| {
                    k::depthwise_conv2d::depthwise_conv2d_fast(&dp, &x, &w, None, None, threads, y)
                };
                if want(&fwd) {
                    let t = time(|| Ok(run_fwd(&mut y)?))?;
                    rec(fwd, table.depthwise_conv2d_impl, t, load.flops())?;
                }
                if want(&fb) {
                    let t = time(|| {
                        run_fwd(&mut y)?;
                        k::depthwise_conv2d::depthwise_conv2d_grad_input_fast(
                            &dp, &w, &dy, threads, &mut dx,
                        )?;
                        k::depthwise_conv2d::depthwise_conv2d_grad_weight_fast(
                            &dp, &x, &dy, threads, &mut dw, None,
                        )?;
                        Ok(())
                    })?;
                    rec(fb, table.depthwise_conv2d_impl, t, 3.0 * load.flops())?;
                }
                continue;
            }
            let w = random(&mut rng, p.w_len()?);
            let mut dw = vec![0f32; w.len()];
            // Weights packed once, as a session does at load time.
            let plan = k::conv2d::Conv2dPlan::new(&p, &w, None, None)?;
            let kernel = format!("{} ({})", table.conv2d_impl, plan.algorithm());
            if want(&fwd) {
                let t = time(|| Ok(plan.run(&x, threads, &mut y)?))?;
                rec(fwd, &kernel, t, load.flops())?;
            }
            if want(&fb) {
                let t = time(|| {
                    plan.run(&x, threads, &mut y)?;
                    k::conv2d_grad::conv2d_grad_input_fast(&p, &dy, &w, threads, &mut dx)?;
                    k::conv2d_grad::conv2d_grad_weight_fast(&p, &x, &dy, threads, &mut dw, None)?;
                    Ok(())
                })?;
                rec(fb, &kernel, t, 3.0 * load.flops())?;
            }
        }
        // Batch norm on 32x64x28x28 (NHWC here), the peers' memory-bound workload.
        let (rows, ch) = (32 * 28 * 28, 64);
        let x = random(&mut rng, rows * ch);
        let dy = random(&mut rng, rows * ch);
        let gamma = random(&mut rng, ch);
        let beta = random(&mut rng, ch);
        let mean = random(&mut rng, ch);
        let var: Vec<f32> = (0..ch).map(|_| rng.uniform(0.5, 2.0) as f32).collect();
        let (mut rm, mut rv) = (mean.clone(), var.clone());
        let mut y = vec![0f32; rows * ch];
        let mut dx = vec![0f32; rows * ch];
        let (mut sm, mut si, mut dg, mut db) = (
            vec![0f32; ch],
            vec![0f32; ch],
            vec![0f32; ch],
            vec![0f32; ch],
        );
        let bp = k::reference::batch_norm::BatchNormParams {
            rows,
            channels: ch,
            eps: 1e-5,
        };
        let tp = k::reference::batch_norm::BatchNormTrainParams {
            rows,
            channels: ch,
            eps: 1e-5,
            momentum: 0.1,
        };
        let gb = 2.0 * (rows * ch * 4) as f64 / 1e9;
        for mode in ["eval fwd", "train fwd", "train fwd+bwd"] {
            let name = format!("batchnorm2d 32x64x28x28 {mode}");
            if !want(&name) {
                continue;
            }
            let (med, mn, runs) = time(|| {
                match mode {
                    "eval fwd" => k::batch_norm::batch_norm_inference(
                        bp, &x, &mean, &var, &gamma, &beta, None, threads, &mut y,
                    )?,
                    _ => {
                        k::batch_norm::batch_norm_train(
                            tp, &x, &gamma, &beta, &mut rm, &mut rv, &mut y, &mut sm, &mut si,
                            threads,
                        )?;
                        if mode == "train fwd+bwd" {
                            k::batch_norm::batch_norm_grad(
                                tp, &x, &dy, &gamma, &sm, &si, &mut dx, &mut dg, &mut db, threads,
                            )?;
                        }
                    }
                }
                Ok(())
            })?;
            emit(Record {
                workload: name,
                peer: peer(table.batch_norm_impl),
                threads,
                median_s: med,
                min_s: mn,
                runs,
                flops: None,
                note: format!("{:.1} GB/s (2 x tensor bytes / time)", gb / med),
            })?;
        }
    }
    if !opts.peers.is_empty() {
        print!("{}", side_by_side(&records, &opts.peers)?);
    }
    Ok(())
}

/// The markdown table: per workload and thread count, our GFLOP/s (or ms), the best peer's,
/// and the ratio (> 1 means we are faster).
pub fn side_by_side(ours: &[Record], peer_files: &[PathBuf]) -> Result<String> {
    // (workload, threads) -> best (peer, median_s, gflops)
    let mut best: BTreeMap<(String, usize), (String, f64, Option<f64>)> = BTreeMap::new();
    for path in peer_files {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Format {
                format: "peer results JSONL",
                reason: format!("{}: {e}", path.display()),
            })?;
            let (Some(w), Some(p), Some(t), Some(ms)) = (
                v["workload"].as_str(),
                v["peer"].as_str(),
                v["threads"].as_u64(),
                v["median_ms"].as_f64(),
            ) else {
                continue;
            };
            let key = (w.to_string(), t as usize);
            let med = ms * 1e-3;
            if best.get(&key).is_none_or(|b| med < b.1) {
                best.insert(key, (p.to_string(), med, v["gflops"].as_f64()));
            }
        }
    }
    let mut s = String::from(
        "| workload | threads | Spore ms | Spore GFLOP/s | best peer | peer ms | peer GFLOP/s | ratio |\n|---|---:|---:|---:|---|---:|---:|---:|\n",
    );
    for r in ours {
        let gf = r
            .flops
            .map_or("-".to_string(), |f| format!("{:.1}", f / r.median_s * 1e-9));
        match best.get(&(r.workload.clone(), r.threads)) {
            Some((p, med, pg)) => s.push_str(&format!(
                "| {} | {} | {:.3} | {} | {} | {:.3} | {} | {:.2}x |\n",
                r.workload,
                r.threads,
                r.median_s * 1e3,
                gf,
                p,
                med * 1e3,
                pg.map_or("-".to_string(), |g| format!("{g:.1}")),
                med / r.median_s
            )),
            None => s.push_str(&format!(
                "| {} | {} | {:.3} | {} | (none) | - | - | - |\n",
                r.workload,
                r.threads,
                r.median_s * 1e3,
                gf
            )),
        }
    }
    Ok(s)
}
