//! Test ground for integration and end-to-end tests: the real control plane and registry that
//! `make up` starts (reused when running), one namespace per test, and child processes that are
//! killed when the test ends. Never shipped.

pub mod argocd;
pub mod fleet;
pub mod kstatus;
pub mod net;
pub mod nodes;
pub mod registry;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `make up` printed.
#[derive(Debug, Clone)]
pub struct Env {
    pub kubeconfig: PathBuf,
    pub registry: String,
}

/// The workspace root (where `hack/` and `crds/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// Starts the environment once per test binary (or reuses the running one) and returns it.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("hack/up.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/up.sh");
        assert!(
            out.status.success(),
            "hack/up.sh failed; see its output above"
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 from up.sh");
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("up.sh printed no {name}: {text}"))
                .to_string()
        };
        Env {
            kubeconfig: var("KUBECONFIG").into(),
            registry: var("EDGEFLEET_REGISTRY"),
        }
    })
}

/// A client for the test ground's API server, as its admin.
pub async fn client() -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(&env().kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The test ground's API server (`host:port`) as its kubeconfig names it.
pub fn apiserver() -> String {
    let kubeconfig = std::fs::read_to_string(&env().kubeconfig).expect("read kubeconfig");
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("kubeconfig names a server")
        .trim()
        .trim_start_matches("https://")
        .to_string()
}

/// A kubeconfig in `dir` that reaches `server` (`host:port`, e.g. [`apiserver`] or a
/// [`net::Gate`] in front of it) with a ServiceAccount `token`, as a pod's sidecar would.
pub fn token_kubeconfig(dir: &Path, server: &str, token: &str) -> PathBuf {
    let original = std::fs::read_to_string(&env().kubeconfig).expect("read kubeconfig");
    let ca = original
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
        .expect("kubeconfig names a CA");
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://{server}', certificate-authority: '{ca}'}}\nusers:\n- name: sa\n  user: {{token: '{token}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa}}\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// A token of ServiceAccount `account` in `namespace`, valid for an hour.
pub fn service_account_token(namespace: &str, account: &str) -> Result<String> {
    let (ok, out) = kubectl(&[
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration",
        "1h",
    ]);
    anyhow::ensure!(ok, "kubectl create token {account}: {out}");
    Ok(out.trim().to_string())
}

/// Installs (server-side applies) the CRDs generated from the Rust types and waits until they
/// are served.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in edgefleet_api::crds() {
        let name = crd.metadata.name.clone().expect("CRDs are named");
        api.patch(
            &name,
            &PatchParams::apply("edgefleet-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        eventually(Duration::from_secs(30), || async {
            let crd = api.get(&name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                bail!("CRD {name} not established")
            }
        })
        .await?;
    }
    Ok(())
}

/// Runs `test` with a fresh namespace (named after `prefix`) that is deleted afterwards, even
/// when the test panics.
pub async fn with_namespace<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let client = client().await.expect("connect to the test API server");
    install_crds(&client).await.expect("install CRDs");
    let name = unique_name(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    let result = tokio::spawn(test(client.clone(), name.clone())).await;
    let failed = !matches!(result, Ok(Ok(())));
    let diagnosis = if failed { diagnosis() } else { String::new() };
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if failed {
        eprintln!("---- test ground when {name} failed ----\n{diagnosis}");
    }
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("test in namespace {name} failed: {e:?}\n{diagnosis}"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("test task in namespace {name} ended: {e}"),
    }
}

/// What the test ground looked like when a test failed, bounded so it fits a CI log: every
/// node's conditions and taints, every pod that is not running and ready (with why), the last
/// warning events, and the disk the nodes share.
pub fn diagnosis() -> String {
    const LIMIT: usize = 6000;
    let sections: [(&str, Vec<&str>); 3] = [
        (
            "nodes",
            vec![
                "get",
                "nodes",
                "-o",
                "custom-columns=NODE:.metadata.name,ARCH:.metadata.labels.kubernetes\\.io/arch,CONDITIONS:.status.conditions[?(@.status==\"True\")].type,TAINTS:.spec.taints[*].key",
            ],
        ),
        (
            "pods not running and ready",
            vec![
                "get",
                "pods",
                "-A",
                "--field-selector=status.phase!=Succeeded",
                "-o",
                "custom-columns=NS:.metadata.namespace,POD:.metadata.name,NODE:.spec.nodeName,PHASE:.status.phase,WAITING:.status.containerStatuses[*].state.waiting.reason,READY:.status.containerStatuses[*].ready,POD-CONDITION:.status.conditions[?(@.status==\"False\")].message",
            ],
        ),
        (
            "last warning events",
            vec![
                "get",
                "events",
                "-A",
                "--field-selector=type=Warning",
                "--sort-by=.lastTimestamp",
            ],
        ),
    ];
    let mut text = String::new();
    for (title, args) in sections {
        let (_, out) = kubectl(&args);
        let lines: Vec<&str> = out.lines().collect();
        let tail = lines.len().saturating_sub(25);
        text.push_str(&format!("== {title}\n{}\n", lines[tail..].join("\n")));
    }
    if let Ok(out) = Command::new("df").args(["-h", "/", "/tmp"]).output() {
        text.push_str(&format!(
            "== disk\n{}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if text.len() > LIMIT {
        let cut = (0..=LIMIT).rev().find(|&i| text.is_char_boundary(i));
        text.truncate(cut.unwrap_or(0));
        text.push_str("\n[diagnosis cut]");
    }
    text
}

/// A third-party tool built from its Go module by `hack/build-tool.sh` (helm, kubeconform,
/// crane, kstatus, oras; cached), or why it could not be built.
pub fn tool(name: &str) -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/build-tool.sh"))
        .arg(name)
        .output()
        .context("run hack/build-tool.sh")?;
    anyhow::ensure!(
        out.status.success(),
        "hack/build-tool.sh {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// Runs `hack/<script> args` (the project's own installers and caches: datasets, ONNX Runtime,
/// cross builds) and returns what it printed on stdout, trimmed; panics with its stderr if it
/// fails.
pub fn hack(script: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("hack").join(script))
        .args(args)
        .output()
        .expect("run a hack/ script");
    assert!(
        out.status.success(),
        "hack/{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 from a hack/ script")
        .trim()
        .to_string()
}

/// A DNS-1123 name unique to this process and moment.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos & 0xffff)
}

/// Retries `check` until it succeeds or `timeout` passes; the last error explains the failure.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `kubectl` against the test ground. Returns (success, stdout + stderr).
pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &env().kubeconfig)
        .current_dir(repo_root())
        .output()
        .expect("kubectl is on the PATH");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `kubectl apply --server-side` of `file` into `ns` by the tests' one field manager, taking
/// over fields another apply left: for objects several tests apply (cluster-scoped examples).
pub fn apply_shared(ns: &str, file: &str) -> (bool, String) {
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "edgefleet-tests",
        "-n",
        ns,
        "-f",
        file,
    ])
}

/// A child process that is killed when dropped; its output goes to a log file that is printed
/// if the test fails.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command.env("KUBECONFIG", &env().kubeconfig);
        Self::spawn_standalone(name, command)
    }

    /// Like [`Process::spawn`], without starting (or pointing at) the control plane.
    pub fn spawn_standalone(name: &str, mut command: Command) -> Result<Self> {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(name)));
        let file = std::fs::File::create(&log)?;
        command
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null());
        let child = command.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends a signal (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits for the process to exit, returning its exit code (None when killed by a signal).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("process already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) still running after {timeout:?}",
                    self.name,
                    child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} output ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .context("no status line")?
        .parse()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
