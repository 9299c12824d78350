//! The README's quickstart, run as written: the shell block between the `quickstart` markers
//! of README.md, in bash with `-euo pipefail`, against the local test ground, whose nodes run
//! the pods. One thing differs from a newcomer's run, outside the block: `PROFILE=debug` makes
//! `make images` reuse the test build instead of a release build. Runs alone (its own test
//! binary): the release it installs is cluster-wide.

mod support;

use edgefleet_testenv::{client, env, kubectl, repo_root};
use std::process::Command;

const SYSTEM: &str = "edgefleet-system";
const APP: &str = "vision";

fn quickstart() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart: run by tests/quickstart.rs -->")
        .expect("README has the quickstart marker");
    let end = readme[start..]
        .find("<!-- end quickstart -->")
        .expect("README closes the quickstart")
        + start;
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a sh block inside the markers")
        .0;
    body.to_string()
}

/// What an earlier run (or the other tests' fixtures) left: the release, its namespaces, and the
/// default DeviceClasses, which the chart installs itself. The models' namespace goes first,
/// while the operator still runs their finalizers; a leftover without an operator loses its
/// finalizers by hand.
fn clean() {
    let (gone, _) = kubectl(&[
        "delete",
        "namespace",
        APP,
        "--ignore-not-found",
        "--timeout=120s",
    ]);
    if !gone {
        let (_, names) = kubectl(&["get", "edgemodels", "-n", APP, "-o", "name"]);
        for name in names.lines().filter(|l| l.starts_with("edgemodel")) {
            let _ = kubectl(&[
                "patch",
                "-n",
                APP,
                name,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        let _ = kubectl(&[
            "delete",
            "namespace",
            APP,
            "--ignore-not-found",
            "--timeout=120s",
        ]);
    }
    let helm = support::tool("helm");
    let _ = Command::new(helm)
        .args(["uninstall", "edgefleet", "--namespace", SYSTEM, "--wait"])
        .env("KUBECONFIG", &env().kubeconfig)
        .output();
    let _ = kubectl(&[
        "delete",
        "namespace",
        SYSTEM,
        "--ignore-not-found",
        "--timeout=120s",
    ]);
    let _ = kubectl(&[
        "delete",
        "deviceclasses.edgefleet.dev",
        "cpu-int8",
        "integer-npu",
        "nvidia-fp16",
        "--ignore-not-found",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_quickstart_installs_and_publishes() {
    let script = quickstart();
    assert!(script.contains("helm install edgefleet charts/edgefleet"));
    let client = client().await.unwrap();
    edgefleet_testenv::install_crds(&client).await.unwrap();
    clean();
    let started = std::time::Instant::now();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo_root())
        .env("PROFILE", "debug")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Leave the cluster as the other tests expect it before judging.
    clean();
    let (ok, text) = kubectl(&["apply", "-f", "examples/deviceclasses.yaml"]);
    assert!(ok, "{text}");
    assert!(
        out.status.success(),
        "the quickstart failed after {:?}:\n{stdout}\n{stderr}",
        started.elapsed()
    );
    eprintln!("quickstart ran in {:?}:\n{stdout}", started.elapsed());
    // Its last command, `kubectl edgefleet status`, shows the published artifact.
    assert!(
        stdout.contains("EdgeModel vision/fashion-mnist  phase Ready"),
        "{stdout}"
    );
    assert!(stdout.contains("device class cpu-int8"), "{stdout}");
    assert!(
        stdout.contains("/edgefleet/models/fashion-mnist@sha256:"),
        "{stdout}"
    );
    assert!(stdout.contains("accuracy  "), "{stdout}");
    // Then the camera fleet: five pods, every one ready (its sidecar serves the model).
    let cameras: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("camera-"))
        .collect();
    assert_eq!(cameras.len(), 5, "{stdout}");
    for line in cameras {
        assert!(
            line.contains(" 2/2 ") && line.contains("Running") && line.contains(" edge-"),
            "{line}"
        );
    }
    // Last, the published artifact's signature checks with the Secret's public key.
    assert!(stdout.contains(": signature verified"), "{stdout}");
}
