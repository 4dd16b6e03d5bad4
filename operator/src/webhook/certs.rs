//! The webhook's own PKI: a small CA and a serving certificate it signs. The API server trusts the
//! CA through the webhook configuration's `caBundle`; pods never see any of it.
//!
//! Rotation keeps the CA as long as it outlives the new serving certificate, so `caBundle` rarely
//! changes. When the CA itself is replaced, the old one stays in `ca.crt` next to the new one until
//! it expires, so an API server with either bundle trusts whichever certificate a replica serves.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

/// Lifetime of a freshly minted CA.
pub(crate) const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of a serving certificate.
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Certificates start a little in the past: nodes' clocks are never quite in step.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid PEM certificate: {0}")]
    Parse(String),
    #[error("{0} is not a valid DNS name or IP address for a certificate")]
    InvalidSan(String),
}

/// The CA and the serving certificate with its key, all PEM. `Debug` never prints keys.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// The CA certificate(s) the API server must trust: the current CA first, then a retiring one.
    pub ca_pem: String,
    /// The CA's private key (PKCS#8); `None` when only the public half is known.
    pub(crate) ca_key_pem: Option<String>,
    /// The serving certificate.
    pub(crate) cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub(crate) key_pem: String,
    /// Validity of the serving certificate.
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("not_before", &unix(self.not_before))
            .field("not_after", &unix(self.not_after))
            .field(
                "ca_key_pem",
                &self.ca_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertBundle {
    /// Mints a new CA and a serving certificate for `sans` (DNS names or IP addresses) valid for
    /// `lifetime`.
    pub fn generate(sans: &[String], lifetime: Duration) -> Result<CertBundle, CertError> {
        let now = SystemTime::now();
        let (ca_params, ca_key) = new_ca(now)?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let ca_key_pem = issuer.key().serialize_pem();
        let (cert_pem, key_pem) = serving(sans, lifetime, now, &issuer)?;
        Self::assemble(ca_cert.pem(), Some(ca_key_pem), cert_pem, key_pem)
    }

    /// A bundle from stored PEM; reads the serving certificate's validity.
    pub(crate) fn from_pem(
        ca_pem: String,
        ca_key_pem: Option<String>,
        cert_pem: String,
        key_pem: String,
    ) -> Result<CertBundle, CertError> {
        Self::assemble(ca_pem, ca_key_pem, cert_pem, key_pem)
    }

    fn assemble(
        ca_pem: String,
        ca_key_pem: Option<String>,
        cert_pem: String,
        key_pem: String,
    ) -> Result<CertBundle, CertError> {
        let (not_before, not_after) = validity(&cert_pem)?;
        Ok(CertBundle {
            ca_pem,
            ca_key_pem,
            cert_pem,
            key_pem,
            not_before,
            not_after,
        })
    }

    /// A new serving certificate for `sans`. Reuses the CA when its key is known and it outlives the
    /// new certificate by a third of the CA's lifetime; otherwise mints a new CA and keeps the old
    /// one in `ca_pem` while it is still valid.
    pub(crate) fn renew(
        &self,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<CertBundle, CertError> {
        let now = SystemTime::now();
        if let Some(ca_key_pem) = &self.ca_key_pem
            && let Some(ca_cert_pem) = first_pem(&self.ca_pem)
            && let Ok((ca_from, ca_until)) = validity(&ca_cert_pem)
            && ca_until > now + lifetime + third(ca_from, ca_until)
            && let Ok(key) = KeyPair::from_pem(ca_key_pem)
            && let Ok(issuer) = Issuer::from_ca_cert_pem(&ca_cert_pem, key)
        {
            let (cert_pem, key_pem) = serving(sans, lifetime, now, &issuer)?;
            return Self::assemble(
                self.ca_pem.clone(),
                self.ca_key_pem.clone(),
                cert_pem,
                key_pem,
            );
        }
        let mut fresh = Self::generate(sans, lifetime)?;
        // Keep trusting the retiring CA(s) that are still valid.
        for old in pems(&self.ca_pem) {
            if validity(&old).is_ok_and(|(_, until)| until > now) {
                fresh.ca_pem.push_str(&old);
            }
        }
        Ok(fresh)
    }

    /// Whether the serving certificate has less than a third of its lifetime left. The lifetime
    /// counts from issue, not from the backdated `notBefore`, so a short-lived certificate is not
    /// judged due the moment it is made.
    pub(crate) fn needs_rotation(&self, now: SystemTime) -> bool {
        let left = self.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        left < third(self.not_before + BACKDATE, self.not_after)
    }

    /// Whether the serving certificate names every one of `sans`.
    pub(crate) fn covers(&self, sans: &[String]) -> bool {
        match cert_sans(&self.cert_pem) {
            Ok(have) => sans
                .iter()
                .all(|s| have.iter().any(|h| h.eq_ignore_ascii_case(s))),
            Err(_) => false,
        }
    }

    /// Whether this bundle can be served as is for `sans` at `now`.
    pub(crate) fn usable_for(&self, sans: &[String], now: SystemTime) -> bool {
        !self.needs_rotation(now) && self.covers(sans)
    }
}

fn third(from: SystemTime, until: SystemTime) -> Duration {
    until.duration_since(from).unwrap_or(Duration::ZERO) / 3
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn offset(t: SystemTime) -> OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A random positive 128-bit serial, so two certificates never share one.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The ring RNG only fails when the OS has no randomness; fall back to the clock then.
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn new_ca(now: SystemTime) -> Result<(CertificateParams, KeyPair), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshop");
    dn.push(
        DnType::CommonName,
        format!("meshop-webhook-ca-{}", unix(now)),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(now - BACKDATE);
    params.not_after = offset(now + CA_LIFETIME);
    params.serial_number = Some(serial());
    Ok((params, key))
}

/// A serving certificate for `sans`, signed by `issuer`: (cert PEM, key PEM).
fn serving(
    sans: &[String],
    lifetime: Duration,
    now: SystemTime,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), CertError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // `CertificateParams::new` files IP literals as IP SANs and the rest as DNS names.
    let mut params =
        CertificateParams::new(sans.to_vec()).map_err(|_| CertError::InvalidSan(sans.join(",")))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.first()
            .cloned()
            .unwrap_or_else(|| "meshop-webhook".into()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now - BACKDATE);
    params.not_after = offset(now + lifetime);
    params.serial_number = Some(serial());
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Every CERTIFICATE block of `pem`, one per string, each ending in a newline.
fn pems(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        let block = &rest[b..b + e + END.len()];
        // Only blocks that parse: a garbled one must not end up in caBundle.
        if validity(block).is_ok() {
            out.push(format!("{block}\n"));
        }
        rest = &rest[b + e + END.len()..];
    }
    out
}

fn first_pem(pem: &str) -> Option<String> {
    pems(pem).into_iter().next()
}

fn with_cert<R>(
    pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> R,
) -> Result<R, CertError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = block
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    Ok(f(&cert))
}

/// (not_before, not_after) of the first certificate in `pem`.
pub(crate) fn validity(pem: &str) -> Result<(SystemTime, SystemTime), CertError> {
    with_cert(pem, |c| {
        let v = c.validity();
        (
            to_system(v.not_before.timestamp()),
            to_system(v.not_after.timestamp()),
        )
    })
}

/// Whether the first certificate in `cert_pem` is signed by the first one in `ca_pem` (used by
/// `meshop check` to compare the served certificate with the caBundle the API server trusts).
pub(crate) fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool, CertError> {
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let ca = ca
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    with_cert(cert_pem, |leaf| {
        leaf.verify_signature(Some(ca.public_key())).is_ok()
    })
}

/// The DNS names and IP addresses of the first certificate in `pem`.
pub(crate) fn cert_sans(pem: &str) -> Result<Vec<String>, CertError> {
    with_cert(pem, |c| {
        let Ok(Some(ext)) = c.subject_alternative_name() else {
            return Vec::new();
        };
        ext.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                GeneralName::IPAddress(b) => ip_string(b),
                _ => None,
            })
            .collect()
    })
}

/// The serial number of the first certificate in `pem`, hex.
#[cfg(test)]
pub(crate) fn serial_hex(pem: &str) -> Result<String, CertError> {
    with_cert(pem, |c| c.raw_serial_as_string())
}

fn ip_string(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        _ => None,
    }
}

fn to_system(ts: i64) -> SystemTime {
    if ts >= 0 {
        UNIX_EPOCH + Duration::from_secs(ts as u64)
    } else {
        UNIX_EPOCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans() -> Vec<String> {
        vec![
            "meshop-webhook.meshop-system.svc".into(),
            "127.0.0.1".into(),
        ]
    }

    #[test]
    fn generates_ca_and_serving_cert_with_sans_and_lifetime() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        assert!(b.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(b.key_pem.contains("PRIVATE KEY"));
        let left = b.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(
            left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
            "{left:?}"
        );
        assert_eq!(cert_sans(&b.cert_pem).unwrap(), sans());
        assert!(b.covers(&sans()));
        assert!(!b.covers(&["other.svc".to_string()]));
        let (_, ca_until) = validity(&b.ca_pem).unwrap();
        assert!(ca_until > SystemTime::now() + CA_LIFETIME - Duration::from_secs(60));
        // The serving certificate verifies against the CA with the same PEM parser the server uses.
        let (_, ca) = x509_parser::pem::parse_x509_pem(b.ca_pem.as_bytes()).unwrap();
        let ca = ca.parse_x509().unwrap();
        let (_, leaf) = x509_parser::pem::parse_x509_pem(b.cert_pem.as_bytes()).unwrap();
        let leaf = leaf.parse_x509().unwrap();
        assert!(leaf.verify_signature(Some(ca.public_key())).is_ok());
        assert!(ca.is_ca() && !leaf.is_ca());
        assert!(issued_by(&b.cert_pem, &b.ca_pem).unwrap());
        let other = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        assert!(!issued_by(&b.cert_pem, &other.ca_pem).unwrap());
        assert!(issued_by("not a pem", &b.ca_pem).is_err());
    }

    #[test]
    fn rotation_when_less_than_a_third_is_left() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3000)).unwrap();
        let now = SystemTime::now();
        assert!(!b.needs_rotation(now));
        assert!(b.usable_for(&sans(), now));
        // Lifetime is 3000 s from issue (the 300 s backdate does not count): a third is 1000 s.
        assert!(!b.needs_rotation(b.not_after - Duration::from_secs(1100)));
        assert!(b.needs_rotation(b.not_after - Duration::from_secs(900)));
        assert!(b.needs_rotation(b.not_after + Duration::from_secs(1)));
    }

    #[test]
    fn renew_keeps_a_long_lived_ca() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let r = b.renew(&sans(), Duration::from_secs(7200)).unwrap();
        assert_eq!(r.ca_pem, b.ca_pem);
        assert_ne!(
            serial_hex(&r.cert_pem).unwrap(),
            serial_hex(&b.cert_pem).unwrap()
        );
        assert!(r.not_after > b.not_after);
    }

    #[test]
    fn renew_without_ca_key_mints_a_new_ca_and_keeps_the_old_one_trusted() {
        let mut b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        b.ca_key_pem = None;
        let r = b.renew(&sans(), Duration::from_secs(3600)).unwrap();
        assert_eq!(pems(&r.ca_pem).len(), 2);
        assert!(r.ca_pem.ends_with(&b.ca_pem));
        assert!(r.ca_key_pem.is_some());
    }

    #[test]
    fn pem_round_trip_and_debug_redacts_keys() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let again = CertBundle::from_pem(
            b.ca_pem.clone(),
            b.ca_key_pem.clone(),
            b.cert_pem.clone(),
            b.key_pem.clone(),
        )
        .unwrap();
        assert_eq!(again, b);
        assert_eq!(pems(&b.ca_pem), vec![b.ca_pem.clone()]);
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(validity("not a pem").is_err());
        assert!(
            CertBundle::from_pem(
                "x".into(),
                None,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                "k".into()
            )
            .is_err()
        );
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let broken = CertBundle {
            cert_pem: "junk".into(),
            ..b
        };
        assert!(!broken.covers(&sans()));
    }
}
