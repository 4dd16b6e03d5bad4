//! meshop's sidecar-injection admission webhook, served by the operator process over TLS.
//!
//! Three layers answer an AdmissionReview, each testable on its own:
//! - `view`: the watched cache. Watches on Namespaces (labels only), MeshInstalls and Nodes
//!   (kubelet versions only, for `sidecarMode: auto`) feed a [`View`]; a decision reads one
//!   consistent `Snapshot` of it, so no admission request waits on the API server, except
//!   for a pod whose namespace the watch has not delivered yet: that namespace is read once
//!   (`View::resolve_namespace`), never guessed.
//! - `http`: the axum [`router`] (`POST /inject`, `GET /healthz`), body limits, status codes,
//!   and the encoding of the answer. It answers 503 until every watch has listed, so the API
//!   server applies `failurePolicy` instead of admitting pods on a guess.
//! - `admission`: the pure decision, the decoded request (`Review`: the fields injection reads,
//!   the pod still raw) + snapshot -> `Response`: which
//!   revision the labels ask for (`inject::select_revision`), that revision's settings,
//!   the engine's vetoes and the JSON patch. A pod whose `sidecar.istio.io/*` annotation is
//!   invalid is denied (400) with the reason, as Istio does.
//!
//! Around them:
//! - [`certs`]: the webhook's own CA and serving certificate, with rotation.
//! - `store`: the certificate bundle kept in the `meshop-webhook-tls` Secret, shared by replicas.
//! - `server`: the HTTPS server ([`bind`], [`serve_listener`]) whose certificate a
//!   [`CertResolver`] swaps without a restart; `spawn_rotation` renews it from the Secret. Its
//!   [`Limits`] (header, body and idle timeouts, a connection cap) keep slow or idle clients
//!   from holding it.
//! - the MutatingWebhookConfiguration that registers it is rendered with everything else
//!   (`render::webhook`), from the endpoint and CA `meshop run` knows.
//!
//! `meshop run` (see `controller`) wires them: `load_or_create` the bundle, a [`CertResolver`]
//! over it, `spawn_rotation`, `spawn_view`, then
//! `serve_listener(bind(addr), router(view, metrics), resolver, limits, metrics)`; the reconciler's plan renders each
//! MeshInstall's registration with the resolver's current CA.

mod admission;
pub mod certs;
pub(crate) mod http;
mod server;
mod store;
mod view;

pub use crate::render::{WEBHOOK_PATH, webhook_configuration_name};
pub use certs::{CertBundle, CertError};
pub use http::router;
pub(crate) use server::spawn_rotation;
pub use server::{CertResolver, Limits, bind, serve_listener};
pub(crate) use store::{CA_CRT, SECRET_NAME, TLS_CRT, load_or_create};
pub use view::View;
pub(crate) use view::spawn_view;
