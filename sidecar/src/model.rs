//! A model ready to serve: loaded in its runtime as a small pool of sessions (so concurrent
//! requests do not queue on one lock), checked by its self-test before it may serve.

use edgefleet_artifact::SelfTest;
use edgefleet_runtime::{ModelInfo, Runtime, Session, argmax};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a model came from, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `sha256:…` of the artifact manifest (or of the file, for a local model).
    pub digest: String,
    /// The reference or path it was loaded from.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{model}: {reason}")]
    Invalid { model: String, reason: String },
    #[error("{model}: {runtime} cannot load it: {reason}")]
    Runtime {
        model: String,
        runtime: &'static str,
        reason: String,
    },
    #[error("{model}: self-test failed: {reason}")]
    SelfTest { model: String, reason: String },
}

pub struct Loaded {
    pub name: String,
    pub origin: Origin,
    pub runtime: &'static str,
    pub input: String,
    /// One sample's shape (the batch dimension left out).
    pub sample_shape: Vec<usize>,
    pub classes: usize,
    pub load_time: Duration,
    /// Self-test samples that passed (0 when the model carried none).
    pub selftest_passed: usize,
    /// How encoded images become input (`/v1/models/{name}/classify`), when known.
    pub preprocessing: Option<edgefleet_runtime::image::Preprocessing>,
    sessions: Mutex<Vec<Box<dyn Session>>>,
    available: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("runtime", &self.runtime)
            .finish()
    }
}

/// What loading needs besides the bytes.
pub struct LoadRequest<'a> {
    pub name: &'a str,
    pub origin: Origin,
    pub bytes: &'a [u8],
    pub runtime: &'a dyn Runtime,
    /// Sessions in the pool: how many requests run at once.
    pub workers: usize,
    pub selftest: Option<&'a SelfTest>,
    pub preprocessing: Option<edgefleet_runtime::image::Preprocessing>,
}

impl Loaded {
    /// Loads, checks shapes, runs the self-test. Blocking (call from a blocking thread).
    pub fn load(req: LoadRequest<'_>) -> Result<Self, LoadError> {
        let started = Instant::now();
        let source = req.origin.source.clone();
        let invalid = |reason: String| LoadError::Invalid {
            model: source.clone(),
            reason,
        };
        let info = ModelInfo::parse(req.bytes).map_err(&invalid)?;
        let sample_shape: Vec<usize> = match (info.input_dims.split_first(), req.selftest) {
            (_, Some(t)) if t.shape.len() > 1 => t.shape[1..].to_vec(),
            (Some((_, rest)), _) if rest.iter().all(Option::is_some) => {
                rest.iter().map(|d| d.unwrap_or(1)).collect()
            }
            _ => {
                return Err(invalid(format!(
                    "input {} has no fixed sample shape ({:?})",
                    info.input, info.input_dims
                )));
            }
        };
        let mut sessions = Vec::new();
        for _ in 0..req.workers.max(1) {
            sessions.push(
                req.runtime
                    .load(&info, &sample_shape, 1)
                    .map_err(|reason| LoadError::Runtime {
                        model: source.clone(),
                        runtime: req.runtime.name(),
                        reason,
                    })?,
            );
        }
        // One run to learn the output size and prove the model runs at all.
        let probe = vec![0.0f32; sample_shape.iter().product()];
        let out = sessions[0]
            .run(1, &probe)
            .map_err(|reason| LoadError::SelfTest {
                model: source.clone(),
                reason: format!("a zero input does not run: {reason}"),
            })?;
        let classes = out.len();
        let mut passed = 0;
        if let Some(test) = req.selftest {
            let samples = test.inputs().map_err(|e| LoadError::SelfTest {
                model: source.clone(),
                reason: e.to_string(),
            })?;
            for (i, (x, expected)) in samples.iter().enumerate() {
                let fail = |reason: String| LoadError::SelfTest {
                    model: source.clone(),
                    reason: format!("sample {i}: {reason}"),
                };
                if x.len() != probe.len() {
                    return Err(fail(format!(
                        "{} values, the model takes {}",
                        x.len(),
                        probe.len()
                    )));
                }
                let y = sessions[0].run(1, x).map_err(&fail)?;
                if y.len() != classes {
                    return Err(fail(format!("{} outputs, expected {classes}", y.len())));
                }
                if y.iter().any(|v| !v.is_finite()) {
                    return Err(fail("non-finite output".into()));
                }
                let got = argmax(&y);
                if got != *expected {
                    return Err(fail(format!("top-1 {got}, expected {expected}")));
                }
                passed += 1;
            }
        }
        let workers = sessions.len();
        Ok(Loaded {
            name: req.name.to_string(),
            origin: req.origin,
            runtime: req.runtime.name(),
            input: info.input,
            sample_shape,
            classes,
            load_time: started.elapsed(),
            selftest_passed: passed,
            preprocessing: req.preprocessing,
            sessions: Mutex::new(sessions),
            available: tokio::sync::Semaphore::new(workers),
        })
    }

    /// Values in one sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Runs `batch` samples (one after the other on one pooled session) and returns
    /// `[batch, classes]` outputs. Waits for a free session without blocking the executor.
    pub async fn infer(
        self: &std::sync::Arc<Self>,
        batch: usize,
        data: Vec<f32>,
    ) -> Result<Vec<f32>, String> {
        let permit = self
            .available
            .acquire()
            .await
            .map_err(|_| "model is shutting down".to_string())?;
        let mut session = self
            .sessions
            .lock()
            .expect("session pool")
            .pop()
            .ok_or("no free session")?;
        let me = self.clone();
        // On a worker thread turned blocking (the runtime hands its other tasks to a new one):
        // no hand-off to the blocking pool and back, which costs more than a small model runs.
        let joined = run_blocking(move || {
            let n = me.sample_len();
            let mut out = Vec::with_capacity(batch * me.classes);
            let mut result = Ok(());
            for i in 0..batch {
                match session.run(1, &data[i * n..(i + 1) * n]) {
                    Ok(y) => out.extend(y),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            (session, result.map(|_| out))
        })
        .await;
        let (session, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // The session died with its task: one permit fewer keeps permits == sessions.
                permit.forget();
                return Err(format!("inference task failed: {e}"));
            }
        };
        self.sessions.lock().expect("session pool").push(session);
        drop(permit);
        result
    }
}

/// Runs `f` where blocking is allowed: in place on a multi-threaded runtime, else on the
/// blocking pool. Errors only when `f` panicked.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(f)
        }))
        .map_err(|_| "inference panicked".to_string())
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| e.to_string())
    }
}
