//! Revisions of a revision-based install (pure): which revisions a pass runs, where the tags
//! point, and when an older revision is retired. No client and no clock: the reconciler passes
//! the previous status, what it observed and the time.
//!
//! The record of which older revisions exist is `status.revisions`, read back each pass. It is
//! the only state that cannot be re-derived from the spec: after `spec.version` moves, the spec no
//! longer says which release the old revision ran, and that release must be rendered unchanged
//! (re-rendering it at the new release would be the in-place upgrade the user did not ask for).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::{MeshInstall, RevisionStatus};
use crate::effective::{Installation, Owner};

/// A revision a pass runs: its name and release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveRevision {
    pub name: String,
    pub version: String,
}

/// The revisions to render: the target first, then every older one the status still lists (a
/// rollback makes an older one the target again, so it is listed once).
pub(crate) fn live_revisions(
    previous: &[RevisionStatus],
    target: &LiveRevision,
) -> Vec<LiveRevision> {
    std::iter::once(target.clone())
        .chain(
            previous
                .iter()
                .filter(|r| r.name != target.name)
                .map(|r| LiveRevision {
                    name: r.name.clone(),
                    version: r.version.clone(),
                }),
        )
        .collect()
}

/// The revision the tags point at. They move to the target only once it is ready (its istiod
/// and everything of its pass applied and ready), so namespaces never follow a tag to an istiod
/// that cannot serve them; until then they stay where the status says they were. A first
/// install has nowhere else to point.
pub(crate) fn active_revision(
    previous: &[RevisionStatus],
    target: &str,
    target_ready: bool,
) -> String {
    if target_ready {
        return target.to_string();
    }
    previous
        .iter()
        .find(|r| r.tags.iter().any(|t| t == crate::revision::DEFAULT))
        .map_or_else(|| target.to_string(), |r| r.name.clone())
}

/// What a pass of a revision-based install runs besides its target, decided from the previous
/// status, the proxies counted on each revision and the time.
#[derive(Clone, Debug)]
pub(crate) struct Older {
    /// The revisions to render: the target first, then the older ones not retired.
    pub live: Vec<LiveRevision>,
    /// The older revisions resolved at their own release, in `live` order.
    pub older: Vec<Installation>,
    /// Older revisions past their grace period, retired this pass.
    pub retired: Vec<String>,
    /// When each older revision was first seen unused, and when it retires.
    pub grace: BTreeMap<String, (Timestamp, Timestamp)>,
    /// An older revision listed in status that no longer resolves (its release left the
    /// catalog): prune must not run, or it would delete a control plane pods may use.
    pub unresolved: Option<String>,
    /// What the tags pointed at before this pass.
    pub previous_active: String,
}

/// The older revisions of `mi` (its `status.revisions`) a pass renders beside `install`'s
/// target: each is retired by [`retirement`] (`using` counts the pods running a revision's
/// proxy) or resolved at its own release. The reconciler (`upgrade::observe`) and
/// `meshop diff -f` both decide with it, so the plan the diff predicts is the one applied.
pub(crate) fn older_revisions(
    mi: &MeshInstall,
    install: &Installation,
    using: impl Fn(&str) -> usize,
    now: Timestamp,
) -> Older {
    let previous: &[RevisionStatus] = mi.status.as_ref().map_or(&[], |s| &s.revisions);
    let target = LiveRevision {
        name: install.revision.clone(),
        version: install.version.clone(),
    };
    let previous_active = active_revision(previous, &target.name, false);
    let mut out = Older {
        live: vec![target.clone()],
        older: Vec::new(),
        retired: Vec::new(),
        grace: BTreeMap::new(),
        unresolved: None,
        previous_active,
    };
    for r in live_revisions(previous, &target).into_iter().skip(1) {
        let since = previous
            .iter()
            .find(|p| p.name == r.name)
            .and_then(|p| p.unused_since.as_ref())
            .map(|t| t.0);
        match retirement(
            &r.name,
            &target.name,
            &out.previous_active,
            using(&r.name),
            since,
            now,
            install.upgrade.grace_period,
        ) {
            Retirement::Retire => {
                out.retired.push(r.name.clone());
                continue;
            }
            Retirement::Grace { since, until } => {
                out.grace.insert(r.name.clone(), (since, until));
            }
            Retirement::InUse => {}
        }
        let owner = Owner {
            name: kube::ResourceExt::name_any(mi),
            uid: mi.metadata.uid.clone(),
        };
        match Installation::resolve_at(owner, &mi.spec, Some(&r.version)) {
            Ok(i) if i.revision == r.name => out.older.push(i),
            _ => out.unresolved = Some(r.name.clone()),
        }
        out.live.push(r);
    }
    out
}

/// What happens to an older revision this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Retirement {
    /// Not retired: pods still use it, or it is the target or what the tags point at.
    InUse,
    /// Unused since `since`; retired once the grace period has passed.
    Grace { since: Timestamp, until: Timestamp },
    /// Unused for the whole grace period: delete it.
    Retire,
}

/// The retirement rule: a revision goes only when it is neither the target nor tagged, no pod
/// uses it, and it has been unused for the whole `grace` period. `unused_since` is when a pass
/// first saw it unused (the status remembers it); any pod using it resets the clock.
pub(crate) fn retirement(
    name: &str,
    target: &str,
    active: &str,
    pods: usize,
    unused_since: Option<Timestamp>,
    now: Timestamp,
    grace: Duration,
) -> Retirement {
    if name == target || name == active || pods > 0 {
        return Retirement::InUse;
    }
    let since = unused_since.unwrap_or(now);
    let Ok(grace) = k8s_openapi::jiff::SignedDuration::try_from(grace) else {
        return Retirement::Grace {
            since,
            until: since,
        };
    };
    let until = since.checked_add(grace).unwrap_or(Timestamp::MAX);
    if now >= until {
        Retirement::Retire
    } else {
        Retirement::Grace { since, until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, version: &str, tags: &[&str]) -> RevisionStatus {
        RevisionStatus {
            name: name.into(),
            version: version.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    fn live(name: &str, version: &str) -> LiveRevision {
        LiveRevision {
            name: name.into(),
            version: version.into(),
        }
    }

    #[test]
    fn the_target_comes_first_and_older_revisions_stay_listed() {
        let previous = [status("1-30-5", "1.30.5", &["default"])];
        assert_eq!(
            live_revisions(&previous, &live("1-31-1", "1.31.1")),
            vec![live("1-31-1", "1.31.1"), live("1-30-5", "1.30.5")]
        );
        // Rollback: the older revision is the target again, listed once.
        let both = [
            status("1-31-1", "1.31.1", &["default"]),
            status("1-30-5", "1.30.5", &[]),
        ];
        assert_eq!(
            live_revisions(&both, &live("1-30-5", "1.30.5")),
            vec![live("1-30-5", "1.30.5"), live("1-31-1", "1.31.1")]
        );
        assert_eq!(live_revisions(&[], &live("1-31-1", "1.31.1")).len(), 1);
    }

    #[test]
    fn older_revisions_are_kept_while_used_retired_after_grace_or_left_unresolved() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let install = crate::controller::plan::test_install(
            "profile: minimal\nversion: 1.31.1\nupdateStrategy: RevisionBased\nupgrade: {retirementGracePeriodSeconds: 60}",
        );
        assert_eq!(install.revision, "1-31-1");
        let mut mi = MeshInstall::new("mesh", serde_yaml::from_str("profile: minimal\nversion: 1.31.1\nupdateStrategy: RevisionBased\nupgrade: {retirementGracePeriodSeconds: 60}").unwrap());
        let unused = |mut r: RevisionStatus, since: i64| {
            r.unused_since = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(
                since,
            )));
            r
        };
        mi.status = Some(crate::api::MeshInstallStatus {
            revisions: vec![
                status("1-31-1", "1.31.1", &[]),
                status("1-30-5", "1.30.5", &["default"]),
                unused(status("1-30-4", "1.30.4", &[]), 0),
                unused(status("1-29-8", "1.29.8", &[]), 950),
            ],
            ..Default::default()
        });
        let pods = |name: &str| usize::from(name == "1-30-5");
        let o = older_revisions(&mi, &install, pods, t(1000));
        // The tags still point at the old revision: the target is not ready yet.
        assert_eq!(o.previous_active, "1-30-5");
        // Unused since 0, grace 60 s, now 1000: retired, so neither live nor planned.
        assert_eq!(o.retired, vec!["1-30-4".to_string()]);
        let live: Vec<&str> = o.live.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(live, vec!["1-31-1", "1-30-5", "1-29-8"]);
        // The older revisions are resolved at their own release, not the target's.
        assert_eq!(o.older.len(), 1);
        assert_eq!(o.older[0].revision, "1-30-5");
        assert_eq!(o.older[0].version, "1.30.5");
        // 1-29-8 is within its grace period, and its release is end-of-life: it still runs,
        // unresolved, so prune must not run.
        assert_eq!(o.grace.get("1-29-8"), Some(&(t(950), t(1010))));
        assert_eq!(o.unresolved.as_deref(), Some("1-29-8"));
        // A first install has no older revision.
        mi.status = None;
        let o = older_revisions(&mi, &install, pods, t(1000));
        assert!(o.older.is_empty() && o.retired.is_empty() && o.unresolved.is_none());
        assert_eq!(o.previous_active, "1-31-1");
    }

    #[test]
    fn tags_move_only_to_a_ready_target() {
        let previous = [
            status("1-31-1", "1.31.1", &[]),
            status("1-30-5", "1.30.5", &["default", "prod"]),
        ];
        assert_eq!(active_revision(&previous, "1-31-1", false), "1-30-5");
        assert_eq!(active_revision(&previous, "1-31-1", true), "1-31-1");
        // A first install points its tags at its only revision, ready or not.
        assert_eq!(active_revision(&[], "1-31-1", false), "1-31-1");
    }

    #[test]
    fn a_revision_retires_only_unused_and_after_the_grace_period() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        let grace = Duration::from_secs(60);
        let rule =
            |name, pods, since, now| retirement(name, "new", "new", pods, since, t(now), grace);
        // Pods use it: kept, whatever the clock says.
        assert_eq!(rule("old", 1, Some(t(0)), 10_000), Retirement::InUse);
        // The target and the tagged revision are never retired.
        assert_eq!(rule("new", 0, Some(t(0)), 10_000), Retirement::InUse);
        assert_eq!(
            retirement("old", "new", "old", 0, Some(t(0)), t(10_000), grace),
            Retirement::InUse
        );
        // First seen unused now: the grace period starts now.
        assert_eq!(
            rule("old", 0, None, 100),
            Retirement::Grace {
                since: t(100),
                until: t(160)
            }
        );
        // One second short of the grace period: still kept.
        assert_eq!(
            rule("old", 0, Some(t(100)), 159),
            Retirement::Grace {
                since: t(100),
                until: t(160)
            }
        );
        assert_eq!(rule("old", 0, Some(t(100)), 160), Retirement::Retire);
        // No grace period: retired as soon as it is unused.
        assert_eq!(
            retirement("old", "new", "new", 0, None, t(5), Duration::ZERO),
            Retirement::Retire
        );
    }
}
