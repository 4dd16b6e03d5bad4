//! Istio's API CRDs, written by meshop: every kind and served version Istio has today.
//!
//! Schemas are permissive (`spec` and `status` keep unknown fields): istiod validates Istio config
//! itself, and a permissive schema cannot reject a field a newer Istio adds. The kind and version
//! list is a fact taken from Istio's API reference.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps,
};

use super::common::cluster_meta;
use super::{ComponentId, Rendered};
use crate::effective::Installation;

/// One Istio kind: group, kind, plural, short names, served versions (the storage version first).
pub struct IstioKind {
    pub group: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    pub versions: &'static [&'static str],
}

const fn k(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    versions: &'static [&'static str],
) -> IstioKind {
    IstioKind {
        group,
        kind,
        plural,
        short_names,
        versions,
    }
}

const NET: &str = "networking.istio.io";
const SEC: &str = "security.istio.io";
const NET_VERSIONS: &[&str] = &["v1alpha3", "v1beta1", "v1"];
const SEC_VERSIONS: &[&str] = &["v1beta1", "v1"];

/// Every Istio API kind.
pub const KINDS: &[IstioKind] = &[
    k(
        NET,
        "DestinationRule",
        "destinationrules",
        &["dr"],
        NET_VERSIONS,
    ),
    k(NET, "EnvoyFilter", "envoyfilters", &[], &["v1alpha3"]),
    k(NET, "Gateway", "gateways", &["gw"], NET_VERSIONS),
    k(NET, "ProxyConfig", "proxyconfigs", &[], &["v1beta1"]),
    k(NET, "ServiceEntry", "serviceentries", &["se"], NET_VERSIONS),
    k(NET, "Sidecar", "sidecars", &[], NET_VERSIONS),
    k(
        NET,
        "VirtualService",
        "virtualservices",
        &["vs"],
        NET_VERSIONS,
    ),
    k(
        NET,
        "WorkloadEntry",
        "workloadentries",
        &["we"],
        NET_VERSIONS,
    ),
    k(
        NET,
        "WorkloadGroup",
        "workloadgroups",
        &["wg"],
        NET_VERSIONS,
    ),
    k(
        SEC,
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["ap"],
        SEC_VERSIONS,
    ),
    k(
        SEC,
        "PeerAuthentication",
        "peerauthentications",
        &["pa"],
        SEC_VERSIONS,
    ),
    k(
        SEC,
        "RequestAuthentication",
        "requestauthentications",
        &["ra"],
        SEC_VERSIONS,
    ),
    k(
        "telemetry.istio.io",
        "Telemetry",
        "telemetries",
        &["telemetry"],
        &["v1alpha1", "v1"],
    ),
    k(
        "extensions.istio.io",
        "WasmPlugin",
        "wasmplugins",
        &[],
        &["v1alpha1"],
    ),
    // New in Istio 1.31.
    k(
        "extensions.istio.io",
        "TrafficExtension",
        "trafficextensions",
        &[],
        &["v1alpha1"],
    ),
];

fn open_object(description: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("object".into()),
        description: Some(description.into()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    }
}

/// The CRD of one kind.
pub fn crd(install: &Installation, kind: &IstioKind) -> CustomResourceDefinition {
    let name = format!("{}.{}", kind.plural, kind.group);
    let schema = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(
            [
                (
                    "spec".to_string(),
                    open_object(&format!(
                        "The {} configuration; istiod validates it.",
                        kind.kind
                    )),
                ),
                ("status".to_string(), open_object("Written by istiod.")),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let versions = kind
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| CustomResourceDefinitionVersion {
            name: v.to_string(),
            served: true,
            storage: i == 0,
            schema: Some(CustomResourceValidation {
                open_api_v3_schema: Some(schema.clone()),
            }),
            subresources: Some(CustomResourceSubresources {
                status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                scale: None,
            }),
            ..Default::default()
        })
        .collect();
    let mut metadata = cluster_meta(install, ComponentId::Base, &name);
    metadata.labels.get_or_insert_with(Default::default).insert(
        "istio".into(),
        kind.group.split('.').next().unwrap_or_default().into(),
    );
    CustomResourceDefinition {
        metadata,
        spec: CustomResourceDefinitionSpec {
            group: kind.group.into(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.into(),
                plural: kind.plural.into(),
                singular: Some(kind.kind.to_lowercase()),
                list_kind: Some(format!("{}List", kind.kind)),
                short_names: if kind.short_names.is_empty() {
                    None
                } else {
                    Some(kind.short_names.iter().map(|s| s.to_string()).collect())
                },
                categories: Some(vec![
                    "istio-io".into(),
                    format!(
                        "{}-istio-io",
                        kind.group.split('.').next().unwrap_or_default()
                    ),
                ]),
            },
            scope: "Namespaced".into(),
            versions,
            conversion: None,
            preserve_unknown_fields: None,
        },
        status: None,
    }
}

/// Every Istio CRD, shared by all MeshInstalls of the cluster.
pub fn istio_crds(install: &Installation) -> Vec<Rendered> {
    KINDS
        .iter()
        .map(|kind| {
            let mut r = Rendered::new(ComponentId::Base, &crd(install, kind));
            r.shared = true;
            r
        })
        .collect()
}

/// Kubernetes Gateway API kinds istiod implements (plurals), for RBAC without wildcards.
pub const GATEWAY_API_RESOURCES: &[&str] = &[
    "gatewayclasses",
    "gateways",
    "httproutes",
    "grpcroutes",
    "tcproutes",
    "tlsroutes",
    "udproutes",
    "referencegrants",
    "backendtlspolicies",
    // Standard since Gateway API v1.5; istiod informs on it once its CRD is there.
    "listenersets",
];

/// RBAC rules over every Istio kind, one rule per API group, naming each resource (optionally a
/// subresource such as `status`): meshop grants no wildcard resources.
pub fn istio_rules(
    verbs: &[&str],
    subresource: Option<&str>,
) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let mut groups: Vec<&str> = KINDS.iter().map(|k| k.group).collect();
    groups.dedup();
    groups
        .into_iter()
        .map(|group| k8s_openapi::api::rbac::v1::PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(
                KINDS
                    .iter()
                    .filter(|k| k.group == group)
                    .map(|k| match subresource {
                        Some(sub) => format!("{}/{sub}", k.plural),
                        None => k.plural.to_string(),
                    })
                    .collect(),
            ),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .collect()
}

/// The same for the Gateway API kinds.
pub fn gateway_api_rule(
    verbs: &[&str],
    subresource: Option<&str>,
) -> k8s_openapi::api::rbac::v1::PolicyRule {
    k8s_openapi::api::rbac::v1::PolicyRule {
        api_groups: Some(vec!["gateway.networking.k8s.io".into()]),
        resources: Some(
            GATEWAY_API_RESOURCES
                .iter()
                .map(|r| match subresource {
                    Some(sub) => format!("{r}/{sub}"),
                    None => r.to_string(),
                })
                .collect(),
        ),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}
