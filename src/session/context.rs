//! `Context`: the ordered list of devices a session may use, validated and opened once, and
//! shared (cheaply cloned) by every session created from it.

use crate::backend::gpu::{GpuContext, GpuOptions as AdapterOptions, PowerPreference};
use crate::error::{Error, Result};
use crate::tune::cache::{LoadReport, TuneCache};
use std::sync::Arc;

/// Arithmetic precision on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// 16-bit floats in kernels where the adapter has `SHADER_F16` (accumulation stays f32).
    F16,
}

/// Options for a GPU device.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name to require.
    pub adapter: Option<String>,
    /// Precision.
    pub precision: Precision,
    /// Which adapter class to prefer.
    pub power_preference: PowerPreference,
    /// Accept a software adapter (lavapipe, WARP). Off by default: the CPU backend is faster.
    pub allow_software: bool,
}

/// Options for the CPU device.
#[derive(Debug, Clone, Default)]
pub struct CpuOptions {
    /// Worker threads; 0 = all hardware threads.
    pub threads: usize,
}

/// One entry of the device priority list.
#[derive(Debug, Clone)]
pub enum Device {
    /// A GPU through wgpu.
    Gpu(GpuOptions),
    /// The CPU.
    Cpu(CpuOptions),
    /// The best available: a hardware GPU if any, then the CPU. Never a software GPU.
    Auto,
}

/// Most CPU threads a context accepts (a typo guard, far above real machines).
pub const MAX_CPU_THREADS: usize = 1024;

#[derive(Debug)]
struct Inner {
    gpu: Option<(Arc<GpuContext>, Precision)>,
    cpu_threads: usize,
    notes: Vec<String>,
    /// Whether the GPU comes before the CPU in the priority list.
    gpu_first: bool,
    /// Validation mode: every node's output is checked against the reference.
    validate: bool,
}

impl Context {
    /// Loads an autotuning cache file into this context's GPU (see
    /// [`ContextBuilder::tune_cache`]): sessions record tuned kernel choices where an entry
    /// matches the adapter and this build's shaders. Returns what was applied and ignored;
    /// a context without a GPU applies nothing. Tuning itself never runs here.
    pub fn tune_cache(&self, path: impl AsRef<std::path::Path>) -> Result<LoadReport> {
        let cache = TuneCache::load(path.as_ref())?;
        Ok(self.apply_tune_cache(&cache))
    }

    /// Loads an already parsed cache (see [`Context::tune_cache`]).
    pub fn apply_tune_cache(&self, cache: &TuneCache) -> LoadReport {
        match self.gpu() {
            Some(gpu) => cache.apply(gpu),
            None => LoadReport {
                other_adapters: cache.entries.len(),
                ..LoadReport::default()
            },
        }
    }
}

/// The validated device configuration. Clone it freely: clones share the opened GPU.
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

/// Builds a [`Context`].
#[derive(Debug, Clone, Default)]
pub struct ContextBuilder {
    devices: Vec<Device>,
    validate: bool,
    tune_cache: Option<std::path::PathBuf>,
}

impl ContextBuilder {
    /// Sets the device priority list (first = preferred). The CPU is always added as the last
    /// resort.
    pub fn devices(mut self, devices: impl IntoIterator<Item = Device>) -> Self {
        self.devices = devices.into_iter().collect();
        self
    }

    /// Loads an autotuning cache (`spore autotune --out FILE`) into the context's GPU once it
    /// is opened: sessions then record the tuned kernel choices where an entry matches, and
    /// defaults elsewhere. Entries for other adapters, other shader code or another format
    /// version are ignored with a logged warning ([`Context::tune_cache`] reports them). A
    /// missing or malformed file fails [`ContextBuilder::build`].
    pub fn tune_cache(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tune_cache = Some(path.into());
        self
    }

    /// Validation mode: every node's output (CPU or GPU) is compared with the reference on
    /// the same inputs; the worst relative error per node is kept
    /// (`Session::validation_report`), and a mismatch beyond the node's tolerance (1e-4 on
    /// the GPU, 1e-5 on the CPU, 1e-4 for CPU convolutions) fails the run naming the node.
    /// Slow: every node runs twice and GPU segments submit node by node.
    pub fn validate(mut self, on: bool) -> Self {
        self.validate = on;
        self
    }

    /// Validates the options and opens the devices. A GPU that cannot be opened is skipped
    /// (with a note in [`Context::notes`]) when a later device can stand in; invalid options
    /// are always errors.
    pub fn build(self) -> Result<Context> {
        let devices = if self.devices.is_empty() {
            vec![Device::Auto]
        } else {
            self.devices
        };
        let mut cpu_threads = 0usize;
        let mut gpu = None;
        let mut notes = Vec::new();
        let hw_threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut seen_cpu = false;
        // The GPU is preferred unless the CPU is listed before it.
        let mut gpu_first = true;
        for device in &devices {
            match device {
                Device::Cpu(o) => {
                    if o.threads > MAX_CPU_THREADS {
                        return Err(Error::invalid_param(
                            "CpuOptions::threads",
                            format!("{} exceeds the limit of {MAX_CPU_THREADS}", o.threads),
                        ));
                    }
                    if seen_cpu {
                        return Err(Error::invalid_param("devices", "the CPU is listed twice"));
                    }
                    if gpu.is_none() {
                        gpu_first = false;
                    }
                    seen_cpu = true;
                    cpu_threads = o.threads;
                }
                Device::Gpu(o) => {
                    if let Some(name) = &o.adapter
                        && name.trim().is_empty()
                    {
                        return Err(Error::invalid_param("GpuOptions::adapter", "empty name"));
                    }
                    if gpu.is_some() {
                        continue;
                    }
                    let opts = AdapterOptions {
                        adapter: o.adapter.clone(),
                        power_preference: o.power_preference,
                        allow_software: o.allow_software,
                        ..AdapterOptions::default()
                    };
                    match GpuContext::new(&opts) {
                        Ok(g) => {
                            if o.precision == Precision::F16 && !g.has_f16() {
                                return Err(Error::NotSupported {
                                    what: format!(
                                        "f16 precision on {} (no SHADER_F16)",
                                        g.adapter().name
                                    ),
                                });
                            }
                            gpu = Some((Arc::new(g), o.precision));
                        }
                        Err(e) => notes.push(format!("GPU skipped: {e}")),
                    }
                }
                Device::Auto => {
                    if gpu.is_none() {
                        match GpuContext::new(&AdapterOptions::default()) {
                            Ok(g) => gpu = Some((Arc::new(g), Precision::F32)),
                            Err(e) => {
                                notes.push(format!("auto: no hardware GPU ({e}); using the CPU"))
                            }
                        }
                    }
                }
            }
        }
        if cpu_threads == 0 {
            cpu_threads = hw_threads;
        }
        if let Some(path) = &self.tune_cache {
            let cache = TuneCache::load(path)?;
            match &gpu {
                Some((g, _)) => {
                    let r = cache.apply(g);
                    notes.push(format!(
                        "tune cache {}: {} entries applied, {} for other adapters, {} ignored",
                        path.display(),
                        r.applied,
                        r.other_adapters,
                        r.ignored.len()
                    ));
                }
                None => notes.push(format!(
                    "tune cache {} not used: no GPU in this context",
                    path.display()
                )),
            }
        }
        for n in &notes {
            log::info!("{n}");
        }
        Ok(Context {
            inner: Arc::new(Inner {
                gpu,
                cpu_threads,
                notes,
                gpu_first,
                validate: self.validate,
            }),
        })
    }
}

impl Context {
    /// A builder.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// The CPU only.
    pub fn cpu() -> Context {
        Context {
            inner: Arc::new(Inner {
                gpu: None,
                cpu_threads: 1,
                notes: vec![],
                gpu_first: false,
                validate: false,
            }),
        }
    }

    /// The opened GPU, if any.
    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        self.inner.gpu.as_ref().map(|(g, _)| g)
    }

    /// GPU precision.
    pub fn precision(&self) -> Precision {
        self.inner.gpu.as_ref().map_or(Precision::F32, |(_, p)| *p)
    }

    /// CPU worker threads.
    pub fn cpu_threads(&self) -> usize {
        self.inner.cpu_threads
    }

    /// Whether the GPU (if any) comes before the CPU in the priority list.
    pub fn prefers_gpu(&self) -> bool {
        self.inner.gpu.is_some() && self.inner.gpu_first
    }

    /// This context (sharing its opened GPU) with validation mode on or off.
    pub fn with_validate(&self, on: bool) -> Context {
        let i = &self.inner;
        Context {
            inner: Arc::new(Inner {
                gpu: i.gpu.clone(),
                cpu_threads: i.cpu_threads,
                notes: i.notes.clone(),
                gpu_first: i.gpu_first,
                validate: on,
            }),
        }
    }

    /// Whether validation mode is on (see [`ContextBuilder::validate`]).
    pub fn validate(&self) -> bool {
        self.inner.validate
    }

    /// Why devices were skipped while building.
    pub fn notes(&self) -> &[String] {
        &self.inner.notes
    }

    /// One line per device in priority order, e.g. `gpu: NVIDIA ... (Vulkan)`, `cpu: 8 threads`.
    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some((g, p)) = &self.inner.gpu {
            d.push(format!(
                "gpu: {} ({}, {:?})",
                g.adapter().name,
                g.adapter().backend,
                p
            ));
        }
        d.push(format!("cpu: {} threads", self.inner.cpu_threads));
        d
    }
}
