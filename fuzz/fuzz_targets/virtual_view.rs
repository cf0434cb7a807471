//! Fuzzes a virtual cluster's view (`kubelet_scope_filter::prometheus` and `json`
//! with a scope of `RequestScope::for_virtual_cluster`): the translation paths.
//!
//! Run: `make fuzz FUZZ_TARGET=virtual_view` (seeds: `fuzz/seeds/virtual_view`).
//!
//! Input: one control byte (text or `/pods` or `/stats/summary`, split point), then
//! the body. Invariants, for virtual cluster `k8s1` (host pods `web-1-x-shop-x-k8s1`
//! and `db-0-x-data-x-k8s1` in `vcluster-k8s1`; `k8s2` has one in `vcluster-k8s2`):
//! - no panic;
//! - the result is the same for the whole body, for a split point derived from the
//!   input, and (for small bodies) byte by byte;
//! - on `Ok`, text: every series with a `namespace` label names one of k8s1's
//!   virtual namespaces (label sets read by a small parser of the plain form);
//!   JSON: the output is valid JSON, and every element's reference object names one
//!   of k8s1's virtual pods, with its virtual UID when it has one.
#![no_main]

use std::rc::Rc;

use kubelet_scope_filter::config::Config;
use kubelet_scope_filter::policy::endpoint::{BodyKind, JsonEndpoint};
use kubelet_scope_filter::rewrite::BodyFilter;
use kubelet_scope_filter::snapshot::catalog::{Catalog, RequestScope};
use kubelet_scope_filter::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SNAPSHOT: &[u8] = br#"{"version":"1","generatedAt":"t","namespaces":{
    "vcluster-k8s1":{"labels":{"team":"one"}},"shop":{"labels":{"tenant":"acme"}}},
  "virtualPods":{
    "vcluster-k8s1/web-1-x-shop-x-k8s1":{"cluster":"k8s1","namespace":"shop","name":"web-1","uid":"v-one","hostUid":"h-one"},
    "vcluster-k8s1/db-0-x-data-x-k8s1":{"cluster":"k8s1","namespace":"data","name":"db-0","uid":"v-two","hostUid":"h-two"},
    "vcluster-k8s2/api-0-x-shop-x-k8s2":{"cluster":"k8s2","namespace":"shop","name":"api-0","uid":"v-three","hostUid":"h-three"}}}"#;
/// k8s1's virtual pods: (namespace, name, uid).
const K8S1: &[(&str, &str, &str)] = &[("shop", "web-1", "v-one"), ("data", "db-0", "v-two")];

thread_local! {
    static SCOPE: RequestScope = {
        let config = Config::parse(
            br#"{"inject":{"labels":{"team":"team"}},
                 "tenancy":{"tenant":{"namespaceOf":{"header":"n"}},"namespaceLabel":"tenant",
                            "virtualClusterHeader":"v"},
                 "snapshot":{"cluster":"cp"}}"#,
        )
        .unwrap();
        let snapshot = Snapshot::parse(SNAPSHOT).unwrap();
        RequestScope::for_virtual_cluster(Rc::new(Catalog::new(&config, Some(&snapshot))), "k8s1")
    };
}

fn run(kind: BodyKind, scope: &RequestScope, chunks: &mut dyn Iterator<Item = &[u8]>) -> Result<Vec<u8>, ()> {
    let mut f = BodyFilter::new(kind, scope.clone(), 1 << 20);
    let mut out = Vec::new();
    for chunk in chunks {
        f.feed(chunk, &mut out).map_err(|_| ())?;
    }
    f.finish(&mut out).map_err(|_| ())?;
    Ok(out)
}

/// The (name, raw value) items of a series line's label set, for lines of the plain
/// form `name{a="…",…}` (None for any other line: comments, quoted names).
fn label_set(line: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let open = line.iter().position(|&b| b == b'{')?;
    if line[..open].is_empty() || !line[..open].iter().all(|b| b.is_ascii_alphanumeric() || b"_:".contains(b)) {
        return None;
    }
    let mut items = Vec::new();
    let mut i = open + 1;
    loop {
        while matches!(line.get(i), Some(b' ' | b'\t' | b',')) {
            i += 1;
        }
        if line.get(i) == Some(&b'}') {
            return Some(items);
        }
        let start = i;
        while line.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            i += 1;
        }
        let name = line.get(start..i)?.to_vec();
        while matches!(line.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if name.is_empty() || line.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while matches!(line.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if line.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        let vstart = i;
        loop {
            match line.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        items.push((name, line.get(vstart..i)?.to_vec()));
        i += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, body)) = data.split_first() else {
        return;
    };
    let kind = match ctl % 3 {
        0 => BodyKind::Exposition,
        1 => BodyKind::Json(JsonEndpoint::PodList),
        _ => BodyKind::Json(JsonEndpoint::StatsSummary),
    };
    let split = (usize::from(ctl / 3) * 97 + body.len() / 2) % (body.len() + 1);
    SCOPE.with(|scope| {
        let whole = run(kind, scope, &mut std::iter::once(body));
        let halves = run(kind, scope, &mut [&body[..split], &body[split..]].into_iter());
        assert_eq!(whole, halves, "split at {split}");
        if body.len() <= 2048 {
            assert_eq!(whole, run(kind, scope, &mut body.chunks(1)), "byte by byte");
        }
        let Ok(out) = whole else {
            return;
        };
        match kind {
            BodyKind::Exposition => {
                for line in out.split(|&b| b == b'\n') {
                    let Some(labels) = label_set(line) else {
                        continue;
                    };
                    if let Some((_, ns)) = labels.iter().find(|(n, _)| n == b"namespace") {
                        assert!(
                            K8S1.iter().any(|p| p.0.as_bytes() == &ns[..]),
                            "series of namespace {:?}: {:?}",
                            String::from_utf8_lossy(ns),
                            String::from_utf8_lossy(line)
                        );
                    }
                }
            }
            BodyKind::Json(endpoint) => {
                let doc: Value = serde_json::from_slice(&out).expect("valid JSON");
                let (array, reference) = match endpoint {
                    JsonEndpoint::PodList => ("items", "metadata"),
                    JsonEndpoint::StatsSummary => ("pods", "podRef"),
                };
                for element in doc.get(array).and_then(Value::as_array).into_iter().flatten() {
                    let r = &element[reference];
                    let (ns, name) = (r["namespace"].as_str(), r["name"].as_str());
                    let pod = K8S1.iter().find(|p| Some(p.0) == ns && Some(p.1) == name);
                    let pod = pod.unwrap_or_else(|| panic!("element of no k8s1 pod: {r}"));
                    if let Some(uid) = r.get("uid") {
                        assert_eq!(uid.as_str(), Some(pod.2));
                    }
                }
            }
        }
    });
});
