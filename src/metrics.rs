//! Prometheus metrics of the controllers: reconciles, failures by kind, and reconcile duration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: prometheus_client::metrics::gauge::Gauge,
    requests: Family<VerbLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefleet_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let leader = prometheus_client::metrics::gauge::Gauge::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API server, by HTTP method (a watch is one GET)",
            requests.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            leader,
            requests,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            start: Instant::now(),
        }
    }

    pub fn failure(&self, controller: &'static str, error: &crate::error::Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// One request to the API server.
    pub fn api_request(&self, method: &http::Method) {
        self.requests
            .get_or_create(&VerbLabels {
                verb: method.as_str().to_string(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn reconciles(&self, controller: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .get()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_reconciles() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("edgemodel"));
        drop(metrics.reconcile("edgemodel"));
        let missing = crate::error::Error::MissingMetadata {
            object: "EdgeModel x".into(),
            what: "namespace",
        };
        metrics.failure("edgemodel", &missing);
        metrics.api_request(&http::Method::PATCH);
        let text = metrics.encode();
        assert!(
            text.contains(r#"edgefleet_operator_reconciles_total{controller="edgemodel"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"edgefleet_operator_api_requests_total{verb="PATCH"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"edgefleet_operator_reconcile_errors_total{controller="edgemodel",error="metadata"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"edgefleet_operator_reconcile_duration_seconds_count{controller="edgemodel"} 2"#
            ),
            "{text}"
        );
    }
}
