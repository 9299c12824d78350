//! The over-the-air agent's decisions, as pure functions: what to load next, how long to wait
//! before trying again, how healthy the pod is and what its `ModelAssignment` status says.

use crate::metrics::WindowSummary;
use edgefleet_api::assignment::{
    DesiredArtifact, Health, LoadedArtifact, ModelAssignmentStatus, SelfTest,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// First wait after a failure; doubles with each further failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A request error rate above this marks a serving pod `Degraded`.
pub const DEGRADED_ERROR_RATE: f64 = 0.05;

/// How the latest attempt at the desired digest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub digest: String,
    /// Failures in a row for this digest.
    pub failures: u32,
    /// The registry or network failed: try again after a backoff. Otherwise the model was
    /// refused and is not tried again until the desired digest changes.
    pub transient: bool,
    pub selftest_failed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: the desired model serves, there is none, or it was refused.
    Idle,
    /// Fetch, verify, load, self-test and swap in this source.
    Load(String),
    /// A transient failure: try again after this long.
    Wait(Duration),
}

/// Where the agent pulls a desired artifact from: always by digest.
pub fn source_of(desired: &DesiredArtifact) -> String {
    format!("oci://{}@{}", desired.repository, desired.digest)
}

/// Exponential backoff with jitter: the `failures`-th wait lies in `[d/2, d]` where `d` doubles
/// from [`BASE_BACKOFF`] up to [`MAX_BACKOFF`]; `jitter` (0..1) picks the point, so that a fleet
/// that lost its registry at the same moment does not come back at the same moment.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let d = (BASE_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The report interval: the assignment's `spec.heartbeatInterval` when it names a usable one
/// (at least a second), else `fallback` (the `--heartbeat` flag).
pub fn report_interval(spec: Option<&str>, fallback: Duration) -> Duration {
    spec.and_then(|s| edgefleet_api::duration::parse(s).ok())
        .filter(|d| *d >= Duration::from_secs(1))
        .unwrap_or(fallback)
}

/// The wait before the next regular report: a little under the interval (jitter 0..1 spreads a
/// fleet's reports), never over it, so the operator sees a report at least once per interval.
pub fn next_report(every: Duration, jitter: f64) -> Duration {
    every.mul_f64(0.8 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// How long one status report may take before it is abandoned: the interval, but at least 2 s
/// (a loaded API server) and at most 10 s.
pub fn report_deadline(every: Duration) -> Duration {
    every.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// The next step given what is desired, what serves, and the last attempt.
pub fn next_step(
    desired: Option<&DesiredArtifact>,
    serving: Option<&str>,
    last: Option<&Attempt>,
    since_last: Duration,
    jitter: f64,
) -> Step {
    let Some(desired) = desired else {
        return Step::Idle;
    };
    if serving == Some(desired.digest.as_str()) {
        return Step::Idle;
    }
    match last.filter(|a| a.digest == desired.digest) {
        None => Step::Load(source_of(desired)),
        Some(a) if !a.transient => Step::Idle,
        Some(a) => {
            let wait = backoff(a.failures, jitter);
            if since_last >= wait {
                Step::Load(source_of(desired))
            } else {
                Step::Wait(wait - since_last)
            }
        }
    }
}

/// One line of health for the rollout's gates.
pub fn health(
    serving: Option<&str>,
    desired: Option<&DesiredArtifact>,
    last: Option<&Attempt>,
    window: &WindowSummary,
) -> Health {
    let pending = |digest: &str| last.filter(|a| a.digest == digest);
    let Some(serving) = serving else {
        return match desired.and_then(|d| pending(&d.digest)) {
            Some(a) if !a.transient => Health::Failed,
            _ => Health::Loading,
        };
    };
    if window
        .error_rate()
        .is_some_and(|rate| rate > DEGRADED_ERROR_RATE)
    {
        return Health::Degraded;
    }
    match desired {
        Some(d) if d.digest != serving => match pending(&d.digest) {
            Some(a) if !a.transient => Health::Degraded,
            _ => Health::Loading,
        },
        _ => Health::Healthy,
    }
}

/// What is in service, as the status reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    pub digest: String,
    pub revision: i64,
    pub load_ms: f64,
    pub loaded_at: Time,
    pub selftest_passed: usize,
}

/// Everything the status is made of.
pub struct Observed<'a> {
    pub serving: Option<&'a Serving>,
    pub previous: Option<&'a str>,
    pub desired: Option<&'a DesiredArtifact>,
    pub last: Option<&'a Attempt>,
    pub window: &'a WindowSummary,
    pub now: Time,
}

/// The `ModelAssignment` status the sidecar reports.
pub fn status(o: &Observed<'_>) -> ModelAssignmentStatus {
    let pending = o.desired.and_then(|d| {
        o.last.filter(|a| {
            a.digest == d.digest && Some(d.digest.as_str()) != o.serving.map(|s| s.digest.as_str())
        })
    });
    let selftest = match (pending, o.serving) {
        (Some(a), _) if a.selftest_failed => Some(SelfTest {
            passed: false,
            digest: a.digest.clone(),
            message: Some(a.reason.clone()),
        }),
        (_, Some(s)) => Some(SelfTest {
            passed: true,
            digest: s.digest.clone(),
            message: Some(format!("{} samples passed", s.selftest_passed)),
        }),
        _ => None,
    };
    let message = pending.map(|a| {
        if a.transient {
            format!(
                "cannot fetch {} yet ({} failures; retrying with backoff): {}",
                a.digest, a.failures, a.reason
            )
        } else {
            format!("refused {}: {}", a.digest, a.reason)
        }
    });
    ModelAssignmentStatus {
        current: o.serving.map(|s| LoadedArtifact {
            digest: s.digest.clone(),
            revision: s.revision,
            load_time_ms: Some(s.load_ms),
            loaded_at: Some(s.loaded_at.clone()),
        }),
        previous: o.previous.map(str::to_string),
        health: Some(health(
            o.serving.map(|s| s.digest.as_str()),
            o.desired,
            o.last,
            o.window,
        )),
        self_test: selftest,
        latency_ms_p50: o.window.p50_ms,
        latency_ms_p99: o.window.p99_ms,
        error_rate: o.window.error_rate(),
        last_heartbeat: Some(o.now.clone()),
        message,
        arch: edgefleet_api::deviceclass::Arch::of_rust(std::env::consts::ARCH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(digest: &str) -> DesiredArtifact {
        DesiredArtifact {
            digest: digest.into(),
            repository: "registry.local/models/m".into(),
            revision: 3,
            public_key: None,
        }
    }

    fn failed(digest: &str, failures: u32, transient: bool) -> Attempt {
        Attempt {
            digest: digest.into(),
            failures,
            transient,
            selftest_failed: !transient,
            reason: "why".into(),
        }
    }

    #[test]
    fn loads_what_is_desired_by_digest_and_nothing_else() {
        let d = desired("sha256:b");
        assert_eq!(
            next_step(None, Some("sha256:a"), None, Duration::ZERO, 0.5),
            Step::Idle
        );
        assert_eq!(
            next_step(Some(&d), Some("sha256:b"), None, Duration::ZERO, 0.5),
            Step::Idle
        );
        assert_eq!(
            next_step(Some(&d), Some("sha256:a"), None, Duration::ZERO, 0.5),
            Step::Load("oci://registry.local/models/m@sha256:b".into())
        );
        // An attempt at another digest does not hold this one back.
        let other = failed("sha256:c", 5, true);
        assert!(matches!(
            next_step(Some(&d), None, Some(&other), Duration::ZERO, 0.5),
            Step::Load(_)
        ));
    }

    #[test]
    fn a_refused_model_is_not_retried_and_a_transient_failure_waits_its_backoff() {
        let d = desired("sha256:b");
        let refused = failed("sha256:b", 1, false);
        assert_eq!(
            next_step(
                Some(&d),
                Some("sha256:a"),
                Some(&refused),
                Duration::from_secs(3600),
                0.5
            ),
            Step::Idle
        );
        let transient = failed("sha256:b", 3, true);
        // Third failure: d = 4 s, jitter 0.5 → 3 s.
        assert_eq!(
            next_step(
                Some(&d),
                Some("sha256:a"),
                Some(&transient),
                Duration::from_secs(1),
                0.5
            ),
            Step::Wait(Duration::from_secs(2))
        );
        assert!(matches!(
            next_step(
                Some(&d),
                Some("sha256:a"),
                Some(&transient),
                Duration::from_secs(3),
                0.5
            ),
            Step::Load(_)
        ));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(100, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(100, 0.0), MAX_BACKOFF / 2);
        let spread: Vec<_> = [0.0, 0.3, 0.9].iter().map(|j| backoff(5, *j)).collect();
        assert!(spread[0] < spread[1] && spread[1] < spread[2]);
    }

    #[test]
    fn health_follows_serving_desired_and_errors() {
        let quiet = WindowSummary::default();
        let d = desired("sha256:b");
        assert_eq!(health(None, Some(&d), None, &quiet), Health::Loading);
        assert_eq!(
            health(None, Some(&d), Some(&failed("sha256:b", 1, false)), &quiet),
            Health::Failed
        );
        assert_eq!(
            health(Some("sha256:b"), Some(&d), None, &quiet),
            Health::Healthy
        );
        assert_eq!(
            health(
                Some("sha256:a"),
                Some(&d),
                Some(&failed("sha256:b", 2, true)),
                &quiet
            ),
            Health::Loading,
            "still converging while the registry is away"
        );
        assert_eq!(
            health(
                Some("sha256:a"),
                Some(&d),
                Some(&failed("sha256:b", 1, false)),
                &quiet
            ),
            Health::Degraded
        );
        let errors = WindowSummary {
            answered: 90,
            failed: 10,
            ..Default::default()
        };
        assert_eq!(
            health(Some("sha256:b"), Some(&d), None, &errors),
            Health::Degraded
        );
    }

    #[test]
    fn the_status_says_what_serves_and_why_the_desired_model_does_not() {
        let d = desired("sha256:b");
        let serving = Serving {
            digest: "sha256:a".into(),
            revision: 2,
            load_ms: 12.5,
            loaded_at: Time(Default::default()),
            selftest_passed: 8,
        };
        let refused = Attempt {
            reason: "self-test failed: sample 0: top-1 3, expected 1".into(),
            ..failed("sha256:b", 1, false)
        };
        let window = WindowSummary {
            answered: 10,
            failed: 0,
            p50_ms: Some(1.5),
            p99_ms: Some(4.0),
        };
        let s = status(&Observed {
            serving: Some(&serving),
            previous: Some("sha256:0"),
            desired: Some(&d),
            last: Some(&refused),
            window: &window,
            now: Time(Default::default()),
        });
        let current = s.current.unwrap();
        assert_eq!((current.digest.as_str(), current.revision), ("sha256:a", 2));
        assert_eq!(s.previous.as_deref(), Some("sha256:0"));
        assert_eq!(s.health, Some(Health::Degraded));
        let st = s.self_test.unwrap();
        assert!(!st.passed && st.digest == "sha256:b");
        assert!(
            s.message
                .unwrap()
                .contains("refused sha256:b: self-test failed")
        );
        assert_eq!(
            (s.latency_ms_p50, s.latency_ms_p99, s.error_rate),
            (Some(1.5), Some(4.0), Some(0.0))
        );
        assert!(s.last_heartbeat.is_some());

        // Once the desired model serves, the refusal is history.
        let now_serving = Serving {
            digest: "sha256:b".into(),
            ..serving
        };
        let s = status(&Observed {
            serving: Some(&now_serving),
            previous: Some("sha256:a"),
            desired: Some(&d),
            last: Some(&refused),
            window: &window,
            now: Time(Default::default()),
        });
        assert_eq!(s.health, Some(Health::Healthy));
        assert!(s.message.is_none());
        assert!(s.self_test.unwrap().passed);
    }

    #[test]
    fn the_assignment_sets_the_report_interval() {
        let flag = Duration::from_secs(30);
        assert_eq!(report_interval(Some("5s"), flag), Duration::from_secs(5));
        assert_eq!(report_interval(Some("1m"), flag), Duration::from_secs(60));
        assert_eq!(report_interval(None, flag), flag);
        // Unusable values fall back rather than flood the API server.
        assert_eq!(report_interval(Some("100ms"), flag), flag);
        assert_eq!(report_interval(Some("soon"), flag), flag);
        for j in [0.0, 0.5, 1.0] {
            let wait = next_report(Duration::from_secs(10), j);
            assert!(
                wait <= Duration::from_secs(10) && wait >= Duration::from_secs(8),
                "{wait:?}"
            );
        }
    }
}
