//! The Job's run in process (`edgefleet_optimizer::job::run`, what `job --request` and
//! `optimize` both call), with no subprocess: a request that passes publishes the winner with the
//! facts it measured and the request's own inputs digest, and the result says where; a request no
//! candidate meets ends with the floor-not-met verdict, exit code 3, and nothing written or pushed.

use edgefleet_api::deviceclass::Arch;
use edgefleet_api::job::{EXIT_BUDGET_NOT_MET, EXIT_FLOOR_NOT_MET, OptimizationRequest, Verdict};
use edgefleet_artifact::{Cache, Digest, Registry, RegistryOptions};
use edgefleet_optimizer::budget::Budget;
use edgefleet_optimizer::job::{self, Settings};
use edgefleet_optimizer::profile;
use edgefleet_optimizer::report::CandidateStatus;
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry};
use std::path::Path;

mod support;
use support::{fixture_path, test_set_path};

fn file_source(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    serde_json::json!({
        "location": path.display().to_string(),
        "digest": Digest::of(&bytes).to_string(),
    })
}

fn request(floor: f64, publish: Option<&str>) -> OptimizationRequest {
    let class = profile::built_in("cpu-int8").unwrap();
    let mut doc = serde_json::json!({
        "model": file_source(&fixture_path()),
        "dataset": file_source(&test_set_path()),
        "deviceClass": { "name": class.name, "spec": class.spec },
        "accuracy": { "floor": floor },
        "optimization": {
            "techniques": ["int8Dynamic"],
            "calibrationSamples": 200,
            "timeBudget": "5m",
        },
        "tuning": { "searchSamples": 200, "latencyRuns": 3, "selftestSamples": 4, "threads": 1 },
    });
    if let Some(target) = publish {
        doc["publish"] = serde_json::json!({ "target": target, "name": "fashion-mnist" });
    }
    serde_json::from_value(doc).expect("a well-formed request")
}

fn settings(out: &Path, cache: &Path, registry: &str) -> Settings {
    Settings {
        out: out.to_path_buf(),
        cache: Cache::open(cache).unwrap(),
        registry: Registry::new(RegistryOptions {
            plain_http: vec![registry.to_string()],
            ..Default::default()
        })
        .unwrap(),
        ca_files: vec![],
        keep_candidates: false,
        memory_probe: Some(env!("CARGO_BIN_EXE_edgefleet-optimizer").into()),
    }
}

#[test]
fn a_passing_request_publishes_what_it_measured_under_its_inputs_digest() {
    let registry = TestRegistry::start(RegistryConfig::default()).unwrap();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let target = format!("{}/models/fashion:cpu-int8", registry.addr);
    let request = request(0.80, Some(&target));
    let settings = settings(out.path(), cache.path(), &registry.addr);

    let finished = job::run(&request, &settings, &|_| {}).expect("the run reaches a verdict");
    let result = &finished.result;
    assert_eq!(result.verdict, Verdict::Passed);
    assert_eq!(job::exit_code(result), 0);
    assert_eq!(
        result.inputs_digest.as_deref(),
        Some(request.inputs_digest().as_str())
    );
    let winner = result.winner.as_ref().expect("a winner");
    assert_eq!(winner.technique, "int8-dynamic");
    assert!(winner.accuracy >= 0.80, "{winner:?}");
    assert!(out.path().join("model.onnx").exists());
    assert!(out.path().join("report.json").exists());

    // What the registry holds is what the result names, with the facts measured in memory.
    let artifact = result.artifact.as_ref().expect("pushed");
    let (inspected, config) =
        job::block_on(settings.registry.inspect(&artifact.reference)).expect("the pushed artifact");
    assert_eq!(inspected.digest.to_string(), artifact.digest);
    let facts = inspected.facts.as_ref().expect("edgefleet's facts");
    assert_eq!(
        facts.inputs_digest.as_ref().map(|d| d.to_string()),
        Some(request.inputs_digest())
    );
    assert_eq!(facts.technique, "int8-dynamic");
    assert_eq!(facts.device_class, "cpu-int8");
    assert!((facts.accuracy - winner.accuracy).abs() < 1e-6);
    assert_eq!(inspected.model.descriptor.size, winner.bytes_zstd);
    assert_eq!(config.config.precision.as_deref(), Some("int8-weights"));
}

#[test]
fn an_unmet_floor_ends_with_its_verdict_and_writes_nothing() {
    let registry = TestRegistry::start(RegistryConfig::default()).unwrap();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let target = format!("{}/models/fashion:unreachable", registry.addr);
    let request = request(0.999, Some(&target));
    let settings = settings(out.path(), cache.path(), &registry.addr);

    let finished = job::run(&request, &settings, &|_| {}).expect("the run reaches a verdict");
    assert_eq!(finished.result.verdict, Verdict::AccuracyFloorNotMet);
    assert_eq!(job::exit_code(&finished.result), EXIT_FLOOR_NOT_MET);
    assert!(finished.result.artifact.is_none());
    assert!(finished.model_path.is_none());
    assert!(!out.path().join("model.onnx").exists());
    assert!(
        job::block_on(settings.registry.inspect(&target)).is_err(),
        "nothing pushed"
    );
    let base = finished
        .result
        .base_accuracy
        .expect("the base model measured");
    assert!(base < 0.999 && base > 0.5, "{base}");
    assert_eq!(finished.result.required_accuracy, Some(0.999));
}

#[test]
fn candidates_over_a_device_class_budget_are_refused_and_the_report_says_by_which() {
    let registry = TestRegistry::start(RegistryConfig::default()).unwrap();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let target = format!("{}/models/fashion:budget", registry.addr);
    let mut request = request(0.80, Some(&target));
    // No model runs in a microsecond; every model fits in a terabyte.
    request.device_class.spec.latency_budget_ms = Some(0.001);
    request.device_class.spec.memory_budget_mib = Some(1 << 20);
    let settings = settings(out.path(), cache.path(), &registry.addr);

    let finished = job::run(&request, &settings, &|_| {}).expect("the run reaches a verdict");
    let result = &finished.result;
    assert_eq!(result.verdict, Verdict::BudgetNotMet);
    assert_eq!(job::exit_code(result), EXIT_BUDGET_NOT_MET);
    let why = result
        .over_budget
        .as_deref()
        .expect("which budget refused what");
    assert!(
        why.starts_with("fp32: p50 ")
            && why.contains("; int8-dynamic: p50 ")
            && why.contains("exceeds latencyBudgetMs 0.001"),
        "{why}"
    );
    assert!(result.artifact.is_none());
    assert!(!out.path().join("model.onnx").exists());
    assert!(
        job::block_on(settings.registry.inspect(&target)).is_err(),
        "nothing pushed"
    );

    let report = &finished.report;
    // Every candidate reached the requirement (the class allows fp32 too) and each is refused.
    let techniques: Vec<&str> = report
        .candidates
        .iter()
        .map(|c| c.technique.as_str())
        .collect();
    assert_eq!(techniques, ["fp32", "int8-dynamic", "int8-dynamic"]);
    assert!(
        report
            .candidates
            .iter()
            .all(|c| c.status == CandidateStatus::OverBudget)
    );
    let candidate = &report.candidates[1];
    assert_eq!(candidate.over_budget, [Budget::Latency]);
    let measured = candidate.measured.as_ref().unwrap();
    assert!(measured.accuracy >= 0.80, "it did reach the requirement");
    // Memory is measured in a fresh process: a session of this CNN holds its weights (the fp32
    // model is ~0.4 MB) and tract's plan, well under 256 MiB.
    let mib = measured.memory_mib.expect("memory measured");
    assert!(mib > 0.05 && mib < 256.0, "{mib} MiB");
    let base_mib = report.base.memory_mib.expect("the base's memory measured");
    assert!(base_mib > 0.05 && base_mib < 256.0, "{base_mib} MiB");
    let by = |b: Budget| report.budgets.iter().find(|a| a.budget == b).unwrap();
    assert!(by(Budget::Latency).checked);
    assert_eq!(by(Budget::Latency).refused, techniques);
    assert!(by(Budget::Memory).checked && by(Budget::Memory).refused.is_empty());
    assert_eq!(report.machine, "amd64");
}

#[test]
fn a_latency_budget_is_not_held_against_a_latency_that_is_not_the_devices() {
    let registry = TestRegistry::start(RegistryConfig::default()).unwrap();
    let (out, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut request = request(0.80, None);
    // arm64 devices, gated here on amd64: the latency measured here is not theirs.
    request.device_class.spec.arch = vec![Arch::Arm64];
    request.device_class.spec.latency_budget_ms = Some(0.001);
    let settings = settings(out.path(), cache.path(), &registry.addr);

    let finished = job::run(&request, &settings, &|_| {}).expect("the run reaches a verdict");
    assert_eq!(finished.result.verdict, Verdict::Passed);
    let latency = &finished.report.budgets[0];
    assert_eq!(latency.budget, Budget::Latency);
    assert!(!latency.checked);
    assert!(
        latency
            .note
            .contains("measured on amd64, while the class's devices are arm64"),
        "{}",
        latency.note
    );
}
