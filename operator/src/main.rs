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
    /// Print meshop's version and the Istio versions it can install.
    Version,
    /// Print every object a MeshInstall produces, as YAML in apply order.
    Render {
        /// The MeshInstall to render ('-' for standard input).
        #[arg(short = 'f', long = "filename", conflicts_with = "profile")]
        file: Option<PathBuf>,
        /// Render a profile with no overrides instead of a file.
        #[arg(long, required_unless_present = "file")]
        profile: Option<Profile>,
        /// Only this component's objects (base, istiod, ingressGateway, egressGateway, cni,
        /// prometheus, grafana, kiali, jaeger).
        #[arg(long)]
        component: Option<String>,
    },
    /// List or show the install profiles.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
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
        Command::Crd => Ok(meshop::api::crd_yaml()),
        Command::Version => Ok(format!(
            "meshop {}\nistio versions: {} (default {})\n",
            env!("CARGO_PKG_VERSION"),
            meshop::versions::SUPPORTED.join(", "),
            meshop::versions::DEFAULT
        )),
        Command::Render {
            file,
            profile,
            component,
        } => meshop::cli::render(file.as_deref(), profile, component.as_deref()),
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
