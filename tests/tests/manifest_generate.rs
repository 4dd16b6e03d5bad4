//! Istio's own `istioctl manifest generate` inputs (the 44 IstioOperator files of
//! `operator/cmd/mesh/testdata/manifest-generate/input/`, release-1.31; a copy in
//! `../shared/judges/istio-testdata/manifest-generate/`) through `meshop convert` and `meshop
//! render`, compared setting by setting with `istioctl manifest generate` of the same file
//! (machinery: `meshop_testenv::manifest_generate`; what it compares, and how, is in its
//! documentation and in docs/istio-compatibility.md, "`istioctl manifest generate` of Istio's
//! inputs").
//!
//! Each input comes out one of: skipped (a topology meshop does not install: [`SKIPPED`], each
//! with the reason `meshop convert` must give for it), refused (by istioctl or by convert), or
//! compared. Every setting convert does not carry and every difference of a compared input is a
//! row of the generated section of docs/istio-compatibility.md, keyed by input, path and value,
//! with its reason; the test fails when the section differs from what it finds (a new difference
//! or a row that no longer occurs alike). `MESHOP_BLESS=1` rewrites the section, keeping the
//! reason of every row that still occurs (new rows get `pending: write the reason`, which fails the
//! test until a person writes why the difference is deliberate). Every input, with
//! every setting not carried and every difference with both values, is written to
//! `$CARGO_TARGET_TMPDIR/manifest-generate.txt`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use meshop_testenv::conformance::{Difference, show};
use meshop_testenv::istio::IstioBinaries;
use meshop_testenv::manifest_generate::{
    Settings, Sides, both_sides, compare, inputs, leaf_count, meshop_convert, settings, topology,
};
use serde_json::{Value, json};

/// Inputs whose topology meshop does not install, and what `meshop convert` must say about them
/// (in its error or in the reason of a setting it does not carry).
const SKIPPED: &[(&str, &str)] = &[
    // Remote control planes (the remote profile).
    ("istiod_remote.yaml", "multi-cluster"),
    ("istiod_remote_config.yaml", "multi-cluster"),
    ("istiod_remote_ipv6.yaml", "multi-cluster"),
    ("istiod_remote_local.yaml", "multi-cluster"),
];

use meshop_testenv::blessed::{PENDING, reasons};

const BEGIN: &str = "<!-- BEGIN GENERATED: manifest generate (MESHOP_BLESS=1 cargo test -p meshop-testenv --test manifest_generate) -->\n";
const END: &str = "<!-- END GENERATED -->";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/istio-compatibility.md")
}

/// How an input came out.
enum Outcome {
    /// A topology meshop does not install: the reason convert gives.
    Skipped(String),
    /// Refused by istioctl or by meshop convert (the message says which).
    Refused(String),
    /// Compared: how many settings, and the differences.
    Compared(usize, Vec<Difference>),
}

struct Input {
    name: String,
    /// How many settings (leaves) the IstioOperator's spec has.
    leaves: usize,
    /// What convert did not carry (`{path, value, reason}`), or its error.
    not_carried: Result<Vec<Value>, String>,
    outcome: Outcome,
}

impl Input {
    fn lost(&self) -> usize {
        match &self.not_carried {
            Ok(n) => n.iter().map(|n| leaf_count(&n["value"]).max(1)).sum(),
            Err(_) => self.leaves,
        }
    }

    fn nothing_lost(&self) -> bool {
        matches!(&self.not_carried, Ok(n) if n.is_empty())
    }

    fn identical(&self) -> bool {
        matches!(&self.outcome, Outcome::Compared(_, d) if d.is_empty())
    }
}

fn run_input(bin: &IstioBinaries, file: &Path, dir: &Path) -> Input {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(file).unwrap();
    let first = meshop_testenv::conformance::docs(&text)
        .ok()
        .and_then(|d| d.into_iter().next())
        .unwrap_or(Value::Null);
    let leaves = leaf_count(&first["spec"]);
    // Messages name the file by its name alone: the checkout's path is no part of the outcome.
    let local = |e: String| e.replace(&file.display().to_string(), &name);
    let conversions = meshop_convert(file).map_err(local);
    let not_carried = conversions.clone().map(|cs| {
        cs.iter()
            .flat_map(|c| c["notCarried"].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>()
    });
    let skip = SKIPPED.iter().find(|(f, _)| *f == name);
    let outcome = if let Some((_, why)) = skip {
        let gives = match &conversions {
            Err(e) => e.contains(why),
            Ok(cs) => cs.iter().any(|c| {
                c["notCarried"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["reason"].as_str().is_some_and(|r| r.contains(why)))
            }),
        };
        assert!(
            gives,
            "{name} is skipped as {why:?}, but meshop convert does not say so: {conversions:?}"
        );
        Outcome::Skipped(why.to_string())
    } else {
        let prefix = name.trim_end_matches(".yaml");
        match both_sides(bin, file, &first, dir, prefix).unwrap() {
            Err(refused) => Outcome::Refused(local(refused)),
            Ok((input, _)) => {
                let base_file = dir.join(format!("{prefix}-topology.yaml"));
                std::fs::write(
                    &base_file,
                    serde_json::to_string(&topology(&first)).unwrap(),
                )
                .unwrap();
                let base_prefix = format!("{prefix}-topology");
                match both_sides(bin, &base_file, &topology(&first), dir, &base_prefix).unwrap() {
                    Err(refused) => Outcome::Refused(format!("topology baseline: {refused}")),
                    Ok((base, _)) => {
                        let (fields, differences) = compare(&base, &input);
                        Outcome::Compared(fields, differences)
                    }
                }
            }
        }
    };
    Input {
        name,
        leaves,
        not_carried,
        outcome,
    }
}

/// A value as a table cell shows it: `code`, with `|` escaped.
fn cell(text: &str) -> String {
    format!("`{}`", text.replace('|', "\\|"))
}

fn summary(results: &[Input]) -> String {
    let count = |f: &dyn Fn(&Input) -> bool| results.iter().filter(|r| f(r)).count();
    let skipped = count(&|r| matches!(r.outcome, Outcome::Skipped(_)));
    let refused = count(&|r| matches!(r.outcome, Outcome::Refused(_)));
    let compared = count(&|r| matches!(r.outcome, Outcome::Compared(..)));
    let considered = results.len() - skipped;
    let lost = count(&|r| !matches!(r.outcome, Outcome::Skipped(_)) && r.nothing_lost());
    let identical = count(&Input::identical);
    let both = count(&|r| r.identical() && r.nothing_lost());
    format!(
        "{} inputs: {skipped} skipped (a topology meshop does not install), {refused} refused, \
         {compared} compared; of the {considered} not skipped, {lost} converted with nothing \
         lost; of the {compared} compared, {identical} identical in comparison, {both} of them \
         with nothing lost",
        results.len()
    )
}

/// The generated section: the summary, each input's outcome, and every setting not carried and
/// every difference with its reason (from `reasons`, by the row without its reason).
fn section(results: &[Input], reasons: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    writeln!(s, "{}.\n", summary(results)).unwrap();
    writeln!(
        s,
        "| input | outcome | settings | not carried | settings compared | differences |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|").unwrap();
    for r in results {
        let (outcome, fields, differ) = match &r.outcome {
            Outcome::Skipped(why) => (format!("skipped: {why}"), "".into(), "".into()),
            Outcome::Refused(why) => (why.replace('|', "\\|"), "".into(), "".into()),
            Outcome::Compared(fields, d) => (
                "compared".to_string(),
                fields.to_string(),
                d.len().to_string(),
            ),
        };
        writeln!(
            s,
            "| `{}` | {outcome} | {} | {} | {fields} | {differ} |",
            r.name,
            r.leaves,
            r.lost()
        )
        .unwrap();
    }
    let reason = |row: &str| {
        reasons
            .get(row)
            .cloned()
            .unwrap_or_else(|| PENDING.to_string())
    };
    writeln!(s, "\n### Settings `meshop convert` does not carry\n").unwrap();
    writeln!(s, "| input | setting | value | reason |").unwrap();
    writeln!(s, "|---|---|---|---|").unwrap();
    for r in results {
        if matches!(r.outcome, Outcome::Skipped(_)) {
            continue;
        }
        let rows: Vec<String> = match &r.not_carried {
            Ok(n) => n
                .iter()
                .map(|n| {
                    format!(
                        "| `{}` | {} | {}",
                        r.name,
                        cell(n["path"].as_str().unwrap_or_default()),
                        cell(&n["value"].to_string())
                    )
                })
                .collect(),
            Err(e) => vec![format!(
                "| `{}` | (refused) | {}",
                r.name,
                cell(e.lines().next().unwrap_or_default())
            )],
        };
        for row in rows {
            writeln!(s, "{row} | {} |", reason(&row)).unwrap();
        }
    }
    writeln!(s, "\n### Differences from `istioctl manifest generate`\n").unwrap();
    writeln!(s, "| input | setting | istioctl | meshop | reason |").unwrap();
    writeln!(s, "|---|---|---|---|---|").unwrap();
    for r in results {
        let Outcome::Compared(_, differences) = &r.outcome else {
            continue;
        };
        for d in differences {
            let row = format!(
                "| `{}` | {} | {} | {}",
                r.name,
                cell(&d.path),
                cell(&show(&d.istioctl)),
                cell(&show(&d.meshop))
            );
            writeln!(s, "{row} | {} |", reason(&row)).unwrap();
        }
    }
    s
}

/// A readable account of every input.
fn details(results: &[Input]) -> String {
    let mut s = String::new();
    writeln!(s, "{}\n", summary(results)).unwrap();
    for r in results {
        writeln!(s, "## {}", r.name).unwrap();
        match &r.not_carried {
            Ok(n) => {
                writeln!(
                    s,
                    "convert: {} settings, {} not carried",
                    r.leaves,
                    r.lost()
                )
                .unwrap();
                for n in n {
                    writeln!(
                        s,
                        "  not carried: {} = {}\n      {}",
                        n["path"].as_str().unwrap_or_default(),
                        n["value"],
                        n["reason"].as_str().unwrap_or_default()
                    )
                    .unwrap();
                }
            }
            Err(e) => writeln!(s, "convert refuses: {e}").unwrap(),
        }
        match &r.outcome {
            Outcome::Skipped(why) => writeln!(s, "skipped: {why}").unwrap(),
            Outcome::Refused(why) => writeln!(s, "{why}").unwrap(),
            Outcome::Compared(fields, differences) => {
                writeln!(
                    s,
                    "compared: {fields} settings, {} differences",
                    differences.len()
                )
                .unwrap();
                for d in differences {
                    writeln!(
                        s,
                        "  {}\n      istioctl: {}\n      meshop:   {}",
                        d.path,
                        show(&d.istioctl),
                        show(&d.meshop)
                    )
                    .unwrap();
                }
            }
        }
        writeln!(s).unwrap();
    }
    s
}

#[test]
fn istios_manifest_generate_inputs_come_out_as_the_document_says() {
    let started = Instant::now();
    let bin = IstioBinaries::locate().unwrap();
    let files = inputs().unwrap();
    assert_eq!(files.len(), 44, "Istio's 44 manifest-generate inputs");
    for (skipped, _) in SKIPPED {
        assert!(
            files.iter().any(|f| f.ends_with(skipped)),
            "{skipped} is among the inputs"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // Two workers: istioctl runs four times per input.
    let results: Vec<Input> = std::thread::scope(|scope| {
        let halves: Vec<Vec<PathBuf>> = vec![
            files.iter().step_by(2).cloned().collect(),
            files.iter().skip(1).step_by(2).cloned().collect(),
        ];
        let handles: Vec<_> = halves
            .into_iter()
            .map(|half| {
                let (bin, dir) = (&bin, dir.path());
                scope.spawn(move || {
                    half.iter()
                        .map(|f| run_input(bin, f, dir))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Input> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    });

    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("manifest-generate.txt");
    std::fs::write(&report, details(&results)).unwrap();
    println!(
        "{} (in {:.1} s; every input in {})",
        summary(&results),
        started.elapsed().as_secs_f64(),
        report.display()
    );

    let current = meshop_testenv::blessed::current(&doc_path(), BEGIN, END);
    let generated = section(&results, &reasons(&current));
    // Every row left is a deliberate difference with its own reason.
    let pending: Vec<&str> = generated.lines().filter(|l| l.contains(PENDING)).collect();
    meshop_testenv::blessed::check(&doc_path(), BEGIN, END, &generated, &report);
    assert!(
        pending.is_empty(),
        "{} row(s) of docs/istio-compatibility.md have no reason yet (a setting convert does not \
         carry, or a difference, that is not deliberate until its reason says why):\n  {}",
        pending.len(),
        pending.join("\n  ")
    );
}

fn sides(istioctl: Value, meshop: Value) -> Sides {
    let flat = |v: Value| -> Settings {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Sides {
        istioctl: flat(istioctl),
        meshop: flat(meshop),
    }
}

#[test]
fn a_setting_is_what_an_input_changes_and_both_tools_must_agree_on_it() {
    let env = "Deployment/istiod/spec/template/spec/containers[discovery]/env[X]/value";
    let cpu = "Deployment/istiod/spec/template/spec/containers[discovery]/resources/requests/cpu";
    let image = "Deployment/istiod/spec/template/spec/containers[discovery]/image";
    // The baselines differ (each tool's own image and requests): no difference by themselves.
    let base = sides(
        json!({ image: "istio/pilot:1.31.1", cpu: "500m" }),
        json!({ image: "docker.io/istio/pilot:1.31.1", cpu: "100m" }),
    );
    let (fields, found) = compare(&base, &base.clone());
    assert_eq!((fields, found), (0, vec![]));
    // Both set the same request (written differently) and istioctl sets env X: the request
    // agrees, X is missing on meshop's side.
    let input = sides(
        json!({ image: "istio/pilot:1.31.1", cpu: "0.25", env: "1" }),
        json!({ image: "docker.io/istio/pilot:1.31.1", cpu: "250m" }),
    );
    let (fields, found) = compare(&base, &input);
    assert_eq!(fields, 2);
    assert_eq!(
        found,
        vec![Difference {
            path: env.into(),
            istioctl: Some(json!("1")),
            meshop: None
        }]
    );
    // meshop changing what istioctl keeps is a difference too.
    let input = sides(
        json!({ image: "istio/pilot:1.31.1", cpu: "500m" }),
        json!({ image: "docker.io/istio/pilot:1.30.5", cpu: "100m" }),
    );
    let (_, found) = compare(&base, &input);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, image);
}

#[test]
fn where_a_workload_runs_is_compared_as_is() {
    let ns = "Deployment/user-ingressgateway/metadata/namespace";
    let both = sides(json!({ ns: "istio-system" }), json!({}));
    let (_, found) = compare(&both, &both.clone());
    assert_eq!(found.len(), 1, "a gateway only istioctl renders: {found:?}");
    assert_eq!(found[0].meshop, None);
}

#[test]
fn settings_read_containers_by_name_and_json_strings_by_key() {
    let deployment = json!({
        "kind": "Deployment",
        "metadata": { "name": "istiod", "namespace": "istio-system" },
        "spec": { "replicas": 2, "template": {
            "metadata": { "annotations": { "a": "{\"k\":1,\"l\":2}" } },
            "spec": {
                "nodeSelector": { "n": "x" },
                "containers": [{ "name": "discovery", "args": ["a", "b"],
                    "env": [{ "name": "E", "valueFrom": { "fieldRef": { "fieldPath": "p" } } }] }]
            }
        } }
    });
    let mesh = json!({
        "kind": "ConfigMap",
        "metadata": { "name": "istio" },
        "data": { "mesh": "rootNamespace: x\ndefaultConfig:\n  drainDuration: 12s\n" }
    });
    let s = settings(&[deployment, mesh]);
    let keys: Vec<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ConfigMap/istio/#exists",
            "ConfigMap/istio/mesh/defaultConfig/drainDuration",
            "ConfigMap/istio/mesh/rootNamespace",
            "Deployment/istiod/#exists",
            "Deployment/istiod/metadata/namespace",
            "Deployment/istiod/spec/replicas",
            "Deployment/istiod/spec/template/metadata/annotations/a/k",
            "Deployment/istiod/spec/template/metadata/annotations/a/l",
            "Deployment/istiod/spec/template/spec/containers[discovery]/args",
            "Deployment/istiod/spec/template/spec/containers[discovery]/env[E]/name",
            "Deployment/istiod/spec/template/spec/containers[discovery]/env[E]/valueFrom/fieldRef/fieldPath",
            "Deployment/istiod/spec/template/spec/nodeSelector/n",
        ]
    );
}

#[test]
fn the_topology_baseline_keeps_only_what_is_installed_where() {
    let iop: Value = serde_yaml::from_str(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\nspec:\n  profile: empty\n  revision: r\n  hub: h\n  meshConfig: {rootNamespace: y}\n  components:\n    pilot: {enabled: true, namespace: c, k8s: {replicaCount: 3}}\n    ingressGateways: [{name: a, enabled: true, label: {x: y}, k8s: {}}]\n  values:\n    global: {proxy: {tracer: none}}\n    gateways: {istio-egressgateway: {enabled: true, autoscaleMin: 2}}\n",
    )
    .unwrap();
    assert_eq!(
        topology(&iop),
        json!({
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": { "name": "x" },
            "spec": {
                "profile": "empty",
                "revision": "r",
                "components": {
                    "pilot": { "enabled": true, "namespace": "c" },
                    "ingressGateways": [{ "name": "a", "enabled": true }]
                },
                "values": { "gateways": { "istio-egressgateway": { "enabled": true } } }
            }
        })
    );
}
