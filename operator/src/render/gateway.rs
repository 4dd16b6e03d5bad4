//! Ingress and egress gateways: Envoy (proxyv2) in router mode behind a Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSpec, Probe, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{self, env, field_env, hardened_pod, meta_in, policy_rule};
use super::workload::Workload;
use super::{ComponentId, Rendered};
use crate::api::ServiceType;
use crate::effective::{Gateway, GatewayKind, Installation};
use crate::inject::keys;
use crate::istio_proxy::{self, Mode, ports};
use crate::revision;

/// The status component a gateway of this kind belongs to.
pub fn component(kind: GatewayKind) -> ComponentId {
    match kind {
        GatewayKind::Ingress => ComponentId::IngressGateway,
        GatewayKind::Egress => ComponentId::EgressGateway,
    }
}

/// Every object of one gateway, in its namespace, named after it.
pub fn render(install: &Installation, gateway: &Gateway) -> Vec<Rendered> {
    let c = component(gateway.kind);
    let name = gateway.name.as_str();
    let namespace = gateway.namespace.as_str();
    let mut out = vec![common::service_account_in(install, c, name, namespace)];
    // The gateway reads TLS credentials (Secrets) of its own namespace over SDS.
    out.extend(common::role_for_in(
        install,
        c,
        name,
        namespace,
        vec![policy_rule(&[""], &["secrets"], &["get", "watch", "list"])],
    ));
    out.push(Rendered::new(c, &service(install, gateway)));
    let workload = workload(install, gateway);
    out.extend(workload.deployment());
    out.extend(workload.network_policy());
    out
}

fn service(install: &Installation, gateway: &Gateway) -> Service {
    let c = component(gateway.kind);
    let svc = gateway
        .settings
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
    let mut metadata = meta_in(install, c, &gateway.name, &gateway.namespace);
    // The gateway's own labels name its Service too, as Istio labels a gateway's Service with
    // the gateway's labels; meshop's own labels win.
    let labels = metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in gateway
        .settings
        .pod_labels
        .iter()
        .chain(&gateway.selector())
    {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if !svc.annotations.is_empty() {
        metadata.annotations = Some(svc.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(gateway.selector()),
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
fn container_ports(gateway: &Gateway) -> Vec<ContainerPort> {
    let mut seen = std::collections::BTreeSet::new();
    let mut container_ports = Vec::new();
    let svc_ports = gateway
        .settings
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

fn workload<'a>(install: &'a Installation, gateway: &'a Gateway) -> Workload<'a> {
    let name = gateway.name.as_str();
    let namespace = gateway.namespace.as_str();
    let labels = BTreeMap::from([
        (
            keys::REV.to_string(),
            revision::name(&install.revision).to_string(),
        ),
        (keys::INJECT.to_string(), "false".to_string()),
        (keys::CANONICAL_NAME.to_string(), name.to_string()),
        // Istio's canonical revision: the pods' version label, else latest.
        (
            keys::CANONICAL_REVISION.to_string(),
            gateway
                .labels
                .get("version")
                .or_else(|| gateway.settings.pod_labels.get("version"))
                .cloned()
                .unwrap_or_else(|| "latest".to_string()),
        ),
    ]);
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
            istio_proxy::owner_uri("apps/v1", "Deployment", namespace, name),
        ),
        istio_proxy::trust_domain_env(install.mesh_id(), &install.mesh.trust_domain),
        vec![env("ISTIO_META_UNPRIVILEGED_POD", "true")],
        istio_proxy::cluster_env(
            &install.global.cluster_id,
            install.global.network.as_deref(),
        ),
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
        ]
        .map(String::from),
    );
    args.extend(super::istiod::log_args(install));
    let container = Container {
        name: istio_proxy::CONTAINER.into(),
        image: Some(istio_proxy::image(&install.hub, &install.version)),
        args: Some(args),
        ports: Some(container_ports(gateway)),
        env: Some(our_env),
        readiness_probe: Some(ready.clone()),
        startup_probe: Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(600),
            ..ready
        }),
        volume_mounts: Some(istio_proxy::proxy_mounts()),
        ..Default::default()
    };
    Workload {
        install,
        component: component(gateway.kind),
        name,
        namespace,
        settings: &gateway.settings,
        selector: gateway.selector(),
        labels,
        annotations: BTreeMap::from([
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
        ]),
        pod: PodSpec {
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
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        },
        default_priority_class: None,
    }
}
