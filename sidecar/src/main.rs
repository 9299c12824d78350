//! edgefleet-sidecar: the inference server that runs next to edge applications. `serve` loads a
//! model (a file, an `optimize --out` directory or an artifact `oci://…@sha256:…`, verified and
//! self-tested), serves it with the KServe Open Inference Protocol v2 on localhost, and swaps in
//! new models over the air without failing a request. It depends on the shared `api`,
//! `artifact` and `runtime` crates only, never on the operator or the optimizer.

mod agent;
mod app;
mod http;
mod metrics;
mod model;
mod plan;
mod slot;

use anyhow::Context as _;
use app::{App, RuntimeChoice};
use clap::{Parser, Subcommand};
use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Serves an edgefleet model on localhost and keeps it current over the air.
#[derive(Parser, Debug)]
#[command(name = "edgefleet-sidecar", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve one model: the one given, or (in a cluster) the one this pod's ModelAssignment
    /// names, kept current over the air.
    Serve {
        /// A model file, an `optimize --out` directory, or `oci://registry/repo@sha256:…`.
        /// Without it the sidecar starts with the last good model in its cache, if any.
        #[arg(long)]
        model: Option<String>,
        /// Follow this ModelAssignment (normally the pod's name): load what it desires and
        /// report status and a heartbeat to it. Uses the in-cluster ServiceAccount (or
        /// KUBECONFIG outside a cluster).
        #[arg(long, env = "EDGEFLEET_ASSIGNMENT")]
        assignment: Option<String>,
        /// The ModelAssignment's namespace (default: the pod's, or the kubeconfig's).
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: Option<String>,
        /// Status report interval (a heartbeat even when nothing changes).
        #[arg(long, default_value = "30s", value_parser = parse_seconds)]
        heartbeat: std::time::Duration,
        /// The model's name in the API (`/v2/models/{name}`).
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, value_enum, default_value = "auto")]
        runtime: RuntimeChoice,
        /// Requests served at once (one runtime session each).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Intra-op threads per ONNX Runtime session.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// A model whose one inference takes less than this (measured at load) runs in place on
        /// the HTTP worker that took the request; a slower one gets one long-lived inference
        /// thread per session. 0: always inference threads.
        #[arg(long, default_value_t = model::INLINE_BELOW.as_secs_f64() * 1e3)]
        inline_below_ms: f64,
        /// Largest request body accepted. A request costs at most its body plus 4 bytes per
        /// tensor value (at most twice the body for JSON, the body for binary tensors), so the
        /// defaults hold --max-in-flight x 3 x 8 MiB = 96 MiB of requests, within the injected
        /// sidecar's 256Mi memory limit next to its model.
        #[arg(long, default_value_t = 8 << 20)]
        max_body_bytes: usize,
        /// Largest batch in one inference request; larger ones get a 400.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
        max_batch: u32,
        /// Inference requests held at once; one more gets a 503 with Retry-After.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        max_in_flight: u32,
        /// Artifact cache (the last good model is served from here after a restart).
        #[arg(
            long,
            env = "EDGEFLEET_CACHE_DIR",
            default_value = "/var/cache/edgefleet"
        )]
        cache: PathBuf,
        /// Registries (host:port) that may be reached over plain HTTP.
        #[arg(long, env = "EDGEFLEET_PLAIN_HTTP", value_delimiter = ',')]
        plain_http: Vec<String>,
        /// Docker config.json with registry credentials.
        #[arg(long, env = "EDGEFLEET_REGISTRY_CONFIG")]
        registry_config: Option<PathBuf>,
        /// Enable `POST /v2/repository/models/{name}/load` for standalone use: requests must
        /// carry `Authorization: Bearer <the file's first line>`. Only with a loopback
        /// `--listen` address, never with `--assignment` (the ModelAssignment alone changes the
        /// model then). Off by default.
        #[arg(long, conflicts_with = "assignment")]
        load_token_file: Option<PathBuf>,
        /// Preprocessing (the EdgeModel's JSON) for the image endpoint when the model does not
        /// carry it, e.g. '{"colorMode":"grayscale","mean":[0.286],"std":[0.353]}'.
        #[arg(long)]
        preprocessing: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Serve {
        model,
        assignment,
        namespace,
        heartbeat,
        name,
        listen,
        runtime,
        workers,
        threads,
        inline_below_ms,
        max_body_bytes,
        max_batch,
        max_in_flight,
        cache,
        plain_http,
        registry_config,
        load_token_file,
        preprocessing,
    } = Args::parse().command;
    let load = match &load_token_file {
        None => http::LoadEndpoint::Off,
        Some(_) if !listen.ip().is_loopback() => anyhow::bail!(
            "--load-token-file: the load endpoint is only served on a loopback --listen address, not {listen}"
        ),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--load-token-file {}", path.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            anyhow::ensure!(
                token.len() >= 16,
                "--load-token-file {}: the token must be at least 16 characters",
                path.display()
            );
            http::LoadEndpoint::Token(token)
        }
    };
    let preprocessing = preprocessing
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .context("--preprocessing")?;
    let credentials = match &registry_config {
        Some(p) => edgefleet_artifact::DockerConfig::load(p)?,
        None => Default::default(),
    };
    let registry = edgefleet_artifact::Registry::new(edgefleet_artifact::RegistryOptions {
        plain_http,
        credentials,
        ..Default::default()
    })?;
    let cache = edgefleet_artifact::Cache::open(&cache)
        .with_context(|| format!("opening the cache {}", cache.display()))?;
    let app = App::new(
        name,
        registry,
        cache,
        runtime,
        (
            workers,
            threads,
            std::time::Duration::from_secs_f64(inline_below_ms.max(0.0) / 1e3),
        ),
        preprocessing,
    );
    // The agent's client first: a bad kubeconfig is an error at start, not later.
    let agent = match assignment {
        Some(assignment) => {
            let mut config = kube::Config::infer().await.context(
                "no cluster credentials for --assignment (in-cluster ServiceAccount or KUBECONFIG)",
            )?;
            // An edge link can vanish without a FIN: a connection that has gone silent is
            // given up after these, so the agent reconnects soon after the network returns.
            config.connect_timeout = Some(agent::CONNECT_TIMEOUT);
            config.read_timeout = Some(agent::READ_TIMEOUT);
            let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
            let client = kube::Client::try_from(config).context("building the API client")?;
            Some((
                client,
                agent::AgentConfig {
                    namespace,
                    name: assignment,
                    heartbeat,
                },
            ))
        }
        None => None,
    };
    let initial = match model {
        Some(m) => Some(m),
        None => app.last_good().map(|g| {
            tracing::info!(source = %g.source, "starting with the last good model from the cache");
            g.source
        }),
    };
    if initial.is_none() && agent.is_none() {
        anyhow::bail!(
            "nothing to serve: give --model, or --assignment to follow a ModelAssignment (no last good model in {})",
            app.cache.root().display()
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving the Open Inference Protocol v2");
    // Health and metrics answer at once; the model becomes ready when loaded.
    let server = tokio::spawn(
        axum::serve(
            listener,
            http::router(
                app.clone(),
                http::Limits {
                    max_body_bytes,
                    max_batch: max_batch as usize,
                    max_in_flight: max_in_flight as usize,
                    load,
                },
            ),
        )
        .with_graceful_shutdown(shutdown())
        .into_future(),
    );
    if let Some(source) = initial {
        match app.load(&source, None).await {
            Ok(s) => {
                tracing::info!(digest = %s.digest, load_ms = s.load_ms, selftest = s.selftest_passed, "ready")
            }
            // Following an assignment, the agent brings the desired model; alone, nothing will.
            Err(e) if agent.is_some() => {
                tracing::warn!(%source, reason = %e, "the initial model is not served; waiting for the ModelAssignment")
            }
            Err(e) => anyhow::bail!("cannot serve the initial model: {e}"),
        }
    }
    if let Some((client, config)) = agent {
        tracing::info!(assignment = %format!("{}/{}", config.namespace, config.name), "following the ModelAssignment");
        tokio::spawn(agent::run(app.clone(), client, config));
    }
    server.await??;
    tracing::info!("drained; stopped");
    Ok(())
}

/// `30s`, `5m` or plain seconds.
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = match s.strip_suffix('s') {
        Some(n) => (n, 1.0),
        None => match s.strip_suffix('m') {
            Some(n) => (n, 60.0),
            None => (s, 1.0),
        },
    };
    let v: f64 = n
        .parse()
        .map_err(|_| format!("{s:?}: want seconds like 30s or 2m"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(v * unit))
}

/// SIGTERM or SIGINT: stop accepting, let in-flight requests finish.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutdown signal received; draining");
}
