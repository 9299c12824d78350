//! How much an artifact may make a reader fetch or hold, whatever its manifest claims. A
//! manifest is written by whoever can push to the registry: its sizes and annotations are
//! claims, checked against these limits before a byte is downloaded, and a zstd layer is
//! decompressed no further than the size its manifest records (and never past the limit).

use crate::manifest::{Descriptor, Manifest};
use crate::{Error, Result, media};
use std::io::Read as _;

/// The limits of one reader (the defaults suit the sidecar's 256Mi container and the
/// optimizer's Jobs; a model bigger than 1 GiB needs a larger limit on both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A manifest or a config: small JSON documents.
    pub metadata_bytes: u64,
    /// One layer as stored in the registry (the model, raw or compressed; a dataset; the report).
    pub layer_bytes: u64,
    /// A zstd layer once decompressed (the model, a dataset).
    pub decompressed_bytes: u64,
    /// The self-test samples, decompressed.
    pub selftest_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            metadata_bytes: 4 << 20,
            layer_bytes: 1 << 30,
            decompressed_bytes: 1 << 30,
            selftest_bytes: 64 << 20,
        }
    }
}

/// Refuses a descriptor whose claimed size is over `limit`, before anything is fetched.
pub fn check_size(what: &str, d: &Descriptor, limit: u64) -> Result<()> {
    if d.size > limit {
        return Err(Error::TooLarge {
            what: format!("{what} {}", d.digest),
            size: d.size,
            limit,
        });
    }
    Ok(())
}

/// What a zstd model layer may decompress to: exactly the `dev.edgefleet.model-bytes` its
/// manifest records when it does (within `limit`), else at most `limit`.
pub fn model_bytes(manifest: &Manifest, limit: u64) -> Result<Expected> {
    let Some(recorded) = manifest.annotations.get(media::MODEL_BYTES) else {
        return Ok(Expected::AtMost(limit));
    };
    let bytes: u64 = recorded.parse().map_err(|_| Error::TooLarge {
        what: format!(
            "annotation {} {recorded:?} (not a byte count)",
            media::MODEL_BYTES
        ),
        size: u64::MAX,
        limit,
    })?;
    if bytes > limit {
        return Err(Error::TooLarge {
            what: format!("the model ({} annotation)", media::MODEL_BYTES),
            size: bytes,
            limit,
        });
    }
    Ok(Expected::Exactly(bytes))
}

/// How big a decompressed layer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Exactly(u64),
    AtMost(u64),
}

impl Expected {
    fn cap(self) -> u64 {
        match self {
            Expected::Exactly(n) | Expected::AtMost(n) => n,
        }
    }
}

/// Decompresses `compressed` (zstd), reading at most one byte past what is expected: a layer
/// that decompresses further is refused without ever being held whole.
pub fn decompress(what: &str, compressed: &[u8], expected: Expected) -> Result<Vec<u8>> {
    let invalid = |e: std::io::Error| Error::Io {
        path: format!("{what} (zstd)"),
        source: e,
    };
    let cap = expected.cap();
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(invalid)?;
    // The output is preallocated to the expected size only up to 64 MiB: a claim costs nothing
    // until the bytes really arrive.
    let mut out = Vec::with_capacity(usize::try_from(cap.min(64 << 20)).unwrap_or(0));
    decoder
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(invalid)?;
    let got = out.len() as u64;
    match expected {
        Expected::Exactly(n) if got != n => Err(if got > n {
            Error::TooLarge {
                what: format!("{what}: decompresses past the {n} bytes its manifest records"),
                size: got,
                limit: n,
            }
        } else {
            Error::SizeMismatch {
                what: format!("{what} (decompressed)"),
                expected: n,
                actual: got,
            }
        }),
        Expected::AtMost(n) if got > n => Err(Error::TooLarge {
            what: format!("{what}: decompressed"),
            size: got,
            limit: n,
        }),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompression_stops_one_byte_past_what_is_expected() {
        let zeros = zstd::bulk::compress(&vec![0u8; 8 << 20], 3).unwrap();
        assert!(zeros.len() < 4096, "a bomb: {} bytes", zeros.len());
        let exact = decompress("m", &zeros, Expected::Exactly(8 << 20)).unwrap();
        assert_eq!(exact.len(), 8 << 20);
        let e = decompress("m", &zeros, Expected::Exactly(1000)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    size: 1001,
                    limit: 1000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("past the 1000 bytes its manifest records")
        );
        let e = decompress("m", &zeros, Expected::AtMost(1 << 20)).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let e = decompress("m", &zeros, Expected::Exactly(9 << 20)).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
        let e = decompress("m", b"not zstd", Expected::AtMost(10)).unwrap_err();
        assert!(e.to_string().contains("m (zstd)"), "{e}");
    }

    #[test]
    fn recorded_model_sizes_are_bounded_claims() {
        let mut manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::MODEL_CONFIG, "digest": format!("sha256:{}", "0".repeat(64)), "size": 2},
            "layers": [],
        }))
        .unwrap();
        assert_eq!(model_bytes(&manifest, 100).unwrap(), Expected::AtMost(100));
        manifest
            .annotations
            .insert(media::MODEL_BYTES.into(), "50".into());
        assert_eq!(model_bytes(&manifest, 100).unwrap(), Expected::Exactly(50));
        assert!(model_bytes(&manifest, 10).is_err());
        manifest
            .annotations
            .insert(media::MODEL_BYTES.into(), "lots".into());
        assert!(model_bytes(&manifest, 100).is_err());
        let config = manifest.config.clone();
        assert!(check_size("config", &config, 2).is_ok());
        let e = check_size("config", &config, 1).unwrap_err();
        assert!(e.to_string().contains("config sha256:000"), "{e}");
    }
}
