//! Every generated file in the repository is exactly what the code generates now. One table
//! (`meshop::generated::files`) lists them; `make generate` writes them all from it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(on_disk: &str, generated: &str) -> String {
    let mut disk = on_disk.lines();
    let mut fresh = generated.lines();
    for n in 1.. {
        match (disk.next(), fresh.next()) {
            (None, None) => return "only the line endings differ".into(),
            (a, b) if a != b => {
                return format!("line {n}: on disk {a:?}, generated {b:?}");
            }
            _ => {}
        }
    }
    unreachable!()
}

#[test]
fn every_generated_file_is_current() {
    let root = root();
    let mut stale = Vec::new();
    for file in meshop::generated::files() {
        let on_disk = std::fs::read_to_string(root.join(&file.path)).ok();
        let generated = match file.generate(on_disk.as_deref()) {
            Ok(text) => text,
            Err(e) => {
                stale.push(format!("{}: cannot generate: {e:#}", file.path));
                continue;
            }
        };
        match on_disk {
            None => stale.push(format!("{}: missing", file.path)),
            Some(text) if text != generated => stale.push(format!(
                "{}: {}",
                file.path,
                first_difference(&text, &generated)
            )),
            Some(_) => {}
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are stale; run `make generate` and commit the result:\n{}",
        stale.join("\n")
    );
}

/// A file added to a generated directory without an entry in the table would never be checked.
#[test]
fn the_table_covers_every_generated_directory() {
    let listed: BTreeSet<String> = meshop::generated::files()
        .iter()
        .map(|f| f.path.clone())
        .collect();
    for dir in ["crds", "operator/tests/golden"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(
                listed.contains(&path),
                "{path} is not in meshop::generated::files()"
            );
        }
    }
    for path in ["deploy/crd.yaml", "deploy/rbac.yaml", "docs/profiles.md"] {
        assert!(listed.contains(path), "{path} is not in the table");
    }
}

/// `make generate` runs the generator over the same table, and the old targets still work.
#[test]
fn make_generate_writes_the_table() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let recipe = |target: &str| -> String {
        let start = makefile
            .lines()
            .position(|l| l.starts_with(&format!("{target}:")))
            .unwrap_or_else(|| panic!("no `{target}` target in the Makefile"));
        makefile
            .lines()
            .skip(start)
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        recipe("generate").contains("--example generate"),
        "{}",
        recipe("generate")
    );
    for alias in ["crds", "golden"] {
        assert!(
            recipe(alias).starts_with(&format!("{alias}: generate")),
            "{}",
            recipe(alias)
        );
    }
    assert!(Path::new(&root().join("operator/examples/generate.rs")).exists());
}
