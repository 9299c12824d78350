//! The optimize → publish pipeline of one EdgeModel: pins its sources, and per device class
//! reuses a published artifact with identical inputs, or runs (and supersedes) the optimization
//! Job, reads its result and verifies the artifact against the registry. Decisions are in
//! `crate::pipeline`; this module only fetches and writes.

use super::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, ClassPhase, JobState, Pinned};
use crate::resolve::Outcome;
use edgefleet_api::conditions::reasons;
use edgefleet_api::deviceclass::DeviceClassSpec;
use edgefleet_api::edgemodel::{BlobSource, DeviceClassProgress, EdgeModel};
use edgefleet_api::labels;
use edgefleet_artifact::{DockerConfig, PublicKey, Registry, RegistryOptions};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::events::{Event, EventType};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::info;

/// What the pipeline wants written and announced.
pub struct Pipeline {
    pub classes: Vec<DeviceClassProgress>,
    pub outcome: Outcome,
    pub events: Vec<Event>,
    pub requeue: Duration,
}

fn event(type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Optimize".into(),
        secondary: None,
    }
}

/// Nothing can proceed until `message` is fixed (or goes away by itself): keep what was
/// published, retry later.
fn unavailable(model: &EdgeModel, reason: &'static str, message: String) -> Pipeline {
    let mut outcome = pipeline::sources_unavailable(&message);
    outcome.problem = Some((reason, message.clone()));
    for c in &mut outcome.conditions {
        c.reason = reason;
    }
    Pipeline {
        classes: model
            .status
            .as_ref()
            .map(|s| s.device_classes.clone())
            .unwrap_or_default(),
        outcome,
        events: Vec::new(),
        requeue: Duration::from_secs(30),
    }
}

async fn registry(model: &EdgeModel, ctx: &Context) -> std::result::Result<Registry, String> {
    let publish = &model.spec.publish;
    let credentials = match &publish.credentials_secret {
        None => DockerConfig::default(),
        Some(name) => {
            let ns = model.namespace().unwrap_or_default();
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let secret = secrets
                .get_opt(name)
                .await
                .map_err(|e| {
                    format!("spec.publish.credentialsSecret: reading Secret {ns}/{name}: {e}")
                })?
                .ok_or_else(|| {
                    format!("spec.publish.credentialsSecret: Secret {ns}/{name} not found")
                })?;
            let data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            DockerConfig::from_secret(&format!("{ns}/{name}"), secret.type_.as_deref(), &data)
                .map_err(|e| format!("spec.publish.credentialsSecret: {e}"))?
        }
    };
    let plain_http = if publish.plain_http {
        vec![pipeline::registry_host(&publish.repository).to_string()]
    } else {
        Vec::new()
    };
    Registry::new(RegistryOptions {
        plain_http,
        credentials,
        ca_files: ctx.registry_ca_files.clone(),
        attempts: 1,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .map_err(|e| e.to_string())
}

/// The EdgeModel's trusted public key: `cosign.pub` of its signing Secret (`secret`, from
/// `pipeline::signing_secret`); none when it has no signing Secret.
async fn public_key(
    model: &EdgeModel,
    secret: Option<&str>,
    ctx: &Context,
) -> std::result::Result<Option<PublicKey>, String> {
    let Some(name) = secret else {
        return Ok(None);
    };
    let field = match model.spec.publish.signing_secret {
        Some(_) => "spec.publish.signingSecret",
        None => "the operator's --signing-secret",
    };
    let ns = model.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("{field}: reading Secret {ns}/{name}: {e}"))?
        .ok_or_else(|| format!("{field}: Secret {ns}/{name} not found"))?;
    let data = secret.data.unwrap_or_default();
    for key in [pipeline::SIGNING_PRIVATE_KEY, pipeline::SIGNING_PUBLIC_KEY] {
        if !data.contains_key(key) {
            return Err(format!("{field}: Secret {ns}/{name} has no {key:?}"));
        }
    }
    let pem = String::from_utf8_lossy(&data[pipeline::SIGNING_PUBLIC_KEY].0).into_owned();
    PublicKey::from_pem(&pem).map(Some).map_err(|e| {
        format!(
            "{field}: Secret {ns}/{name} {:?}: {e}",
            pipeline::SIGNING_PUBLIC_KEY
        )
    })
}

/// Checks the signature of `reference` with `key` (nothing to check without a key).
async fn signature(
    registry: &Registry,
    reference: &str,
    key: Option<&PublicKey>,
) -> edgefleet_artifact::Result<()> {
    match key {
        Some(key) => registry.verify_signature(reference, key).await,
        None => Ok(()),
    }
}

/// A source pinned to its content (a tag is resolved against the registry).
async fn pin(
    source: &BlobSource,
    field: &str,
    registry: &Registry,
) -> std::result::Result<Pinned, String> {
    if let Some(p) = pipeline::pin_static(source) {
        return Ok(p);
    }
    let oci = source
        .oci
        .as_deref()
        .ok_or_else(|| format!("{field}: neither oci nor url with sha256"))?;
    let (_, digest, _) = registry
        .manifest(oci)
        .await
        .map_err(|e| format!("{field}.oci: {e}"))?;
    Ok(pipeline::pin_resolved(oci, digest))
}

async fn ensure_service_account(ns: &str, ctx: &Context) -> Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    if api
        .get_opt(pipeline::SERVICE_ACCOUNT)
        .await
        .map_err(Error::kube(format!(
            "ServiceAccount {ns}/{}",
            pipeline::SERVICE_ACCOUNT
        )))?
        .is_some()
    {
        return Ok(());
    }
    // The optimizer talks to registries only: no API rights, no token.
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": pipeline::SERVICE_ACCOUNT,
            "labels": {"app.kubernetes.io/managed-by": edgefleet_api::OPERATOR_MANAGER},
        },
        "automountServiceAccountToken": false,
    }))
    .expect("static ServiceAccount");
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!(
            "ServiceAccount {ns}/{}",
            pipeline::SERVICE_ACCOUNT
        ))(e)),
    }
}

/// How the Job's most recent finished pod ended. Only pods the Job's controller made count
/// (selected by its `controller-uid` and owned by it): anyone may label a pod `job-name=…`.
async fn last_pod_end(job: &Job, ctx: &Context) -> Result<Option<pipeline::PodEnd>> {
    let ns = job.namespace().unwrap_or_default();
    let Some(uid) = job.uid() else {
        return Ok(None);
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("{}={uid}", pipeline::JOB_CONTROLLER_UID)))
        .await
        .map_err(Error::kube(format!("Pods of Job {ns}/{}", job.name_any())))?;
    let mut messages: Vec<_> = list
        .items
        .iter()
        .filter(|p| pipeline::owned_by_job(p, &uid))
        .filter_map(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let done = statuses
                .iter()
                .find(|c| c.name == pipeline::CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?;
            Some((
                done.finished_at.clone(),
                pipeline::PodEnd {
                    reason: done.reason.clone(),
                    exit_code: done.exit_code,
                    message: done.message.clone(),
                },
            ))
        })
        .collect();
    messages.sort_by(|a, b| a.0.as_ref().map(|t| t.0).cmp(&b.0.as_ref().map(|t| t.0)));
    Ok(messages.pop().map(|(_, m)| m))
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("Job {name}"))(e)),
    }
}

/// Deletes every optimization Job of `model` (its finalizer).
pub async fn delete_jobs(model: &EdgeModel, ctx: &Context) -> Result<usize> {
    let ns = model.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let list = api
        .list(&ListParams::default().labels(&format!("{}={}", labels::MODEL, model.name_any())))
        .await
        .map_err(Error::kube(format!(
            "Jobs of EdgeModel {ns}/{}",
            model.name_any()
        )))?;
    for job in &list.items {
        delete_job(&api, &job.name_any()).await?;
    }
    Ok(list.items.len())
}

/// Runs the pipeline for `model`, whose device classes all exist (`classes`, in spec order).
pub async fn reconcile(
    model: &EdgeModel,
    classes: &[(String, DeviceClassSpec)],
    ctx: &Context,
) -> Result<Pipeline> {
    let ns = model.namespace().unwrap_or_default();
    let name = model.name_any();
    let registry = match registry(model, ctx).await {
        Ok(r) => r,
        Err(message) => return Ok(unavailable(model, reasons::REGISTRY_UNAVAILABLE, message)),
    };
    let base = match pin(&model.spec.source, "spec.source", &registry).await {
        Ok(p) => p,
        Err(message) => return Ok(unavailable(model, reasons::SOURCE_UNAVAILABLE, message)),
    };
    let data = match pin(
        &model.spec.accuracy.dataset.source,
        "spec.accuracy.dataset.source",
        &registry,
    )
    .await
    {
        Ok(p) => p,
        Err(message) => return Ok(unavailable(model, reasons::SOURCE_UNAVAILABLE, message)),
    };
    let signing_secret = pipeline::signing_secret(model, ctx.jobs.signing_secret.as_deref());
    let key = match public_key(model, signing_secret, ctx).await {
        Ok(k) => k,
        Err(message) => {
            return Ok(unavailable(
                model,
                reasons::SIGNING_KEY_UNAVAILABLE,
                message,
            ));
        }
    };
    let key_pem = key.as_ref().map(PublicKey::to_pem);
    let requirement = &model.spec.accuracy;
    let budget = edgefleet_api::duration::parse(&model.spec.optimization.time_budget)
        .map(|d| d.as_secs())
        .unwrap_or(1800);
    ensure_service_account(&ns, ctx).await?;
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs = jobs_api
        .list(&ListParams::default().labels(&format!("{}={name}", labels::MODEL)))
        .await
        .map_err(Error::kube(format!("Jobs of EdgeModel {ns}/{name}")))?
        .items;
    let previous = model
        .status
        .as_ref()
        .map(|s| s.device_classes.clone())
        .unwrap_or_default();
    let repository = &model.spec.publish.repository;
    let mut events = Vec::new();
    let mut phases = Vec::new();
    let mut progress = Vec::new();
    let mut keys = BTreeMap::new();
    for (class_name, class) in classes {
        let request = pipeline::request(model, class_name, class, &base, &data);
        let inputs = pipeline::inputs_digest(&request);
        let short = inputs.hex()[..16].to_string();
        keys.insert(class_name.clone(), short.clone());
        let prev = previous.iter().find(|p| &p.name == class_name);
        let job_name = pipeline::job_name(&name, class_name, &inputs);
        let current = jobs.iter().find(|j| {
            j.labels().get(labels::DEVICE_CLASS) == Some(class_name)
                && j.labels().get(labels::INPUTS) == Some(&short)
        });
        let mut job_ref = current.map(|j| j.name_any());
        let phase = match prev {
            // Already verified for these inputs: nothing to ask anyone.
            Some(p)
                if p.inputs_digest.as_deref() == Some(inputs.as_str())
                    && p.phase == Some(edgefleet_api::edgemodel::DeviceClassPhase::Published)
                    && p.artifact.as_ref().is_some_and(|a| a.public_key == key_pem) =>
            {
                job_ref = p.job.clone();
                ClassPhase::Published {
                    artifact: p.artifact.clone().expect("checked"),
                    reused: false,
                }
            }
            _ => match current {
                Some(job) => {
                    let ended = last_pod_end(job, ctx).await?;
                    match pipeline::job_state(job, ended.as_ref()) {
                        JobState::Running => ClassPhase::Optimizing {
                            job: job.name_any(),
                        },
                        JobState::FloorNotMet(m) => ClassPhase::FloorNotMet(m),
                        JobState::BudgetNotMet(m) => ClassPhase::BudgetNotMet(m),
                        JobState::Failed(m) => ClassPhase::Failed(m),
                        JobState::Succeeded(result) => {
                            let reported = result
                                .artifact
                                .clone()
                                .expect("a success names its artifact");
                            let reference = reported.reference.clone();
                            let checked = match registry.inspect(&reference).await {
                                Ok(found) => signature(&registry, &reference, key.as_ref())
                                    .await
                                    .map(|()| found),
                                Err(e) => Err(e),
                            };
                            match checked {
                                Ok((artifact, _)) => {
                                    let digest_ok = reported.digest == artifact.digest.as_str();
                                    match pipeline::verify(
                                        &artifact,
                                        class_name,
                                        &inputs,
                                        requirement,
                                    ) {
                                        Ok(()) if digest_ok => ClassPhase::Published {
                                            artifact: pipeline::published(
                                                &artifact,
                                                repository,
                                                key.as_ref(),
                                            ),
                                            reused: false,
                                        },
                                        Ok(()) => ClassPhase::Failed(format!(
                                            "Job {} reported digest {} but {reference} is {}",
                                            job.name_any(),
                                            reported.digest,
                                            artifact.digest
                                        )),
                                        Err(m) => ClassPhase::Failed(m),
                                    }
                                }
                                Err(e) if e.is_transient() => {
                                    return Ok(unavailable(
                                        model,
                                        reasons::REGISTRY_UNAVAILABLE,
                                        format!("verifying {reference}: {e}"),
                                    ));
                                }
                                Err(e @ edgefleet_artifact::Error::Signature { .. }) => {
                                    events.push(event(
                                        EventType::Warning,
                                        reasons::SIGNATURE_REFUSED,
                                        format!(
                                            "device class {class_name}: Job {}: {e}",
                                            job.name_any()
                                        ),
                                    ));
                                    ClassPhase::Failed(format!("not published: {e}"))
                                }
                                Err(e) => ClassPhase::Failed(format!("verifying {reference}: {e}")),
                            }
                        }
                    }
                }
                None => {
                    let tagged = format!(
                        "{repository}:{}",
                        pipeline::artifact_tag(class_name, &inputs)
                    );
                    let found = match registry.inspect(&tagged).await {
                        Ok((artifact, _)) => {
                            match pipeline::verify(&artifact, class_name, &inputs, requirement) {
                                Ok(()) => {
                                    let pinned = format!("{repository}@{}", artifact.digest);
                                    match signature(&registry, &pinned, key.as_ref()).await {
                                        Ok(()) => Ok(Some(artifact)),
                                        Err(e @ edgefleet_artifact::Error::Signature { .. }) => {
                                            // Optimize again: the Job publishes and signs anew.
                                            events.push(event(
                                                EventType::Warning,
                                                reasons::SIGNATURE_REFUSED,
                                                format!("device class {class_name}: not reusing {tagged}: {e}"),
                                            ));
                                            Ok(None)
                                        }
                                        Err(e) => Err(e),
                                    }
                                }
                                Err(why) => {
                                    info!(class = %class_name, %tagged, %why, "not reusing");
                                    Ok(None)
                                }
                            }
                        }
                        Err(edgefleet_artifact::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    };
                    match found {
                        Ok(Some(artifact)) => ClassPhase::Published {
                            artifact: pipeline::published(&artifact, repository, key.as_ref()),
                            reused: true,
                        },
                        Ok(None) => {
                            let run = pipeline::ClassRun {
                                model,
                                request: &request,
                                inputs: &inputs,
                                time_budget_seconds: budget,
                                signing_secret,
                            };
                            let job = pipeline::job(run, &ctx.jobs);
                            match jobs_api.create(&PostParams::default(), &job).await {
                                Ok(_) => {}
                                Err(kube::Error::Api(e)) if e.code == 409 => {}
                                Err(e) => {
                                    return Err(Error::kube(format!("Job {ns}/{job_name}"))(e));
                                }
                            }
                            info!(job = %job_name, class = %class_name, "created optimization Job");
                            events.push(event(
                                EventType::Normal,
                                reasons::OPTIMIZING,
                                format!("device class {class_name}: created Job {job_name} (inputs {short})"),
                            ));
                            job_ref = Some(job_name.clone());
                            ClassPhase::Optimizing {
                                job: job_name.clone(),
                            }
                        }
                        Err(e) => {
                            return Ok(unavailable(
                                model,
                                reasons::REGISTRY_UNAVAILABLE,
                                format!("spec.publish.repository: looking up {tagged}: {e}"),
                            ));
                        }
                    }
                }
            },
        };
        // Announce transitions once.
        let changed = prev.and_then(|p| p.phase) != Some(phase.word())
            || prev.and_then(|p| p.inputs_digest.as_deref()) != Some(inputs.as_str());
        let message = match &phase {
            ClassPhase::Optimizing { job } => format!("Job {job} is optimizing"),
            ClassPhase::Published { artifact, reused } => format!(
                "{} {} ({}, top-1 {:.2}%, {} bytes compressed)",
                if *reused { "reused" } else { "published" },
                artifact.reference,
                artifact.technique,
                artifact.accuracy * 100.0,
                artifact.bytes_compressed
            ),
            ClassPhase::FloorNotMet(m) | ClassPhase::BudgetNotMet(m) | ClassPhase::Failed(m) => {
                m.clone()
            }
        };
        if changed {
            match &phase {
                ClassPhase::Published { reused, .. } => events.push(event(
                    EventType::Normal,
                    if *reused {
                        reasons::REUSED
                    } else {
                        reasons::PUBLISHED
                    },
                    format!("device class {class_name}: {message}"),
                )),
                ClassPhase::FloorNotMet(_) => events.push(event(
                    EventType::Warning,
                    reasons::ACCURACY_FLOOR_NOT_MET,
                    format!("device class {class_name}: {message}"),
                )),
                ClassPhase::BudgetNotMet(_) => events.push(event(
                    EventType::Warning,
                    reasons::BUDGET_NOT_MET,
                    format!("device class {class_name}: {message}"),
                )),
                ClassPhase::Failed(_) => events.push(event(
                    EventType::Warning,
                    reasons::OPTIMIZATION_FAILED,
                    format!("device class {class_name}: {message}"),
                )),
                ClassPhase::Optimizing { .. } => {}
            }
        }
        progress.push(DeviceClassProgress {
            name: class_name.clone(),
            phase: Some(phase.word()),
            message: Some(message),
            job: job_ref,
            inputs_digest: Some(inputs.to_string()),
            artifact: match &phase {
                ClassPhase::Published { artifact, .. } => Some(artifact.clone()),
                // A class being re-optimized keeps serving its last good artifact.
                _ => prev.and_then(|p| p.artifact.clone()),
            },
        });
        phases.push((class_name.clone(), phase));
    }
    // Jobs of older inputs, or of classes no longer listed, are superseded.
    for job in &jobs {
        let class = job.labels().get(labels::DEVICE_CLASS);
        let inputs = job.labels().get(labels::INPUTS);
        let current = class
            .and_then(|c| keys.get(c))
            .is_some_and(|k| Some(k) == inputs);
        if !current {
            delete_job(&jobs_api, &job.name_any()).await?;
            info!(job = %job.name_any(), "superseded optimization Job deleted");
            events.push(event(
                EventType::Normal,
                reasons::SUPERSEDED,
                format!(
                    "deleted Job {}: its inputs are no longer the EdgeModel's",
                    job.name_any()
                ),
            ));
        }
    }
    let busy = phases
        .iter()
        .any(|(_, p)| matches!(p, ClassPhase::Optimizing { .. }));
    Ok(Pipeline {
        classes: progress,
        outcome: pipeline::summarize(&phases),
        events,
        requeue: Duration::from_secs(if busy { 15 } else { 300 }),
    })
}
