//! Offline commands (render, inject, profile): everything here works without a cluster.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::api::{MeshInstall, MeshInstallSpec, Profile};
use crate::effective::{Installation, Owner};
use crate::render::{self, ComponentId};

/// Reads a MeshInstall from a file, or from standard input for `-`.
pub fn read_mesh(path: &Path) -> Result<MeshInstall> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    let mi: MeshInstall = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a valid MeshInstall", path.display()))?;
    Ok(mi)
}

/// The installation for `meshop render -f FILE` or `meshop render --profile NAME`, with
/// `--istio-version` (a release or a minor) in place of the spec's version when given.
pub fn installation(
    file: Option<&Path>,
    profile: Option<Profile>,
    istio_version: Option<&str>,
) -> Result<Installation> {
    let (owner, mut spec) = match (file, profile) {
        (Some(path), None) => {
            let mi = read_mesh(path)?;
            let name = mi.metadata.name.clone().unwrap_or_else(|| "mesh".into());
            (Owner { name, uid: None }, mi.spec)
        }
        (None, Some(profile)) => (
            Owner {
                name: profile.name().into(),
                uid: None,
            },
            MeshInstallSpec {
                profile,
                ..Default::default()
            },
        ),
        _ => bail!("give either -f FILE or --profile NAME"),
    };
    if let Some(version) = istio_version {
        spec.version = Some(version.to_string());
    }
    Ok(Installation::resolve(owner, &spec)?)
}

/// `meshop render`: every object, as multi-document YAML in apply order.
pub fn render(
    file: Option<&Path>,
    profile: Option<Profile>,
    istio_version: Option<&str>,
    component: Option<&str>,
) -> Result<String> {
    let install = installation(file, profile, istio_version)?;
    let mut objects = render::render(&install)?;
    if let Some(name) = component {
        let Some(id) = ComponentId::from_name(name) else {
            let names: Vec<_> = ComponentId::ALL.iter().map(|c| c.name()).collect();
            bail!(
                "unknown component {name:?}; expected one of {}",
                names.join(", ")
            );
        };
        objects.retain(|o| o.component == id);
    }
    Ok(render::to_yaml(&objects))
}

/// `meshop profile list`.
pub fn profile_list() -> String {
    let mut out = String::new();
    for p in Profile::ALL {
        let first = crate::profiles::data(p)
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .to_string();
        out.push_str(&format!("{:<12} {}\n", p.name(), first));
    }
    out
}

/// `meshop profile show NAME`: the profile layered on the base, as YAML.
pub fn profile_show(profile: Profile) -> Result<String> {
    let spec = crate::profiles::profile_spec(profile)?;
    Ok(crate::yaml::to_string(&spec)?)
}

/// `meshop inject -f FILE [--mesh MESHINSTALL.yaml] [--istio-version V]`: the same injection code
/// path as the webhook.
pub fn inject(file: &Path, mesh: Option<&Path>, istio_version: Option<&str>) -> Result<String> {
    let install = match mesh {
        Some(path) => installation(Some(path), None, istio_version)?,
        None => installation(None, Some(Profile::Demo), istio_version)?,
    };
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let cfg = crate::inject::InjectionConfig::from(&install);
    Ok(crate::inject::inject_yaml_stream(&text, &cfg)?)
}
