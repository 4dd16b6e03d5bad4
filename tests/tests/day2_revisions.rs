//! The day-2 commands (`meshop status`, `check`, `diff -f`) on a revision-based mesh in the
//! middle of an upgrade, run as a user runs them (the `meshop` binary with `--kubeconfig`)
//! against the test control plane and this binary's own operator process.
//!
//! The mesh: `updateStrategy: RevisionBased`, tag `prod-stable`, workloads moved by hand
//! (`mode: Manual`), installed at 1.30.5 with Deployments in an `istio-injection=enabled`
//! namespace and in one labelled `istio.io/rev=prod-stable`, then moved to 1.31.1. The tags move
//! to the new revision once it is ready; the Deployments are not restarted, so their pods keep
//! the old revision, which is not retired: two istiods side by side, pods on both, as for the
//! weeks a Manual upgrade can last. A namespace labelled for the tag after its pod started holds
//! a pod without a sidecar.
//!
//! `check` and `status` read the whole cluster: the tests take turns, and the first one to run
//! sets the mesh up (the others find it there).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::{ControlPlane, LogsOnFailure, apps, wait_for_kstatus, wait_until};
use serde_json::{Value, json};

const MESH: &str = "rev";
const CONTROL: &str = "rev-system";
/// `istio-injection=enabled`: follows the `default` tag.
const APPS: &str = "rev-apps";
/// `istio.io/rev=prod-stable`: follows the tag.
const TAGGED: &str = "rev-tagged";
/// Labelled `istio.io/rev=prod-stable` after its pod `early` started.
const LATE: &str = "rev-late";
const TAG: &str = "prod-stable";
const OLD: &str = "1-30-5";
const NEW: &str = "1-31-1";
/// The shared operator keeps its Lease and webhook certificate in `default`.
const OPERATOR_NS: &str = "default";

/// Held by each test for its whole run; `true` once the mesh is set up.
static MID_UPGRADE: Mutex<bool> = Mutex::new(false);

fn spec(version: &str) -> Value {
    json!({
        "profile": "minimal", "namespace": CONTROL, "version": version,
        "updateStrategy": "RevisionBased",
        "upgrade": { "tags": [TAG], "workloads": { "mode": "Manual" } }
    })
}

/// Runs `meshop ARGS --kubeconfig <cp>`; returns (exit success, stdout, stderr).
fn meshop(cp: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let bin = meshop_testenv::meshop_binary().expect("meshop binary");
    let out = std::process::Command::new(bin)
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .output()
        .expect("run meshop");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bare pod; `injected` says whether the webhook gave it a sidecar.
fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] }
    }))
    .unwrap()
}

/// Creates pod `name` in `ns` until the webhook (whose watches may lag a label or a tag move by
/// a moment) injects revision `revision`'s proxy into it.
async fn injected_pod(client: &Client, ns: &str, name: &str, revision: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_until(
        &format!("pod {ns}/{name} injected with revision {revision}"),
        Duration::from_secs(60),
        || async {
            let created = match pods.create(&PostParams::default(), &pod(name)).await {
                Ok(p) => p,
                Err(kube::Error::Api(e)) if e.code == 409 => pods.get(name).await?,
                Err(e) => return Err(e.into()),
            };
            if apps::pod_revision(&created).as_deref() == Some(revision) {
                return Ok(());
            }
            pods.delete(name, &DeleteParams::default().grace_period(0))
                .await?;
            meshop_testenv::poll_until(&format!("{name} gone"), Duration::from_secs(30), || {
                let pods = pods.clone();
                async move {
                    match pods.get_opt(name).await? {
                        None => Ok(()),
                        Some(_) => bail!("still there"),
                    }
                }
            })
            .await?;
            bail!("created on {:?}", apps::pod_revision(&created))
        },
    )
    .await
}

/// The mesh in the middle of its upgrade (see the module documentation); set up once.
fn mid_upgrade(cp: &'static ControlPlane) -> std::sync::MutexGuard<'static, bool> {
    let mut done = MID_UPGRADE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return done;
    }
    meshop_testenv::shared_operator();
    meshop_testenv::block_on(async {
        let client = cp.client().await.unwrap();
        let api: Api<MeshInstall> = Api::all(client.clone());
        let mi: MeshInstall = serde_json::from_value(json!({
            "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
            "metadata": { "name": MESH }, "spec": spec("1.30.5")
        }))
        .unwrap();
        api.create(&PostParams::default(), &mi).await.unwrap();
        wait_for_kstatus(&api, MESH, KStatus::Current, Duration::from_secs(180)).await;

        apps::labelled_namespace(&client, APPS, json!({ "istio-injection": "enabled" })).await;
        apps::labelled_namespace(&client, TAGGED, json!({ "istio.io/rev": TAG })).await;
        apps::labelled_namespace(&client, LATE, json!({})).await;
        Api::<Pod>::namespaced(client.clone(), LATE)
            .create(&PostParams::default(), &pod("early"))
            .await
            .unwrap();
        Api::<Namespace>::all(client.clone())
            .patch(
                LATE,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "istio.io/rev": TAG } } })),
            )
            .await
            .unwrap();
        apps::create_deployments(&client, APPS, &["a", "b"])
            .await
            .unwrap();
        apps::create_deployments(&client, TAGGED, &["t"])
            .await
            .unwrap();
        apps::wait_pods_on(&client, APPS, OLD, 2, Duration::from_secs(60)).await;
        apps::wait_pods_on(&client, TAGGED, OLD, 1, Duration::from_secs(60)).await;

        api.patch(
            MESH,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "version": "1.31.1" } })),
        )
        .await
        .unwrap();
        wait_until(
            "the tags on 1-31-1, 1-30-5 kept for its pods, the mesh Current",
            Duration::from_secs(180),
            || async {
                let mi = api.get(MESH).await?;
                let status = mi.status.clone().context("no status")?;
                let by_name: BTreeMap<&str, &meshop::api::RevisionStatus> = status
                    .revisions
                    .iter()
                    .map(|r| (r.name.as_str(), r))
                    .collect();
                let (new, old) = (
                    by_name.get(NEW).context("no 1-31-1")?,
                    by_name.get(OLD).context("no 1-30-5")?,
                );
                ensure!(
                    new.ready && new.tags == ["default", TAG] && old.pods == 3,
                    "{:?}",
                    status.revisions
                );
                ensure!(
                    meshop::controller::status::kstatus(mi.metadata.generation, Some(&status))
                        == KStatus::Current,
                    "{:?}",
                    status.conditions
                );
                Ok(())
            },
        )
        .await;
        // A new pod in the tagged namespace follows the tag to the new revision.
        injected_pod(&client, TAGGED, "probe", NEW).await;
        // Pods are not watched: the status counts it on a later pass.
        wait_until(
            "status counts the pod on 1-31-1",
            Duration::from_secs(60),
            || async {
                let mi = api.get(MESH).await?;
                let revisions = mi.status.map(|s| s.revisions).unwrap_or_default();
                let new = revisions
                    .iter()
                    .find(|r| r.name == NEW)
                    .context("no 1-31-1")?;
                ensure!(new.pods == 1, "{revisions:?}");
                Ok(())
            },
        )
        .await;
    });
    *done = true;
    done
}

#[test]
fn status_shows_the_data_plane_of_each_revision_mid_upgrade() {
    let cp = meshop_testenv::shared_with_controllers();
    let _turn = mid_upgrade(cp);
    let _logs = LogsOnFailure("meshop status mid-upgrade".into());

    let (ok, out, err) = meshop(cp, &["status", MESH, "-o", "json"]);
    assert!(ok, "{err}");
    let views: Value = serde_json::from_str(&out).unwrap();
    let view = &views[0];
    assert_eq!(
        view["dataPlane"],
        json!([
            { "revision": OLD, "namespace": APPS, "proxyVersion": "1.30.5", "pods": 2 },
            { "revision": OLD, "namespace": TAGGED, "proxyVersion": "1.30.5", "pods": 1 },
            { "revision": NEW, "namespace": TAGGED, "proxyVersion": "1.31.1", "pods": 1 },
        ]),
        "{view:#}"
    );
    assert_eq!(
        view["namespaces"],
        json!([
            { "name": APPS, "selects": "default", "revision": NEW,
              "mode": "sidecar (2 of 2 pods with a sidecar)" },
            { "name": LATE, "selects": TAG, "revision": NEW,
              "mode": "sidecar (0 of 1 pods with a sidecar)" },
            { "name": TAGGED, "selects": TAG, "revision": NEW,
              "mode": "sidecar (2 of 2 pods with a sidecar)" },
        ]),
        "{view:#}"
    );
    assert_eq!(view["withoutSidecar"], json!([format!("{LATE}/early")]));
    assert_eq!(view["revision"], NEW, "{view:#}");
    let revisions: Vec<&str> = view["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(revisions, [NEW, OLD], "{view:#}");

    let (ok, out, err) = meshop(cp, &["status", MESH]);
    assert!(ok, "{err}");
    let row = |cells: &[&str]| {
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == cells)
    };
    assert!(
        row(&[NEW, "1.31.1", "default,prod-stable", "yes", "1", "0"]),
        "{out}"
    );
    assert!(row(&[OLD, "1.30.5", "-", "yes", "3", "3"]), "{out}");
    assert!(row(&[OLD, APPS, "1.30.5", "2"]), "{out}");
    assert!(row(&[NEW, TAGGED, "1.31.1", "1"]), "{out}");
    assert!(!out.contains("differs from the control plane"), "{out}");
}

#[test]
fn check_serves_tag_labelled_namespaces_and_checks_their_pods_mid_upgrade() {
    let cp = meshop_testenv::shared_with_controllers();
    let _turn = mid_upgrade(cp);
    let _logs = LogsOnFailure("meshop check mid-upgrade".into());

    let (ok, out, err) = meshop(
        cp,
        &["check", "-o", "json", "--operator-namespace", OPERATOR_NS],
    );
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("check -o json: {e}\nstdout: {out}\nstderr: {err}"));
    let check = |name: &str| -> (String, String) {
        let c = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {report:#}"));
        (
            c["severity"].as_str().unwrap().to_string(),
            c["message"].as_str().unwrap().to_string(),
        )
    };
    // Namespaces following the tag, and the default tag, belong to the mesh.
    let (severity, message) = check("injection-namespaces");
    assert_eq!(severity, "pass", "{message}");
    // Their pods are checked: the one that started before its namespace was labelled is named.
    let (severity, message) = check("sidecars");
    assert_eq!(severity, "fail", "{message}");
    assert!(message.contains(&format!("{LATE}/early")), "{message}");
    assert!(message.starts_with("1 pod(s)"), "{message}");
    // The old revision's proxies run its release: not "behind" the new control plane.
    let (severity, message) = check("proxy-versions");
    assert_eq!(severity, "pass", "{message}");
    assert!(!ok, "the sidecars check fails the command");
}

#[test]
fn diff_mid_upgrade_plans_the_old_revision_beside_the_new() {
    let cp = meshop_testenv::shared_with_controllers();
    let _turn = mid_upgrade(cp);
    let _logs = LogsOnFailure("meshop diff mid-upgrade".into());

    // The file the mesh was applied from: the reconciler has converged on it.
    let file = cp.dir.join("rev-mid-upgrade.yaml");
    let desired = json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": MESH }, "spec": spec("1.31.1")
    });
    std::fs::write(&file, serde_yaml::to_string(&desired).unwrap()).unwrap();
    let file = file.to_str().unwrap();
    let (ok, out, err) = meshop(
        cp,
        &[
            "diff",
            "-f",
            file,
            "-o",
            "json",
            "--operator-namespace",
            OPERATOR_NS,
        ],
    );
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let old_istiod = format!("Deployment/{CONTROL}/istiod-{OLD}");
    assert!(
        !report["pruned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == old_istiod.as_str()),
        "{report:#}"
    );
    // The reconciler agrees: the old revision's istiod is still there, its pods on it.
    meshop_testenv::block_on(async {
        let client = cp.client().await.unwrap();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), CONTROL);
        assert!(
            deployments
                .get_opt(&format!("istiod-{OLD}"))
                .await
                .unwrap()
                .is_some()
        );
    });
    // Converged on this file: nothing to create, change or prune.
    assert_eq!(report["created"], json!([]), "{report:#}");
    assert_eq!(report["changed"], json!([]), "{report:#}");
    assert_eq!(report["pruned"], json!([]), "{report:#}");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains(&format!(
            "revision {OLD} (Istio 1.30.5) stays beside the target {NEW}: 3 pod(s) run its proxy"
        )),
        "{report:#}"
    );
}
