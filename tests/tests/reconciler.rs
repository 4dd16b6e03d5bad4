//! The reconciler end to end, in controllers mode (Deployments really roll out under kwok), one
//! concern per test: install and status, drift repair, profile switches in place, revision
//! ownership, invalid specs. The tests run in parallel against one control plane and one
//! operator process (`meshop run`), as MeshInstalls in a cluster share one operator. MeshInstalls
//! are cluster-scoped, so each test has its own MeshInstall name and its own control-plane
//! namespace (`spec.namespace`): no test sees another's objects, and the first failure hides
//! nothing. Deletion removes objects every MeshInstall shares, so it has a control plane of its
//! own (deletion.rs).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use meshop::api::{MeshInstall, condition};
use meshop::controller::status::KStatus;
use meshop_testenv::LogsOnFailure;
use serde_json::json;

/// Ready takes longer with other tests installing meshes at the same time.
const READY: Duration = Duration::from_secs(180);

/// A test's own MeshInstall: the shared control plane and operator, a client, and a logs hint
/// printed if the test fails.
struct Mesh {
    client: Client,
    api: Api<MeshInstall>,
    name: &'static str,
    namespace: &'static str,
    _logs: LogsOnFailure,
}

impl Mesh {
    /// Creates MeshInstall `name` with `spec` in control-plane namespace `namespace`.
    async fn create(name: &'static str, namespace: &'static str, spec: serde_json::Value) -> Mesh {
        let cp = meshop_testenv::shared_with_controllers();
        meshop_testenv::shared_operator();
        let client = cp.client().await.unwrap();
        let api: Api<MeshInstall> = Api::all(client.clone());
        let mut spec = spec;
        spec["namespace"] = json!(namespace);
        let mi: MeshInstall = serde_json::from_value(json!({
            "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
            "metadata": { "name": name }, "spec": spec
        }))
        .unwrap();
        api.create(&PostParams::default(), &mi).await.unwrap();
        Mesh {
            client,
            api,
            name,
            namespace,
            _logs: LogsOnFailure(format!("MeshInstall {name}")),
        }
    }

    async fn wait(&self, want: KStatus, timeout: Duration) -> MeshInstall {
        meshop_testenv::wait_for_kstatus(&self.api, self.name, want, timeout).await
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// meshop's Deployments in this mesh's namespace, except those being deleted.
    async fn deployment_names(&self) -> BTreeSet<String> {
        self.deployments()
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=meshop"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .map(|d| d.metadata.name.unwrap())
            .collect()
    }

    async fn uid_of(&self, deployment: &str) -> String {
        self.deployments()
            .get(deployment)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap()
    }

    async fn switch_profile(&self, profile: &str) {
        self.api
            .patch(
                self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "profile": profile } })),
            )
            .await
            .unwrap();
    }

    /// Deletes the MeshInstall so that the tests still running have the cluster to themselves.
    async fn delete(self) {
        let _ = self.api.delete(self.name, &DeleteParams::default()).await;
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const DEMO_DEPLOYMENTS: [&str; 7] = [
    "istiod",
    "istio-ingressgateway",
    "istio-egressgateway",
    "prometheus",
    "grafana",
    "kiali",
    "jaeger",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_reaches_ready_with_honest_status() {
    let mesh = Mesh::create("install", "rc-install", json!({ "profile": "demo" })).await;
    let mi = mesh.wait(KStatus::Current, READY).await;
    let status = mi.status.clone().unwrap();
    assert_eq!(status.observed_generation, mi.metadata.generation);
    assert_eq!(
        (status.profile.as_deref(), status.version.as_deref()),
        (
            Some("demo"),
            Some(meshop::versions::default_version().as_str())
        )
    );
    let names: Vec<_> = status.components.iter().map(|c| c.name.as_str()).collect();
    for c in [
        "istiod",
        "ingressGateway",
        "egressGateway",
        "prometheus",
        "grafana",
        "kiali",
        "jaeger",
    ] {
        assert!(names.contains(&c), "status lacks component {c}: {names:?}");
    }
    for c in status
        .components
        .iter()
        .filter(|c| c.desired_replicas.is_some())
    {
        assert_eq!(c.ready_replicas, c.desired_replicas, "{c:?}");
    }
    assert_eq!(mesh.deployment_names().await, set(&DEMO_DEPLOYMENTS));
    mesh.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_and_reported() {
    let mesh = Mesh::create(
        "drift",
        "rc-drift",
        json!({ "profile": "minimal", "components": { "ingressGateway": { "enabled": true } } }),
    )
    .await;
    mesh.wait(KStatus::Current, READY).await;

    // A deleted gateway Service comes back.
    let services: Api<Service> = Api::namespaced(mesh.client.clone(), mesh.namespace);
    let old_uid = services
        .get("istio-ingressgateway")
        .await
        .unwrap()
        .metadata
        .uid;
    services
        .delete("istio-ingressgateway", &DeleteParams::default())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "gateway Service recreated",
        Duration::from_secs(30),
        || async {
            let uid = services
                .get_opt("istio-ingressgateway")
                .await?
                .context("Service istio-ingressgateway absent")?
                .metadata
                .uid;
            ensure!(uid != old_uid, "still the old Service {uid:?}");
            Ok(())
        },
    )
    .await;

    // An istiod Deployment edited by someone else is put back.
    let deployments = mesh.deployments();
    deployments
        .patch(
            "istiod",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "istiod" },
                "spec": { "template": { "spec": { "containers": [
                    { "name": "discovery", "image": "example.com/not-istio:1" }
                ] } } }
            })),
        )
        .await
        .unwrap();
    meshop_testenv::wait_until("istiod image restored", Duration::from_secs(30), || async {
        let d = deployments.get("istiod").await?;
        let image = d
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image)
            .unwrap_or_default();
        ensure!(
            image.ends_with(&format!("/pilot:{}", meshop::versions::default_version())),
            "image {image}"
        );
        Ok(())
    })
    .await;

    // ...and the repair is reported on this MeshInstall.
    let events: Api<Event> = Api::namespaced(mesh.client.clone(), "default");
    meshop_testenv::wait_until("DriftCorrected event", Duration::from_secs(30), || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(mesh.name))
            .filter_map(|e| e.reason)
            .collect();
        ensure!(
            reasons.iter().any(|r| r == "DriftCorrected"),
            "reasons {reasons:?}"
        );
        Ok(())
    })
    .await;
    mesh.wait(KStatus::Current, Duration::from_secs(60)).await;
    mesh.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_switches_converge_in_place() {
    let mesh = Mesh::create("switch", "rc-switch", json!({ "profile": "demo" })).await;
    mesh.wait(KStatus::Current, READY).await;
    let istiod_uid = mesh.uid_of("istiod").await;
    let gateway_uid = mesh.uid_of("istio-ingressgateway").await;
    for (profile, expected) in [
        ("production", &["istiod", "istio-ingressgateway"][..]),
        ("performance", &["istiod", "istio-ingressgateway"][..]),
        ("minimal", &["istiod"][..]),
        ("demo", &DEMO_DEPLOYMENTS[..]),
    ] {
        mesh.switch_profile(profile).await;
        let mi = mesh.wait(KStatus::Current, READY).await;
        let status = mi.status.as_ref().unwrap();
        assert_eq!(status.profile.as_deref(), Some(profile));
        if profile == "production" || profile == "performance" {
            // Ready means the autoscalers' minimum of 2 istiod replicas really runs.
            let istiod = status
                .components
                .iter()
                .find(|c| c.name == "istiod")
                .unwrap();
            assert!(
                istiod.ready_replicas.unwrap_or(0) >= 2,
                "{profile}: {istiod:?}"
            );
        }
        assert_eq!(
            mesh.deployment_names().await,
            set(expected),
            "after switching to {profile}"
        );
        assert_eq!(
            mesh.uid_of("istiod").await,
            istiod_uid,
            "istiod recreated on {profile}"
        );
        if profile == "production" || profile == "performance" {
            // The gateway that stays is updated in place, never recreated.
            assert_eq!(
                mesh.uid_of("istio-ingressgateway").await,
                gateway_uid,
                "the ingress gateway Deployment must be updated in place when switching to {profile}"
            );
        }
    }
    mesh.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_claim_on_a_revision_is_stalled_and_changes_nothing() {
    let first = Mesh::create("claim-a", "rc-claim", json!({ "profile": "minimal" })).await;
    first.wait(KStatus::Current, READY).await;
    let second = Mesh::create("claim-b", "rc-claim", json!({ "profile": "minimal" })).await;
    let stalled = second.wait(KStatus::Failed, Duration::from_secs(60)).await;
    let status = stalled.status.unwrap();
    let condition = status.condition(condition::STALLED).unwrap();
    assert_eq!(condition.reason, "RevisionConflict");
    assert!(
        condition
            .message
            .contains("already installed by MeshInstall claim-a"),
        "{}",
        condition.message
    );
    let uid = stalled.metadata.uid.unwrap();
    let created = meshop_testenv::inventory::left_of(&second.client, second.name, &uid)
        .await
        .unwrap();
    assert!(created.is_empty(), "claim-b created {created:?}");
    // The first claim is untouched.
    first.wait(KStatus::Current, Duration::from_secs(10)).await;
    second.delete().await;
    first.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_claim_installs_once_the_owner_is_deleted_with_no_edit() {
    let owner = Mesh::create("release-a", "rc-release", json!({ "profile": "minimal" })).await;
    owner.wait(KStatus::Current, READY).await;
    let waiting = Mesh::create("release-b", "rc-release", json!({ "profile": "minimal" })).await;
    let stalled = waiting.wait(KStatus::Failed, Duration::from_secs(60)).await;
    let generation = stalled.metadata.generation;
    let reason = stalled
        .status
        .as_ref()
        .and_then(|s| s.condition(condition::STALLED))
        .map(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("RevisionConflict"));

    // The owner goes; nothing of release-b changes, yet it installs.
    owner
        .api
        .delete(owner.name, &DeleteParams::default())
        .await
        .unwrap();
    let ready = waiting.wait(KStatus::Current, READY).await;
    assert_eq!(
        ready.metadata.generation, generation,
        "release-b was not edited"
    );
    // release-a's cleanup and release-b's first apply may cross; release-b's watch repairs it.
    meshop_testenv::wait_until(
        "istiod in rc-release is release-b's",
        Duration::from_secs(60),
        || async {
            let istiod = waiting.deployments().get("istiod").await?;
            let owned_by = istiod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/instance"))
                .cloned();
            ensure!(owned_by.as_deref() == Some("release-b"), "{owned_by:?}");
            Ok(())
        },
    )
    .await;
    waiting.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version_is_stalled_with_a_clear_message() {
    let mesh = Mesh::create(
        "old",
        "rc-old",
        json!({ "profile": "minimal", "version": "1.5.0" }),
    )
    .await;
    let old = mesh.wait(KStatus::Failed, Duration::from_secs(60)).await;
    let status = old.status.unwrap();
    let ready = status.condition(condition::READY).unwrap();
    assert!(
        ready
            .message
            .contains("1.5.0 is not a version meshop knows")
            && ready.message.contains("1.31.1"),
        "{}",
        ready.message
    );
    let created = meshop_testenv::inventory::left_of(
        &mesh.client,
        mesh.name,
        old.metadata.uid.as_deref().unwrap(),
    )
    .await
    .unwrap();
    assert!(
        created.is_empty(),
        "an unsupported version created {created:?}"
    );
    mesh.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_config_istiod_would_refuse_is_stalled_naming_the_field() {
    // Each a mesh config Istio refuses or would misread: a misspelt field (istiod ignores it), a
    // negative drain duration (istiod refuses the whole mesh config) and two extension providers
    // of one name (istiod keeps the last silently).
    let mesh = Mesh::create(
        "badmesh",
        "rc-badmesh",
        json!({ "profile": "minimal", "meshConfig": {
            "enablePrometheusMerg": true,
            "defaultConfig": { "drainDuration": "-5s" },
            "extensionProviders": [
                { "name": "log", "envoyFileAccessLog": { "path": "/dev/stdout" } },
                { "name": "log", "envoyFileAccessLog": { "path": "/dev/stderr" } },
            ],
        } }),
    )
    .await;
    let stalled = mesh.wait(KStatus::Failed, Duration::from_secs(60)).await;
    let status = stalled.status.unwrap();
    let message = &status.condition(condition::READY).unwrap().message;
    assert!(
        message.contains("spec.meshConfig.enablePrometheusMerg: unknown field"),
        "{message}"
    );
    // Field problems come first; once fixed, the semantic ones are reported.
    mesh.api
        .patch(
            mesh.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "meshConfig": { "enablePrometheusMerg": null } } })),
        )
        .await
        .unwrap();
    let stalled = meshop_testenv::wait_until(
        "the semantic problems reported",
        Duration::from_secs(60),
        || async {
            let mi = mesh.api.get(mesh.name).await?;
            let message = mi
                .status
                .as_ref()
                .and_then(|s| s.condition(condition::READY))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            anyhow::ensure!(message.contains("drainDuration"), "{message}");
            Ok(mi)
        },
    )
    .await;
    let message = &stalled
        .status
        .as_ref()
        .unwrap()
        .condition(condition::READY)
        .unwrap()
        .message;
    assert!(
        message.contains(
            "spec.meshConfig.defaultConfig.drainDuration: invalid drain duration: duration must be greater than 1ms"
        ) && message
            .contains("spec.meshConfig.extensionProviders[1]: duplicate extension provider name log"),
        "{message}"
    );
    let created = meshop_testenv::inventory::left_of(
        &mesh.client,
        mesh.name,
        stalled.metadata.uid.as_deref().unwrap(),
    )
    .await
    .unwrap();
    assert!(
        created.is_empty(),
        "a refused mesh config created {created:?}"
    );
    mesh.delete().await;
}

/// What meshop has of one gateway in the API: its Deployment, Service, ServiceAccount, Role and
/// RoleBinding, by kind, with their uids; read from the API server, not from meshop's own list.
async fn gateway_objects(
    client: &Client,
    namespace: &str,
    name: &str,
) -> std::collections::BTreeMap<&'static str, String> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let mut out = std::collections::BTreeMap::new();
    async fn uid<K>(client: &Client, namespace: &str, name: &str) -> Option<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let object = api.get_opt(name).await.unwrap()?;
        let meta = object.meta();
        // Being deleted counts as gone (its dependents are garbage collected after it).
        meta.deletion_timestamp
            .is_none()
            .then(|| meta.uid.clone().unwrap())
    }
    for (kind, found) in [
        (
            "Deployment",
            uid::<Deployment>(client, namespace, name).await,
        ),
        ("Service", uid::<Service>(client, namespace, name).await),
        (
            "ServiceAccount",
            uid::<ServiceAccount>(client, namespace, name).await,
        ),
        ("Role", uid::<Role>(client, namespace, name).await),
        (
            "RoleBinding",
            uid::<RoleBinding>(client, namespace, name).await,
        ),
    ] {
        if let Some(uid) = found {
            out.insert(kind, uid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_are_added_renamed_and_removed_keeping_the_others() {
    const EDGE: &str = "rc-gateways-edge";
    let cp = meshop_testenv::shared_with_controllers();
    // A gateway in another namespace: it exists and is granted, as an installer does it.
    cp.grant_control_plane(EDGE).unwrap();
    let mesh = Mesh::create(
        "gateways",
        "rc-gateways",
        json!({
            "profile": "minimal",
            "components": {
                "ingressGateway": { "enabled": true },
                "egressGateway": { "enabled": true },
                "ingressGateways": [
                    { "name": "internal", "labels": { "istio": "internal" } },
                    { "name": "public", "namespace": EDGE, "replicas": 2 },
                ],
            },
        }),
    )
    .await;
    let mi = mesh.wait(KStatus::Current, READY).await;
    let status = mi.status.unwrap();
    let component = |name: &str| {
        status
            .components
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no component {name}: {:?}", status.components))
            .clone()
    };
    // Three ingress gateways (1 + 1 + 2 replicas) and one egress gateway, all ready.
    let ingress = component("ingressGateway");
    assert_eq!(
        (
            ingress.state,
            ingress.desired_replicas,
            ingress.ready_replicas
        ),
        (meshop::api::ComponentState::Ready, Some(4), Some(4)),
        "{ingress:?}"
    );
    let egress = component("egressGateway");
    assert_eq!(
        (egress.state, egress.ready_replicas),
        (meshop::api::ComponentState::Ready, Some(1)),
        "{egress:?}"
    );
    let ns = mesh.namespace;
    let mut before = std::collections::BTreeMap::new();
    for (namespace, name) in [
        (ns, "istio-ingressgateway"),
        (ns, "istio-egressgateway"),
        (ns, "internal"),
        (EDGE, "public"),
    ] {
        let objects = gateway_objects(&mesh.client, namespace, name).await;
        assert_eq!(objects.len(), 5, "{namespace}/{name}: {objects:?}");
        before.insert((namespace, name), objects);
    }
    let istiod = mesh.uid_of("istiod").await;

    // Rename internal to internal-v2, remove public (in the other namespace).
    mesh.api
        .patch(
            mesh.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "components": { "ingressGateways": [
                { "name": "internal-v2", "labels": { "istio": "internal-v2" } },
            ] } } })),
        )
        .await
        .unwrap();
    let mi = mesh.wait(KStatus::Current, READY).await;
    let status = mi.status.unwrap();
    let ingress = status
        .components
        .iter()
        .find(|c| c.name == "ingressGateway")
        .unwrap();
    assert_eq!(
        (ingress.desired_replicas, ingress.ready_replicas),
        (Some(2), Some(2)),
        "{ingress:?}"
    );
    assert_eq!(
        gateway_objects(&mesh.client, ns, "internal-v2").await.len(),
        5
    );
    // What is gone is gone from the API, in both namespaces.
    for (namespace, name) in [(ns, "internal"), (EDGE, "public")] {
        meshop_testenv::wait_until(
            &format!("{namespace}/{name} pruned"),
            Duration::from_secs(30),
            || async {
                let left = gateway_objects(&mesh.client, namespace, name).await;
                ensure!(left.is_empty(), "still there: {left:?}");
                Ok(())
            },
        )
        .await;
    }
    // What stays was never recreated.
    for key in [(ns, "istio-ingressgateway"), (ns, "istio-egressgateway")] {
        assert_eq!(
            gateway_objects(&mesh.client, key.0, key.1).await,
            before[&key],
            "{}/{} recreated",
            key.0,
            key.1
        );
    }
    assert_eq!(mesh.uid_of("istiod").await, istiod);
    // The granted namespace is the installer's: meshop never deletes it.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(mesh.client.clone());
    assert!(namespaces.get_opt(EDGE).await.unwrap().is_some());
    mesh.delete().await;
}

/// docs/examples/production-platform.yaml, the production MeshInstall of docs/api.md's new fields
/// (Istio's MeshConfig, listed gateways, spec.global, overlays), reconciled to Ready as written
/// (in a namespace of its own); what each part asks for is read back from the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_platform_example_becomes_ready_as_written() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/production-platform.yaml"
    );
    let example: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ns = "rc-platform";
    let mesh = Mesh::create("platform", ns, example["spec"].clone()).await;
    let mi = mesh.wait(KStatus::Current, READY).await;
    let status = mi.status.unwrap();
    for component in ["istiod", "ingressGateway", "egressGateway"] {
        assert!(
            status.components.iter().any(|c| c.name == component),
            "{component} missing from {:?}",
            status.components
        );
    }
    // Four gateways, each a Deployment of its own, with the pod settings of spec.global.
    let names = mesh.deployment_names().await;
    for name in [
        "istiod",
        "istio-ingressgateway",
        "internal-ingressgateway",
        "egress-out",
    ] {
        assert!(names.contains(name), "{name} not in {names:?}");
        let d = mesh.deployments().get(name).await.unwrap();
        let pod = d.spec.unwrap().template;
        assert_eq!(
            pod.metadata
                .unwrap()
                .labels
                .unwrap()
                .get("team")
                .map(String::as_str),
            Some("platform"),
            "{name}"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-cluster-critical"),
            "{name}"
        );
        if name == "istiod" {
            // The strategic merge overlay.
            let spread = spec.topology_spread_constraints.unwrap();
            assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        }
    }
    // Istio's MeshConfig reached the mesh ConfigMap as given.
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(mesh.client.clone(), ns);
    let data = config_maps.get("istio").await.unwrap().data.unwrap();
    let config: serde_json::Value = serde_yaml::from_str(&data["mesh"]).unwrap();
    assert_eq!(
        config["extensionProviders"],
        example["spec"]["meshConfig"]["extensionProviders"]
    );
    assert_eq!(
        config["discoverySelectors"],
        example["spec"]["meshConfig"]["discoverySelectors"]
    );
    assert_eq!(config["defaultConfig"]["meshId"], "corp-mesh");
    // The JSON patch overlay on the default gateway's Service.
    let services: Api<Service> = Api::namespaced(mesh.client.clone(), ns);
    let svc = services.get("istio-ingressgateway").await.unwrap();
    assert_eq!(
        svc.spec.unwrap().external_traffic_policy.as_deref(),
        Some("Local")
    );
    mesh.delete().await;
}

/// The pods a NetworkPolicy's podSelector selects in its namespace, as the API server evaluates
/// the selector.
async fn pods_selected_by(
    client: &Client,
    policy: &k8s_openapi::api::networking::v1::NetworkPolicy,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let selector = policy
        .spec
        .as_ref()
        .unwrap()
        .pod_selector
        .clone()
        .unwrap_or_default();
    assert_eq!(selector.match_expressions, None);
    let labels: Vec<String> = selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert!(!labels.is_empty(), "an empty podSelector selects every pod");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(
        client.clone(),
        policy.metadata.namespace.as_deref().unwrap(),
    );
    pods.list(&ListParams::default().labels(&labels.join(",")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The uid of the Deployment or DaemonSet that runs `pod` (through its ReplicaSet).
async fn workload_of(client: &Client, pod: &k8s_openapi::api::core::v1::Pod) -> (String, String) {
    let namespace = pod.metadata.namespace.as_deref().unwrap();
    let owner = pod.metadata.owner_references.as_ref().unwrap()[0].clone();
    if owner.kind == "ReplicaSet" {
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
            Api::namespaced(client.clone(), namespace);
        let set = sets.get(&owner.name).await.unwrap();
        let owner = set.metadata.owner_references.unwrap()[0].clone();
        return (owner.kind, owner.name);
    }
    (owner.kind, owner.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_select_their_running_pods_and_go_when_turned_off() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    const EDGE: &str = "rc-netpol-edge";
    let cp = meshop_testenv::shared_with_controllers();
    cp.grant_control_plane(EDGE).unwrap();
    let mesh = Mesh::create(
        "netpol",
        "rc-netpol",
        json!({
            "profile": "minimal",
            "global": { "networkPolicy": { "enabled": true } },
            "components": {
                "ingressGateway": { "enabled": true },
                "cni": { "enabled": true },
                "ingressGateways": [{ "name": "public", "namespace": EDGE }],
            },
        }),
    )
    .await;
    mesh.wait(KStatus::Current, READY).await;
    let ns = mesh.namespace;
    let policies =
        |namespace: &str| -> Api<NetworkPolicy> { Api::namespaced(mesh.client.clone(), namespace) };
    let list = |namespace: &'static str| {
        let api = policies(namespace);
        async move {
            api.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect::<Vec<_>>()
        }
    };
    let names = |items: &[NetworkPolicy]| -> BTreeSet<String> {
        items
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    };
    let in_ns = list(ns).await;
    let in_edge = list(EDGE).await;
    assert_eq!(
        names(&in_ns),
        set(&["istiod", "istio-ingressgateway", "istio-cni-node"])
    );
    assert_eq!(names(&in_edge), set(&["public"]));
    for policy in in_ns.iter().chain(&in_edge) {
        let name = policy.metadata.name.clone().unwrap();
        let kind = if name == "istio-cni-node" {
            "DaemonSet"
        } else {
            "Deployment"
        };
        // The policy selects running pods, all of them its own workload's: the workload of
        // the same name, found through the pods' owners, not through labels.
        let pods = pods_selected_by(&mesh.client, policy).await;
        assert!(!pods.is_empty(), "{name} selects no pod");
        let mut served: BTreeSet<(i32, String)> = BTreeSet::new();
        for pod in &pods {
            assert_eq!(
                workload_of(&mesh.client, pod).await,
                (kind.to_string(), name.clone()),
                "{name} selects {}",
                pod.metadata.name.as_deref().unwrap()
            );
            assert_eq!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Running"),
                "{name}"
            );
            for c in &pod.spec.as_ref().unwrap().containers {
                for p in c.ports.iter().flatten() {
                    served.insert((p.container_port, p.protocol.clone().unwrap()));
                }
                if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) = c
                    .readiness_probe
                    .as_ref()
                    .and_then(|r| r.http_get.as_ref())
                    .map(|h| h.port.clone())
                {
                    served.insert((p, "TCP".into()));
                }
            }
        }
        // Ingress: from anywhere, on the ports the running pods declare and are probed on.
        let spec = policy.spec.clone().unwrap();
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1, "{name}");
        assert_eq!(rules[0].from, None, "{name}");
        let opened: BTreeSet<(i32, String)> = rules[0]
            .ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    (*n, p.protocol.clone().unwrap())
                }
                other => panic!("{name}: {other:?}"),
            })
            .collect();
        assert_eq!(opened, served, "{name}");
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            "{name}"
        );
        assert_eq!(spec.egress.map(|e| e.len()), Some(1), "{name}");
    }

    // Deleted outside meshop, a policy comes back (the kind is watched: no wait for a resync).
    let old_uid = policies(ns).get("istiod").await.unwrap().metadata.uid;
    policies(ns)
        .delete("istiod", &DeleteParams::default())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "istiod's NetworkPolicy recreated",
        Duration::from_secs(60),
        || async {
            let now = policies(ns).get_opt("istiod").await?;
            let uid = now.as_ref().and_then(|p| p.metadata.uid.clone());
            ensure!(uid.is_some() && uid != old_uid, "uid {uid:?}");
            Ok(())
        },
    )
    .await;

    // Turned off again: every policy is pruned, in both namespaces.
    mesh.api
        .patch(
            mesh.name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "spec": { "global": { "networkPolicy": { "enabled": false } } } }),
            ),
        )
        .await
        .unwrap();
    mesh.wait(KStatus::Current, READY).await;
    meshop_testenv::wait_until(
        "NetworkPolicies pruned",
        Duration::from_secs(60),
        || async {
            let left: Vec<String> = list(ns)
                .await
                .into_iter()
                .chain(list(EDGE).await)
                .map(|p| p.metadata.name.unwrap())
                .collect();
            ensure!(left.is_empty(), "still there: {left:?}");
            Ok(())
        },
    )
    .await;
    // The workloads stay.
    assert_eq!(
        mesh.deployment_names().await,
        set(&["istiod", "istio-ingressgateway"])
    );
    mesh.delete().await;
}
