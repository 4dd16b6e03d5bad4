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

use super::common::{
    self, env, field_env, hardened_container, hardened_pod, meta, policy_rule, with_user_env,
};
use super::{ComponentId, Rendered};
use crate::api::ServiceType;
use crate::effective::{Installation, Settings};
use crate::inject::keys;
use crate::istio_proxy::{self, Mode, ports};
use crate::revision;

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
    let mut container_ports = Vec::new();
    let svc_ports = kind
        .settings(install)
        .service
        .as_ref()
        .map(|s| s.ports.clone())
        .unwrap_or_default();
    for p in &svc_ports {
        if seen.insert(p.container_port()) {
            container_ports.push(ContainerPort {
                container_port: p.container_port(),
                protocol: Some(p.protocol_name().into()),
                ..Default::default()
            });
        }
    }
    if seen.insert(ports::HEALTH.into()) {
        container_ports.push(ContainerPort {
            container_port: ports::HEALTH.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        });
    }
    if seen.insert(ports::ENVOY_PROMETHEUS.into()) {
        container_ports.push(istio_proxy::envoy_prometheus_port());
    }
    container_ports
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
    pod_labels.insert(keys::REV.into(), revision::name(&install.revision).into());
    pod_labels.insert(keys::INJECT.into(), "false".into());
    pod_labels.insert(keys::CANONICAL_NAME.into(), name.into());
    pod_labels.insert(keys::CANONICAL_REVISION.into(), "latest".into());
    let discovery_address = istio_proxy::discovery_address(&install.revision, &install.namespace);
    let our_env = [
        istio_proxy::ca_env(discovery_address.clone()),
        vec![field_env("NODE_NAME", "spec.nodeName")],
        istio_proxy::pod_env(),
        vec![
            istio_proxy::host_ip_env(),
            istio_proxy::service_account_env(),
        ],
        istio_proxy::workload_env(
            name,
            istio_proxy::owner_uri("apps/v1", "Deployment", &install.namespace, name),
        ),
        istio_proxy::trust_domain_env(&install.mesh.trust_domain),
        vec![env("ISTIO_META_UNPRIVILEGED_POD", "true")],
        istio_proxy::cluster_env(),
        vec![istio_proxy::proxy_config_env(&istio_proxy::proxy_config(
            discovery_address,
        ))],
    ]
    .concat();
    // The same proxy volumes an injected sidecar gets: a gateway is a proxy without an app.
    let volumes = istio_proxy::sidecar_volumes();
    let ready = Probe {
        http_get: Some(HTTPGetAction {
            path: Some(istio_proxy::READY_PATH.into()),
            port: IntOrString::Int(ports::HEALTH.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(1),
        period_seconds: Some(2),
        timeout_seconds: Some(3),
        failure_threshold: Some(30),
        ..Default::default()
    };
    let mut args = istio_proxy::agent_args(Mode::Router);
    args.extend(
        [
            "--proxyLogLevel=warning",
            "--proxyComponentLogLevel=misc:error",
            "--log_output_level=default:info",
        ]
        .map(String::from),
    );
    let container = Container {
        name: istio_proxy::CONTAINER.into(),
        image: Some(istio_proxy::image(&install.hub, &install.version)),
        args: Some(args),
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
        volume_mounts: Some(istio_proxy::proxy_mounts()),
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
                        (keys::PROMETHEUS_SCRAPE.to_string(), "true".to_string()),
                        (
                            keys::PROMETHEUS_PORT.to_string(),
                            ports::ENVOY_PROMETHEUS.to_string(),
                        ),
                        (
                            keys::PROMETHEUS_PATH.to_string(),
                            istio_proxy::PROMETHEUS_PATH.to_string(),
                        ),
                        (keys::INJECT.to_string(), "false".to_string()),
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
                        ..hardened_pod(istio_proxy::UID)
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
