//! The rollout planner: a pure, deterministic function from (rollout spec, target artifact, the
//! pods' reports, where the rollout stands, the clock) to the per-pod desired digests to write
//! and the progress to show. No I/O: the controller reads `ModelAssignment`s, calls [`plan`],
//! and writes what it returns.
//!
//! Rules, in order:
//! - paused: nothing moves;
//! - too many updated pods failing (self-test, `Failed`, error rate or p99 over the limits):
//!   abort and send every updated pod back to the last good digest;
//! - a pod without a desired artifact that serves nothing (new) starts on the target at once;
//!   one that already serves another digest moves in the waves like the others;
//! - otherwise the current step's share of pods (canaries first, then by name) is moved to the
//!   target, never more at once than `maxUnavailable` allows counting pods already offline or
//!   still loading; a step is done when its pods serve the target healthily; then its pause or
//!   manual gate holds the next step; the last step also moves offline pods, which converge when
//!   they come back. Pods that refused the target while under the failure threshold are
//!   tolerated: they keep serving their old model and are counted as failed.

use edgefleet_api::assignment::Health;
use edgefleet_api::edgemodel::RolloutSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

/// One serving pod as its `ModelAssignment` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    pub canary: bool,
    /// `spec.desired.digest`.
    pub desired: Option<String>,
    /// `status.current.digest`.
    pub serving: Option<String>,
    pub health: Option<Health>,
    /// Digest whose self-test failed (`status.selfTest` with `passed: false`).
    pub selftest_failed: Option<String>,
    pub error_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Time since the last heartbeat; `None` when the sidecar never reported.
    pub heartbeat_age: Option<Duration>,
    /// Time since the `ModelAssignment` was created.
    pub age: Duration,
}

/// What the rollout moves pods to, and what it falls back to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub revision: i64,
    pub digest: String,
    /// The last digest that rolled out healthily; `None` for a first rollout (nothing to go
    /// back to: failing pods are left as they are).
    pub last_good: Option<String>,
}

/// Where the rollout stands between two calls (kept in status by the controller).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Standing {
    /// Index of the step in progress.
    pub step: usize,
    /// How long the current step has been in progress.
    pub step_age: Duration,
    /// How long ago the current step's pods all became healthy (for its pause).
    pub step_done_for: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Pods are moving; the string says what the rollout waits for.
    Progressing(String),
    /// Waiting at a pause or a manual gate.
    Waiting(String),
    /// Every pod serves the target (offline pods have it assigned).
    Complete,
    /// Health failed: updated pods are sent back to the last good digest.
    Aborted(String),
    /// `spec.rollout.paused`.
    Paused,
    /// The step made no progress within the progress deadline; nothing more is moved.
    Stalled(String),
}

/// One write: set this pod's `spec.desired` to `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assign {
    pub pod: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub assign: Vec<Assign>,
    /// The step in progress after this plan.
    pub step: usize,
    /// True when the current step completed in this call (start its pause clock).
    pub step_done: bool,
    pub counts: Counts,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub total: u32,
    /// Pods whose desired digest is the target.
    pub updated: u32,
    /// Updated pods serving the target healthily.
    pub ready: u32,
    pub failed: u32,
    pub offline: u32,
}

/// Limits read from the spec, already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub heartbeat_timeout: Duration,
    pub progress_deadline: Duration,
    /// Per step: cumulative percent, pause, manual gate.
    pub steps: Vec<(u32, Option<Duration>, bool)>,
}

impl Limits {
    /// From the spec; durations were validated at admission, so a bad one falls back to its
    /// default rather than failing the plan.
    pub fn from_spec(spec: &RolloutSpec) -> Self {
        let parse = |s: &str, default: u64| {
            edgefleet_api::duration::parse(s).unwrap_or(Duration::from_secs(default))
        };
        let mut steps: Vec<_> = spec
            .steps
            .iter()
            .map(|s| {
                (
                    s.percent,
                    s.pause.as_deref().map(|p| parse(p, 0)),
                    s.manual_gate,
                )
            })
            .collect();
        if steps.is_empty() {
            steps.push((100, None, false));
        }
        Limits {
            heartbeat_timeout: parse(&spec.health.heartbeat_timeout, 120),
            progress_deadline: parse(&spec.progress_deadline, 600),
            steps,
        }
    }
}

/// Sidecars report this many times per heartbeat timeout: a pod counts offline only after it
/// missed that many reports in a row, never for one late report.
pub const REPORTS_PER_TIMEOUT: u64 = 3;

/// The status report interval the operator gives each pod: a third of the heartbeat timeout,
/// in whole seconds, at least one.
pub fn report_interval(heartbeat_timeout: Duration) -> Duration {
    Duration::from_secs((heartbeat_timeout.as_secs() / REPORTS_PER_TIMEOUT).max(1))
}

/// How long until the next pod's heartbeat goes stale (a pod that reports no more counts
/// offline then): the rollout looks again at that moment, so an offline pod is counted within
/// its timeout rather than at the next periodic pass.
pub fn next_expiry(pods: &[Pod], timeout: Duration) -> Option<Duration> {
    pods.iter()
        .filter_map(|p| p.heartbeat_age)
        .filter(|age| *age <= timeout)
        .map(|age| timeout - age)
        .min()
}

/// How many pods may be unavailable at once: a count, or a percentage of `total` rounded down;
/// at least 1 so that a rollout can always move. Default 25%.
pub fn unavailable_budget(max_unavailable: Option<&IntOrString>, total: u32) -> u32 {
    let n = match max_unavailable {
        None => total / 4,
        Some(IntOrString::Int(n)) => (*n).max(0) as u32,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok()) {
                Some(p) => total * p.min(100) / 100,
                None => s.parse().unwrap_or(total / 4),
            }
        }
    };
    n.max(1)
}

/// Pods a step covers: its cumulative percent of `total`, rounded up.
pub fn step_goal(percent: u32, total: u32) -> u32 {
    (total * percent.min(100)).div_ceil(100)
}

/// Why an updated pod counts as failed, if it does.
pub fn failure(pod: &Pod, target: &str, spec: &RolloutSpec) -> Option<String> {
    if pod.selftest_failed.as_deref() == Some(target) {
        return Some("self-test failed".into());
    }
    if pod.health == Some(Health::Failed) {
        return Some("health Failed".into());
    }
    if pod.serving.as_deref() != Some(target) {
        // Refused the target (it keeps serving the old model) without a self-test verdict.
        return (pod.health == Some(Health::Degraded)).then(|| "refused the artifact".into());
    }
    if let (Some(rate), Some(max)) = (pod.error_rate, spec.health.max_error_rate)
        && rate > max
    {
        return Some(format!("error rate {rate:.3} over {max}"));
    }
    if let (Some(p99), Some(max)) = (pod.p99_ms, spec.health.max_latency_p99_ms)
        && p99 > max
    {
        return Some(format!("p99 {p99:.1} ms over {max} ms"));
    }
    None
}

fn offline(pod: &Pod, timeout: Duration) -> bool {
    match pod.heartbeat_age {
        Some(age) => age > timeout,
        None => pod.age > timeout,
    }
}

/// The whole decision.
pub fn plan(
    spec: &RolloutSpec,
    limits: &Limits,
    target: &Target,
    pods: &[Pod],
    standing: &Standing,
) -> Plan {
    let t = target.digest.as_str();
    // A pod without a desired artifact that already serves another one (its sidecar restarted
    // from its cache, or its twin was recreated) moves in waves like any pod on that digest;
    // one that serves nothing, or the target already, starts on the target at once.
    let pods: Vec<Pod> = pods
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if p.desired.is_none() && p.serving.as_deref() != Some(t) {
                p.desired = p.serving.clone();
            }
            p
        })
        .collect();
    let mut order: Vec<&Pod> = pods.iter().collect();
    order.sort_by(|a, b| b.canary.cmp(&a.canary).then(a.name.cmp(&b.name)));
    let is_offline = |p: &Pod| offline(p, limits.heartbeat_timeout);
    let updated: Vec<&Pod> = order
        .iter()
        .copied()
        .filter(|p| p.desired.as_deref() == Some(t))
        .collect();
    let failed: Vec<(&Pod, String)> = updated
        .iter()
        .filter(|p| !is_offline(p))
        .filter_map(|p| failure(p, t, spec).map(|why| (*p, why)))
        .collect();
    let ready = |p: &Pod| {
        p.desired.as_deref() == Some(t)
            && p.serving.as_deref() == Some(t)
            && p.health == Some(Health::Healthy)
            && !is_offline(p)
            && failure(p, t, spec).is_none()
    };
    let counts = Counts {
        total: pods.len() as u32,
        updated: updated.len() as u32,
        ready: order.iter().filter(|p| ready(p)).count() as u32,
        failed: failed.len() as u32,
        offline: order.iter().filter(|p| is_offline(p)).count() as u32,
    };
    let step = standing.step.min(limits.steps.len() - 1);
    let done = |step: usize, assign: Vec<Assign>, step_done: bool, outcome: Outcome| Plan {
        assign,
        step,
        step_done,
        counts,
        outcome,
    };

    if spec.paused {
        return done(step, Vec::new(), false, Outcome::Paused);
    }

    // Health gate first: a failing rollout never moves forward.
    if !updated.is_empty() && failed.len() as f64 / updated.len() as f64 >= spec.failure_threshold {
        let why = failed
            .iter()
            .take(3)
            .map(|(p, why)| format!("{}: {why}", p.name))
            .collect::<Vec<_>>()
            .join("; ");
        let reason = format!(
            "{} of {} updated pods failed (threshold {}): {why}",
            failed.len(),
            updated.len(),
            spec.failure_threshold
        );
        let assign = match &target.last_good {
            Some(good) if good != t => updated
                .iter()
                .map(|p| Assign {
                    pod: p.name.clone(),
                    digest: good.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        return done(step, assign, false, Outcome::Aborted(reason));
    }

    let mut assign = Vec::new();
    // New pods start on the target.
    for p in order.iter().filter(|p| p.desired.is_none()) {
        assign.push(Assign {
            pod: p.name.clone(),
            digest: t.to_string(),
        });
    }

    let total = counts.total;
    let (percent, pause, gate) = limits.steps[step];
    let goal = step_goal(percent, total);
    let last_step = step + 1 == limits.steps.len();
    // Loading the target. A pod that refused it (failed, under the threshold) keeps serving its
    // old model: it is not unavailable and does not hold the step.
    let in_flight = updated
        .iter()
        .filter(|p| !ready(p) && !is_offline(p) && failure(p, t, spec).is_none())
        .count() as u32;
    let budget = unavailable_budget(spec.max_unavailable.as_ref(), total);
    let mut room = budget.saturating_sub(in_flight + counts.offline);
    let newly = assign.len() as u32;
    let mut moved = counts.updated + newly;
    for p in order
        .iter()
        .filter(|p| p.desired.is_some() && p.desired.as_deref() != Some(t))
    {
        if moved >= goal {
            break;
        }
        if is_offline(p) {
            continue;
        }
        if room == 0 {
            break;
        }
        assign.push(Assign {
            pod: p.name.clone(),
            digest: t.to_string(),
        });
        room -= 1;
        moved += 1;
    }
    // The last step also assigns offline pods: they converge when they return.
    if last_step && moved >= goal.saturating_sub(counts.offline) {
        for p in order
            .iter()
            .filter(|p| is_offline(p) && p.desired.is_some() && p.desired.as_deref() != Some(t))
        {
            assign.push(Assign {
                pod: p.name.clone(),
                digest: t.to_string(),
            });
        }
    }

    // Is this step done: its pods (those online) serve the target healthily?
    let online_goal = goal.min(total - counts.offline);
    let step_complete =
        assign.is_empty() && in_flight == 0 && counts.ready + counts.failed >= online_goal;
    if !step_complete {
        if standing.step_age > limits.progress_deadline && assign.is_empty() {
            return done(
                step,
                assign,
                false,
                Outcome::Stalled(format!(
                    "step {} of {} made no progress for {} ({} of {} pods ready, {} offline)",
                    step + 1,
                    limits.steps.len(),
                    edgefleet_api::duration::format(limits.progress_deadline),
                    counts.ready,
                    online_goal,
                    counts.offline
                )),
            );
        }
        let waiting = format!(
            "step {} of {} ({percent}%): {} of {online_goal} pods ready on revision {}{}",
            step + 1,
            limits.steps.len(),
            counts.ready,
            target.revision,
            if counts.offline > 0 {
                format!(", {} offline", counts.offline)
            } else {
                String::new()
            }
        );
        return done(step, assign, false, Outcome::Progressing(waiting));
    }
    if last_step {
        return done(
            step,
            assign,
            standing.step_done_for.is_none(),
            Outcome::Complete,
        );
    }
    // Done: hold for the pause or the manual gate, then start the next step.
    let just_done = standing.step_done_for.is_none();
    if gate {
        return done(
            step,
            assign,
            just_done,
            Outcome::Waiting(format!(
                "manual gate after step {} ({percent}%): set steps[{step}].manualGate to false to resume",
                step + 1
            )),
        );
    }
    if let Some(pause) = pause {
        let elapsed = standing.step_done_for.unwrap_or_default();
        if elapsed < pause {
            return done(
                step,
                assign,
                just_done,
                Outcome::Waiting(format!(
                    "pause after step {} ({percent}%): {} left",
                    step + 1,
                    // Whole seconds, rounded up: the status changes once a second at most.
                    edgefleet_api::duration::format(Duration::from_secs(
                        (pause - elapsed).as_secs_f64().ceil() as u64
                    ))
                )),
            );
        }
    }
    // Next step at once (the caller resets the step clock). Nothing was assigned in this call:
    // a step is only complete when there was nothing left to assign.
    debug_assert!(assign.is_empty());
    let next = Standing {
        step: step + 1,
        step_age: Duration::ZERO,
        step_done_for: None,
    };
    plan(spec, limits, target, &pods, &next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::edgemodel::RolloutStep;

    const OLD: &str = "sha256:old";
    const NEW: &str = "sha256:new";

    fn pod(name: &str, desired: &str, serving: &str, health: Health) -> Pod {
        Pod {
            name: name.into(),
            canary: false,
            desired: Some(desired.into()),
            serving: Some(serving.into()),
            health: Some(health),
            selftest_failed: None,
            error_rate: Some(0.0),
            p99_ms: Some(5.0),
            heartbeat_age: Some(Duration::from_secs(5)),
            age: Duration::from_secs(3600),
        }
    }

    fn fleet(n: usize) -> Vec<Pod> {
        (0..n)
            .map(|i| pod(&format!("p{i:02}"), OLD, OLD, Health::Healthy))
            .collect()
    }

    fn spec(steps: &[(u32, Option<&str>, bool)], max_unavailable: Option<&str>) -> RolloutSpec {
        RolloutSpec {
            steps: steps
                .iter()
                .map(|(percent, pause, gate)| RolloutStep {
                    percent: *percent,
                    pause: pause.map(str::to_string),
                    manual_gate: *gate,
                })
                .collect(),
            max_unavailable: max_unavailable.map(|m| IntOrString::String(m.into())),
            ..Default::default()
        }
    }

    fn target() -> Target {
        Target {
            revision: 2,
            digest: NEW.into(),
            last_good: Some(OLD.into()),
        }
    }

    /// The plan for `pods` at the start of the rollout.
    fn first(s: &RolloutSpec, pods: &[Pod]) -> Plan {
        plan(
            s,
            &Limits::from_spec(s),
            &target(),
            pods,
            &Standing::default(),
        )
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.assign.iter().map(|a| a.pod.as_str()).collect()
    }

    #[test]
    fn budgets_and_goals_round_as_documented() {
        assert_eq!(unavailable_budget(None, 10), 2);
        assert_eq!(unavailable_budget(None, 3), 1, "at least one");
        assert_eq!(
            unavailable_budget(Some(&IntOrString::String("50%".into())), 9),
            4
        );
        assert_eq!(unavailable_budget(Some(&IntOrString::Int(3)), 100), 3);
        assert_eq!(unavailable_budget(Some(&IntOrString::Int(0)), 100), 1);
        assert_eq!(step_goal(10, 5), 1);
        assert_eq!(step_goal(50, 5), 3);
        assert_eq!(step_goal(100, 5), 5);
    }

    #[test]
    fn the_first_step_moves_canaries_first_within_the_budget() {
        let s = spec(&[(20, None, false), (100, None, false)], Some("1"));
        let mut pods = fleet(10);
        pods[7].canary = true;
        let p = first(&s, &pods);
        assert_eq!(names(&p), vec!["p07"], "one at a time, the canary first");
        assert!(matches!(p.outcome, Outcome::Progressing(_)));
        assert_eq!(p.step, 0);
    }

    #[test]
    fn a_step_waits_for_its_pods_then_pauses_then_moves_on() {
        let s = spec(&[(20, Some("30s"), false), (100, None, false)], Some("2"));
        let limits = Limits::from_spec(&s);
        let mut pods = fleet(10);
        pods[0].desired = Some(NEW.into());
        pods[1].desired = Some(NEW.into());
        // Loading: nothing more moves, the step is not done.
        let p = plan(&s, &limits, &target(), &pods, &Standing::default());
        assert!(p.assign.is_empty() && !p.step_done, "{p:?}");
        // Both serve the new digest healthily: the step is done, the pause starts.
        for pod in &mut pods[..2] {
            pod.serving = Some(NEW.into());
        }
        let p = plan(&s, &limits, &target(), &pods, &Standing::default());
        assert!(p.step_done && p.assign.is_empty());
        assert!(
            matches!(&p.outcome, Outcome::Waiting(w) if w.contains("30s left")),
            "{p:?}"
        );
        // Pause over: the next step starts, two more pods (the budget).
        let standing = Standing {
            step: 0,
            step_age: Duration::from_secs(60),
            step_done_for: Some(Duration::from_secs(31)),
        };
        let p = plan(&s, &limits, &target(), &pods, &standing);
        assert_eq!(p.step, 1);
        assert_eq!(names(&p), vec!["p02", "p03"]);
    }

    #[test]
    fn a_manual_gate_holds_until_the_spec_lifts_it() {
        let gated = spec(&[(10, None, true), (100, None, false)], Some("1"));
        let mut pods = fleet(10);
        pods[0] = pod("p00", NEW, NEW, Health::Healthy);
        let p = first(&gated, &pods);
        assert!(p.assign.is_empty());
        assert!(matches!(&p.outcome, Outcome::Waiting(w) if w.contains("manualGate")));
        let lifted = spec(&[(10, None, false), (100, None, false)], Some("1"));
        let p = first(&lifted, &pods);
        assert_eq!((p.step, names(&p)), (1, vec!["p01"]));
    }

    #[test]
    fn failures_over_the_threshold_roll_every_updated_pod_back() {
        let mut s = spec(&[(50, None, false), (100, None, false)], Some("5"));
        s.failure_threshold = 0.5;
        let mut pods = fleet(6);
        pods[0] = pod("p00", NEW, NEW, Health::Healthy);
        pods[1] = pod("p01", NEW, OLD, Health::Degraded);
        pods[1].selftest_failed = Some(NEW.into());
        let p = first(&s, &pods);
        let Outcome::Aborted(why) = &p.outcome else {
            panic!("{p:?}")
        };
        assert!(
            why.contains("1 of 2 updated pods failed") && why.contains("p01: self-test failed"),
            "{why}"
        );
        assert_eq!(
            p.assign,
            vec![
                Assign {
                    pod: "p00".into(),
                    digest: OLD.into()
                },
                Assign {
                    pod: "p01".into(),
                    digest: OLD.into()
                }
            ]
        );
        // Under the threshold (1 of 3): tolerated; the refusing pod keeps its old model and the
        // rollout moves on to the next step.
        pods[2] = pod("p02", NEW, NEW, Health::Healthy);
        let p = first(&s, &pods);
        assert!(matches!(p.outcome, Outcome::Progressing(_)), "{p:?}");
        assert_eq!((p.step, p.counts.failed), (1, 1));
        assert_eq!(names(&p), vec!["p03", "p04", "p05"]);
    }

    #[test]
    fn latency_and_error_limits_count_as_failures() {
        let mut s = spec(&[], None);
        s.health.max_latency_p99_ms = Some(20.0);
        s.health.max_error_rate = Some(0.01);
        let mut slow = pod("p", NEW, NEW, Health::Healthy);
        slow.p99_ms = Some(35.0);
        assert_eq!(failure(&slow, NEW, &s).unwrap(), "p99 35.0 ms over 20 ms");
        slow.p99_ms = Some(3.0);
        slow.error_rate = Some(0.2);
        assert!(failure(&slow, NEW, &s).unwrap().contains("error rate"));
        slow.error_rate = Some(0.0);
        assert_eq!(failure(&slow, NEW, &s), None);
    }

    #[test]
    fn offline_pods_use_the_budget_and_get_the_target_at_the_last_step() {
        let s = spec(&[], Some("2"));
        let limits = Limits::from_spec(&s);
        let mut pods = fleet(4);
        pods[3].heartbeat_age = Some(Duration::from_secs(3600));
        let p = plan(&s, &limits, &target(), &pods, &Standing::default());
        assert_eq!(p.counts.offline, 1);
        assert_eq!(
            names(&p),
            vec!["p00"],
            "one offline pod leaves room for one"
        );
        // All online pods done: the offline one is assigned, and the rollout is complete.
        let mut pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("p{i:02}"), NEW, NEW, Health::Healthy))
            .collect();
        let mut away = pod("p03", OLD, OLD, Health::Healthy);
        away.heartbeat_age = None;
        pods.push(away);
        let p = plan(&s, &limits, &target(), &pods, &Standing::default());
        assert_eq!(names(&p), vec!["p03"]);
        pods[3].desired = Some(NEW.into());
        let p = plan(&s, &limits, &target(), &pods, &Standing::default());
        assert_eq!(p.outcome, Outcome::Complete);
    }

    #[test]
    fn new_pods_start_on_the_target_and_paused_moves_nothing() {
        let mut s = spec(&[(50, None, false), (100, None, false)], Some("1"));
        let mut pods = fleet(3);
        pods[2].desired = None;
        pods[2].serving = None;
        pods[2].health = None;
        let p = first(&s, &pods);
        // The new pod does not count against maxUnavailable (it served nothing before).
        assert_eq!(names(&p), vec!["p02", "p00"]);
        s.paused = true;
        let p = first(&s, &pods);
        assert_eq!((p.assign.len(), p.outcome), (0, Outcome::Paused));
    }

    #[test]
    fn a_pod_without_a_desired_artifact_that_serves_one_waits_for_its_wave() {
        let s = spec(&[(50, None, false), (100, None, false)], Some("1"));
        let mut pods = fleet(4);
        // Restarted from its cache, serving the old digest; its twin names nothing yet.
        pods[0].desired = None;
        // Already on the target: just recorded.
        pods[3].desired = None;
        pods[3].serving = Some(NEW.into());
        let p = first(&s, &pods);
        assert_eq!(names(&p), vec!["p03", "p00"], "{p:?}");
        // p00 came through the step's budget (1), not as a new pod: p01 and p02 wait.
        assert_eq!(p.counts.updated, 0);
    }

    #[test]
    fn a_step_without_progress_past_the_deadline_stalls() {
        let s = spec(&[], Some("1"));
        let mut pods = fleet(2);
        pods[0].desired = Some(NEW.into()); // loading forever
        let standing = Standing {
            step_age: Duration::from_secs(3600),
            ..Default::default()
        };
        let p = plan(&s, &Limits::from_spec(&s), &target(), &pods, &standing);
        assert!(
            matches!(&p.outcome, Outcome::Stalled(w) if w.contains("no progress")),
            "{p:?}"
        );
        assert!(p.assign.is_empty());
    }

    /// Simulated fleets: sidecars that load what they are told (some failing), over many rounds.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn simulate(
            n: usize,
            steps: Vec<(u32, Option<&'static str>, bool)>,
            max_unavailable: u32,
            bad_pods: Vec<bool>,
        ) -> (Vec<Plan>, Vec<Pod>, RolloutSpec) {
            let mut s = spec(&[], Some(&max_unavailable.to_string()));
            s.steps = steps
                .iter()
                .map(|(percent, pause, gate)| RolloutStep {
                    percent: *percent,
                    pause: pause.map(str::to_string),
                    manual_gate: *gate,
                })
                .collect();
            let limits = Limits::from_spec(&s);
            let mut pods = fleet(n);
            let mut standing = Standing::default();
            let mut plans = Vec::new();
            for _ in 0..(4 * n + 20) {
                let p = plan(&s, &limits, &target(), &pods, &standing);
                for a in &p.assign {
                    let pod = pods.iter_mut().find(|x| x.name == a.pod).unwrap();
                    pod.desired = Some(a.digest.clone());
                }
                // Pods in flight (loading, not refused) must fit the budget (nothing is
                // offline here); a rollback is exempt: it sends everything back at once.
                let in_flight = pods
                    .iter()
                    .filter(|x| x.desired != x.serving && x.selftest_failed.is_none())
                    .count() as u32;
                assert!(
                    matches!(p.outcome, Outcome::Aborted(_))
                        || in_flight <= unavailable_budget(s.max_unavailable.as_ref(), n as u32),
                    "{in_flight} in flight with maxUnavailable {max_unavailable}: {p:?}"
                );
                standing = if p.step != standing.step {
                    Standing {
                        step: p.step,
                        ..Default::default()
                    }
                } else {
                    Standing {
                        step: p.step,
                        step_age: standing.step_age + Duration::from_secs(10),
                        step_done_for: if p.step_done || standing.step_done_for.is_some() {
                            Some(
                                standing.step_done_for.unwrap_or_default()
                                    + Duration::from_secs(10),
                            )
                        } else {
                            None
                        },
                    }
                };
                let stop = matches!(p.outcome, Outcome::Complete | Outcome::Aborted(_));
                plans.push(p);
                if stop {
                    break;
                }
                // The sidecars act on their desired digest.
                for (pod, bad) in pods.iter_mut().zip(&bad_pods) {
                    let want = pod.desired.clone().unwrap();
                    if pod.serving.as_deref() == Some(want.as_str()) {
                        continue;
                    }
                    if *bad && want == NEW {
                        pod.health = Some(Health::Degraded);
                        pod.selftest_failed = Some(NEW.into());
                    } else {
                        pod.serving = Some(want);
                        pod.health = Some(Health::Healthy);
                        pod.selftest_failed = None;
                    }
                }
            }
            (plans, pods, s)
        }

        fn steps() -> impl Strategy<Value = Vec<(u32, Option<&'static str>, bool)>> {
            proptest::collection::btree_set(1u32..100, 0..4).prop_map(|set| {
                let mut v: Vec<_> = set.into_iter().map(|p| (p, Some("20s"), false)).collect();
                v.push((100, None, false));
                v
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn a_healthy_fleet_always_converges_within_the_budget(n in 1usize..40, steps in steps(), mu in 1u32..6) {
                let (plans, pods, _) = simulate(n, steps, mu, vec![false; n]);
                prop_assert_eq!(&plans.last().unwrap().outcome, &Outcome::Complete);
                prop_assert!(pods.iter().all(|p| p.serving.as_deref() == Some(NEW)));
            }

            #[test]
            fn a_failing_gate_is_never_passed(n in 2usize..40, steps in steps(), mu in 1u32..6, seed in any::<u64>()) {
                // About half the pods fail their self-test on the new artifact.
                let bad: Vec<bool> = (0..n).map(|i| (seed >> (i % 64)) & 1 == 1).collect();
                prop_assume!(bad.iter().any(|b| *b));
                let (plans, pods, s) = simulate(n, steps, mu, bad.clone());
                let last = plans.last().unwrap();
                match &last.outcome {
                    // Every pod that had been told the new digest is told the old one again.
                    Outcome::Aborted(_) => prop_assert!(pods.iter().all(|p| p.desired.as_deref() == Some(OLD))),
                    // Failures stayed under the threshold: every other pod serves the target.
                    Outcome::Complete => {
                        prop_assert!(pods.iter().zip(&bad).all(|(p, b)| *b || p.serving.as_deref() == Some(NEW)));
                        prop_assert!((last.counts.failed as f64) / (last.counts.updated as f64) < s.failure_threshold);
                    }
                    other => prop_assert!(false, "ended {:?}", other),
                }
                // The rollout never went past a step while its pods were failing.
                for p in &plans {
                    if p.counts.failed as f64 / p.counts.updated.max(1) as f64 >= s.failure_threshold {
                        prop_assert!(!p.assign.iter().any(|a| a.digest == NEW));
                    }
                }
            }
        }
    }

    #[test]
    fn sidecars_report_three_times_per_heartbeat_timeout() {
        let interval = |s| report_interval(Duration::from_secs(s)).as_secs();
        assert_eq!(interval(90), 30);
        assert_eq!(interval(60), 20);
        assert_eq!(interval(10), 3);
        assert_eq!(interval(5), 1);
        assert_eq!(interval(1), 1);
        // Missing one report never makes a pod offline: three intervals fit in the timeout.
        for timeout in 5..600 {
            assert!(
                interval(timeout) * REPORTS_PER_TIMEOUT <= timeout,
                "{timeout}"
            );
        }
    }

    #[test]
    fn the_next_look_is_when_the_freshest_heartbeat_that_can_expire_does() {
        let timeout = Duration::from_secs(30);
        let at = |age: Option<u64>| Pod {
            heartbeat_age: age.map(Duration::from_secs),
            ..pod("p", "d", "d", Health::Healthy)
        };
        assert_eq!(next_expiry(&[], timeout), None);
        // Already offline, or never reported: nothing to wait for.
        assert_eq!(next_expiry(&[at(Some(40)), at(None)], timeout), None);
        assert_eq!(
            next_expiry(&[at(Some(5)), at(Some(25)), at(Some(40))], timeout),
            Some(Duration::from_secs(5))
        );
    }
}
