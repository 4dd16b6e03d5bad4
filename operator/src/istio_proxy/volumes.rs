//! The volumes the proxy needs, in a sidecar and in a gateway alike: sockets and certificates
//! shared with the agent, Envoy's scratch space, pod metadata for the agent, the istio-ca
//! service-account token and the mesh's root CA.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    ObjectFieldSelector, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};

use crate::k8s::mount;

/// Lifetime of the istio-ca token; the kubelet refreshes it well before it expires.
const TOKEN_SECONDS: i64 = 43200;

/// An `emptyDir` volume (`medium: Memory` for the proxy's sockets and certificates).
pub(crate) fn empty_dir(name: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field_file(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod volumes added by injection, in the order they are appended.
pub(crate) fn sidecar_volumes() -> Vec<Volume> {
    vec![
        empty_dir("workload-socket", None),
        empty_dir("credential-socket", None),
        empty_dir("workload-certs", None),
        // Envoy's admin socket and bootstrap; memory-backed since the root filesystem is read-only.
        empty_dir("istio-envoy", Some("Memory")),
        empty_dir("istio-data", None),
        Volume {
            name: "istio-podinfo".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    field_file("labels", "metadata.labels"),
                    field_file("annotations", "metadata.annotations"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "istio-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some("istio-ca".into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "istio-token".into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "istiod-ca-cert".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "istio-ca-root-cert".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

/// The certificate revocation list istiod publishes for a plugged-in CA, as Istio 1.30 and 1.31
/// mount it into sidecars (not gateways). Optional: without the ConfigMap the pod starts as usual.
pub(crate) fn crl_volume() -> Volume {
    Volume {
        name: CRL_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "istio-ca-crl".into(),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Where a sidecar mounts [`crl_volume`]: beside the root certificate.
pub(crate) fn crl_mount() -> VolumeMount {
    mount(CRL_VOLUME, "/var/run/secrets/istio/crl", false)
}

const CRL_VOLUME: &str = "istio-ca-crl";

/// Where istio-proxy mounts them.
pub(crate) fn proxy_mounts() -> Vec<VolumeMount> {
    vec![
        mount(
            "workload-socket",
            "/var/run/secrets/workload-spiffe-uds",
            false,
        ),
        mount(
            "credential-socket",
            "/var/run/secrets/credential-uds",
            false,
        ),
        mount(
            "workload-certs",
            "/var/run/secrets/workload-spiffe-credentials",
            false,
        ),
        mount("istiod-ca-cert", "/var/run/secrets/istio", false),
        mount("istio-data", "/var/lib/istio/data", false),
        mount("istio-envoy", "/etc/istio/proxy", false),
        mount("istio-token", "/var/run/secrets/tokens", false),
        mount("istio-podinfo", "/etc/istio/pod", false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mount_has_a_volume_and_names_are_unique() {
        let vols = sidecar_volumes();
        let names: std::collections::BTreeSet<_> = vols.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names.len(), vols.len());
        for m in proxy_mounts() {
            assert!(names.contains(m.name.as_str()), "{}", m.name);
        }
    }

    #[test]
    fn token_and_ca_volumes() {
        let vols = sidecar_volumes();
        let token = vols.iter().find(|v| v.name == "istio-token").unwrap();
        let sat = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(
            (sat.audience.as_deref(), sat.expiration_seconds),
            (Some("istio-ca"), Some(43200))
        );
        let ca = vols.iter().find(|v| v.name == "istiod-ca-cert").unwrap();
        assert_eq!(ca.config_map.as_ref().unwrap().name, "istio-ca-root-cert");
        let crl = crl_volume();
        let cm = crl.config_map.as_ref().unwrap();
        assert_eq!(
            (crl.name.as_str(), cm.name.as_str(), cm.optional),
            ("istio-ca-crl", "istio-ca-crl", Some(true))
        );
        assert_eq!(crl_mount().name, crl.name);
        assert!(
            !vols.iter().any(|v| v.name == crl.name),
            "gateways do not mount the CRL"
        );
        let envoy = vols.iter().find(|v| v.name == "istio-envoy").unwrap();
        assert_eq!(
            envoy.empty_dir.as_ref().unwrap().medium.as_deref(),
            Some("Memory")
        );
    }
}
