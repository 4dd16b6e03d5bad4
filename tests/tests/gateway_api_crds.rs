//! The Gateway API CRDs meshop installs for ambient mode (operator/src/render/gateway_api_crds.rs).
//!
//! - Against the upstream release: for every bundle meshop knows, the CRDs meshop renders name
//!   the same kinds, plurals, short names, scopes, served versions, storage version and status
//!   subresources as the standard-channel CRDs of that release, read from the Go module
//!   `sigs.k8s.io/gateway-api@<version>` (`config/crd/standard/`, fetched with `go mod download`).
//! - Against the real API server, with a real operator: meshop creates them where absent, never
//!   replaces a newer release with an older one, leaves the upstream CRDs a user applied as they
//!   are (resourceVersion and labels), and deleting the last MeshInstall leaves them in place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use meshop::api::{MeshInstall, MeshInstallSpec};
use meshop::controller::status::KStatus;
use meshop::effective::{Installation, Owner};
use meshop::render::{
    BUNDLE_VERSION_ANNOTATION, GATEWAY_API_BUNDLES, GATEWAY_API_GROUP, LABEL_MANAGED_BY,
};
use serde_json::json;

/// What the comparison looks at in one CRD.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Shape {
    plural: String,
    short_names: BTreeSet<String>,
    scope: String,
    served: BTreeSet<String>,
    storage: String,
    /// Served versions with a status subresource.
    status: BTreeSet<String>,
    bundle_version: Option<String>,
}

fn shape(crd: &CustomResourceDefinition) -> (String, Shape) {
    let s = &crd.spec;
    let served = s.versions.iter().filter(|v| v.served);
    (
        s.names.kind.clone(),
        Shape {
            plural: s.names.plural.clone(),
            short_names: s.names.short_names.iter().flatten().cloned().collect(),
            scope: s.scope.clone(),
            served: served.clone().map(|v| v.name.clone()).collect(),
            storage: s
                .versions
                .iter()
                .find(|v| v.storage)
                .map(|v| v.name.clone())
                .unwrap_or_default(),
            status: served
                .filter(|v| v.subresources.as_ref().is_some_and(|r| r.status.is_some()))
                .map(|v| v.name.clone())
                .collect(),
            bundle_version: crd
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(BUNDLE_VERSION_ANNOTATION))
                .cloned(),
        },
    )
}

/// The module directory of `sigs.k8s.io/gateway-api@<version>`, downloaded by Go if need be.
fn upstream_dir(version: &str) -> PathBuf {
    let out = Command::new("go")
        .args([
            "mod",
            "download",
            "-json",
            &format!("sigs.k8s.io/gateway-api@{version}"),
        ])
        .output()
        .expect("go is installed (the harness builds the control plane with it)");
    assert!(
        out.status.success(),
        "go mod download sigs.k8s.io/gateway-api@{version}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(info["Dir"].as_str().expect("go mod download names the Dir"))
}

/// The standard-channel CRDs of an upstream release, as its files hold them.
fn upstream_crds(version: &str) -> Vec<(PathBuf, CustomResourceDefinition)> {
    let dir = upstream_dir(version).join("config/crd/standard");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if value["kind"] == "CustomResourceDefinition" {
                out.push((path.clone(), serde_json::from_value(value).unwrap()));
            }
        }
    }
    assert!(!out.is_empty(), "no CRD in {}", dir.display());
    out
}

fn install(yaml: &str) -> Installation {
    let spec: MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
    Installation::resolve(
        Owner {
            name: "m".into(),
            uid: None,
        },
        &spec,
    )
    .unwrap()
}

/// The Gateway API CRDs meshop renders for an installation.
fn rendered(install: &Installation) -> Vec<CustomResourceDefinition> {
    meshop::render::render(install)
        .unwrap()
        .into_iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
        .filter(|o| o.name().ends_with(&format!(".{GATEWAY_API_GROUP}")))
        .map(|o| serde_json::from_value(serde_json::to_value(&o.object).unwrap()).unwrap())
        .collect()
}

#[test]
fn meshops_gateway_api_crds_match_the_upstream_bundles() {
    // Every release meshop knows, reached through the Istio minor that installs it.
    let minors = [("1.31", "v1.6.0"), ("1.30", "v1.5.1")];
    let known: BTreeSet<&str> = GATEWAY_API_BUNDLES.iter().map(|b| b.version).collect();
    assert_eq!(
        known,
        minors.iter().map(|(_, v)| *v).collect(),
        "a bundle meshop knows is not compared here"
    );
    for (minor, version) in minors {
        let ours: BTreeMap<String, Shape> =
            rendered(&install(&format!("profile: ambient\nversion: '{minor}'")))
                .iter()
                .map(shape)
                .collect();
        let theirs: BTreeMap<String, Shape> = upstream_crds(version)
            .iter()
            .map(|(_, c)| shape(c))
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "Istio {minor}: the kinds of Gateway API {version}"
        );
        for (kind, theirs) in &theirs {
            assert_eq!(
                &ours[kind], theirs,
                "Istio {minor}: {kind} of Gateway API {version} (meshop's, then upstream's)"
            );
        }
        eprintln!(
            "Istio {minor}: {} Gateway API {version} CRDs match upstream",
            ours.len()
        );
    }
}

fn crds_api(client: &kube::Client) -> Api<CustomResourceDefinition> {
    Api::all(client.clone())
}

/// The Gateway API CRDs in the cluster: name -> (resourceVersion, managed-by label, bundle).
async fn in_cluster(
    client: &kube::Client,
) -> BTreeMap<String, (String, Option<String>, Option<String>)> {
    crds_api(client)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| c.spec.group == GATEWAY_API_GROUP)
        .map(|c| {
            let m = c.metadata;
            (
                m.name.unwrap_or_default(),
                (
                    m.resource_version.unwrap_or_default(),
                    m.labels.and_then(|l| l.get(LABEL_MANAGED_BY).cloned()),
                    m.annotations
                        .and_then(|a| a.get(BUNDLE_VERSION_ANNOTATION).cloned()),
                ),
            )
        })
        .collect()
}

async fn mesh(client: &kube::Client, name: &str, version: &str) {
    let meshes: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": { "profile": "ambient", "version": version, "namespace": format!("{name}-system") }
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, name, KStatus::Current, Duration::from_secs(180))
        .await;
}

async fn delete_mesh(client: &kube::Client, name: &str) {
    let meshes: Api<MeshInstall> = Api::all(client.clone());
    meshes.delete(name, &DeleteParams::default()).await.unwrap();
    meshop_testenv::wait_until(
        &format!("MeshInstall {name} gone"),
        Duration::from_secs(180),
        || async {
            anyhow::ensure!(meshes.get_opt(name).await?.is_none(), "still there");
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshop_creates_gateway_api_crds_only_where_absent_and_never_removes_them() {
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    let _logs = meshop_testenv::LogsOnFailure("Gateway API CRDs".into());
    assert!(
        in_cluster(&client).await.is_empty(),
        "the cluster starts without Gateway API CRDs"
    );

    // Absent: an Istio 1.31 ambient mesh gets Gateway API v1.6.0's, labelled meshop's.
    mesh(&client, "gwapi-new", "1.31").await;
    let created = in_cluster(&client).await;
    assert_eq!(created.len(), 10, "{created:#?}");
    for (name, (_, managed_by, bundle)) in &created {
        assert_eq!(managed_by.as_deref(), Some("meshop"), "{name}");
        assert_eq!(bundle.as_deref(), Some("v1.6.0"), "{name}");
    }
    // Deleting the last MeshInstall leaves them.
    delete_mesh(&client, "gwapi-new").await;
    assert_eq!(
        in_cluster(&client).await,
        created,
        "after the last mesh went"
    );

    // meshop's own newer release stays when an Istio 1.30 mesh (Gateway API v1.5.1) comes: not
    // a field changes, and TCPRoute and UDPRoute, which v1.5.1 lacks, stay.
    mesh(&client, "gwapi-old", "1.30").await;
    assert_eq!(
        in_cluster(&client).await,
        created,
        "an older release replaced a newer one"
    );
    delete_mesh(&client, "gwapi-old").await;

    // Installed by the user from the upstream v1.6.0 bundle: left exactly as they are.
    let crds = crds_api(&client);
    for name in created.keys() {
        crds.delete(name, &DeleteParams::default()).await.unwrap();
    }
    meshop_testenv::wait_until(
        "Gateway API CRDs deleted",
        Duration::from_secs(60),
        || async {
            let left = in_cluster(&client).await;
            anyhow::ensure!(left.is_empty(), "left: {:?}", left.keys());
            Ok(())
        },
    )
    .await;
    let mut applied = 0;
    for (path, _) in upstream_crds("v1.6.0") {
        let out = Command::new(&cp.binaries.kubectl)
            .args(["apply", "--server-side", "-f"])
            .arg(&path)
            .env("KUBECONFIG", &cp.kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl apply {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        applied += 1;
    }
    for name in created.keys() {
        meshop_testenv::wait_established(&crds, name).await.unwrap();
    }
    let upstream = in_cluster(&client).await;
    assert_eq!(upstream.len(), 10, "{applied} files applied: {upstream:#?}");
    assert!(
        upstream
            .values()
            .all(|(_, managed_by, _)| managed_by.is_none())
    );
    mesh(&client, "gwapi-user", "1.31").await;
    assert_eq!(
        in_cluster(&client).await,
        upstream,
        "meshop changed the upstream CRDs a user applied"
    );
    delete_mesh(&client, "gwapi-user").await;
    assert_eq!(
        in_cluster(&client).await,
        upstream,
        "after the last mesh went"
    );
}
