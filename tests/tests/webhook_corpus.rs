//! The webhook path gives the same pods as `meshop inject`: a sample of Istio's own injection
//! inputs (`../shared/judges/istio-testdata/inject/`, the corpus tests/tests/istio_corpus.rs
//! compares with `istioctl kube-inject`) is created as pods through the real API server, which
//! calls `meshop run`'s webhook over TLS, and the same pods injected offline by `meshop inject`
//! with the same MeshInstall are created beside them. The webhook sees a pod after the API
//! server's defaulting (a probe's path `/`, a port's protocol `TCP`, the service account's token
//! volume), so `meshop inject` is given the pod as the API server defaulted it. Every create is a
//! dry run (the webhook is still called; nothing is stored): the comparison is of what the
//! cluster would keep, field by field.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use meshop::api::{MeshInstall, WebhookState};
use meshop::controller::status::{KStatus, kstatus};
use meshop_testenv::apps::labelled_namespace;
use meshop_testenv::conformance::{differences, docs, pod_template};
use serde_json::{Value, json};

/// Inputs covering the annotations and shapes the injector honours: probes of every kind, status
/// and readiness settings, traffic and interface annotations, resources, native sidecars,
/// Prometheus merge, a pod's own istio-proxy, init containers, the gateway and gRPC templates.
const SAMPLE: &[&str] = &[
    "hello.yaml",
    "hello-probes.yaml",
    "startup_ready_live.yaml",
    "https-probes.yaml",
    "status_params.yaml",
    "status_annotations_zeroport.yaml",
    "traffic-annotations.yaml",
    "kubevirtInterfaces.yaml",
    "resource_annotations.yaml",
    "native-sidecar.yaml",
    "prometheus-scrape.yaml",
    "hello-multiport-metrics.yaml",
    "proxy-override.yaml",
    "multi-init.yaml",
    "gateway.yaml",
    "grpc-agent.yaml",
    "grpc-simple.yaml",
];

const NAMESPACE: &str = "corpus";
/// Where pods are defaulted without injection.
const PLAIN: &str = "corpus-plain";

const MESH: &str = r#"apiVersion: meshop.dev/v1alpha1
kind: MeshInstall
metadata: {name: corpus}
spec:
  profile: minimal
  injection: {sidecarMode: classic, failurePolicy: Fail}
"#;

fn input(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/judges/istio-testdata/inject")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut items = Vec::new();
    for doc in docs(&text).unwrap() {
        match doc["kind"].as_str() {
            Some("List") => items.extend(doc["items"].as_array().cloned().unwrap_or_default()),
            _ => items.push(doc),
        }
    }
    items
        .into_iter()
        .find(|i| i["kind"] != "Service")
        .unwrap_or_else(|| panic!("{file}: no workload"))
}

/// The workload's pod template as a Pod of its own in [`NAMESPACE`], named after the file.
fn as_pod(file: &str) -> Value {
    let template = pod_template(&input(file)).unwrap();
    let name: String = file
        .trim_end_matches(".yaml")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": NAMESPACE,
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
        },
        "spec": template["spec"],
    })
}

/// What the API server would store, without what only storing adds, and with the service
/// account token volume's random name (`kube-api-access-xxxxx`, one per create) made constant.
fn stored(pod: Pod) -> Value {
    let mut v = serde_json::to_value(pod).unwrap();
    let meta = v["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
        "generation",
    ] {
        meta.remove(k);
    }
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("kube-api-access-") {
        out.push_str(&rest[..at + "kube-api-access".len()]);
        rest = &rest[at + "kube-api-access-".len()..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_injects_istios_inputs_as_meshop_inject_does() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let _operator = meshop_testenv::start_operator(cp, "meshop-webhook-corpus", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mesh_file = dir.path().join("mesh.yaml");
    std::fs::write(&mesh_file, MESH).unwrap();

    let api: Api<MeshInstall> = Api::all(client.clone());
    api.create(&PostParams::default(), &serde_yaml::from_str(MESH).unwrap())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "MeshInstall Ready with the webhook Active",
        Duration::from_secs(120),
        || async {
            let mi = api.get("corpus").await?;
            let status = kstatus(mi.metadata.generation, mi.status.as_ref());
            let webhook = mi.status.and_then(|s| s.webhook);
            ensure!(
                status == KStatus::Current
                    && webhook.is_some_and(|w| w.state == WebhookState::Active),
                "{status:?}"
            );
            Ok(())
        },
    )
    .await;
    labelled_namespace(&client, NAMESPACE, json!({ "istio-injection": "enabled" })).await;
    labelled_namespace(&client, PLAIN, json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let plain: Api<Pod> = Api::namespaced(client.clone(), PLAIN);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };

    let mut differ = Vec::new();
    for file in SAMPLE {
        let pod = as_pod(file);
        // Through the API server: the webhook injects (a dry run still calls it).
        let by_webhook = meshop_testenv::wait_until(
            &format!("{file} admitted through the webhook"),
            Duration::from_secs(30),
            || async {
                let p: Pod = serde_json::from_value(pod.clone())?;
                Ok(pods.create(&dry_run, &p).await?)
            },
        )
        .await;
        // Offline, on the pod as the API server defaults it, then through the API server too
        // (the webhook leaves an injected pod alone).
        let mut elsewhere = pod.clone();
        elsewhere["metadata"]["namespace"] = json!(PLAIN);
        let mut defaulted = plain
            .create(&dry_run, &serde_json::from_value(elsewhere).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        defaulted.metadata = serde_json::from_value(pod["metadata"].clone()).unwrap();
        // A status the server derived from the pod before injection (its QoS class) is not
        // part of what a client submits.
        defaulted.status = None;
        let input = dir.path().join(file);
        std::fs::write(&input, meshop::yaml::to_string(&defaulted).unwrap()).unwrap();
        let offline = meshop::cli::inject(&input, Some(&mesh_file), None)
            .unwrap_or_else(|e| panic!("meshop inject {file}: {e:#}"));
        let offline: Pod = serde_yaml::from_str(&offline).unwrap();
        let by_cli = pods.create(&dry_run, &offline).await.unwrap();

        let (webhook, cli) = (stored(by_webhook), stored(by_cli));
        assert!(
            webhook["metadata"]["annotations"]["sidecar.istio.io/status"].is_string(),
            "{file}: the webhook did not inject"
        );
        let (fields, found) = differences(&webhook, &cli);
        eprintln!("{file}: {fields} fields, {} differ", found.len());
        for d in found {
            differ.push(format!(
                "{file} {}: webhook {} / meshop inject {}",
                d.path,
                meshop_testenv::conformance::show(&d.istioctl),
                meshop_testenv::conformance::show(&d.meshop)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "the webhook and `meshop inject` made different pods:\n{}",
        differ.join("\n")
    );
}
