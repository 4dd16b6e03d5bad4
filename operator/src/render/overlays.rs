//! Overlays: the user's own patches on the objects meshop renders (`components.<c>.overlays`),
//! applied once every component's objects are built and finished, so whatever reads a rendering
//! (`meshop render`, `meshop diff`, the reconciler's plan) sees the patched objects.
//!
//! An overlay addresses one object of its component by kind and (optionally) name, and carries a
//! strategic merge patch ([`crate::strategic_merge`]) or an RFC 6902 JSON patch. Overlays apply in
//! order, each to the result of the ones before it. A patch that does not apply, or that would
//! change what meshop needs to own and find the object, is an [`OverlayError`]: the whole
//! rendering fails, so nothing of a half-patched installation is ever applied.
//!
//! Pure: no I/O.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::common::{LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_PART_OF};
use super::{ComponentId, Rendered};
use crate::api::{JsonPatchOp, Overlay};
use crate::effective::{GatewayKind, Installation};
use crate::strategic_merge::{self, Schema};

/// An overlay that does not apply: which one (its place in the spec), on which object, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}.overlays[{index}] ({target}): {reason}")]
pub struct OverlayError {
    /// The component's place in the spec, such as `components.istiod`.
    pub path: String,
    pub index: usize,
    /// `Kind name`, or `Kind` when the overlay names no object.
    pub target: String,
    pub reason: String,
}

/// Where a set of overlays is in the spec, the overlays, and which rendered objects they may
/// address: a component's, or for a gateway, that gateway's own (in its namespace, named after it).
struct Scope<'a> {
    path: String,
    overlays: &'a [Overlay],
    component: ComponentId,
    /// (namespace, name) of a gateway: its objects all carry its name.
    gateway: Option<(&'a str, &'a str)>,
}

impl Scope<'_> {
    fn holds(&self, o: &Rendered) -> bool {
        o.component == self.component
            && self.gateway.is_none_or(|(namespace, name)| {
                o.object.metadata.namespace.as_deref() == Some(namespace) && o.name() == name
            })
    }
}

/// Every set of overlays of `install`, by where it is in the spec.
fn scopes(install: &Installation) -> Vec<Scope<'_>> {
    let mut out = Vec::new();
    for (component, path, settings) in [
        (ComponentId::Istiod, "components.istiod", &install.istiod),
        (ComponentId::Cni, "components.cni", &install.cni),
        (ComponentId::Ztunnel, "components.ztunnel", &install.ztunnel),
        (
            ComponentId::Prometheus,
            "components.addons.prometheus",
            &install.prometheus,
        ),
        (
            ComponentId::Grafana,
            "components.addons.grafana",
            &install.grafana,
        ),
        (
            ComponentId::Kiali,
            "components.addons.kiali",
            &install.kiali,
        ),
        (
            ComponentId::Jaeger,
            "components.addons.jaeger",
            &install.jaeger,
        ),
    ] {
        out.push(Scope {
            path: path.to_string(),
            overlays: &settings.overlays,
            component,
            gateway: None,
        });
    }
    // The namespace and Istio's CRDs are shared by every MeshInstall of the cluster: two
    // MeshInstalls patching them differently would overwrite each other on every pass. The
    // webhook registration has no spec of its own. Both take no overlays.
    for (kind, default, settings) in [
        (
            GatewayKind::Ingress,
            "components.ingressGateway",
            &install.ingress_gateway,
        ),
        (
            GatewayKind::Egress,
            "components.egressGateway",
            &install.egress_gateway,
        ),
    ] {
        out.push(Scope {
            path: default.to_string(),
            overlays: &settings.overlays,
            component: super::gateway::component(kind),
            gateway: Some((install.namespace.as_str(), kind.default_name())),
        });
    }
    for g in &install.listed_gateways {
        let list = match g.kind {
            GatewayKind::Ingress => "components.ingressGateways",
            GatewayKind::Egress => "components.egressGateways",
        };
        out.push(Scope {
            path: format!("{list}[{}]", g.name),
            overlays: &g.settings.overlays,
            component: super::gateway::component(g.kind),
            gateway: Some((g.namespace.as_str(), g.name.as_str())),
        });
    }
    out
}

/// Applies the overlays of every component `objects` has (rendered and finished for `install`).
/// A component that is not rendered (switched off, or not part of an older revision's control
/// plane) ignores its overlays, as it ignores every other setting.
pub(super) fn apply(install: &Installation, objects: &mut [Rendered]) -> Result<(), OverlayError> {
    for scope in scopes(install) {
        if scope.overlays.is_empty() || !objects.iter().any(|o| scope.holds(o)) {
            continue;
        }
        let component = scope.component;
        for (index, overlay) in scope.overlays.iter().enumerate() {
            let target = match &overlay.name {
                Some(name) => format!("{} {name}", overlay.kind),
                None => overlay.kind.clone(),
            };
            let fail = |reason: String| OverlayError {
                path: scope.path.clone(),
                index,
                target: target.clone(),
                reason,
            };
            let matching: Vec<usize> = objects
                .iter()
                .enumerate()
                .filter(|(_, o)| scope.holds(o) && o.kind() == overlay.kind)
                .filter(|(_, o)| overlay.name.as_deref().is_none_or(|n| n == o.name()))
                .map(|(i, _)| i)
                .collect();
            let object = match matching[..] {
                [i] => &mut objects[i],
                [] => {
                    let rendered: Vec<String> = objects
                        .iter()
                        .filter(|o| scope.holds(o))
                        .map(|o| format!("{} {}", o.kind(), o.name()))
                        .collect();
                    return Err(fail(format!(
                        "meshop renders no such object for {component}; it renders {}",
                        rendered.join(", ")
                    )));
                }
                _ => {
                    return Err(fail(format!(
                        "{} objects of this kind are rendered for {component}; name one",
                        matching.len()
                    )));
                }
            };
            patch_object(object, overlay).map_err(fail)?;
        }
    }
    Ok(())
}

/// Applies one overlay to one object, or says why it cannot.
fn patch_object(object: &mut Rendered, overlay: &Overlay) -> Result<(), String> {
    let before =
        serde_json::to_value(&object.object).map_err(|e| format!("cannot be read: {e}"))?;
    let mut after = before.clone();
    match (&overlay.strategic_merge, &overlay.json_patch) {
        (Some(patch), None) => {
            if !patch.is_object() {
                return Err("strategicMerge must be an object".into());
            }
            strategic_merge::merge(&mut after, patch, Schema::for_kind(object.kind()))
                .map_err(|e| format!("strategicMerge does not apply: {e}"))?;
        }
        (None, Some(ops)) => json_patch(&mut after, ops)?,
        _ => return Err("an overlay takes exactly one of strategicMerge and jsonPatch".into()),
    }
    refuse(&before, &after, object)?;
    typed(object.kind(), &after)?;
    object.object = serde_json::from_value(after)
        .map_err(|e| format!("the patched object is not a Kubernetes object: {e}"))?;
    Ok(())
}

/// Applies an RFC 6902 patch; an operation that fails is named by its index.
fn json_patch(doc: &mut Value, ops: &[crate::api::JsonPatchOperation]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        let needs_value = matches!(
            op.op,
            JsonPatchOp::Add | JsonPatchOp::Replace | JsonPatchOp::Test
        );
        let needs_from = matches!(op.op, JsonPatchOp::Move | JsonPatchOp::Copy);
        if needs_value != op.value.is_some() {
            return Err(format!(
                "jsonPatch[{i}]: {:?} {} value",
                op.op,
                if needs_value { "needs a" } else { "takes no" }
            ));
        }
        if needs_from != op.from.is_some() {
            return Err(format!(
                "jsonPatch[{i}]: {:?} {} from",
                op.op,
                if needs_from { "needs a" } else { "takes no" }
            ));
        }
    }
    let patch: json_patch::Patch = serde_json::to_value(ops)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("jsonPatch is not an RFC 6902 patch: {e}"))?;
    json_patch::patch(doc, &patch).map_err(|e| {
        let op = &ops[e.operation.min(ops.len().saturating_sub(1))];
        let at = match &op.from {
            Some(from) => format!("{} (from {from})", op.path),
            None => op.path.clone(),
        };
        format!(
            "jsonPatch[{}] ({} {at}) does not apply: {}",
            e.operation,
            format!("{:?}", op.op).to_lowercase(),
            match e.kind {
                json_patch::PatchErrorKind::TestFailed => "the value there is not the one tested",
                json_patch::PatchErrorKind::InvalidFromPointer => "from names no value",
                json_patch::PatchErrorKind::InvalidPointer =>
                    "the path names no value (or no place for one)",
                json_patch::PatchErrorKind::CannotMoveInsideItself =>
                    "a value cannot move inside itself",
                _ => "it does not apply",
            }
        )
    })
}

/// The labels meshop finds, prunes and cleans up its objects by.
const MESHOP_LABELS: [&str; 4] = [
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
];

/// What an overlay may not change (docs/api.md, "What an overlay may not change").
fn refuse(before: &Value, after: &Value, object: &Rendered) -> Result<(), String> {
    for field in ["apiVersion", "kind"] {
        if before.get(field) != after.get(field) {
            return Err(format!(
                "changes {field}: an overlay patches an object, it cannot make it another one"
            ));
        }
    }
    let empty = serde_json::Map::new();
    let meta = |v: &Value| v.get("metadata").and_then(Value::as_object).cloned();
    let (old, new) = (
        meta(before).unwrap_or_else(|| empty.clone()),
        meta(after).unwrap_or_default(),
    );
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        if key == "labels" || key == "annotations" {
            continue;
        }
        if old.get(key) != new.get(key) {
            let why = match key.as_str() {
                "name" | "namespace" => {
                    "meshop finds, updates and prunes the object by its name and namespace"
                }
                "ownerReferences" => {
                    "the owner reference to the MeshInstall is how it is garbage-collected and pruned"
                }
                _ => "only metadata.labels and metadata.annotations may be patched",
            };
            return Err(format!("changes metadata.{key}: {why}"));
        }
    }
    let label = |m: &serde_json::Map<String, Value>, k: &str| {
        m.get("labels").and_then(|l| l.get(k)).cloned()
    };
    for key in MESHOP_LABELS {
        if label(&old, key).is_some() && label(&old, key) != label(&new, key) {
            return Err(format!(
                "changes or removes the label {key}: meshop finds, prunes and cleans up its objects by it"
            ));
        }
    }
    if before.get("status") != after.get("status") {
        return Err("sets status, which meshop does not apply".into());
    }
    if matches!(object.kind(), "Deployment" | "DaemonSet" | "StatefulSet")
        && before.pointer("/spec/selector") != after.pointer("/spec/selector")
    {
        return Err(
            "changes spec.selector, which the API server refuses to change after creation".into(),
        );
    }
    if let Some(initial) = &object.initial
        && let Some(path) = takes_initial(after, initial, "")
    {
        return Err(format!(
            "{path}: meshop sets it only at creation and leaves it to the controller that owns it after that; an overlay would take it back on every pass"
        ));
    }
    Ok(())
}

/// Where `object` sets a field of `initial` (the fields meshop leaves to another controller), or
/// lacks a named list item that `initial` keeps.
fn takes_initial(object: &Value, initial: &Value, path: &str) -> Option<String> {
    match (object, initial) {
        (Value::Object(o), Value::Object(i)) => i.iter().find_map(|(k, iv)| {
            let at = strategic_merge::join(path, k);
            match (o.get(k), iv) {
                (None, _) => None,
                (Some(ov), Value::Object(_) | Value::Array(_)) => takes_initial(ov, iv, &at),
                (Some(_), _) => Some(format!("sets {at}")),
            }
        }),
        (Value::Array(o), Value::Array(i)) => i.iter().find_map(|item| {
            let name = item.get("name")?;
            let at = format!("{path}[name={}]", name.as_str().unwrap_or_default());
            match o.iter().find(|x| x.get("name") == Some(name)) {
                None => Some(format!("removes {at}")),
                Some(found) => {
                    let mut rest = item.clone();
                    rest.as_object_mut()?.remove("name");
                    let mut found = found.clone();
                    found.as_object_mut()?.remove("name");
                    takes_initial(&found, &rest, &at)
                }
            }
        }),
        _ => None,
    }
}

/// Checks a patched object of a Kubernetes kind against its type: a value of the wrong type, or a
/// field the type does not have (which server-side apply would refuse on every pass).
fn typed(kind: &str, value: &Value) -> Result<(), String> {
    use k8s_openapi::api::admissionregistration::v1 as admission;
    use k8s_openapi::api::{apps, autoscaling, core, networking, policy, rbac};
    match kind {
        "Deployment" => check::<apps::v1::Deployment>(kind, value),
        "DaemonSet" => check::<apps::v1::DaemonSet>(kind, value),
        "Service" => check::<core::v1::Service>(kind, value),
        "ServiceAccount" => check::<core::v1::ServiceAccount>(kind, value),
        "ConfigMap" => check::<core::v1::ConfigMap>(kind, value),
        "Namespace" => check::<core::v1::Namespace>(kind, value),
        "ClusterRole" => check::<rbac::v1::ClusterRole>(kind, value),
        "ClusterRoleBinding" => check::<rbac::v1::ClusterRoleBinding>(kind, value),
        "Role" => check::<rbac::v1::Role>(kind, value),
        "RoleBinding" => check::<rbac::v1::RoleBinding>(kind, value),
        "HorizontalPodAutoscaler" => check::<autoscaling::v2::HorizontalPodAutoscaler>(kind, value),
        "PodDisruptionBudget" => check::<policy::v1::PodDisruptionBudget>(kind, value),
        "NetworkPolicy" => check::<networking::v1::NetworkPolicy>(kind, value),
        "MutatingWebhookConfiguration" => {
            check::<admission::MutatingWebhookConfiguration>(kind, value)
        }
        "ValidatingWebhookConfiguration" => {
            check::<admission::ValidatingWebhookConfiguration>(kind, value)
        }
        // Istio's own kinds: the API server's schema judges them.
        _ => Ok(()),
    }
}

fn check<K: DeserializeOwned + Serialize>(kind: &str, value: &Value) -> Result<(), String> {
    let typed: K = serde_json::from_value(value.clone())
        .map_err(|e| format!("the patched object is not a valid {kind}: {e}"))?;
    let back = serde_json::to_value(&typed).unwrap_or(Value::Null);
    match unknown_field(value, &back, "") {
        Some(path) => Err(format!("{path} is not a field of {kind}")),
        None => Ok(()),
    }
}

/// The first path set (not null) in `patched` that the typed round trip `typed` dropped.
fn unknown_field(patched: &Value, typed: &Value, path: &str) -> Option<String> {
    match (patched, typed) {
        (Value::Object(p), Value::Object(t)) => p.iter().find_map(|(k, v)| {
            let at = strategic_merge::join(path, k);
            match t.get(k) {
                None if !v.is_null() => Some(at),
                None => None,
                Some(tv) => unknown_field(v, tv, &at),
            }
        }),
        (Value::Array(p), Value::Array(t)) => p
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (pv, tv))| unknown_field(pv, tv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MeshInstallSpec;
    use crate::effective::Owner;
    use serde_json::json;

    fn install(yaml: &str) -> Installation {
        let spec: MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
        let owner = Owner {
            name: "mesh".into(),
            uid: Some("uid-1".into()),
        };
        Installation::resolve(owner, &spec).unwrap()
    }

    /// The minimal profile with these istiod overlays (YAML flow list).
    fn with_overlays(overlays: &str) -> Installation {
        install(&format!(
            "profile: minimal\ncomponents:\n  istiod:\n    overlays: {overlays}\n"
        ))
    }

    fn render(install: &Installation) -> Result<Vec<Rendered>, OverlayError> {
        super::super::render(install)
    }

    fn object(objects: &[Rendered], kind: &str, name: &str) -> Value {
        let o = objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"));
        serde_json::to_value(&o.object).unwrap()
    }

    fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
        deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn error(overlays: &str) -> String {
        render(&with_overlays(overlays)).unwrap_err().to_string()
    }

    #[test]
    fn each_gateway_takes_its_own_overlays_only() {
        let objects = render(&install(
            "profile: minimal\ncomponents:\n  ingressGateway:\n    enabled: true\n    overlays: [{kind: Deployment, jsonPatch: [{op: replace, path: /spec/replicas, value: 4}]}]\n  ingressGateways:\n  - name: internal\n    overlays: [{kind: Deployment, jsonPatch: [{op: replace, path: /spec/replicas, value: 7}]}]\n  - name: public\n",
        ))
        .unwrap();
        let replicas =
            |name: &str| object(&objects, "Deployment", name)["spec"]["replicas"].clone();
        assert_eq!(replicas("istio-ingressgateway"), 4);
        assert_eq!(replicas("internal"), 7);
        assert_eq!(replicas("public"), 1);
        // A listed gateway's overlay cannot reach another gateway's objects.
        let err = render(&install(
            "profile: minimal\ncomponents:\n  ingressGateways:\n  - name: internal\n    overlays: [{kind: Service, name: public, strategicMerge: {spec: {type: NodePort}}}]\n  - name: public\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("components.ingressGateways[internal].overlays[0] (Service public): meshop renders no such object"),
            "{err}"
        );
    }

    #[test]
    fn a_sidecar_and_a_field_meshop_sets_are_patched_in() {
        let plain = render(&install("profile: minimal")).unwrap();
        let before = object(&plain, "Deployment", "istiod");
        let discovery = container(&before, "discovery");
        let meshop_value = discovery["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "PILOT_ENABLE_ANALYSIS")
            .expect("meshop sets PILOT_ENABLE_ANALYSIS")["value"]
            .clone();
        assert_ne!(meshop_value, json!("overlaid"));
        let objects = render(&with_overlays(
            r#"[{kind: Deployment, name: istiod, strategicMerge: {spec: {template: {spec: {containers: [
                 {name: discovery, env: [{name: PILOT_ENABLE_ANALYSIS, value: overlaid}]},
                 {name: log-shipper, image: "example.com/shipper:1"}]}}}}},
               {kind: Deployment, name: istiod, jsonPatch: [{op: replace, path: /spec/replicas, value: 3}]}]"#,
        ))
        .unwrap();
        let after = object(&objects, "Deployment", "istiod");
        assert_eq!(after["spec"]["replicas"], 3);
        assert_eq!(
            container(&after, "log-shipper")["image"],
            "example.com/shipper:1"
        );
        let discovery_after = container(&after, "discovery");
        let env = discovery_after["env"].as_array().unwrap();
        assert_eq!(
            env.iter()
                .find(|e| e["name"] == "PILOT_ENABLE_ANALYSIS")
                .unwrap()["value"],
            "overlaid"
        );
        // Everything else meshop renders is kept: the other variables, in their order.
        let names = |c: &Value| -> Vec<String> {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(discovery_after), names(discovery));
        assert_eq!(discovery_after["image"], discovery["image"]);
        // Objects the overlays do not name are untouched.
        assert_eq!(
            object(&objects, "Service", "istiod"),
            object(&plain, "Service", "istiod")
        );
    }

    #[test]
    fn an_overlay_without_a_name_patches_the_components_only_object_of_that_kind() {
        let yaml = "profile: minimal\nupdateStrategy: RevisionBased\nversion: 1.31.1\ncomponents:\n  istiod:\n    overlays: [{kind: Deployment, jsonPatch: [{op: add, path: /metadata/annotations, value: {team: mesh}}]}]\n";
        let rb = install(yaml);
        let objects = render(&rb).unwrap();
        let d = object(&objects, "Deployment", "istiod-1-31-1");
        assert_eq!(d["metadata"]["annotations"]["team"], "mesh");
        // An older revision's control plane gets the spec's istiod overlays too.
        let spec: MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
        let older = Installation::resolve_at(rb.owner.clone(), &spec, Some("1.30.5")).unwrap();
        let both = super::super::render_revision_based(&rb, &[older], None, &[]).unwrap();
        let old = object(&both, "Deployment", "istiod-1-30-5");
        assert_eq!(old["metadata"]["annotations"]["team"], "mesh");
        // Several objects of the kind (Jaeger has more than one Service): the name is needed.
        let err = render(&install(
            "profile: minimal\ncomponents:\n  addons:\n    jaeger:\n      enabled: true\n      overlays: [{kind: Service, strategicMerge: {}}]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("components.addons.jaeger.overlays[0] (Service): ")
                && err.contains("objects of this kind are rendered for jaeger; name one"),
            "{err}"
        );
    }

    #[test]
    fn a_switched_off_component_ignores_its_overlays() {
        let objects = render(&install(
            "profile: minimal\ncomponents:\n  ingressGateway:\n    enabled: false\n    overlays: [{kind: Deployment, name: nothing, strategicMerge: {}}]\n",
        ))
        .unwrap();
        assert!(
            objects
                .iter()
                .all(|o| o.component != ComponentId::IngressGateway)
        );
    }

    #[test]
    fn an_overlay_naming_no_rendered_object_is_reported_with_what_is_rendered() {
        let err = error(
            "[{kind: Deployment, name: istiod}, {kind: Deployment, name: pilot, strategicMerge: {}}]",
        );
        // The first one carries neither patch.
        assert!(
            err.starts_with(
                "components.istiod.overlays[0] (Deployment istiod): an overlay takes exactly one"
            ),
            "{err}"
        );
        let err = error("[{kind: Deployment, name: pilot, strategicMerge: {spec: {replicas: 2}}}]");
        assert!(
            err.starts_with("components.istiod.overlays[0] (Deployment pilot): meshop renders no such object for istiod; it renders "),
            "{err}"
        );
        assert!(
            err.contains("Deployment istiod") && err.contains("Service istiod"),
            "{err}"
        );
        // The addons' place in the spec.
        let err = render(&install(
            "profile: minimal\ncomponents:\n  addons:\n    grafana:\n      enabled: true\n      overlays: [{kind: StatefulSet, strategicMerge: {}}]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("components.addons.grafana.overlays[0] (StatefulSet): meshop renders no such object for grafana"),
            "{err}"
        );
    }

    #[test]
    fn json_patch_errors_name_the_operation() {
        let err = error(
            "[{kind: Service, name: istiod, jsonPatch: [{op: add, path: /metadata/annotations, value: {}}, {op: remove, path: /spec/externalName}]}]",
        );
        assert_eq!(
            err,
            "components.istiod.overlays[0] (Service istiod): jsonPatch[1] (remove /spec/externalName) does not apply: the path names no value (or no place for one)"
        );
        let err = error(
            "[{kind: Deployment, name: istiod, jsonPatch: [{op: test, path: /spec/replicas, value: 7}]}]",
        );
        assert!(
            err.ends_with("jsonPatch[0] (test /spec/replicas) does not apply: the value there is not the one tested"),
            "{err}"
        );
        let err = error(
            "[{kind: Deployment, name: istiod, jsonPatch: [{op: copy, path: /spec/x, from: /spec/nope}]}]",
        );
        assert!(
            err.contains(
                "jsonPatch[0] (copy /spec/x (from /spec/nope)) does not apply: from names no value"
            ),
            "{err}"
        );
        let err = error(
            "[{kind: Deployment, name: istiod, jsonPatch: [{op: add, path: /spec/replicas}]}]",
        );
        assert!(err.ends_with("jsonPatch[0]: Add needs a value"), "{err}");
        // An explicit null is a value: added, then refused as no field of the type (the API
        // server would drop it), rather than read as a missing value.
        let err = error(
            "[{kind: ConfigMap, name: istio, jsonPatch: [{op: add, path: /data/extra, value: null}]}]",
        );
        assert!(err.contains("not a valid ConfigMap"), "{err}");
    }

    #[test]
    fn type_mismatches_and_unknown_fields_are_reported() {
        let err =
            error("[{kind: Deployment, name: istiod, strategicMerge: {spec: {replicas: three}}}]");
        assert!(
            err.contains(
                "the patched object is not a valid Deployment: invalid type: string \"three\""
            ),
            "{err}"
        );
        let err = error(
            "[{kind: Deployment, name: istiod, strategicMerge: {spec: {template: {spec: {containers: [{name: discovery, imagePullPolicyy: Always}]}}}}}]",
        );
        assert!(
            err.ends_with(
                "(Deployment istiod): spec.template.spec.containers[0].imagePullPolicyy is not a field of Deployment"
            ),
            "{err}"
        );
        let err = error(
            "[{kind: Deployment, name: istiod, strategicMerge: {spec: {template: {spec: {containers: [{image: x}]}}}}}]",
        );
        assert!(
            err.contains("strategicMerge does not apply: at spec.template.spec.containers: an item of this list has no \"name\""),
            "{err}"
        );
        // A quantity written as a number is a quantity.
        render(&with_overlays(
            "[{kind: Deployment, name: istiod, strategicMerge: {spec: {template: {spec: {containers: [{name: discovery, resources: {limits: {cpu: 2}}}]}}}}}]",
        ))
        .unwrap();
    }

    #[test]
    fn a_network_policy_takes_overlays_and_is_checked_against_its_type() {
        // A port opened by an overlay (for a container port another overlay adds).
        let with = |overlay: &str| {
            install(&format!(
                "profile: minimal\nglobal: {{networkPolicy: {{enabled: true}}}}\ncomponents:\n  istiod:\n    overlays: [{overlay}]\n"
            ))
        };
        let objects = render(&with(
            "{kind: NetworkPolicy, jsonPatch: [{op: add, path: /spec/ingress/0/ports/-, value: {port: 9876, protocol: TCP}}]}",
        ))
        .unwrap();
        let ports = &object(&objects, "NetworkPolicy", "istiod")["spec"]["ingress"][0]["ports"];
        assert_eq!(
            ports.as_array().unwrap().last(),
            Some(&json!({"port": 9876, "protocol": "TCP"}))
        );
        let err = render(&with(
            "{kind: NetworkPolicy, strategicMerge: {spec: {ingres: []}}}",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("(NetworkPolicy): spec.ingres is not a field of NetworkPolicy"),
            "{err}"
        );
    }

    #[test]
    fn what_meshop_owns_the_object_by_is_refused() {
        for (overlay, want) in [
            (
                "{kind: Deployment, name: istiod, jsonPatch: [{op: replace, path: /metadata/name, value: other}]}",
                "changes metadata.name: meshop finds",
            ),
            (
                "{kind: Deployment, name: istiod, strategicMerge: {metadata: {namespace: elsewhere}}}",
                "changes metadata.namespace",
            ),
            (
                "{kind: Deployment, name: istiod, jsonPatch: [{op: replace, path: /kind, value: StatefulSet}]}",
                "changes kind",
            ),
            (
                "{kind: Deployment, name: istiod, jsonPatch: [{op: replace, path: /apiVersion, value: apps/v1beta1}]}",
                "changes apiVersion",
            ),
            (
                "{kind: Deployment, name: istiod, strategicMerge: {metadata: {labels: {app.kubernetes.io/managed-by: null}}}}",
                "changes or removes the label app.kubernetes.io/managed-by",
            ),
            (
                "{kind: Service, name: istiod, strategicMerge: {metadata: {labels: {app.kubernetes.io/instance: other}}}}",
                "changes or removes the label app.kubernetes.io/instance",
            ),
            (
                "{kind: Deployment, name: istiod, jsonPatch: [{op: remove, path: /metadata/ownerReferences/0}]}",
                "changes metadata.ownerReferences: the owner reference",
            ),
            (
                "{kind: Deployment, name: istiod, strategicMerge: {metadata: {finalizers: [example.com/keep]}}}",
                "changes metadata.finalizers: only metadata.labels and metadata.annotations",
            ),
            (
                "{kind: Deployment, name: istiod, strategicMerge: {status: {replicas: 1}}}",
                "sets status",
            ),
            (
                "{kind: Deployment, name: istiod, strategicMerge: {spec: {selector: {matchLabels: {app: other}}}}}",
                "changes spec.selector",
            ),
            (
                "{kind: ValidatingWebhookConfiguration, strategicMerge: {webhooks: [{name: rev.validation.istio.io, failurePolicy: Ignore}]}}",
                "sets webhooks[name=rev.validation.istio.io].failurePolicy: meshop sets it only at creation",
            ),
            (
                "{kind: ValidatingWebhookConfiguration, strategicMerge: {webhooks: [{name: rev.validation.istio.io, $patch: delete}]}}",
                "removes webhooks[name=rev.validation.istio.io]",
            ),
        ] {
            let err = error(&format!("[{overlay}]"));
            assert!(err.contains(want), "{overlay}: {err}");
        }
        // Labels and annotations of its own are the user's.
        let objects = render(&with_overlays(
            "[{kind: Deployment, name: istiod, strategicMerge: {metadata: {labels: {team: mesh}}, spec: {template: {metadata: {labels: {team: mesh}}}}}}]",
        ))
        .unwrap();
        let d = object(&objects, "Deployment", "istiod");
        assert_eq!(d["metadata"]["labels"]["team"], "mesh");
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "meshop"
        );
    }

    #[test]
    fn kind_and_name_address_one_object_of_a_component() {
        // Overlays address objects by kind and name within a component: that must be unique in
        // every rendering.
        let specs = [
            "profile: demo\ncomponents: {cni: {enabled: true}}\ninjection: {trafficCapture: cni}",
            "profile: production",
            "profile: performance",
            "profile: minimal\nrevision: canary",
        ];
        for spec in specs {
            let objects = render(&install(spec)).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for o in &objects {
                assert!(
                    seen.insert((o.component, o.kind().to_string(), o.name().to_string())),
                    "{spec}: {} {} {} twice",
                    o.component,
                    o.kind(),
                    o.name()
                );
            }
        }
    }
}
