//! Istio configuration validation, judged by istiod and the API server themselves.
//!
//! meshop installs istiod's ValidatingWebhookConfiguration; the real `pilot-discovery` (as a local
//! process, authenticated as istiod's ServiceAccount) writes its CA bundle and, once a dry-run of
//! a known-bad Gateway is refused through the webhook, switches it to `failurePolicy: Fail`. For
//! the API server to reach that webhook, which is registered by Service, this test's control plane
//! uses a loopback Service range and istiod listens at its Service's ClusterIP:443.
//!
//! Then, with both running, a minute of forced reconciles must not write the configuration once
//! (meshop never takes back the fields istiod owns, and istiod finds nothing to repair), broken
//! Istio config must be refused while valid config is accepted, and with istiod stopped (the
//! webhook failing closed) meshop must still apply its own mesh-wide policy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::controlplane::{ControlPlane, Options};
use meshop_testenv::istio::{IstioBinaries, LocalIstiod};
use serde_json::json;

const MESH_READY: Duration = Duration::from_secs(180);
const ISTIOD_READY: Duration = Duration::from_secs(90);
/// istiod retries the switch to fail-closed with a backoff of up to a minute.
const FAIL_CLOSED: Duration = Duration::from_secs(150);
const NAMESPACE: &str = "istio-system";
const CONFIGURATION: &str = "istio-validator-istio-system";

/// How long both run side by side while writes are counted: a minute unless
/// `MESHOP_TEST_WRITE_WINDOW_SECS` says otherwise (shorter while iterating locally).
fn write_window() -> Duration {
    let secs = std::env::var("MESHOP_TEST_WRITE_WINDOW_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

fn virtual_services() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    )
}

fn virtual_service(name: &str, port: u32) -> DynamicObject {
    let mut vs = DynamicObject::new(name, &virtual_services()).data(json!({
        "spec": {
            "hosts": ["reviews"],
            "http": [{ "route": [{ "destination": { "host": "reviews", "port": { "number": port } } }] }]
        }
    }));
    vs.types = Some(kube::core::TypeMeta {
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
    });
    vs
}

/// Each webhook's (failurePolicy, caBundle length).
fn policies(c: &ValidatingWebhookConfiguration) -> Vec<(String, usize)> {
    c.webhooks
        .iter()
        .flatten()
        .map(|w| {
            (
                w.failure_policy.clone().unwrap_or_default(),
                w.client_config.ca_bundle.as_ref().map_or(0, |b| b.0.len()),
            )
        })
        .collect()
}

/// The fields (as managedFields paths) that `manager` owns in the configuration.
fn owned_by(c: &ValidatingWebhookConfiguration, manager: &str) -> String {
    c.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .filter_map(|m| m.fields_v1.as_ref())
        .map(|f| f.0.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn reconciles(operator: &meshop_testenv::Operator) -> u64 {
    let (status, body) = meshop_testenv::istio::http_get(operator.health, "/metrics")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("meshop_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no meshop_reconciles_total in\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_owns_its_validation_webhook_fields_and_meshop_never_fights_it() {
    let istio = IstioBinaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let cp = ControlPlane::start(Options {
        controllers: true,
        service_cidr: "127.100.0.0/24".into(),
        ..Options::default()
    })
    .unwrap();
    let _logs = meshop_testenv::LogsOnFailure(format!("control plane in {}", cp.dir.display()));
    let operator = meshop_testenv::start_operator(&cp, "meshop-validation", &[]).unwrap();
    let client = cp.client().await.unwrap();

    let meshes: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": "validated" },
        "spec": { "profile": "minimal", "namespace": NAMESPACE }
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, "validated", KStatus::Current, MESH_READY).await;

    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let created = configurations.get(CONFIGURATION).await.unwrap();
    assert!(
        policies(&created)
            .iter()
            .all(|(policy, ca)| policy == "Ignore" && *ca == 0),
        "meshop creates it failing open, without a CA: {:?}",
        policies(&created)
    );

    // istiod at its Service's ClusterIP:443, where the API server calls the webhook.
    let service = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get("istiod")
        .await
        .unwrap();
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    let https: SocketAddr = format!("{cluster_ip}:443").parse().unwrap();
    let launched = Instant::now();
    let mut istiod = LocalIstiod::start_serving_https_at(
        &cp,
        &client,
        &istio,
        NAMESPACE,
        "istiod",
        "validation",
        Some(https),
    )
    .await
    .unwrap();
    let ready = istiod.wait_ready(ISTIOD_READY).await;
    assert!(ready.is_ok(), "{ready:?}\n{}", istiod.log());

    // istiod proves the API server reaches it, then fails closed, with its CA.
    let switched = meshop_testenv::wait_until(
        "istiod switched its webhooks to failurePolicy Fail with its CA bundle",
        FAIL_CLOSED,
        || async {
            let c = configurations.get(CONFIGURATION).await?;
            let p = policies(&c);
            anyhow::ensure!(
                !p.is_empty() && p.iter().all(|(policy, ca)| policy == "Fail" && *ca > 0),
                "{p:?}"
            );
            Ok(c)
        },
    )
    .await;
    eprintln!(
        "istiod failed validation closed within {:.1}s of its start",
        launched.elapsed().as_secs_f64()
    );
    let istiod_fields = switched
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            let f = m
                .fields_v1
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default();
            f.contains("f:failurePolicy") && m.manager.as_deref() != Some("meshop-initial")
        })
        .filter_map(|m| m.manager.clone())
        .collect::<Vec<_>>();
    assert!(
        !istiod_fields.is_empty() && !istiod_fields.iter().any(|m| m == "meshop"),
        "istiod's manager owns failurePolicy now: {istiod_fields:?}"
    );

    // The API server sends Istio config to istiod, which refuses what is broken.
    let app = meshop_testenv::namespace(&client, "validated-app")
        .await
        .unwrap();
    let vs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &app.name, &virtual_services());
    vs.create(&PostParams::default(), &virtual_service("good", 9080))
        .await
        .expect("a valid VirtualService is accepted");
    let refused = vs
        .create(&PostParams::default(), &virtual_service("broken", 99999))
        .await
        .expect_err("a VirtualService with port 99999 must be refused");
    assert!(
        refused.to_string().contains("denied the request"),
        "refused by istiod's validation: {refused}"
    );

    // Both running, a minute of reconciles: no write to the configuration, from either side.
    let before = configurations.get(CONFIGURATION).await.unwrap();
    let rv = before.metadata.resource_version.clone();
    let reconciles_before = reconciles(&operator).await;
    let window = write_window();
    let deadline = Instant::now() + window;
    let mut pokes = 0;
    while Instant::now() < deadline {
        // A metadata change wakes the controller: a full reconcile pass, apply included.
        meshes
            .patch(
                "validated",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": { "test.meshop.dev/poke": pokes.to_string() } } })),
            )
            .await
            .unwrap();
        pokes += 1;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let after = configurations.get(CONFIGURATION).await.unwrap();
    let passes = reconciles(&operator).await - reconciles_before;
    eprintln!(
        "{}s side by side: {passes} reconcile passes, resourceVersion {:?} -> {:?}",
        window.as_secs(),
        rv,
        after.metadata.resource_version
    );
    assert!(
        passes >= pokes / 2,
        "meshop reconciled only {passes} times for {pokes} pokes"
    );
    assert_eq!(
        after.metadata.resource_version, rv,
        "the configuration was written while both ran: {:?}",
        after.metadata.managed_fields
    );
    assert_eq!(policies(&after), policies(&switched));
    let meshop_owns = owned_by(&after, "meshop");
    assert!(
        !meshop_owns.contains("f:failurePolicy") && !meshop_owns.contains("f:caBundle"),
        "meshop owns none of istiod's fields: {meshop_owns}"
    );

    // istiod down, the webhook failing closed: broken and valid config alike are refused, but
    // meshop's own policy (outside the webhook's object selector) still applies.
    drop(istiod);
    let closed = vs
        .create(&PostParams::default(), &virtual_service("while-down", 9080))
        .await
        .expect_err("with istiod down, failurePolicy Fail refuses Istio config");
    assert!(
        closed.to_string().contains("failed calling webhook"),
        "{closed}"
    );
    meshes
        .patch(
            "validated",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "meshConfig": { "mtlsMode": "STRICT" } } })),
        )
        .await
        .unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, "validated", KStatus::Current, MESH_READY).await;
    let peer_authentications: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NAMESPACE,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("security.istio.io", "v1", "PeerAuthentication"),
            "peerauthentications",
        ),
    );
    let policy = peer_authentications.get("default").await.unwrap();
    assert_eq!(policy.data["spec"]["mtls"]["mode"], "STRICT");
    let still = configurations.get(CONFIGURATION).await.unwrap();
    assert_eq!(
        policies(&still),
        policies(&switched),
        "meshop left failurePolicy and caBundle to istiod"
    );

    // Deleting the MeshInstall removes the configuration with the rest.
    meshes
        .delete("validated", &Default::default())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "the validating webhook configuration deleted with its MeshInstall",
        MESH_READY,
        || async {
            anyhow::ensure!(configurations.get_opt(CONFIGURATION).await?.is_none());
            Ok(())
        },
    )
    .await;
    drop(operator);
}
