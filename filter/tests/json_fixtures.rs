//! The JSON filter on every kubelet JSON body of the test data (`kubelet-scope-testdata`:
//! third-party captures of Linux and Windows nodes with pretty-printed, single-line
//! and CRLF bodies, the project's own cluster's captures and synthetic bodies), for a
//! tenant owning each namespace present, one owning all of them and one owning none.
//!
//! Expectations come from `json_support` (serde_json values and an independent
//! recursive-descent span finder), never from the filter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod json_support;

use json_support::*;
use kubelet_scope_filter::policy::endpoint::JsonEndpoint;
use kubelet_scope_testdata::Source;

const MAX: usize = 32 << 20;

fn fixtures() -> Vec<(String, JsonEndpoint, Vec<u8>)> {
    let bodies = kubelet_scope_testdata::bodies("json");
    let third_party = bodies
        .iter()
        .filter(|b| b.source == Source::ThirdParty)
        .count();
    let found: Vec<(String, JsonEndpoint, Vec<u8>)> = bodies
        .iter()
        .map(|b| {
            let endpoint = match b.kubelet_path() {
                "/stats/summary" => JsonEndpoint::StatsSummary,
                "/pods" => JsonEndpoint::PodList,
                other => panic!("{}: a JSON body of {other}", b.name),
            };
            (b.name.clone(), endpoint, b.read())
        })
        .collect();
    assert!(found.iter().any(|f| f.1 == JsonEndpoint::PodList));
    assert!(found.iter().any(|f| f.1 == JsonEndpoint::StatsSummary));
    if Source::ThirdParty.present() {
        assert!(third_party >= 18, "JSON captures missing");
        // The set covers the formats the issue names.
        assert!(found.iter().any(|f| f.2.windows(2).any(|w| w == b"\r\n")));
        assert!(found.iter().any(|f| f.0.contains("windows")));
    }
    assert!(found
        .iter()
        .any(|f| !f.2.contains(&b'\n') || f.2.iter().filter(|&&c| c == b'\n').count() < 3));
    found
}

/// Tenants: one per namespace present, one owning them all, one owning none.
fn tenants(namespaces: &[String]) -> Vec<Vec<&str>> {
    let mut t: Vec<Vec<&str>> = namespaces.iter().map(|n| vec![n.as_str()]).collect();
    t.push(namespaces.iter().map(String::as_str).collect());
    t.push(vec!["nothing-here"]);
    t
}

#[test]
fn every_capture_for_every_tenant() {
    for (name, endpoint, body) in fixtures() {
        let namespaces: Vec<String> = namespaces(endpoint, &body).into_iter().collect();
        assert!(!namespaces.is_empty(), "{name}");
        let total = serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            [target_key(endpoint)]
        .as_array()
        .unwrap()
        .len();
        for owned in tenants(&namespaces) {
            let scope = scope_owning("acme", &owned);
            let out = run(endpoint, &scope, MAX, &body, &[])
                .unwrap_or_else(|e| panic!("{name} {owned:?}: {e}"));
            let kept = check_output(endpoint, &body, &out, &|ns| owned.contains(&ns));
            let mut f = kubelet_scope_filter::json::JsonFilter::new(endpoint, scope, MAX);
            let mut sink = Vec::new();
            f.feed(&body, &mut sink).unwrap();
            f.finish(&mut sink).unwrap();
            let c = f.counters();
            assert_eq!(
                (c.seen, c.kept, c.dropped),
                (total as u64, kept as u64, (total - kept) as u64),
                "{name} {owned:?}"
            );
            if owned.len() == namespaces.len() && owned.len() > 1 {
                assert_eq!(
                    out, body,
                    "{name}: a tenant owning everything sees the body as is"
                );
            }
        }
    }
}

/// A small deterministic generator for split points.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn every_capture_is_split_invariant() {
    for (name, endpoint, body) in fixtures() {
        let namespaces: Vec<String> = namespaces(endpoint, &body).into_iter().collect();
        // A tenant that keeps some elements and drops others.
        let scope = scope_owning("acme", &[namespaces[0].as_str()]);
        let whole = run(endpoint, &scope, MAX, &body, &[]).unwrap();
        assert_eq!(
            run_bytewise(endpoint, &scope, MAX, &body).unwrap(),
            whole,
            "{name}: byte by byte"
        );
        // Single split points: evenly spread, and around every structural byte of
        // the first few kilobytes.
        let mut points: Vec<usize> = (0..=body.len()).step_by(body.len() / 150 + 1).collect();
        points.extend(0..body.len().min(1500));
        points.extend(body.len().saturating_sub(300)..=body.len());
        for s in points {
            let got = run(endpoint, &scope, MAX, &body, &[s]).unwrap();
            assert!(got == whole, "{name}: split at {s}");
        }
        // Random multi-chunk splittings with Envoy-like and tiny chunk sizes.
        let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ body.len() as u64;
        for round in 0..20 {
            let max_chunk = [3, 64, 1024, 16384][round % 4];
            let mut splits = Vec::new();
            let mut at = 0;
            loop {
                at += 1 + (xorshift(&mut rng) % max_chunk) as usize;
                if at >= body.len() {
                    break;
                }
                splits.push(at);
            }
            let got = run(endpoint, &scope, MAX, &body, &splits).unwrap();
            assert!(got == whole, "{name}: round {round}");
        }
    }
}

#[test]
fn truncated_captures_are_refused() {
    for (name, endpoint, body) in fixtures() {
        let namespaces: Vec<String> = namespaces(endpoint, &body).into_iter().collect();
        let scope = scope_owning("acme", &[namespaces[0].as_str()]);
        let end = body.iter().rposition(|&c| c == b'}').unwrap();
        for cut in (0..end)
            .step_by(end / 200 + 1)
            .chain([end / 2, end - 1, end])
        {
            assert!(
                run(endpoint, &scope, MAX, &body[..cut], &[]).is_err(),
                "{name}: truncated at {cut} of {}",
                body.len()
            );
        }
    }
}

#[test]
fn captures_over_the_element_cap_are_refused() {
    for (name, endpoint, body) in fixtures() {
        let spans = reference_spans(endpoint, &body).unwrap();
        let largest = spans.elements.iter().map(|&(l, _, e)| e - l).max().unwrap();
        let namespaces: Vec<String> = namespaces(endpoint, &body).into_iter().collect();
        let scope = scope_owning("acme", &[namespaces[0].as_str()]);
        for s in [0, body.len() / 3, body.len() / 2] {
            assert!(
                run(endpoint, &scope, largest - 1, &body, &[s]).is_err(),
                "{name}"
            );
        }
        // The cap bounds one element (with the whitespace before it), not the body.
        assert!(largest < body.len() - 10);
        for s in [0, body.len() / 3, body.len() / 2] {
            assert!(
                run(endpoint, &scope, largest, &body, &[s]).is_ok(),
                "{name}"
            );
        }
    }
}

#[test]
fn without_tenancy_captures_pass_unchanged() {
    let config = kubelet_scope_filter::config::Config::parse(br#"{"passThrough": true}"#).unwrap();
    let catalog = kubelet_scope_filter::snapshot::catalog::Catalog::new(&config, None);
    let scope = kubelet_scope_filter::snapshot::catalog::RequestScope::new(
        std::rc::Rc::new(catalog),
        Some("acme"),
    );
    for (name, endpoint, body) in fixtures() {
        assert_eq!(
            run(endpoint, &scope, 16, &body, &[7]).unwrap(),
            body,
            "{name}"
        );
    }
}

/// A synthetic ~2 MB, 110-pod `/pods` body (the kubelet's default pod limit), built
/// from the largest real capture with large annotations as real pods carry
/// (`kubectl.kubernetes.io/last-applied-configuration`).
fn synthetic_pods() -> Vec<u8> {
    let (_, _, body) = fixtures()
        .into_iter()
        .filter(|f| f.1 == JsonEndpoint::PodList)
        .max_by_key(|f| f.2.len())
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let items = v["items"].as_array().unwrap();
    let mut list = v.clone();
    let mut out = Vec::new();
    for i in 0..110 {
        let mut item = items[i % items.len()].clone();
        item["metadata"]["namespace"] = format!("team-{}", i % 10).into();
        item["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"spec\":{}} "
                .repeat(280)
                .into();
        out.push(item);
    }
    list["items"] = out.into();
    serde_json::to_vec(&list).unwrap()
}

/// CPU time of this thread in seconds (the machine is shared: wall time would
/// measure the other builds).
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    stat.split_whitespace()
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1e9
}

/// `cargo test --release -p kubelet-scope-filter --test json_fixtures -- --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    let largest = fixtures().into_iter().max_by_key(|f| f.2.len()).unwrap();
    let synthetic = synthetic_pods();
    let summary = fixtures()
        .into_iter()
        .filter(|f| f.1 == JsonEndpoint::StatsSummary)
        .max_by_key(|f| f.2.len())
        .unwrap();
    for (name, endpoint, body) in [
        (largest.0.clone(), largest.1, largest.2.clone()),
        (summary.0.clone(), summary.1, summary.2.clone()),
        (
            "synthetic-110-pods".to_owned(),
            JsonEndpoint::PodList,
            synthetic,
        ),
    ] {
        if std::env::var("JSON_BENCH_ONLY").is_ok_and(|only| !name.contains(&only)) {
            continue;
        }
        let namespaces: Vec<String> = namespaces(endpoint, &body).into_iter().collect();
        let scope = scope_owning("acme", &[namespaces[0].as_str()]);
        let mut out = Vec::with_capacity(body.len());
        let total: usize =
            std::env::var("JSON_BENCH_BYTES").map_or(400_000_000, |v| v.parse().unwrap());
        let iters = (total / body.len()).max(1);
        let kept = run(endpoint, &scope, MAX, &body, &[]).unwrap().len();
        for chunk in [body.len(), 16384] {
            let t = cpu_time();
            for _ in 0..iters {
                out.clear();
                let mut f =
                    kubelet_scope_filter::json::JsonFilter::new(endpoint, scope.clone(), MAX);
                for c in body.chunks(chunk) {
                    f.feed(c, &mut out).unwrap();
                }
                f.finish(&mut out).unwrap();
            }
            let secs = cpu_time() - t;
            let t = cpu_time();
            for _ in 0..iters {
                out.clear();
                out.extend_from_slice(std::hint::black_box(&body));
                std::hint::black_box(&out);
            }
            let copy = cpu_time() - t;
            println!(
                "{name}: {} bytes, chunks of {chunk}: {:.2} GB/s (memcpy {:.1} GB/s), {} kept of {}",
                body.len(),
                (body.len() * iters) as f64 / secs / 1e9,
                (body.len() * iters) as f64 / copy / 1e9,
                kept,
                body.len()
            );
        }
    }
}
