//! placeholder, replaced below
use anyhow::Result;
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    #[arg(short = 'f', long = "filename")]
    pub file: std::path::PathBuf,
}
pub fn run(_args: &ConvertArgs) -> Result<super::Outcome> {
    anyhow::bail!("todo")
}
