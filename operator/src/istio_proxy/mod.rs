//! The `istio-proxy` container as gateways and injected sidecars share it: pilot-agent and Envoy
//! from the `proxyv2` image, running as uid 1337, fetching xDS and certificates from istiod.
//! Gateways ([`crate::render`]) run it in router mode, the injector ([`crate::inject`]) as a
//! sidecar; what both must agree on is defined here once. Pure: no I/O.
//!
//! The env helpers return groups in the order both containers list them, so each container keeps
//! its own order (and its rendered output) while the values cannot drift apart.

mod volumes;

use k8s_openapi::api::core::v1::{ContainerPort, EnvVar};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Map, Value};

use crate::k8s::{env, field_env};

pub(crate) use volumes::{crl_mount, crl_volume, empty_dir, proxy_mounts, sidecar_volumes};

/// The container's name.
pub(crate) const CONTAINER: &str = "istio-proxy";
/// The uid and gid the proxy runs as; iptables exempts its traffic from capture.
pub(crate) const UID: i64 = 1337;
/// Envoy's readiness endpoint on [`ports::HEALTH`].
pub(crate) const READY_PATH: &str = "/healthz/ready";
/// Where Envoy serves its Prometheus metrics (and the agent the merged ones).
pub(crate) const PROMETHEUS_PATH: &str = "/stats/prometheus";

/// Well-known proxy ports.
pub(crate) mod ports {
    /// Envoy's outbound capture port.
    pub(crate) const OUTBOUND_CAPTURE: u16 = 15001;
    /// Envoy's inbound capture port.
    pub(crate) const INBOUND_CAPTURE: u16 = 15006;
    /// pilot-agent's status port: app probes and merged Prometheus metrics.
    pub(crate) const AGENT_STATUS: u16 = 15020;
    /// Envoy's health port ([`super::READY_PATH`]).
    pub(crate) const HEALTH: u16 = 15021;
    /// Envoy's own Prometheus endpoint.
    pub(crate) const ENVOY_PROMETHEUS: u16 = 15090;
    /// The istiod xDS / CA port.
    pub(crate) const ISTIOD_XDS: u16 = 15012;
}

/// What the agent runs Envoy as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Next to an application, capturing its traffic.
    Sidecar,
    /// A gateway: Envoy on its own, routing what its Service receives.
    Router,
}

/// `<hub>/proxyv2:<version>`.
pub(crate) fn image(hub: &str, version: &str) -> String {
    format!("{}/proxyv2:{version}", hub.trim_end_matches('/'))
}

/// The istiod Service address proxies reach for xDS and certificates: `istiod` or
/// `istiod-<revision>` in the control-plane namespace.
pub(crate) fn discovery_address(revision: &str, control_plane_namespace: &str) -> String {
    format!(
        "{}.{control_plane_namespace}.svc:{}",
        crate::revision::istiod(revision),
        ports::ISTIOD_XDS
    )
}

/// The arguments every proxy starts with; callers add log levels and the like.
pub(crate) fn agent_args(mode: Mode) -> Vec<String> {
    let mode = match mode {
        Mode::Sidecar => "sidecar",
        Mode::Router => "router",
    };
    [
        "proxy",
        mode,
        "--domain",
        "$(POD_NAMESPACE).svc.cluster.local",
    ]
    .map(String::from)
    .into()
}

/// Envoy's Prometheus endpoint as a named container port.
pub(crate) fn envoy_prometheus_port() -> ContainerPort {
    ContainerPort {
        name: Some("http-envoy-prom".into()),
        container_port: ports::ENVOY_PROMETHEUS.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The start of `PROXY_CONFIG`: where istiod is. Callers merge their own fields on top.
pub(crate) fn proxy_config(discovery_address: String) -> Map<String, Value> {
    Map::from_iter([("discoveryAddress".into(), Value::String(discovery_address))])
}

/// The fields of pilot-agent's built-in ProxyConfig that Istio's injector leaves out of
/// `PROXY_CONFIG` when a pod's value equals them (the agent starts from the same defaults, and the
/// pod spec stays small), with those values. Read from Istio's injector and mesh defaults
/// (release-1.31); the list is Istio's, not complete, and nothing breaks if a default is written.
const AGENT_DEFAULTS: &[(&str, &str)] = &[
    ("configPath", r#""./etc/istio/proxy""#),
    ("binaryPath", r#""/usr/local/bin/envoy""#),
    ("controlPlaneAuthPolicy", r#""MUTUAL_TLS""#),
    ("serviceCluster", r#""istio-proxy""#),
    ("drainDuration", r#""45s""#),
    ("terminationDrainDuration", r#""5s""#),
    ("parentShutdownDuration", r#""60s""#),
    ("discoveryAddress", r#""istiod.istio-system.svc:15012""#),
    (
        "tracing",
        r#"{"zipkin":{"address":"zipkin.istio-system:9411"}}"#,
    ),
    ("proxyAdminPort", "15000"),
    ("statNameLength", "189"),
    ("statusPort", "15020"),
    ("concurrency", "2"),
    ("proxyMetadata", "{}"),
];

/// `PROXY_CONFIG` as Istio's injector writes it: the proxy's settings without the fields whose
/// value is the agent's own default ([`AGENT_DEFAULTS`]). A revision's or another namespace's
/// istiod is not the default address, so it stays.
pub(crate) fn without_agent_defaults(config: &mut Map<String, Value>) {
    // Parsed once: this runs for every pod the webhook injects.
    static DEFAULTS: std::sync::LazyLock<Vec<(&str, Value)>> = std::sync::LazyLock::new(|| {
        AGENT_DEFAULTS
            .iter()
            .map(|(f, v)| (*f, serde_json::from_str(v).unwrap_or(Value::Null)))
            .collect()
    });
    if config.is_empty() {
        return;
    }
    for (field, default) in DEFAULTS.iter() {
        if config.get(*field) == Some(default) {
            config.remove(*field);
        }
    }
}

/// An env var from the container's own resources with `divisor: "1"` written out, as Istio's
/// templates write it since 1.28: whole CPUs (rounded up) for `limits.cpu`, bytes for memory.
pub(crate) fn resource_env(name: &str, resource: &str) -> EnvVar {
    let mut e = crate::k8s::resource_env(name, resource);
    if let Some(r) = e
        .value_from
        .as_mut()
        .and_then(|v| v.resource_field_ref.as_mut())
    {
        r.divisor = Some(Quantity("1".into()));
    }
    e
}

/// `PROXY_CONFIG` as the agent reads it (JSON).
pub(crate) fn proxy_config_env(config: &Map<String, Value>) -> EnvVar {
    // A map of JSON values always encodes.
    env(
        "PROXY_CONFIG",
        serde_json::to_string(config).unwrap_or_default(),
    )
}

/// Certificates come from istiod, at `discovery_address`.
pub(crate) fn ca_env(discovery_address: String) -> Vec<EnvVar> {
    vec![
        env("PILOT_CERT_PROVIDER", "istiod"),
        env("CA_ADDR", discovery_address),
    ]
}

/// The pod's name, namespace and IP from the downward API.
pub(crate) fn pod_env() -> Vec<EnvVar> {
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
    ]
}

pub(crate) fn service_account_env() -> EnvVar {
    field_env("SERVICE_ACCOUNT", "spec.serviceAccountName")
}

pub(crate) fn host_ip_env() -> EnvVar {
    field_env("HOST_IP", "status.hostIP")
}

/// The cluster, node and (when set) network the proxy reports in its metadata, as Istio's
/// templates write them from `global.multiCluster.clusterName` and `global.network`.
pub(crate) fn cluster_env(cluster_id: &str, network: Option<&str>) -> Vec<EnvVar> {
    let mut out = vec![
        env("ISTIO_META_CLUSTER_ID", cluster_id),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
    ];
    if let Some(network) = network {
        out.push(env("ISTIO_META_NETWORK", network));
    }
    out
}

/// The workload the proxy belongs to: its name and [`owner_uri`].
pub(crate) fn workload_env(name: &str, owner_uri: String) -> Vec<EnvVar> {
    vec![
        env("ISTIO_META_WORKLOAD_NAME", name),
        env("ISTIO_META_OWNER", owner_uri),
    ]
}

/// The mesh id (`global.meshID`, which defaults to the trust domain) and the SPIFFE trust domain.
pub(crate) fn trust_domain_env(mesh_id: &str, trust_domain: &str) -> Vec<EnvVar> {
    vec![
        env("ISTIO_META_MESH_ID", mesh_id),
        env("TRUST_DOMAIN", trust_domain),
    ]
}

/// The `ISTIO_META_OWNER` URI of a workload, such as
/// `kubernetes://apis/apps/v1/namespaces/ns/deployments/x`.
pub(crate) fn owner_uri(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    format!(
        "kubernetes://apis/{api_version}/namespaces/{namespace}/{}s/{name}",
        kind.to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_and_discovery_address() {
        assert_eq!(
            image("docker.io/istio", "1.31.1"),
            "docker.io/istio/proxyv2:1.31.1"
        );
        assert_eq!(
            image("registry.local:5000/mesh/", "1.30.5"),
            "registry.local:5000/mesh/proxyv2:1.30.5"
        );
        assert_eq!(
            discovery_address("", "istio-system"),
            "istiod.istio-system.svc:15012"
        );
        assert_eq!(
            discovery_address("canary", "mesh"),
            "istiod-canary.mesh.svc:15012"
        );
    }

    #[test]
    fn args_and_proxy_config() {
        assert_eq!(agent_args(Mode::Router)[..2], ["proxy", "router"]);
        assert_eq!(
            agent_args(Mode::Sidecar),
            [
                "proxy",
                "sidecar",
                "--domain",
                "$(POD_NAMESPACE).svc.cluster.local"
            ]
        );
        let e = proxy_config_env(&proxy_config("istiod.x.svc:15012".into()));
        assert_eq!(
            e.value.as_deref(),
            Some(r#"{"discoveryAddress":"istiod.x.svc:15012"}"#)
        );
    }

    #[test]
    fn proxy_config_leaves_out_the_agents_defaults() {
        let mut c = proxy_config(discovery_address("", "istio-system"));
        c.insert("concurrency".into(), 2.into());
        c.insert("holdApplicationUntilProxyStarts".into(), true.into());
        c.insert("proxyMetadata".into(), serde_json::json!({}));
        without_agent_defaults(&mut c);
        assert_eq!(
            Value::Object(c),
            serde_json::json!({"holdApplicationUntilProxyStarts": true})
        );
        // Another istiod, another concurrency: the agent must be told.
        let mut c = proxy_config(discovery_address("canary", "istio-system"));
        c.insert("concurrency".into(), 4.into());
        without_agent_defaults(&mut c);
        assert_eq!(
            Value::Object(c),
            serde_json::json!({"discoveryAddress": "istiod-canary.istio-system.svc:15012", "concurrency": 4})
        );
    }

    #[test]
    fn resource_env_writes_the_divisor() {
        let e = resource_env("GOMEMLIMIT", "limits.memory");
        let r = e.value_from.unwrap().resource_field_ref.unwrap();
        assert_eq!(
            (r.resource.as_str(), r.divisor),
            ("limits.memory", Some(Quantity("1".into())))
        );
    }

    #[test]
    fn shared_env_names_are_unique() {
        let all: Vec<EnvVar> = [
            ca_env("a".into()),
            pod_env(),
            vec![service_account_env(), host_ip_env()],
            cluster_env("Kubernetes", Some("net1")),
            workload_env("w", owner_uri("apps/v1", "Deployment", "ns", "w")),
            trust_domain_env("mesh1", "cluster.local"),
        ]
        .concat();
        let names: std::collections::BTreeSet<_> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert_eq!(
            all.iter()
                .find(|e| e.name == "ISTIO_META_OWNER")
                .and_then(|e| e.value.as_deref()),
            Some("kubernetes://apis/apps/v1/namespaces/ns/deployments/w")
        );
    }
}
