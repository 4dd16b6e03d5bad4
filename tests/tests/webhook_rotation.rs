//! Certificate rotation under load: with a 30-second serving certificate, the operator renews it
//! before it expires and swaps it without a restart, while the API server keeps calling the
//! webhook over TLS (failurePolicy Fail, so any failed call would refuse a pod).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, PostParams};
use meshop::api::{MeshInstall, WebhookState};
use meshop::controller::status::{KStatus, kstatus};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;

use anyhow::{Context, bail, ensure};

/// The leaf certificate the webhook serves right now, verified against the CA meshop publishes.
async fn served_certificate(addr: std::net::SocketAddr, ca_pem: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotates_while_the_api_server_keeps_calling() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let operator =
        meshop_testenv::start_operator(cp, "rotation", &["--webhook-cert-lifetime=30".into()])
            .unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "rotation"}, "spec": {"profile": "minimal", "injection": {"failurePolicy": "Fail"}}})).unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    let first_expiry = meshop_testenv::wait_until(
        "MeshInstall Ready with the webhook Active",
        Duration::from_secs(120),
        || async {
            let mi = api.get("rotation").await?;
            let status = kstatus(mi.metadata.generation, mi.status.as_ref());
            let webhook = mi.status.and_then(|s| s.webhook);
            match &webhook {
                Some(w) if status == KStatus::Current && w.state == WebhookState::Active => w
                    .certificate_expiry
                    .clone()
                    .context("an Active webhook without a certificate expiry"),
                _ => bail!("{status:?}, webhook {webhook:?}"),
            }
        },
    )
    .await;

    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "rotating", "labels": {"istio-injection": "enabled"}}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "rotating");
    meshop_testenv::wait_until(
        "default ServiceAccount in rotating",
        Duration::from_secs(30),
        || async {
            accounts
                .get_opt("default")
                .await?
                .context("not created yet")
        },
    )
    .await;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "rotating");
    let mut served = BTreeSet::new();
    let mut created = 0;
    // Two thirds of a 30 s certificate pass before the first renewal; 45 s see at least one.
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        let secret = secrets.get("meshop-webhook-tls").await.unwrap();
        let ca = secret.data.unwrap()["ca.crt"].0.clone();
        served.insert(served_certificate(operator.webhook, &ca).await);
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("p{created}")},
            "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}}))
        .unwrap();
        let pod = pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("pod {created} refused during rotation: {e}"));
        let spec = pod.spec.unwrap();
        assert!(
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .any(|c| c.name == "istio-proxy"),
            "pod {created} not injected"
        );
        created += 1;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(
        served.len() >= 2,
        "the served certificate never changed ({} pods created)",
        created
    );
    // The renewal re-ran the reconciler, so status shows the new certificate's expiry.
    meshop_testenv::wait_until(
        "status shows the renewed certificate",
        Duration::from_secs(30),
        || async {
            let expiry = api
                .get("rotation")
                .await?
                .status
                .and_then(|s| s.webhook)
                .and_then(|w| w.certificate_expiry);
            ensure!(
                expiry.as_ref().is_some_and(|t| t.0 > first_expiry.0),
                "expiry {expiry:?}, first {first_expiry:?}"
            );
            Ok(())
        },
    )
    .await;

    // Deleting the MeshInstall removes its webhook registration.
    api.delete("rotation", &Default::default()).await.unwrap();
    let hooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    meshop_testenv::wait_until(
        "webhook registration removed",
        Duration::from_secs(60),
        || async {
            match hooks.get_opt("meshop-sidecar-injector-rotation").await? {
                None => Ok(()),
                Some(h) => bail!(
                    "still there, deletionTimestamp {:?}",
                    h.metadata.deletion_timestamp
                ),
            }
        },
    )
    .await;
    drop(operator);
}
