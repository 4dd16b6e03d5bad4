//! `make cluster`: starts the test control plane in controllers mode with meshop's CRDs installed
//! and keeps it running until interrupted.

use std::path::PathBuf;

use meshop_testenv::{ControlPlane, Options};

fn main() -> anyhow::Result<()> {
    let nodes = std::env::var("MESHOP_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = std::env::var_os("MESHOP_CLUSTER_DIR").map(PathBuf::from);
    let cp = ControlPlane::start(Options {
        controllers: true,
        nodes,
        install_crds: true,
        dir,
        ..Options::default()
    })?;
    println!(
        "control plane ready: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok ({nodes} nodes)"
    );
    println!("logs: {}", cp.dir.display());
    println!("kubectl: {}", cp.binaries.kubectl.display());
    println!("export KUBECONFIG={}", cp.kubeconfig.display());
    println!("press Ctrl-C to stop");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(2));
        let mut cp = cp;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = interval.tick() => {
                    if let Err(e) = cp.check_running() {
                        eprintln!("{e:#}");
                        return Err(e);
                    }
                }
            }
        }
        println!("stopping");
        Ok(())
    })
}
