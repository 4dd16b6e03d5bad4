//! `meshop convert -f istiooperator.yaml`: an `install.istio.io/v1alpha1` IstioOperator in, the
//! equivalent MeshInstall out, and every setting that could not be carried, with why.
//!
//! Pure: [`convert`] takes the parsed document. It takes what it carries out of a copy of the
//! IstioOperator's spec as it goes; whatever is left is, leaf by leaf, "not carried", so nothing
//! is dropped silently. The result is checked by resolving it as the reconciler would.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Outcome;
use super::cluster::Output;
use crate::api::{MeshInstall, MeshInstallSpec};
use crate::effective::{Installation, Owner};

pub mod helm;
mod paths;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// An IstioOperator YAML file (one MeshInstall per IstioOperator document), or values files
    /// of Istio's Helm charts (all given together make one MeshInstall); '-' for standard input.
    /// Repeat for several files.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The Helm chart the values files are for, when their keys do not tell.
    #[arg(long, value_enum)]
    pub chart: Option<helm::Chart>,
    /// The MeshInstall's name (default: the IstioOperator's).
    #[arg(long)]
    pub name: Option<String>,
    /// Output format: text is the MeshInstall as YAML with what was not carried as comments
    /// above it (still valid YAML for kubectl); json and yaml give both as data (a list when
    /// there are several MeshInstalls).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// A setting of the IstioOperator the MeshInstall does not carry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotCarried {
    /// Its path under the IstioOperator, such as `spec.components.pilot.k8s.priorityClassName`.
    pub path: String,
    pub value: Value,
    pub reason: String,
}

/// The result of a conversion.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversion {
    pub mesh_install: MeshInstall,
    pub not_carried: Vec<NotCarried>,
    /// Settings Istio's own install ignores too (nothing of them reaches a cluster), listed so
    /// that nothing disappears silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_effect: Vec<NotCarried>,
}

/// The top-level values of Istio's charts (base, istiod, gateways, cni, ztunnel): an
/// `unvalidatedValues` key among them is a chart value like any other.
const CHART_VALUES: &[&str] = &[
    "global",
    "pilot",
    "gateways",
    "sidecarInjectorWebhook",
    "telemetry",
    "istiodRemote",
    "revisionTags",
    "meshConfig",
    "base",
    "cni",
    "istio_cni",
    "ztunnel",
    "revision",
    "ownerName",
    "profile",
    "defaultRevision",
    "experimental",
];

/// Why a setting is left behind, by path prefix (the longest match wins); anything else has no
/// equivalent in meshop.
const REASONS: &[(&str, &str)] = &[
    (
        "spec.installPackagePath",
        "meshop renders its own manifests; there are no charts to point at",
    ),
    (
        "spec.resourceSuffix",
        "meshop names objects after the revision only",
    ),
    (
        "spec.compatibilityVersion",
        "meshop renders each supported release as that release expects",
    ),
    (
        "spec.unvalidatedValues",
        "free-form chart values have no meaning outside Istio's charts (Istio's own output does not change with them)",
    ),
    (
        "spec.values",
        "a Helm chart value meshop has no setting for",
    ),
    (
        ".namespace",
        "meshop runs this component in the control-plane namespace (spec.namespace)",
    ),
    (
        ".k8s",
        "a Kubernetes setting meshop neither has a field for nor carries as an overlay",
    ),
    (
        "spec.components.pilot.k8s.service",
        "istiod's Service is meshop's",
    ),
];

fn reason(path: &str) -> String {
    REASONS
        .iter()
        .filter(|(prefix, _)| {
            if prefix.starts_with('.') {
                path.contains(&format!("{prefix}.")) || path.ends_with(prefix)
            } else {
                path == *prefix || path.starts_with(&format!("{prefix}."))
            }
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or("meshop has no equivalent setting", |(_, r)| r)
        .to_string()
}

/// Removes and returns `path` (dot-separated) from a JSON object tree, pruning emptied parents.
fn take(root: &mut Value, path: &str) -> Option<Value> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let map = root.as_object_mut()?;
    let taken = match rest {
        None => map.remove(head),
        Some(rest) => {
            let child = map.get_mut(head)?;
            let taken = take(child, rest);
            if child.as_object().is_some_and(Map::is_empty) {
                map.remove(head);
            }
            taken
        }
    };
    taken.filter(|v| !v.is_null())
}

/// Every leaf left in `value`, as (path, value); lists are leaves.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                leaves(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Null => {}
        Value::Object(_) => {}
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// Collects the not-carried settings and what the converter noted.
struct Notes(Vec<NotCarried>);

impl Notes {
    /// Lists every leaf left in `value` (under `prefix`) as not carried, each with its reason.
    fn rest(&mut self, prefix: &str, value: &Value) {
        let mut rest = Vec::new();
        leaves(prefix, value, &mut rest);
        for (p, v) in rest {
            let r = reason(&p);
            self.add(&p, v, r);
        }
    }

    fn add(&mut self, path: &str, value: Value, reason: impl Into<String>) {
        self.0.push(NotCarried {
            path: path.to_string(),
            value,
            reason: reason.into(),
        });
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The CPU target of an hpaSpec, in either autoscaling API's spelling.
fn hpa_cpu_target(hpa: &Value) -> Option<i64> {
    hpa.get("metrics")?.as_array()?.iter().find_map(|m| {
        let resource = m.get("resource")?;
        if resource.get("name")?.as_str()? != "cpu" {
            return None;
        }
        resource
            .get("targetAverageUtilization")
            .or_else(|| resource.get("target")?.get("averageUtilization"))
            .and_then(as_i64)
    })
}

/// Converts one component's `enabled` and `k8s` (taken out of `src`, at `path`) into meshop's
/// component overrides. `gateway` carries the Service's type and ports.
fn component(
    src: &mut Value,
    path: &str,
    objects: &Objects,
    gateway: bool,
    overlays: &mut Vec<Value>,
    notes: &mut Notes,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(enabled) = take(src, "enabled") {
        match as_bool(&enabled) {
            Some(b) => {
                out.insert("enabled".into(), json!(b));
            }
            None => notes.add(&format!("{path}.enabled"), enabled, "not a boolean"),
        }
    }
    if let Some(replicas) = take(src, "k8s.replicaCount") {
        out.insert("replicas".into(), replicas);
    }
    for (from, to) in [
        ("resources", "resources"),
        ("nodeSelector", "nodeSelector"),
        ("tolerations", "tolerations"),
        ("affinity", "affinity"),
        ("env", "env"),
        ("podAnnotations", "podAnnotations"),
        ("priorityClassName", "priorityClassName"),
        ("imagePullPolicy", "imagePullPolicy"),
    ] {
        if let Some(v) = take(src, &format!("k8s.{from}")) {
            out.insert(to.into(), v);
        }
    }
    if let Some(mut hpa) = take(src, "k8s.hpaSpec") {
        let mut autoscale = Map::new();
        autoscale.insert("enabled".into(), json!(true));
        if let Some(min) = take(&mut hpa, "minReplicas") {
            autoscale.insert("minReplicas".into(), min);
        }
        if let Some(max) = take(&mut hpa, "maxReplicas") {
            autoscale.insert("maxReplicas".into(), max);
        }
        if let Some(target) = hpa_cpu_target(&hpa) {
            autoscale.insert("targetCPUUtilizationPercentage".into(), json!(target));
        }
        // Metrics other than CPU go onto meshop's autoscaler as they are.
        if let Some(Value::Array(metrics)) = take(&mut hpa, "metrics") {
            let ops: Vec<Value> = metrics
                .iter()
                .filter(|m| m.pointer("/resource/name").and_then(Value::as_str) != Some("cpu"))
                .map(|m| json!({ "op": "add", "path": "/spec/metrics/-", "value": hpa_v2_metric(m) }))
                .collect();
            if !ops.is_empty() {
                overlays.push(json!({ "kind": "HorizontalPodAutoscaler", "name": objects.name, "jsonPatch": ops }));
            }
        }
        // meshop points the autoscaler at its own Deployment.
        take(&mut hpa, "scaleTargetRef");
        notes.rest(&format!("{path}.k8s.hpaSpec"), &hpa);
        out.insert("autoscale".into(), Value::Object(autoscale));
    }
    if let Some(mut pdb) = take(src, "k8s.podDisruptionBudget") {
        let mut budget = Map::new();
        budget.insert("enabled".into(), json!(true));
        for key in ["minAvailable", "maxUnavailable"] {
            if let Some(v) = take(&mut pdb, key) {
                budget.insert(key.into(), v);
            }
        }
        let mut rest = Vec::new();
        leaves(&format!("{path}.k8s.podDisruptionBudget"), &pdb, &mut rest);
        for (p, v) in rest {
            notes.add(&p, v, "only minAvailable and maxUnavailable are carried");
        }
        out.insert("podDisruptionBudget".into(), Value::Object(budget));
    }
    if gateway {
        let mut service = Map::new();
        if let Some(t) = take(src, "k8s.service.type") {
            service.insert("type".into(), t);
        }
        if let Some(ports) = take(src, "k8s.service.ports") {
            let carried: Vec<Value> = ports
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let mut port = Map::new();
                    for key in ["name", "port", "targetPort", "nodePort", "protocol"] {
                        if let Some(v) = p.get(key) {
                            port.insert(key.into(), v.clone());
                        }
                    }
                    Value::Object(port)
                })
                .collect();
            service.insert("ports".into(), Value::Array(carried));
        }
        if let Some(annotations) = take(src, "k8s.serviceAnnotations") {
            service.insert("annotations".into(), annotations);
        }
        if !service.is_empty() {
            out.insert("service".into(), Value::Object(service));
        }
    }
    out
}

/// Carries a gateway list: the gateway named `istio-<kind>gateway` is meshop's default gateway
/// of that kind (`components.<kind>Gateway`); every other one is an entry of
/// `components.<kind>Gateways`, with its name, namespace and labels.
#[allow(clippy::too_many_arguments)]
fn gateways(
    list: Option<Value>,
    kind: &str,
    path: &str,
    mesh_namespace: Option<&str>,
    images: &ImageDefaults,
    components: &mut Map<String, Value>,
    pending: &mut Vec<PendingOverlay>,
    notes: &mut Notes,
) {
    let list = match list {
        None => return,
        Some(Value::Array(items)) => items,
        Some(other) => {
            notes.add(path, other, "not a list of gateways");
            return;
        }
    };
    let standard = format!("istio-{kind}gateway");
    let mesh_namespace = mesh_namespace.unwrap_or(crate::api::DEFAULT_NAMESPACE);
    let mut extra = Vec::new();
    for mut gateway in list {
        let name = take(&mut gateway, "name")
            .and_then(|n| n.as_str().map(str::to_string))
            .unwrap_or_else(|| standard.clone());
        let at = format!("{path}[{name}]");
        let objects = Objects::gateway(&name);
        let mut overlays = Vec::new();
        let mut converted = component(&mut gateway, &at, &objects, true, &mut overlays, notes);
        k8s_overlays(&mut gateway, &objects, true, &mut overlays);
        image_overlay(&mut gateway, &objects, images, &mut overlays);
        let namespace = take(&mut gateway, "namespace")
            .and_then(|n| n.as_str().map(str::to_string))
            .filter(|n| n != mesh_namespace);
        let labels = take(&mut gateway, "label");
        let pointer = if name == standard {
            if let Some(ns) = namespace {
                notes.add(
                    &format!("{at}.namespace"),
                    json!(ns),
                    format!("meshop runs its default {kind} gateway in the mesh's namespace; name it differently to run it elsewhere"),
                );
            }
            if let Some(labels) = labels {
                // Gateway resources select pods by label; the default gateway keeps its selector.
                converted.insert("podLabels".into(), labels);
            }
            // Istio's default profile enables its ingress gateway; the list entry decides now.
            let default = object_mut(components, &format!("{kind}Gateway"));
            for (k, v) in std::mem::take(&mut converted) {
                default.insert(k, v);
            }
            if !overlays.is_empty() {
                default.insert(
                    "overlays".into(),
                    Value::Array(std::mem::take(&mut overlays)),
                );
            }
            format!("/components/{kind}Gateway")
        } else {
            let mut entry = Map::new();
            entry.insert("name".into(), json!(name));
            if let Some(ns) = namespace {
                entry.insert("namespace".into(), json!(ns));
            }
            if let Some(labels) = labels {
                entry.insert("labels".into(), labels);
            }
            entry.extend(std::mem::take(&mut converted));
            if !overlays.is_empty() {
                entry.insert(
                    "overlays".into(),
                    Value::Array(std::mem::take(&mut overlays)),
                );
            }
            extra.push(Value::Object(entry));
            format!("/components/{kind}Gateways/{}", extra.len() - 1)
        };
        PendingOverlay::take_from(
            &mut gateway,
            "k8s.overlays",
            &pointer,
            &format!("{at}.k8s.overlays"),
            pending,
        );
        notes.rest(&at, &gateway);
    }
    if !extra.is_empty() {
        components.insert(format!("{kind}Gateways"), Value::Array(extra));
    }
}

/// Why an input describes a control plane meshop does not install, if it does.
fn unsupported_topology(src: &Value) -> Option<String> {
    let profile = src.get("profile").and_then(Value::as_str).unwrap_or("");
    let get = |path: &str| -> Option<&Value> {
        path.split('.')
            .try_fold(src, |v, k| v.get(k))
            .filter(|v| !v.is_null())
    };
    let on = |path: &str| get(path).and_then(as_bool) == Some(true);
    let remote = if matches!(profile, "remote" | "external") {
        Some(format!("profile {profile}"))
    } else if on("components.istiodRemote.enabled") {
        Some("components.istiodRemote".into())
    } else if get("values.istiodRemote").is_some() {
        Some("values.istiodRemote".into())
    } else if get("values.global.remotePilotAddress").is_some() {
        Some("values.global.remotePilotAddress".into())
    } else if on("values.global.externalIstiod") || on("values.global.configCluster") {
        Some("values.global.externalIstiod / configCluster".into())
    } else {
        None
    };
    if let Some(what) = remote {
        return Some(format!(
            "a remote or external control plane ({what}): meshop installs a cluster's own control plane only; multi-cluster remote and external istiod are not supported"
        ));
    }
    None
}

/// The objects meshop renders for one component, for turning Kubernetes settings meshop has no
/// field for into overlays on them.
#[derive(Clone, Debug)]
struct Objects {
    /// Deployment or DaemonSet.
    workload_kind: &'static str,
    name: String,
    container: &'static str,
    /// The image's repository name under the hub (pilot, proxyv2, install-cni).
    image: &'static str,
}

impl Objects {
    fn istiod(revision: &str) -> Objects {
        Objects {
            workload_kind: "Deployment",
            name: format!("istiod{}", crate::revision::suffix(revision)),
            container: "discovery",
            image: "pilot",
        }
    }
    fn gateway(name: &str) -> Objects {
        Objects {
            workload_kind: "Deployment",
            name: name.to_string(),
            container: "istio-proxy",
            image: "proxyv2",
        }
    }
    fn cni() -> Objects {
        Objects {
            workload_kind: "DaemonSet",
            name: "istio-cni-node".into(),
            container: "install-cni",
            image: "install-cni",
        }
    }

    fn ztunnel() -> Objects {
        Objects {
            workload_kind: "DaemonSet",
            name: "ztunnel".into(),
            container: "istio-proxy",
            image: "ztunnel",
        }
    }

    fn pod(&self, patch: Value) -> Value {
        json!({ "kind": self.workload_kind, "name": self.name,
                "strategicMerge": { "spec": { "template": { "spec": patch } } } })
    }
    fn container(&self, patch: Value) -> Value {
        let mut c = json!({ "name": self.container });
        if let (Some(c), Value::Object(p)) = (c.as_object_mut(), patch) {
            c.extend(p);
        }
        self.pod(json!({ "containers": [c] }))
    }
}

/// An HPA metric in the autoscaling/v2 shape (Istio accepts v2beta1's too and converts it).
fn hpa_v2_metric(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(resource) = m.get_mut("resource").and_then(Value::as_object_mut)
        && let Some(target) = resource.remove("targetAverageUtilization")
    {
        resource.insert(
            "target".into(),
            json!({ "type": "Utilization", "averageUtilization": target }),
        );
    }
    m
}

/// Kubernetes settings of a component meshop has no field for, as overlays on its objects.
fn k8s_overlays(src: &mut Value, objects: &Objects, gateway: bool, overlays: &mut Vec<Value>) {
    if let Some(probe) = take(src, "k8s.readinessProbe") {
        overlays.push(objects.container(json!({ "readinessProbe": probe })));
    }
    if let Some(sc) = take(src, "k8s.securityContext") {
        overlays.push(objects.pod(json!({ "securityContext": sc })));
    }
    if let Some(volumes) = take(src, "k8s.volumes") {
        overlays.push(objects.pod(json!({ "volumes": volumes })));
    }
    if let Some(mounts) = take(src, "k8s.volumeMounts") {
        overlays.push(objects.container(json!({ "volumeMounts": mounts })));
    }
    if let Some(strategy) = take(src, "k8s.strategy") {
        let key = if objects.workload_kind == "DaemonSet" {
            "updateStrategy"
        } else {
            "strategy"
        };
        overlays.push(json!({ "kind": objects.workload_kind, "name": objects.name,
                              "strategicMerge": { "spec": { key: strategy } } }));
    }
    if gateway
        && let Some(rest) =
            take(src, "k8s.service").filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
    {
        overlays.push(json!({ "kind": "Service", "name": objects.name,
                              "strategicMerge": { "spec": rest } }));
    }
}

/// The hub and tag a component's own image is pulled from, when the input names one.
fn image_overlay(
    src: &mut Value,
    objects: &Objects,
    global: &ImageDefaults,
    overlays: &mut Vec<Value>,
) {
    let hub = take(src, "hub").and_then(|h| h.as_str().map(str::to_string));
    let tag = take(src, "tag").map(|t| match t {
        Value::String(s) => s,
        other => other.to_string(),
    });
    if hub.is_none() && tag.is_none() && global.variant.is_none() {
        return;
    }
    let hub = hub.unwrap_or_else(|| global.hub.clone());
    let tag = tag.unwrap_or_else(|| global.tag.clone());
    let variant = global
        .variant
        .as_deref()
        .map(|v| format!("-{v}"))
        .unwrap_or_default();
    overlays.push(
        objects.container(json!({ "image": format!("{hub}/{}:{tag}{variant}", objects.image) })),
    );
}

/// The images meshop would pull, for components that name their own hub or tag.
#[derive(Clone)]
struct ImageDefaults {
    hub: String,
    tag: String,
    variant: Option<String>,
}

/// Istio's `env` as a map (`values.pilot.env`, the gateway chart) as a list of EnvVars.
fn env_list(map: &Value) -> Value {
    Value::Array(
        map.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                json!({ "name": k, "value": value })
            })
            .collect(),
    )
}

/// Merges `add` into the component's `env` list, keeping what is there first.
fn push_env(component: &mut Map<String, Value>, add: Value) {
    let list = component.entry("env").or_insert_with(|| json!([]));
    if let (Some(list), Value::Array(add)) = (list.as_array_mut(), add) {
        for e in add {
            if !list.iter().any(|x| x.get("name") == e.get("name")) {
                list.push(e);
            }
        }
    }
}

fn object_mut<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = parent.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

/// An IstioOperator overlay waiting for meshop's render to resolve its paths.
struct PendingOverlay {
    /// Where the component sits in the spec (a JSON pointer such as `/components/istiod`).
    at: String,
    path: String,
    overlay: Value,
}

impl PendingOverlay {
    /// Takes the overlay list at `key` of a component's settings `src` (the component is at
    /// `at` in the converted spec, at `path` in the IstioOperator), to be resolved later.
    fn take_from(
        src: &mut Value,
        key: &str,
        at: &str,
        path: &str,
        pending: &mut Vec<PendingOverlay>,
    ) {
        if let Some(Value::Array(list)) = take(src, key) {
            for (i, overlay) in list.into_iter().enumerate() {
                pending.push(PendingOverlay {
                    at: at.to_string(),
                    path: format!("{path}[{i}]"),
                    overlay,
                });
            }
        }
    }
}

/// Converts a parsed IstioOperator.
pub fn convert(doc: &Value, name: Option<&str>) -> Result<Conversion> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "IstioOperator" || !api_version.starts_with("install.istio.io/") {
        bail!(
            "not an IstioOperator (apiVersion install.istio.io/v1alpha1, kind IstioOperator): found {api_version:?} {kind:?}"
        );
    }
    let name = name
        .map(str::to_string)
        .or_else(|| {
            doc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "mesh".into());
    let mut src = match doc.get("spec") {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    };
    if let Some(why) = unsupported_topology(&src) {
        bail!("{why}");
    }
    let mut notes = Notes(Vec::new());
    // What Istio's charts do not read has no effect in Istio either.
    let mut without_effect = Notes(Vec::new());
    if let Some(Value::Object(extra)) = take(&mut src, "unvalidatedValues") {
        for (key, value) in extra {
            if CHART_VALUES.contains(&key.as_str()) {
                // Merged into the chart values as they are: read like spec.values.
                helm::merge(&mut src, json!({ "values": { key: value } }));
                continue;
            }
            let mut rest = Vec::new();
            leaves(&format!("spec.unvalidatedValues.{key}"), &value, &mut rest);
            for (p, v) in rest {
                without_effect.add(&p, v, "not a value of Istio's charts: no chart reads it");
            }
        }
    }
    let mut spec = Map::new();
    let mut components = Map::new();
    let mut addons = Map::new();
    let mut injection = Map::new();
    let mut proxy = Map::new();
    let mut global = Map::new();
    let mut pending: Vec<PendingOverlay> = Vec::new();

    // Profile: Istio's default (istiod and an ingress gateway) is meshop's minimal plus the
    // ingress gateway; preview and stable are variants of default.
    // The ambient profile also sets the chart value `profile: ambient` (which a Helm values
    // file of Istio's charts names on its own).
    let values_profile = take(&mut src, "values.profile")
        .and_then(|p| p.as_str().map(str::to_string))
        .filter(|p| !p.is_empty());
    let profile = take(&mut src, "profile")
        .and_then(|p| p.as_str().map(str::to_string))
        .or_else(|| values_profile.clone().filter(|p| p == "ambient"))
        .unwrap_or_else(|| "default".into());
    if let Some(other) = values_profile.filter(|p| *p != profile) {
        notes.add(
            "spec.values.profile",
            json!(other),
            "a chart profile other than the IstioOperator's own profile; meshop has one profile",
        );
    }
    let meshop_profile = match profile.as_str() {
        "demo" => "demo",
        // Istio's ambient profile: istiod, the CNI agent in ambient mode and ztunnel, no
        // ingress gateway; meshop's ambient profile is the same.
        "ambient" => "ambient",
        "minimal" => "minimal",
        "empty" => "empty",
        "default" | "preview" | "stable" => {
            components.insert("ingressGateway".into(), json!({ "enabled": true }));
            "minimal"
        }
        other => {
            notes.add(
                "spec.profile",
                json!(other),
                "not a profile meshop knows; converted as minimal",
            );
            "minimal"
        }
    };
    spec.insert("profile".into(), json!(meshop_profile));
    let hub = take(&mut src, "hub").or_else(|| take(&mut src, "values.global.hub"));
    if let Some(hub) = &hub {
        spec.insert("hub".into(), hub.clone());
    }
    let tag = take(&mut src, "tag").or_else(|| take(&mut src, "values.global.tag"));
    let mut version = None;
    if let Some(tag) = tag {
        let text = match &tag {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if tag.is_number() {
            // YAML reads an unquoted 1.30 as the number 1.3: guessing the minor back is unsafe.
            notes.add(
                "spec.tag",
                tag,
                "a number, not a version: YAML reads an unquoted 1.30 as 1.3; quote the tag and convert again",
            );
        } else {
            match crate::versions::catalog().resolve(Some(&text)) {
                Ok(_) => {
                    spec.insert("version".into(), json!(text));
                    version = Some(text);
                }
                Err(e) => notes.add(
                    "spec.tag",
                    tag,
                    format!("{e}; left out, so meshop installs its newest supported release"),
                ),
            }
        }
    }
    let images = ImageDefaults {
        hub: hub
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or(crate::api::DEFAULT_HUB)
            .to_string(),
        tag: version.unwrap_or_else(|| {
            crate::versions::catalog()
                .resolve(None)
                .map(|r| r.version.to_string())
                .unwrap_or_default()
        }),
        variant: take(&mut src, "values.global.variant")
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|v| !v.is_empty()),
    };
    // The control plane's namespace: the IstioOperator's, or istiod's own when it names one.
    let namespace = take(&mut src, "namespace")
        .or_else(|| take(&mut src, "components.pilot.namespace"))
        .or_else(|| take(&mut src, "values.global.istioNamespace"));
    if let Some(ns) = namespace.clone() {
        spec.insert("namespace".into(), ns);
    }
    let revision = take(&mut src, "revision").or_else(|| take(&mut src, "values.revision"));
    let revision = revision
        .and_then(|r| r.as_str().map(str::to_string))
        .filter(|r| !r.is_empty());
    if let Some(rev) = &revision {
        spec.insert("revision".into(), json!(rev));
    }
    let revision = revision.unwrap_or_default();

    // Components.
    if let Some(enabled) = take(&mut src, "components.base.enabled")
        && as_bool(&enabled) == Some(false)
    {
        notes.add(
            "spec.components.base.enabled",
            enabled,
            "meshop always installs Istio's CRDs with the mesh",
        );
    }
    PendingOverlay::take_from(
        &mut src,
        "components.base.k8s.overlays",
        "/components/base",
        "spec.components.base.k8s.overlays",
        &mut pending,
    );
    if let Some(mut pilot) = take(&mut src, "components.pilot") {
        let objects = Objects::istiod(&revision);
        let mut overlays = Vec::new();
        let mut c = component(
            &mut pilot,
            "spec.components.pilot",
            &objects,
            false,
            &mut overlays,
            &mut notes,
        );
        k8s_overlays(&mut pilot, &objects, false, &mut overlays);
        image_overlay(&mut pilot, &objects, &images, &mut overlays);
        PendingOverlay::take_from(
            &mut pilot,
            "k8s.overlays",
            "/components/istiod",
            "spec.components.pilot.k8s.overlays",
            &mut pending,
        );
        if !overlays.is_empty() {
            c.insert("overlays".into(), Value::Array(overlays));
        }
        components.insert("istiod".into(), Value::Object(c));
        notes.rest("spec.components.pilot", &pilot);
    } else if images.variant.is_some() {
        let mut overlays = Vec::new();
        image_overlay(
            &mut json!({}),
            &Objects::istiod(&revision),
            &images,
            &mut overlays,
        );
        components.insert("istiod".into(), json!({ "overlays": overlays }));
    }
    if let Some(mut cni) = take(&mut src, "components.cni") {
        let objects = Objects::cni();
        let mut overlays = Vec::new();
        let mut c = component(
            &mut cni,
            "spec.components.cni",
            &objects,
            false,
            &mut overlays,
            &mut notes,
        );
        if c.get("enabled").and_then(Value::as_bool) == Some(true) {
            injection.insert("trafficCapture".into(), json!("cni"));
        }
        // A DaemonSet: replicas and autoscaling do not apply (the CRD refuses them).
        for key in ["replicas", "autoscale", "podDisruptionBudget"] {
            if let Some(v) = c.remove(key) {
                notes.add(
                    &format!("spec.components.cni.k8s.{key}"),
                    v,
                    "the CNI agent is a DaemonSet: one pod per node",
                );
            }
        }
        k8s_overlays(&mut cni, &objects, false, &mut overlays);
        image_overlay(&mut cni, &objects, &images, &mut overlays);
        PendingOverlay::take_from(
            &mut cni,
            "k8s.overlays",
            "/components/cni",
            "spec.components.cni.k8s.overlays",
            &mut pending,
        );
        if !overlays.is_empty() {
            c.insert("overlays".into(), Value::Array(overlays));
        }
        components.insert("cni".into(), Value::Object(c));
        notes.rest("spec.components.cni", &cni);
    }
    if let Some(mut ztunnel) = take(&mut src, "components.ztunnel") {
        let objects = Objects::ztunnel();
        let mut overlays = Vec::new();
        let mut c = component(
            &mut ztunnel,
            "spec.components.ztunnel",
            &objects,
            false,
            &mut overlays,
            &mut notes,
        );
        for key in ["replicas", "autoscale", "podDisruptionBudget"] {
            if let Some(v) = c.remove(key) {
                notes.add(
                    &format!("spec.components.ztunnel.k8s.{key}"),
                    v,
                    "ztunnel is a DaemonSet: one pod per node",
                );
            }
        }
        k8s_overlays(&mut ztunnel, &objects, false, &mut overlays);
        image_overlay(&mut ztunnel, &objects, &images, &mut overlays);
        PendingOverlay::take_from(
            &mut ztunnel,
            "k8s.overlays",
            "/components/ztunnel",
            "spec.components.ztunnel.k8s.overlays",
            &mut pending,
        );
        if !overlays.is_empty() {
            c.insert("overlays".into(), Value::Array(overlays));
        }
        components.insert("ztunnel".into(), Value::Object(c));
        notes.rest("spec.components.ztunnel", &ztunnel);
    }
    // The CNI agent's ambient mode (Istio's cni.ambient values).
    for (from, to) in [
        ("enabled", "enabled"),
        ("dnsCapture", "dnsCapture"),
        ("ipv6", "ipv6"),
        ("reconcileIptablesOnStartup", "reconcileIptablesOnStartup"),
    ] {
        let path = format!("values.cni.ambient.{from}");
        if let Some(v) = take(&mut src, &path) {
            match as_bool(&v) {
                Some(b) => {
                    let cni = object_mut(&mut components, "cni");
                    object_mut(cni, "ambient").insert(to.into(), json!(b));
                }
                None => notes.add(&format!("spec.{path}"), v, "not a boolean"),
            }
        }
    }
    // values.ztunnel and values.cni: the charts' own settings of the two node agents, where
    // meshop has them (the component's own k8s settings win).
    for (chart, key, objects) in [
        ("ztunnel", "ztunnel", Objects::ztunnel()),
        ("cni", "cni", Objects::cni()),
    ] {
        let Some(mut values) = take(&mut src, &format!("values.{chart}")) else {
            continue;
        };
        let mut carried = Map::new();
        for name in [
            "resources",
            "nodeSelector",
            "tolerations",
            "affinity",
            "podAnnotations",
            "podLabels",
            "priorityClassName",
            "imagePullPolicy",
        ] {
            if let Some(v) = take(&mut values, name) {
                carried.insert(name.into(), v);
            }
        }
        if let Some(env) = take(&mut values, "env") {
            carried.insert("env".into(), env_list(&env));
        }
        let mut overlays = Vec::new();
        image_overlay(&mut values, &objects, &images, &mut overlays);
        if !carried.is_empty() || !overlays.is_empty() {
            let c = object_mut(&mut components, key);
            for (k, v) in carried {
                c.entry(k).or_insert(v);
            }
            if !overlays.is_empty()
                && !c
                    .get("overlays")
                    .is_some_and(|o| o.to_string().contains("\"image\""))
            {
                let list = c.entry("overlays").or_insert_with(|| json!([]));
                if let Some(list) = list.as_array_mut() {
                    list.extend(overlays);
                }
            }
        }
        notes.rest(&format!("spec.values.{chart}"), &values);
    }
    // Istio's Helm-style switches for the default gateways.
    for (key, kind) in [
        ("istio-ingressgateway", "ingress"),
        ("istio-egressgateway", "egress"),
    ] {
        if let Some(enabled) = take(&mut src, &format!("values.gateways.{key}.enabled")) {
            object_mut(&mut components, &format!("{kind}Gateway"))
                .insert("enabled".into(), json!(as_bool(&enabled)));
        }
    }
    for kind in ["ingress", "egress"] {
        let list = take(&mut src, &format!("components.{kind}Gateways"));
        gateways(
            list,
            kind,
            &format!("spec.components.{kind}Gateways"),
            namespace.as_ref().and_then(Value::as_str),
            &images,
            &mut components,
            &mut pending,
            &mut notes,
        );
    }
    // The addons of Istio 1.6-1.7 (removed in 1.8), still found in old files.
    for (from, to) in [
        ("prometheus", "prometheus"),
        ("grafana", "grafana"),
        ("kiali", "kiali"),
        ("tracing", "jaeger"),
    ] {
        if let Some(enabled) = take(&mut src, &format!("addonComponents.{from}.enabled")) {
            addons.insert(to.into(), json!({ "enabled": as_bool(&enabled) }));
        }
    }

    // meshConfig: meshop takes Istio's MeshConfig as it is.
    let mut mesh = match take(&mut src, "meshConfig") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            notes.add("spec.meshConfig", other, "not a map");
            Map::new()
        }
        None => Map::new(),
    };
    // Istio's chart passes values.pilot.traceSampling to istiod (PILOT_TRACE_SAMPLING), as
    // meshop's traceSampling does; a defaultConfig.tracing.sampling of the mesh config would
    // override it in every proxy instead.
    if let Some(sampling) = take(&mut src, "values.pilot.traceSampling") {
        mesh.insert("traceSampling".into(), sampling);
    }
    if let Some(c) = take(&mut src, "values.global.proxy.concurrency") {
        proxy.insert("concurrency".into(), c);
    }
    if let Some(hold) = take(
        &mut src,
        "values.global.proxy.holdApplicationUntilProxyStarts",
    ) {
        proxy.insert("holdApplicationUntilProxyStarts".into(), hold);
    }
    if let Some(r) = take(&mut src, "values.global.proxy.resources") {
        proxy.insert("resources".into(), r);
    }
    if let Some(level) = take(&mut src, "values.global.proxy.logLevel") {
        proxy.insert("logLevel".into(), level);
    }

    // values.global: settings every component shares.
    for (from, to) in [
        ("imagePullPolicy", "imagePullPolicy"),
        ("logAsJson", "logAsJson"),
        ("priorityClassName", "priorityClassName"),
        ("meshID", "meshID"),
        ("network", "network"),
        ("multiCluster.clusterName", "clusterName"),
        ("logging.level", "logLevel"),
        ("networkPolicy.enabled", "networkPolicy.enabled"),
    ] {
        if let Some(v) = take(&mut src, &format!("values.global.{from}")) {
            // A dotted name is a nested field, as in Istio's values.
            let (parents, leaf) = to
                .rsplit_once('.')
                .map_or((None, to), |(p, l)| (Some(p), l));
            let mut at = &mut global;
            for parent in parents.into_iter().flat_map(|p| p.split('.')) {
                at = object_mut(at, parent);
            }
            at.insert(leaf.into(), v);
        }
    }
    if let Some(secrets) = take(&mut src, "values.global.imagePullSecrets") {
        // Istio's chart takes names; Kubernetes' shape ({name: x}) is read too.
        let names: Vec<Value> = secrets
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                s.as_str()
                    .or_else(|| s.get("name")?.as_str())
                    .map(|n| json!(n))
            })
            .collect();
        global.insert("imagePullSecrets".into(), Value::Array(names));
    }
    // Scheduling defaults apply to every component that sets none of its own, as in Istio's charts.
    let default_tolerations = take(&mut src, "values.global.defaultTolerations");
    let default_node_selector = take(&mut src, "values.global.defaultNodeSelector");

    // The injector's native-sidecar switch is meshop's injection.sidecarMode.
    if let Some(native) = take(&mut src, "values.pilot.env.ENABLE_NATIVE_SIDECARS") {
        let mode = match native.as_str().unwrap_or_default() {
            "true" => Some("native"),
            "false" => Some("classic"),
            "auto" => Some("auto"),
            _ => as_bool(&native).map(|b| if b { "native" } else { "classic" }),
        };
        match mode {
            Some(m) => {
                injection.insert("sidecarMode".into(), json!(m));
            }
            None => notes.add(
                "spec.values.pilot.env.ENABLE_NATIVE_SIDECARS",
                native,
                "expected true, false or auto",
            ),
        }
    }
    // meshop's injector always rewrites app probes unless a pod says otherwise.
    if let Some(rewrite) = take(
        &mut src,
        "values.sidecarInjectorWebhook.rewriteAppHTTPProbe",
    ) && as_bool(&rewrite) != Some(true)
    {
        notes.add(
            "spec.values.sidecarInjectorWebhook.rewriteAppHTTPProbe",
            rewrite,
            "meshop always rewrites app probes; turn it off per pod with the sidecar.istio.io/rewriteAppHTTPProbers annotation",
        );
    }
    // values.pilot: istiod's chart values.
    let mut pilot_values = take(&mut src, "values.pilot").unwrap_or_else(|| json!({}));
    // Istio's chart autoscales istiod unless autoscaleEnabled is false: any autoscaling value
    // means an autoscaler.
    let targets = [
        "cpu.targetAverageUtilization",
        "memory.targetAverageUtilization",
        "autoscaleMin",
        "autoscaleMax",
    ]
    .iter()
    .any(|k| {
        k.split('.')
            .try_fold(&pilot_values, |v, s| v.get(s))
            .is_some()
    });
    {
        let istiod = object_mut(&mut components, "istiod");
        let objects = Objects::istiod(&revision);
        for key in [
            "resources",
            "nodeSelector",
            "tolerations",
            "affinity",
            "podAnnotations",
            "podLabels",
            "priorityClassName",
        ] {
            if let Some(v) = take(&mut pilot_values, key) {
                istiod.entry(key).or_insert(v);
            }
        }
        if let Some(n) = take(&mut pilot_values, "replicaCount") {
            istiod.entry("replicas").or_insert(n);
        }
        if let Some(env) = take(&mut pilot_values, "env") {
            push_env(istiod, env_list(&env));
        }
        if let Some(env) = take(&mut pilot_values, "envVarFrom") {
            push_env(istiod, env);
        }
        let mut autoscale = Map::new();
        if let Some(on) = take(&mut pilot_values, "autoscaleEnabled") {
            autoscale.insert("enabled".into(), json!(as_bool(&on)));
        }
        if let Some(min) = take(&mut pilot_values, "autoscaleMin") {
            autoscale.insert("minReplicas".into(), min);
        }
        if let Some(max) = take(&mut pilot_values, "autoscaleMax") {
            autoscale.insert("maxReplicas".into(), max);
        }
        if let Some(t) = take(&mut pilot_values, "cpu.targetAverageUtilization") {
            autoscale.insert("targetCPUUtilizationPercentage".into(), t);
        }
        if !autoscale.is_empty() {
            let existing = object_mut(istiod, "autoscale");
            for (k, v) in autoscale {
                existing.entry(k).or_insert(v);
            }
        }
        // Utilisation targets only mean something with an autoscaler: Istio's chart has one for
        // istiod unless autoscaleEnabled is false (between 1 and 5 replicas), meshop's profiles
        // only where they say so.
        if targets {
            let a = object_mut(istiod, "autoscale");
            if !a.contains_key("enabled") {
                a.insert("enabled".into(), json!(true));
                a.entry("minReplicas").or_insert(json!(1));
                a.entry("maxReplicas").or_insert(json!(5));
            }
        }
        // Istio's chart protects istiod with a PodDisruptionBudget (minAvailable 1) whenever it
        // runs more than one replica.
        let autoscaled = istiod
            .get("autoscale")
            .is_some_and(|a| a.get("enabled").and_then(Value::as_bool) != Some(false));
        let floor = if autoscaled {
            istiod
                .get("autoscale")
                .and_then(|a| a.get("minReplicas"))
                .and_then(as_i64)
        } else {
            istiod.get("replicas").and_then(as_i64)
        };
        if floor.is_some_and(|n| n > 1) && !istiod.contains_key("podDisruptionBudget") {
            istiod.insert(
                "podDisruptionBudget".into(),
                json!({ "enabled": true, "minAvailable": 1 }),
            );
        }
        let mut overlays = Vec::new();
        if let Some(t) = take(&mut pilot_values, "memory.targetAverageUtilization") {
            overlays.push(json!({ "kind": "HorizontalPodAutoscaler", "name": objects.name, "jsonPatch": [
                { "op": "add", "path": "/spec/metrics/-", "value": { "type": "Resource", "resource": {
                    "name": "memory", "target": { "type": "Utilization", "averageUtilization": t } } } }
            ] }));
        }
        let mut rolling = Map::new();
        if let Some(v) = take(&mut pilot_values, "rollingMaxUnavailable") {
            rolling.insert("maxUnavailable".into(), v);
        }
        if let Some(v) = take(&mut pilot_values, "rollingMaxSurge") {
            rolling.insert("maxSurge".into(), v);
        }
        if !rolling.is_empty() {
            overlays.push(json!({ "kind": "Deployment", "name": objects.name,
                "strategicMerge": { "spec": { "strategy": { "rollingUpdate": rolling } } } }));
        }
        if let Some(Value::Array(args)) = take(&mut pilot_values, "extraContainerArgs") {
            let ops: Vec<Value> = args
                .into_iter()
                .map(|a| json!({ "op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a }))
                .collect();
            overlays.push(json!({ "kind": "Deployment", "name": objects.name, "jsonPatch": ops }));
        }
        let mut image_src = json!({});
        if let Some(h) = take(&mut pilot_values, "hub") {
            image_src["hub"] = h;
        }
        if let Some(t) = take(&mut pilot_values, "tag") {
            image_src["tag"] = t;
        }
        if image_src.as_object().is_some_and(|m| !m.is_empty())
            && !istiod
                .get("overlays")
                .is_some_and(|o| o.to_string().contains("\"image\""))
        {
            image_overlay(
                &mut image_src,
                &objects,
                &ImageDefaults {
                    variant: None,
                    ..images.clone()
                },
                &mut overlays,
            );
        }
        if !overlays.is_empty() {
            let list = istiod.entry("overlays").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                list.extend(overlays);
            }
        }
        if istiod.is_empty() {
            components.remove("istiod");
        }
    }
    notes.rest("spec.values.pilot", &pilot_values);
    if default_tolerations.is_some() || default_node_selector.is_some() {
        for_each_workload(&mut components, |c| {
            if let Some(t) = &default_tolerations {
                c.entry("tolerations").or_insert_with(|| t.clone());
            }
            if let Some(n) = &default_node_selector {
                c.entry("nodeSelector").or_insert_with(|| n.clone());
            }
        });
    }

    // Values that map to meshop's injection settings.
    if let Some(enabled) = take(&mut src, "values.sidecarInjectorWebhook.enabled") {
        injection.insert("enabled".into(), json!(as_bool(&enabled)));
    }
    // Custom injection templates: carried as written when meshop can apply them (a partial Pod,
    // no Go template directives, not a built-in template's name); each other one is listed.
    let mut templates = Map::new();
    if let Some(given) = take(&mut src, "values.sidecarInjectorWebhook.templates") {
        for (name, text) in given.as_object().into_iter().flatten() {
            let path = format!("spec.values.sidecarInjectorWebhook.templates.{name}");
            match text
                .as_str()
                .map(|t| crate::effective::parse_template(name, t))
            {
                Some(Ok(_)) => {
                    templates.insert(name.clone(), text.clone());
                }
                Some(Err(why)) => notes.add(
                    &path,
                    text.clone(),
                    format!("meshop cannot apply this template: {why}"),
                ),
                None => notes.add(&path, text.clone(), "a template is a string of YAML"),
            }
        }
    }
    if let Some(defaults) = take(&mut src, "values.sidecarInjectorWebhook.defaultTemplates") {
        let names: Option<Vec<&str>> = defaults
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect());
        let usable = names.as_ref().is_some_and(|names| {
            names.iter().any(|n| ["sidecar", "gateway"].contains(n))
                && names
                    .iter()
                    .all(|n| ["sidecar", "gateway"].contains(n) || templates.contains_key(*n))
        });
        match usable {
            true => {
                injection.insert("defaultTemplates".into(), defaults);
            }
            false => notes.add(
                "spec.values.sidecarInjectorWebhook.defaultTemplates",
                defaults,
                "meshop's default templates name sidecar or gateway, and templates it carries",
            ),
        }
    }
    if !templates.is_empty() {
        injection.insert("templates".into(), Value::Object(templates));
    }
    // The pre-1.8 spelling of the CNI component.
    if let Some(cni) = take(&mut src, "values.istio_cni.enabled")
        && as_bool(&cni) == Some(true)
    {
        injection.insert("trafficCapture".into(), json!("cni"));
        components
            .entry("cni")
            .or_insert_with(|| json!({ "enabled": true }));
    }

    // mTLS is PeerAuthentication in Istio, not an install setting; the removed global.mtls value
    // still shows in old files.
    if let Some(mtls) = take(&mut src, "values.global.mtls.enabled") {
        mesh.insert(
            "mtlsMode".into(),
            json!(if as_bool(&mtls) == Some(true) {
                "STRICT"
            } else {
                "PERMISSIVE"
            }),
        );
    }

    if let Some(tracer) = take(&mut src, "values.global.proxy.tracer") {
        // Istio's injection template reads it only for Datadog (the apm.datadoghq.com/env
        // annotation); tracers are meshConfig.extensionProviders and Telemetry resources now.
        if tracer.as_str() == Some("datadog") {
            notes.add(
                "spec.values.global.proxy.tracer",
                tracer,
                "meshop's injector does not read the apm.datadoghq.com/env annotation; configure Datadog as a meshConfig.extensionProviders tracer",
            );
        } else {
            without_effect.add(
                "spec.values.global.proxy.tracer",
                tracer,
                "Istio's templates read it only for datadog; tracing is meshConfig.extensionProviders",
            );
        }
    }

    // Everything left is not carried.
    let mut rest = Vec::new();
    leaves("spec", &src, &mut rest);
    for (path, value) in rest {
        let r = reason(&path);
        notes.add(&path, value, r);
    }

    check_tolerations(&mut components)?;
    ambient_pairs(meshop_profile == "ambient", &mut components, &mut notes);
    if !addons.is_empty() {
        components.insert("addons".into(), Value::Object(addons));
    }
    if !proxy.is_empty() {
        injection.insert("proxy".into(), Value::Object(proxy));
    }
    for (key, map) in [
        ("components", components),
        ("meshConfig", mesh),
        ("injection", injection),
        ("global", global),
    ] {
        if !map.is_empty() {
            spec.insert(key.into(), Value::Object(map));
        }
    }
    let owner = Owner {
        name: name.clone(),
        uid: None,
    };
    let mut spec = Value::Object(spec);
    if !pending.is_empty() {
        carry_overlays(&mut spec, &owner, pending, &mut notes)?;
    }
    // An overlay that does not apply to meshop's objects would stall the MeshInstall: it is
    // taken out and listed, with the reason, until the rest renders.
    let spec = loop {
        let spec_now: MeshInstallSpec = serde_json::from_value(spec.clone())
            .context("the converted spec is not a valid MeshInstall spec")?;
        // The reconciler would stall on what does not resolve: say so now.
        let install = Installation::resolve(owner.clone(), &spec_now)
            .context("the converted MeshInstall would be refused")?;
        match crate::render::render(&install) {
            Ok(_) => break spec_now,
            Err(e) => match take_overlay(&mut spec, &e.path, e.index) {
                Some(overlay) => notes.add(
                    &format!("{}.overlays[{}]", e.path, e.index),
                    overlay,
                    format!("does not apply to meshop's {}: {}", e.target, e.reason),
                ),
                None => return Err(e).context("the converted MeshInstall does not render"),
            },
        }
    };
    let mut mesh_install = MeshInstall::new(&name, spec);
    mesh_install.metadata.name = Some(name);
    notes.0.sort_by(|a, b| a.path.cmp(&b.path));
    without_effect.0.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Conversion {
        mesh_install,
        not_carried: notes.0,
        without_effect: without_effect.0,
    })
}

/// ztunnel and the CNI agent's ambient mode go together (ztunnel gets its pods from the agent,
/// the agent hands them to ztunnel): istioctl renders either alone, which captures nothing or
/// sends captured pods' traffic nowhere; meshop refuses that pair, so the one that is on alone
/// is switched off and listed.
fn ambient_pairs(profile: bool, components: &mut Map<String, Value>, notes: &mut Notes) {
    let flag = |c: &Map<String, Value>, pointer: &str| -> Option<bool> {
        Value::Object(c.clone())
            .pointer(pointer)
            .and_then(Value::as_bool)
    };
    let ztunnel = flag(components, "/ztunnel/enabled").unwrap_or(profile);
    let agent = flag(components, "/cni/enabled").unwrap_or(profile);
    let ambient = agent && flag(components, "/cni/ambient/enabled").unwrap_or(profile);
    if ztunnel && !ambient {
        object_mut(components, "ztunnel").insert("enabled".into(), json!(false));
        notes.add(
            "spec.components.ztunnel.enabled",
            json!(true),
            "ztunnel without the CNI agent in ambient mode (components.cni with values.cni.ambient.enabled) is given no pods: meshop refuses that pair, so ztunnel is left out",
        );
    } else if ambient && !ztunnel {
        let cni = object_mut(components, "cni");
        object_mut(cni, "ambient").insert("enabled".into(), json!(false));
        notes.add(
            "spec.values.cni.ambient.enabled",
            json!(true),
            "the CNI agent in ambient mode without ztunnel would capture pods for a node proxy that does not run: meshop refuses that pair, so ambient mode is left out",
        );
    }
}

/// Kubernetes reads tolerations strictly (kubectl refuses an unknown field), and so does
/// istioctl: a toleration with a field Kubernetes does not have is an error, not a setting
/// to drop quietly.
fn check_tolerations(components: &mut Map<String, Value>) -> Result<()> {
    const FIELDS: [&str; 5] = ["key", "operator", "value", "effect", "tolerationSeconds"];
    let mut bad = None;
    let mut check = |c: &mut Map<String, Value>| {
        for t in c
            .get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(field) = t
                .as_object()
                .and_then(|m| m.keys().find(|k| !FIELDS.contains(&k.as_str())))
            {
                bad.get_or_insert_with(|| field.clone());
            }
        }
    };
    for_each_workload(components, &mut check);
    for key in ["cni", "ztunnel"] {
        if let Some(Value::Object(c)) = components.get_mut(key) {
            check(c);
        }
    }
    match bad {
        Some(field) => bail!(
            "a toleration has the field {field:?}, which Kubernetes' Toleration does not have (key, operator, value, effect, tolerationSeconds)"
        ),
        None => Ok(()),
    }
}

/// Calls `f` on istiod's and every gateway's settings in the converted components.
fn for_each_workload(
    components: &mut Map<String, Value>,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    for key in ["istiod", "ingressGateway", "egressGateway"] {
        if let Some(Value::Object(c)) = components.get_mut(key) {
            f(c);
        }
    }
    for key in ["ingressGateways", "egressGateways"] {
        if let Some(Value::Array(list)) = components.get_mut(key) {
            for g in list.iter_mut().filter_map(Value::as_object_mut) {
                f(g);
            }
        }
    }
}

/// Resolves the IstioOperator's path overlays against what meshop renders for the converted
/// spec and carries each as a `jsonPatch` overlay on the component that renders the object.
fn carry_overlays(
    spec: &mut Value,
    owner: &Owner,
    pending: Vec<PendingOverlay>,
    notes: &mut Notes,
) -> Result<()> {
    let draft: MeshInstallSpec = serde_json::from_value(spec.clone())
        .context("the converted spec is not a valid MeshInstall spec")?;
    let install = Installation::resolve(owner.clone(), &draft)
        .context("the converted MeshInstall would be refused")?;
    let rendered =
        crate::render::render(&install).context("the converted MeshInstall does not render")?;
    for p in pending {
        let kind = p
            .overlay
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = p
            .overlay
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(object) = rendered.iter().find(|r| {
            r.resource.kind == kind && r.object.metadata.name.as_deref() == Some(name.as_str())
        }) else {
            notes.add(
                &p.path,
                p.overlay,
                format!("meshop renders no {kind} {name}: Istio's chart object has no counterpart in meshop's install"),
            );
            continue;
        };
        let at = match object.component {
            crate::render::ComponentId::Istiod => "/components/istiod".to_string(),
            crate::render::ComponentId::Base => "/components/base".to_string(),
            crate::render::ComponentId::Cni => "/components/cni".to_string(),
            crate::render::ComponentId::Ztunnel => "/components/ztunnel".to_string(),
            crate::render::ComponentId::IngressGateway
            | crate::render::ComponentId::EgressGateway => p.at.clone(),
            other => {
                notes.add(
                    &p.path,
                    p.overlay,
                    format!("{kind} {name} belongs to meshop's {other} component, which takes no overlays"),
                );
                continue;
            }
        };
        let value = serde_json::to_value(&object.object).unwrap_or_default();
        let mut ops = Vec::new();
        let patches = p
            .overlay
            .get("patches")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, patch) in patches.iter().enumerate() {
            let path = patch.get("path").and_then(Value::as_str).unwrap_or("");
            match paths::json_patch(&value, path, patch.get("value")) {
                Ok(op) => ops.push(op),
                Err(why) => notes.add(&format!("{}.patches[{i}]", p.path), patch.clone(), why),
            }
        }
        if ops.is_empty() {
            continue;
        }
        let Some(component) = pointer_object(spec, &at) else {
            notes.add(
                &p.path,
                p.overlay,
                "the component it patches is not in the converted spec",
            );
            continue;
        };
        let list = component.entry("overlays").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!({ "kind": kind, "name": name, "jsonPatch": ops }));
        }
    }
    Ok(())
}

/// Removes overlay `index` of the component at `path` (as an overlay error names it, such as
/// `components.istiod` or `components.ingressGateways[internal]`) from the spec.
fn take_overlay(spec: &mut Value, path: &str, index: usize) -> Option<Value> {
    let mut node = spec;
    for step in path.split('.') {
        node = match step.split_once('[') {
            Some((list, name)) => {
                let name = name.strip_suffix(']')?;
                node.get_mut(list)?
                    .as_array_mut()?
                    .iter_mut()
                    .find(|g| g.get("name").and_then(Value::as_str) == Some(name))?
            }
            None => node.get_mut(step)?,
        };
    }
    let list = node.get_mut("overlays")?.as_array_mut()?;
    (index < list.len()).then(|| list.remove(index))
}

/// The object at a JSON pointer of the spec, created (as `{}`) along the way.
fn pointer_object<'a>(spec: &'a mut Value, pointer: &str) -> Option<&'a mut Map<String, Value>> {
    let mut node = spec;
    for token in pointer.split('/').skip(1) {
        node = match node {
            Value::Object(m) => m.entry(token).or_insert_with(|| json!({})),
            Value::Array(a) => a.get_mut(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    node.as_object_mut()
}

/// The text output: what was not carried as YAML comments, then the MeshInstall.
pub fn text(c: &Conversion) -> Result<String> {
    let mut out = String::new();
    if c.not_carried.is_empty() {
        out.push_str("# Every setting of the IstioOperator was carried.\n");
    } else {
        out.push_str(&format!(
            "# Not carried ({} setting(s)):\n",
            c.not_carried.len()
        ));
        for n in &c.not_carried {
            let value = serde_json::to_string(&n.value).unwrap_or_default();
            let value: String = if value.chars().count() > 60 {
                value.chars().take(60).collect::<String>() + "…"
            } else {
                value
            };
            out.push_str(&format!("#   {} = {value}\n#     {}\n", n.path, n.reason));
        }
    }
    if !c.without_effect.is_empty() {
        out.push_str(&format!(
            "# Without effect in Istio too ({} setting(s)):\n",
            c.without_effect.len()
        ));
        for n in &c.without_effect {
            out.push_str(&format!("#   {}\n#     {}\n", n.path, n.reason));
        }
    }
    out.push_str(&crate::yaml::to_string(&c.mesh_install)?);
    Ok(out)
}

/// Converts the documents of the given files (name, text): each IstioOperator makes one
/// MeshInstall; Helm values files together make one.
pub fn convert_files(
    files: &[(String, String)],
    name: Option<&str>,
    chart: Option<helm::Chart>,
) -> Result<Vec<Conversion>> {
    let mut operators = Vec::new();
    let mut helm_spec: Option<Value> = None;
    for (file, text) in files {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let doc = Value::deserialize(doc)
                .with_context(|| format!("{file}: document {} is not YAML", i + 1))?;
            if doc.is_null() {
                continue;
            }
            if doc.get("kind").is_some() || doc.get("apiVersion").is_some() {
                operators.push((format!("{file} (document {})", i + 1), doc));
                continue;
            }
            let chart = match chart {
                Some(c) => c,
                None => helm::Chart::detect(&doc).with_context(|| file.to_string())?,
            };
            let spec = helm::to_operator_spec(chart, doc);
            match &mut helm_spec {
                Some(into) => helm::merge(into, spec),
                None => helm_spec = Some(spec),
            }
        }
    }
    if helm_spec.is_some() && !operators.is_empty() {
        bail!(
            "give IstioOperators or Helm values files, not both: a Helm-installed mesh is converted from its values files together"
        );
    }
    if let Some(mut spec) = helm_spec {
        // A Helm-installed mesh has what its releases install: no profile's gateways or addons.
        // Its charts given `profile: ambient` are an ambient mesh (istiod, the CNI agent in
        // ambient mode and ztunnel, which ambient needs together).
        let ambient = spec.pointer("/values/profile").and_then(Value::as_str) == Some("ambient");
        if let Some(m) = spec.as_object_mut() {
            m.entry("profile")
                .or_insert(json!(if ambient { "ambient" } else { "minimal" }));
        }
        let doc = json!({ "apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
                          "spec": spec });
        return Ok(vec![convert(&doc, Some(name.unwrap_or("mesh")))?]);
    }
    if operators.is_empty() {
        bail!("no IstioOperator or Helm values found");
    }
    let several = operators.len() > 1;
    let mut out: Vec<Conversion> = Vec::new();
    for (at, doc) in operators {
        let mut conversion = convert(&doc, name).with_context(|| at.clone())?;
        // Names must differ for the MeshInstalls to live side by side.
        if several {
            let base = conversion
                .mesh_install
                .metadata
                .name
                .clone()
                .unwrap_or_default();
            let mut candidate = base.clone();
            let mut n = 2;
            while out
                .iter()
                .any(|c| c.mesh_install.metadata.name.as_deref() == Some(&candidate))
            {
                candidate = format!("{base}-{n}");
                n += 1;
            }
            conversion.mesh_install.metadata.name = Some(candidate);
        }
        out.push(conversion);
    }
    Ok(out)
}

pub fn run(args: &ConvertArgs) -> Result<Outcome> {
    let mut files = Vec::new();
    for file in &args.files {
        let text = if file == std::path::Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        } else {
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
        };
        files.push((file.display().to_string(), text));
    }
    let conversions = convert_files(&files, args.name.as_deref(), args.chart)?;
    let encoded = match conversions.as_slice() {
        [one] => args.output.encode(one)?,
        many => args.output.encode(&many)?,
    };
    let stdout = match encoded {
        Some(encoded) => encoded,
        None => conversions
            .iter()
            .map(text)
            .collect::<Result<Vec<_>>>()?
            .join("---\n"),
    };
    Ok(stdout.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(yaml: &str) -> Conversion {
        convert(&serde_yaml::from_str(yaml).unwrap(), None).unwrap()
    }

    fn paths(c: &Conversion) -> Vec<&str> {
        c.not_carried.iter().map(|n| n.path.as_str()).collect()
    }

    #[test]
    fn taking_a_path_prunes_emptied_parents() {
        let mut v = json!({ "a": { "b": { "c": 1 } }, "d": 2 });
        assert_eq!(take(&mut v, "a.b.c"), Some(json!(1)));
        assert_eq!(v, json!({ "d": 2 }));
        assert_eq!(take(&mut v, "x.y"), None);
    }

    #[test]
    fn the_default_profile_is_minimal_with_an_ingress_gateway() {
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\nspec: {}\n",
        );
        let spec = &c.mesh_install.spec;
        assert_eq!(spec.profile, crate::api::Profile::Minimal);
        let ingress = spec.components.as_ref().unwrap().ingress_gateway.as_ref();
        assert_eq!(ingress.unwrap().enabled, Some(true));
        assert!(c.not_carried.is_empty());
        assert_eq!(c.mesh_install.metadata.name.as_deref(), Some("x"));
    }

    #[test]
    fn anything_not_an_istiooperator_is_refused() {
        let err = convert(&json!({ "apiVersion": "v1", "kind": "Pod" }), None).unwrap_err();
        assert!(err.to_string().contains("not an IstioOperator"), "{err}");
    }

    #[test]
    fn an_end_of_life_tag_is_left_out_with_why() {
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {tag: 1.20.1, profile: demo}\n",
        );
        assert_eq!(c.mesh_install.spec.version, None);
        assert_eq!(paths(&c), vec!["spec.tag"]);
        assert!(c.not_carried[0].reason.contains("newest supported"));
    }

    #[test]
    fn an_unquoted_minor_tag_is_not_guessed() {
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {tag: 1.30, profile: minimal}\n",
        );
        assert_eq!(c.mesh_install.spec.version, None);
        assert!(c.not_carried[0].reason.contains("quote the tag"));
    }

    #[test]
    fn injection_templates_are_carried_unless_meshop_cannot_apply_them() {
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    sidecarInjectorWebhook:\n      defaultTemplates: [sidecar, creds]\n      templates:\n        creds: |\n          spec:\n            volumes:\n            - name: creds\n              secret: {secretName: s}\n        go: |\n          metadata:\n            labels: {app: '{{ .Name }}'}\n        sidecar: |\n          spec: {}\n",
        );
        let injection = c.mesh_install.spec.injection.clone().unwrap();
        assert_eq!(
            injection.default_templates,
            Some(vec!["sidecar".to_string(), "creds".to_string()])
        );
        let templates = injection.templates.unwrap();
        assert_eq!(templates.keys().collect::<Vec<_>>(), ["creds"]);
        assert!(templates["creds"].contains("secretName: s"));
        let lost: Vec<_> = c
            .not_carried
            .iter()
            .map(|n| (n.path.as_str(), n.reason.as_str()))
            .collect();
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert!(
            lost.iter().any(
                |(p, r)| p.ends_with("templates.go") && r.contains("does not run Go templates")
            ),
            "{lost:?}"
        );
        assert!(
            lost.iter()
                .any(|(p, r)| p.ends_with("templates.sidecar") && r.contains("built-in")),
            "{lost:?}"
        );
        // Default templates naming a template that is not carried are not carried either.
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    sidecarInjectorWebhook:\n      defaultTemplates: [sidecar, go]\n      templates:\n        go: \"{{ .x }}\"\n",
        );
        assert!(
            c.mesh_install
                .spec
                .injection
                .is_none_or(|i| i.default_templates.is_none())
        );
        assert!(
            c.not_carried
                .iter()
                .any(|n| n.path.ends_with("defaultTemplates"))
        );
    }

    #[test]
    fn reasons_match_the_longest_prefix() {
        assert!(reason("spec.components.cni.namespace").contains("control-plane namespace"));
        assert!(reason("spec.components.pilot.k8s.service.x").contains("istiod's Service"));
        assert!(reason("spec.values.global.foo").contains("chart value"));
        assert_eq!(
            reason("spec.somethingNew"),
            "meshop has no equivalent setting"
        );
    }

    fn files(docs: &[&str]) -> Vec<Conversion> {
        let files: Vec<(String, String)> = docs
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("f{i}.yaml"), t.to_string()))
            .collect();
        convert_files(&files, None, None).unwrap()
    }

    #[test]
    fn unvalidated_values_are_chart_values_or_without_effect() {
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: minimal\n  unvalidatedValues:\n    myCustomKey: x\n    pilot: {replicaCount: 3}\n  values: {global: {proxy: {tracer: zipkin}}}\n",
        );
        assert!(c.not_carried.is_empty(), "{:?}", c.not_carried);
        let istiod = c
            .mesh_install
            .spec
            .components
            .as_ref()
            .unwrap()
            .istiod
            .as_ref();
        assert_eq!(istiod.unwrap().replicas, Some(3));
        let paths: Vec<&str> = c.without_effect.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "spec.unvalidatedValues.myCustomKey",
                "spec.values.global.proxy.tracer"
            ]
        );
    }

    #[test]
    fn every_istiooperator_of_a_file_is_a_meshinstall_of_its_own_name() {
        let out = files(&[
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {profile: minimal}\n---\napiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {profile: demo}\n",
        ]);
        let names: Vec<_> = out
            .iter()
            .map(|c| c.mesh_install.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["mesh", "mesh-2"]);
        assert_eq!(out[1].mesh_install.spec.profile, crate::api::Profile::Demo);
    }

    #[test]
    fn helm_values_files_together_make_one_meshinstall() {
        let out = files(&[
            "pilot: {replicaCount: 2, env: {PILOT_ENABLE_ALPHA_GATEWAY_API: 'true'}}\nmeshConfig: {accessLogFile: /dev/stdout}\nglobal: {meshID: m1}\n",
            "name: public\nservice: {type: LoadBalancer}\nreplicaCount: 3\n",
        ]);
        assert_eq!(out.len(), 1);
        let s = serde_json::to_value(&out[0].mesh_install.spec).unwrap();
        assert_eq!(s["profile"], "minimal");
        assert_eq!(s["components"]["istiod"]["replicas"], 2);
        assert_eq!(
            s["components"]["istiod"]["env"][0]["name"],
            "PILOT_ENABLE_ALPHA_GATEWAY_API"
        );
        assert_eq!(s["meshConfig"]["accessLogFile"], "/dev/stdout");
        assert_eq!(s["global"]["meshID"], "m1");
        assert_eq!(s["components"]["ingressGateways"][0]["name"], "public");
        assert_eq!(s["components"]["ingressGateways"][0]["replicas"], 3);
        assert!(out[0].not_carried.is_empty(), "{:?}", out[0].not_carried);
    }

    #[test]
    fn remote_control_planes_are_refused_with_why() {
        for spec in [
            "{profile: remote}",
            "{components: {istiodRemote: {enabled: true}}}",
            "{values: {global: {remotePilotAddress: 10.0.0.1}}}",
        ] {
            let err = convert(
                &serde_yaml::from_str(&format!(
                    "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {spec}\n"
                ))
                .unwrap(),
                None,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("remote or external control plane"),
                "{spec}: {err}"
            );
        }
    }

    #[test]
    fn ambient_settings_are_carried_into_ztunnel_and_the_cni_agents_ambient_mode() {
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: ambient\n  components:\n    ztunnel:\n      enabled: true\n      k8s:\n        resources: {limits: {cpu: 200m}}\n        tolerations: [{key: k, operator: Exists}]\n        priorityClassName: p\n  values:\n    cni:\n      ambient: {dnsCapture: false, ipv6: 'false', reconcileIptablesOnStartup: true}\n      podAnnotations: {a: b}\n    ztunnel:\n      podLabels: {team: x}\n      env: {RUST_MIN_STACK: '1'}\n      logAsJson: true\n",
        );
        let s = serde_json::to_value(&c.mesh_install.spec).unwrap();
        assert_eq!(s["profile"], "ambient");
        let z = &s["components"]["ztunnel"];
        assert_eq!(z["enabled"], true);
        assert_eq!(z["resources"]["limits"]["cpu"], "200m");
        assert_eq!(z["tolerations"][0]["key"], "k");
        assert_eq!(z["priorityClassName"], "p");
        assert_eq!(z["podLabels"]["team"], "x");
        assert_eq!(
            z["env"],
            json!([{ "name": "RUST_MIN_STACK", "value": "1" }])
        );
        let cni = &s["components"]["cni"];
        assert_eq!(
            cni["ambient"],
            json!({ "dnsCapture": false, "ipv6": false, "reconcileIptablesOnStartup": true })
        );
        assert_eq!(cni["podAnnotations"]["a"], "b");
        // What meshop has no setting for is listed, nothing else.
        assert_eq!(paths(&c), ["spec.values.ztunnel.logAsJson"]);
    }

    #[test]
    fn ztunnel_and_ambient_mode_come_as_a_pair_or_not_at_all() {
        // ztunnel on, the CNI agent not in ambient mode: ztunnel would be handed no pods.
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    cni: {enabled: true}\n    ztunnel: {enabled: true, k8s: {replicaCount: 2}}\n",
        );
        let s = serde_json::to_value(&c.mesh_install.spec).unwrap();
        assert_eq!(s["components"]["ztunnel"]["enabled"], false);
        assert_eq!(
            paths(&c),
            [
                "spec.components.ztunnel.enabled",
                "spec.components.ztunnel.k8s.replicas"
            ]
        );
        // Ambient mode with ztunnel switched off: ambient mode goes.
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: ambient\n  components:\n    ztunnel: {enabled: false}\n",
        );
        let s = serde_json::to_value(&c.mesh_install.spec).unwrap();
        assert_eq!(s["components"]["cni"]["ambient"]["enabled"], false);
        assert_eq!(paths(&c), ["spec.values.cni.ambient.enabled"]);
        // The chart value `profile: ambient` alone is the ambient profile.
        let c = conv(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values: {profile: ambient}\n",
        );
        assert_eq!(
            serde_json::to_value(&c.mesh_install.spec).unwrap()["profile"],
            "ambient"
        );
        assert!(c.not_carried.is_empty(), "{:?}", c.not_carried);
    }

    #[test]
    fn helm_values_of_an_ambient_install_make_one_ambient_meshinstall() {
        let out = files(&[
            "profile: ambient\npilot: {replicaCount: 2}\n",
            "profile: ambient\ncni: {ambient: {dnsCapture: false}}\n",
            "profile: ambient\nlogLevel: info\nresources: {requests: {cpu: 50m}}\n",
        ]);
        assert_eq!(out.len(), 1);
        let s = serde_json::to_value(&out[0].mesh_install.spec).unwrap();
        assert_eq!(s["profile"], "ambient");
        assert_eq!(s["components"]["ztunnel"]["enabled"], true);
        assert_eq!(
            s["components"]["ztunnel"]["resources"]["requests"]["cpu"],
            "50m"
        );
        assert_eq!(s["components"]["cni"]["ambient"]["dnsCapture"], false);
        assert_eq!(paths(&out[0]), ["spec.values.ztunnel.logLevel"]);
    }
}
