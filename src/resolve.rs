//! Pure decision: given an EdgeModel spec and the DeviceClasses that exist, what status should
//! the EdgeModel show? No I/O here, so every branch is unit-tested without a cluster.

use edgefleet_api::conditions::{Desired, reasons, types};
use edgefleet_api::deviceclass::DeviceClassSpec;
use edgefleet_api::duration;
use edgefleet_api::edgemodel::{EdgeModelSpec, Phase, Technique};

/// What the reconcile should write and announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub phase: Phase,
    pub conditions: Vec<Desired>,
    /// `(reason, message)` of a problem worth a Warning event, if any.
    pub problem: Option<(&'static str, String)>,
}

/// A spec problem that admission cannot see (it depends on other objects) or that an older API
/// server without CEL let through. `field` is a JSON path from the object root.
#[derive(Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks the spec against the device classes. `classes[i]` is the class named by
/// `spec.deviceClasses[i]`, or `None` when no such DeviceClass exists.
pub fn check(spec: &EdgeModelSpec, classes: &[Option<&DeviceClassSpec>]) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    let durations = [
        (
            "spec.optimization.timeBudget".to_string(),
            Some(&spec.optimization.time_budget),
        ),
        (
            "spec.rollout.progressDeadline".to_string(),
            Some(&spec.rollout.progress_deadline),
        ),
        (
            "spec.rollout.health.heartbeatTimeout".to_string(),
            Some(&spec.rollout.health.heartbeat_timeout),
        ),
    ]
    .into_iter()
    .chain(
        spec.rollout
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.rollout.steps[{i}].pause"), s.pause.as_ref())),
    );
    for (field, value) in durations {
        if let Some(Err(e)) = value.map(|v| duration::parse(v)) {
            problems.push(SpecProblem {
                reason: reasons::INVALID_SPEC,
                field,
                message: e.to_string(),
            });
        }
    }
    for (i, (name, class)) in spec.device_classes.iter().zip(classes).enumerate() {
        let field = format!("spec.deviceClasses[{i}]");
        match class {
            None => problems.push(SpecProblem {
                reason: reasons::DEVICE_CLASS_NOT_FOUND,
                field,
                message: format!("DeviceClass {name:?} not found"),
            }),
            Some(class) => {
                if let Some(why) = class.provider_refusal() {
                    problems.push(SpecProblem {
                        reason: reasons::UNSUPPORTED_EXECUTION_PROVIDER,
                        field: field.clone(),
                        message: format!("DeviceClass {name:?}: {why}"),
                    });
                }
                let techniques = &spec.optimization.techniques;
                if class.integer_only
                    && !techniques.is_empty()
                    && !techniques.contains(&Technique::FullInteger)
                {
                    problems.push(SpecProblem {
                        reason: reasons::INVALID_SPEC,
                        field: "spec.optimization.techniques".into(),
                        message: format!("DeviceClass {name:?} is integerOnly, so the techniques must include fullInteger"),
                    });
                }
            }
        }
    }
    problems
}

/// Turns the problems into conditions. With none, the model is resolved and Ready.
pub fn outcome(spec: &EdgeModelSpec, problems: &[SpecProblem]) -> Outcome {
    if problems.is_empty() {
        let message = format!(
            "resolved device classes: {}",
            spec.device_classes.join(", ")
        );
        return Outcome {
            phase: Phase::Ready,
            conditions: vec![
                Desired::new(
                    types::READY,
                    true,
                    reasons::DEVICE_CLASSES_RESOLVED,
                    message,
                ),
                Desired::new(
                    types::RECONCILING,
                    false,
                    reasons::DEVICE_CLASSES_RESOLVED,
                    "",
                ),
                Desired::new(types::STALLED, false, reasons::DEVICE_CLASSES_RESOLVED, ""),
            ],
            problem: None,
        };
    }
    // Missing classes first: they are what a user most often needs to fix.
    let reason = if problems
        .iter()
        .any(|p| p.reason == reasons::DEVICE_CLASS_NOT_FOUND)
    {
        reasons::DEVICE_CLASS_NOT_FOUND
    } else {
        problems[0].reason
    };
    let message = problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Outcome {
        phase: Phase::Stalled,
        conditions: vec![
            Desired::new(types::READY, false, reason, message.clone()),
            Desired::new(types::RECONCILING, false, reason, ""),
            Desired::new(types::STALLED, true, reason, message.clone()),
        ],
        problem: Some((reason, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_api::deviceclass::{Arch, Precision};

    fn spec(yaml: &str) -> EdgeModelSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const BASE: &str = r#"
source: {oci: "localhost:5000/base/cnn:v1"}
deviceClasses: [cpu-int8, integer-npu]
accuracy: {floor: 0.8, dataset: {source: {oci: "localhost:5000/data/fmnist:v1"}}}
publish: {repository: "localhost:5000/models"}
"#;

    fn class(integer_only: bool) -> DeviceClassSpec {
        DeviceClassSpec {
            node_selector: Default::default(),
            arch: vec![Arch::Arm64],
            runtime: Default::default(),
            execution_provider: Default::default(),
            precisions: vec![Precision::Int8],
            integer_only,
            memory_budget_mib: None,
            latency_budget_ms: None,
        }
    }

    #[test]
    fn all_classes_found_is_ready() {
        let s = spec(BASE);
        let (cpu, npu) = (class(false), class(true));
        let problems = check(&s, &[Some(&cpu), Some(&npu)]);
        assert!(problems.is_empty(), "{problems:?}");
        let o = outcome(&s, &problems);
        assert_eq!(o.phase, Phase::Ready);
        assert_eq!(o.conditions[0].type_, types::READY);
        assert!(o.conditions[0].status);
        assert_eq!(
            o.conditions[0].message,
            "resolved device classes: cpu-int8, integer-npu"
        );
        assert!(o.problem.is_none());
    }

    #[test]
    fn a_missing_class_stalls_and_names_the_class_and_field() {
        let s = spec(BASE);
        let cpu = class(false);
        let problems = check(&s, &[Some(&cpu), None]);
        let o = outcome(&s, &problems);
        assert_eq!(o.phase, Phase::Stalled);
        let ready = &o.conditions[0];
        assert!(!ready.status);
        assert_eq!(ready.reason, reasons::DEVICE_CLASS_NOT_FOUND);
        assert_eq!(
            ready.message,
            r#"spec.deviceClasses[1]: DeviceClass "integer-npu" not found"#
        );
        assert!(
            o.conditions
                .iter()
                .any(|c| c.type_ == types::STALLED && c.status)
        );
        assert_eq!(o.problem.unwrap().0, reasons::DEVICE_CLASS_NOT_FOUND);
    }

    #[test]
    fn integer_only_class_needs_full_integer_when_techniques_are_restricted() {
        let mut s = spec(BASE);
        s.optimization.techniques = vec![Technique::Float16];
        let (cpu, npu) = (class(false), class(true));
        let problems = check(&s, &[Some(&cpu), Some(&npu)]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.optimization.techniques");
        assert!(problems[0].message.contains("integer-npu"));
        s.optimization.techniques.push(Technique::FullInteger);
        assert!(check(&s, &[Some(&cpu), Some(&npu)]).is_empty());
    }

    #[test]
    fn a_class_whose_provider_cannot_be_served_stalls_the_model_naming_both_fields() {
        let s = spec(BASE);
        let cpu = class(false);
        let mut npu = class(true);
        npu.execution_provider = edgefleet_api::deviceclass::ExecutionProvider::Npu;
        let problems = check(&s, &[Some(&cpu), Some(&npu)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].reason, reasons::UNSUPPORTED_EXECUTION_PROVIDER);
        let o = outcome(&s, &problems);
        assert_eq!(o.phase, Phase::Stalled);
        assert!(
            o.conditions[0].message.starts_with(
                r#"spec.deviceClasses[1]: DeviceClass "integer-npu": spec.executionProvider: npu is not available"#
            ),
            "{}",
            o.conditions[0].message
        );
        assert_eq!(
            o.problem.unwrap().0,
            reasons::UNSUPPORTED_EXECUTION_PROVIDER
        );
    }

    #[test]
    fn unparsable_durations_are_reported_with_their_path() {
        let mut s = spec(BASE);
        s.rollout.steps =
            vec![serde_yaml_ng::from_str("{percent: 100, pause: 5 minutes}").unwrap()];
        s.optimization.time_budget = "forever".into();
        let (cpu, npu) = (class(false), class(true));
        let fields: Vec<_> = check(&s, &[Some(&cpu), Some(&npu)])
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.optimization.timeBudget",
                "spec.rollout.steps[0].pause"
            ]
        );
    }
}
