//! Rendering, checked without a cluster: invariants that must hold for every profile and every
//! documented example. The golden files per profile are checked with the other generated files
//! (operator/tests/generated.rs; `make generate` rewrites them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshop::api::{MeshInstall, Profile};
use meshop::effective::{Installation, Owner};
use meshop::render::{self, ComponentId, Rendered, Stage};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn profile_install(profile: Profile) -> Installation {
    meshop::cli::installation(None, Some(profile), None).unwrap()
}

/// Every installation the invariants are checked on: each profile, and each documented example.
fn all_installs() -> Vec<(String, Installation)> {
    let mut out: Vec<_> = Profile::ALL
        .iter()
        .map(|p| (format!("profile {p}"), profile_install(*p)))
        .collect();
    for entry in std::fs::read_dir(root().join("docs/examples")).unwrap() {
        let path = entry.unwrap().path();
        let mi: MeshInstall =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let install = Installation::resolve(
            Owner {
                name: "example".into(),
                uid: Some("1234".into()),
            },
            &mi.spec,
        )
        .unwrap();
        out.push((path.display().to_string(), install));
    }
    out
}

#[test]
fn rendering_and_injection_are_deterministic_for_every_supported_version() {
    let dir = std::env::temp_dir().join(format!("meshop-det-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: migrate, image: m}]\n  containers: [{name: c, image: x, ports: [{containerPort: 8080}], readinessProbe: {httpGet: {path: /r, port: 8080}}}]\n",
    )
    .unwrap();
    for version in meshop::versions::supported() {
        for profile in Profile::ALL {
            let a = meshop::cli::render(None, Some(profile), Some(&version), None).unwrap();
            let b = meshop::cli::render(None, Some(profile), Some(&version), None).unwrap();
            assert_eq!(a, b, "{profile} {version}");
        }
        let a = meshop::cli::inject(&pod, None, Some(&version)).unwrap();
        let b = meshop::cli::inject(&pod, None, Some(&version)).unwrap();
        assert_eq!(a, b, "inject {version}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn components(objects: &[Rendered]) -> BTreeSet<ComponentId> {
    objects.iter().map(|o| o.component).collect()
}

#[test]
fn profiles_deploy_exactly_their_components() {
    use ComponentId::*;
    let expect = |profile, want: &[ComponentId]| {
        let got = components(&render::render(&profile_install(profile)).unwrap());
        let want: BTreeSet<_> = want.iter().copied().collect();
        assert_eq!(got, want, "{profile}");
    };
    expect(
        Profile::Demo,
        &[
            Base,
            Istiod,
            IngressGateway,
            EgressGateway,
            Prometheus,
            Grafana,
            Kiali,
            Jaeger,
        ],
    );
    expect(Profile::Production, &[Base, Istiod, IngressGateway]);
    expect(Profile::Performance, &[Base, Istiod, IngressGateway]);
    expect(Profile::Minimal, &[Base, Istiod]);
    expect(Profile::Empty, &[Base]);
}

fn typed<K: serde::de::DeserializeOwned>(o: &Rendered) -> K {
    serde_json::from_value(serde_json::to_value(&o.object).unwrap()).unwrap()
}

#[test]
fn production_and_performance_are_highly_available() {
    for profile in [Profile::Production, Profile::Performance] {
        let objects = render::render(&profile_install(profile)).unwrap();
        for name in ["istiod", "istio-ingressgateway"] {
            let hpa: HorizontalPodAutoscaler = typed(
                objects
                    .iter()
                    .find(|o| o.kind() == "HorizontalPodAutoscaler" && o.name() == name)
                    .unwrap(),
            );
            assert!(hpa.spec.min_replicas.unwrap() >= 2, "{profile} {name}");
            assert!(
                objects
                    .iter()
                    .any(|o| o.kind() == "PodDisruptionBudget" && o.name() == name),
                "{profile} {name} PDB"
            );
            let d: Deployment = typed(
                objects
                    .iter()
                    .find(|o| o.kind() == "Deployment" && o.name() == name)
                    .unwrap(),
            );
            let spec = d.spec.unwrap();
            assert_eq!(
                spec.replicas, None,
                "{profile} {name}: replicas belong to the HPA"
            );
            assert!(
                spec.template
                    .spec
                    .unwrap()
                    .affinity
                    .unwrap()
                    .pod_anti_affinity
                    .is_some(),
                "{profile} {name}"
            );
        }
    }
    let perf = render::render(&profile_install(Profile::Performance)).unwrap();
    let hpa: HorizontalPodAutoscaler = typed(
        perf.iter()
            .find(|o| o.kind() == "HorizontalPodAutoscaler" && o.name() == "istio-ingressgateway")
            .unwrap(),
    );
    assert_eq!(
        (hpa.spec.min_replicas, hpa.spec.max_replicas),
        (Some(3), 10)
    );
}

#[test]
fn overrides_reach_the_objects() {
    let yaml = "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: m}\nspec:\n  profile: demo\n  revision: canary\n  components:\n    istiod:\n      replicas: 3\n      env: [{name: EXTRA, value: '1'}]\n      nodeSelector: {pool: mesh}\n    ingressGateway:\n      service: {type: NodePort, ports: [{name: http2, port: 80, targetPort: 8080, nodePort: 30080}]}\n    addons:\n      kiali: {enabled: false}\n";
    let mi: MeshInstall = serde_yaml::from_str(yaml).unwrap();
    let install = Installation::resolve(
        Owner {
            name: "m".into(),
            uid: None,
        },
        &mi.spec,
    )
    .unwrap();
    let objects = render::render(&install).unwrap();
    let d: Deployment = typed(
        objects
            .iter()
            .find(|o| o.kind() == "Deployment" && o.name() == "istiod-canary")
            .unwrap(),
    );
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "mesh");
    assert!(
        pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "EXTRA")
    );
    let svc: Service = typed(
        objects
            .iter()
            .find(|o| o.kind() == "Service" && o.name() == "istio-ingressgateway")
            .unwrap(),
    );
    let svc = svc.spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("NodePort"));
    assert_eq!(svc.ports.unwrap()[0].node_port, Some(30080));
    assert!(!components(&objects).contains(&ComponentId::Kiali));
    assert!(
        objects
            .iter()
            .any(|o| o.kind() == "ConfigMap" && o.name() == "istio-canary")
    );
}

#[test]
fn apply_order_respects_dependencies() {
    for (what, install) in all_installs() {
        let objects = render::render(&install).unwrap();
        let stages: Vec<Stage> = objects.iter().map(|o| o.stage()).collect();
        assert!(
            stages.windows(2).all(|w| w[0] <= w[1]),
            "{what}: stages out of order"
        );
        assert_eq!(objects[0].kind(), "CustomResourceDefinition", "{what}");
        let ns = objects
            .iter()
            .position(|o| o.kind() == "Namespace")
            .unwrap();
        if let Some(first_namespaced) = objects.iter().position(|o| o.namespaced) {
            assert!(
                ns < first_namespaced,
                "{what}: namespace must come before namespaced objects"
            );
        }
    }
}

const REQUIRED_LABELS: [&str; 4] = [
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
    "app.kubernetes.io/instance",
];

#[test]
fn every_object_is_labelled_owned_and_unique() {
    for (what, install) in all_installs() {
        let objects = render::render(&install).unwrap();
        let mut keys = BTreeSet::new();
        for o in &objects {
            let labels = o.object.metadata.labels.clone().unwrap_or_default();
            for l in REQUIRED_LABELS {
                assert!(
                    labels.contains_key(l),
                    "{what}: {} lacks label {l}",
                    o.key()
                );
            }
            assert_eq!(labels["app.kubernetes.io/managed-by"], "meshop");
            assert!(keys.insert(o.key()), "{what}: {} rendered twice", o.key());
            if o.shared {
                assert_eq!(labels["app.kubernetes.io/instance"], "shared");
                assert!(
                    o.object.metadata.owner_references.is_none(),
                    "{what}: shared {} has an owner",
                    o.key()
                );
            } else if install.owner.uid.is_some() {
                let owners = o
                    .object
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default();
                assert_eq!(owners.len(), 1, "{what}: {} owner", o.key());
                assert_eq!(owners[0].kind, "MeshInstall");
            }
            if o.namespaced {
                // The control plane's namespace, or that of a gateway listed in another one.
                let namespaces = install.namespaces();
                assert!(
                    namespaces.iter().any(|n| o.namespace() == Some(n.as_str())),
                    "{what}: {} outside {namespaces:?}",
                    o.key()
                );
            }
        }
    }
}

/// (labels, container ports) of every workload's pod template, by workload name.
fn pod_templates(objects: &[Rendered]) -> Vec<(String, BTreeMap<String, String>, PodTemplateSpec)> {
    let mut out = Vec::new();
    for o in objects {
        let (selector, template) = match o.kind() {
            "Deployment" => {
                let s = typed::<Deployment>(o).spec.unwrap();
                (s.selector, s.template)
            }
            "DaemonSet" => {
                let s = typed::<DaemonSet>(o).spec.unwrap();
                (s.selector, s.template)
            }
            _ => continue,
        };
        let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
        for (k, v) in selector.match_labels.unwrap() {
            assert_eq!(
                labels.get(&k),
                Some(&v),
                "{}: selector {k}={v} does not match its pod labels",
                o.key()
            );
        }
        out.push((o.name().to_string(), labels, template));
    }
    out
}

#[test]
fn selectors_and_ports_line_up() {
    for (what, install) in all_installs() {
        let objects = render::render(&install).unwrap();
        let pods = pod_templates(&objects);
        for o in objects.iter().filter(|o| o.kind() == "Service") {
            let spec = typed::<Service>(o).spec.unwrap();
            let selector = spec.selector.unwrap();
            let matching: Vec<_> = pods
                .iter()
                .filter(|(_, labels, _)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .collect();
            assert!(
                !matching.is_empty(),
                "{what}: Service {} selects no pods",
                o.name()
            );
            let container_ports: BTreeSet<i32> = matching
                .iter()
                .flat_map(|(_, _, t)| t.spec.as_ref().unwrap().containers.iter())
                .flat_map(|c| c.ports.clone().unwrap_or_default())
                .map(|p| p.container_port)
                .collect();
            for port in spec.ports.unwrap() {
                let target = match port.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => p,
                    other => panic!(
                        "{what}: Service {} uses a non-numeric target port {other:?}",
                        o.name()
                    ),
                };
                assert!(
                    container_ports.contains(&target),
                    "{what}: Service {} port {} targets {target}, which no container exposes",
                    o.name(),
                    port.port
                );
            }
        }
        for o in objects.iter().filter(|o| o.kind() == "PodDisruptionBudget") {
            let selector = typed::<PodDisruptionBudget>(o)
                .spec
                .unwrap()
                .selector
                .unwrap()
                .match_labels
                .unwrap();
            assert!(
                pods.iter()
                    .any(|(_, l, _)| selector.iter().all(|(k, v)| l.get(k) == Some(v))),
                "{what}: PDB {} selects nothing",
                o.name()
            );
        }
        for o in objects
            .iter()
            .filter(|o| o.kind() == "HorizontalPodAutoscaler")
        {
            let spec = typed::<HorizontalPodAutoscaler>(o).spec;
            assert!(
                spec.min_replicas.unwrap_or(1) <= spec.max_replicas,
                "{what}: HPA {}",
                o.name()
            );
            assert!(
                pods.iter()
                    .any(|(n, _, _)| *n == spec.scale_target_ref.name),
                "{what}: HPA {} targets nothing",
                o.name()
            );
        }
    }
}

#[test]
fn every_container_is_hardened_with_requests_and_probes() {
    for (what, install) in all_installs() {
        let objects = render::render(&install).unwrap();
        for (name, _, template) in pod_templates(&objects) {
            let spec = template.spec.unwrap();
            for c in &spec.containers {
                let res = c.resources.as_ref().and_then(|r| r.requests.as_ref());
                assert!(
                    res.is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory")),
                    "{what}: {name}/{} lacks requests",
                    c.name
                );
                assert!(
                    c.readiness_probe.is_some(),
                    "{what}: {name}/{} lacks a readiness probe",
                    c.name
                );
                let sc = c.security_context.clone().unwrap();
                // The documented exceptions (operator/src/render/cni.rs, ztunnel.rs): the node
                // agents run as root with exactly these capabilities, all others dropped, never
                // privileged.
                let node_agent = match name.as_str() {
                    "istio-cni-node" => Some(
                        &[
                            "NET_ADMIN",
                            "NET_RAW",
                            "SYS_PTRACE",
                            "SYS_ADMIN",
                            "DAC_OVERRIDE",
                        ][..],
                    ),
                    "ztunnel" => Some(&["NET_ADMIN", "SYS_ADMIN", "NET_RAW"][..]),
                    _ => None,
                };
                if let Some(added) = node_agent {
                    assert_eq!(sc.privileged, Some(false), "{what}: {name}");
                    let caps = sc.capabilities.clone().unwrap();
                    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{what}: {name}");
                    assert_eq!(
                        caps.add,
                        Some(added.iter().map(|c| c.to_string()).collect()),
                        "{what}: {name}"
                    );
                    assert_ne!(spec.host_network, Some(true), "{what}: {name}");
                    continue;
                }
                assert_eq!(sc.run_as_non_root, Some(true), "{what}: {name}/{}", c.name);
                assert_eq!(
                    sc.read_only_root_filesystem,
                    Some(true),
                    "{what}: {name}/{}",
                    c.name
                );
                assert_eq!(
                    sc.allow_privilege_escalation,
                    Some(false),
                    "{what}: {name}/{}",
                    c.name
                );
                assert_eq!(
                    sc.capabilities.unwrap().drop,
                    Some(vec!["ALL".to_string()]),
                    "{what}: {name}/{}",
                    c.name
                );
                assert_eq!(
                    sc.seccomp_profile.unwrap().type_,
                    "RuntimeDefault",
                    "{what}: {name}/{}",
                    c.name
                );
            }
        }
    }
}

#[test]
fn mesh_settings_follow_the_profile() {
    let demo = profile_install(Profile::Demo);
    assert!(demo.mesh.access_logging);
    assert_eq!(demo.mesh.trace_sampling, 100.0);
    let perf = profile_install(Profile::Performance);
    assert!(!perf.mesh.access_logging);
    assert_eq!(perf.mesh.trace_sampling, 0.0);
    assert!(perf.injection.concurrency.is_some());
    let objects = render::render(&profile_install(Profile::Production)).unwrap();
    let pa = objects
        .iter()
        .find(|o| o.kind() == "PeerAuthentication")
        .unwrap();
    assert_eq!(pa.object.data["spec"]["mtls"]["mode"], "STRICT");
}

#[test]
fn component_filter_and_unknown_component() {
    let only = meshop::cli::render(None, Some(Profile::Demo), None, Some("grafana")).unwrap();
    assert!(only.contains("name: grafana") && !only.contains("name: istiod"));
    let err = meshop::cli::render(None, Some(Profile::Demo), None, Some("pilot")).unwrap_err();
    assert!(
        err.to_string().contains("unknown component \"pilot\""),
        "{err}"
    );
}

fn resolve(yaml: &str) -> Installation {
    let spec: meshop::api::MeshInstallSpec = serde_yaml::from_str(yaml).unwrap();
    Installation::resolve(
        Owner {
            name: "t".into(),
            uid: Some("uid-1".into()),
        },
        &spec,
    )
    .unwrap()
}

fn keys_of(objects: &[Rendered], kind: &str) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| o.kind() == kind)
        .map(|o| o.key())
        .collect()
}

fn env_of(template: &PodTemplateSpec, name: &str) -> Option<String> {
    template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn args_of(template: &PodTemplateSpec) -> Vec<String> {
    template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

const GATEWAYS: &str = "profile: minimal
namespace: mesh
components:
  ingressGateway: {enabled: true}
  egressGateway: {enabled: true}
  ingressGateways:
  - name: internal
    labels: {istio: internal}
  - name: public
    namespace: edge
    replicas: 3
  - name: off
    enabled: false
";

#[test]
fn listed_gateways_render_in_their_namespaces_under_their_names() {
    let install = resolve(GATEWAYS);
    let objects = render::render(&install).unwrap();
    let want: BTreeSet<String> = [
        "Deployment/mesh/istiod",
        "Deployment/mesh/istio-ingressgateway",
        "Deployment/mesh/istio-egressgateway",
        "Deployment/mesh/internal",
        "Deployment/edge/public",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys_of(&objects, "Deployment"), want);
    for kind in ["ServiceAccount", "Role", "RoleBinding", "Service"] {
        assert!(
            keys_of(&objects, kind).contains(&format!("{kind}/edge/public")),
            "{kind} of the gateway in edge"
        );
    }
    assert_eq!(install.namespaces(), ["mesh", "edge"]);
    let by_key = |key: &str| objects.iter().find(|o| o.key() == key).unwrap();
    // The Role is bound to the gateway's own ServiceAccount, in the gateway's namespace.
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = typed(by_key("RoleBinding/edge/public"));
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.name.as_str(), subject.namespace.as_deref()),
        ("public", Some("edge"))
    );
    // Labels replace the default selector's values; the Service selects the same pods.
    let internal: Deployment = typed(by_key("Deployment/mesh/internal"));
    let selector = internal
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(
        selector,
        BTreeMap::from([
            ("app".to_string(), "internal".to_string()),
            ("istio".to_string(), "internal".to_string())
        ])
    );
    let svc: Service = typed(by_key("Service/mesh/internal"));
    assert_eq!(svc.spec.unwrap().selector.unwrap(), selector);
    // Each gateway is its own component's: status sums them under ingressGateway.
    assert_eq!(
        by_key("Deployment/edge/public").component,
        ComponentId::IngressGateway
    );
    let public: Deployment = typed(by_key("Deployment/edge/public"));
    let spec = public.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        env_of(&spec.template, "ISTIO_META_OWNER").as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/edge/deployments/public")
    );
    // A listed gateway starts from the profile's gateway settings (service ports, resources).
    let default: Service = typed(by_key("Service/mesh/istio-ingressgateway"));
    let public_svc: Service = typed(by_key("Service/edge/public"));
    assert_eq!(
        public_svc.spec.unwrap().ports,
        default.spec.unwrap().ports,
        "the profile's ports"
    );
}

#[test]
fn a_listed_gateway_does_not_inherit_the_default_gateways_anti_affinity() {
    let install =
        resolve("profile: production\ncomponents:\n  ingressGateways:\n  - name: internal\n");
    let gateways = install.gateways();
    let default = gateways
        .iter()
        .find(|g| g.name == "istio-ingressgateway")
        .unwrap();
    let internal = gateways.iter().find(|g| g.name == "internal").unwrap();
    assert!(default.settings.affinity.is_some());
    assert_eq!(internal.settings.affinity, None);
    // Everything else is the profile's: autoscaled, with a disruption budget.
    assert_eq!(internal.settings.autoscale, default.settings.autoscale);
    assert_eq!(internal.settings.pdb, default.settings.pdb);
    assert_eq!(internal.settings.resources, default.settings.resources);
}

#[test]
fn a_gateway_listed_twice_is_a_spec_error() {
    let spec: meshop::api::MeshInstallSpec = serde_yaml::from_str(
        "profile: minimal\ncomponents:\n  ingressGateways: [{name: a}]\n  egressGateways: [{name: a}]\n",
    )
    .unwrap();
    let owner = Owner {
        name: "t".into(),
        uid: None,
    };
    let err = Installation::resolve(owner.clone(), &spec).unwrap_err();
    assert!(err.to_string().contains("\"a\" is listed twice"), "{err}");
    let spec: meshop::api::MeshInstallSpec = serde_yaml::from_str(
        "profile: minimal\ncomponents:\n  egressGateways: [{name: istio-ingressgateway}]\n",
    )
    .unwrap();
    assert!(Installation::resolve(owner.clone(), &spec).is_err());
    // A label meshop sets itself would give the gateway a selector its pods do not match.
    let spec: meshop::api::MeshInstallSpec = serde_yaml::from_str(
        "profile: minimal\ncomponents:\n  ingressGateways: [{name: a, labels: {sidecar.istio.io/inject: 'true'}}]\n",
    )
    .unwrap();
    let err = Installation::resolve(owner, &spec).unwrap_err();
    assert!(
        err.to_string()
            .contains("sets label \"sidecar.istio.io/inject\""),
        "{err}"
    );
}

const SETTINGS: &str = "profile: demo
injection: {trafficCapture: cni}
global:
  priorityClassName: mesh-critical
  podAnnotations: {a: global, b: global}
  podLabels: {team: mesh, app: hijack, sidecar.istio.io/inject: 'true', istio.io/rev: other}
  imagePullPolicy: Always
  imagePullSecrets: [regcred]
components:
  cni: {enabled: true}
  istiod:
    podAnnotations: {b: istiod, sidecar.istio.io/inject: 'true'}
    imagePullPolicy: IfNotPresent
  ingressGateways:
  - name: extra
    priorityClassName: edge-critical
    podLabels: {team: edge}
  addons:
    grafana:
      podLabels: {x: y}
      priorityClassName: low
      imagePullPolicy: Never
";

#[test]
fn pod_settings_reach_every_workload_through_the_one_builder() {
    let install = resolve(SETTINGS);
    let objects = render::render(&install).unwrap();
    let workloads = pod_templates(&objects);
    assert_eq!(workloads.len(), 9, "istiod, 3 gateways, cni, 4 addons");
    for (name, labels, template) in &workloads {
        let spec = template.spec.as_ref().unwrap();
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap_or_default();
        let pull: BTreeSet<Option<String>> = spec
            .containers
            .iter()
            .map(|c| c.image_pull_policy.clone())
            .collect();
        let secrets: Vec<String> = spec
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .collect();
        // meshop's own labels and annotations win over the user's.
        assert_eq!(
            labels.get("sidecar.istio.io/inject").map(String::as_str),
            Some("false"),
            "{name}"
        );
        assert_ne!(
            labels.get("app").map(String::as_str),
            Some("hijack"),
            "{name}"
        );
        assert_ne!(
            labels.get("istio.io/rev").map(String::as_str),
            Some("other"),
            "{name}"
        );
        let (priority, pulls, team) = match name.as_str() {
            "istiod" => {
                assert_eq!(annotations["b"], "istiod");
                assert_eq!(annotations["sidecar.istio.io/inject"], "false");
                (Some("mesh-critical"), Some("IfNotPresent"), Some("mesh"))
            }
            "istio-ingressgateway" | "istio-egressgateway" => {
                assert_eq!(annotations["b"], "global");
                (Some("mesh-critical"), Some("Always"), Some("mesh"))
            }
            "extra" => (Some("edge-critical"), Some("Always"), Some("edge")),
            // The CNI agent keeps its node-critical priority and takes only the image settings.
            "istio-cni-node" => (Some("system-node-critical"), Some("Always"), None),
            "grafana" => {
                assert_eq!(labels["x"], "y");
                (Some("low"), Some("Never"), None)
            }
            // The other addons run no Istio image: global does not reach them.
            _ => (None, None, None),
        };
        assert_eq!(spec.priority_class_name.as_deref(), priority, "{name}");
        assert_eq!(pull, BTreeSet::from([pulls.map(String::from)]), "{name}");
        assert_eq!(labels.get("team").map(String::as_str), team, "{name}");
        let global_reaches =
            !matches!(name.as_str(), "grafana" | "prometheus" | "kiali" | "jaeger");
        assert_eq!(
            secrets,
            if global_reaches {
                vec!["regcred".to_string()]
            } else {
                vec![]
            },
            "{name}"
        );
        if team.is_some() {
            assert_eq!(annotations["a"], "global", "{name}");
        } else {
            assert!(!annotations.contains_key("a"), "{name}");
        }
    }
    // One rollout rule for every Deployment: surge, never below the wanted capacity.
    for o in objects.iter().filter(|o| o.kind() == "Deployment") {
        let strategy = typed::<Deployment>(o).spec.unwrap().strategy.unwrap();
        let rolling = strategy.rolling_update.unwrap();
        assert_eq!(
            (rolling.max_surge, rolling.max_unavailable),
            (
                Some(IntOrString::String("100%".into())),
                Some(IntOrString::Int(0))
            ),
            "{}",
            o.key()
        );
    }
}

#[test]
fn global_logging_and_cluster_identity_reach_istiod_gateways_and_sidecars() {
    let install = resolve(
        "profile: minimal
components:
  ingressGateway: {enabled: true}
  egressGateways: [{name: out, namespace: edge}]
global:
  logLevel: default:debug,ads:info
  logAsJson: true
  meshID: mesh1
  network: net1
  clusterName: c1
",
    );
    let objects = render::render(&install).unwrap();
    for (name, _, template) in pod_templates(&objects) {
        let args = args_of(&template);
        assert!(
            args.contains(&"--log_output_level=default:debug,ads:info".to_string()),
            "{name}: {args:?}"
        );
        assert!(
            args.contains(&"--log_as_json".to_string()),
            "{name}: {args:?}"
        );
        assert_eq!(
            args.iter()
                .filter(|a| a.starts_with("--log_output_level"))
                .count(),
            1,
            "{name}"
        );
        if name == "istiod" {
            assert_eq!(env_of(&template, "CLUSTER_ID").as_deref(), Some("c1"));
        } else {
            assert_eq!(
                env_of(&template, "ISTIO_META_CLUSTER_ID").as_deref(),
                Some("c1"),
                "{name}"
            );
            assert_eq!(
                env_of(&template, "ISTIO_META_NETWORK").as_deref(),
                Some("net1"),
                "{name}"
            );
            assert_eq!(
                env_of(&template, "ISTIO_META_MESH_ID").as_deref(),
                Some("mesh1"),
                "{name}"
            );
            assert_eq!(
                env_of(&template, "TRUST_DOMAIN").as_deref(),
                Some("cluster.local"),
                "{name}"
            );
        }
    }
    // meshID also reaches istiod's mesh config, as Istio's chart writes it (defaultConfig.meshId).
    let mesh_of = |objects: &[Rendered]| -> serde_yaml::Value {
        let cm: k8s_openapi::api::core::v1::ConfigMap = typed(
            objects
                .iter()
                .find(|o| o.kind() == "ConfigMap" && o.name() == "istio")
                .unwrap(),
        );
        serde_yaml::from_str(&cm.data.unwrap()["mesh"]).unwrap()
    };
    assert_eq!(
        mesh_of(&objects)["defaultConfig"]["meshId"],
        serde_yaml::Value::from("mesh1")
    );
    // Without spec.global: Istio's defaults (cluster Kubernetes, the trust domain as mesh id, no
    // network, default:info, plain text logs).
    let plain = render::render(&resolve(
        "profile: minimal\ncomponents: {ingressGateway: {enabled: true}}\n",
    ))
    .unwrap();
    assert_eq!(mesh_of(&plain)["defaultConfig"].get("meshId"), None);
    for (name, _, template) in pod_templates(&plain) {
        let args = args_of(&template);
        assert!(
            args.contains(&"--log_output_level=default:info".to_string()),
            "{name}"
        );
        assert!(!args.contains(&"--log_as_json".to_string()), "{name}");
        if name == "istiod" {
            assert_eq!(
                env_of(&template, "CLUSTER_ID").as_deref(),
                Some("Kubernetes")
            );
        } else {
            assert_eq!(env_of(&template, "ISTIO_META_NETWORK"), None);
            assert_eq!(
                env_of(&template, "ISTIO_META_MESH_ID").as_deref(),
                Some("cluster.local")
            );
        }
    }
}

#[test]
fn global_identity_and_pull_policy_reach_injected_proxies() {
    let dir = std::env::temp_dir().join(format!("meshop-global-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: apps}\nspec:\n  imagePullSecrets: [{name: own}, {name: regcred}]\n  containers: [{name: c, image: x}]\n",
    )
    .unwrap();
    let mesh = dir.join("mesh.yaml");
    std::fs::write(
        &mesh,
        "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata: {name: m}\nspec:\n  profile: minimal\n  injection: {sidecarMode: classic}\n  global: {meshID: mesh1, network: net1, clusterName: c1, imagePullPolicy: Always, imagePullSecrets: [regcred, other]}\n",
    )
    .unwrap();
    let out = meshop::cli::inject(&pod, Some(&mesh), None).unwrap();
    let injected: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&out).unwrap();
    let spec = injected.spec.unwrap();
    let proxy = spec
        .containers
        .iter()
        .find(|c| c.name == "istio-proxy")
        .unwrap();
    let env = |name: &str| {
        proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env("ISTIO_META_CLUSTER_ID").as_deref(), Some("c1"));
    assert_eq!(env("ISTIO_META_NETWORK").as_deref(), Some("net1"));
    assert_eq!(env("ISTIO_META_MESH_ID").as_deref(), Some("mesh1"));
    assert_eq!(proxy.image_pull_policy.as_deref(), Some("Always"));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "istio-init")
        .unwrap();
    assert_eq!(init.image_pull_policy.as_deref(), Some("Always"));
    // The pod's own pull secrets stay; global's are added once each.
    let secrets: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(secrets, ["own", "regcred", "other"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `global.networkPolicy`: istiod, every gateway (the profile's and listed ones, in their own
/// namespaces) and the CNI agent.
const NETWORK_POLICIES: &str = "profile: demo
revision: canary
namespace: mesh
global:
  networkPolicy: {enabled: true}
components:
  cni: {enabled: true}
  ingressGateways:
  - name: public
    namespace: edge
    labels: {team: edge}
    service:
      ports:
      - {name: https, port: 443, targetPort: 8443}
      - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
";

/// (port, protocol) pairs, the order left out.
type Ports = BTreeSet<(i32, String)>;

/// What the pods of a template serve, read off the rendered objects: every container's declared
/// ports, the target ports of every rendered Service that selects the pods, and the numeric ports
/// of the probes.
fn served_by(
    objects: &[Rendered],
    labels: &BTreeMap<String, String>,
    t: &PodTemplateSpec,
) -> Ports {
    let mut ports = Ports::new();
    let pod = t.spec.as_ref().unwrap();
    for c in &pod.containers {
        for p in c.ports.iter().flatten() {
            ports.insert((p.container_port, p.protocol.clone().unwrap_or("TCP".into())));
        }
        for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe]
            .into_iter()
            .flatten()
        {
            if let Some(IntOrString::Int(p)) = probe.http_get.as_ref().map(|h| &h.port) {
                ports.insert((*p, "TCP".into()));
            }
        }
    }
    for o in objects.iter().filter(|o| o.kind() == "Service") {
        let spec = typed::<Service>(o).spec.unwrap();
        let selector = spec.selector.unwrap_or_default();
        if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        for p in spec.ports.unwrap_or_default() {
            let Some(IntOrString::Int(target)) = p.target_port else {
                panic!("{}: a non-numeric target port", o.key())
            };
            ports.insert((target, p.protocol.unwrap_or("TCP".into())));
        }
    }
    ports
}

#[test]
fn network_policies_open_exactly_the_ports_each_component_serves() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let install = resolve(NETWORK_POLICIES);
    let objects = render::render(&install).unwrap();
    let pods = pod_templates(&objects);
    let policies: Vec<&Rendered> = objects
        .iter()
        .filter(|o| o.kind() == "NetworkPolicy")
        .collect();
    // One per component Istio gives one: istiod (named like its Deployment), each gateway, the
    // CNI agent; none for the addons.
    let want: BTreeSet<String> = [
        "NetworkPolicy/mesh/istiod-canary",
        "NetworkPolicy/mesh/istio-ingressgateway",
        "NetworkPolicy/mesh/istio-egressgateway",
        "NetworkPolicy/edge/public",
        "NetworkPolicy/mesh/istio-cni-node",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys_of(&objects, "NetworkPolicy"), want);
    for o in &policies {
        let policy: NetworkPolicy = typed(o);
        let spec = policy.spec.unwrap();
        // The workload of the same name and namespace.
        let workload = objects
            .iter()
            .find(|w| {
                matches!(w.kind(), "Deployment" | "DaemonSet")
                    && w.name() == o.name()
                    && w.namespace() == o.namespace()
            })
            .unwrap_or_else(|| panic!("{}: no workload of its name", o.key()));
        assert_eq!(workload.component, o.component, "{}", o.key());
        let workload_selector = match workload.kind() {
            "Deployment" => typed::<Deployment>(workload).spec.unwrap().selector,
            _ => typed::<DaemonSet>(workload).spec.unwrap().selector,
        };
        let selector = spec.pod_selector.clone().unwrap();
        assert_eq!(selector, workload_selector, "{}", o.key());
        // It selects that workload's pods and no other rendered pods of its namespace.
        let selected: Vec<&String> = pods
            .iter()
            .zip(
                objects
                    .iter()
                    .filter(|w| matches!(w.kind(), "Deployment" | "DaemonSet")),
            )
            .filter(|((_, labels, _), w)| {
                w.namespace() == o.namespace()
                    && selector
                        .match_labels
                        .iter()
                        .flatten()
                        .all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|((name, _, _), _)| name)
            .collect();
        assert_eq!(selected, [&o.name().to_string()], "{}", o.key());
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            "{}",
            o.key()
        );
        // Egress: one empty rule, allowing everything.
        assert_eq!(
            serde_json::to_value(&spec.egress).unwrap(),
            serde_json::json!([{}]),
            "{}",
            o.key()
        );
        // Ingress: from anywhere, on exactly the ports the pods serve.
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1, "{}", o.key());
        assert_eq!(rules[0].from, None, "{}", o.key());
        let opened: Ports = rules[0]
            .ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(IntOrString::Int(n)) => (*n, p.protocol.clone().unwrap()),
                other => panic!("{}: port {other:?}", o.key()),
            })
            .collect();
        let (_, labels, template) = pods.iter().find(|(n, _, _)| n == o.name()).unwrap();
        assert_eq!(opened, served_by(&objects, labels, template), "{}", o.key());
    }
    // The facts Istio's own policies rest on are among them.
    let opened = |key: &str| -> Ports {
        let policy: NetworkPolicy = typed(policies.iter().find(|o| o.key() == key).unwrap());
        policy.spec.unwrap().ingress.unwrap()[0]
            .ports
            .iter()
            .flatten()
            .map(|p| match &p.port {
                Some(IntOrString::Int(n)) => (*n, p.protocol.clone().unwrap()),
                _ => unreachable!(),
            })
            .collect()
    };
    let tcp = |ports: &[i32]| -> Ports { ports.iter().map(|p| (*p, "TCP".to_string())).collect() };
    // istiod: debug and readiness, xDS, xDS over TLS, webhook, monitoring.
    assert_eq!(
        opened("NetworkPolicy/mesh/istiod-canary"),
        tcp(&[8080, 15010, 15012, 15014, 15017])
    );
    // A gateway: its Service's target ports (UDP kept), health, Envoy's metrics.
    let mut public = tcp(&[8443, 15021, 15090]);
    public.insert((5353, "UDP".into()));
    assert_eq!(opened("NetworkPolicy/edge/public"), public);
    assert!(opened("NetworkPolicy/mesh/istio-ingressgateway").is_superset(&tcp(&[15021, 15090])));
    // The CNI agent: metrics and readiness.
    assert_eq!(
        opened("NetworkPolicy/mesh/istio-cni-node"),
        tcp(&[8000, 15014])
    );
}

#[test]
fn no_network_policy_unless_asked_for() {
    for (what, install) in all_installs() {
        let objects = render::render(&install).unwrap();
        assert!(
            keys_of(&objects, "NetworkPolicy").is_empty(),
            "{what}: a NetworkPolicy without global.networkPolicy"
        );
    }
    let off = NETWORK_POLICIES.replace("enabled: true}", "enabled: false}");
    let objects = render::render(&resolve(&off)).unwrap();
    assert!(keys_of(&objects, "NetworkPolicy").is_empty());
}
