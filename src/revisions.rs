//! Rollout bookkeeping per device class, pure: which revision a class rolls out (a newly
//! published artifact, a `rollbackTo`, or a rollback after an aborted rollout), the bounded
//! history, and how a [`Plan`](crate::rollout::Plan) moves the recorded state forward.

use crate::rollout::{Outcome, Plan, Standing, Target};
use edgefleet_api::edgemodel::{
    ClassRollout, RevisionOutcome, RevisionRecord, RolloutSpec, RolloutState, RolloutSummary,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// Records kept per device class in `status.history`.
pub const HISTORY_PER_CLASS: usize = 10;

/// What a class should roll out now.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub rollout: ClassRollout,
    /// A new revision starts with this call.
    pub started: bool,
    /// `rollbackTo` names a revision this class has no record of (the class keeps its course).
    pub problem: Option<String>,
}

/// Picks the class's rollout. `published` is the class's current artifact; `newest` the
/// EdgeModel's newest revision so far. `None`: nothing was ever published for this class.
pub fn choose(
    class: &str,
    published: Option<&str>,
    rollback_to: Option<i64>,
    history: &[RevisionRecord],
    previous: Option<&ClassRollout>,
    newest: i64,
    now: &Time,
) -> Option<Choice> {
    let mut problem = None;
    let wanted = match rollback_to {
        Some(n) => match history
            .iter()
            .filter(|r| r.device_class == class && r.revision <= n)
            .max_by_key(|r| r.revision)
        {
            Some(r) => Some(r.digest.as_str()),
            None => {
                problem = Some(format!(
                    "spec.rollout.rollbackTo: device class {class} has no revision {n} or older in status.history"
                ));
                previous.map(|p| p.digest.as_str()).or(published)
            }
        },
        None => published,
    }?;
    if let Some(p) = previous
        && p.digest == wanted
    {
        return Some(Choice {
            rollout: p.clone(),
            started: false,
            problem,
        });
    }
    let rollout = ClassRollout {
        device_class: class.to_string(),
        revision: newest + 1,
        digest: wanted.to_string(),
        stable_digest: previous.and_then(|p| p.stable_digest.clone()),
        stable_revision: previous.and_then(|p| p.stable_revision),
        state: RolloutState::Progressing,
        step: 1,
        steps: previous.map(|p| p.steps).unwrap_or(1),
        step_started_at: Some(now.clone()),
        step_done_at: None,
        total: previous.map(|p| p.total).unwrap_or(0),
        updated: 0,
        ready: 0,
        failed: 0,
        offline: previous.map(|p| p.offline).unwrap_or(0),
        message: None,
        misplaced: Vec::new(),
    };
    Some(Choice {
        rollout,
        started: true,
        problem,
    })
}

/// The digest and fallback the planner works with. An aborted rollout works towards its stable
/// digest (`None` when there is none: nothing moves).
pub fn target(rollout: &ClassRollout) -> Option<Target> {
    if rollout.state == RolloutState::Aborted {
        let stable = rollout.stable_digest.clone()?;
        return Some(Target {
            revision: rollout.stable_revision.unwrap_or(rollout.revision),
            digest: stable.clone(),
            last_good: Some(stable),
        });
    }
    Some(Target {
        revision: rollout.revision,
        digest: rollout.digest.clone(),
        last_good: rollout.stable_digest.clone(),
    })
}

/// The rollout settings the planner applies to `rollout`: health gates abort a rollout only
/// while it is in progress. A completed one is not rolled back later (a pod that degrades
/// afterwards shows as failed, and new pods still get its digest).
pub fn gates(spec: &RolloutSpec, rollout: &ClassRollout) -> RolloutSpec {
    let mut spec = spec.clone();
    if rollout.state == RolloutState::Complete {
        spec.failure_threshold = f64::INFINITY;
    }
    spec
}

/// Where the planner resumes, from the recorded step and its timestamps.
pub fn standing(rollout: &ClassRollout, now: &Time) -> Standing {
    let since = |t: &Option<Time>| {
        t.as_ref().map(|t| {
            let d = now.0.duration_since(t.0);
            Duration::try_from(d).unwrap_or_default()
        })
    };
    Standing {
        step: rollout.step.saturating_sub(1) as usize,
        step_age: since(&rollout.step_started_at).unwrap_or_default(),
        step_done_for: since(&rollout.step_done_at),
    }
}

/// What changed, worth an Event.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    StepComplete(u32),
    Complete,
    Aborted(String),
    Stalled(String),
}

/// Moves the recorded state by one plan. In an aborted rollout the plan only brings pods back
/// to the stable digest; the state stays Aborted (with its reason) until another revision
/// starts.
pub fn advance(
    previous: &ClassRollout,
    plan: &Plan,
    steps: u32,
    now: &Time,
) -> (ClassRollout, Vec<Transition>) {
    let mut next = previous.clone();
    let mut transitions = Vec::new();
    next.steps = steps;
    next.total = plan.counts.total;
    next.updated = plan.counts.updated;
    next.ready = plan.counts.ready;
    next.failed = plan.counts.failed;
    next.offline = plan.counts.offline;
    if previous.state == RolloutState::Aborted {
        return (next, transitions);
    }
    let step = plan.step as u32 + 1;
    if step != previous.step {
        for done in previous.step..step {
            transitions.push(Transition::StepComplete(done));
        }
        next.step = step;
        next.step_started_at = Some(now.clone());
        next.step_done_at = None;
    }
    if plan.step_done && next.step_done_at.is_none() {
        next.step_done_at = Some(now.clone());
    }
    let (state, message) = match &plan.outcome {
        Outcome::Progressing(m) => (RolloutState::Progressing, Some(m.clone())),
        Outcome::Waiting(m) => (RolloutState::Waiting, Some(m.clone())),
        Outcome::Complete => (RolloutState::Complete, None),
        Outcome::Aborted(m) => (RolloutState::Aborted, Some(m.clone())),
        Outcome::Paused => (
            RolloutState::Paused,
            Some("spec.rollout.paused is true: no pod is moved".into()),
        ),
        Outcome::Stalled(m) => (RolloutState::Stalled, Some(m.clone())),
    };
    if state != previous.state {
        match &plan.outcome {
            Outcome::Complete => transitions.push(Transition::Complete),
            Outcome::Aborted(m) => transitions.push(Transition::Aborted(m.clone())),
            Outcome::Stalled(m) => transitions.push(Transition::Stalled(m.clone())),
            _ => {}
        }
    }
    if state == RolloutState::Complete {
        next.stable_digest = Some(next.digest.clone());
        next.stable_revision = Some(next.revision);
    }
    next.state = state;
    next.message = message;
    (next, transitions)
}

/// Appends a started revision, marks the class's open record superseded and keeps the newest
/// [`HISTORY_PER_CLASS`] records per class.
pub fn record_start(history: &mut Vec<RevisionRecord>, rollout: &ClassRollout, now: &Time) {
    for r in history
        .iter_mut()
        .filter(|r| r.device_class == rollout.device_class && r.outcome.is_none())
    {
        r.outcome = Some(RevisionOutcome::Superseded);
    }
    history.push(RevisionRecord {
        revision: rollout.revision,
        device_class: rollout.device_class.clone(),
        digest: rollout.digest.clone(),
        started_at: Some(now.clone()),
        outcome: None,
    });
    let mut kept = 0;
    let mut keep = vec![true; history.len()];
    for (i, r) in history.iter().enumerate().rev() {
        if r.device_class == rollout.device_class {
            kept += 1;
            keep[i] = kept <= HISTORY_PER_CLASS;
        }
    }
    let mut flags = keep.into_iter();
    history.retain(|_| flags.next().unwrap_or(true));
}

/// Sets the outcome of a revision's record once it is known.
pub fn record_outcome(
    history: &mut [RevisionRecord],
    class: &str,
    revision: i64,
    outcome: RevisionOutcome,
) {
    if let Some(r) = history
        .iter_mut()
        .find(|r| r.device_class == class && r.revision == revision)
    {
        r.outcome = Some(outcome);
    }
}

/// The fleet at a glance: counts summed, the least advanced class's state, step and message.
pub fn summarize(rollouts: &[ClassRollout]) -> Option<RolloutSummary> {
    let rank = |s: RolloutState| match s {
        RolloutState::Aborted => 0,
        RolloutState::Stalled => 1,
        RolloutState::Paused => 2,
        RolloutState::Progressing => 3,
        RolloutState::Waiting => 4,
        RolloutState::Complete => 5,
        RolloutState::Idle => 6,
    };
    let lead = rollouts.iter().min_by_key(|r| (rank(r.state), r.step))?;
    let sum = |f: fn(&ClassRollout) -> u32| rollouts.iter().map(f).sum();
    Some(RolloutSummary {
        state: lead.state,
        step: Some(format!("{}/{}", lead.step, lead.steps)),
        total: sum(|r| r.total),
        updated: sum(|r| r.updated),
        ready: sum(|r| r.ready),
        failed: sum(|r| r.failed),
        offline: sum(|r| r.offline),
        waiting_for: lead
            .message
            .as_ref()
            .map(|m| format!("{}: {m}", lead.device_class)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Counts;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn rec(revision: i64, class: &str, digest: &str) -> RevisionRecord {
        RevisionRecord {
            revision,
            device_class: class.into(),
            digest: digest.into(),
            started_at: None,
            outcome: Some(RevisionOutcome::Complete),
        }
    }

    fn plan(step: usize, step_done: bool, outcome: Outcome) -> Plan {
        Plan {
            assign: Vec::new(),
            step,
            step_done,
            counts: Counts {
                total: 4,
                updated: 2,
                ready: 2,
                failed: 0,
                offline: 0,
            },
            outcome,
        }
    }

    #[test]
    fn nothing_published_means_nothing_to_roll_out() {
        assert_eq!(
            choose("cpu", None, None, &[], None, 0, &t("2026-01-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn a_new_artifact_starts_the_next_revision_and_keeps_the_stable_one() {
        let now = t("2026-01-01T00:00:00Z");
        let first = choose("cpu", Some("sha256:a"), None, &[], None, 0, &now).unwrap();
        assert!(first.started);
        assert_eq!(first.rollout.revision, 1);
        assert_eq!(first.rollout.stable_digest, None);
        let mut done = first.rollout.clone();
        done.stable_digest = Some("sha256:a".into());
        done.stable_revision = Some(1);
        done.state = RolloutState::Complete;
        let same = choose("cpu", Some("sha256:a"), None, &[], Some(&done), 1, &now).unwrap();
        assert!(!same.started);
        assert_eq!(same.rollout, done);
        // Another class already used revision 2: revisions are per EdgeModel.
        let next = choose("cpu", Some("sha256:b"), None, &[], Some(&done), 2, &now).unwrap();
        assert!(next.started);
        assert_eq!(next.rollout.revision, 3);
        assert_eq!(next.rollout.step, 1);
        assert_eq!(next.rollout.stable_digest.as_deref(), Some("sha256:a"));
        assert_eq!(next.rollout.stable_revision, Some(1));
    }

    #[test]
    fn rollback_to_picks_the_class_record_at_or_before_the_revision() {
        let now = t("2026-01-01T00:00:00Z");
        let history = [
            rec(1, "cpu", "sha256:a"),
            rec(2, "gpu", "sha256:g"),
            rec(3, "cpu", "sha256:b"),
        ];
        let mut current = choose("cpu", Some("sha256:b"), None, &[], None, 2, &now)
            .unwrap()
            .rollout;
        current.state = RolloutState::Complete;
        let back = choose(
            "cpu",
            Some("sha256:b"),
            Some(2),
            &history,
            Some(&current),
            3,
            &now,
        )
        .unwrap();
        assert!(back.started);
        assert_eq!(back.rollout.digest, "sha256:a");
        assert_eq!(back.rollout.revision, 4);
        assert_eq!(back.problem, None);
        // A revision the class never had keeps the course and says so.
        let missing = choose("gpu", Some("sha256:h"), Some(1), &history, None, 3, &now).unwrap();
        assert!(missing.problem.unwrap().contains("spec.rollout.rollbackTo"));
        assert_eq!(missing.rollout.digest, "sha256:h");
    }

    #[test]
    fn an_aborted_rollout_targets_its_stable_digest() {
        let now = t("2026-01-01T00:00:00Z");
        let mut r = choose("cpu", Some("sha256:b"), None, &[], None, 1, &now)
            .unwrap()
            .rollout;
        r.stable_digest = Some("sha256:a".into());
        r.stable_revision = Some(1);
        assert_eq!(target(&r).unwrap().digest, "sha256:b");
        r.state = RolloutState::Aborted;
        let back = target(&r).unwrap();
        assert_eq!(back.digest, "sha256:a");
        assert_eq!(back.revision, 1);
        r.stable_digest = None;
        assert_eq!(target(&r), None);
        // The same published digest does not start again: it stays aborted.
        let again = choose("cpu", Some("sha256:b"), None, &[], Some(&r), 2, &now).unwrap();
        assert!(!again.started);
        assert_eq!(again.rollout.state, RolloutState::Aborted);
    }

    #[test]
    fn advancing_resets_the_step_clock_and_records_completion() {
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-01T00:01:00Z");
        let r = choose("cpu", Some("sha256:b"), None, &[], None, 0, &t0)
            .unwrap()
            .rollout;
        let (same, tr) = advance(&r, &plan(0, true, Outcome::Waiting("pause".into())), 3, &t1);
        assert_eq!(same.step, 1);
        assert_eq!(same.step_done_at, Some(t1.clone()));
        assert_eq!(same.state, RolloutState::Waiting);
        assert!(tr.is_empty());
        assert_eq!(
            standing(&same, &t("2026-01-01T00:01:30Z")).step_done_for,
            Some(Duration::from_secs(30))
        );
        let (moved, tr) = advance(
            &same,
            &plan(2, false, Outcome::Progressing("x".into())),
            3,
            &t1,
        );
        assert_eq!(moved.step, 3);
        assert_eq!(moved.step_done_at, None);
        assert_eq!(moved.step_started_at, Some(t1.clone()));
        assert_eq!(
            tr,
            [Transition::StepComplete(1), Transition::StepComplete(2)]
        );
        let (done, tr) = advance(&moved, &plan(2, true, Outcome::Complete), 3, &t1);
        assert_eq!(done.state, RolloutState::Complete);
        assert_eq!(done.stable_digest.as_deref(), Some("sha256:b"));
        assert_eq!(tr, [Transition::Complete]);
        let (again, tr) = advance(&done, &plan(2, true, Outcome::Complete), 3, &t1);
        assert_eq!(again, done);
        assert!(tr.is_empty());
    }

    #[test]
    fn an_abort_is_announced_once_and_sticks() {
        let t0 = t("2026-01-01T00:00:00Z");
        let r = choose("cpu", Some("sha256:b"), None, &[], None, 0, &t0)
            .unwrap()
            .rollout;
        let (aborted, tr) = advance(
            &r,
            &plan(0, false, Outcome::Aborted("2 of 2".into())),
            1,
            &t0,
        );
        assert_eq!(aborted.state, RolloutState::Aborted);
        assert_eq!(tr, [Transition::Aborted("2 of 2".into())]);
        let (after, tr) = advance(&aborted, &plan(0, true, Outcome::Complete), 1, &t0);
        assert_eq!(after.state, RolloutState::Aborted);
        assert_eq!(after.message.as_deref(), Some("2 of 2"));
        assert_eq!(after.stable_digest, None);
        assert!(tr.is_empty());
    }

    #[test]
    fn a_completed_rollout_is_never_aborted_afterwards() {
        use crate::rollout::{Limits, Pod, plan};
        use edgefleet_api::assignment::Health;
        let now = t("2026-01-01T00:00:00Z");
        let mut spec = RolloutSpec::default();
        spec.health.max_latency_p99_ms = Some(1.0);
        let mut r = choose("cpu", Some("sha256:b"), None, &[], None, 1, &now)
            .unwrap()
            .rollout;
        r.stable_digest = Some("sha256:a".into());
        let slow = Pod {
            name: "p".into(),
            canary: false,
            desired: Some("sha256:b".into()),
            serving: Some("sha256:b".into()),
            health: Some(Health::Healthy),
            selftest_failed: None,
            error_rate: Some(0.0),
            p99_ms: Some(5.0),
            heartbeat_age: Some(Duration::from_secs(1)),
            age: Duration::from_secs(60),
        };
        let limits = Limits::from_spec(&spec);
        let target = target(&r).unwrap();
        let standing = standing(&r, &now);
        // In progress: the latency limit aborts.
        let p = plan(
            &gates(&spec, &r),
            &limits,
            &target,
            std::slice::from_ref(&slow),
            &standing,
        );
        assert!(matches!(p.outcome, Outcome::Aborted(_)), "{:?}", p.outcome);
        // Complete: the same pod counts as failed, nothing is rolled back.
        r.state = RolloutState::Complete;
        let p = plan(&gates(&spec, &r), &limits, &target, &[slow], &standing);
        assert_eq!(p.outcome, Outcome::Complete);
        assert!(p.assign.is_empty());
        assert_eq!(p.counts.failed, 1);
    }

    #[test]
    fn history_is_bounded_per_class_and_marks_superseded() {
        let now = t("2026-01-01T00:00:00Z");
        let mut history = vec![rec(1, "gpu", "sha256:g")];
        history[0].outcome = None;
        for i in 0..15 {
            let r = choose(
                "cpu",
                Some(&format!("sha256:{i}")),
                None,
                &[],
                None,
                1 + i,
                &now,
            )
            .unwrap()
            .rollout;
            record_start(&mut history, &r, &now);
        }
        let cpu: Vec<_> = history.iter().filter(|r| r.device_class == "cpu").collect();
        assert_eq!(cpu.len(), HISTORY_PER_CLASS);
        assert_eq!(cpu.last().unwrap().revision, 16);
        assert_eq!(cpu.first().unwrap().revision, 7);
        assert!(
            cpu[..9]
                .iter()
                .all(|r| r.outcome == Some(RevisionOutcome::Superseded))
        );
        assert_eq!(cpu[9].outcome, None);
        // The other class's open record is untouched.
        assert_eq!(history[0].device_class, "gpu");
        assert_eq!(history[0].outcome, None);
        record_outcome(&mut history, "cpu", 16, RevisionOutcome::Complete);
        assert_eq!(
            history.last().unwrap().outcome,
            Some(RevisionOutcome::Complete)
        );
    }

    #[test]
    fn the_summary_shows_the_least_advanced_class() {
        let now = t("2026-01-01T00:00:00Z");
        let mut a = choose("cpu", Some("sha256:a"), None, &[], None, 0, &now)
            .unwrap()
            .rollout;
        a.state = RolloutState::Complete;
        a.total = 3;
        a.ready = 3;
        let mut b = choose("gpu", Some("sha256:b"), None, &[], None, 1, &now)
            .unwrap()
            .rollout;
        b.state = RolloutState::Progressing;
        b.total = 2;
        b.ready = 1;
        b.message = Some("step 1 of 1".into());
        let s = summarize(&[a, b]).unwrap();
        assert_eq!(s.state, RolloutState::Progressing);
        assert_eq!((s.total, s.ready), (5, 4));
        assert_eq!(s.waiting_for.as_deref(), Some("gpu: step 1 of 1"));
        assert_eq!(summarize(&[]), None);
    }
}
