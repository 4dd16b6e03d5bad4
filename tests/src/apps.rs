//! Application workloads for upgrade tests: labelled namespaces, Deployments that kwok runs, and
//! reading which revision their pods' proxies belong to.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// Creates namespace `name` with `labels` and waits for its default ServiceAccount (pods need it;
/// the controller manager makes it).
pub async fn labelled_namespace(client: &Client, name: &str, labels: serde_json::Value) {
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    crate::wait_until(
        &format!("default ServiceAccount in {name}"),
        Duration::from_secs(30),
        || async { sa.get_opt("default").await?.context("not created yet") },
    )
    .await;
}

/// A one-replica Deployment `name` (label app=<name>) whose rollout kwok completes.
pub fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": 1,
        "progressDeadlineSeconds": 10,
        "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": format!("example.com/{name}:1")}]}}}}))
    .unwrap()
}

/// The revision a pod's proxy belongs to, as the injector recorded it (`None`: no sidecar).
pub fn pod_revision(p: &Pod) -> Option<String> {
    let annotations = p.metadata.annotations.as_ref()?;
    annotations.get("sidecar.istio.io/status")?;
    annotations.get("istio.io/rev").cloned()
}

/// The image of a pod's istio-proxy container (init container in native mode).
pub fn proxy_image(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == "istio-proxy")
        .and_then(|c| c.image.clone())
}

/// A Deployment's available replicas. The API server leaves `status.availableReplicas` out when
/// it is zero (and a new Deployment has no status at all), so absent means 0, never "unknown".
pub fn available_replicas(d: &Deployment) -> i32 {
    d.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Whether a Deployment's rollout of its current template is complete and available.
pub fn rolled_out(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && available_replicas(d) >= want
}

/// Waits until every pod in `namespace` (not being deleted) runs `revision`'s proxy and there are
/// `count` of them.
pub async fn wait_pods_on(
    client: &Client,
    namespace: &str,
    revision: &str,
    count: usize,
    timeout: Duration,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    crate::wait_until(
        &format!("{count} pods in {namespace} on revision {revision}"),
        timeout,
        || async {
            let list = pods.list(&ListParams::default()).await?;
            let seen: Vec<(String, Option<String>)> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| (p.metadata.name.clone().unwrap_or_default(), pod_revision(p)))
                .collect();
            if seen.len() == count && seen.iter().all(|(_, r)| r.as_deref() == Some(revision)) {
                Ok(())
            } else {
                bail!("(pod, revision): {seen:?}")
            }
        },
    )
    .await
}

/// Creates the Deployments and waits until each has rolled out.
pub async fn create_deployments(client: &Client, namespace: &str, names: &[&str]) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for name in names {
        api.create(&PostParams::default(), &deployment(name))
            .await?;
    }
    crate::poll_until(
        &format!("Deployments in {namespace} rolled out"),
        Duration::from_secs(90),
        || async {
            let list = api.list(&ListParams::default()).await?;
            let pending: Vec<String> = list
                .items
                .iter()
                .filter(|d| !rolled_out(d))
                .filter_map(|d| d.metadata.name.clone())
                .collect();
            if pending.is_empty() && list.items.len() == names.len() {
                Ok(())
            } else {
                bail!("not rolled out: {pending:?}")
            }
        },
    )
    .await
}

/// Whether the pod has an `istio-proxy` container (classic or native sidecar).
pub fn has_sidecar(p: &Pod) -> bool {
    p.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == "istio-proxy")
    })
}
