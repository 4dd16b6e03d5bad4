//! What a newer meshop does with meshes an older meshop installed. The MeshInstalls' status is
//! written as the older meshop left it before this binary's operator starts, so the first pass
//! sees exactly that history:
//! - installed at Istio 1.29, asked for 1.31: refused, Istio upgrades one minor at a time;
//! - asked for the alias "1.31", installed when the alias meant 1.31.0: the new catalog's 1.31.1
//!   is rolled out in place, visibly (an event naming both, Reconciling, then Ready).

use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, condition};
use meshop::controller::status::KStatus;
use serde_json::json;

/// Creates a MeshInstall and writes the status an older meshop left on it.
async fn left_by_an_older_meshop(
    api: &Api<MeshInstall>,
    name: &str,
    version: &str,
    installed: &str,
) {
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": { "profile": "minimal", "namespace": name, "version": version }
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    let status =
        json!({ "status": { "version": installed, "profile": "minimal", "revision": "" } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshes_installed_by_an_older_meshop() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    left_by_an_older_meshop(&api, "skew", "1.31.1", "1.29.8").await;
    left_by_an_older_meshop(&api, "alias", "1.31", "1.31.0").await;

    let options = meshop::controller::RunOptions {
        health_addr: "127.0.0.1:0".parse().unwrap(),
        leader_election: false,
        lease_namespace: "default".into(),
        identity: "skew-test".into(),
        lease_duration: Duration::from_secs(15),
        webhook_addr: None,
        webhook_cert_lifetime: meshop::webhook::certs::DEFAULT_CERT_LIFETIME,
        webhook_limits: Default::default(),
        webhook_url: None,
    };
    let operator = tokio::spawn(meshop::controller::run(cp.client().await.unwrap(), options));

    let mi =
        meshop_testenv::wait_for_kstatus(&api, "skew", KStatus::Failed, Duration::from_secs(60))
            .await;
    let status = mi.status.unwrap();
    let stalled = status.condition(condition::STALLED).unwrap();
    assert_eq!(stalled.reason, "VersionSkew");
    assert!(
        stalled.message.contains("1.29.8") && stalled.message.contains("set version 1.30 first"),
        "{}",
        stalled.message
    );
    assert_eq!(
        status.version.as_deref(),
        Some("1.29.8"),
        "the installed version is kept"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt("skew").await.unwrap().is_none(),
        "nothing applied"
    );

    // One minor up is what Istio allows: the pass proceeds.
    api.patch(
        "skew",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": "1.30" } })),
    )
    .await
    .unwrap();
    meshop_testenv::wait_until("1.30.5 applied", Duration::from_secs(60), || async {
        let mi = api.get("skew").await?;
        let status = mi.status.unwrap_or_default();
        let stalled = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True");
        match (
            status.version.as_deref(),
            stalled,
            namespaces.get_opt("skew").await?,
        ) {
            (Some("1.30.5"), false, Some(_)) => Ok(()),
            (v, s, ns) => bail!(
                "version {v:?}, stalled {s}, namespace created {}",
                ns.is_some()
            ),
        }
    })
    .await;

    // The alias moved: rolled out in place to 1.31.1, with an event naming both releases.
    let mi =
        meshop_testenv::wait_for_kstatus(&api, "alias", KStatus::Current, Duration::from_secs(120))
            .await;
    assert_eq!(mi.status.unwrap().version.as_deref(), Some("1.31.1"));
    let istiod = Api::<Deployment>::namespaced(client.clone(), "alias")
        .get("istiod")
        .await
        .unwrap();
    let image = istiod.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("docker.io/istio/pilot:1.31.1"));
    let changed = meshop_testenv::event_notes(&client, "alias", "VersionChanged")
        .await
        .unwrap();
    assert!(
        changed.iter().any(|m| m.contains("1.31.0 to 1.31.1")),
        "{changed:?}"
    );
    operator.abort();
}
