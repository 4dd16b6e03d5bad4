//! Which workload a pod belongs to. At admission time a Deployment's pod has no name yet, only a
//! generateName and an owner ReplicaSet, so the workload is worked out from the owner chain the
//! way Istio does (telemetry and the canonical-service labels depend on it).

use k8s_openapi::api::core::v1::Pod;

/// The workload that owns a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub(crate) name: String,
    pub(crate) kind: String,
    /// `group/version`, or just `version` for the core group.
    pub(crate) api_version: String,
}

impl Workload {
    /// The `ISTIO_META_OWNER` URI, such as `kubernetes://apis/apps/v1/namespaces/ns/deployments/x`.
    pub(crate) fn owner_uri(&self, namespace: &str) -> String {
        crate::istio_proxy::owner_uri(&self.api_version, &self.kind, namespace, &self.name)
    }
}

/// The pod's workload, from its controller owner reference, else the pod itself.
pub(crate) fn workload_of(pod: &Pod) -> Workload {
    let owner = pod.metadata.owner_references.as_ref().and_then(|refs| {
        refs.iter()
            .find(|r| r.controller == Some(true))
            .or_else(|| refs.first())
    });
    let Some(owner) = owner else {
        return Workload {
            name: pod_base_name(pod),
            kind: "Pod".into(),
            api_version: "v1".into(),
        };
    };
    match owner.kind.as_str() {
        // A Deployment's ReplicaSet is `<deployment>-<pod-template-hash>`.
        "ReplicaSet" if owner.api_version.starts_with("apps/") => {
            match strip_template_hash(pod, &owner.name) {
                Some(deployment) => Workload {
                    name: deployment.into(),
                    kind: "Deployment".into(),
                    api_version: "apps/v1".into(),
                },
                None => Workload {
                    name: owner.name.clone(),
                    kind: "ReplicaSet".into(),
                    api_version: owner.api_version.clone(),
                },
            }
        }
        // A CronJob's Job is `<cronjob>-<scheduled time in minutes>`.
        "Job" => match owner.name.rsplit_once('-') {
            Some((cron, stamp))
                if !cron.is_empty()
                    && !stamp.is_empty()
                    && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Workload {
                    name: cron.into(),
                    kind: "CronJob".into(),
                    api_version: "batch/v1".into(),
                }
            }
            _ => Workload {
                name: owner.name.clone(),
                kind: "Job".into(),
                api_version: owner.api_version.clone(),
            },
        },
        kind => Workload {
            name: owner.name.clone(),
            kind: kind.into(),
            api_version: owner.api_version.clone(),
        },
    }
}

/// The ReplicaSet's name without its `-<pod-template-hash>` suffix, when the pod carries the hash
/// label (only Deployment-made ReplicaSets do).
fn strip_template_hash<'a>(pod: &Pod, rs_name: &'a str) -> Option<&'a str> {
    let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
    rs_name
        .strip_suffix(hash.as_str())?
        .strip_suffix('-')
        .filter(|s| !s.is_empty())
}

/// The pod's name, or its generateName prefix without the trailing dash.
pub(crate) fn pod_base_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => prefix.trim_end_matches('-').to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::testutil::{pod_with, typical_pod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(kind: &str, api_version: &str, name: &str) -> Pod {
        let mut p = pod_with(&[], &[]);
        p.metadata.owner_references = Some(vec![OwnerReference {
            kind: kind.into(),
            api_version: api_version.into(),
            name: name.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn deployment_pods_name_their_deployment() {
        let w = workload_of(&typical_pod());
        assert_eq!(
            (w.name.as_str(), w.kind.as_str()),
            ("reviews-v1", "Deployment")
        );
        assert_eq!(
            w.owner_uri("bookinfo"),
            "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v1"
        );
    }

    #[test]
    fn other_owners() {
        let w = workload_of(&owned_by("ReplicaSet", "apps/v1", "plain-rs"));
        assert_eq!(
            (w.name.as_str(), w.kind.as_str()),
            ("plain-rs", "ReplicaSet")
        );
        let w = workload_of(&owned_by("Job", "batch/v1", "nightly-29000000"));
        assert_eq!(
            (w.name.as_str(), w.kind.as_str(), w.api_version.as_str()),
            ("nightly", "CronJob", "batch/v1")
        );
        let w = workload_of(&owned_by("Job", "batch/v1", "migrate"));
        assert_eq!((w.name.as_str(), w.kind.as_str()), ("migrate", "Job"));
        let w = workload_of(&owned_by("StatefulSet", "apps/v1", "db"));
        assert_eq!(
            w.owner_uri("x"),
            "kubernetes://apis/apps/v1/namespaces/x/statefulsets/db"
        );
    }

    #[test]
    fn bare_pods_are_their_own_workload() {
        let w = workload_of(&pod_with(&[], &[]));
        assert_eq!(
            w.owner_uri("apps"),
            "kubernetes://apis/v1/namespaces/apps/pods/web"
        );
        let mut p = pod_with(&[], &[]);
        p.metadata.name = None;
        p.metadata.generate_name = Some("batch-".into());
        assert_eq!(pod_base_name(&p), "batch");
    }
}
