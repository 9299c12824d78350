//! Evaluation of a model on a dataset with a real runtime: top-1 accuracy (or agreement with a
//! reference's predictions), finiteness of every output, and single-sample latency.

use crate::dataset::Dataset;
use crate::model::Model;
use std::path::Path;
use std::time::Instant;

pub use edgefleet_runtime::{
    Runtime, Session, argmax, dequantize_output, ort, quantize_input, tract,
};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{runtime} cannot load {model}: {reason}")]
    Load {
        runtime: &'static str,
        model: String,
        reason: String,
    },
    #[error("{runtime} failed running {model}: {reason}")]
    Run {
        runtime: &'static str,
        model: String,
        reason: String,
    },
    #[error("{model} does not fit dataset {dataset}: {reason}")]
    Mismatch {
        model: String,
        dataset: String,
        reason: String,
    },
    #[error("{model} produced non-finite outputs (NaN or infinity) on sample {sample}")]
    NonFinite { model: String, sample: usize },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    pub runtime: &'static str,
    pub samples: usize,
    /// Top-1 against the labels, or agreement with the reference predictions.
    pub accuracy: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    #[serde(skip)]
    pub predictions: Vec<usize>,
}

/// What to evaluate on and how long to time.
pub struct Plan<'a> {
    pub indices: &'a [usize],
    pub batch: usize,
    /// Single-sample runs to time (taken from the first indices).
    pub latency_runs: usize,
    /// Predictions of the base model, used instead of labels when the dataset has none.
    pub reference: Option<&'a [usize]>,
}

pub fn evaluate(
    runtime: &dyn Runtime,
    model: &Model,
    data: &Dataset,
    plan: &Plan,
) -> Result<Evaluation, EvalError> {
    let name = model.path.display().to_string();
    check_fit(model, data)?;
    let load = |batch| {
        runtime
            .load(&model.info(), &data.sample_shape, batch)
            .map_err(|reason| EvalError::Load {
                runtime: runtime.name(),
                model: name.clone(),
                reason,
            })
    };
    let mut session = load(plan.batch)?;
    let mut predictions = Vec::with_capacity(plan.indices.len());
    let mut classes = None;
    for chunk in plan.indices.chunks(plan.batch) {
        // Pad the last batch by repeating its final sample; padded outputs are dropped.
        let mut idx = chunk.to_vec();
        idx.resize(plan.batch, *chunk.last().expect("chunks are non-empty"));
        let (_, input) = data.batch(&idx);
        let out = session
            .run(plan.batch, &input)
            .map_err(|reason| EvalError::Run {
                runtime: runtime.name(),
                model: name.clone(),
                reason,
            })?;
        let width = out.len() / plan.batch;
        classes.get_or_insert(width);
        for (row, &sample) in out.chunks(width).zip(chunk) {
            if row.iter().any(|v| !v.is_finite()) {
                return Err(EvalError::NonFinite {
                    model: name.clone(),
                    sample,
                });
            }
            predictions.push(argmax(row));
        }
    }
    let width = classes.unwrap_or(0);
    let accuracy = match (&data.labels, plan.reference) {
        (_, Some(reference)) => agreement(&predictions, reference),
        (Some(labels), None) => {
            if let Some(&max) = labels.iter().max()
                && max as usize >= width
            {
                return Err(EvalError::Mismatch {
                    model: name,
                    dataset: data.path.display().to_string(),
                    reason: format!("labels go up to {max} but the model outputs {width} classes"),
                });
            }
            let hits = plan
                .indices
                .iter()
                .zip(&predictions)
                .filter(|&(&i, &p)| labels[i] as usize == p)
                .count();
            hits as f64 / predictions.len().max(1) as f64
        }
        (None, None) => {
            return Err(EvalError::Mismatch {
                model: name,
                dataset: data.path.display().to_string(),
                reason: "the dataset has no labels and no reference predictions were given".into(),
            });
        }
    };

    let mut single = load(1)?;
    let mut times = Vec::with_capacity(plan.latency_runs);
    let warmup = if plan.latency_runs > 0 {
        warmup_runs(plan.latency_runs)
    } else {
        0
    };
    for &i in plan.indices.iter().cycle().take(warmup) {
        single
            .run(1, data.sample(i))
            .map_err(|reason| EvalError::Run {
                runtime: runtime.name(),
                model: name.clone(),
                reason,
            })?;
    }
    for &i in plan.indices.iter().cycle().take(plan.latency_runs) {
        let input = data.sample(i);
        let start = Instant::now();
        single.run(1, input).map_err(|reason| EvalError::Run {
            runtime: runtime.name(),
            model: name.clone(),
            reason,
        })?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Evaluation {
        runtime: runtime.name(),
        samples: predictions.len(),
        accuracy,
        latency_ms_p50: percentile(&mut times, 0.50),
        latency_ms_p99: percentile(&mut times, 0.99),
        predictions,
    })
}

/// Untimed runs before the timed ones: the first runs of a fresh session pay for allocation,
/// page faults and caches, which is what made an identical copy of the base read 30% faster
/// than the base measured first.
pub fn warmup_runs(timed: usize) -> usize {
    (timed / 10).clamp(3, 50)
}

/// Single-sample latency of several models measured the same way, so that their figures can be
/// compared: every session is loaded and warmed up first, then the timed runs alternate between
/// the models one run at a time, so that whatever the machine does meanwhile (frequency, other
/// load) falls on all of them alike. Returns `(p50, p99)` in milliseconds per model.
pub fn interleaved_latency(
    runtime: &dyn Runtime,
    models: &[&Model],
    data: &Dataset,
    indices: &[usize],
    runs: usize,
) -> Result<Vec<(f64, f64)>, EvalError> {
    let failed = |model: &Model| {
        let name = model.path.display().to_string();
        move |reason| EvalError::Run {
            runtime: runtime.name(),
            model: name,
            reason,
        }
    };
    let mut sessions = Vec::with_capacity(models.len());
    for model in models {
        check_fit(model, data)?;
        let session = runtime
            .load(&model.info(), &data.sample_shape, 1)
            .map_err(|reason| EvalError::Load {
                runtime: runtime.name(),
                model: model.path.display().to_string(),
                reason,
            })?;
        sessions.push(session);
    }
    for (session, model) in sessions.iter_mut().zip(models) {
        for &i in indices.iter().cycle().take(warmup_runs(runs)) {
            session.run(1, data.sample(i)).map_err(failed(model))?;
        }
    }
    let mut times = vec![Vec::with_capacity(runs); models.len()];
    for &i in indices.iter().cycle().take(runs) {
        let input = data.sample(i);
        for ((session, model), times) in sessions.iter_mut().zip(models).zip(&mut times) {
            let start = Instant::now();
            session.run(1, input).map_err(failed(model))?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(times
        .iter_mut()
        .map(|t| (percentile(t, 0.50), percentile(t, 0.99)))
        .collect())
}

/// The memory a loaded session of `model` holds after one inference, in MiB: what serving it
/// keeps resident. Measured in a fresh process (`probe`, the optimizer binary's hidden `memory`
/// subcommand) as the growth of its anonymous resident memory (`RssAnon`: heap and arenas, not
/// the runtime's library code) from before loading to after one run on zeros, so that what
/// this process has allocated and freed before does not hide it.
pub fn resident_mib(
    probe: &Path,
    runtime: &dyn Runtime,
    model: &Model,
    sample_shape: &[usize],
) -> Result<f64, EvalError> {
    let name = model.path.display().to_string();
    let failed = |reason: String| EvalError::Run {
        runtime: runtime.name(),
        model: name.clone(),
        reason: format!("measuring its memory: {reason}"),
    };
    let dir = tempfile::tempdir().map_err(|e| failed(e.to_string()))?;
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &model.bytes).map_err(|e| failed(e.to_string()))?;
    let shape = sample_shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut child = std::process::Command::new(probe)
        .args([
            "memory",
            "--runtime",
            runtime.name(),
            "--shape",
            &shape,
            "--model",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("{}: {e}", probe.display())))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while child
        .try_wait()
        .map_err(|e| failed(e.to_string()))?
        .is_none()
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!("no answer within {PROBE_TIMEOUT:?}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let figures: MemoryFigures = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| failed(format!("unreadable answer {:?}", text.trim())))?;
    Ok(figures
        .rss_anon_kib_after
        .saturating_sub(figures.rss_anon_kib_before) as f64
        / 1024.0)
}

/// How long one memory probe may take (loading the largest models takes seconds).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What the `memory` subcommand prints, one JSON line.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemoryFigures {
    pub rss_anon_kib_before: u64,
    pub rss_anon_kib_after: u64,
}

/// `RssAnon` of a `/proc/<pid>/status` text, in KiB.
pub fn rss_anon_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// The `memory` subcommand: load `model` into a session of `runtime`, run it once on zeros,
/// and say how much anonymous memory that added to this process.
pub fn probe_memory(
    runtime: &dyn Runtime,
    model: &Model,
    sample_shape: &[usize],
) -> Result<MemoryFigures, String> {
    let read = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(rss_anon_kib)
            .ok_or("no RssAnon in /proc/self/status")
    };
    let info = model.info();
    let len = sample_shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or("sample shape overflows")?;
    let input = vec![0f32; len];
    let before = read()?;
    let mut session = runtime.load(&info, sample_shape, 1)?;
    session.run(1, &input)?;
    let after = read()?;
    drop(session);
    Ok(MemoryFigures {
        rss_anon_kib_before: before,
        rss_anon_kib_after: after,
    })
}

/// The model's input must take the dataset's samples.
fn check_fit(model: &Model, data: &Dataset) -> Result<(), EvalError> {
    let inputs = model.inputs();
    let mismatch = |reason: String| EvalError::Mismatch {
        model: model.path.display().to_string(),
        dataset: data.path.display().to_string(),
        reason,
    };
    let [input] = inputs.as_slice() else {
        return Err(mismatch(format!(
            "the model has {} inputs; image classifiers here take one",
            inputs.len()
        )));
    };
    let dims = Model::dims(input);
    if dims.len() != data.sample_shape.len() + 1 {
        return Err(mismatch(format!(
            "input {:?} has rank {} but samples have shape {:?}",
            input.name,
            dims.len(),
            data.sample_shape
        )));
    }
    for (axis, (want, have)) in dims[1..].iter().zip(&data.sample_shape).enumerate() {
        if let Some(want) = want
            && want != have
        {
            return Err(mismatch(format!(
                "input {:?} expects {want} on axis {} but samples have shape {:?}",
                input.name,
                axis + 1,
                data.sample_shape
            )));
        }
    }
    Ok(())
}

pub fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// Nearest-rank percentile; sorts in place.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [3.0], 0.99), 3.0);
    }

    #[test]
    fn rss_anon_is_read_from_proc_status() {
        let status = "VmRSS:\t   10240 kB\nRssAnon:\t    4096 kB\nRssFile:\t    6144 kB\n";
        assert_eq!(rss_anon_kib(status), Some(4096));
        assert_eq!(rss_anon_kib("VmRSS: 1 kB\n"), None);
        assert!(rss_anon_kib(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap() > 0);
    }

    #[test]
    fn argmax_and_agreement() {
        assert_eq!(argmax(&[0.1, 2.0, -1.0, 1.9]), 1);
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 2, 0, 4]), 0.75);
    }
}
