//! Custom injection templates (`spec.injection.templates`, Istio's
//! `values.sidecarInjectorWebhook.templates`): which templates a pod gets, and each custom one
//! merged onto the injected pod as Istio's injector merges its templates.
//!
//! Istio renders every template the pod names, in order, and merges each onto the pod as a
//! strategic merge patch (and onto an empty "template pod" whose containers, init containers,
//! volumes and image pull secrets become `sidecar.istio.io/status`); then it puts the proxy last
//! among the containers (first when the app waits for it) and orders the init containers. meshop
//! injects its built-in templates itself and merges the custom ones after them, in the order the
//! pod names them, with the same merge (`crate::strategic_merge`), the same status lists and the
//! same ordering. One deliberate difference: with a native sidecar, a template's `containers`
//! entry named `istio-proxy` is merged into the proxy where it is, among the init containers
//! (Istio adds a second, image-less `istio-proxy` container, a pod the API server refuses).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::{InjectError, InjectionConfig, grpc, keys, names};
use crate::api::{ISTIO_TEMPLATES, MESHOP_TEMPLATES};
use crate::strategic_merge::{self, Schema};

/// The templates a pod gets.
pub(super) struct Selected<'a> {
    /// The built-in ones, joined by commas as the annotation names them.
    pub builtin: String,
    /// The custom ones, in the order named.
    pub custom: Vec<(&'a str, &'a Json)>,
    /// The proxyless gRPC template, when that is the built-in one.
    pub grpc: Option<grpc::Grpc>,
}

/// The pod's templates: its `inject.istio.io/templates` (comma-separated), else the mesh's
/// `defaultTemplates`, else `sidecar`. A name neither meshop nor the mesh's templates have is
/// refused (as Istio refuses it, or by name when it is one of Istio's that meshop lacks), as is
/// a list without a built-in template to merge custom ones onto, or a gRPC template with others.
pub(super) fn select<'a>(
    annotations: &BTreeMap<String, String>,
    cfg: &'a InjectionConfig,
) -> Result<Selected<'a>, InjectError> {
    let annotation = annotations.get(keys::TEMPLATES);
    let names: Vec<&str> = match annotation {
        Some(value) => value.split(',').map(str::trim).collect(),
        None if !cfg.default_templates.is_empty() => {
            cfg.default_templates.iter().map(String::as_str).collect()
        }
        None => vec!["sidecar"],
    };
    let refuse = |reason: String| match annotation {
        Some(value) => InjectError::annotation(keys::TEMPLATES, value, reason),
        None => InjectError::InvalidPod(format!(
            "injection.defaultTemplates {:?}: {reason}",
            cfg.default_templates
        )),
    };
    let have = || {
        MESHOP_TEMPLATES
            .iter()
            .copied()
            .chain(cfg.templates.keys().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (mut builtin, mut custom) = (Vec::new(), Vec::new());
    for name in names {
        if MESHOP_TEMPLATES.contains(&name) {
            builtin.push(name);
        } else if let Some((name, template)) = cfg.templates.get_key_value(name) {
            custom.push((name.as_str(), template));
        } else if ISTIO_TEMPLATES.contains(&name) {
            return Err(refuse(format!(
                "meshop does not have Istio's {name:?} template; it injects {}",
                have()
            )));
        } else {
            return Err(refuse(format!(
                "requested template {name:?} not found; have {}",
                have()
            )));
        }
    }
    let builtin = builtin.join(",");
    let grpc = grpc::requested(Some(&builtin)).map_err(|name| {
        refuse(format!(
            "meshop injects Istio's {name:?} template alone, not with others"
        ))
    })?;
    if let (Some(g), false) = (grpc, custom.is_empty()) {
        return Err(refuse(format!(
            "meshop injects Istio's {:?} template alone, not with others",
            g.name()
        )));
    }
    if builtin.is_empty() {
        return Err(refuse(
            "meshop merges custom templates onto a built-in one: name sidecar or gateway too"
                .into(),
        ));
    }
    Ok(Selected {
        builtin,
        custom,
        grpc,
    })
}

/// What `sidecar.istio.io/status` lists, as Istio writes it.
#[derive(Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Status {
    init_containers: Option<Vec<String>>,
    containers: Option<Vec<String>>,
    volumes: Option<Vec<String>>,
    image_pull_secrets: Option<Vec<String>>,
    revision: String,
}

/// Merges `templates`, in order, onto the injected `pod`, adds what they add to its
/// `sidecar.istio.io/status`, and orders the containers as Istio does after its templates.
/// `native`: the proxy is a native sidecar (an init container); `hold`: it goes first among the
/// containers.
pub(super) fn apply(
    pod: &mut Pod,
    templates: &[(&str, &Json)],
    native: bool,
    hold: bool,
) -> Result<(), InjectError> {
    if templates.is_empty() {
        return Ok(());
    }
    let invalid = |name: &str, e: String| {
        InjectError::InvalidPod(format!("injection template {name:?} does not apply: {e}"))
    };
    let mut value =
        serde_json::to_value(&*pod).map_err(|e| InjectError::InvalidPod(e.to_string()))?;
    let status_text = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::STATUS))
        .cloned()
        .unwrap_or_default();
    let mut status: Status = serde_json::from_str(&status_text).unwrap_or_default();
    // The template pod: what the built-in template added, by name, with each custom template
    // merged on as Istio merges it, which orders the lists the status gives.
    let named = |list: &Option<Vec<String>>| {
        Json::Array(
            list.iter()
                .flatten()
                .map(|n| json!({ "name": n }))
                .collect(),
        )
    };
    let mut template_pod = json!({"spec": {
        "initContainers": named(&status.init_containers),
        "containers": named(&status.containers),
        "volumes": named(&status.volumes),
        "imagePullSecrets": named(&status.image_pull_secrets),
    }});
    for (name, template) in templates {
        let template = if native {
            proxy_to_init_containers(template)
        } else {
            (*template).clone()
        };
        strategic_merge::merge(&mut value, &template, Schema::Pod)
            .map_err(|e| invalid(name, e.to_string()))?;
        strategic_merge::merge(&mut template_pod, &template, Schema::Pod)
            .map_err(|e| invalid(name, e.to_string()))?;
    }
    *pod = serde_json::from_value(value).map_err(|e| {
        InjectError::InvalidPod(format!(
            "the injection templates {:?} make what is not a pod: {e}",
            templates.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        ))
    })?;
    let names_of = |list: &str, was: &Option<Vec<String>>| {
        let names: Vec<String> = template_pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .collect();
        // Go writes an empty list as null; meshop's built-in status keeps what it wrote.
        (!names.is_empty() || was.is_some()).then_some(names)
    };
    status = Status {
        init_containers: names_of("initContainers", &status.init_containers),
        containers: names_of("containers", &status.containers),
        volumes: names_of("volumes", &status.volumes),
        image_pull_secrets: names_of("imagePullSecrets", &None),
        revision: status.revision,
    };
    if let Some(spec) = pod.spec.as_mut() {
        reorder(&mut spec.containers, spec.init_containers.as_mut(), hold);
    }
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(
            keys::STATUS.into(),
            serde_json::to_string(&status).unwrap_or_default(),
        );
    Ok(())
}

/// A template for a pod whose proxy is a native sidecar: its `containers` entry named
/// `istio-proxy`, if any, moved to `initContainers`, where the proxy is.
fn proxy_to_init_containers(template: &Json) -> Json {
    let mut t = template.clone();
    let Some(spec) = t.get_mut("spec").and_then(Json::as_object_mut) else {
        return t;
    };
    let Some(containers) = spec.get_mut("containers").and_then(Json::as_array_mut) else {
        return t;
    };
    let Some(i) = containers.iter().position(|c| c["name"] == names::PROXY) else {
        return t;
    };
    let proxy = containers.remove(i);
    if containers.is_empty() {
        spec.remove("containers");
    }
    match spec
        .entry("initContainers")
        .or_insert_with(|| Json::Array(Vec::new()))
    {
        Json::Array(inits) => inits.push(proxy),
        other => *other = Json::Array(vec![proxy]),
    }
    t
}

/// Istio's order after its templates: the proxy last among the containers (first when the app
/// waits for it); native, the redirect container first, then the proxy, then the rest; classic,
/// `istio-validation` first and `istio-init` last.
fn reorder(containers: &mut Vec<Container>, inits: Option<&mut Vec<Container>>, hold: bool) {
    move_named(containers, names::PROXY, hold);
    let Some(inits) = inits else {
        return;
    };
    if inits.iter().any(|c| c.name == names::PROXY) {
        for name in [names::PROXY, names::VALIDATION, names::INIT] {
            move_named(inits, name, true);
        }
    } else {
        move_named(inits, names::VALIDATION, true);
        move_named(inits, names::INIT, false);
    }
}

/// Moves the container named `name`, if there, to the front (`first`) or the back.
fn move_named(list: &mut Vec<Container>, name: &str, first: bool) {
    if let Some(i) = list.iter().position(|c| c.name == name) {
        let c = list.remove(i);
        match first {
            true => list.insert(0, c),
            false => list.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::inject;
    use super::*;
    use crate::api::SidecarMode;
    use crate::inject::testutil::{cfg, pod_with};
    use serde_json::Value;

    /// Istio's own test template (manifest-generate `sidecar_template.yaml`).
    const CREDENTIAL_VOLUME: &str = "spec:\n  volumes:\n  - name: application-credentials\n    secret:\n      secretName: secret\n  containers:\n  - name: istio-proxy\n    volumeMounts:\n    - name: application-credentials\n      mountPath: /etc/istio/application-credentials\n      readOnly: true\n";

    fn with_templates(mode: SidecarMode, templates: &[(&str, &str)]) -> InjectionConfig {
        InjectionConfig {
            sidecar_mode: mode,
            templates: templates
                .iter()
                .map(|(n, t)| {
                    let parsed = crate::effective::parse_template(n, t).expect("template");
                    (n.to_string(), parsed)
                })
                .collect(),
            ..cfg()
        }
    }

    fn status(p: &Pod) -> Value {
        serde_json::from_str(&p.metadata.annotations.as_ref().unwrap()[keys::STATUS]).unwrap()
    }

    fn names(list: &[Container]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    fn volumes(p: &Pod) -> Vec<String> {
        p.spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .collect()
    }

    #[test]
    fn a_custom_template_merges_onto_the_sidecar_and_the_status_lists_what_it_adds() {
        let c = with_templates(
            SidecarMode::Classic,
            &[("credential-volume", CREDENTIAL_VOLUME)],
        );
        let plain = inject(&pod_with(&[], &[]), &c).unwrap();
        let p = inject(
            &pod_with(&[], &[(keys::TEMPLATES, "sidecar,credential-volume")]),
            &c,
        )
        .unwrap();
        let spec = p.spec.as_ref().unwrap();
        let proxy = spec
            .containers
            .iter()
            .find(|c| c.name == names::PROXY)
            .unwrap();
        let mounts: Vec<_> = proxy
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        // Kubernetes' merge order (what istioctl kube-inject writes): the patch's new item first.
        assert_eq!(
            mounts[0],
            (
                "application-credentials",
                "/etc/istio/application-credentials",
                Some(true)
            )
        );
        assert_eq!(
            mounts.len(),
            plain.spec.as_ref().unwrap().containers[1]
                .volume_mounts
                .as_ref()
                .unwrap()
                .len()
                + 1
        );
        let mut expected_volumes = vec!["application-credentials".to_string()];
        expected_volumes.extend(volumes(&plain));
        assert_eq!(volumes(&p), expected_volumes);
        assert_eq!(names(&spec.containers), ["app", "istio-proxy"]);
        assert_eq!(
            proxy.image,
            plain.spec.as_ref().unwrap().containers[1].image,
            "the rest of the proxy stays"
        );
        let s = status(&p);
        assert_eq!(s["volumes"], json!(expected_volumes));
        assert_eq!(s["containers"], json!(["istio-proxy"]));
        assert_eq!(s["initContainers"], json!(["istio-init"]));
        assert_eq!(s["revision"], "default");
        // Without the annotation (and no defaultTemplates) the pod gets the sidecar alone.
        assert_eq!(
            plain
                .spec
                .as_ref()
                .unwrap()
                .volumes
                .iter()
                .flatten()
                .count()
                + 1,
            volumes(&p).len()
        );
        assert!(!volumes(&plain).contains(&"application-credentials".to_string()));
    }

    #[test]
    fn templates_apply_in_the_order_named_and_set_labels_and_annotations() {
        let c = with_templates(
            SidecarMode::Native,
            &[
                (
                    "one",
                    "metadata:\n  labels: {team: one, one: \"yes\"}\n  annotations: {note: one}\n",
                ),
                (
                    "two",
                    "metadata:\n  labels: {team: two}\nspec:\n  containers:\n  - name: logger\n    image: busybox\n",
                ),
            ],
        );
        let p = inject(&pod_with(&[], &[(keys::TEMPLATES, "sidecar,one,two")]), &c).unwrap();
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "two");
        assert_eq!(labels["one"], "yes");
        assert_eq!(labels[keys::TLS_MODE], "istio", "the sidecar's labels stay");
        assert_eq!(p.metadata.annotations.as_ref().unwrap()["note"], "one");
        let p2 = inject(&pod_with(&[], &[(keys::TEMPLATES, "sidecar,two,one")]), &c).unwrap();
        assert_eq!(p2.metadata.labels.as_ref().unwrap()["team"], "one");
        // A container a template adds is the template's: listed in the status, the app's
        // default container unchanged. Kubernetes' merge puts the patch's new items first, as
        // `istioctl kube-inject` writes them.
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(names(&spec.containers), ["logger", "app"]);
        assert_eq!(status(&p)["containers"], json!(["logger"]));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[keys::DEFAULT_CONTAINER],
            "app"
        );
    }

    #[test]
    fn the_proxy_stays_last_or_first_after_a_template_adds_containers() {
        let t = [(
            "extra",
            "spec:\n  containers:\n  - name: logger\n    image: busybox\n  initContainers:\n  - name: setup\n    image: busybox\n",
        )];
        let classic = with_templates(SidecarMode::Classic, &t);
        let p = inject(
            &pod_with(&[], &[(keys::TEMPLATES, "sidecar,extra")]),
            &classic,
        )
        .unwrap();
        let spec = p.spec.as_ref().unwrap();
        // What istioctl kube-inject (1.31) writes for this template.
        assert_eq!(names(&spec.containers), ["logger", "app", "istio-proxy"]);
        assert_eq!(
            names(spec.init_containers.as_ref().unwrap()),
            ["setup", "istio-init"]
        );
        assert_eq!(status(&p)["containers"], json!(["logger", "istio-proxy"]));
        assert_eq!(status(&p)["initContainers"], json!(["setup", "istio-init"]));
        let hold = InjectionConfig {
            hold_application_until_proxy_starts: true,
            ..classic
        };
        let p = inject(&pod_with(&[], &[(keys::TEMPLATES, "sidecar,extra")]), &hold).unwrap();
        assert_eq!(
            names(&p.spec.as_ref().unwrap().containers),
            ["istio-proxy", "logger", "app"]
        );
        let native = with_templates(SidecarMode::Native, &t);
        let p = inject(
            &pod_with(&[], &[(keys::TEMPLATES, "sidecar,extra")]),
            &native,
        )
        .unwrap();
        assert_eq!(
            names(p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()),
            ["istio-init", "istio-proxy", "setup"]
        );
    }

    #[test]
    fn with_a_native_sidecar_the_proxy_entry_merges_into_the_init_container() {
        let c = with_templates(
            SidecarMode::Native,
            &[("credential-volume", CREDENTIAL_VOLUME)],
        );
        let p = inject(
            &pod_with(&[], &[(keys::TEMPLATES, "sidecar,credential-volume")]),
            &c,
        )
        .unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(names(&spec.containers), ["app"], "no second istio-proxy");
        let proxy = &spec.init_containers.as_ref().unwrap()[1];
        assert_eq!(proxy.name, names::PROXY);
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            proxy.volume_mounts.as_ref().unwrap()[0].name,
            "application-credentials"
        );
        let s = status(&p);
        assert_eq!(s["initContainers"], json!(["istio-init", "istio-proxy"]));
        assert_eq!(s["containers"], json!([]));
    }

    #[test]
    fn default_templates_apply_when_the_pod_names_none() {
        let c = InjectionConfig {
            default_templates: vec!["sidecar".into(), "credential-volume".into()],
            ..with_templates(
                SidecarMode::Native,
                &[("credential-volume", CREDENTIAL_VOLUME)],
            )
        };
        let p = inject(&pod_with(&[], &[]), &c).unwrap();
        assert_eq!(volumes(&p)[0], "application-credentials");
        // The pod's own list wins over the defaults.
        let p = inject(&pod_with(&[], &[(keys::TEMPLATES, "sidecar")]), &c).unwrap();
        assert!(!volumes(&p).contains(&"application-credentials".to_string()));
        // Re-injecting an injected pod gives the same pod.
        let once = inject(&pod_with(&[], &[]), &c).unwrap();
        let twice = inject(&once, &c).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn templates_meshop_cannot_apply_are_refused_with_the_reason() {
        let c = with_templates(
            SidecarMode::Native,
            &[("extra", "metadata:\n  labels: {a: b}\n")],
        );
        for (value, says) in [
            (
                "sidecar,missing",
                "requested template \"missing\" not found; have sidecar, gateway, grpc-agent, grpc-simple, extra",
            ),
            ("extra", "name sidecar or gateway too"),
            ("grpc-agent,extra", "\"grpc-agent\" template alone"),
            (
                "sidecar,waypoint",
                "meshop does not have Istio's \"waypoint\" template",
            ),
        ] {
            let err = inject(&pod_with(&[], &[(keys::TEMPLATES, value)]), &c)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(says) && err.contains(keys::TEMPLATES),
                "{value}: {err}"
            );
        }
        let bad_default = InjectionConfig {
            default_templates: vec!["extra".into()],
            ..c
        };
        let err = inject(&pod_with(&[], &[]), &bad_default)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("injection.defaultTemplates") && err.contains("sidecar or gateway"),
            "{err}"
        );
    }

    #[test]
    fn the_gateway_template_takes_custom_templates_too() {
        let c = with_templates(
            SidecarMode::Native,
            &[("extra", "metadata:\n  labels: {a: b}\n")],
        );
        let mut pod = pod_with(&[], &[(keys::TEMPLATES, "gateway,extra")]);
        pod.spec.as_mut().unwrap().containers[0].name = names::PROXY.into();
        pod.spec.as_mut().unwrap().containers[0].image = Some("auto".into());
        let p = inject(&pod, &c).unwrap();
        assert_eq!(p.metadata.labels.as_ref().unwrap()["a"], "b");
        assert!(
            p.spec
                .as_ref()
                .unwrap()
                .init_containers
                .iter()
                .flatten()
                .all(|c| c.name != names::INIT)
        );
        assert!(
            !p.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key(keys::TLS_MODE),
            "a gateway still"
        );
    }
}
