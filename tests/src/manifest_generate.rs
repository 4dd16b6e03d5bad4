//! `istioctl manifest generate` against `meshop convert` + `meshop render`, setting by setting:
//! the machinery of `tests/tests/manifest_generate.rs`, which runs it over Istio's own
//! manifest-generate inputs.
//!
//! The two tools start from different baselines (their own images, probes, env, HPAs...), so what
//! is compared is what an input *changes*: each tool also renders the input's topology baseline
//! ([`topology`]: the same IstioOperator reduced to profile, namespace, revision and which
//! components and gateways are enabled, with their names and namespaces), and a setting is a field
//! whose value differs between the baseline's output and the input's ([`compare`]). For every
//! such field of either tool, the two tools' values for the input must be equal. Where the
//! workloads and Services run (their namespaces) is compared as is, so a workload one tool renders
//! and the other does not is a difference too.
//!
//! What [`settings`] reads of each object: Deployments and DaemonSets (replicas, strategy, pod
//! labels and annotations, scheduling, security context, and each container's image, command,
//! args, env, resources, ports, probes and security context, containers keyed by name: istiod's is
//! `discovery` in both), HorizontalPodAutoscalers, PodDisruptionBudgets, Services (type, ports,
//! annotations, labels, selector, traffic policy), the mesh config (`mesh` and `meshNetworks` of the
//! ConfigMap holding them, parsed, key by key) and NetworkPolicies, and that each object exists.
//! meshop has no injector ConfigMap: what Istio's injector values mean is compared through
//! injection instead ([`injected`]): one sample Deployment injected by `istioctl kube-inject` with
//! the generated injector config, values and mesh config, and by `meshop inject` with the
//! converted MeshInstall; the injected pod template's fields are settings like the others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::FromArgMatches;
use serde_json::{Value, json};

use crate::conformance::{
    Difference, Injectors, SETTINGS, VERSION, docs, flatten, normalise, pod_template,
};
use crate::istio::IstioBinaries;

/// Istio's manifest-generate inputs (a copy of `operator/cmd/mesh/testdata/manifest-generate/input/`).
pub fn inputs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/judges/istio-testdata/manifest-generate")
}

/// The input files, sorted by name.
pub fn inputs() -> Result<Vec<PathBuf>> {
    let dir = inputs_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
    files.sort();
    Ok(files)
}

/// Whether an IstioOperator pins the release (`spec.tag` or `spec.values.global.tag`).
pub fn pins_tag(iop: &Value) -> bool {
    !iop.pointer("/spec/tag").unwrap_or(&Value::Null).is_null()
        || !iop
            .pointer("/spec/values/global/tag")
            .unwrap_or(&Value::Null)
            .is_null()
}

/// `istioctl manifest generate -f <file>`, with `--set tag=<tag>` when given: its output, or its
/// refusal (the last line of its error output).
pub fn istioctl_generate(
    bin: &IstioBinaries,
    file: &Path,
    tag: Option<&str>,
) -> Result<std::result::Result<String, String>> {
    let mut cmd = Command::new(&bin.istioctl);
    cmd.args(["manifest", "generate", "-f"]).arg(file);
    if let Some(tag) = tag {
        cmd.args(["--set", &format!("tag={tag}")]);
    }
    let out = cmd.output().context("run istioctl manifest generate")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        return Ok(Err(last.unwrap_or("(no message)").trim().to_string()));
    }
    Ok(Ok(String::from_utf8(out.stdout)?))
}

/// `meshop convert -f <file> -o json`, parsed as its command line parses it: the conversions
/// (`{meshInstall, notCarried}`; several when the output is a list, one per IstioOperator), or
/// convert's error.
pub fn meshop_convert(file: &Path) -> std::result::Result<Vec<Value>, String> {
    let argv = [
        "meshop",
        "convert",
        "-f",
        &file.to_string_lossy(),
        "-o",
        "json",
    ];
    let matches = meshop::cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| e.to_string())?;
    let sub = matches
        .subcommand_matches("convert")
        .ok_or("no convert subcommand")?;
    let args =
        meshop::cli::convert::ConvertArgs::from_arg_matches(sub).map_err(|e| e.to_string())?;
    let out = meshop::cli::convert::run(&args).map_err(|e| format!("{e:#}"))?;
    let value: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
    Ok(match value {
        Value::Array(items) => items,
        one => vec![one],
    })
}

/// `meshop render -f <MeshInstall>` of a converted MeshInstall (written to `path` first).
pub fn meshop_render(mesh_install: &Value, path: &Path) -> Result<Vec<Value>> {
    std::fs::write(path, meshop::yaml::to_string(mesh_install)?)?;
    let text = meshop::cli::render(Some(path), None, None, None)?;
    docs(&text)
}

/// The topology baseline of an IstioOperator: its profile, namespace and revision, and which
/// components and gateways are enabled (with their names and namespaces, and gateways enabled
/// through `values.gateways.<name>.enabled`); every other setting left out.
pub fn topology(iop: &Value) -> Value {
    let spec = &iop["spec"];
    let mut out = serde_json::Map::new();
    for key in ["profile", "namespace", "revision"] {
        if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut components = serde_json::Map::new();
    if let Some(all) = spec["components"].as_object() {
        for (name, c) in all {
            let keep = |c: &Value| {
                let mut kept = serde_json::Map::new();
                for key in ["name", "namespace", "enabled"] {
                    if let Some(v) = c.get(key).filter(|v| !v.is_null()) {
                        kept.insert(key.into(), v.clone());
                    }
                }
                Value::Object(kept)
            };
            let reduced = match c {
                Value::Array(items) => Value::Array(items.iter().map(keep).collect()),
                Value::Object(_) => keep(c),
                _ => continue,
            };
            if reduced.as_object().is_none_or(|m| !m.is_empty()) {
                components.insert(name.clone(), reduced);
            }
        }
    }
    if !components.is_empty() {
        out.insert("components".into(), Value::Object(components));
    }
    if let Some(gateways) = spec.pointer("/values/gateways").and_then(Value::as_object) {
        let mut kept = serde_json::Map::new();
        for (name, g) in gateways {
            if let Some(enabled) = g.get("enabled").filter(|v| !v.is_null()) {
                kept.insert(name.clone(), json!({ "enabled": enabled }));
            }
        }
        if !kept.is_empty() {
            out.insert("values".into(), json!({ "gateways": kept }));
        }
    }
    let mut metadata = serde_json::Map::new();
    for key in ["name", "namespace"] {
        if let Some(v) = iop["metadata"].get(key).filter(|v| !v.is_null()) {
            metadata.insert(key.into(), v.clone());
        }
    }
    json!({
        "apiVersion": iop["apiVersion"],
        "kind": iop["kind"],
        "metadata": metadata,
        "spec": out,
    })
}

/// Settings: a field's path (`<Kind>/<name>/<field path>`) and its value.
pub type Settings = BTreeMap<String, Value>;

/// Pod-spec fields read of every workload.
const POD_FIELDS: &[&str] = &[
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "securityContext",
    "serviceAccountName",
    "imagePullSecrets",
    "hostNetwork",
    "dnsPolicy",
    "terminationGracePeriodSeconds",
];

/// Container fields read of every container and init container.
const CONTAINER_FIELDS: &[&str] = &[
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "envFrom",
    "resources",
    "ports",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "securityContext",
];

/// The settings of a rendered manifest (see the module's documentation for what is read).
/// What the API server fills in anyway, filled in on both sides so that leaving it out and
/// writing it are the same setting: a Service port's protocol (TCP) and targetPort (its port).
fn api_defaults(o: &Value) -> Value {
    let mut o = o.clone();
    if o["kind"] == "Service"
        && let Some(ports) = o.pointer_mut("/spec/ports").and_then(Value::as_array_mut)
    {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert_with(|| Value::from("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            let target = p.entry("targetPort").or_insert(Value::Null);
            if target.is_null() || target.as_i64() == Some(0) {
                *target = port;
            }
        }
    }
    o
}

pub fn settings(objects: &[Value]) -> Settings {
    let mut out = Settings::new();
    for o in objects {
        let o = &api_defaults(o);
        let kind = o["kind"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        if kind == "CustomResourceDefinition" || kind.is_empty() {
            continue;
        }
        let at = format!("{kind}/{name}");
        out.insert(format!("{at}/#exists"), Value::Bool(true));
        let pick = |fields: &[&str], out: &mut Settings| {
            for f in fields {
                if let Some(v) = o.pointer(f) {
                    flatten_expanding(v, format!("{at}{f}"), out);
                }
            }
        };
        match kind {
            "Deployment" | "DaemonSet" | "StatefulSet" => {
                pick(
                    &[
                        "/metadata/namespace",
                        "/spec/replicas",
                        "/spec/strategy",
                        "/spec/updateStrategy",
                        "/spec/minReadySeconds",
                        "/spec/template/metadata/labels",
                        "/spec/template/metadata/annotations",
                    ],
                    &mut out,
                );
                let spec = &o["spec"]["template"]["spec"];
                for f in POD_FIELDS {
                    if let Some(v) = spec.get(*f) {
                        flatten_expanding(v, format!("{at}/spec/template/spec/{f}"), &mut out);
                    }
                }
                for list in ["containers", "initContainers"] {
                    for c in spec[list].as_array().into_iter().flatten() {
                        let cname = c["name"].as_str().unwrap_or_default();
                        for f in CONTAINER_FIELDS {
                            if let Some(v) = c.get(*f) {
                                flatten_expanding(
                                    v,
                                    format!("{at}/spec/template/spec/{list}[{cname}]/{f}"),
                                    &mut out,
                                );
                            }
                        }
                    }
                }
            }
            "HorizontalPodAutoscaler" => pick(
                &[
                    "/metadata/namespace",
                    "/spec/minReplicas",
                    "/spec/maxReplicas",
                    "/spec/metrics",
                    "/spec/behavior",
                    "/spec/scaleTargetRef/name",
                ],
                &mut out,
            ),
            "PodDisruptionBudget" => pick(
                &[
                    "/metadata/namespace",
                    "/spec/minAvailable",
                    "/spec/maxUnavailable",
                    "/spec/unhealthyPodEvictionPolicy",
                ],
                &mut out,
            ),
            "Service" => pick(
                &[
                    "/metadata/namespace",
                    "/metadata/annotations",
                    "/metadata/labels",
                    "/spec/type",
                    "/spec/ports",
                    "/spec/selector",
                    "/spec/externalTrafficPolicy",
                    "/spec/internalTrafficPolicy",
                    "/spec/loadBalancerIP",
                    "/spec/loadBalancerSourceRanges",
                    "/spec/loadBalancerClass",
                    "/spec/externalIPs",
                    "/spec/ipFamilyPolicy",
                    "/spec/ipFamilies",
                    "/spec/sessionAffinity",
                ],
                &mut out,
            ),
            "NetworkPolicy" => pick(&["/metadata/namespace", "/spec"], &mut out),
            "ConfigMap" => {
                for key in ["mesh", "meshNetworks"] {
                    let Some(text) = o["data"][key].as_str() else {
                        continue;
                    };
                    match serde_yaml::from_str::<Value>(text) {
                        Ok(parsed) => flatten_expanding(&parsed, format!("{at}/{key}"), &mut out),
                        Err(e) => {
                            out.insert(format!("{at}/{key}"), Value::String(format!("{e}")));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Order within lists is no setting here (env order matters to `$(VAR)` only, which the
    // injection conformance tests compare).
    out.retain(|k, _| !k.ends_with("/#order"));
    out
}

/// [`flatten`], with strings holding a JSON object flattened as the object they hold (so that
/// `PROXY_CONFIG` or an annotation holding JSON differs by the keys that differ).
pub fn flatten_expanding(value: &Value, path: String, out: &mut Settings) {
    let mut flat = Settings::new();
    flatten(value, path, &mut flat);
    for (k, v) in flat {
        let parsed = v
            .as_str()
            .filter(|s| s.trim_start().starts_with('{'))
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(Value::is_object);
        match parsed {
            Some(object) => flatten_expanding(&object, k, out),
            None => {
                out.insert(k, v);
            }
        }
    }
}

/// A sample workload both injectors inject, for what the injector values and mesh config mean.
pub const SAMPLE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: apps}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app, version: v1}}
    spec:
      containers:
      - name: app
        image: nginx
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}}
";

/// The settings of the sample pod as each tool injects it (`Injected/<field path>`): istioctl
/// with the injector config, values and mesh config of `manifest` (native sidecars, as `meshop
/// inject` offline), meshop with `mesh_install`. `None` when `manifest` has no injector (no
/// istiod). An injector's refusal is the setting `Injected/#refused`.
pub fn injected(
    bin: &IstioBinaries,
    manifest: &str,
    mesh_install: &Value,
    dir: &Path,
    prefix: &str,
) -> Result<Option<(Settings, Settings)>> {
    if !manifest.contains("istio-sidecar-injector") {
        return Ok(None);
    }
    let native = SETTINGS
        .iter()
        .find(|s| s.name == "native/iptables")
        .context("conformance has a native/iptables setting")?;
    let injectors = match Injectors::from_manifest(
        bin,
        native,
        manifest,
        &meshop::yaml::to_string(mesh_install)?,
        dir,
        prefix,
    ) {
        Ok(i) => i,
        // Generated without an injector config (no istiod): nothing to inject with.
        Err(_) => return Ok(None),
    };
    let sample = dir.join(format!("{prefix}-sample.yaml"));
    std::fs::write(&sample, SAMPLE)?;
    // Offline `istioctl kube-inject` always starts from `[sidecar]`, never from the injector
    // config's `defaultTemplates` (which istiod's webhook reads): its sample names them, as the
    // webhook would choose them, and the annotation is left out of what is compared.
    let config = std::fs::read_to_string(&injectors.config)?;
    let defaults = default_templates(&config)?;
    let istio_sample = dir.join(format!("{prefix}-sample-istioctl.yaml"));
    std::fs::write(
        &istio_sample,
        match &defaults {
            Some(list) => SAMPLE.replacen(
                "metadata: {labels:",
                &format!("metadata: {{annotations: {{{TEMPLATES}: {list:?}}}, labels:"),
                1,
            ),
            None => SAMPLE.to_string(),
        },
    )?;
    let read = |text: &str| -> Settings {
        let mut out = Settings::new();
        match docs(text)
            .ok()
            .and_then(|d| d.first().and_then(pod_template))
        {
            Some(t) => flatten_expanding(&t, "Injected".into(), &mut out),
            None => {
                out.insert("Injected/#refused".into(), Value::from(text));
            }
        }
        out.retain(|k, _| !k.ends_with("/#order"));
        out
    };
    let theirs = injectors.istioctl_inject(&istio_sample)?;
    let theirs = match theirs.status.success() {
        true => {
            let mut read = read(&String::from_utf8_lossy(&theirs.stdout));
            read.remove(&format!("Injected/metadata/annotations/{TEMPLATES}"));
            read
        }
        false => Settings::from([(
            "Injected/#refused".to_string(),
            Value::from(String::from_utf8_lossy(&theirs.stderr).trim()),
        )]),
    };
    let ours = match injectors.meshop_inject(&sample) {
        Ok(text) => read(&text),
        Err(e) => Settings::from([(
            "Injected/#refused".to_string(),
            Value::from(format!("{e:#}")),
        )]),
    };
    Ok(Some((theirs, ours)))
}

/// The annotation naming a pod's injection templates.
const TEMPLATES: &str = "inject.istio.io/templates";

/// The `defaultTemplates` of Istio's injector config (the `config` of its ConfigMap), joined as
/// `inject.istio.io/templates` names them; `None` when it is Istio's own default, `[sidecar]`.
fn default_templates(config: &str) -> Result<Option<String>> {
    let config: Value = serde_yaml::from_str(config).context("the injector config is YAML")?;
    let names: Vec<&str> = config["defaultTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Ok((!names.is_empty() && names != ["sidecar"]).then(|| names.join(",")))
}

/// Both tools' settings for one IstioOperator.
#[derive(Clone, Debug, Default)]
pub struct Sides {
    pub istioctl: Settings,
    pub meshop: Settings,
}

/// Both tools' settings for one IstioOperator file: `istioctl manifest generate` (with `--set
/// tag=`[`VERSION`] unless the file pins a release) and `meshop convert` + `meshop render`, with
/// the sample pod each injects. Files are written into `dir`, named from `prefix`. Err: what
/// refused (istioctl's or convert's message, marked with who).
pub fn both_sides(
    bin: &IstioBinaries,
    file: &Path,
    iop: &Value,
    dir: &Path,
    prefix: &str,
) -> Result<std::result::Result<(Sides, Vec<Value>), String>> {
    let tag = (!pins_tag(iop)).then_some(VERSION);
    let manifest = match istioctl_generate(bin, file, tag)? {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("istioctl refuses: {e}"))),
    };
    let conversions = match meshop_convert(file) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("meshop convert refuses: {e}"))),
    };
    let [conversion] = &conversions[..] else {
        bail!(
            "{}: {} conversions of one IstioOperator",
            file.display(),
            conversions.len()
        );
    };
    let mesh_install = &conversion["meshInstall"];
    let objects = meshop_render(
        mesh_install,
        &dir.join(format!("{prefix}-meshinstall.yaml")),
    )?;
    let mut sides = Sides {
        istioctl: settings(&docs(&manifest)?),
        meshop: settings(&objects),
    };
    if let Some((theirs, ours)) = injected(bin, &manifest, mesh_install, dir, prefix)? {
        sides.istioctl.extend(theirs);
        sides.meshop.extend(ours);
    }
    let not_carried = conversion["notCarried"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(Ok((sides, not_carried)))
}

/// Whether a setting path names where a workload or Service runs: compared as is, not as a
/// change from the baseline.
fn placement(path: &str) -> bool {
    ["Deployment/", "DaemonSet/", "StatefulSet/", "Service/"]
        .iter()
        .any(|k| path.starts_with(k))
        && path.ends_with("/metadata/namespace")
}

/// The fields whose normalised value differs between two settings maps.
fn changed(base: &Settings, input: &Settings) -> BTreeSet<String> {
    base.keys()
        .chain(input.keys())
        .filter(|p| base.get(*p).map(|v| normalise(p, v)) != input.get(*p).map(|v| normalise(p, v)))
        .cloned()
        .collect()
}

/// The settings an input changes in either tool (from the tool's own baseline), and where the two
/// tools' values for the input differ there; where workloads and Services run is compared as is.
/// Returns how many settings were compared, and the differences.
pub fn compare(base: &Sides, input: &Sides) -> (usize, Vec<Difference>) {
    let mut paths = changed(&base.istioctl, &input.istioctl);
    paths.extend(changed(&base.meshop, &input.meshop));
    paths.extend(
        input
            .istioctl
            .keys()
            .chain(input.meshop.keys())
            .filter(|p| placement(p))
            .cloned(),
    );
    let mut out = Vec::new();
    for p in &paths {
        let x = input.istioctl.get(p).map(|v| normalise(p, v));
        let y = input.meshop.get(p).map(|v| normalise(p, v));
        if x != y {
            out.push(Difference {
                path: p.clone(),
                istioctl: x,
                meshop: y,
            });
        }
    }
    (paths.len(), out)
}

/// How many settings (leaves; a list is one) an IstioOperator's spec has.
pub fn leaf_count(value: &Value) -> usize {
    match value {
        Value::Object(m) => m.values().map(leaf_count).sum(),
        Value::Null => 0,
        _ => 1,
    }
}
