//! istiod: the control plane (xDS server, CA, config validation).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, Probe,
    ResourceFieldSelector, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{self, env, field_env, hardened_container, hardened_pod, meta, with_user_env};
use super::istio_crds::{gateway_api_rule, istio_rules};
use super::{ComponentId, Rendered};
use crate::effective::Installation;

const C: ComponentId = ComponentId::Istiod;
/// The uid istiod runs as (Istio's images use 1337).
pub const UID: i64 = 1337;

pub fn selector(install: &Installation) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), "istiod".to_string()),
        (
            "istio.io/rev".to_string(),
            install.revision_label().to_string(),
        ),
    ])
}

/// The cluster-scoped name: unique per namespace and revision, so two installs never collide.
fn cluster_name(install: &Installation) -> String {
    format!("{}-{}", install.istiod_name(), install.namespace)
}

pub fn render(install: &Installation) -> Vec<Rendered> {
    let name = install.istiod_name();
    let settings = &install.istiod;
    let selector = selector(install);
    let mut out = vec![
        Rendered::new(
            C,
            &ServiceAccount {
                metadata: meta(install, C, &name),
                ..Default::default()
            },
        ),
        Rendered::new(C, &cluster_role(install)),
        Rendered::new(C, &cluster_role_binding(install)),
        Rendered::new(C, &role(install)),
        Rendered::new(C, &role_binding(install)),
        Rendered::new(C, &service(install, &selector)),
        Rendered::new(C, &deployment(install, &selector)),
    ];
    if let Some(hpa) = common::hpa(install, C, &name, settings) {
        out.push(Rendered::new(C, &hpa));
    }
    if let Some(pdb) = common::pdb(install, C, &name, settings, &selector) {
        out.push(Rendered::new(C, &pdb));
    }
    out
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect());
    PolicyRule {
        api_groups: s(groups),
        resources: s(resources),
        verbs: verbs.iter().map(|x| x.to_string()).collect(),
        ..Default::default()
    }
}

const READ: &[&str] = &["get", "list", "watch"];
fn cluster_role(install: &Installation) -> ClusterRole {
    const STATUS: &[&str] = &["get", "update", "patch"];
    // Mesh configuration, and status written back to it.
    let mut rules = istio_rules(READ, None);
    rules.extend(istio_rules(STATUS, Some("status")));
    rules.extend([
        rule(
            &["networking.istio.io"],
            &["workloadentries"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        // Service discovery.
        rule(
            &[""],
            &["pods", "nodes", "services", "namespaces", "endpoints"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingressclasses"],
            READ,
        ),
        rule(&["networking.k8s.io"], &["ingresses/status"], STATUS),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
        // The root certificate is published to every namespace as a ConfigMap.
        rule(
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "update"],
        ),
        // Gateway TLS credentials.
        rule(&[""], &["secrets"], READ),
        // Workload identity: verifying service account tokens before signing certificates.
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
        // Kubernetes Gateway API support.
        gateway_api_rule(READ, None),
        gateway_api_rule(STATUS, Some("status")),
    ]);
    ClusterRole {
        metadata: common::cluster_meta(install, C, &cluster_name(install)),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

fn subject(install: &Installation) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: install.istiod_name(),
        namespace: Some(install.namespace.clone()),
        api_group: None,
    }]
}

fn cluster_role_binding(install: &Installation) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: common::cluster_meta(install, C, &cluster_name(install)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: cluster_name(install),
        },
        subjects: Some(subject(install)),
    }
}

fn role(install: &Installation) -> Role {
    Role {
        metadata: meta(install, C, &install.istiod_name()),
        // The self-signed CA keeps its key in a Secret of the control-plane namespace.
        rules: Some(vec![rule(
            &[""],
            &["secrets"],
            &["get", "list", "watch", "create", "update", "delete"],
        )]),
    }
}

fn role_binding(install: &Installation) -> RoleBinding {
    RoleBinding {
        metadata: meta(install, C, &install.istiod_name()),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: install.istiod_name(),
        },
        subjects: Some(subject(install)),
    }
}

/// istiod's ports: (name, service port, container port).
pub const PORTS: &[(&str, i32, i32)] = &[
    ("grpc-xds", 15010, 15010),
    ("https-dns", 15012, 15012),
    ("https-webhook", 443, 15017),
    ("http-monitoring", 15014, 15014),
];

fn service(install: &Installation, selector: &BTreeMap<String, String>) -> Service {
    Service {
        metadata: meta(install, C, &install.istiod_name()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector.clone()),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, port, target)| ServicePort {
                        name: Some(name.to_string()),
                        port: *port,
                        target_port: Some(IntOrString::Int(*target)),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

fn resource_env(name: &str, resource: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                resource: resource.into(),
                divisor: None,
                container_name: None,
            }),
            ..Default::default()
        }),
    }
}

fn deployment(install: &Installation, selector: &BTreeMap<String, String>) -> Deployment {
    let settings = &install.istiod;
    let name = install.istiod_name();
    let mut pod_labels = common::pod_labels(install, C, selector);
    pod_labels.insert("istio".into(), "pilot".into());
    pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
    let our_env = vec![
        env("REVISION", install.revision_label()),
        env("PILOT_CERT_PROVIDER", "istiod"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        env("KUBECONFIG", "/var/run/secrets/remote/config"),
        env(
            "PILOT_TRACE_SAMPLING",
            format!("{}", install.mesh.trace_sampling),
        ),
        env("PILOT_ENABLE_ANALYSIS", "false"),
        env("CLUSTER_ID", "Kubernetes"),
        // meshop serves sidecar injection itself; istiod must not manage an injection webhook.
        env("INJECTION_WEBHOOK_CONFIG_NAME", ""),
        env(
            "ISTIOD_CUSTOM_HOST",
            format!("{}.{}.svc", name, install.namespace),
        ),
        resource_env("GOMEMLIMIT", "limits.memory"),
        resource_env("GOMAXPROCS", "limits.cpu"),
    ];
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let volumes: Vec<Volume> = serde_json::from_value(json!([
        { "name": "local-certs", "emptyDir": { "medium": "Memory" } },
        { "name": "istio-token", "projected": { "sources": [{ "serviceAccountToken": {
            "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token" } }] } },
        { "name": "cacerts", "secret": { "secretName": "cacerts", "optional": true } },
        { "name": "istio-kubeconfig", "secret": { "secretName": "istio-kubeconfig", "optional": true } },
        { "name": "config-volume", "configMap": { "name": format!("istio{}", install.revision_suffix()) } },
    ]))
    .expect("static volume list");
    let ready = Probe {
        http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
            path: Some("/ready".into()),
            port: IntOrString::Int(8080),
            ..Default::default()
        }),
        initial_delay_seconds: Some(1),
        period_seconds: Some(3),
        timeout_seconds: Some(5),
        ..Default::default()
    };
    let container = Container {
        name: "discovery".into(),
        image: Some(install.image("pilot")),
        args: Some(
            [
                "discovery",
                "--monitoringAddr=:15014",
                "--log_output_level=default:info",
                "--domain",
                "cluster.local",
                "--keepaliveMaxServerConnectionAge",
                "30m",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        ports: Some(
            [
                ("http-debug", 8080),
                ("grpc-xds", 15010),
                ("https-dns", 15012),
                ("https-webhook", 15017),
                ("http-monitoring", 15014),
            ]
            .iter()
            .map(|(n, p)| ContainerPort {
                name: Some(n.to_string()),
                container_port: *p,
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect(),
        ),
        env: Some(with_user_env(our_env, settings)),
        resources: Some(settings.resources.clone()),
        readiness_probe: Some(ready.clone()),
        startup_probe: Some(Probe {
            failure_threshold: Some(60),
            initial_delay_seconds: Some(0),
            ..ready
        }),
        security_context: Some(hardened_container()),
        volume_mounts: Some(vec![
            mount("local-certs", "/var/run/secrets/istio-dns", false),
            mount("istio-token", "/var/run/secrets/tokens", true),
            mount("cacerts", "/etc/cacerts", true),
            mount("istio-kubeconfig", "/var/run/secrets/remote", true),
            mount("config-volume", "/etc/istio/config", true),
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(install, C, &name),
        spec: Some(DeploymentSpec {
            replicas: common::replicas(settings),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            },
            // Never below the wanted capacity during a rollout: upgrades must not drop the control plane.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("100%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        ("prometheus.io/scrape".to_string(), "true".to_string()),
                        ("prometheus.io/port".to_string(), "15014".to_string()),
                        ("sidecar.istio.io/inject".to_string(), "false".to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name.clone()),
                    security_context: Some(hardened_pod(UID)),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: settings.node_selector.clone(),
                    tolerations: settings.tolerations.clone(),
                    affinity: settings.affinity.clone(),
                    priority_class_name: None,
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}
