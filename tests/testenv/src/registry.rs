//! A private Debian `docker-registry` per test, on loopback, optionally with htpasswd auth and
//! TLS from a throwaway CA: for tests that tamper with the registry's disk, cut it off or need
//! credentials, without touching the shared one from `make up`.

use crate::{Process, free_port, unique_name};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `(user, password)` accepted by htpasswd auth.
    pub htpasswd: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a fresh CA ([`TestRegistry::ca`]).
    pub tls: bool,
    /// Token auth (the Docker/OCI bearer flow): `(realm URL, service, issuer, PEM bundle of the
    /// certificate that signs the tokens)`.
    pub token: Option<(String, String, String, PathBuf)>,
}

pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Storage root (`docker/registry/v2/blobs/sha256/…` lives below it).
    pub root: PathBuf,
    /// The CA certificate (PEM) when TLS is on.
    pub ca: Option<PathBuf>,
    pub dir: tempfile::TempDir,
    process: Option<Process>,
    config: PathBuf,
}

/// Runs `openssl ARGS…` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").args(args).current_dir(dir))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn make_tls(dir: &Path) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edgefleet-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )
}

impl TestRegistry {
    pub fn start(config: RegistryConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("edgefleet-registry-")
            .tempdir()?;
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root)?;
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            root.display()
        );
        let mut ca = None;
        if config.tls {
            make_tls(dir.path())?;
            yaml.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
            ca = Some(dir.path().join("ca.crt"));
        }
        if let Some((user, password)) = &config.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::fs::write(dir.path().join("htpasswd"), out.stdout)?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd: {{realm: edgefleet-test, path: {}}}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        if let Some((realm, service, issuer, bundle)) = &config.token {
            yaml.push_str(&format!(
                "auth:\n  token: {{realm: \"{realm}\", service: {service}, issuer: {issuer}, rootcertbundle: {}}}\n",
                bundle.display()
            ));
        }
        let config_path = dir.path().join("registry.yml");
        std::fs::write(&config_path, yaml)?;
        let mut registry = TestRegistry {
            addr: format!("127.0.0.1:{port}"),
            root,
            ca,
            dir,
            process: None,
            config: config_path,
        };
        registry.restart()?;
        Ok(registry)
    }

    /// (Re)starts the registry process on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut cmd = Command::new("timeout");
        cmd.args(["600", "docker-registry", "serve"])
            .arg(&self.config);
        self.process = Some(Process::spawn_standalone(&unique_name("registry"), cmd)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "registry on {} did not start: {}",
                    self.addr,
                    self.process
                        .as_ref()
                        .map(Process::output)
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// What the registry logged (its access log included).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(Process::output)
            .unwrap_or_default()
    }

    /// Stops the registry (its storage stays) and waits until its port is closed. `timeout`
    /// passes SIGTERM on to the registry; killing `timeout` itself would orphan it.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.signal("TERM");
            let _ = p.wait_timeout(Duration::from_secs(10));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.addr).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
