//! The certificate bundle lives in a Secret so that restarts and every replica serve certificates
//! from the same CA, and the reconciler can read `ca.crt` for `caBundle`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, Error as KubeError};

use super::certs::{CertBundle, CertError, StoredPem, Verdict, inspect};

/// The Secret in the operator's namespace holding the webhook's CA and serving certificate.
pub(crate) const SECRET_NAME: &str = "meshop-webhook-tls";
pub(crate) const CA_CRT: &str = "ca.crt";
/// The CA's key, kept so rotation can re-sign without changing `caBundle`.
pub(crate) const CA_KEY: &str = "ca.key";
pub(crate) const TLS_CRT: &str = "tls.crt";
pub(crate) const TLS_KEY: &str = "tls.key";

/// Optimistic-concurrency retries before giving up (each conflict means another replica wrote).
const ATTEMPTS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("reading or writing Secret {SECRET_NAME}: {0}")]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("Secret {SECRET_NAME} kept changing under us; giving up after {ATTEMPTS} attempts")]
    Contended,
}

/// Returns a bundle fit to serve for `sans` with more than a third of its lifetime left: the
/// stored one when [`inspect`] finds it sound and it is not due, otherwise a renewed or replaced
/// one written back. A stored bundle that is unfit (a serving certificate its CA did not issue, a
/// key that is not its certificate's, names missing, expired, unreadable, a CA that is no CA) is
/// logged at warn with the reason and replaced at once: from its CA when that is sound, with a new
/// CA otherwise. Writes carry the resourceVersion read, so replicas racing to create, renew or
/// replace resolve through 409 Conflict: the loser re-reads and judges the winner's bundle.
///
/// `served` is the bundle this replica serves now, if any: when the bundle written has a new CA,
/// the CA `served` came from stays in `ca.crt` (so in `caBundle`) until it expires, since other
/// replicas serve certificates it signed until their next look at the Secret.
pub(crate) async fn load_or_create(
    client: Client,
    ns: &str,
    sans: &[String],
    lifetime: Duration,
    served: Option<&CertBundle>,
) -> Result<CertBundle, StoreError> {
    let api: Api<Secret> = Api::namespaced(client, ns);
    for _ in 0..ATTEMPTS {
        let existing = api.get_opt(SECRET_NAME).await?;
        let now = SystemTime::now();
        let mut fresh = match existing.as_ref().map(|s| inspect(&stored(s), sans, now)) {
            None => CertBundle::generate(sans, lifetime)?,
            Some(Verdict::Sound(b)) if !b.needs_rotation(now) => return Ok(b),
            Some(Verdict::Sound(b)) => b.renew(sans, lifetime)?,
            Some(Verdict::Renew {
                ca_pem,
                ca_key_pem,
                reason,
            }) => {
                let with = if ca_key_pem.is_some() {
                    "a new serving certificate from the stored CA"
                } else {
                    "a new CA and serving certificate, still trusting the stored CA"
                };
                tracing::warn!(secret = SECRET_NAME, namespace = ns, %reason, "stored webhook certificate is unfit; replacing it with {with}");
                CertBundle::issue(&ca_pem, ca_key_pem.as_deref(), sans, lifetime)?
            }
            Some(Verdict::Replace { reason }) => {
                tracing::warn!(secret = SECRET_NAME, namespace = ns, %reason, "stored webhook CA is unusable; replacing it with a new CA and serving certificate");
                CertBundle::generate(sans, lifetime)?
            }
        };
        if let Some(served) = served {
            fresh.also_trust(&served.ca_pem);
        }
        let result = match existing {
            Some(mut secret) => {
                // resourceVersion is kept from the read, so a concurrent writer makes this a 409.
                secret.data = Some(secret_data(&fresh));
                api.replace(SECRET_NAME, &PostParams::default(), &secret)
                    .await
                    .map(|_| ())
            }
            None => api
                .create(&PostParams::default(), &new_secret(ns, &fresh))
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                tracing::info!(secret = SECRET_NAME, namespace = ns, not_after = ?fresh.not_after, "stored a new webhook serving certificate");
                return Ok(fresh);
            }
            Err(KubeError::Api(e)) if e.code == 409 => {
                tracing::debug!(
                    secret = SECRET_NAME,
                    "another replica wrote the webhook certificate first; re-reading"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Contended)
}

/// The PEM texts a Secret holds under the bundle's keys (each missing when absent or not UTF-8).
pub(crate) fn stored(secret: &Secret) -> StoredPem {
    let text = |k: &str| {
        secret
            .data
            .as_ref()?
            .get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    StoredPem {
        ca_crt: text(CA_CRT),
        ca_key: text(CA_KEY),
        tls_crt: text(TLS_CRT),
        tls_key: text(TLS_KEY),
    }
}

fn secret_data(b: &CertBundle) -> BTreeMap<String, ByteString> {
    let mut data = BTreeMap::from([
        (
            CA_CRT.to_string(),
            ByteString(b.ca_pem.clone().into_bytes()),
        ),
        (
            TLS_CRT.to_string(),
            ByteString(b.cert_pem.clone().into_bytes()),
        ),
        (
            TLS_KEY.to_string(),
            ByteString(b.key_pem.clone().into_bytes()),
        ),
    ]);
    if let Some(k) = &b.ca_key_pem {
        data.insert(CA_KEY.to_string(), ByteString(k.clone().into_bytes()));
    }
    data
}

/// The Secret holding `b`, as created.
pub(crate) fn new_secret(ns: &str, b: &CertBundle) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "meshop".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "webhook".to_string(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(secret_data(b)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SANS: &[&str] = &["meshop.meshop-system.svc"];

    fn sans() -> Vec<String> {
        SANS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn secret_round_trip() {
        let b = CertBundle::generate(&sans(), Duration::from_secs(3600)).unwrap();
        let s = new_secret("meshop-system", &b);
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let keys: Vec<_> = s.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(keys, vec!["ca.crt", "ca.key", "tls.crt", "tls.key"]);
        assert_eq!(
            inspect(&stored(&s), &sans(), SystemTime::now()),
            Verdict::Sound(b)
        );
    }

    #[test]
    fn an_unreadable_secret_is_replaced() {
        let mut s = Secret::default();
        assert!(matches!(
            inspect(&stored(&s), &sans(), SystemTime::now()),
            Verdict::Replace { .. }
        ));
        s.data = Some(BTreeMap::from([
            (CA_CRT.to_string(), ByteString(b"x".to_vec())),
            (TLS_CRT.to_string(), ByteString(b"y".to_vec())),
            (TLS_KEY.to_string(), ByteString(vec![0xff])),
        ]));
        let st = stored(&s);
        assert!(st.tls_key.is_none(), "not UTF-8");
        assert!(matches!(
            inspect(&st, &sans(), SystemTime::now()),
            Verdict::Replace { .. }
        ));
    }
}
