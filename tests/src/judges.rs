//! The judges (tests/judges/), built and cached by `tests/testenv/build-judges.sh`: small Go
//! programs around the code Argo CD, Flux and kstatus users run, each reading one object as JSON
//! on stdin and printing its verdict as one JSON line; and Prometheus's own `promtool`, which
//! checks and unit-tests alerting rules.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

const HOW_TO_BUILD: &str = "build them with `make judges` (tests/testenv/build-judges.sh, about \
     10 minutes cold) or point MESHOP_JUDGES_BIN at a directory holding kstatus, flux, argocd and \
     promtool";

/// Paths of the judge binaries.
#[derive(Clone, Debug)]
pub struct Judges {
    pub dir: PathBuf,
}

/// What each tool concluded about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdicts {
    /// `sigs.k8s.io/cli-utils` kstatus `Compute`: Current, InProgress, Failed, Terminating...
    pub kstatus: String,
    /// Flux's CEL status evaluator with the shipped `healthCheckExprs`: Unknown when an
    /// expression cannot be evaluated, as Flux reports it (and keeps waiting).
    pub flux_cel: String,
    /// Flux's kstatus fork, which `wait: true` uses when no expression is given.
    pub flux_wait: String,
    /// Argo CD's health from the shipped Lua check: Healthy, Progressing, Degraded...
    pub argocd: String,
    pub argocd_message: String,
}

#[derive(Deserialize)]
struct Line {
    status: Option<String>,
    cel: Option<String>,
    wait: Option<String>,
    #[serde(default)]
    message: String,
}

/// The repository's root (the judges read the shipped snippets from deploy/gitops/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Judges {
    /// `MESHOP_JUDGES_BIN` when set, else the cache `tests/testenv/build-judges.sh` fills,
    /// building it first when missing (once per test process).
    pub fn locate() -> Result<Judges> {
        static LOCATED: OnceLock<std::result::Result<Judges, String>> = OnceLock::new();
        LOCATED
            .get_or_init(|| {
                crate::binaries::run_build_script("build-judges.sh")
                    .map(|dir| Judges { dir })
                    .map_err(|e| format!("the GitOps judges are missing and {e:#}: {HOW_TO_BUILD}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// Runs `promtool <args>` (github.com/prometheus/prometheus/cmd/promtool) in `dir`; returns
    /// whether it succeeded and what it printed (stdout, then stderr).
    pub fn promtool(&self, dir: &Path, args: &[&str]) -> Result<(bool, String)> {
        let bin = self.dir.join("promtool");
        let out = Command::new(&bin)
            .args(args)
            .current_dir(dir)
            .output()
            .with_context(|| format!("run {}: {HOW_TO_BUILD}", bin.display()))?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    fn run(&self, judge: &str, args: &[&Path], object: &serde_json::Value) -> Result<Line> {
        let bin = self.dir.join(judge);
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("run {}: {HOW_TO_BUILD}", bin.display()))?;
        child
            .stdin
            .take()
            .context("judge stdin")?
            .write_all(&serde_json::to_vec(object)?)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "judge {judge} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "judge {judge} printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Every judge's verdict on `object` (a MeshInstall as the API server returned it).
    pub fn judge(&self, object: &serde_json::Value) -> Result<Verdicts> {
        let gitops = repo_root().join("deploy/gitops");
        let kstatus = self.run("kstatus", &[], object)?;
        let flux = self.run("flux", &[&gitops.join("flux-kustomization.yaml")], object)?;
        let argocd = self.run("argocd", &[&gitops.join("argocd-cm.yaml")], object)?;
        Ok(Verdicts {
            kstatus: kstatus.status.context("kstatus printed no status")?,
            flux_cel: flux.cel.context("flux printed no cel verdict")?,
            flux_wait: flux.wait.context("flux printed no wait verdict")?,
            argocd: argocd.status.context("argocd printed no status")?,
            argocd_message: argocd.message,
        })
    }
}

/// The directory of the Istio judges (tests/istio-judges/), built and cached by
/// `tests/testenv/build-istio-judges.sh` (`make istio-judges`) on first use, once per process.
pub fn istio_judges() -> Result<PathBuf> {
    static LOCATED: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    LOCATED
        .get_or_init(|| {
            crate::binaries::run_build_script("build-istio-judges.sh").map_err(|e| {
                format!(
                    "the Istio judges are missing and {e:#}: build them with `make istio-judges` \
                     or point MESHOP_ISTIO_JUDGES_BIN at a directory holding meshconfig"
                )
            })
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
