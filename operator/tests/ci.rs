//! What CI runs: `.ci/run` checks formatting and clippy (`make lint`, fast) before the tests.

use std::path::PathBuf;

fn read(path: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path),
    )
    .unwrap()
}

/// The commands of a shell script, without comments and blank lines.
fn commands(script: &str) -> Vec<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn ci_runs_lint_then_test() {
    let run = commands(&read(".ci/run"));
    let lint = run.iter().position(|l| l == "make lint");
    let test = run.iter().position(|l| l == "make test");
    assert!(
        matches!((lint, test), (Some(l), Some(t)) if l < t),
        ".ci/run must run `make lint` and then `make test`: {run:?}"
    );
}

#[test]
fn lint_checks_formatting_and_clippy_warnings() {
    let makefile = read("Makefile");
    let recipe: Vec<&str> = makefile
        .lines()
        .skip_while(|l| !l.starts_with("lint:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert!(
        recipe.iter().any(|l| l.contains("fmt --all -- --check")),
        "{recipe:?}"
    );
    assert!(
        recipe
            .iter()
            .any(|l| l.contains("clippy --workspace --all-targets") && l.ends_with("-D warnings")),
        "{recipe:?}"
    );
}
