//! Injection conformance: the same workloads injected by `meshop inject` and by Istio's own
//! `istioctl kube-inject`, fed the injector template, values and mesh config that
//! `istioctl manifest generate` produces for the same settings, compared field by field after
//! normalising what the API server defaults anyway. Every difference must be listed, with both
//! values and its reason, in docs/istio-compatibility.md; a difference not listed (a path, or a
//! value on either side, the list does not name) fails the test, and so does a listed one that no
//! longer occurs (the list stays true).
//!
//! Strings holding JSON (`PROXY_CONFIG`, the app probers) are compared by their parsed value, the
//! proxy image as written (istioctl is given the release meshop installs), and the order of
//! containers, init containers and each container's env (the kubelet starts native sidecars in
//! order, and `$(VAR)` expands only variables defined earlier) as fields of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use meshop_testenv::istio::IstioBinaries;
use serde_json::Value;

/// The release both inject: meshop's MeshInstall asks for it, and istioctl's values carry it as
/// the image tag (istioctl built from the release-1.31 branch otherwise tags `1.31-dev`).
const VERSION: &str = "1.31.1";

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
    cmd.args(["manifest", "generate", "--set", "profile=default", "--set"]);
    cmd.arg(format!("tag={VERSION}"));
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

/// Lists whose order is meaningful: containers and init containers (native sidecars start in
/// order; the first container is `kubectl`'s default) and env (`$(VAR)` expands only variables
/// defined before it). Their order is compared as a field of its own, `<list>/#order`.
const ORDERED: &[&str] = &["/containers", "/initContainers", "/env"];

/// Flattens a value into `path -> JSON`, naming list items by their `name` where they have one;
/// for the lists in [`ORDERED`], the names in order too.
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
            if ORDERED.iter().any(|l| path.ends_with(l)) {
                let names = items.iter().map(|i| i["name"].clone()).collect();
                out.insert(format!("{path}/#order"), Value::Array(names));
            }
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
    matches!(
        (last, value),
        ("initialDelaySeconds", Value::Number(n)) if n.as_i64() == Some(0)
    ) || matches!(
        (last, value),
        ("terminationMessagePath", _) | ("terminationMessagePolicy", _) | ("imagePullPolicy", _)
    )
}

/// One field where the two injections differ, with both normalised values (`None`: absent).
#[derive(Clone, Debug, PartialEq)]
struct Difference {
    path: String,
    istioctl: Option<Value>,
    meshop: Option<Value>,
}

/// Compares two pod templates: how many fields there are, and where they differ.
fn differences(theirs: &Value, ours: &Value) -> (usize, Vec<Difference>) {
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

/// A difference docs/istio-compatibility.md lists: the field path (`*` stands for any run of
/// characters) and the value on each side (normalised, as [`differences`] reports them).
#[derive(Clone, Debug, PartialEq)]
struct Listed {
    pattern: String,
    istioctl: Option<Value>,
    meshop: Option<Value>,
}

impl Listed {
    /// A row allows a difference only at its path and with exactly its two values.
    fn allows(&self, d: &Difference) -> bool {
        matches(&self.pattern, &d.path) && self.istioctl == d.istioctl && self.meshop == d.meshop
    }

    /// `| `path` | `istioctl value` | `meshop value` | reason |`: each value is JSON (a string
    /// holding JSON is written as the JSON it holds), or `-` for absent.
    fn parse(row: &str) -> Option<Result<Listed, String>> {
        let cells: Vec<&str> = row.strip_prefix('|')?.splitn(4, '|').collect();
        let [path, istioctl, meshop, _reason] = cells[..] else {
            return Some(Err(format!(
                "{row}: a row has four cells: path, istioctl's value, meshop's value, reason"
            )));
        };
        let code = |cell: &str| -> Option<String> {
            let c = cell.trim();
            Some(c.strip_prefix('`')?.strip_suffix('`')?.to_string())
        };
        let pattern = code(path)?;
        let value = |cell: &str| -> Result<Option<Value>, String> {
            let text = code(cell).ok_or_else(|| format!("{cell:?} is not `code`"))?;
            if text == "-" {
                return Ok(None);
            }
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{text}: {e}"))
        };
        Some(
            (|| {
                Ok(Listed {
                    pattern: pattern.clone(),
                    istioctl: value(istioctl)?,
                    meshop: value(meshop)?,
                })
            })()
            .map_err(|e: String| format!("row for {pattern}: {e}")),
        )
    }
}

/// The listed differences: the rows of the section "Differences meshop keeps" of
/// docs/istio-compatibility.md (other sections have tables of their own).
fn listed() -> Vec<Listed> {
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
        .filter(|l| l.starts_with("| `"))
        .filter_map(Listed::parse)
        .map(|r| r.unwrap_or_else(|e| panic!("docs/istio-compatibility.md: {e}")))
        .collect()
}

fn show(v: &Option<Value>) -> String {
    v.as_ref().map_or("-".into(), Value::to_string)
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
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut unlisted = Vec::new();
    let mut report = Vec::new();
    for setting in SETTINGS {
        let [config, values, mesh] = istio_injector(&bin, setting, dir.path());
        let mesh_file = dir.path().join("mesh.yaml");
        std::fs::write(
            &mesh_file,
            format!(
                "apiVersion: meshop.dev/v1alpha1\nkind: MeshInstall\nmetadata: {{name: m}}\nspec:\n  profile: minimal\n  version: {VERSION}\n  {}\n",
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
            let (fields, found) = differences(&theirs, &ours);
            let differ = found.len();
            let equal = fields - differ;
            for d in found {
                match patterns.iter().position(|p| p.allows(&d)) {
                    Some(i) => {
                        used.insert(i);
                    }
                    None => unlisted.push(format!(
                        "{} {kind} {}\n    istioctl: {}\n    meshop:   {}",
                        setting.name,
                        d.path,
                        show(&d.istioctl),
                        show(&d.meshop)
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
    let stale: Vec<&Listed> = patterns
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, p)| p)
        .collect();
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

/// A pod template with an `istio-proxy` sidecar: `proxy_config` as its PROXY_CONFIG, `env` the
/// names of the variables before it, `image` its image, `first` the first container.
fn template(proxy_config: &str, env: &[&str], image: &str, first: &str) -> Value {
    let mut vars: Vec<Value> = env
        .iter()
        .map(|n| serde_json::json!({ "name": n, "value": "x" }))
        .collect();
    vars.push(serde_json::json!({ "name": "PROXY_CONFIG", "value": proxy_config }));
    let proxy = serde_json::json!({ "name": "istio-proxy", "image": image, "env": vars });
    let app = serde_json::json!({ "name": "app", "image": "nginx" });
    let containers = if first == "app" {
        vec![app, proxy]
    } else {
        vec![proxy, app]
    };
    serde_json::json!({ "spec": { "containers": containers } })
}

const PROXY: &str = "docker.io/istio/proxyv2:1.31.1";
const PATH: &str = "/spec/containers[istio-proxy]/env[PROXY_CONFIG]/value";

#[test]
fn proxy_config_is_compared_by_value_and_a_row_allows_only_its_values() {
    let row = Listed::parse(
        "| `*[istio-proxy]/env[PROXY_CONFIG]/value` | `{}` | `{\"discoveryAddress\":\"istiod.istio-system.svc:15012\"}` | why |",
    )
    .unwrap()
    .unwrap();
    let theirs = template("{}", &["A", "B"], PROXY, "app");
    // The same JSON, other whitespace and key order: equal, so only the listed value differs.
    let ours = template(
        r#"{ "discoveryAddress" : "istiod.istio-system.svc:15012" }"#,
        &["A", "B"],
        PROXY,
        "app",
    );
    let (_, found) = differences(&theirs, &ours);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, PATH);
    assert!(row.allows(&found[0]));
    // A deliberately wrong address in PROXY_CONFIG: the same path, another value; not allowed.
    let wrong = template(
        r#"{"discoveryAddress":"istiod.elsewhere.svc:15012"}"#,
        &["A", "B"],
        PROXY,
        "app",
    );
    let (_, found) = differences(&theirs, &wrong);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].meshop,
        Some(serde_json::json!({ "discoveryAddress": "istiod.elsewhere.svc:15012" }))
    );
    assert!(!row.allows(&found[0]), "the row names its values");
    // Nor when istioctl's side moves.
    let (_, found) = differences(
        &template(r#"{"concurrency":4}"#, &["A", "B"], PROXY, "app"),
        &ours,
    );
    assert!(!row.allows(&found[0]));
    // A row without both values is refused, not read as "any value".
    assert!(
        Listed::parse("| `*[istio-proxy]/env[PROXY_CONFIG]/value` | reason |")
            .unwrap()
            .is_err()
    );
}

#[test]
fn container_order_env_order_and_the_proxy_image_are_compared() {
    let base = template("{}", &["POD_NAME", "POD_NAMESPACE"], PROXY, "app");
    assert_eq!(differences(&base, &base.clone()).1, vec![]);
    // Env in another order: every variable is there, with its value; the order differs.
    let (_, found) = differences(
        &base,
        &template("{}", &["POD_NAMESPACE", "POD_NAME"], PROXY, "app"),
    );
    let paths: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/spec/containers[istio-proxy]/env/#order"]);
    assert_eq!(
        found[0].meshop,
        Some(serde_json::json!([
            "POD_NAMESPACE",
            "POD_NAME",
            "PROXY_CONFIG"
        ]))
    );
    // The proxy first instead of the application.
    let (_, found) = differences(
        &base,
        &template("{}", &["POD_NAME", "POD_NAMESPACE"], PROXY, "istio-proxy"),
    );
    let paths: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/spec/containers/#order"]);
    // Another proxy image (a tag, a registry): a difference, not normalised away.
    let (_, found) = differences(
        &base,
        &template(
            "{}",
            &["POD_NAME", "POD_NAMESPACE"],
            "docker.io/istio/proxyv2:1.30.5",
            "app",
        ),
    );
    let paths: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/spec/containers[istio-proxy]/image"]);
    // Lists whose order means nothing (volumes, ports) are compared by name only.
    let vols = |names: &[&str]| serde_json::json!({ "spec": { "volumes": names.iter().map(|n| serde_json::json!({ "name": n, "emptyDir": {} })).collect::<Vec<_>>() } });
    assert_eq!(
        differences(&vols(&["a", "b"]), &vols(&["b", "a"])).1,
        vec![]
    );
}
