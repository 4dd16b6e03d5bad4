//! The Istio CNI node agent: a DaemonSet that installs the CNI plugin on every node, so pods need
//! no privileged `istio-init` container (`injection.trafficCapture: cni`).
//!
//! Documented exception to meshop's hardening: the agent writes the CNI binary and configuration
//! into the node's host paths and programs pod network namespaces, so it runs as root with
//! `privileged: true` and host networking. Nothing else meshop deploys does.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, SecurityContext,
    Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{self, env, field_env, meta, mount, policy_rule, with_user_env};
use super::{ComponentId, Rendered};
use crate::effective::Installation;

const READ: &[&str] = &["get", "list", "watch"];
const C: ComponentId = ComponentId::Cni;
const NAME: &str = "istio-cni-node";

pub fn render(install: &Installation) -> Vec<Rendered> {
    let settings = &install.cni;
    let cluster_name = format!("{NAME}-{}", install.namespace);
    let selector = BTreeMap::from([("k8s-app".to_string(), NAME.to_string())]);
    let config = BTreeMap::from([
        ("CNI_NET_DIR".to_string(), "/etc/cni/net.d".to_string()),
        ("CHAINED_CNI_PLUGIN".to_string(), "true".to_string()),
        (
            "EXCLUDE_NAMESPACES".to_string(),
            format!("{},kube-system", install.namespace),
        ),
        ("REPAIR_ENABLED".to_string(), "true".to_string()),
        ("LOG_LEVEL".to_string(), "info".to_string()),
    ]);
    let host = |name: &str, path: &str| -> Volume {
        serde_json::from_value(json!({ "name": name, "hostPath": { "path": path } }))
            .expect("volume")
    };
    let our_env = vec![
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        env("REVISION", install.revision_label()),
    ];
    let container = Container {
        name: "install-cni".into(),
        image: Some(install.image("install-cni")),
        command: Some(vec!["install-cni".into()]),
        args: Some(vec!["--log_output_level=info".into()]),
        env: Some(with_user_env(our_env, settings)),
        env_from: Some(vec![
            serde_json::from_value(json!({ "configMapRef": { "name": "istio-cni-config" } }))
                .expect("envFrom"),
        ]),
        resources: Some(settings.resources.clone()),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(8000),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("cni-bin-dir", "/host/opt/cni/bin", false),
            mount("cni-net-dir", "/host/etc/cni/net.d", false),
            mount("cni-socket-dir", "/var/run/istio-cni", false),
            mount("cni-netns-dir", "/host/proc", false),
            mount("tmp", "/tmp", false),
        ]),
        ..Default::default()
    };
    let volumes = vec![
        host("cni-bin-dir", "/opt/cni/bin"),
        host("cni-net-dir", "/etc/cni/net.d"),
        host("cni-socket-dir", "/var/run/istio-cni"),
        host("cni-netns-dir", "/proc"),
        serde_json::from_value(json!({ "name": "tmp", "emptyDir": {} })).expect("volume"),
    ];
    // The agent must run on every node, tainted or not.
    let mut tolerations = vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }];
    tolerations.extend(settings.tolerations.clone().unwrap_or_default());
    let daemonset = DaemonSet {
        metadata: meta(install, C, NAME),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: None,
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common::no_sidecar(common::pod_labels(
                        install, C, &selector,
                    ))),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.into()),
                    host_network: Some(true),
                    priority_class_name: Some("system-node-critical".into()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    tolerations: Some(tolerations),
                    node_selector: settings.node_selector.clone(),
                    affinity: settings.affinity.clone(),
                    termination_grace_period_seconds: Some(5),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let rules = vec![
        policy_rule(&[""], &["pods", "nodes", "namespaces"], READ),
        policy_rule(&["apps"], &["daemonsets"], READ),
    ];
    let mut out = vec![common::service_account(install, C, NAME)];
    out.extend(common::cluster_role_for(
        install,
        C,
        &cluster_name,
        NAME,
        rules,
    ));
    out.push(Rendered::new(
        C,
        &ConfigMap {
            metadata: meta(install, C, "istio-cni-config"),
            data: Some(config),
            ..Default::default()
        },
    ));
    out.push(Rendered::new(C, &daemonset));
    out
}
