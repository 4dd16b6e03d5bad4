//! meshop's sidecar-injection admission webhook, served by the operator process over TLS.
//!
//! - [`certs`]: the webhook's own CA and serving certificate, with rotation.
//! - [`store`]: the certificate bundle kept in the `meshop-webhook-tls` Secret, shared by replicas.
//! - [`server`]: the HTTPS server whose certificate is swapped without a restart.
//! - [`handler`]: `POST /inject`, answering AdmissionReviews from a watched in-memory [`View`].
//! - [`config`]: the MutatingWebhookConfiguration the reconciler applies per MeshInstall.
//!
//! Wiring into `meshop run` (sketch):
//! ```text
//! let bundle   = webhook::load_or_create(client.clone(), &operator_ns, &sans, certs::DEFAULT_CERT_LIFETIME).await?;
//! let resolver = webhook::CertResolver::new(bundle)?;
//! webhook::spawn_rotation(client.clone(), operator_ns, sans, lifetime, resolver.clone(), Duration::from_secs(300), |b| { /* re-apply caBundle */ });
//! let view     = webhook::spawn_view(client.clone());
//! tokio::spawn(webhook::serve(addr, webhook::router(view), resolver.clone()));
//! // per MeshInstall: webhook_configuration(&install, client_config, resolver.bundle().ca_pem.as_bytes())
//! ```
//!
//! Behaviour worth knowing: until both watches have listed, `/inject` and `/healthz` answer 503 so
//! the API server applies `failurePolicy` instead of admitting pods on a guess; a pod whose
//! `sidecar.istio.io/*` annotation is invalid is denied (400) with the reason, as Istio does.

pub mod certs;
pub mod config;
pub mod handler;
pub mod server;
pub mod store;

pub use certs::{CertBundle, CertError};
pub use config::{WEBHOOK_PATH, webhook_configuration, webhook_configuration_name};
pub use handler::{View, router, spawn_view};
pub use server::{CertResolver, bind, serve, serve_listener, spawn_rotation};
pub use store::{SECRET_NAME, StoreError, load_or_create};

use crate::effective::Installation;
use crate::inject::InjectionConfig;

impl From<&Installation> for InjectionConfig {
    fn from(install: &Installation) -> Self {
        let inj = &install.injection;
        InjectionConfig {
            hub: install.hub.clone(),
            version: install.version.clone(),
            revision: install.revision.clone(),
            control_plane_namespace: install.namespace.clone(),
            trust_domain: install.mesh.trust_domain.clone(),
            sidecar_mode: inj.sidecar_mode,
            traffic_capture: inj.traffic_capture,
            proxy_resources: inj.proxy_resources.clone(),
            concurrency: inj.concurrency,
            log_level: inj.log_level,
            hold_application_until_proxy_starts: inj.hold_application_until_proxy_starts,
        }
    }
}

/// The key a revision is known by in the webhook: `default` for the default revision (`""`).
pub fn revision_key(revision: &str) -> &str {
    if revision.is_empty() {
        "default"
    } else {
        revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effective::Owner;

    #[test]
    fn injection_config_from_installation() {
        let spec: crate::api::MeshInstallSpec = serde_json::from_value(serde_json::json!({
            "profile": "minimal", "revision": "canary"
        }))
        .unwrap();
        let install = Installation::resolve(
            Owner {
                name: "mesh".into(),
                uid: None,
            },
            &spec,
        )
        .unwrap();
        let cfg = InjectionConfig::from(&install);
        assert_eq!(cfg.revision, "canary");
        assert_eq!(cfg.control_plane_namespace, install.namespace);
        assert_eq!(cfg.version, install.version);
        assert_eq!(cfg.trust_domain, install.mesh.trust_domain);
        assert_eq!(cfg.sidecar_mode, install.injection.sidecar_mode);
        assert_eq!(revision_key(""), "default");
        assert_eq!(revision_key("canary"), "canary");
    }
}
