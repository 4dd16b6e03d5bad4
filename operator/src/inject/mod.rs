//! The sidecar injection engine: pure functions from a pod (or a workload document) and an
//! [`InjectionConfig`] to the injected pod and the JSON patch the admission webhook returns.
//!
//! Nothing here does I/O or talks to the API server: the webhook answers from its watched cache,
//! asks `select_revision` which revision a pod's labels choose, takes that revision's
//! [`InjectionConfig`] (built from the MeshInstall's effective spec) and calls `decide` then
//! [`inject`] and [`patch()`]; `meshop inject -f` goes through [`inject_yaml_stream`], which ends in
//! the same [`inject`]. The parts a gateway's proxy shares with the sidecar (uid, ports, image,
//! env, volumes) live in `crate::istio_proxy`. See `docs/injection.md` for the rules.

mod annotations;
mod containers;
mod custom;
mod gateway;
mod grpc;
mod identity;
mod native;
mod overrides;
mod patch;
mod patch_json;
mod probes;
mod quantity;
mod selection;
mod template;
mod workload;

#[cfg(test)]
pub(crate) mod hostile_tests;
#[cfg(test)]
mod testutil;

use k8s_openapi::api::core::v1::ResourceRequirements;

use crate::api::{ProxyLogLevel, SidecarMode, TrafficCapture};
use crate::effective::Installation;
use crate::istio_proxy;

pub use native::{KubeletVersion, Kubelets};
pub use patch::{patch, patch_owned};
pub use patch_json::patch_json;
pub(crate) use selection::{
    Decision, SkipReason, decide_selected, protected_namespaces, select_revision,
};
pub use template::{inject, inject_on};
pub use workload::inject_yaml_stream;

/// Names of the containers and volumes meshop adds; also recorded in `sidecar.istio.io/status`.
pub(crate) mod names {
    pub const PROXY: &str = crate::istio_proxy::CONTAINER;
    pub const INIT: &str = "istio-init";
    pub const VALIDATION: &str = "istio-validation";
}

/// Pod labels and annotations the engine reads or writes.
pub(crate) mod keys {
    pub const INJECT: &str = "sidecar.istio.io/inject";
    pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
    pub const STATUS: &str = "sidecar.istio.io/status";
    pub const REV: &str = "istio.io/rev";
    pub const NAMESPACE_INJECTION: &str = "istio-injection";
    pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
    pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
    pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
    pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
    pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
    pub const PROXY_IMAGE_TYPE: &str = "sidecar.istio.io/proxyImageType";
    pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
    pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
    pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
    pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
    pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
    pub const OVERRIDES: &str = "proxy.istio.io/overrides";
    pub const TEMPLATES: &str = "inject.istio.io/templates";
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
    pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
    pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
    pub const READINESS_INITIAL_DELAY: &str =
        "readiness.status.sidecar.istio.io/initialDelaySeconds";
    pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
    pub const READINESS_FAILURE_THRESHOLD: &str =
        "readiness.status.sidecar.istio.io/failureThreshold";
    pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
    pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
    pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
    pub const TLS_MODE: &str = "security.istio.io/tlsMode";
    pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
    pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
    pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
    pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";
    pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
    pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
    pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
}

/// Everything the engine needs to know about the mesh. The reconciler builds it from the
/// MeshInstall's effective spec (profile plus overrides).
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionConfig {
    /// Image registry and repository prefix, such as `docker.io/istio`.
    pub hub: String,
    /// Istio version; the proxy image is `<hub>/proxyv2:<version>`.
    pub version: String,
    /// Control-plane revision; empty means the default revision.
    pub revision: String,
    /// Namespace istiod runs in, such as `istio-system`.
    pub control_plane_namespace: String,
    /// SPIFFE trust domain, such as `cluster.local`.
    pub trust_domain: String,
    /// Native (init container with restartPolicy Always), classic, or auto (native where the
    /// nodes' kubelets are 1.33 or newer; see [`inject_on`]).
    pub sidecar_mode: SidecarMode,
    /// iptables init container or the Istio CNI node agent.
    pub traffic_capture: TrafficCapture,
    /// Default requests / limits of istio-proxy (pod annotations may replace them).
    pub proxy_resources: ResourceRequirements,
    /// Envoy worker threads; `None` leaves it to the proxy.
    pub concurrency: Option<i32>,
    /// Envoy's log level.
    pub log_level: ProxyLogLevel,
    /// Start application containers only once the proxy is ready.
    pub hold_application_until_proxy_starts: bool,
    /// The mesh config's `defaultConfig` (ProxyConfig), as istiod reads it: the start of every
    /// pod's `PROXY_CONFIG`, as Istio's injector starts from it. `concurrency` and
    /// `holdApplicationUntilProxyStarts` above are read from it already.
    pub default_config: serde_json::Map<String, serde_json::Value>,
    /// `ISTIO_META_CLUSTER_ID` (`global.clusterName`, else `Kubernetes`).
    pub cluster_id: String,
    /// `ISTIO_META_MESH_ID` (`global.meshID`, else the trust domain).
    pub mesh_id: String,
    /// `ISTIO_META_NETWORK` when set (`global.network`).
    pub network: Option<String>,
    /// The injected containers' `imagePullPolicy` when set (`global.imagePullPolicy`).
    pub image_pull_policy: Option<String>,
    /// Added to the pod's `imagePullSecrets` (`global.imagePullSecrets`).
    pub image_pull_secrets: Vec<String>,
    /// Custom injection templates (`spec.injection.templates`): name -> partial Pod (JSON),
    /// merged onto the injected pod after the built-in template ([`custom`]).
    pub templates: std::collections::BTreeMap<String, serde_json::Value>,
    /// The templates of a pod without `inject.istio.io/templates`; empty means `sidecar`.
    pub default_templates: Vec<String>,
}

impl InjectionConfig {
    /// `<hub>/proxyv2:<version>`.
    pub fn proxy_image(&self) -> String {
        istio_proxy::image(&self.hub, &self.version)
    }

    /// The istiod Service address proxies connect to for xDS and certificates.
    pub fn discovery_address(&self) -> String {
        istio_proxy::discovery_address(&self.revision, &self.control_plane_namespace)
    }
}

impl From<&Installation> for InjectionConfig {
    /// The settings a MeshInstall's effective spec gives its revision's sidecars.
    fn from(install: &Installation) -> Self {
        let inj = &install.injection;
        InjectionConfig {
            hub: install.hub.clone(),
            version: install.version.clone(),
            revision: install.revision.clone(),
            control_plane_namespace: install.namespace.clone(),
            trust_domain: install.mesh.trust_domain.clone(),
            sidecar_mode: inj.sidecar_mode,
            traffic_capture: inj.traffic_capture,
            proxy_resources: inj.proxy_resources.clone(),
            concurrency: inj.concurrency,
            log_level: inj.log_level,
            hold_application_until_proxy_starts: inj.hold_application_until_proxy_starts,
            default_config: install
                .mesh
                .config
                .get("defaultConfig")
                .and_then(serde_json::Value::as_object)
                .cloned()
                .unwrap_or_default(),
            cluster_id: install.global.cluster_id.clone(),
            mesh_id: install.mesh_id().to_string(),
            network: install.global.network.clone(),
            image_pull_policy: install.global.image_pull_policy.clone(),
            image_pull_secrets: install.global.image_pull_secrets.clone(),
            templates: inj.templates.clone(),
            default_templates: inj.default_templates.clone(),
        }
    }
}

impl Default for InjectionConfig {
    /// The default revision of meshop's default version in `istio-system`, native sidecars with
    /// iptables capture and no resource defaults. Handy for tests and the offline CLI.
    fn default() -> Self {
        InjectionConfig {
            hub: crate::api::DEFAULT_HUB.to_string(),
            version: crate::versions::default_version(),
            revision: String::new(),
            control_plane_namespace: crate::api::DEFAULT_NAMESPACE.to_string(),
            trust_domain: "cluster.local".to_string(),
            sidecar_mode: SidecarMode::Native,
            traffic_capture: TrafficCapture::Iptables,
            proxy_resources: ResourceRequirements::default(),
            concurrency: None,
            log_level: ProxyLogLevel::Warning,
            hold_application_until_proxy_starts: false,
            default_config: serde_json::Map::new(),
            cluster_id: crate::effective::DEFAULT_CLUSTER_ID.to_string(),
            mesh_id: "cluster.local".to_string(),
            network: None,
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            templates: Default::default(),
            default_templates: Vec::new(),
        }
    }
}

/// Why a pod or document could not be injected. Every variant carries a message fit for an
/// admission response or a CLI error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InjectError {
    /// A per-pod annotation has a value meshop cannot use.
    #[error("annotation {annotation}={value:?} is invalid: {reason}")]
    InvalidAnnotation {
        annotation: String,
        value: String,
        reason: String,
    },
    /// The pod has no spec or no containers.
    #[error("pod cannot be injected: {0}")]
    InvalidPod(String),
    /// The pod already has a container or volume with a name the sidecar needs.
    #[error(
        "pod already has a {kind} named {name:?}, which the sidecar needs; rename it or opt the pod out with sidecar.istio.io/inject=false"
    )]
    NameConflict { kind: &'static str, name: String },
    /// A document given to the offline injector is not a valid object.
    #[error("invalid document: {0}")]
    InvalidDocument(String),
}

/// How much of a refused annotation value an error repeats: enough to recognise it, while a
/// megabyte of junk does not become a megabyte of admission response.
const QUOTED_VALUE_CHARS: usize = 100;

/// `value` as an error message quotes it: escaped (no raw newline or NUL reaches a log line or
/// an admission response) and cut after [`QUOTED_VALUE_CHARS`] characters.
pub(crate) fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_VALUE_CHARS) {
        Some((cut, _)) => format!("{:?}... ({} bytes in all)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

impl InjectError {
    fn annotation(annotation: &str, value: &str, reason: impl Into<String>) -> Self {
        let value = match value.char_indices().nth(QUOTED_VALUE_CHARS) {
            Some((cut, _)) => format!("{}... ({} bytes in all)", &value[..cut], value.len()),
            None => value.to_string(),
        };
        InjectError::InvalidAnnotation {
            annotation: annotation.to_string(),
            value,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effective::Owner;

    #[test]
    fn injection_config_from_installation() {
        let spec: crate::api::MeshInstallSpec = serde_json::from_value(serde_json::json!({
            "profile": "minimal", "revision": "canary"
        }))
        .unwrap();
        let install = Installation::resolve(
            Owner {
                name: "mesh".into(),
                uid: None,
            },
            &spec,
        )
        .unwrap();
        let cfg = InjectionConfig::from(&install);
        assert_eq!(cfg.revision, "canary");
        assert_eq!(cfg.control_plane_namespace, install.namespace);
        assert_eq!(cfg.version, install.version);
        assert_eq!(cfg.trust_domain, install.mesh.trust_domain);
        assert_eq!(cfg.sidecar_mode, install.injection.sidecar_mode);
        assert_eq!(
            cfg.discovery_address(),
            "istiod-canary.istio-system.svc:15012"
        );
    }
}
