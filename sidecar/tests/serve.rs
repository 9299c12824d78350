//! `edgefleet-sidecar serve` over real HTTP with real runtimes: results match the runtime called
//! directly, bad requests get clear 4xx answers and never stick a worker, 20 hot swaps under
//! concurrent load fail no request, a bad model is refused while the old one keeps serving, an
//! artifact pulled from a real registry self-tests before serving, and SIGTERM drains.

mod common;

use common::{fixture, inputs, publish};
use edgefleet_runtime::{ModelInfo, Runtime as _, argmax, tract::Tract};
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry};
use edgefleet_testenv::{Process, free_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LOAD_TOKEN: &str = "a-test-token-of-enough-length";

struct Sidecar {
    process: Process,
    base: String,
    client: reqwest::Client,
    _cache: tempfile::TempDir,
}

impl Sidecar {
    async fn start(model: &str, extra: &[&str]) -> Self {
        edgefleet_artifact::install_tls_provider();
        let port = free_port();
        let cache = tempfile::tempdir().unwrap();
        // Standalone, on loopback: the load endpoint is on, behind this token.
        let token = cache.path().join("load-token");
        std::fs::write(&token, format!("{LOAD_TOKEN}\n")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefleet-sidecar"));
        cmd.args(["serve", "--model", model, "--name", "fashion"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--cache")
            .arg(cache.path())
            .arg("--load-token-file")
            .arg(&token)
            .args(extra);
        let process = Process::spawn_standalone("sidecar", cmd).unwrap();
        let s = Sidecar {
            process,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _cache: cache,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = s.client.get(s.url("/v2/health/ready")).send().await
                && r.status() == 200
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar not ready: {}",
                s.process.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn infer(&self, batch: usize, data: &[f32]) -> (u16, Value) {
        let body = json!({"id": "t", "inputs": [{"name": "input", "datatype": "FP32", "shape": [batch, 1, 28, 28], "data": data}]});
        self.post("/v2/models/fashion/infer", body.to_string())
            .await
    }

    async fn post(&self, path: &str, body: String) -> (u16, Value) {
        self.post_as(path, body, Some(LOAD_TOKEN)).await
    }

    async fn post_as(&self, path: &str, body: String, token: Option<&str>) -> (u16, Value) {
        let mut r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json");
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        let r = r.body(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The Prometheus text of `/metrics`.
    async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A POST announcing `length` body bytes and sending none: the server must answer from the
/// header alone. Returns (status, body).
fn raw_post(base: &str, path: &str, length: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

fn direct(model: &Path, data: &[f32]) -> Vec<f32> {
    let bytes = std::fs::read(model).unwrap();
    let info = ModelInfo::parse(&bytes).unwrap();
    let mut session = Tract.load(&info, &[1, 28, 28], 1).unwrap();
    data.chunks(784)
        .flat_map(|x| session.run(1, x).unwrap())
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn serves_what_the_runtime_computes_and_refuses_bad_requests_clearly() {
    let pre = r#"{"colorMode":"grayscale","mean":[0.286],"std":[0.353],"layout":"NCHW"}"#;
    let sidecar = Sidecar::start(
        fixture().to_str().unwrap(),
        &["--max-body-bytes", "200000", "--preprocessing", pre],
    )
    .await;
    let meta = sidecar.get("/v2/models/fashion").await;
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 28, 28]));
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(sidecar.get("/v2/models/fashion/ready").await["ready"], true);
    assert_eq!(sidecar.get("/v2/health/live").await["live"], true);

    let data = inputs(3, 7);
    let (status, out) = sidecar.infer(3, &data).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "t");
    assert_eq!(out["outputs"][0]["shape"], json!([3, 10]));
    let got = floats(&out["outputs"][0]["data"]);
    let want = direct(&fixture(), &data);
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    assert_eq!(
        out["model_version"],
        edgefleet_artifact::Digest::of(&std::fs::read(fixture()).unwrap()).to_string()
    );

    // The binary tensor data extension: raw little-endian FP32 in and out.
    let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 1, 28, 28], "parameters": {"binary_data_size": data.len() * 4}}], "parameters": {"binary_data_output": true}}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    let r = sidecar
        .client
        .post(sidecar.url("/v2/models/fashion/infer"))
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 120);
    assert!(head["outputs"][0].get("data").is_none(), "{head}");
    let binary: Vec<f32> = bytes[json_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(binary, got, "binary and JSON answers agree bit for bit");

    let bad = |body: String| {
        let s = &sidecar;
        async move { s.post("/v2/models/fashion/infer", body).await }
    };
    let (s, e) = bad("{not json".into()).await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("malformed JSON"),
        "{e}"
    );
    let (s, e) = bad(json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 28, 28], "data": inputs(3, 1)}]}).to_string()).await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("[N, 1, 28, 28]"),
        "{e}"
    );
    let (s, e) = bad(json!({"inputs": [{"name": "input", "datatype": "INT8", "shape": [1, 1, 28, 28], "data": [0]}]}).to_string()).await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("FP32"),
        "{e}"
    );
    let (s, e) = bad(json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [1.0, 2.0]}]}).to_string()).await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("needs 784"),
        "{e}"
    );
    let (s, e) = sidecar.post("/v2/models/other/infer", "{}".into()).await;
    assert!(
        s == 404 && e["error"].as_str().unwrap().contains("\"fashion\""),
        "{e}"
    );
    // A body over the 200 kB limit given at start: refused from its Content-Length, before
    // it is read (a raw request, so the client does not race the early answer).
    let (status, text) = raw_post(&sidecar.base, "/v2/models/fashion/infer", 10_000_000);
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("10000000 bytes is over the limit of 200000"),
        "{text}"
    );
    // Nothing got stuck: the next good request is served.
    let (s, _) = sidecar.infer(1, &inputs(1, 9)).await;
    assert_eq!(s, 200);

    // An encoded image: preprocessed as the model expects, top-k with softmax scores, the same
    // class the runtime gives on the same preprocessing.
    let png = |w: u32, h: u32| {
        let img =
            image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let classify = |body: Vec<u8>| {
        let s = &sidecar;
        async move {
            let r = s
                .client
                .post(s.url("/v1/models/fashion/classify?top=3"))
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, out) = classify(png(28, 28)).await;
    assert_eq!(s, 200, "{out}");
    let top = out["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let (x, _) =
        edgefleet_runtime::image::preprocess(&png(28, 28), &serde_json::from_str(pre).unwrap())
            .unwrap();
    assert_eq!(top[0]["class"], argmax(&direct(&fixture(), &x)));
    assert!(top[0]["score"].as_f64().unwrap() >= top[1]["score"].as_f64().unwrap());
    let (s, e) = classify(b"GIF89a not an image".to_vec()).await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("cannot decode image"),
        "{e}"
    );
    let (s, e) = classify(png(32, 32)).await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("[1, 32, 32]"),
        "{e}"
    );

    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("edgefleet_sidecar_errors_total{kind=\"bad_request\"} 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgefleet_sidecar_inferences_total 8"),
        "{metrics}"
    );
}

/// Shapes whose element count overflows a machine word (`[2^60, 1, 28, 28]` is 2^64 * 49
/// values: 0 once wrapped, so empty data used to match it) and batches over `--max-batch`, as
/// JSON and as binary tensors: each is a 400 that names the batch, and afterwards every session
/// still answers and the sidecar is still ready. In place and on inference threads.
#[tokio::test]
async fn hostile_shapes_get_a_400_and_cost_no_session() {
    for placement in [
        &["--inline-below-ms", "1"][..],
        &["--inline-below-ms", "0"][..],
    ] {
        // Eight requests at once below: room for all of them (over --max-in-flight is a 503).
        let mut args = vec![
            "--workers",
            "2",
            "--max-batch",
            "64",
            "--max-in-flight",
            "8",
        ];
        args.extend_from_slice(placement);
        let sidecar = Sidecar::start(fixture().to_str().unwrap(), &args).await;
        for batch in [1u64 << 60, 1 << 62, u64::MAX, 65] {
            let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [batch, 1, 28, 28], "data": []}]});
            let (s, e) = sidecar
                .post("/v2/models/fashion/infer", body.to_string())
                .await;
            assert_eq!(s, 400, "{placement:?} batch {batch}: {e}");
            assert!(
                e["error"].as_str().unwrap().contains("batch"),
                "{placement:?} batch {batch}: {e}"
            );
            let header = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [batch, 1, 28, 28], "parameters": {"binary_data_size": 0}}]}).to_string();
            let r = sidecar
                .client
                .post(sidecar.url("/v2/models/fashion/infer"))
                .header("inference-header-content-length", header.len())
                .body(header)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{placement:?} binary batch {batch}");
        }
        // Both sessions answer, concurrently, and the sidecar is ready.
        let answers = futures::future::join_all((0..8).map(|i| {
            let s = &sidecar;
            async move { s.infer(2, &inputs(2, i)).await.0 }
        }))
        .await;
        assert_eq!(answers, vec![200; 8], "{placement:?}");
        assert_eq!(sidecar.get("/v2/health/ready").await["ready"], true);
        // The cap itself is served.
        let (s, out) = sidecar.infer(64, &inputs(64, 3)).await;
        assert_eq!(s, 200, "{placement:?}: {out}");
    }
}

/// The fixture with one more metadata entry: another digest, the same outputs.
fn variant(dir: &Path) -> PathBuf {
    use prost::Message as _;
    let mut proto =
        tract_onnx::pb::ModelProto::decode(std::fs::read(fixture()).unwrap().as_slice()).unwrap();
    proto
        .metadata_props
        .push(tract_onnx::pb::StringStringEntryProto {
            key: "edgefleet.dev/variant".into(),
            value: "b".into(),
        });
    let path = dir.join("variant.onnx");
    std::fs::write(&path, proto.encode_to_vec()).unwrap();
    path
}

#[tokio::test]
async fn twenty_hot_swaps_under_load_fail_no_request_and_a_bad_model_is_refused() {
    // The CNN runs in well under a millisecond: served in place on the HTTP workers.
    hot_swaps_under_load(&["--workers", "2"]).await;
}

#[tokio::test]
async fn hot_swaps_on_inference_threads_fail_no_request_either() {
    // The same with every model on its own inference threads (what slower models get).
    hot_swaps_under_load(&["--workers", "2", "--inline-below-ms", "0"]).await;
}

async fn hot_swaps_under_load(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let a = fixture();
    let b = variant(dir.path());
    let sidecar = Sidecar::start(a.to_str().unwrap(), args).await;
    let digest = |p: &Path| edgefleet_artifact::Digest::of(&std::fs::read(p).unwrap()).to_string();
    let (da, db) = (digest(&a), digest(&b));
    let sidecar = std::sync::Arc::new(sidecar);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u32 {
        let (s, stop) = (sidecar.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut versions) =
                (0, Vec::new(), std::collections::BTreeSet::new());
            let data = inputs(1, c + 100);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, out) = s.infer(1, &data).await;
                if status == 200 {
                    ok += 1;
                    versions.insert(out["model_version"].as_str().unwrap().to_string());
                } else {
                    failed.push(out.to_string());
                }
            }
            (ok, failed, versions)
        }));
    }
    for i in 0..20 {
        let target = if i % 2 == 0 { &b } else { &a };
        let (status, out) = sidecar
            .post(
                "/v2/repository/models/fashion/load",
                json!({"parameters": {"source": target}}).to_string(),
            )
            .await;
        assert_eq!(status, 200, "swap {i}: {out}");
        assert_eq!(
            out["digest"].as_str(),
            Some(if i % 2 == 0 { db.as_str() } else { da.as_str() })
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A file that is not a model: refused, the current model keeps serving.
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"definitely not onnx").unwrap();
    let (status, out) = sidecar
        .post(
            "/v2/repository/models/fashion/load",
            json!({"parameters": {"source": junk}}).to_string(),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("not an ONNX model")
            && out["error"].as_str().unwrap().contains(&da),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut seen = std::collections::BTreeSet::new();
    for c in clients {
        let (ok, failed, versions) = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during swaps: {failed:?}"
        );
        total += ok;
        seen.extend(versions);
    }
    assert!(total > 40, "load was steady: {total} requests");
    assert_eq!(
        seen,
        [da.clone(), db.clone()].into_iter().collect(),
        "both versions served"
    );
    let status = sidecar.get("/v2/sidecar/status").await;
    assert_eq!(status["digest"], da.as_str());
    assert_eq!(status["previous"], db.as_str());
    assert_eq!(status["swaps"], 21, "the initial load and 20 swaps");
    assert!(
        status["lastRefusal"]
            .as_str()
            .unwrap()
            .contains("junk.onnx")
    );
    let metrics = sidecar.metrics().await;
    assert!(
        metrics.contains("edgefleet_sidecar_refused_loads_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgefleet_sidecar_rollbacks_total 19"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("digest=\"{da}\""))
            && !metrics.contains(&format!("digest=\"{db}\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_artifact_self_tests_before_serving_and_a_failing_one_is_refused() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = std::fs::read(fixture()).unwrap();
    // Expected top-1 from the runtime itself, as the optimizer records it.
    let xs: Vec<Vec<f32>> = (0..4).map(|i| inputs(1, 40 + i)).collect();
    let tops: Vec<usize> = xs.iter().map(|x| argmax(&direct(&fixture(), x))).collect();
    let good = publish(&reg.addr, &model, &xs, &tops, Some("good")).await;
    let sidecar = Sidecar::start(&format!("oci://{good}"), &["--plain-http", &reg.addr]).await;
    let status = sidecar.get("/v2/sidecar/status").await;
    assert_eq!(status["selftestPassed"], 4);
    assert_eq!(status["runtime"], "tract");
    // Same model, one expected top-1 wrong: the self-test refuses it.
    let mut wrong = tops.clone();
    wrong[2] = (wrong[2] + 1) % 10;
    let bad = publish(&reg.addr, &model, &xs, &wrong, Some("bad")).await;
    let (code, out) = sidecar
        .post(
            "/v2/repository/models/fashion/load",
            json!({"parameters": {"source": format!("oci://{bad}")}}).to_string(),
        )
        .await;
    assert_eq!(code, 422, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("self-test failed: sample 2"),
        "{out}"
    );
    assert_eq!(
        sidecar.get("/v2/sidecar/status").await["digest"],
        status["digest"]
    );
    let (code, _) = sidecar.infer(1, &xs[0]).await;
    assert_eq!(code, 200);
    // SIGTERM: drains and exits 0.
    let mut process = sidecar.process;
    process.signal("TERM").unwrap();
    assert_eq!(
        process.wait_timeout(Duration::from_secs(10)).unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn the_load_endpoint_is_off_by_default_and_needs_the_token_and_loopback_when_on() {
    let model = fixture();
    let model = model.to_str().unwrap();
    let other = variant(tempfile::tempdir().unwrap().keep().as_path());
    let body = json!({"parameters": {"source": other}}).to_string();
    let path = "/v2/repository/models/fashion/load";
    // With the token: no token or a wrong one is refused and changes nothing.
    let on = Sidecar::start(model, &[]).await;
    let before = on.get("/v2/sidecar/status").await["digest"].clone();
    let (code, out) = on.post_as(path, body.clone(), None).await;
    assert_eq!(code, 401, "{out}");
    let (code, out) = on.post_as(path, body.clone(), Some("guess")).await;
    assert_eq!(code, 401, "{out}");
    assert_eq!(on.get("/v2/sidecar/status").await["digest"], before);
    let (code, out) = on.post(path, body.clone()).await;
    assert_eq!(code, 200, "{out}");
    assert_ne!(on.get("/v2/sidecar/status").await["digest"], before);

    // Without --load-token-file: 403 whoever asks, the model stays.
    let port = free_port();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgefleet-sidecar"));
    cmd.args(["serve", "--model", model, "--name", "fashion"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--cache")
        .arg(cache.path());
    let _off = Process::spawn_standalone("sidecar-off", cmd).unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    edgefleet_testenv::eventually(Duration::from_secs(60), || async {
        let r = http.get(format!("{base}/v2/health/ready")).send().await?;
        anyhow::ensure!(r.status() == 200, "not ready");
        Ok(())
    })
    .await
    .unwrap();
    let r = http
        .post(format!("{base}{path}"))
        .header("authorization", format!("Bearer {LOAD_TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("does not change its model over HTTP")
    );

    // On a non-loopback address the token file is refused at start.
    let token = cache.path().join("t");
    std::fs::write(&token, LOAD_TOKEN).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgefleet-sidecar"))
        .args([
            "serve",
            "--model",
            model,
            "--name",
            "fashion",
            "--listen",
            "0.0.0.0:0",
        ])
        .arg("--cache")
        .arg(cache.path())
        .arg("--load-token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only served on a loopback"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_get_a_503_not_memory() {
    use tokio::io::AsyncWriteExt as _;
    let sidecar = Sidecar::start(fixture().to_str().unwrap(), &["--max-in-flight", "1"]).await;
    // One request that sends its headers and then stalls mid-body holds the only slot.
    let addr = sidecar.base.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /v2/models/fashion/infer HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{\"inputs\":["
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out) = sidecar.infer(1, &inputs(1, 5)).await;
    assert_eq!(code, 503, "{out}");
    assert!(
        out["error"].as_str().unwrap().contains("--max-in-flight"),
        "{out}"
    );
    // Health and metrics are not inference: they answer.
    assert_eq!(sidecar.get("/v2/health/ready").await["ready"], true);
    assert!(sidecar.metrics().await.contains("busy"));
    drop(stalled);
    edgefleet_testenv::eventually(Duration::from_secs(10), || async {
        let (code, out) = sidecar.infer(1, &inputs(1, 5)).await;
        anyhow::ensure!(code == 200, "{code}: {out}");
        Ok(())
    })
    .await
    .unwrap();
}
