//! The optimize → publish pipeline end to end on the local test ground: `kubectl apply` of the
//! Fashion-MNIST example leads to an optimization Job (its pod runs this checkout's optimizer
//! image on one of the real nodes), an artifact in the registry and a status with its digest
//! and accuracy; identical inputs reuse
//! the artifact without a Job; a spec change supersedes the running Job; an unreachable floor
//! stalls with one failed Job and no retries; deleting the EdgeModel deletes its Jobs.

mod support;

use anyhow::{Context as _, bail, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_api::conditions::{self, reasons, types};
use edgefleet_api::edgemodel::Phase;
use edgefleet_testenv::{argocd, env, eventually, kstatus, nodes, with_namespace};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use std::process::Command;
use std::time::Duration;
use support::{apply, example, ground, prepare};

fn condition(m: &EdgeModel, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&m.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn jobs_of(api: &Api<Job>, model: &str) -> anyhow::Result<Vec<Job>> {
    Ok(api
        .list(&ListParams::default().labels(&format!("edgefleet.dev/model={model}")))
        .await?
        .items)
}

const LONG: Duration = Duration::from_secs(600);

#[tokio::test]
async fn applying_the_example_optimizes_publishes_and_reuses() {
    let optimizer = prepare();
    with_namespace("pipeline", |client, ns| async move {
        let _operator = ground(&ns);
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        // The registry outlives test runs: a time budget of this run's own makes the inputs new,
        // so the first EdgeModel really optimizes (and the patches below do not hit artifacts
        // an earlier run published).
        let budget = support::fresh_time_budget();
        let unique = move |doc: &mut serde_yaml_ng::Value| {
            doc["spec"]["optimization"]["timeBudget"] = format!("{budget}s").into();
            doc["spec"]["publish"]["signingSecret"] = "signing".into();
        };
        // The signing key pair, as the user makes it: `edgefleet-optimizer keygen`, a Secret.
        let keys = tempfile::tempdir()?;
        let out = Command::new(&optimizer)
            .args(["keygen", "--out"])
            .arg(keys.path())
            .output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (public_pem, public_path) = (
            std::fs::read_to_string(keys.path().join("cosign.pub"))?,
            keys.path().join("cosign.pub"),
        );
        let (ok, out) = edgefleet_testenv::kubectl(&[
            "create",
            "secret",
            "generic",
            "signing",
            "-n",
            &ns,
            &format!(
                "--from-file=cosign.key={}",
                keys.path().join("cosign.key").display()
            ),
            &format!("--from-file=cosign.pub={}", public_path.display()),
        ]);
        ensure!(ok, "{out}");
        let started = std::time::Instant::now();
        apply(&ns, &example("fashion-mnist", unique));

        // A Job appears, owned by the EdgeModel, with the optimizer's command.
        let job = eventually(Duration::from_secs(60), || async {
            let list = jobs_of(&jobs, "fashion-mnist").await?;
            list.into_iter().next().context("no Job yet")
        })
        .await?;
        let owner = &job.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("EdgeModel", "fashion-mnist")
        );
        assert!(job.spec.as_ref().unwrap().active_deadline_seconds.unwrap() >= 1200);
        // Its pod runs the optimizer image on a node, locked down as the kernel sees it.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let process = eventually(Duration::from_secs(300), || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
                .await?;
            let pod = list.items.into_iter().next().context("no Job pod yet")?;
            nodes::container_process(&pod, "optimizer")
        })
        .await?;
        eprintln!("optimizer process: {process:?}");
        assert_eq!((process.uid, process.gid), (65532, 65532));
        assert_eq!(process.cap_eff, 0, "no capabilities");
        assert!(process.seccomp == 2 && process.no_new_privs, "{process:?}");
        assert!(process.root_read_only, "{process:?}");
        for w in &process.writable {
            assert!(
                ["/work", "/dev/termination-log", "/dev/shm"].contains(&w.as_str()),
                "the optimizer can write {w}: {process:?}"
            );
        }

        // Published: the status names the artifact, and the registry agrees.
        let model = eventually(LONG, || async {
            let m = models.get("fashion-mnist").await?;
            match condition(&m, types::PUBLISHED) {
                Some((s, _, _)) if s == "True" => Ok(m),
                _ => bail!(
                    "not published yet: {:?} / {:?}",
                    condition(&m, types::READY),
                    m.status.as_ref().map(|s| &s.device_classes)
                ),
            }
        })
        .await?;
        let published_after = started.elapsed();
        let status = model.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(condition(&model, types::OPTIMIZED).unwrap().0, "True");
        let class = &status.device_classes[0];
        assert_eq!(class.name, "cpu-int8");
        let artifact = class.artifact.clone().context("no artifact in status")?;
        assert!(artifact.reference.starts_with(&format!(
            "{}/edgefleet/models/fashion-mnist@sha256:",
            env().registry
        )));
        assert!(
            artifact.accuracy >= 0.85,
            "floor holds: {}",
            artifact.accuracy
        );
        assert!(
            artifact.accuracy_drop <= 0.01 + 1e-9,
            "maxDrop holds: {}",
            artifact.accuracy_drop
        );
        assert!(artifact.bytes_compressed < artifact.bytes);
        let inspect = Command::new(&optimizer)
            .args([
                "inspect",
                "--json",
                &artifact.reference,
                "--plain-http",
                &env().registry,
            ])
            .output()?;
        ensure!(
            inspect.status.success(),
            "{}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout)?;
        assert_eq!(inspected["digest"], artifact.digest.as_str());
        let annotations = &inspected["manifest"]["annotations"];
        assert_eq!(
            annotations["dev.edgefleet.inputs-digest"],
            class.inputs_digest.clone().unwrap().as_str()
        );
        assert_eq!(
            annotations["dev.edgefleet.technique"],
            artifact.technique.as_str()
        );
        eprintln!("kubectl apply → Published in {published_after:?}");

        // Signed by the Job: the status names the key, and both our verifier and cosign's
        // accept the signature with the Secret's public key.
        assert_eq!(artifact.public_key.as_deref(), Some(public_pem.as_str()));
        let verify = Command::new(&optimizer)
            .args(["verify", &artifact.reference, "--key"])
            .arg(&public_path)
            .args(["--plain-http", &env().registry])
            .output()?;
        ensure!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let cosign = edgefleet_testenv::tool("cosign")?;
        let verify = Command::new(cosign)
            .args(["verify", "--key"])
            .arg(&public_path)
            .args([
                "--insecure-ignore-tlog=true",
                "--allow-http-registry",
                "--new-bundle-format=false",
                &artifact.reference,
            ])
            .output()?;
        ensure!(
            verify.status.success(),
            "cosign verify: {}",
            String::from_utf8_lossy(&verify.stderr)
        );

        // Identical inputs under another name: reused, no Job.
        apply(&ns, &example("fashion-mnist-again", unique));
        let again = eventually(Duration::from_secs(60), || async {
            let m = models.get("fashion-mnist-again").await?;
            match condition(&m, types::PUBLISHED) {
                Some((s, _, _)) if s == "True" => Ok(m),
                other => bail!("not published yet: {other:?}"),
            }
        })
        .await?;
        let reused = &again.status.unwrap().device_classes[0];
        assert_eq!(reused.artifact.as_ref().unwrap().digest, artifact.digest);
        assert!(
            jobs_of(&jobs, "fashion-mnist-again").await?.is_empty(),
            "no Job for identical inputs"
        );
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let list = events.list(&ListParams::default()).await?;
        assert!(
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reasons::REUSED)
                    && e.involved_object.name.as_deref() == Some("fashion-mnist-again"))
        );

        // Someone who can push replaces the reuse tag with an artifact of their own, carrying
        // the same annotations (better accuracy, even) but no signature: not reused. A Job runs.
        let inputs: edgefleet_artifact::Digest = class.inputs_digest.clone().unwrap().parse()?;
        let tag = edgefleet_operator::pipeline::artifact_tag("cpu-int8", &inputs);
        let repository = artifact.reference.split('@').next().unwrap().to_string();
        let forged = edgefleet_artifact::pack(
            &edgefleet_artifact::manifest::Contents {
                model: &std::fs::read(
                    edgefleet_testenv::repo_root()
                        .join("optimizer/fixtures/fashion-cnn/model.onnx"),
                )?,
                ..Default::default()
            },
            &edgefleet_artifact::Facts {
                device_class: "cpu-int8".into(),
                runtime: artifact.runtime.clone(),
                technique: "fp32".into(),
                accuracy: 0.99,
                base_accuracy: Some(0.99),
                inputs_digest: Some(inputs.clone()),
                ..Default::default()
            },
            Default::default(),
        )?;
        let pusher = edgefleet_artifact::Registry::new(edgefleet_artifact::RegistryOptions {
            plain_http: vec![env().registry.clone()],
            ..Default::default()
        })?;
        pusher.push(&format!("{repository}:{tag}"), &forged).await?;
        apply(&ns, &example("fashion-mnist-forged", unique));
        eventually(Duration::from_secs(60), || async {
            ensure!(
                !jobs_of(&jobs, "fashion-mnist-forged").await?.is_empty(),
                "no Job yet"
            );
            let list = events.list(&ListParams::default()).await?;
            let refused = list.items.iter().find(|e| {
                e.reason.as_deref() == Some(reasons::SIGNATURE_REFUSED)
                    && e.involved_object.name.as_deref() == Some("fashion-mnist-forged")
            });
            let note = refused
                .and_then(|e| e.message.clone())
                .context("no SignatureRefused Event yet")?;
            ensure!(note.contains("unsigned") && note.contains(&tag), "{note}");
            Ok(())
        })
        .await?;
        let forged_status = models
            .get("fashion-mnist-forged")
            .await?
            .status
            .unwrap_or_default();
        assert!(
            forged_status
                .device_classes
                .iter()
                .all(|c| c.artifact.is_none()),
            "the forged artifact was published: {forged_status:?}"
        );
        models
            .delete("fashion-mnist-forged", &DeleteParams::default())
            .await?;

        // A spec change supersedes: the new inputs get a new Job, a running one is replaced
        // when the spec changes again, and the old Jobs are deleted.
        let patch =
            |budget: &str| serde_json::json!({"spec": {"optimization": {"timeBudget": budget}}});
        models
            .patch(
                "fashion-mnist",
                &PatchParams::default(),
                &Patch::Merge(&patch(&format!("{}s", budget - 60))),
            )
            .await?;
        let second = eventually(Duration::from_secs(60), || async {
            let list = jobs_of(&jobs, "fashion-mnist").await?;
            list.into_iter()
                .find(|j| {
                    j.metadata.name != job.metadata.name && j.metadata.deletion_timestamp.is_none()
                })
                .context("no second Job yet")
        })
        .await?;
        models
            .patch(
                "fashion-mnist",
                &PatchParams::default(),
                &Patch::Merge(&patch(&format!("{}s", budget - 120))),
            )
            .await?;
        eventually(Duration::from_secs(60), || async {
            let names: Vec<_> = jobs_of(&jobs, "fashion-mnist")
                .await?
                .into_iter()
                .map(|j| j.metadata.name.unwrap_or_default())
                .collect();
            ensure!(
                names.len() == 1
                    && !names.contains(job.metadata.name.as_ref().unwrap())
                    && !names.contains(second.metadata.name.as_ref().unwrap()),
                "jobs: {names:?}"
            );
            Ok(())
        })
        .await?;

        // Deleting the EdgeModel deletes its Jobs.
        models
            .delete("fashion-mnist", &DeleteParams::default())
            .await?;
        eventually(Duration::from_secs(60), || async {
            ensure!(
                models.get_opt("fashion-mnist").await?.is_none(),
                "EdgeModel still there"
            );
            ensure!(
                jobs_of(&jobs, "fashion-mnist").await?.is_empty(),
                "Jobs still there"
            );
            Ok(())
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_floor_stalls_once_without_retries() {
    prepare();
    with_namespace("floor", |client, ns| async move {
        let _operator = ground(&ns);
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        // Registry credentials travel as a dockerconfigjson Secret mounted into the Job (this
        // registry accepts anyone, but the optimizer must read the mounted file).
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        let config = serde_json::json!({"auths": {env().registry.clone(): {"username": "fleet", "password": "unused"}}});
        let secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "registry-creds"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": config.to_string()},
        }))?;
        secrets.create(&Default::default(), &secret).await?;
        // Nothing reaches 99% on Fashion-MNIST; int8-static alone keeps the run short.
        apply(
            &ns,
            &example("too-greedy", |doc| {
            doc["spec"]["publish"]["credentialsSecret"] = "registry-creds".into();
                doc["spec"]["accuracy"]["floor"] = 0.99.into();
                doc["spec"]["optimization"]["techniques"] =
                    serde_yaml_ng::to_value(["int8Static"]).unwrap();
            }),
        );
        let model = eventually(LONG, || async {
            let m = models.get("too-greedy").await?;
            match condition(&m, types::STALLED) {
                Some((s, r, msg)) if s == "True" && r == reasons::ACCURACY_FLOOR_NOT_MET => {
                    Ok((m, msg))
                }
                other => bail!("not stalled yet: {other:?}"),
            }
        })
        .await?;
        let (m, message) = model;
        assert!(
            message.contains("cpu-int8") && message.contains("99.00%"),
            "{message}"
        );
        assert_eq!(m.status.as_ref().unwrap().phase, Some(Phase::Stalled));
        assert_eq!(
            condition(&m, types::READY).unwrap().1,
            reasons::ACCURACY_FLOOR_NOT_MET
        );
        // kstatus (Flux, kpt) and Argo CD both see a failure that needs a person, and why.
        let object = serde_json::to_value(&m)?;
        let (k, why) = kstatus::status(&object)?;
        assert_eq!(k, "Failed", "{why}");
        assert!(why.contains("99.00%"), "{why}");
        let (health, why) = argocd::health(&object)?;
        assert_eq!(health, "Degraded", "{why}");
        // The Event follows the status write.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        eventually(Duration::from_secs(30), || async {
            let list = events.list(&ListParams::default()).await?;
            ensure!(
                list.items.iter().any(|e| e.reason.as_deref()
                    == Some(reasons::ACCURACY_FLOOR_NOT_MET)
                    && e.type_.as_deref() == Some("Warning")),
                "no AccuracyFloorNotMet Warning yet"
            );
            Ok(())
        })
        .await?;
        // No retry storm: one Job, failed at once by its pod failure policy, and it stays so.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let list = jobs_of(&jobs, "too-greedy").await?;
        assert_eq!(list.len(), 1, "exactly one Job");
        let job_status = list[0].status.clone().unwrap();
        assert_eq!(
            job_status.failed.unwrap_or(0),
            1,
            "one pod ran: {job_status:?}"
        );
        let volumes = list[0].spec.clone().unwrap().template.spec.unwrap().volumes.unwrap();
        assert!(volumes.iter().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("registry-creds")));
        Ok(())
    })
    .await;
}
