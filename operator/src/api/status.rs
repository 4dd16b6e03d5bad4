//! `MeshInstall.status`: what meshop observed, written so that kubectl, kstatus, Argo CD and Flux
//! can judge health from it alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types meshop sets (kstatus conventions).
pub mod condition {
    /// True when every enabled component is ready at the observed generation.
    pub const READY: &str = "Ready";
    /// True while meshop is still moving the cluster towards the spec (kstatus: InProgress).
    pub const RECONCILING: &str = "Reconciling";
    /// True when meshop cannot make progress without a change from the user (kstatus: Failed).
    pub const STALLED: &str = "Stalled";
}

/// The observed state of a MeshInstall.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshInstallStatus {
    /// The metadata.generation this status describes. When it is lower than metadata.generation,
    /// meshop has not yet acted on the latest spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The latest observations: Ready, Reconciling and Stalled, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The profile last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,

    /// The Istio version last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// The control-plane revision last applied (empty for the default revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,

    /// One entry per component of the effective profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<ComponentStatus>,

    /// The sidecar injection webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,

    /// updateStrategy RevisionBased: every revision this MeshInstall runs, newest first, with
    /// its release, the tags pointing at it and the proxies still using it. meshop also reads
    /// this list back: it is the record of which older revisions still exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub revisions: Vec<RevisionStatus>,

    /// updateStrategy RevisionBased: where moving workloads to the newest revision stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
}

impl MeshInstallStatus {
    /// The condition of type `type_` (see [`condition`]), when the status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether condition `type_` is there with status True.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

/// One control-plane revision of a revision-based install.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The revision's name (istiod-<name>, istio.io/rev=<name>).
    pub name: String,
    /// The Istio release it runs.
    pub version: String,
    /// The tags pointing at it (default: namespaces labelled istio-injection=enabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Whether its istiod is ready.
    pub ready: bool,
    /// Pods running this revision's proxy (sidecars and gateways).
    #[serde(default)]
    pub pods: i32,
    /// Deployments, StatefulSets and DaemonSets with pods on this revision.
    #[serde(default)]
    pub workloads: i32,
    /// For an older revision: since when no pod has used it. It is deleted once
    /// spec.upgrade.retirementGracePeriodSeconds have passed since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_since: Option<Time>,
}

/// Progress of moving workloads to the newest revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// The revision workloads are moved to.
    pub target: String,
    /// Manual or Rollout.
    pub mode: String,
    /// Workloads (Kind/namespace/name) whose pods still run an older revision's proxy and
    /// would move to the target when restarted; at most 20 are listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
    /// How many workloads are pending in all.
    #[serde(default)]
    pub pending_count: i32,
    /// Workloads restarted by meshop whose rollout is under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarting: Vec<String>,
    /// Pods running an older revision's proxy whose namespace or labels pin that revision
    /// (istio.io/rev=<revision>): a restart would not move them, and their revision stays.
    #[serde(default)]
    pub pinned_pods: i32,
    /// What is happening, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The state of one component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// The component's name, as in spec.components (istiod, ingressGateway, prometheus, ...).
    pub name: String,
    /// The component's state.
    pub state: ComponentState,
    /// Replicas the component should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Replicas that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Replicas that run the current template. For a DaemonSet component (cni, ztunnel) the
    /// three counts are nodes: nodes that should run its pod, whose pod is ready, and whose pod
    /// is updated; a rollout moves updatedReplicas up to desiredReplicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// What is happening, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The state of one component.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ComponentState {
    /// Not applied yet: waiting for the components it depends on.
    #[default]
    Pending,
    /// Applied; waiting for its pods to become ready.
    Progressing,
    /// Applied and ready.
    Ready,
    /// Applied once, but something is wrong (pods failing, an apply error).
    Degraded,
}

/// The state of the sidecar injection webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The webhook's state.
    pub state: WebhookState,
    /// When the webhook's serving certificate expires; meshop rotates it before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expiry: Option<Time>,
    /// What is happening, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The state of the injection webhook.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum WebhookState {
    /// Injection is switched off in the spec.
    #[default]
    Disabled,
    /// Waiting for istiod to become ready before registering the webhook.
    Pending,
    /// Registered and serving.
    Active,
    /// Registered, but something is wrong (see message).
    Degraded,
}
