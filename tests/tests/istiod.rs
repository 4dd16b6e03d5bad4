//! Istio's own istiod judges meshop's installation. For each profile, meshop installs a mesh in
//! the controllers-mode control plane (kwok fakes istiod's pods, so nothing of Istio runs there);
//! then the real `pilot-discovery discovery`, built from Istio's Go module, runs as a local
//! process authenticated as istiod's ServiceAccount, with the args, env and volumes of meshop's
//! istiod Deployment. It must become ready under meshop's RBAC and do its job: publish the root
//! certificate, create its CA Secret, win its leader Leases, report the mesh config meshop meant
//! and allocate an address to a ServiceEntry. Then the API server's audit log judges the RBAC
//! meshop gives istiod: no request of its ServiceAccount refused, and every (verb, group,
//! resource) its roles grant used, but for a few listed with the reason (`UNUSED_ALLOWED`).
//!
//! meshop's gateways' RBAC (a Role reading the Secrets of their own namespace, for SDS) has no
//! judge: no test runs a gateway's pilot-agent and Envoy.
//!
//! One istiod runs at a time: they would overwrite each other's root certificate in every
//! namespace, and on two cores the time to ready would measure the neighbours.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::audit;
use meshop_testenv::istio::{IstioBinaries, LocalIstiod};
use serde_json::{Value, json};

/// Ready takes longer with other tests installing meshes at the same time.
const MESH_READY: Duration = Duration::from_secs(180);
/// istiod itself is ready in seconds; the bound leaves room for a busy two-core machine.
const ISTIOD_READY: Duration = Duration::from_secs(90);

static ONE_ISTIOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a profile's mesh must look like to istiod.
struct Expect {
    profile: &'static str,
    /// The MeshInstall's name and its control-plane namespace.
    name: &'static str,
    namespace: &'static str,
    access_log_file: &'static str,
    mtls: &'static str,
    /// `spec.meshConfig` beyond the profile (null for none): istiod must report each of its
    /// top-level fields as given, in `/debug/mesh` (merged as istiod merges mesh config).
    mesh_config: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_on_the_minimal_profile() {
    judge(Expect {
        profile: "minimal",
        name: "istiod-minimal",
        namespace: "istiod-minimal-system",
        access_log_file: "",
        mtls: "PERMISSIVE",
        mesh_config: Value::Null,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_on_the_demo_profile() {
    judge(Expect {
        profile: "demo",
        name: "istiod-demo",
        namespace: "istiod-demo-system",
        access_log_file: "/dev/stdout",
        mtls: "PERMISSIVE",
        mesh_config: Value::Null,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_on_the_production_profile() {
    judge(Expect {
        profile: "production",
        name: "istiod-production",
        namespace: "istiod-production-system",
        access_log_file: "",
        mtls: "STRICT",
        mesh_config: Value::Null,
    })
    .await;
}

/// Istio's own MeshConfig fields in `spec.meshConfig` (an OpenTelemetry tracer and an ext-authz
/// provider, default providers, discovery selectors, proxy metadata) reach istiod as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_with_istios_own_mesh_config_fields() {
    let namespace = "istiod-meshcfg-system";
    judge(Expect {
        profile: "minimal",
        name: "istiod-meshcfg",
        namespace,
        access_log_file: "/var/log/istio/access.log",
        mtls: "PERMISSIVE",
        mesh_config: json!({
            "accessLogFile": "/var/log/istio/access.log",
            "extensionProviders": [
                { "name": "otel-tracing", "opentelemetry": {
                    "service": "otel-collector.observability.svc.cluster.local", "port": 4317 } },
                { "name": "ext-authz", "envoyExtAuthzHttp": {
                    "service": "authz.security.svc.cluster.local", "port": 8000,
                    "includeRequestHeadersInCheck": ["authorization", "x-user"],
                    "headersToUpstreamOnAllow": ["x-user-id"] } },
            ],
            "defaultProviders": { "tracing": ["otel-tracing"], "metrics": ["prometheus"] },
            // The workload namespaces that ask for injection, and the control plane's own.
            "discoverySelectors": [
                { "matchLabels": { "istio-injection": "enabled" } },
                { "matchLabels": { "kubernetes.io/metadata.name": namespace } },
            ],
            "defaultConfig": {
                "proxyMetadata": { "ISTIO_META_DNS_CAPTURE": "true", "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true" },
            },
        }),
    })
    .await;
}

async fn judge(expect: Expect) {
    let Expect {
        profile,
        name,
        namespace: ns,
        ..
    } = expect;
    // First, so a missing build fails at once with how to get it.
    let istio = IstioBinaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    // The audit log judges istiod's RBAC (`least_privilege`); first, so the operator shares it.
    let cp = meshop_testenv::shared_with_audit();
    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    // A workload namespace that asks for injection: istiod must publish its root certificate
    // there. On failure its guard prints where every log is, istiod's included.
    let app = meshop_testenv::namespace(&client, "istiod-app")
        .await
        .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            &app.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "istio-injection": "enabled" } } })),
        )
        .await
        .unwrap();

    let meshes: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": { "profile": profile, "namespace": ns, "meshConfig": expect.mesh_config }
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, name, KStatus::Current, MESH_READY).await;

    // The mesh config meshop meant, from its ConfigMap.
    let intended: Value = {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get("istio")
            .await
            .unwrap();
        serde_yaml::from_str(&cm.data.unwrap()["mesh"]).unwrap()
    };

    let _one = ONE_ISTIOD_AT_A_TIME.lock().await;
    // A ServiceEntry without addresses: istiod allocates it one and patches it into its status.
    // Created once no other istiod runs, so that this one is the one to do it.
    let service_entries: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &app.name,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "networking.istio.io",
            "v1",
            "ServiceEntry",
        )),
    );
    let entry: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": { "name": "external" },
        "spec": { "hosts": ["external.example.com"], "location": "MESH_EXTERNAL",
            "resolution": "DNS", "ports": [{ "number": 80, "name": "http", "protocol": "HTTP" }] }
    }))
    .unwrap();
    service_entries
        .create(&PostParams::default(), &entry)
        .await
        .unwrap();

    let mut istiod = LocalIstiod::start(cp, &client, &istio, ns, "istiod", profile)
        .await
        .unwrap();
    let took = match istiod.wait_ready(ISTIOD_READY).await {
        Ok(took) => took,
        Err(e) => panic!(
            "{e:#}\nrefused by meshop's RBAC:\n{}",
            refusals(&istiod.log()).join("\n")
        ),
    };
    eprintln!(
        "istiod on profile {profile}: ready in {:.1}s",
        took.as_secs_f64()
    );

    // Its self-signed CA, kept in a Secret of the control-plane namespace.
    let ca = Api::<Secret>::namespaced(client.clone(), ns)
        .get("istio-ca-secret")
        .await
        .expect("istiod created its CA Secret istio-ca-secret");
    assert_eq!(ca.type_.as_deref(), Some("istio.io/ca-root"));
    let ca_cert = String::from_utf8(ca.data.unwrap()["ca-cert.pem"].0.clone()).unwrap();
    assert!(ca_cert.contains("BEGIN CERTIFICATE"), "{ca_cert}");

    // That CA's root, published into the injection-labelled namespace.
    let root_certs: Api<ConfigMap> = Api::namespaced(client.clone(), &app.name);
    meshop_testenv::wait_until(
        "istio-ca-root-cert published with istiod's root",
        Duration::from_secs(30),
        || async {
            let cm = root_certs.get("istio-ca-root-cert").await?;
            let root = cm.data.unwrap_or_default().remove("root-cert.pem");
            anyhow::ensure!(
                root.as_deref().map(str::trim) == Some(ca_cert.trim()),
                "root-cert.pem {root:?}"
            );
            Ok(())
        },
    )
    .await;

    // The leader Leases its controllers take, held under its pod name.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let held = meshop_testenv::wait_until("istiod's Leases", Duration::from_secs(60), || async {
        let held: Vec<String> = leases
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|l| {
                l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                    == Some(istiod.pod_name.as_str())
            })
            .filter_map(|l| l.metadata.name)
            .collect();
        let want = "istio-gateway-status-leader-default";
        anyhow::ensure!(
            held.iter().any(|h| h == want),
            "{want} not held; held: {held:?}"
        );
        Ok(held)
    })
    .await;
    eprintln!("istiod on profile {profile}: holds Leases {held:?}");
    // Its Gateway API deployment controller is off (meshop deploys gateways; istiod writes no
    // workloads), so it never runs for that Lease.
    assert!(
        !held.iter().any(|h| h == "istio-gateway-deployment-default"),
        "{held:?}"
    );

    // The mesh config it runs with, as it reports it.
    let (status, body) = istiod.get("/debug/mesh").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mesh: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(mesh["trustDomain"], intended["trustDomain"], "{mesh:#}");
    assert_eq!(mesh["trustDomain"], "cluster.local", "{mesh:#}");
    assert_eq!(mesh["rootNamespace"], ns, "{mesh:#}");
    assert_eq!(
        mesh["outboundTrafficPolicy"]["mode"], intended["outboundTrafficPolicy"]["mode"],
        "{mesh:#}"
    );
    assert_eq!(
        mesh["outboundTrafficPolicy"]["mode"], "ALLOW_ANY",
        "{mesh:#}"
    );
    // An empty access log file is left out of the JSON.
    assert_eq!(
        mesh["accessLogFile"].as_str().unwrap_or_default(),
        expect.access_log_file,
        "{mesh:#}"
    );
    assert_eq!(
        mesh["defaultProviders"]["metrics"],
        json!(["prometheus"]),
        "sidecars emit Istio's standard metrics only with a default metrics provider: {mesh:#}"
    );
    assert_eq!(
        mesh["defaultConfig"]["discoveryAddress"], intended["defaultConfig"]["discoveryAddress"],
        "{mesh:#}"
    );
    // Istio's own fields of spec.meshConfig, each as given.
    if let Some(given) = expect.mesh_config.as_object() {
        for (field, value) in given {
            match field.as_str() {
                // Merged by name onto istiod's own providers: each given one, as given.
                "extensionProviders" => {
                    for p in value.as_array().unwrap() {
                        let found = mesh[field]
                            .as_array()
                            .and_then(|l| l.iter().find(|e| e["name"] == p["name"]));
                        assert_eq!(found, Some(p), "{field} {}: {mesh:#}", p["name"]);
                    }
                }
                // Merged field by field onto meshop's: each given field, as given.
                "defaultConfig" | "defaultProviders" => {
                    for (k, v) in value.as_object().unwrap() {
                        assert_eq!(&mesh[field][k], v, "{field}.{k}: {mesh:#}");
                    }
                }
                _ => assert_eq!(&mesh[field], value, "{field}: {mesh:#}"),
            }
        }
    }

    // mTLS is not mesh config but the root namespace's PeerAuthentication: istiod must have read
    // meshop's, with the profile's mode.
    let (status, body) = istiod.get("/debug/configz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let configs: Vec<Value> = serde_json::from_str(&body).unwrap();
    let peer_auth = configs
        .iter()
        .find(|c| {
            c["kind"] == "PeerAuthentication"
                && c["metadata"]["namespace"] == ns
                && c["metadata"]["name"] == "default"
        })
        .unwrap_or_else(|| panic!("no PeerAuthentication {ns}/default in {body}"));
    assert_eq!(
        peer_auth["spec"]["mtls"]["mode"], expect.mtls,
        "{peer_auth:#}"
    );

    // It writes its CA into its own validating webhook configuration, which it may update.
    let own = format!("istio-validator-{ns}");
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    meshop_testenv::wait_until(
        "istiod's CA bundle in its validating webhook configuration",
        Duration::from_secs(60),
        || async {
            let c = configurations.get(&own).await?;
            let with_ca = c
                .webhooks
                .iter()
                .flatten()
                .filter(|w| {
                    w.client_config
                        .ca_bundle
                        .as_ref()
                        .is_some_and(|b| !b.0.is_empty())
                })
                .count();
            anyhow::ensure!(with_ca == c.webhooks.map_or(0, |w| w.len()) && with_ca > 0);
            Ok(())
        },
    )
    .await;

    meshop_testenv::wait_until(
        "an address allocated to the ServiceEntry",
        Duration::from_secs(60),
        || async {
            let entry = service_entries.get("external").await?;
            let addresses = &entry.data["status"]["addresses"];
            anyhow::ensure!(
                addresses.as_array().is_some_and(|a| !a.is_empty()),
                "status {}",
                entry.data["status"]
            );
            Ok(())
        },
    )
    .await;

    // Last, so every controller had its chance to be refused. Istio's validation controller
    // patches every configuration labelled with its revision, so the other default-revision
    // control planes of this cluster (the other profiles' tests) are candidates too: RBAC
    // refusing it theirs is meshop's least privilege at work (they would otherwise overwrite
    // each other's CA bundle), and the only refusal allowed.
    let refused: Vec<String> = refusals(&istiod.log())
        .into_iter()
        .filter(|l| !foreign_validator(l, &own))
        .collect();
    assert!(
        refused.is_empty(),
        "istiod was refused by meshop's RBAC:\n{}",
        refused.join("\n")
    );
    least_privilege(cp, &client, profile, ns, &own).await;
    drop(istiod);
}

/// What istiod's RBAC grants and it may leave unused here, feature by feature: (verbs, API
/// group, resources, why). Every other (verb, group, resource) its roles grant it must use.
const UNUSED_ALLOWED: &[(&[&str], &str, &[&str], &str)] = &[
    (
        &["create"],
        "authentication.k8s.io",
        &["tokenreviews"],
        "its CA verifies the token of a proxy that asks for a workload certificate; no proxy \
         connects here",
    ),
    (
        &["create"],
        "authorization.k8s.io",
        &["subjectaccessreviews"],
        "asked over SDS for a TLS credential, it checks that the gateway may read it; no gateway \
         connects here",
    ),
    (
        &["create", "update", "patch", "delete"],
        "networking.istio.io",
        &["workloadentries"],
        "WorkloadEntry auto-registration of VMs (WorkloadGroup); no VM connects here",
    ),
    (
        &["update"],
        "networking.istio.io",
        &["workloadentries/status"],
        "the health of auto-registered VMs; no VM connects here",
    ),
    (
        &["update"],
        "networking.k8s.io",
        &["ingresses/status"],
        "the status of Ingresses of class istio, written by the ingress status leader; there is \
         no Ingress here",
    ),
    (
        &["update"],
        "",
        &["secrets"],
        "rotating its self-signed root when it nears expiry (after years)",
    ),
    (
        &["list", "watch"],
        "gateway.networking.k8s.io",
        GATEWAY_API,
        "Gateway API: istiod informs on it once its CRDs are installed; this cluster has none",
    ),
    (
        &["update"],
        "gateway.networking.k8s.io",
        GATEWAY_API_STATUS,
        "the status of Gateway API objects, written by the status leader; this cluster has none",
    ),
];

const GATEWAY_API: &[&str] = &[
    "backendtlspolicies",
    "gatewayclasses",
    "gateways",
    "grpcroutes",
    "httproutes",
    "listenersets",
    "referencegrants",
    "tcproutes",
    "tlsroutes",
];
const GATEWAY_API_STATUS: &[&str] = &[
    "backendtlspolicies/status",
    "gatewayclasses/status",
    "gateways/status",
    "grpcroutes/status",
    "httproutes/status",
    "listenersets/status",
    "tcproutes/status",
    "tlsroutes/status",
];

/// istiod's ServiceAccount, as the API server's audit log tells: no request refused but for
/// another control plane's validating configuration (see `foreign_validator`), and every
/// (verb, group, resource) the roles bound to it grant used, but for [`UNUSED_ALLOWED`].
///
/// The gateways' Role (Secrets of their namespace, read over SDS by their pilot-agent) is not
/// judged here or anywhere: no test runs a gateway's proxy.
async fn least_privilege(
    cp: &meshop_testenv::ControlPlane,
    client: &kube::Client,
    profile: &str,
    ns: &str,
    own_validator: &str,
) {
    // The account its Deployment names, as `LocalIstiod` runs it.
    let account = "istiod";
    let user = audit::service_account_user(ns, account);
    let events = audit::read(&cp.audit_log()).unwrap();
    let denied: Vec<String> = events
        .iter()
        .filter(|e| e.user == user && e.code == 403)
        .filter(|e| {
            !(e.access.resource == "validatingwebhookconfigurations"
                && e.access.name != own_validator
                && e.access.name.starts_with("istio-validator-"))
        })
        .map(|e| e.access.to_string())
        .collect();
    assert!(
        denied.is_empty(),
        "the API server refused istiod on profile {profile}: {denied:#?}"
    );

    let rules = audit::rules_bound_to(client, ns, account).await.unwrap();
    let granted = audit::grants(&rules);
    assert!(!granted.is_empty(), "no role is bound to {user}");
    let mut used = audit::used_grants(&events, &user);
    // client-go's informers stream their initial list over the watch (`sendInitialEvents`) where
    // the API server can, and list where it cannot: such a watch stands for the list.
    used.extend(
        events
            .iter()
            .filter(|e| e.user == user && e.verb == "watch" && e.code != 403)
            .filter(|e| e.uri.contains("sendInitialEvents=true"))
            .map(|e| {
                (
                    "list".to_string(),
                    e.access.group.clone(),
                    e.access.resource.clone(),
                )
            }),
    );
    let allowed: Vec<(&str, &str, &str, &str)> = UNUSED_ALLOWED
        .iter()
        .flat_map(|(verbs, group, resources, why)| {
            verbs.iter().flat_map(move |verb| {
                resources
                    .iter()
                    .map(move |resource| (*verb, *group, *resource, *why))
            })
        })
        .collect();
    let privilege = audit::privilege(&granted, &used, &allowed);
    eprintln!(
        "least privilege: istiod (profile {profile}) used {} of the {} (verb, group, resource) \
         its RBAC grants",
        privilege.used, privilege.granted
    );
    assert!(
        privilege.unused.is_empty(),
        "istiod's RBAC grants what it never used on profile {profile} (drop it from \
         render/istiod.rs, or list it with the reason in UNUSED_ALLOWED): {:#?}",
        privilege.unused
    );
    assert!(
        privilege.stale.is_empty(),
        "UNUSED_ALLOWED lists grants that were used or are not granted: {:?}",
        privilege.stale
    );
}

/// Whether a log line is about updating another control plane's validating configuration.
fn foreign_validator(line: &str, own: &str) -> bool {
    line.contains("cannot update resource \"validatingwebhookconfigurations\"")
        && !line.contains(&format!("\"{own}\""))
        && line.contains("\"istio-validator-")
}

/// The distinct `forbidden` lines of istiod's log, without their timestamps.
fn refusals(log: &str) -> Vec<String> {
    let mut lines: Vec<String> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .map(|l| l.split_once('\t').map_or(l, |(_, rest)| rest).to_string())
        .collect();
    lines.sort();
    lines.dedup();
    lines
}
