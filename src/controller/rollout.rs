//! Rollout controller: the I/O around [`crate::fleet::step`]. Per EdgeModel it reads its
//! serving pods (labelled `edgefleet.dev/model=<name>`) and their `ModelAssignment`s from watch
//! caches, calls the pure step, and writes what it decided: the assignments to create (owned by
//! their pods), the rollout's part of the EdgeModel status (its own server-side-apply field
//! manager), the assignments' `spec` patches and the Events. A reconcile costs no reads; the
//! operator writes each pod's assignment once per rollout.

use super::Context;
use crate::error::{Error, Result};
use crate::fleet::{self, Memory};
use edgefleet_api::assignment::ModelAssignment;
use edgefleet_api::deviceclass::DeviceClass;
use edgefleet_api::edgemodel::EdgeModel;
use edgefleet_api::labels;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Field manager of the rollout's status fields.
pub const MANAGER: &str = "edgefleet-rollout";
const CONTROLLER: &str = "rollout";
/// Concurrent assignment writes.
const WRITES_IN_FLIGHT: usize = 64;

/// What the rollout controller keeps between reconciles.
struct Fleet {
    ctx: Arc<Context>,
    pods: Store<PartialObjectMeta<Pod>>,
    assignments: Store<ModelAssignment>,
    /// Each class's architectures: a sidecar reporting another is not rolled out to.
    classes: Store<DeviceClass>,
    /// Per EdgeModel (`namespace/name`).
    memory: Mutex<HashMap<String, Memory>>,
}

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Pods are read metadata-only: names, uids and labels are all the rollout needs.
    let (models, pods, assignments): (
        Api<EdgeModel>,
        Api<PartialObjectMeta<Pod>>,
        Api<ModelAssignment>,
    ) = match &ctx.namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (
            Api::all(ctx.client.clone()),
            Api::all(ctx.client.clone()),
            Api::all(ctx.client.clone()),
        ),
    };
    let labelled = watcher::Config::default().labels(labels::MODEL);
    // Serving pods; the optimization Jobs' pods carry the model label too, and their inputs.
    let serving =
        watcher::Config::default().labels(&format!("{},!{}", labels::MODEL, labels::INPUTS));
    let (pod_store, pod_writer) = reflector::store();
    let pod_events = watcher(pods, serving)
        .default_backoff()
        .modify(|p| p.managed_fields_mut().clear())
        .reflect(pod_writer)
        .touched_objects();
    let (assignment_store, assignment_writer) = reflector::store();
    let assignment_events = watcher(assignments, labelled)
        .default_backoff()
        .modify(|a| a.managed_fields_mut().clear())
        .reflect(assignment_writer)
        .touched_objects();
    let (class_store, class_writer) = reflector::store();
    let class_events = watcher(
        Api::<DeviceClass>::all(ctx.client.clone()),
        Default::default(),
    )
    .default_backoff()
    .reflect(class_writer)
    .touched_objects();
    // Only the cache matters (a class's change reaches its EdgeModels' next reconcile).
    tokio::spawn(class_events.for_each(|_| std::future::ready(())));
    let fleet = Arc::new(Fleet {
        ctx,
        pods: pod_store,
        assignments: assignment_store,
        classes: class_store,
        memory: Mutex::new(HashMap::new()),
    });
    Controller::new(models, watcher::Config::default())
        // Thousands of sidecar reports coalesce into a few reconciles a second.
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(300)),
        )
        .watches_stream(pod_events, |p| owner_model(p.namespace(), p.labels()))
        .watches_stream(assignment_events, |a| {
            owner_model(a.namespace(), a.labels())
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, fleet)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "rollout reconcile failed");
            }
        })
        .await;
}

fn owner_model(
    namespace: Option<String>,
    labels: &BTreeMap<String, String>,
) -> Option<ObjectRef<EdgeModel>> {
    let name = labels.get(labels::MODEL)?;
    Some(ObjectRef::new(name).within(&namespace?))
}

fn describe(model: &EdgeModel) -> String {
    format!(
        "EdgeModel {}/{}",
        model.namespace().unwrap_or_default(),
        model.name_any()
    )
}

async fn reconcile(model: Arc<EdgeModel>, fleet: Arc<Fleet>) -> Result<Action> {
    let ctx = &fleet.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let object = describe(&model);
    let ns = model.namespace().ok_or_else(|| Error::MissingMetadata {
        object: object.clone(),
        what: "namespace",
    })?;
    let name = model.name_any();
    let key = format!("{ns}/{name}");
    if model.meta().deletion_timestamp.is_some() {
        // The assignments stay (owned by their pods); the sidecars keep serving.
        fleet.memory.lock().expect("memory lock").remove(&key);
        return Ok(Action::await_change());
    }
    let _ = fleet.pods.wait_until_ready().await;
    let _ = fleet.assignments.wait_until_ready().await;
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    // Fetch: the caches, and what this process remembers of the model.
    let pods: fleet::Pods = fleet
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| p.labels().get(labels::MODEL) == Some(&name))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p))
        .collect();
    let assignments: fleet::Assignments = fleet
        .assignments
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .filter(|a| a.labels().get(labels::MODEL) == Some(&name))
        .map(|a| (a.name_any(), a))
        .collect();
    let mut memory = {
        let memory = fleet.memory.lock().expect("memory lock");
        match memory.get(&key) {
            Some(m) if m.uid == model.uid().unwrap_or_default() => m.clone(),
            _ => Memory::of(&model),
        }
    };
    memory.settle(&pods, &assignments);

    // Decide.
    let archs: fleet::ClassArchs = fleet
        .classes
        .state()
        .into_iter()
        .filter(|c| model.spec.device_classes.contains(&c.name_any()))
        .map(|c| (c.name_any(), c.spec.arch.clone()))
        .collect();
    let step = fleet::step(&model, &memory, &pods, &assignments, &now, &archs);
    if !step.unplaced.is_empty() {
        warn!(object = %object, pods = ?step.unplaced, "pods without a device class: label them {}=<one of spec.deviceClasses>", labels::DEVICE_CLASS);
    }

    // Write: new assignments, then the status (if the assignment writes fail, the next
    // reconcile knows where it stands), then the assignments' specs, then the Events.
    let api: Api<ModelAssignment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut failure = None;
    let created: Vec<_> = futures::stream::iter(step.create)
        .map(|c| {
            let api = api.clone();
            async move {
                if c.replaces {
                    delete_assignment(&api, &c.assignment.name_any()).await?;
                }
                create_assignment(&api, &c.assignment).await
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for result in created {
        match result {
            Ok(a) => {
                memory.created.insert(a.name_any(), Arc::new(a));
            }
            Err(e) => failure = Some(e),
        }
    }
    if step.status != memory.status {
        let status = &step.status;
        let patch = serde_json::json!({
            "apiVersion": "edgefleet.dev/v1alpha1",
            "kind": "EdgeModel",
            "status": {
                "revision": status.revision,
                "rollout": crate::revisions::summarize(&status.rollouts),
                "rollouts": status.rollouts,
                "history": status.history,
                "conditions": status.rolled_out.iter().collect::<Vec<_>>(),
            },
        });
        let models: Api<EdgeModel> = Api::namespaced(ctx.client.clone(), &ns);
        models
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::kube(&object))?;
    }
    memory.status = step.status;
    memory.problems.extend(step.problems);
    let results: Vec<_> = futures::stream::iter(step.patches)
        .map(|(pod, patch)| {
            let api = api.clone();
            async move {
                let result = api
                    .patch(
                        &pod,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "spec": patch })),
                    )
                    .await;
                (pod, patch, result)
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    for (pod, patch, result) in results {
        match result {
            Ok(_) => {
                if let Some(d) = patch.desired {
                    memory.desired.insert(pod.clone(), d.digest);
                }
                if let Some(i) = patch.heartbeat_interval {
                    memory.intervals.insert(pod, i);
                }
            }
            // The pod (and so its assignment) is gone.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => failure = Some(Error::kube(format!("ModelAssignment {ns}/{pod}"))(e)),
        }
    }
    fleet
        .memory
        .lock()
        .expect("memory lock")
        .insert(key, memory);
    for e in step.events {
        info!(object = %object, reason = e.reason, "{}", e.note);
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.into(),
            note: Some(e.note),
            action: e.action,
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &model.object_ref(&())).await {
            warn!(object = %object, error = %err, "could not publish event");
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Action::requeue(step.requeue)),
    }
}

async fn create_assignment(
    api: &Api<ModelAssignment>,
    a: &ModelAssignment,
) -> Result<ModelAssignment> {
    let name = a.name_any();
    let what = || {
        format!(
            "ModelAssignment {}/{name}",
            a.namespace().unwrap_or_default()
        )
    };
    match api.create(&PostParams::default(), a).await {
        Ok(created) => Ok(created),
        // Created by an earlier reconcile the cache has not shown yet.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.get(&name).await.map_err(Error::kube(what()))
        }
        Err(e) => Err(Error::kube(what())(e)),
    }
}

async fn delete_assignment(api: &Api<ModelAssignment>, name: &str) -> Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!("ModelAssignment {name}"))(e)),
    }
}

fn error_policy(model: Arc<EdgeModel>, error: &Error, fleet: Arc<Fleet>) -> Action {
    warn!(object = %describe(&model), %error, "rollout reconcile failed; retrying");
    fleet.ctx.metrics.failure(CONTROLLER, error);
    Action::requeue(Duration::from_secs(5))
}
