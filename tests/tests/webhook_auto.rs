//! `sidecarMode: auto` against a real API server: the operator's webhook watches the Nodes (with
//! the operator's own RBAC) and decides native or classic from their kubelet versions, as Istio
//! does; the per-pod annotation overrides; a node upgrade is seen without a restart.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, WebhookState};
use meshop::controller::status::{KStatus, kstatus};
use serde_json::json;

fn pod(name: &str, node: Option<&str>, annotations: serde_json::Value) -> Pod {
    let mut p = json!({
        "metadata": { "name": name, "labels": {"app": name}, "annotations": annotations },
        "spec": { "initContainers": [{ "name": "setup", "image": "example.com/setup:1" }],
            "containers": [{ "name": "app", "image": "example.com/app:1" }] }
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    serde_json::from_value(p).unwrap()
}

/// Where the admitted pod's istio-proxy is, and the order of its init containers.
fn placement(p: &Pod) -> (&'static str, Vec<String>) {
    let spec = p.spec.as_ref().unwrap();
    let inits: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let native = inits.iter().any(|n| n == "istio-proxy");
    let classic = spec.containers.iter().any(|c| c.name == "istio-proxy");
    let at = match (native, classic) {
        (true, false) => "native",
        (false, true) => "classic",
        _ => "none",
    };
    (at, inits)
}

async fn set_kubelet(nodes: &Api<Node>, name: &str, version: &str) {
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nodeInfo": {"kubeletVersion": version}}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_sidecar_mode_follows_the_nodes_kubelets() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _operator = meshop_testenv::start_operator(cp, "meshop-webhook-auto-test", &[]).unwrap();

    // The fake nodes: one too old for native sidecars, the others new enough.
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.len() >= 2, "the testenv runs fake nodes: {names:?}");
    let (old, new) = (&names[0], &names[1]);
    for n in &names {
        set_kubelet(&nodes, n, if n == old { "v1.32.9" } else { "v1.36.3" }).await;
    }

    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(
        json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "auto"}, "spec": {"profile": "minimal",
            "injection": {"failurePolicy": "Fail", "sidecarMode": "auto"}}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_until(
        "MeshInstall Ready with the webhook Active",
        Duration::from_secs(120),
        || async {
            let mi = api.get("auto").await?;
            let current = kstatus(mi.metadata.generation, mi.status.as_ref()) == KStatus::Current;
            let webhook = mi.status.as_ref().and_then(|s| s.webhook.as_ref());
            match webhook {
                Some(w) if current && w.state == WebhookState::Active => Ok(()),
                _ => anyhow::bail!("current {current}, webhook {webhook:?}"),
            }
        },
    )
    .await;

    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "auto-apps", "labels": {"istio-injection": "enabled"}}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    // Pods need the namespace's default ServiceAccount, made by the controller manager.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "auto-apps");
    meshop_testenv::wait_until(
        "default ServiceAccount",
        Duration::from_secs(30),
        || async {
            sa.get_opt("default")
                .await?
                .map(|_| ())
                .ok_or_else(|| anyhow::anyhow!("not created yet"))
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "auto-apps");
    // Dry runs go through the webhook (sideEffects None) without leaving pods behind.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let admitted = |p: Pod| {
        let pods = pods.clone();
        let dry = dry.clone();
        async move { pods.create(&dry, &p).await }
    };

    let unbound = admitted(pod("unbound", None, json!({}))).await.unwrap();
    assert_eq!(
        placement(&unbound),
        (
            "classic",
            vec!["setup".to_string(), "istio-init".to_string()]
        ),
        "one node is too old, so an unbound pod stays classic, istio-init last"
    );
    let on_new = admitted(pod("on-new", Some(new), json!({}))).await.unwrap();
    assert_eq!(
        placement(&on_new),
        (
            "native",
            vec![
                "istio-init".to_string(),
                "istio-proxy".to_string(),
                "setup".to_string()
            ]
        ),
        "a pod bound to a 1.36 node goes native"
    );
    let on_old = admitted(pod("on-old", Some(old), json!({}))).await.unwrap();
    assert_eq!(placement(&on_old).0, "classic");
    let forced = admitted(pod(
        "forced",
        None,
        json!({"sidecar.istio.io/nativeSidecar": "true"}),
    ))
    .await
    .unwrap();
    assert_eq!(placement(&forced).0, "native", "the annotation overrides");
    let err = admitted(pod(
        "bad",
        None,
        json!({"sidecar.istio.io/nativeSidecar": "sometimes"}),
    ))
    .await
    .expect_err("a bad annotation value is refused");
    assert!(err.to_string().contains("nativeSidecar"), "{err}");

    // The old node is upgraded: the watch sees it, and unbound pods go native.
    set_kubelet(&nodes, old, "v1.33.0").await;
    meshop_testenv::wait_until(
        "unbound pods native after the upgrade",
        Duration::from_secs(30),
        || async {
            let p = admitted(pod("after", None, json!({}))).await?;
            match placement(&p).0 {
                "native" => Ok(()),
                other => anyhow::bail!("sidecar is {other}"),
            }
        },
    )
    .await;
}
