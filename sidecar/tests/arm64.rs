//! Same answers on both architectures: one model file served by this machine's (amd64) sidecar
//! and by the arm64 sidecar cross-built by `hack/cross.sh` and run under qemu-user, on the first
//! 256 images of the real Fashion-MNIST test set. For the fp32 fixture and for a static int8
//! candidate (where tract's kernels differ: x86 computes QDQ in float, aarch64 in int8), top-1 is
//! identical and logits stay within the tolerances below; the arm64 sidecar also serves with ONNX
//! Runtime's own aarch64 library. `make bench-arm64` records the differences in full.

mod common;

use edgefleet_optimizer::calibrate::{Method, observe};
use edgefleet_optimizer::dataset::Dataset;
use edgefleet_optimizer::model::{Model, encode};
use edgefleet_optimizer::passes::{fold_bn::fold_batch_norm, qdq::quantize_static};
use edgefleet_runtime::argmax;
use edgefleet_testenv::{Process, free_port, hack};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const IMAGES: usize = 256;
const BATCH: usize = 32;
/// fp32: both architectures compute in float; only summation order and FMA differ.
const FP32_TOLERANCE: f32 = 1e-3;
/// int8: the same quantization grid, but aarch64 accumulates in int32 where x86 dequantizes and
/// computes in float, so a logit may move by a few of the output's quantization steps.
const INT8_TOLERANCE: f32 = 0.25;

/// The real Fashion-MNIST test set, built from Debian's package on first use.
fn test_set() -> Dataset {
    Dataset::load(&PathBuf::from(hack("datasets.sh", &[])).join("fashion-mnist-test.npz")).unwrap()
}

/// How the arm64 sidecar runs here: under qemu-user with Debian's multiarch arm64 libraries
/// (hack/cross.sh says why not a cross sysroot).
fn under_qemu(arm64: &Path) -> [&str; 2] {
    ["qemu-aarch64-static", arm64.to_str().unwrap()]
}

/// The logits of the first `images` test images from the amd64 sidecar and from the arm64 one
/// (`qemu`), both serving `model` with tract.
async fn tract_on_both(
    qemu: &[&str],
    model: &Path,
    data: &Dataset,
    images: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let amd64 = env!("CARGO_BIN_EXE_edgefleet-sidecar");
    let native = serve("amd64-sidecar", &[amd64], model, "tract", &[]).await;
    let emulated = serve("arm64-sidecar", qemu, model, "tract", &[]).await;
    (
        logits(&native, data, images).await,
        logits(&emulated, data, images).await,
    )
}

/// The arm64 sidecar, cross-built once (cached in target/cross). `hack/cross.sh dev` is the
/// same cargo run as the arm64 images' (`hack/images.sh debug`) and `make test`'s early start,
/// so that whichever comes first builds for all.
fn arm64_sidecar() -> PathBuf {
    let dir = hack("cross.sh", &["dev"]);
    let bin = Path::new(&dir).join("edgefleet-sidecar");
    let file = Command::new("file").arg(&bin).output().unwrap();
    let what = String::from_utf8_lossy(&file.stdout);
    assert!(what.contains("ARM aarch64"), "not an arm64 binary: {what}");
    bin
}

struct Served {
    _process: Process,
    base: String,
    _cache: tempfile::TempDir,
}

/// Starts a sidecar (`program` then `args`, e.g. qemu and the arm64 binary) serving `model`.
async fn serve(
    name: &str,
    program: &[&str],
    model: &Path,
    runtime: &str,
    env: &[(&str, &str)],
) -> Served {
    edgefleet_artifact::install_tls_provider();
    let port = free_port();
    let cache = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(program[0]);
    cmd.args(&program[1..])
        .args(["serve", "--name", "fashion", "--runtime", runtime])
        .arg("--model")
        .arg(model)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--cache")
        .arg(cache.path())
        .envs(env.iter().copied());
    let process = Process::spawn_standalone(name, cmd).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    // Emulated start-up (and its self-test of the model) is slower than native.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(r) = client.get(format!("{base}/v2/health/ready")).send().await
            && r.status() == 200
        {
            return Served {
                _process: process,
                base,
                _cache: cache,
            };
        }
        assert!(
            Instant::now() < deadline,
            "{name} not ready: {}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The logits of the first `images` test images (a multiple of [`BATCH`]), as `served` answers
/// them.
async fn logits(served: &Served, data: &Dataset, images: usize) -> Vec<Vec<f32>> {
    let client = reqwest::Client::new();
    let mut all = Vec::new();
    for start in (0..images).step_by(BATCH) {
        let indices: Vec<usize> = (start..start + BATCH).collect();
        let (_, xs) = data.batch(&indices);
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [BATCH, 1, 28, 28], "data": xs}]});
        let r = client
            .post(format!("{}/v2/models/fashion/infer", served.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let flat: Vec<f32> = v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(flat.len(), BATCH * 10, "{v}");
        all.extend(flat.chunks(10).map(<[f32]>::to_vec));
    }
    all
}

/// (images whose top-1 differs, largest absolute logit difference).
fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> (usize, f32) {
    assert_eq!(a.len(), b.len());
    let flips = a
        .iter()
        .zip(b)
        .filter(|(x, y)| argmax(x) != argmax(y))
        .count();
    let max = a
        .iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max);
    (flips, max)
}

/// The fixture with BatchNorms folded and every layer quantized statically to int8 (activation
/// ranges from 256 test images the comparison does not use); `full_integer` quantizes every
/// activation, not only the layers' inputs.
fn int8_static(data: &Dataset, full_integer: bool) -> Vec<u8> {
    let base = Model::load(&common::fixture()).unwrap();
    let mut model = base.proto.clone();
    fold_batch_norm(model.graph.as_mut().unwrap()).unwrap();
    let calibration: Vec<usize> = (9000..9256).collect();
    let ranges = observe(&model, data, &calibration, BATCH)
        .unwrap()
        .into_iter()
        .map(|(k, o)| (k, o.range(Method::MinMax)))
        .collect();
    let report = quantize_static(&mut model, &ranges, &[], full_integer).unwrap();
    assert!(report.kept_float.is_empty(), "{report:?}");
    encode(&model)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_arm64_sidecar_gives_the_answers_the_amd64_one_gives() {
    let data = test_set();
    let arm64 = arm64_sidecar();
    let ort_arm64 = hack("ort-lib.sh", &["arm64"]);
    let dir = tempfile::tempdir().unwrap();
    let int8 = dir.path().join("int8-static.onnx");
    std::fs::write(&int8, int8_static(&data, false)).unwrap();
    let qemu = under_qemu(&arm64);

    for (model, tolerance) in [(common::fixture(), FP32_TOLERANCE), (int8, INT8_TOLERANCE)] {
        let (a, b) = tract_on_both(&qemu, &model, &data, IMAGES).await;
        let (flips, max) = compare(&a, &b);
        eprintln!(
            "{}: tract amd64 vs arm64 on {IMAGES} images: {flips} top-1 differ, max |logit diff| {max:.6}",
            model.display()
        );
        assert_eq!(
            flips,
            0,
            "top-1 differs between amd64 and arm64 for {}",
            model.display()
        );
        assert!(
            max <= tolerance,
            "logits of {} differ by {max} > {tolerance}",
            model.display()
        );
        // ONNX Runtime's aarch64 library, loaded by the arm64 sidecar, agrees with tract on
        // arm64 the same way.
        let ort = serve(
            "arm64-sidecar-onnxruntime",
            &qemu,
            &model,
            "onnxruntime",
            &[("ORT_DYLIB_PATH", ort_arm64.as_str())],
        )
        .await;
        let c = logits(&ort, &data, IMAGES).await;
        let (flips, max) = compare(&b, &c);
        eprintln!(
            "{}: arm64 tract vs arm64 onnxruntime: {flips} top-1 differ, max |logit diff| {max:.6}",
            model.display()
        );
        assert_eq!(
            flips, 0,
            "onnxruntime on arm64 disagrees with tract on arm64"
        );
        assert!(
            max <= tolerance,
            "onnxruntime on arm64: logits differ by {max}"
        );
    }
}

/// `make bench-arm64` (hack/bench-arm64.sh): where amd64 and arm64 differ, per candidate, on
/// `ARM64_BENCH_IMAGES` test images (default 1024): top-1 changes, logit differences and each
/// architecture's accuracy. Writes the JSON to `ARM64_BENCH_OUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: make bench-arm64"]
async fn bench_where_amd64_and_arm64_differ() {
    let images: usize = std::env::var("ARM64_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let images = images.div_ceil(BATCH) * BATCH;
    let out = std::env::var("ARM64_BENCH_OUT").expect("ARM64_BENCH_OUT names the output file");
    let data = test_set();
    let labels: Vec<usize> = data.labels.as_ref().expect("the test set is labelled")[..images]
        .iter()
        .map(|&y| y as usize)
        .collect();
    let arm64 = arm64_sidecar();
    let dir = tempfile::tempdir().unwrap();
    let mut candidates = vec![("fp32", common::fixture())];
    for (name, full) in [("int8-static", false), ("full-integer", true)] {
        let path = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&path, int8_static(&data, full)).unwrap();
        candidates.push((name, path));
    }
    let qemu = under_qemu(&arm64);
    let accuracy = |l: &[Vec<f32>]| {
        l.iter()
            .zip(&labels)
            .filter(|(x, y)| argmax(x) == **y)
            .count() as f64
            / images as f64
    };
    let mut rows = Vec::new();
    for (name, model) in candidates {
        let (a, b) = tract_on_both(&qemu, &model, &data, images).await;
        let (flips, max) = compare(&a, &b);
        let values = a.iter().map(Vec::len).sum::<usize>() as f64;
        let mean = a
            .iter()
            .zip(&b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| f64::from((p - q).abs())))
            .sum::<f64>()
            / values;
        rows.push(json!({
            "candidate": name,
            "runtime": "tract",
            "top1_differ": flips,
            "max_abs_logit_diff": max,
            "mean_abs_logit_diff": mean,
            "accuracy_amd64": accuracy(&a),
            "accuracy_arm64": accuracy(&b),
        }));
        eprintln!("{}", rows.last().unwrap());
    }
    let result = json!({"area": "arm64", "images": images, "candidates": rows});
    std::fs::write(out, result.to_string()).unwrap();
}
