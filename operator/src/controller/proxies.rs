//! The pods that may run a proxy, watched (I/O around the pure [`migrate::PodFacts`]).
//!
//! A revision-based install needs to know which pods run each revision's proxy: to retire an
//! older revision no pod uses, and to report and move workloads. Listing every pod in the cluster
//! on a timer costs the API server a paged list of every pod, every few seconds, for as long as
//! a migration lasts (weeks, in Manual mode). Instead one watch, started by the first
//! revision-based pass, follows the pods carrying [`SELECTOR`] (the label the injector sets on
//! every pod it injects, and meshop's gateways carry) and keeps of each only its [`PodFacts`].
//! A change in those facts (a proxy arrives, leaves, or changes) triggers a pass of every
//! MeshInstall that runs more than one revision, at most once per [`TRIGGER_GAP`]; pod status
//! churn (readiness, a kubelet heartbeat) changes no fact and triggers nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::migrate::{PodFacts, ProxyPod, RevisionProxy};
use crate::api::{MeshInstall, UpdateStrategy};
use crate::inject::keys;

/// The label selector of the watch: every injected pod and every meshop gateway carries it.
pub(crate) const SELECTOR: &str = keys::CANONICAL_REVISION;
/// At most one round of pod-triggered passes per this long; changes in between are folded into
/// the next round.
pub(crate) const TRIGGER_GAP: Duration = Duration::from_secs(5);

/// What the watch holds: every selected pod that has an `istio-proxy` container, by uid.
#[derive(Default, Debug)]
pub(crate) struct State {
    /// The watch has listed every selected pod at least once.
    pub synced: bool,
    pub pods: HashMap<String, PodFacts>,
    /// Pods listed since the watch (re)started, not yet complete: a relist replaces `pods` only
    /// once it is whole, so a pass never counts half a cluster.
    relisting: Option<HashMap<String, PodFacts>>,
}

fn key(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()))
}

impl State {
    /// Takes one watch event; true when what the state says changed.
    pub fn apply(&mut self, event: watcher::Event<Pod>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(pod) => {
                if let (Some(relist), Some(facts)) = (&mut self.relisting, PodFacts::from_pod(&pod))
                {
                    relist.insert(key(&pod), facts);
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let changed = !self.synced || listed != self.pods;
                self.pods = listed;
                self.synced = true;
                changed
            }
            watcher::Event::Apply(pod) => match PodFacts::from_pod(&pod) {
                Some(facts) => {
                    let k = key(&pod);
                    if self.pods.get(&k) == Some(&facts) {
                        false
                    } else {
                        self.pods.insert(k, facts);
                        true
                    }
                }
                None => self.pods.remove(&key(&pod)).is_some(),
            },
            watcher::Event::Delete(pod) => self.pods.remove(&key(&pod)).is_some(),
        }
    }
}

/// The watched proxies, shared by every pass.
#[derive(Clone)]
pub(crate) struct ProxyPods {
    state: Arc<RwLock<State>>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl ProxyPods {
    /// Starts the watch, and a task that, when what it holds changes, asks for a pass of every
    /// MeshInstall in `meshes` that runs more than one revision.
    pub fn spawn(
        client: Client,
        meshes: Store<MeshInstall>,
        trigger: futures::channel::mpsc::Sender<ObjectRef<MeshInstall>>,
    ) -> ProxyPods {
        let state = Arc::new(RwLock::new(State::default()));
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let changed = Arc::new(Notify::new());
        let api: Api<Pod> = Api::all(client);
        let config = watcher::Config::default().labels(SELECTOR);
        let watched = state.clone();
        let notify = changed.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(event) => {
                        let (changed, synced) = {
                            let mut s = watched.write().unwrap_or_else(|e| e.into_inner());
                            (s.apply(event), s.synced)
                        };
                        if synced {
                            synced_tx.send_replace(true);
                        }
                        if changed && synced {
                            notify.notify_one();
                        }
                    }
                    Err(e) => warn!(error = %e, "watching proxy pods"),
                }
            }
        });
        tokio::spawn(async move {
            let mut trigger = trigger;
            loop {
                changed.notified().await;
                for mi in meshes.state() {
                    if runs_several_revisions(&mi) {
                        debug!(meshinstall = %mi.name_any(), "proxies changed");
                        if trigger
                            .send(ObjectRef::from_obj(mi.as_ref()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                tokio::time::sleep(TRIGGER_GAP).await;
            }
        });
        ProxyPods { state, synced }
    }

    /// The pods that really run one of `revisions`' proxies, once the watch has listed them all;
    /// `None` if it has not within `wait`.
    pub async fn verified(
        &self,
        revisions: &[RevisionProxy],
        wait: Duration,
    ) -> Option<Vec<ProxyPod>> {
        let mut synced = self.synced.clone();
        tokio::time::timeout(wait, synced.wait_for(|s| *s))
            .await
            .ok()?
            .ok()?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Some(
            state
                .pods
                .values()
                .filter_map(|f| f.verify(revisions))
                .collect(),
        )
    }
}

/// A MeshInstall whose proxies matter to its passes: a revision-based one running more than one
/// revision (retirement waits for pods to leave; status counts them).
fn runs_several_revisions(mi: &MeshInstall) -> bool {
    mi.spec.update_strategy == UpdateStrategy::RevisionBased
        && mi.status.as_ref().is_some_and(|s| s.revisions.len() > 1)
        && mi.metadata.deletion_timestamp.is_none()
}

/// The pods that really run one of `revisions`' proxies, listed once (paged, so memory stays
/// bounded) with the watch's selector and the watch's rule ([`PodFacts::verify`]): what
/// `meshop diff -f` counts, where no watch runs.
pub(crate) async fn list_verified(
    client: &Client,
    revisions: &[RevisionProxy],
) -> Result<Vec<ProxyPod>, kube::Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut params = kube::api::ListParams::default().labels(SELECTOR).limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(
            page.items
                .iter()
                .filter_map(PodFacts::from_pod)
                .filter_map(|f| f.verify(revisions)),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, image: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "apps", "uid": uid,
                "annotations": {"sidecar.istio.io/status": r#"{"containers":["istio-proxy"],"revision":"r"}"#,
                    "istio.io/rev": "r"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": image}]}
        }))
        .unwrap()
    }

    fn with_status(mut p: Pod, phase: &str) -> Pod {
        p.status =
            Some(serde_json::from_value(json!({"phase": phase, "podIP": "10.0.0.1"})).unwrap());
        p
    }

    #[test]
    fn only_a_change_in_what_is_kept_counts() {
        let mut s = State::default();
        assert!(!s.apply(watcher::Event::Init));
        assert!(!s.apply(watcher::Event::InitApply(pod("a", "p:1"))));
        assert!(!s.synced, "not listed to the end yet");
        assert!(s.apply(watcher::Event::InitDone), "the first list");
        assert!(s.synced);
        assert_eq!(s.pods.len(), 1);
        // Status churn (running, an IP) changes nothing kept.
        assert!(!s.apply(watcher::Event::Apply(with_status(
            pod("a", "p:1"),
            "Running"
        ))));
        // A new proxy, a changed one, a finished one, a deleted one: changes.
        assert!(s.apply(watcher::Event::Apply(pod("b", "p:1"))));
        assert!(s.apply(watcher::Event::Apply(pod("b", "p:2"))));
        assert!(s.apply(watcher::Event::Apply(with_status(
            pod("b", "p:2"),
            "Succeeded"
        ))));
        assert_eq!(s.pods.len(), 1);
        assert!(
            !s.apply(watcher::Event::Delete(pod("b", "p:2"))),
            "already gone"
        );
        assert!(s.apply(watcher::Event::Delete(pod("a", "p:1"))));
        assert!(s.pods.is_empty());
        // A pod without istio-proxy is not kept, whatever it claims.
        let mut bare = pod("c", "p:1");
        bare.spec.as_mut().unwrap().containers[0].name = "app".into();
        assert!(!s.apply(watcher::Event::Apply(bare)));
    }

    #[test]
    fn a_relist_replaces_the_pods_only_once_it_is_whole() {
        let mut s = State::default();
        s.apply(watcher::Event::Init);
        s.apply(watcher::Event::InitApply(pod("a", "p:1")));
        s.apply(watcher::Event::InitApply(pod("b", "p:1")));
        s.apply(watcher::Event::InitDone);
        // The watch restarts: until the relist is done, the pods listed before still count.
        s.apply(watcher::Event::Init);
        s.apply(watcher::Event::InitApply(pod("a", "p:1")));
        assert_eq!(s.pods.len(), 2);
        assert!(s.synced);
        // b left while the watch was down: the finished relist drops it, a change.
        assert!(s.apply(watcher::Event::InitDone));
        assert_eq!(s.pods.len(), 1);
        // A relist that finds what was there changes nothing.
        s.apply(watcher::Event::Init);
        s.apply(watcher::Event::InitApply(pod("a", "p:1")));
        assert!(!s.apply(watcher::Event::InitDone));
    }
}
