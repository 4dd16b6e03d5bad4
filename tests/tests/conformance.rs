//! Injection conformance: the same workloads injected by `meshop inject` and by Istio's own
//! `istioctl kube-inject`, fed the injector template, values and mesh config that
//! `istioctl manifest generate` produces for the same settings, compared field by field after
//! normalising what the API server defaults anyway. Every difference must be listed, with its
//! reason, in docs/istio-compatibility.md; a difference not listed fails the test, and so does a
//! listed one that no longer occurs (the list stays true).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use meshop_testenv::istio::IstioBinaries;
use serde_json::Value;

/// One injection setting: how to ask meshop and istioctl for it.
struct Setting {
    name: &'static str,
    /// `spec.injection` (and components) of the MeshInstall meshop injects with.
    meshop_spec: &'static str,
    /// `istioctl manifest generate --set` flags.
    istio_sets: &'static [&'static str],
    /// `ENABLE_NATIVE_SIDECARS` for the offline istioctl process.
    native: bool,
}

const SETTINGS: &[Setting] = &[
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

/// The pod template every workload kind wraps: an init container that uses the network, HTTP,
/// TCP, gRPC and exec probes, and annotations meshop honours.
const POD_SPEC: &str = r#"
      initContainers: [{name: migrate, image: migrate}]
      containers:
      - name: web
        image: nginx
        ports: [{containerPort: 8080, name: http}, {containerPort: 9090, name: grpc}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}}
        livenessProbe: {tcpSocket: {port: 8080}}
        startupProbe: {grpc: {port: 9090}}
      - name: sidecar-helper
        image: helper
        livenessProbe: {exec: {command: [cat, /tmp/ok]}}"#;

const ANNOTATIONS: &str = r#"{sidecar.istio.io/proxyCPU: 200m, sidecar.istio.io/proxyMemory: 256Mi, traffic.sidecar.istio.io/excludeOutboundPorts: "5432", traffic.sidecar.istio.io/excludeInboundPorts: "9000"}"#;

/// [`POD_SPEC`] (written at indent 6) re-indented to `indent`.
fn pod_spec(indent: usize) -> String {
    POD_SPEC
        .lines()
        .map(|l| match l.strip_prefix("      ") {
            Some(rest) => format!("{}{rest}", " ".repeat(indent)),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn workloads() -> Vec<(&'static str, String)> {
    let meta = format!("{{labels: {{app: web, version: v1}}, annotations: {ANNOTATIONS}}}");
    let controller = |kind: &str, api: &str, extra: &str| {
        format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: web, namespace: apps}}\nspec:\n{extra}  template:\n    metadata: {meta}\n    spec:{}\n",
            pod_spec(6)
        )
    };
    let selector = "  selector: {matchLabels: {app: web}}\n";
    vec![
        (
            "Pod",
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: apps, labels: {{app: web, version: v1}}, annotations: {ANNOTATIONS}}}\nspec:{}\n",
                pod_spec(2)
            ),
        ),
        ("Deployment", controller("Deployment", "apps/v1", selector)),
        (
            "StatefulSet",
            controller(
                "StatefulSet",
                "apps/v1",
                &format!("  serviceName: web\n{selector}"),
            ),
        ),
        ("DaemonSet", controller("DaemonSet", "apps/v1", selector)),
        ("Job", controller("Job", "batch/v1", "")),
    ]
}

/// istioctl's injector config, values and mesh config for a setting, from `manifest generate`.
fn istio_injector(bin: &IstioBinaries, setting: &Setting, dir: &Path) -> [PathBuf; 3] {
    let mut cmd = Command::new(&bin.istioctl);
    cmd.args(["manifest", "generate", "--set", "profile=default"]);
    for set in setting.istio_sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut files: BTreeMap<&str, String> = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
            continue;
        };
        if doc["kind"] != "ConfigMap" {
            continue;
        }
        match doc["metadata"]["name"].as_str() {
            Some("istio-sidecar-injector") => {
                files.insert("config", doc["data"]["config"].as_str().unwrap().into());
                files.insert("values", doc["data"]["values"].as_str().unwrap().into());
            }
            Some("istio") => {
                files.insert("mesh", doc["data"]["mesh"].as_str().unwrap().into());
            }
            _ => {}
        }
    }
    ["config", "values", "mesh"].map(|name| {
        let path = dir.join(format!("{}-{name}", setting.name.replace('/', "-")));
        std::fs::write(
            &path,
            files.get(name).unwrap_or_else(|| panic!("no {name}")),
        )
        .unwrap();
        path
    })
}

fn first_doc(text: &str) -> Value {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap_or(Value::Null))
        .find(|v| !v.is_null())
        .unwrap_or_else(|| panic!("no document in {text}"))
}

/// The pod template (metadata + spec) of a workload, whatever its kind.
fn pod_template(workload: &Value) -> Value {
    match workload["kind"].as_str() {
        Some("Pod") => {
            serde_json::json!({ "metadata": { "labels": workload["metadata"]["labels"], "annotations": workload["metadata"]["annotations"] }, "spec": workload["spec"] })
        }
        _ => workload["spec"]["template"].clone(),
    }
}

/// Flattens a value into `path -> JSON`, naming list items by their `name` where they have one.
fn flatten(value: &Value, path: String, out: &mut BTreeMap<String, Value>) {
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
            for item in items {
                flatten(
                    item,
                    format!("{path}[{}]", item["name"].as_str().unwrap()),
                    out,
                );
            }
        }
        Value::Null => {}
        other => {
            out.insert(path, other.clone());
        }
    }
}

/// What the API server would make of a value anyway, so that only real differences remain.
fn normalise(path: &str, value: &Value) -> Value {
    // Images: istioctl built from a branch tags them `1.31-dev`, meshop with the release.
    if path.ends_with("/image")
        && let Some(s) = value.as_str()
        && let Some((repo, _tag)) = s.rsplit_once(':')
        && repo.contains("proxyv2")
    {
        return Value::String(format!("{repo}:<version>"));
    }
    // JSON in strings: compare what it means, not its whitespace; null lists are empty lists.
    if let Some(s) = value.as_str()
        && (s.trim_start().starts_with('{') || s.trim_start().starts_with('['))
        && let Ok(parsed) = serde_json::from_str::<Value>(s)
    {
        return Value::String(canonical_json(&api_defaults_in_probes(parsed)).to_string());
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
    matches!(
        (last, value),
        ("initialDelaySeconds", Value::Number(n)) if n.as_i64() == Some(0)
    ) || matches!(
        (last, value),
        ("terminationMessagePath", _) | ("terminationMessagePolicy", _) | ("imagePullPolicy", _)
    )
}

/// The listed differences: `| path pattern | reason |` rows of the section "Differences meshop
/// keeps" of docs/istio-compatibility.md (other sections have tables of their own), where `*` in
/// a pattern stands for any run of characters.
fn listed() -> Vec<String> {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/istio-compatibility.md"),
    )
    .unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Differences meshop keeps"))
        .expect("docs/istio-compatibility.md has a section \"Differences meshop keeps\"");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(pattern, _)| pattern.to_string())
        .collect()
}

fn matches(pattern: &str, text: &str) -> bool {
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

#[test]
fn meshop_injects_what_istioctl_injects_or_says_why_not() {
    let bin = IstioBinaries::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let patterns = listed();
    assert!(
        !patterns.is_empty(),
        "docs/istio-compatibility.md lists no difference rows"
    );
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut unlisted = Vec::new();
    let mut report = Vec::new();
    for setting in SETTINGS {
        let [config, values, mesh] = istio_injector(&bin, setting, dir.path());
        let mesh_file = dir.path().join("mesh.yaml");
        std::fs::write(
            &mesh_file,
            format!(
                "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: m}}\nspec:\n  profile: minimal\n  {}\n",
                setting.meshop_spec
            ),
        )
        .unwrap();
        for (kind, yaml) in workloads() {
            let input = dir.path().join(format!("{kind}.yaml"));
            std::fs::write(&input, &yaml).unwrap();
            let istio = Command::new(&bin.istioctl)
                .args(["kube-inject", "-r", "default", "-f"])
                .arg(&input)
                .arg("--injectConfigFile")
                .arg(&config)
                .arg("--valuesFile")
                .arg(&values)
                .arg("--meshConfigFile")
                .arg(&mesh)
                .env("ENABLE_NATIVE_SIDECARS", setting.native.to_string())
                .output()
                .unwrap();
            assert!(
                istio.status.success(),
                "istioctl kube-inject {kind} {}: {}",
                setting.name,
                String::from_utf8_lossy(&istio.stderr)
            );
            let theirs = pod_template(&first_doc(&String::from_utf8_lossy(&istio.stdout)));
            let ours = pod_template(&first_doc(
                &meshop::cli::inject(&input, Some(&mesh_file), None).unwrap(),
            ));
            let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
            flatten(&theirs, String::new(), &mut a);
            flatten(&ours, String::new(), &mut b);
            let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let mut equal = 0;
            let mut differ = 0;
            for path in paths {
                let x = a.get(path).map(|v| normalise(path, v));
                let y = b.get(path).map(|v| normalise(path, v));
                let same = match (&x, &y) {
                    (Some(x), Some(y)) => x == y,
                    (None, Some(v)) | (Some(v), None) => api_server_default(path, v),
                    (None, None) => true,
                };
                if same {
                    equal += 1;
                    continue;
                }
                differ += 1;
                match patterns.iter().find(|p| matches(p, path)) {
                    Some(p) => {
                        used.insert(p.clone());
                    }
                    None => unlisted.push(format!(
                        "{} {kind} {path}\n    istioctl: {}\n    meshop:   {}",
                        setting.name,
                        x.map(|v| v.to_string()).unwrap_or("-".into()),
                        y.map(|v| v.to_string()).unwrap_or("-".into())
                    )),
                }
            }
            report.push(format!(
                "{:<24} {:<12} fields {:>4}  equal {:>4}  listed differences {:>3}",
                setting.name,
                kind,
                equal + differ,
                equal,
                differ
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        unlisted.is_empty(),
        "differences from istioctl kube-inject not listed in docs/istio-compatibility.md:\n{}",
        unlisted.join("\n")
    );
    let stale: Vec<&String> = patterns.iter().filter(|p| !used.contains(*p)).collect();
    assert!(
        stale.is_empty(),
        "docs/istio-compatibility.md lists differences that no longer occur: {stale:?}"
    );
}

#[test]
fn the_pattern_matcher_matches_what_it_should() {
    assert!(matches(
        "/spec/containers[istio-proxy]/env[PROXY_CONFIG]/value",
        "/spec/containers[istio-proxy]/env[PROXY_CONFIG]/value"
    ));
    assert!(matches(
        "*/env[PROXY_CONFIG]/value",
        "/spec/initContainers[istio-proxy]/env[PROXY_CONFIG]/value"
    ));
    assert!(!matches(
        "*/env[PROXY_CONFIG]/value",
        "/spec/initContainers[istio-proxy]/env[OTHER]/value"
    ));
    assert!(matches("/metadata/*", "/metadata/annotations/x"));
    assert!(!matches("/metadata/a", "/metadata/ab"));
}
