//! Interop with an OCI client nobody here wrote: `oras`, built from its Go module by
//! `hack/build-tool.sh oras`. It must read what we push (media types, annotations, digests intact),
//! and we must pull a ModelPack model that `oras push` published.

use edgefleet_artifact::manifest::{Compression, Contents};
use edgefleet_artifact::signature::{Refusal, signature_tag};
use edgefleet_artifact::{
    Cache, Digest, Error, Facts, Registry, RegistryOptions, SelfTest, SigningKeyPem, media, pack,
};
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
            ..Default::default()
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

fn cosign() -> PathBuf {
    edgefleet_testenv::tool("cosign").unwrap()
}

/// A key pair on disk: our PKCS#8 PEM, its public key, and the same key imported into cosign's
/// own (encrypted, empty password) format, since `cosign sign --key` reads only that.
fn keys(dir: &Path) -> (SigningKeyPem, PathBuf, PathBuf) {
    let key = SigningKeyPem::generate();
    std::fs::write(dir.join("ec.pem"), key.to_pem()).unwrap();
    let public = dir.join("ours.pub");
    std::fs::write(&public, key.public().to_pem()).unwrap();
    run(
        dir,
        Command::new(cosign())
            .args([
                "import-key-pair",
                "--key",
                "ec.pem",
                "--output-key-prefix",
                "imported",
                "-y",
            ])
            .env("COSIGN_PASSWORD", ""),
    );
    (key, public, dir.join("imported.key"))
}

/// The fixture model as an artifact; `accuracy` makes artifacts differ.
async fn pushed_model(reg: &TestRegistry, tag: &str, accuracy: f64) -> (Registry, String) {
    let model = fixture_model();
    let packed = pack(
        &Contents {
            model: &model,
            ..Default::default()
        },
        &Facts {
            device_class: "cpu-int8".into(),
            runtime: "tract".into(),
            technique: "fp32".into(),
            accuracy,
            ..Default::default()
        },
        Compression::Auto,
    )
    .unwrap();
    let registry = Registry::new(RegistryOptions {
        plain_http: vec![reg.addr.clone()],
        ..Default::default()
    })
    .unwrap();
    let pushed = registry
        .push(&format!("{}/models/signed:{tag}", reg.addr), &packed)
        .await
        .unwrap();
    (registry, pushed.reference)
}

fn cosign_verify(dir: &Path, public: &Path, reference: &str) -> std::process::Output {
    Command::new(cosign())
        .current_dir(dir)
        .args(["verify", "--key"])
        .arg(public)
        .args([
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            "--new-bundle-format=false",
            "--output",
            "json",
            reference,
        ])
        .output()
        .unwrap()
}

#[tokio::test]
async fn cosign_verifies_what_we_sign_and_we_verify_what_cosign_signs() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, public_path, cosign_key) = keys(dir.path());
    let public = key.public();

    // Ours → cosign.
    let (registry, ours) = pushed_model(&reg, "ours", 0.9).await;
    let sig = registry.sign(&ours, &key).await.unwrap();
    assert!(sig.ends_with(".sig"), "{sig}");
    let out = cosign_verify(dir.path(), &public_path, &ours);
    assert!(
        out.status.success(),
        "cosign verify refused our signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = ours.rsplit('@').next().unwrap();
    assert_eq!(
        verified[0]["critical"]["image"]["docker-manifest-digest"],
        digest
    );
    registry.verify_signature(&ours, &public).await.unwrap();

    // cosign → ours.
    let (_, theirs) = pushed_model(&reg, "theirs", 0.8).await;
    run(
        dir.path(),
        Command::new(cosign())
            .args(["sign", "--key"])
            .arg(&cosign_key)
            .args([
                "--tlog-upload=false",
                "--use-signing-config=false",
                "--new-bundle-format=false",
                "--allow-http-registry",
                "-y",
                &theirs,
            ])
            .env("COSIGN_PASSWORD", ""),
    );
    registry.verify_signature(&theirs, &public).await.unwrap();

    // Another key: refused by both.
    let stranger = SigningKeyPem::generate();
    match registry.verify_signature(&theirs, &stranger.public()).await {
        Err(Error::Signature {
            refusal: Refusal::WrongKey,
            reference,
        }) => assert_eq!(reference, theirs),
        other => panic!("a stranger's key verified: {other:?}"),
    }
    // Unsigned, and a valid signature of another artifact copied next to this one: refused.
    let (_, bare) = pushed_model(&reg, "bare", 0.7).await;
    match registry.verify_signature(&bare, &public).await {
        Err(Error::Signature {
            refusal: Refusal::Unsigned(_),
            ..
        }) => {}
        other => panic!("an unsigned artifact verified: {other:?}"),
    }
    let digest_of = |r: &str| r.rsplit('@').next().unwrap().parse::<Digest>().unwrap();
    let sig_of = |d: &Digest| format!("{}/models/signed:{}", reg.addr, signature_tag(d));
    let (_, _, copied) = registry.manifest(&sig_of(&digest_of(&ours))).await.unwrap();
    std::fs::write(dir.path().join("copied.json"), &copied).unwrap();
    run(
        dir.path(),
        Command::new(oras()).args([
            "manifest",
            "push",
            "--plain-http",
            &sig_of(&digest_of(&bare)),
            "copied.json",
        ]),
    );
    match registry.verify_signature(&bare, &public).await {
        Err(Error::Signature {
            refusal: Refusal::OtherDigest { signed, .. },
            ..
        }) => {
            assert_eq!(signed, digest_of(&ours).to_string())
        }
        other => panic!("a copied signature verified: {other:?}"),
    }
    let stranger_pub = dir.path().join("stranger.pub");
    std::fs::write(&stranger_pub, stranger.public().to_pem()).unwrap();
    assert!(
        !cosign_verify(dir.path(), &stranger_pub, &ours)
            .status
            .success()
    );
}
