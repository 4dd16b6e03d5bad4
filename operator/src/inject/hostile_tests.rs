//! Annotation values can never add fields to the injected pod. Istio 1.31.1 and 1.30.5 fixed a
//! bug where crafted `sidecar.istio.io/*`, `traffic.sidecar.istio.io/*` or `proxy.istio.io/config`
//! values, pasted into its text template, became fields of the injected YAML. meshop builds typed
//! objects and never renders text, so a value is at most one string in its own place; these tests
//! hold the engine (the webhook's path, and the offline YAML path, which re-serialises) to that.
//!
//! For every annotation meshop honours (docs/injection.md) and every hostile value, injection
//! either refuses the pod naming the annotation, in a short one-line message, or yields a pod
//! whose structure (its set of JSON paths, list items named by their `name`) is one that a benign
//! value of the same annotation, or no annotation, also yields; no security context changes; and
//! the value shows up only as an opaque string where it is meant to go.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::testutil::{cfg, typical_pod};
use super::{InjectError, InjectionConfig, inject, inject_yaml_stream, keys};
use crate::api::{SidecarMode, TrafficCapture};

/// Every annotation the engine reads, with values it accepts: together they give each
/// annotation's intended structural effects.
pub(crate) const HONOURED: &[(&str, &[&str])] = &[
    (keys::PROXY_CPU, &["250m"]),
    (keys::PROXY_MEMORY, &["128Mi"]),
    (keys::PROXY_CPU_LIMIT, &["1"]),
    (keys::PROXY_MEMORY_LIMIT, &["512Mi"]),
    (keys::PROXY_IMAGE, &["mirror.local/istio/proxyv2:1.31.1"]),
    (keys::LOG_LEVEL, &["debug"]),
    (keys::AGENT_LOG_LEVEL, &["default:debug"]),
    (keys::REWRITE_PROBES, &["true", "false"]),
    (keys::INTERCEPTION_MODE, &["REDIRECT"]),
    (
        keys::PROXY_CONFIG,
        &[
            "concurrency: 2",
            "holdApplicationUntilProxyStarts: true",
            "holdApplicationUntilProxyStarts: false",
        ],
    ),
    (keys::NATIVE_SIDECAR, &["true", "false"]),
    (keys::INCLUDE_INBOUND_PORTS, &["8080"]),
    (keys::EXCLUDE_INBOUND_PORTS, &["9999"]),
    (keys::INCLUDE_OUTBOUND_IP_RANGES, &["10.0.0.0/8"]),
    (keys::EXCLUDE_OUTBOUND_IP_RANGES, &["169.254.169.254/32"]),
    (keys::INCLUDE_OUTBOUND_PORTS, &["443"]),
    (keys::EXCLUDE_OUTBOUND_PORTS, &["3306"]),
];

/// Values an attacker would try: quoting and YAML/JSON breakouts, Kubernetes `$(VAR)`
/// expansion, shell, control characters, NUL, unicode, YAML aliases and deep nesting, and sizes.
pub(crate) fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "\"\n  privileged: true",
        "\"\nsecurityContext:\n  privileged: true\n",
        "}, \"securityContext\": {\"privileged\": true",
        "\"}], \"containers\": [{\"name\": \"evil\", \"image\": \"evil\"}], \"x\": [{\"a\": \"",
        "1\n    - name: EVIL\n      value: \"1\"",
        "8080\"\n    - \"--privileged",
        "8080,9090\n  hostNetwork: true",
        "10.0.0.0/8\", \"-j\", \"ACCEPT",
        "default:debug\n    securityContext: {privileged: true}",
        "mirror.local/p:1\"\n    securityContext:\n      privileged: true\n    x: \"",
        "mirror.local/p:1 --privileged",
        "$(POD_NAME)",
        "$(cat /etc/shadow)",
        "`id`; rm -rf / #",
        "{{ .Values.global.proxy.privileged }}",
        "REDIRECT\n",
        "true\n",
        "True",
        "'",
        "\"",
        "\\",
        "",
        " ",
        "\0",
        "250m\0privileged",
        "\u{2028}\u{2029}\u{feff}",
        "ünïcødé 🙂 ␊",
        "securityContext: {privileged: true}",
        "{\"securityContext\": {\"privileged\": true}, \"holdApplicationUntilProxyStarts\": true}",
        "holdApplicationUntilProxyStarts: true\nsecurityContext: {privileged: true}",
        "concurrency: 99999999999999999999",
        "concurrency: \"4\"",
        "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]",
        "!!binary aGVsbG8=",
        "--- !ruby/object:Gem::Installer\ni: x",
        "%YAML 1.1\n---\nprivileged: yes",
    ]
    .map(String::from)
    .into();
    v.push("[".repeat(10_000));
    v.push(format!("{}{}", "{a: ".repeat(5_000), "}".repeat(5_000)));
    v.push("8".repeat(1 << 20));
    v.push(format!("mirror.local/{}:1", "a".repeat(1 << 20)));
    v.push(format!("concurrency: 2\nx: \"{}\"", "y".repeat(1 << 20)));
    v
}

/// Small deterministic generator (xorshift): many strings made of breakout fragments, some
/// starting with a valid value so they get past the first character of a parser.
fn generated_values(n: usize) -> Vec<String> {
    const FRAGMENTS: &[&str] = &[
        "\"",
        "'",
        "\n",
        "\r\n",
        "\t",
        " ",
        "{",
        "}",
        "[",
        "]",
        ":",
        ": ",
        ",",
        "-",
        "- ",
        "#",
        "&a",
        "*a",
        "!",
        "|",
        ">",
        "%",
        "@",
        "`",
        "$(",
        ")",
        "\\",
        "\0",
        "\u{2028}",
        "é",
        "🙂",
        "privileged: true",
        "\"privileged\": true",
        "securityContext",
        "name: x",
        "hostNetwork",
        "8080",
        "10.0.0.0/8",
        "/",
        ".",
        "default:debug",
        "true",
        "REDIRECT",
        "250m",
        "Mi",
        "holdApplicationUntilProxyStarts",
        "{{",
        "}}",
        "\u{7f}",
        "\u{1b}[31m",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|_| {
            let mut s = String::new();
            if next() % 3 == 0 {
                let (_, valid) = HONOURED[next() as usize % HONOURED.len()];
                s.push_str(valid[next() as usize % valid.len()]);
            }
            for _ in 0..next() % 12 {
                s.push_str(FRAGMENTS[next() as usize % FRAGMENTS.len()]);
            }
            s
        })
        .collect()
}

/// The structure of a JSON value: every path, list items named by their `name` where they have one.
pub(crate) fn shape(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, path: &mut String, out: &mut BTreeSet<String>) {
        let len = path.len();
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    path.push('/');
                    path.push_str(k);
                    out.insert(path.clone());
                    walk(x, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    match x.get("name").and_then(Value::as_str) {
                        Some(n) => path.push_str(&format!("/[{n}]")),
                        None => path.push_str(&format!("/[{i}]")),
                    }
                    out.insert(path.clone());
                    walk(x, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// Paths of the string leaves that contain `needle`.
fn leaves_containing(v: &Value, needle: &str) -> Vec<String> {
    fn walk(v: &Value, needle: &str, path: &mut String, out: &mut Vec<String>) {
        let len = path.len();
        match v {
            Value::String(s) if s.contains(needle) => out.push(path.clone()),
            Value::Object(m) => {
                for (k, x) in m {
                    path.push('/');
                    path.push_str(k);
                    walk(x, needle, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    match x.get("name").and_then(Value::as_str) {
                        Some(n) => path.push_str(&format!("/[{n}]")),
                        None => path.push_str(&format!("/[{i}]")),
                    }
                    walk(x, needle, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, needle, &mut String::new(), &mut out);
    out
}

/// The security contexts of every container, by name.
fn security_contexts(pod: &Value) -> BTreeMap<String, Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["securityContext"].clone(),
            )
        })
        .collect()
}

fn no_privilege(v: &Value, context: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                assert!(
                    !(matches!(
                        k.as_str(),
                        "privileged" | "allowPrivilegeEscalation" | "hostNetwork" | "hostPID"
                    ) && x == &Value::Bool(true)),
                    "{k}: true in {context}"
                );
                no_privilege(x, context);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| no_privilege(x, context)),
        _ => {}
    }
}

/// Checks one injected pod (as JSON) against what the same annotation's benign values give.
pub(crate) struct Expectations {
    allowed_shape: BTreeSet<String>,
    security: BTreeMap<String, Value>,
    baseline_text: String,
}

impl Expectations {
    /// From the injected forms of a document with each benign value of `key` and without it;
    /// `root` is where the pod's metadata and spec are in it (`""` for a pod).
    pub(crate) fn new(
        key: &str,
        benign: &[&str],
        root: &str,
        mut injected: impl FnMut(Option<&str>) -> Value,
    ) -> Expectations {
        let pod_at = |doc: &Value| security_contexts(doc.pointer(root).unwrap_or(&Value::Null));
        let baseline = injected(None);
        let security = pod_at(&baseline);
        assert!(security.contains_key("istio-proxy"), "{root}: no pod there");
        let baseline_text = baseline.to_string();
        let mut allowed_shape = shape(&baseline);
        for b in benign {
            let out = injected(Some(b));
            assert_eq!(pod_at(&out), security, "{key}={b:?}");
            allowed_shape.extend(shape(&out));
        }
        Expectations {
            allowed_shape,
            security,
            baseline_text,
        }
    }

    /// `root` is where the pod's metadata and spec are (`""` for a pod).
    pub(crate) fn check(&self, key: &str, value: &str, doc: &Value, root: &str) {
        let context = format!("{key}={:?}", truncated(value));
        let extra: Vec<_> = shape(doc)
            .difference(&self.allowed_shape)
            .cloned()
            .collect();
        assert!(extra.is_empty(), "{context} added {extra:#?}");
        let pod = doc.pointer(root).unwrap_or(&Value::Null);
        no_privilege(pod, &context);
        assert_eq!(security_contexts(pod), self.security, "{context}");
        // Where a distinctive value shows up, it is one opaque string in a place meant for it.
        if value.chars().count() >= 6 && !self.baseline_text.contains(value) {
            let annotations = format!("{root}/metadata/annotations/");
            for at in leaves_containing(doc, value) {
                let ok = at
                    .strip_prefix(&annotations)
                    .is_some_and(|k| HONOURED.iter().any(|(h, _)| *h == k))
                    || at.ends_with("/image")
                    || at.contains("/args/[")
                    || at.ends_with("/env/[PROXY_CONFIG]/value");
                assert!(ok, "{context} appears at {at}");
            }
        }
    }
}

fn truncated(v: &str) -> String {
    v.chars().take(80).collect()
}

/// A refusal must name the annotation in one short line, whatever the value.
pub(crate) fn check_refusal(key: &str, value: &str, message: &str) {
    let context = format!("{key}={:?}", truncated(value));
    assert!(message.contains(key), "{context}: {message}");
    assert!(
        message.len() < 2_000,
        "{context}: a {} byte message",
        message.len()
    );
    assert!(
        !message.contains(['\n', '\r', '\0']),
        "{context}: the message must be one line: {message:?}"
    );
}

fn pod_json(p: &Pod) -> Value {
    serde_json::to_value(p).expect("a pod encodes")
}

fn with_annotation(key: &str, value: Option<&str>) -> Pod {
    let mut p = typical_pod();
    if let Some(v) = value {
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), v.into());
    }
    p
}

fn configs() -> Vec<InjectionConfig> {
    vec![
        cfg(),
        InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            traffic_capture: TrafficCapture::Cni,
            ..cfg()
        },
        InjectionConfig {
            sidecar_mode: SidecarMode::Classic,
            hold_application_until_proxy_starts: true,
            concurrency: Some(2),
            ..cfg()
        },
    ]
}

/// Runs every value through the webhook's engine for every honoured annotation; returns how many
/// were accepted and refused, so a test can tell both paths ran.
fn run_engine(values: &[String], configs: &[InjectionConfig]) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for c in configs {
        for (key, benign) in HONOURED {
            let inject_one = |v: Option<&str>| {
                pod_json(&inject(&with_annotation(key, v), c).expect("benign values inject"))
            };
            let expect = Expectations::new(key, benign, "", inject_one);
            for value in values {
                match inject(&with_annotation(key, Some(value)), c) {
                    Ok(out) => {
                        accepted += 1;
                        expect.check(key, value, &pod_json(&out), "");
                    }
                    Err(e @ InjectError::InvalidAnnotation { .. }) => {
                        refused += 1;
                        check_refusal(key, value, &e.to_string());
                    }
                    Err(e) => panic!("{key}={:?}: unexpected {e}", truncated(value)),
                }
            }
        }
    }
    (accepted, refused)
}

#[test]
fn hostile_annotation_values_never_add_fields() {
    let (accepted, refused) = run_engine(&hostile_values(), &configs());
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn generated_annotation_values_never_add_fields() {
    let values = generated_values(400);
    assert_eq!(
        values,
        generated_values(400),
        "the generator is deterministic"
    );
    let (accepted, refused) = run_engine(&values, &configs()[..2]);
    assert!(
        accepted > 100 && refused > 100,
        "{accepted} accepted, {refused} refused"
    );
}

#[test]
fn accepted_values_stay_opaque_strings() {
    // A value the engine accepts for an image or a ProxyConfig field lands whole in one string.
    let image = "mirror.local/istio/proxyv2:1.31.1@sha256:0123456789abcdef";
    let out = inject(&with_annotation(keys::PROXY_IMAGE, Some(image)), &cfg()).unwrap();
    let spec = out.spec.unwrap();
    let images: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.name.starts_with("istio-"))
        .map(|c| c.image.as_deref())
        .collect();
    assert_eq!(images, [Some(image), Some(image)]);

    let hostile = "holdApplicationUntilProxyStarts: false\nproxyMetadata: {EVIL: \"\\\"}], \\\"privileged\\\": true\"}";
    let out = inject(&with_annotation(keys::PROXY_CONFIG, Some(hostile)), &cfg()).unwrap();
    let proxy = &out.spec.unwrap().init_containers.unwrap()[1];
    // proxyMetadata entries also become env vars of the proxy, as Istio sets them: one variable,
    // its value the same opaque string.
    let evil: Vec<_> = proxy
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == "EVIL")
        .map(|e| e.value.as_deref())
        .collect();
    assert_eq!(evil, [Some("\"}], \"privileged\": true")]);
    let pc = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PROXY_CONFIG")
        .and_then(|e| e.value.as_deref())
        .unwrap();
    let pc: Value = serde_json::from_str(pc).unwrap();
    assert_eq!(
        pc["proxyMetadata"]["EVIL"],
        json!("\"}], \"privileged\": true"),
        "the value round-trips as one string"
    );
    assert!(proxy.security_context.as_ref().unwrap().privileged == Some(false));
}

#[test]
fn the_offline_yaml_path_cannot_be_broken_out_of() {
    // `meshop inject -f` writes YAML again: the one place text is produced. A hostile value in
    // the input must come back as the same string, and the document's structure as a benign
    // value leaves it.
    let c = cfg();
    let mut values = hostile_values();
    values.retain(|v| v.len() < 100_000);
    values.extend(generated_values(100));
    let deployment = |key: &str, value: Option<&str>| {
        let mut annotations = serde_json::Map::new();
        if let Some(v) = value {
            annotations.insert(key.into(), json!(v));
        }
        let doc = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": annotations},
                "spec": {"initContainers": [{"name": "setup", "image": "busybox"}],
                    "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]}
            }}
        });
        serde_yaml::to_string(&doc).unwrap()
    };
    let injected = |key: &str, value: Option<&str>| -> Result<Value, InjectError> {
        let out = inject_yaml_stream(&deployment(key, value), &c)?;
        let back: Value = serde_yaml::from_str(&out).expect("meshop writes valid YAML");
        Ok(back)
    };
    let mut accepted = 0;
    for (key, benign) in HONOURED {
        let expect =
            Expectations::new(key, benign, "/spec/template", |v| injected(key, v).unwrap());
        for value in &values {
            match injected(key, Some(value)) {
                Ok(doc) => {
                    accepted += 1;
                    let ann = &doc["spec"]["template"]["metadata"]["annotations"][*key];
                    assert_eq!(
                        ann,
                        &json!(value),
                        "{key}: the value survives the YAML round trip"
                    );
                    expect.check(key, value, &doc, "/spec/template");
                }
                Err(e) => check_refusal(key, value, &e.to_string()),
            }
        }
    }
    assert!(accepted > 0);
}
