//! The sidecar-injection webhook's I/O: its certificate in a Secret (created, renewed, shared by
//! every replica), the `MutatingWebhookConfiguration` (scope, failure policy, current
//! `caBundle`), and the HTTPS server that answers `AdmissionReview`s with
//! [`inject::decide`](crate::inject::decide) as a JSON patch. Every replica serves; only pods
//! that opt in (the `edgefleet.dev/model` label) are ever sent here, so an outage of the webhook
//! never blocks any other pod.

use crate::certs::{self, Bundle, Renewal};
use crate::inject::{self, Decision, Settings};
use anyhow::{Context as _, Result};
use edgefleet_api::deviceclass::{DeviceClass, DeviceClassSpec};
use futures::StreamExt as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt as _, watcher};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;
use tracing::{info, warn};

/// Name of the one webhook in the configuration.
pub const WEBHOOK_NAME: &str = "inject.edgefleet.dev";

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// Namespace and name of the Secret holding the certificates.
    pub secret_namespace: String,
    pub secret_name: String,
    /// Name of the `MutatingWebhookConfiguration` (cluster-scoped).
    pub configuration: String,
    /// How the API server reaches us: a Service (`namespace`, `name`, port 443) ...
    pub service: Option<(String, String)>,
    /// ... or a URL (outside a cluster).
    pub url: Option<String>,
    /// Names in the serving certificate.
    pub names: Vec<String>,
    /// Inject only in this namespace (the operator's `--namespace`).
    pub scope: Option<String>,
    pub settings: Settings,
    /// How often the certificate is checked.
    pub check_every: Duration,
}

/// Serves the certificate the resolver holds now; renewals swap it without a restart.
#[derive(Debug)]
struct Resolver(RwLock<Arc<rustls::sign::CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().expect("resolver lock").clone())
    }
}

fn certified(bundle: &Bundle) -> Result<Arc<rustls::sign::CertifiedKey>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(bundle.cert.as_bytes())
        .context("webhook certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key.as_bytes()).context("webhook key PEM")?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).context("webhook key type")?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert],
        signer,
    )))
}

const NOT_AFTER: &str = "edgefleet.dev/not-after";
const CA_NOT_AFTER: &str = "edgefleet.dev/ca-not-after";
const NAMES: &str = "edgefleet.dev/names";

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn to_secret(b: &Bundle, cfg: &WebhookConfig) -> Secret {
    let mut data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(b.cert.clone().into_bytes()),
        ),
        (
            "tls.key".to_string(),
            ByteString(b.key.clone().into_bytes()),
        ),
        (
            "ca.crt".to_string(),
            ByteString(b.ca_cert.clone().into_bytes()),
        ),
        (
            "ca.key".to_string(),
            ByteString(b.ca_key.clone().into_bytes()),
        ),
    ]);
    if let Some(old) = &b.previous_ca {
        data.insert(
            "ca-previous.crt".into(),
            ByteString(old.clone().into_bytes()),
        );
    }
    let mut s = Secret {
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    };
    s.metadata.name = Some(cfg.secret_name.clone());
    s.metadata.namespace = Some(cfg.secret_namespace.clone());
    s.metadata.annotations = Some(BTreeMap::from([
        (NOT_AFTER.to_string(), rfc3339(b.not_after)),
        (CA_NOT_AFTER.to_string(), rfc3339(b.ca_not_after)),
        (NAMES.to_string(), b.names.join(",")),
    ]));
    s
}

fn from_secret(s: &Secret) -> Option<Bundle> {
    let data = s.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    let annotations = s.metadata.annotations.as_ref()?;
    let time = |k: &str| {
        OffsetDateTime::parse(
            annotations.get(k)?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
    };
    Some(Bundle {
        ca_cert: text("ca.crt")?,
        ca_key: text("ca.key")?,
        ca_not_after: time(CA_NOT_AFTER)?,
        previous_ca: text("ca-previous.crt"),
        cert: text("tls.crt")?,
        key: text("tls.key")?,
        not_after: time(NOT_AFTER)?,
        names: annotations
            .get(NAMES)?
            .split(',')
            .map(String::from)
            .collect(),
    })
}

/// The bundle in the Secret, created or renewed as needed. Replicas racing on a renewal: the
/// first write wins (resourceVersion), the others take what it wrote.
async fn current_bundle(client: &kube::Client, cfg: &WebhookConfig) -> Result<Bundle> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.secret_namespace);
    let what = || format!("Secret {}/{}", cfg.secret_namespace, cfg.secret_name);
    for _ in 0..3 {
        let now = OffsetDateTime::now_utc();
        let existing = api.get_opt(&cfg.secret_name).await.with_context(what)?;
        let bundle = existing.as_ref().and_then(from_secret);
        let (next, how) = match &bundle {
            Some(b) => {
                let how = certs::renewal(b, &cfg.names, now);
                (certs::renew(b, how, now)?, how)
            }
            None => (certs::generate(&cfg.names, now)?, Renewal::Ca),
        };
        if how == Renewal::Nothing {
            return Ok(next);
        }
        let mut secret = to_secret(&next, cfg);
        let written = match &existing {
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version.clone();
                api.replace(&cfg.secret_name, &PostParams::default(), &secret)
                    .await
            }
            None => api.create(&PostParams::default(), &secret).await,
        };
        match written {
            Ok(_) => {
                info!(secret = %what(), renewal = ?how, not_after = %rfc3339(next.not_after), "webhook certificate written");
                return Ok(next);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e).with_context(what),
        }
    }
    anyhow::bail!("{}: kept changing under us while renewing", what())
}

/// The webhook configuration: opted-in pods only, in scope, calling us with our CA.
pub fn configuration(cfg: &WebhookConfig, trust: &str) -> MutatingWebhookConfiguration {
    let client_config = WebhookClientConfig {
        ca_bundle: Some(ByteString(trust.as_bytes().to_vec())),
        url: cfg.url.clone(),
        service: cfg.service.as_ref().map(|(ns, name)| ServiceReference {
            namespace: ns.clone(),
            name: name.clone(),
            path: Some("/mutate".into()),
            port: Some(443),
        }),
    };
    let namespace_selector = match &cfg.scope {
        Some(ns) => LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                ns.clone(),
            )])),
            ..Default::default()
        },
        None => LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(vec!["kube-system".into()]),
            }]),
            ..Default::default()
        },
    };
    let mut c = MutatingWebhookConfiguration {
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.into(),
            admission_review_versions: vec!["v1".into()],
            client_config,
            // Opted-in pods must not start without their sidecar; every other pod never
            // reaches the webhook (objectSelector), so an outage cannot block it.
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            reinvocation_policy: Some("IfNeeded".into()),
            // Serving pods only: an optimization Job's pod also names its model, but carries
            // the inputs label, and must not depend on the webhook being up.
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    LabelSelectorRequirement {
                        key: edgefleet_api::labels::MODEL.into(),
                        operator: "Exists".into(),
                        values: None,
                    },
                    LabelSelectorRequirement {
                        key: edgefleet_api::labels::INPUTS.into(),
                        operator: "DoesNotExist".into(),
                        values: None,
                    },
                ]),
                ..Default::default()
            }),
            namespace_selector: Some(namespace_selector),
            rules: Some(vec![RuleWithOperations {
                operations: Some(vec!["CREATE".into()]),
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            ..Default::default()
        }]),
        ..Default::default()
    };
    c.metadata.name = Some(cfg.configuration.clone());
    c
}

async fn apply_configuration(
    client: &kube::Client,
    cfg: &WebhookConfig,
    trust: &str,
) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut object = serde_json::to_value(configuration(cfg, trust))?;
    object["apiVersion"] = "admissionregistration.k8s.io/v1".into();
    object["kind"] = "MutatingWebhookConfiguration".into();
    api.patch(
        &cfg.configuration,
        &PatchParams::apply(edgefleet_api::OPERATOR_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("MutatingWebhookConfiguration {}", cfg.configuration))?;
    Ok(())
}

/// Answers one AdmissionReview.
pub fn review(
    body: &[u8],
    settings: &Settings,
    native: bool,
    classes: &dyn Fn(&str) -> Option<DeviceClassSpec>,
) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                .into_review();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return AdmissionResponse::invalid(e.to_string()).into_review(),
    };
    let response = AdmissionResponse::from(&request);
    let Some(object) = request.object.as_ref() else {
        return response.into_review();
    };
    let original = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return response.deny(format!("pod: {e}")).into_review(),
    };
    let pod: Pod = match serde_json::from_value(original.clone()) {
        Ok(p) => p,
        Err(e) => return response.deny(format!("not a Pod: {e}")).into_review(),
    };
    match inject::decide(&pod, settings, native, classes) {
        Decision::Skip(_) => response.into_review(),
        Decision::Deny(message) => response.deny(message).into_review(),
        Decision::Inject(changed) => {
            let after = serde_json::to_value(&*changed).expect("a Pod serializes");
            let patch = json_patch::diff(&original, &after);
            match response.clone().with_patch(patch) {
                Ok(r) => r.into_review(),
                Err(e) => response.deny(format!("patch: {e}")).into_review(),
            }
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    settings: Arc<Settings>,
    native: bool,
    classes: Store<DeviceClass>,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |code: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    };
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => reply(StatusCode::OK, b"{\"ok\":true}".to_vec()),
        ("POST", "/mutate") => {
            let body = match http_body_util::Limited::new(req.into_body(), 8 << 20)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        format!("{{\"error\":{:?}}}", e.to_string()).into_bytes(),
                    );
                }
            };
            let lookup = |name: &str| classes.get(&ObjectRef::new(name)).map(|c| c.spec.clone());
            let answer = review(&body, &settings, native, &lookup);
            reply(
                StatusCode::OK,
                serde_json::to_vec(&answer).expect("a review serializes"),
            )
        }
        _ => reply(StatusCode::NOT_FOUND, b"{\"error\":\"not found\"}".to_vec()),
    }
}

/// Sets up the certificate and the configuration, then serves until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: WebhookConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let version = client
        .apiserver_version()
        .await
        .context("API server version")?;
    let native = inject::supports_native_sidecars(&version.major, &version.minor);
    let bundle = current_bundle(&client, &cfg).await?;
    apply_configuration(&client, &cfg, &bundle.trust()).await?;
    let resolver = Arc::new(Resolver(RwLock::new(certified(&bundle)?)));
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .with_context(|| format!("webhook address {}", cfg.addr))?;
    info!(addr = %listener.local_addr()?, native_sidecars = native, configuration = %cfg.configuration, "serving the sidecar-injection webhook");

    // Renewal: every replica checks; whoever renews first writes the Secret, the others load it.
    let renewer = {
        let (client, cfg, resolver) = (client.clone(), cfg.clone(), resolver.clone());
        let mut served = bundle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(cfg.check_every).await;
                match current_bundle(&client, &cfg).await {
                    Ok(b) if b != served => {
                        if let Err(e) = apply_configuration(&client, &cfg, &b.trust()).await {
                            warn!(error = %e, "could not update the webhook's caBundle; retrying");
                            continue;
                        }
                        match certified(&b) {
                            Ok(k) => *resolver.0.write().expect("resolver lock") = k,
                            Err(e) => warn!(error = %e, "renewed certificate unusable"),
                        }
                        info!(not_after = %rfc3339(b.not_after), "webhook certificate reloaded");
                        served = b;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "webhook certificate check failed; retrying"),
                }
            }
        })
    };
    // DeviceClasses, to place the pods of one on its nodes; answers start once they are known.
    let (classes, writer) = reflector::store::<DeviceClass>();
    let class_watch = tokio::spawn(
        reflector(
            writer,
            watcher(Api::<DeviceClass>::all(client.clone()), Default::default()).default_backoff(),
        )
        .for_each(|_| std::future::ready(())),
    );
    classes
        .wait_until_ready()
        .await
        .context("watching DeviceClasses for the webhook")?;
    let settings = Arc::new(cfg.settings.clone());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { warn!(error = %e, "webhook accept failed"); continue; }
            },
            _ = &mut shutdown => break,
        };
        let (acceptor, settings, classes) = (acceptor.clone(), settings.clone(), classes.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                handle(req, settings.clone(), native, classes.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
    renewer.abort();
    class_watch.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WebhookConfig {
        WebhookConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            secret_namespace: "edgefleet".into(),
            secret_name: "edgefleet-webhook-tls".into(),
            configuration: "edgefleet-sidecar-injector".into(),
            service: Some(("edgefleet".into(), "edgefleet-webhook".into())),
            url: None,
            names: vec!["edgefleet-webhook.edgefleet.svc".into()],
            scope: None,
            settings: Settings::default(),
            check_every: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_secret_round_trips_the_bundle() {
        let b = certs::generate(&["a.svc".into()], OffsetDateTime::now_utc()).unwrap();
        let back = from_secret(&to_secret(&b, &cfg())).unwrap();
        // Timestamps keep whole seconds in the annotation.
        assert_eq!(back.cert, b.cert);
        assert_eq!(back.ca_key, b.ca_key);
        assert_eq!(back.names, b.names);
        assert_eq!(
            back.not_after.unix_timestamp(),
            b.not_after.unix_timestamp()
        );
        assert_eq!(from_secret(&Secret::default()), None);
    }

    #[test]
    fn only_opted_in_pods_reach_the_webhook_and_it_fails_closed_for_them() {
        let c = configuration(&cfg(), "PEM");
        let w = &c.webhooks.unwrap()[0];
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
        let selector = w
            .object_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(
            (selector[0].key.as_str(), selector[0].operator.as_str()),
            (edgefleet_api::labels::MODEL, "Exists")
        );
        assert_eq!(
            (selector[1].key.as_str(), selector[1].operator.as_str()),
            (edgefleet_api::labels::INPUTS, "DoesNotExist"),
            "optimization pods never reach the webhook"
        );
        assert_eq!(w.client_config.ca_bundle.as_ref().unwrap().0, b"PEM");
        assert_eq!(
            w.client_config.service.as_ref().unwrap().path.as_deref(),
            Some("/mutate")
        );
        let ns = w
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(ns[0].values.as_ref().unwrap(), &["kube-system".to_string()]);
        let rule = &w.rules.as_ref().unwrap()[0];
        assert_eq!(rule.operations.as_ref().unwrap(), &["CREATE".to_string()]);
        assert_eq!(rule.resources.as_ref().unwrap(), &["pods".to_string()]);
    }

    fn review_of(pod: serde_json::Value) -> serde_json::Value {
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "0b4f1c7e-0000-0000-0000-000000000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "userInfo": {"username": "test"},
                "namespace": "default",
                "object": pod,
            }
        });
        serde_json::to_value(review(
            &serde_json::to_vec(&body).unwrap(),
            &Settings::default(),
            true,
            &|_| None,
        ))
        .unwrap()
    }

    #[test]
    fn reviews_answer_with_a_patch_a_refusal_or_nothing() {
        let pod = |labels: serde_json::Value| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": labels},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            })
        };
        let r = review_of(pod(serde_json::json!({"edgefleet.dev/model": "fashion"})));
        let response = &r["response"];
        assert_eq!(response["uid"], "0b4f1c7e-0000-0000-0000-000000000001");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let r = review_of(pod(serde_json::json!({"edgefleet.dev/model": ""})));
        assert_eq!(r["response"]["allowed"], false);
        assert!(
            r["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("metadata.labels")
        );
        let r = review_of(pod(serde_json::json!({"app": "x"})));
        assert_eq!(r["response"]["allowed"], true);
        assert!(r["response"].get("patch").is_none());
    }
}
