//! Prometheus metrics of the sidecar.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// Latest request latencies kept for the status report's percentiles.
const WINDOW: usize = 4096;

#[derive(Debug, Default)]
struct Window {
    latencies_ms: std::collections::VecDeque<f64>,
    answered: u64,
    failed: u64,
}

/// Requests over one report interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowSummary {
    pub answered: u64,
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl WindowSummary {
    /// Failed requests over all requests; `None` without any request.
    pub fn error_rate(&self) -> Option<f64> {
        let all = self.answered + self.failed;
        (all > 0).then(|| self.failed as f64 / all as f64)
    }
}

/// The `q` quantile (0..=1) of `sorted` by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

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
    /// Requests since the last status report (the agent reads and resets it).
    window: Mutex<Window>,
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
            window: Mutex::default(),
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
    /// A failure of `kind`. The window (the error rate the rollout gates on) counts requests
    /// that reached a model: not `load` failures, and not `unknown_model` (no such model, or
    /// none loaded yet), which no model in service caused.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
        if !matches!(kind, "load" | "unknown_model") {
            self.window.lock().expect("window").failed += 1;
        }
    }

    /// A request answered after `seconds`.
    pub fn answered(&self, seconds: f64) {
        self.latency.observe(seconds);
        let mut w = self.window.lock().expect("window");
        w.answered += 1;
        if w.latencies_ms.len() == WINDOW {
            w.latencies_ms.pop_front();
        }
        w.latencies_ms.push_back(seconds * 1e3);
    }

    /// What happened since the last call, and starts a new interval.
    pub fn take_window(&self) -> WindowSummary {
        let w = std::mem::take(&mut *self.window.lock().expect("window"));
        let mut sorted: Vec<f64> = w.latencies_ms.into();
        sorted.sort_by(f64::total_cmp);
        WindowSummary {
            answered: w.answered,
            failed: w.failed,
            p50_ms: quantile(&sorted, 0.5),
            p99_ms: quantile(&sorted, 0.99),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encode");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_window_counts_requests_not_loads_and_resets() {
        let m = Metrics::default();
        for ms in [1.0, 2.0, 3.0] {
            m.answered(ms / 1e3);
        }
        m.error("bad_request");
        m.error("load");
        m.error("unknown_model");
        let w = m.take_window();
        assert_eq!((w.answered, w.failed), (3, 1));
        assert_eq!(w.error_rate(), Some(0.25));
        assert!((w.p50_ms.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(m.take_window(), WindowSummary::default());
    }
}
