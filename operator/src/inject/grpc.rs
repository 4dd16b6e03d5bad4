//! Istio's proxyless gRPC injection templates, chosen by `inject.istio.io/templates`:
//!
//! - `grpc-agent`: a pilot-agent without Envoy (`DISABLE_ENVOY`) beside the app, serving it xDS
//!   and certificates over a shared directory; each app container gets the gRPC xDS bootstrap
//!   variables and the agent's directories mounted. No traffic capture, no mTLS label.
//! - `grpc-simple`: no agent at all; an init container writes a gRPC xDS bootstrap pointing at
//!   istiod's plain-text port, and each container reads it.
//!
//! Neither rewrites probes (both set `sidecar.istio.io/rewriteAppHTTPProbers: "false"`) and
//! neither depends on native sidecars or CNI. The fields follow the templates of Istio's injector
//! configuration (release-1.31), `istioctl kube-inject` being the oracle
//! (tests/tests/istio_corpus.rs).

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, Probe,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::annotations::Settings;
use super::containers::{self, PodFacts, to_json};
use super::{InjectionConfig, names};
use crate::istio_proxy::{self, ports};
use crate::k8s::{env, field_env};

/// The two templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grpc {
    /// `grpc-agent`: pilot-agent alone, gRPC apps bootstrapped from it.
    Agent,
    /// `grpc-simple`: an init container writes a bootstrap pointing at istiod.
    Simple,
}

impl Grpc {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Grpc::Agent => "grpc-agent",
            Grpc::Simple => "grpc-simple",
        }
    }

    fn from_name(name: &str) -> Option<Grpc> {
        [Grpc::Agent, Grpc::Simple]
            .into_iter()
            .find(|g| g.name() == name)
    }
}

/// The gRPC template `inject.istio.io/templates` asks for: `Ok(None)` when it names none,
/// `Err(name)` when one is named together with another template (meshop injects them alone).
pub(crate) fn requested(templates: Option<&str>) -> Result<Option<Grpc>, &str> {
    let Some(templates) = templates else {
        return Ok(None);
    };
    let names: Vec<&str> = templates.split(',').map(str::trim).collect();
    let Some(grpc) = names.iter().find_map(|n| Grpc::from_name(n)) else {
        return Ok(None);
    };
    match names.iter().all(|n| *n == grpc.name()) {
        true => Ok(Some(grpc)),
        false => Err(grpc.name()),
    }
}

/// Where the agent and the app share the xDS socket and the gRPC bootstrap.
const XDS_DIR: &str = "/etc/istio/proxy";
/// Where the agent writes the workload's certificates for the app (`OUTPUT_CERTS`).
const DATA_DIR: &str = "/var/lib/istio/data";
const CREDENTIALS_DIR: &str = "/var/run/secrets/workload-spiffe-credentials";
/// `grpc-simple`: the bootstrap directory, its volume and the init container writing it.
const SIMPLE_DIR: &str = "/var/lib/grpc/data/";
const SIMPLE_VOLUME: &str = "grpc-io-proxyless-bootstrap";
pub(crate) const SIMPLE_INIT: &str = "grpc-bootstrap-init";
const SIMPLE_IMAGE: &str = "busybox:1.28";

fn mount(name: &str, path: &str) -> VolumeMount {
    crate::k8s::mount(name, path, false)
}

/// The volumes the template adds, in its order (the pod's `userVolume`s last for `grpc-agent`).
pub(crate) fn volumes(grpc: Grpc, s: &Settings) -> Vec<Volume> {
    match grpc {
        Grpc::Simple => vec![istio_proxy::empty_dir(SIMPLE_VOLUME, None)],
        Grpc::Agent => {
            let proxy_volumes = istio_proxy::sidecar_volumes();
            let take = |name: &str| proxy_volumes.iter().find(|v| v.name == name).cloned();
            ["workload-socket", "workload-certs"]
                .into_iter()
                .filter_map(take)
                .chain([istio_proxy::empty_dir("istio-xds", Some("Memory"))])
                .chain(
                    [
                        "istio-data",
                        "istio-podinfo",
                        "istio-token",
                        "istiod-ca-cert",
                    ]
                    .into_iter()
                    .filter_map(take),
                )
                .chain(s.user_volumes.iter().cloned())
                .collect()
        }
    }
}

/// What the template adds to an app container (to be merged under the pod's own fields, as
/// Istio merges it): the bootstrap variables and mounts.
pub(crate) fn app_patch(grpc: Grpc, name: &str) -> Container {
    let (env_vars, mounts) = match grpc {
        Grpc::Agent => (
            vec![
                env("GRPC_XDS_EXPERIMENTAL_SECURITY_SUPPORT", "true"),
                env(
                    "GRPC_XDS_BOOTSTRAP",
                    format!("{XDS_DIR}/grpc-bootstrap.json"),
                ),
            ],
            vec![
                mount("istio-data", DATA_DIR),
                mount("istio-xds", XDS_DIR),
                mount("workload-certs", CREDENTIALS_DIR),
            ],
        ),
        Grpc::Simple => (
            vec![
                env("GRPC_XDS_BOOTSTRAP", format!("{SIMPLE_DIR}bootstrap.json")),
                env("GRPC_GO_LOG_VERBOSITY_LEVEL", "99"),
                env("GRPC_GO_LOG_SEVERITY_LEVEL", "info"),
            ],
            vec![mount(SIMPLE_VOLUME, SIMPLE_DIR)],
        ),
    };
    Container {
        name: name.into(),
        env: Some(env_vars),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// Whether the template adds to the container named `name`: `grpc-agent` to every container but
/// the pod's own `istio-proxy`, `grpc-simple` to all.
pub(crate) fn patches(grpc: Grpc, name: &str) -> bool {
    grpc == Grpc::Simple || name != names::PROXY
}

/// `grpc-simple`'s init container: writes a gRPC xDS bootstrap naming istiod's plain-text xDS
/// port in the control-plane namespace and this pod as a sidecar node of the gRPC generator.
pub(crate) fn bootstrap_init(cfg: &InjectionConfig) -> Container {
    let bootstrap = serde_json::json!({
        "xds_servers": [{
            "server_uri": "'${SERVER_URI}'",
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": "'${NODE_ID}'", "metadata": {"GENERATOR": "grpc"}},
    });
    let script = [
        "NODE_ID=\"sidecar~${INSTANCE_IP}~${POD_NAME}.${POD_NAMESPACE}~cluster.local\"".into(),
        "SERVER_URI=\"dns:///istiod.${ISTIO_NAMESPACE}.svc:15010\"".into(),
        format!(
            "echo '\n{}' > {SIMPLE_DIR}bootstrap.json",
            istio_layout(&bootstrap)
        ),
    ]
    .join("\n");
    Container {
        name: SIMPLE_INIT.into(),
        image: Some(SIMPLE_IMAGE.into()),
        command: Some(vec!["sh".into(), "-c".into(), script]),
        env: Some(vec![
            field_env("INSTANCE_IP", "status.podIP"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            env(
                "ISTIO_NAMESPACE",
                format!("{}\n", cfg.control_plane_namespace),
            ),
        ]),
        volume_mounts: Some(vec![mount(SIMPLE_VOLUME, SIMPLE_DIR)]),
        ..Default::default()
    }
}

/// The bootstrap JSON laid out as Istio's template lays it out (two-space indents, the
/// credentials and features lists inline, `"server_features" :`), so the pods compare equal.
fn istio_layout(bootstrap: &Value) -> String {
    let inline = |v: &Value| {
        to_json(v)
            .replace("\":", "\": ")
            .replace(",\"", ", \"")
            .replace(",{", ", {")
    };
    let server = &bootstrap["xds_servers"][0];
    let node = &bootstrap["node"];
    let lines = [
        "{".to_string(),
        "  \"xds_servers\": [".into(),
        "    {".into(),
        format!("      \"server_uri\": {},", server["server_uri"]),
        format!(
            "      \"channel_creds\": {},",
            inline(&server["channel_creds"])
        ),
        format!(
            "      \"server_features\" : {}",
            inline(&server["server_features"])
        ),
        "    }".into(),
        "  ],".into(),
        "  \"node\": {".into(),
        format!("    \"id\": {},", node["id"]),
        "    \"metadata\": {".into(),
        format!("      \"GENERATOR\": {}", node["metadata"]["GENERATOR"]),
        "    }".into(),
        "  }".into(),
        "}".into(),
    ];
    lines.join("\n")
}

/// `grpc-agent`'s istio-proxy: pilot-agent in sidecar mode with Envoy disabled, telling the app
/// its xDS and certificates through [`XDS_DIR`] and [`DATA_DIR`].
pub(crate) fn agent(s: &Settings, cfg: &InjectionConfig, facts: &PodFacts) -> Container {
    let args = containers::agent_args(istio_proxy::Mode::Sidecar, s);
    let mut env_vars = [
        vec![
            env("ISTIO_META_GENERATOR", "grpc"),
            env("OUTPUT_CERTS", DATA_DIR),
        ],
        istio_proxy::ca_env(cfg.discovery_address()),
        istio_proxy::pod_env(),
        vec![
            istio_proxy::service_account_env(),
            istio_proxy::host_ip_env(),
            istio_proxy::proxy_config_env(&s.proxy_config),
            containers::pod_ports_env(facts),
            containers::app_containers_env(facts),
        ],
        istio_proxy::cluster_env(&cfg.cluster_id, cfg.network.as_deref()),
        istio_proxy::workload_env(
            &facts.workload.name,
            facts.workload.owner_uri(facts.namespace),
        ),
        istio_proxy::trust_domain_env(&cfg.mesh_id, &cfg.trust_domain),
    ]
    .concat();
    if let Some(Value::Object(metadata)) = s.proxy_config.get("proxyMetadata") {
        let mut entries: Vec<(&String, String)> = metadata
            .iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), String::from)))
            .collect();
        entries.sort();
        env_vars.extend(entries.into_iter().map(|(k, v)| env(k, v)));
    }
    // gRPC resolves xds:/// names itself: no DNS capture, and no Envoy to start.
    env_vars.push(env("ISTIO_META_DNS_CAPTURE", "false"));
    env_vars.push(env("DISABLE_ENVOY", "true"));

    let ready_url = format!(
        "--url=http://localhost:{}{}",
        ports::AGENT_STATUS,
        istio_proxy::READY_PATH
    );
    // Status port 0: Istio's template leaves out the readiness probe, and with it the resources
    // and mounts that follow it in the template.
    let probed = s.status_port != 0;
    let [delay, period, failures] = s.readiness;
    let mounts = [
        mount("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
        mount("workload-certs", CREDENTIALS_DIR),
        mount("istiod-ca-cert", "/var/run/secrets/istio"),
        mount("istio-data", DATA_DIR),
        mount("istio-xds", XDS_DIR),
        mount("istio-token", "/var/run/secrets/tokens"),
        mount("istio-podinfo", "/etc/istio/pod"),
    ];
    Container {
        name: names::PROXY.into(),
        image: Some(s.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("mesh-metrics".into()),
            container_port: ports::AGENT_STATUS.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        lifecycle: Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["pilot-agent".into(), "wait".into(), ready_url]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        readiness_probe: probed.then(|| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(istio_proxy::READY_PATH.into()),
                port: IntOrString::Int(ports::AGENT_STATUS.into()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            timeout_seconds: Some(3),
            failure_threshold: Some(failures),
            ..Default::default()
        }),
        resources: probed.then(|| s.resources.clone()),
        volume_mounts: probed.then(|| {
            mounts
                .into_iter()
                .chain(s.user_mounts.iter().cloned())
                .collect()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_template_is_chosen_alone() {
        assert_eq!(requested(None), Ok(None));
        assert_eq!(requested(Some("sidecar")), Ok(None));
        assert_eq!(requested(Some("gateway")), Ok(None));
        assert_eq!(requested(Some("grpc-agent")), Ok(Some(Grpc::Agent)));
        assert_eq!(requested(Some(" grpc-simple ")), Ok(Some(Grpc::Simple)));
        assert_eq!(
            requested(Some("grpc-agent,grpc-agent")),
            Ok(Some(Grpc::Agent))
        );
        assert_eq!(requested(Some("sidecar,grpc-agent")), Err("grpc-agent"));
        assert_eq!(
            requested(Some("grpc-simple,grpc-agent")),
            Err("grpc-simple")
        );
    }

    #[test]
    fn the_bootstrap_is_json_once_the_shell_has_filled_it_in() {
        let cfg = InjectionConfig::default();
        let init = bootstrap_init(&cfg);
        let script = &init.command.as_ref().unwrap()[2];
        // What the shell echoes: the text between the quotes, with the variables filled in.
        let body = script
            .split_once("echo '")
            .and_then(|(_, rest)| rest.rsplit_once("' >"))
            .map(|(body, _)| body)
            .unwrap()
            .replace("'${SERVER_URI}'", "dns:///istiod.istio-system.svc:15010")
            .replace("'${NODE_ID}'", "sidecar~10.0.0.1~p.ns~cluster.local");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["xds_servers"][0]["server_uri"],
            "dns:///istiod.istio-system.svc:15010"
        );
        assert_eq!(v["xds_servers"][0]["channel_creds"][0]["type"], "insecure");
        assert_eq!(v["node"]["metadata"]["GENERATOR"], "grpc");
        assert!(script.ends_with("> /var/lib/grpc/data/bootstrap.json"));
    }
}
