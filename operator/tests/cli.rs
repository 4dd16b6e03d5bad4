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
    assert!(ok && out.lines().count() == 5);
    let (ok, out, _) = meshop(&["profile", "show", "production"]);
    assert!(ok && out.contains("mtlsMode: STRICT"), "{out}");
}
