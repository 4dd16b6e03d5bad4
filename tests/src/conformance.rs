//! Injection conformance machinery shared by `tests/tests/conformance.rs` (meshop's own workloads)
//! and `tests/tests/istio_corpus.rs` (Istio's own injection inputs): the settings both injectors
//! are asked for, istioctl's injector files from `istioctl manifest generate`, `istioctl
//! kube-inject` run offline with them, and the field-by-field comparison of two pod templates
//! after normalising what the API server defaults anyway.
//!
//! Strings holding JSON (`PROXY_CONFIG`, the app probers) are compared by their parsed value, the
//! proxy image as written (istioctl is given the release meshop installs), and the order of
//! containers, init containers and each container's env (the kubelet starts native sidecars in
//! order, and `$(VAR)` expands only variables defined earlier) as fields of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::istio::IstioBinaries;

/// The release both inject: meshop's MeshInstall asks for it, and istioctl's values carry it as
/// the image tag (istioctl built from the release-1.31 branch otherwise tags `1.31-dev`).
pub const VERSION: &str = "1.31.1";

/// One injection setting: how to ask meshop and istioctl for it.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    /// `spec.injection` (and components) of the MeshInstall meshop injects with.
    pub meshop_spec: &'static str,
    /// `istioctl manifest generate --set` flags.
    pub istio_sets: &'static [&'static str],
    /// `ENABLE_NATIVE_SIDECARS` for the offline istioctl process.
    pub native: bool,
}

/// The settings both conformance tests compare under.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "classic/iptables",
        meshop_spec: "injection: {sidecarMode: classic}",
        istio_sets: &[],
        native: false,
    },
    Setting {
        name: "native/iptables",
        meshop_spec: "injection: {sidecarMode: native}",
        istio_sets: &[],
        native: true,
    },
    Setting {
        name: "classic/cni",
        meshop_spec: "components: {cni: {enabled: true}}\n  injection: {sidecarMode: classic, trafficCapture: cni}",
        istio_sets: &["components.cni.enabled=true"],
        native: false,
    },
    Setting {
        name: "native/hold-application",
        meshop_spec: "injection: {sidecarMode: native, proxy: {holdApplicationUntilProxyStarts: true}}",
        istio_sets: &["meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true"],
        native: true,
    },
];

/// Istio's own ProxyConfig fields in the mesh's defaultConfig (meshop's MeshInstall and
/// istioctl's mesh config say the same), which both injectors start PROXY_CONFIG from. Compared
/// by `conformance.rs` on meshop's workloads (not part of [`SETTINGS`], whose table of Istio's
/// corpus docs/istio-compatibility.md keeps).
pub const DEFAULT_CONFIG: Setting = Setting {
    name: "native/default-config",
    meshop_spec: "meshConfig:\n    defaultConfig:\n      proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\", EXIT_ON_ZERO_ACTIVE_CONNECTIONS: \"true\"}\n      holdApplicationUntilProxyStarts: true\n      tracing: {sampling: 10}\n      concurrency: 3\n      drainDuration: 30s\n      image: {imageType: distroless}\n  injection: {sidecarMode: native}",
    istio_sets: &[
        "meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE=true",
        "meshConfig.defaultConfig.proxyMetadata.EXIT_ON_ZERO_ACTIVE_CONNECTIONS=true",
        "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true",
        "meshConfig.defaultConfig.tracing.sampling=10",
        "meshConfig.defaultConfig.concurrency=3",
        "meshConfig.defaultConfig.drainDuration=30s",
        "meshConfig.defaultConfig.image.imageType=distroless",
    ],
    native: true,
};

/// Istio's own custom-template test input (`sidecar_template.yaml` of manifest-generate's
/// inputs), with a label and an annotation added: a template that mounts a Secret into the
/// proxy, and the default templates `[sidecar, credential-volume]`.
pub const CUSTOM_TEMPLATE_TEXT: &str = "metadata:\n  labels: {credentials: mounted}\n  annotations: {example.com/credentials: application}\nspec:\n  volumes:\n  - name: application-credentials\n    secret:\n      secretName: secret\n  containers:\n  - name: istio-proxy\n    volumeMounts:\n    - name: application-credentials\n      mountPath: /etc/istio/application-credentials\n      readOnly: true\n";

/// The setting of [`CUSTOM_TEMPLATE_TEXT`]: meshop's `spec.injection.templates` and
/// `defaultTemplates`, and istioctl's `values.sidecarInjectorWebhook` (an IstioOperator file,
/// [`custom_template_operator`]; no `--set`). Offline `istioctl kube-inject` always starts from
/// `[sidecar]` (its `IntoObject` sets `defaultTemplate: [sidecar]`, never the injector config's
/// `defaultTemplates`, which only istiod's webhook reads), so istioctl's input names the
/// templates with `inject.istio.io/templates: sidecar,credential-volume`, the list istiod's
/// webhook would take from `defaultTemplates`, and meshop's input names none.
pub const CUSTOM_TEMPLATE: Setting = Setting {
    name: "classic/custom-template",
    meshop_spec: "",
    istio_sets: &[],
    native: false,
};

/// [`CUSTOM_TEMPLATE`]'s MeshInstall `spec` lines (after `version`).
pub fn custom_template_meshop_spec() -> String {
    let text: String = CUSTOM_TEMPLATE_TEXT
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    format!(
        "injection:\n    sidecarMode: classic\n    defaultTemplates: [sidecar, credential-volume]\n    templates:\n      credential-volume: |\n{text}"
    )
}

/// [`CUSTOM_TEMPLATE`]'s IstioOperator for `istioctl manifest generate -f`.
pub fn custom_template_operator() -> String {
    let text: String = CUSTOM_TEMPLATE_TEXT
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect();
    format!(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    sidecarInjectorWebhook:\n      defaultTemplates: [sidecar, credential-volume]\n      templates:\n        credential-volume: |\n{text}"
    )
}

impl<'a> Injectors<'a> {
    /// Both injectors for [`CUSTOM_TEMPLATE`], files written into `dir`.
    pub fn custom_template(bin: &IstioBinaries, dir: &Path) -> Result<Injectors<'static>> {
        let operator = dir.join("custom-template-operator.yaml");
        std::fs::write(&operator, custom_template_operator())?;
        let out = Command::new(&bin.istioctl)
            .args(["manifest", "generate", "--set", "profile=default", "--set"])
            .arg(format!("tag={VERSION}"))
            .arg("-f")
            .arg(&operator)
            .output()
            .context("run istioctl manifest generate")?;
        if !out.status.success() {
            bail!(
                "istioctl manifest generate for {}: {}",
                CUSTOM_TEMPLATE.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let meshinstall = format!(
            "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: m}}\nspec:\n  profile: minimal\n  version: {VERSION}\n  {}",
            custom_template_meshop_spec()
        );
        Injectors::from_manifest(
            bin,
            &CUSTOM_TEMPLATE,
            &String::from_utf8(out.stdout)?,
            &meshinstall,
            dir,
            "custom-template",
        )
    }
}

/// Both injectors, set up for one setting: istioctl's injector config, values and mesh config
/// (from `istioctl manifest generate`) and the MeshInstall meshop injects with.
#[derive(Debug)]
pub struct Injectors<'a> {
    pub setting: &'a Setting,
    pub istioctl: PathBuf,
    pub config: PathBuf,
    pub values: PathBuf,
    pub mesh: PathBuf,
    pub meshinstall: PathBuf,
}

impl<'a> Injectors<'a> {
    /// Writes the files of `setting` into `dir` (named after the setting, so settings can share
    /// a directory).
    pub fn new(bin: &IstioBinaries, setting: &'a Setting, dir: &Path) -> Result<Injectors<'a>> {
        let mut cmd = Command::new(&bin.istioctl);
        cmd.args(["manifest", "generate", "--set", "profile=default", "--set"]);
        cmd.arg(format!("tag={VERSION}"));
        for set in setting.istio_sets {
            cmd.args(["--set", set]);
        }
        let out = cmd.output().context("run istioctl manifest generate")?;
        if !out.status.success() {
            bail!(
                "istioctl manifest generate for {}: {}",
                setting.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let meshinstall = format!(
            "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: m}}\nspec:\n  profile: minimal\n  version: {VERSION}\n  {}\n",
            setting.meshop_spec
        );
        let prefix = setting.name.replace('/', "-");
        Injectors::from_manifest(bin, setting, &text, &meshinstall, dir, &prefix)
    }

    /// Both injectors from the output of an `istioctl manifest generate` (its injector config,
    /// values and mesh config: the ConfigMaps holding `config` and `values`, and `mesh`) and a
    /// MeshInstall, written into `dir` with file names starting `prefix`; istioctl injects with
    /// `setting`'s `ENABLE_NATIVE_SIDECARS`.
    pub fn from_manifest(
        bin: &IstioBinaries,
        setting: &'a Setting,
        manifest: &str,
        meshinstall: &str,
        dir: &Path,
        prefix: &str,
    ) -> Result<Injectors<'a>> {
        let mut files: BTreeMap<&str, String> = BTreeMap::new();
        for doc in serde_yaml::Deserializer::from_str(manifest) {
            // serde_yaml's document iterator repeats an error forever: stop at the first one
            // (istioctl writes some warnings to stdout, in front of the manifest).
            let doc = <Value as serde::Deserialize>::deserialize(doc).with_context(|| {
                format!(
                    "istioctl manifest generate for {} wrote what is not YAML: {}",
                    setting.name,
                    manifest.lines().next().unwrap_or_default()
                )
            })?;
            if doc["kind"] != "ConfigMap" {
                continue;
            }
            let data = |key: &str| doc["data"][key].as_str().map(str::to_string);
            if let (Some(config), Some(values)) = (data("config"), data("values")) {
                files.insert("config", config);
                files.insert("values", values);
            }
            files.extend(data("mesh").map(|m| ("mesh", m)));
        }
        let write = |name: &str, text: Option<&String>| -> Result<PathBuf> {
            let text = text.with_context(|| {
                format!("istioctl manifest generate wrote no {name} for {prefix}")
            })?;
            let path = dir.join(format!("{prefix}-{name}"));
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let meshinstall = meshinstall.to_string();
        Ok(Injectors {
            setting,
            istioctl: bin.istioctl.clone(),
            config: write("config", files.get("config"))?,
            values: write("values", files.get("values"))?,
            mesh: write("mesh", files.get("mesh"))?,
            meshinstall: write("meshinstall.yaml", Some(&meshinstall))?,
        })
    }

    /// `istioctl kube-inject -r default -f <input>`, offline, with this setting's files.
    pub fn istioctl_inject(&self, input: &Path) -> Result<Output> {
        Command::new(&self.istioctl)
            .args(["kube-inject", "-r", "default", "-f"])
            .arg(input)
            .arg("--injectConfigFile")
            .arg(&self.config)
            .arg("--valuesFile")
            .arg(&self.values)
            .arg("--meshConfigFile")
            .arg(&self.mesh)
            .env("ENABLE_NATIVE_SIDECARS", self.setting.native.to_string())
            .output()
            .context("run istioctl kube-inject")
    }

    /// `meshop inject -f <input> --mesh <this setting's MeshInstall>`.
    pub fn meshop_inject(&self, input: &Path) -> Result<String> {
        meshop::cli::inject(input, Some(&self.meshinstall), None)
    }
}

/// The documents of a YAML stream, empty ones left out.
pub fn docs(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = <Value as serde::Deserialize>::deserialize(d)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The first document of a YAML stream.
pub fn first_doc(text: &str) -> Value {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap_or(Value::Null))
        .find(|v| !v.is_null())
        .unwrap_or_else(|| panic!("no document in {text}"))
}

/// The pod template (metadata + spec) of a workload, whatever its kind; `None` for a kind
/// without one (a Service).
pub fn pod_template(workload: &Value) -> Option<Value> {
    match workload["kind"].as_str()? {
        "Pod" => Some(serde_json::json!({
            "metadata": {
                "labels": workload["metadata"]["labels"],
                "annotations": workload["metadata"]["annotations"],
            },
            "spec": workload["spec"],
        })),
        "CronJob" => workload.pointer("/spec/jobTemplate/spec/template").cloned(),
        _ => workload.pointer("/spec/template").cloned(),
    }
}

/// Lists whose order is meaningful: containers and init containers (native sidecars start in
/// order; the first container is `kubectl`'s default) and env (`$(VAR)` expands only variables
/// defined before it). Their order is compared as a field of its own, `<list>/#order`.
pub const ORDERED: &[&str] = &["/containers", "/initContainers", "/env"];

/// Flattens a value into `path -> JSON`, naming list items by their `name` where they have one;
/// for the lists in [`ORDERED`], the names in order too.
pub fn flatten(value: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(v, format!("{path}/{k}"), out);
            }
        }
        Value::Array(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.get("name").is_some_and(Value::is_string)) =>
        {
            if ORDERED.iter().any(|l| path.ends_with(l)) {
                let names = items.iter().map(|i| i["name"].clone()).collect();
                out.insert(format!("{path}/#order"), Value::Array(names));
            }
            for item in items {
                let name = item["name"].as_str().unwrap_or_default();
                flatten(item, format!("{path}[{name}]"), out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(path, other.clone());
        }
    }
}

/// What the API server would make of a value anyway, so that only real differences remain.
pub fn normalise(path: &str, value: &Value) -> Value {
    // JSON in strings: compare what it means (the parsed value), not its whitespace or key
    // order; null lists are empty lists.
    if let Some(s) = value.as_str()
        && (s.trim_start().starts_with('{') || s.trim_start().starts_with('['))
        && let Ok(parsed) = serde_json::from_str::<Value>(s)
    {
        return canonical_json(&api_defaults_in_probes(parsed));
    }
    // Quantities: 2 == 2000m, 1Gi == 1024Mi.
    if path.contains("/resources/")
        && let Some(s) = value.as_str()
    {
        return Value::String(quantity(s));
    }
    value.clone()
}

fn canonical_json(v: &Value) -> Value {
    match v {
        // Go writes an empty list as null, serde as []: the same to every reader.
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| (k.clone(), canonical_json(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(canonical_json).collect()),
        Value::Null => Value::Array(Vec::new()),
        other => other.clone(),
    }
}

/// The API server's probe defaults (scheme HTTP, timeoutSeconds 1), inside the app probers JSON.
fn api_defaults_in_probes(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        for probe in map.values_mut() {
            if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
                get.entry("scheme").or_insert(Value::String("HTTP".into()));
            }
            let network = ["httpGet", "tcpSocket", "grpc"]
                .iter()
                .any(|k| probe.get(*k).is_some());
            if let Some(p) = probe.as_object_mut().filter(|_| network) {
                p.entry("timeoutSeconds").or_insert(Value::from(1));
            }
        }
    }
    v
}

fn quantity(s: &str) -> String {
    let (number, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = number.parse().unwrap_or(f64::NAN);
    let scaled = match unit {
        "" => n,
        "m" => n / 1000.0,
        "Ki" => n * 1024.0,
        "Mi" => n * 1024.0 * 1024.0,
        "Gi" => n * 1024.0 * 1024.0 * 1024.0,
        "k" => n * 1e3,
        "M" => n * 1e6,
        "G" => n * 1e9,
        _ => return s.to_string(),
    };
    format!("{scaled}")
}

/// Fields the API server defaults on every pod: their absence on one side is no difference.
fn api_server_default(path: &str, value: &Value) -> bool {
    let last = path.rsplit('/').next().unwrap_or_default();
    let number = value.as_i64();
    // A probe's defaults (`SetDefaults_Probe`, `SetDefaults_HTTPGetAction`), for probes of the
    // pod itself (not inside the app probers JSON, which the API server never reads).
    let probe = path.contains("Probe/");
    matches!(
        (last, value),
        ("initialDelaySeconds", Value::Number(n)) if n.as_i64() == Some(0)
    ) || matches!(
        (last, value),
        ("terminationMessagePath", _) | ("terminationMessagePolicy", _) | ("imagePullPolicy", _)
    ) || probe
        && match last {
            "timeoutSeconds" | "successThreshold" => number == Some(1),
            "periodSeconds" => number == Some(10),
            "failureThreshold" => number == Some(3),
            "scheme" => path.ends_with("/httpGet/scheme") && value == "HTTP",
            _ => false,
        }
}

/// Whether two `<list>/#order` values put the names both lists hold in the same order: a name
/// on one side only is a difference of its own (`<list>[<name>]/...`), not one of order.
fn same_order(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_array(), b.as_array()) else {
        return a == b;
    };
    let common = |x: &[Value], y: &[Value]| -> Vec<Value> {
        x.iter().filter(|v| y.contains(v)).cloned().collect()
    };
    common(a, b) == common(b, a)
}

/// One field where the two injections differ, with both normalised values (`None`: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub path: String,
    pub istioctl: Option<Value>,
    pub meshop: Option<Value>,
}

/// Compares two pod templates: how many fields there are, and where they differ.
pub fn differences(theirs: &Value, ours: &Value) -> (usize, Vec<Difference>) {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten(theirs, String::new(), &mut a);
    flatten(ours, String::new(), &mut b);
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let total = paths.len();
    let mut out = Vec::new();
    for path in paths {
        let x = a.get(path).map(|v| normalise(path, v));
        let y = b.get(path).map(|v| normalise(path, v));
        let same = match (&x, &y) {
            (Some(x), Some(y)) if path.ends_with("/#order") => same_order(x, y),
            // A list on one side only: each of its items is a difference of its own.
            (None, Some(_)) | (Some(_), None) if path.ends_with("/#order") => true,
            (Some(x), Some(y)) => x == y,
            (None, Some(v)) | (Some(v), None) => api_server_default(path, v),
            (None, None) => true,
        };
        if !same {
            out.push(Difference {
                path: path.clone(),
                istioctl: x,
                meshop: y,
            });
        }
    }
    (total, out)
}

/// [`differences`], with a difference between two JSON objects held in strings (`PROXY_CONFIG`,
/// the app probers) split into the keys that differ, at `<path>/<key>`: which proxy setting or
/// which probe differs, not only that the string does.
pub fn differences_within_json(theirs: &Value, ours: &Value) -> (usize, Vec<Difference>) {
    let (total, found) = differences(theirs, ours);
    let mut out = Vec::new();
    for d in found {
        split_objects(d.path, d.istioctl.as_ref(), d.meshop.as_ref(), &mut out);
    }
    (total, out)
}

fn split_objects(path: String, x: Option<&Value>, y: Option<&Value>, out: &mut Vec<Difference>) {
    if let (Some(Value::Object(a)), Some(Value::Object(b))) = (x, y) {
        let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            if a.get(k) != b.get(k) {
                split_objects(format!("{path}/{k}"), a.get(k), b.get(k), out);
            }
        }
    } else {
        out.push(Difference {
            path,
            istioctl: x.cloned(),
            meshop: y.cloned(),
        });
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    rest.is_empty() || parts.len() > 1 && parts.last() == Some(&"")
}

/// A value as the comparisons print it: JSON, or `-` for absent.
pub fn show(v: &Option<Value>) -> String {
    v.as_ref().map_or("-".into(), Value::to_string)
}
