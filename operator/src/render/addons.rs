//! Observability addons for the demo profile: Prometheus, Grafana, Kiali and Jaeger. Each is one
//! Deployment with a Service, sized for trying the mesh out, with no persistence.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, PodSpec, Probe, Volume,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::json;

use super::common::{self, env, hardened_pod, meta, mount, policy_rule};
use super::workload::Workload;
use super::{ComponentId, Rendered};
use crate::effective::{Installation, Settings};

/// (port name, service port, container port).
type ServicePorts = Vec<(&'static str, i32, i32)>;

/// What differs between the addons.
struct Addon {
    component: ComponentId,
    name: &'static str,
    image: &'static str,
    uid: i64,
    args: Vec<String>,
    env: Vec<EnvVar>,
    /// (name, container port); the first one serves the readiness probe.
    ports: Vec<(&'static str, i32)>,
    ready_path: &'static str,
    /// (service name, [(port name, service port, container port)]).
    services: Vec<(&'static str, ServicePorts)>,
    /// ConfigMap `<name>` mounted at the path, with these files.
    config: Option<(&'static str, BTreeMap<String, String>)>,
    /// Writable emptyDirs (the root filesystem is read-only).
    scratch: Vec<(&'static str, &'static str)>,
    /// Cluster-wide read access the addon needs, if any.
    read_rules: Vec<PolicyRule>,
}

// Image tags are the addon versions meshop was written against; the hub applies to Istio only.
const PROMETHEUS_IMAGE: &str = "docker.io/prom/prometheus:v3.5.0";
/// Read-only access, the only kind the addons get.
fn read_rule(groups: &[&str], resources: &[&str]) -> PolicyRule {
    policy_rule(groups, resources, &["get", "list", "watch"])
}

const GRAFANA_IMAGE: &str = "docker.io/grafana/grafana:12.1.1";
const KIALI_IMAGE: &str = "quay.io/kiali/kiali:v2.15.0";
const JAEGER_IMAGE: &str = "docker.io/jaegertracing/all-in-one:1.72.0";

fn prometheus(install: &Installation) -> Addon {
    let config = format!(
        "global:\n  scrape_interval: 15s\nscrape_configs:\n\
         - job_name: kubernetes-pods\n  kubernetes_sd_configs:\n  - role: pod\n  relabel_configs:\n\
         \x20 - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]\n    action: keep\n    regex: \"true\"\n\
         \x20 - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]\n    action: replace\n    target_label: __metrics_path__\n    regex: (.+)\n\
         \x20 - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]\n    action: replace\n    regex: ([^:]+)(?::\\d+)?;(\\d+)\n    replacement: $1:$2\n    target_label: __address__\n\
         - job_name: istiod\n  kubernetes_sd_configs:\n  - role: endpoints\n    namespaces:\n      names: [{ns}]\n  relabel_configs:\n\
         \x20 - source_labels: [__meta_kubernetes_service_name, __meta_kubernetes_endpoint_port_name]\n    action: keep\n    regex: {istiod};http-monitoring\n",
        ns = install.namespace,
        istiod = install.istiod_name(),
    );
    Addon {
        component: ComponentId::Prometheus,
        name: "prometheus",
        image: PROMETHEUS_IMAGE,
        uid: 65534,
        args: vec![
            "--config.file=/etc/prometheus/prometheus.yml".into(),
            "--storage.tsdb.path=/prometheus".into(),
            "--storage.tsdb.retention.time=6h".into(),
            "--web.enable-lifecycle".into(),
        ],
        env: vec![],
        ports: vec![("http", 9090)],
        ready_path: "/-/ready",
        services: vec![("prometheus", vec![("http", 9090, 9090)])],
        config: Some((
            "/etc/prometheus",
            BTreeMap::from([("prometheus.yml".to_string(), config)]),
        )),
        scratch: vec![("data", "/prometheus")],
        read_rules: vec![
            read_rule(
                &[""],
                &[
                    "nodes",
                    "nodes/metrics",
                    "services",
                    "endpoints",
                    "pods",
                    "ingresses",
                    "configmaps",
                ],
            ),
            read_rule(&["discovery.k8s.io"], &["endpointslices"]),
        ],
    }
}

fn grafana(install: &Installation) -> Addon {
    let datasources = format!(
        "apiVersion: 1\ndatasources:\n- name: Prometheus\n  type: prometheus\n  access: proxy\n  url: http://prometheus.{}.svc:9090\n  isDefault: true\n",
        install.namespace
    );
    Addon {
        component: ComponentId::Grafana,
        name: "grafana",
        image: GRAFANA_IMAGE,
        uid: 472,
        args: vec![],
        env: vec![
            env("GF_PATHS_DATA", "/var/lib/grafana"),
            env("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"),
            env("GF_AUTH_ANONYMOUS_ENABLED", "true"),
            env("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"),
            env("GF_AUTH_BASIC_ENABLED", "false"),
        ],
        ports: vec![("http", 3000)],
        ready_path: "/api/health",
        services: vec![("grafana", vec![("http", 3000, 3000)])],
        config: Some((
            "/etc/grafana/provisioning/datasources",
            BTreeMap::from([("datasources.yaml".to_string(), datasources)]),
        )),
        scratch: vec![("data", "/var/lib/grafana"), ("tmp", "/tmp")],
        read_rules: vec![],
    }
}

fn kiali(install: &Installation) -> Addon {
    let mut read_rules = vec![
        read_rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "pods",
                "pods/log",
                "namespaces",
                "nodes",
                "replicationcontrollers",
                "services",
            ],
        ),
        read_rule(
            &["apps"],
            &["deployments", "replicasets", "statefulsets", "daemonsets"],
        ),
        read_rule(&["batch"], &["cronjobs", "jobs"]),
        read_rule(&["autoscaling"], &["horizontalpodautoscalers"]),
        read_rule(&["discovery.k8s.io"], &["endpointslices"]),
        super::istio_crds::gateway_api_rule(&["get", "list", "watch"], None),
    ];
    read_rules.extend(super::istio_crds::istio_rules(
        &["get", "list", "watch"],
        None,
    ));
    let config = format!(
        "auth:\n  strategy: anonymous\ndeployment:\n  namespace: {ns}\n  view_only_mode: true\n\
         istio_namespace: {ns}\nistio_labels:\n  app_label_name: app\n  version_label_name: version\n\
         external_services:\n  istio:\n    root_namespace: {ns}\n    config_map_name: istio{suffix}\n    istiod_deployment_name: {istiod}\n\
         \x20 prometheus:\n    url: http://prometheus.{ns}.svc:9090\n  grafana:\n    enabled: true\n    internal_url: http://grafana.{ns}.svc:3000\n\
         \x20 tracing:\n    enabled: true\n    internal_url: http://tracing.{ns}.svc:80/jaeger\n    use_grpc: false\n\
         server:\n  port: 20001\n  web_root: /kiali\n  observability:\n    metrics:\n      enabled: true\n      port: 9090\n",
        ns = install.namespace,
        suffix = install.revision_suffix(),
        istiod = install.istiod_name(),
    );
    Addon {
        component: ComponentId::Kiali,
        name: "kiali",
        image: KIALI_IMAGE,
        uid: 1000,
        args: vec!["-config".into(), "/kiali-configuration/config.yaml".into()],
        env: vec![common::field_env("ACTIVE_NAMESPACE", "metadata.namespace")],
        ports: vec![("api-port", 20001), ("http-metrics", 9090)],
        ready_path: "/kiali/healthz",
        services: vec![(
            "kiali",
            vec![("http", 20001, 20001), ("http-metrics", 9090, 9090)],
        )],
        config: Some((
            "/kiali-configuration",
            BTreeMap::from([("config.yaml".to_string(), config)]),
        )),
        scratch: vec![("tmp", "/tmp")],
        read_rules,
    }
}

fn jaeger(_install: &Installation) -> Addon {
    Addon {
        component: ComponentId::Jaeger,
        name: "jaeger",
        image: JAEGER_IMAGE,
        uid: 10001,
        args: vec!["--query.base-path=/jaeger".into()],
        env: vec![
            env("SPAN_STORAGE_TYPE", "memory"),
            env("MEMORY_MAX_TRACES", "50000"),
            env("COLLECTOR_ZIPKIN_HOST_PORT", ":9411"),
            env("COLLECTOR_OTLP_ENABLED", "true"),
        ],
        ports: vec![
            ("admin", 14269),
            ("query", 16686),
            ("zipkin", 9411),
            ("grpc-otlp", 4317),
            ("http-otlp", 4318),
        ],
        ready_path: "/",
        services: vec![
            ("tracing", vec![("http-query", 80, 16686)]),
            ("zipkin", vec![("http-query", 9411, 9411)]),
            (
                "jaeger-collector",
                vec![("grpc-otlp", 4317, 4317), ("http-otlp", 4318, 4318)],
            ),
        ],
        config: None,
        scratch: vec![("tmp", "/tmp")],
        read_rules: vec![],
    }
}

pub fn render(install: &Installation) -> Vec<Rendered> {
    let mut out = Vec::new();
    for (settings, build) in [
        (
            &install.prometheus,
            prometheus as fn(&Installation) -> Addon,
        ),
        (&install.grafana, grafana),
        (&install.kiali, kiali),
        (&install.jaeger, jaeger),
    ] {
        if settings.enabled {
            out.extend(render_addon(install, settings, build(install)));
        }
    }
    out
}

fn render_addon(install: &Installation, settings: &Settings, addon: Addon) -> Vec<Rendered> {
    let c = addon.component;
    let selector = BTreeMap::from([("app".to_string(), addon.name.to_string())]);
    let mut out = vec![common::service_account(install, c, addon.name)];
    if !addon.read_rules.is_empty() {
        let cluster_name = format!("{}-{}", addon.name, install.namespace);
        out.extend(common::cluster_role_for(
            install,
            c,
            &cluster_name,
            addon.name,
            addon.read_rules.clone(),
        ));
    }
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some((path, files)) = &addon.config {
        out.push(Rendered::new(
            c,
            &ConfigMap {
                metadata: meta(install, c, addon.name),
                data: Some(files.clone()),
                ..Default::default()
            },
        ));
        volumes.push(
            serde_json::from_value::<Volume>(
                json!({ "name": "config", "configMap": { "name": addon.name } }),
            )
            .expect("volume"),
        );
        mounts.push(mount("config", path, true));
    }
    for (name, path) in &addon.scratch {
        volumes.push(
            serde_json::from_value::<Volume>(json!({ "name": name, "emptyDir": {} }))
                .expect("volume"),
        );
        mounts.push(mount(name, path, false));
    }
    for (svc_name, ports) in &addon.services {
        out.push(Rendered::new(
            c,
            &common::service(install, c, svc_name, None, &selector, ports),
        ));
    }
    let probe = Probe {
        initial_delay_seconds: Some(5),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        ..common::http_probe(addon.ready_path, addon.ports[0].1)
    };
    let container = Container {
        name: addon.name.into(),
        image: Some(addon.image.into()),
        args: if addon.args.is_empty() {
            None
        } else {
            Some(addon.args.clone())
        },
        env: Some(addon.env.clone()),
        ports: Some(
            addon
                .ports
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.to_string()),
                    container_port: *port,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            failure_threshold: Some(6),
            ..probe
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    out.extend(
        Workload {
            install,
            component: c,
            name: addon.name,
            namespace: &install.namespace,
            settings,
            selector,
            labels: common::no_sidecar(),
            annotations: BTreeMap::new(),
            pod: PodSpec {
                service_account_name: Some(addon.name.into()),
                security_context: Some(hardened_pod(addon.uid)),
                containers: vec![container],
                volumes: Some(volumes),
                ..Default::default()
            },
            default_priority_class: None,
        }
        .deployment(),
    );
    out
}
