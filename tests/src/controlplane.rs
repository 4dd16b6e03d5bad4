//! A real Kubernetes control plane on loopback: etcd and kube-apiserver, and in controllers mode
//! also kube-controller-manager, kube-scheduler, kwok and fake nodes, so Deployments roll out.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::binaries::Binaries;
use crate::certs::{self, Pki};
use crate::process::Process;
use crate::wait::{GiveUp, poll_until};

/// A client for the user of a kubeconfig file.
async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Also start kube-controller-manager, kube-scheduler and kwok, and create fake nodes.
    pub controllers: bool,
    /// How many fake nodes kwok runs (controllers mode only).
    pub nodes: usize,
    /// Install meshop's CRDs once the API server is ready.
    pub install_crds: bool,
    /// Where logs, certificates, the kubeconfig and etcd's data go.
    pub dir: Option<PathBuf>,
    /// The Service IP range. The API server calls a webhook registered by Service at the
    /// Service's ClusterIP, so a loopback range (such as 127.100.0.0/24) lets it reach a webhook
    /// served by a local process listening on that address.
    pub service_cidr: String,
    /// Write the API server's audit log (every request at `Metadata` level, JSON lines) to
    /// `<dir>/audit.log`; [`crate::audit`] reads it.
    pub audit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controllers: false,
            nodes: 3,
            install_crds: true,
            dir: None,
            service_cidr: "10.0.0.0/24".to_string(),
            audit: false,
        }
    }
}

/// A running control plane. Dropping it stops every process.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub binaries: Binaries,
    pub options: Options,
    // Stopped in reverse start order on drop: controllers first, etcd last.
    processes: Vec<Process>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ControlPlane {
    /// Starts a control plane and waits until it serves requests (and, in controllers mode, until
    /// the fake nodes are Ready).
    pub fn start(options: Options) -> Result<ControlPlane> {
        let started = Instant::now();
        let binaries = Binaries::locate()?;
        let dir = match &options.dir {
            Some(d) => d.clone(),
            None => crate::run_dir()?,
        };
        std::fs::create_dir_all(&dir)?;
        let pki = certs::mint(&dir)?;
        let mut cp = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            dir,
            binaries,
            options,
            processes: Vec::new(),
        };
        cp.start_etcd_and_apiserver(&pki)?;
        if cp.options.controllers {
            cp.start_controllers(&pki)?;
        }
        crate::block_on(cp.settle())?;
        eprintln!(
            "testenv: control plane ready in {:.1}s at {} (logs and kubeconfig in {})",
            started.elapsed().as_secs_f64(),
            cp.server,
            cp.dir.display()
        );
        Ok(cp)
    }

    fn start_etcd_and_apiserver(&mut self, pki: &Pki) -> Result<()> {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data = self.dir.join("etcd-data");
        let _ = std::fs::remove_dir_all(&data);
        let etcd_args = vec![
            "--name=testenv".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=testenv={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        self.spawn("etcd", &self.binaries.etcd.clone(), etcd_args)?;

        let port = free_port()?;
        self.server = format!("https://127.0.0.1:{port}");
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--service-cluster-ip-range={}", self.options.service_cidr),
            "--authorization-mode=RBAC".to_string(),
            "--allow-privileged=true".to_string(),
            "--endpoint-reconciler-type=none".to_string(),
            "--v=1".to_string(),
        ];
        if self.options.audit {
            args.extend(crate::audit::apiserver_args(&self.dir)?);
        }
        self.spawn(
            "kube-apiserver",
            &self.binaries.kube_apiserver.clone(),
            args,
        )?;
        self.write_kubeconfig(pki)?;
        Ok(())
    }

    fn start_controllers(&mut self, pki: &Pki) -> Result<()> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        let kcm = vec![
            kubeconfig.clone(),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            format!("--root-ca-file={}", pki.ca_cert.display()),
            format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--cluster-signing-cert-file={}", pki.ca_cert.display()),
            format!("--cluster-signing-key-file={}", pki.ca_key.display()),
            "--use-service-account-credentials=true".to_string(),
            // Faster feedback than the production defaults; fake nodes never go away on their own.
            "--concurrent-deployment-syncs=10".to_string(),
            "--concurrent-replicaset-syncs=10".to_string(),
            "--horizontal-pod-autoscaler-sync-period=2s".to_string(),
            "--v=1".to_string(),
        ];
        self.spawn(
            "kube-controller-manager",
            &self.binaries.kube_controller_manager.clone(),
            kcm,
        )?;
        let scheduler = vec![
            kubeconfig.clone(),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
        ];
        self.spawn(
            "kube-scheduler",
            &self.binaries.kube_scheduler.clone(),
            scheduler,
        )?;
        let mut kwok = vec![
            kubeconfig,
            "--manage-all-nodes=true".to_string(),
            // Pod IPs must not overlap the service range.
            "--cidr=10.244.0.0/16".to_string(),
            "--node-ip=127.0.0.1".to_string(),
            // kwok renews each fake node's Lease only when given a lease duration; without it the
            // node lifecycle controller marks nodes NotReady after its grace period (about 50 s)
            // and marks their pods unready, so anything running longer than that would flap.
            "--node-lease-duration-seconds=40".to_string(),
        ];
        for stage in self.binaries.kwok_stages()? {
            kwok.push(format!("--config={}", stage.display()));
        }
        self.spawn("kwok", &self.binaries.kwok.clone(), kwok)?;
        Ok(())
    }

    fn spawn(&mut self, name: &str, program: &Path, args: Vec<String>) -> Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let process = Process::spawn(name, program, &args, &log, &[])?;
        self.processes.push(process);
        Ok(())
    }

    fn write_kubeconfig(&self, pki: &Pki) -> Result<()> {
        use base64::Engine as _;
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
             users:\n- name: admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n\
             contexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: admin\ncurrent-context: testenv\n",
            server = self.server,
            ca = b64(pki.ca_cert_pem.as_bytes()),
            cert = b64(pki.admin_cert_pem.as_bytes()),
            key = b64(pki.admin_key_pem.as_bytes()),
        );
        std::fs::write(&self.kubeconfig, text)?;
        Ok(())
    }

    /// A client for the admin user. Create one per test: a client is bound to the tokio runtime it
    /// was first used on, and each `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// A kubeconfig (written next to the admin's) whose requests act as `user` in `groups`
    /// (kubeconfig `as` / `as-groups`: the admin impersonates). Authorization judges `user`, and
    /// the audit log records it as the impersonated user.
    pub fn impersonating(&self, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let text = std::fs::read_to_string(&self.kubeconfig)?;
        let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let users = config["users"]
            .as_sequence_mut()
            .context("the admin kubeconfig has no users")?;
        for u in users {
            u["user"]["as"] = user.into();
            u["user"]["as-groups"] = groups.iter().map(|g| serde_yaml::Value::from(*g)).collect();
        }
        let file: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.join(format!("kubeconfig-as-{file}"));
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        Ok(path)
    }

    /// `kubectl apply --server-side -k deploy/`, as a user installs meshop (server-side: the CRD
    /// is too large for a client-side apply's annotation).
    pub fn apply_deploy(&self) -> Result<()> {
        let out = std::process::Command::new(&self.binaries.kubectl)
            .args([
                "apply",
                "--server-side",
                "-k",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"),
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl apply -k deploy/: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Grants meshop (deploy/'s ServiceAccount) a control-plane namespace as an installer does
    /// (`meshop grant-namespace NS | kubectl apply --server-side -f -`).
    pub fn grant_control_plane(&self, namespace: &str) -> Result<()> {
        use std::io::Write;
        let yaml = meshop::yaml::documents(&meshop::deploy::control_plane_objects(
            namespace,
            meshop::deploy::OPERATOR_NAMESPACE,
        ))?;
        let mut child = std::process::Command::new(&self.binaries.kubectl)
            .args(["apply", "--server-side", "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl apply (grant {namespace}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The audit log's path (written only when `Options::audit` is set).
    pub fn audit_log(&self) -> PathBuf {
        crate::audit::log_path(&self.dir)
    }

    /// Fails if any component has exited.
    pub fn check_running(&mut self) -> Result<()> {
        for p in self.processes.iter_mut() {
            p.check_running()?;
        }
        Ok(())
    }

    /// The log file of every component, for failure messages.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.processes.iter().map(|p| p.log.clone()).collect()
    }

    /// `check_running` as a poll result: a dead component ends any wait at once.
    fn alive(&mut self) -> Result<()> {
        self.check_running().map_err(|e| GiveUp(e).into())
    }

    async fn settle(&mut self) -> Result<()> {
        let kubeconfig = self.kubeconfig.clone();
        // The API server answers /readyz only once its post-start hooks (RBAC bootstrap, ...) ran.
        let client = poll_until(
            &format!(
                "kube-apiserver ready (log: {})",
                self.dir.join("kube-apiserver.log").display()
            ),
            Duration::from_secs(120),
            || {
                let alive = self.alive();
                let kubeconfig = kubeconfig.clone();
                async move {
                    alive?;
                    let client = client_for(&kubeconfig).await?;
                    let readyz = client
                        .request_text(http::Request::get("/readyz").body(Vec::new())?)
                        .await?;
                    if readyz.trim() != "ok" {
                        bail!("/readyz: {readyz}");
                    }
                    if Api::<Namespace>::all(client.clone())
                        .get_opt("default")
                        .await?
                        .is_none()
                    {
                        bail!("no default namespace yet");
                    }
                    Ok(client)
                }
            },
        )
        .await?;
        if self.options.install_crds {
            crate::install_crds(&client).await?;
        }
        if self.options.controllers {
            self.create_nodes(&client).await?;
            self.wait_for_service_account(&client).await?;
        }
        Ok(())
    }

    async fn create_nodes(&mut self, client: &Client) -> Result<()> {
        const FAKE_KUBELET_VERSION: &str = "v1.36.3";
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..self.options.nodes {
            let name = format!("kwok-node-{i}");
            let node: Node = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
                        "type": "kwok"
                    },
                    "annotations": { "node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake" }
                },
                "status": {
                    "allocatable": { "cpu": "32", "memory": "256Gi", "pods": "110" },
                    "capacity": { "cpu": "32", "memory": "256Gi", "pods": "110" },
                    // A kubelet of the control plane's own version, as a real node would report
                    // (kwok keeps it; otherwise it reports its own version, which no kubelet has).
                    // The injector's sidecarMode auto reads it.
                    "nodeInfo": { "kubeletVersion": FAKE_KUBELET_VERSION, "operatingSystem": "linux", "architecture": "amd64" }
                }
            }))?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("create node {name}"))?;
        }
        let want = self.options.nodes;
        poll_until(
            &format!(
                "{want} kwok nodes Ready (log: {})",
                self.dir.join("kwok.log").display()
            ),
            Duration::from_secs(60),
            || {
                let alive = self.alive();
                let nodes = nodes.clone();
                async move {
                    alive?;
                    let list = nodes.list(&Default::default()).await?;
                    let ready = list
                        .items
                        .iter()
                        .filter(|n| {
                            n.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count();
                    if ready < want {
                        bail!("{ready}/{want} Ready");
                    }
                    Ok(())
                }
            },
        )
        .await
    }

    /// Pods can only be created once the controller manager made the namespace's default
    /// ServiceAccount; wait for it in `default` so the first test does not race it.
    async fn wait_for_service_account(&mut self, client: &Client) -> Result<()> {
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), "default");
        poll_until(
            &format!(
                "the default ServiceAccount from kube-controller-manager (log: {})",
                self.dir.join("kube-controller-manager.log").display()
            ),
            Duration::from_secs(60),
            || {
                let alive = self.alive();
                let sa = sa.clone();
                async move {
                    alive?;
                    match sa.get_opt("default").await? {
                        Some(_) => Ok(()),
                        None => bail!("not created yet"),
                    }
                }
            },
        )
        .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            p.kill();
        }
    }
}
