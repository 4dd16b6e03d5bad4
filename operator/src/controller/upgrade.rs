//! The revision-based steps of a pass, the I/O around the pure [`upgrade_step`]: read the
//! proxies (from the watch in [`super::proxies`]), list the workloads a migration step may move, restart them, publish the events.
//! See docs/upgrades.md.
//!
//! Order within a pass: [`observe`] (before planning, so a retired revision is simply not
//! planned and prune deletes it) -> plan, apply, prune -> [`advance`] (tags and workloads, only
//! once everything planned is ready) -> status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::info;

use super::assess::Observed;
use super::migrate::{self, Workload, WorkloadKind, WorkloadRef};
use super::status::{Outcome, UpgradeReport};
use super::upgrade_step::{self, Note, Observation, Workloads};
use super::{Context, Error, FIELD_MANAGER};
use crate::api::MeshInstall;
use crate::effective::Installation;

/// How long a pass waits for the watch of proxy pods to list them (the first revision-based pass
/// after a start).
const PROXIES_LISTED: Duration = Duration::from_secs(60);

/// Reads the proxies of this install's revisions from the watch, applies the retirement rule to
/// the older revisions and resolves the rest. No API call: the watch keeps the pods.
pub(crate) async fn observe(
    ctx: &Context,
    mi: &MeshInstall,
    install: &Installation,
) -> Result<Observation, Error> {
    let revisions = upgrade_step::revision_proxies(mi, install);
    let pods = ctx
        .proxies()
        .await
        .verified(&revisions, PROXIES_LISTED)
        .await
        .ok_or(Error::ProxiesUnknown(PROXIES_LISTED))?;
    Ok(upgrade_step::observe(mi, install, pods, Timestamp::now()))
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
/// builds `status.revisions` and `status.migration`: [`upgrade_step::decide`] says what, this
/// lists the workloads it needs and does it.
pub(crate) async fn advance(
    ctx: &Context,
    mi: &MeshInstall,
    install: &Installation,
    seen: &Observation,
    observed: &[Observed],
    converged: bool,
) -> Result<Advance, kube::Error> {
    let moves = upgrade_step::moves(mi, install, seen, converged);
    let cluster = if moves.migrating {
        Workloads {
            namespace_labels: list_namespace_labels(&ctx.client).await?,
            workloads: list_workloads(&ctx.client, seen.now).await?,
        }
    } else {
        Workloads::default()
    };
    let ready = upgrade_step::ready_istiods(install, seen, observed);
    let step = upgrade_step::decide(mi, install, seen, &moves, &ready, converged, &cluster);
    for note in &step.events {
        info!(reason = note.reason, "{}", note.note);
        publish(ctx, mi, note).await;
    }
    for (w, note) in &step.restarts {
        restart(&ctx.client, w, &install.revision, &step.stamp).await?;
        info!(workload = %w, target = %install.revision, "workload restarted");
        publish(ctx, mi, note).await;
    }
    if let Some(note) = &step.stalled {
        publish(ctx, mi, note).await;
    }
    Ok(Advance {
        report: step.report,
        outcome: step.outcome,
        note: step.note,
        requeue: step.requeue,
    })
}

async fn publish(ctx: &Context, mi: &MeshInstall, note: &Note) {
    let type_ = if note.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    ctx.event_on(mi, type_, note.reason, &note.action, &note.note)
        .await;
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
