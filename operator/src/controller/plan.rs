//! Plan (pure): what one pass should apply, in which stages, and what readiness means for each
//! object. No client: everything here is decided from the MeshInstall, the other MeshInstalls in
//! the cache and the webhook's endpoint, so it is unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::MeshInstall;
use crate::effective::{Installation, Settings};
use crate::render::{self, ComponentId, InjectorEndpoint, Rendered, Stage};

/// How the API server reaches this process's injection webhook, with which CA, and when the
/// serving certificate expires.
#[derive(Clone, Debug)]
pub(crate) struct WebhookEndpoint {
    pub injector: InjectorEndpoint,
    pub certificate_expiry: SystemTime,
}

/// Everything one pass applies, in apply order.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub install: Installation,
    pub objects: Vec<Rendered>,
    /// Per Deployment key: the replica floor its autoscaler keeps. Until the autoscaler has scaled
    /// up to it, the Deployment's own `spec.replicas` understates what must run.
    pub replica_floors: BTreeMap<String, i32>,
    /// The webhook registration is part of the plan (injection on and a webhook served).
    pub webhook: Option<WebhookEndpoint>,
}

impl Plan {
    /// Renders the installation and, when injection is on and this process serves a webhook, its
    /// MutatingWebhookConfiguration, which rides in the stage after istiod so injection starts only
    /// once istiod is ready.
    /// An overlay that does not apply fails the whole plan: nothing of it is applied.
    pub fn new(
        install: Installation,
        webhook: Option<WebhookEndpoint>,
    ) -> Result<Plan, render::OverlayError> {
        let webhook = webhook.filter(|_| install.injection.enabled);
        let objects =
            render::render_with_injector(&install, webhook.as_ref().map(|w| &w.injector))?;
        Ok(Plan::of(install, objects, webhook))
    }

    /// The plan of one pass, as the reconciler applies it and `meshop diff -f` predicts it:
    /// in place, the installation alone; revision-based, its target beside the `older` revisions
    /// that [`super::upgrade_step::observe`] keeps (none on a first install). `older` is
    /// ignored in place, where there are none.
    pub fn for_pass(
        install: Installation,
        older: &[Installation],
        webhook: Option<WebhookEndpoint>,
    ) -> Result<Plan, render::OverlayError> {
        match install.update_strategy {
            crate::api::UpdateStrategy::RevisionBased => {
                Plan::revision_based(install, older, webhook)
            }
            crate::api::UpdateStrategy::InPlace => Plan::new(install, webhook),
        }
    }

    /// A revision-based install: the target revision (`install`) with everything it runs, the
    /// control planes of the `older` revisions still listed in status, and one injection
    /// registration for every revision and tag.
    pub fn revision_based(
        install: Installation,
        older: &[Installation],
        webhook: Option<WebhookEndpoint>,
    ) -> Result<Plan, render::OverlayError> {
        let webhook = webhook.filter(|_| install.injection.enabled);
        let routes: Vec<&str> = std::iter::once(install.revision.as_str())
            .chain(older.iter().map(|o| o.revision.as_str()))
            .chain(install.upgrade.tags.iter().map(String::as_str))
            .collect();
        let objects = render::render_revision_based(
            &install,
            older,
            webhook.as_ref().map(|w| &w.injector),
            &routes,
        )?;
        Ok(Plan::of(install, objects, webhook))
    }

    fn of(install: Installation, objects: Vec<Rendered>, webhook: Option<WebhookEndpoint>) -> Plan {
        let gateways = install.gateways();
        let replica_floors = objects
            .iter()
            .filter(|o| o.kind() == "Deployment")
            .filter_map(|o| {
                let floor = workload_settings(&install, &gateways, o)?
                    .autoscale
                    .as_ref()?
                    .min;
                Some((o.key(), floor))
            })
            .collect();
        Plan {
            install,
            objects,
            replica_floors,
            webhook,
        }
    }

    /// The objects of each stage that has any, in order.
    pub fn stages(&self) -> Vec<(Stage, Vec<&Rendered>)> {
        Stage::ALL
            .into_iter()
            .map(|stage| {
                let objects: Vec<&Rendered> =
                    self.objects.iter().filter(|o| o.stage() == stage).collect();
                (stage, objects)
            })
            .filter(|(_, objects)| !objects.is_empty())
            .collect()
    }

    /// The keys of every planned object: what pruning keeps.
    pub fn keys(&self) -> BTreeSet<String> {
        self.objects.iter().map(|o| o.key()).collect()
    }

    /// The components this plan installs, in status order.
    pub fn components(&self) -> BTreeSet<ComponentId> {
        self.objects.iter().map(|o| o.component).collect()
    }

    /// The serving certificate's expiry, for status.
    pub fn certificate_expiry(&self) -> Option<Time> {
        let expiry = self.webhook.as_ref()?.certificate_expiry;
        k8s_openapi::jiff::Timestamp::try_from(expiry)
            .ok()
            .map(Time)
    }
}

/// How this pass moves the installed Istio version (`status.version`) to the resolved one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VersionMove {
    /// Nothing installed yet, or the same release.
    None,
    /// An upgrade or downgrade Istio allows.
    Change {
        from: crate::versions::Version,
        to: crate::versions::Version,
    },
    /// A move Istio does not allow: the user must go step by step.
    Refused(crate::versions::SkewError),
}

/// Checks the move from what status says is installed to what the spec resolves to. A status
/// version meshop cannot read (written by a much older meshop) is not judged.
pub(crate) fn version_move(installed: Option<&str>, install: &Installation) -> VersionMove {
    use crate::versions::{Version, catalog};
    let (Some(from), Ok(to)) = (
        installed.and_then(|v| v.parse::<Version>().ok()),
        install.version.parse::<Version>(),
    ) else {
        return VersionMove::None;
    };
    if from == to {
        return VersionMove::None;
    }
    match catalog().check_move(from, to) {
        Ok(()) => VersionMove::Change { from, to },
        Err(e) => VersionMove::Refused(e),
    }
}

/// Why a pass refuses to switch an installed mesh between update strategies, if it does. An
/// in-place control plane is not adopted as the first revision of a revision-based install (nor
/// the other way round): rendering the other strategy would prune the running istiod as soon as
/// its replacement is ready, before any workload has moved. A mesh is installed when status
/// shows a version; a revision-based one always records its revisions with it.
pub(crate) fn strategy_switch(
    status: Option<&crate::api::MeshInstallStatus>,
    strategy: crate::api::UpdateStrategy,
) -> Option<String> {
    use crate::api::UpdateStrategy;
    let status = status?;
    status.version.as_ref()?;
    match (strategy, status.revisions.is_empty()) {
        (UpdateStrategy::RevisionBased, true) => Some(
            "this mesh was installed in place (updateStrategy InPlace, or RevisionBased by a meshop that ignored it); switching an installed mesh to RevisionBased would remove its istiod before workloads move: set InPlace back, and create a new RevisionBased MeshInstall in another namespace to move namespaces to".into(),
        ),
        (UpdateStrategy::InPlace, false) => Some(
            "this mesh was installed with updateStrategy RevisionBased; switching it to InPlace would remove its revisions while pods use them: set RevisionBased back".into(),
        ),
        _ => None,
    }
}

/// The resolved settings behind a rendered workload: its component's, or, for a gateway, those
/// of the gateway of that namespace and name.
fn workload_settings<'a>(
    install: &'a Installation,
    gateways: &'a [crate::effective::Gateway],
    object: &Rendered,
) -> Option<&'a Settings> {
    Some(match object.component {
        ComponentId::Istiod => &install.istiod,
        ComponentId::IngressGateway | ComponentId::EgressGateway => {
            &gateways
                .iter()
                .find(|g| {
                    Some(g.namespace.as_str()) == object.namespace() && g.name == object.name()
                })?
                .settings
        }
        ComponentId::Cni => &install.cni,
        ComponentId::Ztunnel => &install.ztunnel,
        ComponentId::Prometheus => &install.prometheus,
        ComponentId::Grafana => &install.grafana,
        ComponentId::Kiali => &install.kiali,
        ComponentId::Jaeger => &install.jaeger,
        ComponentId::Base | ComponentId::Webhook => return None,
    })
}

/// The stall message of a namespace meshop was not granted: the control plane's, or the one
/// named by the gateways that run there.
pub(crate) fn not_granted_message(install: &Installation, namespace: &str) -> String {
    let what = if namespace == install.namespace {
        "a control plane".to_string()
    } else {
        let names: Vec<String> = install
            .gateways()
            .into_iter()
            .filter(|g| g.namespace == namespace)
            .map(|g| g.name)
            .collect();
        format!("gateway {}", names.join(", "))
    };
    format!(
        "meshop may not install {what} in namespace {namespace:?}: the installer has not \
         granted it. Add it to the chart's controlPlaneNamespaces, or run `meshop \
         grant-namespace {namespace} | kubectl apply --server-side -f -`"
    )
}

/// Whether `other` is another MeshInstall than `mine` that is not being deleted: the ones whose
/// claims and shared objects still count.
pub(crate) fn is_live_other(mine: &MeshInstall, other: &MeshInstall) -> bool {
    other.metadata.uid != mine.metadata.uid && other.metadata.deletion_timestamp.is_none()
}

/// The oldest other MeshInstall that already claims this one's control-plane namespace and
/// revision: one MeshInstall owns a (namespace, revision), and the oldest claim wins (ties broken
/// by name, so two replicas of the operator decide alike).
pub(crate) fn conflicting_owner<'a>(
    mine: &MeshInstall,
    install: &Installation,
    others: impl IntoIterator<Item = &'a MeshInstall>,
) -> Option<String> {
    let claim = |mi: &MeshInstall| {
        (
            mi.metadata.creation_timestamp.clone().map(|t| t.0),
            mi.metadata.name.clone().unwrap_or_default(),
        )
    };
    let me = claim(mine);
    others
        .into_iter()
        .filter(|o| is_live_other(mine, o))
        .filter(|o| {
            o.spec.namespace == install.namespace
                && o.spec.revision == mine.spec.revision
                && o.spec.update_strategy == mine.spec.update_strategy
        })
        .map(claim)
        .filter(|theirs| *theirs < me)
        .min()
        .map(|(_, name)| name)
}

/// Why a MeshInstall is stalled when another one owns its (namespace, revision).
pub(crate) const REVISION_CONFLICT: &str = "RevisionConflict";

/// The oldest other MeshInstall that already runs ambient mode, when this one asks for it too.
/// A node has one ztunnel and one CNI agent socket (`/var/run/ztunnel`), and Istio runs one
/// ztunnel per cluster: the oldest claim wins, as for revisions.
pub(crate) fn conflicting_ambient<'a>(
    mine: &MeshInstall,
    install: &Installation,
    others: impl IntoIterator<Item = &'a MeshInstall>,
) -> Option<String> {
    if !install.ambient.enabled {
        return None;
    }
    let claim = |mi: &MeshInstall| {
        (
            mi.metadata.creation_timestamp.clone().map(|t| t.0),
            mi.metadata.name.clone().unwrap_or_default(),
        )
    };
    let me = claim(mine);
    others
        .into_iter()
        .filter(|o| is_live_other(mine, o))
        .filter(|o| {
            crate::profiles::layered(&o.spec).is_ok_and(|spec| {
                let cni = spec.components.and_then(|c| c.cni);
                cni.as_ref().and_then(|c| c.enabled).unwrap_or(false)
                    && cni
                        .and_then(|c| c.ambient)
                        .and_then(|a| a.enabled)
                        .unwrap_or(false)
            })
        })
        .map(claim)
        .filter(|theirs| *theirs < me)
        .min()
        .map(|(_, name)| name)
}

/// Why a MeshInstall is stalled when another one runs ambient mode in the cluster.
pub(crate) const AMBIENT_CONFLICT: &str = "AmbientConflict";

/// The MeshInstalls to look at again when `changed` changed (or was deleted): the others that
/// may be waiting on a claim it held, that is those stalled with [`REVISION_CONFLICT`], and
/// those with no status yet (their first pass may have found the claim a moment ago). A status
/// write of one of them maps to nothing new, so this never loops.
pub(crate) fn reconsider<'a>(
    changed: &MeshInstall,
    all: impl IntoIterator<Item = &'a MeshInstall>,
) -> Vec<String> {
    all.into_iter()
        .filter(|o| is_live_other(changed, o))
        .filter(|o| match &o.status {
            None => true,
            Some(s) => s
                .condition(crate::api::condition::STALLED)
                .is_some_and(|c| {
                    c.status == "True"
                        && (c.reason == REVISION_CONFLICT || c.reason == AMBIENT_CONFLICT)
                }),
        })
        .filter_map(|o| o.metadata.name.clone())
        .collect()
}

/// The installation of a spec written as YAML, owned by MeshInstall `mesh`; for unit tests.
#[cfg(test)]
pub(crate) fn test_install(yaml: &str) -> Installation {
    let spec: crate::api::MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
    let owner = crate::effective::Owner {
        name: "mesh".into(),
        uid: Some("uid-1".into()),
    };
    Installation::resolve(owner, &spec).unwrap()
}

/// The plan (without a webhook) of a spec written as YAML; for unit tests.
#[cfg(test)]
pub(crate) fn test_plan(yaml: &str) -> Plan {
    Plan::new(test_install(yaml), None).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(yaml: &str) -> Installation {
        test_install(yaml)
    }

    fn endpoint() -> WebhookEndpoint {
        WebhookEndpoint {
            injector: InjectorEndpoint {
                client_config: k8s_openapi::api::admissionregistration::v1::WebhookClientConfig {
                    url: Some("https://127.0.0.1:9443/inject".into()),
                    ..Default::default()
                },
                ca_bundle: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
                operator_namespace: "meshop-system".into(),
            },
            certificate_expiry: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn autoscaled_deployments_get_their_floor_from_the_settings() {
        let plan = Plan::new(install("profile: production"), None).unwrap();
        let floors: Vec<(&str, i32)> = plan
            .replica_floors
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            floors,
            vec![
                ("Deployment/istio-system/istio-ingressgateway", 2),
                ("Deployment/istio-system/istiod", 2),
            ]
        );
        // Without an autoscaler there is no floor: spec.replicas is the truth.
        assert!(
            Plan::new(install("profile: demo"), None)
                .unwrap()
                .replica_floors
                .is_empty()
        );
    }

    #[test]
    fn listed_gateways_get_their_own_floor_and_grant_message() {
        let install = install(
            "profile: production\ncomponents:\n  ingressGateways:\n  - {name: internal, autoscale: {minReplicas: 3}}\n  - {name: public, namespace: edge, autoscale: {enabled: false}}\n  - {name: spare, namespace: edge}\n",
        );
        let plan = Plan::new(install.clone(), None).unwrap();
        let floors: Vec<(&str, i32)> = plan
            .replica_floors
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            floors,
            vec![
                ("Deployment/edge/spare", 2),
                ("Deployment/istio-system/internal", 3),
                ("Deployment/istio-system/istio-ingressgateway", 2),
                ("Deployment/istio-system/istiod", 2),
            ]
        );
        assert_eq!(install.namespaces(), ["istio-system", "edge"]);
        let message = not_granted_message(&install, "edge");
        assert!(
            message
                .starts_with("meshop may not install gateway public, spare in namespace \"edge\""),
            "{message}"
        );
        assert!(message.contains("meshop grant-namespace edge"), "{message}");
        assert!(
            not_granted_message(&install, "istio-system").starts_with(
                "meshop may not install a control plane in namespace \"istio-system\""
            )
        );
    }

    #[test]
    fn the_webhook_registration_rides_after_istiod_and_only_with_injection_on() {
        let plan = Plan::new(install("profile: minimal"), Some(endpoint())).unwrap();
        let stages = plan.stages();
        let stage_of = |kind: &str| {
            stages
                .iter()
                .find(|(_, objects)| objects.iter().any(|o| o.kind() == kind))
                .map(|(stage, _)| *stage)
        };
        assert_eq!(
            stage_of("MutatingWebhookConfiguration"),
            Some(Stage::DataPlane)
        );
        assert_eq!(stage_of("Deployment"), Some(Stage::ControlPlane));
        assert!(plan.components().contains(&ComponentId::Webhook));

        let off = Plan::new(
            install("profile: minimal\ninjection: {enabled: false}"),
            Some(endpoint()),
        )
        .unwrap();
        assert!(off.webhook.is_none());
        assert!(
            !off.objects
                .iter()
                .any(|o| o.kind() == "MutatingWebhookConfiguration")
        );
        // No webhook served by this process: nothing to register either.
        let unserved = Plan::new(install("profile: minimal"), None).unwrap();
        assert!(!unserved.components().contains(&ComponentId::Webhook));
    }

    #[test]
    fn a_revision_based_plan_runs_older_control_planes_beside_the_target() {
        let yaml = "profile: minimal\nversion: 1.31.1\nupdateStrategy: RevisionBased\n\
            components: {ingressGateway: {enabled: true}}\nupgrade: {tags: [prod]}\n";
        let target = install(yaml);
        let spec: crate::api::MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
        let older = Installation::resolve_at(target.owner.clone(), &spec, Some("1.30.5")).unwrap();
        let plan =
            Plan::revision_based(target, std::slice::from_ref(&older), Some(endpoint())).unwrap();
        let keys = plan.keys();
        for key in [
            "Deployment/istio-system/istiod-1-31-1",
            "Deployment/istio-system/istiod-1-30-5",
            "ConfigMap/istio-system/istio-1-30-5",
            "ServiceAccount/istio-system/istiod-1-30-5",
        ] {
            assert!(keys.contains(key), "{key} missing");
        }
        let image = |name: &str| {
            let d = plan.objects.iter().find(|o| o.key() == name).unwrap();
            d.object.data["spec"]["template"]["spec"]["containers"][0]["image"].clone()
        };
        assert_eq!(
            image("Deployment/istio-system/istiod-1-30-5"),
            "docker.io/istio/pilot:1.30.5"
        );
        // One gateway, on the target revision, one stage after the istiods.
        assert_eq!(
            image("Deployment/istio-system/istio-ingressgateway"),
            "docker.io/istio/proxyv2:1.31.1"
        );
        // One registration routing both revisions and every tag to the injector.
        let hooks: Vec<String> = plan
            .objects
            .iter()
            .filter(|o| o.kind() == "MutatingWebhookConfiguration")
            .flat_map(|o| {
                o.object.data["webhooks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|w| w["name"].as_str().unwrap_or_default().to_string())
            .collect();
        for name in ["1-31-1", "1-30-5", "default", "prod"] {
            assert!(
                hooks.contains(&format!("rev.namespace.{name}.sidecar-injector.meshop.dev")),
                "{name}: {hooks:?}"
            );
        }
        assert!(hooks.contains(&"namespace.sidecar-injector.meshop.dev".to_string()));
        // Each revision's istiod validates the config labelled with its revision, whether it is
        // the target or an older one: one webhook each, for the configuration's whole life.
        let validators = |name: &str| -> Vec<String> {
            let c = plan.objects.iter().find(|o| o.key() == name).unwrap();
            c.object.data["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            validators("ValidatingWebhookConfiguration//istio-validator-1-31-1-istio-system"),
            ["rev.validation.istio.io"]
        );
        assert_eq!(
            validators("ValidatingWebhookConfiguration//istio-validator-1-30-5-istio-system"),
            ["rev.validation.istio.io"]
        );
        // Every older object is this MeshInstall's, so prune and cleanup find it.
        let old_istiod = plan
            .objects
            .iter()
            .find(|o| o.key() == "Deployment/istio-system/istiod-1-30-5")
            .unwrap();
        assert_eq!(
            old_istiod
                .object
                .metadata
                .owner_references
                .as_ref()
                .unwrap()[0]
                .uid,
            "uid-1"
        );
    }

    #[test]
    fn an_installed_mesh_keeps_its_update_strategy() {
        use crate::api::{MeshInstallStatus, RevisionStatus, UpdateStrategy};
        let in_place = MeshInstallStatus {
            version: Some("1.30.5".into()),
            ..Default::default()
        };
        let revision_based = MeshInstallStatus {
            version: Some("1.30.5".into()),
            revisions: vec![RevisionStatus {
                name: "1-30-5".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(strategy_switch(Some(&in_place), UpdateStrategy::RevisionBased).is_some());
        assert!(strategy_switch(Some(&revision_based), UpdateStrategy::InPlace).is_some());
        assert_eq!(
            strategy_switch(Some(&in_place), UpdateStrategy::InPlace),
            None
        );
        assert_eq!(
            strategy_switch(Some(&revision_based), UpdateStrategy::RevisionBased),
            None
        );
        // Nothing installed yet: either strategy may start.
        assert_eq!(strategy_switch(None, UpdateStrategy::RevisionBased), None);
        let fresh = MeshInstallStatus::default();
        assert_eq!(
            strategy_switch(Some(&fresh), UpdateStrategy::RevisionBased),
            None
        );
    }

    #[test]
    fn keys_are_what_pruning_keeps() {
        let plan = Plan::new(install("profile: demo"), None).unwrap();
        assert_eq!(plan.keys().len(), plan.objects.len(), "keys are unique");
        assert!(
            plan.keys()
                .contains("Deployment/istio-system/istio-egressgateway")
        );
        let minimal = Plan::new(install("profile: minimal"), None).unwrap();
        assert!(
            !minimal
                .keys()
                .contains("Deployment/istio-system/istio-egressgateway")
        );
    }

    #[test]
    fn version_moves_follow_istio_skew_rules() {
        let to_131 = install("profile: minimal\nversion: 1.31.1");
        assert_eq!(version_move(None, &to_131), VersionMove::None);
        assert_eq!(version_move(Some("1.31.1"), &to_131), VersionMove::None);
        assert!(matches!(
            version_move(Some("1.30.5"), &to_131),
            VersionMove::Change { from, to } if from.to_string() == "1.30.5" && to.to_string() == "1.31.1"
        ));
        // Installed by an older meshop, two minors back: step by step.
        match version_move(Some("1.29.8"), &to_131) {
            VersionMove::Refused(e) => {
                assert!(e.to_string().contains("set version 1.30 first"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let to_130 = install("profile: minimal\nversion: \"1.30\"");
        assert!(matches!(
            version_move(Some("1.31.1"), &to_130),
            VersionMove::Change { .. }
        ));
        // A rollback of one minor is allowed, of two is not.
        assert!(matches!(
            version_move(Some("1.31.0"), &to_130),
            VersionMove::Change { .. }
        ));
        assert!(matches!(
            version_move(Some("1.32.0"), &to_130),
            VersionMove::Refused(_)
        ));
        assert_eq!(
            version_move(Some("not-a-version"), &to_130),
            VersionMove::None
        );
    }

    /// The oracle is the API description of each object as render built it (from typed
    /// k8s-openapi objects or its own ApiResource), not the table: a kind render can emit that the
    /// table forgets would never be watched, pruned, cleaned up or granted.
    #[test]
    fn every_kind_render_can_emit_is_in_the_managed_kinds_table() {
        let everything = "components: {istiod: {enabled: true}, ingressGateway: {enabled: true}, \
            egressGateway: {enabled: true}, cni: {enabled: true}, addons: {prometheus: {enabled: true}, \
            grafana: {enabled: true}, kiali: {enabled: true}, jaeger: {enabled: true}}}\n\
            global: {networkPolicy: {enabled: true}}\n";
        let mut seen = BTreeSet::new();
        for profile in [
            "demo",
            "production",
            "performance",
            "minimal",
            "empty",
            "ambient",
        ] {
            for revision in ["", "revision: canary\n"] {
                let yaml = format!("profile: {profile}\n{revision}{everything}");
                let plan = Plan::new(install(&yaml), Some(endpoint())).unwrap();
                for o in &plan.objects {
                    let entry =
                        crate::kinds::find(&o.resource.group, o.kind()).unwrap_or_else(|| {
                            panic!("{} is rendered but not a managed kind", o.key())
                        });
                    assert_eq!(entry.api_resource(), o.resource, "{}", o.key());
                    assert_eq!(entry.namespaced, o.namespaced, "{}", o.key());
                    seen.insert(o.kind().to_string());
                }
            }
        }
        // And the table lists nothing render never emits (a stale entry costs RBAC and watches).
        for kind in crate::kinds::MANAGED_KINDS {
            assert!(
                seen.contains(kind.kind),
                "{} is managed but never rendered",
                kind.kind
            );
        }
    }

    fn mesh(name: &str, created: i64, uid: &str, yaml: &str) -> MeshInstall {
        let mut mi = MeshInstall::new(name, serde_yaml::from_str(yaml).unwrap());
        mi.metadata.uid = Some(uid.into());
        mi.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
            ));
        mi
    }

    #[test]
    fn the_oldest_claim_on_a_namespace_and_revision_wins() {
        let spec = "profile: minimal\nnamespace: istio-system\n";
        let first = mesh("first", 100, "a", spec);
        let second = mesh("second", 200, "b", spec);
        let canary = mesh("canary", 50, "c", "profile: minimal\nrevision: canary\n");
        let all = [first.clone(), second.clone(), canary.clone()];
        let install_of = |mi: &MeshInstall| install(&serde_yaml::to_string(&mi.spec).unwrap());
        assert_eq!(conflicting_owner(&first, &install_of(&first), &all), None);
        assert_eq!(
            conflicting_owner(&second, &install_of(&second), &all),
            Some("first".into())
        );
        // Another revision in the same namespace is no conflict.
        assert_eq!(conflicting_owner(&canary, &install_of(&canary), &all), None);
        // A claim being deleted no longer counts.
        let mut leaving = first.clone();
        leaving.metadata.deletion_timestamp = first.metadata.creation_timestamp.clone();
        assert_eq!(
            conflicting_owner(&second, &install_of(&second), &[leaving, second.clone()]),
            None
        );
        // Same creation second: the name decides, the same way on every replica.
        let twin = mesh("a-twin", 200, "d", spec);
        assert_eq!(
            conflicting_owner(&second, &install_of(&second), std::slice::from_ref(&twin)),
            Some("a-twin".into())
        );
        assert_eq!(
            conflicting_owner(&twin, &install_of(&twin), &[second]),
            None
        );
    }

    #[test]
    fn one_mesh_per_cluster_runs_ambient_mode() {
        let first = mesh(
            "first",
            100,
            "a",
            "profile: ambient\nnamespace: istio-system\n",
        );
        let second = mesh("second", 200, "b", "profile: ambient\nnamespace: other\n");
        let sidecar = mesh("sidecar", 50, "c", "profile: demo\nnamespace: sidecar\n");
        let all = [first.clone(), second.clone(), sidecar.clone()];
        let install_of = |mi: &MeshInstall| install(&serde_yaml::to_string(&mi.spec).unwrap());
        assert_eq!(conflicting_ambient(&first, &install_of(&first), &all), None);
        assert_eq!(
            conflicting_ambient(&second, &install_of(&second), &all),
            Some("first".into())
        );
        // A sidecar mesh beside the ambient one is no conflict, in either direction.
        assert_eq!(
            conflicting_ambient(&sidecar, &install_of(&sidecar), &all),
            None
        );
        // ztunnel switched off where the profile has it on: no longer an ambient claim.
        let off = mesh(
            "off",
            10,
            "d",
            "profile: ambient\nnamespace: x\ncomponents: {ztunnel: {enabled: false}, cni: {ambient: {enabled: false}}}\n",
        );
        assert_eq!(
            conflicting_ambient(&second, &install_of(&second), &[off, first]),
            Some("first".into())
        );
    }

    #[test]
    fn a_pass_plans_by_the_update_strategy() {
        // In place: exactly Plan::new.
        let in_place = install("profile: minimal");
        assert_eq!(
            Plan::for_pass(in_place.clone(), &[], None).unwrap().keys(),
            Plan::new(in_place, None).unwrap().keys()
        );
        // Revision-based in the middle of an upgrade: the older revision's istiod is planned
        // (so prune keeps it) beside the target's, and every revision and tag is routed.
        let spec =
            "profile: minimal\nupdateStrategy: RevisionBased\nupgrade: {tags: [prod-stable]}";
        let target = install(&format!("{spec}\nversion: 1.31.1"));
        let old = install(&format!("{spec}\nversion: 1.30.5"));
        let plan =
            Plan::for_pass(target.clone(), std::slice::from_ref(&old), Some(endpoint())).unwrap();
        let keys = plan.keys();
        assert!(
            keys.contains("Deployment/istio-system/istiod-1-31-1"),
            "{keys:?}"
        );
        assert!(
            keys.contains("Deployment/istio-system/istiod-1-30-5"),
            "{keys:?}"
        );
        assert_eq!(
            keys,
            Plan::revision_based(target.clone(), &[old], Some(endpoint()))
                .unwrap()
                .keys()
        );
        // A first install is revision-based too: its istiod carries the revision.
        let first = Plan::for_pass(target, &[], None).unwrap().keys();
        assert!(
            first.contains("Deployment/istio-system/istiod-1-31-1"),
            "{first:?}"
        );
        assert!(
            !first.contains("Deployment/istio-system/istiod"),
            "{first:?}"
        );
    }

    #[test]
    fn a_change_of_one_meshinstall_reconsiders_those_stalled_on_a_claim() {
        let spec = "profile: minimal\n";
        let stalled = |name: &str, uid: &str, reason: &str| {
            let mut mi = mesh(name, 200, uid, spec);
            mi.status = Some(
                serde_json::from_value(serde_json::json!({"conditions": [
                {"type": "Stalled", "status": "True", "reason": reason, "message": "m",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
                .unwrap(),
            );
            mi
        };
        let first = stalled("first", "a", "Whatever");
        let mut first = first;
        first.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "m",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}))
            .unwrap(),
        );
        let waiting = stalled("waiting", "b", REVISION_CONFLICT);
        let invalid = stalled("invalid", "c", "InvalidSpec");
        let fresh = mesh("fresh", 300, "d", spec);
        let mut leaving = stalled("leaving", "e", REVISION_CONFLICT);
        leaving.metadata.deletion_timestamp = first.metadata.creation_timestamp.clone();
        let all = [
            first.clone(),
            waiting.clone(),
            invalid,
            fresh,
            leaving.clone(),
        ];
        assert_eq!(reconsider(&first, &all), ["waiting", "fresh"]);
        // The one that changed is not its own trigger.
        assert_eq!(reconsider(&waiting, &all), ["fresh"]);
        // The owner being deleted (or gone): the same.
        assert_eq!(reconsider(&leaving, &all), ["waiting", "fresh"]);
    }
}
