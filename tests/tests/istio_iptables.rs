//! Istio's own `pilot-agent istio-iptables --dry-run` judges the `istio-init` arguments meshop
//! injects: for each traffic-capture setting, the real binary must accept the arguments and print
//! the rules the setting means (a port excluded is a RETURN, a range included is the only
//! redirect, ...). No root and no network namespace are needed: --dry-run only prints the rules.

use std::process::Command;

use meshop_testenv::istio::IstioBinaries;

/// The `istio-init` args meshop injects into a pod with these annotations (demo profile,
/// iptables capture), through the same engine as the webhook.
fn init_args(annotations: &[(&str, &str)]) -> Vec<String> {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "namespace": "default", "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "app", "ports": [{ "containerPort": 8080 }] }] }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, serde_yaml::to_string(&pod).unwrap()).unwrap();
    let out = meshop::cli::inject(&file, None, None).unwrap();
    let injected: serde_json::Value = serde_yaml::from_str(&out).unwrap();
    let init = injected["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-init")
        .unwrap_or_else(|| panic!("no istio-init in {out}"));
    init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The rules pilot-agent would program for `args`, or its complaint.
fn dry_run(args: &[String]) -> Result<String, String> {
    let bin = IstioBinaries::locate().unwrap();
    let out = Command::new(&bin.pilot_agent)
        .args(args)
        .arg("--dry-run")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || stderr.lines().any(|l| l.contains("\terror\t")) {
        return Err(format!("{args:?} refused:\n{stderr}"));
    }
    Ok(stdout)
}

#[test]
fn pilot_agent_accepts_every_capture_setting_and_reads_it_as_meant() {
    // (annotations, rules that must be printed, rules that must not)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[],
            &[
                "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
                "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
                // The agent's and Envoy's own ports are never captured.
                "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
                "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
                "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
                "--uid-owner 1337 -j RETURN",
            ],
            &[],
        ),
        (
            &[("traffic.sidecar.istio.io/excludeInboundPorts", "8080,9090")],
            &[
                "-A ISTIO_INBOUND -p tcp --dport 8080 -j RETURN",
                "-A ISTIO_INBOUND -p tcp --dport 9090 -j RETURN",
            ],
            &[],
        ),
        (
            &[("traffic.sidecar.istio.io/includeInboundPorts", "8080")],
            &["-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT"],
            &["-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"],
        ),
        (
            &[(
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                "10.0.0.0/8,192.168.0.0/16",
            )],
            &[
                "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN",
                "-A ISTIO_OUTPUT -d 192.168.0.0/16 -j RETURN",
            ],
            &[],
        ),
        (
            &[(
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.96.0.0/12",
            )],
            &["-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT"],
            &["-A ISTIO_OUTPUT -j ISTIO_REDIRECT"],
        ),
        (
            &[("traffic.sidecar.istio.io/excludeOutboundPorts", "5432")],
            &["-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN"],
            &[],
        ),
        (
            &[("traffic.sidecar.istio.io/includeOutboundPorts", "3306")],
            &["-A ISTIO_OUTPUT -p tcp --dport 3306 -j ISTIO_REDIRECT"],
            &[],
        ),
        (
            &[
                ("traffic.sidecar.istio.io/excludeInboundPorts", "9000"),
                (
                    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                    "169.254.169.254/32",
                ),
                ("traffic.sidecar.istio.io/excludeOutboundPorts", "443,8443"),
            ],
            &[
                "-A ISTIO_INBOUND -p tcp --dport 9000 -j RETURN",
                "-A ISTIO_OUTPUT -d 169.254.169.254/32 -j RETURN",
                "-A ISTIO_OUTPUT -p tcp --dport 443 -j RETURN",
                "-A ISTIO_OUTPUT -p tcp --dport 8443 -j RETURN",
            ],
            &[],
        ),
    ];
    for (annotations, present, absent) in cases {
        let args = init_args(annotations);
        assert_eq!(
            args.first().map(String::as_str),
            Some("istio-iptables"),
            "{args:?}"
        );
        let rules = dry_run(&args).unwrap_or_else(|e| panic!("{annotations:?}: {e}"));
        for rule in *present {
            assert!(
                rules.contains(rule),
                "{annotations:?}: no {rule:?} in\n{rules}"
            );
        }
        for rule in *absent {
            assert!(
                !rules.lines().any(|l| l.trim() == *rule),
                "{annotations:?}: unexpected {rule:?} in\n{rules}"
            );
        }
    }
}

#[test]
fn pilot_agent_refuses_what_it_should() {
    // The judge is not a rubber stamp: an argument it does not know is refused.
    let mut args = init_args(&[]);
    args.push("--no-such-flag".into());
    assert!(dry_run(&args).is_err());
}
