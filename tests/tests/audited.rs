//! Judged by the API server's own audit log (`Options::audit`): what the operator really did.
//!
//! - `a_frozen_leader_resumed_after_a_takeover_never_writes`: two `meshop run` processes, each
//!   acting as its own user (impersonation), so every request in the log names its process. The
//!   leader is frozen (SIGSTOP) in the middle of a profile switch, the other takes the Lease over,
//!   then the frozen one is resumed (SIGCONT): from the takeover on, the log holds no write of the
//!   resumed process, neither to the Lease nor to anything it manages.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::audit::{self, Event};
use serde_json::json;

const LEASE_SECONDS: u64 = 6;
const LEASE_NAME: &str = "meshop-leader";

async fn holder(leases: &Api<Lease>) -> anyhow::Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

async fn wait_for_leader(leases: &Api<Lease>, identity: &str, timeout: Duration) {
    meshop_testenv::wait_until(&format!("{identity} leads"), timeout, || async {
        let holder = holder(leases).await?;
        anyhow::ensure!(holder.as_deref() == Some(identity), "holder {holder:?}");
        Ok(())
    })
    .await
}

fn describe(events: &[&Event]) -> String {
    events
        .iter()
        .map(|e| format!("  {} {} -> {}", e.received, e.access, e.code))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_resumed_after_a_takeover_never_writes() {
    let cp = meshop_testenv::shared_with_audit();
    let _logs = meshop_testenv::LogsOnFailure(format!("control plane in {}", cp.dir.display()));
    let client = cp.client().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let api: Api<MeshInstall> = Api::all(client.clone());
    let lease_arg = [format!("--lease-duration={LEASE_SECONDS}")];

    // Each replica is its own user in the audit log (the admin impersonates it).
    let (user_a, user_b) = ("meshop-replica-a", "meshop-replica-b");
    let kc_a = cp.impersonating(user_a, &["system:masters"]).unwrap();
    let kc_b = cp.impersonating(user_b, &["system:masters"]).unwrap();
    let mut a = meshop_testenv::start_operator_as(cp, "replica-a", &kc_a, &lease_arg)
        .unwrap()
        .process;
    wait_for_leader(&leases, "replica-a", Duration::from_secs(30)).await;
    let _b = meshop_testenv::start_operator_as(cp, "replica-b", &kc_b, &lease_arg)
        .unwrap()
        .process;

    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "frozen"}, "spec": {"profile": "minimal", "namespace": "frozen-mesh"}}))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, "frozen", KStatus::Current, Duration::from_secs(120))
        .await;

    // Switch to demo (dozens of objects to apply) and freeze the leader at its first write of
    // the switch: it is in the middle of a reconcile pass, with more writes to send.
    let mut tail = audit::Tail::new(&cp.audit_log());
    tail.next_events().unwrap();
    api.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"profile": "demo"}})),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let first_write = loop {
        let events = tail.next_events().unwrap();
        if let Some(e) = events
            .into_iter()
            .find(|e| e.user == user_a && e.is_write() && e.access.resource != "leases")
        {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replica-a never wrote for the switch"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    a.freeze().unwrap();
    eprintln!(
        "froze replica-a after its write {} at {}",
        first_write.access, first_write.received
    );

    // The other replica takes over once the record it saw has not changed for a lease.
    wait_for_leader(&leases, "replica-b", Duration::from_secs(LEASE_SECONDS * 3)).await;
    // Let it work, then wake the old leader up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.resume().unwrap();
    // It steps down (the process exits) once it sees its term is over.
    let resumed = std::time::Instant::now();
    while !a.exited().unwrap() {
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "the resumed replica-a did not step down within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    meshop_testenv::wait_for_kstatus(&api, "frozen", KStatus::Current, Duration::from_secs(120))
        .await;

    let events = audit::read(&cp.audit_log()).unwrap();
    let takeover = events
        .iter()
        .find(|e| {
            e.user == user_b
                && e.is_write()
                && e.access.resource == "leases"
                && e.access.name == LEASE_NAME
                && e.code < 300
        })
        .expect("replica-b's takeover write is in the audit log");
    let writes = |user: &str, from: &str, to: &str| -> Vec<&Event> {
        events
            .iter()
            .filter(|e| {
                e.user == user
                    && e.is_write()
                    && e.received.as_str() >= from
                    && e.received.as_str() < to
            })
            .collect()
    };
    let end = "9999";
    let a_before = writes(user_a, &first_write.received, &takeover.received);
    let b_after: Vec<&Event> = writes(user_b, &takeover.received, end)
        .into_iter()
        .filter(|e| e.access.resource != "leases")
        .collect();
    let a_after = writes(user_a, &takeover.received, end);
    eprintln!(
        "takeover by replica-b at {}; writes: replica-a from its first write of the switch to \
         the takeover {}, replica-b after it {}, replica-a after it {}",
        takeover.received,
        a_before.len(),
        b_after.len(),
        a_after.len()
    );
    assert!(
        !b_after.is_empty(),
        "replica-b took over but wrote nothing but its Lease: the switch was not finished by it"
    );
    assert!(
        a_after.is_empty(),
        "replica-a wrote after replica-b took the Lease over:\n{}",
        describe(&a_after)
    );
}
