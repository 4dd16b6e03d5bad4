//! The webhook's HTTP side: the axum router, request bodies, status codes and the encoding of
//! the answer. The decision itself is [`super::admission`]'s; this layer only turns bytes into an
//! AdmissionRequest and the AdmissionResponse back into bytes.
//!
//! | request                                  | answer                                          |
//! |------------------------------------------|-------------------------------------------------|
//! | `POST /inject`, view not synced yet      | 503, so the API server applies `failurePolicy`  |
//! | `POST /inject`, pod's namespace unknown  | read from the API server; 503 if that fails     |
//! | `POST /inject`, body not read in time    | 408 after [`BODY_TIMEOUT`]                      |
//! | `POST /inject`, not an AdmissionReview   | 400 with the parse error                        |
//! | `POST /inject`, body over [`BODY_LIMIT`] | 413 with the limit, after reading the body      |
//! | `POST /inject`, a review                 | 200 with the review's response                  |
//! | `GET /healthz`                           | 200 once synced, 503 before                     |
//!
//! Every answer to `POST /inject` is counted in `meshop_webhook_requests_total{outcome}` and
//! timed in `meshop_webhook_request_duration_seconds` ([`crate::metrics::Outcome`]).
//!
//! The body is decoded once, into [`admission::Review`] (the pod stays raw until it is known to
//! be a Pod CREATE), and the answer is encoded straight from [`admission::Response`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;

use super::admission::{self, Review};
use super::view::View;
use crate::metrics::{Metrics, Outcome};
use crate::render::WEBHOOK_PATH;

/// The largest AdmissionReview read. The API server decodes write requests of at most 3 MiB (its
/// default `MaxRequestBodyBytes`) and etcd takes at most 1.5 MiB per request, so a review of any
/// pod the API server can store, with room for an UPDATE's old object, fits.
pub(crate) const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// How much of an oversized body is still read (and thrown away) so that the client receives the
/// 413: a server that closes a connection with unread data resets it, and the answer is lost.
const DRAIN_LIMIT: usize = 4 * BODY_LIMIT;

/// How long the whole body of a request may take to arrive once its headers have. The API server
/// sends a review in one write; a client that trickles it holds a connection for nothing.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share: the watched cache and the metrics they record into.
#[derive(Clone)]
struct Webhook {
    view: View,
    metrics: Arc<Metrics>,
}

/// The webhook's routes: `POST /inject` and `GET /healthz`. Admission outcomes and latencies go
/// to `metrics` (the registry `/metrics` serves).
pub fn router(view: View, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(inject_handler))
        .route("/healthz", get(healthz))
        .with_state(Webhook { view, metrics })
}

fn still_syncing() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "webhook cache is still syncing",
    )
        .into_response()
}

async fn healthz(State(hook): State<Webhook>) -> Response {
    if hook.view.is_synced() {
        (StatusCode::OK, "ok").into_response()
    } else {
        still_syncing()
    }
}

/// Why a body was not read whole.
enum BodyError {
    /// Over [`BODY_LIMIT`]; carries how much was seen (at least the limit plus one byte).
    TooLarge(usize),
    /// The client went away or sent a broken body.
    Broken(String),
}

/// The body, up to [`BODY_LIMIT`] bytes. A longer one is drained (up to [`DRAIN_LIMIT`]) so the
/// 413 reaches the client.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(BODY_LIMIT));
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= BODY_LIMIT {
            out.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > BODY_LIMIT {
        return Err(BodyError::TooLarge(declared.unwrap_or(seen).max(seen)));
    }
    Ok(out)
}

async fn inject_handler(State(hook): State<Webhook>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let (outcome, response) = answer(&hook.view, &headers, body).await;
    hook.metrics.observe_admission(outcome, started.elapsed());
    response
}

/// The answer to one `POST /inject`, and what it amounts to for the metrics.
async fn answer(view: &View, headers: &HeaderMap, body: Body) -> (Outcome, Response) {
    let error =
        |status: StatusCode, message: String| (Outcome::Error, (status, message).into_response());
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(headers, body)).await {
        Ok(Ok(b)) => b,
        Ok(Err(BodyError::TooLarge(seen))) => {
            let resp = (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONNECTION, "close")],
                format!(
                    "AdmissionReview of {seen} bytes or more is over the webhook's limit of {BODY_LIMIT} bytes"
                ),
            )
                .into_response();
            return (Outcome::Error, resp);
        }
        Ok(Err(BodyError::Broken(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("reading the AdmissionReview failed: {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the AdmissionReview's body did not arrive within {BODY_TIMEOUT:?}"),
            );
        }
    };
    let review: Review<'_> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("request body is not a valid AdmissionReview: {e}"),
            );
        }
    };
    let Some(req) = review.request.as_ref() else {
        return error(
            StatusCode::BAD_REQUEST,
            "AdmissionReview has no request".into(),
        );
    };
    // Until the watches have listed everything, say so with a 503: the API server then applies
    // the webhook's failurePolicy instead of admitting pods on a guess.
    if !view.is_synced() {
        return (Outcome::Error, still_syncing());
    }
    let mut snapshot = view.snapshot();
    // A pod in a namespace the watch has not delivered yet: read it rather than guess its labels.
    if let Some(namespace) = admission::pod_create_namespace(&review.api_version, req)
        && snapshot.namespace_labels(namespace).is_none()
    {
        if let Err(e) = view.resolve_namespace(namespace).await {
            tracing::warn!(error = %e, uid = %req.uid, "answering 503 so the API server applies failurePolicy");
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        snapshot = view.snapshot();
    }
    let resp = admission::admit(&review.api_version, req, &snapshot);
    let outcome = if resp.patch.is_some() {
        Outcome::Injected
    } else if resp.allowed {
        Outcome::Skipped
    } else {
        Outcome::Denied
    };
    (outcome, encode(&review, resp))
}

/// The AdmissionReview that answers `review` (echoing its apiVersion and kind), as the response.
fn encode(review: &Review<'_>, resp: admission::Response) -> Response {
    match review_json(review, &resp) {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the AdmissionReview failed: {e}"),
        )
            .into_response(),
    }
}

/// The answering AdmissionReview's JSON, written out directly rather than through a derived
/// `Serialize`: its shape is fixed, and the patch, most of the answer, is base64-encoded straight
/// into the buffer (the API server's JSON form of `[]byte`). Base64 needs no escaping, so unlike
/// a serialised string it is not scanned byte by byte for characters to escape. Every string
/// that comes from the request or a message goes through serde_json's escaping.
///
/// `{"apiVersion":..,"kind":..,"response":{"uid":..,"allowed":..,"status":{..}?,
/// "patchType":"JSONPatch"?,"patch":"<base64>"?,"warnings":[..]?}}`
fn review_json(review: &Review<'_>, resp: &admission::Response) -> serde_json::Result<Vec<u8>> {
    let b64 = &base64_simd::STANDARD;
    let patch_len = resp
        .patch
        .as_ref()
        .map_or(0, |p| b64.encoded_length(p.len()));
    let mut out = Vec::with_capacity(256 + patch_len);
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut out, review.api_version.as_str())?;
    out.extend_from_slice(b",\"kind\":");
    serde_json::to_writer(&mut out, review.kind.as_str())?;
    out.extend_from_slice(b",\"response\":{\"uid\":");
    serde_json::to_writer(&mut out, resp.uid.as_str())?;
    out.extend_from_slice(if resp.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if let Some(d) = &resp.denial {
        // A metav1.Status saying why the pod is refused.
        out.extend_from_slice(b",\"status\":{\"status\":\"Failure\",\"message\":");
        serde_json::to_writer(&mut out, d.message.as_str())?;
        out.extend_from_slice(b",\"reason\":\"BadRequest\",\"code\":");
        out.extend_from_slice(d.code.to_string().as_bytes());
        out.push(b'}');
    }
    if let Some(patch) = &resp.patch {
        out.extend_from_slice(b",\"patchType\":\"JSONPatch\",\"patch\":\"");
        b64.encode_append(patch, &mut out);
        out.push(b'"');
    }
    if let Some(warnings) = &resp.warnings {
        out.extend_from_slice(b",\"warnings\":");
        serde_json::to_writer(&mut out, warnings)?;
    }
    out.extend_from_slice(b"}}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use crate::inject::keys;
    use crate::webhook::view::tests::{install, view};

    /// The hand-written answer is valid JSON with what a derived encoder would say: strings that
    /// need escaping come back as they went in, the patch decodes to its bytes.
    #[test]
    fn the_written_answer_parses_back_to_its_fields() {
        use base64::Engine as _;
        let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a\"b\\c\n\u00e9","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#;
        let review: Review<'_> = serde_json::from_str(body).unwrap();
        let patch = br#"[{"op":"add","path":"/a","value":"\u2028 \"x\""}]"#.to_vec();
        for resp in [
            admission::Response {
                uid: "a\"b\\c\n\u{e9}".into(),
                allowed: true,
                patch: Some(patch.clone()),
                warnings: Some(vec!["w \"1\"".into(), "w\t2".into()]),
                denial: None,
            },
            admission::Response {
                uid: "u".into(),
                allowed: false,
                patch: None,
                warnings: None,
                denial: Some(admission::Denial {
                    code: 400,
                    message: "bad \"annotation\"\n\u{1}".into(),
                }),
            },
        ] {
            let v: Value = serde_json::from_slice(&review_json(&review, &resp).unwrap()).unwrap();
            assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(v["kind"], "AdmissionReview");
            let r = &v["response"];
            assert_eq!(r["uid"], resp.uid.as_str());
            assert_eq!(r["allowed"], resp.allowed);
            match &resp.patch {
                Some(p) => {
                    assert_eq!(r["patchType"], "JSONPatch");
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(r["patch"].as_str().unwrap())
                        .unwrap();
                    assert_eq!(&bytes, p);
                }
                None => assert!(r.get("patch").is_none() && r.get("patchType").is_none()),
            }
            match &resp.warnings {
                Some(w) => assert_eq!(r["warnings"], json!(w)),
                None => assert!(r.get("warnings").is_none()),
            }
            match &resp.denial {
                Some(d) => assert_eq!(
                    r["status"],
                    json!({"status": "Failure", "message": d.message, "reason": "BadRequest", "code": 400})
                ),
                None => assert!(r.get("status").is_none()),
            }
        }
    }

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
        let resp = router(v.clone(), Default::default())
            .oneshot(req)
            .await
            .unwrap();
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
        for (ns, p) in [("apps", opted_out), ("apps", host), ("kube-system", pod())] {
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

    /// A synced view that lacks the pod's namespace (the watch lags) and cannot read it: the
    /// API server gets a 503 and applies failurePolicy; never an admission without the sidecar.
    #[tokio::test]
    async fn a_namespace_the_view_has_not_seen_is_never_admitted_bare() {
        let v = view();
        let metrics = Arc::new(Metrics::default());
        let post = |body: Value| {
            let app = router(v.clone(), metrics.clone());
            async move {
                let req = Request::builder()
                    .method("POST")
                    .uri("/inject")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        let (status, text) = post(pod_review("fresh", pod())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert!(
            text.contains("namespace fresh is not in the webhook's cache"),
            "{text}"
        );
        // Once the watch delivers it, the same pod is injected.
        v.set_namespace(
            "fresh",
            crate::webhook::view::tests::labels(&[(
                crate::inject::keys::NAMESPACE_INJECTION,
                "enabled",
            )]),
        );
        let (status, text) = post(pod_review("fresh", pod())).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("\"patch\""), "{text}");
        let exposed = metrics.encode();
        for line in [
            r#"meshop_webhook_requests_total{outcome="error"} 1"#,
            r#"meshop_webhook_requests_total{outcome="injected"} 1"#,
            "meshop_webhook_request_duration_seconds_count 2",
        ] {
            assert!(exposed.contains(line), "{line} missing from\n{exposed}");
        }
    }

    /// A client that sends the headers and then trickles (here: never finishes) the body gets a
    /// 408 after BODY_TIMEOUT instead of holding the handler forever.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_arrives_times_out_with_a_408() {
        let stalled = futures::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let req = Request::builder()
            .method("POST")
            .uri("/inject")
            .body(Body::from_stream(stalled))
            .unwrap();
        let resp = router(view(), Default::default())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
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
