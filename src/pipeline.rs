//! Pure decisions of the optimize → publish pipeline: what identifies a result (the inputs
//! digest), the optimization Job for one device class, what a finished Job means, and what the
//! EdgeModel's status says about all its classes. No I/O here; `controller::optimize` fetches
//! and writes.

use crate::placement;
use edgefleet_api::conditions::{Desired, reasons, types};
use edgefleet_api::deviceclass::{Arch, DeviceClassSpec};
use edgefleet_api::edgemodel::{
    AccuracySpec, BlobSource, DeviceClassPhase, EdgeModel, Phase, PublishedArtifact, RolloutState,
};
use edgefleet_api::job::{
    NamedDeviceClass, OptimizationRequest, OptimizationResult, PublishTarget, Requirement, Source,
    Tuning, Verdict,
};
use edgefleet_api::labels;
use edgefleet_artifact::{Artifact, Digest, PublicKey, media};
use k8s_openapi::api::batch::v1::Job;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// The optimizer version the Jobs run: the operator ships with its own.
pub use edgefleet_api::job::OPTIMIZER_VERSION;
pub const COMPONENT: &str = "optimizer";
pub const SERVICE_ACCOUNT: &str = "edgefleet-optimizer";
pub const CONTAINER: &str = "optimizer";
/// Where the registry Secret is mounted in the Job's pod.
pub const REGISTRY_CONFIG_DIR: &str = "/var/run/edgefleet/registry";
pub const WORK_DIR: &str = "/work";
/// Where the optimization Job finds the signing key (the Secret's `cosign.key`, alone).
pub const SIGNING_KEY_DIR: &str = "/var/run/edgefleet/signing";
/// The signing Secret's keys (the names `cosign generate-key-pair k8s://…` uses).
pub const SIGNING_PRIVATE_KEY: &str = "cosign.key";
pub const SIGNING_PUBLIC_KEY: &str = "cosign.pub";

/// The label the Job controller puts on the pods it creates (and selects them by).
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";

/// Whether `pod` was made by the Job whose uid is `job_uid`: its controlling owner reference
/// names that Job (a label alone can be written by anyone who can create pods).
pub fn owned_by_job(pod: &k8s_openapi::api::core::v1::Pod, job_uid: &str) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.kind == "Job"
            && o.api_version == "batch/v1"
            && o.uid == job_uid
    })
}

/// The Secret holding an EdgeModel's signing key pair: its own `spec.publish.signingSecret`,
/// else the operator's default (`--signing-secret`), else none (artifacts go unsigned).
pub fn signing_secret<'a>(model: &'a EdgeModel, default: Option<&'a str>) -> Option<&'a str> {
    model.spec.publish.signing_secret.as_deref().or(default)
}

/// A source pinned to its content: how the Job fetches it and the digest that identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `oci://registry/repo@sha256:…` or an https:// URL.
    pub location: String,
    /// The URL's sha256 (hex), for `--…-sha256`.
    pub url_sha256: Option<String>,
    /// Manifest digest (OCI) or file digest (URL).
    pub digest: Digest,
}

impl Pinned {
    /// As the Job's request names it.
    pub fn source(&self) -> Source {
        Source {
            location: self.location.clone(),
            digest: self.digest.to_string(),
        }
    }
}

/// How a source is pinned when it already names its content; `None` when a tag must be
/// resolved against the registry first.
pub fn pin_static(source: &BlobSource) -> Option<Pinned> {
    if let (Some(url), Some(sha)) = (&source.url, &source.sha256) {
        return Some(Pinned {
            location: url.clone(),
            url_sha256: Some(sha.clone()),
            digest: format!("sha256:{sha}").parse().ok()?,
        });
    }
    let oci = source.oci.as_ref()?;
    let (_, digest) = oci.split_once('@')?;
    Some(Pinned {
        location: format!("oci://{oci}"),
        url_sha256: None,
        digest: digest.parse().ok()?,
    })
}

/// `registry/repo:tag` resolved to `digest`.
pub fn pin_resolved(oci: &str, digest: Digest) -> Pinned {
    let repo = match oci.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => oci,
    };
    Pinned {
        location: format!("oci://{repo}@{digest}"),
        url_sha256: None,
        digest,
    }
}

/// The optimization request for one device class: everything its Job runs on and what
/// identifies the result. It has no publish target yet: the Job's names the inputs digest
/// ([`artifact_tag`]).
pub fn request(
    model: &EdgeModel,
    class_name: &str,
    class: &DeviceClassSpec,
    base: &Pinned,
    dataset: &Pinned,
) -> OptimizationRequest {
    let spec = &model.spec;
    OptimizationRequest {
        model: base.source(),
        dataset: dataset.source(),
        dataset_format: spec.accuracy.dataset.format,
        device_class: NamedDeviceClass {
            name: class_name.to_string(),
            spec: class.clone(),
        },
        accuracy: Requirement {
            metric: spec.accuracy.metric,
            floor: spec.accuracy.floor,
            max_drop: spec.accuracy.max_drop,
        },
        preprocessing: spec.accuracy.preprocessing.clone(),
        optimization: spec.optimization.clone(),
        tuning: Tuning::default(),
        publish: None,
    }
}

/// The inputs digest of a request, as the artifact crate's type.
pub fn inputs_digest(request: &OptimizationRequest) -> Digest {
    request
        .inputs_digest()
        .parse()
        .expect("the API's inputs digest is a sha256 digest")
}

/// The tag an artifact is pushed under: people can read it, the operator finds a reusable
/// artifact by it (and checks its inputs annotation before trusting it).
pub fn artifact_tag(class: &str, inputs: &Digest) -> String {
    format!("{class}-{}", &inputs.hex()[..16])
}

/// A DNS-1123 label of at most 63 characters: `<model>-<class>-<8 hex>`.
pub fn job_name(model: &str, class: &str, inputs: &Digest) -> String {
    let mut base: String = format!("{model}-{class}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(63 - 9);
    let base = base.trim_end_matches('-');
    format!("{base}-{}", &inputs.hex()[..8])
}

/// Operator-level settings of every optimization Job.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The optimizer image: an image index, from which each node pulls its own platform's image.
    pub image: String,
    /// One architecture's image of that index, by digest: the Jobs of a device class of that
    /// architecture only run it ([`crate::placement::image_for`]).
    pub platform_images: Vec<(Arch, String)>,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    /// Added to the time budget for downloads, the self-test and the push.
    pub deadline_margin_seconds: i64,
    pub backoff_limit: i32,
    /// The signing Secret of EdgeModels that name none (`--signing-secret`).
    pub signing_secret: Option<String>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            image: format!("ghcr.io/edgefleet/optimizer:{OPTIMIZER_VERSION}"),
            platform_images: Vec::new(),
            cpu_request: "1".into(),
            memory_request: "1Gi".into(),
            memory_limit: "4Gi".into(),
            deadline_margin_seconds: 600,
            backoff_limit: 2,
            signing_secret: None,
        }
    }
}

/// The registry host of a repository (`host[:port]/path` → `host[:port]`).
pub fn registry_host(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// One device class's optimization: everything its Job is built from.
#[derive(Debug, Clone, Copy)]
pub struct ClassRun<'a> {
    pub model: &'a EdgeModel,
    pub request: &'a OptimizationRequest,
    pub inputs: &'a Digest,
    pub time_budget_seconds: u64,
    /// The Secret whose `cosign.key` signs the winner.
    pub signing_secret: Option<&'a str>,
}

/// The Job's command line: its request (with the publish target the inputs name), and where
/// it writes.
pub fn optimizer_args(run: ClassRun<'_>) -> Vec<String> {
    let ClassRun {
        model,
        request,
        inputs,
        ..
    } = run;
    let repo = &model.spec.publish.repository;
    let mut request = request.clone();
    request.publish = Some(PublishTarget {
        target: format!(
            "{repo}:{}",
            artifact_tag(&request.device_class.name, inputs)
        ),
        name: Some(model.name_any()),
        signing_key: run
            .signing_secret
            .map(|_| format!("{SIGNING_KEY_DIR}/{SIGNING_PRIVATE_KEY}")),
    });
    let mut a: Vec<String> = vec![
        "job".into(),
        "--request".into(),
        serde_json::to_string(&request).expect("a request serializes"),
        "--out".into(),
        format!("{WORK_DIR}/out"),
        "--cache".into(),
        format!("{WORK_DIR}/cache"),
        "--result-file".into(),
        "/dev/termination-log".into(),
    ];
    if model.spec.publish.plain_http {
        a.extend(["--plain-http".into(), registry_host(repo).into()]);
    }
    if model.spec.publish.credentials_secret.is_some() {
        a.extend([
            "--registry-config".into(),
            format!("{REGISTRY_CONFIG_DIR}/config.json"),
        ]);
    }
    a
}

/// The optimization Job for one device class of `model`. It runs where the class's pods run
/// (its `nodeSelector` and architectures, [`placement::place`]), with the optimizer image of
/// that architecture: the gate measures candidates with the binary and kernels the devices run.
pub fn job(run: ClassRun<'_>, settings: &JobSettings) -> Job {
    let ClassRun {
        model,
        request,
        inputs,
        time_budget_seconds,
        signing_secret,
    } = run;
    let class_name = request.device_class.name.as_str();
    let name = job_name(&model.name_any(), class_name, inputs);
    let labels = BTreeMap::from([
        (labels::MODEL.to_string(), model.name_any()),
        (labels::DEVICE_CLASS.to_string(), class_name.to_string()),
        (labels::INPUTS.to_string(), inputs.hex()[..16].to_string()),
        (labels::COMPONENT.to_string(), COMPONENT.to_string()),
        (
            labels::MANAGED_BY.to_string(),
            edgefleet_api::OPERATOR_MANAGER.to_string(),
        ),
    ]);
    let args = optimizer_args(run);
    let mut volumes = vec![serde_json::json!({"name": "work", "emptyDir": {}})];
    let mut mounts = vec![serde_json::json!({"name": "work", "mountPath": WORK_DIR})];
    if let Some(secret) = &model.spec.publish.credentials_secret {
        volumes.push(serde_json::json!({
            "name": "registry",
            "secret": {"secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]},
        }));
        mounts.push(serde_json::json!({"name": "registry", "mountPath": REGISTRY_CONFIG_DIR, "readOnly": true}));
    }
    if let Some(secret) = signing_secret {
        // The private key only: the public half is the operator's to read.
        volumes.push(serde_json::json!({
            "name": "signing",
            "secret": {"secretName": secret, "items": [{"key": SIGNING_PRIVATE_KEY, "path": SIGNING_PRIVATE_KEY}]},
        }));
        mounts.push(
            serde_json::json!({"name": "signing", "mountPath": SIGNING_KEY_DIR, "readOnly": true}),
        );
    }
    let owner = model.controller_owner_ref(&()).map(|o| vec![o]);
    let doc = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": model.namespace(),
            "labels": labels,
            "annotations": {labels::INPUTS_DIGEST: inputs.to_string()},
            "ownerReferences": owner,
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": time_budget_seconds as i64 + settings.deadline_margin_seconds,
            "podFailurePolicy": {"rules": [{
                "action": "FailJob",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [edgefleet_api::job::EXIT_FLOOR_NOT_MET, edgefleet_api::job::EXIT_BUDGET_NOT_MET]},
            }]},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": false,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": CONTAINER,
                        "image": placement::image_for(&settings.image, &settings.platform_images, &request.device_class.spec.arch),
                        "command": ["edgefleet-optimizer"],
                        "args": args,
                        // The root filesystem is read-only: scratch files (the memory probe's
                        // copy of a candidate) go to the work volume.
                        "env": [{"name": "TMPDIR", "value": WORK_DIR}],
                        "resources": {
                            "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
                            "limits": {"memory": settings.memory_limit},
                        },
                        "volumeMounts": mounts,
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                    "volumes": volumes,
                },
            },
        },
    });
    let mut job: Job = serde_json::from_value(doc).expect("the Job document matches batch/v1");
    let pod = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("the Job has a pod template");
    placement::place(pod, class_name, &request.device_class.spec)
        .expect("the Job's pod has no node selector of its own to contradict the class's");
    job
}

/// What a Job's status (and its pod's termination message) says.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Running,
    Succeeded(Box<OptimizationResult>),
    FloorNotMet(String),
    BudgetNotMet(String),
    Failed(String),
}

fn percent(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "?".into())
}

/// How the last pod of a Job ended: the kubelet's reason (`Error`, `OOMKilled`, …), the exit
/// code and the termination message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodEnd {
    pub reason: Option<String>,
    pub exit_code: i32,
    pub message: Option<String>,
}

/// The memory limit of the Job's optimizer container, as written.
fn memory_limit(job: &Job) -> Option<String> {
    let spec = job.spec.as_ref()?.template.spec.as_ref()?;
    let c = spec.containers.iter().find(|c| c.name == CONTAINER)?;
    Some(
        c.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")?
            .0
            .clone(),
    )
}

/// Reads a Job's conditions and how its last pod ended.
pub fn job_state(job: &Job, pod: Option<&PodEnd>) -> JobState {
    let message = pod.and_then(|p| p.message.as_deref());
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let holds = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let result: Option<OptimizationResult> =
        message.and_then(|m| serde_json::from_str(m.trim()).ok());
    if holds("Complete").is_some() {
        return match result {
            Some(r) if r.verdict == Verdict::Passed && r.artifact.is_some() => {
                JobState::Succeeded(Box::new(r))
            }
            _ => JobState::Failed(format!(
                "Job {} completed without a published artifact in its result: {}",
                job.name_any(),
                message.unwrap_or("(no termination message)")
            )),
        };
    }
    if let Some(failed) = holds("Failed") {
        if pod.and_then(|p| p.reason.as_deref()) == Some("OOMKilled") {
            return JobState::Failed(format!(
                "Job {}: the optimizer was OOM-killed at its memory limit of {} (raise the operator's --optimizer-memory-limit, or the chart's optimizer.resources)",
                job.name_any(),
                memory_limit(job).as_deref().unwrap_or("(none)")
            ));
        }
        return match result {
            Some(r) if r.verdict == Verdict::AccuracyFloorNotMet => JobState::FloorNotMet(format!(
                "best candidate {} reached {} top-1, below the required {}",
                r.best_technique.as_deref().unwrap_or("?"),
                percent(r.best_accuracy),
                percent(r.required_accuracy)
            )),
            Some(r) if r.verdict == Verdict::BudgetNotMet => JobState::BudgetNotMet(format!(
                "every candidate that reached the required {} top-1 exceeded a budget of the device class: {}",
                percent(r.required_accuracy),
                r.over_budget.as_deref().unwrap_or("?")
            )),
            Some(r) if r.error.is_some() => JobState::Failed(format!(
                "Job {}: {}",
                job.name_any(),
                r.error.unwrap_or_default()
            )),
            _ => JobState::Failed(format!(
                "Job {} failed ({}): {}{}",
                job.name_any(),
                failed.reason.as_deref().unwrap_or("Failed"),
                failed.message.as_deref().unwrap_or(""),
                message
                    .map(|m| format!("; last output: {}", m.trim()))
                    .unwrap_or_default()
            )),
        };
    }
    JobState::Running
}

/// Checks that a registry artifact is the one these inputs produced for this class, and that
/// the accuracy it records meets the EdgeModel's requirement (`floor`, `maxDrop`): annotations
/// are what anyone who can push may write, so a reused artifact must also verify its signature
/// (`Registry::verify_signature`) when the EdgeModel has a key.
pub fn verify(
    artifact: &Artifact,
    class: &str,
    inputs: &Digest,
    requirement: &AccuracySpec,
) -> Result<(), String> {
    let Some(facts) = &artifact.facts else {
        return Err(format!(
            "artifact {} carries no edgefleet annotations",
            artifact.digest
        ));
    };
    if facts.device_class != class {
        return Err(format!(
            "artifact {} is for device class {:?}, not {class:?}",
            artifact.digest, facts.device_class
        ));
    }
    if facts.inputs_digest.as_ref() != Some(inputs) {
        return Err(format!(
            "artifact {} was built from other inputs ({} is {:?}, want {inputs})",
            artifact.digest,
            media::INPUTS_DIGEST,
            facts.inputs_digest.as_ref().map(Digest::to_string)
        ));
    }
    const SLACK: f64 = 1e-9;
    // Written so that a NaN anywhere fails the check.
    let meets_floor = |floor: f64| facts.accuracy + SLACK >= floor;
    if let Some(floor) = requirement.floor
        && !meets_floor(floor)
    {
        return Err(format!(
            "artifact {} records accuracy {:.4}, below spec.accuracy.floor {floor}",
            artifact.digest, facts.accuracy
        ));
    }
    if let Some(max_drop) = requirement.max_drop {
        let Some(base) = facts.base_accuracy else {
            return Err(format!(
                "artifact {} records no base accuracy ({}), so spec.accuracy.maxDrop cannot be checked",
                artifact.digest,
                media::BASE_ACCURACY
            ));
        };
        let within = base - facts.accuracy <= max_drop + SLACK;
        if !within {
            return Err(format!(
                "artifact {} records accuracy {:.4}, {:.4} below its base {base:.4}: more than spec.accuracy.maxDrop {max_drop}",
                artifact.digest,
                facts.accuracy,
                base - facts.accuracy
            ));
        }
    }
    Ok(())
}

/// The status entry for a verified artifact.
pub fn published(
    artifact: &Artifact,
    repository: &str,
    public_key: Option<&PublicKey>,
) -> PublishedArtifact {
    let facts = artifact.facts.clone().unwrap_or_default();
    let base = facts.base_accuracy.unwrap_or(facts.accuracy);
    let raw = artifact
        .manifest
        .annotations
        .get(media::MODEL_BYTES)
        .and_then(|v| v.parse().ok())
        .unwrap_or(artifact.model.descriptor.size);
    PublishedArtifact {
        digest: artifact.digest.to_string(),
        reference: format!("{repository}@{}", artifact.digest),
        technique: facts.technique,
        runtime: facts.runtime,
        bytes: raw,
        bytes_compressed: artifact.model.descriptor.size,
        accuracy: facts.accuracy,
        base_accuracy: base,
        accuracy_drop: ((base - facts.accuracy) * 1e6).round() / 1e6,
        latency_ms_p50: facts.latency_ms_p50,
        gated_on: facts.gated_on,
        public_key: public_key.map(PublicKey::to_pem),
    }
}

/// Where one device class stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassPhase {
    Optimizing {
        job: String,
    },
    Published {
        artifact: PublishedArtifact,
        reused: bool,
    },
    FloorNotMet(String),
    BudgetNotMet(String),
    Failed(String),
}

impl ClassPhase {
    /// The word the status shows.
    pub fn word(&self) -> DeviceClassPhase {
        match self {
            ClassPhase::Optimizing { .. } => DeviceClassPhase::Optimizing,
            ClassPhase::Published { .. } => DeviceClassPhase::Published,
            ClassPhase::FloorNotMet(_) => DeviceClassPhase::AccuracyFloorNotMet,
            ClassPhase::BudgetNotMet(_) => DeviceClassPhase::BudgetNotMet,
            ClassPhase::Failed(_) => DeviceClassPhase::Failed,
        }
    }
}

/// The EdgeModel's conditions and phase from every class's phase.
pub fn summarize(classes: &[(String, ClassPhase)]) -> crate::resolve::Outcome {
    let stuck: Vec<_> = classes
        .iter()
        .filter_map(|(n, p)| match p {
            ClassPhase::FloorNotMet(m) => Some((reasons::ACCURACY_FLOOR_NOT_MET, n, m)),
            ClassPhase::BudgetNotMet(m) => Some((reasons::BUDGET_NOT_MET, n, m)),
            ClassPhase::Failed(m) => Some((reasons::OPTIMIZATION_FAILED, n, m)),
            _ => None,
        })
        .collect();
    let running: Vec<&str> = classes
        .iter()
        .filter(|(_, p)| matches!(p, ClassPhase::Optimizing { .. }))
        .map(|(n, _)| n.as_str())
        .collect();
    let done: Vec<&str> = classes
        .iter()
        .filter(|(_, p)| matches!(p, ClassPhase::Published { .. }))
        .map(|(n, _)| n.as_str())
        .collect();
    let all_done = done.len() == classes.len();
    let published = Desired::new(
        types::PUBLISHED,
        all_done,
        if all_done {
            reasons::PUBLISHED
        } else {
            reasons::OPTIMIZING
        },
        format!(
            "published for {}/{} device classes",
            done.len(),
            classes.len()
        ),
    );
    if let Some((reason, class, message)) = stuck.first() {
        let message = format!("device class {class}: {message}");
        return crate::resolve::Outcome {
            phase: Phase::Stalled,
            conditions: vec![
                Desired::new(types::READY, false, reason, message.clone()),
                Desired::new(types::STALLED, true, reason, message.clone()),
                Desired::new(
                    types::RECONCILING,
                    !running.is_empty(),
                    reasons::OPTIMIZING,
                    if running.is_empty() {
                        String::new()
                    } else {
                        format!("optimizing for {}", running.join(", "))
                    },
                ),
                Desired::new(types::OPTIMIZED, false, reason, message.clone()),
                published,
            ],
            problem: Some((reason, message)),
        };
    }
    if !all_done {
        let message = format!("optimizing for {}", running.join(", "));
        return crate::resolve::Outcome {
            phase: Phase::Optimizing,
            conditions: vec![
                Desired::new(types::READY, false, reasons::OPTIMIZING, message.clone()),
                Desired::new(types::STALLED, false, reasons::OPTIMIZING, ""),
                Desired::new(
                    types::RECONCILING,
                    true,
                    reasons::OPTIMIZING,
                    message.clone(),
                ),
                Desired::new(types::OPTIMIZED, false, reasons::OPTIMIZING, message),
                published,
            ],
            problem: None,
        };
    }
    let message = format!("published for {}", done.join(", "));
    crate::resolve::Outcome {
        phase: Phase::Ready,
        conditions: vec![
            Desired::new(types::READY, true, reasons::PUBLISHED, message.clone()),
            Desired::new(types::STALLED, false, reasons::PUBLISHED, ""),
            Desired::new(types::RECONCILING, false, reasons::PUBLISHED, ""),
            Desired::new(types::OPTIMIZED, true, reasons::OPTIMIZED, message),
            published,
        ],
        problem: None,
    }
}

/// Sources that could not be resolved: retry later, keep whatever was published.
/// kstatus (Flux, kpt, `kubectl wait`) reads `Reconciling` and `Stalled`: a published model
/// is still reconciling while its rollout moves (or waits at a pause or gate), and stalled when
/// the rollout aborted or missed its progress deadline. Before publication the pipeline's own
/// conditions stand.
pub fn with_rollout(
    mut outcome: crate::resolve::Outcome,
    rollout: Option<&edgefleet_api::edgemodel::RolloutSummary>,
) -> crate::resolve::Outcome {
    let Some(r) = rollout else {
        return outcome;
    };
    let published = outcome
        .conditions
        .iter()
        .any(|c| c.type_ == types::READY && c.status);
    if !published {
        return outcome;
    }
    // While moving, a message that changes only with the step (not the pause countdown the
    // rollout's own fields carry), so this adds no status write per second; once stopped, why.
    let moving = match &r.step {
        Some(step) => format!("rollout {} at step {step}", r.state.as_str().to_lowercase()),
        None => format!("rollout {}", r.state.as_str().to_lowercase()),
    };
    let why = r.waiting_for.clone().unwrap_or_else(|| moving.clone());
    let (type_, reason, message) = match r.state {
        RolloutState::Progressing | RolloutState::Waiting | RolloutState::Paused => {
            (types::RECONCILING, reasons::ROLLING_OUT, moving)
        }
        RolloutState::Aborted => (types::STALLED, reasons::ROLLOUT_ABORTED, why),
        RolloutState::Stalled => (types::STALLED, reasons::ROLLOUT_STALLED, why),
        RolloutState::Complete | RolloutState::Idle => return outcome,
    };
    for c in outcome.conditions.iter_mut().filter(|c| c.type_ == type_) {
        *c = Desired::new(type_, true, reason, message.clone());
    }
    outcome
}

pub fn sources_unavailable(message: &str) -> crate::resolve::Outcome {
    crate::resolve::Outcome {
        phase: Phase::Pending,
        conditions: vec![
            Desired::new(types::READY, false, reasons::SOURCE_UNAVAILABLE, message),
            Desired::new(types::STALLED, false, reasons::SOURCE_UNAVAILABLE, ""),
            Desired::new(
                types::RECONCILING,
                true,
                reasons::SOURCE_UNAVAILABLE,
                message,
            ),
        ],
        problem: Some((reasons::SOURCE_UNAVAILABLE, message.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn model() -> EdgeModel {
        let mut m: EdgeModel = serde_json::from_value(serde_json::json!({
            "apiVersion": "edgefleet.dev/v1alpha1", "kind": "EdgeModel",
            "metadata": {"name": "fashion", "namespace": "vision", "uid": "u-1"},
            "spec": {
                "source": {"oci": "reg:5000/base/net:v1"},
                "deviceClasses": ["cpu-int8"],
                "accuracy": {"floor": 0.85, "maxDrop": 0.01,
                    "dataset": {"source": {"url": "https://data.example/x.npz", "sha256": "ab".repeat(32)}},
                    "preprocessing": {"colorMode": "grayscale", "mean": [0.286], "std": [0.353]}},
                "optimization": {"techniques": ["int8Static", "clustering"], "objective": "smallest", "timeBudget": "20m"},
                "publish": {"repository": "reg:5000/models/fashion", "credentialsSecret": "creds", "plainHttp": true},
            }
        }))
        .unwrap();
        m.metadata.uid = Some("u-1".into());
        m
    }

    fn class() -> DeviceClassSpec {
        serde_json::from_value(
            serde_json::json!({"arch": ["amd64"], "runtime": "tract", "precisions": ["int8", "fp32"]}),
        )
        .unwrap()
    }

    #[test]
    fn a_published_model_reconciles_while_its_rollout_moves_and_stalls_when_it_aborts() {
        use edgefleet_api::edgemodel::RolloutSummary;
        let published = || {
            let mut o = sources_unavailable("x");
            o.conditions = vec![
                Desired::new(types::READY, true, reasons::PUBLISHED, "published"),
                Desired::new(types::STALLED, false, reasons::PUBLISHED, ""),
                Desired::new(types::RECONCILING, false, reasons::PUBLISHED, ""),
            ];
            o
        };
        let rollout = |state: RolloutState, waiting: Option<&str>| RolloutSummary {
            state,
            step: Some("1/3".into()),
            waiting_for: waiting.map(String::from),
            ..Default::default()
        };
        let get = |o: &crate::resolve::Outcome, t: &str| {
            let c = o.conditions.iter().find(|c| c.type_ == t).unwrap();
            (c.status, c.reason, c.message.clone())
        };
        let o = with_rollout(
            published(),
            Some(&rollout(
                RolloutState::Progressing,
                Some("step 1/3: 2 of 5 pods ready"),
            )),
        );
        assert_eq!(
            get(&o, types::RECONCILING),
            (
                true,
                reasons::ROLLING_OUT,
                "rollout progressing at step 1/3".into()
            )
        );
        // A pause's countdown does not change the condition (no extra status write a second).
        let ticking = |left: u32| {
            let waiting = format!("cpu-int8: pause after step 1 (20%): {left}s left");
            get(
                &with_rollout(
                    published(),
                    Some(&rollout(RolloutState::Waiting, Some(&waiting))),
                ),
                types::RECONCILING,
            )
        };
        assert_eq!(ticking(12), ticking(11));
        assert!(!get(&o, types::STALLED).0);
        for state in [RolloutState::Waiting, RolloutState::Paused] {
            assert!(
                get(
                    &with_rollout(published(), Some(&rollout(state, None))),
                    types::RECONCILING
                )
                .0
            );
        }
        let o = with_rollout(
            published(),
            Some(&rollout(RolloutState::Aborted, Some("p99 120 ms > 50 ms"))),
        );
        assert_eq!(
            get(&o, types::STALLED),
            (true, reasons::ROLLOUT_ABORTED, "p99 120 ms > 50 ms".into())
        );
        assert!(!get(&o, types::RECONCILING).0);
        assert_eq!(
            get(
                &with_rollout(published(), Some(&rollout(RolloutState::Stalled, None))),
                types::STALLED
            )
            .1,
            reasons::ROLLOUT_STALLED
        );
        // Done, idle, or no rollout yet: the pipeline's conditions stand.
        for r in [
            Some(rollout(RolloutState::Complete, None)),
            Some(rollout(RolloutState::Idle, None)),
            None,
        ] {
            let o = with_rollout(published(), r.as_ref());
            assert!(!get(&o, types::RECONCILING).0 && !get(&o, types::STALLED).0);
        }
        // Not published yet: the rollout says nothing about it.
        let optimizing = sources_unavailable("registry down");
        let o = with_rollout(
            optimizing.clone(),
            Some(&rollout(RolloutState::Aborted, None)),
        );
        assert_eq!(o.conditions, optimizing.conditions);
    }

    #[test]
    fn sources_pin_by_digest() {
        let d = "ab".repeat(32);
        let oci = BlobSource {
            oci: Some(format!("reg:5000/base/net@sha256:{d}")),
            ..Default::default()
        };
        assert_eq!(
            pin_static(&oci).unwrap().location,
            format!("oci://reg:5000/base/net@sha256:{d}")
        );
        let tagged = BlobSource {
            oci: Some("reg:5000/base/net:v1".into()),
            ..Default::default()
        };
        assert!(
            pin_static(&tagged).is_none(),
            "a tag must be resolved first"
        );
        let digest: Digest = format!("sha256:{d}").parse().unwrap();
        assert_eq!(
            pin_resolved("reg:5000/base/net:v1", digest.clone()).location,
            format!("oci://reg:5000/base/net@sha256:{d}")
        );
        assert_eq!(
            pin_resolved("reg:5000/base/net", digest).location,
            format!("oci://reg:5000/base/net@sha256:{d}")
        );
        let url = BlobSource {
            url: Some("https://x/m.onnx".into()),
            sha256: Some(d.clone()),
            ..Default::default()
        };
        assert_eq!(pin_static(&url).unwrap().url_sha256, Some(d));
    }

    fn pinned() -> (Pinned, Pinned) {
        let m = model();
        (
            pin_resolved("reg:5000/base/net:v1", Digest::of(b"model")),
            pin_static(&m.spec.accuracy.dataset.source).unwrap(),
        )
    }

    #[test]
    fn the_request_carries_every_input_and_its_digest_only_those() {
        let m = model();
        let (base, data) = pinned();
        let r = request(&m, "cpu-int8", &class(), &base, &data);
        assert_eq!(r.model.location, base.location);
        assert_eq!(r.dataset.digest, format!("sha256:{}", "ab".repeat(32)));
        assert_eq!(r.device_class.name, "cpu-int8");
        assert_eq!(r.optimization.techniques, m.spec.optimization.techniques);
        assert_eq!(r.publish, None);
        let key = inputs_digest(&r);
        assert_eq!(
            key,
            inputs_digest(&request(&m, "cpu-int8", &class(), &base, &data))
        );
        let other = pin_resolved("reg:5000/base/net:v1", Digest::of(b"other"));
        assert_ne!(
            key,
            inputs_digest(&request(&m, "cpu-int8", &class(), &other, &data))
        );
        assert_ne!(
            key,
            inputs_digest(&request(&m, "cpu-int8-b", &class(), &base, &data))
        );
        let mut floor = m.clone();
        floor.spec.accuracy.floor = Some(0.86);
        assert_ne!(
            key,
            inputs_digest(&request(&floor, "cpu-int8", &class(), &base, &data))
        );
        // Rollout settings do not change what gets built.
        let mut rollout = m.clone();
        rollout.spec.rollout.paused = true;
        assert_eq!(
            key,
            inputs_digest(&request(&rollout, "cpu-int8", &class(), &base, &data))
        );
    }

    #[test]
    fn the_job_runs_where_the_class_runs_with_that_architectures_optimizer() {
        let m = model();
        let (base, data) = pinned();
        let settings = JobSettings {
            image: "reg/optimizer@sha256:index".into(),
            platform_images: vec![
                (Arch::Amd64, "reg/optimizer@sha256:amd".into()),
                (Arch::Arm64, "reg/optimizer@sha256:arm".into()),
            ],
            ..Default::default()
        };
        let placed = |spec: DeviceClassSpec| {
            let r = request(&m, "pi", &spec, &base, &data);
            let key = inputs_digest(&r);
            let run = ClassRun {
                model: &m,
                request: &r,
                inputs: &key,
                time_budget_seconds: 60,
                signing_secret: None,
            };
            job(run, &settings).spec.unwrap().template.spec.unwrap()
        };
        let arch_of = |pod: &k8s_openapi::api::core::v1::PodSpec| {
            let e = &placement::terms(pod)[0].match_expressions.as_ref().unwrap()[0];
            (e.key.clone(), e.values.clone().unwrap())
        };
        let mut arm = class();
        arm.arch = vec![Arch::Arm64];
        arm.node_selector = [("edgefleet.dev/device-class".to_string(), "pi".to_string())].into();
        let pod = placed(arm);
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("reg/optimizer@sha256:arm")
        );
        assert_eq!(
            arch_of(&pod),
            ("kubernetes.io/arch".to_string(), vec!["arm64".to_string()])
        );
        assert_eq!(
            pod.node_selector.unwrap()["edgefleet.dev/device-class"],
            "pi"
        );
        // A class of several architectures runs the index on a node of any of them.
        let mut both = class();
        both.arch = vec![Arch::Arm64, Arch::Amd64];
        let pod = placed(both);
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("reg/optimizer@sha256:index")
        );
        assert_eq!(arch_of(&pod).1, ["arm64", "amd64"]);
        assert_eq!(pod.node_selector, None);
    }

    #[test]
    fn job_names_are_dns_labels() {
        let key = Digest::of(b"k");
        let n = job_name("fashion", "cpu-int8", &key);
        assert_eq!(n, format!("fashion-cpu-int8-{}", &key.hex()[..8]));
        let long = job_name(&"m".repeat(80), "gpu.fp16", &key);
        assert!(long.len() <= 63 && !long.contains('.'), "{long}");
        assert_eq!(
            artifact_tag("cpu-int8", &key),
            format!("cpu-int8-{}", &key.hex()[..16])
        );
    }

    #[test]
    fn the_job_runs_the_optimizer_with_the_request() {
        let m = model();
        let (base, data) = pinned();
        let r = request(&m, "cpu-int8", &class(), &base, &data);
        let key = inputs_digest(&r);
        let run = ClassRun {
            model: &m,
            request: &r,
            inputs: &key,
            time_budget_seconds: 1200,
            signing_secret: Some("signing"),
        };
        let job = job(run, &JobSettings::default());
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(1800));
        assert_eq!(spec.backoff_limit, Some(2));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("EdgeModel", "u-1", Some(true))
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some(SERVICE_ACCOUNT));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        let args = c.args.clone().unwrap();
        assert_eq!(args[0], "job");
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        // One document: the request, plus where to publish (the tag names the inputs).
        let sent: OptimizationRequest = serde_json::from_str(&after("--request")).unwrap();
        assert_eq!(sent.inputs_digest(), key.to_string());
        let publish = sent.publish.clone().unwrap();
        assert_eq!(
            publish.target,
            format!("reg:5000/models/fashion:{}", artifact_tag("cpu-int8", &key))
        );
        assert_eq!(publish.name.as_deref(), Some("fashion"));
        assert_eq!(
            publish.signing_key,
            Some(format!("{SIGNING_KEY_DIR}/{SIGNING_PRIVATE_KEY}"))
        );
        // Only the private key is mounted, read-only, from the named Secret.
        let signing = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "signing")
            .and_then(|v| v.secret.clone())
            .unwrap();
        assert_eq!(signing.secret_name.as_deref(), Some("signing"));
        let items = signing.items.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, SIGNING_PRIVATE_KEY);
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "signing")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (SIGNING_KEY_DIR, Some(true))
        );
        assert_eq!(
            OptimizationRequest {
                publish: None,
                ..sent
            },
            r
        );
        assert_eq!(after("--result-file"), "/dev/termination-log");
        assert_eq!(after("--plain-http"), "reg:5000");
        assert_eq!(
            after("--registry-config"),
            format!("{REGISTRY_CONFIG_DIR}/config.json")
        );
        let secret = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "registry")
            .unwrap();
        assert_eq!(
            secret.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("creds")
        );
        let rules = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(rules.action, "FailJob");
        assert_eq!(
            rules.on_exit_codes.as_ref().unwrap().values,
            vec![
                edgefleet_api::job::EXIT_FLOOR_NOT_MET as i32,
                edgefleet_api::job::EXIT_BUDGET_NOT_MET as i32
            ]
        );
    }

    /// The root filesystem is read-only, so every place the optimizer writes (its output, its
    /// cache and the temporary directory the memory probe uses) must lie on a writable mount.
    #[test]
    fn everything_the_optimizer_writes_is_on_a_writable_volume() {
        let job = job_for_test();
        let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
        let security = c.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let writable: Vec<String> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.read_only != Some(true))
            .map(|m| m.mount_path.clone())
            .collect();
        let on_writable = |path: &str| {
            writable
                .iter()
                .any(|w| path == w || path.starts_with(&format!("{w}/")))
        };
        let args = c.args.clone().unwrap();
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        for flag in ["--out", "--cache"] {
            assert!(
                on_writable(&after(flag)),
                "{flag} {} is read-only",
                after(flag)
            );
        }
        let tmp = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "TMPDIR")
            .and_then(|e| e.value.clone())
            .expect("TMPDIR is set: /tmp is on the read-only root");
        assert!(on_writable(&tmp), "TMPDIR {tmp} is read-only");
    }

    fn finished(kind: &str) -> Job {
        Job {
            metadata: kube::api::ObjectMeta {
                name: Some("j".into()),
                ..Default::default()
            },
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: kind.into(),
                    status: "True".into(),
                    reason: Some("BackoffLimitExceeded".into()),
                    message: Some("Job has reached the specified backoff limit".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ended(message: &str) -> PodEnd {
        PodEnd {
            reason: Some("Error".into()),
            exit_code: 1,
            message: Some(message.into()),
        }
    }

    #[test]
    fn job_states() {
        assert_eq!(job_state(&Job::default(), None), JobState::Running);
        let job_state =
            |job: &Job, message: Option<&str>| job_state(job, message.map(ended).as_ref());
        let ok = r#"{"verdict":"passed","artifact":{"reference":"r@sha256:x","digest":"sha256:x"},"bestAccuracy":0.89}"#;
        assert!(
            matches!(job_state(&finished("Complete"), Some(ok)), JobState::Succeeded(r) if r.best_accuracy == Some(0.89))
        );
        assert!(matches!(
            job_state(&finished("Complete"), None),
            JobState::Failed(_)
        ));
        let budget = r#"{"verdict":"BudgetNotMet","requiredAccuracy":0.84,"overBudget":"int8-static: p50 3.100 ms exceeds latencyBudgetMs 2"}"#;
        match job_state(&finished("Failed"), Some(budget)) {
            JobState::BudgetNotMet(m) => assert!(
                m.contains("84.00%")
                    && m.contains("int8-static: p50 3.100 ms exceeds latencyBudgetMs 2"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let floor = r#"{"verdict":"AccuracyFloorNotMet","bestAccuracy":0.7412,"bestTechnique":"full-integer","requiredAccuracy":0.84}"#;
        match job_state(&finished("Failed"), Some(floor)) {
            JobState::FloorNotMet(m) => assert!(
                m.contains("74.12%") && m.contains("84.00%") && m.contains("full-integer"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        match job_state(&finished("Failed"), Some("thread panicked")) {
            JobState::Failed(m) => assert!(
                m.contains("BackoffLimitExceeded") && m.contains("thread panicked"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    fn job_for_test() -> Job {
        let m = model();
        let (base, data) = pinned();
        let r = request(&m, "cpu-int8", &class(), &base, &data);
        let key = inputs_digest(&r);
        let run = ClassRun {
            model: &m,
            request: &r,
            inputs: &key,
            time_budget_seconds: 1200,
            signing_secret: None,
        };
        job(run, &JobSettings::default())
    }

    #[test]
    fn an_unsigned_job_mounts_no_key_and_names_none() {
        let job = job_for_test();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert!(pod.volumes.iter().flatten().all(|v| v.name != "signing"));
        let args = pod.containers[0].args.clone().unwrap();
        let i = args.iter().position(|a| a == "--request").unwrap();
        let sent: OptimizationRequest = serde_json::from_str(&args[i + 1]).unwrap();
        assert_eq!(sent.publish.unwrap().signing_key, None);
    }

    #[test]
    fn only_pods_the_job_controls_count() {
        let pod = |controller: Option<bool>, kind: &str, uid: &str| {
            let mut p = k8s_openapi::api::core::v1::Pod::default();
            p.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: kind.into(),
                    name: "j".into(),
                    uid: uid.into(),
                    controller,
                    ..Default::default()
                },
            ]);
            p
        };
        assert!(owned_by_job(&pod(Some(true), "Job", "u1"), "u1"));
        assert!(!owned_by_job(&pod(Some(true), "Job", "u2"), "u1"));
        assert!(!owned_by_job(&pod(None, "Job", "u1"), "u1"));
        assert!(!owned_by_job(&pod(Some(true), "ReplicaSet", "u1"), "u1"));
        // A pod labelled job-name=… by hand, with no owner: not the Job's.
        assert!(!owned_by_job(&Default::default(), "u1"));
    }

    #[test]
    fn a_recorded_accuracy_below_the_requirement_is_refused() {
        let inputs: Digest = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let artifact = |accuracy: f64, base: Option<f64>| {
            let facts = edgefleet_artifact::Facts {
                device_class: "cpu".into(),
                runtime: "tract".into(),
                technique: "int8".into(),
                accuracy,
                base_accuracy: base,
                inputs_digest: Some(inputs.clone()),
                ..Default::default()
            };
            let contents = edgefleet_artifact::manifest::Contents {
                model: b"onnx",
                ..Default::default()
            };
            let packed = edgefleet_artifact::pack(&contents, &facts, Default::default()).unwrap();
            edgefleet_artifact::unpack("r", packed.digest.clone(), &packed.manifest_bytes).unwrap()
        };
        let spec = |floor: Option<f64>, max_drop: Option<f64>| AccuracySpec {
            floor,
            max_drop,
            ..model().spec.accuracy
        };
        let ok = |a: &Artifact, s: &AccuracySpec| verify(a, "cpu", &inputs, s);
        assert_eq!(
            ok(&artifact(0.90, Some(0.91)), &spec(Some(0.90), Some(0.01))),
            Ok(())
        );
        let low = ok(&artifact(0.80, Some(0.91)), &spec(Some(0.85), None)).unwrap_err();
        assert!(low.contains("below spec.accuracy.floor 0.85"), "{low}");
        let dropped = ok(&artifact(0.88, Some(0.91)), &spec(None, Some(0.01))).unwrap_err();
        assert!(dropped.contains("spec.accuracy.maxDrop 0.01"), "{dropped}");
        let no_base = ok(&artifact(0.88, None), &spec(None, Some(0.01))).unwrap_err();
        assert!(no_base.contains("no base accuracy"), "{no_base}");
        assert!(ok(&artifact(0.99, Some(0.99)), &spec(None, None)).is_ok());
        assert!(ok(&artifact(0.99, Some(0.99)), &spec(None, None)).is_ok());
        assert!(verify(&artifact(0.99, None), "gpu", &inputs, &spec(None, None)).is_err());
    }

    #[test]
    fn an_oom_killed_optimizer_is_named_with_its_limit() {
        let mut job = finished("Failed");
        job.spec = job_for_test().spec;
        let killed = PodEnd {
            reason: Some("OOMKilled".into()),
            exit_code: 137,
            message: None,
        };
        match super::job_state(&job, Some(&killed)) {
            JobState::Failed(m) => assert!(
                m.contains("OOM-killed") && m.contains("memory limit of 4Gi"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn summary_conditions() {
        let art = PublishedArtifact::default();
        let done = (
            "a".to_string(),
            ClassPhase::Published {
                artifact: art.clone(),
                reused: false,
            },
        );
        let running = ("b".to_string(), ClassPhase::Optimizing { job: "j".into() });
        let failed = ("c".to_string(), ClassPhase::FloorNotMet("best 70%".into()));
        let o = summarize(std::slice::from_ref(&done));
        assert_eq!(o.phase, Phase::Ready);
        assert!(
            o.conditions
                .iter()
                .any(|c| c.type_ == types::READY && c.status)
        );
        let o = summarize(&[done.clone(), running.clone()]);
        assert_eq!(o.phase, Phase::Optimizing);
        assert!(
            o.conditions
                .iter()
                .any(|c| c.type_ == types::PUBLISHED && !c.status && c.message.contains("1/2"))
        );
        let o = summarize(&[done, running, failed]);
        assert_eq!(o.phase, Phase::Stalled);
        let stalled = o
            .conditions
            .iter()
            .find(|c| c.type_ == types::STALLED)
            .unwrap();
        assert!(
            stalled.status
                && stalled.reason == reasons::ACCURACY_FLOOR_NOT_MET
                && stalled.message.contains("device class c")
        );
        assert!(
            o.conditions
                .iter()
                .any(|c| c.type_ == types::RECONCILING && c.status),
            "b still runs"
        );
    }
}
