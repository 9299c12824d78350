//! A fleet view that does not flap, on the test ground's real nodes: three camera pods (one
//! per node) serve a completed rollout with a 15 s heartbeat timeout, so the operator tells
//! their sidecars to report every 5 s. While two busy processes saturate both cores for four
//! report intervals, every pod stays counted ready (the counts `kubectl get edgemodels` shows
//! and the Argo CD health never move). Then node edge-2's link is really cut: its pod is counted
//! offline within the timeout, and back within one interval of the link returning.

mod support;

use anyhow::{Context as _, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_api::edgemodel::RolloutState;
use edgefleet_api::edgemodel::RolloutSummary;
use edgefleet_testenv::{argocd, eventually, kubectl, nodes, with_namespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::time::{Duration, Instant};
use support::{camera_pod, create_pod, prepare};

const MODEL: &str = "steady";
const TIMEOUT: Duration = Duration::from_secs(15);
const INTERVAL: Duration = Duration::from_secs(5);

async fn summary(models: &Api<EdgeModel>) -> anyhow::Result<(RolloutSummary, String)> {
    let m = models.get(MODEL).await?;
    let (health, _) = argocd::health(&serde_json::to_value(&m)?)?;
    let r = m
        .status
        .and_then(|s| s.rollout)
        .context("no rollout status")?;
    Ok((r, health))
}

/// Busy processes, one per core, killed when dropped.
struct Busy(Vec<std::process::Child>);

impl Busy {
    fn start(n: usize) -> anyhow::Result<Self> {
        let mut children = Vec::new();
        for _ in 0..n {
            children.push(
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()?,
            );
        }
        Ok(Busy(children))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn a_busy_machine_does_not_flap_the_fleet_and_a_cut_link_is_offline_then_back() {
    let optimizer = prepare();
    with_namespace("heartbeat", |client, ns| async move {
        let _operator = support::injecting_operator(&ns, &["--controllers", "rollout"]);
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{out}");
        support::hand_published(&client, &ns, MODEL, &optimizer, "15s").await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for node in nodes::names() {
            let name = format!("cam-{node}");
            create_pod(&pods, &camera_pod(&name, MODEL, &node, false)).await?;
        }
        let fleet = nodes::names().len() as u32;
        ensure!(fleet >= 2, "this test needs two nodes or more");
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        eventually(Duration::from_secs(300), || async {
            let (r, health) = summary(&models).await?;
            ensure!(r.state == RolloutState::Complete && r.ready == fleet && health == "Healthy", "{r:?} {health}");
            Ok(())
        })
        .await?;

        // Both cores busy for four report intervals: nobody flaps.
        let busy = Busy::start(2)?;
        let until = Instant::now() + INTERVAL * 4;
        let mut samples = 0;
        while Instant::now() < until {
            let (r, health) = summary(&models).await?;
            ensure!(
                r.ready == fleet && r.offline == 0 && health == "Healthy",
                "the fleet moved under load after {samples} samples: {r:?}, Argo CD {health}"
            );
            samples += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        drop(busy);
        eprintln!("{samples} samples under load: {fleet} of {fleet} ready throughout");

        // A link really cut: offline within the timeout, back within an interval of its return.
        let away = nodes::names().last().cloned().context("no nodes")?;
        let cut = Instant::now();
        let link = nodes::cut(&away)?;
        eventually(TIMEOUT * 2, || async {
            let (r, _) = summary(&models).await?;
            ensure!(r.offline == 1 && r.ready == fleet - 1, "{r:?}");
            Ok(())
        })
        .await?;
        let offline_after = cut.elapsed();
        link.heal()?;
        let healed = Instant::now();
        eventually(TIMEOUT * 2, || async {
            let (r, _) = summary(&models).await?;
            ensure!(r.offline == 0 && r.ready == fleet, "{r:?}");
            Ok(())
        })
        .await?;
        let back_after = healed.elapsed();
        eprintln!("{away}: offline {offline_after:?} after the cut, back {back_after:?} after the link returned");
        ensure!(
            offline_after <= TIMEOUT + Duration::from_secs(3),
            "counted offline only after {offline_after:?} (heartbeatTimeout {TIMEOUT:?})"
        );
        ensure!(
            back_after <= INTERVAL + Duration::from_secs(3),
            "counted back only after {back_after:?} (reports every {INTERVAL:?})"
        );
        Ok(())
    })
    .await;
}
