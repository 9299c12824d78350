//! edgefleet-operator: controllers for EdgeModel and DeviceClass, leader election and the
//! operator's HTTP endpoints. `main.rs` only wires these together.

pub mod certs;
pub mod controller;
pub mod crds;
pub mod error;
pub mod fleet;
pub mod http;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod pipeline;
pub mod placement;
pub mod resolve;
pub mod revisions;
pub mod rollout;
pub mod selector;
pub mod status;
pub mod telemetry;
pub mod webhook;
