//! `meshop render --profile ambient` against `istioctl manifest generate --set profile=ambient`
//! (the real istioctl of the 1.31 build, with `--set tag=`[`VERSION`]), compared field by field.
//!
//! What is compared:
//! - objects: every object of either output, by kind and name, and its namespace (CRDs
//!   included);
//! - the ztunnel DaemonSet, the CNI DaemonSet and istiod's Deployment: each container's (by
//!   name) command, args, env (by name: value or `valueFrom`), security context (capabilities
//!   and the rest), volume mounts (by name), ports, resources and probes, and the pod's volumes
//!   (by name), service account, security context, host network, DNS policy, node selector,
//!   tolerations, priority class and grace period, and the update strategy;
//! - the CNI agent's ConfigMap (`istio-cni-config`), key by key (`AMBIENT_ENABLEMENT_SELECTOR`
//!   parsed);
//! - RBAC: what each ServiceAccount may do, from every Role and ClusterRole bound to it, as
//!   `RBAC/<account>/<cluster|namespace>/<group>/<resource>[/<name>]` with its verbs.
//!
//! Values are normalised as the API server and the kubelet read them (the injection conformance
//! rules of `meshop_testenv::conformance`: probe and pull-policy defaults, quantities), plus an
//! env `fieldRef`'s `apiVersion` (defaulted to v1 by the API server) and a `resourceFieldRef`'s
//! `divisor` (read as 1 when absent). Order within lists is not compared (the CNI agent's env
//! order aside, no reader depends on it).
//!
//! Every difference is a row of the generated section of docs/istio-compatibility.md with its
//! reason; the test fails on a row without a reason (`pending: write the reason`, which
//! `MESHOP_BLESS=1` gives a new row) and on a documented row that no longer occurs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use meshop_testenv::blessed::{PENDING, reasons};
use meshop_testenv::conformance::{Difference, VERSION, differences, docs, show};
use meshop_testenv::istio::IstioBinaries;
use serde_json::{Value, json};

const BEGIN: &str = "<!-- BEGIN GENERATED: ambient render (MESHOP_BLESS=1 cargo test -p meshop-testenv --test ambient_render) -->\n";
const END: &str = "<!-- END GENERATED -->";

/// The workloads compared field by field: kind, name (the same in both tools).
const WORKLOADS: &[(&str, &str)] = &[
    ("DaemonSet", "ztunnel"),
    ("DaemonSet", "istio-cni-node"),
    ("Deployment", "istiod"),
];

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/istio-compatibility.md")
}

fn istioctl(bin: &IstioBinaries) -> Vec<Value> {
    let out = Command::new(&bin.istioctl)
        .args(["manifest", "generate", "--set", "profile=ambient", "--set"])
        .arg(format!("tag={VERSION}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "istioctl manifest generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docs(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn meshop() -> Vec<Value> {
    let text = meshop::cli::render(None, Some(meshop::api::Profile::Ambient), None, None).unwrap();
    docs(&text).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Which objects there are: `<Kind>/<name>` -> its namespace (`-` for cluster-scoped).
fn objects(all: &[Value]) -> BTreeMap<String, Value> {
    all.iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                ),
                o["metadata"]["namespace"].clone(),
            )
        })
        .map(|(k, ns)| (k, if ns.is_null() { json!("-") } else { ns }))
        .collect()
}

/// What the API server or the kubelet make of an env var anyway: a fieldRef's apiVersion is
/// v1, a resourceFieldRef without a divisor is read with divisor 1.
fn env_defaults(env: &mut Value) {
    for e in env.as_array_mut().into_iter().flatten() {
        if let Some(f) = e
            .pointer_mut("/valueFrom/fieldRef")
            .and_then(Value::as_object_mut)
        {
            f.entry("apiVersion").or_insert(json!("v1"));
        }
        if let Some(r) = e
            .pointer_mut("/valueFrom/resourceFieldRef")
            .and_then(Value::as_object_mut)
        {
            r.entry("divisor").or_insert(json!("1"));
        }
    }
}

/// The compared part of a workload (see the module's documentation).
fn workload_fields(o: &Value) -> Value {
    let pod = &o["spec"]["template"]["spec"];
    let mut out = serde_json::Map::new();
    for f in [
        "volumes",
        "serviceAccountName",
        "securityContext",
        "hostNetwork",
        "dnsPolicy",
        "nodeSelector",
        "tolerations",
        "priorityClassName",
        "terminationGracePeriodSeconds",
    ] {
        if let Some(v) = pod.get(f) {
            out.insert(f.into(), v.clone());
        }
    }
    let mut containers = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in pod[list].as_array().into_iter().flatten() {
            let mut kept = serde_json::Map::new();
            for f in [
                "name",
                "command",
                "args",
                "env",
                "securityContext",
                "volumeMounts",
                "ports",
                "resources",
                "readinessProbe",
                "livenessProbe",
                "startupProbe",
            ] {
                if let Some(v) = c.get(f) {
                    kept.insert(f.into(), v.clone());
                }
            }
            if let Some(env) = kept.get_mut("env") {
                env_defaults(env);
            }
            containers.push(Value::Object(kept));
        }
    }
    out.insert("containers".into(), Value::Array(containers));
    for f in ["updateStrategy", "strategy"] {
        if let Some(v) = o["spec"].get(f) {
            out.insert(f.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// The CNI agent's ConfigMap, key by key, the enablement selector parsed.
fn cni_config(o: Option<&Value>) -> Value {
    let mut data = o.map(|o| o["data"].clone()).unwrap_or(json!({}));
    if let Some(sel) = data.get_mut("AMBIENT_ENABLEMENT_SELECTOR")
        && let Some(parsed) = sel
            .as_str()
            .and_then(|s| serde_yaml::from_str::<Value>(s).ok())
    {
        *sel = parsed;
    }
    data
}

/// Every grant of every ServiceAccount: `<account>/<scope>/<group>/<resource>[/<name>]`
/// -> sorted verbs.
fn rbac(all: &[Value]) -> BTreeMap<String, Value> {
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in all
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = b["roleRef"]["name"].as_str().unwrap_or_default();
        let Some(role) = find(all, role_kind, role_name) else {
            continue;
        };
        let scope = if b["kind"] == "RoleBinding" {
            "namespace"
        } else {
            "cluster"
        };
        for s in b["subjects"].as_array().into_iter().flatten() {
            let account = s["name"].as_str().unwrap_or_default();
            for rule in role["rules"].as_array().into_iter().flatten() {
                let strings = |key: &str| -> Vec<String> {
                    rule[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                };
                let groups = strings("apiGroups");
                let names = strings("resourceNames");
                for g in &groups {
                    for r in strings("resources") {
                        let g = if g.is_empty() { "core" } else { g };
                        let at = format!("{account}/{scope}/{g}/{r}");
                        let keys: Vec<String> = if names.is_empty() {
                            vec![at]
                        } else {
                            names.iter().map(|n| format!("{at}/{n}")).collect()
                        };
                        for k in keys {
                            grants.entry(k).or_default().extend(strings("verbs"));
                        }
                    }
                }
            }
        }
    }
    grants
        .into_iter()
        .map(|(k, verbs)| (k, json!(verbs.into_iter().collect::<Vec<_>>())))
        .collect()
}

/// A grant on every resource of a group (`<group>/*`) applies to each resource of that group
/// the other side names for the same account and scope: both sides get the verbs it allows
/// there, so what is compared is what each account may do to each resource. The wildcard's own
/// grant stays (it reaches kinds neither side names, too).
fn wildcards(
    mut a: BTreeMap<String, Value>,
    mut b: BTreeMap<String, Value>,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let keys: BTreeSet<String> = a.keys().chain(b.keys()).cloned().collect();
    for side in [&mut a, &mut b] {
        for key in &keys {
            // <account>/<scope>/<group>/<resource>[/<sub or name>]
            let parts: Vec<&str> = key.splitn(4, '/').collect();
            let [account, scope, group, resource] = parts[..] else {
                continue;
            };
            if resource == "*" {
                continue;
            }
            let Some(all) = side.get(&format!("{account}/{scope}/{group}/*")).cloned() else {
                continue;
            };
            let entry = side.entry(key.clone()).or_insert(json!([]));
            let mut verbs: BTreeSet<String> = entry
                .as_array()
                .into_iter()
                .flatten()
                .chain(all.as_array().into_iter().flatten())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if verbs.contains("*") {
                verbs = BTreeSet::from(["*".to_string()]);
            }
            *entry = json!(verbs.into_iter().collect::<Vec<_>>());
        }
    }
    (a, b)
}

/// Both sides' fields, compared: how many fields, and the differences.
fn compare(theirs: &[Value], ours: &[Value]) -> (usize, usize, Vec<Difference>) {
    let mut fields = 0;
    let mut found = Vec::new();
    let mut add = |prefix: &str, a: &Value, b: &Value| {
        let (n, d) = differences(a, b);
        fields += n;
        found.extend(d.into_iter().map(|mut d| {
            d.path = format!("{prefix}{}", d.path);
            d
        }));
    };
    let (a, b) = (objects(theirs), objects(ours));
    let object_count = a.keys().chain(b.keys()).collect::<BTreeSet<_>>().len();
    add("Objects", &json!(a), &json!(b));
    for (kind, name) in WORKLOADS {
        let pick = |all: &[Value]| {
            find(all, kind, name)
                .map(workload_fields)
                .unwrap_or(json!({}))
        };
        add(&format!("{kind}/{name}"), &pick(theirs), &pick(ours));
    }
    add(
        "ConfigMap/istio-cni-config",
        &cni_config(find(theirs, "ConfigMap", "istio-cni-config")),
        &cni_config(find(ours, "ConfigMap", "istio-cni-config")),
    );
    let (a, b) = wildcards(rbac(theirs), rbac(ours));
    add("RBAC", &json!(a), &json!(b));
    // Order within lists is no setting here.
    found.retain(|d| !d.path.ends_with("/#order"));
    (object_count, fields, found)
}

fn cell(text: &str) -> String {
    format!("`{}`", text.replace('|', "\\|"))
}

#[test]
fn meshops_ambient_profile_renders_what_istioctls_does_but_for_documented_differences() {
    let bin = IstioBinaries::locate().unwrap();
    let (theirs, ours) = (istioctl(&bin), meshop());
    for (kind, name) in WORKLOADS {
        assert!(
            find(&theirs, kind, name).is_some(),
            "istioctl renders {kind}/{name}"
        );
        assert!(
            find(&ours, kind, name).is_some(),
            "meshop renders {kind}/{name}"
        );
    }
    let (objects, fields, found) = compare(&theirs, &ours);
    let summary = format!(
        "{objects} objects compared (istioctl {}, meshop {}), {fields} fields compared, {} \
         differences, each documented below",
        theirs.len(),
        ours.len(),
        found.len()
    );
    println!("{summary}");

    let current = meshop_testenv::blessed::current(&doc_path(), BEGIN, END);
    let known = reasons(&current);
    let mut s = String::new();
    writeln!(s, "{summary}.\n").unwrap();
    writeln!(s, "| setting | istioctl | meshop | reason |").unwrap();
    writeln!(s, "|---|---|---|---|").unwrap();
    for d in &found {
        let row = format!(
            "| {} | {} | {}",
            cell(&d.path),
            cell(&show(&d.istioctl)),
            cell(&show(&d.meshop))
        );
        let reason = known.get(&row).cloned().unwrap_or_else(|| PENDING.into());
        writeln!(s, "{row} | {reason} |").unwrap();
    }
    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ambient-render.txt");
    std::fs::write(&report, &s).unwrap();
    let pending: Vec<&str> = s.lines().filter(|l| l.contains(PENDING)).collect();
    meshop_testenv::blessed::check(&doc_path(), BEGIN, END, &s, &report);
    assert!(
        pending.is_empty(),
        "{} difference(s) with no reason in docs/istio-compatibility.md:\n  {}",
        pending.len(),
        pending.join("\n  ")
    );
}

#[test]
fn rbac_grants_are_read_per_account_through_bindings() {
    let all: Vec<Value> = serde_yaml::from_str(
        "- {kind: ClusterRole, metadata: {name: r}, rules: [{apiGroups: [''], resources: [pods], verbs: [get, list]}, {apiGroups: [apps], resources: [daemonsets], resourceNames: [d], verbs: [get]}]}
- {kind: ClusterRoleBinding, metadata: {name: b}, roleRef: {kind: ClusterRole, name: r}, subjects: [{kind: ServiceAccount, name: sa}]}
- {kind: Role, metadata: {name: r, namespace: n}, rules: [{apiGroups: [''], resources: [secrets], verbs: [watch]}]}
- {kind: RoleBinding, metadata: {name: b, namespace: n}, roleRef: {kind: Role, name: r}, subjects: [{kind: ServiceAccount, name: sa}]}
- {kind: ClusterRole, metadata: {name: unbound}, rules: [{apiGroups: [''], resources: [nodes], verbs: [get]}]}",
    )
    .unwrap();
    let grants = rbac(&all);
    assert_eq!(
        grants,
        BTreeMap::from([
            ("sa/cluster/apps/daemonsets/d".to_string(), json!(["get"])),
            ("sa/cluster/core/pods".to_string(), json!(["get", "list"])),
            ("sa/namespace/core/secrets".to_string(), json!(["watch"])),
        ])
    );
}

#[test]
fn env_defaults_make_equal_what_the_kubelet_reads_alike() {
    let a = json!({ "kind": "DaemonSet", "spec": { "template": { "spec": { "containers": [{ "name": "c", "env": [
        { "name": "N", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "spec.nodeName" } } },
        { "name": "L", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu", "divisor": "1" } } }
    ] }] } } } });
    let b = json!({ "kind": "DaemonSet", "spec": { "template": { "spec": { "containers": [{ "name": "c", "env": [
        { "name": "N", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
        { "name": "L", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu" } } }
    ] }] } } } });
    let (_, found) = differences(&workload_fields(&a), &workload_fields(&b));
    assert_eq!(found, vec![]);
    let c = json!({ "kind": "DaemonSet", "spec": { "template": { "spec": { "containers": [{ "name": "c", "env": [
        { "name": "L", "valueFrom": { "resourceFieldRef": { "resource": "limits.cpu", "divisor": "1m" } } }
    ] }] } } } });
    let (_, found) = differences(&workload_fields(&a), &workload_fields(&c));
    assert!(
        found.iter().any(|d| d.path.ends_with("/divisor")),
        "{found:?}"
    );
}

#[test]
fn a_wildcard_grant_counts_for_every_resource_of_its_group() {
    let a = BTreeMap::from([("sa/cluster/g/*".to_string(), json!(["get", "list"]))]);
    let b = BTreeMap::from([("sa/cluster/g/things".to_string(), json!(["list"]))]);
    let (a, b) = wildcards(a, b);
    assert_eq!(a["sa/cluster/g/things"], json!(["get", "list"]));
    assert_eq!(b["sa/cluster/g/things"], json!(["list"]));
    assert!(!b.contains_key("sa/cluster/g/*"));
}
