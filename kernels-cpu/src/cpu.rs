//! What the host CPU offers: name, hardware threads, and the SIMD features the tuned kernels
//! are selected by.

/// A description of the host CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// Model name (from `/proc/cpuinfo` where available).
    pub name: String,
    /// Hardware threads available to this process.
    pub threads: usize,
    /// Architecture (`x86_64`, `aarch64`, ...).
    pub arch: &'static str,
    /// SIMD features detected at run time, e.g. `avx2`, `fma`, `avx512f`, `neon`.
    pub features: Vec<&'static str>,
}

/// Detects the host CPU.
pub fn cpu_info() -> CpuInfo {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    CpuInfo {
        name,
        threads,
        arch: std::env::consts::ARCH,
        features: simd_features(),
    }
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($feat:tt),*) => {$(if std::arch::is_x86_feature_detected!($feat) { f.push($feat); })*};
    }
    probe!(
        "sse4.1",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "avxvnni"
    );
    f
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($feat:tt),*) => {$(if std::arch::is_aarch64_feature_detected!($feat) { f.push($feat); })*};
    }
    probe!("neon", "fp16", "dotprod", "i8mm", "sve");
    f
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<&'static str> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_something() {
        let info = super::cpu_info();
        assert!(info.threads >= 1);
        assert!(!info.arch.is_empty());
        #[cfg(target_arch = "x86_64")]
        assert!(info.features.contains(&"sse4.1"), "{info:?}");
    }
}
