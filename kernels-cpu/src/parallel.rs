//! The worker pool every multi-threaded kernel runs on: rayon thread pools sized by the caller
//! (the Context's CPU thread count), built once per size and reused, so a kernel call pays a
//! queue push per task instead of a thread spawn (~20-50 us each on this VM).
//!
//! Kernels split their output into contiguous chunks ([`par_chunks_mut`]) or run a fixed
//! number of independent tasks ([`par_map`]); with `threads <= 1` both run inline on the
//! calling thread, so small problems never touch the pool. With `threads = t > 1` the calling
//! thread runs the first chunk (task) itself and a pool of `t - 1` helpers the rest, so a
//! call wakes one thread fewer and its first chunk runs where the previous layer's output is
//! still in cache. Measured 2026-11-26 (Zen 4, 2 threads, `spore bench models`, ~60 split
//! calls per MobileNetV2 run, best of 2 x 60 runs): MobileNetV2 224 b1 5.67-5.72 ms with the
//! caller idle, 5.26-5.33 ms with it working; ResNet-18 b1 16.9 -> 16.7 ms. Results come back in task order,
//! so a reduction over them is deterministic for a given thread count.

use crate::error::{KernelError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Most threads a caller may ask for (requests above are clamped).
pub const MAX_THREADS: usize = 256;

/// The pool with exactly `threads` workers, built on first use.
fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while inserting; the map is intact.
    let mut map = pools.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("spore-cpu-{i}"))
        .build()
        .map_err(|e| KernelError::Param {
            kernel: "parallel",
            param: "threads",
            reason: format!("cannot start {threads} worker threads: {e}"),
        })?;
    let p = Arc::new(p);
    map.insert(threads, p.clone());
    Ok(p)
}

/// Runs `f(t)` for `t in 0..tasks` on a pool of `threads` workers (inline when `threads <= 1`
/// or `tasks <= 1`) and returns the results in task order.
pub fn par_map<R: Send>(
    threads: usize,
    tasks: usize,
    f: impl Fn(usize) -> R + Sync,
) -> Result<Vec<R>> {
    let threads = threads.clamp(1, MAX_THREADS);
    if threads == 1 || tasks <= 1 {
        return Ok((0..tasks).map(f).collect());
    }
    let pool = pool(threads - 1)?;
    let mut out: Vec<Option<R>> = (0..tasks).map(|_| None).collect();
    pool.in_place_scope(|s| {
        let mut slots = out.iter_mut().enumerate();
        let mine = slots.next();
        for (t, slot) in slots {
            let f = &f;
            s.spawn(move |_| *slot = Some(f(t)));
        }
        // The calling thread takes task 0 while the helpers take the rest.
        if let Some((t, slot)) = mine {
            *slot = Some(f(t));
        }
    });
    // Every spawned task ran to completion before `scope` returned (a panic would have
    // propagated), so every slot is filled.
    out.into_iter()
        .map(|r| {
            r.ok_or_else(|| KernelError::Param {
                kernel: "parallel",
                param: "threads",
                reason: "a worker task did not finish".into(),
            })
        })
        .collect()
}

/// Splits `out` into at most `threads` contiguous chunks of whole `unit`-element items (the
/// last one shorter) and runs `f(first_item, chunk)` on each in parallel; the first error wins.
/// `unit` is, say, the channels of one output pixel, so a chunk never splits a pixel.
pub fn par_chunks_mut<T: Send>(
    out: &mut [T],
    unit: usize,
    threads: usize,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let unit = unit.max(1);
    let items = out.len() / unit;
    let threads = threads.clamp(1, MAX_THREADS).min(items.max(1));
    if threads == 1 {
        return f(0, out);
    }
    let per = items.div_ceil(threads);
    let pool = pool(threads - 1)?;
    let mut results: Vec<Result<()>> = Vec::new();
    pool.in_place_scope(|s| {
        let chunks: Vec<(usize, &mut [T])> = out
            .chunks_mut(per * unit)
            .enumerate()
            .map(|(t, c)| (t * per, c))
            .collect();
        results = chunks.iter().map(|_| Ok(())).collect();
        let mut jobs = chunks.into_iter().zip(results.iter_mut());
        let mine = jobs.next();
        for ((first, chunk), slot) in jobs {
            let f = &f;
            s.spawn(move |_| *slot = f(first, chunk));
        }
        // The calling thread takes the first chunk while the helpers take the rest.
        if let Some(((first, chunk), slot)) = mine {
            *slot = f(first, chunk);
        }
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_task_order_on_any_thread_count() {
        for threads in [0, 1, 2, 3] {
            let v = par_map(threads, 7, |t| t * t).unwrap();
            assert_eq!(v, vec![0, 1, 4, 9, 16, 25, 36]);
        }
        assert!(par_map(2, 0, |t| t).unwrap().is_empty());
    }

    #[test]
    fn chunks_cover_every_item_once_and_keep_units_whole() {
        for threads in [1, 2, 3, 5] {
            let mut out = vec![0usize; 3 * 11];
            par_chunks_mut(&mut out, 3, threads, |first, chunk| {
                assert_eq!(chunk.len() % 3, 0);
                for (i, px) in chunk.chunks_exact_mut(3).enumerate() {
                    px.iter_mut().for_each(|v| *v += first + i);
                }
                Ok(())
            })
            .unwrap();
            let want: Vec<usize> = (0..11).flat_map(|i| [i, i, i]).collect();
            assert_eq!(out, want, "threads {threads}");
        }
    }

    #[test]
    fn first_error_is_returned() {
        let mut out = vec![0.0f32; 16];
        let r = par_chunks_mut(&mut out, 1, 2, |first, _| {
            if first > 0 {
                Err(KernelError::Param {
                    kernel: "t",
                    param: "p",
                    reason: "boom".into(),
                })
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
    }
}
