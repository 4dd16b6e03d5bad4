//! Ambient mode's data plane, for real (issue 23, first step): ztunnel built from Istio's source,
//! run as meshop's ztunnel DaemonSet declares it in a pod network namespace of its own on a node
//! namespace the test made, against the real istiod on meshop's ambient install. ztunnel must
//! authenticate with its pod-bound token, open its xDS stream through istiod's TLS port (verifying
//! istiod's certificate for the Service name meshop renders), and receive the cluster's workloads;
//! the test's namespaces must be gone afterwards.

use std::time::Duration;

use kube::api::{Api, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::KStatus;
use meshop_testenv::ambient::{LocalNodeAgent, LocalZtunnel};
use meshop_testenv::istio::{IstioBinaries, LocalIstiod};
use meshop_testenv::netns::{self, NetNs};
use serde_json::json;

const MESH_READY: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_gets_its_workloads_from_istiod_on_meshops_ambient_install() {
    netns::sweep().unwrap();
    let istio = IstioBinaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    meshop_testenv::ambient::ztunnel_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let cp = meshop_testenv::shared_with_controllers();
    meshop_testenv::shared_operator();
    let client = cp.client().await.unwrap();
    let (name, ns) = ("dataplane", "istio-system");
    let meshes: Api<MeshInstall> = Api::all(client.clone());
    let mi: MeshInstall = serde_json::from_value(json!({
        "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
        "metadata": { "name": name },
        "spec": { "profile": "ambient", "namespace": ns }
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mi).await.unwrap();
    meshop_testenv::wait_for_kstatus(&meshes, name, KStatus::Current, MESH_READY).await;

    let mut istiod = LocalIstiod::start(cp, &client, &istio, ns, "istiod", "dataplane")
        .await
        .unwrap();
    istiod
        .wait_ready(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), ns);
    meshop_testenv::wait_until(
        "istiod publishes istio-ca-root-cert",
        Duration::from_secs(60),
        || async { Ok(config_maps.get("istio-ca-root-cert").await?) },
    )
    .await;

    let node = NetNs::create("node").unwrap();
    let ztunnel = LocalZtunnel::start(cp, &client, &istiod, ns, &node, "kwok-node-0")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dump = meshop_testenv::wait_until(
        "ztunnel's config dump lists the cluster's workloads",
        Duration::from_secs(60),
        || async {
            let dump = ztunnel.admin("/config_dump")?;
            if dump.contains("ztunnel-local") {
                Ok(dump)
            } else {
                anyhow::bail!("not yet; ztunnel log tail:\n{}", tail(&ztunnel.log(), 20))
            }
        },
    )
    .await;
    assert!(dump.contains("\"workloads\""), "{}", tail(&dump, 40));
    let log = ztunnel.log();
    assert!(log.contains("Stream established"), "{}", tail(&log, 40));

    // The node's CNI agent, as meshop's CNI DaemonSet declares it: ready, the plugin installed
    // into the node's CNI directory, and ztunnel connected to it.
    let agent = LocalNodeAgent::start(cp, &client, ns, &node, "kwok-node-0", &ztunnel)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    meshop_testenv::wait_until(
        "ztunnel connects to the CNI node agent",
        Duration::from_secs(60),
        || async {
            if agent.log().contains("ztunnel connected")
                || ztunnel
                    .log()
                    .contains("connected to the Istio CNI node agent")
            {
                Ok(())
            } else {
                anyhow::bail!(
                    "not yet; agent log tail:\n{}\nztunnel log tail:\n{}",
                    tail(&agent.log(), 15),
                    tail(&ztunnel.log(), 5)
                )
            }
        },
    )
    .await;
    let installed = agent.host.join("opt/cni/bin/istio-cni");
    meshop_testenv::wait_until(
        "the agent installs the CNI plugin on the node",
        Duration::from_secs(60),
        || async {
            if installed.exists() {
                Ok(())
            } else {
                anyhow::bail!("not yet; agent log tail:\n{}", tail(&agent.log(), 15))
            }
        },
    )
    .await;
    eprintln!("agent log:\n{}", tail(&agent.log(), 30));
    eprintln!("ztunnel log:\n{}", tail(&ztunnel.log(), 30));
    drop(agent);
    let names = [node.name.clone(), ztunnel.netns.name.clone()];
    drop(ztunnel);
    drop(node);
    let left = netns::list().unwrap();
    assert!(names.iter().all(|n| !left.contains(n)), "{left:?}");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
