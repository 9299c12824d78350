//! The Argo CD health check and kstatus against EdgeModels the operator really wrote: the
//! fixtures in `tests/fixtures/edgemodels/` were captured from the end-to-end tests
//! (`EDGEFLEET_CAPTURE_STATUS=DIR cargo test --test rollout --test pipeline`), each with the
//! health Argo CD showed and what kstatus must read. No cluster needed: `make chart-check` runs
//! this file.

use edgefleet_testenv::{argocd, kstatus, repo_root};
use serde_json::Value;
use std::collections::BTreeSet;

fn fixtures() -> Vec<(String, Value)> {
    let dir = repo_root().join("tests/fixtures/edgemodels");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn argo_cd_health_of_captured_edgemodels() {
    let mut seen = BTreeSet::new();
    for (name, fixture) in fixtures() {
        let (health, message) = argocd::health(&fixture["object"]).unwrap();
        assert_eq!(
            health,
            fixture["argocd"].as_str().unwrap(),
            "{name}: {message}"
        );
        assert!(!message.is_empty(), "{name}: a health without a message");
        assert!(
            name.starts_with(&health.to_lowercase()),
            "{name} is named after its health"
        );
        seen.insert(health);
    }
    assert_eq!(
        seen,
        BTreeSet::from(["Degraded", "Healthy", "Progressing", "Suspended"].map(String::from)),
        "every Argo CD health has a captured EdgeModel"
    );
}

#[test]
fn kstatus_reads_captured_edgemodels_as_argo_cd_does() {
    let mut seen = BTreeSet::new();
    for (name, fixture) in fixtures() {
        let Some(want) = fixture["kstatus"].as_str() else {
            continue;
        };
        let (status, message) = kstatus::status(&fixture["object"]).unwrap();
        assert_eq!(status, want, "{name}: {message}");
        // The two readings agree: done, not done yet, needs a person.
        let argo = fixture["argocd"].as_str().unwrap();
        let agree = match argo {
            "Healthy" => "Current",
            "Progressing" | "Suspended" => "InProgress",
            _ => "Failed",
        };
        assert_eq!(status, agree, "{name}: Argo CD {argo}, kstatus {status}");
        seen.insert(status);
    }
    assert_eq!(
        seen,
        BTreeSet::from(["Current", "Failed", "InProgress"].map(String::from))
    );
}

#[test]
fn a_new_generation_is_in_progress_until_observed() {
    let (_, fixture) = fixtures()
        .into_iter()
        .find(|(n, _)| n.starts_with("healthy"))
        .unwrap();
    let mut object = fixture["object"].clone();
    let generation = object["metadata"]["generation"].as_i64().unwrap();
    object["metadata"]["generation"] = (generation + 1).into();
    assert_eq!(kstatus::status(&object).unwrap().0, "InProgress");
    assert_eq!(argocd::health(&object).unwrap().0, "Progressing");
}

#[test]
fn the_argocd_cm_example_carries_the_health_check_verbatim() {
    let lua =
        std::fs::read_to_string(repo_root().join("examples/argocd/edgemodel-health.lua")).unwrap();
    let cm: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_root().join("examples/argocd/argocd-cm.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cm["data"]["resource.customizations.health.edgefleet.dev_EdgeModel"]
            .as_str()
            .unwrap(),
        lua,
        "regenerate examples/argocd/argocd-cm.yaml from edgemodel-health.lua"
    );
}
