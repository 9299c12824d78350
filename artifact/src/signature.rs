//! Signatures in the form `cosign` reads and writes with a key (its "simple signing" layout):
//! a JSON payload naming the manifest digest, signed with ECDSA P-256 over SHA-256, stored as
//! the one layer of an OCI manifest tagged `sha256-<hex>.sig` in the artifact's repository, the
//! base64 DER signature in the layer's `dev.cosignproject.cosign/signature` annotation.
//!
//! Everything here is pure: keys from PEM, the payload, the signature manifest, and the check
//! of one signature against a key and the digest it must name. [`crate::Registry`] moves the
//! bytes. The crypto is the RustCrypto `p256`/`ecdsa` crates.

use crate::Digest;
use crate::manifest::{Blob, Descriptor, Manifest, Packed};
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    LineEnding,
};
use std::collections::BTreeMap;

/// Media type of a simple-signing payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The payload's `critical.type`.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// A payload or signature manifest larger than this is not a signature.
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Signature layers looked at per artifact (cosign appends one per `sign`).
pub const MAX_SIGNATURES: usize = 16;

/// Why a key or a signature was refused. Never transient: a signature does not get better by
/// waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not an ECDSA P-256 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): {0}")]
    PrivateKey(String),
    #[error("not an ECDSA P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`): {0}")]
    PublicKey(String),
    #[error("unsigned: no signature at {0}")]
    Unsigned(String),
    #[error("signature is not base64 DER ECDSA: {0}")]
    Malformed(String),
    #[error(
        "signature does not verify with the trusted public key (signed with another key, or the payload was changed)"
    )]
    WrongKey,
    #[error("the signed payload is not a cosign simple-signing payload: {0}")]
    Payload(String),
    #[error("the signature is over {signed}, not this artifact ({expected})")]
    OtherDigest { signed: String, expected: Digest },
}

/// A private key that signs artifacts.
#[derive(Clone)]
pub struct SigningKeyPem(SigningKey);

impl std::fmt::Debug for SigningKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeyPem(..)")
    }
}

impl SigningKeyPem {
    /// An unencrypted PKCS#8 PEM P-256 key (what `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` writes).
    pub fn from_pem(pem: &str) -> Result<Self, Refusal> {
        SigningKey::from_pkcs8_pem(pem.trim())
            .map(SigningKeyPem)
            .map_err(|e| Refusal::PrivateKey(e.to_string()))
    }

    /// A new random key (the operating system's generator).
    pub fn generate() -> Self {
        SigningKeyPem(SigningKey::random(&mut rand_core::OsRng))
    }

    /// Unencrypted PKCS#8 PEM: what [`SigningKeyPem::from_pem`] reads back.
    pub fn to_pem(&self) -> String {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a P-256 key encodes")
            .to_string()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// The base64 DER signature of `payload` (ECDSA P-256, SHA-256; deterministic, RFC 6979).
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.0.sign(payload);
        let der: DerSignature = sig.to_der();
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    }
}

/// A trusted public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`, what `cosign generate-key-pair` writes to
    /// `cosign.pub`).
    pub fn from_pem(pem: &str) -> Result<Self, Refusal> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|e| Refusal::PublicKey(e.to_string()))
    }

    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key encodes")
    }
}

/// The tag cosign stores the signatures of `digest` under.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The simple-signing payload for the artifact `repository@digest` (repository without a tag,
/// as cosign writes it).
pub fn payload(repository: &str, digest: &Digest) -> Vec<u8> {
    let doc = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&doc).expect("serializes")
}

#[derive(serde::Deserialize)]
struct PayloadView {
    critical: Critical,
}

#[derive(serde::Deserialize)]
struct Critical {
    image: Image,
    #[serde(rename = "type")]
    type_: String,
}

#[derive(serde::Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Checks one signature: it verifies over `payload` with `key`, and the payload names
/// `expected`. The signature is checked before the payload is parsed.
pub fn check(
    key: &PublicKey,
    payload: &[u8],
    signature_b64: &str,
    expected: &Digest,
) -> Result<(), Refusal> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    let sig = Signature::from_der(&der).map_err(|e| Refusal::Malformed(e.to_string()))?;
    key.0.verify(payload, &sig).map_err(|_| Refusal::WrongKey)?;
    let view: PayloadView =
        serde_json::from_slice(payload).map_err(|e| Refusal::Payload(e.to_string()))?;
    if view.critical.type_ != PAYLOAD_TYPE {
        return Err(Refusal::Payload(format!(
            "critical.type is {:?}, want {PAYLOAD_TYPE:?}",
            view.critical.type_
        )));
    }
    if view.critical.image.digest != expected.as_str() {
        return Err(Refusal::OtherDigest {
            signed: view.critical.image.digest,
            expected: expected.clone(),
        });
    }
    Ok(())
}

/// The signature manifest for one payload and its signature: what `cosign sign --key` pushes
/// (one layer per signature; the config lists the layer's diff_id).
pub fn pack(payload: &[u8], signature_b64: &str) -> Packed {
    let layer = Blob::new(
        PAYLOAD_MEDIA_TYPE,
        payload.to_vec(),
        BTreeMap::from([(SIGNATURE_ANNOTATION.into(), signature_b64.into())]),
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.descriptor.digest]},
    }))
    .expect("serializes");
    Packed::single(
        None,
        Blob::new(CONFIG_MEDIA_TYPE, config, BTreeMap::new()),
        layer,
    )
}

/// The signature layers a signature manifest lists (at most [`MAX_SIGNATURES`], each at most
/// [`MAX_SIGNATURE_BYTES`]), with their base64 signatures.
pub fn signature_layers(manifest: &Manifest) -> Vec<(&Descriptor, &str)> {
    manifest
        .layers
        .iter()
        .filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE && l.size <= MAX_SIGNATURE_BYTES)
        .filter_map(|l| {
            l.annotations
                .get(SIGNATURE_ANNOTATION)
                .map(|s| (l, s.as_str()))
        })
        .take(MAX_SIGNATURES)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Keys derived from a seed: deterministic, never used outside tests.
    pub fn key(seed: u8) -> SigningKeyPem {
        let mut bytes = [seed; 32];
        bytes[0] = 1;
        SigningKeyPem(SigningKey::from_slice(&bytes).expect("valid scalar"))
    }

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_only_for_its_digest() {
        let (a, b) = (key(7), key(9));
        let d = digest('a');
        let p = payload("10.77.0.1:5000/models/m", &d);
        let sig = a.sign(&p);
        assert_eq!(check(&a.public(), &p, &sig, &d), Ok(()));
        assert_eq!(check(&b.public(), &p, &sig, &d), Err(Refusal::WrongKey));
        // A valid signature over another artifact's payload does not carry over.
        let other = digest('b');
        assert_eq!(
            check(&a.public(), &p, &sig, &other),
            Err(Refusal::OtherDigest {
                signed: d.to_string(),
                expected: other.clone()
            })
        );
        // The payload is what was signed: changing it breaks the signature.
        let forged = payload("10.77.0.1:5000/models/m", &other);
        assert_eq!(
            check(&a.public(), &forged, &sig, &other),
            Err(Refusal::WrongKey)
        );
        assert!(matches!(
            check(&a.public(), &p, "not base64!", &d),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            check(&a.public(), &p, "AAAA", &d),
            Err(Refusal::Malformed(_))
        ));
        // Signed, but not a simple-signing payload.
        let junk =
            b"{\"critical\":{\"image\":{\"docker-manifest-digest\":\"x\"},\"type\":\"other\"}}";
        let sig = a.sign(junk);
        assert!(matches!(
            check(&a.public(), junk, &sig, &d),
            Err(Refusal::Payload(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_pem_and_bad_pem_is_named() {
        let a = key(3);
        let pem = a.public().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), a.public());
        assert!(matches!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"),
            Err(Refusal::PublicKey(_))
        ));
        let fresh = SigningKeyPem::generate();
        let back = SigningKeyPem::from_pem(&fresh.to_pem()).unwrap();
        assert_eq!(back.public(), fresh.public());
        assert_ne!(fresh.public(), a.public());
        assert!(matches!(
            SigningKeyPem::from_pem(&pem),
            Err(Refusal::PrivateKey(_))
        ));
    }

    #[test]
    fn the_signature_manifest_is_cosigns_layout() {
        let d = digest('c');
        let p = payload("reg/models/m", &d);
        let packed = pack(&p, &key(5).sign(&p));
        let m = &packed.manifest;
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, PAYLOAD_MEDIA_TYPE);
        assert_eq!(m.layers[0].digest, Digest::of(&p).to_string());
        assert_eq!(signature_layers(m).len(), 1);
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "c".repeat(64)));
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v["critical"]["image"]["docker-manifest-digest"],
            d.to_string()
        );
        assert_eq!(
            v["critical"]["identity"]["docker-reference"],
            "reg/models/m"
        );
    }
}
