//! `meshop run`: the MeshInstall controller, its health and metrics endpoints, and leader election.

mod apply;
pub mod leader;
mod metrics;
mod reconcile;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

pub use apply::{FIELD_MANAGER, managed_kinds};
pub use metrics::Metrics;
pub use reconcile::FINALIZER;

use crate::api::MeshInstall;
use crate::render::{LABEL_MANAGED_BY, MANAGED_BY};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} owned object(s) still being deleted")]
    CleanupPending(usize),
}

/// How the API server reaches this operator's injection webhook.
#[derive(Clone)]
pub struct WebhookSettings {
    pub resolver: Arc<crate::webhook::CertResolver>,
    pub client_config: k8s_openapi::api::admissionregistration::v1::WebhookClientConfig,
}

/// What the last pass applied for one MeshInstall: its generation and each object's fingerprint.
type Applied = (Option<i64>, BTreeMap<String, String>);

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub webhook: Option<WebhookSettings>,
    /// The controller's cache of MeshInstalls, for ownership and cleanup decisions.
    pub meshes: kube::runtime::reflector::Store<MeshInstall>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Per MeshInstall uid: the generation last applied and a fingerprint of every object, to tell
    /// drift (an object changed outside meshop) from meshop's own changes.
    fingerprints: Mutex<HashMap<String, Applied>>,
    /// Consecutive failures per MeshInstall, for exponential backoff.
    failures: std::sync::Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        identity: &str,
        webhook: Option<WebhookSettings>,
        meshes: kube::runtime::reflector::Store<MeshInstall>,
    ) -> Context {
        let reporter = Reporter {
            controller: "meshop".into(),
            instance: Some(identity.into()),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            webhook,
            meshes,
            metrics,
            fingerprints: Mutex::new(HashMap::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// Requeue with exponential backoff (1 s doubling to 5 min), so a persistent error neither spins
/// nor leaves the MeshInstall stuck.
fn error_policy(mi: Arc<MeshInstall>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = mi.name_any();
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let n = failures.entry(key.clone()).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300));
    match error {
        Error::CleanupPending(_) => info!(meshinstall = %key, %error, "requeue in {delay:?}"),
        _ => warn!(meshinstall = %key, %error, "reconcile failed; requeue in {delay:?}"),
    }
    Action::requeue(delay)
}

async fn reconcile(mi: Arc<MeshInstall>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = mi.name_any();
    let result = reconcile::reconcile(mi, ctx.clone()).await;
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
    result
}

/// Options of `meshop run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub health_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    /// Where the injection webhook listens (HTTPS); None serves no webhook.
    pub webhook_addr: Option<SocketAddr>,
    /// How the API server reaches the webhook: a URL out of a cluster (`make demo`, tests), else
    /// the Service `meshop-webhook` in `lease_namespace`.
    pub webhook_url: Option<String>,
    /// Lifetime of the webhook's serving certificate; it is renewed when a third is left.
    pub webhook_cert_lifetime: Duration,
}

/// Runs until SIGINT/SIGTERM, or until leadership is lost (then exits with an error, so the
/// process restarts as a candidate instead of writing without the Lease).
pub async fn run(client: Client, options: RunOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(crate::server::serve_health(
        options.health_addr,
        metrics.clone(),
        ready.clone(),
    ));
    client.apiserver_version().await?;
    // A new serving certificate makes the controller re-run every MeshInstall, so the caBundle
    // and status.webhook.certificateExpiry follow at once (a full channel means a run is pending).
    let (renewed_tx, renewed) = futures::channel::mpsc::channel::<()>(1);
    let webhook = match options.webhook_addr {
        Some(addr) => Some(start_webhook(&client, &options, addr, renewed_tx).await?),
        None => None,
    };
    ready.store(true, Ordering::SeqCst);

    let elector = options.leader_election.then(|| {
        leader::Elector::new(
            client.clone(),
            leader::LeaseConfig {
                namespace: options.lease_namespace.clone(),
                name: "meshop-leader".into(),
                identity: options.identity.clone(),
                lease_duration: options.lease_duration,
                renew: options.lease_duration / 3,
            },
        )
    });
    if let Some(elector) = &elector {
        info!(identity = %options.identity, "waiting for leadership");
        tokio::select! {
            _ = elector.acquire() => info!(identity = %options.identity, "leading"),
            _ = shutdown_signal() => return Ok(()),
        }
    }

    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let controller = Controller::new(
        Api::<MeshInstall>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<Deployment>::all(client.clone()), managed.clone())
    .owns(Api::<DaemonSet>::all(client.clone()), managed.clone())
    .owns(Api::<Service>::all(client.clone()), managed.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
    .owns(Api::<ServiceAccount>::all(client.clone()), managed.clone())
    .owns(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        managed.clone(),
    )
    .owns(Api::<PodDisruptionBudget>::all(client.clone()), managed);
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        &options.identity,
        webhook,
        controller.store(),
    ));
    let controller = controller
        .reconcile_all_on(renewed)
        .graceful_shutdown_on(shutdown_signal())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(meshinstall = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "controller"),
            }
        });

    let lost = async {
        match &elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controller => info!("controller stopped"),
        _ = lost => {
            error!("lost leadership; exiting so no write happens without the lease");
            anyhow::bail!("lost leadership");
        }
    }
    server.abort();
    Ok(())
}

/// Every replica serves the webhook (the API server may call any of them); the certificate comes
/// from the shared Secret, and rotates without a restart.
async fn start_webhook(
    client: &Client,
    options: &RunOptions,
    addr: SocketAddr,
    renewed: futures::channel::mpsc::Sender<()>,
) -> anyhow::Result<WebhookSettings> {
    use crate::webhook;
    use k8s_openapi::api::admissionregistration::v1::{ServiceReference, WebhookClientConfig};
    let ns = options.lease_namespace.clone();
    let service = crate::deploy::WEBHOOK_SERVICE;
    let sans = vec![
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.cluster.local"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let lifetime = options.webhook_cert_lifetime;
    let bundle = webhook::load_or_create(client.clone(), &ns, &sans, lifetime).await?;
    let resolver = webhook::CertResolver::new(bundle)?;
    // Look often enough to renew well inside the last third of the lifetime.
    let every = (lifetime / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
    webhook::spawn_rotation(
        client.clone(),
        ns.clone(),
        sans,
        lifetime,
        resolver.clone(),
        every,
        move |_| {
            let _ = renewed.clone().try_send(());
        },
    );
    let view = webhook::spawn_view(client.clone());
    let listener = webhook::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving the injection webhook (HTTPS)");
    let server_resolver = resolver.clone();
    tokio::spawn(async move {
        if let Err(e) =
            webhook::serve_listener(listener, webhook::router(view), server_resolver).await
        {
            error!(error = %e, "webhook server stopped");
        }
    });
    let client_config = match &options.webhook_url {
        Some(url) => WebhookClientConfig {
            url: Some(url.clone()),
            ..Default::default()
        },
        None => WebhookClientConfig {
            service: Some(ServiceReference {
                name: service.into(),
                namespace: ns,
                path: Some(webhook::WEBHOOK_PATH.into()),
                port: Some(443),
            }),
            ..Default::default()
        },
    };
    Ok(WebhookSettings {
        resolver,
        client_config,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
