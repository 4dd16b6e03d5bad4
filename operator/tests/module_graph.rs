//! The crate's top-level modules depend on each other in one direction only: a cycle would mean two
//! modules can only be understood (and changed) together, and the lowest layers
//! (api <- profiles <- effective) name exactly what they may use. Dependencies are read from the
//! source: every `crate::<module>` path (grouped imports included) outside comments and
//! `#[cfg(test)]` code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        out.extend(sources(&entry.unwrap().path()));
    }
    out
}

/// (source file, the crate modules it may use). Anything else it names is a layering error.
const LAYERS: &[(&str, &[&str])] = &[
    ("src/versions.rs", &[]),
    ("src/api/mod.rs", &["yaml"]),
    ("src/api/spec.rs", &[]),
    ("src/profiles.rs", &["api"]),
    (
        "src/effective.rs",
        // strategic_merge (a leaf, no crate imports): a custom injection template is checked
        // by merging it as injection will.
        &[
            "api",
            "profiles",
            "versions",
            "revision",
            "istio_proxy",
            "strategic_merge",
        ],
    ),
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

/// The code of a source file: without its `#[cfg(test)]` part and without comments.
fn code(source: &str) -> String {
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut graph = BTreeMap::new();
    for m in &modules {
        let file = src.join(format!("{m}.rs"));
        let path = if file.exists() { file } else { src.join(m) };
        let mut deps = BTreeSet::new();
        for f in sources(&path) {
            let text = std::fs::read_to_string(&f).unwrap();
            deps.extend(
                crate_modules(&code(&text))
                    .into_iter()
                    .filter(|d| d != m && modules.contains(d)),
            );
        }
        graph.insert(m.clone(), deps);
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let graph = graph();
    assert!(graph.len() > 5, "modules found: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle: {}\nwhole graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&g).unwrap(), vec!["a", "b", "c", "a"]);
    assert_eq!(
        crate_modules(&code("use crate::x::Y; // crate::z\n")),
        BTreeSet::from(["x".to_string()])
    );
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
