//! `meshop status`: one screen per MeshInstall, read from its status and from the pods of the
//! namespaces it injects. Gathering is [`super::snapshot::gather`]; [`views`] and [`text`] are pure.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;

use super::cluster::{self, ClusterArgs, Output};
use super::snapshot::{self, Scope, Snapshot};
use crate::api::{MeshInstall, condition};
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
    /// Injected pods of this revision, by namespace and proxy version.
    pub data_plane: Vec<ProxyGroup>,
    /// Pods in namespaces that select this revision, running without a sidecar.
    pub without_sidecar: Vec<String>,
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
    let revision = crate::revision::name(&mi.spec.revision).to_string();
    let ready = status.condition(condition::READY).map(|c| ConditionView {
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    });
    let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
    for pod in s
        .pods
        .iter()
        .filter(|p| p.has_sidecar && p.revision.as_deref() == Some(&revision))
    {
        let version = pod.proxy_version.clone().unwrap_or_else(|| "?".into());
        *groups.entry((pod.namespace.clone(), version)).or_default() += 1;
    }
    let selecting: Vec<&str> = s
        .injection_namespaces
        .iter()
        .filter(|ns| ns.revision == revision)
        .map(|ns| ns.name.as_str())
        .collect();
    let without_sidecar = s
        .pods
        .iter()
        .filter(|p| !p.has_sidecar && !p.exempt && selecting.contains(&p.namespace.as_str()))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    MeshView {
        name: mi.metadata.name.clone().unwrap_or_default(),
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
        data_plane: groups
            .into_iter()
            .map(|((namespace, proxy_version), pods)| ProxyGroup {
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
        out.push_str("  Data plane:\n");
        if v.data_plane.is_empty() {
            out.push_str(&format!(
                "    no injected pods of revision {}\n",
                v.revision
            ));
        } else {
            let mut rows = vec![vec![
                "NAMESPACE".into(),
                "PROXY VERSION".into(),
                "PODS".into(),
            ]];
            rows.extend(v.data_plane.iter().map(|g| {
                let mut version = g.proxy_version.clone();
                if version != v.version {
                    version.push_str(" (differs from the control plane)");
                }
                vec![g.namespace.clone(), version, g.pods.to_string()]
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
            out.contains("    shop       1.30.5 (differs from the control plane)  1\n"),
            "{out}"
        );
        assert!(out.contains("    shop       1.31.1"), "{out}");
        assert!(out.contains("Without sidecar (1; restart them to inject):\n    shop/d\n"));
        assert!(views(&s, Some("other")).is_empty());
    }
}
