//! Prometheus alerting rules on meshop's own metrics ([`crate::metrics`]), defined once here and
//! shipped by the chart as a PrometheusRule (`prometheusRule.enabled`, [`crate::chart`]).
//!
//! Each rule's `expr` names only series meshop exports (a unit test below checks every name
//! against what [`crate::metrics::Metrics`] encodes), and tests/tests/alerts.rs runs Prometheus's
//! own `promtool check rules` and `promtool test rules` on the chart's rendering: each alert fires
//! on series that should trigger it and stays quiet on healthy ones.
//!
//! Annotations use Prometheus's alert templating (`{{ $labels.meshinstall }}`); the chart escapes
//! it from Helm ([`crate::chart`]), so what Prometheus loads is the text below.

use serde_json::{Value, json};

/// The rule group's name.
pub const GROUP: &str = "meshop";

/// The percentage of admission requests answered with an error (no AdmissionResponse: the API
/// server applied the webhook's failurePolicy) above which [`WEBHOOK_ERRORS`] fires.
pub const WEBHOOK_ERROR_PERCENT: u32 = 5;

/// Days of certificate life left under which [`CERTIFICATE_EXPIRING`] fires. The webhook's
/// certificate is renewed when a third of its 90 days is left (30 days), so fewer than 7 means
/// renewal has been failing for over three weeks.
pub const CERTIFICATE_DAYS_LEFT: u32 = 7;

pub const WEBHOOK_ERRORS: &str = "MeshopWebhookErrors";
pub const CERTIFICATE_EXPIRING: &str = "MeshopWebhookCertificateExpiring";
pub const WEBHOOK_AT_CONNECTION_CAP: &str = "MeshopWebhookAtConnectionCap";
pub const RECONCILE_ERRORS: &str = "MeshopReconcileErrors";
pub const MESHINSTALL_NOT_READY: &str = "MeshopMeshInstallNotReady";

/// One alerting rule as Prometheus's rule files and the PrometheusRule CRD spell it.
fn alert(
    name: &str,
    expr: String,
    for_: &str,
    severity: &str,
    summary: &str,
    description: &str,
) -> Value {
    json!({
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": { "severity": severity },
        "annotations": { "summary": summary, "description": description },
    })
}

/// The `meshop` group's rules.
pub fn rules() -> Vec<Value> {
    vec![
        alert(
            WEBHOOK_ERRORS,
            format!(
                "sum by (namespace) (rate(meshop_webhook_requests_total{{outcome=\"error\"}}[5m]))\n\
                 / sum by (namespace) (rate(meshop_webhook_requests_total[5m]))\n\
                 > {WEBHOOK_ERROR_PERCENT} / 100"
            ),
            "10m",
            "critical",
            "meshop's injection webhook is failing admission requests",
            &format!(
                "More than {WEBHOOK_ERROR_PERCENT}% of the admission requests meshop's webhook in namespace \
                 {{{{ $labels.namespace }}}} received over the last 5 minutes were answered \
                 with an error (not synced, namespace unreadable, timeout). The API server \
                 applied the webhook's failurePolicy to them: with Fail those pods were refused, \
                 with Ignore they were created without a sidecar."
            ),
        ),
        alert(
            CERTIFICATE_EXPIRING,
            format!(
                "min by (namespace) (meshop_webhook_certificate_expiry_timestamp_seconds > 0)\n\
                 - time() < {} * 86400",
                CERTIFICATE_DAYS_LEFT
            ),
            "1h",
            "warning",
            &format!(
                "meshop's webhook certificate expires in less than {CERTIFICATE_DAYS_LEFT} days"
            ),
            &format!(
                "The serving certificate of meshop's injection webhook in namespace \
                 {{{{ $labels.namespace }}}} expires in less than {CERTIFICATE_DAYS_LEFT} days. \
                 meshop renews it when 30 days are left, so renewal has been failing: check the \
                 operator's logs and its Secret. When it expires the API server cannot call \
                 the webhook."
            ),
        ),
        alert(
            WEBHOOK_AT_CONNECTION_CAP,
            "sum by (namespace) (rate(meshop_webhook_connection_cap_waits_total[5m])) > 0".into(),
            "10m",
            "warning",
            "meshop's injection webhook keeps reaching its connection cap",
            "meshop's injection webhook in namespace {{ $labels.namespace }} has held its \
             maximum of open connections again and again for 10 minutes and stopped accepting \
             new ones meanwhile: admission requests wait or time out. Look for clients that \
             hold connections open, or add replicas.",
        ),
        alert(
            RECONCILE_ERRORS,
            "sum by (namespace, error) (rate(meshop_reconcile_errors_total[5m])) > 0".into(),
            "15m",
            "warning",
            "meshop's reconciles keep failing",
            "meshop in namespace {{ $labels.namespace }} has failed reconcile passes with \
             errors of kind {{ $labels.error }} for 15 minutes. The MeshInstall's conditions \
             and the operator's logs say which object or call fails.",
        ),
        alert(
            MESHINSTALL_NOT_READY,
            "max by (namespace, meshinstall) (meshop_meshinstall_ready) == 0".into(),
            "15m",
            "warning",
            "A MeshInstall has not been Ready for 15 minutes",
            "MeshInstall {{ $labels.meshinstall }} has not been Ready for 15 minutes. \
             `kubectl get meshinstall {{ $labels.meshinstall }} -o yaml` shows its conditions; \
             `meshop status` shows its control plane and data plane.",
        ),
    ]
}

/// The rule groups, as both a Prometheus rule file and a PrometheusRule's `spec` spell them.
pub fn rule_groups() -> Value {
    json!({ "groups": [{ "name": GROUP, "rules": rules() }] })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Metrics, Outcome};

    /// Every `meshop_...` name the rules' expressions use.
    fn names_used() -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for rule in rules() {
            let expr = rule["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("meshop_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
        names
    }

    #[test]
    fn every_series_the_rules_use_is_exported() {
        let m = Metrics::default();
        m.observe(Duration::from_millis(1), Some("apply"));
        m.observe_admission(Outcome::Error, Duration::from_millis(1));
        m.webhook_connection_cap_reached();
        m.set_webhook_certificate_expiry(1_900_000_000);
        m.set_ready("mesh", true);
        m.set_managed_objects("mesh", 3);
        let exported: BTreeSet<String> = m
            .encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(String::from)
            .collect();
        let used = names_used();
        assert!(used.len() >= 5, "{used:?}");
        for name in &used {
            assert!(
                exported.contains(name),
                "{name} is not exported: {exported:?}"
            );
        }
    }

    #[test]
    fn every_alert_has_a_severity_summary_and_description() {
        let rules = rules();
        let names: BTreeSet<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
        assert_eq!(names.len(), rules.len(), "alert names are unique");
        for rule in &rules {
            assert!(
                ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap()),
                "{rule}"
            );
            for key in ["summary", "description"] {
                assert!(
                    !rule["annotations"][key].as_str().unwrap().is_empty(),
                    "{rule}"
                );
            }
        }
    }
}
