use clap::Parser;
use edgefleet_operator::controller::{self, Context, Which};
use edgefleet_operator::http::{self, HttpState};
use edgefleet_operator::leader::{self, LeaseConfig};
use edgefleet_operator::metrics::Metrics;
use edgefleet_operator::telemetry::{self, LogFormat};
use edgefleet_operator::webhook;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

/// The edgefleet Kubernetes operator.
#[derive(Parser, Debug)]
#[command(name = "edgefleet-operator", version)]
struct Args {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "EDGEFLEET_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Reconcile EdgeModels of this namespace only (default: all namespaces).
    #[arg(long, env = "EDGEFLEET_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "edgefleet-operator")]
    lease_name: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds a leader may go without renewing before a standby takes over.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds before expiry at which the leader renews.
    #[arg(long, default_value_t = 5)]
    lease_grace: u64,
    /// Identity in the Lease (default: pod name, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[arg(long, value_enum, env = "EDGEFLEET_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Container image of the optimization Jobs.
    #[arg(long, env = "EDGEFLEET_OPTIMIZER_IMAGE", default_value_t = edgefleet_operator::pipeline::JobSettings::default().image)]
    optimizer_image: String,
    /// One architecture's image of the optimizer's index, by digest (`arm64=REF@sha256:...`,
    /// repeatable): the Jobs of a device class of that one architecture run it.
    #[arg(long, value_parser = parse_platform_image)]
    optimizer_platform_image: Vec<(edgefleet_api::deviceclass::Arch, String)>,
    /// CPU request of an optimization Job.
    #[arg(long, default_value = "1")]
    optimizer_cpu: String,
    /// Memory request of an optimization Job.
    #[arg(long, default_value = "1Gi")]
    optimizer_memory: String,
    /// Memory limit of an optimization Job.
    #[arg(long, default_value = "4Gi")]
    optimizer_memory_limit: String,
    /// Controllers to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Which::Edgemodel, Which::Deviceclass, Which::Rollout])]
    controllers: Vec<Which>,
    /// Serve the sidecar-injection webhook (HTTPS) on this address; off when unset.
    #[arg(long, env = "EDGEFLEET_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// The API server calls the webhook at this URL instead of through the Service (outside a
    /// cluster, e.g. the local test ground).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Service in front of the webhook, in the operator's namespace.
    #[arg(long, default_value = "edgefleet-webhook")]
    webhook_service: String,
    /// Name of the MutatingWebhookConfiguration the operator keeps current.
    #[arg(long, default_value = "edgefleet-sidecar-injector")]
    webhook_configuration: String,
    /// Secret (operator's namespace) holding the webhook's CA and serving certificate.
    #[arg(long, default_value = "edgefleet-webhook-tls")]
    webhook_secret: String,
    /// Names in the serving certificate (default: the Service's DNS names).
    #[arg(long, value_delimiter = ',')]
    webhook_names: Vec<String>,
    /// Seconds between certificate checks (renewal at two thirds of its lifetime).
    #[arg(long, default_value_t = 3600)]
    webhook_check_seconds: u64,
    /// Image of the injected sidecar.
    #[arg(long, env = "EDGEFLEET_SIDECAR_IMAGE", default_value_t = edgefleet_operator::inject::Settings::default().image)]
    sidecar_image: String,
    /// One architecture's image of the sidecar's index, by digest (`arm64=REF@sha256:...`,
    /// repeatable): the pods of a device class of that one architecture get it.
    #[arg(long, value_parser = parse_platform_image)]
    sidecar_platform_image: Vec<(edgefleet_api::deviceclass::Arch, String)>,
    /// Registries injected sidecars may reach over plain HTTP (trusted networks only).
    #[arg(long, value_delimiter = ',')]
    sidecar_plain_http: Vec<String>,
    /// ServiceAccount given to opted-in pods that use their namespace's default one.
    #[arg(long, default_value = "edgefleet-sidecar")]
    sidecar_service_account: String,
    /// Extra CA certificates (PEM) the operator trusts for registries.
    #[arg(long, env = "EDGEFLEET_REGISTRY_CA", value_delimiter = ',')]
    registry_ca: Vec<std::path::PathBuf>,
    /// The signing Secret (in each EdgeModel's namespace: `cosign.key`, `cosign.pub`) of
    /// EdgeModels whose `spec.publish.signingSecret` names none. An EdgeModel whose namespace
    /// lacks it publishes nothing until it exists.
    #[arg(long, env = "EDGEFLEET_SIGNING_SECRET")]
    signing_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let identity = args.identity.clone().unwrap_or_else(default_identity);

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let app = http::router(HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await
    });

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} }
        info!("shutdown signal received");
        let _ = shutdown_tx.send(true);
    });
    let shutdown = {
        let rx = shutdown_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    };

    let client = {
        let metrics = metrics.clone();
        let count = tower::util::MapRequestLayer::new(
            move |request: ::http::Request<kube::client::Body>| {
                metrics.api_request(request.method());
                request
            },
        );
        kube::client::ClientBuilder::try_from(kube::Config::infer().await?)?
            .with_layer(&count)
            .build()
    };
    let lease = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: identity.clone(),
        duration_seconds: args.lease_duration,
        grace_seconds: args.lease_grace,
    };
    // Every replica serves the webhook (the Service spreads calls); only the leader reconciles.
    let webhook = args.webhook_addr.map(|addr| {
        let ns = args.lease_namespace.clone();
        let service = args.webhook_service.clone();
        let names = if args.webhook_names.is_empty() {
            vec![
                format!("{service}.{ns}.svc"),
                format!("{service}.{ns}.svc.cluster.local"),
            ]
        } else {
            args.webhook_names.clone()
        };
        let cfg = webhook::WebhookConfig {
            addr,
            secret_namespace: ns.clone(),
            secret_name: args.webhook_secret.clone(),
            configuration: args.webhook_configuration.clone(),
            service: args
                .webhook_url
                .is_none()
                .then(|| (ns.clone(), service.clone())),
            url: args.webhook_url.clone(),
            names,
            scope: args.namespace.clone(),
            settings: edgefleet_operator::inject::Settings {
                image: args.sidecar_image.clone(),
                platform_images: args.sidecar_platform_image.clone(),
                service_account: args.sidecar_service_account.clone(),
                plain_http: args.sidecar_plain_http.clone(),
                ..Default::default()
            },
            check_every: std::time::Duration::from_secs(args.webhook_check_seconds),
        };
        let client = client.clone();
        let stop = shutdown();
        tokio::spawn(async move {
            if let Err(e) = webhook::run(client, cfg, stop).await {
                error!(
                    error = format!("{e:#}"),
                    "sidecar-injection webhook failed; exiting"
                );
                std::process::exit(1);
            }
        })
    });
    let (mut leadership, election) = leader::elect(client.clone(), &lease).await?;
    ready.store(true, Ordering::Relaxed);
    info!(%identity, lease = %lease.name, namespace = %lease.namespace, "waiting for leadership");

    let mut exit_code = 0;
    let became_leader = tokio::select! {
        acquired = leader::acquired(&mut leadership) => acquired,
        _ = shutdown() => false,
    };
    if became_leader {
        metrics.set_leader(true);
        info!(%identity, "became leader; starting controllers");
        let ctx = Context::new(
            client,
            metrics.clone(),
            args.namespace.clone(),
            identity.clone(),
            edgefleet_operator::pipeline::JobSettings {
                image: args.optimizer_image.clone(),
                platform_images: args.optimizer_platform_image.clone(),
                cpu_request: args.optimizer_cpu.clone(),
                memory_request: args.optimizer_memory.clone(),
                memory_limit: args.optimizer_memory_limit.clone(),
                signing_secret: args.signing_secret.clone(),
                ..Default::default()
            },
            args.registry_ca.clone(),
        );
        let lost = leader::lost(leadership.clone());
        let (lost_tx, mut lost_rx) = tokio::sync::oneshot::channel();
        let stop = {
            let shutdown = shutdown();
            async move {
                tokio::select! {
                    _ = shutdown => {},
                    _ = lost => { let _ = lost_tx.send(()); },
                }
            }
        };
        controller::run(ctx, &args.controllers, stop).await;
        metrics.set_leader(false);
        if lost_rx.try_recv().is_ok() {
            // Another replica may already be reconciling: stop now and let the restart
            // policy bring this one back as a standby.
            error!(%identity, "lost leadership; exiting");
            exit_code = 1;
        }
    }

    drop(leadership); // releases the lease
    match election.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(e)) => error!(error = %e, "lease release failed"),
        Err(e) => error!(error = %e, "lease task failed"),
    }
    if let Some(w) = webhook {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), w).await;
    }
    let _ = stop_http.send(());
    let _ = server.await;
    info!("stopped");
    std::process::exit(exit_code);
}

fn default_identity() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "edgefleet".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// `ARCH=REFERENCE` of `--sidecar-platform-image` and `--optimizer-platform-image`.
fn parse_platform_image(v: &str) -> Result<(edgefleet_api::deviceclass::Arch, String), String> {
    let (arch, reference) = v.split_once('=').ok_or_else(|| {
        format!("{v:?}: expected ARCH=REFERENCE, e.g. arm64=registry/edgefleet/sidecar@sha256:...")
    })?;
    let arch = match arch {
        "amd64" => edgefleet_api::deviceclass::Arch::Amd64,
        "arm64" => edgefleet_api::deviceclass::Arch::Arm64,
        other => return Err(format!("{other:?}: the architecture is amd64 or arm64")),
    };
    if !reference.contains("@sha256:") {
        return Err(format!(
            "{reference:?}: name the image by digest (REPOSITORY@sha256:...)"
        ));
    }
    Ok((arch, reference.to_string()))
}
