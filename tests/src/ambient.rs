//! Ambient mode's node, for real: ztunnel (built from ../shared/judges/ztunnel by
//! tests/testenv/build-ztunnel.sh) run the way meshop's ztunnel DaemonSet declares it, in a
//! network namespace of its own (the DaemonSet's pod is not on the host network), connected to a
//! real istiod ([`crate::istio::LocalIstiod`]) on the machine's loopback through a relay
//! ([`crate::netns::NetNs::forward`]).
//!
//! Everything comes from meshop's rendering (the DaemonSet's container: args, env, volumes)
//! except what a process outside a cluster must be told differently, all in [`harness_env`]:
//! where istiod is (a relayed loopback port instead of its Service's name, which is still the name
//! ztunnel verifies), where its files are (a test directory instead of the pod's mounts), and the
//! socket the CNI agent connects to.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::controlplane::ControlPlane;
use crate::istio::{LocalIstiod, resolve_env};
use crate::netns::NetNs;
use crate::process::Process;

/// The ztunnel binary, built (once per test process) when missing.
pub fn ztunnel_binary() -> Result<PathBuf> {
    static LOCATED: std::sync::OnceLock<std::result::Result<PathBuf, String>> =
        std::sync::OnceLock::new();
    LOCATED
        .get_or_init(|| {
            crate::binaries::run_build_script("build-ztunnel.sh")
                .map(|dir| dir.join("ztunnel"))
                .map_err(|e| format!("ztunnel is missing and {e:#}: build it with `make ztunnel`"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A token of `account` for `audience` (the API server's own when None), bound to `pod` as the
/// kubelet's tokens are: istiod's CA checks the binding before it lets ztunnel ask for the
/// identities of its node's pods.
pub async fn pod_bound_token(
    client: &Client,
    namespace: &str,
    account: &str,
    audience: Option<&str>,
    pod: &Pod,
) -> Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.map(str::to_string).into_iter().collect()),
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {namespace}/{account} bound to a pod"))?;
    answer
        .status
        .and_then(|s| s.token)
        .context("TokenRequest answered without a token")
}

/// A Pod object on `node` for a process the test runs itself (kwok runs nothing and gives it an
/// address); waits for the address.
pub async fn pod_on_node(
    client: &Client,
    namespace: &str,
    name: &str,
    account: &str,
    node: &str,
    labels: serde_json::Value,
) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels },
        "spec": {
            "serviceAccountName": account,
            "nodeName": node,
            "containers": [{ "name": "main", "image": "registry.k8s.io/pause:3.10" }]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    crate::wait::poll_until(
        &format!("pod {namespace}/{name} gets an IP"),
        std::time::Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await?;
            match pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()) {
                Some(_) => Ok(pod),
                None => bail!("no podIP yet"),
            }
        },
    )
    .await
}

/// The one place the harness runs ztunnel differently from meshop's DaemonSet, each with why.
fn harness_env(
    rendered: &BTreeMap<String, String>,
    root: &Path,
    istiod_port: u16,
    socket: &Path,
) -> Result<BTreeMap<String, String>> {
    // istiod's Service name, which ztunnel keeps verifying istiod's certificate against.
    let address = rendered
        .get("XDS_ADDRESS")
        .context("the DaemonSet gives ztunnel no XDS_ADDRESS")?;
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let certs = root.join("var/run/secrets/istio/root-cert.pem");
    let token = root.join("var/run/secrets/tokens/istio-token");
    Ok(BTreeMap::from([
        // No cluster DNS here: istiod is reached through the relay on the pod's loopback.
        (
            "XDS_ADDRESS".into(),
            format!("https://127.0.0.1:{istiod_port}"),
        ),
        (
            "CA_ADDRESS".into(),
            format!("https://127.0.0.1:{istiod_port}"),
        ),
        ("ALT_XDS_HOSTNAME".into(), host.to_string()),
        ("ALT_CA_HOSTNAME".into(), host.to_string()),
        // The pod's mounts live under the test's directory, not at their absolute paths.
        ("XDS_ROOT_CA".into(), certs.display().to_string()),
        ("CA_ROOT_CA".into(), certs.display().to_string()),
        ("AUTH_TOKEN".into(), token.display().to_string()),
        // The node's socket directory (hostPath /var/run/ztunnel) is the test's.
        ("INPOD_UDS".into(), socket.display().to_string()),
    ]))
}

/// ztunnel running as a local process in its own pod namespace. Killed on drop.
pub struct LocalZtunnel {
    pub process: Process,
    pub pod: Pod,
    pub netns: NetNs,
    /// The socket the CNI node agent hands pods over on.
    pub socket: PathBuf,
    pub root: PathBuf,
}

impl LocalZtunnel {
    /// Starts ztunnel as DaemonSet `ztunnel` in `namespace` declares it, as a pod on `node`.
    pub async fn start(
        cp: &ControlPlane,
        client: &Client,
        istiod: &LocalIstiod,
        namespace: &str,
        node: &NetNs,
        node_name: &str,
    ) -> Result<LocalZtunnel> {
        let ds = Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .get("ztunnel")
            .await
            .context("get DaemonSet ztunnel")?;
        let spec = ds
            .spec
            .and_then(|s| s.template.spec)
            .context("DaemonSet ztunnel without a pod spec")?;
        let container: Container = spec
            .containers
            .first()
            .cloned()
            .context("DaemonSet ztunnel without a container")?;
        let account = spec
            .service_account_name
            .clone()
            .context("ztunnel's pod names no ServiceAccount")?;
        let pod = pod_on_node(
            client,
            namespace,
            "ztunnel-local",
            &account,
            node_name,
            // Not the DaemonSet's selector: its controller would adopt and delete a second pod.
            serde_json::json!({ "app": "ztunnel-local" }),
        )
        .await?;
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("no pod IP")?;

        let root = cp.dir.join("ztunnel-local");
        let _ = std::fs::remove_dir_all(&root);
        let secrets = root.join("var/run/secrets");
        std::fs::create_dir_all(secrets.join("istio"))?;
        std::fs::create_dir_all(secrets.join("tokens"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        let socket_dir = root.join("var/run/ztunnel");
        std::fs::create_dir_all(&socket_dir)?;
        // The DaemonSet's volumes: the pod-bound istio-ca token and the mesh's root certificate.
        let token = pod_bound_token(client, namespace, &account, Some("istio-ca"), &pod).await?;
        std::fs::write(secrets.join("tokens/istio-token"), token)?;
        let root_cert = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get("istio-ca-root-cert")
            .await
            .context("istiod has not published istio-ca-root-cert")?
            .data
            .and_then(|d| d.get("root-cert.pem").cloned())
            .context("istio-ca-root-cert has no root-cert.pem")?;
        std::fs::write(secrets.join("istio/root-cert.pem"), root_cert)?;

        let netns = NetNs::create("ztunnel")?;
        node.attach(&netns, "veth-zt", &format!("{pod_ip}/32"), "169.254.1.1")?;
        let istiod_port = netns.forward(istiod.secure_grpc)?;

        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let mut env: BTreeMap<String, String> = resolve_env(
            container.env.as_deref().unwrap_or_default(),
            &pod_name,
            namespace,
            &account,
        )?
        .into_iter()
        .collect();
        // The downward API's values for this pod (resolve_env knows the node, not the pod IP).
        env.insert("INSTANCE_IP".into(), pod_ip.clone());
        let socket = socket_dir.join("ztunnel.sock");
        env.extend(harness_env(&env, &root, istiod_port, &socket)?);
        let env: Vec<(String, OsString)> = env.into_iter().map(|(k, v)| (k, v.into())).collect();
        let env_refs: Vec<(&str, &std::ffi::OsStr)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect();

        let mut args = vec![
            "netns".to_string(),
            "exec".to_string(),
            netns.name.clone(),
            ztunnel_binary()?.display().to_string(),
        ];
        args.extend(container.args.clone().unwrap_or_default());
        let process = Process::spawn_in(
            "ztunnel",
            Path::new("ip"),
            &args,
            &cp.dir.join("ztunnel-local.log"),
            &env_refs,
            Some(&root),
        )?;
        Ok(LocalZtunnel {
            process,
            pod,
            netns,
            socket,
            root,
        })
    }

    /// GET `path` on ztunnel's admin port (15000, on its pod's loopback): its config dump.
    pub fn admin(&self, path: &str) -> Result<String> {
        self.http(15000, path)
    }

    /// [`LocalZtunnel::admin`] without the HTTP response's head.
    pub fn admin_body(&self, path: &str) -> Result<String> {
        let response = self.admin(path)?;
        Ok(response
            .split_once("\r\n\r\n")
            .map_or(response.clone(), |(_, body)| body.to_string()))
    }

    /// GET `path` on its stats port (15020): Prometheus metrics.
    pub fn stats(&self, path: &str) -> Result<String> {
        self.http(15020, path)
    }

    fn http(&self, port: u16, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut conn = self
            .netns
            .connect(format!("127.0.0.1:{port}").parse().expect("static address"))?;
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = String::new();
        conn.read_to_string(&mut body)?;
        Ok(body)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}

/// The CNI node agent (`install-cni` from Istio's module) running as meshop's CNI DaemonSet
/// declares it, as the node's agent: in the node's network namespace, with a mount namespace
/// whose root is a test directory holding the DaemonSet's host paths, and a pid namespace of its
/// own. The pid namespace is the one thing a kubelet would not give it: the agent finds "the
/// host's" network namespace at `/host/proc/1/ns/net` (ALLOW_SWITCH_TO_HOST_NS), and on this
/// machine pid 1's namespaces cannot be read, even by root; in its own pid namespace pid 1 is the
/// agent itself, whose network namespace is the node's, which is what the path means on a node.
/// Killed (with its namespaces) on drop.
pub struct LocalNodeAgent {
    pub process: Process,
    pub pod: Pod,
    /// The host paths, under the test's directory: `opt/cni/bin`, `etc/cni/net.d`,
    /// `var/run/istio-cni` (the plugin's event socket).
    pub host: PathBuf,
    /// The node's view of the filesystem: the mount script and the root it builds.
    script: PathBuf,
    root: PathBuf,
    node: String,
}

/// Where each of the DaemonSet's host paths (and the agent's own files) is mounted inside the
/// agent's root, and the test directory standing for it.
const NODE_AGENT_MOUNTS: &[(&str, &str)] = &[
    ("host/opt/cni/bin", "opt/cni/bin"),
    ("host/etc/cni/net.d", "etc/cni/net.d"),
    ("var/run/istio-cni", "var/run/istio-cni"),
    (
        "var/run/secrets/kubernetes.io/serviceaccount",
        "serviceaccount",
    ),
];

impl LocalNodeAgent {
    pub async fn start(
        cp: &ControlPlane,
        client: &Client,
        namespace: &str,
        node: &NetNs,
        node_name: &str,
        ztunnel: &LocalZtunnel,
    ) -> Result<LocalNodeAgent> {
        let binaries = crate::istio::IstioBinaries::locate()?;
        let install_cni = binaries.dir.join("install-cni");
        let plugin = binaries.dir.join("istio-cni");
        for b in [&install_cni, &plugin] {
            if !b.exists() {
                bail!("{} is missing: run `make istio`", b.display());
            }
        }
        let ds = Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .get(meshop::render::CNI_NAME)
            .await
            .context("get the CNI DaemonSet")?;
        let spec = ds
            .spec
            .and_then(|s| s.template.spec)
            .context("CNI DaemonSet without a pod spec")?;
        let container = spec
            .containers
            .first()
            .cloned()
            .context("CNI DaemonSet without a container")?;
        let account = spec
            .service_account_name
            .clone()
            .context("the CNI agent's pod names no ServiceAccount")?;
        let config = Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get("istio-cni-config")
            .await
            .context("get ConfigMap istio-cni-config")?
            .data
            .unwrap_or_default();
        let pod = pod_on_node(
            client,
            namespace,
            "istio-cni-local",
            &account,
            node_name,
            serde_json::json!({ "app": "istio-cni-local" }),
        )
        .await?;

        let dir = cp.dir.join("cni-node");
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let host = dir.join("host");
        for d in [
            "usr",
            "etc",
            "dev",
            "sys",
            "proc",
            "tmp",
            "host/proc",
            "host/var/run/netns",
            "var/run/netns",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        for (inside, outside) in NODE_AGENT_MOUNTS {
            std::fs::create_dir_all(root.join(inside))?;
            std::fs::create_dir_all(host.join(outside))?;
        }
        std::fs::create_dir_all(root.join("var/run/ztunnel"))?;
        for link in ["bin", "sbin", "lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link))?;
        }
        // The image's own copy of the plugin, which the agent installs into the node's CNI bin dir.
        std::fs::create_dir_all(root.join("opt/cni/bin"))?;
        std::fs::copy(&plugin, root.join("opt/cni/bin/istio-cni"))?;
        std::fs::copy(&install_cni, root.join("install-cni"))?;
        // The node's primary network: a conflist the agent chains the plugin into.
        std::fs::write(
            host.join("etc/cni/net.d/10-node.conflist"),
            r#"{"cniVersion":"1.0.0","name":"node","plugins":[{"type":"ptp"}]}"#,
        )?;
        // The ServiceAccount token the kubelet mounts, bound to the agent's pod.
        let sa = host.join("serviceaccount");
        // No audience: the API server's own.
        let token = pod_bound_token(client, namespace, &account, None, &pod).await?;
        std::fs::write(sa.join("token"), token)?;
        std::fs::write(sa.join("ca.crt"), crate::istio::ca_pem(cp)?)?;
        std::fs::write(sa.join("namespace"), namespace)?;

        // The API server, reached from the node's namespace through a relay.
        let server: std::net::SocketAddr = cp
            .server
            .trim_start_matches("https://")
            .parse()
            .context("the control plane's server is not an address")?;
        let api_port = node.forward(server)?;

        // Slave, not private: mounts made here never reach the machine, and the pods' network
        // namespaces the test mounts later under /var/run/netns still reach the node (the
        // DaemonSet's HostToContainer propagation).
        let mut script = String::from("set -e\nR=\"$1\"; shift\nmount --make-rslave /\n");
        for d in ["usr", "etc", "dev", "sys"] {
            script.push_str(&format!("mount --rbind /{d} \"$R/{d}\"\n"));
        }
        // A proc of the agent's own pid namespace, at /proc and at /host/proc.
        script.push_str("mount -t proc proc \"$R/proc\"\nmount -t proc proc \"$R/host/proc\"\n");
        // Pods' network namespaces: at the node's path (the runtime's CNI_NETNS) and under /host
        // (where the agent opens them).
        for at in ["host/var/run/netns", "var/run/netns"] {
            script.push_str(&format!(
                "mount --rbind {} \"$R/{at}\"\n",
                crate::netns::NETNS_DIR
            ));
        }
        for (inside, outside) in NODE_AGENT_MOUNTS {
            script.push_str(&format!(
                "mount --bind {} \"$R/{inside}\"\n",
                host.join(outside).display()
            ));
        }
        script.push_str(&format!(
            "mount --bind {} \"$R/var/run/ztunnel\"\n",
            ztunnel.socket.parent().context("socket dir")?.display()
        ));
        script.push_str("exec chroot \"$R\" /usr/bin/env PATH=/usr/sbin:/usr/bin \"$@\"\n");
        let script_path = dir.join("node.sh");
        std::fs::write(&script_path, script)?;

        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let mut env: BTreeMap<String, String> = config.into_iter().collect();
        env.extend(resolve_env(
            container.env.as_deref().unwrap_or_default(),
            &pod_name,
            namespace,
            &account,
        )?);
        env.insert("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into());
        env.insert("KUBERNETES_SERVICE_PORT".into(), api_port.to_string());
        let env: Vec<(String, OsString)> = env.into_iter().map(|(k, v)| (k, v.into())).collect();
        let env_refs: Vec<(&str, &std::ffi::OsStr)> = env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect();
        let mut args: Vec<String> = [
            "netns",
            "exec",
            &node.name,
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--pid",
            "--fork",
            "--kill-child",
            "bash",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(script_path.display().to_string());
        args.push(root.display().to_string());
        args.push("/install-cni".into());
        args.extend(container.args.clone().unwrap_or_default());
        let process = Process::spawn_in(
            "install-cni",
            Path::new("ip"),
            &args,
            &cp.dir.join("install-cni-local.log"),
            &env_refs,
            Some(&dir),
        )?;
        Ok(LocalNodeAgent {
            process,
            pod,
            host,
            script: script_path,
            root,
            node: node.name.clone(),
        })
    }

    /// Calls the CNI plugin the agent installed, as the node's container runtime does when a pod
    /// starts: `CNI_COMMAND=ADD` with the pod's network namespace, name and namespace, and the
    /// plugin's entry of the node's conflist (as the agent wrote it) with the result of the
    /// network plugin before it (the pod's address). Runs on the node, in the node's view of the
    /// filesystem. Returns the plugin's output.
    pub fn cni_add(&self, pod: &Pod, netns: &NetNs, ip: &str) -> Result<String> {
        use std::io::Write;
        let conflist: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            self.host.join("etc/cni/net.d/10-node.conflist"),
        )?)?;
        let plugin = conflist["plugins"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["type"] == "istio-cni"))
            .cloned()
            .context("the agent did not chain istio-cni into the node's conflist")?;
        let mut config = plugin;
        config["cniVersion"] = conflist["cniVersion"].clone();
        config["name"] = conflist["name"].clone();
        config["prevResult"] = serde_json::json!({
            "cniVersion": conflist["cniVersion"],
            "interfaces": [{ "name": "eth0", "sandbox": netns.path() }],
            "ips": [{ "address": format!("{ip}/32"), "interface": 0 }],
        });
        let meta = &pod.metadata;
        let uid = meta.uid.clone().unwrap_or_default();
        let container_id = format!("mzt{}", uid.replace('-', ""));
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "bash",
            ])
            .arg(&self.script)
            .arg(&self.root)
            .arg("/host/opt/cni/bin/istio-cni")
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &container_id)
            .env("CNI_NETNS", netns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/host/opt/cni/bin")
            .env("CNI_ARGS", args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running the CNI plugin")?;
        child
            .stdin
            .take()
            .context("plugin stdin")?
            .write_all(config.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "CNI ADD failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}
