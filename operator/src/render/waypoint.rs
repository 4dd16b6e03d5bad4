//! Waypoints: the template istiod deploys each waypoint from, for ambient mode.
//!
//! A waypoint is a Gateway API `Gateway` of class `istio-waypoint`. istiod's gateway deployment
//! controller (on only in ambient mode, see [`super::istiod`]) renders the waypoint's objects from
//! the injection template the class names (`waypoint`), which it takes from its injector config:
//! the ConfigMap `istio-sidecar-injector[-<revision>]` of its namespace (keys `config` and
//! `values`), or files under `/var/lib/istio/inject`. meshop serves sidecar injection itself and
//! registers no istiod injection webhook, so that ConfigMap holds only meshop's own `waypoint`
//! template, written here, and injection `policy: disabled`.
//!
//! What istiod's controller (release-1.31, `pilot/pkg/config/kube/gatewaycommon/`) expects of the
//! template, and this one keeps to:
//! - it executes a Go `text/template` (with sprig's functions and Istio's `toJsonMap`, `strdict`,
//!   `protoToJSON`) on its `TemplateInput` (`.Name`, `.Namespace`, `.UID`, `.DeploymentName`,
//!   `.ServiceAccount`, `.GatewayClass`, `.ControllerLabel`, `.Ports`, `.ServiceType`,
//!   `.InfrastructureLabels`) plus `.ProxyConfig` (the mesh's proxy config with ProxyConfig
//!   resources merged);
//! - it splits the output into YAML documents and server-side applies each (field manager
//!   `istio.io/gateway-controller`, forced), refusing any kind but Deployment, DaemonSet, Service,
//!   ServiceAccount, HPA and PDB, any namespace but the Gateway's, and any name but the
//!   Deployment's or ServiceAccount's (or one starting with the Gateway's name); it adds the label
//!   `gateway.istio.io/managed` to each object's metadata itself;
//! - an HPA or PDB in the template is dropped unless the class's defaults ConfigMap or the
//!   Gateway's `parametersRef` overlays one; this template renders neither, so istiod never
//!   writes them (and meshop grants it no write on them);
//! - istiod and ztunnel know a waypoint's pods by the labels `gateway.networking.k8s.io/gateway-name`
//!   (the Gateway, also the Service's selector) and `gateway.istio.io/managed:
//!   istio.io-mesh-controller` (a waypoint, not a gateway); the pod runs `proxy waypoint` and
//!   must not be captured itself (`istio.io/dataplane-mode: none`, no sidecar);
//! - the Service carries `.Ports` as istiod computes them: `status-port` 15021 and the Gateway's
//!   listeners (`mesh` 15008, protocol HBONE, for a waypoint).
//!
//! Class `istio` (`kube-gateway` template: Gateway API ingress gateways deployed by istiod) gets no
//! template: meshop deploys ingress and egress gateways itself (`components.ingressGateway`,
//! `gateways`), and a `Gateway` of class `istio` in ambient mode is programmed but not deployed
//! by istiod (it logs `no "kube-gateway" template defined`). That keeps istiod's rights to
//! waypoints' ClusterIP Services; a LoadBalancer per Gateway would be istiod's to create.
//!
//! The template is built from the same pieces as meshop's gateways ([`crate::istio_proxy`]) as
//! JSON (a YAML subset), with Go template actions where istiod fills in the Gateway's values;
//! every such value is written through sprig's `toJson`, so it is quoted whatever it holds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, LocalObjectReference, PodSpec, Probe,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::common::{self, env, field_env, hardened_container, hardened_pod};
use super::{ComponentId, Rendered};
use crate::effective::Installation;
use crate::inject::keys;
use crate::istio_proxy::{self, ports};

/// The injection template the `istio-waypoint` class names (Istio's `ClassInfo.Templates`).
pub const TEMPLATE: &str = "waypoint";
/// The label istiod and ztunnel find a Gateway's pods by; the Service's selector.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
/// Set by istiod to the class's controller label (`istio.io-mesh-controller` for waypoints).
const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// HBONE, the port a waypoint receives ztunnel's tunnelled traffic on.
pub const HBONE_PORT: u16 = 15008;

/// `istio-sidecar-injector` or `istio-sidecar-injector-<revision>`: where istiod reads its
/// injector config from.
pub fn config_map_name(install: &Installation) -> String {
    format!("istio-sidecar-injector{}", install.revision_suffix())
}

/// The injector ConfigMap istiod deploys waypoints from, in ambient mode; nothing otherwise.
pub fn render(install: &Installation) -> Vec<Rendered> {
    if !install.ambient.enabled {
        return Vec::new();
    }
    let config = json!({
        // istiod's own injection webhook is never registered (INJECTION_WEBHOOK_CONFIG_NAME is
        // empty); were it called, it would inject nothing unasked.
        "policy": "disabled",
        "templates": { (TEMPLATE): template(install) },
    });
    // Istio's values, as far as anything reads them from this ConfigMap: istiod's deployment
    // controller labels a waypoint with `global.network` (`topology.istio.io/network`);
    // `istioctl analyze` reads `sidecarInjectorWebhook.enableNamespacesByDefault` (and panics
    // without it) and compares injected proxies' image with `global.hub`, `global.proxy.image`
    // and `global.tag`: the image meshop's webhook injects.
    let mut global = json!({
        "hub": install.hub.trim_end_matches('/'),
        "tag": install.version,
        "proxy": { "image": "proxyv2" },
    });
    if let Some(network) = &install.global.network {
        global["network"] = Value::String(network.clone());
    }
    let values = json!({
        "global": global,
        "sidecarInjectorWebhook": { "enableNamespacesByDefault": false },
    });
    let config_map = k8s_openapi::api::core::v1::ConfigMap {
        metadata: common::meta(install, ComponentId::Istiod, &config_map_name(install)),
        data: Some(BTreeMap::from([
            (
                "config".to_string(),
                crate::yaml::to_string(&config).unwrap_or_default(),
            ),
            ("values".to_string(), values.to_string()),
        ])),
        ..Default::default()
    };
    vec![Rendered::new(ComponentId::Istiod, &config_map)]
}

/// Go template actions, standing in the JSON as strings until [`finish`] writes them out.
struct Actions(Vec<String>);

impl Actions {
    /// A JSON value that istiod fills in: `{{ expr }}` in place of the whole value.
    fn value(&mut self, expr: &str) -> Value {
        self.0.push(expr.to_string());
        Value::String(format!("@@meshop-template-{}@@", self.0.len() - 1))
    }

    /// A string value from a template field, quoted by sprig's `toJson`.
    fn field(&mut self, field: &str) -> Value {
        self.value(&format!("toJson {field}"))
    }

    /// The JSON text with the actions written out. Literal `{{` in meshop's own values is
    /// escaped, so that only the actions are actions.
    fn finish(&self, document: &Value) -> String {
        let mut text = serde_json::to_string_pretty(document)
            .unwrap_or_default()
            .replace("{{", r#"{{"{{"}}"#);
        for (i, expr) in self.0.iter().enumerate() {
            text = text.replace(
                &format!("\"@@meshop-template-{i}@@\""),
                &format!("{{{{ {expr} }}}}"),
            );
        }
        text
    }
}

/// The metadata of each object: named by istiod, in the Gateway's namespace, owned by the Gateway
/// (so deleting the Gateway deletes its waypoint), labelled with the Gateway's infrastructure
/// labels and the Gateway's name and class.
fn metadata(a: &mut Actions, name_field: &str) -> Value {
    json!({
        "name": a.field(name_field),
        "namespace": a.field(".Namespace"),
        "labels": a.value(&format!(
            "toJsonMap .InfrastructureLabels (strdict {GATEWAY_NAME_LABEL:?} .Name \
             {GATEWAY_CLASS_LABEL:?} .GatewayClass)"
        )),
        "ownerReferences": [{
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "name": a.field(".Name"),
            "uid": a.field(".UID"),
        }],
    })
}

/// The `waypoint` template: a ServiceAccount, a Deployment running `proxy waypoint`, a Service.
pub fn template(install: &Installation) -> String {
    let mut a = Actions(Vec::new());
    let service_account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(&mut a, ".ServiceAccount"),
        // The proxy authenticates to istiod with its projected istio-ca token, never to the API
        // server.
        "automountServiceAccountToken": false,
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(&mut a, ".DeploymentName"),
        "spec": {
            "selector": { "matchLabels": { (GATEWAY_NAME_LABEL): a.field(".Name") } },
            "template": {
                "metadata": {
                    "labels": a.value(&format!(
                        "toJsonMap .InfrastructureLabels (strdict {GATEWAY_NAME_LABEL:?} .Name \
                         {GATEWAY_CLASS_LABEL:?} .GatewayClass {MANAGED_LABEL:?} .ControllerLabel \
                         {:?} \"false\" {:?} \"none\" {:?} .DeploymentName {:?} \"latest\")",
                        keys::INJECT,
                        "istio.io/dataplane-mode",
                        keys::CANONICAL_NAME,
                        keys::CANONICAL_REVISION,
                    )),
                    "annotations": {
                        (keys::REV): install.revision_label(),
                        (keys::PROMETHEUS_SCRAPE): "true",
                        (keys::PROMETHEUS_PORT): ports::AGENT_STATUS.to_string(),
                        (keys::PROMETHEUS_PATH): istio_proxy::PROMETHEUS_PATH,
                    },
                },
                "spec": pod(install, &mut a),
            },
        },
    });
    let mut service_metadata = metadata(&mut a, ".DeploymentName");
    // Traffic to a waypoint stays in its zone where it can.
    service_metadata["annotations"] =
        json!({ "networking.istio.io/traffic-distribution": "PreferClose" });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_metadata,
        "spec": {
            "type": a.field(".ServiceType"),
            "ipFamilyPolicy": "PreferDualStack",
            "selector": { (GATEWAY_NAME_LABEL): a.field(".Name") },
            // status-port and the Gateway's listeners (HBONE 15008 for a waypoint), as istiod
            // computes them.
            "ports": a.value(
                "$ps := list }}{{ range .Ports }}{{ $ps = append $ps (dict \"name\" .Name \
                 \"port\" .Port \"protocol\" \"TCP\" \"appProtocol\" .AppProtocol) }}{{ end }}\
                 {{ toJson $ps"
            ),
        },
    });
    [service_account, deployment, service]
        .iter()
        .map(|d| a.finish(d))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The waypoint's pod: meshop's proxy container in waypoint mode, hardened, without an API token.
fn pod(install: &Installation, a: &mut Actions) -> Value {
    let discovery_address = install.discovery_address();
    // Placeholders inside meshop's strings for what only istiod knows (`substitute_strings`).
    let workload_name = "@@deployment-name@@";
    let our_env = [
        istio_proxy::ca_env(discovery_address),
        istio_proxy::pod_env(),
        vec![
            istio_proxy::host_ip_env(),
            istio_proxy::service_account_env(),
            field_env("ISTIO_META_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ],
        istio_proxy::workload_env(
            workload_name,
            istio_proxy::owner_uri("apps/v1", "Deployment", "@@namespace@@", workload_name),
        ),
        istio_proxy::trust_domain_env(install.mesh_id(), &install.mesh.trust_domain),
        istio_proxy::cluster_env(
            &install.global.cluster_id,
            install.global.network.as_deref(),
        ),
        vec![
            env("ISTIO_META_INTERCEPTION_MODE", "REDIRECT"),
            env("PROXY_CONFIG", "@@proxy-config@@"),
            istio_proxy::resource_env("GOMEMLIMIT", "limits.memory"),
            istio_proxy::resource_env("GOMAXPROCS", "limits.cpu"),
        ],
    ]
    .concat();
    let ready = Probe {
        http_get: Some(HTTPGetAction {
            path: Some(istio_proxy::READY_PATH.into()),
            port: IntOrString::Int(ports::HEALTH.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(15),
        timeout_seconds: Some(1),
        failure_threshold: Some(4),
        ..Default::default()
    };
    let mut args: Vec<String> = [
        "proxy",
        "waypoint",
        "--domain",
        "$(POD_NAMESPACE).svc.cluster.local",
        "--serviceCluster",
        "@@service-cluster@@",
        "--proxyLogLevel=warning",
        "--proxyComponentLogLevel=misc:error",
    ]
    .map(String::from)
    .into();
    args.extend(super::istiod::log_args(install));
    let quantity = |q: &str| Quantity(q.to_string());
    let container = Container {
        name: istio_proxy::CONTAINER.into(),
        image: Some(istio_proxy::image(&install.hub, &install.version)),
        image_pull_policy: install.global.image_pull_policy.clone(),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("hbone".into()),
                container_port: HBONE_PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("status-port".into()),
                container_port: ports::HEALTH.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            istio_proxy::envoy_prometheus_port(),
        ]),
        env: Some(our_env),
        // Istio's defaults for waypoints (`global.waypoint.resources`).
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("100m")),
                ("memory".to_string(), quantity("128Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), quantity("2")),
                ("memory".to_string(), quantity("1Gi")),
            ])),
            ..Default::default()
        }),
        readiness_probe: Some(ready.clone()),
        startup_probe: Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(30),
            ..ready
        }),
        security_context: Some(hardened_container()),
        volume_mounts: Some(istio_proxy::proxy_mounts()),
        ..Default::default()
    };
    let spec = PodSpec {
        automount_service_account_token: Some(false),
        security_context: Some(hardened_pod(istio_proxy::UID)),
        containers: vec![container],
        volumes: Some(istio_proxy::sidecar_volumes()),
        termination_grace_period_seconds: Some(30),
        // The mesh's pull policy and secrets (`global.imagePullPolicy`, `imagePullSecrets`).
        image_pull_secrets: (!install.global.image_pull_secrets.is_empty()).then(|| {
            install
                .global
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        ..Default::default()
    };
    let mut spec = serde_json::to_value(spec).unwrap_or_default();
    substitute_strings(&mut spec, a);
    spec["serviceAccountName"] = a.field(".ServiceAccount");
    spec
}

/// Replaces the placeholders meshop left inside strings with actions that build the string in
/// the template: `"kubernetes://.../deployments/@@deployment-name@@"` becomes
/// `{{ toJson (print "kubernetes://.../deployments/" .DeploymentName) }}`.
fn substitute_strings(v: &mut Value, a: &mut Actions) {
    const FIELDS: &[(&str, &str)] = &[
        ("@@deployment-name@@", ".DeploymentName"),
        ("@@namespace@@", ".Namespace"),
        (
            "@@service-cluster@@",
            "(print .ServiceAccount \".$(POD_NAMESPACE)\")",
        ),
        ("@@proxy-config@@", "(protoToJSON .ProxyConfig)"),
    ];
    match v {
        Value::String(s) if FIELDS.iter().any(|(p, _)| s.contains(p)) => {
            let mut parts: Vec<String> = Vec::new();
            let mut rest = s.as_str();
            while !rest.is_empty() {
                let next = FIELDS
                    .iter()
                    .filter_map(|(p, f)| rest.find(p).map(|i| (i, *p, *f)))
                    .min_by_key(|(i, _, _)| *i);
                match next {
                    Some((i, p, f)) => {
                        if i > 0 {
                            parts.push(format!("{:?}", &rest[..i]));
                        }
                        parts.push(f.to_string());
                        rest = &rest[i + p.len()..];
                    }
                    None => {
                        parts.push(format!("{rest:?}"));
                        rest = "";
                    }
                }
            }
            *v = if parts.len() == 1 {
                a.value(&format!("toJson {}", parts[0]))
            } else {
                a.value(&format!("toJson (print {})", parts.join(" ")))
            };
        }
        Value::Array(items) => items.iter_mut().for_each(|i| substitute_strings(i, a)),
        Value::Object(map) => map.values_mut().for_each(|i| substitute_strings(i, a)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::effective::test_install as install;

    #[test]
    fn only_ambient_installs_get_the_injector_config_map_named_by_revision() {
        assert!(render(&install("profile: demo")).is_empty());
        let ambient = render(&install("profile: ambient"));
        assert_eq!(ambient.len(), 1);
        assert_eq!(ambient[0].name(), "istio-sidecar-injector");
        let canary = render(&install("profile: ambient\nrevision: canary"));
        assert_eq!(canary[0].name(), "istio-sidecar-injector-canary");
        let data = &canary[0].object.data["data"];
        let config: serde_json::Value =
            serde_yaml::from_str(data["config"].as_str().unwrap()).unwrap();
        assert_eq!(config["policy"], "disabled");
        assert!(config["templates"][TEMPLATE].is_string());
        let values: serde_json::Value =
            serde_json::from_str(data["values"].as_str().unwrap()).unwrap();
        assert_eq!(
            values["sidecarInjectorWebhook"]["enableNamespacesByDefault"],
            false
        );
        assert_eq!(values["global"]["proxy"]["image"], "proxyv2");
    }

    /// The template's three documents, with every action replaced by a value of the right kind,
    /// as istiod would fill them in.
    fn filled(template: &str) -> Vec<Value> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").unwrap() + start + 2;
            let action = &rest[start..end];
            if action.contains("toJsonMap") {
                out.push_str(r#"{"l": "v"}"#);
            } else if action.contains("$ps := list") {
                // The ports loop spans several actions, up to `toJson $ps`.
                let close = rest[start..].find("toJson $ps }}").unwrap() + start + 13;
                out.push_str(r#"[{"name": "mesh", "port": 15008}]"#);
                rest = &rest[close..];
                continue;
            } else if action.contains("\"{{\"") {
                out.push_str("{{");
            } else {
                out.push_str(r#""x""#);
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out.split("\n---\n")
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    }

    #[test]
    fn the_template_renders_a_service_account_deployment_and_service_and_nothing_of_meshops() {
        let docs = filled(&template(&install("profile: ambient")));
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
        for d in &docs {
            // Objects of the user's Gateway, not meshop's: no label meshop prunes by.
            assert_eq!(d["metadata"]["labels"], json!({ "l": "v" }), "{d:#}");
            assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "Gateway");
        }
        let pod = &docs[1]["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        let proxy = &pod["containers"][0];
        assert_eq!(proxy["args"][0], "proxy");
        assert_eq!(proxy["args"][1], "waypoint");
        assert_eq!(proxy["image"], "docker.io/istio/proxyv2:1.31.1");
        assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(docs[2]["spec"]["ports"][0]["port"], 15008);
    }

    #[test]
    fn meshops_own_values_cannot_open_an_action() {
        let t = template(&install(
            "profile: ambient\nglobal: { clusterName: 'a{{.Evil}}' }",
        ));
        assert!(!t.contains("{{.Evil}}"), "{t}");
        assert!(t.contains(r#"a{{"{{"}}.Evil}}"#), "{t}");
    }

    #[test]
    fn strings_with_istiods_values_are_built_in_the_template() {
        let t = template(&install("profile: ambient"));
        assert!(t.contains(
            r#"{{ toJson (print "kubernetes://apis/apps/v1/namespaces/" .Namespace "/deployments/" .DeploymentName) }}"#
        ), "{t}");
        assert!(t.contains(r#"{{ toJson (protoToJSON .ProxyConfig) }}"#));
        assert!(!t.contains("@@"), "a placeholder is left: {t}");
    }
}
