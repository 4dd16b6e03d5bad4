//! `meshop convert` on a corpus of IstioOperators written from Istio's documented fields
//! (operator/tests/convert/): what each carries, and what it lists as not carried with why.
//! Every setting of every input is accounted for: carried into the MeshInstall or listed.

use meshop::api::{MeshInstall, Profile};
use meshop::cli::convert::{Conversion, convert};
use serde_json::{Value, json};

fn corpus(name: &str) -> Conversion {
    let path = format!("{}/tests/convert/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    convert(&serde_yaml::from_str(&text).unwrap(), None).unwrap()
}

fn spec(c: &Conversion) -> Value {
    serde_json::to_value(&c.mesh_install.spec).unwrap()
}

fn not_carried(c: &Conversion) -> Vec<(&str, &str)> {
    c.not_carried
        .iter()
        .map(|n| (n.path.as_str(), n.reason.as_str()))
        .collect()
}

#[test]
fn default_profile_with_tuned_istiod_and_gateway() {
    let c = corpus("default-tuned");
    let s = spec(&c);
    assert_eq!(
        c.mesh_install.metadata.name.as_deref(),
        Some("control-plane")
    );
    assert_eq!(s["profile"], "minimal");
    assert_eq!(s["hub"], "registry.example.com/istio");
    assert_eq!(s["version"], "1.31.1");
    // Istio's MeshConfig is carried as it is, in Istio's own shape.
    assert_eq!(
        s["meshConfig"],
        json!({ "accessLogFile": "/dev/stdout", "outboundTrafficPolicy": { "mode": "REGISTRY_ONLY" },
                "trustDomain": "corp.example", "enableAutoMtls": true })
    );
    assert_eq!(
        s["components"]["istiod"]["autoscale"],
        json!({ "enabled": true, "minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70 })
    );
    assert_eq!(
        s["components"]["istiod"]["resources"]["requests"]["memory"],
        "3Gi"
    );
    let ingress = &s["components"]["ingressGateway"];
    assert_eq!(ingress["enabled"], true);
    assert_eq!(ingress["service"]["type"], "LoadBalancer");
    assert_eq!(
        ingress["service"]["ports"][1],
        json!({ "name": "https", "port": 443, "targetPort": 8443 })
    );
    assert_eq!(
        ingress["service"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    assert_eq!(
        s["components"]["istiod"]["podAnnotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        "true"
    );
    assert_eq!(not_carried(&c), vec![]);
}

#[test]
fn demo_canary_with_sidecar_values() {
    let c = corpus("demo-canary");
    let s = spec(&c);
    assert_eq!(s["profile"], "demo");
    assert_eq!(s["revision"], "canary");
    assert_eq!(s["namespace"], "istio-canary");
    assert_eq!(s["version"], "1.30");
    assert_eq!(
        s["meshConfig"]["defaultConfig"],
        json!({ "holdApplicationUntilProxyStarts": true, "concurrency": 2, "tracing": { "sampling": 10 } })
    );
    assert_eq!(s["global"]["logLevel"], "default:info");
    assert_eq!(s["injection"]["sidecarMode"], "classic");
    assert_eq!(
        s["injection"]["proxy"],
        json!({
            "logLevel": "warning",
            "resources": { "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "cpu": "1", "memory": "512Mi" } }
        })
    );
    // meshop rewrites app probes as Istio's rewriteAppHTTPProbe: true does.
    assert_eq!(not_carried(&c), vec![]);
}

#[test]
fn ha_settings_and_every_gateway_carry() {
    let c = corpus("ha-gateways");
    let s = spec(&c);
    let istiod = &s["components"]["istiod"];
    assert_eq!(istiod["replicas"], 3);
    assert_eq!(
        istiod["podDisruptionBudget"],
        json!({ "enabled": true, "minAvailable": 2 })
    );
    assert_eq!(istiod["nodeSelector"]["node-role.example/infra"], "true");
    assert_eq!(istiod["tolerations"][0]["key"], "dedicated");
    assert!(istiod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(istiod["priorityClassName"], "system-cluster-critical");
    // A rollout strategy has no field of its own: it is an overlay on istiod's Deployment.
    assert_eq!(
        istiod["overlays"],
        json!([{ "kind": "Deployment", "name": "istiod", "strategicMerge": { "spec": { "strategy": {
            "rollingUpdate": { "maxSurge": "100%", "maxUnavailable": "25%" } } } } }])
    );
    let ingress = &s["components"]["ingressGateway"];
    assert_eq!(
        ingress["autoscale"],
        json!({ "enabled": true, "minReplicas": 3, "maxReplicas": 10, "targetCPUUtilizationPercentage": 60 })
    );
    assert_eq!(ingress["env"][0]["name"], "ISTIO_META_ROUTER_MODE");
    // Istio's path patch, resolved against meshop's own Deployment.
    assert_eq!(
        ingress["overlays"],
        json!([{ "kind": "Deployment", "name": "istio-ingressgateway", "jsonPatch": [
            { "op": "replace", "path": "/spec/template/spec/terminationGracePeriodSeconds", "value": 60 }] }])
    );
    assert_eq!(
        s["components"]["ingressGateways"],
        json!([{ "name": "internal-gateway", "labels": { "istio": "internal-gateway" },
                 "enabled": true, "service": { "type": "ClusterIP" } }])
    );
    assert_eq!(
        s["components"]["egressGateway"]["resources"]["requests"]["cpu"],
        "100m"
    );
    assert_eq!(not_carried(&c), vec![]);
}

#[test]
fn an_ambient_install_converts_to_an_ambient_meshinstall_that_resolves() {
    let path = format!("{}/tests/convert/ambient.yaml", env!("CARGO_MANIFEST_DIR"));
    let doc = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let c = convert(&doc, None).unwrap();
    assert_eq!(c.mesh_install.spec.profile, Profile::Ambient);
    let install = meshop::effective::Installation::resolve(
        meshop::effective::Owner {
            name: "ambient".into(),
            uid: None,
        },
        &c.mesh_install.spec,
    )
    .unwrap();
    assert!(install.ambient.enabled && install.ztunnel.enabled && install.istiod.enabled);
    let paths: Vec<&str> = c.not_carried.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, vec!["spec.components.cni.namespace"]);
}

#[test]
fn a_legacy_file_keeps_addons_mtls_and_autoscaling_and_drops_its_version() {
    let c = corpus("legacy-addons");
    let s = spec(&c);
    assert_eq!(c.mesh_install.spec.profile, Profile::Demo);
    assert!(s.get("version").is_none(), "an end-of-life tag is left out");
    assert_eq!(s["namespace"], "mesh-system");
    assert_eq!(
        s["components"]["addons"],
        json!({ "grafana": { "enabled": true }, "kiali": { "enabled": true },
                "prometheus": { "enabled": false }, "jaeger": { "enabled": true } })
    );
    assert_eq!(
        s["components"]["istiod"]["autoscale"],
        json!({ "enabled": true, "minReplicas": 2, "maxReplicas": 4 })
    );
    assert_eq!(s["meshConfig"]["mtlsMode"], "STRICT");
    assert_eq!(s["meshConfig"]["traceSampling"], 5.0);
    assert_eq!(s["injection"]["trafficCapture"], "cni");
    assert_eq!(s["components"]["cni"], json!({ "enabled": true }));
    let left = not_carried(&c);
    assert_eq!(
        left.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec!["spec.installPackagePath", "spec.tag"]
    );
}

/// Every corpus output is a MeshInstall the CRD schema and meshop's resolver accept (convert
/// checks the latter itself; here the YAML round trip of the text output too).
#[test]
fn every_output_is_an_installable_meshinstall() {
    for name in [
        "default-tuned",
        "demo-canary",
        "ha-gateways",
        "legacy-addons",
    ] {
        let c = corpus(name);
        let text = meshop::cli::convert::text(&c).unwrap();
        assert!(
            text.starts_with("# "),
            "{name}: the not-carried list comes first"
        );
        let back: MeshInstall = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back.spec, c.mesh_install.spec, "{name}");
        meshop::effective::Installation::from_mesh(&back).unwrap();
    }
}

/// Istio's `values.global.networkPolicy.enabled` is meshop's `global.networkPolicy.enabled`, the
/// same shape: the converted MeshInstall renders the policies.
#[test]
fn network_policy_is_carried_one_to_one() {
    let doc = serde_yaml::from_str(
        "apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  values:
    global:
      logAsJson: true
      networkPolicy:
        enabled: true
",
    )
    .unwrap();
    let c = convert(&doc, None).unwrap();
    assert_eq!(not_carried(&c), vec![]);
    let s = spec(&c);
    assert_eq!(
        s["global"],
        json!({ "logAsJson": true, "networkPolicy": { "enabled": true } })
    );
    let install = meshop::effective::Installation::from_mesh(&c.mesh_install).unwrap();
    let policies: Vec<String> = meshop::render::render(&install)
        .unwrap()
        .iter()
        .filter(|o| o.kind() == "NetworkPolicy")
        .map(|o| o.name().to_string())
        .collect();
    assert_eq!(policies, ["istiod", "istio-ingressgateway"]);
}
