//! Labels and annotations edgefleet reads and writes, defined once.

/// On a pod: the EdgeModel it serves (it opts in to the sidecar). On Jobs, their pods and
/// ModelAssignments: the EdgeModel they belong to.
pub const MODEL: &str = "edgefleet.dev/model";
/// On a pod: the device class it serves, when its EdgeModel names more than one. On Jobs and
/// ModelAssignments: their class.
pub const DEVICE_CLASS: &str = "edgefleet.dev/device-class";
/// On optimization Jobs and their pods: the first 16 hex characters of the inputs digest
/// (label values are short). Marks a pod as an optimization pod, never a serving one.
pub const INPUTS: &str = "edgefleet.dev/inputs";
/// On optimization Jobs: the whole inputs digest.
pub const INPUTS_DIGEST: &str = "edgefleet.dev/inputs-digest";
/// On a pod: the port its injected sidecar listens on.
pub const SIDECAR_PORT: &str = "edgefleet.dev/sidecar-port";
/// Set on injected pods: the sidecar image they got.
pub const INJECTED: &str = "edgefleet.dev/injected";
/// The finalizer of EdgeModels (their Jobs are deleted first).
pub const FINALIZER: &str = "edgefleet.dev/cleanup";
/// Kubernetes' recommended labels.
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
