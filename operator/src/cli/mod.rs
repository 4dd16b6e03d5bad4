//! The `meshop` command line: its arguments (clap), and one module per command. `main.rs` only
//! calls [`main`].
//!
//! Offline commands (`render`, `inject`, `profile`, `version`, `convert`, `diff --from/--to`,
//! `completion`) never build a client. Cluster commands (`check`, `status`, `diff -f`) take
//! kubectl's flags (`--kubeconfig`, `--context`, `-o`, `-n` where it applies); each gathers what
//! it needs (I/O) and then decides and prints with pure functions, unit-tested without a cluster.

pub mod check;
pub mod cluster;
pub mod completion;
pub mod convert;
pub mod diff;
mod offline;
mod run;
pub mod snapshot;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::Profile;
pub use cluster::{ClusterArgs, Output};
pub use offline::{inject, installation, profile_list, profile_show, read_mesh, render};

/// meshop installs and runs an Istio service mesh from one MeshInstall resource.
#[derive(Parser, Debug)]
#[command(name = "meshop", version, about, long_about = None)]
pub struct Cli {
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
    /// Print what lets meshop install control planes into NAMESPACE (the namespace and a Role
    /// bound to meshop's ServiceAccount), for `kubectl apply --server-side -f -`. deploy/ grants
    /// istio-system; the chart grants its `controlPlaneNamespaces`.
    GrantNamespace {
        /// The control-plane namespace a MeshInstall's spec.namespace names.
        namespace: String,
        /// The namespace meshop runs in.
        #[arg(long, default_value = crate::deploy::OPERATOR_NAMESPACE)]
        operator_namespace: String,
    },
    /// Run the operator: reconcile MeshInstalls, serve health and metrics.
    Run(run::RunArgs),
    /// List or show the install profiles.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Check a cluster before installing (pre) and a running mesh (post); exits non-zero when a
    /// check fails, each failure with what to do.
    Check(check::CheckArgs),
    /// One screen per MeshInstall: profile, version, components, webhook, data plane.
    Status(status::StatusArgs),
    /// What applying a MeshInstall would change in the cluster (server-side apply, dry run), or
    /// offline what changes between two MeshInstalls, profiles or versions.
    Diff(diff::DiffArgs),
    /// Print the MeshInstall equivalent to an IstioOperator (install.istio.io/v1alpha1), and every
    /// setting it could not carry, with why.
    Convert(convert::ConvertArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completion { shell: completion::Shell },
}

#[derive(Subcommand, Debug)]
enum ProfileCommand {
    /// List the profiles.
    List,
    /// Print a profile layered on the built-in base.
    Show { name: Profile },
}

/// What a command produced: text for stdout and whether the command succeeded (`check` prints a
/// full report and still fails).
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

impl From<String> for Outcome {
    fn from(stdout: String) -> Outcome {
        Outcome {
            stdout,
            success: true,
        }
    }
}

/// Parses the command line, runs the command, prints its output and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<Outcome> = match cli.command {
        Command::Run(args) => return run::run(args),
        Command::Inject {
            file,
            mesh,
            istio_version,
        } => inject(&file, mesh.as_deref(), istio_version.as_deref()).map(Into::into),
        Command::Crd => Ok(crate::api::crd_yaml().into()),
        Command::DeployRbac => Ok(crate::deploy::rbac_yaml().into()),
        Command::GrantNamespace {
            namespace,
            operator_namespace,
        } => crate::yaml::documents(&crate::deploy::control_plane_objects(
            &namespace,
            &operator_namespace,
        ))
        .map(Into::into)
        .map_err(Into::into),
        Command::Version => Ok(format!(
            "meshop {}\ndefault Istio version: {}\n\n{}",
            env!("CARGO_PKG_VERSION"),
            crate::versions::default_version(),
            crate::versions::table()
        )
        .into()),
        Command::Render {
            file,
            profile,
            istio_version,
            component,
        } => render(
            file.as_deref(),
            profile,
            istio_version.as_deref(),
            component.as_deref(),
        )
        .map(Into::into),
        Command::Profile {
            command: ProfileCommand::List,
        } => Ok(profile_list().into()),
        Command::Profile {
            command: ProfileCommand::Show { name },
        } => profile_show(name).map(Into::into),
        Command::Check(args) => cluster::block_on(check::run(args)),
        Command::Status(args) => cluster::block_on(status::run(args)).map(Into::into),
        Command::Diff(args) => cluster::block_on(diff::run(args)),
        Command::Convert(args) => convert::run(&args),
        Command::Completion { shell } => Ok(completion::script(shell).into()),
    };
    match result {
        Ok(out) => {
            print!("{}", out.stdout);
            if out.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The clap description of the command line, for completion scripts.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
