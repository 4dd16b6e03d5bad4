//! `meshop run`: the operator process (logging, runtime, client) around [`crate::controller::run`].

use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub(super) struct RunArgs {
    /// Address of the /livez, /readyz and /metrics endpoints.
    #[arg(long, env = "MESHOP_HEALTH_ADDR", default_value = "0.0.0.0:8080")]
    health_addr: std::net::SocketAddr,
    /// Elect a leader with a Lease so that only one replica writes.
    #[arg(long, env = "MESHOP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease (in a cluster: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "meshop-system")]
    lease_namespace: String,
    /// This replica's identity in the Lease (in a cluster: the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease lasts without renewal before another replica may take over.
    #[arg(long, default_value = "15", value_name = "SECONDS")]
    lease_duration: u64,
    /// Where the HTTPS injection webhook listens; "off" serves none.
    #[arg(long, env = "MESHOP_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    webhook_addr: String,
    /// The URL the API server calls the webhook at, when the operator runs outside the cluster
    /// (such as https://127.0.0.1:9443/inject). In a cluster leave it out: the Service
    /// meshop-webhook in the operator's namespace is used.
    #[arg(long, env = "MESHOP_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Lifetime of the webhook's serving certificate, in seconds (renewed when a third is left).
    #[arg(long, hide = true, default_value_t = 90 * 24 * 3600, value_name = "SECONDS")]
    webhook_cert_lifetime: u64,
    /// Seconds a webhook client has to send a complete request head (after the TLS handshake or
    /// its previous response) before the connection is closed.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    webhook_header_timeout: u64,
    /// Seconds a webhook connection may stay open with no request in flight and nothing sent.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    webhook_idle_timeout: u64,
    /// Webhook connections open at most; at the cap new ones wait in the kernel's backlog until
    /// one closes.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    webhook_max_connections: usize,
    /// Log format.
    #[arg(long, env = "MESHOP_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

/// `meshop run`. Logs go to stderr; the level comes from RUST_LOG (default info).
pub(super) fn run(args: RunArgs) -> ExitCode {
    // kube-client logs every failed request at ERROR on its own; meshop reports each failure
    // once, with what to do, so that log is off unless RUST_LOG asks for it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_client::client::builder=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let result = runtime.block_on(async {
        // KUBECONFIG (or ~/.kube/config) out of a cluster, the service account inside one.
        let client = kube::Client::try_default().await?;
        let options = crate::controller::RunOptions {
            health_addr: args.health_addr,
            leader_election: args.leader_elect,
            lease_namespace: args.lease_namespace.clone(),
            identity,
            lease_duration: std::time::Duration::from_secs(args.lease_duration.max(3)),
            webhook_addr: if args.webhook_addr == "off" {
                None
            } else {
                Some(args.webhook_addr.parse()?)
            },
            webhook_url: args.webhook_url.clone(),
            webhook_cert_lifetime: std::time::Duration::from_secs(
                args.webhook_cert_lifetime.max(30),
            ),
            webhook_limits: crate::webhook::Limits {
                header_timeout: std::time::Duration::from_secs(args.webhook_header_timeout.max(1)),
                idle_timeout: std::time::Duration::from_secs(args.webhook_idle_timeout.max(1)),
                max_connections: args.webhook_max_connections.max(1),
            },
        };
        crate::controller::run(client, options).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
