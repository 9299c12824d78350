//! What must hold when pods really run, on the test ground's real nodes (kubelet, containerd,
//! runc, this checkout's images from the local registry):
//!
//! - the injected sidecar starts before the app and stops after it; its probes pass on its real
//!   listener; it runs as 65532 with a read-only root filesystem, no capabilities and
//!   RuntimeDefault seccomp, and writes only its cache volume;
//! - `kubectl logs`, `exec` and `port-forward` reach its containers through the node's kubelet;
//! - the sidecar container killed: the kubelet restarts it and it serves the model it had; the
//!   cache `emptyDir` survives that restart, and a sidecar restarted while its node's link is
//!   cut serves its last good model before the network is back;
//! - containerd or the kubelet restarted: the pod keeps serving its app;
//! - an optimization Job over its memory limit is OOM-killed and the EdgeModel says so;
//! - the sidecar's token (projected by the kubelet) is in the sidecar only, and the API server
//!   lets it write only its own pod's `ModelAssignment` status.

mod support;

use anyhow::{Context as _, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_testenv::nodes::{self, NodeProcess};
use edgefleet_testenv::{env, eventually, kubectl, with_namespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{apply, camera_pod, create_pod, example, prepare};

const MODEL: &str = "edge";
const NODE: &str = "edge-1";

/// `model_version` of one inference on the pod's sidecar, from inside its node (works while
/// the node's link is cut).
fn infer_in_node(pod: &Pod) -> anyhow::Result<String> {
    let ip = nodes::pod_ip(pod)?;
    let node = nodes::node_of(pod)?;
    let x = edgefleet_testenv::net::floats(28 * 28, 1);
    let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x}]}).to_string();
    let url = format!("http://{ip}:8500/v2/models/{MODEL}/infer");
    let (ok, out) = nodes::in_node(
        &node,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            &url,
        ],
    )?;
    ensure!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    v["model_version"].as_str().map(str::to_string).context(out)
}

fn started_at(pod: &Pod, container: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let s = pod.status.as_ref()?;
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()
        .map(|t| t.0)
}

fn restarts(pod: &Pod, container: &str) -> i32 {
    let s = pod.status.clone().unwrap_or_default();
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find(|c| c.name == container)
        .map(|c| c.restart_count)
        .unwrap_or(-1)
}

/// Waits until the pod's app has answered `more` further requests after `from`, with no new
/// failure; returns its stats.
async fn app_goes_on(
    pod: &Pod,
    from: &serde_json::Value,
    more: u64,
) -> anyhow::Result<serde_json::Value> {
    let ip = nodes::pod_ip(pod)?;
    let node = nodes::node_of(pod)?;
    let base = from["answered"].as_u64().unwrap_or(0);
    eventually(Duration::from_secs(60), || async {
        let now = nodes::get_json_in_node(&node, &ip, 9090, "/stats")?;
        ensure!(
            now["answered"].as_u64().unwrap_or(0) >= base + more,
            "app answered {} (was {base}): {now}",
            now["answered"]
        );
        Ok(now)
    })
    .await
}

/// Sends SIGKILL to the sidecar container's process (as the OOM killer or a crash would).
fn kill_sidecar(pod: &Pod) -> anyhow::Result<()> {
    let pid = nodes::container_pid(pod, "edgefleet-sidecar")?;
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -KILL {pid}");
    Ok(())
}

#[tokio::test]
async fn an_injected_sidecar_runs_locked_down_and_survives_restarts_and_a_cut_link() {
    let optimizer = prepare();
    with_namespace("edge", |client, ns| async move {
        let _operator = support::injecting_operator(&ns, &["--controllers", "rollout"]);
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{out}");
        let digest = support::hand_published(&client, &ns, MODEL, &optimizer, "15s").await?;

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let created = Instant::now();
        create_pod(&pods, &camera_pod("cam", MODEL, NODE, false)).await?;
        // Ready: the kubelet's probes reached the sidecar's real listener, with a model loaded.
        let pod = nodes::ready(&pods, "cam", Duration::from_secs(300)).await?;
        eprintln!(
            "pod created → sidecar serving in {:?}: {}",
            created.elapsed(),
            nodes::container_summary(&pod)
        );
        let (sidecar_start, app_start) = (
            started_at(&pod, "edgefleet-sidecar").context("sidecar not running")?,
            started_at(&pod, "camera-app").context("app not running")?,
        );
        ensure!(
            sidecar_start <= app_start,
            "the sidecar started at {sidecar_start}, after the app at {app_start}"
        );
        ensure!(
            infer_in_node(&pod)? == digest,
            "the sidecar serves another model"
        );

        // kubectl exec and port-forward reach the pod through its node's kubelet (the API
        // server's own client certificate), as `kubectl logs` below does.
        let (ok, out) = kubectl(&[
            "exec",
            "-n",
            &ns,
            "cam",
            "-c",
            "edgefleet-sidecar",
            "--",
            "/usr/local/bin/edgefleet-sidecar",
            "--version",
        ]);
        ensure!(
            ok && out.contains("edgefleet-sidecar"),
            "kubectl exec: {out}"
        );
        let local = edgefleet_testenv::free_port();
        let forward = tokio::process::Command::new("kubectl")
            .args(["port-forward", "-n", &ns, "pod/cam"])
            .arg(format!("{local}:8500"))
            .args(["--address", "127.0.0.1"])
            .env("KUBECONFIG", &env().kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let ready: serde_json::Value = eventually(Duration::from_secs(30), || async {
            Ok(
                reqwest::get(format!("http://127.0.0.1:{local}/v2/health/ready"))
                    .await?
                    .json()
                    .await?,
            )
        })
        .await?;
        ensure!(ready["ready"] == true, "through port-forward: {ready}");
        drop(forward);

        // Locked down, as the kernel sees it.
        let p = nodes::container_process(&pod, "edgefleet-sidecar")?;
        eprintln!("sidecar process: {p:?}");
        ensure!(
            (p.uid, p.gid) == (65532, 65532),
            "runs as {}:{}",
            p.uid,
            p.gid
        );
        ensure!(p.cap_eff == 0, "effective capabilities {:x}", p.cap_eff);
        ensure!(
            p.seccomp == 2 && p.no_new_privs,
            "seccomp mode {}, no_new_privs {}",
            p.seccomp,
            p.no_new_privs
        );
        ensure!(p.root_read_only, "the root filesystem is writable");
        // What it may write: its cache, its termination message, and the pod's shared memory
        // (a tmpfs every container of a pod gets).
        let allowed = ["/var/cache/edgefleet", "/dev/termination-log", "/dev/shm"];
        for w in &p.writable {
            ensure!(
                allowed.contains(&w.as_str()),
                "the sidecar can write {w} (writable: {:?})",
                p.writable
            );
        }
        ensure!(
            p.writable.iter().any(|w| w == "/var/cache/edgefleet"),
            "no writable cache: {:?}",
            p.writable
        );

        // Killed: the kubelet restarts it and it serves the model it had.
        let stats = nodes::get_json_in_node(NODE, &nodes::pod_ip(&pod)?, 9090, "/stats")?;
        kill_sidecar(&pod)?;
        eventually(Duration::from_secs(120), || async {
            let p = pods.get("cam").await?;
            ensure!(
                restarts(&p, "edgefleet-sidecar") == 1,
                "{}",
                nodes::container_summary(&p)
            );
            Ok(p)
        })
        .await?;
        let pod = nodes::ready(&pods, "cam", Duration::from_secs(120)).await?;
        ensure!(
            infer_in_node(&pod)? == digest,
            "after a restart the sidecar serves another model"
        );
        let stats = app_goes_on(&pod, &stats, 20).await?;

        // Restarted while the node is cut off: no API server, no registry; the last good
        // model comes from the cache volume that outlived the container.
        let link = nodes::cut(NODE)?;
        kill_sidecar(&pod)?;
        let cut_off = Instant::now();
        // (The pod's status cannot tell: its kubelet cannot reach the API server. Its address
        // is the sandbox's, which outlives the container.)
        eventually(Duration::from_secs(120), || async {
            ensure!(infer_in_node(&pod)? == digest, "not serving yet");
            Ok(())
        })
        .await?;
        eprintln!(
            "restarted while cut off: serving from its cache after {:?}",
            cut_off.elapsed()
        );
        let stats = app_goes_on(&pod, &stats, 20).await?;
        link.heal()?;
        let pod = eventually(Duration::from_secs(120), || async {
            let p = pods.get("cam").await?;
            ensure!(
                restarts(&p, "edgefleet-sidecar") == 2,
                "{}",
                nodes::container_summary(&p)
            );
            Ok(p)
        })
        .await?;

        // containerd, then the kubelet, restarted: the containers run on, the app is answered.
        for process in [NodeProcess::Containerd, NodeProcess::Kubelet] {
            let before = nodes::get_json_in_node(NODE, &nodes::pod_ip(&pod)?, 9090, "/stats")?;
            nodes::restart(NODE, process)?;
            let after = app_goes_on(&pod, &before, 20).await?;
            ensure!(
                after["failed_after_first_answer"] == before["failed_after_first_answer"],
                "the app saw failures while {process:?} restarted: {after}"
            );
            let p = nodes::ready(&pods, "cam", Duration::from_secs(120)).await?;
            ensure!(
                restarts(&p, "edgefleet-sidecar") == 2 && restarts(&p, "camera-app") == 0,
                "{process:?} restarted a container: {}",
                nodes::container_summary(&p)
            );
        }
        eprintln!("app after the restarts: {stats}");

        // Deleted: the app stops first, the sidecar after it (each says when, in its log).
        let follow = |container: &str| {
            tokio::process::Command::new("kubectl")
                .args([
                    "logs",
                    "-f",
                    "--timestamps",
                    "-n",
                    &ns,
                    "cam",
                    "-c",
                    container,
                ])
                .env("KUBECONFIG", &env().kubeconfig)
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
        };
        let (app_log, sidecar_log) = (follow("camera-app")?, follow("edgefleet-sidecar")?);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = nodes::get_json_in_node(NODE, &nodes::pod_ip(&pod)?, 9090, "/stats")?;
        pods.delete("cam", &DeleteParams::default()).await?;
        let read = |child: tokio::process::Child| async move {
            let out =
                tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let (app_log, sidecar_log) = (read(app_log).await?, read(sidecar_log).await?);
        let when = |log: &str, what: &str| {
            log.lines()
                .find(|l| l.contains(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .with_context(|| format!("no {what:?} in:\n{log}"))
        };
        let app_stopped = when(&app_log, "stopping on SIGTERM")?;
        let sidecar_told = when(&sidecar_log, "shutdown signal received")?;
        eprintln!("app stopped at {app_stopped}, sidecar told to stop at {sidecar_told}");
        ensure!(
            app_stopped <= sidecar_told,
            "the sidecar was stopped ({sidecar_told}) before the app ({app_stopped})"
        );
        let last = app_log
            .lines()
            .rev()
            .find(|l| l.contains("final counts"))
            .context("no final counts")?;
        let last: serde_json::Value =
            serde_json::from_str(last.split_once("final counts ").context("final counts")?.1)?;
        ensure!(
            last["failed_after_first_answer"] == before["failed_after_first_answer"],
            "the app's last requests failed while its pod stopped: {last} (before: {before})"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn an_optimizer_over_its_memory_limit_is_oom_killed_and_the_status_says_so() {
    prepare();
    with_namespace("oom", |client, ns| async move {
        let _operator = support::ground_with(
            &ns,
            &[
                "--optimizer-memory",
                "32Mi",
                "--optimizer-memory-limit",
                "48Mi",
            ],
        );
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // Inputs of its own (a time budget no other test uses), so nothing is reused.
        apply(
            &ns,
            &example("oom", |doc| {
                doc["spec"]["optimization"]["timeBudget"] = "1111s".into();
                doc["spec"]["optimization"]["techniques"] =
                    serde_yaml_ng::to_value(["int8Static"]).unwrap();
            }),
        );
        let message = eventually(Duration::from_secs(300), || async {
            let m = models.get("oom").await?;
            let class = m
                .status
                .as_ref()
                .and_then(|s| s.device_classes.first().cloned())
                .context("no class status")?;
            let message = class.message.unwrap_or_default();
            ensure!(message.contains("OOM-killed"), "class status: {message:?}");
            Ok(message)
        })
        .await?;
        ensure!(message.contains("48Mi"), "{message}");
        let killed = pods
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|p| {
                p.status?
                    .container_statuses?
                    .into_iter()
                    .next()?
                    .state?
                    .terminated
            })
            .any(|t| t.reason.as_deref() == Some("OOMKilled") && t.exit_code == 137);
        ensure!(killed, "no optimizer pod terminated OOMKilled");
        eprintln!("{message}");
        Ok(())
    })
    .await;
}

/// The token the kubelet projected into a container, read as the node sees it; `None` when
/// the container has none.
fn token_of(pod: &Pod, container: &str) -> anyhow::Result<Option<String>> {
    let pid = nodes::container_pid(pod, container)?;
    let path = format!(
        "/proc/{pid}/root{}/token",
        edgefleet_operator::inject::TOKEN_PATH
    );
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(path),
    }
}

#[tokio::test]
async fn a_sidecars_token_is_its_own_and_writes_only_its_pods_assignment() {
    use edgefleet_api::ModelAssignment;
    use kube::api::{Patch, PatchParams};
    let optimizer = prepare();
    with_namespace("authority", |client, ns| async move {
        let _operator = support::injecting_operator(&ns, &["--controllers", "rollout"]);
        // The policy is cluster-wide and other tests apply it too: one field manager for all.
        for file in ["examples/sidecar-rbac.yaml", "examples/sidecar-policy.yaml"] {
            let (ok, out) = edgefleet_testenv::apply_shared(&ns, file);
            ensure!(ok, "{file}: {out}");
        }
        support::hand_published(&client, &ns, MODEL, &optimizer, "15s").await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for name in ["cam-a", "cam-b"] {
            create_pod(&pods, &camera_pod(name, MODEL, NODE, false)).await?;
        }
        let a = nodes::ready(&pods, "cam-a", Duration::from_secs(300)).await?;
        nodes::ready(&pods, "cam-b", Duration::from_secs(300)).await?;

        // The token is in the sidecar, not in the app.
        let token = token_of(&a, "edgefleet-sidecar")?.context("the sidecar has no token")?;
        ensure!(
            token_of(&a, "camera-app")?.is_none(),
            "the app container can read the sidecar's token"
        );

        // As cam-a's sidecar: its own assignment's status, yes; cam-b's, no.
        let assignments: Api<ModelAssignment> = Api::namespaced(client.clone(), &ns);
        let of = |pod: &'static str| {
            let assignments = assignments.clone();
            async move {
                eventually(Duration::from_secs(60), || async {
                    assignments
                        .list(&Default::default())
                        .await?
                        .items
                        .into_iter()
                        .find(|m| m.spec.pod.name == pod)
                        .map(|m| m.metadata.name.unwrap_or_default())
                        .context("no assignment yet")
                })
                .await
            }
        };
        let (own, other) = (of("cam-a").await?, of("cam-b").await?);
        let mut config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&env().kubeconfig)?,
            &Default::default(),
        )
        .await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        let as_a: Api<ModelAssignment> = Api::namespaced(kube::Client::try_from(config)?, &ns);
        let patch = serde_json::json!({"status": {"message": "written by cam-a's token"}});
        let denied = as_a
            .patch_status(&other, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match denied {
            Err(kube::Error::Api(e)) => {
                ensure!(e.code == 403, "{e:?}");
                ensure!(
                    e.message
                        .contains("may write only its own ModelAssignment status")
                        && e.message.contains("cam-b"),
                    "{}",
                    e.message
                );
            }
            other => anyhow::bail!("cam-a's token wrote cam-b's assignment: {other:?}"),
        }
        as_a.patch_status(&own, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("cam-a's token writes its own assignment")?;
        Ok(())
    })
    .await;
}
