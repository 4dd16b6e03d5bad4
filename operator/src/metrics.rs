//! Prometheus metrics: reconciles, errors by kind, durations, managed objects. Its own module so
//! the controller (which records) and the health server (which exposes) both depend on it and
//! not on each other.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
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

pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Counter,
    errors: Family<ErrorLabel, Counter>,
    duration: Histogram,
    managed: Family<InstanceLabel, Gauge>,
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
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            managed,
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

    pub fn forget(&self, meshinstall: &str) {
        self.managed.remove(&InstanceLabel {
            meshinstall: meshinstall.into(),
        });
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
}
