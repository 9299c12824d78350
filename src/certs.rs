//! The webhook's own PKI: a CA and a serving certificate signed by it, made with rcgen, kept in
//! a Secret. Renewal is decided here, purely: the serving certificate is renewed when less than
//! a third of its lifetime is left, the CA likewise (and then the previous CA stays in the
//! trust bundle until the new one is everywhere, so no request fails over a rotation).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::time::Duration;
use time::OffsetDateTime;

pub const SERVING_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Everything the Secret holds; PEM text.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub ca_not_after: OffsetDateTime,
    /// The CA before the last CA rotation, still trusted.
    pub previous_ca: Option<String>,
    pub cert: String,
    pub key: String,
    pub not_after: OffsetDateTime,
    /// DNS names (or IP addresses) the serving certificate is for.
    pub names: Vec<String>,
}

impl Bundle {
    /// What the webhook configuration's `caBundle` must trust.
    pub fn trust(&self) -> String {
        match &self.previous_ca {
            Some(old) => format!("{}{}", self.ca_cert, old),
            None => self.ca_cert.clone(),
        }
    }
}

fn ca_params(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "edgefleet webhook CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = not_before;
    p.not_after = not_after;
    p
}

fn later(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    now + time::Duration::seconds(d.as_secs() as i64)
}

/// A new CA and serving certificate for `names`.
pub fn generate(names: &[String], now: OffsetDateTime) -> Result<Bundle, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let ca_not_after = later(now, CA_LIFETIME);
    let ca = ca_params(now - time::Duration::minutes(5), ca_not_after).self_signed(&ca_key)?;
    let mut bundle = Bundle {
        ca_cert: ca.pem(),
        ca_key: ca_key.serialize_pem(),
        ca_not_after,
        previous_ca: None,
        cert: String::new(),
        key: String::new(),
        not_after: now,
        names: names.to_vec(),
    };
    renew_serving(&mut bundle, now)?;
    Ok(bundle)
}

/// A new serving certificate signed by the bundle's CA.
pub fn renew_serving(bundle: &mut Bundle, now: OffsetDateTime) -> Result<(), rcgen::Error> {
    let ca_key = KeyPair::from_pem(&bundle.ca_key)?;
    // The issuer is identified by its name and key: the same parameters sign for the same CA.
    let issuer = Issuer::new(ca_params(now, bundle.ca_not_after), ca_key);
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(bundle.names.clone())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        bundle.names.first().cloned().unwrap_or_default(),
    );
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = now - time::Duration::minutes(5);
    let not_after = later(now, SERVING_LIFETIME).min(bundle.ca_not_after);
    p.not_after = not_after;
    let cert = p.signed_by(&key, &issuer)?;
    bundle.cert = cert.pem();
    bundle.key = key.serialize_pem();
    bundle.not_after = not_after;
    Ok(())
}

/// What has to be renewed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Nothing,
    Serving,
    /// A new CA (and so a new serving certificate); the old CA stays trusted.
    Ca,
}

/// Renew when less than a third of the lifetime is left, or when the names changed.
pub fn renewal(bundle: &Bundle, names: &[String], now: OffsetDateTime) -> Renewal {
    let third = |d: Duration| time::Duration::seconds(d.as_secs() as i64 / 3);
    if bundle.ca_not_after - now < third(CA_LIFETIME) {
        Renewal::Ca
    } else if bundle.not_after - now < third(SERVING_LIFETIME) || bundle.names != names {
        Renewal::Serving
    } else {
        Renewal::Nothing
    }
}

/// Applies a renewal; the result is what the Secret and the webhook configuration must hold.
pub fn renew(bundle: &Bundle, how: Renewal, now: OffsetDateTime) -> Result<Bundle, rcgen::Error> {
    match how {
        Renewal::Nothing => Ok(bundle.clone()),
        Renewal::Serving => {
            let mut b = bundle.clone();
            renew_serving(&mut b, now)?;
            Ok(b)
        }
        Renewal::Ca => {
            let mut b = generate(&bundle.names, now)?;
            b.previous_ca = Some(bundle.ca_cert.clone());
            Ok(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["edgefleet-webhook.edgefleet.svc".into(), "127.0.0.1".into()]
    }

    #[test]
    fn a_fresh_bundle_needs_nothing_and_chains_to_its_ca() {
        use rustls::client::danger::ServerCertVerifier;
        let now = OffsetDateTime::now_utc();
        let b = generate(&names(), now).unwrap();
        assert!(b.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.key.contains("PRIVATE KEY"));
        assert_eq!(renewal(&b, &names(), now), Renewal::Nothing);
        assert_eq!(b.trust(), b.ca_cert);
        // rustls accepts the chain for the IP name.
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pemfile(&b.ca_cert);
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = rustls_pemfile(&b.cert);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        let other = rustls::pki_types::ServerName::try_from("evil.example").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }

    fn rustls_pemfile(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn renewal_at_two_thirds_of_the_lifetime_or_new_names() {
        let t0 = OffsetDateTime::now_utc();
        let b = generate(&names(), t0).unwrap();
        let day = time::Duration::days(1);
        assert_eq!(renewal(&b, &names(), t0 + day * 59), Renewal::Nothing);
        assert_eq!(renewal(&b, &names(), t0 + day * 61), Renewal::Serving);
        assert_eq!(renewal(&b, &["other".into()], t0), Renewal::Serving);
        assert_eq!(renewal(&b, &names(), t0 + day * 365 * 7), Renewal::Ca);
        let later = t0 + day * 61;
        let renewed = renew(&b, Renewal::Serving, later).unwrap();
        assert_eq!(renewed.ca_cert, b.ca_cert);
        assert_ne!(renewed.cert, b.cert);
        assert_eq!(renewal(&renewed, &names(), later), Renewal::Nothing);
        let rotated = renew(&b, Renewal::Ca, t0 + day * 365 * 7).unwrap();
        assert_ne!(rotated.ca_cert, b.ca_cert);
        assert_eq!(rotated.trust(), format!("{}{}", rotated.ca_cert, b.ca_cert));
    }
}
