//! Istio's `gateway` injection template, chosen by `inject.istio.io/templates: gateway`: the pod
//! (a gateway Deployment such as Istio's `gateway` Helm chart or a Gateway API deployment
//! creates, with its own `istio-proxy` container of `image: auto`) gets a proxy in router mode,
//! no traffic redirect, no mTLS label, and may bind privileged ports. The fields follow the
//! template of Istio's injector configuration (release-1.31), `istioctl kube-inject` being the
//! oracle (tests/tests/istio_corpus.rs).

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext, Sysctl};

use super::annotations::Settings;
use super::containers::{self, PodFacts, health_probe, to_json};
use super::{InjectionConfig, names};
use crate::istio_proxy::{self, Mode, UID, resource_env};
use crate::k8s::env;

/// The template names that select this template.
pub(crate) const TEMPLATE: &str = "gateway";

/// Whether `inject.istio.io/templates` asks for the gateway template alone (`gateway`, or the
/// name repeated).
pub(crate) fn requested(templates: Option<&str>) -> bool {
    templates.is_some_and(|t| t.split(',').all(|n| n.trim() == TEMPLATE))
}

/// The gateway's istio-proxy container, before the pod's own is merged over it.
pub(crate) fn proxy(s: &Settings, cfg: &InjectionConfig, facts: &PodFacts) -> Container {
    let args = containers::agent_args(Mode::Router, s);
    let mut env_vars = [
        istio_proxy::ca_env(cfg.discovery_address()),
        istio_proxy::pod_env(),
        vec![
            istio_proxy::service_account_env(),
            istio_proxy::host_ip_env(),
            resource_env("ISTIO_CPU_LIMIT", "limits.cpu"),
            istio_proxy::proxy_config_env(&s.proxy_config),
            containers::pod_ports_env(facts),
            resource_env("GOMEMLIMIT", "limits.memory"),
            resource_env("GOMAXPROCS", "limits.cpu"),
            containers::app_containers_env(facts),
        ],
        istio_proxy::cluster_env(&cfg.cluster_id, cfg.network.as_deref()),
        vec![env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT")],
        istio_proxy::workload_env(
            &facts.workload.name,
            facts.workload.owner_uri(facts.namespace),
        ),
        istio_proxy::trust_domain_env(&cfg.mesh_id, &cfg.trust_domain),
    ]
    .concat();
    if !facts.probers.is_empty() {
        env_vars.push(env("ISTIO_KUBE_APP_PROBERS", to_json(facts.probers)));
    }
    Container {
        name: names::PROXY.into(),
        image: Some(s.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args),
        env: Some(env_vars),
        ports: Some(vec![istio_proxy::envoy_prometheus_port()]),
        readiness_probe: Some(health_probe(15, 4)),
        security_context: Some(SecurityContext {
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            ..Default::default()
        }),
        volume_mounts: Some(istio_proxy::proxy_mounts()),
        ..Default::default()
    }
}

/// The pod's security context with unprivileged ports from 0 (a gateway listens on 80 and 443
/// as uid 1337): the template's `sysctls` replace the pod's, its other fields stay.
pub(crate) fn pod_security_context(own: Option<PodSecurityContext>) -> PodSecurityContext {
    PodSecurityContext {
        sysctls: Some(vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: "0".into(),
        }]),
        ..own.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateway_template_alone_selects_it() {
        assert!(requested(Some("gateway")));
        assert!(requested(Some("gateway, gateway")));
        assert!(!requested(Some("sidecar")));
        assert!(!requested(Some("gateway,spire")));
        assert!(!requested(None));
    }
}
