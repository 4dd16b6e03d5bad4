//! meshop: a Kubernetes operator that installs and runs an Istio service mesh from one
//! `MeshInstall` resource.

pub mod alerts;
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
pub mod strategic_merge;
pub mod versions;
pub mod webhook;
pub mod yaml;

/// mimalloc rather than glibc's malloc, for every program built on this crate (`meshop`, its
/// benchmarks, the load tool): an admission request allocates a few thousand small objects
/// (the decoded pod, the sidecar, the patch), and glibc's malloc and free were a quarter of the
/// webhook's CPU (docs/performance.md). Set here, once, so the benchmark and the server measure
/// the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
