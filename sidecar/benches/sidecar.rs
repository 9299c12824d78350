//! `make bench-sidecar`: the sidecar against its peer, the same runtime called in-process, on the
//! same machine in the same run. Per model and runtime: latency p50/p99 at 1 thread directly and
//! through the sidecar (binary tensors and JSON), throughput with 1 and 2 workers, cold start to
//! ready, RSS with the model; once: idle RSS and the stripped binary size. A second peer, the
//! HTTP floor: the same request sent to a server on the same HTTP stack (axum on a 2-worker tokio
//! runtime, in another thread) that reads the body and answers 40 bytes without a model, so
//! what the sidecar adds beyond the HTTP round trip itself can be told apart.
//!
//! Driven by `hack/bench-sidecar.sh`, which builds the binaries and the models and passes
//! `BENCH_CASES` (a JSON list of `{"model", "variant", "runtime", "path"}`) and `SIDECAR_BIN`.
//! Prints the JSON result as its last line.

use edgefleet_runtime::{ModelInfo, Runtime};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(serde::Deserialize)]
struct Case {
    model: String,
    variant: String,
    runtime: String,
    path: String,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({"p50_ms": round(percentile(&ms, 0.5)), "p99_ms": round(percentile(&ms, 0.99)), "runs": ms.len()})
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn runs_for(direct_p50_ms: f64) -> usize {
    // About two seconds of work per measurement, between 50 and 1000 runs.
    ((2000.0 / direct_p50_ms.max(0.01)) as usize).clamp(50, 1000)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sidecar {
    child: Child,
    base: String,
    cold_start_ms: f64,
    _cache: tempfile::TempDir,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(
    bin: &str,
    args: &[&str],
    wait_ready: bool,
    http: &reqwest::Client,
    kubeconfig: Option<&std::path::Path>,
) -> Sidecar {
    let port = free_port();
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut command = Command::new(bin);
    if let Some(k) = kubeconfig {
        command.env("KUBECONFIG", k);
    }
    let child = command
        .args([
            "serve",
            "--name",
            "m",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--cache")
        .arg(cache.path())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the sidecar");
    let base = format!("http://127.0.0.1:{port}");
    let path = if wait_ready {
        "/v2/health/ready"
    } else {
        "/v2/health/live"
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{base}{path}")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "sidecar {args:?} never ready");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Sidecar {
        child,
        base,
        cold_start_ms: started.elapsed().as_secs_f64() * 1e3,
        _cache: cache,
    }
}

/// One request with the binary tensor extension (what a latency-minded client sends).
async fn infer_binary(http: &reqwest::Client, base: &str, input: &str, shape: &[usize], x: &[f32]) {
    let header = json!({"inputs": [{"name": input, "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": x.len() * 4}}], "parameters": {"binary_data_output": true}}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    let r = http
        .post(format!("{base}/v2/models/m/infer"))
        .header("inference-header-content-length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.bytes().await.unwrap();
}

async fn infer_json(http: &reqwest::Client, base: &str, input: &str, shape: &[usize], x: &[f32]) {
    let body = json!({"inputs": [{"name": input, "datatype": "FP32", "shape": shape, "data": x}]});
    let r = http
        .post(format!("{base}/v2/models/m/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.bytes().await.unwrap();
}

/// Requests per second with `clients` concurrent clients for `seconds`.
async fn throughput(
    base: &str,
    input: &str,
    shape: &[usize],
    x: &[f32],
    clients: usize,
    seconds: f64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (base, input, shape, x) = (
            base.to_string(),
            input.to_string(),
            shape.to_vec(),
            x.to_vec(),
        );
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                infer_binary(&http, &base, &input, &shape, &x).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

/// The HTTP floor peer: reads the whole request body and answers like the sidecar's binary
/// output for 10 classes, with no model. Runs until the process ends; returns its base URL.
fn start_http_floor() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().route(
                "/v2/models/m/infer",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    let header = json!({"model_name": "m", "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}], "received": body.len()}).to_string();
                    let mut out = header.clone().into_bytes();
                    out.extend([0u8; 40]);
                    (
                        [(
                            axum::http::HeaderName::from_static("inference-header-content-length"),
                            header.len().to_string(),
                        )],
                        out,
                    )
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    base
}

fn runtime(name: &str) -> Box<dyn Runtime> {
    match name {
        "tract" => Box::new(edgefleet_runtime::tract::Tract),
        _ => Box::new(edgefleet_runtime::ort::OnnxRuntime {
            threads: 1,
            library: None,
        }),
    }
}

async fn bench_case(case: &Case, bin: &str, http: &reqwest::Client, floor: &str) -> Value {
    let file = if std::path::Path::new(&case.path).is_dir() {
        format!("{}/model.onnx", case.path)
    } else {
        case.path.clone()
    };
    let bytes = std::fs::read(&file).unwrap();
    let info = ModelInfo::parse(&bytes).unwrap();
    let sample: Vec<usize> = info.input_dims[1..]
        .iter()
        .map(|d| d.unwrap_or(1))
        .collect();
    let mut shape = vec![1];
    shape.extend(&sample);
    let x = edgefleet_testenv::net::floats(sample.iter().product(), 7);

    // The peer: the runtime called in-process.
    let mut session = runtime(&case.runtime).load(&info, &sample, 1).unwrap();
    for _ in 0..10 {
        session.run(1, &x).unwrap();
    }
    let probe: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            session.run(1, &x).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let mut sorted = probe.clone();
    sorted.sort_by(f64::total_cmp);
    let runs = runs_for(percentile(&sorted, 0.5));
    let direct: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            session.run(1, &x).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    drop(session);
    let direct = summary(direct);

    let common = [
        "--model",
        file.as_str(),
        "--runtime",
        case.runtime.as_str(),
        "--threads",
        "1",
    ];
    let mut result = json!({
        "model": case.model, "variant": case.variant, "runtime": case.runtime,
        "model_bytes": bytes.len(), "direct": direct,
    });
    for workers in [1usize, 2] {
        let mut args = common.to_vec();
        let w = workers.to_string();
        args.extend(["--workers", w.as_str()]);
        let sidecar = start(bin, &args, true, http, None).await;
        let rss = rss_kib(sidecar.child.id());
        if workers == 1 {
            for _ in 0..10 {
                infer_binary(http, &sidecar.base, &info.input, &shape, &x).await;
            }
            let mut binary = Vec::new();
            let mut plain = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                infer_binary(http, &sidecar.base, &info.input, &shape, &x).await;
                binary.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                infer_json(http, &sidecar.base, &info.input, &shape, &x).await;
                plain.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let binary = summary(binary);
            let d50 = result["direct"]["p50_ms"].as_f64().unwrap();
            let s50 = binary["p50_ms"].as_f64().unwrap();
            let overhead = s50 - d50;
            let allowed = 0.1 * d50 + 0.2;
            result["sidecar_binary"] = binary;
            result["sidecar_json"] = summary(plain);
            result["overhead_p50_ms"] = json!(round(overhead));
            result["overhead_allowed_ms"] = json!(round(allowed));
            result["overhead_within_target"] = json!(overhead <= allowed);
            // The same request, same number of runs, to the HTTP floor peer.
            for _ in 0..10 {
                infer_binary(http, floor, &info.input, &shape, &x).await;
            }
            let mut transport = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                infer_binary(http, floor, &info.input, &shape, &x).await;
                transport.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let transport = summary(transport);
            let f50 = transport["p50_ms"].as_f64().unwrap();
            result["http_floor"] = transport;
            result["overhead_beyond_http_floor_ms"] = json!(round(overhead - f50));
            result["cold_start_ms"] = json!(round(sidecar.cold_start_ms));
            result["rss_with_model_mib"] = json!(round(rss as f64 / 1024.0));
        }
        let secs = 3.0;
        result[format!("throughput_rps_{workers}_workers")] =
            json!(throughput(&sidecar.base, &info.input, &shape, &x, workers * 2, secs).await);
    }
    result
}

// One client thread: the 2 cores are shared with the sidecar, and a single-threaded client adds
// the least of its own scheduling to what is measured.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cases: Vec<Case> = serde_json::from_str(
        &std::fs::read_to_string(std::env::var("BENCH_CASES").expect("BENCH_CASES")).unwrap(),
    )
    .unwrap();
    let bin = std::env::var("SIDECAR_BIN").expect("SIDECAR_BIN");
    edgefleet_artifact::install_tls_provider();
    let http = reqwest::Client::new();

    // Idle: following an assignment on an API server that does not answer, no model yet.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:9'}\nusers:\n- name: u\n  user: {token: x}\ncontexts:\n- name: c\n  context: {cluster: c, user: u, namespace: default}\ncurrent-context: c\n").unwrap();
    let idle = start(
        &bin,
        &["--assignment", "idle"],
        false,
        &http,
        Some(&kubeconfig),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_kib(idle.child.id()) as f64 / 1024.0;
    drop(idle);

    let stripped = dir.path().join("sidecar-stripped");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&bin)
        .status()
        .unwrap()
        .success();
    assert!(ok, "strip failed");
    let stripped_mib = std::fs::metadata(&stripped).unwrap().len() as f64 / (1 << 20) as f64;

    let floor = start_http_floor();
    let mut results = Vec::new();
    for case in &cases {
        eprintln!(
            "[bench-sidecar] {} {} on {}",
            case.model, case.variant, case.runtime
        );
        let r = bench_case(case, &bin, &http, &floor).await;
        eprintln!("[bench-sidecar]   {r}");
        results.push(r);
    }
    let all_within = results
        .iter()
        .all(|r| r["overhead_within_target"] == json!(true));
    let out = json!({
        "machine": format!("{} cores {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), std::env::consts::ARCH),
        "binary_stripped_mib": round(stripped_mib),
        "binary_stripped_bytes": std::fs::metadata(&stripped).unwrap().len(),
        "binary_target_bytes": 15_000_000,
        "idle_rss_mib": round(idle_rss),
        "idle_rss_target_mib": 20,
        "overhead_target": "p50 through the sidecar - p50 in-process <= 10% of in-process p50 + 0.2 ms",
        "all_within_overhead_target": all_within,
        "http_floor": "the same binary request to an axum server on a 2-worker tokio runtime that reads the body and answers 40 bytes, no model",
        "cases": results,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sidecar.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
    println!("{out}");
}
