//! ztunnel: ambient mode's node proxy, a DaemonSet. On each node it takes over the network
//! namespace of every pod the CNI agent captures (handed over on the socket in
//! `/var/run/ztunnel`), and carries the pod's traffic over HBONE with mutual TLS, with a
//! certificate per workload identity that istiod signs.
//!
//! Documented exception to meshop's hardening: ztunnel enters pod network namespaces and
//! programs them, so it runs as root with NET_ADMIN, SYS_ADMIN and NET_RAW (every other
//! capability dropped, root filesystem read-only, not privileged, not on the host network).
//! SYS_ADMIN forces privilege escalation on, so the context says so rather than asking for what
//! the kubelet cannot give. It needs no Kubernetes API rights: everything comes from istiod over
//! xDS, authenticated by its ServiceAccount token (audience istio-ca), which istiod trusts to ask
//! for other identities' certificates on its node (`CA_TRUSTED_NODE_ACCOUNTS`).
//!
//! Istio runs one ztunnel per cluster, whatever the number of control-plane revisions: it follows
//! the newest revision's istiod (see docs/ambient.md).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PodSpec, SecurityContext, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{self, env, field_env, http_probe, mount};
use super::workload::Workload;
use super::{ComponentId, Rendered};
use crate::effective::Installation;
use crate::k8s::resource_env_unit;

const C: ComponentId = ComponentId::Ztunnel;
pub const NAME: &str = "ztunnel";
/// ztunnel's Prometheus metrics.
pub const STATS_PORT: i32 = 15020;
/// ztunnel's readiness endpoint.
pub const READINESS_PORT: i32 = 15021;
/// Where the CNI agent and ztunnel meet on the node: the agent's socket for handing over pods.
pub const SOCKET_DIR: &str = "/var/run/ztunnel";
/// The group ztunnel runs as (Istio's proxy group, so its own traffic is recognised).
const PROXY_GID: i64 = 1337;

/// ztunnel's `RUST_LOG` from `spec.global.logLevel` (Istio's `<scope>:<level>` list): the level
/// of `default`, else of the first scope; Istio's scope names mean nothing to ztunnel.
fn rust_log(install: &Installation) -> String {
    let scopes: Vec<(&str, &str)> = install
        .global
        .log_level
        .split(',')
        .filter_map(|s| s.split_once(':'))
        .collect();
    let level = scopes
        .iter()
        .find(|(scope, _)| *scope == "default")
        .or(scopes.first())
        .map_or("info", |(_, level)| *level);
    // Istio's levels that Rust's log crate names differently.
    match level {
        "none" => "off",
        "fatal" => "error",
        other => other,
    }
    .to_string()
}

/// The node tolerations Istio gives its node agents: every NoSchedule and NoExecute taint and
/// CriticalAddonsOnly, so the mesh's node proxy runs wherever pods do.
pub(super) fn node_agent_tolerations() -> Vec<Toleration> {
    [
        (None, Some("NoSchedule")),
        (Some("CriticalAddonsOnly"), None),
        (None, Some("NoExecute")),
    ]
    .into_iter()
    .map(|(key, effect)| Toleration {
        key: key.map(String::from),
        effect: effect.map(String::from),
        operator: Some("Exists".into()),
        ..Default::default()
    })
    .collect()
}

pub(super) fn linux_only() -> BTreeMap<String, String> {
    BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())])
}

pub fn render(install: &Installation) -> Vec<Rendered> {
    let selector = BTreeMap::from([("app".to_string(), NAME.to_string())]);
    let mut labels = common::no_sidecar();
    // ztunnel is never captured by itself.
    labels.insert("istio.io/dataplane-mode".into(), "none".into());
    let istiod = install.discovery_address();
    let mut our_env = vec![
        env("CA_ADDRESS", istiod.clone()),
        env("XDS_ADDRESS", istiod),
    ];
    if install.global.log_as_json {
        our_env.push(env("LOG_FORMAT", "json"));
    }
    if let Some(network) = &install.global.network {
        our_env.push(env("NETWORK", network.clone()));
    }
    our_env.extend([
        env("RUST_LOG", rust_log(install)),
        // A panic's backtrace in the log, as Istio's chart asks.
        env("RUST_BACKTRACE", "1"),
        env("ISTIO_META_CLUSTER_ID", install.global.cluster_id.clone()),
        // Pods are captured from inside their own network namespace (the CNI agent hands them
        // over), not by node-wide redirection.
        env("INPOD_ENABLED", "true"),
        env(
            "TERMINATION_GRACE_PERIOD_SECONDS",
            GRACE_SECONDS.to_string(),
        ),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ]);
    // The mesh's proxy metadata, as for every proxy (Istio's chart passes
    // meshConfig.defaultConfig.proxyMetadata the same way, in key order); ztunnel always speaks
    // HBONE.
    let metadata = install
        .mesh
        .config
        .get("defaultConfig")
        .and_then(|c| c.get("proxyMetadata"))
        .and_then(serde_json::Value::as_object);
    let mut metadata: BTreeMap<String, String> = metadata
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), v)
        })
        .collect();
    metadata
        .entry("ISTIO_META_ENABLE_HBONE".into())
        .or_insert_with(|| "true".into());
    our_env.extend(metadata.into_iter().map(|(k, v)| env(&k, v)));
    // Worker threads from the CPU limit, else from the request; the resource variables only
    // where the pod has that resource (as Istio's chart writes them).
    our_env.push(resource_env_unit("ZTUNNEL_CPU_LIMIT", "limits.cpu"));
    let resources = &install.ztunnel.resources;
    let has =
        |list: &Option<BTreeMap<String, _>>| list.as_ref().is_some_and(|l| l.contains_key("cpu"));
    if has(&resources.limits) {
        our_env.push(resource_env_unit(
            "ZTUNNEL_RESOURCE_CPU_LIMIT",
            "limits.cpu",
        ));
    }
    if has(&resources.requests) {
        our_env.push(resource_env_unit(
            "ZTUNNEL_RESOURCE_CPU_REQUEST",
            "requests.cpu",
        ));
    }
    let container = Container {
        name: "istio-proxy".into(),
        image: Some(install.image("ztunnel")),
        args: Some(vec!["proxy".into(), "ztunnel".into()]),
        env: Some(our_env),
        ports: Some(vec![ContainerPort {
            name: Some("ztunnel-stats".into()),
            container_port: STATS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(http_probe("/healthz/ready", READINESS_PORT)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(true),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(0),
            run_as_group: Some(PROXY_GID),
            run_as_non_root: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec![
                    "NET_ADMIN".into(),
                    "SYS_ADMIN".into(),
                    "NET_RAW".into(),
                ]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("istiod-ca-cert", "/var/run/secrets/istio", false),
            mount("istio-token", "/var/run/secrets/tokens", false),
            mount("cni-ztunnel-sock-dir", SOCKET_DIR, false),
            mount("tmp", "/tmp", false),
        ]),
        ..Default::default()
    };
    let volumes: Vec<Volume> = serde_json::from_value(json!([
        { "name": "istio-token", "projected": { "sources": [{ "serviceAccountToken": {
            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token" } }] } },
        { "name": "istiod-ca-cert", "configMap": { "name": "istio-ca-root-cert" } },
        { "name": "cni-ztunnel-sock-dir",
          "hostPath": { "path": SOCKET_DIR, "type": "DirectoryOrCreate" } },
        { "name": "tmp", "emptyDir": {} },
    ]))
    .expect("static volume list");
    let workload = Workload {
        install,
        component: C,
        name: NAME,
        namespace: &install.namespace,
        settings: &install.ztunnel,
        selector,
        labels,
        annotations: BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("prometheus.io/port".to_string(), STATS_PORT.to_string()),
            ("sidecar.istio.io/inject".to_string(), "false".to_string()),
        ]),
        pod: PodSpec {
            service_account_name: Some(NAME.into()),
            containers: vec![container],
            volumes: Some(volumes),
            node_selector: Some(linux_only()),
            tolerations: Some(node_agent_tolerations()),
            termination_grace_period_seconds: Some(GRACE_SECONDS),
            ..Default::default()
        },
        default_priority_class: Some("system-node-critical"),
    };
    // A new ztunnel starts beside the old one on a node before the old one stops (it takes the
    // pods over from it), so no node is ever without one during a rollout.
    let strategy = DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    };
    let mut out = vec![common::service_account(install, C, NAME)];
    out.push(workload.daemon_set_rolled(strategy));
    out.extend(workload.network_policy());
    out
}

/// How long a stopping ztunnel drains its connections (the pod's grace period and ztunnel's
/// own `TERMINATION_GRACE_PERIOD_SECONDS`, which must agree).
const GRACE_SECONDS: i64 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::effective::test_install as install;

    #[test]
    fn rust_log_takes_the_default_scope() {
        let level = |l: &str| {
            rust_log(&install(&format!(
                "profile: ambient\nglobal: {{logLevel: '{l}'}}"
            )))
        };
        assert_eq!(level("default:info"), "info");
        assert_eq!(level("ads:debug,default:warn"), "warn");
        assert_eq!(level("ads:debug"), "debug");
        assert_eq!(level("default:none"), "off");
    }

    #[test]
    fn ztunnel_reaches_its_revisions_istiod_and_never_leaves_a_node_without_one() {
        let objects = render(&install("profile: ambient\nrevision: blue"));
        let ds = objects.iter().find(|o| o.kind() == "DaemonSet").unwrap();
        let spec = &ds.object.data["spec"];
        let env = &spec["template"]["spec"]["containers"][0]["env"];
        let ca = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "CA_ADDRESS")
            .unwrap();
        assert_eq!(ca["value"], "istiod-blue.istio-system.svc:15012");
        assert_eq!(
            spec["updateStrategy"]["rollingUpdate"],
            json!({"maxSurge": 1, "maxUnavailable": 0})
        );
        assert!(
            objects.iter().all(|o| !o.kind().contains("Role")),
            "ztunnel needs no Kubernetes API rights"
        );
    }
}
