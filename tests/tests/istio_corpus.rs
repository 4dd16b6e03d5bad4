//! Istio's own injection inputs as a conformance corpus: every workload of the 100 input files of
//! Istio's sidecar-injection tests (`pkg/kube/inject/testdata/inject/*.yaml`, release-1.31; a copy
//! in `../shared/judges/istio-testdata/inject/`, Lists and multi-document files split into their
//! workloads) is injected by `meshop inject` and by `istioctl kube-inject` under each setting of
//! `meshop_testenv::conformance::SETTINGS` (the same machinery as `conformance.rs`: istioctl fed
//! the injector config, values and mesh config of `istioctl manifest generate`, the pod templates
//! compared by value, container and env order included), and each workload's outcome is one of:
//! identical, differs, refused by both, left alone by both, or one injector doing what the other
//! does not.
//!
//! The outcomes are a generated section of docs/istio-compatibility.md ("Istio's injection
//! inputs"): figures per setting, and every workload that is not identical with the categories of
//! its difference. A category is a hand-written row of that document's "Categories of difference"
//! table: a rule (a field path, a refusal message, the workload's kind or an annotation) and the
//! reason. The test fails when the outcomes differ from the section (in either direction: a
//! workload that became identical must leave the table), when a difference or disagreement matches
//! no category, and when a category matches nothing. `MESHOP_BLESS=1` rewrites the section.
//!
//! Some inputs carry annotations that Istio's own test gives per-file settings for (custom
//! templates, `.iop.yaml` files); here every input gets the setting's configuration, as an
//! offline `istioctl kube-inject` with those files sees it.
//!
//! istioctl runs once per setting over all workloads; a batch it refuses is split in halves until
//! the refused workloads stand alone. The four settings run in parallel threads. Every difference,
//! with both values, is written to `$CARGO_TARGET_TMPDIR/istio-corpus.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use meshop_testenv::conformance::{
    Difference, Injectors, SETTINGS, Setting, differences, differences_within_json, docs, matches,
    pod_template, show,
};
use meshop_testenv::istio::IstioBinaries;
use serde_json::Value;

const BEGIN: &str = "<!-- BEGIN GENERATED: Istio's injection inputs (MESHOP_BLESS=1 cargo test -p meshop-testenv --test istio_corpus) -->\n";
const END: &str = "<!-- END GENERATED -->";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc_path() -> PathBuf {
    manifest_dir().join("../docs/istio-compatibility.md")
}

/// One workload of the corpus.
struct Workload {
    /// The file name, and `#<name>` when the file holds more than one workload.
    id: String,
    kind: String,
    /// The workload alone, as YAML (YAML 1.1-safe: Go's reader takes it as written).
    yaml: String,
    /// Its pod template before injection.
    template: Value,
}

impl Workload {
    fn annotations(&self) -> impl Iterator<Item = (&String, &str)> {
        self.template["metadata"]["annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
    }
}

/// Every workload of Istio's input files: Lists and multi-document files split; documents
/// without a pod template (Services) left out.
fn corpus() -> Vec<Workload> {
    let dir = manifest_dir().join("../../shared/judges/istio-testdata/inject");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        100,
        "Istio's 100 input files in {}",
        dir.display()
    );
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut items = Vec::new();
        for doc in docs(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            match doc["kind"].as_str() {
                Some("List") => items.extend(doc["items"].as_array().cloned().unwrap_or_default()),
                _ => items.push(doc),
            }
        }
        items.retain(|i| i["kind"] != "Service");
        let several = items.len() > 1;
        for item in items {
            let template = pod_template(&item)
                .unwrap_or_else(|| panic!("{name}: a {} without a pod template", item["kind"]));
            let id = match several {
                true => format!("{name}#{}", item["metadata"]["name"].as_str().unwrap()),
                false => name.clone(),
            };
            out.push(Workload {
                id,
                kind: item["kind"].as_str().unwrap_or_default().to_string(),
                yaml: meshop::yaml::to_string(&item).unwrap(),
                template,
            });
        }
    }
    out
}

/// What one injector made of a workload.
#[derive(Clone, Debug)]
enum Side {
    /// The pod template it wrote.
    Injected(Value),
    /// Written back without a change to its pod template.
    LeftAlone,
    /// Its error message.
    Refused(String),
}

impl Side {
    fn of(workload: &Workload, output: &Value) -> Side {
        let template = pod_template(output).unwrap_or(Value::Null);
        match differences(&workload.template, &template).1.is_empty() {
            true => Side::LeftAlone,
            false => Side::Injected(template),
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Side::Injected(_) => "injects",
            Side::LeftAlone => "leaves alone",
            Side::Refused(_) => "refuses",
        }
    }
}

/// How many times the test ran `istioctl kube-inject`.
static ISTIOCTL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// `istioctl kube-inject` of `batch` as one multi-document file; a refused batch is split in
/// halves until each refused workload stands alone.
fn istioctl_batch(injectors: &Injectors, dir: &Path, batch: &[&Workload]) -> Vec<Side> {
    let input = dir.join(format!("batch-{}-{}.yaml", batch[0].id, batch.len()));
    let text: Vec<&str> = batch.iter().map(|w| w.yaml.as_str()).collect();
    std::fs::write(&input, text.join("---\n")).unwrap();
    ISTIOCTL_RUNS.fetch_add(1, Ordering::Relaxed);
    let out = injectors.istioctl_inject(&input).unwrap();
    if out.status.success() {
        let written = docs(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(
            written.len(),
            batch.len(),
            "istioctl wrote one document per workload"
        );
        return batch
            .iter()
            .zip(&written)
            .map(|(w, doc)| Side::of(w, doc))
            .collect();
    }
    if let [_] = batch {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return vec![Side::Refused(stderr.trim().to_string())];
    }
    let (a, b) = batch.split_at(batch.len() / 2);
    let mut sides = istioctl_batch(injectors, dir, a);
    sides.extend(istioctl_batch(injectors, dir, b));
    sides
}

fn meshop_one(injectors: &Injectors, dir: &Path, workload: &Workload) -> Side {
    let input = dir.join(format!("meshop-{}.yaml", workload.id));
    std::fs::write(&input, &workload.yaml).unwrap();
    match injectors.meshop_inject(&input) {
        Ok(text) => Side::of(workload, &docs(&text).unwrap()[0]),
        Err(e) => Side::Refused(format!("{e:#}")),
    }
}

/// Both injectors' results for one workload under one setting.
struct Compared {
    istioctl: Side,
    meshop: Side,
    /// When both inject: how many fields were compared, and the differences.
    fields: usize,
    differences: Vec<Difference>,
}

impl Compared {
    /// The outcome, as the generated table writes it.
    fn outcome(&self) -> String {
        match (&self.istioctl, &self.meshop) {
            (Side::Injected(_), Side::Injected(_)) if self.differences.is_empty() => {
                "identical".into()
            }
            (Side::Injected(_), Side::Injected(_)) => "differs".into(),
            (Side::Refused(_), Side::Refused(_)) => "refused by both".into(),
            (Side::LeftAlone, Side::LeftAlone) => "left alone by both".into(),
            (i, m) => format!("istioctl {}, meshop {}", i.verb(), m.verb()),
        }
    }
}

fn run_setting(
    bin: &IstioBinaries,
    setting: &Setting,
    corpus: &[Workload],
    dir: &Path,
) -> Vec<Compared> {
    let dir = dir.join(setting.name.replace('/', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let injectors = Injectors::new(bin, setting, &dir).unwrap();
    let all: Vec<&Workload> = corpus.iter().collect();
    let theirs = istioctl_batch(&injectors, &dir, &all);
    corpus
        .iter()
        .zip(theirs)
        .map(|(w, istioctl)| {
            let meshop = meshop_one(&injectors, &dir, w);
            let (fields, differences) = match (&istioctl, &meshop) {
                (Side::Injected(a), Side::Injected(b)) => differences_within_json(a, b),
                _ => (0, Vec::new()),
            };
            Compared {
                istioctl,
                meshop,
                fields,
                differences,
            }
        })
        .collect()
}

/// What a category's rule looks at.
#[derive(Debug)]
enum Rule {
    /// A differing field whose path matches (`*`: any run of characters) and, when given, whose
    /// values (JSON as the comparison prints them, `-` for absent) match `istioctl -> meshop`.
    Path(String, Option<(String, String)>),
    /// meshop's refusal message contains this.
    MeshopError(String),
    /// istioctl's refusal message contains this.
    IstioctlError(String),
    /// The workload's kind.
    Kind(String),
    /// The pod template has this annotation (with a value matching the pattern, if given): every
    /// difference of the workload belongs here.
    Annotation(String, Option<String>),
}

/// A row of "Categories of difference": the category, its rule, and the reason.
#[derive(Debug)]
struct Category {
    name: String,
    rule: Rule,
}

impl Category {
    fn parse(row: &str) -> Result<Category, String> {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let code = |c: &str| c.strip_prefix('`')?.strip_suffix('`').map(str::to_string);
        let (Some(name), Some(rule), Some(_reason)) = (
            cells.first().and_then(|c| code(c)),
            cells.get(1).and_then(|c| code(c)),
            cells.get(2).filter(|r| !r.is_empty()),
        ) else {
            return Err(format!(
                "{row}: a row has three cells: `category`, `rule`, reason"
            ));
        };
        let (what, arg) = rule.split_once(' ').unwrap_or((&rule, ""));
        let arg = arg.to_string();
        let rule = match what {
            "path" => match arg.split_once(' ') {
                Some((path, values)) => {
                    let Some((a, b)) = values.split_once(" -> ") else {
                        return Err(format!(
                            "{row}: values are `<istioctl> -> <meshop>` after the path"
                        ));
                    };
                    Rule::Path(path.into(), Some((a.into(), b.into())))
                }
                None => Rule::Path(arg, None),
            },
            "meshop-error" => Rule::MeshopError(arg),
            "istioctl-error" => Rule::IstioctlError(arg),
            "kind" => Rule::Kind(arg),
            "annotation" => match arg.split_once('=') {
                Some((k, v)) => Rule::Annotation(k.into(), Some(v.into())),
                None => Rule::Annotation(arg, None),
            },
            other => {
                return Err(format!(
                    "{row}: unknown rule {other:?} (path, meshop-error, istioctl-error, kind, annotation)"
                ));
            }
        };
        Ok(Category { name, rule })
    }

    /// Whether the rule holds for the workload as a whole (kind, annotation).
    fn holds_for(&self, w: &Workload) -> bool {
        match &self.rule {
            Rule::Kind(k) => &w.kind == k,
            Rule::Annotation(key, value) => w
                .annotations()
                .any(|(k, v)| k == key && value.as_ref().is_none_or(|p| matches(p, v))),
            _ => false,
        }
    }

    /// Whether the category explains this difference of a workload both inject.
    fn explains_difference(&self, w: &Workload, d: &Difference) -> bool {
        match &self.rule {
            Rule::Path(p, values) => {
                matches(p, &d.path)
                    && values.as_ref().is_none_or(|(a, b)| {
                        matches(a, &show(&d.istioctl)) && matches(b, &show(&d.meshop))
                    })
            }
            _ => self.holds_for(w),
        }
    }

    /// Whether the category explains why the two injectors disagree on (or both refuse) a
    /// workload.
    fn explains_outcome(&self, w: &Workload, r: &Compared) -> bool {
        match (&self.rule, &r.istioctl, &r.meshop) {
            (Rule::Path(..), _, _) => false,
            (Rule::MeshopError(s), _, Side::Refused(e)) => e.contains(s.as_str()),
            (Rule::IstioctlError(s), Side::Refused(e), _) => e.contains(s.as_str()),
            (Rule::MeshopError(_) | Rule::IstioctlError(_), _, _) => false,
            _ => self.holds_for(w),
        }
    }
}

/// The "Categories of difference" table of docs/istio-compatibility.md.
fn categories(doc: &str) -> Vec<Category> {
    let section = doc
        .split("\n### ")
        .find(|s| s.starts_with("Categories of difference"))
        .expect("docs/istio-compatibility.md has a section \"### Categories of difference\"");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| Category::parse(l).unwrap_or_else(|e| panic!("docs/istio-compatibility.md: {e}")))
        .collect()
}

/// The categories of one workload's outcome under one setting (empty for identical and left
/// alone by both), or what no category explains.
fn categorise(
    cats: &[Category],
    w: &Workload,
    r: &Compared,
    used: &mut BTreeSet<usize>,
) -> Result<BTreeSet<String>, Vec<String>> {
    let mut names = BTreeSet::new();
    let mut unexplained = Vec::new();
    match r.outcome().as_str() {
        "identical" | "left alone by both" => {}
        "differs" => {
            for d in &r.differences {
                match cats.iter().position(|c| c.explains_difference(w, d)) {
                    Some(i) => {
                        used.insert(i);
                        names.insert(cats[i].name.clone());
                    }
                    None => unexplained.push(format!(
                        "{}\n      istioctl: {}\n      meshop:   {}",
                        d.path,
                        show(&d.istioctl),
                        show(&d.meshop)
                    )),
                }
            }
        }
        _ => match cats.iter().position(|c| c.explains_outcome(w, r)) {
            Some(i) => {
                used.insert(i);
                names.insert(cats[i].name.clone());
            }
            None => unexplained.push(describe_sides(r)),
        },
    }
    match unexplained.is_empty() {
        true => Ok(names),
        false => Err(unexplained),
    }
}

fn describe_sides(r: &Compared) -> String {
    let side = |s: &Side| match s {
        Side::Refused(e) => format!("refuses: {}", e.lines().last().unwrap_or_default()),
        other => other.verb().to_string(),
    };
    format!("istioctl {}; meshop {}", side(&r.istioctl), side(&r.meshop))
}

/// One workload's outcome under one setting, and its categories.
type Cell = (String, BTreeSet<String>);

/// Every workload's cells, one per setting.
type Table = Vec<(String, Vec<Cell>)>;

/// The generated section: figures per setting, categories per setting, and every workload that
/// is not identical.
fn section(corpus: &[Workload], table: &Table) -> String {
    let mut s = String::new();
    let n = corpus.len();
    writeln!(s, "Figures, over the {n} workloads of the 100 files:\n").unwrap();
    writeln!(
        s,
        "| setting | istioctl injects | identical | differ | meshop refuses | meshop leaves alone | refused by both | left alone by both | meshop injects, istioctl refuses | meshop injects, istioctl leaves alone | one refuses, the other leaves alone |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
    for (i, setting) in SETTINGS.iter().enumerate() {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, row) in table {
            *count.entry(row[i].0.as_str()).or_default() += 1;
        }
        let c = |k: &str| count.get(k).copied().unwrap_or(0);
        let injected = c("identical")
            + c("differs")
            + c("istioctl injects, meshop refuses")
            + c("istioctl injects, meshop leaves alone");
        let known = injected
            + c("refused by both")
            + c("left alone by both")
            + c("istioctl refuses, meshop injects")
            + c("istioctl leaves alone, meshop injects");
        let percent = match injected {
            0 => String::new(),
            _ => format!(" ({:.0}%)", 100.0 * c("identical") as f64 / injected as f64),
        };
        writeln!(
            s,
            "| {} | {injected} | {}{percent} | {} | {} | {} | {} | {} | {} | {} | {} |",
            setting.name,
            c("identical"),
            c("differs"),
            c("istioctl injects, meshop refuses"),
            c("istioctl injects, meshop leaves alone"),
            c("refused by both"),
            c("left alone by both"),
            c("istioctl refuses, meshop injects"),
            c("istioctl leaves alone, meshop injects"),
            n - known,
        )
        .unwrap();
    }
    writeln!(
        s,
        "\nWorkloads per category and setting (\"alone\": the workloads with no other category):\n"
    )
    .unwrap();
    writeln!(
        s,
        "| category | {} |",
        SETTINGS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(" | ")
    )
    .unwrap();
    writeln!(s, "|---|{}", "---|".repeat(SETTINGS.len())).unwrap();
    // Per category and setting: the workloads it explains, and those it alone explains (which
    // would come out identical, or agree, once it is gone).
    let mut per_category: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (_, row) in table {
        for (i, (_, cats)) in row.iter().enumerate() {
            for c in cats {
                let counts = per_category
                    .entry(c)
                    .or_insert_with(|| vec![(0, 0); SETTINGS.len()]);
                counts[i].0 += 1;
                counts[i].1 += usize::from(cats.len() == 1);
            }
        }
    }
    let mut ranked: Vec<(&str, Vec<(usize, usize)>)> = per_category.into_iter().collect();
    ranked.sort_by_key(|(name, counts)| {
        let total: usize = counts.iter().map(|c| c.0).sum();
        (std::cmp::Reverse(total), *name)
    });
    for (name, counts) in ranked {
        let cells: Vec<String> = counts
            .iter()
            .map(|(n, alone)| format!("{n} ({alone} alone)"))
            .collect();
        writeln!(s, "| `{name}` | {} |", cells.join(" | ")).unwrap();
    }
    writeln!(
        s,
        "\nEvery workload that is not identical under some setting (\"all\": under every setting):\n"
    )
    .unwrap();
    writeln!(s, "| workload | settings | outcome | categories |").unwrap();
    writeln!(s, "|---|---|---|---|").unwrap();
    for (id, row) in table {
        // One line per distinct (outcome, categories), naming the settings it holds under.
        let mut groups: Vec<(&Cell, Vec<&str>)> = Vec::new();
        for (i, cell) in row.iter().enumerate() {
            match groups.iter_mut().find(|(c, _)| *c == cell) {
                Some((_, settings)) => settings.push(SETTINGS[i].name),
                None => groups.push((cell, vec![SETTINGS[i].name])),
            }
        }
        for ((outcome, cats), settings) in groups {
            if outcome == "identical" {
                continue;
            }
            let settings = match settings.len() == SETTINGS.len() {
                true => "all".to_string(),
                false => settings.join(", "),
            };
            let cats: Vec<String> = cats.iter().map(|c| format!("`{c}`")).collect();
            writeln!(
                s,
                "| `{id}` | {settings} | {outcome} | {} |",
                cats.join(", ")
            )
            .unwrap();
        }
    }
    s
}

/// A readable account of every workload under every setting: both sides and every difference.
fn details(corpus: &[Workload], results: &[Vec<Compared>]) -> String {
    let mut s = String::new();
    for (i, setting) in SETTINGS.iter().enumerate() {
        writeln!(s, "## {}", setting.name).unwrap();
        for (w, r) in corpus.iter().zip(&results[i]) {
            writeln!(s, "{} ({}): {}", w.id, w.kind, r.outcome()).unwrap();
            match (&r.istioctl, &r.meshop) {
                (Side::Injected(_), Side::Injected(_)) => writeln!(
                    s,
                    "  fields {}, differences {}",
                    r.fields,
                    r.differences.len()
                )
                .unwrap(),
                _ => writeln!(s, "  {}", describe_sides(r)).unwrap(),
            }
            for d in &r.differences {
                writeln!(
                    s,
                    "  {}\n      istioctl: {}\n      meshop:   {}",
                    d.path,
                    show(&d.istioctl),
                    show(&d.meshop)
                )
                .unwrap();
            }
        }
    }
    s
}

#[test]
fn istios_injection_inputs_come_out_as_the_table_says() {
    let started = Instant::now();
    let bin = IstioBinaries::locate().unwrap();
    let corpus = corpus();
    assert_eq!(
        corpus.len(),
        101,
        "101 workloads in Istio's 100 input files"
    );
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<Vec<Compared>> = std::thread::scope(|scope| {
        let handles: Vec<_> = SETTINGS
            .iter()
            .map(|setting| {
                let (bin, corpus, dir) = (&bin, &corpus, dir.path());
                scope.spawn(move || run_setting(bin, setting, corpus, dir))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let compared = started.elapsed();

    let report = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("istio-corpus.txt");
    std::fs::write(&report, details(&corpus, &results)).unwrap();

    let doc = std::fs::read_to_string(doc_path()).unwrap();
    let cats = categories(&doc);
    let mut used = BTreeSet::new();
    let mut unexplained = Vec::new();
    let mut table: Table = Vec::new();
    for (j, w) in corpus.iter().enumerate() {
        let mut row = Vec::new();
        for (i, setting) in SETTINGS.iter().enumerate() {
            let r = &results[i][j];
            let names = match categorise(&cats, w, r, &mut used) {
                Ok(names) => names,
                Err(what) => {
                    unexplained.push(format!(
                        "{} {} ({}):\n    {}",
                        setting.name,
                        w.id,
                        r.outcome(),
                        what.join("\n    ")
                    ));
                    BTreeSet::from(["uncategorised".to_string()])
                }
            };
            row.push((r.outcome(), names));
        }
        table.push((w.id.clone(), row));
    }
    let generated = section(&corpus, &table);
    println!("{generated}");
    println!(
        "compared in {:.1} s ({} settings in parallel, {} runs of istioctl kube-inject); every difference in {}",
        compared.as_secs_f64(),
        SETTINGS.len(),
        ISTIOCTL_RUNS.load(Ordering::Relaxed),
        report.display()
    );

    meshop_testenv::blessed::check(&doc_path(), BEGIN, END, &generated, &report);
    assert!(
        unexplained.is_empty(),
        "outcomes no category of docs/istio-compatibility.md explains (add a row to \"Categories \
         of difference\" with its reason):\n{}",
        unexplained.join("\n")
    );
    let stale: Vec<&Category> = cats
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, c)| c)
        .collect();
    assert!(
        stale.is_empty(),
        "categories in docs/istio-compatibility.md that explain nothing any more: {stale:?}"
    );
}

fn workload(annotations: Value) -> Workload {
    Workload {
        id: "w.yaml".into(),
        kind: "Deployment".into(),
        yaml: String::new(),
        template: serde_json::json!({ "metadata": { "annotations": annotations }, "spec": {} }),
    }
}

fn difference(path: &str, istioctl: Option<Value>, meshop: Option<Value>) -> Difference {
    Difference {
        path: path.into(),
        istioctl,
        meshop,
    }
}

#[test]
fn a_json_string_differs_by_the_keys_that_differ() {
    let proxy = |config: &str| serde_json::json!({ "spec": { "containers": [{ "name": "istio-proxy", "env": [{ "name": "PROXY_CONFIG", "value": config }] }] } });
    let (_, found) = differences_within_json(
        &proxy(r#"{"concurrency":2,"tracing":{"sampling":1}}"#),
        &proxy(r#"{ "tracing": {"sampling": 5}, "concurrency": 2, "discoveryAddress": "x:1" }"#),
    );
    let at = "/spec/containers[istio-proxy]/env[PROXY_CONFIG]/value";
    assert_eq!(
        found,
        [
            difference(
                &format!("{at}/discoveryAddress"),
                None,
                Some(Value::from("x:1"))
            ),
            difference(
                &format!("{at}/tracing/sampling"),
                Some(Value::from(1)),
                Some(Value::from(5))
            ),
        ]
    );
}

#[test]
fn a_category_explains_only_what_its_rule_names() {
    let row = |r: &str| Category::parse(r).unwrap();
    let address = row(
        r#"| `c` | `path *[istio-proxy]/env[PROXY_CONFIG]/value/discoveryAddress - -> "istiod.*"` | why |"#,
    );
    let plain = workload(serde_json::json!({}));
    let path = "/spec/containers[istio-proxy]/env[PROXY_CONFIG]/value/discoveryAddress";
    let ours = |v: &str| difference(path, None, Some(Value::from(v)));
    assert!(address.explains_difference(&plain, &ours("istiod.istio-system.svc:15012")));
    // The same path with another value on either side is not explained.
    assert!(!address.explains_difference(&plain, &ours("elsewhere:15012")));
    assert!(!address.explains_difference(
        &plain,
        &difference(path, Some(Value::from("a")), Some(Value::from("istiod.x")))
    ));
    // An annotation rule explains every difference of a workload that has the annotation.
    let grpc = row("| `g` | `annotation inject.istio.io/templates=grpc-*` | why |");
    let d = difference("/spec/volumes[x]/name", Some(Value::from("x")), None);
    assert!(grpc.explains_difference(
        &workload(serde_json::json!({ "inject.istio.io/templates": "grpc-agent" })),
        &d
    ));
    assert!(!grpc.explains_difference(
        &workload(serde_json::json!({ "inject.istio.io/templates": "gateway" })),
        &d
    ));
    assert!(!grpc.explains_difference(&plain, &d));
    // A refusal rule explains only that injector's refusal.
    let refusal = row("| `r` | `meshop-error supports only REDIRECT` | why |");
    let compared = |istioctl: Side, meshop: Side| Compared {
        istioctl,
        meshop,
        fields: 0,
        differences: Vec::new(),
    };
    let refused =
        Side::Refused("interceptionMode=\"TPROXY\": meshop supports only REDIRECT".into());
    assert!(refusal.explains_outcome(&plain, &compared(Side::LeftAlone, refused.clone())));
    assert!(!refusal.explains_outcome(&plain, &compared(refused, Side::LeftAlone)));
    // Malformed rows are refused, not read as rules that match anything.
    assert!(Category::parse("| `c` | `path /x` | |").is_err());
    assert!(Category::parse("| `c` | `path /x \"a\"` | why |").is_err());
    assert!(Category::parse("| `c` | `field /x` | why |").is_err());
}
