//! The containers injection adds: `istio-proxy` (pilot-agent and Envoy) and `istio-init` (iptables
//! redirect) or `istio-validation` (checks the CNI agent's redirect, needs no privileges).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction, Lifecycle,
    LifecycleHandler, Probe, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::annotations::{Interception, Settings};
use super::identity::Workload;
use super::{InjectionConfig, names};
use crate::api::TrafficCapture;
use crate::istio_proxy::{self, Mode, UID, ports, resource_env};
use crate::k8s::env;

/// Envoy's per-component log levels, Istio's default (`global.proxy.componentLogLevel`).
const COMPONENT_LOG_LEVEL: &str = "misc:error";

/// What istio-proxy's environment describes besides the mesh settings.
pub(crate) struct PodFacts<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) workload: &'a Workload,
    /// The pod's containers, its own `istio-proxy` included (its ports are the pod's ports too;
    /// it is no app container).
    pub(crate) app_containers: &'a [Container],
    /// `ISTIO_KUBE_APP_PROBERS`, empty when no probe was rewritten.
    pub(crate) probers: &'a Map<String, Value>,
    /// The pod's `service.istio.io/workload-name` label, which names the workload in telemetry
    /// (`ISTIO_META_WORKLOAD_NAME`) in place of its controller's name, as in Istio.
    pub(crate) workload_name_label: Option<&'a str>,
}

/// pilot-agent's arguments in `mode` with the pod's log levels: every template's proxy starts so.
pub(super) fn agent_args(mode: Mode, s: &Settings) -> Vec<String> {
    let mut args = istio_proxy::agent_args(mode);
    args.push(format!("--proxyLogLevel={}", s.log_level));
    args.push(format!("--proxyComponentLogLevel={COMPONENT_LOG_LEVEL}"));
    args.push(format!("--log_output_level={}", s.agent_log_level));
    args
}

/// `ISTIO_META_POD_PORTS`: every port of the app containers.
pub(super) fn pod_ports_env(facts: &PodFacts) -> EnvVar {
    let ports: Vec<&ContainerPort> = facts
        .app_containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    env("ISTIO_META_POD_PORTS", to_json(&ports))
}

/// `ISTIO_META_APP_CONTAINERS`: the app containers but the pod's own istio-proxy. Go leaves out
/// an empty value (a pod whose only container is its own istio-proxy).
pub(super) fn app_containers_env(facts: &PodFacts) -> EnvVar {
    let names: Vec<&str> = facts
        .app_containers
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| *n != names::PROXY)
        .collect();
    EnvVar {
        name: "ISTIO_META_APP_CONTAINERS".into(),
        value: Some(names.join(",")).filter(|v| !v.is_empty()),
        value_from: None,
    }
}

pub(super) fn health_probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(istio_proxy::READY_PATH.into()),
            port: IntOrString::Int(ports::HEALTH.into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The proxy's user, no capabilities, read-only root: istio-proxy and istio-validation.
fn unprivileged() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_group: Some(UID),
        run_as_non_root: Some(true),
        run_as_user: Some(UID),
        ..Default::default()
    }
}

/// Serialises a value that is always representable as JSON (maps of strings, typed structs).
pub(super) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The istio-proxy container; `native` makes it a native sidecar (an init container with
/// restartPolicy Always). Concurrency travels in `PROXY_CONFIG`, as in Istio's template.
pub(crate) fn proxy(
    s: &Settings,
    cfg: &InjectionConfig,
    facts: &PodFacts,
    native: bool,
) -> Container {
    let args = agent_args(Mode::Sidecar, s);
    let mut env_vars = [
        istio_proxy::ca_env(cfg.discovery_address()),
        istio_proxy::pod_env(),
        vec![
            istio_proxy::service_account_env(),
            istio_proxy::host_ip_env(),
            resource_env("ISTIO_CPU_LIMIT", "limits.cpu"),
            istio_proxy::proxy_config_env(&s.proxy_config),
            pod_ports_env(facts),
            app_containers_env(facts),
            resource_env("GOMEMLIMIT", "limits.memory"),
            resource_env("GOMAXPROCS", "limits.cpu"),
        ],
        istio_proxy::cluster_env(&cfg.cluster_id, cfg.network.as_deref()),
        vec![env("ISTIO_META_INTERCEPTION_MODE", s.interception.as_str())],
        istio_proxy::workload_env(
            facts
                .workload_name_label
                .filter(|n| !n.is_empty())
                .unwrap_or(&facts.workload.name),
            facts.workload.owner_uri(facts.namespace),
        ),
        istio_proxy::trust_domain_env(&cfg.mesh_id, &cfg.trust_domain),
    ]
    .concat();
    env_vars.extend(proxy_metadata_env(s));
    // Istio appends the app probers after rendering its template: the last variable.
    if !facts.probers.is_empty() {
        env_vars.push(env("ISTIO_KUBE_APP_PROBERS", to_json(facts.probers)));
    }

    let exec = |command: &[&str]| LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|c| c.to_string()).collect()),
        }),
        ..Default::default()
    };
    let lifecycle = if native {
        // Kubernetes stops a native sidecar only after the app containers; preStop runs when the
        // pod starts shutting down, so Envoy drains its connections while the app finishes.
        let debug_port = format!("--debug-port={}", s.status_port);
        Some(Lifecycle {
            pre_stop: Some(exec(&[
                "pilot-agent",
                "request",
                &debug_port,
                "POST",
                "drain",
            ])),
            ..Default::default()
        })
    } else if s.hold_application {
        // A classic sidecar has no start ordering; the postStart hook blocks the next container's
        // start until Envoy is ready, which is why the proxy then goes first.
        Some(Lifecycle {
            post_start: Some(exec(&["pilot-agent", "wait"])),
            ..Default::default()
        })
    } else {
        None
    };
    let mut mounts = istio_proxy::proxy_mounts();
    let after_ca = mounts
        .iter()
        .position(|m| m.name == "istiod-ca-cert")
        .map_or(mounts.len(), |i| i + 1);
    mounts.insert(after_ca, istio_proxy::crl_mount());

    Container {
        name: names::PROXY.into(),
        image: Some(s.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args),
        env: Some(env_vars),
        ports: Some(vec![istio_proxy::envoy_prometheus_port()]),
        // Status port 0: no agent endpoint to probe, as in Istio.
        readiness_probe: (s.status_port != 0).then(|| {
            let [delay, period, failures] = s.readiness;
            Probe {
                initial_delay_seconds: Some(delay),
                ..health_probe(period, failures)
            }
        }),
        startup_probe: (s.status_port != 0).then(|| health_probe(1, 600)),
        resources: Some(s.resources.clone()),
        lifecycle,
        restart_policy: native.then(|| "Always".into()),
        security_context: Some(if s.interception == Interception::Tproxy {
            // TPROXY binds to foreign addresses: Istio runs the proxy as root with NET_ADMIN.
            SecurityContext {
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                run_as_non_root: Some(false),
                run_as_user: Some(0),
                ..unprivileged()
            }
        } else {
            unprivileged()
        }),
        volume_mounts: Some(
            mounts
                .into_iter()
                .chain(s.user_mounts.iter().cloned())
                .collect(),
        ),
        ..Default::default()
    }
}

/// The entries of PROXY_CONFIG's `proxyMetadata` as env vars, sorted by name: Istio sets them on
/// the proxy (last) and on the capture init container, which reads some of them itself.
fn proxy_metadata_env(s: &Settings) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    let Some(Value::Object(metadata)) = s.proxy_config.get("proxyMetadata") else {
        return Vec::new();
    };
    let mut entries: Vec<(&String, String)> = metadata
        .iter()
        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), String::from)))
        .collect();
    entries.sort();
    entries.into_iter().map(|(k, v)| env(k, v)).collect()
}

/// `istio-init` for iptables capture, `istio-validation` for CNI capture.
pub(crate) fn init(s: &Settings, cfg: &InjectionConfig) -> Container {
    let r = &s.redirect;
    let mut args: Vec<String> = vec!["istio-iptables".into()];
    let mut flag = |f: &str, v: String| args.extend([f.to_string(), v]);
    flag("-p", ports::OUTBOUND_CAPTURE.to_string());
    flag("-z", ports::INBOUND_CAPTURE.to_string());
    flag("-u", UID.to_string());
    flag("-m", s.interception.as_str().into());
    flag("-i", r.include_outbound_ranges.clone());
    flag("-x", r.exclude_outbound_ranges.clone());
    flag("-b", r.include_inbound_ports.clone());
    flag("-d", r.exclude_inbound_ports.clone());
    if let Some(p) = &r.include_outbound_ports {
        flag("-q", p.clone());
    }
    if let Some(p) = &r.exclude_outbound_ports {
        flag("-o", p.clone());
    }
    if let Some(i) = &r.virtual_interfaces {
        flag("-k", i.clone());
    }
    if let Some(i) = &r.exclude_interfaces {
        flag("-c", i.clone());
    }
    args.push(format!("--log_output_level={}", s.agent_log_level));

    let cni = cfg.traffic_capture == TrafficCapture::Cni;
    let security_context = if cni {
        // Only checks that the CNI agent's redirect is in place: no privileges at all.
        unprivileged()
    } else {
        // Programming the pod's netfilter tables needs root with NET_ADMIN and NET_RAW, nothing more.
        SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }
    };
    if cni {
        args.extend(["--run-validation".into(), "--skip-rule-apply".into()]);
    }
    Container {
        name: if cni { names::VALIDATION } else { names::INIT }.into(),
        image: Some(s.init_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args),
        env: Some(proxy_metadata_env(s)).filter(|e| !e.is_empty()),
        resources: Some(s.resources.clone()),
        security_context: Some(security_context),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::SidecarMode;
    use crate::inject::annotations::settings;
    use crate::inject::native::is_native;
    use crate::inject::testutil::{cfg, typical_pod};

    fn build(c: &InjectionConfig, annotations: &[(&str, &str)]) -> (Container, Container) {
        let s = settings(&crate::inject::testutil::labels(annotations), c).unwrap();
        let pod = typical_pod();
        let apps = pod.spec.unwrap().containers;
        let w = Workload {
            name: "reviews-v1".into(),
            kind: "Deployment".into(),
            api_version: "apps/v1".into(),
        };
        let probers = Map::new();
        let facts = PodFacts {
            namespace: "bookinfo",
            workload: &w,
            app_containers: &apps,
            probers: &probers,
            workload_name_label: None,
        };
        let native = is_native(None, c.sidecar_mode, None, None).unwrap();
        (proxy(&s, c, &facts, native), init(&s, c))
    }

    fn env_map(c: &Container) -> BTreeMap<String, k8s_openapi::api::core::v1::EnvVar> {
        c.env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn proxy_image_args_and_port() {
        let (p, _) = build(
            &InjectionConfig {
                concurrency: Some(3),
                log_level: crate::api::ProxyLogLevel::Debug,
                ..cfg()
            },
            &[],
        );
        assert_eq!(p.name, "istio-proxy");
        assert_eq!(p.image.as_deref(), Some("docker.io/istio/proxyv2:1.28.2"));
        assert_eq!(
            p.args.unwrap(),
            [
                "proxy",
                "sidecar",
                "--domain",
                "$(POD_NAMESPACE).svc.cluster.local",
                "--proxyLogLevel=debug",
                "--proxyComponentLogLevel=misc:error",
                "--log_output_level=default:info",
            ]
        );
        let pc = p.env.iter().flatten().find(|e| e.name == "PROXY_CONFIG");
        let pc: Value = serde_json::from_str(pc.unwrap().value.as_deref().unwrap()).unwrap();
        assert_eq!(pc["concurrency"], 3, "concurrency travels in PROXY_CONFIG");
        let port = &p.ports.unwrap()[0];
        assert_eq!(
            (port.container_port, port.name.as_deref()),
            (15090, Some("http-envoy-prom"))
        );
    }

    #[test]
    fn proxy_environment() {
        let (p, _) = build(&cfg(), &[]);
        let env = env_map(&p);
        let value = |n: &str| env[n].value.clone().unwrap_or_default();
        let field = |n: &str| {
            env[n]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path
                .clone()
        };
        assert_eq!(value("CA_ADDR"), "istiod.istio-system.svc:15012");
        assert_eq!(value("PILOT_CERT_PROVIDER"), "istiod");
        assert_eq!(field("POD_NAME"), "metadata.name");
        assert_eq!(field("POD_NAMESPACE"), "metadata.namespace");
        assert_eq!(field("INSTANCE_IP"), "status.podIP");
        assert_eq!(field("SERVICE_ACCOUNT"), "spec.serviceAccountName");
        assert_eq!(field("HOST_IP"), "status.hostIP");
        assert_eq!(field("ISTIO_META_NODE_NAME"), "spec.nodeName");
        assert_eq!(
            env["ISTIO_CPU_LIMIT"]
                .value_from
                .as_ref()
                .unwrap()
                .resource_field_ref
                .as_ref()
                .unwrap()
                .resource,
            "limits.cpu"
        );
        let pc: Value = serde_json::from_str(&value("PROXY_CONFIG")).unwrap();
        // The default istiod is the agent's own default: Istio leaves it out, so does meshop.
        assert_eq!(pc, serde_json::json!({}));
        let pp: Value = serde_json::from_str(&value("ISTIO_META_POD_PORTS")).unwrap();
        assert_eq!(
            pp,
            serde_json::json!([{"name": "http", "containerPort": 9080, "protocol": "TCP"}, {"name": "grpc", "containerPort": 9090}])
        );
        assert_eq!(value("ISTIO_META_APP_CONTAINERS"), "reviews,sidecar-logger");
        assert_eq!(value("ISTIO_META_CLUSTER_ID"), "Kubernetes");
        assert_eq!(value("ISTIO_META_INTERCEPTION_MODE"), "REDIRECT");
        assert_eq!(value("ISTIO_META_WORKLOAD_NAME"), "reviews-v1");
        assert_eq!(
            value("ISTIO_META_OWNER"),
            "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v1"
        );
        assert_eq!(value("ISTIO_META_MESH_ID"), "cluster.local");
        assert_eq!(value("TRUST_DOMAIN"), "cluster.local");
        assert!(!env.contains_key("ISTIO_KUBE_APP_PROBERS"));
    }

    #[test]
    fn istio_1_30_environment_facts() {
        let (p, _) = build(&cfg(), &[]);
        let env = env_map(&p);
        assert!(
            !env.contains_key("JWT_POLICY"),
            "gone from the template since Istio 1.22"
        );
        for (name, resource) in [
            ("ISTIO_CPU_LIMIT", "limits.cpu"),
            ("GOMEMLIMIT", "limits.memory"),
            ("GOMAXPROCS", "limits.cpu"),
        ] {
            let r = env[name]
                .value_from
                .as_ref()
                .unwrap()
                .resource_field_ref
                .as_ref()
                .unwrap();
            assert_eq!(r.resource, resource, "{name}");
            assert_eq!(
                r.divisor,
                Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                    "1".into()
                )),
                "{name}"
            );
        }
        let pc: Value =
            serde_json::from_str(env["PROXY_CONFIG"].value.as_deref().unwrap()).unwrap();
        assert!(
            pc.get("concurrency").is_none(),
            "unset concurrency is left to the proxy"
        );
        assert!(
            !p.args
                .unwrap()
                .iter()
                .any(|a| a.starts_with("--concurrency"))
        );
    }

    #[test]
    fn agent_log_level_reaches_istio_init_too() {
        let (p, i) = build(
            &cfg(),
            &[("sidecar.istio.io/agentLogLevel", "default:debug")],
        );
        for c in [p, i] {
            assert!(
                c.args
                    .unwrap()
                    .contains(&"--log_output_level=default:debug".to_string())
            );
        }
    }

    #[test]
    fn revision_and_hold_show_in_the_proxy_config() {
        let c = InjectionConfig {
            revision: "canary".into(),
            hold_application_until_proxy_starts: true,
            ..cfg()
        };
        let (p, _) = build(&c, &[]);
        let env = env_map(&p);
        assert_eq!(
            env["CA_ADDR"].value.as_deref(),
            Some("istiod-canary.istio-system.svc:15012")
        );
        let pc: Value =
            serde_json::from_str(env["PROXY_CONFIG"].value.as_deref().unwrap()).unwrap();
        assert_eq!(pc["holdApplicationUntilProxyStarts"], true);
        assert_eq!(
            pc["discoveryAddress"],
            "istiod-canary.istio-system.svc:15012"
        );
    }

    #[test]
    fn proxy_probes_security_and_resources() {
        let (p, _) = build(&cfg(), &[]);
        for probe in [
            p.readiness_probe.as_ref().unwrap(),
            p.startup_probe.as_ref().unwrap(),
        ] {
            let h = probe.http_get.as_ref().unwrap();
            assert_eq!(
                (h.path.as_deref(), &h.port),
                (Some("/healthz/ready"), &IntOrString::Int(15021))
            );
        }
        let sc = p.security_context.unwrap();
        assert_eq!(
            (sc.run_as_user, sc.run_as_group, sc.run_as_non_root),
            (Some(1337), Some(1337), Some(true))
        );
        assert_eq!(
            (
                sc.read_only_root_filesystem,
                sc.allow_privilege_escalation,
                sc.privileged
            ),
            (Some(true), Some(false), Some(false))
        );
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(p.resources, Some(cfg().proxy_resources));
        let mounts = p.volume_mounts.unwrap();
        assert_eq!(mounts.len(), 9);
        let crl = mounts
            .iter()
            .position(|m| m.name == "istio-ca-crl")
            .unwrap();
        assert_eq!(mounts[crl].mount_path, "/var/run/secrets/istio/crl");
        assert_eq!(mounts[crl - 1].name, "istiod-ca-cert");
    }

    #[test]
    fn native_and_classic_modes() {
        let (p, _) = build(&cfg(), &[]);
        assert_eq!(p.restart_policy.as_deref(), Some("Always"));
        let lc = p.lifecycle.unwrap();
        assert!(lc.post_start.is_none());
        assert_eq!(
            lc.pre_stop.unwrap().exec.unwrap().command.unwrap(),
            [
                "pilot-agent",
                "request",
                "--debug-port=15020",
                "POST",
                "drain"
            ],
            "a native sidecar drains when the pod starts shutting down"
        );
        // Holding the app needs no hook natively: Kubernetes starts the app after the startup probe.
        let (p, _) = build(
            &InjectionConfig {
                hold_application_until_proxy_starts: true,
                ..cfg()
            },
            &[],
        );
        let lc = p.lifecycle.unwrap();
        assert!(lc.post_start.is_none() && lc.pre_stop.is_some());
        let classic = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            ..cfg()
        };
        let (p, _) = build(&classic, &[]);
        assert!(p.restart_policy.is_none() && p.lifecycle.is_none());
        let (p, _) = build(
            &InjectionConfig {
                hold_application_until_proxy_starts: true,
                ..classic
            },
            &[],
        );
        let cmd = p
            .lifecycle
            .unwrap()
            .post_start
            .unwrap()
            .exec
            .unwrap()
            .command
            .unwrap();
        assert_eq!(cmd, ["pilot-agent", "wait"]);
    }

    #[test]
    fn istio_init_for_iptables() {
        let (_, i) = build(
            &cfg(),
            &[
                ("traffic.sidecar.istio.io/excludeOutboundPorts", "3306"),
                ("traffic.sidecar.istio.io/excludeInboundPorts", "8081"),
            ],
        );
        assert_eq!(i.name, "istio-init");
        assert_eq!(i.image.as_deref(), Some("docker.io/istio/proxyv2:1.28.2"));
        assert_eq!(
            i.args.unwrap().join(" "),
            "istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,8081,15020 -o 3306 --log_output_level=default:info"
        );
        let sc = i.security_context.unwrap();
        let caps = sc.capabilities.unwrap();
        assert_eq!(
            caps.add,
            Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()])
        );
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            (sc.run_as_user, sc.run_as_non_root, sc.privileged),
            (Some(0), Some(false), Some(false))
        );
    }

    #[test]
    fn istio_validation_for_cni_has_no_privileges() {
        let (p, i) = build(
            &InjectionConfig {
                traffic_capture: TrafficCapture::Cni,
                ..cfg()
            },
            &[],
        );
        assert_eq!(i.name, "istio-validation");
        let args = i.args.unwrap();
        assert!(args.ends_with(&[
            "--run-validation".to_string(),
            "--skip-rule-apply".to_string()
        ]));
        let sc = i.security_context.unwrap();
        assert_eq!(
            (sc.run_as_user, sc.run_as_non_root),
            (Some(1337), Some(true))
        );
        for c in [
            sc.capabilities.unwrap(),
            p.security_context.unwrap().capabilities.unwrap(),
        ] {
            assert_eq!(c.add, None);
        }
    }

    #[test]
    fn proxy_image_annotation_applies_to_both() {
        let (p, i) = build(
            &cfg(),
            &[("sidecar.istio.io/proxyImage", "mirror.local/proxyv2:custom")],
        );
        assert_eq!(p.image, i.image);
        assert_eq!(p.image.as_deref(), Some("mirror.local/proxyv2:custom"));
    }
}
