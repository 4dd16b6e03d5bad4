//! Canary upgrades (updateStrategy RevisionBased) against a real control plane with kwok, the
//! operator as a real process: a MeshInstall on Istio 1.30.5 is upgraded to 1.31.1, then rolled
//! back to 1.30.5. Each way the test sees two istiods side by side, the tags move, new pods in
//! `istio-injection=enabled` and `istio.io/rev=<tag>` namespaces get the new proxy, the existing
//! Deployments are restarted never more than `maxConcurrent` at once, the old revision is retired
//! only after the grace period and never while a pod uses it, and the ingress gateway never drops
//! below its available floor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, RevisionStatus};
use meshop::controller::status::KStatus;
use meshop_testenv::apps;
use serde_json::json;

const MESH: &str = "canary";
const CONTROL: &str = "canary-system";
const APPS: &str = "apps";
const TAGGED: &str = "tagged";
const WORKLOADS: [&str; 5] = ["a", "b", "c", "d", "e"];
const MAX_CONCURRENT: usize = 2;
const GRACE: Duration = Duration::from_secs(15);
const GATEWAY_REPLICAS: i32 = 2;

/// What a watcher polling the cluster every 200 ms saw.
#[derive(Default, Debug)]
struct Seen {
    /// The most Deployments in `apps` restarted by meshop and still rolling out at one time.
    max_restarting: usize,
    /// The fewest available ingress gateway replicas once it first had all of them.
    min_gateway_available: Option<i32>,
    /// Times a pod ran a revision whose istiod was gone.
    violations: Vec<String>,
    /// When each istiod Deployment was first seen missing after having existed.
    gone: Vec<(String, Instant)>,
    present: std::collections::BTreeSet<String>,
}

async fn watch(client: kube::Client, seen: Arc<Mutex<Seen>>) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
    let control: Api<Deployment> = Api::namespaced(client.clone(), CONTROL);
    let pods: Api<Pod> = Api::all(client.clone());
    loop {
        if let (Ok(apps), Ok(cp)) = (
            deployments.list(&ListParams::default()).await,
            control.list(&ListParams::default()).await,
        ) {
            let restarting = apps
                .items
                .iter()
                .filter(|d| {
                    let template = d.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
                    let annotated = template
                        .and_then(|m| m.annotations.as_ref())
                        .is_some_and(|a| a.contains_key("meshop.dev/restarted-for"));
                    annotated && !apps::rolled_out(d)
                })
                .count();
            let istiods: std::collections::BTreeSet<String> = cp
                .items
                .iter()
                .filter_map(|d| d.metadata.name.clone())
                .filter(|n| n.starts_with("istiod-"))
                .collect();
            let gateway = cp
                .items
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some("istio-ingressgateway"));
            // Listed after the istiods: a pod seen now on a revision whose istiod was already
            // gone a moment ago is a real violation.
            let on_revision: Vec<(String, String)> = pods
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| {
                    let rev = apps::pod_revision(p).or_else(|| {
                        let labels = p.metadata.labels.as_ref()?;
                        (labels.get("app").map(String::as_str) == Some("istio-ingressgateway"))
                            .then(|| labels.get("istio.io/rev").cloned())?
                    })?;
                    Some((p.metadata.name.clone().unwrap_or_default(), rev))
                })
                .collect();
            let mut s = seen.lock().unwrap();
            s.max_restarting = s.max_restarting.max(restarting);
            s.min_gateway_available = gateway_floor(s.min_gateway_available, gateway);
            for (pod, rev) in on_revision {
                if !istiods.contains(&format!("istiod-{rev}")) {
                    s.violations
                        .push(format!("pod {pod} runs {rev}, whose istiod is gone"));
                }
            }
            let gone: Vec<String> = s.present.difference(&istiods).cloned().collect();
            for name in gone {
                s.gone.push((name, Instant::now()));
            }
            s.present = istiods;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The fewest available gateway replicas seen so far, counted from the first poll that saw all
/// [`GATEWAY_REPLICAS`] of them (`None` before). The skipped poll is the outage: the API server
/// leaves `availableReplicas` out when it is zero, so a Deployment without it has none available
/// (`apps::available_replicas`), and so has a gateway Deployment that is missing.
fn gateway_floor(min: Option<i32>, gateway: Option<&Deployment>) -> Option<i32> {
    let available = gateway.map_or(0, apps::available_replicas);
    match min {
        Some(min) => Some(min.min(available)),
        None if available >= GATEWAY_REPLICAS => Some(available),
        None => None,
    }
}

#[test]
fn a_poll_without_available_replicas_is_an_outage() {
    let gateway = |status: serde_json::Value| -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "istio-ingressgateway"},
            "spec": {"selector": {}, "template": {}}, "status": status}))
        .unwrap()
    };
    let full = gateway(json!({"replicas": 2, "availableReplicas": 2}));
    // How the API server reports zero available: the field is left out.
    let none = gateway(json!({"replicas": 2, "unavailableReplicas": 2}));
    // Before the gateway was ever whole, nothing is recorded.
    assert_eq!(gateway_floor(None, Some(&none)), None);
    let min = gateway_floor(None, Some(&full));
    assert_eq!(min, Some(2));
    assert_eq!(gateway_floor(min, Some(&none)), Some(0), "zero available");
    assert_eq!(gateway_floor(min, None), Some(0), "gateway Deployment gone");
    assert_eq!(gateway_floor(min, Some(&gateway(json!({})))), Some(0));
}

fn revision<'a>(mi: &'a MeshInstall, name: &str) -> Option<&'a RevisionStatus> {
    mi.status
        .as_ref()?
        .revisions
        .iter()
        .find(|r| r.name == name)
}

/// One way of the canary: from revision `from` to `version` (revision `to`).
async fn move_to(
    client: &kube::Client,
    seen: &Arc<Mutex<Seen>>,
    from: &str,
    version: &str,
    to: &str,
) {
    let api: Api<MeshInstall> = Api::all(client.clone());
    let control: Api<Deployment> = Api::namespaced(client.clone(), CONTROL);
    seen.lock().unwrap().max_restarting = 0;
    api.patch(
        MESH,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": version } })),
    )
    .await
    .unwrap();

    // Two istiods side by side.
    meshop_testenv::wait_until(
        &format!("istiod-{from} and istiod-{to} side by side"),
        Duration::from_secs(60),
        || async {
            let names: Vec<String> = control
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|d| d.metadata.name)
                .collect();
            ensure!(
                names.contains(&format!("istiod-{from}"))
                    && names.contains(&format!("istiod-{to}")),
                "{names:?}"
            );
            Ok(())
        },
    )
    .await;

    // The tags move once the new revision is ready.
    meshop_testenv::wait_until(
        &format!("tags on {to}"),
        Duration::from_secs(90),
        || async {
            let mi = api.get(MESH).await?;
            let r = revision(&mi, to).context("not listed yet")?;
            ensure!(
                r.ready && r.tags == ["default", "prod"] && r.version == version,
                "{:?}",
                mi.status.map(|s| s.revisions)
            );
            Ok(())
        },
    )
    .await;

    // New pods follow the tags with no relabelling.
    let image = format!("docker.io/istio/proxyv2:{version}");
    for ns in [APPS, TAGGED] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"},
            "spec": {"containers": [{"name": "app", "image": "example.com/probe:1"}]}}))
        .unwrap();
        let created = pods.create(&PostParams::default(), &p).await.unwrap();
        assert_eq!(apps::pod_revision(&created).as_deref(), Some(to), "{ns}");
        assert_eq!(apps::proxy_image(&created), Some(image.clone()), "{ns}");
        // A bare pod is never restarted: delete it, or it would hold its revision forever.
        pods.delete("probe", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }

    // Existing workloads restarted onto the new revision, a bounded number at a time.
    apps::wait_pods_on(client, APPS, to, WORKLOADS.len(), Duration::from_secs(150)).await;
    let max = seen.lock().unwrap().max_restarting;
    assert!(
        (1..=MAX_CONCURRENT).contains(&max),
        "at most {MAX_CONCURRENT} Deployments restart at once; saw {max}"
    );

    // The old revision: unused from some instant, retired after the grace period, not before.
    let unused_since = meshop_testenv::wait_until(
        &format!("revision {from} unused"),
        Duration::from_secs(60),
        || async {
            let mi = api.get(MESH).await?;
            let r = revision(&mi, from).context("retired before unusedSince was seen")?;
            ensure!(r.pods == 0, "{r:?}");
            r.unused_since.clone().context("no unusedSince yet")
        },
    )
    .await;
    let noticed = Instant::now();
    let since_wall = std::time::SystemTime::now();
    let retired_at = meshop_testenv::wait_until(
        &format!("istiod-{from} retired"),
        Duration::from_secs(90),
        || async {
            let s = seen.lock().unwrap();
            s.gone
                .iter()
                .find(|(n, _)| *n == format!("istiod-{from}"))
                .map(|(_, at)| *at)
                .context("not yet")
        },
    )
    .await;
    // Wall-clock instant of the retirement, compared with meshop's unusedSince.
    let retired_wall = since_wall + retired_at.saturating_duration_since(noticed);
    let unused_wall: std::time::SystemTime = unused_since.0.into();
    let after = retired_wall
        .duration_since(unused_wall)
        .unwrap_or(Duration::ZERO);
    assert!(
        after >= GRACE,
        "istiod-{from} retired {after:?} after its last pod left; the grace period is {GRACE:?}"
    );
    meshop_testenv::wait_for_kstatus(&api, MESH, KStatus::Current, Duration::from_secs(60)).await;
    // The status drops the retired revision on meshop's next pass after the Deployment is gone:
    // wait for it, rather than read whichever status is there first.
    let status = meshop_testenv::wait_until(
        &format!("status.revisions is [{to}]"),
        Duration::from_secs(60),
        || async {
            let status = api.get(MESH).await?.status.context("no status")?;
            let names: Vec<&str> = status.revisions.iter().map(|r| r.name.as_str()).collect();
            ensure!(names == [to], "status.revisions {names:?}");
            Ok(status)
        },
    )
    .await;
    assert_eq!(status.version.as_deref(), Some(version));
    assert!(status.migration.is_none(), "{:?}", status.migration);

    // The gateway followed, and never dropped below its floor.
    let gateways: Api<Pod> = Api::namespaced(client.clone(), CONTROL);
    let gw = gateways
        .list(&ListParams::default().labels("app=istio-ingressgateway"))
        .await
        .unwrap();
    for p in gw
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let image = p.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(
            image.as_deref(),
            Some(format!("docker.io/istio/proxyv2:{version}").as_str())
        );
    }
    let s = seen.lock().unwrap();
    assert_eq!(
        s.min_gateway_available,
        Some(GATEWAY_REPLICAS),
        "ingress gateway availability"
    );
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_upgrade_and_rollback() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _logs = meshop_testenv::LogsOnFailure("canary upgrade".into());
    let mut operator = meshop_testenv::start_operator(cp, "meshop-canary", &[]).unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": MESH },
        "spec": {
            "profile": "minimal", "namespace": CONTROL, "version": "1.30.5",
            "updateStrategy": "RevisionBased",
            "components": { "ingressGateway": { "enabled": true, "replicas": GATEWAY_REPLICAS,
                "service": { "type": "ClusterIP" } } },
            "upgrade": {
                "tags": ["prod"],
                "workloads": { "mode": "Rollout", "maxConcurrent": MAX_CONCURRENT },
                "retirementGracePeriodSeconds": GRACE.as_secs()
            }
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    let mi =
        meshop_testenv::wait_for_kstatus(&api, MESH, KStatus::Current, Duration::from_secs(120))
            .await;
    let first = revision(&mi, "1-30-5").expect("revision named after the release");
    assert_eq!(first.tags, ["default", "prod"]);
    assert!(first.ready);

    apps::labelled_namespace(&client, APPS, json!({ "istio-injection": "enabled" })).await;
    apps::labelled_namespace(&client, TAGGED, json!({ "istio.io/rev": "prod" })).await;
    apps::create_deployments(&client, APPS, &WORKLOADS)
        .await
        .unwrap();
    apps::wait_pods_on(
        &client,
        APPS,
        "1-30-5",
        WORKLOADS.len(),
        Duration::from_secs(30),
    )
    .await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = tokio::spawn(watch(client.clone(), seen.clone()));

    move_to(&client, &seen, "1-30-5", "1.31.1", "1-31-1").await;
    let events = |reason: &'static str| {
        let client = client.clone();
        async move {
            meshop_testenv::event_notes(&client, MESH, reason)
                .await
                .unwrap()
        }
    };
    assert!(
        events("TagsMoved")
            .await
            .iter()
            .any(|n| n.contains("from revision 1-30-5 to 1-31-1"))
    );
    // One event per restart.
    let restarted = events("WorkloadRestarted").await;
    for w in WORKLOADS {
        assert!(
            restarted.iter().any(|n| n.contains(&format!(
                "restarted Deployment/apps/{w} onto revision 1-31-1"
            ))),
            "{restarted:?}"
        );
    }
    assert!(
        events("RevisionRetired")
            .await
            .iter()
            .any(|n| n.contains("1-30-5"))
    );

    // Rollback: the same way back, and the newer revision is retired the same way.
    move_to(&client, &seen, "1-31-1", "1.30.5", "1-30-5").await;
    assert!(
        events("TagsMoved")
            .await
            .iter()
            .any(|n| n.contains("from revision 1-31-1 to 1-30-5"))
    );
    assert!(
        events("RevisionRetired")
            .await
            .iter()
            .any(|n| n.contains("1-31-1"))
    );
    watcher.abort();
    operator
        .process
        .check_running()
        .expect("meshop stayed up the whole test");
}
