//! Small builders for Kubernetes types that rendering, injection and the operator's own RBAC all
//! need, so each is written once.

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, ResourceFieldSelector, VolumeMount,
};
use k8s_openapi::api::rbac::v1::PolicyRule;

/// `["a", "b"]` as owned strings.
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An RBAC rule over API groups and resources.
pub fn policy_rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

/// An env var with a literal value.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// An env var from a pod field (`metadata.name`, `status.podIP`, ...).
pub fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// An env var from the container's own resources (`limits.cpu`, `limits.memory`).
/// [`resource_env`] with divisor 1 written out (what the kubelet reads when there is none), as
/// Istio's node-agent charts write it.
pub fn resource_env_unit(name: &str, resource: &str) -> EnvVar {
    let mut e = resource_env(name, resource);
    if let Some(r) = e
        .value_from
        .as_mut()
        .and_then(|v| v.resource_field_ref.as_mut())
    {
        r.divisor = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "1".into(),
        ));
    }
    e
}

pub fn resource_env(name: &str, resource: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                resource: resource.into(),
                divisor: None,
                container_name: None,
            }),
            ..Default::default()
        }),
    }
}

/// A volume mount; `read_only` is written only when true, as the API server defaults it to false.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}
