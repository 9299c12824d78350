//! The test ground's real nodes (`hack/nodes.sh`, started by `make up`): kubelets with their own
//! containerd, each in a network namespace of its own, running the images `make images` builds
//! from the test ground's registry. Helpers to reach them the way an operator of such a fleet
//! would: wait for pods, read an app's counts over the pod network, cut a node's link and heal
//! it, restart a node's containerd or kubelet.

use crate::{Env, env, eventually, repo_root};
use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The images of this checkout (`hack/images.sh debug`, or the profile named by
/// `EDGEFLEET_IMAGE_PROFILE`, e.g. `release` for benchmarks), built and pushed once per
/// process; the script itself skips work when nothing changed since its last run.
#[derive(Debug, Clone)]
pub struct Images {
    pub operator: String,
    pub optimizer: String,
    pub sidecar: String,
    pub camera_app: String,
    /// The whole JSON document the script printed (sizes, digests).
    pub json: serde_json::Value,
}

pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let Env { registry, .. } = env();
        let out = Command::new("bash")
            .arg(repo_root().join("hack/images.sh"))
            .arg(std::env::var("EDGEFLEET_IMAGE_PROFILE").unwrap_or_else(|_| "debug".into()))
            .arg(registry)
            .current_dir(repo_root())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run hack/images.sh");
        assert!(out.status.success(), "hack/images.sh failed (above)");
        let text = String::from_utf8_lossy(&out.stdout);
        let json: serde_json::Value =
            serde_json::from_str(text.lines().last().expect("images.sh printed its JSON"))
                .expect("images.sh JSON");
        let reference = |name: &str| {
            json["images"][name]["reference"]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} image in {json}"))
                .to_string()
        };
        Images {
            operator: reference("operator"),
            optimizer: reference("optimizer"),
            sidecar: reference("sidecar"),
            camera_app: reference("camera-app"),
            json,
        }
    })
}

/// The nodes `make up` started (`edge-0`, `edge-1`, …).
pub fn names() -> Vec<String> {
    let count: usize = std::fs::read_to_string(state_dir().join("nodes.count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    (0..count).map(|i| format!("edge-{i}")).collect()
}

fn state_dir() -> std::path::PathBuf {
    env()
        .kubeconfig
        .parent()
        .expect("the kubeconfig lives in the state directory")
        .to_path_buf()
}

fn index(node: &str) -> Result<&str> {
    node.strip_prefix("edge-")
        .filter(|i| i.parse::<usize>().is_ok())
        .with_context(|| format!("{node} is not a test ground node (edge-N)"))
}

fn nodes_sh(args: &[&str]) -> Result<()> {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/nodes.sh"))
        .args(args)
        .output()
        .context("run hack/nodes.sh")?;
    ensure!(
        out.status.success(),
        "hack/nodes.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Takes the node's link down inside its namespace: it and its pods lose the network (the
/// API server, the registry, other nodes), while containers on it keep running. The link
/// comes back with [`Cut::heal`], or when the guard is dropped (a failing test never leaves a
/// node cut off).
pub fn cut(node: &str) -> Result<Cut> {
    nodes_sh(&["cut", index(node)?])?;
    Ok(Cut(node.to_string()))
}

/// A node whose link is cut.
pub struct Cut(String);

impl Cut {
    pub fn heal(self) -> Result<()> {
        nodes_sh(&["heal", index(&self.0)?])
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Ok(i) = index(&self.0) {
            let _ = nodes_sh(&["heal", i]);
        }
    }
}

/// A node process `hack/nodes.sh restart` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeProcess {
    Containerd,
    Kubelet,
    KubeProxy,
}

impl NodeProcess {
    fn name(self) -> &'static str {
        match self {
            NodeProcess::Containerd => "containerd",
            NodeProcess::Kubelet => "kubelet",
            NodeProcess::KubeProxy => "kube-proxy",
        }
    }
}

/// Stops one of the node's processes and starts it again; its containers keep running.
pub fn restart(node: &str, process: NodeProcess) -> Result<()> {
    nodes_sh(&["restart", index(node)?, process.name()])
}

/// Runs `args` inside the node's network namespace (e.g. to reach its pods while its link is
/// cut); returns (success, stdout + stderr).
pub fn in_node(node: &str, args: &[&str]) -> Result<(bool, String)> {
    let ns = format!("--net=/run/netns/edgefleet-edge-{}", index(node)?);
    let out = Command::new("nsenter")
        .arg(ns)
        .arg("--")
        .args(args)
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// A GET of `http://{ip}:{port}{path}` from inside `node`'s network namespace, as JSON.
pub fn get_json_in_node(node: &str, ip: &str, port: u16, path: &str) -> Result<serde_json::Value> {
    let url = format!("http://{ip}:{port}{path}");
    let (ok, out) = in_node(node, &["curl", "-sS", "--max-time", "5", &url])?;
    ensure!(ok, "GET {url} in {node}: {out}");
    serde_json::from_str(&out).with_context(|| format!("GET {url}: not JSON: {out}"))
}

/// A GET of `http://{ip}:{port}{path}` from the host over the test ground's network, as JSON.
pub fn get_json(ip: &str, port: u16, path: &str) -> Result<serde_json::Value> {
    let addr = format!("{ip}:{port}");
    let mut stream = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(3))
        .with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    ensure!(head.contains(" 200 "), "GET {addr}{path}: {head}");
    serde_json::from_str(body).with_context(|| format!("GET {addr}{path}: {body}"))
}

/// Waits until pod `name` runs with every container ready; returns it.
pub async fn ready(pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<Pod> {
    eventually(timeout, || async {
        let pod = pods.get(name).await?;
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            bail!(
                "pod {name} not ready: phase {:?}, {}",
                status.phase,
                container_summary(&pod)
            );
        }
        Ok(pod)
    })
    .await
}

/// One line per container: its state, restarts and last termination.
pub fn container_summary(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .map(|c| {
            let state = c.state.clone().unwrap_or_default();
            let now = if let Some(w) = state.waiting {
                format!(
                    "waiting ({}: {})",
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default()
                )
            } else if let Some(t) = state.terminated {
                format!(
                    "terminated ({}, exit {})",
                    t.reason.unwrap_or_default(),
                    t.exit_code
                )
            } else {
                "running".to_string()
            };
            format!(
                "{}: {now}, ready {}, restarts {}",
                c.name, c.ready, c.restart_count
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pod's IP on the test ground's network.
pub fn pod_ip(pod: &Pod) -> Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("pod has no IP yet")
}

/// The node a pod runs on.
pub fn node_of(pod: &Pod) -> Result<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("pod is not scheduled")
}

/// What the kernel says about a container's main process (read from the host): the facts a
/// securityContext promises.
#[derive(Debug, Clone)]
pub struct ContainerProcess {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Effective capabilities (a bit set; 0 = none).
    pub cap_eff: u64,
    /// 2 = a seccomp filter is in force.
    pub seccomp: u32,
    pub no_new_privs: bool,
    /// The root filesystem is mounted read-only.
    pub root_read_only: bool,
    /// Mount points mounted read-write whose owner, group or mode let the process's user
    /// write there (what it could change outside memory it owns).
    pub writable: Vec<String>,
}

/// The host pid of a container's first process, from its cgroup on the node.
pub fn container_pid(pod: &Pod, container: &str) -> Result<u32> {
    let node = node_of(pod)?;
    let status = pod.status.clone().unwrap_or_default();
    let id = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|c| c.name == container)
        .and_then(|c| c.container_id.clone())
        .with_context(|| format!("container {container} has no id yet"))?;
    let id = id.rsplit("://").next().unwrap_or(&id).to_string();
    let root = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/edgefleet/{node}"));
    let dir =
        find_dir(&root, &id).with_context(|| format!("no cgroup {id} under {}", root.display()))?;
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .min()
        .with_context(|| format!("container {container} has no process"))
}

fn find_dir(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
            if let Some(found) = find_dir(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

/// The kernel's view of a container's main process.
pub fn container_process(pod: &Pod, container: &str) -> Result<ContainerProcess> {
    let pid = container_pid(pod, container)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let first =
        |v: String| -> Result<u32> { Ok(v.split_whitespace().next().unwrap_or_default().parse()?) };
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let (uid, gid) = (first(field("Uid:")?)?, first(field("Gid:")?)?);
    // Seen from the host through the process's own root.
    let may_write = |path: &str| {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
        std::fs::metadata(format!("/proc/{pid}/root{path}")).is_ok_and(|m| {
            // The runtime masks /proc paths with /dev/null: writes there go nowhere.
            if m.file_type().is_char_device() {
                return false;
            }
            let mode = m.mode();
            (m.uid() == uid && mode & 0o200 != 0)
                || (m.gid() == gid && mode & 0o020 != 0)
                || mode & 0o002 != 0
        })
    };
    let mut root_read_only = false;
    let mut writable = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional…] - fstype source super
        let (left, right) = line.split_once(" - ").context("mountinfo line")?;
        let f: Vec<&str> = left.split_whitespace().collect();
        let fstype = right.split_whitespace().next().unwrap_or_default();
        let (mountpoint, options) = (f[4], f[5]);
        let read_only = options.split(',').any(|o| o == "ro");
        if mountpoint == "/" {
            root_read_only = read_only;
        } else if !read_only
            && !matches!(
                fstype,
                "proc" | "sysfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2"
            )
            && may_write(mountpoint)
        {
            writable.push(mountpoint.to_string());
        }
    }
    Ok(ContainerProcess {
        pid,
        uid,
        gid,
        cap_eff: u64::from_str_radix(&field("CapEff:")?, 16)?,
        seccomp: field("Seccomp:")?.parse()?,
        no_new_privs: field("NoNewPrivs:")? == "1",
        root_read_only,
        writable,
    })
}
