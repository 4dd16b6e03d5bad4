//! Puts the pieces together: the injected pod is the original plus the sidecar containers and
//! volumes, rewritten probes, and the labels and annotations Istio's tooling expects.

use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Serialize;

use super::identity::{self, Workload};
use super::native::{self, Kubelets};
use super::{
    InjectError, InjectionConfig, annotations, containers, custom, gateway, grpc, keys, names,
    overrides, probes,
};
use crate::api::TrafficCapture;
use crate::istio_proxy::{self, ports};
use crate::revision;

/// The `sidecar.istio.io/status` annotation: what injection added, so tools (and meshop itself)
/// can tell an injected pod and undo the injection.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    init_containers: Vec<&'a str>,
    containers: Vec<&'a str>,
    volumes: Vec<&'a str>,
    image_pull_secrets: Option<Vec<&'a str>>,
    revision: &'a str,
}

/// Returns `pod` with the sidecar injected. A pod injected before is injected again (what the
/// earlier injection added is stripped first, as Istio does); the webhook never asks for that.
/// The pod's namespace (`metadata.namespace`, `default` if unset) names its workload in telemetry;
/// the webhook should set it from the admission request, where a new pod's own field may be empty.
/// No nodes are known here, so `sidecarMode: auto` means native (see [`inject_on`]).
pub fn inject(pod: &Pod, cfg: &InjectionConfig) -> Result<Pod, InjectError> {
    inject_as(pod, cfg, None, None)
}

/// [`inject`] in a cluster whose nodes' kubelets are `kubelets`: `sidecarMode: auto` is decided
/// by them, as Istio decides it.
pub fn inject_on(
    pod: &Pod,
    cfg: &InjectionConfig,
    kubelets: &Kubelets,
) -> Result<Pod, InjectError> {
    inject_as(pod, cfg, None, Some(kubelets))
}

/// [`inject`], with the owning workload given by the caller (the offline injector knows it from the
/// document) instead of worked out from the pod's owner references, and the nodes when known.
pub(super) fn inject_as(
    pod: &Pod,
    cfg: &InjectionConfig,
    workload: Option<Workload>,
    kubelets: Option<&Kubelets>,
) -> Result<Pod, InjectError> {
    // A pod injected before is injected again from the current settings, as Istio does; one
    // injected with a proxyless gRPC template (which changes the app's own containers) is left
    // as it is.
    let (stripped, old_probers);
    let annotations = pod.metadata.annotations.as_ref();
    if annotations.is_some_and(|a| {
        a.contains_key(keys::STATUS) && a.get(keys::TEMPLATES).is_some_and(|t| t.contains("grpc-"))
    }) {
        return Ok(pod.clone());
    }
    let pod = if annotations.is_some_and(|a| a.contains_key(keys::STATUS)) {
        (stripped, old_probers) = strip_injected(pod);
        &stripped
    } else {
        old_probers = Map::new();
        pod
    };
    let empty = BTreeMap::new();
    let pod_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let selected = custom::select(pod_annotations, cfg)?;
    let grpc_template = selected.grpc;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| InjectError::InvalidPod("it has no spec".into()))?;
    if spec.containers.is_empty() {
        return Err(InjectError::InvalidPod("it has no containers".into()));
    }
    let settings = annotations::settings(pod_annotations, cfg)?;
    if let Some(template) = grpc_template {
        return inject_grpc(pod, cfg, template, &settings, workload);
    }
    // Istio's gateway template: a router proxy in the containers, no redirect.
    let gateway = gateway::requested(Some(&selected.builtin));
    let native = native::is_native(
        pod_annotations
            .get(keys::NATIVE_SIDECAR)
            .map(String::as_str),
        cfg.sidecar_mode,
        kubelets,
        spec.node_name.as_deref(),
    )? && !gateway;
    let mut added_volumes = match gateway {
        true => istio_proxy::sidecar_volumes(),
        false => added_volumes(),
    };
    // The pod's own volumes for its proxy come last, as in Istio's template (and its status).
    if !gateway {
        added_volumes.extend(settings.user_volumes.iter().cloned());
    }
    let namespace = namespace_of(pod);
    let workload = workload.unwrap_or_else(|| identity::workload_of(pod));

    let mut out = pod.clone();
    let Some(out_spec) = out.spec.as_mut() else {
        return Err(InjectError::InvalidPod("it has no spec".into()));
    };
    // The pod's own versions of the containers injection adds, merged over them below (Istio's
    // container overrides): istio-proxy from the containers (or, native, the init containers),
    // the redirect container from the init containers.
    let cni = cfg.traffic_capture == TrafficCapture::Cni;
    let init_name = if cni { names::VALIDATION } else { names::INIT };
    let own_proxy = take(&mut out_spec.containers, names::PROXY).or_else(|| {
        native
            .then(|| {
                take(
                    out_spec.init_containers.get_or_insert_with(Vec::new),
                    names::PROXY,
                )
            })
            .flatten()
    });
    let inits_of = |spec: &mut k8s_openapi::api::core::v1::PodSpec, name: &str| {
        (!gateway)
            .then(|| take(spec.init_containers.get_or_insert_with(Vec::new), name))
            .flatten()
    };
    let own_init = inits_of(out_spec, init_name);
    let other_redirect = inits_of(out_spec, if cni { names::INIT } else { names::VALIDATION });
    check_names(
        &out_spec.containers,
        out_spec.init_containers.as_deref().unwrap_or_default(),
        spec.volumes.iter().flatten().map(|v| v.name.as_str()),
        &added_volumes,
    )?;
    let probers = if settings.rewrite_probes {
        let mut probers = probes::rewrite(&mut out_spec.containers, settings.status_port);
        // The pod's own native sidecars are probed like its containers, as in Istio.
        for c in out_spec
            .init_containers
            .iter_mut()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        {
            probers.extend(probes::rewrite(
                std::slice::from_mut(c),
                settings.status_port,
            ));
        }
        // Probes rewritten by an earlier injection keep the originals its proxy carried.
        for (path, original) in old_probers {
            probers.entry(path).or_insert(original);
        }
        probers
    } else {
        Default::default()
    };
    let facts = containers::PodFacts {
        namespace,
        workload: &workload,
        app_containers: &spec.containers,
        probers: &probers,
        workload_name_label: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("service.istio.io/workload-name"))
            .map(String::as_str),
    };
    let mut proxy = match gateway {
        true => gateway::proxy(&settings, cfg, &facts),
        false => containers::proxy(&settings, cfg, &facts, native),
    };
    // NONE interception captures nothing: no redirect container at all, as in Istio.
    let mut init = (!gateway && settings.interception != annotations::Interception::None)
        .then(|| containers::init(&settings, cfg));
    let (mut proxy_overlay, mut init_overlay) = (None, None);
    if let Some(own) = &own_proxy {
        let (merged, overlay) = overrides::apply(&proxy, own)?;
        proxy = merged;
        proxy_overlay = Some(overlay);
        // Istio appends the app probers after the merge: they stay the last variable.
        if let Some(env) = proxy.env.as_mut()
            && let Some(i) = env.iter().position(|e| e.name == "ISTIO_KUBE_APP_PROBERS")
        {
            let probers = env.remove(i);
            env.push(probers);
        }
    }
    if let (Some(own), Some(injected)) = (&own_init, init.as_mut()) {
        let (merged, overlay) = overrides::apply(injected, own)?;
        *injected = merged;
        init_overlay = Some(overlay);
    }
    // Istio adjusts the first container named istio-init, else istio-validation: under CNI, a
    // pod's own istio-init takes the adjustment in the validation container's place.
    let mut other_redirect = other_redirect;
    if let Some(own) = &own_proxy {
        match (cni, other_redirect.as_mut(), init.as_mut()) {
            (true, Some(own_init), _) => overrides::adjust_init_user(own_init, own, false),
            (_, _, Some(injected)) => overrides::adjust_init_user(injected, own, cni),
            _ => {}
        }
    }
    // Istio merges the app's Prometheus settings after the overrides: its variable comes last.
    if let Some(app) = merge_prometheus(out.metadata.annotations.get_or_insert_with(BTreeMap::new))
    {
        proxy
            .env
            .get_or_insert_with(Vec::new)
            .push(crate::k8s::env("ISTIO_PROMETHEUS_ANNOTATIONS", app));
    }
    let first_app = spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .find(|n| *n != names::PROXY);

    let mut status = Status {
        init_containers: init.iter().map(|_| init_name).collect(),
        containers: vec![],
        volumes: added_volumes.iter().map(|v| v.name.as_str()).collect(),
        image_pull_secrets: None,
        revision: revision::name(&cfg.revision),
    };

    // Init container order, as Istio orders it. Native: the redirect, then the proxy, then the
    // pod's own, which so run inside the mesh. Classic: istio-validation first (it must hold back
    // everything else until the CNI redirect is in place), istio-init last, so the pod's own init
    // containers are not black-holed by a redirect to a proxy that is not running yet.
    // A pod's own init container named like the other mode's redirect container is no override;
    // Istio orders it by its name all the same.
    let pod_has_inits = spec.init_containers.is_some();
    let own_inits = out_spec.init_containers.take().unwrap_or_default();
    let (init_named, validation_named) = match cni {
        true => (other_redirect, init),
        false => (init, other_redirect),
    };
    let mut inits = Vec::with_capacity(own_inits.len() + 3);
    if native {
        status.init_containers.push(names::PROXY);
        inits.extend(init_named);
        inits.extend(validation_named);
        inits.push(proxy);
        inits.extend(own_inits);
    } else {
        status.containers.push(names::PROXY);
        if settings.hold_application {
            out_spec.containers.insert(0, proxy);
        } else {
            out_spec.containers.push(proxy);
        }
        inits.extend(validation_named);
        inits.extend(own_inits);
        inits.extend(init_named);
    }
    out_spec.init_containers = (!inits.is_empty() || pod_has_inits).then_some(inits);
    out_spec
        .volumes
        .get_or_insert_with(Vec::new)
        .extend(added_volumes.iter().cloned());

    // Istio's templates add global.imagePullSecrets to the pod (a strategic merge by name: the
    // pod's own stay, none is repeated).
    for name in &cfg.image_pull_secrets {
        let secrets = out_spec.image_pull_secrets.get_or_insert_with(Vec::new);
        if !secrets.iter().any(|s| &s.name == name) {
            secrets.push(k8s_openapi::api::core::v1::LocalObjectReference { name: name.clone() });
        }
    }
    if gateway {
        out_spec.security_context = Some(gateway::pod_security_context(
            out_spec.security_context.take(),
        ));
    }
    set_labels(
        out.metadata.labels.get_or_insert_with(BTreeMap::new),
        &workload,
        !gateway,
    );
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    set_annotations(annotations, first_app, cfg);
    // Istio's template order: containers, then init containers (redirect first, then a native
    // proxy).
    let mut container_overlays = Vec::new();
    let mut init_overlays: Vec<_> = init_overlay.into_iter().collect();
    match native {
        true => init_overlays.extend(proxy_overlay),
        false => container_overlays.extend(proxy_overlay),
    }
    if !container_overlays.is_empty() || !init_overlays.is_empty() {
        annotations.insert(
            keys::OVERRIDES.into(),
            overrides::annotation(container_overlays, init_overlays),
        );
    }
    if cni && !gateway {
        set_cni_annotations(annotations, &settings.redirect, settings.interception);
    }
    annotations.insert(
        keys::STATUS.into(),
        serde_json::to_string(&status).unwrap_or_default(),
    );
    custom::apply(
        &mut out,
        &selected.custom,
        native,
        settings.hold_application,
    )?;
    Ok(out)
}

/// A pod injected before, ready to be injected again as Istio re-injects one: without the
/// containers, init containers and volumes its `sidecar.istio.io/status` names (only names
/// injection itself adds: a status cannot make meshop remove an application's container), without
/// the status, and without Prometheus annotations that point at the agent. Returns it with the
/// app probers its old proxy carried, which its rewritten probes still need.
fn strip_injected(pod: &Pod) -> (Pod, Map<String, Json>) {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Old {
        #[serde(default)]
        init_containers: Option<Vec<String>>,
        #[serde(default)]
        containers: Option<Vec<String>>,
        #[serde(default)]
        volumes: Option<Vec<String>>,
    }
    let mut out = pod.clone();
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old: Old = annotations
        .remove(keys::STATUS)
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if annotations.get(keys::PROMETHEUS_PORT).map(String::as_str)
        == Some(&*ports::AGENT_STATUS.to_string())
    {
        annotations.retain(|k, _| {
            !matches!(
                prometheus_key(k).as_str(),
                "prometheus_io_scrape" | "prometheus_io_port" | "prometheus_io_path"
            )
        });
    }
    let ours_c = [names::PROXY, names::INIT, names::VALIDATION];
    let ours_v: Vec<String> = added_volumes().into_iter().map(|v| v.name).collect();
    let Some(spec) = out.spec.as_mut() else {
        return (out, Map::new());
    };
    let probers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names::PROXY)
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == "ISTIO_KUBE_APP_PROBERS"))
        .and_then(|e| e.value.as_deref())
        .and_then(|v| serde_json::from_str::<Map<String, Json>>(v).ok())
        .unwrap_or_default();
    let named = |list: &Option<Vec<String>>, name: &str| list.iter().flatten().any(|n| n == name);
    spec.containers
        .retain(|c| !(ours_c.contains(&c.name.as_str()) && named(&old.containers, &c.name)));
    if let Some(inits) = spec.init_containers.as_mut() {
        inits.retain(|c| {
            !(ours_c.contains(&c.name.as_str())
                && (named(&old.init_containers, &c.name) || named(&old.containers, &c.name)))
        });
    }
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| !(ours_v.contains(&v.name) && named(&old.volumes, &v.name)));
    }
    (out, probers)
}

/// Injection with a proxyless gRPC template ([`grpc`]), as Istio merges it: the template's
/// containers over the pod's by name (the pod's own fields win, and are recorded in
/// `proxy.istio.io/overrides`), its init container and volumes appended, then the proxy placed
/// last (first when holding the app until it starts) and the Prometheus settings merged.
fn inject_grpc(
    pod: &Pod,
    cfg: &InjectionConfig,
    template: grpc::Grpc,
    settings: &annotations::Settings,
    workload: Option<Workload>,
) -> Result<Pod, InjectError> {
    let agent = template == grpc::Grpc::Agent;
    let namespace = namespace_of(pod);
    let workload = workload.unwrap_or_else(|| identity::workload_of(pod));
    let mut out = pod.clone();
    let Some(spec) = out.spec.as_mut() else {
        return Err(InjectError::InvalidPod("it has no spec".into()));
    };
    let volumes = grpc::volumes(template, settings);
    let ours: HashSet<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| ours.contains(v.name.as_str()))
    {
        return Err(InjectError::NameConflict {
            kind: "volume",
            name: v.name.clone(),
        });
    }
    let conflicting_init = if agent {
        names::PROXY
    } else {
        grpc::SIMPLE_INIT
    };
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == conflicting_init)
    {
        return Err(InjectError::NameConflict {
            kind: "container",
            name: conflicting_init.into(),
        });
    }

    // The template's containers in its order (the agent first), each with the pod's own
    // container of that name merged over it.
    let mut status_containers = Vec::new();
    let mut overlays = Vec::new();
    let own_proxy = agent
        .then(|| take(&mut spec.containers, names::PROXY))
        .flatten();
    let mut proxy = None;
    if agent {
        let facts = containers::PodFacts {
            namespace,
            workload: &workload,
            app_containers: pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default(),
            probers: &Default::default(),
            workload_name_label: None,
        };
        let mut injected = grpc::agent(settings, cfg, &facts);
        if let Some(own) = &own_proxy {
            let (merged, overlay) = overrides::apply(&injected, own)?;
            injected = merged;
            overlays.push(overlay);
        }
        status_containers.push(names::PROXY.to_string());
        proxy = Some(injected);
    }
    for c in spec.containers.iter_mut() {
        if !grpc::patches(template, &c.name) {
            continue;
        }
        let (merged, overlay) = overrides::apply(&grpc::app_patch(template, &c.name), c)?;
        status_containers.push(c.name.clone());
        *c = merged;
        overlays.push(overlay);
    }
    // Istio's order: the proxy last, so `kubectl exec` defaults to the app, or first when the app
    // waits for it.
    let proxy = proxy.or_else(|| take(&mut spec.containers, names::PROXY));
    if let Some(proxy) = proxy {
        match settings.hold_application {
            true => spec.containers.insert(0, proxy),
            false => spec.containers.push(proxy),
        }
    }
    let init = (!agent).then(|| grpc::bootstrap_init(cfg));
    let status_inits = init.as_ref().map(|c| vec![c.name.clone()]);
    if let Some(init) = init {
        spec.init_containers.get_or_insert_with(Vec::new).push(init);
    }
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(volumes.iter().cloned());
    let first_app = spec
        .containers
        .iter()
        .map(|c| c.name.clone())
        .find(|n| n != names::PROXY);

    if agent {
        set_labels(
            out.metadata.labels.get_or_insert_with(BTreeMap::new),
            &workload,
            false,
        );
    }
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    // Both templates turn probe rewriting off: there is no Envoy to route the kubelet's probes.
    annotations.insert(keys::REWRITE_PROBES.into(), "false".into());
    if agent {
        set_annotations(annotations, first_app.as_deref(), cfg);
    }
    if let Some(app) = merge_prometheus(annotations)
        && let Some(proxy) = out
            .spec
            .as_mut()
            .and_then(|s| s.containers.iter_mut().find(|c| c.name == names::PROXY))
    {
        proxy
            .env
            .get_or_insert_with(Vec::new)
            .push(crate::k8s::env("ISTIO_PROMETHEUS_ANNOTATIONS", app));
    }
    let annotations = out.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if !overlays.is_empty() {
        annotations.insert(
            keys::OVERRIDES.into(),
            overrides::annotation(overlays, Vec::new()),
        );
    }
    // Istio writes what its template listed; no init containers is `null`, as Go writes it.
    let status = serde_json::json!({
        "initContainers": status_inits,
        "containers": status_containers,
        "volumes": volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        "imagePullSecrets": null,
        "revision": revision::name(&cfg.revision),
    });
    annotations.insert(keys::STATUS.into(), status.to_string());
    Ok(out)
}

/// The namespace that names the pod's workload in telemetry: its own, `default` if unset.
fn namespace_of(pod: &Pod) -> &str {
    pod.metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

/// The volumes injection adds: the proxy's (shared with gateways) and the optional CRL ConfigMap,
/// which only sidecars mount.
fn added_volumes() -> Vec<k8s_openapi::api::core::v1::Volume> {
    let mut v = istio_proxy::sidecar_volumes();
    v.push(istio_proxy::crl_volume());
    v
}

/// Removes the container named `name` from `list` and returns it.
fn take(list: &mut Vec<Container>, name: &str) -> Option<Container> {
    let i = list.iter().position(|c| c.name == name)?;
    Some(list.remove(i))
}

/// Refuses a pod that still uses a name the sidecar needs once its own versions of the injected
/// containers are taken out (one pass over the pod): a second `istio-proxy`, an `istio-proxy`
/// init container in classic mode, the other mode's redirect container, an injected volume name.
fn check_names<'a>(
    containers: &[Container],
    init_containers: &[Container],
    volume_names: impl Iterator<Item = &'a str>,
    added_volumes: &[k8s_openapi::api::core::v1::Volume],
) -> Result<(), InjectError> {
    let reserved = [names::PROXY, names::INIT, names::VALIDATION];
    if let Some(c) = containers
        .iter()
        .chain(init_containers)
        .find(|c| reserved.contains(&c.name.as_str()))
    {
        return Err(InjectError::NameConflict {
            kind: "container",
            name: c.name.clone(),
        });
    }
    let ours: HashSet<&str> = added_volumes.iter().map(|v| v.name.as_str()).collect();
    for name in volume_names {
        if ours.contains(name) {
            return Err(InjectError::NameConflict {
                kind: "volume",
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// mTLS marker (a sidecar's) and canonical-service labels; the pod's own values win. The gateway
/// template writes no mTLS marker and the canonical name uncut.
fn set_labels(labels: &mut BTreeMap<String, String>, workload: &Workload, sidecar: bool) {
    let pick = |candidates: &[&str]| candidates.iter().find_map(|k| labels.get(*k).cloned());
    let name = pick(&[keys::CANONICAL_NAME, "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload.name.clone());
    let revision = pick(&[
        keys::CANONICAL_REVISION,
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());
    if sidecar {
        labels
            .entry(keys::TLS_MODE.into())
            .or_insert_with(|| "istio".into());
    }
    let name = if sidecar {
        canonical_name(&name)
    } else {
        &name
    }
    .to_string();
    labels.insert(keys::CANONICAL_NAME.into(), name);
    labels.insert(keys::CANONICAL_REVISION.into(), revision);
}

/// A label value fit for `service.istio.io/canonical-name`, as Istio 1.31 makes it: at most 63
/// characters, without leading or trailing `-`, `_` or `.` (a long workload name cut in the
/// middle of `reviews-v1-...` would otherwise end in `-`, which the API server refuses).
fn canonical_name(name: &str) -> &str {
    let cut = name.char_indices().nth(63).map_or(name.len(), |(i, _)| i);
    name[..cut].trim_matches(['-', '_', '.'])
}

fn set_annotations(
    annotations: &mut BTreeMap<String, String>,
    first_app: Option<&str>,
    cfg: &InjectionConfig,
) {
    annotations.insert(keys::REV.into(), revision::name(&cfg.revision).into());
    // The first container that is not the pod's own istio-proxy; none, no default.
    if let Some(first_app) = first_app {
        annotations
            .entry(keys::DEFAULT_CONTAINER.into())
            .or_insert_with(|| first_app.into());
        annotations
            .entry(keys::DEFAULT_LOGS_CONTAINER.into())
            .or_insert_with(|| first_app.into());
    }
}

/// A Prometheus annotation key as Prometheus reads it (its label-name form): `prometheus.io/scrape`
/// and `prometheus.io.scrape` are the same key to it.
fn prometheus_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Prometheus merge, as Istio does it: the agent serves Envoy's and the app's metrics together on
/// its status port. Unless the pod says `scrape: false` (in any spelling Prometheus reads) or is
/// merged already, the pod's own `prometheus.io/*` settings (and Istio's
/// `prometheus.istio.io/scrape-targets`) move into the JSON returned for the proxy's
/// `ISTIO_PROMETHEUS_ANNOTATIONS` (`None` when the pod had none), and the annotations point at
/// the agent.
fn merge_prometheus(annotations: &mut BTreeMap<String, String>) -> Option<String> {
    const SCRAPE: &str = "prometheus_io_scrape";
    const PORT: &str = "prometheus_io_port";
    const PATH: &str = "prometheus_io_path";
    const TARGETS: &str = "prometheus_istio_io_scrape_targets";
    let scrape = annotations
        .iter()
        .find(|(k, v)| prometheus_key(k) == SCRAPE && annotations::parse_go_bool(v).is_some())
        .and_then(|(_, v)| annotations::parse_go_bool(v));
    if scrape == Some(false) {
        return None;
    }
    let agent_port = ports::AGENT_STATUS.to_string();
    if annotations.get(keys::PROMETHEUS_PORT) == Some(&agent_port) {
        return None;
    }
    let mut app = serde_json::Map::new();
    for (field, key) in [("scrape", SCRAPE), ("path", PATH), ("port", PORT)] {
        let value = annotations
            .iter()
            .find(|(k, _)| prometheus_key(k) == key)
            .map_or(String::new(), |(_, v)| v.clone());
        app.insert(field.into(), value.into());
    }
    let targets: Vec<serde_json::Value> = annotations
        .iter()
        .find(|(k, _)| prometheus_key(k) == TARGETS)
        .map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    let (port, path) = t.split_once(':').unwrap_or((t, ""));
                    let path = if path.is_empty() { "/metrics" } else { path };
                    serde_json::json!({ "port": port.trim(), "path": path })
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(first) = targets.first() {
        // The single-target fields, for agents that read only those: the first target.
        for field in ["port", "path"] {
            if app[field] == "" {
                app.insert(field.into(), first[field].clone());
            }
        }
        app.insert("targets".into(), serde_json::Value::Array(targets));
    }
    let had_any = app
        .values()
        .any(|v| v.as_str().is_none_or(|s| !s.is_empty()));
    annotations.retain(|k, _| ![SCRAPE, PORT, PATH, TARGETS].contains(&prometheus_key(k).as_str()));
    annotations.insert(keys::PROMETHEUS_PORT.into(), agent_port);
    annotations.insert(
        keys::PROMETHEUS_PATH.into(),
        istio_proxy::PROMETHEUS_PATH.into(),
    );
    annotations.insert(keys::PROMETHEUS_SCRAPE.into(), "true".into());
    had_any.then(|| serde_json::Value::Object(app).to_string())
}

/// With CNI capture the node agent programs the redirect, reading these annotations: write the
/// effective values (the proxy's own ports are always excluded).
fn set_cni_annotations(
    annotations: &mut BTreeMap<String, String>,
    r: &annotations::Redirect,
    interception: annotations::Interception,
) {
    let mut set = |k: &str, v: &str| {
        annotations.insert(k.into(), v.into());
    };
    set(keys::INTERCEPTION_MODE, interception.as_str());
    set(keys::INCLUDE_INBOUND_PORTS, &r.include_inbound_ports);
    set(
        keys::EXCLUDE_INBOUND_PORTS,
        &r.exclude_inbound_ports_annotation,
    );
    set(keys::INCLUDE_OUTBOUND_IP_RANGES, &r.include_outbound_ranges);
    if !r.exclude_outbound_ranges.is_empty() {
        set(keys::EXCLUDE_OUTBOUND_IP_RANGES, &r.exclude_outbound_ranges);
    }
    if let Some(p) = &r.include_outbound_ports {
        set(keys::INCLUDE_OUTBOUND_PORTS, p);
    }
    if let Some(p) = &r.exclude_outbound_ports {
        set(keys::EXCLUDE_OUTBOUND_PORTS, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SidecarMode;
    use crate::inject::testutil::{cfg, pod_with, typical_pod};
    use serde_json::{Value, json};

    fn names_of(cs: &Option<Vec<Container>>) -> Vec<&str> {
        cs.iter().flatten().map(|c| c.name.as_str()).collect()
    }

    fn status_of(p: &Pod) -> Value {
        serde_json::from_str(&p.metadata.annotations.as_ref().unwrap()[keys::STATUS]).unwrap()
    }

    #[test]
    fn native_mode_puts_the_proxy_between_init_and_the_pods_init_containers() {
        let p = inject(&typical_pod(), &cfg()).unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            names_of(&spec.init_containers),
            ["istio-init", "istio-proxy", "migrate"]
        );
        assert_eq!(
            spec.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["reviews", "sidecar-logger"]
        );
        assert_eq!(
            spec.init_containers.as_ref().unwrap()[1]
                .restart_policy
                .as_deref(),
            Some("Always")
        );
        assert_eq!(
            status_of(&p),
            json!({
                "initContainers": ["istio-init", "istio-proxy"],
                "containers": [],
                "volumes": ["workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data", "istio-podinfo", "istio-token", "istiod-ca-cert", "istio-ca-crl"],
                "imagePullSecrets": null,
                "revision": "default"
            })
        );
        let vols: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(vols.len(), 10);
        assert_eq!(vols[0], "tmp");
    }

    #[test]
    fn classic_mode_appends_or_puts_the_proxy_first_when_holding() {
        let classic = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            ..cfg()
        };
        let p = inject(&typical_pod(), &classic).unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            names_of(&spec.init_containers),
            ["migrate", "istio-init"],
            "istio-init last, so the pod's own init containers are not black-holed"
        );
        assert_eq!(
            names_of(&Some(spec.containers.clone())),
            ["reviews", "sidecar-logger", "istio-proxy"]
        );
        assert_eq!(status_of(&p)["containers"], json!(["istio-proxy"]));

        let hold = InjectionConfig {
            hold_application_until_proxy_starts: true,
            ..classic
        };
        let p = inject(&typical_pod(), &hold).unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].name, "istio-proxy");
        assert!(spec.containers[0].lifecycle.is_some());
        // The default container stays the app's, not the proxy now in front.
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[keys::DEFAULT_CONTAINER],
            "reviews"
        );
    }

    #[test]
    fn classic_cni_keeps_validation_first() {
        let c = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            traffic_capture: TrafficCapture::Cni,
            ..cfg()
        };
        let p = inject(&typical_pod(), &c).unwrap();
        assert_eq!(
            names_of(&p.spec.unwrap().init_containers),
            ["istio-validation", "migrate"],
            "validation must hold back the pod's own init containers until the CNI redirect is up"
        );
        let native = InjectionConfig {
            sidecar_mode: SidecarMode::Native,
            ..c
        };
        let p = inject(&typical_pod(), &native).unwrap();
        assert_eq!(
            names_of(&p.spec.unwrap().init_containers),
            ["istio-validation", "istio-proxy", "migrate"]
        );
    }

    fn proxy_is_native(p: &Pod) -> bool {
        let spec = p.spec.as_ref().unwrap();
        let native = names_of(&spec.init_containers).contains(&"istio-proxy");
        assert_ne!(
            native,
            spec.containers.iter().any(|c| c.name == "istio-proxy"),
            "exactly one istio-proxy"
        );
        native
    }

    #[test]
    fn the_native_sidecar_annotation_overrides_the_mode() {
        for mode in [SidecarMode::Native, SidecarMode::Classic, SidecarMode::Auto] {
            let c = InjectionConfig {
                sidecar_mode: mode,
                ..cfg()
            };
            let on = pod_with(&[], &[(keys::NATIVE_SIDECAR, "true")]);
            let off = pod_with(&[], &[(keys::NATIVE_SIDECAR, "false")]);
            assert!(proxy_is_native(&inject(&on, &c).unwrap()), "{mode:?}");
            assert!(!proxy_is_native(&inject(&off, &c).unwrap()), "{mode:?}");
            let old: Kubelets = [("n", Some("v1.31.0"))].into_iter().collect();
            assert!(proxy_is_native(&inject_on(&on, &c, &old).unwrap()));
        }
        let e = inject(&pod_with(&[], &[(keys::NATIVE_SIDECAR, "sure")]), &cfg()).unwrap_err();
        assert!(
            e.to_string().contains("sidecar.istio.io/nativeSidecar"),
            "{e}"
        );
    }

    #[test]
    fn auto_follows_the_kubelets() {
        let auto = InjectionConfig {
            sidecar_mode: SidecarMode::Auto,
            ..cfg()
        };
        let mixed: Kubelets = [("new", Some("v1.34.2")), ("old", Some("v1.32.7"))]
            .into_iter()
            .collect();
        let unbound = typical_pod();
        assert!(!proxy_is_native(
            &inject_on(&unbound, &auto, &mixed).unwrap()
        ));
        let mut bound = typical_pod();
        bound.spec.as_mut().unwrap().node_name = Some("new".into());
        let p = inject_on(&bound, &auto, &mixed).unwrap();
        assert!(proxy_is_native(&p));
        assert_eq!(
            names_of(&p.spec.unwrap().init_containers),
            ["istio-init", "istio-proxy", "migrate"]
        );
        bound.spec.as_mut().unwrap().node_name = Some("old".into());
        let p = inject_on(&bound, &auto, &mixed).unwrap();
        assert!(!proxy_is_native(&p));
        assert_eq!(
            names_of(&p.spec.unwrap().init_containers),
            ["migrate", "istio-init"]
        );
        let current: Kubelets = [("a", Some("v1.33.0")), ("b", Some("v1.36.1"))]
            .into_iter()
            .collect();
        assert!(proxy_is_native(
            &inject_on(&unbound, &auto, &current).unwrap()
        ));
        // Offline there are no nodes to ask: auto is native (docs/injection.md says why).
        assert!(proxy_is_native(&inject(&unbound, &auto).unwrap()));
        // Fixed modes ignore the nodes.
        let classic = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            ..cfg()
        };
        assert!(!proxy_is_native(
            &inject_on(&unbound, &classic, &current).unwrap()
        ));
        assert!(proxy_is_native(
            &inject_on(&unbound, &cfg(), &mixed).unwrap()
        ));
    }

    #[test]
    fn canonical_names_are_valid_label_values() {
        assert_eq!(canonical_name("reviews"), "reviews");
        assert_eq!(canonical_name("_x.-"), "x");
        let long = format!("{}-{}", "a".repeat(62), "tail");
        assert_eq!(
            canonical_name(&long),
            "a".repeat(62),
            "cut at 63, the dash dropped"
        );
        let mut p = pod_with(&[], &[]);
        p.metadata.name = Some(format!("{}-x", "w".repeat(70)));
        let out = inject(&p, &cfg()).unwrap();
        assert_eq!(
            out.metadata.labels.unwrap()[keys::CANONICAL_NAME],
            "w".repeat(63)
        );
    }

    #[test]
    fn hold_via_proxy_config_annotation() {
        let classic = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            ..cfg()
        };
        let p = pod_with(
            &[],
            &[(keys::PROXY_CONFIG, "holdApplicationUntilProxyStarts: true")],
        );
        let out = inject(&p, &classic).unwrap();
        assert_eq!(out.spec.unwrap().containers[0].name, "istio-proxy");
    }

    #[test]
    fn status_port_readiness_interfaces_and_proxy_metadata_annotations() {
        let c = InjectionConfig {
            sidecar_mode: SidecarMode::Native,
            ..cfg()
        };
        let p = pod_with(
            &[],
            &[
                (keys::STATUS_PORT, "16000"),
                (keys::READINESS_FAILURE_THRESHOLD, "300"),
                (keys::KUBEVIRT_INTERFACES, "net1"),
                (keys::REROUTE_VIRTUAL_INTERFACES, "net2"),
                (keys::EXCLUDE_INTERFACES, "eth9"),
                (keys::PROXY_CONFIG, "proxyMetadata: {B: two, A: one}"),
            ],
        );
        let mut p = p;
        p.spec.as_mut().unwrap().containers[0].readiness_probe = Some(
            serde_json::from_value(json!({"httpGet": {"path": "/ok", "port": 8080}})).unwrap(),
        );
        let out = inject(&p, &c).unwrap();
        let spec = out.spec.as_ref().unwrap();
        let init = &spec.init_containers.as_ref().unwrap()[0];
        let args = init.args.as_ref().unwrap().join(" ");
        // The status port is excluded from capture; reroute wins over kubevirt for -k.
        assert!(
            args.contains("-d 15090,15021,16000 -k net2 -c eth9 "),
            "{args}"
        );
        let names = |c: &Container| -> Vec<String> {
            c.env.iter().flatten().map(|e| e.name.clone()).collect()
        };
        assert_eq!(names(init), ["A", "B"]);
        let proxy = &spec.init_containers.as_ref().unwrap()[1];
        // Istio's order: the metadata, then the app probers, which Istio appends last.
        assert_eq!(
            names(proxy).split_off(names(proxy).len() - 3),
            ["A", "B", "ISTIO_KUBE_APP_PROBERS"]
        );
        let readiness = proxy.readiness_probe.as_ref().unwrap();
        assert_eq!(
            (readiness.period_seconds, readiness.failure_threshold),
            (Some(15), Some(300))
        );
        let pre_stop = proxy.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        let command = pre_stop.exec.as_ref().unwrap().command.as_ref().unwrap();
        assert!(
            command.contains(&"--debug-port=16000".to_string()),
            "{command:?}"
        );
        // Rewritten app probes go to the annotated status port.
        let probe = spec.containers[0].readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.http_get.as_ref().unwrap().port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(16000)
        );

        // Status port 0: no proxy probes, nothing extra excluded.
        let out = inject(&pod_with(&[], &[(keys::STATUS_PORT, "0")]), &c).unwrap();
        let spec = out.spec.as_ref().unwrap();
        let proxy = &spec.init_containers.as_ref().unwrap()[1];
        assert!(proxy.readiness_probe.is_none() && proxy.startup_probe.is_none());
        let args = spec.init_containers.as_ref().unwrap()[0]
            .args
            .as_ref()
            .unwrap()
            .join(" ");
        assert!(args.contains("-d 15090,15021 "), "{args}");

        for (key, bad) in [(keys::STATUS_PORT, "70000"), (keys::READINESS_PERIOD, "-1")] {
            let err = inject(&pod_with(&[], &[(key, bad)]), &c)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn native_sidecars_hooks_and_the_workload_name_label_follow_istio() {
        let mut p = pod_with(&[("service.istio.io/workload-name", "billing")], &[]);
        let spec = p.spec.as_mut().unwrap();
        spec.containers[0].lifecycle = Some(
            serde_json::from_value(json!({
                "preStop": {"httpGet": {"port": 91}},
                "postStart": {"tcpSocket": {"port": 93}}
            }))
            .unwrap(),
        );
        spec.init_containers = Some(vec![
            serde_json::from_value(
                json!({"name": "helper", "image": "h", "restartPolicy": "Always",
                "readinessProbe": {"httpGet": {"port": 3333}}}),
            )
            .unwrap(),
        ]);
        let out = inject(&p, &cfg()).unwrap();
        let spec = out.spec.as_ref().unwrap();
        let proxy = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == "istio-proxy")
            .unwrap();
        let env = |name: &str| -> String {
            proxy
                .env
                .iter()
                .flatten()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .unwrap_or_default()
        };
        assert_eq!(env("ISTIO_META_WORKLOAD_NAME"), "billing");
        let probers: Value = serde_json::from_str(&env("ISTIO_KUBE_APP_PROBERS")).unwrap();
        assert_eq!(
            probers,
            json!({
                "/app-health/helper/readyz": {"httpGet": {"port": 3333, "scheme": "HTTP"}, "timeoutSeconds": 1},
                "/app-lifecycle/app/prestopz": {"httpGet": {"port": 91, "scheme": "HTTP"}, "timeoutSeconds": 1},
                "/app-lifecycle/app/poststartz": {"tcpSocket": {"port": 93}, "timeoutSeconds": 1},
            })
        );
        let hooks = spec.containers.iter().find(|c| c.name == "app").unwrap();
        let pre_stop = hooks.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.http_get.as_ref().unwrap().path.as_deref(),
            Some("/app-lifecycle/app/prestopz")
        );
        let post_start = hooks
            .lifecycle
            .as_ref()
            .unwrap()
            .post_start
            .as_ref()
            .unwrap();
        assert!(post_start.tcp_socket.is_none() && post_start.http_get.is_some());
    }

    #[test]
    fn prometheus_settings_merge_into_the_agent_as_istio_merges_them() {
        let merged = |pairs: &[(&str, &str)]| {
            let mut a: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let env = merge_prometheus(&mut a);
            (a, env.map(|e| serde_json::from_str::<Value>(&e).unwrap()))
        };
        // Nothing said: the agent is scraped, no app endpoint to merge.
        let (a, env) = merged(&[]);
        assert_eq!(a[keys::PROMETHEUS_PORT], "15020");
        assert_eq!(env, None);
        // The app's own endpoint moves into the agent's environment.
        let (a, env) = merged(&[
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "8383"),
            ("prometheus.io/path", "/manage"),
        ]);
        assert_eq!(
            (
                a[keys::PROMETHEUS_PORT].as_str(),
                a[keys::PROMETHEUS_PATH].as_str()
            ),
            ("15020", "/stats/prometheus")
        );
        assert_eq!(
            env,
            Some(json!({"scrape": "true", "port": "8383", "path": "/manage"}))
        );
        // Several targets: the first also fills the single-target fields.
        let (a, env) = merged(&[("prometheus.istio.io/scrape-targets", "8080:/m, 9100")]);
        assert!(!a.contains_key("prometheus.istio.io/scrape-targets"));
        assert_eq!(
            env.unwrap()["targets"],
            json!([{"port": "8080", "path": "/m"}, {"port": "9100", "path": "/metrics"}])
        );
        // scrape false in any spelling Prometheus reads: left alone.
        let (a, env) = merged(&[("prometheus.io.scrape", "false")]);
        assert_eq!((a.len(), env), (1, None));
    }

    #[test]
    fn user_volumes_and_interception_modes() {
        let p = pod_with(
            &[],
            &[
                (
                    keys::USER_VOLUME,
                    r#"{"b":{"configMap":{"name":"cm"}},"a":{"persistentVolumeClaim":{"claimName":"pvc"}}}"#,
                ),
                (
                    keys::USER_VOLUME_MOUNT,
                    r#"{"a":{"mountPath":"/mnt/a","readOnly":true}}"#,
                ),
                (keys::INTERCEPTION_MODE, "TPROXY"),
            ],
        );
        let out = inject(&p, &cfg()).unwrap();
        let status = status_of(&out);
        let volumes = status["volumes"].as_array().unwrap();
        assert_eq!(volumes[volumes.len() - 2..], [json!("a"), json!("b")]);
        let spec = out.spec.as_ref().unwrap();
        let proxy = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == "istio-proxy")
            .unwrap();
        let mount = proxy.volume_mounts.as_ref().unwrap().last().unwrap();
        assert_eq!((mount.name.as_str(), mount.read_only), ("a", Some(true)));
        let sc = proxy.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert!(init.args.as_ref().unwrap().join(" ").contains("-m TPROXY"));

        // NONE: no redirect container at all.
        let out = inject(&pod_with(&[], &[(keys::INTERCEPTION_MODE, "NONE")]), &cfg()).unwrap();
        assert!(
            names_of(&out.spec.as_ref().unwrap().init_containers)
                .iter()
                .all(|n| *n != "istio-init")
        );
        assert!(
            !status_of(&out)["initContainers"]
                .as_array()
                .unwrap()
                .contains(&json!("istio-init"))
        );

        let err = inject(&pod_with(&[], &[(keys::USER_VOLUME, "[1]")]), &cfg())
            .unwrap_err()
            .to_string();
        assert!(err.contains(keys::USER_VOLUME), "{err}");
    }

    #[test]
    fn injecting_an_injected_pod_again_changes_nothing() {
        for c in [
            cfg(),
            InjectionConfig {
                sidecar_mode: SidecarMode::Classic,
                ..cfg()
            },
        ] {
            let once = inject(&typical_pod(), &c).unwrap();
            let twice = inject(&once, &c).unwrap();
            let (a, b) = (
                serde_json::to_value(&once).unwrap(),
                serde_json::to_value(&twice).unwrap(),
            );
            assert_eq!(a, b, "\n{}\n{}", a, b);
        }
    }

    #[test]
    fn templates_meshop_lacks_are_refused_by_name() {
        let c = cfg();
        assert!(inject(&pod_with(&[], &[(keys::TEMPLATES, "sidecar")]), &c).is_ok());
        for (value, says) in [
            ("custom", "requested template \"custom\" not found"),
            ("sidecar,spire", "requested template \"spire\" not found"),
            (
                "waypoint",
                "meshop does not have Istio's \"waypoint\" template",
            ),
            (
                "sidecar,grpc-agent",
                "meshop injects Istio's \"grpc-agent\" template alone",
            ),
        ] {
            let err = inject(&pod_with(&[], &[(keys::TEMPLATES, value)]), &c)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says) && err.contains(keys::TEMPLATES), "{err}");
        }
    }

    #[test]
    fn cni_mode_uses_validation_and_writes_redirect_annotations() {
        let c = InjectionConfig {
            traffic_capture: TrafficCapture::Cni,
            ..cfg()
        };
        let p = pod_with(&[], &[(keys::EXCLUDE_OUTBOUND_PORTS, "3306")]);
        let out = inject(&p, &c).unwrap();
        let spec = out.spec.as_ref().unwrap();
        assert_eq!(
            names_of(&spec.init_containers),
            ["istio-validation", "istio-proxy"]
        );
        let caps: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter_map(|c| {
                c.security_context
                    .as_ref()?
                    .capabilities
                    .as_ref()?
                    .add
                    .clone()
            })
            .collect();
        assert!(
            caps.is_empty(),
            "no container may add capabilities with CNI: {caps:?}"
        );
        let a = out.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[keys::EXCLUDE_INBOUND_PORTS], "15020");
        assert_eq!(a[keys::INCLUDE_OUTBOUND_IP_RANGES], "*");
        assert_eq!(a[keys::EXCLUDE_OUTBOUND_PORTS], "3306");
        assert_eq!(a[keys::INTERCEPTION_MODE], "REDIRECT");
        assert_eq!(
            status_of(&out)["initContainers"],
            json!(["istio-validation", "istio-proxy"])
        );
    }

    #[test]
    fn labels_and_annotations() {
        let out = inject(&typical_pod(), &cfg()).unwrap();
        let l = out.metadata.labels.as_ref().unwrap();
        assert_eq!(l[keys::TLS_MODE], "istio");
        assert_eq!(l[keys::CANONICAL_NAME], "reviews");
        assert_eq!(l[keys::CANONICAL_REVISION], "v1");
        let a = out.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[keys::DEFAULT_CONTAINER], "reviews");
        assert_eq!(a[keys::PROMETHEUS_SCRAPE], "true");
        assert_eq!(a[keys::PROMETHEUS_PORT], "15020");
        assert_eq!(a[keys::PROMETHEUS_PATH], "/stats/prometheus");
        assert_eq!(a[keys::REV], "default");
        assert_eq!(a["team"], "books");
    }

    #[test]
    fn canonical_defaults_and_existing_values_win() {
        let mut p = typical_pod();
        p.metadata.labels = None;
        let out = inject(&p, &cfg()).unwrap();
        let l = out.metadata.labels.unwrap();
        assert_eq!(
            (
                l[keys::CANONICAL_NAME].as_str(),
                l[keys::CANONICAL_REVISION].as_str()
            ),
            ("reviews-v1-7d4c8b9f6", "latest")
        );

        let p = pod_with(
            &[
                ("app.kubernetes.io/name", "shop"),
                ("app", "ignored"),
                ("app.kubernetes.io/version", "2.0"),
                (keys::TLS_MODE, "disabled"),
            ],
            &[
                (keys::PROMETHEUS_SCRAPE, "false"),
                (keys::DEFAULT_CONTAINER, "other"),
            ],
        );
        let out = inject(&p, &cfg()).unwrap();
        let l = out.metadata.labels.unwrap();
        assert_eq!(
            (
                l[keys::CANONICAL_NAME].as_str(),
                l[keys::CANONICAL_REVISION].as_str(),
                l[keys::TLS_MODE].as_str()
            ),
            ("shop", "2.0", "disabled")
        );
        let a = out.metadata.annotations.unwrap();
        assert_eq!(a[keys::PROMETHEUS_SCRAPE], "false");
        assert!(!a.contains_key(keys::PROMETHEUS_PORT));
        assert_eq!(a[keys::DEFAULT_CONTAINER], "other");
    }

    #[test]
    fn probes_are_rewritten_and_recorded() {
        let out = inject(&typical_pod(), &cfg()).unwrap();
        let spec = out.spec.unwrap();
        let proxy = &spec.init_containers.unwrap()[1];
        let probers = proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "ISTIO_KUBE_APP_PROBERS")
            .unwrap();
        let v: Value = serde_json::from_str(probers.value.as_deref().unwrap()).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 3);
        assert_eq!(
            spec.containers[0]
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15020)
        );
    }

    #[test]
    fn probe_rewriting_can_be_switched_off() {
        let mut p = typical_pod();
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(keys::REWRITE_PROBES.into(), "false".into());
        let out = inject(&p, &cfg()).unwrap();
        let spec = out.spec.unwrap();
        assert_eq!(
            spec.containers[0].readiness_probe,
            typical_pod().spec.unwrap().containers[0].readiness_probe
        );
        assert!(
            !spec.init_containers.unwrap()[1]
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "ISTIO_KUBE_APP_PROBERS")
        );
    }

    #[test]
    fn revision_is_recorded() {
        let out = inject(
            &typical_pod(),
            &InjectionConfig {
                revision: "canary".into(),
                ..cfg()
            },
        )
        .unwrap();
        assert_eq!(status_of(&out)["revision"], "canary");
        assert_eq!(out.metadata.annotations.unwrap()[keys::REV], "canary");
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let once = inject(&typical_pod(), &cfg()).unwrap();
        let twice = inject(&once, &cfg()).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn resource_annotations_reach_the_proxy() {
        let p = pod_with(
            &[],
            &[
                (keys::PROXY_CPU, "300m"),
                (keys::PROXY_MEMORY_LIMIT, "256Mi"),
            ],
        );
        let out = inject(&p, &cfg()).unwrap();
        let proxy = &out.spec.unwrap().init_containers.unwrap()[1];
        let r = proxy.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "300m");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "256Mi");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let e = inject(&pod_with(&[], &[(keys::PROXY_CPU, "fast")]), &cfg()).unwrap_err();
        assert!(matches!(e, InjectError::InvalidAnnotation { .. }), "{e}");
        let e = inject(
            &pod_with(&[], &[(keys::EXCLUDE_INBOUND_PORTS, "99999")]),
            &cfg(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("excludeInboundPorts"), "{e}");
        let mut p = pod_with(&[], &[]);
        p.spec = None;
        assert!(matches!(
            inject(&p, &cfg()),
            Err(InjectError::InvalidPod(_))
        ));
        p.spec = Some(Default::default());
        assert!(matches!(
            inject(&p, &cfg()),
            Err(InjectError::InvalidPod(_))
        ));
    }

    #[test]
    fn name_conflicts_are_refused() {
        // A second istio-proxy (the first is the pod's own override).
        let mut p = pod_with(&[], &[]);
        for _ in 0..2 {
            p.spec.as_mut().unwrap().containers.push(Container {
                name: "istio-proxy".into(),
                ..Default::default()
            });
        }
        assert!(matches!(
            inject(&p, &cfg()),
            Err(InjectError::NameConflict {
                kind: "container",
                ..
            })
        ));
        // An istio-proxy init container in classic mode, next to the injected container.
        let mut p = pod_with(&[], &[]);
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "istio-proxy".into(),
            ..Default::default()
        }]);
        let classic = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            ..cfg()
        };
        assert!(matches!(
            inject(&p, &classic),
            Err(InjectError::NameConflict { name, .. }) if name == "istio-proxy"
        ));
        let mut p = typical_pod();
        p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0].name = "istio-envoy".into();
        assert!(matches!(
            inject(&p, &cfg()),
            Err(InjectError::NameConflict { kind: "volume", .. })
        ));
    }

    /// The pod of Istio's `proxy-override-runas.yaml` with an `istio-init` of its own.
    fn pod_with_own_proxy() -> Pod {
        let mut p = typical_pod();
        let spec = p.spec.as_mut().unwrap();
        spec.containers.insert(
            1,
            serde_json::from_value(json!({
                "name": "istio-proxy",
                "image": "auto",
                "args": ["-c", "my-config.yaml"],
                "securityContext": {"runAsUser": 1234, "runAsGroup": 4321},
            }))
            .unwrap(),
        );
        spec.init_containers.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({"name": "istio-init", "image": "fake/custom-image"}))
                .unwrap(),
        );
        p
    }

    #[test]
    fn a_pods_own_istio_proxy_is_merged_over_the_injected_one() {
        let classic = InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            ..cfg()
        };
        let out = inject(&pod_with_own_proxy(), &classic).unwrap();
        let spec = out.spec.as_ref().unwrap();
        assert_eq!(
            names_of(&Some(spec.containers.clone())),
            ["reviews", "sidecar-logger", "istio-proxy"],
            "one istio-proxy, last"
        );
        assert_eq!(names_of(&spec.init_containers), ["migrate", "istio-init"]);
        let proxy = &spec.containers[2];
        assert_eq!(
            proxy.image.as_deref(),
            Some("docker.io/istio/proxyv2:1.28.2")
        );
        assert_eq!(proxy.args.as_ref().unwrap(), &["-c", "my-config.yaml"]);
        let sc = proxy.security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1234), Some(4321)));
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "the template's own fields stay"
        );
        assert!(proxy.readiness_probe.is_some() && proxy.env.is_some());
        let env = |n: &str| {
            proxy
                .env
                .iter()
                .flatten()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            env("ISTIO_META_APP_CONTAINERS").unwrap(),
            "reviews,sidecar-logger"
        );
        let init = &spec.init_containers.as_ref().unwrap()[1];
        assert_eq!(init.image.as_deref(), Some("fake/custom-image"));
        let args = init.args.as_ref().unwrap();
        let u = args.iter().position(|a| a == "-u").unwrap();
        assert_eq!(
            args[u + 1],
            "1234",
            "the redirect exempts the proxy's own uid"
        );
        let a = out.metadata.annotations.as_ref().unwrap();
        let overrides: Value = serde_json::from_str(&a[keys::OVERRIDES]).unwrap();
        assert_eq!(
            overrides,
            json!({
                "containers": [{
                    "name": "istio-proxy",
                    "args": ["-c", "my-config.yaml"],
                    "resources": {},
                    "securityContext": {"runAsUser": 1234, "runAsGroup": 4321},
                }],
                "initContainers": [{"name": "istio-init", "image": "fake/custom-image", "resources": {}}],
            })
        );
        assert_eq!(status_of(&out)["containers"], json!(["istio-proxy"]));

        // Native: the pod's istio-proxy becomes the native sidecar, recorded as an init container.
        let out = inject(&pod_with_own_proxy(), &cfg()).unwrap();
        let spec = out.spec.as_ref().unwrap();
        assert_eq!(
            names_of(&Some(spec.containers.clone())),
            ["reviews", "sidecar-logger"]
        );
        assert_eq!(
            names_of(&spec.init_containers),
            ["istio-init", "istio-proxy", "migrate"]
        );
        let overrides: Value =
            serde_json::from_str(&out.metadata.annotations.as_ref().unwrap()[keys::OVERRIDES])
                .unwrap();
        let names: Vec<&str> = overrides["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["istio-init", "istio-proxy"]);
        assert!(overrides.get("containers").is_none());
    }

    #[test]
    fn a_pod_of_only_its_own_proxy_has_no_default_container() {
        let mut p = typical_pod();
        p.spec.as_mut().unwrap().containers = vec![Container {
            name: "istio-proxy".into(),
            image: Some("auto".into()),
            ..Default::default()
        }];
        let out = inject(&p, &cfg()).unwrap();
        let a = out.metadata.annotations.as_ref().unwrap();
        assert!(!a.contains_key(keys::DEFAULT_CONTAINER));
        assert_eq!(
            a[keys::OVERRIDES],
            r#"{"containers":[{"name":"istio-proxy","resources":{}}]}"#
                .replace("containers", "initContainers")
        );
        let proxy = &out.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1];
        let apps = proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "ISTIO_META_APP_CONTAINERS")
            .unwrap();
        assert_eq!(
            apps.value, None,
            "no app container: no value, as Go writes it"
        );
    }

    /// A gRPC app pod: one container with its own env, a probe and a port.
    fn grpc_pod(template: &str) -> Pod {
        let mut p = pod_with(&[("app", "greeter")], &[(keys::TEMPLATES, template)]);
        let app = &mut p.spec.as_mut().unwrap().containers[0];
        app.env = Some(vec![crate::k8s::env("OWN", "1")]);
        app.ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            container_port: 50051,
            ..Default::default()
        }]);
        app.readiness_probe = Some(k8s_openapi::api::core::v1::Probe {
            http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn env_names(c: &Container) -> Vec<&str> {
        c.env.iter().flatten().map(|e| e.name.as_str()).collect()
    }

    fn mount_names(c: &Container) -> Vec<&str> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect()
    }

    #[test]
    fn the_grpc_agent_template_runs_the_agent_without_envoy_or_capture() {
        for native in [false, true] {
            let c = InjectionConfig {
                sidecar_mode: if native {
                    crate::api::SidecarMode::Native
                } else {
                    crate::api::SidecarMode::Classic
                },
                ..cfg()
            };
            let out = inject(&grpc_pod("grpc-agent"), &c).unwrap();
            let spec = out.spec.as_ref().unwrap();
            assert_eq!(spec.init_containers, None, "no redirect, no native sidecar");
            assert_eq!(
                names_of(&Some(spec.containers.clone())),
                ["app", "istio-proxy"]
            );
            let app = &spec.containers[0];
            assert_eq!(
                env_names(app),
                // The template's variables first, the pod's own after (istioctl's order).
                [
                    "GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT",
                    "GRPC_XDS_BOOTSTRAP",
                    "OWN"
                ]
            );
            assert_eq!(
                mount_names(app),
                ["istio-data", "istio-xds", "workload-certs"]
            );
            assert!(
                app.readiness_probe.as_ref().unwrap().http_get.is_some(),
                "not rewritten"
            );
            let proxy = &spec.containers[1];
            assert_eq!(proxy.args.as_ref().unwrap()[..2], ["proxy", "sidecar"]);
            let env = env_names(proxy);
            assert_eq!(env[..2], ["ISTIO_META_GENERATOR", "OUTPUT_CERTS"]);
            assert_eq!(
                env[env.len() - 2..],
                ["ISTIO_META_DNS_CAPTURE", "DISABLE_ENVOY"]
            );
            assert!(!env.contains(&"ISTIO_KUBE_APP_PROBERS"));
            let ports = proxy
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "ISTIO_META_POD_PORTS");
            assert!(ports.unwrap().value.as_deref().unwrap().contains("50051"));
            let probe = proxy.readiness_probe.as_ref().unwrap();
            assert_eq!(
                probe.http_get.as_ref().unwrap().port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15020)
            );
            assert!(proxy.lifecycle.as_ref().unwrap().post_start.is_some());
            assert!(proxy.security_context.is_none());
            let labels = out.metadata.labels.as_ref().unwrap();
            assert!(!labels.contains_key(keys::TLS_MODE));
            assert_eq!(labels[keys::CANONICAL_NAME], "greeter");
            let annotations = out.metadata.annotations.as_ref().unwrap();
            assert_eq!(annotations[keys::REWRITE_PROBES], "false");
            assert_eq!(annotations[keys::DEFAULT_CONTAINER], "app");
            assert_eq!(annotations[keys::PROMETHEUS_PORT], "15020");
            let overrides: Value = serde_json::from_str(&annotations[keys::OVERRIDES]).unwrap();
            assert_eq!(overrides["containers"][0]["name"], "app");
            let status = status_of(&out);
            assert_eq!(status["initContainers"], Value::Null);
            assert_eq!(status["containers"], json!(["istio-proxy", "app"]));
            assert_eq!(
                status["volumes"],
                json!([
                    "workload-socket",
                    "workload-certs",
                    "istio-xds",
                    "istio-data",
                    "istio-podinfo",
                    "istio-token",
                    "istiod-ca-cert"
                ])
            );
            assert_eq!(spec.volumes.as_ref().unwrap().len(), 7);
        }
    }

    #[test]
    fn the_grpc_agent_goes_first_when_the_app_waits_and_honours_the_status_port() {
        let c = InjectionConfig {
            hold_application_until_proxy_starts: true,
            ..cfg()
        };
        let out = inject(&grpc_pod("grpc-agent"), &c).unwrap();
        let spec = out.spec.as_ref().unwrap();
        assert_eq!(
            names_of(&Some(spec.containers.clone())),
            ["istio-proxy", "app"]
        );

        let mut p = grpc_pod("grpc-agent");
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("status.sidecar.istio.io/port".into(), "0".into());
        let out = inject(&p, &cfg()).unwrap();
        let proxy = out
            .spec
            .as_ref()
            .unwrap()
            .containers
            .last()
            .unwrap()
            .clone();
        assert!(proxy.readiness_probe.is_none() && proxy.volume_mounts.is_none());
    }

    #[test]
    fn the_grpc_simple_template_bootstraps_from_an_init_container() {
        let mut p = grpc_pod("grpc-simple");
        p.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(keys::REWRITE_PROBES.into(), "true".into());
        let out = inject(&p, &cfg()).unwrap();
        let spec = out.spec.as_ref().unwrap();
        assert_eq!(names_of(&spec.init_containers), ["grpc-bootstrap-init"]);
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            env_names(init),
            [
                "INSTANCE_IP",
                "POD_NAME",
                "POD_NAMESPACE",
                "ISTIO_NAMESPACE"
            ]
        );
        assert_eq!(names_of(&Some(spec.containers.clone())), ["app"]);
        let app = &spec.containers[0];
        assert_eq!(
            env_names(app),
            [
                "GRPC_XDS_BOOTSTRAP",
                "GRPC_GO_LOG_VERBOSITY_LEVEL",
                "GRPC_GO_LOG_SEVERITY_LEVEL",
                "OWN"
            ]
        );
        assert_eq!(mount_names(app), ["grpc-io-proxyless-bootstrap"]);
        assert!(
            out.metadata.labels.as_ref().unwrap().len() == 1,
            "no labels added"
        );
        let annotations = out.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[keys::REWRITE_PROBES], "false");
        assert!(!annotations.contains_key(keys::REV));
        assert!(!annotations.contains_key(keys::DEFAULT_CONTAINER));
        let status = status_of(&out);
        assert_eq!(status["initContainers"], json!(["grpc-bootstrap-init"]));
        assert_eq!(status["containers"], json!(["app"]));
        assert_eq!(status["volumes"], json!(["grpc-io-proxyless-bootstrap"]));
        // Injected once: the status annotation keeps a second pass from adding anything.
        assert_eq!(inject(&out, &cfg()).unwrap(), out);
    }

    #[test]
    fn grpc_templates_refuse_volume_and_container_name_clashes() {
        let mut p = grpc_pod("grpc-simple");
        p.spec.as_mut().unwrap().volumes = Some(vec![k8s_openapi::api::core::v1::Volume {
            name: "grpc-io-proxyless-bootstrap".into(),
            ..Default::default()
        }]);
        let err = inject(&p, &cfg()).unwrap_err().to_string();
        assert!(err.contains("grpc-io-proxyless-bootstrap"), "{err}");
        let mut p = grpc_pod("grpc-simple");
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container {
            name: "grpc-bootstrap-init".into(),
            ..Default::default()
        }]);
        let err = inject(&p, &cfg()).unwrap_err().to_string();
        assert!(err.contains("grpc-bootstrap-init"), "{err}");
    }

    #[test]
    fn the_gateway_template_injects_a_router_without_redirect() {
        let mut p = pod_with(&[], &[(keys::TEMPLATES, "gateway")]);
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers = None;
        spec.containers.push(Container {
            name: "istio-proxy".into(),
            image: Some("auto".into()),
            image_pull_policy: Some("IfNotPresent".into()),
            ..Default::default()
        });
        let out = inject(&p, &cfg()).unwrap();
        let spec = out.spec.as_ref().unwrap();
        assert_eq!(
            spec.init_containers, None,
            "no redirect, even in native mode"
        );
        let proxy = spec.containers.last().unwrap();
        assert_eq!(proxy.name, "istio-proxy");
        assert_eq!(proxy.args.as_ref().unwrap()[..2], ["proxy", "router"]);
        assert_eq!(
            proxy.image.as_deref(),
            Some("docker.io/istio/proxyv2:1.28.2")
        );
        assert_eq!(proxy.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert!(proxy.startup_probe.is_none() && proxy.lifecycle.is_none());
        let sysctls = spec
            .security_context
            .as_ref()
            .unwrap()
            .sysctls
            .as_ref()
            .unwrap();
        assert_eq!(sysctls[0].name, "net.ipv4.ip_unprivileged_port_start");
        assert!(
            !out.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(keys::TLS_MODE)
        );
        let status = status_of(&out);
        assert_eq!(status["initContainers"], json!([]));
        assert_eq!(status["containers"], json!(["istio-proxy"]));
        assert!(
            !status["volumes"]
                .as_array()
                .unwrap()
                .contains(&json!("istio-ca-crl"))
        );
    }

    #[test]
    fn a_pod_with_2000_env_vars_is_handled() {
        let mut p = typical_pod();
        let env = p.spec.as_mut().unwrap().containers[0]
            .env
            .get_or_insert_with(Vec::new);
        env.extend((0..2000).map(|i| k8s_openapi::api::core::v1::EnvVar {
            name: format!("VAR_{i}"),
            value: Some(i.to_string()),
            ..Default::default()
        }));
        let out = inject(&p, &cfg()).unwrap();
        assert_eq!(
            out.spec.unwrap().containers[0].env.as_ref().unwrap().len(),
            2001
        );
    }
}
