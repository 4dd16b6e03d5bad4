//! inject + patch, the work the webhook does per admission request, on a typical pod and on a pod
//! with 2,000 environment variables (the size that once took Istio's injector seconds).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{EnvVar, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use meshop::inject::{InjectionConfig, inject, patch};

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

fn bench(c: &mut Criterion) {
    let cfg = config();
    // 8,000 env vars shows the cost growing linearly with the pod, not with its square.
    let cases = [
        ("inject+patch typical pod", typical_pod()),
        ("inject+patch pod with 2000 env vars", env_heavy_pod(2000)),
        ("inject+patch pod with 8000 env vars", env_heavy_pod(8000)),
    ];
    for (name, pod) in cases {
        let injected = inject(&pod, &cfg).expect("injects");
        let p = patch(&pod, &injected);
        let bytes = serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
        eprintln!("{name}: {} patch operations, {bytes} bytes", p.0.len());
        c.bench_function(name, |b| {
            b.iter(|| {
                let injected = inject(black_box(&pod), &cfg).expect("injects");
                black_box(patch(&pod, &injected))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
