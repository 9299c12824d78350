//! Sidecar injection, the pure decision: given a Pod being created, add the inference sidecar
//! (or say why not). The webhook (`webhook.rs`) turns the result into a JSON patch.
//!
//! A pod opts in with the label `edgefleet.dev/model=<EdgeModel>`. It gets:
//! - the `edgefleet-sidecar` container: a native sidecar (an init container with
//!   `restartPolicy: Always`, started before the app and stopped after it) where the cluster
//!   supports it (Kubernetes 1.29+), else a regular container;
//! - args naming the model and the pod's own `ModelAssignment`; `POD_NAME`, `POD_NAMESPACE`
//!   and `NODE_NAME` from the downward API;
//! - a cache volume (`emptyDir`) for artifacts, resources, liveness and readiness probes, a
//!   locked-down security context;
//! - the ServiceAccount `edgefleet-sidecar` when the pod uses the namespace's default one; its
//!   token (how the sidecar reads its assignment and reports) is then mounted into the sidecar
//!   only: the pod's automount is turned off and a projected token, with the cluster's CA and
//!   the namespace, is mounted where in-cluster clients look for it. The API server lets that
//!   token write only this pod's `ModelAssignment` status (`examples/sidecar-policy.yaml`). A
//!   pod with its own account keeps it (its apps may need it); that account needs the sidecar's
//!   Role (`examples/sidecar-rbac.yaml`).
//!
//! The port defaults to 8500 and is set with the annotation `edgefleet.dev/sidecar-port`.
//!
//! A pod that also carries `edgefleet.dev/device-class=<class>` is placed on that class's
//! nodes: its `nodeSelector` and a required `kubernetes.io/arch` affinity ([`crate::placement`]).

use edgefleet_api::deviceclass::{Arch, DeviceClassSpec};
use edgefleet_api::labels;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
    DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The opt-in label (the same one the pipeline and the rollout use).
pub const CONTAINER: &str = "edgefleet-sidecar";
pub const CACHE_VOLUME: &str = "edgefleet-cache";
/// The sidecar's own ServiceAccount token (when the webhook chose the account).
pub const TOKEN_VOLUME: &str = "edgefleet-sidecar-token";
/// Where in-cluster clients read the token, the CA and the namespace.
pub const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const CACHE_PATH: &str = "/var/cache/edgefleet";
pub const DEFAULT_PORT: i32 = 8500;

/// What every injected sidecar gets; from the operator's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The sidecar image: an image index, from which each node pulls its own platform's image.
    pub image: String,
    /// One architecture's image of that index, by digest: given to the pods of a device class
    /// of that architecture only, so their spec names exactly what their nodes run.
    pub platform_images: Vec<(Arch, String)>,
    pub service_account: String,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    /// `sizeLimit` of the cache volume.
    pub cache_size: String,
    /// Registries the sidecar may reach over plain HTTP (trusted networks only).
    pub plain_http: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image: format!("ghcr.io/edgefleet/sidecar:{}", env!("CARGO_PKG_VERSION")),
            platform_images: Vec::new(),
            service_account: "edgefleet-sidecar".into(),
            cpu_request: "50m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
            cache_size: "1Gi".into(),
            plain_http: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Leave the pod as it is, for this reason.
    Skip(String),
    /// Admit the pod changed to this.
    Inject(Box<Pod>),
    /// Refuse the pod with this message (names the field).
    Deny(String),
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn downward(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(path: &str, port: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// The sidecar container for `model` on `port`.
pub fn container(model: &str, port: i32, settings: &Settings, native: bool) -> Container {
    Container {
        name: CONTAINER.into(),
        image: Some(settings.image.clone()),
        args: Some(
            [
                "serve",
                "--name",
                model,
                "--assignment",
                "$(POD_NAME)",
                "--namespace",
                "$(POD_NAMESPACE)",
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--cache",
                CACHE_PATH,
            ]
            .map(String::from)
            .into_iter()
            .chain(
                settings
                    .plain_http
                    .iter()
                    .flat_map(|r| ["--plain-http".to_string(), r.clone()]),
            )
            .collect(),
        ),
        env: Some(vec![
            downward("POD_NAME", "metadata.name"),
            downward("POD_NAMESPACE", "metadata.namespace"),
            downward("NODE_NAME", "spec.nodeName"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("edgefleet".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity(&settings.cpu_request)),
                ("memory".into(), quantity(&settings.memory_request)),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                quantity(&settings.memory_limit),
            )])),
            ..Default::default()
        }),
        liveness_probe: Some(probe("/v2/health/live", port, 10)),
        // Ready once a model serves: the pod is not Ready before it can answer.
        readiness_probe: Some(probe("/v2/health/ready", port, 5)),
        volume_mounts: Some(vec![VolumeMount {
            name: CACHE_VOLUME.into(),
            mount_path: CACHE_PATH.into(),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        restart_policy: native.then(|| "Always".to_string()),
        ..Default::default()
    }
}

/// The whole decision. `native`: the cluster runs native sidecars (Kubernetes 1.29+).
/// `classes` looks a DeviceClass up by name: a pod labelled `edgefleet.dev/device-class` is
/// placed on that class's nodes ([`crate::placement`]), and refused when there is no such class.
pub fn decide(
    pod: &Pod,
    settings: &Settings,
    native: bool,
    classes: &dyn Fn(&str) -> Option<DeviceClassSpec>,
) -> Decision {
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    let Some(model) = pod_labels.get(labels::MODEL) else {
        return Decision::Skip(format!("no {} label", labels::MODEL));
    };
    if model.is_empty() {
        return Decision::Deny(format!(
            "metadata.labels[{}] must name the EdgeModel this pod serves",
            labels::MODEL
        ));
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::Deny("spec: a pod needs a spec".into());
    };
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    if all.clone().any(|c| c.name == CONTAINER) {
        return Decision::Skip("the sidecar is already there".into());
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let port = match annotations.get(labels::SIDECAR_PORT) {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<i32>() {
            Ok(p) if (1..=65535).contains(&p) => p,
            _ => {
                return Decision::Deny(format!(
                    "metadata.annotations[{}]: {p:?} is not a port number (1-65535)",
                    labels::SIDECAR_PORT
                ));
            }
        },
    };
    for (i, c) in spec.containers.iter().enumerate() {
        if c.ports.iter().flatten().any(|p| p.container_port == port) {
            return Decision::Deny(format!(
                "spec.containers[{i}] ({}) already uses port {port}, the sidecar's; choose another with the annotation {}",
                c.name,
                labels::SIDECAR_PORT
            ));
        }
    }
    if spec.automount_service_account_token == Some(false) {
        return Decision::Deny(format!(
            "spec.automountServiceAccountToken is false: the sidecar needs the pod's ServiceAccount token to read its ModelAssignment (remove the field or the {} label)",
            labels::MODEL
        ));
    }
    let mut out = pod.clone();
    let spec = out.spec.as_mut().expect("checked above");
    let mut class_arch = Vec::new();
    if let Some(class) = pod_labels.get(labels::DEVICE_CLASS) {
        let Some(class_spec) = classes(class) else {
            return Decision::Deny(format!(
                "metadata.labels[{}]: there is no DeviceClass {class:?} to place this pod by",
                labels::DEVICE_CLASS
            ));
        };
        if let Some(why) = class_spec.provider_refusal() {
            return Decision::Deny(format!(
                "metadata.labels[{}]: DeviceClass {class:?} cannot be served: {why}",
                labels::DEVICE_CLASS
            ));
        }
        if let Err(message) = crate::placement::place(spec, class, &class_spec) {
            return Decision::Deny(message);
        }
        class_arch = class_spec.arch;
    }
    let mut sidecar = container(model, port, settings, native);
    sidecar.image = Some(
        crate::placement::image_for(&settings.image, &settings.platform_images, &class_arch)
            .to_string(),
    );
    // The webhook's own account: its token goes to the sidecar alone.
    let own_account = matches!(
        spec.service_account_name.as_deref(),
        None | Some("" | "default")
    );
    if own_account {
        spec.service_account_name = Some(settings.service_account.clone());
        spec.automount_service_account_token = Some(false);
        // The API server's ServiceAccount admission ran before this webhook and mounted the
        // account's token into every container: that volume goes, with its mounts.
        let automounted: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| is_automounted_token(v))
            .map(|v| v.name.clone())
            .collect();
        spec.volumes
            .get_or_insert_with(Vec::new)
            .retain(|v| !automounted.contains(&v.name));
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            if let Some(mounts) = c.volume_mounts.as_mut() {
                mounts.retain(|m| !automounted.contains(&m.name));
            }
        }
        sidecar
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            });
    }
    if native {
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(sidecar);
    } else {
        spec.containers.push(sidecar);
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    if !volumes.iter().any(|v| v.name == CACHE_VOLUME) {
        volumes.push(Volume {
            name: CACHE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(quantity(&settings.cache_size)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if own_account && !volumes.iter().any(|v| v.name == TOKEN_VOLUME) {
        volumes.push(token_volume());
    }
    out.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::INJECTED.into(), settings.image.clone());
    Decision::Inject(Box::new(out))
}

/// The volume the API server's ServiceAccount admission adds for a pod's token
/// (`kube-api-access-<suffix>`, a projected ServiceAccount token).
fn is_automounted_token(v: &Volume) -> bool {
    v.name.starts_with("kube-api-access-")
        && v.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.service_account_token.is_some())
        })
}

/// What the kubelet would have mounted for the pod's account (a bound, expiring token, the
/// cluster's CA, the namespace), as a volume of the sidecar's own.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Native sidecars (init containers with `restartPolicy: Always`) are on by default from
/// Kubernetes 1.29.
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    let digits = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    };
    (digits(major), digits(minor)) >= (1, 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_classes(_: &str) -> Option<DeviceClassSpec> {
        None
    }

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "camera-0",
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
            "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]},
        }))
        .unwrap()
    }

    fn injected(d: Decision) -> Pod {
        match d {
            Decision::Inject(p) => *p,
            other => panic!("not injected: {other:?}"),
        }
    }

    #[test]
    fn a_pod_of_a_device_class_is_placed_on_its_nodes_and_an_unknown_class_is_refused() {
        use edgefleet_api::deviceclass::{Arch, Precision};
        let pi = |name: &str| {
            (name == "pi").then(|| DeviceClassSpec {
                node_selector: [("edgefleet.dev/device-class".into(), "pi".into())].into(),
                arch: vec![Arch::Arm64],
                runtime: Default::default(),
                execution_provider: Default::default(),
                precisions: vec![Precision::Int8],
                integer_only: false,
                memory_budget_mib: None,
                latency_budget_ms: None,
            })
        };
        let labelled =
            |class: &str| pod(&[(labels::MODEL, "m"), (labels::DEVICE_CLASS, class)], &[]);
        let spec = injected(decide(&labelled("pi"), &Settings::default(), true, &pi))
            .spec
            .unwrap();
        assert_eq!(
            spec.node_selector.unwrap()["edgefleet.dev/device-class"],
            "pi"
        );
        let terms = spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        let e = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (e.key.as_str(), e.values.as_deref().unwrap()),
            ("kubernetes.io/arch", &["arm64".to_string()][..])
        );
        match decide(&labelled("jetson"), &Settings::default(), true, &pi) {
            Decision::Deny(m) => assert!(
                m.contains("metadata.labels[edgefleet.dev/device-class]")
                    && m.contains("\"jetson\""),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        // A class whose execution provider the sidecar cannot use is not served on the CPU.
        let npu = |_: &str| {
            pi("pi").map(|mut c| {
                c.execution_provider = edgefleet_api::deviceclass::ExecutionProvider::Npu;
                c
            })
        };
        match decide(&labelled("pi"), &Settings::default(), true, &npu) {
            Decision::Deny(m) => assert!(
                m.contains("metadata.labels[edgefleet.dev/device-class]")
                    && m.contains("spec.executionProvider: npu"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        // Without the label nothing is placed.
        let spec = injected(decide(
            &pod(&[(labels::MODEL, "m")], &[]),
            &Settings::default(),
            true,
            &pi,
        ))
        .spec
        .unwrap();
        assert!(spec.affinity.is_none() && spec.node_selector.is_none());
    }

    #[test]
    fn a_pod_without_the_label_is_left_alone() {
        let d = decide(
            &pod(&[("app", "x")], &[]),
            &Settings::default(),
            true,
            &no_classes,
        );
        assert!(matches!(d, Decision::Skip(_)), "{d:?}");
    }

    #[test]
    fn an_opted_in_pod_gets_a_native_sidecar_with_everything_it_needs() {
        let settings = Settings::default();
        let p = injected(decide(
            &pod(&[(labels::MODEL, "fashion")], &[]),
            &settings,
            true,
            &no_classes,
        ));
        let spec = p.spec.unwrap();
        assert_eq!(spec.containers.len(), 1, "the app is untouched");
        let c = &spec.init_containers.unwrap()[0];
        assert_eq!(c.name, CONTAINER);
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        assert_eq!(c.image.as_deref(), Some(settings.image.as_str()));
        let args = c.args.clone().unwrap().join(" ");
        assert_eq!(
            args,
            "serve --name fashion --assignment $(POD_NAME) --namespace $(POD_NAMESPACE) --listen 0.0.0.0:8500 --cache /var/cache/edgefleet"
        );
        let env: Vec<_> = c
            .env
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.value_from
                        .as_ref()
                        .unwrap()
                        .field_ref
                        .as_ref()
                        .unwrap()
                        .field_path
                        .as_str(),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("POD_NAME", "metadata.name"),
                ("POD_NAMESPACE", "metadata.namespace"),
                ("NODE_NAME", "spec.nodeName")
            ]
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/v2/health/ready")
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, CACHE_PATH);
        let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"].0, "256Mi");
        assert_eq!(spec.volumes.unwrap()[0].name, CACHE_VOLUME);
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some("edgefleet-sidecar")
        );
        assert_eq!(
            p.metadata.annotations.unwrap()[labels::INJECTED],
            settings.image
        );
    }

    #[test]
    fn plain_http_registries_are_passed_on() {
        let settings = Settings {
            plain_http: vec!["10.0.0.5:5000".into()],
            ..Default::default()
        };
        let p = injected(decide(
            &pod(&[(labels::MODEL, "m")], &[]),
            &settings,
            true,
            &no_classes,
        ));
        let args = p.spec.unwrap().init_containers.unwrap()[0]
            .args
            .clone()
            .unwrap();
        assert_eq!(args[args.len() - 2..], ["--plain-http", "10.0.0.5:5000"]);
    }

    #[test]
    fn older_clusters_get_a_regular_container() {
        let p = injected(decide(
            &pod(&[(labels::MODEL, "m")], &[]),
            &Settings::default(),
            false,
            &no_classes,
        ));
        let spec = p.spec.unwrap();
        assert!(spec.init_containers.is_none());
        assert_eq!(spec.containers[1].name, CONTAINER);
        assert_eq!(spec.containers[1].restart_policy, None);
    }

    #[test]
    fn the_webhooks_account_token_is_mounted_into_the_sidecar_only() {
        // As the API server hands it over: its ServiceAccount admission already mounted the
        // default account's token into the app.
        let mut admitted = pod(&[(labels::MODEL, "m")], &[]);
        let spec = admitted.spec.as_mut().unwrap();
        spec.volumes = Some(vec![
            Volume {
                name: "kube-api-access-x7k2p".into(),
                ..token_volume()
            },
            Volume {
                name: "data".into(),
                ..Default::default()
            },
        ]);
        spec.containers[0].volume_mounts = Some(vec![
            VolumeMount {
                name: "kube-api-access-x7k2p".into(),
                mount_path: TOKEN_PATH.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
        ]);
        let p = injected(decide(&admitted, &Settings::default(), true, &no_classes));
        let spec = p.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        let mount = sidecar
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == TOKEN_VOLUME)
            .expect("the sidecar mounts its token");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (TOKEN_PATH, Some(true))
        );
        let app_mounts: Vec<_> = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            app_mounts,
            ["data"],
            "the app keeps its own volumes, no token"
        );
        assert!(
            !spec
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name.starts_with("kube-api-access-"))
        );
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == TOKEN_VOLUME)
            .unwrap();
        let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
        assert_eq!(
            sources[0].service_account_token.as_ref().unwrap().path,
            "token"
        );
        assert_eq!(
            sources[1].config_map.as_ref().unwrap().name,
            "kube-root-ca.crt"
        );

        // A pod with its own account keeps it and its automount: nothing of ours is mounted.
        let mut own = pod(&[(labels::MODEL, "m")], &[]);
        own.spec.as_mut().unwrap().service_account_name = Some("camera".into());
        let spec = injected(decide(&own, &Settings::default(), true, &no_classes))
            .spec
            .unwrap();
        assert_eq!(spec.automount_service_account_token, None);
        assert!(
            !spec
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == TOKEN_VOLUME)
        );
    }

    #[test]
    fn injection_is_idempotent_and_keeps_the_pods_own_account() {
        let mut p = pod(&[(labels::MODEL, "m")], &[]);
        p.spec.as_mut().unwrap().service_account_name = Some("camera".into());
        let once = injected(decide(&p, &Settings::default(), true, &no_classes));
        assert_eq!(
            once.spec.as_ref().unwrap().service_account_name.as_deref(),
            Some("camera")
        );
        assert!(matches!(
            decide(&once, &Settings::default(), true, &no_classes),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn refusals_name_the_field() {
        let s = Settings::default();
        let deny = |p: &Pod| match decide(p, &s, true, &no_classes) {
            Decision::Deny(m) => m,
            other => panic!("not denied: {other:?}"),
        };
        assert!(
            deny(&pod(&[(labels::MODEL, "")], &[]))
                .starts_with("metadata.labels[edgefleet.dev/model]")
        );
        assert!(
            deny(&pod(
                &[(labels::MODEL, "m")],
                &[(labels::SIDECAR_PORT, "http")]
            ))
            .starts_with("metadata.annotations[edgefleet.dev/sidecar-port]")
        );
        let clash = deny(&pod(
            &[(labels::MODEL, "m")],
            &[(labels::SIDECAR_PORT, "8080")],
        ));
        assert!(
            clash.starts_with("spec.containers[0] (app) already uses port 8080"),
            "{clash}"
        );
        let mut p = pod(&[(labels::MODEL, "m")], &[]);
        p.spec.as_mut().unwrap().automount_service_account_token = Some(false);
        assert!(deny(&p).starts_with("spec.automountServiceAccountToken"));
        // A custom port moves the listener and the probes.
        let p = injected(decide(
            &pod(&[(labels::MODEL, "m")], &[(labels::SIDECAR_PORT, "9100")]),
            &s,
            true,
            &no_classes,
        ));
        let c = &p.spec.unwrap().init_containers.unwrap()[0];
        assert!(
            c.args
                .as_ref()
                .unwrap()
                .contains(&"0.0.0.0:9100".to_string())
        );
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .port,
            IntOrString::Int(9100)
        );
    }

    #[test]
    fn native_sidecars_from_1_29() {
        assert!(supports_native_sidecars("1", "34"));
        assert!(supports_native_sidecars("1", "29+"));
        assert!(!supports_native_sidecars("1", "28"));
        assert!(supports_native_sidecars("2", "0"));
    }
}
