//! istiod: the control plane (xDS server, CA, config validation).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, Probe, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::common::{self, env, field_env, hardened_pod, mount, policy_rule, resource_env};
use super::istio_crds::{GATEWAY_API_RESOURCES, gateway_api_rule, istio_rules};
use super::workload::Workload;
use super::{ComponentId, Rendered, validation};
use crate::effective::Installation;
use k8s_openapi::api::rbac::v1::PolicyRule;

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
    let selector = selector(install);
    let mut out = vec![common::service_account(install, C, &name)];
    out.extend(common::cluster_role_for(
        install,
        C,
        &cluster_name(install),
        &name,
        cluster_rules(install),
    ));
    out.extend(common::role_for(
        install,
        C,
        &name,
        vec![
            // The self-signed CA keeps its key in a Secret of the control-plane namespace: istiod
            // reads it by name, creates it on first start and updates it when it rotates the root.
            // It deletes no Secret (Istio's own Role grants `delete`; nothing in istiod calls it).
            // Listing and watching Secrets is the ClusterRole's.
            policy_rule(&[""], &["secrets"], &["get", "create", "update"]),
            // Its other leader elections (ingress status, namespace controller, IP
            // auto-allocation) lock ConfigMaps here, and it looks for the injector's ConfigMap:
            // each read by name. Writing them is the ClusterRole's.
            policy_rule(&[""], &["configmaps"], &["get"]),
            // Per-revision leader elections (Gateway API status and deployment controllers) hold
            // Leases here; Istio's lease lock only gets, creates and updates them.
            policy_rule(
                &["coordination.k8s.io"],
                &["leases"],
                &["get", "create", "update"],
            ),
            // Before failing validation closed, istiod proves the API server reaches its webhook
            // with a dry-run create of a known-bad Gateway in its own namespace.
            policy_rule(&["networking.istio.io"], &["gateways"], &["create"]),
        ],
    ));
    out.push(Rendered::new(
        C,
        &common::service(install, C, &name, Some("ClusterIP"), &selector, PORTS),
    ));
    // Ambient mode: the template istiod deploys waypoints from.
    out.extend(super::waypoint::render(install));
    let workload = workload(install, &name, selector);
    out.extend(workload.deployment());
    out.extend(workload.network_policy());
    out
}

/// What istiod does with what it only reads: its informers list and watch (client-go streams the
/// initial list over the watch where the API server can, and lists where it cannot). It reads
/// nothing of these by name: every `get` it sends is on its own namespace's Secrets, ConfigMaps
/// and Leases (the Role).
const READ: &[&str] = &["list", "watch"];
/// A rule on one named object (`resourceNames`).
fn named_rule(group: &str, resource: &str, verbs: &[&str], name: &str) -> PolicyRule {
    PolicyRule {
        resource_names: Some(vec![name.to_string()]),
        ..policy_rule(&[group], &[resource], verbs)
    }
}

/// What istiod's ClusterRole grants. Held to what istiod uses by tests/tests/istiod.rs, which runs
/// the real istiod as this ServiceAccount and reads the API server's audit log.
fn cluster_rules(install: &Installation) -> Vec<PolicyRule> {
    // Mesh configuration. Istio writes the status of its own kinds only for its analysis
    // (PILOT_ENABLE_ANALYSIS, off), in ambient mode ([`ambient_rules`]) and for the two below. A user who turns either on through istiod's env needs to grant the rest.
    let mut rules = istio_rules(READ, None);
    rules.extend([
        // WorkloadEntry auto-registration of VMs (WorkloadGroup): entries created, updated and
        // removed as proxies connect and leave, and their health written to their status.
        policy_rule(
            &["networking.istio.io"],
            &["workloadentries"],
            &["create", "update", "patch", "delete"],
        ),
        policy_rule(
            &["networking.istio.io"],
            &["workloadentries/status"],
            &["update"],
        ),
        // Addresses auto-allocated to ServiceEntries that have none (PILOT_ENABLE_IP_AUTOALLOCATE,
        // on by default), patched into their status.
        policy_rule(
            &["networking.istio.io"],
            &["serviceentries/status"],
            &["patch"],
        ),
        // Service discovery (EndpointSlices: istiod no longer reads Endpoints).
        policy_rule(&[""], &["pods", "nodes", "services", "namespaces"], READ),
        policy_rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        // Kubernetes Ingress of class istio, and its status (written by the ingress status leader).
        policy_rule(
            &["networking.k8s.io"],
            &["ingresses", "ingressclasses"],
            READ,
        ),
        policy_rule(&["networking.k8s.io"], &["ingresses/status"], &["update"]),
        policy_rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
        // istiod's revision-tag and default-revision watchers and its validation controller
        // inform on webhook configurations, and its startup waits for those informers to sync.
        // It manages no injection webhook (INJECTION_WEBHOOK_CONFIG_NAME is empty: meshop injects).
        policy_rule(
            &["admissionregistration.k8s.io"],
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            READ,
        ),
        // Its validation controller writes the CA bundle and failure policy of its own validating
        // webhook configuration, and only that one (read from its informer, not by name).
        named_rule(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            &["update"],
            &validation::name(install),
        ),
        // The root certificate (and the CA's revocation list) is published to every namespace as
        // a ConfigMap, kept up to date from an informer.
        policy_rule(
            &[""],
            &["configmaps"],
            &["list", "watch", "create", "update"],
        ),
        // Gateway TLS credentials (SDS) and remote-cluster Secrets, from informers.
        policy_rule(&[""], &["secrets"], READ),
        // Workload identity: verifying service account tokens before signing certificates.
        policy_rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        // Whether a gateway may read the credential it asks for over SDS.
        policy_rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
        // Kubernetes Gateway API support, and the status of what it programs (written by its
        // status leader with an update; ReferenceGrants have no status).
        PolicyRule {
            resources: Some(istiod_gateway_api().map(String::from).collect()),
            ..gateway_api_rule(READ, None)
        },
        PolicyRule {
            resources: Some(
                istiod_gateway_api()
                    .filter(|r| *r != "referencegrants")
                    .map(|r| format!("{r}/status"))
                    .collect(),
            ),
            ..gateway_api_rule(&["update"], None)
        },
    ]);
    if install.ambient.enabled {
        rules.extend(ambient_rules());
    }
    rules
}

/// The Gateway API kinds istiod informs on: all of meshop's list but UDPRoute, which istiod
/// implements no controller for (it never lists it, tests/tests/ambient_istiod.rs).
fn istiod_gateway_api() -> impl Iterator<Item = &'static str> {
    GATEWAY_API_RESOURCES
        .iter()
        .copied()
        .filter(|r| *r != "udproutes")
}

/// What istiod needs beyond sidecar mode when it runs ambient mode (`PILOT_ENABLE_AMBIENT` and its
/// Gateway API deployment controller): deploying waypoints, creating its GatewayClasses and
/// writing ambient status. Istio grants full CRUD on Deployments, Services, ServiceAccounts, HPAs
/// and PDBs (ClusterRole `istiod-gateway-controller-<ns>`); istiod's code only server-side
/// applies (`patch`, and `create` where the apply creates) and informs (`list`, `watch`), and meshop's waypoint template renders no HPA
/// or PDB (render/waypoint.rs). Held to what istiod uses by tests/tests/ambient_istiod.rs.
fn ambient_rules() -> Vec<PolicyRule> {
    vec![
        // The deployment controller server-side applies each waypoint's Deployment and
        // ServiceAccount (its Service is below), reading them from informers it waits to sync.
        // An apply that creates its object is authorized as a `create` too. A waypoint's objects
        // are owned by its Gateway: the garbage collector deletes them, not istiod.
        policy_rule(
            &["apps"],
            &["deployments"],
            &["list", "watch", "create", "patch"],
        ),
        policy_rule(
            &[""],
            &["serviceaccounts"],
            &["list", "watch", "create", "patch"],
        ),
        // Services are read for discovery (above); the waypoint's own is applied.
        policy_rule(&[""], &["services"], &["create", "patch"]),
        // The controller informs on HPAs and PDBs (an overlay may add them) and its start waits
        // for those informers; meshop's template renders neither, so it never writes them.
        policy_rule(&["autoscaling"], &["horizontalpodautoscalers"], READ),
        policy_rule(&["policy"], &["poddisruptionbudgets"], READ),
        // Its class controller creates the GatewayClasses it serves (`istio`, `istio-waypoint`)
        // where absent; it never updates or deletes them. `create` cannot be limited by name.
        policy_rule(
            &["gateway.networking.k8s.io"],
            &["gatewayclasses"],
            &["create"],
        ),
        // The deployment controller marks each Gateway it manages with its controller version,
        // a server-side apply on the status subresource.
        policy_rule(
            &["gateway.networking.k8s.io"],
            &["gateways/status"],
            &["patch"],
        ),
        // Ambient status: which waypoint a Service is bound to, and whether ztunnel or a
        // waypoint enforces an AuthorizationPolicy, server-side applied by its status leader.
        policy_rule(&[""], &["services/status"], &["patch"]),
        policy_rule(
            &["security.istio.io"],
            &["authorizationpolicies/status"],
            &["patch"],
        ),
    ]
}

/// istiod's ports: (name, service port, container port).
pub const PORTS: &[(&str, i32, i32)] = &[
    ("grpc-xds", 15010, 15010),
    ("https-dns", 15012, 15012),
    ("https-webhook", 443, 15017),
    ("http-monitoring", 15014, 15014),
];

/// The `--log_output_level` and, when asked for, `--log_as_json` of istiod and the gateways'
/// agent (`spec.global.logLevel`, `logAsJson`).
pub(super) fn log_args(install: &Installation) -> Vec<String> {
    let mut args = vec![format!("--log_output_level={}", install.global.log_level)];
    if install.global.log_as_json {
        args.push("--log_as_json".into());
    }
    args
}

fn workload<'a>(
    install: &'a Installation,
    name: &'a str,
    selector: BTreeMap<String, String>,
) -> Workload<'a> {
    let mut labels = common::no_sidecar();
    labels.insert("istio".into(), "pilot".into());
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
        // Gateway API "automated deployment" has istiod create Deployments, Services and
        // ServiceAccounts in any namespace. Ambient mode needs it: waypoints are deployed that
        // way. Otherwise meshop deploys the gateways itself and keeps istiod from writing
        // workloads; istiod still programs Gateway API resources bound to them.
        env(
            "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER",
            install.ambient.enabled.to_string(),
        ),
        // ztunnel asks for the certificates of the workloads on its node with its own token.
        env(
            "CA_TRUSTED_NODE_ACCOUNTS",
            format!("{}/{}", install.namespace, super::ztunnel::NAME),
        ),
        env("CLUSTER_ID", install.global.cluster_id.clone()),
        // meshop serves sidecar injection itself; istiod must not manage an injection webhook.
        env("INJECTION_WEBHOOK_CONFIG_NAME", ""),
        // Non-empty turns istiod's validation controller on. In the Istio versions meshop installs
        // the controller finds its configuration by the label istio.io/rev=<REVISION>; the name is
        // given anyway so the variable names the configuration that is istiod's.
        env("VALIDATION_WEBHOOK_CONFIG_NAME", validation::name(install)),
        env(
            "ISTIOD_CUSTOM_HOST",
            format!("{}.{}.svc", name, install.namespace),
        ),
        resource_env("GOMEMLIMIT", "limits.memory"),
        resource_env("GOMAXPROCS", "limits.cpu"),
    ];
    let mut our_env = our_env;
    if install.ambient.enabled {
        // Serve ztunnel (workload addresses and certificates over HBONE) and waypoints.
        our_env.push(env("PILOT_ENABLE_AMBIENT", "true"));
    }
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
    let mut args: Vec<String> = vec!["discovery".into(), "--monitoringAddr=:15014".into()];
    args.extend(log_args(install));
    args.extend(
        [
            "--domain",
            "cluster.local",
            "--keepaliveMaxServerConnectionAge",
            "30m",
        ]
        .map(String::from),
    );
    let container = Container {
        name: "discovery".into(),
        image: Some(install.image("pilot")),
        args: Some(args),
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
        env: Some(our_env),
        readiness_probe: Some(ready.clone()),
        startup_probe: Some(Probe {
            failure_threshold: Some(60),
            initial_delay_seconds: Some(0),
            ..ready
        }),
        volume_mounts: Some(vec![
            mount("local-certs", "/var/run/secrets/istio-dns", false),
            mount("istio-token", "/var/run/secrets/tokens", true),
            mount("cacerts", "/etc/cacerts", true),
            mount("istio-kubeconfig", "/var/run/secrets/remote", true),
            mount("config-volume", "/etc/istio/config", true),
        ]),
        ..Default::default()
    };
    Workload {
        install,
        component: C,
        name,
        namespace: &install.namespace,
        settings: &install.istiod,
        selector,
        labels,
        annotations: BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("prometheus.io/port".to_string(), "15014".to_string()),
            ("sidecar.istio.io/inject".to_string(), "false".to_string()),
        ]),
        pod: PodSpec {
            service_account_name: Some(name.into()),
            security_context: Some(hardened_pod(UID)),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        },
        default_priority_class: None,
    }
}
