//! inject + patch, the work the webhook does per admission request, on a typical pod and on a pod
//! with 2,000 environment variables (the size that once took Istio's injector seconds); and the
//! whole request path around it, AdmissionReview bytes in, response bytes out, through the
//! webhook's router (everything the server does per request but TLS and HTTP framing).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{EnvVar, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use meshop::effective::{Installation, Owner};
use meshop::inject::{InjectionConfig, inject, patch_json, patch_owned};
use meshop::webhook::{View, WEBHOOK_PATH, router};
use tower::ServiceExt;

fn config() -> InjectionConfig {
    let q = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ])
    };
    InjectionConfig {
        proxy_resources: ResourceRequirements {
            requests: Some(q("100m", "128Mi")),
            limits: Some(q("2", "1Gi")),
            ..Default::default()
        },
        ..InjectionConfig::default()
    }
}

/// Two containers with ports and HTTP / TCP / gRPC probes, owned by a Deployment's ReplicaSet.
fn typical_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-7d4c8b9f6-",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "7d4c8b9f6"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7d4c8b9f6", "uid": "1", "controller": true}]
        },
        "spec": {
            "serviceAccountName": "reviews",
            "containers": [
                {
                    "name": "reviews",
                    "image": "reviews:1",
                    "ports": [{"name": "http", "containerPort": 9080}, {"name": "grpc", "containerPort": 9090}],
                    "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                    "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                    "readinessProbe": {"tcpSocket": {"port": 9080}},
                    "startupProbe": {"grpc": {"port": 9090}}
                },
                {"name": "logger", "image": "busybox", "ports": [{"containerPort": 8080}], "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}]
        }
    }))
    .expect("fixture")
}

fn env_heavy_pod(n: usize) -> Pod {
    let mut pod = typical_pod();
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers[0].env = Some(
            (0..n)
                .map(|i| EnvVar {
                    name: format!("VAR_{i}"),
                    value: Some(format!("value-{i}")),
                    ..Default::default()
                })
                .collect(),
        );
    }
    pod
}

/// An AdmissionReview of a Pod CREATE in namespace `bookinfo`, as the API server sends it.
fn review(pod: &Pod) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b6a8c2e-1d5f-4e0a-9c1b-7f3e2d4a5b6c",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": null, "dryRun": false
        }
    }))
    .expect("review")
}

/// The webhook's view: the demo profile's default revision, `bookinfo` labelled for injection.
fn view() -> View {
    let view = View::new();
    let spec = serde_yaml::from_str("profile: demo\n").expect("spec");
    let owner = Owner {
        name: "demo".into(),
        uid: None,
    };
    view.set_install(
        "demo",
        &Installation::resolve(owner, &spec).expect("installation"),
    );
    view.set_namespace(
        "bookinfo",
        BTreeMap::from([("istio-injection".to_string(), "enabled".to_string())]),
    );
    view.mark_synced();
    view
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    // Timers on: the webhook bounds a body's read with a timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let app = router(view(), Default::default());
    // 8,000 env vars shows the cost growing linearly with the pod, not with its square.
    let cases = [
        ("typical pod", typical_pod()),
        ("pod with 2000 env vars", env_heavy_pod(2000)),
        ("pod with 8000 env vars", env_heavy_pod(8000)),
    ];
    for (name, pod) in cases {
        let injected = inject(&pod, &cfg).expect("injects");
        let p = patch_owned(pod.clone(), injected);
        let bytes = serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
        eprintln!("{name}: {} patch operations, {bytes} bytes", p.0.len());
        // The webhook owns the pod it decoded, so the copy each iteration consumes is made
        // outside the measurement.
        c.bench_function(&format!("inject+patch {name}"), |b| {
            b.iter_batched(
                || pod.clone(),
                |pod| {
                    let injected = inject(black_box(&pod), &cfg).expect("injects");
                    black_box(patch_owned(pod, injected))
                },
                BatchSize::SmallInput,
            )
        });
        // The engine's whole product as the webhook sends it: the patch's JSON text, with the
        // operations freed (as the webhook frees them) inside the measurement.
        c.bench_function(&format!("inject+patch as JSON {name}"), |b| {
            b.iter_batched(
                || pod.clone(),
                |pod| {
                    let injected = inject(black_box(&pod), &cfg).expect("injects");
                    let ops = patch_owned(pod, injected);
                    black_box(patch_json(&ops))
                },
                BatchSize::SmallInput,
            )
        });
        let body = axum::body::Bytes::from(review(&pod));
        c.bench_function(&format!("review to response {name}"), |b| {
            b.iter(|| {
                let request = axum::http::Request::post(WEBHOOK_PATH)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.clone()))
                    .expect("request");
                runtime.block_on(async {
                    let response = app.clone().oneshot(request).await.expect("infallible");
                    assert!(response.status().is_success());
                    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .expect("body");
                    black_box(bytes)
                })
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
