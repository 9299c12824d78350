//! edgefleet-sidecar: the inference server that runs next to edge applications. `serve` loads a
//! model (a file, an `optimize --out` directory or an artifact `oci://…@sha256:…`, verified and
//! self-tested), serves it with the KServe Open Inference Protocol v2 on localhost, and swaps in
//! new models over the air without failing a request. It depends on the shared `api`,
//! `artifact` and `runtime` crates only, never on the operator or the optimizer.

mod app;
mod http;
mod metrics;
mod model;
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
    /// Serve one model.
    Serve {
        /// A model file, an `optimize --out` directory, or `oci://registry/repo@sha256:…`.
        #[arg(long)]
        model: String,
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
        /// Largest request body accepted.
        #[arg(long, default_value_t = 32 << 20)]
        max_body_bytes: usize,
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
        name,
        listen,
        runtime,
        workers,
        threads,
        max_body_bytes,
        cache,
        plain_http,
        registry_config,
        preprocessing,
    } = Args::parse().command;
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
        workers,
        threads,
        preprocessing,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving the Open Inference Protocol v2");
    // Serve health and metrics at once; the model becomes ready when loaded.
    let loader = app.clone();
    let initial = tokio::spawn(async move { loader.load(&model).await });
    let server = tokio::spawn(
        axum::serve(listener, http::router(app.clone(), max_body_bytes))
            .with_graceful_shutdown(shutdown())
            .into_future(),
    );
    match initial.await? {
        Ok(s) => {
            tracing::info!(digest = %s.digest, load_ms = s.load_ms, selftest = s.selftest_passed, "ready")
        }
        Err(reason) => anyhow::bail!("cannot serve the initial model: {reason}"),
    }
    server.await??;
    tracing::info!("drained; stopped");
    Ok(())
}

/// SIGTERM or SIGINT: stop accepting, let in-flight requests finish.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutdown signal received; draining");
}
