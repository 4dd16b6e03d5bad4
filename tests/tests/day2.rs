//! The day-2 commands (`meshop check`, `status`, `diff`) run as a user runs them: the `meshop`
//! binary with `--kubeconfig` against the test control plane and the shared operator. `check` is
//! put in each state that makes a check pass or fail; `diff`'s prediction for a profile switch is
//! compared with what the reconciler then really creates, changes and prunes.
//!
//! `check` and `status` read the whole cluster, so the tests take turns (one lock): a state one
//! test sets up must not show in another's check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::{ControlPlane, LogsOnFailure, Options, wait_for_kstatus, wait_until};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(240);
/// The shared operator keeps its Lease and webhook certificate in `default`.
const OPERATOR_NS: &str = "default";

static TURNS: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `meshop ARGS --kubeconfig <cp>`; returns (exit success, stdout, stderr).
fn meshop(cp: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let bin = meshop_testenv::meshop_binary().expect("meshop binary");
    let out = std::process::Command::new(bin)
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .output()
        .expect("run meshop");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `meshop check -o json`: (exit success, severity by check name, the report).
fn check(cp: &ControlPlane, extra: &[&str]) -> (bool, BTreeMap<String, String>, Value) {
    let mut args = vec!["check", "-o", "json"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--operator-namespace") {
        args.extend_from_slice(&["--operator-namespace", OPERATOR_NS]);
    }
    let (ok, out, err) = meshop(cp, &args);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("check -o json: {e}\nstdout: {out}\nstderr: {err}"));
    assert_eq!(
        report["passed"],
        json!(ok),
        "exit status follows the report"
    );
    let severities = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (ok, severities, report)
}

fn message<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
}

async fn apply(client: &Client, api_version: &str, kind: &str, value: Value) -> Result<()> {
    let object: DynamicObject = serde_json::from_value(value)?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = object.metadata.name.clone().context("name")?;
    let api: Api<DynamicObject> = match (&caps.scope, object.metadata.namespace.as_deref()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &name,
        &PatchParams::apply("day2-test").force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(())
}

async fn create_mesh(client: &Client, name: &str, spec: Value) -> MeshInstall {
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap();
    match api.create(&PostParams::default(), &mi).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create MeshInstall {name}: {e}"),
    }
    wait_for_kstatus(&api, name, KStatus::Current, READY).await
}

/// A namespace with `labels`, created or relabelled.
async fn namespace(client: &Client, name: &str, labels: Value) {
    apply(
        client,
        "v1",
        "Namespace",
        json!({ "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": name, "labels": labels } }),
    )
    .await
    .unwrap();
}

async fn delete<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => panic!("delete {name}: {e}"),
    }
    wait_until(
        &format!("{name} deleted"),
        Duration::from_secs(60),
        || async {
            match api.get_opt(name).await? {
                None => Ok(()),
                Some(_) => bail!("still there"),
            }
        },
    )
    .await;
}

async fn poll_gone(pods: &Api<Pod>, name: &str) {
    let _ =
        meshop_testenv::poll_until(&format!("{name} gone"), Duration::from_secs(30), || async {
            match pods.get_opt(name).await? {
                None => Ok(()),
                Some(_) => bail!("still there"),
            }
        })
        .await;
}

fn pod(name: &str, ns: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
    }))
    .unwrap()
}

/// The healthy mesh the check and status tests share: minimal, injection on, in `day2-system`,
/// and an application namespace `day2-apps` labelled for it.
async fn healthy_mesh(client: &Client) -> MeshInstall {
    let mi = create_mesh(
        client,
        "day2",
        json!({ "profile": "minimal", "namespace": "day2-system" }),
    )
    .await;
    namespace(client, "day2-apps", json!({ "istio-injection": "enabled" })).await;
    // The webhook answers from its watch of namespace labels: wait until it has seen the label.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "day2-apps");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_until(
        "the webhook injects in day2-apps",
        Duration::from_secs(30),
        || async {
            let created = pods.create(&dry_run, &pod("probe", "day2-apps")).await?;
            if meshop::cli::snapshot::PodView::new(&created).has_sidecar {
                Ok(())
            } else {
                bail!("a dry-run pod came back without a sidecar")
            }
        },
    )
    .await;
    mi
}

#[test]
fn check_without_meshop_installed_fails_the_crd_and_operator_checks() {
    let _turn = turn();
    let dir = meshop_testenv::run_dir().unwrap().join("bare");
    let bare = ControlPlane::start(Options {
        install_crds: false,
        dir: Some(dir),
        ..Options::default()
    })
    .unwrap();
    let _logs = LogsOnFailure("check on a bare control plane".into());
    let (ok, checks, report) = check(&bare, &[]);
    assert!(!ok, "{report:#}");
    assert_eq!(checks["kubernetes-version"], "pass", "{report:#}");
    assert_eq!(checks["permissions"], "pass", "{report:#}");
    assert_eq!(checks["existing-istio"], "pass");
    assert_eq!(checks["conflicting-webhooks"], "pass");
    assert_eq!(checks["meshinstall-crd"], "fail");
    assert_eq!(checks["operator-leading"], "fail");
    assert_eq!(checks["meshinstalls-ready"], "skip");
    // --pre on a cluster ready for meshop passes: exit 0.
    let (ok, checks, report) = check(&bare, &["--pre"]);
    assert!(ok, "{report:#}");
    assert!(!checks.contains_key("meshinstall-crd"));
    // The text report: numbered, grouped, with what to do.
    let (ok, out, _) = meshop(&bare, &["check", "--operator-namespace", OPERATOR_NS]);
    assert!(!ok);
    assert!(
        out.starts_with("pre: before an install\n   1. ok    kubernetes-version"),
        "{out}"
    );
    assert!(out.contains("\npost: the installed mesh\n"), "{out}");
    assert!(
        out.contains("fix: install meshop: `meshop crd | kubectl apply --server-side -f -`"),
        "{out}"
    );
    // A user who may not install: permissions fail, through kubeconfig impersonation.
    let text = std::fs::read_to_string(&bare.kubeconfig).unwrap();
    let nobody = text.replace(
        "    client-key-data:",
        "    as: nobody\n    client-key-data:",
    );
    assert_ne!(
        text, nobody,
        "the kubeconfig has an admin user to impersonate from"
    );
    let path = bare.dir.join("kubeconfig-nobody");
    std::fs::write(&path, nobody).unwrap();
    let out = std::process::Command::new(meshop_testenv::meshop_binary().unwrap())
        .args(["check", "--pre", "-o", "json", "--kubeconfig"])
        .arg(&path)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert!(
        message(&report, "permissions").starts_with("you may not create customresourcedefinitions"),
        "{report:#}"
    );
}

#[test]
fn check_passes_on_a_healthy_mesh_and_fails_in_each_broken_state() {
    let _turn = turn();
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let _logs = LogsOnFailure("meshop check".into());
    meshop_testenv::block_on(async {
        let client = cp.client().await.unwrap();
        healthy_mesh(&client).await;
        let healthy = |what: &str| {
            let (ok, checks, report) = check(cp, &[]);
            assert!(ok, "{what}: {report:#}");
            for (name, severity) in &checks {
                // No mesh here runs ambient mode: its checks do not apply.
                let expected = if name.starts_with("ambient-") {
                    "skip"
                } else {
                    "pass"
                };
                assert_eq!(severity, expected, "{what}: {name}: {report:#}");
            }
        };
        healthy("a healthy mesh");

        // A pod that started before its namespace was labelled has no sidecar.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "day2-late");
        namespace(&client, "day2-late", json!({})).await;
        pods.create(&PostParams::default(), &pod("early", "day2-late"))
            .await
            .unwrap();
        namespace(
            &client,
            "day2-late",
            json!({ "istio-injection": "enabled" }),
        )
        .await;
        let (ok, checks, report) = check(cp, &[]);
        assert!(!ok);
        assert_eq!(checks["sidecars"], "fail");
        assert!(
            message(&report, "sidecars").contains("day2-late/early"),
            "{report:#}"
        );
        // Scoped with -n to another namespace, it is not seen.
        let (_, checks, _) = check(cp, &["-n", "day2-apps"]);
        assert_eq!(checks["sidecars"], "pass");
        delete(&pods, "early").await;

        // A proxy two minors behind its control plane (already injected, so the webhook skips it).
        let old: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "old-proxy", "namespace": "day2-late",
                "annotations": { "sidecar.istio.io/status": "{}", "istio.io/rev": "default" } },
            "spec": { "containers": [
                { "name": "app", "image": "registry.k8s.io/pause:3.10" },
                { "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.29.8" } ] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &old).await.unwrap();
        let (ok, checks, report) = check(cp, &[]);
        assert!(!ok);
        assert_eq!(checks["proxy-versions"], "fail", "{report:#}");
        assert!(message(&report, "proxy-versions").contains("day2-late/old-proxy (1.29.8"));
        delete(&pods, "old-proxy").await;

        // Istio's own injector, registered by another installation.
        let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        apply(
            &client,
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": { "name": "istio-sidecar-injector" },
                "webhooks": [{
                    "name": "namespace.sidecar-injector.istio.io",
                    "admissionReviewVersions": ["v1"], "sideEffects": "None",
                    "clientConfig": { "url": "https://127.0.0.1:1/inject" },
                    // Matches no namespace: registered, never called.
                    "namespaceSelector": { "matchLabels": { "day2-never": "true" } },
                    "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"] }]
                }]
            }),
        )
        .await
        .unwrap();
        let (ok, checks, report) = check(cp, &[]);
        assert!(!ok);
        assert_eq!(checks["conflicting-webhooks"], "fail");
        assert!(message(&report, "conflicting-webhooks").contains("istio-sidecar-injector"));
        delete(&hooks, "istio-sidecar-injector").await;

        // istiod and an Istio CRD installed by other means: warnings, the exit status stays 0.
        namespace(&client, "day2-legacy", json!({})).await;
        apply(
            &client,
            "apps/v1",
            "Deployment",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "istiod", "namespace": "day2-legacy", "labels": { "app": "istiod" } },
                "spec": { "replicas": 0, "selector": { "matchLabels": { "app": "legacy-istiod" } },
                    "template": { "metadata": { "labels": { "app": "legacy-istiod" } },
                        "spec": { "containers": [{ "name": "discovery", "image": "docker.io/istio/pilot:1.20.0" }] } } }
            }),
        )
        .await
        .unwrap();
        apply(
            &client,
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": { "name": "legacythings.networking.istio.io" },
                "spec": { "group": "networking.istio.io", "scope": "Namespaced",
                    "names": { "plural": "legacythings", "kind": "LegacyThing" },
                    "versions": [{ "name": "v1", "served": true, "storage": true,
                        "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] }
            }),
        )
        .await
        .unwrap();
        let (ok, checks, report) = check(cp, &[]);
        assert!(ok, "warnings do not fail: {report:#}");
        assert_eq!(checks["existing-istio"], "warn");
        assert!(message(&report, "existing-istio").contains("day2-legacy/istiod"));
        assert_eq!(checks["istio-crds"], "warn");
        assert!(message(&report, "istio-crds").contains("legacythings.networking.istio.io"));
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "day2-legacy");
        delete(&deployments, "istiod").await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        delete(&crds, "legacythings.networking.istio.io").await;

        // A namespace labelled for a revision nobody installs: a warning.
        namespace(&client, "day2-orphan", json!({ "istio.io/rev": "nobody" })).await;
        let (ok, checks, _) = check(cp, &[]);
        assert!(ok && checks["injection-namespaces"] == "warn");
        namespace(&client, "day2-orphan", json!({})).await;

        // A MeshInstall that is not Ready.
        let meshes: Api<MeshInstall> = Api::all(client.clone());
        let stalled: MeshInstall = serde_json::from_value(json!({
            "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
            "metadata": { "name": "day2-stalled" },
            "spec": { "profile": "minimal", "namespace": "day2-stalled", "version": "1.5.0" }
        }))
        .unwrap();
        meshes
            .create(&PostParams::default(), &stalled)
            .await
            .unwrap();
        wait_for_kstatus(&meshes, "day2-stalled", KStatus::Failed, READY).await;
        let (ok, checks, report) = check(cp, &[]);
        assert!(!ok);
        assert_eq!(checks["meshinstalls-ready"], "fail");
        assert!(
            message(&report, "meshinstalls-ready").contains("day2-stalled is Failed"),
            "{report:#}"
        );
        delete(&meshes, "day2-stalled").await;

        // The webhook unreachable: the registration pointed at a closed port.
        let name = "meshop-sidecar-injector-day2";
        let saved = hooks.get(name).await.unwrap();
        let mut broken = serde_json::to_value(&saved).unwrap()["webhooks"].clone();
        for hook in broken.as_array_mut().unwrap() {
            hook["clientConfig"]["url"] = json!("https://127.0.0.1:1/inject");
            hook["failurePolicy"] = json!("Fail");
        }
        hooks
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "webhooks": broken })),
            )
            .await
            .unwrap();
        let (ok, checks, report) = check(cp, &[]);
        let restore = serde_json::to_value(&saved).unwrap()["webhooks"].clone();
        hooks
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "webhooks": restore })),
            )
            .await
            .unwrap();
        assert!(!ok);
        assert_eq!(checks["webhook-reachable"], "fail", "{report:#}");
        assert!(
            message(&report, "webhook-reachable").contains("refused"),
            "{report:#}"
        );

        // The operator's namespace as another install would have it: a Lease nobody renews, no
        // certificate, then an expired one.
        namespace(&client, "day2-op", json!({})).await;
        let leases: Api<Lease> = Api::namespaced(client.clone(), "day2-op");
        let renewed = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_secs(3600);
        leases
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": { "name": "meshop-leader", "namespace": "day2-op" },
                    "spec": { "holderIdentity": "gone", "leaseDurationSeconds": 15,
                        "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string() }
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let (ok, checks, report) = check(cp, &["--operator-namespace", "day2-op"]);
        assert!(!ok);
        assert_eq!(checks["operator-leading"], "fail");
        assert!(
            message(&report, "operator-leading").contains("has expired"),
            "{report:#}"
        );
        assert_eq!(checks["webhook-certificate"], "fail");
        assert!(
            message(&report, "webhook-certificate")
                .contains("day2-op/meshop-webhook-tls is missing")
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), "day2-op");
        secrets
            .create(&PostParams::default(), &expired_secret("day2-op"))
            .await
            .unwrap();
        let (_, checks, report) = check(cp, &["--operator-namespace", "day2-op"]);
        assert_eq!(checks["webhook-certificate"], "fail");
        assert!(
            message(&report, "webhook-certificate").contains("expired at 2020-02-01"),
            "{report:#}"
        );

        healthy("every broken state undone");
    });
}

/// A Secret like meshop's whose serving certificate expired in 2020.
fn expired_secret(ns: &str) -> Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 2, 1);
    let cert = params.self_signed(&key).unwrap();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "meshop-webhook-tls", "namespace": ns },
        "stringData": { "tls.crt": cert.pem(), "ca.crt": cert.pem() }
    }))
    .unwrap()
}

#[test]
fn status_shows_components_webhook_and_data_plane() {
    let _turn = turn();
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let _logs = LogsOnFailure("meshop status".into());
    meshop_testenv::block_on(async {
        let client = cp.client().await.unwrap();
        let mi = healthy_mesh(&client).await;
        let version = mi.status.unwrap().version.unwrap();
        // An injected pod, and one that predates the namespace's label.
        namespace(&client, "day2-status", json!({})).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "day2-status");
        pods.create(&PostParams::default(), &pod("bare", "day2-status"))
            .await
            .unwrap();
        namespace(
            &client,
            "day2-status",
            json!({ "istio-injection": "enabled" }),
        )
        .await;
        // The webhook answers from its watch of namespace labels, which may lag the label by a
        // moment: a pod created before it caught up is retried.
        wait_until(
            "web created with a sidecar",
            Duration::from_secs(30),
            || async {
                let created = pods
                    .create(&PostParams::default(), &pod("web", "day2-status"))
                    .await?;
                let view = meshop::cli::snapshot::PodView::new(&created);
                if view.has_sidecar {
                    return Ok(());
                }
                pods.delete("web", &DeleteParams::default().grace_period(0))
                    .await?;
                poll_gone(&pods, "web").await;
                bail!("created without a sidecar")
            },
        )
        .await;

        let (ok, out, err) = meshop(cp, &["status", "day2", "-n", "day2-status"]);
        assert!(ok, "{err}");
        assert!(
            out.starts_with("MeshInstall day2\n  Profile:    minimal\n"),
            "{out}"
        );
        assert!(out.contains(&format!("  Version:    {version}\n")), "{out}");
        assert!(out.contains("  Revision:   default\n"), "{out}");
        assert!(out.contains("  Health:     Current\n"), "{out}");
        assert!(out.contains("    istiod "), "{out}");
        assert!(
            out.contains("  Webhook:  Active, certificate expires "),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["default", "day2-status", &version, "1"]),
            "{out}"
        );
        assert!(
            out.contains("  Without sidecar (1; restart them to inject):\n    day2-status/bare\n"),
            "{out}"
        );

        let (ok, out, err) = meshop(cp, &["status", "day2", "-o", "json", "-n", "day2-status"]);
        assert!(ok, "{err}");
        let views: Value = serde_json::from_str(&out).unwrap();
        let view = &views[0];
        assert_eq!(view["name"], "day2");
        assert_eq!(view["webhook"]["state"], "Active");
        assert_eq!(
            view["dataPlane"],
            json!([{ "revision": "default", "namespace": "day2-status", "proxyVersion": version, "pods": 1 }])
        );
        assert_eq!(view["withoutSidecar"], json!(["day2-status/bare"]));
        let istiod = view["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "istiod")
            .unwrap();
        assert_eq!(istiod["readyReplicas"], istiod["desiredReplicas"]);

        let (ok, out, _) = meshop(cp, &["status", "day2", "-o", "yaml"]);
        assert!(ok && out.contains("- name: day2\n"), "{out}");
        // kubectl's --context: the kubeconfig's own context works, another is refused.
        let (ok, out, err) = meshop(cp, &["status", "day2", "--context", "testenv"]);
        assert!(ok && out.starts_with("MeshInstall day2\n"), "{err}");
        let (ok, _, err) = meshop(cp, &["status", "day2", "--context", "elsewhere"]);
        assert!(!ok && err.contains("elsewhere"), "{err}");
        let (ok, _, err) = meshop(cp, &["status", "no-such-mesh"]);
        assert!(
            !ok && err.contains("MeshInstall no-such-mesh not found"),
            "{err}"
        );

        Api::<Namespace>::all(client.clone())
            .delete("day2-status", &DeleteParams::default())
            .await
            .unwrap();
    });
}

/// The objects meshop applied, by key: the uid and the time of meshop's last change (its
/// managedFields entry; an apply that changes nothing writes nothing).
async fn touched(
    client: &Client,
    instance: &str,
    uid: &str,
    planned: &BTreeSet<String>,
) -> BTreeMap<String, (String, String)> {
    let objects = meshop_testenv::inventory::objects(client, |o| {
        (o.has_instance(instance) || o.owned_by(uid) || planned.contains(&o.key())) && !o.deleting
    })
    .await
    .unwrap();
    // Only what meshop applied: pods, ReplicaSets and endpoints inherit its labels too.
    let applier = format!("{}:Apply", meshop::controller::FIELD_MANAGER);
    objects
        .into_iter()
        .filter_map(|o| {
            let time = o.managers.get(&applier)?.clone();
            Some((o.key(), (o.uid.clone(), time)))
        })
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_str()
                .or_else(|| v["key"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn diff_of_a_profile_switch_names_what_the_reconciler_then_does() {
    let _turn = turn();
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let _logs = LogsOnFailure("meshop diff".into());
    meshop_testenv::block_on(async {
        let client = cp.client().await.unwrap();
        let spec = |profile: &str| json!({ "profile": profile, "namespace": "diff-system", "revision": "diffrev" });
        let mi = create_mesh(&client, "diffswitch", spec("production")).await;
        let uid = mi.metadata.uid.clone().unwrap();

        // The MeshInstall the user is about to apply.
        let file = cp.dir.join("diffswitch-demo.yaml");
        let desired = json!({
            "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
            "metadata": { "name": "diffswitch" }, "spec": spec("demo")
        });
        std::fs::write(&file, serde_yaml::to_string(&desired).unwrap()).unwrap();
        let file = file.to_str().unwrap();
        let (ok, out, err) = meshop(
            cp,
            &[
                "diff",
                "-f",
                file,
                "-o",
                "json",
                "--operator-namespace",
                OPERATOR_NS,
            ],
        );
        assert!(ok, "{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        let (created, changed, pruned) = (
            keys(&report["created"]),
            keys(&report["changed"]),
            keys(&report["pruned"]),
        );
        // production -> demo: the egress gateway and the addons come, istiod and the ingress
        // gateway change in place, the autoscalers and disruption budgets go.
        assert!(
            created
                .iter()
                .any(|k| k.starts_with("Deployment/diff-system/istio-egressgateway")),
            "{report:#}"
        );
        assert!(
            changed
                .iter()
                .any(|k| k.starts_with("Deployment/diff-system/istiod")),
            "{report:#}"
        );
        assert!(
            pruned
                .iter()
                .any(|k| k.starts_with("HorizontalPodAutoscaler/")),
            "{report:#}"
        );
        assert!(
            pruned.iter().any(|k| k.starts_with("PodDisruptionBudget/")),
            "{report:#}"
        );
        // Field-level: istiod's resources change, and no bookkeeping field is listed.
        let istiod = report["changed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["key"]
                    .as_str()
                    .unwrap()
                    .starts_with("Deployment/diff-system/istiod")
            })
            .unwrap();
        let paths: Vec<&str> = istiod["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert!(paths.iter().any(|p| p.contains("resources")), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.contains("managedFields")
                || p.contains("resourceVersion")
                || p.starts_with("status")),
            "{paths:?}"
        );
        // A dry run changed nothing.
        let planned: BTreeSet<String> = created
            .iter()
            .chain(&changed)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let before = touched(&client, "diffswitch", &uid, &planned).await;
        for key in &created {
            assert!(!before.contains_key(key), "dry run created {key}");
        }

        // Apply it, wait for the reconciler to converge (prune runs before Ready is written).
        // The managedFields times have a resolution of one second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let api: Api<MeshInstall> = Api::all(client.clone());
        api.patch(
            "diffswitch",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "profile": "demo" } })),
        )
        .await
        .unwrap();
        wait_until("diffswitch converged on demo", READY, || async {
            let mi = api.get("diffswitch").await?;
            let status = mi.status.clone().unwrap_or_default();
            if status.profile.as_deref() == Some("demo")
                && meshop::controller::status::kstatus(mi.metadata.generation, Some(&status))
                    == KStatus::Current
            {
                Ok(())
            } else {
                bail!("{status:?}")
            }
        })
        .await;
        let after = touched(&client, "diffswitch", &uid, &planned).await;

        let really_created: BTreeSet<String> = after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .cloned()
            .collect();
        let really_pruned: BTreeSet<String> = before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect();
        let really_changed: BTreeSet<String> = after
            .iter()
            .filter(|(k, (uid, time))| {
                before
                    .get(*k)
                    .is_some_and(|(old_uid, old_time)| old_uid == uid && old_time != time)
            })
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(really_created, created, "created");
        assert_eq!(really_pruned, pruned, "pruned");
        assert_eq!(really_changed, changed, "changed");

        // Against the converged cluster, the same file is a no-op.
        let (ok, out, err) = meshop(
            cp,
            &[
                "diff",
                "-f",
                file,
                "--operator-namespace",
                OPERATOR_NS,
                "--exit-code",
            ],
        );
        assert!(ok, "{out}\n{err}");
        assert!(
            out.starts_with("MeshInstall diffswitch: 0 created, 0 changed, 0 pruned, "),
            "{out}"
        );
    });
}
