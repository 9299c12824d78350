//! Condition vocabulary. Types follow kstatus (`Ready`, `Reconciling`, `Stalled`) plus the
//! pipeline stages DESIGN.md names; reasons are CamelCase constants so that tooling and tests
//! never compare against ad-hoc strings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const OPTIMIZED: &str = "Optimized";
    pub const PUBLISHED: &str = "Published";
    pub const ROLLED_OUT: &str = "RolledOut";
    pub const DEGRADED: &str = "Degraded";
    pub const ACCEPTED: &str = "Accepted";
}

pub mod reasons {
    pub const DEVICE_CLASS_NOT_FOUND: &str = "DeviceClassNotFound";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
    pub const ROLLOUT_STALLED: &str = "RolloutStalled";
    pub const DEVICE_CLASSES_RESOLVED: &str = "DeviceClassesResolved";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const RESOLVING: &str = "Resolving";
    pub const VALID: &str = "Valid";
    /// A DeviceClass's `executionProvider` is one the sidecar cannot run on.
    pub const UNSUPPORTED_EXECUTION_PROVIDER: &str = "UnsupportedExecutionProvider";
    pub const SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    pub const OPTIMIZING: &str = "Optimizing";
    pub const OPTIMIZED: &str = "Optimized";
    pub const PUBLISHED: &str = "Published";
    pub const ACCURACY_FLOOR_NOT_MET: &str = "AccuracyFloorNotMet";
    /// Candidates reached the accuracy requirement, and each exceeded a DeviceClass budget.
    pub const BUDGET_NOT_MET: &str = "BudgetNotMet";
    pub const OPTIMIZATION_FAILED: &str = "OptimizationFailed";
    pub const SUPERSEDED: &str = "Superseded";
    pub const REUSED: &str = "Reused";
    pub const DELETED: &str = "Deleted";
    /// The signing Secret cannot be read, or its `cosign.pub` is not a public key.
    pub const SIGNING_KEY_UNAVAILABLE: &str = "SigningKeyUnavailable";
    /// An artifact's signature did not verify (unsigned, another key, another digest).
    pub const SIGNATURE_REFUSED: &str = "SignatureRefused";
    // The rollout's Events and its `RolledOut` condition.
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    pub const ROLLOUT_STEP_COMPLETE: &str = "RolloutStepComplete";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const ROLLOUT_PROGRESSING: &str = "RolloutProgressing";
    pub const ROLLOUT_WAITING: &str = "RolloutWaiting";
    pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
    pub const ROLLBACK_REVISION_NOT_FOUND: &str = "RollbackRevisionNotFound";
    pub const NOTHING_PUBLISHED: &str = "NothingPublished";
}

/// Condition status strings.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";

/// A condition the operator wants to hold, before timestamps are assigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Merges desired conditions into the previous list: `lastTransitionTime` only moves when the
/// status flips, so watchers (Argo CD, kstatus) see stable objects; conditions of other types are
/// kept as they were.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let status = if d.status { TRUE } else { FALSE };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == d.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        out.push(Condition {
            type_: d.type_.to_string(),
            status: status.to_string(),
            reason: d.reason.to_string(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Looks a condition up by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(
            &[],
            &[Desired::new(types::READY, false, reasons::RESOLVING, "x")],
            Some(1),
            &t("2026-01-01T00:00:00Z"),
        );
        let same = merge(
            &first,
            &[Desired::new(types::READY, false, reasons::RESOLVING, "y")],
            Some(2),
            &t("2026-01-01T00:05:00Z"),
        );
        assert_eq!(same[0].last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(same[0].message, "y");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new(types::READY, true, reasons::VALID, "")],
            Some(2),
            &t("2026-01-01T00:09:00Z"),
        );
        assert_eq!(flipped[0].last_transition_time, t("2026-01-01T00:09:00Z"));
        assert_eq!(flipped[0].status, TRUE);
    }

    #[test]
    fn other_types_are_kept_and_order_is_stable() {
        let now = t("2026-01-01T00:00:00Z");
        let a = merge(
            &[],
            &[
                Desired::new(types::STALLED, false, reasons::VALID, ""),
                Desired::new(types::READY, true, reasons::VALID, ""),
            ],
            Some(1),
            &now,
        );
        let b = merge(
            &a,
            &[Desired::new(types::READY, false, reasons::RESOLVING, "")],
            Some(1),
            &now,
        );
        let types: Vec<_> = b.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
    }
}
