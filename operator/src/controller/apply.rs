//! Apply (I/O only): server-side apply of planned objects with meshop's one field manager.

use kube::Client;
use kube::api::{DynamicObject, Patch, PatchParams};

use crate::render::Rendered;

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
