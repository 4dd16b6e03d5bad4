//! The revision-based steps of a pass (I/O around the pure [`revisions`] and [`migrate`]
//! modules): count the proxies on each revision, retire unused old revisions, move the tags once
//! the target is ready, and restart workloads onto it. See docs/upgrades.md.
//!
//! Order within a pass: [`observe`] (before planning, so a retired revision is simply not
//! planned and prune deletes it) -> plan, apply, prune -> [`advance`] (tags and workloads, only
//! once everything planned is ready) -> status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::info;

use super::assess::Observed;
use super::migrate::{self, ProxyPod, Workload, WorkloadKind, WorkloadRef};
use super::revisions::{self, LiveRevision};
use super::status::{Outcome, UpgradeReport};
use super::{Context, FIELD_MANAGER};
use crate::api::{MeshInstall, MigrationMode, MigrationStatus, RevisionStatus};
use crate::effective::Installation;

/// How soon to look again while workloads restart or a revision waits to retire: pods and
/// application workloads are not watched (they are not meshop's), so the pass polls.
const MIGRATION_REQUEUE: Duration = Duration::from_secs(5);
/// How often an upgrade left to the platform team (Manual mode) is looked at again.
const MANUAL_REQUEUE: Duration = Duration::from_secs(30);

/// What [`observe`] found before planning.
pub(crate) struct Observation {
    /// The revisions to render: the target first, then the older ones not retired.
    pub live: Vec<LiveRevision>,
    /// The older revisions resolved at their own release, in `live` order.
    pub older: Vec<Installation>,
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

/// Lists the proxies, applies the retirement rule to the older revisions and resolves the rest
/// ([`revisions::older_revisions`], which `meshop diff -f` uses too).
pub(crate) async fn observe(
    client: &Client,
    mi: &MeshInstall,
    install: &Installation,
) -> Result<Observation, kube::Error> {
    let now = Timestamp::now();
    let pods = list_proxy_pods(client).await?;
    let using = |name: &str| pods.iter().filter(|p| p.revision == name).count();
    let o = revisions::older_revisions(mi, install, using, now);
    Ok(Observation {
        live: o.live,
        older: o.older,
        pods,
        retired: o.retired,
        grace: o.grace,
        unresolved: o.unresolved,
        previous_active: o.previous_active,
        now,
    })
}

/// Every pod running a proxy, from a metadata-only list (paged, so memory stays bounded).
pub(crate) async fn list_proxy_pods(client: &Client) -> Result<Vec<ProxyPod>, kube::Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list_metadata(&params).await?;
        out.extend(
            page.items
                .iter()
                .filter_map(|p| ProxyPod::from_meta(&p.metadata)),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// What [`advance`] concluded.
pub(crate) struct Advance {
    pub report: UpgradeReport,
    /// Replaces the pass's outcome (a migration under way or stalled).
    pub outcome: Option<Outcome>,
    /// Added to the Ready message.
    pub note: Option<String>,
    pub requeue: Option<Duration>,
}

/// Moves the tags to the target once the pass `converged`, restarts workloads onto it (Rollout
/// mode, once the tags moved in an earlier pass so every webhook replica has seen them), and
/// builds `status.revisions` and `status.migration`.
pub(crate) async fn advance(
    ctx: &Context,
    mi: &MeshInstall,
    install: &Installation,
    seen: &Observation,
    observed: &[Observed],
    converged: bool,
) -> Result<Advance, kube::Error> {
    let target = install.revision.as_str();
    let active = if converged {
        target.to_string()
    } else {
        seen.previous_active.clone()
    };
    for name in &seen.retired {
        let note = format!(
            "retired revision {name}: no pod has used it for {} s",
            install.upgrade.grace_period.as_secs()
        );
        info!(revision = %name, "revision retired");
        ctx.event_on(
            mi,
            EventType::Normal,
            "RevisionRetired",
            &format!("Retire {name}"),
            &note,
        )
        .await;
    }
    let previous: &[RevisionStatus] = mi.status.as_ref().map_or(&[], |s| &s.revisions);
    if !previous.iter().any(|r| r.name == target) {
        let mut note = format!("running revision {target} (Istio {})", install.version);
        if !previous.is_empty() {
            let names: Vec<&str> = previous.iter().map(|r| r.name.as_str()).collect();
            note.push_str(&format!(
                " beside {}; the tags move to it once it is ready",
                names.join(", ")
            ));
        }
        ctx.event_on(
            mi,
            EventType::Normal,
            "RevisionCreated",
            &format!("Create {target}"),
            &note,
        )
        .await;
    }
    let tags_moved = active != seen.previous_active && !previous.is_empty();
    if tags_moved {
        let note = format!(
            "tags {} moved from revision {} to {active}",
            install.upgrade.tags.join(", "),
            seen.previous_active
        );
        ctx.event_on(
            mi,
            EventType::Normal,
            "TagsMoved",
            &format!("MoveTags {active}"),
            &note,
        )
        .await;
    }

    let names: BTreeSet<String> = seen.live.iter().map(|r| r.name.clone()).collect();
    let tags: BTreeSet<&str> = install.upgrade.tags.iter().map(String::as_str).collect();
    let resolve = |name: &str| -> Option<String> {
        if names.contains(name) {
            Some(name.to_string())
        } else if tags.contains(name) {
            Some(active.clone())
        } else {
            None
        }
    };
    // Workloads move only once the tags point at the target and have done so since an earlier
    // pass: the webhooks (every operator replica) learn of the move from the watched status.
    let migrating = converged && !tags_moved && active == target && seen.live.len() > 1;
    let namespaces = if migrating {
        list_namespace_labels(&ctx.client).await?
    } else {
        BTreeMap::new()
    };
    let workloads = if migrating {
        list_workloads(&ctx.client, seen.now).await?
    } else {
        BTreeMap::new()
    };
    let skip = BTreeSet::from([install.namespace.clone()]);
    let mode = if migrating {
        install.upgrade.mode
    } else {
        MigrationMode::Manual
    };
    let plan = migrate::plan(&migrate::Inputs {
        target,
        revisions: &names,
        resolve: &resolve,
        namespace_labels: &namespaces,
        skip_namespaces: &skip,
        pods: &seen.pods,
        workloads: &workloads,
        mode,
        max_concurrent: install.upgrade.max_concurrent,
    });
    let stamp = seen.now.to_string();
    for w in &plan.restart {
        restart(&ctx.client, w, target, &stamp).await?;
        let note = format!(
            "restarted {w} onto revision {target} ({} of {} pending, at most {} at once)",
            plan.restart.iter().position(|r| r == w).unwrap_or(0) + 1,
            plan.pending.len(),
            install.upgrade.max_concurrent
        );
        info!(workload = %w, %target, "workload restarted");
        ctx.event_on(
            mi,
            EventType::Normal,
            "WorkloadRestarted",
            &format!("Restart {w} {target}"),
            &note,
        )
        .await;
    }
    if let Some((w, why)) = &plan.failed {
        let note = format!("{w} did not become ready after its restart onto {target}: {why}");
        ctx.event_on(
            mi,
            EventType::Warning,
            "MigrationStalled",
            &format!("Stall {w} {target}"),
            &note,
        )
        .await;
    }

    let istiod_ready = |name: &str| {
        let key = format!(
            "Deployment/{}/{}",
            install.namespace,
            crate::revision::istiod(name)
        );
        observed
            .iter()
            .any(|o| o.key == key && o.readiness.is_ready())
    };
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
                ready: istiod_ready(&r.name),
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
    let migration = (seen.live.len() > 1).then(|| MigrationStatus {
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

    let rolling = migrating
        && install.upgrade.mode == MigrationMode::Rollout
        && (!restarting.is_empty() || !waiting_for.is_empty());
    let outcome = if let (true, Some(_)) = (converged, &plan.failed) {
        Some(Outcome::Stalled {
            reason: "MigrationStalled".into(),
            message: message.clone(),
        })
    } else if rolling || (converged && tags_moved && install.upgrade.mode == MigrationMode::Rollout)
    {
        Some(Outcome::Progressing {
            reason: "MigratingWorkloads".into(),
            message: message.clone(),
        })
    } else {
        None
    };
    let retiring: Vec<String> = seen
        .grace
        .iter()
        .map(|(name, (_, until))| {
            format!("revision {name} retires at {until} unless a pod uses it")
        })
        .collect();
    let note = (seen.live.len() > 1).then(|| {
        let mut parts = vec![message];
        parts.extend(retiring);
        parts.join("; ")
    });
    let until_retirement = seen
        .grace
        .values()
        .filter_map(|(_, until)| {
            let left = until.duration_since(seen.now);
            Duration::try_from(left).ok()
        })
        .min()
        .map(|d| d + Duration::from_secs(1));
    let requeue = if seen.live.len() <= 1 {
        None
    } else if outcome.is_some() || tags_moved {
        Some(MIGRATION_REQUEUE)
    } else {
        // Pods are not watched: look again for the last one leaving, and at the retirement.
        Some(
            until_retirement
                .unwrap_or(MANUAL_REQUEUE)
                .min(if older_pods > 0 {
                    MIGRATION_REQUEUE.max(Duration::from_secs(10))
                } else {
                    MANUAL_REQUEUE
                }),
        )
    };
    Ok(Advance {
        report: UpgradeReport {
            revisions: revision_statuses,
            migration,
        },
        outcome,
        note,
        requeue,
    })
}

async fn list_namespace_labels(
    client: &Client,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    Ok(api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect())
}

async fn list_workloads(
    client: &Client,
    now: Timestamp,
) -> Result<BTreeMap<WorkloadRef, Workload>, kube::Error> {
    let mut out = BTreeMap::new();
    let mut add = |w: Workload| {
        out.insert(w.id.clone(), w);
    };
    for d in Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        add(Workload::from_deployment(&d));
    }
    for s in Api::<StatefulSet>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        add(Workload::from_stateful_set(&s, now));
    }
    for d in Api::<DaemonSet>::all(client.clone())
        .list(&ListParams::default())
        .await?
    {
        add(Workload::from_daemon_set(&d, now));
    }
    Ok(out)
}

/// What `kubectl rollout restart` does, plus the revision the restart is for.
async fn restart(
    client: &Client,
    w: &WorkloadRef,
    target: &str,
    stamp: &str,
) -> Result<(), kube::Error> {
    let patch = json!({ "spec": { "template": { "metadata": { "annotations": {
        migrate::RESTARTED_AT: stamp,
        migrate::RESTARTED_FOR: target,
    } } } } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patch = Patch::Merge(&patch);
    match w.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), &w.namespace)
                .patch(&w.name, &params, &patch)
                .await?;
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), &w.namespace)
                .patch(&w.name, &params, &patch)
                .await?;
        }
        WorkloadKind::DaemonSet => {
            Api::<DaemonSet>::namespaced(client.clone(), &w.namespace)
                .patch(&w.name, &params, &patch)
                .await?;
        }
    }
    Ok(())
}
