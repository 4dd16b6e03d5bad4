//! The effective installation: the layered spec (base <- profile <- overrides) with every value
//! resolved, so rendering never has to guess a default.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{
    self, Component, FailurePolicy, GatewayComponent, GatewayPort, MeshInstall, MeshInstallSpec,
    MigrationMode, MtlsMode, OutboundTrafficPolicy, Overlay, PortProtocol, Profile, ProxyLogLevel,
    ServiceType, SidecarMode, TrafficCapture, UpdateStrategy,
};
use serde_json::{Map, Value, json};

use crate::profiles::{self, ProfileError};
use crate::versions;

/// Why a MeshInstall cannot be turned into an installation. Each of these is the user's to fix,
/// so the reconciler reports it as Stalled instead of retrying.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Version(#[from] versions::VersionError),
    #[error(
        "injection.trafficCapture is cni but components.cni is not enabled; enable components.cni or use iptables"
    )]
    CniCaptureWithoutCni,
    #[error(
        "components.ztunnel is enabled but components.cni.ambient is not: ztunnel gets the pods it captures from the CNI node agent in ambient mode; enable components.cni with ambient.enabled: true, or switch ztunnel off"
    )]
    ZtunnelWithoutAmbientCni,
    #[error(
        "components.cni.ambient is enabled but components.ztunnel is not: the agent would send captured pods' traffic to a ztunnel that does not run; enable components.ztunnel, or switch ambient off"
    )]
    AmbientCniWithoutZtunnel,
    #[error(
        "ambient mode needs istiod: ztunnel gets its certificates and workloads from it; enable components.istiod"
    )]
    AmbientWithoutIstiod,
    #[error("revision \"default\" names the default revision: leave revision empty instead")]
    DefaultRevisionName,
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(
        "revision {0:?} with the release appended is longer than 50 characters; shorten spec.revision"
    )]
    RevisionTooLong(String),
    /// spec.meshConfig is not a mesh config istiod would accept as meant: every problem, each
    /// with its field path.
    #[error("{}", .0.join("; "))]
    MeshConfig(Vec<String>),
    #[error(
        "gateway {0:?} is listed twice, or takes the name of a default gateway (istio-ingressgateway, istio-egressgateway); gateway names must be unique"
    )]
    DuplicateGateway(String),
    #[error(
        "gateway {0:?} sets label {1:?}, which meshop sets itself (istio.io/rev, sidecar.istio.io/inject, service.istio.io/canonical-*, app.kubernetes.io/*)"
    )]
    ReservedGatewayLabel(String, String),
    /// A custom injection template (spec.injection.templates) meshop cannot use.
    #[error("injection template {name:?}: {reason}")]
    InvalidTemplate { name: String, reason: String },
    /// spec.injection.defaultTemplates names what meshop cannot inject.
    #[error("injection.defaultTemplates: {0}")]
    InvalidDefaultTemplates(String),
}

/// The custom templates of `spec.injection`, each checked by [`parse_template`], and its
/// `defaultTemplates` checked against them (the CRD's rules, for offline use).
fn injection_templates(injection: &api::Injection) -> Result<BTreeMap<String, Value>, SpecError> {
    let mut out = BTreeMap::new();
    let given = injection.templates.clone().unwrap_or_default();
    if given.len() > api::MAX_TEMPLATES {
        return Err(SpecError::InvalidTemplate {
            name: given
                .keys()
                .nth(api::MAX_TEMPLATES)
                .cloned()
                .unwrap_or_default(),
            reason: format!("at most {} templates", api::MAX_TEMPLATES),
        });
    }
    for (name, text) in &given {
        let parsed = parse_template(name, text).map_err(|reason| SpecError::InvalidTemplate {
            name: name.clone(),
            reason,
        })?;
        out.insert(name.clone(), parsed);
    }
    if let Some(defaults) = &injection.default_templates {
        for name in defaults {
            if !["sidecar", "gateway"].contains(&name.as_str()) && !out.contains_key(name) {
                return Err(SpecError::InvalidDefaultTemplates(format!(
                    "{name:?} is neither a built-in template meshop injects by default (sidecar, gateway) nor one of injection.templates"
                )));
            }
        }
        if !defaults.iter().any(|n| n == "sidecar" || n == "gateway") {
            return Err(SpecError::InvalidDefaultTemplates(
                "name a built-in template (sidecar or gateway), which custom templates are merged onto".into(),
            ));
        }
    }
    Ok(out)
}

/// A custom injection template as meshop applies it: `text` is YAML for a partial Pod (only
/// `metadata.labels`, `metadata.annotations` and `spec`), without Go template directives, named
/// as a pod's `inject.istio.io/templates` can name it and not like one of Istio's built-in
/// templates. Returns it as JSON (an empty template is `{}`), or why not.
pub fn parse_template(name: &str, text: &str) -> Result<Value, String> {
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        return Err("a template's name is 1 to 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit".into());
    }
    if api::ISTIO_TEMPLATES.contains(&name) {
        return Err(format!(
            "{name:?} is one of Istio's built-in templates, which cannot be redefined"
        ));
    }
    if text.chars().count() > api::MAX_TEMPLATE_CHARS {
        return Err(format!(
            "longer than {} characters",
            api::MAX_TEMPLATE_CHARS
        ));
    }
    if text.contains("{{") {
        return Err("contains {{: meshop does not run Go templates; write the partial Pod as it should be merged".into());
    }
    let value: Value = serde_yaml::from_str(text).map_err(|e| format!("is not YAML: {e}"))?;
    let value = match value {
        Value::Null => Value::Object(Map::new()),
        Value::Object(m) => Value::Object(m),
        _ => return Err("is not a partial Pod (a map with metadata and spec)".into()),
    };
    for (key, field) in value.as_object().into_iter().flatten() {
        match key.as_str() {
            "spec" => {}
            "metadata" => {
                let Some(meta) = field.as_object() else {
                    return Err("metadata is not a map".into());
                };
                if let Some(other) = meta.keys().find(|k| *k != "labels" && *k != "annotations") {
                    return Err(format!(
                        "sets metadata.{other}; a template sets only metadata.labels and metadata.annotations"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "sets {other}; a template is a partial Pod: metadata (labels, annotations) and spec"
                ));
            }
        }
    }
    // It must read as a Pod (each container and volume named, each field of its type) ...
    let mut as_pod = value.clone();
    if let Some(spec) = as_pod.as_object_mut().and_then(|m| {
        m.entry("spec")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
    }) {
        spec.entry("containers")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(as_pod)
        .map_err(|e| format!("is not a partial Pod: {e}"))?;
    // ... and merge as a strategic merge patch (no directive meshop's merge refuses).
    let mut pod = json!({"metadata": {}, "spec": {"containers": [{"name": "app"}]}});
    crate::strategic_merge::merge(&mut pod, &value, crate::strategic_merge::Schema::Pod)
        .map_err(|e| format!("does not merge onto a pod: {e}"))?;
    Ok(value)
}

/// Labels a gateway's `labels` may not set: meshop sets them on its pods, so a selector with
/// them would not match the pods (the CRD refuses them too).
fn reserved_label(key: &str) -> bool {
    matches!(
        key,
        "istio.io/rev"
            | "sidecar.istio.io/inject"
            | "service.istio.io/canonical-name"
            | "service.istio.io/canonical-revision"
    ) || key.starts_with("app.kubernetes.io/")
}

/// Which MeshInstall the objects belong to (for labels and owner references).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    /// Unknown when rendering offline (`meshop render`); then no owner references are written.
    pub uid: Option<String>,
}

/// Everything needed to render one installation.
#[derive(Clone, Debug, PartialEq)]
pub struct Installation {
    pub owner: Owner,
    pub profile: Profile,
    pub version: String,
    /// The Gateway API release of the version's minor (`gatewayAPI` in profiles/versions.yaml).
    pub gateway_api: Option<String>,
    pub hub: String,
    pub namespace: String,
    pub revision: String,
    pub update_strategy: UpdateStrategy,
    /// Revision-based upgrades (read only with [`UpdateStrategy::RevisionBased`]).
    pub upgrade: UpgradeSettings,
    pub istiod: Settings,
    /// The profile's default ingress gateway (istio-ingressgateway).
    pub ingress_gateway: Settings,
    /// The profile's default egress gateway (istio-egressgateway).
    pub egress_gateway: Settings,
    /// The gateways `components.ingressGateways` and `egressGateways` list, in that order,
    /// enabled or not ([`Installation::gateways`] gives the ones that run, defaults included).
    pub listed_gateways: Vec<Gateway>,
    pub cni: Settings,
    /// The CNI agent's ambient mode (`components.cni.ambient`); off unless the agent runs.
    pub ambient: Ambient,
    /// ambient mode's node proxy (`components.ztunnel`).
    pub ztunnel: Settings,
    pub prometheus: Settings,
    pub grafana: Settings,
    pub kiali: Settings,
    pub jaeger: Settings,
    pub mesh: Mesh,
    pub injection: Injection,
    pub global: Global,
}

/// Ingress or egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GatewayKind {
    Ingress,
    Egress,
}

impl GatewayKind {
    /// The name of the profile's default gateway of this kind (Istio's conventional names).
    pub fn default_name(self) -> &'static str {
        match self {
            GatewayKind::Ingress => "istio-ingressgateway",
            GatewayKind::Egress => "istio-egressgateway",
        }
    }

    /// The value of the `istio` label Istio's gateways of this kind carry.
    pub fn istio_label(self) -> &'static str {
        match self {
            GatewayKind::Ingress => "ingressgateway",
            GatewayKind::Egress => "egressgateway",
        }
    }
}

/// One gateway: the profile's default one or a listed one.
#[derive(Clone, Debug, PartialEq)]
pub struct Gateway {
    pub kind: GatewayKind,
    pub name: String,
    pub namespace: String,
    /// Pod and selector labels over `app=<name>, istio=<kind>`.
    pub labels: BTreeMap<String, String>,
    pub settings: Settings,
}

impl Gateway {
    /// The Deployment's selector (and the pods' labels that identify the gateway): app=<name>,
    /// istio=ingressgateway or egressgateway, then the gateway's own labels over them.
    pub fn selector(&self) -> BTreeMap<String, String> {
        let mut selector = BTreeMap::from([
            ("app".to_string(), self.name.clone()),
            ("istio".to_string(), self.kind.istio_label().to_string()),
        ]);
        selector.extend(self.labels.clone());
        selector
    }
}

/// Resolved `spec.global`: what is mesh-wide rather than a component's (pull policy and secrets,
/// priority class and pod metadata are resolved into each component's [`Settings`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    /// istiod's and the gateways' `--log_output_level`.
    pub log_level: String,
    /// `--log_as_json` for istiod and the gateways.
    pub log_as_json: bool,
    /// `global.meshID` ([`Installation::mesh_id`] falls back to the trust domain).
    pub mesh_id: Option<String>,
    pub network: Option<String>,
    /// Istio's CLUSTER_ID: `global.clusterName`, else `Kubernetes`.
    pub cluster_id: String,
    /// For injected istio-proxy and istio-init containers.
    pub image_pull_policy: Option<String>,
    /// Added to injected pods.
    pub image_pull_secrets: Vec<String>,
    /// `global.networkPolicy.enabled`: a NetworkPolicy for istiod, each gateway and the CNI agent.
    pub network_policy: bool,
}

/// The log level Istio's charts give istiod and gateways.
pub const DEFAULT_LOG_LEVEL: &str = "default:info";
/// Istio's cluster id when none is set.
pub const DEFAULT_CLUSTER_ID: &str = "Kubernetes";

/// Which of `spec.global`'s workload settings reach a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GlobalScope {
    /// istiod and the gateways: every one (Istio's control-plane and gateway pods).
    ControlPlane,
    /// The CNI agent: image pull policy and secrets only (it keeps its node-critical priority).
    /// The addons, which do not run Istio's images, take none of them.
    Images,
}

/// Resolved settings of one component.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Settings {
    pub enabled: bool,
    pub replicas: i32,
    pub resources: ResourceRequirements,
    /// `Some` when a HorizontalPodAutoscaler is created.
    pub autoscale: Option<Autoscale>,
    /// `Some` when a PodDisruptionBudget is created.
    pub pdb: Option<Pdb>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    pub env: Vec<EnvVar>,
    /// Gateways only.
    pub service: Option<Service>,
    /// Patches on the component's rendered objects, in order (`render::overlays`).
    pub overlays: Vec<Overlay>,
    /// The component's, else `global.priorityClassName` (control plane and gateways).
    pub priority_class_name: Option<String>,
    /// `global.podAnnotations` with the component's over them.
    pub pod_annotations: BTreeMap<String, String>,
    /// `global.podLabels` with the component's over them.
    pub pod_labels: BTreeMap<String, String>,
    /// The component's, else `global.imagePullPolicy`.
    pub image_pull_policy: Option<String>,
    /// `global.imagePullSecrets`.
    pub image_pull_secrets: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Autoscale {
    pub min: i32,
    pub max: i32,
    pub target_cpu: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Pdb {
    MinAvailable(IntOrString),
    MaxUnavailable(IntOrString),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub type_: ServiceType,
    pub annotations: BTreeMap<String, String>,
    pub ports: Vec<GatewayPort>,
}

/// An installation of MeshInstall `m` from a spec in YAML, for unit tests.
#[cfg(test)]
pub(crate) fn test_install(yaml: &str) -> Installation {
    let spec: MeshInstallSpec = serde_yaml::from_str(yaml).expect("a test spec parses");
    Installation::resolve(
        Owner {
            name: "m".into(),
            uid: None,
        },
        &spec,
    )
    .expect("a test spec resolves")
}

/// Resolved `components.cni.ambient`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Ambient {
    /// The mesh runs in ambient mode: the CNI agent captures enrolled pods for ztunnel, istiod
    /// serves ztunnel and deploys waypoints.
    pub enabled: bool,
    pub dns_capture: bool,
    pub ipv6: bool,
    pub reconcile_on_startup: bool,
}

/// Resolved `spec.upgrade`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpgradeSettings {
    /// Every tag, `default` first, then the spec's in its order.
    pub tags: Vec<String>,
    pub mode: MigrationMode,
    pub max_concurrent: usize,
    pub grace_period: std::time::Duration,
}

/// How long an unused old revision is kept when the spec does not say: long enough to roll back
/// without recreating it after a typical canary soak, short enough not to pile up.
pub const DEFAULT_RETIREMENT_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq)]
pub struct Mesh {
    pub mtls: MtlsMode,
    pub access_logging: bool,
    pub trace_sampling: f64,
    pub trust_domain: String,
    pub outbound: OutboundTrafficPolicy,
    /// The mesh config istiod reads (ConfigMap `istio[-<revision>]`, key `mesh`): meshop's own
    /// settings with `spec.meshConfig` merged on top as istiod merges mesh config
    /// ([`crate::api::meshconfig::merge`]). The fields above are read back from it.
    pub config: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub enabled: bool,
    pub sidecar_mode: SidecarMode,
    pub traffic_capture: TrafficCapture,
    pub failure_policy: FailurePolicy,
    pub proxy_resources: ResourceRequirements,
    pub concurrency: Option<i32>,
    pub log_level: ProxyLogLevel,
    pub hold_application_until_proxy_starts: bool,
    /// Custom injection templates (`spec.injection.templates`), each a partial Pod as JSON,
    /// checked by [`parse_template`].
    pub templates: BTreeMap<String, Value>,
    /// The templates of a pod that names none (`spec.injection.defaultTemplates`); empty means
    /// `sidecar`.
    pub default_templates: Vec<String>,
}

impl Installation {
    /// Resolves a MeshInstall from the cluster.
    pub fn from_mesh(mi: &MeshInstall) -> Result<Installation, SpecError> {
        let owner = Owner {
            name: mi.metadata.name.clone().unwrap_or_default(),
            uid: mi.metadata.uid.clone(),
        };
        Installation::resolve(owner, &mi.spec)
    }

    /// Resolves a spec: layers the profile under it and fills in every value.
    pub fn resolve(owner: Owner, spec: &MeshInstallSpec) -> Result<Installation, SpecError> {
        Installation::resolve_at(owner, spec, spec.version.as_deref())
    }

    /// Resolves a spec as if its `version` were `version`: how a revision-based install renders
    /// its older revisions (each at its own release, everything else from the spec).
    pub fn resolve_at(
        owner: Owner,
        spec: &MeshInstallSpec,
        version: Option<&str>,
    ) -> Result<Installation, SpecError> {
        let resolved = versions::catalog().resolve(version)?;
        let version = resolved.version.to_string();
        // The CRD refuses it too; this covers offline rendering.
        if spec.revision == crate::revision::DEFAULT {
            return Err(SpecError::DefaultRevisionName);
        }
        let revision = match spec.update_strategy {
            UpdateStrategy::InPlace => spec.revision.clone(),
            UpdateStrategy::RevisionBased => {
                let name = crate::revision::versioned(&spec.revision, &version);
                // Room for istiod-<revision>-<namespace> style names and webhook names.
                if name.len() > 50 {
                    return Err(SpecError::RevisionTooLong(name));
                }
                name
            }
        };
        let upgrade_spec = spec.upgrade.clone().unwrap_or_default();
        let workloads = upgrade_spec.workloads.clone().unwrap_or_default();
        let upgrade = UpgradeSettings {
            tags: std::iter::once(crate::revision::DEFAULT.to_string())
                .chain(upgrade_spec.tags.iter().cloned())
                .collect(),
            mode: workloads.mode.unwrap_or_default(),
            max_concurrent: workloads.max_concurrent.unwrap_or(1).max(1) as usize,
            grace_period: upgrade_spec
                .retirement_grace_period_seconds
                .map_or(DEFAULT_RETIREMENT_GRACE, |s| {
                    std::time::Duration::from_secs(s.max(0) as u64)
                }),
        };
        let layered = profiles::layered(spec)?;
        let components = layered.components.clone().unwrap_or_default();
        let addons = components.addons.clone().unwrap_or_default();
        let mesh = layered.mesh_config.clone().unwrap_or_default();
        let injection = layered.injection.clone().unwrap_or_default();
        let proxy = injection.proxy.clone().unwrap_or_default();
        let global = layered.global.clone().unwrap_or_default();
        let trust_domain = mesh
            .trust_domain
            .clone()
            .unwrap_or_else(|| "cluster.local".into());
        let cp = |s: Settings| with_global(s, &global, GlobalScope::ControlPlane);
        let listed_gateways = listed_gateways(spec, &layered.namespace, &global)?;
        let mut install = Installation {
            owner,
            profile: spec.profile,
            version,
            gateway_api: resolved.minor.gateway_api.clone(),
            hub: layered.hub.clone(),
            namespace: layered.namespace.clone(),
            revision,
            update_strategy: layered.update_strategy,
            upgrade,
            istiod: cp(settings(components.istiod.as_ref(), None)),
            ingress_gateway: cp(gateway(components.ingress_gateway.as_ref())),
            egress_gateway: cp(gateway(components.egress_gateway.as_ref())),
            listed_gateways,
            cni: with_global(
                settings(components.cni.as_ref().map(|c| c.common()).as_ref(), None),
                &global,
                GlobalScope::Images,
            ),
            ambient: ambient(components.cni.as_ref()),
            ztunnel: with_global(
                settings(components.ztunnel.as_ref(), None),
                &global,
                GlobalScope::Images,
            ),
            prometheus: settings(addons.prometheus.as_ref(), None),
            grafana: settings(addons.grafana.as_ref(), None),
            kiali: settings(addons.kiali.as_ref(), None),
            jaeger: settings(addons.jaeger.as_ref(), None),
            mesh: Mesh {
                mtls: mesh.mtls_mode.unwrap_or(MtlsMode::PERMISSIVE),
                access_logging: mesh.access_logging.unwrap_or(false),
                trace_sampling: mesh.trace_sampling.unwrap_or(1.0),
                trust_domain,
                outbound: mesh
                    .outbound_traffic_policy
                    .as_ref()
                    .and_then(|o| o.mode())
                    .unwrap_or(OutboundTrafficPolicy::ALLOW_ANY),
                config: Map::new(),
            },
            injection: Injection {
                enabled: injection.enabled.unwrap_or(true),
                sidecar_mode: injection
                    .sidecar_mode
                    .unwrap_or_else(|| default_sidecar_mode(resolved.minor)),
                traffic_capture: injection
                    .traffic_capture
                    .unwrap_or(TrafficCapture::Iptables),
                failure_policy: injection.failure_policy.unwrap_or(FailurePolicy::Fail),
                proxy_resources: proxy.resources.unwrap_or_default(),
                concurrency: proxy.concurrency,
                log_level: proxy.log_level.unwrap_or(ProxyLogLevel::Warning),
                hold_application_until_proxy_starts: proxy
                    .hold_application_until_proxy_starts
                    .unwrap_or(false),
                templates: injection_templates(&injection)?,
                default_templates: injection.default_templates.clone().unwrap_or_default(),
            },
            global: Global {
                log_level: global
                    .log_level
                    .clone()
                    .unwrap_or_else(|| DEFAULT_LOG_LEVEL.into()),
                log_as_json: global.log_as_json.unwrap_or(false),
                mesh_id: global.mesh_id.clone(),
                network: global.network.clone(),
                cluster_id: global
                    .cluster_name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CLUSTER_ID.into()),
                image_pull_policy: global.image_pull_policy.map(|p| p.as_str().to_string()),
                image_pull_secrets: global.image_pull_secrets.clone().unwrap_or_default(),
                network_policy: global
                    .network_policy
                    .as_ref()
                    .and_then(|p| p.enabled)
                    .unwrap_or(false),
            },
        };
        if install.injection.traffic_capture == TrafficCapture::Cni && !install.cni.enabled {
            return Err(SpecError::CniCaptureWithoutCni);
        }
        match (install.ztunnel.enabled, install.ambient.enabled) {
            (true, false) => return Err(SpecError::ZtunnelWithoutAmbientCni),
            (false, true) => return Err(SpecError::AmbientCniWithoutZtunnel),
            (true, true) if !install.istiod.enabled => {
                return Err(SpecError::AmbientWithoutIstiod);
            }
            _ => {}
        }
        install.merge_mesh_config(spec)?;
        Ok(install)
    }

    /// Builds [`Mesh::config`]: meshop's mesh settings from the layered spec (profile shorthands
    /// included), then the user's own `spec.meshConfig` merged on top as istiod merges mesh
    /// config, then the user's own shorthands; checks the user's fields as istiod reads them
    /// and the result as istiod validates it; and reads the typed settings back.
    ///
    /// Precedence: a setting has a meshop shorthand and Istio's own field (accessLogging /
    /// accessLogFile, traceSampling / defaultConfig.tracing.sampling, injection.proxy.concurrency /
    /// defaultConfig.concurrency, injection.proxy.holdApplicationUntilProxyStarts /
    /// defaultConfig.holdApplicationUntilProxyStarts): the user's spec may set one of the two
    /// (both is refused); whichever the user sets wins over the profile's.
    fn merge_mesh_config(&mut self, spec: &MeshInstallSpec) -> Result<(), SpecError> {
        let own = spec.mesh_config.clone().unwrap_or_default();
        let own_proxy = spec
            .injection
            .as_ref()
            .and_then(|i| i.proxy.clone())
            .unwrap_or_default();
        let mut errors = Vec::new();

        // The user's fields, in Istio's shape, checked against Istio's MeshConfig.
        let mut istio = own.istio.clone();
        if let Some(file) = &own.access_log_file {
            istio.insert("accessLogFile".into(), json!(file));
        }
        if let Some(td) = &own.trust_domain {
            istio.insert("trustDomain".into(), json!(td));
        }
        if let Some(o) = &own.outbound_traffic_policy {
            istio.insert("outboundTrafficPolicy".into(), o.to_istio());
        }
        errors.extend(crate::api::meshconfig::check_fields(
            "spec.meshConfig",
            &Value::Object(istio.clone()),
        ));
        let pc = istio.get("defaultConfig");
        let set_in_pc = |field: &str| pc.and_then(|p| p.get(field)).is_some_and(|v| !v.is_null());
        let mut both =
            |shorthand: &str, has_shorthand: bool, istio_field: &str, has_istio: bool| {
                if has_shorthand && has_istio {
                    errors.push(format!(
                    "{shorthand} and spec.meshConfig.{istio_field} are the same setting: set one"
                ));
                }
            };
        both(
            "spec.meshConfig.traceSampling",
            own.trace_sampling.is_some(),
            "defaultConfig.tracing.sampling",
            pc.and_then(|p| p.pointer("/tracing/sampling"))
                .is_some_and(|v| !v.is_null()),
        );
        both(
            "spec.injection.proxy.concurrency",
            own_proxy.concurrency.is_some(),
            "defaultConfig.concurrency",
            set_in_pc("concurrency"),
        );
        both(
            "spec.injection.proxy.holdApplicationUntilProxyStarts",
            own_proxy.hold_application_until_proxy_starts.is_some(),
            "defaultConfig.holdApplicationUntilProxyStarts",
            set_in_pc("holdApplicationUntilProxyStarts"),
        );
        if own.access_logging.is_some() && own.access_log_file.is_some() {
            errors.push("spec.meshConfig.accessLogging and spec.meshConfig.accessLogFile are the same setting: set one".into());
        }
        if !errors.is_empty() {
            return Err(SpecError::MeshConfig(errors));
        }

        // meshop's own settings (the layered spec: profile shorthands), in Istio's shape.
        // The sampling rate of traceSampling goes to istiod as PILOT_TRACE_SAMPLING, as Istio's
        // chart passes values.pilot.traceSampling; defaultConfig.tracing is the user's alone
        // (it reaches every proxy's PROXY_CONFIG, and a sampling set there overrides istiod's).
        // holdApplicationUntilProxyStarts only when on: off is Istio's default, and what the
        // mesh says reaches every pod's PROXY_CONFIG.
        let mut proxy = json!({ "discoveryAddress": self.discovery_address() });
        if self.injection.hold_application_until_proxy_starts {
            proxy["holdApplicationUntilProxyStarts"] = json!(true);
        }
        if let Some(c) = self.injection.concurrency {
            proxy["concurrency"] = json!(c);
        }
        // Istio's chart writes global.meshID as the proxies' default meshId.
        if let Some(id) = &self.global.mesh_id {
            proxy["meshId"] = json!(id);
        }
        let Value::Object(mut config) = json!({
            "accessLogFile": if self.mesh.access_logging { "/dev/stdout" } else { "" },
            "defaultConfig": proxy,
            // Without a default metrics provider (and no Telemetry resource, which meshop does
            // not render) sidecars emit none of Istio's standard metrics such as
            // istio_requests_total.
            "defaultProviders": { "metrics": ["prometheus"] },
            "enablePrometheusMerge": true,
            "rootNamespace": self.namespace,
            "trustDomain": self.mesh.trust_domain,
            "outboundTrafficPolicy": { "mode": self.mesh.outbound },
        }) else {
            unreachable!("a JSON object literal")
        };
        crate::api::meshconfig::merge(&mut config, &istio);
        // The user's own shorthand last: it says the same as Istio's field, which the user did
        // not set (the layered spec may hold the profile's shorthand instead).
        if let Some(on) = own.access_logging {
            config.insert(
                "accessLogFile".into(),
                json!(if on { "/dev/stdout" } else { "" }),
            );
        }
        let merged = Value::Object(config);
        let errors = crate::api::meshconfig::check_semantics("spec.meshConfig", &merged);
        if !errors.is_empty() {
            return Err(SpecError::MeshConfig(errors));
        }
        let Value::Object(config) = merged else {
            unreachable!("built as an object")
        };

        // The typed settings, read back from what istiod will read.
        let mesh = &mut self.mesh;
        mesh.access_logging = config
            .get("accessLogFile")
            .and_then(Value::as_str)
            .is_some_and(|f| !f.is_empty());
        if let Some(s) = config
            .get("defaultConfig")
            .and_then(|p| p.pointer("/tracing/sampling"))
            .and_then(Value::as_f64)
        {
            mesh.trace_sampling = s;
        }
        if let Some(td) = config.get("trustDomain").and_then(Value::as_str) {
            mesh.trust_domain = td.to_string();
        }
        if let Some(mode) = config
            .get("outboundTrafficPolicy")
            .and_then(|o| o.get("mode"))
            .and_then(|m| serde_json::from_value(m.clone()).ok())
        {
            mesh.outbound = mode;
        }
        let pc = config.get("defaultConfig");
        if let Some(hold) = pc
            .and_then(|p| p.get("holdApplicationUntilProxyStarts"))
            .and_then(Value::as_bool)
        {
            self.injection.hold_application_until_proxy_starts = hold;
        }
        if let Some(c) = pc.and_then(|p| p.get("concurrency")) {
            self.injection.concurrency = c
                .as_i64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| i32::try_from(n).ok());
        }
        mesh.config = config;
        Ok(())
    }

    /// The suffix Istio appends to revisioned names: `""` or `-<revision>`.
    pub fn revision_suffix(&self) -> String {
        crate::revision::suffix(&self.revision)
    }

    /// The revision as Istio labels it: `default` for the default revision.
    pub fn revision_label(&self) -> &str {
        crate::revision::name(&self.revision)
    }

    /// The name of istiod's Deployment and Service: `istiod` or `istiod-<revision>`.
    pub fn istiod_name(&self) -> String {
        crate::revision::istiod(&self.revision)
    }

    /// The address proxies reach istiod's xDS and CA on.
    pub fn discovery_address(&self) -> String {
        crate::istio_proxy::discovery_address(&self.revision, &self.namespace)
    }

    /// The mesh id proxies report: `global.meshID`, else the trust domain (as Istio's templates
    /// default it).
    pub fn mesh_id(&self) -> &str {
        self.global
            .mesh_id
            .as_deref()
            .unwrap_or(&self.mesh.trust_domain)
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/{}:{}", self.hub, name, self.version)
    }

    /// Every gateway that runs: the profile's default ingress and egress gateways where enabled,
    /// then the listed ones that are enabled.
    pub fn gateways(&self) -> Vec<Gateway> {
        let defaults = [
            (GatewayKind::Ingress, &self.ingress_gateway),
            (GatewayKind::Egress, &self.egress_gateway),
        ]
        .into_iter()
        .filter(|(_, s)| s.enabled)
        .map(|(kind, settings)| Gateway {
            kind,
            name: kind.default_name().to_string(),
            namespace: self.namespace.clone(),
            labels: BTreeMap::new(),
            settings: settings.clone(),
        });
        defaults
            .chain(
                self.listed_gateways
                    .iter()
                    .filter(|g| g.settings.enabled)
                    .cloned(),
            )
            .collect()
    }

    /// The namespaces meshop installs into: the control plane's, then every other one a running
    /// gateway names, each once.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.namespace.clone()];
        for g in self.gateways() {
            if !out.contains(&g.namespace) {
                out.push(g.namespace);
            }
        }
        out
    }
}

/// The listed gateways, each on top of the profile's own default gateway of its kind (without
/// that one's affinity, which selects the default gateway's pods, and enabled unless it says
/// otherwise), then `spec.global`.
fn listed_gateways(
    spec: &MeshInstallSpec,
    namespace: &str,
    global: &api::Global,
) -> Result<Vec<Gateway>, SpecError> {
    let Some(components) = spec.components.as_ref() else {
        return Ok(Vec::new());
    };
    let profile = profiles::profile_spec(spec.profile)?
        .components
        .unwrap_or_default();
    let mut seen: std::collections::BTreeSet<String> = api::DEFAULT_GATEWAY_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut out = Vec::new();
    for (kind, list, base) in [
        (
            GatewayKind::Ingress,
            &components.ingress_gateways,
            &profile.ingress_gateway,
        ),
        (
            GatewayKind::Egress,
            &components.egress_gateways,
            &profile.egress_gateway,
        ),
    ] {
        for g in list.iter().flatten() {
            if !seen.insert(g.name.clone()) {
                return Err(SpecError::DuplicateGateway(g.name.clone()));
            }
            if let Some(key) = g
                .labels
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .find(|k| reserved_label(k))
            {
                return Err(SpecError::ReservedGatewayLabel(g.name.clone(), key.clone()));
            }
            let mut base = base.clone().unwrap_or_default();
            base.affinity = None;
            base.enabled = Some(true);
            let mut merged = serde_json::to_value(&base).unwrap_or_default();
            profiles::merge(
                &mut merged,
                &serde_json::to_value(g.overrides()).unwrap_or_default(),
            );
            // Both sides are GatewayComponents, so their merge is one too.
            let merged: GatewayComponent = serde_json::from_value(merged).unwrap_or_default();
            out.push(Gateway {
                kind,
                name: g.name.clone(),
                namespace: g.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                labels: g.labels.clone().unwrap_or_default(),
                settings: with_global(gateway(Some(&merged)), global, GlobalScope::ControlPlane),
            });
        }
    }
    Ok(out)
}

/// `spec.global`'s workload settings under a component's own, as far as they reach it.
fn with_global(mut s: Settings, global: &api::Global, scope: GlobalScope) -> Settings {
    if s.image_pull_policy.is_none() {
        s.image_pull_policy = global.image_pull_policy.map(|p| p.as_str().to_string());
    }
    s.image_pull_secrets = global.image_pull_secrets.clone().unwrap_or_default();
    if scope == GlobalScope::ControlPlane {
        if s.priority_class_name.is_none() {
            s.priority_class_name = global.priority_class_name.clone();
        }
        let mut annotations = global.pod_annotations.clone().unwrap_or_default();
        annotations.extend(std::mem::take(&mut s.pod_annotations));
        s.pod_annotations = annotations;
        let mut labels = global.pod_labels.clone().unwrap_or_default();
        labels.extend(std::mem::take(&mut s.pod_labels));
        s.pod_labels = labels;
    }
    s
}

/// Istio's own default for a version: `auto` (ENABLE_NATIVE_SIDECARS=auto, native where every
/// kubelet is 1.33+) where the catalog says the version has it (1.27 on), else classic.
fn default_sidecar_mode(minor: &versions::Minor) -> SidecarMode {
    if minor.native_sidecars_by_default {
        SidecarMode::Auto
    } else {
        SidecarMode::Classic
    }
}

/// The CNI agent's ambient mode: on only where the agent itself runs.
fn ambient(cni: Option<&api::CniComponent>) -> Ambient {
    let agent = cni.and_then(|c| c.enabled).unwrap_or(false);
    let a = cni.and_then(|c| c.ambient.clone()).unwrap_or_default();
    Ambient {
        enabled: agent && a.enabled.unwrap_or(false),
        dns_capture: a.dns_capture.unwrap_or(true),
        ipv6: a.ipv6.unwrap_or(true),
        reconcile_on_startup: a.reconcile_iptables_on_startup.unwrap_or(true),
    }
}

fn settings(c: Option<&Component>, service: Option<Service>) -> Settings {
    let Some(c) = c else {
        return Settings::default();
    };
    let autoscale = c
        .autoscale
        .as_ref()
        .filter(|a| a.enabled.unwrap_or(true))
        .map(|a| {
            let min = a.min_replicas.unwrap_or(1);
            Autoscale {
                min,
                max: a.max_replicas.unwrap_or(min.max(5)).max(min),
                target_cpu: a.target_cpu_utilization_percentage.unwrap_or(80),
            }
        });
    let pdb = c
        .pod_disruption_budget
        .as_ref()
        .filter(|p| p.enabled.unwrap_or(true))
        .map(|p| match (&p.min_available, &p.max_unavailable) {
            (_, Some(max)) => Pdb::MaxUnavailable(max.clone()),
            (Some(min), None) => Pdb::MinAvailable(min.clone()),
            (None, None) => Pdb::MinAvailable(IntOrString::Int(1)),
        });
    Settings {
        enabled: c.enabled.unwrap_or(false),
        replicas: c.replicas.unwrap_or(1),
        resources: c.resources.clone().unwrap_or_default(),
        autoscale,
        pdb,
        node_selector: c.node_selector.clone(),
        tolerations: c.tolerations.clone(),
        affinity: c.affinity.clone(),
        env: c.env.clone().unwrap_or_default(),
        service,
        overlays: c.overlays.clone().unwrap_or_default(),
        priority_class_name: c.priority_class_name.clone(),
        pod_annotations: c.pod_annotations.clone().unwrap_or_default(),
        pod_labels: c.pod_labels.clone().unwrap_or_default(),
        image_pull_policy: c.image_pull_policy.map(|p| p.as_str().to_string()),
        image_pull_secrets: Vec::new(),
    }
}

fn gateway(g: Option<&GatewayComponent>) -> Settings {
    let service = g.and_then(|g| g.service.as_ref()).map(|s| Service {
        type_: s.type_.unwrap_or(ServiceType::ClusterIP),
        annotations: s.annotations.clone().unwrap_or_default(),
        ports: s.ports.clone().unwrap_or_default(),
    });
    settings(g.map(|g| g.common()).as_ref(), service)
}

impl GatewayPort {
    /// The container port traffic goes to.
    pub fn container_port(&self) -> i32 {
        self.target_port.unwrap_or(self.port)
    }

    pub fn protocol_name(&self) -> &'static str {
        match self.protocol.unwrap_or(PortProtocol::TCP) {
            PortProtocol::TCP => "TCP",
            PortProtocol::UDP => "UDP",
            PortProtocol::SCTP => "SCTP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str) -> Result<Installation, SpecError> {
        let spec: MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
        Installation::resolve(
            Owner {
                name: "t".into(),
                uid: None,
            },
            &spec,
        )
    }

    #[test]
    fn injection_templates_are_parsed_and_bad_ones_named() {
        let ok = resolve(
            "profile: minimal\ninjection:\n  defaultTemplates: [sidecar, creds]\n  templates:\n    creds: |\n      metadata:\n        labels: {a: b}\n      spec:\n        volumes:\n        - name: creds\n          secret: {secretName: s}\n    empty: \"\"\n",
        )
        .unwrap();
        assert_eq!(ok.injection.default_templates, ["sidecar", "creds"]);
        assert_eq!(
            ok.injection.templates["creds"],
            json!({"metadata": {"labels": {"a": "b"}}, "spec": {"volumes": [{"name": "creds", "secret": {"secretName": "s"}}]}})
        );
        assert_eq!(ok.injection.templates["empty"], json!({}));
        for (name, text, says) in [
            (
                "go",
                "spec:\n  containers:\n  - name: {{ .Name }}\n",
                "meshop does not run Go templates",
            ),
            ("sidecar", "spec: {}\n", "one of Istio's built-in templates"),
            (
                "waypoint",
                "spec: {}\n",
                "one of Istio's built-in templates",
            ),
            ("a,b", "spec: {}\n", "a template's name"),
            ("meta", "metadata:\n  name: x\n", "sets metadata.name"),
            ("status", "status: {}\n", "sets status"),
            ("list", "- a\n", "is not a partial Pod"),
            (
                "unnamed",
                "spec:\n  containers:\n  - image: x\n",
                "has no \"name\"",
            ),
            ("typed", "spec:\n  volumes: 3\n", "is not a partial Pod"),
            (
                "retain",
                "spec:\n  $retainKeys: [volumes]\n",
                "does not merge onto a pod",
            ),
            ("yaml", "spec: [\n", "is not YAML"),
        ] {
            let mut spec: MeshInstallSpec = serde_yaml::from_str("profile: minimal").unwrap();
            spec.injection = Some(api::Injection {
                templates: Some(BTreeMap::from([(name.to_string(), text.to_string())])),
                ..Default::default()
            });
            let err = Installation::resolve(
                Owner {
                    name: "t".into(),
                    uid: None,
                },
                &spec,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(&format!("injection template {name:?}")) && err.contains(says),
                "{name}: {err}"
            );
        }
        for (defaults, says) in [
            ("[sidecar, nope]", "\"nope\" is neither"),
            ("[creds]", "name a built-in template"),
            ("[grpc-agent]", "\"grpc-agent\" is neither"),
        ] {
            let err = resolve(&format!(
                "profile: minimal\ninjection:\n  defaultTemplates: {defaults}\n  templates: {{creds: \"spec: {{}}\"}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("injection.defaultTemplates") && err.contains(says),
                "{defaults}: {err}"
            );
        }
    }

    #[test]
    fn istios_mesh_config_is_carried_merged_onto_meshops() {
        let i = resolve(
            "profile: production\nmeshConfig:\n  extensionProviders: [{name: otel, opentelemetry: {service: otel.o.svc.cluster.local, port: 4317}}]\n  defaultProviders: {tracing: [otel]}\n  discoverySelectors: [{matchLabels: {team: a}}]\n  defaultConfig: {proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}, concurrency: 3}\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        )
        .unwrap();
        let c = &i.mesh.config;
        assert_eq!(c["extensionProviders"][0]["name"], "otel");
        assert_eq!(
            c["defaultProviders"],
            json!({"metrics": ["prometheus"], "tracing": ["otel"]})
        );
        assert_eq!(
            c["discoverySelectors"],
            json!([{"matchLabels": {"team": "a"}}])
        );
        assert_eq!(
            c["defaultConfig"]["proxyMetadata"],
            json!({"ISTIO_META_DNS_CAPTURE": "true"})
        );
        // meshop's own defaultConfig fields stay, the user's are merged in field by field.
        assert_eq!(
            c["defaultConfig"]["discoveryAddress"],
            "istiod.istio-system.svc:15012"
        );
        assert_eq!(
            c["defaultConfig"]["holdApplicationUntilProxyStarts"], true,
            "production's"
        );
        assert_eq!(
            i.injection.concurrency,
            Some(3),
            "defaultConfig wins over the profile"
        );
        assert_eq!(i.mesh.outbound, OutboundTrafficPolicy::REGISTRY_ONLY);
        assert_eq!(c["outboundTrafficPolicy"], json!({"mode": "REGISTRY_ONLY"}));
    }

    #[test]
    fn the_old_string_forms_and_shorthands_still_work() {
        assert_eq!(
            resolve("profile: minimal\nmeshConfig: {outboundTrafficPolicy: ALLOW_SOME}\n")
                .unwrap_err()
                .to_string(),
            "spec.meshConfig.outboundTrafficPolicy.mode: \"ALLOW_SOME\" is not one of REGISTRY_ONLY, ALLOW_ANY, ALLOW_ANY_DYNAMIC_DNS"
        );
        let i = resolve("profile: minimal\nmeshConfig: {outboundTrafficPolicy: REGISTRY_ONLY, accessLogging: true, traceSampling: 5}\n").unwrap();
        assert_eq!(
            i.mesh.config["outboundTrafficPolicy"],
            json!({"mode": "REGISTRY_ONLY"})
        );
        assert_eq!(i.mesh.config["accessLogFile"], "/dev/stdout");
        assert_eq!(i.mesh.trace_sampling, 5.0);
        assert_eq!(i.mesh.config["defaultConfig"].get("tracing"), None);
        assert!(i.mesh.access_logging);
        // Istio's own field, over the profile's shorthand (demo logs to stdout).
        let i = resolve("profile: demo\nmeshConfig: {accessLogFile: /var/log/access.log, defaultConfig: {tracing: {sampling: 2}}}\n").unwrap();
        assert_eq!(i.mesh.config["accessLogFile"], "/var/log/access.log");
        assert_eq!(i.mesh.trace_sampling, 2.0);
    }

    #[test]
    fn a_bad_mesh_config_names_each_field_and_why() {
        let err = |yaml: &str| resolve(yaml).unwrap_err().to_string();
        assert_eq!(
            err(
                "profile: minimal\nmeshConfig: {defaultConfig: {drainDuration: -1s}, enablePrometheusMerg: true}\n"
            ),
            "spec.meshConfig.enablePrometheusMerg: unknown field (not in Istio's MeshConfig)"
        );
        assert_eq!(
            err("profile: minimal\nmeshConfig: {defaultConfig: {drainDuration: -1s}}\n"),
            "spec.meshConfig.defaultConfig.drainDuration: invalid drain duration: duration must be greater than 1ms"
        );
        assert_eq!(
            err(
                "profile: minimal\nmeshConfig: {extensionProviders: [{name: a, envoyFileAccessLog: {}}, {name: a, prometheus: {}}]}\n"
            ),
            "spec.meshConfig.extensionProviders[1]: duplicate extension provider name a"
        );
        assert_eq!(
            err(
                "profile: minimal\nmeshConfig: {traceSampling: 1, defaultConfig: {tracing: {sampling: 2}, concurrency: 4}}\ninjection: {proxy: {concurrency: 2}}\n"
            ),
            "spec.meshConfig.traceSampling and spec.meshConfig.defaultConfig.tracing.sampling are the same setting: set one; spec.injection.proxy.concurrency and spec.meshConfig.defaultConfig.concurrency are the same setting: set one"
        );
    }

    #[test]
    fn production_is_highly_available() {
        let i = resolve("profile: production").unwrap();
        assert!(i.istiod.enabled && i.ingress_gateway.enabled && !i.egress_gateway.enabled);
        assert_eq!(
            i.istiod.autoscale,
            Some(Autoscale {
                min: 2,
                max: 5,
                target_cpu: 80
            })
        );
        assert!(i.istiod.pdb.is_some() && i.istiod.affinity.is_some());
        assert_eq!(i.mesh.mtls, MtlsMode::STRICT);
        assert!(!i.prometheus.enabled);
    }

    #[test]
    fn autoscale_can_be_switched_off() {
        let i = resolve("profile: production\ncomponents:\n  istiod:\n    replicas: 3\n    autoscale: {enabled: false}\n").unwrap();
        assert_eq!(i.istiod.autoscale, None);
        assert_eq!(i.istiod.replicas, 3);
    }

    #[test]
    fn unknown_and_end_of_life_versions_are_spec_errors() {
        let err = resolve("profile: demo\nversion: 1.2.3").unwrap_err();
        assert!(
            err.to_string()
                .contains("1.2.3 is not a version meshop knows"),
            "{err}"
        );
        let err = resolve("profile: demo\nversion: 1.28.2").unwrap_err();
        assert!(err.to_string().contains("end of life"), "{err}");
    }

    #[test]
    fn aliases_resolve_and_never_touch_the_revision() {
        let install = resolve("profile: demo\nversion: \"1.30\"\nrevision: canary").unwrap();
        assert_eq!(install.version, "1.30.5");
        assert_eq!(install.revision, "canary");
        let newest = resolve("profile: demo").unwrap();
        assert_eq!(newest.version, crate::versions::default_version());
        assert_eq!(newest.revision, "");
    }

    #[test]
    fn the_sidecar_mode_defaults_to_what_the_version_defaults_to() {
        let minor = |native| crate::versions::Minor {
            minor: "1.26".into(),
            released: None,
            support: crate::versions::Support::Supported,
            end_of_life: None,
            kubernetes: None,
            native_sidecars_by_default: native,
            images_only_on_docker_hub: false,
            gateway_api: None,
            patches: Vec::new(),
        };
        assert_eq!(default_sidecar_mode(&minor(true)), SidecarMode::Auto);
        assert_eq!(default_sidecar_mode(&minor(false)), SidecarMode::Classic);
        // Every supported version defaults to native sidecars, so every profile that does not
        // pin a mode gets auto; production and performance pin native.
        assert_eq!(
            resolve("profile: demo").unwrap().injection.sidecar_mode,
            SidecarMode::Auto
        );
        assert_eq!(
            resolve("profile: production")
                .unwrap()
                .injection
                .sidecar_mode,
            SidecarMode::Native
        );
        let pinned = resolve("profile: demo\ninjection: {sidecarMode: classic}").unwrap();
        assert_eq!(pinned.injection.sidecar_mode, SidecarMode::Classic);
    }

    #[test]
    fn revision_based_revisions_are_named_after_the_resolved_release() {
        let rb = "profile: minimal\nupdateStrategy: RevisionBased\n";
        // An alias and the release it means name the same revision: stable across alias moves.
        let alias = resolve(&format!("{rb}version: \"1.31\"")).unwrap();
        let exact = resolve(&format!("{rb}version: 1.31.1")).unwrap();
        assert_eq!(alias.revision, "1-31-1");
        assert_eq!(exact.revision, alias.revision);
        assert_eq!(alias.istiod_name(), "istiod-1-31-1");
        assert_eq!(
            resolve(&format!("{rb}version: \"1.30\"")).unwrap().revision,
            "1-30-5"
        );
        let prefixed = resolve(&format!("{rb}version: 1.30.5\nrevision: blue")).unwrap();
        assert_eq!(prefixed.revision, "blue-1-30-5");
        // resolve_at: an older revision of the same spec, at its own release.
        let spec: MeshInstallSpec = serde_yaml::from_str(&format!("{rb}version: 1.31.1")).unwrap();
        let owner = Owner {
            name: "t".into(),
            uid: None,
        };
        let older = Installation::resolve_at(owner, &spec, Some("1.30.5")).unwrap();
        assert_eq!(
            (older.revision.as_str(), older.version.as_str()),
            ("1-30-5", "1.30.5")
        );
        // In place, the revision stays what the spec says.
        assert_eq!(
            resolve("profile: minimal\nversion: \"1.31\"")
                .unwrap()
                .revision,
            ""
        );
        let long = format!("{rb}revision: {}", "r".repeat(50));
        assert!(matches!(resolve(&long), Err(SpecError::RevisionTooLong(_))));
    }

    #[test]
    fn upgrade_settings_default_to_manual_one_at_a_time_and_an_hour() {
        let i = resolve("profile: minimal\nupdateStrategy: RevisionBased").unwrap();
        assert_eq!(i.upgrade.tags, ["default"]);
        assert_eq!(i.upgrade.mode, MigrationMode::Manual);
        assert_eq!(i.upgrade.max_concurrent, 1);
        assert_eq!(i.upgrade.grace_period, DEFAULT_RETIREMENT_GRACE);
        let set = resolve("profile: minimal\nupdateStrategy: RevisionBased\nupgrade: {tags: [prod], workloads: {mode: Rollout, maxConcurrent: 3}, retirementGracePeriodSeconds: 30}").unwrap();
        assert_eq!(set.upgrade.tags, ["default", "prod"]);
        assert_eq!(set.upgrade.mode, MigrationMode::Rollout);
        assert_eq!(set.upgrade.max_concurrent, 3);
        assert_eq!(set.upgrade.grace_period, std::time::Duration::from_secs(30));
    }

    #[test]
    fn the_default_revision_is_not_named() {
        let err = resolve("profile: minimal\nrevision: default\n").unwrap_err();
        assert!(matches!(err, SpecError::DefaultRevisionName), "{err}");
    }

    #[test]
    fn cni_capture_needs_cni() {
        assert!(matches!(
            resolve("profile: minimal\ninjection: {trafficCapture: cni}"),
            Err(SpecError::CniCaptureWithoutCni)
        ));
        assert!(resolve("profile: minimal\ninjection: {trafficCapture: cni}\ncomponents: {cni: {enabled: true}}").is_ok());
    }

    #[test]
    fn revision_names() {
        let i = resolve("profile: minimal\nrevision: canary").unwrap();
        assert_eq!(i.istiod_name(), "istiod-canary");
        assert_eq!(
            i.discovery_address(),
            "istiod-canary.istio-system.svc:15012"
        );
        assert_eq!(
            resolve("profile: minimal").unwrap().revision_label(),
            "default"
        );
    }
}
