//! Where a device class's pods run, the pure decision: a pod labelled
//! `edgefleet.dev/device-class=<class>` gets the class's `nodeSelector` and a required node
//! affinity on `kubernetes.io/arch` for the class's `arch`, so the scheduler only ever puts it
//! on a node of that class, and the node pulls the sidecar image of its own architecture from
//! the image index. The webhook applies it to serving pods ([`crate::inject::decide`]), the
//! pipeline to the class's optimization Job ([`crate::pipeline::job`]), so the gate runs on
//! the class's architecture with that architecture's binary; the rollout uses
//! [`node_matches`] to say which pods sit on no matching node.

use edgefleet_api::deviceclass::{Arch, DeviceClassSpec};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
};
use std::collections::BTreeMap;

/// The node label the kubelet sets to its architecture.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// The class's architectures as the `kubernetes.io/arch` values they match.
fn arch_values(arch: &[Arch]) -> Vec<String> {
    arch.iter().map(|a| a.as_str().to_string()).collect()
}

/// Adds the class's node selector and architecture affinity to `spec`. A pod whose own
/// `nodeSelector` contradicts the class's is refused, naming both.
pub fn place(spec: &mut PodSpec, class: &str, class_spec: &DeviceClassSpec) -> Result<(), String> {
    let selector = spec.node_selector.get_or_insert_with(BTreeMap::new);
    for (key, value) in &class_spec.node_selector {
        match selector.get(key) {
            Some(own) if own != value => {
                return Err(format!(
                    "spec.nodeSelector[{key}] is {own:?}, but DeviceClass {class} places its pods on {key}={value:?}"
                ));
            }
            _ => {
                selector.insert(key.clone(), value.clone());
            }
        }
    }
    if selector.is_empty() {
        spec.node_selector = None;
    }
    if class_spec.arch.is_empty() {
        return Ok(());
    }
    let wanted = NodeSelectorRequirement {
        key: ARCH_LABEL.into(),
        operator: "In".into(),
        values: Some(arch_values(&class_spec.arch)),
    };
    let required = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    // Terms are alternatives: each must also require the architecture.
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        let expressions = term.match_expressions.get_or_insert_with(Vec::new);
        if !expressions.contains(&wanted) {
            expressions.push(wanted.clone());
        }
    }
    Ok(())
}

/// The image a pod of a class of these architectures runs, of an image `index` whose
/// per-architecture images by digest are `platforms`: a class of one architecture gets that
/// architecture's image when it is known, so the pod's spec names exactly what its nodes run
/// (a node's runtime picks an index's entry by its own platform, which a node that emulates
/// the class's architecture does not share); other classes get the index.
pub fn image_for<'a>(index: &'a str, platforms: &'a [(Arch, String)], arch: &[Arch]) -> &'a str {
    match arch {
        [one] => platforms
            .iter()
            .find(|(a, _)| a == one)
            .map_or(index, |(_, image)| image.as_str()),
        _ => index,
    }
}

/// Why a node with these labels is not one of the class's, if it is not.
pub fn node_mismatch(
    labels: &BTreeMap<String, String>,
    class_spec: &DeviceClassSpec,
) -> Option<String> {
    for (key, value) in &class_spec.node_selector {
        if labels.get(key) != Some(value) {
            return Some(format!(
                "{key}={}, the class wants {value}",
                labels.get(key).map_or("(unset)", String::as_str)
            ));
        }
    }
    let arch = labels.get(ARCH_LABEL).map(String::as_str);
    if !class_spec.arch.is_empty() && !class_spec.arch.iter().any(|a| Some(a.as_str()) == arch) {
        return Some(format!(
            "{ARCH_LABEL}={}, the class wants {}",
            arch.unwrap_or("(unset)"),
            arch_values(&class_spec.arch).join(" or ")
        ));
    }
    None
}

/// Whether a node with these labels is one of the class's.
pub fn node_matches(labels: &BTreeMap<String, String>, class_spec: &DeviceClassSpec) -> bool {
    node_mismatch(labels, class_spec).is_none()
}

/// The required node-affinity terms of a placed pod (tests of this module and the pipeline's).
#[cfg(test)]
pub(crate) fn terms(spec: &PodSpec) -> &[NodeSelectorTerm] {
    &spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::deviceclass::Precision;

    fn class(selector: &[(&str, &str)], arch: Vec<Arch>) -> DeviceClassSpec {
        DeviceClassSpec {
            node_selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            arch,
            runtime: Default::default(),
            execution_provider: Default::default(),
            precisions: vec![Precision::Int8],
            integer_only: false,
            memory_budget_mib: None,
            latency_budget_ms: None,
        }
    }

    #[test]
    fn a_pod_gets_the_class_selector_and_architecture() {
        let c = class(&[("edgefleet.dev/device-class", "pi")], vec![Arch::Arm64]);
        let mut spec = PodSpec::default();
        place(&mut spec, "pi", &c).unwrap();
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["edgefleet.dev/device-class"],
            "pi"
        );
        let t = terms(&spec);
        assert_eq!(t.len(), 1);
        let e = &t[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (e.key.as_str(), e.operator.as_str()),
            ("kubernetes.io/arch", "In")
        );
        assert_eq!(e.values.as_deref().unwrap(), ["arm64"]);
        // Idempotent: placing twice changes nothing.
        let once = spec.clone();
        place(&mut spec, "pi", &c).unwrap();
        assert_eq!(spec, once);
    }

    #[test]
    fn every_alternative_of_the_pods_own_affinity_also_requires_the_architecture() {
        let c = class(&[], vec![Arch::Amd64, Arch::Arm64]);
        let own = |k: &str| NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: k.into(),
                operator: "Exists".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let mut spec = PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![own("zone-a"), own("zone-b")],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        place(&mut spec, "any", &c).unwrap();
        assert_eq!(spec.node_selector, None);
        for t in terms(&spec) {
            let e = t.match_expressions.as_ref().unwrap();
            assert_eq!(e.len(), 2, "{e:?}");
            assert_eq!(e[1].values.as_deref().unwrap(), ["amd64", "arm64"]);
        }
    }

    #[test]
    fn a_contradicting_node_selector_is_refused_naming_both() {
        let c = class(&[("edgefleet.dev/device-class", "pi")], vec![Arch::Arm64]);
        let mut spec = PodSpec {
            node_selector: Some([("edgefleet.dev/device-class".into(), "jetson".into())].into()),
            ..Default::default()
        };
        let err = place(&mut spec, "pi", &c).unwrap_err();
        assert!(
            err.contains("spec.nodeSelector[edgefleet.dev/device-class]")
                && err.contains("\"jetson\"")
                && err.contains("DeviceClass pi"),
            "{err}"
        );
    }

    #[test]
    fn a_class_of_one_architecture_gets_that_architectures_image() {
        let platforms = vec![
            (Arch::Amd64, "r/x@sha256:a".to_string()),
            (Arch::Arm64, "r/x@sha256:b".to_string()),
        ];
        assert_eq!(
            image_for("r/x@sha256:i", &platforms, &[Arch::Arm64]),
            "r/x@sha256:b"
        );
        assert_eq!(
            image_for("r/x@sha256:i", &platforms, &[Arch::Amd64]),
            "r/x@sha256:a"
        );
        // Several architectures, none, or one without its own image: the index.
        let both = [Arch::Arm64, Arch::Amd64];
        assert_eq!(image_for("r/x@sha256:i", &platforms, &both), "r/x@sha256:i");
        assert_eq!(image_for("r/x@sha256:i", &platforms, &[]), "r/x@sha256:i");
        assert_eq!(
            image_for("r/x@sha256:i", &platforms[..1], &[Arch::Arm64]),
            "r/x@sha256:i"
        );
    }

    #[test]
    fn nodes_match_on_selector_and_architecture() {
        let c = class(&[("edgefleet.dev/device-class", "pi")], vec![Arch::Arm64]);
        let node = |arch: &str, class: Option<&str>| {
            let mut l = BTreeMap::from([(ARCH_LABEL.to_string(), arch.to_string())]);
            if let Some(class) = class {
                l.insert("edgefleet.dev/device-class".into(), class.into());
            }
            l
        };
        assert!(node_matches(&node("arm64", Some("pi")), &c));
        let why = node_mismatch(&node("amd64", Some("pi")), &c).unwrap();
        assert_eq!(why, "kubernetes.io/arch=amd64, the class wants arm64");
        let why = node_mismatch(&node("arm64", None), &c).unwrap();
        assert_eq!(
            why,
            "edgefleet.dev/device-class=(unset), the class wants pi"
        );
    }
}
