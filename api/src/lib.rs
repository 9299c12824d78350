//! The `edgefleet.dev/v1alpha1` API: the one place where the operator, the optimizer and the
//! sidecar agree on resource shapes, condition vocabulary and value grammars.
//!
//! Validation that the API server must enforce at admission lives in the schema as CEL rules
//! (`x_kube(validation = ..)`); the same grammars are also exposed as pure Rust functions
//! ([`duration::parse`], [`reference::validate_repository`]) so the binaries never disagree with
//! what the API server accepted.

pub mod assignment;
pub mod conditions;
pub mod deviceclass;
pub mod duration;
pub mod edgemodel;
pub mod job;
pub mod labels;
pub mod reference;

pub use assignment::{ModelAssignment, ModelAssignmentSpec, ModelAssignmentStatus};
pub use deviceclass::{DeviceClass, DeviceClassSpec, DeviceClassStatus};
pub use edgemodel::{EdgeModel, EdgeModelSpec, EdgeModelStatus};

/// API group of every edgefleet resource.
pub const GROUP: &str = "edgefleet.dev";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// Field manager used for every server-side apply the operator makes.
pub const OPERATOR_MANAGER: &str = "edgefleet-operator";

/// Every CustomResourceDefinition of the API, in install order, with the file name it is
/// committed under in `crds/`.
pub fn crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    use kube::CustomResourceExt;
    vec![
        ("deviceclasses.yaml", DeviceClass::crd()),
        ("edgemodels.yaml", EdgeModel::crd()),
        ("modelassignments.yaml", ModelAssignment::crd()),
    ]
}
