//! The control-plane namespace and the mesh-wide configuration: the mesh ConfigMap istiod reads
//! and the mesh-wide mTLS PeerAuthentication.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ApiResource, DynamicObject};
use serde_json::json;

use super::common::{cluster_meta, meta};
use super::{ComponentId, Rendered};
use crate::api::MtlsMode;
use crate::effective::Installation;

pub fn namespace(install: &Installation) -> Vec<Rendered> {
    let mut metadata = cluster_meta(install, ComponentId::Base, &install.namespace);
    // Pods of the control plane must never get a sidecar from any webhook.
    metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("istio-injection".into(), "disabled".into());
    let mut rendered = Rendered::new(
        ComponentId::Base,
        &Namespace {
            metadata,
            ..Default::default()
        },
    );
    rendered.shared = true;
    vec![rendered]
}

pub fn render(install: &Installation) -> Vec<Rendered> {
    vec![
        Rendered::new(ComponentId::Istiod, &mesh_config_map(install)),
        peer_authentication(install),
    ]
}

/// The mesh configuration istiod reads (`istio` or `istio-<revision>` ConfigMap, key `mesh`):
/// built and checked when the spec is resolved ([`crate::effective::Mesh::config`]).
pub fn mesh_config(install: &Installation) -> serde_json::Value {
    serde_json::Value::Object(install.mesh.config.clone())
}

fn mesh_config_map(install: &Installation) -> ConfigMap {
    // istiod reads this with a YAML 1.1 reader: a trust domain `on` must stay a string.
    let mesh = crate::yaml::to_string(&mesh_config(install)).expect("JSON always converts to YAML");
    ConfigMap {
        metadata: meta(
            install,
            ComponentId::Istiod,
            &format!("istio{}", install.revision_suffix()),
        ),
        data: Some(BTreeMap::from([
            ("mesh".to_string(), mesh),
            ("meshNetworks".to_string(), "networks: {}\n".to_string()),
        ])),
        ..Default::default()
    }
}

/// The mesh-wide PeerAuthentication in the root namespace. Named `default` for the default
/// revision and `default-<revision>` otherwise, so a canary install never overwrites the
/// policy of the install beside it (Istio applies the oldest mesh-wide policy).
fn peer_authentication(install: &Installation) -> Rendered {
    let resource = ApiResource {
        group: "security.istio.io".into(),
        version: "v1".into(),
        api_version: "security.istio.io/v1".into(),
        kind: "PeerAuthentication".into(),
        plural: "peerauthentications".into(),
    };
    let mut object =
        DynamicObject::new(&format!("default{}", install.revision_suffix()), &resource)
            .within(&install.namespace)
            .data(
                json!({ "spec": { "mtls": { "mode": match install.mesh.mtls {
            MtlsMode::STRICT => "STRICT",
            MtlsMode::PERMISSIVE => "PERMISSIVE",
        } } } }),
            );
    object.metadata.labels = meta(install, ComponentId::Istiod, "").labels;
    Rendered {
        component: ComponentId::Istiod,
        resource,
        namespaced: true,
        shared: false,
        object,
        initial: None,
        ownership: super::Ownership::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Profile;

    #[test]
    fn every_profile_names_prometheus_as_the_default_metrics_provider() {
        for profile in Profile::ALL {
            let spec: crate::api::MeshInstallSpec =
                serde_json::from_value(json!({ "profile": profile })).unwrap();
            let install = Installation::resolve(
                crate::effective::Owner {
                    name: "m".into(),
                    uid: None,
                },
                &spec,
            )
            .unwrap();
            assert_eq!(
                mesh_config(&install)["defaultProviders"]["metrics"],
                json!(["prometheus"]),
                "{profile:?}"
            );
        }
    }
}
