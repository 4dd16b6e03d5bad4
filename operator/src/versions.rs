//! The Istio versions meshop knows how to install.
//!
//! A version is supported when meshop's rendering and injection have been written against its
//! ports, flags and environment. Anything else is refused in status rather than guessed at.

/// Versions meshop can install, oldest first.
pub const SUPPORTED: &[&str] = &["1.26.6", "1.27.3", "1.28.2"];

/// The version installed when `spec.version` is left out: the newest supported one.
pub const DEFAULT: &str = "1.28.2";

/// Whether meshop can install this version.
pub fn is_supported(version: &str) -> bool {
    SUPPORTED.contains(&version)
}

/// The version a spec asks for, or meshop's default.
pub fn effective(requested: Option<&str>) -> &str {
    requested.unwrap_or(DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_supported_and_newest() {
        assert!(is_supported(DEFAULT));
        assert_eq!(SUPPORTED.last(), Some(&DEFAULT));
        assert!(!is_supported("1.5.0"));
        assert_eq!(effective(None), DEFAULT);
        assert_eq!(effective(Some("1.27.3")), "1.27.3");
    }
}
