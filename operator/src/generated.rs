//! Every file in the repository that the code generates, in one table: `make generate` writes
//! them all (operator/examples/generate.rs), and one test (operator/tests/generated.rs) fails
//! when any of them differs from what the code generates now.
//!
//! To add a file, add a row to [`files`]: its path from the repository root and the function that
//! produces its whole content.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::api::Profile;

/// Produces a file's content from what is on disk now (if anything).
type Generator = Box<dyn Fn(Option<&str>) -> Result<String>>;

/// One generated file.
pub struct GeneratedFile {
    /// Path from the repository root.
    pub path: String,
    generate: Generator,
}

impl GeneratedFile {
    /// A file whose whole content comes from the code.
    pub fn new(path: impl Into<String>, generate: impl Fn() -> Result<String> + 'static) -> Self {
        GeneratedFile {
            path: path.into(),
            generate: Box::new(move |_| generate()),
        }
    }

    /// A hand-written file with one generated section between `begin` and `end` marker lines.
    pub fn section(
        path: impl Into<String>,
        begin: &'static str,
        end: &'static str,
        generate: impl Fn() -> Result<String> + 'static,
    ) -> Self {
        let path = path.into();
        let name = path.clone();
        GeneratedFile {
            path,
            generate: Box::new(move |current| {
                let current = current
                    .with_context(|| format!("{name} must exist: it is partly hand-written"))?;
                splice(current, begin, end, &generate()?).with_context(|| format!("in {name}"))
            }),
        }
    }

    /// The file's content as the code generates it now; `current` is what is on disk, if any
    /// (needed by files that are only partly generated).
    pub fn generate(&self, current: Option<&str>) -> Result<String> {
        (self.generate)(current)
    }
}

/// The generated table of docs/profiles.md sits between these lines.
pub const PROFILE_TABLE_BEGIN: &str = "<!-- BEGIN GENERATED: profile table (make generate) -->\n";
pub const PROFILE_TABLE_END: &str = "<!-- END GENERATED -->";
/// The generated table of docs/versions.md starts at this line (and ends like the profile table).
pub const VERSION_TABLE_BEGIN: &str = "<!-- BEGIN GENERATED: version table (make generate) -->\n";

/// The files of deploy/gitops/ and the marker each is quoted after in docs/gitops.md.
const GITOPS_SNIPPETS: [(&str, &str); 2] = [
    (
        "<!-- BEGIN GENERATED: deploy/gitops/argocd-cm.yaml (make generate) -->\n",
        include_str!("../../deploy/gitops/argocd-cm.yaml"),
    ),
    (
        "<!-- BEGIN GENERATED: deploy/gitops/flux-kustomization.yaml (make generate) -->\n",
        include_str!("../../deploy/gitops/flux-kustomization.yaml"),
    ),
];

/// Every generated file.
pub fn files() -> Vec<GeneratedFile> {
    let mut files = vec![
        GeneratedFile::new("crds/meshinstalls.meshop.dev.yaml", || {
            Ok(crate::api::crd_yaml())
        }),
        GeneratedFile::new("deploy/crd.yaml", || Ok(crate::api::crd_yaml())),
        GeneratedFile::new("deploy/rbac.yaml", || Ok(crate::deploy::rbac_yaml())),
        GeneratedFile::new(
            "deploy/operator.yaml",
            || Ok(crate::deploy::operator_yaml()),
        ),
        GeneratedFile::section(
            "docs/profiles.md",
            PROFILE_TABLE_BEGIN,
            PROFILE_TABLE_END,
            || Ok(crate::docs::profile_table()?),
        ),
    ];
    // `meshop render --profile <name>` of every profile: a change in rendering shows as a diff.
    for profile in Profile::ALL {
        files.push(GeneratedFile::new(
            format!("operator/tests/golden/{profile}.yaml"),
            move || crate::cli::render(None, Some(profile), None, None),
        ));
    }
    // Every other supported version, rendered with the profile that exercises the most objects.
    let default = crate::versions::default_version();
    for version in crate::versions::supported() {
        if version != default {
            files.push(GeneratedFile::new(
                format!("operator/tests/golden/demo-{version}.yaml"),
                move || crate::cli::render(None, Some(Profile::Demo), Some(&version), None),
            ));
        }
    }
    // The Helm chart, from the same code as deploy/.
    let chart = crate::chart::files().expect("the chart generates");
    for (path, _) in chart {
        files.push(GeneratedFile::new(
            format!("{}/{path}", crate::chart::CHART_DIR),
            move || {
                let files = crate::chart::files()?;
                Ok(files
                    .into_iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, text)| text)
                    .unwrap_or_default())
            },
        ));
    }
    // The shipped GitOps snippets, quoted in docs/gitops.md exactly as tested.
    files.push(GeneratedFile {
        path: "docs/gitops.md".into(),
        generate: Box::new(|current| {
            let mut text = current
                .context("docs/gitops.md must exist: it is partly hand-written")?
                .to_string();
            for (begin, content) in GITOPS_SNIPPETS {
                let section = format!("```yaml\n{content}```\n");
                text = splice(&text, begin, PROFILE_TABLE_END, &section)
                    .context("in docs/gitops.md")?;
            }
            Ok(text)
        }),
    });
    files.push(GeneratedFile::section(
        "docs/versions.md",
        VERSION_TABLE_BEGIN,
        PROFILE_TABLE_END,
        || Ok(crate::docs::version_table()),
    ));
    files
}

/// Writes every generated file under `root` (the repository root); returns the paths that changed.
pub fn write_all(root: &Path) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for file in files() {
        let path = root.join(&file.path);
        let current = std::fs::read_to_string(&path).ok();
        let fresh = file
            .generate(current.as_deref())
            .with_context(|| format!("generate {}", file.path))?;
        if current.as_deref() != Some(fresh.as_str()) {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, fresh).with_context(|| format!("write {}", path.display()))?;
            changed.push(file.path);
        }
    }
    Ok(changed)
}

/// `text` with what lies between the `begin` and `end` lines replaced by `section`.
fn splice(text: &str, begin: &str, end: &str, section: &str) -> Result<String> {
    let Some(start) = text.find(begin).map(|at| at + begin.len()) else {
        bail!("marker {:?} not found", begin.trim_end());
    };
    let Some(stop) = text[start..].find(end).map(|at| start + at) else {
        bail!("marker {end:?} not found after {:?}", begin.trim_end());
    };
    Ok(format!("{}{section}{}", &text[..start], &text[stop..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_section() {
        let text = "intro\n<!-- B -->\nold\n<!-- E -->\noutro\n";
        assert_eq!(
            splice(text, "<!-- B -->\n", "<!-- E -->", "new\n").unwrap(),
            "intro\n<!-- B -->\nnew\n<!-- E -->\noutro\n"
        );
        assert!(splice("no markers", "<!-- B -->\n", "<!-- E -->", "x").is_err());
    }

    #[test]
    fn paths_are_unique() {
        let mut paths: Vec<_> = files().into_iter().map(|f| f.path).collect();
        let n = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), n);
    }
}
