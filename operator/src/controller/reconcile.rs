//! One reconcile pass of a MeshInstall:
//!
//! resolve -> plan (pure) -> apply stage by stage, assessing each (I/O + pure) -> prune -> status
//! (pure, one write).
//!
//! A stage is applied only once the one before it is ready. Deletion runs the cleanup behind a
//! finalizer. Everything that decides lives in `plan`, `assess`, `prune` and `status`; this file
//! only sequences the steps and does the talking.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use super::assess::{self, AppliedRecord, ApplyFailure, Observed, Waiting};
use super::plan::{self, Plan};
use super::prune;
use super::status::{self, Report};
use super::{Context, Error, apply, upgrade};
use crate::api::{MeshInstall, UpdateStrategy};
use crate::effective::Installation;
use crate::render::ComponentId;

pub const FINALIZER: &str = "meshop.dev/cleanup";
/// How soon to look again while something is rolling out (watch events usually come first).
const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// How often an ungranted control-plane namespace is looked at again.
const GRANT_RECHECK: Duration = Duration::from_secs(30);
/// The stall reason of a MeshInstall whose control-plane namespace meshop was not granted.
pub const NAMESPACE_NOT_GRANTED: &str = "NamespaceNotGranted";
/// The stall reason of a MeshInstall whose overlay does not apply.
pub const INVALID_OVERLAY: &str = "InvalidOverlay";
/// How often a converged MeshInstall is checked anyway, for drift in kinds meshop does not watch.
const RESYNC: Duration = Duration::from_secs(300);

/// One pass, in its own tracing span; its duration and any error's kind go to the metrics.
pub(super) async fn reconcile(mi: Arc<MeshInstall>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        meshinstall = %mi.name_any(),
        generation = mi.metadata.generation.unwrap_or_default()
    );
    async move {
        let started = Instant::now();
        let api: Api<MeshInstall> = Api::all(ctx.client.clone());
        let result = finalizer(&api, FINALIZER, mi, |event| async {
            match event {
                Finalizer::Apply(mi) => apply_mesh(&mi, &ctx).await,
                Finalizer::Cleanup(mi) => cleanup(&mi, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        ctx.metrics.observe(
            started.elapsed(),
            result.as_ref().err().map(Error::metric_label),
        );
        result
    }
    .instrument(span)
    .await
}

/// What applying a plan stage by stage found.
struct Pass {
    observed: Vec<Observed>,
    record: AppliedRecord,
    waiting: Option<Waiting>,
    failure: Option<(ApplyFailure, kube::Error)>,
}

async fn apply_mesh(mi: &MeshInstall, ctx: &Context) -> Result<Action, Error> {
    // Resolve. A spec meshop cannot install is the user's to fix: Stalled, no retry loop.
    let install = match Installation::from_mesh(mi) {
        Ok(install) => install,
        Err(e) => return stall(ctx, mi, "InvalidSpec", e.to_string()).await,
    };
    let others = ctx.meshes.state();
    if plan::conflicting_owner(mi, &install, others.iter().map(Arc::as_ref)).is_some() {
        // The cache may lag the watch that triggered this pass (the owner was just deleted):
        // a conflict is decided on a fresh read. Only a stalled MeshInstall pays for it.
        let api: Api<MeshInstall> = Api::all(ctx.client.clone());
        let fresh = api
            .list(&Default::default())
            .await
            .map_err(Error::Conflict)?;
        if let Some(owner) = plan::conflicting_owner(mi, &install, &fresh.items) {
            let message = format!(
                "revision {:?} in namespace {} is already installed by MeshInstall {owner}; choose another revision or namespace",
                install.revision_label(),
                install.namespace
            );
            return stall(ctx, mi, plan::REVISION_CONFLICT, message).await;
        }
    }
    if plan::conflicting_ambient(mi, &install, others.iter().map(Arc::as_ref)).is_some() {
        let api: Api<MeshInstall> = Api::all(ctx.client.clone());
        let fresh = api
            .list(&Default::default())
            .await
            .map_err(Error::Conflict)?;
        if let Some(owner) = plan::conflicting_ambient(mi, &install, &fresh.items) {
            let message = format!(
                "ambient mode runs one ztunnel and one CNI agent per node, and MeshInstall {owner} already runs them; use that MeshInstall's ambient mesh, or switch ambient off here (components.ztunnel and components.cni.ambient)"
            );
            return stall(ctx, mi, plan::AMBIENT_CONFLICT, message).await;
        }
    }

    // The control-plane namespace must be one the installer granted (deploy::control_plane_objects):
    // meshop holds Secret writes nowhere else. Asked before anything is applied, so an ungranted
    // namespace is one clear status instead of a Forbidden halfway through a stage. RBAC is not
    // watched, so the grant is looked for again on a timer.
    // A gateway in another namespace needs the same grant (its Role, Service and Deployment
    // are written there), and that namespace must exist: meshop creates only the control plane's.
    for namespace in install.namespaces() {
        if !namespace_granted(ctx, &namespace).await {
            let message = plan::not_granted_message(&install, &namespace);
            stall(ctx, mi, NAMESPACE_NOT_GRANTED, message).await?;
            return Ok(Action::requeue(GRANT_RECHECK));
        }
    }

    let revision_based = install.update_strategy == UpdateStrategy::RevisionBased;
    if let Some(message) = plan::strategy_switch(mi.status.as_ref(), install.update_strategy) {
        return stall(ctx, mi, "StrategyChange", message).await;
    }
    let installed = mi.status.as_ref().and_then(|s| s.version.as_deref());
    match plan::version_move(installed, &install) {
        plan::VersionMove::Refused(e) => return stall(ctx, mi, "VersionSkew", e.to_string()).await,
        plan::VersionMove::Change { from, to } => {
            let direction = if to > from {
                "upgrading"
            } else {
                "downgrading"
            };
            let note = if revision_based {
                format!(
                    "{direction} Istio {from} to {to} with revision {} beside the running one; the tags move once it is ready",
                    install.revision
                )
            } else {
                format!(
                    "{direction} Istio {from} to {to} in place: istiod first, then the gateways"
                )
            };
            info!(%from, %to, "version change");
            ctx.event(mi, EventType::Normal, "VersionChanged", &note)
                .await;
        }
        plan::VersionMove::None => {}
    }

    // Revision-based: count the proxies per revision and retire the unused old ones before
    // planning, so a retired revision is simply not planned (and prune deletes it).
    let upgrade_seen = if revision_based {
        Some(upgrade::observe(ctx, mi, &install).await?)
    } else {
        None
    };
    let older = upgrade_seen
        .as_ref()
        .map_or(&[][..], |seen| &seen.older[..]);
    // An overlay that does not apply is the user's to fix, like a spec meshop cannot install:
    // nothing is applied (no half-patched installation), the running mesh keeps what it has.
    let plan = match Plan::for_pass(install, older, ctx.webhook_endpoint()) {
        Ok(plan) => plan,
        Err(e) => return stall(ctx, mi, INVALID_OVERLAY, e.to_string()).await,
    };
    let pass = apply_stages(ctx, &plan, mi.metadata.generation).await;

    let uid = mi.metadata.uid.clone().unwrap_or_default();
    let previous = ctx.remember_applied(&uid, pass.record.clone()).await;
    let drifted = assess::drifted(previous.as_ref(), &pass.record);
    if !drifted.is_empty() {
        let message = format!(
            "restored {} object(s) changed outside meshop: {}",
            drifted.len(),
            drifted.join(", ")
        );
        warn!(%message, "drift corrected");
        ctx.event(mi, EventType::Warning, "DriftCorrected", &message)
            .await;
    }

    let failure = pass.failure.as_ref().map(|(f, _)| f);
    if let Some(f) = failure {
        ctx.event(mi, EventType::Warning, "ApplyFailed", &f.message)
            .await;
    }
    // Prune only once everything planned is applied and ready: a profile switch keeps the old
    // components serving until their replacements are.
    let converged = failure.is_none() && pass.waiting.is_none();
    // An older revision that no longer resolves is still running but not planned: pruning
    // would delete a control plane its pods may use.
    let unresolved = upgrade_seen.as_ref().and_then(|s| s.unresolved.clone());
    if let Some(name) = &unresolved {
        warn!(revision = %name, "older revision no longer resolves; not pruning");
    }
    if converged && unresolved.is_none() {
        prune(ctx, mi, &plan).await?;
    }
    let advance = match &upgrade_seen {
        Some(seen) => Some(
            upgrade::advance(ctx, mi, &plan.install, seen, &pass.observed, converged)
                .await
                .map_err(Error::Upgrade)?,
        ),
        None => None,
    };

    let was_ready = status::was_ready(mi.status.as_ref(), mi.metadata.generation);
    let mut outcome = status::outcome(&plan, pass.waiting.as_ref(), failure, &drifted);
    if let Some(a) = &advance {
        match (&a.outcome, &mut outcome) {
            (Some(replaced), _) if converged => outcome = replaced.clone(),
            (_, status::Outcome::Ready { message }) => {
                if let Some(note) = &a.note {
                    message.push_str(&format!("; {note}"));
                }
            }
            _ => {}
        }
    }
    let registered = pass
        .observed
        .iter()
        .any(|o| o.component == ComponentId::Webhook);
    let report = Report {
        outcome: outcome.clone(),
        applied: Some((&plan).into()),
        components: Some(assess::components(&plan, &pass.observed, failure)),
        webhook: Some(status::webhook_status(
            &plan,
            ctx.webhook.is_some(),
            registered,
        )),
        upgrade: advance.as_ref().map(|a| a.report.clone()),
    };
    write_status(ctx, mi, report).await?;

    if let Some((f, source)) = pass.failure {
        return Err(Error::Apply { key: f.key, source });
    }
    if !converged {
        return Ok(Action::requeue(PROGRESS_REQUEUE));
    }
    if let status::Outcome::Ready { message } = &outcome
        && !was_ready
    {
        ctx.event(mi, EventType::Normal, "Ready", message).await;
    }
    ctx.metrics
        .set_managed_objects(&mi.name_any(), plan.objects.len());
    let requeue = advance
        .and_then(|a| a.requeue)
        .map_or(RESYNC, |r| r.min(RESYNC));
    Ok(Action::requeue(requeue))
}

/// Applies the plan's stages in order, assessing each applied object; stops at the first stage
/// that is not ready, or at the first failed apply.
async fn apply_stages(ctx: &Context, plan: &Plan, generation: Option<i64>) -> Pass {
    let mut pass = Pass {
        observed: Vec::new(),
        record: AppliedRecord {
            generation,
            ..Default::default()
        },
        waiting: None,
        failure: None,
    };
    for (stage, objects) in plan.stages() {
        for object in objects {
            match apply::apply(&ctx.client, object).await {
                Ok(applied) => {
                    pass.record
                        .fingerprints
                        .insert(object.key(), assess::fingerprint(object, &applied));
                    pass.observed.push(Observed::new(object, &applied, plan));
                }
                Err(e) => {
                    let failure = ApplyFailure {
                        key: object.key(),
                        component: object.component,
                        message: format!("applying {} failed: {e}", object.key()),
                    };
                    pass.failure = Some((failure, e));
                    return pass;
                }
            }
        }
        if let Some(waiting) = assess::stage_waiting(stage, &pass.observed) {
            pass.waiting = Some(waiting);
            return pass;
        }
    }
    pass
}

/// Deletes what this pass did not plan (profile switches, components switched off).
async fn prune(ctx: &Context, mi: &MeshInstall, plan: &Plan) -> Result<(), Error> {
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    let found = prune::list_labelled(&ctx.client, &mi.name_any())
        .await
        .map_err(Error::Prune)?;
    let keep: BTreeSet<String> = plan.keys();
    let doomed = prune::prune_set(&found, &uid, &keep);
    let pruned = prune::delete_all(&ctx.client, &doomed)
        .await
        .map_err(Error::Prune)?;
    if !pruned.is_empty() {
        info!(pruned = ?pruned, "pruned objects no longer rendered");
        let note = format!("deleted {}", pruned.join(", "));
        ctx.event(mi, EventType::Normal, "Pruned", &note).await;
    }
    Ok(())
}

/// Whether meshop may write Secrets in `namespace`, the one permission it holds only where an
/// installer granted a control-plane namespace. Asked of the API server itself
/// (SelfSubjectAccessReview, which every authenticated user may create), so an administrator's
/// own grant counts too. If the question cannot be asked, the answer is yes: the apply that
/// follows reports any Forbidden itself.
async fn namespace_granted(ctx: &Context, namespace: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some("create".into()),
                group: Some(String::new()),
                resource: Some("secrets".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    match api.create(&Default::default(), &review).await {
        Ok(answer) => answer.status.is_some_and(|s| s.allowed),
        Err(e) => {
            warn!(error = %e, namespace, "could not ask the API server whether the control-plane namespace is granted");
            true
        }
    }
}

/// Reports a spec the user must change: Stalled, an event, no requeue until the next change
/// (of this MeshInstall, or of another one for a [`plan::REVISION_CONFLICT`]). A stall the status
/// already reports for this generation publishes no second event.
async fn stall(
    ctx: &Context,
    mi: &MeshInstall,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let reported = mi.status.as_ref().is_some_and(|s| {
        s.observed_generation == mi.metadata.generation
            && s.condition(crate::api::condition::STALLED)
                .is_some_and(|c| c.status == "True" && c.reason == reason && c.message == message)
    });
    if !reported {
        ctx.event(mi, EventType::Warning, reason, &message).await;
    }
    write_status(ctx, mi, Report::stalled(reason, message)).await?;
    Ok(Action::await_change())
}

/// The one status write of a pass; an unchanged status writes nothing (unchanged conditions keep
/// their transition times, so a converged mesh does not churn resourceVersions).
async fn write_status(ctx: &Context, mi: &MeshInstall, report: Report) -> Result<(), Error> {
    let next = status::next_status(mi.status.as_ref(), mi.metadata.generation, report);
    ctx.metrics
        .set_ready(&mi.name_any(), next.is_true(crate::api::condition::READY));
    if mi.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let api: Api<MeshInstall> = Api::all(ctx.client.clone());
    let old = serde_json::to_value(&mi.status).unwrap_or_default();
    let new = serde_json::to_value(&next).unwrap_or_default();
    api.patch_status(
        &mi.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status::merge_patch(&old, &new) })),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

/// Deletion: remove everything this MeshInstall created, then the shared objects if it was the
/// last MeshInstall using them. The finalizer stays until the owned objects are gone.
async fn cleanup(mi: &MeshInstall, ctx: &Context) -> Result<Action, Error> {
    let name = mi.name_any();
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    ctx.event(
        mi,
        EventType::Normal,
        "Deleting",
        "removing every object this MeshInstall created",
    )
    .await;
    let found = prune::list_labelled(&ctx.client, &name)
        .await
        .map_err(Error::Cleanup)?;
    let (doomed, remaining) = prune::cleanup_set(&found, &uid);
    prune::delete_all(&ctx.client, &doomed)
        .await
        .map_err(Error::Cleanup)?;
    if remaining > 0 {
        info!(remaining, "waiting for owned objects to be deleted");
        return Err(Error::CleanupPending(remaining));
    }
    // MeshInstalls being deleted too do not keep shared objects alive: whichever finishes last
    // (or each of them; deletion is idempotent) removes them.
    let others: Vec<Arc<MeshInstall>> = ctx.live_meshes(mi).collect();
    let used: BTreeSet<&String> = others.iter().map(|o| &o.spec.namespace).collect();
    let unused: BTreeSet<String> = [mi.spec.namespace.clone()]
        .into_iter()
        .filter(|n| !used.contains(n))
        .collect();
    let shared = prune::list_labelled(&ctx.client, crate::render::SHARED_INSTANCE)
        .await
        .map_err(Error::Cleanup)?;
    prune::delete_all(
        &ctx.client,
        &prune::shared_set(&shared, &unused, others.is_empty()),
    )
    .await
    .map_err(Error::Cleanup)?;
    ctx.forget_applied(&uid).await;
    ctx.metrics.forget(&name);
    info!("cleaned up");
    Ok(Action::await_change())
}
