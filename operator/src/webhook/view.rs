//! What the webhook knows about the cluster: namespace labels, each MeshInstall's injection
//! settings and each node's kubelet version (for `sidecarMode: auto`), kept current by watches so
//! an admission request never waits on the API server (the API server waits on us, with a short
//! timeout). A decision reads one [`Snapshot`].
//!
//! One exception to "never waits": a pod whose namespace the watch has not delivered yet (a
//! namespace created a moment ago, a watch relisting after a restart or a busy API server). Its
//! labels are unknown, and taking them as empty would admit the pod without the sidecar the
//! namespace asks for. [`View::resolve_namespace`] reads that one namespace from the API server
//! instead; when it cannot, the handler answers 503 and the API server applies `failurePolicy`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde::Deserialize;

use crate::api::MeshInstall;
use crate::effective::Installation;
use crate::inject::{InjectionConfig, Kubelets};
use crate::revision;

type Labels = BTreeMap<String, String>;
type Namespaces = HashMap<String, Labels>;
/// By MeshInstall name, so deletes are exact.
type Installs = BTreeMap<String, MeshRevisions>;

/// What one MeshInstall serves: one revision (in place), or every revision of a revision-based
/// install with the tags pointing at them (from its `status.revisions`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MeshRevisions {
    created: Option<Timestamp>,
    revisions: Vec<RevisionConfig>,
    /// Tag -> revision name.
    tags: BTreeMap<String, String>,
}

impl MeshRevisions {
    fn single(rc: RevisionConfig) -> MeshRevisions {
        MeshRevisions {
            created: rc.created,
            revisions: vec![rc],
            tags: BTreeMap::new(),
        }
    }

    /// The revision called `name`, or the one the tag `name` points at.
    fn lookup(&self, name: &str) -> Option<&RevisionConfig> {
        let by_name = |n: &str| {
            self.revisions
                .iter()
                .find(|rc| revision::name(&rc.config.revision) == n)
        };
        by_name(name).or_else(|| by_name(self.tags.get(name)?))
    }

    /// A MeshInstall's revisions. Revision-based: each revision its status lists, rendered at
    /// its own release from the spec, with the tags the status records (the reconciler moves
    /// them only once the new revision is ready). An invalid spec serves nothing.
    fn of(mi: &MeshInstall) -> Option<MeshRevisions> {
        let created = mi.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if mi.spec.update_strategy != crate::api::UpdateStrategy::RevisionBased {
            return RevisionConfig::of(mi).map(MeshRevisions::single);
        }
        let owner = crate::effective::Owner {
            name: mi.name_any(),
            uid: mi.metadata.uid.clone(),
        };
        let listed = mi.status.iter().flat_map(|s| s.revisions.iter());
        let mut out = MeshRevisions {
            created,
            revisions: Vec::new(),
            tags: BTreeMap::new(),
        };
        for r in listed {
            let Ok(install) =
                Installation::resolve_at(owner.clone(), &mi.spec, Some(r.version.as_str()))
            else {
                continue;
            };
            // A spec.revision changed since: the listed revision is not this spec's any more.
            if install.revision != r.name {
                continue;
            }
            for tag in &r.tags {
                out.tags.insert(tag.clone(), r.name.clone());
            }
            out.revisions.push(RevisionConfig::new(&install, created));
        }
        Some(out)
    }
}

/// A revision's injection settings as the view holds them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RevisionConfig {
    /// `injection.enabled` of the MeshInstall.
    pub(crate) enabled: bool,
    pub(crate) config: Arc<InjectionConfig>,
    /// When the MeshInstall was created: the oldest claim on a revision wins, as in the reconciler.
    pub(crate) created: Option<Timestamp>,
}

impl RevisionConfig {
    fn new(install: &Installation, created: Option<Timestamp>) -> RevisionConfig {
        RevisionConfig {
            enabled: install.injection.enabled,
            config: Arc::new(InjectionConfig::from(install)),
            created,
        }
    }

    fn of(mi: &MeshInstall) -> Option<RevisionConfig> {
        let install = Installation::from_mesh(mi).ok()?;
        Some(RevisionConfig::new(
            &install,
            mi.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ))
    }
}

/// A Node as the view decodes it: its name and kubelet version. The rest of the object (images,
/// conditions, addresses, ...) is skipped while decoding, never held.
#[derive(Clone, Debug, Deserialize)]
struct NodeKubelet {
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<NodeKubeletStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeKubeletStatus {
    #[serde(default)]
    node_info: Option<NodeKubeletInfo>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeKubeletInfo {
    #[serde(default)]
    kubelet_version: Option<String>,
}

impl NodeKubelet {
    fn kubelet_version(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .node_info
            .as_ref()?
            .kubelet_version
            .as_deref()
    }
}

// Served from the `nodes` endpoint like the full type.
impl k8s_openapi::Resource for NodeKubelet {
    const API_VERSION: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str =
        <k8s_openapi::api::core::v1::Node as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NodeKubelet {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The view at one instant: everything one admission decision reads, consistent with itself.
/// Taking one costs three `Arc` clones; writers copy a map only while a snapshot of it is alive.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    namespaces: Arc<Namespaces>,
    installs: Arc<Installs>,
    kubelets: Arc<Kubelets>,
    operator_namespace: Option<Arc<str>>,
}

impl Snapshot {
    /// Whether `namespace` is the operator's own: never injected, whatever its labels, so the
    /// operator never needs the webhook it serves to start ([`View::set_operator_namespace`]).
    pub(crate) fn is_operator_namespace(&self, namespace: &str) -> bool {
        self.operator_namespace.as_deref() == Some(namespace)
    }

    /// The nodes' kubelet versions, which decide `sidecarMode: auto`.
    pub(crate) fn kubelets(&self) -> &Kubelets {
        &self.kubelets
    }

    /// The labels of a namespace the watch has seen.
    pub(crate) fn namespace_labels(&self, name: &str) -> Option<&Labels> {
        self.namespaces.get(name)
    }

    /// The settings of the revision called `name` ([`revision::name`]). Two MeshInstalls claiming
    /// one revision is a conflict the reconciler reports as Stalled for the younger one; here too
    /// the oldest claim (then the first by MeshInstall name) wins.
    /// A tag (`default` included, which `istio-injection=enabled` selects) resolves to the
    /// revision it points at in the same MeshInstall: moving a tag is a status change the watch
    /// brings here, never an API call per request.
    pub(crate) fn revision(&self, name: &str) -> Option<&RevisionConfig> {
        self.installs
            .iter()
            .filter_map(|(mi, m)| Some((m.created, mi.as_str(), m.lookup(name)?)))
            .min_by_key(|(created, mi, _)| (*created, *mi))
            .map(|(_, _, rc)| rc)
    }
}

#[derive(Default)]
struct Inner {
    namespaces: RwLock<Arc<Namespaces>>,
    installs: RwLock<Arc<Installs>>,
    kubelets: RwLock<Arc<Kubelets>>,
    namespaces_synced: AtomicBool,
    installs_synced: AtomicBool,
    nodes_synced: AtomicBool,
    /// Reads a namespace the watch has not delivered yet (see [`View::resolve_namespace`]).
    namespace_reader: OnceLock<Api<Namespace>>,
    operator_namespace: OnceLock<Arc<str>>,
}

/// How long a cache miss may wait on the API server. The API server waits at most
/// `timeoutSeconds` (10) for the whole answer; this leaves room for the decision and the reply.
const NAMESPACE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the labels of a pod's namespace could not be known.
#[derive(Debug)]
pub(crate) struct NamespaceUnknown {
    pub(crate) namespace: String,
    pub(crate) reason: String,
}

impl std::fmt::Display for NamespaceUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "namespace {} is not in the webhook's cache yet and reading it failed: {}",
            self.namespace, self.reason
        )
    }
}

/// The watched cache. Cheap to clone; shared by the watch feeders and the HTTP handler.
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

    /// Lets [`View::resolve_namespace`] read namespaces the watch has not delivered yet through
    /// `client` (`get` on namespaces, which meshop's ClusterRole grants). Without it a miss is
    /// answered with an error, never with a guess.
    pub fn read_misses_from(&self, client: Client) {
        let _ = self.inner.namespace_reader.set(Api::all(client));
    }

    /// The namespace meshop itself runs in: never injected (see [`Snapshot::is_operator_namespace`]).
    pub fn set_operator_namespace(&self, namespace: &str) {
        let _ = self.inner.operator_namespace.set(Arc::from(namespace));
    }

    /// Makes sure the view holds `namespace`'s labels: a hit costs a map lookup; a miss reads the
    /// namespace from the API server (bounded by [`NAMESPACE_READ_TIMEOUT`]) and records it,
    /// unless the watch delivered it meanwhile (the watch's copy is never older).
    pub(crate) async fn resolve_namespace(&self, namespace: &str) -> Result<(), NamespaceUnknown> {
        if read(&self.inner.namespaces).contains_key(namespace) {
            return Ok(());
        }
        let unknown = |reason: String| NamespaceUnknown {
            namespace: namespace.to_string(),
            reason,
        };
        let Some(api) = self.inner.namespace_reader.get() else {
            return Err(unknown(
                "the webhook has no API client to read it with".into(),
            ));
        };
        let got = tokio::time::timeout(NAMESPACE_READ_TIMEOUT, api.get_metadata_opt(namespace))
            .await
            .map_err(|_| unknown(format!("no answer within {NAMESPACE_READ_TIMEOUT:?}")))?
            .map_err(|e| unknown(e.to_string()))?;
        let Some(ns) = got else {
            return Err(unknown("it does not exist".into()));
        };
        tracing::info!(%namespace, "namespace not yet in the webhook's cache; read it from the API server");
        Arc::make_mut(&mut write(&self.inner.namespaces))
            .entry(namespace.to_string())
            .or_insert_with(|| ns.labels().clone());
        Ok(())
    }

    pub fn set_namespace(&self, name: &str, labels: Labels) {
        Arc::make_mut(&mut write(&self.inner.namespaces)).insert(name.to_string(), labels);
    }

    pub(crate) fn remove_namespace(&self, name: &str) {
        Arc::make_mut(&mut write(&self.inner.namespaces)).remove(name);
    }

    /// Records (or replaces) the MeshInstall `name`'s injection settings.
    pub fn set_install(&self, name: &str, install: &Installation) {
        self.set_revision_config(name, RevisionConfig::new(install, None));
    }

    fn set_revision_config(&self, name: &str, rc: RevisionConfig) {
        self.set_mesh(name, MeshRevisions::single(rc));
    }

    fn set_mesh(&self, name: &str, mesh: MeshRevisions) {
        Arc::make_mut(&mut write(&self.inner.installs)).insert(name.to_string(), mesh);
    }

    pub(crate) fn remove_install(&self, name: &str) {
        Arc::make_mut(&mut write(&self.inner.installs)).remove(name);
    }

    /// Records (or replaces) node `name`'s kubelet version (`status.nodeInfo.kubeletVersion`).
    pub fn set_node(&self, name: &str, kubelet_version: Option<&str>) {
        Arc::make_mut(&mut write(&self.inner.kubelets)).set(name, kubelet_version);
    }

    pub(crate) fn remove_node(&self, name: &str) {
        Arc::make_mut(&mut write(&self.inner.kubelets)).remove(name);
    }

    /// Marks every watch as having listed everything (tests, and callers that fill the view
    /// themselves).
    pub fn mark_synced(&self) {
        self.inner.namespaces_synced.store(true, Ordering::SeqCst);
        self.inner.installs_synced.store(true, Ordering::SeqCst);
        self.inner.nodes_synced.store(true, Ordering::SeqCst);
    }

    /// Whether every watch has completed its first list. Until then answers would be guesses
    /// (without the nodes, `auto` would pick a sidecar mode the pod's kubelet may not run).
    pub(crate) fn is_synced(&self) -> bool {
        self.inner.namespaces_synced.load(Ordering::SeqCst)
            && self.inner.installs_synced.load(Ordering::SeqCst)
            && self.inner.nodes_synced.load(Ordering::SeqCst)
    }

    /// What the view holds now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            namespaces: read(&self.inner.namespaces).clone(),
            installs: read(&self.inner.installs).clone(),
            kubelets: read(&self.inner.kubelets).clone(),
            operator_namespace: self.inner.operator_namespace.get().cloned(),
        }
    }

    fn replace_namespaces(&self, all: Namespaces) {
        *write(&self.inner.namespaces) = Arc::new(all);
        self.inner.namespaces_synced.store(true, Ordering::SeqCst);
    }

    fn replace_installs(&self, all: Installs) {
        *write(&self.inner.installs) = Arc::new(all);
        self.inner.installs_synced.store(true, Ordering::SeqCst);
    }

    fn replace_kubelets(&self, all: Kubelets) {
        *write(&self.inner.kubelets) = Arc::new(all);
        self.inner.nodes_synced.store(true, Ordering::SeqCst);
    }
}

/// Starts the watches that keep a [`View`] current: namespace metadata (labels only),
/// MeshInstalls and nodes (kubelet versions only). They retry with backoff forever; the tasks end
/// when the runtime does.
pub(crate) fn spawn_view(client: Client, operator_namespace: &str) -> View {
    let view = View::new();
    view.read_misses_from(client.clone());
    view.set_operator_namespace(operator_namespace);
    let ns_stream = watcher::watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    tokio::spawn(feed_namespaces(view.clone(), ns_stream));
    let mi_stream = watcher::watcher(
        Api::<MeshInstall>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    tokio::spawn(feed_installs(view.clone(), mi_stream));
    let node_stream = watcher::watcher(Api::<NodeKubelet>::all(client), watcher::Config::default())
        .default_backoff();
    tokio::spawn(feed_nodes(view.clone(), node_stream));
    view
}

async fn feed_nodes<S>(view: View, stream: S)
where
    S: Stream<Item = Result<Event<NodeKubelet>, watcher::Error>>,
{
    // As for namespaces: a relist swaps in a fresh map, so nodes removed meanwhile are gone.
    let mut relist: Option<Kubelets> = None;
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(Kubelets::default()),
            Ok(Event::InitApply(n)) => {
                if let Some(k) = relist.as_mut() {
                    k.set(&n.name_any(), n.kubelet_version());
                }
            }
            Ok(Event::InitDone) => view.replace_kubelets(relist.take().unwrap_or_default()),
            Ok(Event::Apply(n)) => view.set_node(&n.name_any(), n.kubelet_version()),
            Ok(Event::Delete(n)) => view.remove_node(&n.name_any()),
            Err(e) => tracing::warn!(error = %e, "webhook node watch failed; retrying"),
        }
    }
}

async fn feed_namespaces<S>(view: View, stream: S)
where
    S: Stream<Item = Result<Event<PartialObjectMeta<Namespace>>, watcher::Error>>,
{
    // A relist builds a fresh map and swaps it in at InitDone, so namespaces deleted while the
    // watch was down disappear.
    let mut relist: Option<Namespaces> = None;
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
    let mut relist: Option<Installs> = None;
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => relist = Some(BTreeMap::new()),
            Ok(Event::InitApply(mi)) => {
                if let (Some(m), Some(mesh)) = (relist.as_mut(), MeshRevisions::of(&mi)) {
                    m.insert(mi.name_any(), mesh);
                }
            }
            Ok(Event::InitDone) => view.replace_installs(relist.take().unwrap_or_default()),
            Ok(Event::Apply(mi)) => match MeshRevisions::of(&mi) {
                Some(mesh) => view.set_mesh(&mi.name_any(), mesh),
                // An invalid spec injects nothing new; the reconciler reports it as Stalled.
                None => view.remove_install(&mi.name_any()),
            },
            Ok(Event::Delete(mi)) => view.remove_install(&mi.name_any()),
            Err(e) => tracing::warn!(error = %e, "webhook MeshInstall watch failed; retrying"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::effective::Owner;
    use crate::inject::keys;
    use serde_json::json;

    /// The effective settings of a minimal MeshInstall with `revision`.
    pub(crate) fn install(revision: &str) -> Installation {
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

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A synced view: `apps` enabled, `canary-apps` on revision canary, `plain` unlabelled, and
    /// `kube-system` (wrongly) enabled; MeshInstalls `mesh` (default revision) and `mesh-canary`.
    pub(crate) fn view() -> View {
        let v = View::new();
        v.set_namespace("apps", labels(&[(keys::NAMESPACE_INJECTION, "enabled")]));
        v.set_namespace("canary-apps", labels(&[(keys::REV, "canary")]));
        v.set_namespace("plain", BTreeMap::new());
        v.set_namespace(
            "kube-system",
            labels(&[(keys::NAMESPACE_INJECTION, "enabled")]),
        );
        v.set_install("mesh", &install(""));
        v.set_install("mesh-canary", &install("canary"));
        v.mark_synced();
        v
    }

    fn ns_meta(name: &str, pairs: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        use kube::core::{ObjectMeta, PartialObjectMetaExt};
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(pairs)),
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
        let s = v.snapshot();
        assert_eq!(
            s.namespace_labels("b")
                .unwrap()
                .get(keys::REV)
                .map(String::as_str),
            Some("canary")
        );
        assert!(
            s.namespace_labels("a").is_some() && !v.is_synced(),
            "MeshInstalls not listed yet"
        );
        feed_namespaces(v.clone(), futures::stream::iter(events())).await;
        let s = v.snapshot();
        assert!(s.namespace_labels("a").is_none() && s.namespace_labels("b").is_none());
        assert!(s.namespace_labels("c").is_some());

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
        assert!(!v.is_synced(), "nodes not listed yet");
        feed_nodes(
            v.clone(),
            futures::stream::iter(vec![Ok(Event::Init), Ok(Event::InitDone)]),
        )
        .await;
        assert!(v.is_synced());
        let s = v.snapshot();
        assert_eq!(
            s.revision("blue").map(|rc| rc.config.revision.as_str()),
            Some("blue")
        );
        assert!(
            s.revision("default").is_none(),
            "an unsupported version is not served"
        );
        feed_installs(
            v.clone(),
            futures::stream::iter(vec![Ok(Event::Delete(good))]),
        )
        .await;
        assert!(v.snapshot().revision("blue").is_none());
    }

    fn node(name: &str, kubelet: &str) -> NodeKubelet {
        // Decoded from a whole Node, as the API server sends it.
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {
                "nodeInfo": {"kubeletVersion": kubelet, "containerRuntimeVersion": "containerd://2.1.0"},
                "images": [{"names": ["docker.io/istio/proxyv2:1.31.1"], "sizeBytes": 1}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn the_node_watch_keeps_kubelet_versions_and_gates_readiness() {
        let v = View::new();
        v.set_namespace("apps", BTreeMap::new());
        feed_namespaces(
            v.clone(),
            futures::stream::iter(vec![Ok(Event::Init), Ok(Event::InitDone)]),
        )
        .await;
        feed_installs(
            v.clone(),
            futures::stream::iter(vec![Ok(Event::Init), Ok(Event::InitDone)]),
        )
        .await;
        assert!(!v.is_synced(), "the node watch has not listed yet");
        assert_eq!(node("a", "v1.33.4").kubelet_version(), Some("v1.33.4"));
        let nameless: NodeKubelet =
            serde_json::from_value(json!({"metadata": {"name": "bare"}})).unwrap();
        assert_eq!(nameless.kubelet_version(), None);

        let events = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(node("a", "v1.34.0"))),
            Ok(Event::InitApply(node("b", "v1.32.9"))),
            Ok(Event::InitDone),
        ];
        feed_nodes(v.clone(), futures::stream::iter(events)).await;
        assert!(v.is_synced());
        let s = v.snapshot();
        assert_eq!(s.kubelets().len(), 2);
        assert!(!s.kubelets().native_for(None), "b is too old");
        assert!(s.kubelets().native_for(Some("a")));

        let events = vec![
            Ok(Event::Apply(node("b", "v1.33.0"))),
            Ok(Event::Apply(node("c", "v1.31.2"))),
            Ok(Event::Delete(node("c", "v1.31.2"))),
        ];
        feed_nodes(v.clone(), futures::stream::iter(events)).await;
        assert!(
            v.snapshot().kubelets().native_for(None),
            "b upgraded, c gone"
        );
        assert!(
            !s.kubelets().native_for(None),
            "an older snapshot keeps its instant"
        );

        // A relist drops nodes deleted while the watch was down.
        let events = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(node("d", "v1.30.0"))),
            Ok(Event::InitDone),
        ];
        feed_nodes(v.clone(), futures::stream::iter(events)).await;
        let s = v.snapshot();
        assert_eq!(s.kubelets().len(), 1);
        assert!(!s.kubelets().native_for(Some("a")), "a is gone; d decides");
    }

    #[test]
    fn a_snapshot_keeps_its_instant_while_the_view_moves_on() {
        let v = view();
        let before = v.snapshot();
        v.remove_install("mesh");
        v.set_namespace("apps", BTreeMap::new());
        assert!(before.revision("default").is_some());
        assert_eq!(
            before.namespace_labels("apps"),
            Some(&labels(&[(keys::NAMESPACE_INJECTION, "enabled")]))
        );
        let after = v.snapshot();
        assert!(after.revision("default").is_none());
        assert_eq!(after.namespace_labels("apps"), Some(&BTreeMap::new()));
    }

    /// A revision-based MeshInstall whose status lists 1-31-1 and 1-30-5, the tags on `tagged`.
    pub(crate) fn revision_based(tagged: &str) -> MeshInstall {
        let mut mi = MeshInstall::new(
            "canary",
            serde_json::from_value(json!({"profile": "minimal", "version": "1.31",
                "updateStrategy": "RevisionBased", "upgrade": {"tags": ["prod"]}}))
            .unwrap(),
        );
        let tags = |name: &str| {
            if name == tagged {
                vec!["default".to_string(), "prod".to_string()]
            } else {
                vec![]
            }
        };
        mi.status = Some(crate::api::MeshInstallStatus {
            revisions: [("1-31-1", "1.31.1"), ("1-30-5", "1.30.5")]
                .map(|(name, version)| crate::api::RevisionStatus {
                    name: name.into(),
                    version: version.into(),
                    tags: tags(name),
                    ready: true,
                    ..Default::default()
                })
                .to_vec(),
            ..Default::default()
        });
        mi
    }

    #[tokio::test]
    async fn tags_resolve_to_the_revision_they_point_at_from_the_watched_status() {
        let v = View::new();
        let feed = |mi: MeshInstall| {
            feed_installs(v.clone(), futures::stream::iter(vec![Ok(Event::Apply(mi))]))
        };
        feed(revision_based("1-31-1")).await;
        let s = v.snapshot();
        let version = |name: &str| s.revision(name).map(|rc| rc.config.version.clone());
        assert_eq!(version("default").as_deref(), Some("1.31.1"));
        assert_eq!(version("prod").as_deref(), Some("1.31.1"));
        // A revision name pins, whatever the tags say.
        assert_eq!(version("1-30-5").as_deref(), Some("1.30.5"));
        assert_eq!(version("canary"), None, "no such tag or revision");
        assert_eq!(
            s.revision("default").unwrap().config.revision,
            "1-31-1",
            "the sidecar talks to istiod-1-31-1"
        );
        // The tag moves back (a rollback): the next snapshot follows, with no relabelling.
        feed(revision_based("1-30-5")).await;
        let s = v.snapshot();
        assert_eq!(s.revision("default").unwrap().config.version, "1.30.5");
        assert_eq!(s.revision("prod").unwrap().config.revision, "1-30-5");
    }

    #[test]
    fn the_oldest_claim_on_a_revision_wins() {
        let v = View::new();
        let at = |s: i64| Some(Timestamp::from_second(s).unwrap());
        let claim = |hub: &str, created| {
            let mut i = install("");
            i.hub = hub.into();
            RevisionConfig::new(&i, created)
        };
        v.set_revision_config("b-older", claim("older", at(100)));
        v.set_revision_config("a-younger", claim("younger", at(200)));
        let s = v.snapshot();
        assert_eq!(s.revision("default").unwrap().config.hub, "older");
        // Same age: the first by name.
        v.set_revision_config("a-younger", claim("same-age", at(100)));
        assert_eq!(
            v.snapshot().revision("default").unwrap().config.hub,
            "same-age"
        );
    }
}
