//! Helpers shared by the operator's integration tests.
#![allow(dead_code)]

use edgefleet_api::{DeviceClass, EdgeModel};
use edgefleet_testenv::{Process, free_port, http_get};
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
