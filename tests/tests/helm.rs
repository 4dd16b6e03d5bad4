//! The Helm chart (deploy/chart/meshop), tested with the real `helm` against the test control
//! plane the way a platform team installs an operator:
//! - `helm lint --strict`; `helm template` accepted by the API server (server-side dry run,
//!   strict field validation), with defaults and with every optional value set;
//! - the chart with its defaults renders exactly what `kubectl kustomize deploy/` gives, apart
//!   from Helm's own labels and the Namespace (`--create-namespace` makes it);
//! - `helm install` (adopting the CRD the harness installed, as a user adopting a kubectl install
//!   would), the Deployment Available (kwok runs the pods), the webhook Service backed by them;
//! - the operator as the chart's ServiceAccount (impersonated) in the release namespace, serving
//!   its webhook in-cluster style: a full install, profile switch and delete with no Forbidden,
//!   and the webhook registered by the chart's Service;
//! - `helm upgrade` (replicas, log level), `helm uninstall` (everything gone but the CRD, which is
//!   kept so the meshes survive), `helm package`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::helm::Helm;
use meshop_testenv::wait_until;
use serde_json::{Value, json};

const NS: &str = "meshop-chart";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chart/meshop");
use meshop_testenv::helm::{KUBE_VERSION, docs};

/// Server-side apply, dry run, strict field validation: what the API server would say.
async fn dry_run(client: &Client, obj: &Value) {
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    let types = dynamic.types.clone().unwrap();
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", &types.api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, &types.kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        kube::discovery::Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            dynamic.metadata.namespace.as_deref().unwrap(),
            &ar,
        ),
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    let name = dynamic.metadata.name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("chart-check")
            .dry_run()
            .validation_strict(),
        &Patch::Apply(&dynamic),
    )
    .await
    .unwrap_or_else(|e| panic!("{} {name} refused: {e}", types.kind));
}

/// An object with what only Helm adds taken out, keyed by kind/namespace/name.
fn without_helm(mut obj: Value) -> (String, Value) {
    fn strip(obj: &mut Value, pointer: &str) {
        let Some(map) = obj.pointer_mut(pointer).and_then(|l| l.as_object_mut()) else {
            return;
        };
        for k in [
            "helm.sh/chart",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
        ] {
            map.remove(k);
        }
        if map.is_empty() {
            let (parent, _) = pointer.rsplit_once('/').unwrap();
            obj.pointer_mut(parent)
                .and_then(|p| p.as_object_mut())
                .map(|p| p.remove("labels"));
        }
    }
    strip(&mut obj, "/metadata/labels");
    strip(&mut obj, "/spec/template/metadata/labels");
    if let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(|a| a.as_object_mut())
    {
        a.remove("helm.sh/resource-policy");
        if a.is_empty() {
            obj["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
    }
    let key = format!(
        "{}/{}/{}",
        obj["kind"].as_str().unwrap_or_default(),
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    );
    (key, obj)
}

/// Floats with an integral value as integers.
fn integral(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && n.as_i64().is_none() => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(integral).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

async fn impersonated(cp: &meshop_testenv::controlplane::ControlPlane) -> Client {
    let kubeconfig = Kubeconfig::read_from(&cp.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{NS}:meshop"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{NS}"),
        "system:authenticated".into(),
    ]);
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_runs_upgrades_and_uninstalls_like_deploy() {
    let cp = meshop_testenv::shared_with_controllers();
    let _logs = meshop_testenv::LogsOnFailure("helm chart".into());
    let client = cp.client().await.unwrap();
    let helm = Helm::locate(&cp.kubeconfig, &cp.dir.join("helm")).unwrap();

    // Lint.
    let lint = helm.run(&["lint", "--strict", CHART]).unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    // Template: accepted by the API server, with defaults and with every optional value.
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": NS } })).unwrap(),
        )
        .await
        .unwrap();
    let template = |extra: &[&str]| {
        let mut args = vec![
            "template",
            "meshop",
            CHART,
            "-n",
            NS,
            "--kube-version",
            KUBE_VERSION,
        ];
        args.extend_from_slice(extra);
        docs(&helm.run(&args).unwrap())
    };
    let defaults = template(&[]);
    assert_eq!(
        defaults.len(),
        13,
        "CRD, SA, ClusterRole(Binding), Role(Binding), Deployment, PDB, 2 Services, \
         istio-system with its Role(Binding)"
    );
    // The grant of istio-system goes to a namespace this control plane may not have: the same
    // objects are dry-run below for a namespace that exists.
    for obj in defaults
        .iter()
        .filter(|o| o["metadata"]["namespace"] != "istio-system")
    {
        dry_run(&client, obj).await;
    }
    let everything = template(&[
        "--set",
        "replicas=3",
        "--set",
        "image.repository=registry.example/meshop",
        "--set",
        "image.tag=0.1.0-rc.1",
        "--set",
        "logLevel=debug",
        "--set",
        "nodeSelector.pool=system",
        "--set",
        "tolerations[0].key=dedicated",
        "--set",
        "tolerations[0].operator=Exists",
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "image.pullSecrets[0].name=regcred",
        "--set",
        "podAnnotations.team=platform",
        "--set",
        "podDisruptionBudget.minAvailable=50%",
        "--set",
        "resources.limits.memory=512Mi",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        &format!("controlPlaneNamespaces={{{NS}}}"),
    ]);
    let granted: Vec<&Value> = everything
        .iter()
        .filter(|o| o["metadata"]["name"] == "meshop-control-plane")
        .collect();
    assert_eq!(granted.len(), 2, "a Role and its RoleBinding");
    assert!(granted.iter().all(|o| o["metadata"]["namespace"] == NS));
    let deployment = everything
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example/meshop:0.1.0-rc.1"
    );
    assert_eq!(pod["nodeSelector"], json!({ "pool": "system" }));
    assert_eq!(pod["imagePullSecrets"], json!([{ "name": "regcred" }]));
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        "512Mi"
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["team"],
        "platform"
    );
    let monitor = everything
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("serviceMonitor.enabled renders a ServiceMonitor");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/name": "meshop", "app.kubernetes.io/component": "metrics" })
    );
    // Its rules are judged by promtool in tests/tests/alerts.rs.
    let rule = everything
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("prometheusRule.enabled renders a PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], NS);
    assert_eq!(rule["spec"], meshop::alerts::rule_groups());
    // The Prometheus Operator's CRDs are not installed here: everything else goes to the server.
    for obj in everything
        .iter()
        .filter(|o| o["kind"] != "ServiceMonitor" && o["kind"] != "PrometheusRule")
    {
        dry_run(&client, obj).await;
    }

    // The chart with its defaults is deploy/ (as kustomize builds it) plus Helm's labels.
    let kustomized = std::process::Command::new(&cp.binaries.kubectl)
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"),
        ])
        .output()
        .unwrap();
    assert!(kustomized.status.success());
    let deploy: BTreeMap<String, Value> = docs(&String::from_utf8(kustomized.stdout).unwrap())
        .into_iter()
        // The operator's own namespace is Helm's (`--create-namespace`).
        .filter(|o| !(o["kind"] == "Namespace" && o["metadata"]["name"] == "meshop-system"))
        .map(without_helm)
        .collect();
    let chart: BTreeMap<String, Value> = template(&["-n", "meshop-system"])
        .into_iter()
        .map(without_helm)
        .collect();
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        deploy.keys().collect::<Vec<_>>()
    );
    for (key, obj) in &chart {
        // kustomize writes 1000.0 as 1000: compare numbers by value.
        let (chart_obj, deploy_obj) = (integral(obj.clone()), integral(deploy[key].clone()));
        if chart_obj != deploy_obj {
            let file = |what: &str, v: &Value| {
                let path = cp
                    .dir
                    .join(format!("{}-{what}.json", key.replace('/', "_")));
                std::fs::write(&path, serde_json::to_string_pretty(v).unwrap()).unwrap();
                path.display().to_string()
            };
            panic!(
                "{key} differs between the chart and deploy/: see {} and {}",
                file("chart", &chart_obj),
                file("deploy", &deploy_obj)
            );
        }
    }

    // Install. The harness installed the CRD with kubectl-like tooling: adopt it.
    helm.run(&[
        "install",
        "meshop",
        CHART,
        "-n",
        NS,
        "--set",
        "controlPlaneNamespaces={chart-mesh}",
        "--take-ownership",
        "--wait",
        "--timeout",
        "3m",
    ])
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = deployments.get("meshop").await.unwrap();
    assert_eq!(
        d.status.as_ref().and_then(|s| s.available_replicas),
        Some(2)
    );
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let webhook = services.get("meshop-webhook").await.unwrap();
    let port = &webhook.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.port, 443);
    // The Service reaches both pods on the port `meshop run` serves the webhook on.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    wait_until(
        "webhook Service backed by 2 ready pods",
        Duration::from_secs(60),
        || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=meshop-webhook"))
                .await?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            let ports: Vec<i32> = list
                .items
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| p.port)
                .collect();
            if ready == 2 && ports == [meshop::deploy::WEBHOOK_PORT as i32] {
                Ok(())
            } else {
                anyhow::bail!("{ready} ready endpoint(s), ports {ports:?}")
            }
        },
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("meshinstalls.meshop.dev").await.unwrap();
    assert_eq!(
        crd.metadata
            .labels
            .unwrap_or_default()
            .get("app.kubernetes.io/managed-by"),
        Some(&"Helm".to_string())
    );

    // The operator with the chart's RBAC only, in the chart's namespace, registering its webhook
    // through the chart's Service as it does in a cluster (no URL).
    let operator_client = impersonated(cp).await;
    let hook_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = meshop::controller::RunOptions {
        health_addr: "127.0.0.1:0".parse().unwrap(),
        leader_election: true,
        lease_namespace: NS.into(),
        identity: "chart-test".into(),
        lease_duration: Duration::from_secs(15),
        webhook_addr: Some(format!("127.0.0.1:{hook_port}").parse().unwrap()),
        webhook_cert_lifetime: meshop::webhook::certs::DEFAULT_CERT_LIFETIME,
        webhook_limits: Default::default(),
        webhook_url: None,
    };
    let operator = tokio::spawn(meshop::controller::run(operator_client, options));
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall", "metadata": { "name": "chart" },
        "spec": { "profile": "production", "namespace": "chart-mesh", "components": { "cni": { "enabled": true } } },
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, "chart", KStatus::Current, Duration::from_secs(180))
        .await;
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let registered: Vec<_> = hooks
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|h| h.webhooks.unwrap_or_default())
        .map(|w| {
            w.client_config
                .service
                .expect("registered by Service, not URL")
        })
        .collect();
    assert!(!registered.is_empty(), "the webhook is registered");
    for svc in registered {
        assert_eq!(
            (svc.namespace.as_str(), svc.name.as_str(), svc.port),
            (NS, "meshop-webhook", Some(443))
        );
    }
    api.patch(
        "chart",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "profile": "demo" } })),
    )
    .await
    .unwrap();
    meshop_testenv::wait_for_kstatus(&api, "chart", KStatus::Current, Duration::from_secs(180))
        .await;
    api.delete("chart", &DeleteParams::default()).await.unwrap();
    wait_until(
        "MeshInstall chart deleted",
        Duration::from_secs(180),
        || async {
            match api.get_opt("chart").await? {
                None => Ok(()),
                Some(mi) => anyhow::bail!("still there, status {:?}", mi.status),
            }
        },
    )
    .await;
    // The granted namespace is the installer's: meshop deleted its control plane, not the grant.
    let grant: Api<k8s_openapi::api::rbac::v1::Role> =
        Api::namespaced(client.clone(), "chart-mesh");
    assert!(
        grant
            .get_opt("meshop-control-plane")
            .await
            .unwrap()
            .is_some(),
        "meshop deleted the namespace the chart granted it"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    let failures: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ApplyFailed")
                || e.note
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains("forbidden")
        })
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(!operator.is_finished(), "the operator exited");
    operator.abort();

    // Upgrade.
    helm.run(&[
        "upgrade",
        "meshop",
        CHART,
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "replicas=3",
        "--set",
        "logLevel=debug",
        "--wait",
        "--timeout",
        "3m",
    ])
    .unwrap();
    let d = deployments.get("meshop").await.unwrap();
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(
        d.status.as_ref().and_then(|s| s.available_replicas),
        Some(3)
    );
    let env = d.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
    );
    let history = helm
        .run(&["history", "meshop", "-n", NS, "-o", "json"])
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&history).unwrap().len(),
        2
    );

    // Uninstall: everything goes but the CRD.
    helm.run(&["uninstall", "meshop", "-n", NS, "--wait", "--timeout", "3m"])
        .unwrap();
    assert!(deployments.get_opt("meshop").await.unwrap().is_none());
    assert!(services.get_opt("meshop-webhook").await.unwrap().is_none());
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    assert!(sas.get_opt("meshop").await.unwrap().is_none());
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt("meshop").await.unwrap().is_none());
    // The grant goes; the namespace stays (the chart keeps it: a mesh may still run there).
    assert!(
        grant
            .get_opt("meshop-control-plane")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt("chart-mesh")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        crds.get_opt("meshinstalls.meshop.dev")
            .await
            .unwrap()
            .is_some(),
        "the CRD is kept"
    );

    // Package (what `helm push` publishes as an OCI chart).
    let out = cp.dir.join("helm-package");
    helm.run(&["package", CHART, "-d", out.to_str().unwrap()])
        .unwrap();
    assert!(
        out.join(format!("meshop-{}.tgz", meshop::deploy::VERSION))
            .exists()
    );
}
