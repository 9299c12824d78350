//! Controllers and the context they share. `run` starts them and returns when they have drained.

pub mod deviceclass;
pub mod edgemodel;
pub mod optimize;
pub mod rollout;

use crate::metrics::Metrics;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use std::sync::Arc;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Only EdgeModels in this namespace are reconciled, when set.
    pub namespace: Option<String>,
    /// How optimization Jobs are built.
    pub jobs: crate::pipeline::JobSettings,
    /// Extra CA certificates for registries.
    pub registry_ca_files: Vec<std::path::PathBuf>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        namespace: Option<String>,
        instance: String,
        jobs: crate::pipeline::JobSettings,
        registry_ca_files: Vec<std::path::PathBuf>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: edgefleet_api::OPERATOR_MANAGER.into(),
            instance: Some(instance),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            namespace,
            jobs,
            registry_ca_files,
        })
    }
}

/// The controllers one operator process can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// EdgeModel: device classes, optimization Jobs, publishing.
    Edgemodel,
    /// DeviceClass acceptance.
    Deviceclass,
    /// Serving pods' ModelAssignments and the rollout.
    Rollout,
}

/// Runs the chosen controllers until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run(
    ctx: Arc<Context>,
    which: &[Which],
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let on = |w| which.contains(&w);
    let idle =
        || Box::pin(async {}) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    tokio::join!(
        if on(Which::Edgemodel) {
            Box::pin(edgemodel::run(ctx.clone(), shutdown.clone()))
        } else {
            idle()
        },
        if on(Which::Deviceclass) {
            Box::pin(deviceclass::run(ctx.clone(), shutdown.clone()))
        } else {
            idle()
        },
        if on(Which::Rollout) {
            Box::pin(rollout::run(ctx.clone(), shutdown.clone()))
        } else {
            idle()
        },
    );
}
