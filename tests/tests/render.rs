//! Every object of every profile and documented example is accepted by a real API server:
//! server-side apply, dry run, strict field validation (after the namespace and CRDs are applied
//! for real, as the reconciler's first stage does).

use kube::api::{Patch, PatchParams};
use meshop::api::{MeshInstall, Profile};
use meshop::effective::{Installation, Owner};
use meshop::render::{self, Stage};

const MANAGER: &str = "render-test";

async fn check(client: &kube::Client, what: &str, install: &Installation) {
    let objects = render::render(install).unwrap();
    let real = PatchParams::apply(MANAGER).force().validation_strict();
    for o in objects.iter().filter(|o| o.stage() == Stage::Base) {
        o.api(client)
            .patch(o.name(), &real, &Patch::Apply(&o.object))
            .await
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", o.key()));
        if o.kind() == "CustomResourceDefinition" {
            meshop_testenv::wait_established(&kube::Api::all(client.clone()), o.name())
                .await
                .unwrap();
        }
    }
    // A gateway in another namespace needs that namespace to exist (meshop creates only the
    // control plane's; an installer grants the others).
    for ns in install.namespaces().iter().skip(1) {
        let namespace: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": ns } })).unwrap();
        match kube::Api::all(client.clone())
            .create(&Default::default(), &namespace)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("{what}: creating namespace {ns}: {e}"),
        }
    }
    let mut dry = real.clone();
    dry.dry_run = true;
    let mut failures = Vec::new();
    for o in objects.iter().filter(|o| o.stage() != Stage::Base) {
        if let Err(e) = o
            .api(client)
            .patch(o.name(), &dry, &Patch::Apply(&o.object))
            .await
        {
            failures.push(format!("{}: {e}", o.key()));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: refused by the API server:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_profile_is_accepted_by_the_api_server() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    for profile in Profile::ALL {
        let install = meshop::cli::installation(None, Some(profile), None).unwrap();
        check(&client, &format!("profile {profile}"), &install).await;
    }
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mi: MeshInstall =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let install = Installation::resolve(
            Owner {
                name: "example".into(),
                uid: None,
            },
            &mi.spec,
        )
        .unwrap();
        check(&client, &path.display().to_string(), &install).await;
    }
}

/// Istio's API CRDs take real Istio objects.
#[tokio::test]
async fn istio_crds_accept_istio_objects() {
    let cp = meshop_testenv::shared();
    let client = cp.client().await.unwrap();
    let install = meshop::cli::installation(None, Some(Profile::Minimal), None).unwrap();
    for crd in render::istio_crds(&install) {
        let crds = kube::Api::all(client.clone());
        crd.api(&client)
            .patch(
                crd.name(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd.object),
            )
            .await
            .unwrap();
        meshop_testenv::wait_established(&crds, crd.name())
            .await
            .unwrap();
    }
    let ns = meshop_testenv::namespace(&client, "istio-objects")
        .await
        .unwrap();
    let objects = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: {ns}}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v2}}
      weight: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: {ns}}}
spec:
  host: reviews
  subsets: [{{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: {ns}}}
spec:
  hosts: [api.example.com]
  ports: [{{number: 443, name: https, protocol: TLS}}]
  resolution: DNS
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {ns}}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-get, namespace: {ns}}}
spec:
  action: ALLOW
  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {{name: old-style, namespace: {ns}}}
spec: {{hosts: [ratings]}}
"#,
        ns = ns.name
    );
    for doc in serde_yaml::Deserializer::from_str(&objects) {
        let obj: kube::api::DynamicObject = serde::Deserialize::deserialize(doc).unwrap();
        let types = obj.types.clone().unwrap();
        let (group, version) = types.api_version.split_once('/').unwrap();
        let gvk = kube::core::GroupVersionKind::gvk(group, version, &types.kind);
        let (ar, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::namespaced_with(client.clone(), &ns.name, &ar);
        let name = obj.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).validation_strict(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("{} {name}: {e}", types.kind));
        assert!(api.get(&name).await.unwrap().data["spec"].is_object());
    }
}
