//! Apply (I/O only): server-side apply of planned objects with meshop's one field manager.

use kube::Client;
use kube::api::{DynamicObject, Patch, PatchParams};

use crate::render::{
    BUNDLE_VERSION_ANNOTATION, LABEL_MANAGED_BY, MANAGED_BY, Ownership, Rendered,
    parse_bundle_version,
};

/// The one field manager meshop applies with.
pub const FIELD_MANAGER: &str = "meshop";
/// The field manager of the fields meshop sets only when it creates an object
/// ([`Rendered::initial`]). Another controller that later writes them (istiod's `failurePolicy`)
/// takes them over from it, and meshop's regular apply, which never carries them, leaves them be.
pub const INITIAL_FIELD_MANAGER: &str = "meshop-initial";

/// Server-side applies one object, taking over fields someone else changed (that is how drift is
/// undone). Returns the object as the API server stored it.
pub(crate) async fn apply(
    client: &Client,
    object: &Rendered,
) -> Result<DynamicObject, kube::Error> {
    if object.ownership == Ownership::KeepExisting
        && let Some(existing) = object.api(client).get_opt(object.name()).await?
        && keeps_existing(&existing, object)
    {
        return Ok(existing);
    }
    if let Some(initial) = object.initial_patch() {
        let api = object.api(client);
        if api.get_metadata_opt(object.name()).await?.is_none() {
            // Created with the initial fields, which the second apply hands to their own manager
            // before the regular apply below drops them from meshop's.
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(
                object.name(),
                &params,
                &Patch::Apply(&object.creation_object()),
            )
            .await?;
            let params = PatchParams::apply(INITIAL_FIELD_MANAGER).force();
            api.patch(object.name(), &params, &Patch::Apply(&initial))
                .await?;
        }
    }
    object
        .api(client)
        .patch(
            object.name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object.object),
        )
        .await
}

/// Whether an object meshop creates only where absent ([`Ownership::KeepExisting`]) is left as
/// it is found: someone else installed it (it lacks meshop's managed-by label), or it is a newer
/// release than meshop's (its Gateway API bundle version is higher: never a downgrade).
pub fn keeps_existing(existing: &DynamicObject, planned: &Rendered) -> bool {
    let ours = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY);
    if !ours {
        return true;
    }
    let bundle = |o: &DynamicObject| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BUNDLE_VERSION_ANNOTATION))
            .and_then(|v| parse_bundle_version(v))
    };
    match (bundle(existing), bundle(&planned.object)) {
        (Some(there), Some(mine)) => there > mine,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MeshInstallSpec;
    use crate::effective::{Installation, Owner};

    fn planned() -> Rendered {
        let spec: MeshInstallSpec =
            serde_yaml::from_str("profile: ambient\nversion: '1.30'").unwrap();
        let install = Installation::resolve(
            Owner {
                name: "m".into(),
                uid: None,
            },
            &spec,
        )
        .unwrap();
        crate::render::render(&install)
            .unwrap()
            .into_iter()
            .find(|o| o.name() == "gateways.gateway.networking.k8s.io")
            .unwrap()
    }

    fn existing(managed_by: Option<&str>, bundle: &str) -> DynamicObject {
        let mut o = planned().object;
        o.metadata.labels =
            managed_by.map(|m| [(LABEL_MANAGED_BY.to_string(), m.to_string())].into());
        o.metadata.annotations =
            Some([(BUNDLE_VERSION_ANNOTATION.to_string(), bundle.to_string())].into());
        o
    }

    #[test]
    fn someone_elses_or_a_newer_release_is_left_be() {
        let planned = planned();
        // Installed by the user (kubectl apply of the upstream bundle), even an older one.
        assert!(keeps_existing(&existing(None, "v1.4.0"), &planned));
        assert!(keeps_existing(&existing(Some("Helm"), "v1.6.0"), &planned));
        // meshop's own from a newer Istio minor: never downgraded.
        assert!(keeps_existing(
            &existing(Some("meshop"), "v1.6.0"),
            &planned
        ));
        // meshop's own, same or older: kept up to date.
        assert!(!keeps_existing(
            &existing(Some("meshop"), "v1.5.1"),
            &planned
        ));
        assert!(!keeps_existing(
            &existing(Some("meshop"), "v1.4.0"),
            &planned
        ));
    }
}
