//! What the injection webhook must never do, against a real API server that calls it over TLS:
//! admit a pod without its sidecar because its namespace was not in the webhook's cache yet, and
//! keep the operator from starting again because the webhook it serves is down.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use meshop::api::MeshInstall;
use meshop::effective::{Installation, Owner};
use meshop::webhook::{CertBundle, CertResolver, Limits, View};
use meshop_testenv::apps::{has_sidecar, labelled_namespace};
use serde_json::json;

fn app_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "app", "image": "example.com/app:1" }] }
    }))
    .unwrap()
}

/// meshop's webhook server, in this process, over a view that knows the revision `trust` and no
/// namespace at all: every namespace is a cache miss. With `read_misses`, it reads them from
/// the API server. Registered by URL with `failurePolicy: Fail` for namespaces labelled
/// `trust-test=<label>` and `istio.io/rev=trust` (a revision of its own, so the other test's
/// MeshInstall, whose webhook is down at times, never sees these namespaces).
async fn webhook_for_misses(
    client: &Client,
    label: &str,
    read_misses: bool,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let view = View::new();
    let spec = serde_json::from_value(json!({"profile": "minimal", "revision": "trust"})).unwrap();
    let owner = Owner {
        name: "trust".into(),
        uid: None,
    };
    view.set_install("trust", &Installation::resolve(owner, &spec).unwrap());
    view.mark_synced();
    if read_misses {
        view.read_misses_from(client.clone());
    }
    let bundle =
        CertBundle::generate(&["127.0.0.1".to_string()], Duration::from_secs(3600)).unwrap();
    let listener = meshop::webhook::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(meshop::metrics::Metrics::default());
    let server = tokio::spawn(meshop::webhook::serve_listener(
        listener,
        meshop::webhook::router(view, metrics.clone()),
        CertResolver::new(bundle.clone()).unwrap(),
        Limits::default(),
        metrics,
    ));
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": format!("trust-{label}") },
        "webhooks": [{
            "name": "namespace.trust.meshop.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {
                "url": format!("https://{addr}/inject"),
                "caBundle": base64(bundle.ca_pem.as_bytes()),
            },
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "namespaceSelector": { "matchLabels": { "trust-test": label, "istio.io/rev": "trust" } },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }],
        }]
    }))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .unwrap();
    server
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A pod whose namespace the webhook's watch has not delivered (the view here has none: a lagging
/// watch at its worst) is injected after the webhook reads the namespace, or, when it cannot,
/// refused through failurePolicy. Before the fix, both pods were admitted without a sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_missing_from_the_webhooks_cache_is_read_never_guessed() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _logs = meshop_testenv::LogsOnFailure("webhook cache miss".into());

    let reading = webhook_for_misses(&client, "reads", true).await;
    labelled_namespace(
        &client,
        "miss-read",
        json!({"trust-test": "reads", "istio.io/rev": "trust"}),
    )
    .await;
    let created = Api::<Pod>::namespaced(client.clone(), "miss-read")
        .create(&PostParams::default(), &app_pod("app"))
        .await
        .expect("the webhook reads the namespace and answers");
    assert!(
        has_sidecar(&created),
        "a pod in an injection-labelled namespace the cache had not seen was admitted without istio-proxy"
    );

    let blind = webhook_for_misses(&client, "blind", false).await;
    labelled_namespace(
        &client,
        "miss-blind",
        json!({"trust-test": "blind", "istio.io/rev": "trust"}),
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), "miss-blind");
    let refused = pods
        .create(&PostParams::default(), &app_pod("app"))
        .await
        .expect_err("a pod whose namespace the webhook cannot know must not be admitted");
    // The 503's text stays in the operator's log; the API server reports the failed call.
    let message = refused.to_string();
    assert!(
        message.contains("failed calling webhook \"namespace.trust.meshop.dev\""),
        "{message}"
    );
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was created"
    );
    reading.abort();
    blind.abort();
}

/// The operator's namespace labelled for injection, the MeshInstall's webhook with
/// `failurePolicy: Fail`, the operator down and its pods deleted: the Deployment controller still
/// creates new operator pods (the namespace selector leaves the operator's namespace out), and in
/// any other injected namespace the operator's pod template is admitted too (its
/// `sidecar.istio.io/inject: "false"` label is what the object selectors read). Before the fix,
/// the API server refused the new pods: "failed calling webhook".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_never_locks_itself_out() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _logs = meshop_testenv::LogsOnFailure("operator lockout".into());
    const NS: &str = "meshop-lockout";
    labelled_namespace(&client, NS, json!({})).await;
    let mut operator =
        meshop_testenv::start_operator(cp, "meshop-lockout", &[format!("--lease-namespace={NS}")])
            .unwrap();

    let installs: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "lockout"}, "spec": {"profile": "minimal", "injection": {"failurePolicy": "Fail"}}}))
    .unwrap();
    installs.create(&PostParams::default(), &mi).await.unwrap();
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    meshop_testenv::wait_until(
        "the MeshInstall's injection webhook registered",
        Duration::from_secs(120),
        || async {
            hooks
                .get_opt("meshop-sidecar-injector-lockout")
                .await?
                .context("not yet")
        },
    )
    .await;

    // The operator as deploy/ installs it, into its namespace, which is then labelled for
    // injection (as `kubectl label namespace meshop-system istio-injection=enabled` would).
    let mut workload = meshop::deploy::Workload::defaults();
    workload.namespace = NS.into();
    let deployment = meshop::deploy::operator_objects(&workload)
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), NS);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "meshop"}})).unwrap(),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deployment: Deployment = serde_json::from_value(deployment).unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let replicas = deployment.spec.as_ref().unwrap().replicas.unwrap_or(1) as usize;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio-injection": "enabled"}}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = ListParams::default().labels("app.kubernetes.io/name=meshop");
    let first: Vec<String> = meshop_testenv::wait_until(
        "the operator Deployment's pods",
        Duration::from_secs(60),
        || async {
            let names: Vec<String> = pods
                .list(&selector)
                .await?
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            ensure!(names.len() == replicas, "{names:?}");
            Ok(names)
        },
    )
    .await;

    // The webhook goes away with the operator, then so do its pods.
    operator.process.kill();
    pods.delete_collection(&DeleteParams::default().grace_period(0), &selector)
        .await
        .unwrap();
    let replaced: Vec<Pod> = meshop_testenv::wait_until(
        "new operator pods created and running without the webhook",
        Duration::from_secs(90),
        || async {
            let now: Vec<Pod> = pods
                .list(&selector)
                .await?
                .items
                .into_iter()
                .filter(|p| !first.contains(&p.name_any()))
                .collect();
            let running = now
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            ensure!(
                running == replicas,
                "{running} of {replicas} new pods running; {:?}",
                replica_set_events(&client, NS).await
            );
            Ok(now)
        },
    )
    .await;
    assert!(replaced.iter().all(|p| !has_sidecar(p)));

    // Elsewhere, with the webhook down and failurePolicy Fail, a pod from the operator's template
    // is admitted (its label opts out) while an ordinary pod is refused: the webhook is down.
    labelled_namespace(
        &client,
        "lockout-apps",
        json!({"istio-injection": "enabled"}),
    )
    .await;
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), "lockout-apps")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "meshop"}})).unwrap(),
        )
        .await
        .unwrap();
    let elsewhere: Api<Pod> = Api::namespaced(client.clone(), "lockout-apps");
    let template = deployment.spec.unwrap().template;
    let operator_pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some("operator-template".into()),
            ..template.metadata.unwrap_or_default()
        },
        spec: template.spec,
        ..Default::default()
    };
    elsewhere
        .create(&PostParams::default(), &operator_pod)
        .await
        .expect("the operator's pod template needs no webhook");
    let refused = elsewhere
        .create(&PostParams::default(), &app_pod("app"))
        .await
        .expect_err("with the webhook down, failurePolicy Fail refuses an ordinary pod");
    assert!(
        refused.to_string().contains("failed calling webhook"),
        "{refused}"
    );

    // Clean up what outlives the test in this binary's control plane.
    hooks
        .delete("meshop-sidecar-injector-lockout", &DeleteParams::default())
        .await
        .unwrap();
}

/// The ReplicaSet controller's complaints (such as "failed calling webhook"), for the failure message.
async fn replica_set_events(client: &Client, ns: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.message)
                .collect()
        })
        .unwrap_or_default()
}
