//! Assess (pure): from the objects as the API server returned them after apply, decide what is
//! ready, what drifted since the last pass, and each component's state. No client.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::DynamicObject;

use super::plan::Plan;
use crate::api::{ComponentState, ComponentStatus};
use crate::kinds::{self, ReadinessRule};
use crate::render::{ComponentId, Rendered, Stage};

/// Replicas a workload should run and how many are ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Replicas {
    pub desired: i32,
    pub ready: i32,
    /// Running the current template (a DaemonSet: nodes whose pod is updated).
    pub updated: i32,
}

/// Where an applied object stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjectState {
    Ready,
    /// A rollout (or the API server's own processing, for CRDs) is under way.
    Progressing,
    /// The rollout of the current generation finished, yet replicas are missing: pods fail.
    Degraded,
}

/// The readiness of one applied object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub state: ObjectState,
    pub replicas: Option<Replicas>,
}

impl Readiness {
    const READY: Readiness = Readiness {
        state: ObjectState::Ready,
        replicas: None,
    };

    pub fn is_ready(&self) -> bool {
        self.state == ObjectState::Ready
    }
}

/// Judges an applied object by its kind's rule, reading it as the typed Kubernetes object.
/// `floor` is the replica floor of an autoscaled Deployment (see [`Plan::replica_floors`]).
pub(crate) fn readiness(applied: &DynamicObject, floor: Option<i32>) -> Readiness {
    let (group, kind) = match &applied.types {
        Some(t) => (
            t.api_version.rsplit_once('/').map_or("", |(g, _)| g),
            t.kind.as_str(),
        ),
        None => return Readiness::READY,
    };
    let rule = kinds::readiness(group, kind);
    // try_parse consumes the object; the applied one stays with the caller for fingerprints.
    let parsed = |applied: &DynamicObject| applied.clone();
    match rule {
        ReadinessRule::Exists => Readiness::READY,
        ReadinessRule::DeploymentRollout => match parsed(applied).try_parse::<Deployment>() {
            Ok(d) => deployment(&d, floor),
            Err(_) => not_understood(),
        },
        ReadinessRule::DaemonSetRollout => match parsed(applied).try_parse::<DaemonSet>() {
            Ok(d) => daemon_set(&d),
            Err(_) => not_understood(),
        },
        ReadinessRule::Established => {
            match parsed(applied).try_parse::<CustomResourceDefinition>() {
                Ok(crd) => established(&crd),
                Err(_) => not_understood(),
            }
        }
    }
}

/// An object the API server returned in a shape its kind does not have: never ready, so the
/// pass waits instead of declaring success on a guess.
fn not_understood() -> Readiness {
    Readiness {
        state: ObjectState::Progressing,
        replicas: None,
    }
}

fn deployment(d: &Deployment, floor: Option<i32>) -> Readiness {
    let generation = d.metadata.generation.unwrap_or(0);
    let spec_replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let desired = spec_replicas.max(floor.unwrap_or(0));
    let status = d.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    // Ready once the rollout of this generation is complete: every replica updated and
    // available, and no old replica left.
    let rolled_out = observed && updated >= desired && total == updated;
    // The Deployment controller's own verdict: its `Progressing` condition turns False when the
    // rollout exceeded its deadline, and reads NewReplicaSetAvailable once a rollout completed
    // (it stays so when pods fail later). A fresh rollout whose pods are starting is neither.
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    let stuck = progressing.is_some_and(|c| c.status == "False");
    let completed =
        progressing.is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    let state = if rolled_out && available >= desired {
        ObjectState::Ready
    } else if observed && (stuck || (completed && available < spec_replicas)) {
        ObjectState::Degraded
    } else {
        ObjectState::Progressing
    };
    Readiness {
        state,
        replicas: Some(Replicas {
            desired,
            ready,
            updated,
        }),
    }
}

fn daemon_set(d: &DaemonSet) -> Readiness {
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let ready = status.number_ready;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    // DaemonSets have no rollout verdict of their own, so a node whose pod does not start reads
    // as progressing, not degraded.
    let state = if observed && ready >= desired && updated >= desired {
        ObjectState::Ready
    } else {
        ObjectState::Progressing
    };
    Readiness {
        state,
        replicas: Some(Replicas {
            desired,
            ready,
            updated,
        }),
    }
}

fn established(crd: &CustomResourceDefinition) -> Readiness {
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    Readiness {
        state: if established {
            ObjectState::Ready
        } else {
            ObjectState::Progressing
        },
        replicas: None,
    }
}

/// A stable identity of an applied object's content: it changes when the object was recreated
/// (uid) or its spec edited (generation), or, for kinds without a generation, on any write.
/// An object whose fields are partly another controller's ([`Rendered::initial`]: istiod writes
/// its validating webhooks' CA bundle and failure policy) changes by design, so only its
/// recreation counts.
pub(crate) fn fingerprint(planned: &Rendered, object: &DynamicObject) -> String {
    let uid = object.metadata.uid.as_deref().unwrap_or_default();
    if planned.initial.is_some() {
        return uid.to_string();
    }
    match object.metadata.generation {
        Some(g) => format!("{uid}/g{g}"),
        None => format!(
            "{uid}/rv{}",
            object
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or_default()
        ),
    }
}

/// What one pass applied: the MeshInstall generation it worked from and each object's
/// fingerprint after apply, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AppliedRecord {
    pub generation: Option<i64>,
    pub fingerprints: BTreeMap<String, String>,
}

/// Objects that changed between two passes of the same generation. meshop's own writes for a
/// new generation are not drift; an object changed (or recreated) by someone else is, and the
/// pass just applied it back.
pub(crate) fn drifted(previous: Option<&AppliedRecord>, current: &AppliedRecord) -> Vec<String> {
    let Some(previous) = previous.filter(|p| p.generation == current.generation) else {
        return Vec::new();
    };
    current
        .fingerprints
        .iter()
        .filter(|(key, print)| previous.fingerprints.get(*key).is_some_and(|p| p != *print))
        .map(|(key, _)| key.clone())
        .collect()
}

/// One object applied in this pass, and its readiness.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pub key: String,
    pub component: ComponentId,
    pub readiness: Readiness,
}

impl Observed {
    pub fn new(planned: &Rendered, applied: &DynamicObject, plan: &Plan) -> Observed {
        let key = planned.key();
        let readiness = readiness(applied, plan.replica_floors.get(&key).copied());
        Observed {
            key,
            component: planned.component,
            readiness,
        }
    }
}

/// The first stage that is not ready yet, and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub stage: Stage,
    pub keys: Vec<String>,
}

/// Whether a stage's observed objects are all ready; if not, what it waits for.
pub(crate) fn stage_waiting(stage: Stage, observed: &[Observed]) -> Option<Waiting> {
    let keys: Vec<String> = observed
        .iter()
        .filter(|o| o.component.stage() == stage && !o.readiness.is_ready())
        .map(|o| o.key.clone())
        .collect();
    (!keys.is_empty()).then_some(Waiting { stage, keys })
}

/// An object whose apply failed, for the component it belongs to.
#[derive(Clone, Debug)]
pub(crate) struct ApplyFailure {
    pub key: String,
    pub component: ComponentId,
    pub message: String,
}

/// One status entry per planned component: replicas summed over its workloads; Degraded when an
/// apply failed or pods fail, Progressing while anything rolls out, Pending when its stage was
/// not reached, else Ready.
pub(crate) fn components(
    plan: &Plan,
    observed: &[Observed],
    failure: Option<&ApplyFailure>,
) -> Vec<ComponentStatus> {
    plan.components()
        .into_iter()
        .map(|component| {
            let mine: Vec<&Observed> = observed
                .iter()
                .filter(|o| o.component == component)
                .collect();
            let mut status = ComponentStatus {
                name: component.name().into(),
                state: ComponentState::Ready,
                ..Default::default()
            };
            for o in &mine {
                if let Some(r) = o.readiness.replicas {
                    status.desired_replicas =
                        Some(status.desired_replicas.unwrap_or(0) + r.desired);
                    status.ready_replicas = Some(status.ready_replicas.unwrap_or(0) + r.ready);
                    status.updated_replicas =
                        Some(status.updated_replicas.unwrap_or(0) + r.updated);
                }
            }
            let first = |state: ObjectState| mine.iter().find(|o| o.readiness.state == state);
            if let Some(f) = failure.filter(|f| f.component == component) {
                status.state = ComponentState::Degraded;
                status.message = Some(f.message.clone());
            } else if let Some(o) = first(ObjectState::Degraded) {
                status.state = ComponentState::Degraded;
                status.message = Some(format!(
                    "{}{} has replicas that are not available",
                    gateway_prefix(component, &o.key),
                    o.key
                ));
            } else if let Some(o) = first(ObjectState::Progressing) {
                status.state = ComponentState::Progressing;
                // A node agent rolls node by node: say how far.
                let nodes = match o.readiness.replicas {
                    Some(r) if o.key.starts_with("DaemonSet/") => format!(
                        " (updated on {} of {} nodes, ready on {})",
                        r.updated, r.desired, r.ready
                    ),
                    _ => String::new(),
                };
                status.message = Some(format!(
                    "{}waiting for {} to become ready{nodes}",
                    gateway_prefix(component, &o.key),
                    o.key
                ));
            } else if mine.is_empty() {
                status.state = ComponentState::Pending;
                status.message = Some(format!("waiting for stage {:?}", component.stage()));
            }
            status
        })
        .collect()
}

/// For a gateway component, which of its gateways a message is about: every object of a gateway
/// is named after it (`Kind/namespace/name`).
fn gateway_prefix(component: ComponentId, key: &str) -> String {
    if !matches!(
        component,
        ComponentId::IngressGateway | ComponentId::EgressGateway
    ) {
        return String::new();
    }
    let mut parts = key.splitn(3, '/').skip(1);
    match (parts.next(), parts.next()) {
        (Some(namespace), Some(name)) => format!("gateway {name} in namespace {namespace}: "),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn deployment(spec: i64, updated: i64, available: i64, total: i64) -> DynamicObject {
        object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d", "generation": 2 },
            "spec": { "replicas": spec },
            "status": { "observedGeneration": 2, "replicas": total, "updatedReplicas": updated,
                        "readyReplicas": available, "availableReplicas": available }
        }))
    }

    fn replicas(desired: i32, ready: i32, updated: i32) -> Option<Replicas> {
        Some(Replicas {
            desired,
            ready,
            updated,
        })
    }

    #[test]
    fn a_rollout_is_ready_when_every_replica_is_updated_and_available() {
        let r = readiness(&deployment(2, 2, 2, 2), None);
        assert_eq!(r.state, ObjectState::Ready);
        assert_eq!(r.replicas, replicas(2, 2, 2));
        // One new pod still starting.
        assert_eq!(
            readiness(&deployment(2, 1, 1, 2), None).state,
            ObjectState::Progressing
        );
        // All updated, but an old replica is still there (surge).
        assert_eq!(
            readiness(&deployment(2, 2, 2, 3), None).state,
            ObjectState::Progressing
        );
    }

    fn with_progressing(mut d: DynamicObject, status: &str, reason: &str) -> DynamicObject {
        d.data["status"]["conditions"] = json!([
            { "type": "Progressing", "status": status, "reason": reason }
        ]);
        d
    }

    #[test]
    fn a_starting_rollout_is_progressing_a_failed_one_degraded() {
        // New pods exist but are not available yet: the rollout is under way.
        let starting = with_progressing(deployment(2, 2, 1, 2), "True", "ReplicaSetUpdated");
        assert_eq!(readiness(&starting, None).state, ObjectState::Progressing);
        // The rollout completed once, then a pod failed.
        let lost = with_progressing(deployment(2, 2, 1, 2), "True", "NewReplicaSetAvailable");
        let r = readiness(&lost, None);
        assert_eq!(r.state, ObjectState::Degraded);
        assert_eq!(r.replicas, replicas(2, 1, 2));
        // The rollout exceeded its progress deadline.
        let stuck = with_progressing(deployment(2, 1, 1, 2), "False", "ProgressDeadlineExceeded");
        assert_eq!(readiness(&stuck, None).state, ObjectState::Degraded);
    }

    #[test]
    fn an_unobserved_generation_is_progressing_whatever_the_counts() {
        let mut d = deployment(1, 1, 1, 1);
        d.metadata.generation = Some(3);
        assert_eq!(readiness(&d, None).state, ObjectState::Progressing);
    }

    #[test]
    fn an_autoscaler_floor_above_spec_replicas_is_waited_for() {
        // The HPA has not scaled the Deployment up to its minimum yet: still progressing, not degraded.
        let r = readiness(&deployment(1, 1, 1, 1), Some(2));
        assert_eq!(r.state, ObjectState::Progressing);
        assert_eq!(r.replicas, replicas(2, 1, 1));
        assert_eq!(
            readiness(&deployment(2, 2, 2, 2), Some(2)).state,
            ObjectState::Ready
        );
        // The autoscaler went above its floor: spec.replicas is what must run.
        assert_eq!(
            readiness(&deployment(3, 3, 3, 3), Some(2)).replicas,
            replicas(3, 3, 3)
        );
    }

    #[test]
    fn daemon_sets_wait_for_every_node() {
        let ds = |desired: i64, updated: i64, ready: i64| {
            object(json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": { "name": "cni", "generation": 1 },
                "status": { "observedGeneration": 1, "desiredNumberScheduled": desired,
                            "updatedNumberScheduled": updated, "numberReady": ready,
                            "currentNumberScheduled": desired, "numberMisscheduled": 0 }
            }))
        };
        assert_eq!(readiness(&ds(3, 3, 3), None).state, ObjectState::Ready);
        assert_eq!(
            readiness(&ds(3, 2, 2), None).state,
            ObjectState::Progressing
        );
        assert_eq!(
            readiness(&ds(3, 3, 2), None).state,
            ObjectState::Progressing
        );
        assert_eq!(readiness(&ds(3, 3, 2), None).replicas, replicas(3, 2, 3));
        // Mid-rollout: one node's pod updated, every node's pod ready.
        assert_eq!(readiness(&ds(3, 1, 3), None).replicas, replicas(3, 3, 1));
    }

    #[test]
    fn crds_are_ready_once_established() {
        let crd = |status: &str| {
            object(json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": { "name": "gateways.networking.istio.io" },
                "spec": { "group": "networking.istio.io", "scope": "Namespaced",
                          "names": { "plural": "gateways", "kind": "Gateway" }, "versions": [] },
                "status": { "conditions": [ { "type": "Established", "status": status } ] }
            }))
        };
        assert!(readiness(&crd("True"), None).is_ready());
        assert!(!readiness(&crd("False"), None).is_ready());
    }

    #[test]
    fn other_kinds_are_ready_once_stored() {
        let svc =
            object(json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "s" } }));
        assert_eq!(readiness(&svc, None), Readiness::READY);
    }

    #[test]
    fn a_deployment_in_a_shape_it_cannot_have_is_not_ready() {
        let broken = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "d" }, "spec": { "replicas": "two" }
        }));
        assert_eq!(readiness(&broken, None).state, ObjectState::Progressing);
    }

    fn record(generation: i64, prints: &[(&str, &str)]) -> AppliedRecord {
        AppliedRecord {
            generation: Some(generation),
            fingerprints: prints
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn drift_is_a_change_between_passes_of_one_generation() {
        let before = record(
            1,
            &[("Service/ns/a", "u1/rv1"), ("Deployment/ns/b", "u2/g1")],
        );
        // The Service was recreated (new uid), the Deployment is untouched.
        let after = record(
            1,
            &[("Service/ns/a", "u3/rv7"), ("Deployment/ns/b", "u2/g1")],
        );
        assert_eq!(
            drifted(Some(&before), &after),
            vec!["Service/ns/a".to_string()]
        );
        // meshop's own change for a new generation is not drift.
        let next = record(
            2,
            &[("Service/ns/a", "u3/rv9"), ("Deployment/ns/b", "u2/g2")],
        );
        assert!(drifted(Some(&after), &next).is_empty());
        // New objects and the first pass are not drift either.
        let grown = record(
            1,
            &[("Service/ns/a", "u1/rv1"), ("ConfigMap/ns/c", "u4/rv1")],
        );
        assert!(drifted(Some(&before), &grown).is_empty());
        assert!(drifted(None, &after).is_empty());
    }

    #[test]
    fn fingerprints_follow_generation_or_resource_version() {
        let mut d = deployment(1, 1, 1, 1);
        d.metadata.uid = Some("u".into());
        d.metadata.resource_version = Some("10".into());
        let planned = Rendered {
            component: ComponentId::Istiod,
            resource: kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
            namespaced: true,
            shared: false,
            object: d.clone(),
            initial: None,
            ownership: crate::render::Ownership::Apply,
        };
        assert_eq!(fingerprint(&planned, &d), "u/g2");
        d.metadata.resource_version = Some("11".into());
        assert_eq!(
            fingerprint(&planned, &d),
            "u/g2",
            "a status write is not a spec change"
        );
        // Fields shared with another controller: its writes are not drift, recreation is.
        let shared = planned.clone().with_initial(serde_json::json!({}));
        assert_eq!(fingerprint(&shared, &d), "u");
        d.metadata.generation = None;
        assert_eq!(fingerprint(&planned, &d), "u/rv11");
    }

    mod components {
        use super::super::*;

        fn plan() -> Plan {
            crate::controller::plan::test_plan("profile: minimal")
        }

        fn observed(component: ComponentId, state: ObjectState, r: Option<(i32, i32)>) -> Observed {
            Observed {
                key: format!("Deployment/istio-system/{component}"),
                component,
                readiness: Readiness {
                    state,
                    replicas: r.map(|(desired, ready)| Replicas {
                        desired,
                        ready,
                        updated: desired,
                    }),
                },
            }
        }

        fn state_of(list: &[ComponentStatus], name: &str) -> ComponentState {
            list.iter().find(|c| c.name == name).unwrap().state
        }

        #[test]
        fn unreached_components_are_pending_and_replicas_add_up() {
            let base = Observed {
                key: "Namespace//istio-system".into(),
                component: ComponentId::Base,
                readiness: Readiness::READY,
            };
            let list = components(
                &plan(),
                &[
                    base.clone(),
                    observed(ComponentId::Istiod, ObjectState::Progressing, Some((1, 0))),
                ],
                None,
            );
            assert_eq!(
                list.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                vec!["base", "istiod"]
            );
            assert_eq!(state_of(&list, "base"), ComponentState::Ready);
            let istiod = &list[1];
            assert_eq!(istiod.state, ComponentState::Progressing);
            assert_eq!(
                (istiod.desired_replicas, istiod.ready_replicas),
                (Some(1), Some(0))
            );

            let pending = components(&plan(), &[base], None);
            assert_eq!(state_of(&pending, "istiod"), ComponentState::Pending);
        }

        #[test]
        fn failed_pods_or_applies_make_a_component_degraded() {
            let degraded = components(
                &plan(),
                &[observed(
                    ComponentId::Istiod,
                    ObjectState::Degraded,
                    Some((1, 0)),
                )],
                None,
            );
            assert_eq!(state_of(&degraded, "istiod"), ComponentState::Degraded);
            let failure = ApplyFailure {
                key: "Deployment/istio-system/istiod".into(),
                component: ComponentId::Istiod,
                message: "applying Deployment/istio-system/istiod failed: forbidden".into(),
            };
            let failed = components(&plan(), &[], Some(&failure));
            let istiod = failed.iter().find(|c| c.name == "istiod").unwrap();
            assert_eq!(istiod.state, ComponentState::Degraded);
            assert!(istiod.message.as_deref().unwrap().contains("forbidden"));
        }

        #[test]
        fn a_gateway_component_is_ready_only_when_every_gateway_is_and_names_the_one_that_is_not() {
            let plan = crate::controller::plan::test_plan(
                "profile: minimal\ncomponents:\n  ingressGateway: {enabled: true}\n  ingressGateways: [{name: internal}, {name: public, namespace: edge}]\n",
            );
            let gateway = |key: &str, state| Observed {
                key: key.into(),
                component: ComponentId::IngressGateway,
                readiness: Readiness {
                    state,
                    replicas: Some(Replicas {
                        desired: 1,
                        ready: i32::from(state == ObjectState::Ready),
                        updated: 1,
                    }),
                },
            };
            let list = components(
                &plan,
                &[
                    gateway(
                        "Deployment/istio-system/istio-ingressgateway",
                        ObjectState::Ready,
                    ),
                    gateway("Deployment/istio-system/internal", ObjectState::Ready),
                    gateway("Deployment/edge/public", ObjectState::Progressing),
                ],
                None,
            );
            let ingress = list.iter().find(|c| c.name == "ingressGateway").unwrap();
            assert_eq!(ingress.state, ComponentState::Progressing);
            assert_eq!(
                ingress.message.as_deref(),
                Some(
                    "gateway public in namespace edge: waiting for Deployment/edge/public to become ready"
                )
            );
            assert_eq!(
                (ingress.desired_replicas, ingress.ready_replicas),
                (Some(3), Some(2))
            );
            let degraded = components(
                &plan,
                &[
                    gateway(
                        "Deployment/istio-system/istio-ingressgateway",
                        ObjectState::Ready,
                    ),
                    gateway("Deployment/istio-system/internal", ObjectState::Degraded),
                ],
                None,
            );
            let ingress = degraded
                .iter()
                .find(|c| c.name == "ingressGateway")
                .unwrap();
            assert_eq!(ingress.state, ComponentState::Degraded);
            assert!(
                ingress
                    .message
                    .as_deref()
                    .unwrap()
                    .starts_with("gateway internal in namespace istio-system: "),
                "{ingress:?}"
            );
            let ready = components(
                &plan,
                &[
                    gateway(
                        "Deployment/istio-system/istio-ingressgateway",
                        ObjectState::Ready,
                    ),
                    gateway("Deployment/istio-system/internal", ObjectState::Ready),
                    gateway("Deployment/edge/public", ObjectState::Ready),
                ],
                None,
            );
            assert_eq!(state_of(&ready, "ingressGateway"), ComponentState::Ready);
        }

        #[test]
        fn a_stage_waits_for_its_unready_objects_only() {
            let list = [
                observed(ComponentId::Istiod, ObjectState::Ready, None),
                observed(ComponentId::IngressGateway, ObjectState::Progressing, None),
            ];
            assert_eq!(stage_waiting(Stage::ControlPlane, &list), None);
            let waiting = stage_waiting(Stage::DataPlane, &list).unwrap();
            assert_eq!(
                waiting.keys,
                vec!["Deployment/istio-system/ingressGateway".to_string()]
            );
        }
    }
}
