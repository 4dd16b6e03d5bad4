//! Which pods keep an older revision alive, and what knowing it costs the API server.
//!
//! Each test has its own control plane (controllers mode, the API server's audit log on) and runs
//! `meshop run` as the operator's ServiceAccount with deploy/'s RBAC, so every request the
//! operator makes is in the audit log under its own name:
//!
//! - only pods that really run a revision's proxy keep it: a pod that only claims the old
//!   revision (its label, a hand-written injector mark, a container named istio-proxy that is
//!   not the release's proxy) is not counted and does not stop its retirement; a pod injected
//!   onto it is counted and does;
//! - the operator watches the pods it needs by label and lists no pod on a timer while pods stay
//!   on an older revision (Manual mode): over a quiet window it makes no pod request at all.
//!
//! `manual_migration_requests_per_minute_at_scale` (ignored; `MESHOP_SCALE_PODS`, default 10,000)
//! measures the operator's requests per minute during a Manual migration; docs/performance.md has
//! the figures, before and after.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, RevisionStatus};
use meshop::controller::status::KStatus;
use meshop_testenv::audit::{self, Event};
use meshop_testenv::controlplane::{ControlPlane, Options};
use meshop_testenv::{LogsOnFailure, Operator, apps};
use serde_json::json;

const OPERATOR_NS: &str = "meshop-system";
const READY: Duration = Duration::from_secs(180);

/// A control plane with the audit log on, deploy/ applied, `{name}-system` granted, and `meshop run` as its ServiceAccount.
struct Cluster {
    cp: ControlPlane,
    client: Client,
    operator: Operator,
    user: String,
}

async fn start(name: &str) -> Cluster {
    let dir = meshop_testenv::run_dir().unwrap().join(name);
    let cp = ControlPlane::start(Options {
        controllers: true,
        audit: true,
        dir: Some(dir),
        ..Options::default()
    })
    .unwrap();
    let client = cp.client().await.unwrap();
    cp.apply_deploy().unwrap();
    // The MeshInstall's control-plane namespace, granted as an installer would.
    cp.grant_control_plane(&format!("{name}-system")).unwrap();
    // The operator runs here as a local process; deploy/'s Deployment would only add kwok pods.
    Api::<Deployment>::namespaced(client.clone(), OPERATOR_NS)
        .patch(
            "meshop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), OPERATOR_NS);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(Vec::new()),
            expiration_seconds: Some(4 * 3600),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request("meshop", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap();
    let kubeconfig: PathBuf = cp.dir.join("operator.kubeconfig");
    meshop_testenv::istio::write_token_kubeconfig(&cp, &kubeconfig, "meshop", &token).unwrap();
    let operator = meshop_testenv::start_operator_as(
        &cp,
        "meshop-proxies",
        &kubeconfig,
        &[format!("--lease-namespace={OPERATOR_NS}")],
    )
    .unwrap();
    Cluster {
        cp,
        client,
        operator,
        user: audit::service_account_user(OPERATOR_NS, "meshop"),
    }
}

impl Cluster {
    /// The operator's requests in the audit log, in order.
    fn requests(&self) -> Vec<Event> {
        audit::read(&self.cp.audit_log())
            .unwrap()
            .into_iter()
            .filter(|e| e.user == self.user)
            .collect()
    }
}

impl Cluster {
    /// Waits until the operator makes no request but its Lease renewals for 12 s: longer than
    /// the watch's trigger gap (5 s) and a pass.
    async fn wait_idle(&self) {
        let busy = || {
            self.requests()
                .iter()
                .filter(|e| e.access.resource != "leases")
                .count()
        };
        meshop_testenv::wait_until(
            "the operator idle (no request but its Lease) for 12 s",
            Duration::from_secs(120),
            || async {
                let before = busy();
                tokio::time::sleep(Duration::from_secs(12)).await;
                let after = busy();
                ensure!(after == before, "{} request(s) in 12 s", after - before);
                Ok(())
            },
        )
        .await;
    }
}

fn mesh(name: &str, namespace: &str) -> MeshInstall {
    serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": {
            "profile": "minimal", "namespace": namespace, "version": "1.30.5",
            "updateStrategy": "RevisionBased",
            "upgrade": { "workloads": { "mode": "Manual" }, "retirementGracePeriodSeconds": 5 }
        }
    }))
    .unwrap()
}

fn revision<'a>(mi: &'a MeshInstall, name: &str) -> Option<&'a RevisionStatus> {
    mi.status
        .as_ref()?
        .revisions
        .iter()
        .find(|r| r.name == name)
}

/// Moves MeshInstall `name` to 1.31.1 and waits until the tags point at 1-31-1.
async fn upgrade(api: &Api<MeshInstall>, name: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": "1.31.1" } })),
    )
    .await
    .unwrap();
    meshop_testenv::wait_until("the tags on 1-31-1", READY, || async {
        let mi = api.get(name).await?;
        let new = revision(&mi, "1-31-1").context("not listed yet")?;
        ensure!(
            new.ready && new.tags == ["default"] && revision(&mi, "1-30-5").is_some(),
            "{:?}",
            mi.status.map(|s| s.revisions)
        );
        Ok(())
    })
    .await;
}

/// Waits until status says `count` pods run revision `name`.
async fn wait_count(api: &Api<MeshInstall>, mesh: &str, name: &str, count: i32) -> MeshInstall {
    meshop_testenv::wait_until(
        &format!("status: {count} pod(s) on revision {name}"),
        Duration::from_secs(90),
        || async {
            let mi = api.get(mesh).await?;
            let r = revision(&mi, name).context("not listed")?;
            ensure!(r.pods == count, "{r:?}");
            Ok(mi)
        },
    )
    .await
}

/// The operator's pod lists or watches that select no pods by label (every pod in the cluster).
fn unselected_pod_reads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.access.group.is_empty() && e.access.resource == "pods")
        .filter(|e| e.verb == "list" || e.verb == "watch")
        .filter(|e| !e.uri.contains("labelSelector="))
        .map(|e| format!("{} {}", e.verb, e.uri))
        .collect()
}

/// Requests by verb and resource.
fn tally(events: &[Event]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        let what = if e.access.resource.is_empty() {
            format!("{} {}", e.verb, e.uri)
        } else {
            format!("{} {}", e.verb, e.access.resource)
        };
        *out.entry(what).or_insert(0) += 1;
    }
    out
}

fn seconds(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// A pod that claims revision 1-30-5 of control plane `cp_ns` by what anyone can write.
fn claim(name: &str, cp_ns: &str) -> Pod {
    let mark = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"1-30-5"}"#;
    let app = json!({"name": "app", "image": "example.com/app:1"});
    let labels = json!({"service.istio.io/canonical-revision": "latest", "security.istio.io/tlsMode": "istio"});
    let v = match name {
        // The revision label, opted out of injection so nothing injects it.
        "by-label" => json!({"metadata": {"labels": {"istio.io/rev": "1-30-5",
            "sidecar.istio.io/inject": "false", "service.istio.io/canonical-revision": "latest"}},
            "spec": {"containers": [app]}}),
        // The injector's mark and annotation, written by hand, no proxy.
        "by-mark" => json!({"metadata": {"labels": labels,
            "annotations": {"sidecar.istio.io/status": mark, "istio.io/rev": "1-30-5"}},
            "spec": {"containers": [app]}}),
        // The mark, and a container named istio-proxy that is not the release's proxy.
        _ => json!({"metadata": {"labels": labels,
            "annotations": {"sidecar.istio.io/status": mark, "istio.io/rev": "1-30-5"}},
            "spec": {"containers": [app, {"name": "istio-proxy", "image": "busybox:1.36",
                "env": [{"name": "CA_ADDR", "value": format!("istiod-1-30-5.{cp_ns}.svc:15012")}]}]}}),
    };
    let mut pod: Pod = serde_json::from_value(v).unwrap();
    pod.metadata.name = Some(name.into());
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_real_proxies_keep_a_revision_and_pods_are_watched_not_listed() {
    let _logs = LogsOnFailure("proxies: real proxies, watched".into());
    let cluster = start("usage").await;
    let client = cluster.client.clone();
    let api: Api<MeshInstall> = Api::all(client.clone());
    api.create(&PostParams::default(), &mesh("usage", "usage-system"))
        .await
        .unwrap();
    meshop_testenv::wait_for_kstatus(&api, "usage", KStatus::Current, READY).await;

    apps::labelled_namespace(&client, "apps", json!({ "istio-injection": "enabled" })).await;
    apps::labelled_namespace(&client, "pinned", json!({ "istio.io/rev": "1-30-5" })).await;
    apps::labelled_namespace(&client, "claims", json!({})).await;
    apps::create_deployments(&client, "apps", &["a", "b", "c"])
        .await
        .unwrap();
    apps::create_deployments(&client, "pinned", &["keeper"])
        .await
        .unwrap();
    apps::wait_pods_on(&client, "apps", "1-30-5", 3, Duration::from_secs(30)).await;
    apps::wait_pods_on(&client, "pinned", "1-30-5", 1, Duration::from_secs(30)).await;
    let claims: Api<Pod> = Api::namespaced(client.clone(), "claims");
    for name in ["by-label", "by-mark", "fake-proxy"] {
        let created = claims
            .create(&PostParams::default(), &claim(name, "usage-system"))
            .await
            .unwrap();
        assert_eq!(
            apps::proxy_image(&created)
                .as_deref()
                .filter(|i| i.contains("proxyv2")),
            None
        );
    }

    upgrade(&api, "usage").await;
    // 3 in apps and the pinned keeper; the three claims count for nothing.
    let mi = wait_count(&api, "usage", "1-30-5", 4).await;
    let old = revision(&mi, "1-30-5").unwrap();
    assert_eq!(old.workloads, 4, "{old:?}");
    assert!(old.unused_since.is_none(), "{old:?}");

    // The people restart their workloads (Manual mode); the keeper stays pinned to 1-30-5.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
    for name in ["a", "b", "c"] {
        deployments
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                    "kubectl.kubernetes.io/restartedAt": "2026-12-07T00:00:00Z"}}}}})),
            )
            .await
            .unwrap();
    }
    apps::wait_pods_on(&client, "apps", "1-31-1", 3, Duration::from_secs(90)).await;
    wait_count(&api, "usage", "1-31-1", 3).await;
    let mi = wait_count(&api, "usage", "1-30-5", 1).await;
    assert!(
        revision(&mi, "1-30-5").unwrap().unused_since.is_none(),
        "the keeper uses it"
    );

    // A long Manual migration: nothing moves. Once the passes the restarts caused are done, the
    // operator goes idle (the old one listed every pod every 10 s and never did), and over a
    // quiet window it makes no pod request at all (it watches them) and runs no pass.
    cluster.wait_idle().await;
    let window = seconds("MESHOP_QUIET_WINDOW_SECS", 35);
    let before = cluster.requests().len();
    tokio::time::sleep(window).await;
    let all = cluster.requests();
    let quiet = &all[before..];
    let pods_in_window: Vec<String> = quiet
        .iter()
        .filter(|e| e.access.group.is_empty() && e.access.resource == "pods")
        .map(|e| format!("{} {}", e.verb, e.uri))
        .collect();
    // Only a migration step lists StatefulSets (meshop manages none): one list, one pass.
    let passes = quiet
        .iter()
        .filter(|e| e.verb == "list" && e.access.resource == "statefulsets")
        .count();
    eprintln!(
        "operator requests over a quiet window of {window:?} (1 proxy left on 1-30-5): {:?}",
        tally(quiet)
    );
    assert!(
        unselected_pod_reads(&all).is_empty(),
        "the operator read every pod in the cluster: {:?}",
        unselected_pod_reads(&all)
    );
    assert!(
        pods_in_window.is_empty(),
        "pod requests while nothing moved: {pods_in_window:?}"
    );
    assert!(
        passes == 0,
        "{passes} passes while nothing moved: {:?}",
        tally(quiet)
    );
    // The watch's list selects the pods the injector labels (the watch itself is logged when it
    // ends, minutes later).
    assert!(
        all.iter().any(|e| e.verb == "list"
            && e.access.resource == "pods"
            && e.uri
                .contains("labelSelector=service.istio.io%2Fcanonical-revision")),
        "no labelled pod list: {:?}",
        tally(&all)
    );

    // The keeper goes: 1-30-5 retires after its grace period, whatever the claims say.
    Api::<Deployment>::namespaced(client.clone(), "pinned")
        .delete("keeper", &DeleteParams::default())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "revision 1-30-5 retired",
        Duration::from_secs(120),
        || async {
            let mi = api.get("usage").await?;
            let names: Vec<String> = mi
                .status
                .as_ref()
                .map(|s| s.revisions.iter().map(|r| r.name.clone()).collect())
                .unwrap_or_default();
            let istiods: Vec<String> =
                Api::<Deployment>::namespaced(client.clone(), "usage-system")
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|d| d.metadata.name)
                    .filter(|n| n.starts_with("istiod"))
                    .collect();
            ensure!(
                names == ["1-31-1"] && istiods == ["istiod-1-31-1"],
                "status.revisions {names:?}, istiods {istiods:?}"
            );
            Ok(())
        },
    )
    .await;
    assert_eq!(
        claims
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3,
        "the claims are still there"
    );
    let mut operator = cluster.operator;
    operator.process.check_running().expect("meshop stayed up");
}

/// The operator's requests per minute during a long Manual migration with `MESHOP_SCALE_PODS`
/// (default 10,000) bare injected pods on the old revision, over `MESHOP_SCALE_WINDOW_SECS`
/// (default 120). Run with `MESHOP_BIN=<an older meshop>` for the figure before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "minutes: creates 10,000 pods; a measurement for docs/performance.md"]
async fn manual_migration_requests_per_minute_at_scale() {
    let count: usize = std::env::var("MESHOP_SCALE_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let window = seconds("MESHOP_SCALE_WINDOW_SECS", 120);
    let _logs = LogsOnFailure("proxies at scale".into());
    let cluster = start("scale").await;
    let client = cluster.client.clone();
    let api: Api<MeshInstall> = Api::all(client.clone());
    api.create(&PostParams::default(), &mesh("scale", "scale-system"))
        .await
        .unwrap();
    meshop_testenv::wait_for_kstatus(&api, "scale", KStatus::Current, READY).await;
    apps::labelled_namespace(&client, "bulk", json!({ "istio-injection": "enabled" })).await;
    // Bare pods through the real webhook, left unscheduled (no scheduler by that name): no
    // controller touches them again, as in a cluster whose pods simply run.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bulk");
    let started = std::time::Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |i| {
            let pods = pods.clone();
            async move {
                let pod: Pod =
                    serde_json::from_value(json!({"metadata": {"name": format!("p{i}")},
                    "spec": {"schedulerName": "none",
                        "containers": [{"name": "app", "image": "example.com/app:1"}]}}))
                    .unwrap();
                let created = pods.create(&PostParams::default(), &pod).await.unwrap();
                assert!(apps::pod_revision(&created).is_some(), "p{i} not injected");
            }
        })
        .await;
    eprintln!("created {count} injected pods in {:?}", started.elapsed());
    upgrade(&api, "scale").await;
    wait_count(&api, "scale", "1-30-5", count as i32).await;
    // Let the passes the upgrade itself caused finish.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = cluster.requests().len();
    tokio::time::sleep(window).await;
    let all = cluster.requests();
    let quiet = &all[before..];
    let per_minute = quiet.len() as f64 * 60.0 / window.as_secs_f64();
    eprintln!(
        "MEASURED: {count} pods on the old revision, Manual mode, window {window:?}: {} operator requests ({per_minute:.1}/min): {:?}",
        quiet.len(),
        tally(quiet)
    );
    let leases = quiet
        .iter()
        .filter(|e| e.access.resource == "leases")
        .count();
    eprintln!(
        "MEASURED: without the leader Lease renewals: {:.1}/min",
        (quiet.len() - leases) as f64 * 60.0 / window.as_secs_f64()
    );
    assert!(
        unselected_pod_reads(&all).is_empty(),
        "{} reads of every pod",
        unselected_pod_reads(&all).len()
    );
}
