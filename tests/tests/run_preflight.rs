//! `meshop run` against a cluster that lacks what it needs: it exits at once with one line that
//! names what is missing and what to do, instead of a raw error dump.

use std::process::Command;

fn run_against(cp: &meshop_testenv::ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(meshop_testenv::meshop_binary().unwrap())
        .arg("run")
        .args(["--health-addr=127.0.0.1:0", "--webhook-addr=127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.starts_with("error"))
        .collect()
}

#[test]
fn a_missing_operator_namespace_is_named_in_one_line() {
    let cp = meshop_testenv::shared();
    let (ok, stderr) = run_against(cp, &["--lease-namespace=no-such-namespace"]);
    assert!(!ok, "meshop run must fail:\n{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    let line = errors[0];
    assert!(
        line.contains("namespace no-such-namespace does not exist")
            && line.contains("kubectl create namespace no-such-namespace"),
        "{line}"
    );
    // No error chain that repeats itself.
    assert_eq!(line.matches("does not exist").count(), 1, "{line}");
}

#[test]
fn an_unreachable_api_server_is_named_in_one_line() {
    let cp = meshop_testenv::shared();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    // Same credentials, a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    let broken = kubeconfig.replace(&server, &format!("https://127.0.0.1:{port}"));
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, broken).unwrap();
    let out = Command::new(meshop_testenv::meshop_binary().unwrap())
        .args(["run", "--health-addr=127.0.0.1:0", "--webhook-addr=off"])
        .env("KUBECONFIG", &path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    assert!(
        errors[0].contains("cannot reach the Kubernetes API server"),
        "{stderr}"
    );
    assert!(errors[0].contains("KUBECONFIG"), "{stderr}");
}
