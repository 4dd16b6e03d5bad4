//! The one YAML writer for everything meshop generates (the CRD, deploy/, `meshop render`, golden
//! files, the mesh config istiod reads).
//!
//! serde_yaml writes YAML 1.2, where `off`, `yes`, `0777`, `12:30` or `2001-12-14` are plain
//! strings, so it leaves them unquoted. kubectl, Go's yaml.v2 / sigs.k8s.io/yaml and PyYAML read
//! YAML 1.1, where those are booleans, numbers and timestamps: an enum value `off` reaches the API
//! server as `false`. This writer is serde_yaml's output with every such string single-quoted, so
//! the text means the same to both readers and differs from serde_yaml's only in those quotes.

use serde::Serialize;
use serde_yaml::{Mapping, Value};

/// `value` as one YAML document (no leading `---`), safe for YAML 1.1 and 1.2 readers.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_yaml::Error> {
    let mut tree = serde_yaml::to_value(value)?;
    let mut quoted = Vec::new();
    collect_ambiguous(&tree, &mut quoted);
    if quoted.is_empty() {
        return serde_yaml::to_string(&tree);
    }
    // Each ambiguous string becomes a marker that serde_yaml writes plain, then is swapped
    // for the quoted original; a marker prefix that occurs nowhere else keeps the swap exact.
    let prefix = (0u32..)
        .map(|salt| format!("meshopyamlquoted{salt}x"))
        .find(|p| !mentions(&tree, p))
        .expect("some salt is unused");
    let marker = |i: usize| format!("{prefix}{i:08}");
    let mut next = 0;
    replace_ambiguous(&mut tree, &mut |_| {
        next += 1;
        marker(next - 1)
    });
    let text = serde_yaml::to_string(&tree)?;
    let mut out = String::with_capacity(text.len() + 2 * quoted.len());
    let mut rest = text.as_str();
    let mut swapped = 0;
    while let Some(at) = rest.find(&prefix) {
        let end = at + prefix.len() + 8;
        let original = rest
            .get(at + prefix.len()..end)
            .and_then(|digits| digits.parse::<usize>().ok())
            .and_then(|i| quoted.get(i))
            .ok_or_else(lost_track)?;
        out.push_str(&rest[..at]);
        out.push_str(&single_quoted(original));
        rest = &rest[end..];
        swapped += 1;
    }
    if swapped != quoted.len() {
        return Err(lost_track());
    }
    out.push_str(rest);
    Ok(out)
}

/// Several documents, each introduced by `---`, as `kubectl apply -f` takes them.
pub fn documents<'a, T, I>(values: I) -> Result<String, serde_yaml::Error>
where
    T: Serialize + ?Sized + 'a,
    I: IntoIterator<Item = &'a T>,
{
    let mut out = String::new();
    for value in values {
        out.push_str("---\n");
        out.push_str(&to_string(value)?);
    }
    Ok(out)
}

/// Whether a YAML 1.1 reader (or yaml.v2, which also takes `1e3` and `0o17`) would read `s`,
/// written as a plain scalar, as something other than a string. Errs on the side of quoting: a
/// needless pair of quotes costs nothing, a missing one changes the value.
pub fn yaml11_ambiguous(s: &str) -> bool {
    const WORDS: [&str; 10] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    if s.is_empty() || s == "<<" || s == "=" || WORDS.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        return true;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | ".nan") {
        return true;
    }
    // 0b1010, 0o17, 0x1F (with _ separators).
    if let Some(digits) = ["0b", "0o", "0x"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
    {
        return !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit() || c == '_');
    }
    // Decimal, octal (0777), sexagesimal (12:30) ints and floats (1.5, .5, 1e3, 1_000.5e-3), and
    // dates (2001-12-14): digits with these separators only.
    let starts_numeric = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if starts_numeric
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | 'e' | 'E' | '+' | '-'))
    {
        return true;
    }
    // Timestamps with a time: 2001-12-14t21:59:43.10-05:00, 2001-12-14 21:59:43.10 -5.
    let b = s.as_bytes();
    b.len() > 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && s.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | '+' | ' ' | '\t' | 'T' | 't' | 'Z')
        })
}

fn lost_track() -> serde_yaml::Error {
    serde::ser::Error::custom("YAML quoting lost track of a marker")
}

fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn collect_ambiguous(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if yaml11_ambiguous(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|v| collect_ambiguous(v, out)),
        Value::Mapping(map) => {
            for (k, v) in map {
                collect_ambiguous(k, out);
                collect_ambiguous(v, out);
            }
        }
        Value::Tagged(tagged) => collect_ambiguous(&tagged.value, out),
        _ => {}
    }
}

/// Replaces ambiguous strings in the same order [`collect_ambiguous`] found them; mappings keep
/// their key order.
fn replace_ambiguous(value: &mut Value, next: &mut impl FnMut(&str) -> String) {
    match value {
        Value::String(s) if yaml11_ambiguous(s) => *s = next(s),
        Value::Sequence(items) => items.iter_mut().for_each(|v| replace_ambiguous(v, next)),
        Value::Mapping(map) => {
            let old = std::mem::take(map);
            let mut new = Mapping::with_capacity(old.len());
            for (mut k, mut v) in old {
                replace_ambiguous(&mut k, next);
                replace_ambiguous(&mut v, next);
                new.insert(k, v);
            }
            *map = new;
        }
        Value::Tagged(tagged) => replace_ambiguous(&mut tagged.value, next),
        _ => {}
    }
}

/// Whether any string (or tag) in `value` contains `needle`.
fn mentions(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Sequence(items) => items.iter().any(|v| mentions(v, needle)),
        Value::Mapping(map) => map
            .iter()
            .any(|(k, v)| mentions(k, needle) || mentions(v, needle)),
        Value::Tagged(tagged) => {
            tagged.tag.to_string().contains(needle) || mentions(&tagged.value, needle)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_1_1_look_alikes_are_quoted() {
        let doc = json!({
            "logLevel": "off", "y": "yes", "octal": "0777", "time": "12:30", "exp": "1e3",
            "date": "2001-12-14", "stamp": "2001-12-14 21:59:43.10 -5", "version": "1.28.2",
            "upper": "TRUE", "mixed": "oFf", "merge": "<<", "hex": "0X1f", "inf": "-.Inf",
        });
        let text = to_string(&doc).unwrap();
        for line in [
            "logLevel: 'off'",
            "'y': 'yes'",
            "octal: '0777'",
            "time: '12:30'",
            "exp: '1e3'",
            "date: '2001-12-14'",
            "stamp: '2001-12-14 21:59:43.10 -5'",
            "version: '1.28.2'",
            "upper: 'TRUE'",
            "mixed: 'oFf'",
            "merge: '<<'",
            "hex: '0X1f'",
            "inf: '-.Inf'",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn everything_else_is_written_as_serde_yaml_writes_it() {
        let doc = json!({
            "z": [1, 2.5, true, null, "100m", "istio-system", "it's", "line\nbreak\n"],
            "a": {"empty": {}, "list": [], "text": "docker.io/istio/pilot:1.28.2", "count": 3},
            "offline": "yesterday", "key with spaces": "- dash",
        });
        assert_eq!(
            to_string(&doc).unwrap(),
            serde_yaml::to_string(&doc).unwrap()
        );
    }

    #[test]
    fn key_order_and_quotes_inside_strings_survive() {
        // serde_yaml::Mapping keeps insertion order; a renamed key must stay in place.
        let mut map = Mapping::new();
        map.insert("b".into(), "on".into());
        map.insert("off".into(), "it's".into());
        map.insert("a".into(), "2001-12-14t21:59:43.10-05:00".into());
        let text = to_string(&map).unwrap();
        assert_eq!(
            text,
            "b: 'on'\n'off': it's\na: '2001-12-14t21:59:43.10-05:00'\n"
        );
    }

    #[test]
    fn a_marker_look_alike_in_the_data_is_left_alone() {
        let doc = json!({"a": "meshopyamlquoted0x00000000", "b": "no"});
        let text = to_string(&doc).unwrap();
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, doc);
        assert!(text.contains("b: 'no'"), "{text}");
    }

    #[test]
    fn documents_are_separated() {
        let text = documents([&json!({"a": "off"}), &json!({"b": 1})]).unwrap();
        assert_eq!(text, "---\na: 'off'\n---\nb: 1\n");
    }

    #[test]
    fn ordinary_strings_are_not_ambiguous() {
        for s in [
            "offline",
            "100m",
            "128Mi",
            "istio-system",
            "v1",
            "a:b",
            "-",
            "2001-abc",
            "nope",
        ] {
            assert!(!yaml11_ambiguous(s), "{s}");
        }
    }
}
