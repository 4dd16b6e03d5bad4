//! The admission decision: an AdmissionRequest and a [`Snapshot`] of the view in, an
//! AdmissionResponse out. No I/O and no HTTP (that is [`super::http`]): everything here is a
//! function of its inputs, so it is tested without a server.
//!
//! The path of a pod: [`select_revision`] says which revision its labels ask for, the snapshot
//! gives that revision's settings, [`inject::decide_selected`] applies the vetoes (protected namespace,
//! opt-out, hostNetwork, already injected), and [`inject::inject_on`] (with the nodes' kubelet
//! versions, which decide `sidecarMode: auto`) plus [`inject::patch`] build the JSON patch.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{DeserializeSeed, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::view::Snapshot;
use crate::inject::{self, Decision, SkipReason, select_revision};

/// The only AdmissionReview version meshop registers for.
const REVIEW_VERSION: &str = "admission.k8s.io/v1";
/// Where a pod lands when neither the request nor the object names a namespace.
const FALLBACK_NAMESPACE: &str = "default";

/// The parts of an AdmissionReview the webhook reads, decoded in one pass over the body. The
/// object stays a slice of the body until the request is known to be a Pod CREATE; then it is
/// decoded once, straight into a typed [`Pod`]. Other fields (oldObject, userInfo...) are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Review<'a> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(borrow, default)]
    pub request: Option<Request<'a>>,
}

/// An AdmissionRequest, as far as injection needs it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Request<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// The pod of a request, decoded into what injection needs. apiVersion and kind are not checked
/// (the request's `kind` already says Pod). The containers' `env` is left undecoded: it is the one
/// part of a pod that grows without bound (thousands of variables), and injection neither reads
/// nor changes it, so it would only be decoded, copied into the injected pod, compared and
/// dropped. Absent from both the pod and the injected pod, it is absent from the patch, exactly
/// as an unchanged env is (a test holds the two patches equal).
fn decode_pod(raw: &RawValue) -> Result<Pod, serde_json::Error> {
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(default)]
        metadata: ObjectMeta,
        #[serde(borrow, default)]
        spec: Option<SpecFields<'a>>,
        #[serde(default)]
        status: Option<PodStatus>,
    }
    let Object {
        metadata,
        spec,
        status,
    } = serde_json::from_str(raw.get())?;
    let spec = match spec {
        None => None,
        Some(fields) => {
            let mut spec = PodSpec::deserialize(MapDeserializer::new(fields.rest.into_iter()))?;
            let unwrap = |list: Vec<ContainerWithoutEnv>| list.into_iter().map(|c| c.0).collect();
            spec.containers = fields.containers.flatten().map(unwrap).unwrap_or_default();
            spec.init_containers = fields.init_containers.flatten().map(unwrap);
            Some(spec)
        }
    };
    Ok(Pod {
        metadata,
        spec,
        status,
    })
}

/// A pod spec's fields: its container lists decoded in the same pass over the body (so an env of
/// thousands of variables is skipped once, not once per level), every other field still raw.
struct SpecFields<'a> {
    containers: Option<Option<Vec<ContainerWithoutEnv>>>,
    init_containers: Option<Option<Vec<ContainerWithoutEnv>>>,
    /// Every other field, in order, its value still a slice of the body and its name borrowed
    /// from it (unless it holds escapes).
    rest: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A field name, borrowed from the body when it holds no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for SpecFields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = SpecFields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a pod spec")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpecFields<'a>, A::Error> {
                let mut spec = SpecFields {
                    containers: None,
                    init_containers: None,
                    rest: Vec::with_capacity(map.size_hint().unwrap_or(8)),
                };
                while let Some(Key(k)) = map.next_key::<Key<'a>>()? {
                    let (list, name) = match k.as_ref() {
                        "containers" => (&mut spec.containers, "containers"),
                        "initContainers" => (&mut spec.init_containers, "initContainers"),
                        _ => {
                            spec.rest.push((k, map.next_value()?));
                            continue;
                        }
                    };
                    if list.is_some() {
                        return Err(serde::de::Error::duplicate_field(name));
                    }
                    *list = Some(map.next_value()?);
                }
                Ok(spec)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A container decoded with its `env` skipped, in the same pass: k8s-openapi's own decoder reads
/// the object through [`SkipEnv`], which never hands it the `env` field.
struct ContainerWithoutEnv(Container);

impl<'de> Deserialize<'de> for ContainerWithoutEnv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ContainerWithoutEnv;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a container")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ContainerWithoutEnv, A::Error> {
                Container::deserialize(MapAccessDeserializer::new(SkipEnv(map)))
                    .map(ContainerWithoutEnv)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object's fields but `env`, whose value is skipped unread (not decoded, not kept).
struct SkipEnv<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipEnv<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(Key(key)) = self.0.next_key::<Key<'de>>()? {
            if key == "env" {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// The webhook's answer to one request: what the AdmissionReview's `response` says.
#[derive(Debug)]
pub(crate) struct Response {
    pub uid: String,
    pub allowed: bool,
    /// The JSON patch, encoded (the wire format carries it base64-encoded).
    pub patch: Option<Vec<u8>>,
    pub warnings: Option<Vec<String>>,
    /// Why the pod is refused, when it is.
    pub denial: Option<Denial>,
}

/// The `status` of a refusal: HTTP-like code and message, shown to whoever created the pod.
#[derive(Debug)]
pub(crate) struct Denial {
    pub code: u16,
    pub message: String,
}

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

/// The webhook's answer to `req`, which came in a review of version `review_version`, from `view`.
pub(crate) fn admit(review_version: &str, req: &Request<'_>, view: &Snapshot) -> Response {
    let verdict = decide(review_version, req, view);
    respond(req, verdict)
}

/// Whether `req` is what the webhook handles: a v1 Pod CREATE (not a subresource).
fn is_pod_create(req: &Request<'_>) -> bool {
    let k = &req.kind;
    k.group.is_empty()
        && k.version == "v1"
        && k.kind == "Pod"
        && req.operation == "CREATE"
        && req.sub_resource.is_none()
}

/// The namespace whose labels [`decide`] will read for `req`, when it will read any: the HTTP
/// layer makes sure the view holds it first.
pub(crate) fn pod_create_namespace<'r>(
    review_version: &str,
    req: &'r Request<'_>,
) -> Option<&'r str> {
    (review_version == REVIEW_VERSION && is_pod_create(req))
        .then_some(req.namespace.as_deref())
        .flatten()
}

/// The decision for `req`.
pub(crate) fn decide(review_version: &str, req: &Request<'_>, view: &Snapshot) -> Verdict {
    if review_version != REVIEW_VERSION {
        return Verdict::Ignored(format!(
            "meshop injection webhook expects {REVIEW_VERSION}, got {review_version:?}; pod admitted without a sidecar"
        ));
    }
    let k = &req.kind;
    if !is_pod_create(req) {
        return Verdict::Ignored(format!(
            "meshop injection webhook only handles v1 Pod CREATE; got {}/{} {} {}",
            k.group, k.version, k.kind, req.operation
        ));
    }
    let Some(object) = req.object.filter(|o| o.get() != "null") else {
        return Verdict::Denied("admission request carries no pod".into());
    };
    let mut pod = match decode_pod(object) {
        Ok(pod) => pod,
        Err(e) => return Verdict::Denied(format!("object is not a valid Pod: {e}")),
    };
    // Pods from a template have no namespace in the object yet; the request has it.
    let namespace = req
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| FALLBACK_NAMESPACE.into());
    pod.metadata.namespace = Some(namespace.clone());
    if view.is_operator_namespace(&namespace) {
        return Verdict::Unchanged(Unchanged::Skipped(SkipReason::ProtectedNamespace(
            namespace,
        )));
    }
    // The HTTP layer reads a namespace the watch has not delivered before deciding
    // (`View::resolve_namespace`); should it still be unknown here, refuse: admitting the pod
    // would be a guess that its namespace asks for no sidecar.
    let Some(ns_labels) = view.namespace_labels(&namespace) else {
        return Verdict::Denied(format!(
            "namespace {namespace} is unknown to the injection webhook, so whether the pod needs a sidecar cannot be decided; retry"
        ));
    };

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
                // The pod is ours: the patch consumes it rather than copy it.
                patch: inject::patch_owned(pod, injected),
            },
            Err(e) => Verdict::Denied(format!("sidecar injection failed: {e}")),
        },
    }
}

/// The response carrying `verdict`.
fn respond(req: &Request<'_>, verdict: Verdict) -> Response {
    let mut resp = Response {
        uid: req.uid.clone(),
        allowed: true,
        patch: None,
        warnings: None,
        denial: None,
    };
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match verdict {
        Verdict::Ignored(warning) => resp.warnings = Some(vec![warning]),
        Verdict::Unchanged(why) => {
            tracing::debug!(uid = %req.uid, %namespace, reason = ?why, "not injecting");
        }
        Verdict::Injected { revision, patch } => {
            tracing::debug!(uid = %req.uid, %namespace, %revision, "injected sidecar");
            resp.patch = Some(inject::patch_json(&patch));
        }
        Verdict::Denied(message) => return deny(resp, message),
    }
    resp
}

fn deny(mut resp: Response, message: String) -> Response {
    resp.allowed = false;
    resp.denial = Some(Denial { code: 400, message });
    resp
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::inject::keys;
    use crate::webhook::view::View;
    use crate::webhook::view::tests::{install, labels, view};

    /// An AdmissionReview of a Pod CREATE, as the API server encodes it.
    fn review_body(namespace: &str, object: Value) -> String {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "uid-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "tester"}, "object": object
            }
        })
        .to_string()
    }

    fn request(body: &str) -> Request<'_> {
        serde_json::from_str::<Review<'_>>(body)
            .unwrap()
            .request
            .unwrap()
    }

    fn admit_body(body: &str, v: &Snapshot) -> Response {
        admit(REVIEW_VERSION, &request(body), v)
    }

    fn pod(pod_labels: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": pod_labels},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        })
    }

    fn verdict(v: &View, namespace: &str, object: Value) -> Verdict {
        let body = review_body(namespace, object);
        decide(REVIEW_VERSION, &request(&body), &v.snapshot())
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

        let resp = admit_body(&review_body("apps", pod(json!({}))), &view().snapshot());
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
        let resp = admit_body(&review_body("apps", bad), &v.snapshot());
        assert!(!resp.allowed);
        let message = &resp.denial.as_ref().unwrap().message;
        assert!(message.contains("nativeSidecar"), "{resp:?}");
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
                let body = review_body("apps", original.clone());
                let review: Review<'_> = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let resp = admit(
                    &review.api_version,
                    review.request.as_ref().ok_or("no request")?,
                    &snapshot,
                );
                if !resp.allowed {
                    return Err(resp.denial.map(|d| d.message).unwrap_or_default());
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

    /// The webhook leaves the containers' env undecoded; its patch must be the engine's patch on
    /// the whole pod, and a broken pod elsewhere is still refused.
    #[test]
    fn escaped_field_names_are_the_same_fields_and_a_repeated_one_is_refused() {
        // (Other repeated fields go to k8s-openapi's decoders, which keep the last, as they do
        // when a whole Pod is decoded.)
        let decode = |raw: &str| decode_pod(serde_json::from_str::<&RawValue>(raw).unwrap());
        let raw = r#"{"metadata":{},"spec":{"c\u006fntainers":[{"n\u0061me":"app","image":"nginx","env":[{"name":"A"}]}],"node\u004eame":"n1"}}"#;
        let spec = decode(raw).unwrap().spec.unwrap();
        assert_eq!(spec.containers[0].name, "app");
        assert_eq!(spec.containers[0].env, None, "env is left undecoded");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        for dup in [
            r#"{"spec":{"containers":[],"containers":[]}}"#,
            r#"{"spec":{"initContainers":null,"containers":[],"initContainers":[]}}"#,
        ] {
            let e = decode(dup).unwrap_err().to_string();
            assert!(e.contains("duplicate field"), "{dup}: {e}");
        }
    }

    #[test]
    fn the_patch_without_decoding_env_is_the_patch_of_the_whole_pod() {
        let v = view();
        let env: Vec<Value> = (0..50)
            .map(|i| json!({"name": format!("V{i}"), "value": "x"}))
            .chain([
                json!({"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
            ])
            .collect();
        let mut pods = Vec::new();
        for annotations in [json!({}), json!({(keys::REWRITE_PROBES): "false"})] {
            pods.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "labels": {"app": "web"}, "annotations": annotations},
                "spec": {
                    "initContainers": [{"name": "setup", "image": "busybox", "env": env.clone()}],
                    "containers": [
                        {"name": "app", "image": "nginx", "env": env.clone(),
                         "ports": [{"containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}},
                        {"name": "log", "image": "busybox", "env": []}
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {}}]
                }
            }));
        }
        pods.push(pod(json!({"app": "web"})));
        for object in pods {
            let Verdict::Injected { patch, .. } = verdict(&v, "apps", object.clone()) else {
                panic!("expected a sidecar");
            };
            let mut whole: Pod = serde_json::from_value(object.clone()).unwrap();
            whole.metadata.namespace = Some("apps".into());
            let snapshot = v.snapshot();
            let rc = snapshot.revision("default").unwrap();
            let injected = inject::inject_on(&whole, &rc.config, snapshot.kubelets()).unwrap();
            assert_eq!(
                serde_json::to_value(&patch).unwrap(),
                serde_json::to_value(inject::patch(&whole, &injected)).unwrap()
            );
            // The app's env reaches the injected pod untouched.
            let before = object["spec"]["containers"][0].get("env").cloned();
            let mut doc = object;
            json_patch::patch(&mut doc, &patch).unwrap();
            let app = doc["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "app")
                .unwrap();
            assert_eq!(app.get("env").cloned(), before);
        }
        let broken = json!({"metadata": {}, "spec": {"containers": [{"name": "a", "ports": "x"}]}});
        assert!(
            matches!(verdict(&v, "apps", broken), Verdict::Denied(m) if m.contains("not a valid Pod"))
        );
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
        let resp = admit_body(&review_body("apps", opted_out), &v.snapshot());
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
        assert!(
            matches!(verdict(&v, "nowhere", pod(json!({}))), Verdict::Denied(m) if m.contains("namespace nowhere is unknown")),
            "a namespace the view does not hold is never taken as unlabelled"
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
        let resp = admit_body(&review_body("apps", p), &v.snapshot());
        assert!(!resp.allowed);
        let denial = resp.denial.as_ref().unwrap();
        assert_eq!(denial.code, 400);
        assert!(denial.message.contains("proxyMemory"), "{resp:?}");

        let not_a_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": 7});
        assert!(matches!(
            verdict(&v, "apps", not_a_pod),
            Verdict::Denied(m) if m.contains("not a valid Pod")
        ));
        for object in [
            Value::Null,
            json!("a string"),
            json!({"metadata": {"labels": 3}}),
        ] {
            let body = review_body("apps", object);
            assert!(matches!(
                decide(REVIEW_VERSION, &request(&body), &v.snapshot()),
                Verdict::Denied(_)
            ));
        }
        let body = review_body("apps", Value::Null).replace(r#","object":null"#, "");
        assert!(!body.contains("object"), "{body}");
        assert!(matches!(
            decide(REVIEW_VERSION, &request(&body), &v.snapshot()),
            Verdict::Denied(m) if m.contains("no pod")
        ));
    }

    #[test]
    fn other_operations_and_review_versions_are_ignored_with_a_warning() {
        let v = view().snapshot();
        let body = review_body("apps", pod(json!({})));
        let mut update = request(&body);
        update.operation = "UPDATE".into();
        let resp = admit(REVIEW_VERSION, &update, &v);
        assert!(resp.allowed && resp.patch.is_none());
        assert!(resp.warnings.unwrap()[0].contains("UPDATE"));

        let resp = admit("admission.k8s.io/v1beta1", &request(&body), &v);
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
                    Verdict::Denied(_)
                ),
            "even a pod that opts in is refused while its namespace is unknown: its labels may veto"
        );
    }

    #[test]
    fn the_operators_own_namespace_is_never_injected() {
        let v = view();
        v.set_namespace(
            "meshop-system",
            labels(&[(keys::NAMESPACE_INJECTION, "enabled")]),
        );
        assert!(matches!(
            verdict(&v, "meshop-system", pod(json!({}))),
            Verdict::Injected { .. }
        ));
        v.set_operator_namespace("meshop-system");
        assert_eq!(
            unchanged(&v, "meshop-system", pod(json!({}))),
            Unchanged::Skipped(SkipReason::ProtectedNamespace("meshop-system".into()))
        );
        // Known or not, labelled or not: the operator's namespace needs no lookup.
        v.remove_namespace("meshop-system");
        assert_eq!(
            unchanged(&v, "meshop-system", pod(json!({(keys::INJECT): "true"}))),
            Unchanged::Skipped(SkipReason::ProtectedNamespace("meshop-system".into()))
        );
    }
}
