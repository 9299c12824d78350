//! arm64 edge devices end to end on the real test ground. One EdgeModel names two device
//! classes: `cpu-int8`, whose nodes here are amd64, and `cpu-int8-arm64`, the arm64 node (an
//! arm64 kubelet under qemu-user beside its containerd, which runs arm64 images through the
//! kernel's qemu handler). Each class's optimization Job runs on a node of that class with the
//! optimizer image of its architecture, so each artifact is gated by the binary its devices
//! run (`gatedOn`: `amd64`, `arm64 (emulated)`); a camera pod on each node gets the sidecar
//! image of its node's architecture from the webhook, and each sidecar serves its own class's
//! artifact and reports its architecture.

mod support;

use anyhow::{Context as _, ensure};
use edgefleet_api::EdgeModel;
use edgefleet_api::assignment::{Health, ModelAssignment};
use edgefleet_api::deviceclass::Arch;
use edgefleet_testenv::nodes::{self, images};
use edgefleet_testenv::{eventually, kubectl, with_namespace};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{apply, camera_pod, example, prepare};

const MODEL: &str = "fashion";
const ARM_CLASS: &str = "cpu-int8-arm64";
const LONG: Duration = Duration::from_secs(900);

/// The reference of one architecture's image of `name` (what `hack/images.sh` pushed).
fn platform_image(name: &str, arch: &str) -> String {
    images().json["images"][name]["platforms"][arch]["reference"]
        .as_str()
        .unwrap_or_else(|| panic!("no {arch} image of {name}"))
        .to_string()
}

/// The sidecar container's image of an admitted pod.
fn sidecar_image(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == "edgefleet-sidecar")
        .and_then(|c| c.image.clone())
}

#[tokio::test]
async fn each_architecture_serves_an_artifact_gated_on_its_own_architecture() {
    prepare();
    let (ok, out) = kubectl(&["apply", "-f", "examples/deviceclass-arm64.yaml"]);
    assert!(ok, "{out}");
    with_namespace("arm64", |client, ns| async move {
        let nodes_api: Api<Node> = Api::all(client.clone());
        let arm_nodes = nodes_api
            .list(&ListParams::default().labels("kubernetes.io/arch=arm64"))
            .await?;
        let arm_node = arm_nodes
            .items
            .first()
            .map(|n| n.name_any())
            .context("no arm64 node: `make up` starts one (ARM64_NODES, default 1)")?;
        let sidecar_arm = platform_image("sidecar", "arm64");
        let optimizer_arm = platform_image("optimizer", "arm64");
        let _operator = support::injecting_operator(
            &ns,
            &[
                "--sidecar-platform-image",
                &format!("arm64={sidecar_arm}"),
                "--optimizer-platform-image",
                &format!("arm64={optimizer_arm}"),
            ],
        );
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        ensure!(ok, "{out}");

        // One camera pod per architecture, each opting in with its node's device class.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let mut amd = camera_pod("cam-amd64", MODEL, "edge-0", false);
        amd.labels_mut()
            .insert("edgefleet.dev/device-class".into(), "cpu-int8".into());
        let mut arm = camera_pod("cam-arm64", MODEL, &arm_node, false);
        arm.labels_mut()
            .insert("edgefleet.dev/device-class".into(), ARM_CLASS.into());
        arm.spec.as_mut().unwrap().containers[0].image = Some(platform_image("camera-app", "arm64"));
        let amd = support::create_pod(&pods, &amd).await?;
        let arm = support::create_pod(&pods, &arm).await?;
        // A class of several architectures gets the index; the arm64 class its arm64 image.
        assert_eq!(sidecar_image(&amd), Some(images().sidecar.clone()));
        assert_eq!(sidecar_image(&arm), Some(sidecar_arm.clone()));

        // Inputs of this run's own: an artifact an earlier run published would be reused
        // without a Job, and the Jobs' placement is what this test checks.
        let budget = format!("{}s", support::fresh_time_budget());
        let manifest = example(MODEL, |doc| {
            doc["spec"]["optimization"]["timeBudget"] = budget.as_str().into();
            doc["spec"]["deviceClasses"] = serde_yaml_ng::from_str("[cpu-int8, cpu-int8-arm64]").unwrap();
            // The candidate whose kernels differ by architecture (x86 computes QDQ in float,
            // aarch64 has int8 kernels): what the gate on each architecture is for.
            doc["spec"]["optimization"]["techniques"] = serde_yaml_ng::from_str("[int8Static]").unwrap();
            let r = &mut doc["spec"]["rollout"];
            r["steps"] = serde_yaml_ng::from_str("[{percent: 100}]").unwrap();
            // The emulated sidecar's latency is not a device's.
            r["health"].as_mapping_mut().unwrap().remove("maxLatencyP99Ms");
        });
        apply(&ns, &manifest);

        let models: Api<EdgeModel> = Api::namespaced(client.clone(), &ns);
        let published = eventually(LONG, || async {
            let m = models.get(MODEL).await?;
            let classes = m.status.map(|s| s.device_classes).unwrap_or_default();
            let mut out = BTreeMap::new();
            for c in &classes {
                let a = c.artifact.as_ref().with_context(|| {
                    format!("{} not published: {:?} {:?}", c.name, c.phase, c.message)
                })?;
                out.insert(c.name.clone(), a.clone());
            }
            ensure!(out.len() == 2, "{classes:?}");
            Ok(out)
        })
        .await?;
        let gated: BTreeMap<&str, Option<&str>> = published
            .iter()
            .map(|(k, a)| (k.as_str(), a.gated_on.as_deref()))
            .collect();
        assert_eq!(
            gated,
            BTreeMap::from([("cpu-int8", Some("amd64")), (ARM_CLASS, Some("arm64 (emulated)"))]),
            "where each class's gate ran"
        );
        let (amd_digest, arm_digest) = (&published["cpu-int8"].digest, &published[ARM_CLASS].digest);
        ensure!(amd_digest != arm_digest, "one artifact per class");

        // Each class's Job ran on a node of that class, with that architecture's optimizer.
        let job_pods = pods.list(&ListParams::default().labels("job-name")).await?.items;
        let mut classes: Vec<String> = job_pods
            .iter()
            .filter_map(|p| p.labels().get("edgefleet.dev/device-class").cloned())
            .collect();
        classes.sort();
        classes.dedup();
        assert_eq!(classes, ["cpu-int8", ARM_CLASS], "the Jobs' pods (published: {published:?})");
        for p in job_pods {
            let class = p.labels().get("edgefleet.dev/device-class").cloned().unwrap_or_default();
            let node = nodes::node_of(&p)?;
            let image = p.spec.as_ref().map(|s| s.containers[0].image.clone().unwrap_or_default());
            if class == ARM_CLASS {
                assert_eq!((node.as_str(), image), (arm_node.as_str(), Some(optimizer_arm.clone())), "{}", p.name_any());
            } else {
                assert_ne!(node, arm_node, "{}: the cpu-int8 Job on a cpu-int8 node", p.name_any());
                assert_eq!(image, Some(images().optimizer.clone()), "{}", p.name_any());
            }
        }

        // Each sidecar serves its own class's artifact, healthy, as its node's architecture.
        let assignments: Api<ModelAssignment> = Api::namespaced(client.clone(), &ns);
        let want = [
            ("cam-amd64", amd_digest.clone(), Arch::Amd64),
            ("cam-arm64", arm_digest.clone(), Arch::Arm64),
        ];
        eventually(LONG, || async {
            let list = assignments.list(&ListParams::default()).await?;
            for (pod, digest, arch) in &want {
                let a = list
                    .items
                    .iter()
                    .find(|a| a.spec.pod.name == *pod)
                    .with_context(|| format!("no assignment for {pod}"))?;
                let s = a.status.clone().unwrap_or_default();
                let serving = s.current.as_ref().map(|c| c.digest.clone());
                ensure!(
                    serving.as_ref() == Some(digest)
                        && s.health == Some(Health::Healthy)
                        && s.arch == Some(*arch),
                    "{pod}: serving {serving:?} as {:?}, health {:?} ({:?}); want {digest} as {arch:?}",
                    s.arch,
                    s.health,
                    s.message
                );
            }
            Ok(())
        })
        .await?;
        for (pod, _, _) in &want {
            let p = nodes::ready(&pods, pod, Duration::from_secs(120)).await?;
            eprintln!("{pod} on {}: {}", nodes::node_of(&p)?, nodes::container_summary(&p));
        }
        Ok(())
    })
    .await;
}
