//! The operator's own install (deploy/) applies cleanly, and the operator does a full install,
//! profile switch and delete with nothing but the RBAC of its ServiceAccount (impersonated
//! against the real API server), without a single Forbidden.

use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use serde_json::json;

const SA: &str = "system:serviceaccount:meshop-system:meshop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_works_with_its_own_rbac_only() {
    let cp = meshop_testenv::shared_with_controllers();
    let admin = cp.client().await.unwrap();

    // `kubectl apply -k deploy/` as a user would (server-side, as the CRD is large).
    let out = std::process::Command::new(&cp.binaries.kubectl)
        .args([
            "apply",
            "--server-side",
            "-k",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"),
        ])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl apply -k deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A client that is the operator's ServiceAccount, as far as authorization goes.
    let kubeconfig = Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(SA.into());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        "system:serviceaccounts:meshop-system".into(),
        "system:authenticated".into(),
    ]);
    let operator_client = kube::Client::try_from(config).unwrap();
    // Sanity: the impersonated client really is restricted.
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(operator_client.clone(), "default");
    let pod =
        json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}});
    let err = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = meshop::controller::RunOptions {
        health_addr: "127.0.0.1:0".parse().unwrap(),
        leader_election: true,
        lease_namespace: "meshop-system".into(),
        identity: "rbac-test".into(),
        lease_duration: Duration::from_secs(15),
        // Serve the webhook too, so its Secret and watches are checked against the RBAC as well.
        webhook_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        webhook_cert_lifetime: meshop::webhook::certs::DEFAULT_CERT_LIFETIME,
        webhook_limits: Default::default(),
        webhook_url: Some(format!("https://127.0.0.1:{port}/inject")),
    };
    let operator = tokio::spawn(meshop::controller::run(operator_client, options));

    let api: Api<MeshInstall> = Api::all(admin.clone());
    let mi: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "rbac"}, "spec": {"profile": "production", "components": {"cni": {"enabled": true}}}})).unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, "rbac", KStatus::Current, Duration::from_secs(120))
        .await;
    api.patch(
        "rbac",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"profile": "demo"}})),
    )
    .await
    .unwrap();
    meshop_testenv::wait_for_kstatus(&api, "rbac", KStatus::Current, Duration::from_secs(120))
        .await;

    // A revision-based upgrade lists pods, namespaces and workloads cluster-wide and restarts a
    // workload onto the new revision: all with the ServiceAccount's RBAC (an Error::Upgrade,
    // such as a Forbidden, would keep it from ever being Current).
    let canary: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "rbac-canary"}, "spec": {"profile": "minimal", "namespace": "rbac-canary",
        "version": "1.30.5", "updateStrategy": "RevisionBased",
        "upgrade": {"tags": ["rbac"], "workloads": {"mode": "Rollout"}, "retirementGracePeriodSeconds": 0}}})).unwrap();
    api.create(&PostParams::default(), &canary).await.unwrap();
    meshop_testenv::wait_for_kstatus(
        &api,
        "rbac-canary",
        KStatus::Current,
        Duration::from_secs(120),
    )
    .await;
    meshop_testenv::apps::labelled_namespace(&admin, "rbac-apps", json!({"istio.io/rev": "rbac"}))
        .await;
    meshop_testenv::apps::create_deployments(&admin, "rbac-apps", &["web"])
        .await
        .unwrap();
    meshop_testenv::apps::wait_pods_on(&admin, "rbac-apps", "1-30-5", 1, Duration::from_secs(30))
        .await;
    api.patch(
        "rbac-canary",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"version": "1.31.1"}})),
    )
    .await
    .unwrap();
    meshop_testenv::apps::wait_pods_on(&admin, "rbac-apps", "1-31-1", 1, Duration::from_secs(120))
        .await;
    meshop_testenv::wait_until("old revision retired", Duration::from_secs(60), || async {
        let mi = api.get("rbac-canary").await?;
        let names: Vec<String> = mi
            .status
            .map(|s| s.revisions.into_iter().map(|r| r.name).collect())
            .unwrap_or_default();
        anyhow::ensure!(names == ["1-31-1"], "{names:?}");
        Ok(())
    })
    .await;
    meshop_testenv::wait_for_kstatus(
        &api,
        "rbac-canary",
        KStatus::Current,
        Duration::from_secs(60),
    )
    .await;
    api.delete("rbac-canary", &DeleteParams::default())
        .await
        .unwrap();

    api.delete("rbac", &DeleteParams::default()).await.unwrap();
    meshop_testenv::wait_until("MeshInstall deleted", Duration::from_secs(120), || async {
        match api.get_opt("rbac").await? {
            None => Ok(()),
            Some(mi) => anyhow::bail!("still there, finalizers {:?}", mi.metadata.finalizers),
        }
    })
    .await;
    meshop_testenv::wait_until(
        "MeshInstall rbac-canary deleted",
        Duration::from_secs(120),
        || async {
            match api.get_opt("rbac-canary").await? {
                None => Ok(()),
                Some(mi) => anyhow::bail!("still there, finalizers {:?}", mi.metadata.finalizers),
            }
        },
    )
    .await;

    // No apply ever failed: an ApplyFailed event would carry the Forbidden.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(admin.clone());
    let failures: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ApplyFailed")
                || e.note.as_deref().unwrap_or("").contains("forbidden")
        })
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!operator.is_finished(), "the operator exited");
    operator.abort();
}
