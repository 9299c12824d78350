//! The rollout's pure step for one EdgeModel: from what the watch caches show (its serving pods,
//! their `ModelAssignment`s) and what the rollout remembers, to what it writes: its status
//! fields, the assignments to create, the assignment specs to patch, the Events to announce, and
//! when to look again. `controller::rollout` only fetches, calls [`step`] and writes.
//!
//! Per device class it picks the revision ([`revisions::choose`]), plans the pods
//! ([`rollout::plan`]), moves the recorded state ([`revisions::advance`]) and turns transitions
//! into Events; pods without an assignment get one; every assignment carries the report interval
//! the model's heartbeat timeout implies.

use crate::revisions::{self, Transition};
use crate::rollout::{self, Limits};
use crate::selector;
use edgefleet_api::assignment::{DesiredArtifact, ModelAssignment, ModelAssignmentSpec, PodRef};
use edgefleet_api::conditions::{self, Desired, reasons, types};
use edgefleet_api::deviceclass::Arch;
use edgefleet_api::edgemodel::{
    ClassRollout, EdgeModel, RevisionOutcome, RevisionRecord, RolloutState,
};
use edgefleet_api::labels;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, OwnerReference, Time,
};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The fields of `EdgeModel.status` the rollout owns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutStatus {
    pub revision: Option<i64>,
    pub rollouts: Vec<ClassRollout>,
    pub history: Vec<RevisionRecord>,
    pub rolled_out: Option<Condition>,
}

/// What the rollout remembers of one EdgeModel between reconciles: the status it last wrote (it
/// is the only writer, so this is ahead of the watch cache) and what it wrote that the caches
/// may not show yet.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub uid: String,
    pub status: RolloutStatus,
    /// Desired digests written, by pod.
    pub desired: HashMap<String, String>,
    /// Report intervals written, by pod.
    pub intervals: HashMap<String, String>,
    /// Assignments created, by pod.
    pub created: HashMap<String, Arc<ModelAssignment>>,
    /// Spec problems already announced.
    pub problems: HashSet<String>,
}

impl Memory {
    /// What a model's status says, for a model this process has not seen before.
    pub fn of(model: &EdgeModel) -> Self {
        let s = model.status.clone().unwrap_or_default();
        Memory {
            uid: model.uid().unwrap_or_default(),
            status: RolloutStatus {
                revision: s.revision,
                rolled_out: conditions::find(&s.conditions, types::ROLLED_OUT).cloned(),
                rollouts: s.rollouts,
                history: s.history,
            },
            ..Default::default()
        }
    }

    /// Forgets writes the caches now show (or whose pods are gone).
    pub fn settle(&mut self, pods: &Pods, assignments: &Assignments) {
        self.created
            .retain(|pod, _| !assignments.contains_key(pod) && pods.contains_key(pod));
        self.desired.retain(|pod, digest| {
            assignments
                .get(pod)
                .and_then(|a| a.spec.desired.as_ref())
                .is_none_or(|d| &d.digest != digest)
        });
        self.intervals.retain(|pod, want| {
            assignments
                .get(pod)
                .is_some_and(|a| a.spec.heartbeat_interval.as_ref() != Some(want))
        });
    }
}

/// The model's pods (metadata) and assignments, by pod name, as the caches show them.
pub type Pods = BTreeMap<String, Arc<PartialObjectMeta<Pod>>>;
pub type Assignments = HashMap<String, Arc<ModelAssignment>>;

/// An Event to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// kube's recorder folds Events of one reason and action into a series that keeps its first
    /// note, so each revision (and step) has its own.
    pub action: String,
}

/// The fields of a `ModelAssignment`'s spec the rollout writes after creating it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredArtifact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<String>,
}

/// An assignment to create; `replaces` when a stale one of the pod's name must go first (a new
/// pod of the same name, e.g. a StatefulSet replica).
#[derive(Clone, Debug, PartialEq)]
pub struct Creation {
    pub assignment: ModelAssignment,
    pub replaces: bool,
}

/// What one reconcile writes.
#[derive(Clone, Debug)]
pub struct Step {
    pub status: RolloutStatus,
    pub create: Vec<Creation>,
    pub patches: BTreeMap<String, SpecPatch>,
    pub events: Vec<Announcement>,
    /// Serving pods without a device class.
    pub unplaced: Vec<String>,
    pub requeue: Duration,
    /// Spec problems announced now (remember them: once is enough).
    pub problems: Vec<String>,
}

/// The whole decision for one EdgeModel. `pods` are the namespace's pods labelled for the
/// model (not being deleted); `assignments` the model's assignments.
pub fn step(
    model: &EdgeModel,
    memory: &Memory,
    pods: &Pods,
    assignments: &Assignments,
    now: &Time,
    archs: &ClassArchs,
) -> Step {
    let spec = &model.spec.rollout;
    let classes = &model.spec.device_classes;
    let limits = Limits::from_spec(spec);
    let interval = format!(
        "{}s",
        rollout::report_interval(limits.heartbeat_timeout).as_secs()
    );
    let mut status = memory.status.clone();
    let mut events = Vec::new();
    let mut problems = Vec::new();

    // Which revision each class rolls out.
    let published: HashMap<&str, &str> = model
        .status
        .iter()
        .flat_map(|s| &s.device_classes)
        .filter_map(|c| Some((c.name.as_str(), c.artifact.as_ref()?.digest.as_str())))
        .collect();
    // The key each class's sidecars verify with (the EdgeModel's, as the pipeline verified).
    let keys: HashMap<&str, Option<String>> = model
        .status
        .iter()
        .flat_map(|s| &s.device_classes)
        .filter_map(|c| Some((c.name.as_str(), c.artifact.as_ref()?.public_key.clone())))
        .collect();
    let key_of = |class: &str| keys.get(class).cloned().flatten();
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
            now,
        ) else {
            continue;
        };
        if let Some(problem) = &choice.problem
            && !memory.problems.contains(problem)
        {
            problems.push(problem.clone());
            events.push(warning(
                reasons::ROLLBACK_REVISION_NOT_FOUND,
                problem.clone(),
                "Rollback".into(),
            ));
        }
        if choice.started {
            status.revision = Some(choice.rollout.revision);
            revisions::record_start(&mut status.history, &choice.rollout, now);
            events.push(normal(
                reasons::ROLLOUT_STARTED,
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
    let selector = spec.selector.clone().unwrap_or_else(|| LabelSelector {
        match_labels: Some([(labels::MODEL.to_string(), model.name_any())].into()),
        ..Default::default()
    });
    let selected: BTreeMap<&String, &Arc<PartialObjectMeta<Pod>>> = pods
        .iter()
        .filter(|(_, p)| selector::matches(&selector, p.labels()))
        .collect();
    let mut by_class: HashMap<String, Vec<(Arc<ModelAssignment>, bool)>> = HashMap::new();
    let mut misplaced: HashMap<String, Vec<String>> = HashMap::new();
    let mut unplaced = Vec::new();
    let mut create = Vec::new();
    for (&pod_name, &pod) in &selected {
        let Some(class) = pod_class(pod.labels(), classes) else {
            unplaced.push(pod_name.clone());
            continue;
        };
        let uid = pod.uid().unwrap_or_default();
        let canary = spec
            .canary_selector
            .as_ref()
            .is_some_and(|s| selector::matches(s, pod.labels()));
        let known = assignments
            .get(pod_name)
            .or_else(|| memory.created.get(pod_name));
        let a = match known {
            Some(a) if a.spec.pod.uid == uid => a.clone(),
            stale => {
                let target = chosen
                    .iter()
                    .find(|r| r.device_class == class)
                    .and_then(revisions::target);
                let a =
                    new_assignment(model, pod, class, target.as_ref(), key_of(class), &interval);
                create.push(Creation {
                    assignment: a.clone(),
                    replaces: stale.is_some(),
                });
                Arc::new(a)
            }
        };
        // A sidecar running as an architecture its class does not name is on no node of the
        // class: it is not rolled out to, and the class's rollout names it.
        let reported = a.status.as_ref().and_then(|s| s.arch);
        if let (Some(arch), Some(wanted)) = (reported, archs.get(class))
            && !wanted.is_empty()
            && !wanted.contains(&arch)
        {
            misplaced
                .entry(class.to_string())
                .or_default()
                .push(pod_name.clone());
            continue;
        }
        by_class
            .entry(class.to_string())
            .or_default()
            .push((a, canary));
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
                planner_pod(a, *canary, written.or(seen), now)
            })
            .collect();
        if let Some(e) = rollout::next_expiry(&planner_pods, limits.heartbeat_timeout) {
            expiry = Some(expiry.map_or(e, |x| x.min(e)));
        }
        let standing = revisions::standing(&current, now);
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
                            public_key: key_of(class),
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
        let (mut next, transitions) = revisions::advance(&current, &plan, steps, now);
        next.misplaced = misplaced.remove(class).unwrap_or_default();
        next.misplaced.sort();
        next.misplaced.truncate(MISPLACED_NAMED);
        for t in transitions {
            events.push(announce(
                t,
                &next,
                steps,
                plan.assign.len(),
                &mut status.history,
            ));
        }
        rollouts.push(next);
    }
    status.rollouts = rollouts;
    let desired = rolled_out_condition(&status.rollouts);
    status.rolled_out = conditions::merge(
        memory.status.rolled_out.as_slice(),
        std::slice::from_ref(&desired),
        model.metadata.generation,
        now,
    )
    .into_iter()
    .next();

    // One merge patch per pod: its new desired artifact and/or its report interval (assignments
    // made before the interval existed, or after the model's heartbeatTimeout changed).
    let mut patches: BTreeMap<String, SpecPatch> = BTreeMap::new();
    for (pod, desired) in assign {
        patches.entry(pod).or_default().desired = Some(desired);
    }
    // A pod told to verify with another key than its class's now (a key added or rotated):
    // the same artifact, the current key.
    for (pod, a) in assignments {
        let Some(d) = &a.spec.desired else { continue };
        let key = key_of(&a.spec.device_class);
        // Never from a stale cache: a digest written but not yet seen stays what was written.
        let seen = memory.desired.get(pod).is_none_or(|w| w == &d.digest);
        if selected.contains_key(pod) && seen && d.public_key != key && !patches.contains_key(pod) {
            patches.entry(pod.clone()).or_default().desired = Some(DesiredArtifact {
                public_key: key,
                ..d.clone()
            });
        }
    }
    for (pod, a) in assignments {
        let current = memory
            .intervals
            .get(pod)
            .or(a.spec.heartbeat_interval.as_ref());
        if selected.contains_key(pod) && current != Some(&interval) {
            patches.entry(pod.clone()).or_default().heartbeat_interval = Some(interval.clone());
        }
    }

    // Clocks move on without any watch event: pauses end, heartbeats go stale. Look again
    // when the next heartbeat would go stale, so an offline pod is counted within its timeout
    // (at most once a second: a large fleet's reports trigger reconciles anyway).
    let active = status
        .rollouts
        .iter()
        .any(|r| r.state != RolloutState::Complete && r.state != RolloutState::Aborted);
    let periodic = Duration::from_secs(if active { 2 } else { 20 });
    let stale = expiry.map(|e| (e + Duration::from_millis(200)).max(Duration::from_secs(1)));
    Step {
        status,
        create,
        patches,
        events,
        unplaced,
        requeue: stale.map_or(periodic, |s| s.min(periodic)),
        problems,
    }
}

fn normal(reason: &'static str, note: String, action: String) -> Announcement {
    Announcement {
        warning: false,
        reason,
        note,
        action,
    }
}

fn warning(reason: &'static str, note: String, action: String) -> Announcement {
    Announcement {
        warning: true,
        reason,
        note,
        action,
    }
}

/// The Event for one transition of a class's rollout (and the history it closes).
fn announce(
    t: Transition,
    next: &ClassRollout,
    steps: u32,
    moved: usize,
    history: &mut [RevisionRecord],
) -> Announcement {
    let class = &next.device_class;
    match t {
        Transition::StepComplete(n) => normal(
            reasons::ROLLOUT_STEP_COMPLETE,
            format!(
                "device class {class}: revision {} step {n} of {steps} complete",
                next.revision
            ),
            action(next.revision, Some(n)),
        ),
        Transition::Complete => {
            revisions::record_outcome(history, class, next.revision, RevisionOutcome::Complete);
            normal(
                reasons::ROLLOUT_COMPLETE,
                format!(
                    "device class {class}: revision {} ({}) serves on all {} pods",
                    next.revision, next.digest, next.total
                ),
                action(next.revision, None),
            )
        }
        Transition::Aborted(why) => {
            revisions::record_outcome(history, class, next.revision, RevisionOutcome::Aborted);
            let back = match &next.stable_digest {
                Some(d) => format!(
                    "rolling {moved} updated pods back to revision {} ({d})",
                    next.stable_revision.unwrap_or_default()
                ),
                None => "no earlier revision to roll back to; failing pods keep their model".into(),
            };
            warning(
                reasons::ROLLOUT_ABORTED,
                format!(
                    "device class {class}: revision {} aborted: {why}; {back}",
                    next.revision
                ),
                action(next.revision, None),
            )
        }
        Transition::Stalled(why) => warning(
            reasons::ROLLOUT_STALLED,
            format!("device class {class}: revision {}: {why}", next.revision),
            action(next.revision, None),
        ),
    }
}

fn action(revision: i64, step: Option<u32>) -> String {
    match step {
        Some(n) => format!("RolloutRevision{revision}Step{n}"),
        None => format!("RolloutRevision{revision}"),
    }
}

/// Each device class's architectures (from its DeviceClass): a pod whose sidecar reports
/// another is not rolled out to. A class missing here is not checked.
pub type ClassArchs = HashMap<String, Vec<Arch>>;

/// How many misplaced pods a class's rollout names.
pub const MISPLACED_NAMED: usize = 10;

/// The device class a pod serves: its `edgefleet.dev/device-class` label, or the model's only
/// class.
pub fn pod_class<'a>(
    labels: &'a BTreeMap<String, String>,
    classes: &'a [String],
) -> Option<&'a str> {
    match labels.get(labels::DEVICE_CLASS) {
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

/// The `RolledOut` condition from every class's rollout.
pub fn rolled_out_condition(rollouts: &[ClassRollout]) -> Desired {
    let summary = revisions::summarize(rollouts);
    let Some(s) = summary else {
        return Desired::new(
            types::ROLLED_OUT,
            false,
            reasons::NOTHING_PUBLISHED,
            "no artifact has been published yet",
        );
    };
    let message = s
        .waiting_for
        .clone()
        .unwrap_or_else(|| format!("{} of {} pods serve the current revision", s.ready, s.total));
    let reason = match s.state {
        RolloutState::Complete => reasons::ROLLOUT_COMPLETE,
        RolloutState::Aborted => reasons::ROLLOUT_ABORTED,
        RolloutState::Stalled => reasons::ROLLOUT_STALLED,
        RolloutState::Paused => reasons::ROLLOUT_PAUSED,
        RolloutState::Waiting => reasons::ROLLOUT_WAITING,
        RolloutState::Progressing | RolloutState::Idle => reasons::ROLLOUT_PROGRESSING,
    };
    Desired::new(
        types::ROLLED_OUT,
        s.state == RolloutState::Complete,
        reason,
        message,
    )
}

fn new_assignment(
    model: &EdgeModel,
    pod: &PartialObjectMeta<Pod>,
    class: &str,
    target: Option<&rollout::Target>,
    public_key: Option<String>,
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
                public_key: public_key.clone(),
            }),
            heartbeat_interval: Some(heartbeat_interval.to_string()),
        },
    );
    a.metadata.namespace = model.namespace();
    a.metadata.labels = Some(
        [
            (labels::MODEL.to_string(), model.name_any()),
            (labels::DEVICE_CLASS.to_string(), class.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::assignment::{Health, LoadedArtifact, ModelAssignmentStatus};

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn model(published: Option<&str>) -> EdgeModel {
        let mut m: EdgeModel = serde_json::from_value(serde_json::json!({
            "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
            "metadata": {"name": "fashion", "namespace": "vision", "uid": "m-1", "generation": 1},
            "spec": {
                "source": {"oci": "reg/base:v1"},
                "deviceClasses": ["cpu-int8"],
                "accuracy": {"floor": 0.85, "dataset": {"source": {"oci": "reg/data:v1"}}},
                "publish": {"repository": "reg/models/fashion"},
                "rollout": {
                    "steps": [{"percent": 50}, {"percent": 100}],
                    "canarySelector": {"matchLabels": {"canary": "true"}},
                    "health": {"heartbeatTimeout": "30s"},
                },
            }
        }))
        .unwrap();
        if let Some(d) = published {
            m.status = Some(serde_json::from_value(serde_json::json!({
                "deviceClasses": [{"name": "cpu-int8", "phase": "Published", "artifact": {
                    "digest": d, "reference": format!("reg/models/fashion@{d}"), "technique": "int8",
                    "runtime": "tract", "bytes": 1, "bytesCompressed": 1, "accuracy": 0.9,
                    "baseAccuracy": 0.9, "accuracyDrop": 0.0,
                }}],
            })).unwrap());
        }
        m
    }

    fn pods(names: &[(&str, bool)]) -> Pods {
        names
            .iter()
            .map(|(n, canary)| {
                let mut labels =
                    BTreeMap::from([(labels::MODEL.to_string(), "fashion".to_string())]);
                if *canary {
                    labels.insert("canary".into(), "true".into());
                }
                let mut p: PartialObjectMeta<Pod> = PartialObjectMeta::default();
                p.metadata.name = Some(n.to_string());
                p.metadata.namespace = Some("vision".into());
                p.metadata.uid = Some(format!("uid-{n}"));
                p.metadata.labels = Some(labels);
                (n.to_string(), Arc::new(p))
            })
            .collect()
    }

    fn serving(a: &ModelAssignment, digest: &str, now: &Time) -> Arc<ModelAssignment> {
        let mut a = a.clone();
        a.metadata.creation_timestamp = Some(t("2026-01-01T00:00:00Z"));
        a.status = Some(ModelAssignmentStatus {
            current: Some(LoadedArtifact {
                digest: digest.into(),
                revision: 1,
                ..Default::default()
            }),
            health: Some(Health::Healthy),
            error_rate: Some(0.0),
            latency_ms_p99: Some(1.0),
            last_heartbeat: Some(now.clone()),
            ..Default::default()
        });
        Arc::new(a)
    }

    #[test]
    fn new_pods_get_assignments_with_the_report_interval_and_nothing_moves_unpublished() {
        let now = t("2026-01-01T00:01:00Z");
        let s = step(
            &model(None),
            &Memory::default(),
            &pods(&[("a", false), ("b", false)]),
            &HashMap::new(),
            &now,
            &HashMap::new(),
        );
        assert_eq!(s.create.len(), 2);
        for c in &s.create {
            assert_eq!(c.assignment.spec.heartbeat_interval.as_deref(), Some("10s"));
            assert_eq!(c.assignment.spec.desired, None);
            assert!(!c.replaces);
            assert_eq!(c.assignment.owner_references()[0].kind, "Pod");
        }
        assert!(s.patches.is_empty() && s.events.is_empty());
        let rolled = s.status.rolled_out.unwrap();
        assert_eq!(
            (rolled.status.as_str(), rolled.reason.as_str()),
            ("False", reasons::NOTHING_PUBLISHED)
        );
    }

    #[test]
    fn a_published_artifact_starts_revision_one_on_every_pod_and_says_so() {
        let now = t("2026-01-01T00:01:00Z");
        let s = step(
            &model(Some("sha256:aa")),
            &Memory::default(),
            &pods(&[("a", true), ("b", false)]),
            &HashMap::new(),
            &now,
            &HashMap::new(),
        );
        assert_eq!(s.status.revision, Some(1));
        // A first rollout reaches pods that serve nothing at once, through their new assignments.
        assert!(s.create.iter().all(|c| {
            c.assignment
                .spec
                .desired
                .as_ref()
                .map(|d| d.digest.as_str())
                == Some("sha256:aa")
        }));
        assert_eq!(s.events[0].reason, reasons::ROLLOUT_STARTED);
        assert!(
            s.events[0].note.contains("revision 1 (sha256:aa) started"),
            "{:?}",
            s.events
        );
        assert_eq!(s.status.history.len(), 1);
    }

    #[test]
    fn a_fleet_serving_the_revision_completes_and_old_assignments_get_the_interval() {
        let now = t("2026-01-01T00:01:00Z");
        let m = model(Some("sha256:aa"));
        let first = step(
            &m,
            &Memory::default(),
            &pods(&[("a", false)]),
            &HashMap::new(),
            &now,
            &HashMap::new(),
        );
        let memory = Memory {
            status: first.status.clone(),
            ..Default::default()
        };
        let mut made = first.create[0].assignment.clone();
        // Made by an older operator: no interval yet.
        made.spec.heartbeat_interval = None;
        let assignments: Assignments =
            [("a".to_string(), serving(&made, "sha256:aa", &now))].into();
        let s = step(
            &m,
            &memory,
            &pods(&[("a", false)]),
            &assignments,
            &now,
            &HashMap::new(),
        );
        assert!(s.create.is_empty());
        assert_eq!(s.status.rollouts[0].state, RolloutState::Complete);
        assert!(
            s.events
                .iter()
                .any(|e| e.reason == reasons::ROLLOUT_COMPLETE),
            "{:?}",
            s.events
        );
        assert_eq!(s.status.history[0].outcome, Some(RevisionOutcome::Complete));
        assert_eq!(
            s.patches["a"],
            SpecPatch {
                desired: None,
                heartbeat_interval: Some("10s".into())
            }
        );
        // The next look: when that heartbeat would go stale (30 s), not the periodic 20 s.
        assert_eq!(s.requeue, Duration::from_secs(20));
        let later = t("2026-01-01T00:01:25Z");
        let s = step(
            &m,
            &memory,
            &pods(&[("a", false)]),
            &assignments,
            &later,
            &HashMap::new(),
        );
        assert_eq!(s.requeue, Duration::from_millis(5200));
    }

    #[test]
    fn pods_verify_with_the_key_their_class_was_verified_with_and_follow_a_new_one() {
        let now = t("2026-01-01T00:01:00Z");
        let mut m = model(Some("sha256:aa"));
        let set_key = |m: &mut EdgeModel, key: Option<&str>| {
            let status = m.status.as_mut().unwrap();
            status.device_classes[0]
                .artifact
                .as_mut()
                .unwrap()
                .public_key = key.map(Into::into);
        };
        set_key(&mut m, Some("PEM-1"));
        let first = step(
            &m,
            &Memory::default(),
            &pods(&[("a", false)]),
            &HashMap::new(),
            &now,
            &HashMap::new(),
        );
        let desired = first.create[0].assignment.spec.desired.clone().unwrap();
        assert_eq!(desired.public_key.as_deref(), Some("PEM-1"));
        let memory = Memory {
            status: first.status.clone(),
            ..Default::default()
        };
        let made = first.create[0].assignment.clone();
        let assignments: Assignments =
            [("a".to_string(), serving(&made, "sha256:aa", &now))].into();
        // Same key: nothing to write.
        let s = step(
            &m,
            &memory,
            &pods(&[("a", false)]),
            &assignments,
            &now,
            &HashMap::new(),
        );
        assert!(s.patches.is_empty(), "{:?}", s.patches);
        // A rotated key reaches the pod with the same artifact.
        set_key(&mut m, Some("PEM-2"));
        let s = step(
            &m,
            &memory,
            &pods(&[("a", false)]),
            &assignments,
            &now,
            &HashMap::new(),
        );
        let patched = s.patches["a"].desired.clone().unwrap();
        assert_eq!(
            (patched.digest.as_str(), patched.public_key.as_deref()),
            ("sha256:aa", Some("PEM-2"))
        );
    }

    #[test]
    fn a_sidecar_of_another_architecture_than_its_class_is_left_alone_and_named() {
        let now = t("2026-01-01T00:01:00Z");
        let m = model(Some("sha256:aa"));
        let archs: ClassArchs = [("cpu-int8".to_string(), vec![Arch::Amd64])].into();
        let first = step(
            &m,
            &Memory::default(),
            &pods(&[("a", false), ("b", false)]),
            &HashMap::new(),
            &now,
            &archs,
        );
        let memory = Memory {
            status: first.status.clone(),
            ..Default::default()
        };
        let reporting = |name: &str, arch: Arch| {
            let made = first
                .create
                .iter()
                .find(|c| c.assignment.name_any() == name)
                .unwrap()
                .assignment
                .clone();
            let mut a = (*serving(&made, "sha256:00", &now)).clone();
            a.status.as_mut().unwrap().arch = Some(arch);
            (name.to_string(), Arc::new(a))
        };
        let assignments: Assignments =
            [reporting("a", Arch::Amd64), reporting("b", Arch::Arm64)].into();
        let s = step(
            &m,
            &memory,
            &pods(&[("a", false), ("b", false)]),
            &assignments,
            &now,
            &archs,
        );
        let r = &s.status.rollouts[0];
        assert_eq!(r.misplaced, ["b"]);
        assert_eq!(r.total, 1, "{r:?}");
        assert!(
            s.patches
                .get("b")
                .and_then(|p| p.desired.as_ref())
                .is_none()
        );
        // Without the class's architectures, nothing is checked.
        let s = step(
            &m,
            &memory,
            &pods(&[("a", false), ("b", false)]),
            &assignments,
            &now,
            &HashMap::new(),
        );
        assert!(s.status.rollouts[0].misplaced.is_empty());
        assert_eq!(s.status.rollouts[0].total, 2);
    }

    #[test]
    fn a_pod_without_a_class_is_not_placed() {
        let mut m = model(Some("sha256:aa"));
        m.spec.device_classes = vec!["cpu-int8".into(), "gpu".into()];
        let s = step(
            &m,
            &Memory::default(),
            &pods(&[("a", false)]),
            &HashMap::new(),
            &t("2026-01-01T00:01:00Z"),
            &HashMap::new(),
        );
        assert_eq!(s.unplaced, vec!["a".to_string()]);
        assert!(s.create.is_empty());
    }

    #[test]
    fn a_pod_serves_its_labelled_class_or_the_only_one() {
        let one = vec!["cpu".to_string()];
        let two = vec!["cpu".to_string(), "gpu".to_string()];
        let none = BTreeMap::new();
        let gpu: BTreeMap<_, _> = [(labels::DEVICE_CLASS.to_string(), "gpu".to_string())].into();
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
        assert_eq!(c.reason, reasons::NOTHING_PUBLISHED);
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
        assert_eq!(c.reason, reasons::ROLLOUT_ABORTED);
        assert_eq!(c.message, "cpu: 2 of 2 updated pods failed");
    }
}
