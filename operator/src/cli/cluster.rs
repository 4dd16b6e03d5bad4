//! What the cluster commands share: kubectl's connection flags, the output format, and the
//! runtime they run on.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;

/// How to reach the cluster, as kubectl spells it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// A client for the chosen kubeconfig and context.
    pub async fn client(&self) -> Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
            None => kube::Config::infer()
                .await
                .context("no kubeconfig found: pass --kubeconfig or set KUBECONFIG")?,
        };
        Client::try_from(config).context("cannot build a Kubernetes client")
    }
}

/// `-o`: plain aligned text for people, JSON or YAML for scripts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Text,
    Json,
    Yaml,
}

impl Output {
    /// The value as JSON or YAML; `None` for text, which each command writes itself.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Option<String>> {
        Ok(match self {
            Output::Text => None,
            Output::Json => Some(serde_json::to_string_pretty(value)? + "\n"),
            Output::Yaml => Some(crate::yaml::to_string(value)?),
        })
    }
}

/// Runs a cluster command on a small runtime of its own.
pub fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// Prints a progress line on stderr when a person is watching (never into `-o json` output or a
/// pipe's log).
pub fn progress(message: &str) {
    let mut stderr = std::io::stderr();
    if stderr.is_terminal() {
        use std::io::Write;
        let _ = writeln!(stderr, "… {message}");
    }
}

/// Lays out rows as columns separated by two spaces, each as wide as its widest cell; `indent`
/// spaces before every row.
pub fn table(indent: usize, rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = " ".repeat(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_every_column_but_the_last() {
        let rows = vec![
            vec!["NAME".into(), "READY".into(), "MESSAGE".into()],
            vec!["istiod".into(), "1/1".into(), "".into()],
            vec!["ingressGateway".into(), "0/2".into(), "rolling out".into()],
        ];
        assert_eq!(
            table(2, &rows),
            "  NAME            READY  MESSAGE\n  istiod          1/1\n  ingressGateway  0/2    rolling out\n"
        );
    }
}
