//! The real `helm` (built from helm.sh/helm/v3 by `tests/testenv/build-helm.sh`), run against a
//! test control plane.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

const HOW_TO_BUILD: &str = "build it with `make helm` (tests/testenv/build-helm.sh, about 2 \
     minutes cold) or point MESHOP_HELM_BIN at a directory holding helm";

/// A `helm` bound to one control plane's kubeconfig, with its own config and cache directories
/// (so nothing of the user's Helm setup is read or written).
pub struct Helm {
    pub bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    /// `MESHOP_HELM_BIN` when set, else the cache the build script fills (built when missing).
    pub fn locate(kubeconfig: &Path, home: &Path) -> Result<Helm> {
        static LOCATED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
        let dir = LOCATED
            .get_or_init(|| {
                crate::binaries::run_build_script("build-helm.sh")
                    .map_err(|e| format!("helm is missing and {e:#}: {HOW_TO_BUILD}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(home)?;
        Ok(Helm {
            bin: dir.join("helm"),
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
        })
    }

    /// Runs `helm <args>`; returns stdout, or fails with stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .output()
            .with_context(|| format!("run {}: {HOW_TO_BUILD}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "helm {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// The Kubernetes version charts are rendered for (`helm template --kube-version`): the test
/// control plane's.
pub const KUBE_VERSION: &str = "1.36.3";

/// The non-empty documents of a multi-document YAML stream (what `helm template` prints).
pub fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: serde_json::Value = serde::Deserialize::deserialize(d).unwrap();
            (!v.is_null()).then_some(v)
        })
        .collect()
}
