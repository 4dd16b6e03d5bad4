//! Which pods get a sidecar. Mirrors the selectors of Istio's injection webhooks so that moving a
//! cluster from Istio's injector to meshop's changes nothing for application teams.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use super::{InjectionConfig, keys};
use crate::revision;

/// Kubernetes' own namespaces: injecting there can break the cluster itself.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The namespaces that never get sidecars: Kubernetes' own and the control plane's (`istiod`
/// must not wait on a sidecar that waits on `istiod`).
pub(crate) fn protected_namespaces(control_plane_namespace: &str) -> [&str; 4] {
    let [a, b, c] = SYSTEM_NAMESPACES;
    [a, b, c, control_plane_namespace]
}

/// The outcome of selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Inject,
    Skip(SkipReason),
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// A Kubernetes system namespace or the control plane's own namespace.
    ProtectedNamespace(String),
    /// The pod shares the node's network namespace; redirecting it would capture the node's traffic.
    HostNetwork,
    /// `sidecar.istio.io/status` is present: the pod already has a sidecar.
    AlreadyInjected,
    /// `sidecar.istio.io/inject` says no.
    OptedOut,
    /// Neither the namespace nor the pod selects this revision.
    NotSelected,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ProtectedNamespace(ns) => write!(f, "namespace {ns} never gets sidecars"),
            SkipReason::HostNetwork => f.write_str("pod uses hostNetwork"),
            SkipReason::AlreadyInjected => {
                f.write_str("pod is already injected (sidecar.istio.io/status is set)")
            }
            SkipReason::OptedOut => f.write_str("pod opted out with sidecar.istio.io/inject"),
            SkipReason::NotSelected => {
                f.write_str("neither the namespace nor the pod selects this revision")
            }
        }
    }
}

/// The whole selection rule in one call; the webhook, which resolves tags to revisions first,
/// runs its two halves ([`select_revision`], then [`decide_selected`]).
#[cfg_attr(not(test), allow(dead_code))]
/// Decides whether the webhook injects `pod`, created in `namespace` whose labels are
/// `namespace_labels`, for the control-plane revision in `cfg`.
pub(crate) fn decide(
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    pod: &Pod,
    cfg: &InjectionConfig,
) -> Decision {
    if let Decision::Skip(reason) = decide_selected(namespace, pod, cfg) {
        return Decision::Skip(reason);
    }
    if selected(namespace_labels, pod, cfg) {
        Decision::Inject
    } else {
        Decision::Skip(SkipReason::NotSelected)
    }
}

/// [`decide`] for a pod whose revision the caller has already chosen from its labels (the
/// webhook, which resolved a tag to the revision `cfg` belongs to): only the protected
/// namespaces and the pod's vetoes are checked.
pub(crate) fn decide_selected(namespace: &str, pod: &Pod, cfg: &InjectionConfig) -> Decision {
    if protected_namespaces(&cfg.control_plane_namespace).contains(&namespace) {
        return Decision::Skip(SkipReason::ProtectedNamespace(namespace.to_string()));
    }
    match pod_veto(pod) {
        Some(reason) => Decision::Skip(reason),
        None => Decision::Inject,
    }
}

/// Selection for `meshop inject -f`, where the namespace's labels are unknown: the user asked for
/// injection, so every pod gets a sidecar unless it opts out or uses the host's network.
///
/// A pod injected before is injected again, as `istioctl kube-inject` does (the engine strips
/// what the earlier injection added). The webhook instead admits such a pod unchanged: the API
/// server may call it again on the same pod (reinvocation), and a pod that already runs the
/// mesh's sidecar is not rewritten at admission.
pub(crate) fn offline_decide(pod: &Pod) -> Decision {
    match pod_veto(pod) {
        Some(SkipReason::AlreadyInjected) | None => Decision::Inject,
        Some(reason) => Decision::Skip(reason),
    }
}

/// Reasons found on the pod alone that always win over any selection.
fn pod_veto(pod: &Pod) -> Option<SkipReason> {
    if pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::STATUS))
    {
        return Some(SkipReason::AlreadyInjected);
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Some(SkipReason::HostNetwork);
    }
    if inject_switch(pod) == Some(false) {
        return Some(SkipReason::OptedOut);
    }
    None
}

/// The pod's `sidecar.istio.io/inject` choice. The label is what Istio's webhook selectors use;
/// the older annotation is still read when there is no label. Opting out accepts Istio's spellings
/// of "no"; opting in needs exactly `true`, as Istio's object selector does.
fn inject_switch(pod: &Pod) -> Option<bool> {
    let value = label(pod, keys::INJECT).or_else(|| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::INJECT))
            .map(String::as_str)
    })?;
    match value.to_ascii_lowercase().as_str() {
        "false" | "no" | "n" | "off" => Some(false),
        _ if value == "true" => Some(true),
        _ => None,
    }
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The revision (by [`revision::name`]) that a pod's and its namespace's labels send it to, or
/// `None` when they ask for no sidecar. Istio's precedence:
/// 1. the namespace's `istio-injection`: `enabled` means the default revision, any other value
///    (such as `disabled`) switches injection off for the namespace, whatever the pod says;
/// 2. the namespace's `istio.io/rev`;
/// 3. the pod's `istio.io/rev`;
/// 4. the pod's `sidecar.istio.io/inject=true`: the default revision.
///
/// The webhook looks the revision's settings up with this; [`decide`] checks with it that they
/// are the settings it was given. Pod vetoes (opt-out, hostNetwork, already injected) and
/// protected namespaces are [`decide`]'s, not this function's.
pub(crate) fn select_revision<'a>(
    namespace_labels: &'a BTreeMap<String, String>,
    pod: &'a Pod,
) -> Option<&'a str> {
    if let Some(value) = namespace_labels.get(keys::NAMESPACE_INJECTION) {
        return (value == "enabled").then_some(revision::DEFAULT);
    }
    if let Some(rev) = namespace_labels.get(keys::REV) {
        return Some(revision::name(rev));
    }
    match label(pod, keys::REV) {
        Some(rev) => Some(revision::name(rev)),
        None => (inject_switch(pod) == Some(true)).then_some(revision::DEFAULT),
    }
}

/// Whether the namespace or the pod selects `cfg`'s revision (the pod has not vetoed).
fn selected(ns_labels: &BTreeMap<String, String>, pod: &Pod, cfg: &InjectionConfig) -> bool {
    select_revision(ns_labels, pod) == Some(revision::name(&cfg.revision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::testutil::{cfg, labels, pod_with};

    fn ns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        labels(pairs)
    }

    fn canary() -> InjectionConfig {
        InjectionConfig {
            revision: "canary".into(),
            ..cfg()
        }
    }

    fn run(
        ns_labels: &[(&str, &str)],
        pod_labels: &[(&str, &str)],
        c: &InjectionConfig,
    ) -> Decision {
        decide("apps", &ns(ns_labels), &pod_with(pod_labels, &[]), c)
    }

    #[test]
    fn namespace_label_enabled_selects_the_default_revision() {
        assert_eq!(
            run(&[("istio-injection", "enabled")], &[], &cfg()),
            Decision::Inject
        );
        assert_eq!(
            run(&[("istio-injection", "enabled")], &[], &canary()),
            Decision::Skip(SkipReason::NotSelected)
        );
    }

    #[test]
    fn namespace_injection_disabled_or_other_value_does_not_select() {
        assert_eq!(
            run(&[("istio-injection", "disabled")], &[], &cfg()),
            Decision::Skip(SkipReason::NotSelected)
        );
        // Even a pod opting in cannot override a namespace that switched injection off.
        assert_eq!(
            run(
                &[("istio-injection", "disabled")],
                &[("sidecar.istio.io/inject", "true")],
                &cfg()
            ),
            Decision::Skip(SkipReason::NotSelected)
        );
    }

    #[test]
    fn namespace_rev_label_selects_that_revision_only() {
        assert_eq!(
            run(&[("istio.io/rev", "canary")], &[], &canary()),
            Decision::Inject
        );
        assert_eq!(
            run(&[("istio.io/rev", "canary")], &[], &cfg()),
            Decision::Skip(SkipReason::NotSelected)
        );
        assert_eq!(
            run(&[("istio.io/rev", "stable")], &[], &canary()),
            Decision::Skip(SkipReason::NotSelected)
        );
        assert_eq!(
            run(&[("istio.io/rev", "default")], &[], &cfg()),
            Decision::Inject
        );
    }

    /// Ambient enrollment (istio.io/dataplane-mode) is not an injection selector: Istio's
    /// injection webhooks select on istio-injection, istio.io/rev and sidecar.istio.io/inject
    /// only, so an ambient pod gets a sidecar exactly where one of those asks for it (and then
    /// stays a sidecar pod: the CNI agent and ztunnel leave pods with a sidecar alone).
    #[test]
    fn ambient_enrollment_alone_never_injects() {
        let ambient = ("istio.io/dataplane-mode", "ambient");
        assert_eq!(
            run(&[ambient], &[], &cfg()),
            Decision::Skip(SkipReason::NotSelected)
        );
        assert_eq!(
            run(&[], &[ambient], &cfg()),
            Decision::Skip(SkipReason::NotSelected)
        );
        // Where Istio would inject, so does meshop: the namespace or the pod asks for it.
        assert_eq!(
            run(&[ambient, ("istio-injection", "enabled")], &[], &cfg()),
            Decision::Inject
        );
        assert_eq!(
            run(&[ambient], &[("sidecar.istio.io/inject", "true")], &cfg()),
            Decision::Inject
        );
        assert_eq!(
            run(
                &[("istio-injection", "enabled")],
                &[ambient, ("sidecar.istio.io/inject", "false")],
                &cfg()
            ),
            Decision::Skip(SkipReason::OptedOut)
        );
    }

    #[test]
    fn istio_injection_label_wins_over_rev_label() {
        let both = [("istio-injection", "enabled"), ("istio.io/rev", "canary")];
        assert_eq!(
            run(&both, &[], &canary()),
            Decision::Skip(SkipReason::NotSelected)
        );
        assert_eq!(run(&both, &[], &cfg()), Decision::Inject);
    }

    #[test]
    fn pod_opt_in_in_unlabelled_namespace() {
        assert_eq!(
            run(&[], &[], &cfg()),
            Decision::Skip(SkipReason::NotSelected)
        );
        assert_eq!(
            run(&[], &[("sidecar.istio.io/inject", "true")], &cfg()),
            Decision::Inject
        );
        // A revision needs the pod to name it.
        assert_eq!(
            run(&[], &[("sidecar.istio.io/inject", "true")], &canary()),
            Decision::Skip(SkipReason::NotSelected)
        );
        assert_eq!(
            run(&[], &[("istio.io/rev", "canary")], &canary()),
            Decision::Inject
        );
        assert_eq!(
            run(
                &[],
                &[
                    ("istio.io/rev", "canary"),
                    ("sidecar.istio.io/inject", "true")
                ],
                &canary()
            ),
            Decision::Inject
        );
        // A pod naming another revision is not the default revision's.
        assert_eq!(
            run(
                &[],
                &[
                    ("istio.io/rev", "canary"),
                    ("sidecar.istio.io/inject", "true")
                ],
                &cfg()
            ),
            Decision::Skip(SkipReason::NotSelected)
        );
    }

    #[test]
    fn pod_opt_in_does_not_override_a_namespace_selecting_another_revision() {
        assert_eq!(
            run(
                &[("istio.io/rev", "stable")],
                &[("sidecar.istio.io/inject", "true")],
                &cfg()
            ),
            Decision::Skip(SkipReason::NotSelected)
        );
    }

    #[test]
    fn pod_opt_out_always_wins() {
        for value in ["false", "False", "no", "off", "n"] {
            let d = run(
                &[("istio-injection", "enabled")],
                &[("sidecar.istio.io/inject", value)],
                &cfg(),
            );
            assert_eq!(d, Decision::Skip(SkipReason::OptedOut), "{value}");
        }
        let d = run(
            &[("istio.io/rev", "canary")],
            &[
                ("sidecar.istio.io/inject", "false"),
                ("istio.io/rev", "canary"),
            ],
            &canary(),
        );
        assert_eq!(d, Decision::Skip(SkipReason::OptedOut));
        // The legacy annotation opts out too.
        let p = pod_with(&[], &[("sidecar.istio.io/inject", "false")]);
        assert_eq!(
            decide("apps", &ns(&[("istio-injection", "enabled")]), &p, &cfg()),
            Decision::Skip(SkipReason::OptedOut)
        );
    }

    #[test]
    fn opt_in_needs_exactly_true() {
        assert_eq!(
            run(&[], &[("sidecar.istio.io/inject", "yes")], &cfg()),
            Decision::Skip(SkipReason::NotSelected)
        );
    }

    #[test]
    fn protected_namespaces_are_never_injected() {
        let enabled = ns(&[("istio-injection", "enabled")]);
        let p = pod_with(&[("sidecar.istio.io/inject", "true")], &[]);
        for n in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "istio-system",
        ] {
            assert_eq!(
                decide(n, &enabled, &p, &cfg()),
                Decision::Skip(SkipReason::ProtectedNamespace(n.into()))
            );
        }
        let custom = InjectionConfig {
            control_plane_namespace: "mesh".into(),
            ..cfg()
        };
        assert!(matches!(
            decide("mesh", &enabled, &p, &custom),
            Decision::Skip(SkipReason::ProtectedNamespace(_))
        ));
        assert_eq!(
            decide("istio-system", &enabled, &p, &custom),
            Decision::Inject
        );
    }

    #[test]
    fn host_network_pods_are_never_injected() {
        let mut p = pod_with(&[], &[]);
        p.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(
            decide("apps", &ns(&[("istio-injection", "enabled")]), &p, &cfg()),
            Decision::Skip(SkipReason::HostNetwork)
        );
        assert_eq!(offline_decide(&p), Decision::Skip(SkipReason::HostNetwork));
    }

    #[test]
    fn injected_pods_are_skipped() {
        let p = pod_with(&[], &[("sidecar.istio.io/status", "{}")]);
        assert_eq!(
            decide("apps", &ns(&[("istio-injection", "enabled")]), &p, &cfg()),
            Decision::Skip(SkipReason::AlreadyInjected)
        );
        // Offline, as istioctl kube-inject: injected again.
        assert_eq!(offline_decide(&p), Decision::Inject);
    }

    #[test]
    fn offline_injects_unless_vetoed() {
        assert_eq!(offline_decide(&pod_with(&[], &[])), Decision::Inject);
        assert_eq!(
            offline_decide(&pod_with(&[("sidecar.istio.io/inject", "false")], &[])),
            Decision::Skip(SkipReason::OptedOut)
        );
    }

    #[test]
    fn select_revision_follows_istios_precedence() {
        let sel = |ns_labels: &[(&str, &str)], pod_labels: &[(&str, &str)]| {
            let ns_labels = ns(ns_labels);
            let pod = pod_with(pod_labels, &[]);
            select_revision(&ns_labels, &pod).map(str::to_string)
        };
        let some = |r: &str| Some(r.to_string());
        // Nothing asks for a sidecar.
        assert_eq!(sel(&[], &[]), None);
        assert_eq!(sel(&[], &[("sidecar.istio.io/inject", "yes")]), None);
        // The pod alone: its revision, else an opt-in means the default revision.
        assert_eq!(sel(&[], &[("istio.io/rev", "canary")]), some("canary"));
        assert_eq!(sel(&[], &[("istio.io/rev", "default")]), some("default"));
        assert_eq!(
            sel(&[], &[("sidecar.istio.io/inject", "true")]),
            some("default")
        );
        assert_eq!(
            sel(
                &[],
                &[
                    ("sidecar.istio.io/inject", "true"),
                    ("istio.io/rev", "canary")
                ]
            ),
            some("canary")
        );
        // The namespace's istio.io/rev beats the pod's; an empty value is the default revision.
        let pod_canary = [("istio.io/rev", "canary")];
        assert_eq!(sel(&[("istio.io/rev", "blue")], &pod_canary), some("blue"));
        assert_eq!(sel(&[("istio.io/rev", "")], &pod_canary), some("default"));
        // istio-injection beats everything: enabled is the default revision, anything else is off.
        assert_eq!(
            sel(
                &[("istio-injection", "enabled"), ("istio.io/rev", "blue")],
                &pod_canary
            ),
            some("default")
        );
        assert_eq!(
            sel(
                &[("istio-injection", "disabled")],
                &[
                    ("istio.io/rev", "canary"),
                    ("sidecar.istio.io/inject", "true")
                ]
            ),
            None
        );
        // Opting out is a veto decide() applies; it does not change which revision is asked for.
        assert_eq!(
            sel(
                &[("istio-injection", "enabled")],
                &[("sidecar.istio.io/inject", "false")]
            ),
            some("default")
        );
    }

    #[test]
    fn decide_injects_exactly_for_the_selected_revision() {
        let namespaces: [&[(&str, &str)]; 6] = [
            &[],
            &[("istio-injection", "enabled")],
            &[("istio-injection", "disabled")],
            &[("istio.io/rev", "canary")],
            &[("istio.io/rev", "default")],
            &[("istio-injection", "enabled"), ("istio.io/rev", "canary")],
        ];
        let pods: [&[(&str, &str)]; 4] = [
            &[],
            &[("sidecar.istio.io/inject", "true")],
            &[("istio.io/rev", "canary")],
            &[("istio.io/rev", "stable")],
        ];
        for n in namespaces {
            for p in pods {
                let labels = ns(n);
                let pod = pod_with(p, &[]);
                let selected = select_revision(&labels, &pod);
                for c in [cfg(), canary()] {
                    let injects = decide("apps", &labels, &pod, &c) == Decision::Inject;
                    assert_eq!(
                        injects,
                        selected == Some(revision::name(&c.revision)),
                        "namespace {n:?}, pod {p:?}, revision {:?}",
                        c.revision
                    );
                }
            }
        }
    }

    #[test]
    fn protected_namespaces_include_the_control_plane() {
        assert_eq!(
            protected_namespaces("mesh"),
            ["kube-system", "kube-public", "kube-node-lease", "mesh"]
        );
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(SkipReason::HostNetwork.to_string(), "pod uses hostNetwork");
        assert!(
            SkipReason::ProtectedNamespace("kube-system".into())
                .to_string()
                .contains("kube-system")
        );
    }
}
