//! Every YAML document meshop writes means the same to a YAML 1.1 reader (kubectl, Go's yaml.v2
//! and sigs.k8s.io/yaml, PyYAML) as to a YAML 1.2 reader (serde_yaml): a string never reads as a
//! boolean, null, number or timestamp. The oracle below is the YAML 1.1 type repository's
//! resolver rules (yaml.org/type: bool, null, int, float, timestamp, merge, value) plus what
//! yaml.v2 resolves beyond them; it is written from those rules, not from meshop's quoting code.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use meshop::api::{MeshInstall, Profile};
use meshop::effective::{Installation, Owner};
use regex::Regex;
use yaml_rust2::parser::{Event, EventReceiver, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// What a YAML 1.1 reader makes of a plain (unquoted) scalar.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Yaml11 {
    Str,
    Bool,
    Null,
    Int,
    Float,
    Timestamp,
    Merge,
    Value,
}

fn anchored(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).unwrap()
}

static RULES: LazyLock<Vec<(Yaml11, Regex)>> = LazyLock::new(|| {
    vec![
        // yaml.org/type/bool.html
        (
            Yaml11::Bool,
            anchored(
                "y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
            ),
        ),
        // yaml.org/type/null.html (the empty plain scalar is null too)
        (Yaml11::Null, anchored("~|null|Null|NULL|")),
        // yaml.org/type/int.html: binary, octal (leading 0), decimal, hex, sexagesimal
        (
            Yaml11::Int,
            anchored(
                r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
            ),
        ),
        // Go's strconv.ParseInt(s, 0, 64), which yaml.v2 tries first: 0b / 0o / 0x in either case.
        (
            Yaml11::Int,
            anchored(r"[-+]?(?:0[bB][01_]+|0[oO][0-7_]+|0[xX][0-9a-fA-F_]+|[0-9][0-9_]*)"),
        ),
        // yaml.org/type/float.html
        (
            Yaml11::Float,
            anchored(
                r"[-+]?(?:[0-9][0-9_]*)?\.[0-9.]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            ),
        ),
        // yaml.v2's float syntax (1e3 is a float there, though not in the 1.1 type repository).
        (
            Yaml11::Float,
            anchored(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"),
        ),
        // yaml.org/type/timestamp.html
        (
            Yaml11::Timestamp,
            anchored(
                r"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*Z|[-+][0-9][0-9]?(?::[0-9][0-9])?)?",
            ),
        ),
        // yaml.org/type/merge.html and value.html
        (Yaml11::Merge, anchored("<<")),
        (Yaml11::Value, anchored("=")),
    ]
});

fn yaml11(plain: &str) -> Yaml11 {
    RULES
        .iter()
        .find(|(_, re)| re.is_match(plain))
        .map(|(t, _)| *t)
        .unwrap_or(Yaml11::Str)
}

/// Whether serde_yaml (YAML 1.2, the reader meshop itself and the round trip below use) reads a
/// plain scalar as a string.
fn yaml12_is_string(plain: &str) -> bool {
    matches!(
        serde_yaml::from_str::<serde_yaml::Value>(plain),
        Ok(serde_yaml::Value::String(_))
    )
}

#[derive(Default)]
struct PlainScalars(Vec<String>);

impl EventReceiver for PlainScalars {
    fn on_event(&mut self, ev: Event) {
        if let Event::Scalar(value, TScalarStyle::Plain, _, None) = ev {
            self.0.push(value);
        }
    }
}

/// The plain scalars (keys and values) of every document in `text` that a YAML 1.1 reader types
/// differently from a YAML 1.2 reader.
fn disagreements(text: &str) -> Result<Vec<String>, String> {
    let mut plain = PlainScalars::default();
    Parser::new_from_str(text)
        .load(&mut plain, true)
        .map_err(|e| e.to_string())?;
    Ok(plain
        .0
        .into_iter()
        .filter(|s| (yaml11(s) == Yaml11::Str) != yaml12_is_string(s))
        .map(|s| format!("{s:?} (YAML 1.1: {:?})", yaml11(&s)))
        .collect())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (what, YAML text) of every document meshop generates, in memory and on disk, including the
/// YAML embedded in rendered ConfigMaps (istiod reads its mesh config with a YAML 1.1 reader).
fn generated_documents() -> Vec<(String, String)> {
    let mut out = vec![
        ("meshop crd".to_string(), meshop::api::crd_yaml()),
        ("deploy-rbac".to_string(), meshop::deploy::rbac_yaml()),
    ];
    let mut installs: Vec<(String, Installation)> = Profile::ALL
        .iter()
        .map(|p| {
            (
                format!("render --profile {p}"),
                meshop::cli::installation(None, Some(*p), None).unwrap(),
            )
        })
        .collect();
    for p in Profile::ALL {
        out.push((
            format!("profile show {p}"),
            meshop::cli::profile_show(p).unwrap(),
        ));
    }
    for path in yaml_files(&root().join("docs/examples")) {
        let mi: MeshInstall =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let owner = Owner {
            name: "example".into(),
            uid: Some("1234".into()),
        };
        installs.push((
            format!("render -f {}", path.display()),
            Installation::resolve(owner, &mi.spec).unwrap(),
        ));
    }
    // User-supplied strings that YAML 1.1 would retype, in keys and values.
    let tricky: MeshInstall = serde_yaml::from_str(TRICKY).unwrap();
    installs.push((
        "render of user values".into(),
        Installation::resolve(
            Owner {
                name: "tricky".into(),
                uid: None,
            },
            &tricky.spec,
        )
        .unwrap(),
    ));
    for (what, install) in installs {
        let objects = meshop::render::render(&install).unwrap();
        let text = meshop::render::to_yaml(&objects);
        // The writer must not change what a YAML 1.2 reader sees: same objects back.
        let back: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let want: Vec<serde_json::Value> = objects
            .iter()
            .map(|o| serde_json::to_value(o.creation_object()).unwrap())
            .collect();
        assert_eq!(
            back, want,
            "{what}: the YAML does not read back as the objects"
        );
        for o in objects.iter().filter(|o| o.kind() == "ConfigMap") {
            let data = o.object.data["data"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (key, value) in data {
                let text = value.as_str().unwrap_or_default();
                if matches!(
                    serde_yaml::from_str::<serde_yaml::Value>(text),
                    Ok(serde_yaml::Value::Mapping(_))
                ) {
                    out.push((format!("{what}: ConfigMap {} {key}", o.name()), text.into()));
                }
            }
        }
        out.push((what, text));
    }
    // `meshop inject` writes the user's workload back: its label and annotation values too.
    let dir = std::env::temp_dir().join(format!("meshop-yaml11-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let workload = dir.join("deploy.yaml");
    std::fs::write(
        &workload,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, labels: {flag: \"on\"}}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web, octal: \"0777\", time: \"12:30\"}, annotations: {note: \"yes\", \"null\": \"~\"}}\n    spec:\n      containers: [{name: web, image: nginx, args: [\"off\", \"1e3\"]}]\n",
    )
    .unwrap();
    out.push((
        "meshop inject".into(),
        meshop::cli::inject(&workload, None, None).unwrap(),
    ));
    std::fs::remove_dir_all(&dir).ok();
    for dir in ["crds", "deploy", "operator/tests/golden", "docs/examples"] {
        for path in yaml_files(&root().join(dir)) {
            out.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    out
}

const TRICKY: &str = r#"
apiVersion: meshop.dev/v1alpha1
kind: MeshInstall
metadata: {name: tricky}
spec:
  profile: demo
  meshConfig: {trustDomain: "on"}
  injection: {proxy: {logLevel: "off"}}
  components:
    istiod:
      nodeSelector: {"y": "yes", "off": "NO", "<<": "=", "null": "~"}
      env:
      - {name: OCTAL, value: "0777"}
      - {name: SEXAGESIMAL, value: "12:30"}
      - {name: EXPONENT, value: "1e3"}
      - {name: HEX, value: "0x1F"}
      - {name: INFINITY, value: "-.inf"}
      - {name: DATE, value: "2001-12-14"}
      - {name: TIME, value: "2001-12-14 21:59:43.10 -5"}
      - {name: VERSION, value: "1.28.2"}
      - {name: EMPTY, value: ""}
      - {name: TRUE, value: "True"}
      - {name: QUOTE, value: "it's 1:2"}
    ingressGateway:
      service:
        annotations: {"on": "Off", "example.com/n": "n", "example.com/float": "+1_000.5e-3"}
"#;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_oracle_knows_yaml_1_1() {
    for (s, want) in [
        ("off", Yaml11::Bool),
        ("Y", Yaml11::Bool),
        ("NO", Yaml11::Bool),
        ("~", Yaml11::Null),
        ("0777", Yaml11::Int),
        ("0x1F", Yaml11::Int),
        ("0b101", Yaml11::Int),
        ("1_000", Yaml11::Int),
        ("12:30", Yaml11::Int),
        ("1e3", Yaml11::Float),
        ("1.5", Yaml11::Float),
        ("-.inf", Yaml11::Float),
        ("190:20:30.15", Yaml11::Float),
        ("2001-12-14", Yaml11::Timestamp),
        ("2001-12-14t21:59:43.10-05:00", Yaml11::Timestamp),
        ("<<", Yaml11::Merge),
        ("offline", Yaml11::Str),
        ("100m", Yaml11::Str),
        ("docker.io/istio", Yaml11::Str),
        ("istio-system", Yaml11::Str),
    ] {
        assert_eq!(yaml11(s), want, "{s}");
    }
    assert!(yaml12_is_string("off") && !yaml12_is_string("true") && !yaml12_is_string("1"));
}

#[test]
fn generated_yaml_means_the_same_to_yaml_1_1_and_1_2_readers() {
    let mut failures = Vec::new();
    let documents = generated_documents();
    assert!(documents.len() > 20, "{} documents", documents.len());
    for (what, text) in documents {
        match disagreements(&text) {
            Ok(bad) if bad.is_empty() => {}
            Ok(bad) => failures.push(format!("{what}: {}", bad.join(", "))),
            Err(e) => failures.push(format!("{what}: not YAML: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "plain scalars a YAML 1.1 reader types differently (quote them):\n{}",
        failures.join("\n")
    );
}
