//! The MutatingWebhookConfiguration that points the API server at meshop's injector for one
//! MeshInstall, rendered like every other object: it is only rendered when a running operator
//! knows its endpoint and CA ([`InjectorEndpoint`]), and it rides in the stage after istiod so that
//! injection starts only once istiod is ready. Selectors follow Istio's so that labels application teams already use keep working:
//!
//! | webhook                         | namespace                                   | pod                               |
//! |---------------------------------|---------------------------------------------|-----------------------------------|
//! | `namespace.…` (default rev)     | `istio-injection=enabled`                   | `sidecar.istio.io/inject` != false |
//! | `rev.namespace.<rev>.…`         | `istio.io/rev=<rev>`, no `istio-injection`  | `sidecar.istio.io/inject` != false |
//! | `rev.object.<rev>.…`            | neither label                               | `istio.io/rev=<rev>`, inject != false |
//! | `object.…` (default rev)        | neither label                               | `sidecar.istio.io/inject=true`, no `istio.io/rev` |
//!
//! Every namespace selector also excludes the Kubernetes system namespaces, the control plane's and
//! the operator's own (see [`InjectorEndpoint::operator_namespace`]); the operator's pods also
//! carry `sidecar.istio.io/inject: "false"` as a label, which the object selectors read.
//! The selectors are disjoint, so a pod is sent at most once per revision; the handler decides again
//! from its own view anyway.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::{ComponentId, Rendered};
use crate::api::FailurePolicy;
use crate::effective::Installation;
use crate::inject::{keys, protected_namespaces};
use crate::revision;

/// Where the API server reaches meshop's injector and the CA it must trust: known only to a
/// running operator (its serving certificate rotates), so offline rendering has none.
#[derive(Clone, Debug)]
pub struct InjectorEndpoint {
    /// A Service or a URL; the path defaults to [`WEBHOOK_PATH`].
    pub client_config: WebhookClientConfig,
    /// The CA bundle (PEM).
    pub ca_bundle: String,
    /// The namespace the operator runs in. Every namespace selector leaves it out, whatever its
    /// labels: if the operator's own pods needed the webhook they serve, losing them all under
    /// `failurePolicy: Fail` would leave nothing to admit their replacements.
    pub operator_namespace: String,
}

/// The path the handler serves.
pub const WEBHOOK_PATH: &str = "/inject";
/// Seconds the API server waits for an answer before applying the failure policy.
pub(crate) const TIMEOUT_SECONDS: i32 = 10;
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
const SUFFIX: &str = "sidecar-injector.meshop.dev";

/// `meshop-sidecar-injector-<meshinstall name>`.
pub fn webhook_configuration_name(install: &Installation) -> String {
    format!("meshop-sidecar-injector-{}", install.owner.name)
}

fn req(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: if values.is_empty() {
            None
        } else {
            Some(values.iter().map(|v| v.to_string()).collect())
        },
    }
}

fn selector(reqs: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(reqs),
        match_labels: None,
    }
}

/// The registration as a rendered object of the `webhook` component.
pub(super) fn render(install: &Installation, endpoint: &InjectorEndpoint) -> Rendered {
    Rendered::new(
        ComponentId::Webhook,
        &webhook_configuration(
            install,
            endpoint.client_config.clone(),
            endpoint.ca_bundle.as_bytes(),
            &endpoint.operator_namespace,
        ),
    )
}

/// The configuration for `install`. `client_config` says where the webhook is (a Service or a URL);
/// its path defaults to [`WEBHOOK_PATH`] and its `caBundle` is set to `ca_bundle` (PEM).
pub(crate) fn webhook_configuration(
    install: &Installation,
    client_config: WebhookClientConfig,
    ca_bundle: &[u8],
    operator_namespace: &str,
) -> MutatingWebhookConfiguration {
    let rev = revision::name(&install.revision);
    webhook_configuration_for(
        install,
        client_config,
        ca_bundle,
        operator_namespace,
        &[rev],
        install.revision.is_empty(),
    )
}

/// The registration of a revision-based install: one pair of `rev.*` webhooks per revision and
/// per tag in `names`, plus the `istio-injection=enabled` and `sidecar.istio.io/inject=true`
/// webhooks of the default tag. Every webhook sends pods to meshop's one injector, which resolves
/// a tag to the revision it points at from its cache; moving a tag changes no registration.
pub(super) fn render_routes(
    install: &Installation,
    endpoint: &InjectorEndpoint,
    names: &[&str],
) -> Rendered {
    Rendered::new(
        ComponentId::Webhook,
        &webhook_configuration_for(
            install,
            endpoint.client_config.clone(),
            endpoint.ca_bundle.as_bytes(),
            &endpoint.operator_namespace,
            names,
            names.contains(&revision::DEFAULT),
        ),
    )
}

/// The configuration sending pods that select any of `names` (revisions or tags) to the injector;
/// `default_hooks` adds the `istio-injection=enabled` and `sidecar.istio.io/inject=true` ones.
fn webhook_configuration_for(
    install: &Installation,
    mut client_config: WebhookClientConfig,
    ca_bundle: &[u8],
    operator_namespace: &str,
    names: &[&str],
    default_hooks: bool,
) -> MutatingWebhookConfiguration {
    client_config.ca_bundle = Some(ByteString(ca_bundle.to_vec()));
    if let Some(svc) = client_config.service.as_mut() {
        svc.path.get_or_insert_with(|| WEBHOOK_PATH.to_string());
    }
    let rev = revision::name(&install.revision);
    let mut protected = protected_namespaces(&install.namespace).to_vec();
    if !protected.contains(&operator_namespace) {
        protected.push(operator_namespace);
    }
    let not_protected = || req(NAME_LABEL, "NotIn", &protected);
    let not_opted_out = || req(keys::INJECT, "NotIn", &["false"]);
    let unlabelled_ns = || {
        vec![
            req(keys::NAMESPACE_INJECTION, "DoesNotExist", &[]),
            req(keys::REV, "DoesNotExist", &[]),
            not_protected(),
        ]
    };

    let hook = |name: String,
                ns: Vec<LabelSelectorRequirement>,
                obj: Vec<LabelSelectorRequirement>| MutatingWebhook {
        name,
        admission_review_versions: vec!["v1".into()],
        client_config: client_config.clone(),
        failure_policy: Some(
            match install.injection.failure_policy {
                FailurePolicy::Fail => "Fail",
                FailurePolicy::Ignore => "Ignore",
            }
            .into(),
        ),
        match_policy: Some("Equivalent".into()),
        namespace_selector: Some(selector(ns)),
        object_selector: Some(selector(obj)),
        reinvocation_policy: Some("Never".into()),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(vec!["".into()]),
            api_versions: Some(vec!["v1".into()]),
            operations: Some(vec!["CREATE".into()]),
            resources: Some(vec!["pods".into()]),
            scope: Some("Namespaced".into()),
        }]),
        side_effects: "None".into(),
        timeout_seconds: Some(TIMEOUT_SECONDS),
        match_conditions: None,
    };

    let mut webhooks = Vec::new();
    if default_hooks {
        webhooks.push(hook(
            format!("namespace.{SUFFIX}"),
            vec![
                req(keys::NAMESPACE_INJECTION, "In", &["enabled"]),
                not_protected(),
            ],
            vec![not_opted_out()],
        ));
    }
    for name in names {
        webhooks.push(hook(
            format!("rev.namespace.{name}.{SUFFIX}"),
            vec![
                req(keys::REV, "In", &[name]),
                req(keys::NAMESPACE_INJECTION, "DoesNotExist", &[]),
                not_protected(),
            ],
            vec![not_opted_out()],
        ));
        webhooks.push(hook(
            format!("rev.object.{name}.{SUFFIX}"),
            unlabelled_ns(),
            vec![req(keys::REV, "In", &[name]), not_opted_out()],
        ));
    }
    if default_hooks {
        webhooks.push(hook(
            format!("object.{SUFFIX}"),
            unlabelled_ns(),
            vec![
                req(keys::INJECT, "In", &["true"]),
                req(keys::REV, "DoesNotExist", &[]),
            ],
        ));
    }

    let mut metadata = super::cluster_meta(
        install,
        ComponentId::Webhook,
        &webhook_configuration_name(install),
    );
    metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(keys::REV.to_string(), rev.to_string());
    metadata.owner_references = super::owner_reference(install).map(|o| vec![o]);
    MutatingWebhookConfiguration {
        metadata,
        webhooks: Some(webhooks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::ServiceReference;

    use crate::effective::Owner;

    fn install(revision: &str) -> Installation {
        let spec: crate::api::MeshInstallSpec =
            serde_json::from_value(serde_json::json!({"profile": "minimal", "revision": revision}))
                .unwrap();
        Installation::resolve(
            Owner {
                name: "mesh".into(),
                uid: Some("u-1".into()),
            },
            &spec,
        )
        .unwrap()
    }

    fn svc() -> WebhookClientConfig {
        WebhookClientConfig {
            service: Some(ServiceReference {
                name: "meshop-webhook".into(),
                namespace: "meshop-system".into(),
                path: None,
                port: Some(443),
            }),
            ..Default::default()
        }
    }

    fn exprs(s: &Option<LabelSelector>) -> Vec<(String, String, Vec<String>)> {
        s.as_ref()
            .and_then(|s| s.match_expressions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.key, r.operator, r.values.unwrap_or_default()))
            .collect()
    }

    fn has(s: &Option<LabelSelector>, key: &str, op: &str, values: &[&str]) -> bool {
        exprs(s).iter().any(|(k, o, v)| {
            k == key && o == op && v.iter().map(String::as_str).eq(values.iter().copied())
        })
    }

    #[test]
    fn default_revision_has_four_webhooks_with_common_settings() {
        let i = install("");
        let mwc = webhook_configuration(&i, svc(), b"PEM", "meshop-system");
        assert_eq!(
            mwc.metadata.name.as_deref(),
            Some("meshop-sidecar-injector-mesh")
        );
        assert_eq!(
            mwc.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
        let hooks = mwc.webhooks.unwrap();
        let names: Vec<_> = hooks.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "namespace.sidecar-injector.meshop.dev",
                "rev.namespace.default.sidecar-injector.meshop.dev",
                "rev.object.default.sidecar-injector.meshop.dev",
                "object.sidecar-injector.meshop.dev"
            ]
        );
        let excluded = [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            i.namespace.as_str(),
            "meshop-system",
        ];
        for h in &hooks {
            assert_eq!(h.admission_review_versions, ["v1"]);
            assert_eq!(h.side_effects, "None");
            assert_eq!(h.timeout_seconds, Some(10));
            assert_eq!(h.reinvocation_policy.as_deref(), Some("Never"));
            assert!(
                h.failure_policy.as_deref() == Some("Fail")
                    || h.failure_policy.as_deref() == Some("Ignore")
            );
            assert_eq!(h.client_config.ca_bundle.as_ref().unwrap().0, b"PEM");
            assert_eq!(
                h.client_config.service.as_ref().unwrap().path.as_deref(),
                Some("/inject")
            );
            let r = &h.rules.as_ref().unwrap()[0];
            assert_eq!(r.operations.as_deref(), Some(&["CREATE".to_string()][..]));
            assert_eq!(r.resources.as_deref(), Some(&["pods".to_string()][..]));
            assert_eq!(r.api_versions.as_deref(), Some(&["v1".to_string()][..]));
            assert!(
                has(
                    &h.namespace_selector,
                    "kubernetes.io/metadata.name",
                    "NotIn",
                    &excluded
                ),
                "{}",
                h.name
            );
        }
        assert!(has(
            &hooks[0].namespace_selector,
            "istio-injection",
            "In",
            &["enabled"]
        ));
        assert!(has(
            &hooks[0].object_selector,
            "sidecar.istio.io/inject",
            "NotIn",
            &["false"]
        ));
        assert!(has(
            &hooks[1].namespace_selector,
            "istio.io/rev",
            "In",
            &["default"]
        ));
        assert!(has(
            &hooks[1].namespace_selector,
            "istio-injection",
            "DoesNotExist",
            &[]
        ));
        assert!(has(
            &hooks[3].namespace_selector,
            "istio-injection",
            "DoesNotExist",
            &[]
        ));
        assert!(has(
            &hooks[3].namespace_selector,
            "istio.io/rev",
            "DoesNotExist",
            &[]
        ));
        assert!(has(
            &hooks[3].object_selector,
            "sidecar.istio.io/inject",
            "In",
            &["true"]
        ));
    }

    #[test]
    fn revisioned_install_has_only_rev_webhooks() {
        let mwc = webhook_configuration(
            &install("canary"),
            WebhookClientConfig {
                url: Some("https://10.0.0.1:9443/inject".into()),
                ..Default::default()
            },
            b"CA",
            "meshop-system",
        );
        let hooks = mwc.webhooks.unwrap();
        assert_eq!(hooks.len(), 2);
        assert!(hooks.iter().all(|h| h.name.contains(".canary.")));
        assert!(has(
            &hooks[0].namespace_selector,
            "istio.io/rev",
            "In",
            &["canary"]
        ));
        assert!(has(
            &hooks[0].object_selector,
            "sidecar.istio.io/inject",
            "NotIn",
            &["false"]
        ));
        assert!(has(
            &hooks[1].object_selector,
            "istio.io/rev",
            "In",
            &["canary"]
        ));
        assert_eq!(
            hooks[0].client_config.url.as_deref(),
            Some("https://10.0.0.1:9443/inject")
        );
    }

    #[test]
    fn failure_policy_follows_the_install() {
        let mut i = install("");
        i.injection.failure_policy = FailurePolicy::Ignore;
        let hooks = webhook_configuration(&i, svc(), b"", "meshop-system")
            .webhooks
            .unwrap();
        assert!(
            hooks
                .iter()
                .all(|h| h.failure_policy.as_deref() == Some("Ignore"))
        );
        i.injection.failure_policy = FailurePolicy::Fail;
        let hooks = webhook_configuration(&i, svc(), b"", "meshop-system")
            .webhooks
            .unwrap();
        assert!(
            hooks
                .iter()
                .all(|h| h.failure_policy.as_deref() == Some("Fail"))
        );
    }
}
