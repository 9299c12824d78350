use crate::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure names what it was about: the reference, the digest, the file or the field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: sha256 mismatch: expected {expected}, got {actual}; refused")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}; refused")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: {size} bytes is over the limit of {limit}; refused")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("invalid digest {0:?}: want sha256:<64 lowercase hex>")]
    InvalidDigest(String),
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{reference}: not an edgefleet model artifact: {reason}")]
    NotAModel { reference: String, reason: String },
    #[error("{registry}: authentication failed{user}: {reason}")]
    Unauthorized {
        registry: String,
        user: String,
        reason: String,
    },
    #[error("{reference}: not found: {reason}")]
    NotFound { reference: String, reason: String },
    #[error("{reference}: {reason}")]
    Registry { reference: String, reason: String },
    #[error("{path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: signature refused: {refusal}")]
    Signature {
        reference: String,
        refusal: crate::signature::Refusal,
    },
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Worth retrying later (network, server-side trouble), as opposed to a refusal that will
    /// not change by itself (bad digest, bad credentials, not a model).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Registry { .. } | Error::Io { .. })
    }
}
