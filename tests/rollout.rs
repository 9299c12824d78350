//! The fleet rollout end to end on the local test ground: five camera pods on the three real
//! nodes, each with this checkout's example application (`examples/camera-app`) calling its
//! sidecar over localhost, the sidecar injected by the operator's webhook and pulled as an image
//! by the node's containerd; the real registry and API server; the operator and its
//! optimization Jobs (the optimizer image, on a node).
//!
//! An EdgeModel is applied → optimized → published → every pod serves it (a first rollout
//! goes to all pods at once: they serve nothing yet). A second artifact goes to the canary
//! first, then in waves, never more than `maxUnavailable` pods (the offline one included)
//! unavailable at once, while the link of node edge-2 is cut: its pod keeps answering its app
//! from the cache, the rollout counts it offline within the heartbeat timeout, it gets the new
//! digest at the last step, and converges when the link returns. A third breaches the p99
//! limit on the canary → the rollout aborts, every pod is back on the previous digest, and the
//! condition and a Warning Event say why. No app request fails after its first answer.

mod support;

use anyhow::{Context as _, bail, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_api::assignment::{Health, ModelAssignment};
use edgefleet_api::conditions::{self, types};
use edgefleet_api::edgemodel::{RevisionOutcome, RolloutState};
use edgefleet_testenv::nodes;
use edgefleet_testenv::{argocd, env, eventually, kstatus, kubectl, with_namespace};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{apply, camera_pod, example, prepare};

const PODS: usize = 5;
const MODEL: &str = "fashion";
const LONG: Duration = Duration::from_secs(600);
/// The pod whose node loses its link (camera-i runs on edge-(i % 3)).
const AWAY: usize = 2;
const AWAY_NODE: &str = "edge-2";
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

/// One camera pod: its name, node and address.
#[derive(Clone)]
struct Member {
    pod: String,
    node: String,
    ip: String,
}

/// Creates the camera pods (retrying while the webhook is not reachable yet) and waits until
/// each runs its sidecar (not ready yet: nothing is published).
async fn cameras(pods: &Api<Pod>) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::new();
    for i in 0..PODS {
        let name = format!("camera-{i}");
        let node = format!("edge-{}", i % 3);
        let pod = camera_pod(&name, MODEL, &node, i == 0);
        let created = support::create_pod(pods, &pod).await?;
        let injected = created
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.name == "edgefleet-sidecar"));
        ensure!(injected, "{name}: the webhook did not inject the sidecar");
        members.push(Member {
            pod: name,
            node,
            ip: String::new(),
        });
    }
    for m in &mut members {
        let pod = eventually(Duration::from_secs(300), || async {
            let p = pods.get(&m.pod).await?;
            let running = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                });
            ensure!(running, "{}: {}", m.pod, nodes::container_summary(&p));
            Ok(p)
        })
        .await?;
        ensure!(
            nodes::node_of(&pod)? == m.node,
            "{} not on {}",
            m.pod,
            m.node
        );
        m.ip = nodes::pod_ip(&pod)?;
    }
    Ok(members)
}

/// `model_version` of one inference on a member's sidecar, from the host (or, with `inside`,
/// from inside its node: the only way in while the node's link is cut).
fn infer(m: &Member, seed: u32, inside: bool) -> anyhow::Result<String> {
    let x = edgefleet_testenv::net::floats(28 * 28, seed);
    let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x}]});
    let url = format!("http://{}:8500/v2/models/{MODEL}/infer", m.ip);
    let curl = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-H",
        "Content-Type: application/json",
        "-d",
    ];
    let body = body.to_string();
    let mut args: Vec<&str> = curl.to_vec();
    args.extend([body.as_str(), url.as_str()]);
    let (ok, out) = if inside {
        nodes::in_node(&m.node, &args)?
    } else {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()?;
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    ensure!(ok, "{}: {out}", m.pod);
    let v: serde_json::Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    v["model_version"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}: {v}", m.pod))
}

/// What a member's camera app counted so far.
fn app_stats(m: &Member, inside: bool) -> anyhow::Result<serde_json::Value> {
    if inside {
        nodes::get_json_in_node(&m.node, &m.ip, 9090, "/stats")
    } else {
        nodes::get_json(&m.ip, 9090, "/stats")
    }
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
    offline: String,
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
                        // The cut-off pod is offline, not loading: the planner counts it apart.
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

/// Waits until every member's sidecar answers with `digest`.
async fn all_serve(members: &[&Member], digest: &str) -> anyhow::Result<()> {
    eventually(LONG, || async {
        for m in members {
            let v = infer(m, 7, false)?;
            ensure!(v == digest, "{} serves {v}, not {digest}", m.pod);
        }
        Ok(())
    })
    .await
}

async fn rollout_counts(
    models: &Api<EdgeModel>,
) -> anyhow::Result<edgefleet_api::edgemodel::RolloutSummary> {
    let m = models.get(MODEL).await?;
    m.status
        .and_then(|s| s.rollout)
        .context("no rollout status")
}

/// Waits for the node's Ready condition to read `want` ("True", or "Unknown" once the node
/// lifecycle controller noticed a silent kubelet).
async fn node_ready(nodes_api: &Api<Node>, node: &str, want: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(120), || async {
        let n = nodes_api.get(node).await?;
        let ready = n
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status)
            .unwrap_or_default();
        ensure!(ready == want, "node {node} Ready={ready}, want {want}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_published_model_rolls_out_in_waves_and_a_slow_one_rolls_back() {
    prepare();
    with_namespace("rollout", |client, ns| async move {
        let _operator = support::injecting_operator(&ns, &[]);
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let assignments: Api<ModelAssignment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let nodes_api: Api<Node> = Api::all(client.clone());

        // The sidecars' own ServiceAccount, least privilege.
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{out}");
        let members = cameras(&pods).await?;
        let all: Vec<&Member> = members.iter().collect();
        let reachable: Vec<&Member> = members.iter().filter(|m| m.node != AWAY_NODE).collect();

        // Revision 1: apply → optimized → published → on every pod.
        let manifest = example(MODEL, |doc| {
            let r = &mut doc["spec"]["rollout"];
            r["steps"] = serde_yaml_ng::from_str(
                "[{percent: 20, pause: 1s}, {percent: 60, pause: 1s}, {percent: 100}]",
            )
            .unwrap();
            // An offline pod counts as unavailable: 2 leaves room for one loading beside it.
            r["maxUnavailable"] = 2.into();
            r["health"]["heartbeatTimeout"] = format!("{}s", HEARTBEAT_TIMEOUT.as_secs()).into();
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
        all_serve(&all, &d1).await?;
        // Each pod was told to report every third of the heartbeat timeout.
        for a in assignments.list(&ListParams::default()).await?.items {
            assert_eq!(
                a.spec.heartbeat_interval.as_deref(),
                Some("5s"),
                "{}",
                a.name_any()
            );
        }
        let m = eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let r = m
                .status
                .as_ref()
                .and_then(|s| s.rollout.clone())
                .context("no rollout status")?;
            ensure!(
                r.state == RolloutState::Complete && r.ready == PODS as u32,
                "{r:?}"
            );
            Ok(m)
        })
        .await?;
        eprintln!("revision 1 on all pods after {:?}", started.elapsed());
        for m in &members {
            let pod = nodes::ready(&pods, &m.pod, Duration::from_secs(60)).await?;
            eprintln!(
                "{} on {}: {}",
                m.pod,
                m.node,
                nodes::container_summary(&pod)
            );
        }
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

        // Revision 2 while edge-2's link is cut: camera-2 keeps answering its app from its
        // cache, counts offline within the heartbeat timeout, gets the digest at the last step
        // and converges when the link returns.
        let away = &members[AWAY];
        let before = app_stats(away, false)?;
        let cut_at = Instant::now();
        let link = nodes::cut(AWAY_NODE)?;
        eventually(HEARTBEAT_TIMEOUT * 3, || async {
            let r = rollout_counts(&models).await?;
            ensure!(r.offline == 1 && r.ready == PODS as u32 - 1, "{r:?}");
            Ok(())
        })
        .await?;
        let counted = cut_at.elapsed();
        eprintln!("camera-2 counted offline {counted:?} after the cut");
        ensure!(
            counted <= HEARTBEAT_TIMEOUT + Duration::from_secs(4),
            "offline only after {counted:?} (heartbeatTimeout {HEARTBEAT_TIMEOUT:?})"
        );
        let during = app_stats(away, true)?;
        ensure!(
            during["answered"].as_u64() > before["answered"].as_u64()
                && during["version"] == d1.as_str()
                && during["failed_after_first_answer"] == 0,
            "camera-2's app while its node is cut off: before {before}, now {during}"
        );
        // The node lifecycle controller notices the silent kubelet, so the Job goes elsewhere.
        node_ready(&nodes_api, AWAY_NODE, "Unknown").await?;
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
        let (seen, watcher) = observe(assignments.clone(), d2.clone(), away.pod.clone());
        all_serve(&reachable, &d2).await?;
        let waiting = eventually(LONG, || async {
            let a = assignments.get(&away.pod).await?;
            ensure!(
                a.spec.desired.as_ref().map(|d| d.digest.as_str()) == Some(d2.as_str()),
                "camera-2 not assigned yet"
            );
            rollout_counts(&models).await
        })
        .await?;
        eprintln!("while camera-2 is away: {waiting:?}");
        ensure!(waiting.offline == 1, "{waiting:?}");
        // Not done while a pod still waits for the revision: kstatus and Argo CD agree.
        let m = kstatus_becomes(&models, "InProgress").await?;
        let (health, _) = argocd::health(&serde_json::to_value(&m)?)?;
        assert_eq!(health, "Progressing");
        // Still answering its app, with the model it had, from inside its node.
        ensure!(
            infer(away, 3, true)? == d1,
            "camera-2 lost its model while cut off"
        );

        link.heal()?;
        let healed_at = Instant::now();
        eventually(LONG, || async {
            let r = rollout_counts(&models).await?;
            ensure!(r.offline == 0, "{r:?}");
            Ok(())
        })
        .await?;
        let back = healed_at.elapsed();
        eprintln!("camera-2 counted back {back:?} after the link returned");
        ensure!(
            back <= HEARTBEAT_TIMEOUT / 3 + Duration::from_secs(4),
            "back only after {back:?} (reports every {:?})",
            HEARTBEAT_TIMEOUT / 3
        );
        all_serve(&all, &d2).await?;
        eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let s = m.status.context("no status")?;
            let r = s.rollout.context("no rollout")?;
            ensure!(
                s.revision == Some(2)
                    && r.state == RolloutState::Complete
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
        node_ready(&nodes_api, AWAY_NODE, "True").await?;

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
        all_serve(&all, &d2).await?;
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
            .map(|r| (r.revision, r.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, Some(RevisionOutcome::Complete)),
                (2, Some(RevisionOutcome::Complete)),
                (3, Some(RevisionOutcome::Aborted))
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

        // What the applications saw through all of it: no request failed after its first
        // answer, on any pod, through three swaps and a cut link.
        let mut answered = 0;
        for m in &members {
            let s = app_stats(m, false)?;
            eprintln!("{} app: {s}", m.pod);
            answered += s["answered"].as_u64().unwrap_or(0);
            if s["failed_after_first_answer"] != 0 {
                bail!("{}'s app saw failures after its first answer: {s}", m.pod);
            }
        }
        ensure!(answered > 500, "only {answered} app requests answered");
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
                            && r.state == RolloutState::Complete
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
        let state = |revision: i64, want: RolloutState| {
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
        let held = state(3, RolloutState::Waiting).await?;
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
        state(5, RolloutState::Paused).await?;
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
