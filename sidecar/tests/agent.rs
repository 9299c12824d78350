//! The sidecar's over-the-air agent against the real API server and a real registry: it follows
//! its pod's `ModelAssignment`, swaps in what `spec.desired` names and reports it in `status`;
//! refuses a model that fails its self-test while the old one keeps serving; keeps serving (zero
//! failed requests) while the registry and then the API server are unreachable, and converges
//! once they are back; and after a restart with no network serves the last good model from its
//! cache.

use edgefleet_api::assignment::{Health, ModelAssignment};
mod common;

use common::{fixture, inputs, publish};
use edgefleet_runtime::{ModelInfo, Runtime as _, argmax, tract::Tract};
use edgefleet_testenv::net::Gate;
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry};
use edgefleet_testenv::{Process, eventually, free_port, kubectl, with_namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(fixture()).unwrap()
}

fn input(seed: u32) -> Vec<f32> {
    inputs(1, seed)
}

/// The fixture with a metadata entry: same outputs, another digest.
fn variant(tag: &str) -> Vec<u8> {
    use prost::Message as _;
    let mut proto = tract_onnx::pb::ModelProto::decode(fixture_bytes().as_slice()).unwrap();
    proto
        .metadata_props
        .push(tract_onnx::pb::StringStringEntryProto {
            key: "edgefleet.dev/variant".into(),
            value: tag.into(),
        });
    proto.encode_to_vec()
}

fn direct(model: &[u8], x: &[f32]) -> Vec<f32> {
    let info = ModelInfo::parse(model).unwrap();
    Tract
        .load(&info, &[1, 28, 28], 1)
        .unwrap()
        .run(1, x)
        .unwrap()
}

fn digest_of(reference: &str) -> String {
    reference.split_once('@').unwrap().1.to_string()
}

struct Sidecar {
    _process: Process,
    base: String,
}

async fn start_sidecar(args: &[&str], kubeconfig: &Path, cache: &Path) -> Sidecar {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefleet-sidecar"));
    cmd.args(["serve", "--name", "fashion", "--heartbeat", "1s"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--cache")
        .arg(cache)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube=warn");
    let process = Process::spawn_standalone("sidecar", cmd).unwrap();
    Sidecar {
        _process: process,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn infer(
    http: &reqwest::Client,
    base: &str,
    x: &[f32],
) -> Result<(String, Vec<f32>), String> {
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": x}]});
    let r = http
        .post(format!("{base}/v2/models/fashion/infer"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let code = r.status();
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("{code}: {v}"));
    }
    let out = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Ok((v["model_version"].as_str().unwrap().to_string(), out))
}

#[tokio::test]
async fn follows_its_model_assignment_and_keeps_serving_through_outages() {
    with_namespace("sidecar-agent", |client, ns| async move {
        edgefleet_artifact::install_tls_provider();
        let mut reg = TestRegistry::start(RegistryConfig::default())?;
        let xs: Vec<Vec<f32>> = (0..4).map(|i| input(60 + i)).collect();
        let base = fixture_bytes();
        let tops: Vec<usize> = xs.iter().map(|x| argmax(&direct(&base, x))).collect();
        let a_ref = publish(&reg.addr, &variant("a"), &xs, &tops, None).await;
        let (repo, a) = a_ref.split_once('@').map(|(r, d)| (r.to_string(), d.to_string())).unwrap();
        let b = digest_of(&publish(&reg.addr, &variant("b"), &xs, &tops, None).await);
        let c = digest_of(&publish(&reg.addr, &variant("c"), &xs, &tops, None).await);
        let mut wrong = tops.clone();
        wrong[1] = (wrong[1] + 1) % 10;
        let bad = digest_of(&publish(&reg.addr, &variant("bad"), &xs, &wrong, None).await);

        let api: Api<ModelAssignment> = Api::namespaced(client.clone(), &ns);
        let desire = |digest: &str, revision: i64| {
            json!({"spec": {"desired": {"digest": digest, "repository": repo, "revision": revision}}})
        };
        let mut ma: ModelAssignment = serde_json::from_value(json!({
            "apiVersion": "edgefleet.dev/v1alpha1", "kind": "ModelAssignment",
            "metadata": {"name": "app-0"},
            "spec": {"model": "fashion", "deviceClass": "cpu-int8",
                     "pod": {"name": "app-0", "uid": "0000-1111"}}
        }))?;
        ma.spec.desired = serde_json::from_value(desire(&a, 1)["spec"]["desired"].clone())?;
        api.create(&PostParams::default(), &ma).await?;
        let set_desired = |digest: String, revision: i64| {
            let api = api.clone();
            let patch = desire(&digest, revision);
            async move {
                api.patch("app-0", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        let status_where = |what: &'static str, check: Box<dyn Fn(&ModelAssignment) -> bool + Send + Sync>| {
            let api = api.clone();
            async move {
                eventually(Duration::from_secs(90), || async {
                    let ma = api.get("app-0").await?;
                    anyhow::ensure!(check(&ma), "waiting for {what}: status {:?}", ma.status);
                    Ok(ma)
                })
                .await
            }
        };
        let serving = |digest: &str| {
            let d = digest.to_string();
            move |ma: &ModelAssignment| {
                ma.status.as_ref().and_then(|s| s.current.as_ref()).map(|c| c.digest.as_str())
                    == Some(d.as_str())
            }
        };

        let dir = tempfile::tempdir()?;
        let cache = dir.path().join("cache");
        // The sidecar's own ServiceAccount with the least privilege it documents.
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        anyhow::ensure!(ok, "{out}");
        let token = edgefleet_testenv::service_account_token(&ns, "edgefleet-sidecar")?;
        let gate = Gate::start(edgefleet_testenv::apiserver()).await;
        let kubeconfig = edgefleet_testenv::token_kubeconfig(dir.path(), &gate.addr, &token);
        let registry_addr = reg.addr.clone();
        let args = ["--assignment", "app-0", "--namespace", ns.as_str(), "--plain-http", registry_addr.as_str()];
        let sidecar = start_sidecar(&args, &kubeconfig, &cache).await;
        let http = reqwest::Client::new();

        // The desired model arrives, self-tested, and the status says so.
        let ma = status_where("A in service", Box::new(serving(&a))).await?;
        let s = ma.status.unwrap();
        assert_eq!(s.current.as_ref().unwrap().revision, 1);
        assert!(s.current.as_ref().unwrap().load_time_ms.unwrap() > 0.0);
        assert_eq!(s.health, Some(Health::Healthy));
        assert!(s.self_test.as_ref().unwrap().passed, "{s:?}");
        assert!(s.last_heartbeat.is_some());
        let (version, out) = infer(&http, &sidecar.base, &xs[0]).await.map_err(anyhow::Error::msg)?;
        assert_eq!(version, a);
        let expected = direct(&base, &xs[0]);
        assert!(out.iter().zip(&expected).all(|(x, y)| (x - y).abs() < 1e-4), "{out:?} vs {expected:?}");

        // A new desired digest: swapped, previous reported.
        set_desired(b.clone(), 2).await?;
        let ma = status_where("B in service", Box::new(serving(&b))).await?;
        let s = ma.status.unwrap();
        assert_eq!(s.previous.as_deref(), Some(a.as_str()));
        assert_eq!(s.current.unwrap().revision, 2);

        // A model that fails its self-test is refused; B keeps serving and the status says why.
        set_desired(bad.clone(), 3).await?;
        let ma = status_where(
            "the bad model refused",
            Box::new(|ma| ma.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("self-test failed"))),
        )
        .await?;
        let s = ma.status.unwrap();
        assert_eq!(s.current.unwrap().digest, b);
        assert_eq!(s.health, Some(Health::Degraded));
        let st = s.self_test.unwrap();
        assert!(!st.passed && st.digest == bad, "{st:?}");
        assert_eq!(infer(&http, &sidecar.base, &xs[0]).await.map_err(anyhow::Error::msg)?.0, b);

        // Steady load from here on: not one request may fail.
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for i in 0..2u32 {
            let (stop, answered, base_url, http) = (stop.clone(), answered.clone(), sidecar.base.clone(), http.clone());
            let x = input(200 + i);
            clients.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match infer(&http, &base_url, &x).await {
                        Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.push(e);
                            0
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                failures
            }));
        }

        // Registry down: C cannot be fetched; B serves; retries with backoff until it is back.
        reg.stop();
        set_desired(c.clone(), 4).await?;
        let ma = status_where(
            "C retried",
            Box::new(|ma| ma.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains("retrying with backoff"))),
        )
        .await?;
        let s = ma.status.unwrap();
        assert_eq!(s.current.unwrap().digest, b);
        assert_eq!(s.health, Some(Health::Loading));
        tokio::time::sleep(Duration::from_secs(3)).await;
        reg.restart()?;
        status_where("C in service", Box::new(serving(&c))).await?;

        // API server unreachable for the sidecar: it serves on; a desired change made meanwhile
        // is picked up when it is back, and heartbeats resume.
        gate.close();
        let before = api.get("app-0").await?.status.unwrap().last_heartbeat.unwrap();
        set_desired(a.clone(), 5).await?;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let during = api.get("app-0").await?.status.unwrap();
        assert_eq!(during.current.as_ref().unwrap().digest, c, "no API server, no news");
        assert!(during.last_heartbeat.unwrap().0 <= before.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(2))?);
        gate.open();
        let ma = status_where("A again after the outage", Box::new(serving(&a))).await?;
        assert!(ma.status.unwrap().last_heartbeat.unwrap().0 > before.0);

        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let failures = c.await?;
            assert!(failures.is_empty(), "failed requests: {failures:?}");
        }
        let answered = answered.load(Ordering::Relaxed);
        assert!(answered > 100, "only {answered} requests answered");

        // Restart with no network at all: the last good model (A) serves from the cache.
        drop(sidecar);
        reg.stop();
        gate.close();
        let started = Instant::now();
        let sidecar = start_sidecar(&args, &kubeconfig, &cache).await;
        let (version, _) = eventually(Duration::from_secs(60), || async {
            infer(&http, &sidecar.base, &xs[0]).await.map_err(anyhow::Error::msg)
        })
        .await?;
        assert_eq!(version, a);
        eprintln!("served from the cache {:?} after a restart without network; {answered} requests answered through the outages", started.elapsed());
        // The API server comes back: the restarted sidecar reports A under its revision (5)
        // once it has seen its ModelAssignment again.
        let restarted = k8s_openapi::jiff::Timestamp::now();
        gate.open();
        let ma = status_where(
            "a report of revision 5 from the restarted sidecar",
            Box::new(move |ma| {
                ma.status.as_ref().is_some_and(|s| {
                    s.last_heartbeat.as_ref().is_some_and(|h| h.0 > restarted)
                        && s.current.as_ref().is_some_and(|c| c.revision == 5)
                })
            }),
        )
        .await?;
        let s = ma.status.unwrap();
        assert_eq!(s.current.unwrap().digest, a);
        assert_eq!(s.health, Some(Health::Healthy));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn loads_only_what_verifies_with_the_assignments_key_and_no_client_can_repoint_it() {
    with_namespace("sidecar-trust", |client, ns| async move {
        edgefleet_artifact::install_tls_provider();
        let reg = TestRegistry::start(RegistryConfig::default())?;
        let xs: Vec<Vec<f32>> = (0..4).map(|i| input(80 + i)).collect();
        let base = fixture_bytes();
        let tops: Vec<usize> = xs.iter().map(|x| argmax(&direct(&base, x))).collect();
        let registry = edgefleet_artifact::Registry::new(edgefleet_artifact::RegistryOptions {
            plain_http: vec![reg.addr.clone()],
            ..Default::default()
        })?;
        let key = edgefleet_artifact::SigningKeyPem::generate();
        let stranger = edgefleet_artifact::SigningKeyPem::generate();
        let signed_ref = publish(&reg.addr, &variant("signed"), &xs, &tops, None).await;
        registry.sign(&signed_ref, &key).await?;
        let unsigned = digest_of(&publish(&reg.addr, &variant("unsigned"), &xs, &tops, None).await);
        let forged_ref = publish(&reg.addr, &variant("forged"), &xs, &tops, None).await;
        registry.sign(&forged_ref, &stranger).await?;
        let forged = digest_of(&forged_ref);
        let (repo, signed) = signed_ref.split_once('@').map(|(r, d)| (r.to_string(), d.to_string())).unwrap();
        let pem = key.public().to_pem();

        let api: Api<ModelAssignment> = Api::namespaced(client.clone(), &ns);
        let desire = |digest: &str, revision: i64| {
            json!({"spec": {"desired": {"digest": digest, "repository": repo, "revision": revision, "publicKey": pem}}})
        };
        let mut ma: ModelAssignment = serde_json::from_value(json!({
            "apiVersion": "edgefleet.dev/v1alpha1", "kind": "ModelAssignment",
            "metadata": {"name": "app-0"},
            "spec": {"model": "fashion", "deviceClass": "cpu-int8",
                     "pod": {"name": "app-0", "uid": "0000-2222"}}
        }))?;
        ma.spec.desired = serde_json::from_value(desire(&signed, 1)["spec"]["desired"].clone())?;
        api.create(&PostParams::default(), &ma).await?;
        let status_where = |what: &'static str, check: Box<dyn Fn(&ModelAssignment) -> bool + Send + Sync>| {
            let api = api.clone();
            async move {
                eventually(Duration::from_secs(90), || async {
                    let ma = api.get("app-0").await?;
                    anyhow::ensure!(check(&ma), "waiting for {what}: status {:?}", ma.status);
                    Ok(ma)
                })
                .await
            }
        };
        let dir = tempfile::tempdir()?;
        let (ok, out) = kubectl(&["apply", "-n", &ns, "-f", "examples/sidecar-rbac.yaml"]);
        anyhow::ensure!(ok, "{out}");
        let token = edgefleet_testenv::service_account_token(&ns, "edgefleet-sidecar")?;
        let kubeconfig = edgefleet_testenv::token_kubeconfig(dir.path(), &edgefleet_testenv::apiserver(), &token);
        let args = ["--assignment", "app-0", "--namespace", ns.as_str(), "--plain-http", reg.addr.as_str()];
        let sidecar = start_sidecar(&args, &kubeconfig, &dir.path().join("cache")).await;
        let http = reqwest::Client::new();

        // Signed with the assignment's key: served.
        let serving = |d: String| move |ma: &ModelAssignment| {
            ma.status.as_ref().and_then(|s| s.current.as_ref()).map(|c| c.digest.clone()) == Some(d.clone())
        };
        status_where("the signed model in service", Box::new(serving(signed.clone()))).await?;

        // Unsigned, then signed by another key: refused with the reason, the signed one serves.
        for (digest, revision, why) in [(&unsigned, 2, "unsigned"), (&forged, 3, "does not verify with the trusted public key")] {
            api.patch("app-0", &PatchParams::default(), &Patch::Merge(&desire(digest, revision))).await?;
            let ma = status_where(
                "a refusal",
                Box::new(move |ma| ma.status.as_ref().and_then(|s| s.message.as_deref()).is_some_and(|m| m.contains(why))),
            )
            .await?;
            let s = ma.status.unwrap();
            assert_eq!(s.current.unwrap().digest, signed, "{why}");
            assert!(s.message.as_deref().unwrap().contains("signature refused"), "{:?}", s.message);
            assert_eq!(infer(&http, &sidecar.base, &xs[0]).await.map_err(anyhow::Error::msg)?.0, signed);
        }

        // Following an assignment, nothing over HTTP changes the model, token or not.
        let r = http
            .post(format!("{}/v2/repository/models/fashion/load", sidecar.base))
            .header("authorization", "Bearer anything-at-all-long-enough")
            .json(&json!({"parameters": {"source": format!("oci://{forged_ref}")}}))
            .send()
            .await?;
        assert_eq!(r.status(), 403);
        assert_eq!(infer(&http, &sidecar.base, &xs[0]).await.map_err(anyhow::Error::msg)?.0, signed);
        Ok(())
    })
    .await;
}
