//! Istio's own istiod judges meshop's ambient installation, waypoints included. meshop installs
//! the `ambient` profile in the controllers-mode control plane (kwok fakes the pods), then the real
//! `pilot-discovery discovery` runs as a local process authenticated as istiod's ServiceAccount,
//! with the args, env and volumes of meshop's istiod Deployment (as in tests/tests/istiod.rs).
//!
//! It must become ready under meshop's RBAC, create its GatewayClasses (`istio-waypoint` among
//! them) in the Gateway API CRDs meshop installed, and deploy a waypoint: `istioctl waypoint apply
//! --enroll-namespace --wait` applies a `Gateway` of class `istio-waypoint` as users do, and
//! istiod's gateway deployment controller must create its ServiceAccount, Deployment and Service
//! from meshop's `waypoint` template (render/waypoint.rs) and report it Programmed. An
//! AuthorizationPolicy attached to the waypoint and a Service of the enrolled namespace get their
//! ambient status from istiod. `istioctl analyze` then reports no error. Last, the API server's
//! audit log judges istiod's RBAC both ways: no request refused, and every (verb, group, resource)
//! granted used, but for the few listed with their reason (`UNUSED_ALLOWED`).
//!
//! Its own test binary: the Gateway API CRDs it installs would change what the sidecar-mode
//! istiods of tests/tests/istiod.rs use.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::audit;
use meshop_testenv::istio::{IstioBinaries, LocalIstiod};
use serde_json::json;

const MESH_READY: Duration = Duration::from_secs(180);
const ISTIOD_READY: Duration = Duration::from_secs(90);

fn gateway_api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        kind,
    ));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn istioctl(cp: &meshop_testenv::ControlPlane, args: &[&str]) -> (bool, String) {
    let bin = IstioBinaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let out = Command::new(&bin.istioctl)
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_deploys_a_waypoint_on_the_ambient_profile() {
    let istio = IstioBinaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let cp = meshop_testenv::shared_with_audit();
    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    let (name, ns) = ("ambient", "ambient-system");

    let meshes: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": { "profile": "ambient", "namespace": ns }
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, name, KStatus::Current, MESH_READY).await;

    // An enrolled namespace with a Service: its traffic goes through the waypoint.
    let app = meshop_testenv::namespace(&client, "ambient-app")
        .await
        .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            &app.name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { "istio.io/dataplane-mode": "ambient" } } }),
            ),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &app.name);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "echo" },
                "spec": { "selector": { "app": "echo" },
                    "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let mut istiod = LocalIstiod::start(cp, &client, &istio, ns, "istiod", "ambient")
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
        "istiod on profile ambient: ready in {:.1}s",
        took.as_secs_f64()
    );

    // Its class controller creates the classes it serves in meshop's Gateway API CRDs.
    let classes = gateway_api(&client, "GatewayClass", None);
    let waypoint_class = meshop_testenv::wait_until(
        "istiod creates GatewayClass istio-waypoint",
        Duration::from_secs(60),
        || async { Ok(classes.get("istio-waypoint").await?) },
    )
    .await;
    assert_eq!(
        waypoint_class.data["spec"]["controllerName"], "istio.io/mesh-controller",
        "{:#}",
        waypoint_class.data
    );

    // A waypoint, applied as users apply one; --wait returns once istiod reports it Programmed.
    let (ok, out) = istioctl(
        cp,
        &[
            "waypoint",
            "apply",
            "-n",
            &app.name,
            "--enroll-namespace",
            "--wait",
            "--waypoint-timeout",
            "120s",
        ],
    );
    eprintln!("istioctl waypoint apply:\n{out}");
    assert!(
        ok,
        "istioctl waypoint apply failed:\n{out}\nistiod refused:\n{}\nistiod's log: {}",
        refusals(&istiod.log()).join("\n"),
        istiod.process.log.display()
    );

    // Its objects, created by istiod from meshop's template, owned by the Gateway.
    let gateway = gateway_api(&client, "Gateway", Some(&app.name))
        .get("waypoint")
        .await
        .unwrap();
    let owned_by_gateway =
        |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.iter().flatten().any(|r| {
                r.kind == "Gateway"
                    && r.name == "waypoint"
                    && Some(&r.uid) == gateway.metadata.uid.as_ref()
            })
        };
    let by_istiod = |managers: &Option<
        Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry>,
    >| {
        managers
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("istio.io/gateway-controller"))
    };
    let deployment = Api::<Deployment>::namespaced(client.clone(), &app.name)
        .get("waypoint")
        .await
        .expect("istiod created the waypoint's Deployment");
    assert!(owned_by_gateway(&deployment.metadata.owner_references));
    assert!(by_istiod(&deployment.metadata.managed_fields));
    let template = deployment.spec.as_ref().unwrap().template.clone();
    let labels = template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "waypoint");
    assert_eq!(
        labels["gateway.istio.io/managed"],
        "istio.io-mesh-controller"
    );
    assert_eq!(labels["istio.io/dataplane-mode"], "none");
    let pod = template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("waypoint"));
    let proxy = &pod.containers[0];
    assert_eq!(
        proxy.args.as_ref().unwrap()[..2],
        ["proxy".to_string(), "waypoint".to_string()]
    );
    assert!(
        proxy.image.as_deref().unwrap().contains("/proxyv2:"),
        "{:?}",
        proxy.image
    );
    let account = Api::<ServiceAccount>::namespaced(client.clone(), &app.name)
        .get("waypoint")
        .await
        .expect("istiod created the waypoint's ServiceAccount");
    assert!(owned_by_gateway(&account.metadata.owner_references));
    let service = services
        .get("waypoint")
        .await
        .expect("istiod created the waypoint's Service");
    assert!(owned_by_gateway(&service.metadata.owner_references));
    assert!(by_istiod(&service.metadata.managed_fields));
    let spec = service.spec.unwrap();
    assert_eq!(
        spec.selector.unwrap()["gateway.networking.k8s.io/gateway-name"],
        "waypoint"
    );
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.name.unwrap_or_default(),
                p.port,
                p.app_protocol.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        ports.contains(&("mesh".into(), 15008, "hbone".into())),
        "{ports:?}"
    );
    assert!(
        ports.contains(&("status-port".into(), 15021, "tcp".into())),
        "{ports:?}"
    );
    eprintln!("waypoint Service ports: {ports:?}");

    // An AuthorizationPolicy attached to the waypoint: istiod reports which proxy enforces it.
    let policies: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &app.name,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "security.istio.io",
            "v1",
            "AuthorizationPolicy",
        )),
    );
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": { "name": "at-waypoint" },
                "spec": {
                    "targetRefs": [{ "kind": "Gateway", "group": "gateway.networking.k8s.io",
                        "name": "waypoint" }],
                    "action": "ALLOW",
                    "rules": [{ "to": [{ "operation": { "methods": ["GET"] } }] }]
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "istiod writes the AuthorizationPolicy's ambient status",
        Duration::from_secs(60),
        || async {
            let p = policies.get("at-waypoint").await?;
            let conditions = &p.data["status"]["conditions"];
            anyhow::ensure!(
                conditions.as_array().is_some_and(|c| !c.is_empty()),
                "status {}",
                p.data["status"]
            );
            Ok(())
        },
    )
    .await;
    // The Service of the enrolled namespace: bound to the waypoint.
    meshop_testenv::wait_until(
        "istiod writes the Service's waypoint binding",
        Duration::from_secs(60),
        || async {
            let s = services.get("echo").await?;
            let conditions = s.status.and_then(|s| s.conditions).unwrap_or_default();
            anyhow::ensure!(
                conditions
                    .iter()
                    .any(|c| c.type_ == "istio.io/WaypointBound" && c.status == "True"),
                "conditions {conditions:?}"
            );
            Ok(())
        },
    )
    .await;

    let (ok, out) = istioctl(
        cp,
        &[
            "analyze",
            "--all-namespaces",
            "--failure-threshold",
            "Error",
        ],
    );
    eprintln!("istioctl analyze:\n{out}");
    assert!(
        ok && !out.contains("Error ["),
        "istioctl analyze reports errors on meshop's ambient installation:\n{out}"
    );

    let refused = refusals(&istiod.log());
    assert!(
        refused.is_empty(),
        "istiod was refused by meshop's RBAC:\n{}",
        refused.join("\n")
    );
    least_privilege(cp, &client, ns).await;
    drop(istiod);
}

/// What istiod's RBAC grants and it may leave unused here: (verbs, API group, resources, why).
/// Every other (verb, group, resource) its roles grant it must use.
const UNUSED_ALLOWED: &[(&[&str], &str, &[&str], &str)] = &[
    (
        &["create"],
        "authentication.k8s.io",
        &["tokenreviews"],
        "its CA verifies the token of a proxy (ztunnel, a waypoint) that asks for a certificate; \
         kwok runs no proxy",
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
        &["patch"],
        "networking.istio.io",
        &["serviceentries/status"],
        "addresses auto-allocated to ServiceEntries without any (and their ambient status); \
         there is no ServiceEntry here (tests/tests/istiod.rs uses it)",
    ),
    (
        &["update"],
        "networking.k8s.io",
        &["ingresses/status"],
        "the status of Ingresses of class istio; there is no Ingress here",
    ),
    (
        &["update"],
        "",
        &["secrets"],
        "rotating its self-signed root when it nears expiry (after years)",
    ),
    (
        &["update"],
        "gateway.networking.k8s.io",
        &[
            "backendtlspolicies/status",
            "grpcroutes/status",
            "httproutes/status",
            "listenersets/status",
            "tcproutes/status",
            "tlsroutes/status",
        ],
        "the status of Gateway API routes and policies; there are none here",
    ),
];

/// istiod's ServiceAccount, as the audit log tells: no request refused, and every (verb, group,
/// resource) of the roles bound to it used, but for [`UNUSED_ALLOWED`].
async fn least_privilege(cp: &meshop_testenv::ControlPlane, client: &kube::Client, ns: &str) {
    let account = "istiod";
    let user = audit::service_account_user(ns, account);
    let events = audit::read(&cp.audit_log()).unwrap();
    let denied: Vec<String> = events
        .iter()
        .filter(|e| e.user == user && e.code == 403)
        .map(|e| e.access.to_string())
        .collect();
    assert!(
        denied.is_empty(),
        "the API server refused istiod on profile ambient: {denied:#?}"
    );
    let rules = audit::rules_bound_to(client, ns, account).await.unwrap();
    let granted = audit::grants(&rules);
    let mut used = audit::used_grants(&events, &user);
    // An informer's initial list streamed over its watch stands for the list.
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
        "least privilege: istiod (profile ambient) used {} of the {} (verb, group, resource) its \
         RBAC grants",
        privilege.used, privilege.granted
    );
    assert!(
        privilege.unused.is_empty(),
        "istiod's RBAC grants what it never used on profile ambient (drop it from \
         render/istiod.rs, or list it with the reason in UNUSED_ALLOWED): {:#?}",
        privilege.unused
    );
    assert!(
        privilege.stale.is_empty(),
        "UNUSED_ALLOWED lists grants that were used or are not granted: {:?}",
        privilege.stale
    );
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
