//! Istio's own istiod judges meshop's installation. For each profile, meshop installs a mesh in
//! the controllers-mode control plane (kwok fakes istiod's pods, so nothing of Istio runs there);
//! then the real `pilot-discovery discovery`, built from Istio's Go module, runs as a local
//! process authenticated as istiod's ServiceAccount, with the args, env and volumes of meshop's
//! istiod Deployment. It must become ready under meshop's RBAC and do its job: publish the root
//! certificate, create its CA Secret, win its leader Leases, and report the mesh config meshop
//! meant. One istiod runs at a time: they would overwrite each other's root certificate in every
//! namespace, and on two cores the time to ready would measure the neighbours.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::istio::{IstioBinaries, LocalIstiod};
use serde_json::{Value, json};

/// Ready takes longer with other tests installing meshes at the same time.
const MESH_READY: Duration = Duration::from_secs(180);
/// istiod itself is ready in seconds; the bound leaves room for a busy two-core machine.
const ISTIOD_READY: Duration = Duration::from_secs(90);

static ONE_ISTIOD_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a profile's mesh must look like to istiod.
struct Expect {
    profile: &'static str,
    /// The MeshInstall's name and its control-plane namespace.
    name: &'static str,
    namespace: &'static str,
    access_log_file: &'static str,
    mtls: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_on_the_minimal_profile() {
    judge(Expect {
        profile: "minimal",
        name: "istiod-minimal",
        namespace: "istiod-minimal-system",
        access_log_file: "",
        mtls: "PERMISSIVE",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_on_the_demo_profile() {
    judge(Expect {
        profile: "demo",
        name: "istiod-demo",
        namespace: "istiod-demo-system",
        access_log_file: "/dev/stdout",
        mtls: "PERMISSIVE",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_runs_on_the_production_profile() {
    judge(Expect {
        profile: "production",
        name: "istiod-production",
        namespace: "istiod-production-system",
        access_log_file: "",
        mtls: "STRICT",
    })
    .await;
}

async fn judge(expect: Expect) {
    let Expect {
        profile,
        name,
        namespace: ns,
        ..
    } = expect;
    // First, so a missing build fails at once with how to get it.
    let istio = IstioBinaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    // A workload namespace that asks for injection: istiod must publish its root certificate
    // there. On failure its guard prints where every log is, istiod's included.
    let app = meshop_testenv::namespace(&client, "istiod-app")
        .await
        .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            &app.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "istio-injection": "enabled" } } })),
        )
        .await
        .unwrap();

    let meshes: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": { "profile": profile, "namespace": ns }
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, name, KStatus::Current, MESH_READY).await;

    // The mesh config meshop meant, from its ConfigMap.
    let intended: Value = {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get("istio")
            .await
            .unwrap();
        serde_yaml::from_str(&cm.data.unwrap()["mesh"]).unwrap()
    };

    let _one = ONE_ISTIOD_AT_A_TIME.lock().await;
    let mut istiod = LocalIstiod::start(cp, &client, &istio, ns, "istiod", profile)
        .await
        .unwrap();
    let took = match istiod.wait_ready(ISTIOD_READY).await {
        Ok(took) => took,
        Err(e) => panic!(
            "{e:#}\nrefused by meshop's RBAC:\n{}",
            refusals(&istiod.log()).join("\n")
        ),
    };
    eprintln!(
        "istiod on profile {profile}: ready in {:.1}s",
        took.as_secs_f64()
    );

    // Its self-signed CA, kept in a Secret of the control-plane namespace.
    let ca = Api::<Secret>::namespaced(client.clone(), ns)
        .get("istio-ca-secret")
        .await
        .expect("istiod created its CA Secret istio-ca-secret");
    assert_eq!(ca.type_.as_deref(), Some("istio.io/ca-root"));
    let ca_cert = String::from_utf8(ca.data.unwrap()["ca-cert.pem"].0.clone()).unwrap();
    assert!(ca_cert.contains("BEGIN CERTIFICATE"), "{ca_cert}");

    // That CA's root, published into the injection-labelled namespace.
    let root_certs: Api<ConfigMap> = Api::namespaced(client.clone(), &app.name);
    meshop_testenv::wait_until(
        "istio-ca-root-cert published with istiod's root",
        Duration::from_secs(30),
        || async {
            let cm = root_certs.get("istio-ca-root-cert").await?;
            let root = cm.data.unwrap_or_default().remove("root-cert.pem");
            anyhow::ensure!(
                root.as_deref().map(str::trim) == Some(ca_cert.trim()),
                "root-cert.pem {root:?}"
            );
            Ok(())
        },
    )
    .await;

    // The leader Leases its controllers take, held under its pod name.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let held = meshop_testenv::wait_until("istiod's Leases", Duration::from_secs(60), || async {
        let held: Vec<String> = leases
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|l| {
                l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                    == Some(istiod.pod_name.as_str())
            })
            .filter_map(|l| l.metadata.name)
            .collect();
        let want = "istio-gateway-status-leader-default";
        anyhow::ensure!(
            held.iter().any(|h| h == want),
            "{want} not held; held: {held:?}"
        );
        Ok(held)
    })
    .await;
    eprintln!("istiod on profile {profile}: holds Leases {held:?}");
    // Its Gateway API deployment controller is off (meshop deploys gateways; istiod writes no
    // workloads), so it never runs for that Lease.
    assert!(
        !held.iter().any(|h| h == "istio-gateway-deployment-default"),
        "{held:?}"
    );

    // The mesh config it runs with, as it reports it.
    let (status, body) = istiod.get("/debug/mesh").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let mesh: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(mesh["trustDomain"], intended["trustDomain"], "{mesh:#}");
    assert_eq!(mesh["trustDomain"], "cluster.local", "{mesh:#}");
    assert_eq!(mesh["rootNamespace"], ns, "{mesh:#}");
    assert_eq!(
        mesh["outboundTrafficPolicy"]["mode"], intended["outboundTrafficPolicy"]["mode"],
        "{mesh:#}"
    );
    assert_eq!(
        mesh["outboundTrafficPolicy"]["mode"], "ALLOW_ANY",
        "{mesh:#}"
    );
    // An empty access log file is left out of the JSON.
    assert_eq!(
        mesh["accessLogFile"].as_str().unwrap_or_default(),
        expect.access_log_file,
        "{mesh:#}"
    );
    assert_eq!(
        mesh["defaultProviders"]["metrics"],
        json!(["prometheus"]),
        "sidecars emit Istio's standard metrics only with a default metrics provider: {mesh:#}"
    );
    assert_eq!(
        mesh["defaultConfig"]["discoveryAddress"], intended["defaultConfig"]["discoveryAddress"],
        "{mesh:#}"
    );

    // mTLS is not mesh config but the root namespace's PeerAuthentication: istiod must have read
    // meshop's, with the profile's mode.
    let (status, body) = istiod.get("/debug/configz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let configs: Vec<Value> = serde_json::from_str(&body).unwrap();
    let peer_auth = configs
        .iter()
        .find(|c| {
            c["kind"] == "PeerAuthentication"
                && c["metadata"]["namespace"] == ns
                && c["metadata"]["name"] == "default"
        })
        .unwrap_or_else(|| panic!("no PeerAuthentication {ns}/default in {body}"));
    assert_eq!(
        peer_auth["spec"]["mtls"]["mode"], expect.mtls,
        "{peer_auth:#}"
    );

    // It writes its CA into its own validating webhook configuration, which it may update.
    let own = format!("istio-validator-{ns}");
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    meshop_testenv::wait_until(
        "istiod's CA bundle in its validating webhook configuration",
        Duration::from_secs(60),
        || async {
            let c = configurations.get(&own).await?;
            let with_ca = c
                .webhooks
                .iter()
                .flatten()
                .filter(|w| {
                    w.client_config
                        .ca_bundle
                        .as_ref()
                        .is_some_and(|b| !b.0.is_empty())
                })
                .count();
            anyhow::ensure!(with_ca == c.webhooks.map_or(0, |w| w.len()) && with_ca > 0);
            Ok(())
        },
    )
    .await;

    // Last, so every controller had its chance to be refused. Istio's validation controller
    // patches every configuration labelled with its revision, so the other default-revision
    // control planes of this cluster (the other profiles' tests) are candidates too: RBAC
    // refusing it theirs is meshop's least privilege at work (they would otherwise overwrite
    // each other's CA bundle), and the only refusal allowed.
    let refused: Vec<String> = refusals(&istiod.log())
        .into_iter()
        .filter(|l| !foreign_validator(l, &own))
        .collect();
    assert!(
        refused.is_empty(),
        "istiod was refused by meshop's RBAC:\n{}",
        refused.join("\n")
    );
    drop(istiod);
}

/// Whether a log line is about updating another control plane's validating configuration.
fn foreign_validator(line: &str, own: &str) -> bool {
    line.contains("cannot update resource \"validatingwebhookconfigurations\"")
        && !line.contains(&format!("\"{own}\""))
        && line.contains("\"istio-validator-")
}

/// The distinct `forbidden` lines of istiod's log, without their timestamps.
fn refusals(log: &str) -> Vec<String> {
    let mut lines: Vec<String> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .map(|l| l.split_once('\t').map_or(l, |(_, rest)| rest).to_string())
        .collect();
    lines.sort();
    lines.dedup();
    lines
}
