//! Deleting a MeshInstall removes everything it created, cluster-scoped objects included; deleting
//! the last one also removes what every MeshInstall shares (its control-plane namespace, Istio's
//! CRDs). The oracle is independent of meshop's own list of the kinds it manages: every resource
//! type the API server reports through discovery is listed, and any object labelled with the
//! MeshInstall's name or owned by its uid counts as left behind.
//!
//! A test binary of its own: shared objects go only when no other MeshInstall exists, which the
//! parallel tests of reconciler.rs cannot promise.

use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::LogsOnFailure;
use meshop_testenv::inventory::{self, INSTANCE_LABEL};
use serde_json::json;

async fn create(api: &Api<MeshInstall>, name: &str, spec: serde_json::Value) -> String {
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// Deletes a MeshInstall and waits until it and everything labelled with its name or owned by it
/// are gone.
async fn delete_and_wait(client: &Client, api: &Api<MeshInstall>, name: &str, uid: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    meshop_testenv::wait_until(
        &format!("MeshInstall {name} and everything it created gone"),
        Duration::from_secs(180),
        || async {
            let mi = api.get_opt(name).await?;
            let left = inventory::left_of(client, name, uid).await?;
            ensure!(
                mi.is_none() && left.is_empty(),
                "MeshInstall present: {}, objects left: {left:?}",
                mi.is_some()
            );
            Ok(())
        },
    )
    .await;
}

async fn namespace_exists(client: &Client, name: &str) -> anyhow::Result<bool> {
    Ok(Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await?
        .is_some())
}

/// Istio's CRDs, found by their API group rather than by meshop's labels.
async fn istio_crds(client: &Client) -> anyhow::Result<Vec<String>> {
    Ok(Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|c| c.spec.group.ends_with("istio.io"))
        .filter_map(|c| c.metadata.name)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_leaves_nothing_behind_and_the_last_one_takes_the_shared_objects() {
    let _logs = LogsOnFailure("deletion".into());
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());

    // Two meshes: one with as many kinds as a profile has (CNI adds a DaemonSet), one small.
    let a = create(
        &api,
        "del-a",
        json!({ "profile": "demo", "namespace": "del-a", "components": { "cni": { "enabled": true } } }),
    )
    .await;
    let b = create(
        &api,
        "del-b",
        json!({ "profile": "minimal", "namespace": "del-b" }),
    )
    .await;
    for name in ["del-a", "del-b"] {
        meshop_testenv::wait_for_kstatus(&api, name, KStatus::Current, Duration::from_secs(240))
            .await;
    }

    // The oracle sees what del-a created, namespaced and cluster-scoped, so an empty answer later
    // means deleted rather than never seen.
    let before = inventory::left_of(&client, "del-a", &a).await.unwrap();
    for key in [
        "Deployment/del-a/istiod",
        "DaemonSet/del-a/istio-cni-node",
        "ClusterRole//istiod-del-a",
        "MutatingWebhookConfiguration//meshop-sidecar-injector-del-a",
    ] {
        assert!(
            before.iter().any(|k| k == key),
            "{key} not among {before:?}"
        );
    }
    assert!(!istio_crds(&client).await.unwrap().is_empty());

    // Deleting del-a removes all of it and its namespace; what del-b uses stays.
    delete_and_wait(&client, &api, "del-a", &a).await;
    meshop_testenv::wait_until(
        "namespace del-a deleted",
        Duration::from_secs(120),
        || async {
            ensure!(!namespace_exists(&client, "del-a").await?, "still there");
            Ok(())
        },
    )
    .await;
    assert!(namespace_exists(&client, "del-b").await.unwrap());
    assert!(
        !istio_crds(&client).await.unwrap().is_empty(),
        "Istio's CRDs must stay while del-b uses them"
    );
    meshop_testenv::wait_for_kstatus(&api, "del-b", KStatus::Current, Duration::from_secs(30))
        .await;

    // Deleting the last one removes the shared objects too.
    delete_and_wait(&client, &api, "del-b", &b).await;
    meshop_testenv::wait_until(
        "shared objects deleted",
        Duration::from_secs(120),
        || async {
            let crds = istio_crds(&client).await?;
            let shared: Vec<String> = inventory::objects(&client, |o| o.has_instance("shared"))
                .await?
                .iter()
                .map(inventory::ClusterObject::key)
                .collect();
            let namespace = namespace_exists(&client, "del-b").await?;
            ensure!(
                crds.is_empty() && shared.is_empty() && !namespace,
                "Istio CRDs {crds:?}, labelled {INSTANCE_LABEL}=shared {shared:?}, namespace del-b present: {namespace}"
            );
            Ok(())
        },
    )
    .await;
}
