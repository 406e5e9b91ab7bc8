//! `GpuContext`: one wgpu device and queue, with wgpu's panicking error handler replaced, a
//! pipeline cache, and the upload / dispatch / read-back primitives kernels are built on.
//!
//! Why the error plumbing: wgpu's default uncaptured-error handler panics, which would tear
//! down the user's process on a validation error, device loss or GPU OOM. We install our own
//! handler (recording the error), a device-lost callback, and wrap every operation in error
//! scopes, so each failure surfaces as an [`Error`] from the call that caused it.

use crate::error::{Error, GpuErrorKind, Result};
use crate::tune::TuneKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Which adapter to prefer when several exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PowerPreference {
    /// Let the platform choose.
    #[default]
    Default,
    /// Prefer an integrated / low-power GPU.
    LowPower,
    /// Prefer a discrete / high-performance GPU.
    HighPerformance,
}

/// How to pick and open a GPU.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Case-insensitive substring of the adapter name to require (e.g. `"llvmpipe"`).
    pub adapter: Option<String>,
    /// Preference among adapters when `adapter` is not given.
    pub power_preference: PowerPreference,
    /// Accept a software adapter (device type `Cpu`, e.g. Mesa's lavapipe). `Device::Auto` never
    /// does: a CPU backend beats an emulated GPU. Tests and explicit requests do.
    pub allow_software: bool,
    /// Open exactly adapter `i` of [`list_adapters`] (the index `spore devices` prints).
    /// Naming an adapter by index is an explicit request, so a software one is accepted;
    /// `adapter` (the name filter), when also set, must match it.
    pub adapter_index: Option<usize>,
}

/// What `spore devices` prints about an adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Backend API (`Vulkan`, `Metal`, `Dx12`, `Gl`, ...).
    pub backend: String,
    /// Device type (`DiscreteGpu`, `IntegratedGpu`, `Cpu`, ...).
    pub device_type: String,
    /// PCI vendor id (0 when the backend does not report one).
    pub vendor: u32,
    /// PCI device id (0 when the backend does not report one).
    pub device: u32,
    /// Driver name and version.
    pub driver: String,
    /// Whether `SHADER_F16` is available (f16 precision).
    pub shader_f16: bool,
    /// Whether timestamp queries are available (autotuning timing).
    pub timestamp_query: bool,
    /// Whether the adapter is a software rasteriser.
    pub is_software: bool,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroup memory, bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Subgroup size range, if reported.
    pub subgroup_size: (u32, u32),
    /// Whether the adapter offers subgroup operations (`Features::SUBGROUP`); a context
    /// opened on it requests them.
    pub subgroups: bool,
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();
        AdapterSummary {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            vendor: info.vendor,
            device: info.device,
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            is_software: info.device_type == wgpu::DeviceType::Cpu,
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            subgroup_size: (info.subgroup_min_size, info.subgroup_max_size),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
        }
    }
}

fn new_instance() -> wgpu::Instance {
    // `with_env` honours WGPU_BACKEND and friends, so a user can force e.g. Vulkan vs GL.
    let desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see, on every backend.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = new_instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(AdapterSummary::of)
        .collect()
}

/// Cache key of a compute pipeline: shader, element type, override constants.
type PipelineKey = (&'static str, &'static str, Vec<(String, u64)>);

/// One opened GPU: device, queue, pipeline cache, and the error channel.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    /// Errors wgpu reported outside any error scope (e.g. from another thread's work).
    uncaptured: Arc<Mutex<Vec<String>>>,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Idle storage buffers by size class, handed out again by [`GpuContext::acquire`].
    pool: Arc<Mutex<Pool>>,
    /// Tuned kernel choices (`crate::tune`), consulted by ops as they record.
    tuning: RwLock<HashMap<TuneKey, String>>,
    /// Whether `tuning` has any entry: a lock-free check on every record.
    tuning_on: AtomicBool,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.summary.name)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data (an error
    // list, a cache) is still usable, and refusing service would turn one failure into many.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn with_sources(description: &str, source: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = description.to_string();
    let mut next = Some(source);
    while let Some(e) = next {
        let text = e.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        next = e.source();
    }
    msg
}

fn map_wgpu_error(e: wgpu::Error) -> Error {
    match e {
        wgpu::Error::OutOfMemory { source } => {
            Error::gpu(GpuErrorKind::OutOfMemory, source.to_string())
        }
        // The description alone is often just "Validation Error"; the source chain says what.
        wgpu::Error::Validation {
            description,
            source,
        } => Error::gpu(
            GpuErrorKind::Validation,
            with_sources(&description, source.as_ref()),
        ),
        wgpu::Error::Internal {
            description,
            source,
        } => Error::gpu(
            GpuErrorKind::Internal,
            with_sources(&description, source.as_ref()),
        ),
    }
}

impl GpuContext {
    /// Opens the adapter `options` describe. Errors with [`GpuErrorKind::NoAdapter`] when none
    /// fits (including when only a software adapter exists and `allow_software` is false).
    pub fn new(options: &GpuOptions) -> Result<GpuContext> {
        let instance = new_instance();
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if let Some(i) = options.adapter_index {
            let count = adapters.len();
            if i >= count {
                return Err(Error::gpu(
                    GpuErrorKind::NoAdapter,
                    format!(
                        "no GPU adapter with index {i} ({count} adapters; see `spore devices`)"
                    ),
                ));
            }
            let adapter = adapters.swap_remove(i);
            let name = adapter.get_info().name;
            if let Some(want) = &options.adapter
                && !name.to_lowercase().contains(&want.to_lowercase())
            {
                return Err(Error::gpu(
                    GpuErrorKind::NoAdapter,
                    format!("adapter {i} is `{name}`, which does not match `{want}`"),
                ));
            }
            return Self::from_adapter(adapter);
        }
        adapters.retain(|a| {
            let info = a.get_info();
            let name_ok = options
                .adapter
                .as_ref()
                .is_none_or(|want| info.name.to_lowercase().contains(&want.to_lowercase()));
            let kind_ok = options.allow_software || info.device_type != wgpu::DeviceType::Cpu;
            name_ok && kind_ok
        });
        // Rank: the wanted power class first, then real GPUs before software, then Vulkan /
        // Metal / DX12 before GL (compute on GL is limited).
        let rank = |a: &wgpu::Adapter| {
            let info = a.get_info();
            let class = match (options.power_preference, info.device_type) {
                (PowerPreference::LowPower, wgpu::DeviceType::IntegratedGpu) => 0,
                (PowerPreference::LowPower, wgpu::DeviceType::DiscreteGpu) => 1,
                (_, wgpu::DeviceType::DiscreteGpu) => 0,
                (_, wgpu::DeviceType::IntegratedGpu) => 1,
                (_, wgpu::DeviceType::VirtualGpu) => 2,
                (_, wgpu::DeviceType::Other) => 3,
                (_, wgpu::DeviceType::Cpu) => 4,
            };
            let api = if info.backend == wgpu::Backend::Gl {
                1
            } else {
                0
            };
            (class, api)
        };
        adapters.sort_by_key(rank);
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            let what = match &options.adapter {
                Some(n) => format!("no GPU adapter matching `{n}`"),
                None => "no GPU adapter".to_string(),
            };
            let hint = if options.allow_software {
                ""
            } else {
                " (software adapters excluded)"
            };
            Error::gpu(GpuErrorKind::NoAdapter, format!("{what}{hint}"))
        })?;
        Self::from_adapter(adapter)
    }

    fn from_adapter(adapter: wgpu::Adapter) -> Result<GpuContext> {
        let summary = AdapterSummary::of(&adapter);
        // Ask for what helps compute and nothing a missing feature would break:
        // f16 for half precision, timestamps for autotuning, subgroups for reductions.
        let wanted =
            wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        // The adapter's own limits: the defaults cap storage bindings at 128 MiB, too small
        // for real activations.
        let limits = adapter.limits();
        let desc = wgpu::DeviceDescriptor {
            label: Some("spore"),
            required_features: features,
            required_limits: limits,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::gpu(GpuErrorKind::RequestDevice, e.to_string()))?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("uncaptured wgpu error: {e}");
            lock(&sink).push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            log::warn!("GPU device lost ({reason:?}): {message}");
            *lock(&lost_sink) = Some(format!("{reason:?}: {message}"));
        });
        log::info!(
            "GPU: {} ({}, {}); f16 {}, timestamps {}, subgroups {}",
            summary.name,
            summary.backend,
            summary.device_type,
            features.contains(wgpu::Features::SHADER_F16),
            features.contains(wgpu::Features::TIMESTAMP_QUERY),
            features.contains(wgpu::Features::SUBGROUP),
        );
        Ok(GpuContext {
            device,
            queue,
            summary,
            uncaptured,
            lost,
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(Pool::default())),
            tuning: RwLock::new(HashMap::new()),
            tuning_on: AtomicBool::new(false),
        })
    }

    /// Whether any tuned kernel choice is loaded.
    pub fn has_tuning(&self) -> bool {
        self.tuning_on.load(Ordering::Acquire)
    }

    /// The tuned choice (a candidate label) for `key`, if one is loaded.
    pub fn tuned(&self, key: &TuneKey) -> Option<String> {
        let table = self.tuning.read().unwrap_or_else(PoisonError::into_inner);
        table.get(key).cloned()
    }

    /// Loads (or replaces) the tuned choice for `key`; ops recorded afterwards use it.
    pub fn set_tuned(&self, key: TuneKey, choice: String) {
        let mut table = self.tuning.write().unwrap_or_else(PoisonError::into_inner);
        table.insert(key, choice);
        self.tuning_on.store(true, Ordering::Release);
    }

    /// Removes the tuned choice for `key`, returning it.
    pub fn remove_tuned(&self, key: &TuneKey) -> Option<String> {
        let mut table = self.tuning.write().unwrap_or_else(PoisonError::into_inner);
        let old = table.remove(key);
        self.tuning_on.store(!table.is_empty(), Ordering::Release);
        old
    }

    /// Every loaded tuned choice, sorted by key.
    pub fn tuned_entries(&self) -> Vec<(TuneKey, String)> {
        let table = self.tuning.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<(TuneKey, String)> =
            table.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
        v.sort();
        v
    }

    /// Drops every tuned choice: kernels run their defaults again.
    pub fn clear_tuning(&self) {
        let mut table = self.tuning.write().unwrap_or_else(PoisonError::into_inner);
        table.clear();
        self.tuning_on.store(false, Ordering::Release);
    }

    /// What this context runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Whether the device was created with `SHADER_F16`.
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the device was created with subgroup operations (`Features::SUBGROUP`).
    pub fn has_subgroups(&self) -> bool {
        self.device.features().contains(wgpu::Features::SUBGROUP)
    }

    /// A storage buffer (`STORAGE | COPY_SRC | COPY_DST`) of at least `bytes`, from the pool
    /// when an idle buffer of the same size class exists, else newly allocated. Its contents
    /// are unspecified (whatever its last user left): kernels write before they read. Dropping
    /// the [`PooledBuffer`] returns it to the pool; keep it alive (or hand it to
    /// [`Recorder::hold`]) until the commands using it are submitted, since a later
    /// [`GpuContext::acquire`] may hand it out again.
    pub fn acquire(&self, label: &str, bytes: u64) -> Result<PooledBuffer> {
        let class = size_class(bytes);
        self.check_size(class)?;
        let idle = {
            let mut pool = lock(&self.pool);
            let found = pool.idle.get_mut(&class).and_then(Vec::pop);
            if found.is_some() {
                pool.idle_bytes -= class;
                pool.reused += 1;
                pool.live += 1;
            }
            found
        };
        let buffer = match idle {
            Some(b) => b,
            None => {
                let b = self.scoped(|| {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: class,
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_DST
                            | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    })
                })?;
                let mut pool = lock(&self.pool);
                pool.allocated_bytes += class;
                pool.allocations += 1;
                pool.live += 1;
                b
            }
        };
        Ok(PooledBuffer {
            buffer,
            class,
            pool: Arc::clone(&self.pool),
        })
    }

    /// The pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        let pool = lock(&self.pool);
        PoolStats {
            allocated_bytes: pool.allocated_bytes,
            idle_bytes: pool.idle_bytes,
            live: pool.live,
            allocations: pool.allocations,
            reused: pool.reused,
            freed: pool.freed,
            cap_bytes: pool.cap_bytes,
        }
    }

    /// Sets how many bytes of idle buffers the pool keeps (default
    /// [`DEFAULT_POOL_CAP_BYTES`]); idle buffers over the new cap are freed now, and a buffer
    /// returned while the pool is full is freed instead of kept.
    pub fn set_pool_cap(&self, bytes: u64) {
        let mut pool = lock(&self.pool);
        pool.cap_bytes = bytes;
        pool.trim();
    }

    /// Frees every idle pooled buffer (live ones return to the pool as usual).
    pub fn clear_pool(&self) {
        let mut pool = lock(&self.pool);
        let cap = pool.cap_bytes;
        pool.cap_bytes = 0;
        pool.trim();
        pool.cap_bytes = cap;
    }

    /// Fails if the device was lost or an uncaptured error was recorded since the last check.
    pub fn check_health(&self) -> Result<()> {
        if let Some(why) = lock(&self.lost).clone() {
            return Err(Error::gpu(GpuErrorKind::DeviceLost, why));
        }
        let mut errs = lock(&self.uncaptured);
        if !errs.is_empty() {
            let msg = errs.join("; ");
            errs.clear();
            return Err(Error::gpu(GpuErrorKind::Validation, msg));
        }
        Ok(())
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes, turning any error
    /// wgpu reports for that work into an [`Error`]. Code that creates its own resources
    /// through [`GpuContext::device`] wraps them in this so a bad descriptor is an `Err`.
    pub fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.check_health()?;
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
            pollster::block_on(internal.pop()),
        ];
        match errors.into_iter().flatten().next() {
            Some(e) => Err(map_wgpu_error(e)),
            None => Ok(value),
        }
    }

    /// The compute pipeline for registered shader `name` with element type `elem`
    /// (`"f32"` or `"f16"`) and override constants, compiled once and cached.
    pub fn pipeline(
        &self,
        name: &'static str,
        elem: &'static str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key: PipelineKey = (
            name,
            elem,
            constants
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_bits()))
                .collect(),
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(Arc::clone(p));
        }
        if elem == "f16" && !self.has_f16() {
            return Err(Error::NotSupported {
                what: format!("f16 shaders on {} (no SHADER_F16)", self.summary.name),
            });
        }
        let source = super::shaders::source(name, elem)?;
        let pipeline = self.scoped(|| {
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
        })?;
        let pipeline = Arc::new(pipeline);
        lock(&self.pipelines).insert(key, Arc::clone(&pipeline));
        Ok(pipeline)
    }

    /// A storage buffer holding `bytes` (padded to 4 bytes, as copies require).
    pub fn upload(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let size = (bytes.len().max(4) as u64).next_multiple_of(4);
        self.check_size(size)?;
        self.scoped(|| {
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut padded = bytes.to_vec();
            padded.resize(size as usize, 0);
            self.queue.write_buffer(&buf, 0, &padded);
            buf
        })
    }

    /// A storage buffer of `size` bytes, every byte 0xFF: f32 and f16 NaN, so an element a
    /// kernel forgot to write shows up in any comparison.
    pub fn poisoned(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        let size = size.max(4).next_multiple_of(4);
        self.check_size(size)?;
        let poison = vec![0xFFu8; size as usize];
        self.upload(label, &poison)
    }

    /// A uniform buffer holding `params`.
    pub fn uniform<P: bytemuck::Pod>(&self, label: &str, params: &P) -> Result<wgpu::Buffer> {
        self.scoped(|| {
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: std::mem::size_of::<P>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.queue.write_buffer(&buf, 0, bytemuck::bytes_of(params));
            buf
        })
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.summary.max_buffer_size
            || size > self.summary.max_storage_buffer_binding_size
        {
            return Err(Error::OutOfMemory {
                device: self.summary.name.clone(),
                bytes: size,
            });
        }
        Ok(())
    }

    /// Records one dispatch of `pipeline` over `buffers` (bound 0, 1, ... in order) into a new
    /// encoder and submits it: the single-kernel path. A sequence of kernels (a fused segment,
    /// a multi-pass kernel) records into one [`Recorder`] and submits once instead.
    pub fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let mut rec = self.recorder();
        rec.dispatch(pipeline, buffers, workgroups)?;
        rec.submit()
    }

    /// A [`Recorder`]: one command encoder that many dispatches go into, submitted once.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            gpu: self,
            encoder: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("spore"),
                }),
            dispatches: 0,
            held: Vec::new(),
            timing: None,
        }
    }

    /// A [`Recorder`] that also writes a GPU timestamp before and after each of its first
    /// `max_passes` dispatches, for [`Recorder::submit_timed`] (the autotuner's clock).
    /// `None` when the device has no timestamp queries.
    pub fn recorder_timed(&self, max_passes: u32) -> Result<Option<Recorder<'_>>> {
        if !self
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            || max_passes == 0
        {
            return Ok(None);
        }
        let count = max_passes
            .saturating_mul(2)
            .min(wgpu::QUERY_SET_MAX_QUERIES);
        let query_set = self.scoped(|| {
            self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("spore_timing"),
                ty: wgpu::QueryType::Timestamp,
                count,
            })
        })?;
        let mut rec = self.recorder();
        rec.timing = Some(Timing {
            query_set,
            capacity: count,
            used: 0,
        });
        Ok(Some(rec))
    }

    /// Waits until every submitted command has finished (benchmarks stop the clock after
    /// this), then reports any error the GPU raised meanwhile.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?;
        self.check_health()
    }

    /// The wgpu device (for kernels that need to create their own resources).
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Copies `size` bytes of `buffer` back to the host, waiting for the GPU.
    pub fn read_back(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        let padded = size.max(4).next_multiple_of(4);
        let staging = self.scoped(|| {
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("read_back"),
                size: padded,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = self.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, padded);
            self.queue.submit([encoder.finish()]);
            staging
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver outlives this callback unless we already returned an error.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?;
        self.check_health()?;
        rx.recv()
            .map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?
            .map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?;
        let bytes = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::gpu(GpuErrorKind::Internal, e.to_string()))?;
            view[..size as usize].to_vec()
        };
        staging.unmap();
        Ok(bytes)
    }
}

/// Dispatches recorded into one command encoder and submitted together: what a multi-pass
/// kernel (split-K, batch-norm statistics) or a fused GPU segment uses, so the GPU sees one
/// command buffer instead of one submit per kernel.
pub struct Recorder<'g> {
    gpu: &'g GpuContext,
    encoder: wgpu::CommandEncoder,
    dispatches: usize,
    /// Pooled temporaries of the recorded kernels, returned to the pool after the submit.
    held: Vec<PooledBuffer>,
    /// Timestamp queries around each pass (see [`GpuContext::recorder_timed`]).
    timing: Option<Timing>,
}

/// The timestamp query set of a timed recorder and how many of its slots are written.
struct Timing {
    query_set: wgpu::QuerySet,
    capacity: u32,
    used: u32,
}

impl Recorder<'_> {
    /// Records one dispatch of `pipeline` over `buffers` (bound to group 0, bindings 0, 1, ...
    /// in order). Dispatches run in recording order; wgpu inserts the barriers between them.
    pub fn dispatch(
        &mut self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let max = self.gpu.summary.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::invalid_param(
                "workgroups",
                format!("{workgroups:?} exceeds the adapter's {max} per dimension"),
            ));
        }
        let device = &self.gpu.device;
        let encoder = &mut self.encoder;
        // In a timed recorder, the pass writes its start and end into the next two slots.
        let timestamp_writes = match &mut self.timing {
            Some(t) if t.used + 2 <= t.capacity => {
                t.used += 2;
                Some(wgpu::ComputePassTimestampWrites {
                    query_set: &t.query_set,
                    beginning_of_pass_write_index: Some(t.used - 2),
                    end_of_pass_write_index: Some(t.used - 1),
                })
            }
            _ => None,
        };
        self.gpu.scoped(|| {
            let layout = pipeline.get_bind_group_layout(0);
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource: b.as_entire_binding(),
                })
                .collect();
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        })?;
        self.dispatches += 1;
        Ok(())
    }

    /// Records a buffer-to-buffer copy of `size` bytes (a multiple of 4).
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) -> Result<()> {
        let encoder = &mut self.encoder;
        self.gpu
            .scoped(|| encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size))
    }

    /// Dispatches recorded so far.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// Keeps a pooled temporary (a kernel's scratch buffer) out of the pool until this
    /// recorder is submitted, so no other recording can be handed the same buffer while these
    /// commands still need it. Returns the buffer for binding.
    pub fn hold(&mut self, buffer: PooledBuffer) -> &wgpu::Buffer {
        self.held.push(buffer);
        // Just pushed, so the list is not empty; `held` only grows until submit.
        &self.held[self.held.len() - 1]
    }

    /// A pooled scratch buffer of at least `bytes`, held until submit (see [`Recorder::hold`]).
    pub fn scratch(&mut self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let buffer = self.gpu.acquire(label, bytes)?;
        // wgpu buffers are reference-counted handles: the clone binds the same memory.
        let handle = (*buffer).clone();
        self.held.push(buffer);
        Ok(handle)
    }

    /// Submits like [`Recorder::submit`], waits, and returns the GPU time in seconds summed
    /// over the timed passes (each pass from its start to its end timestamp), or `None` for
    /// a recorder that is not timed or timed nothing.
    pub fn submit_timed(mut self) -> Result<Option<f64>> {
        let Some(t) = self.timing.take() else {
            self.submit()?;
            return Ok(None);
        };
        if t.used == 0 {
            self.submit()?;
            return Ok(None);
        }
        let gpu = self.gpu;
        let bytes = u64::from(t.used) * wgpu::QUERY_SIZE as u64;
        let resolve = gpu.scoped(|| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("spore_timing_resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        })?;
        let encoder = &mut self.encoder;
        gpu.scoped(|| encoder.resolve_query_set(&t.query_set, 0..t.used, &resolve, 0))?;
        self.submit()?;
        let raw = gpu.read_back(&resolve, bytes)?;
        let ticks: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let total: u64 = ticks
            .chunks_exact(2)
            .map(|p| p[1].saturating_sub(p[0]))
            .sum();
        let period_ns = f64::from(gpu.queue.get_timestamp_period());
        Ok(Some(total as f64 * period_ns * 1e-9))
    }

    /// Finishes the encoder and submits it (does not wait; [`GpuContext::read_back`] and
    /// [`GpuContext::sync`] do).
    pub fn submit(self) -> Result<()> {
        let Recorder {
            gpu, encoder, held, ..
        } = self;
        let result = gpu.scoped(|| {
            gpu.queue.submit([encoder.finish()]);
        });
        // Safe to reuse now: anything recorded later is submitted after these commands, and
        // the queue runs submissions in order.
        drop(held);
        result
    }
}

/// Idle bytes the buffer pool keeps by default before it frees returned buffers.
pub const DEFAULT_POOL_CAP_BYTES: u64 = 256 << 20;

/// Smallest pooled buffer.
pub const MIN_POOL_CLASS_BYTES: u64 = 256;

/// The size class of a `bytes` request: at least [`MIN_POOL_CLASS_BYTES`]; above it, the
/// next multiple of an eighth of the enclosing power of two (steps of 1.14x to 1.25x), so a
/// reused buffer wastes at most a quarter of its size while nearby sizes share a class.
pub fn size_class(bytes: u64) -> u64 {
    if bytes <= MIN_POOL_CLASS_BYTES {
        return MIN_POOL_CLASS_BYTES;
    }
    let pow = bytes.checked_next_power_of_two().unwrap_or(u64::MAX);
    // `pow >= 512` here, so the step is a multiple of 64 (and of 4, as copies need).
    let step = (pow / 8).max(1);
    bytes.div_ceil(step).saturating_mul(step)
}

/// What the buffer pool did so far ([`GpuContext::pool_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Bytes of every pooled buffer currently allocated (live and idle).
    pub allocated_bytes: u64,
    /// Bytes of idle buffers waiting in the pool.
    pub idle_bytes: u64,
    /// Buffers handed out and not yet returned.
    pub live: usize,
    /// Buffers newly allocated.
    pub allocations: u64,
    /// Requests served by an idle buffer.
    pub reused: u64,
    /// Idle buffers freed because the pool was over its cap.
    pub freed: u64,
    /// Idle bytes the pool keeps at most.
    pub cap_bytes: u64,
}

#[derive(Debug)]
struct Pool {
    idle: HashMap<u64, Vec<wgpu::Buffer>>,
    allocated_bytes: u64,
    idle_bytes: u64,
    live: usize,
    allocations: u64,
    reused: u64,
    freed: u64,
    cap_bytes: u64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            idle: HashMap::new(),
            allocated_bytes: 0,
            idle_bytes: 0,
            live: 0,
            allocations: 0,
            reused: 0,
            freed: 0,
            cap_bytes: DEFAULT_POOL_CAP_BYTES,
        }
    }
}

impl Pool {
    /// Frees idle buffers, largest classes first, until the idle bytes fit the cap.
    fn trim(&mut self) {
        let mut classes: Vec<u64> = self.idle.keys().copied().collect();
        classes.sort_unstable_by(|a, b| b.cmp(a));
        for class in classes {
            while self.idle_bytes > self.cap_bytes {
                let Some(buf) = self.idle.get_mut(&class).and_then(Vec::pop) else {
                    break;
                };
                self.release(buf, class);
            }
        }
        self.idle.retain(|_, v| !v.is_empty());
    }

    fn release(&mut self, buf: wgpu::Buffer, class: u64) {
        self.idle_bytes -= class;
        self.allocated_bytes -= class;
        self.freed += 1;
        // Dropping (not `destroy()`): wgpu frees the memory once no recorded or submitted
        // command uses it any more, so a buffer still bound in an open encoder stays valid.
        drop(buf);
    }
}

/// A storage buffer on loan from the pool ([`GpuContext::acquire`]): derefs to
/// [`wgpu::Buffer`] and goes back to the pool when dropped (or is freed, when the pool is
/// over its cap).
pub struct PooledBuffer {
    buffer: wgpu::Buffer,
    class: u64,
    pool: Arc<Mutex<Pool>>,
}

impl PooledBuffer {
    /// The size class (the buffer's real size, at least what was asked for).
    pub fn class_bytes(&self) -> u64 {
        self.class
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("bytes", &self.class)
            .finish()
    }
}

impl std::ops::Deref for PooledBuffer {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        // A handle clone: the pool keeps the same buffer, this one goes with `self`.
        let buf = self.buffer.clone();
        let mut pool = lock(&self.pool);
        pool.live = pool.live.saturating_sub(1);
        pool.idle_bytes += self.class;
        if pool.idle_bytes > pool.cap_bytes {
            pool.release(buf, self.class);
        } else {
            pool.idle.entry(self.class).or_default().push(buf);
        }
    }
}
