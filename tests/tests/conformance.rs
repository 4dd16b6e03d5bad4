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
//! order, and `$(VAR)` expands only variables defined earlier) as fields of their own. The
//! machinery is `meshop_testenv::conformance`, shared with `istio_corpus.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use meshop_testenv::conformance::CUSTOM_TEMPLATE;
use meshop_testenv::conformance::{
    DEFAULT_CONFIG, Difference, Injectors, SETTINGS, differences, first_doc, matches, pod_template,
    show,
};
use meshop_testenv::istio::IstioBinaries;
use serde_json::Value;

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

#[test]
fn meshop_injects_what_istioctl_injects_or_says_why_not() {
    let bin = IstioBinaries::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Empty since PROXY_CONFIG is written as Istio writes it: every field of these workloads is
    // equal. A row that does not parse still fails in `listed`.
    let patterns = listed();
    let mut used: BTreeSet<usize> = BTreeSet::new();
    let mut unlisted = Vec::new();
    let mut report = Vec::new();
    for setting in SETTINGS.iter().chain([&DEFAULT_CONFIG]) {
        let injectors = Injectors::new(&bin, setting, dir.path()).unwrap();
        for (kind, yaml) in workloads() {
            let input = dir.path().join(format!("{kind}.yaml"));
            std::fs::write(&input, &yaml).unwrap();
            let istio = injectors.istioctl_inject(&input).unwrap();
            assert!(
                istio.status.success(),
                "istioctl kube-inject {kind} {}: {}",
                setting.name,
                String::from_utf8_lossy(&istio.stderr)
            );
            let injected = |text: &str| pod_template(&first_doc(text)).expect("a pod template");
            let theirs = injected(&String::from_utf8_lossy(&istio.stdout));
            let ours = injected(&injectors.meshop_inject(&input).unwrap());
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

/// A custom injection template (Istio's own `sidecar_template.yaml`, with a label and an
/// annotation) and `defaultTemplates: [sidecar, credential-volume]`: meshop's injection of each
/// workload, which names no template (so gets the default templates), against `istioctl
/// kube-inject` of the same workload naming `sidecar,credential-volume` (offline istioctl never
/// reads `defaultTemplates`: see [`CUSTOM_TEMPLATE`]), every field equal but that annotation.
#[test]
fn custom_templates_inject_what_istioctl_injects() {
    let bin = IstioBinaries::locate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let injectors = Injectors::custom_template(&bin, dir.path()).unwrap();
    let config = std::fs::read_to_string(&injectors.config).unwrap();
    assert!(
        config.contains("- credential-volume") && config.contains("credential-volume: |"),
        "istioctl's injector config carries the template and the default templates"
    );
    let mut report = Vec::new();
    let mut unequal = Vec::new();
    for (kind, yaml) in workloads() {
        let ours_in = dir.path().join(format!("{kind}.yaml"));
        std::fs::write(&ours_in, &yaml).unwrap();
        let theirs_in = dir.path().join(format!("{kind}-templates.yaml"));
        let named = yaml.replace(
            "annotations: {",
            "annotations: {inject.istio.io/templates: \"sidecar,credential-volume\", ",
        );
        assert_ne!(named, yaml);
        std::fs::write(&theirs_in, &named).unwrap();
        let istio = injectors.istioctl_inject(&theirs_in).unwrap();
        assert!(
            istio.status.success(),
            "istioctl kube-inject {kind}: {}",
            String::from_utf8_lossy(&istio.stderr)
        );
        let injected = |text: &str| pod_template(&first_doc(text)).expect("a pod template");
        let mut theirs = injected(&String::from_utf8_lossy(&istio.stdout));
        let ours = injected(&injectors.meshop_inject(&ours_in).unwrap());
        // The template did reach both: the Secret's volume, mounted in the proxy, the label.
        for (side, pod) in [("istioctl", &theirs), ("meshop", &ours)] {
            let volumes = pod["spec"]["volumes"].to_string();
            assert!(
                volumes.contains("application-credentials"),
                "{side} {kind}: {volumes}"
            );
            assert_eq!(
                pod["metadata"]["labels"]["credentials"], "mounted",
                "{side} {kind}"
            );
        }
        // The one input difference: istioctl's workload names the templates.
        theirs["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("inject.istio.io/templates");
        let (fields, found) = differences(&theirs, &ours);
        for d in &found {
            unequal.push(format!(
                "{} {kind} {}\n    istioctl: {}\n    meshop:   {}",
                CUSTOM_TEMPLATE.name,
                d.path,
                show(&d.istioctl),
                show(&d.meshop)
            ));
        }
        report.push(format!(
            "{:<24} {:<12} fields {:>4}  equal {:>4}",
            CUSTOM_TEMPLATE.name,
            kind,
            fields,
            fields - found.len()
        ));
    }
    println!("{}", report.join("\n"));
    assert!(
        unequal.is_empty(),
        "meshop's custom-template injection differs from istioctl kube-inject:\n{}",
        unequal.join("\n")
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
    // A variable on one side only is that variable's difference, not one of order; the order
    // of the others still counts.
    let (_, found) = differences(
        &base,
        &template("{}", &["POD_NAME", "EXTRA", "POD_NAMESPACE"], PROXY, "app"),
    );
    let paths: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/spec/containers[istio-proxy]/env[EXTRA]/name",
            "/spec/containers[istio-proxy]/env[EXTRA]/value"
        ]
    );
    let (_, found) = differences(
        &base,
        &template("{}", &["POD_NAMESPACE", "EXTRA", "POD_NAME"], PROXY, "app"),
    );
    let paths: Vec<&str> = found.iter().map(|d| d.path.as_str()).collect();
    assert!(
        paths.contains(&"/spec/containers[istio-proxy]/env/#order"),
        "{paths:?}"
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

#[test]
fn the_api_servers_probe_defaults_are_no_difference() {
    let probe = |get: Value, extra: Value| {
        let mut p = serde_json::json!({ "httpGet": get });
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::json!({ "spec": { "containers": [{ "name": "app", "readinessProbe": p }] } })
    };
    let bare = probe(serde_json::json!({ "port": 8080 }), serde_json::json!({}));
    // What the API server writes for a probe that names none of these.
    let defaulted = probe(
        serde_json::json!({ "port": 8080, "scheme": "HTTP" }),
        serde_json::json!({ "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3 }),
    );
    assert_eq!(differences(&bare, &defaulted).1, vec![]);
    // Any other value is a difference.
    let https = probe(
        serde_json::json!({ "port": 8080, "scheme": "HTTPS" }),
        serde_json::json!({ "periodSeconds": 15 }),
    );
    let paths: Vec<String> = differences(&bare, &https)
        .1
        .into_iter()
        .map(|d| d.path)
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/containers[app]/readinessProbe/httpGet/scheme",
            "/spec/containers[app]/readinessProbe/periodSeconds"
        ]
    );
}
