//! Native or classic sidecar for one pod. `sidecarMode: auto` follows Istio's rule
//! (`ENABLE_NATIVE_SIDECARS=auto`, the default since Istio 1.27): a pod already bound to a node is
//! native when that node's kubelet is 1.33 or newer, any other pod only when every node's kubelet
//! is. The pod annotation `sidecar.istio.io/nativeSidecar` overrides every mode.

use std::collections::HashMap;

use super::{InjectError, keys};
use crate::api::SidecarMode;

/// The first kubelet whose native sidecars Istio relies on: the SidecarContainers feature went GA
/// in Kubernetes 1.33 (beta, on by default, since 1.29).
pub(crate) const NATIVE_SIDECAR_KUBELET: KubeletVersion = KubeletVersion {
    major: 1,
    minor: 33,
};

/// What `auto` means where no nodes can be seen (`meshop inject -f`): native. Every Kubernetes
/// release Istio 1.30 and 1.31 support (1.32 to 1.36) runs native sidecars, 1.32 as a beta
/// feature on by default; see docs/injection.md.
pub(crate) const OFFLINE_AUTO_IS_NATIVE: bool = true;

/// A kubelet's `major.minor`, from `status.nodeInfo.kubeletVersion` (`v1.33.2`, `v1.34.1-eks-a1b2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeletVersion {
    major: u32,
    minor: u32,
}

impl KubeletVersion {
    /// Reads `v<major>.<minor>[.<anything>]`; `None` for anything else.
    pub fn parse(s: &str) -> Option<KubeletVersion> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = s.splitn(3, '.');
        let number = |p: Option<&str>| -> Option<u32> {
            // "33" or "33-gke.100" / "33+": the leading digits.
            let p = p?;
            let end = p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len());
            p[..end].parse().ok()
        };
        Some(KubeletVersion {
            major: number(parts.next())?,
            minor: number(parts.next())?,
        })
    }

    fn runs_native_sidecars(self) -> bool {
        self >= NATIVE_SIDECAR_KUBELET
    }
}

/// Each node's kubelet version, as the webhook's node watch sees them, and how many of them
/// cannot run native sidecars, so a decision costs one lookup however many nodes there are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kubelets {
    /// `None`: the node reports no version or one meshop cannot read; counted as too old, as
    /// Istio does.
    nodes: HashMap<String, Option<KubeletVersion>>,
    too_old: usize,
}

fn too_old(v: Option<KubeletVersion>) -> bool {
    !v.is_some_and(KubeletVersion::runs_native_sidecars)
}

impl Kubelets {
    /// Records (or replaces) node `name`'s kubelet version string.
    pub fn set(&mut self, name: &str, kubelet_version: Option<&str>) {
        let v = kubelet_version.and_then(KubeletVersion::parse);
        if let Some(old) = self.nodes.insert(name.to_string(), v)
            && too_old(old)
        {
            self.too_old -= 1;
        }
        if too_old(v) {
            self.too_old += 1;
        }
    }

    /// Forgets node `name`.
    pub fn remove(&mut self, name: &str) {
        if let Some(old) = self.nodes.remove(name)
            && too_old(old)
        {
            self.too_old -= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Istio's auto rule: the pod's own node if it is bound to one the watch knows, else every
    /// node (a cluster without nodes counts as ready for native sidecars, as in Istio).
    pub fn native_for(&self, node_name: Option<&str>) -> bool {
        if let Some(known) = node_name
            .filter(|n| !n.is_empty())
            .and_then(|n| self.nodes.get(n))
        {
            return !too_old(*known);
        }
        self.too_old == 0
    }
}

impl<'a> FromIterator<(&'a str, Option<&'a str>)> for Kubelets {
    fn from_iter<I: IntoIterator<Item = (&'a str, Option<&'a str>)>>(iter: I) -> Self {
        let mut k = Kubelets::default();
        for (name, version) in iter {
            k.set(name, version);
        }
        k
    }
}

/// Whether this pod's proxy is a native sidecar. `kubelets` is `None` offline.
pub(crate) fn is_native(
    annotation: Option<&str>,
    mode: SidecarMode,
    kubelets: Option<&Kubelets>,
    node_name: Option<&str>,
) -> Result<bool, InjectError> {
    if let Some(v) = annotation {
        return match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(InjectError::annotation(
                keys::NATIVE_SIDECAR,
                v,
                "expected \"true\" or \"false\"",
            )),
        };
    }
    Ok(match mode {
        SidecarMode::Native => true,
        SidecarMode::Classic => false,
        SidecarMode::Auto => match kubelets {
            Some(k) => k.native_for(node_name),
            None => OFFLINE_AUTO_IS_NATIVE,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<KubeletVersion> {
        KubeletVersion::parse(s)
    }

    #[test]
    fn kubelet_versions_are_read_like_kubernetes_writes_them() {
        assert_eq!(v("v1.33.0"), Some(NATIVE_SIDECAR_KUBELET));
        assert_eq!(
            v("v1.34.1-eks-113cf36"),
            Some(KubeletVersion {
                major: 1,
                minor: 34
            })
        );
        assert_eq!(
            v("1.32.9-gke.1072000"),
            Some(KubeletVersion {
                major: 1,
                minor: 32
            })
        );
        assert_eq!(
            v("v1.33+"),
            Some(KubeletVersion {
                major: 1,
                minor: 33
            })
        );
        for bad in ["", "v", "latest", "v1", "v.33.1", "vx.y.z"] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
        assert!(v("v1.33.0").unwrap().runs_native_sidecars());
        assert!(v("v2.0.0").unwrap().runs_native_sidecars());
        assert!(!v("v1.32.9").unwrap().runs_native_sidecars());
        assert!(!v("v1.9.0").unwrap().runs_native_sidecars());
    }

    #[test]
    fn a_bound_pod_follows_its_node_and_others_follow_every_node() {
        let mut k: Kubelets = [("new", Some("v1.34.1")), ("old", Some("v1.32.4"))]
            .into_iter()
            .collect();
        assert!(k.native_for(Some("new")));
        assert!(!k.native_for(Some("old")));
        assert!(
            !k.native_for(None),
            "one old node keeps unbound pods classic"
        );
        assert!(
            !k.native_for(Some("unknown")),
            "an unknown node falls back to all"
        );
        assert!(!k.native_for(Some("")));
        k.set("old", Some("v1.33.0"));
        assert!(k.native_for(None), "the upgraded node no longer counts");
        k.set("weird", Some("not-a-version"));
        assert!(!k.native_for(None), "an unreadable version counts as old");
        assert!(!k.native_for(Some("weird")));
        k.remove("weird");
        assert!(k.native_for(None));
        k.set("bare", None);
        assert!(!k.native_for(None));
        k.remove("bare");
        k.remove("never-seen");
        assert_eq!(k.len(), 2);
        assert!(Kubelets::default().native_for(None), "no nodes: native");
    }

    #[test]
    fn the_too_old_count_survives_any_order_of_updates() {
        let mut k = Kubelets::default();
        let versions = [Some("v1.32.0"), Some("v1.33.1"), None, Some("junk")];
        for i in 0..200usize {
            let name = format!("n{}", i % 7);
            if i % 5 == 0 {
                k.remove(&name);
            } else {
                k.set(&name, versions[i % versions.len()]);
            }
            let counted = k.nodes.values().filter(|v| too_old(**v)).count();
            assert_eq!(k.too_old, counted, "after step {i}");
        }
    }

    #[test]
    fn the_annotation_overrides_every_mode() {
        let old: Kubelets = [("n", Some("v1.30.0"))].into_iter().collect();
        for mode in [SidecarMode::Native, SidecarMode::Classic, SidecarMode::Auto] {
            assert!(is_native(Some("true"), mode, Some(&old), None).unwrap());
            assert!(!is_native(Some("false"), mode, None, None).unwrap());
        }
        let e = is_native(Some("yes"), SidecarMode::Auto, None, None).unwrap_err();
        assert!(e.to_string().contains(keys::NATIVE_SIDECAR), "{e}");
    }

    #[test]
    fn modes_without_the_annotation() {
        let old: Kubelets = [("n", Some("v1.30.0"))].into_iter().collect();
        let new: Kubelets = [("n", Some("v1.35.0"))].into_iter().collect();
        assert!(is_native(None, SidecarMode::Native, Some(&old), None).unwrap());
        assert!(!is_native(None, SidecarMode::Classic, Some(&new), None).unwrap());
        assert!(!is_native(None, SidecarMode::Auto, Some(&old), None).unwrap());
        assert!(is_native(None, SidecarMode::Auto, Some(&new), Some("n")).unwrap());
        assert!(
            is_native(None, SidecarMode::Auto, None, None).unwrap(),
            "offline auto is native"
        );
    }
}
