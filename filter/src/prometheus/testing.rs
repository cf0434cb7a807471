//! What the rewriter's unit tests share: scopes over one snapshot, and
//! [`rewrite`], which feeds a body whole, at every split point and byte by byte,
//! and checks that all agree.

use std::rc::Rc;

use super::Rewriter;
use crate::body::BodyError;
use crate::config::Config;
use crate::snapshot::catalog::{Catalog, RequestScope};
use crate::snapshot::Snapshot;

const SNAPSHOT: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
    "shop":{"labels":{"team":"front\"end","tenant":"acme"}},
    "db":{"labels":{"tenant":"acme"}},
    "bank":{"labels":{"team":"money","tenant":"globex"}}}}"#;

pub(super) fn scope(config: &str, tenant: Option<&str>) -> RequestScope {
    let config = Config::parse(config.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(SNAPSHOT.as_bytes()).unwrap();
    RequestScope::new(Rc::new(Catalog::new(&config, Some(&snapshot))), tenant)
}

/// Host pods of two virtual clusters (k8s1 in vcluster-k8s1, k8s2 in
/// vcluster-k8s2), and a host pod named like one of k8s1's in another namespace.
const VIRTUAL_SNAPSHOT: &str = r#"{"version":"1","generatedAt":"t","namespaces":{
    "vcluster-k8s1":{"labels":{"team":"vc-one","tenant":"hosting"}},
    "vcluster-k8s2":{"labels":{"team":"vc-two","tenant":"hosting"}},
    "shop":{"labels":{"team":"web","tenant":"acme"}}},
  "virtualPods":{
    "vcluster-k8s1/web-1-x-shop-x-k8s1":{"cluster":"k8s1","namespace":"shop","name":"web-1",
        "uid":"1111aaaa-0000-0000-0000-00000000v001","hostUid":"9999eeee-0000-0000-0000-00000000h001"},
    "vcluster-k8s1/db-0-x-data-x-k8s1":{"cluster":"k8s1","namespace":"data","name":"db-0",
        "uid":"1111aaaa-0000-0000-0000-00000000v002","hostUid":"9999eeee-0000-0000-0000-00000000h002"},
    "vcluster-k8s2/web-1-x-shop-x-k8s2":{"cluster":"k8s2","namespace":"shop","name":"web-1",
        "uid":"2222bbbb-0000-0000-0000-00000000v003","hostUid":"9999eeee-0000-0000-0000-00000000h003"}}}"#;

/// The scope of virtual cluster `cluster` over [`VIRTUAL_SNAPSHOT`], with `config`'s
/// tenancy (and injection, if it has it).
pub(super) fn virtual_scope(config: &str, cluster: &str) -> RequestScope {
    let config = Config::parse(config.as_bytes()).unwrap();
    let snapshot = Snapshot::parse(VIRTUAL_SNAPSHOT.as_bytes()).unwrap();
    RequestScope::for_virtual_cluster(Rc::new(Catalog::new(&config, Some(&snapshot))), cluster)
}

pub(super) fn inject(on_conflict: &str) -> RequestScope {
    scope(
        &format!(
            r#"{{"inject":{{"labels":{{"team":"team"}},"onConflict":"{on_conflict}"}},
                "snapshot":{{"cluster":"cp"}}}}"#
        ),
        None,
    )
}

pub(super) fn tenant(extra: &str) -> RequestScope {
    scope(
        &format!(
            r#"{{"tenancy":{{"tenant":{{"header":"t"}},"namespaceLabel":"tenant"{extra}}},
                "snapshot":{{"cluster":"cp"}}}}"#
        ),
        Some("acme"),
    )
}

/// Rewrites `body` fed in one chunk and at every split point, asserts all
/// agree, and returns the output.
pub(super) fn rewrite(scope: &RequestScope, body: &str) -> Result<String, BodyError> {
    let body = body.as_bytes();
    let whole = run(scope, &[body]);
    for split in 0..=body.len() {
        let (a, b) = body.split_at(split);
        assert_eq!(run(scope, &[a, b]), whole, "split at {split}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(scope, &bytes), whole, "byte by byte");
    whole.map(|out| String::from_utf8(out).unwrap())
}

pub(super) fn run(scope: &RequestScope, chunks: &[&[u8]]) -> Result<Vec<u8>, BodyError> {
    let mut rewriter = Rewriter::new(scope.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        rewriter.feed(chunk, &mut out)?;
    }
    rewriter.finish(&mut out)?;
    let counters = rewriter.counters();
    assert_eq!(
        counters.bytes_in,
        chunks.iter().map(|c| c.len() as u64).sum::<u64>()
    );
    assert_eq!(counters.bytes_out, out.len() as u64);
    Ok(out)
}
