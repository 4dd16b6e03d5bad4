//! The operator's own install (deploy/) applies cleanly, and the operator installs, switches
//! through every profile, upgrades by revision and deletes with nothing but the RBAC of its
//! ServiceAccount (impersonated against the real API server), without a single Forbidden.

use std::time::Duration;

use meshop_testenv::audit;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use serde_json::json;

const SA: &str = "system:serviceaccount:meshop-system:meshop";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_works_with_its_own_rbac_only() {
    let cp = meshop_testenv::shared_with_audit();
    let admin = cp.client().await.unwrap();

    // `kubectl apply -k deploy/` as a user would (server-side, as the CRD is large).
    cp.apply_deploy().unwrap();

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

    // From here on every request of the ServiceAccount is the operator's.
    let mut audit_log = audit::Tail::new(&cp.audit_log());
    audit_log.next_events().unwrap();

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
        "metadata": {"name": "rbac"}, "spec": {"profile": "production", "components": {"cni": {"enabled": true}},
        "global": {"networkPolicy": {"enabled": true}}}})).unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, "rbac", KStatus::Current, Duration::from_secs(120))
        .await;
    // A gateway in another namespace needs that namespace granted too: until it is, the
    // MeshInstall says so, naming the gateway; once granted, the gateway installs there with the
    // ServiceAccount's RBAC (its Role and RoleBinding included) and stays through the switches.
    api.patch(
        "rbac",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"components": {"ingressGateways": [
            {"name": "rbac-edge-gateway", "namespace": "rbac-edge"}]}}})),
    )
    .await
    .unwrap();
    meshop_testenv::wait_until(
        "NamespaceNotGranted for the gateway's namespace",
        Duration::from_secs(60),
        || async {
            let mi = api.get("rbac").await?;
            let stalled = mi
                .status
                .as_ref()
                .and_then(|s| s.condition(meshop::api::condition::STALLED))
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
            let Some((status, reason, message)) = stalled else {
                anyhow::bail!("no Stalled condition");
            };
            anyhow::ensure!(
                status == "True"
                    && reason == "NamespaceNotGranted"
                    && message.contains("gateway rbac-edge-gateway in namespace \"rbac-edge\""),
                "{status} {reason} {message}"
            );
            Ok(())
        },
    )
    .await;
    cp.grant_control_plane("rbac-edge").unwrap();
    meshop_testenv::wait_for_kstatus(&api, "rbac", KStatus::Current, Duration::from_secs(120))
        .await;
    let edge: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(admin.clone(), "rbac-edge");
    assert!(edge.get_opt("rbac-edge-gateway").await.unwrap().is_some());
    api.patch(
        "rbac",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"profile": "demo"}})),
    )
    .await
    .unwrap();
    meshop_testenv::wait_for_kstatus(&api, "rbac", KStatus::Current, Duration::from_secs(120))
        .await;
    // The other profiles: performance (autoscaled istiod and gateway), ambient (ztunnel, the CNI
    // agent's ambient rights, istiod's waypoint rights, the Gateway API CRDs) and empty (only
    // what the spec switches on, CNI here: the switch prunes istiod and the gateways).
    for profile in ["performance", "ambient", "empty"] {
        api.patch(
            "rbac",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"profile": profile}})),
        )
        .await
        .unwrap();
        meshop_testenv::wait_for_kstatus(&api, "rbac", KStatus::Current, Duration::from_secs(120))
            .await;
    }

    // A revision-based upgrade lists pods, namespaces and workloads cluster-wide and restarts a
    // workload onto the new revision: all with the ServiceAccount's RBAC (an Error::Upgrade,
    // such as a Forbidden, would keep it from ever being Current).
    let canary: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "rbac-canary"}, "spec": {"profile": "minimal", "namespace": "rbac-canary",
        "version": "1.30.5", "updateStrategy": "RevisionBased",
        "upgrade": {"tags": ["rbac"], "workloads": {"mode": "Rollout"}, "retirementGracePeriodSeconds": 0}}})).unwrap();
    api.create(&PostParams::default(), &canary).await.unwrap();
    // Secrets are meshop's to write only where the installer granted it: until rbac-canary is
    // granted, the MeshInstall says so (and nothing is applied, so no Forbidden either).
    meshop_testenv::wait_until("NamespaceNotGranted", Duration::from_secs(60), || async {
        let mi = api.get("rbac-canary").await?;
        let stalled = mi
            .status
            .as_ref()
            .and_then(|s| s.condition(meshop::api::condition::STALLED))
            .map(|c| (c.status.clone(), c.reason.clone()));
        anyhow::ensure!(
            stalled == Some(("True".into(), "NamespaceNotGranted".into())),
            "{stalled:?}"
        );
        Ok(())
    })
    .await;
    cp.grant_control_plane("rbac-canary").unwrap();
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
    // Deletion removed the gateway in the other namespace too, and left the granted namespace.
    assert!(
        edge.get_opt("rbac-edge-gateway")
            .await
            .unwrap()
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some())
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    assert!(namespaces.get_opt("rbac-edge").await.unwrap().is_some());
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

    least_privilege(&audit_log.next_events().unwrap());
}

/// What the operator's own RBAC grants and it may leave unused in this scenario, with why.
/// (verb, API group, resource).
const UNUSED_ALLOWED: &[(&str, &str, &str, &str)] = &[
    (
        "update",
        "meshop.dev",
        "meshinstalls/finalizers",
        "owner references with blockOwnerDeletion need it where the \
         OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift); the test API \
         server runs without it",
    ),
    (
        "patch",
        "apps",
        "statefulsets",
        "restarting a StatefulSet onto a new revision; this scenario's workload is a Deployment",
    ),
    (
        "update",
        "",
        "secrets",
        "renewing the webhook's certificate, when a third of its lifetime (90 days) is left; \
         tests/tests/webhook_rotation.rs exercises it",
    ),
];

/// The operator's own grants (its ClusterRole's own rules and the Role in its namespace) must
/// all be used by its ServiceAccount, as the API server's audit log tells, but for
/// [`UNUSED_ALLOWED`]. The rules it holds only because the roles it creates grant them
/// (Kubernetes lets no one grant what it does not hold) are istiod's and the gateways' to use,
/// and are judged where those run (tests/tests/istiod.rs).
fn least_privilege(events: &[audit::Event]) {
    let used = audit::used_grants(events, SA);
    let denied: Vec<String> = events
        .iter()
        .filter(|e| e.user == SA && e.code == 403)
        .map(|e| e.access.to_string())
        .collect();
    assert!(
        denied.is_empty(),
        "the API server refused the operator: {denied:?}"
    );

    let mut own = audit::grants(&meshop::deploy::own_rules());
    for object in meshop::deploy::rbac_objects("meshop-system", false) {
        if object["kind"] == "Role" {
            let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(object).unwrap();
            own.extend(audit::grants(&role.rules.unwrap_or_default()));
        }
    }
    let privilege = audit::privilege(&own, &used, UNUSED_ALLOWED);
    eprintln!(
        "least privilege: the operator used {} of the {} (verb, group, resource) its own RBAC grants",
        privilege.used, privilege.granted
    );
    assert!(
        privilege.unused.is_empty(),
        "the operator's RBAC grants what it never used (drop it, or list it with the reason in \
         UNUSED_ALLOWED): {:#?}",
        privilege.unused
    );
    assert!(
        privilege.stale.is_empty(),
        "UNUSED_ALLOWED lists grants that were used or are not granted: {:?}",
        privilege.stale
    );
}
