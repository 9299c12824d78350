//! The over-the-air agent: watches this pod's `ModelAssignment` (and only it) with the pod's own
//! ServiceAccount, loads what `spec.desired` names through the verified cache, and reports what
//! serves in `status` with a heartbeat. The decisions are in [`crate::plan`]; this is the I/O.
//!
//! Losing the API server or the registry never stops serving: the watch and the status reports
//! retry with jittered exponential backoff, failed downloads are retried the same way, and the
//! model in service stays in service.

use crate::app::{App, NotLoaded};
use crate::plan::{self, Attempt, Observed, Serving, Step};
use edgefleet_api::assignment::{DesiredArtifact, ModelAssignment};
use edgefleet_artifact::PublicKey;
use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// Where the agent finds its twin and how often it reports.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub namespace: String,
    /// The `ModelAssignment`'s name (the pod's name).
    pub name: String,
    /// The report interval until the assignment names one (`spec.heartbeatInterval`).
    pub heartbeat: Duration,
}

/// Connecting to the API server gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is dropped (the watch asks the API server to
/// end each request well before, so a healthy watch is never cut).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
const WATCH_TIMEOUT_SECONDS: u32 = 45;

/// What the agent remembers between steps.
#[derive(Default)]
struct State {
    last: Option<Attempt>,
    last_at: Option<Instant>,
    /// Revision and load moment of each digest put in service.
    revisions: HashMap<String, i64>,
    loaded_at: HashMap<String, Time>,
}

/// A number in 0..1 that differs between processes and calls (for backoff jitter).
pub fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Runs until the process ends.
pub async fn run(app: Arc<App>, client: kube::Client, config: AgentConfig) {
    let api: Api<ModelAssignment> = Api::namespaced(client, &config.namespace);
    let (tx, rx) = watch::channel::<Option<DesiredArtifact>>(None);
    let state = Arc::new(Mutex::new(State::default()));
    if let Some(current) = app.slot.current() {
        // Served from the cache at start: note when, for the status.
        state
            .lock()
            .expect("agent state")
            .loaded_at
            .insert(current.origin.digest.clone(), now());
    }
    let changed = Arc::new(Notify::new());
    let (interval_tx, interval_rx) = watch::channel(config.heartbeat);
    tokio::spawn(watch_assignment(
        api.clone(),
        config.clone(),
        tx,
        interval_tx,
        changed.clone(),
    ));
    tokio::spawn(report(
        app.clone(),
        api,
        config.clone(),
        rx.clone(),
        interval_rx,
        state.clone(),
        changed.clone(),
    ));
    converge(app, rx, state, changed).await;
}

/// Follows `spec.desired` of this pod's twin. The watcher re-lists and re-watches on its own,
/// with jittered exponential backoff, whenever the API server goes away.
async fn watch_assignment(
    api: Api<ModelAssignment>,
    config: AgentConfig,
    tx: watch::Sender<Option<DesiredArtifact>>,
    interval: watch::Sender<Duration>,
    changed: Arc<Notify>,
) {
    let wc = watcher::Config::default()
        .fields(&format!("metadata.name={}", config.name))
        .timeout(WATCH_TIMEOUT_SECONDS);
    let mut stream = watcher(api, wc).default_backoff().applied_objects().boxed();
    let mut connected = true;
    while let Some(event) = stream.next().await {
        match event {
            Ok(ma) => {
                if !connected {
                    tracing::info!(assignment = %config.name, "API server reachable again");
                    connected = true;
                    changed.notify_one();
                }
                let every =
                    plan::report_interval(ma.spec.heartbeat_interval.as_deref(), config.heartbeat);
                interval.send_if_modified(|i| {
                    let modified = *i != every;
                    if modified {
                        tracing::info!(assignment = %config.name, every = ?every, "status report interval");
                    }
                    *i = every;
                    modified
                });
                let desired = ma.spec.desired;
                let modified = tx.send_if_modified(|d| {
                    let modified = *d != desired;
                    *d = desired;
                    modified
                });
                if modified {
                    // Report at once: the revision of what serves may be known only now.
                    changed.notify_one();
                }
            }
            Err(e) => {
                if connected {
                    tracing::warn!(assignment = %format!("{}/{}", config.namespace, config.name), error = %e, "cannot watch the ModelAssignment; serving on and retrying with backoff");
                }
                connected = false;
            }
        }
    }
}

/// Loads the desired model whenever it differs from what serves.
async fn converge(
    app: Arc<App>,
    mut rx: watch::Receiver<Option<DesiredArtifact>>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) {
    loop {
        let desired = rx.borrow_and_update().clone();
        let serving = app.slot.current().map(|m| m.origin.digest.clone());
        let step = {
            let s = state.lock().expect("agent state");
            plan::next_step(
                desired.as_ref(),
                serving.as_deref(),
                s.last.as_ref(),
                s.last_at.map(|t| t.elapsed()).unwrap_or(Duration::MAX),
                jitter(),
            )
        };
        match step {
            Step::Idle => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Step::Wait(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = rx.changed() => {
                        if r.is_err() {
                            return;
                        }
                    }
                }
            }
            Step::Load(source) => {
                let desired = desired.expect("a load has a desired artifact");
                let result = match desired.public_key.as_deref().map(PublicKey::from_pem) {
                    None => app.load(&source, None).await,
                    Some(Ok(key)) => app.load(&source, Some(&key)).await,
                    Some(Err(e)) => Err(NotLoaded::refused(format!("spec.desired.publicKey: {e}"))),
                };
                let mut s = state.lock().expect("agent state");
                s.last_at = Some(Instant::now());
                match result {
                    Ok(swapped) => {
                        s.revisions.insert(swapped.digest.clone(), desired.revision);
                        if !swapped.unchanged {
                            s.loaded_at.insert(swapped.digest.clone(), now());
                        }
                        s.last = None;
                    }
                    Err(e) => {
                        let failures = match &s.last {
                            Some(a) if a.digest == desired.digest => a.failures + 1,
                            _ => 1,
                        };
                        s.last = Some(Attempt {
                            digest: desired.digest.clone(),
                            failures,
                            transient: e.transient,
                            selftest_failed: e.selftest_failed,
                            reason: e.reason,
                        });
                    }
                }
                drop(s);
                changed.notify_one();
            }
        }
    }
}

/// Writes the status on every change and at least every heartbeat; while the API server is
/// away, tries again with jittered exponential backoff (never more often than that).
async fn report(
    app: Arc<App>,
    api: Api<ModelAssignment>,
    config: AgentConfig,
    rx: watch::Receiver<Option<DesiredArtifact>>,
    mut interval: watch::Receiver<Duration>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let status = {
            let s = state.lock().expect("agent state");
            let current = app.slot.current();
            let desired = rx.borrow().clone();
            // The revision it was loaded for; a model served from the cache at start takes the
            // desired revision once that names the same digest.
            let revision = |digest: &str| {
                s.revisions.get(digest).copied().or_else(|| {
                    desired
                        .as_ref()
                        .filter(|d| d.digest == digest)
                        .map(|d| d.revision)
                })
            };
            let serving = current.as_ref().map(|m| Serving {
                digest: m.origin.digest.clone(),
                revision: revision(&m.origin.digest).unwrap_or(0),
                load_ms: m.load_time.as_secs_f64() * 1e3,
                loaded_at: s
                    .loaded_at
                    .get(&m.origin.digest)
                    .cloned()
                    .unwrap_or_else(now),
                selftest_passed: m.selftest_passed,
            });
            let previous = app.slot.status().previous.map(|p| p.digest);
            let window = app.metrics.take_window();
            plan::status(&Observed {
                serving: serving.as_ref(),
                previous: previous.as_deref(),
                desired: desired.as_ref(),
                last: s.last.as_ref(),
                window: &window,
                now: now(),
            })
        };
        let every = *interval.borrow_and_update();
        // A report that cannot get through within the interval is abandoned (and its
        // connection with it): the next one goes out on a fresh connection.
        let sent = tokio::time::timeout(
            plan::report_deadline(every),
            patch_status(&api, &config.name, &status),
        )
        .await
        .unwrap_or_else(|_| Err(kube::Error::Service("status report timed out".into())));
        let wait = match sent {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(assignment = %config.name, "status reported again");
                }
                failures = 0;
                plan::next_report(every, jitter())
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(assignment = %format!("{}/{}", config.namespace, config.name), error = %e, "cannot report status; serving on and retrying with backoff");
                }
                // Never slower than the interval: a pod whose network returns is back within one.
                plan::backoff(failures, jitter()).min(every)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changed.notified(), if failures == 0 => {}
            // A new interval takes effect at once (a shorter one must not wait out the old).
            _ = interval.changed() => {}
        }
    }
}

/// A merge patch of the whole status: fields that no longer apply are cleared (set to null).
async fn patch_status(
    api: &Api<ModelAssignment>,
    name: &str,
    status: &edgefleet_api::assignment::ModelAssignmentStatus,
) -> kube::Result<()> {
    let mut value = serde_json::to_value(status).expect("status serializes");
    let fields = value.as_object_mut().expect("status is an object");
    for key in [
        "current",
        "previous",
        "health",
        "selfTest",
        "latencyMsP50",
        "latencyMsP99",
        "errorRate",
        "lastHeartbeat",
        "message",
    ] {
        fields.entry(key).or_insert(Value::Null);
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": value })),
    )
    .await
    .map(|_| ())
}
