//! Files behind HTTPS URLs, pinned by sha256 (the EdgeModel's `source.url` + `sha256`): fetched
//! into the same verified cache, resuming an interrupted download with a Range request.

use crate::{Cache, Digest, Error, Lease, Result};
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

/// Downloads `url` into `cache` unless a blob with `sha256` is there; refuses content whose
/// digest differs. Plain `http://` only when `allow_http`.
pub async fn fetch_url(
    url: &str,
    sha256: &Digest,
    cache: &Cache,
    ca_files: &[PathBuf],
    allow_http: bool,
) -> Result<Lease> {
    if let Some(lease) = cache.lease(sha256)? {
        return Ok(lease);
    }
    let bad = |reason: String| Error::InvalidReference {
        reference: url.into(),
        reason,
    };
    if !(url.starts_with("https://") || allow_http && url.starts_with("http://")) {
        return Err(bad("only https:// URLs are fetched".into()));
    }
    crate::install_tls_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60));
    for path in ca_files {
        let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder
        .build()
        .map_err(|e| bad(format!("HTTP client: {e}")))?;
    let mut partial = loop {
        match cache.try_partial(sha256)? {
            Some(p) => break p,
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    if let Some(lease) = cache.lease(sha256)? {
        cache.abandon(partial);
        return Ok(lease);
    }
    let mut request = client.get(url);
    if !partial.is_empty() {
        request = request.header("Range", format!("bytes={}-", partial.len()));
    }
    let transient = |reason: String| Error::Registry {
        reference: url.into(),
        reason,
    };
    let response = request
        .send()
        .await
        .map_err(|e| transient(format!("request failed: {e}")))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(Error::NotFound {
            reference: url.into(),
            reason: "404".into(),
        });
    }
    if status == reqwest::StatusCode::OK {
        partial.truncate()?;
    } else if status != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(transient(format!("HTTP {status}")));
    }
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            transient(format!(
                "download interrupted at {} bytes: {e}",
                partial.len()
            ))
        })?;
        partial.append(&chunk)?;
    }
    let size = partial.len();
    cache.finish(partial, size, url)
}
