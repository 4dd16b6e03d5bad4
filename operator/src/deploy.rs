//! The operator's own installation: RBAC generated from what meshop creates and grants, so it is
//! exactly as wide as needed and a test can check it never drifts (`make generate` regenerates
//! `deploy/rbac.yaml` and `deploy/crd.yaml`).
//!
//! Why the ClusterRole includes every permission that istiod's, the gateways' and the addons'
//! roles grant: Kubernetes refuses to let anyone create a Role granting permissions it does not
//! hold itself, unless it has the `escalate` and `bind` verbs, which would let meshop grant itself
//! anything. Holding the union is the narrower choice. There are no wildcard verbs or resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;

use crate::api::MeshInstallSpec;
use crate::effective::{Installation, Owner};
use crate::k8s::policy_rule;
use crate::render;

pub const OPERATOR_NAMESPACE: &str = "meshop-system";
pub const OPERATOR_NAME: &str = "meshop";
/// The Service in front of the operator's injection webhook (deploy/operator.yaml).
pub const WEBHOOK_SERVICE: &str = "meshop-webhook";

const MANAGE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// What meshop itself does with the API: its own resource, and every kind in
/// [`crate::kinds::MANAGED_KINDS`] (one rule per API group, so a kind added to the table is
/// granted here without a second list to keep in step).
fn own_rules() -> Vec<PolicyRule> {
    let mut rules = vec![
        policy_rule(
            &["meshop.dev"],
            &["meshinstalls"],
            &["get", "list", "watch", "update", "patch"],
        ),
        policy_rule(
            &["meshop.dev"],
            &["meshinstalls/status"],
            &["get", "update", "patch"],
        ),
        policy_rule(&["meshop.dev"], &["meshinstalls/finalizers"], &["update"]),
        // The webhook's view reads kubelet versions for sidecarMode auto.
        policy_rule(&[""], &["nodes"], &["list", "watch"]),
    ];
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for kind in crate::kinds::MANAGED_KINDS {
        match groups.iter_mut().find(|(g, _)| *g == kind.group) {
            Some((_, plurals)) => plurals.push(kind.plural),
            None => groups.push((kind.group, vec![kind.plural])),
        }
    }
    rules.extend(
        groups
            .into_iter()
            .map(|(group, plurals)| policy_rule(&[group], &plurals, MANAGE)),
    );
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

/// Every rule any rendered Role or ClusterRole grants (all components switched on).
fn granted_rules() -> Vec<PolicyRule> {
    let spec: MeshInstallSpec =
        serde_yaml::from_str("profile: demo\ncomponents: {cni: {enabled: true}}\n")
            .expect("static spec");
    let install = Installation::resolve(
        Owner {
            name: "rbac".into(),
            uid: None,
        },
        &spec,
    )
    .expect("demo resolves");
    let mut rules: Vec<PolicyRule> = Vec::new();
    for o in render::render(&install) {
        if matches!(o.kind(), "ClusterRole" | "Role") {
            let granted: Vec<PolicyRule> =
                serde_json::from_value(o.object.data["rules"].clone()).unwrap_or_default();
            for r in granted {
                if !rules.contains(&r) {
                    rules.push(r);
                }
            }
        }
    }
    rules
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
    rules.extend(granted_rules());
    ClusterRole {
        metadata: meta(OPERATOR_NAME, None),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// Namespace, ServiceAccount, ClusterRole + binding, and a Role + binding in the operator's own
/// namespace for its leader Lease and webhook certificate Secret.
pub fn rbac_yaml() -> String {
    let subject = vec![Subject {
        kind: "ServiceAccount".into(),
        name: OPERATOR_NAME.into(),
        namespace: Some(OPERATOR_NAMESPACE.into()),
        api_group: None,
    }];
    let role_ref = |kind: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: OPERATOR_NAME.into(),
    };
    let docs: Vec<serde_json::Value> = vec![
        serde_json::to_value(Namespace {
            metadata: meta(OPERATOR_NAMESPACE, None),
            ..Default::default()
        }),
        serde_json::to_value(ServiceAccount {
            metadata: meta(OPERATOR_NAME, Some(OPERATOR_NAMESPACE)),
            ..Default::default()
        }),
        serde_json::to_value(cluster_role()),
        serde_json::to_value(ClusterRoleBinding {
            metadata: meta(OPERATOR_NAME, None),
            role_ref: role_ref("ClusterRole"),
            subjects: Some(subject.clone()),
        }),
        serde_json::to_value(Role {
            metadata: meta(OPERATOR_NAME, Some(OPERATOR_NAMESPACE)),
            rules: Some(vec![
                policy_rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["get", "create", "update"],
                ),
                policy_rule(
                    &[""],
                    &["secrets"],
                    &["get", "list", "watch", "create", "update"],
                ),
            ]),
        }),
        serde_json::to_value(RoleBinding {
            metadata: meta(OPERATOR_NAME, Some(OPERATOR_NAMESPACE)),
            role_ref: role_ref("Role"),
            subjects: Some(subject),
        }),
    ]
    .into_iter()
    .map(|v| v.expect("RBAC objects serialize"))
    .collect();
    let mut out =
        String::from("# Generated by `meshop deploy-rbac` (make generate). Do not edit by hand.\n");
    out.push_str(&crate::yaml::documents(&docs).expect("RBAC objects serialize"));
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
            for verb in ["get", "list", "watch", "create", "patch", "delete"] {
                assert!(granted(verb), "{} {} not granted", verb, kind.plural);
            }
        }
    }

    #[test]
    fn workload_migration_is_granted_and_no_more() {
        let rules = cluster_role().rules.unwrap();
        let verbs = |group: &str, plural: &str| -> Vec<String> {
            let mut v: Vec<String> = rules
                .iter()
                .filter(|r| r.api_groups.iter().flatten().any(|g| g == group))
                .filter(|r| r.resources.iter().flatten().any(|p| p == plural))
                .flat_map(|r| r.verbs.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
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
