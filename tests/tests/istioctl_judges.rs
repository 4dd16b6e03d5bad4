//! `istioctl` as an outside judge of the cluster: `istioctl x precheck` passes on a cluster where
//! meshop installed nothing yet, and `istioctl analyze --all-namespaces` reports no error about
//! what meshop installs.

use std::process::Command;
use std::time::Duration;

use kube::api::{Api, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::istio::IstioBinaries;

fn istioctl(cp: &meshop_testenv::ControlPlane, args: &[&str]) -> (bool, String) {
    let bin = IstioBinaries::locate().unwrap();
    let out = Command::new(&bin.istioctl)
        .args(args)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istioctl_precheck_then_analyze() {
    let cp = meshop_testenv::shared_with_controllers();
    let (ok, out) = istioctl(cp, &["x", "precheck"]);
    println!("istioctl x precheck:\n{out}");
    assert!(
        ok,
        "istioctl x precheck failed on a cluster without Istio:\n{out}"
    );

    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    let api: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(serde_json::json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": "judged" },
        "spec": { "profile": "demo" }
    }))
    .unwrap();
    api.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&api, "judged", KStatus::Current, Duration::from_secs(180))
        .await;

    let (ok, out) = istioctl(
        cp,
        &[
            "analyze",
            "--all-namespaces",
            "--failure-threshold",
            "Error",
        ],
    );
    println!("istioctl analyze:\n{out}");
    assert!(
        ok,
        "istioctl analyze reports errors on meshop's installation:\n{out}"
    );
    assert!(!out.contains("Error ["), "{out}");
}
