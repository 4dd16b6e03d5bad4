//! A webhook certificate Secret that is not fit to serve is replaced: one whose `tls.crt` comes from
//! another CA (the registered `caBundle` does not trust it) gets a new serving certificate from the
//! stored CA, and one whose `ca.crt` is no CA at all gets a new CA, which the webhook
//! registration follows. Meanwhile the API server keeps calling the webhook with
//! `failurePolicy: Fail`, so a certificate it does not trust would refuse the pods.
//!
//! The oracle is webpki (rustls's verifier), not meshop's own checks: the Secret's `tls.crt` must
//! verify against its `ca.crt` for the webhook's names, and the certificate the server presents must
//! verify against both the Secret's `ca.crt` and the registration's `caBundle`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, WebhookState};
use meshop::controller::status::{KStatus, kstatus};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;

const OPERATOR_NS: &str = "meshop-certs";
const SECRET: &str = "meshop-webhook-tls";
const HOOK: &str = "meshop-sidecar-injector-certs";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca?)?;
    }
    Ok(roots)
}

/// Whether `leaf` verifies (chain, validity, serverAuth, name) for `name` against `ca_pem`.
fn verifies(leaf: &CertificateDer<'_>, ca_pem: &[u8], name: &str) -> Result<()> {
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
            .build()?;
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(name.to_string())?,
            &[],
            UnixTime::now(),
        )
        .with_context(|| format!("for {name}"))?;
    Ok(())
}

/// The Secret's data as (ca.crt, tls.crt), checked: `tls.crt` verifies against `ca.crt` for the
/// names the API server and in-cluster clients use.
async fn secret_chains(secrets: &Api<Secret>) -> Result<(Vec<u8>, Vec<u8>)> {
    let secret = secrets.get(SECRET).await?;
    let data = secret.data.context("no data")?;
    let ca = data.get("ca.crt").context("no ca.crt")?.0.clone();
    let crt = data.get("tls.crt").context("no tls.crt")?.0.clone();
    let leaf = CertificateDer::from_pem_slice(&crt).context("tls.crt holds no certificate")?;
    for name in [
        "127.0.0.1".to_string(),
        format!("{}.{OPERATOR_NS}.svc", meshop::deploy::WEBHOOK_SERVICE),
    ] {
        verifies(&leaf, &ca, &name).context("tls.crt does not verify against ca.crt")?;
    }
    Ok((ca, crt))
}

/// The leaf certificate the webhook serves now (no verification in the handshake; the caller
/// verifies it against the CAs it cares about).
async fn served(addr: std::net::SocketAddr) -> Result<CertificateDer<'static>> {
    #[derive(Debug)]
    struct Any;
    impl ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &provider().signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &provider().signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?.to_owned(), tcp)
        .await?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .context("no certificate")?[0]
        .clone()
        .into_owned())
}

/// A CA that is not meshop's, and a serving certificate it signs for `sans`: (ca, crt, key) PEM.
fn foreign(sans: &[String]) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "not-meshop-ca");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    // A day: the operator's own renewal (a third of its 60 s lifetime) would never replace it.
    let mut leaf = CertificateParams::new(sans.to_vec()).unwrap();
    leaf.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let crt = leaf.signed_by(&key, &issuer).unwrap().pem();
    (ca_pem, crt, key.serialize_pem())
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The registration's `caBundle` once it trusts `ca` and the served certificate verifies against
/// both; then a pod created with `failurePolicy: Fail` is injected.
async fn converged(
    what: &str,
    hooks: &Api<MutatingWebhookConfiguration>,
    pods: &Api<Pod>,
    addr: std::net::SocketAddr,
    ca: &[u8],
    pod: &str,
) {
    meshop_testenv::wait_until(what, Duration::from_secs(60), || async {
        let hook = hooks.get(HOOK).await?;
        let bundle = hook
            .webhooks
            .unwrap_or_default()
            .first()
            .and_then(|w| w.client_config.ca_bundle.clone())
            .context("no caBundle")?
            .0;
        ensure!(
            bundle == ca,
            "caBundle is not the Secret's ca.crt:\n{}",
            String::from_utf8_lossy(&bundle)
        );
        let leaf = served(addr).await?;
        verifies(&leaf, ca, "127.0.0.1").context("served certificate vs the Secret's ca.crt")?;
        verifies(&leaf, &bundle, "127.0.0.1").context("served certificate vs caBundle")?;
        Ok(())
    })
    .await;
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": pod},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}}))
    .unwrap();
    let created = pods
        .create(&PostParams::default(), &p)
        .await
        .unwrap_or_else(|e| panic!("pod {pod} refused: {e}"));
    let spec = created.spec.unwrap();
    assert!(
        spec.containers.iter().any(|c| c.name == "istio-proxy")
            || spec
                .init_containers
                .iter()
                .flatten()
                .any(|c| c.name == "istio-proxy"),
        "pod {pod} not injected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_does_not_chain_or_has_no_ca_is_replaced() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    meshop_testenv::apps::labelled_namespace(&client, OPERATOR_NS, json!({})).await;
    meshop_testenv::apps::labelled_namespace(
        &client,
        "certs-app",
        json!({"istio-injection": "enabled"}),
    )
    .await;
    // A 60 s certificate: the operator looks at the Secret every 6 s.
    let operator = meshop_testenv::start_operator(
        cp,
        "certs",
        &[
            format!("--lease-namespace={OPERATOR_NS}"),
            "--webhook-cert-lifetime=60".into(),
        ],
    )
    .unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "certs"}, "spec": {"profile": "minimal", "injection": {"failurePolicy": "Fail"}}})).unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_until(
        "MeshInstall Ready with the webhook Active",
        Duration::from_secs(120),
        || async {
            let mi = api.get("certs").await?;
            let status = kstatus(mi.metadata.generation, mi.status.as_ref());
            let webhook = mi.status.and_then(|s| s.webhook);
            match &webhook {
                Some(w) if status == KStatus::Current && w.state == WebhookState::Active => Ok(()),
                _ => bail!("{status:?}, webhook {webhook:?}"),
            }
        },
    )
    .await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "certs-app");
    let (ca, _) = secret_chains(&secrets).await.unwrap();
    converged(
        "the webhook serves meshop's certificate",
        &hooks,
        &pods,
        operator.webhook,
        &ca,
        "before",
    )
    .await;

    // 1. A serving certificate (with the right names) from another CA: the stored CA is intact,
    //    so only the serving certificate is renewed, and caBundle stays as it is.
    let sans = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        format!("{}.{OPERATOR_NS}.svc", meshop::deploy::WEBHOOK_SERVICE),
        format!(
            "{}.{OPERATOR_NS}.svc.cluster.local",
            meshop::deploy::WEBHOOK_SERVICE
        ),
    ];
    let (_, crt, key) = foreign(&sans);
    secrets
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tls.crt": b64(&crt), "tls.key": b64(&key)}})),
        )
        .await
        .unwrap();
    let (ca_after, crt_after) = meshop_testenv::wait_until(
        "the operator replaces a tls.crt from another CA",
        Duration::from_secs(60),
        || secret_chains(&secrets),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&ca_after),
        String::from_utf8_lossy(&ca),
        "an intact CA is kept"
    );
    assert_ne!(crt_after, crt.as_bytes());
    converged(
        "the webhook serves the renewed certificate",
        &hooks,
        &pods,
        operator.webhook,
        &ca,
        "renewed",
    )
    .await;

    // 2. `ca.crt` is a certificate that is no CA (and `tls.crt` does not chain to it): a new CA
    //    and serving certificate, and the registration's caBundle follows. The CA the webhook
    //    served from stays trusted next to the new one (other replicas may still serve it).
    let before = served(operator.webhook).await.unwrap();
    let (_, not_a_ca, _) = foreign(&sans);
    secrets
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"ca.crt": b64(&not_a_ca)}})),
        )
        .await
        .unwrap();
    let (new_ca, _) = meshop_testenv::wait_until(
        "the operator replaces a ca.crt that is no CA",
        Duration::from_secs(60),
        || secret_chains(&secrets),
    )
    .await;
    assert_ne!(new_ca, ca, "ca.crt was no CA: a new one");
    assert_ne!(new_ca, not_a_ca.as_bytes());
    verifies(&before, &new_ca, "127.0.0.1")
        .expect("the certificate served before the new CA is still trusted");
    converged(
        "caBundle follows the new CA",
        &hooks,
        &pods,
        operator.webhook,
        &new_ca,
        "new-ca",
    )
    .await;
    drop(operator);
}
