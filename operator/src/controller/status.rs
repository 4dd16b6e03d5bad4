//! Building MeshInstall status the way kstatus, Argo CD and Flux read it.
//!
//! kstatus rules (sigs.k8s.io/cli-utils/pkg/kstatus): a resource is Current when
//! `observedGeneration == generation`, `Reconciling` is not True and `Stalled` is not True; it is
//! InProgress while `Reconciling` is True (or the generation is not observed yet); it is Failed
//! when `Stalled` is True. meshop always writes all three conditions, so no reader has to guess.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{ComponentStatus, MeshInstallStatus, condition};

/// What a reconcile pass concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
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
pub fn conditions(outcome: &Outcome, generation: Option<i64>) -> Vec<Condition> {
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
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
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

/// The next status: the old one with this pass's findings.
pub fn next_status(
    old: Option<&MeshInstallStatus>,
    outcome: &Outcome,
    generation: Option<i64>,
    applied: Option<(String, String, String)>,
    components: Option<Vec<ComponentStatus>>,
) -> MeshInstallStatus {
    let mut status = old.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = merge_conditions(&status.conditions, conditions(outcome, generation));
    if let Some((profile, version, revision)) = applied {
        status.profile = Some(profile);
        status.version = Some(version);
        status.revision = Some(revision);
    }
    if let Some(components) = components {
        status.components = components;
    }
    status
}

/// How kstatus classifies a status: the same rules Argo CD and Flux apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KStatus {
    Current,
    InProgress,
    Failed,
}

/// Computes the kstatus of a MeshInstall from its generation and status alone.
pub fn kstatus(generation: Option<i64>, status: Option<&MeshInstallStatus>) -> KStatus {
    let Some(status) = status else {
        return KStatus::InProgress;
    };
    if status.observed_generation.is_none() || status.observed_generation < generation {
        return KStatus::InProgress;
    }
    let is_true = |t: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is_true(condition::STALLED) {
        KStatus::Failed
    } else if is_true(condition::RECONCILING) {
        KStatus::InProgress
    } else if is_true(condition::READY) {
        KStatus::Current
    } else {
        KStatus::InProgress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_kstatus() {
        let ready = next_status(
            None,
            &Outcome::Ready {
                message: "ok".into(),
            },
            Some(3),
            None,
            None,
        );
        assert_eq!(kstatus(Some(3), Some(&ready)), KStatus::Current);
        // A newer generation that meshop has not observed yet is InProgress, whatever the conditions say.
        assert_eq!(kstatus(Some(4), Some(&ready)), KStatus::InProgress);
        let progressing = next_status(
            None,
            &Outcome::Progressing {
                reason: "Rollout".into(),
                message: "m".into(),
            },
            Some(3),
            None,
            None,
        );
        assert_eq!(kstatus(Some(3), Some(&progressing)), KStatus::InProgress);
        let stalled = next_status(
            None,
            &Outcome::Stalled {
                reason: "Bad".into(),
                message: "m".into(),
            },
            Some(3),
            None,
            None,
        );
        assert_eq!(kstatus(Some(3), Some(&stalled)), KStatus::Failed);
        assert_eq!(kstatus(Some(1), None), KStatus::InProgress);
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let first = next_status(
            None,
            &Outcome::Ready {
                message: "a".into(),
            },
            Some(1),
            None,
            None,
        );
        let mut aged = first.clone();
        for c in aged.conditions.iter_mut() {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        let again = next_status(
            Some(&aged),
            &Outcome::Ready {
                message: "b".into(),
            },
            Some(2),
            None,
            None,
        );
        let ready = again
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            ready.last_transition_time.0,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
        );
        assert_eq!(ready.message, "b");
        let changed = next_status(
            Some(&aged),
            &Outcome::Progressing {
                reason: "R".into(),
                message: "m".into(),
            },
            Some(2),
            None,
            None,
        );
        let ready = changed
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_ne!(
            ready.last_transition_time.0,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH
        );
    }
}
