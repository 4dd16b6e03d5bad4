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
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};

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
        let rc = RevisionConfig { enabled: install.injection.enabled, config: Arc::new(InjectionConfig::from(install)) };
        write(&self.inner.installs).insert(name.to_string(), rc);
    }

    pub fn remove_install(&self, name: &str) {
        write(&self.inner.installs).remove(name);
    }

    /// The settings for a revision key (`default` for the default revision). Two MeshInstalls
    /// claiming one revision is a conflict the reconciler reports; here the first by name wins so
    /// the answer is at least stable.
    pub fn revision(&self, key: &str) -> Option<RevisionConfig> {
        read(&self.inner.installs).values().find(|rc| revision_key(&rc.config.revision) == key).cloned()
    }

    /// Marks both watches as having listed everything (tests and [`spawn_view`]).
    pub fn mark_synced(&self) {
        self.inner.namespaces_synced.store(true, Ordering::SeqCst);
        self.inner.installs_synced.store(true, Ordering::SeqCst);
    }

    /// Whether both watches have completed their first list. Until then answers would be guesses.
    pub fn is_synced(&self) -> bool {
        self.inner.namespaces_synced.load(Ordering::SeqCst) && self.inner.installs_synced.load(Ordering::SeqCst)
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
    let ns_stream = watcher::watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default()).default_backoff();
    tokio::spawn(feed_namespaces(view.clone(), ns_stream));
    let mi_stream = watcher::watcher(Api::<MeshInstall>::all(client), watcher::Config::default()).default_backoff();
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
            Ok(Event::Apply(mi)) => match Installation::from_mesh(&mi) {
                Ok(install) => view.set_install(&mi.name_any(), &install),
                // An invalid spec injects nothing new; the reconciler reports it as Stalled.
                Err(_) => view.remove_install(&mi.name_any()),
            },
            Ok(Event::Delete(mi)) => view.remove_install(&mi.name_any()),
            Err(e) => tracing::warn!(error = %e, "webhook MeshInstall watch failed; retrying"),
        }
    }
}

fn revision_config(mi: &MeshInstall) -> Option<RevisionConfig> {
    let install = Installation::from_mesh(mi).ok()?;
    Some(RevisionConfig { enabled: install.injection.enabled, config: Arc::new(InjectionConfig::from(&install)) })
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
        (StatusCode::SERVICE_UNAVAILABLE, "webhook cache is still syncing").into_response()
    }
}

fn json(status: StatusCode, review: &AdmissionReview<DynamicObject>) -> Response {
    (status, axum::Json(review)).into_response()
}

async fn inject_handler(State(view): State<View>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("request body is not a valid AdmissionReview: {e}")).into_response(),
    };
    let api_version = review.types.api_version.clone();
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return (StatusCode::BAD_REQUEST, "AdmissionReview has no request").into_response(),
    };
    // Until the watches have listed everything, say so with a 503: the API server then applies
    // the webhook's failurePolicy instead of admitting pods on a guess.
    if !view.is_synced() {
        return (StatusCode::SERVICE_UNAVAILABLE, "webhook cache is still syncing").into_response();
    }
    let resp = admit(&view, &req, &api_version);
    json(StatusCode::OK, &resp.into_review())
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
fn admit(view: &View, req: &AdmissionRequest<DynamicObject>, api_version: &str) -> AdmissionResponse {
    if api_version != "admission.k8s.io/v1" {
        return allow_with_warning(req, format!("meshop injection webhook expects admission.k8s.io/v1, got {api_version:?}; pod admitted without a sidecar"));
    }
    let k = &req.kind;
    if !(k.group.is_empty() && k.version == "v1" && k.kind == "Pod") || !matches!(req.operation, Operation::Create) || req.sub_resource.is_some() {
        return allow_with_warning(req, format!("meshop injection webhook only handles v1 Pod CREATE; got {}/{} {} {:?}", k.group, k.version, k.kind, req.operation));
    }
    let Some(obj) = &req.object else {
        return deny(req, "admission request carries no pod".into());
    };
    let mut pod: Pod = match serde_json::to_value(obj).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => return deny(req, format!("object is not a valid Pod: {e}")),
    };
    // Pods from a template have no namespace in the object yet; the request has it.
    let namespace = req.namespace.clone().or_else(|| pod.metadata.namespace.clone()).unwrap_or_else(|| "default".into());
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
