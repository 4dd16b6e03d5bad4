//! The webhook's own PKI: a small CA and a serving certificate it signs. The API server trusts the
//! CA through the webhook configuration's `caBundle`; pods never see any of it.
//!
//! Rotation keeps the CA as long as it outlives the new serving certificate, so `caBundle` rarely
//! changes. When the CA itself is replaced, the old one stays in `ca.crt` next to the new one until
//! it expires, so an API server with either bundle trusts whichever certificate a replica serves.
//!
//! What is stored is checked before it is served ([`inspect`]): the CA must be a CA, valid now, with
//! the key stored next to it (when there is one) being its key; the serving certificate must be
//! signed by that CA, valid now, name every one of the webhook's names, and match its key. A
//! stored bundle that fails any of this is [`Verdict::Renew`]ed from its CA when the CA itself is
//! sound, and replaced with a new CA otherwise ([`Verdict::Replace`]).

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

/// Why a stored bundle cannot be served as it is. The messages name the Secret's keys and never
/// include key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unfit {
    #[error("ca.crt is missing or holds no readable certificate")]
    CaUnreadable,
    #[error("ca.crt is not a CA certificate (no basicConstraints CA, or no keyCertSign)")]
    NotACa,
    #[error("the CA in ca.crt has expired or is not valid yet")]
    CaOutOfDate,
    #[error("ca.key is not a readable private key, or not the key of the CA in ca.crt")]
    CaKeyMismatch,
    #[error("tls.crt is missing or holds no readable certificate")]
    LeafUnreadable,
    #[error("tls.key is missing, unreadable, or not the key of tls.crt")]
    KeyMismatch,
    #[error("tls.crt is not issued by the CA in ca.crt")]
    NotSignedByCa,
    #[error("tls.crt has expired or is not valid yet")]
    Expired,
    #[error("tls.crt does not name {}", .0.join(", "))]
    MissingSans(Vec<String>),
}

/// The PEM texts of a stored bundle as read, any of them possibly missing. No `Debug`: it holds
/// keys.
#[derive(Clone, Default)]
pub(crate) struct StoredPem {
    pub(crate) ca_crt: Option<String>,
    pub(crate) ca_key: Option<String>,
    pub(crate) tls_crt: Option<String>,
    pub(crate) tls_key: Option<String>,
}

/// What to do with a stored bundle ([`inspect`]). `Debug` never prints keys.
#[derive(PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Fit to serve for the webhook's names now (it may still be due for routine renewal:
    /// [`CertBundle::needs_rotation`]).
    Sound(CertBundle),
    /// Unfit, but the CA(s) in `ca_pem` are sound: issue a new serving certificate with
    /// [`CertBundle::issue`]. `ca_key_pem` is the CA's key when it is stored and matches; without
    /// it a new CA is minted and the stored one stays trusted until it expires, since replicas
    /// may still serve certificates it signed.
    Renew {
        ca_pem: String,
        ca_key_pem: Option<String>,
        reason: Unfit,
    },
    /// Unfit, and so is the CA: a new CA and serving certificate, nothing of the old kept.
    Replace { reason: Unfit },
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

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Sound(b) => f.debug_tuple("Sound").field(b).finish(),
            Verdict::Renew {
                ca_key_pem, reason, ..
            } => f
                .debug_struct("Renew")
                .field("ca_key_pem", &ca_key_pem.as_ref().map(|_| "<redacted>"))
                .field("reason", reason)
                .finish_non_exhaustive(),
            Verdict::Replace { reason } => {
                f.debug_struct("Replace").field("reason", reason).finish()
            }
        }
    }
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

    /// A new serving certificate for `sans`, from this bundle's CA (see [`CertBundle::issue`]).
    pub(crate) fn renew(
        &self,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<CertBundle, CertError> {
        Self::issue(&self.ca_pem, self.ca_key_pem.as_deref(), sans, lifetime)
    }

    /// A new serving certificate for `sans`, signed by the first CA of `ca_pem` when its key is
    /// known and it outlives the new certificate by a third of the CA's lifetime; otherwise by a
    /// new CA, with the CAs of `ca_pem` that are still valid kept after it in `ca_pem`.
    pub(crate) fn issue(
        ca_pem: &str,
        ca_key_pem: Option<&str>,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<CertBundle, CertError> {
        let now = SystemTime::now();
        if let Some(ca_key_pem) = ca_key_pem
            && let Some(ca_cert_pem) = first_pem(ca_pem)
            && let Ok((ca_from, ca_until)) = validity(&ca_cert_pem)
            && ca_until > now + lifetime + third(ca_from, ca_until)
            && let Ok(key) = KeyPair::from_pem(ca_key_pem)
            && let Ok(issuer) = Issuer::from_ca_cert_pem(&ca_cert_pem, key)
        {
            let (cert_pem, key_pem) = serving(sans, lifetime, now, &issuer)?;
            return Self::assemble(
                ca_pem.to_string(),
                Some(ca_key_pem.to_string()),
                cert_pem,
                key_pem,
            );
        }
        let mut fresh = Self::generate(sans, lifetime)?;
        // Keep trusting the retiring CA(s) that are still valid.
        for old in pems(ca_pem) {
            if validity(&old).is_ok_and(|(_, until)| until > now)
                && with_cert(&old, is_ca).unwrap_or(false)
            {
                fresh.ca_pem.push_str(&old);
            }
        }
        Ok(fresh)
    }

    /// Keeps trusting the CAs of `ca_pem` that are still valid CAs, after this bundle's own and
    /// each once. Used when a new CA replaces the one this replica serves from: other replicas may
    /// still serve what the old one signed until they load the new bundle.
    pub(crate) fn also_trust(&mut self, ca_pem: &str) {
        let now = SystemTime::now();
        let have = pems(&self.ca_pem);
        for ca in pems(ca_pem) {
            if !have.contains(&ca)
                && validity(&ca).is_ok_and(|(from, until)| from <= now && now < until)
                && with_cert(&ca, is_ca).unwrap_or(false)
            {
                self.ca_pem.push_str(&ca);
            }
        }
    }

    /// Whether the serving certificate has less than a third of its lifetime left. The lifetime
    /// counts from issue, not from the backdated `notBefore`, so a short-lived certificate is not
    /// judged due the moment it is made.
    pub(crate) fn needs_rotation(&self, now: SystemTime) -> bool {
        let left = self.not_after.duration_since(now).unwrap_or(Duration::ZERO);
        left < third(self.not_before + BACKDATE, self.not_after)
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

/// Judges a stored bundle for `sans` at `now`. The CA is the first certificate of `ca.crt`: it
/// must be a CA (basicConstraints, and keyCertSign when key usage is given), valid at `now`, and
/// `ca.key`, when stored, its key. The serving certificate is the first of `tls.crt`: issued by
/// that CA (issuer name and signature), valid at `now`, naming every one of `sans`, with `tls.key`
/// its key. The first failure found is the reason; a sound CA is kept whatever the serving
/// certificate's failure.
pub(crate) fn inspect(stored: &StoredPem, sans: &[String], now: SystemTime) -> Verdict {
    let replace = |reason| Verdict::Replace { reason };
    let Some(ca_pem) = stored.ca_crt.as_deref() else {
        return replace(Unfit::CaUnreadable);
    };
    let Some(ca_first) = first_pem(ca_pem) else {
        return replace(Unfit::CaUnreadable);
    };
    let Ok((_, ca_block)) = x509_parser::pem::parse_x509_pem(ca_first.as_bytes()) else {
        return replace(Unfit::CaUnreadable);
    };
    let Ok(ca) = ca_block.parse_x509() else {
        return replace(Unfit::CaUnreadable);
    };
    if !is_ca(&ca) {
        return replace(Unfit::NotACa);
    }
    if !valid_at(&ca, now) {
        return replace(Unfit::CaOutOfDate);
    }
    let ca_key = match stored.ca_key.as_deref() {
        None => Ok(None),
        Some(k) if ca_key_matches(k, &ca) => Ok(Some(k.to_string())),
        Some(_) => Err(Unfit::CaKeyMismatch),
    };
    let leaf = check_leaf(stored, &ca, sans, now);
    let renew = |reason, ca_key_pem| Verdict::Renew {
        ca_pem: ca_pem.to_string(),
        ca_key_pem,
        reason,
    };
    match (leaf, ca_key) {
        (Ok((cert_pem, key_pem)), Ok(ca_key_pem)) => {
            match CertBundle::assemble(ca_pem.to_string(), ca_key_pem.clone(), cert_pem, key_pem) {
                Ok(b) => Verdict::Sound(b),
                Err(_) => renew(Unfit::LeafUnreadable, ca_key_pem),
            }
        }
        // The serving certificate is fine, but the CA cannot sign its successor: a new CA now,
        // while the stored one stays trusted.
        (Ok(_), Err(reason)) => renew(reason, None),
        (Err(reason), Ok(ca_key_pem)) => renew(reason, ca_key_pem),
        (Err(reason), Err(_)) => renew(reason, None),
    }
}

/// (tls.crt, tls.key) when the serving certificate is fit (see [`inspect`]).
fn check_leaf(
    stored: &StoredPem,
    ca: &x509_parser::certificate::X509Certificate<'_>,
    sans: &[String],
    now: SystemTime,
) -> Result<(String, String), Unfit> {
    let cert_pem = stored.tls_crt.as_deref().ok_or(Unfit::LeafUnreadable)?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|_| Unfit::LeafUnreadable)?;
    let leaf = block.parse_x509().map_err(|_| Unfit::LeafUnreadable)?;
    let key_pem = stored.tls_key.as_deref().ok_or(Unfit::KeyMismatch)?;
    if !leaf_key_matches(key_pem, &leaf) {
        return Err(Unfit::KeyMismatch);
    }
    // Name chaining as well as the signature: a verifier looks the issuer up by its name.
    if leaf.issuer().as_raw() != ca.subject().as_raw()
        || leaf.verify_signature(Some(ca.public_key())).is_err()
    {
        return Err(Unfit::NotSignedByCa);
    }
    if !valid_at(&leaf, now) {
        return Err(Unfit::Expired);
    }
    let have = names(&leaf);
    let missing: Vec<String> = sans
        .iter()
        .filter(|s| !have.iter().any(|h| h.eq_ignore_ascii_case(s)))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Unfit::MissingSans(missing));
    }
    Ok((cert_pem.to_string(), key_pem.to_string()))
}

/// A CA certificate: basicConstraints CA, and keyCertSign when it restricts key usage.
fn is_ca(c: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    c.is_ca()
        && match c.key_usage() {
            Ok(Some(ku)) => ku.value.key_cert_sign(),
            Ok(None) => true,
            Err(_) => false,
        }
}

fn valid_at(c: &x509_parser::certificate::X509Certificate<'_>, now: SystemTime) -> bool {
    let v = c.validity();
    let now = unix(now) as i64;
    v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
}

/// Whether `key_pem` is the key of the CA certificate `ca`, as rcgen (which signs with it) reads it.
fn ca_key_matches(key_pem: &str, ca: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    KeyPair::from_pem(key_pem)
        .is_ok_and(|k| k.public_key_raw() == ca.public_key().subject_public_key.data.as_ref())
}

/// Whether `key_pem` is the key of `leaf`, as rustls (which serves with it) reads it.
fn leaf_key_matches(key_pem: &str, leaf: &x509_parser::certificate::X509Certificate<'_>) -> bool {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else {
        return false;
    };
    let Ok(signer) = rustls::crypto::ring::sign::any_supported_type(&key) else {
        return false;
    };
    signer
        .public_key()
        .is_some_and(|spki| spki.as_ref() == leaf.public_key().raw)
}

/// The DNS names and IP addresses of the first certificate in `pem`.
#[cfg(test)]
pub(crate) fn cert_sans(pem: &str) -> Result<Vec<String>, CertError> {
    with_cert(pem, names)
}

fn names(c: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
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
    fn stored_round_trip_and_debug_redacts_keys() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        assert_eq!(
            inspect(&stored(&b), &sans(), SystemTime::now()),
            Verdict::Sound(b.clone())
        );
        assert_eq!(pems(&b.ca_pem), vec![b.ca_pem.clone()]);
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
        let renew = Verdict::Renew {
            ca_pem: b.ca_pem.clone(),
            ca_key_pem: b.ca_key_pem.clone(),
            reason: Unfit::Expired,
        };
        let dbg = format!("{renew:?}");
        assert!(!dbg.contains("PRIVATE") && dbg.contains("Expired"), "{dbg}");
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(validity("not a pem").is_err());
        assert!(
            validity("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    /// The PEM a Secret would hold for `b`.
    fn stored(b: &CertBundle) -> StoredPem {
        StoredPem {
            ca_crt: Some(b.ca_pem.clone()),
            ca_key: b.ca_key_pem.clone(),
            tls_crt: Some(b.cert_pem.clone()),
            tls_key: Some(b.key_pem.clone()),
        }
    }

    /// webpki's verdict (what rustls clients use), not ours: does `cert_pem` verify against the
    /// CAs in `ca_pem` for `name` at `now`?
    fn webpki_verifies(cert_pem: &str, ca_pem: &str, name: &str) -> bool {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    fn renew_reason(v: &Verdict) -> Option<(&Unfit, bool)> {
        match v {
            Verdict::Renew {
                reason, ca_key_pem, ..
            } => Some((reason, ca_key_pem.is_some())),
            _ => None,
        }
    }

    /// What `store::load_or_create` writes for a verdict that is not Sound.
    fn replacement(v: Verdict) -> CertBundle {
        match v {
            Verdict::Renew {
                ca_pem, ca_key_pem, ..
            } => CertBundle::issue(
                &ca_pem,
                ca_key_pem.as_deref(),
                &sans(),
                Duration::from_secs(3600),
            )
            .unwrap(),
            Verdict::Replace { .. } => {
                CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap()
            }
            Verdict::Sound(b) => panic!("sound: {b:?}"),
        }
    }

    /// A serving certificate from another CA: the CA is kept, the new serving certificate chains
    /// to it (by webpki), and judging the result finds it sound.
    #[test]
    fn a_serving_certificate_from_another_ca_is_renewed_from_the_stored_ca() {
        let ours = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let theirs = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let mut st = stored(&ours);
        st.tls_crt = Some(theirs.cert_pem.clone());
        st.tls_key = Some(theirs.key_pem.clone());
        assert!(!webpki_verifies(
            &theirs.cert_pem,
            &ours.ca_pem,
            "127.0.0.1"
        ));
        let v = inspect(&st, &sans(), SystemTime::now());
        assert_eq!(
            renew_reason(&v),
            Some((&Unfit::NotSignedByCa, true)),
            "{v:?}"
        );
        let fixed = replacement(v);
        assert_eq!(fixed.ca_pem, ours.ca_pem);
        assert_eq!(fixed.ca_key_pem, ours.ca_key_pem);
        for name in sans() {
            assert!(
                webpki_verifies(&fixed.cert_pem, &ours.ca_pem, &name),
                "{name}"
            );
        }
        assert_eq!(
            inspect(&stored(&fixed), &sans(), SystemTime::now()),
            Verdict::Sound(fixed)
        );
    }

    /// The same issuer name but another key (two of meshop's CAs minted in the same second share
    /// their name): the signature decides.
    #[test]
    fn the_issuer_name_alone_does_not_make_a_chain() {
        let sans = sans();
        let now = SystemTime::now();
        let (params, key) = new_ca(now).unwrap();
        let ca = params.self_signed(&key).unwrap().pem();
        let (other_params, other_key) = new_ca(now).unwrap();
        let (crt, crt_key) = serving(
            &sans,
            Duration::from_secs(3600),
            now,
            &Issuer::new(other_params, other_key),
        )
        .unwrap();
        let st = StoredPem {
            ca_crt: Some(ca.clone()),
            ca_key: Some(key.serialize_pem()),
            tls_crt: Some(crt.clone()),
            tls_key: Some(crt_key),
        };
        assert_eq!(
            with_cert(&crt, |c| c.issuer().as_raw().to_vec()).unwrap(),
            with_cert(&ca, |c| c.subject().as_raw().to_vec()).unwrap()
        );
        let v = inspect(&st, &sans, now);
        assert_eq!(
            renew_reason(&v),
            Some((&Unfit::NotSignedByCa, true)),
            "{v:?}"
        );
    }

    #[test]
    fn a_missing_name_is_renewed_with_every_name() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let mut wanted = sans();
        wanted.push("meshop-webhook.other.svc".into());
        let v = inspect(&stored(&b), &wanted, SystemTime::now());
        assert_eq!(
            renew_reason(&v),
            Some((
                &Unfit::MissingSans(vec!["meshop-webhook.other.svc".into()]),
                true
            )),
            "{v:?}"
        );
        assert!(matches!(
            inspect(&stored(&b), &sans(), SystemTime::now()),
            Verdict::Sound(_)
        ));
        let Verdict::Renew {
            ca_pem, ca_key_pem, ..
        } = v
        else {
            unreachable!()
        };
        let fixed = CertBundle::issue(
            &ca_pem,
            ca_key_pem.as_deref(),
            &wanted,
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(webpki_verifies(
            &fixed.cert_pem,
            &b.ca_pem,
            "meshop-webhook.other.svc"
        ));
        assert!(matches!(
            inspect(&stored(&fixed), &wanted, SystemTime::now()),
            Verdict::Sound(_)
        ));
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_renewed() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let other = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        for key in [
            Some(other.key_pem.clone()),
            Some("garbage".to_string()),
            None,
        ] {
            let mut st = stored(&b);
            st.tls_key = key;
            let v = inspect(&st, &sans(), SystemTime::now());
            assert_eq!(renew_reason(&v), Some((&Unfit::KeyMismatch, true)), "{v:?}");
        }
    }

    /// Judged at instants after the serving certificate's (and then the CA's) end.
    #[test]
    fn expired_certificates_are_replaced() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let v = inspect(&stored(&b), &sans(), b.not_after + Duration::from_secs(1));
        assert_eq!(renew_reason(&v), Some((&Unfit::Expired, true)), "{v:?}");
        let (_, ca_until) = validity(&b.ca_pem).unwrap();
        let v = inspect(&stored(&b), &sans(), ca_until + Duration::from_secs(1));
        assert_eq!(
            v,
            Verdict::Replace {
                reason: Unfit::CaOutOfDate
            }
        );
    }

    #[test]
    fn garbage_is_replaced_never_a_panic() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for tls_crt in [Some("junk".to_string()), Some(junk.to_string()), None] {
            let mut st = stored(&b);
            st.tls_crt = tls_crt;
            let v = inspect(&st, &sans(), SystemTime::now());
            assert_eq!(
                renew_reason(&v),
                Some((&Unfit::LeafUnreadable, true)),
                "{v:?}"
            );
        }
        for ca_crt in [Some("junk".to_string()), Some(junk.to_string()), None] {
            let mut st = stored(&b);
            st.ca_crt = ca_crt;
            let v = inspect(&st, &sans(), SystemTime::now());
            assert_eq!(
                v,
                Verdict::Replace {
                    reason: Unfit::CaUnreadable
                }
            );
        }
        assert!(matches!(
            inspect(&StoredPem::default(), &sans(), SystemTime::now()),
            Verdict::Replace { .. }
        ));
        // A replacement shares nothing with what it replaces.
        let fresh = replacement(Verdict::Replace {
            reason: Unfit::CaUnreadable,
        });
        assert!(!fresh.ca_pem.contains(&b.ca_pem));
        assert!(webpki_verifies(&fresh.cert_pem, &fresh.ca_pem, "127.0.0.1"));
    }

    /// A ca.crt that is a serving certificate, or a CA certificate without keyCertSign.
    #[test]
    fn a_ca_that_is_no_ca_is_replaced() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let mut st = stored(&b);
        st.ca_crt = Some(b.cert_pem.clone());
        assert_eq!(
            inspect(&st, &sans(), SystemTime::now()),
            Verdict::Replace {
                reason: Unfit::NotACa
            }
        );
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let ca = params.self_signed(&key).unwrap().pem();
        let (crt, crt_key) = serving(
            &sans(),
            Duration::from_secs(3600),
            SystemTime::now(),
            &Issuer::new(params, key),
        )
        .unwrap();
        let st = StoredPem {
            ca_crt: Some(ca),
            ca_key: None,
            tls_crt: Some(crt),
            tls_key: Some(crt_key),
        };
        assert_eq!(
            inspect(&st, &sans(), SystemTime::now()),
            Verdict::Replace {
                reason: Unfit::NotACa
            }
        );
    }

    /// A ca.key that is not the CA's cannot sign a successor: with a fine serving certificate
    /// the bundle is still replaced now, by a new CA, and the stored CA stays trusted (replicas
    /// may serve what it signed). Without any ca.key the bundle is sound until rotation.
    #[test]
    fn a_ca_key_that_is_not_the_cas_brings_a_new_ca() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let other = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let mut st = stored(&b);
        st.ca_key = other.ca_key_pem.clone();
        let v = inspect(&st, &sans(), SystemTime::now());
        assert_eq!(
            renew_reason(&v),
            Some((&Unfit::CaKeyMismatch, false)),
            "{v:?}"
        );
        let fixed = replacement(v);
        assert_eq!(pems(&fixed.ca_pem).len(), 2);
        assert!(fixed.ca_pem.ends_with(&b.ca_pem));
        assert!(webpki_verifies(&fixed.cert_pem, &fixed.ca_pem, "127.0.0.1"));
        assert!(webpki_verifies(&b.cert_pem, &fixed.ca_pem, "127.0.0.1"));
        assert!(matches!(
            inspect(&stored(&fixed), &sans(), SystemTime::now()),
            Verdict::Sound(_)
        ));

        // The CA a replica served from stays trusted once, after the new one; a non-CA does not.
        let mut fresh = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let own = fresh.ca_pem.clone();
        fresh.also_trust(&format!("{}{}", b.ca_pem, b.cert_pem));
        fresh.also_trust(&b.ca_pem);
        fresh.also_trust(&own);
        assert_eq!(fresh.ca_pem, format!("{own}{}", b.ca_pem));
        assert!(webpki_verifies(&b.cert_pem, &fresh.ca_pem, "127.0.0.1"));

        st.ca_key = None;
        let v = inspect(&st, &sans(), SystemTime::now());
        let Verdict::Sound(sound) = v else {
            panic!("{v:?}")
        };
        assert!(sound.ca_key_pem.is_none());
    }
}
