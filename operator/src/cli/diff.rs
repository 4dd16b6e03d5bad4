//! `meshop diff`: what applying a MeshInstall changes, object by object.
//!
//! Against a cluster (`-f mesh.yaml`) it predicts the reconciler's next passes with the
//! reconciler's own pieces: the same [`Plan`] (render, plus the webhook registration with the
//! endpoint and CA the running operator registered), each object server-side applied in dry run
//! with the field manager `meshop`, forced, exactly as `controller::apply` does (so the API
//! server's defaulting, field ownership and admission all take part), and the same
//! [`prune::prune_set`] over the same labelled listing for what it deletes once everything planned
//! is ready. Offline (`--from`/`--to`, `--to-profile`, `--to-version`) it compares two renderings.
//! Field changes are computed by [`field_changes`], pure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;

use super::Outcome;
use super::cluster::{self, ClusterArgs, Output};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{MeshInstall, Profile, UpdateStrategy};
use crate::controller::plan::{self, Plan, VersionMove, WebhookEndpoint};
use crate::controller::{FIELD_MANAGER, proxies, prune, upgrade_step};
use crate::effective::Installation;
use crate::render::{InjectorEndpoint, Rendered};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The MeshInstall to compare with the cluster (or, with --to-profile / --to-version, with
    /// itself changed offline).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Offline: the MeshInstall before.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "from_profile"])]
    pub from: Option<PathBuf>,
    /// Offline: a profile with no overrides as the MeshInstall before.
    #[arg(long, value_name = "PROFILE")]
    pub from_profile: Option<Profile>,
    /// Offline: the MeshInstall after.
    #[arg(long, value_name = "FILE", conflicts_with = "to_profile")]
    pub to: Option<PathBuf>,
    /// Offline: the MeshInstall before with this profile.
    #[arg(long, value_name = "PROFILE")]
    pub to_profile: Option<Profile>,
    /// Offline: the MeshInstall before with this Istio version (a release or a minor).
    #[arg(long, value_name = "VERSION")]
    pub to_version: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Exit with status 1 when there are differences (as `git diff --exit-code`).
    #[arg(long)]
    pub exit_code: bool,
    /// The operator's namespace (where its webhook Service and certificate are), used only when
    /// the webhook is not registered yet.
    #[arg(long, default_value = "meshop-system")]
    pub operator_namespace: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// One field that differs, by its path (`spec.template.spec.containers[discovery].image`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Changed {
    pub key: String,
    pub fields: Vec<FieldChange>,
}

/// What applying would do.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// The MeshInstall (or the two sides, offline).
    pub subject: String,
    pub created: Vec<String>,
    pub changed: Vec<Changed>,
    /// Deleted by the reconciler once everything planned is ready.
    pub pruned: Vec<String>,
    pub unchanged: usize,
    /// Things the reader must know (the webhook endpoint assumed, a refused move).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.changed.is_empty() && self.pruned.is_empty()
    }
}

/// Fields that say nothing about what an object is: bookkeeping of the API server.
const METADATA_NOISE: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "generation",
    "uid",
    "creationTimestamp",
    "selfLink",
];

/// The object without its status and the API server's bookkeeping.
pub fn normalize(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in METADATA_NOISE {
                meta.remove(*key);
            }
        }
    }
    object
}

/// The fields that differ between two objects. Objects are compared key by key; lists whose
/// items all have a `name` are matched by name (containers, ports, env), other lists by position
/// when their lengths agree, else as a whole.
pub fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn named(items: &[Value]) -> Option<BTreeMap<&str, &Value>> {
    let map: BTreeMap<&str, &Value> = items
        .iter()
        .map(|v| Some((v.get("name")?.as_str()?, v)))
        .collect::<Option<_>>()?;
    (map.len() == items.len()).then_some(map)
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<FieldChange>) {
    if before == after {
        return;
    }
    let change = |before: Option<&Value>, after: Option<&Value>| FieldChange {
        path: path.to_string(),
        before: before.cloned(),
        after: after.cloned(),
    };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let p = join(path, key);
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(&p, x, y, out),
                    (x, y) => out.push(FieldChange {
                        path: p,
                        before: x.cloned(),
                        after: y.cloned(),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(na), Some(nb)) = (named(a), named(b)) {
                let names: std::collections::BTreeSet<&str> =
                    na.keys().chain(nb.keys()).copied().collect();
                for name in names {
                    let p = format!("{path}[{name}]");
                    match (na.get(name), nb.get(name)) {
                        (Some(x), Some(y)) => walk(&p, x, y, out),
                        (x, y) => out.push(FieldChange {
                            path: p,
                            before: x.map(|v| (*v).clone()),
                            after: y.map(|v| (*v).clone()),
                        }),
                    }
                }
            } else if a.len() == b.len() {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{i}]"), x, y, out);
                }
            } else {
                out.push(change(Some(before), Some(after)));
            }
        }
        _ => out.push(change(Some(before), Some(after))),
    }
}

/// Compares two renderings offline: objects only in `after` are created, only in `before`
/// pruned, in both compared field by field.
pub fn compare(subject: String, before: &[Rendered], after: &[Rendered]) -> Report {
    let index = |objects: &[Rendered]| -> BTreeMap<String, Value> {
        objects
            .iter()
            .map(|o| {
                (
                    o.key(),
                    serde_json::to_value(&o.object).unwrap_or(Value::Null),
                )
            })
            .collect()
    };
    let (a, b) = (index(before), index(after));
    let mut report = Report {
        subject,
        ..Default::default()
    };
    // Apply order for created and changed, as the reconciler goes.
    for o in after {
        let key = o.key();
        match a.get(&key) {
            None => report.created.push(key),
            Some(old) => {
                let fields = field_changes(&normalize(old), &normalize(&b[&key]));
                if fields.is_empty() {
                    report.unchanged += 1;
                } else {
                    report.changed.push(Changed { key, fields });
                }
            }
        }
    }
    report.pruned = before
        .iter()
        .map(Rendered::key)
        .filter(|k| !b.contains_key(k))
        .collect();
    report
}

fn short(value: &Option<Value>) -> String {
    const MAX: usize = 100;
    let Some(value) = value else {
        return "(none)".into();
    };
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// The lines of a multi-line string value.
fn text_lines(value: &Option<Value>) -> Option<Vec<&str>> {
    let text = value.as_ref()?.as_str()?;
    text.contains('\n').then(|| text.lines().collect())
}

/// The text report.
pub fn text(report: &Report) -> String {
    let mut out = format!(
        "{}: {} created, {} changed, {} pruned, {} unchanged\n",
        report.subject,
        report.created.len(),
        report.changed.len(),
        report.pruned.len(),
        report.unchanged
    );
    for note in &report.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    if !report.created.is_empty() {
        out.push_str("\ncreated:\n");
        for key in &report.created {
            out.push_str(&format!("  + {key}\n"));
        }
    }
    if !report.changed.is_empty() {
        out.push_str("\nchanged:\n");
        for c in &report.changed {
            out.push_str(&format!("  ~ {}\n", c.key));
            for f in &c.fields {
                match (text_lines(&f.before), text_lines(&f.after)) {
                    // Embedded documents (mesh config, scripts): the lines that differ.
                    (Some(a), Some(b)) => {
                        out.push_str(&format!("      {}:\n", f.path));
                        for line in a.iter().filter(|l| !b.contains(l)) {
                            out.push_str(&format!("        - {line}\n"));
                        }
                        for line in b.iter().filter(|l| !a.contains(l)) {
                            out.push_str(&format!("        + {line}\n"));
                        }
                    }
                    _ => out.push_str(&format!(
                        "      {}: {} -> {}\n",
                        f.path,
                        short(&f.before),
                        short(&f.after)
                    )),
                }
            }
        }
    }
    if !report.pruned.is_empty() {
        out.push_str("\npruned (once everything planned is ready):\n");
        for key in &report.pruned {
            out.push_str(&format!("  - {key}\n"));
        }
    }
    out
}

fn finish(report: Report, args: &DiffArgs) -> Result<Outcome> {
    let success = !args.exit_code || report.is_empty();
    let stdout = match args.output.encode(&report)? {
        Some(encoded) => encoded,
        None => text(&report),
    };
    Ok(Outcome { stdout, success })
}

pub async fn run(args: DiffArgs) -> Result<Outcome> {
    let offline = args.from.is_some()
        || args.from_profile.is_some()
        || args.to.is_some()
        || args.to_profile.is_some()
        || args.to_version.is_some();
    if offline {
        let report = offline_report(&args)?;
        return finish(report, &args);
    }
    let Some(file) = &args.file else {
        bail!(
            "give -f FILE to compare with the cluster, or --from/--to (--to-profile, --to-version) to compare offline"
        );
    };
    let mi = super::read_mesh(file)?;
    let client = args.cluster.client().await?;
    let report = cluster_report(&client, mi, &args.operator_namespace).await?;
    finish(report, &args)
}

/// The two sides of an offline diff.
fn offline_report(args: &DiffArgs) -> Result<Report> {
    let (from_label, from_install) = match (&args.from, args.from_profile, &args.file) {
        (Some(path), _, _) | (None, None, Some(path)) => (
            path.display().to_string(),
            super::installation(Some(path), None, None)?,
        ),
        (None, Some(profile), _) => (
            format!("profile {}", profile.name()),
            super::installation(None, Some(profile), None)?,
        ),
        (None, None, None) => {
            bail!("give the MeshInstall before: --from FILE, --from-profile or -f")
        }
    };
    let (to_label, to_install) = match (&args.to, args.to_profile, &args.to_version) {
        (Some(path), _, version) => (
            path.display().to_string(),
            super::installation(Some(path), None, version.as_deref())?,
        ),
        (None, profile, version) if profile.is_some() || version.is_some() => {
            let mut spec = match (&args.from, &args.file) {
                (Some(path), _) | (None, Some(path)) => super::read_mesh(path)?.spec,
                _ => crate::api::MeshInstallSpec {
                    profile: args.from_profile.unwrap_or(Profile::Demo),
                    ..Default::default()
                },
            };
            let mut label = Vec::new();
            if let Some(p) = profile {
                spec.profile = p;
                label.push(format!("profile {}", p.name()));
            }
            if let Some(v) = version {
                spec.version = Some(v.clone());
                label.push(format!("version {v}"));
            }
            (
                label.join(", "),
                Installation::resolve(from_install.owner.clone(), &spec)?,
            )
        }
        _ => bail!("give the MeshInstall after: --to FILE, --to-profile or --to-version"),
    };
    let before = crate::render::render(&from_install)?;
    let after = crate::render::render(&to_install)?;
    let mut report = compare(format!("{from_label} -> {to_label}"), &before, &after);
    report.notes.push(
        "offline: the webhook registration (known only to a running operator) is left out".into(),
    );
    Ok(report)
}

/// The endpoint the running operator registered for this MeshInstall (clientConfig and CA), so
/// the planned registration is the one the reconciler would apply; else the in-cluster Service
/// and the CA in the operator's Secret, with a note.
async fn webhook_endpoint(
    client: &Client,
    install: &Installation,
    operator_namespace: &str,
    notes: &mut Vec<String>,
) -> Result<Option<WebhookEndpoint>> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ServiceReference, WebhookClientConfig,
    };
    if !install.injection.enabled {
        return Ok(None);
    }
    let name = crate::render::webhook_configuration_name(install);
    let live = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(&name)
        .await?;
    let endpoint = |mut client_config: WebhookClientConfig, ca: String| {
        client_config.ca_bundle = None;
        WebhookEndpoint {
            injector: InjectorEndpoint {
                client_config,
                ca_bundle: ca,
                operator_namespace: operator_namespace.to_string(),
            },
            // Only status uses it; diff reads no status.
            certificate_expiry: std::time::SystemTime::UNIX_EPOCH,
        }
    };
    if let Some(hook) = live.and_then(|c| c.webhooks.and_then(|w| w.into_iter().next())) {
        let ca = hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        return Ok(Some(endpoint(hook.client_config, ca)));
    }
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), operator_namespace)
            .get_opt(crate::webhook::SECRET_NAME)
            .await?;
    let Some(ca) = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(crate::webhook::CA_CRT).cloned())
    else {
        notes.push(format!(
            "the webhook registration {name} is left out: no operator has registered it or created its certificate in {operator_namespace}"
        ));
        return Ok(None);
    };
    notes.push(format!(
        "the webhook registration {name} is not registered yet: assumed at Service {}/{} as an in-cluster operator registers it",
        operator_namespace,
        crate::deploy::WEBHOOK_SERVICE
    ));
    let client_config = WebhookClientConfig {
        service: Some(ServiceReference {
            namespace: operator_namespace.to_string(),
            name: crate::deploy::WEBHOOK_SERVICE.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(Some(endpoint(
        client_config,
        String::from_utf8_lossy(&ca.0).into_owned(),
    )))
}

/// A revision-based install's older revisions, decided as the reconciler's pass decides them
/// ([`upgrade_step::observe`]): the proxies on each revision are counted from the pods that
/// really run them, by the rule and selector of the reconciler's pod watch, so a revision it
/// would retire now is shown pruned and one in use is kept. `None` for an in-place install.
async fn older_revisions(
    client: &Client,
    mi: &MeshInstall,
    install: &Installation,
    notes: &mut Vec<String>,
) -> Result<Option<upgrade_step::Observation>> {
    if install.update_strategy != UpdateStrategy::RevisionBased {
        return Ok(None);
    }
    let listed = mi.status.iter().flat_map(|s| &s.revisions);
    let pods = if listed.into_iter().any(|r| r.name != install.revision) {
        cluster::progress("listing pods to count the proxies on each revision");
        proxies::list_verified(client, &upgrade_step::revision_proxies(mi, install))
            .await
            .context("list pods (which revisions pods use decides which the reconciler keeps)")?
    } else {
        Vec::new()
    };
    let using = |name: &str| pods.iter().filter(|p| p.revision == name).count();
    let older = upgrade_step::observe(mi, install, pods.clone(), Timestamp::now());
    for name in &older.retired {
        notes.push(format!(
            "revision {name} has had no pod for its grace period: the reconciler retires it (its objects are pruned)"
        ));
    }
    for r in older.live.iter().skip(1) {
        let why = match older.grace.get(&r.name) {
            Some((since, until)) => format!(
                "no pod has used it since {since}; it is retired at {until} unless one does"
            ),
            None if r.name == older.previous_active => "the tags still point at it".to_string(),
            None => format!("{} pod(s) run its proxy", using(&r.name)),
        };
        notes.push(format!(
            "revision {} (Istio {}) stays beside the target {}: {why}",
            r.name, r.version, install.revision
        ));
    }
    Ok(Some(older))
}

/// The cluster diff of `mi` (see the module documentation).
pub async fn cluster_report(
    client: &Client,
    mut mi: MeshInstall,
    operator_namespace: &str,
) -> Result<Report> {
    let name = mi
        .metadata
        .name
        .clone()
        .context("the MeshInstall has no metadata.name")?;
    let live = Api::<MeshInstall>::all(client.clone())
        .get_opt(&name)
        .await
        .context("read the MeshInstall (is meshop's CRD installed? `meshop check`)")?;
    // The owner references, and what prune keeps, hang on the live object's uid; the oldest
    // claim on a revision wins by creation time; and the reconciler reads status.revisions back
    // (which older revisions still run, and at which release).
    mi.metadata.uid = live.as_ref().and_then(|l| l.metadata.uid.clone());
    mi.metadata.creation_timestamp = Some(
        live.as_ref()
            .and_then(|l| l.metadata.creation_timestamp.clone())
            .unwrap_or(Time(Timestamp::now())),
    );
    mi.status = live.as_ref().and_then(|l| l.status.clone());
    let install = Installation::from_mesh(&mi)
        .map_err(|e| anyhow::anyhow!("the reconciler would refuse this spec (Stalled): {e}"))?;
    let others = Api::<MeshInstall>::all(client.clone())
        .list(&Default::default())
        .await
        .context("list MeshInstalls (one MeshInstall owns a namespace and revision)")?;
    if let Some(owner) = plan::conflicting_owner(&mi, &install, &others.items) {
        bail!(
            "the reconciler would refuse this spec (Stalled, RevisionConflict): revision {:?} in namespace {} is already installed by MeshInstall {owner}",
            install.revision_label(),
            install.namespace
        );
    }
    if let Some(message) = plan::strategy_switch(mi.status.as_ref(), install.update_strategy) {
        bail!("the reconciler would refuse this spec (Stalled, StrategyChange): {message}");
    }
    let installed = mi.status.as_ref().and_then(|s| s.version.clone());
    if let VersionMove::Refused(e) = plan::version_move(installed.as_deref(), &install) {
        bail!("the reconciler would refuse this version change (Stalled, VersionSkew): {e}");
    }
    let mut report = Report {
        subject: format!("MeshInstall {name}"),
        ..Default::default()
    };
    if live.is_none() {
        report
            .notes
            .push("MeshInstall not in the cluster yet: applying it creates it".into());
    }
    let older = older_revisions(client, &mi, &install, &mut report.notes).await?;
    let webhook = webhook_endpoint(client, &install, operator_namespace, &mut report.notes).await?;
    // The reconciler's own planning: the same function, fed what it would observe.
    let plan = Plan::for_pass(
        install,
        older.as_ref().map_or(&[][..], |o| &o.older[..]),
        webhook,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "the reconciler would refuse this spec (Stalled, {}): {e}",
            crate::controller::INVALID_OVERLAY
        )
    })?;
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    for (i, object) in plan.objects.iter().enumerate() {
        cluster::progress(&format!(
            "dry-run apply {}/{}: {}",
            i + 1,
            plan.objects.len(),
            object.key()
        ));
        let api = object.api(client);
        let current = api.get_opt(object.name()).await?;
        // What the reconciler leaves be (another installer's Gateway API CRDs, a newer release)
        // is unchanged by this apply.
        if let Some(existing) = &current
            && object.ownership == crate::render::Ownership::KeepExisting
            && crate::controller::keeps_existing(existing, object)
        {
            report.unchanged += 1;
            continue;
        }
        let applied = api
            .patch(object.name(), &params, &Patch::Apply(&object.object))
            .await;
        match (current, applied) {
            (None, Ok(_)) => report.created.push(object.key()),
            // Its namespace is created by an earlier object of the same apply; a dry run
            // cannot see that.
            (None, Err(kube::Error::Api(e))) if e.code == 404 => report.created.push(object.key()),
            (_, Err(e)) => bail!("the API server refuses {}: {e}", object.key()),
            (Some(current), Ok(after)) => {
                let fields = field_changes(&json(&current)?, &json(&after)?);
                if fields.is_empty() {
                    report.unchanged += 1;
                } else {
                    report.changed.push(Changed {
                        key: object.key(),
                        fields,
                    });
                }
            }
        }
    }
    let unresolved = older.as_ref().and_then(|o| o.unresolved.clone());
    if let Some(revision) = &unresolved {
        report.notes.push(format!(
            "revision {revision} (in status.revisions) no longer resolves to a release meshop knows: the reconciler prunes nothing while it runs"
        ));
    }
    if let Some(uid) = mi.metadata.uid.as_ref().filter(|_| unresolved.is_none()) {
        cluster::progress("listing objects to prune");
        let found = prune::list_labelled(client, &name).await?;
        report.pruned = prune::prune_set(&found, uid, &plan.keys())
            .into_iter()
            .map(|f| f.key())
            .collect();
    }
    Ok(report)
}

fn json(object: &DynamicObject) -> Result<Value> {
    Ok(normalize(&serde_json::to_value(object)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changed_fields_are_listed_and_bookkeeping_is_ignored() {
        let live = json!({
            "metadata": { "name": "istiod", "resourceVersion": "1", "generation": 1,
                "managedFields": [{"manager": "meshop"}], "labels": { "a": "1" } },
            "spec": { "replicas": 1, "template": { "spec": { "containers": [
                { "name": "discovery", "image": "pilot:1.30.5", "env": [{"name": "X", "value": "1"}] },
                { "name": "other", "image": "o" } ] } } },
            "status": { "readyReplicas": 1 }
        });
        let dry = json!({
            "metadata": { "name": "istiod", "resourceVersion": "2", "generation": 2,
                "managedFields": [], "labels": { "a": "1", "b": "2" } },
            "spec": { "replicas": 1, "template": { "spec": { "containers": [
                { "name": "other", "image": "o" },
                { "name": "discovery", "image": "pilot:1.31.1", "env": [{"name": "X", "value": "1"}] } ] } } },
            "status": { "readyReplicas": 0 }
        });
        let changes = field_changes(&normalize(&live), &normalize(&dry));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "metadata.labels.b",
                "spec.template.spec.containers[discovery].image"
            ]
        );
        assert_eq!(changes[0].before, None);
        assert_eq!(changes[1].after, Some(json!("pilot:1.31.1")));
        assert!(field_changes(&normalize(&live), &normalize(&live)).is_empty());
        // Unnamed lists of another length change as a whole.
        let c = field_changes(&json!({"args": ["a"]}), &json!({"args": ["a", "b"]}));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "args");
    }

    fn rendered(yaml: &str) -> Vec<Rendered> {
        crate::render::render(&plan::test_install(yaml)).unwrap()
    }

    #[test]
    fn a_profile_switch_offline_creates_changes_and_prunes() {
        let demo = rendered("profile: demo");
        let minimal = rendered("profile: minimal");
        let report = compare("demo -> minimal".into(), &demo, &minimal);
        assert!(report.created.is_empty(), "{:?}", report.created);
        assert!(
            report
                .pruned
                .contains(&"Deployment/istio-system/istio-egressgateway".to_string())
        );
        assert!(
            report
                .pruned
                .contains(&"Deployment/istio-system/prometheus".to_string()),
            "{:?}",
            report.pruned
        );
        // Every object is accounted for exactly once.
        assert_eq!(
            report.changed.len() + report.unchanged + report.created.len(),
            minimal.len()
        );
        assert_eq!(
            report.changed.len() + report.unchanged + report.pruned.len(),
            demo.len()
        );
        let back = compare("minimal -> demo".into(), &minimal, &demo);
        assert_eq!(back.created, {
            let mut p = report.pruned.clone();
            let order: Vec<String> = demo.iter().map(Rendered::key).collect();
            p.sort_by_key(|k| order.iter().position(|o| o == k));
            p
        });
        let out = text(&report);
        assert!(out.starts_with("demo -> minimal: 0 created, "), "{out}");
        // The mesh config is a YAML document in a ConfigMap: its changed lines are shown.
        assert!(
            out.contains("      data.mesh:\n        - accessLogFile: /dev/stdout\n"),
            "{out}"
        );
        assert!(out.contains("\n  - Deployment/istio-system/istio-egressgateway\n"));
    }

    #[test]
    fn a_version_change_offline_names_the_image_fields() {
        let report = compare(
            "v".into(),
            &rendered("profile: minimal\nversion: 1.30.5"),
            &rendered("profile: minimal\nversion: 1.31.1"),
        );
        let istiod = report
            .changed
            .iter()
            .find(|c| c.key == "Deployment/istio-system/istiod")
            .expect("istiod changes");
        assert!(
            istiod.fields.iter().any(|f| f.path
                == "spec.template.spec.containers[discovery].image"
                && f.after == Some(json!("docker.io/istio/pilot:1.31.1"))),
            "{:?}",
            istiod.fields
        );
        assert!(report.created.is_empty() && report.pruned.is_empty());
    }
}
