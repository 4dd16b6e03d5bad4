//! The Istio CNI node agent: a DaemonSet that installs the CNI plugin on every node, so pods need
//! no privileged `istio-init` container (`injection.trafficCapture: cni`).
//!
//! Documented exception to meshop's hardening: the agent writes the CNI binary and configuration
//! into the node's host paths and programs pod network namespaces, so it runs as root with
//! `privileged: true` and host networking. Nothing else meshop deploys does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, HTTPGetAction, PodSpec, Probe, SecurityContext,
    Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{self, env, field_env, meta, mount, policy_rule};
use super::workload::Workload;
use super::{ComponentId, Rendered};
use crate::effective::Installation;

const READ: &[&str] = &["get", "list", "watch"];
const C: ComponentId = ComponentId::Cni;
const NAME: &str = "istio-cni-node";
/// Where install-cni serves its metrics.
const MONITORING_PORT: i32 = 15014;

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
        env: Some(our_env),
        env_from: Some(vec![
            serde_json::from_value(json!({ "configMapRef": { "name": "istio-cni-config" } }))
                .expect("envFrom"),
        ]),
        // The agent's Prometheus metrics (install-cni's --monitoring-port, 15014 by default).
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: MONITORING_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
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
    // The agent must run on every node, tainted or not (the user's tolerations come after).
    let workload = Workload {
        install,
        component: C,
        name: NAME,
        namespace: &install.namespace,
        settings,
        selector,
        labels: common::no_sidecar(),
        annotations: BTreeMap::new(),
        pod: PodSpec {
            service_account_name: Some(NAME.into()),
            host_network: Some(true),
            containers: vec![container],
            volumes: Some(volumes),
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            termination_grace_period_seconds: Some(5),
            ..Default::default()
        },
        default_priority_class: Some("system-node-critical"),
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
    out.push(workload.daemon_set());
    out.extend(workload.network_policy());
    out
}
