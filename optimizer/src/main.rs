//! edgefleet-optimizer: turns a base ONNX model into the best artifact a device class can run,
//! behind an accuracy gate. Only the command line lives here: `optimize` builds an
//! [`OptimizationRequest`] from its flags and `job` reads the one the operator wrote; both run
//! it with [`job::run`]. The other subcommands publish and read artifacts and measure models.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use edgefleet_api::deviceclass::Runtime as RuntimeName;
use edgefleet_api::edgemodel::{
    ColorMode, DatasetFormat, Objective, OptimizationSpec, Preprocessing, Technique, TensorLayout,
};
use edgefleet_api::job::{
    NamedDeviceClass, OptimizationRequest, OptimizationResult, PublishTarget, Requirement, Source,
    Tuning,
};
use edgefleet_optimizer::dataset::{Dataset, split};
use edgefleet_optimizer::job::{self, block_on};
use edgefleet_optimizer::model::Model;
use edgefleet_optimizer::output::{self, write_result};
use edgefleet_optimizer::{eval, progress::Progress, publish, source};
use std::path::{Path, PathBuf};

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
    /// Run an optimization request as the operator writes it (an optimization Job's command).
    Job {
        /// The request, as JSON (`edgefleet_api::job::OptimizationRequest`).
        #[arg(long)]
        request: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Load a model, run it once on zeros and print the anonymous memory that added to this
    /// process, as one JSON line (how the gate measures `memoryBudgetMib`, in a fresh process).
    #[command(hide = true)]
    Memory {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum)]
        runtime: RuntimeName,
        /// One sample's shape, without the batch axis (e.g. 1,28,28).
        #[arg(long, value_delimiter = ',', required = true)]
        shape: Vec<usize>,
    },
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
    /// Write a new signing key pair: DIR/cosign.key (ECDSA P-256, unencrypted PKCS#8 PEM) and
    /// DIR/cosign.pub; make a Secret of them for an EdgeModel's `spec.publish.signingSecret`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign an artifact (`registry/repository@sha256:…`) the way `cosign sign --key` does.
    Sign {
        reference: String,
        /// The private key (PKCS#8 PEM, ECDSA P-256).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check an artifact's signature against a public key (cosign's key-based layout); exits
    /// non-zero, saying why, when it is unsigned or signed by another key or for another digest.
    Verify {
        reference: String,
        /// The public key (PEM).
        #[arg(long)]
        key: PathBuf,
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
    /// Write a model in its standard ONNX form: packed low-bit codes (media type
    /// `application/vnd.edgefleet.model.weight.v1.packed+zstd`, docs/artifact.md) unpacked into
    /// int8 `DequantizeLinear` weights that any ONNX runtime loads. A standard model is copied.
    Decode {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
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
    /// What the dataset is (default: image-folder for a local directory, else npz).
    #[arg(long, value_enum)]
    dataset_format: Option<DatasetFormat>,
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
    objective: Objective,
    /// Techniques to try (default: all the device class supports).
    #[arg(long, value_enum, value_delimiter = ',')]
    techniques: Vec<Technique>,
    /// Samples held out for int8 calibration (never evaluated on).
    #[arg(long, default_value_t = 200)]
    calibration_samples: u32,
    /// Wall-clock budget, e.g. 30m, 90s, 1h. Candidates are first all gated as built; the
    /// search for the ones that missed runs in what is left.
    #[arg(long, default_value = "30m")]
    time_budget: String,
    /// Evaluation samples used to rank layers in the accuracy-aware search.
    #[arg(long, default_value_t = Tuning::default().search_samples)]
    search_samples: u32,
    /// Single-sample runs timed per candidate.
    #[arg(long, default_value_t = Tuning::default().latency_runs)]
    latency_runs: u32,
    /// Intra-op threads (ONNX Runtime).
    #[arg(long, default_value_t = Tuning::default().threads)]
    threads: u32,
    /// Evaluation samples shipped in the artifact for the device's self-test.
    #[arg(long, default_value_t = Tuning::default().selftest_samples)]
    selftest_samples: u32,
    /// Evaluation samples the gate uses when this binary runs under an emulator of its
    /// architecture (qemu-user); natively it uses them all.
    #[arg(long, default_value_t = Tuning::default().emulated_evaluation_samples)]
    emulated_evaluation_samples: u32,
    /// After a passing run, publish the winner to this `registry/repository[:tag]`.
    #[arg(long)]
    push: Option<String>,
    /// Model name recorded in the artifact.
    #[arg(long)]
    name: Option<String>,
    /// Sign the pushed winner with this private key (PKCS#8 PEM, ECDSA P-256).
    #[arg(long, requires = "push")]
    signing_key: Option<PathBuf>,
    /// Print the request these flags make (JSON, with its inputs digest) and exit.
    #[arg(long)]
    print_request: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// Where a run writes and how it reaches registries: nothing here changes its result.
#[derive(clap::Args, Debug)]
struct RunArgs {
    #[arg(long)]
    out: Option<PathBuf>,
    /// Cache for remote inputs (default: ~/.cache/edgefleet/artifacts).
    #[arg(long, env = "EDGEFLEET_CACHE_DIR")]
    cache: Option<PathBuf>,
    /// Also write the compact JSON result here, e.g. /dev/termination-log in a Job.
    #[arg(long)]
    result_file: Option<PathBuf>,
    /// Also write every passing candidate to DIR/candidates/ (named in report.json).
    #[arg(long)]
    keep_candidates: bool,
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

/// How an ImageFolder dataset's images become model inputs (ignored for `.npz`).
#[derive(clap::Args, Debug, Default)]
struct PreprocessingArgs {
    /// YAML with the EdgeModel's `accuracy.preprocessing` fields (colorMode, resize, centerCrop,
    /// mean, std, layout).
    #[arg(long, conflicts_with_all = ["color", "resize", "center_crop", "mean", "std", "layout"])]
    preprocessing: Option<PathBuf>,
    #[arg(long, value_enum)]
    color: Option<ColorMode>,
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
    layout: Option<TensorLayout>,
}

impl PreprocessingArgs {
    fn get(&self) -> anyhow::Result<Option<Preprocessing>> {
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
            color_mode: self.color.unwrap_or_default(),
            resize: self.resize,
            center_crop: self.center_crop,
            mean: self.mean.clone(),
            std: self.std.clone(),
            layout: self.layout.unwrap_or_default(),
        }))
    }
}

/// `--model`/`--dataset` as a request's source: an OCI reference carries its digest, a URL
/// its `--…-sha256`; a local file or directory is hashed here.
fn source(flag: &str, value: &str, sha256: Option<&str>) -> anyhow::Result<Source> {
    let digest = match source::parse(flag, value, sha256)? {
        source::Source::Oci(reference) => reference
            .split_once('@')
            .map(|(_, d)| d.to_string())
            .context("an OCI input is pinned by digest")?,
        source::Source::Url { sha256, .. } => sha256.to_string(),
        source::Source::File(path) => publish::dataset_digest(&path)?.to_string(),
    };
    Ok(Source {
        location: value.to_string(),
        digest,
    })
}

/// The request `optimize`'s flags describe.
fn request(args: &OptimizeArgs) -> anyhow::Result<OptimizationRequest> {
    let profile = edgefleet_optimizer::profile::resolve(&args.device_class)?;
    let dataset_format = args
        .dataset_format
        .unwrap_or(if Path::new(&args.dataset).is_dir() {
            DatasetFormat::ImageFolder
        } else {
            DatasetFormat::Npz
        });
    Ok(OptimizationRequest {
        model: source("--model", &args.model, args.model_sha256.as_deref())?,
        dataset: source("--dataset", &args.dataset, args.dataset_sha256.as_deref())?,
        dataset_format,
        device_class: NamedDeviceClass {
            name: profile.name,
            spec: profile.spec,
        },
        accuracy: Requirement {
            floor: args.floor,
            max_drop: args.max_drop,
            ..Default::default()
        },
        preprocessing: args.pre.get()?,
        optimization: OptimizationSpec {
            techniques: args.techniques.clone(),
            objective: args.objective,
            calibration_samples: args.calibration_samples,
            time_budget: args.time_budget.clone(),
        },
        tuning: Tuning {
            search_samples: args.search_samples,
            latency_runs: args.latency_runs,
            selftest_samples: args.selftest_samples,
            threads: args.threads,
            emulated_evaluation_samples: args.emulated_evaluation_samples,
        },
        publish: args.push.as_ref().map(|target| PublishTarget {
            target: target.clone(),
            name: args.name.clone(),
            signing_key: args.signing_key.as_ref().map(|p| p.display().to_string()),
        }),
    })
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

/// Runs a request and reports how it ended: the table, the files, the result file, the exit
/// status (3: AccuracyFloorNotMet). A run that fails before its verdict still leaves a result.
fn run(request: &OptimizationRequest, args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let result_file = args.result_file.clone();
    let finished = (|| {
        let settings = job::Settings {
            out: args
                .out
                .context("--out DIR: where the model and report go")?,
            cache: open_cache(args.cache)?,
            registry: args.registry.registry()?,
            ca_files: args.registry.ca_file.clone(),
            keep_candidates: args.keep_candidates,
            memory_probe: job::this_binary(),
        };
        let progress = Progress::new();
        let finished = job::run(request, &settings, &|e| progress.event(e));
        progress.finish();
        finished
    })();
    let finished = match finished {
        Ok(f) => f,
        Err(e) => {
            if let Some(path) = &result_file {
                let result = OptimizationResult::error(&format!("{e:#}"));
                let _ = write_result(path, serde_json::to_string(&result)?.as_bytes());
            }
            return Err(e);
        }
    };
    print!("{}", edgefleet_optimizer::report::table(&finished.report));
    println!("report: {}", finished.report_path.display());
    if let Some(model) = &finished.model_path {
        println!("model:  {}", model.display());
    }
    if let Some(a) = &finished.result.artifact {
        println!("artifact: {}", a.reference);
    }
    if let Some(path) = &result_file {
        write_result(path, serde_json::to_string(&finished.result)?.as_bytes())?;
    }
    let code = job::exit_code(&finished.result);
    if code == edgefleet_api::job::EXIT_FLOOR_NOT_MET {
        eprintln!(
            "error: AccuracyFloorNotMet: no candidate for device class {} reached {:.2}% top-1 (base {:.2}%)",
            finished.report.device_class,
            finished.report.required_accuracy * 100.0,
            finished.report.base.accuracy * 100.0
        );
    }
    if code == edgefleet_api::job::EXIT_BUDGET_NOT_MET {
        eprintln!(
            "error: BudgetNotMet: every candidate for device class {} that reached {:.2}% top-1 exceeded a budget: {}",
            finished.report.device_class,
            finished.report.required_accuracy * 100.0,
            finished.result.over_budget.as_deref().unwrap_or("?")
        );
    }
    Ok(std::process::ExitCode::from(code))
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    match Args::parse().command {
        Command::Optimize(args) => {
            let request = request(&args)?;
            if args.print_request {
                let mut doc = serde_json::to_value(&request)?;
                doc["inputsDigest"] = request.inputs_digest().into();
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(std::process::ExitCode::SUCCESS);
            }
            return run(&request, args.run);
        }
        Command::Job { request, run: args } => {
            let request: OptimizationRequest =
                serde_json::from_str(&request).context("--request: not an optimization request")?;
            return run(&request, args);
        }
        Command::Push {
            from,
            target,
            name,
            registry,
        } => {
            let payload = publish::read_output(&from, name)?;
            let packed = payload.pack(Default::default())?;
            let pushed = block_on(registry.registry()?.push(&target, &packed))
                .with_context(|| format!("pushing to {target}"))?;
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
            let (data, config, name) = publish::single_file(path, model.is_some())?;
            let file = edgefleet_artifact::manifest::FileArtifact {
                artifact_type: media::ARTIFACT_TYPE,
                config_type: media::MODEL_CONFIG,
                config: &config,
                layer_type,
                file_name: &name,
                data,
            };
            let pushed = block_on(registry.registry()?.push_file(&target, file))
                .with_context(|| format!("uploading {} to {target}", path.display()))?;
            println!("{}", pushed.reference);
        }
        Command::Keygen { out } => {
            let key = edgefleet_artifact::SigningKeyPem::generate();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let private = out.join("cosign.key");
            output::write_private(&private, key.to_pem().as_bytes())?;
            output::write_atomic(&out.join("cosign.pub"), key.public().to_pem().as_bytes())?;
            println!("{}", private.display());
        }
        Command::Sign {
            reference,
            key,
            registry,
        } => {
            let key = publish::signing_key(&key)?;
            let sig = block_on(registry.registry()?.sign(&reference, &key))?;
            println!("{sig}");
        }
        Command::Verify {
            reference,
            key,
            registry,
        } => {
            let pem = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let key = edgefleet_artifact::PublicKey::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            block_on(registry.registry()?.verify_signature(&reference, &key))?;
            println!("{reference}: signature verified");
        }
        Command::Inspect {
            reference,
            json,
            registry,
        } => {
            let (artifact, config) = block_on(registry.registry()?.inspect(&reference))?;
            if json {
                let value = serde_json::json!({
                    "digest": artifact.digest.to_string(),
                    "manifest": artifact.manifest,
                    "config": config,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", publish::describe(&reference, &artifact, &config));
            }
        }
        Command::Pull {
            reference,
            out,
            cache,
            registry,
        } => {
            let cache = open_cache(cache)?;
            let pulled = block_on(registry.registry()?.pull(&reference, &cache))?;
            let dir = output::OutputDir::create(&out)?;
            dir.put(output::MODEL, Some(&pulled.model.read()?))?;
            dir.put(output::REPORT, pulled.report.as_deref())?;
            dir.put(
                output::SELFTEST,
                pulled.selftest.as_ref().map(|t| t.to_json()).as_deref(),
            )?;
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
        Command::Decode { model, out } => {
            let model = edgefleet_optimizer::model::Model::load(&model)?;
            let bytes = prost::Message::encode_to_vec(&model.proto);
            edgefleet_optimizer::output::write_atomic(&out, &bytes)?;
            eprintln!("{}: {} bytes, standard ONNX", out.display(), bytes.len());
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
        Command::Memory {
            model,
            runtime,
            shape,
        } => {
            let model = Model::load(&model)?;
            let runtime = job::runtime(runtime, 1);
            let figures = eval::probe_memory(runtime.as_ref(), &model, &shape)
                .map_err(|e| anyhow::anyhow!("{}: {e}", model.path.display()))?;
            println!("{}", serde_json::to_string(&figures)?);
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
            let runtime = job::runtime(runtime, threads);
            let all = split(data.len(), exclude_calibration, 0).evaluation;
            let indices = &all[..limit.unwrap_or(all.len()).min(all.len())];
            let plan = eval::Plan {
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
