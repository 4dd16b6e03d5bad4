//! Workload migration planner (pure): which Deployments, StatefulSets and DaemonSets run pods on
//! an older revision's proxy, which of them a restart would move to the target revision, and which
//! to restart now, a bounded number at a time. No client: the reconciler takes the pods from its
//! watch ([`PodFacts`], see `controller::proxies`), lists workloads, calls [`plan`], and patches
//! what it says.
//!
//! A pod runs a revision's proxy when its `istio-proxy` container runs that release's image and
//! talks to that revision's istiod, and the injector's mark (`sidecar.istio.io/status`, with the
//! `istio.io/rev` annotation beside it) names that revision, or, for meshop's gateways, it runs
//! in the control plane's namespace with that `istio.io/rev` label ([`PodFacts::verify`]). A
//! label or annotation alone is a claim anyone can write and counts for nothing. A restart moves a
//! workload only if its pods' labels and namespace select a tag or revision that resolves to the
//! target; a workload pinned to an older revision (`istio.io/rev=<revision>`) is reported, never
//! restarted (a restart would bring it back on the same revision, forever).
//!
//! meshop restarts a workload the way `kubectl rollout restart` does, by setting the pod template
//! annotation `kubectl.kubernetes.io/restartedAt`, and also records the target revision in
//! [`RESTARTED_FOR`]: that annotation is how a later pass (or another replica after a failover)
//! knows which rollouts are meshop's and still under way, without memory of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::api::MigrationMode;
use crate::inject::{keys, names, select_revision};

/// The annotation `kubectl rollout restart` writes on the pod template.
pub(crate) const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The pod-template annotation naming the revision meshop restarted a workload for.
pub(crate) const RESTARTED_FOR: &str = "meshop.dev/restarted-for";
/// How long a StatefulSet or DaemonSet restart may take before it counts as failed (Deployments
/// have their own `progressDeadlineSeconds`, which the Deployment controller judges).
pub(crate) const ROLLOUT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);
/// At most this many workloads are named in status; the count says how many there are.
pub(crate) const LISTED: usize = 20;

/// The workload kinds meshop restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// One workload, by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.name(), self.namespace, self.name)
    }
}

/// A pod running a proxy, as the planner needs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProxyPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The revision whose proxy it runs.
    pub revision: String,
    /// The workload that owns it, if any (a ReplicaSet's pods belong to its Deployment).
    pub owner: Option<WorkloadRef>,
}

/// Where a pod carries its `istio-proxy` container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Containers,
    /// A native sidecar: an init container with `restartPolicy: Always`.
    InitContainers,
}

/// The `istio-proxy` container of a pod, as far as telling its revision goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProxyContainer {
    pub place: Place,
    pub image: Option<String>,
    /// Its `CA_ADDR`: the istiod it gets certificates (and, for sidecars, xDS) from.
    pub istiod: Option<String>,
}

/// The injector's own mark on a pod: the `sidecar.istio.io/status` annotation, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The revision it says injected the pod.
    pub revision: Option<String>,
    /// Where it says it put `istio-proxy`.
    pub proxy: Option<Place>,
}

/// What meshop keeps of a pod that carries an `istio-proxy` container: what telling whether it
/// really runs a revision's proxy ([`PodFacts::verify`]) and moving it ([`plan`]) needs, and
/// nothing of the rest of the pod, so a watch of thousands of pods stays small.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodFacts {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The workload that owns it, if any (a ReplicaSet's pods belong to its Deployment).
    pub owner: Option<WorkloadRef>,
    /// The `istio.io/rev` annotation the injector writes next to its mark.
    pub rev_annotation: Option<String>,
    pub mark: Option<Mark>,
    pub proxy: ProxyContainer,
    /// A per-pod proxy image (`sidecar.istio.io/proxyImage`), which injection honours.
    pub image_override: Option<String>,
}

/// What a revision's proxy looks like: its name, release and istiod address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RevisionProxy {
    pub name: String,
    pub version: String,
    /// `istiod-<revision>.<namespace>.svc:15012`.
    pub istiod: String,
    /// Where meshop's own gateways run: the control plane's namespace, and the namespaces of
    /// the gateways listed in other ones.
    pub namespaces: Vec<String>,
}

impl RevisionProxy {
    /// An image of this release's proxy: the tag is the version (a variant such as
    /// `-distroless` after it), whatever the registry (the hub may have changed since the pod
    /// was injected).
    fn image_matches(&self, image: &str) -> bool {
        let image = image.split('@').next().unwrap_or(image);
        let tag = image
            .rsplit_once('/')
            .map_or(image, |(_, last)| last)
            .split_once(':')
            .map(|(_, tag)| tag);
        tag.is_some_and(|t| {
            t == self.version
                || t.strip_prefix(self.version.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    }
}

impl PodFacts {
    /// Reads a pod; `None` for pods with no `istio-proxy` container (whatever their labels and
    /// annotations claim), pods being deleted and pods that finished (Succeeded or Failed: they
    /// run nothing).
    pub fn from_pod(pod: &Pod) -> Option<PodFacts> {
        let meta = &pod.metadata;
        if meta.deletion_timestamp.is_some() {
            return None;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let spec = pod.spec.as_ref()?;
        let (place, container) = match spec.containers.iter().find(|c| c.name == names::PROXY) {
            Some(c) => (Place::Containers, c),
            None => (
                Place::InitContainers,
                spec.init_containers.iter().flatten().find(|c| {
                    c.name == names::PROXY && c.restart_policy.as_deref() == Some("Always")
                })?,
            ),
        };
        let proxy = ProxyContainer {
            place,
            image: container.image.clone(),
            istiod: container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "CA_ADDR")
                .and_then(|e| e.value.clone()),
        };
        let labels = meta.labels.clone().unwrap_or_default();
        let annotations = meta.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        let mark = annotation(keys::STATUS).map(|text| parse_mark(&text));
        let namespace = meta.namespace.clone().unwrap_or_default();
        let owner = owner(meta, &labels, &namespace);
        Some(PodFacts {
            namespace,
            labels,
            owner,
            rev_annotation: annotation(keys::REV),
            mark,
            proxy,
            image_override: annotation(keys::PROXY_IMAGE),
        })
    }

    /// The revision among `revisions` whose proxy this pod really runs, if any: its
    /// `istio-proxy` container runs that release's image (or the per-pod image injection was
    /// asked for) and gets its certificates from that revision's istiod, and either
    ///
    /// - the injector's mark names the revision and the place of the container, and the
    ///   `istio.io/rev` annotation beside it agrees (a sidecar), or
    /// - it is a pod in the control plane's namespace, or a listed gateway's, labelled with the
    ///   revision (meshop's own gateways, which carry no mark).
    ///
    /// A label or an annotation alone is a claim anyone can write, and keeps no revision alive.
    pub fn verify(&self, revisions: &[RevisionProxy]) -> Option<ProxyPod> {
        let image = self.proxy.image.as_deref()?;
        let r = revisions
            .iter()
            .find(|r| self.proxy.istiod.as_deref() == Some(r.istiod.as_str()))?;
        let revision = crate::revision::name(&r.name);
        let sidecar = self.mark.as_ref().is_some_and(|m| {
            m.revision.as_deref() == Some(revision)
                && m.proxy == Some(self.proxy.place)
                && self.rev_annotation.as_deref() == Some(revision)
        });
        let own_image = sidecar && self.image_override.as_deref() == Some(image);
        let gateway = self.mark.is_none()
            && r.namespaces.contains(&self.namespace)
            && self.labels.get(keys::REV).map(String::as_str) == Some(revision);
        ((sidecar || gateway) && (r.image_matches(image) || own_image)).then(|| ProxyPod {
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            revision: r.name.clone(),
            owner: self.owner.clone(),
        })
    }
}

/// The injector's status annotation: `{"containers": [...], "initContainers": [...],
/// "revision": "..."}`. Text that does not parse is a mark that names nothing.
fn parse_mark(text: &str) -> Mark {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Status {
        containers: Option<Vec<String>>,
        init_containers: Option<Vec<String>>,
        revision: Option<String>,
    }
    let status: Status = serde_json::from_str(text).unwrap_or_default();
    let has = |list: &Option<Vec<String>>| list.iter().flatten().any(|n| n == names::PROXY);
    let proxy = if has(&status.containers) {
        Some(Place::Containers)
    } else if has(&status.init_containers) {
        Some(Place::InitContainers)
    } else {
        None
    };
    Mark {
        revision: status.revision,
        proxy,
    }
}

/// The workload that controls a pod, from its owner reference.
fn owner(
    meta: &ObjectMeta,
    labels: &BTreeMap<String, String>,
    namespace: &str,
) -> Option<WorkloadRef> {
    let o = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?;
    let kind = match o.kind.as_str() {
        // A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
        "ReplicaSet" => {
            let hash = labels.get("pod-template-hash")?;
            let name = o.name.strip_suffix(&format!("-{hash}"))?;
            return Some(WorkloadRef {
                kind: WorkloadKind::Deployment,
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        "StatefulSet" => WorkloadKind::StatefulSet,
        "DaemonSet" => WorkloadKind::DaemonSet,
        _ => return None,
    };
    Some(WorkloadRef {
        kind,
        namespace: namespace.to_string(),
        name: o.name.clone(),
    })
}

/// Where a workload's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rollout {
    Complete,
    Progressing,
    Failed(String),
}

/// A workload as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Workload {
    pub id: WorkloadRef,
    /// The revision meshop last restarted it for ([`RESTARTED_FOR`]).
    pub restarted_for: Option<String>,
    pub rollout: Rollout,
}

fn template_annotation(meta: Option<&ObjectMeta>, key: &str) -> Option<String> {
    meta?.annotations.as_ref()?.get(key).cloned()
}

fn restarted_long_ago(meta: Option<&ObjectMeta>, now: Timestamp) -> bool {
    let Some(at) =
        template_annotation(meta, RESTARTED_AT).and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return false;
    };
    let deadline = k8s_openapi::jiff::SignedDuration::try_from(ROLLOUT_DEADLINE)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    at.checked_add(deadline).is_ok_and(|d| now >= d)
}

fn id(kind: WorkloadKind, meta: &ObjectMeta) -> WorkloadRef {
    WorkloadRef {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

impl Workload {
    /// A Deployment: complete once every replica runs the current template and is available;
    /// failed when the Deployment controller says its progress deadline passed.
    pub fn from_deployment(d: &Deployment) -> Workload {
        let spec = d.spec.as_ref();
        let template = spec.and_then(|s| s.template.metadata.as_ref());
        let want = spec.and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let observed =
            status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let complete = observed
            && status.updated_replicas.unwrap_or(0) >= want
            && status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
            && status.available_replicas.unwrap_or(0) >= want;
        let failed = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing" && c.status == "False");
        let rollout = match (complete, failed) {
            (true, _) => Rollout::Complete,
            (false, Some(c)) => Rollout::Failed(
                c.message
                    .clone()
                    .or_else(|| c.reason.clone())
                    .unwrap_or_else(|| "rollout failed".into()),
            ),
            (false, None) => Rollout::Progressing,
        };
        Workload {
            id: id(WorkloadKind::Deployment, &d.metadata),
            restarted_for: template_annotation(template, RESTARTED_FOR),
            rollout,
        }
    }

    /// A StatefulSet: complete once the update revision is current and every replica is ready;
    /// failed after [`ROLLOUT_DEADLINE`] since meshop restarted it.
    pub fn from_stateful_set(s: &StatefulSet, now: Timestamp) -> Workload {
        let spec = s.spec.as_ref();
        let template = spec.and_then(|s| s.template.metadata.as_ref());
        let want = spec.and_then(|s| s.replicas).unwrap_or(1);
        let status = s.status.clone().unwrap_or_default();
        let observed =
            status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
        let complete = observed
            && status.update_revision.is_some()
            && status.update_revision == status.current_revision
            && status.ready_replicas.unwrap_or(0) >= want;
        Workload {
            id: id(WorkloadKind::StatefulSet, &s.metadata),
            restarted_for: template_annotation(template, RESTARTED_FOR),
            rollout: slow_rollout(complete, template, now),
        }
    }

    /// A DaemonSet: complete once every scheduled node runs the current template, available;
    /// failed after [`ROLLOUT_DEADLINE`] since meshop restarted it.
    pub fn from_daemon_set(d: &DaemonSet, now: Timestamp) -> Workload {
        let template = d.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
        let status = d.status.clone().unwrap_or_default();
        let observed =
            status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let want = status.desired_number_scheduled;
        let complete = observed
            && status.updated_number_scheduled.unwrap_or(0) >= want
            && status.number_available.unwrap_or(0) >= want;
        Workload {
            id: id(WorkloadKind::DaemonSet, &d.metadata),
            restarted_for: template_annotation(template, RESTARTED_FOR),
            rollout: slow_rollout(complete, template, now),
        }
    }
}

fn slow_rollout(complete: bool, template: Option<&ObjectMeta>, now: Timestamp) -> Rollout {
    if complete {
        Rollout::Complete
    } else if restarted_long_ago(template, now) {
        Rollout::Failed(format!(
            "not rolled out {} s after the restart",
            ROLLOUT_DEADLINE.as_secs()
        ))
    } else {
        Rollout::Progressing
    }
}

/// Proxies on one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub pods: usize,
    pub workloads: usize,
}

/// What the planner decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MigrationPlan {
    /// Per revision of this install: the proxies on it.
    pub usage: BTreeMap<String, Usage>,
    /// Workloads on an older revision that a restart would move to the target, not yet
    /// restarted for it (the ones restarted this pass included).
    pub pending: Vec<WorkloadRef>,
    /// Restart these now (Rollout mode only; never more than the bound allows).
    pub restart: Vec<WorkloadRef>,
    /// Restarted for the target, rollout under way.
    pub restarting: Vec<WorkloadRef>,
    /// Restarted for the target, rollout failed: the migration stops here.
    pub failed: Option<(WorkloadRef, String)>,
    /// Restarted for the target and rolled out, yet pods still run an older revision.
    pub unmoved: Vec<WorkloadRef>,
    /// Proxies on an older revision that no restart would move: pinned to it by label, or not
    /// owned by a workload.
    pub pinned_pods: usize,
}

/// The inputs of [`plan`].
pub(crate) struct Inputs<'a> {
    /// The revision workloads move to.
    pub target: &'a str,
    /// This install's revisions; pods on other revisions belong to other MeshInstalls.
    pub revisions: &'a BTreeSet<String>,
    /// What a tag or revision name a pod's labels select resolves to (`None`: not this
    /// install's). Tags resolve to the revision they point at.
    pub resolve: &'a dyn Fn(&str) -> Option<String>,
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// Namespaces whose pods are never moved by restarting (the control plane's: gateways are
    /// moved by rendering them at the new revision).
    pub skip_namespaces: &'a BTreeSet<String>,
    pub pods: &'a [ProxyPod],
    pub workloads: &'a BTreeMap<WorkloadRef, Workload>,
    pub mode: MigrationMode,
    pub max_concurrent: usize,
}

/// Decides the migration step of one pass.
pub(crate) fn plan(inputs: &Inputs<'_>) -> MigrationPlan {
    let mut out = MigrationPlan::default();
    let mut per_revision: BTreeMap<&str, BTreeSet<&WorkloadRef>> = BTreeMap::new();
    let mut candidates: BTreeSet<&WorkloadRef> = BTreeSet::new();
    for revision in inputs.revisions {
        out.usage.insert(revision.clone(), Usage::default());
    }
    let empty = BTreeMap::new();
    for pod in inputs.pods {
        let Some(usage) = out.usage.get_mut(&pod.revision) else {
            continue;
        };
        usage.pods += 1;
        if let Some(owner) = &pod.owner {
            per_revision.entry(&pod.revision).or_default().insert(owner);
        }
        if pod.revision == inputs.target || inputs.skip_namespaces.contains(&pod.namespace) {
            continue;
        }
        let ns_labels = inputs
            .namespace_labels
            .get(&pod.namespace)
            .unwrap_or(&empty);
        let as_pod = Pod {
            metadata: ObjectMeta {
                labels: Some(pod.labels.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let moves = select_revision(ns_labels, &as_pod)
            .and_then(|name| (inputs.resolve)(name))
            .is_some_and(|r| r == inputs.target);
        match (&pod.owner, moves) {
            (Some(owner), true) => {
                candidates.insert(owner);
            }
            _ => out.pinned_pods += 1,
        }
    }
    for (revision, workloads) in per_revision {
        if let Some(usage) = out.usage.get_mut(revision) {
            usage.workloads = workloads.len();
        }
    }

    // Rollouts meshop started for the target: under way, failed, or done.
    for w in inputs.workloads.values() {
        if w.restarted_for.as_deref() != Some(inputs.target) {
            continue;
        }
        match &w.rollout {
            Rollout::Progressing => out.restarting.push(w.id.clone()),
            Rollout::Failed(why) if out.failed.is_none() => {
                out.failed = Some((w.id.clone(), why.clone()))
            }
            Rollout::Failed(_) => out.restarting.push(w.id.clone()),
            Rollout::Complete => {}
        }
    }
    for c in candidates {
        match inputs.workloads.get(c) {
            // Gone since the pods were listed.
            None => {}
            // Restarted for the target and done, yet its pods still run an older revision.
            Some(w)
                if w.restarted_for.as_deref() == Some(inputs.target)
                    && w.rollout == Rollout::Complete =>
            {
                out.unmoved.push(c.clone())
            }
            // Restarted for the target, rolling out (counted above).
            Some(w) if w.restarted_for.as_deref() == Some(inputs.target) => {}
            Some(_) => out.pending.push(c.clone()),
        }
    }
    if inputs.mode == MigrationMode::Rollout && out.failed.is_none() {
        let busy = out.restarting.len();
        let free = inputs.max_concurrent.saturating_sub(busy);
        out.restart = out.pending.iter().take(free).cloned().collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, labels: &[(&str, &str)], revision: &str, owner: Option<&str>) -> ProxyPod {
        ProxyPod {
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            revision: revision.into(),
            owner: owner.map(|name| deploy(ns, name)),
        }
    }

    fn deploy(ns: &str, name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn workload(ns: &str, name: &str, restarted_for: Option<&str>, rollout: Rollout) -> Workload {
        Workload {
            id: deploy(ns, name),
            restarted_for: restarted_for.map(Into::into),
            rollout,
        }
    }

    struct Cluster {
        namespaces: BTreeMap<String, BTreeMap<String, String>>,
        pods: Vec<ProxyPod>,
        workloads: BTreeMap<WorkloadRef, Workload>,
    }

    /// Namespace `apps` follows the default tag, `pinned` pins revision old, `other` follows
    /// another MeshInstall's revision; deployments a..d in apps on old, e in pinned.
    fn cluster() -> Cluster {
        let ns = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let namespaces = BTreeMap::from([
            ("apps".to_string(), ns(&[("istio-injection", "enabled")])),
            ("pinned".to_string(), ns(&[("istio.io/rev", "old")])),
            ("other".to_string(), ns(&[("istio.io/rev", "theirs")])),
        ]);
        let mut pods = Vec::new();
        let mut workloads = BTreeMap::new();
        for name in ["a", "b", "c", "d"] {
            pods.push(pod("apps", &[], "old", Some(name)));
            pods.push(pod("apps", &[], "old", Some(name)));
            workloads.insert(
                deploy("apps", name),
                workload("apps", name, None, Rollout::Complete),
            );
        }
        pods.push(pod("pinned", &[], "old", Some("e")));
        workloads.insert(
            deploy("pinned", "e"),
            workload("pinned", "e", None, Rollout::Complete),
        );
        pods.push(pod("other", &[], "theirs", Some("f")));
        pods.push(pod(
            "istio-system",
            &[],
            "old",
            Some("istio-ingressgateway"),
        ));
        // A bare pod (no workload) following the tag: nothing to restart.
        pods.push(pod("apps", &[], "old", None));
        pods.push(pod("apps", &[], "new", Some("z")));
        Cluster {
            namespaces,
            pods,
            workloads,
        }
    }

    fn run(c: &Cluster, mode: MigrationMode, max: usize) -> MigrationPlan {
        let revisions = BTreeSet::from(["old".to_string(), "new".to_string()]);
        let resolve = |name: &str| match name {
            "default" | "new" => Some("new".to_string()),
            "old" => Some("old".to_string()),
            _ => None,
        };
        plan(&Inputs {
            target: "new",
            revisions: &revisions,
            resolve: &resolve,
            namespace_labels: &c.namespaces,
            skip_namespaces: &BTreeSet::from(["istio-system".to_string()]),
            pods: &c.pods,
            workloads: &c.workloads,
            mode,
            max_concurrent: max,
        })
    }

    #[test]
    fn usage_counts_proxies_and_workloads_of_this_install_only() {
        let p = run(&cluster(), MigrationMode::Manual, 1);
        assert_eq!(p.usage.len(), 2, "theirs is another install's");
        assert_eq!(
            p.usage["old"],
            Usage {
                pods: 11,
                workloads: 6
            }
        );
        assert_eq!(
            p.usage["new"],
            Usage {
                pods: 1,
                workloads: 1
            }
        );
    }

    #[test]
    fn manual_mode_reports_and_restarts_nothing() {
        let p = run(&cluster(), MigrationMode::Manual, 5);
        assert_eq!(
            p.pending,
            ["a", "b", "c", "d"].map(|n| deploy("apps", n)).to_vec()
        );
        assert!(p.restart.is_empty());
        // e is pinned to old, the bare pod has no workload: no restart moves them.
        assert_eq!(p.pinned_pods, 2);
    }

    #[test]
    fn rollout_restarts_at_most_the_bound_counting_rollouts_under_way() {
        let mut c = cluster();
        assert_eq!(
            run(&c, MigrationMode::Rollout, 2).restart,
            vec![deploy("apps", "a"), deploy("apps", "b")]
        );
        // a restarted and still rolling out: one slot left for the next.
        c.workloads.insert(
            deploy("apps", "a"),
            workload("apps", "a", Some("new"), Rollout::Progressing),
        );
        let p = run(&c, MigrationMode::Rollout, 2);
        assert_eq!(p.restarting, vec![deploy("apps", "a")]);
        assert_eq!(p.restart, vec![deploy("apps", "b")]);
        assert!(!p.pending.contains(&deploy("apps", "a")));
        // A rollout under way whose old pods are already gone still takes its slot.
        c.pods.retain(|p| p.owner != Some(deploy("apps", "a")));
        let p = run(&c, MigrationMode::Rollout, 1);
        assert_eq!(p.restarting, vec![deploy("apps", "a")]);
        assert!(p.restart.is_empty());
        // A restart made for another (earlier) target does not count.
        c.workloads.insert(
            deploy("apps", "a"),
            workload("apps", "a", Some("older"), Rollout::Progressing),
        );
        assert_eq!(
            run(&c, MigrationMode::Rollout, 1).restart,
            vec![deploy("apps", "b")]
        );
    }

    #[test]
    fn a_failed_rollout_stops_the_migration_until_it_completes() {
        let mut c = cluster();
        c.workloads.insert(
            deploy("apps", "b"),
            workload(
                "apps",
                "b",
                Some("new"),
                Rollout::Failed("deadline exceeded".into()),
            ),
        );
        let p = run(&c, MigrationMode::Rollout, 3);
        assert_eq!(
            p.failed,
            Some((deploy("apps", "b"), "deadline exceeded".into()))
        );
        assert!(
            p.restart.is_empty(),
            "nothing more restarts while one fails"
        );
        // Fixed: its rollout completes and the next ones start.
        c.workloads.insert(
            deploy("apps", "b"),
            workload("apps", "b", Some("new"), Rollout::Complete),
        );
        c.pods.retain(|p| p.owner != Some(deploy("apps", "b")));
        let p = run(&c, MigrationMode::Rollout, 3);
        assert_eq!(p.failed, None);
        assert_eq!(
            p.restart,
            vec![
                deploy("apps", "a"),
                deploy("apps", "c"),
                deploy("apps", "d")
            ]
        );
    }

    #[test]
    fn a_finished_restart_that_left_old_pods_is_not_restarted_again() {
        let mut c = cluster();
        c.workloads.insert(
            deploy("apps", "a"),
            workload("apps", "a", Some("new"), Rollout::Complete),
        );
        let p = run(&c, MigrationMode::Rollout, 4);
        assert_eq!(p.unmoved, vec![deploy("apps", "a")]);
        assert!(!p.restart.contains(&deploy("apps", "a")));
    }

    fn revisions() -> Vec<RevisionProxy> {
        ["1-30-5", "1-31-1"]
            .iter()
            .map(|name| RevisionProxy {
                name: name.to_string(),
                version: name.replace('-', "."),
                istiod: format!("istiod-{name}.istio-system.svc:15012"),
                namespaces: vec!["istio-system".into(), "edge".into()],
            })
            .collect()
    }

    /// A pod as the injector leaves it on revision `rev`: its mark, the annotation beside it,
    /// and istio-proxy with the release's image and that revision's istiod.
    fn injected(rev: &str) -> serde_json::Value {
        json!({
            "metadata": {
                "namespace": "apps",
                "labels": {"app": "web", "pod-template-hash": "5d9f",
                    "service.istio.io/canonical-revision": "latest"},
                "annotations": {
                    "sidecar.istio.io/status": format!(
                        r#"{{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"{rev}"}}"#
                    ),
                    "istio.io/rev": rev
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "u", "controller": true}]
            },
            "spec": {"containers": [
                {"name": "web", "image": "example.com/web:1"},
                {"name": "istio-proxy", "image": format!("docker.io/istio/proxyv2:{}", rev.replace('-', ".")),
                    "env": [{"name": "CA_ADDR", "value": format!("istiod-{rev}.istio-system.svc:15012")}]}
            ]}
        })
    }

    fn verify(pod: serde_json::Value) -> Option<String> {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        PodFacts::from_pod(&pod)?
            .verify(&revisions())
            .map(|p| p.revision)
    }

    #[test]
    fn an_injected_pod_runs_its_revision_and_names_its_workload() {
        let pod: Pod = serde_json::from_value(injected("1-30-5")).unwrap();
        let p = PodFacts::from_pod(&pod)
            .unwrap()
            .verify(&revisions())
            .unwrap();
        assert_eq!(p.revision, "1-30-5");
        assert_eq!(p.owner, Some(deploy("apps", "web")));
        // A native sidecar: istio-proxy among the init containers, restartPolicy Always.
        let mut native = injected("1-31-1");
        let proxy = native["spec"]["containers"][1].take();
        native["spec"]["containers"] = json!([{"name": "web", "image": "example.com/web:1"}]);
        let mut proxy = proxy;
        proxy["restartPolicy"] = json!("Always");
        native["spec"]["initContainers"] = json!([proxy]);
        native["metadata"]["annotations"]["sidecar.istio.io/status"] =
            json!(r#"{"initContainers":["istio-proxy"],"containers":[],"revision":"1-31-1"}"#);
        assert_eq!(verify(native.clone()).as_deref(), Some("1-31-1"));
        // ... but an ordinary init container that has finished runs nothing.
        native["spec"]["initContainers"][0]["restartPolicy"] = serde_json::Value::Null;
        assert_eq!(verify(native), None);
        // The hub changed since injection: the release is what counts.
        let mut moved = injected("1-30-5");
        moved["spec"]["containers"][1]["image"] =
            json!("mirror.local/istio/proxyv2:1.30.5-distroless");
        assert_eq!(verify(moved).as_deref(), Some("1-30-5"));
        // A per-pod image injection was asked for.
        let mut own = injected("1-30-5");
        own["metadata"]["annotations"]["sidecar.istio.io/proxyImage"] =
            json!("registry.local/proxy:dev");
        own["spec"]["containers"][1]["image"] = json!("registry.local/proxy:dev");
        assert_eq!(verify(own).as_deref(), Some("1-30-5"));
    }

    #[test]
    fn a_claim_without_a_real_proxy_counts_for_nothing() {
        // The label alone (the old rule counted it).
        let label = json!({"metadata": {"namespace": "apps", "labels": {"istio.io/rev": "1-30-5"}},
            "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}});
        assert_eq!(verify(label), None);
        // A hand-written mark and annotation, no istio-proxy container.
        let mut written = injected("1-30-5");
        written["spec"]["containers"] = json!([{"name": "web", "image": "example.com/web:1"}]);
        assert_eq!(verify(written), None);
        // A container named istio-proxy that is not the revision's proxy.
        let mut fake = injected("1-30-5");
        fake["spec"]["containers"][1]["image"] = json!("busybox:1.36");
        assert_eq!(verify(fake), None);
        // The proxy of another istiod (another MeshInstall's revision of the same name).
        let mut elsewhere = injected("1-30-5");
        elsewhere["spec"]["containers"][1]["env"][0]["value"] =
            json!("istiod-1-30-5.other.svc:15012");
        assert_eq!(verify(elsewhere), None);
        // A mark that disagrees with the pod: another revision, the container elsewhere, the
        // annotation beside it changed, or no mark and not a gateway.
        let mut other = injected("1-30-5");
        other["metadata"]["annotations"]["istio.io/rev"] = json!("1-31-1");
        assert_eq!(verify(other), None);
        let mut misplaced = injected("1-30-5");
        misplaced["metadata"]["annotations"]["sidecar.istio.io/status"] =
            json!(r#"{"initContainers":["istio-proxy"],"revision":"1-30-5"}"#);
        assert_eq!(verify(misplaced), None);
        let mut garbled = injected("1-30-5");
        garbled["metadata"]["annotations"]["sidecar.istio.io/status"] = json!("{not json");
        assert_eq!(verify(garbled), None);
        let mut unmarked = injected("1-30-5");
        unmarked["metadata"]["annotations"] = json!({});
        unmarked["metadata"]["labels"]["istio.io/rev"] = json!("1-30-5");
        assert_eq!(
            verify(unmarked),
            None,
            "outside the control plane's namespace"
        );
        // A per-pod image without the mark is no proof either.
        let mut own = injected("1-30-5");
        own["metadata"]["annotations"] = json!({"sidecar.istio.io/proxyImage": "busybox:1.36"});
        own["spec"]["containers"][1]["image"] = json!("busybox:1.36");
        assert_eq!(verify(own), None);
    }

    #[test]
    fn gateways_run_the_revision_they_are_labelled_with_in_the_namespaces_of_the_meshs_gateways() {
        let gateway = |ns: &str, rev: &str, image: &str| {
            json!({"metadata": {"namespace": ns,
                "labels": {"istio.io/rev": rev, "app": "istio-ingressgateway"}},
                "spec": {"containers": [{"name": "istio-proxy", "image": image,
                    "env": [{"name": "CA_ADDR", "value": format!("istiod-{rev}.istio-system.svc:15012")}]}]}})
        };
        assert_eq!(
            verify(gateway(
                "istio-system",
                "1-31-1",
                "docker.io/istio/proxyv2:1.31.1"
            ))
            .as_deref(),
            Some("1-31-1")
        );
        assert_eq!(
            verify(gateway(
                "istio-system",
                "1-31-1",
                "docker.io/istio/proxyv2:1.30.5"
            )),
            None
        );
        // A gateway listed in another namespace ("edge" is one in `revisions()`) counts too;
        // the same pod in a namespace no gateway of the mesh runs in does not.
        assert_eq!(
            verify(gateway("edge", "1-31-1", "docker.io/istio/proxyv2:1.31.1")).as_deref(),
            Some("1-31-1")
        );
        assert_eq!(
            verify(gateway("apps", "1-31-1", "docker.io/istio/proxyv2:1.31.1")),
            None
        );
        // istiod carries the revision label too, and runs no proxy.
        let istiod = json!({"metadata": {"namespace": "istio-system",
            "labels": {"istio.io/rev": "1-31-1", "app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.31.1"}]}});
        assert_eq!(verify(istiod), None);
    }

    #[test]
    fn pods_that_are_leaving_or_finished_run_nothing() {
        let mut leaving = injected("1-30-5");
        leaving["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(verify(leaving), None);
        for phase in ["Succeeded", "Failed"] {
            let mut done = injected("1-30-5");
            done["status"] = json!({"phase": phase});
            assert_eq!(verify(done), None, "{phase}");
        }
        let mut running = injected("1-30-5");
        running["status"] = json!({"phase": "Running"});
        assert_eq!(verify(running).as_deref(), Some("1-30-5"));
        let mut sts = injected("1-30-5");
        sts["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "pg", "uid": "u", "controller": true}]);
        let pod: Pod = serde_json::from_value(sts).unwrap();
        let owner = PodFacts::from_pod(&pod).unwrap().owner.unwrap();
        assert_eq!(owner.to_string(), "StatefulSet/apps/pg");
    }

    #[test]
    fn rollouts_are_judged_from_workload_status() {
        let d = |status: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "apps", "generation": 2},
                "spec": {"replicas": 2, "selector": {}, "template": {"metadata": {"annotations": {RESTARTED_FOR: "new"}}}},
                "status": status
            }))
            .unwrap()
        };
        let done = Workload::from_deployment(&d(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        ));
        assert_eq!(done.rollout, Rollout::Complete);
        assert_eq!(done.restarted_for.as_deref(), Some("new"));
        let rolling = Workload::from_deployment(&d(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
        ));
        assert_eq!(rolling.rollout, Rollout::Progressing);
        let stuck = Workload::from_deployment(&d(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-1\" has timed out progressing."}]}),
        ));
        assert_eq!(
            stuck.rollout,
            Rollout::Failed("ReplicaSet \"web-1\" has timed out progressing.".into())
        );
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "pg", "namespace": "db", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "serviceName": "pg", "template": {"metadata": {"annotations": {RESTARTED_AT: "1970-01-01T00:00:00Z"}}}},
            "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "currentRevision": "a", "updateRevision": "b"}
        }))
        .unwrap();
        assert_eq!(
            Workload::from_stateful_set(&sts, t(599)).rollout,
            Rollout::Progressing
        );
        assert!(matches!(
            Workload::from_stateful_set(&sts, t(600)).rollout,
            Rollout::Failed(_)
        ));
    }
}
