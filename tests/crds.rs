//! The committed CRDs match the Rust types, and the API server accepts them (schemas and CEL
//! rules included: a rule too costly or malformed is refused at install).

use edgefleet_testenv::{client, install_crds, repo_root};

#[test]
fn committed_crds_are_fresh() {
    for (file, rendered) in edgefleet_operator::crds::render().unwrap() {
        for dir in ["crds", "charts/edgefleet/crds"] {
            let path = repo_root().join(dir).join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == rendered,
                "{} is stale: run `make crds` and commit the result",
                path.display()
            );
        }
    }
}

#[test]
fn generated_schema_carries_the_admission_rules() {
    let crds = edgefleet_api::crds();
    let edgemodel = serde_json::to_value(&crds[1].1).unwrap();
    let spec = &edgemodel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules = |v: &serde_json::Value| -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["rule"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        rules(&spec["properties"]["source"])[0],
        "has(self.oci) != has(self.url)"
    );
    assert!(
        rules(&spec["properties"]["publish"]["properties"]["repository"])
            .contains(&"self == oldSelf".to_string())
    );
    assert_eq!(
        rules(&spec["properties"]["accuracy"]["properties"]["floor"]),
        ["self > 0.0 && self <= 1.0"]
    );
    assert_eq!(
        rules(&spec["properties"]["deviceClasses"]),
        ["size(self) > 0"]
    );
    let steps = rules(&spec["properties"]["rollout"]["properties"]["steps"]);
    assert!(steps.iter().any(|r| r.contains("isSorted()")), "{steps:?}");
    assert!(
        steps.iter().any(|r| r.contains("percent == 100")),
        "{steps:?}"
    );
    // Status is a subresource, so users cannot write it and the operator's writes never bump
    // the generation.
    assert!(edgemodel["spec"]["versions"][0]["subresources"]["status"].is_object());
    assert_eq!(edgemodel["spec"]["names"]["shortNames"][0], "em");
}

#[tokio::test]
async fn crds_install_on_the_real_api_server() {
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let (ok, out) = edgefleet_testenv::kubectl(&[
        "get",
        "crd",
        "edgemodels.edgefleet.dev",
        "deviceclasses.edgefleet.dev",
        "modelassignments.edgefleet.dev",
    ]);
    assert!(ok, "{out}");
}
