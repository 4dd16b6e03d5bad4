//! `MeshInstall.spec`: what the platform team asks for.
//!
//! Every optional field is an override on top of the profile (see `docs/profiles.md`); a field left
//! out means "whatever the profile says". Validation that a schema can express lives here, as
//! OpenAPI constraints and CEL rules, so `kubectl apply` refuses a bad MeshInstall at once.

// The printcolumn(...) entries of #[kube] repeat `type_ = "string"` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::MeshInstallStatus;

/// The namespace the control plane runs in when `spec.namespace` is not set.
pub const DEFAULT_NAMESPACE: &str = "istio-system";
/// The image registry used when `spec.hub` is not set.
pub const DEFAULT_HUB: &str = "docker.io/istio";

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 label or the empty string (for `revision`, where empty means "the default revision").
pub const OPTIONAL_DNS_LABEL_PATTERN: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$";
/// An Istio release `MAJOR.MINOR.PATCH`, or a minor alias `MAJOR.MINOR` (its newest known patch).
pub const VERSION_PATTERN: &str = r"^[0-9]+\.[0-9]+(\.[0-9]+)?$";
/// An image registry/repository prefix such as `docker.io/istio` or `registry.local:5000/mesh`.
pub const HUB_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*$";
/// A DNS-1123 subdomain, used for the SPIFFE trust domain.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Installs an Istio service mesh from one install profile plus overrides.
///
/// meshop renders the profile, applies exactly the components it needs, keeps them converged, and
/// reports kstatus-compatible status (`observedGeneration`, conditions Ready / Reconciling / Stalled).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "meshop.dev",
    version = "v1alpha1",
    kind = "MeshInstall",
    plural = "meshinstalls",
    singular = "meshinstall",
    shortname = "mi",
    category = "meshop",
    status = "MeshInstallStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "MeshInstall installs and runs an Istio service mesh from one install profile plus overrides.",
    printcolumn(
        name = "Profile",
        type_ = "string",
        json_path = ".spec.profile",
        description = "The install profile"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "The Istio version running"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".spec.revision",
        description = "The control-plane revision",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every component is ready"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the mesh is or is not ready",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshInstallSpec {
    /// The install profile: demo (everything, small, for trying Istio out), production (HA istiod and
    /// ingress gateway, STRICT mTLS), performance (production with more resources and tuned proxies),
    /// minimal (istiod only) or empty (nothing but what spec.components enables).
    pub profile: Profile,

    /// The Istio version to run: a release such as 1.31.1, or a minor such as "1.31" for its newest
    /// patch meshop knows (quote it in YAML). Left out, the newest supported release. Images are
    /// <hub>/pilot:<version> and <hub>/proxyv2:<version>. An end-of-life or unknown version is
    /// reported in status (Stalled) and nothing is changed; `meshop version` lists what is supported.
    /// status.version shows the release in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = VERSION_PATTERN), length(max = 64))]
    pub version: Option<String>,

    /// The image registry and repository prefix for Istio images, such as docker.io/istio.
    #[serde(default = "default_hub")]
    #[schemars(regex(pattern = HUB_PATTERN), length(min = 1, max = 253))]
    pub hub: String,

    /// The namespace the control plane and gateways run in. Immutable: to move a mesh, create a new
    /// MeshInstall.
    #[serde(default = "default_namespace")]
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("namespace is immutable; create a new MeshInstall to move the mesh"))]
    pub namespace: String,

    /// The control-plane revision, a DNS label such as 1-28-2 or canary. Empty means the default
    /// revision: istiod is named istiod and namespaces select it with istio-injection=enabled. With a
    /// revision, istiod is named istiod-<revision> and namespaces select it with istio.io/rev=<revision>.
    /// "default" is refused: it is what Istio calls the default revision, so write "" instead.
    #[serde(default)]
    #[schemars(regex(pattern = OPTIONAL_DNS_LABEL_PATTERN), length(max = 63))]
    #[x_kube(validation = Rule::new("self != 'default'").message("revision \"default\" names the default revision: leave revision empty instead"))]
    pub revision: String,

    /// How a version change is rolled out: InPlace updates the running control plane; RevisionBased
    /// runs the new version beside the old one under its own revision (canary upgrade), named
    /// after the resolved release (1-31-1, or <revision>-1-31-1 when revision is set), moves the
    /// tags to it once it is ready, and retires the old revision once no pod uses it.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// Revision-based upgrades: tags, workload migration and retirement of old revisions. Only
    /// read with updateStrategy RevisionBased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<Upgrade>,

    /// Per-component overrides on top of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Components>,

    /// Mesh-wide settings on top of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_config: Option<MeshConfig>,

    /// Sidecar injection settings on top of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<Injection>,

    /// Mesh-wide workload settings (what Istio users set in values.global): image pull policy
    /// and secrets, log level and format, priority class, pod annotations and labels, and the
    /// multi-cluster identity. A component's own setting of the same name wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Global>,
}

// serde's field defaults (and through them the CRD schema's `default:`) and `Default` below use
// these same functions, so a spec built in code means what the same spec read from YAML means.
fn default_hub() -> String {
    DEFAULT_HUB.to_string()
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// The spec of a MeshInstall that sets nothing but `profile` (demo here), exactly as serde reads
/// `{profile: demo}`. Every field is listed so a new one must choose its default here too.
impl Default for MeshInstallSpec {
    fn default() -> Self {
        MeshInstallSpec {
            profile: Profile::default(),
            version: None,
            hub: default_hub(),
            namespace: default_namespace(),
            revision: String::new(),
            update_strategy: UpdateStrategy::default(),
            upgrade: None,
            components: None,
            mesh_config: None,
            injection: None,
            global: None,
        }
    }
}

/// The install profiles meshop ships (see docs/profiles.md).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
    Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// istiod, both gateways and the Prometheus, Grafana, Kiali and Jaeger addons, sized small.
    #[default]
    Demo,
    /// istiod and the ingress gateway, highly available, STRICT mTLS.
    Production,
    /// production with more resources and tuned proxies; tracing and access logs off.
    Performance,
    /// istiod only.
    Minimal,
    /// nothing but what spec.components switches on.
    Empty,
    /// Ambient mode, no sidecars: istiod, the CNI node agent in ambient mode and ztunnel on every
    /// node; workloads join with the label istio.io/dataplane-mode=ambient.
    Ambient,
}

impl Profile {
    /// Every profile, in the order the docs list them.
    pub const ALL: [Profile; 6] = [
        Profile::Demo,
        Profile::Production,
        Profile::Performance,
        Profile::Minimal,
        Profile::Empty,
        Profile::Ambient,
    ];

    /// The name used in `spec.profile` and in `profiles/<name>.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Demo => "demo",
            Profile::Production => "production",
            Profile::Performance => "performance",
            Profile::Minimal => "minimal",
            Profile::Empty => "empty",
            Profile::Ambient => "ambient",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown profile {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How a change of version is rolled out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum UpdateStrategy {
    /// Update the running control plane in place (rolling update of istiod and gateways).
    #[default]
    InPlace,
    /// Run the new version beside the old one under its own revision; tags move namespaces to it
    /// once it is ready, and workloads follow when restarted (see spec.upgrade.workloads).
    RevisionBased,
}

/// Settings of revision-based upgrades (docs/upgrades.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upgrade {
    /// Tags besides "default" (which namespaces labelled istio-injection=enabled follow). Every
    /// tag points at the newest ready revision: namespaces labelled istio.io/rev=<tag> follow it
    /// there without relabelling. istio.io/rev=<revision> pins a namespace to one revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 40)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("!('default' in self)").message("the default tag always exists; list only other tags"))]
    pub tags: Vec<Tag>,

    /// How workloads move to the new revision's proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<WorkloadMigration>,

    /// Seconds an old revision is kept after the last pod using it is gone, before it is
    /// deleted (a window for rollback). An old revision is never deleted while a pod uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2592000))]
    pub retirement_grace_period_seconds: Option<i64>,
}

/// A tag name: a DNS label (not "default", which always exists).
pub type Tag = String;

/// Workload migration to the new revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadMigration {
    /// Manual only reports the workloads still on an old revision (restart them yourself, with
    /// kubectl rollout restart); Rollout restarts them, a bounded number at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MigrationMode>,
    /// Rollout mode: how many Deployments, StatefulSets and DaemonSets restart at once. meshop
    /// waits for each restart to complete before starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent: Option<i32>,
}

/// How workloads move to a new revision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum MigrationMode {
    /// Report the workloads still on an old revision; restart nothing.
    #[default]
    Manual,
    /// Restart them (kubectl.kubernetes.io/restartedAt), a bounded number at a time, stopping
    /// (Stalled, naming the workload) when one fails to become ready.
    Rollout,
}

/// The most gateways of one kind a MeshInstall lists besides the profile's default one.
pub const MAX_GATEWAYS: u32 = 32;
/// The names of the profile's default gateways, which listed gateways may not take.
pub const DEFAULT_GATEWAY_NAMES: [&str; 2] = ["istio-ingressgateway", "istio-egressgateway"];

/// Per-component overrides. Only these keys exist; an unknown key is refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.ingressGateways) || !has(self.egressGateways) || self.ingressGateways.all(g, !self.egressGateways.exists(e, e.name == g.name))")
    .message("gateway names must be unique across ingressGateways and egressGateways"))]
pub struct Components {
    /// The control plane (Deployment istiod, or istiod-<revision>).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod: Option<Component>,
    /// The ingress gateway (Deployment istio-ingressgateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_gateway: Option<GatewayComponent>,
    /// The egress gateway (Deployment istio-egressgateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_gateway: Option<GatewayComponent>,
    /// Ingress gateways besides the profile's default one (ingressGateway), each its own
    /// Deployment, Service, ServiceAccount and Role named after it. Each starts from the profile's
    /// ingress gateway settings (but its affinity, which selects the default gateway's pods) and
    /// is enabled unless it says enabled: false. Listed under status component ingressGateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GATEWAYS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(g, g.name != 'istio-ingressgateway' && g.name != 'istio-egressgateway')")
        .message("istio-ingressgateway and istio-egressgateway are the profile's default gateways: set them in ingressGateway and egressGateway"))]
    #[x_kube(validation = Rule::new("self.all(g, !has(g.labels) || g.labels.all(k, !(k in ['istio.io/rev', 'sidecar.istio.io/inject', 'service.istio.io/canonical-name', 'service.istio.io/canonical-revision']) && !k.startsWith('app.kubernetes.io/')))")
        .message("a gateway's labels may not set istio.io/rev, sidecar.istio.io/inject, service.istio.io/canonical-* or app.kubernetes.io/*: meshop sets them"))]
    pub ingress_gateways: Option<Vec<Gateway>>,
    /// Egress gateways besides the profile's default one (egressGateway); as ingressGateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_GATEWAYS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(g, g.name != 'istio-ingressgateway' && g.name != 'istio-egressgateway')")
        .message("istio-ingressgateway and istio-egressgateway are the profile's default gateways: set them in ingressGateway and egressGateway"))]
    #[x_kube(validation = Rule::new("self.all(g, !has(g.labels) || g.labels.all(k, !(k in ['istio.io/rev', 'sidecar.istio.io/inject', 'service.istio.io/canonical-name', 'service.istio.io/canonical-revision']) && !k.startsWith('app.kubernetes.io/')))")
        .message("a gateway's labels may not set istio.io/rev, sidecar.istio.io/inject, service.istio.io/canonical-* or app.kubernetes.io/*: meshop sets them"))]
    pub egress_gateways: Option<Vec<Gateway>>,
    /// The Istio CNI node agent (DaemonSet istio-cni-node), needed for injection.trafficCapture cni
    /// and, with ambient.enabled, for ambient mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.replicas) && !has(self.autoscale) && !has(self.podDisruptionBudget)")
        .message("cni runs one pod per node as a DaemonSet: replicas, autoscale and podDisruptionBudget do not apply"))]
    pub cni: Option<CniComponent>,
    /// ztunnel, ambient mode's node proxy (DaemonSet ztunnel): mTLS and L4 policy for the pods
    /// of its node that ambient captures. Needs cni with ambient.enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!has(self.replicas) && !has(self.autoscale) && !has(self.podDisruptionBudget)")
        .message("ztunnel runs one pod per node as a DaemonSet: replicas, autoscale and podDisruptionBudget do not apply"))]
    pub ztunnel: Option<Component>,
    /// Observability addons for trying the mesh out (not for production use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addons: Option<Addons>,
}

/// The observability addons. Only these keys exist; an unknown key is refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addons {
    /// Prometheus, scraping the mesh's metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Component>,
    /// Grafana with Istio dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<Component>,
    /// Kiali, the mesh console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiali: Option<Component>,
    /// Jaeger all-in-one, collecting traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jaeger: Option<Component>,
}

/// Declares a component override struct: the fields every component shares, plus any extra ones.
/// A macro rather than `#[serde(flatten)]` because flatten defeats both `deny_unknown_fields` and
/// the structural schema the API server needs.
macro_rules! component_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// Whether the component is deployed. false switches it off even where the profile
            /// switches it on.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub enabled: Option<bool>,
            /// A fixed replica count, used when autoscaling is off.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(range(min = 0, max = 1000))]
            pub replicas: Option<i32>,
            /// CPU and memory requests and limits of the component's main container.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub resources: Option<ResourceRequirements>,
            /// Horizontal pod autoscaling (a HorizontalPodAutoscaler on CPU).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub autoscale: Option<Autoscale>,
            /// A PodDisruptionBudget protecting the component during node drains and upgrades.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub pod_disruption_budget: Option<PodDisruptionBudget>,
            /// Node labels the component's pods must match.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub node_selector: Option<BTreeMap<String, String>>,
            /// Taints the component's pods tolerate.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tolerations: Option<Vec<Toleration>>,
            /// Scheduling affinity of the component's pods; replaces the profile's (such as
            /// production's pod anti-affinity) when set.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub affinity: Option<Affinity>,
            /// Extra environment variables for the component's main container, after meshop's own.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub env: Option<Vec<EnvVar>>,
            /// Patches on the objects meshop renders for this component, applied in order after
            /// every other setting (docs/api.md, "Overlays"). A patch that does not apply stalls
            /// the MeshInstall and nothing is applied.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(length(max = 64))]
            pub overlays: Option<Vec<Overlay>>,
            /// The PriorityClass of the component's pods; replaces global.priorityClassName.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
            pub priority_class_name: Option<String>,
            /// Extra annotations of the component's pods, over global.podAnnotations. meshop's
            /// own annotations (such as sidecar.istio.io/inject) win.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub pod_annotations: Option<BTreeMap<String, String>>,
            /// Extra labels of the component's pods, over global.podLabels. meshop's own labels
            /// (the selector, app.kubernetes.io/*, istio.io/rev, sidecar.istio.io/inject) win.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub pod_labels: Option<BTreeMap<String, String>>,
            /// When the kubelet pulls the component's images; replaces global.imagePullPolicy.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub image_pull_policy: Option<PullPolicy>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }
    };
}

component_struct! {
    /// Overrides for one component. Every field is optional; a field left out keeps the profile's value.
    Component {}
}

component_struct! {
    /// Overrides for a gateway: the common component overrides plus its Service.
    GatewayComponent {
        /// The gateway's Service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<GatewayService>,
    }
}

component_struct! {
    /// A gateway besides the profile's default one: its name, namespace and labels, plus every
    /// gateway override. Fields left out take the profile's default gateway settings.
    Gateway {
        /// The gateway's name: of its Deployment, Service, ServiceAccount and Role, and its app
        /// label. Unique across ingressGateways and egressGateways. Renaming a gateway replaces it:
        /// the old one's objects are deleted once the new one is ready.
        #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
        name: String,
        /// The namespace the gateway runs in; the mesh's namespace when left out. Another
        /// namespace must exist and be granted to meshop as a control-plane namespace is
        /// (meshop grant-namespace); until it is, the MeshInstall is Stalled NamespaceNotGranted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
        namespace: Option<String>,
        /// Labels of the gateway's pods and selector, over the defaults app=<name> and
        /// istio=ingressgateway (or egressgateway); Istio Gateway resources select gateways by
        /// them. A Deployment's selector cannot change: to relabel a gateway, rename it. The
        /// labels meshop sets itself (istio.io/rev, sidecar.istio.io/inject,
        /// service.istio.io/canonical-*, app.kubernetes.io/*) are refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(extend("maxProperties" = 32))]
        labels: Option<BTreeMap<String, String>>,
        /// The gateway's Service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<GatewayService>,
    }
}

component_struct! {
    /// Overrides for the CNI node agent: the common component overrides plus ambient mode.
    CniComponent {
        /// Ambient mode: the agent hands the network namespace of every captured pod to ztunnel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ambient: Option<CniAmbient>,
    }
}

/// The CNI node agent's ambient mode (Istio's `cni.ambient.*` values).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CniAmbient {
    /// Whether the agent runs in ambient mode. Needs components.ztunnel, and ztunnel needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Redirect captured pods' DNS queries to ztunnel's DNS proxy (Istio's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_capture: Option<bool>,
    /// Capture IPv6 traffic as well as IPv4 (Istio's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// Rewrite the capture rules of every captured pod when the agent starts, so an upgraded agent
    /// brings running pods to its own rules (Istio's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_iptables_on_startup: Option<bool>,
}

/// The overrides every component shares, from any of the component structs.
macro_rules! common_of {
    ($s:expr) => {
        Component {
            enabled: $s.enabled,
            replicas: $s.replicas,
            resources: $s.resources.clone(),
            autoscale: $s.autoscale.clone(),
            pod_disruption_budget: $s.pod_disruption_budget.clone(),
            node_selector: $s.node_selector.clone(),
            tolerations: $s.tolerations.clone(),
            affinity: $s.affinity.clone(),
            env: $s.env.clone(),
            priority_class_name: $s.priority_class_name.clone(),
            pod_annotations: $s.pod_annotations.clone(),
            pod_labels: $s.pod_labels.clone(),
            image_pull_policy: $s.image_pull_policy,
            overlays: $s.overlays.clone(),
        }
    };
}

impl CniComponent {
    /// The overrides every component shares, without ambient mode.
    pub fn common(&self) -> Component {
        common_of!(self)
    }
}

impl GatewayComponent {
    /// The overrides every component shares, without the Service.
    pub fn common(&self) -> Component {
        common_of!(self)
    }
}

impl Gateway {
    /// The gateway's overrides as those of a default gateway (no name, namespace or labels).
    pub fn overrides(&self) -> GatewayComponent {
        let c = common_of!(self);
        GatewayComponent {
            enabled: c.enabled,
            replicas: c.replicas,
            resources: c.resources,
            autoscale: c.autoscale,
            pod_disruption_budget: c.pod_disruption_budget,
            node_selector: c.node_selector,
            tolerations: c.tolerations,
            affinity: c.affinity,
            env: c.env,
            priority_class_name: c.priority_class_name,
            pod_annotations: c.pod_annotations,
            pod_labels: c.pod_labels,
            image_pull_policy: c.image_pull_policy,
            overlays: c.overlays,
            service: self.service.clone(),
        }
    }
}

/// A patch on one object meshop renders for a component, addressed by its kind and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.strategicMerge) != has(self.jsonPatch)")
    .message("an overlay takes exactly one of strategicMerge and jsonPatch"))]
pub struct Overlay {
    /// The kind of the object, such as Deployment or Service.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// The object's name, such as istiod. Left out: the component's only object of that kind
    /// (the way to address istiod-<revision> in a revision-based install, whose name changes
    /// with every upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// A strategic merge patch, as kubectl patch --type strategic takes it: maps merge, the lists
    /// Kubernetes keys (containers and env by name, volumeMounts by mountPath, ports by
    /// containerPort or port, ...) merge item by item, null deletes, $patch delete/replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub strategic_merge: Option<serde_json::Value>,
    /// An RFC 6902 JSON patch: operations applied in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub json_patch: Option<Vec<JsonPatchOperation>>,
}

/// One RFC 6902 operation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(self.op == 'move' || self.op == 'copy') == has(self.from)")
    .message("from is set for move and copy, and only for them"))]
pub struct JsonPatchOperation {
    /// add, remove, replace, move, copy or test.
    pub op: JsonPatchOp,
    /// A JSON pointer (RFC 6901), such as /spec/template/spec/containers/0/args/-.
    #[schemars(length(max = 1024))]
    pub path: String,
    /// The source pointer of move and copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub from: Option<String>,
    /// The value of add, replace and test: any JSON value, null included.
    #[serde(
        default,
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "any_value")]
    pub value: Option<serde_json::Value>,
}

/// RFC 6902 operations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JsonPatchOp {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

/// A value that is present, even as `null` (which `Option<Value>` would read as absent).
fn present_value<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Any JSON object, kept as written.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Any JSON value, kept as written.
fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"nullable": true, "x-kubernetes-preserve-unknown-fields": true})
}

/// When the kubelet pulls an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Istio's scoped log level: `<scope>:<level>` pairs separated by commas, such as
/// `default:info,ads:debug`; levels are none, fatal, error, warn, info and debug.
pub const SCOPED_LOG_LEVEL_PATTERN: &str = "^[a-z0-9_.-]+:(none|fatal|error|warn|info|debug)(,[a-z0-9_.-]+:(none|fatal|error|warn|info|debug))*$";

/// Mesh-wide workload settings (Istio's values.global).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Global {
    /// When the kubelet pulls Istio's images: istiod, the gateways, the CNI agent, and the
    /// istio-proxy and istio-init containers meshop injects. A component's imagePullPolicy wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets (in each pod's namespace) to pull Istio's images with: on istiod, the gateways
    /// and the CNI agent, and added to every pod meshop injects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub image_pull_secrets: Option<Vec<String>>,
    /// istiod's and the gateways' agent's log level (--log_output_level), Istio's scoped form
    /// such as default:info or default:info,ads:debug. Envoy's own level is
    /// injection.proxy.logLevel for sidecars; gateways keep warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SCOPED_LOG_LEVEL_PATTERN), length(min = 1, max = 512))]
    pub log_level: Option<String>,
    /// Whether istiod and the gateways' agent log JSON (--log_as_json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_as_json: Option<bool>,
    /// The PriorityClass of istiod's and the gateways' pods (a component's own wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Annotations of istiod's and the gateways' pods (a component's own win on the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Labels of istiod's and the gateways' pods (a component's own win on the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// The mesh's id (multi-cluster: the same on every cluster of one mesh). Left out, the trust
    /// domain. Reaches istiod's mesh config (meshId) and every proxy (ISTIO_META_MESH_ID).
    #[serde(default, rename = "meshID", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub mesh_id: Option<String>,
    /// The network this cluster's workloads are on (multi-network meshes). Reaches the gateways
    /// and every injected proxy (ISTIO_META_NETWORK), as Istio's global.network does; label the
    /// control-plane namespace topology.istio.io/network yourself, as Istio's guide says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub network: Option<String>,
    /// This cluster's name in the mesh (Istio's CLUSTER_ID); Kubernetes when left out. Reaches
    /// istiod (CLUSTER_ID) and every proxy (ISTIO_META_CLUSTER_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub cluster_name: Option<String>,
    /// A NetworkPolicy for istiod, each gateway and the CNI agent, as Istio's
    /// global.networkPolicy: each selects its component's pods, allows all egress, and allows
    /// ingress only on the ports the component serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<GlobalNetworkPolicy>,
}

/// NetworkPolicies for meshop's components (Istio's global.networkPolicy).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicy {
    /// Whether the NetworkPolicies are created (default false); turned off again, they are
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Horizontal pod autoscaling on CPU utilisation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas")
    .message("autoscale.minReplicas must not exceed autoscale.maxReplicas"))]
pub struct Autoscale {
    /// Whether a HorizontalPodAutoscaler is created. false turns off the profile's autoscaling, so
    /// that replicas applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The fewest replicas the autoscaler keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: Option<i32>,
    /// The most replicas the autoscaler allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<i32>,
    /// The average CPU utilisation, in percent of requests, the autoscaler aims for.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
}

/// A PodDisruptionBudget for the component. Set minAvailable or maxUnavailable, not both.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))")
    .message("podDisruptionBudget takes minAvailable or maxUnavailable, not both"))]
pub struct PodDisruptionBudget {
    /// Whether a PodDisruptionBudget is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Pods that must stay available during a voluntary disruption: a number or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Pods that may be unavailable during a voluntary disruption: a number or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// The Service in front of a gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayService {
    /// The Service type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Annotations for the Service, such as a cloud load balancer's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The Service's ports; replaces the profile's list when set. Names must be unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("service port names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.port == p.port))").message("service port numbers must be unique"))]
    pub ports: Option<Vec<GatewayPort>>,
}

/// Service types a gateway may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    ClusterIP,
    /// Also reachable on every node's port.
    NodePort,
    /// Also reachable through the cloud provider's load balancer.
    LoadBalancer,
}

/// One port of a gateway Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    /// The port's name, a DNS label such as http2 or https; Istio infers the protocol from its prefix.
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 15))]
    pub name: String,
    /// The port the Service exposes.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The container port traffic goes to; defaults to port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    /// The node port for NodePort and LoadBalancer Services; allocated when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// The transport protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
}

/// Transport protocols a Service port may carry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PortProtocol {
    TCP,
    UDP,
    SCTP,
}

/// Mesh-wide settings: the mesh ConfigMap istiod reads and the mesh-wide PeerAuthentication.
///
/// Besides meshop's own fields below, any field of Istio's MeshConfig, with Istio's names and JSON
/// shapes (extensionProviders, defaultProviders, defaultConfig, discoverySelectors,
/// localityLbSetting, meshMTLS, ...): paste the meshConfig of an IstioOperator or of Helm values.
/// They are checked as istiod reads them (an unknown field or a bad value stalls the MeshInstall
/// with the field's path) and carried to the mesh ConfigMap merged as istiod merges mesh config
/// (docs/api.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = preserve_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.accessLogging) && has(self.accessLogFile))")
    .message("meshConfig.accessLogging and meshConfig.accessLogFile both set where the access log goes: set one"))]
pub struct MeshConfig {
    /// Mutual TLS between workloads: STRICT accepts only mTLS; PERMISSIVE also accepts plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_mode: Option<MtlsMode>,
    /// Whether proxies write an access log line per request to standard output (meshop's
    /// shorthand for accessLogFile /dev/stdout; set one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_logging: Option<bool>,
    /// Istio's accessLogFile: where proxies write access logs ("" for none, /dev/stdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// The percentage of requests traced, from 0 to 100; fractions such as 0.5 are allowed
    /// (meshop's shorthand for defaultConfig.tracing.sampling; set one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub trace_sampling: Option<f64>,
    /// The SPIFFE trust domain of workload identities, such as cluster.local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub trust_domain: Option<String>,
    /// Traffic to destinations outside the mesh registry, Istio's object {mode: ALLOW_ANY} or
    /// {mode: REGISTRY_ONLY} (the plain string ALLOW_ANY or REGISTRY_ONLY is accepted too):
    /// ALLOW_ANY lets it through; REGISTRY_ONLY blocks it unless a ServiceEntry names the
    /// destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicySetting>,
    /// Every other field of Istio's MeshConfig, as given.
    #[serde(flatten)]
    #[schemars(skip)]
    pub istio: serde_json::Map<String, serde_json::Value>,
}

/// Keeps the fields of Istio's MeshConfig the schema does not list (checked by meshop instead).
fn preserve_unknown_fields(schema: &mut schemars::Schema) {
    if let Some(object) = schema.as_object_mut() {
        object.remove("additionalProperties");
        object.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            serde_json::Value::Bool(true),
        );
    }
}

/// `outboundTrafficPolicy`: Istio's object, or meshop's older plain string.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum OutboundTrafficPolicySetting {
    /// `ALLOW_ANY` or `REGISTRY_ONLY`.
    Mode(OutboundTrafficPolicy),
    /// Istio's `{mode: ...}` (and any other field of Istio's OutboundTrafficPolicy), as given;
    /// anything else is kept as given too, for the mesh config check to name it (a CEL rule
    /// cannot be put on a node without a type).
    Istio(serde_json::Value),
}

impl OutboundTrafficPolicySetting {
    /// The mode this setting asks for; `None` when the object leaves it out or names no mode
    /// meshop knows (the field check reports that).
    pub fn mode(&self) -> Option<OutboundTrafficPolicy> {
        match self {
            OutboundTrafficPolicySetting::Mode(m) => Some(*m),
            OutboundTrafficPolicySetting::Istio(o) => o
                .get("mode")
                .and_then(|m| serde_json::from_value(m.clone()).ok()),
        }
    }

    /// Istio's shape: `{mode: ...}`.
    pub fn to_istio(&self) -> serde_json::Value {
        match self {
            OutboundTrafficPolicySetting::Mode(m) => serde_json::json!({ "mode": m }),
            // A string that is no mode: as the mode it tries to be, for the check to name.
            OutboundTrafficPolicySetting::Istio(serde_json::Value::String(s)) => {
                serde_json::json!({ "mode": s })
            }
            OutboundTrafficPolicySetting::Istio(o) => o.clone(),
        }
    }
}

impl JsonSchema for OutboundTrafficPolicySetting {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OutboundTrafficPolicySetting".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Istio's {mode: ALLOW_ANY | REGISTRY_ONLY}, or the mode alone as a string.",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// Mutual TLS modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MtlsMode {
    /// Workloads accept only mutual TLS.
    STRICT,
    /// Workloads accept mutual TLS and plain text (for migrations).
    PERMISSIVE,
}

/// What proxies do with traffic to unknown destinations.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[allow(non_camel_case_types)]
pub enum OutboundTrafficPolicy {
    /// Pass traffic to unknown destinations through.
    ALLOW_ANY,
    /// Block traffic to destinations not in the mesh registry.
    REGISTRY_ONLY,
}

/// Sidecar injection settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.defaultTemplates) || self.defaultTemplates.all(t, t in ['sidecar', 'gateway'] || (has(self.templates) && t in self.templates))")
    .message("defaultTemplates names sidecar, gateway or one of templates"))]
#[x_kube(validation = Rule::new("!has(self.defaultTemplates) || self.defaultTemplates.exists(t, t in ['sidecar', 'gateway'])")
    .message("defaultTemplates names a built-in template (sidecar or gateway), which custom templates are merged onto"))]
pub struct Injection {
    /// Whether meshop registers its sidecar injection webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// native runs the proxy as a Kubernetes native sidecar (an init container with restartPolicy
    /// Always, started before and stopped after the app); classic runs it as an ordinary container;
    /// auto picks native where the nodes' kubelets are 1.33 or newer, as Istio does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_mode: Option<SidecarMode>,
    /// How traffic is redirected to the proxy: iptables adds the istio-init container (needs
    /// NET_ADMIN and NET_RAW); cni leaves that to the Istio CNI node agent (components.cni).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_capture: Option<TrafficCapture>,
    /// What the API server does when the webhook cannot be reached: Fail refuses the pod; Ignore
    /// admits it without a sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Settings of the injected proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySettings>,
    /// Custom injection templates, as Istio's values.sidecarInjectorWebhook.templates: template
    /// name -> a partial Pod in YAML (metadata.labels, metadata.annotations and spec), merged
    /// onto the injected pod as a strategic merge patch (containers, volumes and
    /// imagePullSecrets by name) after the built-in template, in the order the pod names them. A
    /// pod chooses templates with the annotation inject.istio.io/templates (comma-separated),
    /// else gets defaultTemplates. meshop does not run Go templates: a template containing {{ is
    /// refused. Istio's built-in template names (sidecar, gateway, grpc-agent, grpc-simple,
    /// waypoint, kube-gateway, agentgateway, agentgateway-waypoint) cannot be redefined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "injection_templates_schema")]
    #[x_kube(validation = Rule::new("self.all(k, !self[k].contains('{{'))")
        .message("an injection template may not contain {{: meshop does not run Go templates; write the partial Pod as it should be merged"))]
    #[x_kube(validation = Rule::new(BUILTIN_TEMPLATES_RULE)
        .message("injection templates may not redefine Istio's built-in templates (sidecar, gateway, grpc-agent, grpc-simple, waypoint, kube-gateway, agentgateway, agentgateway-waypoint)"))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$'))")
        .message("an injection template's name is letters, digits, '-', '_' and '.', starting and ending with a letter or digit"))]
    pub templates: Option<BTreeMap<String, String>>,
    /// The templates a pod that does not set inject.istio.io/templates gets, in order, as
    /// Istio's values.sidecarInjectorWebhook.defaultTemplates; [sidecar] when left out. Each is a
    /// built-in template (sidecar or gateway, at least one of them) or one of templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 63)))]
    pub default_templates: Option<Vec<String>>,
}

/// Istio's injection templates (release-1.31): a pod names them with inject.istio.io/templates,
/// and `spec.injection.templates` may not redefine them. meshop injects [`MESHOP_TEMPLATES`] of
/// them itself.
pub const ISTIO_TEMPLATES: &[&str] = &[
    "sidecar",
    "gateway",
    "grpc-simple",
    "grpc-agent",
    "waypoint",
    "kube-gateway",
    "agentgateway",
    "agentgateway-waypoint",
];

/// The built-in templates meshop injects: `sidecar` (the default), `gateway` (with the pod's own
/// proxy container), and the proxyless gRPC ones, `grpc-agent` and `grpc-simple`.
pub const MESHOP_TEMPLATES: &[&str] = &["sidecar", "gateway", "grpc-agent", "grpc-simple"];

/// The CEL rule refusing [`ISTIO_TEMPLATES`] as custom template names (a unit test checks it
/// lists them all).
const BUILTIN_TEMPLATES_RULE: &str = "self.all(k, !(k in ['sidecar', 'gateway', 'grpc-simple', 'grpc-agent', 'waypoint', 'kube-gateway', 'agentgateway', 'agentgateway-waypoint']))";

/// The longest custom injection template meshop takes, in characters.
pub const MAX_TEMPLATE_CHARS: usize = 32768;
/// The most custom injection templates a MeshInstall has.
pub const MAX_TEMPLATES: usize = 32;

/// `spec.injection.templates`: a map of at most [`MAX_TEMPLATES`] strings of at most
/// [`MAX_TEMPLATE_CHARS`] (bounds the CEL rules' cost).
fn injection_templates_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": MAX_TEMPLATES,
        "additionalProperties": {"type": "string", "maxLength": MAX_TEMPLATE_CHARS},
    })
}

/// How the sidecar proxy runs in the pod: native (an init container with restartPolicy Always),
/// classic (an ordinary container) or auto (native where the nodes' kubelets are 1.33 or newer, as
/// Istio decides). The pod annotation sidecar.istio.io/nativeSidecar ("true" or "false")
/// overrides any mode for that pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SidecarMode {
    /// A native sidecar: an init container with restartPolicy Always.
    Native,
    /// An ordinary container next to the application.
    Classic,
    /// Native where the kubelet supports it, as Istio decides: a pod already bound to a node is
    /// native when that node's kubelet is 1.33 or newer; any other pod is native only when every
    /// node's kubelet is 1.33 or newer. Offline (meshop inject -f), where no nodes are known, it
    /// is native.
    Auto,
}

/// How traffic is captured into the proxy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrafficCapture {
    /// An istio-init container programs iptables in the pod.
    Iptables,
    /// The Istio CNI node agent programs the pod's network.
    Cni,
}

/// Admission webhook failure policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailurePolicy {
    /// Refuse the pod when the webhook cannot be reached.
    Fail,
    /// Admit the pod without a sidecar when the webhook cannot be reached.
    Ignore,
}

/// Settings of the injected istio-proxy container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySettings {
    /// CPU and memory requests and limits of the istio-proxy container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Envoy worker threads; 0 means one per CPU the proxy may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 256))]
    pub concurrency: Option<i32>,
    /// The proxy's log level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<ProxyLogLevel>,
    /// Whether application containers start only once the proxy is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
}

/// Envoy log levels.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyLogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

impl ProxyLogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyLogLevel::Trace => "trace",
            ProxyLogLevel::Debug => "debug",
            ProxyLogLevel::Info => "info",
            ProxyLogLevel::Warning => "warning",
            ProxyLogLevel::Error => "error",
            ProxyLogLevel::Critical => "critical",
            ProxyLogLevel::Off => "off",
        }
    }
}
