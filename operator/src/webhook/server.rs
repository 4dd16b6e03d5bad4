//! The webhook's HTTPS server. The certificate sits behind an [`ArcSwap`], so rotation swaps it
//! for new handshakes while open connections finish on the old one: no restart, no dropped
//! admission request.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use kube::Client;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::certs::{CertBundle, CertError};
use super::store;

/// A slow or stalled client must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Loaded {
    bundle: CertBundle,
    key: Arc<CertifiedKey>,
}

/// Serves the current certificate to every TLS handshake; rotation swaps it in place.
pub struct CertResolver {
    current: ArcSwap<Loaded>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bundle's own Debug redacts the keys.
        f.debug_struct("CertResolver")
            .field("bundle", &self.current.load().bundle)
            .finish()
    }
}

impl CertResolver {
    pub fn new(bundle: CertBundle) -> Result<Arc<CertResolver>, CertError> {
        let key = certified_key(&bundle)?;
        Ok(Arc::new(CertResolver {
            current: ArcSwap::from_pointee(Loaded { bundle, key }),
        }))
    }

    /// Serves `bundle` from the next handshake on. A bundle that does not load leaves the current
    /// certificate in place.
    pub(crate) fn swap(&self, bundle: CertBundle) -> Result<(), CertError> {
        let key = certified_key(&bundle)?;
        self.current.store(Arc::new(Loaded { bundle, key }));
        Ok(())
    }

    /// The bundle being served; its `ca_pem` is what `caBundle` must hold.
    pub(crate) fn bundle(&self) -> CertBundle {
        self.current.load().bundle.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// The rustls key for a bundle; checks the key belongs to the certificate.
fn certified_key(b: &CertBundle) -> Result<Arc<CertifiedKey>, CertError> {
    let chain = CertificateDer::pem_slice_iter(b.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Parse(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Parse("tls.crt holds no certificate".into()));
    }
    // Never include the key's bytes in an error.
    let key = PrivateKeyDer::from_pem_slice(b.key_pem.as_bytes())
        .map_err(|_| CertError::Parse("tls.key is not a PEM private key".into()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| CertError::Parse("tls.key is not a supported private key".into()))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|_| CertError::Parse("tls.key does not match tls.crt".into()))?;
    Ok(Arc::new(ck))
}

/// TLS 1.2+ with ring, ALPN for HTTP/2 and HTTP/1.1, certificate from `resolver`.
fn tls_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds the webhook's port; [`serve_listener`] serves it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `router` over TLS on a bound listener (see [`bind`]; tests bind port 0 and read the
/// address) until the task is dropped or aborted.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    resolver: Arc<CertResolver>,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls_config(resolver)?);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a webhook connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Without it, the last TLS record of a response waits (Nagle) for the ACK of the one before,
        // which a client that delays ACKs sends 40 ms later: the ~43 ms latency spikes.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "setting TCP_NODELAY failed");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}

/// Every `every`, reloads the bundle from the Secret (renewing it there when it is due) and swaps
/// it in when it changed. Errors are logged and retried on the next tick; the current certificate
/// keeps being served meanwhile. `on_change` sees each new bundle (e.g. to patch `caBundle`).
pub(crate) fn spawn_rotation(
    client: Client,
    namespace: String,
    sans: Vec<String>,
    lifetime: Duration,
    resolver: Arc<CertResolver>,
    every: Duration,
    on_change: impl Fn(&CertBundle) + Send + Sync + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick fires at once; the caller just loaded the bundle
        loop {
            tick.tick().await;
            match store::load_or_create(client.clone(), &namespace, &sans, lifetime).await {
                Ok(bundle) if bundle.cert_pem != resolver.current.load().bundle.cert_pem => {
                    match resolver.swap(bundle.clone()) {
                        Ok(()) => {
                            tracing::info!(not_after = ?bundle.not_after, "webhook serving certificate swapped");
                            on_change(&bundle);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "new webhook certificate does not load; keeping the current one")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "refreshing the webhook certificate failed; retrying")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    use crate::webhook::certs::serial_hex;
    use crate::webhook::{View, router};

    fn client(ca_pem: &str) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        TlsConnector::from(Arc::new(cfg))
    }

    /// GET /healthz over a fresh TLS connection; returns (served leaf certificate, response text).
    async fn get(addr: SocketAddr, ca_pem: &str, host: &str) -> (CertificateDer<'static>, String) {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(host.to_string()).unwrap();
        let mut tls = client(ca_pem).connect(name, tcp).await.unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        tls.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tls.read_to_string(&mut out).await.unwrap();
        (leaf, out)
    }

    fn der_to_pem_serial(der: &CertificateDer<'_>) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        cert.raw_serial_as_string()
    }

    #[tokio::test]
    async fn serves_tls_and_swaps_the_certificate_without_restart() {
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = CertBundle::generate(&sans, Duration::from_secs(120)).unwrap();
        let resolver = CertResolver::new(first.clone()).unwrap();
        let view = View::new();
        view.mark_synced();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_listener(listener, router(view), resolver.clone()));

        let (leaf, body) = get(addr, &first.ca_pem, "localhost").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.ends_with("ok"), "{body}");
        assert_eq!(
            der_to_pem_serial(&leaf),
            serial_hex(&first.cert_pem).unwrap()
        );

        // Renewal keeps the CA, so a client with the old caBundle trusts the new certificate.
        let second = first
            .renew(
                &[
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    "meshop.test".to_string(),
                ],
                Duration::from_secs(240),
            )
            .unwrap();
        resolver.swap(second.clone()).unwrap();
        let (leaf2, body2) = get(addr, &first.ca_pem, "meshop.test").await;
        assert!(body2.starts_with("HTTP/1.1 200"), "{body2}");
        let served2 = der_to_pem_serial(&leaf2);
        assert_eq!(served2, serial_hex(&second.cert_pem).unwrap());
        assert_ne!(served2, der_to_pem_serial(&leaf));
        assert_eq!(resolver.bundle(), second);

        // A client that does not trust the CA is refused.
        let stranger = CertBundle::generate(&sans, Duration::from_secs(60)).unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            client(&stranger.ca_pem)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .is_err()
        );
        server.abort();
    }

    /// An oversized review over a real HTTP/1.1 connection: the client reads a 413 with the
    /// limit, where the server once closed the connection under it.
    #[tokio::test]
    async fn an_oversized_body_gets_a_413_not_a_reset() {
        let bundle =
            CertBundle::generate(&["localhost".to_string()], Duration::from_secs(60)).unwrap();
        let view = View::new();
        view.mark_synced();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let resolver = CertResolver::new(bundle.clone()).unwrap();
        let server = tokio::spawn(serve_listener(listener, router(view), resolver));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = client(&bundle.ca_pem).connect(name, tcp).await.unwrap();
        let size = crate::webhook::http::BODY_LIMIT + 1;
        tls.write_all(
            format!("POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        tls.write_all(&vec![b' '; size]).await.unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        assert!(
            out.contains(&format!("limit of {} bytes", size - 1)),
            "{out}"
        );
        server.abort();
    }

    #[test]
    fn swap_rejects_a_mismatched_key_and_keeps_serving() {
        let sans = vec!["localhost".to_string()];
        let a = CertBundle::generate(&sans, Duration::from_secs(60)).unwrap();
        let b = CertBundle::generate(&sans, Duration::from_secs(60)).unwrap();
        let resolver = CertResolver::new(a.clone()).unwrap();
        let mixed = CertBundle {
            key_pem: b.key_pem.clone(),
            ..a.clone()
        };
        assert!(resolver.swap(mixed).is_err());
        assert!(
            resolver
                .swap(CertBundle {
                    key_pem: "garbage".into(),
                    ..a.clone()
                })
                .is_err()
        );
        assert_eq!(resolver.bundle(), a);
        assert!(!format!("{resolver:?}").contains("PRIVATE"));
    }
}
