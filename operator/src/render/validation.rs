//! istiod's ValidatingWebhookConfiguration: the API server sends every create and update of Istio
//! configuration (networking, security, telemetry, extensions) to istiod's `/validate`, so a
//! broken VirtualService is refused at `kubectl apply` instead of being ignored later.
//!
//! The fields are shared with istiod, as in an `istioctl install`:
//!
//! - meshop owns the registration: name, labels, the Service, rules and selectors;
//! - istiod's validation controller owns `caBundle` (its CA signs its serving certificate) and
//!   `failurePolicy`. It finds the configuration by the label `istio.io/rev=<revision>`, writes
//!   its CA bundle, and moves `failurePolicy` from `Ignore` to `Fail` once a dry-run of a known-bad
//!   Gateway is refused through the webhook, which proves the API server reaches it.
//!
//! So meshop never applies those two fields. `failurePolicy: Ignore` is set once, when meshop
//! creates the object (the API server would otherwise default it to `Fail`, and every Istio
//! object would be refused until istiod is up); see [`Rendered::initial`] and
//! `controller::apply`.
//!
//! Objects meshop itself manages (its mesh-wide PeerAuthentication) are left out by the object
//! selector: meshop renders them valid by construction, and they must stay appliable while istiod
//! is down (for instance during its own upgrade), when `failurePolicy: Fail` would refuse them.

use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde_json::json;

use super::common::{LABEL_MANAGED_BY, MANAGED_BY, cluster_meta};
use super::{ComponentId, Rendered};
use crate::effective::Installation;

/// The API groups of Istio configuration that istiod validates.
const GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
];
/// The path istiod serves validation on (its HTTPS webhook port).
pub const VALIDATE_PATH: &str = "/validate";
/// The webhook for objects labelled with this revision.
const REVISION_WEBHOOK: &str = "rev.validation.istio.io";
/// The default revision's webhook for objects with no revision label.
const UNLABELLED_WEBHOOK: &str = "validation.istio.io";
const REV_LABEL: &str = "istio.io/rev";

/// `istio-validator[-<revision>]-<namespace>`: unique per installed control plane.
pub fn name(install: &Installation) -> String {
    format!(
        "istio-validator{}-{}",
        install.revision_suffix(),
        install.namespace
    )
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn webhook(
    install: &Installation,
    name: &str,
    revision: LabelSelectorRequirement,
) -> ValidatingWebhook {
    ValidatingWebhook {
        name: name.into(),
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                name: install.istiod_name(),
                namespace: install.namespace.clone(),
                path: Some(VALIDATE_PATH.into()),
                port: Some(443),
            }),
            ..Default::default()
        },
        rules: Some(vec![RuleWithOperations {
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            api_groups: Some(GROUPS.iter().map(|g| g.to_string()).collect()),
            api_versions: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            scope: None,
        }]),
        object_selector: Some(LabelSelector {
            match_expressions: Some(vec![
                revision,
                requirement(LABEL_MANAGED_BY, "NotIn", &[MANAGED_BY]),
            ]),
            match_labels: None,
        }),
        // Validation only reads; istiod's own readiness check relies on dry-run being allowed.
        side_effects: "None".into(),
        admission_review_versions: vec!["v1".into()],
        timeout_seconds: Some(10),
        // failurePolicy is istiod's (see the module comment): never applied by meshop.
        failure_policy: None,
        ..Default::default()
    }
}

/// The registration, as meshop applies it on every pass (no `caBundle`, no `failurePolicy`), with
/// `failurePolicy: Ignore` for each webhook as the fields set only at creation. `unlabelled`: this
/// revision also validates objects without an `istio.io/rev` label (the default revision's job).
///
/// The list of webhooks of one configuration must never change: `meshop-initial` keeps owning a
/// webhook's `failurePolicy` until istiod takes it over, so a webhook meshop stopped applying
/// would be left behind as an invalid remnant (found by the canary test).
pub(super) fn render(install: &Installation, unlabelled: bool) -> Rendered {
    let revision = install.revision_label();
    let mut webhooks = vec![webhook(
        install,
        REVISION_WEBHOOK,
        requirement(REV_LABEL, "In", &[revision]),
    )];
    // Objects without a revision label belong to the default revision, as with istioctl.
    if unlabelled {
        webhooks.push(webhook(
            install,
            UNLABELLED_WEBHOOK,
            requirement(REV_LABEL, "DoesNotExist", &[]),
        ));
    }
    let initial = json!({
        "webhooks": webhooks
            .iter()
            .map(|w| json!({ "name": w.name, "failurePolicy": "Ignore" }))
            .collect::<Vec<_>>()
    });
    let mut meta = cluster_meta(install, ComponentId::Istiod, &name(install));
    let labels = meta.labels.get_or_insert_default();
    // istiod's validation controller selects the configurations it patches by this label.
    labels.insert(REV_LABEL.into(), revision.into());
    labels.insert("istio".into(), "istiod".into());
    let configuration = ValidatingWebhookConfiguration {
        metadata: meta,
        webhooks: Some(webhooks),
    };
    Rendered::new(ComponentId::Istiod, &configuration).with_initial(initial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MeshInstallSpec;
    use crate::effective::Owner;

    fn install(revision: &str) -> Installation {
        let spec: MeshInstallSpec =
            serde_json::from_value(json!({ "profile": "minimal", "revision": revision })).unwrap();
        Installation::resolve(
            Owner {
                name: "m".into(),
                uid: None,
            },
            &spec,
        )
        .unwrap()
    }

    fn webhooks(r: &Rendered) -> Vec<serde_json::Value> {
        hooks(&r.object)
    }

    fn hooks(o: &kube::api::DynamicObject) -> Vec<serde_json::Value> {
        o.data["webhooks"].as_array().unwrap().clone()
    }

    #[test]
    fn meshop_never_applies_the_fields_istiod_owns() {
        for revision in ["", "canary"] {
            let r = render(&install(revision), revision.is_empty());
            for w in webhooks(&r) {
                assert!(w.get("failurePolicy").is_none(), "{w}");
                assert!(w["clientConfig"].get("caBundle").is_none(), "{w}");
            }
            // ...but creates the object failing open until istiod proves it serves.
            let created = hooks(&r.creation_object());
            assert_eq!(created.len(), webhooks(&r).len());
            for w in created {
                assert_eq!(w["failurePolicy"], "Ignore", "{w}");
                assert_eq!(w["clientConfig"]["service"]["path"], "/validate", "{w}");
            }
            let patch = r.initial_patch().unwrap();
            assert_eq!(patch.metadata.name.as_deref(), Some(r.name()));
            assert!(patch.data.get("webhooks").is_some());
        }
    }

    #[test]
    fn istiod_finds_it_by_its_revision_label() {
        let r = render(&install("canary"), false);
        let labels = r.object.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["istio.io/rev"], "canary");
        assert_eq!(r.name(), "istio-validator-canary-istio-system");
        let default = render(&install(""), true);
        assert_eq!(
            default.object.metadata.labels.as_ref().unwrap()["istio.io/rev"],
            "default"
        );
        assert_eq!(default.name(), "istio-validator-istio-system");
    }

    #[test]
    fn only_the_default_revision_validates_unlabelled_objects() {
        let names = |revision| -> Vec<String> {
            webhooks(&render(&install(revision), revision.is_empty()))
                .iter()
                .map(|w| w["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(""), [REVISION_WEBHOOK, UNLABELLED_WEBHOOK]);
        assert_eq!(names("canary"), [REVISION_WEBHOOK]);
        for w in webhooks(&render(&install("canary"), false)) {
            let expressions = w["objectSelector"]["matchExpressions"].as_array().unwrap();
            assert!(expressions.contains(&json!({
                "key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["meshop"]
            })));
            assert_eq!(w["clientConfig"]["service"]["name"], "istiod-canary");
            assert_eq!(w["clientConfig"]["service"]["path"], "/validate");
        }
    }
}
