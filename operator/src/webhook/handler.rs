//! `POST /inject`: answers AdmissionReviews for pods from memory. A [`View`] fed by watches on
//! Namespaces and MeshInstalls holds everything a decision needs, so an admission request never
//! waits on the API server (the API server waits on us, with a short timeout).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DynamicObject};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{PartialObjectMeta, Status};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::revision_key;
use crate::api::MeshInstall;
use crate::effective::Installation;
use crate::inject::{self, Decision, InjectionConfig, keys};

/// Large enough for a pod with thousands of env vars (2,000 of them are well under 1 MiB).
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// A revision's injection settings as the view holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionConfig {
    /// `injection.enabled` of the MeshInstall.
    pub enabled: bool,
    pub config: Arc<InjectionConfig>,
    /// When the MeshInstall was created: the oldest claim on a revision wins, as in the reconciler.
    pub created: Option<k8s_openapi::jiff::Timestamp>,
}

impl RevisionConfig {
    fn new(
        install: &Installation,
        created: Option<k8s_openapi::jiff::Timestamp>,
    ) -> RevisionConfig {
        RevisionConfig {
            enabled: install.injection.enabled,
            config: Arc::new(InjectionConfig::from(install)),
            created,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Namespace name -> labels.
    namespaces: RwLock<HashMap<String, BTreeMap<String, String>>>,
    /// MeshInstall name -> its revision's settings (names keep deletes exact).
    installs: RwLock<BTreeMap<String, RevisionConfig>>,
    namespaces_synced: AtomicBool,
    installs_synced: AtomicBool,
}

/// What the webhook knows about the cluster. Cheap to clone; shared by the watches and the handler.
#[derive(Clone, Default)]
pub struct View {
    inner: Arc<Inner>,
}

// A poisoned lock only means a writer panicked mid-update of plain maps; the data is still usable.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl View {
    pub fn new() -> View {
        View::default()
    }

    pub fn set_namespace(&self, name: &str, labels: BTreeMap<String, String>) {
        write(&self.inner.namespaces).insert(name.to_string(), labels);
    }

    pub fn remove_namespace(&self, name: &str) {
        write(&self.inner.namespaces).remove(name);
    }

    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        read(&self.inner.namespaces).get(name).cloned()
    }

    /// Records (or replaces) the MeshInstall `name`'s injection settings.
    pub fn set_install(&self, name: &str, install: &Installation) {
        self.set_revision_config(name, RevisionConfig::new(install, None));
    }

    fn set_revision_config(&self, name: &str, rc: RevisionConfig) {
        write(&self.inner.installs).insert(name.to_string(), rc);
    }

    pub fn remove_install(&self, name: &str) {
        write(&self.inner.installs).remove(name);
    }

    /// The settings for a revision key (`default` for the default revision). Two MeshInstalls
    /// claiming one revision is a conflict the reconciler reports as Stalled for the younger one;
    /// here too the oldest claim (then the first by name) wins.
    pub fn revision(&self, key: &str) -> Option<RevisionConfig> {
        read(&self.inner.installs)
            .iter()
            .filter(|(_, rc)| revision_key(&rc.config.revision) == key)
            .min_by_key(|(name, rc)| (rc.created, name.as_str()))
            .map(|(_, rc)| rc.clone())
    }

    /// Marks both watches as having listed everything (tests and [`spawn_view`]).
    pub fn mark_synced(&self) {
        self.inner.namespaces_synced.store(true, Ordering::SeqCst);
        self.inner.installs_synced.store(true, Ordering::SeqCst);
    }

    /// Whether both watches have completed their first list. Until then answers would be guesses.
    pub fn is_synced(&self) -> bool {
        self.inner.namespaces_synced.load(Ordering::SeqCst)
            && self.inner.installs_synced.load(Ordering::SeqCst)
    }

    fn replace_namespaces(&self, all: HashMap<String, BTreeMap<String, String>>) {
        *write(&self.inner.namespaces) = all;
        self.inner.namespaces_synced.store(true, Ordering::SeqCst);
    }

    fn replace_installs(&self, all: BTreeMap<String, RevisionConfig>) {
        *write(&self.inner.installs) = all;
        self.inner.installs_synced.store(true, Ordering::SeqCst);
    }
}

/// Starts the watches that keep a [`View`] current: namespace metadata (labels only) and
/// MeshInstalls. They retry with backoff forever; the tasks end when the runtime does.
pub fn spawn_view(client: Client) -> View {
    let view = View::new();
    let ns_stream = watcher::watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    tokio::spawn(feed_namespaces(view.clone(), ns_stream));
    let mi_stream = watcher::watcher(Api::<MeshInstall>::all(client), watcher::Config::default())
        .default_backoff();
    tokio::spawn(feed_installs(view.clone(), mi_stream));
    view
}

async fn feed_namespaces<S>(view: View, stream: S)
where
    S: Stream<Item = Result<Event<PartialObjectMeta<Namespace>>, watcher::Error>>,
{
    // A relist builds a fresh map and swaps it in at InitDone, so namespaces deleted while the
    // watch was down disappear.
    let mut relist: Option<HashMap<String, BTreeMap<String, String>>> = None;
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(ns)) => {
                if let Some(m) = relist.as_mut() {
                    m.insert(ns.name_any(), ns.labels().clone());
                }
            }
            Ok(Event::InitDone) => view.replace_namespaces(relist.take().unwrap_or_default()),
            Ok(Event::Apply(ns)) => view.set_namespace(&ns.name_any(), ns.labels().clone()),
            Ok(Event::Delete(ns)) => view.remove_namespace(&ns.name_any()),
            Err(e) => tracing::warn!(error = %e, "webhook namespace watch failed; retrying"),
        }
    }
}

async fn feed_installs<S>(view: View, stream: S)
where
    S: Stream<Item = Result<Event<MeshInstall>, watcher::Error>>,
{
    let mut relist: Option<BTreeMap<String, RevisionConfig>> = None;
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(BTreeMap::new()),
            Ok(Event::InitApply(mi)) => {
                if let (Some(m), Some(rc)) = (relist.as_mut(), revision_config(&mi)) {
                    m.insert(mi.name_any(), rc);
                }
            }
            Ok(Event::InitDone) => view.replace_installs(relist.take().unwrap_or_default()),
            Ok(Event::Apply(mi)) => match revision_config(&mi) {
                Some(rc) => view.set_revision_config(&mi.name_any(), rc),
                // An invalid spec injects nothing new; the reconciler reports it as Stalled.
                None => view.remove_install(&mi.name_any()),
            },
            Ok(Event::Delete(mi)) => view.remove_install(&mi.name_any()),
            Err(e) => tracing::warn!(error = %e, "webhook MeshInstall watch failed; retrying"),
        }
    }
}

fn revision_config(mi: &MeshInstall) -> Option<RevisionConfig> {
    let install = Installation::from_mesh(mi).ok()?;
    Some(RevisionConfig::new(
        &install,
        mi.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ))
}

/// The webhook's routes: `POST /inject` and `GET /healthz`.
pub fn router(view: View) -> Router {
    Router::new()
        .route(super::config::WEBHOOK_PATH, post(inject_handler))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(view)
}

async fn healthz(State(view): State<View>) -> Response {
    if view.is_synced() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook cache is still syncing",
        )
            .into_response()
    }
}

/// Encodes the review. kube-core writes the patch bytes as a JSON array of numbers; the API
/// server's canonical form for `[]byte` is base64, about a quarter of the size, so we write that.
fn json(status: StatusCode, mut review: AdmissionReview<DynamicObject>) -> Response {
    // Taken out before encoding, so the bytes are never turned into a JSON array on the way.
    let patch = review.response.as_mut().and_then(|r| r.patch.take());
    let mut value = match serde_json::to_value(&review) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the AdmissionReview failed: {e}"),
            )
                .into_response();
        }
    };
    if let Some(patch) = patch
        && let Ok(b64) = serde_json::to_value(k8s_openapi::ByteString(patch))
        && let Some(resp) = value.get_mut("response").and_then(Value::as_object_mut)
    {
        resp.insert("patch".into(), b64);
    }
    (status, axum::Json(value)).into_response()
}

async fn inject_handler(State(view): State<View>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("request body is not a valid AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let api_version = review.types.api_version.clone();
    let mut req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return (StatusCode::BAD_REQUEST, "AdmissionReview has no request").into_response();
        }
    };
    // Until the watches have listed everything, say so with a 503: the API server then applies
    // the webhook's failurePolicy instead of admitting pods on a guess.
    if !view.is_synced() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook cache is still syncing",
        )
            .into_response();
    }
    let resp = admit(&view, &mut req, &api_version);
    json(StatusCode::OK, resp.into_review())
}

fn allow_with_warning(req: &AdmissionRequest<DynamicObject>, warning: String) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    resp.warnings = Some(vec![warning]);
    resp
}

fn deny(req: &AdmissionRequest<DynamicObject>, message: String) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    resp.allowed = false;
    resp.result = Status::failure(&message, "BadRequest").with_code(400);
    resp
}

/// The answer to one request. Everything that is not a v1 Pod CREATE is admitted untouched.
fn admit(
    view: &View,
    req: &mut AdmissionRequest<DynamicObject>,
    api_version: &str,
) -> AdmissionResponse {
    if api_version != "admission.k8s.io/v1" {
        return allow_with_warning(
            req,
            format!(
                "meshop injection webhook expects admission.k8s.io/v1, got {api_version:?}; pod admitted without a sidecar"
            ),
        );
    }
    let k = &req.kind;
    let pod_create = k.group.is_empty()
        && k.version == "v1"
        && k.kind == "Pod"
        && matches!(req.operation, Operation::Create);
    if !pod_create || req.sub_resource.is_some() {
        return allow_with_warning(
            req,
            format!(
                "meshop injection webhook only handles v1 Pod CREATE; got {}/{} {} {:?}",
                k.group, k.version, k.kind, req.operation
            ),
        );
    }
    let Some(obj) = req.object.take() else {
        return deny(req, "admission request carries no pod".into());
    };
    let mut pod = match pod_from(obj) {
        Ok(p) => p,
        Err(e) => return deny(req, format!("object is not a valid Pod: {e}")),
    };
    let req = &*req;
    // Pods from a template have no namespace in the object yet; the request has it.
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".into());
    pod.metadata.namespace = Some(namespace.clone());
    let ns_labels = view.namespace_labels(&namespace).unwrap_or_default();

    let rev = select_revision(&ns_labels, &pod);
    let Some(rc) = view.revision(&rev) else {
        tracing::debug!(uid = %req.uid, %namespace, revision = %rev, "no MeshInstall serves this revision; admitted unchanged");
        return AdmissionResponse::from(req);
    };
    if !rc.enabled {
        return AdmissionResponse::from(req);
    }
    match inject::decide(&namespace, &ns_labels, &pod, &rc.config) {
        Decision::Skip(reason) => {
            tracing::debug!(uid = %req.uid, %namespace, %reason, "not injecting");
            AdmissionResponse::from(req)
        }
        // A bad per-pod annotation is the pod author's error: refuse with the reason, as Istio does,
        // rather than start a pod without the sidecar its owner asked for.
        Decision::Inject => match inject::inject(&pod, &rc.config) {
            Err(e) => deny(req, format!("sidecar injection failed: {e}")),
            Ok(injected) => {
                let patch = inject::patch(&pod, &injected);
                match AdmissionResponse::from(req).with_patch(patch) {
                    Ok(resp) => {
                        tracing::debug!(uid = %req.uid, %namespace, revision = %rev, "injected sidecar");
                        resp
                    }
                    Err(e) => deny(req, format!("could not encode the injection patch: {e}")),
                }
            }
        },
    }
}

/// The typed Pod of a request object, moving its parts rather than re-encoding the whole object.
fn pod_from(obj: DynamicObject) -> Result<Pod, serde_json::Error> {
    let DynamicObject {
        metadata, mut data, ..
    } = obj;
    let mut part = |key: &str| data.get_mut(key).map(Value::take).unwrap_or(Value::Null);
    Ok(Pod {
        metadata,
        spec: serde_json::from_value(part("spec"))?,
        status: serde_json::from_value(part("status"))?,
    })
}

/// Which revision's settings apply, with the same precedence as the engine's selection: the
/// namespace's `istio-injection` (always the default revision), then its `istio.io/rev`, then the
/// pod's `istio.io/rev`, else the default revision.
pub fn select_revision(ns_labels: &BTreeMap<String, String>, pod: &Pod) -> String {
    if ns_labels.contains_key(keys::NAMESPACE_INJECTION) {
        return "default".into();
    }
    if let Some(rev) = ns_labels.get(keys::REV) {
        return revision_key(rev).to_string();
    }
    match pod.metadata.labels.as_ref().and_then(|l| l.get(keys::REV)) {
        Some(rev) => revision_key(rev).to_string(),
        None => "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::effective::Owner;

    fn install(revision: &str) -> Installation {
        let spec: crate::api::MeshInstallSpec =
            serde_json::from_value(json!({"profile": "minimal", "revision": revision})).unwrap();
        Installation::resolve(
            Owner {
                name: format!("mesh{revision}"),
                uid: None,
            },
            &spec,
        )
        .unwrap()
    }

    fn view() -> View {
        let v = View::new();
        v.set_namespace(
            "apps",
            BTreeMap::from([(keys::NAMESPACE_INJECTION.to_string(), "enabled".to_string())]),
        );
        v.set_namespace(
            "canary-apps",
            BTreeMap::from([(keys::REV.to_string(), "canary".to_string())]),
        );
        v.set_namespace("plain", BTreeMap::new());
        v.set_namespace(
            "kube-system",
            BTreeMap::from([(keys::NAMESPACE_INJECTION.to_string(), "enabled".to_string())]),
        );
        v.set_install("mesh", &install(""));
        v.set_install("mesh-canary", &install("canary"));
        v.mark_synced();
        v
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}]}
        })
    }

    fn review(namespace: &str, kind: Value, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "3f1c-uid", "kind": kind,
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object, "dryRun": false
            }
        })
    }

    fn pod_review(namespace: &str, object: Value) -> Value {
        review(
            namespace,
            json!({"group": "", "version": "v1", "kind": "Pod"}),
            object,
        )
    }

    async fn call_raw(v: &View, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = router(v.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    /// Sends a review and returns the `response` object.
    async fn call(v: &View, body: &Value) -> Value {
        let (status, bytes) =
            call_raw(v, "POST", "/inject", serde_json::to_vec(body).unwrap()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "3f1c-uid");
        out["response"].clone()
    }

    fn decoded_patch(resp: &Value) -> Option<json_patch::Patch> {
        let b64 = resp.get("patch")?.as_str()?;
        // The API server's JSON encoding of []byte is base64.
        let bytes: k8s_openapi::ByteString =
            serde_json::from_value(Value::String(b64.to_string())).ok()?;
        serde_json::from_slice(&bytes.0).ok()
    }

    fn apply(object: &Value, resp: &Value) -> Value {
        let mut doc = object.clone();
        json_patch::patch(&mut doc, &decoded_patch(resp).expect("patch")).unwrap();
        doc
    }

    fn container_names(pod: &Value) -> Vec<String> {
        let mut names = Vec::new();
        for list in ["initContainers", "containers"] {
            for c in pod["spec"][list].as_array().into_iter().flatten() {
                names.push(c["name"].as_str().unwrap_or_default().to_string());
            }
        }
        names
    }

    #[tokio::test]
    async fn injects_a_pod_in_an_enabled_namespace() {
        let v = view();
        let resp = call(&v, &pod_review("apps", pod())).await;
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        let injected = apply(&pod(), &resp);
        assert!(
            container_names(&injected).contains(&"istio-proxy".to_string()),
            "{injected}"
        );
        assert!(injected["metadata"]["annotations"][keys::STATUS].is_string());
    }

    #[tokio::test]
    async fn second_call_on_an_injected_pod_is_a_no_op() {
        let v = view();
        let resp = call(&v, &pod_review("apps", pod())).await;
        let injected = apply(&pod(), &resp);
        let again = call(&v, &pod_review("apps", injected)).await;
        assert_eq!(again["allowed"], true);
        assert!(again.get("patch").is_none(), "{again}");
    }

    #[tokio::test]
    async fn revision_namespace_gets_the_revision_config() {
        let v = view();
        let resp = call(&v, &pod_review("canary-apps", pod())).await;
        let injected = apply(&pod(), &resp);
        assert!(
            injected.to_string().contains("istiod-canary."),
            "discovery address of the canary revision"
        );
    }

    #[tokio::test]
    async fn pod_label_opt_in_in_an_unlabelled_namespace() {
        let v = view();
        let mut p = pod();
        let resp = call(&v, &pod_review("plain", p.clone())).await;
        assert!(resp.get("patch").is_none());
        p["metadata"]["labels"][keys::INJECT] = json!("true");
        let resp = call(&v, &pod_review("plain", p.clone())).await;
        assert!(container_names(&apply(&p, &resp)).contains(&"istio-proxy".to_string()));
    }

    #[tokio::test]
    async fn opted_out_host_network_and_system_pods_are_untouched() {
        let v = view();
        let mut opted_out = pod();
        opted_out["metadata"]["labels"][keys::INJECT] = json!("false");
        let mut host = pod();
        host["spec"]["hostNetwork"] = json!(true);
        for (ns, p) in [
            ("apps", opted_out),
            ("apps", host),
            ("kube-system", pod()),
            ("nowhere", pod()),
        ] {
            let resp = call(&v, &pod_review(ns, p)).await;
            assert_eq!(resp["allowed"], true);
            assert!(resp.get("patch").is_none(), "{ns}: {resp}");
        }
    }

    #[tokio::test]
    async fn disabled_injection_or_missing_revision_admits_unchanged() {
        let v = view();
        let mut off = install("");
        off.injection.enabled = false;
        v.set_install("mesh", &off);
        let resp = call(&v, &pod_review("apps", pod())).await;
        assert!(resp.get("patch").is_none());
        v.remove_install("mesh");
        let resp = call(&v, &pod_review("apps", pod())).await;
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
    }

    #[tokio::test]
    async fn bad_annotation_is_denied_with_the_reason() {
        let v = view();
        let mut p = pod();
        p["metadata"]["annotations"] =
            json!({(keys::PROXY_CPU): "2", (keys::PROXY_CPU_LIMIT): "1"});
        let resp = call(&v, &pod_review("apps", p)).await;
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 400);
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("proxyCPU"),
            "{resp}"
        );
    }

    #[tokio::test]
    async fn malformed_body_is_a_400_with_a_message() {
        let v = view();
        for body in [
            b"{not json".to_vec(),
            b"[]".to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        ] {
            let (status, bytes) = call_raw(&v, "POST", "/inject", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            let msg = String::from_utf8_lossy(&bytes);
            assert!(msg.contains("AdmissionReview"), "{msg}");
        }
    }

    #[tokio::test]
    async fn object_that_is_not_a_pod_shape_is_denied_not_panicking() {
        let v = view();
        let resp = call(&v, &pod_review("apps", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}}))).await;
        assert_eq!(resp["allowed"], false);
    }

    #[tokio::test]
    async fn other_kinds_and_versions_are_allowed_with_a_warning() {
        let v = view();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let resp = call(
            &v,
            &review(
                "apps",
                json!({"group": "", "version": "v1", "kind": "ConfigMap"}),
                cm,
            ),
        )
        .await;
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
        assert!(resp["warnings"][0].as_str().unwrap().contains("ConfigMap"));

        let mut old = pod_review("apps", pod());
        old["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let (status, bytes) =
            call_raw(&v, "POST", "/inject", serde_json::to_vec(&old).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
    }

    #[tokio::test]
    async fn answers_503_until_the_view_is_synced() {
        let v = View::new();
        let (status, _) = call_raw(
            &v,
            "POST",
            "/inject",
            serde_json::to_vec(&pod_review("apps", pod())).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _) = call_raw(&v, "GET", "/healthz", Vec::new()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = call_raw(&view(), "GET", "/healthz", Vec::new()).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }

    #[tokio::test]
    async fn a_pod_with_2000_env_vars_over_axums_default_limit_fits() {
        let v = view();
        let mut p = pod();
        let env: Vec<Value> = (0..2000)
            .map(|i| json!({"name": format!("VAR_{i}"), "value": "x".repeat(1200)}))
            .collect();
        p["spec"]["containers"][0]["env"] = Value::Array(env);
        let body = serde_json::to_vec(&pod_review("apps", p.clone())).unwrap();
        assert!(
            body.len() > 2 * 1024 * 1024,
            "the test must exceed axum's default 2 MB limit"
        );
        let resp = call(&v, &pod_review("apps", p.clone())).await;
        let injected = apply(&p, &resp);
        assert_eq!(
            injected["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2000
        );
        assert!(
            decoded_patch(&resp).unwrap().0.len() < 100,
            "patch does not rewrite the env vars"
        );
        let (status, _) = call_raw(&v, "POST", "/inject", vec![b' '; BODY_LIMIT + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    fn ns_meta(name: &str, pairs: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        use kube::core::{ObjectMeta, PartialObjectMetaExt};
        let labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        }
        .into_response_partial()
    }

    #[tokio::test]
    async fn watch_events_feed_the_view_and_a_relist_drops_deleted_namespaces() {
        let v = View::new();
        let events = || -> Vec<Result<_, watcher::Error>> {
            vec![
                Ok(Event::Init),
                Ok(Event::InitApply(ns_meta(
                    "a",
                    &[(keys::NAMESPACE_INJECTION, "enabled")],
                ))),
                Ok(Event::InitApply(ns_meta("b", &[]))),
                Ok(Event::InitDone),
                Ok(Event::Apply(ns_meta("b", &[(keys::REV, "canary")]))),
                Ok(Event::Delete(ns_meta("a", &[]))),
                Ok(Event::Init),
                Ok(Event::InitApply(ns_meta("c", &[]))),
                Ok(Event::InitDone),
            ]
        };
        feed_namespaces(v.clone(), futures::stream::iter(events()).take(5)).await;
        assert_eq!(
            v.namespace_labels("b")
                .unwrap()
                .get(keys::REV)
                .map(String::as_str),
            Some("canary")
        );
        assert!(
            v.namespace_labels("a").is_some() && !v.is_synced(),
            "MeshInstalls not listed yet"
        );
        feed_namespaces(v.clone(), futures::stream::iter(events())).await;
        assert!(v.namespace_labels("a").is_none() && v.namespace_labels("b").is_none());
        assert!(v.namespace_labels("c").is_some());

        let mut bad = MeshInstall::new(
            "broken",
            serde_json::from_value(json!({"profile": "minimal", "version": "0.1.0"})).unwrap(),
        );
        bad.metadata.uid = Some("u".into());
        let good = MeshInstall::new(
            "mesh",
            serde_json::from_value(json!({"profile": "minimal", "revision": "blue"})).unwrap(),
        );
        let mi_events = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(good.clone())),
            Ok(Event::InitApply(bad)),
            Ok(Event::InitDone),
        ];
        feed_installs(v.clone(), futures::stream::iter(mi_events)).await;
        assert!(v.is_synced());
        assert_eq!(
            v.revision("blue")
                .map(|rc| rc.config.revision.clone())
                .as_deref(),
            Some("blue")
        );
        assert!(
            v.revision("default").is_none(),
            "an unsupported version is not served"
        );
        feed_installs(
            v.clone(),
            futures::stream::iter(vec![Ok(Event::Delete(good))]),
        )
        .await;
        assert!(v.revision("blue").is_none());
    }

    #[test]
    fn revision_selection_precedence() {
        let ns = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let mut p: Pod = serde_json::from_value(pod()).unwrap();
        assert_eq!(select_revision(&ns(&[]), &p), "default");
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(keys::REV.into(), "canary".into());
        assert_eq!(select_revision(&ns(&[]), &p), "canary");
        assert_eq!(select_revision(&ns(&[(keys::REV, "blue")]), &p), "blue");
        assert_eq!(select_revision(&ns(&[(keys::REV, "")]), &p), "default");
        assert_eq!(
            select_revision(
                &ns(&[(keys::NAMESPACE_INJECTION, "enabled"), (keys::REV, "blue")]),
                &p
            ),
            "default"
        );
    }
}
