//! Finding (or building) the upstream binaries.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Paths of the control-plane binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
}

/// Runs `tests/testenv/<script>` (which builds or reuses a cache, logging to stderr) and returns
/// the directory it prints.
pub(crate) fn run_build_script(script: &str) -> Result<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testenv")
        .join(script);
    let output = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed", script.display());
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

impl Binaries {
    /// `KUBEBUILDER_ASSETS` when set (the envtest convention), else the versioned cache that
    /// `tests/testenv/build.sh` fills, building it first when it is missing.
    pub fn locate() -> Result<Binaries> {
        let dir = run_build_script("build.sh")
            .map_err(|e| anyhow::anyhow!("{e:#}; see the lines above"))?;
        let bin = |name: &str| dir.join(name);
        let binaries = Binaries {
            etcd: bin("etcd"),
            kube_apiserver: bin("kube-apiserver"),
            kube_controller_manager: bin("kube-controller-manager"),
            kube_scheduler: bin("kube-scheduler"),
            kubectl: bin("kubectl"),
            kwok: bin("kwok"),
            dir,
        };
        for required in [&binaries.etcd, &binaries.kube_apiserver] {
            if !required.exists() {
                bail!("{} is missing", required.display());
            }
        }
        Ok(binaries)
    }

    /// The kwok Stage files that make fake nodes Ready and pods Running and Ready.
    pub fn kwok_stages(&self) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("kwok-stages");
        let mut stages: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| {
                format!(
                    "read {} (controllers mode needs kwok's stages)",
                    dir.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        stages.sort();
        Ok(stages)
    }
}
