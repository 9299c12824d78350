//! The artifact library against real Debian `docker-registry` instances on loopback: round trip,
//! tampered blobs, interrupted downloads, credentials and TLS, and several pullers on one cache.

use edgefleet_artifact::manifest::{Compression, Contents};
use edgefleet_artifact::url::fetch_url;
use edgefleet_artifact::{
    Cache, Digest, DockerConfig, Error, Facts, Registry, RegistryOptions, SelfTest, pack,
};
use edgefleet_testenv::net::{cutting_proxy, noise};
use edgefleet_testenv::registry::{RegistryConfig, TestRegistry};
use edgefleet_testenv::repo_root;
use std::time::Duration;

fn fixture_model() -> Vec<u8> {
    std::fs::read(repo_root().join("optimizer/fixtures/fashion-cnn/model.onnx")).unwrap()
}

fn facts() -> Facts {
    Facts {
        name: Some("fashion-mnist".into()),
        device_class: "cpu-int8".into(),
        runtime: "tract".into(),
        technique: "fp32".into(),
        accuracy: 0.8946,
        base_accuracy: Some(0.8946),
        precision: Some("fp32".into()),
        ..Default::default()
    }
}

/// `model` alone (no report or self-test), as an artifact.
fn pack_model(model: &[u8], compression: Compression) -> edgefleet_artifact::Packed {
    pack(
        &Contents {
            model,
            ..Default::default()
        },
        &facts(),
        compression,
    )
    .unwrap()
}

fn plain(registry: &str) -> RegistryOptions {
    RegistryOptions {
        plain_http: vec![registry.to_string()],
        attempts: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn round_trip_skips_known_blobs_and_serves_again_from_cache() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = fixture_model();
    let selftest = SelfTest::new(vec![1, 2], &[(vec![1.0, 2.0], 3)]);
    let report = br#"{"format":"edgefleet.dev/optimization-report/v1"}"#;
    let packed = pack(
        &Contents {
            model: &model,
            report: Some(report),
            selftest: Some(&selftest.to_json()),
            ..Default::default()
        },
        &facts(),
        Compression::Auto,
    )
    .unwrap();
    let registry = Registry::new(plain(&reg.addr)).unwrap();
    let target = format!("{}/models/fashion:v1", reg.addr);
    let first = registry.push(&target, &packed).await.unwrap();
    assert_eq!(first.digest, packed.digest);
    assert_eq!(first.skipped_blobs, 0);
    assert_eq!(
        first.reference,
        format!("{}/models/fashion@{}", reg.addr, packed.digest)
    );
    let blob_bytes: u64 = packed.blobs().map(|b| b.descriptor.size).sum();
    assert_eq!(
        first.uploaded_bytes,
        blob_bytes + packed.manifest_bytes.len() as u64
    );
    let again = registry.push(&target, &packed).await.unwrap();
    assert_eq!(
        again.skipped_blobs, 4,
        "model, report, selftest and config are known"
    );
    assert_eq!(again.uploaded_bytes, packed.manifest_bytes.len() as u64);

    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let pulled = registry.pull(&first.reference, &cache).await.unwrap();
    assert_eq!(
        pulled.model.read().unwrap(),
        model,
        "the model comes back byte for byte"
    );
    assert_eq!(pulled.model.digest(), &Digest::of(&model));
    assert_eq!(pulled.artifact.digest, packed.digest);
    assert!(pulled.artifact.model.compressed);
    let mut expected_facts = facts();
    expected_facts.quantization = None;
    assert_eq!(pulled.artifact.facts.clone().unwrap(), expected_facts);
    assert_eq!(pulled.report.as_deref(), Some(&report[..]));
    assert_eq!(pulled.selftest.as_ref(), Some(&selftest));
    assert_eq!(pulled.stats.fetched_bytes, blob_bytes);
    assert_eq!(pulled.config.config.format.as_deref(), Some("onnx"));
    drop(pulled);

    // A device skips the report layer.
    let device_dir = tempfile::tempdir().unwrap();
    let device = registry
        .pull_for_device(&first.reference, &Cache::open(device_dir.path()).unwrap())
        .await
        .unwrap();
    assert!(device.report.is_none() && device.selftest.is_some());
    assert_eq!(
        device.stats.fetched_bytes,
        blob_bytes - packed.layers[1].descriptor.size
    );
    drop(device);

    let cached = registry.pull(&first.reference, &cache).await.unwrap();
    assert_eq!(cached.stats.fetched_bytes, 0, "everything from the cache");
    assert_eq!(
        cached.stats.cached_blobs, 5,
        "manifest, config and three layers"
    );

    // Inspect resolves a tag (for people); pull refuses one.
    let (inspected, _) = registry.inspect(&target).await.unwrap();
    assert_eq!(inspected.digest, packed.digest);
    let e = registry
        .pull(&target, &cache)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("by digest only") && e.contains("models/fashion:v1"),
        "{e}"
    );
    // Unknown digest: a clear not-found naming the reference.
    let missing = format!("{}/models/fashion@{}", reg.addr, Digest::of(b"nothing"));
    let e = registry.pull(&missing, &cache).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    // Plain HTTP only where allowed: the same registry without the exception is refused.
    let strict = Registry::new(RegistryOptions {
        attempts: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(strict.push(&target, &packed).await.is_err());
}

#[tokio::test]
async fn a_cached_artifact_needs_no_registry_and_a_corrupt_cache_entry_is_fetched_again() {
    let mut reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = fixture_model();
    let packed = pack_model(&model, Compression::Zstd);
    // Retries on: the first request after the restart may meet a pooled connection to the
    // registry process that is gone.
    let registry = Registry::new(RegistryOptions {
        attempts: 3,
        backoff: Duration::from_millis(50),
        ..plain(&reg.addr)
    })
    .unwrap();
    let pushed = registry
        .push(&format!("{}/models/offline", reg.addr), &packed)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let first = registry
        .pull_for_device(&pushed.reference, &cache)
        .await
        .unwrap();
    let model_path = first.model.path().to_path_buf();
    drop(first);

    // No registry at all: everything comes from the cache, not one request is tried.
    reg.stop();
    let offline = registry
        .pull_for_device(&pushed.reference, &cache)
        .await
        .unwrap();
    assert_eq!(offline.stats.fetched_bytes, 0);
    assert_eq!(offline.model.read().unwrap(), model);
    drop(offline);

    // Bytes altered on the device's disk: the layer is fetched again, the model rebuilt.
    reg.restart().unwrap();
    let layer = packed.layers[0].descriptor.clone();
    let layer_path = cache.path_of(&layer.digest.parse().unwrap());
    let mut bytes = std::fs::read(&layer_path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&layer_path, &bytes).unwrap();
    let mut raw = std::fs::read(&model_path).unwrap();
    raw[100] ^= 0xff;
    std::fs::write(&model_path, &raw).unwrap();
    let repaired = registry
        .pull_for_device(&pushed.reference, &cache)
        .await
        .unwrap();
    assert_eq!(repaired.stats.corrupt_blobs, 1, "the compressed layer");
    assert_eq!(repaired.stats.fetched_bytes, layer.size);
    assert_eq!(
        repaired.model.read().unwrap(),
        model,
        "the corrupt uncompressed model is rebuilt, not served"
    );
}

#[tokio::test]
async fn large_blobs_go_in_chunks() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = noise(9 << 20); // over the 4 MiB chunk size: at least three PATCH requests
    let packed = pack_model(&model, Compression::Auto);
    let registry = Registry::new(RegistryOptions {
        monolithic_max: 1 << 20,
        ..plain(&reg.addr)
    })
    .unwrap();
    let pushed = registry
        .push(&format!("{}/models/big", reg.addr), &packed)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pulled = registry
        .pull(&pushed.reference, &Cache::open(dir.path()).unwrap())
        .await
        .unwrap();
    assert!(!pulled.artifact.model.compressed, "noise is stored raw");
    assert_eq!(pulled.model.read().unwrap(), model);
    // The registry's access log shows the upload went in PATCH chunks, the small config in one PUT.
    let log = reg.log();
    let patches = log
        .lines()
        .filter(|l| l.contains("\"PATCH /v2/models/big/blobs/uploads/"))
        .count();
    assert!(
        patches >= 3,
        "{patches} PATCH requests for a 9 MiB blob in 4 MiB chunks:\n{log}"
    );
}

#[tokio::test]
async fn a_blob_altered_on_the_registry_disk_is_refused_and_never_cached() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = fixture_model();
    let packed = pack_model(&model, Compression::Auto);
    let registry = Registry::new(plain(&reg.addr)).unwrap();
    let pushed = registry
        .push(&format!("{}/models/tamper", reg.addr), &packed)
        .await
        .unwrap();
    let layer = packed.manifest.layers[0].digest.clone();
    let path = reg.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let e = registry.pull(&pushed.reference, &cache).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{text}");
    assert!(
        text.contains(&layer) && text.contains("model layer"),
        "{text}"
    );
    let layer: Digest = layer.parse().unwrap();
    assert!(
        !cache.contains(&layer),
        "tampered bytes never enter the cache"
    );
    assert!(
        cache.lease(&Digest::of(&model)).unwrap().is_none(),
        "no model to load"
    );
    let partial = dir.path().join("partial").join(layer.hex());
    assert_eq!(std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0), 0);
}

#[tokio::test]
async fn an_interrupted_download_resumes_and_fetches_only_the_remainder() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let size = 6 << 20;
    let model = noise(size);
    let packed = pack_model(&model, Compression::None);
    let direct = Registry::new(plain(&reg.addr)).unwrap();
    direct
        .push(&format!("{}/models/resume", reg.addr), &packed)
        .await
        .unwrap();
    let proxy = cutting_proxy(reg.addr.clone(), size / 2).await;
    let via_proxy = Registry::new(RegistryOptions {
        plain_http: vec![proxy.clone()],
        attempts: 1,
        read_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let e = via_proxy
        .pull(&format!("{proxy}/models/resume@{}", packed.digest), &cache)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "a cut connection is worth retrying: {e}");
    let layer: Digest = packed.manifest.layers[0].digest.parse().unwrap();
    let partial = std::fs::metadata(dir.path().join("partial").join(layer.hex()))
        .unwrap()
        .len();
    assert!(
        partial > (size as u64) / 4 && partial < size as u64,
        "about half arrived before the cut: {partial} of {size}"
    );

    let pulled = direct
        .pull(
            &format!("{}/models/resume@{}", reg.addr, packed.digest),
            &cache,
        )
        .await
        .unwrap();
    assert_eq!(pulled.model.read().unwrap(), model);
    assert_eq!(pulled.stats.resumed_bytes, partial);
    assert_eq!(
        pulled.stats.fetched_bytes,
        size as u64 - partial,
        "only the remainder crosses the network"
    );
}

#[tokio::test]
async fn credentials_and_tls_with_a_custom_ca() {
    let reg = TestRegistry::start(RegistryConfig {
        htpasswd: Some(("fleet".into(), "s3cret".into())),
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let ca = reg.ca.clone().unwrap();
    let model = fixture_model();
    let packed = pack_model(&model, Compression::Auto);
    let config = |password: &str| {
        let auth = base64_basic("fleet", password);
        let json = format!(
            r#"{{"auths": {{"https://{}": {{"auth": "{auth}"}}}}}}"#,
            reg.addr
        );
        DockerConfig::parse(json.as_bytes(), "config.json").unwrap()
    };
    let options = |credentials: DockerConfig| RegistryOptions {
        ca_files: vec![ca.clone()],
        credentials,
        attempts: 1,
        ..Default::default()
    };
    let target = format!("{}/models/private", reg.addr);

    let good = Registry::new(options(config("s3cret"))).unwrap();
    let pushed = good.push(&target, &packed).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pulled = good
        .pull(&pushed.reference, &Cache::open(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(pulled.model.read().unwrap(), model);

    let wrong = Registry::new(options(config("guess"))).unwrap();
    let e = wrong.push(&target, &packed).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Unauthorized { .. }), "{text}");
    assert!(
        text.contains(&reg.addr) && text.contains("\"fleet\"") && text.contains("401"),
        "{text}"
    );
    assert!(
        !text.contains("guess"),
        "the password never appears: {text}"
    );
    let e = wrong
        .pull(
            &pushed.reference,
            &Cache::open(dir.path().join("w")).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");

    let anonymous = Registry::new(options(DockerConfig::default())).unwrap();
    let e = anonymous.inspect(&pushed.reference).await.unwrap_err();
    assert!(
        matches!(e, Error::Unauthorized { .. }) && e.to_string().contains("anonymous"),
        "{e}"
    );

    let untrusted = Registry::new(RegistryOptions {
        ca_files: vec![],
        ..options(config("s3cret"))
    })
    .unwrap();
    let e = untrusted.inspect(&pushed.reference).await.unwrap_err();
    assert!(
        !matches!(e, Error::Unauthorized { .. }),
        "a TLS failure is not a credentials failure: {e}"
    );
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test]
async fn two_pullers_on_one_cache_download_once() {
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let model = noise(3 << 20);
    let packed = pack_model(&model, Compression::None);
    let registry = Registry::new(plain(&reg.addr)).unwrap();
    let pushed = registry
        .push(&format!("{}/models/shared", reg.addr), &packed)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(
        async {
            let cache = Cache::open(dir.path()).unwrap();
            registry.pull(&pushed.reference, &cache).await.unwrap()
        },
        async {
            let cache = Cache::open(dir.path()).unwrap();
            registry.pull(&pushed.reference, &cache).await.unwrap()
        }
    );
    assert_eq!(a.model.read().unwrap(), model);
    assert_eq!(b.model.read().unwrap(), model);
    let layer_fetches = [&a, &b]
        .iter()
        .filter(|p| p.stats.fetched_bytes >= model.len() as u64)
        .count();
    assert_eq!(
        layer_fetches, 1,
        "the model layer crossed the network once: {:?} {:?}",
        a.stats, b.stats
    );
}

#[tokio::test]
async fn https_urls_are_fetched_by_sha256_with_a_custom_ca() {
    let reg = TestRegistry::start(RegistryConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let ca = reg.ca.clone().unwrap();
    let file = noise(300_000);
    let packed = pack_model(&file, Compression::None);
    Registry::new(RegistryOptions {
        ca_files: vec![ca.clone()],
        ..Default::default()
    })
    .unwrap()
    .push(&format!("{}/files/blob", reg.addr), &packed)
    .await
    .unwrap();
    // The registry serves each blob at a plain HTTPS URL: a real file server for this test.
    let digest = Digest::of(&file);
    let url = format!("https://{}/v2/files/blob/blobs/{digest}", reg.addr);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let wrong = Digest::of(b"something else");
    let e = fetch_url(&url, &wrong, &cache, std::slice::from_ref(&ca), false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(!cache.contains(&wrong) && !cache.contains(&digest));
    let lease = fetch_url(&url, &digest, &cache, std::slice::from_ref(&ca), false)
        .await
        .unwrap();
    assert_eq!(lease.read().unwrap(), file);
    let e = fetch_url(
        &url.replace("https", "http"),
        &digest,
        &Cache::open(dir.path().join("b")).unwrap(),
        &[],
        false,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("only https://"), "{e}");
}

/// `packed` with one manifest annotation changed, as a pusher could write it.
fn with_annotation(
    mut packed: edgefleet_artifact::Packed,
    key: &str,
    value: &str,
) -> edgefleet_artifact::Packed {
    packed.manifest.annotations.insert(key.into(), value.into());
    packed.manifest_bytes = serde_json::to_vec(&packed.manifest).unwrap().into();
    packed.digest = Digest::of(&packed.manifest_bytes);
    packed
}

/// What a registry pusher can write is a claim: a zstd model layer that decompresses past the
/// size its manifest records is refused after one byte too many (a 32 MiB bomb of ~1 KiB), an
/// honest size over the reader's limit is refused before the layer is fetched, and a config over
/// the metadata limit before it is fetched. Nothing refused enters the cache.
#[tokio::test]
async fn claims_a_pusher_writes_are_bounded_before_and_while_reading() {
    use edgefleet_artifact::{Limits, media};
    let reg = TestRegistry::start(RegistryConfig::default()).unwrap();
    let registry = Registry::new(plain(&reg.addr)).unwrap();
    let zeros = vec![0u8; 32 << 20];
    let honest = pack_model(&zeros, Compression::Zstd);
    assert!(
        honest.layers[0].data.len() < 64 << 10,
        "{}",
        honest.layers[0].data.len()
    );
    assert_eq!(
        honest.manifest.annotations[media::MODEL_BYTES],
        (32u64 << 20).to_string()
    );
    let bomb = with_annotation(honest.clone(), media::MODEL_BYTES, "1000");
    let pushed = registry
        .push(&format!("{}/models/bomb", reg.addr), &bomb)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let e = registry.pull(&pushed.reference, &cache).await.unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 1001,
                limit: 1000,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("past the 1000 bytes its manifest records"),
        "{text}"
    );
    assert!(cache.lease(&Digest::of(&zeros)).unwrap().is_none());

    // The honest artifact, for a reader whose limit is 16 MiB: refused from the claim alone.
    let pushed = registry
        .push(&format!("{}/models/big", reg.addr), &honest)
        .await
        .unwrap();
    let small = |limits: Limits| {
        Registry::new(RegistryOptions {
            limits,
            ..plain(&reg.addr)
        })
        .unwrap()
    };
    let reader = small(Limits {
        decompressed_bytes: 16 << 20,
        ..Limits::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let e = reader.pull(&pushed.reference, &cache).await.unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { size, limit, .. } if size == 32 << 20 && limit == 16 << 20),
        "{e}"
    );
    let layer: Digest = honest.manifest.layers[0].digest.parse().unwrap();
    assert!(!cache.contains(&layer), "the layer was not fetched");
    // The default limits take it.
    let pulled = registry.pull(&pushed.reference, &cache).await.unwrap();
    assert_eq!(pulled.model.size(), 32 << 20);

    // A manifest over the metadata limit is refused; so is a config over it (the manifest
    // already in this cache), before it is fetched.
    let reader = small(Limits {
        metadata_bytes: 64,
        ..Limits::default()
    });
    let fresh = tempfile::tempdir().unwrap();
    let e = reader
        .pull(&pushed.reference, &Cache::open(fresh.path()).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 64, .. }), "{e}");
    assert!(e.to_string().starts_with("manifest "), "{e}");
    let e = reader.pull(&pushed.reference, &cache).await.unwrap_err();
    assert!(e.to_string().starts_with("config of"), "{e}");
    // inspect (the operator's path) too.
    let e = reader.inspect(&pushed.reference).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}

/// A registry that answers any manifest GET with a body that never ends (no length declared).
async fn endless_manifests() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/{repo}/manifests/{reference}",
            get(|| async {
                let chunk = bytes::Bytes::from(vec![b' '; 64 << 10]);
                let endless =
                    futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                axum::response::Response::builder()
                    .header("content-type", edgefleet_artifact::media::OCI_MANIFEST)
                    .body(axum::body::Body::from_stream(endless))
                    .unwrap()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn a_manifest_is_read_no_further_than_the_metadata_limit() {
    let addr = endless_manifests().await;
    let registry = Registry::new(plain(&addr)).unwrap();
    let started = std::time::Instant::now();
    let digest = format!("sha256:{}", "a".repeat(64));
    for reference in [format!("{addr}/m:latest"), format!("{addr}/m@{digest}")] {
        match tokio::time::timeout(Duration::from_secs(20), registry.manifest(&reference)).await {
            Ok(Err(Error::TooLarge { size, limit, .. })) => {
                assert_eq!(limit, 4 << 20);
                assert!(size > limit && size <= limit + (64 << 10), "{size}");
            }
            Ok(other) => panic!("{reference}: {other:?}"),
            Err(_) => panic!("{reference}: still reading an endless manifest after 20 s"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_config_is_read_no_further_than_its_descriptor_says() {
    use axum::routing::get;
    // A well-formed artifact manifest whose config blob never ends.
    let packed = pack_model(b"onnx bytes", Compression::None);
    let manifest = packed.manifest_bytes.clone();
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/{repo}/manifests/{reference}",
            get(move || {
                let m = manifest.clone();
                async move {
                    axum::response::Response::builder()
                        .header("content-type", edgefleet_artifact::media::OCI_MANIFEST)
                        .body(axum::body::Body::from(m))
                        .unwrap()
                }
            }),
        )
        .route(
            "/v2/{repo}/blobs/{digest}",
            get(|| async {
                let chunk = bytes::Bytes::from(vec![b'{'; 64 << 10]);
                let endless =
                    futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                axum::body::Body::from_stream(endless)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let registry = Registry::new(plain(&addr)).unwrap();
    let inspected = tokio::time::timeout(
        Duration::from_secs(20),
        registry.inspect(&format!("{addr}/m:v1")),
    )
    .await
    .expect("still reading an endless config after 20 s");
    match inspected {
        Err(Error::SizeMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, packed.config.descriptor.size);
            assert!(actual <= expected + (64 << 10), "{actual}");
        }
        other => panic!("{other:?}"),
    }
}
