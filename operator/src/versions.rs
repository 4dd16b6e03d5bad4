//! The Istio versions meshop knows, as data (`profiles/versions.yaml`, embedded in the binary).
//!
//! A version is supported when meshop's rendering and injection have been written against it;
//! an end-of-life or unknown version is refused in status rather than guessed at. A minor alias
//! (`1.31`) means the newest known patch of that minor; no version means the newest supported one.
//! Adding a release is a line in the YAML (docs/versions.md).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

const CATALOG_YAML: &str = include_str!("../../profiles/versions.yaml");

/// An Istio release number, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `major.minor`, as aliases and minors are written.
    pub fn minor_name(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// How many minors `self` is ahead of `other` (negative: behind). Only meaningful within one
    /// major, which is all Istio has had.
    pub fn minors_ahead_of(&self, other: &Version) -> i64 {
        (i64::from(self.major) - i64::from(other.major)) * 1000 + i64::from(self.minor)
            - i64::from(other.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What a `spec.version` string can be: a full version or a minor alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    Exact(Version),
    Minor { major: u32, minor: u32 },
}

impl FromStr for Requested {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || VersionError::Malformed(s.to_string());
        let parts: Vec<&str> = s.split('.').collect();
        let number = |p: &str| {
            // Digits only: no sign, no leading `v`, no pre-release suffix.
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
                return Err(malformed());
            }
            p.parse::<u32>().map_err(|_| malformed())
        };
        match parts.as_slice() {
            [major, minor] => Ok(Requested::Minor {
                major: number(major)?,
                minor: number(minor)?,
            }),
            [major, minor, patch] => Ok(Requested::Exact(Version {
                major: number(major)?,
                minor: number(minor)?,
                patch: number(patch)?,
            })),
            _ => Err(malformed()),
        }
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Requested>()? {
            Requested::Exact(v) => Ok(v),
            Requested::Minor { .. } => Err(VersionError::Malformed(s.to_string())),
        }
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a minor still gets fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Support {
    Supported,
    EndOfLife,
}

/// The Kubernetes minors a minor of Istio supports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesRange {
    pub min: String,
    pub max: String,
}

/// One patch release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub version: Version,
    /// Release date (ISO 8601), where known.
    pub released: Option<String>,
    /// Why this release is refused although its minor is supported (a security fix in a newer
    /// patch); None for an installable release.
    #[serde(default)]
    pub withdrawn: Option<String>,
}

/// One minor line and the facts rendering and injection need about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Minor {
    pub minor: String,
    pub released: Option<String>,
    pub support: Support,
    pub end_of_life: Option<String>,
    #[serde(default)]
    pub kubernetes: Option<KubernetesRange>,
    /// Istio's own default for `ENABLE_NATIVE_SIDECARS` is `auto` from this minor on.
    pub native_sidecars_by_default: bool,
    /// Images exist only on docker.io/istio.
    #[serde(default)]
    pub images_only_on_docker_hub: bool,
    /// The Gateway API release (bundle version) this minor is built against: the CRDs meshop
    /// installs for it where ambient mode needs them and nobody else installed them
    /// (`render::gateway_api_crds`).
    #[serde(default, rename = "gatewayAPI")]
    pub gateway_api: Option<String>,
    /// Newest first.
    pub patches: Vec<Patch>,
}

impl Minor {
    fn newest(&self) -> Option<&Patch> {
        self.patches.iter().max_by_key(|p| p.version)
    }

    /// The newest release that is not withdrawn.
    fn newest_installable(&self) -> Option<&Patch> {
        self.patches
            .iter()
            .filter(|p| p.withdrawn.is_none())
            .max_by_key(|p| p.version)
    }

    fn is(&self, major: u32, minor: u32) -> bool {
        self.minor == format!("{major}.{minor}")
    }
}

/// Every version meshop knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub minors: Vec<Minor>,
}

/// Why a requested version cannot be installed. Each is the user's to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "{0:?} is not an Istio version: write a release such as 1.31.1, or a minor such as 1.31"
    )]
    Malformed(String),
    #[error("Istio {requested} is end of life{}; supported versions: {supported}", eol_since(.end_of_life))]
    EndOfLife {
        requested: String,
        end_of_life: Option<String>,
        supported: String,
    },
    #[error("Istio {requested} is not a version meshop knows; supported versions: {supported}")]
    Unknown {
        requested: String,
        supported: String,
    },
    #[error("Istio {requested} is withdrawn: {reason}; use {instead}")]
    Withdrawn {
        requested: String,
        reason: String,
        instead: String,
    },
}

fn eol_since(date: &Option<String>) -> String {
    date.as_ref()
        .map(|d| format!(" since {d}"))
        .unwrap_or_default()
}

/// A version as resolved from a spec: the release, how it was asked for, and its minor's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub version: Version,
    /// The alias it came from (`1.31`, or `""` for "no version given"), if any.
    pub alias: Option<String>,
    pub minor: &'static Minor,
}

/// Why moving the running control plane from one version to another is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkewError {
    #[error(
        "upgrading Istio {from} to {to} skips {skipped} minor(s); Istio upgrades one minor at a time: set version {next} first, wait for Ready, then {to}"
    )]
    SkipsMinors {
        from: Version,
        to: Version,
        skipped: i64,
        next: String,
    },
    #[error(
        "downgrading Istio {from} to {to} goes back {back} minors; the control plane may run at most one minor behind what it installed: set version {previous} first, wait for Ready, then {to}"
    )]
    DowngradeTooFar {
        from: Version,
        to: Version,
        back: i64,
        previous: String,
    },
}

/// The catalog embedded in the binary.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let catalog: Catalog =
            serde_yaml::from_str(CATALOG_YAML).expect("profiles/versions.yaml is checked by tests");
        catalog
    })
}

impl Catalog {
    fn find_minor(&self, major: u32, minor: u32) -> Option<&Minor> {
        self.minors.iter().find(|m| m.is(major, minor))
    }

    /// Supported versions, newest first.
    pub fn supported(&self) -> Vec<Version> {
        let mut versions: Vec<Version> = self
            .minors
            .iter()
            .filter(|m| m.support == Support::Supported)
            .flat_map(|m| m.patches.iter().filter(|p| p.withdrawn.is_none()))
            .map(|p| p.version)
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        versions
    }

    /// The version installed when `spec.version` is left out: the newest supported one.
    pub fn default_version(&self) -> Version {
        self.supported()
            .first()
            .copied()
            .expect("the catalog has a supported version (checked by tests)")
    }

    fn supported_list(&self) -> String {
        self.supported()
            .iter()
            .map(Version::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves `spec.version`: an exact supported release, a minor alias (its newest known patch),
    /// or nothing (the newest supported release).
    pub fn resolve(&'static self, requested: Option<&str>) -> Result<Resolved, VersionError> {
        let Some(text) = requested else {
            let version = self.default_version();
            return Ok(Resolved {
                version,
                alias: Some(String::new()),
                minor: self
                    .find_minor(version.major, version.minor)
                    .expect("the default comes from the catalog"),
            });
        };
        let unknown = || VersionError::Unknown {
            requested: text.to_string(),
            supported: self.supported_list(),
        };
        let (major, minor_number, exact) = match text.trim().parse::<Requested>()? {
            Requested::Exact(v) => (v.major, v.minor, Some(v)),
            Requested::Minor { major, minor } => (major, minor, None),
        };
        let minor = self.find_minor(major, minor_number).ok_or_else(unknown)?;
        let patch = match exact {
            Some(v) => minor.patches.iter().find(|p| p.version == v),
            None => minor.newest_installable().or_else(|| minor.newest()),
        }
        .ok_or_else(unknown)?;
        if minor.support == Support::EndOfLife {
            return Err(VersionError::EndOfLife {
                requested: text.to_string(),
                end_of_life: minor.end_of_life.clone(),
                supported: self.supported_list(),
            });
        }
        if let Some(reason) = &patch.withdrawn {
            return Err(VersionError::Withdrawn {
                requested: text.to_string(),
                reason: reason.clone(),
                instead: minor
                    .newest_installable()
                    .map(|p| p.version.to_string())
                    .unwrap_or_else(|| self.supported_list()),
            });
        }
        Ok(Resolved {
            version: patch.version,
            alias: exact.is_none().then(|| text.to_string()),
            minor,
        })
    }

    /// Whether the control plane may move from `from` (what is running) to `to`. Istio upgrades one
    /// minor at a time and lets the control plane run one minor ahead of the data plane, never
    /// behind: so no skipped minor going up, and at most one minor going down (a rollback).
    pub fn check_move(&self, from: Version, to: Version) -> Result<(), SkewError> {
        let ahead = to.minors_ahead_of(&from);
        if ahead > 1 {
            return Err(SkewError::SkipsMinors {
                from,
                to,
                skipped: ahead - 1,
                next: format!("{}.{}", from.major, from.minor + 1),
            });
        }
        if ahead < -1 {
            return Err(SkewError::DowngradeTooFar {
                from,
                to,
                back: -ahead,
                previous: format!("{}.{}", from.major, from.minor.saturating_sub(1)),
            });
        }
        Ok(())
    }
}

/// The newest supported version, as a string (for messages and defaults).
pub fn default_version() -> String {
    catalog().default_version().to_string()
}

/// Supported versions, newest first, as strings.
pub fn supported() -> Vec<String> {
    catalog()
        .supported()
        .iter()
        .map(Version::to_string)
        .collect()
}

/// `meshop version`: supported and end-of-life versions with their dates.
pub fn table() -> String {
    let mut out = String::from("MINOR  SUPPORT      RELEASED    END OF LIFE  PATCHES\n");
    for m in &catalog().minors {
        let patches: Vec<String> = m
            .patches
            .iter()
            .map(|p| match p.withdrawn {
                Some(_) => format!("{} (withdrawn)", p.version),
                None => p.version.to_string(),
            })
            .collect();
        out.push_str(&format!(
            "{:<6} {:<12} {:<11} {:<12} {}\n",
            m.minor,
            match m.support {
                Support::Supported => "supported",
                Support::EndOfLife => "end-of-life",
            },
            m.released.as_deref().unwrap_or("-"),
            m.end_of_life.as_deref().unwrap_or("-"),
            patches.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn the_catalog_is_well_formed() {
        let c = catalog();
        assert!(!c.supported().is_empty());
        let mut seen = std::collections::BTreeSet::new();
        for m in &c.minors {
            assert!(!m.patches.is_empty(), "{} has no patch", m.minor);
            if m.support == Support::Supported {
                assert!(
                    m.newest_installable().is_some(),
                    "{}: nothing installable",
                    m.minor
                );
            }
            for p in &m.patches {
                assert_eq!(
                    p.version.minor_name(),
                    m.minor,
                    "{} listed under {}",
                    p.version,
                    m.minor
                );
                assert!(seen.insert(p.version), "{} listed twice", p.version);
            }
            if m.support == Support::Supported {
                assert!(
                    m.kubernetes.is_some(),
                    "{}: a supported minor names its Kubernetes range",
                    m.minor
                );
            }
        }
        // Newest first, so docs and `meshop version` read top-down.
        let minors: Vec<Version> = c
            .minors
            .iter()
            .map(|m| m.newest().unwrap().version)
            .collect();
        assert!(minors.windows(2).all(|w| w[0] > w[1]), "{minors:?}");
    }

    #[test]
    fn supported_lines_today_are_1_30_and_1_31() {
        let c = catalog();
        assert_eq!(c.default_version(), v("1.31.1"));
        let supported = c.supported();
        assert!(supported.contains(&v("1.30.5")) && supported.contains(&v("1.31.1")));
        assert!(supported.iter().all(|s| s.minor >= 30), "{supported:?}");
    }

    #[test]
    fn aliases_resolve_to_the_newest_known_patch() {
        let c = catalog();
        let none = c.resolve(None).unwrap();
        assert_eq!(none.version, v("1.31.1"));
        assert_eq!(none.alias.as_deref(), Some(""));
        let minor = c.resolve(Some("1.30")).unwrap();
        assert_eq!(minor.version, v("1.30.5"));
        assert_eq!(minor.alias.as_deref(), Some("1.30"));
        let exact = c.resolve(Some("1.30.5")).unwrap();
        assert_eq!((exact.version, exact.alias), (v("1.30.5"), None));
    }

    #[test]
    fn end_of_life_versions_are_refused_naming_the_supported_ones() {
        let c = catalog();
        for old in ["1.29.8", "1.29", "1.28.2", "1.26"] {
            let err = c.resolve(Some(old)).unwrap_err();
            assert!(
                matches!(err, VersionError::EndOfLife { .. }),
                "{old}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains("end of life"), "{message}");
            assert!(
                message.contains("1.31.1") && message.contains("1.30.5"),
                "{message}"
            );
        }
        assert!(
            c.resolve(Some("1.28.2"))
                .unwrap_err()
                .to_string()
                .contains("since 2026-07-01")
        );
    }

    #[test]
    fn a_withdrawn_patch_is_refused_naming_its_fix() {
        let c = catalog();
        let err = c.resolve(Some("1.31.0")).unwrap_err();
        assert!(matches!(err, VersionError::Withdrawn { .. }), "{err}");
        assert!(err.to_string().contains("use 1.31.1"), "{err}");
        assert!(!c.supported().contains(&v("1.31.0")));
        // The alias never lands on it.
        assert_eq!(c.resolve(Some("1.31")).unwrap().version, v("1.31.1"));
    }

    #[test]
    fn unknown_and_malformed_versions_are_refused_not_guessed() {
        let c = catalog();
        for unknown in ["1.31.9", "1.40", "1.32.0", "2.0.0"] {
            assert!(
                matches!(c.resolve(Some(unknown)), Err(VersionError::Unknown { .. })),
                "{unknown}"
            );
        }
        for bad in [
            "",
            "latest",
            "v1.31.1",
            "1.31.1-rc.0",
            "1",
            "1.31.1.0",
            "1.-3",
            "1. 31",
        ] {
            assert!(
                matches!(c.resolve(Some(bad)), Err(VersionError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn upgrades_go_one_minor_at_a_time_and_roll_back_at_most_one() {
        let c = catalog();
        assert!(c.check_move(v("1.30.5"), v("1.31.1")).is_ok());
        assert!(
            c.check_move(v("1.31.1"), v("1.31.0")).is_ok(),
            "patch rollback"
        );
        assert!(
            c.check_move(v("1.31.1"), v("1.30.5")).is_ok(),
            "one-minor rollback"
        );
        let skip = c.check_move(v("1.29.8"), v("1.31.1")).unwrap_err();
        assert!(
            skip.to_string().contains("set version 1.30 first"),
            "{skip}"
        );
        let down = c.check_move(v("1.31.1"), v("1.29.8")).unwrap_err();
        assert!(
            down.to_string().contains("set version 1.30 first"),
            "{down}"
        );
    }

    #[test]
    fn versions_order_numerically() {
        assert!(v("1.30.10") > v("1.30.9"));
        assert!(v("1.31.0") > v("1.30.10"));
        assert_eq!(v("1.31.1").minors_ahead_of(&v("1.29.0")), 2);
    }

    #[test]
    fn the_version_table_lists_every_minor_with_dates() {
        let table = table();
        assert!(table.contains("1.31   supported    2026-08-31"), "{table}");
        assert!(
            table.contains("1.28   end-of-life  2025-11-05  2026-07-01"),
            "{table}"
        );
    }
}
