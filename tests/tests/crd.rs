//! The MeshInstall CRD against a real kube-apiserver: it is Established, every documented example
//! is accepted, and invalid MeshInstalls are refused with a message that says what is wrong.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshop::api::MeshInstall;
use serde_json::{Value, json};

const MANAGER: &str = "crd-test";

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

fn mesh_api(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("meshop.dev", "v1alpha1", "MeshInstall");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// Server-side apply with strict field validation, as `kubectl apply --server-side` does.
async fn apply(client: &Client, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let name = obj["metadata"]["name"]
        .as_str()
        .expect("test object has a name");
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).expect("valid object shape");
    mesh_api(client)
        .patch(
            name,
            &PatchParams::apply(MANAGER).validation_strict(),
            &Patch::Apply(&dynamic),
        )
        .await
}

/// A create with strict field validation, as plain `kubectl apply` does for a new object.
async fn create_strict(client: &Client, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let request =
        http::Request::post("/apis/meshop.dev/v1alpha1/meshinstalls?fieldValidation=Strict")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(obj).unwrap())
            .unwrap();
    client.request::<DynamicObject>(request).await
}

fn mesh(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall", "metadata": { "name": name }, "spec": spec })
}

#[tokio::test]
async fn crd_is_established_with_columns_and_short_name() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let crd = Api::<CustomResourceDefinition>::all(client)
        .get("meshinstalls.meshop.dev")
        .await
        .unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "{conditions:?}"
    );
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.short_names, Some(vec!["mi".to_string()]));
    let version = &crd.spec.versions[0];
    assert!(
        version.subresources.as_ref().unwrap().status.is_some(),
        "status subresource"
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for expected in ["Profile", "Version", "Ready", "Age"] {
        assert!(
            columns.contains(&expected),
            "printer column {expected} missing from {columns:?}"
        );
    }
}

#[tokio::test]
async fn every_documented_example_is_accepted() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut obj: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // Examples may share a name; give each its own so they can coexist in this test.
        let name = format!("example-{}", path.file_stem().unwrap().to_string_lossy());
        obj["metadata"]["name"] = json!(name);
        let created = apply(&client, &obj)
            .await
            .unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        // The server applied the schema defaults, and the result reads back as our typed API.
        let typed: MeshInstall = serde_json::from_value(serde_json::to_value(&created).unwrap())
            .unwrap_or_else(|e| panic!("{} does not read back: {e}", path.display()));
        assert!(!typed.spec.namespace.is_empty() && !typed.spec.hub.is_empty());
        mesh_api(&client)
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        count += 1;
    }
    assert!(count >= 5, "expected at least 5 examples, found {count}");
}

/// Overlays are patches: the API server must keep them exactly as written, nulls (which delete)
/// and JSON patch values of any type included, or meshop would render another patch.
#[tokio::test]
async fn overlays_are_stored_as_written() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let mut obj: Value = serde_yaml::from_str(
        &std::fs::read_to_string(examples_dir().join("overlays.yaml")).unwrap(),
    )
    .unwrap();
    obj["metadata"]["name"] = json!("overlays-as-written");
    obj["spec"]["components"]["cni"] = json!({"overlays": [{"kind": "DaemonSet", "jsonPatch": [
        {"op": "add", "path": "/metadata/annotations/a", "value": null},
        {"op": "test", "path": "/spec/x", "value": [1, "two", {"three": null}]},
        {"op": "test", "path": "/spec/y", "value": 4.5}
    ]}]});
    let created = apply(&client, &obj).await.unwrap();
    let stored = serde_json::to_value(&created).unwrap();
    assert_eq!(
        stored["spec"]["components"], obj["spec"]["components"],
        "the API server changed the overlays"
    );
    mesh_api(&client)
        .delete("overlays-as-written", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn schema_defaults_are_applied() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let created = apply(&client, &mesh("defaults", json!({ "profile": "minimal" })))
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["namespace"], "istio-system");
    assert_eq!(spec["hub"], "docker.io/istio");
    assert_eq!(spec["revision"], "");
    assert_eq!(spec["updateStrategy"], "InPlace");
    mesh_api(&client)
        .delete("defaults", &DeleteParams::default())
        .await
        .unwrap();
}

/// One invalid MeshInstall per rule, with the words the API server's refusal must contain.
fn invalid_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("profile missing", json!({}), "spec.profile: Required value"),
        (
            "profile unknown",
            json!({"profile": "huge"}),
            "spec.profile: Unsupported value: \"huge\"",
        ),
        (
            "version not semver",
            json!({"profile": "demo", "version": "latest"}),
            "spec.version: Invalid value",
        ),
        (
            "hub upper case",
            json!({"profile": "demo", "hub": "Docker.IO/Istio"}),
            "spec.hub: Invalid value",
        ),
        (
            "namespace not a DNS label",
            json!({"profile": "demo", "namespace": "Istio_System"}),
            "spec.namespace: Invalid value",
        ),
        (
            "revision not a DNS label",
            json!({"profile": "demo", "revision": "Canary!"}),
            "spec.revision: Invalid value",
        ),
        (
            "revision named default",
            json!({"profile": "demo", "revision": "default"}),
            "leave revision empty instead",
        ),
        (
            "revision too long",
            json!({"profile": "demo", "revision": "r".repeat(64)}),
            "spec.revision: Too long",
        ),
        (
            "updateStrategy unknown",
            json!({"profile": "demo", "updateStrategy": "BlueGreen"}),
            "spec.updateStrategy: Unsupported value",
        ),
        (
            "the default tag listed",
            json!({"profile": "demo", "updateStrategy": "RevisionBased", "upgrade": {"tags": ["prod", "default"]}}),
            "the default tag always exists",
        ),
        (
            "a tag that is not a DNS label",
            json!({"profile": "demo", "updateStrategy": "RevisionBased", "upgrade": {"tags": ["Prod"]}}),
            "spec.upgrade.tags[0]: Invalid value",
        ),
        (
            "workload migration mode unknown",
            json!({"profile": "demo", "upgrade": {"workloads": {"mode": "Auto"}}}),
            "spec.upgrade.workloads.mode: Unsupported value",
        ),
        (
            "unknown spec field",
            json!({"profile": "demo", "profiles": "demo"}),
            "unknown field \"spec.profiles\"",
        ),
        (
            "unknown component",
            json!({"profile": "demo", "components": {"pilot": {"enabled": true}}}),
            "unknown field \"spec.components.pilot\"",
        ),
        (
            "unknown addon",
            json!({"profile": "demo", "components": {"addons": {"zipkin": {"enabled": true}}}}),
            "unknown field \"spec.components.addons.zipkin\"",
        ),
        (
            "negative replicas",
            json!({"profile": "demo", "components": {"istiod": {"replicas": -1}}}),
            "spec.components.istiod.replicas: Invalid value: -1: spec.components.istiod.replicas in body should be greater than or equal to 0",
        ),
        (
            "autoscale min above max",
            json!({"profile": "demo", "components": {"istiod": {"autoscale": {"minReplicas": 5, "maxReplicas": 2}}}}),
            "autoscale.minReplicas must not exceed autoscale.maxReplicas",
        ),
        (
            "autoscale target above 100",
            json!({"profile": "demo", "components": {"ingressGateway": {"autoscale": {"targetCPUUtilizationPercentage": 150}}}}),
            "targetCPUUtilizationPercentage in body should be less than or equal to 100",
        ),
        (
            "PDB with both bounds",
            json!({"profile": "demo", "components": {"istiod": {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}}}),
            "podDisruptionBudget takes minAvailable or maxUnavailable, not both",
        ),
        (
            "overlay with both patches",
            json!({"profile": "demo", "components": {"istiod": {"overlays": [{"kind": "Deployment", "name": "istiod", "strategicMerge": {}, "jsonPatch": [{"op": "remove", "path": "/spec/replicas"}]}]}}}),
            "an overlay takes exactly one of strategicMerge and jsonPatch",
        ),
        (
            "overlay with no patch",
            json!({"profile": "demo", "components": {"addons": {"kiali": {"overlays": [{"kind": "Deployment"}]}}}}),
            "an overlay takes exactly one of strategicMerge and jsonPatch",
        ),
        (
            "JSON patch move without from",
            json!({"profile": "demo", "components": {"cni": {"overlays": [{"kind": "DaemonSet", "jsonPatch": [{"op": "move", "path": "/spec/x"}]}]}}}),
            "from is set for move and copy, and only for them",
        ),
        (
            "JSON patch op unknown",
            json!({"profile": "demo", "components": {"istiod": {"overlays": [{"kind": "Deployment", "jsonPatch": [{"op": "merge", "path": "/spec"}]}]}}}),
            "Unsupported value: \"merge\"",
        ),
        (
            "cni with replicas",
            json!({"profile": "demo", "components": {"cni": {"enabled": true, "replicas": 2}}}),
            "cni runs one pod per node as a DaemonSet",
        ),
        (
            "service type unknown",
            json!({"profile": "demo", "components": {"ingressGateway": {"service": {"type": "External"}}}}),
            "spec.components.ingressGateway.service.type: Unsupported value: \"External\"",
        ),
        (
            "service port out of range",
            json!({"profile": "demo", "components": {"ingressGateway": {"service": {"ports": [{"name": "http", "port": 70000}]}}}}),
            "port in body should be less than or equal to 65535",
        ),
        (
            "service port names repeat",
            json!({"profile": "demo", "components": {"ingressGateway": {"service": {"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}}}}),
            "service port names must be unique",
        ),
        (
            "service on istiod",
            json!({"profile": "demo", "components": {"istiod": {"service": {"type": "NodePort"}}}}),
            "unknown field \"spec.components.istiod.service\"",
        ),
        (
            "mtlsMode unknown",
            json!({"profile": "demo", "meshConfig": {"mtlsMode": "DISABLE"}}),
            "spec.meshConfig.mtlsMode: Unsupported value: \"DISABLE\"",
        ),
        (
            "traceSampling above 100",
            json!({"profile": "demo", "meshConfig": {"traceSampling": 100.5}}),
            "traceSampling in body should be less than or equal to 100",
        ),
        (
            "trustDomain with a space",
            json!({"profile": "demo", "meshConfig": {"trustDomain": "my domain"}}),
            "spec.meshConfig.trustDomain: Invalid value",
        ),
        (
            // outboundTrafficPolicy takes Istio's object or the mode alone, so it has no schema
            // type; a mode that does not exist is reported in status (reconciler.rs).
            "accessLogging and accessLogFile",
            json!({"profile": "demo", "meshConfig": {"accessLogging": true, "accessLogFile": "/dev/stdout"}}),
            "meshConfig.accessLogging and meshConfig.accessLogFile both set where the access log goes: set one",
        ),
        (
            "sidecarMode unknown",
            json!({"profile": "demo", "injection": {"sidecarMode": "ambient"}}),
            "spec.injection.sidecarMode: Unsupported value: \"ambient\"",
        ),
        (
            "trafficCapture unknown",
            json!({"profile": "demo", "injection": {"trafficCapture": "ebpf"}}),
            "spec.injection.trafficCapture: Unsupported value",
        ),
        (
            "failurePolicy unknown",
            json!({"profile": "demo", "injection": {"failurePolicy": "Retry"}}),
            "spec.injection.failurePolicy: Unsupported value",
        ),
        (
            "negative concurrency",
            json!({"profile": "demo", "injection": {"proxy": {"concurrency": -2}}}),
            "concurrency in body should be greater than or equal to 0",
        ),
        (
            "logLevel unknown",
            json!({"profile": "demo", "injection": {"proxy": {"logLevel": "verbose"}}}),
            "spec.injection.proxy.logLevel: Unsupported value: \"verbose\"",
        ),
        (
            "a listed gateway without a name",
            json!({"profile": "demo", "components": {"ingressGateways": [{"namespace": "edge"}]}}),
            "spec.components.ingressGateways[0].name: Required value",
        ),
        (
            "a listed gateway named like a default one",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "istio-ingressgateway"}]}}),
            "are the profile's default gateways",
        ),
        (
            "an egress gateway named like the default ingress one",
            json!({"profile": "demo", "components": {"egressGateways": [{"name": "istio-ingressgateway"}]}}),
            "are the profile's default gateways",
        ),
        (
            "a gateway listed twice",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "edge"}, {"name": "edge"}]}}),
            "spec.components.ingressGateways[1]: Duplicate value",
        ),
        (
            "an ingress and an egress gateway of one name",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "edge"}], "egressGateways": [{"name": "edge"}]}}),
            "gateway names must be unique across ingressGateways and egressGateways",
        ),
        (
            "a gateway name that is not a DNS label",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "Edge_1"}]}}),
            "spec.components.ingressGateways[0].name: Invalid value",
        ),
        (
            "a gateway namespace that is not a DNS label",
            json!({"profile": "demo", "components": {"egressGateways": [{"name": "out", "namespace": "Edge!"}]}}),
            "spec.components.egressGateways[0].namespace: Invalid value",
        ),
        (
            "more gateways than allowed",
            json!({"profile": "demo", "components": {"ingressGateways": (0..33).map(|i| json!({"name": format!("g{i}")})).collect::<Vec<_>>()}}),
            "spec.components.ingressGateways: Too many",
        ),
        (
            "an unknown field on a listed gateway",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "edge", "label": {"istio": "edge"}}]}}),
            "unknown field \"spec.components.ingressGateways[0].label\"",
        ),
        (
            "a gateway label meshop sets itself",
            json!({"profile": "demo", "components": {"egressGateways": [{"name": "out", "labels": {"istio.io/rev": "canary"}}]}}),
            "a gateway's labels may not set istio.io/rev",
        ),
        (
            "too many gateway labels",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "edge", "labels": (0..33).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}]}}),
            "spec.components.ingressGateways[0].labels: Too many",
        ),
        (
            "imagePullPolicy unknown",
            json!({"profile": "demo", "components": {"istiod": {"imagePullPolicy": "Sometimes"}}}),
            "spec.components.istiod.imagePullPolicy: Unsupported value",
        ),
        (
            "priorityClassName not a DNS subdomain",
            json!({"profile": "demo", "components": {"ingressGateways": [{"name": "edge", "priorityClassName": "High Priority"}]}}),
            "spec.components.ingressGateways[0].priorityClassName: Invalid value",
        ),
        (
            "global logLevel without a scope",
            json!({"profile": "demo", "global": {"logLevel": "verbose"}}),
            "spec.global.logLevel: Invalid value",
        ),
        (
            "global logLevel with an unknown level",
            json!({"profile": "demo", "global": {"logLevel": "default:trace"}}),
            "spec.global.logLevel: Invalid value",
        ),
        (
            "global imagePullSecrets repeated",
            json!({"profile": "demo", "global": {"imagePullSecrets": ["regcred", "regcred"]}}),
            "spec.global.imagePullSecrets[1]: Duplicate value",
        ),
        (
            "global meshID with a space",
            json!({"profile": "demo", "global": {"meshID": "mesh one"}}),
            "spec.global.meshID: Invalid value",
        ),
        (
            "unknown global field",
            json!({"profile": "demo", "global": {"multiCluster": {"clusterName": "a"}}}),
            "unknown field \"spec.global.multiCluster\"",
        ),
        (
            "global networkPolicy.enabled not a bool",
            json!({"profile": "demo", "global": {"networkPolicy": {"enabled": "yes"}}}),
            "spec.global.networkPolicy.enabled: Invalid value",
        ),
        (
            "unknown global networkPolicy field",
            json!({"profile": "demo", "global": {"networkPolicy": {"enabled": true, "ingress": []}}}),
            "unknown field \"spec.global.networkPolicy.ingress\"",
        ),
    ]
}

#[tokio::test]
async fn invalid_meshinstalls_are_refused_with_a_clear_message() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let cases = invalid_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (i, (rule, spec, expected)) in cases.into_iter().enumerate() {
        let name = format!("invalid-{i}");
        match create_strict(&client, &mesh(&name, spec)).await {
            Ok(_) => failures.push(format!("{rule}: accepted")),
            Err(kube::Error::Api(status)) => {
                let ok_code = status.code == 422 || status.code == 400;
                if !ok_code || !status.message.contains(expected) {
                    failures.push(format!(
                        "{rule}: got {} {:?}, expected it to contain {expected:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{rule}: unexpected error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} rule(s) not enforced as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `spec.injection.templates` and `defaultTemplates`: Istio's shape is accepted as written; a Go
/// template, a built-in template's name, a bad name, and default templates meshop cannot inject
/// are refused with the rule's message.
#[tokio::test]
async fn injection_templates_are_checked_by_the_crd() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let creds = "spec:\n  volumes:\n  - name: application-credentials\n    secret:\n      secretName: secret\n";
    let good = json!({"profile": "minimal", "injection": {
        "templates": {"credential-volume": creds},
        "defaultTemplates": ["sidecar", "credential-volume"],
    }});
    let stored = create_strict(&client, &mesh("templates-ok", good.clone()))
        .await
        .expect("Istio's template shape is accepted");
    assert_eq!(stored.data["spec"]["injection"], good["injection"]);
    let cases = [
        (
            "a Go template",
            json!({"templates": {"go": "metadata:\n  labels: {a: '{{ .Name }}'}\n"}}),
            "meshop does not run Go templates",
        ),
        (
            "a built-in template redefined",
            json!({"templates": {"sidecar": "spec: {}\n"}}),
            "may not redefine Istio's built-in templates",
        ),
        (
            "Istio's waypoint redefined",
            json!({"templates": {"waypoint": "spec: {}\n"}}),
            "may not redefine Istio's built-in templates",
        ),
        (
            "a name a pod cannot name",
            json!({"templates": {"a,b": "spec: {}\n"}}),
            "an injection template's name is letters",
        ),
        (
            "a default template that does not exist",
            json!({"templates": {"creds": creds}, "defaultTemplates": ["sidecar", "nope"]}),
            "defaultTemplates names sidecar, gateway or one of templates",
        ),
        (
            "default templates without a built-in one",
            json!({"templates": {"creds": creds}, "defaultTemplates": ["creds"]}),
            "defaultTemplates names a built-in template",
        ),
        (
            "too many templates",
            json!({"templates": (0..33).map(|i| (format!("t{i}"), json!("spec: {}"))).collect::<serde_json::Map<_, _>>()}),
            "spec.injection.templates: Too many",
        ),
        (
            "a template too long",
            json!({"templates": {"big": "#".repeat(32769)}}),
            "spec.injection.templates.big: Too long",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (rule, injection, expected)) in cases.into_iter().enumerate() {
        let spec = json!({"profile": "minimal", "injection": injection});
        match create_strict(&client, &mesh(&format!("templates-bad-{i}"), spec)).await {
            Ok(_) => failures.push(format!("{rule}: accepted")),
            Err(kube::Error::Api(status))
                if (status.code == 422 || status.code == 400)
                    && status.message.contains(expected) => {}
            Err(e) => failures.push(format!("{rule}: {e}, expected {expected:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    mesh_api(&client)
        .delete("templates-ok", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn namespace_is_immutable() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    apply(
        &client,
        &mesh(
            "immutable",
            json!({ "profile": "minimal", "namespace": "mesh-a" }),
        ),
    )
    .await
    .unwrap();
    // Other fields stay mutable.
    apply(
        &client,
        &mesh(
            "immutable",
            json!({ "profile": "production", "namespace": "mesh-a" }),
        ),
    )
    .await
    .unwrap();
    let err = apply(
        &client,
        &mesh(
            "immutable",
            json!({ "profile": "production", "namespace": "mesh-b" }),
        ),
    )
    .await
    .expect_err("changing spec.namespace must be refused");
    assert!(err.to_string().contains("namespace is immutable"), "{err}");
    // Removing the field re-defaults it to istio-system, which is a change too.
    let err = apply(
        &client,
        &mesh("immutable", json!({ "profile": "production" })),
    )
    .await
    .expect_err("dropping namespace");
    assert!(err.to_string().contains("namespace is immutable"), "{err}");
    mesh_api(&client)
        .delete("immutable", &DeleteParams::default())
        .await
        .unwrap();
}

/// The same refusals reach a user of plain `kubectl apply`, and `kubectl explain` documents fields.
#[tokio::test]
async fn kubectl_apply_and_explain() {
    let cp = meshop_testenv::shared();
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write;
        let mut child = std::process::Command::new(&cp.binaries.kubectl)
            .args(args)
            .env("KUBECONFIG", &cp.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let bad = "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata:\n  name: bad\nspec:\n  profile: demo\n  components:\n    istiod:\n      autoscale: {minReplicas: 4, maxReplicas: 2}\n";
    let out = kubectl(&["apply", "-f", "-"], Some(bad));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("autoscale.minReplicas must not exceed autoscale.maxReplicas"),
        "{stderr}"
    );

    let example = examples_dir().join("production.yaml");
    let out = kubectl(&["apply", "-f", example.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["get", "mi", "mesh", "-o", "wide"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("PROFILE") && table.contains("production"),
        "{table}"
    );
    kubectl(&["delete", "-f", example.to_str().unwrap()], None);

    let out = kubectl(&["explain", "meshinstall.spec.profile"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("minimal (istiod only)") && text.contains("production"),
        "{text}"
    );
}
