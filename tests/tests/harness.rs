//! The harness itself: no control-plane process outlives the process that started it, even when
//! that process is killed with SIGKILL and has no chance to clean up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Pids of the live processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

#[test]
fn control_plane_dies_with_a_killed_parent() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_meshop-cluster"))
        .env("MESHOP_CLUSTER_DIR", dir.path())
        .env("MESHOP_NODES", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(cluster.stdout.take().unwrap());
    let mut kubeconfig_line = None;
    // Keep the pipe open until the kill: a child writing to a closed pipe would fail on its own.
    let mut lines = stdout.lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("export KUBECONFIG=") {
            kubeconfig_line = Some(line);
            break;
        }
    }
    let line = kubeconfig_line.expect("meshop-cluster printed no export KUBECONFIG line");
    assert!(
        line.ends_with("/kubeconfig")
            && std::path::Path::new(&line["export KUBECONFIG=".len()..]).exists()
    );

    let children = children_of(cluster.id());
    assert_eq!(
        children.len(),
        5,
        "etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok: {children:?}"
    );

    cluster.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
    cluster.wait().unwrap();
    drop(lines);
    meshop_testenv::block_on(meshop_testenv::wait_until(
        "every child gone after its parent was killed",
        Duration::from_secs(10),
        || async {
            let running: Vec<u32> = children.iter().copied().filter(|&p| alive(p)).collect();
            anyhow::ensure!(running.is_empty(), "still running: {running:?}");
            Ok(())
        },
    ));
}
