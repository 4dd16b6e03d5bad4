//! The load tool end to end, as a correctness check (its figures are printed, never asserted):
//! `meshop-webhook-load --pods` starts a control plane and `meshop run`, answers a review over
//! TLS with HTTP/2 from the real process, then creates pods through the API server in a
//! namespace the webhook serves (each must come back with istio-proxy, failurePolicy Fail) and in
//! one it does not (none may). The tool fails on any other outcome.

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
