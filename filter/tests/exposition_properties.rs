//! Property tests of the Prometheus rewriter on generated bodies with hostile label
//! values: look-alike label names, values holding `namespace="x"`, escapes, braces,
//! commas, blanks, trailing commas, timestamps, exemplars, CRLF and quoted names.
//!
//! The generator knows each series' true namespace and where its label set ends,
//! so the exact expected output is rendered from the model, not from the rewriter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::prometheus::Rewriter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;
use proptest::prelude::*;

const SNAPSHOT: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
    "shop":{"labels":{"team":"web\\shop","tenant":"acme"}},
    "db":{"labels":{"tenant":"acme"}},
    "bank":{"labels":{"team":"money","tenant":"globex"}}}}"#;

/// Namespaces the tenant "acme" owns.
const ACME: [&str; 2] = ["shop", "db"];

fn team_of(ns: &str) -> Option<&'static str> {
    match ns {
        "shop" => Some(r#"team="web\\shop""#),
        "bank" => Some(r#"team="money""#),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Series {
    /// Rendered `name="value"` items other than the namespace label.
    items: Vec<String>,
    /// The namespace value and the position of its item, if any.
    namespace: Option<(String, usize)>,
    quoted_name: bool,
    blanks: bool,
    trailing_comma: bool,
    tail: String,
}

#[derive(Debug, Clone)]
struct Family {
    name: String,
    help: bool,
    series: Vec<Series>,
}

fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z{},= ]{0,8}".prop_map(|s| s),
        Just(r#"namespace=\"shop\""#.to_owned()),
        Just(r#",namespace=\"bank\"}"#.to_owned()),
        Just(r"\\".to_owned()),
        Just(r#"a\nb\\\"c"#.to_owned()),
        Just("ünïcødé".to_owned()),
    ]
}

fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("exported_namespace".to_owned()),
        Just("k8s_namespace".to_owned()),
        Just("namespaces".to_owned()),
        Just("pod".to_owned()),
        Just("id".to_owned()),
        Just("le".to_owned()),
        Just("\"a.quoted name\"".to_owned()),
    ]
}

fn namespace_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("shop".to_owned()),
        Just("db".to_owned()),
        Just("bank".to_owned()),
        Just(String::new()),
        Just("unknown".to_owned()),
        Just(r#"sh\"op"#.to_owned()),
    ]
}

fn series() -> impl Strategy<Value = Series> {
    (
        prop::collection::vec((label_name(), hostile_value()), 0..4),
        prop::option::of((namespace_value(), 0usize..5)),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(" 1".to_owned()),
            Just(" 1.5e3 1700000000000".to_owned()),
            Just(" +Inf".to_owned()),
            Just(r#" 1 # {trace_id="x",namespace="bank"} 1 1.5"#.to_owned()),
            Just(r#" 2 # {namespace="shop"} 1"#.to_owned()),
        ],
    )
        .prop_map(
            |(labels, namespace, quoted_name, blanks, trailing_comma, tail)| {
                let items: Vec<String> =
                    labels.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
                let namespace = namespace.map(|(ns, at)| (ns, at.min(items.len())));
                Series {
                    items,
                    namespace,
                    quoted_name,
                    blanks,
                    trailing_comma,
                    tail,
                }
            },
        )
}

fn body() -> impl Strategy<Value = (Vec<Family>, bool)> {
    (
        prop::collection::vec(
            (
                prop_oneof![Just("m".to_owned()), Just("http_requests".to_owned())],
                any::<bool>(),
                prop::collection::vec(series(), 0..4),
            )
                .prop_map(|(name, help, series)| Family { name, help, series }),
            0..6,
        ),
        any::<bool>(),
    )
}

/// Renders one series, with `extra` injected right after the last item.
fn render_series(family: &str, s: &Series, extra: Option<&str>, eol: &str) -> String {
    let mut items = s.items.clone();
    if let Some((ns, at)) = &s.namespace {
        items.insert(*at, format!("namespace=\"{ns}\""));
    }
    let (name, mut parts) = if s.quoted_name {
        (String::new(), vec![format!("\"{family}.x\"")])
    } else {
        (family.to_owned(), vec![])
    };
    parts.extend(items);
    let sep = if s.blanks { " , " } else { "," };
    let mut line = format!("{name}{{");
    if s.blanks {
        line.push(' ');
    }
    line.push_str(&parts.join(sep));
    if let Some(extra) = extra {
        line.push_str(if parts.is_empty() { "" } else { "," });
        line.push_str(extra);
    }
    if s.trailing_comma && !parts.is_empty() {
        line.push(',');
    }
    if s.blanks {
        line.push(' ');
    }
    line.push('}');
    line.push_str(&s.tail);
    line.push_str(eol);
    line
}

fn metadata(f: &Family, eol: &str) -> String {
    let sample_name = |s: &Series| {
        if s.quoted_name {
            format!("\"{}.x\"", f.name)
        } else {
            f.name.clone()
        }
    };
    let name = f.series.first().map_or(f.name.clone(), sample_name);
    let mut out = String::new();
    if f.help {
        out.push_str(&format!(
            "# HELP {name} Help with \\\\ and \\n escapes.{eol}"
        ));
    }
    out.push_str(&format!("# TYPE {name} gauge{eol}"));
    out
}

/// Makes the body a valid exposition: family names are unique, and a family's
/// series are all quoted or all unquoted so its metadata names every series.
fn normalize(families: &mut [Family]) {
    for (i, f) in families.iter_mut().enumerate() {
        f.name = format!("{}_{i}", f.name);
        if let Some(q) = f.series.first().map(|s| s.quoted_name) {
            for s in &mut f.series {
                s.quoted_name = q;
            }
        }
    }
}

fn render(families: &[Family], crlf: bool, mode: Mode) -> String {
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    for f in families {
        let mut kept = String::new();
        for s in &f.series {
            let ns = s.namespace.as_ref().map(|(ns, _)| ns.as_str());
            match mode {
                Mode::Input => kept.push_str(&render_series(&f.name, s, None, eol)),
                Mode::Injected => {
                    kept.push_str(&render_series(&f.name, s, ns.and_then(team_of), eol))
                }
                Mode::Acme => {
                    let visible = match ns {
                        None => true,
                        Some(ns) => ACME.contains(&ns),
                    };
                    if visible {
                        // An exemplar naming another tenant's namespace is removed.
                        let mut s = s.clone();
                        if let Some((sample, exemplar)) = s.tail.split_once(" # ") {
                            if !ACME
                                .iter()
                                .any(|ns| exemplar.contains(&format!("namespace=\"{ns}\"")))
                            {
                                s.tail = sample.to_owned();
                            }
                        }
                        kept.push_str(&render_series(&f.name, &s, None, eol));
                    }
                }
            }
        }
        if mode != Mode::Acme || !kept.is_empty() {
            out.push_str(&metadata(f, eol));
        }
        out.push_str(&kept);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Input,
    Injected,
    Acme,
}

fn scope(config: &str, tenant: Option<&str>) -> RequestScope {
    let config = Config::parse(config.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(SNAPSHOT.as_bytes()).unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
}

fn inject_scope() -> RequestScope {
    scope(
        r#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#,
        None,
    )
}

fn acme_scope() -> RequestScope {
    scope(
        r#"{"tenancy":{"tenant":{"header":"t"},"namespaceLabel":"tenant"},"snapshot":{"cluster":"cp"}}"#,
        Some("acme"),
    )
}

fn rewrite(scope: &RequestScope, body: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut rewriter = Rewriter::new(scope.clone());
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        rewriter.feed(&body[from..cut], &mut out).unwrap();
        from = cut;
    }
    rewriter.finish(&mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn injection_matches_the_model((mut families, crlf) in body(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        normalize(&mut families);
        let input = render(&families, crlf, Mode::Input);
        let want = render(&families, crlf, Mode::Injected);
        let out = rewrite(&inject_scope(), input.as_bytes(), &cuts);
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn tenant_view_matches_the_model((mut families, crlf) in body(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        normalize(&mut families);
        let input = render(&families, crlf, Mode::Input);
        let want = render(&families, crlf, Mode::Acme);
        let out = rewrite(&acme_scope(), input.as_bytes(), &cuts);
        prop_assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    /// Whatever the bytes, the rewriter does not panic, and any split of the input
    /// gives the same result (output or refusal).
    #[test]
    fn arbitrary_bytes_are_split_invariant(body in prop::collection::vec(
        prop_oneof![Just(b'{'), Just(b'}'), Just(b'"'), Just(b'\\'), Just(b'\n'), Just(b','), Just(b'='), Just(b'#'), Just(b' '), any::<u8>()], 0..200),
        cut in any::<usize>(),
    ) {
        let cut = cut % (body.len() + 1);
        for scope in [inject_scope(), acme_scope()] {
            let run = |chunks: &[&[u8]]| {
                let mut r = Rewriter::new(scope.clone());
                let mut out = Vec::new();
                for c in chunks {
                    r.feed(c, &mut out)?;
                }
                r.finish(&mut out).map(|()| out)
            };
            let whole = run(&[&body]);
            let split = run(&[&body[..cut], &body[cut..]]);
            prop_assert_eq!(whole.is_ok(), split.is_ok());
            if let (Ok(a), Ok(b)) = (whole, split) {
                prop_assert_eq!(a, b);
            }
        }
    }
}

/// With a scraped `team` label, every injected series still has each label name
/// once, whatever the conflict mode.
#[test]
fn conflicts_leave_unique_label_names() {
    for mode in ["exported", "keep", "overwrite"] {
        let s = scope(
            &format!(
                r#"{{"inject":{{"labels":{{"team":"team"}},"onConflict":"{mode}"}},"snapshot":{{"cluster":"cp"}}}}"#
            ),
            None,
        );
        let body =
            "m{team=\"a\",namespace=\"shop\",exported_team=\"b\", x=\"team=\\\"c\\\"\" ,} 1\n";
        let out = String::from_utf8(rewrite(&s, body.as_bytes(), &[])).unwrap();
        let names: Vec<&str> = out
            .split(['{', ','])
            .filter_map(|item| item.split_once('=').map(|(n, _)| n.trim()))
            .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !n.is_empty())
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{mode}: {out}");
        let want_team = if mode == "keep" {
            "team=\"a\""
        } else {
            r#"team="web\\shop""#
        };
        assert!(out.contains(want_team), "{mode}: {out}");
    }
}
