//! Install profiles: YAML data under `profiles/`, embedded in the binary, layered
//! base <- profile <- the MeshInstall's own spec (rules in `docs/profiles.md`).

use serde_json::Value;

use crate::api::{MeshInstallSpec, Profile};

/// The built-in base every profile is layered on.
pub const BASE: &str = include_str!("../../profiles/base.yaml");

/// The YAML data of a profile, as shipped in `profiles/<name>.yaml`.
pub fn data(profile: Profile) -> &'static str {
    match profile {
        Profile::Demo => include_str!("../../profiles/demo.yaml"),
        Profile::Production => include_str!("../../profiles/production.yaml"),
        Profile::Performance => include_str!("../../profiles/performance.yaml"),
        Profile::Minimal => include_str!("../../profiles/minimal.yaml"),
        Profile::Empty => include_str!("../../profiles/empty.yaml"),
        Profile::Ambient => include_str!("../../profiles/ambient.yaml"),
    }
}

/// A profile or merge failure. Profile data ships with meshop, so these point at a meshop bug or
/// at an override that does not fit the API.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile data {name} is not valid YAML: {source}")]
    Data {
        name: String,
        source: serde_yaml::Error,
    },
    #[error("the merged spec for profile {profile} does not fit the MeshInstall API: {source}")]
    Merged {
        profile: Profile,
        source: serde_json::Error,
    },
}

fn parse(name: &str, yaml: &str) -> Result<Value, ProfileError> {
    let value: Value = serde_yaml::from_str(yaml).map_err(|source| ProfileError::Data {
        name: name.to_string(),
        source,
    })?;
    // An empty document is an empty profile.
    Ok(if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    })
}

/// Layers `overlay` onto `base`: objects merge key by key, everything else (lists, scalars)
/// replaces. A null in the overlay means "not set" and keeps the base value.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None if !value.is_null() => {
                        base.insert(key.clone(), value.clone());
                    }
                    None => {}
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// The profile's own spec: base <- profile (without any MeshInstall overrides).
pub fn profile_spec(profile: Profile) -> Result<MeshInstallSpec, ProfileError> {
    layered(&MeshInstallSpec {
        profile,
        ..Default::default()
    })
}

/// The spec with every layer applied: base <- `spec.profile` <- `spec` itself.
pub fn layered(spec: &MeshInstallSpec) -> Result<MeshInstallSpec, ProfileError> {
    let mut merged = parse("base", BASE)?;
    merge(
        &mut merged,
        &parse(spec.profile.name(), data(spec.profile))?,
    );
    let own = serde_json::to_value(spec).map_err(|source| ProfileError::Merged {
        profile: spec.profile,
        source,
    })?;
    merge(&mut merged, &own);
    serde_json::from_value(merged).map_err(|source| ProfileError::Merged {
        profile: spec.profile,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_lists_and_scalars_replace() {
        let mut base = json!({"a": {"x": 1, "y": [1, 2]}, "b": "keep", "c": 1});
        merge(
            &mut base,
            &json!({"a": {"y": [3], "z": true}, "c": null, "d": {"e": 1}}),
        );
        assert_eq!(
            base,
            json!({"a": {"x": 1, "y": [3], "z": true}, "b": "keep", "c": 1, "d": {"e": 1}})
        );
    }

    #[test]
    fn every_profile_parses_and_fits_the_api() {
        for profile in Profile::ALL {
            let spec = profile_spec(profile).unwrap_or_else(|e| panic!("{profile}: {e}"));
            assert_eq!(spec.profile, profile);
        }
    }

    #[test]
    fn enabled_false_wins_over_the_profile() {
        let spec: MeshInstallSpec = serde_yaml::from_str(
            "profile: demo\ncomponents:\n  addons:\n    kiali:\n      enabled: false\n",
        )
        .unwrap();
        let layered = layered(&spec).unwrap();
        let addons = layered.components.unwrap().addons.unwrap();
        assert_eq!(addons.kiali.unwrap().enabled, Some(false));
        assert_eq!(addons.grafana.unwrap().enabled, Some(true));
    }

    #[test]
    fn overrides_merge_key_by_key() {
        let spec: MeshInstallSpec = serde_yaml::from_str(
            "profile: production\ncomponents:\n  istiod:\n    autoscale:\n      maxReplicas: 9\n",
        )
        .unwrap();
        let istiod = layered(&spec).unwrap().components.unwrap().istiod.unwrap();
        let autoscale = istiod.autoscale.unwrap();
        assert_eq!(
            (autoscale.min_replicas, autoscale.max_replicas),
            (Some(2), Some(9))
        );
        assert!(istiod.affinity.is_some(), "the profile's affinity stays");
    }
}
