//! `meshop status`: one screen per MeshInstall, read from its status and from the pods of the
//! namespaces it injects. Gathering is [`super::snapshot::gather`]; [`views`] and [`text`] are pure.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;

use super::cluster::{self, ClusterArgs, Output};
use super::snapshot::{self, Scope, Snapshot};
use crate::api::{MeshInstall, MigrationStatus, condition};
use crate::controller::status::{KStatus, kstatus};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Only this MeshInstall (default: every one).
    pub name: Option<String>,
    /// Only this application namespace's pods in the data-plane section.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The operator's namespace (its leader Lease and webhook certificate).
    #[arg(long, default_value = "meshop-system")]
    pub operator_namespace: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// One MeshInstall as `meshop status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshView {
    pub name: String,
    pub profile: String,
    /// The version running (status), else the one asked for.
    pub version: String,
    pub revision: String,
    pub namespace: String,
    /// kstatus' reading: Current, InProgress or Failed.
    pub health: String,
    pub ready: Option<ConditionView>,
    pub components: Vec<ComponentView>,
    pub webhook: Option<WebhookView>,
    /// updateStrategy RevisionBased: every revision it runs, newest first (`status.revisions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionView>,
    /// updateStrategy RevisionBased: where moving workloads to the newest revision stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// The namespaces whose labels select one of its revisions, directly or by a tag.
    pub namespaces: Vec<NamespaceView>,
    /// Injected pods of each of its revisions, by revision, namespace and proxy version.
    pub data_plane: Vec<ProxyGroup>,
    /// Pods in namespaces that select one of its revisions, running without a sidecar.
    pub without_sidecar: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    pub name: String,
    pub version: String,
    pub tags: Vec<String>,
    pub ready: bool,
    pub pods: i32,
    pub workloads: i32,
}

/// A namespace, what its labels ask for (a revision or a tag) and the revision that is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    pub name: String,
    pub selects: String,
    pub revision: String,
    /// The data plane its pods get: `sidecar`, `ambient`, or `sidecar and ambient` (a namespace
    /// labelled for both: new pods get a sidecar, which wins), with how many pods have it.
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConditionView {
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    pub name: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expiry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyGroup {
    pub revision: String,
    pub namespace: String,
    pub proxy_version: String,
    pub pods: usize,
}

fn health(mi: &MeshInstall) -> String {
    match kstatus(mi.metadata.generation, mi.status.as_ref()) {
        KStatus::Current => "Current",
        KStatus::InProgress => "InProgress",
        KStatus::Failed => "Failed",
    }
    .to_string()
}

/// The views of every MeshInstall (or `only`), in name order.
pub fn views(s: &Snapshot, only: Option<&str>) -> Vec<MeshView> {
    let mut meshes: Vec<&MeshInstall> = s
        .meshes
        .iter()
        .filter(|mi| only.is_none_or(|n| mi.metadata.name.as_deref() == Some(n)))
        .collect();
    meshes.sort_by_key(|mi| mi.metadata.name.clone());
    meshes.into_iter().map(|mi| view(s, mi)).collect()
}

fn view(s: &Snapshot, mi: &MeshInstall) -> MeshView {
    let status = mi.status.clone().unwrap_or_default();
    let name = mi.metadata.name.clone().unwrap_or_default();
    // The revision last applied (a revision-based install's target), else the spec's.
    let revision = crate::revision::name(
        status
            .revision
            .as_deref()
            .unwrap_or(mi.spec.revision.as_str()),
    )
    .to_string();
    let ready = status.condition(condition::READY).map(|c| ConditionView {
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    });
    let served = s.served();
    let mine: Vec<&snapshot::ServedRevision> = served.iter().filter(|r| r.mesh == name).collect();
    let mut groups: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for pod in s.pods.iter().filter(|p| p.has_sidecar) {
        let Some(rev) = pod
            .revision
            .as_deref()
            .filter(|r| mine.iter().any(|m| m.name == *r))
        else {
            continue;
        };
        let version = pod.proxy_version.clone().unwrap_or_else(|| "?".into());
        *groups
            .entry((rev.to_string(), pod.namespace.clone(), version))
            .or_default() += 1;
    }
    // Namespaces selecting one of its revisions, directly or by a tag, as the webhook resolves.
    fn pods_in<'a>(
        s: &'a Snapshot,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a snapshot::PodView> + 'a {
        s.pods
            .iter()
            .filter(move |p| p.namespace == ns && !p.exempt)
    }
    let mut namespaces: Vec<NamespaceView> = s
        .injection_namespaces
        .iter()
        .filter_map(|ns| {
            let r = snapshot::resolve(&served, &ns.revision).filter(|r| r.mesh == name)?;
            let total = pods_in(s, &ns.name).count();
            let with = pods_in(s, &ns.name).filter(|p| p.has_sidecar).count();
            let mode = if s.ambient_namespaces.contains(&ns.name) {
                "sidecar and ambient"
            } else {
                "sidecar"
            };
            Some(NamespaceView {
                name: ns.name.clone(),
                selects: ns.revision.clone(),
                revision: r.name.clone(),
                mode: format!("{mode} ({with} of {total} pods with a sidecar)"),
            })
        })
        .collect();
    // Namespaces enrolled in ambient mode, when this mesh runs it.
    let ambient = crate::effective::Installation::from_mesh(mi).is_ok_and(|i| i.ambient.enabled);
    if ambient {
        for ns in &s.ambient_namespaces {
            if namespaces.iter().any(|n| &n.name == ns) {
                continue;
            }
            let enrolled: Vec<_> = pods_in(s, ns)
                .filter(|p| !p.host_network && p.dataplane_mode.as_deref() != Some("none"))
                .collect();
            let captured = enrolled.iter().filter(|p| p.captured).count();
            namespaces.push(NamespaceView {
                name: ns.clone(),
                selects: format!("{}=ambient", snapshot::DATAPLANE_MODE),
                revision: revision.clone(),
                mode: format!("ambient ({captured} of {} pods captured)", enrolled.len()),
            });
        }
    }
    let without_sidecar = s
        .pods
        .iter()
        .filter(|p| !p.has_sidecar && !p.exempt)
        .filter(|p| namespaces.iter().any(|ns| ns.name == p.namespace))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    MeshView {
        name,
        profile: status
            .profile
            .clone()
            .unwrap_or_else(|| mi.spec.profile.name().to_string()),
        version: status
            .version
            .clone()
            .or_else(|| mi.spec.version.clone())
            .unwrap_or_else(|| "-".into()),
        revision,
        namespace: mi.spec.namespace.clone(),
        health: health(mi),
        ready,
        components: status
            .components
            .iter()
            .map(|c| ComponentView {
                name: c.name.clone(),
                state: format!("{:?}", c.state),
                desired_replicas: c.desired_replicas,
                ready_replicas: c.ready_replicas,
                message: c.message.clone(),
            })
            .collect(),
        webhook: status.webhook.as_ref().map(|w| WebhookView {
            state: format!("{:?}", w.state),
            certificate_expiry: w.certificate_expiry.as_ref().map(|t| t.0.to_string()),
            message: w.message.clone(),
        }),
        revisions: status
            .revisions
            .iter()
            .map(|r| RevisionView {
                name: r.name.clone(),
                version: r.version.clone(),
                tags: r.tags.clone(),
                ready: r.ready,
                pods: r.pods,
                workloads: r.workloads,
            })
            .collect(),
        migration: status.migration.clone(),
        namespaces,
        data_plane: groups
            .into_iter()
            .map(|((revision, namespace, proxy_version), pods)| ProxyGroup {
                revision,
                namespace,
                proxy_version,
                pods,
            })
            .collect(),
        without_sidecar,
    }
}

fn opt(n: Option<i32>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// The aligned text screens, one per MeshInstall.
pub fn text(views: &[MeshView]) -> String {
    let mut out = String::new();
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let ready = v.ready.as_ref().map_or_else(
            || "no status yet".to_string(),
            |c| format!("{} ({}: {})", c.status, c.reason, c.message),
        );
        out.push_str(&format!("MeshInstall {}\n", v.name));
        out.push_str(&cluster::table(
            2,
            &[
                vec!["Profile:".into(), v.profile.clone()],
                vec!["Version:".into(), v.version.clone()],
                vec!["Revision:".into(), v.revision.clone()],
                vec!["Namespace:".into(), v.namespace.clone()],
                vec!["Health:".into(), v.health.clone()],
                vec!["Ready:".into(), ready],
            ],
        ));
        out.push_str("  Components:\n");
        if v.components.is_empty() {
            out.push_str("    none reported yet\n");
        } else {
            let mut rows = vec![vec![
                "NAME".into(),
                "STATE".into(),
                "DESIRED".into(),
                "READY".into(),
                "MESSAGE".into(),
            ]];
            rows.extend(v.components.iter().map(|c| {
                vec![
                    c.name.clone(),
                    c.state.clone(),
                    opt(c.desired_replicas),
                    opt(c.ready_replicas),
                    c.message.clone().unwrap_or_default(),
                ]
            }));
            out.push_str(&cluster::table(4, &rows));
        }
        let webhook = match &v.webhook {
            None => "-".to_string(),
            Some(w) => {
                let mut line = w.state.clone();
                if let Some(expiry) = &w.certificate_expiry {
                    line.push_str(&format!(", certificate expires {expiry}"));
                }
                if let Some(message) = &w.message {
                    line.push_str(&format!(" ({message})"));
                }
                line
            }
        };
        out.push_str(&format!("  Webhook:  {webhook}\n"));
        if !v.revisions.is_empty() {
            out.push_str("  Revisions:\n");
            let mut rows = vec![vec![
                "NAME".into(),
                "VERSION".into(),
                "TAGS".into(),
                "READY".into(),
                "PODS".into(),
                "WORKLOADS".into(),
            ]];
            rows.extend(v.revisions.iter().map(|r| {
                vec![
                    r.name.clone(),
                    r.version.clone(),
                    if r.tags.is_empty() {
                        "-".into()
                    } else {
                        r.tags.join(",")
                    },
                    if r.ready { "yes" } else { "no" }.into(),
                    r.pods.to_string(),
                    r.workloads.to_string(),
                ]
            }));
            out.push_str(&cluster::table(4, &rows));
        }
        if let Some(m) = &v.migration {
            let mut line = format!(
                "{} to {}, {} workload(s) pending",
                m.mode, m.target, m.pending_count
            );
            if let Some(message) = &m.message {
                line.push_str(&format!(" ({message})"));
            }
            out.push_str(&format!("  Migration:  {line}\n"));
        }
        if !v.namespaces.is_empty() {
            out.push_str("  Namespaces:\n");
            let mut rows = vec![vec![
                "NAMESPACE".into(),
                "SELECTS".into(),
                "REVISION".into(),
                "DATA PLANE".into(),
            ]];
            rows.extend(v.namespaces.iter().map(|ns| {
                vec![
                    ns.name.clone(),
                    ns.selects.clone(),
                    ns.revision.clone(),
                    ns.mode.clone(),
                ]
            }));
            out.push_str(&cluster::table(4, &rows));
        }
        out.push_str("  Data plane:\n");
        if v.data_plane.is_empty() {
            let names: Vec<&str> = if v.revisions.is_empty() {
                vec![v.revision.as_str()]
            } else {
                v.revisions.iter().map(|r| r.name.as_str()).collect()
            };
            out.push_str(&format!(
                "    no injected pods of revision {}\n",
                names.join(", ")
            ));
        } else {
            let mut rows = vec![vec![
                "REVISION".into(),
                "NAMESPACE".into(),
                "PROXY VERSION".into(),
                "PODS".into(),
            ]];
            rows.extend(v.data_plane.iter().map(|g| {
                // Each revision's proxies are judged against that revision's own release.
                let control = v
                    .revisions
                    .iter()
                    .find(|r| r.name == g.revision)
                    .map_or(v.version.as_str(), |r| r.version.as_str());
                let mut version = g.proxy_version.clone();
                if version != control {
                    version.push_str(" (differs from the control plane)");
                }
                vec![
                    g.revision.clone(),
                    g.namespace.clone(),
                    version,
                    g.pods.to_string(),
                ]
            }));
            out.push_str(&cluster::table(4, &rows));
        }
        if !v.without_sidecar.is_empty() {
            out.push_str(&format!(
                "  Without sidecar ({}; restart them to inject):\n",
                v.without_sidecar.len()
            ));
            for pod in &v.without_sidecar {
                out.push_str(&format!("    {pod}\n"));
            }
        }
    }
    out
}

pub async fn run(args: StatusArgs) -> Result<String> {
    let client = args.cluster.client().await?;
    let scope = Scope {
        operator_namespace: &args.operator_namespace,
        namespace: args.namespace.as_deref(),
        probes: false,
    };
    let snapshot = snapshot::gather(&client, &scope).await;
    if let Some(e) = snapshot.errors.get("version") {
        bail!("cannot reach the Kubernetes API server: {e}");
    }
    if snapshot.meshinstall_crd.is_none() {
        bail!("the MeshInstall CRD is not installed: run `meshop check` for what to do");
    }
    let views = views(&snapshot, args.name.as_deref());
    if let Some(name) = &args.name
        && views.is_empty()
    {
        bail!("MeshInstall {name} not found");
    }
    if let Some(encoded) = args.output.encode(&views)? {
        return Ok(encoded);
    }
    if views.is_empty() {
        return Ok("No MeshInstalls.\n".into());
    }
    Ok(text(&views))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::snapshot::{InjectionNamespace, PodView};

    fn mesh() -> MeshInstall {
        serde_yaml::from_str(
            r#"
apiVersion: meshop.dev/v1alpha1
kind: MeshInstall
metadata: {name: prod, generation: 2}
spec: {profile: production, namespace: istio-system}
status:
  observedGeneration: 2
  profile: production
  version: 1.31.1
  conditions:
  - {type: Ready, status: "True", reason: Ready, message: all components ready, lastTransitionTime: "2026-11-25T10:00:00Z"}
  - {type: Reconciling, status: "False", reason: Ready, message: "", lastTransitionTime: "2026-11-25T10:00:00Z"}
  - {type: Stalled, status: "False", reason: Ready, message: "", lastTransitionTime: "2026-11-25T10:00:00Z"}
  components:
  - {name: istiod, state: Ready, desiredReplicas: 2, readyReplicas: 2}
  - {name: ingressGateway, state: Progressing, desiredReplicas: 2, readyReplicas: 1, message: rolling out}
  webhook: {state: Active, certificateExpiry: "2027-02-23T10:00:00Z"}
"#,
        )
        .unwrap()
    }

    fn pod(ns: &str, name: &str, sidecar: Option<&str>) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            has_sidecar: sidecar.is_some(),
            revision: sidecar.map(|_| "default".into()),
            proxy_version: sidecar.map(str::to_string),
            exempt: false,
            ..Default::default()
        }
    }

    #[test]
    fn one_screen_shows_components_webhook_and_data_plane() {
        let s = Snapshot {
            meshes: vec![mesh()],
            injection_namespaces: vec![InjectionNamespace {
                name: "shop".into(),
                revision: "default".into(),
            }],
            pods: vec![
                pod("shop", "a", Some("1.31.1")),
                pod("shop", "b", Some("1.31.1")),
                pod("shop", "c", Some("1.30.5")),
                pod("shop", "d", None),
            ],
            ..Default::default()
        };
        let v = views(&s, None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].health, "Current");
        assert_eq!(v[0].without_sidecar, vec!["shop/d"]);
        let out = text(&v);
        assert!(out.contains("  Version:    1.31.1\n"), "{out}");
        assert!(
            out.contains("    ingressGateway  Progressing  2        1      rolling out\n"),
            "{out}"
        );
        assert!(
            out.contains("Webhook:  Active, certificate expires 2027-02-23T10:00:00Z"),
            "{out}"
        );
        assert!(
            out.contains("    default   shop       1.30.5 (differs from the control plane)  1\n"),
            "{out}"
        );
        assert!(out.contains("    default   shop       1.31.1"), "{out}");
        assert!(out.contains("Without sidecar (1; restart them to inject):\n    shop/d\n"));
        assert!(!out.contains("Revisions:"), "in place: one revision, {out}");
        assert!(views(&s, Some("other")).is_empty());
    }

    #[test]
    fn the_data_plane_mode_of_each_namespace_is_shown() {
        let mut ambient = mesh();
        ambient.spec.profile = crate::api::Profile::Ambient;
        let captured = |ns: &str, name: &str, yes: bool| PodView {
            captured: yes,
            ..pod(ns, name, None)
        };
        let s = Snapshot {
            meshes: vec![ambient],
            injection_namespaces: vec![InjectionNamespace {
                name: "shop".into(),
                revision: "default".into(),
            }],
            ambient_namespaces: vec!["ledger".into(), "shop".into()],
            pods: vec![
                pod("shop", "a", Some("1.31.1")),
                captured("ledger", "api", true),
                captured("ledger", "new", false),
            ],
            ..Default::default()
        };
        let out = text(&views(&s, None));
        assert!(out.contains("DATA PLANE"), "{out}");
        assert!(
            out.contains("shop       default                          default   sidecar and ambient (1 of 1 pods with a sidecar)"),
            "{out}"
        );
        assert!(
            out.contains("ledger     istio.io/dataplane-mode=ambient  default   ambient (1 of 2 pods captured)"),
            "{out}"
        );
    }

    /// A revision-based mesh in the middle of an upgrade: 1-31-1 is the target and carries the
    /// tags, 1-30-5 still runs the pods that were not restarted.
    fn mid_upgrade() -> MeshInstall {
        serde_yaml::from_str(
            r#"
apiVersion: meshop.dev/v1alpha1
kind: MeshInstall
metadata: {name: canary, generation: 2}
spec: {profile: minimal, namespace: canary-system, version: 1.31.1, updateStrategy: RevisionBased,
  upgrade: {tags: [prod-stable], workloads: {mode: Manual}}}
status:
  observedGeneration: 2
  version: 1.31.1
  revision: 1-31-1
  revisions:
  - {name: 1-31-1, version: 1.31.1, tags: [default, prod-stable], ready: true, pods: 1, workloads: 0}
  - {name: 1-30-5, version: 1.30.5, ready: true, pods: 2, workloads: 2}
  migration: {target: 1-31-1, mode: Manual, pendingCount: 2, message: restart them yourself}
  webhook: {state: Active}
"#,
        )
        .unwrap()
    }

    #[test]
    fn a_revision_based_mesh_shows_each_revision_and_its_data_plane() {
        let on = |ns: &str, name: &str, rev: &str, version: &str| PodView {
            revision: Some(rev.into()),
            ..pod(ns, name, Some(version))
        };
        let ns = |name: &str, asks: &str| InjectionNamespace {
            name: name.into(),
            revision: asks.into(),
        };
        let s = Snapshot {
            meshes: vec![mid_upgrade()],
            injection_namespaces: vec![
                ns("apps", "default"),
                ns("tagged", "prod-stable"),
                ns("pinned", "1-30-5"),
                ns("elsewhere", "nobody"),
            ],
            pods: vec![
                on("apps", "a", "1-30-5", "1.30.5"),
                on("tagged", "b", "1-30-5", "1.30.5"),
                on("tagged", "c", "1-31-1", "1.31.1"),
                pod("tagged", "bare", None),
                pod("elsewhere", "x", None),
            ],
            ..Default::default()
        };
        let v = &views(&s, None)[0];
        assert_eq!(v.revision, "1-31-1");
        let groups: Vec<(&str, &str, &str, usize)> = v
            .data_plane
            .iter()
            .map(|g| {
                (
                    g.revision.as_str(),
                    g.namespace.as_str(),
                    g.proxy_version.as_str(),
                    g.pods,
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                ("1-30-5", "apps", "1.30.5", 1),
                ("1-30-5", "tagged", "1.30.5", 1),
                ("1-31-1", "tagged", "1.31.1", 1)
            ]
        );
        let namespaces: Vec<(&str, &str, &str)> = v
            .namespaces
            .iter()
            .map(|n| (n.name.as_str(), n.selects.as_str(), n.revision.as_str()))
            .collect();
        assert_eq!(
            namespaces,
            vec![
                ("apps", "default", "1-31-1"),
                ("tagged", "prod-stable", "1-31-1"),
                ("pinned", "1-30-5", "1-30-5")
            ]
        );
        // A pod in a tag-labelled namespace without a sidecar is named; one elsewhere is not.
        assert_eq!(v.without_sidecar, vec!["tagged/bare"]);
        let out = text(&views(&s, None));
        assert!(
            out.contains("    1-31-1  1.31.1   default,prod-stable  yes    1     0\n"),
            "{out}"
        );
        // The old revision's proxies run its own release: no "differs" mark.
        assert!(
            out.contains("    1-30-5    apps       1.30.5         1\n"),
            "{out}"
        );
        assert!(!out.contains("differs"), "{out}");
        assert!(
            out.contains(
                "  Migration:  Manual to 1-31-1, 2 workload(s) pending (restart them yourself)\n"
            ),
            "{out}"
        );
    }
}
