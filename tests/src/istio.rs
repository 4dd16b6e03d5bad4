//! Istio's own binaries as judges of what meshop installs: finding (or building) `pilot-discovery`,
//! `istioctl` and `pilot-agent`, and running istiod as a local process the way the kubelet would
//! run meshop's istiod Deployment: as its ServiceAccount, with its args, env and volumes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, KeyToPath, Secret, ServiceAccount, Volume,
};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::Kubeconfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::controlplane::ControlPlane;
use crate::process::Process;
use crate::wait::{GiveUp, poll_until};

/// How to get the binaries, for error messages.
const HOW_TO_BUILD: &str = "build them with `make istio` (tests/testenv/build-istio.sh, 7-10 \
     minutes cold) or point MESHOP_ISTIO_BIN at a directory holding pilot-discovery, istioctl and \
     pilot-agent";

/// Paths of Istio's binaries.
#[derive(Clone, Debug)]
pub struct IstioBinaries {
    pub dir: PathBuf,
    pub pilot_discovery: PathBuf,
    pub istioctl: PathBuf,
    pub pilot_agent: PathBuf,
}

impl IstioBinaries {
    /// `MESHOP_ISTIO_BIN` when set, else the versioned cache that `tests/testenv/build-istio.sh`
    /// fills, building it first when it is missing. The script runs once per test process, so
    /// tests running in parallel never start two builds.
    pub fn locate() -> Result<IstioBinaries> {
        static LOCATED: OnceLock<std::result::Result<IstioBinaries, String>> = OnceLock::new();
        LOCATED
            .get_or_init(|| Self::run_script().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    fn run_script() -> Result<IstioBinaries> {
        let dir = crate::binaries::run_build_script("build-istio.sh").map_err(|e| {
            anyhow::anyhow!(
                "Istio's binaries are missing and {e:#} (see the lines above): {HOW_TO_BUILD}"
            )
        })?;
        let binaries = IstioBinaries {
            pilot_discovery: dir.join("pilot-discovery"),
            istioctl: dir.join("istioctl"),
            pilot_agent: dir.join("pilot-agent"),
            dir,
        };
        for required in [
            &binaries.pilot_discovery,
            &binaries.istioctl,
            &binaries.pilot_agent,
        ] {
            if !required.exists() {
                bail!("{} is missing: {HOW_TO_BUILD}", required.display());
            }
        }
        Ok(binaries)
    }
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The flags of `pilot-discovery discovery` that name a listener or the API server: the local
/// runner replaces them, everything else in meshop's args is passed as rendered.
const REPLACED_FLAGS: &[&str] = &[
    "httpAddr",
    "httpsAddr",
    "grpcAddr",
    "secureGRPCAddr",
    "monitoringAddr",
    "ctrlz_port",
    "ctrlz_address",
    "kubeconfig",
];

/// `args` without the flags in `drop` (as `--flag=value`, or `--flag value` when the next
/// argument is not itself a flag).
fn without_flags(args: &[String], drop: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let name = arg.trim_start_matches('-');
        let dropped = arg.starts_with('-')
            && drop.iter().any(|flag| {
                name == *flag || name.strip_prefix(flag).is_some_and(|r| r.starts_with('='))
            });
        if !dropped {
            out.push(arg.clone());
        } else if !arg.contains('=') && iter.peek().is_some_and(|next| !next.starts_with('-')) {
            iter.next();
        }
    }
    out
}

/// istiod running as a local process on what meshop installed. Killed on drop.
pub struct LocalIstiod {
    pub process: Process,
    /// The pod name it was given (`POD_NAME`): its identity in leader elections.
    pub pod_name: String,
    pub namespace: String,
    /// Serves /ready and, to loopback callers, the /debug endpoints.
    pub http: SocketAddr,
    /// xDS over plain gRPC.
    pub grpc: SocketAddr,
    /// xDS and the CA over TLS.
    pub secure_grpc: SocketAddr,
    /// Webhooks (injection, validation) over HTTPS.
    pub https: SocketAddr,
    pub monitoring: SocketAddr,
    /// The directory that stands for the pod's filesystem root (its working directory).
    pub root: PathBuf,
}

impl LocalIstiod {
    /// Starts `pilot-discovery` the way Deployment `deployment` in `namespace` runs it: the args
    /// and env of its `discovery` container, its volumes written under a private root (its
    /// working directory, as Istio resolves `./etc/...` and `./var/run/...` against it), and a
    /// kubeconfig holding a TokenRequest token of the pod's ServiceAccount, so every API call is
    /// judged by meshop's RBAC. Listeners move to free loopback ports; `GOMAXPROCS`-style
    /// `resourceFieldRef` variables are left out (they size the Go runtime to the pod's limits).
    pub async fn start(
        cp: &ControlPlane,
        client: &Client,
        binaries: &IstioBinaries,
        namespace: &str,
        deployment: &str,
        name: &str,
    ) -> Result<LocalIstiod> {
        Self::start_serving_https_at(cp, client, binaries, namespace, deployment, name, None).await
    }

    /// [`LocalIstiod::start`], with its HTTPS webhook listener (validation, injection) at `https`
    /// instead of a free loopback port: at its Service's ClusterIP and port, the API server's
    /// calls to the webhooks it registers by Service reach it.
    pub async fn start_serving_https_at(
        cp: &ControlPlane,
        client: &Client,
        binaries: &IstioBinaries,
        namespace: &str,
        deployment: &str,
        name: &str,
        https: Option<SocketAddr>,
    ) -> Result<LocalIstiod> {
        let d = Api::<Deployment>::namespaced(client.clone(), namespace)
            .get(deployment)
            .await
            .with_context(|| format!("get Deployment {namespace}/{deployment}"))?;
        let pod = d
            .spec
            .and_then(|s| s.template.spec)
            .context("Deployment without a pod spec")?;
        let container = pod
            .containers
            .iter()
            .find(|c| c.name == "discovery")
            .context("no `discovery` container")?
            .clone();
        if container.command.is_some() {
            bail!("the discovery container overrides the image's command; the runner cannot");
        }
        let account = pod
            .service_account_name
            .clone()
            .context("istiod's pod names no ServiceAccount")?;
        let pod_name = format!("{deployment}-local-{name}");

        let root = cp.dir.join(format!("istiod-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let api_token = token(&accounts, &account, &[], 3600).await?;
        let kubeconfig = root.join("kubeconfig");
        write_token_kubeconfig(cp, &kubeconfig, &account, &api_token)?;
        let ca = ca_pem(cp)?;
        // What the kubelet mounts into every pod that does not opt out.
        let sa_dir = root.join("var/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&sa_dir)?;
        std::fs::write(sa_dir.join("token"), &api_token)?;
        std::fs::write(sa_dir.join("ca.crt"), &ca)?;
        std::fs::write(sa_dir.join("namespace"), namespace)?;
        mount_volumes(
            client,
            &accounts,
            &account,
            namespace,
            &container,
            pod.volumes.as_deref().unwrap_or_default(),
            &root,
        )
        .await?;

        let (http, grpc, secure_grpc, monitoring, ctrlz) = (
            free_addr()?,
            free_addr()?,
            free_addr()?,
            free_addr()?,
            free_addr()?,
        );
        let https = match https {
            Some(addr) => addr,
            None => free_addr()?,
        };
        let mut args = without_flags(
            container.args.as_deref().unwrap_or_default(),
            REPLACED_FLAGS,
        );
        args.extend([
            format!("--httpAddr={http}"),
            format!("--httpsAddr={https}"),
            format!("--grpcAddr={grpc}"),
            format!("--secureGRPCAddr={secure_grpc}"),
            format!("--monitoringAddr={monitoring}"),
            format!("--ctrlz_port={}", ctrlz.port()),
            "--ctrlz_address=127.0.0.1".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ]);
        let env = resolve_env(
            container.env.as_deref().unwrap_or_default(),
            &pod_name,
            namespace,
            &account,
        )?;
        let mut env: BTreeMap<String, OsString> = env
            .into_iter()
            .map(|(k, v)| (k, OsString::from(v)))
            .collect();
        // The Deployment points KUBECONFIG at an optional remote-cluster Secret; here it is ours.
        env.insert("KUBECONFIG".into(), kubeconfig.clone().into_os_string());
        let env: Vec<(&str, &std::ffi::OsStr)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect();
        let process = Process::spawn_in(
            &format!("istiod-{name}"),
            &binaries.pilot_discovery,
            &args,
            &cp.dir.join(format!("istiod-{name}.log")),
            &env,
            Some(&root),
        )?;
        Ok(LocalIstiod {
            process,
            pod_name,
            namespace: namespace.to_string(),
            http,
            grpc,
            secure_grpc,
            https,
            monitoring,
            root,
        })
    }

    /// GET `path` on istiod's HTTP port: the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.http, path).await
    }

    /// Waits until /ready answers 200 and returns how long that took from now; a crash ends
    /// the wait at once with the end of its log.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let http = self.http;
        let log = self.process.log.clone();
        let process = &mut self.process;
        poll_until(
            &format!("istiod /ready (log: {})", log.display()),
            timeout,
            || {
                let alive: Result<()> = process.check_running().map_err(|e| GiveUp(e).into());
                async move {
                    alive?;
                    match http_get(http, "/ready").await? {
                        (200, _) => Ok(()),
                        (status, body) => bail!("{status} {}", body.trim()),
                    }
                }
            },
        )
        .await?;
        Ok(started.elapsed())
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}

/// A TokenRequest token for ServiceAccount `account` (`audiences` empty: the API server's own).
pub(crate) async fn token(
    accounts: &Api<ServiceAccount>,
    account: &str,
    audiences: &[String],
    expiration_seconds: i64,
) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.to_vec()),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {account}"))?;
    answer
        .status
        .and_then(|s| s.token)
        .context("TokenRequest answered without a token")
}

/// The API server's CA, as PEM, from the harness's admin kubeconfig.
pub(crate) fn ca_pem(cp: &ControlPlane) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let kubeconfig = Kubeconfig::read_from(&cp.kubeconfig)?;
    let data = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("the harness kubeconfig has no CA")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
}

/// Writes a kubeconfig for the control plane that authenticates with a bearer `token`.
pub fn write_token_kubeconfig(
    cp: &ControlPlane,
    path: &Path,
    user: &str,
    token: &str,
) -> Result<()> {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem(cp)?);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: {user}\ncurrent-context: testenv\n",
        server = cp.server,
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// The container's environment as the kubelet would give it to this local process.
pub(crate) fn resolve_env(
    vars: &[EnvVar],
    pod_name: &str,
    namespace: &str,
    account: &str,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for var in vars {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, None) => String::new(),
            (None, Some(from)) => {
                if from.resource_field_ref.is_some() {
                    continue;
                }
                let field = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .with_context(|| format!("env {}: only fieldRef is supported", var.name))?;
                match field {
                    "metadata.name" => pod_name.to_string(),
                    "metadata.namespace" => namespace.to_string(),
                    "spec.serviceAccountName" => account.to_string(),
                    "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
                    "spec.nodeName" => "kwok-node-0".to_string(),
                    other => bail!("env {}: fieldRef {other} is not supported", var.name),
                }
            }
        };
        out.push((var.name.clone(), value));
    }
    Ok(out)
}

/// Writes each volume the container mounts under `root` at its mount path, as the kubelet
/// would: ConfigMap and Secret keys as files, an empty directory for emptyDir and for an
/// optional object that does not exist, projected ServiceAccount tokens from a TokenRequest.
async fn mount_volumes(
    client: &Client,
    accounts: &Api<ServiceAccount>,
    account: &str,
    namespace: &str,
    container: &Container,
    volumes: &[Volume],
    root: &Path,
) -> Result<()> {
    for mount in container.volume_mounts.as_deref().unwrap_or_default() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .with_context(|| format!("volumeMount {} has no volume", mount.name))?;
        let dir = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)?;
        let files: BTreeMap<String, Vec<u8>> = if volume.empty_dir.is_some() {
            BTreeMap::new()
        } else if let Some(source) = &volume.config_map {
            let found = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(&source.name)
                .await?;
            match found {
                Some(cm) => select_items(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect(),
                    source.items.as_deref(),
                ),
                None if source.optional == Some(true) => BTreeMap::new(),
                None => bail!(
                    "volume {}: ConfigMap {} is missing",
                    volume.name,
                    source.name
                ),
            }
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let found = Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(&name)
                .await?;
            match found {
                Some(secret) => select_items(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect(),
                    source.items.as_deref(),
                ),
                None if source.optional == Some(true) => BTreeMap::new(),
                None => bail!("volume {}: Secret {name} is missing", volume.name),
            }
        } else if let Some(projected) = &volume.projected {
            let mut files = BTreeMap::new();
            for source in projected.sources.as_deref().unwrap_or_default() {
                let sa = source.service_account_token.as_ref().with_context(|| {
                    format!(
                        "volume {}: only serviceAccountToken projections are supported",
                        volume.name
                    )
                })?;
                let audiences: Vec<String> = sa.audience.iter().cloned().collect();
                let t = token(
                    accounts,
                    account,
                    &audiences,
                    sa.expiration_seconds.unwrap_or(3600),
                )
                .await?;
                files.insert(sa.path.clone(), t.into_bytes());
            }
            files
        } else {
            bail!(
                "volume {}: this kind of volume is not supported by the local runner",
                volume.name
            );
        };
        for (path, content) in files {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(file, content)?;
        }
    }
    Ok(())
}

/// The files a ConfigMap or Secret volume shows: every key, or only the listed `items` at their
/// paths.
fn select_items(
    mut data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None => data,
        Some(items) => items
            .iter()
            .filter_map(|i| data.remove(&i.key).map(|v| (i.path.clone(), v)))
            .collect(),
    }
}

/// A plain HTTP/1.0 GET on loopback (the server closes the connection after answering).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::without_flags;

    #[test]
    fn replaced_flags_go_in_both_spellings_and_the_rest_stays() {
        let args: Vec<String> = [
            "discovery",
            "--monitoringAddr=:15014",
            "--domain",
            "cluster.local",
            "--httpAddr",
            ":8080",
            "--keepaliveMaxServerConnectionAge",
            "30m",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            without_flags(&args, &["monitoringAddr", "httpAddr", "domainX"]),
            [
                "discovery",
                "--domain",
                "cluster.local",
                "--keepaliveMaxServerConnectionAge",
                "30m"
            ]
        );
    }
}
