//! The webhook's HTTP side: the axum router, request bodies, status codes and the encoding of
//! the answer. The decision itself is [`super::admission`]'s; this layer only turns bytes into an
//! AdmissionRequest and the AdmissionResponse back into bytes.
//!
//! | request                                  | answer                                          |
//! |------------------------------------------|-------------------------------------------------|
//! | `POST /inject`, view not synced yet      | 503, so the API server applies `failurePolicy`  |
//! | `POST /inject`, not an AdmissionReview   | 400 with the parse error                        |
//! | `POST /inject`, body over [`BODY_LIMIT`] | 413                                             |
//! | `POST /inject`, a review                 | 200 with the review's response                  |
//! | `GET /healthz`                           | 200 once synced, 503 before                     |

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde_json::Value;

use super::admission;
use super::view::View;
use crate::render::WEBHOOK_PATH;

/// Large enough for a pod with thousands of env vars (2,000 of them are well under 1 MiB).
pub(crate) const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The webhook's routes: `POST /inject` and `GET /healthz`.
pub fn router(view: View) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(inject_handler))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(view)
}

fn still_syncing() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook cache is still syncing",
    )
        .into_response()
}

async fn healthz(State(view): State<View>) -> Response {
    if view.is_synced() {
        (StatusCode::OK, "ok").into_response()
    } else {
        still_syncing()
    }
}

async fn inject_handler(State(view): State<View>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("request body is not a valid AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    // The request keeps the review's apiVersion and kind, which the answer echoes.
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return (StatusCode::BAD_REQUEST, "AdmissionReview has no request").into_response();
        }
    };
    // Until the watches have listed everything, say so with a 503: the API server then applies
    // the webhook's failurePolicy instead of admitting pods on a guess.
    if !view.is_synced() {
        return still_syncing();
    }
    let resp = admission::admit(req, &view.snapshot());
    json(StatusCode::OK, resp.into_review())
}

/// Encodes the review. kube-core writes the patch bytes as a JSON array of numbers; the API
/// server's canonical form for `[]byte` is base64, about a quarter of the size, so we write that.
fn json(status: StatusCode, mut review: AdmissionReview<DynamicObject>) -> Response {
    // Taken out before encoding, so the bytes are never turned into a JSON array on the way.
    let patch = review.response.as_mut().and_then(|r| r.patch.take());
    let mut value = match serde_json::to_value(&review) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the AdmissionReview failed: {e}"),
            )
                .into_response();
        }
    };
    if let Some(patch) = patch
        && let Ok(b64) = serde_json::to_value(k8s_openapi::ByteString(patch))
        && let Some(resp) = value.get_mut("response").and_then(Value::as_object_mut)
    {
        resp.insert("patch".into(), b64);
    }
    (status, axum::Json(value)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::inject::keys;
    use crate::webhook::view::tests::{install, view};

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}]}
        })
    }

    fn review(namespace: &str, kind: Value, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "3f1c-uid", "kind": kind,
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace, "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object, "dryRun": false
            }
        })
    }

    fn pod_review(namespace: &str, object: Value) -> Value {
        review(
            namespace,
            json!({"group": "", "version": "v1", "kind": "Pod"}),
            object,
        )
    }

    async fn call_raw(v: &View, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = router(v.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    /// Sends a review and returns the `response` object.
    async fn call(v: &View, body: &Value) -> Value {
        let (status, bytes) =
            call_raw(v, "POST", "/inject", serde_json::to_vec(body).unwrap()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "3f1c-uid");
        out["response"].clone()
    }

    fn decoded_patch(resp: &Value) -> Option<json_patch::Patch> {
        let b64 = resp.get("patch")?.as_str()?;
        // The API server's JSON encoding of []byte is base64.
        let bytes: k8s_openapi::ByteString =
            serde_json::from_value(Value::String(b64.to_string())).ok()?;
        serde_json::from_slice(&bytes.0).ok()
    }

    fn apply(object: &Value, resp: &Value) -> Value {
        let mut doc = object.clone();
        json_patch::patch(&mut doc, &decoded_patch(resp).expect("patch")).unwrap();
        doc
    }

    fn container_names(pod: &Value) -> Vec<String> {
        let mut names = Vec::new();
        for list in ["initContainers", "containers"] {
            for c in pod["spec"][list].as_array().into_iter().flatten() {
                names.push(c["name"].as_str().unwrap_or_default().to_string());
            }
        }
        names
    }

    #[tokio::test]
    async fn injects_a_pod_in_an_enabled_namespace() {
        let v = view();
        let resp = call(&v, &pod_review("apps", pod())).await;
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        let injected = apply(&pod(), &resp);
        assert!(
            container_names(&injected).contains(&"istio-proxy".to_string()),
            "{injected}"
        );
        assert!(injected["metadata"]["annotations"][keys::STATUS].is_string());
    }

    #[tokio::test]
    async fn second_call_on_an_injected_pod_is_a_no_op() {
        let v = view();
        let resp = call(&v, &pod_review("apps", pod())).await;
        let injected = apply(&pod(), &resp);
        let again = call(&v, &pod_review("apps", injected)).await;
        assert_eq!(again["allowed"], true);
        assert!(again.get("patch").is_none(), "{again}");
    }

    #[tokio::test]
    async fn revision_namespace_gets_the_revision_config() {
        let v = view();
        let resp = call(&v, &pod_review("canary-apps", pod())).await;
        let injected = apply(&pod(), &resp);
        assert!(
            injected.to_string().contains("istiod-canary."),
            "discovery address of the canary revision"
        );
    }

    #[tokio::test]
    async fn pod_label_opt_in_in_an_unlabelled_namespace() {
        let v = view();
        let mut p = pod();
        let resp = call(&v, &pod_review("plain", p.clone())).await;
        assert!(resp.get("patch").is_none());
        p["metadata"]["labels"][keys::INJECT] = json!("true");
        let resp = call(&v, &pod_review("plain", p.clone())).await;
        assert!(container_names(&apply(&p, &resp)).contains(&"istio-proxy".to_string()));
    }

    #[tokio::test]
    async fn opted_out_host_network_and_system_pods_are_untouched() {
        let v = view();
        let mut opted_out = pod();
        opted_out["metadata"]["labels"][keys::INJECT] = json!("false");
        let mut host = pod();
        host["spec"]["hostNetwork"] = json!(true);
        for (ns, p) in [
            ("apps", opted_out),
            ("apps", host),
            ("kube-system", pod()),
            ("nowhere", pod()),
        ] {
            let resp = call(&v, &pod_review(ns, p)).await;
            assert_eq!(resp["allowed"], true);
            assert!(resp.get("patch").is_none(), "{ns}: {resp}");
        }
    }

    #[tokio::test]
    async fn disabled_injection_or_missing_revision_admits_unchanged() {
        let v = view();
        let mut off = install("");
        off.injection.enabled = false;
        v.set_install("mesh", &off);
        let resp = call(&v, &pod_review("apps", pod())).await;
        assert!(resp.get("patch").is_none());
        v.remove_install("mesh");
        let resp = call(&v, &pod_review("apps", pod())).await;
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
    }

    #[tokio::test]
    async fn bad_annotation_is_denied_with_the_reason() {
        let v = view();
        let mut p = pod();
        p["metadata"]["annotations"] =
            json!({(keys::PROXY_CPU): "2", (keys::PROXY_CPU_LIMIT): "1"});
        let resp = call(&v, &pod_review("apps", p)).await;
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 400);
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("proxyCPU"),
            "{resp}"
        );
    }

    #[tokio::test]
    async fn malformed_body_is_a_400_with_a_message() {
        let v = view();
        for body in [
            b"{not json".to_vec(),
            b"[]".to_vec(),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        ] {
            let (status, bytes) = call_raw(&v, "POST", "/inject", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            let msg = String::from_utf8_lossy(&bytes);
            assert!(msg.contains("AdmissionReview"), "{msg}");
        }
    }

    #[tokio::test]
    async fn object_that_is_not_a_pod_shape_is_denied_not_panicking() {
        let v = view();
        let resp = call(&v, &pod_review("apps", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}}))).await;
        assert_eq!(resp["allowed"], false);
    }

    #[tokio::test]
    async fn other_kinds_and_versions_are_allowed_with_a_warning() {
        let v = view();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let resp = call(
            &v,
            &review(
                "apps",
                json!({"group": "", "version": "v1", "kind": "ConfigMap"}),
                cm,
            ),
        )
        .await;
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
        assert!(resp["warnings"][0].as_str().unwrap().contains("ConfigMap"));

        let mut old = pod_review("apps", pod());
        old["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let (status, bytes) =
            call_raw(&v, "POST", "/inject", serde_json::to_vec(&old).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let out: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
    }

    #[tokio::test]
    async fn answers_503_until_the_view_is_synced() {
        let v = View::new();
        let (status, _) = call_raw(
            &v,
            "POST",
            "/inject",
            serde_json::to_vec(&pod_review("apps", pod())).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _) = call_raw(&v, "GET", "/healthz", Vec::new()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, body) = call_raw(&view(), "GET", "/healthz", Vec::new()).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }

    #[tokio::test]
    async fn a_pod_with_2000_env_vars_over_axums_default_limit_fits() {
        let v = view();
        let mut p = pod();
        let env: Vec<Value> = (0..2000)
            .map(|i| json!({"name": format!("VAR_{i}"), "value": "x".repeat(1200)}))
            .collect();
        p["spec"]["containers"][0]["env"] = Value::Array(env);
        let body = serde_json::to_vec(&pod_review("apps", p.clone())).unwrap();
        assert!(
            body.len() > 2 * 1024 * 1024,
            "the test must exceed axum's default 2 MB limit"
        );
        let resp = call(&v, &pod_review("apps", p.clone())).await;
        let injected = apply(&p, &resp);
        assert_eq!(
            injected["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            2000
        );
        assert!(
            decoded_patch(&resp).unwrap().0.len() < 100,
            "patch does not rewrite the env vars"
        );
        let (status, _) = call_raw(&v, "POST", "/inject", vec![b' '; BODY_LIMIT + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
