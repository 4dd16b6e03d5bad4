//! The one table of kinds meshop manages. Apply order, the controller's watches, pruning and
//! cleanup, and the operator's RBAC are all derived from it, so a new kind is added here once
//! (and a test fails if `render` emits a kind that is missing).

use kube::api::ApiResource;

/// One kind meshop may create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManagedKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Position within an apply stage: kinds others depend on come first. Deletion runs in the
    /// reverse order.
    pub apply_order: u8,
    /// Whether the controller watches the kind, so a change or deletion outside meshop is repaired
    /// at once. Unwatched kinds are repaired on the periodic resync.
    pub watched: bool,
    /// When an applied object of this kind counts as ready.
    pub readiness: ReadinessRule,
}

/// How readiness of an applied object is judged (see `controller::assess`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadinessRule {
    /// Ready once the API server has stored it.
    Exists,
    /// A Deployment: the rollout of its current generation is complete and available.
    DeploymentRollout,
    /// A DaemonSet: every scheduled node runs the current generation, ready.
    DaemonSetRollout,
    /// A CustomResourceDefinition: `Established`, so objects of its kind can be created.
    Established,
}

impl ManagedKind {
    const fn new(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
    ) -> ManagedKind {
        ManagedKind {
            group,
            version,
            kind,
            plural,
            namespaced: true,
            apply_order: 9,
            watched: false,
            readiness: ReadinessRule::Exists,
        }
    }

    const fn ready_when(mut self, readiness: ReadinessRule) -> ManagedKind {
        self.readiness = readiness;
        self
    }

    const fn cluster_scoped(mut self) -> ManagedKind {
        self.namespaced = false;
        self
    }

    const fn order(mut self, apply_order: u8) -> ManagedKind {
        self.apply_order = apply_order;
        self
    }

    const fn watched(mut self) -> ManagedKind {
        self.watched = true;
        self
    }

    /// The dynamic API handle description for this kind.
    pub fn api_resource(&self) -> ApiResource {
        let api_version = if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version,
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

/// Every kind meshop creates, in apply order. Watched kinds are the ones whose loss or edit
/// breaks the mesh at once (workloads, their Services, config and accounts, scaling); RBAC,
/// CRDs, the namespace and policies change rarely and are checked on resync.
pub const MANAGED_KINDS: &[ManagedKind] = &[
    ManagedKind::new(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
    .cluster_scoped()
    .order(0)
    .ready_when(ReadinessRule::Established),
    ManagedKind::new("", "v1", "Namespace", "namespaces")
        .cluster_scoped()
        .order(1),
    ManagedKind::new("", "v1", "ServiceAccount", "serviceaccounts")
        .order(2)
        .watched(),
    ManagedKind::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
    )
    .cluster_scoped()
    .order(3),
    ManagedKind::new("rbac.authorization.k8s.io", "v1", "Role", "roles").order(3),
    ManagedKind::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    )
    .cluster_scoped()
    .order(4),
    ManagedKind::new(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
    )
    .order(4),
    ManagedKind::new("", "v1", "ConfigMap", "configmaps")
        .order(5)
        .watched(),
    ManagedKind::new("", "v1", "Service", "services")
        .order(6)
        .watched(),
    // A component's NetworkPolicy (`spec.global.networkPolicy`) is in place before its pods
    // start. Watched: a policy edited or deleted outside meshop opens (or closes) the
    // component's ports, so it is repaired at once rather than on resync.
    ManagedKind::new(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    )
    .order(6)
    .watched(),
    ManagedKind::new("apps", "v1", "Deployment", "deployments")
        .order(7)
        .watched()
        .ready_when(ReadinessRule::DeploymentRollout),
    ManagedKind::new("apps", "v1", "DaemonSet", "daemonsets")
        .order(7)
        .watched()
        .ready_when(ReadinessRule::DaemonSetRollout),
    ManagedKind::new(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    )
    .order(8)
    .watched(),
    ManagedKind::new(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    )
    .order(8)
    .watched(),
    ManagedKind::new(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    ),
    ManagedKind::new(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    )
    .cluster_scoped(),
    // istiod's Istio-config validation; unwatched: istiod itself writes to it (caBundle,
    // failurePolicy), and a watch would wake the controller for each of those writes.
    ManagedKind::new(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    )
    .cluster_scoped(),
];

/// The table entry of a kind, by API group and kind name.
pub fn find(group: &str, kind: &str) -> Option<&'static ManagedKind> {
    MANAGED_KINDS
        .iter()
        .find(|k| k.group == group && k.kind == kind)
}

/// How readiness of a kind is judged; kinds not in the table are ready once stored.
pub fn readiness(group: &str, kind: &str) -> ReadinessRule {
    find(group, kind).map_or(ReadinessRule::Exists, |k| k.readiness)
}

/// Apply position of a kind within a stage; kinds not in the table go last.
pub fn apply_order(group: &str, kind: &str) -> u8 {
    find(group, kind).map_or(u8::MAX, |k| k.apply_order)
}

/// The kinds in deletion order: dependents (autoscalers, workloads) before what they depend on
/// (accounts, RBAC), and CRDs last so their custom objects go first.
pub fn deletion_order() -> Vec<&'static ManagedKind> {
    let mut kinds: Vec<&ManagedKind> = MANAGED_KINDS.iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.apply_order));
    // CustomResourceDefinitions have the lowest apply order, so they already come last.
    kinds
}

/// Access to objects meshop never creates: the application workloads a revision-based upgrade
/// moves to the new revision (`controller::migrate`). Reading pods is metadata only (which
/// revision each runs); restarting is a patch of the pod template's annotations. No create,
/// update or delete: meshop cannot change what an application runs, only restart it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadAccess {
    pub group: &'static str,
    pub plural: &'static str,
    pub verbs: &'static [&'static str],
}

pub const MIGRATION_ACCESS: &[WorkloadAccess] = &[
    WorkloadAccess {
        group: "",
        plural: "pods",
        verbs: &["list", "watch"],
    },
    WorkloadAccess {
        group: "apps",
        plural: "deployments",
        verbs: &["list", "patch"],
    },
    WorkloadAccess {
        group: "apps",
        plural: "statefulsets",
        verbs: &["list", "patch"],
    },
    WorkloadAccess {
        group: "apps",
        plural: "daemonsets",
        verbs: &["list", "patch"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn kinds_are_unique_and_in_apply_order() {
        let names: BTreeSet<(&str, &str)> =
            MANAGED_KINDS.iter().map(|k| (k.group, k.kind)).collect();
        assert_eq!(names.len(), MANAGED_KINDS.len(), "a kind is listed twice");
        assert!(
            MANAGED_KINDS
                .windows(2)
                .all(|w| w[0].apply_order <= w[1].apply_order),
            "the table is written in apply order"
        );
    }

    #[test]
    fn deletion_runs_dependents_first() {
        let order: Vec<&str> = deletion_order().iter().map(|k| k.kind).collect();
        let pos = |kind: &str| order.iter().position(|k| *k == kind).unwrap();
        assert!(pos("HorizontalPodAutoscaler") < pos("Deployment"));
        assert!(pos("Deployment") < pos("ServiceAccount"));
        assert!(pos("RoleBinding") < pos("Role"));
        assert!(pos("PeerAuthentication") < pos("CustomResourceDefinition"));
        assert_eq!(order.last(), Some(&"CustomResourceDefinition"));
    }

    #[test]
    fn api_resources_match_the_typed_kinds() {
        use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
        use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        fn erase<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
            ApiResource::erase::<K>(&())
        }
        let typed = [
            erase::<CustomResourceDefinition>(),
            erase::<Namespace>(),
            erase::<ServiceAccount>(),
            erase::<ClusterRole>(),
            erase::<Role>(),
            erase::<ClusterRoleBinding>(),
            erase::<RoleBinding>(),
            erase::<ConfigMap>(),
            erase::<Service>(),
            erase::<NetworkPolicy>(),
            erase::<Deployment>(),
            erase::<DaemonSet>(),
            erase::<HorizontalPodAutoscaler>(),
            erase::<PodDisruptionBudget>(),
            erase::<MutatingWebhookConfiguration>(),
        ];
        for t in typed {
            let entry = find(&t.group, &t.kind).unwrap_or_else(|| panic!("{} missing", t.kind));
            assert_eq!(entry.api_resource(), t);
        }
    }
}
