//! Admission against the real API server: every example applies, every manifest under
//! `tests/manifests/invalid/` is refused with a message naming the field, and immutable fields
//! stay immutable.

use edgefleet_testenv::{apply_shared, kubectl, repo_root, with_namespace};
use std::path::PathBuf;

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![repo_root().join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn every_example_applies() {
    with_namespace("examples", |_, ns| async move {
        let files = yaml_files("examples");
        assert!(
            files.len() >= 3,
            "examples/ should hold the DeviceClasses and EdgeModels"
        );
        for file in files {
            // Argo CD's own kinds need Argo CD; `make chart-check` validates them (kubeconform).
            if std::fs::read_to_string(&file)
                .unwrap()
                .contains("apiVersion: argoproj.io/")
            {
                continue;
            }
            let (ok, out) = apply_shared(&ns, file.to_str().unwrap());
            assert!(ok, "{} did not apply: {out}", file.display());
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_naming_the_field() {
    with_namespace("invalid", |_, ns| async move {
        let files = yaml_files("tests/manifests/invalid");
        assert!(files.len() >= 20);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let expected: Vec<_> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect: "))
                .collect();
            assert!(
                !expected.is_empty(),
                "{} has no `# expect:` line",
                file.display()
            );
            let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]);
            assert!(!ok, "{} was accepted: {out}", file.display());
            assert!(
                out.contains("is invalid"),
                "{} refused for another reason: {out}",
                file.display()
            );
            for e in expected {
                assert!(
                    out.contains(e),
                    "{}: refusal should mention {e:?}: {out}",
                    file.display()
                );
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn publish_repository_is_immutable_and_source_is_not() {
    with_namespace("immutable", |_, ns| async move {
        let file = repo_root().join("examples/fashion-mnist.yaml");
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", file.to_str().unwrap()]);
        assert!(ok, "{out}");
        let (ok, out) = kubectl(&[
            "patch",
            "-n",
            &ns,
            "edgemodel",
            "fashion-mnist",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"publish":{"repository":"localhost:5000/elsewhere/models"}}}"#,
        ]);
        assert!(!ok, "repository change was accepted: {out}");
        assert!(
            out.contains("spec.publish.repository") && out.contains("is immutable"),
            "{out}"
        );
        let (ok, out) = kubectl(&[
            "patch",
            "-n",
            &ns,
            "edgemodel",
            "fashion-mnist",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"source":{"oci":"localhost:5000/edgefleet/base/fashion-cnn:v2"}}}"#,
        ]);
        assert!(
            ok,
            "a new source must be accepted (that is how a new model version ships): {out}"
        );
        Ok(())
    })
    .await;
}
