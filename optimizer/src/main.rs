//! edgefleet-optimizer: turns a base ONNX model into the best artifact a device class can run,
//! behind an accuracy gate. `optimize` writes `DIR/model.onnx` and `DIR/report.json`;
//! `evaluate` measures one model.

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
    /// Optimize a model for a device class behind the accuracy gate; writes DIR/model.onnx (the
    /// winner, only when one passes) and DIR/report.json. Exits 3 when no candidate passes.
    Optimize(Box<OptimizeArgs>),
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
        #[command(flatten)]
        pre: PreprocessingArgs,
        /// Leave out the samples `optimize --calibration-samples N` holds out for calibration,
        /// so figures compare with its report.
        #[arg(long, default_value_t = 0)]
        exclude_calibration: usize,
    },
    /// Publish an `optimize` output directory (model.onnx, report.json, selftest.json) as a
    /// model artifact; prints `REGISTRY/REPOSITORY@sha256:…`.
    Push {
        /// The `optimize --out` directory.
        #[arg(long)]
        from: PathBuf,
        /// `registry/repository[:tag]`.
        target: String,
        /// Model name recorded in the ModelPack config.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Publish a base model or a dataset as a single-file ModelPack artifact (what an
    /// EdgeModel's `source.oci` and `accuracy.dataset.source.oci` point at); prints
    /// `REGISTRY/REPOSITORY@sha256:…`.
    Upload {
        /// An ONNX model file.
        #[arg(long, conflicts_with = "dataset", required_unless_present = "dataset")]
        model: Option<PathBuf>,
        /// A dataset file (`.npz`, or a tar of an ImageFolder).
        #[arg(long)]
        dataset: Option<PathBuf>,
        /// `registry/repository[:tag]`.
        target: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Print what an artifact holds (manifest, config, edgefleet facts) without downloading
    /// its layers. Accepts a tag or a digest.
    Inspect {
        reference: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull an artifact by digest, verify every blob, and write model.onnx (and report.json,
    /// selftest.json when present) to DIR.
    Pull {
        /// `registry/repository@sha256:…`
        reference: String,
        #[arg(long)]
        out: PathBuf,
        /// Content-addressed blob cache (default: ~/.cache/edgefleet/artifacts).
        #[arg(long, env = "EDGEFLEET_CACHE_DIR")]
        cache: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Write the samples `optimize --calibration-samples N` calibrates on to an `.npz` (for
    /// other tools, such as ONNX Runtime's quantizer, to calibrate on the same data).
    CalibrationSet {
        #[arg(long)]
        dataset: PathBuf,
        #[arg(long, default_value_t = 200)]
        samples: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct OptimizeArgs {
    /// The base ONNX model: a file, `oci://registry/repo@sha256:…`, or an https:// URL with
    /// --model-sha256.
    #[arg(long)]
    model: String,
    #[arg(long)]
    model_sha256: Option<String>,
    /// `.npz` with `x` (float32, model layout) and optional `y` (int64 labels), or an
    /// ImageFolder directory (or tar of one); without labels the metric is top-1 agreement with
    /// the base model. A file, `oci://…@sha256:…`, or an https:// URL with --dataset-sha256.
    #[arg(long)]
    dataset: String,
    #[arg(long)]
    dataset_sha256: Option<String>,
    /// Cache for remote inputs (default: ~/.cache/edgefleet/artifacts).
    #[arg(long, env = "EDGEFLEET_CACHE_DIR")]
    cache: Option<PathBuf>,
    /// Also write a compact JSON result here (the verdict, and the artifact when pushed), e.g.
    /// /dev/termination-log in a Job.
    #[arg(long)]
    result_file: Option<PathBuf>,
    #[command(flatten)]
    pre: PreprocessingArgs,
    /// A built-in profile (cpu-int8, integer-npu, nvidia-fp16) or a DeviceClass YAML file.
    #[arg(long)]
    device_class: String,
    /// Minimum top-1 accuracy (0..1) the winner must reach.
    #[arg(long)]
    floor: Option<f64>,
    /// Largest allowed drop from the base model's accuracy (0..1).
    #[arg(long)]
    max_drop: Option<f64>,
    #[arg(long, value_enum, default_value = "balanced")]
    objective: ObjectiveName,
    /// Techniques to try (default: all the device class supports).
    #[arg(long, value_enum, value_delimiter = ',')]
    techniques: Vec<TechniqueName>,
    /// Samples held out for int8 calibration (never evaluated on).
    #[arg(long, default_value_t = 200)]
    calibration_samples: usize,
    /// Wall-clock budget, e.g. 30m, 90s, 1h. Candidates are first all gated as built; the
    /// search for the ones that missed runs in what is left.
    #[arg(long, default_value = "30m")]
    time_budget: String,
    /// Evaluation samples used to rank layers in the accuracy-aware search.
    #[arg(long, default_value_t = 1000)]
    search_samples: usize,
    /// Single-sample runs timed per candidate.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Intra-op threads (ONNX Runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long)]
    out: PathBuf,
    /// Also write every passing candidate to DIR/candidates/ (named in report.json).
    #[arg(long)]
    keep_candidates: bool,
    /// Evaluation samples shipped in the artifact for the device's self-test.
    #[arg(long, default_value_t = 8)]
    selftest_samples: usize,
    /// After a passing run, publish the winner to this `registry/repository[:tag]`.
    #[arg(long)]
    push: Option<String>,
    /// Model name recorded in the artifact.
    #[arg(long)]
    name: Option<String>,
    /// Digest identifying the inputs, as the operator computed it (default: computed here from
    /// the model, dataset, device class and settings).
    #[arg(long)]
    inputs_digest: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach registries.
#[derive(clap::Args, Debug, Default)]
struct RegistryArgs {
    /// Registries (host:port) that may be reached over plain HTTP; all others are HTTPS only.
    #[arg(long, env = "EDGEFLEET_PLAIN_HTTP", value_delimiter = ',')]
    plain_http: Vec<String>,
    /// Docker config.json (or a mounted kubernetes.io/dockerconfigjson Secret's
    /// .dockerconfigjson) with registry credentials. Default: $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json when present.
    #[arg(long, env = "EDGEFLEET_REGISTRY_CONFIG")]
    registry_config: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for registries.
    #[arg(long, env = "EDGEFLEET_REGISTRY_CA", value_delimiter = ',')]
    ca_file: Vec<PathBuf>,
}

impl RegistryArgs {
    fn registry(&self) -> anyhow::Result<edgefleet_artifact::Registry> {
        let config = self.registry_config.clone().or_else(|| {
            let dir = std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
            Some(dir.join("config.json")).filter(|p| p.is_file())
        });
        let credentials = match &config {
            Some(p) => edgefleet_artifact::DockerConfig::load(p)?,
            None => Default::default(),
        };
        Ok(edgefleet_artifact::Registry::new(
            edgefleet_artifact::RegistryOptions {
                plain_http: self.plain_http.clone(),
                ca_files: self.ca_file.clone(),
                credentials,
                ..Default::default()
            },
        )?)
    }
}

/// The artifact cache: `dir`, or ~/.cache/edgefleet/artifacts.
fn open_cache(dir: Option<PathBuf>) -> anyhow::Result<edgefleet_artifact::Cache> {
    let dir = dir.unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("edgefleet/artifacts")
    });
    Ok(edgefleet_artifact::Cache::open(dir)?)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// How an ImageFolder dataset's images become model inputs (ignored for `.npz`).
#[derive(clap::Args, Debug, Default)]
struct PreprocessingArgs {
    /// YAML with the EdgeModel's `accuracy.preprocessing` fields (colorMode, resize, centerCrop,
    /// mean, std, layout).
    #[arg(long, conflicts_with_all = ["color", "resize", "center_crop", "mean", "std", "layout"])]
    preprocessing: Option<PathBuf>,
    #[arg(long, value_enum)]
    color: Option<ColorName>,
    /// Resize the shorter side to this many pixels.
    #[arg(long)]
    resize: Option<u32>,
    /// Center crop to a square of this many pixels.
    #[arg(long)]
    center_crop: Option<u32>,
    /// Per-channel mean after scaling pixels to [0, 1], e.g. 0.485,0.456,0.406.
    #[arg(long, value_delimiter = ',')]
    mean: Vec<f64>,
    #[arg(long, value_delimiter = ',')]
    std: Vec<f64>,
    #[arg(long, value_enum)]
    layout: Option<LayoutName>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ColorName {
    Grayscale,
    Rgb,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayoutName {
    Nchw,
    Nhwc,
}

impl PreprocessingArgs {
    fn get(&self) -> anyhow::Result<Option<edgefleet_api::edgemodel::Preprocessing>> {
        use edgefleet_api::edgemodel::{ColorMode, Preprocessing, TensorLayout};
        if let Some(path) = &self.preprocessing {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let pre: Preprocessing = serde_yaml_ng::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            return Ok(Some(pre));
        }
        let any = self.color.is_some()
            || self.resize.is_some()
            || self.center_crop.is_some()
            || !self.mean.is_empty()
            || !self.std.is_empty()
            || self.layout.is_some();
        if !any {
            return Ok(None);
        }
        if self.mean.len() != self.std.len() {
            anyhow::bail!(
                "--mean has {} values but --std has {}: give one of each per channel",
                self.mean.len(),
                self.std.len()
            );
        }
        Ok(Some(Preprocessing {
            color_mode: match self.color {
                Some(ColorName::Grayscale) => ColorMode::Grayscale,
                Some(ColorName::Rgb) | None => ColorMode::Rgb,
            },
            resize: self.resize,
            center_crop: self.center_crop,
            mean: self.mean.clone(),
            std: self.std.clone(),
            layout: match self.layout {
                Some(LayoutName::Nhwc) => TensorLayout::Nhwc,
                Some(LayoutName::Nchw) | None => TensorLayout::Nchw,
            },
        }))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ObjectiveName {
    Smallest,
    Fastest,
    Balanced,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TechniqueName {
    Float16,
    Int8Dynamic,
    Int8Static,
    FullInteger,
    Pruning,
    Clustering,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuntimeName {
    Tract,
    Onnxruntime,
}

/// Exit status when no candidate reaches the accuracy requirement.
const EXIT_FLOOR_NOT_MET: u8 = 3;

fn main() -> anyhow::Result<std::process::ExitCode> {
    match Args::parse().command {
        Command::Optimize(args) => {
            let result_file = args.result_file.clone();
            return optimize(*args).inspect_err(|e| {
                if let Some(path) = &result_file {
                    let mut text = format!("{e:#}");
                    text.truncate(3000);
                    let _ = std::fs::write(
                        path,
                        serde_json::json!({"verdict": "Error", "error": text}).to_string(),
                    );
                }
            });
        }
        Command::Push {
            from,
            target,
            name,
            registry,
        } => {
            let out = edgefleet_optimizer::publish::read_output(&from, name)?;
            let pushed = push(&registry, &target, &out)?;
            println!("{}", pushed.reference);
        }
        Command::Upload {
            model,
            dataset,
            target,
            registry,
        } => {
            use edgefleet_artifact::media;
            let (path, layer_type) = match (&model, &dataset) {
                (Some(m), _) => (m, media::WEIGHT_RAW),
                (None, Some(d)) => (d, media::DATASET_RAW),
                (None, None) => unreachable!("clap requires one"),
            };
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if model.is_some() {
                Model::from_bytes(path, data.clone())?;
            }
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let config = serde_json::json!({
                "descriptor": {"name": name},
                "config": {"format": if model.is_some() { "onnx" } else { "dataset" }},
                "modelfs": {"type": "layers", "diff_ids": [edgefleet_artifact::Digest::of(&data).to_string()]},
            });
            let config = config.to_string();
            let file = edgefleet_artifact::manifest::FileArtifact {
                artifact_type: media::ARTIFACT_TYPE,
                config_type: media::MODEL_CONFIG,
                config: config.as_bytes(),
                layer_type,
                file_name: &name,
                data,
            };
            let pushed = block_on(registry.registry()?.push_file(&target, file))
                .with_context(|| format!("uploading {} to {target}", path.display()))?;
            println!("{}", pushed.reference);
        }
        Command::Inspect {
            reference,
            json,
            registry,
        } => {
            let registry = registry.registry()?;
            let (artifact, config) = block_on(registry.inspect(&reference))?;
            if json {
                let value = serde_json::json!({
                    "digest": artifact.digest.to_string(),
                    "manifest": artifact.manifest,
                    "config": config,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", describe(&reference, &artifact, &config));
            }
        }
        Command::Pull {
            reference,
            out,
            cache,
            registry,
        } => {
            let registry = registry.registry()?;
            let cache = open_cache(cache)?;
            let pulled = block_on(registry.pull(&reference, &cache))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            write_atomic(&out.join("model.onnx"), &pulled.model.read()?)?;
            if let Some(report) = &pulled.report {
                write_atomic(&out.join("report.json"), report)?;
            }
            if let Some(t) = &pulled.selftest {
                write_atomic(&out.join("selftest.json"), &t.to_json())?;
            }
            println!(
                "{reference}: verified; model {} ({} bytes) written to {} ({} bytes fetched, {} resumed, {} blobs from cache)",
                pulled.model.digest(),
                pulled.model.size(),
                out.display(),
                pulled.stats.fetched_bytes,
                pulled.stats.resumed_bytes,
                pulled.stats.cached_blobs
            );
        }
        Command::CalibrationSet {
            dataset,
            samples,
            out,
        } => {
            let data = Dataset::load(&dataset)?;
            let indices = split(data.len(), samples, 0).calibration;
            let (shape, x) = data.batch(&indices);
            let mut zip = zip::ZipWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?,
            );
            zip.start_file("x.npy", zip::write::SimpleFileOptions::default())?;
            std::io::Write::write_all(&mut zip, &edgefleet_optimizer::npy::encode_f32(&shape, &x))?;
            zip.finish()?;
            println!(
                "{} calibration samples written to {}",
                indices.len(),
                out.display()
            );
        }
        Command::Evaluate {
            model,
            dataset,
            runtime,
            threads,
            limit,
            batch,
            latency_runs,
            json,
            pre,
            exclude_calibration,
        } => {
            let model = Model::load(&model)?;
            let data = Dataset::open(&dataset, pre.get()?.as_ref())?;
            let runtime: Box<dyn Runtime> = match runtime {
                RuntimeName::Tract => Box::new(eval::tract::Tract),
                RuntimeName::Onnxruntime => Box::new(eval::ort::OnnxRuntime {
                    threads,
                    library: None,
                }),
            };
            let all = split(data.len(), exclude_calibration, 0).evaluation;
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
                let mut value = serde_json::to_value(&result)?;
                value["bytes"] = model.bytes.len().into();
                value["bytes_zstd"] = edgefleet_optimizer::size::zstd_bytes(&model.bytes).into();
                println!("{}", serde_json::to_string_pretty(&value)?);
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
    Ok(std::process::ExitCode::SUCCESS)
}

fn runtime(name: edgefleet_api::deviceclass::Runtime, threads: usize) -> Box<dyn Runtime> {
    match name {
        edgefleet_api::deviceclass::Runtime::Tract => Box::new(eval::tract::Tract),
        edgefleet_api::deviceclass::Runtime::Onnxruntime => Box::new(eval::ort::OnnxRuntime {
            threads,
            library: None,
        }),
    }
}

fn optimize(args: OptimizeArgs) -> anyhow::Result<std::process::ExitCode> {
    use edgefleet_api::edgemodel::{Objective, Technique};
    use edgefleet_optimizer::optimize::{Options, optimize};
    let profile = edgefleet_optimizer::profile::resolve(&args.device_class)?;
    for (flag, v) in [("--floor", args.floor), ("--max-drop", args.max_drop)] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            anyhow::bail!("{flag} {v}: must be a fraction between 0 and 1 (e.g. 0.88 for 88%)");
        }
    }
    let time_budget = edgefleet_api::duration::parse(&args.time_budget)
        .map_err(|e| anyhow::anyhow!("--time-budget {:?}: {e}", args.time_budget))?;
    use edgefleet_optimizer::source::{self, Kind};
    let registry = args.registry.registry()?;
    let cache = open_cache(args.cache.clone())?;
    let model_source = source::parse("--model", &args.model, args.model_sha256.as_deref())?;
    let data_source = source::parse("--dataset", &args.dataset, args.dataset_sha256.as_deref())?;
    let (model_path, dataset_path) = block_on(async {
        let ca = &args.registry.ca_file;
        let m = source::fetch(&model_source, Kind::Model, &registry, &cache, ca).await?;
        let d = source::fetch(&data_source, Kind::Dataset, &registry, &cache, ca).await?;
        anyhow::Ok((m, d))
    })?;
    let model = Model::load(&model_path)?;
    let data = Dataset::open(&dataset_path, args.pre.get()?.as_ref())?;
    let options = Options {
        floor: args.floor,
        max_drop: args.max_drop,
        objective: match args.objective {
            ObjectiveName::Smallest => Objective::Smallest,
            ObjectiveName::Fastest => Objective::Fastest,
            ObjectiveName::Balanced => Objective::Balanced,
        },
        techniques: args
            .techniques
            .iter()
            .map(|t| match t {
                TechniqueName::Float16 => Technique::Float16,
                TechniqueName::Int8Dynamic => Technique::Int8Dynamic,
                TechniqueName::Int8Static => Technique::Int8Static,
                TechniqueName::FullInteger => Technique::FullInteger,
                TechniqueName::Pruning => Technique::Pruning,
                TechniqueName::Clustering => Technique::Clustering,
            })
            .collect(),
        calibration_samples: args.calibration_samples,
        time_budget,
        search_samples: args.search_samples,
        latency_runs: args.latency_runs,
        latency_representative: profile.spec.execution_provider
            == edgefleet_api::deviceclass::ExecutionProvider::Cpu,
        ..Options::default()
    };
    let runtime = runtime(profile.runtime(), args.threads);
    let progress = Progress::new();
    let mut outcome = optimize(&model, &data, &profile, runtime.as_ref(), &options, &|e| {
        progress.event(e)
    })
    .with_context(|| format!("optimizing {}", args.model))?;
    progress.finish();

    // Outputs appear whole or not at all: written beside, then renamed. A stale winner from an
    // earlier run never survives a run that has none.
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let model_path = args.out.join("model.onnx");
    let report_path = args.out.join("report.json");
    match &outcome.winner {
        Some(proto) => write_atomic(&model_path, &edgefleet_optimizer::model::encode(proto))?,
        None => match std::fs::remove_file(&model_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", model_path.display())),
        },
    }
    if args.keep_candidates {
        let dir = args.out.join("candidates");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, proto) in outcome.passed.iter().enumerate() {
            let Some(proto) = proto else { continue };
            let c = &mut outcome.report.candidates[i];
            let path = dir.join(format!(
                "{:02}-{}.onnx",
                i + 1,
                c.technique.replace('+', "-")
            ));
            write_atomic(&path, &edgefleet_optimizer::model::encode(proto))?;
            c.file = Some(path.display().to_string());
        }
    }
    // What identifies this result: the operator reuses an artifact whose inputs match.
    let preprocessing = args
        .pre
        .get()?
        .map(|p| serde_json::to_value(&p))
        .transpose()?;
    let model_digest = edgefleet_artifact::Digest::of(&model.bytes);
    let dataset_digest = edgefleet_optimizer::publish::dataset_digest(&dataset_path)?;
    let inputs_digest = match &args.inputs_digest {
        Some(d) => d
            .parse::<edgefleet_artifact::Digest>()
            .map_err(|e| anyhow::anyhow!("--inputs-digest: {e}"))?,
        None => edgefleet_optimizer::publish::inputs_digest(
            &model_digest,
            &dataset_digest,
            &serde_json::to_value(&profile.spec)?,
            &serde_json::json!({
                "floor": args.floor,
                "maxDrop": args.max_drop,
                "objective": format!("{:?}", args.objective),
                "techniques": format!("{:?}", args.techniques),
                "calibrationSamples": args.calibration_samples,
                "timeBudget": args.time_budget,
                "searchSamples": args.search_samples,
                "preprocessing": preprocessing,
            }),
        ),
    };
    let report = &mut outcome.report;
    report.model_digest = Some(model_digest.to_string());
    report.dataset_digest = Some(dataset_digest.to_string());
    report.inputs_digest = Some(inputs_digest.to_string());
    report.preprocessing = preprocessing;

    let selftest_path = args.out.join("selftest.json");
    match &outcome.winner {
        Some(proto) if args.selftest_samples > 0 => {
            let winner = Model::from_bytes(&model_path, edgefleet_optimizer::model::encode(proto))?;
            let evaluation = split(data.len(), args.calibration_samples, 0).evaluation;
            let pool = &evaluation[..evaluation.len().min(64)];
            let test = edgefleet_optimizer::selftest::build(
                runtime.as_ref(),
                &winner,
                &data,
                pool,
                args.selftest_samples,
            )
            .map_err(|e| anyhow::anyhow!("building self-test samples: {e}"))?;
            write_atomic(&selftest_path, &test.to_json())?;
        }
        _ => match std::fs::remove_file(&selftest_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", selftest_path.display()));
            }
        },
    }
    let mut json = serde_json::to_vec_pretty(&outcome.report)?;
    json.push(b'\n');
    write_atomic(&report_path, &json)?;
    print!("{}", edgefleet_optimizer::report::table(&outcome.report));
    println!("report: {}", report_path.display());
    if outcome.winner.is_some() {
        println!("model:  {}", model_path.display());
        let mut result = result_summary(&outcome.report);
        if let Some(target) = &args.push {
            let out = edgefleet_optimizer::publish::read_output(&args.out, args.name.clone())?;
            let pushed = push(&args.registry, target, &out)?;
            println!("artifact: {}", pushed.reference);
            result["reference"] = pushed.reference.into();
            result["digest"] = pushed.digest.to_string().into();
        }
        if let Some(path) = &args.result_file {
            write_result(path, result.to_string().as_bytes())?;
        }
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        if let Some(path) = &args.result_file {
            write_result(path, result_summary(&outcome.report).to_string().as_bytes())?;
        }
        eprintln!(
            "error: AccuracyFloorNotMet: no candidate for device class {} reached {:.2}% top-1 (base {:.2}%)",
            outcome.report.device_class,
            outcome.report.required_accuracy * 100.0,
            outcome.report.base.accuracy * 100.0
        );
        Ok(std::process::ExitCode::from(EXIT_FLOOR_NOT_MET))
    }
}

fn push(
    registry: &RegistryArgs,
    target: &str,
    out: &edgefleet_optimizer::publish::OutputDir,
) -> anyhow::Result<edgefleet_artifact::registry::Pushed> {
    let registry = registry.registry()?;
    let packed = out.pack(Default::default())?;
    let pushed =
        block_on(registry.push(target, &packed)).with_context(|| format!("pushing to {target}"))?;
    eprintln!(
        "pushed {} ({} bytes uploaded, {} blobs already there)",
        pushed.reference, pushed.uploaded_bytes, pushed.skipped_blobs
    );
    Ok(pushed)
}

/// A readable summary of an artifact.
fn describe(
    reference: &str,
    artifact: &edgefleet_artifact::Artifact,
    config: &edgefleet_artifact::manifest::ModelConfig,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "reference:    {reference}");
    let _ = writeln!(s, "digest:       {}", artifact.digest);
    let _ = writeln!(
        s,
        "artifactType: {}",
        artifact.manifest.artifact_type.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        s,
        "config:       format {} precision {} quantization {}",
        config.config.format.as_deref().unwrap_or("-"),
        config.config.precision.as_deref().unwrap_or("-"),
        config.config.quantization.as_deref().unwrap_or("-")
    );
    let _ = writeln!(s, "layers:");
    for l in &artifact.manifest.layers {
        let title = l
            .annotations
            .get(edgefleet_artifact::media::TITLE)
            .map(String::as_str)
            .unwrap_or("-");
        let _ = writeln!(
            s,
            "  {:>10} B  {}  {}  {}",
            l.size, l.media_type, title, l.digest
        );
    }
    let _ = writeln!(s, "annotations:");
    for (k, v) in &artifact.manifest.annotations {
        let _ = writeln!(s, "  {k}: {v}");
    }
    s
}

/// The compact result a Job reports (its termination message, at most 4 KiB).
fn result_summary(report: &edgefleet_optimizer::report::Report) -> serde_json::Value {
    let best = report
        .candidates
        .iter()
        .filter_map(|c| c.measured.as_ref().map(|m| (m.accuracy, &c.technique)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut v = serde_json::json!({
        "verdict": report.verdict,
        "device_class": report.device_class,
        "runtime": report.runtime,
        "required_accuracy": report.required_accuracy,
        "base_accuracy": report.base.accuracy,
        "best_accuracy": best.map(|b| b.0),
        "best_technique": best.map(|b| b.1.clone()),
        "inputs_digest": report.inputs_digest,
    });
    if let Some(w) = &report.winner {
        v["technique"] = w.technique.clone().into();
        v["accuracy"] = w.measured.accuracy.into();
        v["bytes"] = w.measured.bytes.into();
        v["bytes_zstd"] = w.measured.bytes_zstd.into();
        v["latency_ms_p50"] = w.measured.latency_ms_p50.into();
    }
    v
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

/// Writes the result file in place. It is read only after this process has ended (in a Job,
/// by the kubelet, as the termination message), so it needs no atomic rename; and it cannot
/// have one there: `/dev/termination-log` lives in a directory a non-root container with a
/// read-only root filesystem cannot write.
fn write_result(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Progress on the terminal: a spinner with the current step when stderr is a terminal, plain
/// timestamped lines otherwise (logs of a Job).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            start: std::time::Instant::now(),
        }
    }

    fn event(&self, event: edgefleet_optimizer::optimize::Event) {
        use edgefleet_optimizer::optimize::Event;
        let line = |m: &str| format!("[{:>6.1}s] {m}", self.start.elapsed().as_secs_f64());
        match (&self.bar, event) {
            (Some(bar), Event::Step { message }) => bar.set_message(message),
            (Some(bar), Event::Done { message }) => bar.println(line(&message)),
            (None, Event::Step { message } | Event::Done { message }) => {
                eprintln!("{}", line(&message))
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
