//! The fleet rollout end to end on the local control plane: five pods with real sidecar
//! processes (each with its own ServiceAccount token), the real registry and API server, the
//! operator and the emulated node that runs its optimization Jobs.
//!
//! An EdgeModel is applied → optimized → published → every pod serves it (a first rollout
//! goes to all pods at once: they serve nothing yet). A second artifact goes to the canary
//! first, then in waves, never more than `maxUnavailable` pods (the offline one included)
//! unavailable at once, while one
//! sidecar is stopped: that pod is offline, gets the new digest at the last step, and converges
//! when it returns. A third breaches the p99 limit on the canary → the rollout aborts, every pod
//! is back on the previous digest, and the condition and a Warning Event say why. Inference
//! requests sent to the running sidecars throughout all succeed.

mod support;

use anyhow::{Context as _, bail, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_api::assignment::{Health, ModelAssignment};
use edgefleet_api::conditions::{self, types};
use edgefleet_testenv::{
    Process, argocd, env, eventually, free_port, kstatus, kubectl, with_namespace,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{apply, binary, example, ground, prepare};

const PODS: usize = 5;
const MODEL: &str = "fashion";
const LONG: Duration = Duration::from_secs(600);

/// One emulated edge pod: its Pod object and its sidecar process.
struct Member {
    pod: String,
    port: u16,
    cache: PathBuf,
    sidecar: Option<Process>,
    /// Requests are only sent while this is set.
    up: Arc<AtomicBool>,
}

fn start_sidecar(bin: &Path, ns: &str, m: &Member, kubeconfig: &Path) -> Process {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["serve", "--name", MODEL, "--heartbeat", "1s"])
        .args(["--assignment", &m.pod, "--namespace", ns])
        .args(["--listen", &format!("127.0.0.1:{}", m.port)])
        .arg("--cache")
        .arg(&m.cache)
        .args(["--plain-http", &env().registry])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube=warn");
    Process::spawn(&m.pod, cmd).expect("start sidecar")
}

fn pod(name: &str, canary: bool) -> Pod {
    let mut labels = BTreeMap::from([("edgefleet.dev/model".to_string(), MODEL.to_string())]);
    if canary {
        labels.insert("edgefleet.dev/canary".into(), "true".into());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        // The application container is never run here: the sidecar is started by the test.
        "spec": {"containers": [{"name": "camera-app", "image": "example.invalid/camera-app:1", "command": ["camera-app"]}]},
    }))
    .unwrap()
}

/// `model_version` of one inference on a sidecar.
async fn infer(http: &reqwest::Client, port: u16, seed: u32) -> Result<String, String> {
    let x = edgefleet_testenv::net::floats(28 * 28, seed);
    let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x}]});
    let r = http
        .post(format!("http://127.0.0.1:{port}/v2/models/{MODEL}/infer"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let code = r.status();
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("{code}: {v}"));
    }
    Ok(v["model_version"].as_str().unwrap_or_default().to_string())
}

fn published(m: &EdgeModel) -> Option<String> {
    let s = m.status.as_ref()?;
    Some(s.device_classes.first()?.artifact.as_ref()?.digest.clone())
}

/// Samples the assignments while a rollout runs: the first time each pod was assigned
/// `digest`, and the most pods (but `offline`) ever assigned it but not yet serving it
/// healthily.
#[derive(Default)]
struct Observed {
    assigned_at: BTreeMap<String, Instant>,
    most_unavailable: usize,
}

fn observe(
    api: Api<ModelAssignment>,
    digest: String,
    offline: &'static str,
) -> (Arc<Mutex<Observed>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Observed::default()));
    let out = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                let mut o = out.lock().unwrap();
                let mut loading = 0;
                for a in &list.items {
                    let desired = a.spec.desired.as_ref().map(|d| d.digest.as_str());
                    if desired == Some(digest.as_str()) {
                        o.assigned_at
                            .entry(a.spec.pod.name.clone())
                            .or_insert_with(Instant::now);
                        let s = a.status.clone().unwrap_or_default();
                        let serving = s.current.as_ref().map(|c| c.digest.as_str());
                        // The stopped pod is offline, not loading: the planner counts it apart.
                        let away = a.spec.pod.name == offline;
                        if !away
                            && (serving != Some(digest.as_str())
                                || s.health != Some(Health::Healthy))
                        {
                            loading += 1;
                        }
                    }
                }
                o.most_unavailable = o.most_unavailable.max(loading);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, task)
}

/// Waits until every running sidecar answers with `digest`.
async fn all_serve(http: &reqwest::Client, members: &[Member], digest: &str) -> anyhow::Result<()> {
    eventually(LONG, || async {
        for m in members.iter().filter(|m| m.sidecar.is_some()) {
            let v = infer(http, m.port, 7).await.map_err(anyhow::Error::msg)?;
            ensure!(v == digest, "{} serves {v}, not {digest}", m.pod);
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_published_model_rolls_out_in_waves_and_a_slow_one_rolls_back() {
    let optimizer = prepare();
    let sidecar_bin = binary("edgefleet-sidecar");
    with_namespace("rollout", |client, ns| async move {
        let _ground = ground(&client, &ns, &optimizer);
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let assignments: Api<ModelAssignment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let http = reqwest::Client::new();

        // The sidecars' own ServiceAccount, least privilege.
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{out}");
        let token = edgefleet_testenv::service_account_token(&ns, "edgefleet-sidecar")?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = edgefleet_testenv::token_kubeconfig(
            dir.path(),
            &edgefleet_testenv::apiserver(),
            &token,
        );

        let mut members = Vec::new();
        for i in 0..PODS {
            let name = format!("camera-{i}");
            pods.create(&PostParams::default(), &pod(&name, i == 0))
                .await?;
            let mut m = Member {
                pod: name,
                port: free_port(),
                cache: dir.path().join(format!("cache-{i}")),
                sidecar: None,
                up: Arc::new(AtomicBool::new(false)),
            };
            m.sidecar = Some(start_sidecar(&sidecar_bin, &ns, &m, &kubeconfig));
            members.push(m);
        }

        // Steady inference load on every running sidecar that serves a model.
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let mut load = Vec::new();
        for m in &members {
            let (up, port, pod, failures, answered, http) = (
                m.up.clone(),
                m.port,
                m.pod.clone(),
                failures.clone(),
                answered.clone(),
                http.clone(),
            );
            load.push(tokio::spawn(async move {
                let mut seed = 0;
                loop {
                    if up.load(Ordering::SeqCst) {
                        seed += 1;
                        match infer(&http, port, seed).await {
                            Ok(_) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            // Stopped on purpose after this request was sent.
                            Err(_) if !up.load(Ordering::SeqCst) => {}
                            Err(e) => failures.lock().unwrap().push(format!("{pod}: {e}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }

        // Revision 1: apply → optimized → published → on every pod.
        let manifest = example(MODEL, |doc| {
            let r = &mut doc["spec"]["rollout"];
            r["steps"] = serde_yaml_ng::from_str(
                "[{percent: 20, pause: 1s}, {percent: 60, pause: 1s}, {percent: 100}]",
            )
            .unwrap();
            // An offline pod counts as unavailable: 2 leaves room for one loading beside it.
            r["maxUnavailable"] = 2.into();
            r["health"]["heartbeatTimeout"] = "5s".into();
            r["health"]
                .as_mapping_mut()
                .unwrap()
                .remove("maxLatencyP99Ms");
        });
        let started = Instant::now();
        apply(&ns, &manifest);
        let d1 = eventually(LONG, || async {
            published(&models.get(MODEL).await?).context("not published yet")
        })
        .await?;
        eprintln!("published {d1} after {:?}", started.elapsed());
        all_serve(&http, &members, &d1).await?;
        for m in &members {
            m.up.store(true, Ordering::SeqCst);
        }
        let m = eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let r = m
                .status
                .as_ref()
                .and_then(|s| s.rollout.clone())
                .context("no rollout status")?;
            ensure!(r.state == "Complete" && r.ready == PODS as u32, "{r:?}");
            Ok(m)
        })
        .await?;
        eprintln!("revision 1 on all pods after {:?}", started.elapsed());
        let (health, _) = argocd::health(&serde_json::to_value(&m)?)?;
        assert_eq!(
            health, "Healthy",
            "Argo CD health of revision 1 on every pod"
        );
        kstatus_becomes(&models, "Current").await?;
        let status = m.status.clone().unwrap();
        assert_eq!(status.revision, Some(1));
        let class = &status.rollouts[0];
        assert_eq!(class.digest, d1);
        assert_eq!(class.stable_digest.as_deref(), Some(d1.as_str()));
        let rolled = conditions::find(&status.conditions, types::ROLLED_OUT).unwrap();
        assert_eq!(
            (rolled.status.as_str(), rolled.reason.as_str()),
            ("True", "RolloutComplete")
        );
        let (ok, table) = kubectl(&["get", "edgemodels", "-n", &ns]);
        ensure!(ok, "{table}");
        for column in [
            "REVISION", "ROLLOUT", "STEP", "UPDATED", "READY", "FAILED", "OFFLINE",
        ] {
            ensure!(
                table.contains(column),
                "kubectl get edgemodels lacks {column}:\n{table}"
            );
        }
        ensure!(table.contains("Complete"), "{table}");

        // Revision 2 while camera-3's sidecar is stopped: the canary first, then waves within
        // maxUnavailable; camera-3 is offline, gets the digest at the last step and converges
        // when it comes back.
        members[3].up.store(false, Ordering::SeqCst);
        members[3].sidecar = None;
        // Silent for longer than heartbeatTimeout: the rollout counts it offline.
        eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let r = m.status.and_then(|s| s.rollout).context("no rollout")?;
            ensure!(r.offline == 1 && r.ready == PODS as u32 - 1, "{r:?}");
            Ok(())
        })
        .await?;
        let patch = serde_json::json!({"spec": {"optimization": {"techniques": ["int8Dynamic"]}}});
        models
            .patch(MODEL, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let d2 = eventually(LONG, || async {
            let d = published(&models.get(MODEL).await?).context("not published")?;
            ensure!(d != d1, "still {d}");
            Ok(d)
        })
        .await?;
        eprintln!("published {d2} (revision 2)");
        let (seen, watcher) = observe(assignments.clone(), d2.clone(), "camera-3");
        all_serve(&http, &members, &d2).await?;
        let away = eventually(LONG, || async {
            let a = assignments.get("camera-3").await?;
            ensure!(
                a.spec.desired.as_ref().map(|d| d.digest.as_str()) == Some(d2.as_str()),
                "camera-3 not assigned yet"
            );
            let m = models.get(MODEL).await?;
            m.status.and_then(|s| s.rollout).context("no rollout")
        })
        .await?;
        eprintln!("while camera-3 is away: {away:?}");
        ensure!(away.offline == 1, "{away:?}");
        // Not done while a pod still waits for the revision: kstatus and Argo CD agree.
        let m = kstatus_becomes(&models, "InProgress").await?;
        let (health, _) = argocd::health(&serde_json::to_value(&m)?)?;
        assert_eq!(health, "Progressing");
        members[3].sidecar = Some(start_sidecar(&sidecar_bin, &ns, &members[3], &kubeconfig));
        all_serve(&http, &members, &d2).await?;
        members[3].up.store(true, Ordering::SeqCst);
        eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let s = m.status.context("no status")?;
            let r = s.rollout.context("no rollout")?;
            ensure!(
                s.revision == Some(2)
                    && r.state == "Complete"
                    && r.ready == PODS as u32
                    && r.offline == 0,
                "{r:?}"
            );
            Ok(())
        })
        .await?;
        watcher.abort();
        {
            let o = seen.lock().unwrap();
            let canary = o.assigned_at["camera-0"];
            ensure!(o.assigned_at.len() == PODS, "{:?}", o.assigned_at.keys());
            ensure!(
                o.assigned_at.values().all(|t| *t >= canary),
                "the canary was not first: {:?}",
                o.assigned_at
            );
            ensure!(
                o.most_unavailable <= 1,
                "{} pods loading at once beside the offline one (maxUnavailable 2)",
                o.most_unavailable
            );
        }

        // Revision 3 breaches the p99 limit on the canary: abort, everyone back on revision 2.
        let patch = serde_json::json!({"spec": {
            "optimization": {"techniques": ["pruning"]},
            "rollout": {"health": {"maxLatencyP99Ms": 0.001}},
        }});
        models
            .patch(MODEL, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let m = eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let s = m.status.clone().context("no status")?;
            ensure!(s.revision == Some(3), "revision {:?}", s.revision);
            let rolled =
                conditions::find(&s.conditions, types::ROLLED_OUT).context("no RolledOut")?;
            ensure!(rolled.reason == "RolloutAborted", "{rolled:?}");
            Ok(m)
        })
        .await?;
        let (health, message) = argocd::health(&serde_json::to_value(&m)?)?;
        assert_eq!(health, "Degraded", "{message}");
        assert!(message.contains("p99"), "{message}");
        let failed = kstatus_becomes(&models, "Failed").await?;
        let (_, message) = kstatus::status(&serde_json::to_value(&failed)?)?;
        assert!(message.contains("p99"), "kstatus says why: {message}");
        let status = m.status.unwrap();
        let rolled = conditions::find(&status.conditions, types::ROLLED_OUT).unwrap();
        assert_eq!(rolled.status, "False");
        assert!(
            rolled.message.contains("camera-0") && rolled.message.contains("p99"),
            "{}",
            rolled.message
        );
        let d3 = &status.rollouts[0].digest;
        assert_ne!(d3, &d2);
        assert_eq!(
            status.rollouts[0].stable_digest.as_deref(),
            Some(d2.as_str())
        );
        all_serve(&http, &members, &d2).await?;
        for a in assignments.list(&ListParams::default()).await?.items {
            let desired = a.spec.desired.unwrap();
            assert_eq!(
                (desired.digest.as_str(), desired.revision),
                (d2.as_str(), 2),
                "{}",
                a.spec.pod.name
            );
        }
        let outcomes: Vec<_> = status
            .history
            .iter()
            .map(|r| (r.revision, r.outcome.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, "Complete".to_string()),
                (2, "Complete".into()),
                (3, "Aborted".into())
            ]
        );
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let warned = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("RolloutAborted")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message
                        .as_deref()
                        .unwrap_or_default()
                        .contains("back to revision 2")
            });
        ensure!(warned, "no RolloutAborted Warning event");

        for task in load {
            task.abort();
        }
        let failures = failures.lock().unwrap().clone();
        let answered = answered.load(Ordering::Relaxed);
        eprintln!("{answered} inference requests answered during the rollouts");
        ensure!(answered > 100, "only {answered} requests answered");
        if !failures.is_empty() {
            bail!(
                "{} requests failed: {:?}",
                failures.len(),
                &failures[..failures.len().min(5)]
            );
        }
        Ok(())
    })
    .await;
}

/// Operator writes so far (every method but GET).
fn operator_writes(operator: &support::Operator) -> f64 {
    ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .filter_map(|v| {
            operator.metric(&format!(
                "edgefleet_operator_api_requests_total{{verb=\"{v}\"}}"
            ))
        })
        .sum()
}

#[tokio::test]
async fn two_hundred_simulated_pods_roll_out_in_steps_gates_rollbacks_and_pauses() {
    use edgefleet_testenv::fleet::{self, SimConfig, SimFleet};
    const N: usize = 200;
    with_namespace("fleet", |client, ns| async move {
        let operator =
            support::Operator::start_with(&ns, &format!("{ns}-op"), &["--controllers", "rollout"]);
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        models
            .create(&PostParams::default(), &fleet::model("sim", &[10, 50, 100]))
            .await?;
        let sims = SimFleet::start(
            client.clone(),
            &ns,
            SimConfig {
                heartbeat: Duration::from_secs(5),
                ..Default::default()
            },
        );
        fleet::create_pods(&client, &ns, "sim", "edge", N, 32).await?;
        let (a, b) = (fleet::digest("first"), fleet::digest("second"));
        fleet::publish(&client, &ns, "sim", &a).await?;
        let complete = |revision: i64| {
            let models = models.clone();
            async move {
                eventually(LONG, || async {
                    let m = models.get("sim").await?;
                    let s = m.status.clone().context("no status")?;
                    let r = s.rollout.clone().context("no rollout")?;
                    ensure!(
                        s.revision == Some(revision)
                            && r.state == "Complete"
                            && r.ready == N as u32,
                        "{r:?}"
                    );
                    Ok(m)
                })
                .await
            }
        };
        complete(1).await?;
        assert_eq!(sims.serving(&a), N);

        let before = operator_writes(&operator);
        fleet::publish(&client, &ns, "sim", &b).await?;
        let m = complete(2).await?;
        assert_eq!(sims.serving(&b), N);
        let per_pod = (operator_writes(&operator) - before) / N as f64;
        eprintln!("operator writes per pod for revision 2: {per_pod:.3}");
        ensure!(per_pod <= 3.0, "{per_pod} operator writes per pod");
        ensure!(
            per_pod >= 1.0,
            "{per_pod}: every pod needs its desired digest written"
        );
        // `kubectl edgefleet status` (the plugin binary on the PATH) shows the same.
        let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-edgefleet"));
        let path = format!(
            "{}:{}",
            plugin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("kubectl")
            .args(["edgefleet", "status", "sim", "-n", &ns])
            .env("PATH", path)
            .env("KUBECONFIG", &env().kubeconfig)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ensure!(text.contains("rollout   revision 2 Complete  step 3/3"), "{text}");
        ensure!(
            text.contains("pods      200 total  200 updated  200 ready  0 failed  0 offline"),
            "{text}"
        );
        // Argo CD's view of the same object.
        let (health, message) = argocd::health(&serde_json::to_value(&m)?)?;
        assert_eq!((health.as_str(), message.as_str()), ("Healthy", "200 of 200 pods serve the current revision"));
        let status = m.status.unwrap();
        assert_eq!(
            status.rollouts[0].stable_digest.as_deref(),
            Some(b.as_str())
        );
        assert_eq!((status.rollouts[0].step, status.rollouts[0].steps), (3, 3));
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("RolloutStepComplete"))
            .filter_map(|e| e.message)
            .collect();
        for step in [1, 2] {
            let want = format!("revision 2 step {step} of 3 complete");
            ensure!(
                notes.iter().any(|n| n.contains(&want)),
                "no event {want:?} in {notes:?}"
            );
        }

        let spec = |rollout: serde_json::Value| {
            let models = models.clone();
            async move {
                let patch = serde_json::json!({"spec": {"rollout": rollout}});
                models
                    .patch("sim", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        };
        let state = |revision: i64, want: &'static str| {
            let models = models.clone();
            async move {
                eventually(LONG, || async {
                    let s = models.get("sim").await?.status.context("no status")?;
                    let r = s.rollout.context("no rollout")?;
                    ensure!(s.revision == Some(revision) && r.state == want, "{:?} {r:?}", s.revision);
                    Ok(r)
                })
                .await
            }
        };
        // A manual gate after the first step holds revision 3 there until the spec says go.
        let c = fleet::digest("third");
        spec(serde_json::json!({"steps": [{"percent": 10, "manualGate": true}, {"percent": 50}, {"percent": 100}]})).await?;
        fleet::publish(&client, &ns, "sim", &c).await?;
        let held = state(3, "Waiting").await?;
        let (health, _) = argocd::health(&serde_json::to_value(models.get("sim").await?)?)?;
        assert_eq!(health, "Suspended", "held at a manual gate");
        ensure!(held.waiting_for.as_deref().unwrap_or_default().contains("manualGate"), "{held:?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sims.serving(&c), N / 10, "only the first step's pods move");
        spec(serde_json::json!({"steps": [{"percent": 10}, {"percent": 50}, {"percent": 100}]})).await?;
        complete(3).await?;
        assert_eq!(sims.serving(&c), N);

        // Rollback to revision 1: a new revision with revision 1's digest, through the steps.
        spec(serde_json::json!({"rollbackTo": 1})).await?;
        let m = complete(4).await?;
        assert_eq!(sims.serving(&a), N);
        let history = m.status.unwrap().history;
        let last = history.last().unwrap();
        assert_eq!((last.revision, last.digest.as_str()), (4, a.as_str()));

        // Paused: rolling forward again (rollbackTo removed) starts revision 5 but moves nobody.
        spec(serde_json::json!({"rollbackTo": null, "paused": true})).await?;
        // The (simulated) pipeline observes the new generation.
        fleet::publish(&client, &ns, "sim", &c).await?;
        state(5, "Paused").await?;
        let (health, _) = argocd::health(&serde_json::to_value(models.get("sim").await?)?)?;
        assert_eq!(health, "Suspended", "paused");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(sims.serving(&c), 0, "paused: no pod moved");
        spec(serde_json::json!({"paused": false})).await?;
        complete(5).await?;
        assert_eq!(sims.serving(&c), N);
        Ok(())
    })
    .await;
}

/// Waits until kstatus (the cli-utils library Flux and kpt use) reads the EdgeModel as `want`.
async fn kstatus_becomes(models: &Api<EdgeModel>, want: &str) -> anyhow::Result<EdgeModel> {
    eventually(Duration::from_secs(30), || async {
        let m = models.get(MODEL).await?;
        let (status, message) = kstatus::status(&serde_json::to_value(&m)?)?;
        ensure!(status == want, "kstatus {status} ({message}), want {want}");
        // Settled: what Argo CD shows now (and, with EDGEFLEET_CAPTURE_STATUS, a fixture).
        argocd::health(&serde_json::to_value(&m)?)?;
        Ok(m)
    })
    .await
}
