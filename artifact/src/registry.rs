//! Push and pull over plain OCI distribution (via `oci-client`), with edgefleet's rules:
//! blobs the registry has are not sent again, small blobs go in one request and large ones in
//! chunks; pulls are by digest only, every blob is checked against its sha256 before it enters
//! the [`Cache`], and an interrupted download resumes with an HTTP Range request.

use crate::cache::{Cached, Partial};
use crate::limits::{self, Expected, check_size};
use crate::manifest::{Artifact, FileArtifact, ModelConfig, Packed, apply_config, unpack};
use crate::signature::{self, PublicKey, Refusal, SigningKeyPem};
use crate::{Cache, Credentials, Digest, DockerConfig, Error, Lease, Result, SelfTest, media};
use futures::StreamExt;
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host:port`) that may be reached over plain HTTP. Every other registry is
    /// HTTPS only.
    pub plain_http: Vec<String>,
    /// Extra CA certificates (PEM files) to trust.
    pub ca_files: Vec<PathBuf>,
    /// Credentials per registry; anonymous where none are configured.
    pub credentials: DockerConfig,
    /// Blobs up to this size are uploaded in one request, larger ones in chunks.
    pub monolithic_max: u64,
    /// Attempts per blob download before giving up (each resumes where the last stopped).
    pub attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// What an artifact may make this reader fetch or hold.
    pub limits: crate::Limits,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            plain_http: Vec::new(),
            ca_files: Vec::new(),
            credentials: DockerConfig::default(),
            monolithic_max: 4 << 20,
            attempts: 4,
            backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            limits: crate::Limits::default(),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `registry/repository@sha256:…`: how the artifact is addressed from now on.
    pub reference: String,
    pub digest: Digest,
    pub uploaded_bytes: u64,
    pub skipped_blobs: usize,
}

/// Network figures of a pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Body bytes received for blobs.
    pub fetched_bytes: u64,
    /// Bytes that were already on disk from an interrupted download and not fetched again.
    pub resumed_bytes: u64,
    /// Blobs served from the cache without any request.
    pub cached_blobs: usize,
    /// Download attempts that failed and were retried.
    pub retries: u32,
    /// Cached blobs whose content no longer matched their digest: removed and fetched again.
    pub corrupt_blobs: usize,
}

/// A pulled, verified artifact.
#[derive(Debug)]
pub struct Pulled {
    pub artifact: Artifact,
    pub config: ModelConfig,
    /// The ONNX model, uncompressed and verified, held in the cache.
    pub model: Lease,
    pub report: Option<Vec<u8>>,
    pub selftest: Option<SelfTest>,
    pub stats: PullStats,
}

pub struct Registry {
    options: RegistryOptions,
    /// For manifests: read as a stream and cut at the limit (`oci-client` reads whole bodies).
    http: reqwest::Client,
    /// Two clients because `oci-client` picks monolithic or chunked upload per client.
    single: Client,
    chunked: Client,
}

fn parse_reference(reference: &str) -> Result<Reference> {
    reference
        .parse::<Reference>()
        .map_err(|e| Error::InvalidReference {
            reference: reference.into(),
            reason: e.to_string(),
        })
}

fn descriptor(d: &crate::manifest::Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
    }
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Result<Self> {
        crate::install_tls_provider();
        let mut certs = Vec::new();
        for path in &options.ca_files {
            let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            certs.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = |monolithic: bool| ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.plain_http.clone()),
            extra_root_certificates: certs.clone(),
            use_monolithic_push: monolithic,
            platform_resolver: None,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            ..Default::default()
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout);
        for c in &certs {
            let cert = reqwest::Certificate::from_pem(&c.data).map_err(|e| Error::Credentials {
                path: "extra CA certificates".into(),
                reason: e.to_string(),
            })?;
            http = http.add_root_certificate(cert);
        }
        let http = http.build().map_err(|e| Error::Credentials {
            path: "HTTP client".into(),
            reason: e.to_string(),
        })?;
        Ok(Registry {
            http,
            single: Client::new(config(true)),
            chunked: Client::new(config(false)),
            options,
        })
    }

    fn credentials(&self, r: &Reference) -> Credentials {
        self.options.credentials.credentials_for(r.registry())
    }

    fn auth(&self, r: &Reference) -> RegistryAuth {
        match self.credentials(r) {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => RegistryAuth::Basic(username, password),
            Credentials::Bearer(token) => RegistryAuth::Bearer(token),
        }
    }

    /// Turns a client error into one that names the reference and says whether it was the
    /// credentials, a missing object or the network.
    fn error(&self, r: &Reference, e: OciDistributionError) -> Error {
        let status = match &e {
            OciDistributionError::RequestError(re) => re.status().map(|s| s.as_u16()),
            OciDistributionError::ServerError { code, .. } => Some(*code),
            _ => None,
        };
        let denied = matches!(status, Some(401 | 403))
            || match &e {
                OciDistributionError::AuthenticationFailure(_)
                | OciDistributionError::UnauthorizedError { .. } => true,
                OciDistributionError::RegistryError { envelope, .. } => envelope
                    .errors
                    .iter()
                    .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
                _ => false,
            };
        if denied {
            return Error::Unauthorized {
                registry: r.registry().into(),
                user: self.credentials(r).who(),
                reason: format!("the registry refused the request (401/403): {e}"),
            };
        }
        let missing = matches!(&e, OciDistributionError::ImageManifestNotFoundError(_))
            || matches!(&e, OciDistributionError::RegistryError { envelope, .. } if envelope.errors.iter().any(|x| matches!(x.code, OciErrorCode::ManifestUnknown | OciErrorCode::BlobUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound)))
            || status == Some(404);
        if missing {
            return Error::NotFound {
                reference: r.whole(),
                reason: e.to_string(),
            };
        }
        Error::Registry {
            reference: r.whole(),
            reason: e.to_string(),
        }
    }

    async fn login(&self, client: &Client, r: &Reference, op: RegistryOperation) -> Result<()> {
        client
            .auth(r, &self.auth(r), op)
            .await
            .map(|_| ())
            .map_err(|e| self.error(r, e))
    }

    /// Pushes `packed` to `target` (`registry/repository[:tag]`).
    pub async fn push(&self, target: &str, packed: &Packed) -> Result<Pushed> {
        let r = parse_reference(target)?;
        if r.digest().is_some() {
            return Err(Error::InvalidReference {
                reference: target.into(),
                reason: "push to a repository or a tag; the digest is computed from the content"
                    .into(),
            });
        }
        let repo = Reference::with_digest(
            r.registry().into(),
            r.repository().into(),
            packed.digest.to_string(),
        );
        self.login(&self.single, &repo, RegistryOperation::Push)
            .await?;
        self.login(&self.chunked, &repo, RegistryOperation::Push)
            .await?;
        let mut uploaded = 0;
        let mut skipped = 0;
        for blob in packed.blobs() {
            let d = &blob.descriptor;
            if self
                .single
                .blob_exists(&repo, &d.digest)
                .await
                .map_err(|e| self.error(&repo, e))?
            {
                skipped += 1;
                continue;
            }
            let client = if d.size <= self.options.monolithic_max {
                &self.single
            } else {
                &self.chunked
            };
            client
                .push_blob(&repo, blob.data.clone(), &d.digest)
                .await
                .map_err(|e| self.error(&repo, e))?;
            uploaded += d.size;
        }
        // A tag only when the target names one (`Reference` would default to `latest`).
        let tagged = target
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
        let manifest_ref = if tagged { r.clone() } else { repo.clone() };
        self.single
            .push_manifest_raw(
                &manifest_ref,
                packed.manifest_bytes.clone(),
                media::OCI_MANIFEST.parse().expect("static header value"),
            )
            .await
            .map_err(|e| self.error(&manifest_ref, e))?;
        uploaded += packed.manifest_bytes.len() as u64;
        Ok(Pushed {
            reference: format!("{}/{}@{}", r.registry(), r.repository(), packed.digest),
            digest: packed.digest.clone(),
            uploaded_bytes: uploaded,
            skipped_blobs: skipped,
        })
    }

    /// Publishes one file as a single-layer artifact: how base models and datasets get into a
    /// registry.
    pub async fn push_file(&self, target: &str, file: FileArtifact<'_>) -> Result<Pushed> {
        self.push(target, &crate::manifest::pack_file(file)).await
    }

    /// Fetches and verifies a manifest. Tags are resolved (for people: `inspect`); the digest
    /// it resolved to is returned and everything after uses it.
    pub async fn manifest(&self, reference: &str) -> Result<(Reference, Digest, Vec<u8>)> {
        let r = parse_reference(reference)?;
        let bytes = self.get_manifest(&r, reference).await?;
        let actual = Digest::of(&bytes);
        if let Some(expected) = r.digest() {
            let expected: Digest = expected.parse()?;
            if actual != expected {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {reference}"),
                    expected,
                    actual,
                });
            }
        }
        let pinned = Reference::with_digest(
            r.registry().into(),
            r.repository().into(),
            actual.to_string(),
        );
        Ok((pinned, actual, bytes.to_vec()))
    }

    /// Signs the artifact `registry/repository@sha256:…` with `key` and pushes the signature
    /// where `cosign verify` looks (`:sha256-<hex>.sig`; an earlier signature there is
    /// replaced). Returns the signature manifest's reference.
    pub async fn sign(&self, reference: &str, key: &SigningKeyPem) -> Result<String> {
        let (r, digest) = self.pinned(reference)?;
        let repository = format!("{}/{}", r.registry(), r.repository());
        let payload = signature::payload(&repository, &digest);
        let packed = signature::pack(&payload, &key.sign(&payload));
        let target = format!("{repository}:{}", signature::signature_tag(&digest));
        self.push(&target, &packed).await?;
        Ok(target)
    }

    /// Checks that `registry/repository@sha256:…` carries a signature by `key` over its own
    /// digest (any one of the signatures stored for it). Unsigned, another key, or a signature
    /// over another digest: [`Error::Signature`]; a registry that cannot answer: its own error.
    pub async fn verify_signature(&self, reference: &str, key: &PublicKey) -> Result<()> {
        let (r, digest) = self.pinned(reference)?;
        let refused = |refusal| Error::Signature {
            reference: reference.to_string(),
            refusal,
        };
        let tag = format!(
            "{}/{}:{}",
            r.registry(),
            r.repository(),
            signature::signature_tag(&digest)
        );
        let (sig_ref, _, bytes) = match self.manifest(&tag).await {
            Ok(found) => found,
            Err(Error::NotFound { .. }) => return Err(refused(Refusal::Unsigned(tag))),
            Err(e) => return Err(e),
        };
        let manifest: crate::manifest::Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| refused(Refusal::Payload(format!("{tag}: not an OCI manifest: {e}"))))?;
        let layers = signature::signature_layers(&manifest);
        let mut first = None;
        for (layer, sig) in layers {
            let payload = self
                .fetch_small(&sig_ref, layer, "signature payload")
                .await?;
            match signature::check(key, &payload, sig, &digest) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(refused(first.unwrap_or(Refusal::Unsigned(tag))))
    }

    /// A digest reference, parsed.
    fn pinned(&self, reference: &str) -> Result<(Reference, Digest)> {
        let r = parse_reference(reference)?;
        let Some(d) = r.digest() else {
            return Err(Error::InvalidReference {
                reference: reference.into(),
                reason: "signatures are of digests: want registry/repository@sha256:…".into(),
            });
        };
        let digest = d.parse()?;
        Ok((r, digest))
    }

    /// GETs a manifest, reading at most `limits.metadata_bytes` of it: a declared length over
    /// the limit is refused before the body is read, an undeclared one is cut off there.
    async fn get_manifest(&self, r: &Reference, reference: &str) -> Result<Vec<u8>> {
        let token = self
            .single
            .auth(r, &self.auth(r), RegistryOperation::Pull)
            .await
            .map_err(|e| self.error(r, e))?;
        let registry = r.resolve_registry();
        let scheme = match self.options.plain_http.iter().any(|h| h == registry) {
            true => "http",
            false => "https",
        };
        let target = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!(
            "{scheme}://{registry}/v2/{}/manifests/{target}",
            r.repository()
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, media::OCI_MANIFEST);
        request = match (token, self.credentials(r)) {
            (Some(t), _) | (None, Credentials::Bearer(t)) => request.bearer_auth(t),
            (None, Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            (None, Credentials::Anonymous) => request,
        };
        let transient = |reason: String| Error::Registry {
            reference: r.whole(),
            reason,
        };
        let response = request
            .send()
            .await
            .map_err(|e| transient(format!("GET {url}: {e}")))?;
        let status = response.status();
        match status.as_u16() {
            200 => {}
            404 => {
                return Err(Error::NotFound {
                    reference: r.whole(),
                    reason: format!("GET {url}: 404"),
                });
            }
            401 | 403 => {
                return Err(Error::Unauthorized {
                    registry: r.registry().into(),
                    user: self.credentials(r).who(),
                    reason: format!("the registry refused GET {url} ({status})"),
                });
            }
            _ => return Err(transient(format!("GET {url}: HTTP {status}"))),
        }
        let limit = self.options.limits.metadata_bytes;
        let what = format!("manifest {reference}");
        if let Some(n) = response.content_length()
            && n > limit
        {
            return Err(Error::TooLarge {
                what,
                size: n,
                limit,
            });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transient(format!("GET {url}: {e}")))?;
            let size = body.len() as u64 + chunk.len() as u64;
            if size > limit {
                return Err(Error::TooLarge { what, size, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reads what an artifact holds without downloading its layers.
    pub async fn inspect(&self, reference: &str) -> Result<(Artifact, ModelConfig)> {
        let (r, digest, bytes) = self.manifest(reference).await?;
        let mut artifact = unpack(&r.whole(), digest, &bytes)?;
        let config = self
            .fetch_small(&r, &artifact.manifest.config.clone(), "config")
            .await?;
        let parsed = apply_config(&mut artifact, &r.whole(), &config)?;
        Ok((artifact, parsed))
    }

    async fn fetch_small(
        &self,
        r: &Reference,
        d: &crate::manifest::Descriptor,
        what: &str,
    ) -> Result<Vec<u8>> {
        check_size(
            &format!("{what} of {}", r.whole()),
            d,
            self.options.limits.metadata_bytes,
        )?;
        let digest = d.digest()?;
        let what = format!("{what} of {}", r.whole());
        let mut stream = self
            .single
            .pull_blob_stream(r, &descriptor(d))
            .await
            .map_err(|e| self.error(r, e))?
            .stream;
        // No further than the descriptor's size, whatever the registry sends.
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // The client's own digest check ends the stream with an error: a refusal, not
                // a network failure.
                Err(_) if out.len() as u64 == d.size && Digest::of(&out) != digest => break,
                Err(e) => {
                    return Err(Error::Registry {
                        reference: r.whole(),
                        reason: format!("{what}: {e}"),
                    });
                }
            };
            let size = out.len() as u64 + chunk.len() as u64;
            if size > d.size {
                return Err(Error::SizeMismatch {
                    what,
                    expected: d.size,
                    actual: size,
                });
            }
            out.extend_from_slice(&chunk);
        }
        if Digest::of(&out) != digest {
            return Err(Error::DigestMismatch {
                what,
                expected: digest,
                actual: Digest::of(&out),
            });
        }
        Ok(out)
    }

    /// The manifest of a digest reference, from the cache or the registry (verified).
    async fn pinned_manifest(
        &self,
        reference: &str,
        cache: &Cache,
        stats: &mut PullStats,
    ) -> Result<(Reference, Digest, Vec<u8>)> {
        let r = parse_reference(reference)?;
        let Some(digest) = r.digest() else {
            return Err(Error::InvalidReference {
                reference: reference.into(),
                reason: "pulls are by digest only (registry/repository@sha256:…); tags can move. \
                         Resolve the tag with `edgefleet-optimizer inspect`."
                    .into(),
            });
        };
        let digest: Digest = digest.parse()?;
        let what = format!("manifest {reference}");
        let bytes = match cache.lease_verified(&digest)? {
            Cached::Hit(lease) => {
                stats.cached_blobs += 1;
                lease.read()?
            }
            missing => {
                if matches!(missing, Cached::Corrupt) {
                    stats.corrupt_blobs += 1;
                }
                let mut attempt = 0;
                let bytes = loop {
                    match self.manifest(reference).await {
                        Ok((_, _, bytes)) => break bytes,
                        Err(e) if self.retry(&e, &mut attempt, stats, &what).await => {}
                        Err(e) => return Err(e),
                    }
                };
                cache.put(&digest, &bytes, &what)?;
                bytes
            }
        };
        Ok((r, digest, bytes))
    }

    /// Pulls the single file of an artifact such as a base model or a dataset published with
    /// `oras push` or `edgefleet-optimizer upload`: the one layer whose media type is in
    /// `accepted` (a `+zstd` one is decompressed). Returns the manifest digest and the file.
    pub async fn pull_file(
        &self,
        reference: &str,
        accepted: &[&str],
        cache: &Cache,
    ) -> Result<(Digest, Lease, PullStats)> {
        let mut stats = PullStats::default();
        let (r, digest, bytes) = self.pinned_manifest(reference, cache, &mut stats).await?;
        let manifest: crate::manifest::Manifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::NotAModel {
                reference: reference.into(),
                reason: format!("manifest is not an OCI image manifest: {e}"),
            })?;
        let layers: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| accepted.contains(&l.media_type.as_str()))
            .collect();
        let [layer] = layers.as_slice() else {
            return Err(Error::NotAModel {
                reference: reference.into(),
                reason: format!(
                    "want exactly one layer of media type {}, found {} (layers: {})",
                    accepted.join(" or "),
                    layers.len(),
                    manifest
                        .layers
                        .iter()
                        .map(|l| l.media_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        let limits = self.options.limits;
        check_size(&format!("layer of {reference}"), layer, limits.layer_bytes)?;
        let blob = self.fetch(&r, layer, "layer", cache, &mut stats).await?;
        if !layer.media_type.ends_with("+zstd") {
            return Ok((digest, blob, stats));
        }
        let raw = limits::decompress(
            &format!("layer {} of {reference}", layer.digest),
            &blob.read()?,
            Expected::AtMost(limits.decompressed_bytes),
        )?;
        let lease = cache.put(
            &Digest::of(&raw),
            &raw,
            &format!("uncompressed layer of {reference}"),
        )?;
        Ok((digest, lease, stats))
    }

    /// Pulls an artifact by digest into `cache`, verifying every blob, and returns the
    /// uncompressed model held in the cache.
    pub async fn pull(&self, reference: &str, cache: &Cache) -> Result<Pulled> {
        self.pull_parts(reference, cache, true).await
    }

    /// What a device needs: like [`Registry::pull`] without the optimization report (people
    /// read it, devices do not), so fewer bytes cross the air.
    pub async fn pull_for_device(&self, reference: &str, cache: &Cache) -> Result<Pulled> {
        self.pull_parts(reference, cache, false).await
    }

    async fn pull_parts(
        &self,
        reference: &str,
        cache: &Cache,
        with_report: bool,
    ) -> Result<Pulled> {
        let mut stats = PullStats::default();
        let (r, digest, manifest_bytes) =
            self.pinned_manifest(reference, cache, &mut stats).await?;
        let mut artifact = unpack(reference, digest, &manifest_bytes)?;
        // Every size the manifest claims is checked before anything is fetched.
        let limits = self.options.limits;
        let config_desc = artifact.manifest.config.clone();
        check_size(
            &format!("config of {reference}"),
            &config_desc,
            limits.metadata_bytes,
        )?;
        check_size(
            &format!("model layer of {reference}"),
            &artifact.model.descriptor,
            limits.layer_bytes,
        )?;
        if let Some(d) = artifact.report.as_ref().filter(|_| with_report) {
            check_size(&format!("report of {reference}"), d, limits.layer_bytes)?;
        }
        if let Some(d) = &artifact.selftest {
            check_size(
                &format!("selftest of {reference}"),
                d,
                limits.selftest_bytes,
            )?;
        }
        // What a compressed model layer may decompress to, checked before it is fetched.
        let model_size = match artifact.model.compressed {
            true => Some(limits::model_bytes(
                &artifact.manifest,
                limits.decompressed_bytes,
            )?),
            false => None,
        };
        let config = self
            .fetch(&r, &config_desc, "config", cache, &mut stats)
            .await?;
        let config = apply_config(&mut artifact, reference, &config.read()?)?;
        let layer = artifact.model.descriptor.clone();
        let blob = self
            .fetch(&r, &layer, "model layer", cache, &mut stats)
            .await?;
        let model = match model_size {
            Some(expected) => self.decompress(&artifact, &blob, expected, cache)?,
            None => blob,
        };
        let report = match artifact.report.clone().filter(|_| with_report) {
            Some(d) => Some(
                self.fetch(&r, &d, "report layer", cache, &mut stats)
                    .await?
                    .read()?,
            ),
            None => None,
        };
        let selftest = match artifact.selftest.clone() {
            Some(d) => {
                let z = self
                    .fetch(&r, &d, "selftest layer", cache, &mut stats)
                    .await?
                    .read()?;
                let json = limits::decompress(
                    &format!("selftest layer {} of {reference}", d.digest),
                    &z,
                    Expected::AtMost(limits.selftest_bytes),
                )?;
                Some(SelfTest::from_json(&json)?)
            }
            None => None,
        };
        Ok(Pulled {
            artifact,
            config,
            model,
            report,
            selftest,
            stats,
        })
    }

    /// Stores the uncompressed model under its own digest (the config's diff_id, checked).
    fn decompress(
        &self,
        artifact: &Artifact,
        blob: &Lease,
        expected: Expected,
        cache: &Cache,
    ) -> Result<Lease> {
        if let Some(d) = &artifact.model.diff_id
            && let Cached::Hit(lease) = cache.lease_verified(d)?
        {
            return Ok(lease);
        }
        let compressed = blob.read()?;
        let raw = limits::decompress(
            &format!("model layer {} of {}", blob.digest(), artifact.digest),
            &compressed,
            expected,
        )?;
        let digest = artifact
            .model
            .diff_id
            .clone()
            .unwrap_or_else(|| Digest::of(&raw));
        cache.put(
            &digest,
            &raw,
            &format!("uncompressed model of {} (config diff_id)", artifact.digest),
        )
    }

    /// One blob into the cache: from the cache if there, else downloaded (resuming any earlier
    /// partial download), verified, then moved into place.
    async fn fetch(
        &self,
        r: &Reference,
        d: &crate::manifest::Descriptor,
        what: &str,
        cache: &Cache,
        stats: &mut PullStats,
    ) -> Result<Lease> {
        let digest = d.digest()?;
        let what = format!("{what} {digest} of {}", r.whole());
        match cache.lease_verified(&digest)? {
            Cached::Hit(lease) => {
                stats.cached_blobs += 1;
                return Ok(lease);
            }
            Cached::Corrupt => stats.corrupt_blobs += 1,
            Cached::Missing => {}
        }
        // Only a blob the cache lacks needs the registry: a pull served from the cache works
        // with no network at all.
        let mut logged_in = false;
        let mut attempt = 0;
        loop {
            if let Some(lease) = cache.lease(&digest)? {
                stats.cached_blobs += 1;
                return Ok(lease);
            }
            let Some(partial) = cache.try_partial(&digest)? else {
                // Another process on this node is downloading it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if let Some(lease) = cache.lease(&digest)? {
                cache.abandon(partial);
                stats.cached_blobs += 1;
                return Ok(lease);
            }
            let result = match logged_in {
                true => self.download(r, d, partial, &what, cache, stats).await,
                false => match self.login(&self.single, r, RegistryOperation::Pull).await {
                    Ok(()) => {
                        logged_in = true;
                        self.download(r, d, partial, &what, cache, stats).await
                    }
                    Err(e) => {
                        // Keep what an earlier attempt downloaded: only the lock is released.
                        drop(partial);
                        Err(e)
                    }
                },
            };
            match result {
                Ok(lease) => return Ok(lease),
                Err(e) if self.retry(&e, &mut attempt, stats, &what).await => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// After a failed attempt: when `e` is transient and attempts are left, waits the backoff
    /// (doubling from `options.backoff`) and returns true; otherwise false.
    async fn retry(&self, e: &Error, attempt: &mut u32, stats: &mut PullStats, what: &str) -> bool {
        if !e.is_transient() || *attempt + 1 >= self.options.attempts {
            return false;
        }
        *attempt += 1;
        stats.retries += 1;
        let delay = self.options.backoff * 2u32.pow(*attempt - 1);
        tracing::warn!(%what, attempt = *attempt, ?delay, error = %e, "transient registry failure; retrying");
        tokio::time::sleep(delay).await;
        true
    }

    async fn download(
        &self,
        r: &Reference,
        d: &crate::manifest::Descriptor,
        mut partial: Partial,
        what: &str,
        cache: &Cache,
        stats: &mut PullStats,
    ) -> Result<Lease> {
        if partial.len() > d.size {
            partial.truncate()?;
        }
        let offset = partial.len();
        if offset < d.size {
            let response = self
                .single
                .pull_blob_stream_partial(r, &descriptor(d), offset, None)
                .await
                .map_err(|e| self.error(r, e))?;
            let mut stream = match response {
                BlobResponse::Full(s) => {
                    // The registry ignored the Range header: start over.
                    partial.truncate()?;
                    s.stream
                }
                BlobResponse::Partial(s) => {
                    stats.resumed_bytes += offset;
                    s.stream
                }
            };
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    // Whatever arrived stays on disk for the next attempt.
                    Err(e) if partial.len() < d.size => {
                        return Err(Error::Registry {
                            reference: r.whole(),
                            reason: format!(
                                "{what}: download interrupted at {} of {} bytes: {e}",
                                partial.len(),
                                d.size
                            ),
                        });
                    }
                    Err(_) => break,
                };
                stats.fetched_bytes += chunk.len() as u64;
                if partial.len() + chunk.len() as u64 > d.size {
                    let actual = partial.len() + chunk.len() as u64;
                    cache.abandon(partial);
                    return Err(Error::SizeMismatch {
                        what: what.into(),
                        expected: d.size,
                        actual,
                    });
                }
                partial.append(&chunk)?;
            }
        }
        cache.finish(partial, d.size, what)
    }
}
