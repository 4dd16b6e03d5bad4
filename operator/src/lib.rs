//! meshop: a Kubernetes operator that installs and runs an Istio service mesh from one
//! `MeshInstall` resource.

pub mod api;
pub mod chart;
pub mod cli;
pub mod controller;
pub mod deploy;
pub mod docs;
pub mod effective;
pub mod generated;
pub mod inject;
mod istio_proxy;
pub mod k8s;
pub mod kinds;
pub mod metrics;
pub mod profiles;
pub mod render;
mod revision;
pub mod server;
pub mod versions;
pub mod webhook;
pub mod yaml;
