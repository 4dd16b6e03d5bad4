//! The load tool end to end, as a correctness check (its figures are printed, never asserted):
//! `meshop-webhook-load --pods` starts a control plane and `meshop run`, answers a review over
//! TLS with HTTP/2 from the real process, then creates pods through the API server in a
//! namespace the webhook serves (each must come back with istio-proxy, failurePolicy Fail) and in
//! one it does not (none may). The tool fails on any other outcome.
//!
//! `--hold` against `meshop run` with short limits: slow clients (half a request head, nothing
//! after the handshake, idle after a request), more than the connection cap, are all closed by
//! the server while the load beside them keeps being answered; the tool fails if one stays open.

use std::process::Command;

#[test]
fn the_load_tool_injects_through_the_api_server_over_http2() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshop-webhook-load"))
        .args(["--http", "2", "--streams", "2", "--pods", "4"])
        .output()
        .expect("run meshop-webhook-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "pods-webhook (webhook called): 4 pods",
        "pods-plain (webhook not called): 4 pods",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[test]
fn slow_and_idle_clients_are_closed_while_admission_goes_on() {
    let out = Command::new(env!("CARGO_BIN_EXE_meshop-webhook-load"))
        .args([
            "--http",
            "2",
            "--seconds",
            "4",
            "--hold",
            "300",
            "--hold-limit",
            "20",
            "--operator-arg=--webhook-header-timeout=2",
            "--operator-arg=--webhook-idle-timeout=3",
            "--operator-arg=--webhook-max-connections=128",
        ])
        .output()
        .expect("run meshop-webhook-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for kind in ["HalfHead", "Nothing", "IdleAfterRequest"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{kind}:")))
            .unwrap_or_else(|| panic!("no {kind} line in:\n{stdout}"));
        assert!(
            line.starts_with(&format!("{kind}: 100 held")) && line.ends_with("still open: 0"),
            "{line}"
        );
    }
    // 300 clients against a cap of 128: the server stopped accepting at the cap.
    let waits = stdout
        .lines()
        .find_map(|l| l.split("meshop_webhook_connection_cap_waits_total ").nth(1))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no cap waits in:\n{stdout}"));
    assert!(waits > 0, "{stdout}");
    assert!(
        stdout.contains("load beside   300 slow clients:"),
        "{stdout}"
    );
}
