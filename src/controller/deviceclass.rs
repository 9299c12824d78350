//! DeviceClass controller: acknowledges each class (kstatus `Ready` with `observedGeneration`).
//! EdgeModels that name a class are requeued by the EdgeModel controller's watch.

use super::Context;
use crate::error::{Error, Result};
use edgefleet_api::conditions::{self, Desired, reasons, types};
use edgefleet_api::deviceclass::{DeviceClass, DeviceClassStatus};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

const CONTROLLER: &str = "deviceclass";

pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<DeviceClass> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "deviceclass reconcile failed");
            }
        })
        .await;
}

/// Conditions a DeviceClass shows: admission already refused invalid ones; a class whose
/// execution provider the sidecar cannot run is not accepted, and says which field.
pub fn desired_conditions(class: &DeviceClass) -> Vec<Desired> {
    let spec = &class.spec;
    if let Some(why) = spec.provider_refusal() {
        let reason = reasons::UNSUPPORTED_EXECUTION_PROVIDER;
        return vec![
            Desired::new(types::ACCEPTED, false, reason, why.clone()),
            Desired::new(types::READY, false, reason, why.clone()),
            Desired::new(types::RECONCILING, false, reason, ""),
            Desired::new(types::STALLED, true, reason, why),
        ];
    }
    let message = format!(
        "runtime {} on {}, precisions {:?}{}",
        spec.runtime.as_str(),
        spec.execution_provider.as_str(),
        spec.precisions,
        if spec.integer_only {
            ", integer only"
        } else {
            ""
        }
    );
    vec![
        Desired::new(types::ACCEPTED, true, reasons::VALID, message),
        Desired::new(types::READY, true, reasons::VALID, ""),
        Desired::new(types::RECONCILING, false, reasons::VALID, ""),
        Desired::new(types::STALLED, false, reasons::VALID, ""),
    ]
}

async fn reconcile(class: Arc<DeviceClass>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let previous = class.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = class.metadata.generation;
    let status = DeviceClassStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &previous.conditions,
            &desired_conditions(&class),
            generation,
            &now,
        ),
    };
    if status != previous {
        let api: Api<DeviceClass> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({"apiVersion": "edgefleet.dev/v1alpha1", "kind": "DeviceClass", "status": status});
        api.patch_status(
            &class.name_any(),
            &PatchParams::apply(edgefleet_api::OPERATOR_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube(format!("DeviceClass {}", class.name_any())))?;
    }
    Ok(Action::await_change())
}

fn error_policy(class: Arc<DeviceClass>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(deviceclass = %class.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics.failure(CONTROLLER, error);
    Action::requeue(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::deviceclass::{Arch, DeviceClassSpec, ExecutionProvider, Precision};

    fn class(provider: ExecutionProvider) -> DeviceClass {
        DeviceClass::new(
            "jetson",
            DeviceClassSpec {
                node_selector: Default::default(),
                arch: vec![Arch::Arm64],
                runtime: edgefleet_api::deviceclass::Runtime::Onnxruntime,
                execution_provider: provider,
                precisions: vec![Precision::Fp16],
                integer_only: false,
                memory_budget_mib: None,
                latency_budget_ms: None,
            },
        )
    }

    fn find(conditions: &[Desired], type_: &str) -> Desired {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_cpu_class_is_accepted_and_a_class_the_sidecar_cannot_run_is_not() {
        let cpu = desired_conditions(&class(ExecutionProvider::Cpu));
        let accepted = find(&cpu, types::ACCEPTED);
        assert!(accepted.status);
        assert_eq!(
            accepted.message,
            "runtime onnxruntime on cpu, precisions [Fp16]"
        );
        assert!(!find(&cpu, types::STALLED).status);

        let cuda = desired_conditions(&class(ExecutionProvider::Cuda));
        let accepted = find(&cuda, types::ACCEPTED);
        assert!(!accepted.status);
        assert_eq!(accepted.reason, reasons::UNSUPPORTED_EXECUTION_PROVIDER);
        assert!(
            accepted
                .message
                .starts_with("spec.executionProvider: cuda is not available"),
            "{}",
            accepted.message
        );
        assert!(!find(&cuda, types::READY).status);
        assert!(find(&cuda, types::STALLED).status);
    }
}
