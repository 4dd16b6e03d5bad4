//! Tables in the docs that are computed from the code, so the docs cannot drift from it. This
//! module sits above the data it summarises (profiles, the effective installation), so none of
//! those has to depend on it.

use crate::api::{MeshInstallSpec, Profile};
use crate::effective::{Installation, Owner, Settings, SpecError};

/// The profile comparison table of `docs/profiles.md`, computed from the profile data so the two
/// cannot drift (operator/tests/generated.rs compares them; `make generate` rewrites the docs).
pub fn profile_table() -> Result<String, SpecError> {
    let installs = Profile::ALL
        .iter()
        .map(|p| {
            let spec = MeshInstallSpec {
                profile: *p,
                ..Default::default()
            };
            Installation::resolve(
                Owner {
                    name: p.name().into(),
                    uid: None,
                },
                &spec,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let quantity = |s: &Settings, which: &str| {
        let r = &s.resources;
        let map = if which == "requests" {
            r.requests.as_ref()
        } else {
            r.limits.as_ref()
        };
        match map {
            Some(m) => format!(
                "{} / {}",
                m.get("cpu").map(|q| q.0.as_str()).unwrap_or("-"),
                m.get("memory").map(|q| q.0.as_str()).unwrap_or("-")
            ),
            None => "-".into(),
        }
    };
    let workload = |s: &Settings| {
        if !s.enabled {
            return "-".to_string();
        }
        let scale = match &s.autoscale {
            Some(a) => format!("HPA {}-{} at {}% CPU", a.min, a.max, a.target_cpu),
            None => format!(
                "{} replica{}",
                s.replicas,
                if s.replicas == 1 { "" } else { "s" }
            ),
        };
        let pdb = if s.pdb.is_some() { ", PDB" } else { "" };
        let anti = if s.affinity.is_some() {
            ", anti-affinity"
        } else {
            ""
        };
        format!("{scale}{pdb}{anti}; requests {}", quantity(s, "requests"))
    };
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        (
            "istiod",
            installs.iter().map(|i| workload(&i.istiod)).collect(),
        ),
        (
            "ingress gateway",
            installs
                .iter()
                .map(|i| workload(&i.ingress_gateway))
                .collect(),
        ),
        (
            "egress gateway",
            installs
                .iter()
                .map(|i| workload(&i.egress_gateway))
                .collect(),
        ),
        (
            "CNI node agent",
            installs
                .iter()
                .map(|i| match (i.cni.enabled, i.ambient.enabled) {
                    (true, true) => "DaemonSet, ambient mode".into(),
                    (true, false) => "DaemonSet".into(),
                    _ => "-".into(),
                })
                .collect(),
        ),
        (
            "ztunnel",
            installs
                .iter()
                .map(|i| {
                    if i.ztunnel.enabled {
                        "DaemonSet".into()
                    } else {
                        "-".into()
                    }
                })
                .collect(),
        ),
    ];
    rows.push((
        "addons",
        installs
            .iter()
            .map(|i| {
                let on: Vec<&str> = [
                    (&i.prometheus, "Prometheus"),
                    (&i.grafana, "Grafana"),
                    (&i.kiali, "Kiali"),
                    (&i.jaeger, "Jaeger"),
                ]
                .iter()
                .filter(|(s, _)| s.enabled)
                .map(|(_, n)| *n)
                .collect();
                if on.is_empty() {
                    "-".into()
                } else {
                    on.join(", ")
                }
            })
            .collect(),
    ));
    rows.push((
        "mTLS",
        installs
            .iter()
            .map(|i| format!("{:?}", i.mesh.mtls))
            .collect(),
    ));
    rows.push((
        "access log",
        installs
            .iter()
            .map(|i| {
                if i.mesh.access_logging {
                    "on".into()
                } else {
                    "off".into()
                }
            })
            .collect(),
    ));
    rows.push((
        "trace sampling",
        installs
            .iter()
            .map(|i| format!("{}%", i.mesh.trace_sampling))
            .collect(),
    ));
    let proxy = |i: &Installation, which: &str| {
        quantity(
            &Settings {
                resources: i.injection.proxy_resources.clone(),
                ..Default::default()
            },
            which,
        )
    };
    rows.push((
        "sidecar requests",
        installs.iter().map(|i| proxy(i, "requests")).collect(),
    ));
    rows.push((
        "sidecar limits",
        installs.iter().map(|i| proxy(i, "limits")).collect(),
    ));
    rows.push((
        "sidecar mode",
        installs
            .iter()
            .map(|i| format!("{:?}", i.injection.sidecar_mode).to_lowercase())
            .collect(),
    ));
    rows.push((
        "hold app until proxy starts",
        installs
            .iter()
            .map(|i| {
                if i.injection.hold_application_until_proxy_starts {
                    "yes".into()
                } else {
                    "no".into()
                }
            })
            .collect(),
    ));
    rows.push((
        "proxy concurrency",
        installs
            .iter()
            .map(|i| {
                i.injection
                    .concurrency
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "all CPUs".into())
            })
            .collect(),
    ));
    rows.push((
        "webhook failurePolicy",
        installs
            .iter()
            .map(|i| format!("{:?}", i.injection.failure_policy))
            .collect(),
    ));
    let mut out = String::from("| |");
    for p in Profile::ALL {
        out.push_str(&format!(" {p} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Profile::ALL.len()));
    out.push('\n');
    for (name, cells) in rows {
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    Ok(out)
}

/// The table of docs/versions.md: every minor meshop knows, from `profiles/versions.yaml`.
pub fn version_table() -> String {
    use crate::versions::{Support, catalog};
    let mut out = String::from(
        "| minor | support | released | end of life | patches (released) | Kubernetes | native sidecars by default |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for m in &catalog().minors {
        let patches: Vec<String> = m
            .patches
            .iter()
            .map(|p| {
                let mut text = match &p.released {
                    Some(date) => format!("{} ({date})", p.version),
                    None => p.version.to_string(),
                };
                if p.withdrawn.is_some() {
                    text.push_str(" withdrawn");
                }
                text
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            m.minor,
            match m.support {
                Support::Supported => "supported",
                Support::EndOfLife => "end of life",
            },
            m.released.as_deref().unwrap_or("-"),
            m.end_of_life.as_deref().unwrap_or("-"),
            patches.join(", "),
            m.kubernetes
                .as_ref()
                .map(|k| format!("{}-{}", k.min, k.max))
                .unwrap_or_else(|| "-".into()),
            if m.native_sidecars_by_default {
                "yes"
            } else {
                "no"
            },
        ));
    }
    out
}
