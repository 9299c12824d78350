//! Simulated sidecars for scale tests and `make bench-rollout`: thousands of pods in one
//! process, speaking the same API as the real agent (`sidecar/src/agent.rs`) against the real
//! API server. Each pod reacts to its `ModelAssignment.spec.desired` like the real sidecar does:
//! a status report at once (`Loading`, still serving the old digest), a report when the new
//! digest serves (`Healthy`, self-test passed, latency figures), and a heartbeat report every
//! interval. One shared watch stands in for the per-pod watches (the API server's watch cache
//! fans out either way); the per-pod writes are the real ones. Never shipped.

use edgefleet_api::assignment::{DesiredArtifact, ModelAssignment};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Between two heartbeat reports of one pod (the real default is 30 s).
    pub heartbeat: Duration,
    /// How long a simulated model load takes.
    pub load: Duration,
    /// Status writes in flight at once, over the whole fleet.
    pub in_flight: usize,
    /// p99 latency the pods report, in milliseconds.
    pub p99_ms: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(30),
            load: Duration::from_millis(50),
            in_flight: 64,
            p99_ms: 3.0,
        }
    }
}

#[derive(Debug, Default)]
pub struct SimStats {
    /// Status writes by all simulated sidecars.
    pub writes: AtomicU64,
    /// Of which heartbeats.
    pub heartbeats: AtomicU64,
    /// Status writes that failed (retried at the next heartbeat).
    pub failed: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct PodState {
    desired: Option<DesiredArtifact>,
    serving: Option<DesiredArtifact>,
    last_report: Option<Instant>,
}

/// A running simulated fleet; stops when dropped.
pub struct SimFleet {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pods: Arc<Mutex<HashMap<String, PodState>>>,
    pub stats: Arc<SimStats>,
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl SimFleet {
    /// Simulates the sidecars of every `ModelAssignment` in `namespace`.
    pub fn start(client: Client, namespace: &str, config: SimConfig) -> Self {
        let api: Api<ModelAssignment> = Api::namespaced(client, namespace);
        let pods: Arc<Mutex<HashMap<String, PodState>>> = Arc::default();
        let stats = Arc::new(SimStats::default());
        let permits = Arc::new(Semaphore::new(config.in_flight));
        let sim = Sim {
            api,
            pods: pods.clone(),
            stats: stats.clone(),
            permits,
            config,
        };
        let watch = tokio::spawn(sim.clone().follow());
        let beat = tokio::spawn(sim.heartbeats());
        SimFleet {
            tasks: vec![watch, beat],
            pods,
            stats,
        }
    }

    /// Pods whose simulated sidecar serves `digest`.
    pub fn serving(&self, digest: &str) -> usize {
        self.pods
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.serving.as_ref().is_some_and(|s| s.digest == digest))
            .count()
    }

    /// Pods known (an assignment was seen).
    pub fn pods(&self) -> usize {
        self.pods.lock().unwrap().len()
    }
}

#[derive(Clone)]
struct Sim {
    api: Api<ModelAssignment>,
    pods: Arc<Mutex<HashMap<String, PodState>>>,
    stats: Arc<SimStats>,
    permits: Arc<Semaphore>,
    config: SimConfig,
}

impl Sim {
    async fn follow(self) {
        let mut events = watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let Ok(a) = event else { continue };
            let name = a.name_any();
            let desired = a.spec.desired.clone();
            let changed = {
                let mut pods = self.pods.lock().unwrap();
                let p = pods.entry(name.clone()).or_default();
                let changed = p.desired != desired;
                p.desired = desired.clone();
                changed
            };
            if changed && let Some(d) = desired {
                tokio::spawn(self.clone().swap(name, d));
            }
        }
    }

    /// What the real agent does when `spec.desired` changes: report, load, report.
    async fn swap(self, name: String, desired: DesiredArtifact) {
        let serving = self.pods.lock().unwrap()[&name].serving.clone();
        self.report(&name, serving.as_ref(), "Loading", false).await;
        tokio::time::sleep(self.config.load).await;
        let still = {
            let mut pods = self.pods.lock().unwrap();
            let p = pods.get_mut(&name).expect("known pod");
            let still = p.desired.as_ref() == Some(&desired);
            if still {
                p.serving = Some(desired.clone());
            }
            still
        };
        if still {
            self.report(&name, Some(&desired), "Healthy", false).await;
        }
    }

    async fn report(
        &self,
        name: &str,
        serving: Option<&DesiredArtifact>,
        health: &str,
        beat: bool,
    ) {
        let _permit = self.permits.acquire().await.expect("semaphore open");
        let status = serde_json::json!({"status": {
            "current": serving.map(|s| serde_json::json!({"digest": s.digest, "revision": s.revision, "loadTimeMs": self.config.load.as_secs_f64() * 1e3})),
            "health": health,
            "selfTest": serving.map(|s| serde_json::json!({"passed": true, "digest": s.digest})),
            "latencyMsP50": self.config.p99_ms / 3.0,
            "latencyMsP99": self.config.p99_ms,
            "errorRate": 0.0,
            "lastHeartbeat": now(),
        }});
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        if beat {
            self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        }
        match self
            .api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => {
                if let Some(p) = self.pods.lock().unwrap().get_mut(name) {
                    p.last_report = Some(Instant::now());
                }
            }
            Err(_) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every pod reports at least once per heartbeat interval; the pods are spread evenly over
    /// it (each one's first beat comes after a random part of the interval).
    async fn heartbeats(self) {
        let tick = Duration::from_millis(250);
        loop {
            tokio::time::sleep(tick).await;
            let due: Vec<(String, Option<DesiredArtifact>)> = {
                let mut pods = self.pods.lock().unwrap();
                let now = Instant::now();
                pods.iter_mut()
                    .filter_map(|(name, p)| {
                        let last = *p.last_report.get_or_insert_with(|| {
                            now - self.config.heartbeat.mul_f64(spread(name))
                        });
                        (now.duration_since(last) >= self.config.heartbeat).then(|| {
                            p.last_report = Some(now);
                            (name.clone(), p.serving.clone())
                        })
                    })
                    .collect()
            };
            for (name, serving) in due {
                let sim = self.clone();
                tokio::spawn(async move {
                    let health = if serving.is_some() {
                        "Healthy"
                    } else {
                        "Loading"
                    };
                    sim.report(&name, serving.as_ref(), health, true).await;
                });
            }
        }
    }
}

/// A stable number in [0, 1) per pod name.
fn spread(name: &str) -> f64 {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    (h % 10_000) as f64 / 10_000.0
}

/// An EdgeModel for simulated fleets: one device class (`cpu-int8`), rollout in `steps`
/// (cumulative percents, no pauses). Its sources are never fetched: simulated fleets run the
/// rollout controller alone and publish with [`publish`].
pub fn model(name: &str, steps: &[u32]) -> edgefleet_api::EdgeModel {
    let steps: Vec<_> = steps
        .iter()
        .map(|p| serde_json::json!({"percent": p}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"oci": "127.0.0.1:5000/edgefleet/base/fashion-cnn:v1"},
            "deviceClasses": ["cpu-int8"],
            "accuracy": {"floor": 0.85, "dataset": {"source": {"oci": "127.0.0.1:5000/edgefleet/datasets/fmnist:v1"}}},
            "publish": {"repository": "127.0.0.1:5000/edgefleet/models/simulated"},
            "rollout": {
                "steps": steps,
                "health": {"heartbeatTimeout": "120s"},
                "progressDeadline": "30m",
            },
        }
    }))
    .expect("valid EdgeModel")
}

/// Writes what the pipeline writes when an artifact for `cpu-int8` is published (same field
/// manager: observed generation, kstatus conditions, the class's artifact), so that the rollout
/// controller starts a rollout of `digest`.
pub async fn publish(
    client: &Client,
    namespace: &str,
    name: &str,
    digest: &str,
) -> anyhow::Result<()> {
    let api: Api<edgefleet_api::EdgeModel> = Api::namespaced(client.clone(), namespace);
    let generation = api.get(name).await?.metadata.generation;
    let now = now();
    let condition = |type_: &str, status: &str| serde_json::json!({"type": type_, "status": status, "reason": "Published", "message": "published for cpu-int8", "lastTransitionTime": now, "observedGeneration": generation});
    let patch = serde_json::json!({
        "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
        "status": {
        "observedGeneration": generation,
        "phase": "Ready",
        "conditions": [condition("Ready", "True"), condition("Reconciling", "False"), condition("Stalled", "False")],"deviceClasses": [{
            "name": "cpu-int8",
            "phase": "Published",
            "artifact": {
                "digest": digest,
                "reference": format!("127.0.0.1:5000/edgefleet/models/simulated@{digest}"),
                "technique": "int8-static", "runtime": "tract",
                "bytes": 1, "bytesCompressed": 1,
                "accuracy": 0.9, "baseAccuracy": 0.9, "accuracyDrop": 0.0,
            },
        }]},
    });
    api.patch_status(
        name,
        &PatchParams::apply(edgefleet_api::OPERATOR_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// `n` Pods `<prefix>-<i>` labelled for EdgeModel `model`, created `in_flight` at a time. Only
/// their metadata matters: a scheduling gate keeps them off the test ground's real nodes (the
/// simulated sidecars above stand for them; what this measures is the operator).
pub async fn create_pods(
    client: &Client,
    namespace: &str,
    model: &str,
    prefix: &str,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let pod = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{prefix}-{i}"), "labels": {"edgefleet.dev/model": model}},
                    "spec": {
                        "schedulingGates": [{"name": SIMULATED_GATE}],
                        "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                    },
                }))
                .expect("valid Pod");
                api.create(&kube::api::PostParams::default(), &pod).await
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// The scheduling gate that keeps simulated pods from ever being scheduled.
pub const SIMULATED_GATE: &str = "edgefleet.dev/simulated";

/// A digest for simulated artifacts: `sha256:` and 64 hex characters spelling `seed` (at most
/// 32 bytes), zero-padded.
pub fn digest(seed: &str) -> String {
    let hex: String = seed.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(hex.len() <= 64, "seed too long");
    format!("sha256:{hex:0>64}")
}
