//! The `meshop` command line.

use clap::{Parser, Subcommand};

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", meshop::api::crd_yaml()),
        Command::Version => {
            println!("meshop {}", env!("CARGO_PKG_VERSION"));
            println!(
                "istio versions: {} (default {})",
                meshop::versions::SUPPORTED.join(", "),
                meshop::versions::DEFAULT
            );
        }
    }
    std::process::ExitCode::SUCCESS
}
