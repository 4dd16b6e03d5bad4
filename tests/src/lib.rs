//! meshop's test environment: a real Kubernetes control plane built from upstream sources and
//! started on loopback (see `../shared/testing.md` and `docs/testing.md`).
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let cp = meshop_testenv::shared();           // one per test binary
//! let client = cp.client().await?;             // one per test
//! let ns = meshop_testenv::namespace(&client, "my-test").await?; // each test in its own namespace
//! # Ok(()) }
//! ```

pub mod ambient;
pub mod apps;
pub mod audit;
pub mod binaries;
pub mod blessed;
pub mod certs;
pub mod conformance;
pub mod controlplane;
pub mod helm;
pub mod inventory;
pub mod istio;
pub mod judges;
pub mod manifest_generate;
pub mod netns;
pub mod process;
pub mod wait;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meshop::api::MeshInstall;
use meshop::controller::status::{KStatus, kstatus};

pub use controlplane::{ControlPlane, Options};
pub use wait::{GiveUp, poll_until, wait_until};

/// The field manager the harness applies with.
pub const FIELD_MANAGER: &str = "meshop-testenv";

/// The control plane shared by every test of this test binary, started on first use. Controllers
/// mode is chosen by the first caller: a test binary uses either [`shared`] or
/// [`shared_with_controllers`] (or [`shared_with_audit`]), not both. The audit log only adds a
/// file: a caller that does not ask for it (such as [`shared_operator`]) shares a control plane
/// started with it, but a caller that asks for it must be the one that starts it.
pub fn shared() -> &'static ControlPlane {
    shared_with(Options::default())
}

/// Like [`shared`], with kube-controller-manager, kube-scheduler, kwok and three fake nodes.
pub fn shared_with_controllers() -> &'static ControlPlane {
    shared_with(Options {
        controllers: true,
        ..Options::default()
    })
}

/// Like [`shared_with_controllers`], with the API server's audit log on
/// ([`ControlPlane::audit_log`], read with [`audit`]).
pub fn shared_with_audit() -> &'static ControlPlane {
    shared_with(Options {
        controllers: true,
        audit: true,
        ..Options::default()
    })
}

fn shared_with(options: Options) -> &'static ControlPlane {
    static SHARED: OnceLock<ControlPlane> = OnceLock::new();
    let cp = SHARED.get_or_init(|| match ControlPlane::start(options.clone()) {
        Ok(cp) => cp,
        Err(e) => panic!("testenv: could not start the control plane: {e:#}"),
    });
    assert!(
        cp.options.controllers == options.controllers && (cp.options.audit || !options.audit),
        "one test binary, one control-plane mode: started with controllers {} and audit {}, \
         asked for controllers {} and audit {}",
        cp.options.controllers,
        cp.options.audit,
        options.controllers,
        options.audit
    );
    cp
}

/// Runs a future to completion on a private runtime, on its own thread, so that it works both
/// from synchronous code and from inside a test's tokio runtime.
pub fn block_on<F, T>(future: F) -> T
where
    F: std::future::Future<Output = T> + Send,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(future)
        })
        .join()
        // A panic (a failed wait_until) reaches the caller with its own message.
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A fresh directory for one control plane under `target/testenv/`, named after the process.
/// Data of earlier runs whose process is gone is removed; their logs are kept until the next
/// `cargo clean`.
pub fn run_dir() -> Result<PathBuf> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/testenv");
    std::fs::create_dir_all(&base)?;
    for entry in std::fs::read_dir(&base)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok())
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path().join("etcd-data"));
        }
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()));
    let exe = exe.unwrap_or_else(|| "testenv".into());
    // Test binaries are named like `crd-0123abcd`; drop the hash.
    let exe = exe
        .split('-')
        .filter(|part| !(part.len() == 16 && part.chars().all(|c| c.is_ascii_hexdigit())))
        .collect::<Vec<_>>()
        .join("-");
    let dir = base.join(format!("{exe}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir.canonicalize()?)
}

/// Installs (server-side applies) meshop's CRDs and waits until they are Established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in meshop_crds() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("apply CRD {name}"))?;
        wait_established(&crds, &name).await?;
    }
    Ok(())
}

/// Every CRD meshop installs itself. Later issues add Istio's API CRDs here.
pub fn meshop_crds() -> Vec<CustomResourceDefinition> {
    vec![meshop::api::crd()]
}

/// Waits until a CRD reports Established=True.
pub async fn wait_established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    poll_until(
        &format!("CRD {name} Established"),
        Duration::from_secs(30),
        || async {
            let conditions = crds
                .get(name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                Ok(())
            } else {
                bail!("conditions {conditions:?}")
            }
        },
    )
    .await
}

/// Waits until kstatus classifies the MeshInstall `name` as `want` (Current: observedGeneration
/// caught up, Ready, neither Reconciling nor Stalled; Failed: Stalled) and returns it; on timeout
/// the failure shows the last classification and conditions.
pub async fn wait_for_kstatus(
    api: &Api<MeshInstall>,
    name: &str,
    want: KStatus,
    timeout: Duration,
) -> MeshInstall {
    wait_until(&format!("MeshInstall {name} {want:?}"), timeout, || async {
        let mi = api.get(name).await?;
        match kstatus(mi.metadata.generation, mi.status.as_ref()) {
            got if got == want => Ok(mi),
            got => bail!(
                "{got:?}, generation {:?}, status {:?}",
                mi.metadata.generation,
                mi.status
            ),
        }
    })
    .await
}

/// A namespace of a test's own, `<prefix>-<random>`. When the test panics, dropping this prints
/// where every component's log is.
pub struct TestNamespace {
    pub name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs_hint(&format!("in namespace {}", self.name));
        }
    }
}

/// Prints where the logs are if the test panics while this is alive; the string says which test
/// (such as `MeshInstall drift`).
pub struct LogsOnFailure(pub String);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs_hint(&self.0);
        }
    }
}

/// Prints where the shared control plane's logs are, for a failed test.
pub fn print_logs_hint(context: &str) {
    eprintln!("testenv: test {context} failed; component logs:");
    if let Some(dir) = run_dir_of_this_process() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                eprintln!("  {}", entry.path().display());
            }
        }
        eprintln!("  kubeconfig: {}", dir.join("kubeconfig").display());
    }
}

fn run_dir_of_this_process() -> Option<PathBuf> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/testenv");
    let suffix = format!("-{}", std::process::id());
    std::fs::read_dir(base)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&suffix))
}

/// Creates a namespace `<prefix>-<random>` for one test.
pub async fn namespace(client: &Client, prefix: &str) -> Result<TestNamespace> {
    let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xffffff);
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(TestNamespace { name })
}

/// The `meshop` binary next to the running executable (target/<profile>/meshop), or `MESHOP_BIN`.
pub fn meshop_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("MESHOP_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    // Test binaries live in target/<profile>/deps, other binaries in target/<profile>.
    for dir in exe.ancestors().skip(1).take(2) {
        let bin = dir.join("meshop");
        if bin.exists() {
            return Ok(bin);
        }
    }
    bail!(
        "no meshop binary next to {}: build it with `cargo build -p meshop` (make test and make demo do)",
        exe.display()
    )
}

/// Starts `meshop run` as a process against a control plane, with its health endpoint and its
/// injection webhook on free loopback ports (the API server reaches the webhook by URL), the
/// leader Lease in `default`, and its log in the control plane's directory.
pub fn start_operator(
    cp: &ControlPlane,
    identity: &str,
    extra_args: &[String],
) -> Result<Operator> {
    start_operator_as(cp, identity, &cp.kubeconfig, extra_args)
}

/// [`start_operator`] with another kubeconfig (such as [`ControlPlane::impersonating`], so the
/// audit log tells two processes apart).
pub fn start_operator_as(
    cp: &ControlPlane,
    identity: &str,
    kubeconfig: &std::path::Path,
    extra_args: &[String],
) -> Result<Operator> {
    let free = || -> Result<std::net::SocketAddr> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    };
    let (health, hook) = (free()?, free()?);
    let mut args = vec!["run".to_string(), format!("--health-addr={health}")];
    // `default` unless the test names the operator's namespace itself.
    if !extra_args
        .iter()
        .any(|a| a.starts_with("--lease-namespace"))
    {
        args.push("--lease-namespace=default".into());
    }
    args.extend([
        format!("--identity={identity}"),
        format!("--webhook-addr={hook}"),
        format!("--webhook-url=https://{hook}/inject"),
    ]);
    args.extend(extra_args.iter().cloned());
    let process = process::Process::spawn(
        identity,
        &meshop_binary()?,
        &args,
        &cp.dir.join(format!("{identity}.log")),
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )?;
    Ok(Operator {
        process,
        health,
        webhook: hook,
    })
}

/// One `meshop run` process for the whole test binary, against [`shared_with_controllers`],
/// started on first use. Tests of one binary run in parallel and share it, as MeshInstalls in a
/// cluster share one operator; it lives until the test process exits.
pub fn shared_operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let cp = shared_with_controllers();
        match start_operator(cp, "meshop-shared", &[]) {
            Ok(operator) => operator,
            Err(e) => panic!("testenv: could not start the operator: {e:#}"),
        }
    })
}

/// A `meshop run` process started by [`start_operator`].
pub struct Operator {
    pub process: process::Process,
    /// Address of /livez, /readyz and /metrics.
    pub health: std::net::SocketAddr,
    /// Address of the HTTPS injection webhook.
    pub webhook: std::net::SocketAddr,
}

/// The messages of the Events with `reason` about the object named `name` (any namespace).
pub async fn event_notes(client: &Client, name: &str, reason: &str) -> Result<Vec<String>> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(client.clone());
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect())
}
