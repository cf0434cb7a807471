//! The Prometheus rewriter on every kubelet text body of the test data
//! (`kubelet-scope-testdata`: third-party captures, the project's own cluster's
//! captures and synthetic bodies).
//!
//! Expected outputs are computed independently of the rewriter: a regex finds each
//! line's `namespace` label (good enough on these captures, which have no hostile
//! label values; the property tests cover those), and the expectation is built
//! line by line from the input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::prometheus::Rewriter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;
use kubelet_scope_testdata::Source;
use regex_lite::Regex;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let bodies = kubelet_scope_testdata::bodies("txt");
    let third_party = bodies
        .iter()
        .filter(|b| b.source == Source::ThirdParty)
        .count();
    if Source::ThirdParty.present() {
        assert!(third_party >= 12, "text captures missing");
    }
    assert!(bodies.iter().any(|b| b.name.starts_with("cadvisor-")));
    bodies.iter().map(|b| (b.name.clone(), b.read())).collect()
}

/// The oracle: the value of a label named exactly `namespace` in the line's label set.
fn oracle_namespace(line: &str) -> Option<String> {
    thread_local! {
        static RE: Regex = Regex::new(r#"[{,]\s*namespace="((?:[^"\\]|\\.)*)""#).unwrap();
    }
    if line.starts_with('#') {
        return None;
    }
    RE.with(|re| re.captures(line).map(|c| c[1].to_owned()))
}

fn lines(body: &[u8]) -> Vec<&str> {
    std::str::from_utf8(body)
        .unwrap()
        .split_inclusive('\n')
        .collect()
}

/// Every namespace in the capture gets a team (one with a value that needs
/// escaping) and one of two tenants.
fn snapshot_for(body: &[u8]) -> (Snapshot, BTreeMap<String, String>, BTreeMap<String, String>) {
    let namespaces: BTreeSet<String> = lines(body)
        .into_iter()
        .filter_map(oracle_namespace)
        .filter(|ns| !ns.is_empty())
        .collect();
    let mut teams = BTreeMap::new();
    let mut tenants = BTreeMap::new();
    let mut snapshot = Snapshot {
        version: "1".into(),
        generated_at: "2026-11-21T00:00:00Z".into(),
        namespaces: BTreeMap::new(),
        virtual_pods: BTreeMap::new(),
    };
    for (i, ns) in namespaces.iter().enumerate() {
        let team = if i == 0 {
            format!("a \"quoted\\ {ns}\nteam")
        } else {
            format!("team-{ns}")
        };
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        teams.insert(ns.clone(), team.clone());
        tenants.insert(ns.clone(), tenant.to_owned());
        let labels = BTreeMap::from([
            ("team".to_owned(), team),
            ("tenant".to_owned(), tenant.to_owned()),
        ]);
        snapshot.namespaces.insert(
            ns.clone(),
            kubelet_scope_filter::snapshot::NamespaceLabels { labels },
        );
    }
    (snapshot, teams, tenants)
}

fn scope(config: &str, snapshot: &Snapshot, tenant: Option<&str>) -> RequestScope {
    let config = Config::parse(config.as_bytes()).unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, Some(snapshot))), tenant)
}

fn run(scope: &RequestScope, body: &[u8], chunks: &[usize]) -> Vec<u8> {
    let mut rewriter = Rewriter::new(scope.clone());
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut rest = body;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rewriter.feed(chunk, &mut out).unwrap();
        rest = tail;
    }
    rewriter.finish(&mut out).unwrap();
    out
}

/// Output for the whole body in one chunk, after checking that many other
/// chunkings give the same bytes.
fn run_all_splits(name: &str, scope: &RequestScope, body: &[u8]) -> Vec<u8> {
    let whole = run(scope, body, &[body.len().max(1)]);
    let mut chunkings: Vec<Vec<usize>> = vec![
        vec![7],
        vec![1000],
        vec![4093],
        vec![65536],
        vec![3, 1, 250],
    ];
    if body.len() < 300_000 {
        chunkings.push(vec![1]);
    }
    // Deterministic pseudo-random chunk sizes (xorshift), different per fixture.
    let mut x = body.len() as u64 | 1;
    for _ in 0..4 {
        let sizes = (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 20_000) as usize + 1
            })
            .collect();
        chunkings.push(sizes);
    }
    for chunks in chunkings {
        assert!(
            run(scope, body, &chunks) == whole,
            "{name}: chunking {chunks:?} differs"
        );
    }
    whole
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[test]
fn injection_adds_exactly_the_namespace_labels() {
    let config = r#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#;
    for (name, body) in fixtures() {
        let (snapshot, teams, _) = snapshot_for(&body);
        let out = run_all_splits(&name, &scope(config, &snapshot, None), &body);
        let mut want = String::new();
        let mut injected = 0;
        for line in lines(&body) {
            match oracle_namespace(line).and_then(|ns| teams.get(&ns).cloned()) {
                Some(team) => {
                    let close = line.rfind('}').unwrap();
                    want.push_str(&line[..close]);
                    want.push_str(&format!(",team=\"{}\"", escape(&team)));
                    want.push_str(&line[close..]);
                    injected += 1;
                }
                None => want.push_str(line),
            }
        }
        assert!(
            out == want.as_bytes(),
            "{name}: injected output differs from expectation"
        );
        if name.starts_with("cadvisor") {
            assert!(injected > 100, "{name}: only {injected} series injected");
        }
    }
}

#[test]
fn tenants_see_only_their_namespaces() {
    let config = r#"{"tenancy":{"tenant":{"header":"x-tenant"},"namespaceLabel":"tenant"},
                     "snapshot":{"cluster":"cp"}}"#;
    for (name, body) in fixtures() {
        let (snapshot, _, tenants) = snapshot_for(&body);
        for tenant in ["acme", "globex", "initech"] {
            let out = run_all_splits(&name, &scope(config, &snapshot, Some(tenant)), &body);
            let visible = |ns: &str| tenants.get(ns).is_some_and(|t| t == tenant);

            // The safety property, on its own: no foreign namespace in the output.
            for line in lines(&out) {
                if let Some(ns) = oracle_namespace(line) {
                    assert!(visible(&ns), "{name}: {tenant} sees {ns:?}: {line}");
                }
            }

            // The exact expectation: series filtered by namespace; metadata kept
            // only for families with a kept series.
            let mut want = String::new();
            let mut meta = String::new();
            let mut family = String::new();
            for line in lines(&body) {
                if let Some(rest) = ["# HELP ", "# TYPE "]
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                {
                    let f = rest.split([' ', '\n']).next().unwrap();
                    if f != family {
                        meta.clear();
                        family = f.to_owned();
                    }
                    meta.push_str(line);
                    continue;
                }
                let keep = match oracle_namespace(line) {
                    None => true,
                    Some(ns) => !ns.is_empty() && visible(&ns),
                };
                if keep {
                    want.push_str(&meta);
                    meta.clear();
                    want.push_str(line);
                }
            }
            assert!(
                out == want.as_bytes(),
                "{name}: {tenant}'s view differs from expectation"
            );
        }
    }
}

#[test]
fn without_a_mapped_namespace_injection_is_the_identity() {
    let config = r#"{"inject":{"labels":{"team":"team"}},"snapshot":{"cluster":"cp"}}"#;
    let empty = Snapshot::parse(br#"{"version":"0","generatedAt":"t","namespaces":{}}"#).unwrap();
    for (name, body) in fixtures() {
        let out = run(&scope(config, &empty, None), &body, &[4096]);
        assert!(out == body, "{name}: changed without anything to inject");
    }
}
