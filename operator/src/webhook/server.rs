//! The webhook's HTTPS server. The certificate sits behind an [`ArcSwap`], so rotation swaps it
//! for new handshakes while open connections finish on the old one: no restart, no dropped
//! admission request.
//!
//! Every pod creation in the cluster waits on this server, and any pod can connect to it, so no
//! client may hold it ([`Limits`]):
//!
//! | a client that...                                      | is closed after                    |
//! |-------------------------------------------------------|------------------------------------|
//! | connects and never completes the TLS handshake        | [`HANDSHAKE_TIMEOUT`] (10 s)       |
//! | sends no complete request head (half a header, or nothing) | `header_timeout` (10 s)       |
//! | sends the head, then not the whole body               | `http::BODY_TIMEOUT` (10 s, a 408) |
//! | keeps an idle connection with no request in flight    | `idle_timeout` (60 s)              |
//!
//! and at most `max_connections` (1024) connections are open at once. At the cap the server stops
//! accepting: new connections wait in the kernel's accept backlog (1024) and are taken as soon as
//! one closes, which the timeouts above guarantee happens; beyond the backlog the kernel refuses
//! them, and the API server applies the webhook's `failurePolicy` to that pod. Connections held
//! open are what costs memory (about 30 KiB each), so the cap bounds it.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use kube::Client;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::certs::{CertBundle, CertError};
use super::store;
use crate::metrics::Metrics;

/// A slow or stalled client must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one client may hold of the server (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From the end of the handshake (or of the previous response) to a complete request head.
    pub header_timeout: Duration,
    /// An open connection with no request in flight and no bytes moving is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap the server stops accepting until one closes.
    pub max_connections: usize,
}

impl Default for Limits {
    /// The API server gives a webhook 10 s (`timeoutSeconds`) for a whole call, so a request head
    /// that takes longer is never a real one. 60 s of idleness outlives the API server's own
    /// keep-alive reuse of a connection between pod creations. 1024 connections hold about
    /// 30 MiB, within the operator's 256 MiB limit, and far more than the API servers of a
    /// cluster open (Go's HTTP/2 client multiplexes requests on one connection).
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

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
/// address) within `limits`, until the task is dropped or aborted. Open connections and waits
/// at the cap are recorded in `metrics`.
pub async fn serve_listener(
    listener: TcpListener,
    router: Router,
    resolver: Arc<CertResolver>,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls_config(resolver)?);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // Take a slot before accepting: at the cap, connections wait in the kernel's backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics.webhook_connection_cap_reached();
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "webhook holds its maximum of connections; new ones wait until one closes"
                );
                match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => return Ok(()), // never closed
                }
            }
        };
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
        let builder = builder.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.webhook_connections(1);
            let _open = Deferred(|| metrics.webhook_connections(-1));
            let _slot = slot;
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
            let activity = Arc::new(Activity::new());
            let io = TokioIo::new(Watched {
                inner: tls,
                activity: activity.clone(),
            });
            let in_service = activity.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let request = InFlight::start(in_service.clone());
                let call = router.clone().oneshot(req.map(axum::body::Body::new));
                async move {
                    let resp = call.await;
                    drop(request);
                    resp
                }
            });
            let conn = builder.serve_connection(io, service);
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
                    }
                }
                why = activity.expired(limits) => {
                    tracing::debug!(%peer, reason = why, "closing a webhook connection");
                }
            }
        });
    }
}

/// Runs a closure when dropped (however the task ends).
struct Deferred<F: FnMut()>(F);

impl<F: FnMut()> Drop for Deferred<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// What one connection is doing, for the watchdog in [`Activity::expired`]: when bytes last
/// moved (milliseconds since it was opened), requests started, requests not yet answered.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    started: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves, with the reason, once the connection has outstayed `limits`: no request begun
    /// within the header timeout of the handshake (hyper's own header timer starts only once it
    /// knows the protocol, which a client sending fewer bytes than an HTTP/2 preface delays
    /// forever), or idle for the idle timeout with no request in flight. A request in flight is
    /// bounded by the handler's body timeout and the API server's own deadline, not here.
    async fn expired(&self, limits: Limits) -> &'static str {
        loop {
            let now = Instant::now();
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                now + limits.idle_timeout
            } else if self.started.load(Ordering::Acquire) == 0 {
                let first = self.opened + limits.header_timeout;
                if now >= first {
                    return "no request within the header timeout";
                }
                first.min(last + limits.idle_timeout)
            } else {
                let idle = last + limits.idle_timeout;
                if now >= idle {
                    return "idle";
                }
                idle
            };
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request being served: counted in flight until answered.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.started.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's IO, noting every read or write that moves bytes.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Every `every`, reloads the bundle from the Secret (renewing it there when it is due, replacing
/// it there when it is unfit: see `store::load_or_create`) and swaps it in when any part of it
/// changed, the CA included. Errors are logged and retried on the next tick; the current
/// certificate keeps being served meanwhile. `on_change` sees each new bundle: `meshop run`
/// re-runs the reconciler, which registers the new `ca_pem` as `caBundle`.
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
            let serving = resolver.bundle();
            match store::load_or_create(client.clone(), &namespace, &sans, lifetime, Some(&serving))
                .await
            {
                // The whole bundle: a new ca.crt with the same tls.crt must reach caBundle too.
                Ok(bundle) if bundle != resolver.current.load().bundle => {
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
        let server = tokio::spawn(serve_listener(
            listener,
            router(view, Default::default()),
            resolver.clone(),
            Limits::default(),
            Default::default(),
        ));

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
        let server = tokio::spawn(serve_listener(
            listener,
            router(view, Default::default()),
            resolver,
            Limits::default(),
            Default::default(),
        ));
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

    /// A server with short limits, and a client trusting it.
    async fn limited(
        limits: Limits,
    ) -> (
        SocketAddr,
        TlsConnector,
        Arc<Metrics>,
        JoinHandle<anyhow::Result<()>>,
    ) {
        let bundle =
            CertBundle::generate(&["localhost".to_string()], Duration::from_secs(600)).unwrap();
        let view = View::new();
        view.mark_synced();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let resolver = CertResolver::new(bundle.clone()).unwrap();
        let server = tokio::spawn(serve_listener(
            listener,
            router(view, metrics.clone()),
            resolver,
            limits,
            metrics.clone(),
        ));
        (addr, client(&bundle.ca_pem), metrics, server)
    }

    async fn tls_connect(
        addr: SocketAddr,
        c: &TlsConnector,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Whether the server closes the connection: reads until EOF or an error. The deadline only
    /// keeps a broken server from hanging the test; it is far above the limits under test.
    async fn closed_by_server(
        tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> bool {
        let mut buf = [0u8; 4096];
        let read_all = async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read_all)
            .await
            .is_ok()
    }

    fn gauge(metrics: &Metrics, name: &str) -> String {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    }

    /// Half a request head, a few bytes (less than the HTTP/2 preface the server waits for to
    /// pick a protocol), and an idle keep-alive connection after a good request: all closed by
    /// the server, none held.
    #[tokio::test]
    async fn slow_and_idle_clients_are_closed() {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            max_connections: 64,
        };
        let (addr, c, metrics, server) = limited(limits).await;

        let mut half = tls_connect(addr, &c).await;
        half.write_all(b"POST /inject HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
            .await
            .unwrap();
        let mut few = tls_connect(addr, &c).await;
        few.write_all(b"GE").await.unwrap();
        let mut silent = tls_connect(addr, &c).await;
        let mut idle = tls_connect(addr, &c).await;
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 64];
        let n = idle.read(&mut first).await.unwrap();
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..n])
        );
        assert_eq!(
            gauge(&metrics, "meshop_webhook_open_connections"),
            "meshop_webhook_open_connections 4"
        );

        for (what, conn) in [
            ("half a head", &mut half),
            ("two bytes", &mut few),
            ("nothing", &mut silent),
            ("idle keep-alive", &mut idle),
        ] {
            assert!(
                closed_by_server(conn).await,
                "a client sending {what} is still connected"
            );
        }
        // The server's count follows the closes (its tasks end just after the socket does).
        let mut open = String::new();
        for _ in 0..100 {
            open = gauge(&metrics, "meshop_webhook_open_connections");
            if open.ends_with(" 0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(open, "meshop_webhook_open_connections 0");
        server.abort();
    }

    /// At the cap the server accepts nothing more; a waiting client is served as soon as a held
    /// connection goes (here: closed for idleness), and the wait is counted.
    #[tokio::test]
    async fn at_the_connection_cap_new_clients_wait_for_a_free_slot() {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 2,
        };
        let (addr, c, metrics, server) = limited(limits).await;
        let mut held = [tls_connect(addr, &c).await, tls_connect(addr, &c).await];
        // The TCP connection lands in the backlog; its handshake waits for a slot.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.connect(name, tcp).await }
        });
        for conn in held.iter_mut() {
            assert!(closed_by_server(conn).await);
        }
        let mut third = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the waiting client was never served")
            .unwrap()
            .unwrap();
        third
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        third.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let waits = gauge(&metrics, "meshop_webhook_connection_cap_waits_total");
        assert!(!waits.is_empty() && !waits.ends_with(" 0"), "{waits}");
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
