//! A model ready to serve: loaded in its runtime as a small pool of sessions (so concurrent
//! requests do not queue on one lock), checked by its self-test before it may serve.
//!
//! Where a request runs depends on the model's speed (`runs_inline`): a model that takes
//! milliseconds gets one long-lived inference thread per session, fed by a queue, so the session
//! always runs on the same thread with its allocator arena and the runtime's thread-local
//! scratch buffers warm; a sub-millisecond model runs in place on the tokio worker that took the
//! request, since waking another thread costs more than it gains.

use edgefleet_artifact::SelfTest;
use edgefleet_runtime::{ModelInfo, Runtime, Session, argmax};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request for an inference thread: `batch` samples and where to send the outputs.
type Job = (
    usize,
    Vec<f32>,
    tokio::sync::oneshot::Sender<Result<Vec<f32>, String>>,
);

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
    /// One warm inference, measured at load; decides where requests run.
    pub run_time: Duration,
    exec: Exec,
    /// Sessions that can still answer (a session is only lost if its thread dies).
    alive: Arc<AtomicUsize>,
}

/// Where requests run, chosen at load by how long one inference takes (`runs_inline`).
enum Exec {
    /// On the tokio worker that took the request (`block_in_place`): no hand-off to another
    /// thread, whose wake-up costs more than a sub-millisecond model runs.
    Inline {
        sessions: Mutex<Vec<Box<dyn Session>>>,
        available: tokio::sync::Semaphore,
    },
    /// On the sessions' own inference threads, through a queue. Dropping the sender (with the
    /// model) ends the threads once the requests already queued are answered.
    Threads(Sender<Job>),
}

/// Below this, one inference runs in place on the worker that took the request; above it, on
/// the session's own thread. Measured (BENCHMARKS.md): a hand-off to another thread and back
/// costs ~0.1 ms on the 2-core machine, more than a 0.1–0.5 ms model gains from a warm thread,
/// while a 2–9 ms model ran up to 0.2 ms faster per request (fp32; int8 about the same) and with
/// 10–35% more throughput on a thread of its own (warm allocator arena and scratch buffers).
pub const INLINE_BELOW: Duration = Duration::from_millis(1);

/// Whether a model whose single inference takes `run` is served in place: below `threshold`
/// (`INLINE_BELOW` unless the sidecar was started with another).
pub fn runs_inline(run: Duration, threshold: Duration) -> bool {
    run < threshold
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
    /// Faster models run in place (`runs_inline`); `INLINE_BELOW` by default.
    pub inline_below: Duration,
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
        // Every other session runs once before the model serves: a session's first run plans
        // and allocates (tens of ms for some models), which would otherwise land on a request
        // right after a swap, in the p99 the rollout's health gate reads.
        for (i, session) in sessions.iter_mut().enumerate().skip(1) {
            let y = session
                .run(1, &probe)
                .map_err(|reason| LoadError::SelfTest {
                    model: source.clone(),
                    reason: format!("session {i}: a zero input does not run: {reason}"),
                })?;
            if y.len() != classes {
                return Err(LoadError::SelfTest {
                    model: source.clone(),
                    reason: format!("session {i}: {} outputs, expected {classes}", y.len()),
                });
            }
        }
        // How long one inference takes, warm: the fastest of three.
        let run = (0..3)
            .map(|_| {
                let t = Instant::now();
                let _ = sessions[0].run(1, &probe);
                t.elapsed()
            })
            .min()
            .unwrap_or_default();
        let alive = Arc::new(AtomicUsize::new(sessions.len()));
        let exec = if runs_inline(run, req.inline_below) {
            let workers = sessions.len();
            Exec::Inline {
                sessions: Mutex::new(sessions),
                available: tokio::sync::Semaphore::new(workers),
            }
        } else {
            let sample_len = probe.len();
            let (jobs, queue) = channel::<Job>();
            let queue = Arc::new(Mutex::new(queue));
            for (i, session) in sessions.into_iter().enumerate() {
                let queue = queue.clone();
                let alive = Alive(alive.clone());
                std::thread::Builder::new()
                    .name(format!("infer-{i}"))
                    .spawn(move || {
                        let _alive = alive;
                        serve(session, &queue, sample_len, classes)
                    })
                    .map_err(|e| LoadError::Runtime {
                        model: source.clone(),
                        runtime: req.runtime.name(),
                        reason: format!("cannot start an inference thread: {e}"),
                    })?;
            }
            Exec::Threads(jobs)
        };
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
            run_time: run,
            exec,
            alive,
        })
    }

    /// Whether any session can answer: readiness is false when none can.
    pub fn answering(&self) -> bool {
        self.alive.load(Ordering::SeqCst) > 0
    }

    /// Where requests run: "in place" on the HTTP workers or on "inference threads".
    pub fn placement(&self) -> &'static str {
        match self.exec {
            Exec::Inline { .. } => "in place",
            Exec::Threads(_) => "inference threads",
        }
    }

    /// Runs `batch` samples (one after the other on one pooled session) and returns
    /// `[batch, classes]` outputs. Waits for a free session without blocking the executor.
    pub async fn infer(
        self: &std::sync::Arc<Self>,
        batch: usize,
        data: Vec<f32>,
    ) -> Result<Vec<f32>, String> {
        let (sessions, available) = match &self.exec {
            Exec::Threads(jobs) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                jobs.send((batch, data, reply))
                    .map_err(|_| "no inference thread left for this model".to_string())?;
                return answer
                    .await
                    .map_err(|_| "the inference thread ended before answering".to_string())?;
            }
            Exec::Inline {
                sessions,
                available,
            } => (sessions, available),
        };
        let permit = available
            .acquire()
            .await
            .map_err(|_| "model is shutting down".to_string())?;
        let mut session = sessions
            .lock()
            .expect("session pool")
            .pop()
            .ok_or("no free session")?;
        let (n, classes) = (self.sample_shape.iter().product(), self.classes);
        let joined = run_blocking(move || {
            let result = run_batch(session.as_mut(), batch, &data, n, classes);
            (session, result)
        })
        .await;
        let (session, result) = match joined {
            Ok(x) => x,
            Err(e) => {
                // The session died with its task (`run_batch` catches the runtime's panics, so
                // this is not expected): one permit fewer keeps permits == sessions.
                permit.forget();
                self.alive.fetch_sub(1, Ordering::SeqCst);
                return Err(format!("inference task failed: {e}"));
            }
        };
        sessions.lock().expect("session pool").push(session);
        drop(permit);
        result
    }
}

/// Runs `batch` samples of `sample_len` values one after the other; `[batch, classes]` out. A
/// panic in the runtime answers this request with an error and keeps the session: the runtimes
/// carry no state from one run to the next, and losing sessions to hostile input would end
/// with a sidecar that answers nothing.
fn run_batch(
    session: &mut dyn Session,
    batch: usize,
    data: &[f32],
    sample_len: usize,
    classes: usize,
) -> Result<Vec<f32>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out =
            Vec::with_capacity(batch.saturating_mul(classes).min(data.len().max(classes)));
        for sample in data.chunks(sample_len).take(batch) {
            out.extend(session.run(1, sample)?);
        }
        Ok(out)
    }))
    .unwrap_or_else(|panic| Err(format!("inference panicked: {}", panic_message(&*panic))))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// Counts an inference thread out of [`Loaded::answering`] when it ends.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

/// An inference thread: answers jobs with its own session until the model is dropped (a panic
/// in the runtime is an error for that request, `run_batch`).
fn serve(
    mut session: Box<dyn Session>,
    queue: &Mutex<Receiver<Job>>,
    sample_len: usize,
    classes: usize,
) {
    loop {
        let next = queue.lock().map(|q| q.recv());
        let Ok(Ok((batch, data, reply))) = next else {
            return;
        };
        let _ = reply.send(run_batch(
            session.as_mut(),
            batch,
            &data,
            sample_len,
            classes,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_millisecond_models_run_in_place_and_slower_ones_on_their_own_thread() {
        assert!(runs_inline(Duration::from_micros(85), INLINE_BELOW));
        assert!(runs_inline(Duration::from_micros(999), INLINE_BELOW));
        assert!(!runs_inline(Duration::from_millis(1), INLINE_BELOW));
        assert!(!runs_inline(Duration::from_micros(2200), INLINE_BELOW));
        // 0 (`--inline-below-ms 0`): every model on its own threads.
        assert!(!runs_inline(Duration::ZERO, Duration::ZERO));
    }

    /// A runtime whose sessions answer ten zeros, and panic on a sample starting with 42.
    struct Fragile;
    struct FragileSession;
    impl Session for FragileSession {
        fn run(&mut self, _batch: usize, data: &[f32]) -> Result<Vec<f32>, String> {
            assert!(data[0] != 42.0, "the runtime fell over");
            Ok(vec![0.0; 10])
        }
    }
    impl Runtime for Fragile {
        fn name(&self) -> &'static str {
            "fragile"
        }
        fn load(
            &self,
            _: &ModelInfo<'_>,
            _: &[usize],
            _: usize,
        ) -> Result<Box<dyn Session>, String> {
            Ok(Box::new(FragileSession))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_runtime_costs_a_request_never_a_session() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../optimizer/fixtures/fashion-cnn/model.onnx"
        ))
        .unwrap();
        for inline_below in [Duration::from_secs(1), Duration::ZERO] {
            let model = Arc::new(
                Loaded::load(LoadRequest {
                    name: "m",
                    origin: Origin {
                        digest: "sha256:x".into(),
                        source: "test".into(),
                    },
                    bytes: &bytes,
                    runtime: &Fragile,
                    workers: 2,
                    selftest: None,
                    inline_below,
                    preprocessing: None,
                })
                .unwrap(),
            );
            let mut poison = vec![0.0; 784];
            poison[0] = 42.0;
            for _ in 0..6 {
                let e = model.infer(1, poison.clone()).await.unwrap_err();
                assert!(
                    e.contains("inference panicked: the runtime fell over"),
                    "{e}"
                );
            }
            assert!(model.answering(), "{}", model.placement());
            // A lost session would leave these waiting for it: bounded.
            let answers = tokio::time::timeout(
                Duration::from_secs(10),
                futures::future::join_all((0..4).map(|_| model.infer(2, vec![0.0; 2 * 784]))),
            )
            .await
            .expect("every request answered");
            for a in answers {
                assert_eq!(a.unwrap().len(), 20, "{}", model.placement());
            }
        }
    }
}
