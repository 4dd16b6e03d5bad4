//! Status (pure): what a pass concluded, and the MeshInstall status built from it the way
//! kstatus, Argo CD and Flux read it. Written once per pass by the reconciler.
//!
//! kstatus rules (sigs.k8s.io/cli-utils/pkg/kstatus): a resource is Current when
//! `observedGeneration == generation`, `Reconciling` is not True and `Stalled` is not True; it is
//! InProgress while `Reconciling` is True (or the generation is not observed yet); it is Failed
//! when `Stalled` is True. meshop always writes all three conditions, so no reader has to guess.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::assess::{ApplyFailure, Waiting};
use super::plan::Plan;
use crate::api::{
    ComponentStatus, MeshInstallStatus, MigrationStatus, RevisionStatus, WebhookState,
    WebhookStatus, condition,
};

/// What a reconcile pass concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every component is applied and ready.
    Ready { message: String },
    /// Work is under way: applying, waiting for rollouts, restoring drift.
    Progressing { reason: String, message: String },
    /// No progress is possible without a change from the user.
    Stalled { reason: String, message: String },
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.chars().take(32 * 1024).collect(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// The three conditions for an outcome.
fn conditions(outcome: &Outcome, generation: Option<i64>) -> Vec<Condition> {
    match outcome {
        Outcome::Ready { message } => vec![
            condition(condition::READY, true, "Ready", message, generation),
            condition(
                condition::RECONCILING,
                false,
                "Ready",
                "Nothing to do",
                generation,
            ),
            condition(
                condition::STALLED,
                false,
                "Ready",
                "Nothing to do",
                generation,
            ),
        ],
        Outcome::Progressing { reason, message } => vec![
            condition(condition::READY, false, reason, message, generation),
            condition(condition::RECONCILING, true, reason, message, generation),
            condition(
                condition::STALLED,
                false,
                reason,
                "Making progress",
                generation,
            ),
        ],
        Outcome::Stalled { reason, message } => vec![
            condition(condition::READY, false, reason, message, generation),
            condition(
                condition::RECONCILING,
                false,
                reason,
                "Waiting for a change to the MeshInstall",
                generation,
            ),
            condition(condition::STALLED, true, reason, message, generation),
        ],
    }
}

/// Merges new conditions into the old ones, moving `lastTransitionTime` only when a condition's
/// status changes, so that readers can tell how long a state has lasted.
fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.iter().find(|o| o.type_ == c.type_)
                && prev.status == c.status
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// The profile, version and revision a pass applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppliedSpec {
    pub profile: String,
    pub version: String,
    pub revision: String,
}

impl From<&Plan> for AppliedSpec {
    fn from(plan: &Plan) -> Self {
        AppliedSpec {
            profile: plan.install.profile.name().to_string(),
            version: plan.install.version.clone(),
            revision: plan.install.revision.clone(),
        }
    }
}

/// Everything one pass found out. Fields left `None` keep what the old status says (a spec that
/// does not resolve tells nothing new about components).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Report {
    pub outcome: Outcome,
    pub applied: Option<AppliedSpec>,
    pub components: Option<Vec<ComponentStatus>>,
    pub webhook: Option<WebhookStatus>,
    /// Revision-based installs: the revisions and the migration (`None` keeps the old status).
    pub upgrade: Option<UpgradeReport>,
}

/// What a pass of a revision-based install found about its revisions and workloads.
#[derive(Clone, Debug, PartialEq, Default)]
pub(crate) struct UpgradeReport {
    pub revisions: Vec<RevisionStatus>,
    pub migration: Option<MigrationStatus>,
}

impl Report {
    /// A pass that stopped before rendering anything.
    pub fn stalled(reason: &str, message: String) -> Report {
        Report {
            outcome: Outcome::Stalled {
                reason: reason.into(),
                message,
            },
            applied: None,
            components: None,
            webhook: None,
            upgrade: None,
        }
    }
}

/// The next status: the old one with this pass's findings.
pub(crate) fn next_status(
    old: Option<&MeshInstallStatus>,
    generation: Option<i64>,
    report: Report,
) -> MeshInstallStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions =
        merge_conditions(&status.conditions, conditions(&report.outcome, generation));
    if let Some(applied) = report.applied {
        status.profile = Some(applied.profile);
        status.version = Some(applied.version);
        status.revision = Some(applied.revision);
    }
    if let Some(components) = report.components {
        status.components = components;
    }
    if let Some(webhook) = report.webhook {
        status.webhook = Some(webhook);
    }
    if let Some(upgrade) = report.upgrade {
        status.revisions = upgrade.revisions;
        status.migration = upgrade.migration;
    }
    status
}

/// The JSON merge patch (RFC 7386) that turns status `old` into `new`: `new` itself, plus a
/// `null` for every field `old` has and `new` leaves out (serde skips empty fields, and a merge
/// patch keeps whatever it does not mention: a finished migration would otherwise stay listed).
pub(crate) fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                out.insert(k.clone(), merge_patch(o.get(k).unwrap_or(&Value::Null), v));
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// The outcome of a pass that applied what it could: an apply error or a stage still rolling out
/// is progress (with the reason), else the mesh is Ready.
pub(crate) fn outcome(
    plan: &Plan,
    waiting: Option<&Waiting>,
    failure: Option<&ApplyFailure>,
    drifted: &[String],
) -> Outcome {
    if let Some(f) = failure {
        return Outcome::Progressing {
            reason: "ApplyFailed".into(),
            message: f.message.clone(),
        };
    }
    if let Some(w) = waiting {
        return Outcome::Progressing {
            reason: if drifted.is_empty() {
                "Progressing"
            } else {
                "DriftCorrected"
            }
            .into(),
            message: format!(
                "waiting for stage {:?} to become ready: {}",
                w.stage,
                w.keys.join(", ")
            ),
        };
    }
    let components = plan
        .components()
        .into_iter()
        .filter(|c| *c != crate::render::ComponentId::Base)
        .count();
    let mut message = format!(
        "{} profile, Istio {}: {components} component(s) ready",
        plan.install.profile, plan.install.version
    );
    if !drifted.is_empty() {
        message.push_str(&format!(
            "; restored {} object(s) changed outside meshop",
            drifted.len()
        ));
    }
    Outcome::Ready { message }
}

/// The injection webhook's state. `serving` is whether this operator runs a webhook server;
/// `registered` whether the pass reached (and applied) the registration's stage.
pub(crate) fn webhook_status(plan: &Plan, serving: bool, registered: bool) -> WebhookStatus {
    if !plan.install.injection.enabled {
        return WebhookStatus {
            state: WebhookState::Disabled,
            message: Some("injection.enabled is false".into()),
            ..Default::default()
        };
    }
    if !serving {
        return WebhookStatus {
            state: WebhookState::Degraded,
            message: Some("this operator runs without a webhook server (--webhook-addr)".into()),
            ..Default::default()
        };
    }
    if !registered {
        return WebhookStatus {
            state: WebhookState::Pending,
            certificate_expiry: plan.certificate_expiry(),
            message: Some("registered once istiod is ready".into()),
        };
    }
    WebhookStatus {
        state: WebhookState::Active,
        certificate_expiry: plan.certificate_expiry(),
        message: Some("registered; pods in selected namespaces get a sidecar".into()),
    }
}

/// Whether the status says Ready for the generation it observed.
pub(crate) fn was_ready(status: Option<&MeshInstallStatus>, generation: Option<i64>) -> bool {
    status.is_some_and(|s| s.observed_generation == generation && s.is_true(condition::READY))
}

/// How kstatus classifies a status: the same rules Argo CD and Flux apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KStatus {
    Current,
    InProgress,
    Failed,
}

/// Computes the kstatus of a MeshInstall from its generation and status alone. It agrees with
/// kstatus itself (sigs.k8s.io/cli-utils `status.Compute`) in every state meshop writes, except one
/// on purpose: with no status at all kstatus says Current (no condition it knows), this says
/// InProgress. tests/tests/gitops_health.rs checks both against the real library.
pub fn kstatus(generation: Option<i64>, status: Option<&MeshInstallStatus>) -> KStatus {
    let Some(status) = status else {
        return KStatus::InProgress;
    };
    if status.observed_generation.is_none() || status.observed_generation < generation {
        return KStatus::InProgress;
    }
    if status.is_true(condition::STALLED) {
        KStatus::Failed
    } else if status.is_true(condition::RECONCILING) {
        KStatus::InProgress
    } else if status.is_true(condition::READY) {
        KStatus::Current
    } else {
        KStatus::InProgress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ComponentState;
    use crate::render::Stage;

    fn report(outcome: Outcome) -> Report {
        Report {
            outcome,
            applied: None,
            components: None,
            webhook: None,
            upgrade: None,
        }
    }

    fn ready(message: &str) -> Outcome {
        Outcome::Ready {
            message: message.into(),
        }
    }

    fn progressing(reason: &str) -> Outcome {
        Outcome::Progressing {
            reason: reason.into(),
            message: "m".into(),
        }
    }

    fn plan(yaml: &str) -> Plan {
        crate::controller::plan::test_plan(yaml)
    }

    #[test]
    fn outcomes_map_to_kstatus() {
        let ready = next_status(None, Some(3), report(ready("ok")));
        assert_eq!(kstatus(Some(3), Some(&ready)), KStatus::Current);
        // A newer generation that meshop has not observed yet is InProgress, whatever the conditions say.
        assert_eq!(kstatus(Some(4), Some(&ready)), KStatus::InProgress);
        let progressing = next_status(None, Some(3), report(progressing("Rollout")));
        assert_eq!(kstatus(Some(3), Some(&progressing)), KStatus::InProgress);
        let stalled = next_status(None, Some(3), Report::stalled("Bad", "m".into()));
        assert_eq!(kstatus(Some(3), Some(&stalled)), KStatus::Failed);
        assert_eq!(kstatus(Some(1), None), KStatus::InProgress);
    }

    #[test]
    fn every_outcome_writes_all_three_conditions_for_its_generation() {
        for outcome in [
            ready("a"),
            progressing("R"),
            Outcome::Stalled {
                reason: "S".into(),
                message: "m".into(),
            },
        ] {
            let s = next_status(None, Some(7), report(outcome.clone()));
            let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
            assert_eq!(
                types,
                vec!["Ready", "Reconciling", "Stalled"],
                "{outcome:?}"
            );
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(7))
            );
            let truth = |t: &str| s.condition(t).unwrap().status == "True";
            let expected = match outcome {
                Outcome::Ready { .. } => (true, false, false),
                Outcome::Progressing { .. } => (false, true, false),
                Outcome::Stalled { .. } => (false, false, true),
            };
            assert_eq!(
                (truth("Ready"), truth("Reconciling"), truth("Stalled")),
                expected
            );
        }
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let first = next_status(None, Some(1), report(ready("a")));
        let mut aged = first.clone();
        for c in aged.conditions.iter_mut() {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        let again = next_status(Some(&aged), Some(2), report(ready("b")));
        let r = again.condition("Ready").unwrap();
        assert_eq!(
            r.last_transition_time.0,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
        );
        assert_eq!(r.message, "b");
        let changed = next_status(Some(&aged), Some(2), report(progressing("R")));
        assert_ne!(
            changed.condition("Ready").unwrap().last_transition_time.0,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn the_status_patch_removes_what_the_new_status_leaves_out() {
        use serde_json::json;
        let old = json!({"version": "1.30.5", "migration": {"target": "a", "pending": ["x"]},
            "revisions": [{"name": "a"}, {"name": "b"}], "webhook": {"state": "Active", "message": "m"}});
        let new = json!({"version": "1.31.1", "revisions": [{"name": "a"}],
            "webhook": {"state": "Active"}});
        assert_eq!(
            merge_patch(&old, &new),
            json!({"version": "1.31.1", "migration": null, "revisions": [{"name": "a"}],
                "webhook": {"state": "Active", "message": null}})
        );
        assert_eq!(merge_patch(&serde_json::Value::Null, &new), new);
    }

    #[test]
    fn a_report_without_findings_keeps_what_status_said() {
        let full = Report {
            outcome: ready("ok"),
            applied: Some(AppliedSpec {
                profile: "demo".into(),
                version: "1.28.2".into(),
                revision: "".into(),
            }),
            components: Some(vec![ComponentStatus {
                name: "istiod".into(),
                state: ComponentState::Ready,
                ..Default::default()
            }]),
            webhook: Some(WebhookStatus::default()),
            upgrade: None,
        };
        let first = next_status(None, Some(1), full);
        let stalled = next_status(
            Some(&first),
            Some(2),
            Report::stalled("InvalidSpec", "bad".into()),
        );
        assert_eq!(stalled.profile.as_deref(), Some("demo"));
        assert_eq!(stalled.components, first.components);
        assert_eq!(stalled.webhook, first.webhook);
        assert_eq!(stalled.observed_generation, Some(2));
    }

    #[test]
    fn the_outcome_names_what_is_waited_for_and_what_was_restored() {
        let p = plan("profile: minimal");
        let waiting = Waiting {
            stage: Stage::ControlPlane,
            keys: vec!["Deployment/istio-system/istiod".into()],
        };
        match outcome(&p, Some(&waiting), None, &[]) {
            Outcome::Progressing { reason, message } => {
                assert_eq!(reason, "Progressing");
                assert!(
                    message.contains("ControlPlane") && message.contains("istiod"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        let drifted = vec!["Service/istio-system/istiod".to_string()];
        assert!(matches!(
            outcome(&p, Some(&waiting), None, &drifted),
            Outcome::Progressing { reason, .. } if reason == "DriftCorrected"
        ));
        match outcome(&p, None, None, &drifted) {
            Outcome::Ready { message } => {
                assert!(message.starts_with("minimal profile, Istio "), "{message}");
                assert!(message.contains("1 component(s) ready"), "{message}");
                assert!(message.contains("restored 1 object(s)"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let failure = ApplyFailure {
            key: "Service/istio-system/istiod".into(),
            component: crate::render::ComponentId::Istiod,
            message: "applying Service/istio-system/istiod failed: forbidden".into(),
        };
        assert!(matches!(
            outcome(&p, None, Some(&failure), &[]),
            Outcome::Progressing { reason, message } if reason == "ApplyFailed" && message.contains("forbidden")
        ));
    }

    #[test]
    fn the_webhook_is_pending_until_its_stage_is_reached() {
        let p = plan("profile: minimal");
        assert_eq!(webhook_status(&p, true, false).state, WebhookState::Pending);
        assert_eq!(webhook_status(&p, true, true).state, WebhookState::Active);
        assert_eq!(
            webhook_status(&p, false, true).state,
            WebhookState::Degraded
        );
        let off = plan("profile: minimal\ninjection: {enabled: false}");
        assert_eq!(
            webhook_status(&off, true, true).state,
            WebhookState::Disabled
        );
    }

    #[test]
    fn ready_is_remembered_per_generation() {
        let s = next_status(None, Some(2), report(ready("ok")));
        assert!(was_ready(Some(&s), Some(2)));
        assert!(!was_ready(Some(&s), Some(3)));
        let p = next_status(None, Some(2), report(progressing("R")));
        assert!(!was_ready(Some(&p), Some(2)));
        assert!(!was_ready(None, Some(2)));
    }
}
