//! Prometheus metrics of the sidecar.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub name: String,
    pub digest: String,
    pub runtime: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub latency: Histogram,
    pub inferences: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub model: Family<ModelLabels, Gauge>,
    pub swaps: Counter,
    pub rollbacks: Counter,
    pub refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("edgefleet_sidecar");
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let inferences = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let model = Family::<ModelLabels, Gauge>::default();
        let swaps = Counter::default();
        let rollbacks = Counter::default();
        let refused = Counter::default();
        registry.register(
            "request_duration_seconds",
            "Inference request latency, including decoding and encoding",
            latency.clone(),
        );
        registry.register("inferences", "Samples inferred", inferences.clone());
        registry.register(
            "errors",
            "Failed requests and loads, by kind",
            errors.clone(),
        );
        registry.register("model", "The model being served (value 1)", model.clone());
        registry.register("swaps", "Models put in service", swaps.clone());
        registry.register(
            "rollbacks",
            "Swaps back to the previously served digest",
            rollbacks.clone(),
        );
        registry.register(
            "refused_loads",
            "Models refused (download, verification, load or self-test failed)",
            refused.clone(),
        );
        Metrics {
            registry,
            latency,
            inferences,
            errors,
            model,
            swaps,
            rollbacks,
            refused,
        }
    }
}

impl Metrics {
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }
}
