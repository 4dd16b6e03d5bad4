//! `meshop convert -f istiooperator.yaml`: an `install.istio.io/v1alpha1` IstioOperator in, the
//! equivalent MeshInstall out, and every setting that could not be carried, with why.
//!
//! Pure: [`convert`] takes the parsed document. It takes what it carries out of a copy of the
//! IstioOperator's spec as it goes; whatever is left is, leaf by leaf, "not carried", so nothing
//! is dropped silently. The result is checked by resolving it as the reconciler would.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::Outcome;
use super::cluster::Output;
use crate::api::{MeshInstall, MeshInstallSpec};
use crate::effective::{Installation, Owner};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The IstioOperator YAML ('-' for standard input).
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// The MeshInstall's name (default: the IstioOperator's).
    #[arg(long)]
    pub name: Option<String>,
    /// Output format: text is the MeshInstall as YAML with what was not carried as comments
    /// above it (still valid YAML for kubectl); json and yaml give both as data.
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
}

/// Why a setting is left behind, by path prefix (the longest match wins); anything else has no
/// equivalent in meshop.
const REASONS: &[(&str, &str)] = &[
    (
        "spec.components.ztunnel",
        "ambient mode (ztunnel) is not built in meshop yet",
    ),
    (
        "spec.components.istiodRemote",
        "multi-cluster (remote istiod) is not built in meshop yet",
    ),
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
        "free-form chart values have no meaning outside Istio's charts",
    ),
    (
        "spec.values",
        "a Helm chart value meshop has no setting for",
    ),
    (
        "spec.meshConfig",
        "a mesh-wide setting meshop does not expose (spec.meshConfig has mtlsMode, accessLogging, traceSampling, trustDomain, outboundTrafficPolicy)",
    ),
    (
        ".k8s.podAnnotations",
        "meshop sets its components' pod annotations itself",
    ),
    (
        ".k8s.priorityClassName",
        "meshop does not set priority classes on components",
    ),
    (
        ".k8s.strategy",
        "meshop keeps its own rollout strategy (no outage during upgrades)",
    ),
    (
        ".k8s.readinessProbe",
        "meshop sets the probes Istio's binaries need",
    ),
    (
        ".k8s.securityContext",
        "meshop runs every component hardened and does not loosen it",
    ),
    (
        ".k8s.overlays",
        "patches of rendered objects are not supported: meshop would undo them on the next pass",
    ),
    (".k8s.volumes", "extra volumes are not supported"),
    (".k8s.volumeMounts", "extra volumes are not supported"),
    (
        ".k8s.imagePullPolicy",
        "meshop uses the image pull policy Kubernetes defaults to for tagged images",
    ),
    (
        ".k8s.hpaSpec",
        "only CPU autoscaling (min, max, target utilisation) is carried",
    ),
    (
        ".k8s.service",
        "only the Service's type and ports are carried",
    ),
    (".hub", "meshop uses one hub for every component (spec.hub)"),
    (
        ".tag",
        "meshop runs one version for every component (spec.version)",
    ),
    (
        ".namespace",
        "meshop runs every component in the control-plane namespace (spec.namespace)",
    ),
    (
        ".label",
        "meshop labels its gateways itself (app=istio-ingressgateway / istio-egressgateway)",
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
fn component(src: &mut Value, path: &str, gateway: bool, notes: &mut Notes) -> Map<String, Value> {
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
            take(&mut hpa, "metrics");
        }
        // meshop points the autoscaler at its own Deployment.
        take(&mut hpa, "scaleTargetRef");
        let mut rest = Vec::new();
        leaves(&format!("{path}.k8s.hpaSpec"), &hpa, &mut rest);
        for (p, v) in rest {
            let r = reason(&p);
            notes.add(&p, v, r);
        }
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

/// Carries a gateway list: the gateway named `istio-<kind>gateway` (or else the first) becomes
/// meshop's one gateway of that kind; the others are not carried.
fn gateways(
    list: Option<Value>,
    kind: &str,
    path: &str,
    notes: &mut Notes,
) -> Option<Map<String, Value>> {
    let mut list = match list? {
        Value::Array(items) => items,
        other => {
            notes.add(path, other, "not a list of gateways");
            return None;
        }
    };
    let standard = format!("istio-{kind}gateway");
    let chosen = list
        .iter()
        .position(|g| g.get("name").and_then(Value::as_str) == Some(&standard))
        .unwrap_or(0);
    let mut out = None;
    for (i, mut gateway) in list.drain(..).enumerate() {
        let name = gateway
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let at = format!("{path}[{name}]");
        if i != chosen {
            notes.add(
                &at,
                gateway,
                format!("meshop runs one {kind} gateway ({standard}); add others as your own Deployments"),
            );
            continue;
        }
        take(&mut gateway, "name");
        if name != standard && !name.is_empty() {
            notes.add(
                &format!("{at}.name"),
                json!(name),
                format!("meshop names its {kind} gateway {standard}"),
            );
        }
        let converted = component(&mut gateway, &at, true, notes);
        let mut rest = Vec::new();
        leaves(&at, &gateway, &mut rest);
        for (p, v) in rest {
            let r = reason(&p);
            notes.add(&p, v, r);
        }
        out = Some(converted);
    }
    out
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
    let mut src = doc.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut notes = Notes(Vec::new());
    let mut spec = Map::new();
    let mut components = Map::new();
    let mut addons = Map::new();
    let mut mesh = Map::new();
    let mut injection = Map::new();
    let mut proxy = Map::new();

    // Profile: Istio's default (istiod and an ingress gateway) is meshop's minimal plus the
    // ingress gateway; preview and stable are variants of default.
    let profile = take(&mut src, "profile")
        .and_then(|p| p.as_str().map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let meshop_profile = match profile.as_str() {
        "demo" => "demo",
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
                match other {
                    "ambient" => "ambient mode is not built in meshop yet; converted as minimal",
                    "remote" => "multi-cluster is not built in meshop yet; converted as minimal",
                    _ => "not a profile meshop knows; converted as minimal",
                },
            );
            "minimal"
        }
    };
    spec.insert("profile".into(), json!(meshop_profile));
    let hub = take(&mut src, "hub").or_else(|| take(&mut src, "values.global.hub"));
    if let Some(hub) = hub {
        spec.insert("hub".into(), hub);
    }
    let tag = take(&mut src, "tag").or_else(|| take(&mut src, "values.global.tag"));
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
                }
                Err(e) => notes.add(
                    "spec.tag",
                    tag,
                    format!("{e}; left out, so meshop installs its newest supported release"),
                ),
            }
        }
    }
    let namespace =
        take(&mut src, "namespace").or_else(|| take(&mut src, "values.global.istioNamespace"));
    if let Some(ns) = namespace {
        spec.insert("namespace".into(), ns);
    }
    let revision = take(&mut src, "revision").or_else(|| take(&mut src, "values.revision"));
    if let Some(rev) = revision.filter(|r| r.as_str().is_some_and(|s| !s.is_empty())) {
        spec.insert("revision".into(), rev);
    }

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
    if let Some(mut pilot) = take(&mut src, "components.pilot") {
        let c = component(&mut pilot, "spec.components.pilot", false, &mut notes);
        components.insert("istiod".into(), Value::Object(c));
        let mut rest = Vec::new();
        leaves("spec.components.pilot", &pilot, &mut rest);
        for (p, v) in rest {
            let r = reason(&p);
            notes.add(&p, v, r);
        }
    }
    if let Some(mut cni) = take(&mut src, "components.cni") {
        let c = component(&mut cni, "spec.components.cni", false, &mut notes);
        if c.get("enabled").and_then(Value::as_bool) == Some(true) {
            injection.insert("trafficCapture".into(), json!("cni"));
        }
        let mut c = c;
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
        components.insert("cni".into(), Value::Object(c));
        let mut rest = Vec::new();
        leaves("spec.components.cni", &cni, &mut rest);
        for (p, v) in rest {
            let r = reason(&p);
            notes.add(&p, v, r);
        }
    }
    let ingress = take(&mut src, "components.ingressGateways");
    if let Some(mut g) = gateways(
        ingress,
        "ingress",
        "spec.components.ingressGateways",
        &mut notes,
    ) {
        // Istio's default profile enables its ingress gateway; the list entry decides now.
        if let Some(Value::Object(existing)) = components.remove("ingressGateway") {
            for (k, v) in existing {
                g.entry(k).or_insert(v);
            }
        }
        components.insert("ingressGateway".into(), Value::Object(g));
    }
    let egress = take(&mut src, "components.egressGateways");
    if let Some(g) = gateways(
        egress,
        "egress",
        "spec.components.egressGateways",
        &mut notes,
    ) {
        components.insert("egressGateway".into(), Value::Object(g));
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

    // meshConfig.
    if let Some(file) = take(&mut src, "meshConfig.accessLogFile") {
        mesh.insert(
            "accessLogging".into(),
            json!(file.as_str().is_some_and(|f| !f.is_empty())),
        );
    }
    if let Some(mode) = take(&mut src, "meshConfig.outboundTrafficPolicy.mode") {
        mesh.insert("outboundTrafficPolicy".into(), mode);
    }
    if let Some(td) = take(&mut src, "meshConfig.trustDomain") {
        mesh.insert("trustDomain".into(), td);
    }
    let sampling = take(&mut src, "meshConfig.defaultConfig.tracing.sampling")
        .or_else(|| take(&mut src, "values.pilot.traceSampling"));
    if let Some(sampling) = sampling {
        mesh.insert("traceSampling".into(), sampling);
    }
    if let Some(c) = take(&mut src, "meshConfig.defaultConfig.concurrency")
        .or_else(|| take(&mut src, "values.global.proxy.concurrency"))
    {
        proxy.insert("concurrency".into(), c);
    }
    if let Some(hold) = take(
        &mut src,
        "meshConfig.defaultConfig.holdApplicationUntilProxyStarts",
    )
    .or_else(|| {
        take(
            &mut src,
            "values.global.proxy.holdApplicationUntilProxyStarts",
        )
    }) {
        proxy.insert("holdApplicationUntilProxyStarts".into(), hold);
    }

    // Values that map to meshop's injection settings.
    if let Some(r) = take(&mut src, "values.global.proxy.resources") {
        proxy.insert("resources".into(), r);
    }
    if let Some(level) = take(&mut src, "values.global.proxy.logLevel") {
        proxy.insert("logLevel".into(), level);
    }
    if let Some(enabled) = take(&mut src, "values.sidecarInjectorWebhook.enabled") {
        injection.insert("enabled".into(), json!(as_bool(&enabled)));
    }
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
    // The pre-1.8 spelling of the CNI component.
    if let Some(cni) = take(&mut src, "values.istio_cni.enabled")
        && as_bool(&cni) == Some(true)
    {
        injection.insert("trafficCapture".into(), json!("cni"));
        components
            .entry("cni")
            .or_insert_with(|| json!({ "enabled": true }));
    }
    // Istio's HPA values for istiod (the chart's, set by older files instead of k8s.hpaSpec).
    let mut pilot_autoscale = Map::new();
    if let Some(on) = take(&mut src, "values.pilot.autoscaleEnabled") {
        pilot_autoscale.insert("enabled".into(), json!(as_bool(&on)));
    }
    if let Some(min) = take(&mut src, "values.pilot.autoscaleMin") {
        pilot_autoscale.insert("minReplicas".into(), min);
    }
    if let Some(max) = take(&mut src, "values.pilot.autoscaleMax") {
        pilot_autoscale.insert("maxReplicas".into(), max);
    }
    if !pilot_autoscale.is_empty() {
        let istiod = components
            .entry("istiod")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .context("istiod is an object")?;
        istiod
            .entry("autoscale")
            .or_insert(Value::Object(pilot_autoscale));
    }
    if let Some(n) = take(&mut src, "values.pilot.replicaCount") {
        let istiod = components
            .entry("istiod")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .context("istiod is an object")?;
        istiod.entry("replicas").or_insert(n);
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

    // Everything left is not carried.
    let mut rest = Vec::new();
    leaves("spec", &src, &mut rest);
    for (path, value) in rest {
        let r = reason(&path);
        notes.add(&path, value, r);
    }

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
    ] {
        if !map.is_empty() {
            spec.insert(key.into(), Value::Object(map));
        }
    }
    let spec: MeshInstallSpec = serde_json::from_value(Value::Object(spec))
        .context("the converted spec is not a valid MeshInstall spec")?;
    // The reconciler would stall on what does not resolve: say so now.
    Installation::resolve(
        Owner {
            name: name.clone(),
            uid: None,
        },
        &spec,
    )
    .context("the converted MeshInstall would be refused")?;
    let mut mesh_install = MeshInstall::new(&name, spec);
    mesh_install.metadata.name = Some(name);
    notes.0.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Conversion {
        mesh_install,
        not_carried: notes.0,
    })
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
    out.push_str(&crate::yaml::to_string(&c.mesh_install)?);
    Ok(out)
}

pub fn run(args: &ConvertArgs) -> Result<Outcome> {
    let text_in = if args.file == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("read {}", args.file.display()))?
    };
    let doc: Value = serde_yaml::from_str(&text_in)
        .with_context(|| format!("{} is not YAML", args.file.display()))?;
    let conversion = convert(&doc, args.name.as_deref())?;
    let stdout = match args.output.encode(&conversion)? {
        Some(encoded) => encoded,
        None => text(&conversion)?,
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
    fn reasons_match_the_longest_prefix() {
        assert!(reason("spec.components.ztunnel.enabled").contains("ambient"));
        assert!(reason("spec.components.pilot.k8s.priorityClassName").contains("priority"));
        assert!(reason("spec.values.global.logging.level").contains("chart value"));
        assert!(
            reason("spec.components.ingressGateways[x].k8s.service.externalTrafficPolicy")
                .contains("type and ports")
        );
        assert_eq!(
            reason("spec.somethingNew"),
            "meshop has no equivalent setting"
        );
    }
}
