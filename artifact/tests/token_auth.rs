//! Bearer-token registries: a real Debian `docker-registry` with `auth: token`, and a small token
//! server (this test's) that exchanges basic credentials for a JWT signed with a key the registry
//! trusts, scoped to the repository and actions asked for. The client follows the registry's
//! `WWW-Authenticate: Bearer` challenge; wrong credentials are a clear Unauthorized error.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edgefleet_artifact::manifest::{Compression, Contents};
use edgefleet_artifact::{Cache, DockerConfig, Error, Facts, Registry, RegistryOptions, pack};
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry, openssl};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use std::collections::HashMap;
use std::sync::Arc;

const SERVICE: &str = "edgefleet-test-registry";
const ISSUER: &str = "edgefleet-test-issuer";

struct Signer {
    key: RsaKeyPair,
    cert_der: Vec<u8>,
}

impl Signer {
    fn jwt(&self, subject: &str, scope: &str) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [STANDARD.encode(&self.cert_der)]});
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // scope: repository:<name>:<actions,comma-separated>
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        let access = match parts.as_slice() {
            [kind, name, actions] => {
                serde_json::json!([{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}])
            }
            _ => serde_json::json!([]),
        };
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", rand_suffix()), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

async fn token(
    State(signer): State<Arc<Signer>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match user.as_deref() {
        Some("fleet:s3cret") => {
            let scope = q.get("scope").cloned().unwrap_or_default();
            let jwt = signer.jwt("fleet", &scope);
            (
                StatusCode::OK,
                serde_json::json!({"token": jwt, "expires_in": 300}).to_string(),
            )
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            r#"{"details":"invalid credentials"}"#.to_string(),
        ),
    }
}

#[tokio::test]
async fn a_token_auth_registry_is_used_through_its_bearer_challenge() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edgefleet-test-token-signer",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    )
    .unwrap();
    openssl(
        d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in", "key.pem", "-out", "key.der",
        ],
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509", "-outform", "DER", "-in", "cert.pem", "-out", "cert.der",
        ],
    )
    .unwrap();
    let signer = Arc::new(Signer {
        key: RsaKeyPair::from_pkcs8(&std::fs::read(p("key.der")).unwrap()).unwrap(),
        cert_der: std::fs::read(p("cert.der")).unwrap(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/token", axum::routing::get(token))
        .with_state(signer);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let reg = TestRegistry::start(RegistryConfig {
        token: Some((realm, SERVICE.into(), ISSUER.into(), p("cert.pem"))),
        ..Default::default()
    })
    .unwrap();
    let model = (0..40_000u32).map(|i| (i % 13) as u8).collect::<Vec<_>>();
    let facts = Facts {
        device_class: "cpu-int8".into(),
        runtime: "tract".into(),
        technique: "fp32".into(),
        accuracy: 0.9,
        ..Default::default()
    };
    let packed = pack(
        &Contents {
            model: &model,
            ..Default::default()
        },
        &facts,
        Compression::Auto,
    )
    .unwrap();
    let registry_with = |password: &str| {
        let auth = STANDARD.encode(format!("fleet:{password}"));
        let json = format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr);
        Registry::new(RegistryOptions {
            plain_http: vec![reg.addr.clone()],
            credentials: DockerConfig::parse(json.as_bytes(), "config.json").unwrap(),
            attempts: 1,
            ..Default::default()
        })
        .unwrap()
    };
    let good = registry_with("s3cret");
    let pushed = good
        .push(&format!("{}/models/bearer:v1", reg.addr), &packed)
        .await
        .unwrap();
    let pulled = good
        .pull(
            &pushed.reference,
            &Cache::open(dir.path().join("cache")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.model.read().unwrap(), model);

    let wrong = registry_with("guess");
    let e = wrong.inspect(&pushed.reference).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(
        e.to_string().contains(&reg.addr) && e.to_string().contains("\"fleet\""),
        "{e}"
    );
    // Anonymous: the registry's challenge leads to the token server, which refuses.
    let anonymous = Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        attempts: 1,
        ..Default::default()
    })
    .unwrap();
    let e = anonymous.inspect(&pushed.reference).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
}
