//! EdgeModel controller: resolves device classes, writes kstatus conditions through server-side
//! apply, publishes Events, and runs a finalizer on delete. DeviceClass changes requeue the
//! EdgeModels that name them.

use super::{Context, optimize};
use crate::error::{Error, Result};
use crate::resolve;
use edgefleet_api::conditions::{self, reasons, types};
use edgefleet_api::deviceclass::DeviceClass;
use edgefleet_api::edgemodel::{EdgeModel, EdgeModelStatus};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

const CONTROLLER: &str = "edgemodel";

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let models: Api<EdgeModel> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let classes: Api<DeviceClass> = Api::all(ctx.client.clone());
    let jobs: Api<Job> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let controller = Controller::new(models, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .owns(
            jobs,
            watcher::Config::default().labels(&format!(
                "{}={}",
                edgefleet_api::labels::COMPONENT,
                crate::pipeline::COMPONENT
            )),
        )
        .watches(classes, watcher::Config::default(), move |class| {
            let name = class.name_any();
            store
                .state()
                .into_iter()
                .filter(|m| m.spec.device_classes.contains(&name))
                .map(|m| ObjectRef::from(m.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "edgemodel reconcile failed");
            }
        })
        .await;
}

fn describe(model: &EdgeModel) -> String {
    format!(
        "EdgeModel {}/{}",
        model.namespace().unwrap_or_default(),
        model.name_any()
    )
}

async fn reconcile(model: Arc<EdgeModel>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let object = describe(&model);
    let namespace = model.namespace().ok_or_else(|| Error::MissingMetadata {
        object: object.clone(),
        what: "namespace",
    })?;
    let api: Api<EdgeModel> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(
        &api,
        edgefleet_api::labels::FINALIZER,
        model,
        |event| async {
            match event {
                Finalizer::Apply(model) => apply(&model, &api, &ctx).await,
                Finalizer::Cleanup(model) => cleanup(&model, &ctx).await,
            }
        },
    )
    .await
    .map_err(|e| Error::Finalizer {
        object,
        source: Box::new(e),
    })
}

async fn apply(model: &EdgeModel, api: &Api<EdgeModel>, ctx: &Context) -> Result<Action> {
    let object = describe(model);
    let class_api: Api<DeviceClass> = Api::all(ctx.client.clone());
    let mut found = Vec::with_capacity(model.spec.device_classes.len());
    for name in &model.spec.device_classes {
        found.push(
            class_api
                .get_opt(name)
                .await
                .map_err(Error::kube(format!("DeviceClass {name}")))?,
        );
    }
    let specs: Vec<_> = found.iter().map(|c| c.as_ref().map(|c| &c.spec)).collect();
    let problems = resolve::check(&model.spec, &specs);
    let previous = model.status.clone().unwrap_or_default();
    // Only a model whose device classes all resolve goes down the pipeline.
    let (outcome, device_classes, pipeline_events, requeue) = if problems.is_empty() {
        let classes: Vec<_> = model
            .spec
            .device_classes
            .iter()
            .zip(&found)
            .filter_map(|(n, c)| c.as_ref().map(|c| (n.clone(), c.spec.clone())))
            .collect();
        let p = optimize::reconcile(model, &classes, ctx).await?;
        let outcome = crate::pipeline::with_rollout(p.outcome, previous.rollout.as_ref());
        (outcome, p.classes, p.events, p.requeue)
    } else {
        (
            resolve::outcome(&model.spec, &problems),
            previous.device_classes.clone(),
            Vec::new(),
            Duration::from_secs(300),
        )
    };

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    // Only the pipeline's fields: the rollout controller owns the others (see EdgeModelStatus).
    let owned = |s: &EdgeModelStatus| EdgeModelStatus {
        observed_generation: s.observed_generation,
        phase: s.phase,
        conditions: s
            .conditions
            .iter()
            .filter(|c| c.type_ != types::ROLLED_OUT)
            .cloned()
            .collect(),
        device_classes: s.device_classes.clone(),
        ..Default::default()
    };
    let previous = owned(&previous);
    let status = EdgeModelStatus {
        observed_generation: model.metadata.generation,
        phase: Some(outcome.phase),
        device_classes,
        conditions: conditions::merge(
            &previous.conditions,
            &outcome.conditions,
            model.metadata.generation,
            &now,
        ),
        ..Default::default()
    };

    let was_ready = conditions::find(&previous.conditions, types::READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    let is_ready = conditions::find(&status.conditions, types::READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    if status != previous {
        let patch = serde_json::json!({
            "apiVersion": "edgefleet.dev/v1alpha1",
            "kind": "EdgeModel",
            "status": {
                "observedGeneration": status.observed_generation,
                "phase": status.phase,
                "conditions": status.conditions,
                "deviceClasses": status.device_classes,
            },
        });
        let params = PatchParams::apply(edgefleet_api::OPERATOR_MANAGER).force();
        api.patch_status(&model.name_any(), &params, &Patch::Apply(&patch))
            .await
            .map_err(Error::kube(&object))?;
    }
    if was_ready != is_ready {
        let event = match &outcome.problem {
            Some((reason, message)) => Event {
                type_: EventType::Warning,
                reason: (*reason).into(),
                note: Some(message.clone()),
                action: "Resolve".into(),
                secondary: None,
            },
            None => Event {
                type_: EventType::Normal,
                reason: conditions::find(&status.conditions, types::READY)
                    .map(|c| c.reason.clone())
                    .unwrap_or_else(|| reasons::DEVICE_CLASSES_RESOLVED.into()),
                note: conditions::find(&status.conditions, types::READY).map(|c| c.message.clone()),
                action: "Resolve".into(),
                secondary: None,
            },
        };
        // Per-class pipeline problems already have their own Warning below.
        let duplicate = event.type_ == EventType::Warning
            && pipeline_events.iter().any(|e| e.reason == event.reason);
        if !duplicate {
            publish(ctx, model, event).await;
        }
        info!(object = %object, phase = %outcome.phase, "status changed");
    }
    for event in pipeline_events {
        publish(ctx, model, event).await;
    }
    // Periodic resync catches anything a missed watch event would hide; while Jobs run, the
    // Job watch and a short resync keep the status current.
    Ok(Action::requeue(requeue))
}

async fn cleanup(model: &EdgeModel, ctx: &Context) -> Result<Action> {
    // Optimization Jobs go now (running ones stop), not whenever the garbage collector gets to
    // them. Published artifacts stay in the registry: other EdgeModels may reuse them.
    let jobs = optimize::delete_jobs(model, ctx).await?;
    let event = Event {
        type_: EventType::Normal,
        reason: reasons::DELETED.into(),
        note: Some(format!(
            "{} is being deleted; deleted {jobs} optimization Job(s); cleanup finished",
            describe(model)
        )),
        action: "Cleanup".into(),
        secondary: None,
    };
    publish(ctx, model, event).await;
    info!(object = %describe(model), "cleaned up");
    Ok(Action::await_change())
}

async fn publish(ctx: &Context, model: &EdgeModel, event: Event) {
    if let Err(e) = ctx.recorder.publish(&event, &model.object_ref(&())).await {
        warn!(object = %describe(model), error = %e, "could not publish event");
    }
}

fn error_policy(model: Arc<EdgeModel>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(object = %describe(&model), %error, "reconcile failed; retrying");
    ctx.metrics.failure(CONTROLLER, error);
    Action::requeue(Duration::from_secs(10))
}
