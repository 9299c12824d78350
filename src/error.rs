//! The operator's one error type. Every variant names the object (and field) it is about, and
//! maps to a short Prometheus label.

use kube::runtime::finalizer;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed for {object}: {source}")]
    Kube {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer of {object}: {source}")]
    Finalizer {
        object: String,
        #[source]
        source: Box<finalizer::Error<Error>>,
    },
    #[error("{object} has no {what}")]
    MissingMetadata { object: String, what: &'static str },
    #[error("could not serialize status of {object}: {source}")]
    Serialize {
        object: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn kube(object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |source| Error::Kube { object, source }
    }

    /// Stable label for the `errors` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(_),
                ..
            } => "api",
            Error::Kube { .. } => "client",
            Error::Finalizer { .. } => "finalizer",
            Error::MissingMetadata { .. } => "metadata",
            Error::Serialize { .. } => "serialize",
        }
    }
}
