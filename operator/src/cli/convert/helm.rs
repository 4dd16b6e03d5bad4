//! Values files of Istio's Helm charts (`base`, `istiod`, `gateway`, `cni`, `ztunnel`), read as the
//! IstioOperator that installs the same thing, so one converter carries both.
//!
//! A Helm-installed mesh is several releases: every values file given together makes one
//! MeshInstall (istiod's, the gateways', the CNI agent's, ztunnel's). The chart a file belongs to is told by
//! its keys, or named with `--chart` when a file could belong to several.

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

/// Istio's charts meshop reads values files of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Chart {
    Base,
    Istiod,
    Gateway,
    Cni,
    Ztunnel,
}

impl Chart {
    /// The chart a values file belongs to, told by keys only that chart has.
    pub fn detect(values: &Value) -> Result<Chart> {
        let Some(map) = values.as_object() else {
            bail!("a Helm values file must be a map");
        };
        let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
        let found: Vec<Chart> = [
            (
                Chart::Istiod,
                has(&[
                    "pilot",
                    "meshConfig",
                    "sidecarInjectorWebhook",
                    "istiodRemote",
                    "telemetry",
                    "revisionTags",
                ]),
            ),
            (Chart::Cni, has(&["cni"])),
            (
                Chart::Ztunnel,
                has(&[
                    "caAddress",
                    "xdsAddress",
                    "peerCaCrl",
                    "resourceName",
                    "logLevel",
                ]),
            ),
            (Chart::Base, has(&["base", "defaultRevision"])),
            (
                Chart::Gateway,
                has(&[
                    "service",
                    "replicaCount",
                    "autoscaling",
                    "networkGateway",
                    "labels",
                    "name",
                ]),
            ),
        ]
        .into_iter()
        .filter_map(|(c, yes)| yes.then_some(c))
        .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => bail!(
                "cannot tell which of Istio's charts (base, istiod, gateway, cni, ztunnel) these values are for; name it with --chart"
            ),
            many => bail!(
                "these values have keys of several of Istio's charts ({many:?}); name the chart with --chart"
            ),
        }
    }
}

/// Moves `from` (dot path) of `src` to `to` of `dst`, if present.
fn carry(src: &mut Value, from: &str, dst: &mut Value, to: &str) {
    if let Some(v) = super::take(src, from) {
        set(dst, to, v);
    }
}

fn set(dst: &mut Value, path: &str, v: Value) {
    let mut node = dst;
    let keys: Vec<&str> = path.split('.').collect();
    for k in &keys[..keys.len() - 1] {
        if !node.is_object() {
            *node = json!({});
        }
        node = node
            .as_object_mut()
            .expect("made an object")
            .entry(*k)
            .or_insert_with(|| json!({}));
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(keys[keys.len() - 1].to_string(), v);
    }
}

/// The IstioOperator `spec` fragment a values file of `chart` stands for. What it does not
/// place is left under `spec.values` (where the converter reports it as not carried).
pub fn to_operator_spec(chart: Chart, mut values: Value) -> Value {
    let mut spec = json!({});
    match chart {
        Chart::Istiod => {
            carry(&mut values, "meshConfig", &mut spec, "meshConfig");
            carry(&mut values, "revision", &mut spec, "revision");
            set(&mut spec, "components.pilot.enabled", json!(true));
            spec["values"] = values;
        }
        Chart::Base => {
            // The CRDs meshop always installs; the default revision is meshop's to point.
            carry(&mut values, "global.istioNamespace", &mut spec, "namespace");
            spec["values"] = values;
        }
        Chart::Cni => {
            let mut cni = json!({ "enabled": true });
            for key in [
                "resources",
                "tolerations",
                "nodeSelector",
                "affinity",
                "podAnnotations",
                "priorityClassName",
            ] {
                carry(
                    &mut values,
                    &format!("cni.{key}"),
                    &mut cni,
                    &format!("k8s.{key}"),
                );
            }
            super::take(&mut values, "cni.enabled");
            set(&mut spec, "components.cni", cni);
            spec["values"] = values;
        }
        Chart::Ztunnel => {
            // The chart's values are ztunnel's own, at the top level.
            let mut z = json!({ "enabled": true });
            for key in [
                "resources",
                "tolerations",
                "nodeSelector",
                "affinity",
                "podAnnotations",
                "priorityClassName",
                "imagePullPolicy",
            ] {
                carry(&mut values, key, &mut z, &format!("k8s.{key}"));
            }
            carry(&mut values, "hub", &mut z, "hub");
            carry(&mut values, "tag", &mut z, "tag");
            if let Some(env) = super::take(&mut values, "env") {
                set(&mut z, "k8s.env", super::env_list(&env));
            }
            carry(&mut values, "revision", &mut spec, "revision");
            carry(&mut values, "istioNamespace", &mut spec, "namespace");
            // `profile: ambient` is what every chart of an ambient install is given.
            carry(&mut values, "profile", &mut spec, "values.profile");
            set(&mut spec, "components.ztunnel", z);
            if values.as_object().is_some_and(|m| !m.is_empty()) {
                set(&mut spec, "values.ztunnel", values);
            }
        }
        Chart::Gateway => {
            let mut g = json!({ "enabled": true });
            carry(&mut values, "name", &mut g, "name");
            carry(&mut values, "labels", &mut g, "label");
            for (from, to) in [
                ("replicaCount", "k8s.replicaCount"),
                ("resources", "k8s.resources"),
                ("nodeSelector", "k8s.nodeSelector"),
                ("tolerations", "k8s.tolerations"),
                ("affinity", "k8s.affinity"),
                ("podAnnotations", "k8s.podAnnotations"),
                ("priorityClassName", "k8s.priorityClassName"),
                ("imagePullPolicy", "k8s.imagePullPolicy"),
                ("securityContext", "k8s.securityContext"),
                ("strategy", "k8s.strategy"),
                ("podDisruptionBudget", "k8s.podDisruptionBudget"),
                ("volumes", "k8s.volumes"),
                ("volumeMounts", "k8s.volumeMounts"),
                ("service.annotations", "k8s.serviceAnnotations"),
                ("service.type", "k8s.service.type"),
                ("service.ports", "k8s.service.ports"),
                (
                    "service.externalTrafficPolicy",
                    "k8s.service.externalTrafficPolicy",
                ),
                ("service.loadBalancerIP", "k8s.service.loadBalancerIP"),
                (
                    "service.loadBalancerSourceRanges",
                    "k8s.service.loadBalancerSourceRanges",
                ),
            ] {
                carry(&mut values, from, &mut g, to);
            }
            if let Some(env) = super::take(&mut values, "env") {
                set(&mut g, "k8s.env", super::env_list(&env));
            }
            if let Some(mut a) = super::take(&mut values, "autoscaling") {
                let on = a.get("enabled").and_then(super::as_bool).unwrap_or(false);
                super::take(&mut a, "enabled");
                if on {
                    let mut hpa = Map::new();
                    for key in ["minReplicas", "maxReplicas"] {
                        if let Some(v) = super::take(&mut a, key) {
                            hpa.insert(key.into(), v);
                        }
                    }
                    if let Some(t) = super::take(&mut a, "targetCPUUtilizationPercentage") {
                        hpa.insert("metrics".into(), json!([{ "type": "Resource", "resource": {
                            "name": "cpu", "target": { "type": "Utilization", "averageUtilization": t } } }]));
                    }
                    set(&mut g, "k8s.hpaSpec", Value::Object(hpa));
                }
                if a.as_object().is_some_and(|m| !m.is_empty()) {
                    set(&mut values, "autoscaling", a);
                }
            }
            carry(&mut values, "revision", &mut spec, "revision");
            // The gateway chart reads the mesh-wide global.networkPolicy too; meshop's is one
            // switch for every component.
            carry(
                &mut values,
                "global.networkPolicy",
                &mut spec,
                "values.global.networkPolicy",
            );
            // Istio's gateway chart is one chart for both directions; its labels say which.
            let egress = g.pointer("/label/istio").and_then(Value::as_str) == Some("egressgateway");
            let key = if egress {
                "egressGateways"
            } else {
                "ingressGateways"
            };
            set(&mut spec, &format!("components.{key}"), json!([g]));
            if values.as_object().is_some_and(|m| !m.is_empty()) {
                set(&mut spec, "values.gateway", values);
            }
        }
    }
    spec
}

/// Merges IstioOperator spec fragments: maps key by key, gateway lists appended, the rest
/// replaced by the later file.
pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(Value::Array(existing)) if k.ends_with("Gateways") => {
                        if let Value::Array(more) = v {
                            existing.extend(more);
                        }
                    }
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_told_by_their_keys() {
        assert_eq!(
            Chart::detect(&json!({ "pilot": {} })).unwrap(),
            Chart::Istiod
        );
        assert_eq!(
            Chart::detect(&json!({ "service": {}, "name": "x" })).unwrap(),
            Chart::Gateway
        );
        assert_eq!(Chart::detect(&json!({ "cni": {} })).unwrap(), Chart::Cni);
        assert_eq!(
            Chart::detect(&json!({ "defaultRevision": "" })).unwrap(),
            Chart::Base
        );
        let err = Chart::detect(&json!({ "global": {} }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--chart"), "{err}");
    }

    #[test]
    fn a_gateway_release_is_one_gateway_entry() {
        let spec = to_operator_spec(
            Chart::Gateway,
            json!({ "name": "public", "replicaCount": 3, "env": { "A": "1" },
                    "service": { "type": "LoadBalancer", "externalTrafficPolicy": "Local" },
                    "autoscaling": { "enabled": true, "maxReplicas": 5 } }),
        );
        let g = &spec["components"]["ingressGateways"][0];
        assert_eq!(g["name"], "public");
        assert_eq!(g["k8s"]["replicaCount"], 3);
        assert_eq!(g["k8s"]["env"], json!([{ "name": "A", "value": "1" }]));
        assert_eq!(g["k8s"]["service"]["externalTrafficPolicy"], "Local");
        assert_eq!(g["k8s"]["hpaSpec"]["maxReplicas"], 5);
        assert!(spec.get("values").is_none(), "{spec}");
        // Mesh-wide switches the chart reads stay mesh-wide.
        let spec = to_operator_spec(
            Chart::Gateway,
            json!({ "name": "public", "global": { "networkPolicy": { "enabled": true } } }),
        );
        assert_eq!(
            spec["values"],
            json!({ "global": { "networkPolicy": { "enabled": true } } })
        );
    }

    #[test]
    fn a_ztunnel_release_is_the_ztunnel_component() {
        let values = json!({ "profile": "ambient", "resources": { "requests": { "cpu": "1" } },
                             "env": { "A": "1" }, "logLevel": "debug", "hub": "h" });
        assert_eq!(Chart::detect(&values).unwrap(), Chart::Ztunnel);
        let spec = to_operator_spec(Chart::Ztunnel, values);
        let z = &spec["components"]["ztunnel"];
        assert_eq!(z["enabled"], true);
        assert_eq!(z["k8s"]["resources"]["requests"]["cpu"], "1");
        assert_eq!(z["k8s"]["env"], json!([{ "name": "A", "value": "1" }]));
        assert_eq!(z["hub"], "h");
        assert_eq!(spec["values"]["profile"], "ambient");
        // What meshop has no setting for stays a chart value, listed as not carried.
        assert_eq!(spec["values"]["ztunnel"], json!({ "logLevel": "debug" }));
    }

    #[test]
    fn gateway_lists_of_several_files_add_up() {
        let mut a = json!({ "components": { "ingressGateways": [{ "name": "a" }] } });
        merge(
            &mut a,
            json!({ "components": { "ingressGateways": [{ "name": "b" }], "pilot": { "enabled": true } } }),
        );
        assert_eq!(
            a["components"]["ingressGateways"].as_array().unwrap().len(),
            2
        );
        assert_eq!(a["components"]["pilot"]["enabled"], true);
    }
}
