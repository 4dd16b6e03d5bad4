//! Ambient mode's lifecycle with the real operator (`meshop run`) in controllers mode: the CNI
//! agent's and ztunnel's DaemonSets really roll out on the three kwok nodes, istiod's Deployment
//! really rolls. One test in its own control plane, because a cluster runs one ambient mesh
//! (a second MeshInstall asking for ambient mode is Stalled AmbientConflict, checked here too).
//!
//! - Switching demo -> ambient -> demo keeps istiod (same uid) and prunes exactly the ambient
//!   objects: after the round trip the mesh's objects are the ones demo had before it.
//! - An in-place upgrade 1.30 -> 1.31 of an ambient mesh rolls istiod, then the CNI agent, then
//!   ztunnel, each only once the one before it has rolled out: checked on every poll.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, condition};
use meshop::controller::status::KStatus;
use meshop_testenv::LogsOnFailure;
use serde_json::json;

const READY: Duration = Duration::from_secs(240);
const NS: &str = "amb-life";
const NAME: &str = "amb-life";

/// Every object meshop labels as this MeshInstall's (`app.kubernetes.io/instance`), plus the
/// shared ones it rendered for it, as `Kind/namespace/name`, over the kinds meshop manages.
async fn objects_of(client: &Client, instance: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kind in meshop::kinds::MANAGED_KINDS {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        let list = api
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/managed-by=meshop,app.kubernetes.io/instance={instance}"
            )))
            .await
            .unwrap_or_else(|e| panic!("listing {}: {e}", kind.kind));
        for o in list.items {
            if o.metadata.deletion_timestamp.is_some() {
                continue;
            }
            out.insert(format!(
                "{}/{}/{}",
                kind.kind,
                o.metadata.namespace.unwrap_or_default(),
                o.metadata.name.unwrap_or_default()
            ));
        }
    }
    out
}

async fn set_spec(api: &Api<MeshInstall>, spec: serde_json::Value) {
    api.patch(
        NAME,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await
    .unwrap();
}

async fn istiod_uid(client: &Client) -> String {
    Api::<Deployment>::namespaced(client.clone(), NS)
        .get("istiod")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

/// A workload's Istio release (from its first container's image tag) and whether the rollout
/// of its current template is complete.
#[derive(Clone, Debug, PartialEq)]
struct Rollout {
    version: String,
    rolled_out: bool,
}

fn tag(image: Option<&str>) -> String {
    image
        .and_then(|i| i.rsplit_once(':'))
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

async fn deployment_rollout(client: &Client, name: &str) -> Rollout {
    let d = Api::<Deployment>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    let status = d.status.unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let version = tag(spec.template.spec.unwrap().containers[0].image.as_deref());
    let rolled_out = status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= want
        && status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
        && status.available_replicas.unwrap_or(0) >= want;
    Rollout {
        version,
        rolled_out,
    }
}

async fn daemon_set_rollout(client: &Client, name: &str) -> (Rollout, i32) {
    let d = Api::<DaemonSet>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    let version = tag(d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .as_deref());
    let s = d.status.unwrap_or_default();
    let rolled_out = s.observed_generation >= d.metadata.generation
        && s.desired_number_scheduled > 0
        && s.updated_number_scheduled.unwrap_or(0) >= s.desired_number_scheduled
        && s.number_ready >= s.desired_number_scheduled;
    // Nodes without a ready pod at this moment.
    let unavailable = s.number_unavailable.unwrap_or(0);
    (
        Rollout {
            version,
            rolled_out,
        },
        unavailable,
    )
}

/// Runs `meshop ARGS --kubeconfig <cp>`; returns (exit success, stdout).
fn meshop(cp: &meshop_testenv::ControlPlane, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(meshop_testenv::meshop_binary().expect("meshop binary"))
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .output()
        .expect("run meshop");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn namespace(client: &Client, name: &str, labels: serde_json::Value) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns =
        serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

async fn pod(client: &Client, ns: &str, name: &str) -> k8s_openapi::api::core::v1::Pod {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let pod = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap()
}

/// Item 4 and 6 of the issue through the real binary and webhook: an ambient-only namespace's
/// pod gets no sidecar (Istio would not inject it), a namespace labelled for both gets one and
/// `check` names it; the node agents cover the three kwok nodes; no CNI agent runs under kwok,
/// so `check` truthfully reports the enrolled pod as not captured, and `status` shows each
/// namespace's data plane mode.
async fn check_and_status_know_ambient(cp: &meshop_testenv::ControlPlane, client: &Client) {
    namespace(
        client,
        "amb-apps",
        json!({ "istio.io/dataplane-mode": "ambient" }),
    )
    .await;
    namespace(
        client,
        "amb-both",
        json!({ "istio.io/dataplane-mode": "ambient", "istio-injection": "enabled" }),
    )
    .await;
    let plain = pod(client, "amb-apps", "plain").await;
    let has_proxy = |p: &k8s_openapi::api::core::v1::Pod| {
        let spec = p.spec.as_ref().unwrap();
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == "istio-proxy")
    };
    assert!(!has_proxy(&plain), "an ambient-only pod got a sidecar");
    let both = pod(client, "amb-both", "both").await;
    assert!(
        has_proxy(&both),
        "a namespace asking for injection got none"
    );

    let (_, out) = meshop(cp, &["check", "--post", "-o", "json"]);
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let find = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
            .clone()
    };
    let agents = find("ambient-node-agents");
    assert_eq!(agents["severity"], "pass", "{agents}");
    assert!(
        agents["message"]
            .as_str()
            .unwrap()
            .contains("all 3 linux node(s)"),
        "{agents}"
    );
    let enrollment = find("ambient-enrollment");
    assert_eq!(enrollment["severity"], "warn", "{enrollment}");
    let message = enrollment["message"].as_str().unwrap();
    assert!(
        message.contains("amb-both/both") && message.contains("amb-apps/plain"),
        "{message}"
    );
    let (ok, out) = meshop(cp, &["status"]);
    assert!(ok, "{out}");
    assert!(out.contains("ambient (0 of 1 pods captured)"), "{out}");
    assert!(
        out.contains("sidecar and ambient (1 of 1 pods with a sidecar)"),
        "{out}"
    );
    for ns in ["amb-apps", "amb-both"] {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        api.delete(ns, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_switches_and_upgrades_in_istios_order() {
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let _logs = LogsOnFailure(format!("MeshInstall {NAME}"));
    let client = cp.client().await.unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": NAME },
        "spec": { "profile": "demo", "namespace": NS, "version": "1.30" }
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, NAME, KStatus::Current, READY).await;
    let demo_objects = objects_of(&client, NAME).await;
    let uid = istiod_uid(&client).await;

    // demo -> ambient: the gateways and addons go, the node agents come, istiod stays.
    set_spec(&api, json!({ "profile": "ambient" })).await;
    let mi = meshop_testenv::wait_for_kstatus(&api, NAME, KStatus::Current, READY).await;
    let ambient_objects = objects_of(&client, NAME).await;
    assert_eq!(
        istiod_uid(&client).await,
        uid,
        "istiod recreated on ambient"
    );
    for want in [
        "DaemonSet/amb-life/ztunnel",
        "DaemonSet/amb-life/istio-cni-node",
        "ConfigMap/amb-life/istio-cni-config",
        "ServiceAccount/amb-life/ztunnel",
    ] {
        assert!(
            ambient_objects.contains(want),
            "{want} missing: {ambient_objects:#?}"
        );
    }
    assert!(
        !ambient_objects.contains("Deployment/amb-life/istio-ingressgateway"),
        "the ambient profile has no ingress gateway"
    );
    // The node agents' status counts nodes.
    let status = mi.status.unwrap();
    let ztunnel = status
        .components
        .iter()
        .find(|c| c.name == "ztunnel")
        .expect("ztunnel in status");
    assert_eq!(
        (
            ztunnel.desired_replicas,
            ztunnel.ready_replicas,
            ztunnel.updated_replicas
        ),
        (Some(3), Some(3), Some(3)),
        "{ztunnel:?}"
    );

    check_and_status_know_ambient(cp, &client).await;

    // A second ambient mesh in the cluster is refused, and touches nothing.
    let second: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": "amb-second" },
        "spec": { "profile": "ambient", "namespace": "amb-second" }
    }))
    .unwrap();
    api.create(&PostParams::default(), &second).await.unwrap();
    let stalled = meshop_testenv::wait_for_kstatus(&api, "amb-second", KStatus::Failed, READY)
        .await
        .status
        .unwrap();
    let c = stalled.condition(condition::STALLED).unwrap();
    assert_eq!(c.reason, "AmbientConflict", "{c:?}");
    assert!(c.message.contains(NAME), "{}", c.message);
    assert!(objects_of(&client, "amb-second").await.is_empty());
    api.delete("amb-second", &DeleteParams::default())
        .await
        .unwrap();

    // ambient -> demo: exactly demo's objects again.
    set_spec(&api, json!({ "profile": "demo" })).await;
    meshop_testenv::wait_for_kstatus(&api, NAME, KStatus::Current, READY).await;
    meshop_testenv::wait_until("ambient objects pruned", READY, || async {
        let now = objects_of(&client, NAME).await;
        if now == demo_objects {
            Ok(())
        } else {
            anyhow::bail!(
                "left: {:?}; missing: {:?}",
                now.difference(&demo_objects).collect::<Vec<_>>(),
                demo_objects.difference(&now).collect::<Vec<_>>()
            )
        }
    })
    .await;
    assert_eq!(istiod_uid(&client).await, uid, "istiod recreated on demo");

    // Back to ambient on 1.30, then upgrade in place to 1.31.
    set_spec(&api, json!({ "profile": "ambient" })).await;
    meshop_testenv::wait_for_kstatus(&api, NAME, KStatus::Current, READY).await;
    let old = deployment_rollout(&client, "istiod").await.version;
    assert!(old.starts_with("1.30."), "{old}");
    set_spec(&api, json!({ "version": "1.31" })).await;
    let deadline = Instant::now() + READY;
    let mut seen = Vec::new();
    loop {
        let istiod = deployment_rollout(&client, "istiod").await;
        let (cni, _) = daemon_set_rollout(&client, "istio-cni-node").await;
        let (ztunnel, ztunnel_unavailable) = daemon_set_rollout(&client, "ztunnel").await;
        let new = |r: &Rollout| !r.version.starts_with("1.30.");
        // Istio's order: the CNI agent moves only once istiod has rolled out on the new
        // release, ztunnel only once the CNI agent has.
        if new(&cni) {
            assert!(
                new(&istiod) && istiod.rolled_out,
                "the CNI agent moved before istiod rolled out: istiod {istiod:?}, cni {cni:?}"
            );
        }
        if new(&ztunnel) {
            assert!(
                new(&cni) && cni.rolled_out,
                "ztunnel moved before the CNI agent rolled out: cni {cni:?}, ztunnel {ztunnel:?}"
            );
        }
        // ztunnel surges: a node is never without a ready one beyond the one being replaced.
        assert!(
            ztunnel_unavailable <= 1,
            "{ztunnel_unavailable} nodes without a ready ztunnel"
        );
        let step = (
            new(&istiod),
            istiod.rolled_out,
            new(&cni),
            cni.rolled_out,
            new(&ztunnel),
            ztunnel.rolled_out,
        );
        if seen.last() != Some(&step) {
            seen.push(step);
        }
        if new(&ztunnel) && ztunnel.rolled_out {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upgrade did not finish; steps seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The three really moved one after another (not all in one poll).
    assert!(seen.len() >= 3, "steps seen: {seen:?}");
    let mi = meshop_testenv::wait_for_kstatus(&api, NAME, KStatus::Current, READY).await;
    assert_eq!(
        mi.status
            .unwrap()
            .version
            .as_deref()
            .map(|v| v.starts_with("1.31.")),
        Some(true)
    );
    api.delete(NAME, &DeleteParams::default()).await.unwrap();
}
