//! Prometheus metrics: reconciles, errors by kind, durations, managed objects, and the injection
//! webhook's requests, latency, connections and certificate. Its own module so the controller and
//! the webhook (which record) and the health server (which exposes) all depend on it and not on
//! each other.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    pub meshinstall: String,
}

/// The kind of a failed reconcile pass (`apply`, `prune`, `status`, ...), so an alert can tell
/// a permission problem on one step from a flapping API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

/// What the webhook did with one request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted with a sidecar patch.
    Injected,
    /// Admitted unchanged: not selected, opted out, protected namespace, another operation.
    Skipped,
    /// Refused: an invalid per-pod annotation or a pod that cannot be injected.
    Denied,
    /// No AdmissionResponse: 4xx/5xx (not synced, namespace unreadable, bad body, timeout), so the
    /// API server applied the webhook's failurePolicy.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: Outcome,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Counter,
    errors: Family<ErrorLabel, Counter>,
    duration: Histogram,
    managed: Family<InstanceLabel, Gauge>,
    ready: Family<InstanceLabel, Gauge>,
    webhook_requests: Family<OutcomeLabel, Counter>,
    webhook_duration: Histogram,
    webhook_connections: Gauge,
    webhook_connection_waits: Counter,
    webhook_cert_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshop");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let managed = Family::<InstanceLabel, Gauge>::default();
        registry.register("reconciles", "Reconcile passes run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed and were requeued, by kind of error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            duration.clone(),
        );
        registry.register(
            "managed_objects",
            "Objects rendered for a MeshInstall",
            managed.clone(),
        );
        let ready = Family::<InstanceLabel, Gauge>::default();
        registry.register(
            "meshinstall_ready",
            "1 while the MeshInstall's Ready condition is True, else 0 (the leader's view)",
            ready.clone(),
        );
        let webhook_requests = Family::<OutcomeLabel, Counter>::default();
        // An admission answer takes well under a millisecond; the API server gives up at 10 s.
        let webhook_duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
        ]);
        let webhook_connections = Gauge::default();
        let webhook_connection_waits = Counter::default();
        let webhook_cert_expiry = Gauge::default();
        registry.register(
            "webhook_requests",
            "Admission requests answered by the injection webhook, by outcome",
            webhook_requests.clone(),
        );
        registry.register(
            "webhook_request_duration_seconds",
            "Time from reading an admission request to its answer",
            webhook_duration.clone(),
        );
        registry.register(
            "webhook_open_connections",
            "TLS connections the injection webhook holds open",
            webhook_connections.clone(),
        );
        registry.register(
            "webhook_connection_cap_waits",
            "Times the webhook stopped accepting because it held its maximum of connections",
            webhook_connection_waits.clone(),
        );
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires (Unix time)",
            webhook_cert_expiry.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            managed,
            ready,
            webhook_requests,
            webhook_duration,
            webhook_connections,
            webhook_connection_waits,
            webhook_cert_expiry,
        }
    }
}

impl Metrics {
    /// Records one reconcile pass; `error` names the kind of failure, None when it succeeded.
    pub fn observe(&self, elapsed: Duration, error: Option<&str>) {
        self.reconciles.inc();
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabel {
                    error: error.into(),
                })
                .inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn set_managed_objects(&self, meshinstall: &str, n: usize) {
        self.managed
            .get_or_create(&InstanceLabel {
                meshinstall: meshinstall.into(),
            })
            .set(n as i64);
    }

    /// Whether the MeshInstall's status says Ready, as the pass just wrote it.
    pub fn set_ready(&self, meshinstall: &str, ready: bool) {
        self.ready
            .get_or_create(&InstanceLabel {
                meshinstall: meshinstall.into(),
            })
            .set(i64::from(ready));
    }

    pub fn forget(&self, meshinstall: &str) {
        let label = InstanceLabel {
            meshinstall: meshinstall.into(),
        };
        self.managed.remove(&label);
        self.ready.remove(&label);
    }

    /// Records one admission request and how long it took to answer.
    pub fn observe_admission(&self, outcome: Outcome, elapsed: Duration) {
        self.webhook_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.webhook_duration.observe(elapsed.as_secs_f64());
    }

    /// The number of open webhook connections, moved by `delta`.
    pub fn webhook_connections(&self, delta: i64) {
        self.webhook_connections.inc_by(delta);
    }

    /// The webhook reached its connection cap and stopped accepting.
    pub fn webhook_connection_cap_reached(&self) {
        self.webhook_connection_waits.inc();
    }

    /// The serving certificate's expiry, as seconds since the Unix epoch.
    pub fn set_webhook_certificate_expiry(&self, unix_seconds: i64) {
        self.webhook_cert_expiry.set(unix_seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap_or_default();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_kind() {
        let m = Metrics::default();
        m.observe(Duration::from_millis(5), None);
        m.observe(Duration::from_millis(5), Some("apply"));
        m.observe(Duration::from_millis(5), Some("apply"));
        m.observe(Duration::from_millis(5), Some("prune"));
        let text = m.encode();
        assert!(text.contains("meshop_reconciles_total 4"), "{text}");
        assert!(
            text.contains(r#"meshop_reconcile_errors_total{error="apply"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"meshop_reconcile_errors_total{error="prune"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn webhook_requests_are_counted_by_outcome_with_their_latency() {
        let m = Metrics::default();
        m.observe_admission(Outcome::Injected, Duration::from_micros(300));
        m.observe_admission(Outcome::Injected, Duration::from_micros(300));
        m.observe_admission(Outcome::Error, Duration::from_millis(20));
        m.webhook_connections(3);
        m.webhook_connections(-1);
        m.set_webhook_certificate_expiry(1_900_000_000);
        m.set_ready("mesh", false);
        let text = m.encode();
        for line in [
            r#"meshop_webhook_requests_total{outcome="injected"} 2"#,
            r#"meshop_webhook_requests_total{outcome="error"} 1"#,
            "meshop_webhook_request_duration_seconds_count 3",
            r#"meshop_webhook_request_duration_seconds_bucket{le="0.0005"} 2"#,
            "meshop_webhook_open_connections 2",
            "meshop_webhook_certificate_expiry_timestamp_seconds 1900000000",
            r#"meshop_meshinstall_ready{meshinstall="mesh"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains(r#"outcome="denied""#), "{text}");
    }
}
