//! Pieces every component uses: metadata, labels, owner references, hardened security contexts,
//! autoscalers and disruption budgets.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::{ComponentId, Rendered};
use crate::effective::{Installation, Pdb, Settings};

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY: &str = "meshop";
pub const PART_OF: &str = "istio";

/// The labels every object of a component carries.
pub fn labels(install: &Installation, component: ComponentId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_PART_OF.to_string(), PART_OF.to_string()),
        (LABEL_COMPONENT.to_string(), component.label().to_string()),
        (LABEL_INSTANCE.to_string(), install.owner.name.clone()),
    ])
}

/// Metadata for a namespaced object of a component.
pub fn meta(install: &Installation, component: ComponentId, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(install.namespace.clone()),
        labels: Some(labels(install, component)),
        ..Default::default()
    }
}

/// Metadata for a cluster-scoped object of a component.
pub fn cluster_meta(install: &Installation, component: ComponentId, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: None,
        ..meta(install, component, name)
    }
}

/// The `app.kubernetes.io/instance` of objects every MeshInstall of the cluster shares (the
/// namespace, Istio's CRDs). They carry no owner reference: two MeshInstalls applying different
/// owner lists with the same field manager would take turns overwriting each other. The finalizer
/// of the last MeshInstall that uses them deletes them.
pub const SHARED_INSTANCE: &str = "shared";

/// Adds the labels and owner reference every object must carry, whatever built it.
pub fn finish(install: &Installation, object: &mut Rendered) {
    let meta = &mut object.object.metadata;
    let labels = meta.labels.get_or_insert_with(Default::default);
    for (k, v) in self::labels(install, object.component) {
        labels.entry(k).or_insert(v);
    }
    if object.shared {
        labels.insert(LABEL_INSTANCE.into(), SHARED_INSTANCE.into());
        return;
    }
    if let Some(uid) = &install.owner.uid {
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "meshop.dev/v1alpha1".into(),
            kind: "MeshInstall".into(),
            name: install.owner.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
    }
}

/// The container security context for everything meshop runs unless documented otherwise:
/// non-root, read-only root filesystem, no privilege escalation, no capabilities.
pub fn hardened_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

/// The pod security context: a fixed non-root user and RuntimeDefault seccomp.
pub fn hardened_pod(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// An env var from a pod field (`metadata.name`, `status.podIP`, ...).
pub fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        value: None,
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// meshop's env first, then the user's; a user variable with the same name replaces meshop's in place.
pub fn with_user_env(mut ours: Vec<EnvVar>, settings: &Settings) -> Vec<EnvVar> {
    let positions: BTreeMap<String, usize> = ours
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.clone(), i))
        .collect();
    for user in &settings.env {
        match positions.get(&user.name) {
            Some(&i) => ours[i] = user.clone(),
            None => ours.push(user.clone()),
        }
    }
    ours
}

/// The Deployment replica count: left to the autoscaler when there is one (so that applying
/// never fights the HPA over `spec.replicas`).
pub fn replicas(settings: &Settings) -> Option<i32> {
    if settings.autoscale.is_some() {
        None
    } else {
        Some(settings.replicas)
    }
}

/// A CPU-based HorizontalPodAutoscaler for a Deployment, when the settings ask for one.
pub fn hpa(
    install: &Installation,
    component: ComponentId,
    name: &str,
    settings: &Settings,
) -> Option<HorizontalPodAutoscaler> {
    let a = settings.autoscale.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: meta(install, component, name),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.into(),
            },
            min_replicas: Some(a.min),
            max_replicas: a.max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: None,
        },
        status: None,
    })
}

/// A PodDisruptionBudget over the given pod labels, when the settings ask for one.
pub fn pdb(
    install: &Installation,
    component: ComponentId,
    name: &str,
    settings: &Settings,
    selector: &BTreeMap<String, String>,
) -> Option<PodDisruptionBudget> {
    let p = settings.pdb.as_ref()?;
    let (min_available, max_unavailable) = match p {
        Pdb::MinAvailable(v) => (Some(v.clone()), None),
        Pdb::MaxUnavailable(v) => (None, Some(v.clone())),
    };
    Some(PodDisruptionBudget {
        metadata: meta(install, component, name),
        spec: Some(PodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
            selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        status: None,
    })
}

/// Pod labels: the selector labels plus the common labels.
pub fn pod_labels(
    install: &Installation,
    component: ComponentId,
    selector: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = labels(install, component);
    labels.extend(selector.clone());
    labels
}
