//! Fixtures shared by the engine's unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::InjectionConfig;

pub(crate) fn cfg() -> InjectionConfig {
    InjectionConfig {
        version: "1.28.2".into(),
        proxy_resources: ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity("2".into())),
                ("memory".into(), Quantity("1Gi".into())),
            ])),
            ..Default::default()
        },
        ..InjectionConfig::default()
    }
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A one-container pod in namespace `apps` with the given labels and annotations.
pub(crate) fn pod_with(pod_labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}
    }))
    .expect("fixture");
    if !pod_labels.is_empty() {
        p.metadata.labels = Some(labels(pod_labels));
    }
    if !annotations.is_empty() {
        p.metadata.annotations = Some(labels(annotations));
    }
    p
}

/// A Deployment's pod as the webhook sees it: generated name, owner ReplicaSet, two containers
/// with ports and HTTP / TCP / gRPC / exec probes, an init container and a volume.
pub(crate) fn typical_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-7d4c8b9f6-",
            "namespace": "bookinfo",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "7d4c8b9f6"},
            "annotations": {"team": "books"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7d4c8b9f6",
                "uid": "0b3c", "controller": true
            }]
        },
        "spec": {
            "serviceAccountName": "reviews",
            "initContainers": [{"name": "migrate", "image": "reviews:1", "command": ["migrate"]}],
            "containers": [
                {
                    "name": "reviews",
                    "image": "reviews:1",
                    "ports": [{"name": "http", "containerPort": 9080, "protocol": "TCP"}, {"name": "grpc", "containerPort": 9090}],
                    "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                    "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
                    "readinessProbe": {"tcpSocket": {"port": 9080}, "timeoutSeconds": 2},
                    "startupProbe": {"grpc": {"port": 9090}},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
                },
                {
                    "name": "sidecar-logger",
                    "image": "busybox",
                    "livenessProbe": {"exec": {"command": ["true"]}}
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}]
        }
    }))
    .expect("fixture")
}
