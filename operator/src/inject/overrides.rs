//! Container overrides: a pod that brings its own `istio-proxy` container (or its own `istio-init`
//! / `istio-validation` init container) has the fields it sets merged over the container
//! injection adds, as Istio merges them, and the fields it set are recorded in
//! `proxy.istio.io/overrides`.
//!
//! Istio's injector (release-1.31, `pkg/kube/inject`) applies its template over the pod with a
//! Kubernetes strategic merge patch, then applies the pod's own container over the result the
//! same way, with `image: auto` meaning "the injected image". Both steps are reproduced here, with
//! the crate's one strategic merge (`crate::strategic_merge`), on
//! the containers' JSON: maps merge key by key, the lists Kubernetes declares mergeable (`env` by
//! name, `ports` by containerPort, `volumeMounts` by mountPath, `volumeDevices` by devicePath)
//! merge item by item in the order the strategic merge gives them, every other list and every
//! scalar is replaced. The pod's container is read as Go's API types write it: zero scalars
//! dropped (`tty: false`, a probe's `initialDelaySeconds: 0`), quantities in canonical form.
//!
//! Pure: no I/O.

use k8s_openapi::api::core::v1::Container;
use serde_json::{Map, Value, json};

use super::InjectError;
use crate::strategic_merge::{self, Schema};

/// The image value that keeps the injected image.
pub(crate) const AUTO_IMAGE: &str = "auto";

/// A container as Go's `corev1.Container` encodes it: `resources` always present, `omitempty`
/// scalars left out when zero, quantities canonical.
pub(crate) fn go_json(c: &Container) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    let Value::Object(m) = &mut v else {
        return v;
    };
    drop_zero(
        m,
        &[
            "image",
            "workingDir",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "imagePullPolicy",
            "stdin",
            "stdinOnce",
            "tty",
        ],
    );
    let resources = m.entry("resources").or_insert_with(|| json!({}));
    for part in ["limits", "requests"] {
        if let Some(Value::Object(q)) = resources.get_mut(part) {
            for value in q.values_mut() {
                if let Some(c) = value.as_str().and_then(canonical_quantity) {
                    *value = Value::String(c);
                }
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = m.get_mut(probe) {
            drop_zero(
                p,
                &[
                    "initialDelaySeconds",
                    "timeoutSeconds",
                    "periodSeconds",
                    "successThreshold",
                    "failureThreshold",
                ],
            );
        }
    }
    for (list, fields) in [
        ("ports", &["hostPort", "name", "protocol", "hostIP"][..]),
        ("env", &["value"][..]),
        (
            "volumeMounts",
            &["readOnly", "subPath", "subPathExpr", "mountPropagation"][..],
        ),
    ] {
        if let Some(Value::Array(items)) = m.get_mut(list) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                drop_zero(item, fields);
            }
        }
    }
    v
}

/// Removes the `fields` whose value is Go's zero value ("", false, 0).
fn drop_zero(m: &mut Map<String, Value>, fields: &[&str]) {
    for f in fields {
        let zero = match m.get(*f) {
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Bool(b)) => !b,
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            _ => false,
        };
        if zero {
            m.remove(*f);
        }
    }
}

/// The injected container with the pod's own container of the same name merged over it, as
/// Istio merges it; and the overlay Istio records for it in `proxy.istio.io/overrides` (the
/// pod's container, without `image: auto`).
pub(crate) fn apply(
    injected: &Container,
    own: &Container,
) -> Result<(Container, Value), InjectError> {
    let own = go_json(own);
    let mut overlay = own.clone();
    if let Value::Object(m) = &mut overlay
        && m.get("image").and_then(Value::as_str) == Some(AUTO_IMAGE)
    {
        m.remove("image");
    }
    let template = serde_json::to_value(injected).unwrap_or(Value::Null);
    // The template over the pod's container, then the pod's container over the result.
    let mut merged = own;
    let merge_error = |e: crate::strategic_merge::MergeError| {
        InjectError::InvalidPod(format!(
            "its own {:?} container cannot be merged with the injected one: {e}",
            injected.name
        ))
    };
    strategic_merge::merge(&mut merged, &template, Schema::Container).map_err(merge_error)?;
    strategic_merge::merge(&mut merged, &overlay, Schema::Container).map_err(merge_error)?;
    let container = serde_json::from_value(merged).map_err(|e| {
        InjectError::InvalidPod(format!(
            "its own {:?} container cannot be merged with the injected one: {e}",
            injected.name
        ))
    })?;
    Ok((container, overlay))
}

/// Istio's `proxy.istio.io/overrides`: the overlays of the injected containers (`containers`)
/// and init containers (`initContainers`), each list left out when empty.
pub(crate) fn annotation(containers: Vec<Value>, init_containers: Vec<Value>) -> String {
    let mut m = Map::new();
    if !containers.is_empty() {
        m.insert("containers".into(), Value::Array(containers));
    }
    if !init_containers.is_empty() {
        m.insert("initContainers".into(), Value::Array(init_containers));
    }
    Value::Object(m).to_string()
}

/// What Istio does when the pod's own `istio-proxy` sets `runAsUser` / `runAsGroup`: the
/// redirect must exempt that uid instead of 1337 (`istio-iptables -u`, unless the uid is 0), and
/// the CNI validation container runs as the proxy's user and group.
pub(crate) fn adjust_init_user(init: &mut Container, own_proxy: &Container, validation: bool) {
    let Some(sc) = own_proxy.security_context.as_ref() else {
        return;
    };
    if sc.run_as_user.is_none() && sc.run_as_group.is_none() {
        return;
    }
    if validation {
        let isc = init.security_context.get_or_insert_with(Default::default);
        if sc.run_as_user.is_some() {
            isc.run_as_user = sc.run_as_user;
        }
        if sc.run_as_group.is_some() {
            isc.run_as_group = sc.run_as_group;
        }
    }
    let Some(uid) = sc.run_as_user.filter(|u| *u != 0) else {
        return;
    };
    if let Some(args) = init.args.as_mut()
        && let Some(i) = args.iter().position(|a| a == "-u")
        && let Some(v) = args.get_mut(i + 1)
    {
        *v = uid.to_string();
    }
}

/// A quantity in the canonical form Go's `resource.Quantity` writes (`3000m` is `3`, `1024Mi`
/// is `1Gi`, `0.5` is `500m`); `None` for what it does not handle (exponents, negative numbers,
/// more than nine decimals), which is then kept as written.
pub(crate) fn canonical_quantity(s: &str) -> Option<String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.len() > 9 {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac_nano: i128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let base = whole.checked_mul(1_000_000_000)?.checked_add(frac_nano)?;
    const DECIMAL: [(i32, &str); 10] = [
        (18, "E"),
        (15, "P"),
        (12, "T"),
        (9, "G"),
        (6, "M"),
        (3, "k"),
        (0, ""),
        (-3, "m"),
        (-6, "u"),
        (-9, "n"),
    ];
    const BINARY: [(u32, &str); 6] = [
        (6, "Ei"),
        (5, "Pi"),
        (4, "Ti"),
        (3, "Gi"),
        (2, "Mi"),
        (1, "Ki"),
    ];
    let pow10 = |e: i32| 10i128.checked_pow(e.unsigned_abs());
    // The value in nano units.
    let (nano, binary) = if let Some((exp, _)) = DECIMAL.iter().find(|(_, u)| *u == suffix) {
        let nano = if *exp >= 0 {
            base.checked_mul(pow10(*exp)?)?
        } else {
            let d = pow10(*exp)?;
            if base % d != 0 {
                return None;
            }
            base / d
        };
        (nano, false)
    } else if let Some((exp, _)) = BINARY.iter().find(|(_, u)| *u == suffix) {
        (base.checked_mul(1024i128.checked_pow(*exp)?)?, true)
    } else {
        return None;
    };
    const NANO: i128 = 1_000_000_000;
    if binary && nano >= 1024 * NANO && nano % NANO == 0 {
        let bytes = nano / NANO;
        for (exp, unit) in BINARY {
            let d = 1024i128.pow(exp);
            if bytes % d == 0 {
                return Some(format!("{}{unit}", bytes / d));
            }
        }
        return Some(bytes.to_string());
    }
    if nano == 0 {
        return Some("0".into());
    }
    DECIMAL.iter().find_map(|(exp, unit)| {
        let d = pow10(exp + 9)?;
        (nano % d == 0).then(|| format!("{}{unit}", nano / d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, SecurityContext, VolumeMount};

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities_are_canonical_as_go_writes_them() {
        for (input, canonical) in [
            ("3000m", "3"),
            ("123m", "123m"),
            ("0.5", "500m"),
            ("1500m", "1500m"),
            ("2000", "2k"),
            ("1024Mi", "1Gi"),
            ("128Mi", "128Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("0", "0"),
            ("100000n", "100u"),
        ] {
            assert_eq!(
                canonical_quantity(input).as_deref(),
                Some(canonical),
                "{input}"
            );
        }
        assert_eq!(canonical_quantity("1e3"), None);
        assert_eq!(canonical_quantity("-1"), None);
    }

    #[test]
    fn env_and_mounts_merge_by_key_in_kubernetes_order() {
        let injected = Container {
            name: "istio-proxy".into(),
            image: Some("docker.io/istio/proxyv2:1.31.1".into()),
            args: Some(vec!["proxy".into(), "sidecar".into()]),
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("a".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "B".into(),
                    value: Some("b".into()),
                    ..Default::default()
                },
            ]),
            volume_mounts: Some(vec![VolumeMount {
                name: "istio-envoy".into(),
                mount_path: "/etc/istio/proxy".into(),
                ..Default::default()
            }]),
            security_context: Some(SecurityContext {
                run_as_user: Some(1337),
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let own = container(json!({
            "name": "istio-proxy",
            "image": "auto",
            "args": ["-c", "my.yaml"],
            "env": [{"name": "MINE", "value": "1"}, {"name": "B", "value": "mine"}],
            "volumeMounts": [{"name": "certs", "mountPath": "/etc/certs"}],
            "securityContext": {"runAsUser": 1234},
            "tty": false,
        }));
        let (merged, overlay) = apply(&injected, &own).unwrap();
        assert_eq!(
            merged.image, injected.image,
            "image: auto keeps the injected image"
        );
        assert_eq!(
            merged.args.unwrap(),
            ["-c", "my.yaml"],
            "lists of scalars are replaced"
        );
        let env: Vec<(&str, &str)> = merged
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
            .collect();
        // The strategic merge: the pod's own MINE came before B, which the template also has.
        assert_eq!(env, [("A", "a"), ("MINE", "1"), ("B", "mine")]);
        let mounts: Vec<&str> = merged
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/etc/istio/proxy", "/etc/certs"]);
        let sc = merged.security_context.unwrap();
        assert_eq!(
            (sc.run_as_user, sc.run_as_non_root),
            (Some(1234), Some(true))
        );
        assert_eq!(merged.tty, None, "Go leaves out a false tty");
        assert_eq!(
            overlay,
            json!({
                "name": "istio-proxy",
                "args": ["-c", "my.yaml"],
                "env": [{"name": "MINE", "value": "1"}, {"name": "B", "value": "mine"}],
                "volumeMounts": [{"name": "certs", "mountPath": "/etc/certs"}],
                "securityContext": {"runAsUser": 1234},
                "resources": {},
            })
        );
    }

    #[test]
    fn a_pods_own_image_and_probe_fields_win() {
        let injected = Container {
            name: "istio-proxy".into(),
            image: Some("docker.io/istio/proxyv2:1.31.1".into()),
            ..Default::default()
        };
        let own = container(json!({
            "name": "istio-proxy",
            "image": "foo/bar",
            "resources": {"limits": {"cpu": "3000m"}},
            "livenessProbe": {"httpGet": {"port": 15021}, "initialDelaySeconds": 0, "periodSeconds": 2},
        }));
        let (merged, overlay) = apply(&injected, &own).unwrap();
        assert_eq!(merged.image.as_deref(), Some("foo/bar"));
        assert_eq!(overlay["resources"], json!({"limits": {"cpu": "3"}}));
        assert_eq!(
            overlay["livenessProbe"],
            json!({"httpGet": {"port": 15021}, "periodSeconds": 2})
        );
    }

    #[test]
    fn the_proxys_own_user_reaches_the_redirect() {
        let own = container(
            json!({"name": "istio-proxy", "securityContext": {"runAsUser": 1234, "runAsGroup": 4321}}),
        );
        let mut init = Container {
            name: "istio-validation".into(),
            args: Some(["istio-iptables", "-u", "1337"].map(String::from).into()),
            ..Default::default()
        };
        adjust_init_user(&mut init, &own, true);
        assert_eq!(init.args.as_ref().unwrap()[2], "1234");
        let sc = init.security_context.unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1234), Some(4321)));

        let root = container(json!({"name": "istio-proxy", "securityContext": {"runAsUser": 0}}));
        let mut init = Container {
            name: "istio-init".into(),
            args: Some(["istio-iptables", "-u", "1337"].map(String::from).into()),
            ..Default::default()
        };
        adjust_init_user(&mut init, &root, false);
        assert_eq!(
            init.args.unwrap()[2],
            "1337",
            "iptables cannot exempt uid 0"
        );
    }
}
