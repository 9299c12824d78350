//! A test-only node: there is no kubelet on the test ground, so this runs the pods of our own
//! images as local processes and writes their status as a kubelet would. Never shipped.
//!
//! It picks up pods in one namespace whose first container's command names one of the given
//! binaries, prepares their volumes as directories (emptyDir, Secret, ConfigMap, downward API),
//! rewrites mount paths and the termination-message path in args and env to those
//! directories, starts the process, reports `Running`, then `Succeeded`/`Failed` with the exit
//! code and termination message. A pod being deleted gets its process killed and is removed
//! (grace period 0), as a kubelet would confirm.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

pub const NODE_NAME: &str = "edgefleet-emulated-node";

/// A running emulator; stops (and kills its processes) when dropped.
pub struct NodeEmulator {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NodeEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Running {
    child: Child,
    sandbox: tempfile::TempDir,
    termination: PathBuf,
    log: PathBuf,
    started: String,
}

impl NodeEmulator {
    /// Runs pods of `namespace` whose command is a key of `binaries` (e.g.
    /// `"edgefleet-optimizer"` → the built binary).
    pub fn start(client: Client, namespace: &str, binaries: BTreeMap<String, PathBuf>) -> Self {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let task = tokio::spawn(async move {
            let mut running: HashMap<String, Running> = HashMap::new();
            loop {
                if let Err(e) = tick(&client, &pods, &binaries, &mut running).await {
                    eprintln!("node emulator: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        NodeEmulator { task }
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn tick(
    client: &Client,
    pods: &Api<Pod>,
    binaries: &BTreeMap<String, PathBuf>,
    running: &mut HashMap<String, Running>,
) -> Result<()> {
    let list = pods.list(&ListParams::default()).await?;
    for pod in list.items {
        let name = pod.name_any();
        let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
            continue;
        };
        let Some(binary) = container
            .command
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| binaries.get(c))
        else {
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            if let Some(mut r) = running.remove(&name) {
                let _ = r.child.kill().await;
            }
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        if let Some(r) = running.get_mut(&name) {
            if let Some(status) = r.child.try_wait()? {
                let r = running.remove(&name).expect("present");
                finish(pods, &pod, container, r, status.code().unwrap_or(137)).await?;
            }
            continue;
        }
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed" | "Running")) {
            continue;
        }
        match start(client, &pod, container, binary).await {
            Ok(r) => {
                report_running(pods, &pod, container, &r.started).await?;
                running.insert(name, r);
            }
            Err(e) => {
                eprintln!("node emulator: cannot start pod {name}: {e:#}");
            }
        }
    }
    Ok(())
}

/// Prepares volumes, rewrites paths, starts the process.
async fn start(
    client: &Client,
    pod: &Pod,
    container: &Container,
    binary: &Path,
) -> Result<Running> {
    let ns = pod.namespace().unwrap_or_default();
    let sandbox = tempfile::Builder::new()
        .prefix(&format!("pod-{}-", pod.name_any()))
        .tempdir()?;
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    let mut volume_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for v in spec.volumes.clone().unwrap_or_default() {
        let dir = sandbox.path().join("volumes").join(&v.name);
        std::fs::create_dir_all(&dir)?;
        if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let secret = Api::<Secret>::namespaced(client.clone(), &ns)
                .get(&name)
                .await
                .with_context(|| format!("Secret {ns}/{name} of volume {}", v.name))?;
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            write_items(
                &dir,
                &data,
                s.items
                    .as_ref()
                    .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect()),
            )?;
        }
        if let Some(c) = &v.config_map {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get(&c.name)
                .await
                .with_context(|| format!("ConfigMap {ns}/{} of volume {}", c.name, v.name))?;
            let data = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            write_items(
                &dir,
                &data,
                c.items
                    .as_ref()
                    .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect()),
            )?;
        }
        if let Some(d) = &v.downward_api {
            for item in d.items.clone().unwrap_or_default() {
                if let Some(f) = &item.field_ref {
                    std::fs::write(dir.join(&item.path), field(pod, &f.field_path))?;
                }
            }
        }
        volume_dirs.insert(v.name.clone(), dir);
    }
    // Container path → host path, longest first so nested mounts win.
    let mut paths: Vec<(String, PathBuf)> = container
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| Some((m.mount_path, volume_dirs.get(&m.name)?.clone())))
        .collect();
    let termination_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let termination = sandbox.path().join("termination-log");
    paths.push((termination_path, termination.clone()));
    paths.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let rewrite = |s: &str| {
        let mut out = s.to_string();
        for (from, to) in &paths {
            out = out.replace(from.as_str(), &to.display().to_string());
        }
        out
    };
    let log = sandbox.path().join("log");
    let file = std::fs::File::create(&log)?;
    let mut cmd = Command::new(binary);
    cmd.args(
        container
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| rewrite(a)),
    )
    .current_dir(sandbox.path())
    .stdin(std::process::Stdio::null())
    .stdout(file.try_clone()?)
    .stderr(file)
    .kill_on_drop(true);
    for e in container.env.clone().unwrap_or_default() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field(pod, &f.field_path)
                } else if let Some(s) = &from.secret_key_ref {
                    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
                        .get(&s.name)
                        .await?;
                    let bytes = secret
                        .data
                        .and_then(|d| d.get(&s.key).cloned())
                        .map(|b| b.0)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        cmd.env(&e.name, rewrite(&value));
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    Ok(Running {
        child,
        sandbox,
        termination,
        log,
        started: now(),
    })
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<Vec<(String, String)>>,
) -> Result<()> {
    let items = items.unwrap_or_else(|| data.keys().map(|k| (k.clone(), k.clone())).collect());
    for (key, path) in items {
        if let Some(bytes) = data.get(&key) {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(target, bytes)?;
        }
    }
    Ok(())
}

/// The downward API fields this emulator knows.
fn field(pod: &Pod, path: &str) -> String {
    match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
        "spec.nodeName" => NODE_NAME.into(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        other => pod
            .labels()
            .get(
                other
                    .trim_start_matches("metadata.labels['")
                    .trim_end_matches("']"),
            )
            .cloned()
            .unwrap_or_default(),
    }
}

async fn report_running(pods: &Api<Pod>, pod: &Pod, c: &Container, started: &str) -> Result<()> {
    let status = serde_json::json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": started},
                {"type": "Ready", "status": "True", "lastTransitionTime": started},
            ],
            "containerStatuses": [{
                "name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": started}},
            }],
        }
    });
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(())
}

async fn finish(pods: &Api<Pod>, pod: &Pod, c: &Container, r: Running, code: i32) -> Result<()> {
    let mut message = std::fs::read_to_string(&r.termination).unwrap_or_default();
    if message.trim().is_empty()
        && code != 0
        && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        message = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    }
    if message.len() > 4096 {
        message = message[message.len() - 4096..].to_string();
    }
    let finished = now();
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let status = serde_json::json!({
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": r.started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": r.started},
                {"type": "ContainersReady", "status": "False", "lastTransitionTime": finished},
                {"type": "Ready", "status": "False", "lastTransitionTime": finished},
            ],
            "containerStatuses": [{
                "name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": message,
                    "startedAt": r.started,
                    "finishedAt": finished,
                }},
            }],
        }
    });
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    // Keep the sandbox for post-mortems when asked.
    if std::env::var_os("EDGEFLEET_KEEP_PODS").is_some() {
        let kept = r.sandbox.keep();
        eprintln!(
            "node emulator: pod {} kept in {}",
            pod.name_any(),
            kept.display()
        );
    }
    Ok(())
}
