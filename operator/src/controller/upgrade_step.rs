//! The decisions of a revision-based pass (pure): from what [`super::upgrade`] observed (the
//! proxies on each revision, the previous status, the workloads, the time), which older revisions
//! retire, where the tags point, which workloads restart now, which events to publish, and the
//! pass's status, outcome and requeue. No client and no clock: `upgrade` reads the proxies and the
//! workloads, calls [`observe`], [`moves`] and [`decide`], and does what they say.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::assess::Observed;
use super::migrate::{self, ProxyPod, RevisionProxy, Workload, WorkloadRef};
use super::revisions::{self, LiveRevision, Retirement};
use super::status::{Outcome, UpgradeReport};
use crate::api::{MeshInstall, MigrationMode, MigrationStatus, RevisionStatus};
use crate::effective::{Installation, Owner};

/// How soon to look again while workloads restart or the tags just moved: application workloads
/// are not watched (they are not meshop's), so their rollouts are polled. Pods are watched
/// ([`super::proxies`]): a proxy that arrives or leaves triggers a pass of its own, so waiting
/// for them polls nothing.
pub(crate) const MIGRATION_REQUEUE: Duration = Duration::from_secs(5);

/// What was seen before planning.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observation {
    /// The revisions to render: the target first, then the older ones not retired.
    pub live: Vec<LiveRevision>,
    /// The older revisions resolved at their own release, in `live` order.
    pub older: Vec<Installation>,
    /// The pods running a proxy, each with the revision it runs.
    pub pods: Vec<ProxyPod>,
    /// Older revisions past their grace period, retired this pass.
    pub retired: Vec<String>,
    /// When each older revision was first seen unused, and when it retires.
    pub grace: BTreeMap<String, (Timestamp, Timestamp)>,
    /// An older revision listed in status that no longer resolves (its release left the
    /// catalog): prune must not run, or it would delete a control plane pods may use.
    pub unresolved: Option<String>,
    /// What the tags pointed at before this pass.
    pub previous_active: String,
    pub now: Timestamp,
}

fn previous(mi: &MeshInstall) -> &[RevisionStatus] {
    mi.status.as_ref().map_or(&[], |s| &s.revisions)
}

/// What the proxies of this install's revisions look like: the target and every older revision
/// the status lists, each with its istiod address in the control plane's namespace.
pub(crate) fn revision_proxies(mi: &MeshInstall, install: &Installation) -> Vec<RevisionProxy> {
    let target = LiveRevision {
        name: install.revision.clone(),
        version: install.version.clone(),
    };
    revisions::live_revisions(previous(mi), &target)
        .into_iter()
        .map(|r| RevisionProxy {
            istiod: crate::istio_proxy::discovery_address(&r.name, &install.namespace),
            namespaces: install.namespaces(),
            name: r.name,
            version: r.version,
        })
        .collect()
}

/// Applies the retirement rule to the older revisions `status.revisions` lists, counting `pods`
/// (the proxies running each revision), and resolves the rest at their own release. The
/// reconciler (`upgrade::observe`, pods from its watch) and `meshop diff -f` (pods listed once,
/// `proxies::list_verified`) both decide with it, so the plan the diff predicts is the one applied.
pub(crate) fn observe(
    mi: &MeshInstall,
    install: &Installation,
    pods: Vec<ProxyPod>,
    now: Timestamp,
) -> Observation {
    let previous = previous(mi);
    let target = LiveRevision {
        name: install.revision.clone(),
        version: install.version.clone(),
    };
    let previous_active = revisions::active_revision(previous, &target.name, false);
    let mut live = vec![target.clone()];
    let mut older = Vec::new();
    let mut retired = Vec::new();
    let mut grace = BTreeMap::new();
    let mut unresolved = None;
    for r in revisions::live_revisions(previous, &target)
        .into_iter()
        .skip(1)
    {
        let using = pods.iter().filter(|p| p.revision == r.name).count();
        let since = previous
            .iter()
            .find(|p| p.name == r.name)
            .and_then(|p| p.unused_since.as_ref())
            .map(|t| t.0);
        match revisions::retirement(
            &r.name,
            &target.name,
            &previous_active,
            using,
            since,
            now,
            install.upgrade.grace_period,
        ) {
            Retirement::Retire => {
                retired.push(r.name.clone());
                continue;
            }
            Retirement::Grace { since, until } => {
                grace.insert(r.name.clone(), (since, until));
            }
            Retirement::InUse => {}
        }
        let owner = Owner {
            name: mi.name_any(),
            uid: mi.metadata.uid.clone(),
        };
        match Installation::resolve_at(owner, &mi.spec, Some(&r.version)) {
            Ok(i) if i.revision == r.name => older.push(i),
            _ => unresolved = Some(r.name.clone()),
        }
        live.push(r);
    }
    Observation {
        live,
        older,
        pods,
        retired,
        grace,
        unresolved,
        previous_active,
        now,
    }
}

/// Where the tags point after this pass, and whether workloads move in it: what must be known
/// before the workloads are listed (they are listed only when they may move).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Moves {
    /// The revision the tags point at after this pass.
    pub active: String,
    /// The tags move in this pass.
    pub tags_moved: bool,
    /// Workloads move in this pass: the tags point at the target and have done so since an
    /// earlier pass (every webhook replica learns of the move from the watched status).
    pub migrating: bool,
}

pub(crate) fn moves(
    mi: &MeshInstall,
    install: &Installation,
    seen: &Observation,
    converged: bool,
) -> Moves {
    let target = install.revision.as_str();
    let active = if converged {
        target.to_string()
    } else {
        seen.previous_active.clone()
    };
    let tags_moved = active != seen.previous_active && !previous(mi).is_empty();
    let migrating = converged && !tags_moved && active == target && seen.live.len() > 1;
    Moves {
        active,
        tags_moved,
        migrating,
    }
}

/// The live revisions whose istiod Deployment this pass found ready.
pub(crate) fn ready_istiods(
    install: &Installation,
    seen: &Observation,
    observed: &[Observed],
) -> BTreeSet<String> {
    seen.live
        .iter()
        .filter(|r| {
            let key = format!(
                "Deployment/{}/{}",
                install.namespace,
                crate::revision::istiod(&r.name)
            );
            observed
                .iter()
                .any(|o| o.key == key && o.readiness.is_ready())
        })
        .map(|r| r.name.clone())
        .collect()
}

/// An event to publish on the MeshInstall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub action: String,
    pub note: String,
}

impl Note {
    fn normal(reason: &'static str, action: String, note: String) -> Note {
        Note {
            warning: false,
            reason,
            action,
            note,
        }
    }
}

/// What the cluster holds that a migration step reads besides the proxies; listed only when
/// [`Moves::migrating`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Workloads {
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub workloads: BTreeMap<WorkloadRef, Workload>,
}

/// The step of one pass.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Step {
    /// Published first: revisions retired and created, tags moved.
    pub events: Vec<Note>,
    /// Restart these (Rollout mode), each followed by its event.
    pub restarts: Vec<(WorkloadRef, Note)>,
    /// The annotation value of `kubectl.kubernetes.io/restartedAt` for the restarts.
    pub stamp: String,
    /// Published after the restarts: a migration that stalled.
    pub stalled: Option<Note>,
    pub report: UpgradeReport,
    /// Replaces the pass's outcome (a migration under way or stalled).
    pub outcome: Option<Outcome>,
    /// Added to the Ready message.
    pub note: Option<String>,
    pub requeue: Option<Duration>,
}

/// Decides the step: the migration plan, the events, `status.revisions` and `status.migration`,
/// the outcome and when to look again.
pub(crate) fn decide(
    mi: &MeshInstall,
    install: &Installation,
    seen: &Observation,
    moves: &Moves,
    ready: &BTreeSet<String>,
    converged: bool,
    cluster: &Workloads,
) -> Step {
    let target = install.revision.as_str();
    let active = moves.active.as_str();
    let previous = previous(mi);
    let mut events = Vec::new();
    for name in &seen.retired {
        events.push(Note::normal(
            "RevisionRetired",
            format!("Retire {name}"),
            format!(
                "retired revision {name}: no pod has used it for {} s",
                install.upgrade.grace_period.as_secs()
            ),
        ));
    }
    if !previous.iter().any(|r| r.name == target) {
        let mut note = format!("running revision {target} (Istio {})", install.version);
        if !previous.is_empty() {
            let names: Vec<&str> = previous.iter().map(|r| r.name.as_str()).collect();
            note.push_str(&format!(
                " beside {}; the tags move to it once it is ready",
                names.join(", ")
            ));
        }
        events.push(Note::normal(
            "RevisionCreated",
            format!("Create {target}"),
            note,
        ));
    }
    if moves.tags_moved {
        events.push(Note::normal(
            "TagsMoved",
            format!("MoveTags {active}"),
            format!(
                "tags {} moved from revision {} to {active}",
                install.upgrade.tags.join(", "),
                seen.previous_active
            ),
        ));
    }

    let names: BTreeSet<String> = seen.live.iter().map(|r| r.name.clone()).collect();
    let tags: BTreeSet<&str> = install.upgrade.tags.iter().map(String::as_str).collect();
    let resolve = |name: &str| -> Option<String> {
        if names.contains(name) {
            Some(name.to_string())
        } else if tags.contains(name) {
            Some(active.to_string())
        } else {
            None
        }
    };
    let skip = BTreeSet::from([install.namespace.clone()]);
    let mode = if moves.migrating {
        install.upgrade.mode
    } else {
        MigrationMode::Manual
    };
    let plan = migrate::plan(&migrate::Inputs {
        target,
        revisions: &names,
        resolve: &resolve,
        namespace_labels: &cluster.namespace_labels,
        skip_namespaces: &skip,
        pods: &seen.pods,
        workloads: &cluster.workloads,
        mode,
        max_concurrent: install.upgrade.max_concurrent,
    });
    let restarts = plan
        .restart
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let note = format!(
                "restarted {w} onto revision {target} ({} of {} pending, at most {} at once)",
                i + 1,
                plan.pending.len(),
                install.upgrade.max_concurrent
            );
            (
                w.clone(),
                Note::normal("WorkloadRestarted", format!("Restart {w} {target}"), note),
            )
        })
        .collect();
    let stalled = plan.failed.as_ref().map(|(w, why)| Note {
        warning: true,
        reason: "MigrationStalled",
        action: format!("Stall {w} {target}"),
        note: format!("{w} did not become ready after its restart onto {target}: {why}"),
    });

    let revision_statuses: Vec<RevisionStatus> = seen
        .live
        .iter()
        .map(|r| {
            let usage = plan.usage.get(&r.name).cloned().unwrap_or_default();
            RevisionStatus {
                name: r.name.clone(),
                version: r.version.clone(),
                tags: if r.name == active {
                    install.upgrade.tags.clone()
                } else {
                    Vec::new()
                },
                ready: ready.contains(&r.name),
                pods: usage.pods as i32,
                workloads: usage.workloads as i32,
                unused_since: seen.grace.get(&r.name).map(|(since, _)| Time(*since)),
            }
        })
        .collect();

    let older_pods: usize = plan
        .usage
        .iter()
        .filter(|(name, _)| name.as_str() != target)
        .map(|(_, u)| u.pods)
        .sum();
    let restarting: Vec<WorkloadRef> = plan
        .restarting
        .iter()
        .chain(plan.restart.iter())
        .cloned()
        .collect();
    let waiting_for: Vec<String> = plan
        .pending
        .iter()
        .filter(|p| !plan.restart.contains(p))
        .map(ToString::to_string)
        .collect();
    let message = match (&plan.failed, install.upgrade.mode) {
        (Some((w, why)), _) => format!(
            "{w} did not become ready after its restart onto revision {target}: {why}; fix it (or roll back spec.version) and the migration resumes"
        ),
        _ if older_pods == 0 => format!("every proxy runs revision {target}"),
        (None, MigrationMode::Manual) => format!(
            "{older_pods} proxies still run an older revision; {} workload(s) move to {target} when restarted (kubectl rollout restart)",
            plan.pending.len()
        ),
        (None, MigrationMode::Rollout) => format!(
            "{older_pods} proxies still run an older revision; restarting {} workload(s), {} waiting",
            restarting.len(),
            waiting_for.len()
        ),
    };
    let message = if plan.unmoved.is_empty() {
        message
    } else {
        let names: Vec<String> = plan.unmoved.iter().map(ToString::to_string).collect();
        format!(
            "{message}; restarted for {target} but still on an older revision (check the namespace's istio.io/rev label): {}",
            names.join(", ")
        )
    };
    let several = seen.live.len() > 1;
    let migration = several.then(|| MigrationStatus {
        target: target.to_string(),
        mode: format!("{:?}", install.upgrade.mode),
        pending: waiting_for.iter().take(migrate::LISTED).cloned().collect(),
        pending_count: waiting_for.len() as i32,
        restarting: restarting
            .iter()
            .take(migrate::LISTED)
            .map(ToString::to_string)
            .collect(),
        pinned_pods: plan.pinned_pods as i32,
        message: Some(message.clone()),
    });

    let rollout = install.upgrade.mode == MigrationMode::Rollout;
    let rolling = moves.migrating && rollout && (!restarting.is_empty() || !waiting_for.is_empty());
    let outcome = if let (true, Some(_)) = (converged, &plan.failed) {
        Some(Outcome::Stalled {
            reason: "MigrationStalled".into(),
            message: message.clone(),
        })
    } else if rolling || (converged && moves.tags_moved && rollout) {
        Some(Outcome::Progressing {
            reason: "MigratingWorkloads".into(),
            message: message.clone(),
        })
    } else {
        None
    };
    let retiring = seen.grace.iter().map(|(name, (_, until))| {
        format!("revision {name} retires at {until} unless a pod uses it")
    });
    let note = several.then(|| {
        std::iter::once(message)
            .chain(retiring)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let until_retirement = seen
        .grace
        .values()
        .filter_map(|(_, until)| Duration::try_from(until.duration_since(seen.now)).ok())
        .min()
        .map(|d| d + Duration::from_secs(1));
    let requeue = if !several {
        None
    } else if outcome.is_some() || moves.tags_moved {
        Some(MIGRATION_REQUEUE)
    } else {
        // Waiting for pods to leave needs no timer (their watch triggers a pass); look again
        // at the retirement, else at the resync.
        until_retirement
    };
    Step {
        events,
        restarts,
        stamp: seen.now.to_string(),
        stalled,
        report: UpgradeReport {
            revisions: revision_statuses,
            migration,
        },
        outcome,
        note,
        requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::migrate::{Rollout, WorkloadKind};
    use serde_json::json;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A RevisionBased MeshInstall asking for `version`, with `revisions` (name, version, tags,
    /// unusedSince) in its status.
    fn mesh(
        version: &str,
        mode: &str,
        revisions: &[(&str, &str, &[&str], Option<i64>)],
    ) -> MeshInstall {
        let revisions: Vec<serde_json::Value> = revisions
            .iter()
            .map(|(name, version, tags, since)| {
                let mut r = json!({"name": name, "version": version, "tags": tags, "ready": true});
                if let Some(s) = since {
                    r["unusedSince"] = json!(t(*s).to_string());
                }
                r
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "meshop.dev/v1alpha1", "kind": "MeshInstall",
            "metadata": {"name": "mesh", "uid": "u1"},
            "spec": {"profile": "minimal", "version": version, "updateStrategy": "RevisionBased",
                "upgrade": {"tags": ["prod"], "workloads": {"mode": mode, "maxConcurrent": 2},
                    "retirementGracePeriodSeconds": 60}},
            "status": {"revisions": revisions}
        }))
        .unwrap()
    }

    fn install(mi: &MeshInstall) -> Installation {
        Installation::from_mesh(mi).unwrap()
    }

    fn pod(ns: &str, revision: &str, owner: Option<&str>) -> ProxyPod {
        ProxyPod {
            namespace: ns.into(),
            labels: BTreeMap::new(),
            revision: revision.into(),
            owner: owner.map(|name| deploy(ns, name)),
        }
    }

    fn deploy(ns: &str, name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// `apps` follows the default tag; Deployments a, b and c run 1-30-5.
    fn cluster() -> (Vec<ProxyPod>, Workloads) {
        let pods = ["a", "b", "c"]
            .iter()
            .map(|n| pod("apps", "1-30-5", Some(n)))
            .collect();
        let workloads = ["a", "b", "c"]
            .iter()
            .map(|n| {
                (
                    deploy("apps", n),
                    Workload {
                        id: deploy("apps", n),
                        restarted_for: None,
                        rollout: Rollout::Complete,
                    },
                )
            })
            .collect();
        let namespace_labels = BTreeMap::from([(
            "apps".to_string(),
            BTreeMap::from([("istio-injection".to_string(), "enabled".to_string())]),
        )]);
        (
            pods,
            Workloads {
                namespace_labels,
                workloads,
            },
        )
    }

    struct Pass {
        seen: Observation,
        moves: Moves,
        step: Step,
    }

    fn pass(mi: &MeshInstall, pods: Vec<ProxyPod>, converged: bool, now: i64) -> Pass {
        let (_, cluster) = cluster();
        let install = install(mi);
        let seen = observe(mi, &install, pods, t(now));
        let moves = moves(mi, &install, &seen, converged);
        let ready: BTreeSet<String> = seen.live.iter().map(|r| r.name.clone()).collect();
        let listed = if moves.migrating {
            cluster
        } else {
            Workloads::default()
        };
        let step = decide(mi, &install, &seen, &moves, &ready, converged, &listed);
        Pass { seen, moves, step }
    }

    fn reasons(step: &Step) -> Vec<&str> {
        step.events.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn a_first_install_creates_its_revision_and_tags_it() {
        let mi = mesh("1.30.5", "Manual", &[]);
        let p = pass(&mi, Vec::new(), true, 100);
        assert_eq!(reasons(&p.step), ["RevisionCreated"]);
        assert!(!p.moves.tags_moved, "nothing to move from");
        assert!(!p.moves.migrating);
        let r = &p.step.report.revisions;
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].name.as_str(), r[0].tags.clone()),
            ("1-30-5", vec!["default".to_string(), "prod".to_string()])
        );
        assert!(p.step.report.migration.is_none());
        assert_eq!(p.step.outcome, None);
        assert_eq!(
            p.step.requeue, None,
            "one revision: nothing to look at again"
        );
    }

    #[test]
    fn the_tags_move_only_once_the_new_revision_converged() {
        let mi = mesh(
            "1.31.1",
            "Rollout",
            &[("1-30-5", "1.30.5", &["default", "prod"], None)],
        );
        let (pods, _) = cluster();
        // Not converged yet: the new revision is created beside the old, the tags stay.
        let p = pass(&mi, pods.clone(), false, 100);
        assert_eq!(reasons(&p.step), ["RevisionCreated"]);
        assert_eq!(p.moves.active, "1-30-5");
        let tags: Vec<(&str, usize)> = p
            .step
            .report
            .revisions
            .iter()
            .map(|r| (r.name.as_str(), r.tags.len()))
            .collect();
        assert_eq!(tags, [("1-31-1", 0), ("1-30-5", 2)]);
        assert!(p.step.restarts.is_empty());
        // Converged: the tags move, and nothing restarts in the same pass (the webhooks learn
        // of the move from the status this pass writes).
        let p = pass(&mi, pods, true, 100);
        assert!(p.moves.tags_moved);
        assert!(!p.moves.migrating);
        assert_eq!(reasons(&p.step), ["RevisionCreated", "TagsMoved"]);
        assert_eq!(
            p.step.events[1].note,
            "tags default, prod moved from revision 1-30-5 to 1-31-1"
        );
        assert!(p.step.restarts.is_empty());
        assert!(matches!(
            &p.step.outcome,
            Some(Outcome::Progressing { reason, .. }) if reason == "MigratingWorkloads"
        ));
        assert_eq!(p.step.requeue, Some(MIGRATION_REQUEUE));
    }

    #[test]
    fn rollout_restarts_at_most_the_bound_once_the_tags_have_moved() {
        let mi = mesh(
            "1.31.1",
            "Rollout",
            &[
                ("1-31-1", "1.31.1", &["default", "prod"], None),
                ("1-30-5", "1.30.5", &[], None),
            ],
        );
        let (pods, _) = cluster();
        let p = pass(&mi, pods, true, 100);
        assert!(p.moves.migrating);
        assert!(reasons(&p.step).is_empty(), "{:?}", p.step.events);
        let restarted: Vec<String> = p.step.restarts.iter().map(|(w, _)| w.to_string()).collect();
        assert_eq!(restarted, ["Deployment/apps/a", "Deployment/apps/b"]);
        assert_eq!(
            p.step.restarts[0].1.note,
            "restarted Deployment/apps/a onto revision 1-31-1 (1 of 3 pending, at most 2 at once)"
        );
        assert_eq!(p.step.stamp, t(100).to_string());
        let m = p.step.report.migration.as_ref().unwrap();
        assert_eq!(m.restarting, ["Deployment/apps/a", "Deployment/apps/b"]);
        assert_eq!(m.pending, ["Deployment/apps/c"]);
        assert!(matches!(p.step.outcome, Some(Outcome::Progressing { .. })));
        let old = &p.step.report.revisions[1];
        assert_eq!(
            (old.pods, old.workloads, old.unused_since.clone()),
            (3, 3, None)
        );
    }

    #[test]
    fn manual_mode_reports_and_restarts_nothing() {
        let mi = mesh(
            "1.31.1",
            "Manual",
            &[
                ("1-31-1", "1.31.1", &["default", "prod"], None),
                ("1-30-5", "1.30.5", &[], None),
            ],
        );
        let (pods, _) = cluster();
        let p = pass(&mi, pods, true, 100);
        assert!(p.moves.migrating);
        assert!(p.step.restarts.is_empty());
        assert_eq!(p.step.outcome, None, "a Manual migration is Ready");
        let m = p.step.report.migration.as_ref().unwrap();
        assert_eq!(m.pending_count, 3);
        assert_eq!(
            m.message.as_deref(),
            Some(
                "3 proxies still run an older revision; 3 workload(s) move to 1-31-1 when restarted (kubectl rollout restart)"
            )
        );
        assert_eq!(p.step.note.as_deref(), m.message.as_deref());
        // Waiting for people to restart their workloads polls nothing: the proxies' watch
        // triggers a pass when one moves; the resync looks anyway.
        assert_eq!(p.step.requeue, None);
    }

    #[test]
    fn a_failed_restart_stalls_the_migration_with_a_warning() {
        let mi = mesh(
            "1.31.1",
            "Rollout",
            &[
                ("1-31-1", "1.31.1", &["default", "prod"], None),
                ("1-30-5", "1.30.5", &[], None),
            ],
        );
        let (pods, mut cluster) = cluster();
        cluster
            .workloads
            .get_mut(&deploy("apps", "a"))
            .unwrap()
            .restarted_for = Some("1-31-1".into());
        cluster
            .workloads
            .get_mut(&deploy("apps", "a"))
            .unwrap()
            .rollout = Rollout::Failed("deadline exceeded".into());
        let install = install(&mi);
        let seen = observe(&mi, &install, pods, t(100));
        let moves = moves(&mi, &install, &seen, true);
        let step = decide(
            &mi,
            &install,
            &seen,
            &moves,
            &BTreeSet::new(),
            true,
            &cluster,
        );
        assert!(step.restarts.is_empty());
        let stalled = step.stalled.as_ref().unwrap();
        assert!(stalled.warning);
        assert_eq!(stalled.reason, "MigrationStalled");
        assert!(matches!(
            &step.outcome,
            Some(Outcome::Stalled { reason, message })
                if reason == "MigrationStalled" && message.contains("Deployment/apps/a did not become ready")
        ));
        // No istiod was observed ready.
        assert!(step.report.revisions.iter().all(|r| !r.ready));
    }

    #[test]
    fn an_unused_revision_gets_its_grace_period_then_retires() {
        let revisions: &[(&str, &str, &[&str], Option<i64>)] = &[
            ("1-31-1", "1.31.1", &["default", "prod"], None),
            ("1-30-5", "1.30.5", &[], None),
        ];
        let mi = mesh("1.31.1", "Manual", revisions);
        // Still used by a pod: kept, no clock.
        let p = pass(&mi, vec![pod("apps", "1-30-5", Some("a"))], true, 100);
        assert!(p.seen.grace.is_empty() && p.seen.retired.is_empty());
        // Unused from now: grace until now + 60 s; the note says when, and the pass looks again
        // just after.
        let p = pass(&mi, Vec::new(), true, 100);
        assert_eq!(p.seen.grace["1-30-5"], (t(100), t(160)));
        assert_eq!(p.step.report.revisions[1].unused_since, Some(Time(t(100))));
        assert!(
            p.step
                .note
                .as_ref()
                .unwrap()
                .contains("revision 1-30-5 retires at")
        );
        assert_eq!(p.step.requeue, Some(Duration::from_secs(61)));
        // The status remembers since when: the clock keeps running.
        let mi = mesh(
            "1.31.1",
            "Manual",
            &[
                ("1-31-1", "1.31.1", &["default", "prod"], None),
                ("1-30-5", "1.30.5", &[], Some(100)),
            ],
        );
        let p = pass(&mi, Vec::new(), true, 145);
        assert_eq!(p.seen.grace["1-30-5"], (t(100), t(160)));
        assert_eq!(p.step.requeue, Some(Duration::from_secs(16)));
        // Past the grace period: retired, not planned, an event.
        let p = pass(&mi, Vec::new(), true, 160);
        assert_eq!(p.seen.retired, ["1-30-5"]);
        assert_eq!(p.seen.live.len(), 1);
        assert!(p.seen.older.is_empty());
        assert_eq!(reasons(&p.step), ["RevisionRetired"]);
        assert_eq!(p.step.report.revisions.len(), 1);
        assert!(p.step.report.migration.is_none());
    }

    #[test]
    fn an_older_revision_the_catalog_no_longer_knows_is_kept_unresolved() {
        let mi = mesh(
            "1.31.1",
            "Manual",
            &[
                ("1-31-1", "1.31.1", &["default"], None),
                ("1-2-3", "1.2.3", &[], None),
            ],
        );
        let p = pass(&mi, vec![pod("apps", "1-2-3", None)], true, 100);
        assert_eq!(p.seen.unresolved.as_deref(), Some("1-2-3"));
        assert_eq!(
            p.seen.live.len(),
            2,
            "still listed, never retired while used"
        );
        assert!(p.seen.older.is_empty());
    }
}
