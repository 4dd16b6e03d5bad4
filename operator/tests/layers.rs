//! Modules depend one way: api <- profiles <- effective <- render <- everything that uses them.
//! A module lower down must not reach up (profiles once imported effective for a docs table,
//! making the two depend on each other). The check reads the sources for `crate::<module>` paths.

use std::collections::BTreeSet;
use std::path::Path;

/// (source file, the crate modules it may use). Anything else it names is a layering error.
const LAYERS: &[(&str, &[&str])] = &[
    ("src/versions.rs", &[]),
    ("src/api/mod.rs", &["yaml"]),
    ("src/api/spec.rs", &[]),
    ("src/profiles.rs", &["api"]),
    ("src/effective.rs", &["api", "profiles", "versions"]),
];

/// The top-level modules a source file names through `crate::`, including grouped imports such
/// as `crate::{api::X, profiles}`.
fn crate_modules(source: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut segment_start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[segment_start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[segment_start..i]));
                        segment_start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

#[test]
fn the_parser_sees_plain_and_grouped_paths() {
    let src = "use crate::api::X;\nuse crate::{effective::{A, B}, render,\n versions};\nlet _ = crate::k8s::f();";
    let got: Vec<_> = crate_modules(src).into_iter().collect();
    assert_eq!(got, ["api", "effective", "k8s", "render", "versions"]);
}

#[test]
fn lower_modules_do_not_reach_up() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    for (file, allowed) in LAYERS {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        for module in crate_modules(&source) {
            if !allowed.contains(&module.as_str()) {
                failures.push(format!(
                    "{file} uses crate::{module} (allowed: {allowed:?})"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
