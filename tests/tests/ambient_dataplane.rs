//! Ambient mode's data plane, for real (issue 23): istiod on meshop's ambient install; ztunnel,
//! built from Istio's source, as meshop's ztunnel DaemonSet declares it, in a pod network namespace
//! of its own on a node namespace the test made; the CNI node agent as meshop's CNI DaemonSet
//! declares it, as that node's agent; two pods of an enrolled namespace captured through the real
//! CNI plugin. Checked, in order: ztunnel's xDS stream and workloads; the agent ready and ztunnel
//! connected to it; a TCP exchange between the pods with both SPIFFE principals in ztunnel's
//! metrics and only TLS on port 15008 on the wire; an AuthorizationPolicy DENY by principal
//! stopping it and its deletion restoring it; PeerAuthentication STRICT refusing a plaintext
//! client from outside the mesh; and every namespace the test made gone afterwards.

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
        // As the kubelet does, a failed sandbox setup is tried again.
        let mut attempt = 0;
        let out = loop {
            attempt += 1;
            match agent.cni_add(&pod, &ns, &ip) {
                Ok(out) => break out,
                Err(e) if attempt < 5 => {
                    eprintln!("CNI ADD {name}, attempt {attempt}: {e:#}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => panic!("{e:#}\nagent log:\n{}", tail(&agent.log(), 30)),
            }
        };
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
    let (peers, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let _ = peers.send(conn.peer_addr().ok());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 11];
                if conn.read_exact(&mut buf).is_ok() {
                    let _ = conn.write_all(&buf);
                }
            });
        }
    });
    exchange(client_ns, addr).unwrap_or_else(|e| {
        panic!(
            "{e:#}\nztunnel log:\n{}\nagent log:\n{}",
            tail(&ztunnel.log(), 30),
            tail(&agent.log(), 30)
        )
    });
    let peer = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    eprintln!("the server saw the connection from {peer:?}");
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

    // Policy, enforced by ztunnel: a DENY by the client's principal stops the connection;
    // deleting it lets traffic through again.
    let policies = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        app,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "security.istio.io",
            "v1",
            "AuthorizationPolicy",
        )),
    );
    let deny: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": { "name": "deny-client", "namespace": app },
        "spec": { "selector": { "matchLabels": { "app": "server" } }, "action": "DENY",
            "rules": [{ "from": [{ "source": {
                "principals": [format!("cluster.local/ns/{app}/sa/client")] } }] }] }
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &deny)
        .await
        .unwrap();
    let denied = meshop_testenv::wait_until(
        "ztunnel refuses the client once the DENY policy arrives",
        Duration::from_secs(60),
        || async {
            match exchange(client_ns, addr) {
                Err(e) => Ok(e.to_string()),
                Ok(()) => anyhow::bail!("still allowed"),
            }
        },
    )
    .await;
    // ztunnel's access log names the policy that refused it.
    let denial = format!("policy rejection: explicitly denied by: {app}/deny-client");
    let line = logged(&ztunnel, &denial).await;
    eprintln!("denied ({denied}); ztunnel: {line}");
    policies
        .delete("deny-client", &Default::default())
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "traffic flows again once the policy is gone",
        Duration::from_secs(60),
        || async { exchange(client_ns, addr) },
    )
    .await;

    // STRICT mTLS: a plaintext client from a namespace outside the mesh (its own network
    // namespace on the node, never captured) is refused; without it, it is let in.
    let outsider = NetNs::create("outsider").unwrap();
    node.attach(&outsider, "veth-o", "10.244.0.250/32", "169.254.1.1")
        .unwrap();
    exchange(&outsider, addr).expect("PERMISSIVE lets a plaintext client in");
    let peer_auth = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        app,
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "security.istio.io",
            "v1",
            "PeerAuthentication",
        )),
    );
    let strict: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": { "name": "strict", "namespace": app },
        "spec": { "mtls": { "mode": "STRICT" } }
    }))
    .unwrap();
    peer_auth
        .create(&PostParams::default(), &strict)
        .await
        .unwrap();
    meshop_testenv::wait_until(
        "STRICT refuses the plaintext client",
        Duration::from_secs(60),
        || async {
            match exchange(&outsider, addr) {
                Err(_) => Ok(()),
                Ok(()) => anyhow::bail!("still allowed"),
            }
        },
    )
    .await;
    let strict_denial =
        "policy rejection: explicitly denied by: istio-system/istio_converted_static_strict";
    let line = logged(&ztunnel, strict_denial).await;
    eprintln!("STRICT: ztunnel: {line}");
    exchange(client_ns, addr).expect("the mesh's own client still gets through under STRICT");
    drop(outsider);
    drop(workloads);
    drop(agent);
    let names = [node.name.clone(), ztunnel.netns.name.clone()];
    drop(ztunnel);
    drop(node);
    let left = netns::list().unwrap();
    assert!(names.iter().all(|n| !left.contains(n)), "{left:?}");
}

/// The first line of ztunnel's log containing `what`, waited for: its access log is written
/// when a connection ends, a moment after the client saw it end.
async fn logged(ztunnel: &LocalZtunnel, what: &str) -> String {
    meshop_testenv::wait_until(
        &format!("ztunnel logs {what:?}"),
        Duration::from_secs(10),
        || async {
            ztunnel
                .log()
                .lines()
                .find(|l| l.contains(what))
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("not yet:\n{}", tail(&ztunnel.log(), 10)))
        },
    )
    .await
}

/// Sends 11 bytes from a namespace to `addr` and expects them back.
fn exchange(ns: &NetNs, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut conn = ns.connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"hello mesh!")?;
    let mut back = [0u8; 11];
    conn.read_exact(&mut back)?;
    anyhow::ensure!(&back == b"hello mesh!", "got {back:?}");
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
