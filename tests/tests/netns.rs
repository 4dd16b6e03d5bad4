//! The network-namespace harness of the ambient data-plane tests (tests/src/netns.rs), on its own:
//! a "node" and two "pods" connected by veth pairs carry a TCP exchange between addresses the
//! test assigned; deleting them removes everything; a namespace left by a killed run is swept;
//! and the machine's own network namespace (its links, addresses, routes, firewall rules) is the
//! same before and after.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use meshop_testenv::netns::{self, NetNs};

/// What the machine's own namespace looks like: links, addresses and routes (and iptables rules
/// when iptables is installed).
fn machine_network() -> String {
    let mut out = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "addr", "show"][..],
        &["route", "show", "table", "all"][..],
    ] {
        out.push_str(&netns::ip(args).unwrap());
    }
    if let Ok(rules) = Command::new("iptables-save").output() {
        // Counters change with traffic; the rules are what must not.
        let text = String::from_utf8_lossy(&rules.stdout)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
            .collect::<Vec<_>>()
            .join("\n");
        out.push_str(&text);
    }
    out
}

#[test]
fn pods_in_test_namespaces_talk_and_leave_nothing_behind() {
    // A namespace "left by a killed run": a pid that does not run.
    let stale = format!("{}4194303-node", netns::PREFIX);
    let _ = netns::ip(&["netns", "add", &stale]);
    let removed = netns::sweep().unwrap();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!netns::list().unwrap().contains(&stale));

    let before = machine_network();
    let names;
    {
        let node = NetNs::create("node").unwrap();
        let a = NetNs::create("pod-a").unwrap();
        let b = NetNs::create("pod-b").unwrap();
        node.attach(&a, "veth-a", "10.244.7.2/32", "169.254.1.1")
            .unwrap();
        node.attach(&b, "veth-b", "10.244.7.3/32", "169.254.1.1")
            .unwrap();
        names = vec![node.name.clone(), a.name.clone(), b.name.clone()];

        let server: SocketAddr = "10.244.7.3:8080".parse().unwrap();
        let listener = b.listen(server).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf).unwrap();
            peer
        });
        let mut client = a.connect(server).unwrap();
        client.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        let peer = echo.join().unwrap();
        assert_eq!(peer.ip().to_string(), "10.244.7.2", "pod A's own address");

        // A service on the machine's loopback, reached from the node through the relay only.
        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = outside.local_addr().unwrap();
        let served = std::thread::spawn(move || {
            let (mut conn, _) = outside.accept().unwrap();
            conn.write_all(b"from the machine").unwrap();
        });
        assert!(
            node.connect(target).is_err(),
            "the node's loopback is its own"
        );
        let port = node.forward(target).unwrap();
        let mut through = node
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .unwrap();
        let mut got = String::new();
        through.read_to_string(&mut got).unwrap();
        assert_eq!(got, "from the machine");
        served.join().unwrap();
    }
    let left = netns::list().unwrap();
    for name in &names {
        assert!(!left.contains(name), "{name} left behind: {left:?}");
    }
    assert_eq!(
        machine_network(),
        before,
        "the machine's own network namespace changed"
    );
}
