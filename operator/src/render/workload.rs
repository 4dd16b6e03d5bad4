//! The one workload builder: every Deployment and DaemonSet meshop renders (istiod, the gateways,
//! the CNI agent, the addons) is built here from what its renderer decides (containers, volumes,
//! its own labels and annotations, the pod's security context) plus the component's resolved
//! [`Settings`], applied in one place:
//!
//! - the main container (the first): meshop's env with the user's merged in
//!   ([`common::with_user_env`]), resources;
//! - every container: the image pull policy, and the hardened security context unless the
//!   renderer set one (the CNI agent's documented exception);
//! - the pod: labels (the user's, then meshop's common labels, the selector and the renderer's
//!   own, which win), annotations (the user's, then the renderer's), node selector, tolerations
//!   (the renderer's, then the user's), affinity, priority class (the component's or global,
//!   else the renderer's default), image pull secrets;
//! - the rollout: one rule per kind ([`deployment_strategy`], [`daemon_set_strategy`]), and the
//!   replica count left to the autoscaler when there is one, with its HorizontalPodAutoscaler
//!   and PodDisruptionBudget;
//! - the NetworkPolicy (`spec.global.networkPolicy`) of the components Istio gives one (istiod,
//!   gateways, CNI agent): the workload's selector, ingress on the ports its pods serve.
//!
//! A new setting is one more line here, and every component gets it; a new component uses
//! [`Workload`] and gets every setting.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec, PodTemplateSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::common::{self, hardened_container, meta_in, with_user_env};
use super::{ComponentId, Rendered};
use crate::effective::{Installation, Settings};

/// One component's workload, as its renderer describes it.
pub(super) struct Workload<'a> {
    pub install: &'a Installation,
    pub component: ComponentId,
    pub name: &'a str,
    pub namespace: &'a str,
    pub settings: &'a Settings,
    /// The pods' selector (also their labels).
    pub selector: BTreeMap<String, String>,
    /// The renderer's own pod labels besides the selector and the common labels.
    pub labels: BTreeMap<String, String>,
    /// The renderer's own pod annotations.
    pub annotations: BTreeMap<String, String>,
    /// The pod as the renderer builds it: containers (the main one first, with meshop's env),
    /// volumes, service account, security context, host network, grace period, and meshop's own
    /// tolerations. Scheduling, priority and pull secrets are the builder's.
    pub pod: PodSpec,
    /// The priority class when neither the component nor global sets one.
    pub default_priority_class: Option<&'static str>,
}

/// Every Deployment rolls out the same way: new pods first (up to twice the replicas), and never
/// below the wanted capacity, so a control plane, gateway or addon keeps serving throughout.
pub(super) fn deployment_strategy() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::String("100%".into())),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

/// A node agent cannot surge (one pod per node): one node at a time.
pub(super) fn daemon_set_strategy() -> DaemonSetUpdateStrategy {
    DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable: Some(IntOrString::Int(1)),
            max_surge: None,
        }),
    }
}

impl Workload<'_> {
    fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector.clone()),
            match_expressions: None,
        }
    }

    /// The pod template with every setting applied.
    pub fn template(&self) -> PodTemplateSpec {
        let s = self.settings;
        let mut labels = s.pod_labels.clone();
        labels.extend(common::labels(self.install, self.component));
        labels.extend(self.selector.clone());
        labels.extend(self.labels.clone());
        let mut annotations = s.pod_annotations.clone();
        annotations.extend(self.annotations.clone());
        let mut pod = self.pod.clone();
        for (i, container) in pod.containers.iter_mut().enumerate() {
            if i == 0 {
                let ours = container.env.take().unwrap_or_default();
                container.env = Some(with_user_env(ours, s)).filter(|e| !e.is_empty());
                container.resources = Some(s.resources.clone());
            }
            if s.image_pull_policy.is_some() {
                container.image_pull_policy = s.image_pull_policy.clone();
            }
            if container.security_context.is_none() {
                container.security_context = Some(hardened_container());
            }
        }
        // The user's node selector replaces the component's own (the node agents' linux-only).
        if s.node_selector.is_some() {
            pod.node_selector = s.node_selector.clone();
        }
        let tolerations: Vec<_> = pod
            .tolerations
            .take()
            .into_iter()
            .flatten()
            .chain(s.tolerations.clone().into_iter().flatten())
            .collect();
        pod.tolerations = (!tolerations.is_empty()).then_some(tolerations);
        pod.affinity = s.affinity.clone();
        pod.priority_class_name = s
            .priority_class_name
            .clone()
            .or(self.default_priority_class.map(String::from));
        if !s.image_pull_secrets.is_empty() {
            pod.image_pull_secrets = Some(
                s.image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect(),
            );
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..Default::default()
            }),
            spec: Some(pod),
        }
    }

    /// The Deployment, then its HorizontalPodAutoscaler and PodDisruptionBudget as far as the
    /// settings ask for them.
    pub fn deployment(&self) -> Vec<Rendered> {
        let deployment = Deployment {
            metadata: meta_in(self.install, self.component, self.name, self.namespace),
            spec: Some(DeploymentSpec {
                replicas: common::replicas(self.settings),
                selector: self.selector(),
                strategy: Some(deployment_strategy()),
                template: self.template(),
                ..Default::default()
            }),
            status: None,
        };
        let mut out = vec![Rendered::new(self.component, &deployment)];
        out.extend(common::scaling_in(
            self.install,
            self.component,
            self.name,
            self.namespace,
            self.settings,
            &self.selector,
        ));
        out
    }

    /// The pods' NetworkPolicy when `spec.global.networkPolicy` asks for one: named and placed
    /// like the workload, selecting exactly its pods (the workload's selector), every egress
    /// allowed (the API server, upstreams, JWKS and tracing endpoints are anywhere), and ingress
    /// only on the ports the pods serve ([`served_ports`]).
    pub fn network_policy(&self) -> Option<Rendered> {
        if !self.install.global.network_policy {
            return None;
        }
        let ports: Vec<NetworkPolicyPort> = served_ports(&self.pod)
            .into_iter()
            .map(|(port, protocol)| NetworkPolicyPort {
                port: Some(IntOrString::Int(port)),
                protocol: Some(protocol),
                end_port: None,
            })
            .collect();
        // One rule without peers: these ports from anywhere. A rule with no ports would allow
        // every port, so pods that serve none get no rule (no ingress at all).
        let ingress = if ports.is_empty() {
            vec![]
        } else {
            vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(ports),
            }]
        };
        let policy = NetworkPolicy {
            metadata: meta_in(self.install, self.component, self.name, self.namespace),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(self.selector()),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(ingress),
                // An empty rule allows all egress.
                egress: Some(vec![NetworkPolicyEgressRule::default()]),
            }),
        };
        Some(Rendered::new(self.component, &policy))
    }

    /// The DaemonSet (no replicas, autoscaler or disruption budget: one pod per node), rolled
    /// one node at a time.
    pub fn daemon_set(&self) -> Rendered {
        self.daemon_set_rolled(daemon_set_strategy())
    }

    /// The DaemonSet with its own rolling update.
    pub fn daemon_set_rolled(&self, strategy: DaemonSetUpdateStrategy) -> Rendered {
        let daemon_set = DaemonSet {
            metadata: meta_in(self.install, self.component, self.name, self.namespace),
            spec: Some(DaemonSetSpec {
                selector: self.selector(),
                update_strategy: Some(strategy),
                template: self.template(),
                ..Default::default()
            }),
            status: None,
        };
        Rendered::new(self.component, &daemon_set)
    }
}

/// The ports a pod serves, as (port, protocol) in the order they first appear: every
/// container's declared ports, then the numeric ports its probes reach (a probe naming a port
/// reaches a declared one). A component's Service targets declared ports, so its target ports
/// are among these.
pub(super) fn served_ports(pod: &PodSpec) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = Vec::new();
    let mut add = |port: i32, protocol: &str| {
        if !out.iter().any(|(p, proto)| *p == port && proto == protocol) {
            out.push((port, protocol.to_string()));
        }
    };
    let containers = || {
        pod.containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
    };
    for c in containers() {
        for p in c.ports.iter().flatten() {
            add(p.container_port, p.protocol.as_deref().unwrap_or("TCP"));
        }
    }
    for c in containers() {
        let probes = [&c.readiness_probe, &c.liveness_probe, &c.startup_probe];
        for probe in probes.into_iter().flatten() {
            let port = probe
                .http_get
                .as_ref()
                .map(|h| &h.port)
                .or(probe.tcp_socket.as_ref().map(|t| &t.port));
            match (port, &probe.grpc) {
                (Some(IntOrString::Int(p)), _) => add(*p, "TCP"),
                (None, Some(grpc)) => add(grpc.port, "TCP"),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, SecurityContext, Toleration};

    fn install() -> Installation {
        let spec = serde_yaml::from_str("profile: minimal").unwrap();
        let owner = crate::effective::Owner {
            name: "t".into(),
            uid: None,
        };
        Installation::resolve(owner, &spec).unwrap()
    }

    fn workload<'a>(install: &'a Installation, settings: &'a Settings) -> Workload<'a> {
        Workload {
            install,
            component: ComponentId::Istiod,
            name: "w",
            namespace: "elsewhere",
            settings,
            selector: BTreeMap::from([("app".to_string(), "w".to_string())]),
            labels: BTreeMap::from([("mine".to_string(), "ours".to_string())]),
            annotations: BTreeMap::new(),
            pod: PodSpec {
                containers: vec![
                    Container {
                        name: "main".into(),
                        env: Some(vec![common::env("A", "ours"), common::env("B", "ours")]),
                        ..Default::default()
                    },
                    Container {
                        name: "privileged".into(),
                        security_context: Some(SecurityContext {
                            privileged: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                tolerations: Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            default_priority_class: Some("fallback"),
        }
    }

    #[test]
    fn settings_apply_in_one_place_and_meshops_own_fields_win() {
        let install = install();
        let settings = Settings {
            replicas: 2,
            env: vec![common::env("B", "user"), common::env("C", "user")],
            tolerations: Some(vec![Toleration {
                key: Some("user".into()),
                ..Default::default()
            }]),
            pod_labels: BTreeMap::from([
                ("app".to_string(), "hijack".to_string()),
                ("mine".to_string(), "theirs".to_string()),
                ("team".to_string(), "t".to_string()),
            ]),
            image_pull_policy: Some("Always".into()),
            image_pull_secrets: vec!["regcred".into()],
            ..Default::default()
        };
        let template = workload(&install, &settings).template();
        let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert_eq!(
            (
                labels["app"].as_str(),
                labels["mine"].as_str(),
                labels["team"].as_str()
            ),
            ("w", "ours", "t")
        );
        assert_eq!(labels[common::LABEL_MANAGED_BY], "meshop");
        // No annotations from anyone: none written.
        assert_eq!(template.metadata.as_ref().unwrap().annotations, None);
        let pod = template.spec.unwrap();
        let env: Vec<(String, String)> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        // The user's variable replaces meshop's in place; a new one goes last. Only the main
        // container gets env and resources.
        assert_eq!(
            env,
            [("A", "ours"), ("B", "user"), ("C", "user")].map(|(k, v)| (k.into(), v.into()))
        );
        assert_eq!(pod.containers[1].env, None);
        assert!(pod.containers[0].resources.is_some() && pod.containers[1].resources.is_none());
        // Hardened unless the renderer chose otherwise (the CNI agent's documented exception).
        assert_eq!(
            pod.containers[0].security_context,
            Some(hardened_container())
        );
        assert_eq!(
            pod.containers[1]
                .security_context
                .as_ref()
                .unwrap()
                .privileged,
            Some(true)
        );
        for c in &pod.containers {
            assert_eq!(c.image_pull_policy.as_deref(), Some("Always"), "{}", c.name);
        }
        let tolerations: Vec<_> = pod
            .tolerations
            .unwrap()
            .into_iter()
            .map(|t| t.key.or(t.operator).unwrap())
            .collect();
        assert_eq!(tolerations, ["Exists", "user"]);
        assert_eq!(pod.priority_class_name.as_deref(), Some("fallback"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    }

    #[test]
    fn deployments_share_one_rollout_and_leave_replicas_to_the_autoscaler() {
        let install = install();
        let fixed = Settings {
            replicas: 3,
            priority_class_name: Some("mine".into()),
            ..Default::default()
        };
        let out = workload(&install, &fixed).deployment();
        assert_eq!(out.len(), 1, "no autoscaler or budget asked for");
        let d: Deployment =
            serde_json::from_value(serde_json::to_value(&out[0].object).unwrap()).unwrap();
        assert_eq!(d.metadata.namespace.as_deref(), Some("elsewhere"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.strategy, Some(deployment_strategy()));
        assert_eq!(
            spec.template.spec.unwrap().priority_class_name.as_deref(),
            Some("mine")
        );
        let scaled = Settings {
            autoscale: Some(crate::effective::Autoscale {
                min: 2,
                max: 4,
                target_cpu: 80,
            }),
            pdb: Some(crate::effective::Pdb::MinAvailable(IntOrString::Int(1))),
            ..Default::default()
        };
        let out = workload(&install, &scaled).deployment();
        let kinds: Vec<(&str, Option<&str>)> =
            out.iter().map(|o| (o.kind(), o.namespace())).collect();
        assert_eq!(
            kinds,
            [
                ("Deployment", Some("elsewhere")),
                ("HorizontalPodAutoscaler", Some("elsewhere")),
                ("PodDisruptionBudget", Some("elsewhere"))
            ]
        );
        let d: Deployment =
            serde_json::from_value(serde_json::to_value(&out[0].object).unwrap()).unwrap();
        assert_eq!(d.spec.unwrap().replicas, None);
        let ds: DaemonSet = serde_json::from_value(
            serde_json::to_value(&workload(&install, &scaled).daemon_set().object).unwrap(),
        )
        .unwrap();
        assert_eq!(
            ds.spec.unwrap().update_strategy,
            Some(daemon_set_strategy())
        );
    }

    fn network_policy_of(install: &Installation, w: &Workload) -> serde_json::Value {
        assert!(install.global.network_policy);
        serde_json::to_value(&w.network_policy().unwrap().object).unwrap()
    }

    #[test]
    fn network_policies_open_the_served_ports_and_never_all_of_them() {
        let spec =
            serde_yaml::from_str("profile: minimal\nglobal: {networkPolicy: {enabled: true}}")
                .unwrap();
        let owner = crate::effective::Owner {
            name: "t".into(),
            uid: None,
        };
        let on = Installation::resolve(owner, &spec).unwrap();
        let install = &on;
        let settings = Settings::default();
        // Pods that serve nothing get no ingress rule: a rule without ports would open every port.
        let closed = network_policy_of(install, &workload(install, &settings));
        assert_eq!(closed["spec"]["ingress"], serde_json::json!([]));
        assert_eq!(closed["spec"]["egress"], serde_json::json!([{}]));
        assert_eq!(
            closed["spec"]["podSelector"],
            serde_json::json!({"matchLabels": {"app": "w"}})
        );
        assert_eq!(
            (
                &closed["metadata"]["name"],
                &closed["metadata"]["namespace"]
            ),
            (&serde_json::json!("w"), &serde_json::json!("elsewhere"))
        );
        // Declared ports keep their protocol; a probe's numeric port is served too, a named one
        // is a declared port already.
        let mut w = workload(install, &settings);
        let main = &mut w.pod.containers[0];
        main.ports = Some(
            [(9000, None, Some("p")), (53, Some("UDP"), None)]
                .into_iter()
                .map(
                    |(port, protocol, name)| k8s_openapi::api::core::v1::ContainerPort {
                        container_port: port,
                        protocol: protocol.map(String::from),
                        name: name.map(String::from),
                        ..Default::default()
                    },
                )
                .collect(),
        );
        let probe = |port: IntOrString| k8s_openapi::api::core::v1::Probe {
            http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                port,
                ..Default::default()
            }),
            ..Default::default()
        };
        main.readiness_probe = Some(probe(IntOrString::String("p".into())));
        w.pod.containers[1].liveness_probe = Some(probe(IntOrString::Int(8000)));
        let open = network_policy_of(install, &w);
        assert_eq!(
            open["spec"]["ingress"],
            serde_json::json!([{"ports": [
                {"port": 9000, "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"},
                {"port": 8000, "protocol": "TCP"},
            ]}])
        );
        // Not asked for: none.
        let off = self::install();
        assert!(workload(&off, &settings).network_policy().is_none());
    }
}
