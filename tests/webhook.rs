//! Sidecar injection through the real API server: the operator creates its certificate and the
//! MutatingWebhookConfiguration, the API server calls the webhook over TLS for opted-in pods
//! only, a new certificate (the Secret deleted) is picked up with its caBundle, and with the
//! webhook down opted-in pods are refused while pods that did not opt in are created and run
//! on a node.

mod support;

use anyhow::{Context as _, ensure};
use edgefleet_testenv::{eventually, free_port, kubectl, with_namespace};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use std::time::Duration;
use support::Operator;

/// A pod that is only admitted, never run: a scheduling gate keeps it off the nodes.
fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "schedulingGates": [{"name": "edgefleet.dev/admission-only"}],
            "containers": [{"name": "camera-app", "image": "example.invalid/camera-app:1"}],
        },
    }))
    .unwrap()
}

fn sidecar(p: &Pod) -> Option<k8s_openapi::api::core::v1::Container> {
    p.spec
        .as_ref()?
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "edgefleet-sidecar")
        .cloned()
}

/// Creates an opted-in pod, retrying while the webhook is not reachable yet.
async fn opted_in(pods: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    eventually(Duration::from_secs(30), || async {
        let _ = pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await;
        let p = pod(name, serde_json::json!({"edgefleet.dev/model": "fashion"}));
        Ok(pods.create(&PostParams::default(), &p).await?)
    })
    .await
}

#[tokio::test]
async fn opted_in_pods_get_the_sidecar_and_an_outage_blocks_no_other_pod() {
    with_namespace("webhook", |client, ns| async move {
        let port = free_port();
        let configuration = format!("edgefleet-injector-{ns}");
        let url = format!("https://127.0.0.1:{port}/mutate");
        let addr = format!("127.0.0.1:{port}");
        let mut operator = Operator::start_with(
            &ns,
            &format!("{ns}-op"),
            &[
                "--controllers",
                "rollout",
                "--webhook-addr",
                &addr,
                "--webhook-url",
                &url,
                "--webhook-names",
                "127.0.0.1",
                "--webhook-configuration",
                &configuration,
                "--webhook-check-seconds",
                "1",
                "--sidecar-image",
                "registry.example/edgefleet/sidecar:test",
            ],
        );
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{out}");
        let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let result = async {
            // The operator made its CA and told the API server to trust it.
            let first_ca = eventually(Duration::from_secs(60), || async {
                let c = configs.get(&configuration).await?;
                let w = &c.webhooks.context("no webhooks")?[0];
                ensure!(w.failure_policy.as_deref() == Some("Fail"), "{w:?}");
                w.client_config.ca_bundle.clone().context("no caBundle")
            })
            .await?;
            let secret = secrets.get("edgefleet-webhook-tls").await?;
            let data = secret.data.context("no data")?;
            ensure!(
                first_ca.0 == data["ca.crt"].0,
                "caBundle is not the Secret's CA"
            );
            ensure!(data.contains_key("tls.crt") && data.contains_key("tls.key"));

            // An opted-in pod gets the native sidecar from the real API server's call.
            let created = opted_in(&pods, "camera-0").await?;
            let c = sidecar(&created).context("no sidecar injected")?;
            ensure!(c.restart_policy.as_deref() == Some("Always"), "{c:?}");
            ensure!(c.image.as_deref() == Some("registry.example/edgefleet/sidecar:test"));
            ensure!(c.args.as_ref().unwrap().contains(&"fashion".to_string()));
            let spec = created.spec.clone().unwrap();
            ensure!(spec.service_account_name.as_deref() == Some("edgefleet-sidecar"));
            ensure!(
                spec.volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == "edgefleet-cache")
            );
            ensure!(spec.containers.len() == 1 && spec.containers[0].name == "camera-app");

            // A pod that did not opt in is untouched; a malformed opt-in is refused, naming the field.
            let plain = pods
                .create(
                    &PostParams::default(),
                    &pod("plain-0", serde_json::json!({"app": "other"})),
                )
                .await?;
            ensure!(sidecar(&plain).is_none() && plain.spec.unwrap().init_containers.is_none());
            let refused = pods
                .create(
                    &PostParams::default(),
                    &pod("bad-0", serde_json::json!({"edgefleet.dev/model": ""})),
                )
                .await
                .expect_err("an empty model label is refused");
            ensure!(
                refused
                    .to_string()
                    .contains("metadata.labels[edgefleet.dev/model]"),
                "{refused}"
            );

            // A new certificate (the Secret is gone): a new CA, the caBundle follows, injection
            // keeps working.
            secrets
                .delete("edgefleet-webhook-tls", &DeleteParams::default())
                .await?;
            eventually(Duration::from_secs(60), || async {
                let c = configs.get(&configuration).await?;
                let ca = c.webhooks.context("no webhooks")?[0]
                    .client_config
                    .ca_bundle
                    .clone()
                    .context("no caBundle")?;
                ensure!(ca != first_ca, "caBundle not renewed yet");
                Ok(())
            })
            .await?;
            let again = opted_in(&pods, "camera-1").await?;
            ensure!(sidecar(&again).is_some(), "no sidecar after the renewal");

            // The webhook is down: other pods are created as ever; opted-in ones are refused
            // rather than started without their sidecar.
            operator.process.signal("KILL")?;
            operator.process.wait_timeout(Duration::from_secs(10))?;
            // (This one really runs: the camera app, on the node the scheduler picks.)
            let mut runs = support::camera_pod("plain-1", "fashion", "edge-0", false);
            runs.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
            runs.spec.as_mut().unwrap().node_selector = None;
            pods.create(&PostParams::default(), &runs).await?;
            let running = edgefleet_testenv::nodes::ready(&pods, "plain-1", Duration::from_secs(180)).await?;
            ensure!(sidecar(&running).is_none(), "a pod that did not opt in got a sidecar");
            // An optimization Job's pod names its model too, but never waits on the webhook.
            let job_pod = pods
                .create(
                    &PostParams::default(),
                    &pod(
                        "optimize-1",
                        serde_json::json!({"edgefleet.dev/model": "fashion", "edgefleet.dev/inputs": "0123456789abcdef"}),
                    ),
                )
                .await?;
            ensure!(job_pod.metadata.uid.is_some() && sidecar(&job_pod).is_none());
            let down = pods
                .create(
                    &PostParams::default(),
                    &pod(
                        "camera-2",
                        serde_json::json!({"edgefleet.dev/model": "fashion"}),
                    ),
                )
                .await
                .expect_err("an opted-in pod needs its sidecar");
            ensure!(down.to_string().contains("inject.edgefleet.dev"), "{down}");
            anyhow::Ok(())
        }
        .await;
        let _ = configs
            .delete(&configuration, &DeleteParams::default())
            .await;
        result
    })
    .await;
}
