//! Istio versions against the test control plane with controllers: the default is the newest
//! supported release, an alias resolves to its newest patch, an end-of-life release is Stalled and
//! creates nothing, and 1.30.5 -> 1.31.1 upgrades in place (uids kept, istiod before the gateway).
//! Each test owns its MeshInstall and control-plane namespace, so they run in parallel.

use std::time::Duration;

use anyhow::{anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, condition};
use meshop::controller::status::KStatus;
use meshop_testenv::GiveUp;
use serde_json::json;

const READY: Duration = Duration::from_secs(120);

/// The binary's shared `meshop run` process, and a client.
async fn operator() -> Client {
    meshop_testenv::shared_operator();
    meshop_testenv::shared_with_controllers()
        .client()
        .await
        .unwrap()
}

async fn create(api: &Api<MeshInstall>, name: &str, spec: serde_json::Value) {
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
}

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_version_installs_the_newest_supported_release() {
    let client = operator().await;
    let api: Api<MeshInstall> = Api::all(client.clone());
    create(
        &api,
        "v-default",
        json!({ "profile": "minimal", "namespace": "v-default" }),
    )
    .await;
    let mi = meshop_testenv::wait_for_kstatus(&api, "v-default", KStatus::Current, READY).await;
    assert_eq!(mi.status.unwrap().version.as_deref(), Some("1.31.1"));
    let istiod = Api::<Deployment>::namespaced(client, "v-default")
        .get("istiod")
        .await
        .unwrap();
    assert_eq!(image(&istiod), "docker.io/istio/pilot:1.31.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minor_alias_resolves_to_its_newest_patch() {
    let client = operator().await;
    let api: Api<MeshInstall> = Api::all(client.clone());
    create(
        &api,
        "v-alias",
        json!({ "profile": "minimal", "namespace": "v-alias", "version": "1.30" }),
    )
    .await;
    let mi = meshop_testenv::wait_for_kstatus(&api, "v-alias", KStatus::Current, READY).await;
    assert_eq!(mi.status.unwrap().version.as_deref(), Some("1.30.5"));
    let istiod = Api::<Deployment>::namespaced(client, "v-alias")
        .get("istiod")
        .await
        .unwrap();
    assert_eq!(image(&istiod), "docker.io/istio/pilot:1.30.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_of_life_release_is_stalled_and_creates_nothing() {
    let client = operator().await;
    let api: Api<MeshInstall> = Api::all(client.clone());
    create(
        &api,
        "v-eol",
        json!({ "profile": "minimal", "namespace": "v-eol", "version": "1.28.2" }),
    )
    .await;
    let mi = meshop_testenv::wait_for_kstatus(&api, "v-eol", KStatus::Failed, READY).await;
    let status = mi.status.unwrap();
    let stalled = status.condition(condition::STALLED).unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(
        stalled
            .message
            .contains("1.28.2 is end of life since 2026-07-01")
            && stalled.message.contains("1.31.1")
            && stalled.message.contains("1.30.5"),
        "{}",
        stalled.message
    );
    // Nothing was created: not even the namespace.
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt("v-eol")
            .await
            .unwrap()
            .is_none()
    );
    let owned = Api::<Deployment>::all(client)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=v-eol"))
        .await
        .unwrap();
    assert!(owned.items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_upgrade_keeps_uids_and_rolls_istiod_first() {
    let client = operator().await;
    let api: Api<MeshInstall> = Api::all(client.clone());
    let ns = "v-upgrade";
    create(
        &api,
        "v-upgrade",
        json!({ "profile": "demo", "namespace": ns, "version": "1.30.5",
                "components": { "addons": { "prometheus": { "enabled": false }, "grafana": { "enabled": false },
                                            "kiali": { "enabled": false }, "jaeger": { "enabled": false } } } }),
    )
    .await;
    meshop_testenv::wait_for_kstatus(&api, "v-upgrade", KStatus::Current, READY).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let uid = |d: Deployment| d.metadata.uid.unwrap();
    let istiod_uid = uid(deployments.get("istiod").await.unwrap());
    let gateway_uid = uid(deployments.get("istio-ingressgateway").await.unwrap());
    let gateway_svc_uid = services
        .get("istio-ingressgateway")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    api.patch(
        "v-upgrade",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": "1.31.1" } })),
    )
    .await
    .unwrap();

    // While istiod rolls to 1.31.1, the gateway must still run 1.30.5: the gateway moves only
    // once istiod is ready. Watch both until the gateway has moved, recording the order.
    meshop_testenv::wait_until("gateway on 1.31.1", READY, || async {
        let istiod = deployments.get("istiod").await?;
        let gateway = deployments.get("istio-ingressgateway").await?;
        let gw_moved = image(&gateway).ends_with(":1.31.1");
        let istiod_done = image(&istiod).ends_with(":1.31.1")
            && istiod.status.as_ref().and_then(|s| s.updated_replicas) >= Some(1)
            && istiod.status.as_ref().and_then(|s| s.available_replicas) >= Some(1);
        if gw_moved {
            if !istiod_done {
                // Not a state to wait out: the order was wrong.
                return Err(GiveUp(anyhow!("the gateway moved before istiod was ready")).into());
            }
            return Ok(());
        }
        bail!("gateway still on {}", image(&gateway))
    })
    .await;
    let mi = meshop_testenv::wait_for_kstatus(&api, "v-upgrade", KStatus::Current, READY).await;
    assert_eq!(mi.status.unwrap().version.as_deref(), Some("1.31.1"));
    assert_eq!(uid(deployments.get("istiod").await.unwrap()), istiod_uid);
    assert_eq!(
        uid(deployments.get("istio-ingressgateway").await.unwrap()),
        gateway_uid
    );
    assert_eq!(
        services
            .get("istio-ingressgateway")
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap(),
        gateway_svc_uid
    );
    // An event names both releases.
    let notes = meshop_testenv::event_notes(&client, "v-upgrade", "VersionChanged")
        .await
        .unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("1.30.5") && n.contains("1.31.1")),
        "{notes:?}"
    );
}
