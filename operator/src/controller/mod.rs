//! `meshop run`: the MeshInstall controller, its health and metrics endpoints, and leader election.
//!
//! A pass (see [`reconcile`]) goes resolve -> [`plan`] (pure) -> [`apply`] (I/O) -> [`assess`]
//! (pure) -> [`prune`] -> [`status`] (pure, one write). This file holds the shared [`Context`], the
//! error policy and the wiring of `meshop run`.

mod apply;
mod assess;
pub mod leader;
mod migrate;
pub(crate) mod plan;
pub(crate) mod proxies;
pub(crate) mod prune;
mod reconcile;
pub(crate) mod revisions;
pub mod status;
pub(crate) mod upgrade;
pub(crate) mod upgrade_step;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

pub use apply::{FIELD_MANAGER, keeps_existing};
pub use reconcile::{FINALIZER, INVALID_OVERLAY};

use crate::api::MeshInstall;
use crate::kinds::MANAGED_KINDS;
use crate::metrics::Metrics;
use crate::render::{LABEL_MANAGED_BY, MANAGED_BY};
use assess::AppliedRecord;
use plan::WebhookEndpoint;

/// Why a pass failed; it is retried with backoff. The kind is counted in the metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {key}: {source}")]
    Apply {
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("pruning objects no longer rendered: {0}")]
    Prune(#[source] kube::Error),
    #[error("deleting the MeshInstall's objects: {0}")]
    Cleanup(#[source] kube::Error),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0} owned object(s) still being deleted")]
    CleanupPending(usize),
    #[error("reading the MeshInstalls to confirm a revision conflict: {0}")]
    Conflict(#[source] kube::Error),
    #[error("revision-based upgrade (listing workloads or restarting them): {0}")]
    Upgrade(#[source] kube::Error),
    #[error(
        "revision-based upgrade: the watch of proxy pods has not listed them within {0:?}, so which revisions are in use is unknown"
    )]
    ProxiesUnknown(Duration),
}

impl Error {
    /// The `error` label of `meshop_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Apply { .. } => "apply",
            Error::Prune(_) => "prune",
            Error::Cleanup(_) => "cleanup",
            Error::Status(_) => "status",
            Error::Conflict(_) => "conflict",
            Error::CleanupPending(_) => "cleanup_pending",
            Error::Upgrade(_) | Error::ProxiesUnknown(_) => "upgrade",
            Error::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner.metric_label(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "finalizer",
                F::UnnamedObject | F::InvalidFinalizer => "invalid_object",
            },
        }
    }
}

/// How the API server reaches this operator's injection webhook.
#[derive(Clone)]
pub struct WebhookSettings {
    pub resolver: Arc<crate::webhook::CertResolver>,
    pub client_config: k8s_openapi::api::admissionregistration::v1::WebhookClientConfig,
    /// Left out of every injection webhook's namespace selector.
    pub operator_namespace: String,
}

/// Shared state of the controller.
pub struct Context {
    client: Client,
    webhook: Option<WebhookSettings>,
    /// The controller's cache of MeshInstalls, for ownership and cleanup decisions.
    meshes: kube::runtime::reflector::Store<MeshInstall>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Per MeshInstall uid: what the last pass applied, to tell drift (an object changed outside
    /// meshop) from meshop's own changes.
    applied: Mutex<HashMap<String, AppliedRecord>>,
    /// Consecutive failures per MeshInstall, for exponential backoff.
    failures: std::sync::Mutex<HashMap<String, u32>>,
    /// The watch of proxy pods, started by the first revision-based pass.
    proxies: tokio::sync::OnceCell<proxies::ProxyPods>,
    /// Asks the controller for a pass of one MeshInstall (the proxies' watch uses it).
    trigger: futures::channel::mpsc::Sender<kube::runtime::reflector::ObjectRef<MeshInstall>>,
}

impl Context {
    fn new(
        client: Client,
        metrics: Arc<Metrics>,
        identity: &str,
        webhook: Option<WebhookSettings>,
        meshes: kube::runtime::reflector::Store<MeshInstall>,
        trigger: futures::channel::mpsc::Sender<kube::runtime::reflector::ObjectRef<MeshInstall>>,
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
            applied: Mutex::new(HashMap::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
            proxies: tokio::sync::OnceCell::new(),
            trigger,
        }
    }

    /// The watch of proxy pods, started on first use.
    async fn proxies(&self) -> &proxies::ProxyPods {
        self.proxies
            .get_or_init(|| async {
                proxies::ProxyPods::spawn(
                    self.client.clone(),
                    self.meshes.clone(),
                    self.trigger.clone(),
                )
            })
            .await
    }

    /// The webhook endpoint with the CA and certificate in use right now.
    fn webhook_endpoint(&self) -> Option<WebhookEndpoint> {
        let settings = self.webhook.as_ref()?;
        let bundle = settings.resolver.bundle();
        Some(WebhookEndpoint {
            injector: crate::render::InjectorEndpoint {
                client_config: settings.client_config.clone(),
                ca_bundle: bundle.ca_pem.clone(),
                operator_namespace: settings.operator_namespace.clone(),
            },
            certificate_expiry: bundle.not_after,
        })
    }

    /// Stores what a pass applied and returns what the pass before it applied.
    async fn remember_applied(&self, uid: &str, record: AppliedRecord) -> Option<AppliedRecord> {
        self.applied.lock().await.insert(uid.to_string(), record)
    }

    async fn forget_applied(&self, uid: &str) {
        self.applied.lock().await.remove(uid);
    }

    /// The other MeshInstalls that are not being deleted, from the controller's cache (no API call).
    fn live_meshes<'a>(&self, mi: &'a MeshInstall) -> impl Iterator<Item = Arc<MeshInstall>> + 'a {
        self.meshes
            .state()
            .into_iter()
            .filter(move |o| plan::is_live_other(mi, o))
    }

    /// Publishes an Event on the MeshInstall; a failure to publish is logged, never fatal.
    async fn event(&self, mi: &MeshInstall, type_: EventType, reason: &str, note: &str) {
        self.event_on(mi, type_, reason, reason, note).await
    }

    /// [`Context::event`] for one step of several of a kind (a tag move, a workload restart):
    /// the recorder folds events with the same reason and action into one series that keeps the
    /// first note, so each step gets its own `action` and stays readable in `kubectl describe`.
    async fn event_on(
        &self,
        mi: &MeshInstall,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.chars().take(128).collect(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &mi.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish event");
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
    let delay = backoff(*n);
    match error {
        Error::CleanupPending(_) => info!(meshinstall = %key, %error, "requeue in {delay:?}"),
        _ => warn!(meshinstall = %key, %error, "reconcile failed; requeue in {delay:?}"),
    }
    Action::requeue(delay)
}

/// The delay after `failures` consecutive failures: 1 s doubling, capped at 5 minutes.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(8)).min(Duration::from_secs(300))
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
    /// What one client may hold of the webhook server: timeouts and the connection cap.
    pub webhook_limits: crate::webhook::Limits,
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
    preflight(&client, &options).await?;
    // A new serving certificate makes the controller re-run every MeshInstall, so the caBundle
    // and status.webhook.certificateExpiry follow at once (a full channel means a run is pending).
    let (renewed_tx, renewed) = futures::channel::mpsc::channel::<()>(1);
    let webhook = match options.webhook_addr {
        Some(addr) => {
            Some(start_webhook(&client, &options, addr, renewed_tx, metrics.clone()).await?)
        }
        None => None,
    };
    ready.store(true, Ordering::SeqCst);

    let elector = match options.leader_election {
        true => {
            let config = leader::LeaseConfig::new(
                &options.lease_namespace,
                leader::LEASE_NAME,
                &options.identity,
                options.lease_duration,
            );
            config
                .check()
                .map_err(|e| anyhow::anyhow!("leader election: {e}"))?;
            Some(leader::Elector::new(client.clone(), config))
        }
        false => None,
    };
    // The controller writes only while this replica's term lasts (leader::fenced).
    let client = match &elector {
        Some(elector) => {
            info!(identity = %options.identity, "waiting for leadership");
            tokio::select! {
                _ = elector.acquire() => info!(identity = %options.identity, "leading"),
                _ = shutdown_signal() => return Ok(()),
            }
            leader::fenced(client, elector.fence())
        }
        None => client,
    };

    // Watch the kinds whose loss breaks the mesh at once, narrowed to meshop's own objects.
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let mut controller = Controller::new(
        Api::<MeshInstall>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    for kind in MANAGED_KINDS.iter().filter(|k| k.watched) {
        let resource = kind.api_resource();
        controller = controller.owns_with(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            resource,
            managed.clone(),
        );
    }
    // Passes asked for by the watch of proxy pods (see `proxies`).
    let (trigger, triggered) = futures::channel::mpsc::channel(16);
    // A MeshInstall stalled on another's claim is looked at again when any other one changes or
    // goes (`plan::reconsider`): nothing of its own changes when the claim is released.
    let meshes = controller.store();
    let claims = meshes.clone();
    controller = controller.watches(
        Api::<MeshInstall>::all(client.clone()),
        watcher::Config::default().any_semantic(),
        move |changed: MeshInstall| {
            let all = claims.state();
            plan::reconsider(&changed, all.iter().map(Arc::as_ref))
                .into_iter()
                .map(|name| kube::runtime::reflector::ObjectRef::new(&name))
                .collect::<Vec<_>>()
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        &options.identity,
        webhook,
        meshes,
        trigger,
    ));
    let controller = controller
        .reconcile_on(triggered)
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
    metrics: Arc<Metrics>,
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
    let bundle = webhook::load_or_create(client.clone(), &ns, &sans, lifetime, None).await?;
    metrics.set_webhook_certificate_expiry(unix_seconds(bundle.not_after));
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
        {
            let metrics = metrics.clone();
            move |bundle| {
                metrics.set_webhook_certificate_expiry(unix_seconds(bundle.not_after));
                let _ = renewed.clone().try_send(());
            }
        },
    );
    let view = webhook::spawn_view(client.clone(), &ns);
    let listener = webhook::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving the injection webhook (HTTPS)");
    let server_resolver = resolver.clone();
    let limits = options.webhook_limits;
    tokio::spawn(async move {
        if let Err(e) = webhook::serve_listener(
            listener,
            webhook::router(view, metrics.clone()),
            server_resolver,
            limits,
            metrics,
        )
        .await
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
        operator_namespace: options.lease_namespace.clone(),
    })
}

/// Seconds since the Unix epoch (0 for a time before it, which a certificate never has).
fn unix_seconds(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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

/// Checks, before anything starts, what `meshop run` needs from the cluster and cannot create
/// itself; the error is one line that says what to do.
async fn preflight(client: &Client, options: &RunOptions) -> anyhow::Result<()> {
    let version = client.apiserver_version().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the Kubernetes API server ({e}); check KUBECONFIG or the in-cluster service account")
    })?;
    info!(kubernetes = %version.git_version, "connected to the API server");
    let crd = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client.clone());
    let crd_name = format!("{}.{}", MeshInstall::plural(&()), MeshInstall::group(&()));
    match crd.get_opt(&crd_name).await {
        Ok(Some(_)) => {}
        Ok(None) => anyhow::bail!(
            "the MeshInstall CRD {crd_name} is not installed: run `meshop crd | kubectl apply --server-side -f -` (or install deploy/)"
        ),
        Err(e) => anyhow::bail!(
            "cannot read the CRD {crd_name} ({e}); meshop's ClusterRole (deploy/rbac.yaml) grants it"
        ),
    }
    // The Lease and the webhook's certificate Secret live in this namespace; without either
    // feature meshop needs no namespace of its own.
    if !options.leader_election && options.webhook_addr.is_none() {
        return Ok(());
    }
    let ns = &options.lease_namespace;
    let found = Api::<Namespace>::all(client.clone())
        .get_opt(ns)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read namespace {ns} ({e}); meshop's ClusterRole (deploy/rbac.yaml) grants it"))?;
    if found.is_none() {
        anyhow::bail!(
            "namespace {ns} does not exist: create it (`kubectl create namespace {ns}`) or pass --lease-namespace with an existing one; meshop keeps its leader Lease and webhook certificate there"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(256));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(256));
    }

    #[test]
    fn errors_are_labelled_by_their_step_through_the_finalizer() {
        use kube::runtime::finalizer::Error as F;
        let pending = Error::CleanupPending(2);
        assert_eq!(pending.metric_label(), "cleanup_pending");
        let wrapped = Error::Finalizer(Box::new(F::CleanupFailed(Error::CleanupPending(1))));
        assert_eq!(wrapped.metric_label(), "cleanup_pending");
        let unnamed = Error::Finalizer(Box::new(F::UnnamedObject));
        assert_eq!(unnamed.metric_label(), "invalid_object");
    }
}
