//! Interop with an OCI client nobody here wrote: `oras`, built from its Go module by
//! `hack/build-tool.sh oras`. It must read what we push (media types, annotations, digests intact),
//! and we must pull a ModelPack model that `oras push` published.

use edgefleet_artifact::manifest::{Compression, Contents};
use edgefleet_artifact::{Cache, Digest, Facts, Registry, RegistryOptions, SelfTest, media, pack};
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry};
use edgefleet_testenv::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;

fn oras() -> PathBuf {
    edgefleet_testenv::tool("oras").unwrap()
}

fn run(cwd: &Path, cmd: &mut Command) -> Vec<u8> {
    let out = cmd.current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn fixture_model() -> Vec<u8> {
    std::fs::read(repo_root().join("optimizer/fixtures/fashion-cnn/model.onnx")).unwrap()
}

#[tokio::test]
async fn oras_reads_what_we_push() {
    let oras = oras();
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = fixture_model();
    let selftest = SelfTest::new(vec![1, 2], &[(vec![0.25, 0.5], 4)]);
    let report = br#"{"format":"edgefleet.dev/optimization-report/v1"}"#;
    let facts = Facts {
        device_class: "cpu-int8".into(),
        runtime: "tract".into(),
        technique: "fp32".into(),
        accuracy: 0.8946,
        ..Default::default()
    };
    let packed = pack(
        &Contents {
            model: &model,
            report: Some(report),
            selftest: Some(&selftest.to_json()),
        },
        &facts,
        Compression::Auto,
    )
    .unwrap();
    let registry = Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        ..Default::default()
    })
    .unwrap();
    let pushed = registry
        .push(&format!("{}/models/ours:v1", reg.addr), &packed)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let fetched = run(
        dir.path(),
        Command::new(&oras).args(["manifest", "fetch", "--plain-http", &pushed.reference]),
    );
    assert_eq!(
        Digest::of(&fetched),
        packed.digest,
        "oras sees the same manifest bytes"
    );
    let m: serde_json::Value = serde_json::from_slice(&fetched).unwrap();
    assert_eq!(m["artifactType"], media::ARTIFACT_TYPE);
    assert_eq!(m["config"]["mediaType"], media::MODEL_CONFIG);
    assert_eq!(m["layers"][0]["mediaType"], media::WEIGHT_RAW_ZSTD);
    assert_eq!(m["annotations"][media::DEVICE_CLASS], "cpu-int8");
    let resolved = run(
        dir.path(),
        Command::new(&oras).args([
            "resolve",
            "--plain-http",
            &format!("{}/models/ours:v1", reg.addr),
        ]),
    );
    assert_eq!(
        String::from_utf8(resolved).unwrap().trim(),
        packed.digest.to_string()
    );

    run(
        dir.path(),
        Command::new(&oras).args(["pull", "--plain-http", &pushed.reference, "-o", "out"]),
    );
    let out = dir.path().join("out");
    let z = std::fs::read(out.join("model.onnx.zst")).unwrap();
    assert_eq!(zstd::stream::decode_all(z.as_slice()).unwrap(), model);
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), report);
    let st = zstd::stream::decode_all(
        std::fs::read(out.join("selftest.json.zst"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(SelfTest::from_json(&st).unwrap(), selftest);
}

#[tokio::test]
async fn we_pull_a_modelpack_model_oras_pushed() {
    let oras = oras();
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = fixture_model();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), &model).unwrap();
    let config = serde_json::json!({
        "descriptor": {"name": "fashion-cnn"},
        "config": {"format": "onnx", "precision": "fp32"},
        "modelfs": {"type": "layers", "diff_ids": [Digest::of(&model).to_string()]},
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let target = format!("{}/models/theirs:v1", reg.addr);
    run(
        dir.path(),
        Command::new(&oras).args([
            "push",
            "--plain-http",
            &target,
            "--artifact-type",
            media::ARTIFACT_TYPE,
            "--config",
            &format!("config.json:{}", media::MODEL_CONFIG),
            &format!("model.onnx:{}", media::WEIGHT_RAW),
        ]),
    );
    let digest = String::from_utf8(run(
        dir.path(),
        Command::new(&oras).args(["resolve", "--plain-http", &target]),
    ))
    .unwrap();
    let registry = Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        ..Default::default()
    })
    .unwrap();
    let cache = Cache::open(dir.path().join("cache")).unwrap();
    let pulled = registry
        .pull(
            &format!("{}/models/theirs@{}", reg.addr, digest.trim()),
            &cache,
        )
        .await
        .unwrap();
    assert_eq!(pulled.model.read().unwrap(), model);
    assert!(
        pulled.artifact.facts.is_none(),
        "oras wrote no edgefleet facts"
    );
    assert_eq!(pulled.artifact.model.diff_id, Some(Digest::of(&model)));
    assert_eq!(
        pulled.config.descriptor.name.as_deref(),
        Some("fashion-cnn")
    );
    assert!(pulled.selftest.is_none() && pulled.report.is_none());
}
