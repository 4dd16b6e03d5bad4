//! What is in the cluster, found without meshop's help: every resource type the API server
//! reports through discovery that can be listed, every object of it (metadata only). Tests use
//! this as an oracle that does not share meshop's own list of the kinds it manages, so a kind
//! meshop forgets to clean up still shows.

use std::collections::BTreeMap;

use anyhow::Result;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};

/// The label meshop puts the MeshInstall's name in.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// One object, by its metadata.
#[derive(Clone, Debug)]
pub struct ClusterObject {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The uids in its ownerReferences.
    pub owners: Vec<String>,
    /// It has a deletionTimestamp (finalizers still pending).
    pub deleting: bool,
    pub uid: String,
    /// Changes with every write to the object.
    pub resource_version: String,
    /// Per field manager and operation (`meshop:Apply`), the time of its last change (from
    /// managedFields).
    pub managers: BTreeMap<String, String>,
}

impl ClusterObject {
    /// `Kind/namespace/name` (namespace empty for cluster-scoped objects), as meshop's
    /// `Rendered::key` spells it.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
    }

    /// Carries `app.kubernetes.io/instance=<instance>`.
    pub fn has_instance(&self, instance: &str) -> bool {
        self.labels.get(INSTANCE_LABEL).map(String::as_str) == Some(instance)
    }

    /// Has an owner reference to `uid`.
    pub fn owned_by(&self, uid: &str) -> bool {
        self.owners.iter().any(|o| o == uid)
    }
}

/// Every object in the cluster that `keep` accepts, across every listable resource type that
/// discovery reports now (built-in kinds and CRDs alike, in each group's preferred version).
pub async fn objects(
    client: &Client,
    keep: impl Fn(&ClusterObject) -> bool,
) -> Result<Vec<ClusterObject>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let list = match api.list_metadata(&ListParams::default()).await {
                Ok(list) => list,
                // A CRD deleted since discovery ran.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
                Err(e) => return Err(anyhow::Error::from(e).context(resource.kind.clone())),
            };
            for item in list.items {
                let meta = item.metadata;
                let object = ClusterObject {
                    kind: resource.kind.clone(),
                    namespace: meta.namespace,
                    name: meta.name.unwrap_or_default(),
                    labels: meta.labels.unwrap_or_default(),
                    owners: meta
                        .owner_references
                        .unwrap_or_default()
                        .into_iter()
                        .map(|o| o.uid)
                        .collect(),
                    deleting: meta.deletion_timestamp.is_some(),
                    uid: meta.uid.unwrap_or_default(),
                    resource_version: meta.resource_version.unwrap_or_default(),
                    managers: meta
                        .managed_fields
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|m| {
                            Some((
                                format!("{}:{}", m.manager?, m.operation?),
                                m.time?.0.to_string(),
                            ))
                        })
                        .collect(),
                };
                if keep(&object) {
                    out.push(object);
                }
            }
        }
    }
    Ok(out)
}

/// Everything left of a MeshInstall: objects labelled with its name, or owned by its uid.
pub async fn left_of(client: &Client, instance: &str, uid: &str) -> Result<Vec<String>> {
    Ok(
        objects(client, |o| o.has_instance(instance) || o.owned_by(uid))
            .await?
            .iter()
            .map(ClusterObject::key)
            .collect(),
    )
}
