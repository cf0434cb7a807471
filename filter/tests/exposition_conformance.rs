//! Conformance of the Prometheus rewriter with the text formats it reads, case by
//! case from the specifications: Prometheus text 0.0.4 (the exposition formats
//! page), OpenMetrics 1.0, and what Prometheus' own parsers accept beyond them
//! (no blank between the label set and the value; the quoted metric name of the
//! UTF-8 form anywhere in the label set).
//!
//! Every valid case states the exact body a tenant gets and the body injection
//! gives; every invalid case must be refused in tenant mode. Each case runs in
//! every chunking: every chunk size, and every split of the body in two.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::rc::Rc;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::prometheus::Rewriter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;

const SNAPSHOT: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
    "shop":{"labels":{"team":"web","tenant":"acme"}},
    "bank":{"labels":{"team":"money","tenant":"globex"}}}}"#;

fn scope(config: &str, tenant: Option<&str>) -> RequestScope {
    let config = Config::parse(config.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(SNAPSHOT.as_bytes()).unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
}

fn acme() -> RequestScope {
    scope(
        r#"{"inject": {"labels": {"team": "team"}},
            "tenancy": {"tenant": {"static": "acme"}, "namespaceLabel": "tenant"},
            "snapshot": {"cluster": "cp"}}"#,
        Some("acme"),
    )
}

fn injection() -> RequestScope {
    scope(
        r#"{"inject": {"labels": {"team": "team"}}, "snapshot": {"cluster": "cp"}}"#,
        None,
    )
}

/// The body through a fresh rewriter, fed as `chunks`.
fn run(scope: &RequestScope, chunks: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut rewriter = Rewriter::new(scope.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        rewriter.feed(chunk, &mut out).map_err(|e| e.0)?;
    }
    rewriter.finish(&mut out).map_err(|e| e.0)?;
    Ok(out)
}

/// Every chunking of `body`: each chunk size, and each split in two.
fn chunkings(body: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut all: Vec<Vec<&[u8]>> = (1..=body.len().max(1))
        .map(|n| body.chunks(n).collect())
        .collect();
    for at in 0..=body.len() {
        all.push(vec![&body[..at], &body[at..]]);
    }
    all
}

/// `body` gives `want` for `scope` in every chunking.
fn assert_gives(scope: &RequestScope, body: &str, want: &str) {
    for chunks in chunkings(body.as_bytes()) {
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        let got = run(scope, &chunks).unwrap_or_else(|e| panic!("{body:?} {sizes:?}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), want, "{body:?} {sizes:?}");
    }
}

/// (name, body, what tenant acme gets, what injection gives)
const VALID: &[(&str, &str, &str, &str)] = &[
    (
        "metadata, escapes in HELP, a family of two namespaces",
        "# HELP m A \\\\ help\\nline.\n# TYPE m counter\nm{namespace=\"shop\"} 1\nm{namespace=\"bank\"} 2\n",
        "# HELP m A \\\\ help\\nline.\n# TYPE m counter\nm{namespace=\"shop\",team=\"web\"} 1\n",
        "# HELP m A \\\\ help\\nline.\n# TYPE m counter\nm{namespace=\"shop\",team=\"web\"} 1\nm{namespace=\"bank\",team=\"money\"} 2\n",
    ),
    (
        "values and timestamps",
        "m{namespace=\"shop\"} NaN\nm{namespace=\"shop\"} +Inf 1\nm{namespace=\"shop\"} -Inf -1\nm{namespace=\"shop\"} 1.5e+3 1700000000000\nm{namespace=\"shop\"} -0\n",
        "m{namespace=\"shop\",team=\"web\"} NaN\nm{namespace=\"shop\",team=\"web\"} +Inf 1\nm{namespace=\"shop\",team=\"web\"} -Inf -1\nm{namespace=\"shop\",team=\"web\"} 1.5e+3 1700000000000\nm{namespace=\"shop\",team=\"web\"} -0\n",
        "m{namespace=\"shop\",team=\"web\"} NaN\nm{namespace=\"shop\",team=\"web\"} +Inf 1\nm{namespace=\"shop\",team=\"web\"} -Inf -1\nm{namespace=\"shop\",team=\"web\"} 1.5e+3 1700000000000\nm{namespace=\"shop\",team=\"web\"} -0\n",
    ),
    (
        "escapes in label values",
        "m{a=\"x\\\\y\\\"z\\nw\",namespace=\"shop\"} 1\nm{a=\"namespace=\\\"shop\\\"\",namespace=\"bank\"} 1\n",
        "m{a=\"x\\\\y\\\"z\\nw\",namespace=\"shop\",team=\"web\"} 1\n",
        "m{a=\"x\\\\y\\\"z\\nw\",namespace=\"shop\",team=\"web\"} 1\nm{a=\"namespace=\\\"shop\\\"\",namespace=\"bank\",team=\"money\"} 1\n",
    ),
    (
        "blanks between tokens and a trailing comma",
        "m {  namespace = \"shop\" ,\tpod=\"a\" , }\t 1  \n",
        "m {  namespace = \"shop\" ,\tpod=\"a\",team=\"web\" , }\t 1  \n",
        "m {  namespace = \"shop\" ,\tpod=\"a\",team=\"web\" , }\t 1  \n",
    ),
    (
        "no blank between the label set and the value (Prometheus' parsers accept it)",
        "m{namespace=\"shop\"}-Inf\nm{namespace=\"bank\"}1\n",
        "m{namespace=\"shop\",team=\"web\"}-Inf\n",
        "m{namespace=\"shop\",team=\"web\"}-Inf\nm{namespace=\"bank\",team=\"money\"}1\n",
    ),
    (
        "quoted metric names, first or anywhere in the label set",
        "{\"http.status\",namespace=\"shop\"} 1\n{q=\"0.9\",\"http.status\",namespace=\"shop\"} 1\n{namespace=\"bank\",\"my.metric\"} 1\n",
        "{\"http.status\",namespace=\"shop\",team=\"web\"} 1\n{q=\"0.9\",\"http.status\",namespace=\"shop\",team=\"web\"} 1\n",
        "{\"http.status\",namespace=\"shop\",team=\"web\"} 1\n{q=\"0.9\",\"http.status\",namespace=\"shop\",team=\"web\"} 1\n{namespace=\"bank\",\"my.metric\",team=\"money\"} 1\n",
    ),
    (
        "a histogram family, and series without a namespace",
        "# TYPE h histogram\nh_bucket{le=\"1\",namespace=\"bank\"} 1\nh_bucket{le=\"+Inf\",namespace=\"shop\"} 2\nh_sum{namespace=\"shop\"} 3\nh_count{namespace=\"shop\"} 2\nup 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\",namespace=\"shop\",team=\"web\"} 2\nh_sum{namespace=\"shop\",team=\"web\"} 3\nh_count{namespace=\"shop\",team=\"web\"} 2\nup 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\",namespace=\"bank\",team=\"money\"} 1\nh_bucket{le=\"+Inf\",namespace=\"shop\",team=\"web\"} 2\nh_sum{namespace=\"shop\",team=\"web\"} 3\nh_count{namespace=\"shop\",team=\"web\"} 2\nup 1\n",
    ),
    (
        "metadata of a family with only other tenants' series is dropped with them",
        "# HELP g x\n# TYPE g gauge\ng{namespace=\"bank\"} 1\n# TYPE u gauge\nu 2\n",
        "# TYPE u gauge\nu 2\n",
        "# HELP g x\n# TYPE g gauge\ng{namespace=\"bank\",team=\"money\"} 1\n# TYPE u gauge\nu 2\n",
    ),
    (
        "OpenMetrics: UNIT, _created, exemplars, EOF",
        "# TYPE c counter\n# UNIT c seconds\nc_total{namespace=\"shop\"} 1 # {trace_id=\"a\"} 1 1.5\nc_created{namespace=\"shop\"} 1700000000\n# EOF\n",
        "# TYPE c counter\n# UNIT c seconds\nc_total{namespace=\"shop\",team=\"web\"} 1 # {trace_id=\"a\"} 1 1.5\nc_created{namespace=\"shop\",team=\"web\"} 1700000000\n# EOF\n",
        "# TYPE c counter\n# UNIT c seconds\nc_total{namespace=\"shop\",team=\"web\"} 1 # {trace_id=\"a\"} 1 1.5\nc_created{namespace=\"shop\",team=\"web\"} 1700000000\n# EOF\n",
    ),
    (
        "an exemplar naming another tenant's namespace is removed, its sample stays",
        "c_total{namespace=\"shop\"} 1 # {namespace=\"bank\",pod=\"p\"} 1 1.5\nc_total{pod=\"x\"} 2  # {trace_id=\"t\", namespace=\"bank\"} 1\r\nc_total{namespace=\"shop\"} 3 # {namespace=\"shop\"} 1\n",
        "c_total{namespace=\"shop\",team=\"web\"} 1\nc_total{pod=\"x\"} 2\r\nc_total{namespace=\"shop\",team=\"web\"} 3 # {namespace=\"shop\"} 1\n",
        "c_total{namespace=\"shop\",team=\"web\"} 1 # {namespace=\"bank\",pod=\"p\"} 1 1.5\nc_total{pod=\"x\"} 2  # {trace_id=\"t\", namespace=\"bank\"} 1\r\nc_total{namespace=\"shop\",team=\"web\"} 3 # {namespace=\"shop\"} 1\n",
    ),
    (
        "comments other than HELP, TYPE, UNIT and EOF are dropped for tenants",
        "# scraped from node-1 for pods web-1 (bank)\nm{namespace=\"shop\"} 1\n#\n# EOF\n",
        "m{namespace=\"shop\",team=\"web\"} 1\n# EOF\n",
        "# scraped from node-1 for pods web-1 (bank)\nm{namespace=\"shop\",team=\"web\"} 1\n#\n# EOF\n",
    ),
    (
        "blank lines and CRLF line ends",
        "\nm{namespace=\"shop\"} 1\r\n\r\nm{namespace=\"bank\"} 1\r\n",
        "\nm{namespace=\"shop\",team=\"web\"} 1\r\n\r\n",
        "\nm{namespace=\"shop\",team=\"web\"} 1\r\n\r\nm{namespace=\"bank\",team=\"money\"} 1\r\n",
    ),
];

/// Bodies Prometheus' parsers refuse: a tenant gets nothing of them. (The rewriter
/// is more lenient than Prometheus where leniency cannot change which namespace a
/// series is read as, e.g. a label name that starts with a digit: Prometheus then
/// refuses the scrape, and nothing is shown to anyone.)
const INVALID: &[(&str, &str)] = &[
    ("unterminated label value", "m{namespace=\"shop} 1\n"),
    ("no value", "m{namespace=\"shop\"}\n"),
    ("no '=' after a label name", "m{namespace \"shop\"} 1\n"),
    ("unquoted label value", "m{namespace=shop} 1\n"),
    (
        "metric name starting with a digit",
        "1m{namespace=\"shop\"} 1\n",
    ),
    (
        "two namespace labels",
        "m{namespace=\"shop\",namespace=\"bank\"} 1\n",
    ),
    (
        "bytes after the label set",
        "m{namespace=\"shop\"} 1 {namespace=\"bank\"}\n",
    ),
    (
        "an exemplar without a label set",
        "c_total{namespace=\"shop\"} 1 # trace 1\n",
    ),
    (
        "an unterminated exemplar",
        "c_total{namespace=\"shop\"} 1 # {namespace=\"bank\" 1\n",
    ),
    (
        "two quoted metric names",
        "{\"a.b\",\"c.d\",namespace=\"shop\"} 1\n",
    ),
];

#[test]
fn valid_bodies_give_exactly_the_tenants_series_in_every_chunking() {
    let (tenant, inject) = (acme(), injection());
    for (name, body, for_tenant, injected) in VALID {
        eprintln!("{name}");
        assert_gives(&tenant, body, for_tenant);
        assert_gives(&inject, body, injected);
    }
}

#[test]
fn invalid_bodies_are_refused_for_tenants_in_every_chunking() {
    let tenant = acme();
    for (name, body) in INVALID {
        for chunks in chunkings(body.as_bytes()) {
            let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            assert!(
                run(&tenant, &chunks).is_err(),
                "{name}: {body:?} {sizes:?} was not refused"
            );
        }
    }
}
