//! Pieces every component uses: metadata, labels, owner references, hardened security contexts,
//! autoscalers and disruption budgets.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::api::core::v1::{
    HTTPGetAction, Probe, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ComponentId, Rendered};
use crate::effective::{Installation, Pdb, Settings};
pub use crate::k8s::{env, field_env, mount, policy_rule, resource_env};

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

/// Metadata for a namespaced object of a component in the control-plane namespace.
pub fn meta(install: &Installation, component: ComponentId, name: &str) -> ObjectMeta {
    meta_in(install, component, name, &install.namespace)
}

/// Metadata for a namespaced object of a component in `namespace` (a gateway's may be another).
pub fn meta_in(
    install: &Installation,
    component: ComponentId,
    name: &str,
    namespace: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
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
    if let Some(owner) = owner_reference(install) {
        meta.owner_references = Some(vec![owner]);
    }
}

/// The controller reference to the MeshInstall, when its uid is known (not offline).
pub fn owner_reference(install: &Installation) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "meshop.dev/v1alpha1".into(),
        kind: "MeshInstall".into(),
        name: install.owner.name.clone(),
        uid: install.owner.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
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
    namespace: &str,
    settings: &Settings,
) -> Option<HorizontalPodAutoscaler> {
    let a = settings.autoscale.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: meta_in(install, component, name, namespace),
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
    namespace: &str,
    settings: &Settings,
    selector: &BTreeMap<String, String>,
) -> Option<PodDisruptionBudget> {
    let p = settings.pdb.as_ref()?;
    let (min_available, max_unavailable) = match p {
        Pdb::MinAvailable(v) => (Some(v.clone()), None),
        Pdb::MaxUnavailable(v) => (None, Some(v.clone())),
    };
    Some(PodDisruptionBudget {
        metadata: meta_in(install, component, name, namespace),
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

/// A ClusterRole and its binding to the component's ServiceAccount `account` in the control-plane
/// namespace, both named `name`.
pub fn cluster_role_for(
    install: &Installation,
    component: ComponentId,
    name: &str,
    account: &str,
    rules: Vec<PolicyRule>,
) -> [Rendered; 2] {
    [
        Rendered::new(
            component,
            &ClusterRole {
                metadata: cluster_meta(install, component, name),
                rules: Some(rules),
                aggregation_rule: None,
            },
        ),
        Rendered::new(
            component,
            &ClusterRoleBinding {
                metadata: cluster_meta(install, component, name),
                role_ref: role_ref("ClusterRole", name),
                subjects: Some(service_account_subject(install, account)),
            },
        ),
    ]
}

/// A Role and its binding to the component's ServiceAccount `name`, all three named alike, in
/// the control-plane namespace.
pub fn role_for(
    install: &Installation,
    component: ComponentId,
    name: &str,
    rules: Vec<PolicyRule>,
) -> [Rendered; 2] {
    role_for_in(install, component, name, &install.namespace, rules)
}

/// [`role_for`] in `namespace`.
pub fn role_for_in(
    install: &Installation,
    component: ComponentId,
    name: &str,
    namespace: &str,
    rules: Vec<PolicyRule>,
) -> [Rendered; 2] {
    [
        Rendered::new(
            component,
            &Role {
                metadata: meta_in(install, component, name, namespace),
                rules: Some(rules),
            },
        ),
        Rendered::new(
            component,
            &RoleBinding {
                metadata: meta_in(install, component, name, namespace),
                role_ref: role_ref("Role", name),
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some(namespace.into()),
                    api_group: None,
                }]),
            },
        ),
    ]
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}

fn service_account_subject(install: &Installation, account: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: account.into(),
        namespace: Some(install.namespace.clone()),
        api_group: None,
    }]
}

/// A ServiceAccount for a component in the control-plane namespace.
pub fn service_account(install: &Installation, component: ComponentId, name: &str) -> Rendered {
    service_account_in(install, component, name, &install.namespace)
}

/// A ServiceAccount for a component in `namespace`.
pub fn service_account_in(
    install: &Installation,
    component: ComponentId,
    name: &str,
    namespace: &str,
) -> Rendered {
    Rendered::new(
        component,
        &ServiceAccount {
            metadata: meta_in(install, component, name, namespace),
            ..Default::default()
        },
    )
}

/// A TCP Service over the selected pods; `ports` are (name, service port, container port).
pub fn service(
    install: &Installation,
    component: ComponentId,
    name: &str,
    type_: Option<&str>,
    selector: &BTreeMap<String, String>,
    ports: &[(&str, i32, i32)],
) -> Service {
    Service {
        metadata: meta(install, component, name),
        spec: Some(ServiceSpec {
            type_: type_.map(Into::into),
            selector: Some(selector.clone()),
            ports: Some(
                ports
                    .iter()
                    .map(|(port_name, port, target)| ServicePort {
                        name: Some(port_name.to_string()),
                        port: *port,
                        target_port: Some(IntOrString::Int(*target)),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// An HTTP GET probe on a container port.
pub fn http_probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The HorizontalPodAutoscaler and PodDisruptionBudget of a Deployment in `namespace`, as far as
/// the settings ask for them.
pub fn scaling_in(
    install: &Installation,
    component: ComponentId,
    name: &str,
    namespace: &str,
    settings: &Settings,
    selector: &BTreeMap<String, String>,
) -> Vec<Rendered> {
    let mut out = Vec::new();
    if let Some(hpa) = hpa(install, component, name, namespace, settings) {
        out.push(Rendered::new(component, &hpa));
    }
    if let Some(pdb) = pdb(install, component, name, namespace, settings, selector) {
        out.push(Rendered::new(component, &pdb));
    }
    out
}

/// Pod labels with `sidecar.istio.io/inject: "false"`: meshop's own components never get a sidecar.
/// A label, not the annotation Istio deprecated (istioctl analyze IST0135).
pub fn no_sidecar() -> BTreeMap<String, String> {
    BTreeMap::from([("sidecar.istio.io/inject".to_string(), "false".to_string())])
}
