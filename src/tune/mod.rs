//! Shader autotuning: which knobs (tile, workgroup size, shader variant) each tunable GPU
//! kernel instance runs with, how they are chosen, and where the choices are kept.
//!
//! * An op whose GPU kernel has knobs describes each of its instances with a [`TuneSpec`]
//!   ([`crate::ops::OpDef::gpu_tune`]): a [`TuneKey`] (kernel, dtype, bucketed shape), the
//!   legal candidates as labels, and a hash of the shader sources they run.
//! * The [`tuner`] runs every candidate on random inputs, rejects any whose output disagrees
//!   with the reference, times the rest and keeps the fastest.
//! * The [`cache`] stores the winners as JSON keyed by adapter; `Context::tune_cache` loads
//!   the entries that match the opened adapter and these shaders into the GPU context's
//!   table, and ops consult that table when they record ([`choose`]). Nothing is tuned
//!   implicitly: without a table entry a kernel runs its default.

pub mod cache;
pub mod tuner;

use crate::backend::gpu::{GpuContext, kernels, shaders};
use std::collections::HashMap;

/// Identifies one tunable kernel instance across runs and machines (the adapter is part of
/// the cache entry, not of the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TuneKey {
    /// The kernel family, e.g. `conv2d`, `depthwise_conv2d`, `matmul`, `binary`.
    pub kernel: String,
    /// Element type, e.g. `f32`.
    pub dtype: String,
    /// The instance's shape parameters, large ones bucketed ([`bucket`]) so nearby sizes
    /// share an entry.
    pub shape: Vec<u32>,
}

impl std::fmt::Display for TuneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(u32::to_string).collect();
        write!(f, "{} {} [{}]", self.kernel, self.dtype, dims.join(","))
    }
}

/// What the tuner needs to know about one kernel instance.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneSpec {
    /// Cache key.
    pub key: TuneKey,
    /// Legal candidates for this instance on this adapter, as labels the op parses back; the
    /// first is the default.
    pub candidates: Vec<String>,
    /// [`shader_hash`] of every shader the candidates may run.
    pub shader_hash: String,
}

/// Rounds a shape parameter for a cache key: values up to 16 stay exact, larger ones round
/// up to the next `2^k` or `3 * 2^(k-1)` (steps of at most 1.5x), so a model at a slightly
/// different resolution still finds its entries while different regimes stay apart.
pub fn bucket(v: usize) -> u32 {
    if v <= 16 {
        return v as u32;
    }
    let p = v.next_power_of_two();
    let three_quarters = p / 4 * 3;
    let b = if v <= three_quarters {
        three_quarters
    } else {
        p
    };
    u32::try_from(b).unwrap_or(u32::MAX)
}

/// A stable 64-bit FNV-1a hash (hex) of the named shaders' full f32 sources (prelude and
/// snippets included): a cache entry whose hash differs was measured on other shader code
/// and is not trusted.
pub fn shader_hash(names: &[&str]) -> String {
    // Memoised: ops ask for it on every record while a tuning table is loaded, and hashing
    // the sources (tens of KiB per kernel family) each time would put real work on that path.
    static MEMO: std::sync::OnceLock<std::sync::Mutex<HashMap<String, String>>> =
        std::sync::OnceLock::new();
    let key = names.join("\n");
    let memo = MEMO.get_or_init(Default::default);
    if let Some(h) = memo
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return h.clone();
    }
    let h = hash_sources(names);
    memo.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, h.clone());
    h
}

fn hash_sources(names: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for name in names {
        eat(name.as_bytes());
        // An unknown name hashes as its name alone, so a renamed shader still changes the hash.
        if let Ok(src) = shaders::source(name, "f32") {
            eat(src.as_bytes());
        }
    }
    format!("{h:016x}")
}

/// The tunable kernel families and the shaders each may run.
pub const FAMILIES: &[(&str, &[&str])] = &[
    ("conv2d", kernels::conv2d::TUNE_SHADERS),
    ("depthwise_conv2d", kernels::depthwise_conv2d::TUNE_SHADERS),
    ("matmul", kernels::matmul::TUNE_SHADERS),
    ("binary", &["binary"]),
];

/// This build's [`shader_hash`] for kernel family `kernel`, `None` when it is not tunable.
pub fn family_hash(kernel: &str) -> Option<String> {
    FAMILIES
        .iter()
        .find(|(k, _)| *k == kernel)
        .map(|(_, shaders)| shader_hash(shaders))
}

/// Whether `choice` is a label kernel family `kernel` understands.
pub fn parses(kernel: &str, choice: &str) -> bool {
    match kernel {
        "conv2d" => kernels::conv2d::Variant::parse(choice).is_some(),
        "depthwise_conv2d" => kernels::depthwise_conv2d::Knobs::parse(choice).is_some(),
        "matmul" => kernels::matmul::Variant::parse(choice).is_some(),
        "binary" => kernels::binary::Knobs::parse(choice).is_some(),
        _ => false,
    }
}

/// The knobs an op records with: the table entry for `spec`'s key when `gpu` has one that
/// parses and passes `legal` for the exact shape, else `default`. Called by ops'
/// `record_gpu`; costs a hash lookup only when a tuning table is loaded.
pub fn choose<T>(
    gpu: &GpuContext,
    spec: impl FnOnce() -> Option<TuneSpec>,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
    legal: impl Fn(&T) -> bool,
) -> T {
    if !gpu.has_tuning() {
        return default;
    }
    let Some(spec) = spec() else {
        return default;
    };
    match gpu.tuned(&spec.key) {
        Some(label) => match parse(&label) {
            Some(v) if legal(&v) => v,
            _ => {
                log::warn!(
                    "tuned choice `{label}` for {} does not fit this instance; using the default",
                    spec.key
                );
                default
            }
        },
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_exact_when_small_and_within_one_and_a_half() {
        let mut last = 0;
        for v in 1..5000usize {
            let b = bucket(v);
            assert!(b >= last, "{v}");
            assert!(b as usize >= v);
            if v <= 16 {
                assert_eq!(b as usize, v);
            } else {
                assert!((b as f64) <= 1.5 * v as f64, "{v} -> {b}");
            }
            last = b;
        }
        assert_eq!(bucket(224), 256);
        assert_eq!(bucket(112), 128);
        assert_eq!(bucket(56), 64);
        assert_eq!(bucket(28), 32);
        assert_eq!(bucket(24), 24);
    }

    #[test]
    fn shader_hash_depends_on_names_and_sources() {
        let a = shader_hash(&["conv2d"]);
        assert_eq!(a, shader_hash(&["conv2d"]));
        assert_ne!(a, shader_hash(&["matmul"]));
        assert_ne!(a, shader_hash(&["conv2d", "matmul"]));
        assert_eq!(a.len(), 16);
    }
}
