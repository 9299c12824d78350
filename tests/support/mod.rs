//! Helpers shared by the operator's integration tests.
#![allow(dead_code)]

use edgefleet_api::{DeviceClass, EdgeModel};
use edgefleet_testenv::nodes::images;
use edgefleet_testenv::{Process, free_port, http_get};
use edgefleet_testenv::{env, kubectl, repo_root};
use k8s_openapi::api::core::v1::Pod;
use std::path::PathBuf;
use std::process::Command;

/// A running `edgefleet-operator` limited to one namespace, with its own lease there.
pub struct Operator {
    pub process: Process,
    pub http: String,
}

impl Operator {
    pub fn start(namespace: &str, identity: &str) -> Self {
        Self::start_with(namespace, identity, &[])
    }

    pub fn start_with(namespace: &str, identity: &str, extra: &[&str]) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefleet-operator"));
        cmd.args([
            "--namespace",
            namespace,
            "--lease-namespace",
            namespace,
            "--identity",
            identity,
        ])
        .args([
            "--http-addr",
            &http,
            "--lease-duration",
            "4",
            "--lease-grace",
            "1",
        ])
        .args(extra)
        .env("RUST_LOG", "info,kube=warn");
        let process = Process::spawn(identity, cmd).expect("start edgefleet-operator");
        Self { process, http }
    }

    /// The value of a metric line (exact name with labels), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(&self.http, "/metrics").ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

/// A minimal valid EdgeModel naming `classes`.
pub fn model(name: &str, classes: &[&str]) -> EdgeModel {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"oci": "localhost:5000/edgefleet/base/fashion-cnn:v1"},
            "deviceClasses": classes,
            "accuracy": {"floor": 0.85, "dataset": {"source": {"oci": "localhost:5000/edgefleet/datasets/fmnist:v1"}}},
            "publish": {"repository": "localhost:5000/edgefleet/models/fashion"},
        }
    }))
    .unwrap()
}

/// A valid CPU DeviceClass.
pub fn class(name: &str) -> DeviceClass {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "edgefleet.dev/v1alpha1", "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"arch": ["arm64"], "runtime": "tract", "precisions": ["int8", "fp32"]},
    }))
    .unwrap()
}

/// The optimizer built for this machine (uploads and inspections from the test; the Jobs run
/// its image).
pub fn optimizer_binary() -> PathBuf {
    binary("edgefleet-optimizer")
}

/// A third-party tool built from its Go module by `hack/build-tool.sh` (cached).
pub fn tool(name: &str) -> PathBuf {
    edgefleet_testenv::tool(name).unwrap()
}

/// A workspace binary (debug), built if needed the way `make test` builds the workspace
/// (`hack/debug-build.sh`), so that no dependency is built a second time with other
/// features.
pub fn binary(package: &str) -> PathBuf {
    edgefleet_testenv::hack("debug-build.sh", &[]);
    repo_root().join("target/debug").join(package)
}

/// Uploads the base model and the dataset the example names, to the test ground's registry.
pub fn seed_registry(optimizer: &std::path::Path) {
    let registry = &env().registry;
    let data = PathBuf::from(
        String::from_utf8(
            Command::new("bash")
                .arg(repo_root().join("hack/datasets.sh"))
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim(),
    )
    .join("fashion-mnist-test.npz");
    for (flag, file, target) in [
        (
            "--model",
            repo_root().join("optimizer/fixtures/fashion-cnn/model.onnx"),
            "edgefleet/base/fashion-cnn:v1",
        ),
        (
            "--dataset",
            data,
            "edgefleet/datasets/fashion-mnist-test:v1",
        ),
    ] {
        let out = Command::new(optimizer)
            .args(["upload", flag])
            .arg(&file)
            .arg(format!("{registry}/{target}"))
            .args(["--plain-http", registry])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A time budget (seconds) of this run's own. The registry outlives test runs and a
/// published artifact with identical inputs is reused without a Job, so a test that watches
/// the optimization happen makes its inputs new with this.
pub fn fresh_time_budget() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    1200 + (u64::from(std::process::id()) * 7 + now) % 3000
}

/// The example manifest, pointed at the test ground's registry.
pub fn example(name: &str, edit: impl Fn(&mut serde_yaml_ng::Value)) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("examples/fashion-mnist.yaml"))
        .unwrap()
        .replace("localhost:5000", &env().registry);
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["metadata"]["name"] = name.into();
    edit(&mut doc);
    let path = std::env::temp_dir().join(format!("{}.yaml", edgefleet_testenv::unique_name(name)));
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    path
}

pub fn apply(ns: &str, path: &std::path::Path) {
    let (ok, out) = kubectl(&["apply", "-n", ns, "-f", path.to_str().unwrap()]);
    assert!(ok, "kubectl apply: {out}");
}

/// Once per test: the optimizer built, the example's sources in the registry, the DeviceClasses.
pub fn prepare() -> PathBuf {
    let optimizer = optimizer_binary();
    seed_registry(&optimizer);
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", "crds/"]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/deviceclasses.edgefleet.dev",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&["apply", "-f", "examples/deviceclasses.yaml"]);
    assert!(ok, "{out}");
    optimizer
}

/// The operator for `ns`, running its optimization Jobs with this checkout's optimizer image
/// on the test ground's nodes; stops when dropped.
pub fn ground(ns: &str) -> Operator {
    ground_with(ns, &[])
}

pub fn ground_with(ns: &str, extra: &[&str]) -> Operator {
    let image = images().optimizer.clone();
    let mut args = vec!["--optimizer-image", image.as_str()];
    args.extend_from_slice(extra);
    Operator::start_with(ns, &format!("{ns}-op"), &args)
}

/// The operator with its sidecar-injection webhook (the API server calls it by URL: it runs on
/// the host) and this checkout's sidecar and optimizer images; stops when dropped.
pub fn injecting_operator(ns: &str, extra: &[&str]) -> Operator {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}/mutate");
    let config = format!("edgefleet-injector-{ns}");
    let sidecar = images().sidecar.clone();
    let mut args = vec![
        "--webhook-addr",
        &addr,
        "--webhook-url",
        &url,
        "--webhook-names",
        "127.0.0.1",
        "--webhook-configuration",
        &config,
        "--sidecar-image",
        &sidecar,
        "--sidecar-plain-http",
        &env().registry,
    ];
    args.extend_from_slice(extra);
    ground_with(ns, &args)
}

/// Creates `pod`, retrying while the webhook is not reachable yet; returns it as admitted.
pub async fn create_pod(pods: &kube::Api<Pod>, pod: &Pod) -> anyhow::Result<Pod> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    edgefleet_testenv::eventually(std::time::Duration::from_secs(60), || async {
        if let Some(p) = pods.get_opt(&name).await? {
            return Ok(p);
        }
        Ok(pods.create(&Default::default(), pod).await?)
    })
    .await
}

/// A camera pod on `node` that opts in to `model`: the example application
/// (`examples/camera-app`) sends frames to its sidecar on localhost and counts the answers.
pub fn camera_pod(name: &str, model: &str, node: &str, canary: bool) -> Pod {
    let mut labels = serde_json::json!({"edgefleet.dev/model": model, "app": "camera"});
    if canary {
        labels["edgefleet.dev/canary"] = "true".into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "camera-app",
                "image": images().camera_app,
                "args": ["--model", model, "--interval-ms", "100"],
                "ports": [{"name": "stats", "containerPort": 9090}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))
    .unwrap()
}

/// An EdgeModel `name` whose artifact is published by hand (no Job): the fixture model uploaded
/// as an artifact to a repository of this namespace's own, and the status the pipeline would
/// write (`fleet::publish`), so the rollout starts at once. Returns the artifact's digest.
pub async fn hand_published(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optimizer: &std::path::Path,
    heartbeat_timeout: &str,
) -> anyhow::Result<String> {
    let repository = format!("{}/edgefleet/tests/{ns}", env().registry);
    let out = Command::new(optimizer)
        .args(["upload", "--model"])
        .arg(repo_root().join("optimizer/fixtures/fashion-cnn/model.onnx"))
        .arg(format!("{repository}:v1"))
        .args(["--plain-http", &env().registry])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text
        .lines()
        .last()
        .and_then(|r| r.rsplit_once('@'))
        .map(|(_, d)| d.to_string())
        .ok_or_else(|| anyhow::anyhow!("no digest in the upload's output: {text}"))?;
    let model: EdgeModel = serde_json::from_value(serde_json::json!({
        "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"oci": format!("{repository}:v1")},
            "deviceClasses": ["cpu-int8"],
            "accuracy": {"floor": 0.85, "dataset": {"source": {"oci": format!("{repository}:v1")}}},
            "publish": {"repository": repository, "plainHttp": true},
            "rollout": {"health": {"heartbeatTimeout": heartbeat_timeout}},
        }
    }))?;
    let models: kube::Api<EdgeModel> = kube::Api::namespaced(client.clone(), ns);
    models.create(&Default::default(), &model).await?;
    edgefleet_testenv::fleet::publish(client, ns, name, &digest).await?;
    Ok(digest)
}
