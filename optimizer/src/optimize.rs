//! The optimizer's driver: measure the base model, build each candidate the device class allows,
//! gate it on the evaluation samples with the device class's runtime, search layer by layer when
//! a candidate misses, and choose the winner by the objective. I/O (files, terminal) stays in
//! `main.rs`; the decisions (`required_accuracy`, `choose`) are pure functions.

use crate::budget::{self, Budgets};
use crate::calibrate::{self, Calibration};
use crate::dataset::{Dataset, split};
use crate::eval::{self, EvalError, Evaluation, Plan, Runtime};
use crate::model::{Model, encode};
use crate::profile::Profile;
use crate::recipe::{Recipe, plan};
use crate::report::{Candidate, CandidateStatus, Measured, Report, Samples, Search, Winner};
use edgefleet_api::deviceclass::Precision;
use edgefleet_api::edgemodel::{Objective, Technique};
use edgefleet_api::job::Verdict;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub floor: Option<f64>,
    pub max_drop: Option<f64>,
    pub objective: Objective,
    pub techniques: Vec<Technique>,
    pub calibration_samples: usize,
    pub time_budget: Duration,
    /// Evaluation samples used to rank layers in the search.
    pub search_samples: usize,
    pub batch: usize,
    pub latency_runs: usize,
    pub seed: u64,
    /// Why latency measured here does not stand for the device's (a CUDA or NPU class gated on
    /// this machine's CPU, another architecture, an emulator), if it does not
    /// ([`crate::budget::latency_unrepresentative`]). Then the winner is ranked by size and
    /// accuracy only, and `latencyBudgetMs` is not checked.
    pub latency_note: Option<String>,
    /// The device class's budgets, held against candidates that reach the requirement.
    pub budgets: Budgets,
    /// Where the gate runs, as the report names it (`amd64`, `arm64 (emulated)`).
    pub machine: String,
    /// Gate on an evenly spread subset of the evaluation samples instead of all of them (under
    /// emulation, where each sample costs many times its native time).
    pub evaluation_subset: Option<Subset>,
    /// The optimizer binary, which measures a model's memory in a fresh process
    /// ([`eval::resident_mib`]); without one, memory is not measured.
    pub memory_probe: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            floor: None,
            max_drop: None,
            objective: Objective::Balanced,
            techniques: Vec::new(),
            calibration_samples: 200,
            time_budget: Duration::from_secs(30 * 60),
            search_samples: 1000,
            batch: 50,
            latency_runs: 200,
            seed: 0,
            latency_note: None,
            budgets: Budgets::default(),
            machine: std::env::consts::ARCH.into(),
            evaluation_subset: None,
            memory_probe: None,
        }
    }
}

/// At most `samples` evaluation samples, and why the gate uses fewer than it has.
#[derive(Debug, Clone, PartialEq)]
pub struct Subset {
    pub samples: usize,
    pub reason: String,
}

/// At most `n` of `indices`, evenly spread over them (every k-th), in their order.
pub fn spread(indices: &[usize], n: usize) -> Vec<usize> {
    indices
        .iter()
        .step_by((indices.len() / n.max(1)).max(1))
        .copied()
        .take(n)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("neither --floor nor --max-drop was given: the gate needs an accuracy requirement")]
    NoRequirement,
    #[error("dataset {0} has no samples")]
    EmptyDataset(String),
    #[error(
        "dataset {dataset} has {samples} samples: too few to hold out {calibration} for calibration and still evaluate"
    )]
    TooSmall {
        dataset: String,
        samples: usize,
        calibration: usize,
    },
    #[error("device class {0} allows none of the requested techniques")]
    NoTechniques(String),
    #[error("{0}")]
    Eval(#[from] EvalError),
    #[error("{0}")]
    Unsupported(Box<Unsupported>),
    #[error("calibration failed: {0}")]
    Calibration(String),
}

/// A base model with an operator the runtime does not run.
#[derive(Debug, thiserror::Error)]
#[error(
    "{model}: node {node:?} uses operator {op}{domain}, which {runtime} does not support ({reason})"
)]
pub struct Unsupported {
    pub model: String,
    pub node: String,
    pub op: String,
    pub domain: String,
    pub runtime: &'static str,
    pub reason: String,
}

/// Progress of a long run, for the terminal.
#[derive(Debug, Clone)]
pub enum Event {
    Step { message: String },
    Done { message: String },
}

pub struct Outcome {
    pub report: Report,
    /// The winner's model, when one passed.
    pub winner: Option<crate::model::pb::ModelProto>,
    /// Every passing candidate's model, by candidate index (None for the others).
    pub passed: Vec<Option<crate::model::pb::ModelProto>>,
}

/// A candidate whose p50 exceeds fp32's by more than this factor runs slower than fp32: two
/// interleaved measurements of the same model differ by less (see `eval::interleaved_latency`).
pub const SLOWER_THAN_FP32: f64 = 1.05;

/// How far above the base model's own accuracy a requirement may be before the run stops at
/// once: candidates rarely beat the model they come from by more than noise.
pub const ABOVE_BASE_MARGIN: f64 = 0.005;

/// Why a requirement cannot be met by any candidate, when it is above what the base model
/// itself measures plus [`ABOVE_BASE_MARGIN`].
pub fn unreachable_requirement(required: f64, base: f64) -> Option<String> {
    (required > base + ABOVE_BASE_MARGIN).then(|| {
        format!(
            "the requirement {:.2}% is above what the base model itself measures ({:.2}%) plus the {:.1}-point margin: no candidate can reach it, so none was built",
            required * 100.0,
            base * 100.0,
            ABOVE_BASE_MARGIN * 100.0
        )
    })
}

/// The accuracy a candidate must reach.
pub fn required_accuracy(floor: Option<f64>, max_drop: Option<f64>, base: f64) -> Option<f64> {
    match (floor, max_drop) {
        (None, None) => None,
        (f, d) => Some(f.unwrap_or(0.0).max(d.map_or(0.0, |d| base - d))),
    }
}

/// Chooses among the candidates that passed; returns the index and why.
pub fn choose(
    candidates: &[(usize, &Measured)],
    base: &Measured,
    objective: Objective,
    latency_representative: bool,
) -> Option<(usize, String)> {
    let total = candidates.len();
    if !latency_representative && objective != Objective::Smallest {
        return choose(candidates, base, Objective::Smallest, true).map(|(i, why)| {
            (
                i,
                format!(
                    "{why} (latency measured here does not stand for the device's, so {} ranked by size)",
                    format!("{objective:?}").to_lowercase()
                ),
            )
        });
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
    // `fastest` and `balanced` never pick a candidate that runs slower than fp32 (beyond the
    // noise of two measurements of the same model); `smallest` may, and says what it costs.
    let slower = |m: &Measured| ratio(m.latency_ms_p50, base.latency_ms_p50) > SLOWER_THAN_FP32;
    let not_slower: Vec<(usize, &Measured)> = candidates
        .iter()
        .filter(|(_, m)| objective == Objective::Smallest || !slower(m))
        .copied()
        .collect();
    let (candidates, all_slower) = if not_slower.is_empty() {
        (candidates, true)
    } else {
        (not_slower.as_slice(), false)
    };
    let size = |m: &Measured| ratio(m.bytes_zstd as f64, base.bytes_zstd as f64);
    let speed = |m: &Measured| ratio(m.latency_ms_p50, base.latency_ms_p50);
    let score = |m: &Measured| match objective {
        Objective::Smallest => (size(m), speed(m), -m.accuracy),
        Objective::Fastest => (speed(m), size(m), -m.accuracy),
        // Geometric mean of the two ratios: halving size is worth as much as halving latency.
        Objective::Balanced => ((size(m) * speed(m)).sqrt(), -m.accuracy, size(m)),
    };
    let (i, m) = candidates.iter().min_by(|a, b| {
        let (x, y) = (score(a.1), score(b.1));
        x.0.total_cmp(&y.0)
            .then(x.1.total_cmp(&y.1))
            .then(x.2.total_cmp(&y.2))
    })?;
    let n = candidates.len();
    let what = match objective {
        Objective::Smallest => format!(
            "smallest over-the-air size of {n} passing candidate(s): {} bytes zstd, {:.3}x of fp32, p50 {:.3} ms ({:.2}x the speed of fp32)",
            m.bytes_zstd,
            size(m),
            m.latency_ms_p50,
            1.0 / speed(m).max(1e-9)
        ),
        Objective::Fastest => format!(
            "fastest of {n} passing candidate(s): p50 {:.3} ms, {:.2}x the speed of fp32",
            m.latency_ms_p50,
            1.0 / speed(m).max(1e-9)
        ),
        Objective::Balanced => format!(
            "best size x latency balance of {n} passing candidate(s): {:.3}x the zstd size and {:.2}x the speed of fp32",
            size(m),
            1.0 / speed(m).max(1e-9)
        ),
    };
    let what = if all_slower {
        format!("{what}; every passing candidate ran slower than fp32")
    } else if objective != Objective::Smallest && n < total {
        format!("{what}; {} slower than fp32 not considered", total - n)
    } else {
        what
    };
    Some((*i, what))
}

/// Runs the whole optimization.
pub fn optimize(
    base: &Model,
    data: &Dataset,
    profile: &Profile,
    runtime: &dyn Runtime,
    options: &Options,
    progress: &dyn Fn(Event),
) -> Result<Outcome, OptimizeError> {
    let started = Instant::now();
    if options.floor.is_none() && options.max_drop.is_none() {
        return Err(OptimizeError::NoRequirement);
    }
    let dataset_name = data.path.display().to_string();
    if data.is_empty() {
        return Err(OptimizeError::EmptyDataset(dataset_name));
    }
    let mut parts = split(data.len(), options.calibration_samples, options.seed);
    let evaluation_available = parts.evaluation.len();
    let subset = options
        .evaluation_subset
        .as_ref()
        .filter(|s| s.samples < evaluation_available);
    if let Some(s) = subset {
        parts.evaluation = spread(&parts.evaluation, s.samples);
    }
    if parts.evaluation.is_empty()
        || (options.calibration_samples > 0 && parts.calibration.is_empty())
    {
        return Err(OptimizeError::TooSmall {
            dataset: dataset_name,
            samples: data.len(),
            calibration: options.calibration_samples,
        });
    }
    let techniques = profile.techniques(&options.techniques);
    let recipes = plan(
        &techniques,
        profile.allows(Precision::Int8),
        profile.allows(Precision::Fp32),
    );
    if recipes.is_empty() {
        return Err(OptimizeError::NoTechniques(profile.name.clone()));
    }
    let search_idx = spread(&parts.evaluation, options.search_samples);
    let batch = options.batch.max(1);

    // The base model: its accuracy, and its predictions when the dataset has no labels.
    progress(Event::Step {
        message: format!(
            "measuring the base model on {} samples with {}",
            parts.evaluation.len(),
            runtime.name()
        ),
    });
    let labelled = data.labels.is_some();
    let unlabelled_reference = if labelled {
        None
    } else {
        let plan = Plan {
            indices: &parts.evaluation,
            batch,
            latency_runs: 0,
            reference: Some(&[]),
        };
        let e = evaluate(runtime, base, data, &plan)?;
        Some(e.predictions)
    };
    let reference_for = |indices: &[usize]| -> Option<Vec<usize>> {
        unlabelled_reference.as_ref().map(|all| {
            indices
                .iter()
                .map(|i| all[parts.evaluation.binary_search(i).expect("evaluation index")])
                .collect()
        })
    };
    let full_ref = reference_for(&parts.evaluation);
    let search_ref = reference_for(&search_idx);
    let full_plan = Plan {
        indices: &parts.evaluation,
        batch,
        latency_runs: options.latency_runs,
        reference: full_ref.as_deref(),
    };
    let search_plan = Plan {
        indices: &search_idx,
        batch,
        latency_runs: 0,
        reference: search_ref.as_deref(),
    };
    let base_eval = evaluate(runtime, base, data, &full_plan)?;
    let base_measured = Measured::of(&base.bytes, &base_eval);
    let required = required_accuracy(options.floor, options.max_drop, base_eval.accuracy)
        .expect("checked above");
    progress(Event::Done {
        message: format!(
            "base: top-1 {:.2}%, {} bytes ({} zstd), p50 {:.3} ms; candidates need {:.2}%",
            base_eval.accuracy * 100.0,
            base_measured.bytes,
            base_measured.bytes_zstd,
            base_eval.latency_ms_p50,
            required * 100.0
        ),
    });

    let mut report = Report {
        format: crate::report::FORMAT,
        model: base.path.display().to_string(),
        dataset: data.path.display().to_string(),
        device_class: profile.name.clone(),
        runtime: runtime.name().into(),
        objective: format!("{:?}", options.objective).to_lowercase(),
        required_accuracy: required,
        floor: options.floor,
        max_drop: options.max_drop,
        metric: if labelled { "labels" } else { "agreement" },
        samples: Samples {
            calibration: parts.calibration.len(),
            evaluation: parts.evaluation.len(),
            evaluation_available,
            evaluation_subset: subset.map(|s| s.reason.clone()),
            search: search_idx.len(),
        },
        base: base_measured.clone(),
        verdict: Verdict::AccuracyFloorNotMet,
        machine: options.machine.clone(),
        budgets: budget::applied(
            &options.budgets,
            options.latency_note.as_deref(),
            options.memory_probe.is_some(),
            &options.machine,
        ),
        stopped: None,
        winner: None,
        candidates: Vec::new(),
        wall_seconds: 0.0,
        model_digest: None,
        dataset_digest: None,
        inputs_digest: None,
        optimizer_version: env!("CARGO_PKG_VERSION"),
        preprocessing: None,
    };
    if let Some(why) = unreachable_requirement(required, base_eval.accuracy) {
        progress(Event::Done {
            message: format!("AccuracyFloorNotMet: {why}"),
        });
        report.stopped = Some(why);
        report.wall_seconds = started.elapsed().as_secs_f64();
        return Ok(Outcome {
            report,
            winner: None,
            passed: Vec::new(),
        });
    }

    // The search subset is a sample: its base accuracy differs from the full set's. Candidates
    // are held to the same drop on the subset that the requirement allows on the full set.
    let subset_required = if search_idx.is_empty() {
        required
    } else {
        let on_subset = evaluate(runtime, base, data, &search_plan)?.accuracy;
        required + (on_subset - base_eval.accuracy)
    };

    // Calibration, once, if any candidate needs it.
    let mut calibration = Calibration::default();
    if recipes.iter().any(Recipe::calibrated) {
        progress(Event::Step {
            message: format!(
                "calibrating activation ranges on {} held-out samples",
                parts.calibration.len()
            ),
        });
        calibration.ranges = calibrate::observe(&base.proto, data, &parts.calibration, batch)
            .map_err(OptimizeError::Calibration)?;
    }
    if recipes.iter().any(Recipe::needs_layer_inputs) {
        let layers = calibrate::layers_of(base.graph());
        progress(Event::Step {
            message: format!(
                "collecting the input statistics of {} layers on {} held-out samples",
                layers.len(),
                parts.calibration.len()
            ),
        });
        calibration.layers =
            calibrate::layer_inputs(&base.proto, data, &parts.calibration, batch, &layers)
                .map_err(OptimizeError::Calibration)?;
    }

    // Two passes. First every recipe as built, so each technique gets its figure even when a
    // long search would have used up the budget; then the accuracy-aware search for those that
    // missed, the closest to the requirement first, while the budget lasts.
    let deadline = started + options.time_budget;
    let gate_one = |recipe: &Recipe, searching: Option<Searching>, candidate: &mut Candidate| {
        gate(
            recipe,
            base,
            data,
            runtime,
            &calibration,
            (required, subset_required, base_eval.accuracy - required),
            (&search_plan, &full_plan),
            searching,
            candidate,
            progress,
        )
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut models: Vec<Option<crate::model::pb::ModelProto>> = Vec::new();
    let mut misses: Vec<(usize, f64)> = Vec::new();
    let total = recipes.len();
    for (n, recipe) in recipes.iter().enumerate() {
        let t0 = Instant::now();
        let mut candidate = Candidate {
            technique: recipe.technique().into(),
            precision: recipe.precision().into(),
            status: CandidateStatus::Skipped,
            reason: None,
            measured: None,
            parameters: recipe.parameters(),
            layers_kept_float: Vec::new(),
            over_budget: Vec::new(),
            search: None,
            speed_vs_fp32: None,
            layer_bits: BTreeMap::new(),
            seconds: 0.0,
            file: None,
        };
        if Instant::now() > deadline {
            candidate.reason = Some("time budget spent".into());
            candidates.push(candidate);
            models.push(None);
            continue;
        }
        progress(Event::Step {
            message: format!(
                "[{}/{total}] {} {}",
                n + 1,
                recipe.technique(),
                params(recipe)
            ),
        });
        let gated = gate_one(recipe, None, &mut candidate);
        candidate.seconds = t0.elapsed().as_secs_f64();
        progress(Event::Done {
            message: format!("[{}/{total}] {}", n + 1, summary(recipe, &candidate)),
        });
        if gated.model.is_none()
            && candidate.status == CandidateStatus::Failed
            && recipe.searchable()
            && !search_plan.indices.is_empty()
        {
            misses.push((n, gated.subset_accuracy.unwrap_or(0.0)));
        }
        models.push(gated.model);
        candidates.push(candidate);
    }
    let order = search_order(&misses);
    let searches = order.len();
    for (k, (n, as_built)) in order.into_iter().enumerate() {
        let (recipe, candidate) = (&recipes[n], &mut candidates[n]);
        if Instant::now() > deadline {
            candidate.reason = Some(format!(
                "{}; time budget spent before its search",
                candidate.reason.clone().unwrap_or_default()
            ));
            continue;
        }
        progress(Event::Step {
            message: format!(
                "[search {}/{searches}] {} {}",
                k + 1,
                recipe.technique(),
                params(recipe)
            ),
        });
        let t0 = Instant::now();
        let searching = Searching {
            until: deadline,
            as_built,
        };
        let gated = gate_one(recipe, Some(searching), candidate);
        candidate.seconds += t0.elapsed().as_secs_f64();
        progress(Event::Done {
            message: format!(
                "[search {}/{searches}] {}",
                k + 1,
                summary(recipe, candidate)
            ),
        });
        models[n] = gated.model;
    }

    // Latency of the base and every passing candidate again, interleaved, so that the winner's
    // speed against fp32 compares like with like.
    let mut base_measured = base_measured;
    let timed: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].status == CandidateStatus::Passed && models[i].is_some())
        .collect();
    if options.latency_runs > 0 && !timed.is_empty() {
        progress(Event::Step {
            message: format!(
                "timing the base and {} passing candidate(s) interleaved, {} runs each",
                timed.len(),
                options.latency_runs
            ),
        });
        let built: Vec<Model> = timed
            .iter()
            .map(|&i| {
                let proto = models[i].clone().expect("filtered on Some");
                Model {
                    path: Path::new(recipes[i].technique()).to_path_buf(),
                    bytes: encode(&proto),
                    proto,
                }
            })
            .collect();
        let all: Vec<&Model> = std::iter::once(base).chain(&built).collect();
        let timed_on: Vec<usize> = parts
            .evaluation
            .iter()
            .copied()
            .take(options.latency_runs)
            .collect();
        let figures =
            eval::interleaved_latency(runtime, &all, data, &timed_on, options.latency_runs)?;
        (base_measured.latency_ms_p50, base_measured.latency_ms_p99) = figures[0];
        for (&i, &(p50, p99)) in timed.iter().zip(&figures[1..]) {
            if let Some(m) = candidates[i].measured.as_mut() {
                (m.latency_ms_p50, m.latency_ms_p99) = (p50, p99);
            }
        }
        progress(Event::Done {
            message: format!("base p50 {:.3} ms", base_measured.latency_ms_p50),
        });
    }
    for c in &mut candidates {
        c.speed_vs_fp32 = c.measured.as_ref().and_then(|m| {
            (m.latency_ms_p50 > 0.0).then(|| base_measured.latency_ms_p50 / m.latency_ms_p50)
        });
    }

    // What the base and each passing candidate hold in memory once loaded, then the device
    // class's budgets: a candidate over one is refused, and the report says by which.
    if let Some(probe) = options.memory_probe.as_deref()
        && !timed.is_empty()
    {
        progress(Event::Step {
            message: format!(
                "measuring the memory of the base and {} passing candidate(s)",
                timed.len()
            ),
        });
        let shape = &data.sample_shape;
        // With a memory budget an unmeasured candidate cannot be admitted, so a probe that
        // fails ends the run; without one it only leaves memory unmeasured, and says so.
        let measure = |model: &Model| match eval::resident_mib(probe, runtime, model, shape) {
            Ok(mib) => Ok(Some(mib)),
            Err(e) if options.budgets.memory_mib.is_some() => Err(e),
            Err(e) => {
                progress(Event::Step {
                    message: format!("memory not measured: {e}"),
                });
                Ok(None)
            }
        };
        base_measured.memory_mib = measure(base)?;
        for &i in &timed {
            let proto = models[i].clone().expect("filtered on Some");
            let model = Model {
                path: Path::new(recipes[i].technique()).to_path_buf(),
                bytes: encode(&proto),
                proto,
            };
            let mib = measure(&model)?;
            if let Some(m) = candidates[i].measured.as_mut() {
                m.memory_mib = mib;
            }
        }
    }
    let latency_checked = options.latency_note.is_none();
    for c in candidates
        .iter_mut()
        .filter(|c| c.status == CandidateStatus::Passed)
    {
        let Some(m) = &c.measured else { continue };
        let over = budget::exceeded(&options.budgets, m, latency_checked);
        if over.is_empty() {
            continue;
        }
        for applied in &mut report.budgets {
            if over.iter().any(|(b, _)| *b == applied.budget) {
                applied.refused.push(c.technique.clone());
            }
        }
        c.status = CandidateStatus::OverBudget;
        c.reason = Some(
            over.iter()
                .map(|(_, why)| why.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
        c.over_budget = over.into_iter().map(|(b, _)| b).collect();
    }

    let passing: Vec<(usize, &Measured)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.status == CandidateStatus::Passed)
        .filter_map(|(i, c)| c.measured.as_ref().map(|m| (i, m)))
        .collect();
    let choice = choose(&passing, &base_measured, options.objective, latency_checked);
    let (winner, winner_model) = match choice {
        Some((i, reason)) => {
            let c = &candidates[i];
            (
                Some(Winner {
                    technique: c.technique.clone(),
                    precision: c.precision.clone(),
                    measured: c.measured.clone().expect("passing candidates are measured"),
                    parameters: c.parameters.clone(),
                    layers_kept_float: c.layers_kept_float.clone(),
                    reason: format!(
                        "{reason}; top-1 {:.2}% >= required {:.2}%",
                        c.measured.as_ref().map_or(0.0, |m| m.accuracy) * 100.0,
                        required * 100.0
                    ),
                }),
                models[i].clone(),
            )
        }
        None => (None, None),
    };
    report.base = base_measured;
    report.verdict = if winner.is_some() {
        Verdict::Passed
    } else if candidates
        .iter()
        .any(|c| c.status == CandidateStatus::OverBudget)
    {
        Verdict::BudgetNotMet
    } else {
        Verdict::AccuracyFloorNotMet
    };
    report.winner = winner;
    report.candidates = candidates;
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(Outcome {
        report,
        winner: winner_model,
        passed: models,
    })
}

/// Loss budgets tried in turn by the width search, as multiples of the allowed drop. The sum of
/// single-layer losses is only a prediction, and a pessimistic one: each layer's measured loss
/// carries the subset's noise, and losses are never taken below zero, so ten layers' noise adds
/// up to phantom points. The search therefore starts above the allowed drop and tightens after
/// each miss (each allocation is gated on the full evaluation set); after the last, every layer
/// is at 8 bits.
const BUDGETS: [f64; 12] = [3.0, 2.5, 2.0, 1.7, 1.4, 1.2, 1.0, 0.7, 0.5, 0.3, 0.1, 0.0];

/// The width search of low-bit weights: each layer's loss at each width below 8 (the others at
/// 8 bits) on the search subset and its code bytes at every width, then one allocation per
/// budget in [`BUDGETS`], as keep-lists (a layer once per step up from `bits`). Returns the
/// sensitivity (as `layer@bits`, accuracy) and the keep-lists to try.
#[allow(clippy::too_many_arguments)]
fn width_plan(
    bits: u32,
    layers: &[String],
    build: &dyn Fn(&[String]) -> Result<Model, String>,
    runtime: &dyn Runtime,
    data: &Dataset,
    search_plan: &Plan,
    (subset_base, allowed_drop): (f64, f64),
    until: Option<Instant>,
    progress: &dyn Fn(Event),
) -> (Vec<(String, f64)>, Vec<Vec<String>>) {
    use crate::recipe::width;
    use crate::widths::{Choice, allocate, predicted};
    let recipe = Recipe::LowBitWeights { bits };
    let top = recipe.steps_back();
    let keep_for = |steps: &[usize]| -> Vec<String> {
        layers
            .iter()
            .zip(steps)
            .flat_map(|(l, &n)| std::iter::repeat_n(l.clone(), n))
            .collect()
    };
    progress(Event::Step {
        message: format!(
            "  {} missed; measuring {} layers at {} widths",
            recipe.technique(),
            layers.len(),
            top
        ),
    });
    // Code bytes of every layer at every width: one build per width.
    let bytes: Vec<Vec<f64>> = (0..=top)
        .map(|s| {
            let proto = build(&keep_for(&vec![s; layers.len()]))
                .ok()
                .map(|m| m.proto);
            layers
                .iter()
                .map(|l| {
                    proto
                        .as_ref()
                        .and_then(|p| p.graph.as_ref())
                        .and_then(|g| crate::passes::int8_weights::code_bytes(g, l))
                        .unwrap_or(0.0)
                })
                .collect()
        })
        .collect();
    let mut sensitivity = Vec::new();
    let mut choices: Vec<Vec<Choice>> = Vec::with_capacity(layers.len());
    for (l, layer) in layers.iter().enumerate() {
        let mut options = Vec::with_capacity(top + 1);
        for (s, at_width) in bytes.iter().enumerate() {
            let drop = if s == top {
                0.0
            } else if until.is_some_and(|d| Instant::now() > d) {
                f64::INFINITY // not measured: never chosen
            } else {
                let mut steps = vec![top; layers.len()];
                steps[l] = s;
                let acc = build(&keep_for(&steps))
                    .ok()
                    .and_then(|m| eval::evaluate(runtime, &m, data, search_plan).ok())
                    .map_or(0.0, |e| e.accuracy);
                sensitivity.push((format!("{layer}@{}", width(bits, s)), acc));
                subset_base - acc
            };
            options.push(Choice {
                bits: width(bits, s),
                bytes: at_width[l],
                drop,
            });
        }
        choices.push(options);
    }
    let mut plan: Vec<Vec<String>> = Vec::new();
    for fraction in BUDGETS {
        let at = allocate(&choices, fraction * allowed_drop.max(0.0));
        let keep = keep_for(&at);
        let (drop, code_bytes) = predicted(&choices, &at);
        if !keep.is_empty() && !plan.contains(&keep) {
            progress(Event::Step {
                message: format!(
                    "  allocation for {:.0}% of the allowed drop: predicted -{:.2} points, {:.0} bytes of codes",
                    fraction * 100.0,
                    drop * 100.0,
                    code_bytes
                ),
            });
            plan.push(keep);
        }
    }
    let all_eight = keep_for(&vec![top; layers.len()]);
    if !plan.contains(&all_eight) {
        plan.push(all_eight);
    }
    (sensitivity, plan)
}

/// `layer:bits` pairs, for progress lines.
fn widths_label(bits: &BTreeMap<String, u32>) -> String {
    bits.iter()
        .map(|(l, b)| format!("{l}:{b}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The order in which candidates that missed are searched: the one closest to the requirement
/// (highest accuracy on the search subset as built) first, then by plan order.
pub fn search_order(misses: &[(usize, f64)]) -> Vec<(usize, f64)> {
    let mut sorted = misses.to_vec();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted
}

/// One line on how a candidate ended, for progress output.
fn summary(recipe: &Recipe, candidate: &Candidate) -> String {
    format!(
        "{}: {}{}",
        recipe.technique(),
        candidate.status.as_str(),
        match (&candidate.measured, &candidate.reason) {
            (Some(m), _) => format!(
                ", top-1 {:.2}%, {} bytes zstd, p50 {:.3} ms, {} layer(s) kept float",
                m.accuracy * 100.0,
                m.bytes_zstd,
                m.latency_ms_p50,
                candidate.layers_kept_float.len()
            ),
            (None, Some(r)) => format!(" ({r})"),
            _ => String::new(),
        }
    )
}

fn params(recipe: &Recipe) -> String {
    let p = recipe.parameters();
    if p.is_empty() {
        return String::new();
    }
    serde_json::to_string(&p).unwrap_or_default()
}

fn evaluate(
    runtime: &dyn Runtime,
    model: &Model,
    data: &Dataset,
    plan: &Plan,
) -> Result<Evaluation, OptimizeError> {
    eval::evaluate(runtime, model, data, plan).map_err(|e| match e {
        EvalError::Load { reason, .. } => unsupported(model, runtime, reason),
        other => OptimizeError::Eval(other),
    })
}

/// A base model the runtime cannot load: name the first node with an operator outside the
/// standard ONNX domain, or else pass the runtime's reason on.
fn unsupported(model: &Model, runtime: &dyn Runtime, reason: String) -> OptimizeError {
    let graph = model.graph();
    let suspect = graph
        .node
        .iter()
        .find(|n| !n.domain.is_empty() && n.domain != "ai.onnx")
        .or_else(|| graph.node.iter().find(|n| reason.contains(&n.op_type)))
        .or_else(|| {
            graph
                .node
                .iter()
                .find(|n| !n.name.is_empty() && reason.contains(&n.name))
        });
    match suspect {
        Some(n) => OptimizeError::Unsupported(Box::new(Unsupported {
            model: model.path.display().to_string(),
            node: n.name.clone(),
            op: n.op_type.clone(),
            domain: if n.domain.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", n.domain)
            },
            runtime: runtime.name(),
            reason,
        })),
        None => OptimizeError::Eval(EvalError::Load {
            runtime: runtime.name(),
            model: model.path.display().to_string(),
            reason,
        }),
    }
}

/// What gating one recipe gave: its model when it passed, and its accuracy on the search subset
/// as built (before any layer went back), which orders the searches.
struct Gated {
    model: Option<crate::model::pb::ModelProto>,
    subset_accuracy: Option<f64>,
}

impl Gated {
    fn missed(subset_accuracy: Option<f64>) -> Self {
        Gated {
            model: None,
            subset_accuracy,
        }
    }
}

/// The second pass for a recipe that missed as built: search until `until`, starting from its
/// first-pass accuracy on the search subset (it is not built and measured as built again).
#[derive(Clone, Copy)]
struct Searching {
    until: Instant,
    as_built: f64,
}

/// Builds and gates one recipe. Without `searching`, the recipe is gated once, as built; with
/// it, the accuracy-aware search runs from that first-pass result until its deadline.
#[allow(clippy::too_many_arguments)]
fn gate(
    recipe: &Recipe,
    base: &Model,
    data: &Dataset,
    runtime: &dyn Runtime,
    calibration: &Calibration,
    (required, subset_required, allowed_drop): (f64, f64, f64),
    (search_plan, full_plan): (&Plan, &Plan),
    searching: Option<Searching>,
    candidate: &mut Candidate,
    progress: &dyn Fn(Event),
) -> Gated {
    let search_until = searching.map(|s| s.until);
    let path = Path::new(recipe.technique()).to_path_buf();
    let build = |keep: &[String]| -> Result<Model, String> {
        let proto = recipe
            .build(&base.proto, keep, calibration)
            .map_err(|e| e.to_string())?;
        Ok(Model {
            path: path.clone(),
            bytes: encode(&proto),
            proto,
        })
    };
    let reject = |candidate: &mut Candidate, reason: String| {
        candidate.status = CandidateStatus::Rejected;
        candidate.reason = Some(reason);
    };
    // A step that reaches the requirement on the search subset is confirmed on the full set;
    // if the full set disagrees, the search goes on.
    let mut keep: Vec<String> = Vec::new();
    let mut search: Option<Search> = None;
    let mut plan: Vec<Vec<String>> = Vec::new();
    let mut step = 0;
    let mut first_quick: Option<f64> = None;
    let layer_names: Vec<String> = base
        .graph()
        .node
        .iter()
        .filter(|n| crate::passes::weights::is_layer(&n.op_type))
        .map(|n| n.name.clone())
        .collect();
    loop {
        // The search pass's first step (as built) was measured in the first pass; `candidate`
        // already says how it missed.
        let known = keep.is_empty().then_some(searching).flatten();
        let current = match known {
            Some(_) => None,
            None => match build(&keep) {
                Ok(m) => Some(m),
                Err(e) => {
                    reject(candidate, format!("could not be built: {e}"));
                    return Gated::missed(first_quick);
                }
            },
        };
        // A width allocation is a whole new model, not one more layer back: the search subset's
        // noise would decide too much, so it goes straight to the full set.
        let full_only = matches!(recipe, Recipe::LowBitWeights { .. }) && !keep.is_empty();
        let quick = match (&current, known) {
            (_, Some(s)) => Some(s.as_built),
            (Some(m), None) if !search_plan.indices.is_empty() && !full_only => {
                match eval::evaluate(runtime, m, data, search_plan) {
                    Ok(e) => Some(e.accuracy),
                    Err(e) => {
                        reject(candidate, e.to_string());
                        return Gated::missed(first_quick);
                    }
                }
            }
            _ => None,
        };
        if keep.is_empty() {
            first_quick = quick;
        }
        if let Some(s) = search.as_mut()
            && let Some(q) = quick
        {
            s.steps.push((keep.len(), q));
        }
        match current {
            // Gated as built in the first pass: nothing to measure again; straight to the search.
            None => {}
            Some(current) if quick.is_none_or(|q| q >= subset_required) => {
                let full = match eval::evaluate(runtime, &current, data, full_plan) {
                    Ok(e) => e,
                    Err(e) => {
                        reject(candidate, e.to_string());
                        return Gated::missed(first_quick);
                    }
                };
                if full_only && let Some(s) = search.as_mut() {
                    s.steps.push((keep.len(), full.accuracy));
                }
                let measured = Measured::of(&current.bytes, &full);
                candidate.measured = Some(measured);
                candidate.layers_kept_float = keep.clone();
                candidate.layer_bits = recipe.layer_bits(&layer_names, &keep);
                candidate.search = search.clone();
                if full.accuracy >= required {
                    candidate.status = CandidateStatus::Passed;
                    candidate.reason = (!keep.is_empty()).then(|| {
                        format!(
                            "passed with {} layer(s) back in higher precision",
                            keep.len()
                        )
                    });
                    return Gated {
                        model: Some(current.proto),
                        subset_accuracy: first_quick,
                    };
                }
                candidate.status = CandidateStatus::Failed;
                candidate.reason = Some(format!(
                    "top-1 {:.2}% < required {:.2}%",
                    full.accuracy * 100.0,
                    required * 100.0
                ));
            }
            Some(_) => {
                // Figures of an earlier, fully measured step describe another keep-list.
                candidate.measured = None;
                candidate.status = CandidateStatus::Failed;
                candidate.reason = Some(format!(
                    "top-1 {:.2}% on the search subset, under the required {:.2}% ({:.2}% on that subset)",
                    quick.unwrap_or(0.0) * 100.0,
                    required * 100.0,
                    subset_required * 100.0
                ));
                candidate.layers_kept_float = keep.clone();
                candidate.layer_bits = recipe.layer_bits(&layer_names, &keep);
                candidate.search = search.clone();
            }
        }
        // Missed: search, if this recipe can keep layers in higher precision.
        if !recipe.searchable() || search_plan.indices.is_empty() || search_until.is_none() {
            return Gated::missed(first_quick);
        }
        if search_until.is_some_and(|d| Instant::now() > d) {
            candidate.reason = Some(format!(
                "{}; time budget spent during the search",
                candidate.reason.clone().unwrap_or_default()
            ));
            return Gated::missed(first_quick);
        }
        if search.is_none() {
            let (sensitivity, steps) = match recipe {
                Recipe::LowBitWeights { bits } => width_plan(
                    *bits,
                    &layer_names,
                    &build,
                    runtime,
                    data,
                    search_plan,
                    (subset_required + allowed_drop, allowed_drop),
                    search_until,
                    progress,
                ),
                _ => {
                    progress(Event::Step {
                        message: format!(
                            "  {} missed; measuring the sensitivity of {} layers",
                            recipe.technique(),
                            layer_names.len()
                        ),
                    });
                    let mut sensitivity = Vec::new();
                    for layer in &layer_names {
                        if search_until.is_some_and(|d| Instant::now() > d) {
                            break;
                        }
                        let acc = build(std::slice::from_ref(layer))
                            .ok()
                            .and_then(|m| eval::evaluate(runtime, &m, data, search_plan).ok())
                            .map_or(0.0, |e| e.accuracy);
                        sensitivity.push((layer.clone(), acc));
                    }
                    sensitivity.sort_by(|a, b| b.1.total_cmp(&a.1));
                    // The most sensitive layer back first, then the next with it, and so on.
                    let steps = (1..=sensitivity.len())
                        .map(|n| sensitivity[..n].iter().map(|(l, _)| l.clone()).collect())
                        .collect();
                    (sensitivity, steps)
                }
            };
            plan = steps;
            search = Some(Search {
                sensitivity,
                steps: quick.map(|q| vec![(0, q)]).unwrap_or_default(),
            });
        }
        let Some(next) = plan.get(step).cloned() else {
            return Gated::missed(first_quick); // every layer is back in higher precision and it still misses
        };
        step += 1;
        keep = next;
        progress(Event::Step {
            message: match recipe {
                Recipe::LowBitWeights { .. } => format!(
                    "  {}: trying widths {}",
                    recipe.technique(),
                    widths_label(&recipe.layer_bits(&layer_names, &keep))
                ),
                _ => format!(
                    "  {}: keeping {} layer(s) in higher precision: {}",
                    recipe.technique(),
                    keep.len(),
                    keep.join(", ")
                ),
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subset_is_spread_over_the_samples_in_order() {
        let all: Vec<usize> = (0..10).map(|i| i * 3).collect();
        assert_eq!(spread(&all, 5), [0, 6, 12, 18, 24]);
        assert_eq!(spread(&all, 3), [0, 9, 18]);
        assert_eq!(spread(&all, 100), all);
        assert_eq!(spread(&all, 0), Vec::<usize>::new());
    }

    fn m(accuracy: f64, zstd: usize, p50: f64) -> Measured {
        Measured {
            accuracy,
            bytes: zstd,
            bytes_zstd: zstd,
            latency_ms_p50: p50,
            latency_ms_p99: p50,
            memory_mib: None,
        }
    }

    #[test]
    fn requirement_is_the_stricter_of_floor_and_max_drop() {
        assert_eq!(required_accuracy(Some(0.8), None, 0.9), Some(0.8));
        assert_eq!(required_accuracy(None, Some(0.01), 0.9), Some(0.9 - 0.01));
        assert_eq!(required_accuracy(Some(0.895), Some(0.01), 0.9), Some(0.895));
        assert_eq!(required_accuracy(None, None, 0.9), None);
    }

    #[test]
    fn objectives_pick_different_winners() {
        let base = m(0.9, 1000, 1.0);
        let small = m(0.88, 100, 1.0);
        let fast = m(0.89, 300, 0.4);
        let both = [(0, &small), (1, &fast)];
        assert_eq!(
            choose(&both, &base, Objective::Smallest, true).unwrap().0,
            0
        );
        assert_eq!(choose(&both, &base, Objective::Fastest, true).unwrap().0, 1);
        // balanced: sqrt(0.1 * 1.0) = 0.316 vs sqrt(0.3 * 0.4) = 0.346
        let (i, why) = choose(&both, &base, Objective::Balanced, true).unwrap();
        assert_eq!(i, 0);
        assert!(why.contains("0.100x"), "{why}");
        assert!(choose(&[], &base, Objective::Balanced, true).is_none());
        // A GPU class gated on this CPU: its latency says nothing, size decides.
        let (i, why) = choose(&both, &base, Objective::Fastest, false).unwrap();
        assert_eq!(i, 0);
        assert!(why.contains("ranked by size"), "{why}");
    }

    #[test]
    fn fastest_and_balanced_never_pick_a_candidate_slower_than_fp32() {
        let base = m(0.9, 1000, 1.0);
        // Much smaller but 3.3x slower (a weight-only candidate run in its compressed form).
        let small_slow = m(0.89, 100, 3.3);
        let big_fast = m(0.89, 900, 0.98);
        let noisy = m(0.89, 300, 1.04); // within the noise of two measurements
        let all = [(0, &small_slow), (1, &big_fast), (2, &noisy)];
        let (i, why) = choose(&all, &base, Objective::Balanced, true).unwrap();
        assert_eq!(i, 2, "{why}");
        assert!(why.contains("1 slower than fp32 not considered"), "{why}");
        assert_eq!(choose(&all, &base, Objective::Fastest, true).unwrap().0, 1);
        // `smallest` may trade speed, and says what it costs.
        let (i, why) = choose(&all, &base, Objective::Smallest, true).unwrap();
        assert_eq!(i, 0);
        assert!(why.contains("0.30x the speed of fp32"), "{why}");
        // Only slow candidates: the fastest of them, and the reason says so.
        let (i, why) = choose(&[(0, &small_slow)], &base, Objective::Fastest, true).unwrap();
        assert_eq!(i, 0);
        assert!(why.contains("every passing candidate ran slower"), "{why}");
    }

    #[test]
    fn a_requirement_above_the_base_stops_at_once() {
        let why = unreachable_requirement(0.999, 0.91).unwrap();
        assert!(why.contains("99.90%") && why.contains("91.00%"), "{why}");
        assert!(
            unreachable_requirement(0.914, 0.91).is_none(),
            "within the margin"
        );
        assert!(unreachable_requirement(0.90, 0.91).is_none());
    }

    #[test]
    fn the_candidate_closest_to_the_requirement_is_searched_first() {
        let order = search_order(&[(1, 0.80), (3, 0.88), (4, 0.80), (6, 0.10)]);
        let indices: Vec<usize> = order.iter().map(|(n, _)| *n).collect();
        assert_eq!(indices, vec![3, 1, 4, 6]);
        assert!(search_order(&[]).is_empty());
    }

    #[test]
    fn ties_go_to_the_more_accurate_candidate() {
        let base = m(0.9, 1000, 1.0);
        let a = m(0.88, 100, 1.0);
        let b = m(0.89, 100, 1.0);
        assert_eq!(
            choose(&[(0, &a), (1, &b)], &base, Objective::Smallest, true)
                .unwrap()
                .0,
            1
        );
    }
}
