//! Controllers mode: with kube-controller-manager, kube-scheduler and kwok, workloads really roll out.

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{Condition, conditions};
use serde_json::json;

#[tokio::test]
async fn a_deployment_becomes_available() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let ns = meshop_testenv::namespace(&client, "rollout").await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1",
                    "readinessProbe": { "httpGet": { "path": "/", "port": 8080 } } }] }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let status = meshop_testenv::wait_until(
        "Deployment web rolled out",
        std::time::Duration::from_secs(90),
        || async {
            let d = deployments.get("web").await?;
            anyhow::ensure!(
                conditions::is_deployment_completed().matches_object(Some(&d)),
                "status {:?}",
                d.status
            );
            d.status.context("no status")
        },
    )
    .await;
    assert_eq!(status.ready_replicas, Some(3));
    assert_eq!(status.available_replicas, Some(3));
}
