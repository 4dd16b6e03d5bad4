//! The Istio CNI node agent: a DaemonSet that installs the CNI plugin on every node, so pods need
//! no privileged `istio-init` container (`injection.trafficCapture: cni`), and, in ambient mode,
//! hands the network namespace of every pod ambient captures to ztunnel.
//!
//! Documented exception to meshop's hardening: the agent writes the CNI binary and configuration
//! into the node's host paths and programs pod network namespaces (and, through `/host/proc`,
//! the node's own), so it runs as root with NET_ADMIN, NET_RAW, SYS_PTRACE, SYS_ADMIN and
//! DAC_OVERRIDE and an unconfined AppArmor profile. As in Istio 1.26 and later, it is neither
//! privileged nor on the host network: it switches to the node's network namespace itself
//! (`ALLOW_SWITCH_TO_HOST_NS`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, ConfigMap, Container, ContainerPort, HTTPGetAction, PodSpec,
    Probe, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{self, env, field_env, meta, mount, policy_rule};
use super::workload::Workload;
use super::ztunnel::{SOCKET_DIR, linux_only, node_agent_tolerations};
use super::{ComponentId, Rendered};
use crate::effective::Installation;
use crate::k8s::resource_env_unit;

const C: ComponentId = ComponentId::Cni;
pub const NAME: &str = "istio-cni-node";
/// Where install-cni serves its metrics.
const MONITORING_PORT: i32 = 15014;
/// The label that enrolls a namespace or pod in ambient mode (`none` opts a pod out).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";

/// Which pods ambient captures (`AMBIENT_ENABLEMENT_SELECTOR`, a list of label selectors of which
/// any may match): a pod labelled ambient, or a pod of a namespace labelled ambient that has not
/// opted out. A pod with a sidecar is never captured (the agent checks that itself).
fn enablement_selector() -> String {
    let selectors = json!([
        { "podSelector": { "matchLabels": { DATAPLANE_MODE_LABEL: "ambient" } } },
        {
            "namespaceSelector": { "matchLabels": { DATAPLANE_MODE_LABEL: "ambient" } },
            "podSelector": { "matchExpressions": [
                { "key": DATAPLANE_MODE_LABEL, "operator": "NotIn", "values": ["none"] }
            ] }
        }
    ]);
    crate::yaml::to_string(&selectors).expect("a static selector serializes")
}

/// The agent's configuration (ConfigMap istio-cni-config, read as its environment).
fn config(install: &Installation) -> BTreeMap<String, String> {
    let ambient = &install.ambient;
    let flag = |b: bool| b.to_string();
    [
        ("CHAINED_CNI_PLUGIN", "true".to_string()),
        // The plugin is added to the node's existing CNI configuration, not given its own file.
        ("ISTIO_OWNED_CNI_CONFIG", "false".to_string()),
        // Pods of these namespaces are never redirected: the node's own, and the control
        // plane's (meshop's gateways, istiod and ztunnel run there without a sidecar).
        (
            "EXCLUDE_NAMESPACES",
            format!("{},kube-system", install.namespace),
        ),
        ("CURRENT_AGENT_VERSION", install.version.clone()),
        ("AMBIENT_ENABLED", flag(ambient.enabled)),
        ("AMBIENT_ENABLEMENT_SELECTOR", enablement_selector()),
        ("AMBIENT_DNS_CAPTURE", flag(ambient.dns_capture)),
        ("AMBIENT_IPV6", flag(ambient.ipv6)),
        (
            "AMBIENT_RECONCILE_POD_RULES_ON_STARTUP",
            flag(ambient.reconcile_on_startup),
        ),
        ("ENABLE_AMBIENT_DETECTION_RETRY", "false".to_string()),
        ("NATIVE_NFTABLES", "false".to_string()),
        // Repair: a sidecar pod that started before the plugin was in place has no redirection;
        // the agent finds it by its failing istio-validation init container and fixes its
        // network namespace in place (neither labelling nor deleting it).
        ("REPAIR_ENABLED", "true".to_string()),
        ("REPAIR_REPAIR_PODS", "true".to_string()),
        ("REPAIR_DELETE_PODS", "false".to_string()),
        ("REPAIR_LABEL_PODS", "false".to_string()),
        (
            "REPAIR_BROKEN_POD_LABEL_KEY",
            "cni.istio.io/uninitialized".to_string(),
        ),
        ("REPAIR_BROKEN_POD_LABEL_VALUE", "true".to_string()),
        ("REPAIR_INIT_CONTAINER_NAME", "istio-validation".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The agent's rights: what it watches, the events of repair, and in ambient mode the status
/// of the pods it captures and its own DaemonSet (to tell an upgrade from a removal).
fn rules(install: &Installation) -> Vec<PolicyRule> {
    let mut rules = vec![
        policy_rule(
            &[""],
            &["pods", "nodes", "namespaces"],
            &["get", "list", "watch"],
        ),
        policy_rule(&[""], &["events"], &["create", "patch"]),
    ];
    if install.ambient.enabled {
        rules.push(policy_rule(&[""], &["pods/status"], &["patch", "update"]));
        rules.push(PolicyRule {
            resource_names: Some(vec![NAME.to_string()]),
            ..policy_rule(&["apps"], &["daemonsets"], &["get"])
        });
    }
    rules
}

pub fn render(install: &Installation) -> Vec<Rendered> {
    let settings = &install.cni;
    let cluster_name = format!("{NAME}-{}", install.namespace);
    let selector = BTreeMap::from([("k8s-app".to_string(), NAME.to_string())]);
    let host = |name: &str, path: &str, type_: Option<&str>| -> Volume {
        let mut host_path = json!({ "path": path });
        if let Some(t) = type_ {
            host_path["type"] = json!(t);
        }
        serde_json::from_value(json!({ "name": name, "hostPath": host_path })).expect("volume")
    };
    let our_env = vec![
        field_env("REPAIR_NODE_NAME", "spec.nodeName"),
        env("REPAIR_RUN_AS_DAEMON", "true"),
        env("REPAIR_SIDECAR_ANNOTATION", "sidecar.istio.io/status"),
        // Not on the host network: the agent enters the node's network namespace itself.
        env("ALLOW_SWITCH_TO_HOST_NS", "true"),
        field_env("NODE_NAME", "spec.nodeName"),
        resource_env_unit("GOMEMLIMIT", "limits.memory"),
        resource_env_unit("GOMAXPROCS", "limits.cpu"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    let mut mounts = vec![
        mount("cni-bin-dir", "/host/opt/cni/bin", false),
        mount("cni-host-procfs", "/host/proc", true),
        mount("cni-net-dir", "/host/etc/cni/net.d", false),
        mount("cni-socket-dir", "/var/run/istio-cni", false),
    ];
    let mut volumes = vec![
        host("cni-bin-dir", "/opt/cni/bin", None),
        host("cni-host-procfs", "/proc", Some("Directory")),
        host("cni-net-dir", "/etc/cni/net.d", None),
        host("cni-socket-dir", "/var/run/istio-cni", None),
    ];
    if install.ambient.enabled {
        // Pods' network namespaces, as the node's runtime mounts them, and the socket on which
        // the agent hands them to ztunnel.
        mounts.push(VolumeMount {
            mount_propagation: Some("HostToContainer".into()),
            ..mount("cni-netns-dir", "/host/var/run/netns", false)
        });
        mounts.push(mount("cni-ztunnel-sock-dir", SOCKET_DIR, false));
        volumes.push(host(
            "cni-netns-dir",
            "/var/run/netns",
            Some("DirectoryOrCreate"),
        ));
        volumes.push(host(
            "cni-ztunnel-sock-dir",
            SOCKET_DIR,
            Some("DirectoryOrCreate"),
        ));
    }
    let mut args = vec![format!("--log_output_level={}", install.global.log_level)];
    if install.global.log_as_json {
        args.push("--log_as_json".into());
    }
    let container = Container {
        name: "install-cni".into(),
        image: Some(install.image("install-cni")),
        command: Some(vec!["install-cni".into()]),
        args: Some(args),
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
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                add: Some(
                    [
                        "NET_ADMIN",
                        "NET_RAW",
                        "SYS_PTRACE",
                        "SYS_ADMIN",
                        "DAC_OVERRIDE",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                drop: Some(vec!["ALL".into()]),
            }),
            app_armor_profile: Some(AppArmorProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut labels = common::no_sidecar();
    // The agent is never captured by ambient.
    labels.insert(DATAPLANE_MODE_LABEL.into(), "none".into());
    let workload = Workload {
        install,
        component: C,
        name: NAME,
        namespace: &install.namespace,
        settings,
        selector,
        labels,
        annotations: BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            (
                "prometheus.io/port".to_string(),
                MONITORING_PORT.to_string(),
            ),
            ("prometheus.io/path".to_string(), "/metrics".to_string()),
            ("sidecar.istio.io/inject".to_string(), "false".to_string()),
        ]),
        pod: PodSpec {
            service_account_name: Some(NAME.into()),
            containers: vec![container],
            volumes: Some(volumes),
            node_selector: Some(linux_only()),
            // The agent must run on every node pods run on (the user's tolerations come after).
            tolerations: Some(node_agent_tolerations()),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        },
        default_priority_class: Some("system-node-critical"),
    };
    let mut out = vec![common::service_account(install, C, NAME)];
    out.extend(common::cluster_role_for(
        install,
        C,
        &cluster_name,
        NAME,
        rules(install),
    ));
    out.push(Rendered::new(
        C,
        &ConfigMap {
            metadata: meta(install, C, "istio-cni-config"),
            data: Some(config(install)),
            ..Default::default()
        },
    ));
    out.push(workload.daemon_set());
    out.extend(workload.network_policy());
    out
}
