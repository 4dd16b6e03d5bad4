//! Talking to the API server: server-side apply, readiness, pruning and cleanup.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams,
    PropagationPolicy,
};
use kube::{Client, Resource};

use crate::render::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, Rendered, SHARED_INSTANCE};

/// The one field manager meshop applies with.
pub const FIELD_MANAGER: &str = "meshop";

/// Every kind meshop may create, for pruning and cleanup: (resource, namespaced).
pub fn managed_kinds() -> Vec<(ApiResource, bool)> {
    fn ar<K: Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    vec![
        (ar::<MutatingWebhookConfiguration>(), false),
        (ar::<HorizontalPodAutoscaler>(), true),
        (ar::<PodDisruptionBudget>(), true),
        (ar::<Deployment>(), true),
        (ar::<DaemonSet>(), true),
        (ar::<Service>(), true),
        (ar::<ConfigMap>(), true),
        (ar::<RoleBinding>(), true),
        (ar::<Role>(), true),
        (ar::<ClusterRoleBinding>(), false),
        (ar::<ClusterRole>(), false),
        (ar::<ServiceAccount>(), true),
        (
            ApiResource {
                group: "security.istio.io".into(),
                version: "v1".into(),
                api_version: "security.istio.io/v1".into(),
                kind: "PeerAuthentication".into(),
                plural: "peerauthentications".into(),
            },
            true,
        ),
        (ar::<CustomResourceDefinition>(), false),
        (ar::<Namespace>(), false),
    ]
}

/// Server-side applies one object with meshop's field manager, taking over fields someone else
/// changed (that is how drift is undone). Returns the object as the API server stored it.
pub async fn apply(client: &Client, object: &Rendered) -> Result<DynamicObject, kube::Error> {
    object
        .api(client)
        .patch(
            object.name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object.object),
        )
        .await
}

/// Whether an applied object is ready, and its (desired, ready) replicas for workloads.
/// `min_replicas` is the floor an autoscaler of the object keeps: until the autoscaler has scaled
/// up to it, the Deployment's own `spec.replicas` understates what must run.
pub fn readiness(
    object: &DynamicObject,
    kind: &str,
    min_replicas: Option<i32>,
) -> (bool, Option<(i32, i32)>) {
    let generation = object.metadata.generation.unwrap_or(0);
    let status = &object.data["status"];
    let int = |v: &serde_json::Value| v.as_i64().unwrap_or(0) as i32;
    match kind {
        "Deployment" => {
            let desired = (object.data["spec"]["replicas"].as_i64().unwrap_or(1) as i32)
                .max(min_replicas.unwrap_or(0));
            let observed = status["observedGeneration"].as_i64().unwrap_or(0) >= generation;
            let updated = int(&status["updatedReplicas"]);
            let ready = int(&status["readyReplicas"]);
            let available = int(&status["availableReplicas"]);
            let total = int(&status["replicas"]);
            // Ready once the rollout of this generation is complete: every replica updated and
            // available, and no old replica left.
            let ok = observed && updated >= desired && available >= desired && total == updated;
            (ok, Some((desired, ready)))
        }
        "DaemonSet" => {
            let desired = int(&status["desiredNumberScheduled"]);
            let ready = int(&status["numberReady"]);
            let updated = int(&status["updatedNumberScheduled"]);
            let observed = status["observedGeneration"].as_i64().unwrap_or(0) >= generation;
            (
                observed && ready >= desired && updated >= desired,
                Some((desired, ready)),
            )
        }
        "CustomResourceDefinition" => {
            let established = status["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
            (established, None)
        }
        _ => (true, None),
    }
}

fn selector(instance: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_INSTANCE}={instance}")
}

fn owned_by(object: &DynamicObject, uid: &str) -> bool {
    object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid)
}

/// `Kind/namespace/name`, matching [`Rendered::key`].
fn key(kind: &str, object: &DynamicObject) -> String {
    format!(
        "{}/{}/{}",
        kind,
        object.metadata.namespace.as_deref().unwrap_or(""),
        object.metadata.name.as_deref().unwrap_or("")
    )
}

async fn list(
    client: &Client,
    resource: &ApiResource,
    selector: &str,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    match api.list(&ListParams::default().labels(selector)).await {
        Ok(list) => Ok(list.items),
        // A kind whose CRD is not installed (yet, or any more) has nothing to prune.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

async fn delete(
    client: &Client,
    resource: &ApiResource,
    namespaced: bool,
    object: &DynamicObject,
) -> Result<(), kube::Error> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let api: Api<DynamicObject> = match (namespaced, object.metadata.namespace.as_deref()) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, resource),
        _ => Api::all_with(client.clone(), resource),
    };
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes every object that carries meshop's labels and this MeshInstall's owner uid but is not
/// in `keep` (by label and owner uid, never by name guesswork). Returns the keys deleted.
pub async fn prune(
    client: &Client,
    instance: &str,
    uid: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, kube::Error> {
    let mut deleted = Vec::new();
    for (resource, namespaced) in managed_kinds() {
        for object in list(client, &resource, &selector(instance)).await? {
            let k = key(&resource.kind, &object);
            if owned_by(&object, uid)
                && !keep.contains(&k)
                && object.metadata.deletion_timestamp.is_none()
            {
                delete(client, &resource, namespaced, &object).await?;
                deleted.push(k);
            }
        }
    }
    Ok(deleted)
}

/// Deletes everything a MeshInstall owns, cluster-scoped objects included. Returns how many
/// objects are still present (being deleted), so the finalizer can wait for them.
pub async fn cleanup(client: &Client, instance: &str, uid: &str) -> Result<usize, kube::Error> {
    let mut remaining = 0;
    for (resource, namespaced) in managed_kinds() {
        for object in list(client, &resource, &selector(instance)).await? {
            if owned_by(&object, uid) {
                remaining += 1;
                if object.metadata.deletion_timestamp.is_none() {
                    delete(client, &resource, namespaced, &object).await?;
                }
            }
        }
    }
    Ok(remaining)
}

/// Deletes the shared objects (Istio's CRDs, and the control-plane namespaces in `namespaces`)
/// once no MeshInstall uses them any more.
pub async fn cleanup_shared(
    client: &Client,
    namespaces: &BTreeSet<String>,
    all: bool,
) -> Result<(), kube::Error> {
    for (resource, namespaced) in managed_kinds() {
        if resource.kind != "Namespace" && !(all && resource.kind == "CustomResourceDefinition") {
            continue;
        }
        for object in list(client, &resource, &selector(SHARED_INSTANCE)).await? {
            let name = object.metadata.name.clone().unwrap_or_default();
            if resource.kind == "CustomResourceDefinition" || namespaces.contains(&name) {
                delete(client, &resource, namespaced, &object).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec_replicas: i64, ready: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d", "generation": 2 },
            "spec": { "replicas": spec_replicas },
            "status": { "observedGeneration": 2, "replicas": ready, "updatedReplicas": ready,
                        "readyReplicas": ready, "availableReplicas": ready }
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_ready_when_every_replica_is_updated_and_available() {
        assert_eq!(
            readiness(&deployment(2, 2), "Deployment", None),
            (true, Some((2, 2)))
        );
        assert_eq!(
            readiness(&deployment(2, 1), "Deployment", None),
            (false, Some((2, 1)))
        );
    }

    #[test]
    fn an_autoscaler_floor_above_spec_replicas_is_waited_for() {
        // The HPA has not scaled the Deployment up to its minimum yet.
        assert_eq!(
            readiness(&deployment(1, 1), "Deployment", Some(2)),
            (false, Some((2, 1)))
        );
        assert_eq!(
            readiness(&deployment(2, 2), "Deployment", Some(2)),
            (true, Some((2, 2)))
        );
    }
}
