//! Rewrites application probes to go through pilot-agent. With mTLS the kubelet's plain-text
//! probes would be refused by the proxy (or captured by iptables), so the kubelet asks the agent on
//! its status port and the agent runs the original probe from inside the pod.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value, json};

/// Rewrites the HTTP, TCP and gRPC probes of `containers` and returns the originals keyed by the
/// agent path, the value of `ISTIO_KUBE_APP_PROBERS`. Exec probes, and probes whose named port
/// does not exist on the container, are left as they are.
pub(crate) fn rewrite(containers: &mut [Container], status_port: u16) -> Map<String, Value> {
    let mut probers = Map::new();
    for c in containers.iter_mut() {
        let Container {
            name,
            ports: c_ports,
            liveness_probe,
            readiness_probe,
            startup_probe,
            lifecycle,
            ..
        } = c;
        let resolve = |port: &IntOrString| -> Option<i32> {
            match port {
                IntOrString::Int(n) => Some(*n),
                IntOrString::String(s) => match s.parse::<i32>() {
                    Ok(n) => Some(n),
                    Err(_) => c_ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some(s.as_str()))
                        .map(|p| p.container_port),
                },
            }
        };
        for (probe, kind) in [
            (liveness_probe, "livez"),
            (readiness_probe, "readyz"),
            (startup_probe, "startupz"),
        ] {
            let Some(probe) = probe.as_mut() else {
                continue;
            };
            if rewritten_before(probe.http_get.as_ref(), status_port) {
                continue;
            }
            let Some(original) = original_action(probe, &resolve) else {
                continue;
            };
            let path = format!("/app-health/{name}/{kind}");
            probers.insert(path.clone(), original);
            *probe = Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(status_port.into()),
                    ..Default::default()
                }),
                tcp_socket: None,
                grpc: None,
                exec: None,
                ..probe.clone()
            };
        }
        // HTTP and TCP lifecycle hooks go through the agent too (`/app-lifecycle/...`), as in
        // Istio: the kubelet's plain request would meet the same mTLS as a probe's.
        if let Some(lifecycle) = lifecycle.as_mut() {
            for (hook, kind) in [
                (&mut lifecycle.post_start, "poststartz"),
                (&mut lifecycle.pre_stop, "prestopz"),
            ] {
                let Some(handler) = hook.as_mut() else {
                    continue;
                };
                if rewritten_before(handler.http_get.as_ref(), status_port) {
                    continue;
                }
                let as_probe = Probe {
                    http_get: handler.http_get.clone(),
                    tcp_socket: handler.tcp_socket.clone(),
                    ..Default::default()
                };
                let Some(original) = original_action(&as_probe, &resolve) else {
                    continue;
                };
                let path = format!("/app-lifecycle/{name}/{kind}");
                probers.insert(path.clone(), original);
                handler.http_get = Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(status_port.into()),
                    ..Default::default()
                });
                handler.tcp_socket = None;
            }
        }
    }
    probers
}

/// A probe or hook an earlier injection already sent through the agent: left as it is (its
/// original is among the old proxy's app probers).
fn rewritten_before(get: Option<&HTTPGetAction>, status_port: u16) -> bool {
    get.is_some_and(|h| {
        h.port == IntOrString::Int(status_port.into())
            && h.path
                .as_deref()
                .is_some_and(|p| p.starts_with("/app-health/") || p.starts_with("/app-lifecycle/"))
    })
}

/// The probe as the agent should run it, with named ports resolved; `None` if it is not
/// rewritten.
fn original_action(probe: &Probe, resolve: &impl Fn(&IntOrString) -> Option<i32>) -> Option<Value> {
    let timeout = probe.timeout_seconds.unwrap_or(1);
    if let Some(h) = &probe.http_get {
        let mut action = Map::new();
        // No path is written as none, as Istio writes the probe: the agent asks for `/`.
        if let Some(path) = h.path.as_deref().filter(|p| !p.is_empty()) {
            action.insert("path".into(), json!(path));
        }
        action.insert("port".into(), json!(resolve(&h.port)?));
        action.insert(
            "scheme".into(),
            json!(h.scheme.as_deref().unwrap_or("HTTP")),
        );
        if let Some(host) = &h.host {
            action.insert("host".into(), json!(host));
        }
        if let Some(headers) = h.http_headers.as_ref().filter(|h| !h.is_empty()) {
            action.insert("httpHeaders".into(), serde_json::to_value(headers).ok()?);
        }
        return Some(json!({ "httpGet": action, "timeoutSeconds": timeout }));
    }
    if let Some(t) = &probe.tcp_socket {
        let mut action = Map::new();
        action.insert("port".into(), json!(resolve(&t.port)?));
        if let Some(host) = &t.host {
            action.insert("host".into(), json!(host));
        }
        return Some(json!({ "tcpSocket": action, "timeoutSeconds": timeout }));
    }
    if let Some(g) = &probe.grpc {
        let mut action = Map::new();
        action.insert("port".into(), json!(g.port));
        if let Some(service) = &g.service {
            action.insert("service".into(), json!(service));
        }
        return Some(json!({ "grpc": action, "timeoutSeconds": timeout }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::testutil::typical_pod;

    fn rewritten() -> (Vec<Container>, Map<String, Value>) {
        let mut containers = typical_pod().spec.unwrap().containers;
        let probers = rewrite(&mut containers, 15020);
        (containers, probers)
    }

    #[test]
    fn http_tcp_and_grpc_probes_go_through_the_agent() {
        let (containers, _) = rewritten();
        let c = &containers[0];
        for (probe, kind) in [
            (&c.liveness_probe, "livez"),
            (&c.readiness_probe, "readyz"),
            (&c.startup_probe, "startupz"),
        ] {
            let p = probe.as_ref().unwrap();
            let h = p.http_get.as_ref().unwrap();
            assert_eq!(
                h.path.as_deref(),
                Some(format!("/app-health/reviews/{kind}").as_str())
            );
            assert_eq!(h.port, IntOrString::Int(15020));
            assert!(p.tcp_socket.is_none() && p.grpc.is_none());
        }
        // Timing is kept.
        assert_eq!(c.liveness_probe.as_ref().unwrap().period_seconds, Some(10));
        assert_eq!(c.readiness_probe.as_ref().unwrap().timeout_seconds, Some(2));
    }

    #[test]
    fn originals_are_recorded_with_named_ports_resolved() {
        let (_, probers) = rewritten();
        assert_eq!(
            Value::Object(probers),
            json!({
                "/app-health/reviews/livez": {"httpGet": {"path": "/health", "port": 9080, "scheme": "HTTP"}, "timeoutSeconds": 1},
                "/app-health/reviews/readyz": {"tcpSocket": {"port": 9080}, "timeoutSeconds": 2},
                "/app-health/reviews/startupz": {"grpc": {"port": 9090}, "timeoutSeconds": 1}
            })
        );
    }

    #[test]
    fn exec_probes_are_left_alone() {
        let (containers, probers) = rewritten();
        let p = containers[1].liveness_probe.as_ref().unwrap();
        assert!(p.exec.is_some() && p.http_get.is_none());
        assert!(!probers.keys().any(|k| k.contains("sidecar-logger")));
    }

    #[test]
    fn unknown_named_port_is_left_alone() {
        let mut containers = typical_pod().spec.unwrap().containers;
        containers[0]
            .liveness_probe
            .as_mut()
            .unwrap()
            .http_get
            .as_mut()
            .unwrap()
            .port = IntOrString::String("nope".into());
        let before = containers[0].liveness_probe.clone();
        let probers = rewrite(&mut containers, 15020);
        assert_eq!(containers[0].liveness_probe, before);
        assert!(!probers.contains_key("/app-health/reviews/livez"));
    }

    #[test]
    fn headers_host_and_scheme_are_kept_for_the_agent() {
        let mut containers: Vec<Container> = serde_json::from_value(json!([{
            "name": "api",
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "8443", "scheme": "HTTPS", "host": "localhost",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}}
        }]))
        .unwrap();
        let probers = rewrite(&mut containers, 15020);
        assert_eq!(
            probers["/app-health/api/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 8443, "scheme": "HTTPS", "host": "localhost",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 1})
        );
        let h = containers[0]
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (h.scheme.as_ref(), h.host.as_ref(), h.http_headers.as_ref()),
            (None, None, None)
        );
    }
}
