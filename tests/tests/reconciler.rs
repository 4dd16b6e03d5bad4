//! The reconciler end to end, in controllers mode (Deployments really roll out under kwok):
//! install, kstatus-correct status, drift repair, profile switches in place, revision ownership,
//! invalid specs, and deletion that leaves nothing behind.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use serde_json::json;

const NS: &str = "istio-system";

async fn start_operator(client: Client) -> tokio::task::JoinHandle<()> {
    let options = meshop::controller::RunOptions {
        health_addr: "127.0.0.1:0".parse().unwrap(),
        leader_election: true,
        lease_namespace: "default".into(),
        identity: "reconciler-test".into(),
        lease_duration: Duration::from_secs(15),
        webhook_addr: None,
        webhook_cert_lifetime: meshop::webhook::certs::DEFAULT_CERT_LIFETIME,
        webhook_url: None,
    };
    tokio::spawn(async move {
        if let Err(e) = meshop::controller::run(client, options).await {
            eprintln!("operator stopped: {e:#}");
        }
    })
}

fn mesh(name: &str, spec: serde_json::Value) -> MeshInstall {
    serde_json::from_value(json!({ "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall", "metadata": { "name": name }, "spec": spec }))
        .unwrap()
}

async fn wait_current(api: &Api<MeshInstall>, name: &str, timeout: Duration) -> MeshInstall {
    meshop_testenv::wait_for_kstatus(api, name, KStatus::Current, timeout).await
}

async fn deployment_names(client: &Client) -> BTreeSet<String> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .map(|d| d.metadata.name.unwrap())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn switch_profile(api: &Api<MeshInstall>, name: &str, profile: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "profile": profile } })),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_drift_switch_conflict_and_delete() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _operator = start_operator(cp.client().await.unwrap()).await;
    let api: Api<MeshInstall> = Api::all(client.clone());

    // Install the demo profile and wait until kstatus reads Current.
    api.create(
        &PostParams::default(),
        &mesh("mesh", json!({ "profile": "demo" })),
    )
    .await
    .unwrap();
    let mi = wait_current(&api, "mesh", Duration::from_secs(120)).await;
    let status = mi.status.clone().unwrap();
    assert_eq!(status.observed_generation, mi.metadata.generation);
    assert_eq!(
        (status.profile.as_deref(), status.version.as_deref()),
        (
            Some("demo"),
            Some(meshop::versions::default_version().as_str())
        )
    );
    let names: Vec<_> = status.components.iter().map(|c| c.name.as_str()).collect();
    for c in [
        "istiod",
        "ingressGateway",
        "egressGateway",
        "prometheus",
        "grafana",
        "kiali",
        "jaeger",
    ] {
        assert!(names.contains(&c), "status lacks component {c}: {names:?}");
    }
    for c in status
        .components
        .iter()
        .filter(|c| c.desired_replicas.is_some())
    {
        assert_eq!(c.ready_replicas, c.desired_replicas, "{c:?}");
    }
    assert_eq!(
        deployment_names(&client).await,
        set(&[
            "istiod",
            "istio-ingressgateway",
            "istio-egressgateway",
            "prometheus",
            "grafana",
            "kiali",
            "jaeger"
        ])
    );

    // Drift: a deleted gateway Service comes back; an edited istiod Deployment is put back.
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let old_uid = services
        .get("istio-ingressgateway")
        .await
        .unwrap()
        .metadata
        .uid;
    services
        .delete("istio-ingressgateway", &DeleteParams::default())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "gateway Service recreated",
        Duration::from_secs(30),
        || async {
            match services.get_opt("istio-ingressgateway").await? {
                Some(s) if s.metadata.uid != old_uid => Ok(()),
                other => Err(anyhow::anyhow!("{:?}", other.map(|s| s.metadata.uid))),
            }
        },
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let image = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "discovery", "image": "example.com/not-istio:1" }] } } } });
    deployments.patch("istiod", &PatchParams::apply("someone-else").force(), &Patch::Apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "istiod" }, "spec": image["spec"] }))).await.unwrap();
    meshop_testenv::wait_until("istiod image restored", Duration::from_secs(30), || async {
        let d = deployments.get("istiod").await?;
        let image = d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap_or_default();
        if image.ends_with(&format!("/pilot:{}", meshop::versions::default_version())) {
            Ok(())
        } else {
            Err(anyhow::anyhow!("image {image}"))
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    meshop_testenv::wait_until("DriftCorrected event", Duration::from_secs(30), || async {
        let list = events.list(&ListParams::default()).await?;
        let reasons: Vec<_> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        if reasons.iter().any(|r| r == "DriftCorrected") {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{reasons:?}"))
        }
    })
    .await;
    wait_current(&api, "mesh", Duration::from_secs(60)).await;

    // Profile switches converge; the gateway that stays is updated in place, never recreated.
    let gateway_uid = deployments
        .get("istio-ingressgateway")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let istiod_uid = deployments
        .get("istiod")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    for (profile, expected) in [
        ("production", &["istiod", "istio-ingressgateway"][..]),
        ("performance", &["istiod", "istio-ingressgateway"][..]),
        ("minimal", &["istiod"][..]),
        (
            "demo",
            &[
                "istiod",
                "istio-ingressgateway",
                "istio-egressgateway",
                "prometheus",
                "grafana",
                "kiali",
                "jaeger",
            ][..],
        ),
    ] {
        switch_profile(&api, "mesh", profile).await;
        let mi = wait_current(&api, "mesh", Duration::from_secs(180)).await;
        assert_eq!(
            mi.status.as_ref().unwrap().profile.as_deref(),
            Some(profile)
        );
        if profile == "production" || profile == "performance" {
            // Ready means the autoscalers' minimum of 2 istiod replicas really runs.
            let status = mi.status.as_ref().unwrap();
            let istiod = status
                .components
                .iter()
                .find(|c| c.name == "istiod")
                .unwrap();
            assert!(
                istiod.ready_replicas.unwrap_or(0) >= 2,
                "{profile}: {istiod:?}"
            );
        }
        assert_eq!(
            deployment_names(&client).await,
            set(expected),
            "after switching to {profile}"
        );
        assert_eq!(
            deployments
                .get("istiod")
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap(),
            istiod_uid,
            "istiod recreated on {profile}"
        );
        if profile != "minimal" && profile != "demo" {
            assert_eq!(
                deployments
                    .get("istio-ingressgateway")
                    .await
                    .unwrap()
                    .metadata
                    .uid
                    .unwrap(),
                gateway_uid,
                "the ingress gateway Deployment must be updated in place when switching to {profile}"
            );
        }
    }

    // One MeshInstall owns a revision: a second claim is Stalled and changes nothing.
    api.create(
        &PostParams::default(),
        &mesh("mesh-2", json!({ "profile": "minimal" })),
    )
    .await
    .unwrap();
    let stalled =
        meshop_testenv::wait_for_kstatus(&api, "mesh-2", KStatus::Failed, Duration::from_secs(30))
            .await;
    let stalled_condition = stalled
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(stalled_condition.reason, "RevisionConflict");
    assert!(
        stalled_condition
            .message
            .contains("already installed by MeshInstall mesh"),
        "{}",
        stalled_condition.message
    );
    let dynamic: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::erase::<Deployment>(&()),
    );
    assert!(
        dynamic
            .list(&ListParams::default().labels("app.kubernetes.io/instance=mesh-2"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // An unsupported version is reported, not retried in a loop.
    api.create(
        &PostParams::default(),
        &mesh(
            "old",
            json!({ "profile": "minimal", "namespace": "old-mesh", "version": "1.5.0" }),
        ),
    )
    .await
    .unwrap();
    let old =
        meshop_testenv::wait_for_kstatus(&api, "old", KStatus::Failed, Duration::from_secs(30))
            .await;
    let ready = old
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("1.5.0 is not supported"),
        "{}",
        ready.message
    );

    // Deleting removes everything meshop created, cluster-scoped objects included.
    for name in ["old", "mesh-2", "mesh"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    meshop_testenv::wait_until("MeshInstalls gone", Duration::from_secs(120), || async {
        let left = api.list(&ListParams::default()).await?.items;
        if left.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{:?}",
                left.iter()
                    .map(|m| m.metadata.name.clone())
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
    meshop_testenv::wait_until(
        "every managed object gone",
        Duration::from_secs(120),
        || async {
            let mut left = Vec::new();
            for resource in meshop::kinds::MANAGED_KINDS
                .iter()
                .map(|k| k.api_resource())
            {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                match api
                    .list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshop"))
                    .await
                {
                    Ok(list) => left.extend(list.items.into_iter().map(|o| {
                        format!("{}/{}", resource.kind, o.metadata.name.unwrap_or_default())
                    })),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("left: {}", left.join(", ")))
            }
        },
    )
    .await;
}
