//! Prune and cleanup: delete what a MeshInstall owns but no longer renders, or everything it owns
//! when it is deleted. Objects are found by meshop's labels and kept or deleted by the owner uid,
//! never by name guesswork. The kinds come from [`crate::kinds::MANAGED_KINDS`]. The choices are
//! pure functions over listed objects; only listing and deleting talk to the API server.

use std::collections::BTreeSet;

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PropagationPolicy};

use crate::kinds::{self, ManagedKind};
use crate::render::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY};

/// An object found in the cluster with meshop's labels.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub kind: &'static ManagedKind,
    pub object: DynamicObject,
}

impl Found {
    /// `Kind/namespace/name`, matching [`crate::render::Rendered::key`].
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind.kind,
            self.object.metadata.namespace.as_deref().unwrap_or(""),
            self.object.metadata.name.as_deref().unwrap_or("")
        )
    }

    fn owned_by(&self, uid: &str) -> bool {
        self.object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid)
    }

    fn being_deleted(&self) -> bool {
        self.object.metadata.deletion_timestamp.is_some()
    }
}

/// What pruning deletes: owned by this MeshInstall, not planned by this pass, not already going.
pub(crate) fn prune_set<'a>(
    found: &'a [Found],
    uid: &str,
    keep: &BTreeSet<String>,
) -> Vec<&'a Found> {
    found
        .iter()
        .filter(|f| f.owned_by(uid) && !keep.contains(&f.key()) && !f.being_deleted())
        .collect()
}

/// What a deleted MeshInstall still owns: everything with its uid. Returns (to delete now, still
/// present in all), so the finalizer can wait until the API server has removed them.
pub(crate) fn cleanup_set<'a>(found: &'a [Found], uid: &str) -> (Vec<&'a Found>, usize) {
    let owned: Vec<&Found> = found.iter().filter(|f| f.owned_by(uid)).collect();
    let remaining = owned.len();
    let delete = owned.into_iter().filter(|f| !f.being_deleted()).collect();
    (delete, remaining)
}

/// The shared objects to delete once a MeshInstall is gone: the control-plane namespaces no
/// other MeshInstall uses (but never one the installer granted: its grant lives there, see
/// [`crate::deploy::control_plane_objects`]), and Istio's CRDs when no MeshInstall is left.
pub(crate) fn shared_set<'a>(
    found: &'a [Found],
    unused_namespaces: &BTreeSet<String>,
    last_mesh: bool,
) -> Vec<&'a Found> {
    found
        .iter()
        .filter(|f| match f.kind.kind {
            "Namespace" => {
                let granted = f
                    .object
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(crate::deploy::LABEL_CONTROL_PLANE));
                !granted
                    && f.object
                        .metadata
                        .name
                        .as_ref()
                        .is_some_and(|n| unused_namespaces.contains(n))
            }
            // Istio's own CRDs go with the last mesh. The Gateway API CRDs stay: other
            // controllers and the users' routes use them (render::gateway_api_crds).
            "CustomResourceDefinition" => {
                last_mesh
                    && !f.object.metadata.name.as_deref().is_some_and(|n| {
                        n.ends_with(&format!(".{}", crate::render::GATEWAY_API_GROUP))
                    })
            }
            _ => false,
        })
        .collect()
}

fn selector(instance: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_INSTANCE}={instance}")
}

/// Every object of a managed kind labelled for `instance`, in deletion order.
pub(crate) async fn list_labelled(
    client: &Client,
    instance: &str,
) -> Result<Vec<Found>, kube::Error> {
    let mut found = Vec::new();
    for kind in kinds::deletion_order() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        match api
            .list(&ListParams::default().labels(&selector(instance)))
            .await
        {
            Ok(list) => found.extend(list.items.into_iter().map(|object| Found { kind, object })),
            // A kind whose CRD is not installed (yet, or any more) has nothing to prune.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Deletes objects in the order given, in the background (dependents are garbage collected).
/// Returns their keys.
pub(crate) async fn delete_all(
    client: &Client,
    objects: &[&Found],
) -> Result<Vec<String>, kube::Error> {
    let mut deleted = Vec::new();
    for found in objects {
        let name = found.object.metadata.name.as_deref().unwrap_or_default();
        let resource = found.kind.api_resource();
        let api: Api<DynamicObject> = match (
            found.kind.namespaced,
            found.object.metadata.namespace.as_deref(),
        ) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        deleted.push(found.key());
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(kind: &str, ns: &str, name: &str, owner: Option<&str>, deleting: bool) -> Found {
        let entry = kinds::MANAGED_KINDS
            .iter()
            .find(|k| k.kind == kind)
            .unwrap();
        let mut object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": entry.api_resource().api_version, "kind": kind,
            "metadata": { "name": name }
        }))
        .unwrap();
        if !ns.is_empty() {
            object.metadata.namespace = Some(ns.into());
        }
        object.metadata.owner_references = owner.map(|uid| {
            vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "meshop.dev/v1alpha1".into(),
                    kind: "MeshInstall".into(),
                    name: "m".into(),
                    uid: uid.into(),
                    ..Default::default()
                },
            ]
        });
        if deleting {
            object.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        Found {
            kind: entry,
            object,
        }
    }

    fn keys(list: &[&Found]) -> Vec<String> {
        list.iter().map(|f| f.key()).collect()
    }

    #[test]
    fn pruning_deletes_only_owned_unplanned_objects() {
        let found = vec![
            found("Deployment", "istio-system", "istiod", Some("me"), false),
            found(
                "Deployment",
                "istio-system",
                "istio-egressgateway",
                Some("me"),
                false,
            ),
            // Same labels, another owner (a MeshInstall recreated with the same name).
            found(
                "Deployment",
                "istio-system",
                "istio-ingressgateway",
                Some("other"),
                false,
            ),
            found(
                "Service",
                "istio-system",
                "istio-egressgateway",
                Some("me"),
                true,
            ),
            found("ConfigMap", "istio-system", "unowned", None, false),
        ];
        let keep = BTreeSet::from(["Deployment/istio-system/istiod".to_string()]);
        assert_eq!(
            keys(&prune_set(&found, "me", &keep)),
            vec!["Deployment/istio-system/istio-egressgateway"]
        );
    }

    #[test]
    fn cleanup_deletes_everything_owned_and_counts_what_is_still_there() {
        let found = vec![
            found("Deployment", "istio-system", "istiod", Some("me"), false),
            found("Service", "istio-system", "istiod", Some("me"), true),
            found("Deployment", "istio-system", "x", Some("other"), false),
        ];
        let (delete, remaining) = cleanup_set(&found, "me");
        assert_eq!(keys(&delete), vec!["Deployment/istio-system/istiod"]);
        assert_eq!(remaining, 2);
    }

    #[test]
    fn gateway_api_crds_are_never_deleted() {
        let found = vec![
            found(
                "CustomResourceDefinition",
                "",
                "gateways.gateway.networking.k8s.io",
                None,
                false,
            ),
            found(
                "CustomResourceDefinition",
                "",
                "gateways.networking.istio.io",
                None,
                false,
            ),
        ];
        let deleted = keys(&shared_set(&found, &BTreeSet::new(), true));
        assert_eq!(
            deleted,
            vec!["CustomResourceDefinition//gateways.networking.istio.io"]
        );
    }

    #[test]
    fn shared_objects_go_with_their_last_user() {
        let found = vec![
            found("Namespace", "", "istio-system", None, false),
            found("Namespace", "", "istio-canary", None, false),
            found(
                "CustomResourceDefinition",
                "",
                "gateways.networking.istio.io",
                None,
                false,
            ),
        ];
        let unused = BTreeSet::from(["istio-canary".to_string()]);
        assert_eq!(
            keys(&shared_set(&found, &unused, false)),
            vec!["Namespace//istio-canary"]
        );
        // A namespace the installer granted keeps its grant: never deleted, used or not.
        let mut granted = found.clone();
        granted[1].object.metadata.labels = Some(
            [(
                crate::deploy::LABEL_CONTROL_PLANE.to_string(),
                "granted".to_string(),
            )]
            .into(),
        );
        assert!(keys(&shared_set(&granted, &unused, false)).is_empty());
        assert_eq!(
            keys(&shared_set(&found, &unused, true)),
            vec![
                "Namespace//istio-canary",
                "CustomResourceDefinition//gateways.networking.istio.io"
            ]
        );
    }
}
