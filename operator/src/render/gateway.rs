//! Ingress and egress gateways: Envoy (proxyv2) in router mode behind a Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{
    self, env, field_env, hardened_container, hardened_pod, meta, policy_rule, with_user_env,
};
use super::{ComponentId, Rendered};
use crate::api::ServiceType;
use crate::effective::{Installation, Settings};

/// The uid the gateway runs as (the proxy's conventional 1337).
const UID: i64 = 1337;
/// Envoy's health endpoint, served by the agent.
const STATUS_PORT: i32 = 15021;
const PROMETHEUS_PORT: i32 = 15090;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ingress,
    Egress,
}

impl Kind {
    fn component(self) -> ComponentId {
        match self {
            Kind::Ingress => ComponentId::IngressGateway,
            Kind::Egress => ComponentId::EgressGateway,
        }
    }

    /// Istio's conventional names, so users find what they expect.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "istio-ingressgateway",
            Kind::Egress => "istio-egressgateway",
        }
    }

    fn istio_label(self) -> &'static str {
        match self {
            Kind::Ingress => "ingressgateway",
            Kind::Egress => "egressgateway",
        }
    }

    fn settings(self, install: &Installation) -> &Settings {
        match self {
            Kind::Ingress => &install.ingress_gateway,
            Kind::Egress => &install.egress_gateway,
        }
    }
}

pub fn selector(kind: Kind) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), kind.name().to_string()),
        ("istio".to_string(), kind.istio_label().to_string()),
    ])
}

pub fn render(install: &Installation, kind: Kind) -> Vec<Rendered> {
    let c = kind.component();
    let name = kind.name();
    let settings = kind.settings(install);
    let selector = selector(kind);
    let mut out = vec![common::service_account(install, c, name)];
    // The gateway reads TLS credentials (Secrets) of its own namespace over SDS.
    out.extend(common::role_for(
        install,
        c,
        name,
        vec![policy_rule(&[""], &["secrets"], &["get", "watch", "list"])],
    ));
    out.push(Rendered::new(c, &service(install, kind, &selector)));
    out.push(Rendered::new(c, &deployment(install, kind, &selector)));
    out.extend(common::scaling(install, c, name, settings, &selector));
    out
}

fn service(install: &Installation, kind: Kind, selector: &BTreeMap<String, String>) -> Service {
    let c = kind.component();
    let svc = kind
        .settings(install)
        .service
        .clone()
        .unwrap_or_else(|| crate::effective::Service {
            type_: ServiceType::ClusterIP,
            annotations: BTreeMap::new(),
            ports: Vec::new(),
        });
    let type_ = match svc.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    let mut metadata = meta(install, c, kind.name());
    if !svc.annotations.is_empty() {
        metadata.annotations = Some(svc.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector.clone()),
            ports: Some(
                svc.ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(p.name.clone()),
                        port: p.port,
                        target_port: Some(IntOrString::Int(p.container_port())),
                        // Node ports only exist on NodePort and LoadBalancer Services.
                        node_port: if svc.type_ == ServiceType::ClusterIP {
                            None
                        } else {
                            p.node_port
                        },
                        protocol: Some(p.protocol_name().into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// The container ports: the Service's target ports plus Envoy's metrics port.
fn container_ports(install: &Installation, kind: Kind) -> Vec<ContainerPort> {
    let mut seen = std::collections::BTreeSet::new();
    let mut ports = Vec::new();
    let svc_ports = kind
        .settings(install)
        .service
        .as_ref()
        .map(|s| s.ports.clone())
        .unwrap_or_default();
    for p in &svc_ports {
        if seen.insert(p.container_port()) {
            ports.push(ContainerPort {
                container_port: p.container_port(),
                protocol: Some(p.protocol_name().into()),
                ..Default::default()
            });
        }
    }
    if seen.insert(STATUS_PORT) {
        ports.push(ContainerPort {
            container_port: STATUS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    if seen.insert(PROMETHEUS_PORT) {
        ports.push(ContainerPort {
            name: Some("http-envoy-prom".into()),
            container_port: PROMETHEUS_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    ports
}

fn deployment(
    install: &Installation,
    kind: Kind,
    selector: &BTreeMap<String, String>,
) -> Deployment {
    let c = kind.component();
    let name = kind.name();
    let settings = kind.settings(install);
    let mut pod_labels = common::pod_labels(install, c, selector);
    pod_labels.insert("istio.io/rev".into(), install.revision_label().into());
    pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
    pod_labels.insert("service.istio.io/canonical-name".into(), name.into());
    pod_labels.insert(
        "service.istio.io/canonical-revision".into(),
        "latest".into(),
    );
    let our_env = vec![
        env("PILOT_CERT_PROVIDER", "istiod"),
        env("CA_ADDR", install.discovery_address()),
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("HOST_IP", "status.hostIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env("ISTIO_META_WORKLOAD_NAME", name),
        env(
            "ISTIO_META_OWNER",
            format!(
                "kubernetes://apis/apps/v1/namespaces/{}/deployments/{}",
                install.namespace, name
            ),
        ),
        env("ISTIO_META_MESH_ID", install.mesh.trust_domain.clone()),
        env("TRUST_DOMAIN", install.mesh.trust_domain.clone()),
        env("ISTIO_META_UNPRIVILEGED_POD", "true"),
        env("ISTIO_META_CLUSTER_ID", "Kubernetes"),
        field_env("ISTIO_META_NODE_NAME", "spec.nodeName"),
        env(
            "PROXY_CONFIG",
            json!({ "discoveryAddress": install.discovery_address() }).to_string(),
        ),
    ];
    // The same proxy volumes an injected sidecar gets: a gateway is a proxy without an app.
    let volumes = crate::inject::volumes::sidecar_volumes();
    let ready = Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(STATUS_PORT),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(1),
        period_seconds: Some(2),
        timeout_seconds: Some(3),
        failure_threshold: Some(30),
        ..Default::default()
    };
    let container = Container {
        name: "istio-proxy".into(),
        image: Some(install.image("proxyv2")),
        args: Some(
            [
                "proxy",
                "router",
                "--domain",
                "$(POD_NAMESPACE).svc.cluster.local",
                "--proxyLogLevel=warning",
                "--proxyComponentLogLevel=misc:error",
                "--log_output_level=default:info",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        ports: Some(container_ports(install, kind)),
        env: Some(with_user_env(our_env, settings)),
        resources: Some(settings.resources.clone()),
        readiness_probe: Some(ready.clone()),
        startup_probe: Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(600),
            ..ready
        }),
        security_context: Some(hardened_container()),
        volume_mounts: Some(crate::inject::volumes::proxy_mounts()),
        ..Default::default()
    };
    Deployment {
        metadata: meta(install, c, name),
        spec: Some(DeploymentSpec {
            replicas: common::replicas(settings),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            // Surge first, never drop below the wanted capacity: a gateway rollout must not lose traffic.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("100%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        ("prometheus.io/scrape".to_string(), "true".to_string()),
                        (
                            "prometheus.io/port".to_string(),
                            PROMETHEUS_PORT.to_string(),
                        ),
                        (
                            "prometheus.io/path".to_string(),
                            "/stats/prometheus".to_string(),
                        ),
                        ("sidecar.istio.io/inject".to_string(), "false".to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.into()),
                    security_context: Some(k8s_openapi::api::core::v1::PodSecurityContext {
                        // Lets the non-root proxy bind ports below 1024 should a user map one directly.
                        sysctls: Some(vec![k8s_openapi::api::core::v1::Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".into(),
                            value: "0".into(),
                        }]),
                        ..hardened_pod(UID)
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: settings.node_selector.clone(),
                    tolerations: settings.tolerations.clone(),
                    affinity: settings.affinity.clone(),
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}
