//! edgefleet-camera-app: what an application next to the edgefleet sidecar does. It sends a
//! frame (a 28x28 grayscale image, the Fashion-MNIST model's input) to the sidecar over
//! localhost every `--interval-ms`, the Open Inference Protocol's JSON form, and keeps count:
//! requests sent, answered, failed (split into "before the first answer", while the sidecar is
//! still loading its first model, and "after", which a healthy rollout never has), and which
//! model version answered. It logs a line whenever the version changes and serves its counts
//! as JSON on `--stats` (`GET /stats`), so tests and the demo can read them.
//!
//! On SIGTERM it stops between two frames and prints its final counts (the kubelet stops it
//! before the sidecar, which serves until then). Standard library HTTP only: a real camera
//! application would use its own client.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

struct Config {
    model: String,
    sidecar: String,
    stats: String,
    interval: Duration,
}

#[derive(Default)]
struct Counts {
    sent: u64,
    answered: u64,
    failed_before_first_answer: u64,
    failed_after_first_answer: u64,
    last_error: Option<String>,
    /// The last few failures after the first answer, with their time (seconds since start).
    recent_failures: Vec<(f64, String)>,
    by_version: BTreeMap<String, u64>,
    version: Option<String>,
    last_latency_ms: f64,
}

fn args() -> Result<Config, String> {
    let mut c = Config {
        model: std::env::var("EDGEFLEET_MODEL").unwrap_or_default(),
        sidecar: "127.0.0.1:8500".into(),
        stats: "0.0.0.0:9090".into(),
        interval: Duration::from_millis(100),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => c.model = value()?,
            "--sidecar" => c.sidecar = value()?,
            "--stats" => c.stats = value()?,
            "--interval-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--interval-ms {v}: not a number"))?;
                c.interval = Duration::from_millis(ms.max(1));
            }
            "--version" => {
                println!("edgefleet-camera-app {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if c.model.is_empty() {
        return Err("--model (or EDGEFLEET_MODEL) names the model the sidecar serves".into());
    }
    Ok(c)
}

/// A deterministic "frame" (values in [0, 1)), different for each `seed`.
fn frame(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..28 * 28)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f32 / 1000.0
        })
        .collect()
}

/// One HTTP/1.1 request; returns (status, body).
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let timeout = Duration::from_secs(5);
    let sock = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| format!("read: {e}"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad status line {status_line:?}"))?;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n.min(1 << 20), 0);
            reader
                .read_exact(&mut body)
                .map_err(|e| format!("read body: {e}"))?;
        }
        None => {
            reader
                .take(1 << 20)
                .read_to_end(&mut body)
                .map_err(|e| format!("read body: {e}"))?;
        }
    }
    Ok((status, body))
}

/// One inference: the model version that answered, or why none did.
fn infer(c: &Config, seed: u64) -> Result<String, String> {
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": frame(seed)}]});
    let path = format!("/v2/models/{}/infer", c.model);
    let (status, answer) = request(&c.sidecar, "POST", &path, body.to_string().as_bytes())?;
    let v: Value =
        serde_json::from_slice(&answer).map_err(|e| format!("{status}: not JSON: {e}"))?;
    if status != 200 {
        return Err(format!(
            "{status}: {}",
            v["error"].as_str().unwrap_or("no error text")
        ));
    }
    let scores = v["outputs"][0]["data"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    if scores == 0 {
        return Err("200 without scores".into());
    }
    Ok(v["model_version"].as_str().unwrap_or("unknown").to_string())
}

fn stats(counts: &Counts, started: Instant) -> Value {
    json!({
        "uptime_seconds": started.elapsed().as_secs_f64(),
        "sent": counts.sent,
        "answered": counts.answered,
        "failed_before_first_answer": counts.failed_before_first_answer,
        "failed_after_first_answer": counts.failed_after_first_answer,
        "last_error": counts.last_error,
        "recent_failures": counts.recent_failures,
        "version": counts.version,
        "by_version": counts.by_version,
        "last_latency_ms": counts.last_latency_ms,
    })
}

fn serve_stats(listener: TcpListener, counts: Arc<Mutex<Counts>>, started: Instant) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
        // The whole request head is read before answering: closing a socket with unread
        // bytes in it resets the connection instead of ending it.
        let mut reader = BufReader::new(&conn);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 0) && !header.trim_end().is_empty() {
            header.clear();
        }
        let (code, body) = if line.starts_with("GET /stats ") {
            let c = counts.lock().unwrap_or_else(|e| e.into_inner());
            ("200 OK", stats(&c, started).to_string())
        } else {
            ("404 Not Found", json!({"error": "GET /stats"}).to_string())
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

fn main() {
    let c = match args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgefleet-camera-app: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let counts = Arc::new(Mutex::new(Counts::default()));
    let listener = match TcpListener::bind(&c.stats) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("edgefleet-camera-app: listen on {}: {e}", c.stats);
            std::process::exit(1);
        }
    };
    let shared = counts.clone();
    std::thread::spawn(move || serve_stats(listener, shared, started));
    println!(
        "camera app: a frame to {} (model {}) every {:?}; counts on http://{}/stats",
        c.sidecar, c.model, c.interval, c.stats
    );
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone()) {
        eprintln!("edgefleet-camera-app: cannot handle SIGTERM: {e}");
    }
    let mut seed = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seed += 1;
        let t = Instant::now();
        let result = infer(&c, seed);
        let mut n = counts.lock().unwrap_or_else(|e| e.into_inner());
        n.sent += 1;
        match result {
            Ok(version) => {
                n.answered += 1;
                n.last_latency_ms = t.elapsed().as_secs_f64() * 1e3;
                *n.by_version.entry(version.clone()).or_default() += 1;
                if n.version.as_deref() != Some(version.as_str()) {
                    let unix = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default();
                    println!(
                        "camera app: answers now come from model version {version} (unix time {unix})"
                    );
                    n.version = Some(version);
                }
            }
            Err(e) => {
                if n.answered == 0 {
                    n.failed_before_first_answer += 1;
                } else {
                    n.failed_after_first_answer += 1;
                    let at = started.elapsed().as_secs_f64();
                    n.recent_failures.push((at, e.clone()));
                    if n.recent_failures.len() > 20 {
                        n.recent_failures.remove(0);
                    }
                    println!("camera app: request failed after the first answer: {e}");
                }
                n.last_error = Some(e);
            }
        }
        drop(n);
        std::thread::sleep(c.interval);
    }
    let n = counts.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "camera app: stopping on SIGTERM; final counts {}",
        stats(&n, started)
    );
}
