//! `meshop inject -f`: injection into manifests offline. The pod (or a workload's pod template) is
//! injected with the webhook's own [`inject_as`] and the resulting patch is applied to the
//! original document, so fields meshop does not model, and the key order of YAML input, survive.

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use serde::Deserialize;
use serde_json::Value;

use super::identity::Workload;
use super::patch::patch;
use super::selection::{Decision, offline_decide};
use super::template::inject_as;
use super::{InjectError, InjectionConfig};

/// Where a kind keeps its pod template; `None` for kinds without one.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job"
        // OpenShift's (apps.openshift.io/v1, and the legacy v1), which Istio's injector knows.
        | "DeploymentConfig" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every document of a multi-document YAML stream; empty documents are dropped.
pub fn inject_yaml_stream(input: &str, cfg: &InjectionConfig) -> Result<String, InjectError> {
    let mut out = String::new();
    for (i, de) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let bad = |e: String| InjectError::InvalidDocument(format!("YAML document {}: {e}", i + 1));
        let mut doc = serde_yaml::Value::deserialize(de).map_err(|e| bad(e.to_string()))?;
        if doc.is_null() {
            continue;
        }
        let json: Value = serde_json::to_value(&doc).map_err(|e| bad(e.to_string()))?;
        let ops = plan(&json, cfg).map_err(|e| match e {
            InjectError::InvalidDocument(m) => bad(m),
            other => other,
        })?;
        for op in &ops {
            yaml_apply(&mut doc, op).map_err(bad)?;
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&crate::yaml::to_string(&doc).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// The patch that injects `doc`, with paths from the document's root.
fn plan(doc: &Value, cfg: &InjectionConfig) -> Result<Vec<PatchOperation>, InjectError> {
    let mut ops = Vec::new();
    plan_into(doc, &mut PointerBuf::new(), cfg, &mut ops)?;
    Ok(ops)
}

fn plan_into(
    doc: &Value,
    at: &mut PointerBuf,
    cfg: &InjectionConfig,
    ops: &mut Vec<PatchOperation>,
) -> Result<(), InjectError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind == "List" {
        for (i, item) in doc
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            at.push_back("items");
            at.push_back(i);
            plan_into(item, at, cfg, ops)?;
            at.pop_back();
            at.pop_back();
        }
        return Ok(());
    }
    let Some(template_at) = template_pointer(kind) else {
        return Ok(());
    };
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let what = format!("{kind} {name:?}");
    let Some(template) = doc.pointer(template_at) else {
        return Err(InjectError::InvalidDocument(format!(
            "{what} has no pod template at {template_at}"
        )));
    };

    let (mut pod, workload) = if kind == "Pod" {
        let pod: Pod = serde_json::from_value(template.clone())
            .map_err(|e| InjectError::InvalidDocument(format!("{what}: {e}")))?;
        (pod, None)
    } else {
        let t: PodTemplateSpec = serde_json::from_value(template.clone())
            .map_err(|e| InjectError::InvalidDocument(format!("{what}: {e}")))?;
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let workload = Workload {
            name: name.into(),
            kind: kind.into(),
            api_version: api_version.into(),
        };
        (
            Pod {
                metadata: t.metadata.unwrap_or_default(),
                spec: t.spec,
                status: None,
            },
            Some(workload),
        )
    };
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(Into::into);
    }
    if let Decision::Skip(_) = offline_decide(&pod) {
        return Ok(());
    }
    let injected = inject_as(&pod, cfg, workload, None).map_err(|e| match e {
        InjectError::InvalidPod(m) => InjectError::InvalidPod(format!("{what}: {m}")),
        other => other,
    })?;

    let root = at.concat(
        Pointer::parse(template_at).map_err(|e| InjectError::InvalidDocument(e.to_string()))?,
    );
    // A template may leave out metadata; the patch adds labels and annotations under it.
    if template.get("metadata").is_none_or(Value::is_null) {
        let mut path = root.clone();
        path.push_back("metadata");
        ops.push(PatchOperation::Add(AddOperation {
            path,
            value: Value::Object(Default::default()),
        }));
    }
    for mut op in patch(&pod, &injected).0 {
        let path = root.concat(op.path());
        match &mut op {
            PatchOperation::Add(o) => o.path = path,
            PatchOperation::Remove(o) => o.path = path,
            PatchOperation::Replace(o) => o.path = path,
            // The diff emits nothing else.
            _ => {
                return Err(InjectError::InvalidDocument(
                    "unexpected patch operation".into(),
                ));
            }
        }
        ops.push(op);
    }
    Ok(())
}

/// Applies one add / replace / remove to a YAML value, keeping the order of existing keys.
fn yaml_apply(doc: &mut serde_yaml::Value, op: &PatchOperation) -> Result<(), String> {
    use serde_yaml::Value as Y;
    let tokens: Vec<String> = op
        .path()
        .tokens()
        .map(|t| t.decoded().into_owned())
        .collect();
    let Some((last, parents)) = tokens.split_last() else {
        return Err("cannot patch the document root".into());
    };
    let mut node = doc;
    for t in parents {
        node = match node {
            Y::Mapping(m) => m.get_mut(t.as_str()),
            Y::Sequence(s) => t.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("no {t:?} on the way to {}", op.path()))?;
    }
    let value = |v: &Value| serde_yaml::to_value(v).map_err(|e| e.to_string());
    match (node, op) {
        (Y::Mapping(m), PatchOperation::Add(o)) => {
            m.insert(Y::String(last.clone()), value(&o.value)?);
        }
        (Y::Mapping(m), PatchOperation::Replace(o)) => {
            *m.get_mut(last.as_str())
                .ok_or_else(|| format!("nothing to replace at {}", op.path()))? = value(&o.value)?;
        }
        (Y::Mapping(m), PatchOperation::Remove(_)) => {
            m.shift_remove(last.as_str());
        }
        (Y::Sequence(s), PatchOperation::Add(o)) if last == "-" => s.push(value(&o.value)?),
        (Y::Sequence(s), op) => {
            let i = last
                .parse::<usize>()
                .map_err(|_| format!("bad index in {}", op.path()))?;
            match op {
                PatchOperation::Add(o) if i <= s.len() => s.insert(i, value(&o.value)?),
                PatchOperation::Replace(o) if i < s.len() => s[i] = value(&o.value)?,
                PatchOperation::Remove(_) if i < s.len() => {
                    s.remove(i);
                }
                _ => return Err(format!("index out of range in {}", op.path())),
            }
        }
        _ => return Err(format!("cannot patch {}", op.path())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::testutil::cfg;
    use serde_json::json;

    /// Injects one Kubernetes object (JSON), as `meshop inject -f` does a YAML document: pods and
    /// the pod templates of workloads get a sidecar; a `List` has its items injected; any other
    /// kind, and pods that opt out or use the host's network, come back unchanged.
    fn inject_document(mut doc: Value, cfg: &InjectionConfig) -> Result<Value, InjectError> {
        let ops = plan(&doc, cfg)?;
        json_patch::patch(&mut doc, &ops).map_err(|e| {
            InjectError::InvalidDocument(format!("cannot apply the injection: {e}"))
        })?;
        Ok(doc)
    }

    fn deployment(template_meta: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "ratings", "namespace": "shop"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "ratings"}},
                "template": {
                    "metadata": template_meta,
                    "spec": {"containers": [{"name": "ratings", "image": "ratings:1", "ports": [{"containerPort": 9080}]}]}
                }
            }
        })
    }

    fn containers_at<'a>(doc: &'a Value, ptr: &str) -> Vec<&'a str> {
        doc.pointer(ptr)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect()
    }

    fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
        container["env"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == name)?["value"]
            .as_str()
    }

    #[test]
    fn deployment_template_is_injected_with_the_workload_identity() {
        let out =
            inject_document(deployment(json!({"labels": {"app": "ratings"}})), &cfg()).unwrap();
        assert_eq!(
            containers_at(&out, "/spec/template/spec/initContainers"),
            ["istio-init", "istio-proxy"]
        );
        let proxy = &out["spec"]["template"]["spec"]["initContainers"][1];
        assert_eq!(env_of(proxy, "ISTIO_META_WORKLOAD_NAME"), Some("ratings"));
        assert_eq!(
            env_of(proxy, "ISTIO_META_OWNER"),
            Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/ratings")
        );
        assert!(
            out["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/status"]
                .is_string()
        );
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"]["service.istio.io/canonical-name"],
            "ratings"
        );
        // The rest of the workload is untouched.
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["metadata"],
            json!({"name": "ratings", "namespace": "shop"})
        );
    }

    #[test]
    fn template_without_metadata() {
        let mut d = deployment(json!(null));
        d["spec"]["template"]
            .as_object_mut()
            .unwrap()
            .remove("metadata");
        let out = inject_document(d, &cfg()).unwrap();
        assert_eq!(
            out["spec"]["template"]["metadata"]["labels"]["service.istio.io/canonical-name"],
            "ratings"
        );
    }

    #[test]
    fn every_workload_kind() {
        let template = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
        let docs = [
            ("StatefulSet", "/spec/template/spec"),
            ("DaemonSet", "/spec/template/spec"),
            ("ReplicaSet", "/spec/template/spec"),
            ("Job", "/spec/template/spec"),
            ("CronJob", "/spec/jobTemplate/spec/template/spec"),
            ("DeploymentConfig", "/spec/template/spec"),
        ];
        for (kind, spec_at) in docs {
            let doc = if kind == "CronJob" {
                json!({"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": "x"}, "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}})
            } else {
                json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "x"}, "spec": {"template": template}})
            };
            let out = inject_document(doc, &cfg()).unwrap();
            assert_eq!(
                containers_at(&out, &format!("{spec_at}/initContainers")),
                ["istio-init", "istio-proxy"],
                "{kind}"
            );
        }
    }

    #[test]
    fn bare_pod() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n", "uid": "keep-me"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "someFutureField": {"x": 1}}});
        let out = inject_document(pod, &cfg()).unwrap();
        assert_eq!(
            containers_at(&out, "/spec/initContainers"),
            ["istio-init", "istio-proxy"]
        );
        // A field meshop does not model survives.
        assert_eq!(out["spec"]["someFutureField"], json!({"x": 1}));
    }

    #[test]
    fn other_kinds_and_opted_out_pods_are_unchanged() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        assert_eq!(inject_document(svc.clone(), &cfg()).unwrap(), svc);
        let opted_out = deployment(json!({"labels": {"sidecar.istio.io/inject": "false"}}));
        assert_eq!(
            inject_document(opted_out.clone(), &cfg()).unwrap(),
            opted_out
        );
        let mut host = deployment(json!({}));
        host["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        assert_eq!(inject_document(host.clone(), &cfg()).unwrap(), host);
    }

    #[test]
    fn injecting_twice_is_a_no_op() {
        let once = inject_document(deployment(json!({})), &cfg()).unwrap();
        assert_eq!(inject_document(once.clone(), &cfg()).unwrap(), once);
    }

    #[test]
    fn lists_have_their_items_injected() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
            deployment(json!({}))
        ]});
        let out = inject_document(list, &cfg()).unwrap();
        assert_eq!(
            containers_at(&out, "/items/1/spec/template/spec/initContainers"),
            ["istio-init", "istio-proxy"]
        );
    }

    #[test]
    fn broken_documents_are_errors() {
        let no_template = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}});
        let e = inject_document(no_template, &cfg()).unwrap_err();
        assert!(
            e.to_string()
                .contains("Deployment \"d\" has no pod template"),
            "{e}"
        );
        let bad_types = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        assert!(matches!(
            inject_document(bad_types, &cfg()),
            Err(InjectError::InvalidDocument(_))
        ));
        let no_containers = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
        assert!(
            inject_document(no_containers, &cfg())
                .unwrap_err()
                .to_string()
                .contains("Pod \"p\"")
        );
        let bad_annotation =
            deployment(json!({"annotations": {"sidecar.istio.io/proxyCPU": "lots"}}));
        assert!(matches!(
            inject_document(bad_annotation, &cfg()),
            Err(InjectError::InvalidAnnotation { .. })
        ));
    }

    #[test]
    fn odd_shapes_never_panic() {
        let docs = [
            json!(null),
            json!("text"),
            json!([1, 2]),
            json!({"kind": 7}),
            json!({"kind": "List", "items": "nope"}),
            json!({"kind": "Deployment", "spec": {"template": null}}),
            json!({"kind": "Deployment", "spec": {"template": "x"}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {}}}),
            json!({"kind": "Pod"}),
            json!({"kind": "Pod", "metadata": {"labels": null}, "spec": {"containers": [{"name": "c"}], "initContainers": null}}),
        ];
        for d in docs {
            let _ = inject_document(d, &cfg());
        }
        for y in [
            "1: 2\n",
            "- a\n- b\n",
            "kind: Pod\nspec: {containers: [{name: c, ports: [{containerPort: x}]}]}\n",
            "!!binary aGk=\n",
        ] {
            let _ = inject_yaml_stream(y, &cfg());
        }
        let out = inject_yaml_stream(
            "kind: Pod\nmetadata:\n  labels:\nspec:\n  containers: [{name: c}]\n",
            &cfg(),
        )
        .unwrap();
        assert!(
            out.contains("service.istio.io/canonical-revision: latest"),
            "{out}"
        );
    }

    const STREAM: &str = "\
---
apiVersion: v1
kind: Service
metadata:
  name: ratings
spec:
  ports:
  - port: 9080
---
# the workload
kind: Deployment
apiVersion: apps/v1
metadata:
  name: ratings
spec:
  template:
    metadata:
      labels:
        app: ratings
    spec:
      containers:
      - name: ratings
        image: ratings:1
        readinessProbe:
          tcpSocket:
            port: 9080
---
";

    #[test]
    fn yaml_streams_keep_documents_and_key_order() {
        let out = inject_yaml_stream(STREAM, &cfg()).unwrap();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "Service");
        assert_eq!(
            containers_at(&docs[1], "/spec/template/spec/initContainers"),
            ["istio-init", "istio-proxy"]
        );
        let probe = &docs[1]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
        assert_eq!(probe["httpGet"]["port"], 15020);
        assert!(probe.get("tcpSocket").is_none());
        // The Deployment still starts with kind then apiVersion, as written.
        let second = out.split("---\n").nth(1).unwrap();
        assert!(
            second.starts_with("kind: Deployment\napiVersion: apps/v1\n"),
            "{second}"
        );
        // Same result as the JSON path.
        let json_doc: Value = serde_yaml::from_str(STREAM.split("---\n").nth(2).unwrap()).unwrap();
        assert_eq!(docs[1], inject_document(json_doc, &cfg()).unwrap());
    }

    #[test]
    fn yaml_errors_name_the_document() {
        let e = inject_yaml_stream("kind: Service\n---\nkind: [unclosed\n", &cfg()).unwrap_err();
        assert!(e.to_string().contains("YAML document 2"), "{e}");
        let e = inject_yaml_stream(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n",
            &cfg(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("YAML document 1"), "{e}");
    }

    #[test]
    fn empty_stream() {
        assert_eq!(inject_yaml_stream("", &cfg()).unwrap(), "");
        assert_eq!(inject_yaml_stream("---\n---\n", &cfg()).unwrap(), "");
    }
}
