//! Each check over snapshots built by hand: one that passes, and each way it fails.

use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde_json::json;

use super::*;
use crate::cli::snapshot::{InjectionNamespace, PodView, WebhookSecret};
use crate::webhook::CertBundle;

fn verdict(name: &str, s: &Snapshot) -> Verdict {
    let (_, _, check) = CHECKS
        .iter()
        .find(|(_, n, _)| *n == name)
        .unwrap_or_else(|| panic!("no check {name}"));
    check(s)
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ready_mesh(name: &str, revision: &str, version: &str, webhook: &str) -> crate::api::MeshInstall {
    serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name, "generation": 1 },
        "spec": { "profile": "demo", "revision": revision },
        "status": {
            "observedGeneration": 1, "version": version,
            "conditions": [
                { "type": "Ready", "status": "True", "reason": "Ready", "message": "ok",
                  "lastTransitionTime": "2026-11-25T10:00:00Z" },
                { "type": "Reconciling", "status": "False", "reason": "Ready", "message": "",
                  "lastTransitionTime": "2026-11-25T10:00:00Z" },
                { "type": "Stalled", "status": "False", "reason": "Ready", "message": "",
                  "lastTransitionTime": "2026-11-25T10:00:00Z" }
            ],
            "components": [{ "name": "istiod", "state": "Ready", "desiredReplicas": 1, "readyReplicas": 1 }],
            "webhook": { "state": webhook }
        }
    }))
    .unwrap()
}

fn crd(name: &str, group: &str, meshop: bool, established: bool) -> CustomResourceDefinition {
    let labels = if meshop {
        json!({ "app.kubernetes.io/managed-by": "meshop" })
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "group": group, "names": { "plural": "x", "kind": "X" }, "scope": "Cluster",
            "versions": [] },
        "status": { "conditions": [{ "type": "Established",
            "status": if established { "True" } else { "False" } }] }
    }))
    .unwrap()
}

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn registration(name: &str, ca: &str, meshop: bool, hook: &str) -> MutatingWebhookConfiguration {
    let labels = if meshop {
        json!({ "app.kubernetes.io/managed-by": "meshop" })
    } else {
        json!({})
    };
    let mut config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "webhooks": [{ "name": hook, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "clientConfig": { "url": "https://127.0.0.1:9443/inject" } }]
    }))
    .unwrap();
    if !ca.is_empty() {
        config.webhooks.as_mut().unwrap()[0].client_config.ca_bundle =
            Some(ByteString(ca.as_bytes().to_vec()));
    }
    config
}

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;

/// A healthy installed mesh: every check passes.
fn healthy() -> (Snapshot, CertBundle) {
    let bundle =
        CertBundle::generate(&["localhost".into()], Duration::from_secs(3600 * 24 * 90)).unwrap();
    let s = Snapshot {
        now: Some(SystemTime::now()),
        kubernetes: Some((1, 34, "v1.34.1".into())),
        meshinstall_crd: Some(crd("meshinstalls.meshop.dev", "meshop.dev", false, true)),
        crds: vec![crd(
            "gateways.networking.istio.io",
            "networking.istio.io",
            true,
            true,
        )],
        meshes: vec![ready_mesh("mesh", "", "1.31.1", "Active"), ambient_mesh()],
        mutating: vec![registration(
            "meshop-sidecar-injector-mesh",
            &bundle.ca_pem,
            true,
            "namespace.sidecar-injector.meshop.dev",
        )],
        injection_namespaces: vec![InjectionNamespace {
            name: "shop".into(),
            revision: "default".into(),
        }],
        pods: vec![PodView {
            namespace: "shop".into(),
            name: "web".into(),
            has_sidecar: true,
            revision: Some("default".into()),
            proxy_version: Some("1.31.1".into()),
            exempt: false,
            ..Default::default()
        }],
        lease: Some(Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("meshop-0".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        operator_namespace: "meshop-system".into(),
        webhook_secret: Some(WebhookSecret {
            tls_crt: Some(bundle.cert_pem.clone()),
            ca_crt: Some(bundle.ca_pem.clone()),
        }),
        permissions: vec![("create namespaces".into(), true)],
        probe: Some(InjectionProbe::Injected("shop".into())),
        ambient_namespaces: vec!["ledger".into()],
        node_agents: vec![
            node_agent("istio-cni-node", 3, 3, 3),
            node_agent("ztunnel", 3, 3, 3),
        ],
        linux_nodes: Some(3),
        ..Default::default()
    };
    let mut s = s;
    s.pods.push(PodView {
        namespace: "ledger".into(),
        name: "api".into(),
        captured: true,
        ..Default::default()
    });
    (s, bundle)
}

/// A ready ambient mesh in namespace istio-ambient (no injection: its webhook is Disabled).
fn ambient_mesh() -> crate::api::MeshInstall {
    let mut mi = ready_mesh("amb", "amb", "1.31.1", "Disabled");
    mi.spec.profile = crate::api::Profile::Ambient;
    mi.spec.namespace = "istio-ambient".into();
    mi
}

fn node_agent(
    name: &str,
    desired: i32,
    ready: i32,
    updated: i32,
) -> k8s_openapi::api::apps::v1::DaemonSet {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "istio-ambient" },
        "status": { "desiredNumberScheduled": desired, "numberReady": ready,
            "updatedNumberScheduled": updated, "currentNumberScheduled": desired,
            "numberMisscheduled": 0 }
    }))
    .unwrap()
}

#[test]
fn ambient_node_agents_must_cover_every_linux_node() {
    let (mut s, _) = healthy();
    // A node the agents do not reach (a taint they do not tolerate): desired 2 of 3 nodes.
    s.node_agents[1] = node_agent("ztunnel", 2, 2, 2);
    let v = verdict("ambient-node-agents", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(
        v.message
            .contains("istio-ambient/ztunnel scheduled on 2 of 3 linux node(s)"),
        "{}",
        v.message
    );
    // Mid-rollout: one node's pod is not updated yet.
    s.node_agents[1] = node_agent("ztunnel", 3, 3, 2);
    assert!(
        verdict("ambient-node-agents", &s)
            .message
            .contains("updated on 2")
    );
    // The CNI agent missing altogether.
    s.node_agents.remove(0);
    assert!(
        verdict("ambient-node-agents", &s)
            .message
            .contains("DaemonSet istio-ambient/istio-cni-node is missing")
    );
    // No ambient mesh: nothing to check.
    s.meshes.pop();
    assert_eq!(verdict("ambient-node-agents", &s).severity, Severity::Skip);
}

#[test]
fn ambient_enrollment_names_uncaptured_and_sidecar_pods() {
    let (mut s, _) = healthy();
    s.pods.push(PodView {
        namespace: "ledger".into(),
        name: "fresh".into(),
        ..Default::default()
    });
    // Enrolled on its own, in an injection namespace: it got a sidecar, which wins.
    s.pods.push(PodView {
        namespace: "shop".into(),
        name: "both".into(),
        has_sidecar: true,
        dataplane_mode: Some("ambient".into()),
        ..Default::default()
    });
    // Opted out in an enrolled namespace: neither expected nor named.
    s.pods.push(PodView {
        namespace: "ledger".into(),
        name: "outside".into(),
        dataplane_mode: Some("none".into()),
        ..Default::default()
    });
    let v = verdict("ambient-enrollment", &s);
    assert_eq!(v.severity, Severity::Warn, "{v:?}");
    assert!(
        v.message.contains("shop/both") && v.message.contains("ledger/fresh"),
        "{}",
        v.message
    );
    assert!(
        !v.message.contains("outside") && !v.message.contains("ledger/api"),
        "{}",
        v.message
    );
    // Enrolled, but nothing runs ambient mode.
    s.meshes.pop();
    let v = verdict("ambient-enrollment", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(
        v.message.contains("namespace ledger") && v.message.contains("pod shop/both"),
        "{}",
        v.message
    );
}

#[test]
fn a_healthy_cluster_passes_every_check() {
    let (s, _) = healthy();
    let results = run_checks(&s, &[Group::Pre, Group::Post]);
    assert_eq!(results.len(), CHECKS.len());
    for r in &results {
        assert_eq!(
            r.verdict.severity,
            Severity::Pass,
            "{} {:?}",
            r.name,
            r.verdict
        );
    }
    // Numbers are positions, stable across groups.
    assert_eq!(results[0].number, 1);
    assert_eq!(results.last().unwrap().number, CHECKS.len());
    let out = text(&results);
    assert!(
        out.contains(&format!("{} passed, 0 warning(s), 0 failed", CHECKS.len())),
        "{out}"
    );
}

#[test]
fn kubernetes_outside_every_supported_range_fails() {
    let (mut s, _) = healthy();
    s.kubernetes = Some((1, 20, "v1.20.0".into()));
    let v = verdict("kubernetes-version", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.hint.unwrap().contains("Istio 1.31 on 1.32-1.36"));
    s.errors.insert("version", "connection refused".into());
    assert!(
        verdict("kubernetes-version", &s)
            .message
            .contains("connection refused")
    );
}

#[test]
fn missing_permissions_fail_and_name_what() {
    let (mut s, _) = healthy();
    s.permissions = vec![
        ("create namespaces".into(), true),
        ("create clusterroles".into(), false),
    ];
    let v = verdict("permissions", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert_eq!(v.message, "you may not create clusterroles");
}

#[test]
fn istio_installed_by_other_means_is_found() {
    let (mut s, _) = healthy();
    s.istiods = vec![
        serde_json::from_value(
            json!({ "metadata": { "name": "istiod", "namespace": "istio-system",
            "labels": { "app": "istiod" } } }),
        )
        .unwrap(),
    ];
    let v = verdict("existing-istio", &s);
    assert_eq!(v.severity, Severity::Warn);
    assert!(v.message.contains("istio-system/istiod"));
    s.istiods[0]
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app.kubernetes.io/managed-by".into(), "meshop".into());
    assert_eq!(verdict("existing-istio", &s).severity, Severity::Pass);
}

#[test]
fn an_injector_of_another_istio_fails() {
    let (mut s, _) = healthy();
    s.mutating.push(registration(
        "istio-sidecar-injector",
        "ca",
        false,
        "namespace.sidecar-injector.istio.io",
    ));
    let v = verdict("conflicting-webhooks", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(
        v.message.contains("istio-sidecar-injector"),
        "{}",
        v.message
    );
}

#[test]
fn foreign_istio_crds_warn_and_an_unestablished_meshinstall_crd_fails() {
    let (mut s, _) = healthy();
    s.crds.push(crd(
        "virtualservices.networking.istio.io",
        "networking.istio.io",
        false,
        true,
    ));
    assert_eq!(verdict("istio-crds", &s).severity, Severity::Warn);
    s.meshinstall_crd = Some(crd("meshinstalls.meshop.dev", "meshop.dev", false, false));
    assert_eq!(verdict("meshinstall-crd", &s).severity, Severity::Fail);
    s.meshinstall_crd = None;
    let v = verdict("meshinstall-crd", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.hint.unwrap().contains("meshop crd | kubectl apply"));
    // What needs the CRD is skipped, not failed twice.
    assert_eq!(verdict("meshinstalls-ready", &s).severity, Severity::Skip);
}

#[test]
fn a_namespace_for_a_revision_nobody_installs_warns() {
    let (mut s, _) = healthy();
    s.injection_namespaces.push(InjectionNamespace {
        name: "legacy".into(),
        revision: "1-20".into(),
    });
    let v = verdict("injection-namespaces", &s);
    assert_eq!(v.severity, Severity::Warn);
    assert!(v.message.contains("legacy (revision 1-20)"));
}

#[test]
fn an_absent_or_expired_lease_fails() {
    let (mut s, _) = healthy();
    s.now = Some(SystemTime::now() + Duration::from_secs(60));
    let v = verdict("operator-leading", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.message.contains("expired"), "{}", v.message);
    s.lease = None;
    assert!(
        verdict("operator-leading", &s)
            .message
            .contains("not running")
    );
}

#[test]
fn a_mesh_not_ready_and_short_components_fail() {
    let (mut s, _) = healthy();
    let status = s.meshes[0].status.as_mut().unwrap();
    status.conditions[0].status = "False".into();
    status.conditions[0].message = "waiting for istiod".into();
    status.components[0].ready_replicas = Some(0);
    status.components[0].state = crate::api::ComponentState::Progressing;
    let v = verdict("meshinstalls-ready", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.message.contains("waiting for istiod"), "{}", v.message);
    let v = verdict("components", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(
        v.message.contains("mesh/istiod Progressing (0/1 ready)"),
        "{}",
        v.message
    );
    s.meshes.clear();
    assert_eq!(verdict("meshinstalls-ready", &s).severity, Severity::Warn);
}

#[test]
fn webhook_registration_and_certificate_failures() {
    let (mut s, _) = healthy();
    s.mutating.clear();
    assert_eq!(verdict("webhook-registered", &s).severity, Severity::Fail);

    let (mut s, _) = healthy();
    s.webhook_secret = None;
    let v = verdict("webhook-certificate", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.message.contains("meshop-webhook-tls"));

    // Expired: the same certificate, judged after its end.
    let (mut s, _) = healthy();
    s.now = Some(now() + Duration::from_secs(3600 * 24 * 365 * 10));
    let v = verdict("webhook-certificate", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.message.contains("expired"), "{}", v.message);

    // A caBundle of another CA.
    let (mut s, _) = healthy();
    let other = CertBundle::generate(&["localhost".into()], Duration::from_secs(3600)).unwrap();
    s.mutating = vec![registration(
        "meshop-sidecar-injector-mesh",
        &other.ca_pem,
        true,
        "x",
    )];
    assert!(
        verdict("webhook-certificate", &s)
            .message
            .contains("does not sign")
    );

    // Injection off everywhere: nothing to check.
    let (mut s, _) = healthy();
    s.meshes = vec![ready_mesh("mesh", "", "1.31.1", "Disabled")];
    assert_eq!(verdict("webhook-certificate", &s).severity, Severity::Skip);
}

#[test]
fn the_dry_run_probe_decides_reachability() {
    let (mut s, _) = healthy();
    s.probe = Some(InjectionProbe::NotInjected("shop".into()));
    assert_eq!(verdict("webhook-reachable", &s).severity, Severity::Fail);
    s.probe = Some(InjectionProbe::Refused("shop".into(), "timeout".into()));
    assert!(verdict("webhook-reachable", &s).message.contains("timeout"));
    s.probe = Some(InjectionProbe::NoNamespace);
    assert_eq!(verdict("webhook-reachable", &s).severity, Severity::Skip);
}

#[test]
fn pods_without_sidecar_or_on_another_proxy_version() {
    let (mut s, _) = healthy();
    s.pods.push(PodView {
        namespace: "shop".into(),
        name: "old".into(),
        has_sidecar: false,
        revision: None,
        proxy_version: None,
        exempt: false,
        ..Default::default()
    });
    s.pods.push(PodView {
        namespace: "shop".into(),
        name: "batch".into(),
        has_sidecar: false,
        revision: None,
        proxy_version: None,
        exempt: true,
        ..Default::default()
    });
    let v = verdict("sidecars", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.message.starts_with("1 pod(s)") && v.message.contains("shop/old"));

    let (mut s, _) = healthy();
    s.pods[0].proxy_version = Some("1.30.5".into());
    assert_eq!(verdict("proxy-versions", &s).severity, Severity::Warn);
    s.pods[0].proxy_version = Some("1.29.8".into());
    assert_eq!(verdict("proxy-versions", &s).severity, Severity::Fail);
    // A proxy newer than its control plane is outside the skew too.
    s.pods[0].proxy_version = Some("1.32.0".into());
    assert_eq!(verdict("proxy-versions", &s).severity, Severity::Fail);
}

#[test]
fn json_report_carries_number_group_and_hint() {
    let (mut s, _) = healthy();
    s.lease = None;
    let results = run_checks(&s, &[Group::Post]);
    assert!(results.iter().all(|r| r.group == Group::Post));
    let value = serde_json::to_value(&results).unwrap();
    let lease = value
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "operator-leading")
        .unwrap();
    assert_eq!(lease["severity"], "fail");
    assert_eq!(lease["group"], "post");
    assert!(
        lease["hint"]
            .as_str()
            .unwrap()
            .contains("kubectl -n meshop-system")
    );
}

#[test]
fn an_unreachable_api_server_fails_once_and_skips_the_rest() {
    let s = Snapshot {
        errors: [("version", "connection refused".to_string())].into(),
        ..Default::default()
    };
    let results = run_checks(&s, &[Group::Pre, Group::Post]);
    assert_eq!(results[0].verdict.severity, Severity::Fail);
    assert!(results[0].verdict.message.contains("connection refused"));
    assert!(
        results[1..]
            .iter()
            .all(|r| r.verdict.severity == Severity::Skip)
    );
}

/// A revision-based mesh in the middle of an upgrade: the tags (default, prod-stable) moved to
/// 1-31-1, 1-30-5 still runs the pods not restarted yet.
fn mid_upgrade() -> crate::api::MeshInstall {
    let mut mi = ready_mesh("canary", "", "1.31.1", "Active");
    mi.spec.update_strategy = crate::api::UpdateStrategy::RevisionBased;
    let status = mi.status.as_mut().unwrap();
    status.revisions = serde_json::from_value(json!([
        { "name": "1-31-1", "version": "1.31.1", "tags": ["default", "prod-stable"], "ready": true },
        { "name": "1-30-5", "version": "1.30.5", "ready": true }
    ]))
    .unwrap();
    mi
}

#[test]
fn tags_and_revisions_of_a_revision_based_mesh_are_served_namespaces() {
    let (mut s, _) = healthy();
    s.meshes = vec![mid_upgrade()];
    s.mutating[0].metadata.name = Some("meshop-sidecar-injector-canary".into());
    let ns = |name: &str, asks: &str| InjectionNamespace {
        name: name.into(),
        revision: asks.into(),
    };
    let pod = |ns: &str, name: &str, rev: Option<&str>, version: Option<&str>| PodView {
        namespace: ns.into(),
        name: name.into(),
        has_sidecar: rev.is_some(),
        revision: rev.map(str::to_string),
        proxy_version: version.map(str::to_string),
        exempt: false,
        ..Default::default()
    };
    s.injection_namespaces = vec![
        ns("shop", "default"),
        ns("tagged", "prod-stable"),
        ns("pinned", "1-30-5"),
    ];
    s.pods = vec![
        pod("shop", "web", Some("1-30-5"), Some("1.30.5")),
        pod("tagged", "new", Some("1-31-1"), Some("1.31.1")),
        pod("pinned", "old", Some("1-30-5"), Some("1.30.5")),
    ];
    // A tag and a revision name are both served: no warning.
    let v = verdict("injection-namespaces", &s);
    assert_eq!(v.severity, Severity::Pass, "{}", v.message);
    // Each proxy runs its own revision's release: the old revision's are not behind.
    let v = verdict("proxy-versions", &s);
    assert_eq!(v.severity, Severity::Pass, "{}", v.message);
    assert_eq!(verdict("sidecars", &s).severity, Severity::Pass);
    // The pods of a tag-labelled namespace are checked.
    s.pods.push(pod("tagged", "bare", None, None));
    let v = verdict("sidecars", &s);
    assert_eq!(v.severity, Severity::Fail);
    assert!(v.message.contains("tagged/bare"), "{}", v.message);
    // A proxy of the old release on the new revision is behind its control plane.
    s.pods[1].proxy_version = Some("1.30.5".into());
    assert_eq!(verdict("proxy-versions", &s).severity, Severity::Warn);
    // A tag no MeshInstall has is still an orphan.
    s.injection_namespaces.push(ns("legacy", "prod-old"));
    let v = verdict("injection-namespaces", &s);
    assert_eq!(v.severity, Severity::Warn);
    assert!(
        v.message.contains("legacy (revision prod-old)"),
        "{}",
        v.message
    );
    assert!(!v.message.contains("tagged"), "{}", v.message);
}
