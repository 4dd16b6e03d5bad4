//! Kubernetes' strategic merge patch, on JSON: what `kubectl patch --type strategic` and the API
//! server do with a patch, for the types meshop renders and injects.
//!
//! The rules (k8s.io/apimachinery `pkg/util/strategicpatch`, and the `patchStrategy` /
//! `patchMergeKey` tags of k8s.io/api's types):
//! - maps merge key by key; a `null` value deletes the key;
//! - a list whose field is tagged `patchStrategy: merge` with a `patchMergeKey` merges item by
//!   item: a patch item is merged into the item with the same key, or added; the result is
//!   ordered as Kubernetes orders it (the patch's items in the patch's order, each other item
//!   before the first patch item that followed it);
//! - a list of scalars tagged `merge` (`metadata.finalizers`) is the union of both;
//! - every other list, and every scalar, is replaced by the patch's;
//! - directives: `$patch: replace` in a map replaces the whole map; `$patch: delete` in a map
//!   deletes it (Kubernetes leaves `{}`, which the API server reads as unset; meshop removes the
//!   key); in a merging list, an item `{<key>: v, $patch: delete}` deletes the item with key `v`
//!   and an item `{$patch: replace}` replaces the whole list with the patch's other items.
//!   `$retainKeys`, `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` (which
//!   kubectl writes, not people) are refused.
//!
//! Types Kubernetes has no patch metadata for (custom resources such as Istio's) merge as JSON
//! merge patch: maps key by key, lists replaced.
//!
//! Pure: no I/O.

use serde_json::{Map, Value};

/// The directive key.
const DIRECTIVE: &str = "$patch";

/// What the merge knows of a value's type: which of its fields are merging lists, and the type of
/// each field. Only the types meshop renders or injects are described; anything else is
/// [`Schema::Plain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// No merging lists: maps merge, lists are replaced.
    Plain,
    /// An object of a kind without merging lists of its own (only its metadata's).
    Object,
    /// Deployment, DaemonSet, StatefulSet, ReplicaSet, Job: `spec.template` is a pod template.
    Workload,
    WorkloadSpec,
    CronJob,
    CronJobSpec,
    JobTemplate,
    PodTemplate,
    Pod,
    PodSpec,
    Container,
    Service,
    ServiceSpec,
    ServiceAccount,
    /// Mutating- and ValidatingWebhookConfiguration.
    WebhookConfiguration,
    Webhook,
    ObjectMeta,
}

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListMerge {
    Replace,
    /// Items are maps merged by this key.
    Key(&'static str),
    /// Items are scalars; the result is the union.
    Union,
}

impl Schema {
    /// The schema of a whole object of `kind`.
    pub fn for_kind(kind: &str) -> Schema {
        match kind {
            "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => Schema::Workload,
            "CronJob" => Schema::CronJob,
            "Pod" => Schema::Pod,
            "Service" => Schema::Service,
            "ServiceAccount" => Schema::ServiceAccount,
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
                Schema::WebhookConfiguration
            }
            _ => Schema::Object,
        }
    }

    /// The schema of `field` of a value of this schema, and how that field merges when it is a list.
    fn field(self, field: &str) -> (Schema, ListMerge) {
        use ListMerge::{Key, Replace, Union};
        use Schema::*;
        let by_name = (Plain, Key("name"));
        match (self, field) {
            (
                Object | Workload | CronJob | JobTemplate | PodTemplate | Pod | Service
                | ServiceAccount | WebhookConfiguration,
                "metadata",
            ) => (ObjectMeta, Replace),
            (Workload, "spec") | (JobTemplate, "spec") => (WorkloadSpec, Replace),
            (WorkloadSpec, "template") => (PodTemplate, Replace),
            (CronJob, "spec") => (CronJobSpec, Replace),
            (CronJobSpec, "jobTemplate") => (JobTemplate, Replace),
            (Pod | PodTemplate, "spec") => (PodSpec, Replace),
            (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                (Container, Key("name"))
            }
            (PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
                by_name
            }
            (PodSpec, "hostAliases") => (Plain, Key("ip")),
            (PodSpec, "topologySpreadConstraints") => (Plain, Key("topologyKey")),
            (Container, "env") => by_name,
            (Container, "ports") => (Plain, Key("containerPort")),
            (Container, "volumeMounts") => (Plain, Key("mountPath")),
            (Container, "volumeDevices") => (Plain, Key("devicePath")),
            (Service, "spec") => (ServiceSpec, Replace),
            (ServiceSpec, "ports") => (Plain, Key("port")),
            (ServiceAccount, "secrets" | "imagePullSecrets") => by_name,
            (WebhookConfiguration, "webhooks") => (Webhook, Key("name")),
            (Webhook, "matchConditions") => by_name,
            (ObjectMeta, "ownerReferences") => (Plain, Key("uid")),
            (ObjectMeta, "finalizers") => (Plain, Union),
            _ => (Plain, Replace),
        }
    }
}

/// Why a patch cannot be merged, and where (a path such as
/// `spec.template.spec.containers[name=sidecar]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if path.is_empty() { String::new() } else { format!("at {path}: ") })]
pub struct MergeError {
    pub path: String,
    pub reason: String,
}

/// Merges `patch` into `original` (both maps) as a strategic merge patch of a value of `schema`.
/// On an error, `original` may be partly merged: merge into a copy when that matters.
pub fn merge(original: &mut Value, patch: &Value, schema: Schema) -> Result<(), MergeError> {
    merge_value(original, patch, schema, "")
}

fn error(path: &str, reason: impl Into<String>) -> MergeError {
    MergeError {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// `path.key`, or `key` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The directive of a map, if it has one.
fn directive<'a>(patch: &'a Map<String, Value>, path: &str) -> Result<Option<&'a str>, MergeError> {
    match patch.get(DIRECTIVE) {
        None => Ok(None),
        Some(Value::String(d)) if d == "replace" || d == "delete" || d == "merge" => {
            Ok(Some(d.as_str()))
        }
        Some(other) => Err(error(
            path,
            format!("unknown directive $patch: {other}; expected replace, delete or merge"),
        )),
    }
}

fn merge_value(
    original: &mut Value,
    patch: &Value,
    schema: Schema,
    path: &str,
) -> Result<(), MergeError> {
    let Value::Object(p) = patch else {
        *original = patch.clone();
        return Ok(());
    };
    match directive(p, path)? {
        Some("replace") => {
            let mut replacement = p.clone();
            replacement.remove(DIRECTIVE);
            *original = strip(&Value::Object(replacement), path)?.unwrap_or(Value::Null);
            return Ok(());
        }
        Some("delete") => return Err(error(path, "$patch: delete cannot delete the whole object")),
        Some(_) => {
            return Err(error(
                path,
                "$patch: merge is the default for a map and is not written in one",
            ));
        }
        None => {}
    }
    let Value::Object(o) = original else {
        *original = strip(patch, path)?.unwrap_or(Value::Null);
        return Ok(());
    };
    for (key, pv) in p {
        let at = join(path, key);
        if key.starts_with('$') {
            return Err(error(
                &at,
                format!(
                    "the directive {key} is not supported in overlays; write the whole value instead"
                ),
            ));
        }
        if pv.is_null() {
            o.remove(key);
            continue;
        }
        let (child, list) = schema.field(key);
        if let Value::Object(pm) = pv
            && directive(pm, &at)? == Some("delete")
        {
            o.remove(key);
            continue;
        }
        match (o.get_mut(key), pv) {
            (Some(ov @ Value::Object(_)), Value::Object(_)) => merge_value(ov, pv, child, &at)?,
            (Some(Value::Array(ov)), Value::Array(pl)) if list != ListMerge::Replace => {
                let merged = match list {
                    ListMerge::Key(k) => merge_keyed(std::mem::take(ov), pl, k, child, &at)?,
                    _ => merge_union(std::mem::take(ov), pl),
                };
                *ov = merged;
            }
            (_, _) => match strip(pv, &at)? {
                Some(v) => {
                    o.insert(key.clone(), v);
                }
                None => {
                    o.remove(key);
                }
            },
        }
    }
    Ok(())
}

/// A patch value taken as it is (nothing to merge it with): its directives removed; `None` when
/// it deletes itself.
fn strip(value: &Value, path: &str) -> Result<Option<Value>, MergeError> {
    Ok(match value {
        Value::Object(m) => {
            if directive(m, path)? == Some("delete") {
                return Ok(None);
            }
            let mut out = Map::new();
            for (k, v) in m {
                if k == DIRECTIVE {
                    continue;
                }
                if k.starts_with('$') {
                    return Err(error(
                        &join(path, k),
                        format!(
                            "the directive {k} is not supported in overlays; write the whole value instead"
                        ),
                    ));
                }
                if let Some(v) = strip(v, &join(path, k))? {
                    out.insert(k.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(v) = strip(item, &format!("{path}[{i}]"))? {
                    out.push(v);
                }
            }
            Some(Value::Array(out))
        }
        other => Some(other.clone()),
    })
}

/// A merging list of maps keyed by `key`.
fn merge_keyed(
    original: Vec<Value>,
    patch: &[Value],
    key: &str,
    schema: Schema,
    path: &str,
) -> Result<Vec<Value>, MergeError> {
    let mut original = original;
    if let Some(i) = original.iter().position(|v| !v.is_object()) {
        return Err(error(
            &format!("{path}[{i}]"),
            "expected an object in this list",
        ));
    }
    let mut items: Vec<&Value> = Vec::new();
    let mut replace = false;
    for (i, item) in patch.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(error(
                &format!("{path}[{i}]"),
                format!("items of this list are objects merged by {key:?}"),
            ));
        };
        match directive(m, path)? {
            None => items.push(item),
            Some("delete") => {
                let Some(k) = m.get(key) else {
                    return Err(error(
                        &format!("{path}[{i}]"),
                        format!("$patch: delete needs the item's {key:?} to find it"),
                    ));
                };
                original.retain(|o| o.get(key) != Some(k));
            }
            Some("replace") => replace = true,
            Some(_) => {
                return Err(error(
                    &format!("{path}[{i}]"),
                    "$patch: merge cannot be written in a list",
                ));
            }
        }
    }
    if replace {
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            out.extend(strip(item, &format!("{path}[{i}]"))?);
        }
        return Ok(out);
    }
    let order: Vec<Option<Value>> = original.iter().map(|v| v.get(key).cloned()).collect();
    let mut merged = original;
    for p in &items {
        let Some(k) = p.get(key) else {
            return Err(error(
                path,
                format!("an item of this list has no {key:?}, the key it merges by"),
            ));
        };
        let at = format!("{path}[{key}={}]", scalar(k));
        match merged.iter_mut().find(|o| o.get(key) == Some(k)) {
            Some(o) => merge_value(o, p, schema, &at)?,
            None => merged.extend(strip(p, &at)?),
        }
    }
    let patch_keys: Vec<Option<Value>> = items.iter().map(|p| p.get(key).cloned()).collect();
    Ok(order_as_kubernetes(
        merged,
        &patch_keys,
        &order,
        |v: &Value| v.get(key).cloned(),
    ))
}

/// A merging list of scalars: the union, ordered as Kubernetes orders it.
fn merge_union(original: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let order: Vec<Option<Value>> = original.iter().cloned().map(Some).collect();
    let mut merged = original;
    for p in patch {
        if !merged.contains(p) {
            merged.push(p.clone());
        }
    }
    let patch_keys: Vec<Option<Value>> = patch.iter().cloned().map(Some).collect();
    order_as_kubernetes(merged, &patch_keys, &order, |v: &Value| Some(v.clone()))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Orders a merged list as Kubernetes does: the items the patch names in the patch's order, and
/// each of the original's other items placed before the first patch item that followed it in the
/// original (`normalizeElementOrder`).
fn order_as_kubernetes(
    merged: Vec<Value>,
    patch_keys: &[Option<Value>],
    original_keys: &[Option<Value>],
    key_of: impl Fn(&Value) -> Option<Value>,
) -> Vec<Value> {
    let patch_index = |v: &Value| patch_keys.iter().position(|p| *p == key_of(v));
    let (mut patched, server_only): (Vec<Value>, Vec<Value>) =
        merged.into_iter().partition(|v| patch_index(v).is_some());
    patched.sort_by_key(|v| patch_index(v));
    let server_index = |v: &Value| original_keys.iter().position(|k| *k == key_of(v));
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        patched.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => matches!(
                (server_index(l), server_index(r)),
                (Some(li), Some(ri)) if li < ri
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(original: Value, patch: Value, schema: Schema) -> Value {
        let mut o = original;
        merge(&mut o, &patch, schema).unwrap_or_else(|e| panic!("{e}"));
        o
    }

    fn deployment(containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name_inside_them() {
        let original = deployment(json!([
            {"name": "discovery", "image": "pilot", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
        ]));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "discovery", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]},
            {"name": "sidecar", "image": "busybox"}
        ]}}}});
        let out = merged(original, patch, Schema::for_kind("Deployment"));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "discovery", "image": "pilot", "env": [
                    {"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}
                ]},
                {"name": "sidecar", "image": "busybox"}
            ])
        );
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn every_merge_key_kubernetes_declares_for_meshops_kinds() {
        let pod_spec = |v: Value| json!({"spec": {"template": {"spec": v}}});
        let cases: [(&str, Value, Value, Value); 8] = [
            (
                "volumes by name",
                pod_spec(
                    json!({"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]}),
                ),
                pod_spec(json!({"volumes": [{"name": "b", "configMap": {"name": "x"}}]})),
                json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}, "configMap": {"name": "x"}}]),
            ),
            (
                "imagePullSecrets by name",
                pod_spec(json!({"imagePullSecrets": [{"name": "a"}]})),
                pod_spec(json!({"imagePullSecrets": [{"name": "b"}]})),
                // A new item the patch names alone comes first, as in Kubernetes.
                json!([{"name": "b"}, {"name": "a"}]),
            ),
            (
                "hostAliases by ip",
                pod_spec(json!({"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}]})),
                pod_spec(
                    json!({"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}, {"ip": "10.0.0.2", "hostnames": ["c"]}]}),
                ),
                json!([{"ip": "10.0.0.1", "hostnames": ["b"]}, {"ip": "10.0.0.2", "hostnames": ["c"]}]),
            ),
            (
                "topologySpreadConstraints by topologyKey",
                pod_spec(
                    json!({"topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 1}]}),
                ),
                pod_spec(
                    json!({"topologySpreadConstraints": [{"topologyKey": "zone", "maxSkew": 2}]}),
                ),
                json!([{"topologyKey": "zone", "maxSkew": 2}]),
            ),
            (
                "initContainers by name",
                pod_spec(json!({"initContainers": [{"name": "i", "image": "a"}]})),
                pod_spec(json!({"initContainers": [{"name": "j", "image": "b"}]})),
                json!([{"name": "j", "image": "b"}, {"name": "i", "image": "a"}]),
            ),
            (
                "tolerations are replaced",
                pod_spec(json!({"tolerations": [{"key": "a", "operator": "Exists"}]})),
                pod_spec(json!({"tolerations": [{"key": "b", "operator": "Exists"}]})),
                json!([{"key": "b", "operator": "Exists"}]),
            ),
            (
                "container ports by containerPort",
                pod_spec(
                    json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]}),
                ),
                pod_spec(
                    json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}]}]}),
                ),
                json!([{"name": "c", "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 81}]}]),
            ),
            (
                "volumeMounts by mountPath",
                pod_spec(
                    json!({"containers": [{"name": "c", "volumeMounts": [{"mountPath": "/a", "name": "a"}]}]}),
                ),
                pod_spec(
                    json!({"containers": [{"name": "c", "volumeMounts": [{"mountPath": "/a", "readOnly": true}, {"mountPath": "/b", "name": "b"}]}]}),
                ),
                json!([{"name": "c", "volumeMounts": [{"mountPath": "/a", "name": "a", "readOnly": true}, {"mountPath": "/b", "name": "b"}]}]),
            ),
        ];
        for (what, original, patch, want) in cases {
            let out = merged(original, patch.clone(), Schema::Workload);
            let spec = &out["spec"]["template"]["spec"];
            let field = patch["spec"]["template"]["spec"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone();
            let got = if field == "containers" {
                spec["containers"].clone()
            } else {
                spec[&field].clone()
            };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn service_ports_merge_by_port_and_webhooks_by_name() {
        let svc = json!({"spec": {"ports": [{"port": 443, "name": "https"}, {"port": 15012, "name": "grpc"}]}});
        let out = merged(
            svc,
            json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
            Schema::for_kind("Service"),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 443, "name": "https", "targetPort": 8443}, {"port": 15012, "name": "grpc"}])
        );
        let hooks = json!({"webhooks": [{"name": "a", "sideEffects": "None"}, {"name": "b"}]});
        let out = merged(
            hooks,
            json!({"webhooks": [{"name": "b", "timeoutSeconds": 5}]}),
            Schema::for_kind("MutatingWebhookConfiguration"),
        );
        assert_eq!(
            out["webhooks"],
            json!([{"name": "a", "sideEffects": "None"}, {"name": "b", "timeoutSeconds": 5}])
        );
        // An Istio resource has no patch metadata: lists are replaced.
        let out = merged(
            json!({"spec": {"items": [{"name": "a"}]}}),
            json!({"spec": {"items": [{"name": "b"}]}}),
            Schema::for_kind("PeerAuthentication"),
        );
        assert_eq!(out["spec"]["items"], json!([{"name": "b"}]));
    }

    #[test]
    fn null_deletes_and_other_lists_and_scalars_replace() {
        let out = merged(
            json!({"spec": {"replicas": 2, "selector": {"matchLabels": {"a": "1"}}, "template": {"spec": {"nodeSelector": {"x": "y"}, "containers": [{"name": "c", "args": ["a", "b"]}]}}}}),
            json!({"spec": {"replicas": null, "template": {"spec": {"nodeSelector": null, "containers": [{"name": "c", "args": ["z"]}]}}}}),
            Schema::Workload,
        );
        assert_eq!(
            out,
            json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "template": {"spec": {"containers": [{"name": "c", "args": ["z"]}]}}}})
        );
    }

    #[test]
    fn directives_delete_and_replace() {
        let original = deployment(json!([
            {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}},
            {"name": "b"}
        ]));
        let out = merged(
            original.clone(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "b", "$patch": "delete"},
                {"name": "a", "env": [{"name": "X", "$patch": "delete"}], "resources": {"$patch": "replace", "requests": {"cpu": "2"}}}
            ]}}}}),
            Schema::Workload,
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "env": [{"name": "Y", "value": "2"}], "resources": {"requests": {"cpu": "2"}}}])
        );
        // A whole merging list replaced.
        let out = merged(
            original.clone(),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only"}]}}}}),
            Schema::Workload,
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only"}])
        );
        // A map deleted.
        let out = merged(
            original,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "resources": {"$patch": "delete"}}]}}}}),
            Schema::Workload,
        );
        assert!(
            out["spec"]["template"]["spec"]["containers"][0]
                .get("resources")
                .is_none()
        );
    }

    #[test]
    fn finalizers_are_a_union() {
        let out = merged(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c", "a"]}}),
            Schema::Object,
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    }

    #[test]
    fn patches_kubernetes_refuses_are_refused() {
        let mut d = deployment(json!([{"name": "a"}]));
        let missing_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = merge(&mut d, &missing_key, Schema::Workload).unwrap_err();
        assert_eq!(err.path, "spec.template.spec.containers");
        assert!(err.reason.contains("no \"name\""), "{err}");
        let not_object = json!({"spec": {"template": {"spec": {"containers": ["a"]}}}});
        let err = merge(&mut d, &not_object, Schema::Workload).unwrap_err();
        assert!(
            err.to_string().contains("objects merged by \"name\""),
            "{err}"
        );
        let bad_directive = json!({"spec": {"$patch": "remove"}});
        assert!(
            merge(&mut d, &bad_directive, Schema::Workload)
                .unwrap_err()
                .reason
                .contains("unknown directive")
        );
        let order = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "a"}]}}}});
        let err = merge(&mut d, &order, Schema::Workload).unwrap_err();
        assert!(err.reason.contains("not supported"), "{err}");
        let delete_without_key =
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}});
        assert!(
            merge(&mut d, &delete_without_key, Schema::Workload)
                .unwrap_err()
                .reason
                .contains("needs the item's \"name\"")
        );
    }

    #[test]
    fn a_list_merge_keeps_server_items_before_later_patch_items() {
        // Kubernetes' normalizeElementOrder: original [a, b, c], patch [c, x, a] -> [b, c, x, a].
        let out = merged(
            json!({"env": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
            json!({"env": [{"name": "c"}, {"name": "x"}, {"name": "a"}]}),
            Schema::Container,
        );
        let names: Vec<&str> = out["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "x", "a"]);
        // Original [X, A, Y], patch [A, N]: X stays before A, Y after the new N.
        let out = merged(
            json!({"env": [{"name": "X"}, {"name": "A"}, {"name": "Y"}]}),
            json!({"env": [{"name": "A", "value": "1"}, {"name": "N"}]}),
            Schema::Container,
        );
        assert_eq!(
            out["env"],
            json!([{"name": "X"}, {"name": "A", "value": "1"}, {"name": "N"}, {"name": "Y"}])
        );
    }
}
