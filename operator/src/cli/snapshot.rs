//! What `meshop check` and `meshop status` read from a cluster, gathered once (I/O) into plain
//! data that their pure functions judge and print. A read that fails is kept as an error next to
//! the data, so one missing permission makes one check fail with the reason instead of ending the
//! command.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;

use crate::api::MeshInstall;
use crate::inject::keys;

/// One pod, as the data-plane checks see it.
#[derive(Clone, Debug, PartialEq, Serialize, Default)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    /// It runs an `istio-proxy` container (classic or native sidecar).
    pub has_sidecar: bool,
    /// The revision its injector recorded (`istio.io/rev` annotation), when injected.
    pub revision: Option<String>,
    /// The tag of its `istio-proxy` image: the proxy's Istio version.
    pub proxy_version: Option<String>,
    /// It opted out with `sidecar.istio.io/inject=false`, or uses hostNetwork: no sidecar expected.
    pub exempt: bool,
    /// Its own `istio.io/dataplane-mode` label (`ambient`, `none`), if any.
    pub dataplane_mode: Option<String>,
    /// The CNI agent recorded that it captured the pod for ztunnel
    /// (`ambient.istio.io/redirection: enabled`): what the API shows of ambient capture.
    pub captured: bool,
    pub host_network: bool,
}

/// The label that enrolls a namespace or pod in ambient mode.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// The annotation the CNI agent sets on a pod once ztunnel carries its traffic.
pub const AMBIENT_REDIRECTION: &str = "ambient.istio.io/redirection";

impl PodView {
    pub fn new(pod: &Pod) -> PodView {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let proxy = spec.and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == crate::inject::names::PROXY)
        });
        let opted_out = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::INJECT))
            .is_some_and(|v| v == "false");
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
        let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key)).cloned();
        PodView {
            dataplane_mode: label(DATAPLANE_MODE),
            captured: annotation(AMBIENT_REDIRECTION).is_some_and(|v| v == "enabled"),
            host_network,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            has_sidecar: proxy.is_some(),
            revision: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(keys::REV))
                .cloned(),
            proxy_version: proxy
                .and_then(|c| c.image.as_deref())
                .and_then(image_tag)
                .map(str::to_string),
            exempt: opted_out || host_network,
        }
    }
}

/// The tag of an image reference (`docker.io/istio/proxyv2:1.31.1` -> `1.31.1`), without a digest.
fn image_tag(image: &str) -> Option<&str> {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':').map(|(_, tag)| tag)
}

/// A namespace whose labels ask for sidecars, and the revision or tag they ask for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InjectionNamespace {
    pub name: String,
    /// What its labels ask for: a revision name (which pins it) or a tag (which it follows);
    /// `default` for `istio-injection=enabled`. [`Snapshot::resolve`] says which revision that is.
    pub revision: String,
}

/// A control-plane revision a MeshInstall serves, as `status` and `check` see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServedRevision {
    /// The MeshInstall.
    pub mesh: String,
    /// The revision's name (`default` for an in-place install without `spec.revision`): what
    /// an injected pod records in its `istio.io/rev` annotation.
    pub name: String,
    /// The Istio release it runs, when known.
    pub version: Option<String>,
    /// The tags pointing at it (revision-based installs; `default` is the one
    /// `istio-injection=enabled` follows).
    pub tags: Vec<String>,
}

/// The revisions `mi` serves, as the webhook serves them: in place, its one revision;
/// revision-based, every revision its status lists (the reconciler's record, which the webhook
/// reads too), each with the tags that point at it. A revision-based install whose first pass
/// has not written status serves nothing yet.
pub fn served_revisions(mi: &MeshInstall) -> Vec<ServedRevision> {
    let mesh = mi.metadata.name.clone().unwrap_or_default();
    let status = mi.status.as_ref();
    if mi.spec.update_strategy != crate::api::UpdateStrategy::RevisionBased {
        return vec![ServedRevision {
            mesh,
            name: crate::revision::name(&mi.spec.revision).to_string(),
            version: status
                .and_then(|s| s.version.clone())
                .or_else(|| mi.spec.version.clone()),
            tags: Vec::new(),
        }];
    }
    status
        .iter()
        .flat_map(|s| &s.revisions)
        .map(|r| ServedRevision {
            mesh: mesh.clone(),
            name: r.name.clone(),
            version: Some(r.version.clone()),
            tags: r.tags.clone(),
        })
        .collect()
}

/// The revision a label value (`istio.io/rev`, or `default` for `istio-injection=enabled`)
/// selects among `served`, looked up as the webhook does: a revision's name pins it, else the
/// tag of that name points at one.
pub fn resolve<'a>(served: &'a [ServedRevision], asked: &str) -> Option<&'a ServedRevision> {
    served
        .iter()
        .find(|r| r.name == asked)
        .or_else(|| served.iter().find(|r| r.tags.iter().any(|t| t == asked)))
}

/// The revision a namespace's labels send its pods to, if any (Istio's rules, as the webhook
/// applies them).
pub fn namespace_revision(labels: &BTreeMap<String, String>) -> Option<String> {
    crate::inject::select_revision(labels, &Pod::default()).map(str::to_string)
}

/// The served certificate and the CA it should chain to, from the Secret `meshop-webhook-tls`.
#[derive(Clone, Debug, Default)]
pub struct WebhookSecret {
    pub tls_crt: Option<String>,
    pub ca_crt: Option<String>,
}

/// What a dry-run pod creation in an injection namespace came back with: the webhook's real answer.
#[derive(Clone, Debug, PartialEq)]
pub enum InjectionProbe {
    /// No namespace is labelled for a revision a MeshInstall injects: nothing to try.
    NoNamespace,
    /// The dry-run pod came back from namespace `.0` with a sidecar.
    Injected(String),
    /// It came back without one.
    NotInjected(String),
    /// The API server refused it (the webhook failed and its policy is Fail, or another error).
    Refused(String, String),
}

/// Everything the day-2 commands read from a cluster.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub now: Option<SystemTime>,
    /// `major.minor` of the API server, and its git version.
    pub kubernetes: Option<(u32, u32, String)>,
    pub meshinstall_crd: Option<CustomResourceDefinition>,
    pub crds: Vec<CustomResourceDefinition>,
    pub meshes: Vec<MeshInstall>,
    pub mutating: Vec<MutatingWebhookConfiguration>,
    pub validating: Vec<ValidatingWebhookConfiguration>,
    /// Deployments that look like istiod (label `app=istiod`), any namespace.
    pub istiods: Vec<Deployment>,
    pub namespaces: Vec<Namespace>,
    pub injection_namespaces: Vec<InjectionNamespace>,
    pub pods: Vec<PodView>,
    /// Namespaces labelled `istio.io/dataplane-mode=ambient`.
    pub ambient_namespaces: Vec<String>,
    /// meshop's DaemonSets (the CNI agent and ztunnel of each mesh), any namespace.
    pub node_agents: Vec<DaemonSet>,
    /// Linux nodes (`kubernetes.io/os=linux`): where the node agents must run.
    pub linux_nodes: Option<usize>,
    pub lease: Option<Lease>,
    pub operator_namespace: String,
    pub webhook_secret: Option<WebhookSecret>,
    /// (what, allowed) for each permission an install needs.
    pub permissions: Vec<(String, bool)>,
    pub probe: Option<InjectionProbe>,
    /// What could not be read, by what it was: the checks that need it fail with this.
    pub errors: BTreeMap<&'static str, String>,
}

impl Snapshot {
    /// Every revision the MeshInstalls serve ([`served_revisions`]), in MeshInstall order.
    pub fn served(&self) -> Vec<ServedRevision> {
        self.meshes.iter().flat_map(served_revisions).collect()
    }

    /// The revision a namespace asking for `asked` (a revision or a tag) gets ([`resolve`]).
    pub fn resolve(&self, asked: &str) -> Option<ServedRevision> {
        resolve(&self.served(), asked).cloned()
    }
}

/// What to gather.
pub struct Scope<'a> {
    pub operator_namespace: &'a str,
    /// Only this application namespace's pods (`-n`); all injection namespaces otherwise.
    pub namespace: Option<&'a str>,
    /// Run the access reviews and the injection dry run (`meshop check`; `status` skips them).
    pub probes: bool,
}

/// The permissions installing meshop needs: (verb, group, resource).
pub const INSTALL_PERMISSIONS: &[(&str, &str, &str)] = &[
    (
        "create",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
    ),
    ("create", "", "namespaces"),
    ("create", "rbac.authorization.k8s.io", "clusterroles"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    (
        "create",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
    ("create", "apps", "deployments"),
];

/// Lists `K` everywhere, or records why it could not.
async fn list<K>(
    client: &Client,
    what: &'static str,
    errors: &mut BTreeMap<&'static str, String>,
) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            errors.insert(what, e.to_string());
            Vec::new()
        }
    }
}

/// Reads the cluster. Never fails: what cannot be read lands in [`Snapshot::errors`].
pub async fn gather(client: &Client, scope: &Scope<'_>) -> Snapshot {
    let mut s = Snapshot {
        now: Some(SystemTime::now()),
        operator_namespace: scope.operator_namespace.to_string(),
        ..Default::default()
    };
    super::cluster::progress("reading the API server's version");
    match client.apiserver_version().await {
        Ok(v) => {
            let digits = |x: &str| {
                x.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            };
            match (digits(&v.major), digits(&v.minor)) {
                (Some(major), Some(minor)) => s.kubernetes = Some((major, minor, v.git_version)),
                _ => {
                    s.errors
                        .insert("version", format!("unreadable version {}", v.git_version));
                }
            }
        }
        Err(e) => {
            s.errors.insert("version", e.to_string());
            // Nothing else will answer either.
            return s;
        }
    }
    super::cluster::progress("listing CRDs, MeshInstalls, webhooks and namespaces");
    let crds: Vec<CustomResourceDefinition> = list(client, "crds", &mut s.errors).await;
    let crd_name = format!("{}.{}", MeshInstall::plural(&()), MeshInstall::group(&()));
    s.meshinstall_crd = crds
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(&crd_name))
        .cloned();
    s.crds = crds;
    if s.meshinstall_crd.is_some() {
        s.meshes = list(client, "meshinstalls", &mut s.errors).await;
    }
    s.mutating = list(client, "mutating webhooks", &mut s.errors).await;
    s.validating = list(client, "validating webhooks", &mut s.errors).await;
    match Api::<Deployment>::all(client.clone())
        .list(&ListParams::default().labels("app=istiod"))
        .await
    {
        Ok(list) => s.istiods = list.items,
        Err(e) => {
            s.errors.insert("deployments", e.to_string());
        }
    }
    s.namespaces = list(client, "namespaces", &mut s.errors).await;
    s.injection_namespaces = s
        .namespaces
        .iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            Some(InjectionNamespace {
                revision: namespace_revision(&labels)?,
                name,
            })
        })
        .filter(|ns| scope.namespace.is_none_or(|only| only == ns.name))
        .collect();
    super::cluster::progress("listing pods in injection namespaces");
    for ns in &s.injection_namespaces {
        match Api::<Pod>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => s.pods.extend(
                list.items
                    .iter()
                    .filter(|p| {
                        // Finished pods keep whatever they had; only running ones matter.
                        !matches!(
                            p.status.as_ref().and_then(|st| st.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        )
                    })
                    .map(PodView::new),
            ),
            Err(e) => {
                s.errors
                    .insert("pods", format!("namespace {}: {e}", ns.name));
            }
        }
    }
    gather_ambient(client, scope, &mut s).await;
    let ns = scope.operator_namespace;
    match Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(crate::controller::leader::LEASE_NAME)
        .await
    {
        Ok(lease) => s.lease = lease,
        Err(e) => {
            s.errors.insert("lease", e.to_string());
        }
    }
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(crate::webhook::SECRET_NAME)
        .await
    {
        Ok(secret) => {
            s.webhook_secret = secret.map(|secret| {
                let data = secret.data.unwrap_or_default();
                let text = |key: &str| {
                    data.get(key)
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                };
                WebhookSecret {
                    tls_crt: text(crate::webhook::TLS_CRT),
                    ca_crt: text(crate::webhook::CA_CRT),
                }
            })
        }
        Err(e) => {
            s.errors.insert("webhook secret", e.to_string());
        }
    }
    if scope.probes {
        super::cluster::progress("reviewing permissions");
        for (verb, group, resource) in INSTALL_PERMISSIONS {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(verb.to_string()),
                        group: Some(group.to_string()),
                        resource: Some(resource.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let what = format!("{verb} {resource}");
            match Api::<SelfSubjectAccessReview>::all(client.clone())
                .create(&PostParams::default(), &review)
                .await
            {
                Ok(r) => s
                    .permissions
                    .push((what, r.status.is_some_and(|st| st.allowed))),
                Err(e) => {
                    s.errors.insert("permissions", e.to_string());
                    break;
                }
            }
        }
        super::cluster::progress("asking the webhook to inject a dry-run pod");
        // Only a namespace whose revision or tag a MeshInstall injects says anything about
        // the webhook.
        let served = s.served();
        let injecting: Vec<InjectionNamespace> = s
            .injection_namespaces
            .iter()
            .filter(|ns| {
                let Some(revision) = resolve(&served, &ns.revision) else {
                    return false;
                };
                s.meshes.iter().any(|mi| {
                    mi.metadata.name.as_deref() == Some(revision.mesh.as_str())
                        && mi
                            .status
                            .as_ref()
                            .and_then(|st| st.webhook.as_ref())
                            .is_some_and(|w| w.state != crate::api::WebhookState::Disabled)
                })
            })
            .cloned()
            .collect();
        s.probe = Some(probe_injection(client, &injecting).await);
    }
    s
}

/// What ambient mode's checks read: enrolled namespaces and their pods (and pods enrolled on
/// their own anywhere), meshop's node agents, and the linux nodes they must cover.
async fn gather_ambient(client: &Client, scope: &Scope<'_>, s: &mut Snapshot) {
    super::cluster::progress("listing ambient namespaces, node agents and nodes");
    s.ambient_namespaces = s
        .namespaces
        .iter()
        .filter(|ns| {
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(DATAPLANE_MODE))
                .is_some_and(|v| v == "ambient")
        })
        .filter_map(|ns| ns.metadata.name.clone())
        .filter(|ns| scope.namespace.is_none_or(|only| only == ns))
        .collect();
    let mut seen: std::collections::BTreeSet<(String, String)> = s
        .pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    let mut add = |s: &mut Snapshot, pods: Vec<Pod>| {
        for p in pods.iter().filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|st| st.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        }) {
            let view = PodView::new(p);
            if seen.insert((view.namespace.clone(), view.name.clone())) {
                s.pods.push(view);
            }
        }
    };
    for ns in s.ambient_namespaces.clone() {
        match Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => add(s, list.items),
            Err(e) => {
                s.errors.insert("pods", format!("namespace {ns}: {e}"));
            }
        }
    }
    let enrolled = ListParams::default().labels(&format!("{DATAPLANE_MODE}=ambient"));
    let pods = match scope.namespace {
        Some(only) => {
            Api::<Pod>::namespaced(client.clone(), only)
                .list(&enrolled)
                .await
        }
        None => Api::<Pod>::all(client.clone()).list(&enrolled).await,
    };
    match pods {
        Ok(list) => add(s, list.items),
        Err(e) => {
            s.errors.insert("pods", e.to_string());
        }
    }
    match Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshop"))
        .await
    {
        Ok(list) => s.node_agents = list.items,
        Err(e) => {
            s.errors.insert("daemonsets", e.to_string());
        }
    }
    match Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default().labels("kubernetes.io/os=linux"))
        .await
    {
        Ok(list) => s.linux_nodes = Some(list.items.len()),
        Err(e) => {
            s.errors.insert("nodes", e.to_string());
        }
    }
}

/// Creates a pod with `dryRun=All` in the first injection namespace: the API server calls the
/// webhook exactly as for a real pod, and nothing is stored.
async fn probe_injection(client: &Client, namespaces: &[InjectionNamespace]) -> InjectionProbe {
    let Some(ns) = namespaces.first() else {
        return InjectionProbe::NoNamespace;
    };
    let pod: Pod = match serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "meshop-check-" },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
    })) {
        Ok(pod) => pod,
        Err(e) => return InjectionProbe::Refused(ns.name.clone(), e.to_string()),
    };
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&params, &pod)
        .await
    {
        Ok(created) if PodView::new(&created).has_sidecar => {
            InjectionProbe::Injected(ns.name.clone())
        }
        Ok(_) => InjectionProbe::NotInjected(ns.name.clone()),
        Err(e) => InjectionProbe::Refused(ns.name.clone(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags_are_proxy_versions() {
        assert_eq!(image_tag("docker.io/istio/proxyv2:1.31.1"), Some("1.31.1"));
        assert_eq!(image_tag("localhost:5000/proxyv2:1.30.5"), Some("1.30.5"));
        assert_eq!(image_tag("proxyv2@sha256:abc"), None);
        assert_eq!(image_tag("proxyv2"), None);
    }

    #[test]
    fn pods_are_read_for_sidecar_revision_and_version() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "namespace": "apps",
                "annotations": { "istio.io/rev": "canary" } },
            "spec": {
                "initContainers": [{ "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.5",
                    "restartPolicy": "Always" }],
                "containers": [{ "name": "app" }] }
        }))
        .unwrap();
        let view = PodView::new(&pod);
        assert!(view.has_sidecar && !view.exempt);
        assert_eq!(view.revision.as_deref(), Some("canary"));
        assert_eq!(view.proxy_version.as_deref(), Some("1.30.5"));
        let bare: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "job", "labels": { "sidecar.istio.io/inject": "false" } },
            "spec": { "containers": [{ "name": "app" }] }
        }))
        .unwrap();
        let view = PodView::new(&bare);
        assert!(!view.has_sidecar && view.exempt);
    }

    #[test]
    fn revision_names_pin_and_tags_follow() {
        let mut mi: MeshInstall = serde_json::from_value(serde_json::json!({
            "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
            "metadata": { "name": "canary" },
            "spec": { "profile": "minimal", "updateStrategy": "RevisionBased" },
            "status": { "version": "1.31.1", "revisions": [
                { "name": "1-31-1", "version": "1.31.1", "tags": ["default", "prod"], "ready": true },
                { "name": "1-30-5", "version": "1.30.5", "ready": true } ] }
        }))
        .unwrap();
        let served = served_revisions(&mi);
        let name = |asked: &str| resolve(&served, asked).map(|r| r.name.as_str());
        assert_eq!(name("default"), Some("1-31-1"));
        assert_eq!(name("prod"), Some("1-31-1"));
        assert_eq!(name("1-30-5"), Some("1-30-5"));
        assert_eq!(name("1-29-0"), None);
        assert_eq!(served[1].version.as_deref(), Some("1.30.5"));
        // In place: the one revision, by its name; tags are a revision-based install's.
        mi.spec.update_strategy = crate::api::UpdateStrategy::InPlace;
        mi.spec.revision = "canary".into();
        let served = served_revisions(&mi);
        assert_eq!(served.len(), 1);
        assert_eq!(
            resolve(&served, "canary").unwrap().version.as_deref(),
            Some("1.31.1")
        );
        assert!(resolve(&served, "default").is_none());
        // Revision-based before its first status: nothing served yet (the webhook neither).
        mi.spec.update_strategy = crate::api::UpdateStrategy::RevisionBased;
        mi.status = None;
        assert!(served_revisions(&mi).is_empty());
    }

    #[test]
    fn namespaces_select_revisions_like_the_webhook() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            namespace_revision(&labels(&[("istio-injection", "enabled")])).as_deref(),
            Some("default")
        );
        assert_eq!(
            namespace_revision(&labels(&[("istio.io/rev", "canary")])).as_deref(),
            Some("canary")
        );
        assert_eq!(
            namespace_revision(&labels(&[
                ("istio-injection", "disabled"),
                ("istio.io/rev", "canary")
            ])),
            None
        );
        assert_eq!(namespace_revision(&labels(&[])), None);
    }
}
