//! One reconcile pass of a MeshInstall: resolve -> render -> apply stage by stage, waiting for
//! each stage to be ready -> prune -> status. Deletion runs the cleanup behind a finalizer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::apply;
use super::status::{Outcome, next_status};
use super::{Context, Error};
use crate::api::{ComponentState, ComponentStatus, MeshInstall, WebhookStatus};
use crate::effective::Installation;
use crate::render::{self, ComponentId, Rendered, Stage};

pub const FINALIZER: &str = "meshop.dev/cleanup";
/// How soon to look again while something is rolling out (watch events usually come first).
const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// How often a converged MeshInstall is checked anyway, for drift in kinds meshop does not watch.
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(mi: Arc<MeshInstall>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    ctx.metrics.observe(started.elapsed(), result.is_ok());
    result
}

/// A stable identity of an applied object's content: a change means the object was recreated
/// (uid) or its spec edited (generation), or, for kinds without a generation, any write.
fn fingerprint(object: &kube::api::DynamicObject) -> String {
    let uid = object.metadata.uid.clone().unwrap_or_default();
    match object.metadata.generation {
        Some(g) => format!("{uid}/g{g}"),
        None => format!(
            "{uid}/rv{}",
            object.metadata.resource_version.clone().unwrap_or_default()
        ),
    }
}

async fn apply_mesh(mi: &MeshInstall, ctx: &Context) -> Result<Action, Error> {
    let name = mi.name_any();
    let generation = mi.metadata.generation;
    let uid = mi.metadata.uid.clone().unwrap_or_default();

    // 1. Resolve. A spec meshop cannot install is the user's to fix: Stalled, no retry loop.
    let install = match Installation::from_mesh(mi) {
        Ok(install) => install,
        Err(e) => {
            let outcome = Outcome::Stalled {
                reason: "InvalidSpec".into(),
                message: e.to_string(),
            };
            ctx.event(mi, EventType::Warning, "InvalidSpec", &e.to_string())
                .await;
            write_status(ctx, mi, &outcome, None, None, None).await?;
            return Ok(Action::await_change());
        }
    };

    // 2. One MeshInstall owns a (namespace, revision): the oldest claim wins.
    if let Some(owner) = conflicting_owner(ctx, mi, &install) {
        let message = format!(
            "revision {:?} in namespace {} is already installed by MeshInstall {owner}; choose another revision or namespace",
            install.revision_label(),
            install.namespace
        );
        ctx.event(mi, EventType::Warning, "RevisionConflict", &message)
            .await;
        write_status(
            ctx,
            mi,
            &Outcome::Stalled {
                reason: "RevisionConflict".into(),
                message,
            },
            None,
            None,
            None,
        )
        .await?;
        return Ok(Action::await_change());
    }

    // 3. Render and apply stage by stage. The webhook registration rides in the stage after
    // istiod, so injection is switched on only once istiod is ready.
    let mut objects = render::render(&install);
    let webhook = webhook_registration(ctx, &install);
    if let Some((registration, _)) = &webhook {
        objects.push(registration.clone());
        render::sort(&mut objects);
    }
    // The replica floor of every autoscaled Deployment, by the Deployment's key.
    let autoscaled_min: BTreeMap<String, i32> = objects
        .iter()
        .filter(|o| o.kind() == "HorizontalPodAutoscaler")
        .filter_map(|o| {
            let spec = &o.object.data["spec"];
            let target = spec["scaleTargetRef"]["name"].as_str()?;
            let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
            Some((
                format!("Deployment/{}/{target}", o.namespace().unwrap_or_default()),
                min,
            ))
        })
        .collect();
    let previous = ctx.fingerprints.lock().await.get(&uid).cloned();
    let mut fingerprints = BTreeMap::new();
    let mut drifted = Vec::new();
    let mut components: BTreeMap<ComponentId, ComponentStatus> = BTreeMap::new();
    let mut waiting: Option<(Stage, Vec<String>)> = None;
    for stage in Stage::ALL {
        let stage_objects: Vec<&Rendered> = objects.iter().filter(|o| o.stage() == stage).collect();
        let mut not_ready = Vec::new();
        for object in &stage_objects {
            let applied = match apply::apply(&ctx.client, object).await {
                Ok(applied) => applied,
                Err(e) => {
                    let message = format!("applying {} failed: {e}", object.key());
                    ctx.event(mi, EventType::Warning, "ApplyFailed", &message)
                        .await;
                    let outcome = Outcome::Progressing {
                        reason: "ApplyFailed".into(),
                        message,
                    };
                    write_status(
                        ctx,
                        mi,
                        &outcome,
                        Some(&install),
                        Some(component_list(&components, &objects)),
                        None,
                    )
                    .await?;
                    return Err(Error::Kube(e));
                }
            };
            let print = fingerprint(&applied);
            if let Some((prev_generation, prev)) = &previous
                && *prev_generation == generation
                && prev.get(&object.key()).is_some_and(|p| *p != print)
            {
                drifted.push(object.key());
            }
            fingerprints.insert(object.key(), print);
            let (ready, replicas) = apply::readiness(
                &applied,
                object.kind(),
                autoscaled_min.get(&object.key()).copied(),
            );
            let entry = components
                .entry(object.component)
                .or_insert_with(|| ComponentStatus {
                    name: object.component.name().into(),
                    state: ComponentState::Ready,
                    ..Default::default()
                });
            if let Some((desired, ready_replicas)) = replicas {
                entry.desired_replicas = Some(entry.desired_replicas.unwrap_or(0) + desired);
                entry.ready_replicas = Some(entry.ready_replicas.unwrap_or(0) + ready_replicas);
            }
            if !ready {
                entry.state = ComponentState::Progressing;
                entry.message = Some(format!("waiting for {} to become ready", object.key()));
                not_ready.push(object.key());
            }
        }
        if !not_ready.is_empty() {
            waiting = Some((stage, not_ready));
            break;
        }
    }
    ctx.fingerprints
        .lock()
        .await
        .insert(uid.clone(), (generation, fingerprints));
    if !drifted.is_empty() {
        let message = format!(
            "restored {} object(s) changed outside meshop: {}",
            drifted.len(),
            drifted.join(", ")
        );
        warn!(meshinstall = %name, %message, "drift corrected");
        ctx.event(mi, EventType::Warning, "DriftCorrected", &message)
            .await;
    }

    let status_components = component_list(&components, &objects);
    if let Some((stage, keys)) = waiting {
        let message = format!(
            "waiting for stage {stage:?} to become ready: {}",
            keys.join(", ")
        );
        let reason = if drifted.is_empty() {
            "Progressing"
        } else {
            "DriftCorrected"
        };
        write_status(
            ctx,
            mi,
            &Outcome::Progressing {
                reason: reason.into(),
                message,
            },
            Some(&install),
            Some(status_components),
            None,
        )
        .await?;
        return Ok(Action::requeue(PROGRESS_REQUEUE));
    }

    // 4. Prune what this pass did not render (profile switches, components switched off).
    let keep: BTreeSet<String> = objects.iter().map(|o| o.key()).collect();
    let pruned = apply::prune(&ctx.client, &name, &uid, &keep).await?;
    if !pruned.is_empty() {
        info!(meshinstall = %name, pruned = ?pruned, "pruned objects no longer rendered");
        ctx.event(
            mi,
            EventType::Normal,
            "Pruned",
            &format!("deleted {}", pruned.join(", ")),
        )
        .await;
    }

    // 5. Status.
    let was_ready = mi.status.as_ref().is_some_and(|s| {
        s.observed_generation == generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    let mut message = format!(
        "{} profile, Istio {}: {} component(s) ready",
        install.profile,
        install.version,
        status_components
            .iter()
            .filter(|c| c.name != "base")
            .count()
    );
    if !drifted.is_empty() {
        message.push_str(&format!(
            "; restored {} object(s) changed outside meshop",
            drifted.len()
        ));
    }
    write_status(
        ctx,
        mi,
        &Outcome::Ready {
            message: message.clone(),
        },
        Some(&install),
        Some(status_components),
        Some(webhook_status(
            ctx,
            &install,
            webhook.as_ref().map(|(_, expiry)| *expiry),
        )),
    )
    .await?;
    if !was_ready {
        ctx.event(mi, EventType::Normal, "Ready", &message).await;
    }
    ctx.metrics.set_managed_objects(&name, objects.len());
    Ok(Action::requeue(RESYNC))
}

/// The MutatingWebhookConfiguration for this MeshInstall, with the current CA, and the serving
/// certificate's expiry; None when injection is off or this process serves no webhook.
fn webhook_registration(
    ctx: &Context,
    install: &Installation,
) -> Option<(Rendered, std::time::SystemTime)> {
    let settings = ctx.webhook.as_ref().filter(|_| install.injection.enabled)?;
    let bundle = settings.resolver.bundle();
    let config = crate::webhook::webhook_configuration(
        install,
        settings.client_config.clone(),
        bundle.ca_pem.as_bytes(),
    );
    let mut rendered = Rendered::new(ComponentId::Webhook, &config);
    render::finish(install, &mut rendered);
    Some((rendered, bundle.not_after))
}

fn webhook_status(
    ctx: &Context,
    install: &Installation,
    expiry: Option<std::time::SystemTime>,
) -> crate::api::WebhookStatus {
    use crate::api::{WebhookState, WebhookStatus};
    match (install.injection.enabled, ctx.webhook.is_some(), expiry) {
        (false, _, _) => WebhookStatus {
            state: WebhookState::Disabled,
            message: Some("injection.enabled is false".into()),
            ..Default::default()
        },
        (true, false, _) => WebhookStatus {
            state: WebhookState::Degraded,
            message: Some("this operator runs without a webhook server (--webhook-addr)".into()),
            ..Default::default()
        },
        (true, true, expiry) => WebhookStatus {
            state: WebhookState::Active,
            certificate_expiry: expiry
                .and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok())
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            message: Some("registered; pods in selected namespaces get a sidecar".into()),
        },
    }
}

fn component_list(
    found: &BTreeMap<ComponentId, ComponentStatus>,
    objects: &[Rendered],
) -> Vec<ComponentStatus> {
    let rendered: BTreeSet<ComponentId> = objects.iter().map(|o| o.component).collect();
    rendered
        .into_iter()
        .map(|c| {
            found.get(&c).cloned().unwrap_or_else(|| ComponentStatus {
                name: c.name().into(),
                state: ComponentState::Pending,
                message: Some(format!("waiting for stage {:?}", c.stage())),
                ..Default::default()
            })
        })
        .collect()
}

/// The name of an older MeshInstall that already claims this one's namespace and revision.
fn conflicting_owner(ctx: &Context, mi: &MeshInstall, install: &Installation) -> Option<String> {
    let mine = (
        mi.metadata.creation_timestamp.clone().map(|t| t.0),
        mi.name_any(),
    );
    ctx.live_meshes(mi)
        .filter(|other| {
            other.spec.namespace == install.namespace && other.spec.revision == install.revision
        })
        .map(|other| {
            (
                other.metadata.creation_timestamp.clone().map(|t| t.0),
                other.name_any(),
            )
        })
        .filter(|theirs| *theirs < mine)
        .min()
        .map(|(_, name)| name)
}

async fn write_status(
    ctx: &Context,
    mi: &MeshInstall,
    outcome: &Outcome,
    install: Option<&Installation>,
    components: Option<Vec<ComponentStatus>>,
    webhook: Option<WebhookStatus>,
) -> Result<(), Error> {
    let applied = install.map(|i| {
        (
            i.profile.name().to_string(),
            i.version.clone(),
            i.revision.clone(),
        )
    });
    let mut status = next_status(
        mi.status.as_ref(),
        outcome,
        mi.metadata.generation,
        applied,
        components,
    );
    if webhook.is_some() {
        status.webhook = webhook;
    }
    // Unchanged conditions keep their transition times, so an idle pass compares equal and
    // writes nothing (a converged mesh does not churn resourceVersions).
    if mi.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<MeshInstall> = Api::all(ctx.client.clone());
    api.patch_status(
        &mi.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
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
    let remaining = apply::cleanup(&ctx.client, &name, &uid).await?;
    if remaining > 0 {
        info!(meshinstall = %name, remaining, "waiting for owned objects to be deleted");
        return Err(Error::CleanupPending(remaining));
    }
    // MeshInstalls being deleted too do not keep shared objects alive: whichever finishes last
    // (or each of them; deletion is idempotent) removes them.
    let others: Vec<Arc<MeshInstall>> = ctx.live_meshes(mi).collect();
    let used: BTreeSet<String> = others.iter().map(|o| o.spec.namespace.clone()).collect();
    let unused: BTreeSet<String> = [mi.spec.namespace.clone()]
        .into_iter()
        .filter(|n| !used.contains(n))
        .collect();
    apply::cleanup_shared(&ctx.client, &unused, others.is_empty()).await?;
    ctx.fingerprints.lock().await.remove(&uid);
    ctx.metrics.forget(&name);
    info!(meshinstall = %name, "cleaned up");
    Ok(Action::await_change())
}

impl Context {
    /// The other MeshInstalls that are not being deleted, from the controller's cache (no API call).
    fn live_meshes<'a>(&self, mi: &'a MeshInstall) -> impl Iterator<Item = Arc<MeshInstall>> + 'a {
        self.meshes.state().into_iter().filter(move |o| {
            o.metadata.uid != mi.metadata.uid && o.metadata.deletion_timestamp.is_none()
        })
    }

    /// Publishes an Event on the MeshInstall; a failure to publish is logged, never fatal.
    pub async fn event(&self, mi: &MeshInstall, type_: EventType, reason: &str, note: &str) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &mi.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }
}
