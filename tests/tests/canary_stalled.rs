//! A workload that cannot become ready after its restart stops the migration: the MeshInstall is
//! Stalled with the workload named, nothing else is restarted, and fixing the workload resumes
//! the migration to Ready. (Its own test binary: its default tag must not compete with
//! canary.rs's for `istio-injection=enabled` namespaces.)

use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, condition};
use meshop::controller::status::{KStatus, kstatus};
use meshop_testenv::apps;
use serde_json::json;

const MESH: &str = "stall";

fn restarted_for(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("meshop.dev/restarted-for")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_workload_stalls_the_migration_until_it_is_fixed() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _logs = meshop_testenv::LogsOnFailure("canary stalled".into());
    let mut operator = meshop_testenv::start_operator(cp, "meshop-stall", &[]).unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": MESH },
        "spec": {
            "profile": "minimal", "namespace": "stall-system", "version": "1.30.5",
            "updateStrategy": "RevisionBased",
            "upgrade": { "workloads": { "mode": "Rollout", "maxConcurrent": 1 },
                "retirementGracePeriodSeconds": 5 }
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, MESH, KStatus::Current, Duration::from_secs(120)).await;

    // "fragile/bad" sorts before "steady/good", so it is restarted first. Its namespace's quota
    // allows one pod: the restart's surge pod is refused and the rollout misses its 10 s deadline.
    apps::labelled_namespace(&client, "fragile", json!({ "istio-injection": "enabled" })).await;
    apps::labelled_namespace(&client, "steady", json!({ "istio-injection": "enabled" })).await;
    apps::create_deployments(&client, "fragile", &["bad"])
        .await
        .unwrap();
    apps::create_deployments(&client, "steady", &["good"])
        .await
        .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "fragile");
    let quota: ResourceQuota = serde_json::from_value(
        json!({"metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}}}),
    )
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota controller must have counted the running pod before the restart.
    meshop_testenv::wait_until("quota counts the pod", Duration::from_secs(30), || async {
        let q = quotas.get("one-pod").await?;
        let used = q.status.and_then(|s| s.used).unwrap_or_default();
        ensure!(
            used.get("pods").map(|q| q.0.as_str()) == Some("1"),
            "{used:?}"
        );
        Ok(())
    })
    .await;

    api.patch(
        MESH,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": "1.31.1" } })),
    )
    .await
    .unwrap();
    let mi =
        meshop_testenv::wait_for_kstatus(&api, MESH, KStatus::Failed, Duration::from_secs(120))
            .await;
    let status = mi.status.unwrap();
    let stalled = status.condition(condition::STALLED).unwrap();
    assert_eq!(stalled.reason, "MigrationStalled");
    assert!(
        stalled.message.contains("Deployment/fragile/bad"),
        "{}",
        stalled.message
    );
    // Nothing else was restarted while one workload fails.
    let good_api: Api<Deployment> = Api::namespaced(client.clone(), "steady");
    let bad_api: Api<Deployment> = Api::namespaced(client.clone(), "fragile");
    assert_eq!(restarted_for(&good_api.get("good").await.unwrap()), None);
    assert_eq!(
        restarted_for(&bad_api.get("bad").await.unwrap()).as_deref(),
        Some("1-31-1")
    );
    // It stays stalled (a few more passes) and still has not touched the other workload.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mi = api.get(MESH).await.unwrap();
    assert_eq!(
        kstatus(mi.metadata.generation, mi.status.as_ref()),
        KStatus::Failed
    );
    assert_eq!(restarted_for(&good_api.get("good").await.unwrap()), None);
    let notes = meshop_testenv::event_notes(&client, MESH, "MigrationStalled")
        .await
        .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("Deployment/fragile/bad")),
        "{notes:?}"
    );

    // The platform team fixes it (quota lifted, the rollout retried): the migration resumes.
    quotas
        .delete("one-pod", &DeleteParams::default())
        .await
        .unwrap();
    bad_api
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"fixed": "true"}}}}}),
            ),
        )
        .await
        .unwrap();
    apps::wait_pods_on(&client, "fragile", "1-31-1", 1, Duration::from_secs(90)).await;
    apps::wait_pods_on(&client, "steady", "1-31-1", 1, Duration::from_secs(90)).await;
    assert_eq!(
        restarted_for(&good_api.get("good").await.unwrap()).as_deref(),
        Some("1-31-1")
    );
    // Ready, and the old revision retired once unused for the grace period.
    meshop_testenv::wait_until(
        "Current on 1-31-1 alone",
        Duration::from_secs(90),
        || async {
            let mi = api.get(MESH).await?;
            let state = kstatus(mi.metadata.generation, mi.status.as_ref());
            let names: Vec<String> = mi
                .status
                .map(|s| s.revisions.into_iter().map(|r| r.name).collect())
                .unwrap_or_default();
            ensure!(
                state == KStatus::Current && names == ["1-31-1"],
                "{state:?} {names:?}"
            );
            Ok(())
        },
    )
    .await;
    operator
        .process
        .check_running()
        .expect("meshop stayed up the whole test");
}
