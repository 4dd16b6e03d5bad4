//! Generated sections of the docs that tests keep true: a section between a BEGIN and an END
//! line is what a test computes; the test fails when the document says otherwise, and
//! `MESHOP_BLESS=1` rewrites it instead, once the change is meant.

use std::collections::BTreeSet;
use std::path::Path;

/// The section of `doc` (a file) between the lines `begin` and `end`.
pub fn current(doc: &Path, begin: &str, end: &str) -> String {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    match locate(&text, begin, end) {
        Some((from, to)) => text[from..to].to_string(),
        None => panic!(
            "{} has no generated section from {begin:?} to {end:?}",
            doc.display()
        ),
    }
}

fn locate(text: &str, begin: &str, end: &str) -> Option<(usize, usize)> {
    let from = text.find(begin)? + begin.len();
    let to = from + text[from..].find(end)?;
    Some((from, to))
}

/// Checks that the section of `doc` between `begin` and `end` is `generated`: with
/// `MESHOP_BLESS` set, writes it; otherwise panics listing the lines only the document has and
/// those only `generated` has. `details` names where the full results are.
pub fn check(doc: &Path, begin: &str, end: &str, generated: &str, details: &Path) {
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let Some((from, to)) = locate(&text, begin, end) else {
        panic!(
            "{} has no generated section from {begin:?} to {end:?}",
            doc.display()
        );
    };
    let current = &text[from..to];
    if current == generated {
        return;
    }
    if std::env::var_os("MESHOP_BLESS").is_some() {
        let new = format!("{}{generated}{}", &text[..from], &text[to..]);
        std::fs::write(doc, new).unwrap();
        println!("MESHOP_BLESS: wrote {}", doc.display());
        return;
    }
    let old: BTreeSet<&str> = current.lines().collect();
    let new: BTreeSet<&str> = generated.lines().collect();
    let list = |a: &BTreeSet<&str>, b: &BTreeSet<&str>| {
        a.difference(b)
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    };
    panic!(
        "the outcomes differ from {} (rerun with MESHOP_BLESS=1 to rewrite it once the change is \
         meant; every result is in {}):\nin the document only:\n  {}\nnow:\n  {}",
        doc.display(),
        details.display(),
        list(&old, &new),
        list(&new, &old)
    );
}

/// The reason a new row of a generated table gets when blessed: a test fails until a person
/// writes the real one.
pub const PENDING: &str = "pending: write the reason";

/// The reasons of the rows of a generated section's tables (lines starting with a backquoted first
/// cell; the reason is their last cell), by the row without its reason.
pub fn reasons(section: &str) -> std::collections::BTreeMap<String, String> {
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let (row, reason) = l.strip_suffix(" |")?.rsplit_once(" | ")?;
            Some((row.to_string(), reason.to_string()))
        })
        .collect()
}
