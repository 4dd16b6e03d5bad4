//! The `meshop` binary's offline commands.

use std::process::Command;

fn meshop(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshop"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (ok, out, _) = meshop(&["--help"]);
    assert!(ok);
    for sub in ["crd", "version", "render", "profile"] {
        assert!(out.contains(sub), "{sub} missing from:\n{out}");
    }
}

#[test]
fn render_a_file_and_a_profile() {
    let (ok, out, err) = meshop(&["render", "-f", "docs/examples/production.yaml"]);
    assert!(ok, "{err}");
    assert!(out.contains("name: istio-ingressgateway") && out.contains("type: LoadBalancer"));
    assert!(out.contains("service.beta.kubernetes.io/aws-load-balancer-type: nlb"));
    let (ok, out, _) = meshop(&["render", "--profile", "minimal", "--component", "istiod"]);
    assert!(
        ok && out.contains("kind: Deployment") && !out.contains("kind: CustomResourceDefinition")
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let (ok, _, err) = meshop(&["render", "--profile", "huge"]);
    assert!(!ok && err.contains("unknown profile \"huge\""), "{err}");
    let (ok, _, err) = meshop(&["render", "-f", "does-not-exist.yaml"]);
    assert!(!ok && err.contains("does-not-exist.yaml"), "{err}");
    let (ok, _, err) = meshop(&["render", "-f", "Cargo.toml"]);
    assert!(!ok && err.contains("not a valid MeshInstall"), "{err}");
}

#[test]
fn profile_list_and_show() {
    let (ok, out, _) = meshop(&["profile", "list"]);
    assert!(
        ok && out.lines().count() == 6 && out.contains("ambient"),
        "{out}"
    );
    let (ok, out, _) = meshop(&["profile", "show", "production"]);
    assert!(ok && out.contains("mtlsMode: STRICT"), "{out}");
}

/// `profile show` prints the values a MeshInstall with that profile really gets, defaults included.
#[test]
fn profile_show_prints_the_default_hub_and_namespace() {
    let (ok, out, err) = meshop(&["profile", "show", "demo"]);
    assert!(ok, "{err}");
    let spec: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(spec["hub"].as_str(), Some("docker.io/istio"), "{out}");
    assert_eq!(spec["namespace"].as_str(), Some("istio-system"), "{out}");
}

#[test]
fn inject_a_deployment_offline() {
    let dir = tempdir();
    let file = dir.join("deploy.yaml");
    std::fs::write(&file, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: host}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: x}]\n").unwrap();
    let (ok, out, err) = meshop(&[
        "inject",
        "-f",
        file.to_str().unwrap(),
        "--mesh",
        "docs/examples/production.yaml",
    ]);
    assert!(ok, "{err}");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    let text = serde_yaml::to_string(&docs[0]).unwrap();
    assert!(
        text.contains("istio-proxy") && text.contains("proxyv2:1.31.1"),
        "{text}"
    );
    // production uses native sidecars: the proxy is an init container that keeps running.
    assert!(text.contains("restartPolicy: Always"), "{text}");
    assert!(
        !serde_yaml::to_string(&docs[1])
            .unwrap()
            .contains("istio-proxy"),
        "hostNetwork pods stay as they are"
    );
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn version_lists_supported_and_end_of_life_versions_with_dates() {
    let (ok, out, err) = meshop(&["version"]);
    assert!(ok, "{err}");
    assert!(out.contains("default Istio version: 1.31.1"), "{out}");
    let line = |minor: &str| {
        out.lines()
            .find(|l| l.starts_with(minor))
            .unwrap_or_else(|| panic!("no line for {minor}:\n{out}"))
            .to_string()
    };
    let l131 = line("1.31 ");
    assert!(
        l131.contains("supported") && l131.contains("2026-08-31") && l131.contains("1.31.1"),
        "{l131}"
    );
    let l130 = line("1.30 ");
    assert!(
        l130.contains("supported") && l130.contains("1.30.5"),
        "{l130}"
    );
    let l129 = line("1.29 ");
    assert!(
        l129.contains("end-of-life") && l129.contains("2026-10-12"),
        "{l129}"
    );
    let l128 = line("1.28 ");
    assert!(
        l128.contains("end-of-life") && l128.contains("2026-07-01"),
        "{l128}"
    );
}

#[test]
fn render_and_inject_work_for_every_supported_version() {
    let dir = tempdir();
    let pod = dir.join("pod.yaml");
    std::fs::write(&pod, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: x}]\n").unwrap();
    for version in meshop::versions::supported() {
        let (ok, out, err) = meshop(&["render", "--profile", "demo", "--istio-version", &version]);
        assert!(ok, "render {version}: {err}");
        assert!(
            out.contains(&format!("docker.io/istio/pilot:{version}")),
            "render {version}"
        );
        assert!(
            out.contains(&format!("docker.io/istio/proxyv2:{version}")),
            "render {version}"
        );
        assert!(
            !out.lines().any(|l| l.contains("image:")
                && l.contains("istio/")
                && !l.contains(&version)
                && l.contains("pilot")),
            "render {version}: an image of another version"
        );
        let (ok, out, err) = meshop(&[
            "inject",
            "-f",
            pod.to_str().unwrap(),
            "--istio-version",
            &version,
        ]);
        assert!(ok, "inject {version}: {err}");
        assert!(
            out.contains(&format!("proxyv2:{version}")),
            "inject {version}: {out}"
        );
    }
    // An alias renders its newest patch; an end-of-life version is refused with the supported ones.
    let (ok, out, _) = meshop(&["render", "--profile", "minimal", "--istio-version", "1.30"]);
    assert!(ok && out.contains("pilot:1.30.5"));
    let (ok, _, err) = meshop(&[
        "render",
        "--profile",
        "minimal",
        "--istio-version",
        "1.28.2",
    ]);
    assert!(
        !ok && err.contains("end of life") && err.contains("1.31.1"),
        "{err}"
    );
}

#[test]
fn convert_prints_the_meshinstall_after_what_was_not_carried() {
    let (ok, out, err) = meshop(&["convert", "-f", "operator/tests/convert/legacy-addons.yaml"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("# Not carried (2 setting(s)):\n"), "{out}");
    assert!(out.contains("#   spec.installPackagePath = "));
    assert!(
        out.contains("\nkind: MeshInstall\n") && out.contains("  name: legacy\n"),
        "{out}"
    );
    let (ok, out, _) = meshop(&[
        "convert",
        "-f",
        "operator/tests/convert/ha-gateways.yaml",
        "-o",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && value["meshInstall"]["spec"]["profile"] == "minimal");
    assert_eq!(value["notCarried"], serde_json::json!([]));
    // Ambient is carried: profile, ztunnel and the CNI agent's ambient mode; the agent's own
    // namespace is not (meshop runs it in the control plane's). Anything not an IstioOperator
    // is refused.
    let (ok, out, err) = meshop(&["convert", "-f", "operator/tests/convert/ambient.yaml"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("# Not carried (1 setting(s)):\n#   spec.components.cni.namespace"),
        "{out}"
    );
    assert!(
        out.contains("  profile: ambient\n")
            && out.contains("      ambient:\n        enabled: true\n")
            && out.contains("    ztunnel:\n      enabled: true\n"),
        "{out}"
    );
    let (ok, _, err) = meshop(&["convert", "-f", "docs/examples/production.yaml"]);
    assert!(!ok && err.contains("not an IstioOperator"), "{err}");
}

#[test]
fn offline_diff_of_a_profile_switch_and_a_version_change() {
    let (ok, out, err) = meshop(&["diff", "--from-profile", "demo", "--to-profile", "minimal"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("profile demo -> profile minimal: 0 created, "),
        "{out}"
    );
    assert!(
        out.contains("\n  - Deployment/istio-system/istio-egressgateway\n"),
        "{out}"
    );
    let (ok, out, err) = meshop(&[
        "diff",
        "-f",
        "docs/examples/production.yaml",
        "--to-version",
        "1.30",
        "-o",
        "json",
    ]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let istiod = report["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "Deployment/istio-system/istiod")
        .expect("istiod changes");
    assert!(istiod["fields"].as_array().unwrap().iter().any(|f| {
        f["path"] == "spec.template.spec.containers[discovery].image"
            && f["after"].as_str().unwrap().ends_with(":1.30.5")
    }));
    // --exit-code: differences make the exit status 1, none make it 0.
    let (ok, _, _) = meshop(&[
        "diff",
        "--from-profile",
        "demo",
        "--to-profile",
        "minimal",
        "--exit-code",
    ]);
    assert!(!ok);
    let (ok, out, _) = meshop(&[
        "diff",
        "--from-profile",
        "demo",
        "--to-profile",
        "demo",
        "--exit-code",
    ]);
    assert!(
        ok && out.contains(": 0 created, 0 changed, 0 pruned"),
        "{out}"
    );
}

#[test]
fn completion_scripts_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = meshop(&["completion", shell]);
        assert!(ok && out.contains("convert"), "{shell}: {err}");
    }
    let (ok, _, err) = meshop(&["completion", "powershell"]);
    assert!(!ok && err.contains("invalid value"), "{err}");
}

#[test]
fn cluster_commands_without_a_cluster_fail_with_a_clear_error() {
    let missing = std::env::temp_dir().join("meshop-no-such-kubeconfig");
    let kubeconfig = missing.to_str().unwrap();
    for args in [
        vec!["status", "--kubeconfig", kubeconfig],
        vec!["check", "--kubeconfig", kubeconfig],
        vec![
            "diff",
            "-f",
            "docs/examples/production.yaml",
            "--kubeconfig",
            kubeconfig,
        ],
    ] {
        let (ok, _, err) = meshop(&args);
        assert!(!ok && err.contains("read kubeconfig"), "{args:?}: {err}");
    }
}

#[test]
fn check_against_an_api_server_that_does_not_answer_fails_once_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("meshop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
    )
    .unwrap();
    let (ok, out, err) = meshop(&["check", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(!ok, "{err}");
    assert!(
        out.contains("   1. FAIL  kubernetes-version    cannot read version"),
        "{out}"
    );
    assert!(
        out.contains("0 passed, 0 warning(s), 1 failed, 16 skipped"),
        "{out}"
    );
    let (ok, _, err) = meshop(&["status", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    assert!(
        !ok && err.contains("cannot reach the Kubernetes API server"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
