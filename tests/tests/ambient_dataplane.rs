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

    // Two workloads of an enrolled namespace, each with its own ServiceAccount: Pod objects on
    // the node (kwok gives them their addresses) and network namespaces the test makes with
    // those addresses; the real plugin is called for each as the runtime would.
    let app = "amb-traffic";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": app,
                "labels": { "istio.io/dataplane-mode": "ambient" } } }))
            .unwrap(),
        )
        .await
        .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), app);
    for sa in ["client", "server"] {
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({ "metadata": { "name": sa } })).unwrap(),
            )
            .await
            .unwrap();
    }
    let mut workloads = Vec::new();
    for (name, veth) in [("client", "veth-c"), ("server", "veth-s")] {
        let pod = meshop_testenv::ambient::pod_on_node(
            &client,
            app,
            name,
            name,
            "kwok-node-0",
            json!({ "app": name }),
        )
        .await
        .unwrap();
        let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
        let ns = NetNs::create(name).unwrap();
        node.attach(&ns, veth, &format!("{ip}/32"), "169.254.1.1")
            .unwrap();
        let out = agent
            .cni_add(&pod, &ns, &ip)
            .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&agent.log(), 30)));
        eprintln!("CNI ADD {name} ({ip}): {}", out.trim());
        workloads.push((pod, ns, ip));
    }
    let (server_ns, server_ip) = (&workloads[1].1, workloads[1].2.clone());
    let (client_ns, _) = (&workloads[0].1, workloads[0].2.clone());

    // istiod learns of each capture from the agent's annotation on the pod
    // (ambient.istio.io/redirection) and tells ztunnel to speak HBONE to it.
    meshop_testenv::wait_until(
        "istiod marks both workloads HBONE in ztunnel's config",
        Duration::from_secs(60),
        || async {
            let dump: serde_json::Value =
                serde_json::from_str(&ztunnel.admin_body("/config_dump")?)?;
            let hbone =
                |name: &str| {
                    dump["workloads"].as_array().into_iter().flatten().any(|w| {
                        w["name"] == name && w["namespace"] == app && w["protocol"] == "HBONE"
                    })
                };
            if hbone("client") && hbone("server") {
                Ok(())
            } else {
                anyhow::bail!("not yet")
            }
        },
    )
    .await;

    // What crosses the wire between the two pods: a capture on the node's side of the server's
    // link.
    let capture = node.capture("veth-s").unwrap();

    // A TCP echo server in the server pod, a client in the client pod.
    let addr: std::net::SocketAddr = format!("{server_ip}:8080").parse().unwrap();
    let listener = server_ns.listen(addr).unwrap();
    let echo = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 11];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        peer
    });
    {
        use std::io::{Read, Write};
        let mut conn = client_ns.connect(addr).unwrap_or_else(|e| {
            panic!(
                "{e:#}\nztunnel log:\n{}\nagent log:\n{}",
                tail(&ztunnel.log(), 30),
                tail(&agent.log(), 30)
            )
        });
        conn.write_all(b"hello mesh!").unwrap();
        let mut back = [0u8; 11];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello mesh!");
    }
    let peer = echo.join().unwrap();
    eprintln!("the server saw the connection from {peer}");
    std::thread::sleep(Duration::from_millis(300));
    let segments = capture.stop();
    let with_data: Vec<_> = segments.iter().filter(|s| !s.payload.is_empty()).collect();
    let to_hbone = with_data.iter().filter(|s| s.dst_port == 15008).count();
    let from_hbone = with_data.iter().filter(|s| s.src_port == 15008).count();
    let bytes: usize = with_data.iter().map(|s| s.payload.len()).sum();
    let plaintext = with_data
        .iter()
        .any(|s| s.payload.windows(11).any(|w| w == b"hello mesh!"));
    let other_ports: Vec<(u16, u16)> = with_data
        .iter()
        .filter(|s| s.dst_port != 15008 && s.src_port != 15008)
        .map(|s| (s.src_port, s.dst_port))
        .collect();
    // The first bytes to 15008 are a TLS record: a handshake (0x16) of TLS 1.x (0x03).
    let first = with_data
        .iter()
        .find(|s| s.dst_port == 15008)
        .map(|s| s.payload[..3].to_vec());
    eprintln!(
        "capture on the server's link: {} segments, {} with data ({bytes} bytes): {to_hbone} to port 15008, {from_hbone} from it, others {other_ports:?}; first bytes to 15008 {first:02x?}; the payload in plaintext: {plaintext}",
        segments.len(),
        with_data.len()
    );
    assert!(
        to_hbone > 0 && from_hbone > 0,
        "no HBONE traffic on the wire"
    );
    assert!(
        other_ports.is_empty(),
        "data outside HBONE: {other_ports:?}"
    );
    assert_eq!(
        first.as_deref().map(|b| (b[0], b[1])),
        Some((0x16, 0x03)),
        "not TLS"
    );
    assert!(!plaintext, "the payload crossed the wire in plaintext");
    let metrics = ztunnel.stats("/metrics").unwrap();
    let opened: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total"))
        .collect();
    eprintln!("{}", opened.join("\n"));
    eprintln!("ztunnel log:\n{}", tail(&ztunnel.log(), 30));
    assert!(
        opened.iter().any(|l| l.contains(&format!(
            "source_principal=\"spiffe://cluster.local/ns/{app}/sa/client\""
        )) && l.contains(&format!(
            "destination_principal=\"spiffe://cluster.local/ns/{app}/sa/server\""
        ))),
        "no connection with both principals in ztunnel's metrics:\n{}",
        opened.join("\n")
    );
    drop(workloads);
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
