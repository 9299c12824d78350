//! A test-only node: there is no kubelet on the test ground, so this runs the pods of our own
//! images as local processes and writes their status as a kubelet would. Never shipped.
//!
//! It picks up pods in one namespace whose first container's command names one of the given
//! binaries, prepares their volumes as directories (emptyDir, Secret, ConfigMap, downward API),
//! rewrites mount paths and the termination-message path in args and env to those
//! directories, starts the process, reports `Running`, then `Succeeded`/`Failed` with the exit
//! code and termination message. A pod being deleted gets its process killed and is removed
//! (grace period 0), as a kubelet would confirm.
//!
//! Pods with an injected sidecar (an init container with `restartPolicy: Always` whose name is
//! a key of the binaries, e.g. `edgefleet-sidecar`) get that sidecar run as a long-lived
//! process instead. Pods without a command (e.g. the chart's operator Deployment) are matched by
//! their image's name. Every process gets a token of its pod's ServiceAccount unless the pod
//! opts out (a kubeconfig in its sandbox, as the kubelet would mount the token), `$(VAR)`
//! references in its args expanded, and its `0.0.0.0:<port>` listeners moved to free 127.0.0.1
//! ports, the first recorded in the pod's annotation `edgefleet.dev/emulated-address` (many
//! pods share this one host).

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

pub const NODE_NAME: &str = "edgefleet-emulated-node";
/// Where an emulated pod's sidecar listens (`127.0.0.1:<port>`).
pub const EMULATED_ADDRESS: &str = "edgefleet.dev/emulated-address";

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
        let Some((container, binary)) = runnable(&pod, binaries) else {
            continue;
        };
        let container = &container;
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

/// The container this node runs for `pod`, and its binary: an injected sidecar by name, else
/// the first container by its command, else by its image's name (`…/operator@sha256:…` →
/// `operator`).
fn runnable<'a>(
    pod: &Pod,
    binaries: &'a BTreeMap<String, PathBuf>,
) -> Option<(Container, &'a PathBuf)> {
    let spec = pod.spec.as_ref()?;
    if let Some((c, b)) = spec.init_containers.iter().flatten().find_map(|c| {
        (c.restart_policy.as_deref() == Some("Always"))
            .then(|| binaries.get(&c.name).map(|b| (c.clone(), b)))
            .flatten()
    }) {
        return Some((c, b));
    }
    let c = spec.containers.first()?;
    let by_command = c
        .command
        .as_ref()
        .and_then(|cmd| binaries.get(cmd.first()?));
    let b = by_command.or_else(|| binaries.get(image_name(c.image.as_deref()?)))?;
    Some((c.clone(), b))
}

/// The last path segment of an image reference, without tag or digest.
fn image_name(image: &str) -> &str {
    let path = image.split('@').next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    last.split(':').next().unwrap_or(last)
}

/// Expands `$(NAME)` references as the kubelet does.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
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
    cmd.current_dir(sandbox.path())
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true);
    let mut env: Vec<(String, String)> = Vec::new();
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
        env.push((e.name.clone(), rewrite(&value)));
    }
    let mut args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|a| rewrite(&expand(a, &env)))
        .collect();
    // The pod's ServiceAccount token, as the kubelet would mount it (a kubeconfig here).
    if spec.automount_service_account_token != Some(false) {
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let token =
            Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns)
                .create_token_request(
                    &account,
                    &Default::default(),
                    &k8s_openapi::api::authentication::v1::TokenRequest {
                        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                            expiration_seconds: Some(3600),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                )
                .await
                .with_context(|| format!("token of ServiceAccount {ns}/{account}"))?
                .status
                .context("no token")?
                .token;
        let kubeconfig = crate::token_kubeconfig(sandbox.path(), &crate::apiserver(), &token);
        env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    }
    // Listeners on `0.0.0.0:<port>` (`ADDR` or `--flag=ADDR`) move to free 127.0.0.1 ports: many
    // pods share this host. The first one is recorded on the pod.
    let mut first_address = None;
    for a in args.iter_mut() {
        if let Some(at) = a.find("0.0.0.0:") {
            let address = format!("127.0.0.1:{}", crate::free_port());
            first_address.get_or_insert_with(|| address.clone());
            *a = format!("{}{address}", &a[..at]);
        }
    }
    if let Some(address) = first_address {
        let patch = serde_json::json!({"metadata": {"annotations": {EMULATED_ADDRESS: address}}});
        Api::<Pod>::namespaced(client.clone(), &ns)
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    cmd.args(&args).envs(env);
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
