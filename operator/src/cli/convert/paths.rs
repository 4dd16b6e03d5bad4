//! IstioOperator overlay paths (`spec.template.spec.containers.[name:discovery].args.[30m]`)
//! turned into RFC 6902 JSON patch operations on the object meshop renders.
//!
//! An IstioOperator overlay patches Istio's chart output by path; meshop's objects are its own,
//! so a path is resolved against meshop's rendered object at conversion time: each selector
//! becomes the index it selects there, and the patch is carried as a `jsonPatch` overlay. A path
//! that selects nothing in meshop's object cannot be carried, and the caller says why.
//!
//! Path steps, as Istio's operator reads them: `key` (a map key), `[key:value]` (the list item
//! whose `key` is `value`), `[value]` (the list item equal to `value`) and `[N]` (an index);
//! `\.` escapes a dot inside a step. A patch without a value deletes what the path selects. A
//! string value that is YAML for a map or list (written with `|`) patches in that structure.

use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Key(String),
    Select { key: String, value: String },
    Equals(String),
    Index(usize),
}

/// Splits a path at unescaped dots and reads each step.
fn parse(path: &str) -> Result<Vec<Step>, String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                current.push('.');
                chars.next();
            }
            '[' => {
                depth += 1;
                current.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            '.' if depth == 0 => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| {
            if p.is_empty() {
                return Err(format!("path {path:?} has an empty step"));
            }
            let Some(inner) = p.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
                return Ok(Step::Key(p));
            };
            if let Some((key, value)) = inner.split_once(':') {
                return Ok(Step::Select {
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
            Ok(match inner.parse::<usize>() {
                Ok(i) => Step::Index(i),
                Err(_) => Step::Equals(inner.to_string()),
            })
        })
        .collect()
}

/// A scalar's text as a path selector compares it.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The JSON patch operation that does to `object` what the IstioOperator patch `path` /
/// `value` does to Istio's object, or why there is none.
pub fn json_patch(object: &Value, path: &str, value: Option<&Value>) -> Result<Value, String> {
    let steps = parse(path)?;
    let mut pointer = String::new();
    let mut node = Some(object);
    let last = steps.len() - 1;
    for (i, step) in steps.iter().enumerate() {
        let here = node.ok_or_else(|| format!("{path}: nothing at {pointer:?}"))?;
        let (token, next) = match step {
            Step::Key(key) => {
                let map = here
                    .as_object()
                    .ok_or_else(|| format!("{path}: {pointer:?} is not a map"))?;
                (escape(key), map.get(key))
            }
            Step::Index(n) => {
                let list = here
                    .as_array()
                    .ok_or_else(|| format!("{path}: {pointer:?} is not a list"))?;
                (n.to_string(), list.get(*n))
            }
            Step::Select { key, value: want } => {
                let list = here
                    .as_array()
                    .ok_or_else(|| format!("{path}: {pointer:?} is not a list"))?;
                let found = list.iter().position(|item| {
                    item.get(key).and_then(scalar_text).as_deref() == Some(want.as_str())
                });
                let n = found.ok_or_else(|| {
                    format!("{path}: no item with {key} = {want:?} in meshop's object")
                })?;
                (n.to_string(), list.get(n))
            }
            Step::Equals(want) => {
                let list = here
                    .as_array()
                    .ok_or_else(|| format!("{path}: {pointer:?} is not a list"))?;
                let n = list
                    .iter()
                    .position(|item| scalar_text(item).as_deref() == Some(want.as_str()))
                    .ok_or_else(|| format!("{path}: no item {want:?} in meshop's object"))?;
                (n.to_string(), list.get(n))
            }
        };
        pointer.push('/');
        pointer.push_str(&token);
        if i < last && next.is_none() {
            return Err(format!(
                "{path}: meshop's object has nothing at {pointer:?}"
            ));
        }
        node = next;
    }
    let exists = node.is_some();
    Ok(match value {
        None if !exists => return Err(format!("{path}: nothing to delete in meshop's object")),
        None => json!({ "op": "remove", "path": pointer }),
        Some(v) => {
            let v = structured(v);
            json!({ "op": if exists { "replace" } else { "add" }, "path": pointer, "value": v })
        }
    })
}

/// A string written as YAML for a map or list (`value: |`) is that structure.
fn structured(v: &Value) -> Value {
    if let Value::String(s) = v
        && s.contains('\n')
        && let Ok(parsed) = serde_yaml::from_str::<Value>(s)
        && (parsed.is_object() || parsed.is_array())
    {
        return parsed;
    }
    v.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "other" },
            { "name": "discovery", "args": ["discovery", "30m"],
              "ports": [{ "containerPort": 15010 }, { "containerPort": 8080 }],
              "env": [{ "name": "REVISION", "value": "default" },
                      { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "x" } } }],
              "securityContext": { "runAsNonRoot": true } }
        ] } } } })
    }

    #[test]
    fn selectors_become_indices_of_meshops_object() {
        let d = deployment();
        assert_eq!(
            json_patch(
                &d,
                "spec.template.spec.containers.[name:discovery].args.[30m]",
                Some(&json!("60m"))
            )
            .unwrap(),
            json!({ "op": "replace", "path": "/spec/template/spec/containers/1/args/1", "value": "60m" })
        );
        assert_eq!(
            json_patch(
                &d,
                "spec.template.spec.containers.[name:discovery].ports.[containerPort:8080].containerPort",
                Some(&json!(1234))
            )
            .unwrap()["path"],
            "/spec/template/spec/containers/1/ports/1/containerPort"
        );
    }

    #[test]
    fn no_value_deletes_and_yaml_text_is_structure() {
        let d = deployment();
        assert_eq!(
            json_patch(
                &d,
                "spec.template.spec.containers.[name:discovery].env.[name:REVISION]",
                None
            )
            .unwrap(),
            json!({ "op": "remove", "path": "/spec/template/spec/containers/1/env/0" })
        );
        let op = json_patch(
            &d,
            "spec.template.spec.containers.[name:discovery].env.[name:POD_NAMESPACE].valueFrom",
            Some(&json!(
                "fieldRef:\n  apiVersion: v2\n  fieldPath: metadata.myPath\n"
            )),
        )
        .unwrap();
        assert_eq!(op["value"]["fieldRef"]["fieldPath"], "metadata.myPath");
    }

    #[test]
    fn a_missing_leaf_is_added_and_a_missing_parent_is_refused() {
        let d = deployment();
        assert_eq!(
            json_patch(&d, "spec.replicas", Some(&json!(3))).unwrap()["op"],
            "add"
        );
        let err = json_patch(
            &d,
            "spec.template.spec.containers.[name:nope].args",
            Some(&json!([])),
        )
        .unwrap_err();
        assert!(err.contains("no item with name = \"nope\""), "{err}");
        assert!(json_patch(&d, "spec.nothing.here", Some(&json!(1))).is_err());
    }

    #[test]
    fn escaped_dots_stay_inside_a_selector() {
        let mwc =
            json!({ "webhooks": [{ "name": "namespace.sidecar-injector.istio.io", "x": 1 }] });
        assert_eq!(
            json_patch(
                &mwc,
                r"webhooks.[name:namespace\.sidecar-injector\.istio\.io].x",
                Some(&json!(2))
            )
            .unwrap()["path"],
            "/webhooks/0/x"
        );
    }
}
