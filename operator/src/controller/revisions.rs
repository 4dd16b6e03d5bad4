//! Revisions of a revision-based install (pure): which revisions a pass runs, where the tags
//! point, and when an older revision is retired. No client and no clock: the reconciler passes
//! the previous status, what it observed and the time.
//!
//! The record of which older revisions exist is `status.revisions`, read back each pass. It is
//! the only state that cannot be re-derived from the spec: after `spec.version` moves, the spec no
//! longer says which release the old revision ran, and that release must be rendered unchanged
//! (re-rendering it at the new release would be the in-place upgrade the user did not ask for).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::RevisionStatus;

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
