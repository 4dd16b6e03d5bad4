//! `meshop run` as real processes: Lease-based leader election (only one writes; killing the
//! leader hands over within the lease duration) and crash safety (a SIGKILL in the middle of a
//! reconcile leaves no duplicated and no orphaned objects once a new process converges).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::{KStatus, kstatus};
use meshop_testenv::process::Process;
use serde_json::json;

const LEASE_SECONDS: u64 = 6;

fn start(cp: &meshop_testenv::ControlPlane, identity: &str) -> Process {
    meshop_testenv::start_operator(cp, identity, &[format!("--lease-duration={LEASE_SECONDS}")])
        .unwrap()
        .process
}

async fn holder(leases: &Api<Lease>) -> anyhow::Result<Option<String>> {
    Ok(leases
        .get_opt("meshop-leader")
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

/// Waits until `identity` holds the leader Lease.
async fn wait_for_leader(leases: &Api<Lease>, identity: &str, timeout: Duration) {
    meshop_testenv::wait_until(&format!("{identity} leads"), timeout, || async {
        let holder = holder(leases).await?;
        ensure!(holder.as_deref() == Some(identity), "holder {holder:?}");
        Ok(())
    })
    .await
}

async fn is_current(api: &Api<MeshInstall>, name: &str) -> bool {
    match api.get(name).await {
        Ok(mi) => kstatus(mi.metadata.generation, mi.status.as_ref()) == KStatus::Current,
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_and_crash_safety() {
    let cp = meshop_testenv::shared_with_controllers();
    let client = cp.client().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let api: Api<MeshInstall> = Api::all(client.clone());

    // Two replicas: exactly one leads.
    let mut a = start(cp, "replica-a");
    wait_for_leader(&leases, "replica-a", Duration::from_secs(30)).await;
    let mut b = start(cp, "replica-b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        holder(&leases).await.unwrap().as_deref(),
        Some("replica-a"),
        "a live leader keeps its lease"
    );
    let mi: MeshInstall = serde_json::from_value(
        json!({"apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "crash"}, "spec": {"profile": "minimal"}}),
    )
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, "crash", KStatus::Current, Duration::from_secs(120))
        .await;

    // Kill the leader: the other replica takes over within the lease duration (plus one renew
    // period for it to notice).
    a.kill();
    let killed = Instant::now();
    wait_for_leader(&leases, "replica-b", Duration::from_secs(LEASE_SECONDS * 3)).await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS + LEASE_SECONDS / 3 + 3),
        "takeover took {took:?}"
    );

    // Crash in the middle of a reconcile: switch to demo and SIGKILL the leader as soon as the
    // first new object appears, before the switch has converged.
    api.patch(
        "crash",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"profile": "demo"}})),
    )
    .await
    .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "istio-system");
    meshop_testenv::wait_until(
        "the demo ingress gateway appears",
        Duration::from_secs(60),
        || async {
            deployments
                .get_opt("istio-ingressgateway")
                .await?
                .context("no Deployment istio-ingressgateway yet")
        },
    )
    .await;
    b.kill();
    let mid_way = !is_current(&api, "crash").await;
    eprintln!(
        "killed replica-b; switch converged before the kill: {}",
        !mid_way
    );
    let _c = start(cp, "replica-c");
    meshop_testenv::wait_for_kstatus(&api, "crash", KStatus::Current, Duration::from_secs(120))
        .await;

    // Exactly the rendered objects exist, each once, each owned by the MeshInstall.
    let mi = api.get("crash").await.unwrap();
    let uid = mi.metadata.uid.clone().unwrap();
    let install = meshop::effective::Installation::from_mesh(&mi).unwrap();
    let expected: BTreeSet<String> = meshop::render::render(&install)
        .unwrap()
        .into_iter()
        .filter(|o| !o.shared)
        .map(|o| o.key())
        .collect();
    // The reconciler adds the webhook registration to what render() yields (injection is on).
    let mut expected = expected;
    expected.insert(format!(
        "MutatingWebhookConfiguration//{}",
        meshop::webhook::webhook_configuration_name(&install)
    ));
    // Every resource type discovery reports, not meshop's own list of kinds: what the
    // MeshInstall owns directly must be exactly what it renders, each object once.
    let labelled = meshop_testenv::inventory::objects(&client, |o| {
        o.has_instance("crash") || o.owned_by(&uid)
    })
    .await
    .unwrap();
    let mut live = BTreeSet::new();
    for o in labelled.iter().filter(|o| o.owned_by(&uid)) {
        assert!(live.insert(o.key()), "{} listed twice", o.key());
    }
    assert_eq!(
        live, expected,
        "live objects differ from the rendered set (orphans or missing)"
    );
    // Objects that carry the label without being the MeshInstall's own are made by Kubernetes
    // from them: owned by those (ReplicaSets, Pods, EndpointSlices), or, for the Endpoints of a
    // Service, tied to it by name. None may be an orphan.
    let orphans: Vec<String> = labelled
        .iter()
        .filter(|o| o.owners.is_empty())
        .filter(|o| {
            let service = format!(
                "Service/{}/{}",
                o.namespace.as_deref().unwrap_or(""),
                o.name
            );
            !(o.kind == "Endpoints" && live.contains(&service))
        })
        .map(|o| o.key())
        .collect();
    assert!(
        orphans.is_empty(),
        "labelled objects without an owner: {orphans:?}"
    );
}
