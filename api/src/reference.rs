//! Grammar of OCI repositories and references (distribution's `reference` package), shared by the
//! CRD schema and the binaries.
//!
//! A repository here always names its registry host, because edge nodes pull from it directly
//! and there is no sensible default registry for them: `registry.example.com:5000/vision/models`.

/// Host (DNS name or IPv4, optional port) then one or more lowercase path components.
pub const REPOSITORY_PATTERN: &str = concat!(
    r"^(localhost|[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)+|\[[0-9a-fA-F:]+\])",
    r"(:[0-9]{1,5})?",
    r"(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)+$",
);

/// A repository followed by `:tag`, `@sha256:<64 hex>`, or both.
pub const REFERENCE_PATTERN: &str = concat!(
    r"^(localhost|[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)+|\[[0-9a-fA-F:]+\])",
    r"(:[0-9]{1,5})?",
    r"(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)+",
    r"(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$",
);

/// A bare sha256 hex digest as used next to HTTPS URLs.
pub const SHA256_PATTERN: &str = "^[a-f0-9]{64}$";

/// Longest repository the distribution spec allows.
pub const MAX_REPOSITORY_LEN: usize = 255;

/// Escapes a pattern for embedding in a single-quoted CEL string literal.
pub fn cel_quoted(pattern: &str) -> String {
    format!("'{}'", pattern.replace('\\', "\\\\"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn repositories() {
        let re = Regex::new(REPOSITORY_PATTERN).unwrap();
        for good in [
            "localhost:5000/edgefleet/models",
            "127.0.0.1:5000/models",
            "registry.example.com/vision/fashion-mnist",
            "ghcr.io/acme/edge_models",
            "[::1]:5000/models",
        ] {
            assert!(re.is_match(good), "{good} should be a valid repository");
        }
        for bad in [
            "models",                              // no registry host
            "registry.example.com",                // no path
            "registry.example.com/Vision",         // uppercase path
            "registry.example.com/models:latest",  // a tag is not a repository
            "https://registry.example.com/models", // a URL is not a repository
            "registry.example.com//models",
            "registry.example.com/models/",
        ] {
            assert!(!re.is_match(bad), "{bad} should be refused");
        }
    }

    #[test]
    fn references() {
        let re = Regex::new(REFERENCE_PATTERN).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(re.is_match("localhost:5000/models:v1"));
        assert!(re.is_match(&format!("localhost:5000/models@{digest}")));
        assert!(re.is_match(&format!("localhost:5000/models:v1@{digest}")));
        assert!(re.is_match("localhost:5000/models"));
        assert!(!re.is_match("localhost:5000/models@sha256:abc"));
        assert!(!re.is_match("oci://localhost:5000/models"));
    }

    #[test]
    fn cel_quoting_doubles_backslashes() {
        assert_eq!(cel_quoted(r"^a\.b$"), r"'^a\\.b$'");
    }
}
