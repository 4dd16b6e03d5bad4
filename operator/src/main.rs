//! The `meshop` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshop::api::Profile;

/// meshop installs and runs an Istio service mesh from one MeshInstall resource.
#[derive(Parser, Debug)]
#[command(name = "meshop", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the MeshInstall CustomResourceDefinition as YAML.
    Crd,
    /// Print meshop's version and the Istio versions it knows: supported and end of life, with dates.
    Version,
    /// Print every object a MeshInstall produces, as YAML in apply order.
    Render {
        /// The MeshInstall to render ('-' for standard input).
        #[arg(short = 'f', long = "filename", conflicts_with = "profile")]
        file: Option<PathBuf>,
        /// Render a profile with no overrides instead of a file.
        #[arg(long, required_unless_present = "file")]
        profile: Option<Profile>,
        /// The Istio version to render (a release such as 1.30.5 or a minor such as 1.30), in place
        /// of the file's spec.version.
        #[arg(long, value_name = "VERSION")]
        istio_version: Option<String>,
        /// Only this component's objects (base, istiod, ingressGateway, egressGateway, cni,
        /// prometheus, grafana, kiali, jaeger).
        #[arg(long)]
        component: Option<String>,
    },
    /// Print workloads with the Istio sidecar injected, as the webhook would (offline: namespace
    /// labels are unknown, so objects are injected unless they opt out or use hostNetwork).
    Inject {
        /// The Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob YAML ('-' for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The MeshInstall whose effective settings drive the sidecar (default: the demo profile).
        #[arg(long)]
        mesh: Option<PathBuf>,
        /// The Istio version of the sidecar (a release or a minor), in place of the mesh's.
        #[arg(long, value_name = "VERSION")]
        istio_version: Option<String>,
    },
    /// Print the operator's namespace, ServiceAccount and RBAC as YAML (deploy/rbac.yaml).
    #[command(hide = true)]
    DeployRbac,
    /// Run the operator: reconcile MeshInstalls, serve health and metrics.
    Run(RunArgs),
    /// List or show the install profiles.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Address of the /livez, /readyz and /metrics endpoints.
    #[arg(long, env = "MESHOP_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: std::net::SocketAddr,
    /// Elect a leader with a Lease so that only one replica writes.
    #[arg(long, env = "MESHOP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (in a cluster: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "meshop-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease (in a cluster: the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease lasts without renewal before another replica may take over.
    #[arg(long, default_value = "15", value_name = "SECONDS")]
    lease_duration: u64,
    /// Where the HTTPS injection webhook listens; "off" serves none.
    #[arg(long, env = "MESHOP_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    webhook_addr: String,
    /// The URL the API server calls the webhook at, when the operator runs outside the cluster
    /// (such as https://127.0.0.1:9443/inject). In a cluster leave it out: the Service
    /// meshop-webhook in the operator's namespace is used.
    #[arg(long, env = "MESHOP_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Lifetime of the webhook's serving certificate, in seconds (renewed when a third is left).
    #[arg(long, hide = true, default_value_t = 90 * 24 * 3600, value_name = "SECONDS")]
    webhook_cert_lifetime: u64,
    /// Log format.
    #[arg(long, env = "MESHOP_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// List the profiles.
    List,
    /// Print a profile layered on the built-in base.
    Show { name: Profile },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => return run(args),
        Command::Inject {
            file,
            mesh,
            istio_version,
        } => meshop::cli::inject(&file, mesh.as_deref(), istio_version.as_deref()),
        Command::Crd => Ok(meshop::api::crd_yaml()),
        Command::DeployRbac => Ok(meshop::deploy::rbac_yaml()),
        Command::Version => Ok(format!(
            "meshop {}\ndefault Istio version: {}\n\n{}",
            env!("CARGO_PKG_VERSION"),
            meshop::versions::default_version(),
            meshop::versions::table()
        )),
        Command::Render {
            file,
            profile,
            istio_version,
            component,
        } => meshop::cli::render(
            file.as_deref(),
            profile,
            istio_version.as_deref(),
            component.as_deref(),
        ),
        Command::Profile {
            command: ProfileCommand::List,
        } => Ok(meshop::cli::profile_list()),
        Command::Profile {
            command: ProfileCommand::Show { name },
        } => meshop::cli::profile_show(name),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `meshop run`. Logs go to stderr; the level comes from RUST_LOG (default info).
fn run(args: RunArgs) -> ExitCode {
    // kube-client logs every failed request at ERROR on its own; meshop reports each failure
    // once, with what to do, so that log is off unless RUST_LOG asks for it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_client::client::builder=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let result = runtime.block_on(async {
        // KUBECONFIG (or ~/.kube/config) out of a cluster, the service account inside one.
        let client = kube::Client::try_default().await?;
        let options = meshop::controller::RunOptions {
            health_addr: args.health_addr,
            leader_election: args.leader_elect,
            lease_namespace: args.lease_namespace.clone(),
            identity,
            lease_duration: std::time::Duration::from_secs(args.lease_duration.max(3)),
            webhook_addr: if args.webhook_addr == "off" {
                None
            } else {
                Some(args.webhook_addr.parse()?)
            },
            webhook_url: args.webhook_url.clone(),
            webhook_cert_lifetime: std::time::Duration::from_secs(
                args.webhook_cert_lifetime.max(30),
            ),
        };
        meshop::controller::run(client, options).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
