//! Rollout controller: the I/O around [`crate::rollout::plan`] and [`crate::revisions`].
//!
//! Per EdgeModel it gives every serving pod (pods labelled `edgefleet.dev/model=<name>`,
//! narrowed by `spec.rollout.selector`) a `ModelAssignment` owned by the pod, picks each device
//! class's revision, plans, writes the assignments' `spec.desired` and the rollout's part of the
//! EdgeModel status (its own server-side-apply field manager), and announces transitions as
//! Events. Pods and assignments are read from watch caches, so a reconcile costs no reads; the
//! operator writes each pod's assignment once per rollout.

use super::Context;
use crate::error::{Error, Result};
use crate::revisions::{self, Transition};
use crate::rollout::{self, Limits};
use crate::selector;
use edgefleet_api::assignment::{DesiredArtifact, ModelAssignment, ModelAssignmentSpec, PodRef};
use edgefleet_api::conditions::{self, Desired, types};
use edgefleet_api::edgemodel::{
    ClassRollout, EdgeModel, RevisionOutcome, RevisionRecord, RolloutState,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
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

pub use super::edgemodel::MODEL_LABEL;
/// A pod's device class, when the EdgeModel has more than one (the label the pipeline's Jobs carry).
pub use crate::pipeline::CLASS_LABEL;
/// Field manager of the rollout's status fields.
pub const MANAGER: &str = "edgefleet-rollout";
const CONTROLLER: &str = "rollout";
/// Concurrent assignment writes.
const WRITES_IN_FLIGHT: usize = 64;

pub mod reasons {
    pub const STARTED: &str = "RolloutStarted";
    pub const STEP_COMPLETE: &str = "RolloutStepComplete";
    pub const COMPLETE: &str = "RolloutComplete";
    pub const ABORTED: &str = "RolloutAborted";
    pub const STALLED: &str = "RolloutStalled";
    pub const ROLLBACK_INVALID: &str = "RollbackRevisionNotFound";
    pub const PROGRESSING: &str = "RolloutProgressing";
    pub const WAITING: &str = "RolloutWaiting";
    pub const PAUSED: &str = "RolloutPaused";
    pub const IDLE: &str = "NothingPublished";
}

/// What the rollout controller keeps between reconciles.
struct Fleet {
    ctx: Arc<Context>,
    pods: Store<PartialObjectMeta<Pod>>,
    assignments: Store<ModelAssignment>,
    /// Per EdgeModel (`namespace/name`): the rollout status last written (the leader is its
    /// only writer, so this is ahead of the watch cache) and desired digests written but not
    /// yet seen in the cache.
    memory: Mutex<HashMap<String, Memory>>,
}

#[derive(Clone, Default)]
struct Memory {
    uid: String,
    status: RolloutStatus,
    desired: HashMap<String, String>,
    /// Report intervals written but not yet seen in the cache.
    intervals: HashMap<String, String>,
    created: HashMap<String, Arc<ModelAssignment>>,
    /// Spec problems already announced.
    problems: std::collections::HashSet<String>,
}

/// The fields of `EdgeModel.status` this controller owns.
#[derive(Clone, Debug, Default, PartialEq)]
struct RolloutStatus {
    revision: Option<i64>,
    rollouts: Vec<ClassRollout>,
    history: Vec<RevisionRecord>,
    rolled_out: Option<Condition>,
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
    let labelled = watcher::Config::default().labels(MODEL_LABEL);
    // Serving pods; the optimization Jobs' pods carry the model label too, and their inputs.
    let serving = watcher::Config::default()
        .labels(&format!("{MODEL_LABEL},!{}", crate::pipeline::INPUTS_LABEL));
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
    let fleet = Arc::new(Fleet {
        ctx,
        pods: pod_store,
        assignments: assignment_store,
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
    let name = labels.get(MODEL_LABEL)?;
    Some(ObjectRef::new(name).within(&namespace?))
}

fn describe(model: &EdgeModel) -> String {
    format!(
        "EdgeModel {}/{}",
        model.namespace().unwrap_or_default(),
        model.name_any()
    )
}

/// The device class a pod serves: its `edgefleet.dev/device-class` label, or the model's only
/// class.
pub fn pod_class<'a>(
    labels: &'a BTreeMap<String, String>,
    classes: &'a [String],
) -> Option<&'a str> {
    match labels.get(CLASS_LABEL) {
        Some(c) => classes.iter().any(|x| x == c).then_some(c.as_str()),
        None if classes.len() == 1 => Some(classes[0].as_str()),
        None => None,
    }
}

fn age(now: &Time, then: Option<&Time>) -> Option<Duration> {
    then.map(|t| Duration::try_from(now.0.duration_since(t.0)).unwrap_or_default())
}

/// The planner's view of one assignment.
fn planner_pod(
    a: &ModelAssignment,
    canary: bool,
    desired: Option<String>,
    now: &Time,
) -> rollout::Pod {
    let empty = Default::default();
    let status = a.status.as_ref().unwrap_or(&empty);
    rollout::Pod {
        name: a.name_any(),
        canary,
        desired,
        serving: status.current.as_ref().map(|c| c.digest.clone()),
        health: status.health,
        selftest_failed: status
            .self_test
            .as_ref()
            .filter(|t| !t.passed)
            .map(|t| t.digest.clone()),
        error_rate: status.error_rate,
        p99_ms: status.latency_ms_p99,
        heartbeat_age: age(now, status.last_heartbeat.as_ref()),
        age: age(now, a.metadata.creation_timestamp.as_ref()).unwrap_or_default(),
    }
}

fn rolled_out_condition(rollouts: &[ClassRollout]) -> Desired {
    let summary = revisions::summarize(rollouts);
    let Some(s) = summary else {
        return Desired::new(
            types::ROLLED_OUT,
            false,
            reasons::IDLE,
            "no artifact has been published yet",
        );
    };
    let message = s
        .waiting_for
        .clone()
        .unwrap_or_else(|| format!("{} of {} pods serve the current revision", s.ready, s.total));
    let reason = match s.state {
        RolloutState::Complete => reasons::COMPLETE,
        RolloutState::Aborted => reasons::ABORTED,
        RolloutState::Stalled => reasons::STALLED,
        RolloutState::Paused => reasons::PAUSED,
        RolloutState::Waiting => reasons::WAITING,
        RolloutState::Progressing | RolloutState::Idle => reasons::PROGRESSING,
    };
    Desired::new(
        types::ROLLED_OUT,
        s.state == RolloutState::Complete,
        reason,
        message,
    )
}

async fn reconcile(model: Arc<EdgeModel>, fleet: Arc<Fleet>) -> Result<Action> {
    let ctx = &fleet.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    if model.meta().deletion_timestamp.is_some() {
        // The assignments stay (owned by their pods); the sidecars keep serving.
        let key = format!(
            "{}/{}",
            model.namespace().unwrap_or_default(),
            model.name_any()
        );
        fleet.memory.lock().expect("memory lock").remove(&key);
        return Ok(Action::await_change());
    }
    let object = describe(&model);
    let ns = model.namespace().ok_or_else(|| Error::MissingMetadata {
        object: object.clone(),
        what: "namespace",
    })?;
    let name = model.name_any();
    let key = format!("{ns}/{name}");
    let _ = fleet.pods.wait_until_ready().await;
    let _ = fleet.assignments.wait_until_ready().await;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let spec = &model.spec.rollout;
    let classes = &model.spec.device_classes;

    let mut memory = {
        let memory = fleet.memory.lock().expect("memory lock");
        let uid = model.uid().unwrap_or_default();
        match memory.get(&key) {
            Some(m) if m.uid == uid => m.clone(),
            _ => {
                let s = model.status.clone().unwrap_or_default();
                Memory {
                    uid,
                    status: RolloutStatus {
                        revision: s.revision,
                        rolled_out: conditions::find(&s.conditions, types::ROLLED_OUT).cloned(),
                        rollouts: s.rollouts,
                        history: s.history,
                    },
                    desired: HashMap::new(),
                    intervals: HashMap::new(),
                    created: HashMap::new(),
                    problems: Default::default(),
                }
            }
        }
    };
    let before = memory.status.clone();

    // Which revision each class rolls out.
    let published: HashMap<&str, &str> = model
        .status
        .iter()
        .flat_map(|s| &s.device_classes)
        .filter_map(|c| Some((c.name.as_str(), c.artifact.as_ref()?.digest.as_str())))
        .collect();
    let mut status = memory.status.clone();
    let mut events = Vec::new();
    let mut chosen: Vec<ClassRollout> = Vec::new();
    for class in classes {
        let previous = status.rollouts.iter().find(|r| &r.device_class == class);
        let Some(choice) = revisions::choose(
            class,
            published.get(class.as_str()).copied(),
            spec.rollback_to,
            &status.history,
            previous,
            status.revision.unwrap_or(0),
            &now,
        ) else {
            continue;
        };
        if let Some(problem) = &choice.problem
            && memory.problems.insert(problem.clone())
        {
            events.push((
                EventType::Warning,
                reasons::ROLLBACK_INVALID,
                problem.clone(),
                "Rollback".to_string(),
            ));
        }
        if choice.started {
            status.revision = Some(choice.rollout.revision);
            revisions::record_start(&mut status.history, &choice.rollout, &now);
            events.push((
                EventType::Normal,
                reasons::STARTED,
                format!(
                    "device class {class}: revision {} ({}) started",
                    choice.rollout.revision, choice.rollout.digest
                ),
                action(choice.rollout.revision, None),
            ));
        }
        chosen.push(choice.rollout);
    }

    // Every serving pod has an assignment owned by the pod.
    let selector = spec.selector.clone().unwrap_or_else(|| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some([(MODEL_LABEL.to_string(), name.clone())].into()),
            ..Default::default()
        }
    });
    let pods: BTreeMap<String, Arc<PartialObjectMeta<Pod>>> = fleet
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| p.labels().get(MODEL_LABEL) == Some(&name))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selector::matches(&selector, p.labels()))
        .map(|p| (p.name_any(), p))
        .collect();
    let existing: HashMap<String, Arc<ModelAssignment>> = fleet
        .assignments
        .state()
        .into_iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .filter(|a| a.labels().get(MODEL_LABEL) == Some(&name))
        .map(|a| (a.name_any(), a))
        .collect();
    let api: Api<ModelAssignment> = Api::namespaced(ctx.client.clone(), &ns);
    let limits = Limits::from_spec(spec);
    let interval = format!(
        "{}s",
        rollout::report_interval(limits.heartbeat_timeout).as_secs()
    );
    // Shared, not copied: at 10,000 pods every reconcile would otherwise clone them all.
    let mut by_class: HashMap<String, Vec<(Arc<ModelAssignment>, bool)>> = HashMap::new();
    let mut unplaced = Vec::new();
    let mut missing = Vec::new();
    // Created earlier but not yet in the cache.
    memory
        .created
        .retain(|pod, _| !existing.contains_key(pod) && pods.contains_key(pod));
    for (pod_name, pod) in &pods {
        let Some(class) = pod_class(pod.labels(), classes) else {
            unplaced.push(pod_name.clone());
            continue;
        };
        let uid = pod.uid().unwrap_or_default();
        let canary = spec
            .canary_selector
            .as_ref()
            .is_some_and(|s| selector::matches(s, pod.labels()));
        let known = existing
            .get(pod_name)
            .cloned()
            .or_else(|| memory.created.get(pod_name).cloned());
        match known {
            Some(a) if a.spec.pod.uid == uid => {
                by_class
                    .entry(class.to_string())
                    .or_default()
                    .push((a, canary));
            }
            stale => {
                let target = chosen
                    .iter()
                    .find(|r| r.device_class == class)
                    .and_then(revisions::target);
                let a = new_assignment(&model, pod, class, target.as_ref(), &interval);
                missing.push((stale.is_some(), a, class.to_string(), canary));
            }
        }
    }
    // New pods get their assignments concurrently (thousands at once when a fleet appears).
    let created: Vec<_> = futures::stream::iter(missing)
        .map(|(stale, a, class, canary)| {
            let api = api.clone();
            async move {
                if stale {
                    // A new pod of the same name (a StatefulSet replica): start afresh.
                    delete_assignment(&api, &a.name_any()).await?;
                }
                create_assignment(&api, &a)
                    .await
                    .map(|a| (a, class, canary))
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    let mut failure = None;
    for result in created {
        match result {
            Ok((a, class, canary)) => {
                let a = Arc::new(a);
                memory.created.insert(a.name_any(), a.clone());
                by_class.entry(class).or_default().push((a, canary));
            }
            Err(e) => failure = Some(e),
        }
    }
    if !unplaced.is_empty() {
        warn!(object = %object, pods = ?unplaced, "pods without a device class: label them {CLASS_LABEL}=<one of spec.deviceClasses>");
    }

    // Plan each class.
    let steps = limits.steps.len() as u32;
    let mut assign: Vec<(String, DesiredArtifact)> = Vec::new();
    let mut rollouts = Vec::new();
    let mut expiry: Option<Duration> = None;
    for current in chosen {
        let class = current.device_class.as_str();
        let members = by_class.remove(class).unwrap_or_default();
        let planner_pods: Vec<rollout::Pod> = members
            .iter()
            .map(|(a, canary)| {
                let seen = a.spec.desired.as_ref().map(|d| d.digest.clone());
                let written = memory.desired.get(&a.name_any()).cloned();
                planner_pod(a, *canary, written.or(seen), &now)
            })
            .collect();
        if let Some(e) = rollout::next_expiry(&planner_pods, limits.heartbeat_timeout) {
            expiry = Some(expiry.map_or(e, |x| x.min(e)));
        }
        let standing = revisions::standing(&current, &now);
        let plan = match revisions::target(&current) {
            Some(target) => {
                let gates = revisions::gates(spec, &current);
                let plan = rollout::plan(&gates, &limits, &target, &planner_pods, &standing);
                for a in &plan.assign {
                    let revision = if a.digest == target.digest {
                        target.revision
                    } else {
                        current.stable_revision.unwrap_or(current.revision)
                    };
                    assign.push((
                        a.pod.clone(),
                        DesiredArtifact {
                            digest: a.digest.clone(),
                            repository: model.spec.publish.repository.clone(),
                            revision,
                        },
                    ));
                }
                plan
            }
            // Aborted with nothing to go back to: count, move nothing.
            None => {
                let mut held = spec.clone();
                held.paused = true;
                let t = rollout::Target {
                    revision: current.revision,
                    digest: current.digest.clone(),
                    last_good: None,
                };
                rollout::plan(&held, &limits, &t, &planner_pods, &standing)
            }
        };
        let (next, transitions) = revisions::advance(&current, &plan, steps, &now);
        for t in transitions {
            match t {
                Transition::StepComplete(n) => events.push((
                    EventType::Normal,
                    reasons::STEP_COMPLETE,
                    format!(
                        "device class {class}: revision {} step {n} of {steps} complete",
                        next.revision
                    ),
                    action(next.revision, Some(n)),
                )),
                Transition::Complete => {
                    revisions::record_outcome(
                        &mut status.history,
                        class,
                        next.revision,
                        RevisionOutcome::Complete,
                    );
                    events.push((
                        EventType::Normal,
                        reasons::COMPLETE,
                        format!(
                            "device class {class}: revision {} ({}) serves on all {} pods",
                            next.revision, next.digest, next.total
                        ),
                        action(next.revision, None),
                    ));
                }
                Transition::Aborted(why) => {
                    revisions::record_outcome(
                        &mut status.history,
                        class,
                        next.revision,
                        RevisionOutcome::Aborted,
                    );
                    let back = match &next.stable_digest {
                        Some(d) => format!(
                            "rolling {} updated pods back to revision {} ({d})",
                            plan.assign.len(),
                            next.stable_revision.unwrap_or_default()
                        ),
                        None => {
                            "no earlier revision to roll back to; failing pods keep their model"
                                .into()
                        }
                    };
                    events.push((
                        EventType::Warning,
                        reasons::ABORTED,
                        format!(
                            "device class {class}: revision {} aborted: {why}; {back}",
                            next.revision
                        ),
                        action(next.revision, None),
                    ));
                }
                Transition::Stalled(why) => events.push((
                    EventType::Warning,
                    reasons::STALLED,
                    format!("device class {class}: revision {}: {why}", next.revision),
                    action(next.revision, None),
                )),
            }
        }
        rollouts.push(next);
    }
    status.rollouts = rollouts;
    let desired = rolled_out_condition(&status.rollouts);
    status.rolled_out = conditions::merge(
        before.rolled_out.as_slice(),
        std::slice::from_ref(&desired),
        model.metadata.generation,
        &now,
    )
    .into_iter()
    .next();

    // Status first: if the assignment writes fail, the next reconcile knows where it stands.
    if status != before {
        let summary = revisions::summarize(&status.rollouts);
        let patch = serde_json::json!({
            "apiVersion": "edgefleet.dev/v1alpha1",
            "kind": "EdgeModel",
            "status": {
                "revision": status.revision,
                "rollout": summary,
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
    memory.status = status.clone();
    // Desired digests the cache already shows need no overlay.
    memory.desired.retain(|pod, digest| {
        existing
            .get(pod)
            .and_then(|a| a.spec.desired.as_ref())
            .is_none_or(|d| &d.digest != digest)
    });
    memory.intervals.retain(|pod, want| {
        existing
            .get(pod)
            .is_some_and(|a| a.spec.heartbeat_interval.as_ref() != Some(want))
    });
    // One merge patch per pod: its new desired artifact and/or its report interval (assignments
    // made before the interval existed, or after the model's heartbeatTimeout changed).
    let mut patches: BTreeMap<String, SpecPatch> = BTreeMap::new();
    for (pod, desired) in assign {
        patches.entry(pod).or_default().desired = Some(desired);
    }
    for (pod, a) in &existing {
        let current = memory
            .intervals
            .get(pod)
            .or(a.spec.heartbeat_interval.as_ref());
        if pods.contains_key(pod) && current != Some(&interval) {
            patches.entry(pod.clone()).or_default().heartbeat_interval = Some(interval.clone());
        }
    }
    let results: Vec<_> = futures::stream::iter(patches)
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
    for (type_, reason, note, action) in events {
        info!(object = %object, reason, "{note}");
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action,
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &model.object_ref(&())).await {
            warn!(object = %object, error = %e, "could not publish event");
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Clocks move on without any watch event: pauses end, heartbeats go stale.
    let active = status
        .rollouts
        .iter()
        .any(|r| r.state != RolloutState::Complete && r.state != RolloutState::Aborted);
    let periodic = Duration::from_secs(if active { 2 } else { 20 });
    // And when the next heartbeat goes stale, so an offline pod is counted within its timeout.
    // (At most once a second: a large fleet's reports trigger reconciles anyway.)
    let stale = expiry.map(|e| (e + Duration::from_millis(200)).max(Duration::from_secs(1)));
    Ok(Action::requeue(stale.map_or(periodic, |s| s.min(periodic))))
}

/// The Event action: kube's recorder folds Events with the same reason and action into one
/// series that keeps the first note, so each revision (and step) gets its own.
fn action(revision: i64, step: Option<u32>) -> String {
    match step {
        Some(n) => format!("RolloutRevision{revision}Step{n}"),
        None => format!("RolloutRevision{revision}"),
    }
}

/// The fields of a `ModelAssignment`'s spec the rollout writes after creating it.
#[derive(Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SpecPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    desired: Option<DesiredArtifact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval: Option<String>,
}

fn new_assignment(
    model: &EdgeModel,
    pod: &PartialObjectMeta<Pod>,
    class: &str,
    target: Option<&rollout::Target>,
    heartbeat_interval: &str,
) -> ModelAssignment {
    let name = pod.name_any();
    let mut a = ModelAssignment::new(
        &name,
        ModelAssignmentSpec {
            model: model.name_any(),
            device_class: class.to_string(),
            pod: PodRef {
                name: name.clone(),
                uid: pod.uid().unwrap_or_default(),
            },
            node_name: None,
            // New pods start on the class's current target.
            desired: target.map(|t| DesiredArtifact {
                digest: t.digest.clone(),
                repository: model.spec.publish.repository.clone(),
                revision: t.revision,
            }),
            heartbeat_interval: Some(heartbeat_interval.to_string()),
        },
    );
    a.metadata.namespace = model.namespace();
    a.metadata.labels = Some(
        [
            (MODEL_LABEL.to_string(), model.name_any()),
            (CLASS_LABEL.to_string(), class.to_string()),
        ]
        .into(),
    );
    a.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name,
        uid: pod.uid().unwrap_or_default(),
        ..Default::default()
    }]);
    a
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_serves_its_labelled_class_or_the_only_one() {
        let one = vec!["cpu".to_string()];
        let two = vec!["cpu".to_string(), "gpu".to_string()];
        let none = BTreeMap::new();
        let gpu: BTreeMap<_, _> = [(CLASS_LABEL.to_string(), "gpu".to_string())].into();
        assert_eq!(pod_class(&none, &one), Some("cpu"));
        assert_eq!(pod_class(&none, &two), None);
        assert_eq!(pod_class(&gpu, &two), Some("gpu"));
        // A class the model does not target: the pod is not placed.
        assert_eq!(pod_class(&gpu, &one), None);
    }

    #[test]
    fn rolled_out_is_true_only_when_complete() {
        let c = rolled_out_condition(&[]);
        assert!(!c.status);
        assert_eq!(c.reason, reasons::IDLE);
        let mut r = ClassRollout {
            device_class: "cpu".into(),
            state: RolloutState::Complete,
            total: 5,
            ready: 5,
            ..Default::default()
        };
        let c = rolled_out_condition(std::slice::from_ref(&r));
        assert!(c.status);
        assert_eq!(c.message, "5 of 5 pods serve the current revision");
        r.state = RolloutState::Aborted;
        r.message = Some("2 of 2 updated pods failed".into());
        let c = rolled_out_condition(&[r]);
        assert!(!c.status);
        assert_eq!(c.reason, reasons::ABORTED);
        assert_eq!(c.message, "cpu: 2 of 2 updated pods failed");
    }
}
