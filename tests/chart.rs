//! The Helm chart and the container images on the real test ground: images assembled without
//! a Docker engine (`hack/images.sh`), pushed to the test ground's registry and run from what
//! the registry holds; `helm install` of `charts/edgefleet` referencing them by digest; the two
//! operator replicas it deploys run on the real nodes (ready by their own probes), elect a
//! leader, keep the webhook configuration current, and optimize and publish the Fashion-MNIST
//! example with the optimizer image the chart names; the API server reaches the webhook through
//! the chart's Service, so a camera pod gets the chart's sidecar, which serves what was
//! published; `helm upgrade` keeps the operator's webhook; `helm uninstall` removes the
//! cluster-scoped objects.

mod support;

use anyhow::{Context as _, Result, bail, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_testenv::nodes::{self, images};
use edgefleet_testenv::{env, eventually, kubectl, repo_root, unique_name, with_namespace};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{apply, example, prepare, tool};

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .env("KUBECONFIG", &env().kubeconfig)
        .current_dir(repo_root())
        .output()?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pulls `reference` with crane into `dir` (its root filesystem) and returns its config.
fn unpack(crane: &Path, reference: &str, dir: &Path) -> Result<Value> {
    let config: Value = serde_json::from_str(&run(Command::new(crane).args([
        "config",
        "--insecure",
        reference,
    ]))?)?;
    let export = Command::new(crane)
        .args(["export", "--insecure", reference, "-"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir)
        .stdin(export.stdout.context("crane export stdout")?)
        .status()?;
    ensure!(status.success(), "tar -x of {reference}");
    Ok(config)
}

/// An architecture of the images: its platform name, loader and multiarch library directory.
struct Platform {
    arch: &'static str,
    loader: &'static str,
    triple: &'static str,
    /// The ELF header's `e_machine` of its binaries.
    elf_machine: u16,
}

const PLATFORMS: [Platform; 2] = [
    Platform {
        arch: "amd64",
        loader: "lib64/ld-linux-x86-64.so.2",
        triple: "x86_64-linux-gnu",
        elf_machine: 62, // EM_X86_64
    },
    Platform {
        arch: "arm64",
        loader: "lib/ld-linux-aarch64.so.1",
        triple: "aarch64-linux-gnu",
        elf_machine: 183, // EM_AARCH64
    },
];

#[tokio::test(flavor = "multi_thread")]
async fn images_run_from_the_registry_as_non_root_with_nothing_but_their_own_files() {
    let images = &images().json;
    let crane = tool("crane");
    // The arm64 binaries run in their chroot through the kernel's qemu handler.
    edgefleet_testenv::hack("cross.sh", &["--binfmt"]);
    for name in ["operator", "optimizer", "sidecar", "camera-app"] {
        let image = &images["images"][name];
        let reference = image["reference"].as_str().unwrap();
        let repository = format!("{}/edgefleet/{name}", env().registry);
        assert!(
            reference.starts_with(&format!("{repository}@sha256:")),
            "{reference}"
        );
        // What the chart names is an OCI image index with exactly one image per architecture,
        // each the one the script reports for it.
        let index: Value = serde_json::from_str(
            &run(Command::new(&crane).args(["manifest", "--insecure", reference])).unwrap(),
        )
        .unwrap();
        assert_eq!(
            index["mediaType"], "application/vnd.oci.image.index.v1+json",
            "{name}: {index}"
        );
        let mut entries: Vec<(String, String, String)> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["platform"]["os"].as_str().unwrap_or("").to_string(),
                    m["platform"]["architecture"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    m["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        entries.sort();
        let mut wanted: Vec<(String, String, String)> = PLATFORMS
            .iter()
            .map(|p| {
                let r = image["platforms"][p.arch]["reference"].as_str().unwrap();
                let digest = r.strip_prefix(&format!("{repository}@")).unwrap();
                ("linux".to_string(), p.arch.to_string(), digest.to_string())
            })
            .collect();
        wanted.sort();
        assert_eq!(entries, wanted, "{name}: the index's entries");
        for platform in &PLATFORMS {
            check_platform_image(&crane, name, platform, &image["platforms"][platform.arch]);
        }
    }
}

/// One architecture's image of `name`: its config, its files, and its binary run as the
/// image's user in a chroot of the image's files alone, with an empty environment: what a
/// container runtime would start (no host library can stand in for a missing one).
fn check_platform_image(crane: &Path, name: &str, platform: &Platform, image: &Value) {
    let reference = image["reference"].as_str().unwrap();
    let root = tempfile::tempdir().unwrap();
    let config = unpack(crane, reference, root.path()).unwrap();
    let what = format!("{name} ({})", platform.arch);
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{what} runs as non-root");
    let entrypoint = format!("/usr/local/bin/edgefleet-{name}");
    // ONNX Runtime travels with the optimizer (its gate) and the sidecar (classes whose runtime
    // is onnxruntime).
    let with_ort = name == "optimizer" || name == "sidecar";
    assert_eq!(c["Entrypoint"], serde_json::json!([entrypoint]), "{what}");
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some(platform.arch)),
        "{what}"
    );
    let binary = root.path().join(&entrypoint[1..]);
    assert_eq!(
        elf_machine(&binary),
        platform.elf_machine,
        "{what}: its binary's machine"
    );
    // coreutils' chroot, by path: the cleared environment has no PATH to find it by.
    let out = Command::new("/usr/sbin/chroot")
        .arg("--userspec=65532:65532")
        .arg(root.path())
        .arg(&entrypoint)
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} from its image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Minimal: the binary, its libraries, CA certificates, passwd/group, home and /tmp.
    let files: Vec<String> = walk(root.path())
        .iter()
        .map(|entry| {
            entry
                .strip_prefix(root.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    for f in &files {
        assert!(
            f.starts_with("usr/local/bin/edgefleet-")
                || f.starts_with(&format!("lib/{}/", platform.triple))
                || f.starts_with(&format!("usr/lib/{}/", platform.triple))
                || f == platform.loader
                || f == "etc/ssl/certs/ca-certificates.crt"
                || f == "etc/passwd"
                || f == "etc/group"
                || (with_ort && f == "usr/local/lib/libonnxruntime.so"),
            "unexpected file in the {what} image: {f}"
        );
    }
    if with_ort {
        assert!(
            c["Env"]
                .as_array()
                .unwrap()
                .contains(&"ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so".into()),
            "{what}"
        );
        let ort = root.path().join("usr/local/lib/libonnxruntime.so");
        assert_eq!(
            elf_machine(&ort),
            platform.elf_machine,
            "{what}: libonnxruntime.so's machine"
        );
    }
    eprintln!(
        "{what}: {} files, {:.1} MiB compressed",
        files.len(),
        image["compressed_mib"].as_f64().unwrap()
    );
}

/// `e_machine` of an ELF file (little-endian, as both architectures are).
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        path.display()
    );
    u16::from_le_bytes([bytes[18], bytes[19]])
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_install_runs_an_operator_that_publishes_the_example() {
    prepare();
    let images = &images().json;
    let helm = tool("helm");
    with_namespace("chart-app", |client, app| async move {
        // The release lives in a namespace of its own; the operator watches the app namespace
        // only (which also scopes its webhook to it: other tests' pods never reach it).
        let system = unique_name("chart-sys");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(serde_json::json!({"metadata": {"name": system}}))?,
            )
            .await?;
        let release = unique_name("rel");
        let webhook_config = format!("{release}-injector");
        let fullname = format!("{release}-edgefleet");
        // Whatever happens below, the release and its namespace go (a failed run must not
        // leave cluster-scoped objects behind).
        let _cleanup = Uninstall {
            helm: helm.clone(),
            release: release.clone(),
            namespace: system.clone(),
        };
        let values = repo_root().join("target/images/debug-values.yaml");
        let install = |verb: &str, extra: &[&str]| {
            let mut cmd = Command::new(&helm);
            cmd.args([verb, &release, "charts/edgefleet", "--namespace", &system])
                .arg("--values")
                .arg(&values)
                .args(["--set", &format!("watchNamespace={app}")])
                .args(["--set", "deviceClasses.create=false"])
                .args([
                    "--set",
                    &format!("webhook.configurationName={webhook_config}"),
                ])
                .args(["--set", &format!("sidecar.namespaces={{{app}}}")])
                .args([
                    "--set",
                    &format!("sidecar.plainHttpRegistries={{{}}}", env().registry),
                ])
                .args(["--set", "logFormat=text"])
                .args(["--wait", "--timeout", "180s"])
                .args(extra);
            run(&mut cmd)
        };
        let started = std::time::Instant::now();
        let out = install("install", &[])?;
        eprintln!("helm install ({:?}):\n{out}", started.elapsed());
        ensure!(out.contains("STATUS: deployed"), "{out}");

        // Two ready replicas of the image the values pinned, one of them leading.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &system);
        let d = deployments.get(&format!("{fullname}-operator")).await?;
        let spec = d.spec.clone().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.clone().unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.image.as_deref(),
            images["images"]["operator"]["reference"].as_str()
        );
        let sc = container.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        // Ready by the kubelet's probes of their /readyz, each on a node of its own.
        assert_eq!(d.status.clone().unwrap().ready_replicas, Some(2));
        let pods: Api<Pod> = Api::namespaced(client.clone(), &system);
        let operator_pods = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
            .await?
            .items;
        let placed: std::collections::BTreeSet<_> = operator_pods
            .iter()
            .map(nodes::node_of)
            .collect::<Result<_>>()?;
        ensure!(
            operator_pods.len() == 2 && placed.len() == 2,
            "operator pods on {placed:?}"
        );
        for p in &operator_pods {
            let process = nodes::container_process(p, "operator")?;
            ensure!(
                process.uid == 65532 && process.cap_eff == 0 && process.root_read_only,
                "operator pod {}: {process:?}",
                p.name_any()
            );
        }
        let leases: Api<Lease> = Api::namespaced(client.clone(), &system);
        let holder = eventually(Duration::from_secs(60), || async {
            leases
                .get(&format!("{fullname}-operator"))
                .await?
                .spec
                .and_then(|s| s.holder_identity)
                .context("no holder yet")
        })
        .await?;
        assert!(
            holder.starts_with(&format!("{fullname}-operator-")),
            "{holder}"
        );

        // The operator filled in the chart's webhook configuration: its Service, scope, CA.
        let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let webhook = eventually(Duration::from_secs(60), || async {
            let c = configs.get(&webhook_config).await?;
            c.webhooks
                .and_then(|w| w.into_iter().next())
                .context("no webhook in the configuration yet")
        })
        .await?;
        let service = webhook.client_config.service.clone().unwrap();
        assert_eq!(
            (service.namespace.as_str(), service.name.as_str()),
            (system.as_str(), format!("{fullname}-webhook").as_str())
        );
        assert!(webhook.client_config.ca_bundle.is_some());
        assert_eq!(
            webhook
                .namespace_selector
                .clone()
                .unwrap()
                .match_labels
                .unwrap()["kubernetes.io/metadata.name"],
            app
        );

        // Least privilege: nothing outside the watched namespace, no writes to Secrets there.
        let account = format!("system:serviceaccount:{system}:{fullname}-operator");
        for (verb, resource, ns, allowed) in [
            ("create", "jobs.batch", app.as_str(), "yes"),
            ("create", "jobs.batch", "default", "no"),
            ("get", "secrets", "default", "no"),
            ("create", "secrets", app.as_str(), "no"),
            ("delete", "pods", app.as_str(), "no"),
            ("list", "deviceclasses.edgefleet.dev", "default", "yes"),
            ("delete", "deviceclasses.edgefleet.dev", "default", "no"),
        ] {
            let (_, out) = kubectl(&["auth", "can-i", verb, resource, "-n", ns, "--as", &account]);
            assert_eq!(
                out.lines().next().unwrap_or_default(),
                allowed,
                "can {account} {verb} {resource} in {ns}?"
            );
        }

        // The example, end to end, with the optimizer image the chart named.
        let budget = support::fresh_time_budget();
        apply(
            &app,
            &example("fashion-mnist", move |doc| {
                doc["spec"]["optimization"]["timeBudget"] = format!("{budget}s").into();
                // One technique keeps this test short; tests/pipeline.rs runs the full search.
                doc["spec"]["optimization"]["techniques"] =
                    serde_yaml_ng::to_value(["int8Dynamic"]).unwrap();
            }),
        );
        let jobs: Api<Job> = Api::namespaced(client.clone(), &app);
        let job = eventually(Duration::from_secs(60), || async {
            jobs.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .next()
                .context("no Job yet")
        })
        .await?;
        let job_image = job.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone();
        assert_eq!(
            job_image.as_deref(),
            images["images"]["optimizer"]["reference"].as_str()
        );
        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &app);
        let model = eventually(Duration::from_secs(600), || async {
            let m = models.get("fashion-mnist").await?;
            match m.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()) {
                Some("Ready") => Ok(m),
                Some("Stalled") => bail!("stalled: {:?}", m.status),
                other => bail!("phase {other:?}"),
            }
        })
        .await?;
        let artifact = model.status.unwrap().device_classes[0]
            .artifact
            .clone()
            .unwrap();
        assert!(
            artifact
                .reference
                .contains("/edgefleet/models/fashion-mnist@sha256:")
        );
        eprintln!(
            "helm install → example published in {:?}",
            started.elapsed()
        );

        // A camera pod opts in: the API server calls the webhook through the chart's Service
        // (node 0 translates its address to an operator pod), and the chart's sidecar serves
        // the published artifact.
        let app_pods: Api<Pod> = Api::namespaced(client.clone(), &app);
        let cam = support::create_pod(
            &app_pods,
            &support::camera_pod("camera-0", "fashion-mnist", "edge-2", false),
        )
        .await?;
        let injected = cam
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        ensure!(
            injected.iter().any(|c| c.name == "edgefleet-sidecar"
                && c.image.as_deref() == images["images"]["sidecar"]["reference"].as_str()),
            "the chart's webhook did not inject its sidecar: {injected:?}"
        );
        let cam = nodes::ready(&app_pods, "camera-0", Duration::from_secs(300)).await?;
        let stats = eventually(Duration::from_secs(60), || async {
            let s = nodes::get_json(&nodes::pod_ip(&cam)?, 9090, "/stats")?;
            ensure!(s["version"] == artifact.digest.as_str(), "{s}");
            Ok(s)
        })
        .await?;
        eprintln!("camera-0 served by the chart's sidecar: {stats}");

        // An upgrade (one replica, other Job resources) keeps what the operator owns.
        let out = install(
            "upgrade",
            &["--set", "replicas=1", "--set", "optimizer.memory=512Mi"],
        )?;
        ensure!(out.contains("STATUS: deployed"), "{out}");
        let d = deployments.get(&format!("{fullname}-operator")).await?;
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
        assert!(
            d.spec_args()
                .iter()
                .any(|a| a == "--optimizer-memory=512Mi"),
            "upgrade changed the Job resources"
        );
        let c = configs.get(&webhook_config).await?;
        assert_eq!(
            c.webhooks.map(|w| w.len()),
            Some(1),
            "helm upgrade kept the operator's webhook"
        );

        // Uninstall removes the cluster-scoped objects too.
        run(Command::new(&helm).args(["uninstall", &release, "--namespace", &system, "--wait"]))?;
        eventually(Duration::from_secs(30), || async {
            match configs.get_opt(&webhook_config).await? {
                None => Ok(()),
                Some(_) => bail!("webhook configuration still there"),
            }
        })
        .await?;
        let (_, out) = kubectl(&["get", "clusterrole", &format!("{fullname}-operator")]);
        assert!(out.contains("NotFound"), "{out}");
        namespaces
            .delete(&system, &DeleteParams::background())
            .await?;
        Ok(())
    })
    .await;
}

trait Args {
    fn spec_args(&self) -> Vec<String>;
}

impl Args for Deployment {
    fn spec_args(&self) -> Vec<String> {
        self.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].args.clone())
            .unwrap_or_default()
    }
}

struct Uninstall {
    helm: PathBuf,
    release: String,
    namespace: String,
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Command::new(&self.helm)
            .args([
                "uninstall",
                &self.release,
                "--namespace",
                &self.namespace,
                "--ignore-not-found",
            ])
            .env("KUBECONFIG", &env().kubeconfig)
            .output();
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.namespace,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}
