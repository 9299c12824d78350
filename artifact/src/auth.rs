//! Registry credentials from a docker `config.json` or a Kubernetes `kubernetes.io/dockerconfigjson`
//! Secret (whose `.dockerconfigjson` key holds the same document).

use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How to authenticate to one registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A registry token sent as `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    /// Who, for error messages (never the secret).
    pub fn who(&self) -> String {
        match self {
            Credentials::Anonymous => " (anonymous)".into(),
            Credentials::Basic { username, .. } => format!(" as user {username:?}"),
            Credentials::Bearer(_) => " (bearer token)".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

/// Parsed credentials, keyed by registry host (`host[:port]`).
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    entries: BTreeMap<String, Credentials>,
}

/// `https://reg.example:5000/v1/` → `reg.example:5000`; Docker Hub's legacy key → `docker.io`.
fn host_of(key: &str) -> String {
    let s = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

impl DockerConfig {
    /// Parses a docker `config.json` document; `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self> {
        let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| Error::Credentials {
            path: source.into(),
            reason: format!("not a docker config.json: {e}"),
        })?;
        let mut entries = BTreeMap::new();
        for (key, e) in file.auths {
            let bad = |reason: String| Error::Credentials {
                path: source.into(),
                reason: format!("auths[{key:?}]: {reason}"),
            };
            let creds = if let Some(token) = e.registrytoken {
                Credentials::Bearer(token)
            } else if let (Some(username), Some(password)) = (e.username, e.password) {
                Credentials::Basic { username, password }
            } else if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
                let decoded = STANDARD
                    .decode(auth.trim())
                    .map_err(|err| bad(format!("auth is not base64: {err}")))?;
                let text =
                    String::from_utf8(decoded).map_err(|_| bad("auth is not UTF-8".into()))?;
                let (username, password) = text
                    .split_once(':')
                    .ok_or_else(|| bad("auth is not base64(username:password)".into()))?;
                Credentials::Basic {
                    username: username.into(),
                    password: password.into(),
                }
            } else if e.identitytoken.is_some() {
                return Err(bad(
                    "identitytoken (an OAuth refresh token) is not supported; use username/password or registrytoken".into(),
                ));
            } else {
                return Err(bad("no auth, username/password or registrytoken".into()));
            };
            entries.insert(host_of(&key), creds);
        }
        Ok(DockerConfig { entries })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// From a Secret's type and data (as the API returns them, already base64-decoded).
    pub fn from_secret(
        name: &str,
        type_: Option<&str>,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self> {
        let source = format!("Secret {name}");
        if type_ != Some("kubernetes.io/dockerconfigjson") {
            return Err(Error::Credentials {
                path: source,
                reason: format!(
                    "type is {:?}, want kubernetes.io/dockerconfigjson",
                    type_.unwrap_or("")
                ),
            });
        }
        let bytes = data
            .get(".dockerconfigjson")
            .ok_or_else(|| Error::Credentials {
                path: source.clone(),
                reason: "has no .dockerconfigjson key".into(),
            })?;
        Self::parse(bytes, &format!("{source} key .dockerconfigjson"))
    }

    /// The credentials for `registry` (`host[:port]`); anonymous when none are configured.
    pub fn credentials_for(&self, registry: &str) -> Credentials {
        self.entries
            .get(&host_of(registry))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_docker_writes() {
        let json = format!(
            r#"{{"auths": {{
                "https://reg.example:5000/v2/": {{"auth": "{}"}},
                "other.example": {{"username": "u", "password": "p:w"}},
                "tok.example": {{"registrytoken": "t0k"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}}
            }}}}"#,
            STANDARD.encode("alice:s3cr:et"),
            STANDARD.encode("bob:pw")
        );
        let c = DockerConfig::parse(json.as_bytes(), "config.json").unwrap();
        assert_eq!(
            c.credentials_for("reg.example:5000"),
            Credentials::Basic {
                username: "alice".into(),
                password: "s3cr:et".into()
            }
        );
        assert_eq!(
            c.credentials_for("OTHER.example"),
            Credentials::Basic {
                username: "u".into(),
                password: "p:w".into()
            }
        );
        assert_eq!(
            c.credentials_for("tok.example"),
            Credentials::Bearer("t0k".into())
        );
        assert!(matches!(
            c.credentials_for("docker.io"),
            Credentials::Basic { .. }
        ));
        assert_eq!(
            c.credentials_for("reg.example:5001"),
            Credentials::Anonymous
        );
        assert!(!format!("{:?}", c.credentials_for("other.example")).contains("p:w"));
    }

    #[test]
    fn errors_name_the_source_and_entry() {
        let e = DockerConfig::parse(
            br#"{"auths": {"r.example": {"auth": "%%%"}}}"#,
            "/x/config.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/x/config.json") && e.contains("r.example") && e.contains("base64"),
            "{e}"
        );
        let e = DockerConfig::parse(b"[1]", "c.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a docker config.json"), "{e}");
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), b"{}".to_vec())]);
        let e = DockerConfig::from_secret("ns/creds", Some("Opaque"), &data)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Secret ns/creds") && e.contains("kubernetes.io/dockerconfigjson"),
            "{e}"
        );
        assert!(
            DockerConfig::from_secret("ns/creds", Some("kubernetes.io/dockerconfigjson"), &data)
                .is_ok()
        );
    }
}
