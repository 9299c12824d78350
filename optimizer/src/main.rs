//! edgefleet-optimizer: turns a base ONNX model into the best artifact a device class can run,
//! behind an accuracy gate. This build evaluates models; the optimization passes and the search
//! are the next piece of work (see README "Status").

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use edgefleet_optimizer::dataset::{Dataset, split};
use edgefleet_optimizer::eval::{self, Plan, Runtime};
use edgefleet_optimizer::model::Model;
use std::path::PathBuf;

/// Optimizes ONNX vision models per device class behind an accuracy gate.
#[derive(Parser, Debug)]
#[command(name = "edgefleet-optimizer", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure a model's top-1 accuracy and latency on a dataset with a real runtime.
    Evaluate {
        #[arg(long)]
        model: PathBuf,
        /// `.npz` with `x` (float32, model layout) and `y` (int64 labels).
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long, value_enum, default_value = "tract")]
        runtime: RuntimeName,
        /// Intra-op threads (ONNX Runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Evaluate on at most this many samples (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// Single-sample runs timed for the latency figures.
        #[arg(long, default_value_t = 200)]
        latency_runs: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuntimeName {
    Tract,
    Onnxruntime,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Evaluate {
            model,
            dataset,
            runtime,
            threads,
            limit,
            batch,
            latency_runs,
            json,
        } => {
            let model = Model::load(&model)?;
            let data = Dataset::load(&dataset)?;
            let runtime: Box<dyn Runtime> = match runtime {
                RuntimeName::Tract => Box::new(eval::tract::Tract),
                RuntimeName::Onnxruntime => Box::new(eval::ort::OnnxRuntime {
                    threads,
                    library: None,
                }),
            };
            let all = split(data.len(), 0, 0).evaluation;
            let indices = &all[..limit.unwrap_or(all.len()).min(all.len())];
            let plan = Plan {
                indices,
                batch: batch.max(1),
                latency_runs,
                reference: None,
            };
            let result = eval::evaluate(runtime.as_ref(), &model, &data, &plan)
                .with_context(|| format!("evaluating {}", model.path.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "{}: top-1 {:.2}% on {} samples with {}; latency p50 {:.3} ms, p99 {:.3} ms (batch 1)",
                    model.path.display(),
                    result.accuracy * 100.0,
                    result.samples,
                    result.runtime,
                    result.latency_ms_p50,
                    result.latency_ms_p99
                );
            }
        }
    }
    Ok(())
}
