//! meshop: a Kubernetes operator that installs and runs an Istio service mesh from one
//! `MeshInstall` resource.

pub mod api;
pub mod inject;
pub mod versions;
