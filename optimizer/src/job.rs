//! One optimization, start to end, as a Job runs it (`edgefleet-optimizer job --request`) and
//! as `optimize` runs it by hand: fetch the pinned inputs, optimize behind the gate, write the
//! output directory, build the device's self-test, publish the winner when the request says
//! where, and say how it ended in the [`OptimizationResult`] the operator reads. No argument
//! parsing here (`main.rs`) and no file handling beyond the output directory (`output.rs`).

use crate::budget;
use crate::dataset::{Dataset, split};
use crate::eval::{self, Runtime};
use crate::model::Model;
use crate::optimize::{Event, Options, optimize};
use crate::output::{self, OutputDir};
use crate::profile::Profile;
use crate::publish::{self, Payload};
use crate::report::Report;
use crate::source::{self, Kind};
use anyhow::{Context as _, Result, bail};
use edgefleet_api::job::{
    ArtifactRef, OptimizationRequest, OptimizationResult, Verdict, WinnerSummary,
};
use edgefleet_artifact::{Cache, Digest, Registry};
use std::path::PathBuf;

/// How this run reaches the world; none of it changes the result.
pub struct Settings {
    pub out: PathBuf,
    pub cache: Cache,
    pub registry: Registry,
    /// Extra CA certificates for https:// sources.
    pub ca_files: Vec<PathBuf>,
    /// Also write every passing candidate to `out/candidates/`.
    pub keep_candidates: bool,
    /// The optimizer binary, which measures each passing candidate's memory in a fresh process
    /// (`memory`); `None` leaves memory unmeasured and `memoryBudgetMib` unchecked.
    pub memory_probe: Option<PathBuf>,
}

/// The optimizer binary itself, when this process is one (not a test harness).
pub fn this_binary() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .filter(|p| p.file_name().is_some_and(|n| n == "edgefleet-optimizer"))
}

/// How a run ended: the result for the operator and the full report.
pub struct Finished {
    pub result: OptimizationResult,
    pub report: Report,
    pub model_path: Option<PathBuf>,
    pub report_path: PathBuf,
}

/// The runtime a device class gates with.
pub fn runtime(name: edgefleet_api::deviceclass::Runtime, threads: usize) -> Box<dyn Runtime> {
    match name {
        edgefleet_api::deviceclass::Runtime::Tract => Box::new(eval::tract::Tract),
        edgefleet_api::deviceclass::Runtime::Onnxruntime => Box::new(eval::ort::OnnxRuntime {
            threads,
            library: None,
        }),
    }
}

/// Latency runs per model under emulation (`tuning.latencyRuns` natively).
pub const EMULATED_LATENCY_RUNS: usize = 20;

/// The options of the search, from the request, for this machine.
pub fn options(request: &OptimizationRequest, profile: &Profile) -> Result<Options> {
    let machine =
        budget::Machine::here(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    options_on(request, profile, machine)
}

/// The options of the search, from the request, on `machine` (`None`: an architecture the
/// device classes do not name).
pub fn options_on(
    request: &OptimizationRequest,
    profile: &Profile,
    machine: Option<budget::Machine>,
) -> Result<Options> {
    for (field, v) in [
        ("accuracy.floor", request.accuracy.floor),
        ("accuracy.maxDrop", request.accuracy.max_drop),
    ] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            bail!("{field} {v}: must be a fraction between 0 and 1 (e.g. 0.88 for 88%)");
        }
    }
    let o = &request.optimization;
    let emulated = machine.filter(|m| m.emulated);
    let time_budget = edgefleet_api::duration::parse(&o.time_budget)
        .map_err(|e| anyhow::anyhow!("optimization.timeBudget {:?}: {e}", o.time_budget))?;
    Ok(Options {
        floor: request.accuracy.floor,
        max_drop: request.accuracy.max_drop,
        objective: o.objective,
        techniques: o.techniques.clone(),
        calibration_samples: o.calibration_samples as usize,
        time_budget,
        search_samples: request.tuning.search_samples as usize,
        // An emulated latency stands for no device (it ranks nothing and meets no budget):
        // a few runs show its order of magnitude, at ~100x the native cost each.
        latency_runs: if emulated.is_some() {
            (request.tuning.latency_runs as usize).min(EMULATED_LATENCY_RUNS)
        } else {
            request.tuning.latency_runs as usize
        },
        latency_note: budget::latency_unrepresentative(&profile.spec, machine),
        budgets: budget::Budgets::of(&profile.spec),
        evaluation_subset: emulated.map(|m| crate::optimize::Subset {
            samples: request.tuning.emulated_evaluation_samples as usize,
            reason: format!(
                "gated under emulation of {}: at most tuning.emulatedEvaluationSamples ({}) evaluation samples",
                m.arch.as_str(),
                request.tuning.emulated_evaluation_samples
            ),
        }),
        machine: match machine {
            Some(m) if m.emulated => format!("{} (emulated)", m.arch.as_str()),
            Some(m) => m.arch.as_str().into(),
            None => std::env::consts::ARCH.into(),
        },
        ..Options::default()
    })
}

/// Where an input of the request is read from.
pub fn source_of(what: &str, s: &edgefleet_api::job::Source) -> Result<source::Source> {
    if s.location.starts_with("https://") || s.location.starts_with("http://") {
        let hex = s.digest.strip_prefix("sha256:").unwrap_or(&s.digest);
        return source::parse(what, &s.location, Some(hex));
    }
    source::parse(what, &s.location, None)
}

/// Runs the request. `Err` only when no verdict could be reached (bad inputs, a registry); a
/// request that no candidate meets ends `Ok` with [`Verdict::AccuracyFloorNotMet`].
pub fn run(
    request: &OptimizationRequest,
    settings: &Settings,
    progress: &dyn Fn(Event),
) -> Result<Finished> {
    let profile = Profile {
        name: request.device_class.name.clone(),
        spec: request.device_class.spec.clone(),
    };
    let options = Options {
        memory_probe: settings.memory_probe.clone(),
        ..options(request, &profile)?
    };
    let model_source = source_of("model", &request.model)?;
    let data_source = source_of("dataset", &request.dataset)?;
    let (model_path, dataset_path) = block_on(async {
        let ca = &settings.ca_files;
        let m = source::fetch(
            &model_source,
            Kind::Model,
            &settings.registry,
            &settings.cache,
            ca,
        )
        .await?;
        let d = source::fetch(
            &data_source,
            Kind::Dataset,
            &settings.registry,
            &settings.cache,
            ca,
        )
        .await?;
        anyhow::Ok((m, d))
    })?;
    let model = Model::load(&model_path)?;
    let data = Dataset::open(&dataset_path, request.preprocessing.as_ref())?;
    let runtime = runtime(profile.runtime(), request.tuning.threads.max(1) as usize);
    let mut outcome = optimize(
        &model,
        &data,
        &profile,
        runtime.as_ref(),
        &options,
        progress,
    )
    .with_context(|| format!("optimizing {}", request.model.location))?;

    let out = OutputDir::create(&settings.out)?;
    let winner_bytes = outcome.winner.as_ref().map(crate::model::encode);
    let model_path = out.put(output::MODEL, winner_bytes.as_deref())?;
    if settings.keep_candidates {
        let dir = out.path(output::CANDIDATES);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, proto) in outcome.passed.iter().enumerate() {
            let Some(proto) = proto else { continue };
            let c = &mut outcome.report.candidates[i];
            let path = dir.join(format!(
                "{:02}-{}.onnx",
                i + 1,
                c.technique.replace('+', "-")
            ));
            output::write_atomic(&path, &crate::model::encode(proto))?;
            c.file = Some(path.display().to_string());
        }
    }

    // What identifies this result: the operator reuses an artifact whose inputs match.
    let report = &mut outcome.report;
    report.model_digest = Some(Digest::of(&model.bytes).to_string());
    report.dataset_digest = Some(publish::dataset_digest(&dataset_path)?.to_string());
    report.inputs_digest = Some(request.inputs_digest());
    report.preprocessing = request
        .preprocessing
        .as_ref()
        .map(serde_json::to_value)
        .transpose()?;

    let selftest = match &winner_bytes {
        Some(bytes) if request.tuning.selftest_samples > 0 => {
            let winner = Model::from_bytes(&model_path, bytes.clone())?;
            let evaluation = split(data.len(), options.calibration_samples, 0).evaluation;
            let pool = &evaluation[..evaluation.len().min(64)];
            let test = crate::selftest::build(
                runtime.as_ref(),
                &winner,
                &data,
                pool,
                request.tuning.selftest_samples as usize,
            )
            .map_err(|e| anyhow::anyhow!("building self-test samples: {e}"))?;
            Some(test.to_json())
        }
        _ => None,
    };
    out.put(output::SELFTEST, selftest.as_deref())?;
    let mut report_json = serde_json::to_vec_pretty(&outcome.report)?;
    report_json.push(b'\n');
    let report_path = out.put(output::REPORT, Some(&report_json))?;

    let mut result = result_of(&outcome.report);
    if let (Some(bytes), Some(target)) = (winner_bytes, &request.publish) {
        // Published from what this run holds in memory, not from its files read back.
        let payload = Payload {
            model: bytes,
            report: report_json,
            selftest,
            facts: publish::facts_of(&outcome.report, target.name.clone())?,
        };
        let packed = payload.pack(Default::default())?;
        // The key is read before the push: a bad key fails the run without publishing.
        let key = target
            .signing_key
            .as_deref()
            .map(|p| publish::signing_key(std::path::Path::new(p)))
            .transpose()?;
        let pushed = block_on(settings.registry.push(&target.target, &packed))
            .with_context(|| format!("pushing to {}", target.target))?;
        eprintln!(
            "pushed {} ({} bytes uploaded, {} blobs already there)",
            pushed.reference, pushed.uploaded_bytes, pushed.skipped_blobs
        );
        if let Some(key) = key {
            let sig = block_on(settings.registry.sign(&pushed.reference, &key))
                .with_context(|| format!("signing {}", pushed.reference))?;
            eprintln!("signed {} ({sig})", pushed.reference);
        }
        result.artifact = Some(ArtifactRef {
            reference: pushed.reference,
            digest: pushed.digest.to_string(),
        });
    }
    Ok(Finished {
        result,
        model_path: outcome.winner.is_some().then_some(model_path),
        report: outcome.report,
        report_path,
    })
}

/// The compact result of a report (the artifact is added once pushed).
pub fn result_of(report: &Report) -> OptimizationResult {
    let best = report
        .candidates
        .iter()
        .filter_map(|c| c.measured.as_ref().map(|m| (m.accuracy, &c.technique)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    OptimizationResult {
        verdict: report.verdict,
        device_class: Some(report.device_class.clone()),
        runtime: Some(report.runtime.clone()),
        required_accuracy: Some(report.required_accuracy),
        base_accuracy: Some(report.base.accuracy),
        best_accuracy: best.map(|b| b.0),
        best_technique: best.map(|b| b.1.clone()),
        inputs_digest: report.inputs_digest.clone(),
        winner: report.winner.as_ref().map(|w| WinnerSummary {
            technique: w.technique.clone(),
            accuracy: w.measured.accuracy,
            bytes: w.measured.bytes as u64,
            bytes_zstd: w.measured.bytes_zstd as u64,
            latency_ms_p50: w.measured.latency_ms_p50,
        }),
        artifact: None,
        error: None,
        over_budget: (report.verdict == Verdict::BudgetNotMet).then(|| {
            let refused: Vec<String> = report
                .candidates
                .iter()
                .filter(|c| c.status == crate::report::CandidateStatus::OverBudget)
                .map(|c| format!("{}: {}", c.technique, c.reason.as_deref().unwrap_or("")))
                .collect();
            edgefleet_api::job::cut(&refused.join("; "), 1500)
        }),
    }
}

/// The exit status of a finished run.
pub fn exit_code(result: &OptimizationResult) -> u8 {
    match result.verdict {
        Verdict::Passed => 0,
        Verdict::AccuracyFloorNotMet => edgefleet_api::job::EXIT_FLOOR_NOT_MET,
        Verdict::BudgetNotMet => edgefleet_api::job::EXIT_BUDGET_NOT_MET,
        Verdict::Error => 1,
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Machine;
    use edgefleet_api::deviceclass::Arch;

    fn request() -> OptimizationRequest {
        serde_json::from_value(serde_json::json!({
            "model": {"location": "localhost:5000/m:v1", "digest": "sha256:00"},
            "dataset": {"location": "localhost:5000/d:v1", "digest": "sha256:01"},
            "datasetFormat": "npz",
            "deviceClass": {"name": "pi", "spec": {"arch": ["arm64"], "runtime": "tract", "precisions": ["int8", "fp32"]}},
            "accuracy": {"floor": 0.8},
            "optimization": {"techniques": [], "objective": "smallest", "calibrationSamples": 200, "timeBudget": "5m"},
        }))
        .unwrap()
    }

    #[test]
    fn the_gate_uses_a_subset_of_the_evaluation_only_under_emulation() {
        let mut request = request();
        request.tuning.emulated_evaluation_samples = 300;
        let profile = Profile {
            name: "pi".into(),
            spec: request.device_class.spec.clone(),
        };
        let native = Machine {
            arch: Arch::Arm64,
            emulated: false,
        };
        let o = options_on(&request, &profile, Some(native)).unwrap();
        assert_eq!((o.evaluation_subset, o.machine.as_str()), (None, "arm64"));
        assert_eq!(o.latency_runs, 200);
        let emulated = Machine {
            emulated: true,
            ..native
        };
        let o = options_on(&request, &profile, Some(emulated)).unwrap();
        let subset = o.evaluation_subset.unwrap();
        assert_eq!(subset.samples, 300);
        assert!(
            subset.reason.contains("emulation of arm64")
                && subset.reason.contains("tuning.emulatedEvaluationSamples"),
            "{}",
            subset.reason
        );
        assert_eq!(o.machine, "arm64 (emulated)");
        assert_eq!(o.latency_runs, EMULATED_LATENCY_RUNS);
    }
}
