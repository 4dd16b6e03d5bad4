//! The Kubernetes Gateway API CRDs, for ambient mode: istiod deploys waypoints from Gateway API
//! `Gateway`s and watches the other kinds, and Istio installs no Gateway API CRDs itself.
//!
//! Written by meshop like its Istio CRDs: the kinds, scopes, names and served versions of one
//! Gateway API release (the standard channel), with permissive schemas, and the release's
//! `gateway.networking.k8s.io/bundle-version` and `channel` annotations, which istiod reads to
//! decide which kinds it may watch. The upstream CRDs validate and default every field; a cluster
//! that wants that installs the upstream bundle itself, before or after meshop. Which release an
//! Istio minor gets is data (`gatewayAPI` in profiles/versions.yaml); the kind lists below are
//! compared with the upstream bundles by tests/tests/gateway_api_crds.rs.
//!
//! meshop never takes these CRDs over, downgrades them or deletes them (see
//! [`super::Ownership::KeepExisting`]): other controllers and the users' routes depend on them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps,
};

use super::common::cluster_meta;
use super::{ComponentId, Ownership, Rendered};
use crate::effective::Installation;

pub const GROUP: &str = "gateway.networking.k8s.io";
pub const BUNDLE_VERSION_ANNOTATION: &str = "gateway.networking.k8s.io/bundle-version";
pub const CHANNEL_ANNOTATION: &str = "gateway.networking.k8s.io/channel";
/// The Kubernetes API review that approved the group (the API server refuses a CRD of a
/// `*.k8s.io` group without `api-approved.kubernetes.io`); the value the releases carry.
const API_APPROVAL: &str = "https://github.com/kubernetes-sigs/gateway-api/pull/4530";

/// One kind of a release: kind, plural, short names, cluster-scoped, served versions (the storage
/// version first), whether it has a status subresource.
pub struct Kind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    pub cluster_scoped: bool,
    pub versions: &'static [&'static str],
    pub status: bool,
}

/// One Gateway API release's standard channel.
pub struct Bundle {
    pub version: &'static str,
    pub kinds: &'static [Kind],
}

const fn k(
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    versions: &'static [&'static str],
) -> Kind {
    Kind {
        kind,
        plural,
        short_names,
        cluster_scoped: false,
        versions,
        status: true,
    }
}

const GATEWAY_CLASS: Kind = Kind {
    cluster_scoped: true,
    ..k(
        "GatewayClass",
        "gatewayclasses",
        &["gc"],
        &["v1", "v1beta1"],
    )
};
const GATEWAY: Kind = k("Gateway", "gateways", &["gtw"], &["v1", "v1beta1"]);
const HTTP_ROUTE: Kind = k("HTTPRoute", "httproutes", &[], &["v1", "v1beta1"]);
const GRPC_ROUTE: Kind = k("GRPCRoute", "grpcroutes", &[], &["v1"]);
const BACKEND_TLS: Kind = k(
    "BackendTLSPolicy",
    "backendtlspolicies",
    &["btlspolicy"],
    &["v1"],
);
const LISTENER_SET: Kind = k("ListenerSet", "listenersets", &["lset"], &["v1"]);
/// Stored as v1beta1, also served as v1; no status.
const REFERENCE_GRANT: Kind = Kind {
    status: false,
    ..k(
        "ReferenceGrant",
        "referencegrants",
        &["refgrant"],
        &["v1beta1", "v1"],
    )
};
const TLS_ROUTE: Kind = k("TLSRoute", "tlsroutes", &[], &["v1"]);

/// The releases meshop knows, newest first.
pub const BUNDLES: &[Bundle] = &[
    Bundle {
        version: "v1.6.0",
        kinds: &[
            BACKEND_TLS,
            GATEWAY_CLASS,
            GATEWAY,
            GRPC_ROUTE,
            HTTP_ROUTE,
            LISTENER_SET,
            REFERENCE_GRANT,
            k("TCPRoute", "tcproutes", &[], &["v1"]),
            TLS_ROUTE,
            k("UDPRoute", "udproutes", &[], &["v1"]),
        ],
    },
    Bundle {
        version: "v1.5.1",
        kinds: &[
            BACKEND_TLS,
            GATEWAY_CLASS,
            GATEWAY,
            GRPC_ROUTE,
            HTTP_ROUTE,
            LISTENER_SET,
            REFERENCE_GRANT,
            TLS_ROUTE,
        ],
    },
];

/// The release an installation's Istio minor is built against, else the newest meshop knows.
pub fn bundle(install: &Installation) -> &'static Bundle {
    install
        .gateway_api
        .as_deref()
        .and_then(|v| BUNDLES.iter().find(|b| b.version == v))
        .unwrap_or(&BUNDLES[0])
}

fn open_object(description: &str) -> JSONSchemaProps {
    JSONSchemaProps {
        type_: Some("object".into()),
        description: Some(description.into()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    }
}

/// The CRD of one kind of `bundle`.
pub fn crd(install: &Installation, bundle: &Bundle, kind: &Kind) -> CustomResourceDefinition {
    let name = format!("{}.{GROUP}", kind.plural);
    let mut properties = vec![(
        "spec".to_string(),
        open_object(&format!(
            "The {} (Gateway API {}); not validated by this CRD.",
            kind.kind, bundle.version
        )),
    )];
    if kind.status {
        properties.push((
            "status".to_string(),
            open_object("Written by the implementation."),
        ));
    }
    let schema = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(properties.into_iter().collect()),
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
            subresources: kind.status.then(|| CustomResourceSubresources {
                status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                scale: None,
            }),
            ..Default::default()
        })
        .collect();
    let mut metadata = cluster_meta(install, ComponentId::Base, &name);
    metadata.annotations = Some(
        [
            ("api-approved.kubernetes.io", API_APPROVAL),
            (BUNDLE_VERSION_ANNOTATION, bundle.version),
            (CHANNEL_ANNOTATION, "standard"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    CustomResourceDefinition {
        metadata,
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: kind.kind.into(),
                plural: kind.plural.into(),
                singular: Some(kind.kind.to_lowercase()),
                list_kind: Some(format!("{}List", kind.kind)),
                short_names: (!kind.short_names.is_empty())
                    .then(|| kind.short_names.iter().map(|s| s.to_string()).collect()),
                categories: Some(vec!["gateway-api".into()]),
            },
            scope: if kind.cluster_scoped {
                "Cluster"
            } else {
                "Namespaced"
            }
            .into(),
            versions,
            conversion: None,
            preserve_unknown_fields: None,
        },
        status: None,
    }
}

/// The Gateway API CRDs an installation needs: every kind of its release when it runs ambient
/// mode (waypoints), none otherwise. Shared by every MeshInstall, created only where absent.
pub fn render(install: &Installation) -> Vec<Rendered> {
    if !(install.ambient.enabled && install.istiod.enabled) {
        return Vec::new();
    }
    let bundle = bundle(install);
    bundle
        .kinds
        .iter()
        .map(|kind| {
            let mut r = Rendered::new(ComponentId::Base, &crd(install, bundle, kind));
            r.shared = true;
            r.ownership = Ownership::KeepExisting;
            r
        })
        .collect()
}

/// The numeric parts of a bundle version (`v1.6.0` -> [1, 6, 0]); None when it is not one.
pub fn parse_bundle_version(v: &str) -> Option<Vec<u64>> {
    v.strip_prefix('v')
        .unwrap_or(v)
        .split('.')
        .map(|p| p.split(['-', '+']).next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::effective::test_install as install;

    #[test]
    fn only_ambient_installs_get_them_from_their_minors_release() {
        assert!(render(&install("profile: demo")).is_empty());
        let ambient = render(&install("profile: ambient\nversion: '1.31'"));
        assert_eq!(ambient.len(), 10);
        let gateways = ambient
            .iter()
            .find(|r| r.name() == "gateways.gateway.networking.k8s.io")
            .unwrap();
        assert_eq!(
            gateways.object.metadata.annotations.as_ref().unwrap()[BUNDLE_VERSION_ANNOTATION],
            "v1.6.0"
        );
        assert!(
            ambient
                .iter()
                .all(|r| r.shared && r.ownership == Ownership::KeepExisting)
        );
        let older = render(&install("profile: ambient\nversion: '1.30'"));
        assert_eq!(older.len(), 8, "v1.5.1 has no TCPRoute or UDPRoute");
    }

    #[test]
    fn bundle_versions_compare_numerically() {
        assert!(parse_bundle_version("v1.10.0") > parse_bundle_version("v1.9.3"));
        assert_eq!(parse_bundle_version("v1.6.0-rc1"), Some(vec![1, 6, 0]));
        assert_eq!(parse_bundle_version("latest"), None);
    }
}
