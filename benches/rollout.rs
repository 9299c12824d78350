//! `make bench-rollout PODS=N`: the rollout controller (the release operator binary, alone:
//! `--controllers rollout`) against the real API server with N simulated sidecars
//! (`edgefleet_testenv::fleet`). Setup: N Pods, the first artifact rolled out to all of them.
//! Measured: a second artifact in three steps (10%, 50%, 100%, no pauses, default
//! maxUnavailable 25%) from publish to every pod serving it; API requests per pod from the
//! operator (its own per-method counter) and from the sidecars; operator CPU time and peak RSS;
//! API server latency (a GET of one ModelAssignment every 100 ms) idle and during the rollout.
//! Writes bench-results/rollout-N.json and prints it as the last line.

use anyhow::{Context as _, Result, bail};
use edgefleet_api::EdgeModel;
use edgefleet_testenv::fleet::{self, SimConfig, SimFleet};
use edgefleet_testenv::{Process, env, free_port, http_get, repo_root};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MODEL: &str = "bench";

fn pods_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == "--pods")
        .and_then(|w| w[1].parse().ok())
        .or_else(|| std::env::var("PODS").ok()?.parse().ok())
        .unwrap_or(1000)
}

/// `utime + stime` in seconds and `VmHWM` in MiB of a process.
fn usage(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("stat format")?
        .1
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based over the whole line).
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok((ticks / hz, hwm_kb / 1024.0))
}

/// The operator's API requests by method, from its /metrics.
fn requests(http: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    let (_, body) = http_get(http, "/metrics")?;
    let mut out = serde_json::Map::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("edgefleet_operator_api_requests_total{verb=\"")
            && let Some((verb, value)) = rest.split_once("\"} ")
        {
            out.insert(verb.to_string(), json!(value.trim().parse::<f64>()?));
        }
    }
    Ok(out)
}

fn delta(
    after: &serde_json::Map<String, serde_json::Value>,
    before: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    after
        .iter()
        .map(|(k, v)| {
            let b = before.get(k).and_then(|b| b.as_f64()).unwrap_or(0.0);
            (k.clone(), json!(v.as_f64().unwrap_or(0.0) - b))
        })
        .collect()
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1048576.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// GETs one object every 100 ms and keeps the latencies in milliseconds.
fn probe(
    api: Api<edgefleet_api::assignment::ModelAssignment>,
    name: String,
) -> (Arc<Mutex<Vec<f64>>>, tokio::task::JoinHandle<()>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let samples = out.clone();
    let task = tokio::spawn(async move {
        loop {
            let t = Instant::now();
            if api.get(&name).await.is_ok() {
                samples
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1e3);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (out, task)
}

fn summary(samples: &Mutex<Vec<f64>>) -> serde_json::Value {
    let mut v = samples.lock().unwrap().clone();
    v.sort_by(f64::total_cmp);
    json!({"samples": v.len(), "p50_ms": percentile(&v, 0.5), "p99_ms": percentile(&v, 0.99), "max_ms": v.last().copied().unwrap_or(f64::NAN)})
}

async fn wait_for<F: Fn() -> bool>(what: &str, timeout: Duration, done: F) -> Result<Duration> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            bail!("{what}: not done after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

async fn complete(
    models: &Api<EdgeModel>,
    revision: i64,
    pods: usize,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let m = models.get(MODEL).await?;
        let s = m.status.unwrap_or_default();
        if let Some(r) = &s.rollout
            && s.revision == Some(revision)
            && r.state == edgefleet_api::edgemodel::RolloutState::Complete
            && r.ready as usize == pods
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!(
                "revision {revision} not complete after {timeout:?}: {:?}",
                s.rollout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let pods = pods_arg();
    let operator_bin = repo_root().join("target/release/edgefleet-operator");
    if !operator_bin.exists() {
        bail!(
            "{} missing: cargo build --release --bin edgefleet-operator",
            operator_bin.display()
        );
    }
    let client = edgefleet_testenv::client().await?;
    edgefleet_testenv::install_crds(&client).await?;
    let ns = edgefleet_testenv::unique_name("bench-rollout");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let result = run(&client, &ns, pods, &operator_bin).await;
    let _ = namespaces.delete(&ns, &Default::default()).await;
    let report = result?;
    let text = serde_json::to_string(&report)?;
    std::fs::create_dir_all(repo_root().join("bench-results"))?;
    std::fs::write(
        repo_root().join(format!("bench-results/rollout-{pods}.json")),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    println!("{text}");
    Ok(())
}

async fn run(
    client: &kube::Client,
    ns: &str,
    pods: usize,
    operator_bin: &std::path::Path,
) -> Result<serde_json::Value> {
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = std::process::Command::new(operator_bin);
    cmd.args([
        "--namespace",
        ns,
        "--lease-namespace",
        ns,
        "--identity",
        "bench",
    ])
    .args(["--controllers", "rollout", "--http-addr", &http])
    .env("KUBECONFIG", &env().kubeconfig)
    .env("RUST_LOG", "warn");
    let operator = Process::spawn("operator", cmd)?;
    let models: Api<EdgeModel> = Api::namespaced(client.clone(), ns);
    models
        .create(&PostParams::default(), &fleet::model(MODEL, &[10, 50, 100]))
        .await?;
    let sims = SimFleet::start(client.clone(), ns, SimConfig::default());
    let (a, b) = (fleet::digest("first"), fleet::digest("second"));
    fleet::publish(client, ns, MODEL, &a).await?;

    eprintln!("bench-rollout: creating {pods} pods");
    let t = Instant::now();
    fleet::create_pods(client, ns, MODEL, "edge", pods, 64).await?;
    let created = t.elapsed();
    let setup_limit = Duration::from_secs(900);
    wait_for("first artifact on every pod", setup_limit, || {
        sims.serving(&a) == pods
    })
    .await?;
    complete(&models, 1, pods, setup_limit).await?;
    let setup = t.elapsed();
    eprintln!(
        "bench-rollout: {pods} pods created in {created:?}, first artifact everywhere after {setup:?}"
    );

    let assignments = Api::namespaced(client.clone(), ns);
    let (idle, idle_probe) = probe(assignments.clone(), "edge-0".into());
    tokio::time::sleep(Duration::from_secs(5)).await;
    idle_probe.abort();

    let requests_before = requests(&http)?;
    let (cpu_before, _) = usage(operator.pid())?;
    let sim_writes_before = sims.stats.writes.load(std::sync::atomic::Ordering::Relaxed);
    let beats_before = sims
        .stats
        .heartbeats
        .load(std::sync::atomic::Ordering::Relaxed);
    let (busy, busy_probe) = probe(assignments, "edge-0".into());
    eprintln!("bench-rollout: publishing the second artifact");
    let t = Instant::now();
    fleet::publish(client, ns, MODEL, &b).await?;
    let limit = Duration::from_secs(1800);
    let all_updated = wait_for("second artifact on every pod", limit, || {
        sims.serving(&b) == pods
    })
    .await?;
    let until_complete = t.elapsed() + complete(&models, 2, pods, limit).await?;
    busy_probe.abort();
    let requests_after = requests(&http)?;
    let (cpu_after, peak_rss) = usage(operator.pid())?;
    let sim_writes =
        sims.stats.writes.load(std::sync::atomic::Ordering::Relaxed) - sim_writes_before;
    let beats = sims
        .stats
        .heartbeats
        .load(std::sync::atomic::Ordering::Relaxed)
        - beats_before;
    let failed = sims.stats.failed.load(std::sync::atomic::Ordering::Relaxed);

    let by_verb = delta(&requests_after, &requests_before);
    let all: f64 = by_verb.values().filter_map(|v| v.as_f64()).sum();
    let writes: f64 = by_verb
        .iter()
        .filter(|(k, _)| k.as_str() != "GET")
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    let n = pods as f64;
    let seconds = all_updated.as_secs_f64();
    let report = json!({
        "area": "rollout",
        "pods": pods,
        "steps": [10, 50, 100],
        "max_unavailable": "25% (default)",
        "machine": format!(
            "{} cores {}, {:.0} GiB",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            std::env::consts::ARCH,
            memory_gib()
        ),
        "setup": {"pods_created_s": created.as_secs_f64(), "first_rollout_s": setup.as_secs_f64()},
        "seconds_to_all_updated": seconds,
        "seconds_to_complete_status": until_complete.as_secs_f64(),
        "operator": {
            "requests_per_pod": all / n,
            "writes_per_pod": writes / n,
            "requests_by_method": by_verb,
            "cpu_seconds": cpu_after - cpu_before,
            "peak_rss_mib": peak_rss,
        },
        "sidecars": {
            "writes_per_pod": sim_writes as f64 / n,
            "of_which_heartbeats_per_pod": beats as f64 / n,
            "heartbeat_s": SimConfig::default().heartbeat.as_secs_f64(),
            "failed_writes": failed,
        },
        "apiserver_get_latency": {"idle": summary(&idle), "during_rollout": summary(&busy)},
        "targets": {
            "seconds_to_all_updated": {"max": 300.0, "met": seconds <= 300.0},
            "operator_writes_per_pod": {"max": 3.0, "met": writes / n <= 3.0},
            "operator_peak_rss_mib": {"max": 300.0 * 1e6 / 1048576.0, "met": peak_rss * 1048576.0 <= 300e6},
        },
    });
    drop(sims);
    drop(operator);
    Ok(report)
}
