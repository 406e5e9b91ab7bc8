//! The autotuning cache: tuned kernel choices as JSON, keyed by adapter (name, vendor,
//! device, driver, backend), kernel, dtype and bucketed shape, each with the hash of the
//! shader sources it was measured on and a format version.
//!
//! Loading never trusts a mismatch: an entry for another adapter is skipped quietly (one
//! file may hold several machines' results), and an entry whose shader hash, format version
//! or candidate no longer matches this build is ignored with a logged warning.

use super::{TuneKey, TuneSpec};
use crate::backend::gpu::{AdapterSummary, GpuContext};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The cache format version this build writes and accepts.
pub const FORMAT_VERSION: u32 = 1;

/// The adapter an entry was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterId {
    /// Adapter name.
    pub name: String,
    /// PCI vendor id.
    pub vendor: u32,
    /// PCI device id.
    pub device: u32,
    /// Driver name and version.
    pub driver: String,
    /// Backend API.
    pub backend: String,
}

impl AdapterId {
    /// The identity of `a`.
    pub fn of(a: &AdapterSummary) -> AdapterId {
        AdapterId {
            name: a.name.clone(),
            vendor: a.vendor,
            device: a.device,
            driver: a.driver.clone(),
            backend: a.backend.clone(),
        }
    }
}

/// One tuned kernel instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it was measured.
    pub adapter: AdapterId,
    /// Kernel family.
    pub kernel: String,
    /// Element type.
    pub dtype: String,
    /// Bucketed shape parameters.
    pub shape: Vec<u32>,
    /// [`super::shader_hash`] of the kernel's shaders when measured.
    pub shader_hash: String,
    /// The winning candidate's label.
    pub choice: String,
    /// Median time of the default candidate, microseconds.
    pub default_us: f64,
    /// Median time of the winner, microseconds.
    pub best_us: f64,
}

impl Entry {
    /// The entry's key.
    pub fn key(&self) -> TuneKey {
        TuneKey {
            kernel: self.kernel.clone(),
            dtype: self.dtype.clone(),
            shape: self.shape.clone(),
        }
    }
}

/// A whole cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneCache {
    /// Always `"spore-tune"`.
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this build.
    pub version: u32,
    /// The entries, sorted by adapter then key.
    pub entries: Vec<Entry>,
}

impl Default for TuneCache {
    fn default() -> Self {
        TuneCache {
            format: "spore-tune".into(),
            version: FORMAT_VERSION,
            entries: Vec::new(),
        }
    }
}

/// What [`TuneCache::apply`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Entries now in the GPU context's table.
    pub applied: usize,
    /// Entries for other adapters (skipped quietly).
    pub other_adapters: usize,
    /// Entries refused, each with why (also logged as warnings).
    pub ignored: Vec<String>,
}

impl TuneCache {
    /// Parses cache JSON. A wrong format tag is an error; a wrong version is not (the
    /// entries are then ignored by [`TuneCache::apply`], with a warning).
    pub fn from_json(text: &str) -> Result<TuneCache> {
        let cache: TuneCache = serde_json::from_str(text).map_err(|e| Error::Format {
            format: "spore-tune",
            reason: format!("not a tuning cache: {e}"),
        })?;
        if cache.format != "spore-tune" {
            return Err(Error::Format {
                format: "spore-tune",
                reason: format!("format tag `{}`, expected `spore-tune`", cache.format),
            });
        }
        Ok(cache)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Format {
            format: "spore-tune",
            reason: e.to_string(),
        })
    }

    /// Reads a cache file.
    pub fn load(path: &Path) -> Result<TuneCache> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        TuneCache::from_json(&text)
    }

    /// Writes the cache atomically (temporary file, fsync, rename), so an interrupted save
    /// leaves the previous file whole.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source: std::io::Error| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(self.to_json()?.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds `entries`, replacing any with the same adapter and key (so re-tuning updates a
    /// file that also holds other adapters' results).
    pub fn merge(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            self.entries
                .retain(|old| !(old.adapter == e.adapter && old.key() == e.key()));
            self.entries.push(e);
        }
        self.entries.sort_by(|a, b| {
            (&a.adapter.name, &a.adapter.driver, a.key()).cmp(&(
                &b.adapter.name,
                &b.adapter.driver,
                b.key(),
            ))
        });
    }

    /// Loads the entries that match `gpu` (adapter, version, shader hash) into its table.
    /// An entry whose kernel is unknown to this build, whose shader hash differs from this
    /// build's, or whose choice does not parse as one of its kernel's labels is ignored with
    /// a warning; entries for other adapters are counted and skipped.
    pub fn apply(&self, gpu: &GpuContext) -> LoadReport {
        let mut report = LoadReport::default();
        let here = AdapterId::of(gpu.adapter());
        for e in &self.entries {
            if e.adapter != here {
                report.other_adapters += 1;
                continue;
            }
            let why = if self.version != FORMAT_VERSION {
                Some(format!(
                    "format version {}, this build reads {FORMAT_VERSION}",
                    self.version
                ))
            } else {
                match super::family_hash(&e.kernel) {
                    None => Some(format!("unknown kernel `{}`", e.kernel)),
                    Some(h) if h != e.shader_hash => Some(format!(
                        "shader hash {} but this build's shaders hash to {h}",
                        e.shader_hash
                    )),
                    Some(_) if !super::parses(&e.kernel, &e.choice) => {
                        Some(format!("choice `{}` is not a known candidate", e.choice))
                    }
                    Some(_) => None,
                }
            };
            match why {
                Some(why) => {
                    let msg = format!("tune cache entry {} ignored: {why}", e.key());
                    log::warn!("{msg}");
                    report.ignored.push(msg);
                }
                None => {
                    gpu.set_tuned(e.key(), e.choice.clone());
                    report.applied += 1;
                }
            }
        }
        report
    }

    /// An entry for `spec` measured on `adapter`.
    pub fn entry(
        adapter: &AdapterSummary,
        spec: &TuneSpec,
        choice: &str,
        default_us: f64,
        best_us: f64,
    ) -> Entry {
        Entry {
            adapter: AdapterId::of(adapter),
            kernel: spec.key.kernel.clone(),
            dtype: spec.key.dtype.clone(),
            shape: spec.key.shape.clone(),
            shader_hash: spec.shader_hash.clone(),
            choice: choice.to_string(),
            default_us,
            best_us,
        }
    }
}
