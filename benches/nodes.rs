//! `make bench-nodes` (with `hack/bench-nodes.sh`): pod created → its sidecar serving the model,
//! on the test ground's real nodes, with the node's images cold (removed from its containerd
//! first: the pull is part of it) and cached. "Serving" is the moment the pod's own camera app
//! got its first answer from the sidecar (the pod's Ready condition, from the kubelet's 5 s
//! readiness probe, is reported too). The model is published by hand (no Job), so what is
//! measured is admission (webhook), scheduling, image pulls, container start, the rollout's
//! assignment, the artifact pull, verification, load and self-test. Prints JSON.

#[path = "../tests/support/mod.rs"]
mod support;

use anyhow::{Context as _, ensure};
use edgefleet_testenv::nodes::{self, images};
use edgefleet_testenv::{eventually, kubectl, with_namespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use std::time::{Duration, Instant};

const MODEL: &str = "bench";
const ROUNDS: usize = 3;

/// Removes the sidecar and camera images from the node's containerd (kubelet pulls them anew).
fn forget_images(node: &str) -> anyhow::Result<()> {
    let root = edgefleet_testenv::env()
        .kubeconfig
        .parent()
        .unwrap()
        .to_path_buf();
    let sock = root.join("nodes").join(node).join("containerd.sock");
    for image in [&images().sidecar, &images().camera_app] {
        let out = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io", "images", "rm", image])
            .output()?;
        ensure!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("not found"),
            "ctr images rm {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Creates a camera pod on `node`; returns (seconds to the app's first answer, seconds to Ready).
async fn one(pods: &Api<Pod>, name: &str, node: &str) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    support::create_pod(pods, &support::camera_pod(name, MODEL, node, false)).await?;
    let answered = eventually(Duration::from_secs(300), || async {
        let p = pods.get(name).await?;
        let s = nodes::get_json(&nodes::pod_ip(&p)?, 9090, "/stats")?;
        ensure!(s["answered"].as_u64().unwrap_or(0) > 0, "no answer yet");
        Ok(started.elapsed().as_secs_f64())
    })
    .await?;
    nodes::ready(pods, name, Duration::from_secs(300)).await?;
    let ready = started.elapsed().as_secs_f64();
    pods.delete(name, &DeleteParams::default().grace_period(0))
        .await?;
    eventually(Duration::from_secs(60), || async {
        ensure!(pods.get_opt(name).await?.is_none(), "{name} still there");
        Ok(())
    })
    .await?;
    Ok((answered, ready))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let optimizer = support::prepare();
    let result = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    let out = result.clone();
    with_namespace("bench-nodes", |client, ns| async move {
        let _operator = support::injecting_operator(&ns, &["--controllers", "rollout"]);
        let (ok, text) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{text}");
        support::hand_published(&client, &ns, MODEL, &optimizer, "60s").await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let nodes_list = nodes::names();
        let node = nodes_list.first().context("no nodes")?;
        let (mut cold, mut cold_ready, mut cached, mut cached_ready) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            forget_images(node)?;
            let (a, r) = one(&pods, &format!("cold-{round}"), node).await?;
            cold.push(a);
            cold_ready.push(r);
            let (a, r) = one(&pods, &format!("cached-{round}"), node).await?;
            cached.push(a);
            cached_ready.push(r);
            eprintln!("round {round}: cold {:.2} s (Ready {:.2} s), cached {:.2} s (Ready {:.2} s)", cold[round], cold_ready[round], cached[round], cached_ready[round]);
        }
        let sizes = &images().json["images"];
        *out.lock().unwrap() = serde_json::json!({
            "rounds": ROUNDS,
            "node": node,
            "pod_created_to_serving_cold_s": median(cold),
            "pod_created_to_ready_cold_s": median(cold_ready),
            "pod_created_to_serving_cached_s": median(cached),
            "pod_created_to_ready_cached_s": median(cached_ready),
            "images_pulled_cold_mib": sizes["sidecar"]["platforms"]["amd64"]["compressed_mib"].as_f64().unwrap_or(0.0) + sizes["camera-app"]["platforms"]["amd64"]["compressed_mib"].as_f64().unwrap_or(0.0),
            "profile": images().json["profile"],
        });
        Ok(())
    })
    .await;
    let json = result.lock().unwrap().clone();
    println!("{json}");
}
