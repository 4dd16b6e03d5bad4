//! The admission decision: an AdmissionRequest and a [`Snapshot`] of the view in, an
//! AdmissionResponse out. No I/O and no HTTP (that is [`super::http`]): everything here is a
//! function of its inputs, so it is tested without a server.
//!
//! The path of a pod: [`select_revision`] says which revision its labels ask for, the snapshot
//! gives that revision's settings, [`inject::decide_selected`] applies the vetoes (protected namespace,
//! opt-out, hostNetwork, already injected), and [`inject::inject_on`] (with the nodes' kubelet
//! versions, which decide `sidecarMode: auto`) plus [`inject::patch`] build the JSON patch.

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use super::view::Snapshot;
use crate::inject::{self, Decision, SkipReason, select_revision};

/// The only AdmissionReview version meshop registers for.
const REVIEW_VERSION: &str = "admission.k8s.io/v1";
/// Where a pod lands when neither the request nor the object names a namespace.
const FALLBACK_NAMESPACE: &str = "default";

/// What the webhook does with one request.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Not a v1 Pod CREATE in a v1 review: admitted untouched, with this warning.
    Ignored(String),
    /// Admitted without a sidecar, for this reason.
    Unchanged(Unchanged),
    /// Admitted with the patch that adds `revision`'s sidecar.
    Injected {
        revision: String,
        patch: json_patch::Patch,
    },
    /// Refused with this reason: the pod's author has something to fix (a bad annotation, an
    /// object that is not a pod). Istio refuses too, rather than start a pod without the sidecar
    /// its owner asked for.
    Denied(String),
}

/// Why a pod is admitted as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unchanged {
    /// No MeshInstall serves the revision the labels ask for.
    NoRevision(String),
    /// The revision's MeshInstall has `injection.enabled: false`.
    InjectionDisabled(String),
    /// The engine's selection said no.
    Skipped(SkipReason),
}

/// The webhook's answer to `req`, from `view`.
pub(crate) fn admit(
    mut req: AdmissionRequest<DynamicObject>,
    view: &Snapshot,
) -> AdmissionResponse {
    let object = req.object.take();
    let verdict = decide(&req, object, view);
    respond(&req, verdict)
}

/// The decision for `req`, whose object (taken out of it, so a large pod is moved rather than
/// copied) is `object`.
pub(crate) fn decide(
    req: &AdmissionRequest<DynamicObject>,
    object: Option<DynamicObject>,
    view: &Snapshot,
) -> Verdict {
    let api_version = &req.types.api_version;
    if api_version != REVIEW_VERSION {
        return Verdict::Ignored(format!(
            "meshop injection webhook expects {REVIEW_VERSION}, got {api_version:?}; pod admitted without a sidecar"
        ));
    }
    let k = &req.kind;
    let pod_create = k.group.is_empty()
        && k.version == "v1"
        && k.kind == "Pod"
        && matches!(req.operation, Operation::Create);
    if !pod_create || req.sub_resource.is_some() {
        return Verdict::Ignored(format!(
            "meshop injection webhook only handles v1 Pod CREATE; got {}/{} {} {:?}",
            k.group, k.version, k.kind, req.operation
        ));
    }
    let Some(object) = object else {
        return Verdict::Denied("admission request carries no pod".into());
    };
    let mut pod = match pod_from(object) {
        Ok(p) => p,
        Err(e) => return Verdict::Denied(format!("object is not a valid Pod: {e}")),
    };
    // Pods from a template have no namespace in the object yet; the request has it.
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| FALLBACK_NAMESPACE.into());
    pod.metadata.namespace = Some(namespace.clone());
    let no_labels = Default::default();
    let ns_labels = view.namespace_labels(&namespace).unwrap_or(&no_labels);

    let Some(revision) = select_revision(ns_labels, &pod) else {
        return Verdict::Unchanged(Unchanged::Skipped(SkipReason::NotSelected));
    };
    let Some(rc) = view.revision(revision) else {
        return Verdict::Unchanged(Unchanged::NoRevision(revision.into()));
    };
    if !rc.enabled {
        return Verdict::Unchanged(Unchanged::InjectionDisabled(revision.into()));
    }
    // select_revision chose the revision (a tag resolved to it in the snapshot): only vetoes remain.
    match inject::decide_selected(&namespace, &pod, &rc.config) {
        Decision::Skip(reason) => Verdict::Unchanged(Unchanged::Skipped(reason)),
        Decision::Inject => match inject::inject_on(&pod, &rc.config, view.kubelets()) {
            Ok(injected) => Verdict::Injected {
                revision: revision.into(),
                patch: inject::patch(&pod, &injected),
            },
            Err(e) => Verdict::Denied(format!("sidecar injection failed: {e}")),
        },
    }
}

/// The AdmissionResponse carrying `verdict`.
fn respond(req: &AdmissionRequest<DynamicObject>, verdict: Verdict) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match verdict {
        Verdict::Ignored(warning) => resp.warnings = Some(vec![warning]),
        Verdict::Unchanged(why) => {
            tracing::debug!(uid = %req.uid, %namespace, reason = ?why, "not injecting");
        }
        Verdict::Injected { revision, patch } => match resp.with_patch(patch) {
            Ok(patched) => {
                tracing::debug!(uid = %req.uid, %namespace, %revision, "injected sidecar");
                return patched;
            }
            Err(e) => return deny(req, format!("could not encode the injection patch: {e}")),
        },
        Verdict::Denied(message) => return deny(req, message),
    }
    resp
}

fn deny(req: &AdmissionRequest<DynamicObject>, message: String) -> AdmissionResponse {
    let mut resp = AdmissionResponse::from(req);
    resp.allowed = false;
    resp.result = Status::failure(&message, "BadRequest").with_code(400);
    resp
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::keys;
    use crate::webhook::view::View;
    use crate::webhook::view::tests::{install, labels, view};

    fn request(namespace: &str, object: Value) -> AdmissionRequest<DynamicObject> {
        let review: kube::core::admission::AdmissionReview<DynamicObject> =
            serde_json::from_value(json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "uid-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": namespace, "operation": "CREATE",
                    "userInfo": {"username": "tester"}, "object": object
                }
            }))
            .unwrap();
        review.try_into().unwrap()
    }

    fn pod(pod_labels: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": pod_labels},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        })
    }

    fn verdict(v: &View, namespace: &str, object: Value) -> Verdict {
        let mut req = request(namespace, object);
        let object = req.object.take();
        decide(&req, object, &v.snapshot())
    }

    fn unchanged(v: &View, namespace: &str, object: Value) -> Unchanged {
        match verdict(v, namespace, object) {
            Verdict::Unchanged(why) => why,
            other => panic!("expected the pod unchanged, got {other:?}"),
        }
    }

    /// The injected pod's discovery address, which names the revision that injected it.
    fn injected_by(v: &View, namespace: &str, object: Value) -> (String, String) {
        let Verdict::Injected { revision, patch } = verdict(v, namespace, object.clone()) else {
            panic!("expected a sidecar");
        };
        let mut doc = object;
        json_patch::patch(&mut doc, &patch).unwrap();
        let proxy = ["initContainers", "containers"]
            .iter()
            .flat_map(|list| doc["spec"][list].as_array().into_iter().flatten())
            .find(|c| c["name"] == "istio-proxy")
            .expect("an istio-proxy container");
        let ca = proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "CA_ADDR")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
        (revision, ca)
    }

    #[test]
    fn enabled_namespace_gets_a_patch_for_the_default_revision() {
        let (revision, ca) = injected_by(&view(), "apps", pod(json!({"app": "web"})));
        assert_eq!(revision, "default");
        assert_eq!(ca, "istiod.istio-system.svc:15012");

        let resp = admit(request("apps", pod(json!({}))), &view().snapshot());
        assert!(resp.allowed);
        assert_eq!(resp.uid, "uid-1");
        let patch: json_patch::Patch = serde_json::from_slice(&resp.patch.unwrap()).unwrap();
        assert!(!patch.0.is_empty());
    }

    /// Where the injected pod's istio-proxy is: `initContainers` (native) or `containers`.
    fn proxy_list(v: &View, namespace: &str, object: Value) -> &'static str {
        let Verdict::Injected { patch, .. } = verdict(v, namespace, object.clone()) else {
            panic!("expected a sidecar");
        };
        let mut doc = object;
        json_patch::patch(&mut doc, &patch).unwrap();
        let has = |list: &str| {
            doc["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == "istio-proxy")
        };
        match (has("initContainers"), has("containers")) {
            (true, false) => "initContainers",
            (false, true) => "containers",
            other => panic!("istio-proxy in {other:?}"),
        }
    }

    #[test]
    fn auto_mode_asks_the_watched_nodes() {
        let v = view();
        let mut auto = install("");
        auto.injection.sidecar_mode = crate::api::SidecarMode::Auto;
        v.set_install("mesh", &auto);
        v.set_node("new", Some("v1.35.0"));
        v.set_node("old", Some("v1.32.3"));
        let on = |node: Option<&str>| {
            let mut p = pod(json!({}));
            if let Some(n) = node {
                p["spec"]["nodeName"] = json!(n);
            }
            p
        };
        assert_eq!(proxy_list(&v, "apps", on(None)), "containers");
        assert_eq!(proxy_list(&v, "apps", on(Some("new"))), "initContainers");
        assert_eq!(proxy_list(&v, "apps", on(Some("old"))), "containers");
        let mut forced = on(None);
        forced["metadata"]["annotations"] = json!({(keys::NATIVE_SIDECAR): "true"});
        assert_eq!(proxy_list(&v, "apps", forced), "initContainers");
        v.remove_node("old");
        assert_eq!(proxy_list(&v, "apps", on(None)), "initContainers");

        let mut bad = on(None);
        bad["metadata"]["annotations"] = json!({(keys::NATIVE_SIDECAR): "maybe"});
        let resp = admit(request("apps", bad), &v.snapshot());
        assert!(!resp.allowed);
        assert!(resp.result.message.contains("nativeSidecar"), "{resp:?}");
    }

    #[test]
    fn hostile_annotation_values_are_refused_or_stay_strings_in_the_patch() {
        use crate::inject::hostile_tests::{Expectations, HONOURED, check_refusal, hostile_values};
        let v = view();
        let snapshot = v.snapshot();
        let object = |key: &str, value: Option<&str>| {
            let mut p = pod(json!({"app": "web"}));
            if let Some(val) = value {
                p["metadata"]["annotations"] = json!({ (key): val });
            }
            p
        };
        let mut outcomes = (0, 0);
        for (key, benign) in HONOURED {
            let patched = |value: Option<&str>| -> Result<Value, String> {
                let original = object(key, value);
                // Through the wire format, as the API server sends it.
                let review: kube::core::admission::AdmissionReview<DynamicObject> =
                    serde_json::from_value(json!({
                        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "request": {
                            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                            "resource": {"group": "", "version": "v1", "resource": "pods"},
                            "namespace": "apps", "operation": "CREATE",
                            "userInfo": {"username": "tester"}, "object": original
                        }
                    }))
                    .map_err(|e| e.to_string())?;
                let resp = admit(review.try_into().map_err(|_| "no request")?, &snapshot);
                if !resp.allowed {
                    return Err(resp.result.message);
                }
                let patch: json_patch::Patch =
                    serde_json::from_slice(&resp.patch.ok_or("no patch")?).unwrap();
                let mut doc = original;
                json_patch::patch(&mut doc, &patch).unwrap();
                Ok(doc)
            };
            let expect = Expectations::new(key, benign, "", |v| patched(v).unwrap());
            for value in hostile_values().iter().filter(|v| v.len() < 100_000) {
                match patched(Some(value)) {
                    Ok(doc) => {
                        outcomes.0 += 1;
                        expect.check(key, value, &doc, "");
                    }
                    Err(message) => {
                        outcomes.1 += 1;
                        check_refusal(key, value, &message);
                    }
                }
            }
        }
        assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
    }

    #[test]
    fn rev_labels_pick_the_revision_namespace_first() {
        let v = view();
        // The namespace's istio.io/rev beats the pod's.
        let (revision, ca) = injected_by(&v, "canary-apps", pod(json!({(keys::REV): "other"})));
        assert_eq!(
            (revision.as_str(), ca.as_str()),
            ("canary", "istiod-canary.istio-system.svc:15012")
        );
        // In an unlabelled namespace the pod's own label chooses.
        let (revision, _) = injected_by(&v, "plain", pod(json!({(keys::REV): "canary"})));
        assert_eq!(revision, "canary");
        // istio-injection=enabled always means the default revision.
        let (revision, _) = injected_by(&v, "apps", pod(json!({(keys::REV): "canary"})));
        assert_eq!(revision, "default");
    }

    #[test]
    fn opt_out_is_admitted_without_a_patch() {
        let v = view();
        let opted_out = pod(json!({(keys::INJECT): "false"}));
        assert_eq!(
            unchanged(&v, "apps", opted_out.clone()),
            Unchanged::Skipped(SkipReason::OptedOut)
        );
        let resp = admit(request("apps", opted_out), &v.snapshot());
        assert!(resp.allowed && resp.patch.is_none() && resp.warnings.is_none());
    }

    #[test]
    fn protected_namespaces_are_skipped_even_when_labelled() {
        let v = view();
        assert_eq!(
            unchanged(&v, "kube-system", pod(json!({}))),
            Unchanged::Skipped(SkipReason::ProtectedNamespace("kube-system".into()))
        );
        v.set_namespace(
            "istio-system",
            labels(&[(keys::NAMESPACE_INJECTION, "enabled")]),
        );
        assert_eq!(
            unchanged(&v, "istio-system", pod(json!({}))),
            Unchanged::Skipped(SkipReason::ProtectedNamespace("istio-system".into()))
        );
    }

    #[test]
    fn unselected_unserved_and_disabled_revisions_leave_the_pod_alone() {
        let v = view();
        assert_eq!(
            unchanged(&v, "plain", pod(json!({}))),
            Unchanged::Skipped(SkipReason::NotSelected)
        );
        assert_eq!(
            unchanged(&v, "nowhere", pod(json!({}))),
            Unchanged::Skipped(SkipReason::NotSelected),
            "a namespace the watch has not seen has no labels"
        );
        assert_eq!(
            unchanged(&v, "plain", pod(json!({(keys::REV): "blue"}))),
            Unchanged::NoRevision("blue".into())
        );
        let mut off = install("");
        off.injection.enabled = false;
        v.set_install("mesh", &off);
        assert_eq!(
            unchanged(&v, "apps", pod(json!({}))),
            Unchanged::InjectionDisabled("default".into())
        );
    }

    #[test]
    fn bad_annotation_and_bad_object_are_denied() {
        let v = view();
        let mut p = pod(json!({}));
        p["metadata"]["annotations"] = json!({(keys::PROXY_MEMORY): "lots"});
        let resp = admit(request("apps", p), &v.snapshot());
        assert!(!resp.allowed);
        assert_eq!(resp.result.code, 400);
        assert!(resp.result.message.contains("proxyMemory"), "{resp:?}");

        let not_a_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": 7});
        assert!(matches!(
            verdict(&v, "apps", not_a_pod),
            Verdict::Denied(m) if m.contains("not a valid Pod")
        ));
        let mut req = request("apps", pod(json!({})));
        req.object = None;
        assert!(matches!(
            decide(&req, None, &v.snapshot()),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn other_operations_and_review_versions_are_ignored_with_a_warning() {
        let v = view().snapshot();
        let mut update = request("apps", pod(json!({})));
        update.operation = Operation::Update;
        let resp = admit(update, &v);
        assert!(resp.allowed && resp.patch.is_none());
        assert!(resp.warnings.unwrap()[0].contains("Update"));

        let mut old = request("apps", pod(json!({})));
        old.types.api_version = "admission.k8s.io/v1beta1".into();
        let resp = admit(old, &v);
        assert!(resp.allowed && resp.patch.is_none());
        assert!(resp.warnings.unwrap()[0].contains("v1beta1"));
    }

    #[test]
    fn the_request_namespace_is_the_pods() {
        // The object carries no namespace (a pod from a template); the request's is used, so
        // ISTIO_META_OWNER names it.
        let Verdict::Injected { patch, .. } = verdict(&view(), "apps", pod(json!({}))) else {
            panic!("expected a sidecar");
        };
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("namespaces/apps/"), "{text}");
        let empty = View::new();
        empty.set_install("mesh", &install(""));
        assert!(
            empty.snapshot().namespace_labels("apps").is_none()
                && matches!(
                    verdict(&empty, "apps", pod(json!({(keys::INJECT): "true"}))),
                    Verdict::Injected { .. }
                ),
            "a pod may opt in where the namespace is unknown"
        );
    }
}
