//! edgefleet's model artifact: what the optimizer publishes and the sidecar pulls.
//!
//! An artifact is an OCI image-spec 1.1 manifest in the CNCF ModelPack shape (see [`media`]):
//! a ModelPack config, the ONNX model as a weight layer (raw or zstd), the optimization report
//! and a few self-test samples as their own layers, and edgefleet's facts as `dev.edgefleet.*`
//! annotations ([`Facts`]). [`pack`] builds one from bytes (pure), [`Registry`] pushes and pulls
//! it over plain OCI distribution, and [`Cache`] keeps verified blobs on a node.

pub mod auth;
pub mod cache;
pub mod codec;
pub mod digest;
pub mod error;
pub mod limits;
pub mod manifest;
pub mod media;
pub mod registry;
pub mod selftest;
pub mod signature;
pub mod url;

pub use auth::{Credentials, DockerConfig};

/// Installs the process's TLS crypto provider (ring, as the rest of the workspace uses) unless one
/// is installed already. Every HTTPS client in the process needs it; [`Registry::new`] calls it.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub use cache::{Cache, Cached, GcPolicy, GcReport, Lease};
pub use digest::Digest;
pub use error::{Error, Result};
pub use limits::Limits;
pub use manifest::{Artifact, Facts, ModelLayer, Packed, pack, unpack};
pub use registry::{PullStats, Pulled, Registry, RegistryOptions};
pub use selftest::{SelfTest, SelfTestSample};
pub use signature::{PublicKey, SigningKeyPem};
