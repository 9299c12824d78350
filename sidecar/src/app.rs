//! The sidecar's state: the served model, how new ones are fetched and loaded, metrics.

use crate::metrics::{Metrics, ModelLabels};
use crate::model::{LoadRequest, Loaded, Origin};
use crate::slot::Slot;
use edgefleet_artifact::{Cache, Digest, PublicKey, Registry, SelfTest};
use edgefleet_runtime::Runtime;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// The runtime the artifact was gated with (tract for a plain file).
    Auto,
    Tract,
    Onnxruntime,
}

pub struct App {
    pub name: String,
    pub slot: Slot,
    pub metrics: Metrics,
    pub registry: Registry,
    pub cache: Cache,
    pub runtime: RuntimeChoice,
    /// Sessions per model (concurrent requests).
    pub workers: usize,
    /// Intra-op threads per ONNX Runtime session.
    pub threads: usize,
    /// Models faster than this run in place on the HTTP worker; slower ones on their own
    /// inference threads (`model::runs_inline`).
    pub inline_below: std::time::Duration,
    /// Preprocessing for models that do not carry it (a plain file).
    pub preprocessing: Option<edgefleet_runtime::image::Preprocessing>,
    /// One load at a time.
    loading: tokio::sync::Mutex<()>,
}

/// A model fetched and verified, not yet loaded.
struct Fetched {
    bytes: Vec<u8>,
    origin: Origin,
    selftest: Option<SelfTest>,
    runtime: Option<String>,
    /// The artifact's `dev.edgefleet.preprocessing` (JSON).
    preprocessing: Option<String>,
}

/// Why a model was not put in service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLoaded {
    pub reason: String,
    /// Network or registry trouble: the same model may load later. Otherwise the model itself
    /// was refused (verification, load or self-test) and trying it again cannot help.
    pub transient: bool,
    /// It loaded but failed its self-test.
    pub selftest_failed: bool,
}

impl NotLoaded {
    pub fn refused(reason: impl Into<String>) -> Self {
        NotLoaded {
            reason: reason.into(),
            transient: false,
            selftest_failed: false,
        }
    }
}

impl std::fmt::Display for NotLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<edgefleet_artifact::Error> for NotLoaded {
    fn from(e: edgefleet_artifact::Error) -> Self {
        let transient = e.is_transient() || matches!(e, edgefleet_artifact::Error::NotFound { .. });
        NotLoaded {
            reason: e.to_string(),
            transient,
            selftest_failed: false,
        }
    }
}

/// The last model this sidecar served from a registry, kept next to the cache so that a
/// restart with no network serves it again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastGood {
    pub source: String,
    pub digest: String,
}

/// What a successful load did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Swapped {
    pub digest: String,
    pub previous: Option<String>,
    pub runtime: &'static str,
    pub load_ms: f64,
    pub selftest_passed: usize,
    /// Nothing to do: this digest was already serving.
    pub unchanged: bool,
}

impl App {
    pub fn new(
        name: String,
        registry: Registry,
        cache: Cache,
        runtime: RuntimeChoice,
        (workers, threads, inline_below): (usize, usize, std::time::Duration),
        preprocessing: Option<edgefleet_runtime::image::Preprocessing>,
    ) -> Arc<Self> {
        Arc::new(App {
            preprocessing,
            name,
            slot: Slot::default(),
            metrics: Metrics::default(),
            registry,
            cache,
            runtime,
            workers,
            threads,
            inline_below,
            loading: tokio::sync::Mutex::new(()),
        })
    }

    async fn fetch(&self, source: &str, key: Option<&PublicKey>) -> Result<Fetched, NotLoaded> {
        if key.is_some() && !source.starts_with("oci://") {
            return Err(NotLoaded::refused(format!(
                "{source}: a signature is required (spec.desired.publicKey) and only oci:// artifacts carry one"
            )));
        }
        if let Some(reference) = source.strip_prefix("oci://") {
            // The signature first: nothing of an artifact that does not verify is downloaded.
            if let Some(key) = key {
                self.registry.verify_signature(reference, key).await?;
            }
            let pulled = self
                .registry
                .pull_for_device(reference, &self.cache)
                .await?;
            return Ok(Fetched {
                bytes: pulled.model.read()?,
                origin: Origin {
                    digest: pulled.artifact.digest.to_string(),
                    source: source.to_string(),
                },
                selftest: pulled.selftest,
                preprocessing: pulled
                    .artifact
                    .facts
                    .as_ref()
                    .and_then(|f| f.preprocessing.clone()),
                runtime: pulled.artifact.facts.map(|f| f.runtime),
            });
        }
        // A file, or an `optimize --out` directory (model.onnx + selftest.json).
        let path = Path::new(source);
        let (file, selftest) = if path.is_dir() {
            let st = match std::fs::read(path.join("selftest.json")) {
                Ok(b) => {
                    Some(SelfTest::from_json(&b).map_err(|e| NotLoaded::refused(e.to_string()))?)
                }
                Err(_) => None,
            };
            (path.join("model.onnx"), st)
        } else {
            (PathBuf::from(path), None)
        };
        let bytes = std::fs::read(&file)
            .map_err(|e| NotLoaded::refused(format!("{}: {e}", file.display())))?;
        Ok(Fetched {
            origin: Origin {
                digest: Digest::of(&bytes).to_string(),
                source: source.to_string(),
            },
            bytes,
            selftest,
            runtime: None,
            preprocessing: None,
        })
    }

    fn runtime_for(&self, fetched: &Fetched) -> Box<dyn Runtime> {
        let onnxruntime = match self.runtime {
            RuntimeChoice::Tract => false,
            RuntimeChoice::Onnxruntime => true,
            RuntimeChoice::Auto => fetched.runtime.as_deref() == Some("onnxruntime"),
        };
        if onnxruntime {
            Box::new(edgefleet_runtime::ort::OnnxRuntime {
                threads: self.threads,
                library: None,
            })
        } else {
            Box::new(edgefleet_runtime::tract::Tract)
        }
    }

    /// Fetches, verifies (with `key`, its signature too), loads and self-tests `source`, then
    /// swaps it in. On any failure the current model keeps serving and the reason is kept in
    /// the status.
    pub async fn load(
        self: &Arc<Self>,
        source: &str,
        key: Option<&PublicKey>,
    ) -> Result<Swapped, NotLoaded> {
        let _one = self.loading.lock().await;
        let result = self.load_locked(source, key).await;
        match &result {
            Err(e) => {
                self.metrics.refused.inc();
                self.metrics.error("load");
                self.slot.refused(e.reason.clone());
                tracing::warn!(%source, reason = %e.reason, transient = e.transient, "model not loaded; the current model keeps serving");
            }
            Ok(s) if !s.unchanged && source.starts_with("oci://") => {
                let record = LastGood {
                    source: source.to_string(),
                    digest: s.digest.clone(),
                };
                if let Err(e) = self.remember(&record) {
                    tracing::warn!(error = %e, "cannot record the last good model; a restart without network will not find it");
                }
            }
            Ok(_) => {}
        }
        result
    }

    fn last_good_path(&self) -> PathBuf {
        self.cache
            .root()
            .join("sidecar")
            .join(format!("{}.json", self.name))
    }

    /// Writes the last-good record (temp file + rename: never half written).
    fn remember(&self, record: &LastGood) -> std::io::Result<()> {
        let path = self.last_good_path();
        let dir = path.parent().expect("has a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.{}", self.name, std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(record).expect("serializes"))?;
        std::fs::rename(&tmp, &path)
    }

    /// The model this sidecar last put in service from a registry, if it recorded one.
    pub fn last_good(&self) -> Option<LastGood> {
        let bytes = std::fs::read(self.last_good_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    async fn load_locked(
        self: &Arc<Self>,
        source: &str,
        key: Option<&PublicKey>,
    ) -> Result<Swapped, NotLoaded> {
        let fetched = self.fetch(source, key).await?;
        if let Some(current) = self.slot.current()
            && current.origin.digest == fetched.origin.digest
        {
            return Ok(Swapped {
                digest: current.origin.digest.clone(),
                previous: self.slot.status().previous.map(|p| p.digest),
                runtime: current.runtime,
                load_ms: 0.0,
                selftest_passed: current.selftest_passed,
                unchanged: true,
            });
        }
        let runtime = self.runtime_for(&fetched);
        let preprocessing = match &fetched.preprocessing {
            Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                NotLoaded::refused(format!("the artifact's preprocessing annotation: {e}"))
            })?),
            None => self.preprocessing.clone(),
        };
        let me = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Loaded::load(LoadRequest {
                name: &me.name,
                origin: fetched.origin.clone(),
                bytes: &fetched.bytes,
                runtime: runtime.as_ref(),
                workers: me.workers,
                inline_below: me.inline_below,
                selftest: fetched.selftest.as_ref(),
                preprocessing,
            })
        })
        .await
        .map_err(|e| NotLoaded::refused(format!("load task failed: {e}")))?
        .map_err(|e| NotLoaded {
            selftest_failed: matches!(e, crate::model::LoadError::SelfTest { .. }),
            ..NotLoaded::refused(e.to_string())
        })?;
        let labels = ModelLabels {
            name: self.name.clone(),
            digest: loaded.origin.digest.clone(),
            runtime: loaded.runtime.into(),
        };
        let swapped = Swapped {
            digest: loaded.origin.digest.clone(),
            previous: None,
            runtime: loaded.runtime,
            load_ms: loaded.load_time.as_secs_f64() * 1e3,
            selftest_passed: loaded.selftest_passed,
            unchanged: false,
        };
        let (placement, run_ms) = (loaded.placement(), loaded.run_time.as_secs_f64() * 1e3);
        let before = self.slot.status().previous.map(|p| p.digest);
        let replaced = self.slot.swap(loaded);
        if before.is_some() && before.as_deref() == Some(swapped.digest.as_str()) {
            self.metrics.rollbacks.inc();
        }
        // One model at a time: the info metric names only the one in service.
        self.metrics.model.clear();
        self.metrics.model.get_or_create(&labels).set(1);
        self.metrics.swaps.inc();
        tracing::info!(digest = %swapped.digest, previous = ?replaced.as_ref().map(|o| &o.digest), load_ms = swapped.load_ms, run_ms, placement, "model in service");
        Ok(Swapped {
            previous: replaced.map(|o| o.digest),
            ..swapped
        })
    }
}
