//! The operator's own installation: RBAC generated from what meshop creates and grants
//! (`make generate` regenerates `deploy/rbac.yaml` and `deploy/crd.yaml`). What it uses itself
//! ([`own_rules`]) is checked against the API server's audit log by tests/tests/rbac.rs: every
//! grant used in a full scenario but for a short list with reasons.
//!
//! Why meshop holds every permission that istiod's, the gateways' and the addons' roles grant:
//! Kubernetes refuses to let anyone create a role granting permissions it does not hold itself,
//! unless it has the `escalate` and `bind` verbs, which would let meshop grant itself anything.
//! Holding them is the narrower choice. There are no wildcard verbs or resources.
//!
//! Where meshop holds them: what the rendered ClusterRoles grant, in the operator's ClusterRole
//! (so Secrets are readable cluster-wide: istiod's ClusterRole reads gateway credentials
//! anywhere); what the rendered Roles grant (istiod's Secret writes for its CA, its Leases), only
//! in the control-plane namespaces the installer names ([`control_plane_objects`]; deploy/
//! grants `istio-system`, the chart's `controlPlaneNamespaces`). A MeshInstall naming any other
//! namespace is reported `NamespaceNotGranted` until the installer grants it. Those namespaces
//! are the installer's: meshop never deletes one that carries [`LABEL_CONTROL_PLANE`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;
use serde_json::{Value, json};

use crate::api::MeshInstallSpec;
use crate::effective::{Installation, Owner};
use crate::k8s::policy_rule;
use crate::render;

pub const OPERATOR_NAMESPACE: &str = "meshop-system";
pub const OPERATOR_NAME: &str = "meshop";
/// The Service in front of the operator's injection webhook (deploy/operator.yaml).
pub const WEBHOOK_SERVICE: &str = "meshop-webhook";
/// The Role (and its binding) that lets meshop install a control plane in one namespace.
pub const CONTROL_PLANE_ROLE: &str = "meshop-control-plane";
/// The control-plane namespaces deploy/ grants (the chart's `controlPlaneNamespaces` default).
pub const DEFAULT_CONTROL_PLANE_NAMESPACES: &[&str] = &["istio-system"];
/// Marks a namespace the installer created and granted to meshop: meshop installs into it and
/// never deletes it (the grant lives there).
pub const LABEL_CONTROL_PLANE: &str = "meshop.dev/control-plane";

/// What meshop does with every managed kind: server-side apply (`patch`; `create` too when the
/// apply creates the object, which the API server authorizes without a separate request), list
/// (prune, cleanup) and delete. `watch` only for the kinds marked `watched`. No `get` and no
/// `update`: meshop never reads one object back or replaces one (tests/tests/rbac.rs proves the
/// list against the API server's audit log).
const MANAGE: &[&str] = &["list", "create", "patch", "delete"];

/// What meshop itself does with the API: its own resource, and every kind in
/// [`crate::kinds::MANAGED_KINDS`] (one rule per API group and verb set, so a kind added to the
/// table is granted here without a second list to keep in step).
pub fn own_rules() -> Vec<PolicyRule> {
    let mut rules = vec![
        policy_rule(
            &["meshop.dev"],
            &["meshinstalls"],
            &["list", "watch", "patch"],
        ),
        policy_rule(&["meshop.dev"], &["meshinstalls/status"], &["patch"]),
        // Owner references with blockOwnerDeletion need it where the
        // OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift); see
        // tests/tests/rbac.rs's exceptions.
        policy_rule(&["meshop.dev"], &["meshinstalls/finalizers"], &["update"]),
        // The webhook's view reads kubelet versions for sidecarMode auto.
        policy_rule(&[""], &["nodes"], &["list", "watch"]),
        // `meshop run` checks that the MeshInstall CRD and its own namespace exist.
        policy_rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            &["get"],
        ),
        policy_rule(&[""], &["namespaces"], &["get"]),
    ];
    let mut groups: Vec<(&str, bool, Vec<&str>)> = Vec::new();
    for kind in crate::kinds::MANAGED_KINDS {
        if kind.plural == "namespaces" {
            // Control-plane namespaces exist before meshop installs into them: the installer
            // creates each with its grant (control_plane_objects), and meshop never deletes a
            // granted one. meshop only labels them (an apply, which patches) and lists them.
            rules.push(policy_rule(
                &[kind.group],
                &[kind.plural],
                &["list", "patch"],
            ));
            continue;
        }
        match groups
            .iter_mut()
            .find(|(g, w, _)| *g == kind.group && *w == kind.watched)
        {
            Some((_, _, plurals)) => plurals.push(kind.plural),
            None => groups.push((kind.group, kind.watched, vec![kind.plural])),
        }
    }
    for (group, watched, plurals) in groups {
        let mut verbs = MANAGE.to_vec();
        if watched {
            verbs.insert(1, "watch");
        }
        rules.push(policy_rule(&[group], &plurals, &verbs));
    }
    // An object with fields set only at creation (istiod's validating webhook's failurePolicy) is
    // looked up before it is applied (controller::apply).
    let initial: Vec<&str> = crate::kinds::MANAGED_KINDS
        .iter()
        .filter(|k| k.plural == "validatingwebhookconfigurations")
        .map(|k| k.plural)
        .collect();
    if !initial.is_empty() {
        rules.push(policy_rule(
            &["admissionregistration.k8s.io"],
            &initial,
            &["get"],
        ));
    }
    // Revision-based upgrades list proxies' pods and restart application workloads.
    rules.extend(
        crate::kinds::MIGRATION_ACCESS
            .iter()
            .filter(|a| {
                !crate::kinds::MANAGED_KINDS
                    .iter()
                    .any(|k| k.plural == a.plural)
            })
            .map(|a| policy_rule(&[a.group], &[a.plural], a.verbs)),
    );
    rules.push(policy_rule(
        &["events.k8s.io"],
        &["events"],
        &["create", "patch"],
    ));
    rules
}

/// Every rule the rendered ClusterRoles grant (all components switched on): meshop holds these
/// cluster-wide only so that it may create those ClusterRoles.
pub fn granted_cluster_rules() -> Vec<PolicyRule> {
    granted_rules("ClusterRole")
}

/// Every rule the rendered Roles grant (all in the control-plane namespace): meshop holds these
/// only in the granted control-plane namespaces ([`control_plane_objects`]).
pub fn granted_namespace_rules() -> Vec<PolicyRule> {
    granted_rules("Role")
}

fn granted_rules(kind: &str) -> Vec<PolicyRule> {
    // Sidecar mode with every component, and ambient mode (the CNI agent's ambient rights and
    // istiod's waypoint deployment): between them, every rule meshop renders.
    let installs = [
        "profile: demo\ncomponents: {cni: {enabled: true}}\n",
        "profile: ambient\n",
    ]
    .map(|yaml| {
        let spec: MeshInstallSpec = serde_yaml::from_str(yaml).expect("static spec");
        Installation::resolve(
            Owner {
                name: "rbac".into(),
                uid: None,
            },
            &spec,
        )
        .expect("static spec resolves")
    });
    let mut rules: Vec<PolicyRule> = Vec::new();
    let objects = installs
        .iter()
        .flat_map(|i| render::render(i).expect("a spec without overlays renders"));
    for o in objects {
        if o.kind() == kind {
            let granted: Vec<PolicyRule> =
                serde_json::from_value(o.object.data["rules"].clone()).unwrap_or_default();
            for mut r in granted {
                // A rule on one named object (istiod's own validating webhook configuration) is
                // named after the install's namespace and revision, which any MeshInstall
                // chooses: meshop must hold it for every name.
                r.resource_names = None;
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
    }
    rules
}

/// What an installer applies to let meshop install control planes into `namespace`: the
/// Namespace (marked [`LABEL_CONTROL_PLANE`], so meshop never deletes it) and a Role with every
/// rule the rendered Roles grant, bound to meshop's ServiceAccount in `operator_namespace`.
pub fn control_plane_objects(namespace: &str, operator_namespace: &str) -> Vec<Value> {
    let mut ns_meta = meta(namespace, None);
    ns_meta
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_CONTROL_PLANE.into(), "granted".into());
    let docs = [
        serde_json::to_value(Namespace {
            metadata: ns_meta,
            ..Default::default()
        }),
        serde_json::to_value(Role {
            metadata: meta(CONTROL_PLANE_ROLE, Some(namespace)),
            rules: Some(granted_namespace_rules()),
        }),
        serde_json::to_value(RoleBinding {
            metadata: meta(CONTROL_PLANE_ROLE, Some(namespace)),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: CONTROL_PLANE_ROLE.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: OPERATOR_NAME.into(),
                namespace: Some(operator_namespace.into()),
                api_group: None,
            }]),
        }),
    ];
    docs.into_iter()
        .map(|v| v.expect("RBAC objects serialize"))
        .collect()
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                OPERATOR_NAME.to_string(),
            ),
            (
                "app.kubernetes.io/part-of".to_string(),
                "meshop".to_string(),
            ),
        ])),
        ..Default::default()
    }
}

/// The operator's ClusterRole.
pub fn cluster_role() -> ClusterRole {
    let mut rules = own_rules();
    for r in granted_cluster_rules() {
        if !rules.contains(&r) {
            rules.push(r);
        }
    }
    ClusterRole {
        metadata: meta(OPERATOR_NAME, None),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// Namespace, ServiceAccount, ClusterRole + binding, a Role + binding in the operator's own
/// namespace for its leader Lease and webhook certificate Secret, and the grant of each default
/// control-plane namespace.
pub fn rbac_yaml() -> String {
    let mut out =
        String::from("# Generated by `meshop deploy-rbac` (make generate). Do not edit by hand.\n");
    let mut objects = rbac_objects(OPERATOR_NAMESPACE, true);
    for ns in DEFAULT_CONTROL_PLANE_NAMESPACES {
        objects.extend(control_plane_objects(ns, OPERATOR_NAMESPACE));
    }
    out.push_str(&crate::yaml::documents(&objects).expect("RBAC objects serialize"));
    out
}

/// The operator's RBAC objects with their namespace references set to `namespace` (the Helm
/// chart passes a template marker), with or without the Namespace object itself.
pub fn rbac_objects(namespace: &str, with_namespace: bool) -> Vec<serde_json::Value> {
    let subject = vec![Subject {
        kind: "ServiceAccount".into(),
        name: OPERATOR_NAME.into(),
        namespace: Some(namespace.into()),
        api_group: None,
    }];
    let role_ref = |kind: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: OPERATOR_NAME.into(),
    };
    let mut docs = Vec::new();
    if with_namespace {
        docs.push(serde_json::to_value(Namespace {
            metadata: meta(namespace, None),
            ..Default::default()
        }));
    }
    docs.extend([
        serde_json::to_value(ServiceAccount {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            ..Default::default()
        }),
        serde_json::to_value(cluster_role()),
        serde_json::to_value(ClusterRoleBinding {
            metadata: meta(OPERATOR_NAME, None),
            role_ref: role_ref("ClusterRole"),
            subjects: Some(subject.clone()),
        }),
        serde_json::to_value(Role {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            rules: Some(vec![
                policy_rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["get", "create", "update"],
                ),
                // The webhook's certificate: read, created once, renewed (webhook::store).
                policy_rule(&[""], &["secrets"], &["get", "create", "update"]),
            ]),
        }),
        serde_json::to_value(RoleBinding {
            metadata: meta(OPERATOR_NAME, Some(namespace)),
            role_ref: role_ref("Role"),
            subjects: Some(subject),
        }),
    ]);
    docs.into_iter()
        .map(|v| v.expect("RBAC objects serialize"))
        .collect()
}

/// The settings of the operator's Deployment that an installer chooses. `deploy/operator.yaml`
/// uses [`Workload::defaults`]; the Helm chart puts template markers in their place, so both come
/// from [`operator_objects`] and cannot drift apart.
pub struct Workload {
    pub namespace: String,
    pub image: Value,
    pub image_pull_policy: Value,
    pub replicas: Value,
    pub rust_log: Value,
    pub log_format: Value,
    pub resources: Value,
    pub affinity: Value,
    pub min_available: Value,
    /// Extra entries of every object's labels (the chart's release labels).
    pub extra_labels: Vec<(String, Value)>,
    /// Extra entries of the pod spec (the chart's optional node placement and pull secrets).
    pub extra_pod_spec: Vec<(String, Value)>,
    /// Extra entries of the pod template's annotations (the chart's podAnnotations).
    pub extra_pod_annotations: Vec<(String, Value)>,
}

/// The image `deploy/operator.yaml` names (and the chart's default tag is the chart's appVersion).
pub const IMAGE_REPOSITORY: &str = "meshop";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Ports of `meshop run` (its defaults): health and metrics, and the HTTPS webhook.
pub const METRICS_PORT: u16 = 8080;
pub const WEBHOOK_PORT: u16 = 9443;

impl Workload {
    /// What `deploy/operator.yaml` ships: two replicas (one leads, both serve the webhook).
    pub fn defaults() -> Workload {
        Workload {
            namespace: OPERATOR_NAMESPACE.into(),
            image: json!(format!("{IMAGE_REPOSITORY}:{VERSION}")),
            image_pull_policy: json!("IfNotPresent"),
            replicas: json!(2),
            rust_log: json!(DEFAULT_RUST_LOG),
            log_format: json!("json"),
            resources: default_resources(),
            affinity: default_affinity(),
            min_available: json!(1),
            extra_labels: Vec::new(),
            extra_pod_spec: Vec::new(),
            extra_pod_annotations: Vec::new(),
        }
    }
}

/// The log filter the operator runs with unless told otherwise.
pub const DEFAULT_RUST_LOG: &str = "info,kube=warn";

pub fn default_resources() -> Value {
    json!({ "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "256Mi" } })
}

/// Replicas on different nodes when the cluster has them.
pub fn default_affinity() -> Value {
    json!({ "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": { "matchLabels": { "app.kubernetes.io/name": OPERATOR_NAME } }
        }
    }] } })
}

fn labels(w: &Workload) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": OPERATOR_NAME,
        "app.kubernetes.io/part-of": "meshop",
    });
    for (k, v) in &w.extra_labels {
        labels[k] = v.clone();
    }
    labels
}

/// The operator's Deployment, PodDisruptionBudget and Services (webhook and metrics).
pub fn operator_objects(w: &Workload) -> Vec<Value> {
    let selector = json!({ "app.kubernetes.io/name": OPERATOR_NAME });
    let hardened = json!({
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    let mut annotations = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": METRICS_PORT.to_string(),
        // Istio reads the annotation too; meshop's webhooks read the label below.
        "sidecar.istio.io/inject": "false",
    });
    // The operator's own pods never get a sidecar: the injection webhooks' object selectors leave
    // out pods with this label (and their namespace selectors the operator's namespace), so a new
    // operator pod never waits on the webhook only a running operator pod serves.
    let mut pod_labels = labels(w);
    pod_labels["sidecar.istio.io/inject"] = json!("false");
    for (k, v) in &w.extra_pod_annotations {
        annotations[k] = v.clone();
    }
    let mut pod_spec = json!({
        "serviceAccountName": OPERATOR_NAME,
        "automountServiceAccountToken": true,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "affinity": w.affinity,
        "containers": [{
            "name": OPERATOR_NAME,
            "image": w.image,
            "imagePullPolicy": w.image_pull_policy,
            "args": ["run", "--log-format", w.log_format],
            "env": [
                { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                { "name": "RUST_LOG", "value": w.rust_log },
            ],
            "ports": [
                { "name": "http-metrics", "containerPort": METRICS_PORT, "protocol": "TCP" },
                { "name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP" },
            ],
            "livenessProbe": { "httpGet": { "path": "/livez", "port": "http-metrics" }, "periodSeconds": 10 },
            "readinessProbe": { "httpGet": { "path": "/readyz", "port": "http-metrics" }, "periodSeconds": 5 },
            "resources": w.resources,
            "securityContext": hardened,
        }],
    });
    for (k, v) in &w.extra_pod_spec {
        pod_spec[k] = v.clone();
    }
    let metadata =
        |name: &str| json!({ "name": name, "namespace": w.namespace, "labels": labels(w) });
    let service = |name: &str, component: &str, port: u16, target: &str| {
        let mut metadata = metadata(name);
        metadata["labels"]["app.kubernetes.io/component"] = json!(component);
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {
                "selector": selector,
                "ports": [{ "name": target, "port": port, "targetPort": target, "protocol": "TCP" }],
            },
        })
    };
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(OPERATOR_NAME),
            "spec": {
                "replicas": w.replicas,
                "selector": { "matchLabels": selector },
                // A new replica is ready before an old one goes: the webhook never has no backend.
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } },
                "template": {
                    "metadata": { "labels": pod_labels, "annotations": annotations },
                    "spec": pod_spec,
                },
            },
        }),
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(OPERATOR_NAME),
            "spec": { "minAvailable": w.min_available, "selector": { "matchLabels": selector } },
        }),
        // The sidecar injection webhook, called by the API server over TLS.
        service(WEBHOOK_SERVICE, "webhook", 443, "https-webhook"),
        service("meshop-metrics", "metrics", METRICS_PORT, "http-metrics"),
    ]
}

/// The labels that pick the metrics Service (a ServiceMonitor selects by them).
pub fn metrics_service_selector() -> Value {
    json!({ "app.kubernetes.io/name": OPERATOR_NAME, "app.kubernetes.io/component": "metrics" })
}

/// deploy/operator.yaml.
pub fn operator_yaml() -> String {
    let mut out = String::from(
        "# Generated by `make generate` from meshop::deploy (the Helm chart comes from the same code).\n\
         # The operator: two replicas (one leads through a Lease, both serve the webhook and health),\n\
         # hardened, with probes. Set your image with `kustomize edit set image meshop=<registry>/meshop:<tag>`.\n",
    );
    out.push_str(
        &crate::yaml::documents(&operator_objects(&Workload::defaults()))
            .expect("operator objects serialize"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards() {
        for r in cluster_role().rules.unwrap() {
            assert!(!r.verbs.iter().any(|v| v == "*"), "{r:?}");
            assert!(
                !r.resources
                    .unwrap_or_default()
                    .iter()
                    .any(|v| v.contains('*')),
                "wildcard resource"
            );
            assert!(!r.verbs.iter().any(|v| v == "escalate" || v == "bind"));
        }
    }

    fn verbs_on(rules: &[PolicyRule], group: &str, plural: &str) -> Vec<String> {
        let mut v: Vec<String> = rules
            .iter()
            .filter(|r| r.api_groups.iter().flatten().any(|g| g == group))
            .filter(|r| r.resources.iter().flatten().any(|p| p == plural))
            .flat_map(|r| r.verbs.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn secrets_are_written_only_in_granted_namespaces() {
        // Namespaces are the installer's to create and delete.
        let namespaces = verbs_on(&cluster_role().rules.unwrap(), "", "namespaces");
        assert_eq!(namespaces, ["get", "list", "patch", "watch"]);
        // Cluster-wide: list and watch only (istiod's ClusterRole: gateway credentials anywhere).
        let cluster = verbs_on(&cluster_role().rules.unwrap(), "", "secrets");
        assert_eq!(cluster, ["list", "watch"]);
        // Writes come with the grant of a control-plane namespace, and only there.
        let objects = control_plane_objects("mesh-a", "ops");
        let role: Role = serde_json::from_value(objects[1].clone()).unwrap();
        assert_eq!(role.metadata.namespace.as_deref(), Some("mesh-a"));
        let granted = verbs_on(&role.rules.unwrap(), "", "secrets");
        for verb in ["create", "update"] {
            assert!(granted.iter().any(|g| g == verb), "{verb}: {granted:?}");
        }
        let binding: RoleBinding = serde_json::from_value(objects[2].clone()).unwrap();
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            (OPERATOR_NAME, Some("ops"))
        );
        assert_eq!(
            objects[0]["metadata"]["labels"][LABEL_CONTROL_PLANE],
            "granted"
        );
        // The operator's own namespace Role: only the webhook certificate's Secret verbs.
        let own_ns: Vec<Role> = rbac_objects("ops", false)
            .into_iter()
            .filter(|o| o["kind"] == "Role")
            .map(|o| serde_json::from_value(o).unwrap())
            .collect();
        assert_eq!(own_ns.len(), 1);
        assert_eq!(
            verbs_on(own_ns[0].rules.as_ref().unwrap(), "", "secrets"),
            ["create", "get", "update"]
        );
    }

    #[test]
    fn every_managed_kind_is_granted() {
        let rules = cluster_role().rules.unwrap();
        for kind in crate::kinds::MANAGED_KINDS {
            let granted = |verb: &str| {
                rules.iter().any(|r| {
                    r.api_groups.iter().flatten().any(|g| g == kind.group)
                        && r.resources.iter().flatten().any(|p| p == kind.plural)
                        && r.verbs.iter().any(|v| v == verb)
                })
            };
            let verbs: &[&str] = if kind.plural == "namespaces" {
                &["list", "patch"]
            } else {
                &["list", "create", "patch", "delete"]
            };
            for verb in verbs {
                assert!(granted(verb), "{} {} not granted", verb, kind.plural);
            }
            if kind.watched {
                assert!(granted("watch"), "watch {} not granted", kind.plural);
            }
        }
    }

    #[test]
    fn workload_migration_is_granted_and_no_more() {
        let rules = cluster_role().rules.unwrap();
        let verbs = |group: &str, plural: &str| verbs_on(&rules, group, plural);
        for a in crate::kinds::MIGRATION_ACCESS {
            let granted = verbs(a.group, a.plural);
            for verb in a.verbs {
                assert!(granted.iter().any(|g| g == verb), "{verb} {}", a.plural);
            }
        }
        // StatefulSets are only ever read and restarted, never created, replaced or deleted.
        let sts = verbs("apps", "statefulsets");
        assert!(sts.contains(&"patch".to_string()), "{sts:?}");
        for verb in ["create", "update", "delete", "deletecollection"] {
            assert!(!sts.iter().any(|v| v == verb), "{verb} statefulsets");
        }
    }
}
