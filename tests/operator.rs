//! The operator against the real API server: status conditions with observedGeneration, recovery
//! when a missing DeviceClass appears, Events, the finalizer on delete, metrics, and a clean
//! SIGTERM that hands the lease back.

mod support;

use anyhow::{Context as _, bail, ensure};
use edgefleet_api::conditions::{self, reasons, types};
use edgefleet_api::edgemodel::Phase;
use edgefleet_api::{DeviceClass, EdgeModel};
use edgefleet_testenv::{eventually, unique_name, with_namespace};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::time::Duration;
use support::{Operator, class, model};

const WAIT: Duration = Duration::from_secs(30);

fn ready(m: &EdgeModel) -> Option<(String, String, String, Option<i64>)> {
    let status = m.status.as_ref()?;
    let c = conditions::find(&status.conditions, types::READY)?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        c.message.clone(),
        c.observed_generation,
    ))
}

#[tokio::test]
async fn reconcile_reports_a_missing_device_class_and_recovers_when_it_appears() {
    with_namespace("reconcile", |client, ns| async move {
        let operator = Operator::start(&ns, &format!("{ns}-op"));
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let classes: Api<DeviceClass> = Api::all(client.clone());
        let missing = unique_name("npu");
        let present = unique_name("cpu");
        classes
            .create(&PostParams::default(), &class(&present))
            .await?;

        models
            .create(
                &PostParams::default(),
                &model("fashion", &[&present, &missing]),
            )
            .await?;
        let stalled = eventually(WAIT, || async {
            let m = models.get("fashion").await?;
            match ready(&m) {
                Some((s, r, _, _)) if s == "False" && r == reasons::DEVICE_CLASS_NOT_FOUND => Ok(m),
                other => bail!("Ready is {other:?}"),
            }
        })
        .await?;
        let status = stalled.status.unwrap();
        let (_, _, message, generation) = ready(&models.get("fashion").await?).unwrap();
        assert_eq!(
            message,
            format!("spec.deviceClasses[1]: DeviceClass {missing:?} not found")
        );
        assert_eq!(generation, Some(1));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.phase, Some(Phase::Stalled));
        let stalled_cond = conditions::find(&status.conditions, types::STALLED).unwrap();
        assert_eq!(stalled_cond.status, "True");
        assert_eq!(
            conditions::find(&status.conditions, types::RECONCILING)
                .unwrap()
                .status,
            "False"
        );

        // A Warning event names the missing class.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        eventually(WAIT, || async {
            let list = events.list(&ListParams::default()).await?;
            ensure!(
                list.items.iter().any(|e| e.reason.as_deref()
                    == Some(reasons::DEVICE_CLASS_NOT_FOUND)
                    && e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref().unwrap_or_default().contains(&missing)),
                "no DeviceClassNotFound event yet"
            );
            Ok(())
        })
        .await?;

        // The class appears: the EdgeModel recovers without being touched and moves on to its
        // sources, which no registry serves here: it waits and retries, it does not stall.
        classes
            .create(&PostParams::default(), &class(&missing))
            .await?;
        eventually(WAIT, || async {
            let m = models.get("fashion").await?;
            match ready(&m) {
                Some((s, r, msg, _)) if s == "False" && r == reasons::SOURCE_UNAVAILABLE => {
                    ensure!(msg.starts_with("spec.source.oci: "), "message {msg:?}");
                    Ok(())
                }
                other => bail!("Ready is {other:?}"),
            }
        })
        .await?;
        let m = models.get("fashion").await?;
        let status = m.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Pending));
        // Nothing is published, so nothing rolls out: the rollout controller says so.
        eventually(WAIT, || async {
            let m = models.get("fashion").await?;
            let s = m.status.unwrap_or_default();
            let rolled = conditions::find(&s.conditions, types::ROLLED_OUT)
                .context("no RolledOut condition yet")?;
            ensure!(
                rolled.status == "False" && rolled.reason == "NothingPublished",
                "{rolled:?}"
            );
            ensure!(
                s.rollouts.is_empty() && s.revision.is_none(),
                "{:?}",
                s.rollouts
            );
            Ok(())
        })
        .await?;
        assert_eq!(
            conditions::find(&status.conditions, types::STALLED)
                .unwrap()
                .status,
            "False"
        );
        assert_eq!(
            conditions::find(&status.conditions, types::RECONCILING)
                .unwrap()
                .status,
            "True"
        );
        // The DeviceClass controller acknowledged the class with kstatus fields.
        let dc = classes.get(&missing).await?;
        let dc_status = dc.status.context("DeviceClass has no status")?;
        assert_eq!(dc_status.observed_generation, dc.metadata.generation);
        assert_eq!(
            conditions::find(&dc_status.conditions, types::ACCEPTED)
                .unwrap()
                .status,
            "True"
        );

        // A spec change is observed: observedGeneration follows the generation.
        let mut changed = m.clone();
        changed.spec.device_classes = vec![present.clone()];
        changed.status = None;
        models
            .replace("fashion", &PostParams::default(), &changed)
            .await?;
        eventually(WAIT, || async {
            let m = models.get("fashion").await?;
            let generation = m.metadata.generation;
            let observed = m.status.as_ref().and_then(|s| s.observed_generation);
            ensure!(
                generation == Some(2) && observed == Some(2),
                "generation {generation:?}, observed {observed:?}"
            );
            Ok(())
        })
        .await?;

        let reconciles = operator
            .metric(r#"edgefleet_operator_reconciles_total{controller="edgemodel"}"#)
            .unwrap_or(0.0);
        assert!(
            reconciles >= 2.0,
            "reconcile counter should count, got {reconciles}"
        );
        assert!(
            operator
                .metric(
                    r#"edgefleet_operator_reconcile_duration_seconds_count{controller="edgemodel"}"#
                )
                .unwrap_or(0.0)
                >= 2.0
        );
        assert_eq!(operator.metric("edgefleet_operator_leader"), Some(1.0));
        let (code, _) = edgefleet_testenv::http_get(&operator.http, "/healthz")?;
        assert_eq!(code, 200);
        let (code, _) = edgefleet_testenv::http_get(&operator.http, "/readyz")?;
        assert_eq!(code, 200);

        for name in [&missing, &present] {
            classes.delete(name, &DeleteParams::default()).await?;
        }
        Ok(())
    })
    .await;
}

/// A class naming an execution provider the sidecar cannot run is not accepted, a model that
/// lists it stalls naming both fields and runs no Job, and fixing the class releases the model.
#[tokio::test]
async fn a_device_class_the_sidecar_cannot_run_is_refused_not_served_on_the_cpu() {
    with_namespace("provider", |client, ns| async move {
        let operator = Operator::start(&ns, &format!("{ns}-op"));
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let classes: Api<DeviceClass> = Api::all(client.clone());
        let gpu = unique_name("gpu");
        let mut jetson = class(&gpu);
        jetson.spec.runtime = edgefleet_api::deviceclass::Runtime::Onnxruntime;
        jetson.spec.execution_provider = edgefleet_api::deviceclass::ExecutionProvider::Cuda;
        jetson.spec.precisions = vec![edgefleet_api::deviceclass::Precision::Fp16];
        classes.create(&PostParams::default(), &jetson).await?;
        models
            .create(&PostParams::default(), &model("fashion", &[&gpu]))
            .await?;

        let accepted = eventually(WAIT, || async {
            let dc = classes.get(&gpu).await?;
            let status = dc.status.context("no status yet")?;
            conditions::find(&status.conditions, types::ACCEPTED)
                .cloned()
                .context("no Accepted condition yet")
        })
        .await?;
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", reasons::UNSUPPORTED_EXECUTION_PROVIDER)
        );
        assert!(
            accepted
                .message
                .starts_with("spec.executionProvider: cuda is not available"),
            "{}",
            accepted.message
        );
        let (_, _, message, _) = eventually(WAIT, || async {
            let m = models.get("fashion").await?;
            match ready(&m) {
                Some(r) if r.0 == "False" && r.1 == reasons::UNSUPPORTED_EXECUTION_PROVIDER => {
                    Ok(r)
                }
                other => bail!("Ready is {other:?}"),
            }
        })
        .await?;
        assert!(
            message.starts_with(&format!(
                "spec.deviceClasses[0]: DeviceClass {gpu:?}: spec.executionProvider: cuda"
            )),
            "{message}"
        );
        let m = models.get("fashion").await?;
        assert_eq!(m.status.unwrap().phase, Some(Phase::Stalled));
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
        assert!(jobs.list(&ListParams::default()).await?.items.is_empty());

        // The class is changed to the CPU: the model moves on to its sources by itself.
        let mut cpu = classes.get(&gpu).await?;
        cpu.spec.execution_provider = edgefleet_api::deviceclass::ExecutionProvider::Cpu;
        classes.replace(&gpu, &PostParams::default(), &cpu).await?;
        eventually(WAIT, || async {
            let m = models.get("fashion").await?;
            match ready(&m) {
                Some((s, r, _, _)) if s == "False" && r == reasons::SOURCE_UNAVAILABLE => Ok(()),
                other => bail!("Ready is {other:?}"),
            }
        })
        .await?;
        eventually(WAIT, || async {
            let dc = classes.get(&gpu).await?;
            let status = dc.status.context("no status")?;
            let c = conditions::find(&status.conditions, types::ACCEPTED).context("none")?;
            ensure!(c.status == "True", "{c:?}");
            Ok(())
        })
        .await?;
        classes.delete(&gpu, &DeleteParams::default()).await?;
        drop(operator);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deletion_runs_the_finalizer_and_sigterm_releases_the_lease() {
    with_namespace("finalizer", |client, ns| async move {
        let identity = format!("{ns}-op");
        let mut operator = Operator::start_with(&ns, &identity, &["--log-format", "json"]);
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        models
            .create(
                &PostParams::default(),
                &model("doomed", &["does-not-exist"]),
            )
            .await?;
        eventually(WAIT, || async {
            let m = models.get("doomed").await?;
            ensure!(
                m.metadata
                    .finalizers
                    .unwrap_or_default()
                    .contains(&"edgefleet.dev/cleanup".to_string()),
                "no finalizer yet"
            );
            Ok(())
        })
        .await?;

        models.delete("doomed", &DeleteParams::default()).await?;
        eventually(WAIT, || async {
            ensure!(
                models.get_opt("doomed").await?.is_none(),
                "EdgeModel still exists (finalizer not run)"
            );
            Ok(())
        })
        .await?;
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let list = events.list(&ListParams::default()).await?;
        assert!(
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Deleted")
                    && e.involved_object.name.as_deref() == Some("doomed")),
            "cleanup should leave a Deleted event"
        );

        // SIGTERM: the process exits 0 and hands the lease back so a standby need not wait.
        operator.process.signal("TERM")?;
        let code = operator.process.wait_timeout(Duration::from_secs(15))?;
        assert_eq!(
            code,
            Some(0),
            "operator output:\n{}",
            operator.process.output()
        );
        // `--log-format json`: every line is a JSON object with a level and a message.
        let output = operator.process.output();
        let lines: Vec<_> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(lines.len() >= 3, "expected log lines, got {output:?}");
        for line in lines {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
            assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        }
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let lease = leases.get("edgefleet-operator").await?;
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        assert_ne!(holder, identity, "lease still held by the stopped operator");
        Ok(())
    })
    .await;
}
