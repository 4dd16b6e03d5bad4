//! Overlays (`components.<c>.overlays`) against the real API server, with kube-controller-manager
//! rolling Deployments out under kwok and the API server's audit log on. One `meshop run` process
//! of this binary's own acts as its own user (impersonation), so the log tells its requests apart.
//!
//! - `overlays_converge_and_stay_converged`: an overlay that adds a sidecar container to istiod
//!   and sets a field meshop sets too (an env value of istiod's container), and a JSON patch on
//!   `spec.replicas` (which meshop sets), reach Ready; then 10 more reconcile passes (each
//!   triggered by touching the MeshInstall, each seen in the audit log as the operator's apply of
//!   istiod's Deployment) change nothing: every object the MeshInstall owns keeps its
//!   resourceVersion, and the log holds no write of the operator but its applies (no status
//!   write, no event, no create or delete). A patch added later that does not apply stalls the
//!   MeshInstall naming it, and leaves every object as it was.
//! - `a_patch_that_does_not_apply_is_stalled_naming_it`: a fresh MeshInstall whose overlay does
//!   not apply is Stalled (reason InvalidOverlay) with a message naming the component, the object
//!   and the patch, and nothing is created.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, condition};
use meshop::controller::status::KStatus;
use meshop_testenv::audit::{self, Event};
use meshop_testenv::{LogsOnFailure, Operator};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(180);
/// The user this binary's operator acts as.
const OPERATOR_USER: &str = "meshop-overlays";

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let cp = meshop_testenv::shared_with_audit();
        let kubeconfig = cp
            .impersonating(OPERATOR_USER, &["system:masters"])
            .unwrap();
        meshop_testenv::start_operator_as(cp, "meshop-overlays", &kubeconfig, &[])
            .unwrap_or_else(|e| panic!("could not start the operator: {e:#}"))
    })
}

async fn create(client: &Client, name: &str, namespace: &str, spec: Value) -> Api<MeshInstall> {
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mut spec = spec;
    spec["namespace"] = json!(namespace);
    // As a user sends it (kubectl apply): the API server, not meshop's types, reads it first.
    let resource = kube::api::ApiResource::erase::<MeshInstall>(&());
    let raw: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &resource);
    let mi: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name }, "spec": spec
    }))
    .unwrap();
    raw.create(&PostParams::default(), &mi).await.unwrap();
    api
}

/// Every object the MeshInstall `uid` owns, by key, with its resourceVersion (found through
/// discovery, not through meshop's own list of kinds).
async fn owned_versions(client: &Client, uid: &str) -> BTreeMap<String, String> {
    meshop_testenv::inventory::objects(client, |o| o.owned_by(uid))
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key(), o.resource_version.clone()))
        .collect()
}

/// The operator's requests in the audit log so far.
fn operator_events(tail: &mut audit::Tail, seen: &mut Vec<Event>) -> Vec<Event> {
    seen.extend(
        tail.next_events()
            .unwrap()
            .into_iter()
            .filter(|e| e.user == OPERATOR_USER),
    );
    seen.clone()
}

/// The operator's applies of istiod's Deployment in `namespace` among `events`.
fn istiod_applies(events: &[Event], namespace: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e.verb == "patch"
                && e.access.resource == "deployments"
                && e.access.namespace == namespace
                && e.access.name == "istiod"
        })
        .count()
}

/// One reconcile pass: touches the MeshInstall (an annotation; any change to it starts a pass)
/// and waits until the audit log shows the operator's apply of istiod beyond `base`. Returns
/// the count of those applies.
async fn pass(
    api: &Api<MeshInstall>,
    name: &str,
    namespace: &str,
    i: usize,
    base: usize,
    tail: &mut audit::Tail,
    seen: &mut Vec<Event>,
) -> usize {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"test.meshop.dev/touch": i.to_string()}}}),
        ),
    )
    .await
    .unwrap();
    meshop_testenv::wait_until(
        &format!("the operator's pass {i} applies istiod"),
        Duration::from_secs(60),
        || {
            let applies = istiod_applies(&operator_events(tail, seen), namespace);
            async move {
                anyhow::ensure!(applies > base, "{applies} applies, want > {base}");
                Ok(applies)
            }
        },
    )
    .await
}

/// The overlays of the converging mesh: a sidecar for istiod and an env value meshop sets too
/// (strategic merge), and the replica count meshop sets (JSON patch).
fn overlays() -> Value {
    json!([
        {"kind": "Deployment", "name": "istiod", "strategicMerge": {"spec": {"template": {"spec": {"containers": [
            {"name": "discovery", "env": [{"name": "PILOT_ENABLE_ANALYSIS", "value": "true"}]},
            {"name": "log-shipper", "image": "registry.example/log-shipper:1.0", "args": ["--from=/var/log"]}
        ]}}}}},
        {"kind": "Deployment", "name": "istiod", "jsonPatch": [
            {"op": "replace", "path": "/spec/replicas", "value": 2}
        ]}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlays_converge_and_stay_converged() {
    let cp = meshop_testenv::shared_with_audit();
    operator();
    let _logs = LogsOnFailure("overlays converge".into());
    let client = cp.client().await.unwrap();
    let (name, namespace) = ("overlays", "ov-converge");
    let mut tail = audit::Tail::new(&cp.audit_log());
    let mut seen = Vec::new();
    let api = create(
        &client,
        name,
        namespace,
        json!({"profile": "minimal", "components": {"istiod": {"overlays": overlays()}}}),
    )
    .await;
    let mi = meshop_testenv::wait_for_kstatus(&api, name, KStatus::Current, READY).await;
    let uid = mi.metadata.uid.clone().unwrap();

    // The live Deployment is the patched one.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let istiod = deployments.get("istiod").await.unwrap();
    let spec = istiod.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2), "the JSON patch's replica count");
    let pod = spec.template.spec.unwrap();
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"discovery") && names.contains(&"log-shipper"),
        "{names:?}"
    );
    let discovery = pod
        .containers
        .iter()
        .find(|c| c.name == "discovery")
        .unwrap();
    let analysis = discovery
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PILOT_ENABLE_ANALYSIS")
        .unwrap();
    assert_eq!(analysis.value.as_deref(), Some("true"));
    assert_eq!(
        istiod.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2),
        "both patched replicas ready"
    );

    // One more pass (the first after Ready), then 10 passes, each triggered by touching the
    // MeshInstall and each seen in the audit log as the operator's apply of istiod.
    let before_first = istiod_applies(&operator_events(&mut tail, &mut seen), namespace);
    let mut applies = pass(&api, name, namespace, 0, before_first, &mut tail, &mut seen).await;
    let settled = owned_versions(&client, &uid).await;
    assert!(
        settled.contains_key(&format!("Deployment/{namespace}/istiod")),
        "{settled:?}"
    );
    let window_start = seen.len();
    let first_of_ten = applies;
    for i in 1..=10 {
        applies = pass(&api, name, namespace, i, applies, &mut tail, &mut seen).await;
    }
    let ten = applies - first_of_ten;
    // The 11th pass starts only once the 10th has finished (one pass of a MeshInstall at a
    // time): when it applies istiod, everything the 10 passes did is in the cluster.
    pass(&api, name, namespace, 11, applies, &mut tail, &mut seen).await;
    let after = api.get(name).await.unwrap();
    assert_eq!(
        after.metadata.generation, mi.metadata.generation,
        "touching annotations does not change the generation"
    );
    let now = owned_versions(&client, &uid).await;
    let changed: Vec<&String> = settled
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        changed.is_empty(),
        "10 passes over overlays changed {changed:?} (resourceVersions before {settled:?}, after {now:?})"
    );
    let events = operator_events(&mut tail, &mut seen);
    let window = &events[window_start..];
    assert!(
        ten >= 10,
        "the audit log shows {ten} applies of istiod in 10 passes"
    );
    let other_writes: Vec<String> = window
        .iter()
        .filter(|e| e.is_write())
        .filter(|e| {
            // Server-side applies of planned objects: no-ops, as the resourceVersions show.
            !(e.verb == "patch"
                && !e.access.resource.contains('/')
                && e.uri.contains("fieldManager=meshop"))
        })
        // The leader Lease is renewed on its own clock; an access review asks, it changes
        // nothing; the other test's MeshInstall is its own.
        .filter(|e| e.access.resource != "leases")
        .filter(|e| e.access.resource != "selfsubjectaccessreviews")
        .filter(|e| !e.access.name.starts_with("overlay-stalled"))
        .map(|e| format!("{} {}", e.access, e.uri))
        .collect();
    assert!(
        other_writes.is_empty(),
        "writes other than no-op applies during the 10 passes: {other_writes:#?}"
    );
    eprintln!(
        "10 passes: {} requests of the operator, {} applies of istiod, {} objects, 0 changed",
        window.len(),
        ten,
        now.len()
    );

    // A patch that does not apply, added to the running mesh: Stalled naming it, nothing changed.
    let mut broken = overlays();
    broken.as_array_mut().unwrap().push(json!(
        {"kind": "Service", "name": "istiod", "jsonPatch": [{"op": "test", "path": "/spec/type", "value": "LoadBalancer"}]}
    ));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"components": {"istiod": {"overlays": broken}}}})),
    )
    .await
    .unwrap();
    let stalled = meshop_testenv::wait_for_kstatus(&api, name, KStatus::Failed, READY).await;
    let status = stalled.status.unwrap();
    let condition = status.condition(condition::STALLED).unwrap();
    assert_eq!(condition.reason, "InvalidOverlay");
    assert_eq!(
        condition.message,
        "components.istiod.overlays[2] (Service istiod): jsonPatch[0] (test /spec/type) does not apply: the value there is not the one tested"
    );
    assert_eq!(
        owned_versions(&client, &uid).await,
        settled,
        "a stalled overlay changed what runs"
    );
    // Fixed: converges again.
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"components": {"istiod": {"overlays": overlays()}}}})),
    )
    .await
    .unwrap();
    meshop_testenv::wait_for_kstatus(&api, name, KStatus::Current, READY).await;
    let _ = api.delete(name, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_does_not_apply_is_stalled_naming_it() {
    let cp = meshop_testenv::shared_with_audit();
    operator();
    let _logs = LogsOnFailure("overlay stalled".into());
    let client = cp.client().await.unwrap();
    let name = "overlay-stalled";
    let api = create(
        &client,
        name,
        "ov-stalled",
        json!({"profile": "minimal", "components": {"istiod": {"overlays": [
            {"kind": "Deployment", "name": "istiod", "strategicMerge": {"metadata": {"annotations": {"team": "mesh"}}}},
            {"kind": "Deployment", "name": "istiod", "jsonPatch": [
                {"op": "add", "path": "/metadata/labels/team", "value": "mesh"},
                {"op": "remove", "path": "/spec/template/spec/nodeSelector"}
            ]}
        ]}}}),
    )
    .await;
    let mi = meshop_testenv::wait_for_kstatus(&api, name, KStatus::Failed, READY).await;
    let status = mi.status.unwrap();
    let stalled = status.condition(condition::STALLED).unwrap();
    assert_eq!(stalled.reason, "InvalidOverlay");
    assert_eq!(
        stalled.message,
        "components.istiod.overlays[1] (Deployment istiod): jsonPatch[1] (remove /spec/template/spec/nodeSelector) does not apply: the path names no value (or no place for one)"
    );
    let created =
        meshop_testenv::inventory::left_of(&client, name, mi.metadata.uid.as_deref().unwrap())
            .await
            .unwrap();
    assert!(created.is_empty(), "a stalled overlay created {created:?}");
    let notes = meshop_testenv::event_notes(&client, name, "InvalidOverlay")
        .await
        .unwrap();
    assert_eq!(notes.len(), 1, "one event: {notes:?}");
    let _ = api.delete(name, &DeleteParams::default()).await;
}
