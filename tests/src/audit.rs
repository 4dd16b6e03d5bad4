//! The API server's audit log, as a judge of what a client really did: which user made which
//! request (verb, API group, resource, subresource, namespace, name) and what the API server
//! answered. `Options { audit: true, .. }` turns it on; the policy records every request at
//! `Metadata` level when its response is complete, and a watch also when it starts (no bodies:
//! Secrets never reach the log).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Deserialize;

/// The policy: one event per request at `ResponseComplete`, with metadata only; a long-running
/// request (a watch) also gets one at `ResponseStarted`, so a watch still open when the log is
/// read is in it.
const POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n";

/// Where the control plane in `dir` writes its audit log.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("audit.log")
}

/// kube-apiserver's flags for an audit log in `dir` (writes the policy file there). Blocking mode
/// writes each event before the response is sent, so a test that has seen a response can read it.
pub(crate) fn apiserver_args(dir: &Path) -> Result<Vec<String>> {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(&policy, POLICY).with_context(|| format!("writing {}", policy.display()))?;
    let log = log_path(dir);
    let _ = std::fs::remove_file(&log);
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
        "--audit-log-maxsize=0".into(),
    ])
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    verb: String,
    #[serde(default)]
    request_u_r_i: String,
    user: RawUser,
    #[serde(default)]
    object_ref: Option<RawRef>,
    #[serde(default)]
    response_status: Option<RawStatus>,
    #[serde(default)]
    stage_timestamp: String,
    #[serde(default)]
    request_received_timestamp: String,
    #[serde(default)]
    impersonated_user: Option<RawUser>,
    #[serde(default)]
    user_agent: String,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRef {
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct RawStatus {
    #[serde(default)]
    code: u16,
}

/// One request, as the API server recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Who the request acted as: the impersonated user when there is one, else the
    /// authenticated user (authorization judged this one).
    pub user: String,
    /// Who authenticated (the impersonator, for an impersonated request).
    pub authenticated: String,
    pub user_agent: String,
    pub verb: String,
    pub uri: String,
    pub access: Access,
    /// The HTTP status of the answer (0 when the log has none).
    pub code: u16,
    /// When the response was complete: RFC 3339 with microseconds, as the API server wrote it
    /// (so two timestamps compare as strings).
    pub timestamp: String,
    /// When the API server received the request (same format).
    pub received: String,
}

/// The verbs that change something.
pub const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

impl Event {
    /// True for a request that changes something (whatever the answer).
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }
}

/// What a request used: the terms an RBAC rule is written in. `namespace` and `name` are empty
/// for cluster-wide requests and for collections.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Access {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)?;
        if !self.namespace.is_empty() {
            write!(f, " in {}", self.namespace)?;
        }
        if !self.name.is_empty() {
            write!(f, " named {}", self.name)?;
        }
        Ok(())
    }
}

/// Every event in the audit log at `path`, in the order written. Non-resource requests
/// (`/healthz`, `/version`, discovery) are kept with an empty resource.
pub fn read(path: &Path) -> Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

/// The events in an audit log's text (JSON lines).
pub fn parse(text: &str) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawEvent = serde_json::from_str(line)
            .with_context(|| format!("audit log line {} is not an event", i + 1))?;
        let r = raw.object_ref.unwrap_or_default();
        let resource = if r.subresource.is_empty() {
            r.resource
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        let authenticated = raw.user.username;
        let user = raw
            .impersonated_user
            .map(|u| u.username)
            .unwrap_or_else(|| authenticated.clone());
        out.push(Event {
            user,
            authenticated,
            user_agent: raw.user_agent,
            verb: raw.verb.clone(),
            uri: raw.request_u_r_i,
            access: Access {
                verb: raw.verb,
                group: r.api_group,
                resource,
                namespace: r.namespace,
                name: r.name,
            },
            code: raw.response_status.map(|s| s.code).unwrap_or(0),
            timestamp: raw.stage_timestamp,
            received: raw.request_received_timestamp,
        });
    }
    Ok(out)
}

/// Reads an audit log as it grows: each call returns the events written since the last one
/// (a line still being written is left for the next call).
pub struct Tail {
    path: PathBuf,
    offset: u64,
}

impl Tail {
    /// From the start of the log at `path` (which may not exist yet).
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    /// The complete events appended since the last call.
    pub fn next_events(&mut self) -> Result<Vec<Event>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("opening {}", self.path.display())),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let complete = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        self.offset += complete as u64;
        parse(&text[..complete])
    }
}

/// The user name of a ServiceAccount, as the API server authenticates its token.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Every distinct access `user` made with a resource (non-resource URLs left out).
pub fn accesses_of(events: &[Event], user: &str) -> BTreeSet<Access> {
    events
        .iter()
        .filter(|e| e.user == user && !e.access.resource.is_empty())
        .map(|e| e.access.clone())
        .collect()
}

/// (verb, API group, resource) as an RBAC rule names it; a subresource is `resource/sub`.
pub type Grant = (String, String, String);

/// Every (verb, group, resource) that `rules` grant. A rule limited to named objects
/// (`resourceNames`) counts as granting its verbs on the resource.
pub fn grants(rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in rules {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert((v.clone(), g.clone(), res.clone()));
                }
            }
        }
    }
    out
}

/// The grants `user`'s requests used: the (verb, group, resource) of every request the API
/// server did not refuse (403). A server-side apply that created its object (a `patch` answered
/// 201) is authorized as a `create` too, so it uses both.
pub fn used_grants(events: &[Event], user: &str) -> BTreeSet<Grant> {
    let mut used = BTreeSet::new();
    for e in events
        .iter()
        .filter(|e| e.user == user && !e.access.resource.is_empty() && e.code != 403)
    {
        let grant = |verb: &str| {
            (
                verb.to_string(),
                e.access.group.clone(),
                e.access.resource.clone(),
            )
        };
        used.insert(grant(&e.verb));
        if e.verb == "patch" && e.code == 201 {
            used.insert(grant("create"));
        }
    }
    used
}

/// How a subject's grants compare with what it used.
#[derive(Debug)]
pub struct Privilege {
    /// How many of the grants were used.
    pub used: usize,
    /// How many (verb, group, resource) are granted.
    pub granted: usize,
    /// Granted, never used and not allowed to be, as `verb group/resource`.
    pub unused: Vec<String>,
    /// Allowed to be unused but used, or no longer granted: the allowance is stale.
    pub stale: Vec<String>,
}

/// Compares `granted` with `used`. `allowed_unused` lists (verb, group, resource, reason) that
/// may go unused.
pub fn privilege(
    granted: &BTreeSet<Grant>,
    used: &BTreeSet<Grant>,
    allowed_unused: &[(&str, &str, &str, &str)],
) -> Privilege {
    let show = |(v, g, r): &Grant| format!("{v} {}/{r}", if g.is_empty() { "core" } else { g });
    let allowed = |(v, g, r): &Grant| {
        allowed_unused
            .iter()
            .any(|(av, ag, ar, _)| v == av && g == ag && r == ar)
    };
    Privilege {
        used: granted.intersection(used).count(),
        granted: granted.len(),
        unused: granted
            .iter()
            .filter(|g| !used.contains(*g) && !allowed(g))
            .map(show)
            .collect(),
        stale: allowed_unused
            .iter()
            .map(|(v, g, r, _)| (v.to_string(), g.to_string(), r.to_string()))
            .filter(|grant| used.contains(grant) || !granted.contains(grant))
            .map(|grant| show(&grant))
            .collect(),
    }
}

/// The rules of every Role and ClusterRole bound (by a RoleBinding or ClusterRoleBinding that
/// names it as a subject) to ServiceAccount `namespace/name`: what the API server authorizes it
/// by, beyond what every ServiceAccount gets through its groups.
pub async fn rules_bound_to(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<PolicyRule>> {
    let names_it = |subjects: &Option<Vec<Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == name
                && s.namespace.as_deref() == Some(namespace)
        })
    };
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let mut rules = Vec::new();
    for b in Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| names_it(&b.subjects))
    {
        let role = cluster_roles.get(&b.role_ref.name).await?;
        rules.extend(role.rules.unwrap_or_default());
    }
    for b in Api::<RoleBinding>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| names_it(&b.subjects))
    {
        let role_rules = if b.role_ref.kind == "ClusterRole" {
            cluster_roles.get(&b.role_ref.name).await?.rules
        } else {
            let ns = b
                .metadata
                .namespace
                .as_deref()
                .context("RoleBinding without a namespace")?;
            Api::<Role>::namespaced(client.clone(), ns)
                .get(&b.role_ref.name)
                .await?
                .rules
        };
        rules.extend(role_rules.unwrap_or_default());
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_access_in_rbac_terms() {
        let log = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/istio-system/secrets/x","verb":"get","user":{"username":"system:serviceaccount:meshop-system:meshop"},"objectRef":{"resource":"secrets","namespace":"istio-system","name":"x","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":404},"stageTimestamp":"2026-12-07T07:00:00.000001Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b","stage":"ResponseComplete","requestURI":"/apis/apps/v1/deployments/d/status","verb":"patch","user":{"username":"admin"},"impersonatedUser":{"username":"replica-a","groups":["system:masters"]},"userAgent":"meshop/0.1","requestReceivedTimestamp":"2026-12-07T07:00:00.900001Z","objectRef":{"resource":"deployments","subresource":"status","namespace":"n","name":"d","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"stageTimestamp":"2026-12-07T07:00:01.000001Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"c","stage":"ResponseComplete","requestURI":"/healthz","verb":"get","user":{"username":"system:serviceaccount:meshop-system:meshop"},"responseStatus":{"metadata":{},"code":200},"stageTimestamp":"2026-12-07T07:00:02.000001Z"}
"#;
        let events = parse(log).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].code, 404);
        assert!(!events[0].is_write());
        assert!(events[1].is_write());
        assert_eq!(
            events[1].user, "replica-a",
            "the impersonated user is who acted"
        );
        assert_eq!(events[1].authenticated, "admin");
        assert_eq!(events[1].user_agent, "meshop/0.1");
        assert_eq!(events[1].received, "2026-12-07T07:00:00.900001Z");
        assert_eq!(
            events[1].access.to_string(),
            "patch apps/deployments/status in n named d"
        );
        let user = service_account_user("meshop-system", "meshop");
        let used = accesses_of(&events, &user);
        assert_eq!(used.len(), 1, "the non-resource request is left out");
        assert_eq!(accesses_of(&events, "replica-a").len(), 1);
        assert_eq!(
            used.iter().next().unwrap().to_string(),
            "get core/secrets in istio-system named x"
        );
    }
}

#[cfg(test)]
mod privilege_tests {
    use super::*;

    fn grant(v: &str, g: &str, r: &str) -> Grant {
        (v.into(), g.into(), r.into())
    }

    #[test]
    fn refused_requests_use_nothing_and_a_creating_apply_is_a_create() {
        let line = |verb: &str, code: u16| {
            format!(
                r#"{{"verb":"{verb}","user":{{"username":"u"}},"objectRef":{{"resource":"leases","namespace":"n","name":"l","apiGroup":"coordination.k8s.io"}},"responseStatus":{{"code":{code}}}}}"#
            )
        };
        let log = [line("get", 404), line("update", 403), line("patch", 201)].join("\n");
        let used = used_grants(&parse(&log).unwrap(), "u");
        let lease = |v: &str| grant(v, "coordination.k8s.io", "leases");
        assert_eq!(
            used,
            BTreeSet::from([lease("get"), lease("patch"), lease("create")])
        );
    }

    #[test]
    fn unused_grants_and_stale_allowances_are_reported() {
        let rules: Vec<PolicyRule> = serde_json::from_value(serde_json::json!([
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"], "resourceNames": ["p"]},
        ]))
        .unwrap();
        let granted = grants(&rules);
        assert_eq!(granted.len(), 5);
        let used = BTreeSet::from([
            grant("get", "", "secrets"),
            grant("get", "", "configmaps"),
            grant("list", "", "pods"),
            grant("delete", "", "pods"),
        ]);
        let p = privilege(
            &granted,
            &used,
            &[
                ("update", "", "secrets", "allowed"),
                ("get", "", "secrets", "used after all"),
                ("watch", "", "pods", "not granted"),
            ],
        );
        assert_eq!((p.used, p.granted), (3, 5));
        assert_eq!(p.unused, ["update core/configmaps"]);
        assert_eq!(p.stale, ["get core/secrets", "watch core/pods"]);
    }
}

#[cfg(test)]
mod tail_tests {
    use super::*;

    #[test]
    fn tail_returns_only_complete_new_lines() {
        let dir = std::env::temp_dir().join(format!("audit-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let mut tail = Tail::new(&path);
        assert!(tail.next_events().unwrap().is_empty(), "no log yet");
        let line = |verb: &str| {
            format!(
                r#"{{"verb":"{verb}","user":{{"username":"u"}},"objectRef":{{"resource":"leases","namespace":"default","name":"l","apiGroup":"coordination.k8s.io"}}}}"#
            )
        };
        std::fs::write(&path, format!("{}\n{}", line("get"), &line("update")[..20])).unwrap();
        let first = tail.next_events().unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].verb, "get");
        std::fs::write(&path, format!("{}\n{}\n", line("get"), line("update"))).unwrap();
        let second = tail.next_events().unwrap();
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(second[0].verb, "update");
        assert!(tail.next_events().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
