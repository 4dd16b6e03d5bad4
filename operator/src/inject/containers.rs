//! The containers injection adds: `istio-proxy` (pilot-agent and Envoy) and `istio-init` (iptables
//! redirect) or `istio-validation` (checks the CNI agent's redirect, needs no privileges).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    Probe, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::annotations::Settings;
use super::identity::Workload;
use super::{InjectionConfig, names};
use crate::api::{SidecarMode, TrafficCapture};
use crate::istio_proxy::{self, Mode, UID, ports};
use crate::k8s::{env, resource_env};

/// What istio-proxy's environment describes besides the mesh settings.
pub(crate) struct PodFacts<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) workload: &'a Workload,
    pub(crate) app_containers: &'a [Container],
    /// `ISTIO_KUBE_APP_PROBERS`, empty when no probe was rewritten.
    pub(crate) probers: &'a Map<String, Value>,
}

fn health_probe(period: i32, failures: i32) -> Probe {
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
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The istio-proxy container.
pub(crate) fn proxy(s: &Settings, cfg: &InjectionConfig, facts: &PodFacts) -> Container {
    let mut args = istio_proxy::agent_args(Mode::Sidecar);
    args.push(format!("--proxyLogLevel={}", s.log_level));
    args.push(format!("--log_output_level={}", s.agent_log_level));
    if let Some(n) = s.concurrency {
        args.extend(["--concurrency".to_string(), n.to_string()]);
    }

    let app_ports: Vec<&ContainerPort> = facts
        .app_containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    let app_names: Vec<&str> = facts
        .app_containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let mut env_vars = [
        vec![env("JWT_POLICY", "third-party-jwt")],
        istio_proxy::ca_env(cfg.discovery_address()),
        istio_proxy::pod_env(),
        vec![
            istio_proxy::service_account_env(),
            istio_proxy::host_ip_env(),
            resource_env("ISTIO_CPU_LIMIT", "limits.cpu"),
            istio_proxy::proxy_config_env(&s.proxy_config),
            env("ISTIO_META_POD_PORTS", to_json(&app_ports)),
            env("ISTIO_META_APP_CONTAINERS", app_names.join(",")),
            resource_env("GOMEMLIMIT", "limits.memory"),
            resource_env("GOMAXPROCS", "limits.cpu"),
        ],
        istio_proxy::cluster_env(),
        vec![env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT")],
        istio_proxy::workload_env(
            &facts.workload.name,
            facts.workload.owner_uri(facts.namespace),
        ),
        istio_proxy::trust_domain_env(&cfg.trust_domain),
    ]
    .concat();
    if !facts.probers.is_empty() {
        env_vars.push(env("ISTIO_KUBE_APP_PROBERS", to_json(facts.probers)));
    }

    let native = cfg.sidecar_mode == SidecarMode::Native;
    // A classic sidecar has no start ordering; the postStart hook blocks the next container's start
    // until Envoy is ready, which is why the proxy then goes first.
    let lifecycle = (!native && s.hold_application).then(|| Lifecycle {
        post_start: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["pilot-agent".into(), "wait".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });

    Container {
        name: names::PROXY.into(),
        image: Some(s.image.clone()),
        args: Some(args),
        env: Some(env_vars),
        ports: Some(vec![istio_proxy::envoy_prometheus_port()]),
        readiness_probe: Some(health_probe(15, 4)),
        startup_probe: Some(health_probe(1, 600)),
        resources: Some(s.resources.clone()),
        lifecycle,
        restart_policy: native.then(|| "Always".into()),
        security_context: Some(unprivileged()),
        volume_mounts: Some(istio_proxy::proxy_mounts()),
        ..Default::default()
    }
}

/// `istio-init` for iptables capture, `istio-validation` for CNI capture.
pub(crate) fn init(s: &Settings, cfg: &InjectionConfig) -> Container {
    let r = &s.redirect;
    let mut args: Vec<String> = vec!["istio-iptables".into()];
    let mut flag = |f: &str, v: String| args.extend([f.to_string(), v]);
    flag("-p", ports::OUTBOUND_CAPTURE.to_string());
    flag("-z", ports::INBOUND_CAPTURE.to_string());
    flag("-u", UID.to_string());
    flag("-m", "REDIRECT".into());
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
    args.push("--log_output_level=default:info".into());

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
        image: Some(s.image.clone()),
        args: Some(args),
        resources: Some(s.resources.clone()),
        security_context: Some(security_context),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::inject::annotations::settings;
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
        };
        (proxy(&s, c, &facts), init(&s, c))
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
                concurrency: Some(2),
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
                "--log_output_level=default:info",
                "--concurrency",
                "2"
            ]
        );
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
        assert_eq!(
            pc,
            serde_json::json!({"discoveryAddress": "istiod.istio-system.svc:15012"})
        );
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
        assert_eq!(p.volume_mounts.unwrap().len(), 8);
    }

    #[test]
    fn native_and_classic_modes() {
        let (p, _) = build(&cfg(), &[]);
        assert_eq!(p.restart_policy.as_deref(), Some("Always"));
        assert!(p.lifecycle.is_none());
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
            "istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,15020,8081 -o 3306 --log_output_level=default:info"
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
