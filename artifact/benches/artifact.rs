//! `make bench-artifact`: artifact figures against a real Debian `docker-registry` on loopback.
//!
//! - bytes over the air per technique (every passing candidate of an `optimize
//!   --keep-candidates` run, packed as the operator publishes it): what a device downloads
//!   (manifest, config, model, self-test; not the report) vs the fp32 artifact packed the same
//!   way, and the model layer alone vs the fp32 model layer;
//! - pull throughput (a 64 MiB artifact into an empty cache, median of 3);
//! - bytes fetched again after a download cut at 50% (target: < 5% of the blob beyond the
//!   remainder);
//! - `kubectl apply` → `Published` for the Fashion-MNIST example, when the script measured it
//!   (`BENCH_APPLY_TO_PUBLISHED_S`).
//!
//! Inputs (set by hack/bench-artifact.sh): `BENCH_RUNS` (comma-separated `optimize --out`
//! directories run with --keep-candidates), `BENCH_BASE` (the fp32 model). Prints the JSON as
//! its last line and writes bench-results/artifact.json.

use edgefleet_artifact::manifest::{Compression, Contents};
use edgefleet_artifact::{Cache, Facts, Registry, RegistryOptions, pack};
use edgefleet_testenv::net::{cutting_proxy, noise};
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn facts(technique: &str) -> Facts {
    Facts {
        device_class: "bench".into(),
        runtime: "tract".into(),
        technique: technique.into(),
        accuracy: 0.0,
        ..Default::default()
    }
}

/// Everything in the artifact: manifest, config and every layer.
fn air_bytes(p: &edgefleet_artifact::Packed) -> u64 {
    p.blobs().map(|b| b.descriptor.size).sum::<u64>() + p.manifest_bytes.len() as u64
}

/// What a device downloads (`pull_for_device`): all but the report layer.
fn device_bytes(p: &edgefleet_artifact::Packed) -> u64 {
    air_bytes(p) - p.layers[1].descriptor.size
}

/// Every passing candidate of each run, packed with the run's report and self-test.
fn techniques(runs: &[PathBuf], base: &Path) -> Value {
    let base_model = std::fs::read(base).unwrap();
    let fp32_layer = pack(
        &Contents {
            model: &base_model,
            ..Default::default()
        },
        &facts("fp32"),
        Compression::Auto,
    )
    .unwrap()
    .layers[0]
        .descriptor
        .size;
    let mut rows = Vec::new();
    for run in runs {
        let report_bytes = std::fs::read(run.join("report.json")).unwrap();
        let report: Value = serde_json::from_slice(&report_bytes).unwrap();
        let selftest = std::fs::read(run.join("selftest.json")).ok();
        let packed_with = |model: &[u8], technique: &str| {
            pack(
                &Contents {
                    model,
                    report: Some(&report_bytes),
                    selftest: selftest.as_deref(),
                    // The bench compares sizes; the label of packed candidates does not change them.
                    ..Default::default()
                },
                &facts(technique),
                Compression::Auto,
            )
            .unwrap()
        };
        // The fp32 artifact with the same report and self-test: the peer of every candidate.
        let fp32 = packed_with(&base_model, "fp32");
        for c in report["candidates"].as_array().unwrap() {
            let Some(file) = c["file"].as_str() else {
                continue;
            };
            let model = std::fs::read(file).unwrap();
            let technique = c["technique"].as_str().unwrap();
            let packed = packed_with(&model, technique);
            rows.push(json!({
                "device_class": report["device_class"],
                "technique": technique,
                "parameters": c["parameters"],
                "accuracy": c["accuracy"],
                "model_bytes": model.len(),
                "model_layer_bytes": packed.layers[0].descriptor.size,
                "model_layer_vs_fp32": packed.layers[0].descriptor.size as f64 / fp32_layer as f64,
                "artifact_bytes": air_bytes(&packed),
                "device_bytes": device_bytes(&packed),
                "device_bytes_vs_fp32": device_bytes(&packed) as f64 / device_bytes(&fp32) as f64,
                "selftest_layer_bytes": packed.layers.get(2).map(|l| l.descriptor.size),
                "report_layer_bytes": packed.layers[1].descriptor.size,
            }));
        }
    }
    json!({"fp32_model_layer_bytes": fp32_layer, "candidates": rows})
}

async fn transport() -> Value {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let size = 64 << 20;
    let model = noise(size);
    let packed = pack(
        &Contents {
            model: &model,
            ..Default::default()
        },
        &facts("noise"),
        Compression::None,
    )
    .unwrap();
    let options = |addr: &str| RegistryOptions {
        plain_http: vec![addr.to_string()],
        attempts: 1,
        ..Default::default()
    };
    let registry = Registry::new(options(&reg.addr)).unwrap();
    let started = Instant::now();
    let pushed = registry
        .push(&format!("{}/bench/big", reg.addr), &packed)
        .await
        .unwrap();
    let push_s = started.elapsed().as_secs_f64();
    let mut pulls = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let started = Instant::now();
        let pulled = registry.pull(&pushed.reference, &cache).await.unwrap();
        pulls.push(started.elapsed().as_secs_f64());
        assert_eq!(pulled.model.size(), size as u64);
    }
    pulls.sort_by(f64::total_cmp);
    let pull_s = pulls[1];

    // Cut at 50%, then resume.
    let proxy = cutting_proxy(reg.addr.clone(), size / 2).await;
    let cut = Registry::new(options(&proxy)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let digest = packed.digest.to_string();
    assert!(
        cut.pull(&format!("{proxy}/bench/big@{digest}"), &cache)
            .await
            .is_err()
    );
    let layer = packed.manifest.layers[0]
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    let partial = std::fs::metadata(dir.path().join("partial").join(&layer))
        .unwrap()
        .len();
    let resumed = registry.pull(&pushed.reference, &cache).await.unwrap();
    let remainder = size as u64 - partial;
    let extra = resumed.stats.fetched_bytes as i64 - remainder as i64;
    json!({
        "blob_bytes": size,
        "push_seconds": push_s,
        "push_mib_per_s": (size as f64 / (1 << 20) as f64) / push_s,
        "pull_seconds_median_of_3": pull_s,
        "pull_mib_per_s": (size as f64 / (1 << 20) as f64) / pull_s,
        "interrupted_at_bytes": partial,
        "refetched_bytes": resumed.stats.fetched_bytes,
        "remainder_bytes": remainder,
        "refetched_beyond_remainder_bytes": extra,
        "refetched_beyond_remainder_fraction_of_blob": extra as f64 / size as f64,
    })
}

#[tokio::main]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let runs: Vec<PathBuf> = std::env::var("BENCH_RUNS")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let base = std::env::var("BENCH_BASE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("optimizer/fixtures/fashion-cnn/model.onnx"));
    let apply = std::env::var("BENCH_APPLY_TO_PUBLISHED_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let result = json!({
        "bench": "artifact",
        "machine": format!("{} cores, {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), std::env::consts::ARCH),
        "over_the_air": techniques(&runs, &base),
        "transport": transport().await,
        "apply_to_published_seconds": apply,
    });
    let out = root.join("bench-results/artifact.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{result}");
}
