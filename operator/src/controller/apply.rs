//! Apply (I/O only): server-side apply of planned objects with meshop's one field manager.

use kube::Client;
use kube::api::{DynamicObject, Patch, PatchParams};

use crate::render::Rendered;

/// The one field manager meshop applies with.
pub const FIELD_MANAGER: &str = "meshop";

/// Server-side applies one object, taking over fields someone else changed (that is how drift is
/// undone). Returns the object as the API server stored it.
pub(crate) async fn apply(
    client: &Client,
    object: &Rendered,
) -> Result<DynamicObject, kube::Error> {
    object
        .api(client)
        .patch(
            object.name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object.object),
        )
        .await
}
