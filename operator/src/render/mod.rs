//! Rendering: an [`Installation`] in, every Kubernetes object it needs out, in apply order.
//!
//! Pure code: no client, no clock, no randomness, so `meshop render` is byte-for-byte
//! deterministic and every object can be checked in unit tests. One module per component.

mod addons;
mod cni;
mod common;
mod gateway;
mod gateway_api_crds;
mod istio_crds;
mod istiod;
mod mesh;
mod overlays;
mod validation;
mod waypoint;
mod webhook;
mod workload;
mod ztunnel;

use std::fmt;

use kube::Resource;
use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;

use crate::effective::Installation;

pub use cni::NAME as CNI_NAME;
pub use common::{
    LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_PART_OF, MANAGED_BY, SHARED_INSTANCE,
    cluster_meta, owner_reference,
};
pub use gateway_api_crds::{
    BUNDLE_VERSION_ANNOTATION, BUNDLES as GATEWAY_API_BUNDLES, GROUP as GATEWAY_API_GROUP,
    parse_bundle_version,
};
pub use istio_crds::istio_crds;
pub use overlays::OverlayError;
pub use webhook::{InjectorEndpoint, WEBHOOK_PATH, webhook_configuration_name};
pub use ztunnel::NAME as ZTUNNEL_NAME;

/// Apply stages, in order. A stage is applied only once the one before it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// The namespace and Istio's API CRDs.
    Base,
    /// istiod and the mesh-wide configuration.
    ControlPlane,
    /// Gateways and the CNI node agent.
    DataPlane,
    /// ztunnel, after the CNI agent: Istio upgrades an ambient mesh istiod first, then the CNI
    /// agent, then ztunnel, and the stages keep that order on every change.
    NodeProxy,
    /// Observability addons.
    Addons,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Base,
        Stage::ControlPlane,
        Stage::DataPlane,
        Stage::NodeProxy,
        Stage::Addons,
    ];
}

/// The components meshop installs; names match `spec.components` and `status.components`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentId {
    Base,
    Istiod,
    IngressGateway,
    EgressGateway,
    Cni,
    Ztunnel,
    Prometheus,
    Grafana,
    Kiali,
    Jaeger,
    /// meshop's sidecar injection webhook registration (rendered only when the endpoint is known).
    Webhook,
}

impl ComponentId {
    pub const ALL: [ComponentId; 11] = [
        ComponentId::Base,
        ComponentId::Istiod,
        ComponentId::IngressGateway,
        ComponentId::EgressGateway,
        ComponentId::Cni,
        ComponentId::Ztunnel,
        ComponentId::Prometheus,
        ComponentId::Grafana,
        ComponentId::Kiali,
        ComponentId::Jaeger,
        ComponentId::Webhook,
    ];

    /// The name used in `spec.components`, `status.components` and `--component`.
    pub fn name(self) -> &'static str {
        match self {
            ComponentId::Base => "base",
            ComponentId::Istiod => "istiod",
            ComponentId::IngressGateway => "ingressGateway",
            ComponentId::EgressGateway => "egressGateway",
            ComponentId::Cni => "cni",
            ComponentId::Ztunnel => "ztunnel",
            ComponentId::Prometheus => "prometheus",
            ComponentId::Grafana => "grafana",
            ComponentId::Kiali => "kiali",
            ComponentId::Jaeger => "jaeger",
            ComponentId::Webhook => "webhook",
        }
    }

    /// The value of the `app.kubernetes.io/component` label.
    pub fn label(self) -> &'static str {
        match self {
            ComponentId::Base => "base",
            ComponentId::Istiod => "istiod",
            ComponentId::IngressGateway => "ingress-gateway",
            ComponentId::EgressGateway => "egress-gateway",
            ComponentId::Cni => "cni",
            ComponentId::Ztunnel => "ztunnel",
            ComponentId::Prometheus => "prometheus",
            ComponentId::Grafana => "grafana",
            ComponentId::Kiali => "kiali",
            ComponentId::Jaeger => "jaeger",
            ComponentId::Webhook => "sidecar-injector",
        }
    }

    pub fn stage(self) -> Stage {
        match self {
            ComponentId::Base => Stage::Base,
            ComponentId::Istiod => Stage::ControlPlane,
            // Injection is switched on only once istiod is ready: the webhook comes after it.
            ComponentId::IngressGateway
            | ComponentId::EgressGateway
            | ComponentId::Cni
            | ComponentId::Webhook => Stage::DataPlane,
            ComponentId::Ztunnel => Stage::NodeProxy,
            ComponentId::Prometheus
            | ComponentId::Grafana
            | ComponentId::Kiali
            | ComponentId::Jaeger => Stage::Addons,
        }
    }

    pub fn from_name(name: &str) -> Option<ComponentId> {
        ComponentId::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rendered object.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub component: ComponentId,
    pub resource: ApiResource,
    pub namespaced: bool,
    /// Shared between MeshInstalls (the namespace, Istio's CRDs): no owner reference, instance
    /// label `shared`; deleted by the finalizer of the last MeshInstall using them.
    pub shared: bool,
    pub object: DynamicObject,
    /// Fields set only when meshop creates the object and then left to another controller (a
    /// partial object, such as istiod's `failurePolicy` on its validating webhooks). meshop's
    /// regular apply never carries them, so it never takes them back. A list item named here must
    /// stay in the object for its whole life (its initial field keeps it alive).
    pub initial: Option<serde_json::Value>,
    /// Whether meshop applies the object over what is there, or leaves an existing one be.
    pub ownership: Ownership,
}

/// How meshop treats an object of the same name that is already in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ownership {
    /// Server-side applied, taking over every field meshop sets (drift is undone).
    #[default]
    Apply,
    /// Created where absent and kept up to date while meshop created it; one that someone else
    /// installed, or a newer release of it (by its Gateway API bundle version), is left as it
    /// is. Never deleted by meshop.
    KeepExisting,
}

impl Rendered {
    /// Wraps a typed object.
    pub fn new<K>(component: ComponentId, object: &K) -> Rendered
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        let value = serde_json::to_value(object).expect("k8s-openapi objects always serialize");
        Rendered {
            component,
            resource: ApiResource::erase::<K>(&()),
            namespaced: object.meta().namespace.is_some(),
            shared: false,
            object: serde_json::from_value(value).expect("a serialized object is a DynamicObject"),
            initial: None,
            ownership: Ownership::Apply,
        }
    }

    /// Sets the fields applied only at creation (see [`Rendered::initial`]).
    pub fn with_initial(mut self, initial: serde_json::Value) -> Rendered {
        self.initial = Some(initial);
        self
    }

    /// The object as meshop creates it: the applied fields plus the initial ones.
    pub fn creation_object(&self) -> DynamicObject {
        let mut object = self.object.clone();
        if let Some(initial) = &self.initial {
            merge(&mut object.data, initial);
        }
        object
    }

    /// The initial fields alone as an apply patch of this object (identity plus those fields),
    /// for the field manager that keeps them until another controller changes them.
    pub fn initial_patch(&self) -> Option<DynamicObject> {
        let initial = self.initial.as_ref()?;
        let mut patch = DynamicObject::new(self.name(), &self.resource);
        patch.metadata.namespace = self.object.metadata.namespace.clone();
        patch.data = initial.clone();
        Some(patch)
    }

    pub fn stage(&self) -> Stage {
        self.component.stage()
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object.metadata.namespace.as_deref()
    }

    /// `Kind/namespace/name`, for messages and duplicate checks.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.resource.kind,
            self.namespace().unwrap_or(""),
            self.name()
        )
    }

    pub fn kind(&self) -> &str {
        &self.resource.kind
    }
}

/// Every object of an installation, in apply order: by stage, then cluster-scoped and
/// dependency-first kinds (CRDs, namespace, accounts, RBAC, config) before workloads, then by name.
/// Offline: without the injector's registration, which only a running operator can render.
/// Each component's overlays are applied (the one place they are): an overlay that does not
/// apply fails the whole rendering.
pub fn render(install: &Installation) -> Result<Vec<Rendered>, OverlayError> {
    render_with_injector(install, None)
}

/// [`render`], plus the injection webhook's registration when injection is on and `injector`
/// says where the webhook is.
pub fn render_with_injector(
    install: &Installation,
    injector: Option<&InjectorEndpoint>,
) -> Result<Vec<Rendered>, OverlayError> {
    let mut objects = Vec::new();
    objects.extend(mesh::namespace(install));
    objects.extend(istio_crds(install));
    objects.extend(gateway_api_crds::render(install));
    if install.istiod.enabled {
        objects.extend(istiod::render(install));
        // The default revision validates objects without a revision label. A revision-based
        // install has none: its revisions come and go, and a configuration's list of webhooks must
        // not change over its life (see `validation::render`).
        objects.push(validation::render(install, install.revision.is_empty()));
        objects.extend(mesh::render(install));
    }
    for g in install.gateways() {
        objects.extend(gateway::render(install, &g));
    }
    if install.cni.enabled {
        objects.extend(cni::render(install));
    }
    if install.ztunnel.enabled {
        objects.extend(ztunnel::render(install));
    }
    objects.extend(addons::render(install));
    if let Some(endpoint) = injector.filter(|_| install.injection.enabled) {
        objects.push(webhook::render(install, endpoint));
    }
    for object in objects.iter_mut() {
        common::finish(install, object);
    }
    overlays::apply(install, &mut objects)?;
    sort(&mut objects);
    Ok(objects)
}

/// A revision-based install: everything of `target` (its istiod, and the gateways, CNI and
/// addons, which follow the newest revision and roll to it only once its istiod is ready, one
/// stage later), the control plane (istiod and mesh config) of each `older` revision still
/// running, and one injection registration routing every revision and tag in `routes`.
pub fn render_revision_based(
    target: &Installation,
    older: &[Installation],
    injector: Option<&InjectorEndpoint>,
    routes: &[&str],
) -> Result<Vec<Rendered>, OverlayError> {
    let mut objects = render_with_injector(target, None)?;
    for install in older.iter().filter(|i| i.istiod.enabled) {
        let mut revision: Vec<Rendered> = istiod::render(install);
        // Objects labelled with an older revision are still validated by its istiod.
        revision.push(validation::render(install, false));
        revision.extend(mesh::render(install));
        for object in revision.iter_mut() {
            common::finish(install, object);
        }
        // The spec's istiod overlays apply to every revision's control plane.
        overlays::apply(install, &mut revision)?;
        objects.extend(revision);
    }
    if let Some(endpoint) = injector.filter(|_| target.injection.enabled) {
        let mut registration = webhook::render_routes(target, endpoint, routes);
        common::finish(target, &mut registration);
        objects.push(registration);
    }
    sort(&mut objects);
    Ok(objects)
}

/// Puts objects in apply order: by stage, then by the kind's position in
/// [`crate::kinds::MANAGED_KINDS`] (what others depend on first), then by component and name.
pub fn sort(objects: &mut [Rendered]) {
    objects.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
}

fn sort_key(o: &Rendered) -> (Stage, u8, ComponentId, Option<&str>, &str) {
    (
        o.stage(),
        crate::kinds::apply_order(&o.resource.group, o.kind()),
        o.component,
        o.namespace(),
        o.name(),
    )
}

/// Merges `overlay` into `base`: objects key by key, and lists of named items (`name` keys, as
/// in webhook lists) item by item; anything else is replaced.
fn merge(base: &mut serde_json::Value, overlay: &serde_json::Value) {
    use serde_json::Value;
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (key, value) in o {
                match b.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        b.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if o.iter().all(|i| i.get("name").is_some()) => {
            for item in o {
                match b.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// Multi-document YAML of the objects, as `meshop render` prints it (quoted for YAML 1.1 readers
/// such as kubectl, see [`crate::yaml`]).
pub fn to_yaml(objects: &[Rendered]) -> String {
    // As created: a user applying this output gets what meshop would create.
    let created: Vec<DynamicObject> = objects.iter().map(Rendered::creation_object).collect();
    crate::yaml::documents(created.iter()).expect("objects always serialize")
}

impl Rendered {
    /// The API handle for this object's kind and namespace.
    pub fn api(&self, client: &kube::Client) -> kube::Api<DynamicObject> {
        match self.namespace() {
            Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &self.resource),
            None => kube::Api::all_with(client.clone(), &self.resource),
        }
    }
}
