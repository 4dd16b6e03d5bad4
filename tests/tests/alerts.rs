//! meshop's alerting rules as the chart ships them (a PrometheusRule, `prometheusRule.enabled`),
//! judged by Prometheus's own promtool (built from github.com/prometheus/prometheus by
//! tests/testenv/build-judges.sh):
//! - `helm lint --strict` with it on; the real `helm template` renders the PrometheusRule only when asked, in the release
//!   namespace with the user's labels, its Prometheus templating passed through Helm untouched;
//! - `promtool check rules --lint=all --lint-fatal` on its `spec` (PromQL parsed, templates
//!   checked, no duplicates);
//! - `promtool test rules`: each alert, evaluated by Prometheus's rule engine on series written
//!   here, fires (with the expected labels and expanded annotations) on series that should
//!   trigger it, not before its `for` has passed, and stays quiet on healthy ones (a healthy mesh,
//!   no traffic, a burst that ended, a replica that led before and kept its last value).
//!
//! No control plane: `helm template` and promtool run offline.

use std::collections::{BTreeMap, BTreeSet};

use meshop_testenv::helm::Helm;
use meshop_testenv::judges::Judges;
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/chart/meshop");
const NS: &str = "meshop-system";
use meshop_testenv::helm::{KUBE_VERSION, docs};

/// `helm template` of the chart with `--set` values.
fn template(helm: &Helm, values: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "meshop",
        CHART,
        "-n",
        NS,
        "--kube-version",
        KUBE_VERSION,
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    docs(&helm.run(&args).unwrap())
}

/// A series as promtool's `input_series` takes it (`values` in its expanding notation:
/// `0+6x40` is 0, 6, 12, ... for 41 samples; `5x40` is 5 for 41 samples).
fn series(metric: &str, labels: &[(&str, &str)], values: &str) -> Value {
    let mut all: BTreeMap<&str, &str> = BTreeMap::from([("namespace", NS), ("pod", "meshop-a")]);
    all.extend(labels.iter().copied());
    let labels: Vec<String> = all.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    json!({ "series": format!("{metric}{{{}}}", labels.join(",")), "values": values })
}

/// What an alert's firing instance must carry: its rule's labels plus those of its expression,
/// and its annotations with `{{ $labels.x }}` replaced by those values (here, not by the code
/// under test: promtool expands them with Prometheus's template engine).
fn firing(alert: &str, labels: &[(&str, &str)]) -> Value {
    let rule = meshop::alerts::rules()
        .into_iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no alert {alert} in meshop::alerts"));
    let mut exp_labels: BTreeMap<String, String> =
        serde_json::from_value(rule["labels"].clone()).unwrap();
    exp_labels.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut exp_annotations: BTreeMap<String, String> =
        serde_json::from_value(rule["annotations"].clone()).unwrap();
    for text in exp_annotations.values_mut() {
        for (k, v) in &exp_labels {
            *text = text.replace(&format!("{{{{ $labels.{k} }}}}"), v);
        }
        assert!(
            !text.contains("{{"),
            "{alert}: unexpanded template in {text}"
        );
    }
    json!({ "exp_labels": exp_labels, "exp_annotations": exp_annotations })
}

/// One promtool test group: `name`, its input series, and for each evaluation time the alerts
/// of `alert` that must be firing then (none: it must not fire).
struct Case {
    alert: &'static str,
    name: &'static str,
    series: Vec<Value>,
    expect: Vec<(&'static str, Vec<Value>)>,
}

impl Case {
    fn fires(&self) -> bool {
        self.expect.iter().any(|(_, alerts)| !alerts.is_empty())
    }

    fn to_test_group(&self) -> Value {
        json!({
            "name": format!("{}: {}", self.alert, self.name),
            "interval": "1m",
            "input_series": self.series,
            "alert_rule_test": self.expect.iter().map(|(at, alerts)| json!({
                "eval_time": at,
                "alertname": self.alert,
                "exp_alerts": alerts,
            })).collect::<Vec<_>>(),
        })
    }
}

fn cases() -> Vec<Case> {
    use meshop::alerts::*;
    let requests = "meshop_webhook_requests_total";
    let expiry = "meshop_webhook_certificate_expiry_timestamp_seconds";
    let cap_waits = "meshop_webhook_connection_cap_waits_total";
    let errors = "meshop_reconcile_errors_total";
    let ready = "meshop_meshinstall_ready";
    let in_ns = [("namespace", NS)];
    let b = ("pod", "meshop-b");
    vec![
        Case {
            alert: WEBHOOK_ERRORS,
            name: "one request in eleven fails on both replicas",
            series: vec![
                series(requests, &[("outcome", "injected")], "0+60x40"),
                series(requests, &[("outcome", "error")], "0+6x40"),
                series(requests, &[b, ("outcome", "skipped")], "0+60x40"),
                series(requests, &[b, ("outcome", "error")], "0+6x40"),
            ],
            expect: vec![
                ("8m", vec![]),
                ("30m", vec![firing(WEBHOOK_ERRORS, &in_ns)]),
            ],
        },
        Case {
            alert: WEBHOOK_ERRORS,
            name: "one request in 601 fails",
            series: vec![
                series(requests, &[("outcome", "injected")], "0+600x40"),
                series(requests, &[("outcome", "error")], "0+1x40"),
            ],
            expect: vec![("30m", vec![])],
        },
        Case {
            alert: WEBHOOK_ERRORS,
            name: "no traffic",
            series: vec![
                series(requests, &[("outcome", "injected")], "0x40"),
                series(requests, &[("outcome", "error")], "0x40"),
            ],
            expect: vec![("30m", vec![])],
        },
        Case {
            alert: CERTIFICATE_EXPIRING,
            name: "six days left on both replicas",
            series: vec![
                series(expiry, &[], "518400x180"),
                series(expiry, &[b], "518400x180"),
            ],
            expect: vec![
                ("30m", vec![]),
                ("2h", vec![firing(CERTIFICATE_EXPIRING, &in_ns)]),
            ],
        },
        Case {
            alert: CERTIFICATE_EXPIRING,
            name: "thirty days left (the renewal point)",
            series: vec![series(expiry, &[], "2592000x180")],
            expect: vec![("2h", vec![])],
        },
        Case {
            alert: CERTIFICATE_EXPIRING,
            name: "no certificate loaded yet (the gauge's zero)",
            series: vec![series(expiry, &[], "0x180")],
            expect: vec![("2h", vec![])],
        },
        Case {
            alert: WEBHOOK_AT_CONNECTION_CAP,
            name: "the cap is reached every minute",
            series: vec![series(cap_waits, &[], "0+5x40")],
            expect: vec![
                ("5m", vec![]),
                ("30m", vec![firing(WEBHOOK_AT_CONNECTION_CAP, &in_ns)]),
            ],
        },
        Case {
            alert: WEBHOOK_AT_CONNECTION_CAP,
            name: "a burst that ended",
            series: vec![series(cap_waits, &[], "0+5x5 25x35")],
            expect: vec![("30m", vec![])],
        },
        Case {
            alert: RECONCILE_ERRORS,
            name: "apply keeps failing",
            series: vec![
                series(errors, &[("error", "apply")], "0+2x40"),
                series(errors, &[("error", "prune")], "0+1x3 3x37"),
            ],
            expect: vec![
                ("10m", vec![]),
                (
                    "30m",
                    vec![firing(
                        RECONCILE_ERRORS,
                        &[("namespace", NS), ("error", "apply")],
                    )],
                ),
            ],
        },
        Case {
            alert: RECONCILE_ERRORS,
            name: "a few errors that stopped",
            series: vec![series(errors, &[("error", "apply")], "0+1x3 3x37")],
            expect: vec![("30m", vec![])],
        },
        Case {
            alert: MESHINSTALL_NOT_READY,
            name: "one of two MeshInstalls stays not Ready",
            series: vec![
                series(ready, &[("meshinstall", "mesh")], "0x40"),
                series(ready, &[("meshinstall", "other")], "1x40"),
            ],
            expect: vec![
                ("10m", vec![]),
                (
                    "30m",
                    vec![firing(
                        MESHINSTALL_NOT_READY,
                        &[("namespace", NS), ("meshinstall", "mesh")],
                    )],
                ),
            ],
        },
        Case {
            alert: MESHINSTALL_NOT_READY,
            name: "Ready",
            series: vec![series(ready, &[("meshinstall", "mesh")], "1x40")],
            expect: vec![("30m", vec![])],
        },
        Case {
            alert: MESHINSTALL_NOT_READY,
            name: "Ready after ten minutes of installing",
            series: vec![series(ready, &[("meshinstall", "mesh")], "0x10 1x30")],
            expect: vec![("30m", vec![])],
        },
        Case {
            alert: MESHINSTALL_NOT_READY,
            name: "the former leader kept its last value, the leader sees Ready",
            series: vec![
                series(ready, &[("meshinstall", "mesh")], "0x40"),
                series(ready, &[b, ("meshinstall", "mesh")], "1x40"),
            ],
            expect: vec![("30m", vec![])],
        },
    ]
}

#[test]
fn the_charts_alerts_pass_promtool_and_fire_only_when_they_should() {
    let dir = tempfile::tempdir().unwrap();
    // `helm template` talks to no cluster: the kubeconfig is never read.
    let helm = Helm::locate(&dir.path().join("kubeconfig"), &dir.path().join("helm")).unwrap();
    let judges = Judges::locate().unwrap();

    let lint = helm
        .run(&[
            "lint",
            "--strict",
            CHART,
            "--set",
            "prometheusRule.enabled=true",
        ])
        .unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    // Off by default; on, one PrometheusRule in the release namespace with the user's labels.
    assert!(
        template(&helm, &[])
            .iter()
            .all(|o| o["kind"] != "PrometheusRule"),
        "the PrometheusRule is off by default"
    );
    let rendered = template(
        &helm,
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.labels.release=kube-prometheus-stack",
        ],
    );
    let rules: Vec<&Value> = rendered
        .iter()
        .filter(|o| o["kind"] == "PrometheusRule")
        .collect();
    assert_eq!(rules.len(), 1, "prometheusRule.enabled renders one");
    let rule = rules[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NS);
    assert_eq!(
        rule["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    assert_eq!(
        rule["metadata"]["labels"]["app.kubernetes.io/instance"],
        "meshop"
    );
    let spec = &rule["spec"];

    // What Prometheus loads is meshop::alerts' text, templates included: Helm left them alone.
    assert_eq!(spec, &meshop::alerts::rule_groups());

    // promtool check rules: the PrometheusRule's spec is a rule file.
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_vec_pretty(spec).unwrap(),
    )
    .unwrap();
    let (ok, out) = judges
        .promtool(
            dir.path(),
            &["check", "rules", "--lint=all", "--lint-fatal", "rules.yaml"],
        )
        .unwrap();
    println!("promtool check rules:\n{out}");
    let alerts: BTreeSet<String> = spec["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );

    // Every alert has a case where it fires and one where it must not; no case names an alert
    // the chart does not ship (promtool would pass a "does not fire" on a missing alert).
    let cases = cases();
    for alert in &alerts {
        assert!(
            cases.iter().any(|c| c.alert == alert && c.fires()),
            "{alert} has no case where it fires"
        );
        assert!(
            cases.iter().any(|c| c.alert == alert && !c.fires()),
            "{alert} has no healthy case"
        );
    }
    for case in &cases {
        assert!(alerts.contains(case.alert), "{} is not shipped", case.alert);
    }

    // promtool test rules: Prometheus's rule engine on the series above.
    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": cases.iter().map(Case::to_test_group).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.path().join("tests.yaml"),
        serde_json::to_vec_pretty(&tests).unwrap(),
    )
    .unwrap();
    let (ok, out) = judges
        .promtool(dir.path(), &["test", "rules", "tests.yaml"])
        .unwrap();
    println!("promtool test rules ({} cases):\n{out}", cases.len());
    assert!(ok, "promtool test rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}
