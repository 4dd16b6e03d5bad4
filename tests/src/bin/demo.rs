//! `make demo`: a local control plane (controllers mode), meshop's CRD, the operator (`meshop
//! run`), a demo MeshInstall; waits until it is Ready, prints it, and keeps everything running
//! until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use kube::api::{Api, Patch, PatchParams};
use meshop::api::MeshInstall;
use meshop::controller::status::{KStatus, kstatus};
use meshop_testenv::{ControlPlane, GiveUp, Options, poll_until};

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let meshop_bin = meshop_testenv::meshop_binary()?;
    println!(
        "==> starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    );
    let mut cp = ControlPlane::start(Options {
        controllers: true,
        ..Options::default()
    })?;
    let identity = format!("demo-{}", std::process::id());
    // Out of a cluster the API server reaches the webhook by URL on loopback.
    let started = meshop_testenv::start_operator(&cp, &identity, &[])?;
    let (mut operator, health) = (started.process, started.health);
    let log = operator.log.clone();
    println!(
        "==> started the operator: {} run (health and metrics on http://{health})",
        meshop_bin.display()
    );
    let example = root.join("docs/examples/demo.yaml");
    println!("==> applying {}", example.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = cp.client().await?;
        let api: Api<MeshInstall> = Api::all(client);
        let mi: MeshInstall = serde_yaml::from_str(&std::fs::read_to_string(&example)?)?;
        let name = mi.metadata.name.clone().context("example without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("meshop-demo"),
            &Patch::Apply(&mi),
        )
        .await?;
        println!("==> waiting for MeshInstall {name} to become Ready");
        poll_until(
            &format!("MeshInstall {name} Ready (operator log: {})", log.display()),
            Duration::from_secs(300),
            || {
                let alive = operator
                    .check_running()
                    .map_err(|e| anyhow::Error::from(GiveUp(e.context("the operator stopped"))));
                let api = api.clone();
                let name = name.clone();
                async move {
                    alive?;
                    let mi = api.get(&name).await?;
                    match kstatus(mi.metadata.generation, mi.status.as_ref()) {
                        KStatus::Current => Ok(()),
                        other => bail!("{other:?}"),
                    }
                }
            },
        )
        .await
    })?;
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(&cp.binaries.kubectl)
            .args(args)
            .env("KUBECONFIG", &cp.kubeconfig)
            .output();
        if let Ok(out) = out {
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    };
    println!("\n$ kubectl get meshinstalls -o wide");
    kubectl(&["get", "meshinstalls", "-o", "wide"]);
    let components = "{range .status.components[*]}{.name}{\"\\t\"}{.state}{\"\\t\"}{.readyReplicas}/{.desiredReplicas}{\"\\n\"}{end}";
    println!("\n$ kubectl get meshinstall demo -o jsonpath='{components}'");
    kubectl(&[
        "get",
        "meshinstall",
        "demo",
        "-o",
        &format!("jsonpath={components}"),
    ]);
    println!("\n$ kubectl get deployments -n istio-system");
    kubectl(&["get", "deployments", "-n", "istio-system"]);
    println!("\nThe mesh is Ready. From another shell:");
    println!("  export KUBECONFIG={}", cp.kubeconfig.display());
    println!("  alias kubectl={}", cp.binaries.kubectl.display());
    println!(
        "  kubectl get meshinstalls        # try: kubectl patch mi demo --type merge -p '{{\"spec\":{{\"profile\":\"production\"}}}}'"
    );
    println!("operator log: {}; press Ctrl-C to stop", log.display());
    runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    cp.check_running()?;
                    operator.check_running()?;
                }
            }
        }
        println!("stopping");
        anyhow::Ok(())
    })
}
