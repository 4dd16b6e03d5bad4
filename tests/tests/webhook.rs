//! The injection webhook against a real API server calling it over TLS at 127.0.0.1, with the
//! operator as a real process: labelled namespaces get sidecars, everything else is left alone,
//! Deployments roll out injected pods that become Ready, and failurePolicy decides what happens
//! when the webhook is down.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, WebhookState};
use meshop::controller::status::{KStatus, kstatus};
use meshop_testenv::apps::{has_sidecar, labelled_namespace};
use serde_json::json;

use anyhow::ensure;

fn pod(name: &str, labels: serde_json::Value, host_network: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "hostNetwork": host_network, "containers": [{ "name": "app", "image": "example.com/app:1",
            "ports": [{ "containerPort": 8080 }],
            "readinessProbe": { "httpGet": { "path": "/ready", "port": 8080 } } }] }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_injects_over_tls_and_honours_failure_policy() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let mut operator = meshop_testenv::start_operator(cp, "meshop-webhook-test", &[])
        .unwrap()
        .process;

    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "inject"}, "spec": {"profile": "minimal", "injection": {"failurePolicy": "Fail"}}})).unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_until(
        "MeshInstall Ready with the webhook Active",
        Duration::from_secs(120),
        || async {
            let mi = api.get("inject").await?;
            let status = kstatus(mi.metadata.generation, mi.status.as_ref());
            let webhook = mi.status.and_then(|s| s.webhook);
            ensure!(
                status == KStatus::Current
                    && webhook.as_ref().is_some_and(|w| {
                        w.state == WebhookState::Active && w.certificate_expiry.is_some()
                    }),
                "{status:?}, webhook {webhook:?}"
            );
            Ok(())
        },
    )
    .await;

    labelled_namespace(&client, "injected", json!({ "istio-injection": "enabled" })).await;
    labelled_namespace(&client, "plain", json!({})).await;
    let create = |ns: &str, p: Pod| {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        async move { pods.create(&PostParams::default(), &p).await }
    };
    let injected = create("injected", pod("app", json!({"app": "app"}), false))
        .await
        .unwrap();
    assert!(
        has_sidecar(&injected),
        "a pod in a labelled namespace gets istio-proxy"
    );
    let status = injected.metadata.annotations.clone().unwrap_or_default();
    assert!(status.contains_key("sidecar.istio.io/status"), "{status:?}");
    let opted_out = create(
        "injected",
        pod(
            "opted-out",
            json!({"sidecar.istio.io/inject": "false"}),
            false,
        ),
    )
    .await
    .unwrap();
    assert!(!has_sidecar(&opted_out));
    let host = create("injected", pod("host", json!({}), true))
        .await
        .unwrap();
    assert!(!has_sidecar(&host), "hostNetwork pods are never injected");
    assert!(!has_sidecar(
        &create("plain", pod("plain", json!({}), false))
            .await
            .unwrap()
    ));
    assert!(!has_sidecar(
        &create(
            "kube-system",
            pod("system", json!({"sidecar.istio.io/inject": "true"}), false)
        )
        .await
        .unwrap()
    ));

    // A Deployment in an injected namespace rolls out injected pods that become Ready.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "injected");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "example.com/web:1"}]}}}})).unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "injected");
    meshop_testenv::wait_until(
        "2 injected web pods Ready",
        Duration::from_secs(90),
        || async {
            let list = pods.list(&ListParams::default().labels("app=web")).await?;
            let seen: Vec<(String, bool, bool)> = list
                .items
                .iter()
                .map(|p| {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        has_sidecar(p),
                        ready,
                    )
                })
                .collect();
            ensure!(
                seen.len() == 2 && seen.iter().all(|(_, sidecar, ready)| *sidecar && *ready),
                "(pod, sidecar, ready): {seen:?}"
            );
            Ok(())
        },
    )
    .await;

    // Webhook down: Fail refuses the pod; Ignore admits it without a sidecar.
    operator.kill();
    let err = create("injected", pod("refused", json!({}), false))
        .await
        .expect_err("failurePolicy Fail must refuse");
    assert!(err.to_string().contains("failed calling webhook"), "{err}");
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut config = hooks.get("meshop-sidecar-injector-inject").await.unwrap();
    for w in config.webhooks.iter_mut().flatten() {
        w.failure_policy = Some("Ignore".into());
    }
    config.metadata.managed_fields = None;
    hooks
        .patch(
            "meshop-sidecar-injector-inject",
            &PatchParams::apply("webhook-test").force(),
            &Patch::Apply(&config),
        )
        .await
        .unwrap();
    // The API server sees the new policy once its own watch of webhook configurations catches
    // up: until then a refusal is the old policy, not a failure.
    let admitted = meshop_testenv::wait_until(
        "pod admitted under failurePolicy Ignore",
        Duration::from_secs(30),
        || async {
            create("injected", pod("admitted", json!({}), false))
                .await
                .map_err(anyhow::Error::from)
        },
    )
    .await;
    assert!(
        !has_sidecar(&admitted),
        "with Ignore and no webhook the pod is admitted as it is"
    );
}
