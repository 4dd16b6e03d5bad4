//! Control-plane revisions. A MeshInstall's `spec.revision` is `""` for the default revision or a
//! DNS label. Wherever Istio shows a revision (the `istio.io/rev` label, webhook names, the
//! injector's status annotation, the webhook's lookup key) the default revision is called
//! `default`; [`name`] is that rule, and every such place goes through it.
//!
//! Which revision a pod goes to is [`crate::inject::select_revision`].

/// What the default revision (`spec.revision: ""`) is called outside the spec.
pub(crate) const DEFAULT: &str = "default";

/// The name a revision is known by: [`DEFAULT`] for the default revision (`""`), else itself.
/// A label value (`istio.io/rev=default` is the default revision's tag) goes through here too
/// before it is compared with a revision.
pub(crate) fn name(revision: &str) -> &str {
    if revision.is_empty() {
        DEFAULT
    } else {
        revision
    }
}

/// The revision a revision-based install runs a release under: the release with dots turned
/// into dashes (`1.31.1` -> `1-31-1`), after `prefix-` when `spec.revision` is set. It is made
/// from the *resolved* release, never from `spec.version` as written, so an alias (`1.31`) names
/// the release it means today and a move of the alias to a newer patch is a new revision (a
/// canary), never an in-place change of the running one.
pub(crate) fn versioned(prefix: &str, resolved_version: &str) -> String {
    let release = resolved_version.replace('.', "-");
    if prefix.is_empty() {
        release
    } else {
        format!("{prefix}-{release}")
    }
}

/// The suffix Istio appends to revisioned object names: `""` or `-<revision>`.
pub(crate) fn suffix(revision: &str) -> String {
    if revision.is_empty() {
        String::new()
    } else {
        format!("-{revision}")
    }
}

/// istiod's Deployment and Service name: `istiod` or `istiod-<revision>`.
pub(crate) fn istiod(revision: &str) -> String {
    format!("istiod{}", suffix(revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisioned_names_carry_the_revision() {
        assert_eq!(suffix(""), "");
        assert_eq!(suffix("canary"), "-canary");
        assert_eq!(istiod(""), "istiod");
        assert_eq!(istiod("1-31-1"), "istiod-1-31-1");
    }

    #[test]
    fn versioned_revisions_name_the_release() {
        assert_eq!(versioned("", "1.31.1"), "1-31-1");
        assert_eq!(versioned("prod", "1.30.5"), "prod-1-30-5");
    }

    #[test]
    fn the_empty_revision_is_called_default() {
        assert_eq!(name(""), "default");
        assert_eq!(name("default"), "default");
        assert_eq!(name("canary"), "canary");
    }
}
