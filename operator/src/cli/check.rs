//! `meshop check`: numbered checks in two groups, `pre` (can meshop be installed here, and what is
//! in its way) and `post` (is the installed mesh healthy). Each check is a pure function of a
//! [`Snapshot`] gathered once, so every pass and failure is unit-tested without a cluster; a
//! failure says what is wrong and what to do, and makes the command exit non-zero. Warnings
//! (something to know, nothing broken) do not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use super::Outcome;
use super::cluster::{ClusterArgs, Output};
use super::snapshot::{self, InjectionProbe, Scope, Snapshot};
use crate::api::WebhookState;
use crate::controller::status::{KStatus, kstatus};
use crate::render::{LABEL_MANAGED_BY, MANAGED_BY};
use crate::versions::{Support, Version, catalog};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Only the checks before an install.
    #[arg(long, conflicts_with = "post")]
    pub pre: bool,
    /// Only the checks of an installed mesh.
    #[arg(long)]
    pub post: bool,
    /// Only this application namespace in the data-plane checks.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format (json and yaml for scripts; the exit status is the same).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The operator's namespace (its leader Lease and webhook certificate).
    #[arg(long, default_value = "meshop-system")]
    pub operator_namespace: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Pre,
    Post,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Pass,
    /// Not applicable in this cluster (nothing to check).
    Skip,
    Warn,
    Fail,
}

/// What one check found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub severity: Severity,
    pub message: String,
    /// What to do, for a warning or a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Verdict {
    fn pass(message: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Pass,
            message: message.into(),
            hint: None,
        }
    }
    fn skip(message: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Skip,
            message: message.into(),
            hint: None,
        }
    }
    fn warn(message: impl Into<String>, hint: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Warn,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
    fn fail(message: impl Into<String>, hint: impl Into<String>) -> Verdict {
        Verdict {
            severity: Severity::Fail,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// One check's result, numbered.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    pub number: usize,
    pub group: Group,
    pub name: &'static str,
    #[serde(flatten)]
    pub verdict: Verdict,
}

type CheckFn = fn(&Snapshot) -> Verdict;

/// Every check, in order; its number is its position (stable: new checks go at the end of
/// their group's block only if scripts are told).
pub const CHECKS: &[(Group, &str, CheckFn)] = &[
    (Group::Pre, "kubernetes-version", kubernetes_version),
    (Group::Pre, "permissions", permissions),
    (Group::Pre, "existing-istio", existing_istio),
    (Group::Pre, "conflicting-webhooks", conflicting_webhooks),
    (Group::Pre, "istio-crds", istio_crds),
    (Group::Pre, "injection-namespaces", injection_namespaces),
    (Group::Post, "meshinstall-crd", meshinstall_crd),
    (Group::Post, "operator-leading", operator_leading),
    (Group::Post, "meshinstalls-ready", meshinstalls_ready),
    (Group::Post, "components", components),
    (Group::Post, "webhook-registered", webhook_registered),
    (Group::Post, "webhook-certificate", webhook_certificate),
    (Group::Post, "webhook-reachable", webhook_reachable),
    (Group::Post, "sidecars", sidecars),
    (Group::Post, "proxy-versions", proxy_versions),
    (Group::Post, "ambient-node-agents", ambient_node_agents),
    (Group::Post, "ambient-enrollment", ambient_enrollment),
];

/// Runs the checks of `groups` over a snapshot.
pub fn run_checks(s: &Snapshot, groups: &[Group]) -> Vec<CheckResult> {
    // Without an API server nothing else was read: an empty list would look like a pass.
    let unreachable = s.errors.contains_key("version");
    CHECKS
        .iter()
        .enumerate()
        .filter(|(_, (group, _, _))| groups.contains(group))
        .map(|(i, (group, name, check))| CheckResult {
            number: i + 1,
            group: *group,
            name,
            verdict: if unreachable && *name != "kubernetes-version" {
                Verdict::skip("the API server did not answer")
            } else {
                check(s)
            },
        })
        .collect()
}

/// A read the check needs failed: the check fails with why.
fn unreadable(s: &Snapshot, what: &str) -> Option<Verdict> {
    s.errors.get(what).map(|e| {
        Verdict::fail(
            format!("cannot read {what}: {e}"),
            "run with credentials that may read it (meshop check needs cluster-wide read access)",
        )
    })
}

fn managed_by_meshop(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY)
}

fn list(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}

fn kubernetes_version(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "version") {
        return Verdict {
            hint: Some("check --kubeconfig / --context and that the API server is up".into()),
            ..v
        };
    }
    let Some((major, minor, git)) = &s.kubernetes else {
        return Verdict::skip("API server version unknown");
    };
    let mut supporting = Vec::new();
    let mut ranges = Vec::new();
    for m in catalog()
        .minors
        .iter()
        .filter(|m| m.support == Support::Supported)
    {
        let Some(range) = &m.kubernetes else { continue };
        ranges.push(format!("Istio {} on {}-{}", m.minor, range.min, range.max));
        let parse = |v: &str| {
            let (a, b) = v.split_once('.')?;
            Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
        };
        if let (Some(lo), Some(hi)) = (parse(&range.min), parse(&range.max))
            && lo <= (*major, *minor)
            && (*major, *minor) <= hi
        {
            supporting.push(m.minor.clone());
        }
    }
    if supporting.is_empty() {
        Verdict::fail(
            format!("Kubernetes {git} is outside what supported Istio releases run on"),
            format!(
                "use a cluster within a supported range: {}",
                ranges.join(", ")
            ),
        )
    } else {
        Verdict::pass(format!(
            "Kubernetes {git} is supported by Istio {}",
            supporting.join(", ")
        ))
    }
}

fn permissions(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "permissions") {
        return v;
    }
    if s.permissions.is_empty() {
        return Verdict::skip("permissions not reviewed");
    }
    let missing: Vec<String> = s
        .permissions
        .iter()
        .filter(|(_, allowed)| !allowed)
        .map(|(what, _)| what.clone())
        .collect();
    if missing.is_empty() {
        Verdict::pass("you may create every kind an install needs")
    } else {
        Verdict::fail(
            format!("you may not {}", list(&missing)),
            "install meshop (deploy/) as a cluster administrator; the operator's own ServiceAccount gets what it needs from deploy/rbac.yaml",
        )
    }
}

fn existing_istio(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "deployments") {
        return v;
    }
    let foreign: Vec<String> = s
        .istiods
        .iter()
        .filter(|d| !managed_by_meshop(d.metadata.labels.as_ref()))
        .map(|d| {
            format!(
                "{}/{}",
                d.metadata.namespace.as_deref().unwrap_or_default(),
                d.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if foreign.is_empty() {
        return Verdict::pass("no istiod installed by other means");
    }
    Verdict::warn(
        format!(
            "istiod installed by other means (istioctl, Helm): {}; meshop neither adopts nor deletes it, and a MeshInstall with the same namespace and revision would apply over its objects of the same names",
            list(&foreign)
        ),
        "uninstall it first (istioctl uninstall --purge, or helm uninstall), or give the MeshInstall another spec.revision and move namespaces over with istio.io/rev",
    )
}

fn conflicting_webhooks(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "mutating webhooks") {
        return v;
    }
    let injectors: Vec<String> = s
        .mutating
        .iter()
        .filter(|c| !managed_by_meshop(c.metadata.labels.as_ref()))
        .filter(|c| {
            c.webhooks
                .iter()
                .flatten()
                .any(|w| w.name.ends_with("sidecar-injector.istio.io"))
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let validators: Vec<String> = s
        .validating
        .iter()
        .filter(|c| !managed_by_meshop(c.metadata.labels.as_ref()))
        .filter(|c| {
            c.webhooks
                .iter()
                .flatten()
                .any(|w| w.name.ends_with("validation.istio.io"))
        })
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    if !injectors.is_empty() {
        return Verdict::fail(
            format!(
                "Istio's own injection webhook is registered (not by meshop): MutatingWebhookConfiguration {}; pods would be injected twice or by the wrong control plane",
                list(&injectors)
            ),
            "remove the other Istio installation, or delete its injector with `kubectl delete mutatingwebhookconfiguration NAME` once nothing uses it",
        );
    }
    if !validators.is_empty() {
        return Verdict::warn(
            format!(
                "Istio's validation webhook from another installation is registered: ValidatingWebhookConfiguration {}",
                list(&validators)
            ),
            "it validates Istio resources against that installation's istiod; remove it with that installation",
        );
    }
    Verdict::pass("no injection or validation webhook of another Istio installation")
}

fn istio_crds(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "crds") {
        return v;
    }
    let foreign: Vec<String> = s
        .crds
        .iter()
        .filter(|c| c.spec.group.ends_with(".istio.io"))
        .filter(|c| !managed_by_meshop(c.metadata.labels.as_ref()))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    if foreign.is_empty() {
        return Verdict::pass("Istio's CRDs are absent or meshop's");
    }
    Verdict::warn(
        format!(
            "{} Istio CRD(s) installed by other means ({}); a MeshInstall takes them over (server-side apply, forced) and deletes them with the last MeshInstall",
            foreign.len(),
            list(&foreign)
        ),
        "nothing to do if meshop is to own Istio's APIs; otherwise keep the other installation and do not install a MeshInstall here",
    )
}

/// The injection namespaces whose label selects a revision a MeshInstall serves, by name or by
/// one of its tags (`istio.io/rev=prod` follows the tag `prod`), as the webhook resolves it.
fn served_namespaces(s: &Snapshot) -> BTreeSet<&str> {
    let served = s.served();
    s.injection_namespaces
        .iter()
        .filter(|ns| snapshot::resolve(&served, &ns.revision).is_some())
        .map(|ns| ns.name.as_str())
        .collect()
}

fn injection_namespaces(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "namespaces") {
        return v;
    }
    if s.injection_namespaces.is_empty() {
        return Verdict::pass("no namespace is labelled for injection yet");
    }
    let served = served_namespaces(s);
    let orphans: Vec<String> = s
        .injection_namespaces
        .iter()
        .filter(|ns| !served.contains(ns.name.as_str()))
        .map(|ns| format!("{} (revision {})", ns.name, ns.revision))
        .collect();
    if orphans.is_empty() {
        return Verdict::pass(format!(
            "{} namespace(s) labelled for injection, each for a revision or tag a MeshInstall serves",
            s.injection_namespaces.len()
        ));
    }
    Verdict::warn(
        format!(
            "namespaces labelled for a revision or tag no MeshInstall serves: {}; their new pods get no sidecar from meshop",
            list(&orphans)
        ),
        "install a MeshInstall with that spec.revision (or spec.upgrade.tags), or relabel the namespace (istio-injection=enabled for the default revision or tag, istio.io/rev=<revision or tag> otherwise)",
    )
}

fn meshinstall_crd(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "crds") {
        return v;
    }
    let Some(crd) = &s.meshinstall_crd else {
        return Verdict::fail(
            "the MeshInstall CRD (meshinstalls.meshop.dev) is not installed",
            "install meshop: `meshop crd | kubectl apply --server-side -f -`, or apply deploy/",
        );
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|st| st.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Established" && c.status == "True");
    if established {
        Verdict::pass("the MeshInstall CRD is installed and established")
    } else {
        Verdict::fail(
            "the MeshInstall CRD exists but is not Established",
            "kubectl describe crd meshinstalls.meshop.dev shows why (a schema the API server refused)",
        )
    }
}

fn operator_leading(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "lease") {
        return v;
    }
    let ns = &s.operator_namespace;
    let Some(spec) = s.lease.as_ref().and_then(|l| l.spec.as_ref()) else {
        return Verdict::fail(
            format!(
                "no leader Lease {} in namespace {ns}: the operator is not running",
                crate::controller::leader::LEASE_NAME
            ),
            format!(
                "install the operator (deploy/), or pass --operator-namespace if it runs elsewhere; `kubectl -n {ns} get pods` shows its pods"
            ),
        );
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| SystemTime::from(t.0));
    let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(0) as u64);
    match (renewed, s.now) {
        (Some(renewed), Some(now)) if !holder.is_empty() && renewed + duration >= now => {
            Verdict::pass(format!("the operator {holder} leads and renews its Lease"))
        }
        _ => Verdict::fail(
            format!(
                "the leader Lease in {ns} was last held by {:?} and has expired: no operator is reconciling",
                holder
            ),
            format!(
                "`kubectl -n {ns} get pods` and their logs show why the operator is not running"
            ),
        ),
    }
}

fn no_crd(s: &Snapshot) -> Option<Verdict> {
    s.meshinstall_crd
        .is_none()
        .then(|| Verdict::skip("needs the MeshInstall CRD"))
}

fn meshinstalls_ready(s: &Snapshot) -> Verdict {
    if let Some(v) = no_crd(s).or_else(|| unreadable(s, "meshinstalls")) {
        return v;
    }
    if s.meshes.is_empty() {
        return Verdict::warn(
            "no MeshInstall exists",
            "install a mesh: `kubectl apply -f meshinstall.yaml` (see docs/examples/)",
        );
    }
    let mut bad = Vec::new();
    for mi in &s.meshes {
        let name = mi.metadata.name.clone().unwrap_or_default();
        let ready = mi
            .status
            .as_ref()
            .and_then(|st| st.condition(crate::api::condition::READY));
        match kstatus(mi.metadata.generation, mi.status.as_ref()) {
            KStatus::Current => {}
            other => bad.push(format!(
                "{name} is {other:?}: {}",
                ready.map_or("no status yet", |c| c.message.as_str())
            )),
        }
    }
    if bad.is_empty() {
        Verdict::pass(format!("{} MeshInstall(s) Ready", s.meshes.len()))
    } else {
        Verdict::fail(
            bad.join("; "),
            "`kubectl describe meshinstall NAME` shows its conditions and events; `meshop status` its components",
        )
    }
}

fn components(s: &Snapshot) -> Verdict {
    if let Some(v) = no_crd(s) {
        return v;
    }
    let mut short = Vec::new();
    let mut total = 0;
    for mi in &s.meshes {
        let name = mi.metadata.name.clone().unwrap_or_default();
        for c in mi.status.iter().flat_map(|st| &st.components) {
            total += 1;
            let (desired, ready) = (c.desired_replicas, c.ready_replicas);
            if c.state != crate::api::ComponentState::Ready || ready < desired {
                short.push(format!(
                    "{name}/{} {:?} ({}/{} ready)",
                    c.name,
                    c.state,
                    ready.unwrap_or(0),
                    desired.unwrap_or(0)
                ));
            }
        }
    }
    if total == 0 {
        return Verdict::skip("no component reported yet");
    }
    if short.is_empty() {
        Verdict::pass(format!("{total} component(s) at their desired replicas"))
    } else {
        Verdict::fail(
            format!(
                "components short of their desired replicas: {}",
                list(&short)
            ),
            "`kubectl -n <control-plane namespace> get pods` and `kubectl describe` of the failing ones show why (image pulls, scheduling, resources)",
        )
    }
}

/// MeshInstalls that run ambient mode (as their spec resolves), with their namespace.
fn ambient_meshes(s: &Snapshot) -> Vec<(String, String)> {
    s.meshes
        .iter()
        .filter_map(|mi| {
            let install = crate::effective::Installation::from_mesh(mi).ok()?;
            install.ambient.enabled.then(|| {
                (
                    mi.metadata.name.clone().unwrap_or_default(),
                    install.namespace,
                )
            })
        })
        .collect()
}

/// ztunnel and the CNI agent of every ambient mesh run, ready and updated, on every linux node.
fn ambient_node_agents(s: &Snapshot) -> Verdict {
    if let Some(v) = no_crd(s) {
        return v;
    }
    let meshes = ambient_meshes(s);
    if meshes.is_empty() {
        return Verdict::skip("no MeshInstall runs ambient mode");
    }
    for what in ["daemonsets", "nodes"] {
        if let Some(v) = unreadable(s, what) {
            return v;
        }
    }
    let nodes = s.linux_nodes.unwrap_or(0);
    let mut short = Vec::new();
    for (mesh, namespace) in &meshes {
        for name in [crate::render::CNI_NAME, crate::render::ZTUNNEL_NAME] {
            let found = s.node_agents.iter().find(|d| {
                d.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && d.metadata.name.as_deref() == Some(name)
            });
            let Some(d) = found else {
                short.push(format!("{mesh}: DaemonSet {namespace}/{name} is missing"));
                continue;
            };
            let st = d.status.clone().unwrap_or_default();
            let updated = st.updated_number_scheduled.unwrap_or(0);
            let desired = st.desired_number_scheduled;
            if desired < nodes as i32 || st.number_ready < desired || updated < desired {
                short.push(format!(
                    "{mesh}: {namespace}/{name} scheduled on {desired} of {nodes} linux node(s), ready on {}, updated on {updated}",
                    st.number_ready
                ));
            }
        }
    }
    if short.is_empty() {
        return Verdict::pass(format!(
            "ztunnel and the CNI agent ready and updated on all {nodes} linux node(s)"
        ));
    }
    Verdict::fail(
        format!(
            "ambient mode's node agents do not cover every node: {}; pods on those nodes are not captured",
            list(&short)
        ),
        "`kubectl -n <namespace> describe daemonset <name>` and its pods' events say why (a taint the agents do not tolerate, resources, image pulls); add tolerations in components.ztunnel / components.cni",
    )
}

/// Namespaces and pods enrolled in ambient mode: served by an ambient mesh, captured as far as
/// the API shows it, and none that also runs a sidecar.
fn ambient_enrollment(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "pods") {
        return v;
    }
    let enrolled: Vec<&snapshot::PodView> = s
        .pods
        .iter()
        .filter(|p| !p.host_network)
        .filter(|p| match p.dataplane_mode.as_deref() {
            Some("ambient") => true,
            Some(_) => false,
            None => s.ambient_namespaces.contains(&p.namespace),
        })
        .collect();
    if s.ambient_namespaces.is_empty() && enrolled.is_empty() {
        return Verdict::skip("no namespace or pod is enrolled in ambient mode");
    }
    if ambient_meshes(s).is_empty() {
        let mut what: Vec<String> = s
            .ambient_namespaces
            .iter()
            .map(|n| format!("namespace {n}"))
            .collect();
        what.extend(
            enrolled
                .iter()
                .filter(|p| !s.ambient_namespaces.contains(&p.namespace))
                .map(|p| format!("pod {}/{}", p.namespace, p.name)),
        );
        return Verdict::fail(
            format!(
                "enrolled in ambient mode (istio.io/dataplane-mode=ambient) but no MeshInstall runs ambient mode: {}; their traffic is not captured",
                list(&what)
            ),
            "install a MeshInstall with profile ambient (or components.ztunnel and components.cni.ambient), or remove the label",
        );
    }
    let both: Vec<String> = enrolled
        .iter()
        .filter(|p| p.has_sidecar)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let uncaptured: Vec<String> = enrolled
        .iter()
        .filter(|p| !p.has_sidecar && !p.captured)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    let captured = enrolled.len() - both.len() - uncaptured.len();
    let mut problems = Vec::new();
    let mut hints = Vec::new();
    if !both.is_empty() {
        problems.push(format!(
            "{} pod(s) have a sidecar and the ambient label, so the sidecar carries their traffic and ztunnel leaves them alone: {}",
            both.len(),
            list(&both)
        ));
        hints.push("for ambient, take them out of injection and restart them; to keep the sidecar, remove istio.io/dataplane-mode");
    }
    if !uncaptured.is_empty() {
        problems.push(format!(
            "{} enrolled pod(s) are not captured as far as the API shows (no {}=enabled from the CNI agent): {}",
            uncaptured.len(),
            snapshot::AMBIENT_REDIRECTION,
            list(&uncaptured)
        ));
        hints.push("the CNI agent's log on their node says why (`kubectl -n <namespace> logs ds/istio-cni-node`)");
    }
    if problems.is_empty() {
        return Verdict::pass(format!(
            "{} namespace(s) enrolled in ambient mode, {captured} pod(s) captured",
            s.ambient_namespaces.len()
        ));
    }
    Verdict::warn(problems.join("; "), hints.join("; "))
}

/// MeshInstalls whose status says injection is on (the webhook is not Disabled).
fn injecting(s: &Snapshot) -> Vec<&crate::api::MeshInstall> {
    s.meshes
        .iter()
        .filter(|mi| {
            mi.status
                .as_ref()
                .and_then(|st| st.webhook.as_ref())
                .is_some_and(|w| w.state != WebhookState::Disabled)
        })
        .collect()
}

/// The caBundle of MeshInstall `name`'s registration, if registered.
fn registered_ca(s: &Snapshot, name: &str) -> Option<Option<String>> {
    let config_name = format!("meshop-sidecar-injector-{name}");
    let config = s
        .mutating
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(config_name.as_str()))?;
    Some(
        config
            .webhooks
            .iter()
            .flatten()
            .find_map(|w| w.client_config.ca_bundle.as_ref())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
    )
}

fn webhook_registered(s: &Snapshot) -> Verdict {
    if let Some(v) = no_crd(s).or_else(|| unreadable(s, "mutating webhooks")) {
        return v;
    }
    let meshes = injecting(s);
    if meshes.is_empty() {
        return Verdict::skip("no MeshInstall injects sidecars");
    }
    let mut bad = Vec::new();
    for mi in &meshes {
        let name = mi.metadata.name.clone().unwrap_or_default();
        match registered_ca(s, &name) {
            None => bad.push(format!(
                "MutatingWebhookConfiguration meshop-sidecar-injector-{name} is missing"
            )),
            Some(None) => bad.push(format!("meshop-sidecar-injector-{name} has no caBundle")),
            Some(Some(_)) => {}
        }
    }
    if bad.is_empty() {
        Verdict::pass(format!(
            "{} injection webhook registration(s) with a caBundle",
            meshes.len()
        ))
    } else {
        Verdict::fail(
            bad.join("; "),
            "the operator registers it once istiod is ready: see `meshop status` and the operator's log",
        )
    }
}

fn webhook_certificate(s: &Snapshot) -> Verdict {
    if let Some(v) = no_crd(s).or_else(|| unreadable(s, "webhook secret")) {
        return v;
    }
    let meshes = injecting(s);
    if meshes.is_empty() {
        return Verdict::skip("no MeshInstall injects sidecars");
    }
    let ns = &s.operator_namespace;
    let secret = crate::webhook::SECRET_NAME;
    let restart = format!(
        "delete the Secret (`kubectl -n {ns} delete secret {secret}`) and restart the operator: it mints a new CA and certificate and updates every caBundle"
    );
    let Some(cert) = s.webhook_secret.as_ref().and_then(|w| w.tls_crt.clone()) else {
        return Verdict::fail(
            format!("no serving certificate: Secret {ns}/{secret} is missing or has no tls.crt"),
            restart,
        );
    };
    let not_after = match crate::webhook::certs::validity(&cert) {
        Ok((_, not_after)) => not_after,
        Err(e) => {
            return Verdict::fail(
                format!("the serving certificate in {ns}/{secret} is unreadable: {e}"),
                restart,
            );
        }
    };
    let now = s.now.unwrap_or_else(SystemTime::now);
    let expiry = k8s_openapi::jiff::Timestamp::try_from(not_after)
        .map(|t| t.to_string())
        .unwrap_or_default();
    if not_after <= now {
        return Verdict::fail(
            format!("the webhook's serving certificate expired at {expiry}"),
            restart,
        );
    }
    for mi in &meshes {
        let name = mi.metadata.name.clone().unwrap_or_default();
        if let Some(Some(ca)) = registered_ca(s, &name)
            && !crate::webhook::certs::issued_by(&cert, &ca).unwrap_or(false)
        {
            return Verdict::fail(
                format!(
                    "the caBundle of meshop-sidecar-injector-{name} does not sign the served certificate: the API server will refuse the webhook's TLS"
                ),
                "the operator rewrites the caBundle on its next pass; if it persists, restart the operator",
            );
        }
    }
    let left = not_after.duration_since(now).unwrap_or_default();
    Verdict::pass(format!(
        "the serving certificate is valid until {expiry} ({} days) and chains to every registered caBundle",
        left.as_secs() / 86_400
    ))
}

fn webhook_reachable(s: &Snapshot) -> Verdict {
    if injecting(s).is_empty() {
        return Verdict::skip("no MeshInstall injects sidecars");
    }
    match &s.probe {
        None => Verdict::skip("not probed"),
        Some(InjectionProbe::NoNamespace) => Verdict::skip(
            "no namespace is labelled for a revision a MeshInstall injects: nothing to send a dry-run pod to",
        ),
        Some(InjectionProbe::Injected(ns)) => Verdict::pass(format!(
            "a dry-run pod in {ns} came back with a sidecar: the API server reaches the webhook"
        )),
        Some(InjectionProbe::NotInjected(ns)) => Verdict::fail(
            format!(
                "a dry-run pod in {ns} came back without a sidecar: the webhook was not called, or failed with failurePolicy Ignore"
            ),
            "check that the API server can reach the operator's webhook Service (network policies, firewall to port 9443) and the operator's log",
        ),
        Some(InjectionProbe::Refused(ns, e)) => Verdict::fail(
            format!("a dry-run pod in {ns} was refused: {e}"),
            "the webhook failed with failurePolicy Fail: check the operator's log and that the API server reaches its Service",
        ),
    }
}

fn sidecars(s: &Snapshot) -> Verdict {
    if let Some(v) = unreadable(s, "pods") {
        return v;
    }
    if s.injection_namespaces.is_empty() {
        return Verdict::skip("no namespace is labelled for injection");
    }
    let namespaces = served_namespaces(s);
    let missing: Vec<String> = s
        .pods
        .iter()
        .filter(|p| namespaces.contains(p.namespace.as_str()) && !p.has_sidecar && !p.exempt)
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    if missing.is_empty() {
        return Verdict::pass(format!(
            "every pod in {} injection namespace(s) has a sidecar",
            namespaces.len()
        ));
    }
    Verdict::fail(
        format!(
            "{} pod(s) in injection namespaces run without a sidecar: {}",
            missing.len(),
            list(&missing)
        ),
        "they started before injection was on: restart their workloads (`kubectl -n NS rollout restart deployment NAME`); opt a pod out with the label sidecar.istio.io/inject=false",
    )
}

fn proxy_versions(s: &Snapshot) -> Verdict {
    // Each revision's own release: during a revision-based upgrade the old revision's proxies
    // run the old release, which is their control plane's.
    let versions: BTreeMap<String, Version> = s
        .meshes
        .iter()
        .filter(|mi| mi.status.as_ref().is_some_and(|st| st.version.is_some()))
        .flat_map(snapshot::served_revisions)
        .filter_map(|r| Some((r.name, r.version?.parse().ok()?)))
        .collect();
    if versions.is_empty() {
        return Verdict::skip("no MeshInstall reports an installed version");
    }
    let (mut behind, mut refused) = (Vec::new(), Vec::new());
    for pod in s.pods.iter().filter(|p| p.has_sidecar) {
        let Some(rev) = &pod.revision else { continue };
        let Some(control) = versions.get(rev) else {
            continue;
        };
        let Some(proxy) = pod
            .proxy_version
            .as_ref()
            .and_then(|v| v.parse::<Version>().ok())
        else {
            continue;
        };
        if proxy == *control {
            continue;
        }
        let entry = format!(
            "{}/{} ({proxy}, control plane {control})",
            pod.namespace, pod.name
        );
        // Istio lets the control plane run one minor ahead of its proxies, never behind.
        match control.minors_ahead_of(&proxy) {
            0 | 1 => behind.push(entry),
            _ => refused.push(entry),
        }
    }
    let restart = "restart the workloads (`kubectl -n NS rollout restart deployment NAME`) so their pods get the control plane's proxy";
    if !refused.is_empty() {
        return Verdict::fail(
            format!(
                "proxies outside Istio's supported skew (control plane at most one minor ahead, never behind): {}",
                list(&refused)
            ),
            restart,
        );
    }
    if !behind.is_empty() {
        return Verdict::warn(
            format!(
                "proxies of another version than their control plane (within Istio's skew): {}",
                list(&behind)
            ),
            restart,
        );
    }
    Verdict::pass("every injected proxy runs its control plane's version")
}

/// The text report: one line per check, a hint under each warning and failure, then a summary.
pub fn text(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for group in [Group::Pre, Group::Post] {
        let of_group: Vec<&CheckResult> = results.iter().filter(|r| r.group == group).collect();
        if of_group.is_empty() {
            continue;
        }
        out.push_str(match group {
            Group::Pre => "pre: before an install\n",
            Group::Post => "post: the installed mesh\n",
        });
        let width = of_group.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in of_group {
            let mark = match r.verdict.severity {
                Severity::Pass => "ok  ",
                Severity::Skip => "skip",
                Severity::Warn => "WARN",
                Severity::Fail => "FAIL",
            };
            out.push_str(&format!(
                "  {:>2}. {mark}  {:<width$}  {}\n",
                r.number, r.name, r.verdict.message
            ));
            if let Some(hint) = &r.verdict.hint {
                out.push_str(&format!("      {:<width$}        fix: {hint}\n", ""));
            }
        }
    }
    let count = |sev| results.iter().filter(|r| r.verdict.severity == sev).count();
    out.push_str(&format!(
        "\n{} passed, {} warning(s), {} failed, {} skipped\n",
        count(Severity::Pass),
        count(Severity::Warn),
        count(Severity::Fail),
        count(Severity::Skip)
    ));
    out
}

#[derive(Serialize)]
struct Report<'a> {
    passed: bool,
    checks: &'a [CheckResult],
}

pub async fn run(args: CheckArgs) -> Result<Outcome> {
    let groups = match (args.pre, args.post) {
        (true, _) => vec![Group::Pre],
        (_, true) => vec![Group::Post],
        _ => vec![Group::Pre, Group::Post],
    };
    let client = args.cluster.client().await?;
    let scope = Scope {
        operator_namespace: &args.operator_namespace,
        namespace: args.namespace.as_deref(),
        probes: true,
    };
    let snapshot = snapshot::gather(&client, &scope).await;
    let results = run_checks(&snapshot, &groups);
    let passed = results.iter().all(|r| r.verdict.severity != Severity::Fail);
    let stdout = match args.output.encode(&Report {
        passed,
        checks: &results,
    })? {
        Some(encoded) => encoded,
        None => text(&results),
    };
    Ok(Outcome {
        stdout,
        success: passed,
    })
}

#[cfg(test)]
mod tests;
